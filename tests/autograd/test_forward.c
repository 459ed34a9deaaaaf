/* test_forward.c — forward mode (nb_jvp): every op's jvp rule checked two
 * ways, the machinery's errors and ownership, and forward over reverse.
 *
 * One driver runs a table of ops. For each it draws inputs x and tangents v
 * and computes J·v with nb_jvp, then checks it against
 *   - central finite differences (f(x + h v) - f(x - h v)) / 2h, and
 *   - the reverse-mode Jacobian: row k of J is the gradient of output k
 *     (nb_grad with a one-hot grad_output), and (J·v)_k = sum_i <row_k, v>.
 * Each op runs twice: with inputs that require grad (nodes made as usual,
 * carrying tangents too) and with inputs that do not (nodes made for the
 * tangent alone, grad mode or not). Broadcasting ops get broadcast shapes.
 * With inputs that require grad, x -> J(x)·v is gradchecked in turn where it
 * depends on x: a rule must be written with differentiable ops (reverse
 * over forward), as a backward must.
 * The Hessian-vector products of forward over reverse are checked against
 * Hessians written by hand.
 */
#include "test_util.h"

#include <string.h>

TestSuite(forward, NB_TEST_HOOKS);

/* ---- the ops, as functions of their inputs ------------------------------------ */

/* F1, F2, F3: a function of its first one, two or three inputs, named a,
 * b and c (only those given are read). */
#define F1(name, expr)                                                  \
    static nb_tensor *name(nb_tensor *const *in, void *ctx) {           \
        (void)ctx;                                                      \
        nb_tensor *a = in[0];                                           \
        return (expr);                                                  \
    }
#define F2(name, expr)                                                  \
    static nb_tensor *name(nb_tensor *const *in, void *ctx) {           \
        (void)ctx;                                                      \
        nb_tensor *a = in[0], *b = in[1];                               \
        return (expr);                                                  \
    }
#define F3(name, expr)                                                  \
    static nb_tensor *name(nb_tensor *const *in, void *ctx) {           \
        (void)ctx;                                                      \
        nb_tensor *a = in[0], *b = in[1], *c = in[2];                   \
        return (expr);                                                  \
    }

/* elementwise */
F2(f_add, nb_add(a, b))
F2(f_sub, nb_sub(a, b))
F2(f_mul, nb_mul(a, b))
F2(f_div, nb_div(a, b))
F2(f_pow, nb_pow(a, b))
F2(f_maximum, nb_maximum(a, b))
F2(f_minimum, nb_minimum(a, b))
F1(f_add_scalar, nb_add_scalar(a, 1.5f))
F1(f_sub_scalar, nb_sub_scalar(a, 1.5f))
F1(f_rsub_scalar, nb_rsub_scalar(a, 1.5f))
F1(f_mul_scalar, nb_mul_scalar(a, -2.5f))
F1(f_div_scalar, nb_div_scalar(a, 4.0f))
F1(f_rdiv_scalar, nb_rdiv_scalar(a, 3.0f))
F1(f_pow_scalar, nb_pow_scalar(a, 2.5f))
F1(f_square_scalar, nb_pow_scalar(a, 2.0f))
F1(f_rpow_scalar, nb_rpow_scalar(a, 2.0f))
F1(f_maximum_scalar, nb_maximum_scalar(a, 0.1f))
F1(f_minimum_scalar, nb_minimum_scalar(a, 0.1f))
F1(f_expand, nb_expand(a, NB_SHAPE(2, 3, 4)))
F1(f_sum_to, nb_sum_to(a, NB_SHAPE(3, 1)))
/* unary and activations */
F1(f_neg, nb_neg(a))
F1(f_exp, nb_exp(a))
F1(f_log, nb_log(a))
F1(f_sqrt, nb_sqrt(a))
F1(f_abs, nb_abs(a))
F1(f_sign, nb_sign(a))
F1(f_sin, nb_sin(a))
F1(f_cos, nb_cos(a))
F1(f_square, nb_square(a))
F1(f_erf, nb_erf(a))
F1(f_tanh, nb_tanh(a))
F1(f_sigmoid, nb_sigmoid(a))
F1(f_relu, nb_relu(a))
F1(f_leaky_relu, nb_leaky_relu(a, 0.1f))
F1(f_elu, nb_elu(a, 0.7f))
F1(f_gelu, nb_gelu(a))
F1(f_softplus, nb_softplus(a))
F1(f_clamp, nb_clamp(a, -0.5f, 0.5f))
/* reductions */
F1(f_sum, nb_sum(a, NB_AXES(0, 2), false))
F1(f_sum_all, nb_sum(a, NB_ALL, false))
F1(f_mean, nb_mean(a, NB_AXES(1), true))
F1(f_max, nb_max(a, NB_AXES(1), false))
F1(f_min, nb_min(a, NB_AXES(0, 1), true))
F1(f_var, nb_var(a, NB_AXES(1), 1, false))
F1(f_logsumexp, nb_logsumexp(a, NB_AXES(-1), false))
F1(f_softmax, nb_softmax(a, 1))
F1(f_log_softmax, nb_log_softmax(a, -1))
/* linear algebra and shape */
F2(f_matmul, nb_matmul(a, b))
F2(f_matmul_vec, nb_matmul(a, b))
F1(f_transpose, nb_transpose(a, 0, 2))
F1(f_permute, nb_permute(a, (const int[]){2, 0, 1}))
F1(f_reshape, nb_reshape(a, NB_SHAPE(4, -1)))
F1(f_flatten, nb_flatten(a, 1, 2))
F1(f_squeeze, nb_squeeze(a, 1))
F1(f_unsqueeze, nb_unsqueeze(a, -1))
F1(f_clone, nb_clone(a))
F1(f_slice, nb_slice(a, 1, 0, 4, 2))
F3(f_concat, nb_concat(3, (nb_tensor *const[]){a, b, c}, 1))
F2(f_stack, nb_stack(2, (nb_tensor *const[]){a, b}, 0))
/* compare and selection */
F2(f_where, nb_where(nb_gt_scalar(a, 0.0f), a, b))
F2(f_where_cond, nb_where(nb_from_array(NB_SHAPE(3), (float[]){1, 0, 1}), a, b))
F1(f_eq, nb_add(nb_eq(a, a), a))
/* losses: labels and indices are constants made inside */
#define LABELS nb_from_array(NB_SHAPE(3), (float[]){2, 0, 1})
F2(f_mse, nb_mse_loss(a, b, NB_REDUCE_MEAN))
F2(f_mse_sum, nb_mse_loss(a, b, NB_REDUCE_SUM))
F2(f_l1, nb_l1_loss(a, b, NB_REDUCE_SUM))
F2(f_huber, nb_huber_loss(a, b, 0.5f, NB_REDUCE_NONE))
F2(f_bce, nb_bce_loss(a, b, NB_REDUCE_MEAN))
F2(f_bce_logits, nb_bce_with_logits_loss(a, b, NB_REDUCE_SUM))
F1(f_cross_entropy, nb_cross_entropy_loss(a, LABELS, NB_REDUCE_MEAN))
F1(f_cross_entropy_sum, nb_cross_entropy_loss(a, LABELS, NB_REDUCE_SUM))
F1(f_cross_entropy_seq, nb_cross_entropy_loss(a, nb_from_array(NB_SHAPE(2, 3), (float[]){2, 0, 1, 3, 3, 0}),
                                              NB_REDUCE_MEAN))
