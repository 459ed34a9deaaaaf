/* nb_ops.h — the catalogue of differentiable ops. Each family lives in one
 * file of ops/, each op's forward kernel beside its backward formula;
 * ops/README.md is the table of every op's gradient.
 *
 * Every function here returns a new tensor that follows the ownership rule
 * of nb_autograd.h (it belongs to the innermost open scope), returns NULL
 * with a message naming the op and the shapes on bad input, and returns NULL
 * silently when given NULL. Axes may be negative (counted from the end).
 */
#ifndef NB_OPS_H
#define NB_OPS_H

#include "nb_autograd.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- elementwise binary, NumPy broadcasting (ops/elementwise.c) ----------- */
nb_tensor *nb_add(nb_tensor *a, nb_tensor *b);
nb_tensor *nb_sub(nb_tensor *a, nb_tensor *b);
nb_tensor *nb_mul(nb_tensor *a, nb_tensor *b);
nb_tensor *nb_div(nb_tensor *a, nb_tensor *b);
nb_tensor *nb_pow(nb_tensor *a, nb_tensor *b);     /* a > 0 where b is not an integer */
nb_tensor *nb_maximum(nb_tensor *a, nb_tensor *b); /* ties split the gradient evenly */
nb_tensor *nb_minimum(nb_tensor *a, nb_tensor *b);

/* with a scalar operand */
nb_tensor *nb_add_scalar(nb_tensor *a, float s);
nb_tensor *nb_sub_scalar(nb_tensor *a, float s);   /* a - s */
nb_tensor *nb_rsub_scalar(nb_tensor *a, float s);  /* s - a */
nb_tensor *nb_mul_scalar(nb_tensor *a, float s);
nb_tensor *nb_div_scalar(nb_tensor *a, float s);   /* a / s */
nb_tensor *nb_rdiv_scalar(nb_tensor *a, float s);  /* s / a */
nb_tensor *nb_pow_scalar(nb_tensor *a, float s);   /* a ^ s */
nb_tensor *nb_rpow_scalar(nb_tensor *a, float s);  /* s ^ a, s > 0 */
nb_tensor *nb_maximum_scalar(nb_tensor *a, float s);
nb_tensor *nb_minimum_scalar(nb_tensor *a, float s);

/* The shape a and b broadcast to; false (and a message naming who) if they
 * do not. out must hold NB_MAX_DIMS entries. */
bool nb_broadcast_shapes(const char *who, const nb_tensor *a, const nb_tensor *b, int *ndim,
                         int64_t *out);
/* Sums t over broadcast dimensions down to shape (the adjoint of expand).
 * Returns t itself, not a new tensor, when t already has that shape. */
nb_tensor *nb_sum_to(nb_tensor *t, int ndim, const int64_t *shape);
/* Copies t broadcast to shape. */
nb_tensor *nb_expand(nb_tensor *t, int ndim, const int64_t *shape);

/* ---- comparisons and selection (ops/compare.c) -----------------------------
 * Comparisons give masks of 0 and 1 and are not differentiable (the result
 * never requires grad). where() is differentiable in a and b. */
nb_tensor *nb_eq(nb_tensor *a, nb_tensor *b);
nb_tensor *nb_ne(nb_tensor *a, nb_tensor *b);
nb_tensor *nb_lt(nb_tensor *a, nb_tensor *b);
nb_tensor *nb_le(nb_tensor *a, nb_tensor *b);
nb_tensor *nb_gt(nb_tensor *a, nb_tensor *b);
nb_tensor *nb_ge(nb_tensor *a, nb_tensor *b);
nb_tensor *nb_gt_scalar(nb_tensor *a, float s);
nb_tensor *nb_lt_scalar(nb_tensor *a, float s);
/* cond != 0 ? a : b, all three broadcast together. */
nb_tensor *nb_where(nb_tensor *cond, nb_tensor *a, nb_tensor *b);

/* ---- elementwise unary and activations (ops/unary.c, ops/activation.c) ---- */
nb_tensor *nb_neg(nb_tensor *x);
nb_tensor *nb_exp(nb_tensor *x);
nb_tensor *nb_log(nb_tensor *x);
nb_tensor *nb_sqrt(nb_tensor *x);
nb_tensor *nb_abs(nb_tensor *x);    /* gradient 0 at 0 */
nb_tensor *nb_sign(nb_tensor *x);   /* not differentiable: gradient 0 */
nb_tensor *nb_sin(nb_tensor *x);
nb_tensor *nb_cos(nb_tensor *x);
nb_tensor *nb_square(nb_tensor *x);
nb_tensor *nb_erf(nb_tensor *x);
nb_tensor *nb_tanh(nb_tensor *x);
nb_tensor *nb_sigmoid(nb_tensor *x);
nb_tensor *nb_relu(nb_tensor *x);   /* gradient 0 at 0 */
nb_tensor *nb_leaky_relu(nb_tensor *x, float negative_slope);
nb_tensor *nb_elu(nb_tensor *x, float alpha);
nb_tensor *nb_gelu(nb_tensor *x);   /* exact: x * Phi(x) */
nb_tensor *nb_softplus(nb_tensor *x); /* log(1 + exp(x)), stable */
nb_tensor *nb_clamp(nb_tensor *x, float min, float max); /* gradient 1 inside [min, max] */

