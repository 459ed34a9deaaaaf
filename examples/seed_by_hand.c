/* seed_by_hand.c — one step of gradient descent on the seed network
 * (examples/seed.c), every number printed, so that the backpropagation
 * formulas can be checked one value at a time.
 *
 * The network is Dense(10, relu, input 10) then Dense(1, linear), built and
 * initialised as examples/seed.c builds it, on the first 4 rows of seed.c's
 * data. For a batch of N rows x_n with targets y_n:
 *
 *   h = X W1 + b1        [N,10]  hidden pre-activations
 *   a = relu(h)          [N,10]
 *   p = a W2 + b2        [N,1]   predictions
 *   L = (1/N) sum_n (p_n - y_n)^2
 *
 * and backward gives, with dp = (2/N)(p - y),
 *
 *   dL/dW2 = a^T dp,   dL/db2 = sum_n dp_n,
 *   dh = (dp W2^T) * [h > 0],   dL/dW1 = X^T dh,   dL/db1 = sum_n dh_n.
 *
 * The program prints the forward values, the loss, and for every
 * parameter three numbers side by side: the gradient from nabla's backward,
 * the formulas above evaluated in double precision by plain loops
 * (by_formula), and the central finite difference of the loss, also in
 * double (f_double); then the difference between backward and the finite
 * difference, and the loss after one SGD step with Keras's learning rate,
 * 0.01. The two double computations use nothing of nabla but the numbers.
 */
#include <math.h>
#include <stdio.h>

#include "nabla.h"

enum { N = 4, IN = 10, HID = 10 };

/* The loss of the batch in double, from the parameters as doubles:
 * w[0] = W1 [IN,HID], w[1] = b1 [HID], w[2] = W2 [HID,1], w[3] = b2 [1]. */
static double f_double(const float *x, const float *y, double *const w[4]) {
    double loss = 0;
    for (int n = 0; n < N; n++) {
        double p = w[3][0];
        for (int j = 0; j < HID; j++) {
            double h = w[1][j];
            for (int i = 0; i < IN; i++) h += x[n * IN + i] * w[0][i * HID + j];
            p += (h > 0 ? h : 0) * w[2][j];
        }
        loss += (p - y[n]) * (p - y[n]);
    }
    return loss / N;
}

/* The gradients by the formulas above, into g (laid out as w). */
static void by_formula(const float *x, const float *y, double *const w[4], double *const g[4]) {
    for (int k = 0, size[4] = {IN * HID, HID, HID, 1}; k < 4; k++)
        for (int i = 0; i < size[k]; i++) g[k][i] = 0;
    for (int n = 0; n < N; n++) {
        double h[HID], p = w[3][0];
        for (int j = 0; j < HID; j++) {
            h[j] = w[1][j];
            for (int i = 0; i < IN; i++) h[j] += x[n * IN + i] * w[0][i * HID + j];
            p += (h[j] > 0 ? h[j] : 0) * w[2][j];
        }
        double dp = 2.0 / N * (p - y[n]);
        g[3][0] += dp;                                /* dL/db2 = sum_n dp_n */
        for (int j = 0; j < HID; j++) {
            g[2][j] += (h[j] > 0 ? h[j] : 0) * dp;    /* dL/dW2 = a^T dp */
            double dh = h[j] > 0 ? dp * w[2][j] : 0;  /* dh = (dp W2^T) * [h > 0] */
            g[1][j] += dh;                            /* dL/db1 = sum_n dh_n */
            for (int i = 0; i < IN; i++) g[0][i * HID + j] += x[n * IN + i] * dh; /* X^T dh */
        }
    }
}

static void print_rows(const char *title, const nb_tensor *t) {
    int64_t cols = nb_dim(t, 1);
    const float *d = nb_data(t);
    printf("%s\n", title);
    for (int64_t n = 0; n < nb_dim(t, 0); n++) {
        printf("  ");
        for (int64_t j = 0; j < cols; j++) printf(" %7.4f", (double)d[n * cols + j]);
        printf("\n");
    }
}

