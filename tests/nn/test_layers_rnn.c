/* test_layers_rnn.c — the recurrent layers of nn/layers_rnn.c (SimpleRNN,
 * LSTM, GRU) and their functional forms nb_rnn_run, nb_lstm_run, nb_gru_run.
 *
 * Values of one and two steps are checked against numbers worked out from
 * PyTorch's published equations (RNNCell, LSTMCell, GRUCell) for the small
 * weights written out below, in double precision outside nabla; one step
 * of each is also shown by hand in a comment. Then: gradcheck of first and
 * second order with respect to the input, the initial states and every
 * parameter; the final states against the outputs; truncated
 * backpropagation by detaching the carried state; the parameters' names,
 * shapes and initialisation; the layers in a model (summary, a fit whose
 * loss falls), a checkpoint round trip, and the refusals of bad input and
 * failed allocations.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

TestSuite(layers_rnn, NB_TEST_HOOKS);

/* Writes the four parameters, in their order weight_ih, weight_hh,
 * bias_ih, bias_hh. */
static void set_params(nb_module *m, const float *wih, const float *whh, const float *bih, const float *bhh) {
    int n = 0;
    nb_tensor **p = nb_module_parameters(m, &n);
    cr_assert_eq(n, 4, "%s", nb_error() ? nb_error() : "");
    const float *src[4] = {wih, whh, bih, bhh};
    for (int i = 0; i < 4; i++) memcpy(nb_data_mut(p[i]), src[i], (size_t)nb_numel(p[i]) * sizeof(float));
}

/* ---- values ------------------------------------------------------------------------------ */

/* SimpleRNN, input 2, units 2. */
static const float rnn_wih[] = {0.5f, -0.25f, 0.1f, 0.3f}, rnn_whh[] = {0.2f, -0.4f, 0.6f, 0.1f};
static const float rnn_bih[] = {0.1f, -0.2f}, rnn_bhh[] = {0.05f, 0.0f};

Test(layers_rnn, rnn_values_of_two_steps) {
    nb_module *m = nb_rnn_layer(2, &(nb_rnn_opts){.input_size = 2, .return_sequences = true});
    cr_assert_not_null(m, "%s", nb_error());
    set_params(m, rnn_wih, rnn_whh, rnn_bih, rnn_bhh);
    /* batch 2, time 2. First row, first step, from h = 0:
     *   W_ih x = [0.5·1 - 0.25·2, 0.1·1 + 0.3·2] = [0, 0.7]
     *   + b_ih + b_hh = [0.15, 0.5], tanh -> [0.148885, 0.462117] */
    nb_tensor *x = nb_from_array(NB_SHAPE(2, 2, 2), (float[]){1, 2, 0.5f, -1, -1, 0, 0, 3});
    nb_tensor *y = nb_module_forward(m, x);
    EXPECT_SHAPE(y, 2, 2, 2);
    EXPECT_VALUES(y, 1e-5, 0.148885f, 0.462117f, 0.458121f, -0.304487f, -0.336376f, -0.291313f, -0.501082f,
                  0.437426f);
    /* from h0 = [0.5, -0.5] (first row only) */
    nb_tensor *hn;
    y = nb_rnn_run(m, nb_slice(x, 0, 0, 1, 1), nb_from_array(NB_SHAPE(1, 2), (float[]){0.5f, -0.5f}), &hn);
    EXPECT_VALUES(y, 1e-5, 0.421899f, 0.635149f, 0.446500f, -0.132561f);
    EXPECT_VALUES(hn, 1e-5, 0.446500f, -0.132561f);
    nb_module_free(m);
}

/* LSTM, input 1, units 2: rows of the four gates i, f, g, o, two each. */
static const float lstm_wih[] = {0.1f, 0.2f, -0.3f, 0.4f, 0.5f, -0.6f, 0.7f, 0.8f};
static const float lstm_whh[] = {0.1f, 0.0f, 0.0f, 0.1f, 0.2f, -0.1f, -0.2f, 0.3f,
                                 0.3f, 0.2f, 0.1f, -0.3f, -0.1f, 0.2f, 0.4f, 0.1f};
