/* test_gemm.c — tests of the GEMM kernel and the thread pool under it.
 *
 * nb_gemm is checked against a naive double-precision product over a grid of
 * shapes chosen to hit every edge of the blocking (empty, one, odd, just over
 * a tile or a block), all four transpose combinations, padded leading
 * dimensions and the three ways beta is applied. Padding around C must come
 * back untouched, and beta == 0 must overwrite NaNs. Results must be bitwise
 * identical for any thread count, for concurrent callers and in a forked
 * child; nb_parallel_for must visit each item exactly once however the range
 * is cut, and nested calls must not deadlock. Inputs come from a private LCG
 * so the tests do not depend on the C library's rand(). No test measures
 * time.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <criterion/criterion.h>

#include "gemm.h"
#include "parallel.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- helpers ---------------------------------------------------------------- */

static uint64_t lcg_state = 42;

static void lcg_seed(uint64_t s) { lcg_state = s * 2862933555777941757ULL + 1; }

/* Uniform in [-1, 1). */
static float lcg_float(void) {
    lcg_state = lcg_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((lcg_state >> 40) * (1.0 / (1 << 24))) * 2.0f - 1.0f;
}

static float *random_buf(size_t len) {
    float *p = malloc((len ? len : 1) * sizeof *p);
    cr_assert_not_null(p);
    for (size_t i = 0; i < len; i++)
        p[i] = lcg_float();
    return p;
}

/* op(X)[r][c] for X stored row-major with leading dimension ld. */
static double at(const float *x, bool trans, int64_t ld, int64_t r, int64_t c) {
    return trans ? x[c * ld + r] : x[r * ld + c];
}

static const float SENTINEL = 1234.5f;

/* Runs one product and compares it with a double-precision reference. The
 * padding columns of C hold SENTINEL and must keep it. */
static void check_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                       int64_t pad, float beta) {
    int64_t lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad, ldc = n + pad;
    int64_t arows = ta ? k : m, brows = tb ? n : k;
    float *a = random_buf((size_t)(arows * lda));
    float *b = random_buf((size_t)(brows * ldb));
    float *c = random_buf((size_t)(m * ldc));
    float *c0 = malloc((size_t)(m * ldc + 1) * sizeof *c0);
    cr_assert_not_null(c0);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < ldc; j++) {
            float *e = &c[i * ldc + j];
            if (j >= n)
                *e = SENTINEL;
            else if (beta == 0.0f)
                *e = NAN;
        }
    memcpy(c0, c, (size_t)(m * ldc) * sizeof *c);

    nb_gemm(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);

    for (int64_t i = 0; i < m; i++) {
        for (int64_t j = 0; j < n; j++) {
            double ref = 0.0, mag = 0.0;
            for (int64_t p = 0; p < k; p++) {
                double t = at(a, ta, lda, i, p) * at(b, tb, ldb, p, j);
                ref += t;
                mag += fabs(t);
            }
            if (beta != 0.0f) {
                ref += (double)beta * c0[i * ldc + j];
                mag += fabs((double)beta * c0[i * ldc + j]);
            }
            double got = c[i * ldc + j];
            /* float summation error grows at most like k·eps·sum|terms|. */
            double tol = 1e-6 * (double)(k + 2) * mag + 1e-30;
            cr_assert(fabs(got - ref) <= tol,
                      "ta=%d tb=%d m=%lld n=%lld k=%lld pad=%lld beta=%g: "
                      "C[%lld][%lld] = %.9g, expected %.9g",
                      ta, tb, (long long)m, (long long)n, (long long)k,
                      (long long)pad, beta, (long long)i, (long long)j, got, ref);
        }
        for (int64_t j = n; j < ldc; j++)
            cr_assert(c[i * ldc + j] == SENTINEL, "padding of C was written");
    }
    free(a);
    free(b);
    free(c);
    free(c0);
}

/* ---- gemm against the reference ------------------------------------------------ */

static const int64_t dims[] = {0, 1, 2, 3, 7, 17, 64, 65, 129};
enum { NDIMS = sizeof dims / sizeof dims[0] };

