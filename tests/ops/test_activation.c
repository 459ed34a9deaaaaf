/* test_activation.c — the activations of ops/activation.c: tanh, sigmoid,
 * relu, leaky_relu, elu, gelu, softplus and clamp.
 *
 * Forward values and first derivatives are checked against numbers worked
 * out by hand (with the closed forms in the comments), the extremes of the
 * stable forms (sigmoid and softplus at +-100) against overflow, and every
 * backward against finite differences to first and second order. Inputs of
 * the piecewise ops are kept away from their kinks, where finite
 * differences straddle two pieces.
 */
#include "test_util.h"

TestSuite(activation, NB_TEST_HOOKS);

static nb_tensor *vec(int n, const float *v) { return nb_from_array(1, (int64_t[]){n}, v); }
static nb_tensor *total(nb_tensor *t) { return nb_sum_to(t, NB_SHAPE()); }

/* Parameters of the ops that take them, passed to gradcheck as ctx. */
typedef struct params {
    float a, b;
} params;

static nb_tensor *f_tanh(nb_tensor *const *in, void *ctx) { (void)ctx; return nb_tanh(in[0]); }
static nb_tensor *f_sigmoid(nb_tensor *const *in, void *ctx) { (void)ctx; return nb_sigmoid(in[0]); }
static nb_tensor *f_relu(nb_tensor *const *in, void *ctx) { (void)ctx; return nb_relu(in[0]); }
static nb_tensor *f_gelu(nb_tensor *const *in, void *ctx) { (void)ctx; return nb_gelu(in[0]); }
static nb_tensor *f_softplus(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return nb_softplus(in[0]);
}
static nb_tensor *f_leaky_relu(nb_tensor *const *in, void *ctx) {
    return nb_leaky_relu(in[0], ((params *)ctx)->a);
}
static nb_tensor *f_elu(nb_tensor *const *in, void *ctx) { return nb_elu(in[0], ((params *)ctx)->a); }
static nb_tensor *f_clamp(nb_tensor *const *in, void *ctx) {
    const params *p = ctx;
    return nb_clamp(in[0], p->a, p->b);
}

/* d sum(f(x)) / dx at the listed points. */
static nb_tensor *grad_of_sum(nb_gradcheck_fn f, void *ctx, int n, const float *v) {
    nb_tensor *x = nb_set_requires_grad(vec(n, v), true);
    nb_tensor *y = f(&x, ctx);
    cr_assert_not_null(y, "%s", nb_error() ? nb_error() : "");
    cr_assert(nb_requires_grad(y), "the output of an op on a grad input must require grad");
    cr_assert_eq(nb_backward(total(y)), 0, "%s", nb_error() ? nb_error() : "");
    return nb_grad_of(x);
}

/* A random [3,4] leaf whose values all lie at least gap away from every
 * kink listed, pushed outwards when they do not. */
static nb_tensor *leaf_away_from(float lo, float hi, int nkinks, const float *kinks, float gap) {
    nb_tensor *x = nb_uniform(NULL, lo, hi, NB_SHAPE(3, 4));
    float *d = nb_data_mut(x);
    for (int64_t i = 0; i < nb_numel(x); i++)
        for (int k = 0; k < nkinks; k++)
            if (fabsf(d[i] - kinks[k]) < gap) d[i] = kinks[k] + (d[i] < kinks[k] ? -gap : gap);
    return nb_set_requires_grad(x, true);
}

/* ---- tanh ----------------------------------------------------------------------- */

Test(activation, tanh_values_and_gradient) {
    float x[] = {-2, -0.5f, 0, 0.5f, 3};
    EXPECT_VALUES(nb_tanh(vec(5, x)), 1e-6, -0.96402758f, -0.46211716f, 0, 0.46211716f,
                  0.99505475f);
    /* 1 - tanh(x)^2 */
    EXPECT_VALUES(grad_of_sum(f_tanh, NULL, 5, x), 1e-6, 0.070650825f, 0.78644773f, 1,
                  0.78644773f, 0.0098660372f);
}

