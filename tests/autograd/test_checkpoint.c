/* test_checkpoint.c — gradient checkpointing (nb_checkpoint,
 * nb_sequential_checkpoint).
 *
 * A checkpointed computation must give the gradients of the plain one,
 * bit for bit (the same ops run on the same values), and its second
 * derivatives to rounding;
 * it is gradchecked to the second order through a non-leaf input (the path
 * that detaches and the path that keeps the graph). Random ops draw the
 * same values when recomputed, however the generator moved in between, and
 * the generator is left where it was. The point of it all, memory, is
 * checked by counting the tensors a forward leaves alive, and, under
 * grads_when_ready, by counting the bytes a backward allocates: the
 * recomputation must write each weight's .grad and free its gradient
 * before making the next, as the plain run does. Hooks fire once on the
 * whole gradient, a weight shared with the rest of the graph gets the sum,
 * and a failed backward leaves .grad as each mode promises. Errors: bad
 * arguments, an input changed in place before the backward, a lazy layer
 * building itself inside a segment, and every allocation failing in turn.
 */
#include <string.h>

#include "test_util.h"

TestSuite(checkpoint, NB_TEST_HOOKS);

/* A segment with weights: tanh(x @ w) * sigmoid(x @ w + 1), x [B, D], w [D, D]. */
static nb_tensor *segment(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    nb_tensor *h = nb_matmul(in[0], in[1]);
    return nb_mul(nb_tanh(h), nb_sigmoid(nb_add_scalar(h, 1.0f)));
}

/* Dropout-like: x * (u < 0.5) * 2 with u drawn from the default generator. */
static nb_tensor *random_segment(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    nb_tensor *u = nb_rand(nb_ndim(in[0]), nb_shape(in[0]));
    return nb_mul(nb_sin(in[0]), nb_mul_scalar(nb_lt_scalar(u, 0.5f), 2.0f));
}

static void expect_bitwise(const nb_tensor *a, const nb_tensor *b) {
    cr_assert_not_null(a, "%s", nb_error() ? nb_error() : "");
    cr_assert_not_null(b, "%s", nb_error() ? nb_error() : "");
    cr_assert(nb_same_shape(a, b));
    cr_assert(memcmp(nb_data(a), nb_data(b), (size_t)nb_numel(a) * sizeof(float)) == 0,
              "gradients differ");
}

/* loss = sum(segment(segment(2x, w1), w2)), the middle one checkpointed or not */
static nb_tensor *two_segments(nb_tensor *const *in, void *ctx) {
    bool ckpt = ctx != NULL;
    nb_tensor *h = nb_mul_scalar(in[0], 2.0f);
    nb_tensor *a[2] = {h, in[1]};
    h = ckpt ? nb_checkpoint(segment, NULL, 0, 2, a) : segment(a, NULL);
    nb_tensor *b[2] = {h, in[2]};
    h = ckpt ? nb_checkpoint(segment, NULL, 0, 2, b) : segment(b, NULL);
    return nb_sum(h, NB_ALL, false);
}

Test(checkpoint, gradients_are_those_of_the_plain_run_bitwise) {
    nb_tensor *in[3] = {nb_test_leaf(-1, 1, NB_SHAPE(4, 5)), nb_test_leaf(-1, 1, NB_SHAPE(5, 5)),
                        nb_test_leaf(-1, 1, NB_SHAPE(5, 5))};
    nb_tensor *plain[3], *ckpt[3];
    nb_tensor *y0 = two_segments(in, NULL), *y1 = two_segments(in, "checkpoint");
    cr_assert_eq(nb_item(y0), nb_item(y1), "the forward values differ");
    cr_assert_eq(nb_grad(1, &y0, NULL, 3, in, plain, NULL), 0, "%s", nb_error());
    cr_assert_eq(nb_grad(1, &y1, NULL, 3, in, ckpt, NULL), 0, "%s", nb_error());
    for (int i = 0; i < 3; i++) expect_bitwise(plain[i], ckpt[i]);
    /* and through .grad, with nb_backward */
    y1 = two_segments(in, "checkpoint");
    cr_assert_eq(nb_backward(y1), 0, "%s", nb_error());
    for (int i = 0; i < 3; i++) expect_bitwise(plain[i], nb_grad_of(in[i]));
    for (int i = 0; i < 3; i++) nb_clear_grad(in[i]);
}

/* Second derivatives agree to rounding, not bitwise: the graph of the
 * gradient is built from the segment's own nb_grad, so its sums are taken
 * in another order than in the plain graph. */
Test(checkpoint, second_derivatives_match_the_plain_run) {
    nb_tensor *in[3] = {nb_test_leaf(-1, 1, NB_SHAPE(3, 4)), nb_test_leaf(-1, 1, NB_SHAPE(4, 4)),
                        nb_test_leaf(-1, 1, NB_SHAPE(4, 4))};
    nb_tensor *g[3], *gg_plain[3], *gg_ckpt[3];
    for (int run = 0; run < 2; run++) {
        nb_tensor *y = two_segments(in, run ? "checkpoint" : NULL);
        cr_assert_eq(nb_grad(1, &y, NULL, 3, in, g, &(nb_grad_opts){.create_graph = true}), 0, "%s",
                     nb_error());
        /* d/d(in) of sum(g[0]^2 + g[1]) */
        nb_tensor *s = nb_add(nb_sum(nb_square(g[0]), NB_ALL, false), nb_sum(g[1], NB_ALL, false));
        cr_assert_eq(nb_grad(1, &s, NULL, 3, in, run ? gg_ckpt : gg_plain, NULL), 0, "%s", nb_error());
    }
    for (int i = 0; i < 3; i++)
        for (int64_t k = 0; k < nb_numel(gg_plain[i]); k++)
            cr_assert_float_eq(nb_data(gg_plain[i])[k], nb_data(gg_ckpt[i])[k], 1e-5,
                               "input %d element %lld: %.9g plain, %.9g checkpointed", i,
                               (long long)k, (double)nb_data(gg_plain[i])[k],
                               (double)nb_data(gg_ckpt[i])[k]);
}

