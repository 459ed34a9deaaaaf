/* test_functional.c — whole derivatives (ops/functional.c): nb_jacobian,
 * nb_jacobian_multi, nb_hessian, nb_vhp and nb_hvp.
 *
 * Each is checked against matrices written out by hand for small
 * functions, against central finite differences (of the function for the
 * Jacobian, of its gradient for the Hessian), and against each other: a
 * vector-Hessian product must equal v times the Hessian built row by row.
 * The forward strategy of the Jacobian (one nb_jvp per input element) must
 * give the reverse one's matrices, and nb_hvp (forward over reverse) the
 * Hessian times v. With create_graph the results are graphs, gradchecked in
 * turn. Shapes follow PyTorch's torch.autograd.functional.
 */
#include <math.h>
#include <string.h>

#include "test_util.h"

TestSuite(functional, NB_TEST_HOOKS);

/* W x, W [2,3], x [3] */
static nb_tensor *f_matvec(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return nb_matmul(in[0], in[1]);
}

Test(functional, jacobian_of_a_matrix_vector_product_by_hand) {
    nb_tensor *w = nb_from_array(NB_SHAPE(2, 3), (float[]){1, 2, 3, 4, 5, 6});
    nb_tensor *x = nb_from_array(NB_SHAPE(3), (float[]){7, 8, 9});
    nb_tensor *j[2];
    cr_assert_eq(nb_jacobian(f_matvec, NULL, 2, (nb_tensor *[]){w, x}, j, NULL), 0, "%s", nb_error());
    /* d(Wx)_i / dW_jk = [i == j] x_k */
    EXPECT_SHAPE(j[0], 2, 2, 3);
    EXPECT_VALUES(j[0], 0, 7, 8, 9, 0, 0, 0, 0, 0, 0, 7, 8, 9);
    /* d(Wx)/dx = W */
    EXPECT_SHAPE(j[1], 2, 3);
    EXPECT_VALUES(j[1], 0, 1, 2, 3, 4, 5, 6);
    cr_assert_not(nb_requires_grad(j[0]) || nb_requires_grad(j[1]));
}

/* tanh(x @ a) * x[:, :1], x [2,3], a [3,4] a constant in ctx */
static nb_tensor *f_smooth(nb_tensor *const *in, void *ctx) {
    nb_tensor *x = in[0];
    return nb_mul(nb_tanh(nb_matmul(x, ctx)), nb_slice(x, 1, 0, 1, 1));
}

Test(functional, jacobian_against_finite_differences) {
    nb_tensor *a = nb_uniform(NULL, -1, 1, NB_SHAPE(3, 4));
    nb_tensor *x = nb_uniform(NULL, -1, 1, NB_SHAPE(2, 3));
    const double h = 1e-2;
    nb_tensor *yp[6], *ym[6];
    for (int64_t k = 0; k < 6; k++) {
        float orig = nb_data(x)[k];
        nb_set_item(x, k, orig + (float)h);
        yp[k] = f_smooth(&x, a);
        nb_set_item(x, k, orig - (float)h);
        ym[k] = f_smooth(&x, a);
        nb_set_item(x, k, orig);
    }
    for (int s = 0; s < 2; s++) {
        nb_jacobian_strategy strategy = s ? NB_JACOBIAN_FORWARD : NB_JACOBIAN_REVERSE;
        nb_tensor *j;
        cr_assert_eq(nb_jacobian(f_smooth, a, 1, &x, &j, &(nb_functional_opts){.strategy = strategy}),
                     0, "%s", nb_error());
        EXPECT_SHAPE(j, 2, 4, 2, 3);
        for (int64_t k = 0; k < 6; k++)
            for (int64_t i = 0; i < 8; i++) {
                double fd = ((double)nb_data(yp[k])[i] - (double)nb_data(ym[k])[i]) / (2 * h);
                cr_assert_float_eq(nb_data(j)[i * 6 + k], fd, 2e-3,
                                   "J[%lld, %lld] %g, differences %g (strategy %d)", (long long)i,
                                   (long long)k, (double)nb_data(j)[i * 6 + k], fd, (int)strategy);
            }
    }
}

static nb_tensor *f_jacobian(nb_tensor *const *in, void *ctx) {
    nb_tensor *j;
    if (nb_jacobian(f_smooth, ctx, 1, in, &j, &(nb_functional_opts){.create_graph = true}) != 0)
        return NULL;
    return j;
}

Test(functional, jacobian_with_create_graph_is_differentiable) {
    nb_tensor *a = nb_uniform(NULL, -1, 1, NB_SHAPE(3, 4));
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(2, 3));
    nb_tensor *j = f_jacobian(&x, a), *plain;
    cr_assert_not_null(j, "%s", nb_error());
    cr_assert(nb_requires_grad(j));
    cr_assert_eq(nb_jacobian(f_smooth, a, 1, &x, &plain, NULL), 0);
    cr_assert(memcmp(nb_data(j), nb_data(plain), sizeof(float) * 48) == 0);
    nb_test_gradcheck(f_jacobian, a, 1, &x, false);
}

static nb_tensor *f_uses_first(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return nb_mul_scalar(in[0], 3.0f);
}

Test(functional, unused_inputs_and_constant_outputs_give_zeros) {
    nb_tensor *x = nb_ones(NB_SHAPE(2)), *y = nb_ones(NB_SHAPE(3)), *j[2];
    cr_assert_eq(nb_jacobian(f_uses_first, NULL, 2, (nb_tensor *[]){x, y}, j, NULL), 0, "%s", nb_error());
    EXPECT_VALUES(j[0], 0, 3, 0, 0, 3);
    EXPECT_SHAPE(j[1], 2, 3);
    EXPECT_VALUES(j[1], 0, 0, 0, 0, 0, 0, 0);
}

/* outputs x * y and sum(x), x and y [2] */
static int f_two(nb_tensor *const *in, nb_tensor **out, void *ctx) {
    (void)ctx;
    out[0] = nb_mul(in[0], in[1]);
    out[1] = nb_sum(in[0], NB_ALL, false);
    return out[0] && out[1] ? 0 : -1;
}

