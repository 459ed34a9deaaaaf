/* loss.c — loss functions, written entirely as compositions of other ops.
 * None needs a backward of its own: the gradient of a composition is the
 * engine's job, and each piece is already gradchecked. What these functions
 * add is the care a loss needs: the stable form (log-sum-exp inside
 * cross-entropy, softplus inside BCE with logits), PyTorch's clamp of log at
 * -100 in BCE on probabilities, and strict checks of shapes and labels,
 * because a silently broadcast target ([N,1] against [N] gives [N,N]) is
 * the classic way a regression quietly trains on the wrong thing.
 *
 *   mse      mean((p - t)^2)
 *   l1       mean(|p - t|)
 *   huber    mean(|d| <= delta ? d^2/2 : delta (|d| - delta/2)),  d = p - t
 *   bce      -mean(t log p + (1 - t) log(1 - p)), logs clamped at -100
 *   bce_with_logits  mean(softplus(x) - x t)
 *   cross_entropy    nll(log_softmax(logits, 1), labels)
 *   nll      -mean(log_probs[i, labels[i]])
 */
#include "ops_internal.h"

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

nb_tensor *nb_mse_loss(nb_tensor *pred, nb_tensor *target, nb_reduction r) {
    if (!pred || !target) return NULL;
    if (!same_shape("nb_mse_loss", pred, target, r)) return NULL;
    nb_composite_begin();
    return nb_composite_end(reduce(nb_square(nb_sub(pred, target)), r));
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

nb_tensor *nb_bce_loss(nb_tensor *prob, nb_tensor *target, nb_reduction r) {
    if (!prob || !target) return NULL;
    if (!same_shape("nb_bce_loss", prob, target, r) ||
        !in_range("nb_bce_loss", "probabilities", prob, 0, 1))
        return NULL;
    nb_composite_begin();
    nb_tensor *log_p = nb_maximum_scalar(nb_log(prob), -100.0f);
    nb_tensor *log_1mp = nb_maximum_scalar(nb_log(nb_rsub_scalar(prob, 1.0f)), -100.0f);
    nb_tensor *ll = nb_add(nb_mul(target, log_p), nb_mul(nb_rsub_scalar(target, 1.0f), log_1mp));
    return nb_composite_end(reduce(nb_neg(ll), r));
}

nb_tensor *nb_bce_with_logits_loss(nb_tensor *logits, nb_tensor *target, nb_reduction r) {
    if (!logits || !target) return NULL;
    if (!same_shape("nb_bce_with_logits_loss", logits, target, r)) return NULL;
    nb_composite_begin();
    return nb_composite_end(reduce(nb_sub(nb_softplus(logits), nb_mul(logits, target)), r));
}

nb_tensor *nb_nll_loss(nb_tensor *log_probs, nb_tensor *labels, nb_reduction r) {
    if (!log_probs || !labels) return NULL;
    if (!valid_reduction("nb_nll_loss", r)) return NULL;
    if (nb_ndim(log_probs) != 2 || nb_ndim(labels) != 1 || nb_dim(labels, 0) != nb_dim(log_probs, 0)) {
        nb_set_error("nb_nll_loss: expected log-probabilities [N,C] and labels [N], got %s and %s",
                     SHAPE(log_probs), SHAPE(labels));
        return NULL;
    }
    int64_t n = nb_dim(log_probs, 0), c = nb_dim(log_probs, 1);
    const float *lab = nb_data(labels);
    for (int64_t i = 0; i < n; i++)
        if (!(lab[i] >= 0 && lab[i] < (float)c) || lab[i] != floorf(lab[i])) {
            nb_set_error("nb_nll_loss: label %g at position %lld is not a class index in [0, %lld)",
                         (double)lab[i], (long long)i, (long long)c);
            return NULL;
        }
    nb_composite_begin();
    nb_tensor *picked = nb_gather(log_probs, 1, nb_reshape(labels, NB_SHAPE(n, 1)));
    return nb_composite_end(reduce(nb_neg(nb_reshape(picked, NB_SHAPE(n))), r));
}

nb_tensor *nb_cross_entropy_loss(nb_tensor *logits, nb_tensor *labels, nb_reduction r) {
    if (!logits || !labels) return NULL;
    nb_composite_begin();
    if (nb_ndim(logits) == 1 && nb_numel(labels) == 1) { /* one sample: [C] and a label */
        logits = nb_unsqueeze(logits, 0);
        labels = nb_reshape(labels, NB_SHAPE(1));
    }
    if (nb_ndim(logits) != 2) {
        nb_set_error("nb_cross_entropy_loss: expected logits [N,C] (or [C]), got %s", SHAPE(logits));
        return nb_composite_end(NULL);
    }
    nb_tensor *loss = nb_nll_loss(nb_log_softmax(logits, 1), labels, r);
    if (!loss && nb_error() && strncmp(nb_error(), "nb_nll_loss", 11) == 0) {
        /* report under the name the user called */
        char msg[512];
        snprintf(msg, sizeof msg, "nb_cross_entropy_loss%s", nb_error() + 11);
        nb_set_error("%s", msg);
    }
    return nb_composite_end(loss);
}
