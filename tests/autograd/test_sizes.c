/* test_sizes.c — the shape rule at the edges of int64: every dimension is
 * >= 0 and the product of the nonzero dimensions fits in int64, whatever
 * the order of the dimensions and whether one of them is zero. Shapes that
 * break it are refused with a message naming the function called and the
 * shape as the user wrote it; shapes that keep it but cannot be allocated
 * give "out of memory", never a crash. Run under UndefinedBehaviorSanitizer,
 * these tests also check that no size computation overflows on the way.
 */
#include <math.h>
#include <string.h>

#include "test_util.h"

/* Memory is capped at 1 GiB per allocation through the allocation hook, so
 * that "out of memory" is the same on every machine, and a request that
 * would succeed by overcommit is never touched. */
static bool at_most_1gib(size_t size, void *user) {
    (void)user;
    return size <= ((size_t)1 << 30);
}

static void sizes_setup(void) {
    nb_set_alloc_hook(at_most_1gib, NULL);
    nb_test_setup();
}

TestSuite(sizes, .init = sizes_setup, .fini = nb_test_teardown);

#define P62 ((int64_t)1 << 62)
#define P31 ((int64_t)1 << 31)
#define P40 ((int64_t)1 << 40)

static void expect_refused(nb_tensor *t, const char *who, const char *shape) {
    cr_assert_null(t, "%s accepted the shape %s", who, shape);
    EXPECT_ERROR(who, shape);
    nb_clear_error();
}

Test(sizes, creation_refuses_overflow_in_any_order) {
    const char *s1 = "[0,4611686018427387904,4611686018427387904]";
    const char *s2 = "[4611686018427387904,4611686018427387904,0]";
    const char *s3 = "[4611686018427387904,0,4611686018427387904]";
    expect_refused(nb_zeros(NB_SHAPE(0, P62, P62)), "nb_zeros: ", s1);
    expect_refused(nb_zeros(NB_SHAPE(P62, P62, 0)), "nb_zeros: ", s2);
    expect_refused(nb_zeros(NB_SHAPE(P62, 0, P62)), "nb_zeros: ", s3);
    expect_refused(nb_empty(NB_SHAPE(0, P62, P62)), "nb_empty: ", s1);
    expect_refused(nb_ones(NB_SHAPE(0, P62, P62)), "nb_ones: ", s1);
    expect_refused(nb_full(NB_SHAPE(P62, 0, P62), 2), "nb_full: ", s3);
    expect_refused(nb_from_array(NB_SHAPE(0, P62, P62), (float[]){0}), "nb_from_array: ", s1);
    expect_refused(nb_rand(NB_SHAPE(0, P62, P62)), "nb_rand: ", s1);
    expect_refused(nb_randn(NB_SHAPE(P62, P62, 0)), "nb_randn: ", s2);
    expect_refused(nb_uniform(NULL, 0, 1, NB_SHAPE(P62, 0, P62)), "nb_uniform: ", s3);
    expect_refused(nb_normal(NULL, 0, 1, NB_SHAPE(0, P62, P62)), "nb_normal: ", s1);
    expect_refused(nb_zeros(NB_SHAPE(0, INT64_MAX, 2)), "nb_zeros: ",
                   "[0,9223372036854775807,2]");
}

Test(sizes, creation_refuses_negative_dimensions) {
    expect_refused(nb_zeros(NB_SHAPE(0, -1)), "nb_zeros: ", "[0,-1]");
    expect_refused(nb_zeros(NB_SHAPE(-1, 0)), "nb_zeros: ", "[-1,0]");
    expect_refused(nb_empty(NB_SHAPE(INT64_MIN, 0)), "nb_empty: ", "[-9223372036854775808,0]");
    expect_refused(nb_eye(-3), "nb_eye: ", "-3");
}

