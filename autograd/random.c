/* random.c — nabla's own random numbers, so that a seed gives the same
 * tensors on every platform and C library: PCG32 (O'Neill's permuted
 * congruential generator, 64-bit state, 32-bit output) for integers and
 * uniform floats, Box-Muller on top of it for normal values.
 */
#include "tensor_internal.h"

#include <math.h>

#define PCG_MULT 6364136223846793005ULL

static _Thread_local nb_generator default_gen;
static _Thread_local bool default_seeded;

uint32_t nb_generator_next(nb_generator *g) {
    uint64_t old = g->state;
    g->state = old * PCG_MULT + g->inc;
    uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((-rot) & 31u));
}

void nb_generator_seed(nb_generator *g, uint64_t seed) {
    g->state = 0;
    g->inc = (0xda3e39cb94b95bdbULL << 1u) | 1u; /* one fixed stream */
    g->has_spare = false;
    g->spare = 0;
    nb_generator_next(g);
    g->state += seed;
    nb_generator_next(g);
}

/* 53 random bits: exact in double, uniform on [0, 1). */
double nb_generator_uniform(nb_generator *g) {
    uint64_t hi = nb_generator_next(g) >> 5, lo = nb_generator_next(g) >> 6;
    return (double)(hi * 67108864u + lo) * (1.0 / 9007199254740992.0);
}

double nb_generator_normal(nb_generator *g) {
    if (g->has_spare) {
        g->has_spare = false;
        return g->spare;
    }
    double u1;
    do u1 = nb_generator_uniform(g);
    while (u1 <= 0);
    double u2 = nb_generator_uniform(g);
    double r = sqrt(-2.0 * log(u1)), theta = 2.0 * 3.14159265358979323846 * u2;
    g->spare = r * sin(theta);
    g->has_spare = true;
    return r * cos(theta);
}

nb_generator *nb_default_generator(void) {
    if (!default_seeded) {
        nb_generator_seed(&default_gen, 0);
        default_seeded = true;
    }
    return &default_gen;
}

void nb_manual_seed(uint64_t seed) {
    nb_generator_seed(&default_gen, seed);
    default_seeded = true;
}

/* A float in [low, high): computed in double, then kept below high after
 * rounding to float. */
static float uniform_float(nb_generator *g, float low, float high) {
    float v = (float)((double)low + ((double)high - (double)low) * nb_generator_uniform(g));
    return v < high ? v : nextafterf(high, low);
}

/* who: the public function called (nb_rand reports as nb_rand). */
static nb_tensor *uniform_for(const char *who, nb_generator *gen, float low, float high, int ndim,
                              const int64_t *shape) {
    if (!(low <= high) || !isfinite(low) || !isfinite(high)) {
        nb_set_error("%s: invalid range [%g, %g)", who, (double)low, (double)high);
        return NULL;
    }
    nb_tensor *t = nb__tensor_new(ndim, shape, who);
    if (!t) return NULL;
    nb_generator *g = gen ? gen : nb_default_generator();
    float *d = t->storage->data;
    for (int64_t i = 0; i < t->numel; i++) d[i] = low == high ? low : uniform_float(g, low, high);
    return t;
}

static nb_tensor *normal_for(const char *who, nb_generator *gen, float mean, float std, int ndim,
                             const int64_t *shape) {
    if (!(std >= 0) || !isfinite(mean) || !isfinite(std)) {
        nb_set_error("%s: invalid mean %g or std %g", who, (double)mean, (double)std);
        return NULL;
    }
    nb_tensor *t = nb__tensor_new(ndim, shape, who);
    if (!t) return NULL;
    nb_generator *g = gen ? gen : nb_default_generator();
    float *d = t->storage->data;
    for (int64_t i = 0; i < t->numel; i++)
        d[i] = (float)((double)mean + (double)std * nb_generator_normal(g));
    return t;
}

nb_tensor *nb_uniform(nb_generator *gen, float low, float high, int ndim, const int64_t *shape) {
    return uniform_for("nb_uniform", gen, low, high, ndim, shape);
}
nb_tensor *nb_normal(nb_generator *gen, float mean, float std, int ndim, const int64_t *shape) {
    return normal_for("nb_normal", gen, mean, std, ndim, shape);
}
nb_tensor *nb_rand(int ndim, const int64_t *shape) {
    return uniform_for("nb_rand", NULL, 0.0f, 1.0f, ndim, shape);
}
nb_tensor *nb_randn(int ndim, const int64_t *shape) {
    return normal_for("nb_randn", NULL, 0.0f, 1.0f, ndim, shape);
}

/* Unbiased bounded integers by rejection (Lemire's threshold). */
static uint64_t below(nb_generator *g, uint64_t n) {
    if (n <= UINT32_MAX) {
        uint32_t bound = (uint32_t)n, threshold = (uint32_t)(-bound) % bound;
        for (;;) {
            uint32_t r = nb_generator_next(g);
            if (r >= threshold) return r % bound;
        }
    }
    for (;;) {
        uint64_t r = ((uint64_t)nb_generator_next(g) << 32) | nb_generator_next(g);
        uint64_t limit = UINT64_MAX - UINT64_MAX % n;
        if (r < limit) return r % n;
    }
}

void nb_randperm(nb_generator *gen, int64_t n, int64_t *out) {
    if (n <= 0 || !out) return;
    nb_generator *g = gen ? gen : nb_default_generator();
    for (int64_t i = 0; i < n; i++) out[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)below(g, (uint64_t)i + 1);
        int64_t tmp = out[i];
        out[i] = out[j];
        out[j] = tmp;
    }
}
