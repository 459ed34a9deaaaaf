/* model.c — the Keras-style model: add, compile, fit, evaluate, predict,
 * summary, and the history fit returns.
 *
 * fit is the explicit training loop of the README with the bookkeeping
 * around it: for each batch, inside one scope,
 *
 *     pred = forward(x_batch); loss = loss_fn(pred, y_batch);
 *     zero_grad; backward(loss); optimizer step;
 *
 * and around the batches: shuffling with nabla's seeded generator (the same
 * seed gives the same history bit for bit), validation, metrics, Keras's
 * progress line, callbacks, early stopping and the stop on a non-finite
 * loss. Everything that can be wrong with the arguments is checked before
 * the first step, by running one sample through the model, so a bad call
 * leaves the model as it was. nb_model_fit (arrays) and nb_model_fit_loader
 * (nb_data.h) differ only in where the batches come from (`batches`): both
 * run fit_batches, the one training loop.
 */
#include "nb_data.h"
#include "nn_internal.h"
#include "nb_io.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_METRICS 8
#define MAX_KEYS (2 * (MAX_METRICS + 1))

struct nb_model {
    nb_module *net;
    bool sequential;
    int sample_ndim; /* the shape of one input sample, once known */
    int64_t sample_shape[NB_MAX_DIMS];
    nb_optimizer *opt;
    char opt_name[32]; /* compiled by name before the parameters existed */
    bool opt_custom;   /* given by nb_model_set_optimizer, not by name */
    bool opt_stale;    /* a custom optimizer dropped because layers were added */
    nb_loss_fn loss;
    char loss_name[48];
    int nmetrics;
    nb_metric_fn metrics[MAX_METRICS];
    const char *metric_names[MAX_METRICS];
    int64_t epochs_done; /* epochs trained, for checkpoints (nb_fit_opts.initial_epoch) */
};

struct nb_history {
    int epochs, cap, nkeys;
    char keys[MAX_KEYS][56];
    float *values[MAX_KEYS];
    char stop_reason[640]; /* an error message (up to 511 characters) and where it happened */
};

/* ---- building ------------------------------------------------------------------- */

/* The model over m (taken: freed on failure, unless it belongs to a
 * parent module, which is refused). */
static nb_model *model_new(const char *who, nb_module *m) {
    if (!m) return NULL;
    if (m->parent) {
        nb_set_error("%s: the %s already belongs to another module, which frees it; a model must "
                     "own its module", who, m->type->name);
        return NULL;
    }
    nb_model *model = nb_calloc(1, sizeof *model);
    if (!model) {
        nb_set_error("%s: out of memory", who);
        nb_module_free(m);
        return NULL;
    }
    model->net = m;
    /* A Sequential, however it was made, gets the layer-wise treatment:
     * nb_model_add, per-layer summary, and its input shape from a first
     * layer that declares one (Dense's input_dim, Conv2D's input_shape). */
    model->sequential = nb__is_sequential(m);
    if (model->sequential)
        nb__layer_input_shape(nb_sequential_at(m, 0), &model->sample_ndim, model->sample_shape);
    return model;
}

nb_model *nb_model_from_module(nb_module *m) { return model_new("nb_model_from_module", m); }

nb_model *nb_model_sequential(void) {
    const char *who = "nb_model_sequential";
    return model_new(who, nb__sequential_new(who));
}

nb_module *nb_model_module(nb_model *model) { return model ? model->net : NULL; }

nb_tensor **nb_model_parameters(nb_model *model, int *count) {
    return nb__module_parameters("nb_model_parameters", model ? model->net : NULL, count);
}

/* Runs one zero sample through the model without recording anything; the
 * output is left in *out (inside the caller's scope) when asked for. */
static bool probe(nb_model *model, nb_tensor **out) {
    int64_t shape[NB_MAX_DIMS + 1] = {1};
    for (int d = 0; d < model->sample_ndim; d++) shape[d + 1] = model->sample_shape[d];
    bool was = nb_set_grad_enabled(false), training = model->net->training;
    nb_module_train(model->net, false);
    nb_tensor *y = nb_module_forward(model->net, nb_zeros(model->sample_ndim + 1, shape));
    nb_module_train(model->net, training);
    nb_set_grad_enabled(was);
    if (out) *out = y;
    return y != NULL;
}

int nb_model_add(nb_model *model, nb_module *layer) {
    if (!model || !layer) {
        nb__module_discard(layer);
        return -1;
    }
    if (!model->sequential) {
        nb_set_error("nb_model_add: this model wraps a %s, not a Sequential", model->net->type->name);
        nb__module_discard(layer);
        return -1;
    }
    bool first = nb_sequential_len(model->net) == 0;
    if (nb__sequential_add("nb_model_add", model->net, layer) != 0) return -1;
    if (first) nb__layer_input_shape(layer, &model->sample_ndim, model->sample_shape);
    if (model->sample_ndim == 0) return 0; /* shapes unknown until the first fit */
    nb_scope_begin();
    bool fits = probe(model, NULL);
    nb_scope_end();
    if (!fits) {
        int position = nb_sequential_len(model->net) - 1;
        char why[400];
        snprintf(why, sizeof why, "%s", nb_error() ? nb_error() : "");
        nb_module_free(nb__sequential_pop(model->net));
        if (first) model->sample_ndim = 0;
        nb_set_error("nb_model_add: layer %d does not fit the model: %s", position, why);
        return -1;
    }
    /* nothing to do for the optimizer here: ensure_optimizer sees at the
     * next fit whether the parameter list changed */
    return 0;
}

/* ---- compile ------------------------------------------------------------------------ */

/* The optimizers compile knows by name, with Keras 3's defaults and update
 * formulas (keras.optimizers.SGD, Adam, AdamW, RMSprop, Adagrad), since the
 * names are Keras's: a model ported from Keras trains the same. The C
 * constructors keep PyTorch's defaults; the options below turn them into
 * Keras's optimizers. */
static nb_optimizer *optimizer_by_name(const char *name, int n, nb_tensor *const *params) {
    if (strcmp(name, "sgd") == 0) return nb_sgd(n, params, NULL); /* lr 0.01, as Keras */
    if (strcmp(name, "adam") == 0 || strcmp(name, "adamw") == 0) {
        nb_adam_opts o = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-7f, .eps_hat = true};
        if (name[4] == 'w') {
            o.weight_decay = 0.004f;
            return nb_adamw(n, params, &o);
        }
        return nb_adam(n, params, &o);
    }
    if (strcmp(name, "rmsprop") == 0) {
        nb_rmsprop_opts o = {.lr = 1e-3f, .alpha = 0.9f, .eps = 1e-7f, .eps_inside_sqrt = true};
        return nb_rmsprop(n, params, &o);
    }
    if (strcmp(name, "adagrad") == 0) {
        nb_adagrad_opts o = {.lr = 1e-3f, .eps = 1e-7f, .initial_accumulator_value = 0.1f,
                             .eps_inside_sqrt = true};
        return nb_adagrad(n, params, &o);
    }
    return NULL;
}

