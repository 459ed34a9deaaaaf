/* tensor_map.c — a table from tensor to index, for the traversals that keep
 * their bookkeeping outside the nodes: backward (engine.c) and the search
 * for create_graph cycles (cycles.c). Open addressing on the tensor's
 * address, capacity a power of two kept above twice the entries, so that a
 * lookup is one or two probes. The table grows by rehashing the entries
 * from the traversal's own list of the tensors it found.
 */
#include "tensor_internal.h"

#include <string.h>

/* The table is too small for one more entry (nb__map_reserve). */
bool nb__map_grow(nb__tensor_map *m, nb_tensor *const *tensors, int64_t count, int64_t first_cap) {
    int64_t cap = m->cap ? 2 * m->cap : first_cap;
    nb_tensor **keys = nb_calloc((size_t)cap, sizeof *keys);
    int64_t *vals = nb_malloc((size_t)cap * sizeof *vals);
    if (!keys || !vals) {
        nb_free(keys);
        nb_free(vals);
        return false;
    }
    nb__map_free(m);
    m->keys = keys;
    m->vals = vals;
    m->cap = cap;
    for (int64_t i = 0; i < count; i++) nb__map_put(m, tensors[i], i);
    return true;
}

/* A backward pass over a small graph puts a few dozen entries in a table of
 * at least a thousand slots: emptying the few slots it used is much cheaper
 * than clearing the whole table, which was a seventh of a small network's
 * training step. The entries go in reverse order of insertion so that each
 * is still found: the slots its probe passed over when it went in were
 * taken by earlier entries, which are all still there. */
void nb__map_clear(nb__tensor_map *m, nb_tensor *const *tensors, int64_t count) {
    if (!m->keys) return;
    if (count > m->cap / 8) {
        memset(m->keys, 0, (size_t)m->cap * sizeof *m->keys);
        return;
    }
    size_t mask = (size_t)(m->cap - 1);
    for (int64_t k = count - 1; k >= 0; k--) {
        size_t i = nb__map_slot(tensors[k], m->cap);
        while (m->keys[i] && m->keys[i] != tensors[k]) i = (i + 1) & mask;
        m->keys[i] = NULL;
    }
}

void nb__map_free(nb__tensor_map *m) {
    nb_free(m->keys);
    nb_free(m->vals);
    *m = (nb__tensor_map){0};
}

bool nb__grow(void **p, int64_t n, size_t size) {
    void *q = nb_realloc(*p, (size_t)n * size);
    if (q) *p = q;
    return q != NULL;
}
