/* test_debug.c — looking inside modules: forward and backward hooks (the
 * order they fire in, their effect, removal), the graph drawn with the
 * parameters' names, gradcheck over all of a module's parameters, tried on
 * a module whose op has a deliberately wrong backward, and anomaly mode
 * placing a layer's ops at the line that called the layer.
 */
#include <string.h>

#include "test_util.h"
/* source locations for anomaly mode, the other way to turn them on than
 * -DNB_LOCATIONS: the header, after nabla.h */
#include "nb_locations.h"

TestSuite(nn_debug, NB_TEST_HOOKS);

/* ---- hooks ------------------------------------------------------------------------ */

typedef struct hook_log {
    char order[32];
    float scale; /* what the backward hooks multiply by */
} hook_log;

static void note(hook_log *log, char c) {
    size_t n = strlen(log->order);
    if (n + 1 < sizeof log->order) log->order[n] = c;
}

typedef struct tagged {
    hook_log *log;
    char tag;
} tagged;

static nb_tensor *pre(nb_module *m, nb_tensor *x, void *user) {
    (void)m, (void)x;
    note(((tagged *)user)->log, ((tagged *)user)->tag);
    return NULL;
}
static nb_tensor *post(nb_module *m, nb_tensor *x, nb_tensor *y, void *user) {
    (void)m, (void)x, (void)y;
    note(((tagged *)user)->log, ((tagged *)user)->tag);
    return NULL;
}
static nb_tensor *tripling(nb_module *m, nb_tensor *x, nb_tensor *y, void *user) {
    (void)m, (void)x, (void)user;
    return nb_mul_scalar(y, 3);
}
static nb_tensor *back(nb_module *m, nb_tensor *g, void *user) {
    (void)m;
    tagged *t = user;
    note(t->log, t->tag);
    return t->log->scale == 1 ? NULL : nb_mul_scalar(g, t->log->scale);
}

/* y = W2 (W1 x + b1) + b2 with fixed weights, so that the gradients are
 * known: two Linear layers 2 -> 2 -> 1. */
static nb_module *two_layers(void) {
    nb_module *seq = nb_sequential(2, (nb_module *[]){nb_linear(2, 2), nb_linear(2, 1)});
    int n;
    nb_tensor **p = nb_module_parameters(seq, &n);
    cr_assert_eq(n, 4);
    for (int i = 0; i < n; i++)
        for (int64_t k = 0; k < nb_numel(p[i]); k++) nb_data_mut(p[i])[k] = 0.5f + 0.25f * (float)k;
    return seq;
}

/* The gradient of the first layer's weight after backward of sum(m(x)). */
static void backward_of(nb_module *m, nb_tensor *x, float *grad_w0) {
    nb_module_zero_grad(m);
    cr_assert_eq(nb_backward(nb_sum(nb_module_forward(m, x), NB_ALL, false)), 0, "%s", nb_error());
    nb_tensor *w0 = nb_module_parameters(m, NULL)[0];
    memcpy(grad_w0, nb_data(nb_grad_of(w0)), 4 * sizeof(float));
}

Test(nn_debug, hooks_fire_in_order_and_change_gradients) {
    nb_module *seq = two_layers();
    nb_module *l0 = nb_sequential_at(seq, 0), *l1 = nb_sequential_at(seq, 1);
    nb_tensor *x = nb_from_array(NB_SHAPE(1, 2), (float[]){1, -2});
    float base[4], hooked[4], removed[4];
    backward_of(seq, x, base);

    hook_log log = {.scale = 2};
    tagged tp = {&log, 'P'}, t0 = {&log, '0'}, t1 = {&log, '1'}, ts = {&log, 'S'};
    tagged b0 = {&log, 'a'}, b1 = {&log, 'b'};
    cr_assert_gt(nb_module_register_forward_pre_hook(seq, pre, &tp), 0);
    cr_assert_gt(nb_module_register_forward_hook(l0, post, &t0), 0);
    cr_assert_gt(nb_module_register_forward_hook(l1, post, &t1), 0);
    cr_assert_gt(nb_module_register_forward_hook(seq, post, &ts), 0);
    int h0 = nb_module_register_backward_hook(l0, back, &b0);
    int h1 = nb_module_register_backward_hook(l1, back, &b1);
    cr_assert_gt(h1, h0);
    backward_of(seq, x, hooked);
    /* forward: seq's pre hook, each layer, then seq; backward: the last
     * layer's output gradient first */
    cr_assert_str_eq(log.order, "P01Sba");
    /* the hook on layer 1's output doubles the gradient reaching layer 1,
     * and so layer 0's; the hook on layer 0's output doubles it again */
    for (int i = 0; i < 4; i++) cr_assert_float_eq(hooked[i], 4 * base[i], 1e-5, "element %d", i);

    cr_assert_eq(nb_module_remove_hook(l1, h1), 0);
    cr_assert_eq(nb_module_remove_hook(l1, h1), -1);
    EXPECT_ERROR("nb_module_remove_hook", "Dense", "no hook");
    memset(log.order, 0, sizeof log.order);
    backward_of(seq, x, removed);
    cr_assert_str_eq(log.order, "P01Sa");
    for (int i = 0; i < 4; i++) cr_assert_float_eq(removed[i], 2 * base[i], 1e-5, "element %d", i);
    nb_module_free(seq);
}

