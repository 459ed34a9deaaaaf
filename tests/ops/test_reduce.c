/* test_reduce.c — the reductions (sum, mean, max, min, var, logsumexp),
 * argmax/argmin and softmax/log_softmax: values worked out by hand on small
 * tensors (a 2x3 and a 2x3x4 arange), keepdim shapes, negative and repeated
 * axes, NB_ALL and 0-d tensors; every kernel path against a plain double
 * loop; gradients by finite differences over many axis choices (second order
 * where smooth); where max and min send their gradient; errors and NULL.
 */
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

TestSuite(reduce, NB_TEST_HOOKS);

/* Asserts that t is 0-dimensional (EXPECT_SHAPE needs at least one size). */
#define EXPECT_0D(t)                                                                     \
    do {                                                                                 \
        const nb_tensor *t_ = (t);                                                       \
        cr_assert_not_null(t_, "tensor is NULL: %s", nb_error() ? nb_error() : "");      \
        cr_assert_eq(nb_ndim(t_), 0, "%d dimensions, expected 0", nb_ndim(t_));          \
    } while (0)

/* [[0,1,2],[3,4,5]] */
static nb_tensor *a23(void) { return nb_reshape(nb_arange(0, 6, 1), NB_SHAPE(2, 3)); }
/* element (i,j,k) is 12i + 4j + k */
static nb_tensor *a234(void) { return nb_reshape(nb_arange(0, 24, 1), NB_SHAPE(2, 3, 4)); }
/* element number n is 7n mod 24: distinct values, maxima in varied places:
 * [[[0,7,14,21],[4,11,18,1],[8,15,22,5]], [[12,19,2,9],[16,23,6,13],[20,3,10,17]]] */
static nb_tensor *p234(void) {
    float v[24];
    for (int n = 0; n < 24; n++) v[n] = (float)((7 * n) % 24);
    return nb_from_array(NB_SHAPE(2, 3, 4), v);
}
static nb_tensor *m23(void) { return nb_from_array(NB_SHAPE(2, 3), (float[]){3, 1, 4, 1, 5, 9}); }

/* ---- values ------------------------------------------------------------------ */

Test(reduce, sum_values_2x3) {
    nb_tensor *x = a23();
    EXPECT_VALUES(nb_sum(x, NB_AXES(0), false), 0, 3, 5, 7);
    EXPECT_VALUES(nb_sum(x, NB_AXES(1), false), 0, 3, 12);
    EXPECT_VALUES(nb_sum(x, NB_AXES(-1), false), 0, 3, 12);
    EXPECT_VALUES(nb_sum(x, NB_AXES(-2), false), 0, 3, 5, 7);
    nb_tensor *all = nb_sum(x, NB_ALL, false);
    EXPECT_0D(all);
    EXPECT_VALUES(all, 0, 15);
    cr_expect_eq(nb_item(all), 15.0f);
    EXPECT_SHAPE(nb_sum(x, NB_AXES(0), true), 1, 3);
    EXPECT_SHAPE(nb_sum(x, NB_AXES(1), true), 2, 1);
    EXPECT_SHAPE(nb_sum(x, NB_AXES(1), false), 2);
    nb_tensor *allk = nb_sum(x, NB_ALL, true);
    EXPECT_SHAPE(allk, 1, 1);
    EXPECT_VALUES(allk, 0, 15);
    EXPECT_0D(nb_sum(x, NB_AXES(0, 1), false));
}

Test(reduce, sum_values_2x3x4) {
    nb_tensor *x = a234();
    /* middle axis: 36i + 12 + 3k */
    nb_tensor *s1 = nb_sum(x, NB_AXES(1), false);
    EXPECT_SHAPE(s1, 2, 4);
    EXPECT_VALUES(s1, 0, 12, 15, 18, 21, 48, 51, 54, 57);
    /* two axes apart: 60 + 32j, in any order, negative or not */
    EXPECT_VALUES(nb_sum(x, NB_AXES(0, 2), false), 0, 60, 92, 124);
    EXPECT_VALUES(nb_sum(x, NB_AXES(2, 0), false), 0, 60, 92, 124);
    EXPECT_VALUES(nb_sum(x, NB_AXES(-1, -3), false), 0, 60, 92, 124);
    EXPECT_SHAPE(nb_sum(x, NB_AXES(0, 2), true), 1, 3, 1);
    EXPECT_SHAPE(nb_sum(x, NB_AXES(0, 2), false), 3);
    /* trailing axes: 144i + 66; leading: 60 + 6k */
    EXPECT_VALUES(nb_sum(x, NB_AXES(1, 2), false), 0, 66, 210);
    EXPECT_SHAPE(nb_sum(x, NB_AXES(-2, -1), true), 2, 1, 1);
    EXPECT_VALUES(nb_sum(x, NB_AXES(0, 1), false), 0, 60, 66, 72, 78);
    EXPECT_VALUES(nb_sum(x, NB_ALL, false), 0, 276);
    EXPECT_SHAPE(nb_sum(x, NB_ALL, true), 1, 1, 1);
    EXPECT_0D(nb_sum(x, NB_AXES(0, 1, 2), false));
}

Test(reduce, mean_values) {
    nb_tensor *x = a23();
    EXPECT_VALUES(nb_mean(x, NB_AXES(0), false), 1e-6, 1.5f, 2.5f, 3.5f);
    EXPECT_VALUES(nb_mean(x, NB_AXES(-1), false), 1e-6, 1, 4);
    nb_tensor *all = nb_mean(x, NB_ALL, false);
    EXPECT_0D(all);
    EXPECT_VALUES(all, 1e-6, 2.5f);
    nb_tensor *y = a234();
    EXPECT_VALUES(nb_mean(y, NB_AXES(0, 2), false), 1e-6, 7.5f, 11.5f, 15.5f);
    nb_tensor *m1 = nb_mean(y, NB_AXES(1), true);
    EXPECT_SHAPE(m1, 2, 1, 4);
    EXPECT_VALUES(m1, 1e-6, 4, 5, 6, 7, 16, 17, 18, 19);
    EXPECT_VALUES(nb_mean(y, NB_ALL, true), 1e-6, 11.5f);
}

