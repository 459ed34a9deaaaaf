/* higher_order.c — derivatives of derivatives, by backward with create_graph.
 *
 * 1. The first four derivatives of tanh at x = 0.5, each obtained by
 *    differentiating the graph of the previous one, against the closed
 *    forms (t = tanh x, and d t/dx = 1 - t^2 applied each time):
 *
 *      tanh'    = 1 - t^2
 *      tanh''   = -2t (1 - t^2)              = -2t + 2t^3
 *      tanh'''  = (-2 + 6t^2)(1 - t^2)       = -2 + 8t^2 - 6t^4
 *      tanh'''' = (16t - 24t^3)(1 - t^2)     = 16t - 40t^3 + 24t^5
 *
 *    Each closed form is itself checked by central differences of the one
 *    before it, in double precision.
 *
 * 2. Newton's method on the Rosenbrock function
 *
 *      f(x, y) = (1 - x)^2 + 100 (y - x^2)^2
 *
 *    from (-1.2, 1), with the gradient and the full 2x2 Hessian from nabla
 *    (the Hessian row by row: the gradient of each component of the
 *    gradient), compared at every iterate with the closed form
 *
 *      H = [ 2 - 400 (y - x^2) + 800 x^2    -400 x ]
 *          [ -400 x                           200  ].
 */
#include <math.h>
#include <stdio.h>

#include "nabla.h"

/* The closed forms above, as polynomials in t = tanh x; order 0 is tanh. */
static double tanh_derivative(int order, double x) {
    double t = tanh(x);
    switch (order) {
    case 0: return t;
    case 1: return 1 - t * t;
    case 2: return -2 * t + 2 * t * t * t;
    case 3: return -2 + 8 * t * t - 6 * t * t * t * t;
    default: return 16 * t - 40 * t * t * t + 24 * t * t * t * t * t;
    }
}

static int tanh_derivatives(double x0) {
    nb_scope_begin();
    nb_tensor *x = nb_set_requires_grad(nb_scalar((float)x0), true);
    nb_tensor *d = nb_tanh(x);
    printf("derivatives of tanh at x = %g\n", x0);
    printf("order        nabla   closed form    difference   central diff of order-1\n");
    for (int order = 1; order <= 4; order++) {
        /* create_graph: the derivative is recorded, so it can be differentiated */
        nb_tensor *next;
        if (nb_grad(1, &d, NULL, 1, &x, &next, &(nb_grad_opts){.create_graph = true}) != 0) {
            fprintf(stderr, "higher_order: %s\n", nb_error());
            nb_scope_end();
            return 1;
        }
        d = next;
        double exact = tanh_derivative(order, x0), h = 1e-4;
        double numeric = (tanh_derivative(order - 1, x0 + h) - tanh_derivative(order - 1, x0 - h)) /
                         (2 * h);
        printf("%5d  %11.6f  %12.6f  %12.1e  %12.6f\n", order, (double)nb_item(d), exact,
               nb_item(d) - exact, numeric);
    }
    nb_scope_end();
    return 0;
}

/* f at w = (x, y), a one-element tensor */
static nb_tensor *rosenbrock(nb_tensor *w) {
    nb_tensor *x = nb_slice(w, 0, 0, 1, 1), *y = nb_slice(w, 0, 1, 2, 1);
    nb_tensor *f = nb_add(nb_square(nb_rsub_scalar(x, 1)),
                          nb_mul_scalar(nb_square(nb_sub(y, nb_square(x))), 100));
    return nb_sum(f, NB_ALL, false);
}

static int newton_rosenbrock(void) {
    printf("\nNewton's method on the Rosenbrock function from (-1.2, 1)\n");
    printf("step          x           y            f   H from nabla            "
           "largest |H - closed form|\n");
    nb_tensor *w = nb_set_requires_grad(nb_from_array(NB_SHAPE(2), (float[]){-1.2f, 1}), true);
    int status = 1;
    for (int step = 0; step <= 8; step++) {
        nb_scope_begin();
        nb_tensor *f = rosenbrock(w), *g, *rows[2];
        nb_grad_opts keep = {.create_graph = true, .retain_graph = true};
        int rc = nb_grad(1, &f, NULL, 1, &w, &g, &keep);
        for (int i = 0; i < 2 && rc == 0; i++) {
            nb_tensor *gi = nb_sum(nb_slice(g, 0, i, i + 1, 1), NB_ALL, false);
            rc = nb_grad(1, &gi, NULL, 1, &w, &rows[i], &(nb_grad_opts){.retain_graph = true});
        }
        if (rc != 0) {
            fprintf(stderr, "higher_order: %s\n", nb_error());
            nb_scope_end();
            break;
        }
        const float *pw = nb_data(w), *pg = nb_data(g);
        double x = pw[0], y = pw[1];
        double H[2][2] = {{nb_data(rows[0])[0], nb_data(rows[0])[1]},
                          {nb_data(rows[1])[0], nb_data(rows[1])[1]}};
        double exact[2][2] = {{2 - 400 * (y - x * x) + 800 * x * x, -400 * x}, {-400 * x, 200}};
        double diff = 0;
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++) diff = fmax(diff, fabs(H[i][j] - exact[i][j]));
        printf("%4d  %9.6f   %9.6f   %10.3e   [%8.2f %8.2f; %8.2f %8.2f]   %.1e\n", step, x, y,
               (double)nb_item(f), H[0][0], H[0][1], H[1][0], H[1][1], diff);
        /* the Newton step: solve H d = -g (2x2, by Cramer's rule) */
        double det = H[0][0] * H[1][1] - H[0][1] * H[1][0];
        double dx = (-pg[0] * H[1][1] + pg[1] * H[0][1]) / det;
        double dy = (-pg[1] * H[0][0] + pg[0] * H[1][0]) / det;
        float *mw = nb_data_mut(w);
        mw[0] = (float)(x + dx);
        mw[1] = (float)(y + dy);
        nb_scope_end();
        if (fabs(x - 1) < 1e-6 && fabs(y - 1) < 1e-6) {
            status = 0; /* at the minimum to float precision */
            break;
        }
    }
    nb_release(w);
    return status;
}

int main(void) {
    if (tanh_derivatives(0.5) != 0) return 1;
    return newton_rosenbrock();
}