Test(functional, jacobian_of_several_outputs) {
    nb_tensor *x = nb_from_array(NB_SHAPE(2), (float[]){2, 3});
    nb_tensor *y = nb_from_array(NB_SHAPE(2), (float[]){5, 7}), *j[4];
    cr_assert_eq(nb_jacobian_multi(f_two, NULL, 2, (nb_tensor *[]){x, y}, 2, j, NULL), 0, "%s",
                 nb_error());
    EXPECT_VALUES(j[0], 0, 5, 0, 0, 7); /* d(xy)/dx = diag(y) */
    EXPECT_VALUES(j[1], 0, 2, 0, 0, 3); /* d(xy)/dy = diag(x) */
    EXPECT_SHAPE(j[2], 2);              /* d sum(x)/dx: 0-d output, shape of x */
    EXPECT_VALUES(j[2], 0, 1, 1);
    EXPECT_VALUES(j[3], 0, 0, 0);
}

/* sum(x^2 * y): H_xx = diag(2y), H_xy = H_yx = diag(2x), H_yy = 0 */
static nb_tensor *f_xxy(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return nb_sum(nb_mul(nb_square(in[0]), in[1]), NB_ALL, false);
}

Test(functional, hessian_by_hand) {
    nb_tensor *x = nb_from_array(NB_SHAPE(2), (float[]){2, 3});
    nb_tensor *y = nb_from_array(NB_SHAPE(2), (float[]){5, 7}), *h[4];
    cr_assert_eq(nb_hessian(f_xxy, NULL, 2, (nb_tensor *[]){x, y}, h, NULL), 0, "%s", nb_error());
    for (int i = 0; i < 4; i++) EXPECT_SHAPE(h[i], 2, 2);
    EXPECT_VALUES(h[0], 1e-6, 10, 0, 0, 14);
    EXPECT_VALUES(h[1], 1e-6, 4, 0, 0, 6);
    EXPECT_VALUES(h[2], 1e-6, 4, 0, 0, 6);
    EXPECT_VALUES(h[3], 0, 0, 0, 0, 0);
}

/* sum(tanh(W) * c) for W [2,2]: d^2/dW^2 is diagonal, -2 tanh(w) (1 - tanh^2(w)) c */
static nb_tensor *f_tanh(nb_tensor *const *in, void *ctx) {
    return nb_sum(nb_mul(nb_tanh(in[0]), ctx), NB_ALL, false);
}

Test(functional, hessian_of_a_matrix_input_has_four_axes) {
    nb_tensor *w = nb_from_array(NB_SHAPE(2, 2), (float[]){0.5f, -1, 0.25f, 2});
    nb_tensor *c = nb_from_array(NB_SHAPE(2, 2), (float[]){1, 2, 3, 4}), *h;
    cr_assert_eq(nb_hessian(f_tanh, c, 1, &w, &h, NULL), 0, "%s", nb_error());
    EXPECT_SHAPE(h, 2, 2, 2, 2);
    float want[16] = {0};
    for (int k = 0; k < 4; k++) {
        double t = tanh((double)nb_data(w)[k]);
        want[k * 5] = (float)(-2 * t * (1 - t * t) * nb_data(c)[k]);
    }
    for (int i = 0; i < 16; i++) cr_assert_float_eq(nb_data(h)[i], want[i], 1e-6);
}

/* log(sum(exp(x @ a))) + sum(x^3) / 6, x [3]: a Hessian with every entry used */
static nb_tensor *f_dense_hessian(nb_tensor *const *in, void *ctx) {
    nb_tensor *x = in[0];
    return nb_add(nb_logsumexp(nb_matmul(x, ctx), NB_ALL, false),
                  nb_div_scalar(nb_sum(nb_pow_scalar(x, 3), NB_ALL, false), 6));
}

Test(functional, hessian_against_finite_differences_of_the_gradient) {
    nb_tensor *a = nb_uniform(NULL, -1, 1, NB_SHAPE(3, 4));
    nb_tensor *x = nb_uniform(NULL, -1, 1, NB_SHAPE(3)), *h;
    cr_assert_eq(nb_hessian(f_dense_hessian, a, 1, &x, &h, NULL), 0, "%s", nb_error());
    nb_set_requires_grad(x, true);
    const double step = 1e-2;
    for (int64_t k = 0; k < 3; k++) {
        float orig = nb_data(x)[k];
        nb_tensor *g[2];
        for (int s = 0; s < 2; s++) {
            nb_data_mut(x)[k] = orig + (float)(s ? -step : step);
            nb_tensor *y = f_dense_hessian(&x, a);
            cr_assert_eq(nb_grad(1, &y, NULL, 1, &x, &g[s], NULL), 0);
        }
        nb_data_mut(x)[k] = orig;
        for (int64_t i = 0; i < 3; i++) {
            double fd = ((double)nb_data(g[0])[i] - (double)nb_data(g[1])[i]) / (2 * step);
            cr_assert_float_eq(nb_data(h)[i * 3 + k], fd, 2e-3, "H[%lld, %lld]", (long long)i,
                               (long long)k);
        }
    }
    /* and symmetric */
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++)
            cr_assert_float_eq(nb_data(h)[i * 3 + k], nb_data(h)[k * 3 + i], 1e-6);
}

static nb_tensor *f_hessian(nb_tensor *const *in, void *ctx) {
    nb_tensor *h;
    return nb_hessian(f_dense_hessian, ctx, 1, in, &h, &(nb_functional_opts){.create_graph = true}) == 0
               ? h : NULL;
}

Test(functional, hessian_with_create_graph_gradchecks) {
    nb_tensor *a = nb_uniform(NULL, -1, 1, NB_SHAPE(3, 4));
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(3));
    nb_test_gradcheck(f_hessian, a, 1, &x, false);
}

Test(functional, vhp_and_hvp_are_v_times_the_hessian) {
    nb_tensor *a = nb_uniform(NULL, -1, 1, NB_SHAPE(3, 4));
    nb_tensor *x = nb_uniform(NULL, -1, 1, NB_SHAPE(3)), *v = nb_uniform(NULL, -1, 1, NB_SHAPE(3));
    nb_tensor *h, *vh, *hv, *value;
    cr_assert_eq(nb_hessian(f_dense_hessian, a, 1, &x, &h, NULL), 0, "%s", nb_error());
    cr_assert_eq(nb_vhp(f_dense_hessian, a, 1, &x, &v, &value, &vh, NULL), 0, "%s", nb_error());
    cr_assert_eq(nb_hvp(f_dense_hessian, a, 1, &x, &v, NULL, &hv, NULL), 0, "%s", nb_error());
    EXPECT_SHAPE(vh, 3);
    EXPECT_SHAPE(hv, 3);
    nb_tensor *y = f_dense_hessian(&x, a);
    EXPECT_VALUES(value, 0, nb_item(y));
    for (int j = 0; j < 3; j++) {
        double want = 0;
        for (int i = 0; i < 3; i++) want += (double)nb_data(v)[i] * (double)nb_data(h)[i * 3 + j];
        cr_assert_float_eq(nb_data(vh)[j], want, 1e-5);
        cr_assert_float_eq(nb_data(hv)[j], want, 1e-5);
    }
}

