/* test_engine.c — the backward engine: accumulation through shared nodes,
 * grad mode, detach, retain_graph, retain_grad, create_graph and higher
 * derivatives, the functional nb_grad, a Hessian-vector product, the
 * 100,000-op chain, in-place modification detection and ownership.
 * Expected gradients are worked out by hand in the comments.
 */
#include <pthread.h>

#include "test_util.h"

TestSuite(engine, NB_TEST_HOOKS);

static nb_tensor *vec(int n, const float *v) { return nb_from_array(1, (int64_t[]){n}, v); }
static nb_tensor *total(nb_tensor *t) { return nb_sum_to(t, NB_SHAPE()); }

Test(engine, diamond_accumulates) {
    /* a = 2x; y = a*a + a  =>  dy/dx = (2a + 1) * 2 = 8x + 2 */
    nb_tensor *x = nb_set_requires_grad(vec(3, (float[]){1, -2, 0.5f}), true);
    nb_tensor *a = nb_mul_scalar(x, 2);
    nb_tensor *y = total(nb_add(nb_mul(a, a), a));
    cr_assert_eq(nb_backward(y), 0, "%s", nb_error());
    EXPECT_VALUES(nb_grad_of(x), 1e-5, 10, -14, 6);
}

Test(engine, shared_subexpression) {
    /* e = exp(x); y = e*e + e  =>  dy/dx = 2e^2 + e */
    nb_tensor *x = nb_set_requires_grad(vec(2, (float[]){0, 1}), true);
    nb_tensor *e = nb_exp(x);
    cr_assert_eq(nb_backward(total(nb_add(nb_mul(e, e), e))), 0);
    EXPECT_VALUES(nb_grad_of(x), 1e-4, 3.0f, (float)(2 * exp(2.0) + exp(1.0)));
}

Test(engine, gradients_accumulate_until_zeroed) {
    nb_tensor *x = nb_set_requires_grad(vec(2, (float[]){1, 2}), true);
    for (int i = 0; i < 3; i++) cr_assert_eq(nb_backward(total(nb_mul(x, x))), 0);
    EXPECT_VALUES(nb_grad_of(x), 1e-5, 6, 12); /* 3 * 2x */
    nb_zero_grad(x);
    EXPECT_VALUES(nb_grad_of(x), 0, 0, 0);
    nb_clear_grad(x);
    cr_assert_null(nb_grad_of(x));
}

Test(engine, no_grad_records_nothing) {
    nb_tensor *x = nb_set_requires_grad(vec(2, (float[]){1, 2}), true);
    bool was = nb_set_grad_enabled(false);
    cr_assert(was);
    nb_tensor *y = total(nb_mul(x, x));
    cr_assert(!nb_is_grad_enabled());
    nb_set_grad_enabled(true);
    cr_assert(!nb_requires_grad(y));
    cr_assert_null(nb_op_of(y));
    cr_assert_eq(nb_backward(y), -1);
    EXPECT_ERROR("nb_backward", "does not require grad");
}

static void *thread_grad_mode(void *arg) {
    (void)arg;
    nb_set_grad_enabled(false);
    nb_set_error("in another thread");
    return NULL;
}

Test(engine, grad_mode_and_errors_are_per_thread) {
    nb_clear_error();
    pthread_t t;
    pthread_create(&t, NULL, thread_grad_mode, NULL);
    pthread_join(t, NULL);
    cr_assert(nb_is_grad_enabled());
    cr_assert_null(nb_error());
}

Test(engine, detach_stops_gradient) {
    /* y = detach(x) * x  =>  dy/dx = x (the detached factor is a constant) */
    nb_tensor *x = nb_set_requires_grad(vec(2, (float[]){3, -1}), true);
    nb_tensor *d = nb_detach(x);
    cr_assert(!nb_requires_grad(d));
    cr_assert_eq(nb_data(d), nb_data(x), "detach shares storage");
    cr_assert_eq(nb_backward(total(nb_mul(d, x))), 0);
    EXPECT_VALUES(nb_grad_of(x), 1e-6, 3, -1);
}

Test(engine, retain_graph_and_freed_graph_error) {
    nb_tensor *x = nb_set_requires_grad(vec(1, (float[]){2}), true);
    nb_tensor *y = total(nb_mul(x, nb_exp(x)));
    cr_assert_eq(nb_backward_ex(y, NULL, &(nb_backward_opts){.retain_graph = true}), 0);
    cr_assert_eq(nb_backward_ex(y, NULL, NULL), 0); /* graph kept: works, then freed */
    float once = (float)(exp(2.0) * 3); /* d(x e^x) = e^x (1 + x) */
    EXPECT_VALUES(nb_grad_of(x), 1e-3, 2 * once);
    cr_assert_eq(nb_backward(y), -1, "a third backward through a freed graph must fail");
    EXPECT_ERROR("nb_backward", "freed", "retain_graph");
    EXPECT_VALUES(nb_grad_of(x), 1e-3, 2 * once); /* and leave .grad alone */
}

