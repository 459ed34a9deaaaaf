/* test_unary.c — the elementwise functions of ops/unary.c: neg, exp, log,
 * sqrt, abs, sign, sin, cos, square and erf.
 *
 * For each: values and first derivatives at points worked out by hand (the
 * derivative is in the comment), then finite-difference checks of the
 * gradient and of its own gradient on random inputs, kept away from 0 where
 * the function has a kink (abs, sign) or leaves its domain (log, sqrt).
 * Out-of-domain inputs give IEEE results (nan, inf), never a crash.
 */
#include "test_util.h"

TestSuite(unary, NB_TEST_HOOKS);

typedef nb_tensor *(*unary_fn)(nb_tensor *);

static nb_tensor *vec(int n, const float *v) { return nb_from_array(1, (int64_t[]){n}, v); }

/* gradcheck's form of a unary op: ctx is the op. */
static nb_tensor *apply(nb_tensor *const *in, void *ctx) { return (*(unary_fn *)ctx)(in[0]); }

/* d sum(f(x)) / dx at the listed points. */
static nb_tensor *grad_of_sum(unary_fn f, int n, const float *v) {
    nb_tensor *x = nb_set_requires_grad(vec(n, v), true);
    nb_tensor *y = f(x);
    cr_assert_not_null(y, "%s", nb_error() ? nb_error() : "");
    cr_assert_eq(nb_backward(nb_sum_to(y, NB_SHAPE())), 0, "%s", nb_error() ? nb_error() : "");
    return nb_grad_of(x);
}

/* Gradcheck and gradgradcheck of f on a random [3,4] input in [lo, hi),
 * with |x| >= gap. */
static void check(unary_fn f, float lo, float hi, float gap) {
    nb_tensor *x = nb_uniform(NULL, lo, hi, NB_SHAPE(3, 4));
    float *d = nb_data_mut(x);
    for (int64_t i = 0; i < nb_numel(x); i++)
        if (fabsf(d[i]) < gap) d[i] = d[i] < 0 ? -gap : gap;
    nb_set_requires_grad(x, true);
    nb_test_gradcheck(apply, &f, 1, &x, true);
}

Test(unary, neg) {
    float x[] = {-2, 0, 3.5f};
    EXPECT_VALUES(nb_neg(vec(3, x)), 0, 2, 0, -3.5f);
    EXPECT_VALUES(grad_of_sum(nb_neg, 3, x), 0, -1, -1, -1);
    check(nb_neg, -2, 2, 0);
}

Test(unary, exp) {
    /* d e^x = e^x */
    float x[] = {0, 1, -1, 2};
    EXPECT_VALUES(nb_exp(vec(4, x)), 1e-6, 1, 2.7182818f, 0.36787944f, 7.3890561f);
    EXPECT_VALUES(grad_of_sum(nb_exp, 4, x), 1e-6, 1, 2.7182818f, 0.36787944f, 7.3890561f);
    check(nb_exp, -2, 2, 0);
}

Test(unary, log) {
    /* d log x = 1/x */
    float x[] = {1, 2, 0.5f, 10};
    EXPECT_VALUES(nb_log(vec(4, x)), 1e-6, 0, 0.69314718f, -0.69314718f, 2.3025851f);
    EXPECT_VALUES(grad_of_sum(nb_log, 4, x), 1e-6, 1, 0.5f, 2, 0.1f);
    check(nb_log, 0.2f, 3, 0);
}

Test(unary, log_outside_its_domain) {
    nb_tensor *y = nb_log(vec(2, (float[]){-1, 0}));
    cr_assert_not_null(y);
    cr_assert(isnan(nb_data(y)[0]), "log(-1) = %g", (double)nb_data(y)[0]);
    cr_assert(isinf(nb_data(y)[1]) && nb_data(y)[1] < 0, "log(0) = %g", (double)nb_data(y)[1]);
}

Test(unary, sqrt) {
    /* d sqrt x = 1 / (2 sqrt x) */
    EXPECT_VALUES(nb_sqrt(vec(4, (float[]){0, 1, 4, 2})), 1e-6, 0, 1, 2, 1.4142136f);
    EXPECT_VALUES(grad_of_sum(nb_sqrt, 3, (float[]){1, 4, 2}), 1e-6, 0.5f, 0.25f, 0.35355339f);
    cr_assert(isnan(nb_data(nb_sqrt(nb_scalar(-1)))[0]));
    check(nb_sqrt, 0.2f, 3, 0);
}

Test(unary, abs) {
    /* d |x| = sign(x), 0 at 0 */
    float x[] = {-2, -0.5f, 0, 3};
    EXPECT_VALUES(nb_abs(vec(4, x)), 0, 2, 0.5f, 0, 3);
    EXPECT_VALUES(grad_of_sum(nb_abs, 4, x), 0, -1, -1, 0, 1);
    check(nb_abs, -2, 2, 0.1f);
}

Test(unary, sign) {
    /* piecewise constant: gradient 0 everywhere */
    float x[] = {-2, 0, 3, -0.0f};
    EXPECT_VALUES(nb_sign(vec(4, x)), 0, -1, 0, 1, 0);
    EXPECT_VALUES(grad_of_sum(nb_sign, 4, x), 0, 0, 0, 0, 0);
    check(nb_sign, -2, 2, 0.1f);
}

