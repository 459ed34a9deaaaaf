/* nb_optim.h — optimizers over a list of parameter tensors, learning-rate
 * schedules and gradient clipping.
 *
 * The update rules are exactly PyTorch's documented algorithms (torch.optim
 * SGD, Adam, AdamW, RMSprop, Adagrad), so hyper-parameters and results carry
 * over; the defaults are PyTorch's. Where Keras places eps differently, an
 * option (eps_hat, eps_inside_sqrt) gives Keras's formula, which is what
 * nb_model_compile uses for the optimizer names. A training step reads
 *
 *     nb_optimizer *opt = nb_adam(2, (nb_tensor *[]){w, b}, NULL);
 *     for (...) {
 *         nb_scope_begin();
 *         nb_optimizer_zero_grad(opt);
 *         nb_backward(loss_of(w, b));
 *         nb_optimizer_step(opt);
 *         nb_scope_end();
 *     }
 *     nb_optimizer_free(opt);
 *
 * OWNERSHIP:
 *   An optimizer borrows its parameters: they must outlive it (free the
 *   optimizer first, then release the parameters). It owns its state tensors
 *   (momentum buffers, moving averages), which it keeps outside every scope
 *   and releases in nb_optimizer_free. Optimizers and schedules are plain
 *   heap objects freed with their _free function; a schedule borrows its
 *   optimizer, which must outlive it. Tensors returned by accessors
 *   (nb_optimizer_param, nb_optimizer_state) are borrowed.
 *
 * ERRORS:
 *   Constructors return NULL with a message naming the function and what was
 *   wrong (no parameters, a NULL parameter, one that is not a leaf or does
 *   not require grad, one listed twice, an option out of range); unlike an
 *   op, a constructor reports a NULL parameter, since a hole in the list
 *   is a mistake in the list. A NULL optimizer given to any other function
 *   is ignored without a second message, so a failed constructor is
 *   reported once. A failed nb_optimizer_step changes no parameter.
 *
 * A step reads each parameter's .grad (nb_grad_of) and skips parameters
 * whose .grad is NULL, as PyTorch does; each parameter keeps its own step
 * count, used by the bias corrections and the first-step rules. The update
 * writes the parameter's data in place with no graph recorded, which bumps
 * its version: a backward through a graph that saved the old values
 * reports the change rather than computing a wrong gradient.
 */
#ifndef NB_OPTIM_H
#define NB_OPTIM_H

#include "nb_autograd.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nb_optimizer nb_optimizer;

/* ---- options and their defaults ------------------------------------------ */

/* SGD: b = momentum*b + (1 - dampening)*g (b = g on the first step);
 * g = nesterov ? g + momentum*b : b; p -= lr*g. weight_decay adds wd*p to g. */
typedef struct nb_sgd_opts {
    float lr, momentum, dampening, weight_decay;
    bool nesterov;
} nb_sgd_opts;

/* Adam and AdamW: moving averages of g and g^2 with bias correction;
 * amsgrad divides by the running maximum of the second moment instead.
 * eps_hat places eps as Keras and TensorFlow do (Kingma and Ba's "epsilon
 * hat"): added to sqrt(v) before the bias correction of v, so
 *   p -= lr sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)
 * instead of PyTorch's
 *   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps). */
typedef struct nb_adam_opts {
    float lr, beta1, beta2, eps, weight_decay;
    bool amsgrad;
    bool eps_hat;
} nb_adam_opts;

/* RMSprop: divides g by the root of a moving average of g^2 (minus the
 * square of the moving average of g when centered), optionally through a
 * momentum buffer. eps_inside_sqrt divides by sqrt(v + eps), as Keras and
 * TensorFlow do, instead of PyTorch's sqrt(v) + eps. */
typedef struct nb_rmsprop_opts {
    float lr, alpha, eps, weight_decay, momentum;
    bool centered;
    bool eps_inside_sqrt;
} nb_rmsprop_opts;

/* Adagrad: divides g by the root of the running sum of g^2; the rate decays
 * as lr / (1 + (t - 1)*lr_decay). eps_inside_sqrt divides by sqrt(s + eps),
 * as Keras does, instead of PyTorch's sqrt(s) + eps. */
typedef struct nb_adagrad_opts {
    float lr, lr_decay, weight_decay, eps, initial_accumulator_value;
    bool eps_inside_sqrt;
} nb_adagrad_opts;

/* lr 0.01 (Keras's default), momentum 0, dampening 0, weight_decay 0, no
 * nesterov. */
