/* test_elementwise.c — the binary ops of ops/elementwise.c (add, sub, mul,
 * div, pow, maximum, minimum), their scalar-operand forms, and expand and
 * sum_to, which make broadcasting differentiable.
 *
 * Values and gradients are worked out by hand on a [2,3] tensor against a
 * [3] row (the derivative is in each comment); broadcasting is exercised on
 * [3,1] with [1,4], [2,3,4] with [4], a 0-d scalar, and [2,1,3] with [4,1];
 * then every op is checked against finite differences, to second order
 * where it is smooth, with broadcast shapes.
 */
#include "test_util.h"

TestSuite(elementwise, NB_TEST_HOOKS);

typedef nb_tensor *(*binary_fn)(nb_tensor *, nb_tensor *);
typedef nb_tensor *(*scalar_fn)(nb_tensor *, float);

static nb_tensor *vec(int n, const float *v) { return nb_from_array(1, (int64_t[]){n}, v); }
static nb_tensor *total(nb_tensor *t) { return nb_sum_to(t, NB_SHAPE()); }
static nb_tensor *scalar_leaf(float lo, float hi) {
    return nb_set_requires_grad(nb_uniform(NULL, lo, hi, NB_SHAPE()), true);
}

/* a = [[1,2,3],[4,5,6]] and the row b = [2,-1,0.5] it is combined with */
static nb_tensor *mat(void) { return nb_from_array(NB_SHAPE(2, 3), (float[]){1, 2, 3, 4, 5, 6}); }
static nb_tensor *row(void) { return vec(3, (float[]){2, -1, 0.5f}); }

/* gradcheck's forms: ctx is the op (and the scalar). */
static nb_tensor *apply2(nb_tensor *const *in, void *ctx) { return (*(binary_fn *)ctx)(in[0], in[1]); }

typedef struct scalar_case {
    scalar_fn f;
    float s;
} scalar_case;

static nb_tensor *apply_s(nb_tensor *const *in, void *ctx) {
    const scalar_case *c = ctx;
    return c->f(in[0], c->s);
}

/* Runs f(a, b) with both requiring grad and backwards sum(f(a, b)). */
static void grads_of_sum(binary_fn f, nb_tensor *a, nb_tensor *b) {
    nb_set_requires_grad(a, true);
    nb_set_requires_grad(b, true);
    nb_tensor *y = f(a, b);
    cr_assert_not_null(y, "%s", nb_error() ? nb_error() : "");
    cr_assert_eq(nb_backward(total(y)), 0, "%s", nb_error() ? nb_error() : "");
}

/* d sum(f(x, s)) / dx at the listed points. */
static nb_tensor *scalar_grad(scalar_fn f, float s, int n, const float *v) {
    nb_tensor *x = nb_set_requires_grad(vec(n, v), true);
    cr_assert_eq(nb_backward(total(f(x, s))), 0, "%s", nb_error() ? nb_error() : "");
    return nb_grad_of(x);
}

/* ---- values and gradients by hand: [2,3] op [3] ------------------------------------------- */

Test(elementwise, add) {
    EXPECT_VALUES(nb_add(mat(), row()), 0, 3, 1, 3.5f, 6, 4, 6.5f);
    /* da = 1, db = 1 summed over the 2 rows */
    nb_tensor *a = mat(), *b = row();
    grads_of_sum(nb_add, a, b);
    EXPECT_VALUES(nb_grad_of(a), 0, 1, 1, 1, 1, 1, 1);
    EXPECT_VALUES(nb_grad_of(b), 0, 2, 2, 2);
}

Test(elementwise, sub) {
    EXPECT_VALUES(nb_sub(mat(), row()), 0, -1, 3, 2.5f, 2, 6, 5.5f);
    /* da = 1, db = -1 summed over rows */
    nb_tensor *a = mat(), *b = row();
    grads_of_sum(nb_sub, a, b);
    EXPECT_VALUES(nb_grad_of(a), 0, 1, 1, 1, 1, 1, 1);
    EXPECT_VALUES(nb_grad_of(b), 0, -2, -2, -2);
}

