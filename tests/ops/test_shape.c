/* test_shape.c — the shape and index ops: reshape and its views (flatten,
 * squeeze, unsqueeze), the copies (clone, slice, concat, stack) and the
 * index ops (index_select, gather, index_add, scatter_add).
 *
 * Each op is checked on values worked out by hand, by gradcheck and
 * gradgradcheck (the ops are linear, so the checked function squares their
 * output: the second-order check then runs through each op's backward and
 * the backward of that backward), on bad input with the message it must
 * give, and on NULL input, which must return NULL without a message.
 */
#include <string.h>

#include "test_util.h"

TestSuite(shape, NB_TEST_HOOKS);

/* x = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]] and friends. */
static nb_tensor *counting(int ndim, const int64_t *shape) {
    nb_tensor *t = nb_empty(ndim, shape);
    float *d = nb_data_mut(t);
    for (int64_t i = 0; i < nb_numel(t); i++) d[i] = (float)i;
    return t;
}

static nb_tensor *values(int ndim, const int64_t *shape, const float *data) {
    return nb_from_array(ndim, shape, data);
}
#define TENSOR(shape, ...) values(NB_SHAPE shape, (const float[]){__VA_ARGS__})

/* Arguments of the functions gradcheck differentiates. */
typedef struct args {
    int axis;
    int64_t start, stop, step;
    int ndim;
    int64_t shape[NB_MAX_DIMS];
    nb_tensor *index;
    int n;
} args;

static void expect_null_silently(nb_tensor *t) {
    cr_expect_null(t);
    cr_expect_null(nb_error(), "NULL input set a message: %s", nb_error() ? nb_error() : "");
}

/* The gradient that backward sends to x when out receives grad_output. */
static nb_tensor *grad_through(nb_tensor *out, nb_tensor *grad_output, nb_tensor *x) {
    cr_assert_not_null(out, "%s", nb_error() ? nb_error() : "");
    nb_tensor *g = NULL;
    cr_assert_eq(nb_grad(1, &out, &grad_output, 1, &x, &g, NULL), 0, "%s",
                 nb_error() ? nb_error() : "");
    return g;
}

/* ---- reshape --------------------------------------------------------------------- */

Test(shape, reshape_shares_storage_and_infers) {
    nb_tensor *x = counting(NB_SHAPE(2, 3));
    nb_tensor *r = nb_reshape(x, NB_SHAPE(3, 2));
    EXPECT_SHAPE(r, 3, 2);
    EXPECT_VALUES(r, 0, 0, 1, 2, 3, 4, 5);
    cr_expect_eq(nb_data(r), nb_data(x), "reshape must share x's storage");
    nb_data_mut(x)[4] = 40;
    cr_expect_eq(nb_data(r)[4], 40.0f, "a write to x must show through the reshape");
    EXPECT_SHAPE(nb_reshape(x, NB_SHAPE(-1, 2)), 3, 2);
    EXPECT_SHAPE(nb_reshape(x, NB_SHAPE(3, -1)), 3, 2);
    EXPECT_SHAPE(nb_reshape(x, NB_SHAPE(-1)), 6);
    EXPECT_SHAPE(nb_reshape(x, NB_SHAPE(1, -1, 1)), 1, 6, 1);
    nb_tensor *s = nb_reshape(nb_scalar(7), NB_SHAPE(1, 1));
    EXPECT_SHAPE(s, 1, 1);
    nb_tensor *back = nb_reshape(s, NB_SHAPE());
    cr_expect_eq(nb_ndim(back), 0);
    EXPECT_VALUES(back, 0, 7);
}

Test(shape, reshape_bad_shapes) {
    nb_tensor *x = counting(NB_SHAPE(2, 3));
    cr_expect_null(nb_reshape(x, NB_SHAPE(4, 2)));
    EXPECT_ERROR("nb_reshape: cannot reshape [2,3] (6 elements) to [4,2] (8 elements)");
    cr_expect_null(nb_reshape(x, NB_SHAPE(-1, 4)));
    EXPECT_ERROR("nb_reshape", "[2,3]", "[-1,4]");
    cr_expect_null(nb_reshape(x, NB_SHAPE(-1, -1)));
    EXPECT_ERROR("nb_reshape", "[-1,-1]");
    cr_expect_null(nb_reshape(x, NB_SHAPE(-2, -3)));
    EXPECT_ERROR("nb_reshape", "[-2,-3]");
    cr_expect_null(nb_reshape(x, NB_SHAPE(1, 1, 1, 1, 1, 1, 1, 1, 6)));
    EXPECT_ERROR("nb_reshape", "9 dimensions", "[2,3]");
    nb_clear_error();
    expect_null_silently(nb_reshape(NULL, NB_SHAPE(2, 3)));
}

Test(shape, flatten_ranges) {
    nb_tensor *x = counting(NB_SHAPE(2, 3, 4));
    EXPECT_SHAPE(nb_flatten(x, 0, -1), 24);
    EXPECT_SHAPE(nb_flatten(x, 1, 2), 2, 12);
    EXPECT_SHAPE(nb_flatten(x, 0, 1), 6, 4);
    EXPECT_SHAPE(nb_flatten(x, 1, 1), 2, 3, 4);
    EXPECT_SHAPE(nb_flatten(x, -2, -1), 2, 12);
    EXPECT_SHAPE(nb_flatten(nb_scalar(3), 0, -1), 1);
    nb_tensor *f = nb_flatten(x, 1, 2);
    cr_expect_eq(nb_data(f), nb_data(x), "flatten must share x's storage");
    cr_expect_eq(nb_data(f)[13], 13.0f);

    cr_expect_null(nb_flatten(x, 2, 0));
    EXPECT_ERROR("nb_flatten: start axis 2 comes after end axis 0");
    cr_expect_null(nb_flatten(x, 0, 3));
    EXPECT_ERROR("nb_flatten", "axis 3", "3 dimensions");
    cr_expect_null(nb_flatten(x, -4, 1));
    EXPECT_ERROR("nb_flatten", "axis -4");
    nb_clear_error();
    expect_null_silently(nb_flatten(NULL, 0, -1));
}

Test(shape, squeeze) {
    nb_tensor *x = counting(NB_SHAPE(2, 1, 3));
    nb_tensor *s = nb_squeeze(x, 1);
    EXPECT_SHAPE(s, 2, 3);
    EXPECT_VALUES(s, 0, 0, 1, 2, 3, 4, 5);
    cr_expect_eq(nb_data(s), nb_data(x));
    EXPECT_SHAPE(nb_squeeze(x, -2), 2, 3);
    cr_expect_eq(nb_ndim(nb_squeeze(nb_ones(NB_SHAPE(1)), 0)), 0);
    cr_expect_null(nb_squeeze(x, 0));
    EXPECT_ERROR("nb_squeeze: axis 0 of [2,1,3] has size 2, not 1");
    cr_expect_null(nb_squeeze(x, 3));
    EXPECT_ERROR("nb_squeeze", "axis 3");
    cr_expect_null(nb_squeeze(nb_scalar(1), 0));
    EXPECT_ERROR("nb_squeeze", "0 dimensions");
    nb_clear_error();
    expect_null_silently(nb_squeeze(NULL, 0));
}

