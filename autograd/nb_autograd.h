/* nb_autograd.h — nabla's core: the tensor (which is also the graph node),
 * ownership scopes, grad mode, the backward engine, the op API that every op
 * in ops/ is written with, the error channel, random numbers and gradcheck.
 *
 * OWNERSHIP — the one rule:
 *   Every tensor a function returns belongs to the innermost open scope
 *   (nb_scope_begin ... nb_scope_end) and is released when that scope ends,
 *   unless you nb_keep it; a kept tensor, or one made while no scope is open,
 *   is yours until you nb_release it.
 * A graph node holds strong references to its inputs, so closing a scope over
 * a whole training step frees the step and keeps whatever is still reachable
 * from a kept tensor. Pointers returned by accessors (nb_data, nb_shape,
 * nb_grad_of, nb_name, nb_error) are borrowed: valid while the tensor lives.
 * A backward with create_graph into a leaf's .grad makes a cycle (the
 * gradient's graph holds the leaf; PyTorch warns about it). nabla frees it:
 * when the leaf, or the gradient itself, is left with no owner (scope,
 * caller or container), nabla walks the graph reachable from it and, if
 * nothing outside holds any of it, unlinks the .grad of the unreachable
 * tensors so that all of it is freed. A leaf's .grad stays readable as long
 * as the leaf or anything holding it lives. Limits: a tensor from inside a
 * gradient's graph (reached with nb_input) that you keep must be released
 * before the leaf, or the cycle stays; and that release must not overlap
 * another thread's use of the same graph (the walk reads reference counts).
 *
 * ERRORS — the one rule:
 *   A function given bad input returns NULL (or -1) and sets a thread-local
 *   message naming the function and the shapes, read with nb_error(); given a
 *   NULL tensor it returns NULL without a second message, so a whole
 *   expression can be checked once at the end.
 * Nothing aborts unless you install nb_abort_on_error as the error handler.
 *
 * THREADS: grad mode, open scopes, the error message and the default random
 * generator are per thread. Reference counts are atomic, so tensors may be
 * read and used as op inputs from several threads at once; a tensor must not
 * be written (nb_data_mut, backward into its .grad) while another thread uses
 * it. Each thread may differentiate a graph of its own with nb_grad even
 * when the graphs share leaves such as parameters: a traversal keeps its
 * bookkeeping outside the nodes, and nb_grad writes no .grad. Two
 * nb_backward calls that reach one leaf must not overlap (both write its
 * .grad), and a non-leaf shared by two concurrent traversals needs
 * retain_graph in both (freeing the graph releases its saved values).
 */
#ifndef NB_AUTOGRAD_H
#define NB_AUTOGRAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NB_MAX_DIMS 8   /* tensors have 0 to 8 dimensions */
#define NB_MAX_SAVED 4  /* tensors an op may save for its backward */
#define NB_MAX_ATTRS 8  /* scalar attributes an op may keep for its backward */

typedef struct nb_tensor nb_tensor;

/* Shape and axis lists written inline:
 *   nb_zeros(NB_SHAPE(3, 4))             a 3x4 tensor
 *   nb_zeros(NB_SHAPE())                 a 0-dimensional tensor (one value)
 *   nb_sum(x, NB_AXES(0, 2), true)       reduce axes 0 and 2, keep them as 1
 *   nb_sum(x, NB_ALL, false)             reduce every axis
 * Each expands to a count and a pointer. The arrays start with a dummy 0, so
 * that an empty list is still valid C; the pointer skips it. */
#define NB_SHAPE(...)                                                         \
    (int)(sizeof((int64_t[]){0, __VA_ARGS__}) / sizeof(int64_t) - 1),         \
        ((const int64_t[]){0, __VA_ARGS__} + 1)
#define NB_AXES(...)                                                          \
    (int)(sizeof((int[]){0, __VA_ARGS__}) / sizeof(int) - 1),                 \
        ((const int[]){0, __VA_ARGS__} + 1)
#define NB_ALL 0, (const int *)0

/* ---- ownership ---------------------------------------------------------- */

/* Opens a scope; every tensor created until the matching nb_scope_end belongs
 * to it. Scopes nest. Returns the new depth (>= 1). */
int nb_scope_begin(void);
/* Releases every tensor the innermost scope still owns and closes it.
 * Tensors reachable from kept tensors (through a graph or .grad) survive. */