Test(checkpoint, gradcheck_first_and_second_order) {
    nb_tensor *in[3] = {nb_test_leaf(-1, 1, NB_SHAPE(2, 3)), nb_test_leaf(-1, 1, NB_SHAPE(3, 3)),
                        nb_test_leaf(-1, 1, NB_SHAPE(3, 3))};
    nb_test_gradcheck(two_segments, "checkpoint", 3, in, true);
}

/* The plain value of f at x: tanh(x @ w) * sigmoid(x @ w + 1), by hand for a
 * 1x1 case: x = 0.5, w = 2 gives tanh(1) * sigmoid(2). */
Test(checkpoint, forward_value_by_hand) {
    nb_tensor *in[2] = {nb_scalar(0.5f), nb_set_requires_grad(nb_scalar(2.0f), true)};
    in[0] = nb_reshape(in[0], NB_SHAPE(1, 1));
    in[1] = nb_reshape(in[1], NB_SHAPE(1, 1));
    nb_tensor *y = nb_checkpoint(segment, NULL, 0, 2, in);
    EXPECT_VALUES(y, 1e-6, (float)(tanh(1.0) / (1.0 + exp(-2.0))));
    cr_assert(nb_requires_grad(y));
}

Test(checkpoint, random_ops_are_replayed) {
    nb_tensor *x = nb_test_leaf(-2, 2, NB_SHAPE(64));
    nb_manual_seed(7);
    nb_tensor *y = nb_sum(random_segment(&x, NULL), NB_ALL, false), *plain;
    cr_assert_eq(nb_grad(1, &y, NULL, 1, &x, &plain, NULL), 0, "%s", nb_error());

    nb_manual_seed(7);
    nb_tensor *yc = nb_sum(nb_checkpoint(random_segment, NULL, 0, 1, &x), NB_ALL, false), *g;
    cr_assert_eq(nb_item(y), nb_item(yc));
    nb_rand(NB_SHAPE(10)); /* the generator moves on before the backward */
    nb_generator before = *nb_default_generator();
    cr_assert_eq(nb_grad(1, &yc, NULL, 1, &x, &g, NULL), 0, "%s", nb_error());
    expect_bitwise(plain, g);
    cr_assert(memcmp(&before, nb_default_generator(), sizeof before) == 0,
              "the backward left the generator moved");
    /* the masks are not all ones: the test can fail */
    int zeros = 0;
    for (int i = 0; i < 64; i++) zeros += nb_data(g)[i] == 0.0f;
    cr_assert(zeros > 10 && zeros < 54);
}

/* A checkpointed chain keeps only the tensors entering each segment. */
static nb_tensor *deep(nb_tensor *x, nb_tensor *w, int layers, bool ckpt) {
    for (int i = 0; i < layers; i++) {
        nb_tensor *a[2] = {x, w};
        x = ckpt ? nb_checkpoint(segment, NULL, 0, 2, a) : segment(a, NULL);
    }
    return x;
}

Test(checkpoint, keeps_fewer_tensors_alive) {
    nb_tensor *w = nb_keep(nb_test_leaf(-1, 1, NB_SHAPE(4, 4)));
    nb_tensor *x = nb_keep(nb_rand(NB_SHAPE(2, 4)));
    int64_t alive[2];
    nb_tensor *g[2];
    for (int ckpt = 0; ckpt < 2; ckpt++) {
        nb_scope_begin();
        int64_t before = nb_live_tensors();
        nb_tensor *y = nb_keep(nb_sum(deep(x, w, 10, ckpt), NB_ALL, false));
        nb_scope_end(); /* what is still alive is what the graph holds */
        alive[ckpt] = nb_live_tensors() - before;
        nb_grad(1, &y, NULL, 1, &w, &g[ckpt], NULL);
        nb_keep(g[ckpt]);
        nb_release(y);
    }
    /* plain: h, tanh, h+1, sigmoid and the product per layer, and more;
     * checkpointed: the output and its saved closure per layer */
    cr_assert(alive[0] >= 50, "plain run keeps %lld", (long long)alive[0]);
    cr_assert(alive[1] <= 2 * 10 + 2, "checkpointed run keeps %lld", (long long)alive[1]);
    expect_bitwise(g[0], g[1]);
    nb_release(g[0]);
    nb_release(g[1]);
    nb_release(w);
    nb_release(x);
}

static nb_tensor *identity(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return in[0];
}

Test(checkpoint, a_function_returning_its_input) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(3));
    nb_tensor *y = nb_checkpoint(identity, NULL, 0, 1, &x), *g;
    cr_assert_not_null(y, "%s", nb_error());
    cr_assert_neq(y, x);
    cr_assert_eq(nb_grad(1, &y, (nb_tensor *[]){nb_full(NB_SHAPE(3), 2.0f)}, 1, &x, &g, NULL), 0,
                 "%s", nb_error());
    EXPECT_VALUES(g, 0, 2, 2, 2);
}

typedef struct scale_ctx {
    float factor;
} scale_ctx;

