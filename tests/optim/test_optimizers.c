/* test_optimizers.c — every optimizer and each of its main options against
 * numbers worked out by hand from PyTorch's published update rules.
 *
 * The problem is always the same: p = [1, -2] and the loss sum((p - c)^2),
 * whose gradient 2(p - c) is produced each step by a real backward. The
 * three parameter values after steps 1, 2 and 3 are written literally, with
 * the arithmetic in a comment (per element: gradient, state, result).
 * Adaptive methods (Adam, RMSprop, Adagrad) do not notice a gradient scaled
 * by a constant, so the tests of their L2 weight decay use c = 0.5, where
 * g + wd*p is not a multiple of g.
 *
 * Then: state inspection, zero_grad, parameters without a .grad, the
 * version bump of an in-place update, a small training loop, and every bad
 * input.
 */
#include <string.h>

#include "nb_optim.h"
#include "test_util.h"

TestSuite(optim, NB_TEST_HOOKS);

/* p = [1, -2], a leaf requiring grad, owned by the test's scope. */
static nb_tensor *start(void) {
    return nb_set_requires_grad(nb_from_array(NB_SHAPE(2), (const float[]){1.0f, -2.0f}), true);
}

/* Sets p's .grad to 2(p - c), the gradient of sum((p - c)^2), by backward. */
static void quad_grad(nb_tensor *p, float c) {
    nb_zero_grad(p);
    nb_scope_begin();
    nb_tensor *y = nb_square(nb_sub_scalar(p, c));
    int rc = nb_backward_ex(y, nb_ones_like(y), NULL);
    nb_scope_end();
    cr_assert_eq(rc, 0, "backward failed: %s", nb_error() ? nb_error() : "?");
}

/* Three steps of o on p = [1, -2] with gradient 2(p - c); after step k, p
 * must equal want[k] within tol. Frees o. */
static void expect_steps(nb_optimizer *o, nb_tensor *p, float c, const float want[3][2],
                         double tol) {
    cr_assert_not_null(o, "constructor failed: %s", nb_error() ? nb_error() : "?");
    for (int k = 0; k < 3; k++) {
        quad_grad(p, c);
        cr_assert_eq(nb_optimizer_step(o), 0, "%s", nb_error() ? nb_error() : "?");
        const float *d = nb_data(p);
        for (int j = 0; j < 2; j++)
            cr_expect(fabs((double)d[j] - (double)want[k][j]) <= tol,
                      "%s step %d element %d: %.9g, expected %.9g", nb_optimizer_name(o), k + 1,
                      j, (double)d[j], (double)want[k][j]);
    }
    cr_expect_eq(nb_optimizer_steps(o), 3);
}

#define TOL 2e-6

/* ---- SGD ------------------------------------------------------------------ */

Test(optim, sgd_plain) {
    /* p <- p - 0.1 * 2p = 0.8 p: [0.8, -1.6], [0.64, -1.28], [0.512, -1.024] */
    nb_tensor *p = start();
    nb_sgd_opts op = nb_sgd_defaults();
    op.lr = 0.1f;
    nb_optimizer *o = nb_sgd(1, &p, &op);
    cr_assert_str_eq(nb_optimizer_name(o), "sgd");
    cr_expect_null(nb_optimizer_state(o, 0, "momentum_buffer"), "no momentum, no buffer");
    expect_steps(o, p, 0.0f, (const float[3][2]){{0.8f, -1.6f}, {0.64f, -1.28f}, {0.512f, -1.024f}},
                 TOL);
    nb_optimizer_free(o);
}

Test(optim, sgd_momentum) {
    /* lr 0.1, momentum 0.9; the second element is always -2 times the first.
     * t=1: g = 2,     b = g = 2,                  p = 1    - 0.2   = 0.8
     * t=2: g = 1.6,   b = 0.9*2    + 1.6  = 3.4,  p = 0.8  - 0.34  = 0.46
     * t=3: g = 0.92,  b = 0.9*3.4  + 0.92 = 3.98, p = 0.46 - 0.398 = 0.062 */
    nb_tensor *p = start();
    nb_sgd_opts op = {.lr = 0.1f, .momentum = 0.9f};
    nb_optimizer *o = nb_sgd(1, &p, &op);
    expect_steps(o, p, 0.0f, (const float[3][2]){{0.8f, -1.6f}, {0.46f, -0.92f}, {0.062f, -0.124f}},
                 TOL);
    EXPECT_VALUES(nb_optimizer_state(o, 0, "momentum_buffer"), 1e-5, 3.98f, -7.96f);
    nb_optimizer_free(o);
}

Test(optim, sgd_momentum_dampening) {
    /* lr 0.1, momentum 0.9, dampening 0.5: the first step is undamped.
     * t=1: g = 2,    b = 2,                          p = 0.8
     * t=2: g = 1.6,  b = 0.9*2   + 0.5*1.6  = 2.6,   p = 0.8  - 0.26  = 0.54
     * t=3: g = 1.08, b = 0.9*2.6 + 0.5*1.08 = 2.88,  p = 0.54 - 0.288 = 0.252 */
    nb_tensor *p = start();
    nb_sgd_opts op = {.lr = 0.1f, .momentum = 0.9f, .dampening = 0.5f};
    nb_optimizer *o = nb_sgd(1, &p, &op);
    expect_steps(o, p, 0.0f, (const float[3][2]){{0.8f, -1.6f}, {0.54f, -1.08f}, {0.252f, -0.504f}},
                 TOL);
    EXPECT_VALUES(nb_optimizer_state(o, 0, "momentum_buffer"), 1e-5, 2.88f, -5.76f);
    nb_optimizer_free(o);
}

Test(optim, sgd_nesterov) {
    /* lr 0.1, momentum 0.9, nesterov: step along g + 0.9 b.
     * t=1: g = 2,      b = 2,                           g + 0.9b = 3.8,
     *      p = 1 - 0.38 = 0.62
     * t=2: g = 1.24,   b = 0.9*2    + 1.24   = 3.04,    g + 0.9b = 3.976,
     *      p = 0.62 - 0.3976 = 0.2224
     * t=3: g = 0.4448, b = 0.9*3.04 + 0.4448 = 3.1808,  g + 0.9b = 3.30752,
     *      p = 0.2224 - 0.330752 = -0.108352 */
    nb_tensor *p = start();
    nb_sgd_opts op = {.lr = 0.1f, .momentum = 0.9f, .nesterov = true};
    nb_optimizer *o = nb_sgd(1, &p, &op);
    expect_steps(o, p, 0.0f,
                 (const float[3][2]){{0.62f, -1.24f}, {0.2224f, -0.4448f}, {-0.108352f, 0.216704f}},
                 TOL);
    EXPECT_VALUES(nb_optimizer_state(o, 0, "momentum_buffer"), 1e-5, 3.1808f, -6.3616f);
    nb_optimizer_free(o);
}

Test(optim, sgd_weight_decay) {
    /* lr 0.1, weight_decay 0.5: g = 2p + 0.5p = 2.5p, p <- p - 0.25p = 0.75p:
     * 0.75, 0.5625, 0.421875 (and -2 times that) */
    nb_tensor *p = start();
    nb_sgd_opts op = {.lr = 0.1f, .weight_decay = 0.5f};
    nb_optimizer *o = nb_sgd(1, &p, &op);
    expect_steps(o, p, 0.0f,
                 (const float[3][2]){{0.75f, -1.5f}, {0.5625f, -1.125f}, {0.421875f, -0.84375f}},
                 TOL);
    nb_optimizer_free(o);
}

Test(optim, sgd_defaults) {
    nb_sgd_opts d = nb_sgd_defaults();
    cr_expect_float_eq(d.lr, 0.01f, 1e-9);
    cr_expect(d.momentum == 0.0f && d.dampening == 0.0f && d.weight_decay == 0.0f && !d.nesterov);
    /* NULL options are the defaults: p <- p - 0.01 * 2p = 0.98p */
    nb_tensor *p = start();
    nb_optimizer *o = nb_sgd(1, &p, NULL);
    cr_expect_float_eq(nb_optimizer_lr(o), 0.01f, 1e-9);
    quad_grad(p, 0.0f);
    cr_assert_eq(nb_optimizer_step(o), 0);
    EXPECT_VALUES(p, 1e-6, 0.98f, -1.96f);
    nb_optimizer_free(o);
}

