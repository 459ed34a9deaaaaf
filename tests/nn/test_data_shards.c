/* test_data_shards.c — the distributed sampler of the loader
 * (nb_loader_opts.num_shards, shard), in one process: the N loaders that N
 * ranks would make, each from a generator with the same state.
 *
 * The contract under test (nb_data.h): every epoch, each sample is read
 * exactly once by exactly one shard; all shards take the same number of
 * steps; the shards' batches of a step, in shard order, are the batch one
 * loader of batch_size N·B gives over the same permutation; the rows left
 * after the last full step are dealt out evenly, the first shards taking
 * one more; fewer left rows than shards are not read. The MPI tests
 * (tests/nn/dist) check the same across processes.
 *
 * Sample i is x[i] = (i, 2i), y[i] = -i, so a row tells its index.
 */
#include <string.h>

#include "test_util.h"

TestSuite(data_shards, NB_TEST_HOOKS);

static nb_dataset *numbered(int64_t n) {
    nb_tensor *x = nb_empty(NB_SHAPE(n, 2)), *y = nb_empty(NB_SHAPE(n));
    float *px = nb_data_mut(x), *py = nb_data_mut(y);
    for (int64_t i = 0; i < n; i++) {
        px[2 * i] = (float)i;
        px[2 * i + 1] = 2.0f * (float)i;
        py[i] = -(float)i;
    }
    return nb_dataset_new(x, y);
}

/* The indices of a batch's rows, checking that x and y agree. */
static int64_t rows_of(nb_tensor *xb, nb_tensor *yb, int64_t *out) {
    int64_t b = nb_dim(xb, 0);
    const float *px = nb_data(xb), *py = nb_data(yb);
    for (int64_t i = 0; i < b; i++) {
        cr_assert_eq(px[2 * i + 1], 2.0f * px[2 * i]);
        cr_assert_eq(py[i], -px[2 * i]);
        out[i] = (int64_t)px[2 * i];
    }
    return b;
}

/* N shards of batch B over n samples against one loader of batch N·B,
 * both shuffled from seed 11, for two epochs. */
static void check_shards(int64_t n, int shards, int batch) {
    nb_dataset *ds = numbered(n);
    nb_generator gen[8], whole_gen;
    nb_loader *ld[8];
    for (int s = 0; s < shards; s++) {
        nb_generator_seed(&gen[s], 11);
        ld[s] = nb_loader_new(ds, &(nb_loader_opts){.batch_size = batch, .shuffle = true, .generator = &gen[s],
                                                     .num_shards = shards, .shard = s});
        cr_assert_not_null(ld[s], "%s", nb_error());
    }
    nb_generator_seed(&whole_gen, 11);
    nb_loader *whole = nb_loader_new(ds, &(nb_loader_opts){.batch_size = shards * batch, .shuffle = true,
                                                           .generator = &whole_gen});
    int64_t step = (int64_t)shards * batch, left = n % step, full = n / step;
    int64_t want_steps = full + (left >= shards);
    for (int s = 0; s < shards; s++) cr_assert_eq(nb_loader_num_batches(ld[s]), want_steps);

    int64_t *seen = calloc((size_t)n, sizeof(int64_t)), rows[64], whole_rows[256];
    for (int epoch = 0; epoch < 2; epoch++) {
        memset(seen, 0, sizeof(int64_t) * (size_t)n);
        for (int s = 0; s < shards; s++) nb_loader_reset(ld[s]);
        nb_loader_reset(whole);
        for (int64_t k = 0; k < want_steps; k++) {
            nb_tensor *wx, *wy;
            cr_assert(nb_loader_next(whole, &wx, &wy));
            int64_t wn = rows_of(wx, wy, whole_rows), at = 0;
            for (int s = 0; s < shards; s++) {
                nb_tensor *xb, *yb;
                cr_assert(nb_loader_next(ld[s], &xb, &yb), "shard %d ended early at step %lld", s, (long long)k);
                int64_t b = rows_of(xb, yb, rows);
                /* full steps: B each; the last: left/N, the first left%N one more */
                int64_t want_b = k < full ? batch : left / shards + (s < left % shards);
                cr_assert_eq(b, want_b, "shard %d step %lld has %lld rows, expected %lld", s, (long long)k,
                             (long long)b, (long long)want_b);
                for (int64_t i = 0; i < b; i++) {
                    cr_assert_eq(rows[i], whole_rows[at + i], "shard %d step %lld row %lld", s, (long long)k,
                                 (long long)i);
                    seen[rows[i]]++;
                }
                at += b;
            }
            cr_assert_eq(at, wn, "the shards of step %lld hold %lld rows, the whole batch %lld", (long long)k,
                         (long long)at, (long long)wn);
        }
        nb_tensor *xb, *yb;
        for (int s = 0; s < shards; s++) cr_assert_not(nb_loader_next(ld[s], &xb, &yb));
        /* each sample once, except the last `left` of the permutation when
         * there are too few of them for every shard to take one */
        int64_t unread = 0;
        for (int64_t i = 0; i < n; i++) {
            cr_assert_leq(seen[i], 1, "sample %lld read %lld times in epoch %d", (long long)i, (long long)seen[i],
                          epoch);
            unread += seen[i] == 0;
        }
        cr_assert_eq(unread, left >= shards ? 0 : left, "%lld samples unread in epoch %d", (long long)unread, epoch);
    }
    free(seen);
    nb_loader_free(whole);
    for (int s = 0; s < shards; s++) nb_loader_free(ld[s]);
    nb_dataset_free(ds);
}

