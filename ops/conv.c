/* conv.c — 2-D convolution and pooling over NCHW float32 tensors, with
 * PyTorch's semantics (zero padding, cross-correlation, grouped channels).
 *
 * Three ops close the derivative graph of a convolution. With
 *   conv2d(x, w)            x [N,C,H,W], w [O,C/G,kh,kw]   -> y [N,O,oH,oW]
 *   conv_transpose2d(u, w)  u [N,O,oH,oW], same w          -> [N,C,H,W]
 *   conv2d_weight_grad(x, g) x [N,C,H,W], g [N,O,oH,oW]    -> [O,C/G,kh,kw]
 * conv2d is linear in x and in w; conv_transpose2d is its adjoint in x and
 * conv2d_weight_grad its adjoint in w. Each is bilinear, so each one's
 * gradient is made of the other two, with the same stride, padding,
 * dilation and groups:
 *
 *   y = conv2d(x, w, b)            dx = conv_transpose2d(g, w)
 *                                  dw = conv2d_weight_grad(x, g)
 *                                  db = sum(g, axes 0, 2, 3)
 *   z = conv_transpose2d(u, w, b)  du = conv2d(g, w)
 *                                  dw = conv2d_weight_grad(g, u)
 *                                  db = sum(g, axes 0, 2, 3)
 *   v = conv2d_weight_grad(x, g')  dx = conv_transpose2d(g', g)
 *                                  dg' = conv2d(x, g)
 *
 * so backward with create_graph differentiates to any order.
 *
 * Kernels. Each image (and each group) is one GEMM over an im2col matrix:
 * the column matrix col [C/G·kh·kw, oH·oW] holds, in row (c, i, j), the
 * input pixel that tap (i, j) of channel c sees at every output position
 * (zero where it falls in the padding). Then
 *   conv2d:           y_n = W · col(x_n)                  [O/G, oH·oW]
 *   conv_transpose2d: z_n = col2im(Wᵀ · u_n)              (col2im adds back)
 *   weight_grad:      dW  = sum_n g_n · col(x_n)ᵀ         [O/G, C/G·kh·kw]
 * A 1x1 kernel with stride 1 and no padding needs no col: x_n is col. The
 * forward and the weight gradient never write col out: the GEMM's packers
 * read its entries from a zero-padded copy of the image while filling the
 * kernel's panels (implicit im2col). Only conv_transpose2d builds col, to
 * add it back onto the image.
 * Images are independent, so the two first are spread over the thread pool
 * by image. The weight gradient sums over images: the batch is cut into a
 * number of chunks that depends on the shape alone, each chunk is one
 * product whose depth runs over the positions of all its images, and the
 * partials are added in chunk order, so any thread count gives the same
 * bits.
 *
 * Pooling. max_pool2d saves, for each output, the flat index (iy·W + ix) of
 * the selected input in its plane (the first on ties; a NaN is taken, the
 * last one if several, as PyTorch does);
 * its backward adds g there (the max_pool2d_grad op), whose own gradient is
 * a gather. avg_pool2d (padding counted in the divisor, PyTorch's default) is
 * a convolution of each plane with a constant kh x kw kernel of 1/(kh·kw),
 * and adaptive_avg_pool2d a mean or an avg_pool2d, so they need no backward
 * of their own.
 */
#include "ops_internal.h"

#include "gemm.h"
#include "parallel.h"

#include <stdatomic.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* ---- geometry and options ------------------------------------------------------
 * Every conv op sees the same picture: an image side [N,C,H,W] (the input of
 * conv2d) and a column side [N,O,oH,oW] (its output), linked by the kernel
 * and the options. Attributes 0..6 of every conv node: sh, sw, ph, pw, dh,
 * dw, groups. */

typedef struct geom {
    int64_t n, c, h, w;   /* image side */
    int64_t o, oh, ow;    /* column side */
    int64_t kh, kw;
    int64_t sh, sw, ph, pw, dh, dw, groups;
    int64_t cg, og, k, hw, ohw; /* C/G, O/G, C/G·kh·kw, H·W, oH·oW */
    int64_t hp, wp;             /* H + 2·ph, W + 2·pw: the zero-padded image */
} geom;

typedef struct conv_args {
    int64_t s[2], p[2], d[2], op[2], groups;
} conv_args;

/* Options with the defaults filled in; false and a message naming who
 * when a value is out of range. */
static bool read_opts(const char *who, const nb_conv2d_opts *o, conv_args *a) {
    nb_conv2d_opts z = {0};
    if (!o) o = &z;
    bool ok = o->groups >= 0;
    for (int i = 0; i < 2; i++) {
        a->s[i] = o->stride[i] ? o->stride[i] : 1;
        a->d[i] = o->dilation[i] ? o->dilation[i] : 1;
        a->p[i] = o->padding[i];
        a->op[i] = o->output_padding[i];
        ok = ok && a->s[i] > 0 && a->d[i] > 0 && a->p[i] >= 0 && a->op[i] >= 0;
    }
    a->groups = o->groups ? o->groups : 1;
    if (!ok)
        nb_set_error("%s: stride (%d,%d), dilation (%d,%d) and groups %d must be positive, "
                     "padding (%d,%d) and output_padding (%d,%d) non-negative",
                     who, o->stride[0], o->stride[1], o->dilation[0], o->dilation[1], o->groups,
                     o->padding[0], o->padding[1], o->output_padding[0], o->output_padding[1]);
    return ok;
}

static void set_attrs(nb_tensor *out, const conv_args *a) {
    double v[7] = {(double)a->s[0], (double)a->s[1], (double)a->p[0], (double)a->p[1],
                   (double)a->d[0], (double)a->d[1], (double)a->groups};
    for (int i = 0; i < 7; i++) nb_set_attr(out, i, v[i]);
}

static nb_conv2d_opts opts_of(const nb_tensor *node) {
    nb_conv2d_opts o = {0};
    for (int i = 0; i < 2; i++) {
        o.stride[i] = (int)nb_attr(node, i);
        o.padding[i] = (int)nb_attr(node, 2 + i);
        o.dilation[i] = (int)nb_attr(node, 4 + i);
    }
    o.groups = (int)nb_attr(node, 6);
    return o;
}

/* (in + 2p - d(k-1) - 1) / s + 1, or 0 when the padded input is smaller
 * than the dilated kernel. */
static int64_t conv_out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) {
    int64_t span = in + 2 * p - d * (k - 1) - 1;
    return span < 0 ? 0 : span / s + 1;
}

static void fill_geom(geom *g, const nb_tensor *img, int64_t o, int64_t kh, int64_t kw,
                      const conv_args *a) {
    g->n = nb_shape(img)[0];
    g->c = nb_shape(img)[1];
    g->h = nb_shape(img)[2];
    g->w = nb_shape(img)[3];
    g->o = o;
    g->kh = kh;
    g->kw = kw;
    g->sh = a->s[0], g->sw = a->s[1], g->ph = a->p[0], g->pw = a->p[1];
    g->dh = a->d[0], g->dw = a->d[1], g->groups = a->groups;
    g->oh = conv_out_size(g->h, kh, g->sh, g->ph, g->dh);
    g->ow = conv_out_size(g->w, kw, g->sw, g->pw, g->dw);
    g->cg = g->c / g->groups;
    g->og = o / g->groups;
    g->k = g->cg * kh * kw;
    g->hw = g->h * g->w;
    g->ohw = g->oh * g->ow;
    g->hp = g->h + 2 * g->ph;
    g->wp = g->w + 2 * g->pw;
}

/* The col matrix of x is x itself. */
static bool is_direct(const geom *g) {
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0;
}

/* ---- the col matrix ------------------------------------------------------------------
 * x [C/G, H, W] (one group of one image) <-> col [C/G·kh·kw, oH·oW]:
 *   col[(c·kh + i)·kw + j][oy·oW + ox] = x[c][oy·sh - ph + i·dh][ox·sw - pw + j·dw]
 * (0 outside x). col2im is the adjoint of that gather: it adds every col
 * entry back onto its pixel, row by row; for each tap the valid output
 * columns of a row form one range [lo, hi). */

