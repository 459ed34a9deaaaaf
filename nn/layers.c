/* layers.c — the built-in layers: Dense (Keras's fully connected layer, with
 * its optional activation), activation layers, Dropout and Flatten. Each is
 * a module written with the public module API of nb_nn.h.
 *
 * Dense follows Keras: the kernel is [input_dim, units] so the forward is
 * x·W + b with no transpose, W starts glorot-uniform and b at zero, and
 * input_dim may be left to the first input (the parameters are then
 * created on the first forward, as Keras builds a layer on its first call).
 */
#include "nn_internal.h"

#include <string.h>

/* ---- activations by name ------------------------------------------------------ */

typedef struct activation_entry {
    const char *name;
    nb_tensor *(*apply)(nb_tensor *x);
} activation_entry;

static nb_tensor *identity(nb_tensor *x) { return x; }
static nb_tensor *softmax_last(nb_tensor *x) { return nb_softmax(x, -1); }
static nb_tensor *elu_1(nb_tensor *x) { return nb_elu(x, 1.0f); }
/* keras.activations.leaky_relu's negative_slope. (Keras's LeakyReLU layer
 * defaults to 0.3; nb_leaky_relu_layer takes its slope explicitly.) */
static nb_tensor *leaky_relu_keras(nb_tensor *x) { return nb_leaky_relu(x, 0.2f); }

static const activation_entry activations[] = {
    {"linear", identity}, {"relu", nb_relu},       {"sigmoid", nb_sigmoid},
    {"tanh", nb_tanh},    {"softmax", softmax_last}, {"gelu", nb_gelu},
    {"elu", elu_1},       {"leaky_relu", leaky_relu_keras}, {"softplus", nb_softplus},
};

static const activation_entry *find_activation(const char *who, const char *name) {
    if (!name) return &activations[0];
    for (size_t i = 0; i < sizeof activations / sizeof *activations; i++)
        if (strcmp(activations[i].name, name) == 0) return &activations[i];
    nb_set_error("%s: unknown activation '%s' (known: linear, relu, sigmoid, tanh, softmax, gelu, "
                 "elu, leaky_relu, softplus)",
                 who, name);
    return NULL;
}

nb__activation_fn nb__activation_by_name(const char *who, const char *name) {
    const activation_entry *a = find_activation(who, name);
    return a ? a->apply : NULL;
}

/* ---- Dense ------------------------------------------------------------------------
 * x (N, in) -> activation(x W + b) (N, units); also any x (..., in). */

typedef struct dense {
    nb_module base;
    int64_t units, input_dim;
    const activation_entry *act;
    nb_tensor *weight, *bias;
} dense;

/* Makes W and b for inputs of input_dim features. All or nothing: on
 * failure the layer is left unbuilt, as it was, and the message says
 * "<who>: out of memory ...". */
static bool dense_build(const char *who, dense *d, int64_t input_dim) {
    bool failed_before = d->base.failed;
    int entries_before = d->base.nentries;
    nb_tensor *w = nb_empty(NB_SHAPE(input_dim, d->units));
    if (w && nb_init_glorot_uniform(w, NULL) == 0) {
        d->weight = nb_module_add_param(&d->base, "weight", w);
        d->bias = d->weight ? nb_module_add_param(&d->base, "bias", nb_zeros(NB_SHAPE(d->units))) : NULL;
    }
    if (d->weight && d->bias) {
        d->input_dim = input_dim;
        return true;
    }
    nb__module_truncate(&d->base, entries_before);
    d->base.failed = failed_before;
    d->weight = d->bias = NULL;
    nb_set_error("%s: out of memory for the [%lld,%lld] kernel of Dense(%lld)", who, (long long)input_dim,
                 (long long)d->units, (long long)d->units);
    return false;
}

static nb_tensor *dense_forward(nb_module *m, nb_tensor *x) {
    dense *d = (dense *)m;
    int64_t in = nb_ndim(x) ? nb_dim(x, -1) : 0;
    if (nb_ndim(x) < 1 || (d->weight && in != d->input_dim)) {
        char shape[96];
        nb_set_error("Dense(%lld): expects inputs with %lld features in the last axis, got %s",
                     (long long)d->units, (long long)d->input_dim,
                     nb_shape_str(nb_ndim(x), nb_shape(x), shape, sizeof shape));
        return NULL;
    }
    if (!d->weight) {
        /* Lazy build creates kept parameters: they must not be recorded in,
         * or owned by, whatever graph or scope the first call runs in. */
        char who[48];
        snprintf(who, sizeof who, "Dense(%lld)", (long long)d->units);
        bool was = nb_set_grad_enabled(false);
        nb_scope_begin();
        bool ok = dense_build(who, d, in);
        nb_scope_end();
        nb_set_grad_enabled(was);
        if (!ok) return NULL;
    }
    return d->act->apply(nb_linear_map(x, d->weight, d->bias));
}

static const nb_module_type dense_type = {"Dense", dense_forward, NULL};

static nb_module *dense_new(const char *who, int64_t units, const char *activation, int64_t input_dim) {
    const activation_entry *act = find_activation(who, activation);
    if (!act) return NULL;
    if (units <= 0 || input_dim < 0) {
        nb_set_error("%s: units must be positive and input_dim >= 0, got %lld and %lld", who,
                     (long long)units, (long long)input_dim);
        return NULL;
    }
    dense *d = (dense *)nb__module_new(who, &dense_type, sizeof(dense));
    if (!d) return NULL;
    d->units = units;
    d->act = act;
    if (input_dim > 0) {
        bool was = nb_set_grad_enabled(false);
        nb_scope_begin();
        bool ok = dense_build(who, d, input_dim);
        nb_scope_end();
        nb_set_grad_enabled(was);
        if (!ok) {
            nb_module_free(&d->base);
            return NULL;
        }
    }
    return &d->base;
}

