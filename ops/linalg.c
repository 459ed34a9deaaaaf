/* linalg.c — linear algebra: permute and transpose (copies that reorder the
 * axes) and matmul with NumPy's rules (1-D promotion, broadcast batches).
 *
 * Every matrix product, forward or backward, is one recorded op, "matmul",
 * computing op(A)·op(B) where op transposes or not according to two flags
 * kept as attributes. nb_gemm reads either layout directly, so a product by
 * a transpose never copies the transposed operand, and the backward of a
 * product is two products of the same op with other flags:
 *
 *   C = A·B      dA = g·Bᵀ   dB = Aᵀ·g      (then sum_to over broadcast batches)
 *
 * Because the backward is made of recorded ops, backward with create_graph
 * differentiates it again, to any order. The 1-D cases of nb_matmul are
 * reshapes (views) around that op, so they need no backward of their own.
 * The hot path of a dense layer, x[B,in]·W[in,out], is one gemm into the
 * output forward and one gemm per gradient backward, with no other copy.
 */
#include "ops_internal.h"

#include "gemm.h"
#include "parallel.h"

/* ---- permute and transpose ----------------------------------------------------
 * permute: x (d0, ..., dn-1) -> out (d[perm[0]], ..., d[perm[n-1]]), a copy.
 * Its gradient is g permuted back with the inverse permutation, itself a
 * permute, so every derivative of it is a permute too. */

enum { TILE = 32 };

/* out[i0..] = in[...] with out's axes in perm order. Axes of size 1 are
 * dropped and runs of axes that stay neighbours in the same order are fused,
 * so a permute that moves whole rows becomes row copies, and the rest is a
 * tiled 2-D transpose between the axis contiguous in the input and the one
 * contiguous in the output, repeated over the remaining axes. */
static void permute_copy(const float *in, float *out, int ndim, const int64_t *shape,
                         const int *perm) {
    int64_t istride[NB_MAX_DIMS], size[NB_MAX_DIMS], is[NB_MAX_DIMS], os[NB_MAX_DIMS];
    int64_t numel = 1;
    nb_strides(ndim, shape, istride);
    int r = 0;
    for (int d = 0; d < ndim; d++) {
        int64_t s = shape[perm[d]], st = istride[perm[d]];
        numel *= s;
        if (s == 1) continue;
        if (r > 0 && is[r - 1] == st * s) {
            size[r - 1] *= s;
            is[r - 1] = st;
        } else {
            size[r] = s;
            is[r] = st;
            r++;
        }
    }
    if (numel == 0) return;
    if (r == 0) {
        out[0] = in[0];
        return;
    }
    nb_strides(r, size, os);
    int last = r - 1, j = -1; /* j: the axis contiguous in the input, if not last */
    if (is[last] != 1)
        for (int d = 0; d < last; d++)
            if (is[d] == 1) j = d;
    int outer[NB_MAX_DIMS], no = 0;
    for (int d = 0; d < last; d++)
        if (d != j) outer[no++] = d;
    int64_t inner = size[last] * (j >= 0 ? size[j] : 1), count = numel / inner;
    int64_t idx[NB_MAX_DIMS] = {0}, bi = 0, bo = 0;
    for (int64_t c = 0; c < count; c++) {
        if (j < 0 && is[last] == 1) {
            memcpy(out + bo, in + bi, sizeof(float) * (size_t)size[last]);
        } else if (j < 0) { /* unreachable: some axis of size > 1 has stride 1 */
            for (int64_t l = 0; l < size[last]; l++) out[bo + l] = in[bi + l * is[last]];
        } else {
            int64_t nj = size[j], nl = size[last], sl = is[last], sj = os[j];
            for (int64_t jb = 0; jb < nj; jb += TILE)
                for (int64_t lb = 0; lb < nl; lb += TILE) {
                    int64_t je = jb + TILE < nj ? jb + TILE : nj, le = lb + TILE < nl ? lb + TILE : nl;
                    for (int64_t jj = jb; jj < je; jj++) {
                        const float *src = in + bi + jj;
                        float *dst = out + bo + jj * sj;
                        for (int64_t l = lb; l < le; l++) dst[l] = src[l * sl];
                    }
                }
        }
        for (int t = no - 1; t >= 0; t--) {
            int d = outer[t];
            idx[t]++;
            bi += is[d];
            bo += os[d];
            if (idx[t] < size[d]) break;
            bi -= idx[t] * is[d];
            bo -= idx[t] * os[d];
            idx[t] = 0;
        }
    }
}

