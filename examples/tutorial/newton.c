/* newton.c — step 5 of the tutorial: derivatives of derivatives.
 *
 * First f(x) = x^3 at x = 2: backward with create_graph returns f'(x) as a
 * graph, which is differentiated again for f'' and once more for f'''.
 * Then Newton's method on
 *
 *   f(x, y) = e^x - x + (y - x)^2        (minimum at (0, 0))
 *
 * without ever forming the Hessian H: each step solves H d = -g by conjugate
 * gradients, which need only products H v, and H v is the gradient of the
 * scalar g . v (a second backward through the graph of g).
 */
#include <math.h>
#include <stdio.h>

#include "nabla.h"

static nb_tensor *grad_of(nb_tensor *out, nb_tensor *x, bool create_graph) {
    nb_tensor *g = NULL;
    nb_grad(1, &out, NULL, 1, &x, &g,
            &(nb_grad_opts){.create_graph = create_graph, .retain_graph = true});
    return g; /* NULL (with a message) on failure */
}

static int powers(void) {
    nb_scope_begin();
    nb_tensor *x = nb_set_requires_grad(nb_scalar(2), true);
    nb_tensor *f = nb_pow_scalar(x, 3);
    nb_tensor *d1 = grad_of(f, x, true);  /* 3x^2, recorded as a graph */
    nb_tensor *d2 = grad_of(d1, x, true); /* 6x */
    nb_tensor *d3 = grad_of(d2, x, true); /* 6 */
    if (!d3) {
        fprintf(stderr, "newton: %s\n", nb_error());
        nb_scope_end();
        return 1;
    }
    printf("f = x^3 at x = 2: f = %g, f' = %g, f'' = %g, f''' = %g\n", (double)nb_item(f),
           (double)nb_item(d1), (double)nb_item(d2), (double)nb_item(d3));
    printf("f' is a graph (made by op \"%s\"), so it can be differentiated\n",
           nb_op_of(d1)->name);
    nb_scope_end();
    return 0;
}

/* f(w) for w = (x, y), as a one-element tensor */
static nb_tensor *f_of(nb_tensor *w) {
    nb_tensor *x = nb_slice(w, 0, 0, 1, 1), *y = nb_slice(w, 0, 1, 2, 1);
    nb_tensor *f = nb_add(nb_sub(nb_exp(x), x), nb_square(nb_sub(y, x)));
    return nb_sum(f, NB_ALL, false);
}

/* H v, from the graph of g = df/dw: the gradient of sum(g * v). */
static void hessian_times(nb_tensor *g, nb_tensor *w, const double v[2], double out[2]) {
    nb_scope_begin();
    nb_tensor *gv = nb_sum(nb_mul(g, nb_from_array(NB_SHAPE(2), (float[]){(float)v[0],
                                                                        (float)v[1]})),
                           NB_ALL, false);
    nb_tensor *hv = grad_of(gv, w, false);
    out[0] = hv ? nb_data(hv)[0] : NAN;
    out[1] = hv ? nb_data(hv)[1] : NAN;
    nb_scope_end();
}

/* Solves H d = -g by conjugate gradients: exact after 2 iterations in 2-D. */
static void newton_direction(nb_tensor *g, nb_tensor *w, double d[2]) {
    double r[2] = {-nb_data(g)[0], -nb_data(g)[1]}, p[2] = {r[0], r[1]}, hp[2];
    double rr = r[0] * r[0] + r[1] * r[1];
    d[0] = d[1] = 0;
    for (int it = 0; it < 2 && rr > 0; it++) {
        hessian_times(g, w, p, hp);
        double alpha = rr / (p[0] * hp[0] + p[1] * hp[1]);
        for (int i = 0; i < 2; i++) {
            d[i] += alpha * p[i];
            r[i] -= alpha * hp[i];
        }
        double rr_new = r[0] * r[0] + r[1] * r[1];
        for (int i = 0; i < 2; i++) p[i] = r[i] + rr_new / rr * p[i];
        rr = rr_new;
    }
}

int main(void) {
    if (powers() != 0) return 1;

    printf("\nNewton on f(x, y) = e^x - x + (y - x)^2 from (1, -1)\n");
    printf("step         x            y            f        |grad f|\n");
    nb_tensor *w = nb_set_requires_grad(nb_from_array(NB_SHAPE(2), (float[]){1, -1}), true);
    for (int step = 0; step <= 4; step++) {
        nb_scope_begin();
        nb_tensor *f = f_of(w);
        nb_tensor *g = grad_of(f, w, true);
        if (!g) {
            fprintf(stderr, "newton: %s\n", nb_error());
            nb_scope_end();
            nb_release(w);
            return 1;
        }
        const float *pw = nb_data(w), *pg = nb_data(g);
        printf("%4d  %11.4e  %11.4e  %11.4e  %11.4e\n", step, (double)pw[0], (double)pw[1],
               (double)nb_item(f), hypot(pg[0], pg[1]));
        double d[2];
        newton_direction(g, w, d);
        float *mw = nb_data_mut(w);
        mw[0] += (float)d[0];
        mw[1] += (float)d[1];
        nb_scope_end();
    }
    nb_release(w);
    return 0;
}