static void tap_range(int64_t out, int64_t in, int64_t s, int64_t off, int64_t *lo, int64_t *hi) {
    /* ox valid when 0 <= ox·s + off < in */
    int64_t l = off >= 0 ? 0 : (-off + s - 1) / s;
    int64_t h = in - off <= 0 ? 0 : (in - off - 1) / s + 1;
    if (h > out) h = out;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

static void col2im(const geom *g, const float *col, float *x) {
    for (int64_t c = 0; c < g->cg; c++)
        for (int64_t i = 0; i < g->kh; i++)
            for (int64_t j = 0; j < g->kw; j++) {
                const float *row = col + ((c * g->kh + i) * g->kw + j) * g->ohw;
                int64_t offx = j * g->dw - g->pw, lo, hi;
                tap_range(g->ow, g->w, g->sw, offx, &lo, &hi);
                for (int64_t oy = 0; oy < g->oh; oy++) {
                    int64_t iy = oy * g->sh - g->ph + i * g->dh;
                    if (iy < 0 || iy >= g->h) continue;
                    const float *r = row + oy * g->ow;
                    float *xr = x + (c * g->h + iy) * g->w + offx;
                    for (int64_t ox = lo; ox < hi; ox++) xr[ox * g->sw] += r[ox];
                }
            }
}

/* ---- implicit im2col ----------------------------------------------------------------
 * The forward and the weight gradient never build col: the GEMM's packers
 * read its entries straight from the image as they fill the kernel's
 * panels (nb_gemm_packed), which saves writing and reading col once per
 * image. col_run is the access: entries q0 .. q1-1 of col's row `tap`,
 * written dst[0], dst[stride], ... */

static void fill_zero(float *dst, int64_t count, int64_t stride) {
    for (int64_t t = 0; t < count; t++) dst[t * stride] = 0.0f;
}

/* The operand a packer reads: image n0 onwards (the depth of a weight
 * gradient runs over the positions of images n0, n0+1, ...), group gr. */
typedef struct conv_src {
    const geom *g;
    const float *x, *u; /* the image side and the column side, whole batch */
    const float *xpad;  /* the forward: image n0, group gr, zero-padded */
    int64_t n0, gr;
} conv_src;

static const float *image_of(const conv_src *s, int64_t n) {
    return s->x + (n * s->g->c + s->gr * s->g->cg) * s->g->hw;
}

/* col of image n0 as the B operand of its forward product [C/G·kh·kw, oH·oW]:
 * outer index a position, depth a tap, read from a zero-padded copy of the
 * image (s->xpad, [C/G, H + 2·ph, W + 2·pw]) where every tap of every
 * output position falls inside, so a tap's entries for a piece of an
 * output row are one strided run with no bounds to test. A panel's
 * positions are cut into such pieces once; taps are walked as (c, i, j)
 * counters, so the inner loops hold no division. */
enum { PANEL_MAX = 64 };

static void pad_image(const geom *g, const float *xg, float *xpad) {
    int64_t hp = g->hp, wp = g->wp;
    memset(xpad, 0, sizeof(float) * (size_t)(g->cg * hp * wp));
    for (int64_t c = 0; c < g->cg; c++)
        for (int64_t y = 0; y < g->h; y++)
            memcpy(xpad + (c * hp + y + g->ph) * wp + g->pw, xg + (c * g->h + y) * g->w,
                   sizeof(float) * (size_t)g->w);
}

static void pack_col_positions(const void *ctx, int64_t q0, int64_t len, int64_t p0, int64_t kc,
                               int width, float *dst) {
    const conv_src *s = ctx;
    const geom *g = s->g;
    int64_t hp = g->hp, wp = g->wp;
    for (int64_t c0 = 0; c0 < len; c0 += width, dst += width * kc) {
        int64_t w = len - c0 < width ? len - c0 : width;
        int64_t seg_at[PANEL_MAX], seg_len[PANEL_MAX], nseg = 0; /* offset in xpad, length */
        for (int64_t q = q0 + c0; q < q0 + c0 + w; nseg++) {
            int64_t oy = q / g->ow, ox = q % g->ow, left = q0 + c0 + w - q;
            seg_at[nseg] = oy * g->sh * wp + ox * g->sw;
            seg_len[nseg] = g->ow - ox < left ? g->ow - ox : left;
            q += seg_len[nseg];
        }
        int64_t c = p0 / (g->kh * g->kw), i = p0 / g->kw % g->kh, j = p0 % g->kw;
        for (int64_t p = 0; p < kc; p++) {
            float *restrict d = dst + p * width;
            const float *tap = s->xpad + (c * hp + i * g->dh) * wp + j * g->dw;
            for (int64_t sg = 0; sg < nseg; sg++) {
                const float *restrict src = tap + seg_at[sg];
                int64_t n = seg_len[sg];
                if (g->sw == 1)
                    for (int64_t t = 0; t < n; t++) d[t] = src[t];
                else
                    for (int64_t t = 0; t < n; t++) d[t] = src[t * g->sw];
                d += n;
            }
            for (int64_t t = w; t < width; t++) dst[p * width + t] = 0.0f;
            if (++j == g->kw) {
                j = 0;
                if (++i == g->kh) i = 0, c++;
            }
        }
    }
}

/* Calls run(s, n, pos0, pos1, d) for the pieces, one per image, of the depth
 * range [p0, p0 + kc) over positions of images n0, n0+1, ...; d counts from 0. */
#define FOR_IMAGE_RUNS(s, p0, kc, ...)                                                           \
    for (int64_t d_ = 0; d_ < (kc);) {                                                           \
        int64_t n = (s)->n0 + ((p0) + d_) / (s)->g->ohw, pos0 = ((p0) + d_) % (s)->g->ohw;        \
        int64_t pos1 = (s)->g->ohw - pos0 < (kc) - d_ ? (s)->g->ohw : pos0 + (kc) - d_;           \
        int64_t d = d_;                                                                           \
        __VA_ARGS__;                                                                              \
        d_ += pos1 - pos0;                                                                        \
    }

/* Both packers of the weight gradient transpose: their sources run along
 * the depth (positions), a panel along its width; nb_gemm_transpose4 moves
 * four sources at a time. */

/* The col matrices of images n0.. stacked along positions, transposed:
 * outer index a tap, depth an (image, position) pair. Taps go four at a
 * time along each output row when the stride is 1. */
static void pack_col_taps(const void *ctx, int64_t t0, int64_t len, int64_t p0, int64_t kc,
                          int width, float *dst) {
    const conv_src *s = ctx;
    const geom *g = s->g;
    int64_t hp = g->hp, wp = g->wp, plane = g->cg * hp * wp;
    for (int64_t c0 = 0; c0 < len; c0 += width, dst += width * kc) {
        int64_t w = len - c0 < width ? len - c0 : width;
        for (int64_t t = 0; t < w;) {
            int group = g->sw == 1 && w - t >= 4 ? 4 : 1;
            int64_t at[4];
            for (int k = 0; k < group; k++) {
                int64_t tap = t0 + c0 + t + k, j = tap % g->kw, i = tap / g->kw % g->kh;
                at[k] = (tap / (g->kw * g->kh) * hp + i * g->dh) * wp + j * g->dw;
            }
            FOR_IMAGE_RUNS(s, p0, kc, {
                const float *xn = s->xpad + (n - s->n0) * plane;
                float *col = dst + d * width + t;
                for (int64_t pos = pos0, oy = pos0 / g->ow, ox = pos0 % g->ow; pos < pos1;
                     oy++, ox = 0) {
                    int64_t run = g->ow - ox < pos1 - pos ? g->ow - ox : pos1 - pos;
                    int64_t off = oy * g->sh * wp + ox * g->sw;
                    float *out = col + (pos - pos0) * width;
                    if (group == 4) {
                        const float *src[4] = {xn + at[0] + off, xn + at[1] + off,
                                               xn + at[2] + off, xn + at[3] + off};
                        nb_gemm_transpose4(src, run, out, width);
                    } else {
                        const float *src = xn + at[0] + off;
                        for (int64_t e = 0; e < run; e++) out[e * width] = src[e * g->sw];
                    }
                    pos += run;
                }
            })
            t += group;
        }
        for (int64_t t = w; t < width; t++) fill_zero(dst + t, kc, width);
    }
}

/* The column side u of images n0.. (this group's O/G channels): outer index
 * a channel, depth an (image, position) pair; four channels at a time. */
static void pack_u_channels(const void *ctx, int64_t o0, int64_t len, int64_t p0, int64_t kc,
                            int width, float *dst) {
    const conv_src *s = ctx;
    const geom *g = s->g;
    for (int64_t c = 0; c < len; c += width, dst += width * kc) {
        int64_t w = len - c < width ? len - c : width;
        for (int64_t t = 0; t < w;) {
            int group = w - t >= 4 ? 4 : 1;
            FOR_IMAGE_RUNS(s, p0, kc, {
                const float *src = s->u + (n * g->o + s->gr * g->og + o0 + c + t) * g->ohw + pos0;
                float *out = dst + d * width + t;
                if (group == 4) {
                    const float *rows[4] = {src, src + g->ohw, src + 2 * g->ohw, src + 3 * g->ohw};
                    nb_gemm_transpose4(rows, pos1 - pos0, out, width);
                } else {
                    for (int64_t e = 0; e < pos1 - pos0; e++) out[e * width] = src[e];
                }
            })
            t += group;
        }
        for (int64_t t = w; t < width; t++) fill_zero(dst + t, kc, width);
    }
}

/* ---- the work, image by image ------------------------------------------------------ */

typedef struct conv_job {
    geom g;
    const float *x, *w, *u, *bias; /* x image side, u column side */
    float *out;
    const float *wpack; /* conv2d, conv_transpose2d: each group's op(W), packed */
    int64_t wpack_size;  /* floats per group */
    float *part;     /* weight_grad: one [O, C/G·kh·kw] partial per chunk */
    int64_t nchunk;  /* weight_grad: chunks of the batch */
    bool transposed; /* weight_grad: partials are [G][C/G·kh·kw][O/G] */
    atomic_bool failed;
} conv_job;

/* Scratch for one col matrix (NULL, without failing, when none is needed). */
static float *col_alloc(conv_job *j) {
    if (is_direct(&j->g)) return NULL;
    float *col = nb_malloc(sizeof(float) * (size_t)(j->g.k * j->g.ohw + 1));
    if (!col) atomic_store(&j->failed, true);
    return col;
}

/* y_n[gr] = W[gr] · col(x_n[gr]), then + b */
static void conv2d_images(void *ctx, int64_t begin, int64_t end) {
    conv_job *j = ctx;
    const geom *g = &j->g;
    float *xpad = NULL;
    if (!is_direct(g)) {
        xpad = nb_malloc(sizeof(float) * (size_t)(g->cg * g->hp * g->wp));
        if (!xpad) {
            atomic_store(&j->failed, true);
            return;
        }
    }
    for (int64_t n = begin; n < end; n++) {
        float *y = j->out + n * g->o * g->ohw;
        for (int64_t gr = 0; gr < g->groups; gr++) {
            const float *xg = j->x + (n * g->c + gr * g->cg) * g->hw;
            const float *wg = j->w + gr * g->og * g->k;
            float *yg = y + gr * g->og * g->ohw;
            conv_src src = {g, j->x, NULL, xpad, n, gr};
            if (!xpad) {
                nb_gemm(false, false, g->og, g->ohw, g->k, wg, g->k, xg, g->ohw, 0.0f, yg, g->ohw);
                continue;
            }
            pad_image(g, xg, xpad);
            nb_gemm_prepacked pre = {j->wpack + gr * j->wpack_size, g->k};
            if (!nb_gemm_packed(false, false, g->og, g->ohw, g->k, NULL, 0, nb_gemm_pack_prepacked,
                                &pre, NULL, 0, pack_col_positions, &src, 0.0f, yg, g->ohw)) {
                atomic_store(&j->failed, true);
                break;
            }
        }
        if (j->bias)
            for (int64_t o = 0; o < g->o; o++)
                for (int64_t p = 0; p < g->ohw; p++) y[o * g->ohw + p] += j->bias[o];
    }
    nb_free(xpad);
}

/* z_n[gr] = col2im(W[gr]ᵀ · u_n[gr]), then + b */
static void conv_transpose2d_images(void *ctx, int64_t begin, int64_t end) {
    conv_job *j = ctx;
    const geom *g = &j->g;
    float *col = col_alloc(j);
    if (!col && !is_direct(g)) return;
    for (int64_t n = begin; n < end; n++) {
        float *z = j->out + n * g->c * g->hw;
        if (col) memset(z, 0, sizeof(float) * (size_t)(g->c * g->hw));
        for (int64_t gr = 0; gr < g->groups; gr++) {
            float *zg = z + gr * g->cg * g->hw;
            const float *ug = j->u + (n * g->o + gr * g->og) * g->ohw;
            nb_gemm_prepacked pre = {j->wpack + gr * j->wpack_size, g->og};
            if (!nb_gemm_packed(true, false, g->k, g->ohw, g->og, NULL, 0, nb_gemm_pack_prepacked,
                                &pre, ug, g->ohw, NULL, NULL, 0.0f, col ? col : zg, g->ohw)) {
                atomic_store(&j->failed, true);
                break;
            }
            if (col) col2im(g, col, zg);
        }
        if (j->bias)
            for (int64_t c = 0; c < g->c; c++)
                for (int64_t p = 0; p < g->hw; p++) z[c * g->hw + p] += j->bias[c];
    }
    nb_free(col);
}

/* part[chunk][gr] = sum over the chunk's images of u_n[gr] · col(x_n[gr])ᵀ
 * (u is the output gradient here): one product per chunk and group whose
 * depth runs over the positions of all the chunk's images, so the sum over
 * images happens inside the kernel's accumulators rather than by adding
 * one image's product after another into C. When C/G·kh·kw is smaller than
 * O/G (a first layer: 9 taps, 32 filters) the product is formed
 * transposed, col · uᵀ [C/G·kh·kw, O/G], which suits the kernel's tall
 * tiles better; the partials are transposed back when summed. */
static void weight_grad_chunks(void *ctx, int64_t begin, int64_t end) {
    conv_job *j = ctx;
    const geom *g = &j->g;
    int64_t plane = g->cg * g->hp * g->wp;
    float *xpad = nb_malloc(sizeof(float) * (size_t)(plane * ((g->n + j->nchunk - 1) / j->nchunk)));
    if (!xpad) {
        atomic_store(&j->failed, true);
        return;
    }
    for (int64_t ch = begin; ch < end; ch++) {
        int64_t n0 = g->n * ch / j->nchunk, n1 = g->n * (ch + 1) / j->nchunk;
        float *part = j->part + ch * g->o * g->k;
        for (int64_t gr = 0; gr < g->groups; gr++) {
            conv_src src = {g, j->x, j->u, xpad, n0, gr};
            for (int64_t n = n0; n < n1; n++) pad_image(g, image_of(&src, n), xpad + (n - n0) * plane);
            float *pg = part + gr * g->og * g->k;
            int64_t depth = (n1 - n0) * g->ohw;
            bool ok = j->transposed
                          ? nb_gemm_packed(false, false, g->k, g->og, depth, NULL, 0, pack_col_taps,
                                           &src, NULL, 0, pack_u_channels, &src, 0.0f, pg, g->og)
                          : nb_gemm_packed(false, false, g->og, g->k, depth, NULL, 0,
                                           pack_u_channels, &src, NULL, 0, pack_col_taps, &src,
                                           0.0f, pg, g->k);
            if (!ok) {
                atomic_store(&j->failed, true);
                break;
            }
        }
    }
    nb_free(xpad);
}

/* Packs each group's op(W) once for all the images' products: W_g [O/G,
 * C/G·kh·kw] for conv2d, its transpose for conv_transpose2d. False when
 * out of memory. */
static bool prepack_weights(conv_job *j, bool trans) {
    const geom *g = &j->g;
    int64_t m = trans ? g->k : g->og, k = trans ? g->og : g->k;
    j->wpack_size = nb_gemm_prepacked_size(m, k);
    float *pack = nb_malloc(sizeof(float) * (size_t)(g->groups * j->wpack_size + 1));
    if (!pack) return false;
    for (int64_t gr = 0; gr < g->groups; gr++)
        nb_gemm_prepack_a(trans, j->w + gr * g->og * g->k, g->k, m, k, pack + gr * j->wpack_size);
    j->wpack = pack;
    return true;
}

/* Items (images or chunks) each costing `work` multiply-adds. Below
 * CONV_CHUNK multiply-adds a worker is not worth waking. When there are
 * fewer items than threads and each is a large product, the items run one
 * after the other so that gemm spreads each over the pool instead. Either
 * way every item is computed by the same arithmetic. */
#define CONV_CHUNK ((int64_t)1 << 17)
#define CONV_GEMM_PARALLEL ((int64_t)96 * 96 * 96)

static void run_items(conv_job *j, int64_t items, int64_t work, nb_parallel_fn fn) {
    if (items < nb_get_num_threads() && work >= CONV_GEMM_PARALLEL)
        fn(j, 0, items);
    else
        nb_parallel_for(items, CONV_CHUNK / (work + 1) + 1, fn, j);
}

static nb_tensor *failed(const char *who, nb_tensor *out) {
    (void)out; /* belongs to the scope: freed with it */
    nb_set_error("%s: out of memory for the column buffer", who);
    return NULL;
}

/* ---- conv2d ---------------------------------------------------------------------------
 * x [N,C,H,W], w [O,C/G,kh,kw], b [O] or NULL -> y [N,O,oH,oW] */

static void conv2d_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    nb_conv2d_opts o = opts_of(y);
    nb_tensor *x = nb_saved(y, 0), *w = nb_saved(y, 1);
    if (!x || !w) return;
    if (nb_needs_input_grad(y, 0)) {
        /* the rows and columns of x that the last window did not reach come
         * back as output_padding */
        for (int i = 0; i < 2; i++) {
            int64_t k = nb_shape(w)[2 + i], s = o.stride[i], p = o.padding[i], d = o.dilation[i];
            int64_t full = (nb_shape(y)[2 + i] - 1) * s - 2 * p + d * (k - 1) + 1;
            o.output_padding[i] = (int)(nb_shape(x)[2 + i] - full);
        }
        gx[0] = nb_conv_transpose2d(g, w, NULL, &o);
        o.output_padding[0] = o.output_padding[1] = 0;
    }
    if (nb_needs_input_grad(y, 1)) gx[1] = nb_conv2d_weight_grad(x, g, nb_dim(w, 2), nb_dim(w, 3), &o);
    if (nb_num_inputs(y) > 2 && nb_needs_input_grad(y, 2)) gx[2] = nb_sum(g, NB_AXES(0, 2, 3), false);
}
/* Forward mode. conv2d, conv_transpose2d and conv2d_weight_grad are
 * bilinear in their two tensors, so d(x ∗ w) = dx ∗ w + x ∗ dw, and a
 * bias's tangent is broadcast over the image like the bias. */
