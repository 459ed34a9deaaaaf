/* seed.c — the program nabla was founded on, line for line in C.
 *
 *   X = np.random.rand(100, 10)
 *   y = np.dot(X, np.random.rand(10, 1)) + 0.5
 *   model = Sequential()
 *   model.add(Dense(10, input_dim=10, activation='relu'))
 *   model.add(Dense(1, activation='linear'))
 *   model.compile(optimizer='sgd', loss='mean_squared_error')
 *   model.fit(X, y, epochs=100, batch_size=10)
 *
 * Everything is created inside one scope, so the single nb_scope_end at the
 * bottom frees every tensor; the model frees its layers and optimizer.
 * The run is deterministic: the same seed prints the same losses.
 */
#include <stdio.h>

#include "nabla.h"

int main(void) {
    nb_manual_seed(0);
    nb_scope_begin();

    nb_tensor *X = nb_rand(NB_SHAPE(100, 10));
    nb_tensor *y = nb_add_scalar(nb_matmul(X, nb_rand(NB_SHAPE(10, 1))), 0.5f);

    nb_model *model = nb_model_sequential();
    nb_model_add(model, nb_dense(10, "relu", 10));
    nb_model_add(model, nb_dense(1, "linear", 0));
    nb_model_compile(model, "sgd", "mean_squared_error", NULL);

    nb_fit_opts fit = nb_fit_defaults();
    fit.epochs = 100;
    fit.batch_size = 10;
    nb_history *history = nb_model_fit(model, X, y, &fit);

    if (!history) { /* every failure above ends here, with its message */
        fprintf(stderr, "seed: %s\n", nb_error());
        return 1;
    }
    nb_model_summary(model, stdout);
    const float *loss = nb_history_get(history, "loss");
    int epochs = nb_history_epochs(history);
    printf("loss: first epoch %.4f, last epoch %.4f (%.0fx lower)\n", (double)loss[0],
           (double)loss[epochs - 1], (double)(loss[0] / loss[epochs - 1]));
    int status = loss[epochs - 1] * 10 <= loss[0] ? 0 : 1;

    nb_history_free(history);
    nb_model_free(model);
    nb_scope_end();
    return status;
}
