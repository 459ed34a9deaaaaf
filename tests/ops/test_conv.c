/* test_conv.c — convolution and pooling: values worked out by hand for small
 * cases, PyTorch's outputs for a few configurations (pasted as literals),
 * larger convolutions and their gradients against a naive double-precision
 * loop, bitwise identical results for 1, 2 and 3 threads, gradcheck and
 * gradgradcheck of conv2d, conv_transpose2d and conv2d_weight_grad for every
 * combination of stride, padding, dilation and groups, the pooling ops'
 * values and gradients, error messages naming the op and the shapes, and
 * NULL propagation. Every test checks that no tensor leaks.
 */
#include "test_util.h"

#include <string.h>

TestSuite(conv, NB_TEST_HOOKS);

static nb_tensor *from(int ndim, const int64_t *shape, const float *data) {
    return nb_from_array(ndim, shape, data);
}
#define FROM(shape, ...) from(shape, (const float[]){__VA_ARGS__})

/* The deterministic inputs of the PyTorch references: element i of a
 * tensor is ((i·a) mod m - off)·scale, exact in float32, so every product
 * and sum below is exact too and the summation order does not matter. */
static nb_tensor *pattern(int ndim, const int64_t *shape, int a, int m, int off, float scale) {
    nb_tensor *t = nb_empty(ndim, shape);
    float *d = nb_data_mut(t);
    for (int64_t i = 0; i < nb_numel(t); i++) d[i] = (float)((i * a) % m - off) * scale;
    return t;
}
#define PX(...) pattern(NB_SHAPE(__VA_ARGS__), 7, 11, 5, 0.25f)
#define PW(...) pattern(NB_SHAPE(__VA_ARGS__), 5, 7, 3, 0.5f)
#define PB(...) pattern(NB_SHAPE(__VA_ARGS__), 1, 3, 1, 0.5f)
#define PG(...) pattern(NB_SHAPE(__VA_ARGS__), 3, 5, 2, 0.5f)

/* ---- values by hand --------------------------------------------------------------- */

Test(conv, two_by_two_kernel_by_hand) {
    /* x = 1 2 3    w = 1 0   y[i][j] = x[i][j] + x[i+1][j+1] + b
     *     4 5 6        0 1   y = 1+5 2+6 = 6  8   (+0.5)
     *     7 8 9              4+8 5+9   12 14 */
    nb_tensor *x = FROM(NB_SHAPE(1, 1, 3, 3), 1, 2, 3, 4, 5, 6, 7, 8, 9);
    nb_tensor *w = FROM(NB_SHAPE(1, 1, 2, 2), 1, 0, 0, 1);
    nb_tensor *y = nb_conv2d(x, w, NULL, NULL);
    EXPECT_SHAPE(y, 1, 1, 2, 2);
    EXPECT_VALUES(y, 0, 6, 8, 12, 14);
    EXPECT_VALUES(nb_conv2d(x, w, FROM(NB_SHAPE(1), 0.5f), NULL), 0, 6.5f, 8.5f, 12.5f, 14.5f);
}

Test(conv, stride_and_padding_by_hand) {
    /* x as above padded with a ring of zeros, 3x3 kernel of ones, stride 2:
     * oH = (3 + 2 - 3)/2 + 1 = 2; each output sums the 2x2 corner block of x
     * that its window covers: 1+2+4+5 = 12, 2+3+5+6 = 16, 4+5+7+8 = 24,
     * 5+6+8+9 = 28. */
    nb_tensor *x = FROM(NB_SHAPE(1, 1, 3, 3), 1, 2, 3, 4, 5, 6, 7, 8, 9);
    nb_tensor *y = nb_conv2d(x, nb_ones(NB_SHAPE(1, 1, 3, 3)), NULL,
                             &(nb_conv2d_opts){.stride = {2, 2}, .padding = {1, 1}});
    EXPECT_SHAPE(y, 1, 1, 2, 2);
    EXPECT_VALUES(y, 0, 12, 16, 24, 28);
}

Test(conv, dilation_by_hand) {
    /* a 2x2 kernel of ones dilated by 2 covers the corners of a 3x3 window:
     * 1 + 3 + 7 + 9 = 20, one output */
    nb_tensor *x = FROM(NB_SHAPE(1, 1, 3, 3), 1, 2, 3, 4, 5, 6, 7, 8, 9);
    nb_tensor *y = nb_conv2d(x, nb_ones(NB_SHAPE(1, 1, 2, 2)), NULL,
                             &(nb_conv2d_opts){.dilation = {2, 2}});
    EXPECT_SHAPE(y, 1, 1, 1, 1);
    EXPECT_VALUES(y, 0, 20);
}

Test(conv, groups_by_hand) {
    /* two channels, two groups: output o sees only channel o.
     * channel 0 = 1 2 / 3 4 with w0 = [[1, -1]]: 1-2 = -1, 3-4 = -1
     * channel 1 = 5 6 / 7 8 with w1 = [[2, 1]]:  10+6 = 16, 14+8 = 22 */
    nb_tensor *x = FROM(NB_SHAPE(1, 2, 2, 2), 1, 2, 3, 4, 5, 6, 7, 8);
    nb_tensor *w = FROM(NB_SHAPE(2, 1, 1, 2), 1, -1, 2, 1);
    nb_tensor *y = nb_conv2d(x, w, NULL, &(nb_conv2d_opts){.groups = 2});
    EXPECT_SHAPE(y, 1, 2, 2, 1);
    EXPECT_VALUES(y, 0, -1, -1, 16, 22);
}

Test(conv, transpose_by_hand) {
    /* u = [1 2] (1x2), w = [1 10] (1x2 kernel), stride 2: each input pixel
     * stamps its kernel at 2·j: out = 1·1, 1·10, 2·1, 2·10 = 1 10 2 20;
     * with output_padding 1 a fifth column, reached by no window: 0 */
    nb_tensor *u = FROM(NB_SHAPE(1, 1, 1, 2), 1, 2), *w = FROM(NB_SHAPE(1, 1, 1, 2), 1, 10);
    nb_tensor *z = nb_conv_transpose2d(u, w, NULL, &(nb_conv2d_opts){.stride = {1, 2}});
    EXPECT_SHAPE(z, 1, 1, 1, 4);
    EXPECT_VALUES(z, 0, 1, 10, 2, 20);
    z = nb_conv_transpose2d(u, w, NULL,
                            &(nb_conv2d_opts){.stride = {1, 2}, .output_padding = {0, 1}});
    EXPECT_SHAPE(z, 1, 1, 1, 5);
    EXPECT_VALUES(z, 0, 1, 10, 2, 20, 0);
}

Test(conv, weight_grad_by_hand) {
    /* x = 1 2 3 (one row), g = 1 -1 (conv output with a 1x2 kernel):
     * dw[j] = sum_p g[p]·x[p + j] = 1·1 - 1·2 = -1, 1·2 - 1·3 = -1 */
    nb_tensor *x = FROM(NB_SHAPE(1, 1, 1, 3), 1, 2, 3), *g = FROM(NB_SHAPE(1, 1, 1, 2), 1, -1);
    nb_tensor *dw = nb_conv2d_weight_grad(x, g, 1, 2, NULL);
    EXPECT_SHAPE(dw, 1, 1, 1, 2);
    EXPECT_VALUES(dw, 0, -1, -1);
}