Test(nn_debug, forward_hook_replaces_output) {
    nb_module *seq = two_layers();
    nb_tensor *x = nb_from_array(NB_SHAPE(1, 2), (float[]){1, -2});
    /* layer 0: h = x W1 + b1 with W1 = [[0.5, 0.75], [1, 1.25]], b1 = [0.5, 0.75]:
     * h = [0.5 - 2 + 0.5, 0.75 - 2.5 + 0.75] = [-1, -1]; layer 1 with
     * W2 = [0.5, 0.75], b2 = 0.5: y = -0.5 - 0.75 + 0.5 = -0.75 */
    EXPECT_VALUES(nb_module_forward(seq, x), 1e-6, -0.75f);
    int h = nb_module_register_forward_hook(nb_sequential_at(seq, 0), tripling, NULL);
    /* h tripled: y = 3 * -1.25 + 0.5 = -3.25 */
    EXPECT_VALUES(nb_module_forward(seq, x), 1e-6, -3.25f);
    nb_module_remove_hook(nb_sequential_at(seq, 0), h);
    EXPECT_VALUES(nb_module_forward(seq, x), 1e-6, -0.75f);
    cr_assert_eq(nb_module_register_forward_hook(seq, NULL, NULL), -1);
    EXPECT_ERROR("nb_module_register_forward_hook", "NULL");
    nb_module_free(seq);
}

/* ---- the graph with names ------------------------------------------------------------- */

Test(nn_debug, export_names_parameters_by_module) {
    nb_module *seq = two_layers();
    nb_tensor *x = nb_from_array(NB_SHAPE(1, 2), (float[]){1, -2});
    nb_tensor *loss = nb_sum(nb_module_forward(seq, x), NB_ALL, false);
    cr_assert_eq(nb_backward_ex(loss, NULL, &(nb_backward_opts){.retain_graph = true}), 0);
    char *dot = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&dot, &size);
    nb_export_opts o = nb_export_defaults();
    o.grad_flow = true;
    cr_assert_eq(nb_module_export_dot(seq, loss, f, &o), 0, "%s", nb_error());
    fclose(f);
    const char *want[] = {"0.weight\\nparameter [2,2]", "0.bias\\nparameter [2]",
                          "1.weight\\nparameter [2,1]", "1.bias\\nparameter [1]",
                          "constant [1,2]", "label=\"0\"", "label=\"1\"", "color=red"};
    for (int i = 0; i < 8; i++) cr_assert(strstr(dot, want[i]), "no %s in\n%s", want[i], dot);
    free(dot);
    nb_module_free(seq);
}

/* ---- gradcheck over a module ------------------------------------------------------------ */

/* y = x * s with a backward that gets ds wrong by a factor of 2 (dx is
 * right): the module built on it must fail, and be named. */
static void bad_scale_backward(nb_tensor *node, nb_tensor *g, nb_tensor **gin) {
    nb_tensor *x = nb_saved(node, 0), *s = nb_saved(node, 1);
    if (nb_needs_input_grad(node, 0)) gin[0] = nb_mul(g, s);
    if (nb_needs_input_grad(node, 1)) gin[1] = nb_mul_scalar(nb_sum_to(nb_mul(g, x), NB_SHAPE(3)), 2);
}
static const nb_op bad_scale_op = {"bad_scale", bad_scale_backward};

static nb_tensor *bad_scale(nb_tensor *x, nb_tensor *s) {
    nb_tensor *y = nb_mul(nb_detach(x), nb_detach(s)); /* the values, without a graph */
    nb_tensor *out = nb_from_array(nb_ndim(y), nb_shape(y), nb_data(y));
    out = nb_record(out, &bad_scale_op, 2, (nb_tensor *[]){x, s});
    nb_save(out, x);
    nb_save(out, s);
    return out;
}

