/* layers_conv.c — the convolution, pooling, normalisation and embedding
 * layers: Conv2D, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D,
 * BatchNormalization, LayerNormalization and Embedding, each a module
 * written with the public module API of nb_nn.h over the ops of
 * ops/conv.c and ops/norm.c.
 *
 * Layout is PyTorch's, NCHW, with Keras's manners: a layer learns its
 * input channels (or normalised shape) from its first input, and builds its
 * parameters then, as a Keras layer builds on its first call; Conv2D may
 * instead declare the shape of one sample (Keras's input_shape), and a
 * model then knows its input before the first fit. Building is all or
 * nothing: a layer that cannot make every parameter keeps none.
 *
 * Batch normalisation keeps its running statistics as buffers
 * (nb_module_add_buffer): held and freed by the layer, listed by
 * nb_module_buffers for checkpoints, but not parameters, so no optimizer
 * updates them.
 */
#include "nn_internal.h"

#include <math.h>
#include <string.h>

/* ---- building parameters on the first input ------------------------------------
 * Parameters are kept tensors: they must not be recorded in, or owned by,
 * the graph or scope of the call that happens to build them. */

typedef struct state_spec {
    const char *name;
    nb_tensor *t;  /* NULL when it could not be made */
    bool buffer;   /* a buffer rather than a parameter */
} state_spec;

/* Registers every tensor of specs on m, or none: on failure the entries
 * added are dropped, m->failed is as it was, and the message names who. */
static bool add_state(const char *who, nb_module *m, int n, const state_spec *specs) {
    bool failed_before = m->failed, ok = true;
    int before = m->nentries;
    for (int i = 0; i < n && ok; i++)
        ok = specs[i].t && (specs[i].buffer ? nb_module_add_buffer(m, specs[i].name, specs[i].t)
                                            : nb_module_add_param(m, specs[i].name, specs[i].t)) != NULL;
    if (ok) return true;
    nb__module_truncate(m, before);
    m->failed = failed_before;
    nb_set_error("%s: out of memory for its parameters", who);
    return false;
}

/* Brackets a build: no graph, and a scope that frees whatever the module
 * did not take. */
static bool build_begin(void) {
    bool was = nb_set_grad_enabled(false);
    nb_scope_begin();
    return was;
}
static void build_end(bool was) {
    nb_scope_end();
    nb_set_grad_enabled(was);
}

static char *shape_of(const nb_tensor *x, char *buf, size_t size) {
    return nb_shape_str(nb_ndim(x), nb_shape(x), buf, size);
}

/* ---- Conv2D -------------------------------------------------------------------------
 * x [N,C,H,W] -> activation(conv2d(x, W) + b) [N,filters,oH,oW],
 * W [filters, C/groups, kh, kw] glorot-uniform with Keras's fans, b zeros. */

typedef struct conv_layer {
    nb_module base;
    int64_t filters, in_channels; /* in_channels 0 until built */
    int kh, kw;
    nb_conv2d_layer_opts o;       /* defaults filled in; activation not kept */
    nb__activation_fn act;
    nb_tensor *weight, *bias;
} conv_layer;

static bool conv_build(const char *who, conv_layer *c, int64_t in_channels) {
    int64_t fan_in = in_channels / c->o.groups * c->kh * c->kw, fan_out = c->filters * c->kh * c->kw;
    bool was = build_begin();
    nb_tensor *w = nb_empty(NB_SHAPE(c->filters, in_channels / c->o.groups, c->kh, c->kw));
    float limit = (float)sqrt(6.0 / (double)(fan_in + fan_out));
    if (w && nb_init_uniform(w, -limit, limit, NULL) != 0) w = NULL;
    state_spec s[2] = {{"weight", w, false}, {"bias", NULL, false}};
    if (!c->o.no_bias) s[1].t = nb_zeros(NB_SHAPE(c->filters));
    bool ok = add_state(who, &c->base, c->o.no_bias ? 1 : 2, s);
    build_end(was);
    if (ok) {
        c->weight = s[0].t;
        c->bias = c->o.no_bias ? NULL : s[1].t;
        c->in_channels = in_channels;
    }
    return ok;
}

