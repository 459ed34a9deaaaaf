/* test_linalg.c — matmul, transpose and permute: values worked out by hand
 * for every shape rule of matmul (dot, vector-matrix, matrix-vector,
 * batched, broadcast batches), larger products and their gradients against a
 * naive double-precision loop, results independent of the thread count,
 * gradcheck and gradgradcheck for every shape combination (and a third-order
 * check through a gradient computed inside the function), exact error
 * messages, and NULL propagation.
 */
#include "test_util.h"

TestSuite(linalg, NB_TEST_HOOKS);

static nb_tensor *from(int ndim, const int64_t *shape, const float *data) {
    return nb_from_array(ndim, shape, data);
}
#define FROM(shape, ...) from(shape, (const float[]){__VA_ARGS__})

/* ---- matmul values by hand ------------------------------------------------------ */

Test(linalg, dot_of_two_vectors_is_0d) {
    nb_tensor *a = FROM(NB_SHAPE(3), 1, 2, 3), *b = FROM(NB_SHAPE(3), 4, 5, 6);
    nb_tensor *c = nb_matmul(a, b);
    cr_assert_not_null(c, "%s", nb_error());
    cr_assert_eq(nb_ndim(c), 0);
    EXPECT_VALUES(c, 1e-6, 32);
}

Test(linalg, vector_times_matrix) {
    nb_tensor *v = FROM(NB_SHAPE(2), 1, 2), *m = FROM(NB_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    nb_tensor *c = nb_matmul(v, m);
    EXPECT_SHAPE(c, 3);
    EXPECT_VALUES(c, 1e-6, 9, 12, 15);
}

Test(linalg, matrix_times_vector) {
    nb_tensor *m = FROM(NB_SHAPE(2, 3), 1, 2, 3, 4, 5, 6), *v = FROM(NB_SHAPE(3), 1, 2, 3);
    nb_tensor *c = nb_matmul(m, v);
    EXPECT_SHAPE(c, 2);
    EXPECT_VALUES(c, 1e-6, 14, 32);
}

Test(linalg, matrix_times_matrix) {
    nb_tensor *a = FROM(NB_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    nb_tensor *b = FROM(NB_SHAPE(3, 2), 7, 8, 9, 10, 11, 12);
    nb_tensor *c = nb_matmul(a, b);
    EXPECT_SHAPE(c, 2, 2);
    EXPECT_VALUES(c, 1e-5, 58, 64, 139, 154);
}

Test(linalg, batched_times_matrix) {
    nb_tensor *a = FROM(NB_SHAPE(2, 2, 3), 1, 2, 3, 4, 5, 6, -1, 0, 1, 2, 2, 2);
    nb_tensor *b = FROM(NB_SHAPE(3, 2), 7, 8, 9, 10, 11, 12);
    nb_tensor *c = nb_matmul(a, b);
    EXPECT_SHAPE(c, 2, 2, 2);
    EXPECT_VALUES(c, 1e-5, 58, 64, 139, 154, 4, 4, 54, 60);
}

Test(linalg, broadcast_batches) {
    nb_tensor *a = FROM(NB_SHAPE(2, 1, 2, 3), 1, 2, 3, 4, 5, 6, /**/ 1, 0, 0, 0, 1, 0);
    nb_tensor *b = FROM(NB_SHAPE(3, 3, 2), 7, 8, 9, 10, 11, 12, /**/ 1, 0, 0, 1, 1, 1,
                        /**/ 2, 0, 0, 0, 0, 3);
    nb_tensor *c = nb_matmul(a, b);
    EXPECT_SHAPE(c, 2, 3, 2, 2);
    EXPECT_VALUES(c, 1e-5,
                  58, 64, 139, 154, /**/ 4, 5, 10, 11, /**/ 2, 9, 8, 18,
                  7, 8, 9, 10, /**/ 1, 0, 0, 1, /**/ 2, 0, 0, 0);
}

Test(linalg, numpy_shape_rules) {
    /* the example of the op's documentation, and the 1-D cases with batches */
    EXPECT_SHAPE(nb_matmul(nb_ones(NB_SHAPE(2, 1, 3, 4)), nb_ones(NB_SHAPE(5, 4, 2))), 2, 5, 3, 2);
    EXPECT_SHAPE(nb_matmul(nb_ones(NB_SHAPE(3)), nb_ones(NB_SHAPE(2, 3, 4))), 2, 4);
    EXPECT_SHAPE(nb_matmul(nb_ones(NB_SHAPE(2, 4, 3)), nb_ones(NB_SHAPE(3))), 2, 4);
    EXPECT_SHAPE(nb_matmul(nb_ones(NB_SHAPE(2, 3)), nb_ones(NB_SHAPE(1, 1, 3, 4))), 1, 1, 2, 4);
    EXPECT_VALUES(nb_matmul(nb_ones(NB_SHAPE(2, 4, 3)), nb_ones(NB_SHAPE(3))), 0,
                  3, 3, 3, 3, 3, 3, 3, 3);
}

Test(linalg, empty_dimensions) {
    EXPECT_SHAPE(nb_matmul(nb_ones(NB_SHAPE(0, 3)), nb_ones(NB_SHAPE(3, 2))), 0, 2);
    /* an empty inner dimension is an empty sum: zeros */
    nb_tensor *c = nb_matmul(nb_ones(NB_SHAPE(2, 0)), nb_ones(NB_SHAPE(0, 3)));
    EXPECT_SHAPE(c, 2, 3);
    EXPECT_VALUES(c, 0, 0, 0, 0, 0, 0, 0);
    EXPECT_VALUES(nb_matmul(nb_ones(NB_SHAPE(0)), nb_ones(NB_SHAPE(0))), 0, 0);
}

/* ---- larger products against a naive loop ------------------------------------------
 * ref[i,j] = sum_p A[i,p] B[p,j] in double; A is a [m,k] (or [k,m] stored when
 * ta), B likewise. */
static void naive(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *a,
                  const float *b, double *ref) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0;
            for (int64_t p = 0; p < k; p++)
                s += (double)(ta ? a[p * m + i] : a[i * k + p]) *
                     (double)(tb ? b[j * k + p] : b[p * n + j]);
            ref[i * n + j] = s;
        }
}

