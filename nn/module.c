/* module.c — the module abstraction every layer is built on, and Sequential.
 *
 * A module is a struct starting with nb_module: a type (name, forward,
 * destroy), a training flag, and a list of named entries, each a parameter,
 * a buffer (state that is not trained) or a child module. That list is all the generic code needs: parameters
 * are gathered depth first with dotted names ("0.weight", "fc1.bias") as
 * PyTorch names them, train/eval and zero_grad recurse, and freeing releases
 * the parameters and frees the children. Built-in layers use exactly this
 * API, as a user's module does.
 *
 * A module has at most one parent, the module it was added to, which frees
 * it. The parent link serves twice: a module given to a second parent is
 * refused (two parents would free it twice), and a change to a module's
 * entries bumps the version of the module and of every module above it, so
 * that each caches its flattened parameter list until something under it
 * changes, and only then.
 */
#include "nn_internal.h"

#include <stdlib.h>
#include <string.h>

/* Marks the entries of m, and so the flattened lists of m and of every
 * module above it, as changed. */
static void changed(nb_module *m) {
    for (; m; m = m->parent) m->version++;
}

static void free_module(nb_module *m);

void nb__module_discard(nb_module *m) {
    if (m && !m->parent) free_module(m);
}

nb_module *nb__module_new(const char *who, const nb_module_type *type, size_t size) {
    if (!type || !type->forward || size < sizeof(nb_module)) {
        nb_set_error("%s: needs a type with a forward and a size of at least sizeof(nb_module)", who);
        return NULL;
    }
    nb_module *m = nb_calloc(1, size);
    if (!m) {
        nb_set_error("%s: out of memory", who);
        return NULL;
    }
    m->type = type;
    m->training = true;
    m->version = 1; /* the cached list (version 0) starts out of date */
    return m;
}

nb_module *nb_module_new(const nb_module_type *type, size_t size) {
    return nb__module_new("nb_module_new", type, size);
}

static nb_module_entry *add_entry(nb_module *m, const char *name) {
    if (m->nentries == m->cap) {
        int cap = m->cap ? 2 * m->cap : 4;
        nb_module_entry *e = nb_realloc(m->entries, (size_t)cap * sizeof *e);
        if (!e) return NULL;
        m->entries = e;
        m->cap = cap;
    }
    nb_module_entry *e = &m->entries[m->nentries++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name ? name : "");
    changed(m);
    return e;
}

/* A module entry may not repeat a tensor or a module: freeing would
 * release it twice. */
static bool registered(const nb_module *m, const nb_tensor *param, const nb_module *child) {
    for (int i = 0; i < m->nentries; i++)
        if ((param && (m->entries[i].param == param || m->entries[i].buffer == param)) ||
            (child && m->entries[i].child == child))
            return true;
    return false;
}

nb_tensor *nb_module_add_param(nb_module *m, const char *name, nb_tensor *param) {
    if (!m) return NULL;
    if (param && (!nb_is_leaf(param) || registered(m, param, NULL))) {
        nb_set_error("nb_module_add_param: '%s' %s", name ? name : "",
                     nb_is_leaf(param) ? "is already a parameter of this module"
                                       : "is computed by an op; a parameter must be a leaf tensor");
        param = NULL;
    }
    nb_module_entry *e = param ? add_entry(m, name) : NULL;
    if (!e) {
        if (param) nb_set_error("nb_module_add_param: out of memory");
        m->failed = true;
        return NULL;
    }
    /* The module holds the parameter's one reference: a tensor already
     * held by another module would be released twice. */
    if (!nb_adopt(nb_set_requires_grad(param, true), "nb_module_add_param")) {
        m->nentries--;
        m->failed = true;
        return NULL;
    }
    e->param = param;
    if (!nb_name(param)[0]) nb_set_name(param, name);
    return param;
}

