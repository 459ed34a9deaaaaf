/* sequential_checkpoint.c — nb_sequential_checkpoint: a Sequential run in
 * segments, each under nb_checkpoint, as PyTorch's checkpoint_sequential.
 *
 * Cutting L layers into about sqrt(L) segments keeps, during the forward,
 * only the sqrt(L) tensors that enter the segments, and, during the
 * backward, the intermediates of one segment at a time: memory of order
 * sqrt(L) layers instead of L, for one more forward of every layer. The
 * last segment is run normally, since its backward comes at once and
 * recomputing it would keep the same memory for nothing.
 */
#include "nn_internal.h"

#include <string.h>

/* What a segment's recomputation needs; copied with its node
 * (nb_checkpoint's ctx_size), so it lives as long as the graph. */
typedef struct segment {
    nb_module *seq;
    int first, last; /* layers [first, last) */
} segment;

static nb_tensor *segment_forward(nb_tensor *const *inputs, void *ctx) {
    const segment *s = ctx;
    nb_tensor *x = inputs[0];
    for (int i = s->first; i < s->last && x; i++) x = nb_module_forward(nb_sequential_at(s->seq, i), x);
    return x;
}

static int segment_num_params(nb_module *seq, int first, int last) {
    int total = 0;
    for (int i = first; i < last; i++) {
        int count = 0;
        nb_module_parameters(nb_sequential_at(seq, i), &count);
        total += count;
    }
    return total;
}

/* Segments with more inputs than this take one allocation each. */
#define INLINE_INPUTS 64

nb_tensor *nb_sequential_checkpoint(nb_module *seq, int segments, nb_tensor *x) {
    const char *who = "nb_sequential_checkpoint";
    if (!seq || !x) return NULL;
    int n = nb_sequential_len(seq);
    if (!nb__is_sequential(seq) || segments < 1) {
        nb_set_error("%s: needs a Sequential (got a %s) and at least one segment (got %d)", who,
                     seq->type->name, segments);
        return NULL;
    }
    if (segments > n) segments = n > 0 ? n : 1;
    /* Segment k holds layers [k·n/segments, (k+1)·n/segments). */
    for (int k = 0; k + 1 < segments && x; k++) {
        segment s = {seq, (int)((int64_t)k * n / segments), (int)((int64_t)(k + 1) * n / segments)};
        int nparams = segment_num_params(seq, s.first, s.last);
        nb_tensor *inline_inputs[INLINE_INPUTS], **inputs = inline_inputs;
        if (1 + nparams > INLINE_INPUTS && !(inputs = nb_malloc((size_t)(1 + nparams) * sizeof *inputs))) {
            nb_set_error("%s: out of memory", who);
            return NULL;
        }
        inputs[0] = x;
        int m = 1;
        for (int i = s.first; i < s.last; i++) {
            int count = 0;
            nb_tensor **p = nb_module_parameters(nb_sequential_at(seq, i), &count);
            if (count > 0) memcpy(inputs + m, p, (size_t)count * sizeof *p);
            m += count;
        }
        x = nb_checkpoint(segment_forward, &s, sizeof s, m, inputs);
        if (inputs != inline_inputs) nb_free(inputs);
        /* A lazy layer that built its parameters inside the segment made
         * them after the node listed its inputs: they would get no
         * gradient. */
        if (x && segment_num_params(seq, s.first, s.last) != nparams) {
            nb_set_error("%s: a layer among %d..%d made its parameters during the checkpointed "
                         "forward (a layer without input_dim on its first input); give it "
                         "input_dim or run one plain forward first",
                         who, s.first, s.last - 1);
            return NULL;
        }
    }
    segment last = {seq, (int)((int64_t)(segments - 1) * n / segments), n};
    return x ? segment_forward(&x, &last) : NULL;
}