int main(void) {
    nb_manual_seed(0);
    nb_scope_begin();
    /* seed.c's data and network, in seed.c's order (same random numbers) */
    nb_tensor *X_all = nb_rand(NB_SHAPE(100, 10));
    nb_tensor *y_all = nb_add_scalar(nb_matmul(X_all, nb_rand(NB_SHAPE(10, 1))), 0.5f);
    nb_module *net = nb_sequential(2, (nb_module *[]){nb_dense(HID, "relu", IN),
                                                      nb_dense(1, "linear", HID)});
    int nparams;
    nb_tensor **params = nb_module_parameters(net, &nparams);
    if (!y_all || !net || nparams != 4) {
        fprintf(stderr, "seed_by_hand: %s\n", nb_error() ? nb_error() : "unexpected network");
        return 1;
    }
    nb_tensor *X = nb_slice(X_all, 0, 0, N, 1), *y = nb_slice(y_all, 0, 0, N, 1);
    nb_tensor *W1 = params[0], *b1 = params[1], *W2 = params[2], *b2 = params[3];

    /* the forward pass, written out with the ops a Dense layer uses */
    nb_tensor *h = nb_add(nb_matmul(X, W1), b1);
    nb_tensor *a = nb_relu(h);
    nb_tensor *p = nb_add(nb_matmul(a, W2), b2);
    nb_tensor *loss = nb_mse_loss(p, y, NB_REDUCE_MEAN);
    nb_tensor *p_module = nb_module_forward(net, X); /* the layers' own forward */
    if (!loss || !p_module || nb_backward(loss) != 0) {
        fprintf(stderr, "seed_by_hand: %s\n", nb_error());
        return 1;
    }

    printf("batch: the first %d rows of seed.c's X and y\n", N);
    print_rows("X", X);
    print_rows("h = X W1 + b1 (hidden pre-activations)", h);
    print_rows("a = relu(h)", a);
    printf("p = a W2 + b2 (prediction) and y (target)\n");
    double same = 0;
    for (int n = 0; n < N; n++) {
        printf("   p = %8.5f   y = %8.5f   p - y = %8.5f\n", (double)nb_data(p)[n],
               (double)nb_data(y)[n], (double)(nb_data(p)[n] - nb_data(y)[n]));
        same = fmax(same, fabs(nb_data(p)[n] - nb_data(p_module)[n]));
    }
    printf("(the Sequential's own forward gives the same p: largest difference %g)\n", same);
    printf("L = mean((p - y)^2) = %.6f\n\n", (double)nb_item(loss));

    /* the parameters in double, perturbed one at a time */
    double store[IN * HID + HID + HID + 1], *w[4];
    double gstore[IN * HID + HID + HID + 1], *gf[4];
    for (int k = 0, off = 0; k < 4; off += (int)nb_numel(params[k]), k++) {
        w[k] = store + off;
        gf[k] = gstore + off;
        for (int64_t i = 0; i < nb_numel(params[k]); i++) w[k][i] = nb_data(params[k])[i];
    }
    const float *px = nb_data(X), *py = nb_data(y);
    by_formula(px, py, w, gf);
    printf("%-15s %11s %11s %12s %11s\n", "parameter", "backward", "formula", "central diff",
           "difference");
    double worst = 0, worst_formula = 0;
    for (int k = 0; k < 4; k++) {
        const float *g = nb_data(nb_grad_of(params[k]));
        int64_t cols = nb_ndim(params[k]) == 2 ? nb_dim(params[k], 1) : 0;
        for (int64_t i = 0; i < nb_numel(params[k]); i++) {
            /* in double, a step of 1e-6 leaves errors near 1e-9 (truncation
             * ~step^2, rounding ~1e-16/step); no h[n,j] is within 1e-6 of the
             * ReLU's kink here, else the difference would straddle it */
            const double step = 1e-6, keep = w[k][i];
            w[k][i] = keep + step;
            double up = f_double(px, py, w);
            w[k][i] = keep - step;
            double down = f_double(px, py, w);
            w[k][i] = keep;
            double numeric = (up - down) / (2 * step);
            char label[64];
            if (cols)
                snprintf(label, sizeof label, "%s[%lld,%lld]", nb_module_parameter_name(net, k),
                         (long long)(i / cols), (long long)(i % cols));
            else
                snprintf(label, sizeof label, "%s[%lld]", nb_module_parameter_name(net, k),
                         (long long)i);
            printf("%-15s %11.7f %11.7f %12.7f %11.1e\n", label, (double)g[i], gf[k][i], numeric,
                   g[i] - numeric);
            worst = fmax(worst, fabs(g[i] - numeric));
            worst_formula = fmax(worst_formula, fabs(gf[k][i] - numeric));
        }
    }
    printf("largest difference between backward and central differences: %.1e\n", worst);
    printf("largest difference between the formulas and central differences: %.1e\n\n",
           worst_formula);

    /* the step: w <- w - 0.01 dL/dw, as nb_sgd does with its defaults */
    nb_optimizer *opt = nb_sgd(nparams, params, NULL);
    nb_optimizer_step(opt);
    nb_tensor *after = nb_mse_loss(nb_module_forward(net, X), y, NB_REDUCE_MEAN);
    printf("after one SGD step (lr 0.01): L = %.6f (was %.6f)\n", (double)nb_item(after),
           (double)nb_item(loss));
    int status = worst < 1e-4 && worst_formula < 1e-6 && nb_item(after) < nb_item(loss) ? 0 : 1;

    nb_optimizer_free(opt);
    nb_module_free(net);
    nb_scope_end();
    return status;
}
