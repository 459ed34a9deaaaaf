/* seed_loop.c — examples/seed.c without nb_model_fit: the same network,
 * data and optimizer, trained by the explicit loop that fit runs for you
 * (forward, loss, backward, step, zero_grad), one scope per step. The two
 * programs print the same losses: fit adds only bookkeeping.
 */
#include <stdio.h>

#include "nabla.h"

int main(void) {
    nb_manual_seed(0);
    nb_scope_begin();
    nb_tensor *X = nb_rand(NB_SHAPE(100, 10));
    nb_tensor *y = nb_add_scalar(nb_matmul(X, nb_rand(NB_SHAPE(10, 1))), 0.5f);

    nb_module *net = nb_sequential(2, (nb_module *[]){nb_dense(10, "relu", 10),
                                                      nb_dense(1, "linear", 10)});
    int nparams;
    nb_tensor **params = nb_module_parameters(net, &nparams);
    nb_optimizer *opt = nb_sgd(nparams, params, NULL); /* lr 0.01, as Keras */

    int64_t order[100];
    float first = 0, last = 0;
    for (int epoch = 0; epoch < 100; epoch++) {
        nb_randperm(NULL, 100, order); /* shuffle, as fit does */
        double epoch_loss = 0;
        for (int b = 0; b < 10; b++) {
            nb_scope_begin(); /* everything this step creates dies at its end */
            nb_tensor *idx = nb_empty(NB_SHAPE(10));
            for (int i = 0; i < 10; i++) nb_data_mut(idx)[i] = (float)order[10 * b + i];
            nb_tensor *pred = nb_module_forward(net, nb_index_select(X, 0, idx));
            nb_tensor *loss = nb_mse_loss(pred, nb_index_select(y, 0, idx), NB_REDUCE_MEAN);
            if (nb_backward(loss) != 0) { /* also catches any error above */
                fprintf(stderr, "seed_loop: %s\n", nb_error());
                return 1;
            }
            nb_optimizer_step(opt);
            nb_optimizer_zero_grad(opt);
            epoch_loss += nb_item(loss) / 10;
            nb_scope_end();
        }
        if (epoch == 0) first = (float)epoch_loss;
        last = (float)epoch_loss;
        if (epoch % 20 == 19) printf("epoch %3d  loss %.4f\n", epoch + 1, epoch_loss);
    }
    printf("loss: first epoch %.4f, last epoch %.4f\n", (double)first, (double)last);

    nb_optimizer_free(opt);
    nb_module_free(net);
    nb_scope_end();
    return last * 10 <= first ? 0 : 1;
}
