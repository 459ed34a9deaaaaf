/* parallel.c — a persistent fork-join thread pool.
 *
 * nb_parallel_for cuts a range into one contiguous chunk per thread, posts a
 * chunk to each worker, runs the first chunk itself and waits for the rest.
 * Each worker owns a slot (its own cache line) holding the chunk it was given
 * and a counter the caller bumps to post it; finishing decrements one shared
 * counter. A worker that sees no post for a short while goes to sleep on a
 * condition variable, which is why the caller always broadcasts after
 * posting (an uncontended lock and no system call when nobody sleeps); the
 * caller waits for the last worker in the same spin-then-sleep way.
 *
 * Workers are created lazily, the first time a call actually needs them, so a
 * program that only ever does small work never starts a thread. One call owns
 * the pool at a time (call_lock). A second user thread that finds the pool
 * busy does not queue behind it: it runs its whole range itself, which is
 * correct because callers must not depend on how the range is split, and it
 * can never deadlock. At exit the workers are stopped and joined; a forked
 * child starts over with no workers.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "parallel.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

enum {
    NB_MAX_THREADS = 256,
    /* How long an idle thread keeps polling before it sleeps. Long enough to
     * bridge the serial code between two kernels of a training step, short
     * enough that an idle program does not keep a core busy. */
    NB_SPIN_NS = 200 * 1000,
    /* Polls with only a pause in between (a few microseconds) before the
     * waiting thread starts yielding. */
    NB_SPIN_PAUSES = 1000,
};

typedef struct nb_worker {
    _Alignas(64) atomic_uint_fast64_t posted; /* bumped once per chunk posted */
    atomic_bool stop;
    nb_parallel_fn fn;
    void *ctx;
    int64_t begin, end;
    unsigned fp_mode; /* the caller's denormal flags, for this chunk */
    pthread_t thread;
} nb_worker;

/* ---- denormals -------------------------------------------------------------
 * nb_set_flush_denormal sets the calling thread's flush-to-zero and
 * denormals-are-zero flags (MXCSR on x86-64), as PyTorch's
 * set_flush_denormal does. A chunk runs under the flags of the thread that
 * posted it, so a result never depends on which thread computed which part,
 * flushed or not. */
#if defined(__SSE2__)
enum { FP_FLUSH_BITS = 0x8040 }; /* FTZ (bit 15) | DAZ (bit 6) */
static unsigned fp_mode_now(void) { return _mm_getcsr() & FP_FLUSH_BITS; }
static void fp_mode_set(unsigned mode) {
    unsigned csr = _mm_getcsr();
    if ((csr & FP_FLUSH_BITS) != mode)
        _mm_setcsr((csr & ~(unsigned)FP_FLUSH_BITS) | mode);
}
#else
static unsigned fp_mode_now(void) { return 0; }
static void fp_mode_set(unsigned mode) { (void)mode; }
#endif

bool nb_set_flush_denormal(bool on) {
#if defined(__SSE2__)
    fp_mode_set(on ? FP_FLUSH_BITS : 0);
    return true;
#else
    return !on;
#endif
}

static nb_worker workers[NB_MAX_THREADS - 1];
static int started;                   /* workers[0 .. started) run; guarded by call_lock */
static atomic_int num_threads;        /* configured thread count, caller included */
static atomic_bool shut_down;         /* set at exit: later calls run serially */
static _Alignas(64) atomic_int pending; /* posted chunks not yet finished */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t call_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t sleep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER; /* workers sleep here */
static pthread_cond_t done = PTHREAD_COND_INITIALIZER; /* the caller sleeps here */

/* True while this thread runs a chunk, so that a nested call runs serially
 * instead of waiting for a pool it is itself part of. */
static _Thread_local bool inside_chunk;

static void cpu_relax(void) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_ia32_pause();
#elif defined(__GNUC__) && defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Waits up to NB_SPIN_NS for ready(arg). The first rounds only pause; later
 * ones yield the CPU, because on a loaded machine the thread being waited
 * for may be queued behind this very spinner on the same core. */
static bool spin_until(bool (*ready)(void *), void *arg) {
    int64_t start = 0;
    for (unsigned i = 0;; i++) {
        if (ready(arg))
            return true;
        if (i < NB_SPIN_PAUSES) {
            cpu_relax();
            continue;
        }
        sched_yield();
        int64_t t = now_ns();
        if (start == 0)
            start = t;
        else if (t - start > NB_SPIN_NS)
            return false;
    }
}

typedef struct { nb_worker *w; uint64_t seen; } post_wait;

static bool post_arrived(void *arg) {
    post_wait *pw = arg;
    return atomic_load_explicit(&pw->w->posted, memory_order_acquire) != pw->seen;
}

static bool all_done(void *arg) {
    (void)arg;
    return atomic_load_explicit(&pending, memory_order_acquire) == 0;
}