Test(activation, tanh_gradcheck) {
    nb_tensor *x = nb_test_leaf(-2, 2, NB_SHAPE(3, 4));
    nb_test_gradcheck(f_tanh, NULL, 1, &x, true);
}

/* ---- sigmoid -------------------------------------------------------------------- */

Test(activation, sigmoid_values_and_gradient) {
    float x[] = {-2, 0, 1};
    EXPECT_VALUES(nb_sigmoid(vec(3, x)), 1e-6, 0.11920292f, 0.5f, 0.73105858f);
    /* y (1 - y) */
    EXPECT_VALUES(grad_of_sum(f_sigmoid, NULL, 3, x), 1e-6, 0.10499359f, 0.25f, 0.19661193f);
}

Test(activation, sigmoid_is_finite_at_the_extremes) {
    nb_tensor *y = nb_sigmoid(vec(4, (float[]){-100, 100, -1e30f, 1e30f}));
    const float *d = nb_data(y);
    /* sigmoid(-100) = exp(-100) = 3.7e-44, a denormal float but not 0/0 */
    cr_assert(isfinite(d[0]) && d[0] >= 0 && d[0] < 1e-40f, "sigmoid(-100) = %g", (double)d[0]);
    cr_assert_eq(d[1], 1.0f, "sigmoid(100) = %.9g", (double)d[1]);
    cr_assert_eq(d[2], 0.0f, "sigmoid(-1e30) = %g", (double)d[2]);
    cr_assert_eq(d[3], 1.0f, "sigmoid(1e30) = %g", (double)d[3]);
    nb_tensor *g = grad_of_sum(f_sigmoid, NULL, 2, (float[]){-100, 100});
    cr_assert(isfinite(nb_data(g)[0]) && isfinite(nb_data(g)[1]));
    EXPECT_VALUES(g, 1e-30, 0, 0);
}

Test(activation, sigmoid_gradcheck) {
    nb_tensor *x = nb_test_leaf(-4, 4, NB_SHAPE(3, 4));
    nb_test_gradcheck(f_sigmoid, NULL, 1, &x, true);
}

/* ---- relu ------------------------------------------------------------------------- */

Test(activation, relu_values_and_gradient) {
    float x[] = {-2, -0.5f, 0, 0.5f, 3};
    EXPECT_VALUES(nb_relu(vec(5, x)), 0, 0, 0, 0, 0.5f, 3);
    /* 1 where x > 0; 0 at the kink itself */
    EXPECT_VALUES(grad_of_sum(f_relu, NULL, 5, x), 0, 0, 0, 0, 1, 1);
}

Test(activation, relu_passes_nan) {
    cr_assert(isnan(nb_data(nb_relu(nb_scalar(NAN)))[0]));
    /* PyTorch: relu(x).backward(g) with x = [nan, -1, 2, 0], g = [3, inf,
     * 5, 7] gives [3, 0, 5, 0]: g through the NaN, 0 (not inf·0) below 0 */
    nb_tensor *x = nb_set_requires_grad(nb_from_array(NB_SHAPE(4), (float[]){NAN, -1, 2, 0}), true);
    nb_tensor *y = nb_relu(x), *gx;
    nb_tensor *g = nb_from_array(NB_SHAPE(4), (float[]){3, INFINITY, 5, 7});
    cr_assert_eq(nb_grad(1, &y, &g, 1, &x, &gx, NULL), 0, "%s", nb_error());
    EXPECT_VALUES(gx, 0, 3, 0, 5, 0);
}

Test(activation, relu_gradcheck) {
    nb_tensor *x = leaf_away_from(-2, 2, 1, (float[]){0}, 0.1f);
    nb_test_gradcheck(f_relu, NULL, 1, &x, true);
}

/* ---- leaky_relu ------------------------------------------------------------------- */

