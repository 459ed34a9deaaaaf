/* test_per_sample.c — per-sample gradients (nb_per_sample_grads).
 *
 * The outer-product rules (Dense, Conv2D, Embedding) are checked against a
 * gradient worked out by hand for a one-unit Linear, against finite
 * differences of each example's loss, and against the loop of one forward
 * and backward per example (opts.loop) on an MLP, a CNN with "same"
 * padding (an even kernel among them), stride and pooling, an embedding
 * model and a Dense over 3-D inputs; the mean of the per-example gradients
 * must be the batch gradient of the mean loss. Layers without a rule take
 * the loop.
 */
#include <string.h>

#include "test_util.h"

TestSuite(per_sample, NB_TEST_HOOKS);

static void expect_close(const nb_tensor *a, const nb_tensor *b, double tol) {
    cr_assert_not_null(a, "%s", nb_error() ? nb_error() : "");
    cr_assert_not_null(b, "%s", nb_error() ? nb_error() : "");
    cr_assert(nb_same_shape(a, b));
    for (int64_t i = 0; i < nb_numel(a); i++)
        cr_assert_float_eq(nb_data(a)[i], nb_data(b)[i], tol, "element %lld: %.8g and %.8g",
                           (long long)i, (double)nb_data(a)[i], (double)nb_data(b)[i]);
}

Test(per_sample, linear_by_hand) {
    nb_module *m = nb_linear(2, 1);
    nb_tensor **p = nb_module_parameters(m, &(int){0});
    memcpy(nb_data_mut(p[0]), (float[]){0.5f, -1}, sizeof(float) * 2);
    nb_data_mut(p[1])[0] = 0.25f;
    nb_tensor *x = nb_from_array(NB_SHAPE(2, 2), (float[]){1, 2, 3, 4});
    nb_tensor *y = nb_from_array(NB_SHAPE(2, 1), (float[]){0, 1}), *g[2], *losses;
    cr_assert_eq(nb_per_sample_grads(m, nb_mse_loss, x, y, g, &losses, NULL), 0, "%s", nb_error());
    /* r = w·x + b - y: 0.5 - 2 + 0.25 - 0 = -1.25 and 1.5 - 4 + 0.25 - 1 =
     * -3.25; the loss is r^2, dL/dw = 2 r x, dL/db = 2 r */
    EXPECT_SHAPE(g[0], 2, 2, 1);
    EXPECT_VALUES(g[0], 1e-6, -2.5f, -5, -19.5f, -26);
    EXPECT_SHAPE(g[1], 2, 1);
    EXPECT_VALUES(g[1], 1e-6, -2.5f, -6.5f);
    EXPECT_VALUES(losses, 1e-6, 1.5625f, 10.5625f);
    nb_module_free(m);
}

/* Fast path against the loop, and the mean against the batch gradient. */
static void check_model(nb_module *m, nb_reduced_loss_fn loss, nb_tensor *x, nb_tensor *y, double tol) {
    int count;
    nb_tensor **p = nb_module_parameters(m, &count);
    cr_assert(count <= 16);
    nb_tensor *fast[16], *loop[16], *lf, *ll, *batch[16];
    cr_assert_eq(nb_per_sample_grads(m, loss, x, y, fast, &lf, NULL), 0, "%s", nb_error());
    cr_assert_eq(nb_per_sample_grads(m, loss, x, y, loop, &ll, &(nb_per_sample_opts){.loop = true}), 0,
                 "%s", nb_error());
    expect_close(lf, ll, tol);
    nb_tensor *l = loss(nb_module_forward(m, x), y, NB_REDUCE_MEAN);
    cr_assert_eq(nb_grad(1, &l, NULL, count, p, batch, NULL), 0, "%s", nb_error());
    for (int i = 0; i < count; i++) {
        cr_assert_eq(nb_dim(fast[i], 0), nb_dim(x, 0));
        expect_close(fast[i], loop[i], tol);
        expect_close(nb_mean(fast[i], NB_AXES(0), false), batch[i], tol);
    }
}

Test(per_sample, mlp_matches_the_loop) {
    nb_module *m = nb_sequential(3, (nb_module *[]){nb_dense(5, "tanh", 3), nb_dense(4, "relu", 5),
                                                  nb_dense(2, NULL, 4)});
    check_model(m, nb_mse_loss, nb_randn(NB_SHAPE(6, 3)), nb_randn(NB_SHAPE(6, 2)), 1e-5);
    nb_module_free(m);
}

Test(per_sample, dense_over_a_sequence_sums_the_middle_axis) {
    nb_module *m = nb_sequential(2, (nb_module *[]){nb_dense(3, "gelu", 4), nb_dense(2, NULL, 3)});
    check_model(m, nb_mse_loss, nb_randn(NB_SHAPE(4, 5, 4)), nb_randn(NB_SHAPE(4, 5, 2)), 1e-5);
    nb_module_free(m);
}

