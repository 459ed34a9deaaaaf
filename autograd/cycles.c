/* cycles.c — freeing the reference cycles that create_graph makes.
 *
 * A backward with create_graph stores in a leaf's .grad a gradient that is
 * itself a graph, and that graph usually holds the leaf: the gradient of
 * sum(x^3) is 3x^2, computed from x. The leaf holds its .grad and the .grad
 * holds the leaf, so reference counting alone would never free either once
 * the user lets go of x (PyTorch warns about the same cycle and leaves it to
 * Python's garbage collector). nabla frees it here.
 *
 * Every such cycle runs through a .grad link, the only kind of link that
 * points from an older tensor to a newer one. nb__tensor_decref calls
 * nb__collect_cycle(t) when t loses a reference and survives it with no
 * owner left (no scope, no caller, no container), and t is at one end of a
 * .grad link that carries a graph: its .grad is a graph, or it is a graph
 * that has been stored as a .grad. Only then can t be garbage held up by a
 * cycle: the leaf released by its user, or the gradient the user kept with
 * nb_keep(nb_grad_of(x)) and released after the leaf.
 * The check is CPython's trial deletion, on the part of the graph reachable
 * from t through inputs, saved tensors and .grad links, stopping at owned
 * tensors (an owned tensor is alive, and so is all it reaches):
 *
 *   1. every tensor found starts with its reference count;
 *   2. each link between two found tensors takes one off its target: what
 *      remains counts the references from outside the part found;
 *   3. a tensor with references from outside is alive, and so is every
 *      found tensor it reaches.
 *
 * When t is not alive, the found tensors that are not alive are garbage.
 * Clearing their .grad links breaks every cycle among them, and ordinary
 * reference counting frees the rest. Tensors that stay alive keep their
 * .grad. The walk costs time in the size of the unowned graph reachable
 * from t and happens only when such a tensor loses a reference while it has
 * no owner; parameters held by a module never start one.
 *
 * The limit: a cycle freed only when a tensor from inside a gradient's
 * graph (reached with nb_input, say) is released last is not seen, since
 * that tensor is at neither end of a .grad link; it stays allocated until
 * the leaf's .grad is cleared (nb_clear_grad, nb_zero_grad) while the leaf
 * is still reachable.
 *
 * The walk reads reference counts, so the release that starts it must not
 * overlap another thread's use of the same graph (as with backward into a
 * .grad). If the walk cannot get memory the cycle is left alone: a leak,
 * never a wrong free.
 */
#include "tensor_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct walk {
    nb_tensor **nodes; /* found tensors; nodes[0] is where the walk started */
    int64_t *outside;  /* references from outside the part found */
    bool *alive;
    int64_t count, cap;
    nb__tensor_map map; /* tensor -> index in nodes */
} walk;

static bool owned(const nb_tensor *t) {
    return t->caller_ref || t->container_ref || t->scope_depth > 0;
}

/* The references t holds, numbered 0 .. num_links(t) - 1; a link may be
 * NULL (no .grad, or a saved output, which is t itself and holds nothing). */
static int num_links(const nb_tensor *t) { return t->nsaved + 1 + t->ninputs; }

static nb_tensor *link(const nb_tensor *t, int i) {
    if (i < t->nsaved) return t->saved[i] != t ? t->saved[i] : NULL;
    i -= t->nsaved;
    return i == 0 ? t->grad : t->inputs[i - 1];
}

static int64_t find(const walk *w, const nb_tensor *t) { return nb__map_find(&w->map, t); }

/* Adds t to the part found; false when out of memory. */
static bool add(walk *w, nb_tensor *t) {
    if (w->count == w->cap) {
        int64_t cap = w->cap ? 2 * w->cap : 64;
        if (!nb__grow((void **)&w->nodes, cap, sizeof *w->nodes) ||
            !nb__grow((void **)&w->outside, cap, sizeof *w->outside) ||
            !nb__grow((void **)&w->alive, cap, sizeof *w->alive))
            return false;
        w->cap = cap;
    }
    if (!nb__map_reserve(&w->map, w->nodes, w->count, 256)) return false;
    w->nodes[w->count] = t;
    w->outside[w->count] = atomic_load(&t->refcount);
    w->alive[w->count] = false;
    nb__map_put(&w->map, t, w->count);
    w->count++;
    return true;
}

static void free_walk(walk *w) {
    nb_free(w->nodes);
    nb_free(w->outside);
    nb_free(w->alive);
    nb__map_free(&w->map);
}

/* Finds the unowned part reachable from t and counts the references from
 * outside it. False when out of memory. */
static bool explore(walk *w, nb_tensor *t) {
    if (!add(w, t)) return false;
    for (int64_t k = 0; k < w->count; k++) { /* nodes doubles as the queue */
        nb_tensor *n = w->nodes[k];
        for (int i = 0; i < num_links(n); i++) {
            nb_tensor *c = link(n, i);
            if (!c || owned(c)) continue;
            int64_t j = find(w, c);
            if (j < 0) {
                if (!add(w, c)) return false;
                j = w->count - 1;
            }
            w->outside[j]--;
        }
    }
    return true;
}

/* Marks alive every found tensor with references from outside, and every
 * found tensor those reach. False when out of memory. */
static bool mark_alive(walk *w) {
    int64_t *stack = nb_malloc((size_t)w->count * sizeof *stack), top = 0;
    if (!stack) return false;
    for (int64_t k = 0; k < w->count; k++)
        if (w->outside[k] > 0) {
            w->alive[k] = true;
            stack[top++] = k;
        }
    while (top > 0) {
        nb_tensor *n = w->nodes[stack[--top]];
        for (int i = 0; i < num_links(n); i++) {
            nb_tensor *c = link(n, i);
            int64_t j = c && !owned(c) ? find(w, c) : -1;
            if (j >= 0 && !w->alive[j]) {
                w->alive[j] = true;
                stack[top++] = j;
            }
        }
    }
    nb_free(stack);
    return true;
}

void nb__collect_cycle(nb_tensor *t) {
    walk w = {0};
    if (!explore(&w, t) || !mark_alive(&w) || w.alive[0]) {
        free_walk(&w);
        return;
    }
    /* Cut the .grad links of the garbage first, then drop them: dropping
     * one may free others, which must no longer be read. */
    int64_t ncut = 0;
    for (int64_t k = 0; k < w.count; k++) {
        nb_tensor *n = w.nodes[k];
        if (w.alive[k] || !n->grad) continue;
        w.nodes[ncut++] = n->grad;
        n->grad = NULL;
    }
    for (int64_t k = 0; k < ncut; k++) nb__tensor_decref(w.nodes[k]);
    free_walk(&w);
}