Test(reduce, max_min_values) {
    nb_tensor *x = m23(); /* [[3,1,4],[1,5,9]] */
    EXPECT_VALUES(nb_max(x, NB_AXES(0), false), 0, 3, 5, 9);
    EXPECT_VALUES(nb_max(x, NB_AXES(1), false), 0, 4, 9);
    EXPECT_VALUES(nb_min(x, NB_AXES(0), false), 0, 1, 1, 4);
    EXPECT_VALUES(nb_min(x, NB_AXES(-1), false), 0, 1, 1);
    nb_tensor *mx = nb_max(x, NB_ALL, false), *mn = nb_min(x, NB_ALL, true);
    EXPECT_0D(mx);
    EXPECT_VALUES(mx, 0, 9);
    EXPECT_SHAPE(mn, 1, 1);
    EXPECT_VALUES(mn, 0, 1);
    EXPECT_SHAPE(nb_max(x, NB_AXES(1), true), 2, 1);

    nb_tensor *p = p234();
    nb_tensor *m1 = nb_max(p, NB_AXES(1), false);
    EXPECT_SHAPE(m1, 2, 4);
    EXPECT_VALUES(m1, 0, 8, 15, 22, 21, 20, 23, 10, 17);
    EXPECT_VALUES(nb_min(p, NB_AXES(-2), false), 0, 0, 7, 14, 1, 12, 3, 2, 9);
    EXPECT_VALUES(nb_max(p, NB_AXES(0, 2), false), 0, 21, 23, 22);
    EXPECT_VALUES(nb_min(p, NB_AXES(2, 0), false), 0, 0, 1, 3);
    EXPECT_SHAPE(nb_max(p, NB_AXES(0, 2), true), 1, 3, 1);
    EXPECT_VALUES(nb_max(p, NB_AXES(1, 2), false), 0, 22, 23);
    EXPECT_VALUES(nb_min(p, NB_ALL, false), 0, 0);
    EXPECT_VALUES(nb_max(p, NB_ALL, false), 0, 23);
}

Test(reduce, max_propagates_nan) {
    nb_tensor *x = nb_from_array(NB_SHAPE(2, 3), (float[]){1, NAN, 3, 4, 5, 6});
    EXPECT_VALUES(nb_max(x, NB_AXES(1), false), 0, NAN, 6);
    EXPECT_VALUES(nb_min(x, NB_AXES(1), false), 0, NAN, 4);
    EXPECT_VALUES(nb_argmax(x, 1, false), 0, 1, 2);
    EXPECT_VALUES(nb_max(x, NB_ALL, false), 0, NAN);
}

Test(reduce, var_values) {
    nb_tensor *x = a23();
    EXPECT_VALUES(nb_var(x, NB_AXES(1), 1, false), 1e-6, 1, 1);
    EXPECT_VALUES(nb_var(x, NB_AXES(1), 0, false), 1e-6, 2.0f / 3, 2.0f / 3);
    EXPECT_VALUES(nb_var(x, NB_AXES(0), 1, false), 1e-5, 4.5f, 4.5f, 4.5f);
    nb_tensor *all = nb_var(x, NB_ALL, 1, false);
    EXPECT_0D(all);
    EXPECT_VALUES(all, 1e-6, 3.5f);
    EXPECT_VALUES(nb_var(x, NB_ALL, 0, false), 1e-6, 17.5f / 6);
    EXPECT_SHAPE(nb_var(x, NB_AXES(1), 1, true), 2, 1);
    /* axes (0,2) of 12i + 4j + k: {0,1,2,3,12,13,14,15} + 4j, squares summing to 298 */
    nb_tensor *v = nb_var(a234(), NB_AXES(0, 2), 1, true);
    EXPECT_SHAPE(v, 1, 3, 1);
    EXPECT_VALUES(v, 1e-4, 298.0f / 7, 298.0f / 7, 298.0f / 7);
}

Test(reduce, var_without_degrees_of_freedom_is_nan) {
    nb_tensor *one = nb_from_array(NB_SHAPE(1), (float[]){5});
    EXPECT_VALUES(nb_var(one, NB_ALL, 1, false), 0, NAN);
    EXPECT_VALUES(nb_var(one, NB_ALL, 0, false), 0, 0);
    nb_tensor *two = nb_from_array(NB_SHAPE(2), (float[]){1, 2});
    EXPECT_VALUES(nb_var(two, NB_ALL, 2, false), 0, NAN);
    EXPECT_VALUES(nb_var(two, NB_ALL, 3, false), 0, NAN);
    cr_expect_null(nb_error(), "%s", nb_error());
}

Test(reduce, logsumexp_values) {
    nb_tensor *big = nb_from_array(NB_SHAPE(3), (float[]){1000, 1001, 1002});
    nb_tensor *l = nb_logsumexp(big, NB_ALL, false);
    EXPECT_0D(l);
    EXPECT_VALUES(l, 1e-4, 1002.40760596f);
    nb_tensor *x = a23();
    EXPECT_VALUES(nb_logsumexp(x, NB_AXES(1), false), 1e-5, 2.40760596f, 5.40760596f);
    EXPECT_SHAPE(nb_logsumexp(x, NB_AXES(1), true), 2, 1);
    EXPECT_VALUES(nb_logsumexp(x, NB_ALL, false), 1e-5, 5.45619332f);
    /* 2x3x4 arange over axis 1: log(e^0 + e^4 + e^8) + 12i + k */
    float l1 = (float)(8 + log(1 + exp(-4.0) + exp(-8.0)));
    EXPECT_VALUES(nb_logsumexp(a234(), NB_AXES(-2), false), 1e-5, l1, l1 + 1, l1 + 2, l1 + 3,
                  l1 + 12, l1 + 13, l1 + 14, l1 + 15);
    nb_tensor *neg = nb_from_array(NB_SHAPE(3), (float[]){-1000, -1001, -1002});
    EXPECT_VALUES(nb_logsumexp(neg, NB_ALL, false), 1e-4, -999.59239404f);
}