Test(gemm, all_shapes_and_transposes) {
    static const float betas[] = {0.0f, 1.0f, -0.75f};
    lcg_seed(1);
    int case_no = 0;
    for (int t = 0; t < 4; t++)
        for (int im = 0; im < NDIMS; im++)
            for (int in = 0; in < NDIMS; in++)
                for (int ik = 0; ik < NDIMS; ik++, case_no++)
                    check_gemm(t & 1, t & 2, dims[im], dims[in], dims[ik],
                               case_no % 2 ? 5 : 0, betas[case_no % 3]);
}

Test(gemm, every_beta_and_padding_on_odd_shapes) {
    static const float betas[] = {0.0f, 1.0f, 0.5f, -2.0f};
    lcg_seed(2);
    for (int t = 0; t < 4; t++)
        for (int ib = 0; ib < 4; ib++)
            for (int64_t pad = 0; pad <= 3; pad += 3) {
                check_gemm(t & 1, t & 2, 17, 65, 7, pad, betas[ib]);
                check_gemm(t & 1, t & 2, 65, 3, 129, pad, betas[ib]);
                check_gemm(t & 1, t & 2, 1, 17, 64, pad, betas[ib]);
                check_gemm(t & 1, t & 2, 64, 1, 17, pad, betas[ib]);
                check_gemm(t & 1, t & 2, 5, 6, 7, pad, betas[ib]);
            }
}

/* Depths beyond one packed panel (so partial sums meet beta and each other),
 * heights beyond one packed block, widths beyond one packed B panel. */
Test(gemm, larger_than_one_block) {
    lcg_seed(3);
    for (int t = 0; t < 4; t++) {
        check_gemm(t & 1, t & 2, 37, 45, 600, 1, 0.5f);
        check_gemm(t & 1, t & 2, 400, 33, 20, 0, 0.0f);
        check_gemm(t & 1, t & 2, 13, 2100, 5, 2, 1.0f);
        check_gemm(t & 1, t & 2, 200, 150, 300, 0, 0.0f);
        /* rows longer than 256 floats read in place (panels of 100 rows) */
        check_gemm(t & 1, t & 2, 300, 290, 100, 1, 0.5f);
    }
}

Test(gemm, k_zero_scales_c) {
    float c[6] = {1, 2, 3, 4, NAN, 6};
    nb_gemm(false, false, 2, 3, 0, NULL, 1, NULL, 3, 2.0f, c, 3);
    float want[6] = {2, 4, 6, 8, NAN, 12};
    for (int i = 0; i < 6; i++)
        if (i != 4)
            cr_assert_eq(c[i], want[i]);
    cr_assert(isnan(c[4]), "beta != 0 must keep NaN");
    nb_gemm(true, true, 2, 3, 0, NULL, 2, NULL, 1, 0.0f, c, 3);
    for (int i = 0; i < 6; i++)
        cr_assert(c[i] == 0.0f, "beta == 0 with k == 0 must zero C");
}

Test(gemm, empty_output_touches_nothing) {
    float c = SENTINEL;
    nb_gemm(false, false, 0, 5, 5, NULL, 5, NULL, 5, 0.0f, &c, 5);
    nb_gemm(false, false, 5, 0, 5, NULL, 5, NULL, 1, 0.0f, &c, 1);
    cr_assert_eq(c, SENTINEL);
}

/* ---- determinism across thread counts --------------------------------------------- */

static float *product(bool ta, bool tb, int threads, const float *a,
                      const float *b, const float *c_in, int64_t m, int64_t n,
                      int64_t k, float beta) {
    nb_set_num_threads(threads);
    cr_assert_eq(nb_get_num_threads(), threads);
    float *c = malloc((size_t)(m * n) * sizeof *c);
    cr_assert_not_null(c);
    memcpy(c, c_in, (size_t)(m * n) * sizeof *c);
    nb_gemm(ta, tb, m, n, k, a, ta ? m : k, b, tb ? k : n, beta, c, n);
    return c;
}

Test(gemm, bitwise_identical_for_any_thread_count) {
    const int64_t m = 300, n = 257, k = 311;
    lcg_seed(4);
    float *a = random_buf((size_t)(m * k)), *b = random_buf((size_t)(k * n));
    float *c_in = random_buf((size_t)(m * n));
    static const int threads[] = {2, 3, 8};
    for (int t = 0; t < 4; t++)
        for (int ib = 0; ib < 2; ib++) {
            float beta = ib ? 0.5f : 0.0f;
            float *ref = product(t & 1, t & 2, 1, a, b, c_in, m, n, k, beta);
            for (int i = 0; i < 3; i++) {
                float *c = product(t & 1, t & 2, threads[i], a, b, c_in, m, n, k, beta);
                cr_assert(memcmp(c, ref, (size_t)(m * n) * sizeof *c) == 0,
                          "ta=%d tb=%d beta=%g: %d threads differ from 1",
                          t & 1, (t & 2) != 0, beta, threads[i]);
                free(c);
            }
            free(ref);
        }
    free(a);
    free(b);
    free(c_in);
    nb_set_num_threads(0);
}

