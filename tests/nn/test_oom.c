/* test_oom.c — out of memory is a tested path, the way SQLite tests it.
 *
 * An allocation hook (nb_set_alloc_hook) makes the Nth heap allocation of a
 * piece of work fail, for N = 1, 2, ... until the work runs to the end
 * without reaching N. Each N is run twice: with only the Nth allocation
 * failing (a transient failure) and with every allocation from the Nth on
 * failing (memory stays exhausted). At every N the work must not crash, must
 * leave the live tensor count where it was (and valgrind, which CI runs over
 * this file, must report no leak), and must either succeed or fail with an
 * "out of memory" message from a nabla function; a failed training step
 * must leave the parameters as they were, or (when it failed after the
 * step, in validation) as one whole step left them, never half-way.
 *
 * The walks start from empty caches (nb_empty_cache), so that the first
 * allocations of tensors, storage and the engine's bookkeeping are failed
 * too, not only those a warm process still makes.
 *
 * The work: building and compiling the seed network; one training step
 * through nb_model_fit (with SGD, Adam, and RMSprop with metrics and a
 * validation split); one step of an explicit loop that differentiates a
 * gradient (create_graph) for a gradient penalty.
 */
#include <string.h>
#include <stdlib.h>

#include "test_util.h"

TestSuite(oom, NB_TEST_HOOKS);

/* The failing allocator is nb_test_alloc_hook (tests/test_util.h). */
static nb_test_alloc inject;

/* What one piece of work does; returns 0 on success, -1 on failure. */
typedef int (*work_fn)(void *ctx);
/* Checks the state after a failed run (parameters unchanged, say). */
typedef void (*after_fn)(void *ctx, int n);
/* Puts the state back before each run, so that every run starts alike,
 * and after it, so that what a successful run made is not counted. */
typedef void (*reset_fn)(void *ctx);

/* Runs work with the Nth allocation failing for every N, in both modes.
 * Returns how many allocations the complete run made. */
static int64_t walk(const char *what, reset_fn reset, work_fn work, after_fn after_failure,
                    void *ctx) {
    int64_t total = -1;
    for (int persistent = 0; persistent <= 1; persistent++) {
        for (int64_t n = 1;; n++) {
            cr_assert(n < 1000000, "%s: the walk does not end", what);
            if (reset) reset(ctx);
            nb_empty_cache();
            int64_t live = nb_live_tensors();
            nb_clear_error();
            inject = (nb_test_alloc){.fail_at = n, .persistent = persistent};
            nb_set_alloc_hook(nb_test_alloc_hook, &inject);
            int rc = work(ctx);
            nb_set_alloc_hook(NULL, NULL);
            if (rc != 0 && after_failure) after_failure(ctx, (int)n);
            if (reset) reset(ctx); /* a step that succeeded made gradients */
            cr_assert_eq(nb_live_tensors(), live,
                         "%s: allocation %lld failing%s leaks %lld tensors (%s)", what,
                         (long long)n, persistent ? " (and all after)" : "",
                         (long long)(nb_live_tensors() - live),
                         nb_error() ? nb_error() : "no message");
            if (!inject.fired) {
                cr_assert_eq(rc, 0, "%s failed with no allocation failing: %s", what,
                             nb_error() ? nb_error() : "no message");
                total = inject.calls;
                break;
            }
            if (rc != 0) {
                const char *msg = nb_error();
                cr_assert_not_null(msg, "%s: allocation %lld failing: no message", what,
                                   (long long)n);
                cr_assert(strstr(msg, "out of memory") && strncmp(msg, "nb_", 3) == 0,
                          "%s: allocation %lld failing: message \"%s\" does not say which nabla "
                          "function ran out of memory",
                          what, (long long)n, msg);
            }
        }
    }
    cr_assert_gt(total, 0, "%s made no allocation from empty caches", what);
    return total;
}

/* ---- the work ---------------------------------------------------------------------- */