static void permute_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    int n = nb_ndim(out), inv[NB_MAX_DIMS];
    for (int d = 0; d < n; d++) inv[(int)nb_attr(out, d)] = d;
    gx[0] = nb_permute(g, inv);
}
static nb_tensor *permute_jvp(nb_tensor *out, nb_tensor *const *t) {
    int n = nb_ndim(out), perm[NB_MAX_DIMS];
    for (int d = 0; d < n; d++) perm[d] = (int)nb_attr(out, d);
    return t[0] ? nb_permute(t[0], perm) : NULL;
}
static const nb_op permute_op = {"permute", permute_backward, permute_jvp};

nb_tensor *nb_permute(nb_tensor *x, const int *perm) {
    if (!x) return NULL;
    int n = nb_ndim(x), p[NB_MAX_DIMS];
    if (n > 0 && !perm) {
        nb_set_error("nb_permute: the permutation is NULL for %s", SHAPE(x));
        return NULL;
    }
    bool seen[NB_MAX_DIMS] = {false}, ok = true;
    for (int d = 0; d < n; d++) {
        p[d] = perm[d] < 0 ? perm[d] + n : perm[d];
        if (p[d] < 0 || p[d] >= n || seen[p[d]]) ok = false;
        else seen[p[d]] = true;
    }
    if (!ok) {
        char buf[NB_SHAPE_BUF];
        size_t len = 0;
        buf[0] = '\0';
        for (int d = 0; d < n && len < sizeof buf; d++)
            len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%d", d ? "," : "", perm[d]);
        nb_set_error("nb_permute: (%s) is not a permutation of the %d axes of %s", buf, n,
                     SHAPE(x));
        return NULL;
    }
    int64_t shape[NB_MAX_DIMS];
    for (int d = 0; d < n; d++) shape[d] = nb_shape(x)[p[d]];
    nb_tensor *out = nb__empty_for("nb_permute", n, shape);
    if (!out) return NULL;
    permute_copy(nb_data(x), nb_data_mut(out), n, nb_shape(x), p);
    out = nb_record(out, &permute_op, 1, &x);
    for (int d = 0; d < n; d++) nb_set_attr(out, d, p[d]);
    return out;
}

/* transpose: x (..., d_i, ..., d_j, ...) -> out (..., d_j, ..., d_i, ...) */
nb_tensor *nb_transpose(nb_tensor *x, int axis0, int axis1) {
    if (!x) return NULL;
    int n = nb_ndim(x), a0 = axis0 < 0 ? axis0 + n : axis0, a1 = axis1 < 0 ? axis1 + n : axis1;
    if (a0 < 0 || a0 >= n || a1 < 0 || a1 >= n) {
        nb_set_error("nb_transpose: axes %d and %d do not both exist in %s", axis0, axis1,
                     SHAPE(x));
        return NULL;
    }
    int perm[NB_MAX_DIMS];
    for (int d = 0; d < n; d++) perm[d] = d;
    perm[a0] = a1;
    perm[a1] = a0;
    return nb_permute(x, perm);
}

/* ---- the matmul op ----------------------------------------------------------------
 * a (..., m, k) [or (..., k, m) when ta], b (..., k, n) [or (..., n, k) when tb]
 *   -> out (broadcast(...), m, n)
 * Attributes: 0 = ta, 1 = tb. Both operands have at least two dimensions. */

