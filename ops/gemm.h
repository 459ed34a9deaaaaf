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

#endif