Test(functional, vhp_by_hand_with_two_inputs) {
    /* sum(x^2 y): v^T H with v = (vx, vy): (2y vx + 2x vy, 2x vx) elementwise */
    nb_tensor *x = nb_from_array(NB_SHAPE(2), (float[]){2, 3});
    nb_tensor *y = nb_from_array(NB_SHAPE(2), (float[]){5, 7});
    nb_tensor *vx = nb_from_array(NB_SHAPE(2), (float[]){1, -1});
    nb_tensor *vy = nb_from_array(NB_SHAPE(2), (float[]){0.5f, 2}), *r[2], *value;
    cr_assert_eq(nb_vhp(f_xxy, NULL, 2, (nb_tensor *[]){x, y}, (nb_tensor *[]){vx, vy}, &value, r, NULL),
                 0, "%s", nb_error());
    EXPECT_VALUES(value, 0, 4 * 5 + 9 * 7);
    EXPECT_VALUES(r[0], 1e-6, 2 * 5 * 1 + 2 * 2 * 0.5f, 2 * 7 * -1 + 2 * 3 * 2);
    EXPECT_VALUES(r[1], 1e-6, 2 * 2 * 1, 2 * 3 * -1);
}

static nb_tensor *f_vhp(nb_tensor *const *in, void *ctx) {
    nb_tensor *r;
    return nb_vhp(f_dense_hessian, ctx, 1, in, &in[1], NULL, &r,
                  &(nb_functional_opts){.create_graph = true}) == 0 ? r : NULL;
}

Test(functional, vhp_with_create_graph_gradchecks_in_x_and_v) {
    nb_tensor *a = nb_uniform(NULL, -1, 1, NB_SHAPE(3, 4));
    nb_tensor *in[2] = {nb_test_leaf(-1, 1, NB_SHAPE(3)), nb_test_leaf(-1, 1, NB_SHAPE(3))};
    nb_test_gradcheck(f_vhp, a, 2, in, false);
}

static nb_tensor *f_linear(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return nb_sum(nb_mul_scalar(in[0], 3.0f), NB_ALL, false);
}

Test(functional, linear_functions_have_zero_hessians) {
    nb_tensor *x = nb_from_array(NB_SHAPE(2), (float[]){1, 2}), *v = nb_ones(NB_SHAPE(2)), *h, *r;
    cr_assert_eq(nb_hessian(f_linear, NULL, 1, &x, &h, NULL), 0, "%s", nb_error());
    EXPECT_VALUES(h, 0, 0, 0, 0, 0);
    cr_assert_eq(nb_vhp(f_linear, NULL, 1, &x, &v, NULL, &r, NULL), 0, "%s", nb_error());
    EXPECT_VALUES(r, 0, 0, 0);
    /* a Hessian needs a function of one value */
    cr_assert_eq(nb_hessian(f_uses_first, NULL, 1, &x, &h, NULL), -1);
    EXPECT_ERROR("nb_hessian", "one value", "[2]");
    cr_assert_null(h);
}

static nb_tensor *f_null_quiet(nb_tensor *const *in, void *ctx) {
    (void)in;
    (void)ctx;
    return NULL;
}

Test(functional, errors) {
    nb_tensor *x = nb_ones(NB_SHAPE(2)), *j = x, *v = nb_ones(NB_SHAPE(3));
    cr_assert_eq(nb_jacobian(NULL, NULL, 1, &x, &j, NULL), -1);
    EXPECT_ERROR("nb_jacobian", "function");
    cr_assert_eq(nb_jacobian(f_uses_first, NULL, 1, &x, &j, &(nb_functional_opts){.strategy = 7}), -1);
    EXPECT_ERROR("nb_jacobian", "strategy 7");
    cr_assert_null(j);
    cr_assert_eq(nb_jacobian(f_null_quiet, NULL, 1, &x, &j, NULL), -1);
    EXPECT_ERROR("nb_jacobian", "returned NULL");
    nb_clear_error();
    cr_assert_eq(nb_jacobian(f_uses_first, NULL, 1, (nb_tensor *[]){NULL}, &j, NULL), -1);
    cr_assert_null(nb_error(), "NULL input, no second message");
    nb_tensor *r[2];
    cr_assert_eq(nb_vhp(f_xxy, NULL, 2, (nb_tensor *[]){x, x}, (nb_tensor *[]){x, v}, NULL, r, NULL), -1);
    EXPECT_ERROR("nb_vhp", "v[1]", "[3]", "[2]");
    nb_tensor *big = nb_ones(NB_SHAPE(1, 1, 1, 1, 1)), *h;
    cr_assert_eq(nb_jacobian(f_uses_first, NULL, 1, &big, &h, NULL), -1);
    EXPECT_ERROR("nb_jacobian", "10 dimensions");
}

/* ---- the forward strategy and forward over reverse ------------------------------ */

static const nb_functional_opts forward = {.strategy = NB_JACOBIAN_FORWARD};
static const nb_functional_opts reverse = {.strategy = NB_JACOBIAN_REVERSE};

/* The outer product x yᵀ, x [2], y [3], and 2·x0·y as a 0-d input's case:
 * outputs outer [2,3] and s·y [3] for s 0-d. */
static int f_outer(nb_tensor *const *in, nb_tensor **out, void *ctx) {
    (void)ctx;
    out[0] = nb_mul(nb_reshape(in[0], NB_SHAPE(2, 1)), in[1]);
    out[1] = nb_mul(in[2], in[1]);
    return out[0] && out[1] ? 0 : -1;
}

