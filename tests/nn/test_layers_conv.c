/* test_layers_conv.c — the layers of nn/layers_conv.c (Conv2D, pooling,
 * BatchNormalization, LayerNormalization, Embedding), module buffers, and
 * the Fashion-MNIST CNN written with nb_model_add.
 *
 * Each layer is checked against the op it wraps (weights read back from
 * the module), gradchecked through the module API with its own parameters
 * as inputs (first and second order), built lazily from its first input,
 * and refused with a message naming it on a wrong input. Batch norm's
 * running statistics are buffers: listed by nb_module_buffers, absent from
 * the parameters, updated in training mode only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

TestSuite(layers_conv, NB_TEST_HOOKS);

static nb_tensor *f_module(nb_tensor *const *in, void *ctx) { return nb_module_forward(ctx, in[0]); }

/* Gradchecks m at x with respect to x and every parameter of m. */
static void gradcheck_module(nb_module *m, nb_tensor *x, bool second) {
    int n = 0;
    nb_tensor **params = nb_module_parameters(m, &n);
    cr_assert(n < 15);
    nb_tensor *inputs[16] = {x};
    for (int i = 0; i < n; i++) inputs[i + 1] = params[i];
    nb_test_gradcheck(f_module, m, n + 1, inputs, second);
}

/* ---- Conv2D ------------------------------------------------------------------------ */

Test(layers_conv, conv2d_builds_on_first_input_and_matches_the_op) {
    nb_module *c = nb_conv2d_layer(4, 3, 2, &(nb_conv2d_layer_opts){.stride = {2, 1}, .padding = {1, 0},
                                                                    .activation = "relu"});
    cr_assert_not_null(c, "%s", nb_error());
    int n;
    nb_module_parameters(c, &n);
    cr_assert_eq(n, 0, "nothing built before the first input");
    nb_tensor *x = nb_randn(NB_SHAPE(2, 3, 5, 6));
    nb_tensor *y = nb_module_forward(c, x);
    EXPECT_SHAPE(y, 2, 4, 3, 5);
    nb_tensor **p = nb_module_parameters(c, &n);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(nb_module_parameter_name(c, 0), "weight");
    EXPECT_SHAPE(p[0], 4, 3, 3, 2);
    EXPECT_SHAPE(p[1], 4);
    nb_data_mut(p[1])[2] = 0.5f;
    y = nb_module_forward(c, x);
    nb_tensor *want = nb_relu(nb_conv2d(x, p[0], p[1], &(nb_conv2d_opts){.stride = {2, 1}, .padding = {1, 0}}));
    cr_assert_eq(nb_numel(y), nb_numel(want));
    for (int64_t i = 0; i < nb_numel(y); i++) cr_assert_eq(nb_data(y)[i], nb_data(want)[i]);
    nb_module_free(c);
}

Test(layers_conv, conv2d_init_is_keras_glorot_uniform_with_zero_bias) {
    /* fan_in = 16/2·3·3 = 72, fan_out = 64·3·3 = 576: limit sqrt(6/648) */
    nb_module *c = nb_conv2d_layer(64, 3, 3, &(nb_conv2d_layer_opts){.groups = 2, .input_shape = {16}});
    cr_assert_not_null(c, "%s", nb_error());
    int n;
    nb_tensor **p = nb_module_parameters(c, &n);
    EXPECT_SHAPE(p[0], 64, 8, 3, 3);
    double limit = sqrt(6.0 / 648), sq = 0, mx = 0;
    const float *w = nb_data(p[0]);
    for (int64_t i = 0; i < nb_numel(p[0]); i++) {
        sq += (double)w[i] * w[i];
        mx = fmax(mx, fabs(w[i]));
    }
    cr_assert(mx <= limit && mx > 0.95 * limit, "max |w| %g, limit %g", mx, limit);
    double sd = sqrt(sq / (double)nb_numel(p[0]));
    cr_assert(fabs(sd - limit / sqrt(3)) < 0.03 * limit, "sd %g, want %g", sd, limit / sqrt(3));
    for (int64_t i = 0; i < 64; i++) cr_assert_eq(nb_data(p[1])[i], 0.0f);
    nb_module_free(c);
    c = nb_conv2d_layer(8, 3, 3, &(nb_conv2d_layer_opts){.no_bias = true, .input_shape = {2}});
    nb_module_parameters(c, &n);
    cr_assert_eq(n, 1, "no bias");
    cr_assert_eq(nb_module_num_weights(c), 8 * 2 * 9);
    nb_module_free(c);
}