/* The seed network: Dense(10, relu, input 10) -> Dense(1), sgd, mse. */
static nb_model *seed_model(const char *optimizer, const char *metrics) {
    nb_model *m = nb_model_sequential();
    if (!m) return NULL;
    if (nb_model_add(m, nb_dense(10, "relu", 10)) != 0 ||
        nb_model_add(m, nb_dense(1, "linear", 0)) != 0 ||
        nb_model_compile(m, optimizer, "mean_squared_error", metrics) != 0) {
        nb_model_free(m);
        return NULL;
    }
    return m;
}

static int build_model(void *ctx) {
    (void)ctx;
    nb_model *m = seed_model("adam", "mae");
    if (!m) return -1;
    nb_model_free(m);
    return 0;
}

typedef struct training {
    nb_model *model;
    bool validate; /* fit keeps 3 of the 13 rows for validation */
    nb_tensor *x, *y;
    int n;
    int64_t numel[4];
    float *before[4]; /* the parameters before the step */
    float *after[4];  /* and after one step that succeeded */
} training;

static void copy_parameters(training *t, float **into) {
    nb_tensor **p = nb_model_parameters(t->model, &t->n);
    cr_assert_eq(t->n, 4);
    for (int i = 0; i < t->n; i++) {
        t->numel[i] = nb_numel(p[i]);
        if (!into[i]) into[i] = malloc((size_t)t->numel[i] * sizeof(float));
        memcpy(into[i], nb_data(p[i]), (size_t)t->numel[i] * sizeof(float));
    }
}

static bool parameters_equal(training *t, float *const *want) {
    nb_tensor **p = nb_model_parameters(t->model, &t->n);
    for (int i = 0; i < t->n; i++)
        if (memcmp(want[i], nb_data(p[i]), (size_t)t->numel[i] * sizeof(float)) != 0) return false;
    return true;
}

/* A failed run either changed no parameter or made the whole step (fit can
 * fail in validation, after the epoch's steps): never half a step. */
static void no_half_step(void *ctx, int n) {
    training *t = ctx;
    cr_assert(parameters_equal(t, t->before) || parameters_equal(t, t->after),
              "allocation %d failing: the step failed half-way, parameters changed", n);
}

/* Puts the parameters back and drops their gradients. */
static void restore_parameters(void *ctx) {
    training *t = ctx;
    int count;
    nb_tensor **p = nb_model_parameters(t->model, &count);
    for (int i = 0; i < t->n; i++) {
        memcpy(nb_data_mut(p[i]), t->before[i], (size_t)t->numel[i] * sizeof(float));
        nb_clear_grad(p[i]);
    }
}

static void forget_parameters(training *t) {
    for (int i = 0; i < t->n; i++) {
        free(t->before[i]);
        free(t->after[i]);
    }
}

static int fit_one_step(void *ctx) {
    training *t = ctx;
    nb_fit_opts o = nb_fit_defaults();
    o.epochs = 1;
    o.batch_size = 10; /* the 10 training rows make one batch */
    o.validation_split = t->validate ? 0.2f : 0;
    o.shuffle = false; /* every run the same step, bit for bit */
    o.verbose = 0;
    nb_history *h = nb_model_fit(t->model, t->x, t->y, &o);
    if (!h) return -1;
    bool stopped = nb_history_stop_reason(h)[0] != '\0';
    nb_history_free(h);
    return stopped ? -1 : 0;
}

/* One explicit-loop step with a gradient penalty: loss + 0.1 * |dloss/dW1|^2,
 * whose gradient needs the backward of a backward. */
static int penalty_step(void *ctx) {
    training *t = ctx;
    nb_module *net = nb_model_module(t->model);
    int n;
    nb_tensor **p = nb_module_parameters(net, &n);
    if (!p) return -1;
    nb_optimizer *opt = nb_sgd(n, p, NULL);
    if (!opt) return -1;
    int rc = -1;
    nb_scope_begin();
    nb_tensor *loss = nb_mse_loss(nb_module_forward(net, t->x), t->y, NB_REDUCE_MEAN), *g;
    if (loss && nb_grad(1, &loss, NULL, 1, &p[0], &g, &(nb_grad_opts){.create_graph = true}) == 0) {
        nb_tensor *total = nb_add(loss, nb_mul_scalar(nb_sum(nb_square(g), NB_ALL, false), 0.1f));
        if (total && nb_backward(total) == 0) rc = nb_optimizer_step(opt);
    }
    nb_optimizer_zero_grad(opt);
    nb_scope_end();
    nb_optimizer_free(opt);
    return rc;
}