Test(functional, forward_strategy_by_hand) {
    nb_tensor *x = nb_from_array(NB_SHAPE(2), (float[]){2, -3});
    nb_tensor *y = nb_from_array(NB_SHAPE(3), (float[]){5, 7, 0.5f});
    nb_tensor *s = nb_scalar(4), *j[6];
    cr_assert_eq(nb_jacobian_multi(f_outer, NULL, 3, (nb_tensor *[]){x, y, s}, 2, j, &forward), 0,
                 "%s", nb_error());
    EXPECT_SHAPE(j[0], 2, 3, 2);
    EXPECT_SHAPE(j[1], 2, 3, 3);
    EXPECT_SHAPE(j[2], 2, 3);
    EXPECT_SHAPE(j[3], 3, 2);
    EXPECT_SHAPE(j[4], 3, 3);
    EXPECT_SHAPE(j[5], 3);
    /* d(x_a y_b)/dx_k = [a == k] y_b, d(x_a y_b)/dy_k = [b == k] x_a */
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 3; b++) {
            for (int k = 0; k < 2; k++)
                cr_assert_eq(nb_data(j[0])[(a * 3 + b) * 2 + k], a == k ? nb_data(y)[b] : 0.0f);
            for (int k = 0; k < 3; k++)
                cr_assert_eq(nb_data(j[1])[(a * 3 + b) * 3 + k], b == k ? nb_data(x)[a] : 0.0f);
        }
    EXPECT_VALUES(j[2], 0, 0, 0, 0, 0, 0, 0);
    EXPECT_VALUES(j[3], 0, 0, 0, 0, 0, 0, 0);
    EXPECT_VALUES(j[4], 0, 4, 0, 0, 0, 4, 0, 0, 0, 4); /* d(s y)/dy = s I */
    EXPECT_VALUES(j[5], 0, 5, 7, 0.5f);                 /* d(s y)/ds = y */
    cr_assert_not(nb_requires_grad(j[0]) || nb_requires_grad(j[5]));
    /* the matrix-vector product of the first test, and several outputs */
    nb_tensor *w = nb_from_array(NB_SHAPE(2, 3), (float[]){1, 2, 3, 4, 5, 6}), *jm[2];
    cr_assert_eq(nb_jacobian(f_matvec, NULL, 2, (nb_tensor *[]){w, y}, jm, &forward), 0, "%s",
                 nb_error());
    EXPECT_VALUES(jm[0], 0, 5, 7, 0.5f, 0, 0, 0, 0, 0, 0, 5, 7, 0.5f);
    EXPECT_VALUES(jm[1], 0, 1, 2, 3, 4, 5, 6);
    nb_tensor *u = nb_from_array(NB_SHAPE(2), (float[]){2, 3});
    nb_tensor *t = nb_from_array(NB_SHAPE(2), (float[]){5, 7}), *j2[4];
    cr_assert_eq(nb_jacobian_multi(f_two, NULL, 2, (nb_tensor *[]){u, t}, 2, j2, &forward), 0);
    EXPECT_VALUES(j2[0], 0, 5, 0, 0, 7);
    EXPECT_VALUES(j2[1], 0, 2, 0, 0, 3);
    EXPECT_SHAPE(j2[2], 2);
    EXPECT_VALUES(j2[2], 0, 1, 1);
    EXPECT_VALUES(j2[3], 0, 0, 0);
}

/* Outputs of several shapes from inputs of several shapes, smooth enough
 * that most entries are used: exp(x) ⊙ (W y) [2], sum(tanh(W)) [], and
 * sin(W) ⊙ x [2,3], for x [2], W [2,3], y [3]. */
static int f_mixed(nb_tensor *const *in, nb_tensor **out, void *ctx) {
    (void)ctx;
    out[0] = nb_mul(nb_exp(in[0]), nb_matmul(in[1], in[2]));
    out[1] = nb_sum(nb_tanh(in[1]), NB_ALL, false);
    out[2] = nb_mul(nb_sin(in[1]), nb_reshape(in[0], NB_SHAPE(2, 1)));
    return out[0] && out[1] && out[2] ? 0 : -1;
}

Test(functional, forward_and_reverse_strategies_agree) {
    nb_tensor *in[3] = {nb_uniform(NULL, -1, 1, NB_SHAPE(2)), nb_uniform(NULL, -1, 1, NB_SHAPE(2, 3)),
                        nb_uniform(NULL, -1, 1, NB_SHAPE(3))};
    nb_tensor *jf[9], *jr[9], *ja[9];
    cr_assert_eq(nb_jacobian_multi(f_mixed, NULL, 3, in, 3, jf, &forward), 0, "%s", nb_error());
    cr_assert_eq(nb_jacobian_multi(f_mixed, NULL, 3, in, 3, jr, &reverse), 0, "%s", nb_error());
    cr_assert_eq(nb_jacobian_multi(f_mixed, NULL, 3, in, 3, ja, NULL), 0, "%s", nb_error());
    for (int b = 0; b < 9; b++) {
        cr_assert(nb_same_shape(jf[b], jr[b]) && nb_same_shape(ja[b], jr[b]), "block %d", b);
        for (int64_t k = 0; k < nb_numel(jr[b]); k++) {
            float r = nb_data(jr[b])[k];
            cr_assert_float_eq(nb_data(jf[b])[k], r, 1e-6f * (1 + fabsf(r)), "block %d, %lld", b,
                               (long long)k);
            cr_assert_float_eq(nb_data(ja[b])[k], r, 1e-6f * (1 + fabsf(r)));
        }
    }
    /* spot checks by hand: d out0_a / d x_a = exp(x_a) (W y)_a; d out1 / dW = 1 - tanh^2 */
    for (int a = 0; a < 2; a++) {
        double wy = 0;
        for (int b = 0; b < 3; b++) wy += (double)nb_data(in[1])[a * 3 + b] * nb_data(in[2])[b];
        cr_assert_float_eq(nb_data(jf[0])[a * 2 + a], exp((double)nb_data(in[0])[a]) * wy, 1e-5);
    }
    for (int k = 0; k < 6; k++) {
        double t = tanh((double)nb_data(in[1])[k]);
        cr_assert_float_eq(nb_data(jf[4])[k], 1 - t * t, 1e-6);
    }
}

static nb_tensor *f_sum_of(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return nb_sum(in[0], NB_ALL, false);
}

/* No input element at all: the shapes come from a pass without tangents. */
Test(functional, forward_strategy_with_empty_inputs) {
    nb_tensor *x = nb_zeros(NB_SHAPE(0)), *j;
    cr_assert_eq(nb_jacobian(f_sum_of, NULL, 1, &x, &j, &forward), 0, "%s", nb_error());
    EXPECT_SHAPE(j, 0);
    nb_tensor *e = nb_zeros(NB_SHAPE(2, 0)), *y = nb_ones(NB_SHAPE(2)), *jm[4];
    nb_tensor *ref[4];
    cr_assert_eq(nb_jacobian_multi(f_two, NULL, 2, (nb_tensor *[]){y, y}, 2, ref, &reverse), 0);
    cr_assert_eq(nb_jacobian_multi(f_two, NULL, 2, (nb_tensor *[]){y, y}, 2, jm, &forward), 0);
    for (int b = 0; b < 4; b++)
        cr_assert(nb_same_shape(jm[b], ref[b]) &&
                  memcmp(nb_data(jm[b]), nb_data(ref[b]), (size_t)nb_numel(ref[b]) * 4) == 0);
    cr_assert_eq(nb_jacobian(f_sum_of, NULL, 1, &e, &j, &forward), 0, "%s", nb_error());
    EXPECT_SHAPE(j, 2, 0);
}