Test(engine, retain_grad_on_non_leaf) {
    /* h = 2x, y = sum(h*h)  =>  dy/dh = 2h = 4x, dy/dx = 8x */
    nb_tensor *x = nb_set_requires_grad(vec(2, (float[]){1, -3}), true);
    nb_tensor *h = nb_retain_grad(nb_mul_scalar(x, 2));
    nb_tensor *m = nb_mul_scalar(x, 5); /* not retained */
    cr_assert_eq(nb_backward(total(nb_add(nb_mul(h, h), m))), 0);
    EXPECT_VALUES(nb_grad_of(h), 1e-6, 4, -12);
    cr_assert_null(nb_grad_of(m));
    EXPECT_VALUES(nb_grad_of(x), 1e-5, 13, -19);
}

Test(engine, backward_with_grad_output) {
    /* y = x^2 (not scalar), v = [1, 10]  =>  x.grad = 2x * v */
    nb_tensor *x = nb_set_requires_grad(vec(2, (float[]){1, 2}), true);
    nb_tensor *y = nb_mul(x, x);
    cr_assert_eq(nb_backward(y), -1);
    EXPECT_ERROR("nb_backward", "[2]", "grad_output");
    nb_tensor *wrong = vec(3, (float[]){1, 1, 1});
    cr_assert_eq(nb_backward_ex(y, wrong, NULL), -1);
    EXPECT_ERROR("grad_output of shape [3]", "[2]");
    cr_assert_eq(nb_backward_ex(y, vec(2, (float[]){1, 10}), NULL), 0);
    EXPECT_VALUES(nb_grad_of(x), 1e-6, 2, 40);
}

Test(engine, create_graph_gives_higher_derivatives) {
    /* y = x^3: y' = 3x^2, y'' = 6x, y''' = 6 */
    nb_tensor *x = nb_set_requires_grad(vec(2, (float[]){2, -1}), true);
    nb_tensor *y = total(nb_mul(x, nb_mul(x, x)));
    nb_tensor *g1, *g2, *g3;
    cr_assert_eq(nb_grad(1, &y, NULL, 1, &x, &g1, &(nb_grad_opts){.create_graph = true}), 0, "%s", nb_error());
    EXPECT_VALUES(g1, 1e-5, 12, 3);
    nb_tensor *s1 = total(g1);
    cr_assert_eq(nb_grad(1, &s1, NULL, 1, &x, &g2, &(nb_grad_opts){.create_graph = true}), 0, "%s", nb_error());
    EXPECT_VALUES(g2, 1e-5, 12, -6);
    nb_tensor *s2 = total(g2);
    cr_assert_eq(nb_grad(1, &s2, NULL, 1, &x, &g3, NULL), 0, "%s", nb_error());
    EXPECT_VALUES(g3, 1e-5, 6, 6);
    cr_assert_null(nb_grad_of(x), "nb_grad must not touch .grad");
}

Test(engine, backward_create_graph_into_grad) {
    /* x.grad = 2x with a graph; backward of sum(x.grad * x) = sum(2x^2) gives 4x */
    nb_tensor *x = nb_set_requires_grad(vec(2, (float[]){1.5f, -2}), true);
    cr_assert_eq(nb_backward_ex(total(nb_mul(x, x)), NULL, &(nb_backward_opts){.create_graph = true}), 0);
    nb_tensor *g = nb_grad_of(x);
    cr_assert(nb_requires_grad(g), "with create_graph the gradient is differentiable");
    nb_tensor *h;
    nb_tensor *s = total(nb_mul(g, x));
    cr_assert_eq(nb_grad(1, &s, NULL, 1, &x, &h, NULL), 0, "%s", nb_error());
    EXPECT_VALUES(h, 1e-5, 6, -8);
}

Test(engine, functional_grad) {
    /* f = sum(a*b) + sum(a): df/da = b + 1, df/db = a; c is unused */
    nb_tensor *a = nb_set_requires_grad(vec(2, (float[]){1, 2}), true);
    nb_tensor *b = nb_set_requires_grad(vec(2, (float[]){3, 4}), true);
    nb_tensor *c = nb_set_name(nb_set_requires_grad(vec(1, (float[]){7}), true), "c");
    nb_tensor *f = nb_add(total(nb_mul(a, b)), total(a));
    nb_tensor *in[3] = {a, b, c}, *g[3];
    /* by default an unused input is an error naming it, as in PyTorch */
    cr_assert_eq(nb_grad(1, &f, NULL, 3, in, g, &(nb_grad_opts){.retain_graph = true}), -1);
    EXPECT_ERROR("nb_grad", "input 2 'c' is not used");
    cr_assert_null(g[0]);
    /* allow_unused: NULL for it */
    cr_assert_eq(nb_grad(1, &f, NULL, 3, in, g,
                         &(nb_grad_opts){.retain_graph = true, .allow_unused = true}),
                 0, "%s", nb_error());
    EXPECT_VALUES(g[0], 1e-6, 4, 5);
    EXPECT_VALUES(g[1], 1e-6, 1, 2);
    cr_assert_null(g[2]);
    /* materialize_grads: zeros for it */
    cr_assert_eq(nb_grad(1, &f, NULL, 3, in, g,
                         &(nb_grad_opts){.retain_graph = true, .materialize_grads = true}),
                 0, "%s", nb_error());
    EXPECT_VALUES(g[0], 1e-6, 4, 5);
    EXPECT_VALUES(g[2], 0, 0);
    cr_assert_null(nb_grad_of(a));
    nb_tensor *plain = vec(1, (float[]){1});
    cr_assert_eq(nb_grad(1, &f, NULL, 1, &plain, g, NULL), -1);
    EXPECT_ERROR("nb_grad", "does not require grad");
    /* an output that does not require grad is named by its position */
    nb_tensor *outs[2] = {f, nb_set_name(vec(1, (float[]){2}), "k")};
    cr_assert_eq(nb_grad(2, outs, NULL, 1, &a, g, NULL), -1);
    EXPECT_ERROR("nb_grad", "output 1 'k' does not require grad");
}

