/* test_compare.c — comparisons and selection (ops/compare.c): the six
 * broadcasting comparisons and the two scalar ones give 0/1 masks that are
 * never part of a graph; where() picks between two broadcast operands and
 * sends the gradient to the one it picked.
 */
#include "test_util.h"

TestSuite(compare, NB_TEST_HOOKS);

static nb_tensor *vec(int n, const float *v) { return nb_from_array(1, (int64_t[]){n}, v); }

/* a = [[1,2,3],[4,5,6]] against b = [2,5,3], broadcast along rows */
static nb_tensor *rows(void) { return nb_from_array(NB_SHAPE(2, 3), (float[]){1, 2, 3, 4, 5, 6}); }
static nb_tensor *row(void) { return vec(3, (float[]){2, 5, 3}); }

Test(compare, the_six_comparisons) {
    nb_tensor *a = rows(), *b = row();
    EXPECT_VALUES(nb_eq(a, b), 0, 0, 0, 1, 0, 1, 0);
    EXPECT_VALUES(nb_ne(a, b), 0, 1, 1, 0, 1, 0, 1);
    EXPECT_VALUES(nb_lt(a, b), 0, 1, 1, 0, 0, 0, 0);
    EXPECT_VALUES(nb_le(a, b), 0, 1, 1, 1, 0, 1, 0);
    EXPECT_VALUES(nb_gt(a, b), 0, 0, 0, 0, 1, 0, 1);
    EXPECT_VALUES(nb_ge(a, b), 0, 0, 0, 1, 1, 1, 1);
    EXPECT_SHAPE(nb_eq(a, b), 2, 3);
    /* the operands swap sides */
    EXPECT_VALUES(nb_gt(b, a), 0, 1, 1, 0, 0, 0, 0);
}

Test(compare, broadcast_column_against_row) {
    /* [3,1] against [1,4]: out[i][j] = c[i] < r[j] */
    nb_tensor *c = nb_from_array(NB_SHAPE(3, 1), (float[]){0, 1, 2});
    nb_tensor *r = nb_from_array(NB_SHAPE(1, 4), (float[]){-1, 0.5f, 1.5f, 3});
    nb_tensor *m = nb_lt(c, r);
    EXPECT_SHAPE(m, 3, 4);
    EXPECT_VALUES(m, 0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1);
}

Test(compare, against_a_0d_scalar) {
    nb_tensor *m = nb_ge(nb_scalar(1), rows());
    EXPECT_SHAPE(m, 2, 3);
    EXPECT_VALUES(m, 0, 1, 0, 0, 0, 0, 0);
    cr_assert_eq(nb_ndim(nb_eq(nb_scalar(2), nb_scalar(2))), 0);
    EXPECT_VALUES(nb_eq(nb_scalar(2), nb_scalar(2)), 0, 1);
}

Test(compare, nan_is_unequal_to_everything) {
    nb_tensor *a = vec(3, (float[]){NAN, 1, NAN});
    nb_tensor *b = vec(3, (float[]){NAN, NAN, 0});
    EXPECT_VALUES(nb_eq(a, b), 0, 0, 0, 0);
    EXPECT_VALUES(nb_ne(a, b), 0, 1, 1, 1);
    EXPECT_VALUES(nb_le(a, b), 0, 0, 0, 0);
    EXPECT_VALUES(nb_gt_scalar(a, 0), 0, 0, 1, 0);
}

Test(compare, scalar_comparisons) {
    nb_tensor *x = vec(5, (float[]){-2, -0.5f, 0, 0.5f, 3});
    EXPECT_VALUES(nb_gt_scalar(x, 0), 0, 0, 0, 0, 1, 1);
    EXPECT_VALUES(nb_lt_scalar(x, 0), 0, 1, 1, 0, 0, 0);
    EXPECT_VALUES(nb_gt_scalar(x, -0.5f), 0, 0, 0, 1, 1, 1);
    EXPECT_VALUES(nb_lt_scalar(x, 3), 0, 1, 1, 1, 1, 0);
    EXPECT_SHAPE(nb_gt_scalar(rows(), 3), 2, 3);
}

