/* test_layers.c — the modules of nn/module.c and the layers of nn/layers.c,
 * and the initialisers of nn/init.c.
 *
 * Every layer is gradchecked through the module API, the way the model uses
 * it: the function under test calls nb_module_forward on a module built
 * outside, and the inputs handed to gradcheck are the data and the module's
 * own parameters (leaves requiring grad, from nb_module_parameters), so the
 * finite differences move the very weights the forward reads. Dense is also
 * checked against values worked out by hand from weights written with
 * nb_data_mut; Dropout's mask is checked element by element; initialisers
 * by the statistics of a large tensor (bounds of the uniform ones, standard
 * deviation of the normal ones) and by their fans. Bad arguments return
 * NULL with a message naming the function, the layer and the shapes.
 */
#include <string.h>

#include "test_util.h"

TestSuite(layers, NB_TEST_HOOKS);

/* ---- helpers --------------------------------------------------------------------- */

/* The gradcheck function: the module passed as ctx applied to in[0]; the
 * remaining inputs are the module's parameters, read by the forward itself. */
static nb_tensor *f_module(nb_tensor *const *in, void *ctx) { return nb_module_forward(ctx, in[0]); }

/* Gradchecks m at x with respect to x and every parameter of m. */
static void gradcheck_module(nb_module *m, nb_tensor *x, bool second) {
    int n = 0;
    nb_tensor **params = nb_module_parameters(m, &n);
    cr_assert(n < 15, "too many parameters for one gradcheck");
    nb_tensor *inputs[16] = {x};
    for (int i = 0; i < n; i++) {
        cr_assert(nb_is_leaf(params[i]) && nb_requires_grad(params[i]),
                  "parameter %s is not a leaf requiring grad", nb_module_parameter_name(m, i));
        inputs[i + 1] = params[i];
    }
    nb_test_gradcheck(f_module, m, n + 1, inputs, second);
}

/* x W + b of a built Dense, without its activation (for kink checks). */
static nb_tensor *pre_activation(nb_module *dense, nb_tensor *x) {
    nb_tensor **p = nb_module_parameters(dense, NULL);
    return nb_add(nb_matmul(x, p[0]), p[1]);
}

/* A [rows, in] input for dense whose pre-activations all lie at least gap
 * from 0, where relu and its relatives have a kink: draws until one fits. */
static nb_tensor *input_away_from_kink(nb_module *dense, int64_t rows, int64_t in, float gap) {
    for (int attempt = 0; attempt < 1000; attempt++) {
        nb_tensor *x = nb_uniform(NULL, -1, 1, NB_SHAPE(rows, in));
        bool was = nb_set_grad_enabled(false);
        nb_tensor *z = pre_activation(dense, x);
        nb_set_grad_enabled(was);
        bool ok = true;
        for (int64_t i = 0; i < nb_numel(z); i++) ok = ok && fabsf(nb_data(z)[i]) >= gap;
        if (ok) return nb_set_requires_grad(x, true);
    }
    cr_assert_fail("no input away from the kink found");
    return NULL;
}

static nb_tensor *mat(int64_t r, int64_t c, const float *v) { return nb_from_array(NB_SHAPE(r, c), v); }

/* ---- Dense: values by hand ----------------------------------------------------------- */

/* W [3,2] = [[1,-1],[0.5,2],[-2,0]], b = [0.5,-1]; x = [[1,2,3],[-1,1,0.5]]
 * x W     = [[1+1-6, -1+4+0], [-1+0.5-1, 1+2+0]] = [[-4,3],[-1.5,3]]
 * x W + b = [[-3.5,2],[-1,2]] */
static nb_module *hand_dense(const char *activation) {
    nb_module *d = nb_dense(2, activation, 3);
    cr_assert_not_null(d, "%s", nb_error() ? nb_error() : "");
    int n = 0;
    nb_tensor **p = nb_module_parameters(d, &n);
    cr_assert_eq(n, 2);
    memcpy(nb_data_mut(p[0]), (const float[]){1, -1, 0.5f, 2, -2, 0}, 6 * sizeof(float));
    memcpy(nb_data_mut(p[1]), (const float[]){0.5f, -1}, 2 * sizeof(float));
    return d;
}

static nb_tensor *hand_x(void) { return mat(2, 3, (const float[]){1, 2, 3, -1, 1, 0.5f}); }

Test(layers, dense_values_by_hand) {
    nb_module *d = hand_dense("linear");
    nb_tensor *y = nb_module_forward(d, hand_x());
    EXPECT_SHAPE(y, 2, 2);
    EXPECT_VALUES(y, 1e-6, -3.5f, 2, -1, 2);
    nb_module_free(d);

    d = hand_dense("relu");
    EXPECT_VALUES(nb_module_forward(d, hand_x()), 1e-6, 0, 2, 0, 2);
    nb_module_free(d);

    /* sigmoid(-3.5) = 1/(1+e^3.5), sigmoid(2), sigmoid(-1) */
    d = hand_dense("sigmoid");
    EXPECT_VALUES(nb_module_forward(d, hand_x()), 1e-6, 0.029312231f, 0.88079708f, 0.26894142f,
                  0.88079708f);
    nb_module_free(d);

    /* softmax over each row: [e^-3.5, e^2] / (e^-3.5 + e^2) */
    d = hand_dense("softmax");
    EXPECT_VALUES(nb_module_forward(d, hand_x()), 1e-6, 0.0040701377f, 0.99592986f, 0.047425873f,
                  0.95257413f);
    nb_module_free(d);

    /* NULL activation means linear; nb_linear is a Dense without one */
    d = nb_dense(2, NULL, 3);
    cr_assert_not_null(d);
    nb_module_free(d);
}

Test(layers, dense_any_leading_axes) {
    /* x (2, 2, 3): the last axis is the features */
    nb_module *d = hand_dense("linear");
    nb_tensor *x = nb_from_array(NB_SHAPE(2, 1, 3), (const float[]){1, 2, 3, -1, 1, 0.5f});
    nb_tensor *y = nb_module_forward(d, x);
    EXPECT_SHAPE(y, 2, 1, 2);
    EXPECT_VALUES(y, 1e-6, -3.5f, 2, -1, 2);
    nb_module_free(d);
}

/* ---- Dense: gradients for every activation ----------------------------------------- */

