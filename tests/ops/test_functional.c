/* test_functional.c — whole derivatives (ops/functional.c): nb_jacobian,
 * nb_jacobian_multi, nb_hessian, nb_vhp and nb_hvp.
 *
 * Each is checked against matrices written out by hand for small
 * functions, against central finite differences (of the function for the
 * Jacobian, of its gradient for the Hessian), and against each other: a
 * vector-Hessian product must equal v times the Hessian built row by row.
 * With create_graph the results are graphs, gradchecked in turn. Shapes
 * follow PyTorch's torch.autograd.functional.
 */
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
    nb_tensor *x = nb_uniform(NULL, -1, 1, NB_SHAPE(2, 3)), *j;
    cr_assert_eq(nb_jacobian(f_smooth, a, 1, &x, &j, &(nb_functional_opts){.strategy = NB_JACOBIAN_REVERSE}),
                 0, "%s", nb_error());
    EXPECT_SHAPE(j, 2, 4, 2, 3);
    const double h = 1e-2;
    for (int64_t k = 0; k < 6; k++) {
        float orig = nb_data(x)[k];
        nb_set_item(x, k, orig + (float)h);
        nb_tensor *yp = f_smooth(&x, a);
        nb_set_item(x, k, orig - (float)h);
        nb_tensor *ym = f_smooth(&x, a);
        nb_set_item(x, k, orig);
        for (int64_t i = 0; i < 8; i++) {
            double fd = ((double)nb_data(yp)[i] - (double)nb_data(ym)[i]) / (2 * h);
            cr_assert_float_eq(nb_data(j)[i * 6 + k], fd, 2e-3, "J[%lld, %lld] %g, differences %g",
                               (long long)i, (long long)k, (double)nb_data(j)[i * 6 + k], fd);
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

/* Every allocation of a Hessian with create_graph failing in turn. */
Test(functional, allocation_failures) {
    nb_tensor *x = nb_keep(nb_uniform(NULL, -1, 1, NB_SHAPE(2))), *c = nb_keep(nb_ones(NB_SHAPE(2)));
    for (int persistent = 0; persistent < 2; persistent++)
        for (int64_t n = 1;; n++) {
            cr_assert(n < 100000);
            nb_empty_cache();
            int64_t live = nb_live_tensors();
            nb_clear_error();
            nb_test_alloc a = {.fail_at = n, .persistent = persistent};
            nb_set_alloc_hook(nb_test_alloc_hook, &a);
            nb_scope_begin();
            nb_tensor *h;
            int rc = nb_hessian(f_tanh, c, 1, &x, &h, &(nb_functional_opts){.create_graph = true});
            nb_scope_end();
            nb_set_alloc_hook(NULL, NULL);
            cr_assert_eq(nb_live_tensors(), live, "leak at allocation %lld", (long long)n);
            if (!a.fired) {
                cr_assert_eq(rc, 0, "%s", nb_error());
                break;
            }
            if (rc != 0) EXPECT_ERROR("out of memory");
        }
    nb_release(x);
    nb_release(c);
}