/* Broadcasts the batch shapes (all but the last two axes) of a and b. */
static bool batch_shape(const nb_tensor *a, const nb_tensor *b, int *nd, int64_t *out) {
    int na = nb_ndim(a) - 2, nbb = nb_ndim(b) - 2, n = na > nbb ? na : nbb;
    for (int d = 0; d < n; d++) {
        int64_t x = d - (n - na) >= 0 ? nb_shape(a)[d - (n - na)] : 1;
        int64_t y = d - (n - nbb) >= 0 ? nb_shape(b)[d - (n - nbb)] : 1;
        if (x != y && x != 1 && y != 1) return false;
        out[d] = x == 1 ? y : x;
    }
    *nd = n;
    return true;
}

static int64_t batch_numel(const nb_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < nb_ndim(t) - 2; d++) n *= nb_shape(t)[d];
    return n;
}

/* Offsets of each matrix of t, seen through the batch shape bshape (0
 * along broadcast axes), in units of floats. */
static void batch_strides(const nb_tensor *t, int nd, const int64_t *bshape, int64_t *st) {
    int nt = nb_ndim(t) - 2;
    int64_t s = nb_shape(t)[nt] * nb_shape(t)[nt + 1];
    for (int d = nd - 1; d >= 0; d--) {
        int dt = d - (nd - nt);
        int64_t size = dt >= 0 ? nb_shape(t)[dt] : 1;
        st[d] = size == 1 && bshape[d] != 1 ? 0 : s;
        s *= size;
    }
}

/* One gemm per batch entry; entries are independent, so any split of the
 * range gives the same bits. */
typedef struct mm_job {
    bool ta, tb;
    int64_t m, n, k;
    const float *a, *b;
    float *c;
    int nd;
    int64_t shape[NB_MAX_DIMS], sa[NB_MAX_DIMS], sb[NB_MAX_DIMS];
} mm_job;

static void mm_batches(void *ctx, int64_t begin, int64_t end) {
    const mm_job *j = ctx;
    int64_t lda = j->ta ? j->m : j->k, ldb = j->tb ? j->k : j->n;
    for (int64_t i = begin; i < end; i++) {
        int64_t oa = 0, ob = 0, rest = i;
        for (int d = j->nd - 1; d >= 0; d--) {
            int64_t q = rest % j->shape[d];
            rest /= j->shape[d];
            oa += q * j->sa[d];
            ob += q * j->sb[d];
        }
        nb_gemm(j->ta, j->tb, j->m, j->n, j->k, j->a + oa, lda, j->b + ob, ldb, 0.0f,
                j->c + i * j->m * j->n, j->n);
    }
}

static nb_tensor *mm(nb_tensor *a, nb_tensor *b, bool ta, bool tb);

/* C = op(A)·op(B):
 *   dA = g·op(B)ᵀ            = mm(g, B, no, !tb)     when not ta
 *   dA = (g·op(B)ᵀ)ᵀ = op(B)·gᵀ = mm(B, g, tb, yes)  when ta (A is stored [k,m])
 *   dB = op(A)ᵀ·g            = mm(A, g, !ta, no)     when not tb
 *   dB = (op(A)ᵀ·g)ᵀ = gᵀ·op(A) = mm(g, A, yes, ta)  when tb
 * each summed over the batch axes along which its operand was broadcast. */
