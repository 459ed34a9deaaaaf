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

/* The reduced MSE is one op for speed; it must give the bits of the
 * composition it replaced, forward and backward, for either reduction, at
 * every length (the eight-way partial sums and the tail), for a 0-d and an
 * empty input, and with a grad_output other than 1. */
static void expect_same_bits(const nb_tensor *a, const nb_tensor *b, const char *what, int64_t n) {
    cr_assert(a && b && nb_same_shape(a, b), "%s (n = %lld): %s", what, (long long)n,
              nb_error() ? nb_error() : "shapes differ");
    cr_assert(memcmp(nb_data(a), nb_data(b), sizeof(float) * (size_t)nb_numel(a)) == 0,
              "%s (n = %lld): the fused op's bits differ from the composition's", what, (long long)n);
}

Test(loss, mse_op_has_the_bits_of_the_composition) {
    int64_t lengths[] = {1, 5, 8, 10, 17, 100};
    for (size_t k = 0; k < sizeof lengths / sizeof *lengths + 2; k++) {
        for (int r = 0; r < 2; r++) {
            nb_scope_begin();
            nb_reduction red = r ? NB_REDUCE_SUM : NB_REDUCE_MEAN;
            int64_t n = k < 6 ? lengths[k] : k == 6 ? 0 : 1;
            int64_t shape[2] = {n, 1};
            int ndim = k == 7 ? 0 : 2; /* the last case is 0-d */
            nb_tensor *p = nb_test_leaf(-3, 3, ndim, shape);
            nb_tensor *t = nb_test_leaf(-3, 3, ndim, shape);
            nb_tensor *fused = nb_mse_loss(p, t, red);
            nb_tensor *d2 = nb_square(nb_sub(p, t));
            nb_tensor *composed = r ? nb_sum(d2, NB_ALL, false) : nb_mean(d2, NB_ALL, false);
            expect_same_bits(fused, composed, "loss", n);
            /* g/n and g·(1/n) differ for some g and n (3.3 and 10, 0.7 and 17):
             * the mean's backward takes the second */
            float gos[] = {1.0f, 3.3f, 0.7f};
            for (int j = 0; j < 3; j++) {
                nb_tensor *in[2] = {p, t}, *gf[2], *gc[2], *go = nb_scalar(gos[j]);
                cr_assert_eq(nb_grad(1, &fused, &go, 2, in, gf, &(nb_grad_opts){.retain_graph = true}),
                             0, "%s", nb_error());
                cr_assert_eq(nb_grad(1, &composed, &go, 2, in, gc, &(nb_grad_opts){.retain_graph = true}),
                             0, "%s", nb_error());
                expect_same_bits(gf[0], gc[0], "gradient of the prediction", n);
                expect_same_bits(gf[1], gc[1], "gradient of the target", n);
            }
            nb_scope_end();
        }
    }
}

/* mse's gradient op (mse_grad) is differentiable in all three of its
 * inputs: the prediction, the target, and the gradient arriving at the
 * loss, here a leaf w of its own. */
static nb_tensor *mse_prime(nb_tensor *const *in, void *ctx) {
    nb_reduction r = *(nb_reduction *)ctx;
    nb_tensor *p = in[0], *g = NULL;
    nb_tensor *loss = nb_mse_loss(p, in[1], r);
    if (nb_grad(1, &loss, &in[2], 1, &p, &g, &(nb_grad_opts){.create_graph = true}) != 0) return NULL;
    return nb_sum(nb_sin(g), NB_ALL, false);
}

Test(loss, mse_gradient_op_gradchecks) {
    nb_tensor *in[3] = {nb_test_leaf(-2, 2, NB_SHAPE(3, 4)), nb_test_leaf(-2, 2, NB_SHAPE(3, 4)),
                        nb_test_leaf(0.5f, 2, 0, NULL)};
    nb_reduction mean = NB_REDUCE_MEAN, sum = NB_REDUCE_SUM;
    nb_test_gradcheck(mse_prime, &mean, 3, in, true);
    nb_test_gradcheck(mse_prime, &sum, 3, in, true);
}

