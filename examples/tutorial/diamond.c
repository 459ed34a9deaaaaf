/* diamond.c — step 3 of the tutorial: a value used twice.
 *
 *   s = x,   a = 2 s,   b = s^2,   c = a b         (c = 2 x^3)
 *
 * s feeds two ops, so its gradient has two parts, one through a and one
 * through b, and backward must add them before going further down. To watch
 * the traversal, each named value passes through "tap", an identity op
 * written with the public op API (as step 4 explains) whose backward prints
 * the gradient arriving at it. The order of the lines is the order in which
 * backward visits the nodes.
 */
#include <stdio.h>
#include <string.h>

#include "nabla.h"

/* The identity; its backward prints the node's name and gradient and passes
 * the gradient on unchanged. */
static void tap_backward(nb_tensor *out, nb_tensor *g, nb_tensor **gx) {
    printf("  backward reaches %s: dc/d%s = %g\n", nb_name(out), nb_name(out),
           (double)nb_item(g));
    gx[0] = g;
}
static const nb_op tap_op = {"tap", tap_backward};

static nb_tensor *tap(nb_tensor *x, const char *name) {
    if (!x) return NULL;
    nb_tensor *y = nb_empty_like(x);
    if (!y) return NULL;
    memcpy(nb_data_mut(y), nb_data(x), sizeof(float) * (size_t)nb_numel(x));
    y = nb_record(y, &tap_op, 1, &x);
    return nb_set_name(y, name);
}

/* Builds c from the leaf x and runs backward on it. */
static int diamond(nb_tensor *x) {
    nb_scope_begin();
    nb_tensor *s = tap(x, "s");
    nb_tensor *a = tap(nb_mul_scalar(s, 2), "a");
    nb_tensor *b = tap(nb_square(s), "b");
    nb_tensor *c = tap(nb_mul(a, b), "c");
    printf("  forward: s = %g, a = %g, b = %g, c = %g\n", (double)nb_item(s), (double)nb_item(a),
           (double)nb_item(b), (double)nb_item(c));
    int status = nb_backward(c);
    if (status != 0) fprintf(stderr, "diamond: %s\n", nb_error());
    nb_scope_end();
    return status;
}

int main(void) {
    nb_tensor *x = nb_set_requires_grad(nb_scalar(3), true);
    printf("first backward, x = 3:\n");
    if (diamond(x) != 0) return 1;
    printf("x.grad = %g\n", (double)nb_item(nb_grad_of(x)));

    /* A second backward without zeroing: gradients accumulate in .grad. */
    printf("second backward, .grad not zeroed:\n");
    if (diamond(x) != 0) return 1;
    printf("x.grad = %g\n", (double)nb_item(nb_grad_of(x)));

    nb_zero_grad(x);
    printf("after nb_zero_grad: x.grad = %g\n", (double)nb_item(nb_grad_of(x)));
    nb_release(x);
    return 0;
}