Test(activation, leaky_relu_values_and_gradient) {
    params p = {0.1f, 0};
    float x[] = {-2, -0.5f, 0, 0.5f, 3};
    EXPECT_VALUES(nb_leaky_relu(vec(5, x), 0.1f), 1e-7, -0.2f, -0.05f, 0, 0.5f, 3);
    EXPECT_VALUES(grad_of_sum(f_leaky_relu, &p, 5, x), 1e-7, 0.1f, 0.1f, 0.1f, 1, 1);
}

Test(activation, leaky_relu_gradcheck) {
    params slopes[] = {{0.01f, 0}, {0.3f, 0}, {-0.5f, 0}};
    for (int k = 0; k < 3; k++) {
        nb_tensor *x = leaf_away_from(-2, 2, 1, (float[]){0}, 0.1f);
        nb_test_gradcheck(f_leaky_relu, &slopes[k], 1, &x, true);
    }
}

/* ---- elu ---------------------------------------------------------------------------- */

Test(activation, elu_values_and_gradient) {
    params p = {1.5f, 0};
    float x[] = {-2, -0.5f, 0, 0.5f, 3};
    /* 1.5 (exp(x) - 1) below 0, x above */
    EXPECT_VALUES(nb_elu(vec(5, x), 1.5f), 1e-6, -1.2969971f, -0.59020401f, 0, 0.5f, 3);
    /* 1.5 exp(x) = y + alpha below 0 (and at 0), 1 above */
    EXPECT_VALUES(grad_of_sum(f_elu, &p, 5, x), 1e-6, 0.20300292f, 0.90979599f, 1.5f, 1, 1);
}

Test(activation, elu_gradcheck) {
    params alphas[] = {{1.0f, 0}, {0.5f, 0}};
    for (int k = 0; k < 2; k++) {
        nb_tensor *x = leaf_away_from(-3, 2, 1, (float[]){0}, 0.1f);
        nb_test_gradcheck(f_elu, &alphas[k], 1, &x, true);
    }
}

/* ---- gelu --------------------------------------------------------------------------- */

Test(activation, gelu_values_and_gradient) {
    float x[] = {-2, -1, 0, 1, 2};
    /* x Phi(x) with the normal CDF Phi(1) = 0.84134475 */
    EXPECT_VALUES(nb_gelu(vec(5, x)), 1e-6, -0.045500264f, -0.15865525f, 0, 0.84134475f,
                  1.9544997f);
    /* Phi(x) + x exp(-x^2/2) / sqrt(2 pi) */
    EXPECT_VALUES(grad_of_sum(f_gelu, NULL, 5, x), 1e-6, -0.085231801f, -0.083315471f, 0.5f,
                  1.0833155f, 1.0852318f);
}

Test(activation, gelu_gradcheck) {
    nb_tensor *x = nb_test_leaf(-3, 3, NB_SHAPE(3, 4));
    nb_test_gradcheck(f_gelu, NULL, 1, &x, true);
}

/* gelu's gradient op, gelu_vjp(x, w) = w·(Phi(x) + x phi(x)), reached as
 * d/dx sum(w·gelu(x)) with a graph: a function of x and w whose own
 * backward (in x: w·phi·(2 - x^2), in w: gelu_vjp again) the gradcheck
 * checks, and the second order that backward's. */
static nb_tensor *f_gelu_vjp(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    nb_tensor *x = in[0], *g = NULL;
    nb_tensor *y = nb_sum(nb_mul(in[1], nb_gelu(x)), NB_AXES(), false);
    return nb_grad(1, &y, NULL, 1, &x, &g, &(nb_grad_opts){.create_graph = true}) == 0 ? g : NULL;
}

