/* loss.c — loss functions, written as compositions of other ops except
 * three ops of their own: BCE on probabilities (see below), so that its
 * gradient stays finite at p = 0 and 1, and the reduced MSE and the reduced
 * cross-entropy, for speed (as compositions they were most of a small
 * regression's training step and a visible share of a classifier's). For
 * the others the gradient of the composition is the engine's job, and each
 * piece is already gradchecked. What these functions
 * add is the care a loss needs: the stable form (log-sum-exp inside
 * cross-entropy, softplus inside BCE with logits), PyTorch's clamp of log at
 * -100 in BCE on probabilities, and strict checks of shapes and labels,
 * because a silently broadcast target ([N,1] against [N] gives [N,N]) is
 * the classic way a regression quietly trains on the wrong thing.
 *
 *   mse      mean((p - t)^2)  (one op when reduced: see below)
 *   l1       mean(|p - t|)
 *   huber    mean(|d| <= delta ? d^2/2 : delta (|d| - delta/2)),  d = p - t
 *   bce      -mean(t log p + (1 - t) log(1 - p)), logs clamped at -100
 *   bce_with_logits  mean(softplus(x) - x t)
 *   cross_entropy    nll(log_softmax(logits, -1), labels)  (one op when reduced)
 *   nll      -mean(log_probs[i, labels[i]])
 *
 * A composite checks all its inputs itself before calling any op, so that a
 * bad input gives one message, naming the function the user called.
 */
#include "ops_internal.h"
#include "parallel.h"
#include "vmath_internal.h"

static nb_tensor *reduce(nb_tensor *t, nb_reduction r) {
    switch (r) {
    case NB_REDUCE_MEAN: return nb_mean(t, NB_ALL, false);
    case NB_REDUCE_SUM: return nb_sum(t, NB_ALL, false);
    case NB_REDUCE_NONE: return t;
    }
    return NULL;
}

static bool valid_reduction(const char *who, nb_reduction r) {
    if (r == NB_REDUCE_MEAN || r == NB_REDUCE_SUM || r == NB_REDUCE_NONE) return true;
    nb_set_error("%s: unknown reduction %d", who, (int)r);
    return false;
}

static bool same_shape(const char *who, nb_tensor *pred, nb_tensor *target, nb_reduction r) {
    if (!valid_reduction(who, r)) return false;
    if (nb_same_shape(pred, target)) return true;
    nb_set_error("%s: prediction %s and target %s differ in shape (reshape one of them: "
                 "losses do not broadcast)",
                 who, SHAPE(pred), SHAPE(target));
    return false;
}

/* ---- mse: one op when reduced ----------------------------------------------------------
 * pred, target (same shape, n elements) -> out (): c·sum((p - t)^2), with
 * c = 1/n for the mean and 1 for the sum. Written as sub, square and mean it
 * made three tensors forward and five more backward, most of a small
 * regression's loss; as one op it makes one each way. The bits are those of
 * the composition: d = p - t and d·d rounded to float, summed in double in
 * nb_sum's order (sum_squared_diff), divided by n in double, rounded once.
 * The gradient is one op too, mse_grad, computing what the composition's
 * backward did, in its order and roundings:
 *   p: (g·c)·((p - t)·2)   (c applied as the mean's backward applies it:
 *                          g times the float 1/n; not at all for the sum)
 *   t: -(that)
 * mse_grad's own gradient, for second derivatives, is written with ops:
 *   y = (g·c)·2(p - t):   p: u·g·2c,   t: -(u·g·2c),   g: 2c·sum(u·(p - t))
 * Without reduction the loss stays the composition square(sub(p, t)).
 * Attributes (both ops): 0 = 1 for the mean, 0 for the sum; 1 = n. */

/* sum((p - t)^2) over n contiguous elements, in double: each square rounded
 * to float first, then added as nb_sum adds a contiguous run
 * (NB_SUM_IN_ROW_ORDER). */
