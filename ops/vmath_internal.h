/* vmath_internal.h — exp and the normal distribution's CDF and density as
 * straight-line float code, for the elementwise loops of ops that call them
 * millions of times a step (gelu and its gradient, softmax in attention).
 *
 * Why not libm's expf and erff: a call per element keeps the loop scalar,
 * and erff branches on its argument's range. These functions have no call
 * and no branch (every range is computed and the right one selected), so
 * the compiler vectorises the loops around them at the baseline x86-64
 * (SSE2, four lanes), and wider where NB_VM_MULTIARCH (at the end) finds
 * AVX2 or AVX-512 at run time. Their results do not depend on that: plain
 * float operations, each rounded once (no contraction into FMA), the same
 * bits in any lane, on any CPU, at any thread count.
 *
 * Accuracy (tests/ops/test_vmath.c checks it against libm in double on
 * every 401st float of the whole range): exp within 2 ulp, including the
 * subnormal results; the normal CDF Phi(x) and density phi(x) within a
 * relative 1e-6 wherever they are above FLT_MIN, far better in the tail
 * than 0.5·(1 + erff(x/√2)), which cancels to nothing for x below about −5.
 * (On every 31st float the worst were 1.25 ulp, 5.2e-7 and 2.0e-7.) NaN
 * gives NaN.
 *
 * The methods are the textbook ones; the polynomials' coefficients are
 * least-squares fits (relative error, then reweighted towards minimax) made
 * for this file:
 *   exp(x) = 2^n · e^r, n = round(x / ln 2), r = x − n ln 2 in two parts
 *            (Cody and Waite), e^r = 1 + r + r²·P(r) with |r| <= ln2 / 2;
 *            2^n applied as two factors, so that results down in the
 *            subnormals are rounded once, not flushed to 0.
 *   Phi(x) = 1/2 + 1/2·erf(u), u = x/√2, when |u| < 1/2: erf(u) = u·Q(u²);
 *          = erfc(|u|)/2 or 1 − erfc(|u|)/2 otherwise, with
 *            erfc(a) = exp(−a²)·R(t), t = 1/(1 + a/2) (erfc·exp(a²) is
 *            smooth and slowly varying there), exp(−a²) = exp(−x²/2) taken
 *            with x² split into an exact high part and a small low part,
 *            so that the rounding of x² (up to 100 ulp of the result at
 *            x = 13) is not carried into the result.
 */
#ifndef NB_VMATH_INTERNAL_H
#define NB_VMATH_INTERNAL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* GCC in ISO C mode never contracts a·b + c into one FMA; clang does by
 * default within an expression, which would round the AVX-512 build (FMA
 * available) differently from the SSE2 one (none). Off for clang too, for
 * the files that include this one. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