Test(engine, zero_dimensional_shapes_are_written_inline) {
    nb_tensor *s = nb_full(NB_SHAPE(), 2.5f);
    cr_assert_eq(nb_ndim(s), 0);
    cr_assert_eq(nb_numel(s), 1);
    cr_assert_float_eq(nb_item(s), 2.5f, 0);
    nb_tensor *m = nb_sum_to(nb_ones(NB_SHAPE(2, 3)), NB_SHAPE());
    cr_assert_eq(nb_ndim(m), 0);
    cr_assert_float_eq(nb_item(m), 6, 0);
    nb_tensor *r = nb_sum(nb_ones(NB_SHAPE(2, 3)), NB_AXES(), false); /* no axes: all */
    cr_assert_not_null(r, "%s", nb_error());
}

Test(engine, grad_of_output_itself) {
    /* d(x)/d(x) with a grad_output v is v, returned as a tensor of its own */
    nb_tensor *x = nb_set_requires_grad(vec(2, (float[]){1, 2}), true);
    nb_tensor *v = vec(2, (float[]){5, 6}), *g;
    cr_assert_eq(nb_grad(1, &x, &v, 1, &x, &g, NULL), 0, "%s", nb_error());
    cr_assert_neq(g, v);
    EXPECT_VALUES(g, 0, 5, 6);
}

Test(engine, long_chain_is_iterative) {
    /* 100,000 ops: y = x * 1.00001^n + n, dy/dx = 1.00001^n (each factor
     * rounded to float, as the kernel uses it) */
    const int n = 100000;
    nb_tensor *x = nb_set_requires_grad(vec(1, (float[]){1}), true);
    nb_tensor *y = x;
    double expect = 1;
    for (int i = 0; i < n; i++) {
        y = i % 2 ? nb_add_scalar(y, 1.0f) : nb_mul_scalar(y, 1.00001f);
        if (i % 2 == 0) expect *= (double)1.00001f;
    }
    cr_assert_eq(nb_backward(y), 0, "%s", nb_error());
    cr_assert_float_eq(nb_item(nb_grad_of(x)), expect, 1e-3 * expect);
}

Test(engine, long_chain_freed_without_recursion) {
    /* A chain held only by its last tensor is freed iteratively. */
    int64_t before = nb_live_tensors();
    nb_scope_begin();
    nb_tensor *x = nb_set_requires_grad(vec(1, (float[]){1}), true);
    nb_tensor *y = x;
    for (int i = 0; i < 100000; i++) y = nb_add_scalar(y, 1.0f);
    nb_keep(y);
    nb_scope_end(); /* everything but y survives only through y's graph */
    cr_assert_float_eq(nb_item(y), 100001.0f, 1);
    nb_release(y);
    cr_assert_eq(nb_live_tensors(), before);
}

Test(engine, in_place_change_after_save_is_detected) {
    /* An optimizer step between forward and backward changes w, which mul
     * saved: the backward must refuse rather than use the new values. */
    nb_tensor *x = nb_set_requires_grad(vec(2, (float[]){1, 2}), true);
    nb_tensor *w = nb_set_name(nb_set_requires_grad(vec(2, (float[]){3, 4}), true), "w");
    nb_tensor *y = total(nb_mul(x, w));
    nb_data_mut(w)[0] = 0.5f;
    cr_assert_eq(nb_backward(y), -1);
    EXPECT_ERROR("nb_backward", "'w'", "modified in place", "mul");
    /* add saves nothing, so changing its input is harmless */
    nb_tensor *z = total(nb_add(x, w));
    nb_data_mut(w)[1] = 1;
    cr_assert_eq(nb_backward(z), 0, "%s", nb_error());
}

