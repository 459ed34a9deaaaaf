/* nb_dist.h — data-parallel training over MPI: every process (rank) holds
 * the whole model, trains on its own shard of each batch, and the ranks
 * average their gradients before every optimizer step, so that they stay
 * identical. An optional part of nabla (meson -Dmpi=enabled): a library of
 * its own, nabla_dist, the only one that links MPI.
 *
 *     nb_dist *d = nb_dist_init(&argc, &argv, NULL);     MPI_Init
 *     nb_model *model = ...; nb_model_compile(model, "adam", ...);
 *     nb_fit_opts o = nb_fit_defaults();
 *     o.batch_size = 32;                                  per rank
 *     nb_history *h = nb_dist_fit(d, model, x, y, &o);    every rank, same x and y
 *     ...
 *     nb_dist_finalize(d);
 *
 * WHAT IS EQUAL TO WHAT. N ranks with batch_size B each take the same
 * steps as one process with batch N·B over the same permutation: step k
 * covers the rows order[k·N·B, (k+1)·N·B), rank r the B of them starting
 * at k·N·B + r·B (the distributed sampler of nb_loader_opts, num_shards).
 * Rank r computes g_r, the gradient of the mean loss over its B rows; the
 * all-reduce gives every rank, in every element,
 *
 *     g = (((g_0 + g_1) + g_2) + ... + g_{N-1}) / N
 *
 * summed in float in rank order then divided by N (a division, not a
 * multiplication by 1/N), whatever the MPI library's own reduction
 * algorithms: each rank sums its slice of the gradients itself. The
 * weights after any number of steps are therefore bit for bit those of one
 * process that splits each batch of N·B into the same N micro-batches of
 * B, accumulates their mean-loss gradients in that order and divides by N
 * (gradient accumulation). They are not bit for bit those of one process
 * computing the mean over N·B rows in one pass, which adds the same
 * numbers in another order (the difference is rounding, about 1e-7
 * relative). Ops are bitwise identical at any thread count, so the ranks
 * may use any number of threads. Dropout draws from each rank's own
 * generator, so a model with dropout is not bit-equal to one process.
 *
 * BUCKETS. The gradients are copied, in the reverse order of the
 * parameters (the order backward finishes them), into buckets of about
 * bucket_bytes, and each bucket is reduced by non-blocking collectives as
 * soon as all of its gradients are ready (nb_dist_reducer_ready), as
 * PyTorch's DistributedDataParallel does. Each bucket is a reduce-scatter
 * (MPI_Ialltoallv: rank c receives every rank's slice c, sums the N slices
 * in rank order, divides) then an all-gather (MPI_Iallgatherv): each rank
 * sends and receives 2(N-1)/N of the bucket, as a ring all-reduce does.
 * nb_dist_fit starts each bucket from backward itself (see OVERLAP below).
 *
 * FAILURE. Every collective polls MPI_Test against a deadline
 * (nb_dist_opts.timeout): when a rank stops answering, the others return
 * -1 with a message naming the collective, the rank and the timeout
 * instead of hanging; the nb_dist is then failed (every later collective
 * fails at once) and nb_dist_finalize ends the whole job with MPI_Abort,
 * since MPI cannot be finished cleanly without the lost rank. Checkpoint
 * writes are atomic, so the last checkpoint stays whole. (Under mpirun, a
 * rank that exits makes mpirun stop the job by itself.)
 *
 * OWNERSHIP. An nb_dist and a reducer are heap objects freed by
 * nb_dist_finalize and nb_dist_reducer_free; a reducer borrows its
 * parameters (free it first). Models, tensors and histories follow
 * nb_nn.h.
 *
 * ERRORS. Functions return NULL or -1 with a message naming the function
 * (nb_error); a NULL nb_dist or reducer gives NULL or -1 without a second
 * message. All ranks must make the same calls in the same order, as with
 * any MPI collective.
 */
#ifndef NB_DIST_H
#define NB_DIST_H

#include "nb_data.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nb_dist nb_dist;
typedef struct nb_dist_reducer nb_dist_reducer;

typedef struct nb_dist_opts {
    /* Seconds a collective may take before it fails (0: the default, 300).
     * Generous: a collective also waits for the slowest rank's compute. */
    double timeout;
    /* Bytes of gradients per bucket (0: the default, 4 MiB). */
    size_t bucket_bytes;
} nb_dist_opts;

/* Starts MPI (MPI_Init, unless the program has done it: then MPI stays the
 * program's to finalize) over MPI_COMM_WORLD. argc and argv may be NULL.
 * opts NULL: the defaults. NULL with a message if MPI cannot start. */
nb_dist *nb_dist_init(int *argc, char ***argv, const nb_dist_opts *opts);
int nb_dist_rank(const nb_dist *d);       /* 0 for NULL */
int nb_dist_world_size(const nb_dist *d); /* 1 for NULL */
/* The timeout in force, in seconds; it may be changed between collectives
 * (a negative or non-finite value is refused: -1 and a message). */
double nb_dist_timeout(const nb_dist *d);
int nb_dist_set_timeout(nb_dist *d, double seconds);
/* True once a collective has failed (timed out): see FAILURE. */
bool nb_dist_failed(const nb_dist *d);
/* Ends MPI: MPI_Finalize (when nb_dist_init started it), or MPI_Abort with
 * exit code 1 for every rank when a collective failed. Frees d. With
 * several nb_dists open, finalize the first one made (which started MPI)
 * last. */