static const float lstm_bih[] = {0.0f, 0.1f, 0.2f, 0.3f, -0.1f, -0.2f, 0.0f, 0.1f};
static const float lstm_bhh[] = {0.1f, 0.0f, -0.1f, 0.0f, 0.2f, 0.0f, 0.0f, -0.1f};

Test(layers_rnn, lstm_values_of_two_steps) {
    nb_module *m = nb_lstm_layer(2, &(nb_rnn_opts){.input_size = 1, .return_sequences = true});
    cr_assert_not_null(m, "%s", nb_error());
    set_params(m, lstm_wih, lstm_whh, lstm_bih, lstm_bhh);
    /* First step from zero state, x = 1, unit 0: the pre-activations are
     *   i: 0.1 + 0 + 0.1 = 0.2    f: -0.3 + 0.2 + 0.2 = 0.1 (not used: c = 0)
     *   g: 0.5 - 0.1 + 0.2 = 0.6  o: 0.7 + 0 + 0 = 0.7
     *   c = σ(0.2)·tanh(0.6) = 0.549834·0.537050 = 0.295288
     *   h = σ(0.7)·tanh(c) = 0.668188·0.286993 = 0.191766 */
    nb_tensor *x = nb_from_array(NB_SHAPE(1, 2, 1), (float[]){1, -2});
    nb_tensor *hn, *cn;
    nb_tensor *y = nb_lstm_run(m, x, NULL, NULL, &hn, &cn);
    EXPECT_SHAPE(y, 1, 2, 2);
    EXPECT_VALUES(y, 1e-5, 0.191766f, -0.251128f, -0.026116f, 0.034763f);
    EXPECT_VALUES(hn, 1e-5, -0.026116f, 0.034763f);
    EXPECT_VALUES(cn, 1e-5, -0.140550f, 0.200951f);
    /* from h0 = [0.5, -0.5], c0 = [1, -1] */
    y = nb_lstm_run(m, x, nb_from_array(NB_SHAPE(1, 2), (float[]){0.5f, -0.5f}),
                    nb_from_array(NB_SHAPE(1, 2), (float[]){1, -1}), &hn, &cn);
    EXPECT_VALUES(y, 1e-5, 0.424220f, -0.520902f, 0.038377f, 0.009152f);
    EXPECT_VALUES(cn, 1e-5, 0.222162f, 0.049494f);
    /* c0 alone (h0 zero) is not the same as neither */
    nb_tensor *only_c = nb_lstm_run(m, x, NULL, nb_from_array(NB_SHAPE(1, 2), (float[]){1, -1}), NULL, NULL);
    cr_assert_neq(nb_data(only_c)[0], 0.191766f);
    nb_module_free(m);
}

/* GRU, input 1, units 2: rows of the gates r, z, n, two each. */
static const float gru_wih[] = {0.1f, 0.2f, -0.3f, 0.4f, 0.5f, -0.6f};
static const float gru_whh[] = {0.1f, 0.0f, 0.0f, 0.1f, 0.2f, -0.1f, -0.2f, 0.3f, 0.3f, 0.2f, 0.1f, -0.3f};
static const float gru_bih[] = {0.0f, 0.1f, 0.2f, 0.3f, -0.1f, -0.2f};
static const float gru_bhh[] = {0.1f, 0.0f, -0.1f, 0.0f, 0.2f, 0.5f};