Test(shape, unsqueeze) {
    nb_tensor *x = counting(NB_SHAPE(2, 3));
    EXPECT_SHAPE(nb_unsqueeze(x, 0), 1, 2, 3);
    EXPECT_SHAPE(nb_unsqueeze(x, 1), 2, 1, 3);
    EXPECT_SHAPE(nb_unsqueeze(x, 2), 2, 3, 1);
    EXPECT_SHAPE(nb_unsqueeze(x, -1), 2, 3, 1);
    EXPECT_SHAPE(nb_unsqueeze(x, -2), 2, 1, 3);
    EXPECT_SHAPE(nb_unsqueeze(x, -3), 1, 2, 3);
    EXPECT_SHAPE(nb_unsqueeze(nb_scalar(2), 0), 1);
    EXPECT_SHAPE(nb_unsqueeze(nb_scalar(2), -1), 1);
    nb_tensor *u = nb_unsqueeze(x, 2);
    cr_expect_eq(nb_data(u), nb_data(x));
    EXPECT_VALUES(u, 0, 0, 1, 2, 3, 4, 5);
    cr_expect_null(nb_unsqueeze(x, 3));
    EXPECT_ERROR("nb_unsqueeze", "out of range");
    cr_expect_null(nb_unsqueeze(nb_zeros(NB_SHAPE(1, 1, 1, 1, 1, 1, 1, 1)), 0));
    EXPECT_ERROR("nb_unsqueeze", "[1,1,1,1,1,1,1,1]", "8 dimensions");
    nb_clear_error();
    expect_null_silently(nb_unsqueeze(NULL, 0));
}

/* Axes below -ndim-1 are out of range, like those above ndim. */
Test(shape, unsqueeze_rejects_axes_below_range) {
    nb_tensor *x = counting(NB_SHAPE(2, 3));
    cr_expect_null(nb_unsqueeze(x, -4));
    EXPECT_ERROR("nb_unsqueeze", "-4");
    cr_expect_null(nb_unsqueeze(x, -5));
    EXPECT_ERROR("nb_unsqueeze", "-5");
}

static nb_tensor *f_reshape(nb_tensor *const *in, void *ctx) {
    const args *a = ctx;
    return nb_square(nb_reshape(in[0], a->ndim, a->shape));
}
static nb_tensor *f_flatten(nb_tensor *const *in, void *ctx) {
    const args *a = ctx;
    return nb_square(nb_flatten(in[0], (int)a->start, (int)a->stop));
}
static nb_tensor *f_squeeze(nb_tensor *const *in, void *ctx) {
    const args *a = ctx;
    return nb_square(nb_squeeze(in[0], a->axis));
}
static nb_tensor *f_unsqueeze(nb_tensor *const *in, void *ctx) {
    const args *a = ctx;
    return nb_square(nb_unsqueeze(in[0], a->axis));
}

Test(shape, reshape_family_gradients) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(2, 3, 4));
    args r = {.ndim = 2, .shape = {4, -1}};
    nb_test_gradcheck(f_reshape, &r, 1, &x, true);
    args f = {.start = 1, .stop = -1};
    nb_test_gradcheck(f_flatten, &f, 1, &x, true);
    nb_tensor *y = nb_test_leaf(-1, 1, NB_SHAPE(3, 1, 2));
    args s = {.axis = -2};
    nb_test_gradcheck(f_squeeze, &s, 1, &y, true);
    args u = {.axis = -1};
    nb_test_gradcheck(f_unsqueeze, &u, 1, &y, true);

    /* reshape's gradient is the output gradient in x's shape */
    nb_tensor *g = grad_through(nb_reshape(x, NB_SHAPE(6, 4)), counting(NB_SHAPE(6, 4)), x);
    EXPECT_SHAPE(g, 2, 3, 4);
    cr_expect_eq(nb_data(g)[23], 23.0f);
}

/* ---- clone -------------------------------------------------------------------------- */

static nb_tensor *f_clone(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return nb_square(nb_clone(in[0]));
}

Test(shape, clone) {
    nb_tensor *x = TENSOR((2, 2), 1, -2, 3, 4);
    nb_tensor *c = nb_clone(x);
    EXPECT_SHAPE(c, 2, 2);
    EXPECT_VALUES(c, 0, 1, -2, 3, 4);
    cr_expect_neq(nb_data(c), nb_data(x), "clone must copy");
    nb_data_mut(x)[0] = 9;
    EXPECT_VALUES(c, 0, 1, -2, 3, 4);
    EXPECT_VALUES(nb_clone(nb_scalar(5)), 0, 5);
    EXPECT_SHAPE(nb_clone(nb_zeros(NB_SHAPE(0, 3))), 0, 3);

    nb_tensor *w = nb_test_leaf(-1, 1, NB_SHAPE(3, 4));
    nb_test_gradcheck(f_clone, NULL, 1, &w, true);
    nb_tensor *g = grad_through(nb_clone(w), counting(NB_SHAPE(3, 4)), w);
    cr_expect_eq(nb_data(g)[7], 7.0f);
    expect_null_silently(nb_clone(NULL));
}

/* ---- slice ------------------------------------------------------------------------------ */

Test(shape, slice_values) {
    nb_tensor *x = counting(NB_SHAPE(3, 4));
    nb_tensor *s = nb_slice(x, 1, 1, 3, 1);
    EXPECT_SHAPE(s, 3, 2);
    EXPECT_VALUES(s, 0, 1, 2, 5, 6, 9, 10);
    EXPECT_VALUES(nb_slice(x, 1, 0, 4, 2), 0, 0, 2, 4, 6, 8, 10);
    EXPECT_VALUES(nb_slice(x, 1, 1, 100, 2), 0, 1, 3, 5, 7, 9, 11);
    EXPECT_VALUES(nb_slice(x, 0, -2, 100, 1), 0, 4, 5, 6, 7, 8, 9, 10, 11);
    EXPECT_VALUES(nb_slice(x, -1, -3, -1, 1), 0, 1, 2, 5, 6, 9, 10);
    EXPECT_VALUES(nb_slice(x, 0, -100, 1, 1), 0, 0, 1, 2, 3);
    EXPECT_VALUES(nb_slice(x, 0, 0, 3, 5), 0, 0, 1, 2, 3);
    EXPECT_SHAPE(nb_slice(x, 1, 3, 1, 1), 3, 0);
    EXPECT_SHAPE(nb_slice(x, 1, 4, 100, 1), 3, 0);
    EXPECT_SHAPE(nb_slice(x, 0, -1, -2, 1), 0, 4);
    EXPECT_VALUES(nb_slice(counting(NB_SHAPE(10)), 0, 1, 9, 3), 0, 1, 4, 7);
    EXPECT_VALUES(nb_slice(counting(NB_SHAPE(10)), 0, -9, -1, 4), 0, 1, 5);
    /* a middle axis with a step: whole rows of the inner axis move */
    nb_tensor *y = counting(NB_SHAPE(2, 5, 2));
    nb_tensor *m = nb_slice(y, 1, -5, 5, 2);
    EXPECT_SHAPE(m, 2, 3, 2);
    EXPECT_VALUES(m, 0, 0, 1, 4, 5, 8, 9, 10, 11, 14, 15, 18, 19);
}

