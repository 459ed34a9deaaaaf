/* test_vmath.c — the branch-free exp, normal CDF and normal density of
 * ops/vmath_internal.h, against libm in double (exp, erfc) taken as the
 * exact value, over their whole float range: exp within 2 ulp of the
 * correctly rounded result (subnormal results included), Phi and phi within
 * a relative 1e-6 wherever the true value is a normal float. Also their
 * edges (0, ±inf, NaN, overflow, underflow), and that a loop the compiler
 * vectorises gives the same bits as one call at a time, for each of the
 * instruction sets NB_VM_MULTIARCH compiles it for.
 */
#include "test_util.h"

#include <float.h>
#include <stdint.h>

#include "vmath_internal.h"

TestSuite(vmath, NB_TEST_HOOKS);

/* The distance from y to the exact value ref in units of the last place of
 * float at ref (the subnormals' spacing below FLT_MIN). */
static double ulps(float y, double ref) {
    int e;
    frexp(ref, &e);
    double ulp = ldexp(1.0, (e - 24 > -149 ? e - 24 : -149));
    return fabs((double)y - ref) / ulp;
}

/* f at every 401st float between lo and hi, which have the same sign (a
 * stride that keeps the test short under valgrind). */
static void each_float(float lo, float hi, void (*f)(float, void *), void *ctx) {
    uint32_t a, b;
    memcpy(&a, &lo, 4);
    memcpy(&b, &hi, 4);
    if (a > b) {
        uint32_t t = a;
        a = b;
        b = t;
    }
    for (uint32_t i = a; i <= b && i >= a; i += 401) {
        float x;
        memcpy(&x, &i, 4);
        f(x, ctx);
    }
}

typedef struct worst {
    double err;
    float at;
} worst;

static void exp_err(float x, void *ctx) {
    worst *w = ctx;
    double e = ulps(nb__expf(x), exp((double)x));
    if (e > w->err) *w = (worst){e, x};
}

Test(vmath, exp_within_2_ulp_over_its_range) {
    worst w = {0, 0};
    each_float(-0.0f, -104.0f, exp_err, &w); /* down into the subnormal results */
    each_float(0.0f, 88.72f, exp_err, &w);
    cr_assert(w.err <= 2.0, "exp: %.3f ulp at x = %.9g", w.err, (double)w.at);
}

Test(vmath, exp_edges) {
    cr_assert_eq(nb__expf(0.0f), 1.0f);
    cr_assert_eq(nb__expf(-0.0f), 1.0f);
    cr_assert_eq(nb__expf(1.0f), 2.71828183f);
    cr_assert(isinf(nb__expf(89.0f)) && isinf(nb__expf(INFINITY)));
    cr_assert_eq(nb__expf(-104.0f), 0.0f);
    cr_assert_eq(nb__expf(-INFINITY), 0.0f);
    cr_assert(isnan(nb__expf(NAN)));
    /* the smallest subnormal results, rounded rather than flushed */
    cr_assert_eq(nb__expf(-103.0f), (float)exp(-103.0));
    cr_assert(nb__expf(-100.0f) > 0 && nb__expf(-100.0f) < FLT_MIN);
    cr_assert(isfinite(nb__expf(88.72f)));
}

/* Phi(x) = erfc(−x/√2)/2 and phi(x) = exp(−x²/2)/√(2π), in double. */
static double cdf_ref(double x) { return 0.5 * erfc(-x / sqrt(2.0)); }
static double pdf_ref(double x) { return exp(-0.5 * x * x) * 0.39894228040143267794; }

static void cdf_err(float x, void *ctx) {
    worst *w = ctx;
    double ref = cdf_ref(x);
    if (ref < FLT_MIN) return;
    double e = fabs((double)nb__normal_cdf(x) - ref) / ref;
    if (e > w->err) *w = (worst){e, x};
}

static void pdf_err(float x, void *ctx) {
    worst *w = ctx;
    double ref = pdf_ref(x);
    if (ref < FLT_MIN) return;
    double e = fabs((double)nb__normal_pdf(x) - ref) / ref;
    if (e > w->err) *w = (worst){e, x};
}

