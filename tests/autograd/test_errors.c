/* test_errors.c — the error rule: bad input returns NULL with one message
 * naming the op and the shapes; NULL propagates silently through a whole
 * expression; an installed handler sees every error. */
#include <signal.h>

#include "test_util.h"

TestSuite(errors, NB_TEST_HOOKS);

Test(errors, shape_mismatch_names_op_and_shapes) {
    nb_tensor *a = nb_ones(NB_SHAPE(2, 3)), *b = nb_ones(NB_SHAPE(4));
    cr_assert_null(nb_add(a, b));
    EXPECT_ERROR("nb_add", "[2,3]", "[4]", "cannot be broadcast");
}

Test(errors, matmul_message) {
    nb_tensor *a = nb_ones(NB_SHAPE(3, 4)), *b = nb_ones(NB_SHAPE(5, 2));
    cr_assert_null(nb_matmul(a, b));
    cr_assert_str_eq(nb_error(),
                     "nb_matmul: cannot multiply [3,4] by [5,2]: inner dimensions 4 and 5 differ");
}

Test(errors, null_propagates_without_a_second_message) {
    nb_tensor *a = nb_ones(NB_SHAPE(2, 3)), *b = nb_ones(NB_SHAPE(4));
    nb_tensor *y = nb_exp(nb_mul(nb_add(a, b), a));
    cr_assert_null(y);
    EXPECT_ERROR("nb_add"); /* the first failure is the one reported */
    cr_assert_eq(nb_backward(y), -1);
    EXPECT_ERROR("nb_add");
}

static int handler_calls;
static char handler_seen[256];
static void count_errors(const char *msg, void *user) {
    handler_calls += *(int *)user;
    snprintf(handler_seen, sizeof handler_seen, "%s", msg);
}

Test(errors, handler_sees_every_error) {
    int one = 1;
    handler_calls = 0;
    nb_error_handler old = nb_set_error_handler(count_errors, &one);
    cr_assert_null(old, "no handler is installed by default");
    nb_add(nb_ones(NB_SHAPE(2)), nb_ones(NB_SHAPE(3)));
    nb_item(nb_ones(NB_SHAPE(2)));
    nb_set_error_handler(NULL, NULL);
    cr_assert_eq(handler_calls, 2);
    cr_assert(strstr(handler_seen, "nb_item"));
}

Test(errors, clear_error) {
    nb_set_error("x");
    cr_assert_not_null(nb_error());
    nb_clear_error();
    cr_assert_null(nb_error());
}

Test(errors, backward_errors) {
    nb_tensor *x = nb_ones(NB_SHAPE(1));
    cr_assert_eq(nb_backward(x), -1);
    EXPECT_ERROR("nb_backward", "does not require grad");
    cr_assert_eq(nb_backward(NULL), -1);
}

Test(errors, requires_grad_only_on_leaves) {
    nb_tensor *x = nb_set_requires_grad(nb_ones(NB_SHAPE(1)), true);
    cr_assert_null(nb_set_requires_grad(nb_exp(x), false));
    EXPECT_ERROR("nb_set_requires_grad", "exp");
}

Test(errors, abort_handler_aborts, .signal = SIGABRT) {
    nb_set_error_handler(nb_abort_on_error, NULL);
    nb_add(nb_ones(NB_SHAPE(2)), nb_ones(NB_SHAPE(3)));
}
