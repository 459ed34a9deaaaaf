/* test_post_hooks.c — post-accumulate-grad hooks
 * (nb_register_post_accumulate_grad_hook): when they fire (once per
 * backward per leaf, in the order backward reaches the leaves, while the
 * rest of backward has yet to run), what they see (.grad already holding
 * the sum of every path and of earlier backwards), and that nb_grad calls
 * none. Expected gradients are worked out by hand in the comments.
 */
#include <stdio.h>
#include <string.h>

#include "test_util.h"

TestSuite(post_hooks, NB_TEST_HOOKS);

static nb_tensor *leaf(int n, const float *v, const char *name) {
    return nb_set_name(nb_set_requires_grad(nb_from_array(1, (int64_t[]){n}, v), true), name);
}

/* What the hooks saw: the order they fired in (one letter each), the
 * first two values of each one's .grad at that moment, and whether the
 * leaf named in probe had a .grad yet. */
typedef struct seen {
    char order[16];
    float values[16][2];
    int fired, freed;
    nb_tensor *probe;
    bool probe_had_grad[16];
} seen;

typedef struct arg {
    seen *s;
    char tag;
} arg;

static void record(nb_tensor *t, void *user) {
    arg *a = user;
    seen *s = a->s;
    if (s->fired >= 15) return;
    const nb_tensor *g = nb_grad_of(t);
    s->order[s->fired] = a->tag;
    s->values[s->fired][0] = g ? nb_data(g)[0] : -1000;
    s->values[s->fired][1] = g && nb_numel(g) > 1 ? nb_data(g)[1] : -1000;
    s->probe_had_grad[s->fired] = s->probe && nb_grad_of(s->probe);
    s->fired++;
}

static void count_free(void *user) { ((arg *)user)->s->freed++; }

/* a = [1, 2], b = [3, 4], c = [5, 6]; y = sum(a*b*c + b):
 *   dy/dc = a*b = [3, 8], dy/db = a*c + 1 = [6, 13], dy/da = b*c = [15, 24].
 * Backward reaches y, the add, the outer mul, then c, the inner mul, b, a:
 * b's gradient, from two paths (the add and the inner mul), is final only
 * after the inner mul. */
typedef struct abc {
    nb_tensor *a, *b, *c, *y;
} abc;

static abc make_abc(void) {
    abc g;
    g.a = leaf(2, (float[]){1, 2}, "a");
    g.b = leaf(2, (float[]){3, 4}, "b");
    g.c = leaf(2, (float[]){5, 6}, "c");
    g.y = nb_sum(nb_add(nb_mul(nb_mul(g.a, g.b), g.c), g.b), NB_ALL, false);
    return g;
}

Test(post_hooks, fire_once_per_leaf_after_accumulation_in_backward_order) {
    abc g = make_abc();
    seen s = {.probe = g.a};
    arg on_a = {&s, 'a'}, on_b = {&s, 'b'}, on_c = {&s, 'c'};
    cr_assert_gt(nb_register_post_accumulate_grad_hook(g.a, record, &on_a), 0, "%s", nb_error());
    cr_assert_gt(nb_register_post_accumulate_grad_hook(g.b, record, &on_b), 0, "%s", nb_error());
    cr_assert_gt(nb_register_post_accumulate_grad_hook(g.c, record, &on_c), 0, "%s", nb_error());
    cr_assert_eq(nb_backward_ex(g.y, NULL, &(nb_backward_opts){.retain_graph = true}), 0, "%s", nb_error());
    cr_assert_str_eq(s.order, "cba");
    cr_assert_float_eq(s.values[0][0], 3, 1e-6);
    cr_assert_float_eq(s.values[0][1], 8, 1e-6);
    cr_assert_float_eq(s.values[1][0], 6, 1e-6); /* both paths summed */
    cr_assert_float_eq(s.values[1][1], 13, 1e-6);
    cr_assert_float_eq(s.values[2][0], 15, 1e-6);
    cr_assert_float_eq(s.values[2][1], 24, 1e-6);
    /* c's and b's hooks ran before backward reached a */
    cr_assert(!s.probe_had_grad[0] && !s.probe_had_grad[1] && s.probe_had_grad[2]);

    /* the same graph again: .grad holds the sum of both backwards when
     * each hook fires */
    memset(&s, 0, sizeof s);
    cr_assert_eq(nb_backward(g.y), 0, "%s", nb_error());
    cr_assert_str_eq(s.order, "cba");
    cr_assert_float_eq(s.values[0][1], 16, 1e-6);
    cr_assert_float_eq(s.values[1][1], 26, 1e-6);
    cr_assert_float_eq(s.values[2][1], 48, 1e-6);
    EXPECT_VALUES(nb_grad_of(g.b), 1e-6, 12, 26);
}

Test(post_hooks, only_leaves_reached_fire_and_nb_grad_calls_none) {
    abc g = make_abc();
    nb_tensor *unused = leaf(1, (float[]){7}, "unused");
    seen s = {0};
    arg on_a = {&s, 'a'}, on_u = {&s, 'u'};
    nb_register_post_accumulate_grad_hook(g.a, record, &on_a);
    nb_register_post_accumulate_grad_hook(unused, record, &on_u);
    /* nb_grad writes no .grad, so there is no accumulated gradient to see */
    nb_tensor *ga;
    cr_assert_eq(nb_grad(1, &g.y, NULL, 1, &g.a, &ga, &(nb_grad_opts){.retain_graph = true}), 0, "%s",
                 nb_error());
    EXPECT_VALUES(ga, 1e-6, 15, 24);
    cr_assert_eq(s.fired, 0);
    cr_assert_null(nb_grad_of(g.a));
    /* a leaf no gradient reaches fires nothing */
    cr_assert_eq(nb_backward(g.y), 0, "%s", nb_error());
    cr_assert_str_eq(s.order, "a");
}