Test(layers_conv, conv2d_same_padding) {
    nb_module *c = nb_conv2d_layer(2, 3, 5, &(nb_conv2d_layer_opts){.same = true});
    EXPECT_SHAPE(nb_module_forward(c, nb_randn(NB_SHAPE(1, 1, 7, 6))), 1, 2, 7, 6);
    nb_module_free(c);
    /* stride 2: ceil(7/2) = 4, padding 2 split 1 and 1 */
    c = nb_conv2d_layer(2, 3, 3, &(nb_conv2d_layer_opts){.same = true, .stride = {2, 2}});
    EXPECT_SHAPE(nb_module_forward(c, nb_randn(NB_SHAPE(1, 1, 7, 7))), 1, 2, 4, 4);
    nb_module_free(c);
    /* stride 2 on an even side: ceil(4/2) = 2 needs 1 row, at the bottom */
    c = nb_conv2d_layer(2, 3, 3, &(nb_conv2d_layer_opts){.same = true, .stride = {2, 2}});
    EXPECT_SHAPE(nb_module_forward(c, nb_randn(NB_SHAPE(1, 1, 4, 4))), 1, 2, 2, 2);
    nb_module_free(c);
}

/* An even kernel needs an odd padding: TensorFlow puts the extra row and
 * column at the bottom and right. Kernel [[1, 10], [100, 1000]] on 1..9
 * reads each output's 2x2 window as decimal digits, zeros past the edge. */
Test(layers_conv, conv2d_same_padding_even_kernel) {
    nb_module *c = nb_conv2d_layer(1, 2, 2, &(nb_conv2d_layer_opts){.same = true});
    nb_tensor *x = nb_test_leaf(0, 1, NB_SHAPE(1, 1, 3, 3));
    float *px = nb_data_mut(x);
    for (int i = 0; i < 9; i++) px[i] = (float)(i + 1);
    cr_assert_not_null(nb_module_forward(c, x)); /* build */
    int n;
    nb_tensor **p = nb_module_parameters(c, &n);
    memcpy(nb_data_mut(p[0]), (float[]){1, 10, 100, 1000}, 4 * sizeof(float));
    nb_tensor *y = nb_module_forward(c, x);
    EXPECT_SHAPE(y, 1, 1, 3, 3);
    EXPECT_VALUES(y, 0, 5421, 6532, 603, 8754, 9865, 906, 87, 98, 9);
    nb_module_free(c);
    c = nb_conv2d_layer(2, 2, 2, &(nb_conv2d_layer_opts){.same = true, .activation = "tanh"});
    x = nb_test_leaf(-1, 1, NB_SHAPE(2, 2, 3, 4));
    EXPECT_SHAPE(nb_module_forward(c, x), 2, 2, 3, 4); /* build */
    gradcheck_module(c, x, true);
    nb_module_free(c);
}

Test(layers_conv, conv2d_gradcheck_first_and_second_order) {
    nb_module *c = nb_conv2d_layer(2, 2, 2, &(nb_conv2d_layer_opts){.padding = {1, 0}, .activation = "tanh"});
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(2, 2, 3, 3));
    cr_assert_not_null(nb_module_forward(c, x)); /* build */
    gradcheck_module(c, x, true);
    nb_module_free(c);
}

