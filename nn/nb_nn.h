/* nb_nn.h — neural-network building blocks on top of the ops: modules and
 * layers, initialisers, and a Keras-style model (compile, fit, evaluate,
 * predict, summary).
 *
 * OWNERSHIP in this layer: a module owns its parameters, its buffers and
 * its child modules, and frees them in nb_module_free; a model owns its layers, its
 * optimizer and its history entries, and frees them in nb_model_free.
 * A module has at most one parent: a module already added somewhere is
 * refused by every function that adopts one (nb_module_add_child,
 * nb_sequential, nb_sequential_add, nb_model_add, nb_model_from_module)
 * and stays where it was added first.
 * Parameters are kept tensors (they survive every scope). Tensors returned by
 * forward or predict follow the rule of nb_autograd.h: they belong to the
 * innermost open scope.
 *
 * ERRORS: constructors return NULL and functions return -1 (or NULL) with a
 * message naming the function, the layer and the shapes; a NULL layer or
 * model passes through without a second message. A constructor that fails
 * (out of memory included) returns NULL having freed what it made: never
 * a half-built layer or model.
 */
#ifndef NB_NN_H
#define NB_NN_H

#include "nb_ops.h"
#include "nb_optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- modules ----------------------------------------------------------------
 * A module is a struct that starts with nb_module, plus a type holding its
 * forward. Writing one (see examples/custom_module.c):
 *
 *   typedef struct { nb_module base; nb_module *fc1, *fc2; } residual;
 *
 *   static nb_tensor *residual_forward(nb_module *m, nb_tensor *x) {
 *       residual *r = (residual *)m;
 *       nb_tensor *h = nb_module_forward(r->fc1, x);
 *       return nb_add(x, nb_module_forward(r->fc2, h));
 *   }
 *   static const nb_module_type residual_type = {"Residual", residual_forward, NULL};
 *
 *   nb_module *residual_new(int64_t dim) {
 *       residual *r = (residual *)nb_module_new(&residual_type, sizeof *r);
 *       if (!r) return NULL;
 *       r->fc1 = nb_module_add_child(&r->base, "fc1", nb_dense(dim, "relu", dim));
 *       r->fc2 = nb_module_add_child(&r->base, "fc2", nb_dense(dim, "linear", dim));
 *       return nb_module_ok(&r->base); // NULL (and freed) if a child failed
 *   }
 */

typedef struct nb_module nb_module;

typedef struct nb_module_type {
    const char *name; /* shown by summary: "Dense", "Residual" */
    /* x -> output; called with the module's training flag set. Parameters
     * may be created here on first use (lazy shapes), with nb_module_add_param. */
    nb_tensor *(*forward)(nb_module *m, nb_tensor *x);
    /* Frees what the module allocated itself (not parameters or children,
     * which nb_module_free handles). May be NULL. */
    void (*destroy)(nb_module *m);
} nb_module_type;

typedef struct nb_module_entry {
    char name[32];
    nb_tensor *param;  /* one of param, child or buffer is set */
    nb_module *child;
    nb_tensor *buffer; /* non-trainable state (nb_module_add_buffer) */
} nb_module_entry;

struct nb_module {
    const nb_module_type *type;
    bool training;
    bool failed;          /* a child or parameter could not be added */
    int nentries, cap;
    nb_module_entry *entries;
    nb_module *parent;    /* the module this one was added to (which frees it), or NULL */
    /* Bumped when the entries of this module, or of any module under it,
     * change; the flattened parameter list below is rebuilt only then. */
    uint64_t version;
    int nparams;
    nb_tensor **params;
    char (*param_names)[96];
    uint64_t params_version; /* the version the list was built at */
    int nbuffers;            /* the same for buffers (nb_module_buffers) */
    nb_tensor **buffers;
    char (*buffer_names)[96];
    uint64_t buffers_version;
    struct nb__module_hook *hooks; /* module_debug.c; NULL: none */
};

/* Allocates a zeroed module struct of `size` bytes (>= sizeof(nb_module))
 * of the given type, in training mode. */
nb_module *nb_module_new(const nb_module_type *type, size_t size);
/* Registers a parameter under name; the module holds it (nb_adopt) and
 * releases it when freed. Marks it as requiring grad. Returns param. A
 * tensor belongs to one module: registering it in a second is refused. */