/* The reduced cross-entropy is one op for speed; it must give the bits of
 * the composition it replaced (log_softmax, reshape, gather, neg, reshape,
 * mean or sum), forward and backward: for the shapes of nabla's examples
 * ([64,10] and [2048,114]), for lengths that exercise the eight-way partial
 * sums and their tail, for more axes and for one sample, for an empty batch,
 * for logits so spread that exponentials underflow, and for grad_outputs
 * other than 1 (0 and -0 among them, where a sign of zero could slip). */
static nb_tensor *ce_composed(nb_tensor *logits, nb_tensor *labels, nb_reduction r) {
    int64_t n = nb_numel(labels), c = nb_dim(logits, -1);
    nb_tensor *rows = nb_reshape(nb_log_softmax(logits, -1), NB_SHAPE(n, c));
    nb_tensor *picked = nb_gather(rows, 1, nb_reshape(labels, NB_SHAPE(n, 1)));
    nb_tensor *loss = nb_neg(nb_reshape(picked, nb_ndim(labels), nb_shape(labels)));
    return r == NB_REDUCE_SUM ? nb_sum(loss, NB_ALL, false) : nb_mean(loss, NB_ALL, false);
}

/* Labels in [0, c) from a fixed pseudo-random sequence. */
static nb_tensor *ce_labels(int ndim, const int64_t *shape, int64_t c, uint32_t seed) {
    nb_tensor *labels = nb_zeros(ndim, shape);
    float *pl = nb_data_mut(labels);
    for (int64_t i = 0; i < nb_numel(labels); i++) {
        seed = seed * 1664525u + 1013904223u;
        pl[i] = (float)((seed >> 8) % (uint32_t)c);
    }
    return labels;
}

Test(loss, cross_entropy_op_has_the_bits_of_the_composition) {
    struct {
        int ndim;
        int64_t shape[3];
        float spread;
    } cases[] = {
        {2, {64, 10}, 4},   {2, {5, 3}, 3},     {2, {2048, 114}, 6}, {2, {17, 7}, 3},
        {2, {8, 5}, 3},     {3, {4, 3, 7}, 3},  {3, {2, 9, 1}, 3},   {1, {6}, 3},
        {2, {1, 4}, 3},     {2, {0, 3}, 3},     {2, {9, 6}, 100},
    };
    float gos[] = {1.0f, 3.3f, 0.7f, -2.5f, 0.0f, -0.0f};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        for (int r = 0; r < 2; r++) {
            nb_scope_begin();
            nb_reduction red = r ? NB_REDUCE_SUM : NB_REDUCE_MEAN;
            int nd = cases[k].ndim;
            const int64_t *shape = cases[k].shape;
            int64_t c = shape[nd - 1];
            float spread = cases[k].spread;
            nb_tensor *z = nb_test_leaf(-spread, spread, nd, shape);
            /* one sample takes a 0-d label */
            nb_tensor *labels = ce_labels(nd - 1, shape, c, (uint32_t)(7 * k + 1));
            int64_t n = nb_numel(labels);
            nb_tensor *fused = nb_cross_entropy_loss(z, labels, red);
            nb_tensor *composed = ce_composed(z, labels, red);
            cr_assert(nb_op_of(fused) && strcmp(nb_op_of(fused)->name, "cross_entropy") == 0,
                      "case %zu: the reduced loss is not the fused op", k);
            expect_same_bits(fused, composed, "cross-entropy", n);
            for (size_t j = 0; j < sizeof gos / sizeof *gos; j++) {
                nb_tensor *gf, *gc, *go = nb_scalar(gos[j]);
                cr_assert_eq(nb_grad(1, &fused, &go, 1, &z, &gf, &(nb_grad_opts){.retain_graph = true}),
                             0, "%s", nb_error());
                cr_assert_eq(nb_grad(1, &composed, &go, 1, &z, &gc, &(nb_grad_opts){.retain_graph = true}),
                             0, "%s", nb_error());
                expect_same_bits(gf, gc, "gradient of the logits", n);
            }
            nb_scope_end();
        }
    }
    /* one sample with its label as [1] rather than 0-d */
    nb_tensor *z = nb_test_leaf(-3, 3, NB_SHAPE(5)), *one = nb_from_array(NB_SHAPE(1), (float[]){3});
    for (int r = 0; r < 2; r++) {
        nb_reduction red = r ? NB_REDUCE_SUM : NB_REDUCE_MEAN;
        nb_tensor *fused = nb_cross_entropy_loss(z, one, red), *composed = ce_composed(z, one, red);
        expect_same_bits(fused, composed, "cross-entropy of one sample", 1);
        nb_tensor *gf, *gc, *go = nb_scalar(0.3f);
        cr_assert_eq(nb_grad(1, &fused, &go, 1, &z, &gf, NULL), 0, "%s", nb_error());
        cr_assert_eq(nb_grad(1, &composed, &go, 1, &z, &gc, NULL), 0, "%s", nb_error());
        expect_same_bits(gf, gc, "gradient of one sample", 1);
    }
}

