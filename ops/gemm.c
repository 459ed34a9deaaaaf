/* gemm.c — packed, cache-blocked single-precision GEMM.
 *
 * The layout follows Goto and van de Geijn ("Anatomy of high-performance
 * matrix multiplication", 2008) as refined by BLIS. C is cut into blocks:
 *
 *   for jc over n in steps of NC        B panel, kc x NC, packed once, shared
 *     for pc over k in steps of KC
 *       pack B[pc.., jc..] into NR-wide micro-panels
 *       parallel over (MC rows x NB columns) blocks of C:
 *         pack A[ic.., pc..] into MR-tall micro-panels     (per thread, L2)
 *         for each NR micro-panel of B                     (stays in L1)
 *           for each MR micro-panel of A
 *             micro-kernel: MR x NR tile of C += A panel · B panel
 *
 * The micro-kernel keeps its MR x NR tile in registers for the whole KC
 * loop, so each loaded value feeds MR or NR multiply-adds. Packing makes
 * every kernel read contiguous, aligned and zero padded: a tile at the edge
 * of C runs the very same kernel into a scratch tile and only the valid part
 * is copied out.
 *
 * Determinism. Each element of C is produced as: for each KC block in order,
 * a kernel sums its products from zero in k order, then adds that partial to
 * C. Which thread computes a tile, and in which order tiles are visited, do
 * not enter that arithmetic, and the blocking constants belong to the kernel
 * (chosen from the CPU), never to the thread count. So results are bitwise
 * identical for any number of threads. They may differ between CPUs, since
 * the AVX2/AVX-512 kernels use fused multiply-add.
 *
 * Size classes, all decided by the shape alone (never by the thread count):
 * products with a single row or column of output, no depth, or at most
 * NB_GEMM_TINY multiply-adds are plain loops, since packing or padding a tile
 * would cost more than the arithmetic; small products pack onto the stack;
 * the rest take packing buffers from a free list (so steady state allocates
 * nothing; the list is freed at exit), and from NB_GEMM_PARALLEL on they are
 * spread over the thread pool.
 *
 * Build knobs, for testing the fallbacks on a machine that has everything:
 * NB_GEMM_PORTABLE compiles only the portable kernel, NB_GEMM_NO_AVX512
 * leaves out the AVX-512 one.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "gemm.h"
#include "nb_autograd.h"

#include "parallel.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#if defined(__GNUC__) && defined(__x86_64__) && !defined(NB_GEMM_PORTABLE)
#define NB_GEMM_X86 1
#include <immintrin.h>
#else
#define NB_GEMM_X86 0
#endif

/* How a kernel writes its tile: the first KC block applies beta, the later
 * ones accumulate. */
enum { NB_STORE, NB_ADD, NB_SCALE };

/* Products with m·n·k at or below this skip packing: call overhead is all
 * there is to save. */
#define NB_GEMM_TINY ((int64_t)256)
/* Operands with rows of at most this many floats are read in place where
 * their layout allows (gemm_blocked, direct_stride) ... */
#define NB_DIRECT_LD ((int64_t)256)
/* ... and longer rows where a panel spans at most this many floats. */
#define NB_DIRECT_SPAN ((int64_t)65536)
/* Products with m·n·k at or above this are spread over the thread pool; below
 * it, waking workers costs more than it saves. */
#define NB_GEMM_PARALLEL ((int64_t)96 * 96 * 96)

/* Bounds over all kernels, for the stack scratch tile and panel. */
enum { NB_MR_MAX = 16, NB_NR_MAX = 32, NB_KC_MAX = 256 };

typedef void (*nb_kernel_fn)(int64_t kc, const float *restrict a, int64_t as,
                             const float *restrict b, int64_t bs, float *restrict c,
                             int64_t ldc, int mode, float beta);
/* The same for the valid h x w corner of an edge tile. */
typedef void (*nb_edge_fn)(int64_t kc, const float *restrict a, int64_t as,
                           const float *restrict b, int64_t bs, float *restrict c,
                           int64_t ldc, int mode, float beta, int64_t h,
                           int64_t w);

/* A micro-kernel and the blocking that suits it. kc bounds the summation
 * blocks (so it is part of the result); mc and nb only group tiles. */
typedef struct nb_gemm_arch {
    nb_kernel_fn kernel;
    nb_edge_fn edge; /* NULL: edge tiles go through a scratch tile */
    /* The same reading A as it is stored without a transpose: element
     * (i, p) of the panel at a[i·as + p]. For full-height tiles only; NULL
     * where the kernel has no such form (then A is packed). */
    nb_kernel_fn kernel_rows;
    nb_edge_fn edge_rows;
    /* Edge kernels read only the h rows of A they compute when h is a
     * multiple of this (0: they may read all mr), so an A read in place
     * needs no packing for such a tile either. */
    int edge_rows_step;
    int mr, nr;     /* tile of C held in registers */
    int64_t kc;     /* depth of a packed panel */
    int64_t mc;     /* most rows of A packed per block (multiple of mr) */
    int64_t nb;     /* most columns per parallel work item (multiple of nr) */
    int64_t nc;     /* columns of B packed per step (multiple of nr) */
} nb_gemm_arch;

/* ---- portable micro-kernel ------------------------------------------------
 * Plain loops over fixed-size arrays: the compiler unrolls them and keeps the
 * tile in vector registers (SSE on x86-64 without -march, NEON on arm64). */

#define P_MR 4
#define P_NR 16

static void kernel_portable(int64_t kc, const float *restrict a, int64_t as,
                            const float *restrict b, int64_t bs, float *restrict c,
                            int64_t ldc, int mode, float beta) {
    /* Flat arrays and a local copy of the B row: written this way both GCC
     * and Clang keep the tile in registers and vectorise along j; the
     * two-dimensional form defeats GCC's vectoriser. */
    float acc[P_MR * P_NR];
    for (int t = 0; t < P_MR * P_NR; t++)
        acc[t] = 0.0f;
    for (int64_t p = 0; p < kc; p++) {
        float bv[P_NR];
        for (int j = 0; j < P_NR; j++)
            bv[j] = b[p * bs + j];
        for (int i = 0; i < P_MR; i++) {
            float ai = a[p * as + i];
            for (int j = 0; j < P_NR; j++)
                acc[i * P_NR + j] += ai * bv[j];
        }
    }
    for (int i = 0; i < P_MR; i++) {
        float *ci = c + i * ldc;
        const float *ti = acc + i * P_NR;
        if (mode == NB_STORE) {
            for (int j = 0; j < P_NR; j++)
                ci[j] = ti[j];
        } else if (mode == NB_ADD) {
            for (int j = 0; j < P_NR; j++)
                ci[j] += ti[j];
        } else {
            /* Two statements so that no compiler fuses them: edge tiles
             * must round exactly like full ones. */
            for (int j = 0; j < P_NR; j++) {
                float s = beta * ci[j];
                ci[j] = s + ti[j];
            }
        }
    }
}

/* ---- x86-64 micro-kernels -------------------------------------------------
 * Compiled for AVX2+FMA and AVX-512 through target attributes and chosen at
 * run time, so the library itself needs no -march flag. Row i of the tile is
 * NR/W vector registers; each step broadcasts one value of the A panel and
 * multiply-adds it into its row. The accumulators are named variables made by
 * macros, not arrays: with arrays GCC keeps a memory copy of the tile and
 * stores it on every step, which halves the speed. */

#if NB_GEMM_X86

/* AVX2 + FMA: 6 x 16, twelve accumulators of 8 floats. */
#define X2_MR 6
#define X2_NR 16

#define X2_ROWS(F) F(0) F(1) F(2) F(3) F(4) F(5)
#define X2_DECL(i) __m256 c##i##a = _mm256_setzero_ps(), c##i##b = c##i##a;
#define X2_STEP(i)                                                  \
    {                                                               \
        __m256 ai = _mm256_broadcast_ss(a + i);                     \
        c##i##a = _mm256_fmadd_ps(ai, b0, c##i##a);                 \
        c##i##b = _mm256_fmadd_ps(ai, b1, c##i##b);                 \
    }
