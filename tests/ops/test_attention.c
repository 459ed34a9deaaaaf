/* test_attention.c — the ops of ops/attention.c (scaled dot-product
 * attention, its fused masked softmax and that softmax's fused backward,
 * softmax_grad) and nb_matmul_t, which attention uses.
 *
 * Values are checked against softmax values worked out by hand and against
 * a naive triple loop written here from the published formula
 * softmax(q·kᵀ/sqrt(D) + mask)·v, in double. Each op is gradchecked to first
 * and second order in every input; the causal mask is checked by changing
 * later tokens and watching earlier outputs stay put; fully masked rows
 * give zeros, not NaN.
 */
#include <string.h>

#include "test_util.h"

TestSuite(attention, NB_TEST_HOOKS);

/* ---- masked_softmax ---------------------------------------------------------------- */

Test(attention, masked_softmax_values_by_hand) {
    /* softmax(1, 2, 3) = e^i / (e + e^2 + e^3); softmax(2, 4, 6) = (e^-4, e^-2, 1) / sum */
    nb_tensor *s = nb_from_array(NB_SHAPE(2, 3), (float[]){1, 2, 3, 2, 4, 6});
    EXPECT_VALUES(nb_masked_softmax(s, NULL, false, 1.0f), 1e-6, 0.09003057f, 0.24472847f,
                  0.66524096f, 0.01587624f, 0.11731043f, 0.86681333f);
    /* scale 0.5 makes row 1 the same as row 0 */
    nb_tensor *y = nb_masked_softmax(s, NULL, false, 0.5f);
    EXPECT_VALUES(nb_slice(y, 0, 1, 2, 1), 1e-6, 0.09003057f, 0.24472847f, 0.66524096f);
    /* causal: row 0 sees key 0, row 1 keys 0 and 1: softmax(2, 4) */
    EXPECT_VALUES(nb_masked_softmax(s, NULL, true, 1.0f), 1e-6, 1, 0, 0, 0.11920292f, 0.88079708f, 0);
    /* an additive mask of -inf hides key 2, and 1.0 lifts key 0: softmax(2, 2), softmax(3, 4) */
    nb_tensor *m = nb_from_array(NB_SHAPE(3), (float[]){1.0f, 0, -INFINITY});
    EXPECT_VALUES(nb_masked_softmax(s, m, false, 1.0f), 1e-6, 0.5f, 0.5f, 0, 0.26894142f,
                  0.73105858f, 0);
}

Test(attention, masked_softmax_is_stable_for_large_scores) {
    nb_tensor *s = nb_from_array(NB_SHAPE(1, 2), (float[]){1000, 1000});
    EXPECT_VALUES(nb_masked_softmax(s, NULL, false, 1.0f), 0, 0.5f, 0.5f);
}

Test(attention, fully_masked_rows_give_zero_weights_and_no_gradient) {
    nb_tensor *s = nb_test_leaf(-1, 1, NB_SHAPE(2, 3));
    nb_tensor *m = nb_from_array(NB_SHAPE(2, 3), (float[]){0, 0, 0, -INFINITY, -INFINITY, -INFINITY});
    nb_tensor *y = nb_masked_softmax(s, m, false, 1.0f);
    const float *p = nb_data(y);
    for (int i = 3; i < 6; i++) cr_assert_eq(p[i], 0.0f);
    cr_assert_float_eq(p[0] + p[1] + p[2], 1.0f, 1e-6);
    nb_tensor *w = nb_from_array(NB_SHAPE(2, 3), (float[]){1, 2, 3, 4, 5, 6});
    cr_assert_eq(nb_backward(nb_sum(nb_mul(y, w), NB_ALL, false)), 0, "%s", nb_error());
    const float *g = nb_data(nb_grad_of(s));
    for (int i = 0; i < 6; i++) cr_assert(isfinite(g[i]), "gradient %d is %g", i, (double)g[i]);
    for (int i = 3; i < 6; i++) cr_assert_eq(g[i], 0.0f);
    /* attention with such a row outputs zeros there */
    nb_tensor *q = nb_ones(NB_SHAPE(2, 4)), *k = nb_ones(NB_SHAPE(3, 4)), *v = nb_ones(NB_SHAPE(3, 2));
    EXPECT_VALUES(nb_scaled_dot_product_attention(q, k, v, m, false, 0), 1e-6, 1, 1, 0, 0);
}

static nb_tensor *f_masked_softmax(nb_tensor *const *in, void *ctx) {
    bool causal = *(bool *)ctx;
    return nb_masked_softmax(in[0], in[1], causal, 0.7f);
}