/* The order of the sum shows in the bits only where the double sums of two
 * orders round to different floats. Rows [0, -a] labelled 1 pick -y = a
 * (exp(-a) is lost next to 1), labelled 0 pick 0; picking 2^60, 2^36, 100,
 * 100 and four zeros, added one by one in double, the 100s are each lost
 * next to 2^60 + 2^36, a float tie that goes to the even 2^60; in nb_sum's
 * eight partial sums the 100s meet first, and their 200 carries the total
 * past the tie, to 2^60 + 2^37. */
Test(loss, cross_entropy_op_sums_in_the_order_of_nb_sum) {
    float big = 0x1p60f, mid = 0x1p36f;
    nb_tensor *z = nb_set_requires_grad(
        nb_from_array(NB_SHAPE(8, 2), (float[]){0, -big, 0, -mid, 0, -100, 0, -100, 0, -big, 0, -big,
                                                0, -big, 0, -big}),
        true);
    nb_tensor *labels = nb_from_array(NB_SHAPE(8), (float[]){1, 1, 1, 1, 0, 0, 0, 0});
    for (int r = 0; r < 2; r++) {
        nb_reduction red = r ? NB_REDUCE_SUM : NB_REDUCE_MEAN;
        nb_tensor *fused = nb_cross_entropy_loss(z, labels, red);
        nb_tensor *composed = ce_composed(z, labels, red);
        expect_same_bits(fused, composed, "cross-entropy summed in order", 8);
        cr_assert_eq(nb_data(fused)[0], (0x1p60f + 0x1p37f) / (r ? 1 : 8));
        nb_tensor *gf, *gc, *go = nb_scalar(0.7f);
        cr_assert_eq(nb_grad(1, &fused, &go, 1, &z, &gf, NULL), 0, "%s", nb_error());
        cr_assert_eq(nb_grad(1, &composed, &go, 1, &z, &gc, NULL), 0, "%s", nb_error());
        expect_same_bits(gf, gc, "its gradient", 8);
    }
}

/* cross-entropy's gradient op (cross_entropy_grad) is differentiable in the
 * logits and in the gradient arriving at the loss, here a leaf of its own. */
static nb_tensor *ce_prime(nb_tensor *const *in, void *ctx) {
    nb_reduction r = *(nb_reduction *)ctx;
    nb_tensor *z = in[0], *g = NULL;
    nb_tensor *labels = nb_from_array(NB_SHAPE(3, 2), (float[]){0, 3, 2, 2, 1, 0});
    nb_tensor *loss = nb_cross_entropy_loss(z, labels, r);
    if (nb_grad(1, &loss, &in[1], 1, &z, &g, &(nb_grad_opts){.create_graph = true}) != 0) return NULL;
    return nb_sum(nb_sin(g), NB_ALL, false);
}

static nb_tensor *ce_reduced(nb_tensor *const *in, void *ctx) {
    nb_tensor *labels = nb_from_array(NB_SHAPE(3, 2), (float[]){0, 3, 2, 2, 1, 0});
    return nb_cross_entropy_loss(in[0], labels, *(nb_reduction *)ctx);
}

