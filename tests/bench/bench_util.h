/* bench_util.h — what the benchmarks share: a clock and the median of a
 * set of timings (these machines are shared and noisy, so a benchmark
 * reports medians, never a single run or a mean). */
#ifndef NB_BENCH_UTIL_H
#define NB_BENCH_UTIL_H

#include <stdlib.h>
#include <time.h>

/* Seconds on the given clock: CLOCK_MONOTONIC for wall time,
 * CLOCK_PROCESS_CPUTIME_ID for the CPU time of the process. */
static inline double bench_clock(clockid_t id) {
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static inline double now(void) { return bench_clock(CLOCK_MONOTONIC); }

static inline int bench_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of t[0..n) (the upper middle when n is even); sorts t. */
static inline double median(double *t, int n) {
    qsort(t, (size_t)n, sizeof *t, bench_cmp);
    return t[n / 2];
}

#endif