static void check_dense(const char *activation, bool kink) {
    nb_module *d = nb_dense(4, activation, 3);
    cr_assert_not_null(d, "%s: %s", activation, nb_error() ? nb_error() : "");
    /* nonzero biases, so that their gradient is exercised away from 0 */
    nb_tensor **p = nb_module_parameters(d, NULL);
    nb_init_uniform(p[1], -0.5f, 0.5f, NULL);
    nb_tensor *x = kink ? input_away_from_kink(d, 5, 3, 0.05f) : nb_test_leaf(-1, 1, NB_SHAPE(5, 3));
    gradcheck_module(d, x, true);
    nb_module_free(d);
}

Test(layers, dense_linear_gradcheck) { check_dense("linear", false); }
Test(layers, dense_relu_gradcheck) { check_dense("relu", true); }
Test(layers, dense_sigmoid_gradcheck) { check_dense("sigmoid", false); }
Test(layers, dense_tanh_gradcheck) { check_dense("tanh", false); }
Test(layers, dense_softmax_gradcheck) { check_dense("softmax", false); }
Test(layers, dense_gelu_gradcheck) { check_dense("gelu", false); }
Test(layers, dense_elu_gradcheck) { check_dense("elu", true); }
Test(layers, dense_leaky_relu_gradcheck) { check_dense("leaky_relu", true); }
Test(layers, dense_softplus_gradcheck) { check_dense("softplus", false); }

Test(layers, dense_lazy_input_dim) {
    nb_module *d = nb_dense(3, "tanh", 0);
    cr_assert_not_null(d);
    int n = -1;
    nb_module_parameters(d, &n);
    cr_expect_eq(n, 0, "a lazy Dense has no parameters before its first input");
    cr_expect_eq(nb_module_num_weights(d), 0);

    /* built on the first forward, inside a scope and with grad on: the
     * parameters must still be kept leaves, owned by the module */
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(2, 5));
    nb_scope_begin();
    cr_assert_not_null(nb_module_forward(d, x), "%s", nb_error() ? nb_error() : "");
    nb_scope_end();
    nb_tensor **p = nb_module_parameters(d, &n);
    cr_assert_eq(n, 2);
    EXPECT_SHAPE(p[0], 5, 3);
    EXPECT_SHAPE(p[1], 3);
    cr_expect(nb_is_leaf(p[0]) && nb_requires_grad(p[0]));
    cr_expect_eq(nb_module_num_weights(d), 18);
    gradcheck_module(d, x, true);

    /* once built, the width is fixed */
    nb_clear_error();
    cr_expect_null(nb_module_forward(d, nb_zeros(NB_SHAPE(2, 4))));
    EXPECT_ERROR("Dense", "5 features", "[2,4]");
    nb_module_free(d);
}

/* ---- activation layers ---------------------------------------------------------------- */

Test(layers, activation_layers_values) {
    nb_tensor *x = nb_from_array(NB_SHAPE(4), (const float[]){-2, -0.5f, 0.5f, 3});
    nb_module *m = nb_relu_layer();
    EXPECT_VALUES(nb_module_forward(m, x), 1e-6, 0, 0, 0.5f, 3);
    nb_module_free(m);
    m = nb_tanh_layer();
    EXPECT_VALUES(nb_module_forward(m, x), 1e-6, -0.96402758f, -0.46211716f, 0.46211716f, 0.99505475f);
    nb_module_free(m);
    m = nb_sigmoid_layer();
    EXPECT_VALUES(nb_module_forward(m, x), 1e-6, 0.11920292f, 0.37754067f, 0.62245933f, 0.95257413f);
    nb_module_free(m);
    /* gelu(x) = x Phi(x) */
    m = nb_gelu_layer();
    EXPECT_VALUES(nb_module_forward(m, x), 1e-5, -0.045500264f, -0.15426877f, 0.34573123f, 2.9959502f);
    nb_module_free(m);
    /* Keras's activation "leaky_relu" has negative_slope 0.2 (0.3 is the
     * default of Keras's LeakyReLU layer, which nb_leaky_relu_layer spells
     * out); nb_dense's activation of that name is the same function */
    m = nb_activation("leaky_relu");
    EXPECT_VALUES(nb_module_forward(m, x), 1e-6, -0.4f, -0.1f, 0.5f, 3);
    nb_module_free(m);
    m = nb_dense(1, "leaky_relu", 1);
    nb_tensor **p = nb_module_parameters(m, NULL);
    nb_data_mut(p[0])[0] = 1;
    EXPECT_VALUES(nb_module_forward(m, nb_reshape(x, NB_SHAPE(4, 1))), 1e-6, -0.4f, -0.1f, 0.5f, 3);
    nb_module_free(m);
    m = nb_activation("linear");
    EXPECT_VALUES(nb_module_forward(m, x), 0, -2, -0.5f, 0.5f, 3);
    nb_module_free(m);
}

Test(layers, activation_layers_gradcheck) {
    const char *names[] = {"relu", "sigmoid", "tanh", "softmax", "gelu", "elu", "leaky_relu",
                           "softplus", "linear"};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        nb_module *m = nb_activation(names[k]);
        cr_assert_not_null(m, "%s", names[k]);
        /* values in [0.1, 2) on either side of 0, away from the kinks */
        nb_tensor *x = nb_uniform(NULL, 0.1f, 2, NB_SHAPE(3, 4));
        float *d = nb_data_mut(x);
        for (int64_t i = 0; i < nb_numel(x); i += 2) d[i] = -d[i];
        nb_set_requires_grad(x, true);
        gradcheck_module(m, x, true);
        nb_module_free(m);
    }
}

Test(layers, leaky_relu_layer) {
    nb_module *m = nb_leaky_relu_layer(0.2f);
    cr_assert_not_null(m);
    EXPECT_VALUES(nb_module_forward(m, nb_from_array(NB_SHAPE(3), (const float[]){-2, 0.5f, 3})),
                  1e-6, -0.4f, 0.5f, 3);
    nb_tensor *x = nb_uniform(NULL, 0.1f, 2, NB_SHAPE(3, 4));
    float *d = nb_data_mut(x);
    for (int64_t i = 1; i < nb_numel(x); i += 2) d[i] = -d[i];
    nb_set_requires_grad(x, true);
    gradcheck_module(m, x, true);
    nb_module_free(m);
}

