/* test_schedule.c — learning-rate schedules and gradient clipping, the two
 * things that act around an optimizer step.
 *
 * Schedules: the lr sequence over several epochs, worked out by hand from
 * each closed form with base lr 0.1, that the optimizer really steps with
 * it, and every bad argument. Clipping: global norms and clipped gradients
 * by hand (3-4-12-13 right triangles), skipped NULL gradients, a norm whose
 * squares overflow float, and bad arguments.
 */
#include <string.h>

#include "nb_optim.h"
#include "test_util.h"

TestSuite(schedule, NB_TEST_HOOKS);
TestSuite(clip, NB_TEST_HOOKS);

/* An SGD optimizer with lr 0.1 over p = [1, -2]. */
static nb_optimizer *sgd_on(nb_tensor **p) {
    *p = nb_set_requires_grad(nb_from_array(NB_SHAPE(2), (const float[]){1.0f, -2.0f}), true);
    nb_optimizer *o = nb_sgd(1, p, &(nb_sgd_opts){.lr = 0.1f});
    cr_assert_not_null(o, "%s", nb_error() ? nb_error() : "?");
    return o;
}

/* Checks the lr set at epochs 0, 1, ..., n-1 (creation, then one
 * nb_lr_schedule_step each) against want, in the schedule and in the
 * optimizer. Frees s. */
static void expect_lrs(nb_lr_schedule *s, nb_optimizer *o, int n, const float *want) {
    cr_assert_not_null(s, "%s", nb_error() ? nb_error() : "?");
    for (int t = 0; t < n; t++) {
        if (t > 0) nb_lr_schedule_step(s);
        cr_expect_eq(nb_lr_schedule_epoch(s), t);
        cr_expect(fabs((double)nb_lr_schedule_lr(s) - (double)want[t]) <= 1e-7,
                  "epoch %d: lr %.9g, expected %.9g", t, (double)nb_lr_schedule_lr(s),
                  (double)want[t]);
        cr_expect_eq(nb_optimizer_lr(o), nb_lr_schedule_lr(s), "epoch %d: optimizer lr", t);
    }
    nb_lr_schedule_free(s);
}

Test(schedule, step_lr) {
    /* 0.1 * 0.5^floor(t/2): 0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.0125 */
    nb_tensor *p;
    nb_optimizer *o = sgd_on(&p);
    expect_lrs(nb_step_lr(o, 2, 0.5f), o, 7,
               (const float[]){0.1f, 0.1f, 0.05f, 0.05f, 0.025f, 0.025f, 0.0125f});
    nb_optimizer_free(o);
}

Test(schedule, exponential_lr) {
    /* 0.1 * 0.9^t: 0.1, 0.09, 0.081, 0.0729, 0.06561 */
    nb_tensor *p;
    nb_optimizer *o = sgd_on(&p);
    expect_lrs(nb_exponential_lr(o, 0.9f), o, 5,
               (const float[]){0.1f, 0.09f, 0.081f, 0.0729f, 0.06561f});
    nb_optimizer_free(o);
}

Test(schedule, cosine_lr) {
    /* t_max 4, eta_min 0.01: 0.01 + 0.09 (1 + cos(pi t/4)) / 2
     * t=0: 0.01 + 0.09                       = 0.1
     * t=1: 0.01 + 0.09 (1 + 0.7071068)/2     = 0.08681981
     * t=2: 0.01 + 0.09 / 2                   = 0.055
     * t=3: 0.01 + 0.09 (1 - 0.7071068)/2     = 0.02318019
     * t=4: 0.01 + 0                          = 0.01
     * then the cosine goes back up: t=5 as t=3, t=6 as t=2, t=8 = 0.1 */
    nb_tensor *p;
    nb_optimizer *o = sgd_on(&p);
    expect_lrs(nb_cosine_lr(o, 4, 0.01f), o, 9,
               (const float[]){0.1f, 0.08681981f, 0.055f, 0.02318019f, 0.01f, 0.02318019f,
                               0.055f, 0.08681981f, 0.1f});
    nb_optimizer_free(o);
}

Test(schedule, warmup_lr) {
    /* warmup 4, start 0.25: 0.1 (0.25 + 0.75 min(t,4)/4)
     * = 0.025, 0.04375, 0.0625, 0.08125, 0.1, then 0.1 */
    nb_tensor *p;
    nb_optimizer *o = sgd_on(&p);
    expect_lrs(nb_warmup_lr(o, 4, 0.25f), o, 7,
               (const float[]){0.025f, 0.04375f, 0.0625f, 0.08125f, 0.1f, 0.1f, 0.1f});
    nb_optimizer_free(o);

    /* start_factor 0 starts from lr 0: 0, 0.05, 0.1 */
    o = sgd_on(&p);
    expect_lrs(nb_warmup_lr(o, 2, 0.0f), o, 3, (const float[]){0.0f, 0.05f, 0.1f});
    nb_optimizer_free(o);
}