/* Keras's "same": output ceil(in / stride). The padding is split evenly;
 * an odd total puts the extra row or column at the bottom or right, as
 * TensorFlow does, so a kernel trained there gives the same outputs here.
 * conv2d pads symmetrically: the extra one is a zero row or column
 * concatenated to x. */
static void same_padding(int64_t in, int stride, int k, int dilation, int *pad, bool *extra) {
    int64_t out = (in + stride - 1) / stride;
    int64_t total = (out - 1) * stride + (int64_t)(k - 1) * dilation + 1 - in;
    if (total < 0) total = 0;
    *pad = (int)(total / 2);
    *extra = total % 2 != 0;
}

static nb_tensor *pad_end(nb_tensor *x, int axis) {
    int64_t shape[4];
    memcpy(shape, nb_shape(x), sizeof shape);
    shape[axis] = 1;
    nb_tensor *parts[2] = {x, nb_zeros(4, shape)};
    return parts[1] ? nb_concat(2, parts, axis) : NULL;
}

static nb_tensor *conv_forward(nb_module *m, nb_tensor *x) {
    conv_layer *c = (conv_layer *)m;
    char who[48], buf[96];
    snprintf(who, sizeof who, "Conv2D(%lld)", (long long)c->filters);
    if (nb_ndim(x) != 4 || (c->weight && nb_shape(x)[1] != c->in_channels) ||
        nb_shape(x)[1] % c->o.groups != 0) {
        nb_set_error("%s: expects inputs [N,C,H,W] with %s%lld channels%s, got %s", who,
                     c->weight ? "" : "a multiple of ", (long long)(c->weight ? c->in_channels : c->o.groups),
                     c->weight ? "" : " (the groups)", shape_of(x, buf, sizeof buf));
        return NULL;
    }
    if (!c->weight && !conv_build(who, c, nb_shape(x)[1])) return NULL;
    nb_conv2d_opts co = {.stride = {c->o.stride[0], c->o.stride[1]},
                         .padding = {c->o.padding[0], c->o.padding[1]},
                         .dilation = {c->o.dilation[0], c->o.dilation[1]},
                         .groups = c->o.groups};
    if (c->o.same)
        for (int a = 0; a < 2; a++) {
            bool extra;
            same_padding(nb_shape(x)[2 + a], co.stride[a], a ? c->kw : c->kh, co.dilation[a],
                         &co.padding[a], &extra);
            if (extra) x = pad_end(x, 2 + a);
        }
    return c->act(nb_conv2d(x, c->weight, c->bias, &co));
}

static const nb_module_type conv_type = {"Conv2D", conv_forward, NULL};

