/* ops_internal.h — helpers shared by the files of ops/ and by nothing a user
 * sees: the broadcasting plan that elementwise kernels walk, axis
 * normalisation and shape formatting for messages. Everything else an op
 * needs comes from the public op API in nb_autograd.h.
 */
#ifndef NB_OPS_INTERNAL_H
#define NB_OPS_INTERNAL_H

#include "nb_ops.h"
#include "size_internal.h" /* checked size arithmetic, the shape rule */

#include <math.h>
#include <string.h>

/* A shape formatted for a message: SHAPE(t) is "[3,4]". Each use needs its
 * own buffer, so it lives in a compound literal of the enclosing block. */
#define NB_SHAPE_BUF NB_SHAPE_CHARS
#define SHAPE(t) nb_shape_str(nb_ndim(t), nb_shape(t), (char[NB_SHAPE_BUF]){0}, NB_SHAPE_BUF)

/* Output index -> offsets into a and b for two operands broadcast together.
 * Strides are 0 along broadcast axes. */
typedef struct nb_bcast {
    int ndim;
    int64_t shape[NB_MAX_DIMS];
    int64_t numel;
    int64_t stride_a[NB_MAX_DIMS], stride_b[NB_MAX_DIMS];
} nb_bcast;

/* Plans a op b; false and a message naming who when the shapes clash. */
bool nb_bcast_plan(const char *who, const nb_tensor *a, const nb_tensor *b, nb_bcast *p);

/* Plans a op b and makes the (uninitialised) output of the broadcast
 * shape; NULL, with a message naming who, when the shapes clash or the
 * output cannot be made. */
static inline nb_tensor *nb_bcast_output(const char *who, const nb_tensor *a, const nb_tensor *b,
                                         nb_bcast *p) {
    return nb_bcast_plan(who, a, b, p) ? nb__empty_for(who, p->ndim, p->shape) : NULL;
}

/* Runs BODY for every output element i with ia, ib the matching input
 * offsets. The innermost axes that both inputs walk at an even stride (all
 * of them for same-shape operands, [10,1] as much as [10]) are one plain
 * loop, so that a column is not walked one row at a time; the elements
 * come in the same order. That loop is written out for the inner strides
 * (1, 1), (1, 0) and (0, 1) as constants (with strides only known at run
 * time, the compiler left it scalar), then for any strides, so that
 * same-shape and scalar-operand cases vectorise. Each element is computed
 * the same way in every version. */
#define NB_BCAST_INNER_(SA, SB, i, ia, ib, BODY)                                             \
    for (int64_t k_ = 0; k_ < inner_; k_++) {                                                \
        int64_t i = row_ * inner_ + k_, ia = base_a_ + k_ * (SA), ib = base_b_ + k_ * (SB);   \
        (void)i; (void)ia; (void)ib;                                                         \
        BODY;                                                                                \
    }
#define NB_BCAST_FOR(p, i, ia, ib, BODY)                                                     \
    do {                                                                                     \
        const nb_bcast *p_ = (p);                                                            \
        int64_t inner_ = p_->ndim ? p_->shape[p_->ndim - 1] : 1;                             \
        int64_t sa_ = p_->ndim ? p_->stride_a[p_->ndim - 1] : 0;                             \
        int64_t sb_ = p_->ndim ? p_->stride_b[p_->ndim - 1] : 0;                             \
        int top_ = p_->ndim - 2; /* the innermost axis the odometer turns */                  \
        while (top_ >= 0 && p_->stride_a[top_] == sa_ * inner_ &&                            \
               p_->stride_b[top_] == sb_ * inner_)                                           \
            inner_ *= p_->shape[top_--];                                                     \
        int64_t idx_[NB_MAX_DIMS] = {0}, base_a_ = 0, base_b_ = 0;                           \
        for (int64_t row_ = 0; inner_ > 0 && row_ * inner_ < p_->numel; row_++) {           \
            if (sa_ == 1 && sb_ == 1) NB_BCAST_INNER_(1, 1, i, ia, ib, BODY)                 \
            else if (sa_ == 1 && sb_ == 0) NB_BCAST_INNER_(1, 0, i, ia, ib, BODY)            \
            else if (sa_ == 0 && sb_ == 1) NB_BCAST_INNER_(0, 1, i, ia, ib, BODY)            \
            else NB_BCAST_INNER_(sa_, sb_, i, ia, ib, BODY)                                  \
            for (int d_ = top_; d_ >= 0; d_--) {                                             \
                idx_[d_]++;                                                                  \
                base_a_ += p_->stride_a[d_];                                                 \
                base_b_ += p_->stride_b[d_];                                                 \
                if (idx_[d_] < p_->shape[d_]) break;                                         \
                base_a_ -= idx_[d_] * p_->stride_a[d_];                                      \
                base_b_ -= idx_[d_] * p_->stride_b[d_];                                      \
                idx_[d_] = 0;                                                                \
            }                                                                                \
        }                                                                                    \
    } while (0)

