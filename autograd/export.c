/* export.c — the graph as Graphviz dot, for looking inside: one box per
 * tensor (name, op or kind of leaf, shape, and optionally its values and
 * its gradient), an arrow from each input to the op's output, optionally a
 * second, red dashed arrow for the way the gradient flows back, and a box
 * around the parameters of each module.
 *
 * Leaves come in three kinds, each its own colour: parameters (held by a
 * container such as a module, or named by the caller) in blue, other
 * leaves that require grad (inputs one differentiates by) in green, and
 * constants (data, targets) in grey. Nodes are numbered in the order the
 * breadth-first walk meets them, so the same graph always gives the same
 * text. Tensor and op names are the user's strings, so they are escaped
 * before they go inside a quoted dot label.
 */
#include "tensor_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Writes s as the inside of a dot string: a quote or a backslash is escaped,
 * a newline becomes dot's \n line break and any other control character a
 * space, so that no name can end the label or break the line. */
static void put_escaped(FILE *out, const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            fputc('\\', out);
            fputc(c, out);
        } else if (c == '\n') {
            fputs("\\n", out);
        } else {
            fputc(c < 0x20 || c == 0x7f ? ' ' : c, out);
        }
    }
}

nb_export_opts nb_export_defaults(void) { return (nb_export_opts){.max_values = 8}; }

/* The name the caller gave t in opts, or NULL. */
static const char *given_name(const nb_tensor *t, const nb_export_opts *o) {
    for (int i = 0; i < o->nnamed; i++)
        if (o->named && o->names && o->named[i] == t && o->names[i]) return o->names[i];
    return NULL;
}

/* A new line of the label: "= [1, 2.5]" for a small tensor, "norm 3.2"
 * otherwise; "grad [...]" and "grad norm ..." for a gradient. */
static void put_values(FILE *out, bool is_grad, const nb_tensor *t, int max_values) {
    const float *d = nb_data(t);
    if (t->numel <= max_values) {
        fputs(is_grad ? "\\ngrad [" : "\\n= [", out);
        for (int64_t i = 0; i < t->numel; i++) fprintf(out, "%s%.4g", i ? ", " : "", (double)d[i]);
        fputc(']', out);
    } else {
        double s = 0;
        for (int64_t i = 0; i < t->numel; i++) s += (double)d[i] * (double)d[i];
        fprintf(out, "\\n%snorm %.4g", is_grad ? "grad " : "", sqrt(s));
    }
}

typedef struct walk {
    const nb_tensor **seen; /* by node number; doubles as the BFS queue */
    int64_t n, cap;
    nb__tensor_map map; /* tensor -> node number */
} walk;

/* The node number of t, adding it to the walk when new; -1 when out of memory. */
static int64_t number_of(walk *w, const nb_tensor *t) {
    int64_t k = nb__map_find(&w->map, t);
    if (k >= 0) return k;
    if (w->n == w->cap) {
        int64_t cap = w->cap ? 2 * w->cap : 64;
        if (!nb__grow((void **)&w->seen, cap, sizeof *w->seen)) return -1;
        w->cap = cap;
    }
    if (!nb__map_reserve(&w->map, (nb_tensor *const *)w->seen, w->n, 128)) return -1;
    w->seen[w->n] = t;
    nb__map_put(&w->map, (nb_tensor *)t, w->n);
    return w->n++;
}

static void put_node(FILE *out, int64_t k, const nb_tensor *t, const nb_export_opts *o) {
    const char *given = given_name(t, o);
    bool param = !t->op && (given || (t->container_ref && t->requires_grad));
    const char *kind = t->op ? t->op->name
                       : param ? "parameter"
                       : t->requires_grad ? "input" : "constant";
    const char *color = t->op ? "white"
                        : param ? "lightblue"
                        : t->requires_grad ? "palegreen" : "lightgrey";
    char shape[NB_SHAPE_CHARS];
    nb_shape_str(t->ndim, t->shape, shape, sizeof shape);
    fprintf(out, "  n%lld [label=\"", (long long)k);
    const char *name = given ? given : t->name;
    put_escaped(out, name);
    if (name[0]) fputs("\\n", out);
    put_escaped(out, kind);
    fprintf(out, " %s", shape);
    if (o->values) put_values(out, false, t, o->max_values);
    if (o->grads && t->grad) put_values(out, true, t->grad, o->max_values);
    fprintf(out, "\", style=filled, fillcolor=%s];\n", color);
}