Test(layers, softmax_layer) {
    /* axis 0 of [[0, ln 3], [0, 0]]: columns [1/2, 1/2] and [3/4, 1/4] */
    nb_module *m = nb_softmax_layer(0);
    nb_tensor *x = mat(2, 2, (const float[]){0, logf(3), 0, 0});
    EXPECT_VALUES(nb_module_forward(m, x), 1e-6, 0.5f, 0.75f, 0.5f, 0.25f);
    nb_tensor *leaf = nb_test_leaf(-2, 2, NB_SHAPE(3, 4));
    gradcheck_module(m, leaf, true);
    nb_module_free(m);

    /* axis -1: rows [1/4, 3/4] and [1/2, 1/2] */
    m = nb_softmax_layer(-1);
    EXPECT_VALUES(nb_module_forward(m, x), 1e-6, 0.25f, 0.75f, 0.5f, 0.5f);
    gradcheck_module(m, leaf, true);
    nb_module_free(m);
}

/* ---- Flatten ------------------------------------------------------------------------------ */

Test(layers, flatten_layer) {
    nb_module *m = nb_flatten_layer();
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(2, 3, 4));
    nb_tensor *y = nb_module_forward(m, x);
    EXPECT_SHAPE(y, 2, 12);
    cr_expect(memcmp(nb_data(y), nb_data(x), 24 * sizeof(float)) == 0, "row-major order kept");
    gradcheck_module(m, x, true);
    /* [N] and [N, d] pass through unchanged */
    EXPECT_SHAPE(nb_module_forward(m, nb_zeros(NB_SHAPE(5))), 5);
    EXPECT_SHAPE(nb_module_forward(m, nb_zeros(NB_SHAPE(5, 2))), 5, 2);
    nb_module_free(m);
}

/* ---- Sequential, names, counts, modes ------------------------------------------------------ */

Test(layers, sequential_gradcheck) {
    nb_module *layers[] = {nb_dense(4, "tanh", 3), nb_dense(3, "linear", 0), nb_softmax_layer(-1)};
    nb_module *seq = nb_sequential(3, layers);
    cr_assert_not_null(seq, "%s", nb_error() ? nb_error() : "");
    cr_expect_eq(nb_sequential_len(seq), 3);
    cr_expect_eq(nb_sequential_at(seq, 2), layers[2]);
    cr_expect_null(nb_sequential_at(seq, 3));
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(4, 3));
    /* builds the lazy second layer */
    nb_scope_begin();
    cr_assert_not_null(nb_module_forward(seq, x));
    nb_scope_end();
    int n = 0;
    nb_module_parameters(seq, &n);
    cr_assert_eq(n, 4);
    gradcheck_module(seq, x, true);
    nb_module_free(seq);
}

Test(layers, sequential_forward_is_the_composition) {
    nb_module *a = hand_dense("linear");
    nb_module *seq = nb_sequential(2, (nb_module *[]){a, nb_relu_layer()});
    cr_assert_not_null(seq);
    EXPECT_VALUES(nb_module_forward(seq, hand_x()), 1e-6, 0, 2, 0, 2);
    nb_module_free(seq);
}

Test(layers, parameter_names_and_counts) {
    nb_module *seq = nb_sequential(
        4, (nb_module *[]){nb_dense(4, "relu", 3), nb_dense(2, "linear", 4), nb_activation("relu"),
                           nb_dense(1, NULL, 2)});
    cr_assert_not_null(seq);
    int n = 0;
    nb_tensor **p = nb_module_parameters(seq, &n);
    cr_assert_eq(n, 6);
    const char *want[] = {"0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"};
    for (int i = 0; i < n; i++)
        cr_expect_str_eq(nb_module_parameter_name(seq, i), want[i], "parameter %d", i);
    cr_expect_null(nb_module_parameter_name(seq, 6));
    cr_expect_null(nb_module_parameter_name(seq, -1));
    EXPECT_SHAPE(p[0], 3, 4);
    EXPECT_SHAPE(p[2], 4, 2);
    EXPECT_SHAPE(p[5], 1);
    /* 3*4 + 4 + 4*2 + 2 + 2*1 + 1 */
    cr_expect_eq(nb_module_num_weights(seq), 29);
    /* a layer's own names have no prefix */
    cr_expect_str_eq(nb_module_parameter_name(nb_sequential_at(seq, 1), 0), "weight");
    cr_expect_eq(nb_module_num_weights(nb_sequential_at(seq, 2)), 0);

    /* appending a layer refreshes the list */
    cr_assert_eq(nb_sequential_add(seq, nb_dense(3, "linear", 1)), 0);
    nb_module_parameters(seq, &n);
    cr_expect_eq(n, 8);
    cr_expect_str_eq(nb_module_parameter_name(seq, 7), "4.bias");
    cr_expect_eq(nb_module_num_weights(seq), 29 + 3 + 3);
    nb_module_free(seq);
}

Test(layers, glorot_uniform_weights_and_zero_bias) {
    nb_module *d = nb_dense(300, "linear", 200);
    nb_tensor **p = nb_module_parameters(d, NULL);
    double limit = sqrt(6.0 / (200 + 300)), lo = 0, hi = 0, sum = 0, sq = 0;
    const float *w = nb_data(p[0]);
    for (int64_t i = 0; i < nb_numel(p[0]); i++) {
        cr_assert(fabs(w[i]) <= limit, "weight %lld is %g, beyond the Glorot limit %g", (long long)i,
                  (double)w[i], limit);
        lo = fmin(lo, w[i]);
        hi = fmax(hi, w[i]);
        sum += w[i];
        sq += (double)w[i] * w[i];
    }
    double n = (double)nb_numel(p[0]), mean = sum / n, var = sq / n - mean * mean;
    cr_expect(lo < -0.99 * limit && hi > 0.99 * limit, "range [%g, %g] of limit %g", lo, hi, limit);
    cr_expect(fabs(mean) < 0.01 * limit, "mean %g", mean);
    cr_expect(fabs(var / (limit * limit / 3) - 1) < 0.03, "variance %g, expected %g", var,
              limit * limit / 3);
    for (int64_t i = 0; i < nb_numel(p[1]); i++) cr_assert_eq(nb_data(p[1])[i], 0.0f);
    nb_module_free(d);
}

