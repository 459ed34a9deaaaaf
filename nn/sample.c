/* sample.c — drawing tokens from a model's output: nb_sample_logits picks
 * one class per row of logits, from softmax(logits / temperature) cut down
 * to the top_k largest, the way a character or word model generates text.
 *
 * It is not an op: sampling has no gradient, and its result is a plain
 * tensor of class indices held as floats (nabla's label convention, what
 * nb_embedding and nb_cross_entropy_loss take back). Every row costs one
 * draw of nabla's generator (PCG32, 53-bit uniform), so a seed gives the
 * same words on every platform. The probabilities are computed in double
 * from logits shifted by the row's maximum, so large logits do not
 * overflow and a low temperature tends to argmax instead of NaN.
 */
#include "nn_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The k-th largest of v[0..n-1] (1 <= k <= n), by quickselect in place. */
static float kth_largest(float *v, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1, want = k - 1; /* index in descending order */
    while (lo < hi) {
        float pivot = v[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] > pivot) i++;
            while (v[j] < pivot) j--;
            if (i <= j) {
                float t = v[i];
                v[i++] = v[j];
                v[j--] = t;
            }
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else return v[want];
    }
    return v[want];
}

/* One row: the index drawn, or -1 when the row has no finite maximum. */
static int64_t sample_row(const float *row, int64_t v, float temperature, int64_t k, float *scratch,
                          nb_generator *g) {
    int64_t best = -1;
    for (int64_t j = 0; j < v; j++)
        if (row[j] > -INFINITY && (best < 0 || row[j] > row[best])) best = j;
    if (best < 0 || temperature == 0 || k == 1) return best;
    /* Keep the logits >= the k-th largest: ties with it are all kept, as
     * the usual top-k filter (logits < topk[-1] set to -inf) keeps them. */
    float threshold = -INFINITY;
    if (k < v) {
        memcpy(scratch, row, (size_t)v * sizeof *scratch);
        threshold = kth_largest(scratch, v, k);
    }
    double m = row[best], total = 0;
    for (int64_t j = 0; j < v; j++)
        if (row[j] >= threshold && row[j] > -INFINITY) total += exp(((double)row[j] - m) / temperature);
    double u = nb_generator_uniform(g) * total, acc = 0;
    int64_t last = best;
    for (int64_t j = 0; j < v; j++) {
        if (!(row[j] >= threshold && row[j] > -INFINITY)) continue;
        acc += exp(((double)row[j] - m) / temperature);
        last = j;
        if (u < acc) return j;
    }
    return last; /* u within rounding of the total */
}

/* Frees a tensor this function made, whether or not a scope is open. */
static void drop(nb_tensor *t) {
    if (t) nb_release(nb_keep(t));
}

nb_tensor *nb_sample_logits(nb_tensor *logits, float temperature, int top_k, nb_generator *gen) {
    const char *who = "nb_sample_logits";
    if (!logits) return NULL;
    char buf[96];
    int nd = nb_ndim(logits);
    if (nd < 1 || nb_shape(logits)[nd - 1] < 1) {
        nb_set_error("%s: expects logits [..., V] with V >= 1 classes, got %s", who,
                     nb_shape_str(nd, nb_shape(logits), buf, sizeof buf));
        return NULL;
    }
    if (!(temperature >= 0) || isinf(temperature)) {
        nb_set_error("%s: temperature %g must be finite and >= 0 (0 is argmax)", who, (double)temperature);
        return NULL;
    }
    int64_t v = nb_shape(logits)[nd - 1], rows = nb_numel(logits) / v;
    int64_t k = top_k <= 0 || top_k >= v ? v : top_k;
    const float *x = nb_data(logits);
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * v;
        bool any = false;
        for (int64_t j = 0; j < v; j++) {
            if (isnan(row[j]) || row[j] == INFINITY) {
                nb_set_error("%s: logits %s hold %g in row %lld (NaN and +inf cannot be sampled from)",
                             who, nb_shape_str(nd, nb_shape(logits), buf, sizeof buf), (double)row[j],
                             (long long)r);
                return NULL;
            }
            any |= row[j] > -INFINITY;
        }
        if (!any) {
            nb_set_error("%s: logits %s: row %lld is all -inf, nothing to sample", who,
                         nb_shape_str(nd, nb_shape(logits), buf, sizeof buf), (long long)r);
            return NULL;
        }
    }
    nb_tensor *out = nb_empty(nd - 1, nb_shape(logits));
    /* top-k needs a copy of a row to select in; a tensor, so the allocator's
     * cache serves it rather than malloc on every token generated */
    nb_tensor *scratch = k < v ? nb_empty(NB_SHAPE(v)) : NULL;
    if (!out || (k < v && !scratch)) {
        drop(out);
        drop(scratch);
        return NULL;
    }
    nb_generator *g = gen ? gen : nb_default_generator();
    float *o = nb_data_mut(out), *s = scratch ? nb_data_mut(scratch) : NULL;
    for (int64_t r = 0; r < rows; r++) o[r] = (float)sample_row(x + r * v, v, temperature, k, s, g);
    drop(scratch);
    return out;
}