static bool known_optimizer(const char *name) {
    const char *known[] = {"sgd", "adam", "adamw", "rmsprop", "adagrad"};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (strcmp(known[i], name) == 0) return true;
    return false;
}

/* The first of the model's n trainable parameters (those requiring grad)
 * that opt does not update, or -1 when it updates them all. */
static int first_uncovered(const nb_optimizer *opt, nb_tensor *const *params, int n) {
    int m = nb_optimizer_num_params(opt);
    for (int i = 0; i < n; i++) {
        if (!nb_requires_grad(params[i])) continue;
        bool found = false;
        for (int j = 0; j < m && !found; j++) found = nb_optimizer_param(opt, j) == params[i];
        if (!found) return i;
    }
    return -1;
}

/* Makes sure the optimizer covers the current parameter list: builds the
 * one named at compile once the parameters exist, and again when layers
 * added (or built lazily) since changed the list; a custom optimizer that
 * no longer covers the list cannot be rebuilt, and fit asks for a new one
 * rather than leave parameters untrained. */
static bool ensure_optimizer(const char *who, nb_model *model) {
    int n;
    nb_tensor **params = nb__module_parameters(who, model->net, &n);
    if (!params) return false;
    bool stale = model->opt && (model->opt_custom ? first_uncovered(model->opt, params, n) >= 0
                                                  : nb_optimizer_num_params(model->opt) != n ||
                                                        first_uncovered(model->opt, params, n) >= 0);
    if (stale) {
        nb_optimizer_free(model->opt);
        model->opt = NULL;
        if (model->opt_custom) {
            model->opt_name[0] = '\0';
            model->opt_custom = false;
            model->opt_stale = true;
        }
    }
    if (model->opt) return true;
    if (!model->opt_name[0]) {
        if (model->opt_stale)
            nb_set_error("%s: the model's parameters changed after nb_model_set_optimizer; "
                         "pass an optimizer built over the new parameter list (nb_model_parameters)", who);
        else
            nb_set_error("%s: the model has no optimizer (call nb_model_compile or "
                         "nb_model_set_optimizer first)", who);
        return false;
    }
    if (n == 0) {
        nb_set_error("%s: the model has no parameters to train", who);
        return false;
    }
    model->opt = optimizer_by_name(model->opt_name, n, params);
    if (!model->opt) {
        char why[400];
        snprintf(why, sizeof why, "%s", nb_error() ? nb_error() : "");
        nb_set_error("%s: cannot make the '%s' optimizer: %s", who, model->opt_name, why);
    }
    return model->opt != NULL;
}

/* A model compiled by name before its layers had parameters gets its
 * optimizer here, once they exist; until then there is none to return. */
nb_optimizer *nb_model_optimizer(nb_model *model) {
    if (!model) return NULL;
    if (model->opt) return model->opt;
    int n;
    if (model->opt_name[0] && nb__module_parameters("nb_model_optimizer", model->net, &n) && n == 0) {
        nb_set_error("nb_model_optimizer: the model's layers have no parameters yet (they are "
                     "built by the first input: fit, predict or evaluate); the '%s' optimizer is "
                     "made with them", model->opt_name);
        return NULL;
    }
    return ensure_optimizer("nb_model_optimizer", model) ? model->opt : NULL;
}

int nb_model_compile(nb_model *model, const char *optimizer, const char *loss, const char *metrics) {
    if (!model) return -1;
    if (!optimizer || !known_optimizer(optimizer)) {
        nb_set_error("nb_model_compile: unknown optimizer '%s' (known: sgd, adam, adamw, rmsprop, "
                     "adagrad; or pass your own with nb_model_set_optimizer)",
                     optimizer ? optimizer : "(null)");
        return -1;
    }
    nb_loss_fn fn = nb_loss_by_name(loss);
    if (!fn) {
        char why[400];
        snprintf(why, sizeof why, "%s", nb_error());
        nb_set_error("nb_model_compile: %s", why);
        return -1;
    }
    /* metrics: parse all before changing anything */
    nb_metric_fn mfns[MAX_METRICS];
    const char *mnames[MAX_METRICS];
    int nm = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", metrics ? metrics : "");
    for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        if (nm == MAX_METRICS) {
            nb_set_error("nb_model_compile: at most %d metrics", MAX_METRICS);
            return -1;
        }
        mfns[nm] = nb__metric_by_name(tok, fn, &mnames[nm]);
        if (!mfns[nm]) {
            char why[400];
            snprintf(why, sizeof why, "%s", nb_error());
            nb_set_error("nb_model_compile: %s", why);
            return -1;
        }
        nm++;
    }
    /* the optimizer, when the parameters exist, before anything changes:
     * a compile that fails leaves the model as it was */
    int n;
    nb_tensor **params = nb__module_parameters("nb_model_compile", model->net, &n);
    if (!params) return -1;
    nb_optimizer *opt = NULL;
    if (n > 0 && !(opt = optimizer_by_name(optimizer, n, params))) {
        char why[400];
        snprintf(why, sizeof why, "%s", nb_error() ? nb_error() : "");
        nb_set_error("nb_model_compile: cannot make the '%s' optimizer: %s", optimizer, why);
        return -1;
    }
    model->loss = fn;
    snprintf(model->loss_name, sizeof model->loss_name, "%s", loss);
    model->nmetrics = nm;
    memcpy(model->metrics, mfns, sizeof mfns);
    memcpy(model->metric_names, mnames, sizeof mnames);
    nb_optimizer_free(model->opt);
    model->opt = opt;
    model->opt_custom = model->opt_stale = false;
    snprintf(model->opt_name, sizeof model->opt_name, "%s", optimizer);
    return 0;
}

