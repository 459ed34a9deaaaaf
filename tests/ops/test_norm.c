/* test_norm.c — the ops of ops/norm.c: layer_norm, batch_norm, embedding.
 *
 * The expected values were computed with PyTorch 2 (torch.nn.functional.
 * layer_norm and batch_norm, float32) on the same inputs and pasted here as
 * literals; embedding's are read off the weight by hand. Every op is
 * gradchecked to first and second order in every differentiable input, and
 * bad input gives NULL and a message naming the op.
 */
#include <string.h>

#include "test_util.h"

TestSuite(norm, NB_TEST_HOOKS);

/* ---- layer_norm ------------------------------------------------------------------ */

Test(norm, layer_norm_values_match_pytorch) {
    nb_tensor *x = nb_from_array(NB_SHAPE(2, 3), (float[]){1, 2, 4, -1, 0.5f, 3});
    nb_tensor *w = nb_from_array(NB_SHAPE(3), (float[]){0.5f, -1, 2});
    nb_tensor *b = nb_from_array(NB_SHAPE(3), (float[]){0.1f, 0.2f, -0.3f});
    /* torch.nn.functional.layer_norm(x, (3,), w, b, 1e-5) */
    EXPECT_VALUES(nb_layer_norm(x, 1, w, b, 1e-5f), 1e-5, -0.4345207f, 0.4672603f, 2.372604f,
                  -0.4555829f, 0.4020302f, 2.326392f);
}

Test(norm, layer_norm_over_two_axes_matches_pytorch) {
    /* x = arange(12).reshape(3,2,2)**1.5/4 in PyTorch */
    nb_tensor *x = nb_from_array(NB_SHAPE(3, 2, 2),
                                 (float[]){0, 0.25f, 0.7071068f, 1.299038f, 2, 2.795085f, 3.674235f,
                                           4.630065f, 5.656854f, 6.75f, 7.905694f, 9.120718f});
    nb_tensor *y = nb_layer_norm(x, 2, NULL, NULL, 1e-5f);
    EXPECT_SHAPE(y, 3, 2, 2);
    /* torch.nn.functional.layer_norm(x, (2, 2), None, None, 1e-5) */
    EXPECT_VALUES(y, 2e-5, -1.140986f, -0.6352621f, 0.2894168f, 1.486831f, -1.299178f, -0.488918f,
                  0.4070114f, 1.381085f, -1.317545f, -0.4710561f, 0.4238671f, 1.364733f);
}

Test(norm, layer_norm_of_a_large_offset_keeps_precision) {
    /* values 1e4 + {0, 1, 2, 3}: mean 10001.5, biased var 1.25 */
    nb_tensor *x = nb_from_array(NB_SHAPE(4), (float[]){1e4f, 1e4f + 1, 1e4f + 2, 1e4f + 3});
    float r = 1 / sqrtf(1.25f + 1e-5f);
    EXPECT_VALUES(nb_layer_norm(x, 1, NULL, NULL, 1e-5f), 1e-5, -1.5f * r, -0.5f * r, 0.5f * r, 1.5f * r);
}

static nb_tensor *f_layer_norm(nb_tensor *const *in, void *ctx) {
    return nb_layer_norm(in[0], *(int *)ctx, in[1], in[2], 1e-5f);
}

Test(norm, layer_norm_gradcheck_first_and_second_order) {
    int k = 1;
    nb_tensor *in[3] = {nb_test_leaf(-2, 2, NB_SHAPE(3, 5)), nb_test_leaf(0.5f, 1.5f, NB_SHAPE(5)),
                        nb_test_leaf(-1, 1, NB_SHAPE(5))};
    nb_test_gradcheck(f_layer_norm, &k, 3, in, true);
    k = 2;
    nb_tensor *in2[3] = {nb_test_leaf(-2, 2, NB_SHAPE(2, 3, 4)), nb_test_leaf(0.5f, 1.5f, NB_SHAPE(3, 4)),
                         nb_test_leaf(-1, 1, NB_SHAPE(3, 4))};
    nb_test_gradcheck(f_layer_norm, &k, 3, in2, true);
}