Test(reduce, logsumexp_with_infinities) {
    nb_tensor *x = nb_from_array(NB_SHAPE(3, 2), (float[]){-INFINITY, 0, -INFINITY, -INFINITY,
                                                           -INFINITY, 1000});
    EXPECT_VALUES(nb_logsumexp(x, NB_AXES(1), false), 1e-4, 0, -INFINITY, 1000);
    nb_tensor *p = nb_from_array(NB_SHAPE(2), (float[]){INFINITY, 0});
    EXPECT_VALUES(nb_logsumexp(p, NB_ALL, false), 0, INFINITY);
    /* the gradient of a -inf entry is 0, not NaN */
    nb_tensor *g = nb_set_requires_grad(nb_from_array(NB_SHAPE(3), (float[]){-INFINITY, 0, 0}), true);
    cr_assert_eq(nb_backward(nb_logsumexp(g, NB_ALL, false)), 0, "%s", nb_error());
    EXPECT_VALUES(nb_grad_of(g), 1e-6, 0, 0.5f, 0.5f);
}

Test(reduce, softmax_values) {
    nb_tensor *big = nb_from_array(NB_SHAPE(3), (float[]){1000, 1001, 1002});
    EXPECT_VALUES(nb_softmax(big, 0), 1e-6, 0.09003057f, 0.24472847f, 0.66524096f);
    EXPECT_VALUES(nb_log_softmax(big, -1), 1e-5, -2.40760596f, -1.40760596f, -0.40760596f);
    nb_tensor *x = a23();
    nb_tensor *rows = nb_softmax(x, 1);
    EXPECT_SHAPE(rows, 2, 3);
    EXPECT_VALUES(rows, 1e-6, 0.09003057f, 0.24472847f, 0.66524096f, 0.09003057f, 0.24472847f,
                  0.66524096f);
    /* columns (a, a + 3): 1 / (1 + e^3), e^3 / (1 + e^3) */
    EXPECT_VALUES(nb_softmax(x, 0), 1e-6, 0.04742587f, 0.04742587f, 0.04742587f, 0.95257413f,
                  0.95257413f, 0.95257413f);
    EXPECT_VALUES(nb_log_softmax(x, -2), 1e-5, -3.04858735f, -3.04858735f, -3.04858735f,
                  -0.04858735f, -0.04858735f, -0.04858735f);
    /* the middle axis of 12i + 4j + k: softmax of (0, 4, 8) for every i, k */
    nb_tensor *m = nb_softmax(a234(), 1);
    EXPECT_SHAPE(m, 2, 3, 4);
    const float *d = nb_data(m);
    const double want[3] = {0.00032932044, 0.017980287, 0.98169039};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            for (int k = 0; k < 4; k++)
                cr_expect_float_eq(d[12 * i + 4 * j + k], want[j], 1e-6, "at %d,%d,%d", i, j, k);
}

Test(reduce, softmax_is_stable) {
    nb_tensor *x = nb_from_array(NB_SHAPE(2, 3), (float[]){1e30f, -1e30f, 0, -1000, -2000, 0});
    nb_tensor *s = nb_softmax(x, 1), *l = nb_log_softmax(x, 1);
    EXPECT_VALUES(s, 1e-7, 1, 0, 0, 0, 0, 1);
    EXPECT_VALUES(l, 1e-2, 0, -2e30f, -1e30f, -1000, -2000, 0);
    for (int i = 0; i < 6; i++) {
        cr_expect(!isnan(nb_data(s)[i]) && !isnan(nb_data(l)[i]), "NaN at %d", i);
    }
    /* gradients too */
    nb_tensor *big =
        nb_set_requires_grad(nb_from_array(NB_SHAPE(3), (float[]){1000, 1001, 1002}), true);
    nb_tensor *w = nb_from_array(NB_SHAPE(3), (float[]){1, 2, 3});
    nb_tensor *loss = nb_add(nb_sum(nb_mul(nb_softmax(big, 0), w), NB_ALL, false),
                             nb_sum(nb_mul(nb_log_softmax(big, 0), w), NB_ALL, false));
    cr_assert_eq(nb_backward(loss), 0, "%s", nb_error());
    for (int i = 0; i < 3; i++) cr_expect(isfinite(nb_data(nb_grad_of(big))[i]), "element %d", i);
}

Test(reduce, argmax_argmin_values) {
    nb_tensor *x = m23(); /* [[3,1,4],[1,5,9]] */
    EXPECT_VALUES(nb_argmax(x, 1, false), 0, 2, 2);
    EXPECT_VALUES(nb_argmax(x, 0, false), 0, 0, 1, 1);
    EXPECT_VALUES(nb_argmin(x, -1, false), 0, 1, 0);
    EXPECT_VALUES(nb_argmin(x, -2, false), 0, 1, 0, 0);
    nb_tensor *k = nb_argmax(x, 1, true);
    EXPECT_SHAPE(k, 2, 1);
    EXPECT_SHAPE(nb_argmin(x, 0, true), 1, 3);
    EXPECT_SHAPE(nb_argmin(x, 0, false), 3);
    /* ties: the first index */
    nb_tensor *t = nb_from_array(NB_SHAPE(2, 3), (float[]){2, 2, 1, 0, 0, 0});
    EXPECT_VALUES(nb_argmax(t, 1, false), 0, 0, 0);
    EXPECT_VALUES(nb_argmin(t, 1, false), 0, 2, 0);
    EXPECT_VALUES(nb_argmax(t, 0, false), 0, 0, 0, 0);
    /* the middle axis of the permuted 2x3x4 */
    EXPECT_VALUES(nb_argmax(p234(), 1, false), 0, 2, 2, 2, 0, 2, 1, 2, 2);
}