/* The seed problem and model, with the parameters before and after one
 * clean run of step. Only stateless optimizers (plain SGD) may be used
 * with a step that can fail after updating (validation): a stateful one
 * would make a different step each run. */
static void make_training(training *t, const char *optimizer, bool validate, work_fn step) {
    t->model = seed_model(optimizer, validate ? "mae,mse" : NULL);
    cr_assert_not_null(t->model, "%s", nb_error() ? nb_error() : "");
    t->validate = validate;
    int64_t rows = validate ? 13 : 10;
    t->x = nb_rand(NB_SHAPE(rows, 10));
    t->y = nb_add_scalar(nb_matmul(t->x, nb_rand(NB_SHAPE(10, 1))), 0.5f);
    copy_parameters(t, t->before);
    cr_assert_eq(step(t), 0, "%s", nb_error() ? nb_error() : "");
    copy_parameters(t, t->after);
    cr_assert(!parameters_equal(t, t->before), "the step changed no parameter");
    restore_parameters(t);
}

/* ---- the walks --------------------------------------------------------------------- */

Test(oom, building_and_compiling_a_model) {
    int64_t total = walk("building the seed model", NULL, build_model, NULL, NULL);
    cr_log_info("building the seed model: %lld allocations walked", (long long)total);
}

Test(oom, one_fit_step) {
    const struct {
        const char *optimizer;
        bool validate;
    } runs[] = {{"sgd", false}, {"adam", false}, {"rmsprop", false}, {"sgd", true}};
    for (int k = 0; k < 4; k++) {
        training t = {0};
        make_training(&t, runs[k].optimizer, runs[k].validate, fit_one_step);
        int64_t total = walk("one fit step", restore_parameters, fit_one_step, no_half_step, &t);
        cr_log_info("one fit step (%s%s): %lld allocations walked", runs[k].optimizer,
                    t.validate ? ", metrics and validation" : "", (long long)total);
        /* after the walk the model still trains */
        cr_assert_eq(fit_one_step(&t), 0, "%s", nb_error() ? nb_error() : "");
        forget_parameters(&t);
        nb_model_free(t.model);
    }
}

Test(oom, one_explicit_step_with_create_graph) {
    training t = {0};
    make_training(&t, "sgd", false, penalty_step);
    int64_t total = walk("a gradient-penalty step", restore_parameters, penalty_step, no_half_step, &t);
    cr_log_info("a gradient-penalty step: %lld allocations walked", (long long)total);
    cr_assert_eq(penalty_step(&t), 0, "%s", nb_error() ? nb_error() : "");
    forget_parameters(&t);
    nb_model_free(t.model);
}

Test(oom, the_hook_sees_every_allocation) {
    /* a hook that refuses everything: creating a tensor from empty caches
     * fails cleanly, and removing the hook makes it work again */
    nb_empty_cache();
    inject = (nb_test_alloc){.fail_at = 1, .persistent = true};
    nb_alloc_hook previous = nb_set_alloc_hook(nb_test_alloc_hook, &inject);
    cr_assert_null(previous);
    nb_tensor *t = nb_zeros(NB_SHAPE(1000));
    cr_assert_eq(nb_set_alloc_hook(NULL, NULL), nb_test_alloc_hook);
    cr_assert_null(t);
    EXPECT_ERROR("nb_zeros", "out of memory");
    cr_assert(inject.fired);
    t = nb_zeros(NB_SHAPE(1000));
    cr_assert_not_null(t, "%s", nb_error());
}