Test(attention, masked_softmax_gradcheck_first_and_second_order) {
    for (int c = 0; c < 2; c++) {
        bool causal = c;
        /* the mask broadcasts over the batch axis; both inputs get gradients */
        nb_tensor *in[2] = {nb_test_leaf(-2, 2, NB_SHAPE(2, 3, 4)), nb_test_leaf(-1, 1, NB_SHAPE(3, 4))};
        nb_test_gradcheck(f_masked_softmax, &causal, 2, in, true);
    }
}

/* ---- softmax_grad: masked_softmax's backward, one op ------------------------------
 * Reached as the gradient in s of sum(w·masked_softmax(s)): by hand, with
 * scale·s = [0, ln 3] the weights are y = [1/4, 3/4], and w = [1, 0] gives
 * dz = y·(w − sum(w·y)) = [1/4·3/4, 3/4·(−1/4)] = [0.1875, −0.1875], times the
 * scale 2 for s. Its second row is causal's first query: one key, weight 1,
 * gradient 0 whatever w; the hidden key gets 0. */
Test(attention, softmax_grad_values_by_hand) {
    float l3 = logf(3.0f) / 2;
    nb_tensor *s = nb_set_requires_grad(nb_from_array(NB_SHAPE(2, 2), (const float[]){0, l3, 5, 7}), true);
    nb_tensor *w = nb_from_array(NB_SHAPE(2, 2), (const float[]){1, 0, 3, 4});
    nb_tensor *y = nb_sum(nb_mul(w, nb_masked_softmax(s, NULL, false, 2.0f)), NB_AXES(), false), *g = NULL;
    cr_assert_eq(nb_grad(1, &y, NULL, 1, &s, &g, NULL), 0);
    float e = expf(4.0f), y0 = 1 / (1 + e), y1 = e / (1 + e); /* second row: weights of [10, 14] */
    EXPECT_VALUES(g, 1e-6, 0.375f, -0.375f, 2 * y0 * (3 - (3 * y0 + 4 * y1)), 2 * y1 * (4 - (3 * y0 + 4 * y1)));
    /* causal, rows [[a, b], [c, d]]: the first query sees a only */
    nb_tensor *yc = nb_sum(nb_mul(w, nb_masked_softmax(s, NULL, true, 2.0f)), NB_AXES(), false), *gc = NULL;
    cr_assert_eq(nb_grad(1, &yc, NULL, 1, &s, &gc, NULL), 0);
    EXPECT_VALUES(gc, 1e-6, 0, 0, 2 * y0 * (3 - (3 * y0 + 4 * y1)), 2 * y1 * (4 - (3 * y0 + 4 * y1)));
}

/* d/ds sum(w·masked_softmax(s)) with a graph: a function of s and w made of
 * softmax_grad, whose own backward the gradcheck then checks (and, second
 * order, that backward's). */
static nb_tensor *f_softmax_grad(nb_tensor *const *in, void *ctx) {
    bool causal = *(bool *)ctx;
    nb_tensor *s = in[0], *w = in[1], *g = NULL;
    nb_tensor *y = nb_sum(nb_mul(w, nb_masked_softmax(s, NULL, causal, 0.7f)), NB_AXES(), false);
    return nb_grad(1, &y, NULL, 1, &s, &g, &(nb_grad_opts){.create_graph = true}) == 0 ? g : NULL;
}

Test(attention, softmax_grad_gradcheck_first_and_second_order) {
    for (int c = 0; c < 2; c++) {
        bool causal = c;
        nb_tensor *in[2] = {nb_test_leaf(-2, 2, NB_SHAPE(2, 3, 3)), nb_test_leaf(-1, 1, NB_SHAPE(2, 3, 3))};
        nb_test_gradcheck(f_softmax_grad, &causal, 2, in, true);
    }
}

/* ---- scaled dot-product attention ---------------------------------------------------- */

/* The formula as loops, in double: out[b,i,:] = sum_j w[i,j] v[b,j,:] with
 * w = softmax_j(scale·q[b,i]·k[b,j] + mask[i,j]), keys j > i left out when causal. */