nb_module *nb_conv2d_layer(int64_t filters, int kh, int kw, const nb_conv2d_layer_opts *opts) {
    const char *who = "nb_conv2d_layer";
    nb_conv2d_layer_opts o = opts ? *opts : (nb_conv2d_layer_opts){0};
    nb__activation_fn act = nb__activation_by_name(who, o.activation);
    if (!act) return NULL;
    o.activation = NULL;
    for (int a = 0; a < 2; a++) {
        o.stride[a] = o.stride[a] ? o.stride[a] : 1;
        o.dilation[a] = o.dilation[a] ? o.dilation[a] : 1;
    }
    o.groups = o.groups ? o.groups : 1;
    bool bad_shape = false;
    for (int d = 0; d < 3; d++) bad_shape |= o.input_shape[d] < 0;
    if (filters <= 0 || kh <= 0 || kw <= 0 || o.stride[0] < 0 || o.stride[1] < 0 || o.dilation[0] < 0 ||
        o.dilation[1] < 0 || o.padding[0] < 0 || o.padding[1] < 0 || o.groups < 0 ||
        filters % o.groups != 0 || (o.same && (o.padding[0] || o.padding[1])) || bad_shape ||
        (o.input_shape[0] && o.input_shape[0] % o.groups)) {
        nb_set_error("%s: filters %lld, kernel %dx%d, stride %d,%d, padding %d,%d%s, dilation %d,%d, groups "
                     "%d, input_shape [%lld,%lld,%lld]: sizes must be positive, filters and channels "
                     "divisible by groups, and \"same\" comes without explicit padding",
                     who, (long long)filters, kh, kw, o.stride[0], o.stride[1], o.padding[0], o.padding[1],
                     o.same ? " (same)" : "", o.dilation[0], o.dilation[1], o.groups,
                     (long long)o.input_shape[0], (long long)o.input_shape[1], (long long)o.input_shape[2]);
        return NULL;
    }
    conv_layer *c = (conv_layer *)nb__module_new(who, &conv_type, sizeof *c);
    if (!c) return NULL;
    c->filters = filters;
    c->kh = kh;
    c->kw = kw;
    c->o = o;
    c->act = act;
    if (o.input_shape[0] > 0 && !conv_build(who, c, o.input_shape[0])) {
        nb_module_free(&c->base);
        return NULL;
    }
    return &c->base;
}

bool nb__layer_input_shape(const nb_module *m, int *ndim, int64_t *shape) {
    int64_t input_dim;
    if (nb__is_dense(m, NULL, &input_dim)) {
        if (input_dim <= 0) return false;
        *ndim = 1;
        shape[0] = input_dim;
        return true;
    }
    if (!m || m->type != &conv_type) return false;
    const conv_layer *c = (const conv_layer *)m;
    for (int d = 0; d < 3; d++)
        if (c->o.input_shape[d] <= 0) return false;
    *ndim = 3;
    memcpy(shape, c->o.input_shape, 3 * sizeof *shape);
    return true;
}

/* ---- pooling ----------------------------------------------------------------------
 * x [N,C,H,W] -> [N,C,oH,oW]; GlobalAveragePooling2D -> [N,C], as Keras's. */

typedef struct pool_layer {
    nb_module base;
    int kh, kw;
    nb_pool2d_opts o;
} pool_layer;

static nb_tensor *max_pool_forward(nb_module *m, nb_tensor *x) {
    pool_layer *p = (pool_layer *)m;
    return nb_max_pool2d(x, p->kh, p->kw, &p->o);
}
static nb_tensor *avg_pool_forward(nb_module *m, nb_tensor *x) {
    pool_layer *p = (pool_layer *)m;
    return nb_avg_pool2d(x, p->kh, p->kw, &p->o);
}
static const nb_module_type max_pool_type = {"MaxPooling2D", max_pool_forward, NULL};
static const nb_module_type avg_pool_type = {"AveragePooling2D", avg_pool_forward, NULL};

static nb_module *pool_new(const char *who, const nb_module_type *type, int kh, int kw,
                           const nb_pool2d_opts *opts) {
    nb_pool2d_opts o;
    memset(&o, 0, sizeof o);
    if (opts) o = *opts;
    bool avg = type == &avg_pool_type;
    if (kh <= 0 || kw <= 0 || o.stride[0] < 0 || o.stride[1] < 0 || o.padding[0] < 0 ||
        o.padding[1] < 0 || 2 * o.padding[0] > kh || 2 * o.padding[1] > kw || o.dilation[0] < 0 ||
        o.dilation[1] < 0 || (avg && (o.dilation[0] > 1 || o.dilation[1] > 1))) {
        nb_set_error("%s: pool %dx%d, stride %d,%d, padding %d,%d, dilation %d,%d: the pool must be "
                     "positive, the stride and dilation >= 0 (0: the pool size, 1), the padding at "
                     "most half the pool%s",
                     who, kh, kw, o.stride[0], o.stride[1], o.padding[0], o.padding[1], o.dilation[0],
                     o.dilation[1], avg ? ", and average pooling has no dilation" : "");
        return NULL;
    }
    pool_layer *p = (pool_layer *)nb__module_new(who, type, sizeof *p);
    if (!p) return NULL;
    p->kh = kh;
    p->kw = kw;
    p->o = o;
    return &p->base;
}