/* An element of C is one chain of multiply-adds in k order whether a full
 * tile or an edge tile computes it: a block of rows or columns multiplied
 * on its own (so that it becomes a narrow edge) gives the same bits as
 * inside the whole product, for every transpose and beta. The offsets are
 * multiples of the largest tile (12 x 32, 16 x 32 with slack), so the
 * sub-products start where tiles of the whole one start. */
Test(gemm, edge_tiles_match_full_tiles_bitwise) {
    const int64_t m = 96, n = 128, k = 300;
    lcg_seed(5);
    float *a = random_buf((size_t)(m * k)), *b = random_buf((size_t)(k * n));
    float *c_in = random_buf((size_t)(m * n));
    static const int64_t rows[][2] = {{48, 4}, {48, 9}, {0, 7}, {48, 13}};
    static const int64_t cols[][2] = {{64, 5}, {32, 17}, {0, 31}, {96, 16}};
    nb_set_num_threads(1);
    for (int t = 0; t < 4; t++)
        for (int ib = 0; ib < 3; ib++) {
            bool ta = t & 1, tb = t & 2;
            float beta = ib == 0 ? 0.0f : ib == 1 ? 1.0f : -0.75f;
            float *full = product(ta, tb, 1, a, b, c_in, m, n, k, beta);
            for (int s = 0; s < 4; s++) {
                int64_t r0 = rows[s][0], h = rows[s][1], c0 = cols[s][0], w = cols[s][1];
                float *c = malloc((size_t)(h * w) * sizeof *c);
                cr_assert_not_null(c);
                for (int64_t i = 0; i < h; i++)
                    memcpy(c + i * w, c_in + (r0 + i) * n + c0, (size_t)w * sizeof *c);
                const float *as = ta ? a + r0 : a + r0 * k, *bs = tb ? b + c0 * k : b + c0;
                nb_gemm(ta, tb, h, w, k, as, ta ? m : k, bs, tb ? k : n, beta, c, w);
                for (int64_t i = 0; i < h; i++)
                    cr_assert(memcmp(c + i * w, full + (r0 + i) * n + c0, (size_t)w * sizeof *c) == 0,
                              "ta=%d tb=%d beta=%g: rows %lld+%lld, columns %lld+%lld alone differ "
                              "from the whole product in row %lld",
                              ta, tb, beta, (long long)r0, (long long)h, (long long)c0,
                              (long long)w, (long long)i);
                free(c);
            }
            free(full);
        }
    free(a);
    free(b);
    free(c_in);
    nb_set_num_threads(0);
}

/* Products past NB_GEMM_TINY but small (a dense layer's 10 x 10 x 10) skip
 * packing, and must round exactly as the packed kernels do, so that a
 * product's value never depends on its size class: compared bit for bit
 * with nb_gemm_packed, which always packs. Shapes straddle the small class
 * (16³ multiply-adds) and its 16-column blocks; C has padded rows. */
