/* test_loss.c — every loss against values worked out by hand, its gradient
 * by finite differences (second order where smooth), and the checks that
 * keep a loss from silently computing the wrong thing. */
#include "test_util.h"

TestSuite(loss, NB_TEST_HOOKS);

static nb_tensor *t2(float a, float b, float c, float d) {
    return nb_from_array(NB_SHAPE(2, 2), (float[]){a, b, c, d});
}

Test(loss, mse_values) {
    /* d = [1, -2, 0, 3]: mean d^2 = 14/4, sum 14 */
    nb_tensor *p = t2(1, 0, 2, 3), *t = t2(0, 2, 2, 0);
    EXPECT_VALUES(nb_mse_loss(p, t, NB_REDUCE_MEAN), 1e-6, 3.5f);
    EXPECT_VALUES(nb_mse_loss(p, t, NB_REDUCE_SUM), 1e-6, 14);
    nb_tensor *none = nb_mse_loss(p, t, NB_REDUCE_NONE);
    EXPECT_SHAPE(none, 2, 2);
    EXPECT_VALUES(none, 1e-6, 1, 4, 0, 9);
}

Test(loss, l1_and_huber_values) {
    nb_tensor *p = t2(1, 0, 2, 3), *t = t2(0, 2, 2, 0); /* d = 1, -2, 0, 3 */
    EXPECT_VALUES(nb_l1_loss(p, t, NB_REDUCE_MEAN), 1e-6, 1.5f);
    /* delta 1.5: |1| -> 0.5; |-2| -> 1.5(2 - 0.75) = 1.875; 0 -> 0; 3 -> 1.5(3 - 0.75) = 3.375 */
    EXPECT_VALUES(nb_huber_loss(p, t, 1.5f, NB_REDUCE_NONE), 1e-6, 0.5f, 1.875f, 0, 3.375f);
    EXPECT_VALUES(nb_huber_loss(p, t, 1.5f, NB_REDUCE_MEAN), 1e-6, 5.75f / 4);
    cr_assert_null(nb_huber_loss(p, t, 0, NB_REDUCE_MEAN));
    EXPECT_ERROR("nb_huber_loss", "delta");
}

Test(loss, bce_values) {
    /* -(1 log .8 + 0 + log(1 - .4) ... ) / 2: targets 1 and 0 */
    nb_tensor *p = nb_from_array(NB_SHAPE(2), (float[]){0.8f, 0.4f});
    nb_tensor *t = nb_from_array(NB_SHAPE(2), (float[]){1, 0});
    float want = (float)(-(log(0.8) + log(0.6)) / 2);
    EXPECT_VALUES(nb_bce_loss(p, t, NB_REDUCE_MEAN), 1e-6, want);
    /* p = 0 with target 1: log clamped at -100, not inf */
    nb_tensor *edge = nb_bce_loss(nb_from_array(NB_SHAPE(1), (float[]){0}),
                                  nb_from_array(NB_SHAPE(1), (float[]){1}), NB_REDUCE_MEAN);
    EXPECT_VALUES(edge, 1e-4, 100);
    cr_assert_null(nb_bce_loss(nb_from_array(NB_SHAPE(2), (float[]){0.5f, 1.5f}), t, NB_REDUCE_MEAN));
    EXPECT_ERROR("nb_bce_loss", "[0, 1]", "1.5", "element 1");
}

Test(loss, bce_with_logits_is_stable) {
    /* x = 0: log 2 whatever the target; x = 100, t = 1: ~0; x = -100, t = 1: 100 */
    nb_tensor *x = nb_from_array(NB_SHAPE(3), (float[]){0, 100, -100});
    nb_tensor *t = nb_from_array(NB_SHAPE(3), (float[]){0, 1, 1});
    EXPECT_VALUES(nb_bce_with_logits_loss(x, t, NB_REDUCE_NONE), 1e-5, (float)log(2.0), 0, 100);
}

Test(loss, cross_entropy_and_nll_values) {
    /* logits [[1,2,3],[1,1,1]], labels [2,0]:
     * row 0: -log(e^3 / (e + e^2 + e^3)) = 0.40760596; row 1: log 3 = 1.09861229 */
    nb_tensor *z = nb_from_array(NB_SHAPE(2, 3), (float[]){1, 2, 3, 1, 1, 1});
    nb_tensor *y = nb_from_array(NB_SHAPE(2), (float[]){2, 0});
    EXPECT_VALUES(nb_cross_entropy_loss(z, y, NB_REDUCE_NONE), 1e-5, 0.40760596f, 1.09861229f);
    EXPECT_VALUES(nb_cross_entropy_loss(z, y, NB_REDUCE_MEAN), 1e-5, 0.75310912f);
    EXPECT_VALUES(nb_nll_loss(nb_log_softmax(z, 1), y, NB_REDUCE_SUM), 1e-5, 1.50621825f);
    /* one sample as [C] and a label */
    EXPECT_VALUES(nb_cross_entropy_loss(nb_from_array(NB_SHAPE(3), (float[]){1, 2, 3}),
                                        nb_scalar(2), NB_REDUCE_MEAN), 1e-5, 0.40760596f);
    /* large logits stay finite */
    nb_tensor *big = nb_from_array(NB_SHAPE(1, 2), (float[]){1000, 0});
    EXPECT_VALUES(nb_cross_entropy_loss(big, nb_from_array(NB_SHAPE(1), (float[]){1}), NB_REDUCE_MEAN),
                  1e-2, 1000);
}

