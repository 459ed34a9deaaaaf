/* new_op.c — step 4 of the tutorial: a new op with its backward, checked
 * with gradcheck.
 *
 *   logcosh(x) = log(cosh(x)),   d/dx logcosh(x) = tanh(x)
 *
 * (a smooth loss that is x^2/2 near 0 and |x| - log 2 far from it). The
 * forward is a plain loop over the values; the backward is written with
 * nabla's own differentiable ops, so that it can itself be differentiated.
 * The program checks the op to first and second order, then checks a copy
 * whose backward forgets to multiply by the incoming gradient, to show what
 * gradcheck reports when a backward is wrong.
 */
#include <math.h>
#include <stdio.h>

#include "nabla.h"

/* y = logcosh(x), any shape. Backward: dx = dy * tanh(x). */
static void logcosh_backward(nb_tensor *y, nb_tensor *gy, nb_tensor **gx) {
    gx[0] = nb_mul(gy, nb_tanh(nb_saved(y, 0)));
}
/* The mistake: the local derivative alone, without the chain rule's dy. */
static void logcosh_wrong_backward(nb_tensor *y, nb_tensor *gy, nb_tensor **gx) {
    (void)gy;
    gx[0] = nb_tanh(nb_saved(y, 0));
}
static const nb_op logcosh_op = {"logcosh", logcosh_backward};
static const nb_op logcosh_wrong_op = {"logcosh_wrong", logcosh_wrong_backward};

static nb_tensor *logcosh_with(nb_tensor *x, const nb_op *op) {
    if (!x) return NULL; /* NULL in, NULL out, no second message */
    nb_tensor *y = nb_empty_like(x);
    if (!y) return NULL;
    const float *px = nb_data(x);
    float *py = nb_data_mut(y);
    /* log cosh x = |x| + log(1 + e^(-2|x|)) - log 2: no overflow for large |x| */
    for (int64_t i = 0; i < nb_numel(x); i++) {
        float a = fabsf(px[i]);
        py[i] = a + log1pf(expf(-2.0f * a)) - 0.69314718f;
    }
    y = nb_record(y, op, 1, &x); /* y becomes a node whose input is x */
    nb_save(y, x);               /* the backward reads x */
    return y;
}

static nb_tensor *logcosh(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return logcosh_with(in[0], &logcosh_op);
}
static nb_tensor *logcosh_wrong(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return logcosh_with(in[0], &logcosh_wrong_op);
}

int main(void) {
    nb_manual_seed(0);
    nb_scope_begin();
    nb_tensor *x = nb_set_requires_grad(nb_uniform(NULL, -2, 2, NB_SHAPE(2, 3)), true);
    nb_print(x);

    /* the values, against the formula computed in double */
    const float *px = nb_data(x), *py = nb_data(logcosh(&x, NULL));
    double worst = 0;
    for (int i = 0; i < 6; i++) worst = fmax(worst, fabs(py[i] - log(cosh((double)px[i]))));
    printf("largest |logcosh(x) - log(cosh(x))| = %.1e\n", worst);

    nb_gradcheck_result r;
    nb_gradcheck(logcosh, NULL, 1, &x, NULL, &r);
    printf("%s\n", r.message);
    nb_gradgradcheck(logcosh, NULL, 1, &x, NULL, &r);
    printf("%s\n", r.message);

    /* quiet: gradcheck prints failures to stderr by itself; here we print them */
    nb_gradcheck(logcosh_wrong, NULL, 1, &x, &(nb_gradcheck_opts){.quiet = true}, &r);
    printf("%s\n", r.message);
    nb_scope_end();
    return 0;
}
