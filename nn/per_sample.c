/* per_sample.c — per-sample gradients: the gradient of each example's loss
 * with respect to each parameter, for a whole batch at once, as needed by
 * DP-SGD (per-example clipping) and by gradient-noise or influence studies.
 *
 * Backward sums over the batch, so the per-example terms are gone by the
 * time a parameter's gradient is formed. For a layer whose parameters act
 * through one op linear in them (Dense, Conv2D, Embedding), they can be
 * rebuilt from two tensors that backward does keep per example: the
 * layer's input a and the gradient gz at its linear output z. For Dense,
 * z_n = a_n W + b, so dL_n/dW = a_n^T gz_n (an outer product per example,
 * summed over any middle axes, one batched matmul) and dL_n/db = gz_n;
 * Conv2D's is conv2d_weight_grad on each example; Embedding's adds each
 * example's rows of gz at its indices into a [V, D] block of its own. The
 * forward runs once, the loss is the sum of the examples' losses (each
 * example's gradient at z is then that example's own), and one backward
 * gives every gz.
 *
 * Any other layer with parameters (normalisation, a custom module) falls
 * back to one forward and backward per example, which is always right and
 * is what the tests compare the fast path against. Layers without
 * parameters (activations, dropout, pooling, flatten) are assumed, as in
 * Opacus, to treat examples independently. A module with hooks takes the
 * loop too, so that its hooks see what they would see in its forward.
 */
#include "nn_internal.h"

#include <string.h>

/* Layers of the fast path held on the stack; deeper models allocate. */
#define INLINE_LAYERS 32

/* What one layer of the fast path recorded. */
typedef struct layer_record {
    nb__linear_parts parts;
    nb_tensor *a, *z;
} layer_record;

/* *x may be replaced by the input the layer's op really sees (Conv2D's
 * "same" padding with an odd total adds a row or column). */
static bool linear_parts(nb_module *layer, nb_tensor **x, nb__linear_parts *p) {
    return nb__dense_parts(layer, p) || nb__conv2d_parts(layer, x, p) || nb__embedding_parts(layer, p);
}

/* The layers of m in order: a Sequential's, or m itself. */
static int num_layers(nb_module *m) { return nb__is_sequential(m) ? nb_sequential_len(m) : 1; }
static nb_module *layer_at(nb_module *m, int i) { return nb__is_sequential(m) ? nb_sequential_at(m, i) : m; }

/* Whether every layer with parameters has a rule (Dense, Conv2D, Embedding,
 * built). Checked on the layer types alone, before any forward. */
static bool fast_path_applies(nb_module *m) {
    /* a module with hooks is run as it is, hooks and all, by the loop: the
     * fast path computes the layers of a rule from their parts */
    if (m->hooks) return false;
    for (int i = 0; i < num_layers(m); i++) {
        nb_module *layer = layer_at(m, i);
        if (layer->hooks) return false;
        int count = 0;
        nb_module_parameters(layer, &count);
        nb__linear_parts p;
        if (count > 0 && !nb__dense_parts(layer, &p) && !nb__embedding_parts(layer, &p) &&
            !nb__conv2d_parts(layer, NULL, &p))
            return false;
    }
    return true;
}

/* Each example's loss: the mean of its unreduced loss elements, so that the
 * mean over the batch is the NB_REDUCE_MEAN loss. */
static nb_tensor *per_example_loss(const char *who, nb_reduced_loss_fn loss, nb_tensor *pred,
                                   nb_tensor *y, int64_t n) {
    nb_tensor *l = loss(pred, y, NB_REDUCE_NONE);
    if (!l) return NULL;
    if (nb_ndim(l) < 1 || nb_dim(l, 0) != n) {
        char b[96];
        nb_set_error("%s: the loss without reduction returned shape %s, not one value or more per "
                     "example of %lld", who, nb_shape_str(nb_ndim(l), nb_shape(l), b, sizeof b),
                     (long long)n);
        return NULL;
    }
    if (nb_ndim(l) == 1) return l;
    return nb_mean(nb_reshape(l, NB_SHAPE(n, -1)), NB_AXES(1), false);
}