Test(data_shards, one_shard_is_the_plain_loader) { check_shards(23, 1, 4); }
Test(data_shards, even_split) { check_shards(48, 3, 4); }
Test(data_shards, last_step_dealt_out_evenly) {
    check_shards(53, 2, 4); /* 5 left: 3 and 2 */
    check_shards(53, 3, 4); /* 5 left: 2, 2, 1 */
    check_shards(30, 4, 2); /* 6 left: 2, 2, 1, 1 */
}
Test(data_shards, fewer_left_than_shards_are_not_read) {
    check_shards(49, 3, 4); /* 1 left for 3 shards */
    check_shards(5, 4, 1);  /* 1 left after one step */
}

Test(data_shards, drop_last_drops_the_last_step) {
    nb_dataset *ds = numbered(53);
    nb_loader *ld = nb_loader_new(ds, &(nb_loader_opts){.batch_size = 4, .num_shards = 2, .shard = 1,
                                                        .drop_last = true});
    cr_assert_eq(nb_loader_num_batches(ld), 6);
    nb_tensor *xb, *yb;
    int64_t rows[4];
    /* in order: step k, shard 1 reads rows 8k + 4 .. 8k + 7 */
    for (int64_t k = 0; k < 6; k++) {
        cr_assert(nb_loader_next(ld, &xb, &yb));
        cr_assert_eq(rows_of(xb, yb, rows), 4);
        for (int i = 0; i < 4; i++) cr_assert_eq(rows[i], 8 * k + 4 + i);
    }
    cr_assert_not(nb_loader_next(ld, &xb, &yb));
    nb_loader_free(ld);
    nb_dataset_free(ds);
}

Test(data_shards, bad_shards_are_refused) {
    nb_dataset *ds = numbered(10);
    cr_assert_null(nb_loader_new(ds, &(nb_loader_opts){.batch_size = 2, .num_shards = 2, .shard = 2}));
    EXPECT_ERROR("nb_loader_new", "shard 2", "num_shards 2");
    cr_assert_null(nb_loader_new(ds, &(nb_loader_opts){.batch_size = 2, .num_shards = -1}));
    EXPECT_ERROR("nb_loader_new", "num_shards -1");
    cr_assert_null(nb_loader_new(ds, &(nb_loader_opts){.batch_size = 2, .shard = 1}));
    EXPECT_ERROR("nb_loader_new", "shard 1");
    nb_dataset_free(ds);
}