/* ---- PyTorch's outputs --------------------------------------------------------------
 * Computed with PyTorch 1.13 (torch.nn.functional) on the pattern inputs
 * above and pasted here; the generating calls are in each comment. */

Test(conv, pytorch_stride_padding_dilation_bias_and_gradients) {
    /* x = PX(2,2,5,4), w = PW(3,2,3,2), b = PB(3)
     * y = F.conv2d(x, w, b, stride=(2,1), padding=(1,0), dilation=(1,2))
     * y.backward(PG(2,3,3,2)) -> x.grad, w.grad, b.grad */
    nb_tensor *x = nb_set_requires_grad(PX(2, 2, 5, 4), true);
    nb_tensor *w = nb_set_requires_grad(PW(3, 2, 3, 2), true);
    nb_tensor *b = nb_set_requires_grad(PB(3), true);
    nb_tensor *y = nb_conv2d(x, w, b, &(nb_conv2d_opts){.stride = {2, 1}, .padding = {1, 0},
                                                        .dilation = {1, 2}});
    EXPECT_SHAPE(y, 2, 3, 3, 2);
    EXPECT_VALUES(y, 1e-6, 2.5, -5.5, 3.625, 2.25, 0.625, 3.125, 1.375, 1.125, -0.25, -3.875,
                  1.125, -6.625, 1.125, 1.625, 2, 5.75, 2.5, 3.75, -6.75, 3.125, -3.25, 2.25, 0.25,
                  -5.5, 2.375, 0.75, 1.875, 2.375, 0.5, 3.75, 1.875, 1, 3.5, -1, 1.625, -5.375);
    nb_tensor *in[3] = {x, w, b}, *gr[3], *g = PG(2, 3, 3, 2);
    cr_assert_eq(nb_grad(1, &y, &g, 3, in, gr, NULL), 0, "%s", nb_error());
    EXPECT_VALUES(gr[0], 1e-6, -1, 1.25, 1.75, -1.5, 0.5, -1.25, -2.5, 1.25, -1.5, -0.5, 1.5, -0.5,
                  -1.75, 5.25, 0, -2.5, 1.75, -1, -1.25, 1.75, -2, 2.25, -1, 1.25, 3.5, -2, 0.5,
                  -1.25, -1, -0.5, -1.5, -0.5, 0, 0.75, -1.75, 5.25, 1.25, -2, 1.75, -1, -0.5, 1.75,
                  -0.5, -1.25, 5.25, -2.75, -2.5, 3.75, -1, 1.25, 1.75, -1.5, 0.5, -1.25, -2.5,
                  1.25, -1.5, -0.5, 1.5, -0.5, -0.5, 1.25, -0.5, 1.75, 0.75, -2.25, 5.25, -2.75,
                  -2, 2.25, -1, 1.25, 3.5, -2, 0.5, -1.25, -1, -0.5, -1.5, -0.5);
    EXPECT_VALUES(gr[1], 1e-6, 2.375, -0.75, 0.375, 0.375, -1.25, -2.25, 1.375, 2.375, -2.375,
                  0.375, -0.25, -1.25, -2.375, -1.25, 1.375, 0.375, -0.375, 1, 0.625, -2.375,
                  -1.75, 1.375, -0.375, -0.375, 1.625, 3.25, -1.375, 1.625, 2.375, -0.75, -1.375,
                  1.625, 3.875, -1.375, 1.375, 2.375);
    EXPECT_VALUES(gr[2], 1e-6, 0, 0.5, -1.5);
}

Test(conv, pytorch_groups) {
    /* F.conv2d(PX(1,4,5,5), PW(6,2,3,3), None, stride=2, padding=1, groups=2) */
    nb_tensor *y = nb_conv2d(PX(1, 4, 5, 5), PW(6, 2, 3, 3), NULL,
                             &(nb_conv2d_opts){.stride = {2, 2}, .padding = {1, 1}, .groups = 2});
    EXPECT_SHAPE(y, 1, 6, 3, 3);
    EXPECT_VALUES(y, 1e-6, -1.25, -1.125, -2.25, -1.375, -1.625, 4.5, 0.25, -1.625, -0.5, -3.375,
                  1.875, -0.375, 5, 3.5, -1.25, -1, -3.25, 1, -1.125, -1.25, 3.25, -0.875, -1.875,
                  0, -0.5, -1.375, -0.125, -1.5, -0.25, 1, 1.5, -5.375, -1.25, 1.75, -0.5, -0.375,
                  1.75, -3.125, -0.5, 1.5, 0.5, 4.5, -1.5, 2.5, -2.25, 0.625, -1.625, -0.25, 5,
                  -0.625, -1.125, -3, -0.625, -2.375);
}

Test(conv, pytorch_conv_transpose) {
    /* F.conv_transpose2d(PX(1,2,2,3), PW(2,1,3,2), PB(2), stride=(2,3), padding=(1,0),
     *                    output_padding=(1,2), groups=2) */
    nb_tensor *z = nb_conv_transpose2d(PX(1, 2, 2, 3), PW(2, 1, 3, 2), PB(2),
                                       &(nb_conv2d_opts){.stride = {2, 3}, .padding = {1, 0},
                                                         .output_padding = {1, 2}, .groups = 2});
    EXPECT_SHAPE(z, 1, 2, 4, 10);
    EXPECT_VALUES(z, 1e-6, -0.5, 0.75, -0.5, -0.5, -1, -0.5, -0.5, 0, -0.5, -0.5, -4.25, 0.125,
                  -0.5, -0.125, 0, -0.5, -0.125, -1.5, -0.5, -0.5, -0.5, -1.75, -0.5, -0.5, -0.75,
                  -0.5, -0.5, 0.25, -0.5, -0.5, 1.375, 0.125, -0.5, -0.125, -0.375, -0.5, -1.625,
                  -0.875, -0.5, -0.5, 1, 0, 0, 0, 0, 0, -1, 0, 0, 0, -1.375, 0.375, 0, 0.125, 0.375,
                  0, 1.625, 0.375, 0, 0, 0.75, 0, 0, -0.25, 0, 0, -1.25, 0, 0, 0, -0.75, 1.125, 0,
                  0.25, -0.375, 0, 1.25, -1.875, 0, 0);
}

Test(conv, pytorch_max_pool_with_ties) {
    /* x = PX(1,2,5,5) has many equal values, so PyTorch's first-index rule
     * decides where the gradient goes:
     * y = F.max_pool2d(x, 3, 2, 1); y.backward(ones) -> x.grad */
    nb_tensor *x = nb_set_requires_grad(PX(1, 2, 5, 5), true);
    nb_tensor *y = nb_max_pool2d(x, 3, 3, &(nb_pool2d_opts){.stride = {2, 2}, .padding = {1, 1}});
    EXPECT_SHAPE(y, 1, 2, 3, 3);
    EXPECT_VALUES(y, 0, 1, 1.25, 1.25, 1, 1, 1.25, 0.75, 1, 0.5, 1.25, 1, 1, 1.25, 1.25, 1, 0.5,
                  1.25, 0.25);
    nb_tensor *gx;
    cr_assert_eq(nb_grad(1, &y, (nb_tensor *[]){nb_ones_like(y)}, 1, &x, &gx, NULL), 0, "%s",
                 nb_error());
    EXPECT_VALUES(gx, 0, 0, 0, 0, 2, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0,
                  1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 1, 0);
}