nb_module *nb_max_pool2d_layer(int kh, int kw, const nb_pool2d_opts *opts) {
    return pool_new("nb_max_pool2d_layer", &max_pool_type, kh, kw, opts);
}

nb_module *nb_avg_pool2d_layer(int kh, int kw, const nb_pool2d_opts *opts) {
    return pool_new("nb_avg_pool2d_layer", &avg_pool_type, kh, kw, opts);
}

static nb_tensor *global_avg_forward(nb_module *m, nb_tensor *x) {
    (void)m;
    if (nb_ndim(x) != 4) {
        char buf[96];
        nb_set_error("GlobalAveragePooling2D: expects inputs [N,C,H,W], got %s", shape_of(x, buf, sizeof buf));
        return NULL;
    }
    return nb_mean(x, NB_AXES(2, 3), false);
}
static const nb_module_type global_avg_type = {"GlobalAveragePooling2D", global_avg_forward, NULL};

nb_module *nb_global_avg_pool2d_layer(void) {
    return nb__module_new("nb_global_avg_pool2d_layer", &global_avg_type, sizeof(nb_module));
}

/* ---- BatchNormalization -------------------------------------------------------------
 * x [N,C] or [N,C,H,W] -> same shape; weight (ones) and bias (zeros) [C]
 * are parameters, running_mean (zeros) and running_var (ones) [C] buffers.
 * Training mode normalises with the batch and updates the buffers; eval
 * mode uses the buffers. */

typedef struct batch_norm_layer {
    nb_module base;
    float momentum, eps;
    int64_t channels; /* 0 until built */
    nb_tensor *weight, *bias, *running_mean, *running_var;
} batch_norm_layer;

static nb_tensor *batch_norm_forward(nb_module *m, nb_tensor *x) {
    batch_norm_layer *b = (batch_norm_layer *)m;
    const char *who = "BatchNormalization";
    if (nb_ndim(x) < 2 || (b->channels && nb_shape(x)[1] != b->channels) || nb_shape(x)[1] == 0) {
        char buf[96];
        nb_set_error("%s: expects inputs [N,C,...] with %lld channels in axis 1, got %s", who,
                     (long long)b->channels, shape_of(x, buf, sizeof buf));
        return NULL;
    }
    if (!b->channels) {
        int64_t c = nb_shape(x)[1];
        bool was = build_begin();
        state_spec s[4] = {{"weight", nb_ones(NB_SHAPE(c)), false},
                           {"bias", nb_zeros(NB_SHAPE(c)), false},
                           {"running_mean", nb_zeros(NB_SHAPE(c)), true},
                           {"running_var", nb_ones(NB_SHAPE(c)), true}};
        bool ok = add_state(who, m, 4, s);
        build_end(was);
        if (!ok) return NULL;
        b->weight = s[0].t;
        b->bias = s[1].t;
        b->running_mean = s[2].t;
        b->running_var = s[3].t;
        b->channels = c;
    }
    return nb_batch_norm(x, b->running_mean, b->running_var, b->weight, b->bias, m->training, b->momentum,
                         b->eps);
}

static const nb_module_type batch_norm_type = {"BatchNormalization", batch_norm_forward, NULL};

nb_module *nb_batch_norm_layer(float momentum, float eps) {
    if (!(momentum >= 0 && momentum <= 1) || !(eps > 0)) {
        nb_set_error("nb_batch_norm_layer: momentum %g must be in [0, 1] (PyTorch's convention: 0.1 is "
                     "PyTorch's default, Keras's 0.99 is 0.01 here) and eps %g positive",
                     (double)momentum, (double)eps);
        return NULL;
    }
    batch_norm_layer *b = (batch_norm_layer *)nb__module_new("nb_batch_norm_layer", &batch_norm_type, sizeof *b);
    if (!b) return NULL;
    b->momentum = momentum;
    b->eps = eps;
    return &b->base;
}