static nb_tensor *plus(nb_tensor *a, nb_tensor *b) { return a && b ? nb_add(a, b) : a ? a : b; }

static nb_tensor *bias_tangent(nb_tensor *y, int ninputs, nb_tensor *const *t) {
    if (ninputs < 3 || !t[2]) return NULL;
    return nb_expand(nb_reshape(t[2], NB_SHAPE(1, -1, 1, 1)), nb_ndim(y), nb_shape(y));
}

static nb_tensor *conv2d_jvp(nb_tensor *y, nb_tensor *const *t) {
    nb_conv2d_opts o = opts_of(y);
    nb_tensor *x = nb_saved(y, 0), *w = nb_saved(y, 1);
    nb_tensor *r = plus(t[0] ? nb_conv2d(t[0], w, NULL, &o) : NULL,
                        t[1] ? nb_conv2d(x, t[1], NULL, &o) : NULL);
    return plus(r, bias_tangent(y, nb_num_inputs(y), t));
}
static const nb_op conv2d_op = {"conv2d", conv2d_backward, conv2d_jvp};

/* Checks a bias of `channels` entries; who and the other shapes for the message. */
static bool check_bias(const char *who, const nb_tensor *x, const nb_tensor *w, const nb_tensor *b,
                       int64_t channels) {
    if (!b || (nb_ndim(b) == 1 && nb_shape(b)[0] == channels)) return true;
    nb_set_error("%s: x %s, w %s: the bias must have shape [%lld], not %s", who, SHAPE(x), SHAPE(w),
                 (long long)channels, SHAPE(b));
    return false;
}