F1(f_nll, nb_nll_loss(a, LABELS, NB_REDUCE_NONE))
/* index */
F1(f_index_select, nb_index_select(a, 1, nb_from_array(NB_SHAPE(4), (float[]){2, 0, 2, 1})))
F2(f_index_add, nb_index_add(a, 0, nb_from_array(NB_SHAPE(3), (float[]){1, 0, 1}), b))
F1(f_gather, nb_gather(a, 1, nb_from_array(NB_SHAPE(2, 2), (float[]){2, 0, 1, 1})))
F2(f_scatter_add, nb_scatter_add(a, 1, nb_from_array(NB_SHAPE(2, 2), (float[]){2, 0, 1, 1}), b))
/* normalisation and embedding */
F3(f_layer_norm, nb_layer_norm(a, 1, b, c, 1e-5f))
F3(f_batch_norm, nb_batch_norm(a, NULL, NULL, b, c, true, 0.1f, 1e-5f))
F1(f_embedding, nb_embedding(a, nb_from_array(NB_SHAPE(2, 2), (float[]){3, 0, 1, 3})))
/* convolution and pooling */
F3(f_conv2d, nb_conv2d(a, b, c, &(nb_conv2d_opts){.stride = {2, 1}, .padding = {1, 1}}))
F2(f_conv2d_groups, nb_conv2d(a, b, NULL, &(nb_conv2d_opts){.groups = 2, .dilation = {1, 2}}))
F3(f_conv_transpose2d,
  nb_conv_transpose2d(a, b, c, &(nb_conv2d_opts){.stride = {2, 2}, .output_padding = {1, 0}}))
F2(f_weight_grad, nb_conv2d_weight_grad(a, b, 2, 2, &(nb_conv2d_opts){.padding = {1, 0}}))
F1(f_max_pool2d, nb_max_pool2d(a, 2, 2, &(nb_pool2d_opts){.stride = {1, 2}, .padding = {1, 0}}))
F1(f_max_pool2d_dilated, nb_max_pool2d(a, 2, 2, &(nb_pool2d_opts){.dilation = {2, 1}, .ceil_mode = true,
                                                                   .stride = {2, 2}}))
F1(f_avg_pool2d, nb_avg_pool2d(a, 2, 3, NULL))
F1(f_avg_pool2d_ceil, nb_avg_pool2d(a, 2, 2, &(nb_pool2d_opts){.ceil_mode = true}))
F1(f_adaptive_avg_pool2d, nb_adaptive_avg_pool2d(a, 2, 1))
/* a composition: a small network */
F3(f_mlp, nb_log_softmax(nb_matmul(nb_tanh(nb_add(nb_matmul(a, b), c)), nb_transpose(b, 0, 1)), 1))

typedef struct shape {
    int ndim;
    const int64_t *d;
} shape;
#define S(...) {NB_SHAPE(__VA_ARGS__)}

typedef struct fcase {
    const char *name;
    nb_gradcheck_fn f;
    int n;
    shape in[3];
    float lo, hi; /* inputs drawn uniformly from [lo, hi) */
    void *ctx;    /* passed to f */
} fcase;

static const fcase elementwise_cases[] = {
    {"add", f_add, 2, {S(2, 3), S(3)}, -1, 1},
    {"sub", f_sub, 2, {S(2, 1, 3), S(4, 1)}, -1, 1},
    {"mul", f_mul, 2, {S(2, 3), S(2, 1)}, -1, 1},
    {"div", f_div, 2, {S(3), S(2, 3)}, 0.5f, 2},
    {"pow", f_pow, 2, {S(2, 3), S(3)}, 0.5f, 2},
    {"maximum", f_maximum, 2, {S(2, 3), S(3)}, -1, 1},
    {"minimum", f_minimum, 2, {S(2, 3), S(2, 1)}, -1, 1},
    {"add_scalar", f_add_scalar, 1, {S(2, 3)}, -1, 1},
    {"sub_scalar", f_sub_scalar, 1, {S(2, 3)}, -1, 1},
    {"rsub_scalar", f_rsub_scalar, 1, {S(2, 3)}, -1, 1},
    {"mul_scalar", f_mul_scalar, 1, {S(2, 3)}, -1, 1},
    {"div_scalar", f_div_scalar, 1, {S(2, 3)}, -1, 1},
    {"rdiv_scalar", f_rdiv_scalar, 1, {S(2, 3)}, 0.5f, 2},
    {"pow_scalar", f_pow_scalar, 1, {S(2, 3)}, 0.5f, 2},
    {"pow_scalar 2", f_square_scalar, 1, {S(2, 3)}, -1, 1},
    {"rpow_scalar", f_rpow_scalar, 1, {S(2, 3)}, -1, 1},
    {"maximum_scalar", f_maximum_scalar, 1, {S(2, 3)}, -1, 1},
    {"minimum_scalar", f_minimum_scalar, 1, {S(2, 3)}, -1, 1},
    {"expand", f_expand, 1, {S(3, 1)}, -1, 1},
    {"sum_to", f_sum_to, 1, {S(2, 3, 4)}, -1, 1},
};

static const fcase unary_cases[] = {
    {"neg", f_neg, 1, {S(2, 3)}, -1, 1},
    {"exp", f_exp, 1, {S(2, 3)}, -1, 1},
    {"log", f_log, 1, {S(2, 3)}, 0.5f, 2},
    {"sqrt", f_sqrt, 1, {S(2, 3)}, 0.5f, 2},
    {"abs", f_abs, 1, {S(2, 3)}, -1, 1},
    {"sign", f_sign, 1, {S(2, 3)}, -1, 1},
    {"sin", f_sin, 1, {S(2, 3)}, -2, 2},
    {"cos", f_cos, 1, {S(2, 3)}, -2, 2},
    {"square", f_square, 1, {S(2, 3)}, -1, 1},
    {"erf", f_erf, 1, {S(2, 3)}, -1, 1},
    {"tanh", f_tanh, 1, {S(2, 3)}, -2, 2},
    {"sigmoid", f_sigmoid, 1, {S(2, 3)}, -2, 2},
    {"relu", f_relu, 1, {S(2, 3)}, -1, 1},
    {"leaky_relu", f_leaky_relu, 1, {S(2, 3)}, -1, 1},
    {"elu", f_elu, 1, {S(2, 3)}, -1, 1},
    {"gelu", f_gelu, 1, {S(2, 3)}, -2, 2},
    {"softplus", f_softplus, 1, {S(2, 3)}, -2, 2},
    {"clamp", f_clamp, 1, {S(2, 3)}, -1, 1},
};