Test(elementwise, mul) {
    EXPECT_VALUES(nb_mul(mat(), row()), 0, 2, -2, 1.5f, 8, -5, 3);
    /* da = b, db = column sums of a */
    nb_tensor *a = mat(), *b = row();
    grads_of_sum(nb_mul, a, b);
    EXPECT_VALUES(nb_grad_of(a), 0, 2, -1, 0.5f, 2, -1, 0.5f);
    EXPECT_VALUES(nb_grad_of(b), 0, 5, 7, 9);
}

Test(elementwise, div) {
    EXPECT_VALUES(nb_div(mat(), row()), 1e-6, 0.5f, -2, 6, 2, -5, 12);
    /* da = 1/b, db = -sum(a)/b^2 = [-5/4, -7/1, -9/0.25] */
    nb_tensor *a = mat(), *b = row();
    grads_of_sum(nb_div, a, b);
    EXPECT_VALUES(nb_grad_of(a), 1e-6, 0.5f, -1, 2, 0.5f, -1, 2);
    EXPECT_VALUES(nb_grad_of(b), 1e-5, -1.25f, -7, -36);
}

Test(elementwise, div_by_zero_is_ieee) {
    nb_tensor *y = nb_div(vec(3, (float[]){1, -1, 0}), nb_scalar(0));
    EXPECT_VALUES(y, 0, INFINITY, -INFINITY, NAN);
}

Test(elementwise, pow) {
    /* [1,2,3]^2, [..]^-1, [..]^0.5 */
    EXPECT_VALUES(nb_pow(mat(), row()), 1e-6, 1, 0.5f, 1.7320508f, 16, 0.2f, 2.4494897f);
    /* da = b a^(b-1): 2a, -a^-2, 0.5 a^-0.5;  db = sum a^b log a */
    nb_tensor *a = mat(), *b = row();
    grads_of_sum(nb_pow, a, b);
    EXPECT_VALUES(nb_grad_of(a), 1e-6, 2, -0.25f, 0.28867513f, 8, -0.04f, 0.20412415f);
    EXPECT_VALUES(nb_grad_of(b), 1e-4, 22.18071f, 0.66846117f, 6.2917487f);
}

Test(elementwise, pow_of_negative_base) {
    /* defined for integer exponents, nan otherwise */
    nb_tensor *y = nb_pow(vec(3, (float[]){-2, -2, -2}), vec(3, (float[]){3, 2, 0.5f}));
    EXPECT_VALUES(y, 0, -8, 4, NAN);
}

Test(elementwise, pow_gradient_at_zero) {
    /* d 0^b / db = 0 for b >= 0 (not 0 * log 0); d a^0 / da = 0 (not 0 * 0^-1) */
    nb_tensor *a = vec(3, (float[]){0, 0, 2}), *b = vec(3, (float[]){2, 0, 0});
    grads_of_sum(nb_pow, a, b);
    EXPECT_VALUES(nb_pow(a, b), 0, 0, 1, 1);
    EXPECT_VALUES(nb_grad_of(a), 0, 0, 0, 0);
    EXPECT_VALUES(nb_grad_of(b), 1e-6, 0, 0, 0.69314718f);
}

Test(elementwise, maximum_and_minimum) {
    nb_tensor *a = mat(), *c = vec(3, (float[]){2, 5, 3});
    EXPECT_VALUES(nb_maximum(a, c), 0, 2, 5, 3, 4, 5, 6);
    EXPECT_VALUES(nb_minimum(a, c), 0, 1, 2, 3, 2, 5, 3);
}

Test(elementwise, maximum_gradient_goes_to_the_larger) {
    /* a [3,1] and b [1,4] never equal: each element of a gets one per b it
     * beats, each b one per a it beats */
    nb_tensor *a = nb_from_array(NB_SHAPE(3, 1), (float[]){0.1f, 1.1f, 2.1f});
    nb_tensor *b = nb_from_array(NB_SHAPE(1, 4), (float[]){-0.5f, 0.6f, 1.6f, 2.6f});
    EXPECT_VALUES(nb_maximum(a, b), 1e-7, 0.1f, 0.6f, 1.6f, 2.6f, 1.1f, 1.1f, 1.6f, 2.6f, 2.1f,
                  2.1f, 2.1f, 2.6f);
    grads_of_sum(nb_maximum, a, b);
    EXPECT_VALUES(nb_grad_of(a), 0, 1, 2, 3);
    EXPECT_VALUES(nb_grad_of(b), 0, 0, 1, 2, 3);
}