Test(layers_conv, conv2d_bad_arguments) {
    cr_assert_null(nb_conv2d_layer(0, 3, 3, NULL));
    EXPECT_ERROR("nb_conv2d_layer", "filters 0");
    cr_assert_null(nb_conv2d_layer(6, 3, 3, &(nb_conv2d_layer_opts){.groups = 4}));
    EXPECT_ERROR("nb_conv2d_layer", "groups 4");
    cr_assert_null(nb_conv2d_layer(6, 3, 3, &(nb_conv2d_layer_opts){.same = true, .padding = {1, 1}}));
    EXPECT_ERROR("nb_conv2d_layer", "same");
    cr_assert_null(nb_conv2d_layer(6, 3, 3, &(nb_conv2d_layer_opts){.activation = "swoosh"}));
    EXPECT_ERROR("nb_conv2d_layer", "swoosh");
    nb_module *c = nb_conv2d_layer(4, 3, 3, NULL);
    cr_assert_null(nb_module_forward(c, nb_zeros(NB_SHAPE(2, 5, 5))));
    EXPECT_ERROR("Conv2D(4)", "[N,C,H,W]", "[2,5,5]");
    cr_assert_not_null(nb_module_forward(c, nb_zeros(NB_SHAPE(1, 3, 5, 5))));
    cr_assert_null(nb_module_forward(c, nb_zeros(NB_SHAPE(1, 2, 5, 5))));
    EXPECT_ERROR("Conv2D(4)", "3 channels", "[1,2,5,5]");
    nb_module_free(c);
}

/* ---- pooling ----------------------------------------------------------------------- */

Test(layers_conv, pooling_layers) {
    nb_tensor *x = nb_arange(0, 32, 1);
    x = nb_reshape(x, NB_SHAPE(1, 2, 4, 4));
    nb_module *mp = nb_max_pool2d_layer(2, 2, NULL), *ap = nb_avg_pool2d_layer(2, 2, NULL);
    nb_module *gp = nb_global_avg_pool2d_layer();
    EXPECT_VALUES(nb_module_forward(mp, x), 0, 5, 7, 13, 15, 21, 23, 29, 31);
    EXPECT_VALUES(nb_module_forward(ap, x), 1e-6, 2.5f, 4.5f, 10.5f, 12.5f, 18.5f, 20.5f, 26.5f, 28.5f);
    nb_tensor *g = nb_module_forward(gp, x);
    EXPECT_SHAPE(g, 1, 2);
    EXPECT_VALUES(g, 1e-5, 7.5f, 23.5f);
    cr_assert_null(nb_module_forward(gp, nb_zeros(NB_SHAPE(2, 3))));
    EXPECT_ERROR("GlobalAveragePooling2D", "[2,3]");
    nb_module *s = nb_max_pool2d_layer(3, 3, &(nb_pool2d_opts){.stride = {1, 1}, .padding = {1, 1}});
    EXPECT_SHAPE(nb_module_forward(s, x), 1, 2, 4, 4);
    cr_assert_null(nb_max_pool2d_layer(2, 2, &(nb_pool2d_opts){.padding = {2, 0}}));
    EXPECT_ERROR("nb_max_pool2d_layer", "padding 2,0");
    cr_assert_null(nb_avg_pool2d_layer(0, 2, NULL));
    EXPECT_ERROR("nb_avg_pool2d_layer", "pool 0x2");
    cr_assert_eq(nb_module_num_weights(mp) + nb_module_num_weights(gp), 0);
    nb_module_free(mp);
    nb_module_free(ap);
    nb_module_free(gp);
    nb_module_free(s);
}

/* ---- buffers and BatchNormalization -------------------------------------------------- */