static double squared_diff(const float *p, const float *t, int64_t i) {
    float d = p[i] - t[i];
    return (double)(d * d);
}
static double sum_squared_diff(const float *p, const float *t, int64_t n) {
    double s;
#define SQUARED_DIFF_TERM(i) squared_diff(p, t, i)
    NB_SUM_IN_ROW_ORDER(&s, n, SQUARED_DIFF_TERM);
#undef SQUARED_DIFF_TERM
    return s;
}

/* 2c as a float, for the gradients of the gradient (not bit-matched). */
static float mse_twice_c(nb_tensor *node) {
    return nb_attr(node, 0) != 0 ? 2.0f / (float)nb_attr(node, 1) : 2.0f;
}

/* dp - dt for tangents either of which may be absent (zero). */
static nb_tensor *tangent_diff(nb_tensor *dp, nb_tensor *dt) {
    return dp && dt ? nb_sub(dp, dt) : dp ? dp : dt ? nb_neg(dt) : NULL;
}

static nb_tensor *mse_grad(nb_tensor *p, nb_tensor *t, nb_tensor *g, bool mean);

static void mse_grad_backward(nb_tensor *node, nb_tensor *u, nb_tensor **gx) {
    nb_tensor *p = nb_saved(node, 0), *t = nb_saved(node, 1), *g = nb_saved(node, 2);
    float c2 = mse_twice_c(node);
    if (nb_needs_input_grad(node, 0) || nb_needs_input_grad(node, 1)) {
        nb_tensor *dp = nb_mul(u, nb_mul_scalar(g, c2));
        if (nb_needs_input_grad(node, 0)) gx[0] = dp;
        if (nb_needs_input_grad(node, 1)) gx[1] = nb_neg(dp);
    }
    if (nb_needs_input_grad(node, 2)) {
        nb_tensor *dg = nb_mul_scalar(nb_sum(nb_mul(u, nb_sub(p, t)), NB_ALL, false), c2);
        gx[2] = dg && !nb_same_shape(dg, g) ? nb_reshape(dg, nb_ndim(g), nb_shape(g)) : dg;
    }
}
/* Forward mode: dy = 2c·(dg·(p - t) + g·(dp - dt)). */
static nb_tensor *mse_grad_jvp(nb_tensor *node, nb_tensor *const *tan) {
    nb_tensor *p = nb_saved(node, 0), *t = nb_saved(node, 1), *g = nb_saved(node, 2);
    nb_tensor *diff = tangent_diff(tan[0], tan[1]);
    nb_tensor *a = tan[2] ? nb_mul(tan[2], nb_sub(p, t)) : NULL, *b = diff ? nb_mul(g, diff) : NULL;
    nb_tensor *sum = a && b ? nb_add(a, b) : a ? a : b;
    return sum ? nb_mul_scalar(sum, mse_twice_c(node)) : NULL;
}
static const nb_op mse_grad_op = {"mse_grad", mse_grad_backward, mse_grad_jvp};

/* p, t (same shape), g (the loss's gradient, one element) -> the gradient
 * of the loss at p, shaped like p. */
static nb_tensor *mse_grad(nb_tensor *p, nb_tensor *t, nb_tensor *g, bool mean) {
    if (!p || !t || !g) return NULL;
    nb_tensor *out = nb_empty_like(p);
    if (!out) return NULL;
    int64_t n = nb_numel(p);
    float gs = nb_data(g)[0];
    if (mean) gs = gs * (1.0f / (float)n);
    const float *restrict pp = nb_data(p), *restrict pt = nb_data(t);
    float *restrict po = nb_data_mut(out);
    for (int64_t i = 0; i < n; i++) po[i] = gs * ((pp[i] - pt[i]) * 2.0f);
    nb_tensor *inputs[3] = {p, t, g};
    out = nb_record(out, &mse_grad_op, 3, inputs);
    nb_set_attr(out, 0, mean);
    nb_set_attr(out, 1, (double)n);
    nb_save(out, p);
    nb_save(out, t);
    nb_save(out, g);
    return out;
}