Test(engine, hessian_vector_product_of_an_mlp) {
    /* loss(W1, W2) = mean((tanh(X W1) W2 - y)^2); Hv by double backward
     * against finite differences of the gradient: (g(W + hv) - g(W - hv)) / 2h */
    nb_tensor *X = nb_uniform(NULL, -1, 1, NB_SHAPE(4, 3));
    nb_tensor *Y = nb_uniform(NULL, -1, 1, NB_SHAPE(4, 1));
    nb_tensor *W1 = nb_test_leaf(-1, 1, NB_SHAPE(3, 5));
    nb_tensor *W2 = nb_test_leaf(-1, 1, NB_SHAPE(5, 1));
    nb_tensor *V = nb_uniform(NULL, -1, 1, NB_SHAPE(3, 5));
    nb_tensor *loss = nb_mean(nb_square(nb_sub(nb_matmul(nb_tanh(nb_matmul(X, W1)), W2), Y)), NB_ALL, false);
    nb_tensor *g, *hv;
    cr_assert_eq(nb_grad(1, &loss, NULL, 1, &W1, &g, &(nb_grad_opts){.create_graph = true}), 0, "%s", nb_error());
    nb_tensor *gv = nb_sum(nb_mul(g, V), NB_ALL, false);
    cr_assert_eq(nb_grad(1, &gv, NULL, 1, &W1, &hv, NULL), 0, "%s", nb_error());

    const double h = 1e-2;
    double numeric[15];
    float *w = nb_data_mut(W1);
    float orig[15];
    memcpy(orig, w, sizeof orig);
    for (int side = 0; side < 2; side++) {
        for (int i = 0; i < 15; i++) w[i] = (float)(orig[i] + (side ? -h : h) * nb_data(V)[i]);
        nb_scope_begin();
        nb_tensor *l = nb_mean(nb_square(nb_sub(nb_matmul(nb_tanh(nb_matmul(X, W1)), W2), Y)), NB_ALL, false);
        nb_tensor *gs;
        cr_assert_eq(nb_grad(1, &l, NULL, 1, &W1, &gs, NULL), 0);
        for (int i = 0; i < 15; i++) numeric[i] = (side ? numeric[i] - nb_data(gs)[i] : nb_data(gs)[i]);
        nb_scope_end();
    }
    memcpy(w, orig, sizeof orig);
    for (int i = 0; i < 15; i++) {
        double num = numeric[i] / (2 * h);
        cr_assert(fabs(nb_data(hv)[i] - num) <= 2e-3 + 2e-2 * fabs(num),
                  "Hv[%d] = %g, finite differences %g", i, (double)nb_data(hv)[i], num);
    }
}

/* ---- ownership ---------------------------------------------------------------- */

Test(engine, scope_frees_everything_it_owns) {
    int64_t before = nb_live_tensors();
    nb_tensor *w = nb_set_requires_grad(vec(2, (float[]){1, 2}), true);
    nb_keep(w);
    for (int step = 0; step < 3; step++) {
        nb_scope_begin();
        nb_tensor *loss = total(nb_mul(nb_exp(w), w));
        cr_assert_eq(nb_backward(loss), 0);
        nb_scope_end();
        /* only w and its .grad remain */
        cr_assert_eq(nb_live_tensors(), before + 2);
    }
    nb_release(w);
    cr_assert_eq(nb_live_tensors(), before);
}

Test(engine, keep_and_escape) {
    int64_t before = nb_live_tensors();
    nb_tensor *kept, *escaped, *outer_owned;
    nb_scope_begin();
    outer_owned = vec(1, (float[]){1});
    nb_scope_begin();
    kept = nb_keep(vec(1, (float[]){2}));
    escaped = nb_escape(vec(1, (float[]){3}));
    vec(1, (float[]){4}); /* dropped */
    nb_scope_end();
    cr_assert_eq(nb_live_tensors(), before + 3);
    cr_assert_float_eq(nb_item(escaped), 3, 0);
    cr_assert_float_eq(nb_item(outer_owned), 1, 0);
    nb_scope_end(); /* escaped and outer_owned go */
    cr_assert_eq(nb_live_tensors(), before + 1);
    cr_assert_float_eq(nb_item(kept), 2, 0);
    nb_release(kept);
    cr_assert_eq(nb_live_tensors(), before);
}

Test(engine, graph_keeps_inputs_alive) {
    /* A kept result holds its graph: backward after the scope closed works. */
    nb_tensor *x = nb_keep(nb_set_requires_grad(vec(1, (float[]){3}), true));
    nb_scope_begin();
    nb_tensor *y = nb_keep(nb_mul(nb_exp(x), x));
    nb_scope_end();
    cr_assert_eq(nb_backward(y), 0, "%s", nb_error());
    EXPECT_VALUES(nb_grad_of(x), 1e-3, (float)(4 * exp(3.0)));
    nb_release(y);
    nb_release(x);
}

Test(engine, release_of_scope_owned_tensor_is_refused) {
    nb_tensor *t = nb_set_name(vec(1, (float[]){1}), "t");
    nb_release(t);
    EXPECT_ERROR("nb_release", "'t'", "scope");
    cr_assert_float_eq(nb_item(t), 1, 0); /* still alive */
}

/* Without any scope open, a composite op (one built from other ops) must
 * hand back only its result: its intermediates are freed inside it. */