Test(layers_rnn, gru_values_of_two_steps) {
    nb_module *m = nb_gru_layer(2, &(nb_rnn_opts){.input_size = 1, .return_sequences = true});
    cr_assert_not_null(m, "%s", nb_error());
    set_params(m, gru_wih, gru_whh, gru_bih, gru_bhh);
    /* First step from zero state, x = 1, unit 0:
     *   r = σ(0.1 + 0 + 0.1) = σ(0.2) = 0.549834 (W_hr h = 0)
     *   z = σ(-0.3 + 0.2 - 0.1) = σ(-0.2) = 0.450166
     *   n = tanh(0.5 - 0.1 + r·(0 + 0.2)) = tanh(0.509967) = 0.469965
     *   h = (1 - z)·n = 0.258378 — the reset gate multiplies b_hn too */
    nb_tensor *x = nb_from_array(NB_SHAPE(1, 2, 1), (float[]){1, -2});
    nb_tensor *hn;
    nb_tensor *y = nb_gru_run(m, x, NULL, &hn);
    EXPECT_VALUES(y, 1e-5, 0.258378f, -0.156651f, -0.062507f, 0.490351f);
    EXPECT_VALUES(hn, 1e-5, -0.062507f, 0.490351f);
    y = nb_gru_run(m, x, nb_from_array(NB_SHAPE(1, 2), (float[]){0.5f, -0.5f}), &hn);
    EXPECT_VALUES(y, 1e-5, 0.496617f, -0.455409f, 0.121819f, 0.432371f);
    nb_module_free(m);
}

/* ---- states and shapes -------------------------------------------------------------------- */

typedef nb_module *(*ctor)(int64_t, const nb_rnn_opts *);

/* The forward of each kind through its run function. */
static nb_tensor *run_any(nb_module *m, nb_tensor *x, nb_tensor *h0, nb_tensor *c0, nb_tensor **hn,
                          nb_tensor **cn) {
    const char *type = m->type->name;
    if (strcmp(type, "LSTM") == 0) return nb_lstm_run(m, x, h0, c0, hn, cn);
    if (cn) *cn = NULL;
    return strcmp(type, "GRU") == 0 ? nb_gru_run(m, x, h0, hn) : nb_rnn_run(m, x, h0, hn);
}

static void expect_same(const nb_tensor *a, const nb_tensor *b) {
    cr_assert(nb_same_shape(a, b));
    cr_assert_eq(memcmp(nb_data(a), nb_data(b), (size_t)nb_numel(a) * sizeof(float)), 0);
}

Test(layers_rnn, final_state_is_the_last_output_and_shapes_follow_return_sequences) {
    ctor ctors[3] = {nb_rnn_layer, nb_lstm_layer, nb_gru_layer};
    for (int k = 0; k < 3; k++) {
        nb_module *seq = ctors[k](3, &(nb_rnn_opts){.return_sequences = true});
        nb_module *last = ctors[k](3, NULL);
        nb_tensor *x = nb_randn(NB_SHAPE(2, 4, 5));
        nb_tensor *y = nb_module_forward(seq, x);
        EXPECT_SHAPE(y, 2, 4, 3);
        /* the same weights in both */
        int n;
        nb_tensor **ps = nb_module_parameters(seq, &n);
        nb_module_forward(last, x);
        nb_tensor **pl = nb_module_parameters(last, &n);
        for (int i = 0; i < n; i++) memcpy(nb_data_mut(pl[i]), nb_data(ps[i]), (size_t)nb_numel(ps[i]) * sizeof(float));
        nb_tensor *h = nb_module_forward(last, x), *hn, *cn;
        EXPECT_SHAPE(h, 2, 3);
        nb_tensor *step3 = nb_squeeze(nb_slice(y, 1, 3, 4, 1), 1);
        expect_same(h, step3);
        nb_tensor *y2 = run_any(seq, x, NULL, NULL, &hn, &cn);
        expect_same(y2, y);
        expect_same(hn, step3);
        if (k == 1) {
            EXPECT_SHAPE(cn, 2, 3);
            /* h = o·tanh(c): |h| < |tanh(c)| elementwise, and c continues the sequence */
            for (int i = 0; i < 6; i++) cr_assert(fabsf(nb_data(hn)[i]) <= fabsf(tanhf(nb_data(cn)[i])) + 1e-6f);
            /* running the 4 steps as 3 then 1, carrying (h, c), gives the same */
            nb_tensor *h3, *c3, *h4, *c4;
            run_any(seq, nb_slice(x, 1, 0, 3, 1), NULL, NULL, &h3, &c3);
            run_any(seq, nb_slice(x, 1, 3, 4, 1), h3, c3, &h4, &c4);
            for (int i = 0; i < 6; i++) {
                cr_assert(fabsf(nb_data(h4)[i] - nb_data(hn)[i]) < 1e-6f);
                cr_assert(fabsf(nb_data(c4)[i] - nb_data(cn)[i]) < 1e-6f);
            }
        } else {
            cr_assert_null(cn);
            nb_tensor *h3, *h4;
            run_any(seq, nb_slice(x, 1, 0, 3, 1), NULL, NULL, &h3, NULL);
            run_any(seq, nb_slice(x, 1, 3, 4, 1), h3, NULL, &h4, NULL);
            for (int i = 0; i < 6; i++) cr_assert(fabsf(nb_data(h4)[i] - nb_data(hn)[i]) < 1e-6f);
        }
        nb_module_free(seq);
        nb_module_free(last);
    }
}