/* ---- Adam, AdamW -------------------------------------------------------------- */

Test(optim, adam) {
    /* lr 0.1, betas 0.9/0.999, eps 1e-8, c = 0.5 so g = 2p - 1.
     * m = 0.9m + 0.1g, v = 0.999v + 0.001g^2, mhat = m/(1-0.9^t),
     * vhat = v/(1-0.999^t), p <- p - 0.1 mhat/(sqrt(vhat) + eps).
     * element 0:
     * t=1: g = 1,         m = 0.1,       v = 0.001,       mhat = 1,
     *      vhat = 1,       p = 0.9 - 0.1*1/1                       = 0.9
     * t=2: g = 0.8,       m = 0.17,      v = 0.001639,    mhat = 0.8947368,
     *      vhat = 0.81991, p = 0.9 - 0.1*0.8947368/0.9054888       = 0.80118742
     * t=3: g = 0.6023748, m = 0.2132375, v = 0.002000216, mhat = 0.7868542,
     *      vhat = 0.667406, p = 0.80118742 - 0.1*0.7868542/0.8169492 = 0.70487125
     * element 1:
     * t=1: g = -5,        m = -0.5,      v = 0.025,       mhat = -5,
     *      vhat = 25,      p = -2 + 0.1                            = -1.9
     * t=2: g = -4.8,      m = -0.93,     v = 0.048015,    mhat = -4.894737,
     *      vhat = 24.01951, p = -1.9 + 0.1*4.894737/4.900970       = -1.80012719
     * t=3: g = -4.600254, m = -1.297025, v = 0.06912933,  mhat = -4.786072,
     *      vhat = 23.06617, p = -1.80012719 + 0.1*4.786072/4.802725 = -1.70047393 */
    nb_tensor *p = start();
    nb_adam_opts op = nb_adam_defaults();
    op.lr = 0.1f;
    nb_optimizer *o = nb_adam(1, &p, &op);
    cr_assert_str_eq(nb_optimizer_name(o), "adam");
    expect_steps(o, p, 0.5f,
                 (const float[3][2]){{0.9f, -1.9f},
                                     {0.801187422f, -1.80012719f},
                                     {0.704871253f, -1.70047393f}},
                 TOL);
    EXPECT_VALUES(nb_optimizer_state(o, 0, "exp_avg"), 1e-6, 0.213237485f, -1.29702544f);
    /* 0.999 is 0.99899995 in float, so v carries a relative error of about
     * 5e-5 that the bias correction (made with the same float) cancels in p. */
    EXPECT_VALUES(nb_optimizer_state(o, 0, "exp_avg_sq"), 5e-6, 0.00200021646f, 0.0691293253f);
    cr_expect_null(nb_optimizer_state(o, 0, "max_exp_avg_sq"), "no amsgrad, no maximum");
    nb_optimizer_free(o);
}

Test(optim, adam_weight_decay) {
    /* As above with weight_decay 0.5 added to the gradient: g' = 2p - 1 + 0.5p.
     * element 0:
     * t=1: g' = 1.5,      m = 0.15,      v = 0.00225,     p = 0.9
     * t=2: g' = 1.25,     m = 0.26,      v = 0.00381025,  mhat = 1.368421,
     *      vhat = 1.906078, p = 0.9 - 0.1*1.368421/1.380608        = 0.80088271
     * t=3: g' = 1.002207, m = 0.3342207, v = 0.004810858, mhat = 1.233287,
     *      vhat = 1.605224, p = 0.80088271 - 0.1*1.233287/1.266974 = 0.70354163
     * element 1:
     * t=1: g' = -6,       m = -0.6,      v = 0.036,       p = -1.9
     * t=2: g' = -5.75,    m = -1.115,    v = 0.0690265,   mhat = -5.868421,
     *      vhat = 34.53052, p = -1.9 + 0.1*5.868421/5.876268       = -1.80013352
     * t=3: g' = -5.500334, m = -1.553533, v = 0.09921115, mhat = -5.732595,
     *      vhat = 33.10347, p = -1.80013352 + 0.1*5.732595/5.753562 = -1.70049793 */
    nb_tensor *p = start();
    nb_adam_opts op = nb_adam_defaults();
    op.lr = 0.1f;
    op.weight_decay = 0.5f;
    nb_optimizer *o = nb_adam(1, &p, &op);
    expect_steps(o, p, 0.5f,
                 (const float[3][2]){{0.9f, -1.9f},
                                     {0.800882714f, -1.80013352f},
                                     {0.703541628f, -1.70049793f}},
                 TOL);
    nb_optimizer_free(o);
}

Test(optim, adam_amsgrad) {
    /* lr 0.5, beta2 0.5 so that v can shrink; c = 0, g = 2p.
     * Without amsgrad (vhat = v/(1-0.5^t)):
     * element 0:
     * t=1: g = 2,  m = 0.2,  v = 2,   mhat = 2,        vhat = 4,   p = 1 - 0.5        = 0.5
     * t=2: g = 1,  m = 0.28, v = 1.5, mhat = 1.473684, vhat = 2,
     *      p = 0.5 - 0.5*1.473684/1.414214                                     = -0.02102604
     * t=3: g = -0.04205209, m = 0.2477948, v = 0.7508842, mhat = 0.9143719,
     *      vhat = 0.8581534, p = -0.02102604 - 0.5*0.9143719/0.9263657          = -0.51455249
     * element 1:
     * t=1: g = -4, m = -0.4, v = 8,   p = -1.5
     * t=2: g = -3, m = -0.66, v = 8.5, mhat = -3.473684, vhat = 11.33333,
     *      p = -1.5 + 0.5*3.473684/3.366502                                    = -0.98408102
     * t=3: g = -1.968162, m = -0.7908162, v = 6.186831, mhat = -2.918141,
     *      vhat = 7.070664, p = -0.98408102 + 0.5*2.918141/2.659072             = -0.43536685
     * With amsgrad the running maximum vmax replaces v:
     * element 0:
     * t=2: v = 1.5 < vmax = 2, vhat = 2/0.75 = 2.666667,
     *      p = 0.5 - 0.5*1.473684/1.632993                                     = 0.04877821
     * t=3: g = 0.09755642, m = 0.2617556, vmax = 2, mhat = 0.965888, vhat = 2.285714,
     *      p = 0.04877821 - 0.5*0.965888/1.511858                               = -0.27065921
     * element 1: t=1,2 as without (v grows); t=3: v = 6.186831 < vmax = 8.5,
     *      vhat = 8.5/0.875 = 9.714286, p = -0.98408102 + 0.5*2.918141/3.116775 = -0.51594632 */
    nb_adam_opts op = {.lr = 0.5f, .beta1 = 0.9f, .beta2 = 0.5f, .eps = 1e-8f};
    nb_tensor *p = start();
    nb_optimizer *o = nb_adam(1, &p, &op);
    expect_steps(o, p, 0.0f,
                 (const float[3][2]){{0.5f, -1.5f},
                                     {-0.0210260432f, -0.98408102f},
                                     {-0.514552488f, -0.435366851f}},
                 TOL);
    nb_optimizer_free(o);

    op.amsgrad = true;
    nb_tensor *q = start();
    o = nb_adam(1, &q, &op);
    expect_steps(o, q, 0.0f,
                 (const float[3][2]){{0.5f, -1.5f},
                                     {0.0487782097f, -0.98408102f},
                                     {-0.270659212f, -0.515946319f}},
                 TOL);
    EXPECT_VALUES(nb_optimizer_state(o, 0, "max_exp_avg_sq"), 1e-5, 2.0f, 8.5f);
    EXPECT_VALUES(nb_optimizer_state(o, 0, "exp_avg_sq"), 1e-5, 0.75475863f, 6.18683091f);
    nb_optimizer_free(o);
}