/* The per-example gradients of one layer's parameters, from a and gz. */
static bool layer_grads(const layer_record *r, nb_tensor *gz, int64_t n, nb_tensor **gw, nb_tensor **gb) {
    const nb__linear_parts *p = &r->parts;
    nb_tensor *a = r->a;
    switch (p->kind) {
    case NB__LINEAR_DENSE: {
        int64_t in = nb_dim(p->weight, 0), out = nb_dim(p->weight, 1);
        nb_tensor *a3 = nb_reshape(a, NB_SHAPE(n, -1, in)), *g3 = nb_reshape(gz, NB_SHAPE(n, -1, out));
        *gw = nb_matmul(nb_transpose(a3, 1, 2), g3); /* [n, in, out] */
        *gb = nb_sum(g3, NB_AXES(1), false);         /* [n, out] */
        break;
    }
    case NB__LINEAR_CONV2D:
    case NB__LINEAR_EMBEDDING: {
        /* one op per example: conv2d's weight gradient, or example k's rows
         * of gz added at its indices into a [V, D] block of its own (index
         * values stay exact in float, which an index shifted by k·V would
         * not beyond 2^24) */
        nb_tensor *rows_inline[INLINE_LAYERS], **rows = rows_inline;
        if (n > INLINE_LAYERS && !(rows = nb_malloc((size_t)n * sizeof *rows))) {
            nb_set_error("nb_per_sample_grads: out of memory");
            return false;
        }
        int64_t d = nb_dim(p->weight, -1);
        for (int64_t k = 0; k < n; k++) {
            nb_tensor *ak = nb_slice(a, 0, k, k + 1, 1), *gk = nb_slice(gz, 0, k, k + 1, 1);
            rows[k] = p->kind == NB__LINEAR_CONV2D
                          ? nb_conv2d_weight_grad(ak, gk, p->kh, p->kw, &p->conv)
                          : nb_index_add(nb_zeros_like(p->weight), 0, nb_reshape(ak, NB_SHAPE(-1)),
                                         nb_reshape(gk, NB_SHAPE(-1, d)));
        }
        *gw = nb_stack((int)n, rows, 0);
        if (rows != rows_inline) nb_free(rows);
        /* conv2d's bias: [n, filters] */
        *gb = p->bias ? nb_sum(gz, NB_AXES(2, 3), false) : NULL;
        break;
    }
    }
    return *gw && (*gb || !p->bias);
}

/* The index of t among the parameters, or -1. */
static int param_index(nb_tensor *const *params, int count, const nb_tensor *t) {
    for (int i = 0; i < count; i++)
        if (params[i] == t) return i;
    return -1;
}

static bool fast_path(const char *who, nb_module *m, nb_reduced_loss_fn loss, nb_tensor *x, nb_tensor *y,
                      int64_t n, nb_tensor *const *params, int count, nb_tensor **grads,
                      nb_tensor **losses) {
    int nlayers = num_layers(m), nrec = 0;
    layer_record rec_inline[INLINE_LAYERS], *rec = rec_inline;
    nb_tensor *z_inline[INLINE_LAYERS], **zs = z_inline, *gz_inline[INLINE_LAYERS], **gz = gz_inline;
    if (nlayers > INLINE_LAYERS) {
        rec = nb_malloc((size_t)nlayers * sizeof *rec);
        zs = nb_malloc((size_t)nlayers * 2 * sizeof *zs);
        gz = zs ? zs + nlayers : NULL;
        if (!rec || !zs) {
            nb_free(rec);
            nb_free(zs);
            nb_set_error("%s: out of memory", who);
            return false;
        }
    }
    nb_tensor *h = x;
    for (int i = 0; i < nlayers && h; i++) {
        nb_module *layer = layer_at(m, i);
        layer_record *r = &rec[nrec];
        if (!linear_parts(layer, &h, &r->parts)) {
            h = nb_module_forward(layer, h);
            continue;
        }
        const nb__linear_parts *p = &r->parts;
        if (!h) break; /* the padding failed: its message is set */
        r->a = h;
        switch (p->kind) {
        case NB__LINEAR_DENSE: r->z = nb_add(nb_matmul(h, p->weight), p->bias); break;
        case NB__LINEAR_CONV2D: r->z = nb_conv2d(h, p->weight, p->bias, &p->conv); break;
        case NB__LINEAR_EMBEDDING: r->z = nb_embedding(p->weight, h); break;
        }
        h = r->z ? p->act(r->z) : NULL;
        nrec++;
    }
    nb_tensor *per = h ? per_example_loss(who, loss, h, y, n) : NULL;
    nb_tensor *total = nb_sum(per, NB_ALL, false);
    /* a layer whose parameters are all frozen, before any that learns, has
     * a z without graph: it is left out */
    int nz = 0;
    for (int k = 0; k < nrec; k++)
        if (nb_requires_grad(rec[k].z)) zs[nz++] = rec[k].z;
    bool ok = total && (nz == 0 || nb_grad(1, &total, NULL, nz, zs, gz,
                                           &(nb_grad_opts){.materialize_grads = true}) == 0);
    for (int k = 0, j = 0; ok && k < nrec; k++) {
        if (!nb_requires_grad(rec[k].z)) continue;
        nb_tensor *gw = NULL, *gb = NULL;
        ok = layer_grads(&rec[k], gz[j++], n, &gw, &gb);
        int iw = ok ? param_index(params, count, rec[k].parts.weight) : -1;
        int ib = ok && gb ? param_index(params, count, rec[k].parts.bias) : -1;
        if (iw >= 0 && nb_requires_grad(params[iw])) grads[iw] = gw;
        if (ib >= 0 && nb_requires_grad(params[ib])) grads[ib] = gb;
    }
    if (ok && losses) *losses = nb_detach(per);
    if (rec != rec_inline) {
        nb_free(rec);
        nb_free(zs);
    }
    return ok;
}