Test(elementwise, minimum_gradient_goes_to_the_smaller) {
    nb_tensor *a = nb_from_array(NB_SHAPE(3, 1), (float[]){0.1f, 1.1f, 2.1f});
    nb_tensor *b = nb_from_array(NB_SHAPE(1, 4), (float[]){-0.5f, 0.6f, 1.6f, 2.6f});
    grads_of_sum(nb_minimum, a, b);
    EXPECT_VALUES(nb_grad_of(a), 0, 3, 2, 1);
    EXPECT_VALUES(nb_grad_of(b), 0, 3, 2, 1, 0);
}

Test(elementwise, ties_split_the_gradient) {
    nb_tensor *a = vec(2, (float[]){1, 2}), *b = vec(2, (float[]){1, 3});
    grads_of_sum(nb_maximum, a, b);
    EXPECT_VALUES(nb_grad_of(a), 0, 0.5f, 0);
    EXPECT_VALUES(nb_grad_of(b), 0, 0.5f, 1);
    nb_tensor *c = vec(2, (float[]){1, 2}), *d = vec(2, (float[]){1, 3});
    grads_of_sum(nb_minimum, c, d);
    EXPECT_VALUES(nb_grad_of(c), 0, 0.5f, 1);
    EXPECT_VALUES(nb_grad_of(d), 0, 0.5f, 0);
}

Test(elementwise, maximum_propagates_nan) {
    nb_tensor *a = vec(2, (float[]){NAN, 1}), *b = vec(2, (float[]){1, NAN});
    EXPECT_VALUES(nb_maximum(a, b), 0, NAN, NAN);
    EXPECT_VALUES(nb_minimum(a, b), 0, NAN, NAN);
}

/* ---- broadcasting ---------------------------------------------------------------------- */

Test(elementwise, broadcast_column_with_row) {
    /* [3,1] + [1,4] -> [3,4]: out[i][j] = c[i] + r[j] */
    nb_tensor *c = nb_from_array(NB_SHAPE(3, 1), (float[]){1, 2, 3});
    nb_tensor *r = nb_from_array(NB_SHAPE(1, 4), (float[]){10, 20, 30, 40});
    nb_tensor *y = nb_add(c, r);
    EXPECT_SHAPE(y, 3, 4);
    EXPECT_VALUES(y, 0, 11, 21, 31, 41, 12, 22, 32, 42, 13, 23, 33, 43);
    EXPECT_SHAPE(nb_mul(r, c), 3, 4);
    EXPECT_VALUES(nb_mul(r, c), 0, 10, 20, 30, 40, 20, 40, 60, 80, 30, 60, 90, 120);
}

Test(elementwise, broadcast_3d_with_last_axis) {
    /* [2,3,4] - [4]: out[i][j][k] = 12i + 4j + k - r[k] */
    nb_tensor *x = nb_arange(0, 24, 1), *r = vec(4, (float[]){1, 10, 100, 1000});
    nb_tensor *y = nb_sub(nb_reshape(x, NB_SHAPE(2, 3, 4)), r);
    EXPECT_SHAPE(y, 2, 3, 4);
    float want[24];
    for (int i = 0; i < 24; i++) want[i] = (float)i - nb_data(r)[i % 4];
    nb_test_expect_values(y, 0, want, 24);
}

Test(elementwise, broadcast_with_0d_scalar) {
    nb_tensor *y = nb_mul(nb_scalar(2), mat());
    EXPECT_SHAPE(y, 2, 3);
    EXPECT_VALUES(y, 0, 2, 4, 6, 8, 10, 12);
    nb_tensor *z = nb_sub(mat(), nb_scalar(1));
    EXPECT_VALUES(z, 0, 0, 1, 2, 3, 4, 5);
    cr_assert_eq(nb_ndim(nb_add(nb_scalar(1), nb_scalar(2))), 0);
    EXPECT_VALUES(nb_add(nb_scalar(1), nb_scalar(2)), 0, 3);
}