static void mse_backward(nb_tensor *node, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *gp = mse_grad(nb_saved(node, 0), nb_saved(node, 1), g, nb_attr(node, 0) != 0);
    if (nb_needs_input_grad(node, 0)) gx[0] = gp;
    if (nb_needs_input_grad(node, 1)) gx[1] = nb_neg(gp);
}
/* Forward mode: dy = 2c·sum((p - t)·(dp - dt)). */
static nb_tensor *mse_jvp(nb_tensor *node, nb_tensor *const *tan) {
    nb_tensor *p = nb_saved(node, 0), *t = nb_saved(node, 1), *diff = tangent_diff(tan[0], tan[1]);
    if (!diff) return NULL;
    return nb_mul_scalar(nb_sum(nb_mul(nb_sub(p, t), diff), NB_ALL, false), mse_twice_c(node));
}
static const nb_op mse_op = {"mse_loss", mse_backward, mse_jvp};

nb_tensor *nb_mse_loss(nb_tensor *pred, nb_tensor *target, nb_reduction r) {
    if (!pred || !target) return NULL;
    if (!same_shape("nb_mse_loss", pred, target, r)) return NULL;
    if (r == NB_REDUCE_NONE) {
        nb_composite_begin();
        return nb_composite_end(nb_square(nb_sub(pred, target)));
    }
    nb_tensor *out = nb__empty_for("nb_mse_loss", 0, NULL);
    if (!out) return NULL;
    int64_t n = nb_numel(pred);
    bool mean = r == NB_REDUCE_MEAN;
    /* an empty sum is 0, an empty mean 0/0, as nb_sum and nb_mean give */
    double s = n ? sum_squared_diff(nb_data(pred), nb_data(target), n) : 0.0;
    nb_data_mut(out)[0] = !mean ? (float)s : n ? (float)(s / (double)n) : NAN;
    nb_tensor *inputs[2] = {pred, target};
    out = nb_record(out, &mse_op, 2, inputs);
    nb_set_attr(out, 0, mean);
    nb_set_attr(out, 1, (double)n);
    nb_save(out, pred);
    nb_save(out, target);
    return out;
}

nb_tensor *nb_l1_loss(nb_tensor *pred, nb_tensor *target, nb_reduction r) {
    if (!pred || !target) return NULL;
    if (!same_shape("nb_l1_loss", pred, target, r)) return NULL;
    nb_composite_begin();
    return nb_composite_end(reduce(nb_abs(nb_sub(pred, target)), r));
}

nb_tensor *nb_huber_loss(nb_tensor *pred, nb_tensor *target, float delta, nb_reduction r) {
    if (!pred || !target) return NULL;
    if (!(delta > 0)) {
        nb_set_error("nb_huber_loss: delta must be positive, got %g", (double)delta);
        return NULL;
    }
    if (!same_shape("nb_huber_loss", pred, target, r)) return NULL;
    nb_composite_begin();
    nb_tensor *d = nb_sub(pred, target), *ad = nb_abs(d);
    nb_tensor *quadratic = nb_mul_scalar(nb_square(d), 0.5f);
    nb_tensor *linear = nb_mul_scalar(nb_sub_scalar(ad, 0.5f * delta), delta);
    return nb_composite_end(reduce(nb_where(nb_lt_scalar(ad, delta), quadratic, linear), r));
}

/* Values of t must lie in [lo, hi]; names the first one that does not. */
static bool in_range(const char *who, const char *what, nb_tensor *t, float lo, float hi) {
    const float *d = nb_data(t);
    for (int64_t i = 0; i < nb_numel(t); i++)
        if (!(d[i] >= lo && d[i] <= hi)) {
            nb_set_error("%s: %s must be in [%g, %g], found %g at element %lld", who, what,
                         (double)lo, (double)hi, (double)d[i], (long long)i);
            return false;
        }
    return true;
}