/* ---- LayerNormalization ---------------------------------------------------------------
 * x [..., d1..dk] -> same shape; weight (ones) and bias (zeros) [d1..dk],
 * the shape of the last k axes of the first input. */

typedef struct layer_norm_layer {
    nb_module base;
    int k;
    float eps;
    nb_tensor *weight, *bias; /* NULL until built */
} layer_norm_layer;

static nb_tensor *layer_norm_forward(nb_module *m, nb_tensor *x) {
    layer_norm_layer *l = (layer_norm_layer *)m;
    const char *who = "LayerNormalization";
    int nd = nb_ndim(x);
    if (nd < l->k || (l->weight && memcmp(nb_shape(x) + nd - l->k, nb_shape(l->weight),
                                          sizeof(int64_t) * (size_t)l->k) != 0)) {
        char buf[96], want[96] = "its last axes";
        if (l->weight) shape_of(l->weight, want, sizeof want);
        nb_set_error("%s: normalises the last %d axes, %s, got %s", who, l->k, want, shape_of(x, buf, sizeof buf));
        return NULL;
    }
    if (!l->weight) {
        const int64_t *shape = nb_shape(x) + nd - l->k;
        bool was = build_begin();
        state_spec s[2] = {{"weight", nb_ones(l->k, shape), false}, {"bias", nb_zeros(l->k, shape), false}};
        bool ok = add_state(who, m, 2, s);
        build_end(was);
        if (!ok) return NULL;
        l->weight = s[0].t;
        l->bias = s[1].t;
    }
    return nb_layer_norm(x, l->k, l->weight, l->bias, l->eps);
}

static const nb_module_type layer_norm_type = {"LayerNormalization", layer_norm_forward, NULL};

nb_module *nb_layer_norm_layer(int normalized_ndim, float eps) {
    if (normalized_ndim < 1 || normalized_ndim > NB_MAX_DIMS || !(eps > 0)) {
        nb_set_error("nb_layer_norm_layer: normalized_ndim %d must be in [1, %d] and eps %g positive",
                     normalized_ndim, NB_MAX_DIMS, (double)eps);
        return NULL;
    }
    layer_norm_layer *l = (layer_norm_layer *)nb__module_new("nb_layer_norm_layer", &layer_norm_type, sizeof *l);
    if (!l) return NULL;
    l->k = normalized_ndim;
    l->eps = eps;
    return &l->base;
}

/* ---- Embedding ----------------------------------------------------------------------
 * indices [...] -> [..., dim]; weight [num, dim] uniform in ±0.05, Keras's
 * default (PyTorch's nn.Embedding draws N(0, 1)). */

typedef struct embedding_layer {
    nb_module base;
    nb_tensor *weight;
} embedding_layer;

static nb_tensor *embedding_forward(nb_module *m, nb_tensor *x) {
    return nb_embedding(((embedding_layer *)m)->weight, x);
}

static const nb_module_type embedding_type = {"Embedding", embedding_forward, NULL};

nb_module *nb_embedding_layer(int64_t num, int64_t dim) {
    const char *who = "nb_embedding_layer";
    if (num <= 0 || dim <= 0) {
        nb_set_error("%s: num %lld and dim %lld must be positive", who, (long long)num, (long long)dim);
        return NULL;
    }
    embedding_layer *e = (embedding_layer *)nb__module_new(who, &embedding_type, sizeof *e);
    if (!e) return NULL;
    bool was = build_begin();
    nb_tensor *w = nb_empty(NB_SHAPE(num, dim));
    if (w && nb_init_uniform(w, -0.05f, 0.05f, NULL) != 0) w = NULL;
    state_spec s = {"weight", w, false};
    bool ok = add_state(who, &e->base, 1, &s);
    build_end(was);
    if (!ok) {
        nb_module_free(&e->base);
        return NULL;
    }
    e->weight = s.t;
    return &e->base;
}