Test(schedule, drives_the_optimizer) {
    /* Warmup over 1 step from 0.5: lr 0.05 then 0.1. SGD on g = 2p:
     * step 1: p <- p - 0.05*2p = 0.9p        = [0.9, -1.8]
     * step 2: p <- p - 0.1*2p  = 0.8 * 0.9p  = [0.72, -1.44] */
    nb_tensor *p;
    nb_optimizer *o = sgd_on(&p);
    nb_lr_schedule *s = nb_warmup_lr(o, 1, 0.5f);
    cr_assert_not_null(s);
    for (int k = 0; k < 2; k++) {
        nb_optimizer_zero_grad(o);
        nb_scope_begin();
        nb_tensor *y = nb_square(p);
        cr_assert_eq(nb_backward_ex(y, nb_ones_like(y), NULL), 0);
        nb_scope_end();
        cr_assert_eq(nb_optimizer_step(o), 0);
        nb_lr_schedule_step(s);
    }
    EXPECT_VALUES(p, 1e-6, 0.72f, -1.44f);

    /* An lr set by hand lasts until the schedule's next step. */
    nb_optimizer_set_lr(o, 0.3f);
    cr_expect_eq(nb_optimizer_lr(o), 0.3f);
    nb_lr_schedule_step(s);
    cr_expect_float_eq(nb_optimizer_lr(o), 0.1f, 1e-9);
    nb_lr_schedule_free(s);
    nb_optimizer_free(o);
}

Test(schedule, base_is_the_lr_at_creation) {
    /* Adam's default lr 1e-3, halved every epoch: 1e-3, 5e-4, 2.5e-4 */
    nb_tensor *p = nb_set_requires_grad(nb_zeros(NB_SHAPE(1)), true);
    nb_optimizer *o = nb_adam(1, &p, NULL);
    expect_lrs(nb_exponential_lr(o, 0.5f), o, 3, (const float[]){1e-3f, 5e-4f, 2.5e-4f});
    nb_optimizer_free(o);
}

Test(schedule, bad_arguments) {
    nb_tensor *p;
    nb_optimizer *o = sgd_on(&p);
    cr_expect_null(nb_step_lr(o, 0, 0.5f));
    EXPECT_ERROR("nb_step_lr", "step_size", "0");
    cr_expect_null(nb_step_lr(o, 2, -0.5f));
    EXPECT_ERROR("nb_step_lr", "gamma", "-0.5");
    cr_expect_null(nb_exponential_lr(o, NAN));
    EXPECT_ERROR("nb_exponential_lr", "gamma", "nan");
    cr_expect_null(nb_cosine_lr(o, -3, 0.0f));
    EXPECT_ERROR("nb_cosine_lr", "t_max", "-3");
    cr_expect_null(nb_cosine_lr(o, 10, -0.01f));
    EXPECT_ERROR("nb_cosine_lr", "eta_min", "-0.01");
    cr_expect_null(nb_warmup_lr(o, 0, 0.5f));
    EXPECT_ERROR("nb_warmup_lr", "warmup_steps", "0");
    cr_expect_null(nb_warmup_lr(o, 5, 1.5f));
    EXPECT_ERROR("nb_warmup_lr", "start_factor", "[0, 1]", "1.5");
    cr_expect_eq(nb_optimizer_lr(o), 0.1f, "a refused schedule leaves the lr alone");
    nb_optimizer_free(o);
}

Test(schedule, null_passes_through) {
    nb_clear_error();
    cr_expect_null(nb_step_lr(NULL, 2, 0.5f));
    cr_expect_null(nb_exponential_lr(NULL, 0.5f));
    cr_expect_null(nb_cosine_lr(NULL, 2, 0.0f));
    cr_expect_null(nb_warmup_lr(NULL, 2, 0.5f));
    nb_lr_schedule_step(NULL);
    cr_expect(isnan(nb_lr_schedule_lr(NULL)));
    cr_expect_eq(nb_lr_schedule_epoch(NULL), -1);
    nb_lr_schedule_free(NULL);
    cr_expect_null(nb_error(), "a NULL optimizer is reported once, by its constructor");
}

/* ---- clipping ---------------------------------------------------------------------- */

/* A leaf of n values whose .grad is set to g by a real backward. */
static nb_tensor *with_grad(int64_t n, const float *g) {
    nb_tensor *p = nb_set_requires_grad(nb_zeros(1, (const int64_t[]){n}), true);
    nb_scope_begin();
    nb_tensor *y = nb_mul_scalar(p, 1.0f);
    int rc = nb_backward_ex(y, nb_from_array(1, (const int64_t[]){n}, g), NULL);
    nb_scope_end();
    cr_assert_eq(rc, 0, "%s", nb_error() ? nb_error() : "?");
    return p;
}

