/* fit.c — nb_dist_fit: nb_model_fit on every rank at once.
 *
 * Nothing of the training loop is repeated here: the rank's data comes
 * from a loader with the distributed sampler (nb_loader_opts.num_shards),
 * and the loop is nb_model_fit_loader's, with two callbacks of nb_fit_opts
 * plugged in: on_gradients finishes the gradient average (a reducer whose
 * hooks started its buckets during backward) before the optimizer step, and on_epoch_end gives every rank rank
 * 0's default generator, which drew the epoch's permutation and which rank
 * 0's checkpoint saves. A rank may draw a different number of values in
 * an epoch (dropout over a last batch one row longer), and this keeps the
 * next permutation, and a run resumed from the checkpoint, the same on
 * every rank.
 */
#include "dist_internal.h"
#include "nn_internal.h"

#include <string.h>

typedef struct fit_state {
    nb_dist *d;
    nb_dist_reducer *reducer;
    nb_epoch_callback on_epoch_end; /* the caller's */
    void *user;
} fit_state;

static int average_gradients(nb_model *model, void *user) {
    (void)model;
    fit_state *s = user;
    return nb_dist_reducer_wait(s->reducer);
}

static bool end_of_epoch(nb_model *model, int epoch, const nb_history *h, void *user) {
    fit_state *s = user;
    if (nb__dist_broadcast_generator("nb_dist_fit", s->d) != 0) return false;
    return s->on_epoch_end ? s->on_epoch_end(model, epoch, h, s->user) : true;
}

/* Runs one row of x through the model so that layers that learn their
 * shapes from the first input have their parameters before the broadcast. */
static bool build(const char *who, nb_model *model, nb_tensor *x) {
    nb_scope_begin();
    nb_tensor *out = nb_model_predict(model, nb_slice(x, 0, 0, 1, 1), 1);
    nb_scope_end();
    if (out) return true;
    char why[400];
    snprintf(why, sizeof why, "%s", nb_error() ? nb_error() : "no message");
    nb_set_error("%s: the model cannot take x: %s", who, why);
    return false;
}

nb_history *nb_dist_fit(nb_dist *d, nb_model *model, nb_tensor *x, nb_tensor *y, const nb_fit_opts *opts) {
    const char *who = "nb_dist_fit";
    if (!d || !model || !x || !y) {
        if (!nb_error())
            nb_set_error("%s: %s is NULL", who, !d ? "the nb_dist" : !model ? "the model" : !x ? "x" : "y");
        return NULL;
    }
    if (nb_dist_failed(d)) {
        nb_set_error("%s: an earlier collective failed on rank %d of %d; the job must stop (nb_dist_finalize)", who,
                     nb_dist_rank(d), nb_dist_world_size(d));
        return NULL;
    }
    nb_fit_opts o = opts ? *opts : nb_fit_defaults();
    if (o.on_gradients) {
        nb_set_error("%s: on_gradients must be NULL: nb_dist_fit averages the gradients there", who);
        return NULL;
    }
    if (o.batch_size < 1 || !(o.validation_split >= 0 && o.validation_split < 1) || (!o.x_val != !o.y_val)) {
        nb_set_error("%s: batch_size must be >= 1 (got %d), validation_split in [0, 1) (got %g), and x_val and "
                     "y_val given together", who, o.batch_size, (double)o.validation_split);
        return NULL;
    }
    bool validate = o.x_val || o.validation_split > 0;
    const char *monitor = o.monitor ? o.monitor : validate ? "val_loss" : "loss";
    if (o.patience > 0 && strncmp(monitor, "val_", 4) != 0) {
        nb_set_error("%s: early stopping must monitor a validation value (\"val_loss\", \"val_accuracy\"), "
                     "the same on every rank, not '%s' (each rank's own shard)", who, monitor);
        return NULL;
    }
    if (!nb__same_rows(who, x, y) || !build(who, model, x)) return NULL;
    if (nb_dist_broadcast_model(d, model) != 0) {
        char why[400];
        snprintf(why, sizeof why, "%s", nb_error() ? nb_error() : "no message");
        nb_set_error("%s: %s", who, why);
        return NULL;
    }

    nb_history *h = NULL;
    nb_dataset *all = nb_dataset_new(x, y), *train = NULL, *val = NULL;
    nb_loader *train_ld = NULL, *val_ld = NULL;
    fit_state st = {.d = d, .on_epoch_end = o.on_epoch_end, .user = o.user};
    if (!all) goto done;
    if (o.x_val) {
        train = all;
        all = NULL;
        if (!(val = nb_dataset_new(o.x_val, o.y_val))) goto done;
    } else if (o.validation_split > 0) {
        if (nb_dataset_split(all, o.validation_split, &train, &val) != 0) goto done;
    } else {
        train = all;
        all = NULL;
    }
    train_ld = nb_loader_new(train, &(nb_loader_opts){.batch_size = o.batch_size, .shuffle = o.shuffle,
                                                       .num_shards = nb_dist_world_size(d),
                                                       .shard = nb_dist_rank(d)});
    if (!train_ld) goto done;
    if (nb_loader_num_batches(train_ld) == 0) {
        nb_set_error("%s: %lld training rows give no step to %d ranks", who, (long long)nb_dataset_len(train),
                     nb_dist_world_size(d));
        goto done;
    }
    if (val && !(val_ld = nb_loader_new(val, &(nb_loader_opts){.batch_size = o.batch_size}))) goto done;
    int np = 0;
    nb_tensor **params = nb_model_parameters(model, &np);
    if (!params || !(st.reducer = nb_dist_reducer_new(d, np, params))) goto done;
    /* buckets start from backward; average_gradients then only waits */
    if (nb_dist_reducer_attach(st.reducer) != 0) goto done;

    nb_fit_opts fo = o;
    fo.validation_split = 0;
    fo.x_val = fo.y_val = NULL;
    fo.on_gradients = average_gradients;
    fo.gradients_user = &st;
    fo.on_epoch_end = end_of_epoch;
    fo.user = &st;
    if (nb_dist_rank(d) != 0) {
        fo.verbose = 0;
        fo.checkpoint_path = NULL;
    }
    h = nb_model_fit_loader(model, train_ld, val_ld, &fo);
    if (h && nb_dist_failed(d)) /* name the call the user made */
        nb_set_error("%s: %s", who, nb_history_stop_reason(h));
done:
    if (!h && nb_error() && strncmp(nb_error(), who, strlen(who)) != 0) {
        char why[400];
        snprintf(why, sizeof why, "%s", nb_error());
        nb_set_error("%s: %s", who, why);
    }
    nb_dist_reducer_free(st.reducer);
    nb_loader_free(val_ld);
    nb_loader_free(train_ld);
    nb_dataset_free(val);
    nb_dataset_free(train);
    nb_dataset_free(all);
    return h;
}