Test(elementwise, broadcast_both_ways) {
    /* [2,1,3] + [4,1] -> [2,4,3]: out[i][j][k] = x[i][k] + y[j] */
    nb_tensor *x = nb_from_array(NB_SHAPE(2, 1, 3), (float[]){1, 2, 3, 4, 5, 6});
    nb_tensor *y = nb_from_array(NB_SHAPE(4, 1), (float[]){0, 10, 20, 30});
    nb_tensor *z = nb_add(x, y);
    EXPECT_SHAPE(z, 2, 4, 3);
    float want[24];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++)
            for (int k = 0; k < 3; k++) want[(i * 4 + j) * 3 + k] = (float)(3 * i + k + 1 + 10 * j);
    nb_test_expect_values(z, 0, want, 24);
    int ndim;
    int64_t shape[NB_MAX_DIMS];
    cr_assert(nb_broadcast_shapes("test", x, y, &ndim, shape));
    cr_assert_eq(ndim, 3);
    cr_assert(shape[0] == 2 && shape[1] == 4 && shape[2] == 3);
}

Test(elementwise, broadcast_mismatch_is_reported) {
    nb_tensor *a = nb_zeros(NB_SHAPE(2, 3)), *b = nb_zeros(NB_SHAPE(4));
    binary_fn fs[] = {nb_add, nb_sub, nb_mul, nb_div, nb_pow, nb_maximum, nb_minimum};
    const char *names[] = {"nb_add", "nb_sub", "nb_mul", "nb_div", "nb_pow", "nb_maximum",
                           "nb_minimum"};
    for (int k = 0; k < 7; k++) {
        nb_clear_error();
        cr_assert_null(fs[k](a, b));
        EXPECT_ERROR(names[k], ": shapes [2,3] and [4] cannot be broadcast");
    }
    nb_clear_error();
    cr_assert_null(nb_add(nb_zeros(NB_SHAPE(2, 1, 3)), nb_zeros(NB_SHAPE(4, 2))));
    EXPECT_ERROR("nb_add: shapes [2,1,3] and [4,2] cannot be broadcast");
    int ndim;
    int64_t shape[NB_MAX_DIMS];
    nb_clear_error();
    cr_assert(!nb_broadcast_shapes("my_op", a, b, &ndim, shape));
    EXPECT_ERROR("my_op", "[2,3]", "[4]");
}

/* ---- gradcheck with broadcast shapes ------------------------------------------------- */

Test(elementwise, gradcheck_add_sub_mul) {
    binary_fn fs[] = {nb_add, nb_sub, nb_mul};
    for (int k = 0; k < 3; k++) {
        nb_tensor *in1[2] = {nb_test_leaf(-1, 1, NB_SHAPE(2, 1, 3)), nb_test_leaf(-1, 1, NB_SHAPE(4, 1))};
        nb_test_gradcheck(apply2, &fs[k], 2, in1, true);
        nb_tensor *in2[2] = {nb_test_leaf(-1, 1, NB_SHAPE(3, 1)), nb_test_leaf(-1, 1, NB_SHAPE(1, 4))};
        nb_test_gradcheck(apply2, &fs[k], 2, in2, true);
        nb_tensor *in3[2] = {nb_test_leaf(-1, 1, NB_SHAPE(2, 3, 4)), nb_test_leaf(-1, 1, NB_SHAPE(4))};
        nb_test_gradcheck(apply2, &fs[k], 2, in3, true);
        nb_tensor *in4[2] = {scalar_leaf(-1, 1), nb_test_leaf(-1, 1, NB_SHAPE(2, 3))};
        nb_test_gradcheck(apply2, &fs[k], 2, in4, true);
    }
}