static void *worker_main(void *arg) {
    post_wait pw = {arg, 0};
    inside_chunk = true;
    for (;;) {
        if (!spin_until(post_arrived, &pw)) {
            pthread_mutex_lock(&sleep_lock);
            while (!post_arrived(&pw))
                pthread_cond_wait(&wake, &sleep_lock);
            pthread_mutex_unlock(&sleep_lock);
        }
        pw.seen = atomic_load_explicit(&pw.w->posted, memory_order_acquire);
        if (atomic_load(&pw.w->stop))
            return NULL;
        fp_mode_set(pw.w->fp_mode);
        pw.w->fn(pw.w->ctx, pw.w->begin, pw.w->end);
        /* The lock pairs with the caller's check-then-wait on `done`: without
         * it the signal could fall between the two and be lost. */
        if (atomic_fetch_sub_explicit(&pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&sleep_lock);
            pthread_cond_signal(&done);
            pthread_mutex_unlock(&sleep_lock);
        }
    }
}

static void wake_workers(void) {
    pthread_mutex_lock(&sleep_lock);
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&sleep_lock);
}

/* Stops and joins workers[from .. started). Caller holds call_lock. */
static void stop_workers(int from) {
    if (from >= started)
        return;
    for (int i = from; i < started; i++) {
        atomic_store(&workers[i].stop, true);
        atomic_fetch_add_explicit(&workers[i].posted, 1, memory_order_release);
    }
    wake_workers();
    for (int i = from; i < started; i++) {
        pthread_join(workers[i].thread, NULL);
        atomic_store(&workers[i].stop, false);
    }
    started = from;
}

/* Starts workers until `want` run; returns how many run, fewer if the system
 * refuses threads (the call then simply uses fewer chunks). */
static int start_workers(int want) {
    while (started < want) {
        nb_worker *w = &workers[started];
        atomic_store(&w->posted, 0);
        atomic_store(&w->stop, false);
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
            break;
        started++;
    }
    return started;
}

static void pool_exit(void) {
    atomic_store(&shut_down, true);
    /* If a call is still running in another thread (or exit was called from
     * inside a chunk), leave the workers alone rather than block at exit. */
    if (pthread_mutex_trylock(&call_lock) != 0)
        return;
    stop_workers(0);
    pthread_mutex_unlock(&call_lock);
}

/* Only the forking thread survives a fork: the child forgets the workers
 * (and any lock another thread held) and builds a fresh pool on demand. */
static void pool_after_fork(void) {
    started = 0;
    atomic_store(&pending, 0);
    pthread_mutex_init(&call_lock, NULL);
    pthread_mutex_init(&sleep_lock, NULL);
    pthread_cond_init(&wake, NULL);
    pthread_cond_init(&done, NULL);
}

static int online_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > NB_MAX_THREADS ? NB_MAX_THREADS : (int)n;
}

static void pool_init(void) {
    int n = online_cpus();
    const char *env = getenv("NABLA_NUM_THREADS");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (*end == '\0' && v > 0)
            n = v > NB_MAX_THREADS ? NB_MAX_THREADS : (int)v;
    }
    atomic_store(&num_threads, n);
    atexit(pool_exit);
    pthread_atfork(NULL, NULL, pool_after_fork);
}

int nb_get_num_threads(void) {
    pthread_once(&init_once, pool_init);
    return atomic_load(&num_threads);
}

void nb_set_num_threads(int n) {
    pthread_once(&init_once, pool_init);
    if (n <= 0)
        n = online_cpus();
    if (n > NB_MAX_THREADS)
        n = NB_MAX_THREADS;
    atomic_store(&num_threads, n);
    /* From inside a chunk the pool is in use by this very call; surplus
     * workers then just stay idle. */
    if (inside_chunk)
        return;
    pthread_mutex_lock(&call_lock);
    stop_workers(n - 1);
    pthread_mutex_unlock(&call_lock);
}

void nb_parallel_for(int64_t n, int64_t grain, nb_parallel_fn fn, void *ctx) {
    if (n <= 0)
        return;
    if (grain < 1)
        grain = 1;
    int64_t chunks = n / grain;
    int threads = nb_get_num_threads();
    if (chunks > threads)
        chunks = threads;
    if (chunks <= 1 || inside_chunk || atomic_load(&shut_down) ||
        pthread_mutex_trylock(&call_lock) != 0) {
        fn(ctx, 0, n);
        return;
    }
    int workers_up = start_workers((int)chunks - 1);
    if (chunks > workers_up + 1)
        chunks = workers_up + 1;

    /* Chunk i is [i*q + min(i, r), ...): sizes differ by at most one and no
     * product n*i can overflow. */
    int64_t q = n / chunks, r = n % chunks;
    atomic_store_explicit(&pending, (int)chunks - 1, memory_order_relaxed);
    unsigned mode = fp_mode_now();
    for (int64_t i = 1; i < chunks; i++) {
        nb_worker *w = &workers[i - 1];
        w->fp_mode = mode;
        w->fn = fn;
        w->ctx = ctx;
        w->begin = i * q + (i < r ? i : r);
        w->end = w->begin + q + (i < r);
        atomic_fetch_add_explicit(&w->posted, 1, memory_order_release);
    }
    wake_workers();

    inside_chunk = true;
    fn(ctx, 0, q + (r > 0));
    inside_chunk = false;

    if (!spin_until(all_done, NULL)) {
        pthread_mutex_lock(&sleep_lock);
        while (!all_done(NULL))
            pthread_cond_wait(&done, &sleep_lock);
        pthread_mutex_unlock(&sleep_lock);
    }
    pthread_mutex_unlock(&call_lock);
}
