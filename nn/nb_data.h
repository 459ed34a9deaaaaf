/* nb_data.h — datasets and loaders: in-memory samples cut into batches, as
 * PyTorch's TensorDataset and DataLoader, and fit on a loader.
 *
 *     nb_dataset *ds = nb_dataset_new(x, y);               x [N, ...], y [N, ...]
 *     nb_loader *ld = nb_loader_new(ds, &(nb_loader_opts){.batch_size = 64, .shuffle = true});
 *     for (int epoch = 0; epoch < 10; epoch++) {
 *         nb_loader_reset(ld);                              new permutation
 *         nb_tensor *xb, *yb;
 *         while (nb_loader_next(ld, &xb, &yb)) { ... one training step ... }
 *     }
 *     nb_loader_free(ld);
 *     nb_dataset_free(ds);
 *
 * OWNERSHIP. A dataset holds tensors of its own that share the storage of x
 * and y (nb_detach, held as a container holds parameters): x and y stay
 * yours, to release or leave to their scope as before, and the dataset
 * reads their values until nb_dataset_free (write into x or y while a loader
 * uses them and the batches see the new values). A loader borrows its
 * dataset: free the loader first. The batch tensors nb_loader_next gives are
 * the loader's own, lent until the next nb_loader_next, nb_loader_reset or
 * nb_loader_free on that loader; they are reused from batch to batch, so
 * that once made the loader allocates nothing (a short last batch has
 * buffers of its own, reused too). Ops may take them as inputs (a graph
 * node holds a reference); do not release them, and do not keep anything
 * that needs their values past the next call.
 *
 * ERRORS. Functions return NULL (or -1, or false) with a message naming the
 * function: row counts that differ, a batch size below 1, a split fraction
 * outside (0, 1) or leaving a side empty, out of memory. Given a NULL
 * tensor, dataset or loader they return NULL without a second message when
 * one is pending (the call that made the NULL said why), and with one
 * naming the function otherwise.
 *
 * THREADS. With prefetch a worker thread per loader copies the next batch
 * into a second set of buffers while the caller trains on the current one.
 * The worker only copies floats: it calls no other nabla function, draws no
 * random numbers (permutations are drawn by nb_loader_reset on the calling
 * thread) and is joined by nb_loader_free. A loader, like a model, is used
 * by one thread at a time.
 */
#ifndef NB_DATA_H
#define NB_DATA_H

#include "nb_nn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nb_dataset nb_dataset;
typedef struct nb_loader nb_loader;

/* The N samples (x[i], y[i]); x and y must have the same number of rows
 * (N >= 1), any shapes beyond it. x and y stay yours (see OWNERSHIP). */
nb_dataset *nb_dataset_new(nb_tensor *x, nb_tensor *y);
/* Splits ds as Keras's validation_split does: *val gets the last fraction
 * of its samples, in order and unshuffled, *train the rest (Keras keeps
 * int(N * (1 - fraction)) for training, fraction taken as the decimal you
 * wrote, so 0.2 of 10 samples leaves 8 to train on, as nb_model_fit's
 * validation_split). To split at random, shuffle x and y first (same
 * permutation), or take nb_dataset_subset with a permutation. Both halves are
 * new datasets, freed with nb_dataset_free; ds is unchanged and may be freed
 * first. Returns 0, or -1 with a message and both set to NULL. */
int nb_dataset_split(nb_dataset *ds, float fraction, nb_dataset **train, nb_dataset **val);
/* The samples rows[0..n) of ds (indices into ds, repeats allowed), as a new
 * dataset. */
nb_dataset *nb_dataset_subset(nb_dataset *ds, int64_t n, const int64_t *rows);
int64_t nb_dataset_len(const nb_dataset *ds); /* number of samples, 0 for NULL */
/* The dataset's whole x and y (borrowed, all rows of the tensors it was
 * made from: a split or subset uses some of them). */
nb_tensor *nb_dataset_x(const nb_dataset *ds);
nb_tensor *nb_dataset_y(const nb_dataset *ds);
void nb_dataset_free(nb_dataset *ds);

typedef struct nb_loader_opts {
    int batch_size;          /* samples per batch, >= 1 */
    bool shuffle;            /* a new permutation at every nb_loader_reset */
    nb_generator *generator; /* the permutations' source; NULL: the default
                                generator of the thread calling nb_loader_reset
                                (nb_model_fit's source, so that the same seed
                                gives fit's own order) */
    bool drop_last;          /* drop a last batch shorter than batch_size */
    bool prefetch;           /* copy the next batch on a worker thread */
    /* A distributed sampler (nn/dist): num_shards loaders, one per process
     * (0 counts as 1), each with the same permutation (the same generator
     * state), read disjoint parts of every epoch's order. Step k of the
     * epoch covers the rows order[k·G, (k+1)·G) with G = num_shards ·
     * batch_size, and shard s takes its batch_size rows starting at k·G +
     * s·batch_size: the shards' batches of a step, in shard order, are
     * the batch of num_shards · batch_size one loader would give. The T
     * rows left after the last full step are split as evenly as possible
     * (the first T mod num_shards shards take one row more), so every
     * sample is read exactly once per epoch by exactly one shard, and all
     * shards take the same number of steps. When 0 < T < num_shards, or
     * with drop_last, those T rows are not read in that epoch (a shard
     * cannot take an empty batch). shard is in [0, num_shards). */
    int num_shards, shard;
} nb_loader_opts;

/* A loader over ds (borrowed: free the loader before ds). opts NULL means
 * batches of 32, in order, the last one short, no worker. Allocates every
 * buffer it will use, and starts the worker when asked. */
nb_loader *nb_loader_new(nb_dataset *ds, const nb_loader_opts *opts);
/* Starts an epoch: a new permutation when shuffling (drawn here, on the
 * calling thread), the first batch next. The first nb_loader_next after
 * nb_loader_new starts the first epoch by itself when no reset came first. */
void nb_loader_reset(nb_loader *ld);
/* The epoch's next batch into *x and *y (lent: see OWNERSHIP), true; false
 * at the end of the epoch and until the next nb_loader_reset. Allocates
 * nothing. */
bool nb_loader_next(nb_loader *ld, nb_tensor **x, nb_tensor **y);
/* Batches per epoch: ceil(N / batch_size), or floor with drop_last (with
 * shards: the steps of the epoch, the same for every shard). */
int64_t nb_loader_num_batches(const nb_loader *ld);
nb_dataset *nb_loader_dataset(const nb_loader *ld);
/* Joins the worker and frees the batch buffers. NULL is fine. */
void nb_loader_free(nb_loader *ld);

/* nb_model_fit with batches from loaders: each epoch resets train and runs
 * a training step on each of its batches, then, when val is not NULL,
 * evaluates on all of val's batches (recorded as "val_loss" and the val_
 * metrics). The loaders decide batch size, order and dropping; opts gives
 * the rest (epochs, verbosity, early stopping, callbacks) and must leave
 * validation_split, x_val and y_val unset; its batch_size and shuffle are
 * not used. Training, progress and history are nb_model_fit's own code, so
 * a loader giving fit's batches (the same rows, the same order) gives fit's
 * history bit for bit. Returns the history or NULL with a message, as
 * nb_model_fit. */
nb_history *nb_model_fit_loader(nb_model *model, nb_loader *train, nb_loader *val, const nb_fit_opts *opts);

#ifdef __cplusplus
}
#endif
#endif