static nb_tensor *f_layer_norm_plain(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return nb_layer_norm(in[0], 1, NULL, NULL, 1e-5f);
}

Test(norm, layer_norm_without_affine_gradcheck) {
    nb_tensor *x = nb_test_leaf(-2, 2, NB_SHAPE(4, 6));
    nb_test_gradcheck(f_layer_norm_plain, NULL, 1, &x, true);
}

Test(norm, layer_norm_bad_input) {
    nb_tensor *x = nb_zeros(NB_SHAPE(2, 3));
    cr_assert_null(nb_layer_norm(x, 3, NULL, NULL, 1e-5f));
    EXPECT_ERROR("nb_layer_norm", "[2,3]", "normalized_ndim 3");
    cr_assert_null(nb_layer_norm(x, 1, nb_ones(NB_SHAPE(2)), NULL, 1e-5f));
    EXPECT_ERROR("nb_layer_norm", "weight [2]");
    cr_assert_null(nb_layer_norm(x, 1, NULL, NULL, 0));
    EXPECT_ERROR("nb_layer_norm", "eps 0");
    nb_clear_error();
    cr_assert_null(nb_layer_norm(NULL, 1, NULL, NULL, 1e-5f));
    cr_assert_null(nb_error());
}

/* ---- batch_norm ------------------------------------------------------------------ */

Test(norm, batch_norm_training_matches_pytorch) {
    nb_tensor *x = nb_from_array(NB_SHAPE(4, 2), (float[]){1, 10, 2, 20, 4, -5, 0.5f, 3});
    nb_tensor *rm = nb_from_array(NB_SHAPE(2), (float[]){0, 1});
    nb_tensor *rv = nb_from_array(NB_SHAPE(2), (float[]){1, 2});
    nb_tensor *w = nb_from_array(NB_SHAPE(2), (float[]){2, 0.5f});
    nb_tensor *b = nb_from_array(NB_SHAPE(2), (float[]){0, 1});
    /* torch.nn.functional.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5), and
     * rm, rv after it (rv updated with the unbiased variance) */
    EXPECT_VALUES(nb_batch_norm(x, rm, rv, w, b, true, 0.1f, 1e-5f), 1e-5, -1.305503f, 1.163178f,
                  0.1865005f, 1.707107f, 3.170508f, 0.3472861f, -2.051505f, 0.7824287f);
    EXPECT_VALUES(rm, 1e-6, 0.1875f, 1.6f);
    EXPECT_VALUES(rv, 1e-5, 1.139583f, 13.06667f);
    /* then the same in eval mode, with the updated running stats */
    EXPECT_VALUES(nb_batch_norm(x, rm, rv, w, b, false, 0.1f, 1e-5f), 1e-5, 1.522223f, 2.161895f,
                  3.395729f, 3.545103f, 7.142741f, 0.08708282f, 0.5854706f, 1.193649f);
    EXPECT_VALUES(rm, 1e-6, 0.1875f, 1.6f); /* eval leaves them */
}

Test(norm, batch_norm_4d_matches_pytorch) {
    /* x = (arange(16).reshape(2,2,2,2) - 5)**2 / 10 */
    nb_tensor *x = nb_from_array(NB_SHAPE(2, 2, 2, 2), (float[]){2.5f, 1.6f, 0.9f, 0.4f, 0.1f, 0, 0.1f,
                                                                0.4f, 0.9f, 1.6f, 2.5f, 3.6f, 4.9f,
                                                                6.4f, 8.1f, 10});
    nb_tensor *rm = nb_zeros(NB_SHAPE(2)), *rv = nb_ones(NB_SHAPE(2));
    nb_tensor *y = nb_batch_norm(x, rm, rv, NULL, NULL, true, 0.3f, 1e-3f);
    EXPECT_SHAPE(y, 2, 2, 2, 2);
    /* torch.nn.functional.batch_norm(x, rm, rv, None, None, True, 0.3, 1e-3) */
    EXPECT_VALUES(y, 1e-5, 0.7562652f, -0.151253f, -0.8571005f, -1.361277f, -0.9493016f, -0.9753098f,
                  -0.9493016f, -0.8712768f, -0.8571005f, -0.151253f, 0.7562652f, 1.865454f,
                  0.2990951f, 0.689219f, 1.13136f, 1.625516f);
    EXPECT_VALUES(rm, 1e-6, 0.525f, 1.125f);
    EXPECT_VALUES(rv, 1e-5, 1.036857f, 5.768286f);
}