Test(compare, masks_never_require_grad) {
    nb_tensor *a = nb_test_leaf(-1, 1, NB_SHAPE(2, 3)), *b = nb_test_leaf(-1, 1, NB_SHAPE(3));
    nb_tensor *masks[] = {nb_eq(a, b),        nb_ne(a, b),        nb_lt(a, b),
                          nb_le(a, b),        nb_gt(a, b),        nb_ge(a, b),
                          nb_gt_scalar(a, 0), nb_lt_scalar(a, 0), nb_gt(nb_mul(a, b), b)};
    for (size_t k = 0; k < sizeof masks / sizeof *masks; k++) {
        cr_assert_not_null(masks[k]);
        cr_assert(!nb_requires_grad(masks[k]), "mask %zu requires grad", k);
        cr_assert_null(nb_op_of(masks[k]), "mask %zu was recorded", k);
    }
}

Test(compare, shape_mismatch_is_reported) {
    nb_tensor *a = nb_zeros(NB_SHAPE(2, 3)), *b = nb_zeros(NB_SHAPE(4));
    nb_tensor *(*ops[])(nb_tensor *, nb_tensor *) = {nb_eq, nb_ne, nb_lt, nb_le, nb_gt, nb_ge};
    const char *names[] = {"nb_eq", "nb_ne", "nb_lt", "nb_le", "nb_gt", "nb_ge"};
    for (int k = 0; k < 6; k++) {
        nb_clear_error();
        cr_assert_null(ops[k](a, b));
        EXPECT_ERROR(names[k], "[2,3]", "[4]", "cannot be broadcast");
    }
}

Test(compare, null_propagates_without_message) {
    nb_tensor *a = nb_zeros(NB_SHAPE(2));
    nb_clear_error();
    cr_assert_null(nb_eq(NULL, a));
    cr_assert_null(nb_ne(a, NULL));
    cr_assert_null(nb_lt(NULL, NULL));
    cr_assert_null(nb_le(NULL, a));
    cr_assert_null(nb_gt(a, NULL));
    cr_assert_null(nb_ge(NULL, a));
    cr_assert_null(nb_gt_scalar(NULL, 0));
    cr_assert_null(nb_lt_scalar(NULL, 0));
    cr_assert_null(nb_where(NULL, a, a));
    cr_assert_null(nb_where(a, NULL, a));
    cr_assert_null(nb_where(a, a, NULL));
    cr_assert_null(nb_error(), "unexpected message: %s", nb_error());
}

/* ---- where -------------------------------------------------------------------------- */

Test(compare, where_same_shapes) {
    nb_tensor *c = vec(4, (float[]){1, 0, -2, 0});
    nb_tensor *a = vec(4, (float[]){10, 20, 30, 40});
    nb_tensor *b = vec(4, (float[]){-1, -2, -3, -4});
    /* any nonzero condition picks a */
    EXPECT_VALUES(nb_where(c, a, b), 0, 10, -2, 30, -4);
}

Test(compare, where_nan_condition_picks_a) {
    EXPECT_VALUES(nb_where(nb_scalar(NAN), nb_scalar(1), nb_scalar(2)), 0, 1);
}

Test(compare, where_broadcasts_all_three) {
    /* cond [2,1], a [1,3], b 0-d -> [2,3] */
    nb_tensor *c = nb_from_array(NB_SHAPE(2, 1), (float[]){1, 0});
    nb_tensor *a = nb_from_array(NB_SHAPE(1, 3), (float[]){1, 2, 3});
    nb_tensor *y = nb_where(c, a, nb_scalar(-7));
    EXPECT_SHAPE(y, 2, 3);
    EXPECT_VALUES(y, 0, 1, 2, 3, -7, -7, -7);
    /* cond [3], a [2,1,1], b [4,1]: the output takes a dimension from each */
    nb_tensor *c3 = vec(3, (float[]){0, 1, 0});
    nb_tensor *a3 = nb_from_array(NB_SHAPE(2, 1, 1), (float[]){100, 200});
    nb_tensor *b3 = nb_from_array(NB_SHAPE(4, 1), (float[]){1, 2, 3, 4});
    nb_tensor *z = nb_where(c3, a3, b3);
    EXPECT_SHAPE(z, 2, 4, 3);
    EXPECT_VALUES(z, 0, 1, 100, 1, 2, 100, 2, 3, 100, 3, 4, 100, 4,
                  1, 200, 1, 2, 200, 2, 3, 200, 3, 4, 200, 4);
    /* the condition alone may set the shape */
    nb_tensor *w = nb_where(nb_from_array(NB_SHAPE(2, 2), (float[]){1, 0, 0, 1}), nb_scalar(1),
                            nb_scalar(0));
    EXPECT_SHAPE(w, 2, 2);
    EXPECT_VALUES(w, 0, 1, 0, 0, 1);
}