/* max_pool2d's input gradient is an op of its own (max_pool2d_grad): the
 * gradient g added at each window's argmax. Windows overlapping at stride 1
 * share the argmax 9 at the centre of
 *   1 2 3
 *   4 9 5
 *   6 7 8
 * so all four of g's values land there. With create_graph it is a
 * function of g, checked to first and second order (x's values are far
 * apart, so finite differences never move an argmax), and its forward-mode
 * rule gives, for a tangent v of g, v added at the same places. */
static nb_tensor *pool_input_grad(nb_tensor *const *in, void *ctx) {
    nb_tensor *x = ctx, *gx = NULL;
    nb_tensor *y = nb_max_pool2d(x, 2, 2, &(nb_pool2d_opts){.stride = {1, 1}});
    nb_grad(1, &y, &in[0], 1, &x, &gx, &(nb_grad_opts){.create_graph = true});
    return gx;
}

static int pool_input_grad_jvp(nb_tensor *const *in, nb_tensor **out, void *ctx) {
    out[0] = pool_input_grad(in, ctx);
    return out[0] ? 0 : -1;
}

Test(conv, max_pool_gradient_is_a_differentiable_op) {
    nb_tensor *x = nb_set_requires_grad(FROM(NB_SHAPE(1, 1, 3, 3), 1, 2, 3, 4, 9, 5, 6, 7, 8), true);
    nb_tensor *g = nb_set_requires_grad(FROM(NB_SHAPE(1, 1, 2, 2), 1, 2, 3, 4), true);
    nb_tensor *gx = pool_input_grad(&g, x);
    EXPECT_SHAPE(gx, 1, 1, 3, 3);
    EXPECT_VALUES(gx, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0);
    nb_tensor *big = nb_set_requires_grad(
        nb_mul_scalar(nb_reshape(nb_arange(0, 2 * 3 * 6 * 5, 1), NB_SHAPE(2, 3, 6, 5)), 0.5f), true);
    nb_tensor *gb = nb_test_leaf(-1, 1, NB_SHAPE(2, 3, 5, 4));
    nb_test_gradcheck(pool_input_grad, big, 1, &gb, true);
    nb_tensor *out, *tangent, *v = FROM(NB_SHAPE(1, 1, 2, 2), 1, -1, 0.5f, 2);
    cr_assert_eq(nb_jvp(pool_input_grad_jvp, x, 1, &g, &v, 1, &out, &tangent), 0, "%s", nb_error());
    EXPECT_VALUES(out, 0, 0, 0, 0, 0, 10, 0, 0, 0, 0);
    EXPECT_VALUES(tangent, 0, 0, 0, 0, 0, 2.5f, 0, 0, 0, 0);
}

Test(conv, pytorch_avg_pool_counts_padding) {
    /* F.avg_pool2d(PX(1,1,5,5), 3, 2, 1): the corner windows hold 4 real
     * pixels but divide by 9 */
    nb_tensor *y = nb_avg_pool2d(PX(1, 1, 5, 5), 3, 3,
                                 &(nb_pool2d_opts){.stride = {2, 2}, .padding = {1, 1}});
    EXPECT_SHAPE(y, 1, 1, 3, 3);
    EXPECT_VALUES(y, 1e-6, -0.055555556, 0.138888896, 0.138888896, -0.194444448, -0.111111112,
                  -0.055555556, 0, -0.0833333358, -0.111111112);
}

/* ---- pooling by hand ------------------------------------------------------------------ */

Test(conv, max_pool_by_hand) {
    /* 2x2 windows, stride 2 (the default) over
     *   1 5 | 2 0      max 5 at (0,1), 4 at (1,3)... per window:
     *   3 4 | 4 1      [1 5 3 4] -> 5, [2 0 4 1] -> 4
     *   ----+----      [0 7 7 2] -> 7 (first of the tie: (2,1))
     *   0 7 | 6 6      [6 6 1 6] -> 6 (first: (2,2))
     *   7 2 | 1 6 */
    nb_tensor *x = nb_set_requires_grad(
        FROM(NB_SHAPE(1, 1, 4, 4), 1, 5, 2, 0, 3, 4, 4, 1, 0, 7, 6, 6, 7, 2, 1, 6), true);
    nb_tensor *y = nb_max_pool2d(x, 2, 2, NULL);
    EXPECT_SHAPE(y, 1, 1, 2, 2);
    EXPECT_VALUES(y, 0, 5, 4, 7, 6);
    nb_tensor *g = FROM(NB_SHAPE(1, 1, 2, 2), 10, 20, 30, 40), *gx;
    cr_assert_eq(nb_grad(1, &y, &g, 1, &x, &gx, NULL), 0, "%s", nb_error());
    EXPECT_VALUES(gx, 0, 0, 10, 0, 0, 0, 0, 20, 0, 0, 30, 40, 0, 0, 0, 0, 0);
}

Test(conv, max_pool_padding_never_wins_and_nan_propagates) {
    /* all negative: a zero from the padding would win if padding were 0 */
    nb_tensor *x = FROM(NB_SHAPE(1, 1, 2, 2), -1, -2, -3, -4);
    EXPECT_VALUES(nb_max_pool2d(x, 2, 2, &(nb_pool2d_opts){.stride = {1, 1}, .padding = {1, 1}}),
                  0, -1, -1, -2, -1, -1, -2, -3, -3, -4);
    nb_tensor *n = FROM(NB_SHAPE(1, 1, 1, 3), 1, NAN, 0);
    nb_tensor *y = nb_max_pool2d(n, 1, 3, NULL);
    cr_assert(isnan(nb_data(y)[0]));
}

/* x, 5x5 with ties:            PyTorch, then x.grad from y.backward(ones):
 *    0  7  3 10  6
 *    2  9  5  1  8
 *    4  0  7  3 10
 *    6  2  9  5  1
 *    8  4  0  7  3 */
static nb_tensor *ties5x5(void) {
    nb_tensor *x = nb_empty(NB_SHAPE(1, 1, 5, 5));
    for (int i = 0; i < 25; i++) nb_data_mut(x)[i] = (float)(i * 7 % 11);
    return nb_set_requires_grad(x, true);
}

static void expect_pool_grad(nb_tensor *y, nb_tensor *x, const float *want) {
    nb_tensor *gx;
    cr_assert_eq(nb_grad(1, &y, (nb_tensor *[]){nb_ones_like(y)}, 1, &x, &gx, NULL), 0, "%s",
                 nb_error());
    nb_test_expect_values(gx, 1e-6, want, 25);
}