Test(reduce, argmax_is_not_differentiable) {
    nb_tensor *x = nb_set_requires_grad(m23(), true);
    nb_tensor *a = nb_argmax(x, 1, false), *b = nb_argmin(x, 0, true);
    cr_expect(!nb_requires_grad(a));
    cr_expect(!nb_requires_grad(b));
    cr_expect_null(nb_op_of(a));
}

Test(reduce, zero_dim_inputs) {
    nb_tensor *s = nb_scalar(3);
    nb_tensor *r = nb_sum(s, NB_ALL, false);
    EXPECT_0D(r);
    EXPECT_VALUES(r, 0, 3);
    EXPECT_0D(nb_sum(s, NB_ALL, true));
    EXPECT_VALUES(nb_sum(s, NB_AXES(0), false), 0, 3);
    EXPECT_VALUES(nb_mean(s, NB_AXES(-1), true), 0, 3);
    EXPECT_VALUES(nb_max(s, NB_ALL, false), 0, 3);
    EXPECT_VALUES(nb_min(s, NB_AXES(0), false), 0, 3);
    EXPECT_VALUES(nb_var(s, NB_ALL, 0, false), 0, 0);
    EXPECT_VALUES(nb_logsumexp(s, NB_ALL, false), 1e-6, 3);
    EXPECT_VALUES(nb_softmax(s, 0), 0, 1);
    EXPECT_VALUES(nb_log_softmax(s, -1), 0, 0);
    EXPECT_VALUES(nb_argmax(s, 0, false), 0, 0);
    EXPECT_0D(nb_argmax(s, 0, true));
    cr_assert_null(nb_sum(s, NB_AXES(1), false));
    EXPECT_ERROR("nb_sum", "axis 1", "[]");
    /* gradients through a 0-d reduction */
    nb_tensor *x = nb_set_requires_grad(nb_scalar(2), true);
    cr_assert_eq(nb_backward(nb_add(nb_max(x, NB_ALL, false), nb_mean(x, NB_AXES(0), false))), 0,
                 "%s", nb_error());
    EXPECT_VALUES(nb_grad_of(x), 0, 2);
}

Test(reduce, empty_reductions) {
    nb_tensor *e = nb_zeros(NB_SHAPE(2, 0));
    nb_tensor *s = nb_sum(e, NB_AXES(1), false);
    EXPECT_SHAPE(s, 2);
    EXPECT_VALUES(s, 0, 0, 0);
    EXPECT_VALUES(nb_mean(e, NB_AXES(1), false), 0, NAN, NAN);
    EXPECT_VALUES(nb_logsumexp(e, NB_AXES(1), false), 0, -INFINITY, -INFINITY);
    EXPECT_SHAPE(nb_sum(e, NB_AXES(0), false), 0);
    EXPECT_SHAPE(nb_max(e, NB_AXES(0), true), 1, 0);
    EXPECT_SHAPE(nb_softmax(e, 1), 2, 0);
    cr_assert_null(nb_max(e, NB_AXES(1), false));
    EXPECT_ERROR("nb_max", "zero elements", "[2,0]");
    cr_assert_null(nb_argmin(e, 1, false));
    EXPECT_ERROR("nb_argmin", "zero elements", "[2,0]");
}

/* ---- every kernel path against a plain double loop ------------------------------
 * [3,5,300]: the middle-axis kernel walks 300 inner positions as two chunks;
 * axes (0,2) take the general path. */

typedef struct ref_result {
    double sum[1500];
    float max[1500];
    int64_t argmax[1500]; /* flat index of the first maximum */
} ref_result;

static void reference(const float *x, const int64_t *shape, unsigned mask, ref_result *r,
                      int64_t *nout) {
    int64_t kshape[3], kst[3], n = 1;
    for (int d = 2; d >= 0; d--) {
        kshape[d] = (mask >> d) & 1u ? 1 : shape[d];
        kst[d] = n;
        n *= kshape[d];
    }
    *nout = n;
    for (int64_t o = 0; o < n; o++) {
        r->sum[o] = 0;
        r->max[o] = -INFINITY;
        r->argmax[o] = -1;
    }
    for (int64_t i = 0; i < shape[0]; i++)
        for (int64_t j = 0; j < shape[1]; j++)
            for (int64_t k = 0; k < shape[2]; k++) {
                int64_t idx[3] = {i, j, k}, o = 0, flat = (i * shape[1] + j) * shape[2] + k;
                for (int d = 0; d < 3; d++)
                    if (!((mask >> d) & 1u)) o += idx[d] * kst[d];
                r->sum[o] += x[flat];
                if (x[flat] > r->max[o]) {
                    r->max[o] = x[flat];
                    r->argmax[o] = flat;
                }
            }
}