Test(layers_rnn, parameters_have_pytorch_names_shapes_and_init) {
    ctor ctors[3] = {nb_rnn_layer, nb_lstm_layer, nb_gru_layer};
    int gates[3] = {1, 4, 3};
    const char *names[4] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"};
    for (int k = 0; k < 3; k++) {
        nb_module *m = ctors[k](64, NULL);
        int n = -1;
        nb_module_parameters(m, &n);
        cr_assert_eq(n, 0, "nothing built before the first input");
        nb_module_forward(m, nb_zeros(NB_SHAPE(1, 1, 10)));
        nb_tensor **p = nb_module_parameters(m, &n);
        cr_assert_eq(n, 4);
        for (int i = 0; i < 4; i++) cr_assert_str_eq(nb_module_parameter_name(m, i), names[i]);
        int64_t g = 64 * gates[k];
        EXPECT_SHAPE(p[0], g, 10);
        EXPECT_SHAPE(p[1], g, 64);
        EXPECT_SHAPE(p[2], g);
        EXPECT_SHAPE(p[3], g);
        /* U(-1/8, 1/8): within the bounds, and spread over them */
        for (int i = 0; i < 4; i++) {
            float lo = 1, hi = -1;
            for (int64_t j = 0; j < nb_numel(p[i]); j++) {
                lo = fminf(lo, nb_data(p[i])[j]);
                hi = fmaxf(hi, nb_data(p[i])[j]);
            }
            cr_assert(lo >= -0.125f && hi < 0.125f && lo < -0.1f && hi > 0.1f, "param %d in [%g, %g]", i, lo, hi);
        }
        nb_module_free(m);
    }
    /* input_size builds at once */
    nb_module *m = nb_lstm_layer(3, &(nb_rnn_opts){.input_size = 7});
    int n;
    nb_tensor **p = nb_module_parameters(m, &n);
    cr_assert_eq(n, 4);
    EXPECT_SHAPE(p[0], 12, 7);
    nb_module_free(m);
}

/* ---- gradients ---------------------------------------------------------------------------- */

/* inputs: x, h0, c0 (LSTM only), then the four parameters of ctx. The
 * output joins every step's h and the final c, so that each is checked. */
static nb_tensor *f_run(nb_tensor *const *in, void *ctx) {
    nb_module *m = ctx;
    bool lstm = strcmp(m->type->name, "LSTM") == 0;
    nb_tensor *cn;
    nb_tensor *y = run_any(m, in[0], in[1], lstm ? in[2] : NULL, NULL, &cn);
    if (!lstm) return y;
    nb_tensor *parts[2] = {nb_reshape(y, NB_SHAPE(-1)), nb_reshape(cn, NB_SHAPE(-1))};
    return nb_concat(2, parts, 0);
}

static void gradcheck_layer(ctor make, bool with_c) {
    nb_module *m = make(2, &(nb_rnn_opts){.input_size = 2, .return_sequences = true});
    cr_assert_not_null(m, "%s", nb_error());
    int n;
    nb_tensor **p = nb_module_parameters(m, &n);
    /* larger weights than the init, so that the gates leave their linear range */
    for (int i = 0; i < n; i++)
        for (int64_t j = 0; j < nb_numel(p[i]); j++) nb_data_mut(p[i])[j] *= 2.5f;
    nb_tensor *in[7] = {nb_test_leaf(-1, 1, NB_SHAPE(2, 3, 2)), nb_test_leaf(-0.8f, 0.8f, NB_SHAPE(2, 2))};
    int k = 2;
    if (with_c) in[k++] = nb_test_leaf(-1, 1, NB_SHAPE(2, 2));
    for (int i = 0; i < 4; i++) in[k++] = p[i];
    nb_test_gradcheck(f_run, m, k, in, true);
    nb_module_free(m);
}