Test(gemm, small_products_match_the_packed_kernels_bitwise) {
    static const int64_t shapes[][3] = {{10, 10, 10}, {2, 2, 65}, {7, 17, 9}, {3, 33, 5},
                                        {16, 16, 16}, {5, 16, 50}, {40, 3, 30}, {2, 130, 2}};
    lcg_seed(11);
    for (size_t q = 0; q < sizeof shapes / sizeof shapes[0]; q++) {
        int64_t m = shapes[q][0], n = shapes[q][1], k = shapes[q][2], ldc = n + 3;
        float *a = random_buf((size_t)(m * k)), *b = random_buf((size_t)(k * n));
        float *c_in = random_buf((size_t)(m * ldc));
        float *c = malloc((size_t)(m * ldc) * sizeof *c), *want = malloc((size_t)(m * ldc) * sizeof *c);
        cr_assert(c && want);
        for (int t = 0; t < 4; t++)
            for (int ib = 0; ib < 3; ib++) {
                bool ta = t & 1, tb = t & 2;
                float beta = ib == 0 ? 0.0f : ib == 1 ? 1.0f : -0.75f;
                int64_t lda = ta ? m : k, ldb = tb ? k : n;
                memcpy(c, c_in, (size_t)(m * ldc) * sizeof *c);
                memcpy(want, c_in, (size_t)(m * ldc) * sizeof *c);
                nb_gemm(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
                cr_assert(nb_gemm_packed(ta, tb, m, n, k, a, lda, NULL, NULL, b, ldb, NULL, NULL,
                                         beta, want, ldc));
                cr_assert(memcmp(c, want, (size_t)(m * ldc) * sizeof *c) == 0,
                          "%lld x %lld x %lld, ta=%d tb=%d beta=%g: differs from the packed kernels",
                          (long long)m, (long long)n, (long long)k, ta, tb, beta);
            }
        free(a);
        free(b);
        free(c_in);
        free(c);
        free(want);
    }
}

/* An operand read in place (A without a transpose, row by row; Aᵀ or B a
 * panel at a time) goes through the same multiply-adds as one packed
 * first: compared bit for bit with the product whose A comes prepacked,
 * for row strides that are read in place (k + 3, and 320, a multiple of 16
 * lines whose rows still spread over the cache) and one that is packed
 * (1024), with edge rows (4 and 8, read in place; 2, packed) and columns,
 * both B layouts and every beta; and
 * B read in place at a stride it is read in place only for short A. */
Test(gemm, operands_read_in_place_match_packed_ones_bitwise) {
    const int64_t m = 56, n = 80, k = 300, ldas[] = {303, 320, 1024};
    lcg_seed(13);
    float *b = random_buf((size_t)(k * n)), *c_in = random_buf((size_t)(m * n));
    float *c = malloc((size_t)(m * n) * sizeof *c), *want = malloc((size_t)(m * n) * sizeof *c);
    float *pre = malloc((size_t)nb_gemm_prepacked_size(m, k) * sizeof *pre);
    cr_assert(c && want && pre);
    nb_set_num_threads(1);
    for (int l = 0; l < 3; l++) {
        int64_t lda = ldas[l];
        float *a = random_buf((size_t)(m * lda));
        nb_gemm_prepack_a(false, a, lda, m, k, pre);
        nb_gemm_prepacked packed = {pre, k};
        /* the first 56, 52 or 50 rows: a last panel of 8 or 4 rows is read
         * in place too, one of 2 is packed */
        for (int64_t rows = m; rows >= 50; rows -= rows == 52 ? 2 : 4)
            for (int t = 0; t < 2; t++)
                for (int ib = 0; ib < 3; ib++) {
                    bool tb = t;
                    float beta = ib == 0 ? 0.0f : ib == 1 ? 1.0f : -0.75f;
                    int64_t ldb = tb ? k : n;
                    memcpy(c, c_in, (size_t)(m * n) * sizeof *c);
                    memcpy(want, c_in, (size_t)(m * n) * sizeof *c);
                    nb_gemm(false, tb, rows, n, k, a, lda, b, ldb, beta, c, n);
                    cr_assert(nb_gemm_packed(false, tb, rows, n, k, NULL, 0, nb_gemm_pack_prepacked,
                                             &packed, b, ldb, NULL, NULL, beta, want, n));
                    cr_assert(memcmp(c, want, (size_t)(m * n) * sizeof *c) == 0,
                              "%lld rows, lda=%lld tb=%d beta=%g: A read in place differs from A "
                              "packed", (long long)rows, (long long)lda, tb, beta);
                }
        free(a);
    }
    /* B read in place with rows 512 floats apart (only two L1 sets), as it
     * is when A has few rows, against Bᵀ, which is always packed. */
    const int64_t ldb = 512;
    float *a = random_buf((size_t)(m * k)), *bw = random_buf((size_t)(k * ldb));
    float *bt = malloc((size_t)(n * k) * sizeof *bt);
    cr_assert_not_null(bt);
    for (int64_t p = 0; p < k; p++)
        for (int64_t j = 0; j < n; j++) bt[j * k + p] = bw[p * ldb + j];
    for (int ib = 0; ib < 3; ib++) {
        float beta = ib == 0 ? 0.0f : ib == 1 ? 1.0f : -0.75f;
        memcpy(c, c_in, (size_t)(m * n) * sizeof *c);
        memcpy(want, c_in, (size_t)(m * n) * sizeof *c);
        nb_gemm(false, false, m, n, k, a, k, bw, ldb, beta, c, n);
        nb_gemm(false, true, m, n, k, a, k, bt, k, beta, want, n);
        cr_assert(memcmp(c, want, (size_t)(m * n) * sizeof *c) == 0,
                  "ldb=512 beta=%g: B read in place differs from Bᵀ packed", beta);
    }
    nb_set_num_threads(0);
    free(a);
    free(bw);
    free(bt);
    free(b);
    free(c_in);
    free(c);
    free(want);
    free(pre);
}

/* Outer products (k = 1) of any size take the small loops, tiny ones
 * included, and must give what the plain loop gave: beta·C (or nothing, or
 * C) plus a·b + 0, the + 0 turning a product of -0 into +0. Zeros of both
 * signs are planted among the operands. */
Test(gemm, outer_products_bitwise) {
    static const int64_t shapes[][2] = {{2, 2}, {10, 10}, {3, 17}, {16, 16}, {9, 2}, {40, 70}};
    lcg_seed(5);
    for (size_t q = 0; q < sizeof shapes / sizeof shapes[0]; q++) {
        int64_t m = shapes[q][0], n = shapes[q][1], ldc = n + 2;
        float *a = random_buf((size_t)m), *b = random_buf((size_t)n);
        float *c_in = random_buf((size_t)(m * ldc));
        float *c = malloc((size_t)(m * ldc) * sizeof *c), *want = malloc((size_t)(m * ldc) * sizeof *c);
        cr_assert(c && want);
        a[0] = -0.0f;
        b[1] = 0.0f;
        b[0] = -b[0];
        for (int t = 0; t < 4; t++)
            for (int ib = 0; ib < 3; ib++) {
                bool ta = t & 1, tb = t & 2;
                float beta = ib == 0 ? 0.0f : ib == 1 ? 1.0f : -0.75f;
                memcpy(c, c_in, (size_t)(m * ldc) * sizeof *c);
                for (int64_t i = 0; i < m; i++)
                    for (int64_t j = 0; j < ldc; j++) {
                        float prev = c_in[i * ldc + j], ab = j < n ? a[i] * b[j] + 0.0f : 0.0f;
                        want[i * ldc + j] = j >= n ? prev : ib == 0 ? 0.0f + ab : ib == 1 ? prev + ab
                                                                                   : beta * prev + ab;
                    }
                /* a is [m,1] (or [1,m] transposed), b [1,n] (or [n,1]) */
                nb_gemm(ta, tb, m, n, 1, a, ta ? m : 1, b, tb ? 1 : n, beta, c, ldc);
                cr_assert(memcmp(c, want, (size_t)(m * ldc) * sizeof *c) == 0,
                          "%lld x %lld x 1, ta=%d tb=%d beta=%g: differs from beta·C + (a·b + 0)",
                          (long long)m, (long long)n, ta, tb, beta);
            }
        free(a);
        free(b);
        free(c_in);
        free(c);
        free(want);
    }
}

/* Two user threads multiplying at once must each get the single-threaded
 * answer: the pool serves one call at a time and the other runs on its own. */
typedef struct {
    const float *a, *b, *want;
    int64_t m, n, k;
    int ok;
} concurrent_job;

static void *concurrent_main(void *arg) {
    concurrent_job *job = arg;
    float *c = malloc((size_t)(job->m * job->n) * sizeof *c);
    job->ok = c != NULL;
    for (int r = 0; r < 20 && job->ok; r++) {
        nb_gemm(false, false, job->m, job->n, job->k, job->a, job->k, job->b,
                job->n, 0.0f, c, job->n);
        job->ok = memcmp(c, job->want, (size_t)(job->m * job->n) * sizeof *c) == 0;
    }
    free(c);
    return NULL;
}

Test(gemm, concurrent_callers) {
    const int64_t m = 160, n = 150, k = 170;
    lcg_seed(5);
    float *a = random_buf((size_t)(m * k)), *b = random_buf((size_t)(k * n));
    float *zero = calloc((size_t)(m * n), sizeof *zero);
    cr_assert_not_null(zero);
    float *want = product(false, false, 1, a, b, zero, m, n, k, 0.0f);
    nb_set_num_threads(2);
    concurrent_job jobs[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        jobs[i] = (concurrent_job){a, b, want, m, n, k, 0};
        cr_assert_eq(pthread_create(&th[i], NULL, concurrent_main, &jobs[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        cr_assert(jobs[i].ok, "caller %d got a different product", i);
    }
    free(a);
    free(b);
    free(zero);
    free(want);
    nb_set_num_threads(0);
}

/* A child forked after the pool has started has no workers; its first
 * parallel product must build a new pool rather than wait on dead ones. The
 * child answers through a pipe, so how it ends does not matter. */
Test(gemm, usable_after_fork) {
    const int64_t m = 200, n = 190, k = 180;
    lcg_seed(6);
    float *a = random_buf((size_t)(m * k)), *b = random_buf((size_t)(k * n));
    float *zero = calloc((size_t)(m * n), sizeof *zero);
    cr_assert_not_null(zero);
    float *want = product(false, false, 1, a, b, zero, m, n, k, 0.0f);
    float *got = product(false, false, 2, a, b, zero, m, n, k, 0.0f);
    cr_assert(memcmp(got, want, (size_t)(m * n) * sizeof *got) == 0);
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        alarm(30); /* a hang becomes a failure, not a stuck test */
        nb_gemm(false, false, m, n, k, a, k, b, n, 0.0f, got, n);
        char answer = memcmp(got, want, (size_t)(m * n) * sizeof *got) == 0 ? 'y' : 'n';
        if (write(fds[1], &answer, 1) != 1)
            answer = 0;
        /* End by replacing the process image rather than exiting: the child
         * holds a copy of the parent's heap whose owners (its other threads)
         * did not survive the fork, and a memory checker would report those
         * blocks at exit. */
        execl("/bin/sh", "sh", "-c", ":", (char *)NULL);
        _exit(0);
    }
    close(fds[1]);
    char answer = 0;
    ssize_t got_bytes = read(fds[0], &answer, 1);
    close(fds[0]);
    waitpid(pid, NULL, 0);
    cr_assert(got_bytes == 1 && answer == 'y', "the forked child could not multiply");
    free(a);
    free(b);
    free(zero);
    free(want);
    free(got);
    nb_set_num_threads(0);
}

/* ---- nb_parallel_for ------------------------------------------------------------- */

typedef struct {
    atomic_int *hits;
    int64_t grain, n;
    atomic_int chunks;
    atomic_llong smallest;
    atomic_bool bad_chunk;
} cover_ctx;

/* Runs on workers too, where a failed assertion cannot end the test: it
 * records what it sees and the test asserts afterwards. */
static void cover(void *arg, int64_t begin, int64_t end) {
    cover_ctx *ctx = arg;
    if (!(0 <= begin && begin < end && end <= ctx->n)) {
        atomic_store(&ctx->bad_chunk, true);
        return;
    }
    for (int64_t i = begin; i < end; i++)
        atomic_fetch_add(&ctx->hits[i], 1);
    atomic_fetch_add(&ctx->chunks, 1);
    long long len = end - begin, cur = atomic_load(&ctx->smallest);
    while (len < cur && !atomic_compare_exchange_weak(&ctx->smallest, &cur, len))
        ;
}

Test(parallel, covers_each_item_exactly_once) {
    static const int64_t ns[] = {0, 1, 2, 3, 7, 8, 100, 1000, 12345};
    static const int64_t grains[] = {0, 1, 2, 7, 64, 1000, 100000};
    static const int threads[] = {1, 2, 3, 8};
    for (int it = 0; it < 4; it++) {
        nb_set_num_threads(threads[it]);
        for (size_t in = 0; in < sizeof ns / sizeof ns[0]; in++)
            for (size_t ig = 0; ig < sizeof grains / sizeof grains[0]; ig++) {
                int64_t n = ns[in], grain = grains[ig];
                cover_ctx ctx = {calloc((size_t)n + 1, sizeof(atomic_int)), grain, n, 0, n, false};
                cr_assert_not_null(ctx.hits);
                nb_parallel_for(n, grain, cover, &ctx);
                cr_assert(!atomic_load(&ctx.bad_chunk), "a chunk fell outside [0, n)");
                for (int64_t i = 0; i < n; i++)
                    cr_assert_eq(atomic_load(&ctx.hits[i]), 1,
                                 "n=%lld grain=%lld threads=%d: item %lld hit %d times",
                                 (long long)n, (long long)grain, threads[it],
                                 (long long)i, atomic_load(&ctx.hits[i]));
                int chunks = atomic_load(&ctx.chunks);
                cr_assert(chunks <= threads[it], "more chunks than threads");
                cr_assert(n == 0 || chunks >= 1);
                if (chunks > 1)
                    cr_assert(atomic_load(&ctx.smallest) >= grain, "chunk below grain");
                free(ctx.hits);
            }
    }
    nb_set_num_threads(0);
}

/* A call from inside a chunk must run serially rather than wait on the pool
 * it is part of. */
typedef struct {
    atomic_int *hits;
    int64_t inner;
} nested_ctx;

static void nested_inner(void *arg, int64_t begin, int64_t end) {
    atomic_int *row = arg;
    for (int64_t i = begin; i < end; i++)
        atomic_fetch_add(&row[i], 1);
}

static void nested_outer(void *arg, int64_t begin, int64_t end) {
    nested_ctx *ctx = arg;
    for (int64_t i = begin; i < end; i++)
        nb_parallel_for(ctx->inner, 1, nested_inner, ctx->hits + i * ctx->inner);
}

Test(parallel, nested_calls_run_serially) {
    nb_set_num_threads(3);
    nested_ctx ctx = {calloc(50 * 40, sizeof(atomic_int)), 40};
    cr_assert_not_null(ctx.hits);
    for (int r = 0; r < 10; r++)
        nb_parallel_for(50, 1, nested_outer, &ctx);
    for (int i = 0; i < 50 * 40; i++)
        cr_assert_eq(atomic_load(&ctx.hits[i]), 10);
    free(ctx.hits);
    nb_set_num_threads(0);
}

Test(parallel, thread_count_setting) {
    nb_set_num_threads(3);
    cr_assert_eq(nb_get_num_threads(), 3);
    nb_set_num_threads(1);
    cr_assert_eq(nb_get_num_threads(), 1);
    nb_set_num_threads(0);
    cr_assert_geq(nb_get_num_threads(), 1);
    nb_set_num_threads(-5);
    cr_assert_geq(nb_get_num_threads(), 1);
}

/* Denormals: kept by default; with nb_set_flush_denormal(true) every chunk,
 * the caller's and the workers', flushes them, so the result does not
 * depend on how the range was cut. */
typedef struct {
    const float *in;
    float *out;
} halve_job;

static void halve(void *ctx, int64_t begin, int64_t end) {
    halve_job *j = ctx;
    for (int64_t i = begin; i < end; i++)
        j->out[i] = j->in[i] * 0.5f;
}

/* Whether x's bits are those of zero: a comparison would itself treat a
 * denormal as zero while flushing is on. */
static bool bits_zero(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (u & 0x7fffffffu) == 0;
}

Test(parallel, flush_denormal_reaches_every_chunk) {
    enum { N = 4096 };
    static float in[N], out[N];
    volatile float tiny = 1e-39f; /* a denormal */
    for (int i = 0; i < N; i++)
        in[i] = tiny * (float)(1 + i % 7);
    halve_job job = {in, out};
    nb_set_num_threads(4);
    nb_parallel_for(N, 64, halve, &job);
    for (int i = 0; i < N; i++)
        cr_assert(!bits_zero(out[i]), "a denormal was flushed at %d with flushing off", i);
    if (!nb_set_flush_denormal(true)) {
        nb_set_num_threads(0);
        cr_skip_test("this CPU has no flush-to-zero mode");
    }
    nb_parallel_for(N, 64, halve, &job);
    bool zeros = true;
    for (int i = 0; i < N; i++)
        zeros = zeros && bits_zero(out[i]);
    volatile float alone = tiny * 0.5f;
    nb_set_flush_denormal(false);
    nb_parallel_for(N, 64, halve, &job);
    nb_set_num_threads(0);
    cr_assert(zeros, "a chunk kept a denormal with flushing on");
    cr_assert(bits_zero(alone), "the calling thread kept a denormal with flushing on");
    for (int i = 0; i < N; i++)
        cr_assert(!bits_zero(out[i]), "flushing stayed on in a worker after it was turned off (%d)", i);
}