nb_sgd_opts nb_sgd_defaults(void);
/* lr 1e-3, beta1 0.9, beta2 0.999, eps 1e-8, weight_decay 0, no amsgrad,
 * eps as PyTorch places it (PyTorch's). */
nb_adam_opts nb_adam_defaults(void);
/* As Adam but weight_decay 1e-2 (PyTorch's AdamW). */
nb_adam_opts nb_adamw_defaults(void);
/* lr 1e-2, alpha 0.99, eps 1e-8 outside the root, weight_decay 0,
 * momentum 0, not centered (PyTorch's). */
nb_rmsprop_opts nb_rmsprop_defaults(void);
/* lr 1e-2, lr_decay 0, weight_decay 0, eps 1e-10 outside the root,
 * initial_accumulator_value 0 (PyTorch's). */
nb_adagrad_opts nb_adagrad_defaults(void);

/* ---- optimizers -------------------------------------------------------------
 * Each takes nparams parameters (leaves requiring grad, each listed once,
 * borrowed) and its options (NULL: the defaults). Returns a new optimizer
 * (free it with nb_optimizer_free), or NULL and a message naming the
 * function on bad input: no parameters, a NULL parameter, a parameter that
 * is not a leaf or does not require grad, one listed twice, a negative or
 * non-finite lr, a negative (or NaN) eps, weight_decay, momentum, lr_decay
 * or initial_accumulator_value, a beta outside [0, 1), alpha or dampening
 * outside [0, 1], nesterov without momentum or with dampening. The state
 * tensors are made here (zeros, or initial_accumulator_value), so a step
 * never allocates. */

nb_optimizer *nb_sgd(int nparams, nb_tensor *const *params, const nb_sgd_opts *opts);
/* weight_decay is an L2 term added to the gradient. */
nb_optimizer *nb_adam(int nparams, nb_tensor *const *params, const nb_adam_opts *opts);
/* Decoupled weight decay: p -= lr*weight_decay*p, then the Adam step
 * without the L2 term. */
nb_optimizer *nb_adamw(int nparams, nb_tensor *const *params, const nb_adam_opts *opts);
nb_optimizer *nb_rmsprop(int nparams, nb_tensor *const *params, const nb_rmsprop_opts *opts);
nb_optimizer *nb_adagrad(int nparams, nb_tensor *const *params, const nb_adagrad_opts *opts);

/* Updates every parameter that has a .grad, in place. Returns 0, or -1 and
 * a message when a .grad does not have its parameter's shape (then no
 * parameter is changed). NULL: -1 without a message. */
int nb_optimizer_step(nb_optimizer *o);
/* nb_zero_grad on every parameter (a NULL .grad stays NULL). */
void nb_optimizer_zero_grad(nb_optimizer *o);
/* nb_clear_grad on every parameter (PyTorch's zero_grad(set_to_none=True)):
 * the next backward hands its gradients over instead of adding them to
 * zeros, and a parameter it does not reach has no .grad, so the next step
 * leaves it and its state alone. */
void nb_optimizer_clear_grad(nb_optimizer *o);
/* The learning rate the next step uses; NAN for NULL. */
float nb_optimizer_lr(const nb_optimizer *o);
/* Sets the learning rate; a negative or non-finite lr is an error (message,
 * lr unchanged). */
void nb_optimizer_set_lr(nb_optimizer *o, float lr);
/* "sgd", "adam", "adamw", "rmsprop" or "adagrad" (static string); NULL for
 * NULL. */
const char *nb_optimizer_name(const nb_optimizer *o);
/* Calls to nb_optimizer_step that succeeded; 0 for NULL. */
int64_t nb_optimizer_steps(const nb_optimizer *o);
/* Steps that updated parameter i (those where it had a .grad): the t of the
 * published formulas. -1 and a message if i is out of range. */
int64_t nb_optimizer_param_steps(const nb_optimizer *o, int i);
/* The number of parameters; 0 for NULL. */
int nb_optimizer_num_params(const nb_optimizer *o);
/* Parameter i, borrowed; NULL and a message if i is out of range. */
nb_tensor *nb_optimizer_param(const nb_optimizer *o, int i);
/* State of parameter i for inspection, borrowed (valid until the optimizer
 * is freed; writing to it changes later steps): "momentum_buffer" (sgd with
 * momentum), "exp_avg", "exp_avg_sq", "max_exp_avg_sq" (adam and adamw, the
 * last with amsgrad), "square_avg", "grad_avg" (centered), "momentum_buffer"
 * (rmsprop with momentum), "sum" (adagrad). NULL when the optimizer keeps no
 * such state; NULL and a message if i is out of range. */
