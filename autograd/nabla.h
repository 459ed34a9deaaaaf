/* nabla.h — include this one header to use nabla.
 *
 *   nb_autograd.h   tensors, ownership, backward, the op API, gradcheck
 *   nb_ops.h        the differentiable ops
 *
 * It lives in autograd/ because that is where every use of nabla starts;
 * the headers it names each open with what they hold and the rules they
 * follow (ownership and errors: nb_autograd.h).
 */
#ifndef NABLA_H
#define NABLA_H

#include "nb_autograd.h"
#include "nb_ops.h"

#endif
