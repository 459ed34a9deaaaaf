/* losses.c — Keras's losses and metrics by name, for compile().
 *
 * The regression losses map straight onto ops/loss.c. Keras's
 * crossentropies take probabilities (the output of a sigmoid or softmax
 * layer) and clip them to [1e-7, 1 - 1e-7] before the log; nabla does the
 * same here so that a model ported from Keras reports the same numbers.
 * Metrics are plain float computations under no-grad: they are read, never
 * differentiated.
 */
#include "nn_internal.h"

#include <math.h>
#include <string.h>

#define KERAS_EPSILON 1e-7f

/* Ends the scope a composite loss opened, keeping only its result. */
static nb_tensor *escape_scope(nb_tensor *result) {
    nb_escape(result);
    nb_scope_end();
    return result;
}

static nb_tensor *mse(nb_tensor *p, nb_tensor *t) { return nb_mse_loss(p, t, NB_REDUCE_MEAN); }
static nb_tensor *mae(nb_tensor *p, nb_tensor *t) { return nb_l1_loss(p, t, NB_REDUCE_MEAN); }
static nb_tensor *huber(nb_tensor *p, nb_tensor *t) { return nb_huber_loss(p, t, 1.0f, NB_REDUCE_MEAN); }
static nb_tensor *bce(nb_tensor *p, nb_tensor *t) {
    nb_scope_begin();
    return escape_scope(nb_bce_loss(nb_clamp(p, KERAS_EPSILON, 1 - KERAS_EPSILON), t, NB_REDUCE_MEAN));
}

/* prob, onehot (N, C) -> mean over N of -sum_c onehot log(prob); one sample
 * may be given as [C] and [C] (a 0-d result either way). */
nb_tensor *nb_categorical_crossentropy(nb_tensor *prob, nb_tensor *onehot) {
    if (!prob || !onehot) return NULL;
    if (nb_ndim(prob) < 1 || nb_ndim(prob) > 2 || !nb_same_shape(prob, onehot)) {
        char a[96], b[96];
        nb_set_error("nb_categorical_crossentropy: expected probabilities and one-hot targets of one "
                     "shape [N,C] (or [C]), got %s and %s",
                     nb_shape_str(nb_ndim(prob), nb_shape(prob), a, sizeof a),
                     nb_shape_str(nb_ndim(onehot), nb_shape(onehot), b, sizeof b));
        return NULL;
    }
    nb_scope_begin();
    nb_tensor *logp = nb_log(nb_clamp(prob, KERAS_EPSILON, 1 - KERAS_EPSILON));
    return escape_scope(nb_neg(nb_mean(nb_sum(nb_mul(onehot, logp), NB_AXES(-1), false), NB_ALL, false)));
}

/* prob (N, C), labels (N) or (N, 1) of class indices; or one sample: prob
 * (C) and one label. Checked here, so that a bad input is reported once and
 * under this name, not under nb_nll_loss's. */
nb_tensor *nb_sparse_categorical_crossentropy(nb_tensor *prob, nb_tensor *labels) {
    if (!prob || !labels) return NULL;
    const char *who = "nb_sparse_categorical_crossentropy";
    int64_t n = nb_numel(labels);
    bool batched = nb_ndim(prob) == 2 && n == nb_dim(prob, 0) &&
                   (nb_ndim(labels) == 1 || (nb_ndim(labels) == 2 && nb_dim(labels, 1) == 1));
    bool one = nb_ndim(prob) == 1 && nb_ndim(labels) <= 1 && n == 1;
    if (!batched && !one) {
        char a[96], b[96];
        nb_set_error("%s: expected probabilities [N,C] and labels [N] or [N,1] (or one sample: [C] "
                     "and one label), got %s and %s",
                     who, nb_shape_str(nb_ndim(prob), nb_shape(prob), a, sizeof a),
                     nb_shape_str(nb_ndim(labels), nb_shape(labels), b, sizeof b));
        return NULL;
    }
    int64_t c = nb_dim(prob, -1);
    const float *lab = nb_data(labels);
    for (int64_t i = 0; i < n; i++)
        if (!(lab[i] >= 0 && lab[i] < (float)c) || lab[i] != floorf(lab[i])) {
            nb_set_error("%s: label %g at position %lld is not a class index in [0, %lld)", who,
                         (double)lab[i], (long long)i, (long long)c);
            return NULL;
        }
    nb_scope_begin();
    if (batched) labels = nb_reshape(labels, NB_SHAPE(n));
    else labels = nb_reshape(labels, NB_SHAPE());
    nb_tensor *logp = nb_log(nb_clamp(prob, KERAS_EPSILON, 1 - KERAS_EPSILON));
    return escape_scope(nb_nll_loss(logp, labels, NB_REDUCE_MEAN));
}