nb_tensor *nb_module_add_buffer(nb_module *m, const char *name, nb_tensor *buffer) {
    if (!m) return NULL;
    if (buffer && (!nb_is_leaf(buffer) || nb_requires_grad(buffer) || registered(m, buffer, NULL))) {
        nb_set_error("nb_module_add_buffer: '%s' %s", name ? name : "",
                     !nb_is_leaf(buffer) || nb_requires_grad(buffer)
                         ? "requires grad; a buffer is a plain tensor, not trained"
                         : "is already registered in this module");
        buffer = NULL;
    }
    nb_module_entry *e = buffer ? add_entry(m, name) : NULL;
    if (!e) {
        if (buffer) nb_set_error("nb_module_add_buffer: out of memory");
        m->failed = true;
        return NULL;
    }
    if (!nb_adopt(buffer, "nb_module_add_buffer")) {
        m->nentries--;
        m->failed = true;
        return NULL;
    }
    e->buffer = buffer;
    if (!nb_name(buffer)[0]) nb_set_name(buffer, name);
    return buffer;
}

/* Adds child to m under name; what names the child in messages ("'fc1'",
 * "layer 2"). A child that is NULL (its constructor failed and said so) or
 * that cannot be added marks m as failed when mark_failed is set, for
 * nb_module_ok. A child that already has a parent is left where it is:
 * it is not freed here, since its parent will free it. */
static nb_module *adopt(const char *who, nb_module *m, const char *name, const char *what,
                        nb_module *child, bool mark_failed) {
    if (!m) {
        nb__module_discard(child);
        return NULL;
    }
    if (!child) {
        if (mark_failed) m->failed = true;
        return NULL;
    }
    bool inside = false; /* m is child, or lies under it: adding would make a loop */
    for (const nb_module *p = m; p && !inside; p = p->parent) inside = p == child;
    if (child->parent || inside) {
        if (child->parent == m || child == m)
            nb_set_error("%s: %s is already part of this module; make a new module for each place "
                         "it is used", who, what);
        else if (inside)
            nb_set_error("%s: %s contains the module it is being added to", who, what);
        else
            nb_set_error("%s: %s (a %s) already belongs to another module, which frees it; a module "
                         "has one parent: make a new module for each place it is used",
                         who, what, child->type->name);
        if (mark_failed) m->failed = true;
        return NULL; /* not freed: it stays where it was added first */
    }
    nb_module_entry *e = add_entry(m, name);
    if (!e) {
        nb_set_error("%s: out of memory", who);
        free_module(child);
        if (mark_failed) m->failed = true;
        return NULL;
    }
    child->parent = m;
    child->training = m->training;
    e->child = child;
    return child;
}

nb_module *nb_module_add_child(nb_module *m, const char *name, nb_module *child) {
    char what[48];
    snprintf(what, sizeof what, "'%s'", name ? name : "");
    return adopt("nb_module_add_child", m, name, what, child, true);
}

nb_module *nb_module_ok(nb_module *m) {
    if (m && m->failed) {
        nb__module_discard(m);
        return NULL;
    }
    return m;
}

nb_tensor *nb_module_forward(nb_module *m, nb_tensor *x) {
    if (!m || !x) return NULL;
    if (m->hooks) return nb__module_forward_hooked(m, x);
    return m->type->forward(m, x);
}

/* ---- the flattened parameter list ------------------------------------------- */

/* The tensors of one kind (parameters or buffers) under m, depth first. */
static nb_tensor *entry_tensor(const nb_module_entry *e, bool buffers) {
    return buffers ? e->buffer : e->param;
}

static int count_tensors(const nb_module *m, bool buffers) {
    int n = 0;
    for (int i = 0; i < m->nentries; i++)
        n += m->entries[i].child ? count_tensors(m->entries[i].child, buffers)
                                 : entry_tensor(&m->entries[i], buffers) != NULL;
    return n;
}

static void collect(nb_tensor **out, char (*names)[96], const nb_module *m, const char *prefix,
                    bool buffers, int *k) {
    for (int i = 0; i < m->nentries; i++) {
        const nb_module_entry *e = &m->entries[i];
        char name[96];
        snprintf(name, sizeof name, "%s%s%s", prefix, prefix[0] ? "." : "", e->name);
        if (e->child) {
            collect(out, names, e->child, name, buffers, k);
        } else if (entry_tensor(e, buffers)) {
            out[*k] = entry_tensor(e, buffers);
            snprintf(names[*k], sizeof names[*k], "%s", name);
            (*k)++;
        }
    }
}