Test(activation, gelu_vjp_values_and_gradcheck) {
    /* w·(Phi(x) + x phi(x)) at x = 1, -1 with w = 2, -3: Phi(1) + phi(1) = 1.0833155,
     * Phi(-1) - phi(-1) = -0.083315471 */
    nb_tensor *x = nb_set_requires_grad(vec(2, (const float[]){1, -1}), true);
    nb_tensor *w = vec(2, (const float[]){2, -3});
    EXPECT_VALUES(f_gelu_vjp((nb_tensor *const[]){x, w}, NULL), 1e-6, 2 * 1.0833155f, -3 * -0.083315471f);
    nb_tensor *in[2] = {nb_test_leaf(-3, 3, NB_SHAPE(3, 4)), nb_test_leaf(-1, 1, NB_SHAPE(3, 4))};
    nb_test_gradcheck(f_gelu_vjp, NULL, 2, in, true);
}

/* ---- softplus ----------------------------------------------------------------------- */

Test(activation, softplus_values_and_gradient) {
    float x[] = {-1, 0, 1};
    /* log(1 + e^x): log 2 at 0 */
    EXPECT_VALUES(nb_softplus(vec(3, x)), 1e-6, 0.31326169f, 0.69314718f, 1.3132617f);
    /* sigmoid(x) */
    EXPECT_VALUES(grad_of_sum(f_softplus, NULL, 3, x), 1e-6, 0.26894142f, 0.5f, 0.73105858f);
}

Test(activation, softplus_is_finite_at_the_extremes) {
    nb_tensor *y = nb_softplus(vec(3, (float[]){-100, 100, 1e30f}));
    const float *d = nb_data(y);
    /* log(1 + e^-100) = 3.7e-44: tiny and positive, not log(1) = 0 */
    cr_assert(d[0] > 0 && d[0] < 1e-40f, "softplus(-100) = %g", (double)d[0]);
    cr_assert_eq(d[1], 100.0f, "softplus(100) = %.9g", (double)d[1]);
    cr_assert_eq(d[2], 1e30f, "softplus(1e30) = %g", (double)d[2]);
    EXPECT_VALUES(grad_of_sum(f_softplus, NULL, 2, (float[]){-100, 100}), 1e-30, 0, 1);
}

Test(activation, softplus_gradcheck) {
    nb_tensor *x = nb_test_leaf(-4, 4, NB_SHAPE(3, 4));
    nb_test_gradcheck(f_softplus, NULL, 1, &x, true);
}

/* ---- clamp ------------------------------------------------------------------------------ */

Test(activation, clamp_values_and_gradient) {
    params p = {-1, 2};
    float x[] = {-3, -1, 0.5f, 2, 5};
    EXPECT_VALUES(nb_clamp(vec(5, x), -1, 2), 0, -1, -1, 0.5f, 2, 2);
    /* 1 inside [min, max], bounds included */
    EXPECT_VALUES(grad_of_sum(f_clamp, &p, 5, x), 0, 0, 1, 1, 1, 0);
}

Test(activation, clamp_with_equal_bounds_is_constant) {
    EXPECT_VALUES(nb_clamp(vec(3, (float[]){-1, 0.5f, 4}), 0.5f, 0.5f), 0, 0.5f, 0.5f, 0.5f);
}

Test(activation, clamp_gradcheck) {
    params p = {-1, 1};
    nb_tensor *x = leaf_away_from(-2, 2, 2, (float[]){-1, 1}, 0.1f);
    nb_test_gradcheck(f_clamp, &p, 1, &x, true);
}

Test(activation, clamp_rejects_min_above_max) {
    nb_tensor *x = nb_zeros(NB_SHAPE(2, 3));
    cr_assert_null(nb_clamp(x, 2, 1));
    EXPECT_ERROR("nb_clamp", "min 2", "max 1", "[2,3]");
    nb_clear_error();
    cr_assert_null(nb_clamp(x, NAN, 1));
    EXPECT_ERROR("nb_clamp");
}

/* ---- shared behaviour ------------------------------------------------------------------- */