Test(per_sample, cnn_matches_the_loop) {
    nb_module *m = nb_sequential(5, (nb_module *[]){
        /* an even kernel height: "same" pads one more row at the bottom */
        nb_conv2d_layer(3, 2, 3, &(nb_conv2d_layer_opts){.same = true, .activation = "relu",
                                                         .input_shape = {2}}),
        nb_max_pool2d_layer(2, 2, NULL),
        nb_conv2d_layer(2, 2, 2, &(nb_conv2d_layer_opts){.stride = {2, 1}, .no_bias = true,
                                                         .input_shape = {3}}),
        nb_flatten_layer(), nb_dense(3, NULL, 2 * 1 * 1)});
    cr_assert_not_null(m, "%s", nb_error());
    nb_tensor *labels = nb_from_array(NB_SHAPE(3), (float[]){0, 2, 1});
    check_model(m, nb_cross_entropy_loss, nb_randn(NB_SHAPE(3, 2, 5, 5)), labels, 1e-5);
    nb_module_free(m);
}

Test(per_sample, embedding_matches_the_loop) {
    /* tokens [N, T] -> [N, T, 3] -> [N, T·3] -> 2 logits; token 1 appears
     * twice in an example, so that rows add up */
    nb_module *m = nb_sequential(3, (nb_module *[]){nb_embedding_layer(5, 3), nb_flatten_layer(),
                                                  nb_dense(2, NULL, 4 * 3)});
    nb_tensor *tokens = nb_from_array(NB_SHAPE(3, 4), (float[]){1, 1, 0, 4, 2, 3, 4, 0, 4, 4, 4, 4});
    nb_tensor *labels = nb_from_array(NB_SHAPE(3), (float[]){1, 0, 1});
    check_model(m, nb_cross_entropy_loss, tokens, labels, 1e-5);
    nb_tensor *g[3];
    cr_assert_eq(nb_per_sample_grads(m, nb_cross_entropy_loss, tokens, labels, g, NULL, NULL), 0);
    EXPECT_SHAPE(g[0], 3, 5, 3);
    /* example 0 never uses token 2: its row is zero */
    for (int d = 0; d < 3; d++) cr_assert_eq(nb_data(g[0])[2 * 3 + d], 0.0f);
    nb_module_free(m);
}

Test(per_sample, layers_without_a_rule_take_the_loop) {
    nb_module *m = nb_sequential(3, (nb_module *[]){nb_dense(4, "tanh", 3), nb_layer_norm_layer(1, 1e-5f),
                                                  nb_dense(2, NULL, 4)});
    nb_tensor *x = nb_randn(NB_SHAPE(4, 3));
    nb_module_forward(m, x); /* builds the layer norm */
    check_model(m, nb_mse_loss, x, nb_randn(NB_SHAPE(4, 2)), 1e-5);
    nb_module_free(m);
}

Test(per_sample, a_frozen_first_layer) {
    nb_module *m = nb_sequential(2, (nb_module *[]){nb_dense(3, "tanh", 2), nb_dense(1, NULL, 3)});
    int count;
    nb_tensor **p = nb_module_parameters(m, &count);
    nb_set_requires_grad(p[0], false);
    nb_set_requires_grad(p[1], false);
    nb_tensor *fast[4], *loop[4], *x = nb_randn(NB_SHAPE(3, 2)), *y = nb_randn(NB_SHAPE(3, 1));
    cr_assert_eq(nb_per_sample_grads(m, nb_mse_loss, x, y, fast, NULL, NULL), 0, "%s", nb_error());
    cr_assert_eq(nb_per_sample_grads(m, nb_mse_loss, x, y, loop, NULL, &(nb_per_sample_opts){.loop = true}),
                 0, "%s", nb_error());
    cr_assert_null(fast[0]);
    cr_assert_null(fast[1]);
    expect_close(fast[2], loop[2], 1e-6);
    expect_close(fast[3], loop[3], 1e-6);
    nb_module_free(m);
}

/* doubles the layer's output */
static nb_tensor *double_output(nb_module *m, nb_tensor *x, nb_tensor *y, void *user) {
    (void)m, (void)x, (void)user;
    return nb_mul_scalar(y, 2.0f);
}

Test(per_sample, a_forward_hook_is_honoured) {
    nb_module *m = nb_sequential(2, (nb_module *[]){nb_dense(3, "tanh", 2), nb_dense(1, NULL, 3)});
    nb_tensor *x = nb_randn(NB_SHAPE(3, 2)), *y = nb_randn(NB_SHAPE(3, 1)), *plain[4], *hooked[4];
    cr_assert_eq(nb_per_sample_grads(m, nb_mse_loss, x, y, plain, NULL, NULL), 0, "%s", nb_error());
    cr_assert_gt(nb_module_register_forward_hook(nb_sequential_at(m, 0), double_output, NULL), 0);
    check_model(m, nb_mse_loss, x, y, 1e-5);
    cr_assert_eq(nb_per_sample_grads(m, nb_mse_loss, x, y, hooked, NULL, NULL), 0, "%s", nb_error());
    bool differ = false;
    for (int64_t i = 0; i < nb_numel(plain[2]); i++) differ |= nb_data(plain[2])[i] != nb_data(hooked[2])[i];
    cr_assert(differ, "the hook changed nothing");
    nb_module_free(m);
}