/* ---- reductions (ops/reduce.c) ----------------------------------------------
 * naxes == 0 (NB_ALL) reduces every axis. keepdim leaves reduced axes as 1. */
nb_tensor *nb_sum(nb_tensor *x, int naxes, const int *axes, bool keepdim);
nb_tensor *nb_mean(nb_tensor *x, int naxes, const int *axes, bool keepdim);
/* max and min are PyTorch's amax and amin: the gradient is split evenly
 * among the elements equal to the result (NaN ones when it is NaN). */
nb_tensor *nb_max(nb_tensor *x, int naxes, const int *axes, bool keepdim);
nb_tensor *nb_min(nb_tensor *x, int naxes, const int *axes, bool keepdim);
/* correction 1 is the unbiased (sample) variance, 0 the population one. */
nb_tensor *nb_var(nb_tensor *x, int naxes, const int *axes, int correction, bool keepdim);
nb_tensor *nb_logsumexp(nb_tensor *x, int naxes, const int *axes, bool keepdim);
/* Index of the largest (smallest) element along axis, as float values. */
nb_tensor *nb_argmax(nb_tensor *x, int axis, bool keepdim);
nb_tensor *nb_argmin(nb_tensor *x, int axis, bool keepdim);
/* Stable for large inputs (the maximum is subtracted first). */
nb_tensor *nb_softmax(nb_tensor *x, int axis);
nb_tensor *nb_log_softmax(nb_tensor *x, int axis);

/* ---- linear algebra (ops/linalg.c) ------------------------------------------
 * matmul follows numpy.matmul: 1-D operands are promoted to a matrix and the
 * added axis removed after; leading (batch) axes broadcast. */
nb_tensor *nb_matmul(nb_tensor *a, nb_tensor *b);
nb_tensor *nb_transpose(nb_tensor *x, int axis0, int axis1);
nb_tensor *nb_permute(nb_tensor *x, const int *perm); /* perm has ndim entries */
/* Threads used by large kernels (matmul): n <= 0 means one per CPU.
 * Results are bitwise identical whatever the count. */
void nb_set_num_threads(int n);
int nb_get_num_threads(void);
/* Denormal floats (below 1.2e-38 in magnitude) flushed to zero, in results
 * and in inputs, by the calling thread and by the pool's threads while they
 * work for it: PyTorch's torch.set_flush_denormal. Off by default (IEEE
 * arithmetic). Arithmetic on denormals is many times slower on most CPUs,
 * and they appear in long training runs (an optimizer's moving average of
 * a gradient that is almost always zero decays into them); flushing
 * changes results only where such tiny values occur. Returns false when
 * the CPU has no such mode (and nothing changed); x86-64 has. */
bool nb_set_flush_denormal(bool on);
/* op(a)·op(b) where op transposes the last two axes when its flag is set,
 * without copying: a, b at least 2-D, batch axes broadcast as in matmul. */
nb_tensor *nb_matmul_t(nb_tensor *a, nb_tensor *b, bool trans_a, bool trans_b);
/* x [..., in]·w [in, out] + b [out] (b may be NULL) -> [..., out], one op:
 * the bias is the GEMM's starting value, so a dense layer is one pass. */
nb_tensor *nb_linear_map(nb_tensor *x, nb_tensor *w, nb_tensor *b);

/* ---- shape (ops/shape.c) -------------------------------------------------------
 * reshape and its relatives share storage with x; the others copy. */
nb_tensor *nb_reshape(nb_tensor *x, int ndim, const int64_t *shape); /* one -1 allowed */
nb_tensor *nb_flatten(nb_tensor *x, int start_axis, int end_axis);
nb_tensor *nb_squeeze(nb_tensor *x, int axis);   /* the axis must have size 1 */
nb_tensor *nb_unsqueeze(nb_tensor *x, int axis); /* axis in [-ndim-1, ndim] */
nb_tensor *nb_clone(nb_tensor *x);
/* Python's x[start:stop:step] along axis: negative start/stop count from
 * the end, out-of-range bounds are clipped, step >= 1. */