Test(shape, slice_gradient_by_hand) {
    nb_tensor *x = nb_set_requires_grad(counting(NB_SHAPE(2, 5)), true);
    /* x[:, -4::2] takes columns 1 and 3; x[:, 4:1] is empty */
    nb_tensor *g = grad_through(nb_slice(x, 1, -4, 100, 2), TENSOR((2, 2), 1, 2, 3, 4), x);
    EXPECT_SHAPE(g, 2, 5);
    EXPECT_VALUES(g, 0, 0, 1, 0, 2, 0, 0, 3, 0, 4, 0);
    nb_tensor *e = grad_through(nb_slice(x, 1, 4, 1, 1), nb_zeros(NB_SHAPE(2, 0)), x);
    EXPECT_VALUES(e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
}

static nb_tensor *f_slice(nb_tensor *const *in, void *ctx) {
    const args *a = ctx;
    return nb_square(nb_slice(in[0], a->axis, a->start, a->stop, a->step));
}

Test(shape, slice_gradients) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(3, 7, 2));
    args cases[] = {
        {.axis = 1, .start = 1, .stop = 6, .step = 1},
        {.axis = 1, .start = -6, .stop = -1, .step = 2},
        {.axis = -1, .start = 1, .stop = 50, .step = 1},
        {.axis = 0, .start = -100, .stop = 100, .step = 2},
        {.axis = 1, .start = 0, .stop = 7, .step = 3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        nb_test_gradcheck(f_slice, &cases[i], 1, &x, true);
    /* single elements picked along the last axis */
    nb_tensor *y = nb_test_leaf(-1, 1, NB_SHAPE(3, 8));
    args last = {.axis = -1, .start = -7, .stop = 8, .step = 3};
    nb_test_gradcheck(f_slice, &last, 1, &y, true);
}

Test(shape, slice_bad_input) {
    nb_tensor *x = counting(NB_SHAPE(3, 4));
    cr_expect_null(nb_slice(x, 1, 0, 2, 0));
    EXPECT_ERROR("nb_slice: step 0 along axis 1 of [3,4] must be at least 1");
    cr_expect_null(nb_slice(x, 0, 2, 0, -1));
    EXPECT_ERROR("nb_slice", "step -1", "[3,4]");
    cr_expect_null(nb_slice(x, 2, 0, 1, 1));
    EXPECT_ERROR("nb_slice", "axis 2", "2 dimensions");
    cr_expect_null(nb_slice(x, -3, 0, 1, 1));
    EXPECT_ERROR("nb_slice", "axis -3");
    cr_expect_null(nb_slice(nb_scalar(1), 0, 0, 1, 1));
    EXPECT_ERROR("nb_slice", "0 dimensions");
    nb_clear_error();
    expect_null_silently(nb_slice(NULL, 0, 0, 1, 1));
}

/* Third order through slice: y = slice(x)^3 summed with weights 1 has
 * d/dx = 3 x^2 at the sliced positions; differentiating that twice more
 * gives 6 there and 0 elsewhere. */
Test(shape, slice_third_derivative) {
    nb_tensor *x = nb_set_requires_grad(TENSOR((4), 1, 2, 3, 4), true);
    nb_tensor *y = nb_pow_scalar(nb_slice(x, 0, 1, 4, 2), 3);
    nb_tensor *ones = nb_ones(NB_SHAPE(2)), *g1 = NULL, *g2 = NULL, *g3 = NULL;
    cr_assert_eq(nb_grad(1, &y, &ones, 1, &x, &g1, &(nb_grad_opts){.create_graph = true}), 0, "%s", nb_error());
    EXPECT_VALUES(g1, 1e-4, 0, 12, 0, 48);
    nb_tensor *ones4 = nb_ones(NB_SHAPE(4));
    cr_assert_eq(nb_grad(1, &g1, &ones4, 1, &x, &g2, &(nb_grad_opts){.create_graph = true}), 0, "%s", nb_error());
    EXPECT_VALUES(g2, 1e-4, 0, 12, 0, 24);
    cr_assert_eq(nb_grad(1, &g2, &ones4, 1, &x, &g3, NULL), 0, "%s", nb_error());
    EXPECT_VALUES(g3, 1e-4, 0, 6, 0, 6);
}

/* ---- concat ---------------------------------------------------------------------------- */

Test(shape, concat_values) {
    nb_tensor *a = TENSOR((2, 1, 2), 1, 2, 3, 4);
    nb_tensor *b = TENSOR((2, 2, 2), 5, 6, 7, 8, 9, 10, 11, 12);
    nb_tensor *c = TENSOR((2, 1, 2), 13, 14, 15, 16);
    nb_tensor *abc[] = {a, b, c};
    nb_tensor *m = nb_concat(3, abc, 1);
    EXPECT_SHAPE(m, 2, 4, 2);
    EXPECT_VALUES(m, 0, 1, 2, 5, 6, 7, 8, 13, 14, 3, 4, 9, 10, 11, 12, 15, 16);
    nb_tensor *ac[] = {a, c};
    nb_tensor *first = nb_concat(2, ac, 0);
    EXPECT_SHAPE(first, 4, 1, 2);
    EXPECT_VALUES(first, 0, 1, 2, 3, 4, 13, 14, 15, 16);
    nb_tensor *last = nb_concat(2, ac, -1);
    EXPECT_SHAPE(last, 2, 1, 4);
    EXPECT_VALUES(last, 0, 1, 2, 13, 14, 3, 4, 15, 16);
    nb_tensor *one = nb_concat(1, &a, 0);
    EXPECT_VALUES(one, 0, 1, 2, 3, 4);
    cr_expect_neq(nb_data(one), nb_data(a), "concat must copy");
    nb_tensor *with_empty[] = {a, nb_zeros(NB_SHAPE(2, 0, 2)), c};
    EXPECT_VALUES(nb_concat(3, with_empty, 1), 0, 1, 2, 13, 14, 3, 4, 15, 16);
}

Test(shape, concat_gradient_by_hand) {
    nb_tensor *a = nb_test_leaf(-1, 1, NB_SHAPE(2, 1));
    nb_tensor *b = nb_zeros(NB_SHAPE(2, 2)); /* a constant: gets no gradient */
    nb_tensor *c = nb_test_leaf(-1, 1, NB_SHAPE(2, 1));
    nb_tensor *abc[] = {a, b, c};
    nb_tensor *out = nb_concat(3, abc, 1), *g[2];
    nb_tensor *grad_output = counting(NB_SHAPE(2, 4)), *wrt[] = {a, c};
    cr_assert_eq(nb_grad(1, &out, &grad_output, 2, wrt, g, NULL), 0, "%s", nb_error());
    EXPECT_VALUES(g[0], 0, 0, 4);
    EXPECT_VALUES(g[1], 0, 3, 7);
}

static nb_tensor *f_concat(nb_tensor *const *in, void *ctx) {
    const args *a = ctx;
    return nb_square(nb_concat(a->n, in, a->axis));
}

Test(shape, concat_gradients) {
    nb_tensor *in[] = {nb_test_leaf(-1, 1, NB_SHAPE(2, 1, 3)), nb_test_leaf(-1, 1, NB_SHAPE(2, 3, 3)),
                       nb_test_leaf(-1, 1, NB_SHAPE(2, 2, 3))};
    args mid = {.n = 3, .axis = 1};
    nb_test_gradcheck(f_concat, &mid, 3, in, true);
    nb_tensor *rows[] = {nb_test_leaf(-1, 1, NB_SHAPE(1, 3)), nb_ones(NB_SHAPE(2, 3)),
                         nb_test_leaf(-1, 1, NB_SHAPE(3, 3))};
    args first = {.n = 3, .axis = -2};
    nb_test_gradcheck(f_concat, &first, 3, rows, true);
}

Test(shape, concat_bad_input) {
    nb_tensor *a = counting(NB_SHAPE(2, 1, 2)), *d = counting(NB_SHAPE(3, 1, 2));
    nb_tensor *ad[] = {a, a, d};
    cr_expect_null(nb_concat(0, ad, 0));
    EXPECT_ERROR("nb_concat", "at least one tensor", "got 0");
    cr_expect_null(nb_concat(-1, ad, 0));
    EXPECT_ERROR("nb_concat", "got -1");
    cr_expect_null(nb_concat(2, NULL, 0));
    EXPECT_ERROR("nb_concat", "NULL");
    cr_expect_null(nb_concat(3, ad, 1));
    EXPECT_ERROR("nb_concat: input 2 has shape [3,1,2] and input 0 has shape [2,1,2]", "axis 1");
    nb_tensor *rank[] = {a, counting(NB_SHAPE(2, 2))};
    cr_expect_null(nb_concat(2, rank, 1));
    EXPECT_ERROR("nb_concat", "input 1", "[2,2]", "[2,1,2]");
    cr_expect_null(nb_concat(2, ad, 3));
    EXPECT_ERROR("nb_concat", "axis 3", "3 dimensions");
    nb_tensor *scalars[] = {nb_scalar(1), nb_scalar(2)};
    cr_expect_null(nb_concat(2, scalars, 0));
    EXPECT_ERROR("nb_concat", "0 dimensions");
    nb_clear_error();
    nb_tensor *with_null[] = {a, NULL, a};
    expect_null_silently(nb_concat(3, with_null, 0));
}

/* ---- stack ----------------------------------------------------------------------------- */

Test(shape, stack_values) {
    nb_tensor *a = TENSOR((3), 1, 2, 3), *b = TENSOR((3), 4, 5, 6);
    nb_tensor *ab[] = {a, b};
    nb_tensor *s0 = nb_stack(2, ab, 0);
    EXPECT_SHAPE(s0, 2, 3);
    EXPECT_VALUES(s0, 0, 1, 2, 3, 4, 5, 6);
    nb_tensor *s1 = nb_stack(2, ab, 1);
    EXPECT_SHAPE(s1, 3, 2);
    EXPECT_VALUES(s1, 0, 1, 4, 2, 5, 3, 6);
    EXPECT_VALUES(nb_stack(2, ab, -1), 0, 1, 4, 2, 5, 3, 6);
    EXPECT_VALUES(nb_stack(2, ab, -2), 0, 1, 2, 3, 4, 5, 6);
    /* the intermediate views do not linger in the caller's scope */
    int64_t live = nb_live_tensors();
    nb_tensor *s2 = nb_stack(2, ab, 1);
    cr_expect_eq(nb_live_tensors(), live + 1, "stack left %lld tensors alive, expected 1",
                 (long long)(nb_live_tensors() - live));
    EXPECT_VALUES(s2, 0, 1, 4, 2, 5, 3, 6);
    nb_tensor *p = TENSOR((2, 2), 1, 2, 3, 4), *q = TENSOR((2, 2), 5, 6, 7, 8);
    nb_tensor *pq[] = {p, q};
    nb_tensor *mid = nb_stack(2, pq, 1);
    EXPECT_SHAPE(mid, 2, 2, 2);
    EXPECT_VALUES(mid, 0, 1, 2, 5, 6, 3, 4, 7, 8);
    nb_tensor *scalars[] = {nb_scalar(1), nb_scalar(2), nb_scalar(3)};
    nb_tensor *v = nb_stack(3, scalars, 0);
    EXPECT_SHAPE(v, 3);
    EXPECT_VALUES(v, 0, 1, 2, 3);
    /* more inputs than fit on the stack */
    nb_tensor *many[40];
    for (int i = 0; i < 40; i++) many[i] = nb_full(NB_SHAPE(2), (float)i);
    nb_tensor *big = nb_stack(40, many, 1);
    EXPECT_SHAPE(big, 2, 40);
    cr_expect_eq(nb_data(big)[39], 39.0f);
    cr_expect_eq(nb_data(big)[41], 1.0f);
}

static nb_tensor *f_stack(nb_tensor *const *in, void *ctx) {
    const args *a = ctx;
    return nb_square(nb_stack(a->n, in, a->axis));
}

Test(shape, stack_gradients) {
    nb_tensor *in[] = {nb_test_leaf(-1, 1, NB_SHAPE(2, 3)), nb_test_leaf(-1, 1, NB_SHAPE(2, 3)),
                       nb_test_leaf(-1, 1, NB_SHAPE(2, 3))};
    int axes[] = {0, 1, 2, -1, -3};
    for (size_t i = 0; i < sizeof axes / sizeof *axes; i++) {
        args a = {.n = 3, .axis = axes[i]};
        nb_test_gradcheck(f_stack, &a, 3, in, true);
    }
    /* the gradient of input i is its slice of the output gradient */
    nb_tensor *out = nb_stack(3, in, 2), *g = NULL;
    nb_tensor *grad_output = counting(NB_SHAPE(2, 3, 3));
    cr_assert_eq(nb_grad(1, &out, &grad_output, 1, &in[1], &g, NULL), 0, "%s", nb_error());
    EXPECT_VALUES(g, 0, 1, 4, 7, 10, 13, 16);
}

Test(shape, stack_bad_input) {
    nb_tensor *a = counting(NB_SHAPE(3)), *b = counting(NB_SHAPE(4));
    nb_tensor *ab[] = {a, b}, *aa[] = {a, a};
    cr_expect_null(nb_stack(0, aa, 0));
    EXPECT_ERROR("nb_stack", "at least one tensor", "got 0");
    cr_expect_null(nb_stack(2, ab, 0));
    EXPECT_ERROR("nb_stack: input 1 has shape [4] and input 0 has shape [3]");
    cr_expect_null(nb_stack(2, aa, 2));
    EXPECT_ERROR("nb_stack", "axis 2", "[3]");
    cr_expect_null(nb_stack(2, aa, -3));
    EXPECT_ERROR("nb_stack", "axis -3", "[3]");
    nb_tensor *full[] = {nb_zeros(NB_SHAPE(1, 1, 1, 1, 1, 1, 1, 1))};
    cr_expect_null(nb_stack(1, full, 0));
    EXPECT_ERROR("nb_stack", "8 dimensions");
    nb_clear_error();
    nb_tensor *with_null[] = {a, NULL};
    expect_null_silently(nb_stack(2, with_null, 0));
}

/* ---- index_select and index_add --------------------------------------------------------- */

Test(shape, index_select_values) {
    nb_tensor *x = TENSOR((3, 2), 1, 2, 3, 4, 5, 6);
    nb_tensor *rows = nb_index_select(x, 0, TENSOR((3), 2, 0, 2));
    EXPECT_SHAPE(rows, 3, 2);
    EXPECT_VALUES(rows, 0, 5, 6, 1, 2, 5, 6);
    nb_tensor *cols = nb_index_select(x, -1, TENSOR((3), 1, 1, 0));
    EXPECT_SHAPE(cols, 3, 3);
    EXPECT_VALUES(cols, 0, 2, 2, 1, 4, 4, 3, 6, 6, 5);
    nb_tensor *one = nb_index_select(x, 0, nb_scalar(1));
    EXPECT_SHAPE(one, 1, 2);
    EXPECT_VALUES(one, 0, 3, 4);
    EXPECT_SHAPE(nb_index_select(x, 1, nb_zeros(NB_SHAPE(0))), 3, 0);
    nb_tensor *y = counting(NB_SHAPE(2, 3, 2));
    EXPECT_VALUES(nb_index_select(y, 1, TENSOR((2), 2, 1)), 0, 4, 5, 2, 3, 10, 11, 8, 9);
}

/* Repeated indices: row 2 is picked twice, so its gradient is the sum of
 * the two output rows that came from it. */
Test(shape, index_select_gradient_accumulates) {
    nb_tensor *x = nb_set_requires_grad(TENSOR((3, 2), 1, 2, 3, 4, 5, 6), true);
    nb_tensor *index = nb_set_requires_grad(TENSOR((3), 2, 0, 2), true);
    nb_tensor *out = nb_index_select(x, 0, index);
    nb_tensor *g = grad_through(out, TENSOR((3, 2), 1, 2, 3, 4, 5, 6), x);
    EXPECT_VALUES(g, 0, 3, 4, 0, 0, 6, 8);
    /* the index is a position: no gradient reaches it */
    cr_assert_eq(nb_backward_ex(nb_index_select(x, 0, index), nb_ones(NB_SHAPE(3, 2)), NULL),
                 0, "%s", nb_error());
    EXPECT_VALUES(nb_grad_of(x), 0, 1, 1, 0, 0, 2, 2);
    cr_expect_null(nb_grad_of(index));
    cr_expect_not(nb_requires_grad(nb_index_select(nb_ones(NB_SHAPE(3)), 0, index)),
                  "an index that requires grad must not make the output require grad");
}

Test(shape, index_select_saved_index_modified) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(3, 2));
    nb_tensor *index = TENSOR((2), 2, 0);
    nb_tensor *out = nb_index_select(x, 0, index);
    nb_data_mut(index)[0] = 1;
    cr_expect_eq(nb_backward_ex(out, nb_ones(NB_SHAPE(2, 2)), NULL), -1);
    EXPECT_ERROR("modified in place", "index_select");
}

