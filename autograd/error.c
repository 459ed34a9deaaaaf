/* error.c — the error channel. A failing function writes one message into a
 * thread-local buffer and returns NULL or -1; nothing aborts unless the user
 * installs nb_abort_on_error. Successful calls leave the message alone, like
 * errno, so the first failure of a long expression is the one reported.
 */
#include "tensor_internal.h"

#include <stdarg.h>
#include <stdlib.h>

static _Thread_local char message[512];
static _Thread_local bool has_message;
static _Thread_local uint64_t error_count;
static _Atomic(nb_error_handler) handler;
static void *_Atomic handler_user;

const char *nb_error(void) { return has_message ? message : NULL; }

uint64_t nb_error_count(void) { return error_count; }

void nb_clear_error(void) {
    has_message = false;
    message[0] = '\0';
}

void nb_set_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    has_message = true;
    error_count++;
    nb_error_handler h = atomic_load(&handler);
    if (h) h(message, atomic_load(&handler_user));
}

nb_error_handler nb_set_error_handler(nb_error_handler h, void *user) {
    atomic_store(&handler_user, user);
    return atomic_exchange(&handler, h);
}

void nb_abort_on_error(const char *msg, void *user) {
    (void)user;
    fprintf(stderr, "nabla: %s\n", msg);
    abort();
}