Test(optim, adamw) {
    /* lr 0.1, weight_decay 0.5 decoupled: p <- p(1 - 0.05), then the Adam step
     * on g = 2p - 1 (c = 0.5, taken before the decay), with no L2 term.
     * element 0:
     * t=1: g = 1,         p*0.95 = 0.95,      m = 0.1,       v = 0.001,
     *      p = 0.95 - 0.1*1/1                                          = 0.85
     * t=2: g = 0.7,       p*0.95 = 0.8075,    m = 0.16,      v = 0.001489,
     *      mhat = 0.8421053, vhat = 0.7448724, p = 0.8075 - 0.1*0.8421053/0.8630599
     *                                                                  = 0.70992795
     * t=3: g = 0.4198559, p*0.95 = 0.6744316, m = 0.1859856, v = 0.00166379,
     *      mhat = 0.6862937, vhat = 0.5551516, p = 0.6744316 - 0.1*0.6862937/0.7450850
     *                                                                  = 0.5823221
     * element 1:
     * t=1: g = -5,        p*0.95 = -1.9,      p = -1.9 + 0.1               = -1.8
     * t=2: g = -4.6,      p*0.95 = -1.71,     mhat = -4.789474, vhat = 23.07904,
     *      p = -1.71 + 0.1*4.789474/4.804065                             = -1.61030373
     * t=3: g = -4.220607, p*0.95 = -1.529789, mhat = -4.57956,  vhat = 21.32211,
     *      p = -1.529789 + 0.1*4.57956/4.617587                          = -1.43061207 */
    nb_tensor *p = start();
    nb_adam_opts op = nb_adamw_defaults();
    op.lr = 0.1f;
    op.weight_decay = 0.5f;
    nb_optimizer *o = nb_adamw(1, &p, &op);
    cr_assert_str_eq(nb_optimizer_name(o), "adamw");
    expect_steps(o, p, 0.5f,
                 (const float[3][2]){{0.85f, -1.8f},
                                     {0.709927952f, -1.61030373f},
                                     {0.582322104f, -1.43061207f}},
                 TOL);
    EXPECT_VALUES(nb_optimizer_state(o, 0, "exp_avg"), 1e-6, 0.185985591f, -1.24106075f);
    nb_optimizer_free(o);
}

Test(optim, adam_and_adamw_defaults) {
    nb_adam_opts a = nb_adam_defaults(), w = nb_adamw_defaults();
    cr_expect_float_eq(a.lr, 1e-3f, 1e-12);
    cr_expect_float_eq(a.beta1, 0.9f, 1e-9);
    cr_expect_float_eq(a.beta2, 0.999f, 1e-9);
    cr_expect_float_eq(a.eps, 1e-8f, 1e-15);
    cr_expect(a.weight_decay == 0.0f && !a.amsgrad);
    cr_expect_float_eq(w.weight_decay, 1e-2f, 1e-9);
    cr_expect(w.lr == a.lr && w.beta1 == a.beta1 && w.beta2 == a.beta2 && w.eps == a.eps);
    /* nb_adamw(NULL): the first Adam step moves each element by lr against
     * its gradient's sign, after p <- p(1 - 1e-3 * 1e-2):
     * 1 * 0.99999 - 0.001 = 0.99899, -2 * 0.99999 + 0.001 = -1.99898 */
    nb_tensor *p = start();
    nb_optimizer *o = nb_adamw(1, &p, NULL);
    quad_grad(p, 0.0f);
    cr_assert_eq(nb_optimizer_step(o), 0);
    EXPECT_VALUES(p, 1e-6, 0.99899f, -1.99898f);
    nb_optimizer_free(o);
    /* nb_adam(NULL) has no decay: 1 - 0.001, -2 + 0.001 */
    nb_tensor *q = start();
    o = nb_adam(1, &q, NULL);
    quad_grad(q, 0.0f);
    cr_assert_eq(nb_optimizer_step(o), 0);
    EXPECT_VALUES(q, 1e-6, 0.999f, -1.999f);
    nb_optimizer_free(o);
}

/* ---- RMSprop ---------------------------------------------------------------------- */

Test(optim, rmsprop_plain) {
    /* lr 0.01, alpha 0.99, eps 1e-8, g = 2p: v = 0.99v + 0.01g^2,
     * p <- p - 0.01 g/(sqrt(v) + eps).
     * element 0:
     * t=1: g = 2,        v = 0.04,       g/sqrt(v) = 10,       p = 0.9
     * t=2: g = 1.8,      v = 0.072,      g/sqrt(v) = 6.708204, p = 0.83291797
     * t=3: g = 1.665836, v = 0.09903009, g/sqrt(v) = 5.293569, p = 0.77998227
     * element 1:
     * t=1: g = -4,       v = 0.16,       g/sqrt(v) = -10,      p = -1.9
     * t=2: g = -3.8,     v = 0.3028,     g/sqrt(v) = -6.905667, p = -1.83094333
     * t=3: g = -3.661887, v = 0.4338661, g/sqrt(v) = -5.559388, p = -1.77534945 */
    nb_tensor *p = start();
    nb_rmsprop_opts op = nb_rmsprop_defaults();
    nb_optimizer *o = nb_rmsprop(1, &p, &op);
    cr_assert_str_eq(nb_optimizer_name(o), "rmsprop");
    expect_steps(o, p, 0.0f,
                 (const float[3][2]){{0.9f, -1.9f},
                                     {0.832917968f, -1.83094333f},
                                     {0.779982273f, -1.77534945f}},
                 TOL);
    EXPECT_VALUES(nb_optimizer_state(o, 0, "square_avg"), 1e-6, 0.099030094f, 0.433866139f);
    cr_expect_null(nb_optimizer_state(o, 0, "grad_avg"));
    cr_expect_null(nb_optimizer_state(o, 0, "momentum_buffer"));
    nb_optimizer_free(o);
}

Test(optim, rmsprop_with_subnormal_averages) {
    /* An average of squared gradients decayed into the subnormals must be
     * used as it is, not flushed to zero. 37 elements (vector loops and
     * their tail), p = 1, lr 1, alpha 0.5, eps 0, square_avg 2^-140, g =
     * 2^-75: v = 0.5·2^-140 + 0.5·2^-150 = 2^-141 (2^-150 rounds to 0),
     * sqrt(v) = 2^-70.5, g / sqrt(v) = 2^-4.5 = 0.0441941738, p = 0.9558058262.
     * Flushed, sqrt(v) would be 0 and p −inf. */
    enum { N37 = 37 };
    nb_tensor *p = nb_set_requires_grad(nb_ones(NB_SHAPE(N37)), true);
    nb_rmsprop_opts op = nb_rmsprop_defaults();
    op.lr = 1.0f;
    op.alpha = 0.5f;
    op.eps = 0.0f;
    nb_optimizer *o = nb_rmsprop(1, &p, &op);
    cr_assert_not_null(o, "%s", nb_error() ? nb_error() : "?");
    float *v = nb_data_mut(nb_optimizer_state(o, 0, "square_avg"));
    for (int j = 0; j < N37; j++) v[j] = 0x1p-140f;
    nb_scope_begin();
    nb_tensor *y = nb_mul(p, nb_full(NB_SHAPE(N37), 0x1p-75f)); /* dy/dp = 2^-75 */
    cr_assert_eq(nb_backward_ex(y, nb_ones_like(y), NULL), 0);
    nb_scope_end();
    cr_assert_eq(nb_optimizer_step(o), 0, "%s", nb_error() ? nb_error() : "?");
    const float *d = nb_data(p);
    for (int j = 0; j < N37; j++) {
        cr_expect_eq(v[j], 0x1p-141f, "element %d: square_avg %a", j, (double)v[j]);
        cr_expect(fabs((double)d[j] - 0.9558058262) < 1e-7, "element %d: %.9g", j, (double)d[j]);
    }
    nb_optimizer_free(o);
}