static void matmul_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    bool ta = nb_attr(out, 0) != 0, tb = nb_attr(out, 1) != 0;
    nb_tensor *a = nb_saved(out, 0), *b = nb_saved(out, 1);
    nb_tensor *ia = nb_input(out, 0), *ib = nb_input(out, 1);
    if (nb_needs_input_grad(out, 0)) {
        nb_tensor *da = ta ? mm(b, g, tb, true) : mm(g, b, false, !tb);
        gx[0] = nb_sum_to(da, nb_ndim(ia), nb_shape(ia));
    }
    if (nb_needs_input_grad(out, 1)) {
        nb_tensor *db;
        if (!ta && a && batch_numel(ib) == 1 && batch_numel(out) > 1) {
            /* One matrix B shared by a stack of A (x[T,B,in]·W): the sum over
             * the batch of op(A_i)ᵀ·g_i is one product of the stacks seen as
             * tall matrices, instead of a stack of products summed after. */
            int64_t k = nb_dim(a, -1), n = nb_dim(g, -1);
            nb_tensor *fa = nb_reshape(a, NB_SHAPE(-1, k)), *fg = nb_reshape(g, NB_SHAPE(-1, n));
            db = tb ? mm(fg, fa, true, false) : mm(fa, fg, true, false);
            if (db && nb_ndim(ib) != 2) db = nb_reshape(db, nb_ndim(ib), nb_shape(ib));
        } else {
            db = tb ? mm(g, a, true, ta) : mm(a, g, !ta, false);
        }
        gx[1] = nb_sum_to(db, nb_ndim(ib), nb_shape(ib));
    }
}
/* Forward mode: d(op(A)·op(B)) = op(dA)·op(B) + op(A)·op(dB). */
static nb_tensor *matmul_jvp(nb_tensor *out, nb_tensor *const *t) {
    bool ta = nb_attr(out, 0) != 0, tb = nb_attr(out, 1) != 0;
    nb_tensor *a = nb_saved(out, 0), *b = nb_saved(out, 1);
    nb_tensor *da = t[0] ? mm(t[0], b, ta, tb) : NULL, *db = t[1] ? mm(a, t[1], ta, tb) : NULL;
    return da && db ? nb_add(da, db) : da ? da : db;
}
static const nb_op matmul_op = {"matmul", matmul_backward, matmul_jvp};

/* A stack of products each smaller than MM_SMALL multiply-adds (where gemm
 * itself stays on one thread) is spread over the pool by batch entry, in
 * chunks of at least MM_CHUNK multiply-adds so that waking a worker pays. */
#define MM_SMALL ((int64_t)96 * 96 * 96)
#define MM_CHUNK ((int64_t)1 << 17)

static nb_tensor *mm(nb_tensor *a, nb_tensor *b, bool ta, bool tb) {
    if (!a || !b) return NULL;
    int na = nb_ndim(a), nbd = nb_ndim(b), nd = 0;
    int64_t bshape[NB_MAX_DIMS];
    /* two matrices (the usual case) have no batch axes to broadcast */
    if (na < 2 || nbd < 2 || ((na > 2 || nbd > 2) && !batch_shape(a, b, &nd, bshape))) {
        nb_set_error("nb_matmul: cannot multiply %s by %s", SHAPE(a), SHAPE(b));
        return NULL;
    }
    const int64_t *sa = nb_shape(a), *sb = nb_shape(b);
    int64_t m = sa[na - (ta ? 1 : 2)], k = sa[na - (ta ? 2 : 1)];
    int64_t kb = sb[nbd - (tb ? 1 : 2)], n = sb[nbd - (tb ? 2 : 1)];
    if (k != kb) {
        nb_set_error("nb_matmul: cannot multiply %s by %s: inner dimensions %lld and %lld differ",
                     SHAPE(a), SHAPE(b), (long long)k, (long long)kb);
        return NULL;
    }
    int64_t shape[NB_MAX_DIMS], nbatch = 1, numel;
    for (int d = 0; d < nd; d++) shape[d] = bshape[d];
    shape[nd] = m;
    shape[nd + 1] = n;
    if (!nb__shape_numel(nd + 2, shape, &numel)) {
        char res[NB_SHAPE_BUF];
        nb_set_error("nb_matmul: cannot multiply %s by %s: the result %s would have nonzero "
                     "dimensions multiplying to more than %lld",
                     SHAPE(a), SHAPE(b), nb_shape_str(nd + 2, shape, res, sizeof res),
                     (long long)INT64_MAX);
        return NULL;
    }
    nb__shape_numel(nd, bshape, &nbatch); /* part of a valid shape: fits */
    nb_tensor *out = nb__empty_for("nb_matmul", nd + 2, shape);
    if (!out) return NULL;
    float *c = nb_data_mut(out);
    if (nb_numel(out) > 0 && k == 0) {
        memset(c, 0, sizeof(float) * (size_t)nb_numel(out));
    } else if (nb_numel(out) > 0) {
        /* not an initializer: that would clear the batch arrays, which
         * are read only below nd */
        mm_job job;
        job.ta = ta;
        job.tb = tb;
        job.m = m;
        job.n = n;
        job.k = k;
        job.a = nb_data(a);
        job.b = nb_data(b);
        job.c = c;
        job.nd = nd;
        if (nd == 0) {
            /* two matrices: no batch to walk */
        } else if (!ta && batch_numel(b) == 1) {
            /* one B for every A: the stack of A is one tall matrix */
            job.m = m * nbatch;
            job.nd = 0;
            nbatch = 1;
        } else {
            memcpy(job.shape, bshape, sizeof(int64_t) * (size_t)nd);
            batch_strides(a, nd, bshape, job.sa);
            batch_strides(b, nd, bshape, job.sb);
        }
        int64_t work; /* multiply-adds per product; only compared, so saturate */
        if (nb__mul_overflows(job.m * n, k, &work)) work = INT64_MAX;
        if (nbatch > 1 && work < MM_SMALL)
            nb_parallel_for(nbatch, MM_CHUNK / work + 1, mm_batches, &job);
        else
            mm_batches(&job, 0, nbatch);
    }
    nb_tensor *in[2] = {a, b};
    out = nb_record(out, &matmul_op, 2, in);
    nb_set_attr(out, 0, ta);
    nb_set_attr(out, 1, tb);
    nb_save(out, a);
    nb_save(out, b);
    return out;
}