Test(loss, cross_entropy_gradient_op_gradchecks) {
    nb_tensor *in[2] = {nb_test_leaf(-2, 2, NB_SHAPE(3, 2, 4)), nb_test_leaf(0.5f, 2, 0, NULL)};
    nb_reduction mean = NB_REDUCE_MEAN, sum = NB_REDUCE_SUM;
    nb_test_gradcheck(ce_prime, &mean, 2, in, true);
    nb_test_gradcheck(ce_prime, &sum, 2, in, true);
    nb_test_gradcheck(ce_reduced, &mean, 1, in, true);
    nb_test_gradcheck(ce_reduced, &sum, 1, in, true);
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

/* ---- BCE at p = 0 and p = 1 ----------------------------------------------------------
 * PyTorch: loss = -(y max(log p, -100) + (1 - y) max(log(1 - p), -100)) and
 * d/dp = (p - y) / max((1 - p) p, 1e-12), so a saturated probability gives a
 * finite loss and a finite gradient, never NaN. */

Test(loss, bce_gradient_at_saturated_sigmoid) {
    /* sigmoid(20) = 1 / (1 + 2.06e-9) rounds to exactly 1 in float: loss
     * -log 1 = 0, d/dp = (1 - 1) / max(0, 1e-12) = 0, so d/dz = 0 (PyTorch: 0) */
    nb_tensor *z = nb_set_requires_grad(nb_from_array(NB_SHAPE(1), (float[]){20}), true);
    nb_tensor *loss = nb_bce_loss(nb_sigmoid(z), nb_ones(NB_SHAPE(1)), NB_REDUCE_MEAN);
    EXPECT_VALUES(loss, 0, 0);
    cr_assert_eq(nb_backward(loss), 0, "%s", nb_error());
    EXPECT_VALUES(nb_grad_of(z), 0, 0);
    /* z = -20, y = 1: p = 2.06e-9, d/dp = (p - 1) / ((1 - p) p) = -1/p, times
     * sigmoid' = p (1 - p): d/dz = -(1 - p) = -1 (loss 20) */
    nb_tensor *zn = nb_set_requires_grad(nb_from_array(NB_SHAPE(1), (float[]){-20}), true);
    nb_tensor *ln = nb_bce_loss(nb_sigmoid(zn), nb_ones(NB_SHAPE(1)), NB_REDUCE_MEAN);
    EXPECT_VALUES(ln, 1e-4, 20);
    cr_assert_eq(nb_backward(ln), 0, "%s", nb_error());
    EXPECT_VALUES(nb_grad_of(zn), 1e-5, -1);
}

Test(loss, bce_values_and_gradients_at_zero_and_one) {
    /* p  y   loss                     d/dp (sum)
     * 0  1   -max(log 0, -100) = 100  (0 - 1) / max(0, 1e-12) = -1e12
     * 1  0   -max(log 0, -100) = 100  (1 - 0) / 1e-12 = 1e12
     * 0  0   -log(1 - 0) = 0          0 / 1e-12 = 0
     * 1  1   -log 1 = 0               0
     * .25 1  -log .25 = 1.3862944     (.25 - 1) / (.75 .25) = -4
     * .5 .3  -(.3 log .5 + .7 log .5) = log 2 = 0.6931472   .2 / .25 = 0.8
     * d/dy = max(log(1 - p), -100) - max(log p, -100):
     *   100, -100, 0 - (-100) = 100, -100 - 0 = -100, log .75 - log .25 = log 3, 0 */
    nb_tensor *p = nb_set_requires_grad(
        nb_from_array(NB_SHAPE(6), (float[]){0, 1, 0, 1, 0.25f, 0.5f}), true);
    nb_tensor *y = nb_set_requires_grad(
        nb_from_array(NB_SHAPE(6), (float[]){1, 0, 0, 1, 1, 0.3f}), true);
    EXPECT_VALUES(nb_bce_loss(p, y, NB_REDUCE_NONE), 1e-5, 100, 100, 0, 0, 1.3862944f, 0.6931472f);
    cr_assert_eq(nb_backward(nb_bce_loss(p, y, NB_REDUCE_SUM)), 0, "%s", nb_error());
    EXPECT_VALUES(nb_grad_of(p), 1e-5 * 1e12, -1e12f, 1e12f, 0, 0, -4, 0.8f);
    const float *gp = nb_data(nb_grad_of(p));
    cr_assert(fabsf(gp[4] + 4) < 1e-5f && fabsf(gp[5] - 0.8f) < 1e-5f, "%g %g", gp[4], gp[5]);
    EXPECT_VALUES(nb_grad_of(y), 1e-4, 100, -100, 100, -100, 1.0986123f, 0);
}

static nb_tensor *bce_mean(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return nb_bce_loss(in[0], in[1], NB_REDUCE_MEAN);
}

Test(loss, bce_second_derivatives_inside_the_interval) {
    nb_tensor *p = nb_test_leaf(0.05f, 0.95f, NB_SHAPE(2, 3));
    nb_tensor *y = nb_test_leaf(0, 1, NB_SHAPE(2, 3));
    nb_test_gradcheck(bce_mean, NULL, 2, (nb_tensor *[]){p, y}, true);
}

Test(loss, keras_crossentropies_at_zero_and_one) {
    /* Keras clips to [1e-7, 1 - 1e-7]; outside the clip the gradient is 0,
     * and nothing is NaN. In float 1 - 1e-7 is 0.99999988 = 1 - 1.1920929e-7.
     * binary, p = [1, 0, 0, 1], y = [1, 0, 1, 0]:
     *   -log 0.99999988 = 1.19e-7 (twice), -log 1e-7 = 16.118096,
     *   -log(1 - 0.99999988) = -log 1.1920929e-7 = 15.942385;
     *   mean (16.118096 + 15.942385 + 2.4e-7) / 4 = 8.0151205 */
    nb_tensor *p = nb_set_requires_grad(nb_from_array(NB_SHAPE(2, 2), (float[]){1, 0, 0, 1}), true);
    nb_tensor *y = nb_from_array(NB_SHAPE(2, 2), (float[]){1, 0, 1, 0});
    nb_tensor *l = nb_loss_by_name("binary_crossentropy")(p, y);
    EXPECT_VALUES(l, 1e-4, 8.0151205f);
    cr_assert_eq(nb_backward(l), 0, "%s", nb_error());
    EXPECT_VALUES(nb_grad_of(p), 0, 0, 0, 0, 0);

    nb_tensor *q = nb_set_requires_grad(nb_from_array(NB_SHAPE(2, 2), (float[]){1, 0, 0, 1}), true);
    /* categorical, one-hot rows [1,0] and [1,0]: (-log 0.99999988 - log 1e-7) / 2
     * = (1.19e-7 + 16.118096) / 2 = 8.0590480; sparse with labels [0, 0] the same */
    nb_tensor *cc = nb_categorical_crossentropy(q, nb_from_array(NB_SHAPE(2, 2), (float[]){1, 0, 1, 0}));
    EXPECT_VALUES(cc, 1e-4, 8.059048f);
    cr_assert_eq(nb_backward(cc), 0, "%s", nb_error());
    EXPECT_VALUES(nb_grad_of(q), 0, 0, 0, 0, 0);

    nb_tensor *s = nb_set_requires_grad(nb_from_array(NB_SHAPE(2, 2), (float[]){1, 0, 0, 1}), true);
    nb_tensor *sc = nb_sparse_categorical_crossentropy(s, nb_from_array(NB_SHAPE(2), (float[]){0, 0}));
    EXPECT_VALUES(sc, 1e-4, 8.059048f);
    cr_assert_eq(nb_backward(sc), 0, "%s", nb_error());
    EXPECT_VALUES(nb_grad_of(s), 0, 0, 0, 0, 0);
}

/* ---- one failure, one message, naming the function called ----------------------------- */

static int handler_calls;
static char handler_first[512];
static void counting_handler(const char *message, void *user) {
    (void)user;
    if (handler_calls++ == 0) snprintf(handler_first, sizeof handler_first, "%s", message);
}

/* Runs EXPR with a counting handler; expects NULL, exactly one handler call
 * whose message is nb_error(), and the listed fragments in it. */
#define EXPECT_ONE_ERROR(EXPR, ...)                                                         \
    do {                                                                                    \
        handler_calls = 0;                                                                  \
        nb_error_handler prev_ = nb_set_error_handler(counting_handler, NULL);              \
        nb_tensor *r_ = (EXPR);                                                             \
        nb_set_error_handler(prev_, NULL);                                                  \
        cr_assert_null(r_, "%s should fail", #EXPR);                                        \
        cr_assert_eq(handler_calls, 1, "%s: handler called %d times (first: %s)", #EXPR,    \
                     handler_calls, handler_first);                                         \
        cr_assert_str_eq(handler_first, nb_error());                                        \
        EXPECT_ERROR(__VA_ARGS__);                                                          \
    } while (0)

Test(loss, each_failure_reports_once_under_the_called_name) {
    nb_tensor *z = nb_zeros(NB_SHAPE(2, 3)), *p = nb_full(NB_SHAPE(2, 3), 0.3f);
    nb_tensor *bad_label = nb_from_array(NB_SHAPE(2), (float[]){0, 5});
    EXPECT_ONE_ERROR(nb_cross_entropy_loss(z, bad_label, NB_REDUCE_MEAN), "nb_cross_entropy_loss",
                     "label 5", "position 1");
    EXPECT_ONE_ERROR(nb_cross_entropy_loss(z, nb_zeros(NB_SHAPE(3)), NB_REDUCE_MEAN),
                     "nb_cross_entropy_loss", "logits", "[2,3]", "[3]");
    cr_assert_null(strstr(nb_error(), "log-prob"), "%s", nb_error());
    EXPECT_ONE_ERROR(nb_cross_entropy_loss(z, nb_zeros(NB_SHAPE(2)), (nb_reduction)9),
                     "nb_cross_entropy_loss", "reduction");
    EXPECT_ONE_ERROR(nb_cross_entropy_loss(nb_zeros(NB_SHAPE(2, 3, 4)), nb_zeros(NB_SHAPE(2)),
                                           NB_REDUCE_MEAN),
                     "nb_cross_entropy_loss", "logits");
    EXPECT_ONE_ERROR(nb_nll_loss(z, bad_label, NB_REDUCE_MEAN), "nb_nll_loss", "label 5");
    EXPECT_ONE_ERROR(nb_sparse_categorical_crossentropy(p, bad_label),
                     "nb_sparse_categorical_crossentropy", "label 5", "position 1");
    EXPECT_ONE_ERROR(nb_sparse_categorical_crossentropy(p, nb_zeros(NB_SHAPE(3))),
                     "nb_sparse_categorical_crossentropy", "probabilities", "[2,3]", "[3]");
    cr_assert_null(strstr(nb_error(), "log-prob"), "%s", nb_error());
    EXPECT_ONE_ERROR(nb_categorical_crossentropy(p, nb_zeros(NB_SHAPE(2, 4))),
                     "nb_categorical_crossentropy", "[2,3]", "[2,4]");
    EXPECT_ONE_ERROR(nb_bce_loss(p, nb_zeros(NB_SHAPE(3)), NB_REDUCE_MEAN), "nb_bce_loss", "[3]");
    EXPECT_ONE_ERROR(nb_huber_loss(p, nb_zeros(NB_SHAPE(3)), 1, NB_REDUCE_MEAN), "nb_huber_loss");
}

/* ---- unbatched inputs give unbatched results, as in PyTorch --------------------------- */

#define EXPECT_0D(t) nb_test_expect_shape((t), NB_SHAPE())

Test(loss, one_sample_without_reduction_is_0d) {
    /* PyTorch: cross_entropy(tensor([.1, .2, .3]), tensor(1), reduction='none')
     * is 0-d: log(e^.1 + e^.2 + e^.3) - .2 = 1.1019428 */
    nb_tensor *z = nb_from_array(NB_SHAPE(3), (float[]){.1f, .2f, .3f});
    nb_tensor *l = nb_cross_entropy_loss(z, nb_scalar(1), NB_REDUCE_NONE);
    EXPECT_0D(l);
    EXPECT_VALUES(l, 1e-5, 1.1019428f);
    /* and the next op takes it: 1.1019428^2 = 1.2142780 */
    EXPECT_VALUES(nb_mse_loss(l, nb_scalar(0), NB_REDUCE_MEAN), 1e-5, 1.2142780f);
    EXPECT_0D(nb_cross_entropy_loss(z, nb_scalar(1), NB_REDUCE_MEAN));
    EXPECT_0D(nb_cross_entropy_loss(z, nb_scalar(1), NB_REDUCE_SUM));
    /* nll_loss on [C] log-probabilities and a 0-d label: -x[label] */
    nb_tensor *lp = nb_from_array(NB_SHAPE(3), (float[]){-1, -2, -3});
    nb_tensor *n = nb_nll_loss(lp, nb_scalar(2), NB_REDUCE_NONE);
    EXPECT_0D(n);
    EXPECT_VALUES(n, 0, 3);
    EXPECT_0D(nb_nll_loss(lp, nb_scalar(2), NB_REDUCE_MEAN));
    /* batched: [N] without reduction */
    EXPECT_SHAPE(nb_cross_entropy_loss(nb_zeros(NB_SHAPE(2, 3)), nb_zeros(NB_SHAPE(2)), NB_REDUCE_NONE), 2);
    /* Keras's crossentropies on one sample [C]: a 0-d mean.
     * sparse: -log .3 = 1.2039728; categorical with one-hot [0,1,0] the same */
    nb_tensor *prob = nb_from_array(NB_SHAPE(3), (float[]){.2f, .3f, .5f});
    nb_tensor *s = nb_sparse_categorical_crossentropy(prob, nb_scalar(1));
    EXPECT_0D(s);
    EXPECT_VALUES(s, 1e-5, 1.2039728f);
    nb_tensor *c = nb_categorical_crossentropy(prob, nb_from_array(NB_SHAPE(3), (float[]){0, 1, 0}));
    EXPECT_0D(c);
    EXPECT_VALUES(c, 1e-5, 1.2039728f);
}

static nb_tensor *ce_one(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return nb_cross_entropy_loss(in[0], nb_scalar(2), NB_REDUCE_NONE);
}

Test(loss, one_sample_gradcheck) {
    nb_tensor *z = nb_test_leaf(-2, 2, NB_SHAPE(4));
    nb_test_gradcheck(ce_one, NULL, 1, &z, true);
}

/* ---- l1 and huber at their kinks (PyTorch's values) ------------------------------------- */

Test(loss, l1_and_huber_at_the_kinks) {
    /* d = p - t = [0, 1, -1, 2]. l1: sign(d) / 4 = [0, .25, -.25, .25].
     * huber, delta 1: d at |d| <= 1, else delta sign(d): [0, 1, -1, 1] / 4
     * (at |d| = delta both pieces give d, so PyTorch's choice of side does
     * not matter; at d = 0 the gradient is 0). */
    nb_tensor *t = nb_from_array(NB_SHAPE(4), (float[]){1, 1, 1, 1});
    nb_tensor *p = nb_set_requires_grad(nb_from_array(NB_SHAPE(4), (float[]){1, 2, 0, 3}), true);
    cr_assert_eq(nb_backward(nb_l1_loss(p, t, NB_REDUCE_MEAN)), 0, "%s", nb_error());
    EXPECT_VALUES(nb_grad_of(p), 0, 0, 0.25f, -0.25f, 0.25f);
    nb_zero_grad(p);
    cr_assert_eq(nb_backward(nb_huber_loss(p, t, 1, NB_REDUCE_MEAN)), 0, "%s", nb_error());
    EXPECT_VALUES(nb_grad_of(p), 0, 0, 0.25f, -0.25f, 0.25f);
}

/* ---- cross-entropy over sequences, and ignore_index ------------------------------------
 * logits [B,T,V] and labels [B,T], as a language model has them. By hand:
 * -log softmax(1,2,3)[2] = 0.40760596, [1] = 1.40760596, and over equal
 * logits -log(1/3) = 1.09861229. */

static nb_tensor *seq_logits(void) {
    return nb_from_array(NB_SHAPE(2, 2, 3), (float[]){1, 2, 3, 1, 1, 1, 1, 2, 3, 0, 0, 0});
}

Test(loss, cross_entropy_over_sequences_by_hand) {
    nb_tensor *z = seq_logits(), *y = nb_from_array(NB_SHAPE(2, 2), (float[]){2, 0, 1, 1});
    nb_tensor *none = nb_cross_entropy_loss(z, y, NB_REDUCE_NONE);
    EXPECT_SHAPE(none, 2, 2);
    EXPECT_VALUES(none, 1e-6, 0.40760596f, 1.09861229f, 1.40760596f, 1.09861229f);
    EXPECT_VALUES(nb_cross_entropy_loss(z, y, NB_REDUCE_MEAN), 1e-6, 1.00310913f);
    EXPECT_VALUES(nb_nll_loss(nb_log_softmax(z, -1), y, NB_REDUCE_SUM), 1e-5, 4.0124365f);
    /* the leading shapes must agree */
    cr_assert_null(nb_cross_entropy_loss(z, nb_zeros(NB_SHAPE(2, 3)), NB_REDUCE_MEAN));
    EXPECT_ERROR("nb_cross_entropy_loss", "[2,2,3]", "[2,3]");
}

Test(loss, cross_entropy_ignore_index_by_hand) {
    nb_tensor *z = nb_set_requires_grad(seq_logits(), true);
    nb_tensor *y = nb_from_array(NB_SHAPE(2, 2), (float[]){2, -100, 1, -100});
    EXPECT_VALUES(nb_cross_entropy_loss_ignore(z, y, -100, NB_REDUCE_NONE), 1e-6, 0.40760596f, 0,
                  1.40760596f, 0);
    EXPECT_VALUES(nb_cross_entropy_loss_ignore(z, y, -100, NB_REDUCE_SUM), 1e-5, 1.81521192f);
    /* the mean is over the two labels kept */
    nb_tensor *loss = nb_cross_entropy_loss_ignore(z, y, -100, NB_REDUCE_MEAN);
    EXPECT_VALUES(loss, 1e-6, 0.90760596f);
    /* gradient (softmax - onehot) / 2 on the kept rows, 0 on the ignored */
    cr_assert_eq(nb_backward(loss), 0, "%s", nb_error());
    EXPECT_VALUES(nb_grad_of(z), 1e-6, 0.09003057f / 2, 0.24472847f / 2, (0.66524096f - 1) / 2, 0, 0,
                  0, 0.09003057f / 2, (0.24472847f - 1) / 2, 0.66524096f / 2, 0, 0, 0);
    /* an ignore_index that is a class: class 1 is skipped */
    nb_tensor *y1 = nb_from_array(NB_SHAPE(2, 2), (float[]){2, 0, 1, 1});
    EXPECT_VALUES(nb_cross_entropy_loss_ignore(seq_logits(), y1, 1, NB_REDUCE_MEAN), 1e-6,
                  (0.40760596f + 1.09861229f) / 2);
    /* every label ignored: 0/0, NaN as in PyTorch */
    nb_tensor *all = nb_full(NB_SHAPE(2, 2), -1);
    cr_assert(isnan(nb_item(nb_cross_entropy_loss_ignore(seq_logits(), all, -1, NB_REDUCE_MEAN))));
}

static nb_tensor *ce_ignore(nb_tensor *const *in, void *ctx) {
    return nb_cross_entropy_loss_ignore(in[0], (nb_tensor *)ctx, -100, NB_REDUCE_MEAN);
}

Test(loss, cross_entropy_ignore_index_gradcheck) {
    nb_tensor *z = nb_test_leaf(-3, 3, NB_SHAPE(2, 3, 4));
    nb_tensor *labels = nb_from_array(NB_SHAPE(2, 3), (float[]){0, -100, 3, 2, 2, -100});
    nb_test_gradcheck(ce_ignore, labels, 1, &z, true);
}

Test(loss, cross_entropy_ignore_index_bad_input) {
    nb_tensor *z = seq_logits();
    cr_assert_null(nb_cross_entropy_loss_ignore(z, nb_from_array(NB_SHAPE(2, 2), (float[]){0, 3, 1, -100}),
                                                -100, NB_REDUCE_MEAN));
    EXPECT_ERROR("nb_cross_entropy_loss_ignore", "label 3", "position 1");
    cr_assert_null(nb_cross_entropy_loss_ignore(z, nb_zeros(NB_SHAPE(4)), -100, NB_REDUCE_MEAN));
    EXPECT_ERROR("nb_cross_entropy_loss_ignore", "[2,2,3]", "[4]");
    nb_clear_error();
    cr_assert_null(nb_cross_entropy_loss_ignore(NULL, nb_zeros(NB_SHAPE(4)), -100, NB_REDUCE_MEAN));
    cr_assert_null(nb_error());
}