nb_tensor *nb_slice(nb_tensor *x, int axis, int64_t start, int64_t stop, int64_t step);
/* Indices are tensors of integral values (exact in float up to 2^24).
 * index_select takes whole slices: out.shape[axis] = numel(index).
 * gather picks out[i][j] = x[index[i][j]][j] (axis 0), index has x's rank. */
nb_tensor *nb_index_select(nb_tensor *x, int axis, nb_tensor *index);
nb_tensor *nb_gather(nb_tensor *x, int axis, nb_tensor *index);
/* The adjoints of the two above: zeros of shape x with src added at index.
 * As in PyTorch, a 0-d x takes axis 0 and index 0 (the results are 0-d),
 * and index_add into a vector takes a 0-d src for a one-element index. */
nb_tensor *nb_index_add(nb_tensor *x, int axis, nb_tensor *index, nb_tensor *src);
nb_tensor *nb_scatter_add(nb_tensor *x, int axis, nb_tensor *index, nb_tensor *src);
nb_tensor *nb_concat(int n, nb_tensor *const *xs, int axis);
nb_tensor *nb_stack(int n, nb_tensor *const *xs, int axis);

/* ---- losses (ops/loss.c) ---------------------------------------------------------
 * Each returns one number: the mean over elements (or over the batch for
 * the class losses) unless reduction says otherwise. */
typedef enum nb_reduction { NB_REDUCE_MEAN, NB_REDUCE_SUM, NB_REDUCE_NONE } nb_reduction;

nb_tensor *nb_mse_loss(nb_tensor *pred, nb_tensor *target, nb_reduction r);
nb_tensor *nb_l1_loss(nb_tensor *pred, nb_tensor *target, nb_reduction r);
nb_tensor *nb_huber_loss(nb_tensor *pred, nb_tensor *target, float delta, nb_reduction r);
/* prob in [0, 1]; log terms clamped at -100 and the gradient
 * (p - y) / max((1 - p) p, 1e-12), finite at 0 and 1, as PyTorch's. */
nb_tensor *nb_bce_loss(nb_tensor *prob, nb_tensor *target, nb_reduction r);
nb_tensor *nb_bce_with_logits_loss(nb_tensor *logits, nb_tensor *target, nb_reduction r);
/* logits [N, C], labels [N] of class indices in 0..C-1; or one sample,
 * logits [C] and one label. Without reduction the result has the labels'
 * shape: [N], or 0-d for one sample with a 0-d label, as in PyTorch. */
nb_tensor *nb_cross_entropy_loss(nb_tensor *logits, nb_tensor *labels, nb_reduction r);
/* Sequences too, for both class losses: logits [N,...,C] with labels [N,...]
 * (a language model's [B,T,V] and [B,T]); the mean is over every label.
 * cross_entropy_loss_ignore skips labels equal to ignore_index (loss 0, no
 * gradient, left out of the mean's count), as PyTorch's ignore_index. */
nb_tensor *nb_cross_entropy_loss_ignore(nb_tensor *logits, nb_tensor *labels, int64_t ignore_index,
                                        nb_reduction r);
/* log_probs [N, C] (or [C]), labels as above: -log_probs[i, labels[i]]. */
nb_tensor *nb_nll_loss(nb_tensor *log_probs, nb_tensor *labels, nb_reduction r);

/* ---- convolution and pooling, NCHW (ops/conv.c) ------------------------------
 * PyTorch's semantics: cross-correlation, zero padding, oH = (H + 2·padding
 * - dilation·(kH - 1) - 1) / stride + 1 (floor), likewise oW. Options are a
 * struct with designated initialisers; NULL, or any field left at 0, means
 * the default (stride 1, padding 0, dilation 1, groups 1):
 *     nb_conv2d(x, w, b, &(nb_conv2d_opts){.stride = {2, 2}, .padding = {1, 1}})
 * Index 0 is the height, 1 the width. */
typedef struct nb_conv2d_opts {
    int stride[2];
    int padding[2];
    int dilation[2];
    int groups;
    int output_padding[2]; /* nb_conv_transpose2d only; smaller than stride */
} nb_conv2d_opts;

/* x [N,C,H,W], w [O,C/groups,kH,kW], b [O] or NULL -> [N,O,oH,oW] */
nb_tensor *nb_conv2d(nb_tensor *x, nb_tensor *w, nb_tensor *b, const nb_conv2d_opts *opts);
/* The adjoint of conv2d in x (its input gradient), PyTorch's
 * conv_transpose2d: x [N,Cin,H,W], w [Cin,Cout/groups,kH,kW], b [Cout] or
 * NULL -> [N,Cout,(H-1)·stride - 2·padding + dilation·(kH-1) + output_padding + 1, ...] */