static void expect_close(const nb_tensor *t, const double *ref, int64_t n, double tol) {
    cr_assert_not_null(t, "%s", nb_error() ? nb_error() : "NULL");
    cr_assert_eq(nb_numel(t), n);
    const float *d = nb_data(t);
    for (int64_t i = 0; i < n; i++)
        cr_assert(fabs(d[i] - ref[i]) <= tol * (1 + fabs(ref[i])), "element %lld is %.8g, expected %.8g",
                  (long long)i, (double)d[i], ref[i]);
}

Test(linalg, large_product_against_naive_loop) {
    nb_tensor *a = nb_uniform(NULL, -1, 1, NB_SHAPE(70, 65));
    nb_tensor *b = nb_uniform(NULL, -1, 1, NB_SHAPE(65, 33));
    static double ref[70 * 33];
    naive(false, false, 70, 33, 65, nb_data(a), nb_data(b), ref);
    nb_tensor *c = nb_matmul(a, b);
    EXPECT_SHAPE(c, 70, 33);
    expect_close(c, ref, 70 * 33, 1e-5);
}

/* The gradients of a large product run the kernel on transposed operands:
 * dA = G·Bᵀ and dB = Aᵀ·G. */
Test(linalg, large_gradients_against_naive_loop) {
    nb_tensor *a = nb_test_leaf(-1, 1, NB_SHAPE(130, 97));
    nb_tensor *b = nb_test_leaf(-1, 1, NB_SHAPE(97, 111));
    nb_tensor *g = nb_uniform(NULL, -1, 1, NB_SHAPE(130, 111));
    nb_tensor *c = nb_matmul(a, b), *in[2] = {a, b}, *grads[2];
    cr_assert_eq(nb_grad(1, &c, &g, 2, in, grads, NULL), 0, "%s", nb_error());
    static double ref_a[130 * 97], ref_b[97 * 111];
    naive(false, true, 130, 97, 111, nb_data(g), nb_data(b), ref_a);
    naive(true, false, 97, 111, 130, nb_data(a), nb_data(g), ref_b);
    expect_close(grads[0], ref_a, 130 * 97, 1e-5);
    expect_close(grads[1], ref_b, 97 * 111, 1e-5);
}