static nb_tensor *scale(nb_tensor *const *in, void *ctx) {
    return nb_mul_scalar(in[0], ((scale_ctx *)ctx)->factor);
}

Test(checkpoint, the_context_is_copied_when_asked) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(2)), *g;
    scale_ctx c = {3.0f};
    nb_tensor *y = nb_checkpoint(scale, &c, sizeof c, 1, &x);
    c.factor = 100.0f; /* the copy is what the recomputation sees */
    cr_assert_eq(nb_grad(1, &y, (nb_tensor *[]){nb_ones(NB_SHAPE(2))}, 1, &x, &g, NULL), 0, "%s",
                 nb_error());
    EXPECT_VALUES(g, 0, 3, 3);
}

Test(checkpoint, without_grad_it_is_a_plain_call) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(2, 3)), *w = nb_test_leaf(-1, 1, NB_SHAPE(3, 3));
    bool was = nb_set_grad_enabled(false);
    nb_tensor *y = nb_checkpoint(segment, NULL, 0, 2, (nb_tensor *[]){x, w});
    nb_set_grad_enabled(was);
    cr_assert_not_null(y);
    cr_assert_not(nb_requires_grad(y));
}

/* NULL, silently, on its second call: the recomputation */
static nb_tensor *fails_when_recomputed(nb_tensor *const *in, void *ctx) {
    int *calls = ctx;
    return ++*calls > 1 ? NULL : nb_mul_scalar(in[0], 2.0f);
}

Test(checkpoint, a_recomputation_that_fails_fails_the_backward) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(3));
    int calls = 0;
    nb_tensor *y = nb_sum(nb_checkpoint(fails_when_recomputed, &calls, 0, 1, &x), NB_ALL, false);
    cr_assert_eq(nb_backward(y), -1);
    EXPECT_ERROR("checkpointed function returned NULL");
    cr_assert_null(nb_grad_of(x));
}

Test(checkpoint, errors) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(2, 3)), *w = nb_test_leaf(-1, 1, NB_SHAPE(3, 3));
    cr_assert_null(nb_checkpoint(NULL, NULL, 0, 1, &x));
    EXPECT_ERROR("nb_checkpoint");
    cr_assert_null(nb_checkpoint(segment, NULL, 8, 1, &x));
    EXPECT_ERROR("nb_checkpoint", "8 bytes");
    nb_clear_error();
    cr_assert_null(nb_checkpoint(segment, NULL, 0, 2, (nb_tensor *[]){NULL, w}));
    cr_assert_null(nb_error(), "NULL input, no second message");
    /* an input changed in place between forward and backward */
    nb_tensor *h = nb_mul_scalar(x, 2.0f);
    nb_tensor *y = nb_sum(nb_checkpoint(segment, NULL, 0, 2, (nb_tensor *[]){h, w}), NB_ALL, false);
    nb_data_mut(h)[0] = 5.0f;
    cr_assert_eq(nb_backward(y), -1);
    EXPECT_ERROR("checkpoint", "modified in place", "[2,3]");
    cr_assert_null(nb_grad_of(w));
}

/* ---- nb_sequential_checkpoint ------------------------------------------------------ */

static nb_module *mlp(int layers, float dropout) {
    nb_module *l[16];
    int n = 0;
    for (int i = 0; i < layers; i++) {
        l[n++] = nb_dense(6, i + 1 < layers ? "tanh" : "linear", 6);
        if (dropout > 0 && i % 2 == 0) l[n++] = nb_dropout(dropout);
    }
    return nb_sequential(n, l);
}

Test(checkpoint, sequential_gradients_bitwise_for_every_segment_count) {
    nb_module *seq = mlp(6, 0.3f);
    cr_assert_not_null(seq, "%s", nb_error());
    int n;
    nb_tensor **p = nb_module_parameters(seq, &n);
    nb_tensor *x = nb_randn(NB_SHAPE(4, 6));
    nb_tensor *plain[12], *g[12];
    nb_manual_seed(3);
    nb_tensor *y = nb_sum(nb_square(nb_module_forward(seq, x)), NB_ALL, false);
    cr_assert_eq(nb_grad(1, &y, NULL, n, p, plain, NULL), 0, "%s", nb_error());
    for (int segments = 1; segments <= 10; segments += 3) {
        nb_manual_seed(3);
        nb_tensor *yc = nb_sum(nb_square(nb_sequential_checkpoint(seq, segments, x)), NB_ALL, false);
        cr_assert_not_null(yc, "%s", nb_error());
        cr_assert_eq(nb_item(y), nb_item(yc));
        nb_rand(NB_SHAPE(5));
        cr_assert_eq(nb_grad(1, &yc, NULL, n, p, g, NULL), 0, "%s", nb_error());
        for (int i = 0; i < n; i++) expect_bitwise(plain[i], g[i]);
    }
    nb_module_free(seq);
}

static nb_tensor *f_seq(nb_tensor *const *in, void *ctx) {
    return nb_sum(nb_square(nb_sequential_checkpoint(ctx, 2, in[0])), NB_ALL, false);
}

Test(checkpoint, sequential_gradcheck_second_order) {
    nb_module *seq = mlp(2, 0);
    int n;
    nb_tensor **p = nb_module_parameters(seq, &n);
    nb_tensor *in[8] = {nb_test_leaf(-1, 1, NB_SHAPE(2, 6))};
    for (int i = 0; i < n; i++) in[i + 1] = p[i];
    nb_test_gradcheck(f_seq, seq, n + 1, in, true);
    nb_module_free(seq);
}