/* ---- nb_matmul: NumPy's rules around the op ----------------------------------------
 * a (k) · b (k)             -> out ()          the dot product
 * a (k) · b (..., k, n)     -> out (..., n)    a as a row [1,k], the row axis removed
 * a (..., m, k) · b (k)     -> out (..., m)    b as a column [k,1], the column removed
 * a (..., m, k) · b (..., k, n) -> out (broadcast(...), m, n)
 * The promotions are reshapes (views), so their gradients are reshapes back. */
nb_tensor *nb_matmul(nb_tensor *a, nb_tensor *b) {
    if (!a || !b) return NULL;
    int na = nb_ndim(a), nbd = nb_ndim(b);
    if (na == 0 || nbd == 0) {
        nb_set_error("nb_matmul: cannot multiply %s by %s: a 0-dimensional operand has no "
                     "matrix axis (use nb_mul to scale)",
                     SHAPE(a), SHAPE(b));
        return NULL;
    }
    int64_t ka = nb_shape(a)[na - 1], kb = nb_shape(b)[nbd == 1 ? 0 : nbd - 2];
    if (ka != kb) {
        nb_set_error("nb_matmul: cannot multiply %s by %s: inner dimensions %lld and %lld differ",
                     SHAPE(a), SHAPE(b), (long long)ka, (long long)kb);
        return NULL;
    }
    /* 1-D operands are promoted by views; the composite scope frees them */
    nb_composite_begin();
    nb_tensor *a2 = na == 1 ? nb_reshape(a, NB_SHAPE(1, ka)) : a;
    nb_tensor *b2 = nbd == 1 ? nb_reshape(b, NB_SHAPE(kb, 1)) : b;
    if (!a2 || !b2) return nb_composite_end(NULL);
    int nd;
    int64_t bshape[NB_MAX_DIMS];
    if (!batch_shape(a2, b2, &nd, bshape)) {
        char sa[NB_SHAPE_BUF], sb[NB_SHAPE_BUF];
        nb_set_error("nb_matmul: cannot multiply %s by %s: batch dimensions %s and %s cannot be "
                     "broadcast",
                     SHAPE(a), SHAPE(b), nb_shape_str(na - 2, nb_shape(a), sa, sizeof sa),
                     nb_shape_str(nbd - 2, nb_shape(b), sb, sizeof sb));
        return nb_composite_end(NULL);
    }
    nb_tensor *c = mm(a2, b2, false, false);
    if (!c || (na > 1 && nbd > 1)) return nb_composite_end(c);
    /* drop the axis the promotion added: the rows (-2) for a 1-D a, the
     * columns (-1) for a 1-D b, both for a dot product */
    int64_t shape[NB_MAX_DIMS];
    int n = 0;
    for (int d = 0; d < nd; d++) shape[n++] = bshape[d];
    if (na > 1) shape[n++] = nb_dim(c, -2);
    if (nbd > 1) shape[n++] = nb_dim(c, -1);
    return nb_composite_end(nb_reshape(c, n, shape));
}