/* Rebuilds the cached list of one kind when m's version moved since. */
static bool refresh(const char *who, nb_module *m, bool buffers) {
    uint64_t *built = buffers ? &m->buffers_version : &m->params_version;
    if (*built == m->version) return true;
    nb_tensor ***list = buffers ? &m->buffers : &m->params;
    char(**names)[96] = buffers ? &m->buffer_names : &m->param_names;
    int n = count_tensors(m, buffers);
    nb_tensor **p = nb_realloc(*list, (size_t)(n ? n : 1) * sizeof *p);
    if (p) *list = p;
    char(*nm)[96] = p ? nb_realloc(*names, (size_t)(n ? n : 1) * sizeof *nm) : NULL;
    if (nm) *names = nm;
    if (!p || !nm) {
        nb_set_error("%s: out of memory", who);
        return false;
    }
    int k = 0;
    collect(*list, *names, m, "", buffers, &k);
    *(buffers ? &m->nbuffers : &m->nparams) = n;
    *built = m->version;
    return true;
}

nb_tensor **nb__module_parameters(const char *who, nb_module *m, int *count) {
    if (count) *count = 0;
    if (!m) return NULL;
    /* The list is rebuilt only when an entry of m, or of a module under
     * it, changed since it was built (changed() bumps m->version): an
     * array lent earlier stays valid until then. */
    if (!refresh(who, m, false)) return NULL;
    if (count) *count = m->nparams;
    return m->params;
}

nb_tensor **nb_module_parameters(nb_module *m, int *count) {
    return nb__module_parameters("nb_module_parameters", m, count);
}

const char *nb_module_parameter_name(nb_module *m, int i) {
    int n;
    if (!nb__module_parameters("nb_module_parameter_name", m, &n) || i < 0 || i >= n) return NULL;
    return m->param_names[i];
}

int64_t nb_module_num_weights(nb_module *m) {
    int n;
    nb_tensor **p = nb__module_parameters("nb_module_num_weights", m, &n);
    int64_t total = 0;
    for (int i = 0; p && i < n; i++) total += nb_numel(p[i]);
    return total;
}

nb_tensor **nb__module_buffers(const char *who, nb_module *m, int *count) {
    if (count) *count = 0;
    if (!m || !refresh(who, m, true)) return NULL;
    if (count) *count = m->nbuffers;
    return m->buffers;
}

nb_tensor **nb_module_buffers(nb_module *m, int *count) {
    return nb__module_buffers("nb_module_buffers", m, count);
}

const char *nb_module_buffer_name(nb_module *m, int i) {
    int n;
    if (!nb_module_buffers(m, &n) || i < 0 || i >= n) return NULL;
    return m->buffer_names[i];
}

int64_t nb_module_num_buffer_elements(nb_module *m) {
    int n;
    nb_tensor **b = nb_module_buffers(m, &n);
    int64_t total = 0;
    for (int i = 0; b && i < n; i++) total += nb_numel(b[i]);
    return total;
}

void nb_module_train(nb_module *m, bool training) {
    if (!m) return;
    m->training = training;
    for (int i = 0; i < m->nentries; i++) nb_module_train(m->entries[i].child, training);
}

void nb_module_zero_grad(nb_module *m) {
    int n;
    nb_tensor **p = nb__module_parameters("nb_module_zero_grad", m, &n);
    for (int i = 0; p && i < n; i++) nb_zero_grad(p[i]);
}

/* Gives back the parameters and frees the children of entries n.. of m. */
static void drop_entries(nb_module *m, int n) {
    for (int i = n; i < m->nentries; i++) {
        if (m->entries[i].param) nb_disown(m->entries[i].param, "nb_module_free");
        if (m->entries[i].buffer) nb_disown(m->entries[i].buffer, "nb_module_free");
        if (m->entries[i].child) free_module(m->entries[i].child);
    }
    m->nentries = n;
}

static void free_module(nb_module *m) {
    if (m->type->destroy) m->type->destroy(m);
    nb__module_free_hooks(m);
    drop_entries(m, 0);
    nb_free(m->entries);
    nb_free(m->params);
    nb_free(m->param_names);
    nb_free(m->buffers);
    nb_free(m->buffer_names);
    nb_free(m);
}

void nb_module_free(nb_module *m) {
    if (!m) return;
    if (m->parent) {
        nb_set_error("nb_module_free: this %s belongs to a %s, which frees it; free that instead",
                     m->type->name, m->parent->type->name);
        return;
    }
    free_module(m);
}