static const fcase reduce_cases[] = {
    {"sum", f_sum, 1, {S(2, 3, 4)}, -1, 1},
    {"sum of all", f_sum_all, 1, {S(2, 3)}, -1, 1},
    {"mean", f_mean, 1, {S(2, 3, 2)}, -1, 1},
    {"max", f_max, 1, {S(2, 4, 2)}, -1, 1},
    {"min", f_min, 1, {S(2, 3, 2)}, -1, 1},
    {"var", f_var, 1, {S(2, 4)}, -1, 1},
    {"logsumexp", f_logsumexp, 1, {S(2, 4)}, -2, 2},
    {"softmax", f_softmax, 1, {S(2, 4, 2)}, -2, 2},
    {"log_softmax", f_log_softmax, 1, {S(3, 4)}, -2, 2},
};

static const fcase linalg_shape_cases[] = {
    {"matmul", f_matmul, 2, {S(2, 3), S(3, 4)}, -1, 1},
    {"matmul batched", f_matmul, 2, {S(2, 2, 3), S(3, 2)}, -1, 1},
    {"matmul both batched", f_matmul, 2, {S(2, 1, 2, 3), S(3, 3, 2)}, -1, 1},
    {"matmul of vectors", f_matmul_vec, 2, {S(3), S(3, 2)}, -1, 1},
    {"transpose", f_transpose, 1, {S(2, 3, 4)}, -1, 1},
    {"permute", f_permute, 1, {S(2, 3, 2)}, -1, 1},
    {"reshape", f_reshape, 1, {S(2, 3, 2)}, -1, 1},
    {"flatten", f_flatten, 1, {S(2, 3, 2)}, -1, 1},
    {"squeeze", f_squeeze, 1, {S(3, 1, 2)}, -1, 1},
    {"unsqueeze", f_unsqueeze, 1, {S(3, 2)}, -1, 1},
    {"clone", f_clone, 1, {S(3, 2)}, -1, 1},
    {"slice", f_slice, 1, {S(2, 5)}, -1, 1},
    {"concat", f_concat, 3, {S(2, 1), S(2, 3), S(2, 2)}, -1, 1},
    {"stack", f_stack, 2, {S(2, 3), S(2, 3)}, -1, 1},
    {"a small network", f_mlp, 3, {S(4, 3), S(3, 5), S(5)}, -1, 1},
};

static const fcase compare_loss_cases[] = {
    {"where", f_where, 2, {S(2, 3), S(3)}, -1, 1},
    {"where with a constant condition", f_where_cond, 2, {S(3), S(2, 1)}, -1, 1},
    {"eq (no tangent) plus a", f_eq, 1, {S(2, 3)}, -1, 1},
    {"mse_loss", f_mse, 2, {S(2, 3), S(2, 3)}, -1, 1},
    {"mse_loss summed", f_mse_sum, 2, {S(2, 3), S(2, 3)}, -1, 1},
    {"l1_loss", f_l1, 2, {S(2, 3), S(2, 3)}, -1, 1},
    {"huber_loss", f_huber, 2, {S(2, 3), S(2, 3)}, -1, 1},
    {"bce_loss", f_bce, 2, {S(2, 3), S(2, 3)}, 0.1f, 0.9f},
    {"bce_with_logits_loss", f_bce_logits, 2, {S(2, 3), S(2, 3)}, -1, 1},
    {"cross_entropy_loss", f_cross_entropy, 1, {S(3, 4)}, -2, 2},
    {"cross_entropy_loss summed", f_cross_entropy_sum, 1, {S(3, 4)}, -2, 2},
    {"cross_entropy_loss over a sequence", f_cross_entropy_seq, 1, {S(2, 3, 4)}, -2, 2},
    {"nll_loss", f_nll, 1, {S(3, 4)}, -2, 2},
};

/* the ops a transformer adds: x·W + b in one op, attention's fused
 * softmax (causal, or with an additive mask), attention whole, and gelu's
 * gradient op (gelu_vjp, reached as the gradient of sum(sin(gelu(x))), so
 * that both its inputs, x and the gradient cos(gelu(x)), have tangents) */
F3(f_linear_map, nb_linear_map(a, b, c))
F2(f_linear_map_nobias, nb_linear_map(a, b, NULL))
F1(f_masked_softmax_causal, nb_masked_softmax(a, NULL, true, 0.5f))
F2(f_masked_softmax_mask, nb_masked_softmax(a, b, false, 1.5f))
F3(f_attention, nb_scaled_dot_product_attention(a, b, c, NULL, true, 0))
static nb_tensor *f_gelu_prime(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    nb_tensor *g = NULL, *x = in[0];
    /* without grad, x gets it through a copy that keeps the tangent, and
     * the derivative is made without a graph of its own (forward over
     * reverse); with grad, with one (so that J·v can be gradchecked) */
    bool outer = nb_requires_grad(x);
    if (!outer) x = nb_set_requires_grad(nb_mul_scalar(x, 1.0f), true);
    nb_tensor *y = nb_sum(nb_sin(nb_gelu(x)), NB_AXES(), false);
    return nb_grad(1, &y, NULL, 1, &x, &g, &(nb_grad_opts){.create_graph = outer}) == 0 ? g : NULL;
}

/* LayerNorm's backward op (normalize_grad), reached as the gradient of
 * sum(sin(layer_norm(x))) (sum(layer_norm(x)) alone has gradient 0) */
static nb_tensor *f_layer_norm_prime(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    nb_tensor *g = NULL, *x = in[0];
    bool outer = nb_requires_grad(x);
    if (!outer) x = nb_set_requires_grad(nb_mul_scalar(x, 1.0f), true);
    nb_tensor *y = nb_sum(nb_sin(nb_layer_norm(x, 1, NULL, NULL, 1e-5f)), NB_AXES(), false);
    return nb_grad(1, &y, NULL, 1, &x, &g, &(nb_grad_opts){.create_graph = outer}) == 0 ? g : NULL;
}