int nb_model_set_optimizer(nb_model *model, nb_optimizer *opt) {
    const char *who = "nb_model_set_optimizer";
    if (!model || !opt) return -1;
    int n;
    nb_tensor **params = nb__module_parameters(who, model->net, &n);
    if (!params) return -1;
    if (n == 0) {
        nb_set_error("%s: the model has no parameters yet (layers without an input size are built "
                     "by the first fit, predict or evaluate), so no optimizer can cover them; "
                     "compile with an optimizer name, or build the model first",
                     who);
        return -1;
    }
    int missing = first_uncovered(opt, params, n);
    if (missing >= 0) {
        char shape[96];
        nb_set_error("%s: the optimizer does not update the model's parameter %d '%s' %s; build it "
                     "over nb_model_parameters(model) (it may update more)",
                     who, missing, nb_module_parameter_name(model->net, missing),
                     nb_shape_str(nb_ndim(params[missing]), nb_shape(params[missing]), shape, sizeof shape));
        return -1;
    }
    if (opt != model->opt) nb_optimizer_free(model->opt);
    model->opt = opt;
    model->opt_custom = true;
    model->opt_stale = false;
    snprintf(model->opt_name, sizeof model->opt_name, "%s", nb_optimizer_name(opt));
    return 0;
}

int nb_model_set_loss(nb_model *model, const char *name, nb_loss_fn loss) {
    if (!model || !loss) {
        if (model) nb_set_error("nb_model_set_loss: loss function is NULL");
        return -1;
    }
    model->loss = loss;
    snprintf(model->loss_name, sizeof model->loss_name, "%s", name ? name : "custom");
    return 0;
}

/* ---- history ------------------------------------------------------------------------ */

static nb_history *history_new(void) { return nb_calloc(1, sizeof(nb_history)); }

static int history_key(nb_history *h, const char *key) {
    for (int i = 0; i < h->nkeys; i++)
        if (strcmp(h->keys[i], key) == 0) return i;
    if (h->nkeys == MAX_KEYS) return -1;
    snprintf(h->keys[h->nkeys], sizeof h->keys[0], "%s", key);
    h->values[h->nkeys] = nb_calloc((size_t)(h->cap ? h->cap : 1), sizeof(float));
    return h->nkeys++;
}

/* Makes room for key at epoch; fit reserves every key of an epoch before
 * its first step, so that recording the epoch afterwards cannot fail. */
static int history_reserve(nb_history *h, const char *key, int epoch) {
    if (epoch >= h->cap) {
        int cap = h->cap ? 2 * h->cap : 16;
        while (cap <= epoch) cap *= 2;
        for (int i = 0; i < h->nkeys; i++) {
            float *v = nb_realloc(h->values[i], (size_t)cap * sizeof(float));
            if (!v) return -1;
            h->values[i] = v;
        }
        h->cap = cap;
    }
    int k = history_key(h, key);
    return k >= 0 && h->values[k] ? k : -1;
}

static bool history_push(nb_history *h, const char *key, int epoch, float value) {
    int k = history_reserve(h, key, epoch);
    if (k < 0) return false;
    h->values[k][epoch] = value;
    if (epoch + 1 > h->epochs) h->epochs = epoch + 1;
    return true;
}

/* Every key fit records for an epoch, in Keras's order: loss, the metrics,
 * then their val_ forms. */
static bool history_reserve_epoch(nb_history *h, const nb_model *model, bool validate, int epoch) {
    bool ok = history_reserve(h, "loss", epoch) >= 0;
    for (int k = 0; ok && k < model->nmetrics; k++)
        ok = history_reserve(h, model->metric_names[k], epoch) >= 0;
    if (validate) ok = ok && history_reserve(h, "val_loss", epoch) >= 0;
    for (int k = 0; ok && validate && k < model->nmetrics; k++) {
        char key[64];
        snprintf(key, sizeof key, "val_%s", model->metric_names[k]);
        ok = history_reserve(h, key, epoch) >= 0;
    }
    return ok;
}

int nb_history_epochs(const nb_history *h) { return h ? h->epochs : 0; }
int nb_history_num_keys(const nb_history *h) { return h ? h->nkeys : 0; }
const char *nb_history_key(const nb_history *h, int i) {
    return h && i >= 0 && i < h->nkeys ? h->keys[i] : NULL;
}
const float *nb_history_get(const nb_history *h, const char *key) {
    for (int i = 0; h && key && i < h->nkeys; i++)
        if (strcmp(h->keys[i], key) == 0) return h->values[i];
    return NULL;
}
const char *nb_history_stop_reason(const nb_history *h) { return h ? h->stop_reason : ""; }

void nb_history_free(nb_history *h) {
    if (!h) return;
    for (int i = 0; i < h->nkeys; i++) nb_free(h->values[i]);
    nb_free(h);
}

/* ---- batches ---------------------------------------------------------------------------- */

/* Rows idx[0..n) of t as a new [n, ...] tensor (plain data: no graph). */
static nb_tensor *take_rows(nb_tensor *t, const int64_t *idx, int64_t n) {
    int64_t shape[NB_MAX_DIMS];
    memcpy(shape, nb_shape(t), sizeof(int64_t) * (size_t)nb_ndim(t));
    shape[0] = n;
    nb_tensor *out = nb_empty(nb_ndim(t), shape);
    if (!out) return NULL;
    int64_t row = nb_numel(t) / (nb_dim(t, 0) ? nb_dim(t, 0) : 1);
    const float *src = nb_data(t);
    float *dst = nb_data_mut(out);
    if (row == 1) { /* a column of targets: one float a row, not a call */
        for (int64_t i = 0; i < n; i++) dst[i] = src[idx[i]];
        return out;
    }
    for (int64_t i = 0; i < n; i++) memcpy(dst + i * row, src + idx[i] * row, sizeof(float) * (size_t)row);
    return out;
}

/* Where fit and evaluate take their batches from: the rows order[0..rows)
 * of x and y, batch_size at a time (nb_model_fit shuffles the order of its
 * training rows at every epoch), or a loader (nb_model_fit_loader). */
typedef struct batches {
    nb_loader *loader;
    nb_tensor *x, *y;
    int64_t *order, rows, batch_size;
    bool shuffle;
} batches;

static int64_t batches_steps(const batches *s) {
    return s->loader ? nb_loader_num_batches(s->loader) : (s->rows + s->batch_size - 1) / s->batch_size;
}

/* Starts an epoch: a new permutation when shuffling, from the default
 * generator (a loader draws from its own, the default unless it was given
 * one). */
static void batches_start(batches *s) {
    if (s->loader) nb_loader_reset(s->loader);
    else if (s->shuffle) nb_randperm(NULL, s->rows, s->order);
}

/* The batch after the last one taken since batches_start (number step):
 * new tensors in the caller's scope, or the loader's, lent; *b its rows.
 * False after the last batch. */