nb_tensor *nb_conv2d(nb_tensor *x, nb_tensor *w, nb_tensor *b, const nb_conv2d_opts *opts) {
    static const char who[] = "nb_conv2d";
    if (!x || !w) return NULL;
    conv_args a;
    if (!read_opts(who, opts, &a)) return NULL;
    if (nb_ndim(x) != 4 || nb_ndim(w) != 4) {
        nb_set_error("%s: x %s and w %s must both be 4-D: x [N,C,H,W], w [O,C/groups,kH,kW]", who,
                     SHAPE(x), SHAPE(w));
        return NULL;
    }
    const int64_t *xs = nb_shape(x), *ws = nb_shape(w);
    if (ws[0] % a.groups != 0 || xs[1] != ws[1] * a.groups || ws[2] < 1 || ws[3] < 1) {
        nb_set_error("%s: x %s and w %s do not fit groups %lld: x needs w.shape[1]·groups = %lld "
                     "channels, w.shape[0] must be a multiple of groups, and the kernel non-empty",
                     who, SHAPE(x), SHAPE(w), (long long)a.groups, (long long)(ws[1] * a.groups));
        return NULL;
    }
    if (a.op[0] || a.op[1]) {
        nb_set_error("%s: output_padding (%lld,%lld) is for nb_conv_transpose2d only (x %s, w %s)",
                     who, (long long)a.op[0], (long long)a.op[1], SHAPE(x), SHAPE(w));
        return NULL;
    }
    if (!check_bias(who, x, w, b, ws[0])) return NULL;
    conv_job j = {.x = nb_data(x), .w = nb_data(w), .bias = b ? nb_data(b) : NULL};
    fill_geom(&j.g, x, ws[0], ws[2], ws[3], &a);
    if (j.g.oh < 1 || j.g.ow < 1) {
        nb_set_error("%s: x %s is smaller than the kernel of w %s with padding (%lld,%lld) and "
                     "dilation (%lld,%lld): no output position",
                     who, SHAPE(x), SHAPE(w), (long long)a.p[0], (long long)a.p[1],
                     (long long)a.d[0], (long long)a.d[1]);
        return NULL;
    }
    nb_tensor *y = nb_empty(NB_SHAPE(j.g.n, j.g.o, j.g.oh, j.g.ow));
    if (!y) return NULL;
    j.out = nb_data_mut(y);
    if (nb_numel(y) > 0) {
        if (!prepack_weights(&j, false)) return failed(who, y);
        run_items(&j, j.g.n, j.g.o * j.g.ohw * j.g.k, conv2d_images);
        nb_free((float *)j.wpack);
        if (atomic_load(&j.failed)) return failed(who, y);
    }
    nb_tensor *in[3] = {x, w, b};
    y = nb_record(y, &conv2d_op, b ? 3 : 2, in);
    nb_save(y, x);
    nb_save(y, w);
    set_attrs(y, &a);
    return y;
}

