/* alloc.c — every heap allocation nabla makes passes through here, so that
 * one hook sees them all: tests make the Nth allocation fail and check that
 * nabla reports "out of memory" and leaks nothing (SQLite's way of testing
 * its OOM paths); a program can cap its memory or count allocations.
 *
 * The hook only decides whether an allocation may happen; the memory itself
 * always comes from libc, so a hook installed or removed while blocks are
 * alive never frees a block through the wrong allocator.
 */
#define _DEFAULT_SOURCE /* madvise's MADV_HUGEPAGE, Linux's, beside POSIX */
#include "tensor_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

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

/* Blocks this large (a data set, a big layer's weights) are asked to live
 * on huge pages where the system leaves that to the program (Linux's
 * transparent huge pages in "madvise" mode): rows gathered at random from a
 * data set of hundreds of megabytes then cost a TLB miss per 2 MiB rather
 * than per 4 KiB, which took 5% off an epoch of the Fashion-MNIST MLP. Only
 * the whole 2 MiB pages inside the block are advised; a no-op elsewhere. */
enum { HUGE_PAGE = 2 << 20, HUGE_BLOCK = 4 * HUGE_PAGE };

static void advise_huge(void *p, size_t size) {
#ifdef MADV_HUGEPAGE
    if (size < HUGE_BLOCK) return;
    uintptr_t lo = ((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
    uintptr_t hi = ((uintptr_t)p + size) & ~(uintptr_t)(HUGE_PAGE - 1);
    if (hi > lo) (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
#else
    (void)p;
    (void)size;
#endif
}

void *nb_aligned_alloc(size_t alignment, size_t size) {
    void *p = NULL;
    if (!allowed(size) || posix_memalign(&p, alignment, size ? size : 1) != 0) return NULL;
    advise_huge(p, size);
    return p;
}

void nb_free(void *p) { free(p); }
