/* export.c — the graph as Graphviz dot, for looking inside: one box per
 * tensor (name, op, shape), an arrow from each input to the op's output.
 * Leaves that require grad are drawn in blue, the other leaves in grey.
 * Tensor and op names are the user's strings, so they are escaped before
 * they go inside a quoted dot label.
 */
#include "tensor_internal.h"

#include <stdlib.h>

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

int nb_export_dot(const nb_tensor *root, FILE *out) {
    if (!root || !out) {
        if (!out) nb_set_error("nb_export_dot: output file is NULL");
        return -1;
    }
    int64_t cap = 64, n = 0, head = 0;
    const nb_tensor **seen = nb_malloc((size_t)cap * sizeof *seen);
    if (!seen) {
        nb_set_error("nb_export_dot: out of memory");
        return -1;
    }
    seen[n++] = root;
    fprintf(out, "digraph nabla {\n  rankdir=BT;\n  node [shape=box, fontname=\"monospace\"];\n");
    /* breadth-first; the seen list doubles as the queue */
    while (head < n) {
        const nb_tensor *t = seen[head++];
        char shape[NB_SHAPE_CHARS];
        nb_shape_str(t->ndim, t->shape, shape, sizeof shape);
        const char *color = t->op ? "white" : t->requires_grad ? "lightblue" : "lightgrey";
        fprintf(out, "  t%p [label=\"", (const void *)t);
        put_escaped(out, t->name);
        if (t->name[0]) fputs("\\n", out);
        put_escaped(out, t->op ? t->op->name : "leaf");
        fprintf(out, " %s\", style=filled, fillcolor=%s];\n", shape, color);
        for (int i = 0; i < t->ninputs; i++) {
            const nb_tensor *in = t->inputs[i];
            fprintf(out, "  t%p -> t%p;\n", (const void *)in, (const void *)t);
            bool known = false;
            for (int64_t k = 0; k < n && !known; k++) known = seen[k] == in;
            if (known) continue;
            if (n == cap) {
                const nb_tensor **more = nb_realloc(seen, (size_t)(cap *= 2) * sizeof *seen);
                if (!more) {
                    nb_free(seen);
                    nb_set_error("nb_export_dot: out of memory");
                    return -1;
                }
                seen = more;
            }
            seen[n++] = in;
        }
    }
    fprintf(out, "}\n");
    nb_free(seen);
    return ferror(out) ? -1 : 0;
}
