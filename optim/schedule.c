/* schedule.c — learning-rate schedules: step decay, exponential decay,
 * cosine annealing and linear warmup, as PyTorch's StepLR, ExponentialLR,
 * CosineAnnealingLR and LinearLR.
 *
 * Each is a closed form of (base lr, epoch t), evaluated in double, so a
 * schedule needs no history and t can be advanced any number of times
 * without drift. The base is the optimizer's lr when the schedule is made;
 * the schedule then owns the optimizer's lr and rewrites it at every step.
 */
#include "optim_internal.h"

#include <stdlib.h>

typedef enum { STEP, EXPONENTIAL, COSINE, WARMUP } schedule_kind;

struct nb_lr_schedule {
    schedule_kind kind;
    nb_optimizer *opt; /* borrowed */
    double base;
    int64_t t;
    int n;         /* step_size, t_max or warmup_steps */
    double factor; /* gamma, eta_min or start_factor */
    float lr;      /* the lr last set */
};

static double schedule_lr(const nb_lr_schedule *s) {
    double t = (double)s->t;
    switch (s->kind) {
    case STEP:
        return s->base * pow(s->factor, (double)(s->t / s->n));
    case EXPONENTIAL:
        return s->base * pow(s->factor, t);
    case COSINE: {
        const double pi = 3.14159265358979323846;
        return s->factor + (s->base - s->factor) * (1.0 + cos(pi * t / s->n)) / 2.0;
    }
    case WARMUP: {
        double done = s->t < s->n ? t / s->n : 1.0;
        return s->base * (s->factor + (1.0 - s->factor) * done);
    }
    }
    return s->base;
}

static void apply(nb_lr_schedule *s) {
    s->lr = (float)schedule_lr(s);
    s->opt->lr = s->lr;
}

static nb_lr_schedule *make(nb_optimizer *o, schedule_kind kind, int n, double factor) {
    nb_lr_schedule *s = nb_malloc(sizeof *s);
    if (!s) {
        nb_set_error("nb_lr_schedule: out of memory");
        return NULL;
    }
    *s = (nb_lr_schedule){.kind = kind, .opt = o, .base = o->lr, .t = 0, .n = n,
                          .factor = factor};
    apply(s);
    return s;
}

static bool check_count(const char *who, const char *what, int n) {
    if (n >= 1) return true;
    nb_set_error("%s: %s must be >= 1, got %d", who, what, n);
    return false;
}

nb_lr_schedule *nb_step_lr(nb_optimizer *o, int step_size, float gamma) {
    const char *who = "nb_step_lr";
    if (!o) return NULL;
    if (!check_count(who, "step_size", step_size) ||
        !nb__optim_check(who, "gamma", gamma, 0.0f, INFINITY, true))
        return NULL;
    return make(o, STEP, step_size, gamma);
}

nb_lr_schedule *nb_exponential_lr(nb_optimizer *o, float gamma) {
    if (!o) return NULL;
    if (!nb__optim_check("nb_exponential_lr", "gamma", gamma, 0.0f, INFINITY, true)) return NULL;
    return make(o, EXPONENTIAL, 1, gamma);
}

nb_lr_schedule *nb_cosine_lr(nb_optimizer *o, int t_max, float eta_min) {
    const char *who = "nb_cosine_lr";
    if (!o) return NULL;
    if (!check_count(who, "t_max", t_max) ||
        !nb__optim_check(who, "eta_min", eta_min, 0.0f, INFINITY, true))
        return NULL;
    return make(o, COSINE, t_max, eta_min);
}

nb_lr_schedule *nb_warmup_lr(nb_optimizer *o, int warmup_steps, float start_factor) {
    const char *who = "nb_warmup_lr";
    if (!o) return NULL;
    if (!check_count(who, "warmup_steps", warmup_steps) ||
        !nb__optim_check(who, "start_factor", start_factor, 0.0f, 1.0f, false))
        return NULL;
    return make(o, WARMUP, warmup_steps, start_factor);
}

void nb_lr_schedule_step(nb_lr_schedule *s) {
    if (!s) return;
    s->t++;
    apply(s);
}

float nb_lr_schedule_lr(const nb_lr_schedule *s) { return s ? s->lr : NAN; }

int64_t nb_lr_schedule_epoch(const nb_lr_schedule *s) { return s ? s->t : -1; }

void nb_lr_schedule_free(nb_lr_schedule *s) { nb_free(s); }

int nb_lr_schedule_set_epoch(nb_lr_schedule *s, int64_t t) {
    if (!s) return -1;
    if (t < 0) {
        nb_set_error("nb_lr_schedule_set_epoch: epoch must be >= 0, got %lld", (long long)t);
        return -1;
    }
    s->t = t;
    apply(s);
    return 0;
}
