/* layers_rnn.c — the recurrent layers: SimpleRNN (tanh), LSTM and GRU over
 * batch-first sequences [batch, time, features], with Keras's manners (the
 * input size taken from the first input, return_sequences) and PyTorch's
 * equations, gate order, parameter names and shapes, and initialisation,
 * so that a checkpoint maps onto torch.nn.RNNCell, LSTMCell and GRUCell
 * weights tensor for tensor:
 *
 *   weight_ih [gates·units, input]   weight_hh [gates·units, units]
 *   bias_ih   [gates·units]          bias_hh   [gates·units]
 *   all U(-1/sqrt(units), 1/sqrt(units)), drawn in that order.
 *
 *   SimpleRNN  h' = tanh(W_ih x + b_ih + W_hh h + b_hh)                 1 gate
 *   LSTM       i, f, g, o = σ, σ, tanh, σ of (W_ih x + b_ih + W_hh h + b_hh)
 *              c' = f·c + i·g,  h' = o·tanh(c')                           4 gates
 *   GRU        r, z = σ(W_i{r,z} x + b_i{r,z} + W_h{r,z} h + b_h{r,z})
 *              n = tanh(W_in x + b_in + r·(W_hn h + b_hn))
 *              h' = (1 - z)·n + z·h                                       3 gates
 *
 * The GRU applies its reset gate after the hidden matmul, as PyTorch does
 * and as Keras does with its default reset_after=True.
 *
 * Each step is written with the public ops (matmul, add, slice, sigmoid,
 * tanh, mul, stack), so backward through time, create_graph and second
 * derivatives need nothing of their own. The input projection does not
 * depend on the state, so it is hoisted out of the time loop: one matmul of
 * all [time·batch, input] rows by W_ihᵀ, leaving one [batch, units] by
 * [units, gates·units] matmul per step on the sequential path.
 */
#include "nn_internal.h"

#include <math.h>
#include <string.h>

typedef enum cell_kind { CELL_RNN, CELL_LSTM, CELL_GRU } cell_kind;

typedef struct rnn_layer {
    nb_module base;
    cell_kind kind;
    int64_t units, input_size; /* input_size 0 until built */
    bool return_sequences;
    nb_tensor *weight_ih, *weight_hh, *bias_ih, *bias_hh; /* NULL until built */
} rnn_layer;

static int gates_of(cell_kind k) { return k == CELL_LSTM ? 4 : k == CELL_GRU ? 3 : 1; }

/* ---- building the parameters -----------------------------------------------------------
 * All four or none; made outside any graph, and out of the caller's scope
 * (the module adopts them). */

static bool rnn_build(const char *who, rnn_layer *r, int64_t in) {
    static const char *const names[4] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"};
    int64_t g = gates_of(r->kind) * r->units;
    float k = (float)(1.0 / sqrt((double)r->units));
    bool was = nb_set_grad_enabled(false);
    nb_scope_begin();
    nb_tensor *t[4] = {nb_empty(NB_SHAPE(g, in)), nb_empty(NB_SHAPE(g, r->units)), nb_empty(NB_SHAPE(g)),
                       nb_empty(NB_SHAPE(g))};
    bool ok = true, failed_before = r->base.failed;
    int before = r->base.nentries;
    for (int i = 0; i < 4 && ok; i++) ok = t[i] && nb_init_uniform(t[i], -k, k, NULL) == 0;
    for (int i = 0; i < 4 && ok; i++) ok = nb_module_add_param(&r->base, names[i], t[i]) != NULL;
    if (!ok) {
        nb__module_truncate(&r->base, before);
        r->base.failed = failed_before;
        nb_set_error("%s: out of memory for its parameters", who);
    }
    nb_scope_end();
    nb_set_grad_enabled(was);
    if (!ok) return false;
    r->weight_ih = t[0];
    r->weight_hh = t[1];
    r->bias_ih = t[2];
    r->bias_hh = t[3];
    r->input_size = in;
    return true;
}

/* ---- the time loop ---------------------------------------------------------------------- */

static const nb_module_type rnn_type, lstm_type, gru_type;

static const char *type_name(cell_kind k) { return k == CELL_LSTM ? "LSTM" : k == CELL_GRU ? "GRU" : "SimpleRNN"; }

/* Whether state (h0 or c0, when given) is [batch, units]. */
static bool state_fits(const char *who, const char *name, const nb_tensor *s, int64_t batch, int64_t units) {
    if (!s || (nb_ndim(s) == 2 && nb_shape(s)[0] == batch && nb_shape(s)[1] == units)) return true;
    char buf[96];
    nb_set_error("%s: expects %s [batch, units] = [%lld,%lld], got %s", who, name, (long long)batch,
                 (long long)units, nb_shape_str(nb_ndim(s), nb_shape(s), buf, sizeof buf));
    return false;
}