static nb_tensor *f_index_select(nb_tensor *const *in, void *ctx) {
    const args *a = ctx;
    return nb_square(nb_index_select(in[0], a->axis, a->index));
}

Test(shape, index_select_gradients) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(3, 4, 2));
    args rows = {.axis = 0, .index = TENSOR((5), 2, 0, 2, 1, 2)};
    nb_test_gradcheck(f_index_select, &rows, 1, &x, true);
    args mid = {.axis = 1, .index = TENSOR((3), 3, 3, 0)};
    nb_test_gradcheck(f_index_select, &mid, 1, &x, true);
    args last = {.axis = -1, .index = TENSOR((3), 1, 0, 1)};
    nb_test_gradcheck(f_index_select, &last, 1, &x, true);
}

Test(shape, index_select_bad_input) {
    nb_tensor *x = TENSOR((3, 2), 1, 2, 3, 4, 5, 6);
    cr_expect_null(nb_index_select(x, 0, TENSOR((2), 0, 3)));
    EXPECT_ERROR("nb_index_select: index value 3 at position [1] is out of range [0, 3) for axis 0 "
                 "of x [3,2]");
    cr_expect_null(nb_index_select(x, 1, TENSOR((2), -1, 0)));
    EXPECT_ERROR("nb_index_select", "index value -1 at position [0]", "out of range [0, 2)");
    cr_expect_null(nb_index_select(x, 0, TENSOR((3), 0, 1, 1.5)));
    EXPECT_ERROR("nb_index_select: index value 1.5 at position [2] is not an integer");
    cr_expect_null(nb_index_select(x, 0, TENSOR((1), NAN)));
    EXPECT_ERROR("nb_index_select", "nan", "not an integer");
    cr_expect_null(nb_index_select(x, 0, TENSOR((1), INFINITY)));
    EXPECT_ERROR("nb_index_select", "inf", "out of range");
    cr_expect_null(nb_index_select(x, 0, TENSOR((1, 2), 0, 1)));
    EXPECT_ERROR("nb_index_select: index must be 0-d or 1-D, got shape [1,2]");
    cr_expect_null(nb_index_select(x, 2, TENSOR((1), 0)));
    EXPECT_ERROR("nb_index_select", "axis 2", "2 dimensions");
    nb_clear_error();
    expect_null_silently(nb_index_select(NULL, 0, TENSOR((1), 0)));
    expect_null_silently(nb_index_select(x, 0, NULL));
}