static bool batches_next(batches *s, int64_t step, nb_tensor **x, nb_tensor **y, int64_t *b) {
    if (s->loader) {
        if (!nb_loader_next(s->loader, x, y)) return false;
        *b = nb_dim(*x, 0);
        return true;
    }
    int64_t start = step * s->batch_size;
    if (start >= s->rows) return false;
    *b = s->rows - start < s->batch_size ? s->rows - start : s->batch_size;
    *y = take_rows(s->y, s->order + start, *b);
    *x = take_rows(s->x, s->order + start, *b);
    return true;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Loss and metric sums over rows idx of (x, y), weighted by batch size. */
typedef struct totals {
    double loss, metrics[MAX_METRICS];
    int64_t rows;
} totals;

/* The model's prediction and loss on rows x, y (both in the caller's
 * scope), or false and a message starting with who that tells which of the
 * two failed and why: the forward's or the loss's own message when they
 * set one, or what they returned instead of a single value. */
static bool forward_and_loss(const char *who, nb_model *model, nb_tensor *x, nb_tensor *y, nb_tensor **pred_out,
                             nb_tensor **loss_out) {
    char why[400], shape[96];
    *loss_out = *pred_out = NULL;
    if (!x || !y) { /* the rows could not be copied, and the copy said why */
        snprintf(why, sizeof why, "%s", nb_error() ? nb_error() : "");
        nb_set_error("%s: %s", who, why);
        return false;
    }
    nb_clear_error(); /* so that a message after a NULL is theirs, not an old one */
    nb_tensor *pred = *pred_out = nb_module_forward(model->net, x);
    if (!pred) {
        snprintf(why, sizeof why, "%s", nb_error() ? nb_error() : "it returned NULL without a message");
        nb_set_error("%s: the model's forward failed: %s", who, why);
        return false;
    }
    nb_clear_error();
    nb_tensor *loss = model->loss(pred, y);
    if (!loss) {
        snprintf(why, sizeof why, "%s", nb_error() ? nb_error() : "it returned NULL without a message");
        nb_set_error("%s: the loss '%s' failed: %s", who, model->loss_name, why);
        return false;
    }
    if (nb_numel(loss) != 1) {
        nb_set_error("%s: the loss '%s' returned a %s tensor for %lld rows, not a single value; a loss "
                     "must reduce the batch (nb_mean or nb_sum of its terms)",
                     who, model->loss_name, nb_shape_str(nb_ndim(loss), nb_shape(loss), shape, sizeof shape),
                     (long long)(nb_ndim(x) ? nb_dim(x, 0) : 0));
        return false;
    }
    *loss_out = loss;
    return true;
}

/* Adds each metric of (pred, yb), weighted by the b rows, into sums. A
 * metric returns a float, so its failure (out of memory, say) shows as an
 * error set while it ran: false, with a message naming who and the metric. */
static bool add_metrics(const char *who, const nb_model *model, nb_tensor *pred, nb_tensor *yb,
                        int64_t b, double *sums) {
    bool was = nb_set_grad_enabled(false);
    for (int k = 0; k < model->nmetrics; k++) {
        uint64_t errors = nb_error_count();
        float v = model->metrics[k](pred, yb);
        if (nb_error_count() != errors) {
            nb_set_grad_enabled(was);
            char why[400];
            snprintf(why, sizeof why, "%s", nb_error());
            nb_set_error("%s: the metric '%s' failed: %s", who, model->metric_names[k], why);
            return false;
        }
        sums[k] += (double)v * (double)b;
    }
    nb_set_grad_enabled(was);
    return true;
}

static bool evaluate_batches(const char *who, nb_model *model, batches *s, totals *t) {
    memset(t, 0, sizeof *t);
    bool was = nb_set_grad_enabled(false), training = model->net->training, ok = true;
    nb_module_train(model->net, false);
    batches_start(s);
    for (int64_t step = 0; ok; step++) {
        int64_t b;
        nb_tensor *xb = NULL, *yb = NULL, *pred, *loss;
        nb_scope_begin();
        if (!batches_next(s, step, &xb, &yb, &b)) {
            nb_scope_end();
            break;
        }
        ok = forward_and_loss(who, model, xb, yb, &pred, &loss);
        if (ok) {
            t->loss += (double)nb_item(loss) * (double)b;
            ok = add_metrics(who, model, pred, yb, b, t->metrics);
            t->rows += b;
        }
        nb_scope_end();
    }
    nb_module_train(model->net, training);
    nb_set_grad_enabled(was);
    return ok;
}

/* ---- progress, as Keras prints it ------------------------------------------------------- */

/* A progress line is composed in a buffer first, so that on a terminal the
 * next one can overwrite it completely (padded with spaces where shorter). */
typedef struct line {
    char text[600];
    int len;
} line;

static void add(line *l, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void add(line *l, const char *fmt, ...) {
    if (l->len >= (int)sizeof l->text - 1) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(l->text + l->len, sizeof l->text - (size_t)l->len, fmt, ap);
    va_end(ap);
    if (n > 0) l->len += n;
    if (l->len > (int)sizeof l->text - 1) l->len = (int)sizeof l->text - 1;
}

static void add_duration_per_step(line *l, double seconds) {
    if (seconds >= 1) add(l, "%.0fs/step", seconds);
    else if (seconds >= 1e-3) add(l, "%.0fms/step", seconds * 1e3);
    else add(l, "%.0fus/step", seconds * 1e6);
}

static void add_values(line *l, const nb_model *model, const char *prefix, double loss,
                       const double *metrics) {
    add(l, " - %sloss: %.4f", prefix, loss);
    for (int k = 0; k < model->nmetrics; k++)
        add(l, " - %s%s: %.4f", prefix, model->metric_names[k], metrics[k]);
}

static void add_bar(line *l, int64_t done, int64_t steps) {
    int width = 30, filled = (int)(width * done / (steps ? steps : 1));
    int digits = snprintf(NULL, 0, "%lld", (long long)steps);
    add(l, "%*lld/%lld [", digits, (long long)done, (long long)steps);
    for (int i = 0; i < width; i++) add(l, "%c", i < filled ? '=' : (i == filled && done < steps ? '>' : '.'));
    add(l, "]");
}

/* Writes l; on a terminal over the previous line (*shown is its length). */
static void show(FILE *out, const line *l, bool tty, int *shown) {
    if (tty) fprintf(out, "\r%s%*s", l->text, *shown > l->len ? *shown - l->len : 0, "");
    else fputs(l->text, out);
    *shown = l->len;
    fflush(out);
}

/* ---- fit ------------------------------------------------------------------------------------ */

nb_fit_opts nb_fit_defaults(void) {
    nb_fit_opts o = {0};
    o.epochs = 1;
    o.batch_size = 32;
    o.shuffle = true;
    o.verbose = 1;
    return o;
}

static bool check_xy(const char *who, nb_model *model, nb_tensor *x, nb_tensor *y) {
    if (!x || !y || !nb__same_rows(who, x, y)) return false;
    char a[96], b[96];
    if (nb_dim(x, 0) == 0) {
        nb_set_error("%s: no samples", who);
        return false;
    }
    if (!model->loss) {
        nb_set_error("%s: the model is not compiled (call nb_model_compile first)", who);
        return false;
    }
    if (model->sample_ndim > 0) {
        bool same = nb_ndim(x) - 1 == model->sample_ndim &&
                    memcmp(nb_shape(x) + 1, model->sample_shape, sizeof(int64_t) * (size_t)model->sample_ndim) == 0;
        if (!same) {
            nb_set_error("%s: x %s does not fit the model's input %s per sample", who,
                         nb_shape_str(nb_ndim(x), nb_shape(x), a, sizeof a),
                         nb_shape_str(model->sample_ndim, model->sample_shape, b, sizeof b));
            return false;
        }
    }
    /* Two samples (or the one there is) through the model and the loss
     * catch every other shape mistake (input width, target shape, a loss
     * that does not reduce the batch) before anything changes. */
    int64_t first[2] = {0, 1}, rows = nb_dim(x, 0) > 1 ? 2 : 1;
    nb_scope_begin();
    bool was = nb_set_grad_enabled(false), training = model->net->training;
    nb_module_train(model->net, false);
    nb_tensor *pred, *loss;
    bool fits = forward_and_loss(who, model, take_rows(x, first, rows), take_rows(y, first, rows), &pred, &loss);
    nb_module_train(model->net, training);
    nb_set_grad_enabled(was);
    nb_scope_end();
    if (!fits) {
        char why[400];
        size_t skip = strlen(who) + 2; /* forward_and_loss's "who: " */
        snprintf(why, sizeof why, "%s", strlen(nb_error()) > skip ? nb_error() + skip : nb_error());
        nb_set_error("%s: x %s, y %s do not fit the model: %s", who,
                     nb_shape_str(nb_ndim(x), nb_shape(x), a, sizeof a),
                     nb_shape_str(nb_ndim(y), nb_shape(y), b, sizeof b), why);
        return false;
    }
    if (model->sample_ndim == 0) {
        model->sample_ndim = nb_ndim(x) - 1;
        memcpy(model->sample_shape, nb_shape(x) + 1, sizeof(int64_t) * (size_t)model->sample_ndim);
    }
    return true;
}

/* Keras keeps int(n * (1 - split)) rows for training, the split being the
 * decimal the user wrote. As a float, 0.2 is 0.2000000030, and 10 rows
 * would keep 7: the split goes back to its decimal form first. */
int64_t nb__training_rows(int64_t n, float split) {
    char decimal[32];
    snprintf(decimal, sizeof decimal, "%.7g", (double)split);
    return (int64_t)((double)n * (1.0 - strtod(decimal, NULL)));
}

/* True when fit records key: "loss", a metric, or their "val_" forms. */
static bool recorded(const nb_model *model, const char *key, bool validate) {
    if (strncmp(key, "val_", 4) == 0) {
        if (!validate) return false;
        key += 4;
    }
    if (strcmp(key, "loss") == 0) return true;
    for (int k = 0; k < model->nmetrics; k++)
        if (strcmp(key, model->metric_names[k]) == 0) return true;
    return false;
}

/* Keras's early-stopping direction: accuracies grow, everything else falls. */
static bool higher_is_better(const char *key) { return strstr(key, "acc") != NULL; }

/* What restore_best_weights keeps, as Keras keeps all of a layer's weights:
 * the parameters, then the buffers (a batch norm's running statistics). */
static nb_tensor *state_tensor(const char *who, nb_model *model, int i, int *count) {
    int np, nbuf;
    nb_tensor **p = nb__module_parameters(who, model->net, &np);
    nb_tensor **b = nb__module_buffers(who, model->net, &nbuf);
    if (count) *count = np + nbuf;
    return i < 0 ? NULL : i < np ? p[i] : i < np + nbuf ? b[i - np] : NULL;
}

static void copy_params(nb_model *model, float **saved, bool restore) {
    int n;
    state_tensor("nb_model_fit", model, -1, &n); /* the lists fit made: nothing to fail */
    for (int i = 0; i < n; i++) {
        nb_tensor *t = state_tensor("nb_model_fit", model, i, NULL);
        size_t bytes = sizeof(float) * (size_t)nb_numel(t);
        if (restore) memcpy(nb_data_mut(t), saved[i], bytes);
        else memcpy(saved[i], nb_data(t), bytes);
    }
}

static nb_history *fit_batches(const char *who, nb_model *model, const nb_fit_opts *opts, batches *train,
                               batches *val);

nb_history *nb_model_fit(nb_model *model, nb_tensor *x, nb_tensor *y, const nb_fit_opts *opts_in) {
    if (!model) return NULL;
    nb_fit_opts o = opts_in ? *opts_in : nb_fit_defaults();
    if (o.batch_size <= 0 || o.epochs < 0 || !(o.validation_split >= 0 && o.validation_split < 1)) {
        nb_set_error("nb_model_fit: batch_size must be >= 1 (got %d), epochs >= 0 (got %d) and "
                     "validation_split in [0, 1) (got %g)",
                     o.batch_size, o.epochs, (double)o.validation_split);
        return NULL;
    }
    if (!check_xy("nb_model_fit", model, x, y)) return NULL;
    if (!o.x_val != !o.y_val) {
        nb_set_error("nb_model_fit: validation data needs both x_val and y_val");
        return NULL;
    }
    if ((o.x_val || o.y_val) && !check_xy("nb_model_fit (validation data)", model, o.x_val, o.y_val))
        return NULL;
    if (!ensure_optimizer("nb_model_fit", model)) return NULL;

    int64_t n = nb_dim(x, 0);
    /* validation data, when given, overrides the split (as in Keras) */
    int64_t n_train = o.validation_split > 0 && !o.x_val ? nb__training_rows(n, o.validation_split) : n;
    if (n_train < 1) {
        nb_set_error("nb_model_fit: validation_split %g leaves no training samples", (double)o.validation_split);
        return NULL;
    }
    bool validate = o.x_val || n_train < n;
    nb_tensor *xv = o.x_val ? o.x_val : x, *yv = o.x_val ? o.y_val : y;
    int64_t n_val = o.x_val ? nb_dim(o.x_val, 0) : n - n_train, val_offset = o.x_val ? 0 : n_train;

    int64_t *order = nb_malloc(sizeof(int64_t) * (size_t)n_train);
    int64_t *val_idx = nb_malloc(sizeof(int64_t) * (size_t)(n_val + 1));
    if (!order || !val_idx) {
        nb_free(order);
        nb_free(val_idx);
        nb_set_error("nb_model_fit: out of memory");
        return NULL;
    }
    for (int64_t i = 0; i < n_train; i++) order[i] = i;
    for (int64_t i = 0; i < n_val; i++) val_idx[i] = val_offset + i;
    batches train = {.x = x, .y = y, .order = order, .rows = n_train, .batch_size = o.batch_size,
                     .shuffle = o.shuffle};
    batches val = {.x = xv, .y = yv, .order = val_idx, .rows = n_val, .batch_size = o.batch_size};
    nb_history *h = fit_batches("nb_model_fit", model, &o, &train, validate ? &val : NULL);
    nb_free(order);
    nb_free(val_idx);
    return h;
}

nb_history *nb_model_fit_loader(nb_model *model, nb_loader *train_loader, nb_loader *val_loader,
                                const nb_fit_opts *opts_in) {
    const char *who = "nb_model_fit_loader";
    if (!model) return NULL;
    if (!train_loader) {
        if (!nb_error()) nb_set_error("%s: the training loader is NULL", who);
        return NULL;
    }
    nb_fit_opts o = opts_in ? *opts_in : nb_fit_defaults();
    if (o.epochs < 0 || o.validation_split != 0 || o.x_val || o.y_val) {
        nb_set_error("%s: epochs must be >= 0 (got %d), and validation comes from the val loader: "
                     "validation_split, x_val and y_val must be unset",
                     who, o.epochs);
        return NULL;
    }
    nb_dataset *ds = nb_loader_dataset(train_loader), *vds = nb_loader_dataset(val_loader);
    if (!check_xy(who, model, nb_dataset_x(ds), nb_dataset_y(ds))) return NULL;
    if (val_loader &&
        !check_xy("nb_model_fit_loader (validation data)", model, nb_dataset_x(vds), nb_dataset_y(vds)))
        return NULL;
    if (nb_loader_num_batches(train_loader) == 0 || (val_loader && nb_loader_num_batches(val_loader) == 0)) {
        nb_set_error("%s: the %s loader gives no batch (fewer samples than batch_size, with drop_last)", who,
                     nb_loader_num_batches(train_loader) == 0 ? "training" : "validation");
        return NULL;
    }
    if (!ensure_optimizer(who, model)) return NULL;
    batches train = {.loader = train_loader}, val = {.loader = val_loader};
    return fit_batches(who, model, &o, &train, val_loader ? &val : NULL);
}

/* The training loop of nb_model_fit and nb_model_fit_loader, once their
 * arguments are checked: epochs of training steps over train's batches,
 * then an evaluation over val's (when not NULL), progress, history, early
 * stopping and the callback. Messages start with who. */
static nb_history *fit_batches(const char *who, nb_model *model, const nb_fit_opts *opts, batches *train,
                               batches *val) {
    nb_fit_opts o = *opts;
    FILE *out = o.out ? o.out : stdout;
    bool validate = val != NULL;
    const char *monitor = o.monitor ? o.monitor : validate ? "val_loss" : "loss";
    if (o.initial_epoch < 0 || o.initial_epoch > o.epochs || o.checkpoint_every < 0) {
        nb_set_error("%s: initial_epoch must be in [0, epochs] (got %d, epochs %d) and "
                     "checkpoint_every >= 0 (got %d)", who, o.initial_epoch, o.epochs, o.checkpoint_every);
        return NULL;
    }
    if ((o.patience > 0 || (o.checkpoint_path && o.save_best_only)) && !recorded(model, monitor, validate)) {
        nb_set_error("%s: %s monitors '%s', which is not recorded", who,
                     o.patience > 0 ? "early stopping" : "save_best_only", monitor);
        return NULL;
    }
    int nparams; /* parameters and buffers: what restore_best_weights keeps */
    uint64_t errors = nb_error_count(); /* making the lists can run out of memory */
    state_tensor(who, model, -1, &nparams);
    bool keep_best = o.restore_best_weights && o.patience > 0;
    float **best = keep_best ? nb_calloc((size_t)nparams, sizeof(float *)) : NULL;
    nb_history *h = history_new();
    bool ok = h && (!keep_best || best) && nb_error_count() == errors;
    for (int i = 0; ok && best && i < nparams; i++)
        ok = (best[i] = nb_malloc(sizeof(float) * (size_t)nb_numel(state_tensor(who, model, i, NULL)))) != NULL;
    if (!ok) {
        nb_set_error("%s: out of memory", who);
        goto fail;
    }

    int64_t steps = batches_steps(train);
    bool tty = isatty(fileno(out)) == 1;
    double best_value = 0;
    int best_epoch = -1, waited = 0;
    double best_saved = 0; /* the monitored value at the last save_best_only checkpoint */
    bool saved_any = false;
    nb_module_train(model->net, true);

    for (int epoch = o.initial_epoch; epoch < o.epochs; epoch++) {
        int e = epoch - o.initial_epoch; /* the history's index */
        if (!history_reserve_epoch(h, model, validate, e)) {
            nb_set_error("%s: out of memory recording the history", who);
            goto fail;
        }
        if (o.verbose) fprintf(out, "Epoch %d/%d\n", epoch + 1, o.epochs);
        batches_start(train);
        double t0 = now_seconds(), loss_sum = 0, metric_sum[MAX_METRICS] = {0};
        int shown = 0; /* length of the progress line on screen */
        int64_t seen = 0;
        for (int64_t s = 0; s < steps; s++) {
            int64_t b = 0;
            nb_scope_begin();
            nb_tensor *xb = NULL, *yb = NULL, *pred, *loss;
            batches_next(train, s, &xb, &yb, &b); /* a step short of the end: there is one */
            bool computed = forward_and_loss(who, model, xb, yb, &pred, &loss);
            float value = computed ? nb_item(loss) : NAN;
            /* Why training cannot go on, if it cannot: the steps made so far
             * stand, the history keeps them and says where and why it ended. */
            char why[512];
            why[0] = '\0'; /* only a string: clearing all of it cost as much as a small op */
            if (computed && !isfinite(value))
                snprintf(why, sizeof why, "%s: loss is %s", who, isnan(value) ? "nan" : "infinite");
            else if (!computed) /* "nb_model_fit: the loss 'x' failed: ..." */
                snprintf(why, sizeof why, "%s", nb_error());
            else {
                /* dropped, not zeroed: a parameter the loss does not
                 * reach is left alone by the step */
                nb_optimizer_clear_grad(model->opt);
                if (nb_backward(loss) != 0 ||
                    (o.on_gradients && o.on_gradients(model, o.gradients_user) != 0) ||
                    nb_optimizer_step(model->opt) != 0)
                    snprintf(why, sizeof why, "%s: the training step failed: %s", who,
                             nb_error() ? nb_error() : "no message");
                else if (!add_metrics(who, model, pred, yb, b, metric_sum))
                    snprintf(why, sizeof why, "%s", nb_error());
            }
            if (why[0]) {
                snprintf(h->stop_reason, sizeof h->stop_reason, "%s (at epoch %d, batch %lld); training stopped",
                         why, epoch + 1, (long long)s + 1);
                nb_scope_end();
                nb_set_error("%s", h->stop_reason);
                if (o.verbose) fprintf(out, "\n%s\n", h->stop_reason);
                goto done;
            }
            loss_sum += (double)value * (double)b;
            seen += b;
            nb_scope_end();
            if (o.verbose == 1 && tty && s + 1 < steps) {
                double mean_metrics[MAX_METRICS];
                for (int k = 0; k < model->nmetrics; k++) mean_metrics[k] = metric_sum[k] / (double)seen;
                line l = {{0}, 0};
                add_bar(&l, s + 1, steps);
                add(&l, " - ETA: %.0fs", (now_seconds() - t0) / (double)(s + 1) * (double)(steps - s - 1));
                add_values(&l, model, "", loss_sum / (double)seen, mean_metrics);
                show(out, &l, true, &shown);
            }
        }
        double elapsed = now_seconds() - t0;
        model->epochs_done = epoch + 1;
        bool recorded_all = history_push(h, "loss", e, (float)(loss_sum / (double)seen));
        for (int k = 0; k < model->nmetrics; k++)
            recorded_all &= history_push(h, model->metric_names[k], e, (float)(metric_sum[k] / (double)seen));
        totals vt;
        if (validate) {
            char val_who[64];
            snprintf(val_who, sizeof val_who, "%s (validation data)", who);
            if (!evaluate_batches(val_who, model, val, &vt)) goto fail;
            recorded_all &= history_push(h, "val_loss", e, (float)(vt.loss / (double)vt.rows));
            for (int k = 0; k < model->nmetrics; k++) {
                char key[64];
                snprintf(key, sizeof key, "val_%s", model->metric_names[k]);
                recorded_all &= history_push(h, key, e, (float)(vt.metrics[k] / (double)vt.rows));
            }
        }
        if (!recorded_all) {
            nb_set_error("%s: out of memory recording the history", who);
            goto fail;
        }
        if (o.verbose) {
            double mean_metrics[MAX_METRICS];
            for (int k = 0; k < model->nmetrics; k++) mean_metrics[k] = metric_sum[k] / (double)seen;
            line l = {{0}, 0};
            if (o.verbose == 1) add_bar(&l, steps, steps);
            else add(&l, "%lld/%lld", (long long)steps, (long long)steps);
            add(&l, " - %.0fs ", elapsed);
            add_duration_per_step(&l, elapsed / (double)steps);
            add_values(&l, model, "", loss_sum / (double)seen, mean_metrics);
            if (validate) {
                for (int k = 0; k < model->nmetrics; k++) mean_metrics[k] = vt.metrics[k] / (double)vt.rows;
                add_values(&l, model, "val_", vt.loss / (double)vt.rows, mean_metrics);
            }
            show(out, &l, tty && o.verbose == 1, &shown);
            fputc('\n', out);
            fflush(out);
        }

        /* checkpoints, before early stopping may restore the best weights */
        const float *series = nb_history_get(h, monitor);
        if (o.checkpoint_path) {
            int every = o.checkpoint_every > 0 ? o.checkpoint_every : 1;
            bool due = (epoch + 1) % every == 0;
            if (o.save_best_only) {
                double v = series ? series[e] : NAN, sign = higher_is_better(monitor) ? -1 : 1;
                due = isfinite(v) && (!saved_any || sign * (v - best_saved) < 0);
                if (due) best_saved = v;
            }
            if (due && nb_model_save_checkpoint(model, o.checkpoint_path) != 0) {
                snprintf(h->stop_reason, sizeof h->stop_reason, "%s: saving the checkpoint after epoch %d "
                         "failed: %s", who, epoch + 1, nb_error());
                nb_set_error("%s", h->stop_reason);
                if (o.verbose) fprintf(out, "%s\n", h->stop_reason);
                goto done;
            }
            saved_any |= due;
        }
        /* early stopping */
        if (o.patience > 0) {
            if (!series) {
                nb_set_error("%s: early stopping monitors '%s', which is not recorded", who, monitor);
                goto fail;
            }
            double v = series[e], sign = higher_is_better(monitor) ? -1 : 1;
            if (best_epoch < 0 || sign * (v - best_value) < -(double)o.min_delta) {
                best_value = v;
                best_epoch = epoch;
                waited = 0;
                if (best) copy_params(model, best, false);
            } else if (++waited >= o.patience) {
                snprintf(h->stop_reason, sizeof h->stop_reason,
                         "early stopping at epoch %d: %s did not improve for %d epochs (best %.4f at epoch %d)",
                         epoch + 1, monitor, o.patience, best_value, best_epoch + 1);
                if (o.verbose) fprintf(out, "%s\n", h->stop_reason);
                if (best) copy_params(model, best, true); /* as Keras: on early stopping */
                break;
            }
        }
        if (o.on_epoch_end && !o.on_epoch_end(model, epoch, h, o.user)) {
            snprintf(h->stop_reason, sizeof h->stop_reason, "stopped by the callback after epoch %d", epoch + 1);
            break;
        }
    }
done:
    for (int i = 0; best && i < nparams; i++) nb_free(best[i]);
    nb_free(best);
    return h;
fail:
    nb_history_free(h);
    h = NULL;
    goto done;
}

/* ---- evaluate, predict ---------------------------------------------------------------------- */

int nb_model_evaluate(nb_model *model, nb_tensor *x, nb_tensor *y, int batch_size, float *out, int nout) {
    if (!model) return -1;
    if (!check_xy("nb_model_evaluate", model, x, y)) return -1;
    int64_t n = nb_dim(x, 0), *idx = nb_malloc(sizeof(int64_t) * (size_t)n);
    if (!idx) {
        nb_set_error("nb_model_evaluate: out of memory");
        return -1;
    }
    for (int64_t i = 0; i < n; i++) idx[i] = i;
    totals t;
    batches all = {.x = x, .y = y, .order = idx, .rows = n, .batch_size = batch_size > 0 ? batch_size : 32};
    bool ok = evaluate_batches("nb_model_evaluate", model, &all, &t);
    nb_free(idx);
    if (!ok) return -1;
    int written = 0;
    if (out && nout > 0) out[written++] = (float)(t.loss / (double)t.rows);
    for (int k = 0; out && k < model->nmetrics && written < nout; k++)
        out[written++] = (float)(t.metrics[k] / (double)t.rows);
    return written;
}

nb_tensor *nb_model_predict(nb_model *model, nb_tensor *x, int batch_size) {
    if (!model || !x) return NULL;
    if (nb_ndim(x) < 1 || nb_dim(x, 0) == 0) {
        nb_set_error("nb_model_predict: x must have at least one row");
        return NULL;
    }
    if (model->sample_ndim > 0 &&
        (nb_ndim(x) - 1 != model->sample_ndim ||
         memcmp(nb_shape(x) + 1, model->sample_shape, sizeof(int64_t) * (size_t)model->sample_ndim) != 0)) {
        char a[96], b[96];
        nb_set_error("nb_model_predict: x %s does not fit the model's input %s per sample",
                     nb_shape_str(nb_ndim(x), nb_shape(x), a, sizeof a),
                     nb_shape_str(model->sample_ndim, model->sample_shape, b, sizeof b));
        return NULL;
    }
    int64_t n = nb_dim(x, 0), batch = batch_size > 0 ? batch_size : 32, *idx = nb_malloc(sizeof(int64_t) * (size_t)n);
    if (!idx) {
        nb_set_error("nb_model_predict: out of memory");
        return NULL;
    }
    for (int64_t i = 0; i < n; i++) idx[i] = i;
    bool was = nb_set_grad_enabled(false), training = model->net->training;
    nb_module_train(model->net, false);
    nb_tensor *result = NULL;
    for (int64_t start = 0; start < n; start += batch) {
        int64_t b = n - start < batch ? n - start : batch;
        nb_scope_begin();
        nb_tensor *pred = nb_module_forward(model->net, take_rows(x, idx + start, b));
        if (pred && !result) {
            int64_t shape[NB_MAX_DIMS];
            memcpy(shape, nb_shape(pred), sizeof(int64_t) * (size_t)nb_ndim(pred));
            shape[0] = n;
            result = nb_keep(nb_empty(nb_ndim(pred), shape));
        }
        if (pred && (nb_ndim(pred) < 1 || nb_dim(pred, 0) != b ||
                     (result && nb_numel(pred) != nb_numel(result) / n * b))) {
            char a[96];
            nb_set_error("nb_model_predict: the model's output %s for a batch of %lld rows is not "
                         "one row per sample",
                         nb_shape_str(nb_ndim(pred), nb_shape(pred), a, sizeof a), (long long)b);
            pred = NULL;
        }
        if (pred && result) {
            int64_t row = nb_numel(result) / n;
            memcpy(nb_data_mut(result) + start * row, nb_data(pred), sizeof(float) * (size_t)(row * b));
        }
        nb_scope_end();
        if (!pred) {
            nb_release(result);
            result = NULL;
            break;
        }
    }
    nb_module_train(model->net, training);
    nb_set_grad_enabled(was);
    nb_free(idx);
    if (!result) return NULL;
    /* hand the result to the caller's scope, like any op's output */
    nb_tensor *owned = nb_detach(result);
    nb_release(result);
    return owned;
}

/* ---- summary -------------------------------------------------------------------------------- */

static void rule(FILE *out, char c) {
    for (int i = 0; i < 65; i++) fputc(c, out);
    fputc('\n', out);
}

void nb_model_summary(nb_model *model, FILE *out) {
    if (!model) return;
    out = out ? out : stdout;
    fprintf(out, "Model: \"%s\"\n", model->sequential ? "sequential" : model->net->type->name);
    rule(out, '_');
    fprintf(out, " %-28s%-26s%s\n", "Layer (type)", "Output Shape", "Param #");
    rule(out, '=');
    int nlayers = model->sequential ? nb_sequential_len(model->net) : 1;
    int64_t shape[NB_MAX_DIMS + 1] = {1};
    for (int d = 0; d < model->sample_ndim; d++) shape[d + 1] = model->sample_shape[d];
    nb_scope_begin();
    bool was = nb_set_grad_enabled(false), training = model->net->training;
    nb_module_train(model->net, false);
    nb_tensor *h = model->sample_ndim ? nb_zeros(model->sample_ndim + 1, shape) : NULL;
    for (int i = 0; i < nlayers; i++) {
        nb_module *layer = model->sequential ? nb_sequential_at(model->net, i) : model->net;
        const char *type = layer->type->name;
        int same = 0;
        for (int j = 0; j < i; j++)
            if (strcmp(nb_sequential_at(model->net, j)->type->name, type) == 0) same++;
        char lower[32], name[64], oshape[64] = "(unknown)";
        snprintf(lower, sizeof lower, "%s", type);
        for (char *c = lower; *c; c++) *c = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
        if (same) snprintf(name, sizeof name, "%s_%d (%s)", lower, same, type);
        else snprintf(name, sizeof name, "%s (%s)", lower, type);
        if (h) {
            h = nb_module_forward(layer, h);
            if (h) {
                int len = snprintf(oshape, sizeof oshape, "(None");
                for (int d = 1; d < nb_ndim(h) && len < (int)sizeof oshape - 24; d++)
                    len += snprintf(oshape + len, sizeof oshape - (size_t)len, ", %lld", (long long)nb_shape(h)[d]);
                snprintf(oshape + len, sizeof oshape - (size_t)len, ")");
            }
        }
        fprintf(out, " %-28s%-26s%lld\n", name, oshape,
                (long long)(nb_module_num_weights(layer) + nb_module_num_buffer_elements(layer)));
        if (i + 1 < nlayers) fputc('\n', out);
    }
    nb_module_train(model->net, training);
    nb_set_grad_enabled(was);
    nb_scope_end();
    rule(out, '=');
    /* as Keras counts them: buffers (batch norm's running statistics) are
     * the non-trainable parameters */
    int64_t trainable = nb_module_num_weights(model->net), fixed = nb_module_num_buffer_elements(model->net);
    fprintf(out, "Total params: %lld\nTrainable params: %lld\nNon-trainable params: %lld\n",
            (long long)(trainable + fixed), (long long)trainable, (long long)fixed);
    rule(out, '_');
}

void nb_model_free(nb_model *model) {
    if (!model) return;
    nb_optimizer_free(model->opt);
    nb_module_free(model->net);
    nb_free(model);
}

/* ---- checkpoints (nn/io/checkpoint.c) ------------------------------------------------------- */

int nb__model_checkpoint_state(const char *who, nb_model *model, nb_optimizer **opt, int64_t **epochs) {
    *opt = NULL;
    *epochs = &model->epochs_done;
    if (!model->opt && !model->opt_name[0]) return 0; /* not compiled: parameters only */
    if (!ensure_optimizer(who, model)) return -1;
    *opt = model->opt;
    return 0;
}
