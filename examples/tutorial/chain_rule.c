/* chain_rule.c — step 1 of the tutorial (README.md beside this file): the
 * seed network cut down to one unit per layer, so that every derivative of
 * its loss can be checked by hand.
 *
 *   h = w1 x + b1,   a = relu(h),   p = w2 a + b2,   L = (p - y)^2
 *
 * The program builds that expression from scalar tensors, runs backward and
 * prints what the text derives with the chain rule: the forward values, the
 * gradient of every parameter, and one step of gradient descent. Then it
 * repeats the forward and backward with an input that switches the ReLU off,
 * to show the gradients that stop there.
 */
#include <stdio.h>

#include "nabla.h"

/* One forward and backward of the one-unit network at input x, target y.
 * The parameters are leaves the caller owns; their .grad is filled here. */
static float forward_backward(nb_tensor *const w[4], float x, float y, int print) {
    nb_scope_begin(); /* the graph of this pass is freed at the end */
    nb_tensor *h = nb_add(nb_mul(w[0], nb_scalar(x)), w[1]);
    nb_tensor *a = nb_relu(h);
    nb_tensor *p = nb_add(nb_mul(w[2], a), w[3]);
    nb_tensor *loss = nb_mse_loss(p, nb_scalar(y), NB_REDUCE_MEAN);
    float value = nb_item(loss);
    if (print)
        printf("h = %g   a = relu(h) = %g   p = %g   L = %g\n", (double)nb_item(h),
               (double)nb_item(a), (double)nb_item(p), (double)value);
    if (nb_backward(loss) != 0) {
        fprintf(stderr, "chain_rule: %s\n", nb_error());
        value = -1;
    }
    nb_scope_end();
    return value;
}

int main(void) {
    static const char *names[4] = {"w1", "b1", "w2", "b2"};
    const float start[4] = {0.5f, 0.25f, 2.0f, -0.5f};
    nb_tensor *w[4];
    for (int i = 0; i < 4; i++) w[i] = nb_set_requires_grad(nb_scalar(start[i]), true);

    printf("x = 2, y = 3, w1 = 0.5, b1 = 0.25, w2 = 2, b2 = -0.5\n");
    if (forward_backward(w, 2.0f, 3.0f, 1) < 0) return 1;
    for (int i = 0; i < 4; i++)
        printf("dL/d%s = %g\n", names[i], (double)nb_item(nb_grad_of(w[i])));

    /* one step of gradient descent, learning rate 0.01 (Keras's SGD) */
    for (int i = 0; i < 4; i++) {
        nb_data_mut(w[i])[0] -= 0.01f * nb_item(nb_grad_of(w[i]));
        nb_zero_grad(w[i]);
    }
    printf("after one step: w1 = %g, b1 = %g, w2 = %g, b2 = %g\n", (double)nb_item(w[0]),
           (double)nb_item(w[1]), (double)nb_item(w[2]), (double)nb_item(w[3]));
    float after = forward_backward(w, 2.0f, 3.0f, 0);
    if (after < 0) return 1;
    printf("loss after the step: %.6f\n", (double)after);

    /* the same network at x = -1: h < 0, the ReLU is off */
    for (int i = 0; i < 4; i++) {
        nb_data_mut(w[i])[0] = start[i];
        nb_zero_grad(w[i]);
    }
    printf("\nx = -1, y = 3, same parameters\n");
    if (forward_backward(w, -1.0f, 3.0f, 1) < 0) return 1;
    for (int i = 0; i < 4; i++)
        printf("dL/d%s = %g\n", names[i], (double)nb_item(nb_grad_of(w[i])));

    for (int i = 0; i < 4; i++) nb_release(w[i]);
    return 0;
}