Test(conv, pytorch_pool_ceil_mode) {
    /* F.max_pool2d(x, 2, 2, 0, ceil_mode=True): the last row and column of
     * windows hang over the edge and take what is inside */
    nb_tensor *x = ties5x5();
    nb_tensor *y = nb_max_pool2d(x, 2, 2, &(nb_pool2d_opts){.ceil_mode = true});
    EXPECT_SHAPE(y, 1, 1, 3, 3);
    EXPECT_VALUES(y, 0, 9, 10, 8, 6, 9, 10, 8, 7, 3);
    expect_pool_grad(y, x, (const float[]){0, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 1, 0,
                                           0, 1, 0, 0, 1, 1});
    /* F.avg_pool2d(x, 2, 2, 0, ceil_mode=True): those windows divide by
     * what they hold */
    y = nb_avg_pool2d(x, 2, 2, &(nb_pool2d_opts){.ceil_mode = true});
    EXPECT_VALUES(y, 1e-6, 4.5, 4.75, 7, 3, 6, 5.5, 6, 3.5, 3);
    expect_pool_grad(y, x, (const float[]){0.25, 0.25, 0.25, 0.25, 0.5, 0.25, 0.25, 0.25, 0.25, 0.5,
                                           0.25, 0.25, 0.25, 0.25, 0.5, 0.25, 0.25, 0.25, 0.25, 0.5,
                                           0.5, 0.5, 0.5, 0.5, 1});
    /* F.avg_pool2d(arange(36).view(1,1,6,6), 3, 2, 1, ceil_mode=True):
     * padding counts in the divisor, the overhang past it does not */
    nb_tensor *r = nb_arange(0, 36, 1);
    y = nb_avg_pool2d(nb_reshape(r, NB_SHAPE(1, 1, 6, 6)), 3, 3,
                      &(nb_pool2d_opts){.stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true});
    EXPECT_SHAPE(y, 1, 1, 4, 4);
    EXPECT_VALUES(y, 1e-5, 1.5555556, 3.3333333, 4.6666665, 2.6666667, 8.333333, 14, 16, 8.5,
                  16.333334, 26, 28, 14.5, 10.166667, 16, 17, 8.75);
    y = nb_max_pool2d(nb_reshape(r, NB_SHAPE(1, 1, 6, 6)), 3, 3,
                      &(nb_pool2d_opts){.stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true});
    EXPECT_VALUES(y, 0, 7, 9, 11, 11, 19, 21, 23, 23, 31, 33, 35, 35, 31, 33, 35, 35);
}

Test(conv, pytorch_max_pool_dilation) {
    /* F.max_pool2d(x, 2, 1, 1, dilation=2): taps two apart */
    nb_tensor *x = ties5x5();
    nb_tensor *y = nb_max_pool2d(
        x, 2, 2, &(nb_pool2d_opts){.stride = {1, 1}, .padding = {1, 1}, .dilation = {2, 2}});
    EXPECT_SHAPE(y, 1, 1, 5, 5);
    EXPECT_VALUES(y, 0, 9, 5, 9, 8, 1, 7, 7, 10, 10, 10, 9, 9, 9, 9, 5, 4, 8, 7, 10, 7, 2, 9, 5, 9, 5);
    expect_pool_grad(y, x, (const float[]){0, 1, 0, 2, 0, 0, 4, 1, 1, 1, 0, 0, 1, 0, 2, 0, 1, 4, 3,
                                           0, 1, 1, 0, 2, 0});
    /* a dilated window that steps over a 1-wide input holds nothing */
    cr_assert_null(nb_max_pool2d(nb_zeros(NB_SHAPE(1, 1, 1, 1)), 2, 2,
                                 &(nb_pool2d_opts){.stride = {1, 1}, .padding = {1, 1}, .dilation = {2, 2}}));
    EXPECT_ERROR("nb_max_pool2d", "holds no element");
    cr_assert_null(nb_avg_pool2d(x, 2, 2, &(nb_pool2d_opts){.dilation = {2, 2}}));
    EXPECT_ERROR("nb_avg_pool2d", "no dilation");
}

Test(conv, pytorch_max_pool_2x2_takes_the_last_nan) {
    /* F.max_pool2d(x, 2) with x [[1, nan, nan, 0], [5, 2, 3, nan]]: the
     * first window's one NaN, the second window's last */
    nb_tensor *x = nb_set_requires_grad(FROM(NB_SHAPE(1, 1, 2, 4), 1, NAN, NAN, 0, 5, 2, 3, NAN), true);
    nb_tensor *y = nb_max_pool2d(x, 2, 2, NULL);
    cr_assert(isnan(nb_data(y)[0]) && isnan(nb_data(y)[1]));
    nb_tensor *gx;
    cr_assert_eq(nb_grad(1, &y, (nb_tensor *[]){nb_ones_like(y)}, 1, &x, &gx, NULL), 0, "%s",
                 nb_error());
    EXPECT_VALUES(gx, 0, 0, 1, 0, 0, 0, 0, 0, 1);
}

/* The 2x2/stride-2 path handles four windows at a time: against the rule
 * written as a plain loop (row-major, take v when v > max or v is NaN) on
 * planes wide enough for it, with ties and NaNs, values and gradient. */
Test(conv, max_pool_2x2_against_a_loop) {
    enum { C = 3, H = 6, W = 22, OH = H / 2, OW = W / 2 };
    nb_tensor *x = nb_empty(NB_SHAPE(1, C, H, W));
    float *px = nb_data_mut(x);
    for (int i = 0; i < C * H * W; i++) px[i] = i % 17 == 5 ? NAN : (float)((i * 7) % 3);
    nb_set_requires_grad(x, true);
    nb_tensor *y = nb_max_pool2d(x, 2, 2, NULL), *gx;
    EXPECT_SHAPE(y, 1, C, OH, OW);
    cr_assert_eq(nb_grad(1, &y, (nb_tensor *[]){nb_ones_like(y)}, 1, &x, &gx, NULL), 0, "%s",
                 nb_error());
    float want_g[C * H * W] = {0};
    for (int c = 0; c < C; c++)
        for (int oy = 0; oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++) {
                int best = (c * H + 2 * oy) * W + 2 * ox;
                for (int t = 1; t < 4; t++) {
                    int k = (c * H + 2 * oy + t / 2) * W + 2 * ox + t % 2;
                    if (px[k] > px[best] || isnan(px[k])) best = k;
                }
                float got = nb_data(y)[(c * OH + oy) * OW + ox];
                cr_assert(got == px[best] || (isnan(got) && isnan(px[best])),
                          "window (%d,%d,%d): %g, expected %g", c, oy, ox, got, px[best]);
                want_g[best] += 1;
            }
    nb_test_expect_values(gx, 0, want_g, C * H * W);
}

Test(conv, avg_pool_by_hand) {
    /* 2x2 windows of 1 2 3 4 / 5 6 7 8: (1+2+5+6)/4 = 3.5, (3+4+7+8)/4 = 5.5 */
    nb_tensor *x = FROM(NB_SHAPE(1, 1, 2, 4), 1, 2, 3, 4, 5, 6, 7, 8);
    nb_tensor *y = nb_avg_pool2d(x, 2, 2, NULL);
    EXPECT_SHAPE(y, 1, 1, 1, 2);
    EXPECT_VALUES(y, 1e-6, 3.5, 5.5);
}