/* ---- bce: one op of its own ----------------------------------------------------------
 * prob, target (same shape) -> out (same shape), before the reduction:
 *   out = -(y max(log p, -100) + (1 - y) max(log(1 - p), -100))
 * A composition of log and maximum would send 0 * (1/0) = NaN back from a
 * clamped log at p = 0 or 1, where the loss itself is finite. So bce is one
 * op, with PyTorch's gradient, which has no such 0/0:
 *   d/dp = g (p - y) / max((1 - p) p, 1e-12)
 *   d/dy = g (max(log(1 - p), -100) - max(log p, -100))
 * Both are written with ops, so second derivatives work wherever the loss
 * is smooth (0 < p < 1 away from the 1e-12 floor). The forward takes
 * log1p(-p), as PyTorch does; the target's gradient log(1 - p), the same
 * value up to rounding. */

#define BCE_LOG_FLOOR -100.0f
#define BCE_EPSILON 1e-12f

static void bce_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *p = nb_saved(out, 0), *y = nb_saved(out, 1);
    if (nb_needs_input_grad(out, 0)) {
        nb_tensor *denom = nb_maximum_scalar(nb_mul(p, nb_rsub_scalar(p, 1.0f)), BCE_EPSILON);
        gx[0] = nb_div(nb_mul(g, nb_sub(p, y)), denom);
    }
    if (nb_needs_input_grad(out, 1)) {
        nb_tensor *log_p = nb_maximum_scalar(nb_log(p), BCE_LOG_FLOOR);
        nb_tensor *log_1mp = nb_maximum_scalar(nb_log(nb_rsub_scalar(p, 1.0f)), BCE_LOG_FLOOR);
        gx[1] = nb_mul(g, nb_sub(log_1mp, log_p));
    }
}
/* Forward mode: the same two partial derivatives times the tangents. */
static nb_tensor *bce_jvp(nb_tensor *out, nb_tensor *const *t) {
    nb_tensor *p = nb_saved(out, 0), *y = nb_saved(out, 1), *dp = NULL, *dy = NULL;
    if (t[0]) {
        nb_tensor *denom = nb_maximum_scalar(nb_mul(p, nb_rsub_scalar(p, 1.0f)), BCE_EPSILON);
        dp = nb_div(nb_mul(t[0], nb_sub(p, y)), denom);
    }
    if (t[1]) {
        nb_tensor *log_p = nb_maximum_scalar(nb_log(p), BCE_LOG_FLOOR);
        nb_tensor *log_1mp = nb_maximum_scalar(nb_log(nb_rsub_scalar(p, 1.0f)), BCE_LOG_FLOOR);
        dy = nb_mul(t[1], nb_sub(log_1mp, log_p));
    }
    return dp && dy ? nb_add(dp, dy) : dp ? dp : dy;
}
static const nb_op bce_op = {"bce", bce_backward, bce_jvp};

nb_tensor *nb_bce_loss(nb_tensor *prob, nb_tensor *target, nb_reduction r) {
    if (!prob || !target) return NULL;
    if (!same_shape("nb_bce_loss", prob, target, r) ||
        !in_range("nb_bce_loss", "probabilities", prob, 0, 1))
        return NULL;
    nb_composite_begin();
    nb_tensor *out = nb_empty_like(prob);
    if (!out) return nb_composite_end(NULL);
    const float *pp = nb_data(prob), *py = nb_data(target);
    float *po = nb_data_mut(out);
    for (int64_t i = 0, n = nb_numel(out); i < n; i++) {
        float log_p = fmaxf(logf(pp[i]), BCE_LOG_FLOOR);
        float log_1mp = fmaxf(log1pf(-pp[i]), BCE_LOG_FLOOR);
        po[i] = -(py[i] * log_p + (1.0f - py[i]) * log_1mp);
    }
    nb_tensor *inputs[2] = {prob, target};
    out = nb_record(out, &bce_op, 2, inputs);
    nb_save(out, prob);
    nb_save(out, target);
    return nb_composite_end(reduce(out, r));
}