/* masked_softmax's backward op (softmax_grad), reached as the gradient of
 * sum(sin(masked_softmax(x))) (sum(masked_softmax(x)) alone has gradient 0);
 * its tangents in y and in g are both non-zero */
static nb_tensor *f_softmax_prime(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    nb_tensor *g = NULL, *x = in[0];
    bool outer = nb_requires_grad(x);
    if (!outer) x = nb_set_requires_grad(nb_mul_scalar(x, 1.0f), true);
    nb_tensor *y = nb_sum(nb_sin(nb_masked_softmax(x, NULL, true, 0.5f)), NB_AXES(), false);
    return nb_grad(1, &y, NULL, 1, &x, &g, &(nb_grad_opts){.create_graph = outer}) == 0 ? g : NULL;
}

/* mse's gradient op (mse_grad), reached as the gradient of
 * mse(sin(x), x·x), so that both its prediction and its target have
 * tangents (and the composition around it is linear in neither) */
static nb_tensor *f_mse_prime(nb_tensor *const *in, void *ctx) {
    (void)ctx;
    nb_tensor *g = NULL, *x = in[0];
    bool outer = nb_requires_grad(x);
    if (!outer) x = nb_set_requires_grad(nb_mul_scalar(x, 1.0f), true);
    nb_tensor *y = nb_mse_loss(nb_sin(x), nb_mul(x, x), NB_REDUCE_MEAN);
    return nb_grad(1, &y, NULL, 1, &x, &g, &(nb_grad_opts){.create_graph = outer}) == 0 ? g : NULL;
}

/* cross-entropy's gradient op (cross_entropy_grad), reached as the gradient
 * of cross_entropy(sin(x) + x) with the grad_output mean(x·x), so that both
 * its logits and its incoming gradient have tangents; ctx is the reduction */
static nb_tensor *f_cross_entropy_prime(nb_tensor *const *in, void *ctx) {
    nb_tensor *g = NULL, *x = in[0];
    bool outer = nb_requires_grad(x);
    if (!outer) x = nb_set_requires_grad(nb_mul_scalar(x, 1.0f), true);
    nb_tensor *y = nb_cross_entropy_loss(nb_add(nb_sin(x), x), LABELS, *(nb_reduction *)ctx);
    nb_tensor *w = nb_mean(nb_mul(x, x), NB_ALL, false);
    return nb_grad(1, &y, &w, 1, &x, &g, &(nb_grad_opts){.create_graph = outer}) == 0 ? g : NULL;
}
static nb_reduction ce_mean = NB_REDUCE_MEAN, ce_sum = NB_REDUCE_SUM;

static const fcase transformer_cases[] = {
    {"softmax_grad", f_softmax_prime, 1, {S(2, 3, 3)}, -2, 2},
    {"normalize_grad", f_layer_norm_prime, 1, {S(2, 5)}, -2, 2},
    {"mse_grad", f_mse_prime, 1, {S(2, 3)}, -2, 2},
    {"cross_entropy_grad", f_cross_entropy_prime, 1, {S(3, 4)}, -2, 2, &ce_mean},
    {"cross_entropy_grad summed", f_cross_entropy_prime, 1, {S(3, 4)}, -2, 2, &ce_sum},
    {"linear_map", f_linear_map, 3, {S(2, 3, 4), S(4, 2), S(2)}, -1, 1},
    {"linear_map without bias", f_linear_map_nobias, 2, {S(3, 4), S(4, 2)}, -1, 1},
    {"masked_softmax causal", f_masked_softmax_causal, 1, {S(2, 3, 3)}, -2, 2},
    {"masked_softmax with a mask", f_masked_softmax_mask, 2, {S(2, 3, 4), S(3, 4)}, -2, 2},
    {"scaled_dot_product_attention", f_attention, 3, {S(2, 3, 4), S(2, 3, 4), S(2, 3, 2)}, -1, 1},
    {"gelu_vjp", f_gelu_prime, 1, {S(2, 3)}, -2, 2},
};

static const fcase index_norm_cases[] = {
    {"index_select", f_index_select, 1, {S(2, 3)}, -1, 1},
    {"index_add", f_index_add, 2, {S(2, 3), S(3, 3)}, -1, 1},
    {"gather", f_gather, 1, {S(2, 3)}, -1, 1},
    {"scatter_add", f_scatter_add, 2, {S(2, 3), S(2, 2)}, -1, 1},
    {"layer_norm", f_layer_norm, 3, {S(2, 4), S(4), S(4)}, -1, 1},
    {"batch_norm", f_batch_norm, 3, {S(4, 2, 3), S(2), S(2)}, -1, 1},
    {"embedding", f_embedding, 1, {S(4, 3)}, -1, 1},
};

static const fcase conv_cases[] = {
    {"conv2d", f_conv2d, 3, {S(2, 2, 4, 3), S(3, 2, 3, 2), S(3)}, -1, 1},
    {"conv2d groups, dilation", f_conv2d_groups, 2, {S(1, 4, 3, 5), S(2, 2, 2, 2)}, -1, 1},
    {"conv_transpose2d", f_conv_transpose2d, 3, {S(1, 2, 2, 3), S(2, 3, 2, 2), S(3)}, -1, 1},
    {"conv2d_weight_grad", f_weight_grad, 2, {S(2, 2, 3, 3), S(2, 3, 4, 2)}, -1, 1},
    {"max_pool2d", f_max_pool2d, 1, {S(1, 2, 4, 4)}, -1, 1},
    {"max_pool2d dilated, ceil_mode", f_max_pool2d_dilated, 1, {S(1, 2, 5, 5)}, -1, 1},
    {"avg_pool2d", f_avg_pool2d, 1, {S(1, 2, 4, 6)}, -1, 1},
    {"avg_pool2d ceil_mode", f_avg_pool2d_ceil, 1, {S(1, 1, 5, 3)}, -1, 1},
    {"adaptive_avg_pool2d", f_adaptive_avg_pool2d, 1, {S(2, 1, 4, 3)}, -1, 1},
};

/* ---- the driver ----------------------------------------------------------------- */

static int call_case(nb_tensor *const *in, nb_tensor **out, void *ctx) {
    const fcase *c = ctx;
    out[0] = c->f(in, c->ctx);
    return out[0] ? 0 : -1;
}

/* x + s v, a new tensor without a graph */
static nb_tensor *moved(nb_tensor *x, nb_tensor *v, float s) {
    bool was = nb_set_grad_enabled(false);
    nb_tensor *r = nb_add(nb_detach(x), nb_mul_scalar(v, s));
    nb_set_grad_enabled(was);
    return r;
}