nb_tensor *nb_module_add_param(nb_module *m, const char *name, nb_tensor *param);
/* Registers a child module; the parent frees it. Returns child. A NULL
 * child marks the parent as failed (see nb_module_ok). A child that already
 * has a parent (this module or another) is refused with a message and
 * also marks the parent as failed; the refused child is not freed: it
 * stays with its first parent. */
nb_module *nb_module_add_child(nb_module *m, const char *name, nb_module *child);
/* m, or NULL after freeing m if adding a child or parameter failed. */
nb_module *nb_module_ok(nb_module *m);
/* Runs the module's forward. NULL in, NULL out. */
nb_tensor *nb_module_forward(nb_module *m, nb_tensor *x);
/* All parameters, depth first, named like PyTorch: "0.weight", "fc1.bias".
 * The array is borrowed from m: it stays valid, and unchanged, until m or
 * a module under it changes structure (a parameter or child added to any
 * of them, a lazy layer under m building itself on its first input, a
 * layer appended or refused by nb_model_add) or m is freed. Other modules
 * coming and going do not affect it. NULL (count 0) with a message when
 * out of memory. */
nb_tensor **nb_module_parameters(nb_module *m, int *count);
const char *nb_module_parameter_name(nb_module *m, int i);
int64_t nb_module_num_weights(nb_module *m); /* total number of parameter elements */
/* Buffers: state a module keeps that is not trained (batch norm's running
 * mean and variance). nb_module_add_buffer registers one under name: the
 * module holds it (nb_adopt) and releases it when freed, as a parameter,
 * but it does not require grad and is not among nb_module_parameters, so
 * no optimizer sees it. nb_module_buffers lists them all, depth first,
 * named like parameters ("1.running_mean"), for a checkpoint to save and
 * restore (write into them with nb_data_mut); the array is borrowed and
 * stays valid under the same rule as nb_module_parameters'. */
nb_tensor *nb_module_add_buffer(nb_module *m, const char *name, nb_tensor *buffer);
nb_tensor **nb_module_buffers(nb_module *m, int *count);
const char *nb_module_buffer_name(nb_module *m, int i);
int64_t nb_module_num_buffer_elements(nb_module *m); /* total number of buffer elements */
/* Train or eval mode, for the module and all its children. */
void nb_module_train(nb_module *m, bool training);
void nb_module_zero_grad(nb_module *m);
/* Frees m, its parameters and its children. A module that belongs to a
 * parent is freed by that parent: freeing it directly is refused with a
 * message. NULL is fine. */
void nb_module_free(nb_module *m);

/* ---- looking inside a module (see also nb_autograd.h) ---------------------------
 * Hooks (PyTorch's register_forward_pre_hook, register_forward_hook and
 * register_full_backward_hook, reduced to one input and one output):
 *   pre      called with the input before forward; may return a tensor to
 *            use instead (NULL: keep x);
 *   forward  called with input and output after forward; may return a
 *            tensor to use as the output instead (NULL: keep y);
 *   backward called during backward with the gradient arriving at the
 *            module's output (a gradient hook, nb_register_hook, put on
 *            each output as forward makes it); may return one of the same
 *            shape to use instead (NULL: keep it).
 * A tensor a hook returns follows the ownership rule (pre and forward hooks
 * run in the caller's scope; a backward hook's result is the engine's, as
 * for nb_register_hook); the tensors passed in are borrowed. A hook that
 * sets an error makes the forward return NULL (or the backward fail).
 * Hooks of a kind fire in the order registered. Each returns a handle (> 0)
 * for nb_module_remove_hook, or -1 with a message. Removing a backward hook
 * stops it for outputs made after the removal; outputs made before keep it
 * until they are freed, and must not be backpropagated after m is freed. */
