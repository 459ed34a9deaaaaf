/* attention.c — scaled dot-product attention, the core of a transformer:
 *
 *   attention(q, k, v) = softmax(scale · q·kᵀ + mask) · v
 *   q [..., Tq, D], k [..., Tk, D], v [..., Tk, Dv] -> [..., Tq, Dv]
 *
 * It is a composite of three ops: a matmul with k transposed by the GEMM's
 * flags (no copy of k), one fused op for scale, mask and softmax, and a
 * matmul by v. The two products already have their gradients (linalg.c);
 * the fused op is here because the step between them, done with separate
 * ops, makes four passes and three [..., Tq, Tk] temporaries (scale, add
 * mask, softmax) where one pass and one output do, and, written with
 * where() for the causal mask, leaves the masked scores in the graph.
 *
 * masked_softmax(s, mask) = softmax(scale·s + mask) over the last axis,
 * with key j hidden from query i when causal and j > i (PyTorch's is_causal:
 * the lower triangle kept, aligned at the top left). Its gradient, with dz = y·(g − sum(g·y)) the
 * gradient of softmax at z = scale·s + mask:
 *
 *   s: scale·dz       mask: dz (summed over the axes it was broadcast along)
 *
 * written with ops on the saved output y, so it is differentiable again.
 * A row whose every key is hidden (all −inf) has no softmax; PyTorch gives
 * NaN there. nabla gives weights of 0, so the row's attention output is 0
 * and no gradient flows through it: a padded query attends to nothing
 * instead of poisoning the batch. Rows are independent, so they are spread
 * over the thread pool with results identical at any thread count.
 */
#include "ops_internal.h"
#include "parallel.h"
#include "vmath_internal.h"

/* ---- masked_softmax: the fused op ----------------------------------------------------
 * scores [..., Tq, Tk], mask NULL or of the same shape -> weights, same shape.
 * Attributes: 0 = scale, 1 = causal. */

typedef struct msm_job {
    const float *s, *mask;
    float *y;
    int64_t tq, tk;
    float scale;
    bool causal;
} msm_job;

/* Sums along a row in eight float lanes, lane l adding the elements
 * c ≡ l (mod 8) in order, the lanes then added in lane order and the last
 * n mod 8 elements after them: a fixed order, so the same bits whatever
 * the vector width (and the thread count: a row is never split). A plain
 * sum in order is a chain of dependent adds, one per element. With GCC and
 * clang the lanes are one generic vector of 8 floats. */
#if defined(__GNUC__)
typedef float lanes8 __attribute__((vector_size(32)));
#endif

/* sum over c < n of a[c]·b[c], or of a[c] when b is NULL */
static inline float row_sum(const float *a, const float *b, int64_t n) {
    float l8[8] = {0};
    int64_t c = 0;
#if defined(__GNUC__)
    lanes8 acc = {0};
    for (; c + 8 <= n; c += 8) {
        lanes8 va, vb;
        memcpy(&va, a + c, sizeof va);
        if (b) {
            memcpy(&vb, b + c, sizeof vb);
            va = va * vb;
        }
        acc += va;
    }
    memcpy(l8, &acc, sizeof l8);
#else
    for (; c + 8 <= n; c += 8)
        for (int l = 0; l < 8; l++) l8[l] += b ? a[c + l] * b[c + l] : a[c + l];
#endif
    float sum = 0;
    for (int l = 0; l < 8; l++) sum += l8[l];
    for (; c < n; c++) sum += b ? a[c] * b[c] : a[c];
    return sum;
}

/* The scores first (a loop that vectorises), their maximum in lanes (exact
 * in any order), the exponentials in a loop of their own, free of calls and
 * branches (vmath_internal.h), then the sum in lanes as above. */
