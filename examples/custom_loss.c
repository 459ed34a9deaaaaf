/* custom_loss.c — a loss written by the user from ops, plugged into fit.
 *
 * Mean squared error fits the conditional mean. To predict a quantile
 * instead, say "a value the target stays below 90% of the time", train on
 * the quantile (pinball) loss
 *
 *     L = mean(max(q (y - p), (q - 1)(y - p))),   q = 0.9,
 *
 * which charges an under-prediction q per unit and an over-prediction only
 * 1 - q: the minimum sits where a fraction q of the targets lies below the
 * prediction. Written with nb_sub, nb_mul_scalar, nb_maximum and nb_mean,
 * its gradient comes from theirs; nb_model_set_loss hands it to the model
 * in place of a Keras name. The data is y = 2x + 1 + noise, noise normal
 * with std 0.5, so the true 90% line is y = 2x + 1 + 1.2816 * 0.5. The
 * program succeeds when the fitted line has between 80% and 97% of the
 * training targets below it.
 */
#include <stdio.h>

#include "nabla.h"

#define Q 0.9f

/* pred, target (N, 1) -> scalar */
static nb_tensor *pinball_loss(nb_tensor *pred, nb_tensor *target) {
    nb_tensor *err = nb_sub(target, pred); /* > 0: the prediction is too low */
    return nb_mean(nb_maximum(nb_mul_scalar(err, Q), nb_mul_scalar(err, Q - 1.0f)), NB_ALL, false);
}

int main(void) {
    nb_manual_seed(0);
    nb_scope_begin();

    const int64_t n = 500;
    nb_tensor *x = nb_uniform(NULL, -1, 1, NB_SHAPE(n, 1));
    nb_tensor *noise = nb_normal(NULL, 0, 0.5f, NB_SHAPE(n, 1));
    nb_tensor *y = nb_add(nb_add_scalar(nb_mul_scalar(x, 2.0f), 1.0f), noise);

    nb_model *model = nb_model_sequential();
    nb_model_add(model, nb_dense(1, "linear", 1));
    nb_model_set_loss(model, "pinball_0.9", pinball_loss);
    int nparams = 0;
    nb_tensor **params = nb_model_parameters(model, &nparams);
    nb_adam_opts adam = nb_adam_defaults();
    adam.lr = 0.02f;
    nb_model_set_optimizer(model, nb_adam(nparams, params, &adam));

    nb_fit_opts fit = nb_fit_defaults();
    fit.epochs = 100;
    fit.batch_size = 50;
    fit.verbose = 0;
    nb_history *history = nb_model_fit(model, x, y, &fit);
    nb_tensor *pred = history ? nb_model_predict(model, x, 0) : NULL;

    if (!pred) { /* a failure anywhere above ends here, with its message */
        fprintf(stderr, "custom_loss: %s\n", nb_error());
        nb_history_free(history);
        nb_model_free(model);
        nb_scope_end();
        return 1;
    }
    const float *loss = nb_history_get(history, "loss");
    int epochs = nb_history_epochs(history);
    for (int e = 0; e < epochs; e += 20) printf("epoch %3d  pinball loss %.4f\n", e + 1, (double)loss[e]);
    printf("epoch %3d  pinball loss %.4f\n", epochs, (double)loss[epochs - 1]);

    /* the Dense kernel is [1, 1] and its bias [1]: the line's slope and intercept */
    printf("\nfitted line: y = %.3f x + %.3f (true 90%% line: y = 2.000 x + %.3f)\n",
           (double)nb_data(params[0])[0], (double)nb_data(params[1])[0], 1.0 + 1.2816 * 0.5);
    int64_t below = 0;
    for (int64_t i = 0; i < n; i++) below += nb_data(y)[i] < nb_data(pred)[i];
    double fraction = (double)below / (double)n;
    printf("targets below the prediction: %lld of %lld (%.1f%%, aiming at %.0f%%)\n", (long long)below,
           (long long)n, 100 * fraction, 100 * (double)Q);

    nb_history_free(history);
    nb_model_free(model);
    nb_scope_end();
    return fraction >= 0.80 && fraction <= 0.97 ? 0 : 1;
}