Test(checkpoint, sequential_errors) {
    nb_module *lazy = nb_sequential(2, (nb_module *[]){nb_dense(3, "tanh", 0), nb_dense(2, NULL, 0)});
    nb_tensor *x = nb_randn(NB_SHAPE(2, 4));
    cr_assert_null(nb_sequential_checkpoint(lazy, 2, x));
    EXPECT_ERROR("nb_sequential_checkpoint", "input_dim");
    /* after one plain forward the layers are built */
    nb_module_forward(lazy, x);
    cr_assert_not_null(nb_sequential_checkpoint(lazy, 2, x), "%s", nb_error());
    cr_assert_null(nb_sequential_checkpoint(lazy, 0, x));
    EXPECT_ERROR("nb_sequential_checkpoint", "segment");
    nb_module *dense = nb_dense(2, NULL, 4);
    cr_assert_null(nb_sequential_checkpoint(dense, 2, x));
    EXPECT_ERROR("nb_sequential_checkpoint", "Dense");
    nb_clear_error();
    cr_assert_null(nb_sequential_checkpoint(lazy, 2, NULL));
    cr_assert_null(nb_error());
    nb_module_free(dense);
    nb_module_free(lazy);
}

/* Every allocation of a checkpointed forward and backward failing in turn:
 * no crash, no leak, an out-of-memory message on failure. */
static int oom_checkpoint_run(void *ctx) {
    nb_tensor **wx = ctx, *g[2] = {0};
    nb_tensor *h = nb_mul_scalar(wx[1], 2.0f);
    nb_tensor *y = nb_sum(deep(h, wx[0], 2, true), NB_ALL, false);
    return y ? nb_grad(1, &y, NULL, 2, (nb_tensor *[]){wx[1], wx[0]}, g, NULL) : -1;
}

Test(checkpoint, allocation_failures) {
    nb_tensor *wx[2] = {nb_test_leaf(-1, 1, NB_SHAPE(3, 3)), nb_test_leaf(-1, 1, NB_SHAPE(2, 3))};
    nb_test_oom_walk(oom_checkpoint_run, wx, false);
    nb_test_oom_walk(oom_checkpoint_run, wx, true);
}

/* What checkpointing with create_graph relies on: nb_grad runs (and frees)
 * only the part of the graph between its outputs and its inputs. */
Test(checkpoint, nb_grad_leaves_the_graph_above_its_inputs_alone) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(3));
    nb_tensor *h = nb_mul_scalar(x, 2.0f);
    nb_tensor *y = nb_sum(nb_square(h), NB_ALL, false), *gh, *gx;
    cr_assert_eq(nb_grad(1, &y, NULL, 1, &h, &gh, NULL), 0, "%s", nb_error());
    /* h's own graph was neither run nor freed: it still differentiates */
    cr_assert_eq(nb_grad(1, &h, (nb_tensor *[]){gh}, 1, &x, &gx, NULL), 0, "%s", nb_error());
    const float *px = nb_data(x);
    EXPECT_VALUES(gx, 1e-6, 8 * px[0], 8 * px[1], 8 * px[2]);
}

/* ---- .grad written as soon as final (grads_when_ready) ------------------------------
 * Under nb_backward with grads_when_ready, a leaf whose gradient comes from
 * one checkpoint alone gets its .grad from the recomputation's backward,
 * the moment it is final; the other inputs' gradients go back to the
 * enclosing backward. */

static const nb_backward_opts when_ready = {.grads_when_ready = true};

/* four layers h = tanh(h @ w[i]); in is {x, w[0], ..., w[3]} */
static nb_tensor *four_layers(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    nb_tensor *h = in[0];
    for (int i = 0; i < 4; i++) h = nb_tanh(nb_matmul(h, in[i + 1]));
    return h;
}

static bool count_bytes(size_t size, void *user) {
    *(int64_t *)user += (int64_t)size;
    return true;
}

/* The bytes a backward of sum(four_layers(x)) asks the system for, from
 * empty caches (freed blocks are reused after): its high-water mark. */
static int64_t four_layer_backward_bytes(nb_tensor *x, nb_tensor **w, bool ckpt) {
    nb_scope_begin();
    nb_tensor *in[5] = {x, w[0], w[1], w[2], w[3]};
    nb_tensor *h = ckpt ? nb_checkpoint(four_layers, NULL, 0, 5, in) : four_layers(in, NULL);
    nb_tensor *loss = nb_sum(h, NB_ALL, false);
    nb_empty_cache();
    int64_t bytes = 0;
    nb_set_alloc_hook(count_bytes, &bytes);
    int rc = nb_backward_ex(loss, NULL, &when_ready);
    nb_set_alloc_hook(NULL, NULL);
    cr_assert_eq(rc, 0, "%s", nb_error());
    nb_scope_end();
    return bytes;
}