/* ---- conv_transpose2d ---------------------------------------------------------------------
 * u [N,O,oH,oW], w [O,C/G,kh,kw], b [C] or NULL -> z [N,C,H,W] with
 *   H = (oH - 1)·sh - 2·ph + dh·(kh - 1) + output_padding + 1
 * (PyTorch's in_channels is O here, out_channels C). */

static void conv_transpose2d_backward(nb_tensor *z, nb_tensor *g, nb_tensor **gx) {
    nb_conv2d_opts o = opts_of(z);
    nb_tensor *u = nb_saved(z, 0), *w = nb_saved(z, 1);
    if (!u || !w) return;
    if (nb_needs_input_grad(z, 0)) gx[0] = nb_conv2d(g, w, NULL, &o);
    if (nb_needs_input_grad(z, 1)) gx[1] = nb_conv2d_weight_grad(g, u, nb_dim(w, 2), nb_dim(w, 3), &o);
    if (nb_num_inputs(z) > 2 && nb_needs_input_grad(z, 2)) gx[2] = nb_sum(g, NB_AXES(0, 2, 3), false);
}
static nb_tensor *conv_transpose2d_jvp(nb_tensor *z, nb_tensor *const *t) {
    nb_conv2d_opts o = opts_of(z);
    nb_tensor *u = nb_saved(z, 0), *w = nb_saved(z, 1);
    if (!u || !w) return NULL;
    /* output_padding is not kept: it is what the output has beyond the
     * size the other options give */
    for (int i = 0; i < 2; i++) {
        int64_t full = (nb_shape(u)[2 + i] - 1) * o.stride[i] - 2 * o.padding[i] +
                       o.dilation[i] * (nb_shape(w)[2 + i] - 1) + 1;
        o.output_padding[i] = (int)(nb_shape(z)[2 + i] - full);
    }
    nb_tensor *r = plus(t[0] ? nb_conv_transpose2d(t[0], w, NULL, &o) : NULL,
                        t[1] ? nb_conv_transpose2d(u, t[1], NULL, &o) : NULL);
    return plus(r, bias_tangent(z, nb_num_inputs(z), t));
}
static const nb_op conv_transpose2d_op = {"conv_transpose2d", conv_transpose2d_backward,
                                          conv_transpose2d_jvp};

nb_tensor *nb_conv_transpose2d(nb_tensor *x, nb_tensor *w, nb_tensor *b,
                               const nb_conv2d_opts *opts) {
    static const char who[] = "nb_conv_transpose2d";
    if (!x || !w) return NULL;
    conv_args a;
    if (!read_opts(who, opts, &a)) return NULL;
    if (nb_ndim(x) != 4 || nb_ndim(w) != 4) {
        nb_set_error("%s: x %s and w %s must both be 4-D: x [N,Cin,H,W], w [Cin,Cout/groups,kH,kW]",
                     who, SHAPE(x), SHAPE(w));
        return NULL;
    }
    const int64_t *xs = nb_shape(x), *ws = nb_shape(w);
    if (xs[1] != ws[0] || ws[0] % a.groups != 0 || ws[2] < 1 || ws[3] < 1) {
        nb_set_error("%s: x %s and w %s do not fit groups %lld: x needs w.shape[0] = %lld channels, "
                     "a multiple of groups, and the kernel must be non-empty",
                     who, SHAPE(x), SHAPE(w), (long long)a.groups, (long long)ws[0]);
        return NULL;
    }
    if (a.op[0] >= a.s[0] || a.op[1] >= a.s[1]) {
        nb_set_error("%s: x %s, w %s: output_padding (%lld,%lld) must be smaller than the stride "
                     "(%lld,%lld)",
                     who, SHAPE(x), SHAPE(w), (long long)a.op[0], (long long)a.op[1],
                     (long long)a.s[0], (long long)a.s[1]);
        return NULL;
    }
    int64_t c = ws[1] * a.groups;
    if (!check_bias(who, x, w, b, c)) return NULL;
    int64_t h = (xs[2] - 1) * a.s[0] - 2 * a.p[0] + a.d[0] * (ws[2] - 1) + a.op[0] + 1;
    int64_t wd = (xs[3] - 1) * a.s[1] - 2 * a.p[1] + a.d[1] * (ws[3] - 1) + a.op[1] + 1;
    if (xs[2] < 1 || xs[3] < 1 || h < 1 || wd < 1) {
        nb_set_error("%s: x %s with w %s, stride (%lld,%lld) and padding (%lld,%lld) gives an "
                     "output of %lldx%lld: no output position",
                     who, SHAPE(x), SHAPE(w), (long long)a.s[0], (long long)a.s[1],
                     (long long)a.p[0], (long long)a.p[1], (long long)h, (long long)wd);
        return NULL;
    }
    nb_tensor *z = nb_empty(NB_SHAPE(xs[0], c, h, wd));
    if (!z) return NULL;
    conv_job j = {.u = nb_data(x), .w = nb_data(w), .bias = b ? nb_data(b) : NULL,
                  .out = nb_data_mut(z)};
    fill_geom(&j.g, z, ws[0], ws[2], ws[3], &a);
    if (nb_numel(z) > 0) {
        if (!prepack_weights(&j, true)) return failed(who, z);
        run_items(&j, j.g.n, j.g.o * j.g.ohw * j.g.k, conv_transpose2d_images);
        nb_free((float *)j.wpack);
        if (atomic_load(&j.failed)) return failed(who, z);
    }
    nb_tensor *in[3] = {x, w, b};
    z = nb_record(z, &conv_transpose2d_op, b ? 3 : 2, in);
    nb_save(z, x);
    nb_save(z, w);
    set_attrs(z, &a);
    return z;
}

/* ---- conv2d_weight_grad -------------------------------------------------------------------
 * x [N,C,H,W], gy [N,O,oH,oW] -> dw [O,C/G,kh,kw], the gradient of
 * sum(gy · conv2d(x, w)) with respect to w. */

static void weight_grad_backward(nb_tensor *v, nb_tensor *g, nb_tensor **gx) {
    nb_conv2d_opts o = opts_of(v);
    nb_tensor *x = nb_saved(v, 0), *gy = nb_saved(v, 1);
    if (!x || !gy) return;
    if (nb_needs_input_grad(v, 1)) gx[1] = nb_conv2d(x, g, NULL, &o);
    if (nb_needs_input_grad(v, 0)) {
        for (int i = 0; i < 2; i++) {
            int64_t k = nb_shape(v)[2 + i], s = o.stride[i], p = o.padding[i], d = o.dilation[i];
            int64_t full = (nb_shape(gy)[2 + i] - 1) * s - 2 * p + d * (k - 1) + 1;
            o.output_padding[i] = (int)(nb_shape(x)[2 + i] - full);
        }
        gx[0] = nb_conv_transpose2d(gy, g, NULL, &o);
    }
}
static nb_tensor *weight_grad_jvp(nb_tensor *v, nb_tensor *const *t) {
    nb_conv2d_opts o = opts_of(v);
    nb_tensor *x = nb_saved(v, 0), *gy = nb_saved(v, 1);
    int64_t kh = nb_dim(v, 2), kw = nb_dim(v, 3);
    return plus(t[0] ? nb_conv2d_weight_grad(t[0], gy, kh, kw, &o) : NULL,
                t[1] ? nb_conv2d_weight_grad(x, t[1], kh, kw, &o) : NULL);
}
static const nb_op weight_grad_op = {"conv2d_weight_grad", weight_grad_backward, weight_grad_jvp};

/* At most this many floats of partial sums, and at most CONV_MAX_CHUNKS
 * chunks: both depend on the shape only. */
#define CONV_PART_FLOATS ((int64_t)1 << 22)
#define CONV_MAX_CHUNKS 16

