/* init.c — parameter initialisers, filling a tensor in place from nabla's
 * seeded generator so that a seed fixes a model's starting point on every
 * platform. The fan-based ones (Glorot/Xavier, He/Kaiming, LeCun) read the
 * fans from Keras's kernel layout [..., fan_in, fan_out], which is the
 * layout of nabla's Dense weight; the normal variants use a plain normal
 * distribution (PyTorch's choice; Keras truncates at two deviations).
 */
#include "nn_internal.h"

#include <math.h>

static bool check(const char *who, nb_tensor *t) {
    if (!t) return false;
    if (nb_requires_grad(t) && !nb_is_leaf(t)) {
        nb_set_error("%s: cannot initialise a tensor computed by '%s'", who, nb_op_of(t)->name);
        return false;
    }
    return true;
}

int nb_init_constant(nb_tensor *t, float value) {
    if (!check("nb_init_constant", t)) return -1;
    float *d = nb_data_mut(t);
    for (int64_t i = 0; i < nb_numel(t); i++) d[i] = value;
    return 0;
}

int nb_init_zeros(nb_tensor *t) { return nb_init_constant(t, 0.0f); }
int nb_init_ones(nb_tensor *t) { return nb_init_constant(t, 1.0f); }

int nb_init_uniform(nb_tensor *t, float low, float high, nb_generator *gen) {
    if (!check("nb_init_uniform", t)) return -1;
    if (!(low <= high)) {
        nb_set_error("nb_init_uniform: invalid range [%g, %g)", (double)low, (double)high);
        return -1;
    }
    nb_generator *g = gen ? gen : nb_default_generator();
    float *d = nb_data_mut(t);
    for (int64_t i = 0; i < nb_numel(t); i++)
        d[i] = (float)((double)low + ((double)high - (double)low) * nb_generator_uniform(g));
    return 0;
}

int nb_init_normal(nb_tensor *t, float mean, float std, nb_generator *gen) {
    if (!check("nb_init_normal", t)) return -1;
    if (!(std >= 0)) {
        nb_set_error("nb_init_normal: std must be >= 0, got %g", (double)std);
        return -1;
    }
    nb_generator *g = gen ? gen : nb_default_generator();
    float *d = nb_data_mut(t);
    for (int64_t i = 0; i < nb_numel(t); i++)
        d[i] = (float)((double)mean + (double)std * nb_generator_normal(g));
    return 0;
}

/* fan_in and fan_out of a kernel [..., in, out]; a vector counts as [n, n]. */
static void fans(const nb_tensor *t, double *fan_in, double *fan_out) {
    int n = nb_ndim(t);
    if (n == 0) {
        *fan_in = *fan_out = 1;
    } else if (n == 1) {
        *fan_in = *fan_out = (double)nb_dim(t, 0);
    } else {
        double receptive = 1;
        for (int d = 0; d < n - 2; d++) receptive *= (double)nb_shape(t)[d];
        *fan_in = (double)nb_dim(t, -2) * receptive;
        *fan_out = (double)nb_dim(t, -1) * receptive;
    }
    if (*fan_in < 1) *fan_in = 1;
    if (*fan_out < 1) *fan_out = 1;
}

int nb_init_glorot_uniform(nb_tensor *t, nb_generator *gen) {
    if (!t) return -1;
    double in, out;
    fans(t, &in, &out);
    float limit = (float)sqrt(6.0 / (in + out));
    return nb_init_uniform(t, -limit, limit, gen);
}

int nb_init_glorot_normal(nb_tensor *t, nb_generator *gen) {
    if (!t) return -1;
    double in, out;
    fans(t, &in, &out);
    return nb_init_normal(t, 0, (float)sqrt(2.0 / (in + out)), gen);
}

int nb_init_he_uniform(nb_tensor *t, nb_generator *gen) {
    if (!t) return -1;
    double in, out;
    fans(t, &in, &out);
    float limit = (float)sqrt(6.0 / in);
    return nb_init_uniform(t, -limit, limit, gen);
}

int nb_init_he_normal(nb_tensor *t, nb_generator *gen) {
    if (!t) return -1;
    double in, out;
    fans(t, &in, &out);
    return nb_init_normal(t, 0, (float)sqrt(2.0 / in), gen);
}

int nb_init_lecun_uniform(nb_tensor *t, nb_generator *gen) {
    if (!t) return -1;
    double in, out;
    fans(t, &in, &out);
    float limit = (float)sqrt(3.0 / in);
    return nb_init_uniform(t, -limit, limit, gen);
}

int nb_init_lecun_normal(nb_tensor *t, nb_generator *gen) {
    if (!t) return -1;
    double in, out;
    fans(t, &in, &out);
    return nb_init_normal(t, 0, (float)sqrt(1.0 / in), gen);
}