Test(checkpoint, when_ready_each_weight_gradient_is_freed_before_the_next) {
    nb_tensor *x = nb_full(NB_SHAPE(2, 256), 0.01f), *w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = nb_test_leaf(-0.1f, 0.1f, NB_SHAPE(256, 256));
        nb_backward(nb_sum(nb_mul(w[i], w[i]), NB_ALL, false));
        nb_zero_grad(w[i]); /* .grad exists, zeros: added to in place */
    }
    int64_t plain = four_layer_backward_bytes(x, w, false);
    float *expected[4];
    for (int i = 0; i < 4; i++) {
        expected[i] = malloc(sizeof(float) * 256 * 256);
        memcpy(expected[i], nb_data(nb_grad_of(w[i])), sizeof(float) * 256 * 256);
        nb_zero_grad(w[i]);
    }
    int64_t ckpt = four_layer_backward_bytes(x, w, true);
    for (int i = 0; i < 4; i++) {
        cr_assert(memcmp(expected[i], nb_data(nb_grad_of(w[i])), sizeof(float) * 256 * 256) == 0,
                  "layer %d: the plain run's gradient, bit for bit", i);
        free(expected[i]);
    }
    /* The activations are 2x256 floats, a weight gradient 256x256: held
     * until the segment is done, the four would take 4 layers' worth; as
     * in the plain run, one at a time takes one (and the recomputation's
     * small change: its activations and its traversal's bookkeeping). */
    int64_t layer = 256 * 256 * (int64_t)sizeof(float);
    cr_assert_lt(ckpt, 2 * layer, "checkpointed %lld bytes, plain %lld, a layer %lld",
                 (long long)ckpt, (long long)plain, (long long)layer);
    cr_assert_lt(ckpt, plain + layer / 2, "checkpointed %lld bytes, plain %lld", (long long)ckpt,
                 (long long)plain);
}

/* Gradients and .grad accumulated over two backwards, through a Sequential
 * in segments (dropout included): bitwise those of the plain run, with and
 * without grads_when_ready. */
Test(checkpoint, when_ready_sequential_gradients_bitwise) {
    nb_module *seq = mlp(6, 0.3f);
    int n;
    nb_tensor **p = nb_module_parameters(seq, &n);
    nb_tensor *x = nb_randn(NB_SHAPE(4, 6));
    float *expected[12];
    for (int run = 0; run < 3; run++) {
        for (int rep = 0; rep < 2; rep++) {
            nb_manual_seed(11 + rep);
            nb_tensor *y = run ? nb_sequential_checkpoint(seq, 3, x) : nb_module_forward(seq, x);
            nb_tensor *loss = nb_sum(nb_square(y), NB_ALL, false);
            cr_assert_eq(nb_backward_ex(loss, NULL, &(nb_backward_opts){.grads_when_ready = run != 1}),
                         0, "%s", nb_error());
        }
        for (int i = 0; i < n; i++) {
            size_t bytes = (size_t)nb_numel(p[i]) * sizeof(float);
            if (run == 0) {
                expected[i] = malloc(bytes);
                memcpy(expected[i], nb_data(nb_grad_of(p[i])), bytes);
            } else {
                cr_assert(memcmp(expected[i], nb_data(nb_grad_of(p[i])), bytes) == 0,
                          "run %d, parameter %d differs from the plain run", run, i);
            }
            nb_clear_grad(p[i]);
        }
    }
    for (int i = 0; i < n; i++) free(expected[i]);
    nb_module_free(seq);
}

typedef struct hook_log {
    int calls, post_calls;
    float first; /* the first element of the gradient the hook saw */
    float post_first; /* and of .grad when the post hook saw it */
} hook_log;

static nb_tensor *doubling_hook(nb_tensor *g, void *user) {
    hook_log *log = user;
    log->calls++;
    log->first = nb_data(g)[0];
    return nb_mul_scalar(g, 2.0f);
}

static void post_hook(nb_tensor *t, void *user) {
    hook_log *log = user;
    log->post_calls++;
    log->post_first = nb_data(nb_grad_of(t))[0];
}

/* A gradient hook (which doubles the gradient) and a post-accumulate-grad
 * hook on a weight read inside a checkpoint fire once, on its whole
 * gradient, in each mode of backward, as in the plain run. */
Test(checkpoint, hooks_fire_once) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(3, 4)), *w = nb_test_leaf(-1, 1, NB_SHAPE(4, 4));
    nb_tensor *in[2] = {nb_mul_scalar(x, 2.0f), w}, *plain;
    nb_tensor *y = nb_sum(segment(in, NULL), NB_ALL, false);
    cr_assert_eq(nb_grad(1, &y, NULL, 1, &w, &plain, NULL), 0, "%s", nb_error());
    for (int mode = 0; mode < 3; mode++) { /* nb_grad, nb_backward, and when ready */
        hook_log log = {0};
        int h = nb_register_hook(w, doubling_hook, &log);
        int ph = nb_register_post_accumulate_grad_hook(w, post_hook, &log);
        cr_assert(h > 0 && ph > 0);
        in[0] = nb_mul_scalar(x, 2.0f);
        y = nb_sum(nb_checkpoint(segment, NULL, 0, 2, in), NB_ALL, false);
        nb_tensor *g = NULL;
        int rc = mode == 0 ? nb_grad(1, &y, NULL, 1, &w, &g, NULL)
                           : nb_backward_ex(y, NULL, &(nb_backward_opts){.grads_when_ready = mode == 2});
        cr_assert_eq(rc, 0, "%s", nb_error());
        if (mode > 0) g = nb_grad_of(w);
        cr_assert_eq(log.calls, 1, "mode %d: the gradient hook fired %d times", mode, log.calls);
        cr_assert_eq(log.first, nb_data(plain)[0], "mode %d: the hook saw part of the gradient", mode);
        for (int64_t k = 0; k < 16; k++)
            cr_assert_eq(nb_data(g)[k], 2.0f * nb_data(plain)[k], "mode %d element %lld", mode,
                         (long long)k);
        cr_assert_eq(log.post_calls, mode > 0 ? 1 : 0, "mode %d: the post hook fired %d times", mode,
                     log.post_calls);
        if (mode > 0) cr_assert_eq(log.post_first, 2.0f * nb_data(plain)[0]);
        nb_remove_hook(w, h);
        nb_remove_hook(w, ph);
        nb_clear_grad(w);
        nb_clear_grad(x);
    }
}