typedef nb_tensor *(*nb_forward_pre_hook)(nb_module *m, nb_tensor *x, void *user);
typedef nb_tensor *(*nb_forward_hook)(nb_module *m, nb_tensor *x, nb_tensor *y, void *user);
typedef nb_tensor *(*nb_module_backward_hook)(nb_module *m, nb_tensor *grad_output, void *user);
int nb_module_register_forward_pre_hook(nb_module *m, nb_forward_pre_hook hook, void *user);
int nb_module_register_forward_hook(nb_module *m, nb_forward_hook hook, void *user);
int nb_module_register_backward_hook(nb_module *m, nb_module_backward_hook hook, void *user);
/* 0, or -1 with a message when m has no hook with this handle. */
int nb_module_remove_hook(nb_module *m, int handle);

/* nb_export_dot (nb_autograd.h) with the parameters of m named as
 * nb_module_parameters names them ("0.weight") and boxed by module, on top
 * of opts (NULL: nb_export_defaults()). For a model: nb_model_module. */
int nb_module_export_dot(nb_module *m, const nb_tensor *t, FILE *out, const nb_export_opts *opts);

/* Gradcheck of a whole module: the gradient of sum(w * m(x)), for fixed
 * random weights w, with respect to every parameter at once, against
 * finite differences (nb_gradcheck, with its options and tolerances).
 * result->input is the index of the worst parameter in
 * nb_module_parameters, result->index the element, and the message names
 * it as "1.weight[3]". m runs in the mode it is in: put a module with
 * dropout in eval mode first. Buffers (batch norm's running statistics)
 * are restored after the check (a layer that builds itself on its first
 * input: as that first forward left them). opts and result may be NULL.
 * For a model: nb_module_gradcheck(nb_model_module(model), x, ...). */
bool nb_module_gradcheck(nb_module *m, nb_tensor *x, const nb_gradcheck_opts *opts,
                         nb_gradcheck_result *result);

/* ---- layers ---------------------------------------------------------------------
 * Activations are named as in Keras and mean what Keras's activations of
 * those names mean, defaults included: "linear" (or NULL), "relu",
 * "sigmoid", "tanh", "softmax" (last axis), "gelu" (exact, with erf),
 * "elu" (alpha 1), "leaky_relu" (negative_slope 0.2, as
 * keras.activations.leaky_relu; Keras's LeakyReLU layer defaults to 0.3:
 * nb_leaky_relu_layer(0.3f)), "softplus". */

/* Keras Dense: y = activation(x W + b), W [input_dim, units] initialised
 * glorot-uniform, b zeros. input_dim 0 means: taken from the first input
 * (or from the previous layer in a Sequential). */
nb_module *nb_dense(int64_t units, const char *activation, int64_t input_dim);
/* PyTorch Linear(in, out): a Dense without activation. */
nb_module *nb_linear(int64_t in_features, int64_t out_features);
nb_module *nb_activation(const char *name);
nb_module *nb_relu_layer(void);
nb_module *nb_leaky_relu_layer(float negative_slope);
nb_module *nb_sigmoid_layer(void);
nb_module *nb_tanh_layer(void);
nb_module *nb_gelu_layer(void);
nb_module *nb_softmax_layer(int axis);
/* Zeroes each element with probability rate in training mode and scales
 * the others by 1/(1 - rate); the identity in eval mode. */
nb_module *nb_dropout(float rate);
/* [N, d1, d2, ...] -> [N, d1*d2*...] */
nb_module *nb_flatten_layer(void);
/* Layers applied in order; takes ownership of the n layers. Returns NULL
 * with a message, and frees the layers it was given, when one is NULL (its
 * constructor failed) or cannot be adopted: a layer that already belongs
 * to another module is refused and left with it, untouched, and a layer
 * listed twice is refused (and freed once). nb_sequential_add appends one
 * more: -1 with a message and the Sequential unchanged when it cannot (a
 * layer belonging elsewhere stays there; any other is freed). */
nb_module *nb_sequential(int n, nb_module *const *layers);
int nb_sequential_add(nb_module *seq, nb_module *layer);
int nb_sequential_len(const nb_module *seq);
nb_module *nb_sequential_at(const nb_module *seq, int i);

/* ---- initialisers (nn/init.c) ---------------------------------------------------
 * Fill an existing tensor in place from gen (NULL: the default generator).
 * Fans follow Keras's kernel layout [..., fan_in, fan_out]: for a 2-D
 * [in, out] kernel fan_in = in, fan_out = out; leading axes multiply both
 * (receptive field). Return 0, or -1 with a message. */