Test(linalg, batched_product_against_naive_loop) {
    /* many small products: spread over the threads by batch entry */
    nb_tensor *a = nb_uniform(NULL, -1, 1, NB_SHAPE(16, 20, 30));
    nb_tensor *b = nb_uniform(NULL, -1, 1, NB_SHAPE(16, 30, 10));
    nb_tensor *c = nb_matmul(a, b);
    EXPECT_SHAPE(c, 16, 20, 10);
    static double ref[16 * 20 * 10];
    for (int i = 0; i < 16; i++)
        naive(false, false, 20, 10, 30, nb_data(a) + i * 600, nb_data(b) + i * 300, ref + i * 200);
    expect_close(c, ref, 16 * 20 * 10, 1e-5);
}

static bool bitwise_equal(const nb_tensor *x, const nb_tensor *y) {
    return x && y && nb_numel(x) == nb_numel(y) &&
           memcmp(nb_data(x), nb_data(y), sizeof(float) * (size_t)nb_numel(x)) == 0;
}

Test(linalg, same_bits_for_any_thread_count) {
    int was = nb_get_num_threads();
    nb_tensor *a = nb_test_leaf(-1, 1, NB_SHAPE(3, 150, 120));
    nb_tensor *b = nb_test_leaf(-1, 1, NB_SHAPE(120, 140));
    nb_tensor *s = nb_uniform(NULL, -1, 1, NB_SHAPE(64, 12, 9));
    nb_tensor *t = nb_uniform(NULL, -1, 1, NB_SHAPE(64, 9, 7));
    nb_tensor *c[2], *small[2], *da[2], *db[2];
    for (int r = 0; r < 2; r++) {
        nb_set_num_threads(r == 0 ? 1 : 4);
        c[r] = nb_matmul(a, b);
        small[r] = nb_matmul(s, t);
        nb_tensor *in[2] = {a, b}, *gr[2];
        cr_assert_eq(nb_grad(1, &c[r], &c[r], 2, in, gr, NULL), 0, "%s", nb_error());
        da[r] = gr[0];
        db[r] = gr[1];
    }
    nb_set_num_threads(was);
    cr_assert(bitwise_equal(c[0], c[1]));
    cr_assert(bitwise_equal(small[0], small[1]));
    cr_assert(bitwise_equal(da[0], da[1]));
    cr_assert(bitwise_equal(db[0], db[1]));
}

/* ---- matmul gradients for every shape combination ----------------------------------- */

static nb_tensor *matmul_fn(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return nb_matmul(in[0], in[1]);
}

typedef struct shapes {
    int na, nb;
    int64_t a[4], b[4];
} shapes;

static void check_matmul_grads(shapes s) {
    nb_tensor *in[2] = {nb_test_leaf(-1, 1, s.na, s.a), nb_test_leaf(-1, 1, s.nb, s.b)};
    nb_test_gradcheck(matmul_fn, NULL, 2, in, true);
    /* and with only one operand requiring grad */
    nb_tensor *one[2] = {in[0], nb_uniform(NULL, -1, 1, s.nb, s.b)};
    nb_test_gradcheck(matmul_fn, NULL, 2, one, true);
    nb_tensor *other[2] = {nb_uniform(NULL, -1, 1, s.na, s.a), in[1]};
    nb_test_gradcheck(matmul_fn, NULL, 2, other, true);
}