/* w also used outside the segment, by a node the backward reaches before
 * the checkpoint (after: y @ w) or after it (before: x @ w feeding it):
 * either way its .grad is the sum, the plain run's bit for bit, and its
 * hooks see the sum, once (a .grad written early from the segment's part
 * and then added to would pass the values but call the hooks twice). */
static nb_tensor *shared(nb_tensor *const *in, void *ctx) {
    bool ckpt = ((const int *)ctx)[0], after = ((const int *)ctx)[1];
    nb_tensor *x = in[0], *w = in[1];
    nb_tensor *h = after ? x : nb_matmul(x, w);
    nb_tensor *a[2] = {h, w};
    nb_tensor *y = ckpt ? nb_checkpoint(segment, NULL, 0, 2, a) : segment(a, NULL);
    if (after) y = nb_matmul(y, w);
    return nb_sum(y, NB_ALL, false);
}

Test(checkpoint, when_ready_a_weight_shared_inside_and_outside_gets_the_sum) {
    nb_tensor *in[2] = {nb_test_leaf(-1, 1, NB_SHAPE(3, 4)), nb_test_leaf(-1, 1, NB_SHAPE(4, 4))};
    for (int after = 0; after < 2; after++) {
        nb_tensor *expected[2];
        for (int ckpt = 0; ckpt < 2; ckpt++) {
            int ctx[2] = {ckpt, after};
            hook_log log = {0};
            int ph = nb_register_post_accumulate_grad_hook(in[1], post_hook, &log);
            cr_assert_eq(nb_backward_ex(shared(in, ctx), NULL, &when_ready), 0, "%s", nb_error());
            nb_remove_hook(in[1], ph);
            for (int i = 0; i < 2; i++) {
                if (!ckpt) expected[i] = nb_clone(nb_grad_of(in[i]));
                else expect_bitwise(expected[i], nb_grad_of(in[i]));
                nb_clear_grad(in[i]);
            }
            cr_assert_eq(log.post_calls, 1, "after %d: the post hook fired %d times", after,
                         log.post_calls);
            cr_assert_eq(log.post_first, nb_data(expected[1])[0], "after %d: the hook saw a part",
                         after);
        }
        /* and the sum is right: gradcheck the shared function itself */
        int ctx[2] = {1, after};
        nb_test_gradcheck(shared, ctx, 2, in, false);
    }
}

/* A backward that fails in the third checkpoint it reaches: by default no
 * .grad is written; with grads_when_ready the weights of the two segments
 * recomputed before the failure have theirs, the plain run's (as
 * documented), and x, whose segment failed, none. */
Test(checkpoint, a_failure_leaves_grad_as_the_mode_promises) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(3, 4));
    nb_tensor *w1 = nb_test_leaf(-1, 1, NB_SHAPE(4, 4)), *w2 = nb_test_leaf(-1, 1, NB_SHAPE(4, 4));
    nb_tensor *y = segment((nb_tensor *[]){segment((nb_tensor *[]){x, w1}, NULL), w2}, NULL), *plain[2];
    cr_assert_eq(nb_grad(1, (nb_tensor *[]){nb_sum(y, NB_ALL, false)}, NULL, 2,
                         (nb_tensor *[]){w1, w2}, plain, NULL),
                 0, "%s", nb_error());
    for (int ready = 0; ready < 2; ready++) {
        int calls = 0;
        nb_tensor *h = nb_checkpoint(fails_when_recomputed, &calls, 0, 1, &x);
        /* (2x)/2 is x exactly: the plain run's values */
        h = nb_checkpoint(segment, NULL, 0, 2, (nb_tensor *[]){nb_div_scalar(h, 2.0f), w1});
        h = nb_checkpoint(segment, NULL, 0, 2, (nb_tensor *[]){h, w2});
        nb_tensor *loss = nb_sum(h, NB_ALL, false);
        cr_assert_eq(nb_backward_ex(loss, NULL, &(nb_backward_opts){.grads_when_ready = ready}), -1);
        EXPECT_ERROR("checkpointed function returned NULL");
        cr_assert_null(nb_grad_of(x));
        if (!ready) {
            cr_assert(!nb_grad_of(w1) && !nb_grad_of(w2),
                      "the default mode wrote a .grad in a failed backward");
        } else {
            expect_bitwise(plain[0], nb_grad_of(w1));
            expect_bitwise(plain[1], nb_grad_of(w2));
        }
        nb_clear_grad(w1);
        nb_clear_grad(w2);
    }
}

/* Every allocation of a checkpointed forward and nb_backward failing in
 * turn, in both modes: no crash, no leak, and no .grad written by a
 * failed backward in the default mode. */
Test(checkpoint, allocation_failures_through_grad) {
    nb_tensor *w = nb_keep(nb_test_leaf(-1, 1, NB_SHAPE(3, 3)));
    nb_tensor *x = nb_keep(nb_test_leaf(-1, 1, NB_SHAPE(2, 3)));
    for (int ready = 0; ready < 2; ready++)
        for (int64_t n = 1;; n++) {
            cr_assert(n < 100000);
            nb_clear_grad(w);
            nb_clear_grad(x);
            nb_empty_cache();
            int64_t live = nb_live_tensors();
            nb_clear_error();
            nb_test_alloc a = {.fail_at = n};
            nb_set_alloc_hook(nb_test_alloc_hook, &a);
            nb_scope_begin();
            nb_tensor *h = nb_mul_scalar(x, 2.0f);
            nb_tensor *y = nb_sum(deep(h, w, 2, true), NB_ALL, false);
            int rc = y ? nb_backward_ex(y, NULL, &(nb_backward_opts){.grads_when_ready = ready}) : -1;
            nb_scope_end();
            nb_set_alloc_hook(NULL, NULL);
            if (rc != 0 && !ready) cr_assert(!nb_grad_of(w) && !nb_grad_of(x), "allocation %lld", (long long)n);
            nb_clear_grad(w);
            nb_clear_grad(x);
            cr_assert_eq(nb_live_tensors(), live, "leak at allocation %lld", (long long)n);
            if (!a.fired) {
                cr_assert_eq(rc, 0, "%s", nb_error());
                break;
            }
            if (rc != 0) EXPECT_ERROR("out of memory");
        }
    nb_release(w);
    nb_release(x);
}