void nb_scope_end(void);
/* Takes t out of its scope: t is now yours until nb_release. Returns t.
 * Keeping a tensor you already own does nothing. NULL passes through; a
 * tensor already freed gives NULL and an error (see nb_release). */
nb_tensor *nb_keep(nb_tensor *t);
/* Moves t from the innermost scope to the scope enclosing it (or to you when
 * there is none): how a function with its own scope returns a result. */
nb_tensor *nb_escape(nb_tensor *t);
/* Gives up your reference to a tensor you own (kept, or made outside any
 * scope). Releasing a scope-owned or container-held tensor is an error and
 * does nothing. So is releasing a tensor already freed ("nb_release: tensor
 * was already freed"): a freed tensor's memory is marked dead and held back
 * from reuse while NB_QUARANTINE (1024) more tensors are freed. Beyond that
 * the handle may point at a new tensor, and a stale release would free it:
 * the check catches a double release soon after the first, not every
 * use of a handle kept for long after its tensor died. */
void nb_release(nb_tensor *t);
/* Containers (a module's parameter list, say) that own tensors: nb_adopt
 * hands t to the container, which takes over your reference (kept, or made
 * outside scopes) or its scope's, so that t lives until nb_disown. A tensor
 * belongs to at most one container: adopting it again fails, returning NULL
 * with a message naming who (the container's function, for its users), as
 * nb_release of a held tensor does. nb_disown (the container freeing it)
 * drops the container's reference. Returns t. */
nb_tensor *nb_adopt(nb_tensor *t, const char *who);
void nb_disown(nb_tensor *t, const char *who);
/* Tensors currently alive in the process (for leak tests). */
int64_t nb_live_tensors(void);

/* ---- creation (all return a new tensor: see the ownership rule) ---------
 * A valid shape has every dimension >= 0 and nonzero dimensions whose
 * product fits in int64: a zero does not excuse the rest, so [0, 2^62, 2^62]
 * is refused like [2^62, 2^62, 0]. Every function and op that would make
 * another shape returns NULL with a message naming it and the shape; a
 * valid shape too large to allocate gives "out of memory". */

nb_tensor *nb_empty(int ndim, const int64_t *shape); /* values unspecified */
nb_tensor *nb_zeros(int ndim, const int64_t *shape);
nb_tensor *nb_ones(int ndim, const int64_t *shape);
nb_tensor *nb_full(int ndim, const int64_t *shape, float value);
/* Copies numel(shape) floats from data (row-major). */
nb_tensor *nb_from_array(int ndim, const int64_t *shape, const float *data);
nb_tensor *nb_scalar(float value);                   /* 0-dimensional */
nb_tensor *nb_arange(double start, double stop, double step);
nb_tensor *nb_linspace(double start, double stop, int64_t steps);
nb_tensor *nb_eye(int64_t n);
nb_tensor *nb_zeros_like(const nb_tensor *t);
nb_tensor *nb_ones_like(const nb_tensor *t);
nb_tensor *nb_empty_like(const nb_tensor *t);

/* ---- random numbers ----------------------------------------------------- */

/* nabla's own generator (PCG32): the same stream on every platform. Uniform
 * values are bit-identical everywhere; normal values use libm's log. */
typedef struct nb_generator {
    uint64_t state, inc;
    double spare; /* second value of the last Box-Muller pair */
    bool has_spare;
} nb_generator;

void nb_generator_seed(nb_generator *g, uint64_t seed);
uint32_t nb_generator_next(nb_generator *g);     /* uniform 32-bit integer */
double nb_generator_uniform(nb_generator *g);    /* uniform in [0, 1) */
double nb_generator_normal(nb_generator *g);     /* standard normal */
/* The calling thread's default generator, seeded with 0 until nb_manual_seed. */
nb_generator *nb_default_generator(void);
void nb_manual_seed(uint64_t seed);

/* gen NULL means the default generator. */
nb_tensor *nb_uniform(nb_generator *gen, float low, float high, int ndim, const int64_t *shape);
nb_tensor *nb_normal(nb_generator *gen, float mean, float std, int ndim, const int64_t *shape);
nb_tensor *nb_rand(int ndim, const int64_t *shape);  /* uniform [0, 1) */
nb_tensor *nb_randn(int ndim, const int64_t *shape); /* standard normal */
/* A random permutation of 0..n-1 (Fisher-Yates), written to out. */
void nb_randperm(nb_generator *gen, int64_t n, int64_t *out);

