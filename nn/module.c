/* module.c — the module abstraction every layer is built on, and Sequential.
 *
 * A module is a struct starting with nb_module: a type (name, forward,
 * destroy), a training flag, and a list of named entries, each a parameter
 * or a child module. That list is all the generic code needs: parameters
 * are gathered depth first with dotted names ("0.weight", "fc1.bias") as
 * PyTorch names them, train/eval and zero_grad recurse, and freeing releases
 * the parameters and frees the children. Built-in layers use exactly this
 * API, as a user's module does.
 */
#include "nn_internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_uint_fast64_t structure_version = 1;

nb_module *nb_module_new(const nb_module_type *type, size_t size) {
    if (!type || !type->forward || size < sizeof(nb_module)) {
        nb_set_error("nb_module_new: needs a type with a forward and a size of at least "
                     "sizeof(nb_module)");
        return NULL;
    }
    nb_module *m = nb_calloc(1, size);
    if (!m) {
        nb_set_error("nb_module_new: out of memory");
        return NULL;
    }
    m->type = type;
    m->training = true;
    return m;
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
    atomic_fetch_add(&structure_version, 1);
    return e;
}

/* A module entry may not repeat a tensor or a module: freeing would
 * release it twice. */
static bool registered(const nb_module *m, const nb_tensor *param, const nb_module *child) {
    for (int i = 0; i < m->nentries; i++)
        if ((param && m->entries[i].param == param) || (child && m->entries[i].child == child)) return true;
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

nb_module *nb_module_add_child(nb_module *m, const char *name, nb_module *child) {
    if (!m) {
        nb_module_free(child);
        return NULL;
    }
    if (child && (child == m || registered(m, NULL, child))) {
        nb_set_error("nb_module_add_child: '%s' is already part of this module; make a new "
                     "module for each place it is used", name ? name : "");
        m->failed = true;
        return NULL; /* not freed: it is still in use where it was added first */
    }
    nb_module_entry *e = child ? add_entry(m, name) : NULL;
    if (!e) {
        if (child) nb_set_error("nb_module_add_child: out of memory");
        nb_module_free(child);
        m->failed = true;
        return NULL;
    }
    child->training = m->training;
    e->child = child;
    return child;
}

nb_module *nb_module_ok(nb_module *m) {
    if (m && m->failed) {
        nb_module_free(m);
        return NULL;
    }
    return m;
}

nb_tensor *nb_module_forward(nb_module *m, nb_tensor *x) {
    if (!m || !x) return NULL;
    return m->type->forward(m, x);
}

/* ---- the flattened parameter list ------------------------------------------- */

static int count_params(const nb_module *m) {
    int n = 0;
    for (int i = 0; i < m->nentries; i++)
        n += m->entries[i].param ? 1 : count_params(m->entries[i].child);
    return n;
}

static void collect(nb_module *root, const nb_module *m, const char *prefix, int *k) {
    for (int i = 0; i < m->nentries; i++) {
        const nb_module_entry *e = &m->entries[i];
        char name[96];
        snprintf(name, sizeof name, "%s%s%s", prefix, prefix[0] ? "." : "", e->name);
        if (e->param) {
            root->params[*k] = e->param;
            snprintf(root->param_names[*k], sizeof root->param_names[*k], "%s", name);
            (*k)++;
        } else {
            collect(root, e->child, name, k);
        }
    }
}

nb_tensor **nb_module_parameters(nb_module *m, int *count) {
    if (count) *count = 0;
    if (!m) return NULL;
    /* Any change to any module's entries bumps structure_version, which
     * invalidates every cached list: simple, and changes are rare. */
    uint64_t version = atomic_load(&structure_version);
    if (m->params_version != version) {
        int n = count_params(m);
        nb_tensor **p = nb_realloc(m->params, (size_t)(n ? n : 1) * sizeof *p);
        char(*names)[96] = p ? nb_realloc(m->param_names, (size_t)(n ? n : 1) * sizeof *names) : NULL;
        if (p) m->params = p;
        if (names) m->param_names = names;
        if (!p || !names) {
            nb_set_error("nb_module_parameters: out of memory");
            return NULL;
        }
        int k = 0;
        collect(m, m, "", &k);
        m->nparams = n;
        m->params_version = version;
    }
    if (count) *count = m->nparams;
    return m->params;
}

const char *nb_module_parameter_name(nb_module *m, int i) {
    int n;
    if (!nb_module_parameters(m, &n) || i < 0 || i >= n) return NULL;
    return m->param_names[i];
}

int64_t nb_module_num_weights(nb_module *m) {
    int n;
    nb_tensor **p = nb_module_parameters(m, &n);
    int64_t total = 0;
    for (int i = 0; p && i < n; i++) total += nb_numel(p[i]);
    return total;
}

void nb_module_train(nb_module *m, bool training) {
    if (!m) return;
    m->training = training;
    for (int i = 0; i < m->nentries; i++) nb_module_train(m->entries[i].child, training);
}

void nb_module_zero_grad(nb_module *m) {
    int n;
    nb_tensor **p = nb_module_parameters(m, &n);
    for (int i = 0; p && i < n; i++) nb_zero_grad(p[i]);
}

void nb_module_free(nb_module *m) {
    if (!m) return;
    if (m->type->destroy) m->type->destroy(m);
    for (int i = 0; i < m->nentries; i++) {
        if (m->entries[i].param) nb_disown(m->entries[i].param, "nb_module_free");
        nb_module_free(m->entries[i].child);
    }
    nb_free(m->entries);
    nb_free(m->params);
    nb_free(m->param_names);
    nb_free(m);
}

/* ---- Sequential ---------------------------------------------------------------
 * x -> layer 0 -> layer 1 -> ...; children are named by position. */

static nb_tensor *sequential_forward(nb_module *m, nb_tensor *x) {
    for (int i = 0; i < m->nentries && x; i++) x = nb_module_forward(m->entries[i].child, x);
    return x;
}

static const nb_module_type sequential_type = {"Sequential", sequential_forward, NULL};

nb_module *nb_sequential(int n, nb_module *const *layers) {
    bool ok = n >= 0 && (n == 0 || layers);
    for (int i = 0; ok && i < n; i++) ok = layers[i] != NULL;
    nb_module *m = ok ? nb_module_new(&sequential_type, sizeof(nb_module)) : NULL;
    if (!m) {
        if (n < 0 || (n > 0 && !layers)) nb_set_error("nb_sequential: invalid layer list");
        for (int i = 0; layers && i < n; i++) nb_module_free(layers[i]);
        return NULL;
    }
    for (int i = 0; i < n; i++) nb_sequential_add(m, layers[i]);
    return nb_module_ok(m);
}

int nb_sequential_add(nb_module *seq, nb_module *layer) {
    if (!seq || !layer) {
        nb_module_free(layer);
        return -1;
    }
    if (seq->type != &sequential_type) {
        nb_set_error("nb_sequential_add: the module is a %s, not a Sequential", seq->type->name);
        nb_module_free(layer);
        return -1;
    }
    char name[16];
    snprintf(name, sizeof name, "%d", seq->nentries);
    return nb_module_add_child(seq, name, layer) ? 0 : -1;
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
    atomic_fetch_add(&structure_version, 1);
    return seq->entries[--seq->nentries].child;
}