Test(linalg, gradcheck_dot) { check_matmul_grads((shapes){1, 1, {3}, {3}}); }
Test(linalg, gradcheck_vector_matrix) { check_matmul_grads((shapes){1, 2, {3}, {3, 4}}); }
Test(linalg, gradcheck_matrix_vector) { check_matmul_grads((shapes){2, 1, {4, 3}, {3}}); }
Test(linalg, gradcheck_matrix_matrix) { check_matmul_grads((shapes){2, 2, {2, 3}, {3, 4}}); }
Test(linalg, gradcheck_batched_matrix) { check_matmul_grads((shapes){3, 2, {2, 2, 3}, {3, 2}}); }
Test(linalg, gradcheck_matrix_batched) { check_matmul_grads((shapes){2, 3, {2, 3}, {2, 3, 4}}); }
Test(linalg, gradcheck_batched_batched) { check_matmul_grads((shapes){3, 3, {2, 2, 3}, {2, 3, 2}}); }
Test(linalg, gradcheck_broadcast_batches) {
    check_matmul_grads((shapes){4, 3, {2, 1, 2, 3}, {3, 3, 2}});
}
Test(linalg, gradcheck_unit_batch_axes) {
    check_matmul_grads((shapes){3, 3, {4, 3, 5}, {1, 5, 2}});
}
Test(linalg, gradcheck_vector_batched) { check_matmul_grads((shapes){1, 3, {3}, {2, 3, 4}}); }
Test(linalg, gradcheck_batched_vector) { check_matmul_grads((shapes){3, 1, {2, 4, 3}, {3}}); }

/* One tensor on both sides: both of its gradient contributions add up. */
static nb_tensor *square_fn(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return nb_matmul(in[0], in[0]);
}
static nb_tensor *gram_fn(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return nb_matmul(in[0], nb_transpose(in[0], -1, -2));
}

Test(linalg, gradcheck_same_operand_twice) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(3, 3));
    nb_test_gradcheck(square_fn, NULL, 1, &x, true);
    nb_tensor *y = nb_test_leaf(-1, 1, NB_SHAPE(2, 3, 4));
    nb_test_gradcheck(gram_fn, NULL, 1, &y, true);
}

/* Third order: f returns a gradient of a product computed with
 * create_graph, so gradgradcheck of f differentiates matmul's backward
 * formulas twice more. */
static nb_tensor *grad_of_product(nb_tensor *const *in, void *ctx) {
    int which = *(const int *)ctx;
    bool was = nb_set_grad_enabled(true);
    nb_tensor *c = nb_matmul(in[0], in[1]), *g[2] = {NULL, NULL};
    int rc = nb_grad(1, &c, &in[2], 2, in, g, &(nb_grad_opts){.create_graph = true});
    nb_set_grad_enabled(was);
    return rc == 0 ? g[which] : NULL;
}

Test(linalg, third_order_through_the_backward) {
    nb_tensor *a = nb_test_leaf(-1, 1, NB_SHAPE(3, 2, 4)), *b = nb_test_leaf(-1, 1, NB_SHAPE(4, 3));
    nb_tensor *g = nb_test_leaf(-1, 1, NB_SHAPE(3, 2, 3));
    nb_tensor *in[3] = {a, b, g};
    int da = 0, db = 1;
    nb_test_gradcheck(grad_of_product, &da, 3, in, true);
    nb_test_gradcheck(grad_of_product, &db, 3, in, true);
    nb_tensor *p = nb_test_leaf(-1, 1, NB_SHAPE(2, 1, 2, 3)), *q = nb_test_leaf(-1, 1, NB_SHAPE(3, 3, 2));
    nb_tensor *h = nb_test_leaf(-1, 1, NB_SHAPE(2, 3, 2, 2));
    nb_tensor *in2[3] = {p, q, h};
    nb_test_gradcheck(grad_of_product, &da, 3, in2, true);
    nb_test_gradcheck(grad_of_product, &db, 3, in2, true);
}

Test(linalg, dense_layer_backward_shapes) {
    /* x[B,in]·W[in,out]: gradients come back in the operands' shapes */
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(5, 7)), *w = nb_test_leaf(-1, 1, NB_SHAPE(7, 3));
    nb_tensor *y = nb_matmul(x, w), *in[2] = {x, w}, *g[2];
    cr_assert_eq(nb_grad(1, &y, &y, 2, in, g, NULL), 0, "%s", nb_error());
    EXPECT_SHAPE(g[0], 5, 7);
    EXPECT_SHAPE(g[1], 7, 3);
}

/* ---- transpose and permute ---------------------------------------------------------- */

static nb_tensor *iota(int ndim, const int64_t *shape) {
    nb_tensor *t = nb_empty(ndim, shape);
    float *d = nb_data_mut(t);
    for (int64_t i = 0; i < nb_numel(t); i++) d[i] = (float)i;
    return t;
}