nb_tensor *nb_bce_with_logits_loss(nb_tensor *logits, nb_tensor *target, nb_reduction r) {
    if (!logits || !target) return NULL;
    if (!same_shape("nb_bce_with_logits_loss", logits, target, r)) return NULL;
    nb_composite_begin();
    return nb_composite_end(reduce(nb_sub(nb_softplus(logits), nb_mul(logits, target)), r));
}

/* ---- class losses ---------------------------------------------------------------------
 * scores [N, C] with labels [N], or one sample: scores [C] with a single
 * label (0-d, or [1]). Without reduction the result has the labels' shape,
 * so one sample with a 0-d label gives a 0-d loss, as in PyTorch.
 * Everything is checked here, before any op runs, so that a bad input is
 * reported once, under the name the user called, describing what that
 * function takes (what: "logits" or "log-probabilities"). */

static bool check_class_inputs(const char *who, const char *what, nb_tensor *scores,
                               nb_tensor *labels, nb_reduction r, bool ignore, int64_t ignore_index) {
    if (!valid_reduction(who, r)) return false;
    /* [N,C] with [N], or a sequence [B,T,C] with [B,T] (any leading axes) */
    bool batched = nb_ndim(scores) >= 2 && nb_ndim(labels) == nb_ndim(scores) - 1 &&
                   memcmp(nb_shape(labels), nb_shape(scores), sizeof(int64_t) * (size_t)nb_ndim(labels)) == 0;
    bool one = nb_ndim(scores) == 1 && nb_ndim(labels) <= 1 && nb_numel(labels) == 1;
    if (!batched && !one) {
        nb_set_error("%s: expected %s [N,C] and labels [N], or [N,...,C] and [N,...] (or one "
                     "sample: [C] and one label), got %s and %s",
                     who, what, SHAPE(scores), SHAPE(labels));
        return false;
    }
    int64_t c = nb_dim(scores, -1);
    const float *lab = nb_data(labels);
    for (int64_t i = 0; i < nb_numel(labels); i++)
        if ((!(lab[i] >= 0 && lab[i] < (float)c) || lab[i] != floorf(lab[i])) &&
            !(ignore && lab[i] == (float)ignore_index)) {
            nb_set_error("%s: label %g at position %lld is not a class index in [0, %lld)", who,
                         (double)lab[i], (long long)i, (long long)c);
            return false;
        }
    return true;
}

/* -log_probs[i, labels[i]], reduced; inputs already checked. */
static nb_tensor *nll(nb_tensor *log_probs, nb_tensor *labels, nb_reduction r) {
    int64_t n = nb_numel(labels);
    nb_tensor *rows = nb_reshape(log_probs, NB_SHAPE(-1, nb_dim(log_probs, -1)));
    nb_tensor *picked = nb_gather(rows, 1, nb_reshape(labels, NB_SHAPE(n, 1)));
    nb_tensor *loss = nb_neg(nb_reshape(picked, nb_ndim(labels), nb_shape(labels)));
    return reduce(loss, r);
}

nb_tensor *nb_nll_loss(nb_tensor *log_probs, nb_tensor *labels, nb_reduction r) {
    if (!log_probs || !labels) return NULL;
    if (!check_class_inputs("nb_nll_loss", "log-probabilities", log_probs, labels, r, false, 0)) return NULL;
    nb_composite_begin();
    return nb_composite_end(nll(log_probs, labels, r));
}

