/* unary.c — elementwise functions of one tensor: neg, exp, log, sqrt, abs,
 * sign, sin, cos, square, erf.
 *
 * Shapes: x (any) -> out (same). Each op is a loop in its forward and, in
 * its backward, the textbook derivative written with ops, so that it can be
 * differentiated again:
 *
 *   neg     -g                  exp     g * y
 *   log     g / x               sqrt    g * 0.5 / y
 *   abs     g * sign(x)         sign    0
 *   sin     g * cos(x)          cos     -g * sin(x)
 *   square  g * 2x              erf     g * 2/sqrt(pi) * exp(-x^2)
 *
 * Forward mode: each Jacobian is diagonal, hence symmetric, so each op's jvp
 * rule is its backward applied to the tangent (nb_symmetric_jvp): the
 * column above with g read as dx gives dy.
 */
#include "ops_internal.h"
#include "vmath_internal.h"

static void neg_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    (void)y;
    gx[0] = nb_neg(g);
}
static const nb_op neg_op = {"neg", neg_backward, nb_symmetric_jvp};
nb_tensor *nb_neg(nb_tensor *x) {
    if (!x) return NULL;
    NB_UNARY_FORWARD(x, y, -v);
    return nb_record(y, &neg_op, 1, &x);
}

static void exp_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    gx[0] = nb_mul(g, nb_saved(y, 0));
}
static const nb_op exp_op = {"exp", exp_backward, nb_symmetric_jvp};
nb_tensor *nb_exp(nb_tensor *x) {
    if (!x) return NULL;
    NB_UNARY_FORWARD(x, y, nb__expf(v)); /* within 2 ulp, and the loop vectorises */
    y = nb_record(y, &exp_op, 1, &x);
    nb_save(y, y);
    return y;
}

static void log_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    gx[0] = nb_div(g, nb_saved(y, 0));
}
static const nb_op log_op = {"log", log_backward, nb_symmetric_jvp};
nb_tensor *nb_log(nb_tensor *x) {
    if (!x) return NULL;
    NB_UNARY_FORWARD(x, y, logf(v));
    y = nb_record(y, &log_op, 1, &x);
    nb_save(y, x);
    return y;
}

static void sqrt_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    gx[0] = nb_div(nb_mul_scalar(g, 0.5f), nb_saved(y, 0));
}
static const nb_op sqrt_op = {"sqrt", sqrt_backward, nb_symmetric_jvp};
nb_tensor *nb_sqrt(nb_tensor *x) {
    if (!x) return NULL;
    NB_UNARY_FORWARD(x, y, sqrtf(v));
    y = nb_record(y, &sqrt_op, 1, &x);
    nb_save(y, y);
    return y;
}

/* sign is piecewise constant: recorded so that it is a proper node, with a
 * zero gradient. */
static void sign_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    (void)y;
    gx[0] = nb_mul_scalar(g, 0.0f);
}
static const nb_op sign_op = {"sign", sign_backward, nb_symmetric_jvp};
nb_tensor *nb_sign(nb_tensor *x) {
    if (!x) return NULL;
    NB_UNARY_FORWARD(x, y, v > 0 ? 1.0f : v < 0 ? -1.0f : 0.0f);
    return nb_record(y, &sign_op, 1, &x);
}

static void abs_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    gx[0] = nb_mul(g, nb_sign(nb_saved(y, 0)));
}
static const nb_op abs_op = {"abs", abs_backward, nb_symmetric_jvp};
nb_tensor *nb_abs(nb_tensor *x) {
    if (!x) return NULL;
    NB_UNARY_FORWARD(x, y, fabsf(v));
    y = nb_record(y, &abs_op, 1, &x);
    nb_save(y, x);
    return y;
}

static void sin_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    gx[0] = nb_mul(g, nb_cos(nb_saved(y, 0)));
}
static const nb_op sin_op = {"sin", sin_backward, nb_symmetric_jvp};
nb_tensor *nb_sin(nb_tensor *x) {
    if (!x) return NULL;
    NB_UNARY_FORWARD(x, y, sinf(v));
    y = nb_record(y, &sin_op, 1, &x);
    nb_save(y, x);
    return y;
}

static void cos_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    gx[0] = nb_neg(nb_mul(g, nb_sin(nb_saved(y, 0))));
}
static const nb_op cos_op = {"cos", cos_backward, nb_symmetric_jvp};
nb_tensor *nb_cos(nb_tensor *x) {
    if (!x) return NULL;
    NB_UNARY_FORWARD(x, y, cosf(v));
    y = nb_record(y, &cos_op, 1, &x);
    nb_save(y, x);
    return y;
}

static void square_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    gx[0] = nb_mul(g, nb_mul_scalar(nb_saved(y, 0), 2.0f));
}
static const nb_op square_op = {"square", square_backward, nb_symmetric_jvp};
nb_tensor *nb_square(nb_tensor *x) {
    if (!x) return NULL;
    NB_UNARY_FORWARD(x, y, v * v);
    y = nb_record(y, &square_op, 1, &x);
    nb_save(y, x);
    return y;
}

#define TWO_OVER_SQRT_PI 1.12837916709551257390f

static void erf_backward(nb_tensor *y, nb_tensor *g, nb_tensor **gx) {
    nb_tensor *x = nb_saved(y, 0);
    gx[0] = nb_mul(g, nb_mul_scalar(nb_exp(nb_neg(nb_square(x))), TWO_OVER_SQRT_PI));
}
static const nb_op erf_op = {"erf", erf_backward, nb_symmetric_jvp};
nb_tensor *nb_erf(nb_tensor *x) {
    if (!x) return NULL;
    NB_UNARY_FORWARD(x, y, erff(v));
    y = nb_record(y, &erf_op, 1, &x);
    nb_save(y, x);
    return y;
}