Test(optim, rmsprop_centered) {
    /* As plain, with a = 0.99a + 0.01g and v - a^2 in place of v.
     * element 0:
     * t=1: g = 2,        v = 0.04,       a = 0.02,       v - a^2 = 0.0396,
     *      g/sqrt = 10.05038,  p = 1 - 0.1005038               = 0.89949622
     * t=2: g = 1.798992, v = 0.07196374, a = 0.03778992, v - a^2 = 0.07053566,
     *      g/sqrt = 6.773684,  p = 0.89949622 - 0.06773684     = 0.83175938
     * t=3: g = 1.663519, v = 0.09891705, a = 0.05404721, v - a^2 = 0.09599595,
     *      g/sqrt = 5.369097,  p = 0.83175938 - 0.05369097     = 0.77806841
     * element 1:
     * t=1: g = -4,       v = 0.16,       a = -0.04,      v - a^2 = 0.1584,
     *      g/sqrt = -10.05038, p = -1.89949622
     * t=2: g = -3.798992, v = 0.3027234, a = -0.07758992, v - a^2 = 0.2967032,
     *      g/sqrt = -6.974407, p = -1.82975215
     * t=3: g = -3.659504, v = 0.4336159, a = -0.1134091, v - a^2 = 0.4207543,
     *      g/sqrt = -5.641674, p = -1.77333541 */
    nb_tensor *p = start();
    nb_rmsprop_opts op = nb_rmsprop_defaults();
    op.centered = true;
    nb_optimizer *o = nb_rmsprop(1, &p, &op);
    expect_steps(o, p, 0.0f,
                 (const float[3][2]){{0.899496224f, -1.89949622f},
                                     {0.83175938f, -1.82975215f},
                                     {0.778068411f, -1.77333541f}},
                 TOL);
    EXPECT_VALUES(nb_optimizer_state(o, 0, "grad_avg"), 1e-6, 0.0540472128f, -0.113409068f);
    EXPECT_VALUES(nb_optimizer_state(o, 0, "square_avg"), 1e-6, 0.0989170475f, 0.433615919f);
    nb_optimizer_free(o);
}

Test(optim, rmsprop_momentum) {
    /* As plain, with b = 0.9b + g/(sqrt(v) + eps) and p <- p - 0.01b.
     * element 0:
     * t=1: g = 2,        v = 0.04,       g/sqrt = 10,       b = 10,      p = 0.9
     * t=2: g = 1.8,      v = 0.072,      g/sqrt = 6.708204, b = 15.7082, p = 0.74291797
     * t=3: g = 1.485836, v = 0.09335708, g/sqrt = 4.862921, b = 19.0003, p = 0.55291493
     * element 1:
     * t=1: g = -4,       v = 0.16,       g/sqrt = -10,      b = -10,       p = -1.9
     * t=2: g = -3.8,     v = 0.3028,     g/sqrt = -6.905667, b = -15.90567, p = -1.74094333
     * t=3: g = -3.481887, v = 0.4210073, g/sqrt = -5.366236, b = -19.68134, p = -1.54412997 */
    nb_tensor *p = start();
    nb_rmsprop_opts op = nb_rmsprop_defaults();
    op.momentum = 0.9f;
    nb_optimizer *o = nb_rmsprop(1, &p, &op);
    expect_steps(o, p, 0.0f,
                 (const float[3][2]){{0.9f, -1.9f},
                                     {0.742917972f, -1.74094333f},
                                     {0.552914934f, -1.54412997f}},
                 TOL);
    EXPECT_VALUES(nb_optimizer_state(o, 0, "momentum_buffer"), 2e-5, 19.0003038f, -19.6813366f);
    nb_optimizer_free(o);
}

Test(optim, rmsprop_weight_decay) {
    /* lr 0.01, weight_decay 0.5, c = 0.5: g' = 2p - 1 + 0.5p.
     * element 0:
     * t=1: g' = 1.5,     v = 0.0225,     g'/sqrt = 10,       p = 0.9
     * t=2: g' = 1.25,    v = 0.0379,     g'/sqrt = 6.420818, p = 0.83579182
     * t=3: g' = 1.08948, v = 0.04939066, g'/sqrt = 4.902264, p = 0.78676919
     * element 1:
     * t=1: g' = -6,      v = 0.36,       g'/sqrt = -10,      p = -1.9
     * t=2: g' = -5.75,   v = 0.687025,   g'/sqrt = -6.937158, p = -1.83062842
     * t=3: g' = -5.576571, v = 0.9911362, g'/sqrt = -5.601451, p = -1.77461391 */
    nb_tensor *p = start();
    nb_rmsprop_opts op = nb_rmsprop_defaults();
    op.weight_decay = 0.5f;
    nb_optimizer *o = nb_rmsprop(1, &p, &op);
    expect_steps(o, p, 0.5f,
                 (const float[3][2]){{0.9f, -1.9f},
                                     {0.835791822f, -1.83062842f},
                                     {0.786769186f, -1.77461391f}},
                 TOL);
    nb_optimizer_free(o);
}

Test(optim, rmsprop_defaults) {
    nb_rmsprop_opts d = nb_rmsprop_defaults();
    cr_expect_float_eq(d.lr, 1e-2f, 1e-12);
    cr_expect_float_eq(d.alpha, 0.99f, 1e-9);
    cr_expect_float_eq(d.eps, 1e-8f, 1e-15);
    cr_expect(d.weight_decay == 0.0f && d.momentum == 0.0f && !d.centered);
}

/* ---- Adagrad ------------------------------------------------------------------------- */

Test(optim, adagrad_lr_decay) {
    /* lr 0.1, lr_decay 0.5: lr~ = 0.1/(1 + 0.5(t - 1)) = 0.1, 0.0666667, 0.05;
     * s = s + g^2, p <- p - lr~ g/(sqrt(s) + 1e-10).
     * element 0:
     * t=1: g = 2,        s = 4,        p = 1 - 0.1*2/2                    = 0.9
     * t=2: g = 1.8,      s = 7.24,     p = 0.9 - 0.0666667*1.8/2.690725    = 0.85540235
     * t=3: g = 1.710805, s = 10.16685, p = 0.85540235 - 0.05*1.710805/3.188550 = 0.82857504
     * element 1:
     * t=1: g = -4,       s = 16,       p = -1.9
     * t=2: g = -3.8,     s = 30.44,    p = -1.9 + 0.0666667*3.8/5.517246   = -1.85408337
     * t=3: g = -3.708167, s = 44.1905, p = -1.85408337 + 0.05*3.708167/6.647594 = -1.82619232 */
    nb_tensor *p = start();
    nb_adagrad_opts op = nb_adagrad_defaults();
    op.lr = 0.1f;
    op.lr_decay = 0.5f;
    nb_optimizer *o = nb_adagrad(1, &p, &op);
    cr_assert_str_eq(nb_optimizer_name(o), "adagrad");
    expect_steps(o, p, 0.0f,
                 (const float[3][2]){{0.9f, -1.9f},
                                     {0.855402351f, -1.85408337f},
                                     {0.828575038f, -1.82619232f}},
                 TOL);
    EXPECT_VALUES(nb_optimizer_state(o, 0, "sum"), 2e-5, 10.1668527f, 44.1905006f);
    nb_optimizer_free(o);
}