Test(layers, train_and_eval_mode_reach_every_child) {
    nb_module *inner = nb_dropout(0.5f);
    nb_module *seq = nb_sequential(2, (nb_module *[]){nb_dense(2, "relu", 2), inner});
    cr_assert(seq->training && inner->training, "modules start in training mode");
    nb_module_train(seq, false);
    cr_expect(!seq->training && !inner->training);
    nb_tensor *x = nb_ones(NB_SHAPE(4, 2));
    nb_tensor *y = nb_module_forward(inner, x);
    EXPECT_VALUES(y, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    nb_module_train(seq, true);
    cr_expect(inner->training);
    nb_module_free(seq);
}

/* ---- a module written with the module API ------------------------------------------------------ */

typedef struct scale_module {
    nb_module base;
    nb_tensor *s;
    nb_module *inner;
    int *destroyed;
} scale_module;

static nb_tensor *scale_forward(nb_module *m, nb_tensor *x) {
    scale_module *s = (scale_module *)m;
    return nb_mul(nb_module_forward(s->inner, x), s->s);
}
static void scale_destroy(nb_module *m) { (*((scale_module *)m)->destroyed)++; }
static const nb_module_type scale_type = {"Scale", scale_forward, scale_destroy};

Test(layers, user_module_params_children_and_destroy) {
    int destroyed = 0;
    scale_module *s = (scale_module *)nb_module_new(&scale_type, sizeof *s);
    cr_assert_not_null(s);
    s->destroyed = &destroyed;
    s->inner = nb_module_add_child(&s->base, "inner", nb_dense(2, "tanh", 3));
    s->s = nb_module_add_param(&s->base, "s", nb_full(NB_SHAPE(2), 1.5f));
    cr_assert_not_null(nb_module_ok(&s->base));
    const char *want[] = {"inner.weight", "inner.bias", "s"};
    int n = 0;
    nb_module_parameters(&s->base, &n);
    cr_assert_eq(n, 3);
    for (int i = 0; i < 3; i++) cr_expect_str_eq(nb_module_parameter_name(&s->base, i), want[i]);
    cr_expect(nb_requires_grad(s->s), "add_param marks the parameter as requiring grad");
    gradcheck_module(&s->base, nb_test_leaf(-1, 1, NB_SHAPE(2, 3)), true);
    nb_module_free(&s->base);
    cr_expect_eq(destroyed, 1);
}

Test(layers, failed_child_frees_the_parent) {
    int destroyed = 0;
    scale_module *s = (scale_module *)nb_module_new(&scale_type, sizeof *s);
    s->destroyed = &destroyed;
    nb_module_add_param(&s->base, "s", nb_ones(NB_SHAPE(2)));
    nb_clear_error();
    cr_expect_null(nb_module_add_child(&s->base, "inner", nb_dense(0, "tanh", 3)));
    EXPECT_ERROR("nb_dense", "units");
    cr_expect_null(nb_module_ok(&s->base), "nb_module_ok frees a module whose child failed");
    cr_expect_eq(destroyed, 1);

    nb_clear_error();
    cr_expect_null(nb_module_new(&scale_type, 3));
    EXPECT_ERROR("nb_module_new");
}

/* ---- Dropout -------------------------------------------------------------------------------- */

Test(layers, dropout_identity_in_eval_mode) {
    nb_module *d = nb_dropout(0.5f);
    nb_module_train(d, false);
    nb_tensor *x = nb_uniform(NULL, 1, 2, NB_SHAPE(10, 10));
    nb_tensor *y = nb_module_forward(d, x);
    cr_assert_not_null(y);
    cr_expect(memcmp(nb_data(x), nb_data(y), 100 * sizeof(float)) == 0);
    nb_module_free(d);

    /* rate 0 is the identity in training too */
    d = nb_dropout(0);
    y = nb_module_forward(d, x);
    cr_expect(memcmp(nb_data(x), nb_data(y), 100 * sizeof(float)) == 0);
    nb_module_free(d);
}

Test(layers, dropout_zeros_rate_and_scales_the_rest) {
    const float rate = 0.25f, keep = 1.0f / (1.0f - rate);
    nb_module *d = nb_dropout(rate);
    nb_tensor *x = nb_uniform(NULL, 1, 2, NB_SHAPE(100, 100));
    nb_tensor *y = nb_module_forward(d, x);
    cr_assert_not_null(y);
    EXPECT_SHAPE(y, 100, 100);
    int64_t zeros = 0;
    for (int64_t i = 0; i < 10000; i++) {
        float v = nb_data(y)[i];
        if (v == 0) zeros++;
        else cr_assert_eq(v, nb_data(x)[i] * keep, "element %lld: %.9g, expected x * 4/3 = %.9g",
                          (long long)i, (double)v, (double)(nb_data(x)[i] * keep));
    }
    /* 2500 expected, standard deviation sqrt(10000 * 0.25 * 0.75) = 43 */
    cr_expect(zeros > 2300 && zeros < 2700, "%lld of 10000 zeroed at rate 0.25", (long long)zeros);
    cr_expect_eq(keep, 4.0f / 3.0f);
    nb_module_free(d);
}

Test(layers, dropout_deterministic_with_a_seed) {
    nb_module *d = nb_dropout(0.5f);
    nb_tensor *x = nb_ones(NB_SHAPE(64));
    nb_manual_seed(7);
    nb_tensor *a = nb_module_forward(d, x);
    nb_manual_seed(7);
    nb_tensor *b = nb_module_forward(d, x);
    nb_manual_seed(8);
    nb_tensor *c = nb_module_forward(d, x);
    cr_expect(memcmp(nb_data(a), nb_data(b), 64 * sizeof(float)) == 0, "same seed, same mask");
    cr_expect(memcmp(nb_data(a), nb_data(c), 64 * sizeof(float)) != 0, "another seed, another mask");
    nb_module_free(d);
}

/* The forward with the mask fixed by a seed, so that every evaluation of
 * gradcheck draws the same mask. */
static nb_tensor *f_seeded_dropout(nb_tensor *const *in, void *ctx) {
    nb_manual_seed(11);
    return nb_module_forward(ctx, in[0]);
}

Test(layers, dropout_gradient_only_through_kept_elements) {
    nb_module *d = nb_dropout(0.4f);
    nb_tensor *x = nb_test_leaf(1, 2, NB_SHAPE(8, 8));
    nb_manual_seed(3);
    nb_tensor *y = nb_module_forward(d, x);
    cr_assert(nb_requires_grad(y));
    cr_assert_eq(nb_backward(nb_sum(y, NB_ALL, false)), 0, "%s", nb_error() ? nb_error() : "");
    const float *g = nb_data(nb_grad_of(x));
    float keep = 1.0f / (1.0f - 0.4f);
    int64_t kept = 0;
    for (int64_t i = 0; i < 64; i++) {
        bool dropped = nb_data(y)[i] == 0;
        cr_expect_eq(g[i], dropped ? 0.0f : keep, "element %lld", (long long)i);
        kept += !dropped;
    }
    cr_expect(kept > 0 && kept < 64);
    nb_test_gradcheck(f_seeded_dropout, d, 1, &x, true);
    nb_module_free(d);
}

/* ---- initialisers ------------------------------------------------------------------------------ */

typedef struct stats {
    double min, max, mean, std;
} stats;

static stats stats_of(const nb_tensor *t) {
    stats s = {INFINITY, -INFINITY, 0, 0};
    double sum = 0, sq = 0, n = (double)nb_numel(t);
    for (int64_t i = 0; i < nb_numel(t); i++) {
        double v = nb_data(t)[i];
        s.min = fmin(s.min, v);
        s.max = fmax(s.max, v);
        sum += v;
        sq += v * v;
    }
    s.mean = sum / n;
    s.std = sqrt(sq / n - s.mean * s.mean);
    return s;
}

/* Uniform in [-limit, limit]: inside the bounds, reaching close to both. */
static void expect_uniform(const nb_tensor *t, double limit, const char *who) {
    stats s = stats_of(t);
    cr_expect(s.min >= -limit && s.max <= limit, "%s: values [%g, %g] outside +-%g", who, s.min,
              s.max, limit);
    cr_expect(s.min < -0.98 * limit && s.max > 0.98 * limit, "%s: values [%g, %g] do not reach +-%g",
              who, s.min, s.max, limit);
    cr_expect(fabs(s.std / (limit / sqrt(3.0)) - 1) < 0.03, "%s: std %g, expected %g", who, s.std,
              limit / sqrt(3.0));
}

/* Normal with mean 0: the standard deviation within 3 percent. */
static void expect_normal(const nb_tensor *t, double std, const char *who) {
    stats s = stats_of(t);
    cr_expect(fabs(s.std / std - 1) < 0.03, "%s: std %g, expected %g", who, s.std, std);
    cr_expect(fabs(s.mean) < 0.03 * std, "%s: mean %g", who, s.mean);
    /* a normal, not a uniform: about 4.6% of the values lie beyond 2 std */
    int64_t beyond = 0;
    for (int64_t i = 0; i < nb_numel(t); i++) beyond += fabs(nb_data(t)[i]) > 2 * std;
    cr_expect(beyond > 0.035 * (double)nb_numel(t) && beyond < 0.057 * (double)nb_numel(t),
              "%s: %lld values beyond 2 std", who, (long long)beyond);
}

Test(layers, fan_based_initialisers) {
    /* a [in, out] = [200, 300] kernel: fan_in 200, fan_out 300 */
    nb_tensor *t = nb_empty(NB_SHAPE(200, 300));
    cr_assert_eq(nb_init_glorot_uniform(t, NULL), 0);
    expect_uniform(t, sqrt(6.0 / 500), "glorot_uniform");
    cr_assert_eq(nb_init_he_uniform(t, NULL), 0);
    expect_uniform(t, sqrt(6.0 / 200), "he_uniform");
    cr_assert_eq(nb_init_lecun_uniform(t, NULL), 0);
    expect_uniform(t, sqrt(3.0 / 200), "lecun_uniform");
    cr_assert_eq(nb_init_glorot_normal(t, NULL), 0);
    expect_normal(t, sqrt(2.0 / 500), "glorot_normal");
    cr_assert_eq(nb_init_he_normal(t, NULL), 0);
    expect_normal(t, sqrt(2.0 / 200), "he_normal");
    cr_assert_eq(nb_init_lecun_normal(t, NULL), 0);
    expect_normal(t, sqrt(1.0 / 200), "lecun_normal");

    /* the transposed kernel has the fans swapped: He and LeCun read fan_in */
    nb_tensor *u = nb_empty(NB_SHAPE(300, 200));
    cr_assert_eq(nb_init_he_uniform(u, NULL), 0);
    expect_uniform(u, sqrt(6.0 / 300), "he_uniform [300,200]");
    cr_assert_eq(nb_init_lecun_normal(u, NULL), 0);
    expect_normal(u, sqrt(1.0 / 300), "lecun_normal [300,200]");
}

Test(layers, initialiser_fans_of_a_conv_kernel) {
    /* [3, 3, 16, 32]: receptive field 9, fan_in 144, fan_out 288 */
    nb_tensor *t = nb_empty(NB_SHAPE(3, 3, 16, 32));
    cr_assert_eq(nb_init_he_uniform(t, NULL), 0);
    expect_uniform(t, sqrt(6.0 / 144), "he_uniform conv");
    cr_assert_eq(nb_init_glorot_uniform(t, NULL), 0);
    expect_uniform(t, sqrt(6.0 / (144 + 288)), "glorot_uniform conv");
}

Test(layers, plain_initialisers) {
    nb_tensor *t = nb_empty(NB_SHAPE(200, 300));
    cr_assert_eq(nb_init_uniform(t, -2, 3, NULL), 0);
    stats s = stats_of(t);
    cr_expect(s.min >= -2 && s.max < 3 && s.min < -1.99 && s.max > 2.99, "[%g, %g]", s.min, s.max);
    cr_expect(fabs(s.mean - 0.5) < 0.02, "mean %g", s.mean);
    cr_assert_eq(nb_init_normal(t, 1, 2, NULL), 0);
    s = stats_of(t);
    cr_expect(fabs(s.mean - 1) < 0.03 && fabs(s.std - 2) < 0.04, "mean %g, std %g", s.mean, s.std);

    nb_tensor *c = nb_empty(NB_SHAPE(2, 2));
    cr_assert_eq(nb_init_constant(c, 2.5f), 0);
    EXPECT_VALUES(c, 0, 2.5f, 2.5f, 2.5f, 2.5f);
    cr_assert_eq(nb_init_zeros(c), 0);
    EXPECT_VALUES(c, 0, 0, 0, 0, 0);
    cr_assert_eq(nb_init_ones(c), 0);
    EXPECT_VALUES(c, 0, 1, 1, 1, 1);
}

Test(layers, initialisers_follow_their_generator) {
    nb_generator g1, g2;
    nb_generator_seed(&g1, 5);
    nb_generator_seed(&g2, 5);
    nb_tensor *a = nb_empty(NB_SHAPE(4, 6)), *b = nb_empty(NB_SHAPE(4, 6));
    nb_manual_seed(1);
    nb_init_glorot_normal(a, &g1);
    nb_manual_seed(2); /* the default generator is not used */
    nb_init_glorot_normal(b, &g2);
    cr_expect(memcmp(nb_data(a), nb_data(b), 24 * sizeof(float)) == 0);
    /* with NULL, the default generator: a seed repeats it */
    nb_manual_seed(9);
    nb_init_he_uniform(a, NULL);
    nb_manual_seed(9);
    nb_init_he_uniform(b, NULL);
    cr_expect(memcmp(nb_data(a), nb_data(b), 24 * sizeof(float)) == 0);
}

Test(layers, initialiser_bad_input) {
    nb_tensor *t = nb_zeros(NB_SHAPE(2, 2));
    nb_clear_error();
    cr_expect_eq(nb_init_uniform(t, 1, -1, NULL), -1);
    EXPECT_ERROR("nb_init_uniform", "[1, -1)");
    EXPECT_VALUES(t, 0, 0, 0, 0, 0);
    nb_clear_error();
    cr_expect_eq(nb_init_normal(t, 0, -1, NULL), -1);
    EXPECT_ERROR("nb_init_normal", "std");
    /* a computed tensor cannot be initialised: it is not a parameter */
    nb_tensor *leaf = nb_test_leaf(-1, 1, NB_SHAPE(2));
    nb_tensor *y = nb_mul_scalar(leaf, 2);
    nb_clear_error();
    cr_expect_eq(nb_init_he_normal(y, NULL), -1);
    EXPECT_ERROR("nb_init_normal", "cannot initialise", "mul");
    /* NULL: -1, no message */
    nb_clear_error();
    cr_expect_eq(nb_init_glorot_uniform(NULL, NULL), -1);
    cr_expect_eq(nb_init_zeros(NULL), -1);
    cr_expect_null(nb_error());
}

/* ---- bad input ------------------------------------------------------------------------------------ */

Test(layers, bad_layer_arguments) {
    nb_clear_error();
    cr_expect_null(nb_dense(3, "swish", 2));
    EXPECT_ERROR("nb_dense", "unknown activation 'swish'");
    nb_clear_error();
    cr_expect_null(nb_activation("nope"));
    EXPECT_ERROR("nb_activation", "'nope'");
    nb_clear_error();
    cr_expect_null(nb_dense(0, "relu", 2));
    EXPECT_ERROR("nb_dense", "units", "0");
    nb_clear_error();
    cr_expect_null(nb_dense(2, "relu", -1));
    EXPECT_ERROR("nb_dense", "input_dim", "-1");
    nb_clear_error();
    cr_expect_null(nb_linear(0, 3));
    EXPECT_ERROR("nb_linear", "in_features");
    nb_clear_error();
    cr_expect_null(nb_dropout(1));
    EXPECT_ERROR("nb_dropout", "rate", "1");
    nb_clear_error();
    cr_expect_null(nb_dropout(-0.1f));
    EXPECT_ERROR("nb_dropout", "rate");
    nb_clear_error();
    cr_expect_null(nb_dropout(NAN));
    EXPECT_ERROR("nb_dropout", "rate");
}

Test(layers, dense_fed_the_wrong_width) {
    nb_module *d = nb_dense(4, "relu", 3);
    nb_clear_error();
    cr_expect_null(nb_module_forward(d, nb_zeros(NB_SHAPE(2, 5))));
    EXPECT_ERROR("Dense(4)", "3 features", "[2,5]");
    nb_clear_error();
    cr_expect_null(nb_module_forward(d, nb_scalar(1)));
    EXPECT_ERROR("Dense", "[]");
    /* NULL in, NULL out, no message */
    nb_clear_error();
    cr_expect_null(nb_module_forward(d, NULL));
    cr_expect_null(nb_module_forward(NULL, nb_zeros(NB_SHAPE(2, 3))));
    cr_expect_null(nb_error());
    /* a Sequential stops at the failing layer and reports it */
    nb_module *seq = nb_sequential(2, (nb_module *[]){d, nb_dense(2, "linear", 5)});
    cr_assert_not_null(seq);
    nb_clear_error();
    cr_expect_null(nb_module_forward(seq, nb_zeros(NB_SHAPE(2, 3))));
    EXPECT_ERROR("Dense(2)", "5 features", "[2,4]");
    nb_module_free(seq);
}

Test(layers, bad_sequential) {
    /* a NULL layer (its constructor failed) frees the others: no leak, and
     * the constructor's message stays */
    nb_clear_error();
    nb_module *seq = nb_sequential(3, (nb_module *[]){nb_dense(2, "relu", 2), nb_dense(0, "relu", 0),
                                                       nb_relu_layer()});
    cr_expect_null(seq);
    EXPECT_ERROR("nb_dense", "units");
    nb_clear_error();
    cr_expect_null(nb_sequential(-1, NULL));
    EXPECT_ERROR("nb_sequential");
    /* an empty Sequential is the identity */
    seq = nb_sequential(0, NULL);
    cr_assert_not_null(seq);
    nb_tensor *x = nb_ones(NB_SHAPE(2));
    cr_expect_eq(nb_module_forward(seq, x), x);
    /* nb_sequential_add on something else: refused, the layer freed */
    nb_module *d = nb_dense(2, "relu", 2);
    nb_clear_error();
    cr_expect_eq(nb_sequential_add(d, nb_relu_layer()), -1);
    EXPECT_ERROR("nb_sequential_add", "Dense");
    cr_expect_eq(nb_sequential_len(d), 0);
    cr_expect_eq(nb_sequential_add(seq, NULL), -1);
    nb_module_free(d);
    nb_module_free(seq);
}

static nb_tensor *identity_forward(nb_module *m, nb_tensor *x) {
    (void)m;
    return x;
}

Test(layers, a_module_refuses_duplicates_and_non_leaf_parameters) {
    nb_module *d = nb_dense(4, "relu", 4);
    cr_assert_null(nb_sequential(2, (nb_module *[]){d, d}));
    EXPECT_ERROR("nb_sequential", "layer 1", "already part of this module");

    static const nb_module_type plain = {"Plain", identity_forward, NULL};
    nb_module *m = nb_module_new(&plain, sizeof(nb_module));
    nb_tensor *w = nb_module_add_param(m, "w", nb_randn(NB_SHAPE(2, 3)));
    cr_assert_not_null(w);
    cr_assert_null(nb_module_add_param(m, "wt", nb_transpose(w, 0, 1)));
    EXPECT_ERROR("nb_module_add_param", "'wt'", "leaf");
    cr_assert_null(nb_module_add_param(m, "w2", w));
    EXPECT_ERROR("nb_module_add_param", "already a parameter");
    cr_assert_null(nb_module_ok(m), "a module whose parameter was refused is freed");
}

/* ---- allocation failures -------------------------------------------------------------------
 * fail_nth fails the n-th allocation from now on (1 = the next one) and
 * counts every allocation asked for, failed or not. */

/* ---- the parameter list a module lends -------------------------------------------------------- */

Test(layers, parameters_stay_valid_until_the_module_changes) {
    nb_module *net = nb_sequential(2, (nb_module *[]){nb_dense(3, "relu", 2), nb_dense(1, NULL, 3)});
    cr_assert_not_null(net);
    int n = 0;
    nb_tensor **p = nb_module_parameters(net, &n);
    cr_assert_eq(n, 4);
    /* a module made elsewhere changes nothing under net: asking net again
     * must neither rebuild nor move the array it lent */
    nb_module *other = nb_dense(2, NULL, 2);
    nb_test_alloc c = {0};
    nb_set_alloc_hook(nb_test_alloc_hook, &c);
    int64_t weights = nb_module_num_weights(net);
    nb_tensor **again = nb_module_parameters(net, &n);
    nb_set_alloc_hook(NULL, NULL);
    cr_expect_eq(c.calls, 0, "asking an unchanged module for its parameters allocated %lld times", (long long)c.calls);
    cr_expect_eq(again, p);
    cr_expect_eq(weights, 2 * 3 + 3 + 3 * 1 + 1);
    cr_expect_eq(nb_numel(p[0]), 6);
    nb_module_free(other);
    nb_module_free(net);
}

Test(layers, a_change_below_a_module_refreshes_its_list) {
    /* outer = Sequential(inner = Sequential(lazy Dense), lazy Dense): the
     * lazy layers build themselves on the first forward, two levels down */
    nb_module *inner = nb_sequential(1, (nb_module *[]){nb_dense(3, "tanh", 0)});
    nb_module *outer = nb_sequential(2, (nb_module *[]){inner, nb_dense(1, NULL, 0)});
    cr_assert_not_null(outer);
    int n = -1;
    nb_module_parameters(outer, &n);
    cr_expect_eq(n, 0);
    cr_assert_not_null(nb_module_forward(outer, nb_ones(NB_SHAPE(2, 4))), "%s", nb_error());
    nb_module_parameters(outer, &n);
    cr_expect_eq(n, 4);
    cr_expect_str_eq(nb_module_parameter_name(outer, 0), "0.0.weight");
    cr_expect_str_eq(nb_module_parameter_name(outer, 3), "1.bias");
    cr_expect_eq(nb_module_num_weights(outer), 4 * 3 + 3 + 3 + 1);
    /* a layer appended to the inner Sequential shows in the outer list */
    cr_assert_eq(nb_sequential_add(inner, nb_dense(3, NULL, 3)), 0);
    nb_module_parameters(outer, &n);
    cr_expect_eq(n, 6);
    cr_expect_str_eq(nb_module_parameter_name(outer, 3), "0.1.bias");
    nb_module_free(outer);
}

/* ---- one parent per module --------------------------------------------------------------------- */

Test(layers, a_module_belongs_to_one_parent) {
    nb_module *r = nb_relu_layer();
    nb_module *a = nb_sequential(1, &r);
    cr_assert_not_null(a);
    nb_clear_error();
    cr_expect_null(nb_sequential(1, &r));
    EXPECT_ERROR("nb_sequential", "layer 0", "already belongs to another module");
    /* a half-made container frees what it adopted, not the refused layer */
    nb_clear_error();
    cr_expect_null(nb_sequential(3, (nb_module *[]){nb_dense(2, "relu", 2), r, nb_dense(1, NULL, 2)}));
    EXPECT_ERROR("nb_sequential", "layer 1", "already belongs");
    /* and a NULL layer after it frees the others but not r */
    nb_clear_error();
    cr_expect_null(nb_sequential(2, (nb_module *[]){r, NULL}));

    nb_module *b = nb_sequential(0, NULL);
    nb_clear_error();
    cr_expect_eq(nb_sequential_add(b, r), -1);
    EXPECT_ERROR("nb_sequential_add", "already belongs");
    cr_expect_eq(nb_sequential_len(b), 0);
    nb_clear_error();
    cr_expect_null(nb_module_add_child(b, "r", r));
    EXPECT_ERROR("nb_module_add_child", "'r'", "already belongs");
    cr_expect_null(nb_module_ok(b), "the parent that was refused a child is freed");

    nb_model *model = nb_model_sequential();
    nb_clear_error();
    cr_expect_eq(nb_model_add(model, r), -1);
    EXPECT_ERROR("nb_model_add", "already belongs");
    nb_model_free(model);
    nb_clear_error();
    cr_expect_null(nb_model_from_module(r));
    EXPECT_ERROR("nb_model_from_module", "already belongs");
    /* freeing a module that belongs to another is refused: its parent frees it */
    nb_clear_error();
    nb_module_free(r);
    EXPECT_ERROR("nb_module_free", "belongs to");

    /* a module cannot be put inside one of its own descendants */
    nb_module *inner = nb_sequential(0, NULL);
    nb_module *outer = nb_sequential(1, &inner);
    cr_assert_not_null(outer);
    nb_clear_error();
    cr_expect_eq(nb_sequential_add(inner, outer), -1);
    EXPECT_ERROR("nb_sequential_add", "contains the module it is being added to");
    cr_expect_eq(nb_sequential_len(inner), 0);
    nb_module_free(outer);

    /* r is still a's, and works */
    cr_expect_eq(nb_sequential_at(a, 0), r);
    EXPECT_VALUES(nb_module_forward(a, nb_from_array(NB_SHAPE(2), (const float[]){-1, 2})), 0, 0, 2);
    nb_module_free(a);
}

/* ---- constructors either succeed whole or fail whole ------------------------------------------ */

/* Refuses allocations over 1 GiB, as a machine without 4 TiB would (and
 * without asking the sanitizers' allocators, which abort on such sizes). */
static bool at_most_a_gigabyte(size_t size, void *user) {
    (void)user;
    return size <= ((size_t)1 << 30);
}

Test(layers, dense_too_large_is_refused_whole) {
    nb_clear_error();
    nb_set_alloc_hook(at_most_a_gigabyte, NULL);
    nb_module *d = nb_dense(1 << 20, NULL, 1 << 20);
    nb_set_alloc_hook(NULL, NULL);
    cr_expect_null(d, "a Dense without its kernel is not returned");
    EXPECT_ERROR("nb_dense", "out of memory", "[1048576,1048576]");
    nb_module_free(d);
    /* a lazy Dense that cannot build itself stays unbuilt and says so */
    d = nb_dense(1 << 20, NULL, 0);
    cr_assert_not_null(d);
    nb_clear_error();
    nb_set_alloc_hook(at_most_a_gigabyte, NULL);
    nb_tensor *y = nb_module_forward(d, nb_ones(NB_SHAPE(1, 1 << 20)));
    nb_set_alloc_hook(NULL, NULL);
    cr_expect_null(y);
    EXPECT_ERROR("Dense(1048576)", "out of memory");
    int n = -1;
    nb_module_parameters(d, &n);
    cr_expect_eq(n, 0, "no half-built parameters");
    cr_expect_not_null(nb_module_forward(d, nb_ones(NB_SHAPE(1, 1))), "%s", nb_error());
    nb_module_parameters(d, &n);
    cr_expect_eq(n, 2, "it builds for the next input that fits in memory");
    nb_module_free(d);
}

typedef nb_module *(*make_fn)(void);
static nb_module *make_dense(void) { return nb_dense(3, "relu", 2); }
static nb_module *make_linear(void) { return nb_linear(2, 3); }
static nb_module *make_activation(void) { return nb_activation("tanh"); }
static nb_module *make_relu(void) { return nb_relu_layer(); }
static nb_module *make_leaky(void) { return nb_leaky_relu_layer(0.1f); }
static nb_module *make_softmax(void) { return nb_softmax_layer(-1); }
static nb_module *make_dropout(void) { return nb_dropout(0.5f); }
static nb_module *make_flatten(void) { return nb_flatten_layer(); }
static nb_module *make_sequential(void) {
    return nb_sequential(3, (nb_module *[]){nb_dense(3, "relu", 2), nb_relu_layer(), nb_dense(2, NULL, 0)});
}

Test(layers, constructors_fail_whole_when_memory_runs_out) {
    const struct {
        const char *who;
        make_fn make;
        int nparams;
    } cases[] = {{"nb_dense", make_dense, 2},           {"nb_linear", make_linear, 2},
                 {"nb_activation", make_activation, 0}, {"nb_relu_layer", make_relu, 0},
                 {"nb_leaky_relu_layer", make_leaky, 0}, {"nb_softmax_layer", make_softmax, 0},
                 {"nb_dropout", make_dropout, 0},       {"nb_flatten_layer", make_flatten, 0},
                 {"", make_sequential, 2}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        bool succeeded = false;
        for (long fail = 1; fail < 200 && !succeeded; fail++) {
            int64_t live = nb_live_tensors();
            nb_test_alloc c = {.fail_at = fail};
            nb_clear_error();
            nb_set_alloc_hook(nb_test_alloc_hook, &c);
            nb_module *m = cases[k].make();
            nb_set_alloc_hook(NULL, NULL);
            if (!m) {
                const char *who = cases[k].who[0] ? cases[k].who : NULL;
                cr_assert_not_null(nb_error(), "case %zu, allocation %ld: NULL without a message", k, fail);
                /* the Sequential's layers are made by their own constructors,
                 * which report in their own name */
                if (who) EXPECT_ERROR(who, "out of memory");
                else EXPECT_ERROR("out of memory");
                cr_expect_eq(nb_live_tensors(), live, "case %zu, allocation %ld: tensors left behind", k, fail);
                continue;
            }
            succeeded = true;
            int n = -1;
            nb_module_parameters(m, &n);
            cr_expect_eq(n, cases[k].nparams, "case %zu: a module that was made is whole", k);
            nb_module_free(m);
        }
        cr_expect(succeeded, "case %zu never succeeded", k);
    }
}

Test(layers, a_parameter_belongs_to_one_module) {
    /* two modules that both held w would both release it when freed */
    static const nb_module_type plain = {"Plain", identity_forward, NULL};
    int64_t before = nb_live_tensors();
    nb_module *a = nb_module_new(&plain, sizeof(nb_module));
    nb_module *b = nb_module_new(&plain, sizeof(nb_module));
    nb_tensor *w = nb_module_add_param(a, "w", nb_randn(NB_SHAPE(2, 3)));
    cr_assert_not_null(w, "%s", nb_error());
    nb_clear_error();
    cr_assert_null(nb_module_add_param(b, "w", w));
    EXPECT_ERROR("nb_module_add_param", "'w'", "another module");
    cr_assert_null(nb_module_ok(b), "a module whose parameter was refused is freed");
    cr_assert_eq(nb_live_tensors(), before + 1);
    nb_clear_error();
    nb_release(w);
    EXPECT_ERROR("nb_release", "container");
    nb_module_free(a);
    cr_assert_eq(nb_live_tensors(), before);
}