/* ---- cross-entropy: one op when reduced -------------------------------------------------
 * logits [N,...,C] (or one sample [C]) with labels [N,...] (or one label),
 * n labels -> out (): c·sum_i -y[i, l_i] with y = log_softmax(logits, -1)
 * and c = 1/n for the mean, 1 for the sum. As log_softmax, reshape, gather,
 * neg, reshape and mean it made six tensors forward and more backward, a
 * visible share of a small classifier's step; as one op it makes one each
 * way, plus y, which the gradient needs as the composition's did. The bits
 * are those of the composition: y from reduce.c's own kernel
 * (nb__log_softmax_rows), the picked values negated and summed in double in
 * nb_sum's order (sum_picked), divided by n in double, rounded once.
 * The gradient is one op too, cross_entropy_grad, computing what the
 * composition's backward did, in its order and roundings. With v = -(g·c)
 * (c applied as the mean's backward applies it: g times the float 1/n) the
 * gather's backward scatters v into a row of zeros (0 + v, so -0 becomes
 * +0: s), the row sums to s exactly, and log_softmax's backward gives
 *   logits: row i, class j:   [j = l_i]·s - exp(y_ij)·s
 * with exp the vectorised nb__expf that nb_exp uses. Its own gradient, for
 * second derivatives, is written with ops, p = softmax(logits) and h the
 * one-hot labels (a constant): the gradient is (g·c)·(p - h), so
 *   logits: (g·c)·p·(u - sum(u·p, -1)),   g: c·sum(u·(p - h))
 * The labels get no gradient, as the gather's index got none.
 * Without reduction the loss stays the composition.
 * Attributes (both ops): 0 = 1 for the mean, 0 for the sum; 1 = n. */

/* sum(-y[i, l_i]) over the n rows of c classes, in double: each picked value
 * negated, then added as nb_sum adds a contiguous run (NB_SUM_IN_ROW_ORDER),
 * without copying the values out first. */
static double sum_picked(const float *y, const float *lab, int64_t n, int64_t c) {
    double s;
#define PICKED_TERM(i) (double)-y[(i) * c + (int64_t)lab[i]]
    NB_SUM_IN_ROW_ORDER(&s, n, PICKED_TERM);
#undef PICKED_TERM
    return s;
}

/* c as a float, for the gradients of the gradient (not bit-matched). */
static float ce_c(nb_tensor *node) {
    return nb_attr(node, 0) != 0 ? 1.0f / (float)nb_attr(node, 1) : 1.0f;
}

/* The labels as a one-hot constant shaped like the logits. */
static nb_tensor *one_hot_like(nb_tensor *logits, nb_tensor *labels) {
    nb_tensor *h = nb_zeros_like(logits);
    if (!h || !labels) return NULL;
    int64_t n = nb_numel(labels), c = nb_dim(logits, -1);
    const float *lab = nb_data(labels);
    float *ph = nb_data_mut(h);
    for (int64_t i = 0; i < n; i++) ph[i * c + (int64_t)lab[i]] = 1.0f;
    return h;
}

/* p·(t - sum(p·t, -1)): the softmax's Jacobian applied to t (it is
 * symmetric, so backward and forward mode alike). */
static nb_tensor *softmax_times(nb_tensor *p, nb_tensor *t) {
    int axis = -1;
    return nb_mul(p, nb_sub(t, nb_sum(nb_mul(p, t), 1, &axis, true)));
}

static nb_tensor *cross_entropy_grad(nb_tensor *logits, nb_tensor *labels, nb_tensor *y,
                                     nb_tensor *g, bool mean);