nb_module *nb_dense(int64_t units, const char *activation, int64_t input_dim) {
    return dense_new("nb_dense", units, activation, input_dim);
}

nb_module *nb_linear(int64_t in_features, int64_t out_features) {
    if (in_features <= 0 || out_features <= 0) {
        nb_set_error("nb_linear: in_features and out_features must be positive, got %lld and %lld",
                     (long long)in_features, (long long)out_features);
        return NULL;
    }
    return dense_new("nb_linear", out_features, "linear", in_features);
}

bool nb__is_dense(const nb_module *m, int64_t *units, int64_t *input_dim) {
    if (!m || m->type != &dense_type) return false;
    const dense *d = (const dense *)m;
    if (units) *units = d->units;
    if (input_dim) *input_dim = d->input_dim;
    return true;
}

bool nb__dense_parts(const nb_module *m, nb__linear_parts *p) {
    if (!m || m->type != &dense_type || !((const dense *)m)->weight) return false;
    const dense *d = (const dense *)m;
    *p = (nb__linear_parts){.kind = NB__LINEAR_DENSE, .weight = d->weight, .bias = d->bias,
                            .act = d->act->apply};
    return true;
}

/* ---- activation layers ----------------------------------------------------------- */

typedef struct activation_layer {
    nb_module base;
    const activation_entry *act;
    float param; /* slope or axis */
} activation_layer;

static nb_tensor *activation_forward(nb_module *m, nb_tensor *x) {
    return ((activation_layer *)m)->act->apply(x);
}

static const nb_module_type activation_type = {"Activation", activation_forward, NULL};

static nb_module *activation_new(const char *who, const nb_module_type *type, const activation_entry *act,
                                 float param) {
    activation_layer *a = (activation_layer *)nb__module_new(who, type, sizeof *a);
    if (!a) return NULL;
    a->act = act;
    a->param = param;
    return &a->base;
}

static nb_module *named_activation(const char *who, const char *name) {
    const activation_entry *act = find_activation(who, name);
    return act ? activation_new(who, &activation_type, act, 0) : NULL;
}

nb_module *nb_activation(const char *name) { return named_activation("nb_activation", name); }
nb_module *nb_relu_layer(void) { return named_activation("nb_relu_layer", "relu"); }
nb_module *nb_sigmoid_layer(void) { return named_activation("nb_sigmoid_layer", "sigmoid"); }
nb_module *nb_tanh_layer(void) { return named_activation("nb_tanh_layer", "tanh"); }
nb_module *nb_gelu_layer(void) { return named_activation("nb_gelu_layer", "gelu"); }

static nb_tensor *leaky_forward(nb_module *m, nb_tensor *x) {
    return nb_leaky_relu(x, ((activation_layer *)m)->param);
}
static const nb_module_type leaky_type = {"LeakyReLU", leaky_forward, NULL};

nb_module *nb_leaky_relu_layer(float negative_slope) {
    return activation_new("nb_leaky_relu_layer", &leaky_type, NULL, negative_slope);
}

static nb_tensor *softmax_forward(nb_module *m, nb_tensor *x) {
    return nb_softmax(x, (int)((activation_layer *)m)->param);
}
static const nb_module_type softmax_type = {"Softmax", softmax_forward, NULL};

nb_module *nb_softmax_layer(int axis) {
    return activation_new("nb_softmax_layer", &softmax_type, NULL, (float)axis);
}

/* ---- Dropout ------------------------------------------------------------------------
 * x -> x * mask / (1 - rate) in training, x in eval. The mask is a constant
 * drawn from the default generator, so a seed repeats a run exactly. */

typedef struct dropout {
    nb_module base;
    float rate;
} dropout;

static nb_tensor *dropout_forward(nb_module *m, nb_tensor *x) {
    float rate = ((dropout *)m)->rate;
    if (!m->training || rate == 0) return x;
    nb_tensor *mask = nb_empty_like(x);
    if (!mask) return NULL;
    nb_generator *g = nb_default_generator();
    float keep = 1.0f / (1.0f - rate), *pm = nb_data_mut(mask);
    for (int64_t i = 0; i < nb_numel(mask); i++)
        pm[i] = nb_generator_uniform(g) < (double)rate ? 0.0f : keep;
    return nb_mul(x, mask);
}

static const nb_module_type dropout_type = {"Dropout", dropout_forward, NULL};

nb_module *nb_dropout(float rate) {
    if (!(rate >= 0 && rate < 1)) {
        nb_set_error("nb_dropout: rate must be in [0, 1), got %g", (double)rate);
        return NULL;
    }
    dropout *d = (dropout *)nb__module_new("nb_dropout", &dropout_type, sizeof *d);
    if (d) d->rate = rate;
    return (nb_module *)d;
}

/* ---- Flatten: (N, d1, d2, ...) -> (N, d1*d2*...) ------------------------------------ */

static nb_tensor *flatten_forward(nb_module *m, nb_tensor *x) {
    (void)m;
    if (nb_ndim(x) < 2) return x;
    return nb_flatten(x, 1, -1);
}

static const nb_module_type flatten_type = {"Flatten", flatten_forward, NULL};

nb_module *nb_flatten_layer(void) { return nb__module_new("nb_flatten_layer", &flatten_type, sizeof(nb_module)); }