static double dot(const nb_tensor *a, const nb_tensor *b) {
    double s = 0;
    for (int64_t i = 0; i < nb_numel(a); i++) s += (double)nb_data(a)[i] * nb_data(b)[i];
    return s;
}

/* J·v by rows of the reverse-mode Jacobian, into jv (the shape of f's output). */
static void jv_by_rows(const fcase *c, nb_tensor *const *x, nb_tensor *const *v, double *jv) {
    nb_tensor *xr[3], *g[3];
    for (int i = 0; i < c->n; i++) xr[i] = nb_set_requires_grad(moved(x[i], v[i], 0.0f), true);
    nb_tensor *y = c->f(xr, c->ctx);
    cr_assert_not_null(y, "%s: %s", c->name, nb_error());
    nb_tensor *e = nb_zeros(nb_ndim(y), nb_shape(y));
    for (int64_t k = 0; k < nb_numel(y); k++) {
        nb_data_mut(e)[k] = 1.0f;
        nb_grad_opts o = {.retain_graph = true, .allow_unused = true, .materialize_grads = true};
        cr_assert_eq(nb_grad(1, &y, &e, c->n, xr, g, &o), 0, "%s: %s", c->name, nb_error());
        jv[k] = 0;
        for (int i = 0; i < c->n; i++) jv[k] += dot(g[i], v[i]);
        nb_data_mut(e)[k] = 0.0f;
    }
}

/* x -> J(x)·v, for differentiating a rule in turn (reverse over forward) */
typedef struct tangent_fn {
    const fcase *c;
    nb_tensor *const *v;
} tangent_fn;

static nb_tensor *tangent_of_case(nb_tensor *const *in, void *ctx) {
    const tangent_fn *t = ctx;
    nb_tensor *y, *jv;
    return nb_jvp(call_case, (void *)t->c, t->c->n, in, t->v, 1, &y, &jv) == 0 ? jv : NULL;
}

#define FD_STEP 1e-3f

/* True when every output element is smooth along v at x: its one-sided
 * slopes agree. Near a kink (relu at 0, |a - b| with a close to b) central
 * differences average two slopes, so such a draw is not a fair test. */
static bool smooth_along(const fcase *c, nb_tensor *const *x, nb_tensor *const *v,
                         nb_tensor **yp, nb_tensor **ym) {
    nb_tensor *xp[3], *xm[3];
    for (int i = 0; i < c->n; i++) {
        xp[i] = moved(x[i], v[i], FD_STEP);
        xm[i] = moved(x[i], v[i], -FD_STEP);
    }
    nb_tensor *y0 = c->f(x, c->ctx);
    *yp = c->f(xp, c->ctx);
    *ym = c->f(xm, c->ctx);
    for (int64_t k = 0; k < nb_numel(y0); k++) {
        double up = ((double)nb_data(*yp)[k] - nb_data(y0)[k]) / FD_STEP;
        double down = ((double)nb_data(y0)[k] - nb_data(*ym)[k]) / FD_STEP;
        if (fabs(up - down) > 0.1 * (1 + fabs(up))) return false;
    }
    return true;
}

static void check_case(const fcase *c, bool requires_grad) {
    const char *mode = requires_grad ? "inputs requiring grad" : "inputs not requiring grad";
    nb_scope_begin();
    nb_tensor *x[3], *v[3], *yp = NULL, *ym = NULL;
    for (int attempt = 0; attempt < 5; attempt++) { /* a draw near a kink is drawn again */
        for (int i = 0; i < c->n; i++) {
            x[i] = nb_uniform(NULL, c->lo, c->hi, c->in[i].ndim, c->in[i].d);
            v[i] = nb_uniform(NULL, -1, 1, c->in[i].ndim, c->in[i].d);
            nb_set_requires_grad(x[i], requires_grad);
        }
        if (smooth_along(c, x, v, &yp, &ym)) break;
        cr_assert_neq(attempt, 4, "%s: five draws in a row sit at a kink", c->name);
    }
    nb_tensor *y = NULL, *jv = NULL;
    int rc = nb_jvp(call_case, (void *)c, c->n, x, v, 1, &y, &jv);
    cr_assert_eq(rc, 0, "%s (%s): %s", c->name, mode, nb_error() ? nb_error() : "");
    cr_assert(nb_same_shape(y, jv), "%s: tangent shape differs from the output's", c->name);
    /* (a layer's parameters require grad whatever its input does) */
    cr_assert(requires_grad ? nb_requires_grad(y) : c->ctx || !nb_requires_grad(y),
              "%s (%s): requires_grad of the output", c->name, mode);

    /* the primal is f(x), bit for bit */
    nb_tensor *y0 = c->f(x, c->ctx);
    cr_assert(nb_same_shape(y, y0) &&
              memcmp(nb_data(y), nb_data(y0), sizeof(float) * (size_t)nb_numel(y)) == 0,
              "%s: the output of nb_jvp differs from f(x)", c->name);

    double *rows = calloc((size_t)nb_numel(y) + 1, sizeof *rows);
    jv_by_rows(c, x, v, rows);
    for (int64_t k = 0; k < nb_numel(y); k++) {
        double got = nb_data(jv)[k];
        double fd = ((double)nb_data(yp)[k] - nb_data(ym)[k]) / (2.0 * FD_STEP);
        double row = rows[k];
        if (fabs(got - fd) > 2e-3 + 1e-2 * fabs(fd) || fabs(got - row) > 1e-5 + 1e-4 * fabs(row))
            free(rows);
        cr_assert(fabs(got - fd) <= 2e-3 + 1e-2 * fabs(fd),
                  "%s (%s): element %lld of J·v is %.6g, finite differences give %.6g", c->name,
                  mode, (long long)k, got, fd);
        cr_assert(fabs(got - row) <= 1e-5 + 1e-4 * fabs(row),
                  "%s (%s): element %lld of J·v is %.7g, the reverse-mode Jacobian gives %.7g",
                  c->name, mode, (long long)k, got, row);
    }
    free(rows);

    /* each rule is written with ops, so J·v is differentiable in x too;
     * its derivative is checked where it depends on x (not for linear
     * ops, nor for piecewise-linear ones like relu, whose masks are
     * constants) */
    if (requires_grad && nb_requires_grad(jv)) {
        tangent_fn tf = {c, v};
        nb_gradcheck_opts quiet = {.quiet = true};
        nb_gradcheck_result r;
        cr_assert(nb_gradcheck(tangent_of_case, &tf, c->n, x, &quiet, &r) || r.at_kink,
                  "%s: the gradient of J·v: %s", c->name, r.message);
    }
    nb_scope_end();
}

static void check_cases(const fcase *cases, size_t n) {
    for (size_t i = 0; i < n; i++) {
        check_case(&cases[i], true);
        check_case(&cases[i], false);
    }
}