/* One step of the cell. xt [batch, gates·units] is the step's input
 * projection (with both biases folded in for SimpleRNN and LSTM, b_ih only
 * for GRU); whh_t is W_hhᵀ. *h and *c are the state, NULL for zeros (the
 * first step without h0 or c0: the hidden matmul is skipped). */
static void cell_step(const rnn_layer *r, nb_tensor *xt, nb_tensor *whh_t, nb_tensor **h, nb_tensor **c) {
    int64_t u = r->units;
    if (r->kind == CELL_RNN) {
        *h = nb_tanh(*h ? nb_add(xt, nb_matmul(*h, whh_t)) : xt);
    } else if (r->kind == CELL_LSTM) {
        nb_tensor *z = *h ? nb_add(xt, nb_matmul(*h, whh_t)) : xt;
        nb_tensor *i = nb_sigmoid(nb_slice(z, 1, 0, u, 1)), *g = nb_tanh(nb_slice(z, 1, 2 * u, 3 * u, 1));
        nb_tensor *o = nb_sigmoid(nb_slice(z, 1, 3 * u, 4 * u, 1));
        /* the forget gate has nothing to forget while c is zero */
        *c = *c ? nb_add(nb_mul(nb_sigmoid(nb_slice(z, 1, u, 2 * u, 1)), *c), nb_mul(i, g)) : nb_mul(i, g);
        *h = nb_mul(o, nb_tanh(*c));
    } else {
        /* hh [batch, 3u], or b_hh [3u] alone when h is zero: slices on the last axis */
        nb_tensor *hh = *h ? nb_add(nb_matmul(*h, whh_t), r->bias_hh) : r->bias_hh;
        nb_tensor *rg = nb_sigmoid(nb_add(nb_slice(xt, 1, 0, u, 1), nb_slice(hh, -1, 0, u, 1)));
        nb_tensor *zg = nb_sigmoid(nb_add(nb_slice(xt, 1, u, 2 * u, 1), nb_slice(hh, -1, u, 2 * u, 1)));
        nb_tensor *n = nb_tanh(nb_add(nb_slice(xt, 1, 2 * u, 3 * u, 1), nb_mul(rg, nb_slice(hh, -1, 2 * u, 3 * u, 1))));
        /* (1 - z)·n + z·h = n + z·(h - n) */
        *h = *h ? nb_add(n, nb_mul(zg, nb_sub(*h, n))) : nb_mul(nb_rsub_scalar(zg, 1), n);
    }
}

/* Up to this many steps the outputs are listed on the stack; longer
 * sequences with return_sequences take one allocation per call. */
enum { STACK_STEPS = 128 };

/* fn: the public function called, or NULL from the module's forward (the
 * messages then name the layer alone, as the other layers' do). */
static nb_tensor *rnn_run(const char *fn, nb_module *m, cell_kind kind, nb_tensor *x, nb_tensor *h0,
                          nb_tensor *c0, nb_tensor **h_n, nb_tensor **c_n) {
    if (h_n) *h_n = NULL;
    if (c_n) *c_n = NULL;
    if (!m || !x) return NULL;
    const nb_module_type *want = kind == CELL_LSTM ? &lstm_type : kind == CELL_GRU ? &gru_type : &rnn_type;
    if (m->type != want) {
        nb_set_error("%s: expects a %s layer, got a %s", fn, type_name(kind), m->type->name);
        return NULL;
    }
    rnn_layer *r = (rnn_layer *)m;
    char who[96], buf[96];
    snprintf(who, sizeof who, "%s%s%s(%lld)", fn ? fn : "", fn ? ": " : "", type_name(kind), (long long)r->units);
    const int64_t *s = nb_shape(x);
    if (nb_ndim(x) != 3 || s[1] < 1 || s[2] < 1 || (r->input_size && s[2] != r->input_size)) {
        char features[32] = "features";
        if (r->input_size) snprintf(features, sizeof features, "%lld features", (long long)r->input_size);
        nb_set_error("%s: expects inputs [batch, time, %s] with time >= 1, got %s", who, features,
                     nb_shape_str(nb_ndim(x), s, buf, sizeof buf));
        return NULL;
    }
    int64_t batch = s[0], steps = s[1], in = s[2], u = r->units, g = gates_of(kind) * u;
    if (!state_fits(who, "h0", h0, batch, u) || !state_fits(who, "c0", c0, batch, u)) return NULL;
    if (!r->weight_ih && !rnn_build(who, r, in)) return NULL;

    nb_tensor *small[STACK_STEPS], **outs = small;
    if (r->return_sequences && steps > STACK_STEPS && !(outs = nb_malloc((size_t)steps * sizeof *outs))) {
        nb_set_error("%s: out of memory", who);
        return NULL;
    }
    nb_scope_begin();
    nb_tensor *wih_t = nb_transpose(r->weight_ih, 0, 1), *whh_t = nb_transpose(r->weight_hh, 0, 1);
    /* b_hh joins b_ih in the projection, except the GRU's, which the reset
     * gate multiplies */
    nb_tensor *bias = kind == CELL_GRU ? r->bias_ih : nb_add(r->bias_ih, r->bias_hh);
    /* time-major, so that each step's rows are one contiguous slice */
    nb_tensor *xs = nb_reshape(nb_transpose(x, 0, 1), NB_SHAPE(steps * batch, in));
    nb_tensor *proj = nb_reshape(nb_add(nb_matmul(xs, wih_t), bias), NB_SHAPE(steps, batch, g));
    nb_tensor *h = h0, *c = c0;
    bool ok = proj && whh_t;
    for (int64_t t = 0; t < steps && ok; t++) {
        nb_tensor *xt = nb_reshape(nb_slice(proj, 0, t, t + 1, 1), NB_SHAPE(batch, g));
        ok = xt != NULL;
        if (ok) cell_step(r, xt, whh_t, &h, &c);
        ok = ok && h && (kind != CELL_LSTM || c);
        if (r->return_sequences) outs[t] = h;
    }
    nb_tensor *out = NULL;
    if (ok) out = r->return_sequences ? nb_stack((int)steps, outs, 1) : h;
    if (out) {
        /* out is h itself without return_sequences: moved out once */
        nb_escape(out);
        if (h_n && h != out) nb_escape(h);
        if (c_n && c != c0) nb_escape(c);
        if (h_n) *h_n = h;
        if (c_n) *c_n = kind == CELL_LSTM ? c : NULL;
    }
    nb_scope_end();
    if (outs != small) nb_free(outs);
    return out;
}

