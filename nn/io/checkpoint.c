/* checkpoint.c — parameters and whole training states in safetensors files.
 *
 * A module's parameters are stored under the names nb_module_parameter_name
 * gives them ("0.weight", "fc1.bias"), in nabla's layout, and its buffers
 * (running statistics) under theirs ("1.running_mean"), as PyTorch's
 * state_dict holds both. A training
 * checkpoint adds, in the same file, what a resumed run needs to continue
 * bit for bit: the optimizer's state tensors ("optimizer.<i>.<state>") and,
 * as metadata strings that read back exactly ("%.9g" for a float, "%.17g"
 * for a double, integers in decimal), its lr and step counts, the schedule's
 * epoch, the training epoch, and the default generator's fields (the
 * shuffling order of every later epoch comes from it).
 *
 * Loading is check-then-commit: the file is read and parsed whole, every
 * name, shape and metadata value compared with what it is loaded into, and
 * only then are values copied, by plain copies that cannot fail. So a load
 * that fails, for whatever reason, leaves the module, optimizer, schedule
 * and generator as they were.
 */
#include "io_internal.h"
#include "nn_internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define FORMAT "nabla.checkpoint"
#define OPT_PREFIX "optimizer."

/* ---- a growing message ------------------------------------------------------- */

typedef struct list {
    char text[1024];
    size_t len;
    int count;
} list;

static void list_add(list *l, const char *fmt, const char *a, const char *b, const char *c) {
    if (l->len >= sizeof l->text - 1) {
        l->count++;
        return;
    }
    int n = snprintf(l->text + l->len, sizeof l->text - l->len, "%s", l->count ? ", " : "");
    if (n > 0) l->len += (size_t)n;
    if (l->len < sizeof l->text - 1) {
        n = snprintf(l->text + l->len, sizeof l->text - l->len, fmt, a, b, c);
        if (n > 0) l->len += (size_t)n;
    }
    if (l->len > sizeof l->text - 1) l->len = sizeof l->text - 1;
    l->count++;
}

static char *shape_of(int ndim, const int64_t *shape, char *buf) { return nb_shape_str(ndim, shape, buf, 96); }

/* ---- a module's state ------------------------------------------------------------
 * What a file holds of a module, PyTorch's state_dict: its parameters, then
 * its buffers (a batch norm's running statistics), each under its dotted
 * name. The arrays are the caller's (state_free); the tensors and names are
 * the module's. */

typedef struct state {
    int n;
    nb_tensor **t;
    const char **names;
} state;

static void state_free(state *s) {
    nb_free(s->t);
    nb_free(s->names);
    *s = (state){0};
}

static bool module_state(const char *who, const char *path, nb_module *m, state *s) {
    *s = (state){0};
    int np, nbuf;
    uint64_t errors = nb_error_count(); /* the lists are rebuilt, which can fail */
    nb_tensor **params = nb__module_parameters(who, m, &np);
    nb_tensor **buffers = nb__module_buffers(who, m, &nbuf);
    if (nb_error_count() != errors) return false;
    size_t total = (size_t)np + (size_t)nbuf;
    s->t = nb_malloc(sizeof *s->t * (total ? total : 1));
    s->names = nb_malloc(sizeof *s->names * (total ? total : 1));
    if (!s->t || !s->names) {
        nb_set_error("%s: %s: out of memory", who, path ? path : "(null)");
        state_free(s);
        return false;
    }
    for (int i = 0; i < np; i++) {
        s->t[s->n] = params[i];
        s->names[s->n++] = nb_module_parameter_name(m, i);
    }
    for (int i = 0; i < nbuf; i++) {
        s->t[s->n] = buffers[i];
        s->names[s->n++] = nb_module_buffer_name(m, i);
    }
    return true;
}

/* ---- matching a module against a file --------------------------------------------- */

/* Fills src[i] with the file's index of state tensor i of the module, or
 * -1 when it is skipped (partial load). Names under OPT_PREFIX are left to
 * the optimizer when skip_optimizer is set. Returns the number matched, or
 * -1 with a message (strict load and any difference). */
