/* broadcasting.c — step 2 of the tutorial: a dense layer over a batch,
 *
 *   Y = X W + b,   X [3,2] (three samples),  W [2,2],  b [2]
 *
 * where the bias b is broadcast: the same b is added to every row. The
 * program takes the loss L = sum(G * Y) for a fixed G, so that dL/dY = G
 * exactly, and prints what backward gives for W and b: dL/dW = X^T G, and
 * dL/db = the column sums of G, because each row used the same b.
 */
#include <stdio.h>

#include "nabla.h"

static void print_matrix(const char *name, const nb_tensor *t) {
    int64_t rows = nb_ndim(t) == 2 ? nb_dim(t, 0) : 1, cols = nb_dim(t, -1);
    const float *d = nb_data(t);
    for (int64_t i = 0; i < rows; i++) {
        printf("%-8s", i == 0 ? name : "");
        for (int64_t j = 0; j < cols; j++) printf(" %6g", (double)d[i * cols + j]);
        printf("\n");
    }
}

int main(void) {
    nb_scope_begin();
    nb_tensor *X = nb_from_array(NB_SHAPE(3, 2), (float[]){1, 2, 3, 4, 5, 6});
    nb_tensor *W = nb_set_requires_grad(
        nb_from_array(NB_SHAPE(2, 2), (float[]){0.5f, -1, 0.25f, 0.5f}), true);
    nb_tensor *b = nb_set_requires_grad(nb_from_array(NB_SHAPE(2), (float[]){0.1f, -0.2f}), true);
    nb_tensor *G = nb_from_array(NB_SHAPE(3, 2), (float[]){1, -1, 2, 0.5f, 0, 3});

    nb_tensor *Y = nb_add(nb_matmul(X, W), b); /* [3,2] + [2]: b is added to each row */
    nb_tensor *L = nb_sum(nb_mul(G, Y), NB_ALL, false);
    if (nb_backward(L) != 0) {
        fprintf(stderr, "broadcasting: %s\n", nb_error());
        return 1;
    }
    print_matrix("Y", Y);
    print_matrix("dL/dW", nb_grad_of(W));
    print_matrix("X^T G", nb_matmul(nb_transpose(X, 0, 1), G));
    print_matrix("dL/db", nb_grad_of(b));
    /* the backward of a broadcast is nb_sum_to: it sums G down to b's shape */
    print_matrix("sum_to", nb_sum_to(G, NB_SHAPE(2)));
    nb_scope_end();
    return 0;
}