Test(compare, where_gradient_by_hand) {
    /* out = where(c, a, b) with a [3], b 0-d: da = c, db = sum(1 - c) */
    nb_tensor *c = nb_from_array(NB_SHAPE(2, 3), (float[]){1, 0, 1, 1, 1, 0});
    nb_tensor *a = nb_set_requires_grad(vec(3, (float[]){1, 2, 3}), true);
    nb_tensor *b = nb_set_requires_grad(nb_scalar(5), true);
    nb_tensor *y = nb_where(c, a, b);
    cr_assert(nb_requires_grad(y));
    cr_assert_str_eq(nb_op_of(y)->name, "where");
    cr_assert_eq(nb_backward(nb_sum_to(y, NB_SHAPE())), 0, "%s", nb_error());
    EXPECT_VALUES(nb_grad_of(a), 0, 2, 1, 1);
    EXPECT_VALUES(nb_grad_of(b), 0, 2);
}

Test(compare, where_condition_gets_no_gradient) {
    nb_tensor *c = nb_test_leaf(-1, 1, NB_SHAPE(3));
    nb_tensor *a = nb_test_leaf(-1, 1, NB_SHAPE(3)), *b = nb_zeros(NB_SHAPE(3));
    nb_tensor *y = nb_where(c, a, b);
    cr_assert_eq(nb_backward(nb_sum_to(y, NB_SHAPE())), 0, "%s", nb_error());
    cr_assert_null(nb_grad_of(c));
    cr_assert_not_null(nb_grad_of(a));
    cr_assert_null(nb_grad_of(b));
    /* a condition that requires grad alone makes no graph */
    cr_assert(!nb_requires_grad(nb_where(c, b, b)));
}

static nb_tensor *f_where(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return nb_where(in[0], in[1], in[2]);
}

Test(compare, where_gradcheck_broadcast) {
    /* cond [2,3] fixed, a [3], b [2,1]: both gradients are sums over the
     * broadcast axes of the masked output gradient */
    nb_tensor *in[3] = {nb_from_array(NB_SHAPE(2, 3), (float[]){1, 0, 1, 0, 0, 1}),
                        nb_test_leaf(-1, 1, NB_SHAPE(3)), nb_test_leaf(-1, 1, NB_SHAPE(2, 1))};
    nb_test_gradcheck(f_where, NULL, 3, in, true);
    /* the condition broadcast too: cond [4,1], a [4,3], b 0-d */
    nb_tensor *in2[3] = {nb_from_array(NB_SHAPE(4, 1), (float[]){0, 1, 1, 0}),
                         nb_test_leaf(-1, 1, NB_SHAPE(4, 3)), nb_test_leaf(-1, 1, NB_SHAPE(1))};
    nb_test_gradcheck(f_where, NULL, 3, in2, true);
}

/* where(x > 0, x^2, -x): the mask comes from a compare op on a grad input,
 * and the second derivative (2 on the positive side, 0 on the other) flows
 * through both branches. */
static nb_tensor *f_piecewise(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return nb_where(nb_gt_scalar(in[0], 0), nb_square(in[0]), nb_neg(in[0]));
}

Test(compare, where_gradgradcheck_through_branches) {
    nb_tensor *x = nb_uniform(NULL, -2, 2, NB_SHAPE(3, 4));
    float *d = nb_data_mut(x);
    for (int64_t i = 0; i < nb_numel(x); i++)
        if (fabsf(d[i]) < 0.1f) d[i] = d[i] < 0 ? -0.1f : 0.1f;
    nb_set_requires_grad(x, true);
    nb_test_gradcheck(f_piecewise, NULL, 1, &x, true);
}

Test(compare, where_shape_mismatch_is_reported) {
    nb_tensor *c = nb_zeros(NB_SHAPE(2, 3)), *a = nb_zeros(NB_SHAPE(4)), *b = nb_zeros(NB_SHAPE(3));
    cr_assert_null(nb_where(c, a, b));
    EXPECT_ERROR("nb_where", "[2,3]", "[4]", "[3]", "cannot be broadcast");
    nb_clear_error();
    cr_assert_null(nb_where(b, b, nb_zeros(NB_SHAPE(2, 2))));
    EXPECT_ERROR("nb_where", "[2,2]");
}
