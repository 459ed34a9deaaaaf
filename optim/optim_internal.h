/* optim_internal.h — what the optimizer families of optim/ share and a user
 * never sees: the optimizer struct, the small table that makes one family
 * differ from another, and the constructor they all go through.
 *
 * A family (sgd.c, adam.c, rmsprop.c, adagrad.c) is a kind: a name, the
 * names of its per-parameter state tensors and an update function that
 * applies one step to one parameter's floats. optimizer.c does the rest
 * once: checking the parameters, making and releasing the state, skipping
 * parameters without a .grad, per-parameter step counts, lr and lookups.
 */
#ifndef NB_OPTIM_INTERNAL_H
#define NB_OPTIM_INTERNAL_H

#include "nb_optim.h"

#include <math.h>
#include <string.h>

#define NB_OPTIM_MAX_STATE 3 /* state tensors a family keeps per parameter */

/* The update loops are compiled for baseline x86-64, AVX2 and AVX-512 and
 * run the widest the CPU has (NB_VM_MULTIARCH of ops/vmath_internal.h):
 * the library is built for baseline x86-64, where a loop of square roots
 * and divides runs four floats at a time. Each element goes through the
 * same IEEE operations in the same order on every path (no contraction
 * into fused multiply-adds in C11 mode; sqrt and division are correctly
 * rounded), so all paths give the same bits. */

/* A shape formatted for a message: SHAPE(t) is "[3,4]". */
#define NB_SHAPE_BUF 96
#define SHAPE(t) nb_shape_str(nb_ndim(t), nb_shape(t), (char[NB_SHAPE_BUF]){0}, NB_SHAPE_BUF)

typedef struct nb_optim_kind {
    const char *name;
    int nstate;
    const char *state_names[NB_OPTIM_MAX_STATE];
    /* One step for n floats of a parameter: p, g and s[k] (its state k, NULL
     * where the family keeps none with these options) all start at the same
     * element; step is the parameter's step count including this one (1 on
     * its first update). A step of one parameter may be cut into several
     * such calls, run at once on different threads: an update must touch
     * only its own n elements (all of them are elementwise). */
    void (*update)(const nb_optimizer *o, float *restrict p, const float *restrict g,
                   float *const *s, int64_t n, int64_t step);
} nb_optim_kind;

struct nb_optimizer {
    const nb_optim_kind *kind;
    float lr;
    int nparams;
    nb_tensor **params;   /* borrowed */
    int64_t *param_steps; /* updates applied to each parameter */
    int64_t steps;        /* successful nb_optimizer_step calls */
    nb_tensor **state;    /* nparams * kind->nstate, kept; NULL where unused */
    int64_t *start;       /* nparams + 1: where each parameter begins in a step's
                           * flat range of all gradient elements */
    union {
        nb_sgd_opts sgd;
        nb_adam_opts adam;
        nb_rmsprop_opts rmsprop;
        nb_adagrad_opts adagrad;
    } opts;
    bool decoupled_decay; /* adamw */
};

/* Checks the parameters (messages start with who), allocates the optimizer
 * and, for each state k with want_state[k], one tensor per parameter filled
 * with state_init[k]. Returns NULL and a message on bad input. The caller
 * then fills o->opts. */
nb_optimizer *nb__optimizer_new(const char *who, const nb_optim_kind *kind, int nparams,
                                nb_tensor *const *params, float lr, const bool *want_state,
                                const float *state_init);

/* Option checks shared by the constructors: true, or false and a message
 * "who: what must be range, got v". */
bool nb__optim_check(const char *who, const char *what, float v, float lo, float hi,
                     bool hi_open);

#endif