Test(reduce, kernel_paths_match_a_plain_loop) {
    static ref_result ref;
    const int64_t shape[3] = {3, 5, 300};
    nb_tensor *x = nb_set_requires_grad(nb_randn(3, shape), true);
    const int sets[][3] = {{0}, {1}, {2}, {0, 1}, {0, 2}, {1, 2}, {0, 1, 2}};
    const int nsets[] = {1, 1, 1, 2, 2, 2, 3};
    for (int s = 0; s < 7; s++) {
        unsigned mask = 0;
        for (int a = 0; a < nsets[s]; a++) mask |= 1u << sets[s][a];
        int64_t nout;
        reference(nb_data(x), shape, mask, &ref, &nout);
        nb_tensor *sum = nb_sum(x, nsets[s], sets[s], false);
        nb_tensor *max = nb_max(x, nsets[s], sets[s], true);
        cr_assert_eq(nb_numel(sum), nout);
        for (int64_t o = 0; o < nout; o++) {
            cr_expect_float_eq(nb_data(sum)[o], ref.sum[o], 1e-4 + 1e-6 * fabs(ref.sum[o]),
                               "sum, set %d, output %lld", s, (long long)o);
            cr_expect_eq(nb_data(max)[o], ref.max[o], "max, set %d, output %lld", s, (long long)o);
        }
        /* the gradient of max is 1 exactly at the reference's first maximum */
        nb_tensor *g;
        cr_assert_eq(nb_grad(1, &max, (nb_tensor *[]){nb_ones_like(max)}, 1, &x, &g, NULL),
                     0, "%s", nb_error());
        float *want = calloc((size_t)nb_numel(x), sizeof(float));
        for (int64_t o = 0; o < nout; o++) want[ref.argmax[o]] = 1;
        cr_expect(memcmp(nb_data(g), want, sizeof(float) * (size_t)nb_numel(x)) == 0,
                  "max gradient, set %d", s);
        free(want);
    }
    /* argmax along each single axis against the reference's flat index */
    for (int a = 0; a < 3; a++) {
        int64_t nout;
        reference(nb_data(x), shape, 1u << a, &ref, &nout);
        nb_tensor *am = nb_argmax(x, a, false);
        int64_t stride = a == 2 ? 1 : a == 1 ? 300 : 1500;
        for (int64_t o = 0; o < nout; o++)
            cr_expect_eq((int64_t)nb_data(am)[o], ref.argmax[o] / stride % shape[a],
                         "argmax axis %d, output %lld", a, (long long)o);
    }
}

Test(reduce, softmax_along_a_wide_middle_axis) {
    /* [2,4,300] along axis 1: two chunks of inner positions, against a plain loop */
    nb_tensor *x = nb_randn(NB_SHAPE(2, 4, 300));
    nb_tensor *s = nb_softmax(x, 1), *l = nb_log_softmax(x, 1);
    const float *px = nb_data(x), *ps = nb_data(s), *pl = nb_data(l);
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 300; k++) {
            double m = -INFINITY, z = 0;
            for (int j = 0; j < 4; j++) m = fmax(m, px[(i * 4 + j) * 300 + k]);
            for (int j = 0; j < 4; j++) z += exp(px[(i * 4 + j) * 300 + k] - m);
            for (int j = 0; j < 4; j++) {
                int64_t f = (i * 4 + j) * 300 + k;
                cr_assert_float_eq(ps[f], exp(px[f] - m) / z, 1e-6, "softmax at %lld",
                                   (long long)f);
                cr_assert_float_eq(pl[f], px[f] - m - log(z), 1e-5, "log_softmax at %lld",
                                   (long long)f);
            }
        }
}

Test(reduce, sums_accumulate_in_double) {
    /* a million times 0.1f: float accumulation drifts to ~100958 */
    nb_tensor *x = nb_full(NB_SHAPE(1000, 1000), 0.1f);
    EXPECT_VALUES(nb_sum(x, NB_ALL, false), 0.01, 100000.0f);
    EXPECT_VALUES(nb_mean(x, NB_ALL, false), 1e-8, 0.1f);
    nb_tensor *col = nb_sum(nb_full(NB_SHAPE(100000, 2), 0.1f), NB_AXES(0), false);
    EXPECT_VALUES(col, 1e-3, 10000.0f, 10000.0f);
}

static bool same_bits(const nb_tensor *a, const nb_tensor *b) {
    return a && b && nb_same_shape(a, b) &&
           memcmp(nb_data(a), nb_data(b), sizeof(float) * (size_t)nb_numel(a)) == 0;
}

Test(reduce, results_do_not_depend_on_the_thread_count) {
    nb_tensor *x = nb_randn(NB_SHAPE(64, 257, 33));
    int was = nb_get_num_threads();
    const int sets[][2] = {{1}, {2}, {0, 2}, {0}};
    const int nsets[] = {1, 1, 2, 1};
    for (int s = 0; s < 4; s++) {
        const int n = nsets[s], *ax = sets[s];
        nb_set_num_threads(1);
        nb_tensor *a = nb_sum(x, n, ax, false), *am = nb_max(x, n, ax, false);
        nb_tensor *sa = nb_softmax(x, ax[0]);
        nb_set_num_threads(4);
        nb_tensor *b = nb_sum(x, n, ax, false), *bm = nb_max(x, n, ax, false);
        nb_tensor *sb = nb_softmax(x, ax[0]);
        cr_expect(same_bits(a, b), "sum, axis set %d", s);
        cr_expect(same_bits(am, bm), "max, axis set %d", s);
        cr_expect(same_bits(sa, sb), "softmax, axis set %d", s);
        cr_expect(same_bits(b, nb_sum(x, n, ax, false)), "sum run again, axis set %d", s);
    }
    nb_set_num_threads(was);
}

/* ---- gradients ------------------------------------------------------------------------ */

/* d(sum(go * y))/dx, go NULL for a one-element y */
static nb_tensor *grad_of(nb_tensor *y, nb_tensor *x, nb_tensor *go) {
    nb_tensor *g = NULL;
    cr_assert_eq(nb_grad(1, &y, go ? &go : NULL, 1, &x, &g, NULL), 0, "%s", nb_error());
    return g;
}

typedef enum { F_SUM, F_MEAN, F_MAX, F_MIN, F_VAR1, F_VAR0, F_LSE, F_SOFTMAX, F_LOG_SOFTMAX } fn_id;
static const char *fn_name[] = {"sum", "mean", "max", "min", "var(1)", "var(0)", "logsumexp",
                                "softmax", "log_softmax"};

typedef struct red_case {
    fn_id fn;
    int naxes;
    int axes[3];
    bool keepdim;
} red_case;