void nb_dist_finalize(nb_dist *d);

/* Copies the values of rank 0's tensors into every rank's (same shapes on
 * every rank, checked), so that every rank starts from the same weights. */
int nb_dist_broadcast(nb_dist *d, int n, nb_tensor *const *tensors);
/* The same for a model: its parameters, its buffers (batch norm's running
 * statistics) and the calling thread's default generator, which drives
 * shuffling, so that every rank draws the same permutations. The
 * parameters must exist (a model whose first layer declares its input, or
 * one that has seen an input: nb_dist_fit runs one row through it first). */
int nb_dist_broadcast_model(nb_dist *d, nb_model *model);
/* Sets every element of *value to its sum over the ranks, added in rank
 * order (bit-identical on every rank). For losses and metrics. */
int nb_dist_sum(nb_dist *d, int n, double *value);

/* ---- averaging gradients ---------------------------------------------------
 * A reducer over n parameters (the same list, in the same order, on every
 * rank) allocates its buckets once; a step then allocates nothing:
 *
 *     nb_backward(loss);
 *     nb_dist_reducer_wait(red);        every .grad is now the average
 *     nb_optimizer_step(opt);
 *
 * A parameter whose .grad is NULL on a rank counts there as a zero
 * gradient in the others' averages, but that rank has no .grad to write
 * its own average into, so its weights part from the others': give every
 * rank the same graph. */
nb_dist_reducer *nb_dist_reducer_new(nb_dist *d, int n, nb_tensor *const *params);
/* Parameter i's gradient is final: its bucket starts as soon as all of its
 * parameters are ready, while backward goes on with the others. The hooks
 * of nb_dist_reducer_attach call this; without them,
 * nb_dist_reducer_wait marks every parameter ready itself. Buckets start
 * in their order (the parameters' reverse order) whatever order the
 * parameters are marked in, as every rank must start its collectives in
 * the same order. */
int nb_dist_reducer_ready(nb_dist_reducer *r, int i);
/* Marks the parameters not yet ready, finishes every bucket and writes the
 * averages into the .grads; the next step starts afresh. -1 and a message
 * on a timeout (see FAILURE). */
int nb_dist_reducer_wait(nb_dist_reducer *r);
/* Frees r, after removing its hooks and finishing any bucket in flight. */
void nb_dist_reducer_free(nb_dist_reducer *r);

/* OVERLAP. Attached, the reducer puts a post-accumulate-grad hook
 * (nb_register_post_accumulate_grad_hook) on each of its parameters that
 * requires grad: during nb_backward each one is marked ready the moment its
 * .grad is final, so buckets start, and travel, while backward computes the
 * earlier layers' gradients; nb_dist_reducer_wait then only waits (and
 * marks the parameters no gradient reached). nb_dist_fit attaches its
 * reducer; an explicit loop does the same:
 *
 *     nb_dist_reducer_attach(red);      once
 *     ...  nb_backward(loss); nb_dist_reducer_wait(red); nb_optimizer_step(opt);
 *
 * The averages are the same bits as without: buckets start in the same
 * order and sum in the same order. Attached, every backward through the
 * parameters is one step's: a second before the wait fails (its gradients
 * would miss the buckets already sent). To accumulate micro-batches, detach
 * for all but the last backward (PyTorch's no_sync). attach returns 0 (also
 * when attached already), or -1 with a message; detach removes the hooks.
 * Attach and detach while no backward runs. */
int nb_dist_reducer_attach(nb_dist_reducer *r);
void nb_dist_reducer_detach(nb_dist_reducer *r);
/* How many of r's buckets have started since the last wait, and how many
 * it has: for tests and for seeing how much of the traffic overlaps
 * backward. 0 for NULL. */
int nb_dist_reducer_started(const nb_dist_reducer *r);
int nb_dist_reducer_num_buckets(const nb_dist_reducer *r);

/* ---- fit ------------------------------------------------------------------------
 * nb_model_fit on every rank at once: the same x and y (and options) on
 * every rank, opts->batch_size rows per rank and step. It broadcasts rank
 * 0's model (nb_dist_broadcast_model), then trains with the distributed
 * sampler (each rank its shard of every epoch's permutation, shuffled as
 * opts->shuffle says) and the gradients averaged after every backward.
 * Validation (validation_split, or x_val and y_val) runs on every rank over
 * all the validation rows, so val_loss is the same everywhere, and early
 * stopping decides the same everywhere when it monitors it; the training
 * loss and metrics in the history are those of the rank's own shard. Only
 * rank 0 prints progress and writes checkpoints (opts->checkpoint_path);
 * to resume, every rank loads the same checkpoint
 * (nb_model_load_checkpoint) and passes the epoch as initial_epoch.
 * opts->on_gradients must be NULL (the averaging takes it). Returns the
 * history, or NULL with a message, as nb_model_fit; a timeout stops
 * training with the history kept and the message in nb_error. */
nb_history *nb_dist_fit(nb_dist *d, nb_model *model, nb_tensor *x, nb_tensor *y, const nb_fit_opts *opts);

#ifdef __cplusplus
}
#endif
#endif