static nb_tensor *f_jacobian_forward(nb_tensor *const *in, void *ctx) {
    nb_tensor *j;
    nb_functional_opts o = {.create_graph = true, .strategy = NB_JACOBIAN_FORWARD};
    return nb_jacobian(f_smooth, ctx, 1, in, &j, &o) == 0 ? j : NULL;
}

/* The tangents nb_jvp hands back are graphs reaching back to the inputs
 * (the jvp rules are ops), so the forward Jacobian with create_graph can be
 * differentiated again. */
Test(functional, forward_jacobian_with_create_graph_gradchecks) {
    nb_tensor *a = nb_uniform(NULL, -1, 1, NB_SHAPE(3, 4));
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(2, 3)), *plain;
    nb_tensor *j = f_jacobian_forward(&x, a);
    cr_assert_not_null(j, "%s", nb_error());
    cr_assert(nb_requires_grad(j));
    EXPECT_SHAPE(j, 2, 4, 2, 3);
    cr_assert_eq(nb_jacobian(f_smooth, a, 1, &x, &plain, &reverse), 0);
    for (int k = 0; k < 48; k++)
        cr_assert_float_eq(nb_data(j)[k], nb_data(plain)[k], 1e-6f * (1 + fabsf(nb_data(plain)[k])));
    nb_test_gradcheck(f_jacobian_forward, a, 1, &x, false);
}

/* nb_test_twice(x) broadcast against ctx: as many outputs as ctx has elements */
static nb_tensor *f_twice(nb_tensor *const *in, void *ctx) {
    return nb_mul(nb_test_twice(in[0]), ctx);
}

static nb_tensor *f_twice_total(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return nb_sum(nb_test_twice(in[0]), NB_ALL, false);
}

/* AUTO is seen to choose by what fails without a forward rule: forward
 * exactly when the inputs have fewer elements than the outputs. */
Test(functional, auto_chooses_forward_for_fewer_inputs) {
    nb_tensor *x1 = nb_from_array(NB_SHAPE(1), (float[]){3}), *x4 = nb_ones(NB_SHAPE(4));
    nb_tensor *c4 = nb_from_array(NB_SHAPE(4), (float[]){1, 2, 3, 4}), *j;
    /* 1 input element, 4 outputs: forward, which twice cannot take */
    cr_assert_eq(nb_jacobian(f_twice, c4, 1, &x1, &j, NULL), -1);
    EXPECT_ERROR("nb_jacobian", "forward mode", "'twice'", "no forward-mode rule");
    cr_assert_null(j);
    cr_assert_eq(nb_jacobian(f_twice, c4, 1, &x1, &j, &reverse), 0, "%s", nb_error());
    EXPECT_VALUES(j, 0, 2, 4, 6, 8);
    /* 4 and 4: reverse */
    cr_assert_eq(nb_jacobian(f_twice, c4, 1, &x4, &j, NULL), 0, "%s", nb_error());
    EXPECT_VALUES(j, 0, 2, 0, 0, 0, 0, 4, 0, 0, 0, 0, 6, 0, 0, 0, 0, 8);
    /* 4 and 1: reverse, where forward would fail */
    cr_assert_eq(nb_jacobian(f_twice_total, NULL, 1, &x4, &j, NULL), 0, "%s", nb_error());
    EXPECT_VALUES(j, 0, 2, 2, 2, 2);
    cr_assert_eq(nb_jacobian(f_twice_total, NULL, 1, &x4, &j, &forward), -1);
    EXPECT_ERROR("nb_jacobian", "forward mode", "'twice'");
    /* and when forward mode can run, AUTO's values are forward's */
    nb_tensor *a = nb_uniform(NULL, -1, 1, NB_SHAPE(3, 4));
    nb_tensor *x = nb_uniform(NULL, -1, 1, NB_SHAPE(1, 3)), *jf, *ja;
    cr_assert_eq(nb_jacobian(f_smooth, a, 1, &x, &jf, &forward), 0);
    cr_assert_eq(nb_jacobian(f_smooth, a, 1, &x, &ja, NULL), 0);
    cr_assert(memcmp(nb_data(jf), nb_data(ja), 12 * sizeof(float)) == 0);
}

/* x^T A y + sum(x^3)/6 + sum(exp(y)), x [2], y [3], A [2,3] in ctx:
 * H_xx = diag(x), H_xy = A, H_yx = Aᵀ, H_yy = diag(exp(y)): blocks of
 * different shapes, and H v = (x ⊙ vx + A vy, Aᵀ vx + exp(y) ⊙ vy). */
static nb_tensor *f_bilinear(nb_tensor *const *in, void *ctx) {
    nb_tensor *x = in[0], *y = in[1];
    nb_tensor *xay = nb_sum(nb_mul(x, nb_matmul(ctx, y)), NB_ALL, false);
    nb_tensor *cubic = nb_div_scalar(nb_sum(nb_pow_scalar(x, 3), NB_ALL, false), 6);
    return nb_add(nb_add(xay, cubic), nb_sum(nb_exp(y), NB_ALL, false));
}