static nb_tensor *f_batch_norm_train(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return nb_batch_norm(in[0], NULL, NULL, in[1], in[2], true, 0.1f, 1e-5f);
}

Test(norm, batch_norm_training_gradcheck_first_and_second_order) {
    nb_tensor *in[3] = {nb_test_leaf(-2, 2, NB_SHAPE(5, 3)), nb_test_leaf(0.5f, 1.5f, NB_SHAPE(3)),
                        nb_test_leaf(-1, 1, NB_SHAPE(3))};
    nb_test_gradcheck(f_batch_norm_train, NULL, 3, in, true);
    nb_tensor *in4[3] = {nb_test_leaf(-2, 2, NB_SHAPE(2, 3, 2, 2)), nb_test_leaf(0.5f, 1.5f, NB_SHAPE(3)),
                         nb_test_leaf(-1, 1, NB_SHAPE(3))};
    nb_test_gradcheck(f_batch_norm_train, NULL, 3, in4, true);
}

static nb_tensor *f_batch_norm_eval(nb_tensor *const *in, void *ctx) {
    nb_tensor **stats = ctx;
    return nb_batch_norm(in[0], stats[0], stats[1], in[1], in[2], false, 0.1f, 1e-5f);
}

Test(norm, batch_norm_eval_gradcheck_first_and_second_order) {
    nb_tensor *stats[2] = {nb_uniform(NULL, -1, 1, NB_SHAPE(3)), nb_uniform(NULL, 0.5f, 2, NB_SHAPE(3))};
    nb_tensor *in[3] = {nb_test_leaf(-2, 2, NB_SHAPE(2, 3, 2, 2)), nb_test_leaf(0.5f, 1.5f, NB_SHAPE(3)),
                        nb_test_leaf(-1, 1, NB_SHAPE(3))};
    nb_test_gradcheck(f_batch_norm_eval, stats, 3, in, true);
}

Test(norm, batch_norm_running_stats_get_no_graph) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(4, 2));
    nb_tensor *rm = nb_zeros(NB_SHAPE(2)), *rv = nb_ones(NB_SHAPE(2));
    nb_tensor *y = nb_batch_norm(x, rm, rv, NULL, NULL, true, 0.1f, 1e-5f);
    cr_assert(nb_requires_grad(y));
    cr_assert(!nb_requires_grad(rm) && !nb_requires_grad(rv) && nb_is_leaf(rm));
    cr_assert_eq(nb_backward(nb_sum(nb_square(y), NB_ALL, false)), 0, "%s", nb_error());
}

Test(norm, batch_norm_bad_input) {
    nb_tensor *x = nb_zeros(NB_SHAPE(4, 3));
    cr_assert_null(nb_batch_norm(x, nb_zeros(NB_SHAPE(2)), nb_ones(NB_SHAPE(3)), NULL, NULL, true, 0.1f, 1e-5f));
    EXPECT_ERROR("nb_batch_norm", "[4,3]", "3 channels", "running_mean", "[2]");
    cr_assert_null(nb_batch_norm(x, NULL, NULL, NULL, NULL, false, 0.1f, 1e-5f));
    EXPECT_ERROR("nb_batch_norm", "running_mean and running_var");
    cr_assert_null(nb_batch_norm(x, NULL, NULL, NULL, NULL, true, 1.5f, 1e-5f));
    EXPECT_ERROR("nb_batch_norm", "momentum 1.5");
    cr_assert_null(nb_batch_norm(nb_zeros(NB_SHAPE(1, 3)), NULL, NULL, NULL, NULL, true, 0.1f, 1e-5f));
    EXPECT_ERROR("nb_batch_norm", "[1,3]", "more than one value per channel");
    cr_assert_null(nb_batch_norm(nb_zeros(NB_SHAPE(3)), NULL, NULL, NULL, NULL, true, 0.1f, 1e-5f));
    EXPECT_ERROR("nb_batch_norm", "[3]");
    nb_clear_error();
    cr_assert_null(nb_batch_norm(NULL, NULL, NULL, NULL, NULL, true, 0.1f, 1e-5f));
    cr_assert_null(nb_error());
}