static void cross_entropy_grad_backward(nb_tensor *node, nb_tensor *u, nb_tensor **gx) {
    nb_tensor *x = nb_saved(node, 0), *labels = nb_saved(node, 1), *g = nb_saved(node, 3);
    float c = ce_c(node);
    nb_tensor *p = nb_softmax(x, -1);
    if (nb_needs_input_grad(node, 0)) gx[0] = nb_mul(softmax_times(p, u), nb_mul_scalar(g, c));
    if (nb_needs_input_grad(node, 1)) {
        nb_tensor *h = one_hot_like(x, labels);
        nb_tensor *dg = nb_mul_scalar(nb_sum(nb_mul(u, nb_sub(p, h)), NB_ALL, false), c);
        gx[1] = dg && !nb_same_shape(dg, g) ? nb_reshape(dg, nb_ndim(g), nb_shape(g)) : dg;
    }
}
/* Forward mode: d((g·c)·(p - h)) = c·(dg·(p - h) + g·p·(dx - sum(p·dx, -1))). */
static nb_tensor *cross_entropy_grad_jvp(nb_tensor *node, nb_tensor *const *tan) {
    nb_tensor *x = nb_saved(node, 0), *labels = nb_saved(node, 1), *g = nb_saved(node, 3);
    nb_tensor *p = nb_softmax(x, -1);
    nb_tensor *a = tan[1] ? nb_mul(tan[1], nb_sub(p, one_hot_like(x, labels))) : NULL;
    nb_tensor *b = tan[0] ? nb_mul(g, softmax_times(p, tan[0])) : NULL;
    nb_tensor *sum = a && b ? nb_add(a, b) : a ? a : b;
    return sum ? nb_mul_scalar(sum, ce_c(node)) : NULL;
}
static const nb_op cross_entropy_grad_op = {"cross_entropy_grad", cross_entropy_grad_backward,
                                            cross_entropy_grad_jvp};

/* Every element of the gradient but the labelled ones is 0 - exp(y)·s with
 * the same s, so the rows are one flat loop, which vectorises whatever the
 * number of classes (with ten, a loop per row left most of each row to its
 * scalar tail); the labelled elements are then rewritten. */
typedef struct ce_grad_job {
    const float *y;
    float *out;
    float s;
} ce_grad_job;

static void ce_grad_items(void *ctx, int64_t begin, int64_t end) {
    const ce_grad_job *job = ctx;
    const float s = job->s;
    const float *restrict y = job->y;
    float *restrict out = job->out;
    for (int64_t k = begin; k < end; k++) out[k] = 0.0f - nb__expf(y[k]) * s;
}

/* logits and y = log_softmax(logits) (a constant), labels (checked), g (the
 * loss's gradient, one element) -> the gradient of the loss at the logits,
 * shaped like them. */
static nb_tensor *cross_entropy_grad(nb_tensor *logits, nb_tensor *labels, nb_tensor *y,
                                     nb_tensor *g, bool mean) {
    if (!logits || !labels || !y || !g) return NULL;
    nb_tensor *out = nb_empty_like(logits);
    if (!out) return NULL;
    int64_t n = nb_numel(labels), c = nb_dim(logits, -1);
    float gs = nb_data(g)[0];
    if (mean) gs = gs * (1.0f / (float)n);
    /* v = -(g·c) scattered into zeros is 0 + v (so -0 becomes +0), which is
     * also the sum of its row */
    ce_grad_job job = {.y = nb_data(y), .out = nb_data_mut(out), .s = 0.0f + -gs};
    /* elements are independent, so the split does not change any bit */
    nb_parallel_for(n * c, 16384, ce_grad_items, &job);
    /* the labelled element is s - e with e = exp(y)·s, and the loop left
     * 0 - e there, which is -e (or +0 for e = ±0): s + (0 - e) is s - e to
     * the bit, without a second exponential */
    const float *lab = nb_data(labels);
    for (int64_t i = 0; i < n; i++) {
        int64_t k = i * c + (int64_t)lab[i];
        job.out[k] = job.s + job.out[k];
    }
    nb_tensor *inputs[2] = {logits, g};
    out = nb_record(out, &cross_entropy_grad_op, 2, inputs);
    nb_set_attr(out, 0, mean);
    nb_set_attr(out, 1, (double)n);
    nb_save(out, logits);
    nb_save(out, labels);
    nb_save(out, y);
    nb_save(out, g);
    return out;
}