Test(layers_conv, buffers_are_held_but_not_trained) {
    nb_module *seq = nb_sequential(2, (nb_module *[]){nb_dense(3, "relu", 2), nb_batch_norm_layer(0.1f, 1e-5f)});
    cr_assert_not_null(nb_module_forward(seq, nb_randn(NB_SHAPE(4, 2))));
    int np, nbuf;
    nb_tensor **p = nb_module_parameters(seq, &np);
    nb_tensor **b = nb_module_buffers(seq, &nbuf);
    cr_assert_eq(np, 4);
    cr_assert_eq(nbuf, 2);
    cr_assert_str_eq(nb_module_parameter_name(seq, 2), "1.weight");
    cr_assert_str_eq(nb_module_buffer_name(seq, 0), "1.running_mean");
    cr_assert_str_eq(nb_module_buffer_name(seq, 1), "1.running_var");
    cr_assert_null(nb_module_buffer_name(seq, 2));
    for (int i = 0; i < nbuf; i++) {
        cr_assert(!nb_requires_grad(b[i]));
        for (int j = 0; j < np; j++) cr_assert_neq(b[i], p[j]);
    }
    cr_assert_eq(nb_module_num_buffer_elements(seq), 6);
    cr_assert_eq(nb_module_num_weights(seq), 2 * 3 + 3 + 3 + 3);
    /* an optimizer over the parameters leaves the buffers alone */
    nb_optimizer *opt = nb_sgd(np, p, NULL);
    nb_tensor *loss = nb_sum(nb_square(nb_module_forward(seq, nb_randn(NB_SHAPE(4, 2)))), NB_ALL, false);
    float rv0 = nb_data(b[1])[0];
    cr_assert_eq(nb_backward(loss), 0, "%s", nb_error());
    cr_assert_eq(nb_optimizer_step(opt), 0, "%s", nb_error());
    cr_assert_eq(nb_data(b[1])[0], rv0);
    nb_optimizer_free(opt);
    nb_module_free(seq);
}

typedef struct { nb_module base; } plain;
static nb_tensor *plain_forward(nb_module *m, nb_tensor *x) { (void)m; return x; }
static const nb_module_type plain_type = {"Plain", plain_forward, NULL};

Test(layers_conv, add_buffer_refuses_what_it_cannot_hold) {
    nb_module *m = nb_module_new(&plain_type, sizeof(plain));
    nb_tensor *t = nb_zeros(NB_SHAPE(2));
    cr_assert_eq(nb_module_add_buffer(m, "count", t), t);
    cr_assert_null(nb_module_add_buffer(m, "again", t));
    EXPECT_ERROR("nb_module_add_buffer", "again", "already");
    nb_tensor *g = nb_set_requires_grad(nb_zeros(NB_SHAPE(2)), true);
    cr_assert_null(nb_module_add_buffer(m, "trained", g));
    EXPECT_ERROR("nb_module_add_buffer", "trained", "requires grad");
    cr_assert_null(nb_module_ok(m), "a refused buffer fails the module, as a refused parameter does");
}

Test(layers_conv, batch_norm_layer_trains_and_evaluates) {
    nb_module *bn = nb_batch_norm_layer(0.1f, 1e-5f);
    nb_tensor *x = nb_from_array(NB_SHAPE(4, 2), (float[]){1, 10, 2, 20, 4, -5, 0.5f, 3});
    nb_tensor *y = nb_module_forward(bn, x);
    /* torch.nn.functional.batch_norm(x, zeros, ones, None, None, True, 0.1, 1e-5),
     * computed with PyTorch 2 */
    nb_tensor *want = nb_batch_norm(x, NULL, NULL, NULL, NULL, true, 0.1f, 1e-5f);
    for (int64_t i = 0; i < 8; i++) cr_assert_float_eq(nb_data(y)[i], nb_data(want)[i], 1e-6);
    int n;
    nb_tensor **b = nb_module_buffers(bn, &n);
    /* batch means 1.875, 7; unbiased variances 7.1875/3 and 338/3 */
    EXPECT_VALUES(b[0], 1e-6, 0.1875f, 0.7f);
    EXPECT_VALUES(b[1], 1e-5, 0.9f + 0.1f * 7.1875f / 3, 0.9f + 0.1f * 338.0f / 3);
    nb_module_train(bn, false);
    y = nb_module_forward(bn, x);
    EXPECT_VALUES(b[0], 1e-6, 0.1875f, 0.7f); /* eval leaves them */
    float r0 = 1 / sqrtf(nb_data(b[1])[0] + 1e-5f);
    cr_assert_float_eq(nb_data(y)[0], (1 - 0.1875f) * r0, 1e-5);
    nb_module_free(bn);
}

