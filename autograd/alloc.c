/* alloc.c — every heap allocation nabla makes passes through here, so that
 * one hook sees them all: tests make the Nth allocation fail and check that
 * nabla reports "out of memory" and leaks nothing (SQLite's way of testing
 * its OOM paths); a program can cap its memory or count allocations.
 *
 * The hook only decides whether an allocation may happen; the memory itself
 * always comes from libc, so a hook installed or removed while blocks are
 * alive never frees a block through the wrong allocator.
 */
#include "tensor_internal.h"

#include <stdlib.h>
#include <string.h>

static _Atomic(nb_alloc_hook) hook;
static void *_Atomic hook_user;

nb_alloc_hook nb_set_alloc_hook(nb_alloc_hook h, void *user) {
    atomic_store(&hook_user, user);
    return atomic_exchange(&hook, h);
}

static bool allowed(size_t size) {
    nb_alloc_hook h = atomic_load(&hook);
    return !h || h(size, atomic_load(&hook_user));
}

void *nb_malloc(size_t size) { return allowed(size) ? malloc(size ? size : 1) : NULL; }

void *nb_calloc(size_t count, size_t size) {
    if (size && count > SIZE_MAX / size) return NULL;
    return allowed(count * size) ? calloc(count ? count : 1, size ? size : 1) : NULL;
}

void *nb_realloc(void *p, size_t size) {
    return allowed(size) ? realloc(p, size ? size : 1) : NULL;
}

void *nb_aligned_alloc(size_t alignment, size_t size) {
    void *p = NULL;
    if (!allowed(size) || posix_memalign(&p, alignment, size ? size : 1) != 0) return NULL;
    return p;
}

void nb_free(void *p) { free(p); }