/* One forward and backward per example: the reference, and the path for
 * layers without a rule. */
static bool loop_path(const char *who, nb_module *m, nb_reduced_loss_fn loss, nb_tensor *x, nb_tensor *y,
                      int64_t n, nb_tensor *const *params, int count, nb_tensor **grads,
                      nb_tensor **losses) {
    int nwant = 0;
    nb_tensor *want_inline[64], **want = want_inline, *g_inline[64], **g = g_inline;
    if (count > 64) {
        want = nb_malloc((size_t)count * 2 * sizeof *want);
        if (!want) {
            nb_set_error("%s: out of memory", who);
            return false;
        }
        g = want + count;
    }
    for (int i = 0; i < count; i++) {
        int64_t shape[NB_MAX_DIMS + 1] = {n};
        memcpy(shape + 1, nb_shape(params[i]), (size_t)nb_ndim(params[i]) * sizeof *shape);
        grads[i] = nb_requires_grad(params[i]) ? nb_zeros(nb_ndim(params[i]) + 1, shape) : NULL;
        if (grads[i]) want[nwant++] = params[i];
    }
    nb_tensor *all = losses ? nb_zeros(NB_SHAPE(n)) : NULL;
    bool ok = !losses || all;
    for (int64_t k = 0; k < n && ok; k++) {
        nb_scope_begin();
        nb_tensor *pred = nb_module_forward(m, nb_slice(x, 0, k, k + 1, 1));
        nb_tensor *l = pred ? per_example_loss(who, loss, pred, nb_slice(y, 0, k, k + 1, 1), 1) : NULL;
        ok = l && (nwant == 0 || nb_grad(1, &l, NULL, nwant, want, g,
                                         &(nb_grad_opts){.materialize_grads = true}) == 0);
        for (int i = 0, j = 0; ok && i < count; i++) {
            if (!grads[i]) continue;
            int64_t size = nb_numel(params[i]);
            memcpy(nb_data_mut(grads[i]) + k * size, nb_data(g[j++]), (size_t)size * sizeof(float));
        }
        if (ok && all) nb_data_mut(all)[k] = nb_item(l);
        nb_scope_end();
    }
    if (ok && losses) *losses = all;
    if (want != want_inline) nb_free(want);
    return ok;
}

int nb_per_sample_grads(nb_module *m, nb_reduced_loss_fn loss, nb_tensor *x, nb_tensor *y,
                        nb_tensor **grads, nb_tensor **losses, const nb_per_sample_opts *opts) {
    const char *who = "nb_per_sample_grads";
    if (losses) *losses = NULL;
    if (!m || !x || !y) return -1;
    if (!loss || !grads) {
        nb_set_error("%s: needs a loss function and an array for the gradients", who);
        return -1;
    }
    if (nb_ndim(x) < 1 || nb_ndim(y) < 1 || nb_dim(x, 0) != nb_dim(y, 0)) {
        char b1[96], b2[96];
        nb_set_error("%s: x %s and y %s must have the same number of examples (axis 0)", who,
                     nb_shape_str(nb_ndim(x), nb_shape(x), b1, sizeof b1),
                     nb_shape_str(nb_ndim(y), nb_shape(y), b2, sizeof b2));
        return -1;
    }
    int count = 0;
    nb_tensor **params = nb__module_parameters(who, m, &count);
    if (!params && count == 0 && nb_error()) return -1;
    for (int i = 0; i < count; i++) {
        grads[i] = NULL;
        if (nb_ndim(params[i]) + 1 > NB_MAX_DIMS) {
            nb_set_error("%s: parameter %s has %d dimensions; with the batch axis that is more than %d",
                         who, nb_module_parameter_name(m, i), nb_ndim(params[i]), NB_MAX_DIMS);
            return -1;
        }
    }
    int64_t n = nb_dim(x, 0);
    nb_per_sample_opts o = opts ? *opts : (nb_per_sample_opts){0};
    nb_scope_begin();
    bool was = nb_set_grad_enabled(true);
    nb_tensor *l = NULL;
    bool ok = !o.loop && fast_path_applies(m)
                  ? fast_path(who, m, loss, x, y, n, params, count, grads, losses ? &l : NULL)
                  : loop_path(who, m, loss, x, y, n, params, count, grads, losses ? &l : NULL);
    nb_set_grad_enabled(was);
    /* A lazy layer built by this forward made parameters the list above
     * did not have, and the caller's array has no room for them. */
    int now = 0;
    nb_module_parameters(m, &now);
    if (ok && now != count) {
        nb_set_error("%s: a layer made its parameters during this call (a layer without input_dim "
                     "on its first input); run one forward first", who);
        ok = false;
    }
    for (int i = 0; i < count; i++) {
        if (!ok) grads[i] = NULL;
        else nb_escape(grads[i]);
    }
    if (ok && losses) *losses = nb_escape(l);
    nb_scope_end();
    return ok ? 0 : -1;
}