Test(elementwise, gradcheck_div) {
    binary_fn f = nb_div;
    nb_tensor *in1[2] = {nb_test_leaf(-1, 1, NB_SHAPE(2, 1, 3)), nb_test_leaf(0.5f, 2, NB_SHAPE(4, 1))};
    nb_test_gradcheck(apply2, &f, 2, in1, true);
    nb_tensor *in2[2] = {nb_test_leaf(-1, 1, NB_SHAPE(2, 3)), scalar_leaf(0.5f, 2)};
    nb_test_gradcheck(apply2, &f, 2, in2, true);
}

Test(elementwise, gradcheck_pow) {
    binary_fn f = nb_pow;
    nb_tensor *in1[2] = {nb_test_leaf(0.5f, 2, NB_SHAPE(2, 1, 3)), nb_test_leaf(-1.5f, 1.5f, NB_SHAPE(4, 1))};
    nb_test_gradcheck(apply2, &f, 2, in1, true);
    nb_tensor *in2[2] = {nb_test_leaf(0.5f, 2, NB_SHAPE(3, 1)), nb_test_leaf(-2, 2, NB_SHAPE(1, 4))};
    nb_test_gradcheck(apply2, &f, 2, in2, true);
}

Test(elementwise, gradcheck_maximum_minimum) {
    /* distinct values, at least 0.3 apart, so no step crosses a tie */
    binary_fn fs[] = {nb_maximum, nb_minimum};
    for (int k = 0; k < 2; k++) {
        nb_tensor *in[2] = {
            nb_set_requires_grad(nb_from_array(NB_SHAPE(3, 1), (float[]){0.1f, -1.2f, 1.9f}), true),
            nb_set_requires_grad(nb_from_array(NB_SHAPE(1, 4), (float[]){-0.5f, 0.6f, 1.5f, -2}), true)};
        nb_test_gradcheck(apply2, &fs[k], 2, in, true);
        nb_tensor *in2[2] = {
            nb_set_requires_grad(nb_from_array(NB_SHAPE(2, 3), (float[]){1, -1, 0.5f, 2, 0, -3}), true),
            nb_set_requires_grad(nb_scalar(0.25f), true)};
        nb_test_gradcheck(apply2, &fs[k], 2, in2, true);
    }
}

Test(elementwise, gradcheck_one_operand_without_grad) {
    /* only b requires grad: a is a constant broadcast against it */
    binary_fn fs[] = {nb_mul, nb_div, nb_pow};
    for (int k = 0; k < 3; k++) {
        nb_tensor *in[2] = {nb_uniform(NULL, 0.5f, 2, NB_SHAPE(2, 3)), nb_test_leaf(0.5f, 2, NB_SHAPE(3))};
        nb_test_gradcheck(apply2, &fs[k], 2, in, true);
    }
}

/* ---- scalar operand ------------------------------------------------------------------------- */

Test(elementwise, scalar_values) {
    nb_tensor *x = vec(3, (float[]){1, 2, 4});
    EXPECT_VALUES(nb_add_scalar(x, 1.5f), 0, 2.5f, 3.5f, 5.5f);
    EXPECT_VALUES(nb_sub_scalar(x, 1.5f), 0, -0.5f, 0.5f, 2.5f);
    EXPECT_VALUES(nb_rsub_scalar(x, 1.5f), 0, 0.5f, -0.5f, -2.5f);
    EXPECT_VALUES(nb_mul_scalar(x, -2), 0, -2, -4, -8);
    EXPECT_VALUES(nb_div_scalar(x, 4), 0, 0.25f, 0.5f, 1);
    EXPECT_VALUES(nb_div_scalar(x, 3), 1e-6, 0.33333333f, 0.66666667f, 1.3333333f);
    EXPECT_VALUES(nb_rdiv_scalar(x, 2), 0, 2, 1, 0.5f);
    EXPECT_VALUES(nb_pow_scalar(x, 2), 0, 1, 4, 16);
    EXPECT_VALUES(nb_pow_scalar(x, 3), 1e-5, 1, 8, 64);
    EXPECT_VALUES(nb_pow_scalar(x, 0.5f), 1e-6, 1, 1.4142136f, 2);
    EXPECT_VALUES(nb_pow_scalar(x, 0), 0, 1, 1, 1);
    EXPECT_VALUES(nb_rpow_scalar(x, 2), 1e-5, 2, 4, 16);
    EXPECT_VALUES(nb_maximum_scalar(x, 2), 0, 2, 2, 4);
    EXPECT_VALUES(nb_minimum_scalar(x, 2), 0, 1, 2, 2);
    EXPECT_SHAPE(nb_add_scalar(mat(), 1), 2, 3);
    cr_assert_eq(nb_ndim(nb_mul_scalar(nb_scalar(3), 2)), 0);
}

