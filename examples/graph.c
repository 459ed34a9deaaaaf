/* graph.c — the graph of the seed network, drawn.
 *
 * The network of examples/seed.c (Dense(10, relu, input 10) -> Dense(1),
 * mean squared error) runs forward on one batch of 10 rows, then backward
 * with retain_graph, so that the graph is still there to draw, now with
 * gradients in the parameters. The graph goes to a Graphviz file, with:
 *   - each op and its output shape, each leaf marked as a parameter (blue,
 *     named as the model names it, "0.weight", and boxed by layer), an
 *     input (green) or a constant (grey: the batch and its targets);
 *   - the values of tensors of at most 8 elements (the larger ones show
 *     their norm), and the gradients backward left in the parameters;
 *   - the way the gradient flows back, as red dashed arrows.
 * Render it with Graphviz (not a dependency of nabla):
 *
 *     ./graph graph.dot && dot -Tsvg graph.dot -o graph.svg
 *
 * examples/graph.svg is that picture.
 *
 *   usage: graph [file.dot]   (default graph.dot)
 */
#include <stdio.h>

#include "nabla.h"

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "graph.dot";
    nb_manual_seed(0);
    nb_scope_begin();

    /* one batch of the seed's data: y = x·w + 0.5 */
    nb_tensor *x = nb_set_name(nb_rand(NB_SHAPE(10, 10)), "x");
    nb_tensor *y = nb_set_name(nb_add_scalar(nb_matmul(x, nb_rand(NB_SHAPE(10, 1))), 0.5f), "y");

    nb_model *model = nb_model_sequential();
    nb_model_add(model, nb_dense(10, "relu", 10));
    nb_model_add(model, nb_dense(1, "linear", 0));
    nb_module *net = nb_model_module(model);

    nb_tensor *pred = nb_set_name(nb_module_forward(net, x), "prediction");
    nb_tensor *loss = nb_set_name(nb_mse_loss(pred, y, NB_REDUCE_MEAN), "loss");
    int status = 1;
    if (loss && nb_backward_ex(loss, NULL, &(nb_backward_opts){.retain_graph = true}) == 0) {
        FILE *f = fopen(path, "w");
        nb_export_opts opts = nb_export_defaults(); /* max_values 8 */
        opts.values = true;
        opts.grads = true;
        opts.grad_flow = true;
        if (!f) {
            fprintf(stderr, "graph: cannot write %s\n", path);
        } else {
            int rc = nb_module_export_dot(net, loss, f, &opts);
            if (fclose(f) == 0 && rc == 0) {
                printf("loss %.4f; wrote %s: render it with  dot -Tsvg %s -o graph.svg\n",
                       (double)nb_item(loss), path, path);
                status = 0;
            }
        }
    }
    if (status && nb_error()) fprintf(stderr, "graph: %s\n", nb_error());

    nb_model_free(model);
    nb_scope_end();
    return status;
}