Test(layers_rnn, rnn_gradcheck_first_and_second_order) { gradcheck_layer(nb_rnn_layer, false); }
Test(layers_rnn, lstm_gradcheck_first_and_second_order) { gradcheck_layer(nb_lstm_layer, true); }
Test(layers_rnn, gru_gradcheck_first_and_second_order) { gradcheck_layer(nb_gru_layer, false); }

/* inputs: x only, zero initial state (the first step skips the hidden matmul) */
static nb_tensor *f_forward(nb_tensor *const *in, void *ctx) { return nb_module_forward(ctx, in[0]); }

Test(layers_rnn, gradcheck_from_zero_state) {
    ctor ctors[3] = {nb_rnn_layer, nb_lstm_layer, nb_gru_layer};
    for (int k = 0; k < 3; k++) {
        nb_module *m = ctors[k](3, &(nb_rnn_opts){.input_size = 2});
        int n;
        nb_tensor **p = nb_module_parameters(m, &n);
        nb_tensor *in[5] = {nb_test_leaf(-2, 2, NB_SHAPE(2, 2, 2)), p[0], p[1], p[2], p[3]};
        nb_test_gradcheck(f_forward, m, 5, in, false);
        nb_module_free(m);
    }
}

Test(layers_rnn, detaching_the_carried_state_cuts_the_graph) {
    ctor ctors[3] = {nb_rnn_layer, nb_lstm_layer, nb_gru_layer};
    for (int k = 0; k < 3; k++) {
        nb_module *m = ctors[k](3, &(nb_rnn_opts){.input_size = 2});
        nb_tensor *x1 = nb_test_leaf(-1, 1, NB_SHAPE(2, 3, 2)), *x2 = nb_test_leaf(-1, 1, NB_SHAPE(2, 3, 2));
        nb_tensor *h1, *c1, *g[2];
        run_any(m, x1, NULL, NULL, &h1, &c1);
        /* carried as is, the second chunk's loss reaches the first chunk */
        nb_tensor *loss = nb_sum(run_any(m, x2, h1, c1, NULL, NULL), NB_ALL, false);
        cr_assert_eq(nb_grad(1, &loss, NULL, 2, (nb_tensor *[]){x1, x2}, g,
                             &(nb_grad_opts){.allow_unused = true}), 0, "%s", nb_error());
        cr_assert_not_null(g[0]);
        /* detached, it does not: truncated backpropagation through time */
        nb_tensor *h1d = nb_detach(h1), *c1d = c1 ? nb_detach(c1) : NULL;
        loss = nb_sum(run_any(m, x2, h1d, c1d, NULL, NULL), NB_ALL, false);
        cr_assert_eq(nb_grad(1, &loss, NULL, 2, (nb_tensor *[]){x1, x2}, g,
                             &(nb_grad_opts){.allow_unused = true}), 0, "%s", nb_error());
        cr_assert_null(g[0]);
        cr_assert_not_null(g[1]);
        nb_module_free(m);
    }
}