Test(elementwise, scalar_gradients_by_hand) {
    float x[] = {1, 2, 4};
    EXPECT_VALUES(scalar_grad(nb_add_scalar, 1.5f, 3, x), 0, 1, 1, 1);
    EXPECT_VALUES(scalar_grad(nb_sub_scalar, 1.5f, 3, x), 0, 1, 1, 1);
    EXPECT_VALUES(scalar_grad(nb_rsub_scalar, 1.5f, 3, x), 0, -1, -1, -1);
    EXPECT_VALUES(scalar_grad(nb_mul_scalar, -2, 3, x), 0, -2, -2, -2);
    EXPECT_VALUES(scalar_grad(nb_div_scalar, 4, 3, x), 0, 0.25f, 0.25f, 0.25f);
    /* d(2/x) = -2/x^2 */
    EXPECT_VALUES(scalar_grad(nb_rdiv_scalar, 2, 3, x), 1e-6, -2, -0.5f, -0.125f);
    /* d x^3 = 3x^2, d x^0.5 = 0.5 x^-0.5 */
    EXPECT_VALUES(scalar_grad(nb_pow_scalar, 3, 3, x), 1e-5, 3, 12, 48);
    EXPECT_VALUES(scalar_grad(nb_pow_scalar, 0.5f, 3, x), 1e-6, 0.5f, 0.35355339f, 0.25f);
    /* d 2^x = 2^x log 2 */
    EXPECT_VALUES(scalar_grad(nb_rpow_scalar, 2, 3, x), 1e-5, 1.3862944f, 2.7725887f, 11.090355f);
    /* 0 below the scalar, split at the tie, 1 above */
    EXPECT_VALUES(scalar_grad(nb_maximum_scalar, 2, 3, x), 0, 0, 0.5f, 1);
    EXPECT_VALUES(scalar_grad(nb_minimum_scalar, 2, 3, x), 0, 1, 0.5f, 0);
    /* x^0 is constant, even at 0 */
    EXPECT_VALUES(scalar_grad(nb_pow_scalar, 0, 2, (float[]){0, 3}), 0, 0, 0);
}

Test(elementwise, scalar_gradcheck) {
    scalar_case cases[] = {
        {nb_add_scalar, 1.5f},  {nb_sub_scalar, -0.5f}, {nb_rsub_scalar, 2},
        {nb_mul_scalar, -3},    {nb_div_scalar, 0.5f},  {nb_rdiv_scalar, -2},
        {nb_pow_scalar, 2},     {nb_pow_scalar, 3},     {nb_pow_scalar, 0.5f},
        {nb_pow_scalar, -1.5f}, {nb_pow_scalar, 0},     {nb_rpow_scalar, 2},
        {nb_rpow_scalar, 0.3f}, {nb_maximum_scalar, 1}, {nb_minimum_scalar, 1},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        /* positive (pow, rdiv) and at least 0.1 away from 1 (maximum, minimum) */
        nb_tensor *x = nb_uniform(NULL, 0.5f, 2, NB_SHAPE(2, 3));
        float *d = nb_data_mut(x);
        for (int64_t i = 0; i < nb_numel(x); i++)
            if (fabsf(d[i] - 1) < 0.1f) d[i] = d[i] < 1 ? 0.9f : 1.1f;
        nb_set_requires_grad(x, true);
        nb_gradcheck_opts quiet = {.quiet = true};
        nb_gradcheck_result r;
        cr_assert(nb_gradcheck(apply_s, &cases[k], 1, &x, &quiet, &r), "case %zu: %s", k, r.message);
        cr_assert(nb_gradgradcheck(apply_s, &cases[k], 1, &x, &quiet, &r), "case %zu: %s", k,
                  r.message);
    }
}