/* ---- embedding ------------------------------------------------------------------- */

Test(norm, embedding_picks_rows) {
    nb_tensor *w = nb_from_array(NB_SHAPE(4, 2), (float[]){0, 1, 10, 11, 20, 21, 30, 31});
    nb_tensor *idx = nb_from_array(NB_SHAPE(2, 3), (float[]){3, 0, 1, 1, 1, 2});
    nb_tensor *y = nb_embedding(w, idx);
    EXPECT_SHAPE(y, 2, 3, 2);
    EXPECT_VALUES(y, 0, 30, 31, 0, 1, 10, 11, 10, 11, 10, 11, 20, 21);
    nb_tensor *y0 = nb_embedding(w, nb_scalar(2));
    EXPECT_SHAPE(y0, 2);
    EXPECT_VALUES(y0, 0, 20, 21);
}

Test(norm, embedding_gradient_adds_into_used_rows) {
    nb_tensor *w = nb_test_leaf(-1, 1, NB_SHAPE(4, 2));
    nb_tensor *idx = nb_from_array(NB_SHAPE(3), (float[]){1, 3, 1});
    cr_assert_eq(nb_backward(nb_sum(nb_embedding(w, idx), NB_ALL, false)), 0, "%s", nb_error());
    /* row 1 used twice, row 3 once, rows 0 and 2 never */
    EXPECT_VALUES(nb_grad_of(w), 0, 0, 0, 2, 2, 0, 0, 1, 1);
}

static nb_tensor *f_embedding(nb_tensor *const *in, void *ctx) {
    return nb_mul(nb_embedding(in[0], ctx), nb_embedding(in[0], ctx)); /* quadratic: a 2nd derivative */
}

Test(norm, embedding_gradcheck_first_and_second_order) {
    nb_tensor *idx = nb_from_array(NB_SHAPE(2, 2), (float[]){2, 0, 2, 4});
    nb_tensor *w = nb_test_leaf(-1, 1, NB_SHAPE(5, 3));
    nb_test_gradcheck(f_embedding, idx, 1, &w, true);
}

Test(norm, embedding_bad_index_names_it_and_v) {
    nb_tensor *w = nb_zeros(NB_SHAPE(5, 2));
    cr_assert_null(nb_embedding(w, nb_from_array(NB_SHAPE(3), (float[]){0, 7, 1})));
    EXPECT_ERROR("nb_embedding", "index 7", "element 1", "[0, 5)", "5 rows");
    cr_assert_null(nb_embedding(w, nb_from_array(NB_SHAPE(1), (float[]){-1})));
    EXPECT_ERROR("nb_embedding", "index -1");
    cr_assert_null(nb_embedding(w, nb_from_array(NB_SHAPE(1), (float[]){1.5f})));
    EXPECT_ERROR("nb_embedding", "index 1.5");
    cr_assert_null(nb_embedding(w, nb_from_array(NB_SHAPE(1), (float[]){NAN})));
    EXPECT_ERROR("nb_embedding", "index nan");
    cr_assert_null(nb_embedding(nb_zeros(NB_SHAPE(5)), nb_scalar(0)));
    EXPECT_ERROR("nb_embedding", "[5]", "2-D");
    nb_clear_error();
    cr_assert_null(nb_embedding(NULL, nb_scalar(0)));
    cr_assert_null(nb_error());
}