Test(conv, adaptive_avg_pool) {
    nb_tensor *x = FROM(NB_SHAPE(1, 2, 2, 4), 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 8);
    nb_tensor *y = nb_adaptive_avg_pool2d(x, 1, 1);
    EXPECT_SHAPE(y, 1, 2, 1, 1);
    EXPECT_VALUES(y, 1e-6, 4.5, 1); /* 36/8, 8/8 */
    y = nb_adaptive_avg_pool2d(x, 1, 2);
    EXPECT_SHAPE(y, 1, 2, 1, 2);
    EXPECT_VALUES(y, 1e-6, 3.5, 5.5, 0, 2);
}

/* ---- against a naive loop -------------------------------------------------------------
 * y[n][o][oy][ox] = b[o] + sum over c in o's group, i, j of
 *   w[o][c][i][j] · x[n][gc + c][oy·sh - ph + i·dh][ox·sw - pw + j·dw], in double.
 * The adjoints dx and dw are accumulated by the same loop. */

typedef struct cfg {
    int64_t n, c, h, w, o, kh, kw;
    nb_conv2d_opts o2;
    bool bias;
} cfg;

static int64_t out_size(int64_t in, int64_t k, int s, int p, int d) {
    return (in + 2 * p - d * (k - 1) - 1) / s + 1;
}

static void naive(const cfg *k, const float *x, const float *w, const float *b, const float *g,
                  double *y, double *dx, double *dw, double *mx, double *mw) {
    int sh = k->o2.stride[0] ? k->o2.stride[0] : 1, sw = k->o2.stride[1] ? k->o2.stride[1] : 1;
    int dh = k->o2.dilation[0] ? k->o2.dilation[0] : 1, dwl = k->o2.dilation[1] ? k->o2.dilation[1] : 1;
    int ph = k->o2.padding[0], pw = k->o2.padding[1], groups = k->o2.groups ? k->o2.groups : 1;
    int64_t oh = out_size(k->h, k->kh, sh, ph, dh), ow = out_size(k->w, k->kw, sw, pw, dwl);
    int64_t cg = k->c / groups, og = k->o / groups;
    memset(dx, 0, sizeof(double) * (size_t)(k->n * k->c * k->h * k->w));
    memset(dw, 0, sizeof(double) * (size_t)(k->o * cg * k->kh * k->kw));
    memset(mx, 0, sizeof(double) * (size_t)(k->n * k->c * k->h * k->w));
    memset(mw, 0, sizeof(double) * (size_t)(k->o * cg * k->kh * k->kw));
    for (int64_t n = 0; n < k->n; n++)
        for (int64_t o = 0; o < k->o; o++)
            for (int64_t oy = 0; oy < oh; oy++)
                for (int64_t ox = 0; ox < ow; ox++) {
                    int64_t yi = ((n * k->o + o) * oh + oy) * ow + ox;
                    double s = b ? b[o] : 0;
                    for (int64_t c = 0; c < cg; c++)
                        for (int64_t i = 0; i < k->kh; i++)
                            for (int64_t j = 0; j < k->kw; j++) {
                                int64_t iy = oy * sh - ph + i * dh, ix = ox * sw - pw + j * dwl;
                                if (iy < 0 || iy >= k->h || ix < 0 || ix >= k->w) continue;
                                int64_t xi = ((n * k->c + o / og * cg + c) * k->h + iy) * k->w + ix;
                                int64_t wi = ((o * cg + c) * k->kh + i) * k->kw + j;
                                s += (double)w[wi] * x[xi];
                                dx[xi] += (double)w[wi] * g[yi];
                                dw[wi] += (double)x[xi] * g[yi];
                                mx[xi] += fabs((double)w[wi] * g[yi]);
                                mw[wi] += fabs((double)x[xi] * g[yi]);
                            }
                    y[yi] = s;
                }
}

/* Within tol relative, plus, for a gradient summed over many images and
 * positions, 1e-6 of the sum of its terms' magnitudes (mag; NULL for none):
 * float rounding grows with the length of the sum, a wrong or missing term
 * is of the order of one term. */
static void expect_close(const char *what, const nb_tensor *t, const double *ref, const double *mag,
                         double tol) {
    cr_assert_not_null(t, "%s", nb_error() ? nb_error() : "NULL");
    const float *d = nb_data(t);
    for (int64_t i = 0; i < nb_numel(t); i++)
        cr_assert(fabs(d[i] - ref[i]) <= tol * (1 + fabs(ref[i])) + (mag ? 1e-6 * mag[i] : 0),
                  "%s: element %lld is %.8g, expected %.8g", what, (long long)i, (double)d[i], ref[i]);
}

static void check_against_naive(cfg k) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(k.n, k.c, k.h, k.w));
    nb_tensor *w = nb_test_leaf(-1, 1, NB_SHAPE(k.o, k.c / (k.o2.groups ? k.o2.groups : 1), k.kh, k.kw));
    nb_tensor *b = k.bias ? nb_test_leaf(-1, 1, NB_SHAPE(k.o)) : NULL;
    nb_tensor *y = nb_conv2d(x, w, b, &k.o2);
    cr_assert_not_null(y, "%s", nb_error());
    nb_tensor *g = nb_uniform(NULL, -1, 1, nb_ndim(y), nb_shape(y)), *in[2] = {x, w}, *gr[2];
    cr_assert_eq(nb_grad(1, &y, &g, 2, in, gr, NULL), 0, "%s", nb_error());
    double *ry = malloc(sizeof(double) * (size_t)nb_numel(y));
    double *rx = malloc(sizeof(double) * (size_t)nb_numel(x));
    double *rw = malloc(sizeof(double) * (size_t)nb_numel(w));
    double *mx = malloc(sizeof(double) * (size_t)nb_numel(x));
    double *mw = malloc(sizeof(double) * (size_t)nb_numel(w));
    naive(&k, nb_data(x), nb_data(w), b ? nb_data(b) : NULL, nb_data(g), ry, rx, rw, mx, mw);
    expect_close("y", y, ry, NULL, 1e-5);
    expect_close("dx", gr[0], rx, mx, 1e-5);
    expect_close("dw", gr[1], rw, mw, 1e-5);
    free(ry);
    free(rx);
    free(rw);
    free(mx);
    free(mw);
}

Test(conv, grouped_strided_dilated_against_naive_loop) {
    check_against_naive((cfg){3, 6, 17, 15, 8, 3, 4,
                              {.stride = {2, 1}, .padding = {1, 2}, .dilation = {2, 1}, .groups = 2},
                              true});
}

Test(conv, layer_sized_against_naive_loop) {
    /* the second conv of the Fashion-MNIST network, on 3 images: products
     * large enough for the blocked, threaded gemm */
    check_against_naive((cfg){3, 32, 14, 14, 64, 3, 3, {.padding = {1, 1}}, true});
}