/* A box ("subgraph cluster") around the named tensors of each module: the
 * part of the name before its last dot. Tensors not in the graph are left
 * out; so is a module none of whose tensors is. */
static void put_clusters(FILE *out, walk *w, const nb_export_opts *o) {
    int cluster = 0;
    for (int i = 0; i < o->nnamed; i++) {
        if (!o->named || !o->names || !o->names[i]) continue;
        const char *dot = strrchr(o->names[i], '.');
        size_t len = dot ? (size_t)(dot - o->names[i]) : 0;
        if (len == 0) continue;
        /* one cluster per prefix: the first name with it opens it */
        bool earlier = false;
        for (int j = 0; j < i && !earlier; j++) {
            const char *dj = o->names[j] ? strrchr(o->names[j], '.') : NULL;
            earlier = dj && (size_t)(dj - o->names[j]) == len && !strncmp(o->names[j], o->names[i], len);
        }
        if (earlier) continue;
        bool opened = false;
        for (int j = i; j < o->nnamed; j++) {
            const char *dj = o->names[j] ? strrchr(o->names[j], '.') : NULL;
            if (!dj || (size_t)(dj - o->names[j]) != len || strncmp(o->names[j], o->names[i], len))
                continue;
            int64_t k = nb__map_find(&w->map, o->named[j]);
            if (k < 0) continue;
            if (!opened) {
                char prefix[128];
                snprintf(prefix, sizeof prefix, "%.*s", (int)(len < 127 ? len : 127), o->names[i]);
                fprintf(out, "  subgraph cluster_%d {\n    label=\"", cluster++);
                put_escaped(out, prefix);
                fputs("\";\n    style=rounded;\n    color=steelblue;\n", out);
                opened = true;
            }
            fprintf(out, "    n%lld;\n", (long long)k);
        }
        if (opened) fputs("  }\n", out);
    }
}

int nb_export_dot_ex(const nb_tensor *root, FILE *out, const nb_export_opts *opts) {
    if (!root || !out) {
        if (!out) nb_set_error("nb_export_dot: output file is NULL");
        return -1;
    }
    nb_export_opts o = opts ? *opts : nb_export_defaults();
    if (o.max_values < 0) o.max_values = 0;
    walk w = {0};
    bool ok = number_of(&w, root) == 0;
    fprintf(out, "digraph nabla {\n  rankdir=BT;\n  node [shape=box, fontname=\"monospace\"];\n");
    /* breadth-first: every node is printed when it leaves the queue */
    for (int64_t head = 0; ok && head < w.n; head++) {
        const nb_tensor *t = w.seen[head];
        put_node(out, head, t, &o);
        for (int i = 0; ok && i < t->ninputs; i++) {
            const nb_tensor *in = t->inputs[i];
            int64_t k = number_of(&w, in);
            if (k < 0) {
                ok = false;
                break;
            }
            fprintf(out, "  n%lld -> n%lld;\n", (long long)k, (long long)head);
            if (o.grad_flow && in->requires_grad)
                fprintf(out, "  n%lld -> n%lld [color=red, style=dashed, constraint=false];\n",
                        (long long)head, (long long)k);
        }
    }
    if (ok) put_clusters(out, &w, &o);
    fprintf(out, "}\n");
    nb_free(w.seen);
    nb__map_free(&w.map);
    if (!ok) {
        nb_set_error("nb_export_dot: out of memory");
        return -1;
    }
    return ferror(out) ? -1 : 0;
}

int nb_export_dot(const nb_tensor *t, FILE *out) { return nb_export_dot_ex(t, out, NULL); }
