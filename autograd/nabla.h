/* nabla.h — include this one header to use nabla.
 *
 *   nb_autograd.h   tensors, ownership, backward, the op API, gradcheck
 *   nb_ops.h        the differentiable ops
 *   nb_optim.h      optimizers, learning-rate schedules, gradient clipping
 *   nb_nn.h         modules, layers, initialisers, the Keras-style model
 *   nb_data.h       datasets and batch loaders, fit on a loader
 *   nb_io.h         reading data: gzip/zlib inflate, IDX files, CSV tables
 *
 * It lives in autograd/ because that is where every use of nabla starts;
 * the headers it names each open with what they hold and the rules they
 * follow (ownership and errors: nb_autograd.h).
 */
#ifndef NABLA_H
#define NABLA_H

#include "nb_autograd.h"
#include "nb_ops.h"
#include "nb_optim.h"
#include "nb_nn.h"
#include "nb_data.h"
#include "nb_io.h"

/* Source locations of op calls, for anomaly mode (see nb_locations.h). */
#ifdef NB_LOCATIONS
#include "nb_locations.h"
#endif

#endif