#define CHECK_TABLE(t) check_cases(t, sizeof t / sizeof *t)

Test(forward, elementwise) { CHECK_TABLE(elementwise_cases); }
Test(forward, unary_and_activations) { CHECK_TABLE(unary_cases); }
Test(forward, reductions) { CHECK_TABLE(reduce_cases); }
Test(forward, linalg_and_shape) { CHECK_TABLE(linalg_shape_cases); }
Test(forward, compare_and_losses) { CHECK_TABLE(compare_loss_cases); }
Test(forward, index_norm_embedding) { CHECK_TABLE(index_norm_cases); }
Test(forward, conv_and_pooling) { CHECK_TABLE(conv_cases); }
Test(forward, transformer_ops) { CHECK_TABLE(transformer_cases); }

/* ---- layers: built from ops, they need no rule of their own ---------------------------
 * The tangent is along the layer's input; the parameters are constants here
 * (pass them as nb_jvp inputs through a function of one's own for theirs). */

static nb_tensor *f_layer(nb_tensor *const *in, void *ctx) { return nb_module_forward(ctx, in[0]); }

Test(forward, layers) {
    nb_module *seq = nb_sequential(4, (nb_module *[]){nb_dense(5, "tanh", 3), nb_dropout(0.5f),
                                                      nb_dense(4, "softmax", 0), nb_linear(4, 2)});
    nb_module_train(seq, false); /* dropout: the identity, as FD needs a function */
    nb_module *conv = nb_sequential(5, (nb_module *[]){
        nb_conv2d_layer(3, 3, 3, &(nb_conv2d_layer_opts){.activation = "relu", .padding = {1, 1}}),
        nb_batch_norm_layer(0.1f, 1e-5f), nb_max_pool2d_layer(2, 2, NULL),
        nb_global_avg_pool2d_layer(), nb_dense(2, "gelu", 0)});
    nb_module *acts = nb_sequential(6, (nb_module *[]){
        nb_flatten_layer(), nb_layer_norm_layer(1, 1e-5f), nb_sigmoid_layer(),
        nb_leaky_relu_layer(0.3f), nb_activation("elu"), nb_activation("softplus")});
    nb_module *lstm = nb_lstm_layer(3, &(nb_rnn_opts){.return_sequences = true});
    nb_module *gru = nb_gru_layer(2, NULL), *rnn = nb_rnn_layer(2, NULL);
    cr_assert(seq && conv && acts && lstm && gru && rnn, "%s", nb_error());
    const fcase cases[] = {
        {"dense, dropout (eval), softmax, linear", f_layer, 1, {S(4, 3)}, -1, 1, seq},
        {"conv2d, batch_norm, pools, dense", f_layer, 1, {S(2, 2, 4, 4)}, -1, 1, conv},
        {"flatten, layer_norm, sigmoid, leaky_relu, elu, softplus", f_layer, 1, {S(2, 3, 2)}, -2, 2,
         acts},
        {"lstm, every step", f_layer, 1, {S(2, 3, 2)}, -1, 1, lstm},
        {"gru", f_layer, 1, {S(2, 3, 2)}, -1, 1, gru},
        {"simple rnn", f_layer, 1, {S(2, 3, 2)}, -1, 1, rnn},
    };
    CHECK_TABLE(cases);
    nb_module_free(seq);
    nb_module_free(conv);
    nb_module_free(lstm);
    nb_module_free(gru);
    nb_module_free(rnn);
    nb_module_free(acts);
}

/* ---- values by hand and the machinery --------------------------------------------- */

static int f_mul_exp(nb_tensor *const *in, nb_tensor **out, void *ctx) {
    (void)ctx;
    out[0] = nb_mul(in[0], nb_exp(in[1])); /* y = a e^b, dy = e^b da + a e^b db */
    return 0;
}

Test(forward, values_by_hand) {
    nb_tensor *a = nb_from_array(NB_SHAPE(2), (float[]){2, -1});
    nb_tensor *b = nb_from_array(NB_SHAPE(2), (float[]){0, 1});
    nb_tensor *da = nb_from_array(NB_SHAPE(2), (float[]){1, 3});
    nb_tensor *db = nb_from_array(NB_SHAPE(2), (float[]){0.5f, -2});
    nb_tensor *y, *t;
    cr_assert_eq(nb_jvp(f_mul_exp, NULL, 2, (nb_tensor *[]){a, b},
                        (nb_tensor *[]){da, db}, 1, &y, &t),
                 0);
    const float e = 2.718281828f;
    EXPECT_VALUES(y, 1e-5, 2, -e);
    /* e^0*1 + 2*e^0*0.5 = 2;  e*3 + (-1)*e*(-2) = 5e */
    EXPECT_VALUES(t, 1e-5, 2, 5 * e);
    /* a zero tangent for b: only the first term */
    cr_assert_eq(nb_jvp(f_mul_exp, NULL, 2, (nb_tensor *[]){a, b},
                        (nb_tensor *[]){da, NULL}, 1, &y, &t),
                 0);
    EXPECT_VALUES(t, 1e-5, 1, 3 * e);
    /* grad mode off: the tangents do not depend on it */
    bool was = nb_set_grad_enabled(false);
    cr_assert_eq(nb_jvp(f_mul_exp, NULL, 2, (nb_tensor *[]){a, b},
                        (nb_tensor *[]){da, db}, 1, &y, &t),
                 0);
    nb_set_grad_enabled(was);
    EXPECT_VALUES(t, 1e-5, 2, 5 * e);
    /* no tangent at all: zeros */
    cr_assert_eq(nb_jvp(f_mul_exp, NULL, 2, (nb_tensor *[]){a, b}, NULL, 1, &y, &t), 0);
    EXPECT_VALUES(t, 0, 0, 0);
}

/* Several outputs, one of them not reached by the tangents, and one the
 * dual input itself. */
static int f_three(nb_tensor *const *in, nb_tensor **out, void *ctx) {
    (void)ctx;
    out[0] = nb_square(in[0]);
    out[1] = nb_ones(NB_SHAPE(3));
    out[2] = in[0];
    cr_assert_not_null(nb_tangent_of(in[0]));
    cr_assert_not_null(nb_tangent_of(out[0]));
    cr_assert_null(nb_tangent_of(out[1]));
    return 0;
}