Test(loss, label_and_shape_checks) {
    nb_tensor *z = nb_zeros(NB_SHAPE(2, 3));
    cr_assert_null(nb_cross_entropy_loss(z, nb_from_array(NB_SHAPE(2), (float[]){0, 3}), NB_REDUCE_MEAN));
    EXPECT_ERROR("nb_cross_entropy_loss", "label 3", "position 1", "[0, 3)");
    cr_assert_null(nb_nll_loss(z, nb_from_array(NB_SHAPE(2), (float[]){0.5f, 1}), NB_REDUCE_MEAN));
    EXPECT_ERROR("nb_nll_loss", "0.5");
    cr_assert_null(nb_nll_loss(z, nb_zeros(NB_SHAPE(3)), NB_REDUCE_MEAN));
    EXPECT_ERROR("nb_nll_loss", "[2,3]", "[3]");
    cr_assert_null(nb_mse_loss(nb_zeros(NB_SHAPE(4, 1)), nb_zeros(NB_SHAPE(4)), NB_REDUCE_MEAN));
    EXPECT_ERROR("nb_mse_loss", "[4,1]", "[4]", "differ");
    cr_assert_null(nb_mse_loss(z, z, (nb_reduction)7));
    EXPECT_ERROR("unknown reduction");
    cr_assert_null(nb_mse_loss(NULL, z, NB_REDUCE_MEAN));
}

/* gradchecks: inputs[0] is the prediction, inputs[1] the target */
typedef struct loss_ctx {
    nb_tensor *(*fn)(nb_tensor *, nb_tensor *, nb_reduction);
} loss_ctx;
static loss_ctx mse = {nb_mse_loss}, l1 = {nb_l1_loss}, bce = {nb_bce_loss},
                bce_logits = {nb_bce_with_logits_loss};
static nb_tensor *apply(nb_tensor *const *in, void *ctx) {
    return ((loss_ctx *)ctx)->fn(in[0], in[1], NB_REDUCE_MEAN);
}
static nb_tensor *apply_sum(nb_tensor *const *in, void *ctx) {
    return ((loss_ctx *)ctx)->fn(in[0], in[1], NB_REDUCE_SUM);
}
static nb_tensor *huber(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return nb_huber_loss(in[0], in[1], 0.5f, NB_REDUCE_MEAN);
}

Test(loss, gradchecks) {
    nb_tensor *p = nb_test_leaf(-2, 2, NB_SHAPE(3, 4));
    nb_tensor *t = nb_test_leaf(-2, 2, NB_SHAPE(3, 4));
    nb_tensor *in[2] = {p, t};
    nb_test_gradcheck(apply, &mse, 2, in, true);
    nb_test_gradcheck(apply_sum, &mse, 2, in, true);
    nb_test_gradcheck(apply, &bce_logits, 2, in, true);
    /* l1 and huber away from their kinks: |p - t| well clear of 0 and delta */
    float *pd = nb_data_mut(p);
    const float *td = nb_data(t);
    for (int i = 0; i < 12; i++) pd[i] = td[i] + (i % 2 ? 0.3f : -1.2f);
    nb_test_gradcheck(apply, &l1, 2, in, false);
    nb_test_gradcheck(huber, NULL, 2, in, false);

    nb_tensor *prob = nb_test_leaf(0.1f, 0.9f, NB_SHAPE(5));
    nb_tensor *target = nb_uniform(NULL, 0, 1, NB_SHAPE(5));
    nb_tensor *pin[2] = {prob, target};
    nb_test_gradcheck(apply, &bce, 2, pin, true);
}

static nb_tensor *ce(nb_tensor *const *in, void *ctx) {
    return nb_cross_entropy_loss(in[0], (nb_tensor *)ctx, NB_REDUCE_MEAN);
}

Test(loss, cross_entropy_gradcheck) {
    nb_tensor *z = nb_test_leaf(-3, 3, NB_SHAPE(4, 5));
    nb_tensor *labels = nb_from_array(NB_SHAPE(4), (float[]){0, 4, 2, 2});
    nb_test_gradcheck(ce, labels, 1, &z, true);
}

Test(loss, cross_entropy_gradient_by_hand) {
    /* d/dz mean CE = (softmax(z) - onehot) / N; for z = 0 over 2 classes:
     * softmax = 0.5, so the gradient is [[-0.25, 0.25]] for N = 2, label 0 */
    nb_tensor *z = nb_set_requires_grad(nb_zeros(NB_SHAPE(2, 2)), true);
    nb_tensor *y = nb_from_array(NB_SHAPE(2), (float[]){0, 1});
    cr_assert_eq(nb_backward(nb_cross_entropy_loss(z, y, NB_REDUCE_MEAN)), 0, "%s", nb_error());
    EXPECT_VALUES(nb_grad_of(z), 1e-6, -0.25f, 0.25f, 0.25f, -0.25f);
}
