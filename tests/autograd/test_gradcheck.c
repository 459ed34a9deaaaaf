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

Test(gradcheck, leaves_the_versions_of_its_inputs_alone) {
    /* a graph built from x before the check must still backward after it:
     * the check restores the values, so it must not report them changed */
    nb_tensor *x = input();
    nb_tensor *y = nb_sum(nb_mul(x, x), NB_ALL, false);
    int which = 0;
    nb_gradcheck_result r;
    cr_assert(nb_gradcheck(f, &which, 1, &x, NULL, &r), "%s", r.message);
    cr_assert(nb_gradgradcheck(f, &which, 1, &x, NULL, &r), "%s", r.message);
    cr_assert_eq(nb_backward(y), 0, "%s", nb_error());
    EXPECT_VALUES(nb_grad_of(x), 1e-6, 1, -2, 3, 4);
    EXPECT_VALUES(x, 0, 0.5f, -1, 1.5f, 2);
}

Test(gradcheck, steps_relative_to_large_values) {
    /* at |x| = 1e5 a step of 1e-3 rounds away (a float's spacing there is
     * 0.0078): the step must scale with |x| */
    nb_tensor *x = nb_set_requires_grad(
        nb_from_array(NB_SHAPE(4), (float[]){1e5f, -2e5f, 0.5f, 3e6f}), true);
    int which = 0;
    nb_gradcheck_result r;
    cr_assert(nb_gradcheck(f, &which, 1, &x, NULL, &r), "%s", r.message);
    cr_assert(isfinite(r.numeric) && isfinite(r.analytic), "%s", r.message);
    int wrong = 2;
    nb_gradcheck_opts quiet = {.quiet = true};
    cr_assert(!nb_gradcheck(f, &wrong, 1, &x, &quiet, &r));
    cr_assert(isfinite(r.numeric), "%s", r.message);
    cr_assert_float_eq(r.analytic, 2 * r.numeric, 1e-2 * fabs(r.numeric), "%s", r.message);
}

/* d/dx sum(x^4) = 4x^3, computed inside f with create_graph */
static nb_tensor *grad_of_quartic(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    nb_tensor *y = nb_sum(nb_pow_scalar(in[0], 4), NB_ALL, false), *g = NULL;
    if (nb_grad(1, &y, NULL, 1, in, &g, &(nb_grad_opts){.create_graph = true}) != 0) return NULL;
    return g;
}

/* d2/dx2 sum(x^4) = 12x^2, two nested nb_grad calls */
static nb_tensor *second_of_quartic(nb_tensor *const *in, void *ctx) {
    nb_tensor *g = grad_of_quartic(in, ctx), *gg = NULL;
    if (!g) return NULL;
    nb_tensor *s = nb_sum(g, NB_ALL, false);
    if (nb_grad(1, &s, NULL, 1, in, &gg, &(nb_grad_opts){.create_graph = true}) != 0) return NULL;
    return gg;
}

Test(gradcheck, checks_functions_that_differentiate_inside) {
    /* gradgradcheck of a gradient is a third-order check: d3/dx3 sum(x^4) = 24x */
    nb_tensor *x = nb_set_requires_grad(nb_from_array(NB_SHAPE(3), (float[]){0.5f, -1, 1.5f}), true);
    nb_gradcheck_result r;
    cr_assert(nb_gradcheck(grad_of_quartic, NULL, 1, &x, NULL, &r), "%s", r.message);
    cr_assert(nb_gradgradcheck(grad_of_quartic, NULL, 1, &x, NULL, &r), "%s", r.message);
    cr_assert(nb_gradcheck(second_of_quartic, NULL, 1, &x, NULL, &r), "%s", r.message);
    /* and the value itself, by three nested nb_grad calls */
    nb_tensor *gg = second_of_quartic(&x, NULL), *ggg = NULL;
    nb_tensor *s = nb_sum(gg, NB_ALL, false);
    cr_assert_eq(nb_grad(1, &s, NULL, 1, &x, &ggg, NULL), 0, "%s", nb_error());
    EXPECT_VALUES(ggg, 1e-4, 12, -24, 36);
}

static nb_tensor *relu_f(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return nb_relu(in[0]);
}

Test(gradcheck, reports_a_kink) {
    /* relu at exactly 0: the central difference is w/2, the analytic value
     * a subgradient (0), and the one-sided slopes are w and 0 */
    nb_tensor *x = nb_set_requires_grad(nb_from_array(NB_SHAPE(3), (float[]){1, 0, -2}), true);
    nb_gradcheck_opts quiet = {.quiet = true};
    nb_gradcheck_result r;
    cr_assert(!nb_gradcheck(relu_f, NULL, 1, &x, &quiet, &r));
    cr_assert_eq(r.input, 0);
    cr_assert_eq(r.index, 1);
    cr_assert(r.at_kink, "%s", r.message);
    cr_assert(strstr(r.message, "input 0 element 1 sits at a kink") &&
              strstr(r.message, "subgradient, not a derivative"), "%s", r.message);
    /* away from 0 relu is smooth: no kink */
    nb_tensor *y = nb_set_requires_grad(nb_from_array(NB_SHAPE(2), (float[]){1, -2}), true);
    cr_assert(nb_gradcheck(relu_f, NULL, 1, &y, NULL, &r), "%s", r.message);
    cr_assert(!r.at_kink, "%s", r.message);
    /* a smooth function that fails is not called a kink either */
    int wrong = 2;
    nb_tensor *z = input();
    cr_assert(!nb_gradcheck(f, &wrong, 1, &z, &quiet, &r));
    cr_assert(!r.at_kink && !strstr(r.message, "kink"), "%s", r.message);
}