Test(vmath, normal_cdf_within_1e6_relative) {
    worst w = {0, 0};
    each_float(-0.0f, -14.0f, cdf_err, &w); /* the tail down past FLT_MIN */
    each_float(0.0f, 20.0f, cdf_err, &w);
    cr_assert(w.err <= 1e-6, "Phi: relative error %.3g at x = %.9g", w.err, (double)w.at);
}

Test(vmath, normal_pdf_within_1e6_relative) {
    worst w = {0, 0};
    each_float(-0.0f, -14.0f, pdf_err, &w);
    each_float(0.0f, 14.0f, pdf_err, &w);
    cr_assert(w.err <= 1e-6, "phi: relative error %.3g at x = %.9g", w.err, (double)w.at);
}

Test(vmath, normal_edges) {
    cr_assert_eq(nb__normal_cdf(0.0f), 0.5f);
    cr_assert_eq(nb__normal_cdf(INFINITY), 1.0f);
    cr_assert_eq(nb__normal_cdf(-INFINITY), 0.0f);
    cr_assert_eq(nb__normal_cdf(40.0f), 1.0f);
    cr_assert_eq(nb__normal_cdf(-40.0f), 0.0f);
    cr_assert(isnan(nb__normal_cdf(NAN)) && isnan(nb__normal_pdf(NAN)));
    cr_assert_eq(nb__normal_pdf(INFINITY), 0.0f);
    cr_assert_eq(nb__normal_pdf(-INFINITY), 0.0f);
    /* values worked out from the closed forms: Phi(1) = 0.841344746..., phi(0) = 1/√(2π) */
    cr_assert(fabs(nb__normal_cdf(1.0f) - 0.84134474606854f) <= 1e-7);
    cr_assert(fabs(nb__normal_cdf(-3.0f) - 0.00134989803163f) <= 1e-6 * 0.00134989803163);
    cr_assert(fabs(nb__normal_pdf(0.0f) - 0.39894228040143f) <= 1e-7);
}

/* One call at a time, through a pointer the compiler cannot see into. */
static float (*volatile one_exp)(float) = nb__expf;
static float (*volatile one_cdf)(float) = nb__normal_cdf;
static float (*volatile one_pdf)(float) = nb__normal_pdf;

/* The three functions over an array, in loops the compiler vectorises, once
 * for each instruction set NB_VM_MULTIARCH compiles for. */
NB_VM_MULTIARCH(all_three, (const float *x, float *e, float *c, float *p, float *c2, float *p2, int n),
                (x, e, c, p, c2, p2, n), {
    for (int i = 0; i < n; i++) e[i] = nb__expf(x[i] * 5.0f);
    for (int i = 0; i < n; i++) c[i] = nb__normal_cdf(x[i]);
    for (int i = 0; i < n; i++) p[i] = nb__normal_pdf(x[i]);
    for (int i = 0; i < n; i++) c2[i] = nb__normal_cdf_pdf(x[i], p2 + i); /* both at once */
})

enum { N = 4099 };

static void expect_single_call_bits(const char *set, const float *x, const float *e,
                                    const float *c, const float *p, const float *c2, const float *p2) {
    for (int i = 0; i < N; i++) {
        float e1 = one_exp(x[i] * 5.0f), c1 = one_cdf(x[i]), p1 = one_pdf(x[i]);
        cr_assert(memcmp(&c1, c2 + i, 4) == 0 && memcmp(&p1, p2 + i, 4) == 0,
                  "%s, x = %g: nb__normal_cdf_pdf gives %a %a, the two functions alone %a %a", set,
                  (double)x[i], (double)c2[i], (double)p2[i], (double)c1, (double)p1);
        cr_assert(memcmp(&e1, e + i, 4) == 0 && memcmp(&c1, c + i, 4) == 0 && memcmp(&p1, p + i, 4) == 0,
                  "%s, x = %g: %a %a %a in the loop, %a %a %a alone", set, (double)x[i], (double)e[i],
                  (double)c[i], (double)p[i], (double)e1, (double)c1, (double)p1);
    }
}

