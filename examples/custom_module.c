/* custom_module.c — a layer the user defines, used like a built-in one.
 *
 * A module is a struct that starts with nb_module, plus a type naming its
 * forward. This file writes a residual block, x + fc2(relu(fc1 x)), exactly
 * as the comment in nb_nn.h shows: its two Dense layers are registered as
 * children, so the generic module code finds their parameters (named
 * "0.fc1.weight" and so on, as PyTorch names them), switches them between
 * train and eval mode and frees them with the block. Two blocks and a Dense
 * head go into a Sequential, the Sequential into a model, and the model is
 * trained end to end on a small nonlinear regression,
 *
 *     y = sin(2 x0) + x1 x2 - 0.5 x3 + 0.25 x4^2,   x uniform in [-1, 1]^8,
 *
 * gradients flowing through both the skip connections and the blocks. The
 * program prints the parameter names and the falling loss, and succeeds when
 * the last epoch's loss is at most a tenth of the first's.
 */
#include <math.h>
#include <stdio.h>

#include "nabla.h"

/* ---- the residual block: x (N, dim) -> x + fc2(relu(fc1 x)) (N, dim) ---------- */

typedef struct { nb_module base; nb_module *fc1, *fc2; } residual;

static nb_tensor *residual_forward(nb_module *m, nb_tensor *x) {
    residual *r = (residual *)m;
    nb_tensor *h = nb_module_forward(r->fc1, x);
    return nb_add(x, nb_module_forward(r->fc2, h));
}
static const nb_module_type residual_type = {"Residual", residual_forward, NULL};

nb_module *residual_new(int64_t dim) {
    residual *r = (residual *)nb_module_new(&residual_type, sizeof *r);
    if (!r) return NULL;
    r->fc1 = nb_module_add_child(&r->base, "fc1", nb_dense(dim, "relu", dim));
    r->fc2 = nb_module_add_child(&r->base, "fc2", nb_dense(dim, "linear", dim));
    return nb_module_ok(&r->base); // NULL (and freed) if a child failed
}

/* ---- the data and the training -------------------------------------------------- */

#define N 256
#define D 8

int main(void) {
    nb_manual_seed(0);
    nb_scope_begin();

    nb_tensor *x = nb_uniform(NULL, -1, 1, NB_SHAPE(N, D));
    nb_tensor *y = nb_empty(NB_SHAPE(N, 1));
    const float *px = nb_data(x);
    float *py = nb_data_mut(y);
    for (int i = 0; i < N; i++) {
        const float *r = px + i * D;
        py[i] = sinf(2 * r[0]) + r[1] * r[2] - 0.5f * r[3] + 0.25f * r[4] * r[4];
    }

    /* nb_sequential takes the layers; if one failed to build, it frees the
     * others and returns NULL, which nb_model_from_module passes through. */
    nb_module *layers[] = {residual_new(D), residual_new(D), nb_dense(1, "linear", D)};
    nb_model *model = nb_model_from_module(nb_sequential(3, layers));
    nb_model_compile(model, "adam", "mse", NULL);
    nb_fit_opts fit = nb_fit_defaults();
    fit.epochs = 100;
    fit.batch_size = 32;
    fit.verbose = 0;
    nb_history *history = nb_model_fit(model, x, y, &fit);

    if (!history) { /* a failure anywhere above ends here, with its message */
        fprintf(stderr, "custom_module: %s\n", nb_error());
        nb_model_free(model);
        nb_scope_end();
        return 1;
    }
    nb_module *net = nb_model_module(model);
    int nparams = 0;
    nb_tensor **params = nb_module_parameters(net, &nparams);
    printf("%d parameter tensors, %lld weights:\n", nparams, (long long)nb_module_num_weights(net));
    for (int i = 0; i < nparams; i++) {
        char shape[32];
        printf("  %-14s %s\n", nb_module_parameter_name(net, i),
               nb_shape_str(nb_ndim(params[i]), nb_shape(params[i]), shape, sizeof shape));
    }

    const float *loss = nb_history_get(history, "loss");
    int epochs = nb_history_epochs(history);
    printf("\n");
    for (int e = 0; e < epochs; e += 20) printf("epoch %3d  mse %.5f\n", e + 1, (double)loss[e]);
    printf("epoch %3d  mse %.5f\n", epochs, (double)loss[epochs - 1]);
    int status = loss[epochs - 1] * 10 <= loss[0] ? 0 : 1;

    nb_history_free(history);
    nb_model_free(model);
    nb_scope_end();
    return status;
}