Test(noscope, composite_ops_leave_only_their_result) {
    int64_t before = nb_live_tensors();
    nb_tensor *a = nb_from_array(NB_SHAPE(3), (float[]){1, 2, 3});
    nb_tensor *b = nb_from_array(NB_SHAPE(3), (float[]){0, 2, 5});
    nb_tensor *labels = nb_from_array(NB_SHAPE(1), (float[]){2});
    nb_tensor *results[] = {
        nb_mse_loss(a, b, NB_REDUCE_MEAN), nb_l1_loss(a, b, NB_REDUCE_SUM),
        nb_huber_loss(a, b, 1, NB_REDUCE_MEAN), nb_bce_with_logits_loss(a, b, NB_REDUCE_MEAN),
        nb_cross_entropy_loss(a, labels, NB_REDUCE_MEAN), nb_matmul(a, b),
        nb_rsub_scalar(a, 1), nb_div_scalar(a, 0), nb_var(a, NB_ALL, 1, false),
        nb_logsumexp(a, NB_ALL, false), nb_stack(2, (nb_tensor *[]){a, b}, 0),
    };
    size_t n = sizeof results / sizeof *results;
    cr_assert_eq(nb_live_tensors(), before + 3 + (int64_t)n, "%lld tensors alive, expected %lld",
                 (long long)(nb_live_tensors() - before), (long long)(3 + n));
    for (size_t i = 0; i < n; i++) nb_release(results[i]);
    nb_release(a);
    nb_release(b);
    nb_release(labels);
    cr_assert_eq(nb_live_tensors(), before);
}

/* ---- regressions: in-place accumulation must never reach shared memory ------ */

Test(engine, accumulation_never_writes_through_a_view) {
    /* reshape's backward returns a view of the incoming gradient; adding a
     * second path into it in place would also change the other path.
     * loss = sum(x + reshape(2w) + x + reshape(w)): dx = 2, dw = 3 */
    nb_tensor *x = nb_set_requires_grad(nb_zeros(NB_SHAPE(4)), true);
    nb_tensor *w = nb_set_requires_grad(nb_zeros(NB_SHAPE(2, 2)), true);
    nb_tensor *a = nb_add(nb_mul_scalar(x, 1), nb_reshape(nb_mul_scalar(w, 2), NB_SHAPE(4)));
    nb_tensor *b = nb_add(x, nb_reshape(w, NB_SHAPE(4)));
    cr_assert_eq(nb_backward(nb_sum(nb_add(a, b), NB_ALL, false)), 0, "%s", nb_error());
    EXPECT_VALUES(nb_grad_of(x), 0, 2, 2, 2, 2);
    EXPECT_VALUES(nb_grad_of(w), 0, 3, 3, 3, 3);
}

Test(engine, grads_of_two_leaves_never_share_memory) {
    /* loss = sum(x + reshape(w)): with create_graph both gradients start
     * as views of one tensor; a second backward and a zero_grad must treat
     * them apart */
    nb_tensor *x = nb_set_requires_grad(nb_zeros(NB_SHAPE(4)), true);
    nb_tensor *w = nb_set_requires_grad(nb_zeros(NB_SHAPE(2, 2)), true);
    nb_tensor *loss = nb_sum(nb_add(x, nb_reshape(w, NB_SHAPE(4))), NB_ALL, false);
    cr_assert_eq(nb_backward_ex(loss, NULL, &(nb_backward_opts){.create_graph = true}), 0);
    cr_assert_eq(nb_backward(loss), 0);
    EXPECT_VALUES(nb_grad_of(x), 0, 2, 2, 2, 2);
    EXPECT_VALUES(nb_grad_of(w), 0, 2, 2, 2, 2);
    nb_zero_grad(w);
    EXPECT_VALUES(nb_grad_of(x), 0, 2, 2, 2, 2);
}

Test(engine, grad_output_is_never_modified) {
    nb_tensor *x = nb_set_requires_grad(nb_ones(NB_SHAPE(4)), true);
    nb_tensor *go = nb_ones(NB_SHAPE(2, 2)), *g;
    nb_tensor *outs[2] = {nb_sum(x, NB_ALL, false), nb_reshape(x, NB_SHAPE(2, 2))};
    nb_tensor *gos[2] = {NULL, go};
    cr_assert_eq(nb_grad(2, outs, gos, 1, &x, &g, NULL), 0, "%s", nb_error());
    EXPECT_VALUES(g, 0, 2, 2, 2, 2);
    EXPECT_VALUES(go, 0, 1, 1, 1, 1);
}

Test(engine, grad_of_an_input_listed_twice) {
    nb_tensor *x = nb_set_requires_grad(nb_full(NB_SHAPE(1), 3), true);
    nb_tensor *y = nb_mul(x, x), *in[2] = {x, x}, *g[2];
    cr_assert_eq(nb_grad(1, &y, NULL, 2, in, g, NULL), 0, "%s", nb_error());
    EXPECT_VALUES(g[0], 0, 6);
    EXPECT_VALUES(g[1], 0, 6);
}

/* An op whose backward runs a backward of its own (recomputing its forward,
 * as activation checkpointing does): the inner run must not disturb the
 * outer one. */
static void recompute_tanh_backward(nb_tensor *node, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *x = nb_set_requires_grad(nb_detach(nb_input(node, 0)), true), *gr;
    bool was = nb_set_grad_enabled(true);
    nb_tensor *y = nb_tanh(x);
    nb_set_grad_enabled(was);
    if (nb_grad(1, &y, &g, 1, &x, &gr, NULL) == 0) gx[0] = gr;
}
static const nb_op recompute_tanh_op = {"recompute_tanh", recompute_tanh_backward};