Test(vmath, vectorised_loops_give_the_bits_of_single_calls_on_every_instruction_set) {
    static float x[N], e[N], c[N], p[N], c2[N], p2[N];
    nb_generator g;
    nb_generator_seed(&g, 7);
    for (int i = 0; i < N; i++) x[i] = (float)(nb_generator_uniform(&g) * 40.0 - 20.0);
    x[5] = NAN;
    x[6] = INFINITY;
    x[7] = -INFINITY;
    x[8] = -0.0f;
    all_three(x, e, c, p, c2, p2, N); /* the widest this CPU has */
    expect_single_call_bits("dispatched", x, e, c, p, c2, p2);
#if defined(__x86_64__) && defined(__GNUC__)
    all_three_base(x, e, c, p, c2, p2, N);
    expect_single_call_bits("baseline x86-64", x, e, c, p, c2, p2);
    if (__builtin_cpu_supports("avx2")) {
        all_three_avx2(x, e, c, p, c2, p2, N);
        expect_single_call_bits("AVX2", x, e, c, p, c2, p2);
    }
    if (__builtin_cpu_supports("avx512f")) {
        all_three_avx512(x, e, c, p, c2, p2, N);
        expect_single_call_bits("AVX-512", x, e, c, p, c2, p2);
    }
#endif
}

/* nb__vm_sqrt over an array in a loop the compiler vectorises, for each
 * instruction set. */
NB_VM_MULTIARCH(sqrt_loop, (const float *x, float *y, int n), (x, y, n), {
    for (int i = 0; i < n; i++) y[i] = nb__vm_sqrt(x[i]);
})

/* Every positive subnormal, both signs of zero, FLT_MIN and its neighbours,
 * negative numbers, infinities and NaN, then every 401st normal float: the
 * bits of sqrtf, in a vectorised loop on each instruction set and alone. */
Test(vmath, sqrt_gives_the_bits_of_sqrtf_subnormals_included) {
    enum { SUB = (1 << 23) - 1, EDGES = 10 };
    const int n = SUB + EDGES;
    float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
    cr_assert(x && y);
    for (uint32_t b = 1; b <= (uint32_t)SUB; b++) x[b - 1] = nb__vm_bits_to_float(b);
    const float edges[EDGES] = {0.0f, -0.0f, FLT_MIN, nextafterf(FLT_MIN, 0.0f),
                                nextafterf(FLT_MIN, 1.0f), -1e-40f, -4.0f, INFINITY, -INFINITY, NAN};
    memcpy(x + SUB, edges, sizeof edges);
    void (*sets[4])(const float *, float *, int) = {sqrt_loop, NULL, NULL, NULL};
    const char *names[4] = {"dispatched", "baseline x86-64", "AVX2", "AVX-512"};
#if defined(__x86_64__) && defined(__GNUC__)
    sets[1] = sqrt_loop_base;
    if (__builtin_cpu_supports("avx2")) sets[2] = sqrt_loop_avx2;
    if (__builtin_cpu_supports("avx512f")) sets[3] = sqrt_loop_avx512;
#endif
    for (int s = 0; s < 4; s++) {
        if (!sets[s]) continue;
        sets[s](x, y, n);
        for (int i = 0; i < n; i++) {
            float want = sqrtf(x[i]);
            cr_assert(memcmp(&want, y + i, 4) == 0 || (isnan(want) && isnan(y[i])),
                      "%s: sqrt(%a) gave %a, sqrtf %a", names[s], (double)x[i], (double)y[i],
                      (double)want);
        }
    }
    for (uint32_t b = 0x00800000u; b < 0x7f800000u; b += 401) {
        float v = nb__vm_bits_to_float(b), want = sqrtf(v), got = nb__vm_sqrt(v);
        cr_assert(memcmp(&want, &got, 4) == 0, "sqrt(%a) gave %a, sqrtf %a", (double)v,
                  (double)got, (double)want);
    }
    /* worked by hand: sqrt(2^-140) = 2^-70, sqrt(2^-149) = 2^-74.5 */
    cr_assert_eq(nb__vm_sqrt(0x1p-140f), 0x1p-70f);
    cr_assert_float_eq(nb__vm_sqrt(0x1p-149f), 0x1p-75f * 1.41421356f, 1e-7 * 0x1p-75);
    free(x);
    free(y);
}