Test(layers_rnn, results_do_not_depend_on_the_thread_count) {
    /* large enough that matmul splits its work between threads (from
     * m·n·k = 96³ on): the projection [96, 64]·[64, 384] and each step's
     * [32, 96]·[96, 384] */
    enum { NX = 32 * 3 * 64, NW = 384 * 96 };
    nb_module *m = nb_lstm_layer(96, &(nb_rnn_opts){.input_size = 64, .return_sequences = true});
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(32, 3, 64));
    int n, before = nb_get_num_threads();
    nb_tensor **p = nb_module_parameters(m, &n);
    float *seen[2][3] = {{NULL}};
    for (int run = 0; run < 2; run++) {
        nb_set_num_threads(run + 1);
        nb_tensor *g[2], *y = nb_module_forward(m, x);
        nb_tensor *loss = nb_sum(nb_square(y), NB_ALL, false);
        cr_assert_eq(nb_grad(1, &loss, NULL, 2, (nb_tensor *[]){x, p[1]}, g, NULL), 0, "%s", nb_error());
        seen[run][0] = memcpy(malloc(sizeof(float) * NX), nb_data(g[0]), sizeof(float) * NX);
        seen[run][1] = memcpy(malloc(sizeof(float) * NW), nb_data(g[1]), sizeof(float) * NW);
        seen[run][2] = memcpy(malloc(sizeof(float) * 32 * 3 * 96), nb_data(y), sizeof(float) * 32 * 3 * 96);
    }
    nb_set_num_threads(before);
    cr_expect_eq(memcmp(seen[0][0], seen[1][0], sizeof(float) * NX), 0);
    cr_expect_eq(memcmp(seen[0][1], seen[1][1], sizeof(float) * NW), 0);
    cr_expect_eq(memcmp(seen[0][2], seen[1][2], sizeof(float) * 32 * 3 * 96), 0);
    for (int i = 0; i < 6; i++) free(seen[i / 3][i % 3]);
    nb_module_free(m);
}

/* ---- in a model --------------------------------------------------------------------------- */

typedef struct capture {
    char buf[4096];
    FILE *f;
} capture;

Test(layers_rnn, summary_shows_the_layers) {
    nb_model *model = nb_model_sequential();
    cr_assert_eq(nb_model_add(model, nb_lstm_layer(8, &(nb_rnn_opts){.return_sequences = true})), 0);
    cr_assert_eq(nb_model_add(model, nb_gru_layer(4, NULL)), 0);
    cr_assert_eq(nb_model_add(model, nb_dense(1, "linear", 0)), 0);
    cr_assert_eq(nb_model_compile(model, "adam", "mse", NULL), 0);
    /* the shapes are known after the first fit */
    nb_tensor *x = nb_rand(NB_SHAPE(4, 5, 1)), *y = nb_rand(NB_SHAPE(4, 1));
    nb_fit_opts o = nb_fit_defaults();
    o.verbose = 0;
    nb_history_free(nb_model_fit(model, x, y, &o));
    capture c = {{0}, NULL};
    c.f = fmemopen(c.buf, sizeof c.buf - 1, "w");
    nb_model_summary(model, c.f);
    fclose(c.f);
    /* LSTM: 4·8·(1 + 8) weights + 2·32 biases = 352; GRU: 3·4·(8 + 4) + 2·12 = 168 */
    const char *lines[] = {" lstm (LSTM)                 (None, 5, 8)              352\n",
                           " gru (GRU)                   (None, 4)                 168\n",
                           " dense (Dense)               (None, 1)                 5\n", "Total params: 525\n"};
    for (size_t i = 0; i < sizeof lines / sizeof *lines; i++)
        cr_expect(strstr(c.buf, lines[i]) != NULL, "summary lacks \"%s\":\n%s", lines[i], c.buf);
    nb_model_free(model);
}