nb_tensor *nb_conv2d_weight_grad(nb_tensor *x, nb_tensor *gy, int64_t kh, int64_t kw,
                                 const nb_conv2d_opts *opts) {
    static const char who[] = "nb_conv2d_weight_grad";
    if (!x || !gy) return NULL;
    conv_args a;
    if (!read_opts(who, opts, &a)) return NULL;
    if (nb_ndim(x) != 4 || nb_ndim(gy) != 4 || kh < 1 || kw < 1) {
        nb_set_error("%s: x %s and grad_y %s must both be 4-D ([N,C,H,W], [N,O,oH,oW]) and the "
                     "kernel %lldx%lld non-empty",
                     who, SHAPE(x), SHAPE(gy), (long long)kh, (long long)kw);
        return NULL;
    }
    if (a.op[0] || a.op[1]) {
        nb_set_error("%s: output_padding (%lld,%lld) is for nb_conv_transpose2d only (x %s, "
                     "grad_y %s)",
                     who, (long long)a.op[0], (long long)a.op[1], SHAPE(x), SHAPE(gy));
        return NULL;
    }
    const int64_t *xs = nb_shape(x), *gs = nb_shape(gy);
    conv_job j = {.x = nb_data(x), .u = nb_data(gy)};
    fill_geom(&j.g, x, gs[1], kh, kw, &a);
    if (xs[1] % a.groups || gs[1] % a.groups || xs[0] != gs[0] || j.g.oh != gs[2] ||
        j.g.ow != gs[3] || j.g.oh < 1 || j.g.ow < 1) {
        nb_set_error("%s: x %s and grad_y %s do not fit a %lldx%lld kernel with stride "
                     "(%lld,%lld), padding (%lld,%lld), dilation (%lld,%lld) and groups %lld: "
                     "the batch must match, both channel counts be multiples of groups, and "
                     "grad_y be %lldx%lld",
                     who, SHAPE(x), SHAPE(gy), (long long)kh, (long long)kw, (long long)a.s[0],
                     (long long)a.s[1], (long long)a.p[0], (long long)a.p[1], (long long)a.d[0],
                     (long long)a.d[1], (long long)a.groups, (long long)j.g.oh, (long long)j.g.ow);
        return NULL;
    }
    nb_tensor *v = nb_empty(NB_SHAPE(j.g.o, j.g.cg, kh, kw));
    if (!v) return NULL;
    float *dw = nb_data_mut(v);
    int64_t size = j.g.o * j.g.k;
    if (size > 0 && j.g.n == 0) memset(dw, 0, sizeof(float) * (size_t)size);
    if (size > 0 && j.g.n > 0) {
        int64_t nchunk = j.g.n < CONV_MAX_CHUNKS ? j.g.n : CONV_MAX_CHUNKS;
        if (nchunk * size > CONV_PART_FLOATS) nchunk = CONV_PART_FLOATS / size;
        if (nchunk < 1) nchunk = 1;
        j.nchunk = nchunk;
        j.transposed = j.g.k < j.g.og;
        bool direct_out = nchunk == 1 && !j.transposed;
        j.part = direct_out ? dw : nb_malloc(sizeof(float) * (size_t)(nchunk * size));
        if (!j.part) return failed(who, v);
        run_items(&j, nchunk, j.g.o * j.g.ohw * j.g.k * (j.g.n / nchunk), weight_grad_chunks);
        if (!direct_out) {
            /* dw = the partials summed in chunk order (transposed back) */
            int64_t og = j.g.og, k = j.g.k;
            for (int64_t gr = 0; gr < j.g.groups; gr++)
                for (int64_t o = 0; o < og; o++)
                    for (int64_t kk = 0; kk < k; kk++) {
                        int64_t at = gr * og * k + (j.transposed ? kk * og + o : o * k + kk);
                        float sum = j.part[at];
                        for (int64_t ch = 1; ch < nchunk; ch++) sum += j.part[ch * size + at];
                        dw[gr * og * k + o * k + kk] = sum;
                    }
            nb_free(j.part);
        }
        if (atomic_load(&j.failed)) return failed(who, v);
    }
    nb_tensor *in[2] = {x, gy};
    v = nb_record(v, &weight_grad_op, 2, in);
    nb_save(v, x);
    nb_save(v, gy);
    set_attrs(v, &a);
    return v;
}

/* ---- pooling ---------------------------------------------------------------------------
 * x [N,C,H,W] -> out [N,C,oH,oW], oH = (H + 2·ph - kh) / sh + 1 (floor). */

typedef struct pool_args {
    int64_t kh, kw, sh, sw, ph, pw, dh, dw, oh, ow;
    bool ceil_mode;
} pool_args;

/* PyTorch's pooling output size: rounded down, or up with ceil_mode as long
 * as the last window starts inside the input or its left padding. */
static int64_t pool_out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode) {
    int64_t span = in + 2 * p - d * (k - 1) - 1;
    if (in < 1 || span < 0) return 0;
    int64_t out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
    if (ceil_mode && (out - 1) * s >= in + p) out--;
    return out;
}

/* The first tap of window o that falls inside the input, or -1: the window
 * starts at o·s - p and its taps are d apart. */
static int64_t first_tap(int64_t o, int64_t in, int64_t s, int64_t p, int64_t d) {
    int64_t start = o * s - p;
    int64_t pos = start >= 0 ? start : start + (-start + d - 1) / d * d;
    return pos < in ? pos : -1;
}

static bool read_pool(const char *who, const nb_tensor *x, int kh, int kw,
                      const nb_pool2d_opts *o, pool_args *a) {
    nb_pool2d_opts z = {0};
    if (!o) o = &z;
    a->kh = kh, a->kw = kw;
    a->sh = o->stride[0] ? o->stride[0] : kh;
    a->sw = o->stride[1] ? o->stride[1] : kw;
    a->ph = o->padding[0], a->pw = o->padding[1];
    a->dh = o->dilation[0] ? o->dilation[0] : 1;
    a->dw = o->dilation[1] ? o->dilation[1] : 1;
    a->ceil_mode = o->ceil_mode;
    if (nb_ndim(x) != 4 || kh < 1 || kw < 1 || a->sh < 1 || a->sw < 1 || a->ph < 0 ||
        a->pw < 0 || 2 * a->ph > kh || 2 * a->pw > kw || a->dh < 1 || a->dw < 1) {
        nb_set_error("%s: x %s, kernel %dx%d, stride (%d,%d), padding (%d,%d), dilation (%d,%d): x "
                     "must be 4-D [N,C,H,W], kernel, stride and dilation positive, padding at most "
                     "half the kernel",
                     who, SHAPE(x), kh, kw, o->stride[0], o->stride[1], o->padding[0],
                     o->padding[1], o->dilation[0], o->dilation[1]);
        return false;
    }
    int64_t h = nb_shape(x)[2], w = nb_shape(x)[3];
    a->oh = pool_out_size(h, kh, a->sh, a->ph, a->dh, a->ceil_mode);
    a->ow = pool_out_size(w, kw, a->sw, a->pw, a->dw, a->ceil_mode);
    if (a->oh < 1 || a->ow < 1) {
        nb_set_error("%s: x %s is smaller than the %dx%d window with padding (%d,%d) and dilation "
                     "(%lld,%lld)",
                     who, SHAPE(x), kh, kw, o->padding[0], o->padding[1], (long long)a->dh,
                     (long long)a->dw);
        return false;
    }
    /* a dilated window can step over a small input entirely */
    for (int64_t i = 0; i < a->oh + a->ow; i++) {
        bool row = i < a->oh;
        if (first_tap(row ? i : i - a->oh, row ? h : w, row ? a->sh : a->sw, row ? a->ph : a->pw,
                      row ? a->dh : a->dw) < 0) {
            nb_set_error("%s: x %s: window %lld of the %s holds no element of x with dilation "
                         "(%lld,%lld)",
                         who, SHAPE(x), (long long)(row ? i : i - a->oh), row ? "height" : "width",
                         (long long)a->dh, (long long)a->dw);
            return false;
        }
    }
    return true;
}

/* max_pool2d: out[p][oy][ox] = max over the window of x[p] (padding is
 * -inf: never selected), idx[p][oy·oW + ox] = iy·W + ix of that element. */
typedef struct pool_job {
    pool_args a;
    int64_t h, w;
    const float *x;
    float *out, *idx;
} pool_job;