#define X2_ADD(i)                                                   \
    c##i##a = _mm256_add_ps(_mm256_loadu_ps(c + i * ldc), c##i##a); \
    c##i##b = _mm256_add_ps(_mm256_loadu_ps(c + i * ldc + 8), c##i##b);
#define X2_SCALE(i)                                                 \
    c##i##a = _mm256_add_ps(_mm256_mul_ps(vb, _mm256_loadu_ps(c + i * ldc)), c##i##a); \
    c##i##b = _mm256_add_ps(_mm256_mul_ps(vb, _mm256_loadu_ps(c + i * ldc + 8)), c##i##b);
#define X2_STORE(i)                                                 \
    _mm256_storeu_ps(c + i * ldc, c##i##a);                         \
    _mm256_storeu_ps(c + i * ldc + 8, c##i##b);

__attribute__((target("avx2,fma")))
static void kernel_avx2(int64_t kc, const float *restrict a, int64_t as,
                        const float *restrict b, int64_t bs, float *restrict c,
                        int64_t ldc, int mode, float beta) {
    X2_ROWS(X2_DECL)
    for (int64_t p = 0; p < kc; p++, a += as, b += bs) {
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
        X2_ROWS(X2_STEP)
    }
    __m256 vb = _mm256_set1_ps(beta);
    if (mode == NB_ADD) {
        X2_ROWS(X2_ADD)
    } else if (mode == NB_SCALE) {
        X2_ROWS(X2_SCALE)
    }
    X2_ROWS(X2_STORE)
}

#ifndef NB_GEMM_NO_AVX512
/* AVX-512: 12 x 32, twenty-four accumulators of 16 floats, leaving room in
 * the 32 registers for the two B vectors and the broadcast. */
#define X5_MR 12
#define X5_NR 32

#define X5_ROWS(F) F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7) F(8) F(9) F(10) F(11)
#define X5_DECL(i) __m512 c##i##a = _mm512_setzero_ps(), c##i##b = c##i##a;
#define X5_STEP(i)                                                  \
    {                                                               \
        __m512 ai = _mm512_set1_ps(a[i]);                           \
        c##i##a = _mm512_fmadd_ps(ai, b0, c##i##a);                 \
        c##i##b = _mm512_fmadd_ps(ai, b1, c##i##b);                 \
    }
#define X5_ADD(i)                                                   \
    c##i##a = _mm512_add_ps(_mm512_loadu_ps(c + i * ldc), c##i##a); \
    c##i##b = _mm512_add_ps(_mm512_loadu_ps(c + i * ldc + 16), c##i##b);
#define X5_SCALE(i)                                                 \
    c##i##a = _mm512_add_ps(_mm512_mul_ps(vb, _mm512_loadu_ps(c + i * ldc)), c##i##a); \
    c##i##b = _mm512_add_ps(_mm512_mul_ps(vb, _mm512_loadu_ps(c + i * ldc + 16)), c##i##b);
#define X5_STORE(i)                                                 \
    _mm512_storeu_ps(c + i * ldc, c##i##a);                         \
    _mm512_storeu_ps(c + i * ldc + 16, c##i##b);

/* The tile's write-back after the depth loop, as mode says. */
#define X5_WRITE_BACK                                               \
    __m512 vb = _mm512_set1_ps(beta);                               \
    if (mode == NB_ADD) {                                           \
        X5_ROWS(X5_ADD)                                             \
    } else if (mode == NB_SCALE) {                                  \
        X5_ROWS(X5_SCALE)                                           \
    }                                                               \
    X5_ROWS(X5_STORE)

__attribute__((target("avx512f")))
static void kernel_avx512(int64_t kc, const float *restrict a, int64_t as,
                          const float *restrict b, int64_t bs, float *restrict c,
                          int64_t ldc, int mode, float beta) {
    X5_ROWS(X5_DECL)
    for (int64_t p = 0; p < kc; p++, a += as, b += bs) {
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
        X5_ROWS(X5_STEP)
    }
    X5_WRITE_BACK
}

/* A read in place, row i of the tile at a + i·as, one float per depth step:
 * the broadcasts come from twelve rows, each cache line of a row serving
 * sixteen steps, so a product whose A is a batch of inputs (C = X·W) does
 * not copy X into panels first. The same multiply-adds in the same order as
 * the packed kernel. Rows are reached from four bases, three rows apart, so
 * that every address is a base plus as or 2·as. */
#define X5_STEP_ROWS(i)                                             \
    {                                                               \
        __m512 ai = _mm512_set1_ps(r##i);                           \
        c##i##a = _mm512_fmadd_ps(ai, b0, c##i##a);                 \
        c##i##b = _mm512_fmadd_ps(ai, b1, c##i##b);                 \
    }
#define X5_RL0 a0[p]
#define X5_RL1 a0[as + p]
#define X5_RL2 a0[2 * as + p]
#define X5_RL3 a3[p]
#define X5_RL4 a3[as + p]
#define X5_RL5 a3[2 * as + p]
#define X5_RL6 a6[p]
#define X5_RL7 a6[as + p]
#define X5_RL8 a6[2 * as + p]
#define X5_RL9 a9[p]
#define X5_RL10 a9[as + p]
#define X5_RL11 a9[2 * as + p]
#define X5_ROW_LOAD(i) const float r##i = X5_RL##i;
/* The bases of 4, 8 or 12 rows (ROWS4, ROWS8, ROWS): only rows that
 * exist, so no pointer is formed past A's last row. */
#define X5_BASES_X5_ROWS4 const float *a0 = a, *a3 = a + 3 * as;
#define X5_BASES_X5_ROWS8 X5_BASES_X5_ROWS4 const float *a6 = a + 6 * as;
#define X5_BASES_X5_ROWS X5_BASES_X5_ROWS8 const float *a9 = a + 9 * as;

__attribute__((target("avx512f")))
static void kernel_avx512_rows(int64_t kc, const float *restrict a, int64_t as,
                               const float *restrict b, int64_t bs, float *restrict c,
                               int64_t ldc, int mode, float beta) {
    X5_BASES_X5_ROWS
    X5_ROWS(X5_DECL)
    for (int64_t p = 0; p < kc; p++, b += bs) {
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
        X5_ROWS(X5_ROW_LOAD)
        X5_ROWS(X5_STEP_ROWS)
    }
    X5_WRITE_BACK
}

/* Edge tiles: h < 12 valid rows or w < 32 valid columns. Running the full
 * kernel into a scratch tile would spend a whole 12 x 32 tile of work on,
 * say, the last 4 rows of a 64-row product (a batch of 64, 64 filters),
 * and copy the result out element by element. These kernels compute only
 * 4, 8 or 12 rows and one or two vectors of columns, whichever covers the
 * edge, and write C through masks, so nothing outside the h x w corner is
 * read or written. Each element is the same chain of fused multiply-adds
 * from zero in k order as in the full kernel, so a value does not depend
 * on where the tiling puts it. */
#define X5_ROWS4(F) F(0) F(1) F(2) F(3)
#define X5_ROWS8(F) X5_ROWS4(F) F(4) F(5) F(6) F(7)
#define X5_DECL1(i) __m512 c##i##a = _mm512_setzero_ps();
#define X5_DECL2 X5_DECL
/* A step of one or two vectors of columns, row i's value in r<i>. */
#define X5_STEP_ROWS1(i) c##i##a = _mm512_fmadd_ps(_mm512_set1_ps(r##i), b0, c##i##a);
#define X5_STEP_ROWS2 X5_STEP_ROWS
#define X5_MASKED(i, half, mask, off)                               \
    {                                                               \
        __m512 t = c##i##half;                                      \
        if (mode == NB_ADD)                                         \
            t = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, c + i * ldc + off), t); \
        else if (mode == NB_SCALE)                                  \
            t = _mm512_add_ps(_mm512_mul_ps(vb, _mm512_maskz_loadu_ps(mask, c + i * ldc + off)), t); \
        _mm512_mask_storeu_ps(c + i * ldc + off, mask, t);          \
    }
#define X5_EDGE_STORE1(i) if (i < h) X5_MASKED(i, a, ma, 0)
#define X5_EDGE_STORE2(i) if (i < h) { X5_MASKED(i, a, ma, 0) X5_MASKED(i, b, mb, 16) }
#define X5_LOAD1 __m512 b0 = _mm512_loadu_ps(b);
#define X5_LOAD2 __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);

/* An edge kernel of ROWS x (16·COLS), reading row i's value at each depth
 * step through LOAD(i) (into r<i>), from BASES, moving on by NEXT_A. */
#define X5_EDGE_KERNEL_OF(name, ROWS, COLS, BASES, LOAD, NEXT_A)                  \
    __attribute__((target("avx512f")))                                           \
    static void name(int64_t kc, const float *restrict a, int64_t as,           \
                     const float *restrict b, int64_t bs, float *restrict c,     \
                     int64_t ldc, int mode, float beta, int64_t h,               \
                     __mmask16 ma, __mmask16 mb) {                               \
        (void)mb;                                                                \
        BASES                                                                    \
        ROWS(X5_DECL##COLS)                                                      \
        for (int64_t p = 0; p < kc; p++, b += bs NEXT_A) {                       \
            X5_LOAD##COLS                                                        \
            ROWS(LOAD)                                                           \
            ROWS(X5_STEP_ROWS##COLS)                                             \
        }                                                                        \
        __m512 vb = _mm512_set1_ps(beta);                                        \
        ROWS(X5_EDGE_STORE##COLS)                                                \
    }
/* Packed A (or Aᵀ read in place): row i at a[i], the next step as on. */
#define X5_PACKED_LOAD(i) const float r##i = a[i];
#define X5_NEXT_A , a += as
#define X5_EDGE_KERNEL(name, ROWS, COLS) \
    X5_EDGE_KERNEL_OF(name, ROWS, COLS, , X5_PACKED_LOAD, X5_NEXT_A)
/* The six kernels of a family, MAKE(name, rows, vectors of columns). */
#define X5_EDGE_KERNELS(MAKE, family)                                       \
    MAKE(family##_4x16, X5_ROWS4, 1) MAKE(family##_8x16, X5_ROWS8, 1)       \
    MAKE(family##_12x16, X5_ROWS, 1) MAKE(family##_4x32, X5_ROWS4, 2)       \
    MAKE(family##_8x32, X5_ROWS8, 2) MAKE(family##_12x32, X5_ROWS, 2)
X5_EDGE_KERNELS(X5_EDGE_KERNEL, edge_avx512)

/* Edge tiles with A read in place, as kernel_avx512_rows reads it: 4, 8 or
 * 12 rows, each of which is read, so h must be one of those (a narrower
 * tile's rows would read past A's last row). */
#define X5_EDGE_KERNEL_ROWS(name, ROWS, COLS) \
    X5_EDGE_KERNEL_OF(name, ROWS, COLS, X5_BASES_##ROWS, X5_ROW_LOAD, )
X5_EDGE_KERNELS(X5_EDGE_KERNEL_ROWS, edge_avx512_rows)

/* An edge kernel above: the valid h x w corner through masks ma, mb. */
typedef void (*x5_edge_fn)(int64_t kc, const float *restrict a, int64_t as,
                           const float *restrict b, int64_t bs, float *restrict c,
                           int64_t ldc, int mode, float beta, int64_t h, __mmask16 ma,
                           __mmask16 mb);

/* The narrowest of fns (16 or 32 columns, 4, 8 or 12 rows) that covers the
 * valid h x w corner, with its masks. */
__attribute__((target("avx512f")))
static void x5_edge(const x5_edge_fn fns[2][3], int64_t kc, const float *restrict a,
                    int64_t as, const float *restrict b, int64_t bs, float *restrict c,
                    int64_t ldc, int mode, float beta, int64_t h, int64_t w) {
    __mmask16 ma = (__mmask16)(w >= 16 ? 0xFFFF : (1u << w) - 1);
    __mmask16 mb = (__mmask16)(w >= 32 ? 0xFFFF : w > 16 ? (1u << (w - 16)) - 1 : 0);
    fns[w > 16][h <= 4 ? 0 : h <= 8 ? 1 : 2](kc, a, as, b, bs, c, ldc, mode, beta, h, ma, mb);
}

/* An edge function of the arch from a family of edge kernels: the one for
 * the valid h x w corner. */
#define X5_EDGE_FAMILY(name, family)                                                  \
    __attribute__((target("avx512f")))                                               \
    static void name(int64_t kc, const float *restrict a, int64_t as,               \
                     const float *restrict b, int64_t bs, float *restrict c,         \
                     int64_t ldc, int mode, float beta, int64_t h, int64_t w) {      \
        static const x5_edge_fn fns[2][3] = {                                        \
            {family##_4x16, family##_8x16, family##_12x16},                          \
            {family##_4x32, family##_8x32, family##_12x32}};                         \
        x5_edge(fns, kc, a, as, b, bs, c, ldc, mode, beta, h, w);                    \
    }
/* The valid h x w corner (1 <= h <= 12, 1 <= w <= 32) of a tile whose
 * packed panels have the full kernel's strides. */
X5_EDGE_FAMILY(edge_avx512, edge_avx512)
/* An edge tile of h = 4, 8 or 12 rows with A read in place. */
X5_EDGE_FAMILY(edge_avx512_rows, edge_avx512_rows)
#endif

#endif /* NB_GEMM_X86 */

/* kc: a 12 x 32 tile's B panel (32 KiB at kc = 256) stays in the 48 KiB L1
 * while A streams; mc: the packed A block (192 KiB) sits in L2; nc: the
 * packed B panel (2 MiB) in L3. Measured on Zen 5; flat within noise from kc
 * 192 to 512 and mc 96 to 384. */
static const nb_gemm_arch arch_portable = {kernel_portable, NULL, NULL, NULL, 0, P_MR, P_NR, 256, 128, 128, 2048};
#if NB_GEMM_X86
static const nb_gemm_arch arch_avx2 = {kernel_avx2, NULL, NULL, NULL, 0, X2_MR, X2_NR, 256, 144, 128, 2048};
#ifndef NB_GEMM_NO_AVX512
static const nb_gemm_arch arch_avx512 = {kernel_avx512, edge_avx512, kernel_avx512_rows, edge_avx512_rows,
                                          4, X5_MR, X5_NR, 256, 192, 128, 2048};
#endif
#endif

static const nb_gemm_arch *arch;
static pthread_once_t arch_once = PTHREAD_ONCE_INIT;

static void choose_arch(void) {
    arch = &arch_portable;
#if NB_GEMM_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        arch = &arch_avx2;
#ifndef NB_GEMM_NO_AVX512
    if (__builtin_cpu_supports("avx512f"))
        arch = &arch_avx512;
#endif
#endif
}

/* ---- packing buffers ------------------------------------------------------
 * A free list rather than thread-local storage: user threads come and go, and
 * a buffer parked in a dead thread's storage would be lost until exit. */

typedef struct nb_pack_buf {
    struct nb_pack_buf *next;
    float *data;
    size_t cap; /* floats */
} nb_pack_buf;

static nb_pack_buf *free_bufs;
static pthread_mutex_t bufs_lock = PTHREAD_MUTEX_INITIALIZER;
static bool bufs_registered; /* exit and fork handlers */

static void free_all_bufs(void) {
    pthread_mutex_lock(&bufs_lock);
    while (free_bufs) {
        nb_pack_buf *next = free_bufs->next;
        nb_free(free_bufs->data);
        nb_free(free_bufs);
        free_bufs = next;
    }
    pthread_mutex_unlock(&bufs_lock);
}

/* Another thread may have held the lock when the process forked; in the
 * child that thread no longer exists to release it. */
static void bufs_after_fork(void) { pthread_mutex_init(&bufs_lock, NULL); }

/* A 64-byte aligned buffer of at least `floats` floats, or NULL. */
static nb_pack_buf *buf_get(size_t floats) {
    pthread_mutex_lock(&bufs_lock);
    nb_pack_buf *buf = free_bufs;
    if (buf)
        free_bufs = buf->next;
    if (!bufs_registered) {
        bufs_registered = true;
        atexit(free_all_bufs);
        pthread_atfork(NULL, NULL, bufs_after_fork);
    }
    pthread_mutex_unlock(&bufs_lock);
    if (!buf) {
        buf = nb_malloc(sizeof *buf);
        if (!buf)
            return NULL;
        buf->data = NULL;
        buf->cap = 0;
    }
    if (buf->cap < floats) {
        size_t bytes = (floats * sizeof(float) + 63) & ~(size_t)63;
        nb_free(buf->data);
        buf->data = nb_aligned_alloc(64, bytes);
        buf->cap = buf->data ? bytes / sizeof(float) : 0;
        if (!buf->data) {
            nb_free(buf);
            return NULL;
        }
    }
    return buf;
}

static void buf_put(nb_pack_buf *buf) {
    pthread_mutex_lock(&bufs_lock);
    buf->next = free_bufs;
    free_bufs = buf;
    pthread_mutex_unlock(&bufs_lock);
}

/* ---- packing --------------------------------------------------------------
 * A block of op(A), rows [i0, i0+rows) and columns [p0, p0+kc), becomes
 * panels of mr rows, panel by panel, each stored k-major: element (i, p) of a
 * panel at p*mr + i. B likewise becomes panels of nr columns, element (p, j)
 * at p*nr + j. The last panel is padded with zeros, which add nothing to the
 * valid part of a tile. */

/* Packing op(A) untransposed, or op(B) transposed, transposes: each source
 * row becomes a column of the panel. Four rows at a time go through a 4x4
 * transpose in SSE registers (baseline x86-64). */
void nb_gemm_transpose4(const float *const src[4], int64_t kc, float *dst, int64_t width) {
    int64_t p = 0;
#if defined(__SSE2__)
    for (; p + 4 <= kc; p += 4) {
        __m128 r0 = _mm_loadu_ps(src[0] + p), r1 = _mm_loadu_ps(src[1] + p);
        __m128 r2 = _mm_loadu_ps(src[2] + p), r3 = _mm_loadu_ps(src[3] + p);
        _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
        _mm_storeu_ps(dst + p * width, r0);
        _mm_storeu_ps(dst + (p + 1) * width, r1);
        _mm_storeu_ps(dst + (p + 2) * width, r2);
        _mm_storeu_ps(dst + (p + 3) * width, r3);
    }
#endif
    for (; p < kc; p++)
        for (int k = 0; k < 4; k++)
            dst[p * width + k] = src[k][p];
}

/* One panel of a packed operand, `width` floats a depth step, from w
 * vectors of an operand ld floats apart, zeros after them: the vectors
 * run along the depth and are copied across (a row of B, a row of Aᵀ), or
 * run across and are transposed (a row of A, a row of Bᵀ), four at a
 * time. */
static void pack_panel_copy(const float *src, int64_t ld, int64_t w, int64_t kc, int width,
                            float *restrict dst) {
    for (int64_t p = 0; p < kc; p++) {
        float *d = dst + p * width;
        for (int64_t j = 0; j < w; j++)
            d[j] = src[p * ld + j];
        for (int64_t j = w; j < width; j++)
            d[j] = 0.0f;
    }
}

static void pack_panel_transpose(const float *src, int64_t ld, int64_t w, int64_t kc, int width,
                                 float *restrict dst) {
    int64_t j = 0;
    for (; j + 4 <= w; j += 4) {
        const float *rows[4] = {src + j * ld, src + (j + 1) * ld, src + (j + 2) * ld,
                                src + (j + 3) * ld};
        nb_gemm_transpose4(rows, kc, dst + j, width);
    }
    for (; j < w; j++)
        for (int64_t p = 0; p < kc; p++)
            dst[p * width + j] = src[j * ld + p];
    for (j = w; j < width; j++)
        for (int64_t p = 0; p < kc; p++)
            dst[p * width + j] = 0.0f;
}

static void pack_a(bool trans, const float *a, int64_t lda, int64_t i0,
                   int64_t rows, int64_t p0, int64_t kc, int mr,
                   float *restrict dst) {
    for (int64_t r = 0; r < rows; r += mr, dst += mr * kc) {
        int64_t h = rows - r < mr ? rows - r : mr;
        if (trans)
            pack_panel_copy(a + p0 * lda + i0 + r, lda, h, kc, mr, dst);
        else
            pack_panel_transpose(a + (i0 + r) * lda + p0, lda, h, kc, mr, dst);
    }
}

static void pack_b(bool trans, const float *b, int64_t ldb, int64_t p0,
                   int64_t kc, int64_t j0, int64_t cols, int nr,
                   float *restrict dst) {
    for (int64_t c = 0; c < cols; c += nr, dst += nr * kc) {
        int64_t w = cols - c < nr ? cols - c : nr;
        if (trans)
            pack_panel_transpose(b + (j0 + c) * ldb + p0, ldb, w, kc, nr, dst);
        else
            pack_panel_copy(b + p0 * ldb + j0 + c, ldb, w, kc, nr, dst);
    }
}

/* ---- the blocked driver ---------------------------------------------------- */

typedef struct nb_gemm_job {
    const nb_gemm_arch *arch;
    bool trans_a, trans_b;
    int64_t m, n, k;
    const float *a, *b;
    int64_t lda, ldb, ldc;
    float beta;
    float *c;
    /* the current step: columns [jc, jc+ncur), depth [pc, pc+kcur) */
    int64_t jc, ncur, pc, kcur;
    int mode;
    nb_gemm_pack_fn pack_a_fn, pack_b_fn; /* NULL: pack a and b */
    bool a_direct, b_direct; /* full panels read in place, not packed */
    const void *a_ctx, *b_ctx;
    int64_t row0, col0;     /* where this job's C starts in the packers' whole product */
    float *bpack;
    float *apack;           /* set when the caller packs A on its stack */
    int64_t mc, nb;         /* rows and columns of one work item */
    int64_t row_blocks, col_blocks; /* work items per column, per row */
} nb_gemm_job;

/* Writes a kernel's scratch tile into the valid h x w corner of C, rounding
 * exactly as the kernels do. */
/* How a first depth block writes C for this beta. */
static int store_mode(float beta) {
    return beta == 1.0f ? NB_ADD : beta == 0.0f ? NB_STORE : NB_SCALE;
}

static void store_edge(const float *t, int nr, int64_t h, int64_t w, float *c,
                       int64_t ldc, int mode, float beta) {
    for (int64_t i = 0; i < h; i++) {
        float *ci = c + i * ldc;
        const float *ti = t + i * nr;
        for (int64_t j = 0; j < w; j++) {
            if (mode == NB_STORE) {
                ci[j] = ti[j];
            } else if (mode == NB_ADD) {
                ci[j] += ti[j];
            } else {
                float s = beta * ci[j];
                ci[j] = s + ti[j];
            }
        }
    }
}

/* How many of h rows of an A that is read in place are read in place:
 * whole panels of mr, and the rest too where the edge kernels read only
 * the rows they compute; the rows after them are packed. */
static int64_t rows_in_place(const nb_gemm_arch *ar, int64_t h) {
    int64_t full = h / ar->mr * ar->mr;
    return ar->edge_rows_step && (h - full) % ar->edge_rows_step == 0 ? h : full;
}

/* C[i0.., j0..] for `rows` x `cols`, from a packed A block (or A in place)
 * and the packed B panels starting at column j0 (or B in place). */
static void macro_tile(const nb_gemm_job *job, const float *apack, int64_t i0,
                       int64_t rows, int64_t j0, int64_t cols) {
    const nb_gemm_arch *ar = job->arch;
    int mr = ar->mr, nr = ar->nr;
    int64_t kc = job->kcur;
    _Alignas(64) float scratch[NB_MR_MAX * NB_NR_MAX];
    for (int64_t jr = 0; jr < cols; jr += nr) {
        int64_t w = cols - jr < nr ? cols - jr : nr;
        const float *bp = job->bpack + (j0 - job->jc + jr) * kc;
        int64_t bs = nr;
        if (job->b_direct && w == nr) {
            bp = job->b + job->pc * job->ldb + j0 + jr;
            bs = job->ldb;
        }
        for (int64_t ir = 0; ir < rows; ir += mr) {
            int64_t h = rows - ir < mr ? rows - ir : mr;
            const float *ap = apack + ir * kc;
            int64_t as = mr;
            nb_kernel_fn kernel = ar->kernel;
            nb_edge_fn edge = ar->edge;
            bool in_place = job->a_direct && rows_in_place(ar, h) == h;
            if (in_place && job->trans_a) {
                ap = job->a + job->pc * job->lda + i0 + ir;
                as = job->lda;
            } else if (in_place) {
                ap = job->a + (i0 + ir) * job->lda + job->pc;
                as = job->lda;
                kernel = ar->kernel_rows;
                edge = ar->edge_rows;
            }
            float *ct = job->c + (i0 + ir) * job->ldc + j0 + jr;
            if (h == mr && w == nr) {
                kernel(kc, ap, as, bp, bs, ct, job->ldc, job->mode, job->beta);
            } else if (edge) {
                edge(kc, ap, as, bp, bs, ct, job->ldc, job->mode, job->beta, h, w);
            } else {
                ar->kernel(kc, ap, as, bp, bs, scratch, nr, NB_STORE, 0.0f);
                store_edge(scratch, nr, h, w, ct, job->ldc, job->mode, job->beta);
            }
        }
    }
}

/* Work items are the (row block, column block) pairs of the current step,
 * row block major, so a thread with consecutive items packs each row block of
 * A once. */
static void compute_items(void *ctx, int64_t begin, int64_t end) {
    const nb_gemm_job *job = ctx;
    const nb_gemm_arch *ar = job->arch;
    nb_pack_buf *buf = NULL;
    _Alignas(64) float small_pack[NB_MR_MAX * NB_KC_MAX];
    float *apack = job->apack;
    int64_t step = job->mc;
    if (!apack) {
        buf = buf_get((size_t)(job->mc * job->kcur));
        apack = buf ? buf->data : small_pack;
        /* Without a buffer, pack one micro-panel at a time on the stack:
         * slower, but the same arithmetic. */
        if (!buf)
            step = ar->mr;
    }
    int64_t packed_row = -1;
    for (int64_t it = begin; it < end; it++) {
        int64_t i0 = it / job->col_blocks * job->mc;
        int64_t j0 = job->jc + it % job->col_blocks * job->nb;
        int64_t rows = job->m - i0 < job->mc ? job->m - i0 : job->mc;
        int64_t cols = job->jc + job->ncur - j0 < job->nb ? job->jc + job->ncur - j0 : job->nb;
        for (int64_t sub = 0; sub < rows; sub += step) {
            int64_t h = rows - sub < step ? rows - sub : step;
            if (packed_row != i0 + sub) {
                /* read in place: at most a last, partial panel is packed */
                int64_t skip = job->a_direct ? rows_in_place(ar, h) : 0;
                if (job->pack_a_fn)
                    job->pack_a_fn(job->a_ctx, job->row0 + i0 + sub, h, job->pc, job->kcur,
                                   ar->mr, apack);
                else if (skip < h)
                    pack_a(job->trans_a, job->a, job->lda, i0 + sub + skip, h - skip, job->pc,
                           job->kcur, ar->mr, apack + skip * job->kcur);
                packed_row = i0 + sub;
            }
            macro_tile(job, apack, i0 + sub, h, j0, cols);
        }
    }
    if (buf)
        buf_put(buf);
}

static void pack_b_items(void *ctx, int64_t begin, int64_t end) {
    const nb_gemm_job *job = ctx;
    int nr = job->arch->nr;
    if (job->b_direct) { /* read in place: only a last, partial panel is packed */
        int64_t full = job->ncur / nr;
        if (begin < full)
            begin = full;
        if (begin >= end)
            return;
    }
    int64_t j0 = begin * nr;
    int64_t cols = end * nr < job->ncur ? end * nr - j0 : job->ncur - j0;
    if (job->pack_b_fn)
        job->pack_b_fn(job->b_ctx, job->col0 + job->jc + j0, cols, job->pc, job->kcur, nr,
                       job->bpack + j0 * job->kcur);
    else
        pack_b(job->trans_b, job->b, job->ldb, job->pc, job->kcur, job->jc + j0,
               cols, nr, job->bpack + j0 * job->kcur);
}

static int64_t div_up(int64_t x, int64_t y) { return (x + y - 1) / y; }

/* The size, a multiple of `unit`, of `blocks` nearly equal blocks covering
 * `len`: balanced work items. Only the grouping of tiles changes, never a
 * tile's origin, so the result does not depend on it. */
static int64_t block_size(int64_t len, int64_t blocks, int64_t unit) {
    return div_up(div_up(len, blocks), unit) * unit;
}

/* Splits an m x ncur step of C into work items: blocks of at most mc rows
 * and nb columns. */
static void plan_items(nb_gemm_job *job) {
    const nb_gemm_arch *ar = job->arch;
    job->mc = block_size(job->m, div_up(job->m, ar->mc), ar->mr);
    job->nb = block_size(job->ncur, div_up(job->ncur, ar->nb), ar->nr);
    job->row_blocks = div_up(job->m, job->mc);
    job->col_blocks = div_up(job->ncur, job->nb);
}

/* How many of the L1 cache's 64 sets (64-byte lines) rows ld floats apart
 * start in: a stride of 784 floats, 49 lines, visits every set; one of 512
 * floats only two, where a panel of many such rows would evict itself. */
static int64_t sets_visited(int64_t ld) {
    if (ld % 16 != 0)
        return 64; /* rows start at shifting offsets within lines */
    int64_t lines = ld / 16, sets = 64;
    while (lines % 2 == 0 && sets > 1)
        lines /= 2, sets /= 2;
    return sets;
}

/* Whether a panel of `depth` rows ld floats apart, one tile's width read
 * from each (Aᵀ or B), reads well in place: short rows always; longer ones
 * when they spread over the sets and the panel spans few pages (at most
 * 256 KiB, or every depth step is a TLB miss). */
static bool direct_stride(int64_t ld, int64_t depth) {
    if (ld <= NB_DIRECT_LD)
        return true;
    if (depth * ld > NB_DIRECT_SPAN)
        return false;
    return sets_visited(ld) >= 16;
}

/* Whether B is better read in place, whatever the span of its panels,
 * because A has so few rows (at most one block of mc) that packing B would
 * be paid back by too few tiles; not where B's rows all fall in one L1 set
 * (1024 floats apart), which was mixed. Measured on Zen 4, k = 512 to 784:
 * 64 to 192 rows of A against B's rows of 512 or 768 floats, 5-11% faster
 * in place (the Fashion-MNIST MLP's x·W among them). */
static bool few_rows_for_b(const nb_gemm_arch *ar, int64_t m, int64_t ldb) {
    return m <= ar->mc && sets_visited(ldb) >= 2;
}

/* Whether A without a transpose reads well in place: a tile reads twelve
 * rows along their length, a line of each serving sixteen depth steps, so
 * only twelve lines need to stay in L1 together, which they do unless all
 * fall in one set (rows 1024 floats apart). Measured on Zen 4: at n = 128
 * and 256 in place is 4% faster than packed, at 1024 10% slower. */
static bool direct_rows(int64_t ld) { return sets_visited(ld) >= 2; }

/* m·n·k <= limit, without overflowing for huge operands. */
static bool volume_at_most(int64_t m, int64_t n, int64_t k, int64_t limit) {
    return m <= limit && n <= limit / m && k <= limit / (m * n);
}

/* Depth blocks of equal size, at most the kernel's kc: k = 288 is two
 * blocks of 144, not 256 and a short 32 whose tile loads and stores would
 * cost as much as their arithmetic. */
static int64_t depth_block(const nb_gemm_arch *ar, int64_t k) { return div_up(k, div_up(k, ar->kc)); }

/* Floats of the packed B panel of a product with n columns. */
static int64_t b_panel_floats(const nb_gemm_arch *ar, int64_t n, int64_t k) {
    int64_t ncmax = n < ar->nc ? n : ar->nc;
    return div_up(ncmax, ar->nr) * ar->nr * depth_block(ar, k);
}

/* The product on the calling thread, B packed into bpack (b_panel_floats
 * of them) and A into apack, or into buffers of its own when apack is
 * NULL. */
static void gemm_serial(nb_gemm_job *job, float *bpack, float *apack) {
    const nb_gemm_arch *ar = job->arch;
    int64_t kcmax = depth_block(ar, job->k);
    /* Where an operand's panel is already laid out as the kernel reads it
     * (op(A) = Aᵀ: each depth step is mr consecutive floats of a row of A;
     * op(B) = B: nr consecutive floats of a row of B; or A as it is, with
     * the kernel that reads rows), full panels are read in place at the
     * matrix's stride instead of being copied first. The kernel does the
     * same arithmetic either way; direct_stride and the two below say where
     * that reads well. */
    job->a_direct = !job->pack_a_fn && (job->trans_a ? direct_stride(job->lda, kcmax)
                                                     : ar->kernel_rows && direct_rows(job->lda));
    job->b_direct = !job->trans_b && !job->pack_b_fn &&
                    (direct_stride(job->ldb, kcmax) || few_rows_for_b(ar, job->m, job->ldb));
    job->bpack = bpack;
    job->apack = apack;
    for (int64_t jc = 0; jc < job->n; jc += ar->nc) {
        job->jc = jc;
        job->ncur = job->n - jc < ar->nc ? job->n - jc : ar->nc;
        plan_items(job);
        for (int64_t pc = 0; pc < job->k; pc += kcmax) {
            job->pc = pc;
            job->kcur = job->k - pc < kcmax ? job->k - pc : kcmax;
            job->mode = pc > 0 ? NB_ADD : store_mode(job->beta);
            pack_b_items(job, 0, div_up(job->ncur, ar->nr));
            compute_items(job, 0, job->row_blocks * job->col_blocks);
        }
    }
}

/* A parallel product is cut into one band of C per thread, of whole tiles,
 * across its columns when it has a column of tiles for every thread, else
 * across its rows; each band is a product of its own, packing its own
 * operands, from the first depth block to the last. So the threads meet
 * once, at the end, not twice per depth block (once B is packed, once the
 * block is done) as when they share one packed B; what that costs is A (or
 * B) packed by each thread, a fraction threads/n (or /m) of the work. */
enum { NB_MAX_BANDS = 64 };

typedef struct gemm_bands {
    const nb_gemm_job *job;
    bool by_rows;
    int64_t count, panels; /* bands, and tiles across the cut dimension */
    float *bpack[NB_MAX_BANDS];
} gemm_bands;

static void band_range(const gemm_bands *bd, int64_t band, int64_t *lo, int64_t *hi) {
    int64_t unit = bd->by_rows ? bd->job->arch->mr : bd->job->arch->nr;
    int64_t len = bd->by_rows ? bd->job->m : bd->job->n;
    *lo = band * bd->panels / bd->count * unit;
    *hi = (band + 1) * bd->panels / bd->count * unit;
    if (*hi > len)
        *hi = len;
}

static void band_items(void *ctx, int64_t begin, int64_t end) {
    const gemm_bands *bd = ctx;
    for (int64_t band = begin; band < end; band++) {
        nb_gemm_job sub = *bd->job;
        int64_t lo, hi;
        band_range(bd, band, &lo, &hi);
        if (bd->by_rows) {
            sub.m = hi - lo;
            sub.row0 += lo;
            sub.c += lo * sub.ldc;
            if (sub.a) /* NULL when a packer gives A */
                sub.a += sub.trans_a ? lo : lo * sub.lda;
        } else {
            sub.n = hi - lo;
            sub.col0 += lo;
            sub.c += lo;
            if (sub.b)
                sub.b += sub.trans_b ? lo * sub.ldb : lo;
        }
        gemm_serial(&sub, bd->bpack[band], NULL);
    }
}

/* Packed operands of a product at most this many floats go on the stack:
 * small products then take no lock and no allocation. */
enum { NB_STACK_FLOATS = 8192 };

/* `stack` holds NB_STACK_FLOATS floats. Returns false, having written
 * nothing, only when no packing buffer could be had: every buffer is taken
 * before any band starts. */
static bool gemm_blocked(nb_gemm_job *job, float *stack) {
    const nb_gemm_arch *ar = job->arch;
    int64_t row_panels = div_up(job->m, ar->mr), col_panels = div_up(job->n, ar->nr);
    int64_t threads = volume_at_most(job->m, job->n, job->k, NB_GEMM_PARALLEL - 1)
                          ? 1 : nb_get_num_threads();
    gemm_bands bd = {.job = job, .by_rows = col_panels < threads && row_panels > col_panels};
    bd.panels = bd.by_rows ? row_panels : col_panels;
    bd.count = threads < bd.panels ? threads : bd.panels;
    if (bd.count > NB_MAX_BANDS)
        bd.count = NB_MAX_BANDS;
    if (bd.count <= 1) {
        int64_t bsize = b_panel_floats(ar, job->n, job->k);
        int64_t asize = div_up(job->m < ar->mc ? job->m : ar->mc, ar->mr) * ar->mr *
                        depth_block(ar, job->k);
        /* Both sizes are multiples of 16 floats, so both stack panels stay
         * 64-byte aligned. */
        if (asize + bsize <= NB_STACK_FLOATS) {
            gemm_serial(job, stack, stack + bsize);
            return true;
        }
        nb_pack_buf *bbuf = buf_get((size_t)bsize);
        if (!bbuf)
            return false;
        gemm_serial(job, bbuf->data, NULL);
        buf_put(bbuf);
        return true;
    }
    nb_pack_buf *bufs[NB_MAX_BANDS];
    for (int64_t band = 0; band < bd.count; band++) {
        int64_t lo, hi;
        band_range(&bd, band, &lo, &hi);
        bufs[band] = buf_get((size_t)b_panel_floats(ar, bd.by_rows ? job->n : hi - lo, job->k));
        if (!bufs[band]) {
            while (band-- > 0)
                buf_put(bufs[band]);
            return false;
        }
        bd.bpack[band] = bufs[band]->data;
    }
    nb_parallel_for(bd.count, 1, band_items, &bd);
    for (int64_t band = 0; band < bd.count; band++)
        buf_put(bufs[band]);
    return true;
}

/* ---- vector-shaped and empty products -------------------------------------
 * When op(A) is a single row or op(B) a single column, packing would cost as
 * much as the arithmetic and pad a tile to one useful row or column; these
 * loops read the operands in place instead. */

/* x·y over k, strided, in eight interleaved partial sums combined in a fixed
 * order. The contiguous case is a separate loop only so that it vectorises;
 * it performs exactly the same operations. */
/* The tail (fewer than eight terms) is a block of products padded with
 * zeros, added like a full block: the padding adds +0 to its partial sums,
 * which changes none of them (a partial sum starts at +0 and so is never
 * -0, the one value that adding +0 would change), and the sums stay in
 * vector registers where a loop over the tail indexed them one at a time
 * through memory. */
static float dot(const float *x, int64_t sx, const float *y, int64_t sy,
                 int64_t k) {
#if defined(__SSE2__)
    if (sx == 1 && sy == 1) {
        /* The same sums written for SSE: partial sums 0-3 in s0, 4-7 in
         * s1, each added a product (rounded first, never fused), then the
         * tree ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)). */
        __m128 s0 = _mm_setzero_ps(), s1 = s0;
        int64_t p = 0;
        for (; p + 8 <= k; p += 8) {
            s0 = _mm_add_ps(s0, _mm_mul_ps(_mm_loadu_ps(x + p), _mm_loadu_ps(y + p)));
            s1 = _mm_add_ps(s1, _mm_mul_ps(_mm_loadu_ps(x + p + 4), _mm_loadu_ps(y + p + 4)));
        }
        if (p < k) {
            float prod[8] = {0};
            for (int l = 0; p + l < k; l++)
                prod[l] = x[p + l] * y[p + l];
            s0 = _mm_add_ps(s0, _mm_loadu_ps(prod));
            s1 = _mm_add_ps(s1, _mm_loadu_ps(prod + 4));
        }
        /* lane 0 of each: (s0 + s1) + (s2 + s3), and likewise for s1 */
        s0 = _mm_add_ps(s0, _mm_shuffle_ps(s0, s0, _MM_SHUFFLE(2, 3, 0, 1)));
        s1 = _mm_add_ps(s1, _mm_shuffle_ps(s1, s1, _MM_SHUFFLE(2, 3, 0, 1)));
        s0 = _mm_add_ss(s0, _mm_movehl_ps(s0, s0));
        s1 = _mm_add_ss(s1, _mm_movehl_ps(s1, s1));
        return _mm_cvtss_f32(_mm_add_ss(s0, s1));
    }
#endif
    float s[8] = {0};
    int64_t p = 0;
    if (sx == 1 && sy == 1) {
        for (; p + 8 <= k; p += 8)
            for (int l = 0; l < 8; l++)
                s[l] += x[p + l] * y[p + l];
    } else {
        for (; p + 8 <= k; p += 8)
            for (int l = 0; l < 8; l++)
                s[l] += x[(p + l) * sx] * y[(p + l) * sy];
    }
    if (p < k) {
        float prod[8] = {0};
        for (int l = 0; p + l < k; l++)
            prod[l] = x[(p + l) * sx] * y[(p + l) * sy];
        for (int l = 0; l < 8; l++)
            s[l] += prod[l];
    }
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* Floats of A that gemm_direct reads in blocks of columns rather than a
 * row at a time: while they stay in cache. */
#define NB_DIRECT_IN_CACHE ((int64_t)16384)

static void gemm_direct(bool trans_a, bool trans_b, int64_t m, int64_t n,
                        int64_t k, const float *a, int64_t lda, const float *b,
                        int64_t ldb, float beta, float *c, int64_t ldc) {
    if (beta == 0.0f && ldc == n) {
        /* contiguous: one pass, not a call per row (a column is m rows of one) */
        memset(c, 0, sizeof(float) * (size_t)(m * n));
    } else {
        for (int64_t i = 0; i < m; i++) {
            float *restrict ci = c + i * ldc;
            if (beta == 0.0f) {
                for (int64_t j = 0; j < n; j++)
                    ci[j] = 0.0f;
            } else if (beta != 1.0f) {
                for (int64_t j = 0; j < n; j++)
                    ci[j] *= beta;
            }
        }
    }
    if (k == 0)
        return;
    /* Strides of op(A) along a row (over k) and down a column (over m);
     * likewise op(B) down a column (over k) and along a row (over n). */
    int64_t a_k = trans_a ? lda : 1, a_m = trans_a ? 1 : lda;
    int64_t b_k = trans_b ? 1 : ldb, b_n = trans_b ? ldb : 1;
    if (trans_a && n == 1 && ldc == 1 && m * k <= NB_DIRECT_IN_CACHE) {
        /* C column += A row p · b(p): A is stored [k,m], so this reads it
         * contiguously where a dot product per element would stride. While
         * A is small, eight elements of C at a time stay in registers over
         * the whole depth (each still summed in p order), then the rest one
         * by one; a large A is read once, by the loop below, as the blocks
         * would read it from memory twice. */
        int64_t i0 = 0;
        for (; i0 + 8 <= m; i0 += 8) {
            float acc[8];
            for (int l = 0; l < 8; l++)
                acc[l] = c[i0 + l];
            for (int64_t p = 0; p < k; p++) {
                float bp = b[p * b_k];
                const float *restrict ap = a + p * lda + i0;
                for (int l = 0; l < 8; l++)
                    acc[l] += ap[l] * bp;
            }
            for (int l = 0; l < 8; l++)
                c[i0 + l] = acc[l];
        }
        for (int64_t i = i0; i < m; i++) {
            float acc = c[i];
            for (int64_t p = 0; p < k; p++)
                acc += a[p * lda + i] * b[p * b_k];
            c[i] = acc;
        }
        return;
    }
    if (trans_a && n == 1) { /* the same a row of A at a time */
        for (int64_t p = 0; p < k; p++) {
            float bp = b[p * b_k];
            const float *restrict ap = a + p * lda;
            if (ldc == 1) {
                for (int64_t i = 0; i < m; i++)
                    c[i] += ap[i] * bp;
            } else {
                for (int64_t i = 0; i < m; i++)
                    c[i * ldc] += ap[i] * bp;
            }
        }
        return;
    }
    for (int64_t i = 0; i < m; i++) {
        float *restrict ci = c + i * ldc;
        const float *ai = a + i * a_m;
        if (!trans_b && n >= 4) {
            /* C row += a(i,p) · B row: contiguous, so it vectorises. */
            for (int64_t p = 0; p < k; p++) {
                float aip = ai[p * a_k];
                const float *restrict bp = b + p * ldb;
                for (int64_t j = 0; j < n; j++)
                    ci[j] += aip * bp[j];
            }
        } else if (k == 1) {
            /* An outer product (a column times a row, as in the backward of
             * a layer with one output). dot() of one term returns x·y + 0,
             * its zero partial sums turning -0 into +0; this is the same
             * sum without a call per element. */
            float ai0 = ai[0];
            if (b_n == 1) { /* apart so that it vectorises */
                for (int64_t j = 0; j < n; j++)
                    ci[j] += ai0 * b[j] + 0.0f;
            } else {
                for (int64_t j = 0; j < n; j++)
                    ci[j] += ai0 * b[j * b_n] + 0.0f;
            }
        } else {
            for (int64_t j = 0; j < n; j++)
                ci[j] += dot(ai, a_k, b + j * b_n, b_k, k);
        }
    }
}

/* ---- small products -------------------------------------------------------
 * Past NB_GEMM_TINY but at most NB_GEMM_SMALL multiply-adds, and no deeper
 * than one depth block, packing the operands and copying edge tiles out of
 * a scratch tile cost more than the arithmetic: a dense layer's 10 x 10 x 10
 * product spent most of its time there. These loops read the operands in
 * place and give every element of C exactly the arithmetic of the packed
 * kernels: a sum from zero in k order, with fused multiply-adds where the
 * kernel fuses them, then stored, added to C, or added to beta·C as a
 * kernel writes its tile. So which path a product takes never shows in its
 * result, and the result of a product never depends on its size class. */

#define NB_GEMM_SMALL ((int64_t)16 * 16 * 16)
/* Columns of C summed at once by the portable loops, in an accumulator
 * row on the stack. */
enum { NB_SMALL_COLS = 32 };

static void gemm_small_plain(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                             const float *a, int64_t lda, const float *b, int64_t ldb,
                             float beta, float *c, int64_t ldc) {
    int64_t a_k = trans_a ? lda : 1, a_m = trans_a ? 1 : lda;
    int64_t b_k = trans_b ? 1 : ldb, b_n = trans_b ? ldb : 1;
    float acc[NB_SMALL_COLS];
    for (int64_t j0 = 0; j0 < n; j0 += NB_SMALL_COLS) {
        int64_t w = n - j0 < NB_SMALL_COLS ? n - j0 : NB_SMALL_COLS;
        for (int64_t i = 0; i < m; i++) {
            const float *ai = a + i * a_m;
            for (int64_t j = 0; j < w; j++)
                acc[j] = 0.0f;
            for (int64_t p = 0; p < k; p++) {
                float aip = ai[p * a_k];
                const float *restrict bp = b + p * b_k + j0 * b_n;
                /* Written as the portable kernel writes it, so that a
                 * compiler that contracts one into a fused multiply-add
                 * contracts the other. */
                for (int64_t j = 0; j < w; j++)
                    acc[j] += aip * bp[j * b_n];
            }
            store_edge(acc, NB_SMALL_COLS, 1, w, c + i * ldc + j0, ldc, store_mode(beta), beta);
        }
    }
}

#if NB_GEMM_X86
/* Writes the accumulators of one row of C (columns l and 8 + l, lanes of
 * mask0 and mask1) as store_edge writes a tile, with the same roundings:
 * stored, added to C, or added to beta·C (a product, then a sum, never
 * fused). The masked loads and stores touch only the valid columns. */
__attribute__((target("avx2,fma")))
static inline void small_row_store(float *ci, __m256i mask0, __m256i mask1, __m256 c0, __m256 c1,
                                   int mode, __m256 vbeta) {
    if (mode == NB_ADD) {
        c0 = _mm256_add_ps(_mm256_maskload_ps(ci, mask0), c0);
        c1 = _mm256_add_ps(_mm256_maskload_ps(ci + 8, mask1), c1);
    } else if (mode == NB_SCALE) {
        c0 = _mm256_add_ps(_mm256_mul_ps(vbeta, _mm256_maskload_ps(ci, mask0)), c0);
        c1 = _mm256_add_ps(_mm256_mul_ps(vbeta, _mm256_maskload_ps(ci + 8, mask1)), c1);
    }
    _mm256_maskstore_ps(ci, mask0, c0);
    _mm256_maskstore_ps(ci + 8, mask1, c1);
}

/* Rows [0, rows) of a small product (rows 1, 2 or 4, a constant once
 * inlined), sixteen columns of each summed in two accumulators, the rows
 * sharing each load of B: row r of op(A) at a + r·a_m, its depth step a_k;
 * row p of B at bs + p·bstride. */
__attribute__((target("avx2,fma"), always_inline))
static inline void small_rows(int rows, const float *a, int64_t a_m, int64_t a_k, const float *bs,
                              int64_t bstride, int64_t k, __m256i mask0, __m256i mask1, float *c,
                              int64_t ldc, int mode, __m256 vbeta) {
    __m256 acc[4][2];
    for (int r = 0; r < rows; r++)
        acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t p = 0; p < k; p++) {
        const float *bp = bs + p * bstride;
        __m256 b0 = _mm256_maskload_ps(bp, mask0), b1 = _mm256_maskload_ps(bp + 8, mask1);
        for (int r = 0; r < rows; r++) {
            __m256 av = _mm256_set1_ps(a[r * a_m + p * a_k]);
            acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
        }
    }
    for (int r = 0; r < rows; r++)
        small_row_store(c + r * ldc, mask0, mask1, acc[r][0], acc[r][1], mode, vbeta);
}

/* For the AVX2 and AVX-512 kernels, which both fuse. Each row of C is
 * summed sixteen columns at a time in two vector accumulators, whatever n
 * is; only the valid columns are written back. Rows of B are read in place
 * through masked loads (zeros beyond the valid columns); a transposed B is
 * first copied into a zero-padded block of sixteen columns. Rows of C go
 * four at a time (then a pair, then one), sharing each load of B; each
 * element is still its own chain of fused multiply-adds from zero in k
 * order. */
__attribute__((target("avx2,fma")))
static void gemm_small_fused(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                             const float *a, int64_t lda, const float *b, int64_t ldb,
                             float beta, float *c, int64_t ldc) {
    int64_t a_k = trans_a ? lda : 1, a_m = trans_a ? 1 : lda;
    int64_t b_k = trans_b ? 1 : ldb, b_n = trans_b ? ldb : 1;
    int mode = store_mode(beta);
    __m256 vbeta = _mm256_set1_ps(beta);
    _Alignas(32) float bpad[NB_KC_MAX * 16];
    for (int64_t j0 = 0; j0 < n; j0 += 16) {
        int64_t w = n - j0 < 16 ? n - j0 : 16;
        /* Lane l of mask0 (mask1) is on when column l (8 + l) is valid. */
        __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        __m256i mask0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)w), lane);
        __m256i mask1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)w - 8), lane);
        const float *bs = b + j0; /* row p of B at bs + p·ldb */
        int64_t bstride = ldb;
        if (b_n != 1) {
            for (int64_t p = 0; p < k; p++) {
                const float *bp = b + p * b_k + j0 * b_n;
                float *dst = bpad + p * 16;
                for (int64_t j = 0; j < w; j++)
                    dst[j] = bp[j * b_n];
                for (int64_t j = w; j < 16; j++)
                    dst[j] = 0.0f;
            }
            bs = bpad;
            bstride = 16;
        }
        int64_t i = 0;
        for (; i + 4 <= m; i += 4)
            small_rows(4, a + i * a_m, a_m, a_k, bs, bstride, k, mask0, mask1, c + i * ldc + j0, ldc,
                       mode, vbeta);
        for (; i + 2 <= m; i += 2)
            small_rows(2, a + i * a_m, a_m, a_k, bs, bstride, k, mask0, mask1, c + i * ldc + j0, ldc,
                       mode, vbeta);
        for (; i < m; i++)
            small_rows(1, a + i * a_m, a_m, a_k, bs, bstride, k, mask0, mask1, c + i * ldc + j0, ldc,
                       mode, vbeta);
    }
}
#endif

static void gemm_small(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                       const float *a, int64_t lda, const float *b, int64_t ldb,
                       float beta, float *c, int64_t ldc) {
#if NB_GEMM_X86
    if (arch != &arch_portable) {
        gemm_small_fused(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc);
        return;
    }
#endif
    gemm_small_plain(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc);
}

/* Panel r (rows [r·mr, r·mr + mr)) holds all k columns, k-major, at
 * r·mr·k: a request for depth [p0, p0 + kc) is one contiguous piece of it. */
int64_t nb_gemm_prepacked_size(int64_t m, int64_t k) {
    pthread_once(&arch_once, choose_arch);
    return div_up(m, arch->mr) * arch->mr * k;
}

void nb_gemm_prepack_a(bool trans_a, const float *a, int64_t lda, int64_t m, int64_t k,
                       float *dst) {
    pthread_once(&arch_once, choose_arch);
    int mr = arch->mr;
    for (int64_t r = 0; r < m; r += mr)
        pack_a(trans_a, a, lda, r, m - r < mr ? m - r : mr, 0, k, mr, dst + r * k);
}

void nb_gemm_pack_prepacked(const void *ctx, int64_t outer0, int64_t len, int64_t p0,
                            int64_t kc, int width, float *dst) {
    const nb_gemm_prepacked *pre = ctx;
    for (int64_t r = 0; r < len; r += width, dst += width * kc)
        memcpy(dst, pre->data + (outer0 + r) * pre->k + p0 * width,
               sizeof(float) * (size_t)(kc * width));
}

bool nb_gemm_packed(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                    const float *a, int64_t lda, nb_gemm_pack_fn pack_a_fn, const void *a_ctx,
                    const float *b, int64_t ldb, nb_gemm_pack_fn pack_b_fn, const void *b_ctx,
                    float beta, float *c, int64_t ldc) {
    if (m <= 0 || n <= 0)
        return true;
    if (k <= 0) {
        gemm_direct(false, false, m, n, 0, NULL, 1, NULL, 1, beta, c, ldc);
        return true;
    }
    pthread_once(&arch_once, choose_arch);
    _Alignas(64) float stack[NB_STACK_FLOATS];
    nb_gemm_job job = {
        .arch = arch, .trans_a = trans_a, .trans_b = trans_b,
        .m = m, .n = n, .k = k, .a = a, .b = b,
        .lda = lda, .ldb = ldb, .ldc = ldc, .beta = beta, .c = c,
        .pack_a_fn = pack_a_fn, .pack_b_fn = pack_b_fn, .a_ctx = a_ctx, .b_ctx = b_ctx,
    };
    return gemm_blocked(&job, stack);
}

void nb_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
             const float *a, int64_t lda, const float *b, int64_t ldb,
             float beta, float *c, int64_t ldc) {
    if (m <= 0 || n <= 0)
        return;
    /* An outer product (k = 1, as in the backward of a layer with one
     * output) goes to the small loops even when tiny: they write a row of
     * C in one vector pass where gemm_direct loops over it, and give the
     * same bits (0 + a·b from the kernels, a·b + 0 from gemm_direct). */
    bool outer = k == 1 && m > 1 && n > 1;
    if (k <= 0 || m == 1 || n == 1 || (!outer && volume_at_most(m, n, k, NB_GEMM_TINY))) {
        gemm_direct(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    pthread_once(&arch_once, choose_arch);
    if (k <= arch->kc && volume_at_most(m, n, k, NB_GEMM_SMALL)) {
        gemm_small(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    if (!nb_gemm_packed(trans_a, trans_b, m, n, k, a, lda, NULL, NULL, b, ldb, NULL, NULL, beta,
                        c, ldc))
        gemm_direct(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc);
}