NB_VM_MULTIARCH(msm_loop, (const msm_job *j, int64_t begin, int64_t end), (j, begin, end), {
    for (int64_t r = begin; r < end; r++) {
        const float *s = j->s + r * j->tk, *m = j->mask ? j->mask + r * j->tk : NULL;
        float *restrict y = j->y + r * j->tk;
        /* keys past the query's position are hidden when causal */
        int64_t n = j->causal ? (r % j->tq) + 1 : j->tk;
        if (n > j->tk) n = j->tk;
        if (m) {
            for (int64_t c = 0; c < n; c++) y[c] = j->scale * s[c] + m[c];
        } else {
            for (int64_t c = 0; c < n; c++) y[c] = j->scale * s[c];
        }
        float mx8[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY,
                        -INFINITY, -INFINITY, -INFINITY, -INFINITY};
        int64_t c = 0;
        for (; c + 8 <= n; c += 8)
            for (int l = 0; l < 8; l++) mx8[l] = y[c + l] > mx8[l] ? y[c + l] : mx8[l];
        float mx = -INFINITY;
        for (int l = 0; l < 8; l++) mx = mx8[l] > mx ? mx8[l] : mx;
        for (; c < n; c++) mx = y[c] > mx ? y[c] : mx;
        if (mx == -INFINITY) { /* every key hidden: weights 0 (see the top) */
            memset(y, 0, sizeof(float) * (size_t)j->tk);
            continue;
        }
        for (c = 0; c < n; c++) y[c] = nb__expf(y[c] - mx);
        float inv = 1.0f / row_sum(y, NULL, n);
        for (c = 0; c < n; c++) y[c] *= inv;
        for (c = n; c < j->tk; c++) y[c] = 0;
    }
})

static void msm_rows(void *ctx, int64_t begin, int64_t end) { msm_loop(ctx, begin, end); }

/* ---- softmax_grad: masked_softmax's backward as one op --------------------------------
 * y (the weights), g, same shape [..., Tk] -> scale·y·(g − sum(g·y, −1)).
 * Written with ops it was five passes over the [B,H,Tq,Tk] weights and four
 * temporaries (mul, sum, sub, mul, then the scale). Its own derivatives,
 * written with ops for the order after, with s = sum(g·y) and u the
 * gradient arriving (the map in g is softmax's symmetric Jacobian again):
 *   g: scale·y·(u − sum(u·y))      y: scale·(u·(g − s) − g·sum(u·y))
 * Attribute 0: scale. */

typedef struct smg_job {
    const float *y, *g;
    float *out;
    int64_t tk;
    float scale;
} smg_job;

NB_VM_MULTIARCH(smg_loop, (const smg_job *j, int64_t begin, int64_t end), (j, begin, end), {
    for (int64_t r = begin; r < end; r++) {
        const float *y = j->y + r * j->tk, *g = j->g + r * j->tk;
        float *out = j->out + r * j->tk;
        float s = row_sum(g, y, j->tk);
        for (int64_t c = 0; c < j->tk; c++) out[c] = j->scale * (y[c] * (g[c] - s));
    }
})

static void smg_rows(void *ctx, int64_t begin, int64_t end) { smg_loop(ctx, begin, end); }

static nb_tensor *softmax_grad(nb_tensor *y, nb_tensor *g, float scale);

/* The rule above for a gradient (or tangent) u arriving at the output. */
static void softmax_grad_adjoint(nb_tensor *node, nb_tensor *u, bool want_y, bool want_g, nb_tensor **gx) {
    nb_tensor *y = nb_saved(node, 0), *g = nb_saved(node, 1);
    float scale = (float)nb_attr(node, 0);
    nb_tensor *uy = nb_sum(nb_mul(u, y), NB_AXES(-1), true);
    if (want_y) {
        nb_tensor *s = nb_sum(nb_mul(g, y), NB_AXES(-1), true);
        gx[0] = nb_mul_scalar(nb_sub(nb_mul(u, nb_sub(g, s)), nb_mul(g, uy)), scale);
    }
    if (want_g) gx[1] = nb_mul_scalar(nb_mul(y, nb_sub(u, uy)), scale);
}
static void softmax_grad_backward(nb_tensor *node, nb_tensor *u, nb_tensor **gx) {
    softmax_grad_adjoint(node, u, nb_needs_input_grad(node, 0), nb_needs_input_grad(node, 1), gx);
}
/* Forward mode, the product rule: d out = scale·(dy·(g − s) − y·sum(g·dy))
 * + scale·y·(dg − sum(dg·y)), the first term the y part of the adjoint
 * read forwards (its Jacobian transposed: −g·sum(u·y) becomes −y·sum(g·dy)),
 * the second the g part, which is symmetric. */
