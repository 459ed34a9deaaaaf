/* size_internal.h — checked arithmetic on sizes and nabla's rule for shapes,
 * shared by autograd/ and ops/ (through tensor_internal.h and ops_internal.h)
 * and by nothing a user sees.
 *
 * THE RULE: a shape is valid when every dimension is >= 0 and the product
 * of its nonzero dimensions fits in int64. A zero dimension makes the
 * element count 0 but does not excuse the others: [0, 2^62, 2^62] is
 * refused exactly like [2^62, 2^62, 0], since a reshape, flatten or
 * broadcast of it would have to count what cannot be counted.
 *
 * What the rule buys: every product of some of a valid shape's dimensions
 * (a row-major stride, the outer and inner counts around an axis, a
 * flattened dimension, the size of a reduced or kept part) is at most the
 * product of all its nonzero dimensions, so it fits too, and offsets below
 * numel need no check. Checks are needed only where a size is made from
 * several tensors or from a user's numbers: broadcast shapes, concatenated
 * and stacked dimensions, matmul batches, expand and reshape targets, counts
 * of arange and linspace, bytes to allocate. Those go through the helpers
 * below, and a new shape is validated once, where its tensor is made.
 */
#ifndef NB_SIZE_INTERNAL_H
#define NB_SIZE_INTERNAL_H

#include "nb_autograd.h"

/* Room for any shape nb_shape_str can print: 8 dimensions of up to 20
 * characters ("-9223372036854775808"), 7 commas, brackets, terminator. */
#define NB_SHAPE_CHARS 176

/* *out = a * b; true (and *out unspecified) when the product does not fit
 * in int64. */
static inline bool nb__mul_overflows(int64_t a, int64_t b, int64_t *out) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_mul_overflow(a, b, out);
#else
    bool over;
    if (a > 0) over = b > 0 ? a > INT64_MAX / b : b < INT64_MIN / a;
    else over = b > 0 ? a < INT64_MIN / b : (a != 0 && b < INT64_MAX / a);
    if (!over) *out = a * b;
    return over;
#endif
}

/* *out = a + b; true (and *out unspecified) when the sum does not fit. */
static inline bool nb__add_overflows(int64_t a, int64_t b, int64_t *out) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_add_overflow(a, b, out);
#else
    bool over = b > 0 ? a > INT64_MAX - b : a < INT64_MIN - b;
    if (!over) *out = a + b;
    return over;
#endif
}

/* The element count of a shape under the rule above; false when a
 * dimension is negative or the nonzero dimensions overflow. shape may be
 * NULL when ndim is 0. */
static inline bool nb__shape_numel(int ndim, const int64_t *shape, int64_t *numel) {
    int64_t nonzero = 1;
    bool empty = false;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) return false;
        if (shape[d] == 0) empty = true;
        else if (nb__mul_overflows(nonzero, shape[d], &nonzero)) return false;
    }
    *numel = empty ? 0 : nonzero;
    return true;
}

/* nb__shape_numel, with a message naming who and the shape when the shape
 * (or ndim) is not valid. tensor.c. */
bool nb__check_shape(const char *who, int ndim, const int64_t *shape, int64_t *numel);

/* nb_empty for an op: its messages (invalid shape, out of memory) name who,
 * the public function the user called, rather than nb_empty. tensor.c. */
nb_tensor *nb__empty_for(const char *who, int ndim, const int64_t *shape);

#endif