Test(forward, several_outputs) {
    nb_tensor *x = nb_from_array(NB_SHAPE(2), (float[]){3, -2});
    nb_tensor *v = nb_from_array(NB_SHAPE(2), (float[]){1, 0.5f});
    nb_tensor *y[3], *t[3];
    cr_assert_eq(nb_jvp(f_three, NULL, 1, &x, &v, 3, y, t), 0, "%s", nb_error());
    EXPECT_VALUES(t[0], 1e-6, 6, -2);
    EXPECT_VALUES(t[1], 0, 0, 0, 0);
    EXPECT_VALUES(t[2], 0, 1, 0.5f);
    EXPECT_VALUES(y[2], 0, 3, -2);
    cr_assert_null(nb_tangent_of(y[0]), "a tangent outlived nb_jvp");
}

static int f_twice(nb_tensor *const *in, nb_tensor **out, void *ctx) {
    (void)ctx;
    out[0] = nb_add(nb_test_twice(in[0]), in[1]);
    return 0;
}

static int f_twice_sum(nb_tensor *const *in, nb_tensor **out, void *ctx) {
    (void)ctx;
    out[0] = nb_sum(nb_test_twice(in[0]), NB_ALL, false);
    return 0;
}

Test(forward, op_without_rule_is_an_error) {
    nb_tensor *x = nb_ones(NB_SHAPE(3)), *b = nb_ones(NB_SHAPE(3)), *v = nb_ones(NB_SHAPE(3));
    for (int rg = 0; rg < 2; rg++) {
        nb_set_requires_grad(x, rg);
        nb_tensor *y = x, *t = x;
        nb_clear_error();
        cr_assert_eq(nb_jvp(f_twice, NULL, 2, (nb_tensor *[]){x, b},
                            (nb_tensor *[]){v, NULL}, 1, &y, &t),
                     -1);
        EXPECT_ERROR("nb_jvp", "'twice'", "no forward-mode rule");
        cr_assert(y == NULL && t == NULL);
        /* the same when its output is the one nb_jvp collects */
        nb_clear_error();
        cr_assert_eq(nb_jvp(f_twice_sum, NULL, 1, &x, &v, 1, &y, &t), -1);
        EXPECT_ERROR("'twice'", "no forward-mode rule");
    }
    /* no tangent reaches it: fine, whatever it lacks */
    nb_tensor *y, *t;
    cr_assert_eq(nb_jvp(f_twice, NULL, 2, (nb_tensor *[]){x, b},
                        (nb_tensor *[]){NULL, v}, 1, &y, &t),
                 0);
    EXPECT_VALUES(t, 0, 1, 1, 1);
}

static int f_nested(nb_tensor *const *in, nb_tensor **out, void *ctx) {
    (void)ctx;
    nb_tensor *y, *t;
    if (nb_jvp(f_mul_exp, NULL, 2, (nb_tensor *[]){in[0], in[0]}, NULL, 1, &y, &t) != 0) return -1;
    out[0] = y;
    return 0;
}

static int f_silent(nb_tensor *const *in, nb_tensor **out, void *ctx) {
    (void)in, (void)out, (void)ctx;
    return -1;
}

static int f_fails(nb_tensor *const *in, nb_tensor **out, void *ctx) {
    (void)ctx;
    out[0] = nb_matmul(in[0], in[0]); /* [2,3] by [2,3]: an error of f's own */
    return out[0] ? 0 : -1;
}

Test(forward, bad_calls) {
    nb_tensor *x = nb_ones(NB_SHAPE(2, 3)), *v = nb_ones(NB_SHAPE(3)), *y, *t;
    cr_assert_eq(nb_jvp(f_mul_exp, NULL, 2, (nb_tensor *[]){x, x},
                        (nb_tensor *[]){v, NULL}, 1, &y, &t),
                 -1);
    EXPECT_ERROR("nb_jvp", "tangent 0", "[3]", "[2,3]");
    nb_clear_error();
    cr_assert_eq(nb_jvp(f_mul_exp, NULL, 2, (nb_tensor *[]){x, NULL}, NULL, 1, &y, &t), -1);
    cr_assert_null(nb_error(), "a NULL input must not add a message");
    cr_assert_eq(nb_jvp(f_nested, NULL, 1, &x, NULL, 1, &y, &t), -1);
    EXPECT_ERROR("nb_jvp", "inside another nb_jvp");
    cr_assert_eq(nb_jvp(f_fails, NULL, 1, &x, NULL, 1, &y, &t), -1);
    EXPECT_ERROR("nb_matmul", "[2,3]");
    cr_assert_eq(nb_jvp(f_silent, NULL, 1, &x, NULL, 1, &y, &t), -1);
    EXPECT_ERROR("nb_jvp", "without a message");
    cr_assert_eq(nb_jvp(NULL, NULL, 1, &x, NULL, 1, &y, &t), -1);
    EXPECT_ERROR("nb_jvp");
    /* a later call works: the failures left no level open */
    cr_assert_eq(nb_jvp(f_mul_exp, NULL, 2, (nb_tensor *[]){x, x},
                        (nb_tensor *[]){x, NULL}, 1, &y, &t),
                 0);
}

/* Outside any scope: nothing leaks, the results are the caller's. */
Test(forward, without_a_scope) {
    nb_scope_end(); /* the suite's */
    nb_tensor *x = nb_ones(NB_SHAPE(2)), *v = nb_ones(NB_SHAPE(2)), *y, *t;
    cr_assert_eq(nb_jvp(f_mul_exp, NULL, 2, (nb_tensor *[]){x, x},
                        (nb_tensor *[]){v, v}, 1, &y, &t),
                 0);
    const float e = 2.718281828f;
    EXPECT_VALUES(t, 1e-5, 2 * e, 2 * e); /* d(x e^x) = (1 + x) e^x dx */
    nb_release(y);
    nb_release(t);
    nb_release(x);
    nb_release(v);
    nb_scope_begin();
}

/* ---- forward over reverse, reverse over forward ----------------------------------- */

typedef struct hvp_ctx {
    nb_tensor *a; /* L = 0.5 xᵀ A x + sum(tanh(x)) */
    bool create_graph;
} hvp_ctx;

static nb_tensor *loss_of(nb_tensor *x, const hvp_ctx *c) {
    nb_tensor *col = nb_reshape(x, NB_SHAPE(-1, 1));
    nb_tensor *quad = nb_mul_scalar(nb_matmul(nb_transpose(col, 0, 1), nb_matmul(c->a, col)), 0.5f);
    return nb_add(nb_sum(quad, NB_ALL, false), nb_sum(nb_tanh(x), NB_ALL, false));
}

static int f_gradient(nb_tensor *const *in, nb_tensor **out, void *ctx) {
    const hvp_ctx *c = ctx;
    nb_tensor *loss = loss_of(in[0], c);
    nb_grad_opts o = {.create_graph = c->create_graph};
    return nb_grad(1, &loss, NULL, 1, in, &out[0], &o);
}