static void naive_attention(const float *q, const float *k, const float *v, const float *mask,
                            bool causal, int nb, int tq, int tk, int d, int dv, double scale,
                            double *out) {
    for (int b = 0; b < nb; b++)
        for (int i = 0; i < tq; i++) {
            double z[16], mx = -INFINITY, sum = 0;
            for (int j = 0; j < tk; j++) {
                double dot = 0;
                for (int c = 0; c < d; c++) dot += (double)q[(b * tq + i) * d + c] * k[(b * tk + j) * d + c];
                z[j] = scale * dot + (mask ? mask[i * tk + j] : 0);
                if (causal && j > i) z[j] = -INFINITY;
                if (z[j] > mx) mx = z[j];
            }
            for (int j = 0; j < tk; j++) sum += z[j] = exp(z[j] - mx);
            for (int c = 0; c < dv; c++) {
                double acc = 0;
                for (int j = 0; j < tk; j++) acc += z[j] / sum * v[(b * tk + j) * dv + c];
                out[(b * tq + i) * dv + c] = acc;
            }
        }
}

static void expect_close(const nb_tensor *t, const double *want, int64_t n, double tol) {
    cr_assert_not_null(t, "%s", nb_error() ? nb_error() : "NULL");
    cr_assert_eq(nb_numel(t), n);
    for (int64_t i = 0; i < n; i++)
        cr_assert(fabs(nb_data(t)[i] - want[i]) <= tol, "element %lld: %.8g, expected %.8g",
                  (long long)i, (double)nb_data(t)[i], want[i]);
}

Test(attention, values_match_a_naive_loop) {
    /* batch 2 x heads 3 seen as 6 matrices; Tq 5, Tk 7, D 4, Dv 3 */
    nb_tensor *q = nb_uniform(NULL, -1, 1, NB_SHAPE(2, 3, 5, 4));
    nb_tensor *k = nb_uniform(NULL, -1, 1, NB_SHAPE(2, 3, 7, 4));
    nb_tensor *v = nb_uniform(NULL, -1, 1, NB_SHAPE(2, 3, 7, 3));
    nb_tensor *mask = nb_uniform(NULL, -2, 2, NB_SHAPE(5, 7));
    double want[2 * 3 * 5 * 3];
    naive_attention(nb_data(q), nb_data(k), nb_data(v), NULL, false, 6, 5, 7, 4, 3, 0.5, want);
    nb_tensor *y = nb_scaled_dot_product_attention(q, k, v, NULL, false, 0);
    EXPECT_SHAPE(y, 2, 3, 5, 3);
    expect_close(y, want, 90, 1e-5);
    naive_attention(nb_data(q), nb_data(k), nb_data(v), nb_data(mask), true, 6, 5, 7, 4, 3, 0.3, want);
    expect_close(nb_scaled_dot_product_attention(q, k, v, mask, true, 0.3f), want, 90, 1e-5);
}

Test(attention, causal_outputs_ignore_later_tokens) {
    int64_t t = 6;
    nb_tensor *q = nb_uniform(NULL, -1, 1, NB_SHAPE(1, 2, t, 4));
    nb_tensor *k = nb_uniform(NULL, -1, 1, NB_SHAPE(1, 2, t, 4));
    nb_tensor *v = nb_uniform(NULL, -1, 1, NB_SHAPE(1, 2, t, 4));
    nb_tensor *y0 = nb_clone(nb_scaled_dot_product_attention(q, k, v, NULL, true, 0));
    /* change token 3 (and after) in q, k and v of both heads */
    for (int h = 0; h < 2; h++)
        for (int64_t i = 3 * 4; i < t * 4; i++) {
            nb_data_mut(q)[h * t * 4 + i] += 5;
            nb_data_mut(k)[h * t * 4 + i] -= 3;
            nb_data_mut(v)[h * t * 4 + i] *= -2;
        }
    nb_tensor *y1 = nb_scaled_dot_product_attention(q, k, v, NULL, true, 0);
    int changed = 0;
    for (int h = 0; h < 2; h++)
        for (int64_t i = 0; i < t * 4; i++) {
            float a = nb_data(y0)[h * t * 4 + i], b = nb_data(y1)[h * t * 4 + i];
            if (i < 3 * 4) cr_assert_eq(a, b, "head %d element %lld changed", h, (long long)i);
            else changed += a != b;
        }
    cr_assert_gt(changed, 0, "the later outputs should change");
}

static nb_tensor *f_attention(nb_tensor *const *in, void *ctx) {
    bool causal = *(bool *)ctx;
    return nb_scaled_dot_product_attention(in[0], in[1], in[2], in[3], causal, 0);
}

Test(attention, gradcheck_first_and_second_order) {
    for (int c = 0; c < 2; c++) {
        bool causal = c;
        nb_tensor *in[4] = {nb_test_leaf(-1, 1, NB_SHAPE(2, 3, 3)), nb_test_leaf(-1, 1, NB_SHAPE(2, 4, 3)),
                            nb_test_leaf(-1, 1, NB_SHAPE(2, 4, 2)), nb_test_leaf(-1, 1, NB_SHAPE(3, 4))};
        nb_test_gradcheck(f_attention, &causal, 4, in, true);
    }
}