typedef struct scale_module {
    nb_module base;
    nb_tensor *s;
} scale_module;

static nb_tensor *scale_forward(nb_module *m, nb_tensor *x) {
    return bad_scale(x, ((scale_module *)m)->s);
}
static const nb_module_type scale_type = {"BadScale", scale_forward, NULL};

static nb_module *bad_scale_module(void) {
    scale_module *m = (scale_module *)nb_module_new(&scale_type, sizeof *m);
    m->s = nb_module_add_param(&m->base, "scale", nb_from_array(NB_SHAPE(3), (float[]){0.5f, -1, 2}));
    return nb_module_ok(&m->base);
}

Test(nn_debug, module_gradcheck_passes_on_layers) {
    nb_module *seq = nb_sequential(2, (nb_module *[]){nb_dense(3, "tanh", 2), nb_dense(2, "linear", 3)});
    nb_gradcheck_result r;
    cr_assert(nb_module_gradcheck(seq, nb_uniform(NULL, -1, 1, NB_SHAPE(4, 2)),
                                  &(nb_gradcheck_opts){.quiet = true}, &r), "%s", r.message);
    cr_assert(r.ok);
    cr_assert(strstr(r.message, "nb_module_gradcheck: passed"), "%s", r.message);
    nb_module_free(seq);
}

Test(nn_debug, module_gradcheck_names_the_wrong_parameter) {
    /* nine layers (18 parameters) before the wrong one: the check runs in
     * groups, and the report must still name the parameter */
    nb_module *layers[10];
    for (int i = 0; i < 9; i++) layers[i] = nb_dense(3, "tanh", 3);
    layers[9] = bad_scale_module();
    nb_module *seq = nb_sequential(10, layers);
    cr_assert_not_null(seq, "%s", nb_error());
    nb_gradcheck_result r;
    bool ok = nb_module_gradcheck(seq, nb_uniform(NULL, -1, 1, NB_SHAPE(2, 3)),
                                  &(nb_gradcheck_opts){.quiet = true}, &r);
    cr_assert_not(ok, "%s", r.message);
    cr_assert_eq(r.input, 18, "%s", r.message);
    cr_assert_str_eq(nb_module_parameter_name(seq, r.input), "9.scale");
    cr_assert(strstr(r.message, "FAILED; worst at 9.scale["), "%s", r.message);
    cr_assert(strstr(r.message, "of shape [3]"), "%s", r.message);
    /* the analytic value is twice the numeric one */
    cr_assert_float_eq(r.analytic, 2 * r.numeric, 1e-2 * fabs(r.numeric) + 1e-4, "%s", r.message);
    nb_module_free(seq);
}

Test(nn_debug, module_gradcheck_restores_buffers_and_reports_errors) {
    nb_module *seq = nb_sequential(2, (nb_module *[]){nb_dense(3, "linear", 2), nb_batch_norm_layer(0.1f, 1e-5f)});
    cr_assert_not_null(seq, "%s", nb_error());
    nb_tensor *x = nb_uniform(NULL, -1, 1, NB_SHAPE(4, 2));
    nb_module_forward(seq, x); /* builds the batch norm, moves its running mean */
    int nb;
    nb_tensor **buf = nb_module_buffers(seq, &nb);
    cr_assert_gt(nb, 0);
    float before = nb_data(buf[0])[0];
    nb_gradcheck_result r;
    cr_assert(nb_module_gradcheck(seq, x, &(nb_gradcheck_opts){.quiet = true}, &r), "%s", r.message);
    cr_assert_float_eq(nb_data(nb_module_buffers(seq, &nb)[0])[0], before, 0, "running mean moved");
    nb_module_free(seq);
    cr_assert_not(nb_module_gradcheck(NULL, NULL, NULL, &r));
    cr_assert(strstr(r.message, "the module is NULL"), "%s", r.message);
}

/* ---- anomaly mode through a layer -------------------------------------------------------- */