static nb_tensor *softmax_grad_jvp(nb_tensor *node, nb_tensor *const *t) {
    nb_tensor *y = nb_saved(node, 0), *g = nb_saved(node, 1), *dy = t[0], *dg = t[1], *out = NULL;
    float scale = (float)nb_attr(node, 0);
    if (dy) {
        nb_tensor *s = nb_sum(nb_mul(g, y), NB_AXES(-1), true);
        nb_tensor *gdy = nb_sum(nb_mul(g, dy), NB_AXES(-1), true);
        out = nb_mul_scalar(nb_sub(nb_mul(dy, nb_sub(g, s)), nb_mul(y, gdy)), scale);
    }
    if (dg) {
        nb_tensor *part[2] = {NULL, NULL};
        softmax_grad_adjoint(node, dg, false, true, part);
        out = out ? nb_add(out, part[1]) : part[1];
    }
    return out;
}
static const nb_op softmax_grad_op = {"softmax_grad", softmax_grad_backward, softmax_grad_jvp};

static nb_tensor *softmax_grad(nb_tensor *y, nb_tensor *g, float scale) {
    if (!y || !g) return NULL;
    nb_tensor *out = nb_empty_like(y);
    if (!out) return NULL;
    int64_t tk = nb_dim(y, -1), rows = tk ? nb_numel(y) / tk : 0;
    smg_job job = {.y = nb_data(y), .g = nb_data(g), .out = nb_data_mut(out), .tk = tk, .scale = scale};
    if (rows > 0) nb_parallel_for(rows, 4096 / (tk + 1) + 1, smg_rows, &job);
    nb_tensor *in[2] = {y, g};
    out = nb_record(out, &softmax_grad_op, 2, in);
    nb_save(out, y);
    nb_save(out, g);
    nb_set_attr(out, 0, scale);
    return out;
}

/* masked_softmax's gradient: scale·dz for the scores, dz for the mask,
 * dz = y·(g − sum(g·y)) (softmax_grad above). */
static void masked_softmax_backward(nb_tensor *node, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *y = nb_saved(node, 0);
    float scale = (float)nb_attr(node, 0);
    bool want_mask = nb_num_inputs(node) > 1 && nb_needs_input_grad(node, 1);
    if (!want_mask) {
        if (nb_needs_input_grad(node, 0)) gx[0] = softmax_grad(y, g, scale);
        return;
    }
    nb_tensor *dz = softmax_grad(y, g, 1.0f);
    if (nb_needs_input_grad(node, 0)) gx[0] = nb_mul_scalar(dz, scale);
    gx[1] = dz;
}
/* Forward mode: with dz = scale·ds + dm, dy = y·(dz - sum(dz·y)), softmax's
 * symmetric Jacobian applied to dz. */
static nb_tensor *masked_softmax_jvp(nb_tensor *node, nb_tensor *const *t) {
    nb_tensor *y = nb_saved(node, 0), *dm = nb_num_inputs(node) > 1 ? t[1] : NULL;
    nb_tensor *dz = t[0] ? nb_mul_scalar(t[0], (float)nb_attr(node, 0)) : NULL;
    if (dm) dz = dz ? nb_add(dz, dm) : dm;
    return dz ? nb_mul(y, nb_sub(dz, nb_sum(nb_mul(dz, y), NB_AXES(-1), true))) : NULL;
}
static const nb_op masked_softmax_op = {"masked_softmax", masked_softmax_backward, masked_softmax_jvp};

/* The fused op proper; the mask, when given, already has the scores' shape. */
static nb_tensor *masked_softmax(nb_tensor *s, nb_tensor *mask, bool causal, float scale) {
    nb_tensor *y = nb_empty_like(s);
    if (!y) return NULL;
    int64_t tk = nb_dim(s, -1), rows = tk ? nb_numel(s) / tk : 0;
    msm_job job = {.s = nb_data(s), .mask = mask ? nb_data(mask) : NULL, .y = nb_data_mut(y),
                   .tq = nb_dim(s, -2), .tk = tk, .scale = scale, .causal = causal};
    if (rows > 0) nb_parallel_for(rows, 4096 / (tk + 1) + 1, msm_rows, &job);
    nb_tensor *in[2] = {s, mask};
    y = nb_record(y, &masked_softmax_op, mask ? 2 : 1, in);
    nb_save(y, y);
    nb_set_attr(y, 0, scale);
    nb_set_attr(y, 1, causal);
    return y;
}