typedef struct loss_entry {
    const char *name, *alias;
    nb_loss_fn fn;
} loss_entry;

static const loss_entry losses[] = {
    {"mean_squared_error", "mse", mse},
    {"mean_absolute_error", "mae", mae},
    {"huber", "huber_loss", huber},
    {"binary_crossentropy", "bce", bce},
    {"categorical_crossentropy", NULL, nb_categorical_crossentropy},
    {"sparse_categorical_crossentropy", NULL, nb_sparse_categorical_crossentropy},
};

nb_loss_fn nb_loss_by_name(const char *name) {
    for (size_t i = 0; name && i < sizeof losses / sizeof *losses; i++)
        if (strcmp(losses[i].name, name) == 0 || (losses[i].alias && strcmp(losses[i].alias, name) == 0))
            return losses[i].fn;
    nb_set_error("unknown loss '%s' (known: mean_squared_error, mean_absolute_error, huber, "
                 "binary_crossentropy, categorical_crossentropy, sparse_categorical_crossentropy)",
                 name ? name : "(null)");
    return NULL;
}

/* ---- metrics: batch means as floats ---------------------------------------------- */

static float metric_mse(nb_tensor *p, nb_tensor *t) { return nb_item(mse(p, t)); }
static float metric_mae(nb_tensor *p, nb_tensor *t) { return nb_item(mae(p, t)); }

static float binary_accuracy(nb_tensor *p, nb_tensor *t) {
    if (!nb_same_shape(p, t)) return NAN;
    const float *pp = nb_data(p), *pt = nb_data(t);
    int64_t n = nb_numel(p), hits = 0;
    for (int64_t i = 0; i < n; i++) hits += (pp[i] > 0.5f) == (pt[i] > 0.5f);
    return n ? (float)hits / (float)n : NAN;
}

static int64_t argmax_row(const float *row, int64_t c) {
    int64_t best = 0;
    for (int64_t j = 1; j < c; j++)
        if (row[j] > row[best]) best = j;
    return best;
}

static float categorical_accuracy(nb_tensor *p, nb_tensor *t) {
    if (nb_ndim(p) != 2 || !nb_same_shape(p, t)) return NAN;
    int64_t n = nb_dim(p, 0), c = nb_dim(p, 1), hits = 0;
    for (int64_t i = 0; i < n; i++)
        hits += argmax_row(nb_data(p) + i * c, c) == argmax_row(nb_data(t) + i * c, c);
    return n ? (float)hits / (float)n : NAN;
}

static float sparse_categorical_accuracy(nb_tensor *p, nb_tensor *t) {
    if (nb_ndim(p) != 2 || nb_numel(t) != nb_dim(p, 0)) return NAN;
    int64_t n = nb_dim(p, 0), c = nb_dim(p, 1), hits = 0;
    for (int64_t i = 0; i < n; i++) hits += (float)argmax_row(nb_data(p) + i * c, c) == nb_data(t)[i];
    return n ? (float)hits / (float)n : NAN;
}

/* "accuracy" means the accuracy that fits the loss, as in Keras. */
nb_metric_fn nb__metric_by_name(const char *name, nb_loss_fn loss, const char **canonical) {
    if (strcmp(name, "accuracy") == 0 || strcmp(name, "acc") == 0) {
        *canonical = "accuracy";
        if (loss == nb_categorical_crossentropy) return categorical_accuracy;
        if (loss == nb_sparse_categorical_crossentropy) return sparse_categorical_accuracy;
        return binary_accuracy;
    }
    static const struct {
        const char *name;
        nb_metric_fn fn;
    } metrics[] = {{"binary_accuracy", binary_accuracy},
                   {"categorical_accuracy", categorical_accuracy},
                   {"sparse_categorical_accuracy", sparse_categorical_accuracy},
                   {"mae", metric_mae},
                   {"mean_absolute_error", metric_mae},
                   {"mse", metric_mse},
                   {"mean_squared_error", metric_mse}};
    for (size_t i = 0; i < sizeof metrics / sizeof *metrics; i++)
        if (strcmp(metrics[i].name, name) == 0) {
            *canonical = metrics[i].name;
            return metrics[i].fn;
        }
    nb_set_error("unknown metric '%s' (known: accuracy, binary_accuracy, categorical_accuracy, "
                 "sparse_categorical_accuracy, mae, mse)",
                 name);
    return NULL;
}