static void cross_entropy_backward(nb_tensor *node, nb_tensor *g, nb_tensor **gx) {
    gx[0] = cross_entropy_grad(nb_saved(node, 0), nb_saved(node, 1), nb_saved(node, 2), g,
                               nb_attr(node, 0) != 0);
}
/* Forward mode: dy = c·sum((p - h)·dx). */
static nb_tensor *cross_entropy_jvp(nb_tensor *node, nb_tensor *const *tan) {
    nb_tensor *x = nb_saved(node, 0), *labels = nb_saved(node, 1);
    if (!tan[0]) return NULL;
    nb_tensor *d = nb_sub(nb_softmax(x, -1), one_hot_like(x, labels));
    return nb_mul_scalar(nb_sum(nb_mul(d, tan[0]), NB_ALL, false), ce_c(node));
}
static const nb_op cross_entropy_op = {"cross_entropy", cross_entropy_backward, cross_entropy_jvp};

nb_tensor *nb_cross_entropy_loss(nb_tensor *logits, nb_tensor *labels, nb_reduction r) {
    if (!logits || !labels) return NULL;
    if (!check_class_inputs("nb_cross_entropy_loss", "logits", logits, labels, r, false, 0)) return NULL;
    nb_composite_begin();
    if (r == NB_REDUCE_NONE) return nb_composite_end(nll(nb_log_softmax(logits, -1), labels, r));
    /* y is made inside the scope and kept only by the node that saves it */
    nb_tensor *y = nb_empty_like(logits);
    nb_tensor *out = y ? nb__empty_for("nb_cross_entropy_loss", 0, NULL) : NULL;
    if (!out) return nb_composite_end(NULL);
    int64_t n = nb_numel(labels), c = nb_dim(logits, -1);
    bool mean = r == NB_REDUCE_MEAN;
    /* one row per label (check_class_inputs); an empty sum is 0, an empty
     * mean 0/0, as nb_sum and nb_mean give */
    nb__log_softmax_rows(nb_data(logits), nb_data_mut(y), n, c);
    double s = n ? sum_picked(nb_data(y), nb_data(labels), n, c) : 0.0;
    nb_data_mut(out)[0] = !mean ? (float)s : n ? (float)(s / (double)n) : NAN;
    out = nb_record(out, &cross_entropy_op, 1, &logits);
    nb_set_attr(out, 0, mean);
    nb_set_attr(out, 1, (double)n);
    nb_save(out, logits);
    nb_save(out, labels);
    nb_save(out, y);
    return nb_composite_end(out);
}

/* Labels equal to ignore_index (PyTorch's -100 by default, or a padding
 * token) count for nothing: their loss is 0, they get no gradient, and the
 * mean is over the others only, as in PyTorch. When every label is ignored
 * that mean is 0/0 = NaN, as in PyTorch. The picked log-probabilities are
 * multiplied by a constant mask of 0 and 1, the ignored labels first
 * replaced by class 0 so that the gather stays in range. */
nb_tensor *nb_cross_entropy_loss_ignore(nb_tensor *logits, nb_tensor *labels, int64_t ignore_index,
                                        nb_reduction r) {
    const char *who = "nb_cross_entropy_loss_ignore";
    if (!logits || !labels) return NULL;
    if (!check_class_inputs(who, "logits", logits, labels, r, true, ignore_index)) return NULL;
    nb_composite_begin();
    int64_t n = nb_numel(labels), kept = 0;
    nb_tensor *keep = nb_empty_like(labels), *safe = nb_empty_like(labels);
    if (!keep || !safe) return nb_composite_end(NULL);
    const float *lab = nb_data(labels);
    float *pk = nb_data_mut(keep), *ps = nb_data_mut(safe);
    for (int64_t i = 0; i < n; i++) {
        bool ignored = lab[i] == (float)ignore_index;
        pk[i] = ignored ? 0.0f : 1.0f;
        ps[i] = ignored ? 0.0f : lab[i];
        kept += !ignored;
    }
    nb_tensor *loss = nb_mul(nll(nb_log_softmax(logits, -1), safe, NB_REDUCE_NONE), keep);
    if (r == NB_REDUCE_MEAN) loss = nb_div_scalar(nb_sum(loss, NB_ALL, false), (float)kept);
    else if (r == NB_REDUCE_SUM) loss = nb_sum(loss, NB_ALL, false);
    return nb_composite_end(loss);
}