Test(sizes, zero_size_with_countable_dimensions_is_accepted) {
    nb_tensor *a = nb_zeros(NB_SHAPE(0, P31, P31));
    EXPECT_SHAPE(a, 0, P31, P31);
    cr_expect_eq(nb_numel(a), 0);
    nb_tensor *b = nb_ones(NB_SHAPE(P31, P31, 0));
    EXPECT_SHAPE(b, P31, P31, 0);
    cr_expect_eq(nb_numel(b), 0);
    nb_tensor *c = nb_empty(NB_SHAPE(0, INT64_MAX));
    cr_assert_not_null(c, "%s", nb_error() ? nb_error() : "");
    cr_expect_eq(nb_numel(c), 0);
    cr_expect_eq(nb_numel(nb_from_array(NB_SHAPE(P62, 0), (float[]){0})), 0);
    /* printing an empty tensor prints its real shape */
    char buf[256] = {0};
    FILE *f = fmemopen(buf, sizeof buf - 1, "w");
    cr_assert_not_null(f);
    nb_fprint(f, c);
    fclose(f);
    cr_expect(strstr(buf, "size=[0,9223372036854775807]") != NULL, "printed %s", buf);
}

Test(sizes, allocation_beyond_memory_is_out_of_memory) {
    nb_tensor *t = nb_zeros(NB_SHAPE(P40, (int64_t)1 << 20));
    cr_assert_null(t);
    EXPECT_ERROR("nb_zeros: out of memory", "[1099511627776,1048576]");
    nb_clear_error();
    cr_assert_null(nb_empty(NB_SHAPE(INT64_MAX)));
    EXPECT_ERROR("nb_empty: out of memory", "[9223372036854775807]");
    nb_clear_error();
    cr_assert_null(nb_ones(NB_SHAPE(P31, P31)));
    EXPECT_ERROR("nb_ones: out of memory");
    nb_clear_error();
    cr_assert_null(nb_randn(NB_SHAPE(3, P40)));
    EXPECT_ERROR("nb_randn: out of memory");
    nb_clear_error();
    cr_assert_null(nb_eye(P31));
    EXPECT_ERROR("nb_eye: out of memory");
    nb_clear_error();
    cr_assert_null(nb_eye(P40)); /* n*n does not fit: refused, not wrapped */
    EXPECT_ERROR("nb_eye: ", "1099511627776");
    nb_clear_error();
    /* nothing was left half made */
    nb_tensor *z = nb_zeros(NB_SHAPE(2, 2));
    EXPECT_VALUES(z, 0, 0, 0, 0, 0);
}

Test(sizes, arange_counts) {
    cr_assert_null(nb_arange(0, 1e30, 1));
    EXPECT_ERROR("nb_arange: ", "too many");
    nb_clear_error();
    cr_assert_null(nb_arange(0, 1, 1e-300));
    EXPECT_ERROR("nb_arange: ", "too many");
    nb_clear_error();
    cr_assert_null(nb_arange(-1e308, 1e308, 1));
    EXPECT_ERROR("nb_arange: ");
    nb_clear_error();
    cr_assert_null(nb_arange(0, 9223372036854775807.0, 1)); /* 2^63 elements */
    EXPECT_ERROR("nb_arange: ", "too many");
    nb_clear_error();
    cr_assert_null(nb_arange(0, 4e18, 1)); /* countable, but not in memory */
    EXPECT_ERROR("nb_arange: out of memory");
    nb_clear_error();
    cr_assert_null(nb_arange(0, NAN, 1));
    EXPECT_ERROR("nb_arange: ");
    nb_clear_error();
    cr_assert_null(nb_arange(0, 1, INFINITY));
    EXPECT_ERROR("nb_arange: ");
    nb_clear_error();
    cr_assert_null(nb_arange(0, 1, NAN));
    EXPECT_ERROR("nb_arange: ");
    nb_clear_error();
    /* a huge step still gives the one element PyTorch gives */
    EXPECT_VALUES(nb_arange(0, 1, 1e300), 0, 0);
    EXPECT_VALUES(nb_arange(0, 1e300, 1e300), 0, 0);
    cr_assert_eq(nb_numel(nb_arange(1, 0, 1e300)), 0);
}

Test(sizes, linspace_counts) {
    cr_assert_null(nb_linspace(0, 1, INT64_MAX));
    EXPECT_ERROR("nb_linspace: out of memory", "9223372036854775807");
    nb_clear_error();
    cr_assert_null(nb_linspace(0, 1, -5));
    EXPECT_ERROR("nb_linspace: ", "-5");
    nb_clear_error();
    EXPECT_VALUES(nb_linspace(-1e308, 1e308, 3), 0, -INFINITY, 0, INFINITY);
}