/* m, i = v, vi when v > m or v is NaN, with bit masks rather than a branch
 * (random data would mispredict it half the time) */
static inline void max_step(float *m, float *i, float v, float vi) {
    uint32_t mb, ib, vb, vib, take = -(uint32_t)((v > *m) | (v != v));
    memcpy(&mb, m, 4);
    memcpy(&ib, i, 4);
    memcpy(&vb, &v, 4);
    memcpy(&vib, &vi, 4);
    mb = (vb & take) | (mb & ~take);
    ib = (vib & take) | (ib & ~take);
    memcpy(m, &mb, 4);
    memcpy(i, &ib, 4);
}

/* One output row at a time, tap by tap: out and idx start at the first
 * element of each window inside x, and tap (i, j) of every window of the
 * row is compared in one loop over ox, which vectorises. Taps are visited
 * in the window's row-major order, so each window still sees its elements
 * in PyTorch's order and keeps the first maximum; the comparison
 * v > m || isnan(v) is PyTorch's too. */
/* The common 2x2 window at stride 2 (no padding, no dilation, no window
 * past the edge): each window's four elements are read once, in the same row-major order, the
 * maximum kept in registers. Same comparisons, same result. */
static void max_pool_2x2_planes(const pool_job *j, int64_t begin, int64_t end) {
    const pool_args *a = &j->a;
    for (int64_t p = begin; p < end; p++) {
        const float *x = j->x + p * j->h * j->w;
        for (int64_t oy = 0; oy < a->oh; oy++) {
            const float *r0 = x + 2 * oy * j->w, *r1 = r0 + j->w;
            float *out = j->out + (p * a->oh + oy) * a->ow, *idx = j->idx + (p * a->oh + oy) * a->ow;
            float base = (float)(2 * oy * j->w), below = base + (float)j->w;
            int64_t ox = 0;
#if defined(__SSE2__)
            /* four windows at a time: the even and odd columns of eight
             * floats are the windows' left and right elements */
            const __m128 steps = _mm_set_ps(6, 4, 2, 0);
            for (; ox + 4 <= a->ow; ox += 4) {
                __m128 t0 = _mm_loadu_ps(r0 + 2 * ox), t1 = _mm_loadu_ps(r0 + 2 * ox + 4);
                __m128 u0 = _mm_loadu_ps(r1 + 2 * ox), u1 = _mm_loadu_ps(r1 + 2 * ox + 4);
                __m128 v[3] = {_mm_shuffle_ps(t0, t1, _MM_SHUFFLE(3, 1, 3, 1)),
                               _mm_shuffle_ps(u0, u1, _MM_SHUFFLE(2, 0, 2, 0)),
                               _mm_shuffle_ps(u0, u1, _MM_SHUFFLE(3, 1, 3, 1))};
                __m128 first = _mm_add_ps(_mm_set1_ps(base), _mm_add_ps(_mm_set1_ps((float)(2 * ox)), steps));
                __m128 vi[3] = {_mm_add_ps(first, _mm_set1_ps(1)),
                                _mm_add_ps(_mm_set1_ps(below), _mm_add_ps(_mm_set1_ps((float)(2 * ox)), steps)),
                                _mm_add_ps(_mm_add_ps(_mm_set1_ps(below), _mm_add_ps(_mm_set1_ps((float)(2 * ox)), steps)),
                                           _mm_set1_ps(1))};
                __m128 m = _mm_shuffle_ps(t0, t1, _MM_SHUFFLE(2, 0, 2, 0)), i = first;
                for (int k = 0; k < 3; k++) { /* max_step, four lanes */
                    __m128 take = _mm_or_ps(_mm_cmpgt_ps(v[k], m), _mm_cmpunord_ps(v[k], v[k]));
                    m = _mm_or_ps(_mm_and_ps(take, v[k]), _mm_andnot_ps(take, m));
                    i = _mm_or_ps(_mm_and_ps(take, vi[k]), _mm_andnot_ps(take, i));
                }
                _mm_storeu_ps(out + ox, m);
                _mm_storeu_ps(idx + ox, i);
            }
#endif
            for (; ox < a->ow; ox++) {
                float m = r0[2 * ox], i = base + (float)(2 * ox);
                max_step(&m, &i, r0[2 * ox + 1], base + (float)(2 * ox + 1));
                max_step(&m, &i, r1[2 * ox], below + (float)(2 * ox));
                max_step(&m, &i, r1[2 * ox + 1], below + (float)(2 * ox + 1));
                out[ox] = m;
                idx[ox] = i;
            }
        }
    }
}

static void max_pool_planes(void *ctx, int64_t begin, int64_t end) {
    const pool_job *j = ctx;
    const pool_args *a = &j->a;
    if (a->kh == 2 && a->kw == 2 && a->sh == 2 && a->sw == 2 && a->ph == 0 && a->pw == 0 &&
        a->dh == 1 && a->dw == 1 && 2 * a->oh <= j->h && 2 * a->ow <= j->w) {
        max_pool_2x2_planes(j, begin, end);
        return;
    }
    for (int64_t p = begin; p < end; p++) {
        const float *x = j->x + p * j->h * j->w;
        for (int64_t oy = 0; oy < a->oh; oy++) {
            float *out = j->out + (p * a->oh + oy) * a->ow, *idx = j->idx + (p * a->oh + oy) * a->ow;
            int64_t y0 = oy * a->sh - a->ph;
            int64_t fy = first_tap(oy, j->h, a->sh, a->ph, a->dh); /* read_pool: never -1 */
            for (int64_t ox = 0; ox < a->ow; ox++) {
                int64_t fx = first_tap(ox, j->w, a->sw, a->pw, a->dw);
                out[ox] = x[fy * j->w + fx];
                idx[ox] = (float)(fy * j->w + fx);
            }
            for (int64_t i = 0; i < a->kh; i++) {
                int64_t iy = y0 + i * a->dh;
                if (iy < 0 || iy >= j->h) continue;
                for (int64_t t = 0; t < a->kw; t++) {
                    int64_t lo, hi, off = t * a->dw - a->pw;
                    tap_range(a->ow, j->w, a->sw, off, &lo, &hi);
                    const float *xr = x + iy * j->w + off;
                    float base = (float)(iy * j->w + off);
                    for (int64_t ox = lo; ox < hi; ox++)
                        max_step(out + ox, idx + ox, xr[ox * a->sw], base + (float)(ox * a->sw));
                }
            }
        }
    }
}

/* dx = g scattered to the saved argmax of each window: scatter_add over
 * the flattened planes [N·C, H·W], whose gradient in g is a gather. */
/* max_pool2d's input gradient as one op, max_pool2d_grad(g, idx) -> gx
 * [N,C,H,W]: each plane starts at zero and each window adds its g at its
 * saved argmax, in window order (windows that overlap may share one). One
 * pass, parallel over planes, instead of zeros, a copy of them and a
 * checked scatter_add. It is linear in g: its gradient is gg gathered at
 * the argmax, which is max_pool2d's own forward-mode rule, and its
 * tangent the same op applied to g's tangent. The indices were made by
 * max_pool2d, so they need no checking. */
typedef struct unpool_job {
    const float *g, *idx;
    float *out;
    int64_t in_plane, out_plane;
} unpool_job;

static void unpool_planes(void *ctx, int64_t begin, int64_t end) {
    const unpool_job *j = ctx;
    for (int64_t pl = begin; pl < end; pl++) {
        float *o = j->out + pl * j->in_plane;
        const float *g = j->g + pl * j->out_plane, *idx = j->idx + pl * j->out_plane;
        memset(o, 0, sizeof(float) * (size_t)j->in_plane);
        for (int64_t q = 0; q < j->out_plane; q++) o[(int64_t)idx[q]] += g[q];
    }
}

static nb_tensor *max_pool2d_grad(nb_tensor *g, nb_tensor *idx, const int64_t *xshape);

