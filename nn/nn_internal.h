/* nn_internal.h — what the files of nn/ share and users do not see: the
 * model's access to Sequential and Dense internals, for shape checks and
 * the summary table. */
#ifndef NB_NN_INTERNAL_H
#define NB_NN_INTERNAL_H

#include "nb_nn.h"

/* nb_module_new, with messages naming who. */
nb_module *nb__module_new(const char *who, const nb_module_type *type, size_t size);
/* nb_module_parameters, with messages naming who. */
nb_tensor **nb__module_parameters(const char *who, nb_module *m, int *count);
/* nb_module_buffers, with messages naming who. */
nb_tensor **nb__module_buffers(const char *who, nb_module *m, int *count);
/* Frees m unless it belongs to a parent (which will free it); no message.
 * What a function that takes a module does with one it cannot keep. */
void nb__module_discard(nb_module *m);
/* module_debug.c: forward with m's hooks around it, and freeing them. */
nb_tensor *nb__module_forward_hooked(nb_module *m, nb_tensor *x);
void nb__module_free_hooks(nb_module *m);
/* Releases or frees the entries n.. of m. */
void nb__module_truncate(nb_module *m, int n);
/* An empty Sequential; nb_sequential_add with messages naming who. */
nb_module *nb__sequential_new(const char *who);
int nb__sequential_add(const char *who, nb_module *seq, nb_module *layer);
/* True for a module made by nb_sequential. */
bool nb__is_sequential(const nb_module *m);
/* Removes and returns the last layer of a Sequential without freeing it. */
nb_module *nb__sequential_pop(nb_module *seq);
/* True for a Dense layer, with its sizes (input_dim 0 until built). */
bool nb__is_dense(const nb_module *m, int64_t *units, int64_t *input_dim);

/* The function of the activation called name (Keras's names, as nb_dense
 * takes them); NULL and a message naming who when unknown. */
typedef nb_tensor *(*nb__activation_fn)(nb_tensor *x);
nb__activation_fn nb__activation_by_name(const char *who, const char *name);
/* The shape of one input sample a first layer declares (Dense's
 * input_dim, Conv2D's input_shape), so that a model knows its input
 * before the first fit: false when it declares none. */
bool nb__layer_input_shape(const nb_module *m, int *ndim, int64_t *shape);

/* The metric called name, given the compiled loss ("accuracy" depends on
 * it); *canonical is set to the name history and progress use. */
nb_metric_fn nb__metric_by_name(const char *name, nb_loss_fn loss, const char **canonical);

/* Whether x and y (both not NULL) have at least one axis and the same
 * number of rows; false with a message naming who and the shapes. */
bool nb__same_rows(const char *who, const nb_tensor *x, const nb_tensor *y);

/* The rows Keras keeps for training out of n under validation_split split
 * (model.c): fit's split and nb_dataset_split's are the same. */
int64_t nb__training_rows(int64_t n, float split);

/* What a checkpoint of the model holds beside its module (nn/io/checkpoint.c):
 * its optimizer, built first if compile named one (NULL when it has none),
 * and its count of epochs trained, which the checkpoint sets. 0, or -1
 * with a message naming who. */
int nb__model_checkpoint_state(const char *who, nb_model *model, nb_optimizer **opt, int64_t **epochs);

#endif
