/* ownership.c — scopes, keep, release and grad mode: who frees a tensor.
 *
 * Each thread has a stack of scopes kept as one growing list of tensor
 * pointers plus the list index where each open scope starts. A new tensor is
 * appended to the list (the scope's reference) or, with no scope open,
 * handed to the caller. nb_keep and nb_escape clear the tensor's slot, so
 * closing a scope is one pass releasing the slots still set, newest first.
 * The list is reused from step to step: opening and closing a scope around a
 * training step allocates nothing once the list has grown to the step's size.
 */
#include "tensor_internal.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct scope_stack {
    nb_tensor **items;
    int64_t count, cap;
    int64_t *starts; /* starts[d - 1]: first slot of the scope at depth d */
    int depth, depth_cap;
} scope_stack;

static _Thread_local scope_stack scopes;
_Thread_local bool nb__grad_disabled;

/* The lists outlive each scope so that the next step reuses them; a thread
 * that exits gives them back through this key's destructor. */
static pthread_key_t thread_key;
static pthread_once_t thread_key_once = PTHREAD_ONCE_INIT;

static void thread_exit(void *unused) {
    (void)unused;
    while (scopes.depth > 0) nb_scope_end(); /* scopes the thread left open */
    nb_free(scopes.items);
    nb_free(scopes.starts);
    scopes = (scope_stack){0};
    nb__engine_thread_exit();
    nb__pool_thread_exit(); /* last: closing the scopes freed tensors into it */
}

static void make_thread_key(void) { pthread_key_create(&thread_key, thread_exit); }

void nb__thread_cache_used(void) {
    pthread_once(&thread_key_once, make_thread_key);
    if (!pthread_getspecific(thread_key)) pthread_setspecific(thread_key, &scopes);
}

int nb_scope_begin(void) {
    if (scopes.depth == scopes.depth_cap) {
        int cap = scopes.depth_cap ? 2 * scopes.depth_cap : 16;
        nb__thread_cache_used();
        int64_t *s = nb_realloc(scopes.starts, (size_t)cap * sizeof *s);
        if (!s) {
            nb_set_error("nb_scope_begin: out of memory");
            return -1;
        }
        scopes.starts = s;
        scopes.depth_cap = cap;
    }
    scopes.starts[scopes.depth++] = scopes.count;
    return scopes.depth;
}

void nb_scope_end(void) {
    if (scopes.depth == 0) {
        nb_set_error("nb_scope_end: no scope is open");
        return;
    }
    int64_t start = scopes.starts[scopes.depth - 1];
    for (int64_t i = scopes.count - 1; i >= start; i--) {
        nb_tensor *t = scopes.items[i];
        if (!t) continue;
        t->scope_depth = 0;
        nb__tensor_decref(t);
    }
    scopes.count = start;
    scopes.depth--;
}

/* Doubles the list; false when out of memory. */
static NB_NOINLINE bool scope_grow(void) {
    int64_t cap = scopes.cap ? 2 * scopes.cap : 1024;
    nb__thread_cache_used();
    nb_tensor **items = nb_realloc(scopes.items, (size_t)cap * sizeof *items);
    if (!items) return false;
    scopes.items = items;
    scopes.cap = cap;
    return true;
}

static bool scope_push(nb_tensor *t) {
    if (scopes.count == scopes.cap && !scope_grow()) return false;
    t->scope_depth = scopes.depth;
    t->scope_slot = scopes.count;
    scopes.items[scopes.count++] = t;
    return true;
}

bool nb__scope_adopt(nb_tensor *t) {
    if (scopes.depth == 0) {
        t->caller_ref = true;
        return true;
    }
    /* Handing the tensor to the caller instead would leak it in code that
     * relies on the scope, so creation fails with the caller's message. */
    return scope_push(t);
}

/* A tensor owned by a scope of this thread: clears its slot. Returns false
 * for tensors owned by another thread's scope, which are left alone. */
static bool scope_unlink(nb_tensor *t) {
    if (t->scope_depth <= 0 || t->scope_depth > scopes.depth || t->scope_slot >= scopes.count ||
        scopes.items[t->scope_slot] != t)
        return false;
    scopes.items[t->scope_slot] = NULL;
    t->scope_depth = 0;
    return true;
}