/* ---- queries ------------------------------------------------------------ */

int nb_ndim(const nb_tensor *t);
const int64_t *nb_shape(const nb_tensor *t);          /* borrowed, ndim entries */
int64_t nb_dim(const nb_tensor *t, int axis);         /* axis may be negative */
int64_t nb_numel(const nb_tensor *t);
/* Read-only view of the data, contiguous row-major, 64-byte aligned. */
const float *nb_data(const nb_tensor *t);
/* Writable data. Bumps the tensor's version, so that a backward needing the
 * old values reports the change instead of computing a wrong gradient. */
float *nb_data_mut(nb_tensor *t);
/* The single value of a one-element tensor; NAN and an error otherwise. */
float nb_item(const nb_tensor *t);
/* Writes an element by flat index (bounds-checked, bumps the version). */
int nb_set_item(nb_tensor *t, int64_t index, float value);
bool nb_same_shape(const nb_tensor *a, const nb_tensor *b);
/* Formats a shape as "[3,4]" into buf (always terminated); returns buf. */
char *nb_shape_str(int ndim, const int64_t *shape, char *buf, size_t size);

/* An optional name, used by nb_print, error messages and graph export. The
 * string is copied (up to 31 characters). Returns t. */
nb_tensor *nb_set_name(nb_tensor *t, const char *name);
const char *nb_name(const nb_tensor *t);              /* "" when unnamed */

/* Prints like PyTorch's repr, eliding the middle of large tensors. */
void nb_print(const nb_tensor *t);
void nb_fprint(FILE *f, const nb_tensor *t);

/* ---- gradients ---------------------------------------------------------- */

/* Marks a leaf as requiring a gradient (or not): PyTorch's requires_grad_.
 * Errors on non-leaves. Returns t. */
nb_tensor *nb_set_requires_grad(nb_tensor *t, bool requires);
/* Whether t requires a gradient: a marked leaf, or the output of an op
 * recorded from one. */
bool nb_requires_grad(const nb_tensor *t);
bool nb_is_leaf(const nb_tensor *t);
/* The accumulated gradient, same shape as t, or NULL before any backward.
 * Borrowed: owned by t. */
nb_tensor *nb_grad_of(const nb_tensor *t);
/* Zeroes the accumulated gradient in place (keeps its memory). */
void nb_zero_grad(nb_tensor *t);
/* Drops the accumulated gradient (nb_grad_of returns NULL again). */
void nb_clear_grad(nb_tensor *t);
/* Asks backward to fill .grad of a non-leaf too. Returns t. */
nb_tensor *nb_retain_grad(nb_tensor *t);
/* A new tensor sharing t's storage, cut from the graph (no grad). */
nb_tensor *nb_detach(nb_tensor *t);
/* Like nb_detach, with another shape of the same element count: the
 * storage-sharing half of nb_reshape (which also records the graph). */
nb_tensor *nb_as_shape(nb_tensor *t, int ndim, const int64_t *shape);

/* Grad mode (per thread): when off, ops record no graph. Returns the
 * previous mode, so a no-grad region is
 *     bool was = nb_set_grad_enabled(false); ...; nb_set_grad_enabled(was); */
bool nb_set_grad_enabled(bool enabled);
bool nb_is_grad_enabled(void);

/* Backward from a one-element tensor: accumulates d(loss)/d(leaf) into every
 * leaf's .grad. Frees the graph's saved values. Returns 0, or -1 with a
 * message (not one element, does not require grad, graph already freed, a
 * saved tensor modified in place). */
int nb_backward(nb_tensor *loss);

/* Options of the general forms below; NULL, or any field left out of a
 * designated initialiser, means the default (false):
 *     nb_backward_ex(y, NULL, &(nb_backward_opts){.retain_graph = true});  */