Test(functional, hvp_by_hand) {
    nb_tensor *a = nb_from_array(NB_SHAPE(2, 3), (float[]){1, -2, 3, 0.5f, 4, -1});
    nb_tensor *x = nb_from_array(NB_SHAPE(2), (float[]){0.5f, -2});
    nb_tensor *y = nb_from_array(NB_SHAPE(3), (float[]){0.1f, -0.3f, 0.7f});
    nb_tensor *vx = nb_from_array(NB_SHAPE(2), (float[]){1, 3});
    nb_tensor *vy = nb_from_array(NB_SHAPE(3), (float[]){-1, 0.5f, 2}), *r[2], *value;
    cr_assert_eq(nb_hvp(f_bilinear, a, 2, (nb_tensor *[]){x, y}, (nb_tensor *[]){vx, vy}, &value, r,
                        NULL),
                 0, "%s", nb_error());
    EXPECT_SHAPE(r[0], 2);
    EXPECT_SHAPE(r[1], 3);
    cr_assert_not(nb_requires_grad(r[0]) || nb_requires_grad(r[1]) || nb_requires_grad(value));
    const float *A = nb_data(a), *X = nb_data(x), *Y = nb_data(y), *VX = nb_data(vx), *VY = nb_data(vy);
    double f = 0;
    for (int i = 0; i < 2; i++) {
        double want = (double)X[i] * VX[i];
        for (int k = 0; k < 3; k++) {
            want += (double)A[i * 3 + k] * VY[k];
            f += (double)X[i] * A[i * 3 + k] * Y[k];
        }
        f += pow(X[i], 3) / 6;
        cr_assert_float_eq(nb_data(r[0])[i], want, 1e-5, "(Hv)_x[%d]", i);
    }
    for (int k = 0; k < 3; k++) {
        double want = exp((double)Y[k]) * VY[k];
        for (int i = 0; i < 2; i++) want += (double)A[i * 3 + k] * VX[i];
        f += exp((double)Y[k]);
        cr_assert_float_eq(nb_data(r[1])[k], want, 1e-5, "(Hv)_y[%d]", k);
    }
    cr_assert_float_eq(nb_item(value), f, 1e-5);
    /* v^T H by reverse over reverse is the same vector, H being symmetric */
    nb_tensor *l[2];
    cr_assert_eq(nb_vhp(f_bilinear, a, 2, (nb_tensor *[]){x, y}, (nb_tensor *[]){vx, vy}, NULL, l, NULL), 0);
    for (int i = 0; i < 2; i++) cr_assert_float_eq(nb_data(l[0])[i], nb_data(r[0])[i], 1e-5);
    for (int k = 0; k < 3; k++) cr_assert_float_eq(nb_data(l[1])[k], nb_data(r[1])[k], 1e-5);
}

Test(functional, hvp_of_a_matrix_input_unused_inputs_and_linear_functions) {
    /* sum(tanh(W) c): H v = -2 tanh(w) (1 - tanh^2(w)) c v elementwise */
    nb_tensor *w = nb_from_array(NB_SHAPE(2, 2), (float[]){0.5f, -1, 0.25f, 2});
    nb_tensor *c = nb_from_array(NB_SHAPE(2, 2), (float[]){1, 2, 3, 4});
    nb_tensor *v = nb_from_array(NB_SHAPE(2, 2), (float[]){1, -1, 0.5f, 2}), *r;
    cr_assert_eq(nb_hvp(f_tanh, c, 1, &w, &v, NULL, &r, NULL), 0, "%s", nb_error());
    EXPECT_SHAPE(r, 2, 2);
    for (int k = 0; k < 4; k++) {
        double t = tanh((double)nb_data(w)[k]);
        cr_assert_float_eq(nb_data(r)[k], -2 * t * (1 - t * t) * nb_data(c)[k] * nb_data(v)[k], 1e-6);
    }
    /* the second input unused: its part is zeros; a linear function: all zeros */
    nb_tensor *x = nb_from_array(NB_SHAPE(2), (float[]){1, 2}), *u = nb_ones(NB_SHAPE(3));
    nb_tensor *vx = nb_ones(NB_SHAPE(2)), *r2[2], *value;
    cr_assert_eq(nb_hvp(f_linear, NULL, 2, (nb_tensor *[]){x, u}, (nb_tensor *[]){vx, u}, &value, r2,
                        NULL),
                 0, "%s", nb_error());
    EXPECT_VALUES(value, 0, 9);
    EXPECT_VALUES(r2[0], 0, 0, 0);
    EXPECT_VALUES(r2[1], 0, 0, 0, 0);
}

static nb_tensor *f_constant(nb_tensor *const *in, void *ctx) {
    (void)in;
    return nb_scalar(*(float *)ctx);
}

Test(functional, hvp_of_a_constant_is_zero) {
    float k = 5;
    nb_tensor *x = nb_ones(NB_SHAPE(2)), *r, *value;
    cr_assert_eq(nb_hvp(f_constant, &k, 1, &x, &x, &value, &r, NULL), 0, "%s", nb_error());
    EXPECT_VALUES(value, 0, 5);
    EXPECT_VALUES(r, 0, 0, 0);
}

static nb_tensor *f_hvp(nb_tensor *const *in, void *ctx) {
    nb_tensor *r;
    return nb_hvp(f_dense_hessian, ctx, 1, in, &in[1], NULL, &r,
                  &(nb_functional_opts){.create_graph = true}) == 0 ? r : NULL;
}

Test(functional, hvp_with_create_graph_gradchecks_in_x_and_v) {
    nb_tensor *a = nb_uniform(NULL, -1, 1, NB_SHAPE(3, 4));
    nb_tensor *in[2] = {nb_test_leaf(-1, 1, NB_SHAPE(3)), nb_test_leaf(-1, 1, NB_SHAPE(3))};
    nb_tensor *r = f_hvp(in, a);
    cr_assert_not_null(r, "%s", nb_error());
    cr_assert(nb_requires_grad(r));
    nb_test_gradcheck(f_hvp, a, 2, in, false);
}

static nb_tensor *f_twice_sum(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return nb_sum(nb_square(nb_test_twice(in[0])), NB_ALL, false);
}

static int f_jacobian_in_jvp(nb_tensor *const *in, nb_tensor **out, void *ctx) {
    (void)ctx;
    return nb_jacobian(f_sum_of, NULL, 1, in, out, &forward);
}