Test(attention, bad_input_gives_null_and_a_message) {
    nb_tensor *q = nb_zeros(NB_SHAPE(2, 3, 4)), *k = nb_zeros(NB_SHAPE(2, 5, 4)), *v = nb_zeros(NB_SHAPE(2, 5, 6));
    cr_assert_null(nb_scaled_dot_product_attention(q, nb_zeros(NB_SHAPE(2, 5, 3)), v, NULL, false, 0));
    EXPECT_ERROR("nb_scaled_dot_product_attention", "[2,3,4]", "[2,5,3]", "[2,5,6]");
    cr_assert_null(nb_scaled_dot_product_attention(q, k, nb_zeros(NB_SHAPE(2, 4, 6)), NULL, false, 0));
    EXPECT_ERROR("nb_scaled_dot_product_attention", "[2,4,6]");
    cr_assert_null(nb_scaled_dot_product_attention(q, k, v, nb_zeros(NB_SHAPE(3, 4)), false, 0));
    EXPECT_ERROR("nb_scaled_dot_product_attention", "mask [3,4]", "[2,3,5]");
    cr_assert_null(nb_scaled_dot_product_attention(q, k, v, NULL, false, -1));
    EXPECT_ERROR("nb_scaled_dot_product_attention", "scale -1");
    cr_assert_null(nb_masked_softmax(nb_zeros(NB_SHAPE(3)), NULL, false, 1));
    EXPECT_ERROR("nb_masked_softmax", "[3]");
    cr_assert_null(nb_masked_softmax(nb_zeros(NB_SHAPE(2, 3)), nb_zeros(NB_SHAPE(2)), false, 1));
    EXPECT_ERROR("nb_masked_softmax", "mask [2]", "[2,3]");
    nb_clear_error();
    cr_assert_null(nb_scaled_dot_product_attention(NULL, k, v, NULL, false, 0));
    cr_assert_null(nb_masked_softmax(NULL, NULL, true, 1));
    cr_assert_null(nb_matmul_t(NULL, k, false, true));
    cr_assert_null(nb_error(), "NULL input must not set a message");
}

/* ---- matmul_t --------------------------------------------------------------------------- */

Test(attention, matmul_t_values_by_hand) {
    /* a [2,3] = [[1,2,3],[4,5,6]]; a·aᵀ = [[14,32],[32,77]]; aᵀ·a [3,3] */
    nb_tensor *a = nb_from_array(NB_SHAPE(2, 3), (float[]){1, 2, 3, 4, 5, 6});
    EXPECT_VALUES(nb_matmul_t(a, a, false, true), 0, 14, 32, 32, 77);
    EXPECT_VALUES(nb_matmul_t(a, a, true, false), 0, 17, 22, 27, 22, 29, 36, 27, 36, 45);
    nb_tensor *b = nb_from_array(NB_SHAPE(3, 2), (float[]){1, 0, 0, 1, 1, 1});
    /* aᵀ·bᵀ = (b·a)ᵀ: b·a = [[1,2,3],[4,5,6],[5,7,9]] */
    EXPECT_VALUES(nb_matmul_t(a, b, true, true), 0, 1, 4, 5, 2, 5, 7, 3, 6, 9);
    cr_assert_null(nb_matmul_t(a, a, false, false));
    EXPECT_ERROR("nb_matmul_t", "[2,3]");
    cr_assert_null(nb_matmul_t(nb_zeros(NB_SHAPE(3)), a, false, false));
    EXPECT_ERROR("nb_matmul_t", "two axes");
}

static nb_tensor *f_matmul_t(nb_tensor *const *in, void *ctx) {
    const bool *t = ctx;
    return nb_matmul_t(in[0], in[1], t[0], t[1]);
}

Test(attention, matmul_t_gradcheck_first_and_second_order) {
    for (int f = 0; f < 4; f++) {
        bool t[2] = {f & 1, f >> 1};
        nb_tensor *a = t[0] ? nb_test_leaf(-1, 1, NB_SHAPE(2, 4, 3)) : nb_test_leaf(-1, 1, NB_SHAPE(2, 3, 4));
        nb_tensor *b = t[1] ? nb_test_leaf(-1, 1, NB_SHAPE(5, 4)) : nb_test_leaf(-1, 1, NB_SHAPE(4, 5));
        nb_tensor *in[2] = {a, b};
        nb_test_gradcheck(f_matmul_t, t, 2, in, true);
    }
}