/* Sequences of five values in {0, 1}: the target is their count. */
static void fit_counts(ctor make) {
    nb_manual_seed(3);
    nb_model *model = nb_model_sequential();
    nb_module *layer = make(8, &(nb_rnn_opts){.input_size = 1});
    const char *type = layer->type->name;
    cr_assert_eq(nb_model_add(model, layer), 0);
    cr_assert_eq(nb_model_add(model, nb_dense(1, "linear", 8)), 0);
    cr_assert_eq(nb_model_compile(model, "adam", "mse", NULL), 0);
    int n;
    nb_tensor **p = nb_model_parameters(model, &n);
    nb_adam_opts adam = nb_adam_defaults();
    adam.lr = 0.02f;
    cr_assert_eq(nb_model_set_optimizer(model, nb_adam(n, p, &adam)), 0, "%s", nb_error());
    enum { N = 64, T = 5 };
    nb_tensor *x = nb_empty(NB_SHAPE(N, T, 1)), *y = nb_empty(NB_SHAPE(N, 1));
    for (int i = 0; i < N; i++) {
        float count = 0;
        for (int t = 0; t < T; t++) count += nb_data_mut(x)[i * T + t] = (float)(nb_generator_next(nb_default_generator()) & 1);
        nb_data_mut(y)[i] = count;
    }
    nb_fit_opts o = nb_fit_defaults();
    o.verbose = 0;
    o.epochs = 40;
    o.batch_size = 16;
    nb_history *h = nb_model_fit(model, x, y, &o);
    cr_assert_not_null(h, "%s", nb_error());
    const float *loss = nb_history_get(h, "loss");
    int e = nb_history_epochs(h);
    cr_assert_eq(e, 40);
    /* the count's variance is 5/4: predicting the mean scores 1.25 */
    cr_assert(loss[e - 1] < 0.05f * loss[0] && loss[e - 1] < 0.1f, "%s: loss %g -> %g", type, loss[0], loss[e - 1]);
    nb_history_free(h);
    nb_model_free(model);
}

Test(layers_rnn, rnn_learns_to_count_in_fit) { fit_counts(nb_rnn_layer); }
Test(layers_rnn, lstm_learns_to_count_in_fit) { fit_counts(nb_lstm_layer); }
Test(layers_rnn, gru_learns_to_count_in_fit) { fit_counts(nb_gru_layer); }

Test(layers_rnn, checkpoint_round_trip) {
    char dir[] = "/tmp/nb_test_rnn_XXXXXX", path[64];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/lstm.safetensors", dir);
    nb_module *a = nb_lstm_layer(3, &(nb_rnn_opts){.input_size = 2});
    nb_module *b = nb_lstm_layer(3, &(nb_rnn_opts){.input_size = 2});
    nb_tensor *x = nb_randn(NB_SHAPE(2, 4, 2));
    nb_tensor *ya = nb_module_forward(a, x);
    cr_assert_eq(nb_save_parameters(a, path, NULL), 0, "%s", nb_error());
    cr_assert_eq(nb_load_parameters(b, path, NULL), 4, "%s", nb_error());
    expect_same(nb_module_forward(b, x), ya);
    /* the names in the file are PyTorch's */
    nb_safetensors *st = nb_safetensors_read(path);
    cr_assert_not_null(st);
    cr_assert_geq(nb_safetensors_find(st, "weight_ih"), 0);
    cr_assert_geq(nb_safetensors_find(st, "bias_hh"), 0);
    nb_safetensors_free(st);
    /* a training checkpoint (parameters and Adam's state) too */
    int n;
    nb_tensor **pa = nb_module_parameters(a, &n);
    nb_optimizer *opt = nb_adam(n, pa, NULL);
    nb_backward(nb_sum(nb_module_forward(a, x), NB_ALL, false));
    nb_optimizer_step(opt);
    ya = nb_module_forward(a, x);
    snprintf(path, sizeof path, "%s/step.safetensors", dir);
    cr_assert_eq(nb_save_checkpoint(path, a, opt, NULL, 1), 0, "%s", nb_error());
    int64_t epoch = 0;
    cr_assert_eq(nb_load_checkpoint(path, b, NULL, NULL, &epoch), 0, "%s", nb_error());
    cr_assert_eq(epoch, 1);
    expect_same(nb_module_forward(b, x), ya);
    nb_optimizer_free(opt);
    unlink(path);
    snprintf(path, sizeof path, "%s/lstm.safetensors", dir);
    /* a GRU's weights do not fit an LSTM */
    nb_module *g = nb_gru_layer(3, &(nb_rnn_opts){.input_size = 2});
    cr_assert_eq(nb_load_parameters(g, path, NULL), -1);
    nb_module_free(a);
    nb_module_free(b);
    nb_module_free(g);
    unlink(path);
    rmdir(dir);
}

/* ---- bad input ---------------------------------------------------------------------------- */

