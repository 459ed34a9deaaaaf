/* layers_attention.c — the transformer's layers: multi-head self-attention
 * and the pre-LayerNorm transformer block of GPT-2, laid out like the usual
 * PyTorch code so that a checkpoint's names read the same ("qkv.weight",
 * "proj.bias", "ln1.weight", "fc.weight", "out.bias"). Linear weights are
 * stored [in, out] as everywhere in nabla (PyTorch stores [out, in]).
 *
 * Self-attention over x [B,T,C] with H heads of D = C/H:
 *   [q k v] = x·Wqkv + bqkv              one Linear(C, 3C), one GEMM
 *   q, k, v -> [B,H,T,D]                 a permute of [B,T,3,H,D]
 *   a = attention(q, k, v)               ops/attention.c, causal or not
 *   y = merge(a)·Wproj + bproj           [B,H,T,D] -> [B,T,C], Linear(C, C)
 * The block:
 *   x = x + attn(ln1(x));  x = x + out(gelu(fc(ln2(x))))   fc: C -> 4C, out: 4C -> C
 * Everything is made of ops already gradchecked; the heads are split by one
 * permute (a copy) rather than three strided views, which nabla's
 * contiguous tensors do not have.
 */
#include "nn_internal.h"

#include <stdio.h>

/* The multi-head self-attention both layers run, on their own qkv and proj. */
static nb_tensor *self_attention(const char *who, nb_module *qkv, nb_module *proj, int64_t dim,
                                 int heads, bool causal, nb_tensor *x) {
    if (!x) return NULL;
    if (nb_ndim(x) != 3 || nb_dim(x, 2) != dim) {
        char buf[96];
        nb_set_error("%s: expects x [B,T,%lld], got %s", who, (long long)dim,
                     nb_shape_str(nb_ndim(x), nb_shape(x), buf, sizeof buf));
        return NULL;
    }
    int64_t b = nb_dim(x, 0), t = nb_dim(x, 1), d = dim / heads;
    nb_tensor *h = nb_reshape(nb_module_forward(qkv, x), NB_SHAPE(b, t, 3, heads, d));
    h = nb_permute(h, (const int[]){2, 0, 3, 1, 4}); /* [3,B,H,T,D] */
    nb_tensor *part[3];
    for (int i = 0; i < 3; i++) part[i] = nb_reshape(nb_slice(h, 0, i, i + 1, 1), NB_SHAPE(b, heads, t, d));
    nb_tensor *a = nb_scaled_dot_product_attention(part[0], part[1], part[2], NULL, causal, 0.0f);
    a = nb_reshape(nb_permute(a, (const int[]){0, 2, 1, 3}), NB_SHAPE(b, t, dim));
    return nb_module_forward(proj, a);
}

static bool valid_sizes(const char *who, int64_t dim, int heads) {
    if (dim > 0 && heads > 0 && dim % heads == 0) return true;
    nb_set_error("%s: embed_dim %lld must be a positive multiple of num_heads %d", who, (long long)dim,
                 heads);
    return false;
}

/* ---- MultiHeadSelfAttention ------------------------------------------------------------- */

typedef struct mhsa {
    nb_module base;
    int64_t dim;
    int heads;
    bool causal;
    nb_module *qkv, *proj;
} mhsa;

static nb_tensor *mhsa_forward(nb_module *m, nb_tensor *x) {
    mhsa *a = (mhsa *)m;
    return self_attention("MultiHeadSelfAttention", a->qkv, a->proj, a->dim, a->heads, a->causal, x);
}

static const nb_module_type mhsa_type = {"MultiHeadSelfAttention", mhsa_forward, NULL};

nb_module *nb_multi_head_attention(int64_t embed_dim, int num_heads, bool causal) {
    const char *who = "nb_multi_head_attention";
    if (!valid_sizes(who, embed_dim, num_heads)) return NULL;
    mhsa *a = (mhsa *)nb__module_new(who, &mhsa_type, sizeof *a);
    if (!a) return NULL;
    a->dim = embed_dim;
    a->heads = num_heads;
    a->causal = causal;
    a->qkv = nb_module_add_child(&a->base, "qkv", nb_linear(embed_dim, 3 * embed_dim));
    a->proj = nb_module_add_child(&a->base, "proj", nb_linear(embed_dim, embed_dim));
    return nb_module_ok(&a->base);
}

/* ---- TransformerBlock --------------------------------------------------------------------- */

typedef struct block {
    nb_module base;
    int64_t dim;
    int heads;
    bool causal;
    nb_module *ln1, *qkv, *proj, *ln2, *fc, *out;
} block;

static nb_tensor *block_forward(nb_module *m, nb_tensor *x) {
    block *k = (block *)m;
    nb_tensor *a = self_attention("TransformerBlock", k->qkv, k->proj, k->dim, k->heads, k->causal,
                                  nb_module_forward(k->ln1, x));
    if (!a) return NULL;
    x = nb_add(x, a);
    nb_tensor *h = nb_gelu(nb_module_forward(k->fc, nb_module_forward(k->ln2, x)));
    return nb_add(x, nb_module_forward(k->out, h));
}

static const nb_module_type block_type = {"TransformerBlock", block_forward, NULL};

/* A LayerNorm over the last axis of size dim, built now rather than on its
 * first input, so that the block's parameters are all there (to count, to
 * give an optimizer, to load a checkpoint into) before any forward. */
static nb_module *layer_norm_of(int64_t dim) {
    nb_module *ln = nb_layer_norm_layer(1, 1e-5f);
    if (!ln) return NULL;
    bool was = nb_set_grad_enabled(false);
    nb_scope_begin();
    bool ok = nb_module_forward(ln, nb_zeros(NB_SHAPE(1, dim))) != NULL;
    nb_scope_end();
    nb_set_grad_enabled(was);
    if (ok) return ln;
    nb_module_free(ln);
    return NULL;
}

nb_module *nb_transformer_block(int64_t embed_dim, int num_heads, bool causal) {
    const char *who = "nb_transformer_block";
    if (!valid_sizes(who, embed_dim, num_heads)) return NULL;
    block *k = (block *)nb__module_new(who, &block_type, sizeof *k);
    if (!k) return NULL;
    k->dim = embed_dim;
    k->heads = num_heads;
    k->causal = causal;
    nb_module *m = &k->base;
    k->ln1 = nb_module_add_child(m, "ln1", layer_norm_of(embed_dim));
    k->qkv = nb_module_add_child(m, "qkv", nb_linear(embed_dim, 3 * embed_dim));
    k->proj = nb_module_add_child(m, "proj", nb_linear(embed_dim, embed_dim));
    k->ln2 = nb_module_add_child(m, "ln2", layer_norm_of(embed_dim));
    k->fc = nb_module_add_child(m, "fc", nb_linear(embed_dim, 4 * embed_dim));
    k->out = nb_module_add_child(m, "out", nb_linear(4 * embed_dim, embed_dim));
    return nb_module_ok(m);
}