Test(layers_conv, batch_norm_layer_4d_gradcheck_both_modes) {
    nb_module *bn = nb_batch_norm_layer(0.1f, 1e-5f);
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(2, 3, 2, 2));
    EXPECT_SHAPE(nb_module_forward(bn, x), 2, 3, 2, 2);
    int n;
    nb_tensor **p = nb_module_parameters(bn, &n);
    nb_data_mut(p[0])[1] = 1.5f; /* weight and bias away from their start */
    nb_data_mut(p[1])[2] = -0.5f;
    gradcheck_module(bn, x, true);
    nb_module_train(bn, false);
    gradcheck_module(bn, x, true);
    cr_assert_null(nb_module_forward(bn, nb_zeros(NB_SHAPE(2, 4))));
    EXPECT_ERROR("BatchNormalization", "3 channels", "[2,4]");
    nb_module_free(bn);
    cr_assert_null(nb_batch_norm_layer(0.99f * 2, 1e-3f));
    EXPECT_ERROR("nb_batch_norm_layer", "momentum");
}

/* ---- LayerNormalization and Embedding ---------------------------------------------------- */

Test(layers_conv, layer_norm_layer) {
    nb_module *ln = nb_layer_norm_layer(2, 1e-5f);
    nb_tensor *x = nb_test_leaf(-2, 2, NB_SHAPE(2, 3, 4));
    nb_tensor *y = nb_module_forward(ln, x);
    EXPECT_SHAPE(y, 2, 3, 4);
    int n;
    nb_tensor **p = nb_module_parameters(ln, &n);
    cr_assert_eq(n, 2);
    EXPECT_SHAPE(p[0], 3, 4);
    nb_tensor *want = nb_layer_norm(x, 2, NULL, NULL, 1e-5f);
    for (int64_t i = 0; i < nb_numel(y); i++) cr_assert_float_eq(nb_data(y)[i], nb_data(want)[i], 1e-6);
    nb_data_mut(p[0])[3] = 2;
    gradcheck_module(ln, x, true);
    cr_assert_null(nb_module_forward(ln, nb_zeros(NB_SHAPE(2, 4, 3))));
    EXPECT_ERROR("LayerNormalization", "[3,4]", "[2,4,3]");
    nb_module_free(ln);
    cr_assert_null(nb_layer_norm_layer(0, 1e-3f));
    EXPECT_ERROR("nb_layer_norm_layer", "normalized_ndim 0");
}

Test(layers_conv, embedding_layer) {
    nb_module *e = nb_embedding_layer(10, 4);
    cr_assert_not_null(e, "%s", nb_error());
    int n;
    nb_tensor **p = nb_module_parameters(e, &n);
    EXPECT_SHAPE(p[0], 10, 4);
    for (int64_t i = 0; i < 40; i++) cr_assert(fabsf(nb_data(p[0])[i]) <= 0.05f);
    nb_tensor *idx = nb_from_array(NB_SHAPE(2, 3), (float[]){1, 9, 1, 0, 0, 0});
    nb_tensor *y = nb_module_forward(e, idx);
    EXPECT_SHAPE(y, 2, 3, 4);
    cr_assert_eq(nb_data(y)[4], nb_data(p[0])[36]);
    cr_assert_eq(nb_backward(nb_sum(y, NB_ALL, false)), 0, "%s", nb_error());
    EXPECT_VALUES(nb_slice(nb_sum(nb_grad_of(p[0]), NB_AXES(1), false), 0, 0, 10, 1), 0, 12, 8, 0, 0, 0, 0,
                  0, 0, 0, 4);
    cr_assert_null(nb_module_forward(e, nb_scalar(10)));
    EXPECT_ERROR("nb_embedding", "index 10", "10 rows");
    nb_module_free(e);
    cr_assert_null(nb_embedding_layer(0, 4));
    EXPECT_ERROR("nb_embedding_layer", "num 0");
}

/* ---- a model of them ---------------------------------------------------------------- */

static nb_tensor *logits_cross_entropy(nb_tensor *pred, nb_tensor *target) {
    return nb_cross_entropy_loss(pred, target, NB_REDUCE_MEAN);
}

static char *summary_of(nb_model *model) {
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    nb_model_summary(model, f);
    fclose(f);
    return text;
}