nb_tensor *nb_conv_transpose2d(nb_tensor *x, nb_tensor *w, nb_tensor *b,
                               const nb_conv2d_opts *opts);
/* The gradient of sum(grad_y · conv2d(x, w)) with respect to w (PyTorch's
 * nn.grad.conv2d_weight): x [N,C,H,W], grad_y [N,O,oH,oW] -> [O,C/groups,kH,kW]. */
nb_tensor *nb_conv2d_weight_grad(nb_tensor *x, nb_tensor *grad_y, int64_t kh, int64_t kw,
                                 const nb_conv2d_opts *opts);

/* Pooling windows, PyTorch's MaxPool2d/AvgPool2d options: stride 0 (the
 * default) means the kernel size; padding at most half the kernel; dilation
 * 0 means 1 (max pooling only). oH = (H + 2·padding - dilation·(kH-1) - 1)
 * / stride + 1, rounded down, or up with ceil_mode (then a last window must
 * still start inside the input or its left padding). */
typedef struct nb_pool2d_opts {
    int stride[2];
    int padding[2];
    int dilation[2];
    bool ceil_mode;
} nb_pool2d_opts;

/* x [N,C,H,W] -> [N,C,oH,oW]. max: padding never wins; the gradient goes to
 * the first maximum of each window (a NaN is a maximum). avg: padding counts
 * as zeros in the divisor (PyTorch's count_include_pad), the part of a
 * ceil_mode window past the padding does not. */
nb_tensor *nb_max_pool2d(nb_tensor *x, int kh, int kw, const nb_pool2d_opts *opts);
nb_tensor *nb_avg_pool2d(nb_tensor *x, int kh, int kw, const nb_pool2d_opts *opts);
/* x [N,C,H,W] -> [N,C,oh,ow], oh dividing H and ow dividing W; (1, 1) is the
 * global average pool. */
nb_tensor *nb_adaptive_avg_pool2d(nb_tensor *x, int64_t oh, int64_t ow);

/* ---- normalisation and embedding (ops/norm.c) ---------------------------------
 * PyTorch's semantics. The statistics are the mean and the biased variance
 * over the normalised axes; y = (x - mean) / sqrt(var + eps) · weight + bias.
 *
 * layer_norm normalises over the last normalized_ndim axes of x; weight and
 * bias (each may be NULL) have the shape of those axes:
 *     x [..., d1..dk], weight, bias [d1..dk] -> [..., d1..dk]      */
nb_tensor *nb_layer_norm(nb_tensor *x, int normalized_ndim, nb_tensor *weight, nb_tensor *bias,
                         float eps);
/* batch_norm normalises over every axis but 1 (the channels):
 *     x [N,C] or [N,C,H,W] (any [N,C,...]), the four vectors [C] -> x's shape
 * training: the batch's statistics, and, when running_mean and running_var
 * are given, both updated in place (no graph) with PyTorch's convention
 *     running = (1 - momentum)·running + momentum·batch   (momentum 0.1 in PyTorch)
 * using the unbiased batch variance for running_var; more than one value per
 * channel is needed. Keras's momentum is the other way round (its 0.99 is
 * 0.01 here). Eval: the running statistics (required), which get no
 * gradient. weight and bias may be NULL. */
nb_tensor *nb_batch_norm(nb_tensor *x, nb_tensor *running_mean, nb_tensor *running_var,
                         nb_tensor *weight, nb_tensor *bias, bool training, float momentum, float eps);
/* weight [V,D], indices of any shape holding integers in [0, V) as floats
 * -> [..., D] (the rows of weight); the gradient is added into the rows
 * used (index_add). Another index is an error naming it and V. */
nb_tensor *nb_embedding(nb_tensor *weight, nb_tensor *indices);

/* ---- attention (ops/attention.c) ---------------------------------------------------------
 * q [..., Tq, D], k [..., Tk, D], v [..., Tk, Dv] (same leading axes)
 *   -> softmax(scale·q·kᵀ + mask)·v  [..., Tq, Dv]
 * scale 0 means 1/sqrt(D). mask: NULL, or additive scores (-INFINITY hides
 * a key) broadcasting to [..., Tq, Tk]; it receives a gradient if it
 * requires one. causal hides key j from query i when j > i (PyTorch's
 * is_causal). A query whose every key is hidden gets weights 0, so an
 * output of 0 and no gradient (PyTorch gives NaN). */