Test(functional, forward_mode_errors) {
    nb_tensor *x = nb_ones(NB_SHAPE(2)), *v = nb_ones(NB_SHAPE(2)), *r = x, *value = x;
    /* forward over reverse needs forward rules for f's forward and backward */
    cr_assert_eq(nb_hvp(f_twice_sum, NULL, 1, &x, &v, &value, &r, NULL), -1);
    EXPECT_ERROR("nb_hvp", "forward mode", "'twice'", "no forward-mode rule");
    cr_assert(r == NULL && value == NULL);
    cr_assert_eq(nb_vhp(f_twice_sum, NULL, 1, &x, &v, NULL, &r, NULL), 0, "%s", nb_error());
    EXPECT_VALUES(r, 1e-6, 8, 8); /* d^2 sum(4x^2) = 8 I */
    cr_assert_eq(nb_hvp(f_uses_first, NULL, 1, &x, &v, NULL, &r, NULL), -1);
    EXPECT_ERROR("nb_hvp", "one value", "[2]");
    cr_assert_eq(nb_hvp(f_null_quiet, NULL, 1, &x, &v, NULL, &r, NULL), -1);
    EXPECT_ERROR("nb_hvp", "returned NULL");
    nb_tensor *v3 = nb_ones(NB_SHAPE(3));
    cr_assert_eq(nb_hvp(f_sum_of, NULL, 1, &x, &v3, NULL, &r, NULL), -1);
    EXPECT_ERROR("nb_hvp", "v[0]", "[3]", "[2]");
    cr_assert_eq(nb_hvp(f_sum_of, NULL, 1, &x, NULL, NULL, &r, NULL), -1);
    EXPECT_ERROR("nb_hvp", "vector v");
    nb_clear_error();
    cr_assert_eq(nb_hvp(f_sum_of, NULL, 1, &x, (nb_tensor *[]){NULL}, NULL, &r, NULL), -1);
    cr_assert_null(nb_error(), "NULL v, no second message");
    /* the forward Jacobian's own */
    cr_assert_eq(nb_jacobian(f_null_quiet, NULL, 1, &x, &r, &forward), -1);
    EXPECT_ERROR("nb_jacobian", "returned NULL");
    nb_tensor *big = nb_ones(NB_SHAPE(1, 1, 1, 1, 1));
    cr_assert_eq(nb_jacobian(f_uses_first, NULL, 1, &big, &r, &forward), -1);
    EXPECT_ERROR("nb_jacobian", "10 dimensions");
    cr_assert_null(r);
    /* forward mode has one level */
    nb_tensor *y, *t;
    cr_assert_eq(nb_jvp(f_jacobian_in_jvp, NULL, 1, &x, &v, 1, &y, &t), -1);
    EXPECT_ERROR("nb_jacobian", "forward mode", "inside another nb_jvp");
}

/* ---- the Hessian's two strategies ------------------------------------------------ */

/* f(x, w) = sum_rc w_c x_rc^3 + (sum_rc x_rc) (sum_c w_c^2), x [2,2], w [2]:
 *   H_xx[rc, r'c'] = 6 w_c x_rc          if rc = r'c', else 0
 *   H_xw[rc, c']   = 3 x_rc^2 [c = c'] + 2 w_c'      (H_wx its transpose)
 *   H_ww[c, c']    = 2 sum(x)            if c = c', else 0 */
static nb_tensor *f_cubic(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    nb_tensor *x = in[0], *w = in[1];
    return nb_add(nb_sum(nb_mul(nb_pow_scalar(x, 3), w), NB_ALL, false),
                  nb_mul(nb_sum(x, NB_ALL, false), nb_sum(nb_square(w), NB_ALL, false)));
}

static void expect_cubic_hessian(nb_tensor *const *h, const float *x, const float *w,
                                 const char *label) {
    EXPECT_SHAPE(h[0], 2, 2, 2, 2);
    EXPECT_SHAPE(h[1], 2, 2, 2);
    EXPECT_SHAPE(h[2], 2, 2, 2);
    EXPECT_SHAPE(h[3], 2, 2);
    double sx = x[0] + x[1] + x[2] + x[3];
    for (int a = 0; a < 4; a++) {
        int c = a % 2;
        for (int b = 0; b < 4; b++) {
            double want = a == b ? 6.0 * w[c] * x[a] : 0.0;
            cr_assert(fabs(nb_data(h[0])[a * 4 + b] - want) < 1e-4, "%s: H_xx[%d, %d] %g, want %g",
                      label, a, b, (double)nb_data(h[0])[a * 4 + b], want);
        }
        for (int c2 = 0; c2 < 2; c2++) {
            double want = (c == c2 ? 3.0 * x[a] * x[a] : 0.0) + 2.0 * w[c2];
            cr_assert(fabs(nb_data(h[1])[a * 2 + c2] - want) < 1e-4, "%s: H_xw[%d, %d] %g, want %g",
                      label, a, c2, (double)nb_data(h[1])[a * 2 + c2], want);
            cr_assert(fabs(nb_data(h[2])[c2 * 4 + a] - want) < 1e-4, "%s: H_wx[%d, %d] %g, want %g",
                      label, c2, a, (double)nb_data(h[2])[c2 * 4 + a], want);
        }
    }
    for (int c = 0; c < 2; c++)
        for (int c2 = 0; c2 < 2; c2++) {
            double want = c == c2 ? 2.0 * sx : 0.0;
            cr_assert(fabs(nb_data(h[3])[c * 2 + c2] - want) < 1e-4, "%s: H_ww[%d, %d] %g, want %g",
                      label, c, c2, (double)nb_data(h[3])[c * 2 + c2], want);
        }
}

/* Every strategy gives the Hessian written out above: forward over reverse
 * (FORWARD) and reverse over reverse (REVERSE, and AUTO, which takes it). With create_graph the Hessian is a graph: the gradient of
 * sum(H_xx) = sum_rc 6 w_c x_rc is 6 w_c in x and 6 sum_r x_rc in w. */
Test(functional, hessian_strategies_by_hand) {
    const float xv[4] = {0.5f, -1.0f, 1.5f, 0.25f}, wv[2] = {2.0f, -0.75f};
    const nb_jacobian_strategy strategies[3] = {NB_JACOBIAN_AUTO, NB_JACOBIAN_FORWARD,
                                                NB_JACOBIAN_REVERSE};
    const char *names[3] = {"auto", "forward", "reverse"};
    nb_tensor *h[3][4];
    for (int s = 0; s < 3; s++)
        for (int cg = 0; cg < 2; cg++) {
            nb_tensor *x = nb_from_array(NB_SHAPE(2, 2), xv), *w = nb_from_array(NB_SHAPE(2), wv);
            if (cg) {
                nb_set_requires_grad(x, true);
                nb_set_requires_grad(w, true);
            }
            nb_functional_opts o = {.create_graph = cg, .strategy = strategies[s]};
            cr_assert_eq(nb_hessian(f_cubic, NULL, 2, (nb_tensor *[]){x, w}, h[s], &o), 0, "%s: %s",
                         names[s], nb_error());
            expect_cubic_hessian(h[s], xv, wv, names[s]);
            if (!cg) {
                cr_assert_not(nb_requires_grad(h[s][0]));
                continue;
            }
            nb_tensor *g[2];
            nb_tensor *total = nb_sum(h[s][0], NB_ALL, false);
            cr_assert_eq(nb_grad(1, &total, NULL, 2, (nb_tensor *[]){x, w}, g, NULL), 0, "%s: %s",
                         names[s], nb_error());
            EXPECT_VALUES(g[0], 1e-4, 6 * wv[0], 6 * wv[1], 6 * wv[0], 6 * wv[1]);
            EXPECT_VALUES(g[1], 1e-4, 6 * (xv[0] + xv[2]), 6 * (xv[1] + xv[3]));
        }
}