/* Releases or frees entries n.. of m (a layer undoing a half-made build). */
void nb__module_truncate(nb_module *m, int n) {
    if (!m || n < 0 || n >= m->nentries) return;
    drop_entries(m, n);
    changed(m);
}

/* ---- Sequential ---------------------------------------------------------------
 * x -> layer 0 -> layer 1 -> ...; children are named by position. */

static nb_tensor *sequential_forward(nb_module *m, nb_tensor *x) {
    for (int i = 0; i < m->nentries && x; i++) x = nb_module_forward(m->entries[i].child, x);
    return x;
}

static const nb_module_type sequential_type = {"Sequential", sequential_forward, NULL};

nb_module *nb__sequential_new(const char *who) {
    return nb__module_new(who, &sequential_type, sizeof(nb_module));
}

/* Room for n entries, so that adopting n layers cannot run out of memory
 * halfway (a layer listed twice would then be freed while still listed). */
static bool reserve(nb_module *m, int n) {
    if (m->cap >= n) return true;
    nb_module_entry *e = nb_realloc(m->entries, (size_t)n * sizeof *e);
    if (!e) return false;
    m->entries = e;
    m->cap = n;
    return true;
}

/* True when layers[i] appeared earlier in the list (it must be freed once). */
static bool listed_before(nb_module *const *layers, int i) {
    for (int j = 0; j < i; j++)
        if (layers[j] == layers[i]) return true;
    return false;
}

nb_module *nb_sequential(int n, nb_module *const *layers) {
    const char *who = "nb_sequential";
    if (n < 0 || (n > 0 && !layers)) {
        nb_set_error("nb_sequential: invalid layer list (n %d%s)", n, layers ? "" : ", layers NULL");
        return NULL;
    }
    bool ok = true;
    for (int i = 0; ok && i < n; i++) ok = layers[i] != NULL;
    nb_module *m = ok ? nb__sequential_new(who) : NULL;
    if (m && n > 0 && !reserve(m, n)) {
        nb_set_error("nb_sequential: out of memory");
        free_module(m);
        m = NULL;
    }
    if (!m) {
        /* a NULL layer's constructor has said why; free the others once,
         * except those that belong to another module */
        for (int i = 0; i < n; i++)
            if (!listed_before(layers, i)) nb__module_discard(layers[i]);
        return NULL;
    }
    /* Every layer is adopted, even after one is refused, so that the
     * failed Sequential frees each exactly once (the list may repeat one). */
    for (int i = 0; i < n; i++) {
        char what[24];
        snprintf(what, sizeof what, "layer %d", i);
        adopt(who, m, what + 6, what, layers[i], true);
    }
    return nb_module_ok(m);
}

int nb__sequential_add(const char *who, nb_module *seq, nb_module *layer) {
    if (!seq || !layer) {
        nb__module_discard(layer);
        return -1;
    }
    if (seq->type != &sequential_type) {
        nb_set_error("%s: the module is a %s, not a Sequential", who, seq->type->name);
        nb__module_discard(layer);
        return -1;
    }
    char what[24];
    snprintf(what, sizeof what, "layer %d", seq->nentries);
    return adopt(who, seq, what + 6, what, layer, false) ? 0 : -1;
}

int nb_sequential_add(nb_module *seq, nb_module *layer) {
    return nb__sequential_add("nb_sequential_add", seq, layer);
}

bool nb__is_sequential(const nb_module *m) { return m && m->type == &sequential_type; }

int nb_sequential_len(const nb_module *seq) {
    return seq && seq->type == &sequential_type ? seq->nentries : 0;
}

nb_module *nb_sequential_at(const nb_module *seq, int i) {
    if (!seq || seq->type != &sequential_type || i < 0 || i >= seq->nentries) return NULL;
    return seq->entries[i].child;
}

/* Removes the last layer without freeing it (the model's undo of a refused
 * add). */
nb_module *nb__sequential_pop(nb_module *seq) {
    if (!nb_sequential_len(seq)) return NULL;
    nb_module *last = seq->entries[--seq->nentries].child;
    last->parent = NULL;
    changed(seq);
    return last;
}