Test(per_sample, frozen_parameters_get_null) {
    nb_module *m = nb_linear(3, 2);
    nb_tensor **p = nb_module_parameters(m, &(int){0});
    nb_set_requires_grad(p[1], false);
    nb_tensor *g[2];
    for (int loop = 0; loop < 2; loop++) {
        cr_assert_eq(nb_per_sample_grads(m, nb_mse_loss, nb_randn(NB_SHAPE(2, 3)), nb_randn(NB_SHAPE(2, 2)),
                                         g, NULL, &(nb_per_sample_opts){.loop = loop}), 0, "%s", nb_error());
        EXPECT_SHAPE(g[0], 2, 3, 2);
        cr_assert_null(g[1]);
    }
    nb_module_free(m);
}

static nb_tensor *bad_loss(nb_tensor *pred, nb_tensor *target, nb_reduction r) {
    (void)r;
    return nb_mse_loss(pred, target, NB_REDUCE_MEAN);
}

Test(per_sample, errors) {
    nb_module *m = nb_linear(3, 2);
    nb_tensor *x = nb_randn(NB_SHAPE(4, 3)), *y = nb_randn(NB_SHAPE(4, 2)), *g[2] = {x, x};
    cr_assert_eq(nb_per_sample_grads(m, nb_mse_loss, x, nb_randn(NB_SHAPE(3, 2)), g, NULL, NULL), -1);
    EXPECT_ERROR("nb_per_sample_grads", "[4,3]", "[3,2]");
    cr_assert_eq(nb_per_sample_grads(m, bad_loss, x, y, g, NULL, NULL), -1);
    EXPECT_ERROR("nb_per_sample_grads", "without reduction", "[]");
    cr_assert_null(g[0]);
    cr_assert_eq(nb_per_sample_grads(m, NULL, x, y, g, NULL, NULL), -1);
    EXPECT_ERROR("nb_per_sample_grads", "loss");
    nb_clear_error();
    cr_assert_eq(nb_per_sample_grads(m, nb_mse_loss, NULL, y, g, NULL, NULL), -1);
    cr_assert_null(nb_error());
    nb_module *lazy = nb_sequential(1, (nb_module *[]){nb_dense(2, NULL, 0)});
    cr_assert_eq(nb_per_sample_grads(lazy, nb_mse_loss, x, y, g, NULL, NULL), -1);
    EXPECT_ERROR("nb_per_sample_grads", "run one forward first");
    nb_module_free(lazy);
    nb_module_free(m);
}

/* Example k's loss alone, for finite differences. */
static float example_loss(nb_module *m, nb_tensor *x, nb_tensor *y, int64_t k) {
    nb_scope_begin();
    bool was = nb_set_grad_enabled(false);
    nb_tensor *pred = nb_module_forward(m, nb_slice(x, 0, k, k + 1, 1));
    float l = nb_item(nb_mse_loss(pred, nb_slice(y, 0, k, k + 1, 1), NB_REDUCE_MEAN));
    nb_set_grad_enabled(was);
    nb_scope_end();
    return l;
}

Test(per_sample, against_finite_differences) {
    nb_module *m = nb_sequential(2, (nb_module *[]){nb_dense(4, "tanh", 3), nb_dense(2, "sigmoid", 4)});
    int count;
    nb_tensor **p = nb_module_parameters(m, &count), *g[4];
    nb_tensor *x = nb_randn(NB_SHAPE(3, 3)), *y = nb_randn(NB_SHAPE(3, 2));
    cr_assert_eq(nb_per_sample_grads(m, nb_mse_loss, x, y, g, NULL, NULL), 0, "%s", nb_error());
    const float h = 1e-2f;
    for (int i = 0; i < count; i++)
        for (int64_t e = 0; e < nb_numel(p[i]); e += 3)
            for (int64_t k = 0; k < 3; k++) {
                float orig = nb_data(p[i])[e];
                nb_data_mut(p[i])[e] = orig + h;
                double lp = example_loss(m, x, y, k);
                nb_data_mut(p[i])[e] = orig - h;
                double lm = example_loss(m, x, y, k);
                nb_data_mut(p[i])[e] = orig;
                double fd = (lp - lm) / (2.0 * h);
                float got = nb_data(g[i])[k * nb_numel(p[i]) + e];
                cr_assert_float_eq(got, fd, 2e-3, "parameter %d element %lld example %lld: %g, "
                                   "differences %g", i, (long long)e, (long long)k, (double)got, fd);
            }
    nb_module_free(m);
}