Test(clip, grad_norm) {
    /* grads [3, 4] and [12]: norm sqrt(9 + 16 + 144) = 13. max_norm 6.5
     * scales by 6.5/(13 + 1e-6) = 0.49999996: [1.5, 2] and [6]. */
    nb_tensor *a = with_grad(2, (const float[]){3.0f, 4.0f});
    nb_tensor *b = with_grad(1, (const float[]){12.0f});
    nb_tensor *ps[] = {a, b};
    cr_expect_float_eq(nb_clip_grad_norm(2, ps, 6.5f), 13.0f, 1e-6);
    EXPECT_VALUES(nb_grad_of(a), 1e-6, 1.5f, 2.0f);
    EXPECT_VALUES(nb_grad_of(b), 1e-6, 6.0f);
    /* Now the norm is 6.5 (less 5e-7), under a max of 20: nothing moves. */
    cr_expect_float_eq(nb_clip_grad_norm(2, ps, 20.0f), 6.5f, 1e-5);
    EXPECT_VALUES(nb_grad_of(a), 1e-6, 1.5f, 2.0f);
    EXPECT_VALUES(nb_grad_of(b), 1e-6, 6.0f);
    /* max_norm 0 zeroes them. */
    cr_expect_float_eq(nb_clip_grad_norm(2, ps, 0.0f), 6.5f, 1e-5);
    EXPECT_VALUES(nb_grad_of(a), 0, 0.0f, 0.0f);
}

Test(clip, grad_norm_skips_missing_gradients) {
    /* [6, 8] has norm 10; the parameter without a .grad and the NULL entry
     * add nothing. max_norm 5 halves it: [3, 4]. */
    nb_tensor *a = with_grad(2, (const float[]){6.0f, 8.0f});
    nb_tensor *bare = nb_set_requires_grad(nb_ones(NB_SHAPE(3)), true);
    nb_tensor *ps[] = {bare, a, NULL};
    cr_expect_float_eq(nb_clip_grad_norm(3, ps, 5.0f), 10.0f, 1e-6);
    EXPECT_VALUES(nb_grad_of(a), 1e-6, 3.0f, 4.0f);
    cr_expect_null(nb_grad_of(bare));
    /* No gradient at all: norm 0. */
    cr_expect_eq(nb_clip_grad_norm(1, &bare, 1.0f), 0.0f);
    cr_expect_eq(nb_clip_grad_norm(0, NULL, 1.0f), 0.0f);
}

Test(clip, grad_norm_sums_in_double) {
    /* 1e20^2 overflows float but not double: norm sqrt(2) * 1e20, and the
     * clipped gradient is [1/sqrt(2), 1/sqrt(2)] = 0.70710678. */
    nb_tensor *a = with_grad(2, (const float[]){1e20f, 1e20f});
    float norm = nb_clip_grad_norm(1, &a, 1.0f);
    cr_expect(fabs((double)norm / 1.41421356e20 - 1.0) < 1e-6, "norm %g", (double)norm);
    EXPECT_VALUES(nb_grad_of(a), 1e-6, 0.70710678f, 0.70710678f);
}

Test(clip, grad_value) {
    /* Clamp to [-1, 1]: [3, -4, 0.5] -> [1, -1, 0.5], [12] -> [1]. */
    nb_tensor *a = with_grad(3, (const float[]){3.0f, -4.0f, 0.5f});
    nb_tensor *b = with_grad(1, (const float[]){12.0f});
    nb_tensor *bare = nb_set_requires_grad(nb_ones(NB_SHAPE(2)), true);
    nb_tensor *ps[] = {a, bare, b, NULL};
    nb_clip_grad_value(4, ps, 1.0f);
    EXPECT_VALUES(nb_grad_of(a), 0, 1.0f, -1.0f, 0.5f);
    EXPECT_VALUES(nb_grad_of(b), 0, 1.0f);
    cr_expect_null(nb_grad_of(bare));
    /* clip 0 zeroes everything. */
    nb_clip_grad_value(1, &a, 0.0f);
    EXPECT_VALUES(nb_grad_of(a), 0, 0.0f, 0.0f, 0.0f);
}

Test(clip, bad_arguments) {
    nb_tensor *a = with_grad(2, (const float[]){3.0f, 4.0f});
    cr_expect(isnan(nb_clip_grad_norm(1, &a, -1.0f)));
    EXPECT_ERROR("nb_clip_grad_norm", "max_norm", "-1");
    cr_expect(isnan(nb_clip_grad_norm(1, &a, NAN)));
    EXPECT_ERROR("nb_clip_grad_norm", "max_norm", "nan");
    cr_expect(isnan(nb_clip_grad_norm(-1, &a, 1.0f)));
    EXPECT_ERROR("nb_clip_grad_norm", "-1");
    cr_expect(isnan(nb_clip_grad_norm(2, NULL, 1.0f)));
    EXPECT_ERROR("nb_clip_grad_norm", "NULL");
    nb_clear_error();
    nb_clip_grad_value(1, &a, -0.5f);
    EXPECT_ERROR("nb_clip_grad_value", "clip", "-0.5");
    nb_clip_grad_value(2, NULL, 1.0f);
    EXPECT_ERROR("nb_clip_grad_value", "NULL");
    EXPECT_VALUES(nb_grad_of(a), 0, 3.0f, 4.0f); /* nothing changed */
}