/* H = (A + Aᵀ)/2 + diag(-2 tanh(x) (1 - tanh(x)^2)), by hand */
static void expected_hvp(const float *a, const float *x, const float *v, int n, double *hv) {
    for (int i = 0; i < n; i++) {
        double th = tanh((double)x[i]);
        hv[i] = -2 * th * (1 - th * th) * v[i];
        for (int j = 0; j < n; j++) hv[i] += 0.5 * ((double)a[i * n + j] + a[j * n + i]) * v[j];
    }
}

Test(forward, hessian_vector_product) {
    const int n = 4;
    nb_tensor *a = nb_uniform(NULL, -1, 1, NB_SHAPE(4, 4));
    nb_tensor *x = nb_uniform(NULL, -1, 1, NB_SHAPE(4)), *v = nb_uniform(NULL, -1, 1, NB_SHAPE(4));
    double want[4];
    expected_hvp(nb_data(a), nb_data(x), nb_data(v), n, want);
    nb_set_requires_grad(x, true); /* nb_grad inside f differentiates with respect to it */
    for (int cg = 0; cg < 2; cg++) {
            hvp_ctx c = {a, cg};
            nb_tensor *g, *hv, *xin = x;
            cr_assert_eq(nb_jvp(f_gradient, &c, 1, &xin, &v, 1, &g, &hv), 0, "%s", nb_error());
            for (int i = 0; i < n; i++) {
                double th = tanh((double)nb_data(x)[i]), gi = 1 - th * th;
                for (int j = 0; j < n; j++)
                    gi += 0.5 * ((double)nb_data(a)[i * n + j] + nb_data(a)[j * n + i]) *
                          nb_data(x)[j];
                cr_assert(fabs(nb_data(g)[i] - gi) < 1e-5, "gradient %d: %g, expected %g", i,
                          (double)nb_data(g)[i], gi);
                cr_assert(fabs(nb_data(hv)[i] - want[i]) < 1e-5,
                          "Hv[%d] is %g, expected %g (create_graph %d)", i, (double)nb_data(hv)[i],
                          want[i], cg);
            }
    }
}

static int f_loss(nb_tensor *const *in, nb_tensor **out, void *ctx) {
    out[0] = loss_of(in[0], ctx);
    return 0;
}

/* The tangent of L along v is ∇L·v; its gradient with respect to x is H v. */
Test(forward, reverse_over_forward) {
    const int n = 4;
    nb_tensor *a = nb_uniform(NULL, -1, 1, NB_SHAPE(4, 4));
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(4)), *v = nb_uniform(NULL, -1, 1, NB_SHAPE(4));
    hvp_ctx c = {a, false};
    nb_tensor *loss, *dl, *hv;
    cr_assert_eq(nb_jvp(f_loss, &c, 1, &x, &v, 1, &loss, &dl), 0, "%s", nb_error());
    cr_assert(nb_requires_grad(dl));
    cr_assert_eq(nb_grad(1, &dl, NULL, 1, &x, &hv, NULL), 0, "%s", nb_error());
    double want[4];
    expected_hvp(nb_data(a), nb_data(x), nb_data(v), n, want);
    for (int i = 0; i < n; i++)
        cr_assert(fabs(nb_data(hv)[i] - want[i]) < 1e-5, "Hv[%d] is %g, expected %g", i,
                  (double)nb_data(hv)[i], want[i]);
}

/* Inside f, an intermediate made for forward mode alone (nothing requires
 * grad) is a plain tensor to the user: it can be marked as a leaf, and
 * nb_empty_cache does not pull the level from under the call. */
static int f_mark(nb_tensor *const *in, nb_tensor **out, void *ctx) {
    (void)ctx;
    nb_tensor *h = nb_exp(in[0]);
    nb_empty_cache();
    if (!nb_set_requires_grad(h, true)) return -1;
    out[0] = nb_mul(h, h);
    cr_assert(nb_is_leaf(h));
    return 0;
}

Test(forward, intermediate_made_a_leaf) {
    nb_tensor *x = nb_from_array(NB_SHAPE(1), (float[]){0.5f}), *v = nb_ones(NB_SHAPE(1)), *y, *t;
    cr_assert_eq(nb_jvp(f_mark, NULL, 1, &x, &v, 1, &y, &t), 0, "%s", nb_error());
    EXPECT_VALUES(t, 1e-5, 2 * expf(1.0f)); /* d(e^2x) = 2 e^2x dx */
    cr_assert(nb_requires_grad(y));
}

/* ---- out of memory ---------------------------------------------------------------------
 * Each allocation of a forward-over-reverse call fails in turn (and, in
 * the second pass, every one after it too): the call fails with a message
 * saying so, or succeeds, and never leaks or crashes. */

static int hvp_once(nb_tensor *x, nb_tensor *v, hvp_ctx *c) {
    nb_scope_begin();
    nb_tensor *g, *hv;
    int rc = nb_jvp(f_gradient, c, 1, &x, &v, 1, &g, &hv);
    nb_scope_end();
    return rc;
}

typedef struct oom_hvp {
    nb_tensor *x, *v;
    hvp_ctx *c;
} oom_hvp;

static int oom_hvp_run(void *ctx) {
    oom_hvp *o = ctx;
    return hvp_once(o->x, o->v, o->c);
}

Test(forward, out_of_memory) {
    nb_tensor *a = nb_uniform(NULL, -1, 1, NB_SHAPE(3, 3));
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(3)), *v = nb_uniform(NULL, -1, 1, NB_SHAPE(3));
    hvp_ctx c = {a, true};
    oom_hvp o = {x, v, &c};
    nb_test_oom_walk(oom_hvp_run, &o, false);
    nb_test_oom_walk(oom_hvp_run, &o, true);
}

/* With several outputs, a failure while the tangents are handed back must
 * still let go of the later outputs' tangents. */
static int f_two_exps(nb_tensor *const *in, nb_tensor **out, void *ctx) {
    (void)ctx;
    out[0] = nb_exp(in[0]);
    out[1] = nb_exp(out[0]);
    return out[0] && out[1] ? 0 : -1;
}

static int oom_two_exps_run(void *ctx) {
    nb_tensor **xv = ctx, *y[2], *t[2];
    return nb_jvp(f_two_exps, NULL, 1, &xv[0], &xv[1], 2, y, t);
}

Test(forward, out_of_memory_with_several_outputs) {
    nb_tensor *xv[2] = {nb_test_leaf(-1, 1, NB_SHAPE(2)), nb_uniform(NULL, -1, 1, NB_SHAPE(2))};
    nb_test_oom_walk(oom_two_exps_run, xv, false);
    nb_test_oom_walk(oom_two_exps_run, xv, true);
}