typedef struct nb_backward_opts {
    /* Keep the graph's saved values for another backward through it. */
    bool retain_graph;
    /* Record the backward itself, so that the gradients are graphs and can
     * be differentiated again (implies retain_graph). A leaf's .grad then
     * holds the leaf: the cycle is freed with the leaf's last owner (see
     * OWNERSHIP at the top). */
    bool create_graph;
    /* Write each leaf's .grad as soon as its gradient is final, as PyTorch
     * does, instead of all at the end. The end-of-backward way holds every
     * new gradient at once (a model's parameters' worth of memory) so that
     * a backward that fails changes no .grad; with this set, a backward
     * that fails midway leaves the .grad of the leaves it reached changed. */
    bool grads_when_ready;
} nb_backward_opts;

/* The general backward: grad_output (same shape as out) may be NULL only
 * for a one-element out. */
int nb_backward_ex(nb_tensor *out, nb_tensor *grad_output, const nb_backward_opts *opts);

typedef struct nb_grad_opts {
    bool retain_graph; /* as in nb_backward_opts */
    bool create_graph;
    /* An input the outputs do not depend on is an error (naming the input)
     * unless allow_unused is set; then its gradient is NULL, or a tensor of
     * zeros when materialize_grads is set too (PyTorch's two options). */
    bool allow_unused;
    bool materialize_grads;
} nb_grad_opts;

/* Functional gradients, like torch.autograd.grad: fills grads[i] with
 * d(sum_j <outputs[j], grad_outputs[j]>)/d(inputs[i]) without touching any
 * .grad. grad_outputs may be NULL (all outputs one-element); every output
 * must require grad (the error names the one that does not). Results follow
 * the ownership rule. Returns 0 or -1 with a message:
 *     nb_grad(1, &y, NULL, 1, &x, &g, &(nb_grad_opts){.create_graph = true});  */
int nb_grad(int noutputs, nb_tensor *const *outputs, nb_tensor *const *grad_outputs,
            int ninputs, nb_tensor *const *inputs, nb_tensor **grads, const nb_grad_opts *opts);

/* ---- the op API ------------------------------------------------------------
 * Every op in ops/ is written with these, exactly as a user writes a new op:
 *
 *   static void swish_backward(nb_tensor *y, nb_tensor *gy, nb_tensor **gx) {
 *       nb_tensor *x = nb_saved(y, 0), *s = nb_sigmoid(x);
 *       gx[0] = nb_mul(gy, nb_add(s, nb_mul(x, nb_mul(s, nb_rsub_scalar(s, 1)))));
 *   }
 *   static const nb_op swish_op = {"swish", swish_backward};
 *
 *   nb_tensor *swish(nb_tensor *x) {
 *       if (!x) return NULL;
 *       nb_tensor *y = nb_empty_like(x);
 *       ... fill nb_data_mut(y) from nb_data(x) with a plain loop ...
 *       y = nb_record(y, &swish_op, 1, &x);
 *       nb_save(y, x);
 *       return y;
 *   }
 *
 * The forward is a plain kernel; the backward is written with differentiable
 * ops, so create_graph gives higher derivatives for free. Backward runs with
 * grad mode on only under create_graph; its temporaries are released by the
 * engine. It sets gx[i] for each input whose gradient is wanted
 * (nb_needs_input_grad) and may leave the others NULL. */

typedef struct nb_op {
    const char *name;
    void (*backward)(nb_tensor *node, nb_tensor *grad_output, nb_tensor **grad_inputs);
    /* Optional forward-mode rule (see nb_jvp): the output's tangent from the
     * inputs' tangents (tangents[i] NULL means zero), written with ops like
     * backward, with the node's inputs, saved values and attributes at hand.
     * NULL (the default of {"name", backward}) means the op has none: a
     * tangent reaching it is an error naming the op, never a zero. The rule
     * may return NULL without an error for a zero tangent (sign, argmax). */
    nb_tensor *(*jvp)(nb_tensor *node, nb_tensor *const *tangents);
} nb_op;

/* Makes out the node of op applied to inputs, when grad mode is on and some
 * input requires grad (otherwise out stays a plain tensor). Takes a strong
 * reference to each input. Returns out, or NULL in anomaly mode when out
 * holds a NaN or an infinity (with the message; out stays with its owner):
 * an op returns what nb_record returns, so that its caller sees the NULL. */
nb_tensor *nb_record(nb_tensor *out, const nb_op *op, int ninputs, nb_tensor *const *inputs);
/* Saves t (an input, the output itself or any other tensor) for backward and
 * remembers its version. No-op when out recorded no node. */