Test(shape, index_add_values) {
    nb_tensor *x = TENSOR((3, 2), 1, 2, 3, 4, 5, 6);
    nb_tensor *src = TENSOR((3, 2), 10, 20, 30, 40, 50, 60);
    nb_tensor *out = nb_index_add(x, 0, TENSOR((3), 0, 2, 0), src);
    EXPECT_SHAPE(out, 3, 2);
    EXPECT_VALUES(out, 0, 61, 82, 3, 4, 35, 46);
    EXPECT_VALUES(x, 0, 1, 2, 3, 4, 5, 6); /* x itself is untouched */
    nb_tensor *y = TENSOR((2, 3), 1, 2, 3, 4, 5, 6);
    EXPECT_VALUES(nb_index_add(y, -1, TENSOR((2), 2, 2), TENSOR((2, 2), 1, 2, 3, 4)), 0,
                  1, 2, 6, 4, 5, 13);
    EXPECT_VALUES(nb_index_add(y, 0, nb_scalar(1), TENSOR((1, 3), 1, 1, 1)), 0, 1, 2, 3, 5, 6, 7);
    nb_tensor *z = nb_zeros(NB_SHAPE(2, 3, 2));
    EXPECT_VALUES(nb_index_add(z, 1, TENSOR((2), 1, 1), counting(NB_SHAPE(2, 2, 2))), 0,
                  0, 0, 2, 4, 0, 0, 0, 0, 10, 12, 0, 0);
}

Test(shape, index_add_gradient_by_hand) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(3, 2)), *src = nb_test_leaf(-1, 1, NB_SHAPE(3, 2));
    nb_tensor *out = nb_index_add(x, 0, TENSOR((3), 0, 2, 0), src);
    nb_tensor *go = counting(NB_SHAPE(3, 2)), *wrt[] = {x, src}, *g[2];
    cr_assert_eq(nb_grad(1, &out, &go, 2, wrt, g, NULL), 0, "%s", nb_error());
    EXPECT_VALUES(g[0], 0, 0, 1, 2, 3, 4, 5);
    EXPECT_VALUES(g[1], 0, 0, 1, 4, 5, 0, 1);
}

static nb_tensor *f_index_add(nb_tensor *const *in, void *ctx) {
    const args *a = ctx;
    return nb_square(nb_index_add(in[0], a->axis, a->index, in[1]));
}