Test(conv, first_layer_against_naive_loop) {
    /* one input channel, 9 taps and 16 filters: the weight gradient is
     * formed transposed (taps x filters), on 17 images: 16 chunks */
    check_against_naive((cfg){17, 1, 12, 11, 16, 3, 3, {.padding = {1, 1}}, true});
    check_against_naive((cfg){3, 2, 9, 9, 12, 2, 2, {.stride = {2, 2}, .groups = 2}, false});
}

Test(conv, several_images_per_chunk_against_naive_loop) {
    /* batches of more than 16 images: the weight gradient's chunks hold two
     * or three images, whose positions make one depth that its blocks cut
     * across image boundaries (128 and 100 positions an image), in both
     * orientations, with stride, dilation and groups */
    check_against_naive((cfg){40, 6, 17, 15, 8, 3, 4,
                              {.stride = {2, 1}, .padding = {1, 2}, .dilation = {2, 1}, .groups = 2},
                              true});
    check_against_naive((cfg){37, 8, 10, 10, 24, 3, 3, {.padding = {1, 1}}, false});
    check_against_naive((cfg){37, 2, 10, 10, 24, 3, 3, {.padding = {1, 1}}, false});
}

Test(conv, one_by_one_against_naive_loop) {
    check_against_naive((cfg){2, 5, 6, 7, 4, 1, 1, {.groups = 1}, true});          /* no col matrix */
    check_against_naive((cfg){2, 5, 6, 7, 4, 1, 1, {.stride = {2, 3}}, false});
}

Test(conv, depthwise_against_naive_loop) {
    check_against_naive((cfg){2, 4, 9, 8, 8, 3, 3, {.padding = {1, 1}, .groups = 4}, false});
}

/* ---- thread count ----------------------------------------------------------------------- */

static bool bitwise_equal(const nb_tensor *x, const nb_tensor *y) {
    return x && y && nb_numel(x) == nb_numel(y) &&
           memcmp(nb_data(x), nb_data(y), sizeof(float) * (size_t)nb_numel(x)) == 0;
}

/* a batch of 8 (spread over the pool by image) and one of 2 (fewer images
 * than threads: each image's gemm is spread instead) */
static void same_bits(int64_t n) {
    int was = nb_get_num_threads();
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(n, 16, 20, 20));
    nb_tensor *w = nb_test_leaf(-1, 1, NB_SHAPE(48, 16, 3, 3));
    nb_tensor *b = nb_test_leaf(-1, 1, NB_SHAPE(48));
    nb_tensor *out[3][7];
    for (int r = 0; r < 3; r++) {
        nb_set_num_threads(r + 1);
        nb_tensor *y = nb_conv2d(x, w, b, &(nb_conv2d_opts){.padding = {1, 1}});
        nb_tensor *p = nb_max_pool2d(y, 2, 2, NULL), *in[3] = {x, w, b}, *gr[3];
        nb_tensor *t = nb_conv_transpose2d(y, w, NULL, &(nb_conv2d_opts){.padding = {1, 1}});
        /* a first layer, whose weight gradient is formed transposed */
        nb_tensor *f = nb_conv2d_weight_grad(nb_slice(x, 1, 0, 1, 1), y, 3, 3,
                                             &(nb_conv2d_opts){.padding = {1, 1}});
        cr_assert_eq(nb_grad(1, &p, &p, 3, in, gr, NULL), 0, "%s", nb_error());
        out[r][0] = y, out[r][1] = p, out[r][2] = gr[0], out[r][3] = gr[1], out[r][4] = gr[2];
        out[r][5] = t;
        out[r][6] = f;
    }
    nb_set_num_threads(was);
    for (int r = 1; r < 3; r++)
        for (int i = 0; i < 7; i++)
            cr_assert(bitwise_equal(out[0][i], out[r][i]), "result %d differs with %d threads", i,
                      r + 1);
}

Test(conv, same_bits_for_any_thread_count_by_image) { same_bits(8); }
Test(conv, same_bits_for_any_thread_count_within_image) { same_bits(2); }

/* ---- gradcheck and gradgradcheck --------------------------------------------------------
 * Every configuration runs through the three ops, each checked to first and
 * second order in all its inputs. */

typedef enum which { CONV, TRANSPOSE, WEIGHT_GRAD } which;
typedef struct gc_ctx {
    which op;
    nb_conv2d_opts o;
    int64_t kh, kw;
    bool bias; /* in[2] exists */
} gc_ctx;

static nb_tensor *conv_fn(nb_tensor *const *in, void *ctx) {
    const gc_ctx *c = ctx;
    switch (c->op) {
    case CONV: return nb_conv2d(in[0], in[1], c->bias ? in[2] : NULL, &c->o);
    case TRANSPOSE: return nb_conv_transpose2d(in[0], in[1], c->bias ? in[2] : NULL, &c->o);
    default: return nb_conv2d_weight_grad(in[0], in[1], c->kh, c->kw, &c->o);
    }
}

static void check_config(cfg k) {
    int groups = k.o2.groups ? k.o2.groups : 1;
    int sh = k.o2.stride[0] ? k.o2.stride[0] : 1, sw = k.o2.stride[1] ? k.o2.stride[1] : 1;
    int dh = k.o2.dilation[0] ? k.o2.dilation[0] : 1, dw = k.o2.dilation[1] ? k.o2.dilation[1] : 1;
    int64_t oh = out_size(k.h, k.kh, sh, k.o2.padding[0], dh);
    int64_t ow = out_size(k.w, k.kw, sw, k.o2.padding[1], dw);
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(k.n, k.c, k.h, k.w));
    nb_tensor *w = nb_test_leaf(-1, 1, NB_SHAPE(k.o, k.c / groups, k.kh, k.kw));
    nb_tensor *gy = nb_test_leaf(-1, 1, NB_SHAPE(k.n, k.o, oh, ow));
    /* conv2d(x, w, b) */
    gc_ctx c = {CONV, k.o2, k.kh, k.kw, k.bias};
    nb_tensor *in[3] = {x, w, k.bias ? nb_test_leaf(-1, 1, NB_SHAPE(k.o)) : NULL};
    nb_test_gradcheck(conv_fn, &c, k.bias ? 3 : 2, in, true);
    /* conv_transpose2d(u, w, b), with the largest output_padding */
    c.op = TRANSPOSE;
    c.o.output_padding[0] = sh - 1;
    c.o.output_padding[1] = sw - 1;
    nb_tensor *tin[3] = {gy, w, k.bias ? nb_test_leaf(-1, 1, NB_SHAPE(k.c)) : NULL};
    nb_test_gradcheck(conv_fn, &c, k.bias ? 3 : 2, tin, true);
    /* conv2d_weight_grad(x, gy) */
    c.op = WEIGHT_GRAD;
    c.bias = false;
    c.o.output_padding[0] = c.o.output_padding[1] = 0;
    nb_tensor *win[2] = {x, gy};
    nb_test_gradcheck(conv_fn, &c, 2, win, true);
}

