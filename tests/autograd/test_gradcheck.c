/* test_gradcheck.c — gradcheck must catch wrong backward formulas. Three
 * versions of f(x) = x^2 as user-defined ops: the right one, one with the
 * sign flipped and one off by a factor 2. */
#include "test_util.h"

TestSuite(gradcheck, NB_TEST_HOOKS);

static nb_tensor *square_with(nb_tensor *x, const nb_op *op) {
    if (!x) return NULL;
    nb_tensor *y = nb_empty_like(x);
    const float *px = nb_data(x);
    float *py = nb_data_mut(y);
    for (int64_t i = 0; i < nb_numel(x); i++) py[i] = px[i] * px[i];
    nb_record(y, op, 1, &x);
    nb_save(y, x);
    return y;
}

static void right_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    gx[0] = nb_mul(g, nb_mul_scalar(nb_saved(y, 0), 2));
}
static void sign_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    gx[0] = nb_mul(g, nb_mul_scalar(nb_saved(y, 0), -2));
}
static void double_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    gx[0] = nb_mul(g, nb_mul_scalar(nb_saved(y, 0), 4));
}
/* right first derivative, but its own derivative is wrong: it uses a
 * detached copy of x, so the second derivative comes out 0 instead of 2 */
static void flat_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    gx[0] = nb_mul(g, nb_mul_scalar(nb_detach(nb_saved(y, 0)), 2));
}
static const nb_op ops[] = {{"square", right_backward},
                            {"square_sign_flipped", sign_backward},
                            {"square_times_two", double_backward},
                            {"square_flat", flat_backward}};

static nb_tensor *f(nb_tensor *const *in, void *ctx) {
    return square_with(in[0], &ops[*(int *)ctx]);
}

static nb_tensor *input(void) {
    return nb_set_requires_grad(nb_from_array(NB_SHAPE(2, 2), (float[]){0.5f, -1, 1.5f, 2}), true);
}

Test(gradcheck, passes_a_right_backward) {
    nb_tensor *x = input();
    int which = 0;
    nb_gradcheck_result r;
    cr_assert(nb_gradcheck(f, &which, 1, &x, NULL, &r), "%s", r.message);
    cr_assert(nb_gradgradcheck(f, &which, 1, &x, NULL, &r), "%s", r.message);
    cr_assert(strstr(r.message, "passed"));
}

Test(gradcheck, fails_a_flipped_sign) {
    nb_tensor *x = input();
    int which = 1;
    nb_gradcheck_opts quiet = {.quiet = true};
    nb_gradcheck_result r;
    cr_assert(!nb_gradcheck(f, &which, 1, &x, &quiet, &r));
    cr_assert(!r.ok);
    /* the worst element is the largest |x|: x = 2 at index 3, where the
     * analytic value is -w*4 and the numeric one w*4 */
    cr_assert_eq(r.input, 0);
    cr_assert_eq(r.index, 3);
    cr_assert_float_eq(r.analytic, -r.numeric, 1e-2 * fabs(r.numeric));
    cr_assert(strstr(r.message, "FAILED") && strstr(r.message, "element 3"), "%s", r.message);
}

Test(gradcheck, fails_a_factor_of_two) {
    nb_tensor *x = input();
    int which = 2;
    nb_gradcheck_opts quiet = {.quiet = true};
    nb_gradcheck_result r;
    cr_assert(!nb_gradcheck(f, &which, 1, &x, &quiet, &r));
    cr_assert_float_eq(r.analytic, 2 * r.numeric, 1e-2 * fabs(r.numeric));
}

Test(gradcheck, second_order_catches_a_non_differentiable_backward) {
    nb_tensor *x = input();
    int which = 3;
    nb_gradcheck_opts quiet = {.quiet = true};
    nb_gradcheck_result r;
    cr_assert(nb_gradcheck(f, &which, 1, &x, &quiet, &r), "%s", r.message);
    cr_assert(!nb_gradgradcheck(f, &which, 1, &x, &quiet, &r));
}

Test(gradcheck, needs_an_input_that_requires_grad) {
    nb_tensor *x = nb_ones(NB_SHAPE(2));
    int which = 0;
    nb_gradcheck_opts quiet = {.quiet = true};
    cr_assert(!nb_gradcheck(f, &which, 1, &x, &quiet, NULL));
    EXPECT_ERROR("nb_gradcheck", "no input requires grad");
}