/* ---- nb_matmul_t: the op itself, transpose flags exposed ------------------------------
 * op(a)·op(b) for a and b of at least two axes, op(t) the transpose of the
 * last two axes when asked: attention's q·kᵀ without copying k. */
nb_tensor *nb_matmul_t(nb_tensor *a, nb_tensor *b, bool trans_a, bool trans_b) {
    if (!a || !b) return NULL;
    if (nb_ndim(a) < 2 || nb_ndim(b) < 2) {
        nb_set_error("nb_matmul_t: cannot multiply %s by %s: both operands need at least two axes",
                     SHAPE(a), SHAPE(b));
        return NULL;
    }
    int na = nb_ndim(a), nbd = nb_ndim(b), nd;
    int64_t ka = nb_shape(a)[na - (trans_a ? 2 : 1)], kb = nb_shape(b)[nbd - (trans_b ? 1 : 2)];
    int64_t bshape[NB_MAX_DIMS];
    if (ka != kb || !batch_shape(a, b, &nd, bshape)) {
        nb_set_error("nb_matmul_t: cannot multiply %s%s by %s%s: inner dimensions %lld and %lld, "
                     "batch dimensions must broadcast",
                     SHAPE(a), trans_a ? " transposed" : "", SHAPE(b), trans_b ? " transposed" : "",
                     (long long)ka, (long long)kb);
        return NULL;
    }
    return mm(a, b, trans_a, trans_b);
}

/* ---- nb_linear_map: x·W + b in one op --------------------------------------------------
 * x [..., in], w [in, out], b [out] or NULL -> [..., out]. The bias is
 * written into the output first and the product accumulated onto it by the
 * GEMM (beta 1), so a dense layer makes one pass over its output instead of
 * two (the product, then a broadcasting add). Backward, with g [..., out]
 * seen as rows [M, out] and x as [M, in]:
 *   x: g·wᵀ       w: xᵀ·g       b: sum of g over the rows
 * each a recorded op, so it differentiates again. */
#define LINEAR_MAP_FILL 4096 /* floats: the largest copy of bias rows */

/* t seen as rows [m, n]: t itself when it already is (the usual dense
 * layer), which spares a view per use. */
static nb_tensor *as_rows(nb_tensor *t, int64_t m, int64_t n) {
    if (nb_ndim(t) == 2 && nb_shape(t)[0] == m && nb_shape(t)[1] == n) return t;
    return nb_reshape(t, NB_SHAPE(m, n));
}