static inline float nb__vm_bits_to_float(uint32_t b) {
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}
static inline uint32_t nb__vm_float_to_bits(float f) {
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

/* c ? a : b as a bit mask, with both arms computed: a float ternary whose
 * arms compute would keep its branch (the compiler may not speculate an
 * operation that could raise a floating-point exception), and with it the
 * loop scalar. */
static inline float nb__vm_select(int c, float a, float b) {
    uint32_t m = -(uint32_t)(c != 0);
    return nb__vm_bits_to_float((nb__vm_float_to_bits(a) & m) | (nb__vm_float_to_bits(b) & ~m));
}

/* sqrtf(x), the same bits, without handing the square root a subnormal x:
 * x86 CPUs take a slow microcoded path for one (on Zen 4 it doubles the
 * cost of an RMSprop step over such averages, and RMSprop's and Adam's
 * averages of gradients that are almost always zero decay into the
 * subnormals and stay there: alpha times a few ulp rounds back to those few
 * ulp). Below FLT_MIN, sqrt(x · 2^64) · 2^-32: the scaling is exact both
 * ways (x · 2^64 is normal, the root of a subnormal is normal) and the root
 * is rounded once, so the result is sqrtf(x) exactly; 0, −0, negative x and
 * NaN come out as sqrtf gives them. */
static inline float nb__vm_sqrt(float x) {
    int tiny = x < 0x1p-126f;
    float r = sqrtf(nb__vm_select(tiny, x * 0x1p64f, x));
    return nb__vm_select(tiny, r * 0x1p-32f, r);
}

/* 2^k for an integer k in [-126, 127], built in the exponent field. */
static inline float nb__vm_pow2i(int32_t k) { return nb__vm_bits_to_float((uint32_t)(k + 127) << 23); }

/* exp(hi + lo) for hi already in [-104, 89] (not NaN), lo a small
 * correction to hi (|lo| well below ln 2 / 2): lo joins the reduced
 * argument, where it is not lost to the rounding of a large hi. The callers
 * below clamp and handle NaN once, outside. */
static inline float nb__vm_exp_core(float x, float lo) {
    /* round to nearest by adding and removing 1.5·2^23 */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    /* ln 2 = 0.693359375 (9 bits, so n·that is exact) − 2.12194440e-4 */
    float r = ((x - n * 0.693359375f) + n * 2.12194440e-4f) + lo;
    float p = 1.990894781e-04f;
    p = p * r + 1.393455151e-03f;
    p = p * r + 8.333284042e-03f;
    p = p * r + 4.166645671e-02f;
    p = p * r + 1.666666676e-01f;
    p = p * r + 5.000000014e-01f;
    float e = (1.0f + r) + (r * r) * p;
    int32_t k = (int32_t)n, k1 = k / 2, k2 = k - k1; /* both in [-75, 64] */
    return (e * nb__vm_pow2i(k1)) * nb__vm_pow2i(k2);
}

/* exp(hi + lo), any hi. */
static inline float nb__exp_sum(float hi, float lo) {
    /* beyond these, the result is 0 or inf anyway; clamping keeps the
     * conversion to int in range (NaN is put back at the end) */
    float x = nb__vm_select(hi >= -104.0f, hi, -104.0f);
    x = nb__vm_select(x <= 89.0f, x, 89.0f);
    return nb__vm_select(hi == hi, nb__vm_exp_core(x, lo), hi);
}

static inline float nb__expf(float x) { return nb__exp_sum(x, 0.0f); }

/* exp(−a²/2) for a = |x| >= 0 (NaN gives a finite value: the callers put
 * NaN back), with a² split as ah² + al·(a + ah), ah being a with its last
 * 12 bits cleared: ah² is then exact in float, and so is its half.
 * (Scaling x by 1/√2 first would round, and at x = 13 that one rounding
 * alone is a relative 1e-5 of the result.) */
static inline float nb__vm_exp_neg_half_square_abs(float a) {
    a = nb__vm_select(a <= 15.0f, a, 15.0f); /* exp(−112.5) is below every float */
    float ah = nb__vm_bits_to_float(nb__vm_float_to_bits(a) & 0xfffff000u), al = a - ah;
    float hi = -0.5f * (ah * ah);
    return nb__vm_exp_core(nb__vm_select(hi >= -104.0f, hi, -104.0f), -0.5f * (al * (a + ah)));
}

static inline float nb__exp_neg_half_square(float x) {
    return nb__vm_select(x == x, nb__vm_exp_neg_half_square_abs(fabsf(x)), x);
}

#define NB__VM_INV_SQRT2 0.70710678118654752440f
#define NB__VM_INV_SQRT_2PI 0.39894228040143267794f

/* The standard normal density phi(x) = exp(−x²/2) / √(2π). */
static inline float nb__normal_pdf(float x) {
    return NB__VM_INV_SQRT_2PI * nb__exp_neg_half_square(x);
}

/* The standard normal CDF Phi(x) = (1 + erf(x/√2)) / 2, and in *pdf the
 * density phi(x), which the tails compute anyway (the bits of
 * nb__normal_pdf(x)). */
static inline float nb__normal_cdf_pdf(float x, float *pdf) {
    float u = x * NB__VM_INV_SQRT2, a = fabsf(u);
    /* near 0: erf(u) = u·Q(u²) */
    float s = u * u, q = 4.742706113e-03f;
    q = q * s - 2.676836146e-02f;
    q = q * s + 1.128297820e-01f;
    q = q * s - 3.761261533e-01f;
    q = q * s + 1.128379166e+00f;
    float mid = 0.5f + 0.5f * (u * q);
    /* the tails: erfc(a) = exp(−a²)·R(t), exp(−a²) = exp(−x²/2) */
    float t = 1.0f / (1.0f + 0.5f * a), r = 3.994613164e-02f;
    r = r * t - 4.913926888e-02f;
    r = r * t - 1.664892826e-01f;
    r = r * t + 2.547539077e-01f;
    r = r * t + 8.764526394e-02f;
    r = r * t + 2.734469990e-01f;
    r = r * t + 2.774026140e-01f;
    r = r * t + 2.825453760e-01f;
    r = r * t - 1.816133024e-05f;
    float e = nb__vm_exp_neg_half_square_abs(fabsf(x));
    *pdf = NB__VM_INV_SQRT_2PI * nb__vm_select(x == x, e, x);
    float half_erfc = 0.5f * (e * r);
    float tail = nb__vm_select(u > 0, 1.0f - half_erfc, half_erfc);
    float y = nb__vm_select(a < 0.5f, mid, tail);
    return nb__vm_select(x == x, y, x);
}

static inline float nb__normal_cdf(float x) {
    float unused;
    return nb__normal_cdf_pdf(x, &unused);
}

/* ---- wider vectors where the CPU has them --------------------------------
 * NB_VM_MULTIARCH(name, params, args, body) defines static void name(params)
 * whose body is compiled three times, for baseline x86-64, for AVX2 and for
 * AVX-512, and runs the widest the CPU has (as the GEMM chooses its
 * kernels). Only the width of the vectors changes: the same adds,
 * multiplies, divides, compares and bit operations, no FMA (AVX2 here does
 * not bring it, and ISO C mode does not contract), so the three give the
 * same bits. Elsewhere than x86-64 with GCC or clang, the body once. */
#if defined(__x86_64__) && defined(__GNUC__)
#define NB_VM_MULTIARCH(name, params, args, ...)                                \
    static void name##_base params { __VA_ARGS__ }                              \
    __attribute__((target("avx2"))) static void name##_avx2 params { __VA_ARGS__ } \
    __attribute__((target("avx512f"))) static void name##_avx512 params { __VA_ARGS__ } \
    static void name params {                                                   \
        if (__builtin_cpu_supports("avx512f")) name##_avx512 args;              \
        else if (__builtin_cpu_supports("avx2")) name##_avx2 args;              \
        else name##_base args;                                                  \
    }
#else
#define NB_VM_MULTIARCH(name, params, args, ...) static void name params { __VA_ARGS__ }
#endif

#endif