Test(elementwise, div_scalar_by_zero_is_ieee) {
    EXPECT_VALUES(nb_div_scalar(vec(3, (float[]){1, -1, 0}), 0), 0, INFINITY, -INFINITY, NAN);
}

Test(elementwise, rpow_scalar_rejects_non_positive_base) {
    nb_tensor *x = vec(2, (float[]){1, 2});
    cr_assert_null(nb_rpow_scalar(x, 0));
    EXPECT_ERROR("nb_rpow_scalar", "0");
    nb_clear_error();
    cr_assert_null(nb_rpow_scalar(x, -2));
    EXPECT_ERROR("nb_rpow_scalar", "-2");
}

/* ---- expand and sum_to --------------------------------------------------------------------- */

Test(elementwise, expand_values) {
    nb_tensor *c = nb_from_array(NB_SHAPE(3, 1), (float[]){1, 2, 3});
    nb_tensor *e = nb_expand(c, NB_SHAPE(2, 3, 2));
    EXPECT_SHAPE(e, 2, 3, 2);
    EXPECT_VALUES(e, 0, 1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3);
    EXPECT_VALUES(nb_expand(nb_scalar(7), NB_SHAPE(2)), 0, 7, 7);
    EXPECT_VALUES(nb_expand(c, NB_SHAPE(3, 1)), 0, 1, 2, 3);
}

Test(elementwise, sum_to_values) {
    /* [2,3] = [[1,2,3],[4,5,6]] down to [3], [2,1], [1,1], [] */
    EXPECT_VALUES(nb_sum_to(mat(), NB_SHAPE(3)), 0, 5, 7, 9);
    EXPECT_SHAPE(nb_sum_to(mat(), NB_SHAPE(2, 1)), 2, 1);
    EXPECT_VALUES(nb_sum_to(mat(), NB_SHAPE(2, 1)), 0, 6, 15);
    EXPECT_VALUES(nb_sum_to(mat(), NB_SHAPE(1, 1)), 0, 21);
    nb_tensor *s = nb_sum_to(mat(), NB_SHAPE());
    cr_assert_eq(nb_ndim(s), 0);
    EXPECT_VALUES(s, 0, 21);
    /* [2,3,4] down to [3,1]: sums over axes 0 and 2 */
    nb_tensor *x = nb_reshape(nb_arange(0, 24, 1), NB_SHAPE(2, 3, 4));
    EXPECT_VALUES(nb_sum_to(x, NB_SHAPE(3, 1)), 0, 60, 92, 124);
}

static nb_tensor *f_expand(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return nb_expand(in[0], NB_SHAPE(2, 3, 4));
}
static nb_tensor *f_sum_to(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return nb_sum_to(in[0], NB_SHAPE(3, 1));
}
/* sum_to(x^2): its second derivative is not zero */
static nb_tensor *f_sum_to_square(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return nb_sum_to(nb_mul(in[0], in[0]), NB_SHAPE(4));
}

Test(elementwise, expand_and_sum_to_gradcheck) {
    nb_tensor *c = nb_test_leaf(-1, 1, NB_SHAPE(3, 1));
    nb_test_gradcheck(f_expand, NULL, 1, &c, true);
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(2, 3, 4));
    nb_test_gradcheck(f_sum_to, NULL, 1, &x, true);
    nb_test_gradcheck(f_sum_to_square, NULL, 1, &x, true);
}

Test(elementwise, expand_and_sum_to_errors) {
    nb_tensor *x = nb_zeros(NB_SHAPE(3));
    cr_assert_null(nb_expand(x, NB_SHAPE(4)));
    EXPECT_ERROR("nb_expand", "[3]", "[4]");
    nb_clear_error();
    cr_assert_null(nb_expand(mat(), NB_SHAPE(3)));
    EXPECT_ERROR("nb_expand", "[2,3]", "[3]");
    nb_clear_error();
    cr_assert_null(nb_expand(x, 2, NULL));
    EXPECT_ERROR("nb_expand");
    nb_clear_error();
    cr_assert_null(nb_sum_to(mat(), NB_SHAPE(4)));
    EXPECT_ERROR("nb_sum_to", "[2,3]", "[4]");
    nb_clear_error();
    cr_assert_null(nb_sum_to(x, NB_SHAPE(1, 3)));
    EXPECT_ERROR("nb_sum_to", "[3]", "[1,3]");
    nb_clear_error();
    cr_assert_null(nb_sum_to(x, 1, NULL));
    EXPECT_ERROR("nb_sum_to");
    nb_clear_error();
    cr_assert_null(nb_sum_to(x, -1, NULL));
    EXPECT_ERROR("nb_sum_to");
}