Test(unary, sin) {
    /* d sin x = cos x */
    float x[] = {0, 0.5f, -1, 2};
    EXPECT_VALUES(nb_sin(vec(4, x)), 1e-6, 0, 0.47942554f, -0.84147098f, 0.90929743f);
    EXPECT_VALUES(grad_of_sum(nb_sin, 4, x), 1e-6, 1, 0.87758256f, 0.54030231f, -0.41614684f);
    check(nb_sin, -3, 3, 0);
}

Test(unary, cos) {
    /* d cos x = -sin x */
    float x[] = {0, 0.5f, -1, 2};
    EXPECT_VALUES(nb_cos(vec(4, x)), 1e-6, 1, 0.87758256f, 0.54030231f, -0.41614684f);
    EXPECT_VALUES(grad_of_sum(nb_cos, 4, x), 1e-6, 0, -0.47942554f, 0.84147098f, -0.90929743f);
    check(nb_cos, -3, 3, 0);
}

Test(unary, square) {
    /* d x^2 = 2x */
    float x[] = {-3, 0.5f, 0, 2};
    EXPECT_VALUES(nb_square(vec(4, x)), 0, 9, 0.25f, 0, 4);
    EXPECT_VALUES(grad_of_sum(nb_square, 4, x), 0, -6, 1, 0, 4);
    check(nb_square, -2, 2, 0);
}

Test(unary, erf) {
    /* d erf x = 2/sqrt(pi) exp(-x^2) */
    float x[] = {-1, 0, 0.5f, 2};
    EXPECT_VALUES(nb_erf(vec(4, x)), 1e-6, -0.84270079f, 0, 0.52049988f, 0.99532227f);
    EXPECT_VALUES(grad_of_sum(nb_erf, 4, x), 1e-6, 0.4151075f, 1.1283792f, 0.87878258f,
                  0.020666985f);
    check(nb_erf, -2, 2, 0);
}

Test(unary, shapes_are_kept) {
    unary_fn fs[] = {nb_neg, nb_exp, nb_log, nb_sqrt, nb_abs, nb_sign, nb_sin, nb_cos,
                     nb_square, nb_erf};
    nb_tensor *x = nb_uniform(NULL, 0.5f, 1, NB_SHAPE(2, 1, 3));
    for (size_t k = 0; k < sizeof fs / sizeof *fs; k++) {
        EXPECT_SHAPE(fs[k](x), 2, 1, 3);
        cr_assert_eq(nb_ndim(fs[k](nb_scalar(1))), 0);
        cr_assert_eq(nb_numel(fs[k](nb_zeros(NB_SHAPE(0, 3)))), 0);
    }
}

Test(unary, second_derivatives_by_hand) {
    /* d2/dx2 of sin x = -sin x, of log x = -1/x^2, of erf x = -4x/sqrt(pi) exp(-x^2) */
    nb_tensor *x = nb_set_requires_grad(vec(2, (float[]){0.5f, 2}), true);
    unary_fn fs[] = {nb_sin, nb_log, nb_erf};
    float want[3][2] = {{-0.47942554f, -0.90929743f}, {-4, -0.25f}, {-0.87878258f, -0.082667939f}};
    for (int k = 0; k < 3; k++) {
        nb_tensor *y = nb_sum_to(fs[k](x), NB_SHAPE()), *g, *gg;
        cr_assert_eq(nb_grad(1, &y, NULL, 1, &x, &g, &(nb_grad_opts){.create_graph = true}), 0, "%s", nb_error());
        nb_tensor *s = nb_sum_to(g, NB_SHAPE());
        cr_assert_eq(nb_grad(1, &s, NULL, 1, &x, &gg, NULL), 0, "%s", nb_error());
        nb_test_expect_values(gg, 1e-5, want[k], 2);
    }
}

Test(unary, null_propagates_without_message) {
    unary_fn fs[] = {nb_neg, nb_exp, nb_log, nb_sqrt, nb_abs, nb_sign, nb_sin, nb_cos,
                     nb_square, nb_erf};
    nb_clear_error();
    for (size_t k = 0; k < sizeof fs / sizeof *fs; k++) cr_assert_null(fs[k](NULL));
    cr_assert_null(nb_error(), "unexpected message: %s", nb_error());
}

/* ---- at the kinks: the subgradient PyTorch uses ---------------------------------------- */

Test(unary, kinks_take_pytorchs_subgradient) {
    /* abs: g sign(x), so 0 at 0 (PyTorch: grad * sgn(x)) */
    EXPECT_VALUES(grad_of_sum(nb_abs, 3, (float[]){0, -2, 2}), 0, 0, -1, 1);
    /* sign: 0 everywhere, including 0 */
    EXPECT_VALUES(grad_of_sum(nb_sign, 3, (float[]){0, -2, 2}), 0, 0, 0, 0);
    /* sqrt and log at 0: g / (2 sqrt 0) and g / 0, both +inf as in PyTorch */
    EXPECT_VALUES(grad_of_sum(nb_sqrt, 1, (float[]){0}), 0, INFINITY);
    EXPECT_VALUES(grad_of_sum(nb_log, 1, (float[]){0}), 0, INFINITY);
}