static int match_state(const char *who, const nb_safetensors *st, const state *ms, bool strict,
                       bool skip_optimizer, int *src, char *skipped, size_t skipped_size) {
    int n = ms->n;
    nb_tensor *const *params = ms->t;
    list missing = {0}, unexpected = {0}, differs = {0};
    int matched = 0;
    char a[96], b[96];
    for (int i = 0; i < n; i++) {
        const char *name = ms->names[i];
        int j = nb_safetensors_find(st, name);
        src[i] = -1;
        if (j < 0) {
            list_add(&missing, "%s%s%s", name, "", "");
            continue;
        }
        int ndim;
        const int64_t *shape = nb_safetensors_shape(st, j, &ndim);
        if (ndim != nb_ndim(params[i]) || memcmp(shape, nb_shape(params[i]), sizeof(int64_t) * (size_t)ndim) != 0) {
            list_add(&differs, "%s %s in the file, %s in the module", name, shape_of(ndim, shape, a),
                     shape_of(nb_ndim(params[i]), nb_shape(params[i]), b));
            continue;
        }
        src[i] = j;
        matched++;
    }
    for (int j = 0; j < nb_safetensors_count(st); j++) {
        const char *name = nb_safetensors_name(st, j);
        if (skip_optimizer && strncmp(name, OPT_PREFIX, strlen(OPT_PREFIX)) == 0) continue;
        bool known = false;
        for (int i = 0; i < n && !known; i++) known = strcmp(ms->names[i], name) == 0;
        if (!known) list_add(&unexpected, "%s%s%s", name, "", "");
    }
    char report[3200];
    size_t len = 0;
    report[0] = '\0';
    list *lists[3] = {&missing, &unexpected, &differs};
    const char *what[3] = {"missing", "unexpected", "shape differs"};
    for (int k = 0; k < 3; k++)
        if (lists[k]->count) {
            int w = snprintf(report + len, sizeof report - len, "%s%d %s: %s%s", len ? "; " : "", lists[k]->count,
                             what[k], lists[k]->text, lists[k]->len >= sizeof lists[k]->text - 1 ? "..." : "");
            if (w > 0) len += (size_t)w < sizeof report - len ? (size_t)w : sizeof report - len - 1;
        }
    if (skipped && skipped_size) snprintf(skipped, skipped_size, "%s", strict ? "" : report);
    if (strict && len) {
        nb_set_error("%s: %s: the file does not match the module: %s", who, nb__safetensors_file(st), report);
        return -1;
    }
    return matched;
}

nb_load_opts nb_load_defaults(void) { return (nb_load_opts){.strict = true}; }

int nb_load_parameters(nb_module *m, const char *path, const nb_load_opts *opts_in) {
    const char *who = "nb_load_parameters";
    if (!m) return -1;
    nb_load_opts opts = opts_in ? *opts_in : nb_load_defaults();
    state ms;
    if (!module_state(who, path, m, &ms)) return -1;
    nb_safetensors *st = nb__safetensors_read(who, path);
    int *src = st ? nb_malloc(sizeof(int) * (size_t)(ms.n ? ms.n : 1)) : NULL;
    int matched = -1;
    if (st && !src) nb_set_error("%s: %s: out of memory", who, path);
    if (src) matched = match_state(who, st, &ms, opts.strict, false, src, opts.skipped, opts.skipped_size);
    for (int i = 0; matched >= 0 && i < ms.n; i++)
        if (src[i] >= 0) nb__safetensors_copy(st, src[i], nb_data_mut(ms.t[i]));
    nb_free(src);
    nb_safetensors_free(st);
    state_free(&ms);
    return matched;
}

int nb_save_parameters(nb_module *m, const char *path, const char *const *metadata) {
    const char *who = "nb_save_parameters";
    if (!m) return -1;
    state ms;
    if (!module_state(who, path, m, &ms)) return -1;
    int rc = nb__safetensors_write(who, path, ms.n, ms.names, ms.t, metadata);
    state_free(&ms);
    return rc;
}

/* ---- training checkpoints --------------------------------------------------------------- */

/* Metadata as key, value pairs in fixed-size slots. */
typedef struct meta {
    int n, cap;
    char (*keys)[64];
    char (*values)[64];
} meta;

