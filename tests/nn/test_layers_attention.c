/* test_layers_attention.c — the attention layers of nn/layers_attention.c:
 * multi-head self-attention against the formula written as loops here,
 * the transformer block against its definition written with ops, their
 * parameter names and counts, the gradients (first and second order), the
 * summary table; then a tiny GPT that learns a short text in a few steps,
 * and bit-identical training at one and two threads.
 */
#include <string.h>

#include "test_util.h"

TestSuite(layers_attention, NB_TEST_HOOKS);

static nb_tensor *param(nb_module *m, const char *name) {
    int n;
    nb_tensor **p = nb_module_parameters(m, &n);
    for (int i = 0; i < n; i++)
        if (strcmp(nb_module_parameter_name(m, i), name) == 0) return p[i];
    cr_assert_fail("no parameter %s", name);
    return NULL;
}

/* Randomises every parameter (biases and LayerNorm weights start as 0 and 1,
 * which would leave parts of the formula untested). */
static void randomise(nb_module *m) {
    int n;
    nb_tensor **p = nb_module_parameters(m, &n);
    for (int i = 0; i < n; i++) nb_init_uniform(p[i], -0.5f, 0.5f, NULL);
}

Test(layers_attention, parameter_names_and_counts) {
    nb_module *a = nb_multi_head_attention(8, 2, true);
    cr_assert_not_null(a, "%s", nb_error());
    int n;
    nb_module_parameters(a, &n);
    cr_assert_eq(n, 4);
    EXPECT_SHAPE(param(a, "qkv.weight"), 8, 24);
    EXPECT_SHAPE(param(a, "qkv.bias"), 24);
    EXPECT_SHAPE(param(a, "proj.weight"), 8, 8);
    cr_assert_eq(nb_module_num_weights(a), 8 * 24 + 24 + 8 * 8 + 8);
    nb_module_free(a);

    nb_module *b = nb_transformer_block(8, 2, true);
    cr_assert_not_null(b, "%s", nb_error());
    const char *names[] = {"ln1.weight", "ln1.bias", "qkv.weight", "qkv.bias", "proj.weight", "proj.bias",
                           "ln2.weight", "ln2.bias", "fc.weight", "fc.bias", "out.weight", "out.bias"};
    nb_module_parameters(b, &n);
    cr_assert_eq(n, 12);
    for (int i = 0; i < 12; i++) cr_assert_str_eq(nb_module_parameter_name(b, i), names[i]);
    EXPECT_SHAPE(param(b, "fc.weight"), 8, 32);
    EXPECT_SHAPE(param(b, "out.weight"), 32, 8);
    /* 12 C² + 13 C, as GPT-2's block */
    cr_assert_eq(nb_module_num_weights(b), 12 * 64 + 13 * 8);
    nb_module_free(b);
}

Test(layers_attention, bad_sizes_and_inputs) {
    cr_assert_null(nb_multi_head_attention(10, 4, false));
    EXPECT_ERROR("nb_multi_head_attention", "10", "4");
    cr_assert_null(nb_transformer_block(0, 1, false));
    EXPECT_ERROR("nb_transformer_block", "0");
    nb_module *b = nb_transformer_block(8, 2, true);
    cr_assert_null(nb_module_forward(b, nb_zeros(NB_SHAPE(2, 3, 6))));
    EXPECT_ERROR("[2,3,6]");
    nb_module *a = nb_multi_head_attention(8, 2, true);
    cr_assert_null(nb_module_forward(a, nb_zeros(NB_SHAPE(3, 8))));
    EXPECT_ERROR("MultiHeadSelfAttention", "[B,T,8]", "[3,8]");
    nb_module_free(a);
    nb_module_free(b);
}

/* Multi-head self-attention as loops, in double: qkv = x·W + b, head h of
 * q, k, v the columns [h·D, (h+1)·D) of each third, causal softmax of
 * q·kᵀ/sqrt(D), heads side by side, then ·Wp + bp. */