Test(linalg, transpose_matrix) {
    nb_tensor *x = FROM(NB_SHAPE(2, 3), 1, 2, 3, 4, 5, 6);
    nb_tensor *t = nb_transpose(x, 0, 1);
    EXPECT_SHAPE(t, 3, 2);
    EXPECT_VALUES(t, 0, 1, 4, 2, 5, 3, 6);
    EXPECT_VALUES(nb_transpose(x, -1, -2), 0, 1, 4, 2, 5, 3, 6);
    EXPECT_VALUES(nb_transpose(x, 1, 1), 0, 1, 2, 3, 4, 5, 6);
}

Test(linalg, transpose_outer_axes) {
    nb_tensor *t = nb_transpose(iota(NB_SHAPE(2, 3, 4)), 0, 2);
    EXPECT_SHAPE(t, 4, 3, 2);
    /* t[i,j,k] = x[k,j,i] = 12k + 4j + i */
    EXPECT_VALUES(t, 0, 0, 12, 4, 16, 8, 20, 1, 13, 5, 17, 9, 21,
                  2, 14, 6, 18, 10, 22, 3, 15, 7, 19, 11, 23);
}

Test(linalg, permute_values) {
    nb_tensor *t = nb_permute(iota(NB_SHAPE(2, 3, 4)), (const int[]){2, 0, 1});
    EXPECT_SHAPE(t, 4, 2, 3);
    /* t[i,j,k] = x[j,k,i] = 12j + 4k + i */
    EXPECT_VALUES(t, 0, 0, 4, 8, 12, 16, 20, 1, 5, 9, 13, 17, 21,
                  2, 6, 10, 14, 18, 22, 3, 7, 11, 15, 19, 23);
    /* negative axes count from the end */
    nb_tensor *u = nb_permute(iota(NB_SHAPE(2, 3, 4)), (const int[]){-1, 0, -2});
    cr_assert(bitwise_equal(t, u));
    /* a 0-d tensor has the empty permutation */
    EXPECT_VALUES(nb_permute(nb_scalar(7), NULL), 0, 7);
}

/* Large and odd shapes against index arithmetic, for every permutation of
 * three axes: row copies, tiled transposes with partial edge tiles, and
 * axes of size 1. */
static void check_permute_naive(int64_t d0, int64_t d1, int64_t d2) {
    static const int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    int64_t shape[3] = {d0, d1, d2}, st[3] = {d1 * d2, d2, 1};
    nb_tensor *x = iota(3, shape);
    for (int p = 0; p < 6; p++) {
        const int *pm = perms[p];
        nb_tensor *t = nb_permute(x, pm);
        cr_assert_not_null(t, "%s", nb_error());
        const float *d = nb_data(t);
        int64_t n0 = shape[pm[0]], n1 = shape[pm[1]], n2 = shape[pm[2]];
        for (int64_t i = 0; i < n0; i++)
            for (int64_t j = 0; j < n1; j++)
                for (int64_t k = 0; k < n2; k++) {
                    float want = (float)(i * st[pm[0]] + j * st[pm[1]] + k * st[pm[2]]);
                    cr_assert_eq(d[(i * n1 + j) * n2 + k], want,
                                 "perm (%d,%d,%d) of [%lld,%lld,%lld] at (%lld,%lld,%lld)", pm[0],
                                 pm[1], pm[2], (long long)d0, (long long)d1, (long long)d2,
                                 (long long)i, (long long)j, (long long)k);
                }
    }
}

Test(linalg, permute_against_index_arithmetic) {
    check_permute_naive(3, 37, 45);
    check_permute_naive(70, 1, 33);
    check_permute_naive(1, 5, 1);
    check_permute_naive(2, 0, 3);
}

static nb_tensor *permute_fn(nb_tensor *const *in, void *ctx) {
    return nb_permute(in[0], ctx);
}
static nb_tensor *transpose_fn(nb_tensor *const *in, void *ctx) {
    const int *ax = ctx;
    return nb_transpose(in[0], ax[0], ax[1]);
}

Test(linalg, permute_gradcheck) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(2, 3, 4));
    int p[3] = {2, 0, 1};
    nb_test_gradcheck(permute_fn, p, 1, &x, true);
    nb_tensor *y = nb_test_leaf(-1, 1, NB_SHAPE(2, 1, 3, 2));
    int q[4] = {3, 1, 0, 2};
    nb_test_gradcheck(permute_fn, q, 1, &y, true);
}