int nb_init_zeros(nb_tensor *t);
int nb_init_ones(nb_tensor *t);
int nb_init_constant(nb_tensor *t, float value);
int nb_init_uniform(nb_tensor *t, float low, float high, nb_generator *gen);
int nb_init_normal(nb_tensor *t, float mean, float std, nb_generator *gen);
int nb_init_glorot_uniform(nb_tensor *t, nb_generator *gen); /* U(±sqrt(6/(in+out))) */
int nb_init_glorot_normal(nb_tensor *t, nb_generator *gen);  /* N(0, 2/(in+out)) */
int nb_init_he_uniform(nb_tensor *t, nb_generator *gen);     /* U(±sqrt(6/in)) */
int nb_init_he_normal(nb_tensor *t, nb_generator *gen);      /* N(0, 2/in) */
int nb_init_lecun_uniform(nb_tensor *t, nb_generator *gen);  /* U(±sqrt(3/in)) */
int nb_init_lecun_normal(nb_tensor *t, nb_generator *gen);   /* N(0, 1/in) */

/* ---- losses and metrics by name (nn/losses.c) -----------------------------------
 * Keras names: "mean_squared_error" ("mse"), "mean_absolute_error" ("mae"),
 * "huber", "binary_crossentropy", "categorical_crossentropy",
 * "sparse_categorical_crossentropy". The crossentropies take probabilities
 * (a sigmoid or softmax output), as Keras does by default. */
typedef nb_tensor *(*nb_loss_fn)(nb_tensor *pred, nb_tensor *target);
nb_loss_fn nb_loss_by_name(const char *name); /* NULL + message if unknown */
nb_tensor *nb_categorical_crossentropy(nb_tensor *prob, nb_tensor *onehot);
nb_tensor *nb_sparse_categorical_crossentropy(nb_tensor *prob, nb_tensor *labels);
/* Metrics: "accuracy" (binary, categorical or sparse, chosen from the
 * loss as Keras does), "binary_accuracy", "categorical_accuracy",
 * "sparse_categorical_accuracy", "mae", "mse". A metric returns the batch
 * mean as a plain float. */
typedef float (*nb_metric_fn)(nb_tensor *pred, nb_tensor *target);

/* ---- the Keras-style model (nn/model.c) ------------------------------------------ */

typedef struct nb_model nb_model;
typedef struct nb_history nb_history;

/* An empty Sequential model, like keras.Sequential(). */
nb_model *nb_model_sequential(void);
/* Wraps any module as a model (the model owns it; NULL and the module freed
 * when out of memory). A module that belongs to a parent is refused. */
nb_model *nb_model_from_module(nb_module *m);
/* Appends a layer (the model takes it, and frees it on failure). A layer
 * whose input does not fit the previous output is refused with a message
 * and the model is unchanged; so is a layer that belongs to another module
 * (it is not freed: it stays there). Returns 0 or -1. */
int nb_model_add(nb_model *model, nb_module *layer);
/* optimizer: a Keras name, meaning Keras 3's optimizer with Keras's
 * defaults and update formula (which differ from nb_adam and kin, whose
 * defaults are PyTorch's):
 *   "sgd"      lr 0.01, no momentum
 *   "adam"     lr 1e-3, betas 0.9 and 0.999, eps 1e-7 as "epsilon hat"
 *              (nb_adam_opts.eps_hat)
 *   "adamw"    as "adam", weight_decay 0.004 (decoupled)
 *   "rmsprop"  lr 1e-3, rho (alpha) 0.9, eps 1e-7 inside the square root,
 *              no momentum, not centered
 *   "adagrad"  lr 1e-3, initial_accumulator_value 0.1, eps 1e-7 inside
 *              the square root
 * For other values build the optimizer yourself and pass it to
 * nb_model_set_optimizer. loss: a name above; metrics: a comma separated
 * list such as "accuracy, mae", or NULL. Returns 0 or -1. */