Test(sizes, views_and_copies_of_zero_size_tensors) {
    nb_tensor *x = nb_zeros(NB_SHAPE(0, P31, P31));
    EXPECT_SHAPE(nb_flatten(x, 1, 2), 0, P62);
    EXPECT_SHAPE(nb_flatten(x, 0, -1), 0);
    EXPECT_SHAPE(nb_reshape(x, NB_SHAPE(P62, 0)), P62, 0);
    EXPECT_SHAPE(nb_reshape(x, NB_SHAPE(-1, P62)), 0, P62);
    EXPECT_SHAPE(nb_detach(x), 0, P31, P31);
    EXPECT_SHAPE(nb_clone(x), 0, P31, P31);
    EXPECT_SHAPE(nb_transpose(x, 0, 2), P31, P31, 0);
    EXPECT_SHAPE(nb_exp(x), 0, P31, P31);
    EXPECT_SHAPE(nb_sum(x, NB_AXES(1, 2), false), 0);
    EXPECT_VALUES(nb_sum(x, NB_ALL, false), 0, 0);
    cr_assert_null(nb_as_shape(x, NB_SHAPE(P62, P62, 0)));
    EXPECT_ERROR("nb_as_shape", "[4611686018427387904,4611686018427387904,0]");
}

/* ---- ops whose result shape is made from several inputs ----------------- */

Test(sizes, broadcast_refuses_uncountable_results) {
    nb_tensor *a = nb_zeros(NB_SHAPE(P40, 1, 0)), *b = nb_zeros(NB_SHAPE(1, P40, 0));
    cr_assert_null(nb_add(a, b));
    EXPECT_ERROR("nb_add: ", "[1099511627776,1,0]", "[1,1099511627776,0]",
                 "[1099511627776,1099511627776,0]");
    nb_clear_error();
    cr_assert_null(nb_mul(b, a));
    EXPECT_ERROR("nb_mul: ", "[1099511627776,1099511627776,0]");
    nb_clear_error();
    cr_assert_null(nb_maximum(a, b));
    EXPECT_ERROR("nb_maximum: ");
    nb_clear_error();
    /* countable, but not in memory: 2^42 floats */
    nb_tensor *e = nb_zeros(NB_SHAPE(1 << 20, 1)), *g = nb_zeros(NB_SHAPE(1, 1 << 22));
    cr_assert_null(nb_add(e, g));
    EXPECT_ERROR("nb_add: out of memory", "[1048576,4194304]");
    nb_clear_error();
    /* zero-size operands with countable huge dimensions broadcast fine */
    nb_tensor *h = nb_add(nb_zeros(NB_SHAPE(P31, 1, 0)), nb_zeros(NB_SHAPE(1, P31, 0)));
    EXPECT_SHAPE(h, P31, P31, 0);
}

Test(sizes, expand_refuses_uncountable_targets) {
    nb_tensor *x = nb_zeros(NB_SHAPE(1, 1));
    cr_assert_null(nb_expand(x, NB_SHAPE(P40, P40)));
    EXPECT_ERROR("nb_expand: ", "[1099511627776,1099511627776]");
    nb_clear_error();
    nb_tensor *z = nb_zeros(NB_SHAPE(1, 1, 0));
    cr_assert_null(nb_expand(z, NB_SHAPE(P62, P62, 0)));
    EXPECT_ERROR("nb_expand: ", "[4611686018427387904,4611686018427387904,0]");
    nb_clear_error();
    cr_assert_null(nb_expand(z, NB_SHAPE(P62, 4, 0)));
    EXPECT_ERROR("nb_expand: ", "[4611686018427387904,4,0]");
    nb_clear_error();
    EXPECT_SHAPE(nb_expand(z, NB_SHAPE(P31, P31, 0)), P31, P31, 0);
    cr_assert_null(nb_expand(x, NB_SHAPE(P31, P31)));
    EXPECT_ERROR("nb_expand: out of memory");
}

