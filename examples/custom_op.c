/* custom_op.c — defining a new op, exactly the way ops/ defines its own.
 *
 * swish(x) = x * sigmoid(x). Its forward is a plain loop; its backward is
 * the derivative written with nabla's differentiable ops,
 *
 *     d swish / dx = s + x * s * (1 - s),   s = sigmoid(x),
 *
 * so it can itself be differentiated (second order gradcheck below). Its
 * forward-mode rule (jvp), for nb_jvp, is the same derivative times the
 * tangent dx. The program checks the op with gradcheck and its rule with
 * finite differences, then trains a small network that uses it to fit
 * y = sin(3x) on [-1, 1] with plain gradient descent.
 */
#include <math.h>
#include <stdio.h>

#include "nabla.h"

/* x (any shape) -> y (same shape) */
static nb_tensor *swish_derivative(nb_tensor *y) {
    nb_tensor *x = nb_saved(y, 0);
    nb_tensor *s = nb_sigmoid(x);
    nb_tensor *ds = nb_mul(s, nb_rsub_scalar(s, 1.0f)); /* s (1 - s) */
    return nb_add(s, nb_mul(x, ds));
}

static void swish_backward(nb_tensor *y, nb_tensor *gy, nb_tensor **gx) {
    gx[0] = nb_mul(gy, swish_derivative(y));
}

/* dy = swish'(x) dx; tangents[0] is never NULL here (one input, and the
 * rule runs only when a tangent reaches the op) */
static nb_tensor *swish_jvp(nb_tensor *y, nb_tensor *const *tangents) {
    return nb_mul(tangents[0], swish_derivative(y));
}

static const nb_op swish_op = {"swish", swish_backward, swish_jvp};

static nb_tensor *swish(nb_tensor *x) {
    if (!x) return NULL; /* the error rule: NULL in, NULL out, no new message */
    nb_tensor *y = nb_empty_like(x);
    if (!y) return NULL;
    const float *px = nb_data(x);
    float *py = nb_data_mut(y);
    for (int64_t i = 0; i < nb_numel(x); i++) py[i] = px[i] / (1.0f + expf(-px[i]));
    y = nb_record(y, &swish_op, 1, &x);
    nb_save(y, x);
    return y;
}

static nb_tensor *swish_of_input(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return swish(in[0]);
}

static int swish_for_jvp(nb_tensor *const *in, nb_tensor **out, void *ctx) {
    out[0] = swish_of_input(in, ctx);
    return out[0] ? 0 : -1;
}

int main(void) {
    nb_manual_seed(0);

    /* 1. prove the op: first and second derivatives against finite differences */
    nb_scope_begin();
    nb_tensor *probe = nb_set_requires_grad(nb_uniform(NULL, -3, 3, NB_SHAPE(4, 5)), true);
    nb_gradcheck_result r;
    bool first = nb_gradcheck(swish_of_input, NULL, 1, &probe, NULL, &r);
    printf("%s\n", r.message);
    bool second = nb_gradgradcheck(swish_of_input, NULL, 1, &probe, NULL, &r);
    printf("%s\n", r.message);
    /* the forward rule along dx = 1 gives swish'(x) elementwise: against
     * central differences of swish computed in double */
    nb_tensor *sw, *dy, *ones = nb_ones_like(probe);
    bool third = nb_jvp(swish_for_jvp, NULL, 1, &probe, &ones, 1, &sw, &dy) == 0;
    double worst = 0, h = 1e-4;
    for (int64_t i = 0; third && i < nb_numel(probe); i++) {
        double v = nb_data(probe)[i];
        double fd = ((v + h) / (1 + exp(-(v + h))) - (v - h) / (1 + exp(-(v - h)))) / (2 * h);
        worst = fmax(worst, fabs(nb_data(dy)[i] - fd));
    }
    printf("nb_jvp along 1 against finite differences: largest difference %.1e\n", worst);
    third = third && worst < 1e-5;
    nb_scope_end();
    if (!first || !second || !third) return 1;

    /* 2. use it: a 1-16-1 network fitting sin(3x). The data and parameters
     * belong to an outer scope; each step opens an inner one. */
    nb_scope_begin();
    nb_tensor *x = nb_reshape(nb_linspace(-1, 1, 64), NB_SHAPE(64, 1));
    nb_tensor *y = nb_sin(nb_mul_scalar(x, 3.0f));
    nb_tensor *params[4] = {
        nb_set_requires_grad(nb_normal(NULL, 0, 1.0f, NB_SHAPE(1, 16)), true),
        nb_set_requires_grad(nb_zeros(NB_SHAPE(16)), true),
        nb_set_requires_grad(nb_normal(NULL, 0, 0.25f, NB_SHAPE(16, 1)), true),
        nb_set_requires_grad(nb_zeros(NB_SHAPE(1)), true),
    };
    float first_loss = 0, loss_value = 0;
    for (int step = 0; step < 2000; step++) {
        nb_scope_begin(); /* everything the step makes is freed at its end */
        nb_tensor *h = swish(nb_add(nb_matmul(x, params[0]), params[1]));
        nb_tensor *pred = nb_add(nb_matmul(h, params[2]), params[3]);
        nb_tensor *loss = nb_mse_loss(pred, y, NB_REDUCE_MEAN);
        if (nb_backward(loss) != 0) {
            fprintf(stderr, "%s\n", nb_error());
            nb_scope_end(); /* the step's scope */
            nb_scope_end(); /* the program's */
            return 1;
        }
        loss_value = nb_item(loss);
        if (step == 0) first_loss = loss_value;
        for (int p = 0; p < 4; p++) { /* gradient descent, lr 0.1 */
            float *w = nb_data_mut(params[p]);
            const float *g = nb_data(nb_grad_of(params[p]));
            for (int64_t i = 0; i < nb_numel(params[p]); i++) w[i] -= 0.1f * g[i];
            nb_zero_grad(params[p]);
        }
        if (step % 500 == 0) printf("step %4d  loss %.5f\n", step, (double)loss_value);
        nb_scope_end();
    }
    printf("loss %.5f -> %.5f\n", (double)first_loss, (double)loss_value);

    nb_scope_end(); /* frees the data, the parameters and their gradients */
    return loss_value < first_loss / 5 ? 0 : 1;
}