int nb_model_compile(nb_model *model, const char *optimizer, const char *loss, const char *metrics);
/* Uses opt instead of the compiled one; the model then frees it. opt must
 * update every trainable parameter of the model (each of
 * nb_model_parameters that requires grad) and may update more (a
 * learnable weight inside a custom loss, say), as with a PyTorch optimizer
 * given model.parameters() and others. An optimizer that leaves out one of
 * the model's parameters (built over another model, or before layers were
 * added), or a model without parameters yet (layers waiting for their
 * first input), is refused: -1, a message naming the first parameter left
 * out, the model's optimizer unchanged and opt still the caller's. */
int nb_model_set_optimizer(nb_model *model, nb_optimizer *opt);
/* A loss written by the user from ops, with a name for messages and the
 * progress line. It must return a single value (0-d, or one element) for
 * the batch: fit, evaluate and their checks refuse anything else with a
 * message naming the loss and the shape it returned. A loss that returns
 * NULL should set a message (nb_set_error); fit and evaluate pass it on. */
int nb_model_set_loss(nb_model *model, const char *name, nb_loss_fn loss);
/* The model's optimizer (the model's: do not free it). A model compiled by
 * name before its layers were built gets it as soon as they are; until
 * then NULL and a message, as for a model not compiled. */
nb_optimizer *nb_model_optimizer(nb_model *model);
nb_module *nb_model_module(nb_model *model);
nb_tensor **nb_model_parameters(nb_model *model, int *count);

/* Called after every epoch with the history so far; return false to stop. */
typedef bool (*nb_epoch_callback)(nb_model *model, int epoch, const nb_history *history, void *user);

typedef struct nb_fit_opts {
    int epochs;               /* default 1 */
    int batch_size;           /* default 32 */
    bool shuffle;             /* default true: a new permutation every epoch */
    float validation_split;   /* the last fraction of the data, not shuffled, default 0 */
    nb_tensor *x_val, *y_val; /* or explicit validation data */
    int verbose;              /* 0 silent, 1 progress bar (default), 2 one line per epoch */
    FILE *out;                /* where progress goes, default stdout */
    int patience;             /* early stopping: epochs without improvement, 0 = off */
    float min_delta;          /* improvement smaller than this does not count */
    const char *monitor;      /* "loss" or "val_loss" (default when validating) or a metric */
    bool restore_best_weights; /* when early stopping ends training (as Keras) */
    nb_epoch_callback on_epoch_end;
    void *user;
    /* Checkpoints (Keras's ModelCheckpoint), written with
     * nb_model_save_checkpoint (nb_io.h) after every checkpoint_every-th
     * epoch (0 counts as 1), or with save_best_only only when the monitored
     * value improved on the best so far in this fit. NULL: none. A save
     * that fails stops training (history kept, the message says why). */
    const char *checkpoint_path;
    int checkpoint_every;
    bool save_best_only;
    /* The epoch to start at, as Keras's fit(initial_epoch=): after loading
     * a checkpoint saved at epoch 4, initial_epoch 4 and epochs 5 train the
     * fifth epoch only, exactly as an uninterrupted run would have. The
     * history holds the epochs this call trained. */
    int initial_epoch;
    /* Called at every training step after backward, before the optimizer
     * step, with the gradients in each parameter's .grad: the place to
     * change them (nn/dist averages them across processes there). Return
     * 0, or -1 with a message (nb_set_error) to stop training as a failed
     * step does. NULL: none. */
    int (*on_gradients)(nb_model *model, void *user);
    void *gradients_user;
} nb_fit_opts;

nb_fit_opts nb_fit_defaults(void);
/* Trains on x [N, ...] and y [N, ...]. Returns the history (the caller frees
 * it with nb_history_free), or NULL with a message and the model untouched
 * when the input is wrong (row counts differ, batch size 0, not compiled,
 * x does not fit the first layer, the loss fails or does not return a
 * single value on the first two rows). Training stops early, history kept,
 * on a NaN or infinite loss or a forward, loss or training step that fails
 * (the message names the epoch and batch, and passes on the failing
 * call's own message), on early
 * stopping, or when the callback returns false. */
nb_history *nb_model_fit(nb_model *model, nb_tensor *x, nb_tensor *y, const nb_fit_opts *opts);
/* Loss then each metric over x, y (in eval mode, batches of batch_size,
 * 0 = 32) into out[0..]; returns how many values were written, or -1. */