/* ---- forward mode through a checkpoint ------------------------------------------------ */

/* two_segments without the sum, for nb_jvp: out[0] = the [B, D] output */
static int two_segments_jvp(nb_tensor *const *in, nb_tensor **out, void *ctx) {
    bool ckpt = ctx != NULL;
    nb_tensor *h = nb_mul_scalar(in[0], 2.0f);
    nb_tensor *a[2] = {h, in[1]};
    h = ckpt ? nb_checkpoint(segment, NULL, 0, 2, a) : segment(a, NULL);
    nb_tensor *b[2] = {h, in[2]};
    out[0] = ckpt ? nb_checkpoint(segment, NULL, 0, 2, b) : segment(b, NULL);
    return out[0] ? 0 : -1;
}

/* The tangent through two checkpoints is the plain function's, bit for bit
 * (the same ops on the same values and tangents), and the central finite
 * difference (f(x + hv) - f(x - hv)) / 2h to the accuracy of floats. */
Test(checkpoint, jvp_matches_the_plain_run_and_finite_differences) {
    nb_tensor *in[3] = {nb_test_leaf(-1, 1, NB_SHAPE(3, 4)), nb_test_leaf(-1, 1, NB_SHAPE(4, 4)),
                        nb_test_leaf(-1, 1, NB_SHAPE(4, 4))};
    nb_tensor *v[3] = {nb_uniform(NULL, -1, 1, NB_SHAPE(3, 4)), nb_uniform(NULL, -1, 1, NB_SHAPE(4, 4)),
                       nb_uniform(NULL, -1, 1, NB_SHAPE(4, 4))};
    nb_tensor *y[2], *t[2];
    for (int ckpt = 0; ckpt < 2; ckpt++)
        cr_assert_eq(nb_jvp(two_segments_jvp, ckpt ? "checkpoint" : NULL, 3, in, v, 1, &y[ckpt],
                            &t[ckpt]), 0, "%s", nb_error());
    expect_bitwise(y[0], y[1]);
    expect_bitwise(t[0], t[1]);
    const float h = 1e-2f;
    nb_tensor *ys[2];
    for (int side = 0; side < 2; side++) {
        nb_tensor *moved[3];
        for (int i = 0; i < 3; i++) moved[i] = nb_add(in[i], nb_mul_scalar(v[i], side ? -h : h));
        cr_assert_eq(two_segments_jvp(moved, &ys[side], NULL), 0, "%s", nb_error());
    }
    for (int64_t k = 0; k < nb_numel(t[1]); k++) {
        double fd = ((double)nb_data(ys[0])[k] - nb_data(ys[1])[k]) / (2.0 * h);
        cr_assert(fabs(nb_data(t[1])[k] - fd) < 2e-3, "element %lld: tangent %.7g, finite "
                  "difference %.7g", (long long)k, (double)nb_data(t[1])[k], fd);
    }
}

static int random_jvp(nb_tensor *const *in, nb_tensor **out, void *ctx) {
    out[0] = ctx ? nb_checkpoint(random_segment, NULL, 0, 1, in) : random_segment(in, NULL);
    return out[0] ? 0 : -1;
}

/* Dropout-like masks: the rule's recomputation draws the forward's masks
 * and leaves the generator where the forward left it. */
Test(checkpoint, jvp_replays_random_ops) {
    nb_tensor *x = nb_test_leaf(-2, 2, NB_SHAPE(64)), *v = nb_uniform(NULL, -1, 1, NB_SHAPE(64));
    nb_tensor *y[2], *t[2];
    nb_generator after[2];
    for (int ckpt = 0; ckpt < 2; ckpt++) {
        nb_manual_seed(5);
        cr_assert_eq(nb_jvp(random_jvp, ckpt ? "checkpoint" : NULL, 1, &x, &v, 1, &y[ckpt], &t[ckpt]),
                     0, "%s", nb_error());
        after[ckpt] = *nb_default_generator();
    }
    expect_bitwise(t[0], t[1]);
    cr_assert(memcmp(&after[0], &after[1], sizeof after[0]) == 0, "the generator moved differently");
    /* the tangent is cos(x) v 2 where kept, 0 where dropped, and both occur */
    int zeros = 0;
    for (int k = 0; k < 64; k++) {
        float tk = nb_data(t[1])[k], want = 2.0f * cosf(nb_data(x)[k]) * nb_data(v)[k];
        zeros += tk == 0.0f;
        cr_assert(tk == 0.0f || fabsf(tk - want) < 1e-6f, "element %d: %g, expected %g or 0", k,
                  (double)tk, (double)want);
    }
    cr_assert(zeros > 10 && zeros < 54);
}

static nb_tensor *two_segments_of(nb_tensor *const *in, void *ctx) { return two_segments(in, ctx); }