Test(optim, adagrad_plain_and_initial_accumulator) {
    /* lr 0.1, no decay. element 0: s = 4, 7.24, 10.01625;
     * p = 0.9, 0.9 - 0.1*1.8/2.690725 = 0.83310353, 0.78045618.
     * element 1: s = 16, 30.44, 43.85208; p = -1.9, -1.83112505, -1.77582152 */
    nb_tensor *p = start();
    nb_adagrad_opts op = nb_adagrad_defaults();
    op.lr = 0.1f;
    nb_optimizer *o = nb_adagrad(1, &p, &op);
    expect_steps(o, p, 0.0f,
                 (const float[3][2]){{0.9f, -1.9f},
                                     {0.833103527f, -1.83112505f},
                                     {0.780456181f, -1.77582152f}},
                 TOL);
    nb_optimizer_free(o);

    /* initial_accumulator_value 0.25: the sum starts at 0.25.
     * element 0: t=1: s = 4.25, p = 1 - 0.1*2/2.061553 = 0.90298575;
     *   t=2: g = 1.805971, s = 7.511533, p = 0.83709164;
     *   t=3: g = 1.674183, s = 10.31442, p = 0.7849625
     * element 1: t=1: s = 16.25, p = -2 + 0.1*4/4.031129 = -1.90077221;
     *   t=2: s = 30.70174, p = -1.83216361; t=3: s = 44.12903, p = -1.77700262 */
    op.initial_accumulator_value = 0.25f;
    nb_tensor *q = start();
    o = nb_adagrad(1, &q, &op);
    EXPECT_VALUES(nb_optimizer_state(o, 0, "sum"), 0, 0.25f, 0.25f);
    expect_steps(o, q, 0.0f,
                 (const float[3][2]){{0.90298575f, -1.90077221f},
                                     {0.837091639f, -1.83216361f},
                                     {0.784962502f, -1.77700262f}},
                 TOL);
    nb_optimizer_free(o);
}

Test(optim, adagrad_weight_decay) {
    /* lr 0.1, weight_decay 0.5, c = 0.5: g' = 2p - 1 + 0.5p.
     * element 0: g' = 1.5, 1.25, 1.089954; s = 2.25, 3.8125, 5.0005;
     *   p = 0.9, 0.9 - 0.1*1.25/1.952562 = 0.83598156, 0.78723977
     * element 1: g' = -6, -5.75, -5.577024; s = 36, 69.0625, 100.1657;
     *   p = -1.9, -1.9 + 0.1*5.75/8.310385 = -1.83080946, -1.77508537 */
    nb_tensor *p = start();
    nb_adagrad_opts op = nb_adagrad_defaults();
    op.lr = 0.1f;
    op.weight_decay = 0.5f;
    nb_optimizer *o = nb_adagrad(1, &p, &op);
    expect_steps(o, p, 0.5f,
                 (const float[3][2]){{0.9f, -1.9f},
                                     {0.83598156f, -1.83080946f},
                                     {0.787239774f, -1.77508537f}},
                 TOL);
    nb_optimizer_free(o);
}

Test(optim, adagrad_defaults) {
    nb_adagrad_opts d = nb_adagrad_defaults();
    cr_expect_float_eq(d.lr, 1e-2f, 1e-12);
    cr_expect_float_eq(d.eps, 1e-10f, 1e-17);
    cr_expect(d.lr_decay == 0.0f && d.weight_decay == 0.0f && d.initial_accumulator_value == 0.0f);
}

/* ---- behaviour shared by all optimizers ---------------------------------------------- */

Test(optim, state_is_inspectable_and_survives_scopes) {
    nb_tensor *w = nb_keep(nb_set_requires_grad(nb_zeros(NB_SHAPE(2, 3)), true));
    nb_tensor *b = nb_keep(nb_set_requires_grad(nb_zeros(NB_SHAPE(3)), true));
    nb_tensor *ps[] = {w, b};
    /* Made inside a scope that then closes: the state must stay alive. */
    nb_scope_begin();
    nb_adam_opts op = nb_adam_defaults();
    op.amsgrad = true;
    nb_optimizer *o = nb_adam(2, ps, &op);
    nb_scope_end();
    cr_assert_not_null(o, "%s", nb_error() ? nb_error() : "?");
    cr_expect_eq(nb_optimizer_num_params(o), 2);
    cr_expect_eq(nb_optimizer_param(o, 0), w);
    cr_expect_eq(nb_optimizer_param(o, 1), b);
    const char *names[] = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
    for (int k = 0; k < 3; k++) {
        EXPECT_SHAPE(nb_optimizer_state(o, 0, names[k]), 2, 3);
        EXPECT_SHAPE(nb_optimizer_state(o, 1, names[k]), 3);
        EXPECT_VALUES(nb_optimizer_state(o, 1, names[k]), 0, 0, 0, 0);
        cr_expect(!nb_requires_grad(nb_optimizer_state(o, 0, names[k])));
    }
    cr_expect_null(nb_optimizer_state(o, 0, "sum"), "an adagrad name on adam");
    cr_expect_null(nb_optimizer_state(o, 0, NULL));

    nb_clear_error();
    cr_expect_null(nb_optimizer_state(o, 2, "exp_avg"));
    EXPECT_ERROR("nb_optimizer_state", "2", "2 parameters");
    cr_expect_null(nb_optimizer_param(o, -1));
    EXPECT_ERROR("nb_optimizer_param", "-1");
    cr_expect_eq(nb_optimizer_param_steps(o, 5), -1);
    EXPECT_ERROR("nb_optimizer_param_steps", "5");

    nb_optimizer_free(o);
    nb_release(w);
    nb_release(b);
}

Test(optim, zero_grad) {
    nb_tensor *p = start();
    nb_tensor *q = nb_set_requires_grad(nb_ones(NB_SHAPE(3)), true);
    nb_tensor *ps[] = {p, q};
    nb_optimizer *o = nb_sgd(2, ps, NULL);
    quad_grad(p, 0.0f);
    EXPECT_VALUES(nb_grad_of(p), 0, 2.0f, -4.0f);
    nb_optimizer_zero_grad(o);
    EXPECT_VALUES(nb_grad_of(p), 0, 0.0f, 0.0f);
    cr_expect_null(nb_grad_of(q), "a parameter without a .grad keeps none");
    nb_optimizer_zero_grad(NULL);
    nb_optimizer_free(o);
}

Test(optim, parameters_without_grad_are_skipped) {
    /* Adam, lr 0.1: q gets its first gradient at the optimizer's second
     * step, and its first update is then the t = 1 step (mhat = g,
     * vhat = g^2): q moves by 0.1 against the sign of its gradient. */
    nb_tensor *p = start();
    nb_tensor *q = nb_set_requires_grad(nb_from_array(NB_SHAPE(2), (const float[]){3.0f, -0.5f}), true);
    nb_tensor *ps[] = {p, q};
    nb_adam_opts op = nb_adam_defaults();
    op.lr = 0.1f;
    nb_optimizer *o = nb_adam(2, ps, &op);
    quad_grad(p, 0.0f);
    cr_assert_eq(nb_optimizer_step(o), 0);
    EXPECT_VALUES(p, 1e-6, 0.9f, -1.9f);
    EXPECT_VALUES(q, 0, 3.0f, -0.5f);
    cr_expect_eq(nb_optimizer_param_steps(o, 0), 1);
    cr_expect_eq(nb_optimizer_param_steps(o, 1), 0);

    quad_grad(p, 0.0f);
    quad_grad(q, 0.0f);
    cr_assert_eq(nb_optimizer_step(o), 0);
    EXPECT_VALUES(q, 1e-6, 2.9f, -0.4f);
    EXPECT_VALUES(p, 1e-6, 0.800412229f, -1.80016649f); /* Adam's t = 2 step */
    cr_expect_eq(nb_optimizer_param_steps(o, 0), 2);
    cr_expect_eq(nb_optimizer_param_steps(o, 1), 1);
    cr_expect_eq(nb_optimizer_steps(o), 2);
    nb_optimizer_free(o);
}

Test(optim, step_leaves_the_gradient_alone) {
    /* Weight decay is added to a copy of the gradient, not into .grad. */
    nb_tensor *p = start();
    nb_sgd_opts op = {.lr = 0.1f, .momentum = 0.9f, .weight_decay = 0.5f};
    nb_optimizer *o = nb_sgd(1, &p, &op);
    quad_grad(p, 0.0f);
    cr_assert_eq(nb_optimizer_step(o), 0);
    EXPECT_VALUES(nb_grad_of(p), 0, 2.0f, -4.0f);
    nb_optimizer_free(o);
}