/* ---- the three layers ------------------------------------------------------------------ */

static nb_tensor *rnn_forward(nb_module *m, nb_tensor *x) {
    return rnn_run(NULL, m, CELL_RNN, x, NULL, NULL, NULL, NULL);
}
static nb_tensor *lstm_forward(nb_module *m, nb_tensor *x) {
    return rnn_run(NULL, m, CELL_LSTM, x, NULL, NULL, NULL, NULL);
}
static nb_tensor *gru_forward(nb_module *m, nb_tensor *x) {
    return rnn_run(NULL, m, CELL_GRU, x, NULL, NULL, NULL, NULL);
}

static const nb_module_type rnn_type = {"SimpleRNN", rnn_forward, NULL};
static const nb_module_type lstm_type = {"LSTM", lstm_forward, NULL};
static const nb_module_type gru_type = {"GRU", gru_forward, NULL};

static nb_module *layer_new(const char *who, cell_kind kind, int64_t units, const nb_rnn_opts *opts) {
    nb_rnn_opts o = opts ? *opts : (nb_rnn_opts){0};
    if (units <= 0 || o.input_size < 0) {
        nb_set_error("%s: units must be positive and input_size >= 0 (0: from the first input), got %lld and %lld",
                     who, (long long)units, (long long)o.input_size);
        return NULL;
    }
    const nb_module_type *type = kind == CELL_LSTM ? &lstm_type : kind == CELL_GRU ? &gru_type : &rnn_type;
    rnn_layer *r = (rnn_layer *)nb__module_new(who, type, sizeof *r);
    if (!r) return NULL;
    r->kind = kind;
    r->units = units;
    r->return_sequences = o.return_sequences;
    if (o.input_size > 0 && !rnn_build(who, r, o.input_size)) {
        nb_module_free(&r->base);
        return NULL;
    }
    return &r->base;
}

nb_module *nb_rnn_layer(int64_t units, const nb_rnn_opts *opts) {
    return layer_new("nb_rnn_layer", CELL_RNN, units, opts);
}
nb_module *nb_lstm_layer(int64_t units, const nb_rnn_opts *opts) {
    return layer_new("nb_lstm_layer", CELL_LSTM, units, opts);
}
nb_module *nb_gru_layer(int64_t units, const nb_rnn_opts *opts) {
    return layer_new("nb_gru_layer", CELL_GRU, units, opts);
}

nb_tensor *nb_rnn_run(nb_module *m, nb_tensor *x, nb_tensor *h0, nb_tensor **h_n) {
    return rnn_run("nb_rnn_run", m, CELL_RNN, x, h0, NULL, h_n, NULL);
}
nb_tensor *nb_lstm_run(nb_module *m, nb_tensor *x, nb_tensor *h0, nb_tensor *c0, nb_tensor **h_n,
                       nb_tensor **c_n) {
    return rnn_run("nb_lstm_run", m, CELL_LSTM, x, h0, c0, h_n, c_n);
}
nb_tensor *nb_gru_run(nb_module *m, nb_tensor *x, nb_tensor *h0, nb_tensor **h_n) {
    return rnn_run("nb_gru_run", m, CELL_GRU, x, h0, NULL, h_n, NULL);
}