nb_tensor *nb_scaled_dot_product_attention(nb_tensor *q, nb_tensor *k, nb_tensor *v,
                                           nb_tensor *mask, bool causal, float scale);
/* The fused middle step: softmax(scale·scores + mask) over the last axis,
 * with the same mask and causal rules. scores [..., Tq, Tk]. */
nb_tensor *nb_masked_softmax(nb_tensor *scores, nb_tensor *mask, bool causal, float scale);

/* ---- whole derivatives (ops/functional.c) ------------------------------------
 * PyTorch's torch.autograd.functional. f is called with
 * grad mode on, on copies of the inputs that require grad (or, with
 * create_graph, on the inputs themselves when they require grad, so that
 * the results are graphs that can be differentiated again). Inputs need
 * not require grad. Each function returns 0, or -1 with a message and
 * every result NULL; results follow the ownership rule. */
typedef enum nb_jacobian_strategy {
    NB_JACOBIAN_AUTO,    /* FORWARD when the inputs have fewer elements in all than
                            the outputs, else REVERSE; f is called once first to
                            learn the output sizes, a call forward cannot reuse */
    NB_JACOBIAN_REVERSE, /* one backward per output element */
    NB_JACOBIAN_FORWARD, /* one nb_jvp per input element: every op f uses needs a
                            jvp rule, and f must not call nb_jvp itself */
} nb_jacobian_strategy;

typedef struct nb_functional_opts {
    bool create_graph;             /* results with a graph (higher derivatives) */
    nb_jacobian_strategy strategy; /* nb_jacobian and nb_hessian */
} nb_functional_opts;

/* jac[i] = d f(x) / d inputs[i], shaped f(x).shape + inputs[i].shape, for
 * i < ninputs (PyTorch's jacobian(f, inputs)); an input f does not use, or
 * an output that does not depend on the inputs, gives zeros. */
int nb_jacobian(nb_gradcheck_fn f, void *ctx, int ninputs, nb_tensor *const *inputs,
                nb_tensor **jac, const nb_functional_opts *opts);
/* A function of several outputs: writes outputs[0..noutputs) and returns 0,
 * or -1 having set a message. */
typedef int (*nb_multi_fn)(nb_tensor *const *inputs, nb_tensor **outputs, void *ctx);
/* jac[o·ninputs + i] = d outputs[o] / d inputs[i], shaped
 * outputs[o].shape + inputs[i].shape. At most 64 inputs and 64 outputs. */
int nb_jacobian_multi(nb_multi_fn f, void *ctx, int ninputs, nb_tensor *const *inputs,
                      int noutputs, nb_tensor **jac, const nb_functional_opts *opts);
/* For f returning one value: hess[i·ninputs + j] = d^2 f / d inputs[i]
 * d inputs[j], shaped inputs[i].shape + inputs[j].shape (PyTorch's
 * hessian(f, inputs)[i][j]). strategy FORWARD is forward over reverse
 * (torch.func.hessian's jacfwd(jacrev)): one nb_jvp of f and its backward
 * per input element, which needs a jvp rule in every op of f and of its
 * backward formulas; REVERSE is reverse over reverse (torch.autograd.
 * functional.hessian): the gradient once, with create_graph, then one
 * backward through it per input element. AUTO is REVERSE, about twice as
 * fast here (no batched columns). They agree to rounding. */
int nb_hessian(nb_gradcheck_fn f, void *ctx, int ninputs, nb_tensor *const *inputs,
               nb_tensor **hess, const nb_functional_opts *opts);
/* For f returning one value and v one tensor per input, shaped like it:
 * vhp[i] = (v^T H)_i, the gradient of <grad f, v>, by reverse over reverse;
 * hvp[i] = (H v)_i, the tangent of grad f along v, by forward over reverse
 * (one nb_jvp of a function running nb_grad: every op of f's backward
 * formulas needs a jvp rule). *value = f(inputs) unless value is NULL. The
 * two agree when H is symmetric, which it is for f twice continuously
 * differentiable (not at a kink such as relu's). */
int nb_vhp(nb_gradcheck_fn f, void *ctx, int ninputs, nb_tensor *const *inputs,
           nb_tensor *const *v, nb_tensor **value, nb_tensor **vhp, const nb_functional_opts *opts);
int nb_hvp(nb_gradcheck_fn f, void *ctx, int ninputs, nb_tensor *const *inputs,
           nb_tensor *const *v, nb_tensor **value, nb_tensor **hvp, const nb_functional_opts *opts);

#ifdef __cplusplus
}
#endif
#endif