Test(shape, index_add_gradients) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(3, 4, 2));
    nb_tensor *rows[] = {x, nb_test_leaf(-1, 1, NB_SHAPE(4, 4, 2))};
    args a0 = {.axis = 0, .index = TENSOR((4), 2, 0, 2, 2)};
    nb_test_gradcheck(f_index_add, &a0, 2, rows, true);
    nb_tensor *mid[] = {x, nb_test_leaf(-1, 1, NB_SHAPE(3, 3, 2))};
    args a1 = {.axis = -2, .index = TENSOR((3), 3, 1, 3)};
    nb_test_gradcheck(f_index_add, &a1, 2, mid, true);
}

Test(shape, index_add_bad_input) {
    nb_tensor *x = TENSOR((3, 2), 1, 2, 3, 4, 5, 6), *src = nb_ones(NB_SHAPE(2, 2));
    cr_expect_null(nb_index_add(x, 0, TENSOR((2), 0, 1), nb_ones(NB_SHAPE(3, 2))));
    EXPECT_ERROR("nb_index_add: src has shape [3,2], expected [2,2]", "x [3,2]");
    cr_expect_null(nb_index_add(x, 0, TENSOR((2), 0, 1), nb_ones(NB_SHAPE(2, 2, 1))));
    EXPECT_ERROR("nb_index_add", "[2,2,1]", "expected [2,2]");
    cr_expect_null(nb_index_add(x, 0, TENSOR((2), 0, 5), src));
    EXPECT_ERROR("nb_index_add: index value 5 at position [1] is out of range [0, 3)");
    cr_expect_null(nb_index_add(x, 0, TENSOR((2), 0.25, 1), src));
    EXPECT_ERROR("nb_index_add: index value 0.25 at position [0] is not an integer");
    cr_expect_null(nb_index_add(x, 0, TENSOR((2, 1), 0, 1), src));
    EXPECT_ERROR("nb_index_add", "0-d or 1-D", "[2,1]");
    cr_expect_null(nb_index_add(x, -3, TENSOR((2), 0, 1), src));
    EXPECT_ERROR("nb_index_add", "axis -3");
    nb_clear_error();
    expect_null_silently(nb_index_add(NULL, 0, TENSOR((2), 0, 1), src));
    expect_null_silently(nb_index_add(x, 0, NULL, src));
    expect_null_silently(nb_index_add(x, 0, TENSOR((2), 0, 1), NULL));
}

/* ---- gather and scatter_add ------------------------------------------------------------ */

Test(shape, gather_values) {
    nb_tensor *x = TENSOR((2, 3), 1, 2, 3, 4, 5, 6);
    nb_tensor *g1 = nb_gather(x, 1, TENSOR((2, 2), 2, 0, 1, 1));
    EXPECT_SHAPE(g1, 2, 2);
    EXPECT_VALUES(g1, 0, 3, 1, 5, 5);
    nb_tensor *g0 = nb_gather(x, 0, TENSOR((2, 3), 1, 0, 1, 0, 0, 1));
    EXPECT_SHAPE(g0, 2, 3);
    EXPECT_VALUES(g0, 0, 4, 2, 6, 1, 2, 6);
    /* index smaller than x on the other axes, and longer along axis */
    EXPECT_VALUES(nb_gather(x, 0, TENSOR((3, 1), 1, 1, 0)), 0, 4, 4, 1);
    nb_tensor *y = counting(NB_SHAPE(2, 3, 2));
    nb_tensor *g3 = nb_gather(y, -2, TENSOR((1, 2, 2), 2, 0, 1, 2));
    EXPECT_SHAPE(g3, 1, 2, 2);
    EXPECT_VALUES(g3, 0, 4, 1, 2, 5);
    EXPECT_SHAPE(nb_gather(x, 1, nb_zeros(NB_SHAPE(2, 0))), 2, 0);
}

Test(shape, gather_gradient_by_hand) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(2, 3));
    nb_tensor *out = nb_gather(x, 1, TENSOR((2, 2), 2, 0, 1, 1));
    EXPECT_VALUES(grad_through(out, TENSOR((2, 2), 1, 2, 3, 4), x), 0, 2, 0, 1, 0, 7, 0);
}

static nb_tensor *f_gather(nb_tensor *const *in, void *ctx) {
    const args *a = ctx;
    return nb_square(nb_gather(in[0], a->axis, a->index));
}

Test(shape, gather_gradients) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(3, 4, 2));
    args a0 = {.axis = 0, .index = TENSOR((4, 2, 2), 2, 0, 2, 2, 1, 1, 0, 2, 0, 0, 1, 2, 2, 2, 1, 0)};
    nb_test_gradcheck(f_gather, &a0, 1, &x, true);
    args a1 = {.axis = 1, .index = TENSOR((2, 3, 1), 3, 3, 0, 1, 2, 1)};
    nb_test_gradcheck(f_gather, &a1, 1, &x, true);
    args a2 = {.axis = -1, .index = TENSOR((3, 4, 3), 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 0, 0,
                                           0, 1, 0, 1, 0, 1, 1, 1, 0, 0, 0, 1,
                                           1, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1, 0)};
    nb_test_gradcheck(f_gather, &a2, 1, &x, true);
}

Test(shape, gather_bad_input) {
    nb_tensor *x = TENSOR((2, 3), 1, 2, 3, 4, 5, 6);
    cr_expect_null(nb_gather(x, 1, TENSOR((2), 0, 1)));
    EXPECT_ERROR("nb_gather: index of shape [2] does not fit x of shape [2,3] along axis 1");
    cr_expect_null(nb_gather(x, 1, nb_zeros(NB_SHAPE(3, 1))));
    EXPECT_ERROR("nb_gather", "index of shape [3,1]", "[2,3]");
    cr_expect_null(nb_gather(x, 1, TENSOR((2, 2), 0, 1, 3, 0)));
    EXPECT_ERROR("nb_gather: index value 3 at position [1,0] is out of range [0, 3) for axis 1 "
                 "of x [2,3]");
    cr_expect_null(nb_gather(x, 0, TENSOR((2, 2), 0, 1, 1, -2)));
    EXPECT_ERROR("nb_gather", "index value -2 at position [1,1]", "[0, 2)");
    cr_expect_null(nb_gather(x, 0, TENSOR((1, 2), 0, 0.5)));
    EXPECT_ERROR("nb_gather: index value 0.5 at position [0,1] is not an integer");
    cr_expect_null(nb_gather(x, 2, TENSOR((1, 1), 0)));
    EXPECT_ERROR("nb_gather", "axis 2", "2 dimensions");
    nb_clear_error();
    expect_null_silently(nb_gather(NULL, 0, TENSOR((1, 1), 0)));
    expect_null_silently(nb_gather(x, 0, NULL));
}