Test(layers_rnn, bad_input_is_refused) {
    cr_assert_null(nb_lstm_layer(0, NULL));
    EXPECT_ERROR("nb_lstm_layer", "units");
    cr_assert_null(nb_gru_layer(2, &(nb_rnn_opts){.input_size = -1}));
    EXPECT_ERROR("nb_gru_layer", "input_size");

    nb_module *m = nb_lstm_layer(3, NULL);
    cr_assert_null(nb_module_forward(m, nb_zeros(NB_SHAPE(2, 4))));
    EXPECT_ERROR("LSTM(3)", "[batch, time, features]", "[2,4]");
    cr_assert_null(nb_module_forward(m, nb_zeros(NB_SHAPE(2, 0, 4))));
    EXPECT_ERROR("LSTM(3)", "time >= 1", "[2,0,4]");
    nb_tensor *x = nb_zeros(NB_SHAPE(2, 5, 4));
    cr_assert_not_null(nb_module_forward(m, x)); /* builds for 4 features */
    cr_assert_null(nb_module_forward(m, nb_zeros(NB_SHAPE(2, 5, 6))));
    EXPECT_ERROR("LSTM(3)", "4 features", "[2,5,6]");
    nb_tensor *hn = x, *cn = x;
    cr_assert_null(nb_lstm_run(m, x, nb_zeros(NB_SHAPE(2, 4)), NULL, &hn, &cn));
    EXPECT_ERROR("nb_lstm_run", "LSTM(3)", "h0", "[2,3]", "[2,4]");
    cr_assert(hn == NULL && cn == NULL);
    cr_assert_null(nb_lstm_run(m, x, NULL, nb_zeros(NB_SHAPE(3)), NULL, NULL));
    EXPECT_ERROR("nb_lstm_run", "c0", "[2,3]", "[3]");
    cr_assert_null(nb_gru_run(m, x, NULL, NULL));
    EXPECT_ERROR("nb_gru_run", "GRU", "LSTM");
    nb_module *d = nb_dense(3, NULL, 0);
    cr_assert_null(nb_rnn_run(d, x, NULL, NULL));
    EXPECT_ERROR("nb_rnn_run", "SimpleRNN", "Dense");
    nb_module *r = nb_rnn_layer(3, NULL);
    cr_assert_null(nb_rnn_run(r, x, nb_zeros(NB_SHAPE(1, 3)), NULL));
    EXPECT_ERROR("nb_rnn_run", "SimpleRNN(3)", "h0", "[1,3]");

    /* NULL passes through without a second message */
    nb_clear_error();
    cr_assert_null(nb_lstm_run(m, NULL, NULL, NULL, &hn, NULL));
    cr_assert_null(hn);
    cr_assert_null(nb_lstm_run(NULL, x, NULL, NULL, NULL, NULL));
    cr_assert_null(nb_module_forward(m, NULL));
    cr_assert_null(nb_error());
    nb_module_free(m);
    nb_module_free(d);
    nb_module_free(r);
}

Test(layers_rnn, failed_allocations_give_null_and_leak_nothing) {
    ctor ctors[3] = {nb_rnn_layer, nb_lstm_layer, nb_gru_layer};
    for (int k = 0; k < 3; k++) {
        nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(2, 3, 2));
        for (int64_t fail = 1;; fail++) {
            nb_module *m = ctors[k](3, &(nb_rnn_opts){.return_sequences = true});
            nb_tensor *hn;
            nb_scope_begin();
            nb_test_alloc a = {.fail_at = fail};
            nb_set_alloc_hook(nb_test_alloc_hook, &a);
            nb_tensor *y = run_any(m, x, NULL, NULL, &hn, NULL);
            nb_set_alloc_hook(NULL, NULL);
            if (a.fired) {
                cr_assert_null(y, "allocation %lld failed unnoticed", (long long)fail);
                cr_assert_null(hn);
                cr_assert_not_null(nb_error());
            } else {
                cr_assert_not_null(y, "%s", nb_error());
                cr_assert_eq(nb_backward(nb_sum(y, NB_ALL, false)), 0, "%s", nb_error());
            }
            nb_scope_end();
            nb_module_free(m);
            if (!a.fired) break;
        }
    }
}