static void naive_mhsa(const float *x, const float *w, const float *bias, const float *wp,
                       const float *bp, int nb, int t, int c, int heads, double *out) {
    int d = c / heads;
    double qkv[2 * 4 * 24], cat[2 * 4 * 8];
    for (int r = 0; r < nb * t; r++)
        for (int j = 0; j < 3 * c; j++) {
            double acc = bias[j];
            for (int i = 0; i < c; i++) acc += (double)x[r * c + i] * w[i * 3 * c + j];
            qkv[r * 3 * c + j] = acc;
        }
    for (int b = 0; b < nb; b++)
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < t; i++) {
                double z[4], mx = -INFINITY, sum = 0;
                for (int j = 0; j <= i; j++) {
                    double dot = 0;
                    for (int e = 0; e < d; e++)
                        dot += qkv[(b * t + i) * 3 * c + h * d + e] * qkv[(b * t + j) * 3 * c + c + h * d + e];
                    z[j] = dot / sqrt(d);
                    mx = z[j] > mx ? z[j] : mx;
                }
                for (int j = 0; j <= i; j++) sum += z[j] = exp(z[j] - mx);
                for (int e = 0; e < d; e++) {
                    double acc = 0;
                    for (int j = 0; j <= i; j++) acc += z[j] / sum * qkv[(b * t + j) * 3 * c + 2 * c + h * d + e];
                    cat[(b * t + i) * c + h * d + e] = acc;
                }
            }
    for (int r = 0; r < nb * t; r++)
        for (int j = 0; j < c; j++) {
            double acc = bp[j];
            for (int i = 0; i < c; i++) acc += cat[r * c + i] * wp[i * c + j];
            out[r * c + j] = acc;
        }
}

Test(layers_attention, self_attention_matches_the_formula) {
    nb_module *a = nb_multi_head_attention(8, 2, true);
    randomise(a);
    nb_tensor *x = nb_uniform(NULL, -1, 1, NB_SHAPE(2, 4, 8));
    nb_tensor *y = nb_module_forward(a, x);
    EXPECT_SHAPE(y, 2, 4, 8);
    double want[64];
    naive_mhsa(nb_data(x), nb_data(param(a, "qkv.weight")), nb_data(param(a, "qkv.bias")),
               nb_data(param(a, "proj.weight")), nb_data(param(a, "proj.bias")), 2, 4, 8, 2, want);
    for (int i = 0; i < 64; i++)
        cr_assert(fabs(nb_data(y)[i] - want[i]) < 1e-5, "element %d: %g, expected %g", i,
                  (double)nb_data(y)[i], want[i]);
    nb_module_free(a);
}

Test(layers_attention, block_matches_its_definition) {
    nb_module *b = nb_transformer_block(8, 2, true);
    randomise(b);
    nb_tensor *x = nb_uniform(NULL, -1, 1, NB_SHAPE(2, 4, 8));
    nb_tensor *y = nb_module_forward(b, x);
    /* x + attn(ln1(x)) with the attention as loops, then the MLP with ops */
    nb_tensor *h1 = nb_layer_norm(x, 1, param(b, "ln1.weight"), param(b, "ln1.bias"), 1e-5f);
    double att[64];
    naive_mhsa(nb_data(h1), nb_data(param(b, "qkv.weight")), nb_data(param(b, "qkv.bias")),
               nb_data(param(b, "proj.weight")), nb_data(param(b, "proj.bias")), 2, 4, 8, 2, att);
    float attf[64];
    for (int i = 0; i < 64; i++) attf[i] = (float)att[i];
    nb_tensor *x1 = nb_add(x, nb_from_array(NB_SHAPE(2, 4, 8), attf));
    nb_tensor *h2 = nb_layer_norm(x1, 1, param(b, "ln2.weight"), param(b, "ln2.bias"), 1e-5f);
    nb_tensor *m = nb_gelu(nb_add(nb_matmul(h2, param(b, "fc.weight")), param(b, "fc.bias")));
    nb_tensor *want = nb_add(x1, nb_add(nb_matmul(m, param(b, "out.weight")), param(b, "out.bias")));
    for (int i = 0; i < 64; i++)
        cr_assert(fabs(nb_data(y)[i] - nb_data(want)[i]) < 1e-5, "element %d: %g, expected %g", i,
                  (double)nb_data(y)[i], (double)nb_data(want)[i]);
    nb_module_free(b);
}