Test(conv, gradcheck_plain) { check_config((cfg){2, 2, 5, 4, 3, 3, 3, {.groups = 1}, true}); }
Test(conv, gradcheck_stride_padding) {
    check_config((cfg){2, 2, 5, 5, 2, 3, 3, {.stride = {2, 2}, .padding = {1, 1}}, true});
}
Test(conv, gradcheck_stride_padding_dilation_mixed) {
    check_config((cfg){1, 2, 6, 5, 2, 2, 3,
                       {.stride = {2, 1}, .padding = {0, 1}, .dilation = {1, 2}}, false});
}
Test(conv, gradcheck_dilation_with_padding) {
    check_config((cfg){1, 2, 5, 5, 2, 2, 2, {.padding = {2, 2}, .dilation = {2, 2}}, true});
}
Test(conv, gradcheck_groups) {
    check_config((cfg){2, 4, 4, 4, 2, 2, 2, {.groups = 2}, true});
}
Test(conv, gradcheck_depthwise_strided) {
    check_config((cfg){1, 3, 5, 5, 3, 3, 3, {.stride = {2, 2}, .padding = {1, 1}, .groups = 3},
                       true});
}
Test(conv, gradcheck_groups_dilation_stride) {
    check_config((cfg){1, 4, 6, 6, 4, 2, 2,
                       {.stride = {2, 1}, .padding = {1, 0}, .dilation = {2, 1}, .groups = 2},
                       false});
}
Test(conv, gradcheck_fewer_taps_than_filters) {
    check_config((cfg){2, 1, 4, 4, 3, 1, 2, {.padding = {0, 1}}, true});
}
Test(conv, gradcheck_one_by_one) {
    check_config((cfg){2, 3, 3, 3, 2, 1, 1, {.groups = 1}, true});
    check_config((cfg){1, 2, 4, 4, 2, 1, 1, {.stride = {2, 2}}, false});
}
Test(conv, gradcheck_stride_beyond_kernel) {
    /* stride 3 with a 2x2 kernel skips pixels: their gradient is 0 */
    check_config((cfg){1, 2, 7, 5, 2, 2, 2, {.stride = {3, 3}}, true});
}

/* Third order: f returns a gradient of a convolution computed with
 * create_graph, so gradgradcheck of f differentiates the backward formulas
 * (conv_transpose2d and conv2d_weight_grad) twice more. */
static nb_tensor *grad_of_conv(nb_tensor *const *in, void *ctx) {
    int which = *(const int *)ctx;
    bool was = nb_set_grad_enabled(true);
    nb_conv2d_opts o = {.stride = {2, 1}, .padding = {1, 1}, .dilation = {1, 2}};
    nb_tensor *y = nb_conv2d(in[0], in[1], NULL, &o), *g[2] = {NULL, NULL};
    int rc = nb_grad(1, &y, &in[2], 2, in, g, &(nb_grad_opts){.create_graph = true});
    nb_set_grad_enabled(was);
    return rc == 0 ? g[which] : NULL;
}

Test(conv, third_order_through_the_backward) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(2, 2, 5, 4));
    nb_tensor *w = nb_test_leaf(-1, 1, NB_SHAPE(2, 2, 2, 2));
    nb_tensor *g = nb_test_leaf(-1, 1, NB_SHAPE(2, 2, 3, 4));
    nb_tensor *in[3] = {x, w, g};
    int dx = 0, dw = 1;
    nb_test_gradcheck(grad_of_conv, &dx, 3, in, true);
    nb_test_gradcheck(grad_of_conv, &dw, 3, in, true);
}

/* ---- pooling gradients ----------------------------------------------------------------- */

typedef struct pool_ctx {
    bool max;
    int kh, kw;
    nb_pool2d_opts o;
} pool_ctx;

static nb_tensor *pool_fn(nb_tensor *const *in, void *ctx) {
    const pool_ctx *p = ctx;
    return p->max ? nb_max_pool2d(in[0], p->kh, p->kw, &p->o)
                  : nb_avg_pool2d(in[0], p->kh, p->kw, &p->o);
}

/* distinct values 0.1 apart, so that no finite-difference step changes
 * which element of a window is the largest */
static nb_tensor *distinct(int64_t n, int64_t c, int64_t h, int64_t w) {
    int64_t count = n * c * h * w, *perm = malloc(sizeof(int64_t) * (size_t)count);
    nb_randperm(NULL, count, perm);
    nb_tensor *t = nb_empty(NB_SHAPE(n, c, h, w));
    float *d = nb_data_mut(t);
    for (int64_t i = 0; i < count; i++) d[i] = (float)perm[i] * 0.1f - 1.0f;
    free(perm);
    return nb_set_requires_grad(t, true);
}

static void check_pool(int kh, int kw, nb_pool2d_opts o) {
    nb_tensor *x = distinct(2, 2, 5, 6);
    pool_ctx p = {true, kh, kw, o};
    nb_test_gradcheck(pool_fn, &p, 1, &x, true);
    p.max = false;
    nb_test_gradcheck(pool_fn, &p, 1, &x, true);
}

Test(conv, pool_gradcheck_default_stride) { check_pool(2, 2, (nb_pool2d_opts){.stride = {0, 0}}); }
Test(conv, pool_gradcheck_overlapping_padded) {
    check_pool(3, 3, (nb_pool2d_opts){.stride = {2, 2}, .padding = {1, 1}});
}
Test(conv, pool_gradcheck_stride_one) {
    check_pool(3, 2, (nb_pool2d_opts){.stride = {1, 1}, .padding = {1, 0}});
}
Test(conv, pool_gradcheck_rectangular) {
    check_pool(2, 3, (nb_pool2d_opts){.stride = {1, 2}, .padding = {0, 1}});
}

Test(conv, pool_gradcheck_ceil_mode) {
    check_pool(2, 2, (nb_pool2d_opts){.ceil_mode = true});
    check_pool(3, 3, (nb_pool2d_opts){.stride = {2, 2}, .padding = {1, 1}, .ceil_mode = true});
}
Test(conv, max_pool_gradcheck_dilated) {
    nb_tensor *x = distinct(2, 2, 5, 6);
    pool_ctx p = {true, 2, 3, {.stride = {1, 2}, .padding = {1, 1}, .dilation = {2, 2}, .ceil_mode = true}};
    nb_test_gradcheck(pool_fn, &p, 1, &x, true);
}

static nb_tensor *adaptive_fn(nb_tensor *const *in, void *ctx) {
    const int64_t *o = ctx;
    return nb_adaptive_avg_pool2d(in[0], o[0], o[1]);
}

Test(conv, adaptive_gradcheck) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(2, 2, 4, 6));
    int64_t one[2] = {1, 1}, two[2] = {2, 3};
    nb_test_gradcheck(adaptive_fn, one, 1, &x, true);
    nb_test_gradcheck(adaptive_fn, two, 1, &x, true);
}

/* ---- errors and NULL -------------------------------------------------------------------- */