/* The CNN of the Fashion-MNIST benchmark (PyTorch: Conv2d(1,32,3,padding=1),
 * ReLU, MaxPool2d(2), Conv2d(32,64,3,padding=1), ReLU, MaxPool2d(2),
 * Flatten, Linear(3136,128), ReLU, Linear(128,10)): 421,642 parameters. */
Test(layers_conv, fashion_mnist_cnn_summary_and_one_step) {
    nb_model *model = nb_model_sequential();
    cr_assert_eq(nb_model_add(model, nb_conv2d_layer(32, 3, 3, &(nb_conv2d_layer_opts){
                                                         .padding = {1, 1}, .activation = "relu",
                                                         .input_shape = {1, 28, 28}})), 0, "%s", nb_error());
    cr_assert_eq(nb_model_add(model, nb_max_pool2d_layer(2, 2, NULL)), 0, "%s", nb_error());
    cr_assert_eq(nb_model_add(model, nb_conv2d_layer(64, 3, 3, &(nb_conv2d_layer_opts){
                                                         .padding = {1, 1}, .activation = "relu"})), 0, "%s",
                 nb_error());
    cr_assert_eq(nb_model_add(model, nb_max_pool2d_layer(2, 2, NULL)), 0, "%s", nb_error());
    cr_assert_eq(nb_model_add(model, nb_flatten_layer()), 0, "%s", nb_error());
    cr_assert_eq(nb_model_add(model, nb_dense(128, "relu", 0)), 0, "%s", nb_error());
    cr_assert_eq(nb_model_add(model, nb_dense(10, "linear", 0)), 0, "%s", nb_error());
    char *text = summary_of(model);
    printf("%s", text);
    const char *want[] = {"conv2d (Conv2D)", "(None, 32, 28, 28)", "320",
                          "maxpooling2d (MaxPooling2D)", "(None, 32, 14, 14)",
                          "conv2d_1 (Conv2D)", "(None, 64, 14, 14)", "18496",
                          "maxpooling2d_1 (MaxPooling2D)", "(None, 64, 7, 7)", "(None, 3136)",
                          "(None, 128)", "401536", "(None, 10)", "1290",
                          "Total params: 421642", "Trainable params: 421642", "Non-trainable params: 0"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        cr_assert(strstr(text, want[i]), "summary lacks \"%s\":\n%s", want[i], text);
    free(text);
    cr_assert_eq(nb_module_num_weights(nb_model_module(model)), 421642);

    cr_assert_eq(nb_model_compile(model, "adam", "sparse_categorical_crossentropy", NULL), 0, "%s", nb_error());
    cr_assert_eq(nb_model_set_loss(model, "cross_entropy", logits_cross_entropy), 0, "%s", nb_error());
    nb_tensor *x = nb_rand(NB_SHAPE(8, 1, 28, 28));
    nb_tensor *y = nb_from_array(NB_SHAPE(8), (float[]){0, 1, 2, 3, 4, 5, 6, 9});
    int n;
    nb_tensor *w0 = nb_clone(nb_model_parameters(model, &n)[0]);
    nb_fit_opts fit = nb_fit_defaults();
    fit.batch_size = 8;
    fit.verbose = 0;
    nb_history *h = nb_model_fit(model, x, y, &fit);
    cr_assert_not_null(h, "%s", nb_error());
    cr_assert_eq(nb_history_epochs(h), 1);
    float loss = nb_history_get(h, "loss")[0];
    cr_assert(isfinite(loss) && loss > 1.5f && loss < 3.5f, "loss %g (about log 10 at the start)", (double)loss);
    nb_tensor *w1 = nb_model_parameters(model, &n)[0];
    bool moved = false;
    for (int64_t i = 0; i < nb_numel(w0); i++) moved |= nb_data(w0)[i] != nb_data(w1)[i];
    cr_assert(moved, "the step changed the first kernel");
    nb_history_free(h);
    nb_model_free(model);
}

Test(layers_conv, summary_counts_buffers_as_non_trainable) {
    nb_model *model = nb_model_sequential();
    nb_model_add(model, nb_conv2d_layer(4, 3, 3, &(nb_conv2d_layer_opts){.same = true,
                                                                        .input_shape = {2, 6, 6}}));
    nb_model_add(model, nb_batch_norm_layer(0.01f, 1e-3f));
    nb_model_add(model, nb_global_avg_pool2d_layer());
    nb_model_add(model, nb_layer_norm_layer(1, 1e-3f));
    nb_model_add(model, nb_dense(3, "softmax", 0));
    char *text = summary_of(model);
    /* conv 4·2·9 + 4 = 76; batch norm 4 + 4 trainable, 4 + 4 not; layer
     * norm 4 + 4; dense 4·3 + 3 = 15 */
    const char *want[] = {"(None, 4, 6, 6)", "batchnormalization (BatchNormalization)", "16",
                          "(None, 4)", "layernormalization (LayerNormalization)", "(None, 3)",
                          "Total params: 115", "Trainable params: 107", "Non-trainable params: 8"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        cr_assert(strstr(text, want[i]), "summary lacks \"%s\":\n%s", want[i], text);
    free(text);
    /* a fit step trains the batch norm and updates its buffers */
    cr_assert_eq(nb_model_compile(model, "sgd", "sparse_categorical_crossentropy", NULL), 0, "%s", nb_error());
    nb_fit_opts fit = nb_fit_defaults();
    fit.batch_size = 4;
    fit.verbose = 0;
    nb_history *h = nb_model_fit(model, nb_randn(NB_SHAPE(4, 2, 6, 6)),
                                 nb_from_array(NB_SHAPE(4), (float[]){0, 1, 2, 1}), &fit);
    cr_assert_not_null(h, "%s", nb_error());
    int n;
    nb_tensor **b = nb_module_buffers(nb_model_module(model), &n);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(nb_module_buffer_name(nb_model_module(model), 1), "1.running_var");
    cr_assert_neq(nb_data(b[0])[0], 0.0f, "running_mean moved");
    nb_history_free(h);
    nb_model_free(model);
}

/* ---- out of memory while building -------------------------------------------------- */

/* Failing each allocation of a lazy layer's first forward in turn: the
 * call fails cleanly or succeeds, the layer is built completely or not at
 * all, nothing leaks, and the next forward works. */
Test(layers_conv, a_failed_build_leaves_the_layer_unbuilt) {
    bool failed_somewhere = true;
    int64_t fail_at;
    for (fail_at = 1; failed_somewhere; fail_at++) {
        failed_somewhere = false;
        nb_module *layers[3] = {nb_conv2d_layer(4, 3, 3, NULL), nb_batch_norm_layer(0.1f, 1e-5f),
                                nb_layer_norm_layer(1, 1e-5f)};
        int full_params[3] = {2, 2, 2}, full_buffers[3] = {0, 2, 0};
        nb_tensor *x = nb_randn(NB_SHAPE(2, 3, 4, 4));
        for (int i = 0; i < 3; i++) {
            nb_test_alloc a = {.fail_at = fail_at};
            nb_scope_begin();
            nb_set_alloc_hook(nb_test_alloc_hook, &a);
            nb_tensor *y = nb_module_forward(layers[i], x);
            nb_set_alloc_hook(NULL, NULL);
            nb_scope_end();
            if (!a.fired) {
                cr_assert_not_null(y, "%s", nb_error());
                continue;
            }
            failed_somewhere = true;
            int np, nbuf;
            nb_module_parameters(layers[i], &np);
            nb_module_buffers(layers[i], &nbuf);
            cr_assert((np == 0 && nbuf == 0) || (np == full_params[i] && nbuf == full_buffers[i]),
                      "layer %d half built: %d parameters, %d buffers (allocation %lld failed)", i, np, nbuf,
                      (long long)fail_at);
            if (!y) cr_assert_not_null(nb_error());
            cr_assert_not_null(nb_module_forward(layers[i], x), "%s", nb_error());
        }
        for (int i = 0; i < 3; i++) nb_module_free(layers[i]);
    }
    cr_assert_gt(fail_at, 4); /* allocations 1 to 3 at least were failed */
}