static nb_tensor *recompute_tanh(nb_tensor *x) {
    bool was = nb_set_grad_enabled(false);
    nb_tensor *y = nb_tanh(x);
    nb_set_grad_enabled(was);
    nb_tensor *out = nb_from_array(nb_ndim(y), nb_shape(y), nb_data(y));
    return nb_record(out, &recompute_tanh_op, 1, &x);
}

Test(engine, backward_inside_a_backward) {
    nb_tensor *w = nb_set_requires_grad(nb_full(NB_SHAPE(3), 0.5f), true);
    nb_tensor *v = nb_set_requires_grad(nb_full(NB_SHAPE(3), 0.5f), true);
    nb_tensor *h = w, *k = v;
    for (int i = 0; i < 5; i++) {
        h = nb_mul_scalar(recompute_tanh(nb_mul_scalar(h, 1.5f)), 1.0f);
        k = nb_mul_scalar(nb_tanh(nb_mul_scalar(k, 1.5f)), 1.0f);
    }
    cr_assert_eq(nb_backward(nb_sum(h, NB_ALL, false)), 0, "%s", nb_error());
    cr_assert_eq(nb_backward(nb_sum(k, NB_ALL, false)), 0, "%s", nb_error());
    cr_assert_not_null(nb_grad_of(w));
    for (int i = 0; i < 3; i++)
        cr_assert_float_eq(nb_data(nb_grad_of(w))[i], nb_data(nb_grad_of(v))[i], 1e-6);
}

/* Two threads differentiate graphs of their own that share one parameter:
 * nb_grad keeps its bookkeeping outside the nodes and writes no .grad, so
 * both get exact gradients. loss = sum(c * W * W), dloss/dW = 2 c W. */
typedef struct shared_job {
    nb_tensor *W;
    float c;
    int wrong;
} shared_job;

static void *differentiate_shared(void *arg) {
    shared_job *job = arg;
    for (int it = 0; it < 2000; it++) {
        nb_scope_begin();
        nb_tensor *loss = nb_sum(nb_mul_scalar(nb_mul(job->W, job->W), job->c), NB_ALL, false), *g;
        if (nb_grad(1, &loss, NULL, 1, &job->W, &g, NULL) != 0) job->wrong++;
        else
            for (int i = 0; i < 8; i++) job->wrong += nb_data(g)[i] != 2 * job->c * nb_data(job->W)[i];
        nb_scope_end();
    }
    return NULL;
}

Test(engine, threads_differentiate_graphs_sharing_a_parameter) {
    nb_tensor *W = nb_set_requires_grad(nb_arange(1, 9, 1), true);
    shared_job jobs[2] = {{W, 1.5f, 0}, {W, -0.5f, 0}};
    pthread_t threads[2];
    for (int t = 0; t < 2; t++) pthread_create(&threads[t], NULL, differentiate_shared, &jobs[t]);
    for (int t = 0; t < 2; t++) pthread_join(threads[t], NULL);
    cr_assert_eq(jobs[0].wrong + jobs[1].wrong, 0, "%d wrong gradients", jobs[0].wrong + jobs[1].wrong);
    cr_assert_null(nb_grad_of(W));
}

/* An op whose backward fails, as a formula that runs out of memory would. */
static void failing_backward(nb_tensor *node, nb_tensor *g, nb_tensor **gx) {
    (void)node;
    (void)g;
    (void)gx;
    nb_set_error("failing_backward: no gradient today");
}
static const nb_op failing_op = {"failing", failing_backward};

static nb_tensor *failing(nb_tensor *x) {
    nb_tensor *y = nb_empty_like(x);
    memcpy(nb_data_mut(y), nb_data(x), (size_t)nb_numel(x) * sizeof(float));
    return nb_record(y, &failing_op, 1, &x);
}

Test(engine, failed_backward_changes_no_grad) {
    /* loss = sum(failing(a) * c): c's gradient is complete before the
     * failing node runs, yet it must not reach c's .grad */
    nb_tensor *a = nb_set_requires_grad(vec(2, (float[]){1, 2}), true);
    nb_tensor *c = nb_set_requires_grad(vec(2, (float[]){3, 4}), true);
    cr_assert_eq(nb_backward(total(nb_mul(a, c))), 0, "%s", nb_error());
    EXPECT_VALUES(nb_grad_of(c), 0, 1, 2);
    nb_tensor *fresh = nb_set_requires_grad(vec(2, (float[]){5, 6}), true);
    nb_tensor *loss = nb_add(total(nb_mul(failing(a), c)), total(nb_mul(failing(a), fresh)));
    cr_assert_eq(nb_backward(loss), -1);
    EXPECT_ERROR("failing_backward");
    EXPECT_VALUES(nb_grad_of(c), 0, 1, 2); /* as after the first backward */
    EXPECT_VALUES(nb_grad_of(a), 0, 3, 4);
    cr_assert_null(nb_grad_of(fresh));
}