static bool meta_add(meta *md, const char *key, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static bool meta_add(meta *md, const char *key, const char *fmt, ...) {
    if (md->n == md->cap) return false;
    snprintf(md->keys[md->n], sizeof md->keys[0], "%s", key);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(md->values[md->n], sizeof md->values[0], fmt, ap);
    va_end(ap);
    md->n++;
    return true;
}

int nb_save_checkpoint(const char *path, nb_module *m, nb_optimizer *opt, nb_lr_schedule *schedule, int64_t epoch) {
    const char *who = "nb_save_checkpoint";
    if (!m) return -1;
    if (epoch < 0) {
        nb_set_error("%s: %s: epoch must be >= 0, got %lld", who, path ? path : "(null)", (long long)epoch);
        return -1;
    }
    state ms;
    if (!module_state(who, path, m, &ms)) return -1;
    int n = ms.n;
    int nopt = nb_optimizer_num_params(opt), nstates = nb_optimizer_num_states(opt);
    size_t total = (size_t)n + (size_t)nopt * (size_t)nstates;
    const char **names = nb_malloc(sizeof(char *) * (total ? total : 1));
    nb_tensor **tensors = nb_malloc(sizeof(nb_tensor *) * (total ? total : 1));
    char (*state_names)[80] = nb_malloc(sizeof *state_names * (total ? total : 1));
    meta md = {.n = 0, .cap = 16 + nopt};
    md.keys = nb_malloc(sizeof *md.keys * (size_t)md.cap);
    md.values = nb_malloc(sizeof *md.values * (size_t)md.cap);
    const char **pairs = nb_malloc(sizeof(char *) * (2 * (size_t)md.cap + 1));
    int rc = -1;
    if (!names || !tensors || !state_names || !md.keys || !md.values || !pairs) {
        nb_set_error("%s: %s: out of memory", who, path ? path : "(null)");
        goto done;
    }
    int count = 0;
    for (int i = 0; i < n; i++) {
        names[count] = ms.names[i];
        tensors[count++] = ms.t[i];
    }
    for (int i = 0; i < nopt; i++)
        for (int k = 0; k < nstates; k++) {
            nb_tensor *s = nb_optimizer_state(opt, i, nb_optimizer_state_name(opt, k));
            if (!s) continue;
            snprintf(state_names[count], sizeof state_names[0], OPT_PREFIX "%d.%s", i, nb_optimizer_state_name(opt, k));
            names[count] = state_names[count];
            tensors[count++] = s;
        }
    const nb_generator *g = nb_default_generator();
    meta_add(&md, "format", FORMAT);
    meta_add(&md, "epoch", "%lld", (long long)epoch);
    meta_add(&md, "generator.state", "%llu", (unsigned long long)g->state);
    meta_add(&md, "generator.inc", "%llu", (unsigned long long)g->inc);
    meta_add(&md, "generator.spare", "%.17g", g->spare);
    meta_add(&md, "generator.has_spare", "%d", g->has_spare ? 1 : 0);
    if (opt) {
        meta_add(&md, "optimizer", "%s", nb_optimizer_name(opt));
        meta_add(&md, "optimizer.lr", "%.9g", (double)nb_optimizer_lr(opt));
        meta_add(&md, "optimizer.steps", "%lld", (long long)nb_optimizer_steps(opt));
        meta_add(&md, "optimizer.num_params", "%d", nopt);
        for (int i = 0; i < nopt; i++) {
            char key[64];
            snprintf(key, sizeof key, OPT_PREFIX "%d.step", i);
            meta_add(&md, key, "%lld", (long long)nb_optimizer_param_steps(opt, i));
        }
    }
    if (schedule) meta_add(&md, "schedule.epoch", "%lld", (long long)nb_lr_schedule_epoch(schedule));
    for (int i = 0; i < md.n; i++) {
        pairs[2 * i] = md.keys[i];
        pairs[2 * i + 1] = md.values[i];
    }
    pairs[2 * md.n] = NULL;
    rc = nb__safetensors_write(who, path, count, names, tensors, pairs);
done:
    state_free(&ms);
    nb_free(names);
    nb_free(tensors);
    nb_free(state_names);
    nb_free(md.keys);
    nb_free(md.values);
    nb_free(pairs);
    return rc;
}

/* Reads metadata key as an integer in [lo, hi]; false and a message when it
 * is absent or anything else. */
static bool meta_int(const char *who, const nb_safetensors *st, const char *key, long long lo, long long hi,
                     long long *out) {
    const char *v = nb_safetensors_metadata(st, key);
    if (!v) {
        nb_set_error("%s: %s: metadata \"%s\" is missing", who, nb__safetensors_file(st), key);
        return false;
    }
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || ((v[0] < '0' || v[0] > '9') && v[0] != '-') || x < lo || x > hi) {
        nb_set_error("%s: %s: metadata \"%s\" is \"%.40s\", not an integer in [%lld, %lld]", who,
                     nb__safetensors_file(st), key, v, lo, hi);
        return false;
    }
    *out = x;
    return true;
}