static void linear_map_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *x = nb_saved(y, 0), *w = nb_saved(y, 1);
    /* w is the [in, out] matrix the forward checked: its sizes are read
     * directly, without nb_dim's checks */
    int64_t in = w ? nb_shape(w)[0] : 0, out = w ? nb_shape(w)[1] : 0;
    int64_t m = 1; /* the rows: every axis of g but the last */
    for (int d = 0; d < nb_ndim(g) - 1; d++) m *= nb_shape(g)[d];
    nb_tensor *rows = as_rows(g, m, out);
    /* mm, the matmul op itself: the operands are matrices of matching
     * sizes by construction, which nb_matmul_t would check again */
    if (nb_needs_input_grad(y, 0)) {
        nb_tensor *gr = mm(rows, w, false, true);
        gx[0] = gr && nb_ndim(x) == 2 ? gr : nb_reshape(gr, nb_ndim(x), nb_shape(x));
    }
    if (nb_needs_input_grad(y, 1)) gx[1] = mm(as_rows(x, m, in), rows, true, false);
    if (nb_num_inputs(y) > 2 && nb_needs_input_grad(y, 2)) gx[2] = nb_sum_to(g, NB_SHAPE(out));
}
/* Forward mode: d(x·w + b) = dx·w + x·dw + db, each product a linear_map. */
static nb_tensor *linear_map_jvp(nb_tensor *y, nb_tensor *const *t) {
    nb_tensor *x = nb_saved(y, 0), *w = nb_saved(y, 1), *db = nb_num_inputs(y) > 2 ? t[2] : NULL;
    nb_tensor *dy = t[0] ? nb_linear_map(t[0], w, db) : NULL;
    if (t[1]) {
        nb_tensor *part = nb_linear_map(x, t[1], dy ? NULL : db);
        dy = dy ? nb_add(dy, part) : part;
    }
    return dy || !db ? dy : nb_expand(db, nb_ndim(y), nb_shape(y));
}
static const nb_op linear_map_op = {"linear_map", linear_map_backward, linear_map_jvp};

nb_tensor *nb_linear_map(nb_tensor *x, nb_tensor *w, nb_tensor *b) {
    if (!x || !w) return NULL;
    int nd = nb_ndim(x);
    /* each shape read only once its number of axes is known */
    const int64_t *sx = nb_shape(x), *sw = nb_shape(w);
    if (nd < 1 || nb_ndim(w) != 2 || sx[nd - 1] != sw[0] ||
        (b && (nb_ndim(b) != 1 || nb_shape(b)[0] != sw[1]))) {
        nb_set_error("nb_linear_map: x %s, w %s, b %s: expected x [..., in], w [in, out] and b [out]",
                     SHAPE(x), SHAPE(w), b ? SHAPE(b) : "NULL");
        return NULL;
    }
    int64_t in = sw[0], out = sw[1], rows = in ? nb_numel(x) / in : 0, shape[NB_MAX_DIMS];
    memcpy(shape, sx, sizeof(int64_t) * (size_t)nd);
    shape[nd - 1] = out;
    if (in == 0) { /* no rows to read: the product is 0, the size comes from x's shape */
        rows = 1;
        for (int d = 0; d < nd - 1; d++) rows *= shape[d];
    }
    nb_tensor *y = nb__empty_for("nb_linear_map", nd, shape);
    if (!y) return NULL;
    float *c = nb_data_mut(y);
    if (b && rows > 0) {
        /* the bias into the first row, then the rows made so far copied
         * after themselves: a few copies of growing size instead of a call
         * per row; the copies stop growing at LINEAR_MAP_FILL floats, so
         * that their source stays in the first-level cache */
        memcpy(c, nb_data(b), sizeof(float) * (size_t)out);
        int64_t most = out > 0 && out < LINEAR_MAP_FILL ? LINEAR_MAP_FILL / out : 1;
        for (int64_t done = 1; done < rows;) {
            int64_t n = done < rows - done ? done : rows - done;
            if (n > most) n = most;
            memcpy(c + done * out, c, sizeof(float) * (size_t)(n * out));
            done += n;
        }
    } else if (rows > 0) {
        memset(c, 0, sizeof(float) * (size_t)(rows * out));
    }
    if (rows > 0 && out > 0 && in > 0)
        nb_gemm(false, false, rows, out, in, nb_data(x), in, nb_data(w), out, 1.0f, c, out);
    nb_tensor *inputs[3] = {x, w, b};
    y = nb_record(y, &linear_map_op, b ? 3 : 2, inputs);
    nb_save(y, x);
    nb_save(y, w);
    return y;
}