Test(conv, conv2d_messages) {
    nb_tensor *x = nb_zeros(NB_SHAPE(1, 3, 5, 5));
    cr_assert_null(nb_conv2d(nb_zeros(NB_SHAPE(3, 5, 5)), nb_zeros(NB_SHAPE(4, 3, 3, 3)), NULL, NULL));
    EXPECT_ERROR("nb_conv2d", "[3,5,5]", "[4,3,3,3]", "4-D");
    cr_assert_null(nb_conv2d(x, nb_zeros(NB_SHAPE(4, 2, 3, 3)), NULL, NULL));
    EXPECT_ERROR("nb_conv2d", "[1,3,5,5]", "[4,2,3,3]", "groups 1");
    cr_assert_null(nb_conv2d(nb_zeros(NB_SHAPE(1, 4, 5, 5)), nb_zeros(NB_SHAPE(3, 2, 3, 3)), NULL,
                             &(nb_conv2d_opts){.groups = 2}));
    EXPECT_ERROR("nb_conv2d", "[1,4,5,5]", "[3,2,3,3]", "groups 2");
    cr_assert_null(nb_conv2d(x, nb_zeros(NB_SHAPE(4, 3, 7, 3)), NULL, NULL));
    EXPECT_ERROR("nb_conv2d", "[1,3,5,5]", "[4,3,7,3]", "smaller than the kernel");
    cr_assert_null(nb_conv2d(x, nb_zeros(NB_SHAPE(4, 3, 3, 3)), nb_zeros(NB_SHAPE(3)), NULL));
    EXPECT_ERROR("nb_conv2d", "[1,3,5,5]", "[4,3,3,3]", "bias", "[4]", "[3]");
    cr_assert_null(nb_conv2d(x, nb_zeros(NB_SHAPE(4, 3, 3, 3)), NULL,
                             &(nb_conv2d_opts){.stride = {-1, 1}}));
    EXPECT_ERROR("nb_conv2d", "stride (-1,1)");
    cr_assert_null(nb_conv2d(x, nb_zeros(NB_SHAPE(4, 3, 3, 3)), NULL,
                             &(nb_conv2d_opts){.output_padding = {1, 0}}));
    EXPECT_ERROR("nb_conv2d", "output_padding");
}

Test(conv, transpose_and_weight_grad_messages) {
    nb_tensor *u = nb_zeros(NB_SHAPE(1, 4, 3, 3));
    cr_assert_null(nb_conv_transpose2d(u, nb_zeros(NB_SHAPE(3, 2, 3, 3)), NULL, NULL));
    EXPECT_ERROR("nb_conv_transpose2d", "[1,4,3,3]", "[3,2,3,3]");
    cr_assert_null(nb_conv_transpose2d(u, nb_zeros(NB_SHAPE(4, 2, 3, 3)), NULL,
                                       &(nb_conv2d_opts){.stride = {2, 2}, .output_padding = {2, 0}}));
    EXPECT_ERROR("nb_conv_transpose2d", "[1,4,3,3]", "output_padding (2,0)", "stride (2,2)");
    cr_assert_null(nb_conv_transpose2d(u, nb_zeros(NB_SHAPE(4, 2, 1, 1)), NULL,
                                       &(nb_conv2d_opts){.padding = {2, 2}}));
    EXPECT_ERROR("nb_conv_transpose2d", "[1,4,3,3]", "[4,2,1,1]", "no output position");
    cr_assert_null(nb_conv2d_weight_grad(nb_zeros(NB_SHAPE(1, 3, 5, 5)),
                                         nb_zeros(NB_SHAPE(1, 4, 4, 3)), 3, 3, NULL));
    EXPECT_ERROR("nb_conv2d_weight_grad", "[1,3,5,5]", "[1,4,4,3]", "3x3");
    cr_assert_null(nb_conv2d_weight_grad(nb_zeros(NB_SHAPE(1, 3, 5, 5)),
                                         nb_zeros(NB_SHAPE(2, 4, 3, 3)), 3, 3, NULL));
    EXPECT_ERROR("nb_conv2d_weight_grad", "[1,3,5,5]", "[2,4,3,3]", "batch");
}

Test(conv, pool_messages) {
    nb_tensor *x = nb_zeros(NB_SHAPE(1, 1, 4, 4));
    cr_assert_null(nb_max_pool2d(x, 2, 2, &(nb_pool2d_opts){.padding = {2, 0}}));
    EXPECT_ERROR("nb_max_pool2d", "[1,1,4,4]", "padding (2,0)");
    cr_assert_null(nb_avg_pool2d(nb_zeros(NB_SHAPE(4, 4)), 2, 2, NULL));
    EXPECT_ERROR("nb_avg_pool2d", "[4,4]", "4-D");
    cr_assert_null(nb_max_pool2d(x, 5, 5, NULL));
    EXPECT_ERROR("nb_max_pool2d", "[1,1,4,4]", "smaller than the 5x5 window");
    cr_assert_null(nb_max_pool2d(nb_zeros(NB_SHAPE(1, 1, 0, 4)), 2, 2,
                                 &(nb_pool2d_opts){.padding = {1, 1}}));
    EXPECT_ERROR("nb_max_pool2d", "[1,1,0,4]", "smaller than the 2x2 window");
    cr_assert_null(nb_adaptive_avg_pool2d(x, 3, 3));
    EXPECT_ERROR("nb_adaptive_avg_pool2d", "[1,1,4,4]", "3x3");
}

Test(conv, null_propagates_without_a_message) {
    nb_tensor *x = nb_zeros(NB_SHAPE(1, 1, 4, 4)), *w = nb_zeros(NB_SHAPE(1, 1, 2, 2));
    nb_clear_error();
    cr_assert_null(nb_conv2d(NULL, w, NULL, NULL));
    cr_assert_null(nb_conv2d(x, NULL, NULL, NULL));
    cr_assert_null(nb_conv_transpose2d(NULL, w, NULL, NULL));
    cr_assert_null(nb_conv_transpose2d(x, NULL, NULL, NULL));
    cr_assert_null(nb_conv2d_weight_grad(NULL, x, 2, 2, NULL));
    cr_assert_null(nb_conv2d_weight_grad(x, NULL, 2, 2, NULL));
    cr_assert_null(nb_max_pool2d(NULL, 2, 2, NULL));
    cr_assert_null(nb_avg_pool2d(NULL, 2, 2, NULL));
    cr_assert_null(nb_adaptive_avg_pool2d(NULL, 1, 1));
    cr_assert_null(nb_error(), "unexpected message: %s", nb_error());
}

Test(conv, empty_batch) {
    nb_tensor *x = nb_test_leaf(-1, 1, NB_SHAPE(0, 2, 4, 4)), *w = nb_test_leaf(-1, 1, NB_SHAPE(3, 2, 3, 3));
    nb_tensor *y = nb_conv2d(x, w, NULL, NULL);
    EXPECT_SHAPE(y, 0, 3, 2, 2);
    nb_tensor *in[2] = {x, w}, *gr[2];
    cr_assert_eq(nb_grad(1, (nb_tensor *[]){nb_sum(y, NB_ALL, false)}, NULL, 2, in, gr, NULL), 0,
                 "%s", nb_error());
    EXPECT_SHAPE(gr[1], 3, 2, 3, 3);
    EXPECT_VALUES(nb_sum(nb_abs(gr[1]), NB_ALL, false), 0, 0);
}