static nb_tensor *gather_planes(nb_tensor *t, nb_tensor *idx, const nb_tensor *like) {
    const int64_t *s = nb_shape(t);
    nb_tensor *planes = nb_reshape(t, NB_SHAPE(s[0] * s[1], s[2] * s[3]));
    return nb_reshape(nb_gather(planes, 1, idx), nb_ndim(like), nb_shape(like));
}

static void max_pool2d_grad_backward(nb_tensor *gx, nb_tensor *gg, nb_tensor **grads) {
    nb_tensor *idx = nb_saved(gx, 0);
    if (idx) grads[0] = gather_planes(gg, idx, nb_input(gx, 0));
}
static nb_tensor *max_pool2d_grad_jvp(nb_tensor *gx, nb_tensor *const *t) {
    nb_tensor *idx = nb_saved(gx, 0);
    return t[0] && idx ? max_pool2d_grad(t[0], idx, nb_shape(gx)) : NULL;
}
static const nb_op max_pool2d_grad_op = {"max_pool2d_grad", max_pool2d_grad_backward,
                                         max_pool2d_grad_jvp};

static nb_tensor *max_pool2d_grad(nb_tensor *g, nb_tensor *idx, const int64_t *xshape) {
    if (!g || !idx) return NULL;
    nb_tensor *gx = nb_empty(4, xshape);
    if (!gx) return NULL;
    unpool_job j = {nb_data(g), nb_data(idx), nb_data_mut(gx), xshape[2] * xshape[3],
                    nb_shape(g)[2] * nb_shape(g)[3]};
    nb_parallel_for(xshape[0] * xshape[1], CONV_CHUNK / (j.in_plane + j.out_plane + 1) + 1,
                    unpool_planes, &j);
    gx = nb_record(gx, &max_pool2d_grad_op, 1, &g);
    nb_save(gx, idx);
    return gx;
}

static void max_pool2d_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *x = nb_input(y, 0), *idx = nb_saved(y, 0);
    if (idx) gx[0] = max_pool2d_grad(g, idx, nb_shape(x));
}
/* dy = dx at the saved argmax of each window: a gather over the planes. */
static nb_tensor *max_pool2d_jvp(nb_tensor *y, nb_tensor *const *t) {
    nb_tensor *idx = nb_saved(y, 0);
    return t[0] && idx ? gather_planes(t[0], idx, y) : NULL;
}
static const nb_op max_pool2d_op = {"max_pool2d", max_pool2d_backward, max_pool2d_jvp};

nb_tensor *nb_max_pool2d(nb_tensor *x, int kh, int kw, const nb_pool2d_opts *opts) {
    if (!x) return NULL;
    pool_job j;
    if (!read_pool("nb_max_pool2d", x, kh, kw, opts, &j.a)) return NULL;
    const int64_t *s = nb_shape(x);
    j.h = s[2];
    j.w = s[3];
    nb_tensor *y = nb_empty(NB_SHAPE(s[0], s[1], j.a.oh, j.a.ow));
    nb_tensor *idx = nb_empty(NB_SHAPE(s[0] * s[1], j.a.oh * j.a.ow));
    if (!y || !idx) return NULL;
    j.x = nb_data(x);
    j.out = nb_data_mut(y);
    j.idx = nb_data_mut(idx);
    int64_t per_plane = j.a.oh * j.a.ow * kh * kw;
    nb_parallel_for(s[0] * s[1], CONV_CHUNK / (per_plane + 1) + 1, max_pool_planes, &j);
    y = nb_record(y, &max_pool2d_op, 1, &x);
    nb_save(y, idx);
    return y;
}

/* avg_pool2d: each plane convolved with a constant kernel of 1/(kh·kw),
 * zeros in the padding counted (PyTorch's count_include_pad). With
 * ceil_mode a last window may reach past the padding: the planes get zero
 * rows and columns at the end to hold it, and its divisor counts only what
 * lies within the padded input, so the output is the window sum times a
 * constant map of 1/divisor. */
static nb_tensor *pad_end(nb_tensor *x, int axis, int64_t extra) {
    if (extra <= 0) return x;
    int64_t shape[4];
    memcpy(shape, nb_shape(x), sizeof shape);
    shape[axis] = extra;
    nb_tensor *parts[2] = {x, nb_zeros(4, shape)};
    return parts[1] ? nb_concat(2, parts, axis) : NULL;
}

static nb_tensor *inverse_divisors(const pool_args *a, int64_t h, int64_t w) {
    nb_tensor *m = nb_empty(NB_SHAPE(a->oh, a->ow));
    if (!m) return NULL;
    float *d = nb_data_mut(m);
    for (int64_t oy = 0; oy < a->oh; oy++)
        for (int64_t ox = 0; ox < a->ow; ox++) {
            int64_t y0 = oy * a->sh - a->ph, x0 = ox * a->sw - a->pw;
            int64_t y1 = y0 + a->kh < h + a->ph ? y0 + a->kh : h + a->ph;
            int64_t x1 = x0 + a->kw < w + a->pw ? x0 + a->kw : w + a->pw;
            d[oy * a->ow + ox] = 1.0f / (float)((y1 - y0) * (x1 - x0));
        }
    return m;
}

nb_tensor *nb_avg_pool2d(nb_tensor *x, int kh, int kw, const nb_pool2d_opts *opts) {
    if (!x) return NULL;
    pool_args a;
    if (!read_pool("nb_avg_pool2d", x, kh, kw, opts, &a)) return NULL;
    if (a.dh != 1 || a.dw != 1) {
        nb_set_error("nb_avg_pool2d: dilation (%lld,%lld): average pooling has no dilation (as in "
                     "PyTorch)", (long long)a.dh, (long long)a.dw);
        return NULL;
    }
    const int64_t *s = nb_shape(x);
    nb_composite_begin();
    nb_tensor *planes = nb_reshape(x, NB_SHAPE(s[0] * s[1], 1, s[2], s[3]));
    nb_conv2d_opts co = {.stride = {(int)a.sh, (int)a.sw}, .padding = {(int)a.ph, (int)a.pw}};
    nb_tensor *y;
    if (!a.ceil_mode) {
        nb_tensor *k = nb_full(NB_SHAPE(1, 1, kh, kw), 1.0f / (float)(kh * kw));
        y = nb_conv2d(planes, k, NULL, &co);
    } else {
        /* rows and columns the last windows need beyond the padding */
        int64_t eh = (a.oh - 1) * a.sh + kh - (s[2] + 2 * a.ph);
        int64_t ew = (a.ow - 1) * a.sw + kw - (s[3] + 2 * a.pw);
        planes = pad_end(pad_end(planes, 2, eh), 3, ew);
        nb_tensor *sums = nb_conv2d(planes, nb_ones(NB_SHAPE(1, 1, kh, kw)), NULL, &co);
        y = nb_mul(sums, inverse_divisors(&a, s[2], s[3]));
    }
    return nb_composite_end(nb_reshape(y, NB_SHAPE(s[0], s[1], a.oh, a.ow)));
}

/* adaptive_avg_pool2d: PyTorch's windows [floor(i·H/oH), ceil((i+1)·H/oH));
 * when oH divides H they are the tiles of an avg_pool2d with kernel and
 * stride H/oH, the one case provided (1x1, the global average, among them). */
nb_tensor *nb_adaptive_avg_pool2d(nb_tensor *x, int64_t oh, int64_t ow) {
    if (!x) return NULL;
    if (nb_ndim(x) != 4 || oh < 1 || ow < 1 || nb_shape(x)[2] % oh || nb_shape(x)[3] % ow) {
        nb_set_error("nb_adaptive_avg_pool2d: x %s to %lldx%lld: x must be 4-D [N,C,H,W] and the "
                     "output size divide H and W (other sizes are not supported)",
                     SHAPE(x), (long long)oh, (long long)ow);
        return NULL;
    }
    if (oh == 1 && ow == 1) return nb_mean(x, NB_AXES(2, 3), true);
    int kh = (int)(nb_shape(x)[2] / oh), kw = (int)(nb_shape(x)[3] / ow);
    return nb_avg_pool2d(x, kh, kw, NULL);
}