static nb_tensor *apply(nb_tensor *const *in, void *ctx) {
    const red_case *c = ctx;
    const int *ax = c->naxes ? c->axes : NULL;
    switch (c->fn) {
    case F_SUM: return nb_sum(in[0], c->naxes, ax, c->keepdim);
    case F_MEAN: return nb_mean(in[0], c->naxes, ax, c->keepdim);
    case F_MAX: return nb_max(in[0], c->naxes, ax, c->keepdim);
    case F_MIN: return nb_min(in[0], c->naxes, ax, c->keepdim);
    case F_VAR1: return nb_var(in[0], c->naxes, ax, 1, c->keepdim);
    case F_VAR0: return nb_var(in[0], c->naxes, ax, 0, c->keepdim);
    case F_LSE: return nb_logsumexp(in[0], c->naxes, ax, c->keepdim);
    case F_SOFTMAX: return nb_softmax(in[0], c->axes[0]);
    case F_LOG_SOFTMAX: return nb_log_softmax(in[0], c->axes[0]);
    }
    return NULL;
}

/* NB_ALL, one axis (positive and negative), two axes apart, trailing and
 * leading pairs, all three listed */
static const struct { int n; int axes[3]; } axis_sets[] = {
    {0, {0}}, {1, {0}}, {1, {1}}, {1, {-1}}, {2, {0, 2}}, {2, {-1, 1}}, {2, {1, 0}}, {3, {2, 0, 1}},
};
#define NSETS (int)(sizeof axis_sets / sizeof *axis_sets)

static void check_all_axes(fn_id fn, nb_tensor *x, bool second) {
    for (int s = 0; s < NSETS; s++)
        for (int keep = 0; keep < 2; keep++) {
            red_case c = {fn, axis_sets[s].n, {0}, keep};
            memcpy(c.axes, axis_sets[s].axes, sizeof c.axes);
            nb_gradcheck_opts quiet = {.quiet = true};
            nb_gradcheck_result r;
            cr_assert(nb_gradcheck(apply, &c, 1, &x, &quiet, &r), "%s, axis set %d, keepdim %d: %s",
                      fn_name[fn], s, keep, r.message);
            if (second)
                cr_assert(nb_gradgradcheck(apply, &c, 1, &x, &quiet, &r),
                          "%s, axis set %d, keepdim %d: %s", fn_name[fn], s, keep, r.message);
        }
}

Test(reduce, gradcheck_sum_and_mean) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(2, 3, 4));
    check_all_axes(F_SUM, x, true);
    check_all_axes(F_MEAN, x, true);
}

Test(reduce, gradcheck_var) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(2, 3, 4));
    check_all_axes(F_VAR1, x, true);
    check_all_axes(F_VAR0, x, true);
}

Test(reduce, gradcheck_logsumexp) {
    nb_tensor *x = nb_test_leaf(-2, 2, NB_SHAPE(2, 3, 4));
    check_all_axes(F_LSE, x, true);
    /* large values (where float32 finite differences are too coarse to
     * check): the gradient, softmax(x), does not change when x is shifted */
    nb_tensor *big = nb_set_requires_grad(nb_add_scalar(nb_detach(x), 1000), true);
    nb_tensor *g_small = grad_of(nb_logsumexp(x, NB_AXES(1), false), x, nb_ones(NB_SHAPE(2, 4)));
    nb_tensor *g_big = grad_of(nb_logsumexp(big, NB_AXES(1), false), big, nb_ones(NB_SHAPE(2, 4)));
    for (int i = 0; i < 24; i++)
        cr_expect_float_eq(nb_data(g_big)[i], nb_data(g_small)[i], 2e-3, "element %d", i);
}

Test(reduce, gradcheck_max_min) {
    /* distinct values a quarter apart: no tie within the finite-difference step */
    nb_tensor *x = nb_set_requires_grad(nb_sub_scalar(nb_mul_scalar(p234(), 0.25f), 3), true);
    check_all_axes(F_MAX, x, false);
    check_all_axes(F_MIN, x, false);
}

Test(reduce, gradcheck_softmax_and_log_softmax) {
    nb_tensor *x = nb_test_leaf(-2, 2, NB_SHAPE(2, 3, 4));
    for (int axis = -1; axis < 3; axis++) {
        red_case s = {F_SOFTMAX, 1, {axis}, false}, l = {F_LOG_SOFTMAX, 1, {axis}, false};
        nb_test_gradcheck(apply, &s, 1, &x, true);
        nb_test_gradcheck(apply, &l, 1, &x, true);
    }
    nb_tensor *v = nb_test_leaf(-3, 3, NB_SHAPE(5));
    red_case s = {F_SOFTMAX, 1, {0}, false}, l = {F_LOG_SOFTMAX, 1, {0}, false};
    nb_test_gradcheck(apply, &s, 1, &v, true);
    nb_test_gradcheck(apply, &l, 1, &v, true);
}

/* ---- where max and min send the gradient ------------------------------------------------- */

Test(reduce, max_min_gradient_lands_on_the_selected_element) {
    nb_tensor *x = nb_set_requires_grad(m23(), true); /* [[3,1,4],[1,5,9]] */
    nb_tensor *g0 = nb_from_array(NB_SHAPE(3), (float[]){10, 20, 30});
    EXPECT_VALUES(grad_of(nb_max(x, NB_AXES(0), false), x, g0), 0, 10, 0, 0, 0, 20, 30);
    EXPECT_VALUES(grad_of(nb_min(x, NB_AXES(0), false), x, g0), 0, 0, 20, 30, 10, 0, 0);
    nb_tensor *g1 = nb_from_array(NB_SHAPE(2, 1), (float[]){10, 20});
    EXPECT_VALUES(grad_of(nb_max(x, NB_AXES(-1), true), x, g1), 0, 0, 0, 10, 0, 0, 20);
    EXPECT_VALUES(grad_of(nb_min(x, NB_AXES(-1), true), x, g1), 0, 0, 10, 0, 20, 0, 0);
    EXPECT_VALUES(grad_of(nb_max(x, NB_ALL, false), x, NULL), 0, 0, 0, 0, 0, 0, 1);
    /* the minimum, 1, appears twice: each gets half */
    EXPECT_VALUES(grad_of(nb_min(x, NB_ALL, true), x, NULL), 0, 0, 0.5f, 0, 0.5f, 0, 0);
}