static nb_tensor *twice(nb_tensor *grad, void *user) {
    (void)user;
    return nb_mul_scalar(grad, 2);
}

Test(post_hooks, after_gradient_hooks_and_removed_by_handle) {
    /* y = sum(3 * x): dy/dx = 3, doubled by a gradient hook on x: .grad is
     * 6 when the post hook (registered first) fires. */
    nb_tensor *x = leaf(2, (float[]){1, 2}, "x");
    nb_tensor *y = nb_sum(nb_mul_scalar(x, 3), NB_ALL, false);
    seen s = {0};
    arg on_x = {&s, 'x'}, on_x2 = {&s, 'X'};
    int p1 = nb_register_post_accumulate_grad_hook(x, record, &on_x);
    int p2 = nb_register_post_accumulate_grad_hook_ex(x, record, &on_x2, count_free);
    cr_assert_gt(p2, p1);
    cr_assert_gt(nb_register_hook(x, twice, NULL), 0);
    cr_assert_eq(nb_backward_ex(y, NULL, &(nb_backward_opts){.retain_graph = true}), 0, "%s", nb_error());
    cr_assert_str_eq(s.order, "xX");
    cr_assert_float_eq(s.values[0][0], 6, 1e-6);
    cr_assert_float_eq(s.values[1][1], 6, 1e-6);
    /* removed: it stops, and its user data is freed then */
    cr_assert_eq(nb_remove_hook(x, p2), 0);
    cr_assert_eq(s.freed, 1);
    cr_assert_eq(nb_remove_hook(x, p2), -1);
    EXPECT_ERROR("nb_remove_hook", "no hook");
    cr_assert_eq(nb_backward(y), 0, "%s", nb_error());
    cr_assert_str_eq(s.order, "xXx");
    cr_assert_float_eq(s.values[2][0], 12, 1e-6);
    cr_assert_eq(nb_remove_hook(x, p1), 0);
}

Test(post_hooks, user_data_freed_with_the_tensor) {
    seen s = {0};
    arg a = {&s, 'a'};
    nb_scope_begin();
    nb_tensor *x = leaf(1, (float[]){1}, "x");
    cr_assert_gt(nb_register_post_accumulate_grad_hook_ex(x, record, &a, count_free), 0);
    nb_scope_end();
    cr_assert_eq(s.freed, 1);
}

static void failing(nb_tensor *t, void *user) {
    (void)user;
    nb_set_error("failing hook: cannot take a gradient of %lld elements", (long long)nb_numel(t));
}

Test(post_hooks, a_hook_that_sets_an_error_fails_backward) {
    nb_tensor *x = leaf(2, (float[]){1, 2}, "x");
    nb_register_post_accumulate_grad_hook(x, failing, NULL);
    cr_assert_eq(nb_backward(nb_sum(nb_mul(x, x), NB_ALL, false)), -1);
    EXPECT_ERROR("failing hook", "2 elements");
    /* the .grad was written before the hook ran (dy/dx = 2x) */
    EXPECT_VALUES(nb_grad_of(x), 1e-6, 2, 4);
}

Test(post_hooks, bad_registrations_refused_and_user_data_freed) {
    seen s = {0};
    arg a = {&s, 'a'};
    nb_tensor *x = leaf(2, (float[]){1, 2}, "x");
    nb_tensor *sq = nb_mul(x, x);
    cr_assert_eq(nb_register_post_accumulate_grad_hook_ex(sq, record, &a, count_free), -1);
    EXPECT_ERROR("nb_register_post_accumulate_grad_hook", "not a leaf");
    nb_tensor *plain = nb_from_array(1, (int64_t[]){1}, (float[]){1});
    cr_assert_eq(nb_register_post_accumulate_grad_hook_ex(plain, record, &a, count_free), -1);
    EXPECT_ERROR("nb_register_post_accumulate_grad_hook", "does not require grad");
    cr_assert_eq(nb_register_post_accumulate_grad_hook(x, NULL, NULL), -1);
    EXPECT_ERROR("nb_register_post_accumulate_grad_hook", "the hook is NULL");
    cr_assert_eq(s.freed, 2);
    /* NULL in, -1 out, no second message */
    nb_clear_error();
    cr_assert_eq(nb_register_post_accumulate_grad_hook_ex(NULL, record, &a, count_free), -1);
    cr_assert_null(nb_error());
    cr_assert_eq(s.freed, 3);
    /* out of memory */
    nb_test_alloc fail = {.fail_at = 1};
    nb_set_alloc_hook(nb_test_alloc_hook, &fail);
    int h = nb_register_post_accumulate_grad_hook_ex(x, record, &a, count_free);
    nb_set_alloc_hook(NULL, NULL);
    cr_assert_eq(h, -1);
    EXPECT_ERROR("nb_register_post_accumulate_grad_hook: out of memory");
    cr_assert_eq(s.freed, 4);
    cr_assert_eq(nb_backward(nb_sum(sq, NB_ALL, false)), 0);
    cr_assert_eq(s.fired, 0);
}