Test(engine, releasing_a_freed_tensor_is_detected) {
    int64_t before = nb_live_tensors();
    nb_tensor *p = nb_keep(nb_zeros(NB_SHAPE(3)));
    nb_release(p);
    nb_tensor *q = nb_keep(nb_full(NB_SHAPE(4), 7));
    cr_assert_neq(p, q, "a just-freed tensor is not handed out again at once");
    nb_clear_error();
    nb_release(p); /* the second release of p must not free q */
    EXPECT_ERROR("nb_release", "already freed");
    cr_assert_eq(nb_live_tensors(), before + 1);
    EXPECT_VALUES(q, 0, 7, 7, 7, 7);
    nb_clear_error();
    cr_assert_null(nb_keep(p));
    EXPECT_ERROR("nb_keep", "already freed");
    nb_release(q);
    cr_assert_eq(nb_live_tensors(), before);
}

Test(engine, a_container_holds_a_tensor_alone) {
    int64_t before = nb_live_tensors();
    /* a scope-owned tensor: the container takes the scope's reference */
    nb_tensor *w = nb_set_name(nb_ones(NB_SHAPE(2)), "w");
    cr_assert_eq(nb_adopt(w, "my_container_add"), w, "%s", nb_error());
    nb_clear_error();
    cr_assert_null(nb_adopt(w, "my_container_add"));
    EXPECT_ERROR("my_container_add", "'w'", "already held by a container");
    nb_clear_error();
    nb_release(w);
    EXPECT_ERROR("nb_release", "'w'", "container");
    /* a caller-owned tensor: the container takes the caller's reference */
    nb_tensor *v = nb_keep(nb_ones(NB_SHAPE(2)));
    cr_assert_eq(nb_adopt(v, "my_container_add"), v);
    nb_scope_begin();
    nb_scope_end();
    cr_assert_eq(nb_live_tensors(), before + 2, "held tensors outlive scopes");
    nb_disown(w, "my_container_free");
    nb_disown(v, "my_container_free");
    cr_assert_eq(nb_live_tensors(), before);
    nb_clear_error();
    nb_disown(v, "my_container_free");
    EXPECT_ERROR("my_container_free", "already freed");
    nb_tensor *u = nb_ones(NB_SHAPE(1));
    nb_clear_error();
    nb_disown(u, "my_container_free");
    EXPECT_ERROR("my_container_free", "not held by a container");
}

/* A backward with create_graph into a leaf makes a cycle: x.grad is a graph
 * that holds x. The cycle is freed with the leaf's last owner. */
static nb_tensor *cubed_sum(nb_tensor *x) { return nb_sum(nb_pow_scalar(x, 3), NB_ALL, false); }

Test(engine, create_graph_grad_of_a_released_leaf_is_freed) {
    int64_t before = nb_live_tensors();
    nb_scope_begin();
    nb_tensor *x = nb_keep(nb_set_requires_grad(vec(3, (float[]){1, 2, -0.5f}), true));
    cr_assert_eq(nb_backward_ex(cubed_sum(x), NULL, &(nb_backward_opts){.create_graph = true}), 0,
                 "%s", nb_error());
    nb_scope_end();
    /* while x lives its .grad is readable and differentiable */
    nb_tensor *g = nb_grad_of(x);
    EXPECT_VALUES(g, 1e-5, 3, 12, 0.75f);
    cr_assert(nb_requires_grad(g));
    nb_scope_begin();
    nb_tensor *s = nb_sum(g, NB_ALL, false), *h = NULL;
    cr_assert_eq(nb_grad(1, &s, NULL, 1, &x, &h, &(nb_grad_opts){.retain_graph = true}), 0, "%s",
                 nb_error());
    EXPECT_VALUES(h, 1e-5, 6, 12, -3);
    nb_scope_end();
    cr_assert_gt(nb_live_tensors(), before + 1);
    nb_release(x);
    cr_assert_eq(nb_live_tensors(), before, "%lld tensors left",
                 (long long)(nb_live_tensors() - before));
}

Test(engine, create_graph_grad_of_a_scope_owned_leaf_is_freed) {
    int64_t before = nb_live_tensors();
    nb_scope_begin();
    nb_tensor *x = nb_set_requires_grad(vec(2, (float[]){1.5f, -2}), true);
    cr_assert_eq(nb_backward_ex(cubed_sum(x), NULL, &(nb_backward_opts){.create_graph = true}), 0);
    cr_assert_eq(nb_backward_ex(cubed_sum(x), NULL, &(nb_backward_opts){.create_graph = true}), 0);
    EXPECT_VALUES(nb_grad_of(x), 1e-5, 13.5f, 24);
    nb_scope_end();
    cr_assert_eq(nb_live_tensors(), before, "%lld tensors left",
                 (long long)(nb_live_tensors() - before));
}