static nb_tensor *f_cubic_counted(nb_tensor *const *in, void *ctx) {
    ++*(int *)ctx;
    return f_cubic(in, NULL);
}

/* Forward over reverse calls f (and its backward) once per input element;
 * reverse over reverse, which AUTO takes, calls f once and then runs one
 * backward per element through the gradient's graph. */
Test(functional, hessian_strategies_call_f_as_described) {
    nb_tensor *in[2] = {nb_uniform(NULL, -1, 1, NB_SHAPE(2, 2)), nb_uniform(NULL, -1, 1, NB_SHAPE(2))};
    nb_tensor *h[4];
    int calls[3] = {0};
    const nb_jacobian_strategy strategies[3] = {NB_JACOBIAN_AUTO, NB_JACOBIAN_FORWARD,
                                                NB_JACOBIAN_REVERSE};
    for (int s = 0; s < 3; s++)
        cr_assert_eq(nb_hessian(f_cubic_counted, &calls[s], 2, in, h,
                                &(nb_functional_opts){.strategy = strategies[s]}), 0, "%s", nb_error());
    cr_assert(calls[0] == 1 && calls[1] == 6 && calls[2] == 1, "calls: auto %d, forward %d, reverse %d",
              calls[0], calls[1], calls[2]);
}

static nb_tensor *f_hessian_forward(nb_tensor *const *in, void *ctx) {
    nb_tensor *h;
    nb_functional_opts o = {.create_graph = true, .strategy = NB_JACOBIAN_FORWARD};
    return nb_hessian(f_dense_hessian, ctx, 1, in, &h, &o) == 0 ? h : NULL;
}

/* The forward strategy's Hessian with create_graph is a graph of the
 * tangents' ops: its derivative (third derivatives of f) gradchecks. */
Test(functional, hessian_forward_with_create_graph_gradchecks) {
    nb_tensor *a = nb_uniform(NULL, -1, 1, NB_SHAPE(3, 4));
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(3));
    nb_test_gradcheck(f_hessian_forward, a, 1, &x, false);
}

Test(functional, hessian_forward_and_reverse_agree) {
    nb_tensor *a = nb_uniform(NULL, -1, 1, NB_SHAPE(3, 4));
    nb_tensor *x = nb_uniform(NULL, -1, 1, NB_SHAPE(3)), *hf, *hr;
    cr_assert_eq(nb_hessian(f_dense_hessian, a, 1, &x, &hf, &forward), 0, "%s", nb_error());
    cr_assert_eq(nb_hessian(f_dense_hessian, a, 1, &x, &hr, &reverse), 0, "%s", nb_error());
    for (int k = 0; k < 9; k++)
        cr_assert_float_eq(nb_data(hf)[k], nb_data(hr)[k], 1e-6, "element %d: %.9g forward, %.9g "
                           "reverse", k, (double)nb_data(hf)[k], (double)nb_data(hr)[k]);
}

/* An op without a forward rule ('twice'): FORWARD fails naming it; AUTO
 * and REVERSE need none. */
Test(functional, hessian_forward_needs_forward_rules) {
    nb_tensor *x = nb_from_array(NB_SHAPE(2), (float[]){1, -2}), *h = x;
    cr_assert_eq(nb_hessian(f_twice_sum, NULL, 1, &x, &h, &forward), -1);
    EXPECT_ERROR("nb_hessian", "forward mode", "'twice'", "no forward-mode rule");
    cr_assert_null(h);
    for (int s = 0; s < 2; s++) {
        nb_clear_error();
        nb_functional_opts o = {.strategy = s ? NB_JACOBIAN_REVERSE : NB_JACOBIAN_AUTO};
        cr_assert_eq(nb_hessian(f_twice_sum, NULL, 1, &x, &h, &o), 0, "%s", nb_error());
        EXPECT_VALUES(h, 1e-6, 8, 0, 0, 8); /* d^2 sum(4x^2) = 8 I */
        cr_assert_null(nb_error());
    }
    cr_assert_eq(nb_hessian(f_cubic, NULL, 1, &x, &h, &(nb_functional_opts){.strategy = 9}), -1);
    EXPECT_ERROR("nb_hessian", "strategy 9");
}

/* Every allocation of a Hessian with create_graph failing in turn, by each
 * strategy. */
typedef struct oom_case {
    nb_tensor *x, *c, *a, *v;
    int what;
} oom_case;

static int oom_hessian_run(void *ctx) {
    oom_case *k = ctx;
    nb_tensor *h;
    nb_functional_opts o = {.create_graph = true,
                            .strategy = k->what == 0 ? NB_JACOBIAN_FORWARD : NB_JACOBIAN_REVERSE};
    return nb_hessian(f_tanh, k->c, 1, &k->x, &h, &o);
}

Test(functional, allocation_failures) {
    oom_case k = {nb_uniform(NULL, -1, 1, NB_SHAPE(2)), nb_ones(NB_SHAPE(2)), NULL, NULL, 0};
    for (k.what = 0; k.what < 2; k.what++) {
        nb_test_oom_walk(oom_hessian_run, &k, false);
        nb_test_oom_walk(oom_hessian_run, &k, true);
    }
}

/* Every allocation of the forward strategy (with create_graph, and
 * without: the scope of each column) and of forward over reverse failing in
 * turn. */
static int oom_forward_run(void *ctx) {
    oom_case *k = ctx;
    nb_tensor *r;
    nb_functional_opts o = {.create_graph = k->what != 1, .strategy = NB_JACOBIAN_FORWARD};
    return k->what < 2 ? nb_jacobian(f_smooth, k->a, 1, &k->x, &r, &o)
                       : nb_hvp(f_dense_hessian, k->a, 1, &k->c, &k->v, NULL, &r, &o);
}

Test(functional, allocation_failures_in_forward_mode) {
    oom_case k = {nb_uniform(NULL, -1, 1, NB_SHAPE(2, 3)), nb_uniform(NULL, -1, 1, NB_SHAPE(3)),
                  nb_uniform(NULL, -1, 1, NB_SHAPE(3, 4)), nb_uniform(NULL, -1, 1, NB_SHAPE(3)), 0};
    for (k.what = 0; k.what < 3; k.what++) {
        nb_test_oom_walk(oom_forward_run, &k, false);
        nb_test_oom_walk(oom_forward_run, &k, true);
    }
}