static bool meta_u64(const char *who, const nb_safetensors *st, const char *key, uint64_t *out) {
    const char *v = nb_safetensors_metadata(st, key);
    char *end = NULL;
    errno = 0;
    unsigned long long x = v && v[0] >= '0' && v[0] <= '9' ? strtoull(v, &end, 10) : 0;
    if (!v || !end || errno || *end) {
        nb_set_error("%s: %s: metadata \"%s\" is %s%.40s%s, not an unsigned 64-bit integer", who,
                     nb__safetensors_file(st), key, v ? "\"" : "", v ? v : "missing", v ? "\"" : "");
        return false;
    }
    *out = x;
    return true;
}

static bool meta_double(const char *who, const nb_safetensors *st, const char *key, double *out) {
    const char *v = nb_safetensors_metadata(st, key);
    char *end = NULL;
    double x = v && v[0] && v[0] != ' ' ? strtod(v, &end) : 0;
    if (!v || !end || *end) {
        nb_set_error("%s: %s: metadata \"%s\" is %s%.40s%s, not a number", who, nb__safetensors_file(st), key,
                     v ? "\"" : "", v ? v : "missing", v ? "\"" : "");
        return false;
    }
    *out = x;
    return true;
}

int nb_load_checkpoint(const char *path, nb_module *m, nb_optimizer *opt, nb_lr_schedule *schedule,
                       int64_t *epoch_out) {
    const char *who = "nb_load_checkpoint";
    if (!m) return -1;
    state ms;
    if (!module_state(who, path, m, &ms)) return -1;
    int n = ms.n;
    nb_safetensors *st = nb__safetensors_read(who, path);
    if (!st) {
        state_free(&ms);
        return -1;
    }
    int nopt = nb_optimizer_num_params(opt), nstates = nb_optimizer_num_states(opt);
    int *src = nb_malloc(sizeof(int) * (size_t)(n ? n : 1));
    int *state_src = nb_malloc(sizeof(int) * ((size_t)nopt * (size_t)nstates + 1));
    int64_t *steps = nb_malloc(sizeof(int64_t) * ((size_t)nopt + 1));
    int rc = -1;
    if (!src || !state_src || !steps) {
        nb_set_error("%s: %s: out of memory", who, path);
        goto done;
    }
    const char *format = nb_safetensors_metadata(st, "format");
    if (!format || strcmp(format, FORMAT) != 0) {
        nb_set_error("%s: %s: not a training checkpoint (metadata \"format\" is %s%s%s, not \"" FORMAT "\"); "
                     "nb_load_parameters reads the parameters alone", who, path, format ? "\"" : "",
                     format ? format : "missing", format ? "\"" : "");
        goto done;
    }
    if (match_state(who, st, &ms, true, true, src, NULL, 0) < 0) goto done;

    long long epoch, has_spare, sched_epoch = 0, total_steps = 0;
    uint64_t gstate, ginc;
    double spare;
    if (!meta_int(who, st, "epoch", 0, INT64_MAX, &epoch) || !meta_u64(who, st, "generator.state", &gstate) ||
        !meta_u64(who, st, "generator.inc", &ginc) || !meta_double(who, st, "generator.spare", &spare) ||
        !meta_int(who, st, "generator.has_spare", 0, 1, &has_spare))
        goto done;
    if (schedule && !meta_int(who, st, "schedule.epoch", 0, INT64_MAX, &sched_epoch)) goto done;

    float lr = 0;
    int file_states = 0;
    for (int j = 0; j < nb_safetensors_count(st); j++)
        file_states += strncmp(nb_safetensors_name(st, j), OPT_PREFIX, strlen(OPT_PREFIX)) == 0;
    if (opt) {
        const char *name = nb_safetensors_metadata(st, "optimizer");
        if (!name || strcmp(name, nb_optimizer_name(opt)) != 0) {
            nb_set_error("%s: %s: the file holds %s%s%s optimizer state, the optimizer is %s", who, path,
                         name ? "the '" : "no", name ? name : "", name ? "'" : "", nb_optimizer_name(opt));
            goto done;
        }
        long long np;
        double lr_d;
        if (!meta_int(who, st, "optimizer.num_params", 0, INT32_MAX, &np) ||
            !meta_int(who, st, "optimizer.steps", 0, INT64_MAX, &total_steps) ||
            !meta_double(who, st, "optimizer.lr", &lr_d))
            goto done;
        if (np != nopt) {
            nb_set_error("%s: %s: the file's optimizer has %lld parameters, this one %d", who, path, np, nopt);
            goto done;
        }
        const char *v = nb_safetensors_metadata(st, "optimizer.lr");
        lr = strtof(v, NULL);
        if (!(lr >= 0) || isinf(lr)) {
            nb_set_error("%s: %s: metadata \"optimizer.lr\" is \"%.40s\", not a valid lr", who, path, v);
            goto done;
        }
        int used = 0;
        char a[96], b[96];
        for (int i = 0; i < nopt; i++) {
            char key[80];
            long long s;
            snprintf(key, sizeof key, OPT_PREFIX "%d.step", i);
            if (!meta_int(who, st, key, 0, INT64_MAX, &s)) goto done;
            steps[i] = s;
            for (int k = 0; k < nstates; k++) {
                const char *sname = nb_optimizer_state_name(opt, k);
                nb_tensor *t = nb_optimizer_state(opt, i, sname);
                snprintf(key, sizeof key, OPT_PREFIX "%d.%s", i, sname);
                int j = nb_safetensors_find(st, key);
                state_src[i * nstates + k] = t ? j : -1;
                if (!t && j < 0) continue;
                if (!t || j < 0) {
                    nb_set_error("%s: %s: the optimizer %s state '%s' (its options differ from the saved one's)",
                                 who, path, t ? "keeps, and the file lacks," : "keeps no", key);
                    goto done;
                }
                int ndim;
                const int64_t *shape = nb_safetensors_shape(st, j, &ndim);
                if (ndim != nb_ndim(t) || memcmp(shape, nb_shape(t), sizeof(int64_t) * (size_t)ndim) != 0) {
                    nb_set_error("%s: %s: optimizer state '%s' is %s in the file, %s in the optimizer", who, path,
                                 key, shape_of(ndim, shape, a), shape_of(nb_ndim(t), nb_shape(t), b));
                    goto done;
                }
                used++;
            }
        }
        if (used != file_states) {
            nb_set_error("%s: %s: the file holds %d optimizer state tensors, the optimizer keeps %d", who, path,
                         file_states, used);
            goto done;
        }
    }

    /* everything fits: commit (plain copies, nothing can fail from here) */
    for (int i = 0; i < n; i++) nb__safetensors_copy(st, src[i], nb_data_mut(ms.t[i]));
    if (opt) {
        for (int i = 0; i < nopt; i++) {
            for (int k = 0; k < nstates; k++)
                if (state_src[i * nstates + k] >= 0)
                    nb__safetensors_copy(st, state_src[i * nstates + k],
                                         nb_data_mut(nb_optimizer_state(opt, i, nb_optimizer_state_name(opt, k))));
            nb_optimizer_set_param_steps(opt, i, steps[i]);
        }
        nb_optimizer_set_steps(opt, total_steps);
    }
    if (schedule) nb_lr_schedule_set_epoch(schedule, sched_epoch);
    if (opt) nb_optimizer_set_lr(opt, lr); /* after the schedule: the lr saved is the lr in use */
    nb_generator *g = nb_default_generator();
    g->state = gstate;
    g->inc = ginc;
    g->spare = spare;
    g->has_spare = has_spare != 0;
    if (epoch_out) *epoch_out = epoch;
    rc = 0;
done:
    state_free(&ms);
    nb_free(src);
    nb_free(state_src);
    nb_free(steps);
    nb_safetensors_free(st);
    return rc;
}