Test(shape, scatter_add_values) {
    nb_tensor *x = TENSOR((2, 3), 1, 2, 3, 4, 5, 6);
    nb_tensor *out = nb_scatter_add(x, 1, TENSOR((2, 2), 2, 0, 2, 2), TENSOR((2, 2), 10, 20, 30, 40));
    EXPECT_SHAPE(out, 2, 3);
    EXPECT_VALUES(out, 0, 21, 2, 13, 4, 5, 76);
    EXPECT_VALUES(x, 0, 1, 2, 3, 4, 5, 6); /* x itself is untouched */
    EXPECT_VALUES(nb_scatter_add(nb_zeros(NB_SHAPE(2, 2)), 0, TENSOR((1, 2), 1, 0), TENSOR((1, 2), 7, 8)),
                  0, 0, 8, 7, 0);
    nb_tensor *y = nb_zeros(NB_SHAPE(2, 3, 2));
    EXPECT_VALUES(nb_scatter_add(y, -2, TENSOR((1, 2, 2), 2, 0, 2, 2), TENSOR((1, 2, 2), 1, 2, 3, 4)),
                  0, 0, 2, 0, 0, 4, 4, 0, 0, 0, 0, 0, 0);
}

Test(shape, scatter_add_gradient_by_hand) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(2, 3)), *src = nb_test_leaf(-1, 1, NB_SHAPE(2, 2));
    nb_tensor *out = nb_scatter_add(x, 1, TENSOR((2, 2), 2, 0, 2, 2), src);
    nb_tensor *go = counting(NB_SHAPE(2, 3)), *wrt[] = {x, src}, *g[2];
    cr_assert_eq(nb_grad(1, &out, &go, 2, wrt, g, NULL), 0, "%s", nb_error());
    EXPECT_VALUES(g[0], 0, 0, 1, 2, 3, 4, 5);
    EXPECT_VALUES(g[1], 0, 2, 0, 5, 5);
}

static nb_tensor *f_scatter_add(nb_tensor *const *in, void *ctx) {
    const args *a = ctx;
    return nb_square(nb_scatter_add(in[0], a->axis, a->index, in[1]));
}

Test(shape, scatter_add_gradients) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(3, 4, 2));
    nb_tensor *in0[] = {x, nb_test_leaf(-1, 1, NB_SHAPE(4, 2, 2))};
    args a0 = {.axis = 0, .index = TENSOR((4, 2, 2), 2, 0, 2, 2, 1, 1, 0, 2, 0, 0, 1, 2, 2, 2, 1, 0)};
    nb_test_gradcheck(f_scatter_add, &a0, 2, in0, true);
    nb_tensor *in1[] = {x, nb_test_leaf(-1, 1, NB_SHAPE(2, 3, 1))};
    args a1 = {.axis = 1, .index = TENSOR((2, 3, 1), 3, 3, 0, 1, 2, 1)};
    nb_test_gradcheck(f_scatter_add, &a1, 2, in1, true);
}

Test(shape, scatter_add_bad_input) {
    nb_tensor *x = TENSOR((2, 3), 1, 2, 3, 4, 5, 6), *src = nb_ones(NB_SHAPE(2, 2));
    cr_expect_null(nb_scatter_add(x, 1, TENSOR((2, 2), 0, 1, 1, 0), nb_ones(NB_SHAPE(2, 3))));
    EXPECT_ERROR("nb_scatter_add: src has shape [2,3] and index has shape [2,2]", "x [2,3]");
    cr_expect_null(nb_scatter_add(x, 1, TENSOR((2), 0, 1), nb_ones(NB_SHAPE(2))));
    EXPECT_ERROR("nb_scatter_add: index of shape [2] does not fit x of shape [2,3]");
    cr_expect_null(nb_scatter_add(x, 1, TENSOR((2, 2), 0, 1, 1, 3), src));
    EXPECT_ERROR("nb_scatter_add: index value 3 at position [1,1] is out of range [0, 3)");
    cr_expect_null(nb_scatter_add(x, 0, TENSOR((2, 2), 0, 1, 1, -1), src));
    EXPECT_ERROR("nb_scatter_add", "index value -1 at position [1,1]");
    cr_expect_null(nb_scatter_add(x, 1, TENSOR((2, 2), 0, 1, 1.75, 0), src));
    EXPECT_ERROR("nb_scatter_add: index value 1.75 at position [1,0] is not an integer");
    cr_expect_null(nb_scatter_add(x, -3, TENSOR((2, 2), 0, 1, 1, 0), src));
    EXPECT_ERROR("nb_scatter_add", "axis -3");
    nb_clear_error();
    expect_null_silently(nb_scatter_add(NULL, 0, TENSOR((2, 2), 0, 1, 1, 0), src));
    expect_null_silently(nb_scatter_add(x, 0, NULL, src));
    expect_null_silently(nb_scatter_add(x, 0, TENSOR((2, 2), 0, 1, 1, 0), NULL));
}

/* ---- a 0-d x, or a 0-d index on a vector: PyTorch's result shapes ------------------------
 * torch.index_select(tensor(5.), 0, tensor(0)) is 0-d; so are gather and
 * scatter_add of a 0-d x with a 0-d index, and index_add of a 0-d x. A
 * vector takes a 0-d index (one slice, kept as [1]) and, in index_add, a
 * 0-d src. */

Test(shape, index_ops_on_a_0d_x) {
    nb_tensor *x = nb_set_requires_grad(nb_scalar(5), true);
    nb_tensor *sel = nb_index_select(x, 0, nb_scalar(0));
    nb_test_expect_shape(sel, NB_SHAPE());
    EXPECT_VALUES(sel, 0, 5);
    nb_tensor *gat = nb_gather(x, -1, nb_scalar(0));
    nb_test_expect_shape(gat, NB_SHAPE());
    EXPECT_VALUES(gat, 0, 5);
    nb_tensor *src = nb_set_requires_grad(nb_scalar(2), true);
    nb_tensor *add = nb_index_add(x, 0, nb_scalar(0), src);
    nb_test_expect_shape(add, NB_SHAPE());
    EXPECT_VALUES(add, 0, 7); /* 5 + 2 */
    nb_tensor *sca = nb_scatter_add(x, 0, nb_scalar(0), src);
    nb_test_expect_shape(sca, NB_SHAPE());
    EXPECT_VALUES(sca, 0, 7);
    /* d(3 sel + 5 gat + 7 add + 11 sca)/dx = 3 + 5 + 7 + 11 = 26; d/dsrc = 7 + 11 = 18 */
    nb_tensor *total = nb_add(nb_add(nb_mul_scalar(sel, 3), nb_mul_scalar(gat, 5)),
                              nb_add(nb_mul_scalar(add, 7), nb_mul_scalar(sca, 11)));
    cr_assert_eq(nb_backward(total), 0, "%s", nb_error());
    EXPECT_VALUES(nb_grad_of(x), 0, 26);
    EXPECT_VALUES(nb_grad_of(src), 0, 18);
    /* the one index of a 0-d x is 0 */
    cr_assert_null(nb_index_select(x, 0, nb_scalar(1)));
    EXPECT_ERROR("nb_index_select", "out of range", "0-d");
    cr_assert_null(nb_gather(x, 0, nb_zeros(NB_SHAPE(1))));
    EXPECT_ERROR("nb_gather", "0-d index", "[1]");
    cr_assert_null(nb_index_select(x, 1, nb_scalar(0)));
    EXPECT_ERROR("nb_index_select", "axis 1");
}