Test(sizes, matmul_refuses_uncountable_results) {
    /* batch dimensions broadcast to [2^40, 2^40]: uncountable even though
     * every matrix is empty */
    nb_tensor *a = nb_zeros(NB_SHAPE(P40, 1, 0, 1)), *b = nb_zeros(NB_SHAPE(1, P40, 1, 0));
    cr_assert_null(nb_matmul(a, b));
    EXPECT_ERROR("nb_matmul: ", "[1099511627776,1,0,1]", "[1,1099511627776,1,0]");
    nb_clear_error();
    /* m x n does not fit */
    nb_tensor *c = nb_zeros(NB_SHAPE(P40, 0)), *d = nb_zeros(NB_SHAPE(0, P40));
    cr_assert_null(nb_matmul(c, d));
    EXPECT_ERROR("nb_matmul: ", "[1099511627776,0]", "[0,1099511627776]");
    nb_clear_error();
    /* countable, but not in memory */
    nb_tensor *e = nb_zeros(NB_SHAPE(1 << 20, 0)), *f = nb_zeros(NB_SHAPE(0, P40));
    cr_assert_null(nb_matmul(e, f));
    EXPECT_ERROR("nb_matmul: out of memory");
    nb_clear_error();
    /* an empty inner dimension gives zeros, whatever its batch */
    nb_tensor *g = nb_matmul(nb_zeros(NB_SHAPE(P31, 0, 2, 0)), nb_zeros(NB_SHAPE(0, 3)));
    EXPECT_SHAPE(g, P31, 0, 2, 3);
    EXPECT_VALUES(nb_matmul(nb_zeros(NB_SHAPE(2, 0)), nb_zeros(NB_SHAPE(0, 2))), 0, 0, 0, 0, 0);
}

Test(sizes, reductions_of_zero_size_tensors) {
    nb_tensor *x = nb_zeros(NB_SHAPE(0, P62));
    EXPECT_VALUES(nb_sum(x, NB_ALL, false), 0, 0);
    EXPECT_SHAPE(nb_sum(x, NB_AXES(1), true), 0, 1);
    cr_assert_null(nb_sum(x, NB_AXES(0), false));
    EXPECT_ERROR("nb_sum: out of memory", "[4611686018427387904]");
    nb_clear_error();
    cr_assert_null(nb_mean(x, NB_AXES(0), true));
    EXPECT_ERROR("nb_mean: out of memory", "[1,4611686018427387904]");
    nb_clear_error();
    cr_assert_null(nb_logsumexp(x, NB_AXES(0), false));
    EXPECT_ERROR("nb_logsumexp: out of memory", "[1,4611686018427387904]");
    nb_clear_error();
    cr_assert_null(nb_max(nb_zeros(NB_SHAPE(P62, 0)), NB_AXES(1), false));
    EXPECT_ERROR("nb_max: ", "[4611686018427387904,0]", "zero elements");
    nb_clear_error();
    EXPECT_SHAPE(nb_max(nb_zeros(NB_SHAPE(P62, 0)), NB_AXES(0), false), 0);
    EXPECT_SHAPE(nb_argmin(nb_zeros(NB_SHAPE(3, 0, P40)), 0, true), 1, 0, P40);
    EXPECT_SHAPE(nb_softmax(x, 1), 0, P62);
    EXPECT_SHAPE(nb_log_softmax(x, 0), 0, P62);
}

Test(sizes, where_and_index_select_refuse_uncountable_results) {
    nb_tensor *c = nb_zeros(NB_SHAPE(P40, 1, 0)), *a = nb_zeros(NB_SHAPE(1, P40, 0));
    cr_assert_null(nb_where(c, a, nb_scalar(1)));
    EXPECT_ERROR("nb_where: ", "[1099511627776,1099511627776,0]");
    nb_clear_error();
    nb_tensor *x = nb_zeros(NB_SHAPE(1, 0, P62));
    nb_tensor *index = nb_zeros(NB_SHAPE(3));
    cr_assert_null(nb_index_select(x, 0, index));
    EXPECT_ERROR("nb_index_select: ", "[3,0,4611686018427387904]");
    nb_clear_error();
    EXPECT_SHAPE(nb_index_select(x, 0, nb_zeros(NB_SHAPE(1))), 1, 0, P62);
    /* empty results made without a walk over their 2^40 rows */
    nb_tensor *z = nb_zeros(NB_SHAPE(P40, 1, 0));
    EXPECT_SHAPE(nb_index_select(z, 1, nb_zeros(NB_SHAPE(5))), P40, 5, 0);
    nb_tensor *src = nb_zeros(NB_SHAPE(P40, 4, 0));
    EXPECT_SHAPE(nb_index_add(z, 1, nb_zeros(NB_SHAPE(4)), src), P40, 1, 0);
}
