/* dist_internal.h — what the files of nn/dist share and users do not see. */
#ifndef NB_DIST_INTERNAL_H
#define NB_DIST_INTERNAL_H

#include "nb_dist.h"

/* Sets every rank's default generator to rank 0's (the source of the
 * sampler's permutations); messages name who. */
int nb__dist_broadcast_generator(const char *who, nb_dist *d);

#endif