/* nb_max and nb_min return values only, over any set of axes: they are
 * PyTorch's amax/amin (and max() of a whole tensor), which split the
 * gradient evenly among tied elements, not max(dim), which returns indices
 * and gives it all to the one it selected. */
Test(reduce, max_min_gradient_splits_evenly_among_ties) {
    nb_tensor *t =
        nb_set_requires_grad(nb_from_array(NB_SHAPE(2, 3), (float[]){2, 2, 1, 0, 0, 0}), true);
    nb_tensor *g = nb_from_array(NB_SHAPE(2), (float[]){1, 6});
    /* row 0: max 2 twice -> 1/2 each; row 1: three zeros -> 6/3 each */
    EXPECT_VALUES(grad_of(nb_max(t, NB_AXES(1), false), t, g), 1e-7, 0.5f, 0.5f, 0, 2, 2, 2);
    EXPECT_VALUES(grad_of(nb_min(t, NB_AXES(1), false), t, g), 1e-7, 0, 0, 1, 2, 2, 2);
    nb_tensor *u = nb_set_requires_grad(nb_from_array(NB_SHAPE(2, 2), (float[]){1, 5, 5, 0}), true);
    EXPECT_VALUES(grad_of(nb_max(u, NB_ALL, false), u, NULL), 0, 0, 0.5f, 0.5f, 0);
    nb_tensor *z = nb_set_requires_grad(nb_zeros(NB_SHAPE(2, 2)), true);
    EXPECT_VALUES(grad_of(nb_min(z, NB_AXES(0, 1), false), z, NULL), 0, 0.25f, 0.25f, 0.25f, 0.25f);
    /* along axis 0 of [[3,7],[3,1]] with keepdim: column 0 ties */
    nb_tensor *c = nb_set_requires_grad(nb_from_array(NB_SHAPE(2, 2), (float[]){3, 7, 3, 1}), true);
    nb_tensor *gc = nb_from_array(NB_SHAPE(1, 2), (float[]){4, 8});
    EXPECT_VALUES(grad_of(nb_max(c, NB_AXES(0), true), c, gc), 0, 2, 8, 2, 0);
}

Test(reduce, max_min_gradient_with_nan) {
    /* NaN is selected, and the NaN elements share the gradient, as in
     * PyTorch's max() of a whole tensor */
    nb_tensor *x = nb_set_requires_grad(nb_from_array(NB_SHAPE(4), (float[]){1, NAN, 3, NAN}), true);
    EXPECT_VALUES(grad_of(nb_max(x, NB_ALL, false), x, NULL), 0, 0, 0.5f, 0, 0.5f);
    EXPECT_VALUES(grad_of(nb_min(x, NB_ALL, false), x, NULL), 0, 0, 0.5f, 0, 0.5f);
    nb_tensor *y = nb_set_requires_grad(nb_from_array(NB_SHAPE(2, 2), (float[]){NAN, 1, 4, 5}), true);
    EXPECT_VALUES(grad_of(nb_max(y, NB_AXES(1), false), y, nb_ones(NB_SHAPE(2))), 0, 1, 0, 0, 1);
}

Test(reduce, max_min_gradient_over_several_axes) {
    /* p234 over axes (0,2): maxima 21, 23, 22 at flat 3, 17, 10; minima 0, 1, 3 at 0, 7, 21 */
    nb_tensor *p = nb_set_requires_grad(p234(), true);
    nb_tensor *g = nb_from_array(NB_SHAPE(3), (float[]){1, 2, 3});
    const float *gm = nb_data(grad_of(nb_max(p, NB_AXES(0, 2), false), p, g));
    const float *gn = nb_data(grad_of(nb_min(p, NB_AXES(2, 0), false), p, g));
    for (int n = 0; n < 24; n++) {
        float want_max = n == 3 ? 1 : n == 17 ? 2 : n == 10 ? 3 : 0;
        float want_min = n == 0 ? 1 : n == 7 ? 2 : n == 21 ? 3 : 0;
        cr_expect_eq(gm[n], want_max, "max gradient at %d is %g", n, (double)gm[n]);
        cr_expect_eq(gn[n], want_min, "min gradient at %d is %g", n, (double)gn[n]);
    }
}

/* The backward of max is linear in the output gradient: differentiating it
 * with respect to that gradient, and once more, exercises the backward of
 * the backward. */
typedef struct max_grad_ctx {
    nb_tensor *x;
    bool max;
} max_grad_ctx;

static nb_tensor *grad_of_max(nb_tensor *const *in, void *ctx) {
    const max_grad_ctx *c = ctx;
    bool was = nb_set_grad_enabled(true); /* gradcheck evaluates f with grad off */
    nb_tensor *y = c->max ? nb_max(c->x, NB_AXES(0, 2), false) : nb_min(c->x, NB_AXES(0, 2), false);
    nb_tensor *g = NULL;
    int rc = nb_grad(1, &y, &in[0], 1, &c->x, &g, &(nb_grad_opts){.create_graph = true});
    nb_set_grad_enabled(was);
    return rc == 0 ? g : NULL;
}

/* One order up: with gx = expand(go) * w from the function above,
 * d(sum(gx * v))/d(go) = sum(v * w) over the reduced axes (v at the maxima
 * when there are no ties), a function of v checked by gradcheck. */
typedef struct max_grad2_ctx {
    nb_tensor *x, *go;
} max_grad2_ctx;

