/* clip.c — gradient clipping, by global norm and by value, as PyTorch's
 * clip_grad_norm_ and clip_grad_value_.
 *
 * Both rewrite the .grad tensors in place between backward and the
 * optimizer step, with plain loops and no graph. The norm is one number over
 * all the gradients (not one per tensor), so clipping keeps the direction of
 * the whole update and only shortens it. It is summed in double, parameter
 * by parameter and element by element, so the result does not depend on
 * anything but the values.
 */
#include "optim_internal.h"

static bool check_list(const char *who, int n, nb_tensor *const *params) {
    if (n >= 0 && (params || n == 0)) return true;
    nb_set_error("%s: bad parameter list (n %d, params %s)", who, n, params ? "set" : "NULL");
    return false;
}

float nb_clip_grad_norm(int n, nb_tensor *const *params, float max_norm) {
    const char *who = "nb_clip_grad_norm";
    if (!check_list(who, n, params) ||
        !nb__optim_check(who, "max_norm", max_norm, 0.0f, INFINITY, false))
        return NAN;
    double sumsq = 0.0;
    for (int i = 0; i < n; i++) {
        const nb_tensor *g = nb_grad_of(params[i]);
        if (!g) continue;
        const float *d = nb_data(g);
        for (int64_t j = 0, m = nb_numel(g); j < m; j++) sumsq += (double)d[j] * (double)d[j];
    }
    double norm = sqrt(sumsq);
    /* The 1e-6 keeps the clipped norm just under max_norm and avoids a
     * division by zero; a NaN or infinite norm scales to NaN or 0 as in
     * PyTorch, so the problem is visible rather than hidden. */
    double coef = (double)max_norm / (norm + 1e-6);
    if (!(coef < 1.0) && !isnan(coef)) return (float)norm;
    const float c = (float)coef;
    for (int i = 0; i < n; i++) {
        nb_tensor *g = nb_grad_of(params[i]);
        if (!g) continue;
        float *d = nb_data_mut(g);
        for (int64_t j = 0, m = nb_numel(g); j < m; j++) d[j] *= c;
    }
    return (float)norm;
}

void nb_clip_grad_value(int n, nb_tensor *const *params, float clip) {
    const char *who = "nb_clip_grad_value";
    if (!check_list(who, n, params) ||
        !nb__optim_check(who, "clip", clip, 0.0f, INFINITY, false))
        return;
    for (int i = 0; i < n; i++) {
        nb_tensor *g = nb_grad_of(params[i]);
        if (!g) continue;
        float *d = nb_data_mut(g);
        for (int64_t j = 0, m = nb_numel(g); j < m; j++) {
            float v = d[j];
            d[j] = v > clip ? clip : v < -clip ? -clip : v;
        }
    }
}