Test(activation, outputs_keep_the_input_shape) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(2, 1, 3));
    EXPECT_SHAPE(nb_tanh(x), 2, 1, 3);
    EXPECT_SHAPE(nb_sigmoid(x), 2, 1, 3);
    EXPECT_SHAPE(nb_relu(x), 2, 1, 3);
    EXPECT_SHAPE(nb_leaky_relu(x, 0.1f), 2, 1, 3);
    EXPECT_SHAPE(nb_elu(x, 1), 2, 1, 3);
    EXPECT_SHAPE(nb_gelu(x), 2, 1, 3);
    EXPECT_SHAPE(nb_softplus(x), 2, 1, 3);
    EXPECT_SHAPE(nb_clamp(x, 0, 1), 2, 1, 3);
    cr_assert_eq(nb_ndim(nb_relu(nb_scalar(2))), 0);
}

Test(activation, no_graph_without_grad) {
    nb_tensor *x = nb_uniform(NULL, -1, 1, NB_SHAPE(4));
    cr_assert(!nb_requires_grad(nb_gelu(x)));
    cr_assert_null(nb_op_of(nb_elu(x, 1)));
}

Test(activation, records_its_op) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(4));
    cr_assert_str_eq(nb_op_of(nb_tanh(x))->name, "tanh");
    cr_assert_str_eq(nb_op_of(nb_softplus(x))->name, "softplus");
    cr_assert_str_eq(nb_op_of(nb_clamp(x, 0, 1))->name, "clamp");
}

Test(activation, in_place_change_after_forward_is_reported) {
    /* relu saves its output: writing it afterwards invalidates the backward */
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(4));
    nb_tensor *y = nb_relu(x);
    nb_tensor *loss = total(y);
    nb_data_mut(y)[0] = 5;
    cr_assert_eq(nb_backward(loss), -1);
    EXPECT_ERROR("relu", "modified in place");
}

Test(activation, null_propagates_without_message) {
    nb_clear_error();
    cr_assert_null(nb_tanh(NULL));
    cr_assert_null(nb_sigmoid(NULL));
    cr_assert_null(nb_relu(NULL));
    cr_assert_null(nb_leaky_relu(NULL, 0.1f));
    cr_assert_null(nb_elu(NULL, 1));
    cr_assert_null(nb_gelu(NULL));
    cr_assert_null(nb_softplus(NULL));
    cr_assert_null(nb_clamp(NULL, 0, 1));
    cr_assert_null(nb_clamp(NULL, 1, 0));
    cr_assert_null(nb_error(), "unexpected message: %s", nb_error());
}

/* ---- at the kinks: the subgradient PyTorch uses ---------------------------------------- */

Test(activation, kinks_take_pytorchs_subgradient) {
    /* relu at 0: 0 (threshold_backward passes only x > 0) */
    EXPECT_VALUES(grad_of_sum(f_relu, NULL, 3, (float[]){-0.0f, 0, 1}), 0, 0, 0, 1);
    /* leaky_relu at 0: the slope (x > 0 ? 1 : slope) */
    params lr = {.a = 0.1f};
    EXPECT_VALUES(grad_of_sum(f_leaky_relu, &lr, 2, (float[]){0, 1}), 0, 0.1f, 1);
    /* elu at 0: alpha exp(0) = alpha (x <= 0 takes the exponential side) */
    params el = {.a = 1.5f};
    EXPECT_VALUES(grad_of_sum(f_elu, &el, 2, (float[]){0, 1}), 0, 1.5f, 1);
    /* clamp to [-1, 1]: 1 at both bounds (min <= x <= max), 0 outside, 0 for NaN */
    params cl = {.a = -1, .b = 1};
    EXPECT_VALUES(grad_of_sum(f_clamp, &cl, 5, (float[]){-1, 1, -1.5f, 1.5f, NAN}), 0, 1, 1, 0, 0, 0);
    /* clamp with min == max: x at the bound gets 1, as in PyTorch */
    params eq = {.a = 2, .b = 2};
    EXPECT_VALUES(grad_of_sum(f_clamp, &eq, 3, (float[]){2, 1, 3}), 0, 1, 0, 0);
}