void nb_save(nb_tensor *out, nb_tensor *t);
/* The k-th saved tensor; NULL and an error if it was modified in place
 * since it was saved, or if the graph was freed. */
nb_tensor *nb_saved(nb_tensor *node, int k);
/* A scalar attribute of the op (axis, slope, exponent...), k < NB_MAX_ATTRS. */
void nb_set_attr(nb_tensor *node, int k, double value);
double nb_attr(const nb_tensor *node, int k);
/* The node's inputs: for their shapes. Read their values through nb_saved. */
int nb_num_inputs(const nb_tensor *node);
nb_tensor *nb_input(const nb_tensor *node, int i);
bool nb_needs_input_grad(const nb_tensor *node, int i);
/* The op that made t, or NULL for leaves and tensors made without grad. */
const nb_op *nb_op_of(const nb_tensor *t);

/* ---- forward mode ------------------------------------------------------------
 * nb_jvp(f, ...) gives f's outputs and their directional derivatives
 * J·v in one forward pass: each input is replaced, for the call, by a tensor
 * sharing its values and carrying its tangent v_i (a dual number), and every
 * op reached by a tangent runs its jvp rule beside its forward. Rules are
 * written with ops, so they compose with reverse mode: nb_grad inside f
 * (forward over reverse) gives Hessian-vector products, and a tangent of an
 * input that requires grad can itself be differentiated (reverse over
 * forward).
 *
 * OWNERSHIP: tangents exist only during nb_jvp: every tensor given one stays
 * alive until the call returns, when all tangents are dropped except the
 * outputs', which belong to the caller's scope like the outputs themselves.
 * Limits: one level (nb_jvp inside f, or inside a rule, is an error); a
 * tensor written in place (nb_data_mut) during the call keeps a stale
 * tangent; forward over reverse goes through nb_grad (nb_backward's sums
 * into .grad do not follow tangents). */

/* f fills outputs[0 .. noutputs) from inputs; returns 0, or -1 with a
 * message set. */
typedef int (*nb_jvp_fn)(nb_tensor *const *inputs, nb_tensor **outputs, void *ctx);

/* tangents[i] has the shape of inputs[i], or is NULL (a zero tangent).
 * Fills outputs and out_tangents (zeros for an output the inputs do not
 * reach). Grad mode does not matter to the tangents. Returns 0, or -1 with
 * a message and every result NULL: a shape mismatch, f failing, an op
 * without a jvp rule (named), or any other error set while f ran. */
int nb_jvp(nb_jvp_fn f, void *ctx, int ninputs, nb_tensor *const *inputs,
           nb_tensor *const *tangents, int noutputs, nb_tensor **outputs,
           nb_tensor **out_tangents);
/* Inside f: the tangent t carries, or NULL for a zero one (and outside
 * nb_jvp). Borrowed: lives as long as t, until nb_jvp returns. */
nb_tensor *nb_tangent_of(nb_tensor *t);

/* ---- errors --------------------------------------------------------------- */

/* The calling thread's last error message, or NULL if none since the last
 * nb_clear_error. Borrowed. */
const char *nb_error(void);
void nb_clear_error(void);
/* How many errors the calling thread has set so far: how a caller tells
 * whether a function that cannot return NULL (one returning a float, say)
 * failed, without clearing anyone's message:
 *     uint64_t before = nb_error_count(); v = metric(...);
 *     if (nb_error_count() != before) ... nb_error() says why ... */
uint64_t nb_error_count(void);
/* Sets the error (printf-style) and calls the handler: the channel every
 * nabla function reports through, open to user code too (an op, a loss, a
 * layer or a whole program of one's own), so one handler and one nb_error()
 * serve all. Start the message with the name of your function. */