/* Whether mask broadcasts to the scores' shape (nd axes, shape); a message
 * naming who when it does not. */
static bool mask_fits(const char *who, const nb_tensor *mask, int nd, const int64_t *shape) {
    int mnd = nb_ndim(mask);
    bool fits = mnd <= nd;
    for (int i = 0; fits && i < mnd; i++) {
        int64_t m = nb_shape(mask)[mnd - 1 - i], s = shape[nd - 1 - i];
        fits = m == s || m == 1;
    }
    if (!fits) {
        char ss[NB_SHAPE_BUF];
        nb_set_error("%s: the mask %s does not broadcast to the scores %s", who, SHAPE(mask),
                     nb_shape_str(nd, shape, ss, sizeof ss));
    }
    return fits;
}

/* The fused op after the checks, the mask broadcast to the scores' shape
 * first (the expand is recorded, so the mask's gradient is summed back). */
static nb_tensor *masked_softmax_any(nb_tensor *s, nb_tensor *mask, bool causal, float scale) {
    if (!s) return NULL;
    nb_tensor *m = mask && !nb_same_shape(mask, s) ? nb_expand(mask, nb_ndim(s), nb_shape(s)) : mask;
    if (mask && !m) return NULL;
    return masked_softmax(s, m, causal, scale);
}

nb_tensor *nb_masked_softmax(nb_tensor *scores, nb_tensor *mask, bool causal, float scale) {
    const char *who = "nb_masked_softmax";
    if (!scores) return NULL;
    if (nb_ndim(scores) < 2 || !isfinite(scale)) {
        nb_set_error("%s: scores %s must have at least 2 axes [..., Tq, Tk] and scale %g be finite",
                     who, SHAPE(scores), (double)scale);
        return NULL;
    }
    if (mask && !mask_fits(who, mask, nb_ndim(scores), nb_shape(scores))) return NULL;
    nb_composite_begin();
    return nb_composite_end(masked_softmax_any(scores, mask, causal, scale));
}

/* ---- scaled dot-product attention --------------------------------------------------- */

nb_tensor *nb_scaled_dot_product_attention(nb_tensor *q, nb_tensor *k, nb_tensor *v,
                                           nb_tensor *mask, bool causal, float scale) {
    const char *who = "nb_scaled_dot_product_attention";
    if (!q || !k || !v) return NULL;
    int nd = nb_ndim(q);
    bool ok = nd >= 2 && nb_ndim(k) == nd && nb_ndim(v) == nd && isfinite(scale) && scale >= 0;
    for (int d = 0; ok && d < nd - 2; d++)
        ok = nb_shape(k)[d] == nb_shape(q)[d] && nb_shape(v)[d] == nb_shape(q)[d];
    ok = ok && nb_dim(k, -1) == nb_dim(q, -1) && nb_dim(v, -2) == nb_dim(k, -2);
    if (!ok) {
        nb_set_error("%s: q %s, k %s, v %s, scale %g: expected q [..., Tq, D], k [..., Tk, D] and "
                     "v [..., Tk, Dv] with the same leading axes, and a scale >= 0 (0: 1/sqrt(D))",
                     who, SHAPE(q), SHAPE(k), SHAPE(v), (double)scale);
        return NULL;
    }
    int64_t d = nb_dim(q, -1);
    if (scale == 0) scale = d > 0 ? (float)(1.0 / sqrt((double)d)) : 1.0f;
    int64_t sshape[NB_MAX_DIMS]; /* the scores' shape [..., Tq, Tk] */
    memcpy(sshape, nb_shape(q), sizeof(int64_t) * (size_t)nd);
    sshape[nd - 1] = nb_dim(k, -2);
    if (mask && !mask_fits(who, mask, nd, sshape)) return NULL;
    nb_composite_begin();
    nb_tensor *s = nb_matmul_t(q, k, false, true);
    return nb_composite_end(nb_matmul(masked_softmax_any(s, mask, causal, scale), v));
}
