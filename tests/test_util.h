/* test_util.h — what every nabla test file shares: each test runs inside a
 * scope and must leave the live tensor count where it found it, values are
 * compared with a tolerance, and gradients are checked by finite
 * differences (nb_gradcheck, nb_gradgradcheck) with the report in the
 * failure message.
 */
#ifndef NB_TEST_UTIL_H
#define NB_TEST_UTIL_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "nabla.h"

static int64_t nb_test_live_at_start;

static inline void nb_test_setup(void) {
    nb_clear_error();
    nb_manual_seed(42);
    nb_test_live_at_start = nb_live_tensors();
    nb_scope_begin();
}

/* Criterion reports an assertion that fails in .fini but still counts the
 * test as passed, so a leak ends the test's process instead: Criterion then
 * reports the test as crashed, and the run fails. */
static inline void nb_test_teardown(void) {
    nb_scope_end();
    if (nb_live_tensors() != nb_test_live_at_start) {
        cr_log_error("tensors leaked: %lld alive after the test, %lld before",
                     (long long)nb_live_tensors(), (long long)nb_test_live_at_start);
        fflush(NULL);
        abort();
    }
}

/* TestSuite(name, NB_TEST_HOOKS) gives every test of the suite a scope and
 * the leak check. */
#define NB_TEST_HOOKS .init = nb_test_setup, .fini = nb_test_teardown

/* Asserts that t holds exactly the listed values (within tol). */
#define EXPECT_VALUES(t, tol, ...)                                                       \
    nb_test_expect_values((t), (tol), (const float[]){__VA_ARGS__},                      \
                          (int64_t)(sizeof((const float[]){__VA_ARGS__}) / sizeof(float)))

static inline void nb_test_expect_values(const nb_tensor *t, double tol, const float *want,
                                         int64_t n) {
    cr_assert_not_null(t, "tensor is NULL: %s", nb_error() ? nb_error() : "(no message)");
    cr_assert_eq(nb_numel(t), n, "tensor has %lld elements, expected %lld",
                 (long long)nb_numel(t), (long long)n);
    const float *d = nb_data(t);
    for (int64_t i = 0; i < n; i++) {
        bool same = (isnan(want[i]) && isnan(d[i])) || fabs((double)d[i] - (double)want[i]) <= tol ||
                    (isinf(want[i]) && d[i] == want[i]);
        cr_assert(same, "element %lld is %.8g, expected %.8g", (long long)i, (double)d[i],
                  (double)want[i]);
    }
}

/* Asserts the shape of t. */
#define EXPECT_SHAPE(t, ...)                                                             \
    nb_test_expect_shape((t), NB_SHAPE(__VA_ARGS__))

static inline void nb_test_expect_shape(const nb_tensor *t, int ndim, const int64_t *shape) {
    cr_assert_not_null(t, "tensor is NULL: %s", nb_error() ? nb_error() : "(no message)");
    char got[128], want[128];
    nb_shape_str(nb_ndim(t), nb_shape(t), got, sizeof got);
    nb_shape_str(ndim, shape, want, sizeof want);
    cr_assert_str_eq(got, want, "shape %s, expected %s", got, want);
}

/* A leaf of the given shape with uniform values in [lo, hi), requiring grad. */
static inline nb_tensor *nb_test_leaf(float lo, float hi, int ndim, const int64_t *shape) {
    return nb_set_requires_grad(nb_uniform(NULL, lo, hi, ndim, shape), true);
}

/* Gradcheck (and, when second is true, gradgradcheck) of f at inputs. */
static inline void nb_test_gradcheck(nb_gradcheck_fn f, void *ctx, int n, nb_tensor *const *in,
                                     bool second) {
    nb_gradcheck_opts quiet = {.quiet = true};
    nb_gradcheck_result r;
    cr_assert(nb_gradcheck(f, ctx, n, in, &quiet, &r), "%s", r.message);
    if (second) cr_assert(nb_gradgradcheck(f, ctx, n, in, &quiet, &r), "%s", r.message);
}

/* Failing allocations on purpose: nb_set_alloc_hook(nb_test_alloc_hook, &a)
 * with nb_test_alloc a = {.fail_at = n} refuses the n-th allocation made from
 * then on (counting from 1), and with .persistent every one after it too;
 * a.calls counts them all and a.fired says whether one was refused. With
 * fail_at 0 the hook refuses nothing and only counts. */
typedef struct nb_test_alloc {
    int64_t calls, fail_at;
    bool persistent, fired;
} nb_test_alloc;

static inline bool nb_test_alloc_hook(size_t size, void *user) {
    (void)size;
    nb_test_alloc *a = user;
    a->calls++;
    bool refuse = a->fail_at > 0 && (a->calls == a->fail_at || (a->persistent && a->calls > a->fail_at));
    a->fired = a->fired || refuse;
    return !refuse;
}

/* Asserts that the last error message contains every listed fragment. */
#define EXPECT_ERROR(...)                                                                \
    do {                                                                                 \
        const char *frags_[] = {__VA_ARGS__};                                            \
        const char *msg_ = nb_error();                                                   \
        cr_assert_not_null(msg_, "no error message was set");                            \
        for (size_t f_ = 0; f_ < sizeof frags_ / sizeof *frags_; f_++)                   \
            cr_assert(strstr(msg_, frags_[f_]) != NULL, "message \"%s\" lacks \"%s\"", msg_, \
                      frags_[f_]);                                                       \
    } while (0)

/* y = 2x as an op of a test's own, with a backward and no forward-mode
 * rule: what forward mode must refuse by name ("twice"). */
static inline void nb_test_twice_backward(nb_tensor *node, nb_tensor *g, nb_tensor **gx) {
    (void)node;
    gx[0] = nb_mul_scalar(g, 2.0f);
}

static inline nb_tensor *nb_test_twice(nb_tensor *x) {
    static const nb_op twice_op = {"twice", nb_test_twice_backward};
    if (!x) return NULL;
    nb_tensor *y = nb_empty_like(x);
    if (!y) return NULL;
    for (int64_t i = 0; i < nb_numel(x); i++) nb_data_mut(y)[i] = 2 * nb_data(x)[i];
    return nb_record(y, &twice_op, 1, &x);
}

/* The allocation walk: run(ctx) is called with the n-th allocation refused
 * (and, when persistent, every one after it), for n = 1, 2, ... until a
 * call in which none was refused, which must succeed. run returns 0, or -1
 * with a message set, and runs inside a scope of its own, from emptied
 * caches (so that it allocates afresh). No call may leak a tensor, and a
 * call that fails must say "out of memory". */
static inline void nb_test_oom_walk(int (*run)(void *ctx), void *ctx, bool persistent) {
    for (int64_t n = 1; n < 100000; n++) {
        nb_empty_cache();
        int64_t live = nb_live_tensors();
        nb_clear_error();
        nb_test_alloc a = {.fail_at = n, .persistent = persistent};
        nb_set_alloc_hook(nb_test_alloc_hook, &a);
        nb_scope_begin();
        int rc = run(ctx);
        nb_scope_end();
        nb_set_alloc_hook(NULL, NULL);
        cr_assert_eq(nb_live_tensors(), live, "allocation %lld failing leaks %lld tensors",
                     (long long)n, (long long)(nb_live_tensors() - live));
        if (!a.fired) {
            cr_assert_eq(rc, 0, "failed with no allocation refused: %s",
                         nb_error() ? nb_error() : "no message");
            return;
        }
        if (rc != 0) EXPECT_ERROR("out of memory");
    }
    cr_assert_fail("the allocation walk does not end");
}

#endif