Test(linalg, transpose_gradcheck) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(3, 4));
    int ax[2] = {0, 1};
    nb_test_gradcheck(transpose_fn, ax, 1, &x, true);
    nb_tensor *y = nb_test_leaf(-1, 1, NB_SHAPE(2, 3, 4));
    int ay[2] = {-3, -1};
    nb_test_gradcheck(transpose_fn, ay, 1, &y, true);
}

Test(linalg, permute_gradient_is_the_inverse_permute) {
    nb_tensor *x = nb_set_requires_grad(iota(NB_SHAPE(2, 3, 4)), true);
    nb_tensor *t = nb_permute(x, (const int[]){1, 2, 0});
    nb_tensor *g = nb_permute(iota(NB_SHAPE(2, 3, 4)), (const int[]){1, 2, 0}), *dx;
    cr_assert_eq(nb_grad(1, &t, &g, 1, &x, &dx, NULL), 0, "%s", nb_error());
    EXPECT_SHAPE(dx, 2, 3, 4);
    cr_assert(bitwise_equal(dx, x));
}

/* ---- errors and NULL ------------------------------------------------------------------- */

Test(linalg, matmul_inner_dimensions_message) {
    cr_assert_null(nb_matmul(nb_ones(NB_SHAPE(3, 4)), nb_ones(NB_SHAPE(5, 2))));
    cr_assert_str_eq(nb_error(),
                     "nb_matmul: cannot multiply [3,4] by [5,2]: inner dimensions 4 and 5 differ");
    cr_assert_null(nb_matmul(nb_ones(NB_SHAPE(3)), nb_ones(NB_SHAPE(4))));
    cr_assert_str_eq(nb_error(),
                     "nb_matmul: cannot multiply [3] by [4]: inner dimensions 3 and 4 differ");
    cr_assert_null(nb_matmul(nb_ones(NB_SHAPE(2, 3)), nb_ones(NB_SHAPE(2))));
    cr_assert_str_eq(nb_error(),
                     "nb_matmul: cannot multiply [2,3] by [2]: inner dimensions 3 and 2 differ");
    cr_assert_null(nb_matmul(nb_ones(NB_SHAPE(2)), nb_ones(NB_SHAPE(4, 3, 5))));
    cr_assert_str_eq(nb_error(),
                     "nb_matmul: cannot multiply [2] by [4,3,5]: inner dimensions 2 and 3 differ");
}

Test(linalg, matmul_batch_message) {
    cr_assert_null(nb_matmul(nb_ones(NB_SHAPE(2, 3, 4)), nb_ones(NB_SHAPE(5, 4, 2))));
    cr_assert_str_eq(nb_error(), "nb_matmul: cannot multiply [2,3,4] by [5,4,2]: batch "
                                 "dimensions [2] and [5] cannot be broadcast");
    cr_assert_null(nb_matmul(nb_ones(NB_SHAPE(3, 2, 3, 4)), nb_ones(NB_SHAPE(2, 4, 4, 2))));
    EXPECT_ERROR("nb_matmul", "[3,2,3,4]", "[2,4,4,2]", "batch");
}

Test(linalg, matmul_0d_operand) {
    cr_assert_null(nb_matmul(nb_scalar(2), nb_ones(NB_SHAPE(3))));
    EXPECT_ERROR("nb_matmul", "[]", "[3]", "0-dimensional");
    nb_clear_error();
    cr_assert_null(nb_matmul(nb_ones(NB_SHAPE(3, 2)), nb_scalar(2)));
    EXPECT_ERROR("nb_matmul", "[3,2]", "[]", "0-dimensional");
}