/* Forward over reverse (nb_hvp: the tangent of a gradient, whose backward
 * recomputes the segments from copies of their inputs carrying the
 * tangents) and reverse over reverse (nb_vhp), through checkpoints: the
 * plain run's H v, to rounding, with and without create_graph. */
Test(checkpoint, hessian_vector_products_through_checkpoints) {
    nb_tensor *in[3] = {nb_test_leaf(-1, 1, NB_SHAPE(2, 3)), nb_test_leaf(-1, 1, NB_SHAPE(3, 3)),
                        nb_test_leaf(-1, 1, NB_SHAPE(3, 3))};
    nb_tensor *v[3] = {nb_uniform(NULL, -1, 1, NB_SHAPE(2, 3)), nb_uniform(NULL, -1, 1, NB_SHAPE(3, 3)),
                       nb_uniform(NULL, -1, 1, NB_SHAPE(3, 3))};
    for (int cg = 0; cg < 2; cg++) {
        nb_functional_opts o = {.create_graph = cg};
        nb_tensor *plain[3], *hvp[3], *vhp[3];
        cr_assert_eq(nb_hvp(two_segments_of, NULL, 3, in, v, NULL, plain, &o), 0, "%s", nb_error());
        cr_assert_eq(nb_hvp(two_segments_of, "checkpoint", 3, in, v, NULL, hvp, &o), 0, "%s",
                     nb_error());
        cr_assert_eq(nb_vhp(two_segments_of, "checkpoint", 3, in, v, NULL, vhp, &o), 0, "%s",
                     nb_error());
        for (int i = 0; i < 3; i++)
            for (int64_t k = 0; k < nb_numel(plain[i]); k++) {
                float p = nb_data(plain[i])[k];
                cr_assert(fabsf(nb_data(hvp[i])[k] - p) < 1e-5f && fabsf(nb_data(vhp[i])[k] - p) < 1e-5f,
                          "create_graph %d, input %d element %lld: plain %.8g, hvp %.8g, vhp %.8g",
                          cg, i, (long long)k, (double)p, (double)nb_data(hvp[i])[k],
                          (double)nb_data(vhp[i])[k]);
            }
    }
}

static int fails_jvp(nb_tensor *const *in, nb_tensor **out, void *ctx) {
    out[0] = nb_checkpoint(fails_when_recomputed, ctx, 0, 1, in);
    return out[0] ? 0 : -1;
}

Test(checkpoint, jvp_of_a_recomputation_that_fails) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(3)), *v = nb_ones(NB_SHAPE(3)), *y, *t;
    int calls = 0;
    cr_assert_eq(nb_jvp(fails_jvp, &calls, 1, &x, &v, 1, &y, &t), -1);
    EXPECT_ERROR("nb_jvp", "checkpointed function returned NULL");
    cr_assert(!y && !t);
}

/* The whole Hessian through checkpoints, by forward over reverse and by
 * reverse over reverse: the plain function's, to rounding. */
Test(checkpoint, hessian_through_checkpoints) {
    nb_tensor *in[3] = {nb_test_leaf(-1, 1, NB_SHAPE(2, 3)), nb_test_leaf(-1, 1, NB_SHAPE(3, 3)),
                        nb_test_leaf(-1, 1, NB_SHAPE(3, 3))};
    nb_tensor *plain[9], *h[9];
    nb_functional_opts rev = {.strategy = NB_JACOBIAN_REVERSE}, fwd = {.strategy = NB_JACOBIAN_FORWARD};
    cr_assert_eq(nb_hessian(two_segments_of, NULL, 3, in, plain, &rev), 0, "%s", nb_error());
    for (int s = 0; s < 2; s++) {
        cr_assert_eq(nb_hessian(two_segments_of, "checkpoint", 3, in, h, s ? &rev : &fwd), 0, "%s",
                     nb_error());
        for (int b = 0; b < 9; b++)
            for (int64_t k = 0; k < nb_numel(plain[b]); k++)
                cr_assert(fabsf(nb_data(h[b])[k] - nb_data(plain[b])[k]) < 1e-5f,
                          "%s, block %d element %lld: %.8g, plain %.8g", s ? "reverse" : "forward",
                          b, (long long)k, (double)nb_data(h[b])[k], (double)nb_data(plain[b])[k]);
    }
}

/* y = x * h with h = 2x both inputs of the checkpoint: dy/dx = 4x. The
 * recomputation's gradient must stop at h, whose own path to x the
 * enclosing backward follows (with create_graph, where the inputs are used
 * as they are, it went on to x as well and counted that path twice). */
static nb_tensor *product(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    return nb_mul(in[0], in[1]);
}

Test(checkpoint, an_input_made_from_another_is_counted_once) {
    nb_tensor *x = nb_set_requires_grad(nb_from_array(NB_SHAPE(2), (float[]){3, -0.5f}), true);
    for (int mode = 0; mode < 4; mode++) { /* nb_grad; with create_graph; nb_backward; when ready */
        nb_tensor *h = nb_mul_scalar(x, 2.0f), *g = NULL;
        nb_tensor *y = nb_sum(nb_checkpoint(product, NULL, 0, 2, (nb_tensor *[]){x, h}), NB_ALL, false);
        int rc = mode < 2 ? nb_grad(1, &y, NULL, 1, &x, &g, &(nb_grad_opts){.create_graph = mode == 1})
                          : nb_backward_ex(y, NULL, &(nb_backward_opts){.grads_when_ready = mode == 3});
        cr_assert_eq(rc, 0, "%s", nb_error());
        EXPECT_VALUES(mode < 2 ? g : nb_grad_of(x), 0, 12, -2);
        nb_clear_grad(x);
    }
}