Test(optim, update_bumps_the_version) {
    /* square saved p for its backward; the step changes p in place, so that
     * backward must refuse rather than use the new values. */
    nb_tensor *p = start();
    nb_optimizer *o = nb_sgd(1, &p, NULL);
    quad_grad(p, 0.0f);
    nb_tensor *y = nb_square(p);
    cr_assert_eq(nb_optimizer_step(o), 0);
    nb_clear_error();
    cr_expect_eq(nb_backward_ex(y, nb_ones_like(y), NULL), -1);
    cr_expect_not_null(nb_error(), "the stale graph must be reported");
    nb_optimizer_free(o);
}

Test(optim, lr_can_be_changed) {
    /* SGD on g = 2p: lr 0.1 gives 0.8p, then lr 0.25 gives 0.5p. */
    nb_tensor *p = start();
    nb_sgd_opts op = {.lr = 0.1f};
    nb_optimizer *o = nb_sgd(1, &p, &op);
    quad_grad(p, 0.0f);
    nb_optimizer_step(o);
    EXPECT_VALUES(p, 1e-6, 0.8f, -1.6f);
    nb_optimizer_set_lr(o, 0.25f);
    cr_expect_eq(nb_optimizer_lr(o), 0.25f);
    quad_grad(p, 0.0f);
    nb_optimizer_step(o);
    EXPECT_VALUES(p, 1e-6, 0.4f, -0.8f);

    nb_clear_error();
    nb_optimizer_set_lr(o, -1.0f);
    EXPECT_ERROR("nb_optimizer_set_lr", "lr", "-1");
    nb_optimizer_set_lr(o, NAN);
    EXPECT_ERROR("nb_optimizer_set_lr", "nan");
    cr_expect_eq(nb_optimizer_lr(o), 0.25f, "a refused lr changes nothing");
    nb_optimizer_free(o);
}

Test(optim, many_element_parameters) {
    /* Every element gets its own update: SGD lr 0.5 on g = 2(p - 1) moves
     * every element straight to 1, whatever its shape. RMSprop on the same
     * problem moves each by lr = 0.01 * sign(g) / sqrt(0.01) = 0.1 sign. */
    nb_tensor *w = nb_set_requires_grad(nb_arange(0, 24, 1), true);
    nb_tensor *w2 = nb_set_requires_grad(nb_as_shape(nb_arange(-12, 12, 1), NB_SHAPE(2, 3, 4)), true);
    nb_tensor *s = nb_set_requires_grad(nb_scalar(5.0f), true);
    nb_tensor *ps[] = {w, w2, s};
    nb_sgd_opts op = {.lr = 0.5f};
    nb_optimizer *o = nb_sgd(3, ps, &op);
    cr_assert_not_null(o, "%s", nb_error() ? nb_error() : "?");
    for (int i = 0; i < 3; i++) quad_grad(ps[i], 1.0f);
    cr_assert_eq(nb_optimizer_step(o), 0);
    for (int i = 0; i < 3; i++) {
        const float *d = nb_data(ps[i]);
        for (int64_t j = 0; j < nb_numel(ps[i]); j++)
            cr_expect_float_eq(d[j], 1.0f, 1e-6, "param %d element %lld", i, (long long)j);
    }
    nb_optimizer_free(o);

    nb_tensor *r = nb_set_requires_grad(nb_arange(-3, 3, 1), true);
    o = nb_rmsprop(1, &r, NULL);
    quad_grad(r, 0.5f); /* g = 2r - 1: negative for r <= 0, positive above */
    cr_assert_eq(nb_optimizer_step(o), 0);
    EXPECT_VALUES(r, 1e-5, -2.9f, -1.9f, -0.9f, 0.1f, 0.9f, 1.9f);
    nb_optimizer_free(o);
}

/* The loss sum((p - target)^2) in a training loop as a user writes it: one
 * scope per step, kept parameters, nothing released by hand but them. */
static void fit(nb_optimizer *(*make)(nb_tensor *p), int steps, double tol) {
    nb_tensor *p = nb_keep(nb_set_requires_grad(nb_zeros(NB_SHAPE(3)), true));
    nb_tensor *target = nb_keep(nb_from_array(NB_SHAPE(3), (const float[]){0.5f, -1.5f, 2.0f}));
    nb_optimizer *o = make(p);
    cr_assert_not_null(o, "%s", nb_error() ? nb_error() : "?");
    int64_t live = -1; /* measured after the first step, which creates p's .grad */
    for (int k = 0; k < steps; k++) {
        nb_scope_begin();
        nb_optimizer_zero_grad(o);
        nb_tensor *y = nb_square(nb_sub(p, target));
        cr_assert_eq(nb_backward_ex(y, nb_ones_like(y), NULL), 0);
        cr_assert_eq(nb_optimizer_step(o), 0);
        nb_scope_end();
        if (k == 0) live = nb_live_tensors();
        cr_assert_eq(nb_live_tensors(), live, "step %d leaked tensors", k);
    }
    const float *d = nb_data(p);
    for (int j = 0; j < 3; j++)
        cr_expect(fabs((double)d[j] - (double)nb_data(target)[j]) < tol,
                  "%s: element %d is %g, target %g", nb_optimizer_name(o), j, (double)d[j],
                  (double)nb_data(target)[j]);
    nb_optimizer_free(o);
    nb_release(target);
    nb_release(p);
}

static nb_optimizer *make_sgd(nb_tensor *p) {
    return nb_sgd(1, &p, &(nb_sgd_opts){.lr = 0.05f, .momentum = 0.9f, .nesterov = true});
}
static nb_optimizer *make_adam(nb_tensor *p) {
    nb_adam_opts op = nb_adam_defaults();
    op.lr = 0.05f;
    op.amsgrad = true;
    return nb_adam(1, &p, &op);
}
static nb_optimizer *make_adamw(nb_tensor *p) {
    nb_adam_opts op = nb_adamw_defaults();
    op.lr = 0.05f;
    op.weight_decay = 0.0f;
    return nb_adamw(1, &p, &op);
}
static nb_optimizer *make_rmsprop(nb_tensor *p) {
    nb_rmsprop_opts op = nb_rmsprop_defaults();
    op.centered = true;
    op.momentum = 0.5f;
    return nb_rmsprop(1, &p, &op);
}
static nb_optimizer *make_adagrad(nb_tensor *p) {
    nb_adagrad_opts op = nb_adagrad_defaults();
    op.lr = 0.5f;
    return nb_adagrad(1, &p, &op);
}

Test(optim, training_loops_converge) {
    fit(make_sgd, 400, 1e-4);
    fit(make_adam, 1000, 1e-2);
    fit(make_adamw, 1000, 1e-2);
    fit(make_rmsprop, 1000, 1e-2);
    fit(make_adagrad, 1000, 1e-2);
}

/* ---- bad input ------------------------------------------------------------------------- */

Test(optim, bad_parameter_lists) {
    nb_tensor *p = start();
    nb_tensor *plain = nb_zeros(NB_SHAPE(2));
    nb_tensor *computed = nb_mul_scalar(p, 2.0f);
    nb_tensor *named = nb_set_name(nb_zeros(NB_SHAPE(4, 5)), "w");

    cr_expect_null(nb_sgd(0, &p, NULL));
    EXPECT_ERROR("nb_sgd", "no parameters");
    cr_expect_null(nb_adam(2, NULL, NULL));
    EXPECT_ERROR("nb_adam", "no parameters");
    cr_expect_null(nb_adamw(-1, &p, NULL));
    EXPECT_ERROR("nb_adamw", "no parameters");
    cr_expect_null(nb_rmsprop(2, (nb_tensor *[]){p, NULL}, NULL));
    EXPECT_ERROR("nb_rmsprop", "parameter 1", "NULL");
    cr_expect_null(nb_adagrad(2, (nb_tensor *[]){p, plain}, NULL));
    EXPECT_ERROR("nb_adagrad", "parameter 1", "[2]", "does not require grad");
    cr_expect_null(nb_sgd(1, &named, NULL));
    EXPECT_ERROR("nb_sgd", "parameter 0", "'w'", "[4,5]", "does not require grad");
    cr_expect_null(nb_adam(1, &computed, NULL));
    EXPECT_ERROR("nb_adam", "parameter 0", "not a leaf");
    cr_expect_null(nb_sgd(3, (nb_tensor *[]){p, nb_set_requires_grad(plain, true), p}, NULL));
    EXPECT_ERROR("nb_sgd", "parameter 2", "listed twice", "parameter 0");
}