Test(linalg, permute_bad_permutations) {
    nb_tensor *x = nb_ones(NB_SHAPE(2, 3));
    cr_assert_null(nb_permute(x, (const int[]){0, 0}));
    cr_assert_str_eq(nb_error(), "nb_permute: (0,0) is not a permutation of the 2 axes of [2,3]");
    cr_assert_null(nb_permute(x, (const int[]){0, 2}));
    cr_assert_str_eq(nb_error(), "nb_permute: (0,2) is not a permutation of the 2 axes of [2,3]");
    cr_assert_null(nb_permute(x, (const int[]){-3, 1}));
    EXPECT_ERROR("nb_permute", "(-3,1)", "[2,3]");
    nb_clear_error();
    cr_assert_null(nb_permute(x, NULL));
    EXPECT_ERROR("nb_permute", "NULL", "[2,3]");
}

Test(linalg, transpose_bad_axes) {
    nb_tensor *x = nb_ones(NB_SHAPE(2, 3));
    cr_assert_null(nb_transpose(x, 0, 2));
    cr_assert_str_eq(nb_error(), "nb_transpose: axes 0 and 2 do not both exist in [2,3]");
    cr_assert_null(nb_transpose(x, -3, 1));
    EXPECT_ERROR("nb_transpose", "-3", "[2,3]");
    nb_clear_error();
    cr_assert_null(nb_transpose(nb_scalar(1), 0, 0));
    EXPECT_ERROR("nb_transpose", "[]");
}

Test(linalg, null_propagates_silently) {
    nb_tensor *x = nb_ones(NB_SHAPE(2, 2));
    cr_assert_null(nb_matmul(NULL, x));
    cr_assert_null(nb_matmul(x, NULL));
    cr_assert_null(nb_matmul(NULL, NULL));
    cr_assert_null(nb_transpose(NULL, 0, 1));
    cr_assert_null(nb_permute(NULL, (const int[]){1, 0}));
    cr_assert_null(nb_error());
}

/* ---- linear_map: x·W + b in one op ------------------------------------------------------ */

Test(linalg, linear_map_values_by_hand) {
    /* x [2,2,3]: rows [1,2,3], [0,1,0], [1,0,0], [0,0,1]; W [3,2]; b [2] */
    nb_tensor *x = nb_from_array(NB_SHAPE(2, 2, 3), (float[]){1, 2, 3, 0, 1, 0, 1, 0, 0, 0, 0, 1});
    nb_tensor *w = nb_from_array(NB_SHAPE(3, 2), (float[]){1, 2, 3, 4, 5, 6});
    nb_tensor *b = nb_from_array(NB_SHAPE(2), (float[]){0.5f, -1});
    nb_tensor *y = nb_linear_map(x, w, b);
    EXPECT_SHAPE(y, 2, 2, 2);
    /* [1,2,3]·W = [22, 28]; the unit rows pick W's rows */
    EXPECT_VALUES(y, 0, 22.5f, 27, 3.5f, 3, 1.5f, 1, 5.5f, 5);
    EXPECT_VALUES(nb_linear_map(x, w, NULL), 0, 22, 28, 3, 4, 1, 2, 5, 6);
    cr_assert_null(nb_linear_map(x, nb_zeros(NB_SHAPE(2, 2)), NULL));
    EXPECT_ERROR("nb_linear_map", "[2,2,3]", "[2,2]");
    cr_assert_null(nb_linear_map(x, w, nb_zeros(NB_SHAPE(3))));
    EXPECT_ERROR("nb_linear_map", "b [3]");
    nb_clear_error();
    cr_assert_null(nb_linear_map(NULL, w, b));
    cr_assert_null(nb_error());
}

static nb_tensor *f_linear_map(nb_tensor *const *in, void *ctx) {
    return nb_linear_map(in[0], in[1], ctx ? in[2] : NULL);
}

Test(linalg, linear_map_gradcheck_first_and_second_order) {
    nb_tensor *in[3] = {nb_test_leaf(-1, 1, NB_SHAPE(2, 3, 4)), nb_test_leaf(-1, 1, NB_SHAPE(4, 5)),
                        nb_test_leaf(-1, 1, NB_SHAPE(5))};
    nb_test_gradcheck(f_linear_map, in, 3, in, true);
    nb_test_gradcheck(f_linear_map, NULL, 2, in, true);
    nb_tensor *v[2] = {nb_test_leaf(-1, 1, NB_SHAPE(4)), in[1]}; /* one sample, 1-D */
    nb_test_gradcheck(f_linear_map, NULL, 2, v, true);
}