int nb_model_evaluate(nb_model *model, nb_tensor *x, nb_tensor *y, int batch_size, float *out, int nout);
/* The model's output for x in eval mode without recording a graph. */
nb_tensor *nb_model_predict(nb_model *model, nb_tensor *x, int batch_size);
/* Prints Keras's summary table (layer, output shape, parameters, totals). */
void nb_model_summary(nb_model *model, FILE *out);
void nb_model_free(nb_model *model);

/* The per-epoch record: keys "loss", each metric, and "val_" variants. */
int nb_history_epochs(const nb_history *h);
/* The values of key for every epoch (borrowed), or NULL if absent. */
const float *nb_history_get(const nb_history *h, const char *key);
int nb_history_num_keys(const nb_history *h);
const char *nb_history_key(const nb_history *h, int i);
/* Why training stopped early ("" when it ran all epochs). */
const char *nb_history_stop_reason(const nb_history *h);
void nb_history_free(nb_history *h);

/* ---- convolution, pooling, normalisation and embedding layers (nn/layers_conv.c)
 * NCHW, as the ops. Each layer learns what it needs of its input (channels,
 * normalised shape) from the first input and builds its parameters then,
 * as Keras does; the summary shows Keras's names and output shapes. */

/* Conv2D options; NULL, or any field left at 0, means the default. */
typedef struct nb_conv2d_layer_opts {
    int stride[2];     /* default 1 (index 0 the height, 1 the width) */
    int padding[2];    /* explicit zero padding, default 0 (Keras's "valid") */
    /* Keras's padding="same": oH = ceil(H / stride), the padding split
     * evenly, an odd total's extra row or column at the bottom or right (as
     * TensorFlow places it). Not with explicit padding. */
    bool same;
    int dilation[2];   /* default 1 */
    int groups;        /* default 1; divides the input channels and filters */
    bool no_bias;      /* Keras's use_bias=False */
    const char *activation; /* a name as for nb_dense; NULL is "linear" */
    /* [C,H,W] of one sample (Keras's input_shape): the layer is built at
     * once, and, first in a model, tells the model its input (for
     * nb_model_summary before any fit). C alone builds the layer. Zeros:
     * channels taken from the first input. */
    int64_t input_shape[3];
} nb_conv2d_layer_opts;

/* Keras Conv2D(filters, (kh, kw)) over NCHW: x [N,C,H,W] -> [N,filters,oH,oW].
 * Kernel [filters, C/groups, kh, kw] (PyTorch's layout) initialised
 * glorot-uniform with Keras's fans (fan_in = C/groups·kh·kw, fan_out =
 * filters·kh·kw), bias [filters] zeros. */
nb_module *nb_conv2d_layer(int64_t filters, int kh, int kw, const nb_conv2d_layer_opts *opts);
/* Keras MaxPooling2D and AveragePooling2D (nb_max_pool2d, nb_avg_pool2d):
 * opts NULL means stride = the pool size, no padding. */
nb_module *nb_max_pool2d_layer(int kh, int kw, const nb_pool2d_opts *opts);
nb_module *nb_avg_pool2d_layer(int kh, int kw, const nb_pool2d_opts *opts);
/* Keras GlobalAveragePooling2D: [N,C,H,W] -> [N,C]. */
nb_module *nb_global_avg_pool2d_layer(void);
/* Batch normalisation over every axis but 1: BatchNorm1d for [N,C] (and
 * [N,C,L]), BatchNorm2d for [N,C,H,W], by the input's rank. Parameters
 * weight (ones) and bias (zeros) [C]; buffers running_mean (zeros) and
 * running_var (ones) [C] (nb_module_buffers), updated in training mode
 * (nb_module_train(m, true), the default; fit trains, evaluate and predict
 * do not) and used in eval mode. momentum follows PyTorch:
 *     running = (1 - momentum)·running + momentum·batch
 * PyTorch's BatchNorm2d() is nb_batch_norm_layer(0.1f, 1e-5f). Keras's
 * BatchNormalization() (momentum 0.99 in the opposite convention, epsilon
 * 1e-3) is nb_batch_norm_layer(0.01f, 1e-3f); Keras normalises its last
 * axis (channels last), this layer axis 1. */