/* The forward of an elementwise function of one tensor: declares out,
 * shaped like x, and sets each element to EXPR of v, the input element.
 * Returns NULL from the enclosing function if out cannot be made. */
#define NB_UNARY_FORWARD(x, out, EXPR)                                          \
    nb_tensor *out = nb_empty_like(x);                                          \
    if (!out) return NULL;                                                      \
    do {                                                                        \
        const float *px_ = nb_data(x);                                          \
        float *po_ = nb_data_mut(out);                                          \
        for (int64_t i_ = 0, n_ = nb_numel(x); i_ < n_; i_++) {                 \
            float v = px_[i_];                                                  \
            po_[i_] = (EXPR);                                                   \
        }                                                                       \
    } while (0)

/* Ops composed of other ops run inside a scope of their own, so that their
 * intermediates are freed even when the caller has no scope open; the
 * result leaves it through nb_escape (NULL passes through):
 *     nb_composite_begin(); ...; return nb_composite_end(result);        */
static inline void nb_composite_begin(void) { nb_scope_begin(); }
static inline nb_tensor *nb_composite_end(nb_tensor *result) {
    nb_escape(result);
    nb_scope_end();
    return result;
}

/* The forward-mode rule of an op of one input whose Jacobian is symmetric
 * (every elementwise op, softmax): J·v = Jᵀ·v, which is the backward formula
 * applied to the tangent. The backward must fill gx[0] unconditionally. */
static inline nb_tensor *nb_symmetric_jvp(nb_tensor *node, nb_tensor *const *tangents) {
    nb_tensor *gx[1] = {NULL};
    if (tangents[0]) nb_op_of(node)->backward(node, tangents[0], gx);
    return gx[0];
}

/* Normalises axis (negative from the end) into [0, ndim); false and a
 * message naming who when out of range. */
bool nb_norm_axis(const char *who, int axis, int ndim, int *out);

/* Row-major strides of a valid shape (size_internal.h: every partial
 * product of its dimensions fits, so none of these can overflow). */
static inline void nb_strides(int ndim, const int64_t *shape, int64_t *strides) {
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        strides[d] = s;
        s *= shape[d];
    }
}

/* *sum = the n terms TERM(0) .. TERM(n - 1) (doubles) added in nb_sum's
 * order for a contiguous run: eight interleaved partial sums (kept in
 * vector registers), combined by a fixed tree, then the tail in order.
 * Ops that fuse a sum (the reduced losses) add through this to keep
 * nb_sum's bits. */
#define NB_SUM_IN_ROW_ORDER(sum, n, TERM)                                              \
    do {                                                                               \
        double l_[8] = {0};                                                            \
        int64_t k_ = 0;                                                                \
        for (; k_ + 8 <= (n); k_ += 8)                                                 \
            for (int j_ = 0; j_ < 8; j_++) l_[j_] += TERM(k_ + j_);                    \
        double s_ = ((l_[0] + l_[1]) + (l_[2] + l_[3])) + ((l_[4] + l_[5]) + (l_[6] + l_[7])); \
        for (; k_ < (n); k_++) s_ += TERM(k_);                                         \
        *(sum) = s_;                                                                   \
    } while (0)

/* y = log_softmax(x) along the last axis of rows contiguous rows of c
 * floats, with nb_log_softmax's bits (reduce.c); for ops that fuse it. */
void nb__log_softmax_rows(const float *x, float *y, int64_t rows, int64_t c);

#endif
