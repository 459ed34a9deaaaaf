/* parallel.h — the persistent thread pool behind nabla's heavy kernels.
 *
 * Kernels such as GEMM split their output into independent pieces and hand
 * them to nb_parallel_for. Creating threads per call would cost more than a
 * small product takes, so the pool starts its workers on the first parallel
 * call and keeps them for the life of the process; idle workers spin briefly
 * (back-to-back calls are common in a training loop) and then sleep on a
 * condition variable. The pool is joined and freed at exit.
 *
 * This header is internal to the library; it is not installed for users.
 */
#ifndef NB_PARALLEL_H
#define NB_PARALLEL_H

#include <stdbool.h>
#include <stdint.h>

/* One chunk of work: the items [begin, end) of a range. The same ctx is seen
 * by every chunk, so fn must only write what its own items own. */
typedef void (*nb_parallel_fn)(void *ctx, int64_t begin, int64_t end);

/* Runs fn over [0, n) split into contiguous chunks, one per worker, the calling
 * thread taking part. Chunks are never smaller than `grain` items; when
 * n <= grain or only one thread is configured, calls fn(ctx, 0, n) directly on
 * the caller. A call made from inside a worker (nested) runs serially. Returns
 * after every chunk has finished.
 *
 * Calls from different user threads are safe: one call at a time owns the
 * pool, and a call that finds it busy runs fn(ctx, 0, n) on its own thread
 * instead of waiting, so callers never block each other. fn must therefore
 * give the same result however [0, n) is split. */
void nb_parallel_for(int64_t n, int64_t grain, nb_parallel_fn fn, void *ctx);

/* These two are part of the public API and are re-declared, with the same
 * signatures, in ops/nb_ops.h. */

/* Threads the pool uses, >= 1 (the caller counts as one). The default is the
 * number of online CPUs, or NABLA_NUM_THREADS when that is set to a positive
 * integer. */
int nb_get_num_threads(void);

/* n <= 0 means: number of online CPUs. Can be called at any time except from
 * inside nb_parallel_for; a call running in another thread is waited for. */
void nb_set_num_threads(int n);

/* Flush-to-zero for the calling thread, followed by the pool's threads
 * while they run its chunks (nb_ops.h says more). */
bool nb_set_flush_denormal(bool on);

#endif