static nb_tensor *f_module(nb_tensor *const *in, void *ctx) {
    return nb_module_forward((nb_module *)ctx, in[0]);
}

Test(layers_attention, gradcheck_first_and_second_order) {
    nb_module *a = nb_multi_head_attention(4, 2, true);
    nb_module *b = nb_transformer_block(4, 2, false);
    randomise(a);
    randomise(b);
    /* the input and, perturbed in place by the check, the weights the
     * module reads: the gradients of both reach the right places */
    nb_tensor *in[4] = {nb_test_leaf(-1, 1, NB_SHAPE(2, 3, 4)), param(a, "qkv.weight"),
                        param(a, "proj.bias"), NULL};
    nb_test_gradcheck(f_module, a, 3, in, true);
    nb_tensor *bin[4] = {in[0], param(b, "ln1.weight"), param(b, "qkv.weight"), param(b, "fc.bias")};
    nb_test_gradcheck(f_module, b, 4, bin, true);
    nb_module_free(a);
    nb_module_free(b);
}

Test(layers_attention, summary_lists_the_layers) {
    nb_module *layers[2] = {nb_transformer_block(8, 2, true), nb_multi_head_attention(8, 2, false)};
    nb_model *model = nb_model_from_module(nb_sequential(2, layers));
    char buf[4096] = {0};
    FILE *f = fmemopen(buf, sizeof buf - 1, "w");
    nb_model_summary(model, f);
    fclose(f);
    cr_assert(strstr(buf, "TransformerBlock") && strstr(buf, "Total params: 1160"), "%s", buf);
    nb_model_free(model);
}

/* ---- a tiny GPT --------------------------------------------------------------------------
 * token and position embeddings, blocks, a final LayerNorm and a head:
 * the model of examples/char_gpt.c in small. */

typedef struct gpt {
    nb_module base;
    nb_module *tok, *pos, *blocks, *ln, *head;
} gpt;

static nb_tensor *gpt_forward(nb_module *m, nb_tensor *idx) {
    gpt *g = (gpt *)m;
    int64_t t = nb_dim(idx, 1);
    nb_tensor *x = nb_add(nb_module_forward(g->tok, idx), nb_module_forward(g->pos, nb_arange(0, (double)t, 1)));
    return nb_module_forward(g->head, nb_module_forward(g->ln, nb_module_forward(g->blocks, x)));
}
static const nb_module_type gpt_type = {"GPT", gpt_forward, NULL};

static nb_module *gpt_new(int64_t vocab, int64_t ctx, int64_t c, int heads, int layers) {
    gpt *g = (gpt *)nb_module_new(&gpt_type, sizeof *g);
    nb_module *blocks[4];
    for (int i = 0; i < layers; i++) blocks[i] = nb_transformer_block(c, heads, true);
    g->tok = nb_module_add_child(&g->base, "tok", nb_embedding_layer(vocab, c));
    g->pos = nb_module_add_child(&g->base, "pos", nb_embedding_layer(ctx, c));
    g->blocks = nb_module_add_child(&g->base, "blocks", nb_sequential(layers, blocks));
    g->ln = nb_module_add_child(&g->base, "ln", nb_layer_norm_layer(1, 1e-5f));
    g->head = nb_module_add_child(&g->base, "head", nb_linear(c, vocab));
    return nb_module_ok(&g->base);
}

static const char corpus[] = "to be or not to be, that is the question. to be or not to be. ";

/* Trains steps steps of batch b, context t from a fixed seed; returns the
 * losses and leaves the model's parameters for the caller to compare. */