Test(shape, index_add_takes_a_0d_src_on_a_vector) {
    /* PyTorch: torch.zeros(3).index_add(0, tensor(1), tensor(4.)) = [0, 4, 0] */
    nb_tensor *src = nb_set_requires_grad(nb_scalar(4), true);
    nb_tensor *out = nb_index_add(nb_zeros(NB_SHAPE(3)), 0, nb_scalar(1), src);
    EXPECT_SHAPE(out, 3);
    EXPECT_VALUES(out, 0, 0, 4, 0);
    /* d sum([1,2,3] * out)/dsrc = 2, and src's gradient is 0-d like src */
    cr_assert_eq(nb_backward(nb_sum(nb_mul(out, TENSOR((3), 1, 2, 3)), NB_ALL, false)), 0, "%s",
                 nb_error());
    nb_test_expect_shape(nb_grad_of(src), NB_SHAPE());
    EXPECT_VALUES(nb_grad_of(src), 0, 2);
}

/* ---- sizes at the edge of int64 ---------------------------------------------
 * The shape rule (every dimension >= 0, the product of the nonzero ones fits
 * in int64) seen through the shape ops: a target or result shape that breaks
 * it is refused with a message naming the op and the real numbers, and
 * zero-size tensors with huge dimensions are handled without a walk over
 * their empty rows. */

#define BIG62 ((int64_t)1 << 62)
#define BIG31 ((int64_t)1 << 31)
#define BIG40 ((int64_t)1 << 40)

Test(shape, reshape_refuses_uncountable_targets) {
    nb_tensor *x = nb_zeros(NB_SHAPE(0, 4));
    cr_expect_null(nb_reshape(x, NB_SHAPE(BIG62, BIG62, 0)));
    EXPECT_ERROR("nb_reshape: ", "[4611686018427387904,4611686018427387904,0]");
    nb_clear_error();
    cr_expect_null(nb_reshape(x, NB_SHAPE(0, BIG62, BIG62)));
    EXPECT_ERROR("nb_reshape: ", "[0,4611686018427387904,4611686018427387904]");
    nb_clear_error();
    cr_expect_null(nb_reshape(x, NB_SHAPE(-1, BIG62, 4)));
    EXPECT_ERROR("nb_reshape: ", "[-1,4611686018427387904,4]");
    nb_clear_error();
    cr_expect_null(nb_reshape(x, NB_SHAPE(-1, 0)));
    EXPECT_ERROR("nb_reshape: ", "[-1,0]");
    nb_clear_error();
    EXPECT_SHAPE(nb_reshape(x, NB_SHAPE(BIG31, 0, BIG31)), BIG31, 0, BIG31);
    EXPECT_SHAPE(nb_reshape(x, NB_SHAPE(-1, BIG62)), 0, BIG62);
    nb_tensor *y = nb_zeros(NB_SHAPE(BIG62, 0));
    cr_assert_not_null(y);
    cr_expect_null(nb_reshape(y, NB_SHAPE(BIG62, 3, 0)));
    EXPECT_ERROR("nb_reshape: ", "[4611686018427387904,3,0]");
}

Test(shape, flatten_of_huge_zero_size_tensors) {
    cr_expect_null(nb_zeros(NB_SHAPE(0, BIG62, BIG62)));
    nb_clear_error();
    nb_tensor *x = nb_zeros(NB_SHAPE(BIG31, BIG31, 0));
    EXPECT_SHAPE(nb_flatten(x, 0, 1), BIG62, 0);
    EXPECT_SHAPE(nb_flatten(x, 1, 2), BIG31, 0);
    EXPECT_SHAPE(nb_flatten(x, 0, -1), 0);
    EXPECT_SHAPE(nb_unsqueeze(nb_flatten(x, 0, 1), 0), 1, BIG62, 0);
}

Test(shape, concat_refuses_uncountable_results) {
    nb_tensor *a = nb_zeros(NB_SHAPE(0, BIG62)), *b = nb_zeros(NB_SHAPE(0, BIG62));
    cr_expect_null(nb_concat(2, (nb_tensor *[]){a, b}, 1));
    EXPECT_ERROR("nb_concat: ", "axis 1", "[0,4611686018427387904]");
    cr_expect(strstr(nb_error(), "-9223372036854775808") == NULL, "%s", nb_error());
    nb_clear_error();
    nb_tensor *c = nb_zeros(NB_SHAPE(0, BIG31, BIG31));
    cr_expect_null(nb_concat(2, (nb_tensor *[]){c, c}, 1));
    EXPECT_ERROR("nb_concat: ", "[0,4294967296,2147483648]");
    nb_clear_error();
    /* countable: a zero-size result, made without a walk over its rows */
    EXPECT_SHAPE(nb_concat(2, (nb_tensor *[]){a, a}, 0), 0, BIG62);
    nb_tensor *d = nb_zeros(NB_SHAPE(BIG40, 0));
    EXPECT_SHAPE(nb_concat(3, (nb_tensor *[]){d, d, d}, 1), BIG40, 0);
    EXPECT_SHAPE(nb_concat(2, (nb_tensor *[]){c, c}, 0), 0, BIG31, BIG31);
}

Test(shape, stack_refuses_uncountable_results) {
    nb_tensor *a = nb_zeros(NB_SHAPE(0, BIG62));
    cr_expect_null(nb_stack(2, (nb_tensor *[]){a, a}, 0));
    EXPECT_ERROR("nb_stack: ", "[0,4611686018427387904]", "[2,0,4611686018427387904]");
    nb_clear_error();
    cr_expect_null(nb_stack(3, (nb_tensor *[]){a, a, a}, -1));
    EXPECT_ERROR("nb_stack: ", "[0,4611686018427387904,3]");
    nb_clear_error();
    EXPECT_SHAPE(nb_stack(1, (nb_tensor *[]){a}, 2), 0, BIG62, 1);
}

Test(shape, slice_of_huge_zero_size_tensors) {
    nb_tensor *x = nb_zeros(NB_SHAPE(BIG40, 0));
    EXPECT_SHAPE(nb_slice(x, 1, 0, 5, 1), BIG40, 0);
    EXPECT_SHAPE(nb_slice(x, 0, 1, INT64_MAX, INT64_MAX), 1, 0);
    EXPECT_SHAPE(nb_slice(x, 0, INT64_MIN, INT64_MAX, 3), 366503875926, 0);
    nb_tensor *y = nb_zeros(NB_SHAPE(0, BIG62));
    EXPECT_SHAPE(nb_slice(y, 1, -5, INT64_MAX, 2), 0, 3);
    EXPECT_SHAPE(nb_slice(y, 1, INT64_MIN, INT64_MIN, 1), 0, 0);
    EXPECT_SHAPE(nb_slice(y, 1, BIG62 - 1, INT64_MAX, INT64_MAX), 0, 1);
}

Test(shape, slice_gradient_of_huge_zero_size_tensors) {
    /* the bounds kept for backward survive beyond 2^53 */
    nb_tensor *y = nb_set_requires_grad(nb_zeros(NB_SHAPE(0, BIG62 + 5)), true);
    nb_tensor *s = nb_slice(y, 1, BIG62 + 1, BIG62 + 4, 1);
    EXPECT_SHAPE(s, 0, 3);
    nb_tensor *g;
    cr_assert_eq(nb_grad(1, &s, (nb_tensor *[]){nb_zeros(NB_SHAPE(0, 3))}, 1, &y, &g, NULL), 0,
                 "%s", nb_error() ? nb_error() : "");
    EXPECT_SHAPE(g, 0, BIG62 + 5);
}