/* A handle to a tensor that was freed: its struct waits in the pool's
 * quarantine still marked dead (tensor.c). Reports it for who. */
static bool stale(const nb_tensor *t, const char *who) {
    if (t->magic == NB_TENSOR_LIVE) return false;
    nb_set_error("%s: tensor %s%s%swas already freed (released twice, or used after its owner "
                 "released it)",
                 who, t->name[0] ? "'" : "", t->name, t->name[0] ? "' " : "");
    return true;
}

#define QUOTED_NAME(t) (t)->name[0] ? "'" : "", (t)->name, (t)->name[0] ? "' " : ""

nb_tensor *nb_keep(nb_tensor *t) {
    if (!t) return NULL;
    if (stale(t, "nb_keep")) return NULL;
    if (t->caller_ref) return t;
    if (scope_unlink(t)) {
        t->caller_ref = true;
        return t;
    }
    /* Owned only through the graph or another tensor's .grad: the caller
     * takes a reference of their own. */
    nb__tensor_retain(t);
    t->caller_ref = true;
    return t;
}

nb_tensor *nb_escape(nb_tensor *t) {
    if (!t) return NULL;
    int depth = t->scope_depth;
    if (depth != scopes.depth || !scope_unlink(t)) return t;
    if (depth == 1) {
        t->caller_ref = true;
        return t;
    }
    /* Re-home in the enclosing scope: its slots precede the innermost
     * scope's start, so the slot is inserted by moving the innermost
     * scope's first entry to the end of the list. */
    int64_t start = scopes.starts[depth - 1];
    nb_tensor *first = scopes.count > start ? scopes.items[start] : NULL;
    if (!scope_push(t)) { /* no memory: fall back to handing it to the caller */
        t->caller_ref = true;
        return t;
    }
    scopes.items[t->scope_slot] = first;
    if (first) first->scope_slot = t->scope_slot;
    scopes.items[start] = t;
    t->scope_slot = start;
    t->scope_depth = depth - 1;
    scopes.starts[depth - 1] = start + 1;
    return t;
}

void nb_release(nb_tensor *t) {
    if (!t || stale(t, "nb_release")) return;
    if (!t->caller_ref && t->container_ref) {
        nb_set_error("nb_release: tensor %s%s%sis held by a container (a module's parameters, say), "
                     "which frees it; nb_keep it first for a reference of your own",
                     QUOTED_NAME(t));
        return;
    }
    if (!t->caller_ref) {
        nb_set_error("nb_release: tensor %s%s%sis owned by a scope or a graph, not by the "
                     "caller; nb_keep it first or let its scope free it",
                     QUOTED_NAME(t));
        return;
    }
    t->caller_ref = false;
    nb__tensor_decref(t);
}

nb_tensor *nb_adopt(nb_tensor *t, const char *who) {
    if (!who) who = "nb_adopt";
    if (!t || stale(t, who)) return NULL;
    if (t->container_ref) {
        nb_set_error("%s: tensor %s%s%sis already held by a container (a parameter of another "
                     "module, say); each container needs a tensor of its own",
                     who, QUOTED_NAME(t));
        return NULL;
    }
    /* Take over the caller's reference, or the scope's; a tensor held only
     * through a graph or a .grad gets a new one. */
    if (t->caller_ref) t->caller_ref = false;
    else if (!scope_unlink(t)) nb__tensor_retain(t);
    t->container_ref = true;
    return t;
}

void nb_disown(nb_tensor *t, const char *who) {
    if (!who) who = "nb_disown";
    if (!t || stale(t, who)) return;
    if (!t->container_ref) {
        nb_set_error("%s: tensor %s%s%sis not held by a container", who, QUOTED_NAME(t));
        return;
    }
    t->container_ref = false;
    nb__tensor_decref(t);
}

bool nb_set_grad_enabled(bool enabled) {
    bool was = !nb__grad_disabled;
    nb__grad_disabled = !enabled;
    return was;
}

bool nb_is_grad_enabled(void) { return !nb__grad_disabled; }