nb_tensor *nb_optimizer_state(const nb_optimizer *o, int param, const char *name);
/* Releases the state and the optimizer, not the parameters. NULL is fine. */
void nb_optimizer_free(nb_optimizer *o);

/* ---- learning-rate schedules --------------------------------------------------
 * A schedule sets its optimizer's lr from the lr the optimizer had when the
 * schedule was made (base) and an epoch counter t that starts at 0. Making
 * it sets lr for t = 0; each nb_lr_schedule_step advances t by one and sets
 * the lr again (call it once per epoch, or once per step for warmup). An lr
 * set by hand in between is overwritten at the next step. Each returns a
 * new schedule (free it with nb_lr_schedule_free), or NULL and a message
 * naming the function on a bad argument; NULL when o is NULL. */

typedef struct nb_lr_schedule nb_lr_schedule;

/* lr = base * gamma^floor(t / step_size); step_size >= 1, gamma >= 0. */
nb_lr_schedule *nb_step_lr(nb_optimizer *o, int step_size, float gamma);
/* lr = base * gamma^t; gamma >= 0. */
nb_lr_schedule *nb_exponential_lr(nb_optimizer *o, float gamma);
/* lr = eta_min + (base - eta_min)(1 + cos(pi t / t_max)) / 2; t_max >= 1,
 * eta_min >= 0. Past t_max the cosine goes on (back up to base at 2 t_max),
 * as PyTorch's CosineAnnealingLR does. */
nb_lr_schedule *nb_cosine_lr(nb_optimizer *o, int t_max, float eta_min);
/* lr = base * (f + (1 - f) min(t, warmup_steps) / warmup_steps) with f =
 * start_factor: linear from f*base to base, then constant (PyTorch's
 * LinearLR). warmup_steps >= 1, start_factor in [0, 1]. */
nb_lr_schedule *nb_warmup_lr(nb_optimizer *o, int warmup_steps, float start_factor);
/* Advances t by one and sets the optimizer's lr. NULL is ignored. */
void nb_lr_schedule_step(nb_lr_schedule *s);
/* The lr the schedule last set; NAN for NULL. */
float nb_lr_schedule_lr(const nb_lr_schedule *s);
/* The epoch counter t (0 after creation); -1 for NULL. */
int64_t nb_lr_schedule_epoch(const nb_lr_schedule *s);
/* Frees the schedule, not its optimizer. NULL is fine. */
void nb_lr_schedule_free(nb_lr_schedule *s);

/* ---- gradient clipping ----------------------------------------------------------
 * Both work in place on the .grad of n parameters, each listed once; NULL
 * parameters and NULL .grads are skipped. No graph is recorded. */

/* Scales every .grad by c = max_norm / (norm + 1e-6) when c < 1, where norm
 * is the global L2 norm over all of them (PyTorch's clip_grad_norm_; the
 * 1e-6 guards against a zero norm). Returns the
 * norm before clipping, summed in double in a fixed order; NAN and a
 * message if max_norm is negative or NaN, or n < 0, or params is NULL with
 * n > 0. */
float nb_clip_grad_norm(int n, nb_tensor *const *params, float max_norm);
/* Clamps each .grad element to [-clip, clip] (NaN stays NaN). A negative
 * or NaN clip is an error (message, nothing changed). */
void nb_clip_grad_value(int n, nb_tensor *const *params, float clip);

/* ---- saving and restoring an optimizer (for checkpoints) -------------------------
 * What nb_save_checkpoint stores beside the state tensors. */

/* The names of the state an optimizer of this kind may keep per parameter
 * (k from 0 to nb_optimizer_num_states - 1): "exp_avg", "exp_avg_sq",
 * "max_exp_avg_sq" for adam, say. nb_optimizer_state(o, i, name) is NULL
 * for a name the options leave unused. 0 and NULL for NULL or k out of range. */
int nb_optimizer_num_states(const nb_optimizer *o);
const char *nb_optimizer_state_name(const nb_optimizer *o, int k);
/* Sets the step counts nb_optimizer_steps and nb_optimizer_param_steps
 * report (and the bias corrections use). A negative count or i out of
 * range is an error: -1, a message, nothing changed. */
int nb_optimizer_set_steps(nb_optimizer *o, int64_t steps);
int nb_optimizer_set_param_steps(nb_optimizer *o, int i, int64_t steps);
/* Moves a schedule to epoch t (>= 0) and sets its optimizer's lr as a
 * schedule made fresh and stepped t times would. -1 and a message on a
 * negative t; -1 for NULL. */
int nb_lr_schedule_set_epoch(nb_lr_schedule *s, int64_t t);

#ifdef __cplusplus
}
#endif
#endif