Test(engine, create_graph_grad_cycle_waits_for_every_owner) {
    int64_t before = nb_live_tensors();
    /* x held by a kept node y only: freed when y goes */
    nb_scope_begin();
    nb_tensor *x = nb_set_requires_grad(vec(2, (float[]){1, 2}), true);
    nb_tensor *y = nb_keep(nb_mul_scalar(x, 2));
    cr_assert_eq(nb_backward_ex(cubed_sum(x), NULL, &(nb_backward_opts){.create_graph = true}), 0);
    nb_scope_end();
    EXPECT_VALUES(nb_grad_of(nb_input(y, 0)), 1e-5, 3, 12);
    nb_release(y);
    cr_assert_eq(nb_live_tensors(), before, "%lld tensors left",
                 (long long)(nb_live_tensors() - before));

    /* two leaves whose gradients hold each other: x.grad = 2xw, w.grad = x^2 */
    nb_scope_begin();
    x = nb_keep(nb_set_requires_grad(vec(2, (float[]){1, 2}), true));
    nb_tensor *w = nb_keep(nb_set_requires_grad(vec(2, (float[]){3, -1}), true));
    nb_tensor *loss = nb_sum(nb_mul(nb_mul(x, x), w), NB_ALL, false);
    cr_assert_eq(nb_backward_ex(loss, NULL, &(nb_backward_opts){.create_graph = true}), 0);
    nb_scope_end();
    nb_release(x);
    EXPECT_VALUES(nb_grad_of(w), 1e-5, 1, 4); /* x lives on in w.grad's graph */
    cr_assert_gt(nb_live_tensors(), before);
    nb_release(w);
    cr_assert_eq(nb_live_tensors(), before, "%lld tensors left",
                 (long long)(nb_live_tensors() - before));

    /* a kept .grad keeps its leaf */
    nb_scope_begin();
    x = nb_keep(nb_set_requires_grad(vec(2, (float[]){1, 2}), true));
    cr_assert_eq(nb_backward_ex(cubed_sum(x), NULL, &(nb_backward_opts){.create_graph = true}), 0);
    nb_scope_end();
    nb_tensor *g = nb_keep(nb_grad_of(x));
    nb_release(x);
    EXPECT_VALUES(g, 1e-5, 3, 12);
    cr_assert(nb_requires_grad(g));
    nb_release(g);
    cr_assert_eq(nb_live_tensors(), before, "%lld tensors left",
                 (long long)(nb_live_tensors() - before));
}

/* The same with no scope open at all: every tensor is the caller's. */
Test(noscope, create_graph_grad_of_a_leaf_made_outside_scopes_is_freed) {
    int64_t before = nb_live_tensors();
    nb_tensor *x = nb_set_requires_grad(vec(3, (float[]){1, 2, -0.5f}), true);
    nb_tensor *p = nb_pow_scalar(x, 3), *y = nb_sum(p, NB_ALL, false);
    cr_assert_eq(nb_backward_ex(y, NULL, &(nb_backward_opts){.create_graph = true}), 0, "%s",
                 nb_error());
    nb_release(y);
    nb_release(p);
    EXPECT_VALUES(nb_grad_of(x), 1e-5, 3, 12, 0.75f);
    nb_release(x);
    cr_assert_eq(nb_live_tensors(), before, "%lld tensors left",
                 (long long)(nb_live_tensors() - before));
}

/* ---- grads_when_ready ------------------------------------------------------------------- */

static bool count_bytes(size_t size, void *user) {
    *(int64_t *)user += (int64_t)size;
    return true;
}

/* A chain of four 128x128 layers: backward makes one new weight gradient
 * per layer. The bytes nabla asks the system for during backward (from
 * empty caches: freed blocks are reused after) are its high-water mark. */
static int64_t backward_bytes(nb_tensor **w, bool when_ready) {
    nb_scope_begin();
    nb_tensor *h = nb_full(NB_SHAPE(2, 128), 0.01f);
    for (int i = 0; i < 4; i++) h = nb_tanh(nb_matmul(h, w[i]));
    nb_tensor *loss = nb_sum(h, NB_AXES(), false);
    nb_empty_cache();
    int64_t bytes = 0;
    nb_set_alloc_hook(count_bytes, &bytes);
    int rc = nb_backward_ex(loss, NULL, &(nb_backward_opts){.grads_when_ready = when_ready});
    nb_set_alloc_hook(NULL, NULL);
    cr_assert_eq(rc, 0, "%s", nb_error());
    nb_scope_end();
    return bytes;
}

Test(engine, grads_when_ready_same_values_less_memory) {
    nb_tensor *w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = nb_test_leaf(-0.1f, 0.1f, NB_SHAPE(128, 128));
        nb_backward(nb_sum(nb_mul(w[i], w[i]), NB_AXES(), false));
        nb_zero_grad(w[i]); /* .grad exists, zeros: added to in place */
    }
    float *before[4];
    int64_t at_end = backward_bytes(w, false);
    for (int i = 0; i < 4; i++) {
        before[i] = malloc(sizeof(float) * 128 * 128);
        memcpy(before[i], nb_data(nb_grad_of(w[i])), sizeof(float) * 128 * 128);
        nb_zero_grad(w[i]);
    }
    int64_t ready = backward_bytes(w, true);
    for (int i = 0; i < 4; i++) {
        cr_assert(memcmp(before[i], nb_data(nb_grad_of(w[i])), sizeof(float) * 128 * 128) == 0,
                  "layer %d: the same gradient, bit for bit", i);
        free(before[i]);
    }
    /* at the end, the four new gradients are alive at once; when ready,
     * each is added into .grad and freed before the next is made */
    int64_t layer = 128 * 128 * (int64_t)sizeof(float);
    cr_assert_geq(at_end - ready, 2 * layer, "at the end %lld bytes, when ready %lld",
                  (long long)at_end, (long long)ready);
}