void nb_set_error(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
typedef void (*nb_error_handler)(const char *message, void *user);
/* Installs a per-process handler called on every error (NULL: none, the
 * default). Returns the previous one. */
nb_error_handler nb_set_error_handler(nb_error_handler handler, void *user);
/* A handler for debugging: prints the message and aborts. */
void nb_abort_on_error(const char *message, void *user);

/* ---- memory ----------------------------------------------------------------
 * Every heap allocation nabla makes goes through nb_malloc and its kin, which
 * take memory from libc after asking the hook, if one is installed. A hook
 * returning false makes that allocation fail: the function that asked reports
 * "out of memory" through the error channel and cleans up. Tests use it to
 * fail each allocation in turn; a program can use it to cap or count memory.
 * Install it while no other thread allocates. Op authors who need scratch
 * memory use these too, so that the hook sees it. */
typedef bool (*nb_alloc_hook)(size_t size, void *user);
/* Installs hook (NULL: none, the default). Returns the previous one. */
nb_alloc_hook nb_set_alloc_hook(nb_alloc_hook hook, void *user);
void *nb_malloc(size_t size);
void *nb_calloc(size_t count, size_t size);
void *nb_realloc(void *p, size_t size);
void *nb_aligned_alloc(size_t alignment, size_t size); /* alignment: power of 2 */
void nb_free(void *p);
/* Returns the memory nabla keeps for reuse to the system: the free lists of
 * tensors and storage, and the calling thread's backward bookkeeping. Live
 * tensors are untouched; the next steps allocate again until warm. */
void nb_empty_cache(void);

/* ---- gradcheck -------------------------------------------------------------
 * Checks the analytic gradient of f against central finite differences.
 * f maps the inputs to one output of any shape; gradcheck reduces it with
 * fixed random weights w to L = sum(w * f(x)), in double, and compares
 * dL/dx_i from backward with (L(x + h) - L(x - h)) / 2h for every element
 * of every input that requires grad, where h = eps * max(1, |x_i|) and 2h is
 * the difference of the two float values actually used.
 * The inputs are perturbed in place and restored, their versions untouched:
 * a graph built from them before the check still backwards after it. f runs
 * with grad mode on and may differentiate itself (nb_grad with create_graph),
 * so gradgradcheck of a function returning a gradient checks a third
 * derivative. When the worst element sits at a kink (relu at 0), where the
 * one-sided slopes differ however small the step, result->at_kink is set and
 * the message says so: the analytic value there is a subgradient. */

typedef nb_tensor *(*nb_gradcheck_fn)(nb_tensor *const *inputs, void *ctx);

typedef struct nb_gradcheck_opts {
    double eps;  /* finite-difference step, default 1e-3 */
    double atol; /* pass when |analytic - numeric| <= atol + rtol*|numeric| */
    double rtol; /* defaults 1e-3 and 1e-2 (float32 data) */
    bool quiet;  /* do not print the report on failure */
} nb_gradcheck_opts;

typedef struct nb_gradcheck_result {
    bool ok;
    int input;                    /* where the worst mismatch is */
    int64_t index;                /* flat index in that input */
    double analytic, numeric;     /* the two values there */
    double error;                 /* |analytic - numeric| - rtol*|numeric| */
    bool at_kink;                 /* that element sits where f has no derivative */
    char message[384];            /* one-line report */
} nb_gradcheck_result;

/* Returns true when every element agrees. opts and result may be NULL. */
bool nb_gradcheck(nb_gradcheck_fn f, void *ctx, int ninputs, nb_tensor *const *inputs,
                  const nb_gradcheck_opts *opts, nb_gradcheck_result *result);
/* Second order: checks the gradient of g(x) = sum(v * dL/dx) (computed with
 * create_graph) against finite differences of dL/dx, i.e. that the backward
 * formulas are themselves correctly differentiable. */
bool nb_gradgradcheck(nb_gradcheck_fn f, void *ctx, int ninputs, nb_tensor *const *inputs,
                      const nb_gradcheck_opts *opts, nb_gradcheck_result *result);

/* ---- gradient checkpointing (autograd/checkpoint.c) ------------------------
 * PyTorch's torch.utils.checkpoint: y = f(inputs) computed without keeping
 * f's intermediates; backward runs f again (with grad) and differentiates
 * the recomputed segment, so memory holds one segment's intermediates at a
 * time in exchange for a second forward of each segment. The gradients are
 * those of the plain y = f(inputs), bitwise when f is deterministic; with
 * create_graph the gradient is a graph as usual, and higher derivatives
 * agree with the plain ones to rounding (summed in another order). The
 * default generator's state is saved at the forward and replayed at the
 * recomputation, so random ops drawing from it (dropout) draw the same
 * values; a generator of your own passed through ctx is not replayed.
 * Under nb_backward with grads_when_ready, a leaf whose gradient comes from
 * the segment alone (a layer's weights) has its .grad written by the
 * recomputation as soon as it is final, as in the plain run, so that a
 * segment's weight gradients are never all held at once.
 * Under nb_jvp the checkpoint's tangent is found by running f again on the
 * inputs' tangents (the generator replayed again); that saves no memory,
 * as nb_jvp keeps every tensor given a tangent until it returns.
 * inputs lists every tensor f reads that should get a gradient and is not
 * a leaf: f must read those from the array it is given. Leaves (a module's
 * parameters) may be read directly, but must be listed too to get their
 * gradient. f runs twice, so it must compute the same thing both times
 * (the inputs modified in place in between are reported by backward). It
 * returns one tensor, or NULL having set a message. ctx_size 0 passes ctx
 * itself to f, and it must stay valid until the backward; ctx_size > 0
 * copies that many bytes of ctx (up to 1 MiB) with the node and gives f the
 * copy, so a struct on your stack will do:
 *     struct seg s = {...};
 *     y = nb_checkpoint(seg_forward, &s, sizeof s, 3, (nb_tensor *[]){x, w, b}); */
typedef nb_tensor *(*nb_checkpoint_fn)(nb_tensor *const *inputs, void *ctx);
nb_tensor *nb_checkpoint(nb_checkpoint_fn f, void *ctx, size_t ctx_size, int ninputs,
                         nb_tensor *const *inputs);

/* ---- graph export ----------------------------------------------------------
 * Writes the graph that produced t in Graphviz dot format (render it with
 * `dot -Tsvg graph.dot > graph.svg`): one box per tensor with its name, its
 * op (or, for a leaf, whether it is a parameter, an input or a constant) and
 * its shape, and an arrow from each input to the op's output. Quotes,
 * backslashes and newlines in names are escaped. Backward frees the graph
 * unless retain_graph is set: export before it, or backward with
 * retain_graph to see the gradients on the graph. Returns 0 or -1 with a
 * message. */
int nb_export_dot(const nb_tensor *t, FILE *out);

typedef struct nb_export_opts {
    /* Print the values of tensors of at most max_values elements (others
     * show their shape only). */
    bool values;
    /* Print each .grad (a leaf's, or a retain_grad node's) the same way;
     * larger gradients show their norm. */
    bool grads;
    int max_values; /* default 8 */
    /* Also draw the way gradients flow, output to inputs, as red dashed
     * arrows along every edge into a tensor that requires grad. */
    bool grad_flow;
    /* Names for parameters, as a module names them: named[i] is called
     * names[i] ("0.weight"). The part before the last dot ("0") becomes a
     * box around the tensor. A named tensor is drawn as a parameter, and
     * so is any leaf held by a container (nb_adopt). nb_module_export_dot
     * fills these from a module. Borrowed for the call. */
    int nnamed;
    const nb_tensor *const *named;
    const char *const *names;
} nb_export_opts;

/* The defaults: no values, no gradients, max_values 8, no gradient flow,
 * no names. */
nb_export_opts nb_export_defaults(void);
/* nb_export_dot with options; opts NULL means the defaults. */
int nb_export_dot_ex(const nb_tensor *t, FILE *out, const nb_export_opts *opts);

/* ---- looking inside: trace, anomaly mode, gradient hooks -------------------
 * Trace mode prints a line per op to out while it is on (out NULL: off, the
 * default), for the whole process; lines from several threads may
 * interleave. what is NB_TRACE_BACKWARD, NB_TRACE_FORWARD or both:
 *   backward mul [4,1] "h" |grad| 0.5 -> 0.25 - 3.1 us
 *     one line per node in the order backward runs: op, output shape,
 *     name, the norm of the gradient arriving at the node, the norm of the
 *     gradient sent to each input ("-" for an input that gets none) and
 *     the time the node's formula took; leaves print the first four only.
 *   forward matmul [4,1] |y| 2.5 <- [4,3] [3,1] +2.0 us
 *     one line per op as it records: op, output shape, the norm of the
 *     output, the shapes of the inputs and the time since the previous
 *     forward line, or since the op was called when the caller is compiled
 *     with -DNB_LOCATIONS (nb_locations.h): the op's own time when ops
 *     follow one another, with the caller's own work between them
 *     otherwise. Ops that run inside backward formulas are not listed.
 * Returns the previous out. The FILE stays yours: nabla never closes it,
 * so turn the trace off before you close it. */
#define NB_TRACE_BACKWARD 1
#define NB_TRACE_FORWARD 2
FILE *nb_set_trace(FILE *out, int what);

/* Anomaly mode (PyTorch's detect_anomaly), for the whole process, off by
 * default: the first op whose output holds a NaN or an infinity, in
 * forward or inside a backward formula, returns NULL and sets a message
 * naming the op, its input shapes and where the user's code called it;
 * the first backward formula to send a NaN or infinity to an input makes
 * nb_backward (or nb_grad) fail with a message naming the forward op whose
 * gradient it was, and where that op was called. Nothing aborts. The places
 * are known for code compiled with -DNB_LOCATIONS (see nb_locations.h),
 * for ops recorded while anomaly mode was on. An op written with the op
 * API must return what nb_record returns for this to reach its caller.
 * Infinities that are meant (a mask of -inf) are reported too: turn the
 * mode on to find a problem, not to train. Off, it costs a load per op.
 * Returns the previous mode. */
bool nb_set_detect_anomaly(bool enabled);
bool nb_is_anomaly_enabled(void);

/* Gradient hooks (PyTorch's register_hook): during every backward (and
 * nb_grad) through t, hook is called with the gradient arriving at t, once
 * all of it has been summed, before it moves on to t's inputs or into
 * t's .grad. It may read it, or return a tensor of the same shape to use
 * instead (NULL: keep it). grad is borrowed: valid during the call. The
 * hook runs inside a scope of its own, so the tensor it returns needs no
 * nb_keep: the engine takes it, and frees it with the rest of the
 * backward's gradients (or keeps it as t's .grad). Under create_graph the
 * hook's ops are recorded, so the replaced gradient stays differentiable.
 * Hooks fire in the order registered; t must require grad. A hook that
 * sets an error makes the backward fail. Returns a handle (> 0) for
 * nb_remove_hook, or -1 with a message. nb_register_hook_ex also takes
 * free_user, called on user when the hook is removed or t is freed (and at
 * once if registering fails). Register and remove a tensor's hooks while no
 * backward runs through it. */
typedef nb_tensor *(*nb_grad_hook)(nb_tensor *grad, void *user);
int nb_register_hook(nb_tensor *t, nb_grad_hook hook, void *user);
int nb_register_hook_ex(nb_tensor *t, nb_grad_hook hook, void *user, void (*free_user)(void *));
/* Removes t's hook with this handle (of either kind): 0, or -1 with a
 * message. */
int nb_remove_hook(nb_tensor *t, int handle);
/* Post-accumulate-grad hooks (PyTorch's register_post_accumulate_grad_hook):
 * during every nb_backward that reaches the leaf t, hook is called with t
 * once t's gradient is final and has been added into t's .grad, while
 * backward goes on with the rest of the graph, so that work on .grad
 * (sending it to other processes: nn/dist) overlaps it. Leaves fire in the
 * order backward reaches them (a topological order: those nearest the
 * loss first), each once per backward; nb_grad, which writes no .grad,
 * calls none. t is borrowed: valid during the call; the hook may read
 * .grad (nb_grad_of) but must not free t or replace its .grad. It runs
 * inside a scope of its own, so what it makes is freed when it returns.
 * Such a leaf's .grad is written at once rather than at the end of
 * backward, so a backward that fails later leaves it changed. A hook that
 * sets an error makes the backward fail. Hooks fire in the order
 * registered, after t's gradient hooks; t must be a leaf that requires
 * grad. Returns a handle (> 0) for nb_remove_hook, or -1 with a message;
 * the _ex form, free_user and when to register are as for
 * nb_register_hook_ex. */
typedef void (*nb_post_accumulate_grad_hook)(nb_tensor *t, void *user);
int nb_register_post_accumulate_grad_hook(nb_tensor *t, nb_post_accumulate_grad_hook hook, void *user);
int nb_register_post_accumulate_grad_hook_ex(nb_tensor *t, nb_post_accumulate_grad_hook hook, void *user,
                                             void (*free_user)(void *));

/* Used by the macros of nb_locations.h; not to be called directly. */
void nb__where_push(const char *function, const char *file, int line);
nb_tensor *nb__where_pop(nb_tensor *t);

#ifdef __cplusplus
}
#endif
#endif