/* ---- graph and NULL ------------------------------------------------------------------------ */

Test(elementwise, records_only_with_grad) {
    nb_tensor *a = mat(), *b = row();
    cr_assert(!nb_requires_grad(nb_add(a, b)));
    cr_assert_null(nb_op_of(nb_mul_scalar(a, 2)));
    nb_set_requires_grad(b, true);
    cr_assert_str_eq(nb_op_of(nb_mul(a, b))->name, "mul");
    cr_assert_str_eq(nb_op_of(nb_pow_scalar(b, 3))->name, "pow_scalar");
}

Test(elementwise, null_propagates_without_message) {
    nb_tensor *a = mat();
    binary_fn fs[] = {nb_add, nb_sub, nb_mul, nb_div, nb_pow, nb_maximum, nb_minimum};
    scalar_fn ss[] = {nb_add_scalar, nb_sub_scalar, nb_rsub_scalar, nb_mul_scalar,
                      nb_div_scalar, nb_rdiv_scalar, nb_pow_scalar, nb_rpow_scalar,
                      nb_maximum_scalar, nb_minimum_scalar};
    nb_clear_error();
    for (int k = 0; k < 7; k++) {
        cr_assert_null(fs[k](NULL, a));
        cr_assert_null(fs[k](a, NULL));
        cr_assert_null(fs[k](NULL, NULL));
    }
    for (int k = 0; k < 10; k++) cr_assert_null(ss[k](NULL, 2));
    cr_assert_null(nb_div_scalar(NULL, 0));
    cr_assert_null(nb_rpow_scalar(NULL, -1));
    cr_assert_null(nb_expand(NULL, NB_SHAPE(2)));
    cr_assert_null(nb_sum_to(NULL, NB_SHAPE(2)));
    int ndim;
    int64_t shape[NB_MAX_DIMS];
    cr_assert(!nb_broadcast_shapes("x", NULL, a, &ndim, shape));
    cr_assert_null(nb_error(), "unexpected message: %s", nb_error());
}

/* ---- NaN and ties: PyTorch's maximum/minimum gradient ----------------------------------
 * PyTorch: self gets where(a == b, g/2, g) with 0 where a < b (maximum) or
 * a > b (minimum); other the mirror. A NaN compares false both ways, so
 * both operands get the whole gradient there. */

Test(elementwise, maximum_minimum_gradient_at_nan) {
    nb_tensor *a = vec(3, (float[]){NAN, 1, 2}), *b = vec(3, (float[]){1, NAN, 2});
    grads_of_sum(nb_maximum, a, b);
    EXPECT_VALUES(nb_grad_of(a), 0, 1, 1, 0.5f);
    EXPECT_VALUES(nb_grad_of(b), 0, 1, 1, 0.5f);
    nb_tensor *c = vec(3, (float[]){NAN, 1, 2}), *d = vec(3, (float[]){1, NAN, 2});
    grads_of_sum(nb_minimum, c, d);
    EXPECT_VALUES(nb_grad_of(c), 0, 1, 1, 0.5f);
    EXPECT_VALUES(nb_grad_of(d), 0, 1, 1, 0.5f);
    /* the scalar forms follow the same rule: NaN x gets g, a tie g/2 */
    EXPECT_VALUES(scalar_grad(nb_maximum_scalar, 2, 2, (float[]){NAN, 2}), 0, 1, 0.5f);
    EXPECT_VALUES(scalar_grad(nb_minimum_scalar, 2, 2, (float[]){NAN, 2}), 0, 1, 0.5f);
}