Test(optim, bad_options) {
    nb_tensor *p = start();
    nb_optimizer *o;
#define REFUSED(call, ...)                                                                 \
    do {                                                                                   \
        nb_clear_error();                                                                  \
        o = (call);                                                                        \
        cr_expect_null(o, #call " should fail");                                           \
        nb_optimizer_free(o);                                                              \
        EXPECT_ERROR(__VA_ARGS__);                                                         \
    } while (0)

    REFUSED(nb_sgd(1, &p, &(nb_sgd_opts){.lr = -0.1f}), "nb_sgd", "lr", "-0.1");
    REFUSED(nb_sgd(1, &p, &(nb_sgd_opts){.lr = NAN}), "nb_sgd", "lr", "nan");
    REFUSED(nb_sgd(1, &p, &(nb_sgd_opts){.lr = INFINITY}), "nb_sgd", "lr", "inf");
    REFUSED(nb_sgd(1, &p, &(nb_sgd_opts){.lr = 0.1f, .momentum = -0.5f}), "nb_sgd", "momentum");
    REFUSED(nb_sgd(1, &p, &(nb_sgd_opts){.lr = 0.1f, .momentum = 0.9f, .dampening = 2.0f}),
            "nb_sgd", "dampening", "2");
    REFUSED(nb_sgd(1, &p, &(nb_sgd_opts){.lr = 0.1f, .weight_decay = -1.0f}), "nb_sgd",
            "weight_decay");
    REFUSED(nb_sgd(1, &p, &(nb_sgd_opts){.lr = 0.1f, .nesterov = true}), "nb_sgd", "nesterov",
            "momentum");
    REFUSED(nb_sgd(1, &p,
                   &(nb_sgd_opts){.lr = 0.1f, .momentum = 0.9f, .dampening = 0.1f,
                                  .nesterov = true}),
            "nb_sgd", "nesterov", "dampening");

    nb_adam_opts a = nb_adam_defaults();
    a.beta1 = 1.0f;
    REFUSED(nb_adam(1, &p, &a), "nb_adam", "beta1", "[0, 1)", "1");
    a = nb_adam_defaults();
    a.beta2 = -0.1f;
    REFUSED(nb_adamw(1, &p, &a), "nb_adamw", "beta2", "-0.1");
    a = nb_adam_defaults();
    a.eps = -1e-8f;
    REFUSED(nb_adam(1, &p, &a), "nb_adam", "eps");
    a = nb_adam_defaults();
    a.lr = -1e-3f;
    REFUSED(nb_adam(1, &p, &a), "nb_adam", "lr");
    a = nb_adam_defaults();
    a.weight_decay = -0.01f;
    REFUSED(nb_adamw(1, &p, &a), "nb_adamw", "weight_decay");

    nb_rmsprop_opts r = nb_rmsprop_defaults();
    r.alpha = 1.5f;
    REFUSED(nb_rmsprop(1, &p, &r), "nb_rmsprop", "alpha", "1.5");
    r = nb_rmsprop_defaults();
    r.eps = -1.0f;
    REFUSED(nb_rmsprop(1, &p, &r), "nb_rmsprop", "eps");
    r = nb_rmsprop_defaults();
    r.momentum = -0.9f;
    REFUSED(nb_rmsprop(1, &p, &r), "nb_rmsprop", "momentum");
    r = nb_rmsprop_defaults();
    r.lr = NAN;
    REFUSED(nb_rmsprop(1, &p, &r), "nb_rmsprop", "lr");

    nb_adagrad_opts g = nb_adagrad_defaults();
    g.lr_decay = -0.5f;
    REFUSED(nb_adagrad(1, &p, &g), "nb_adagrad", "lr_decay");
    g = nb_adagrad_defaults();
    g.initial_accumulator_value = -1.0f;
    REFUSED(nb_adagrad(1, &p, &g), "nb_adagrad", "initial_accumulator_value");
    g = nb_adagrad_defaults();
    g.eps = -1.0f;
    REFUSED(nb_adagrad(1, &p, &g), "nb_adagrad", "eps");
#undef REFUSED
}

Test(optim, null_optimizer) {
    nb_clear_error();
    cr_expect_eq(nb_optimizer_step(NULL), -1);
    nb_optimizer_zero_grad(NULL);
    nb_optimizer_set_lr(NULL, 0.1f);
    cr_expect(isnan(nb_optimizer_lr(NULL)));
    cr_expect_null(nb_optimizer_name(NULL));
    cr_expect_eq(nb_optimizer_steps(NULL), 0);
    cr_expect_eq(nb_optimizer_num_params(NULL), 0);
    cr_expect_null(nb_optimizer_param(NULL, 0));
    cr_expect_null(nb_optimizer_state(NULL, 0, "exp_avg"));
    nb_optimizer_free(NULL);
    cr_expect_null(nb_error(), "NULL passes through without a message");
}

/* ---- the Keras forms: eps inside the root, eps hat ----------------------------------------
 * p = [1] and the gradient of sum(p), g = 1, at every step. The numbers are
 * large (eps 0.25) so that where eps goes shows in the first digits. */

static void two_unit_steps(nb_optimizer *o, nb_tensor *p, float want1, float want2) {
    cr_assert_not_null(o, "constructor failed: %s", nb_error() ? nb_error() : "?");
    const float want[2] = {want1, want2};
    for (int k = 0; k < 2; k++) {
        nb_zero_grad(p);
        nb_scope_begin();
        cr_assert_eq(nb_backward(nb_sum(p, NB_ALL, false)), 0, "%s", nb_error());
        nb_scope_end();
        cr_assert_eq(nb_optimizer_step(o), 0, "%s", nb_error());
        cr_expect(fabs((double)nb_data(p)[0] - (double)want[k]) <= TOL, "%s step %d: %.9g, expected %.9g",
                  nb_optimizer_name(o), k + 1, (double)nb_data(p)[0], (double)want[k]);
    }
    nb_optimizer_free(o);
}

static nb_tensor *one(void) { return nb_set_requires_grad(nb_ones(NB_SHAPE(1)), true); }

Test(optim, rmsprop_eps_inside_sqrt) {
    /* lr 0.1, alpha 0.5, eps 0.25, p -= lr g / sqrt(v + eps):
     * t=1: v = 0.5*0   + 0.5*1 = 0.5,  p = 1          - 0.1/sqrt(0.75) = 0.88452995
     * t=2: v = 0.5*0.5 + 0.5*1 = 0.75, p = 0.88452995 - 0.1/sqrt(1)    = 0.78452995
     * (eps outside, PyTorch's: 1 - 0.1/(sqrt(0.5) + 0.25) = 0.89084758) */
    nb_tensor *p = one();
    nb_rmsprop_opts op = {.lr = 0.1f, .alpha = 0.5f, .eps = 0.25f, .eps_inside_sqrt = true};
    two_unit_steps(nb_rmsprop(1, &p, &op), p, 0.88452995f, 0.78452995f);
    /* centered: a = 0.5, then 0.75; sqrt(v - a^2 + eps):
     * t=1: sqrt(0.5  - 0.25   + 0.25) = 0.70710678, p = 1          - 0.14142136 = 0.85857864
     * t=2: sqrt(0.75 - 0.5625 + 0.25) = 0.66143783, p = 0.85857864 - 0.15118579 = 0.70739285 */
    p = one();
    op.centered = true;
    two_unit_steps(nb_rmsprop(1, &p, &op), p, 0.85857864f, 0.70739285f);
}

Test(optim, adagrad_eps_inside_sqrt) {
    /* lr 0.1, initial accumulator 0.5, eps 0.25, p -= lr g / sqrt(s + eps):
     * t=1: s = 0.5 + 1 = 1.5, p = 1          - 0.1/sqrt(1.75) = 0.92440711
     * t=2: s = 1.5 + 1 = 2.5, p = 0.92440711 - 0.1/sqrt(2.75) = 0.86410484
     * (eps outside: 1 - 0.1/(sqrt(1.5) + 0.25) = 0.93218624) */
    nb_tensor *p = one();
    nb_adagrad_opts op = {.lr = 0.1f, .eps = 0.25f, .initial_accumulator_value = 0.5f,
                          .eps_inside_sqrt = true};
    two_unit_steps(nb_adagrad(1, &p, &op), p, 0.92440711f, 0.86410484f);
}

Test(optim, adam_eps_hat) {
    /* lr 0.1, beta1 0.5, beta2 0.75, eps 0.25 added to sqrt(v) before the
     * bias correction: p -= lr sqrt(1 - beta2^t) / (1 - beta1^t) m / (sqrt(v) + eps)
     * t=1: m = 0.5,  v = 0.25,   step = 0.1 * 0.5 / 0.5 * 0.5 / (0.5 + 0.25)
     *                                 = 0.066666667,          p = 0.93333333
     * t=2: m = 0.75, v = 0.4375, step = 0.1 * sqrt(0.4375) / 0.75 * 0.75 / (sqrt(0.4375) + 0.25)
     *                                 = 0.066143783 / 0.91143783 = 0.072570811, p = 0.86076252
     * (PyTorch's eps: t=1 step = 0.2 * 0.5 / (1 + 0.25) = 0.08) */
    nb_tensor *p = one();
    nb_adam_opts op = {.lr = 0.1f, .beta1 = 0.5f, .beta2 = 0.75f, .eps = 0.25f, .eps_hat = true};
    two_unit_steps(nb_adam(1, &p, &op), p, 0.93333333f, 0.86076252f);
    /* AdamW decays first: p = 1 - 0.1 * 0.5 * 1 = 0.95, then the same step:
     * t=1: 0.95 - 0.066666667 = 0.88333333
     * t=2: 0.88333333 * 0.95 - 0.072570811 = 0.83916667 - 0.072570811 = 0.76659586 */
    p = one();
    op.weight_decay = 0.5f;
    two_unit_steps(nb_adamw(1, &p, &op), p, 0.88333333f, 0.76659586f);
}

/* ---- one pass over all parameters ------------------------------------------------------
 * A step is one range over every gradient element, cut over the thread pool
 * wherever the cut falls, mid-parameter included. Each optimizer, with the
 * options that keep the most state, stepping three parameters together on
 * three threads (a 70,001-element one cut in pieces, a small one, one with
 * no gradient, which must not move) must give the bits of three optimizers
 * each stepping one parameter on one thread. */
typedef nb_optimizer *(*many_fn)(int n, nb_tensor *const *p);
static nb_optimizer *many_sgd(int n, nb_tensor *const *p) {
    return nb_sgd(n, p, &(nb_sgd_opts){.lr = 0.1f, .momentum = 0.9f, .weight_decay = 0.01f, .nesterov = true});
}
static nb_optimizer *many_adam(int n, nb_tensor *const *p) {
    nb_adam_opts o = nb_adam_defaults();
    o.amsgrad = true;
    o.weight_decay = 0.01f;
    return nb_adamw(n, p, &o);
}
static nb_optimizer *many_rmsprop(int n, nb_tensor *const *p) {
    nb_rmsprop_opts o = nb_rmsprop_defaults();
    o.centered = true;
    o.momentum = 0.5f;
    return nb_rmsprop(n, p, &o);
}
static nb_optimizer *many_adagrad(int n, nb_tensor *const *p) {
    return nb_adagrad(n, p, &(nb_adagrad_opts){.lr = 0.1f, .lr_decay = 0.01f, .eps = 1e-10f});
}

static void set_grads(nb_tensor *const *p, int with_grad) {
    nb_scope_begin();
    for (int i = 0; i < with_grad; i++) {
        nb_zero_grad(p[i]);
        nb_tensor *g = nb_uniform(NULL, -1, 1, nb_ndim(p[i]), nb_shape(p[i]));
        cr_assert_eq(nb_backward(nb_sum(nb_mul(p[i], g), NB_ALL, false)), 0, "%s", nb_error());
    }
    nb_scope_end();
}

Test(optim, one_pass_over_all_parameters_cut_anywhere) {
    static const many_fn makers[] = {many_sgd, many_adam, many_rmsprop, many_adagrad};
    static const int64_t sizes[3] = {70001, 13, 5000};
    for (int m = 0; m < 4; m++) {
        nb_manual_seed(7);
        nb_tensor *joint[3], *alone[3];
        for (int i = 0; i < 3; i++) {
            joint[i] = nb_set_requires_grad(nb_uniform(NULL, -1, 1, NB_SHAPE(sizes[i])), true);
            alone[i] = nb_set_requires_grad(nb_detach(nb_clone(joint[i])), true);
        }
        nb_optimizer *all = makers[m](3, joint), *one[3];
        for (int i = 0; i < 3; i++) one[i] = makers[m](1, &alone[i]);
        for (int step = 0; step < 3; step++) {
            nb_manual_seed(100 + (uint64_t)step);
            set_grads(joint, 2); /* the third has no .grad */
            nb_manual_seed(100 + (uint64_t)step);
            set_grads(alone, 2);
            nb_set_num_threads(3);
            cr_assert_eq(nb_optimizer_step(all), 0, "%s", nb_error());
            nb_set_num_threads(1);
            for (int i = 0; i < 3; i++) cr_assert_eq(nb_optimizer_step(one[i]), 0, "%s", nb_error());
        }
        nb_set_num_threads(0);
        for (int i = 0; i < 3; i++) {
            cr_assert(memcmp(nb_data(joint[i]), nb_data(alone[i]), sizeof(float) * (size_t)sizes[i]) == 0,
                      "%s: parameter %d differs between one pass over all and a step of its own",
                      nb_optimizer_name(all), i);
            nb_optimizer_free(one[i]);
        }
        cr_assert_eq(nb_optimizer_param_steps(all, 2), 0);
        nb_optimizer_free(all);
    }
}

/* nb_optimizer_clear_grad drops every .grad (PyTorch's set_to_none): a
 * parameter that gets no new gradient is then left alone by the step, its
 * value and step count unchanged, while nb_optimizer_zero_grad would have
 * stepped it with zeros (Adam's momentum moves it even so). */
Test(optim, clear_grad_leaves_unreached_parameters_alone) {
    nb_tensor *p[2] = {start(), start()};
    nb_optimizer *o = nb_adam(2, p, NULL);
    quad_grad(p[0], 0.0f);
    quad_grad(p[1], 0.0f);
    cr_assert_eq(nb_optimizer_step(o), 0, "%s", nb_error());
    nb_optimizer_clear_grad(o);
    cr_assert_null(nb_grad_of(p[0]));
    cr_assert_null(nb_grad_of(p[1]));
    float before[2];
    memcpy(before, nb_data(p[1]), sizeof before);
    quad_grad(p[0], 0.0f);
    cr_assert_eq(nb_optimizer_step(o), 0, "%s", nb_error());
    cr_assert(memcmp(before, nb_data(p[1]), sizeof before) == 0, "a parameter without .grad moved");
    cr_assert_eq(nb_optimizer_param_steps(o, 0), 2);
    cr_assert_eq(nb_optimizer_param_steps(o, 1), 1);
    nb_optimizer_zero_grad(o); /* a NULL .grad stays NULL, a kept one becomes zeros */
    cr_assert_null(nb_grad_of(p[1]));
    EXPECT_VALUES(nb_grad_of(p[0]), 0, 0, 0);
    nb_optimizer_clear_grad(NULL); /* no crash */
    nb_optimizer_free(o);
}