Test(nn_debug, anomaly_inside_a_layer_names_the_calling_line) {
    /* an infinite input makes Dense's matmul produce infinities; the place
     * is the line that ran the layer */
    nb_module *dense = nb_dense(2, "linear", 2);
    nb_tensor *x = nb_from_array(NB_SHAPE(1, 2), (float[]){INFINITY, 1});
    nb_set_detect_anomaly(true);
    int line = __LINE__ + 1;
    nb_tensor *y = nb_module_forward(dense, x);
    nb_set_detect_anomaly(false);
    cr_assert_null(y);
    char where[64];
    snprintf(where, sizeof where, "test_debug.c:%d", line);
    EXPECT_ERROR("nb_module_forward: anomaly detection: op 'matmul' produced", "input shapes [1,2] [2,2]",
                 where);
    nb_module_free(dense);
}

Test(nn_debug, hooks_out_of_memory) {
    nb_module *dense = nb_dense(2, "linear", 2);
    nb_test_alloc a = {.fail_at = 1};
    nb_set_alloc_hook(nb_test_alloc_hook, &a);
    int h = nb_module_register_backward_hook(dense, back, NULL);
    nb_set_alloc_hook(NULL, NULL);
    cr_assert_eq(h, -1);
    EXPECT_ERROR("nb_module_register_backward_hook: out of memory");
    /* the closure a forward makes for a backward hook */
    hook_log log = {.scale = 1};
    tagged t = {&log, 'b'};
    cr_assert_gt(nb_module_register_backward_hook(dense, back, &t), 0);
    nb_tensor *x = nb_ones(NB_SHAPE(1, 2));
    for (int64_t fail = 1;; fail++) {
        nb_clear_error();
        a = (nb_test_alloc){.fail_at = fail};
        nb_scope_begin();
        nb_set_alloc_hook(nb_test_alloc_hook, &a);
        nb_tensor *y = nb_module_forward(dense, x);
        nb_set_alloc_hook(NULL, NULL);
        if (!a.fired) {
            cr_assert_not_null(y, "%s", nb_error());
            cr_assert_eq(nb_backward(nb_sum(y, NB_ALL, false)), 0);
            cr_assert_str_eq(log.order, "b");
            nb_scope_end();
            break;
        }
        cr_assert_null(y, "allocation %lld failed, yet forward succeeded", (long long)fail);
        cr_assert(strstr(nb_error(), "out of memory"), "%s", nb_error());
        nb_scope_end();
    }
    nb_module_free(dense);
}

static nb_tensor *fail_third_call(nb_module *m, nb_tensor *x, nb_tensor *y, void *user) {
    (void)m, (void)x, (void)y;
    if (++*(int *)user == 3) nb_set_error("my_hook: refused");
    return NULL;
}

Test(nn_debug, module_gradcheck_reports_a_forward_that_fails) {
    nb_module *dense = nb_dense(2, "tanh", 2);
    int calls = 0;
    nb_module_register_forward_hook(dense, fail_third_call, &calls);
    nb_gradcheck_result r;
    cr_assert_not(nb_module_gradcheck(dense, nb_ones(NB_SHAPE(1, 2)), &(nb_gradcheck_opts){.quiet = true}, &r));
    cr_assert_eq(r.input, -1);
    cr_assert(strstr(r.message, "nb_module_gradcheck: ") == r.message && strstr(r.message, "my_hook: refused"),
              "%s", r.message);
    /* and a wrong input shape, in the first forward */
    calls = -100;
    cr_assert_not(nb_module_gradcheck(dense, nb_ones(NB_SHAPE(1, 5)), &(nb_gradcheck_opts){.quiet = true}, &r));
    cr_assert(strstr(r.message, "nb_module_gradcheck: the forward failed: "), "%s", r.message);
    nb_module_free(dense);
}

static nb_tensor *record_grad(nb_module *m, nb_tensor *g, void *user) {
    (void)m;
    *(float *)user = nb_data(g)[0];
    return NULL;
}

Test(nn_debug, backward_hook_sees_the_output_forward_hooks_settled_on) {
    /* y' = 3y by a forward hook registered after the backward hook: the
     * backward hook sits on y', whose gradient in sum(y') is 1 (on y it
     * would be 3) */
    nb_module *dense = nb_dense(1, "linear", 2);
    float seen = 0;
    nb_module_register_backward_hook(dense, record_grad, &seen);
    nb_module_register_forward_hook(dense, tripling, NULL);
    nb_tensor *y = nb_module_forward(dense, nb_ones(NB_SHAPE(1, 2)));
    cr_assert_eq(nb_backward(nb_sum(y, NB_ALL, false)), 0, "%s", nb_error());
    cr_assert_float_eq(seen, 1, 1e-6);
    nb_module_free(dense);
}