static void train_gpt(nb_module *m, int steps, int b, int t, float *losses) {
    int n;
    nb_tensor **params = nb_module_parameters(m, &n);
    nb_adam_opts o = nb_adamw_defaults();
    o.lr = 1e-2f;
    nb_optimizer *opt = nb_adamw(n, params, &o);
    nb_generator gen;
    nb_generator_seed(&gen, 7);
    int64_t len = (int64_t)sizeof corpus - 1;
    float *xb = malloc(sizeof(float) * (size_t)(b * t)), *yb = malloc(sizeof(float) * (size_t)(b * t));
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < b; i++) {
            int64_t start = (int64_t)(nb_generator_uniform(&gen) * (double)(len - t - 1));
            for (int j = 0; j < t; j++) {
                xb[i * t + j] = (float)(corpus[start + j] - ' ');
                yb[i * t + j] = (float)(corpus[start + j + 1] - ' ');
            }
        }
        nb_scope_begin();
        nb_tensor *logits = nb_module_forward(m, nb_from_array(NB_SHAPE(b, t), xb));
        nb_tensor *loss = nb_cross_entropy_loss(logits, nb_from_array(NB_SHAPE(b, t), yb), NB_REDUCE_MEAN);
        cr_assert_not_null(loss, "%s", nb_error());
        losses[s] = nb_item(loss);
        nb_optimizer_zero_grad(opt);
        cr_assert_eq(nb_backward(loss), 0, "%s", nb_error());
        cr_assert_eq(nb_optimizer_step(opt), 0, "%s", nb_error());
        nb_scope_end();
    }
    free(xb);
    free(yb);
    nb_optimizer_free(opt);
}

Test(layers_attention, a_tiny_gpt_learns_a_short_text) {
    nb_manual_seed(1);
    nb_module *m = gpt_new(96, 16, 16, 2, 1);
    cr_assert_not_null(m, "%s", nb_error());
    float losses[30];
    train_gpt(m, 30, 8, 16, losses);
    /* from about log(96) = 4.56 to well under half of it */
    cr_assert_gt(losses[0], 4.0f);
    cr_assert_lt(losses[29], 2.0f, "loss %g after 30 steps", (double)losses[29]);
    nb_module_free(m);
}

Test(layers_attention, training_is_bitwise_identical_at_one_and_two_threads) {
    /* large enough that the GEMMs and the softmax rows are split over threads */
    nb_module *m[2];
    float losses[2][2];
    int saved = nb_get_num_threads();
    for (int r = 0; r < 2; r++) {
        nb_set_num_threads(r + 1);
        nb_manual_seed(3);
        m[r] = gpt_new(96, 32, 64, 4, 1);
        train_gpt(m[r], 2, 8, 32, losses[r]);
    }
    nb_set_num_threads(saved);
    cr_assert_eq(memcmp(losses[0], losses[1], sizeof losses[0]), 0, "losses differ");
    int n;
    nb_tensor **p0 = nb_module_parameters(m[0], &n), **p1 = nb_module_parameters(m[1], &n);
    for (int i = 0; i < n; i++)
        cr_assert_eq(memcmp(nb_data(p0[i]), nb_data(p1[i]), sizeof(float) * (size_t)nb_numel(p0[i])), 0,
                     "parameter %s differs", nb_module_parameter_name(m[0], i));
    nb_module_free(m[0]);
    nb_module_free(m[1]);
}

/* Every allocation failing in turn, building a block and running a forward
 * and backward through it: NULL and a message, never a crash or a leak. */
Test(layers_attention, allocation_failures_are_reported_and_leak_nothing) {
    nb_tensor *x = nb_uniform(NULL, -1, 1, NB_SHAPE(2, 3, 8));
    for (int64_t n = 1; n < 100000; n++) {
        nb_empty_cache();
        int64_t live = nb_live_tensors();
        nb_clear_error();
        nb_test_alloc a = {.fail_at = n};
        nb_set_alloc_hook(nb_test_alloc_hook, &a);
        nb_module *b = nb_transformer_block(8, 2, true);
        int rc = -1;
        if (b) {
            nb_scope_begin();
            nb_tensor *y = nb_module_forward(b, x);
            rc = y ? nb_backward(nb_sum(y, NB_ALL, false)) : -1;
            nb_scope_end();
        }
        nb_set_alloc_hook(NULL, NULL);
        nb_module_free(b);
        cr_assert_eq(nb_live_tensors(), live, "allocation %lld failing leaks tensors", (long long)n);
        if (!a.fired) {
            cr_assert_eq(rc, 0, "failed with no allocation failing: %s", nb_error() ? nb_error() : "");
            return;
        }
        if (rc != 0) cr_assert_not_null(nb_error(), "allocation %lld failing: no message", (long long)n);
    }
    cr_assert_fail("the walk does not end");
}