nb_module *nb_batch_norm_layer(float momentum, float eps);
/* Layer normalisation over the last normalized_ndim axes, with weight
 * (ones) and bias (zeros) of their shape, taken from the first input.
 * Keras's LayerNormalization() is nb_layer_norm_layer(1, 1e-3f); PyTorch's
 * LayerNorm(d) is nb_layer_norm_layer(1, 1e-5f). */
nb_module *nb_layer_norm_layer(int normalized_ndim, float eps);
/* Keras Embedding(num, dim): indices [...] (integers in [0, num) as
 * floats) -> [..., dim]; weight [num, dim] uniform in ±0.05 (Keras's
 * default initialiser). */
nb_module *nb_embedding_layer(int64_t num, int64_t dim);

/* ---- recurrent layers (nn/layers_rnn.c) ---------------------------------------------
 * SimpleRNN (tanh), LSTM and GRU over batch-first sequences x [batch, time,
 * input] (time >= 1). PyTorch's equations, gate order (LSTM i, f, g, o; GRU
 * r, z, n, the reset gate applied to W_hn h + b_hn, which is Keras's
 * reset_after=True), parameters and initialisation: weight_ih [gates·units,
 * input], weight_hh [gates·units, units], bias_ih and bias_hh [gates·units],
 * all U(±1/sqrt(units)); the names are those of torch.nn.LSTMCell (and
 * RNNCell, GRUCell); torch.nn.LSTM calls them weight_ih_l0 and so on.
 * The forward (nb_module_forward, a model) starts from zero states and
 * gives, as Keras, the last step's h [batch, units], or every step's
 * [batch, time, units] with return_sequences. */
typedef struct nb_rnn_opts {
    int64_t input_size;    /* features per step; 0: taken from the first input */
    bool return_sequences; /* default false: the last step only */
} nb_rnn_opts;

nb_module *nb_rnn_layer(int64_t units, const nb_rnn_opts *opts);  /* opts NULL: defaults */
nb_module *nb_lstm_layer(int64_t units, const nb_rnn_opts *opts);
nb_module *nb_gru_layer(int64_t units, const nb_rnn_opts *opts);
/* The forward with the state in and out, for generation and truncated
 * backpropagation through time: h0 and c0 [batch, units] (NULL: zeros) are
 * the initial state; the final state is written to *h_n and *c_n when they
 * are not NULL (c_n is the LSTM's cell state). The return value is the
 * forward's output (without return_sequences, the same tensor as *h_n). Everything returned belongs to the innermost open
 * scope, as any op's result (a model step inside a scope frees it all);
 * keep a final state with nb_keep to carry it past the scope, and cut the
 * graph behind it with nb_detach for truncated BPTT. On bad input (a module
 * of another type, wrong shapes) NULL with a message, and *h_n, *c_n NULL. */
nb_tensor *nb_rnn_run(nb_module *m, nb_tensor *x, nb_tensor *h0, nb_tensor **h_n);
nb_tensor *nb_lstm_run(nb_module *m, nb_tensor *x, nb_tensor *h0, nb_tensor *c0, nb_tensor **h_n,
                       nb_tensor **c_n);
nb_tensor *nb_gru_run(nb_module *m, nb_tensor *x, nb_tensor *h0, nb_tensor **h_n);

/* ---- sampling (nn/sample.c) ---------------------------------------------------------- */

/* Draws one class index per row of logits [..., V] with nabla's seeded generator
 * (gen NULL = the global one): softmax(logits / temperature) restricted to the top_k
 * largest logits (top_k <= 0 or >= V: all). temperature 0 = argmax. Returns a float
 * tensor of the leading shape holding the indices (nabla's class-label convention);
 * NULL + message on bad input (temperature < 0, non-finite logits row, ...).
 * Details: -inf logits are allowed (probability 0; a row all -inf is an error),
 * NaN and +inf are not; logits tied with the top_k-th largest are all kept; argmax
 * takes the first maximum; each row draws one uniform from the generator, except
 * under argmax, which draws none. The result records no graph. */
nb_tensor *nb_sample_logits(nb_tensor *logits, float temperature, int top_k, nb_generator *gen);

#ifdef __cplusplus
}
#endif
#endif
