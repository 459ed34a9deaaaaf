/* gemm.h — single-precision matrix multiply, the kernel under matmul, dense
 * layers and convolutions.
 *
 * One entry point covers the four transpose combinations so that backward
 * formulas (which multiply by transposes) never materialise a transposed
 * copy. Results are bitwise identical whatever the thread count: work is only
 * ever split over blocks of C, never over the summed dimension.
 *
 * This header is internal to the library; it is not installed for users.
 */
#ifndef NB_GEMM_H
#define NB_GEMM_H

#include <stdbool.h>
#include <stdint.h>

/* C[m,n] = op(A)[m,k] · op(B)[k,n] + beta·C, row-major. op(A) = A (lda >= k)
 * or, when trans_a, A is stored [k,m] (lda >= m); likewise B. beta == 0 means
 * C is written without being read (NaNs in C do not propagate). k == 0 gives
 * beta·C. C must not overlap A or B. */
void nb_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
             const float *a, int64_t lda, const float *b, int64_t ldb,
             float beta, float *c, int64_t ldc);

/* An operand given by what it packs rather than by a matrix in memory, so
 * that a caller whose operand is implicit (a convolution's im2col matrix,
 * read straight from the image) need not build it first.
 *
 * pack(ctx, outer0, len, p0, kc, width, dst) writes the block of op(A) with
 * rows [outer0, outer0 + len), or of op(B) with columns [outer0, outer0 +
 * len), and depth [p0, p0 + kc), as panels of `width` rows (columns) each,
 * panel after panel, each stored depth-major: element (outer0 + q·width + o,
 * p0 + p) of panel q at dst[q·width·kc + p·width + o]. The last panel is
 * padded with zeros. It may run on any thread of the pool, several at once. */
/* A packer's usual step when its source runs along the depth: four source
 * rows become four columns of a panel, dst[p·width + k] = src[k][p] for
 * k < 4, p < n. */
void nb_gemm_transpose4(const float *const src[4], int64_t n, float *dst, int64_t width);

typedef void (*nb_gemm_pack_fn)(const void *ctx, int64_t outer0, int64_t len, int64_t p0,
                                int64_t kc, int width, float *dst);

/* C[m,n] = op(A) · op(B) + beta·C as nb_gemm computes it, always through
 * the packed kernels (the same arithmetic for any m, n, k > 0), with
 * either operand given by a packer; a NULL packer takes the matrix a (b)
 * as nb_gemm does. Returns false, having written nothing, when no packing
 * buffer could be had. */
bool nb_gemm_packed(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                    const float *a, int64_t lda, nb_gemm_pack_fn pack_a, const void *a_ctx,
                    const float *b, int64_t ldb, nb_gemm_pack_fn pack_b, const void *b_ctx,
                    float beta, float *c, int64_t ldc);

/* op(A) packed once, whole, for many products with the same A (a
 * convolution's weights against every image): nb_gemm_prepacked_size
 * floats, filled by nb_gemm_prepack_a, then given to nb_gemm_packed as
 * pack_a = nb_gemm_pack_prepacked with a_ctx pointing to an
 * nb_gemm_prepacked; each product then copies whole panels instead of
 * gathering them from A. */
typedef struct nb_gemm_prepacked {
    const float *data;
    int64_t k;
} nb_gemm_prepacked;

int64_t nb_gemm_prepacked_size(int64_t m, int64_t k);
void nb_gemm_prepack_a(bool trans_a, const float *a, int64_t lda, int64_t m, int64_t k,
                       float *dst);
void nb_gemm_pack_prepacked(const void *ctx, int64_t outer0, int64_t len, int64_t p0,
                            int64_t kc, int width, float *dst);

#endif