static nb_tensor *grad_of_grad_of_max(nb_tensor *const *in, void *ctx) {
    const max_grad2_ctx *c = ctx;
    bool was = nb_set_grad_enabled(true);
    nb_tensor *y = nb_max(c->x, NB_AXES(0, 2), false), *gx = NULL, *ggo = NULL;
    int rc = nb_grad(1, &y, &c->go, 1, &c->x, &gx, &(nb_grad_opts){.create_graph = true});
    if (rc == 0) {
        nb_tensor *s = nb_sum(nb_mul(gx, in[0]), NB_ALL, false);
        rc = nb_grad(1, &s, NULL, 1, &c->go, &ggo, &(nb_grad_opts){.create_graph = true});
    }
    nb_set_grad_enabled(was);
    return rc == 0 ? ggo : NULL;
}

Test(reduce, max_backward_is_differentiable) {
    max_grad_ctx c = {nb_set_requires_grad(p234(), true), true};
    nb_tensor *go = nb_test_leaf(-1, 1, NB_SHAPE(3));
    nb_test_gradcheck(grad_of_max, &c, 1, &go, false);
    c.max = false;
    nb_test_gradcheck(grad_of_max, &c, 1, &go, false);
    /* the values: v at the maxima, flat 3, 17 and 10 */
    max_grad2_ctx c2 = {c.x, go};
    nb_tensor *v = nb_set_requires_grad(nb_reshape(nb_arange(0, 24, 1), NB_SHAPE(2, 3, 4)), true);
    EXPECT_VALUES(grad_of_grad_of_max((nb_tensor *[]){v}, &c2), 0, 3, 17, 10);
    nb_test_gradcheck(grad_of_grad_of_max, &c2, 1, &v, false);
}

/* ---- errors and NULL ----------------------------------------------------------------------- */

Test(reduce, bad_axes_are_errors_naming_op_axis_and_shape) {
    nb_tensor *x = a23(), *y = a234();
    cr_assert_null(nb_sum(x, NB_AXES(2), false));
    EXPECT_ERROR("nb_sum", "axis 2", "[2,3]", "out of range");
    cr_assert_null(nb_mean(x, NB_AXES(-3), true));
    EXPECT_ERROR("nb_mean", "axis -3", "[2,3]");
    cr_assert_null(nb_max(x, NB_AXES(1, -1), false));
    EXPECT_ERROR("nb_max", "axis -1", "repeated", "[2,3]");
    cr_assert_null(nb_min(y, NB_AXES(0, 2, 0), false));
    EXPECT_ERROR("nb_min", "axis 0", "repeated", "(0, 2, 0)", "[2,3,4]");
    cr_assert_null(nb_var(y, NB_AXES(1, 1), 1, false));
    EXPECT_ERROR("nb_var", "axis 1", "repeated", "[2,3,4]");
    cr_assert_null(nb_logsumexp(y, NB_AXES(3), false));
    EXPECT_ERROR("nb_logsumexp", "axis 3", "[2,3,4]");
    cr_assert_null(nb_argmax(x, 2, false));
    EXPECT_ERROR("nb_argmax", "axis 2", "[2,3]");
    cr_assert_null(nb_argmin(x, -3, true));
    EXPECT_ERROR("nb_argmin", "axis -3", "[2,3]");
    cr_assert_null(nb_softmax(y, 3));
    EXPECT_ERROR("nb_softmax", "axis 3", "[2,3,4]");
    cr_assert_null(nb_log_softmax(y, -4));
    EXPECT_ERROR("nb_log_softmax", "axis -4", "[2,3,4]");
    cr_assert_null(nb_sum(x, -1, NULL, false));
    EXPECT_ERROR("nb_sum", "invalid", "[2,3]");
    cr_assert_null(nb_sum(x, 2, NULL, false));
    EXPECT_ERROR("nb_sum", "invalid");
}

Test(reduce, null_propagates_silently) {
    nb_clear_error();
    cr_expect_null(nb_sum(NULL, NB_ALL, false));
    cr_expect_null(nb_mean(NULL, NB_AXES(0), true));
    cr_expect_null(nb_max(NULL, NB_ALL, false));
    cr_expect_null(nb_min(NULL, NB_AXES(1), false));
    cr_expect_null(nb_var(NULL, NB_ALL, 1, false));
    cr_expect_null(nb_logsumexp(NULL, NB_ALL, false));
    cr_expect_null(nb_argmax(NULL, 0, false));
    cr_expect_null(nb_argmin(NULL, 0, true));
    cr_expect_null(nb_softmax(NULL, 0));
    cr_expect_null(nb_log_softmax(NULL, -1));
    cr_expect_null(nb_error(), "unexpected message: %s", nb_error());
    /* an expression with a failing step: one message, from the step that failed */
    nb_tensor *e = nb_softmax(nb_sum(nb_var(a23(), NB_AXES(5), 1, false), NB_ALL, false), 0);
    cr_expect_null(e);
    EXPECT_ERROR("nb_var", "axis 5");
}

/* ---- ownership without any scope --------------------------------------------------------- */

TestSuite(reduce_unscoped);

Test(reduce_unscoped, composed_ops_leave_nothing_behind) {
    int64_t live = nb_live_tensors();
    nb_tensor *x =
        nb_set_requires_grad(nb_from_array(NB_SHAPE(2, 3), (float[]){3, 1, 4, 1, 5, 9}), true);
    nb_tensor *outs[] = {
        nb_var(x, NB_AXES(1), 1, false), nb_logsumexp(x, NB_ALL, true),
        nb_max(x, NB_AXES(0), false),    nb_min(x, NB_ALL, false),
        nb_softmax(x, 1),                nb_sum(x, NB_ALL, false),
    };
    for (size_t i = 0; i < sizeof outs / sizeof *outs; i++) {
        cr_assert_not_null(outs[i], "%s", nb_error());
        nb_release(outs[i]);
    }
    cr_expect_null(nb_error(), "%s", nb_error());
    nb_release(x);
    cr_expect_eq(nb_live_tensors(), live, "%lld tensors alive, %lld before",
                 (long long)nb_live_tensors(), (long long)live);
}