/* ---- the model ------------------------------------------------------------------------ */

int nb_model_save_checkpoint(nb_model *model, const char *path) {
    const char *who = "nb_model_save_checkpoint";
    nb_optimizer *opt;
    int64_t *epochs;
    if (!model || nb__model_checkpoint_state(who, model, &opt, &epochs) != 0) return -1;
    if (nb_save_checkpoint(path, nb_model_module(model), opt, NULL, *epochs) != 0) {
        char why[512];
        snprintf(why, sizeof why, "%s", nb_error());
        nb_set_error("%s: %s", who, strncmp(why, "nb_save_checkpoint: ", 20) == 0 ? why + 20 : why);
        return -1;
    }
    return 0;
}

int nb_model_load_checkpoint(nb_model *model, const char *path, int *epoch) {
    const char *who = "nb_model_load_checkpoint";
    nb_optimizer *opt;
    int64_t *epochs, e;
    if (!model || nb__model_checkpoint_state(who, model, &opt, &epochs) != 0) return -1;
    if (nb_load_checkpoint(path, nb_model_module(model), opt, NULL, &e) != 0) {
        char why[512];
        snprintf(why, sizeof why, "%s", nb_error());
        nb_set_error("%s: %s", who, strncmp(why, "nb_load_checkpoint: ", 20) == 0 ? why + 20 : why);
        return -1;
    }
    *epochs = e;
    if (epoch) *epoch = e > INT32_MAX ? INT32_MAX : (int)e;
    return 0;
}
