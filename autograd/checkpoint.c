/* checkpoint.c — gradient checkpointing: trading compute for memory, as
 * PyTorch's torch.utils.checkpoint does.
 *
 * A normal forward keeps every intermediate its backward formulas need, so
 * a deep network's memory grows with its depth. nb_checkpoint runs a
 * segment f with grad mode off, so that f keeps nothing, and records one
 * node in its place holding only the segment's inputs. When backward
 * reaches that node, its formula runs f again, this time recording, and
 * differentiates the recomputed segment with nb_grad: the segment's
 * intermediates live only while its own gradient is computed.
 *
 * The inputs' gradients are returned to the enclosing backward, which adds
 * them where they belong; but a segment's weights are inputs too, and a
 * weight's gradient is often far larger than an activation, so holding a
 * whole segment's weight gradients until the segment is done can cost more
 * than the checkpoint saves. When the enclosing nb_backward writes .grad as
 * soon as final (grads_when_ready), a leaf whose gradient comes from this
 * segment alone therefore gets its .grad written by the recomputation's own
 * backward the moment it is final, as the plain run would, and only the
 * other inputs' gradients are returned (PyTorch's reentrant checkpoint does
 * the same: its inner backward accumulates into the parameters' .grad).
 *
 * It is an op written with the op API like any other. What the op API
 * keeps per node is tensors and numbers, so the closure (f, its context and
 * the state of the default generator) is copied into a small tensor of its
 * own and saved like any other value: it is freed with the graph. The
 * generator state is replayed during the recomputation, so that dropout
 * draws the same masks as the first time. Backward formulas run with grad
 * mode on only when the backward was asked for create_graph, which is how
 * this one knows whether the gradient it returns must itself be a graph.
 * What it needs beyond the op API, and why it lives in autograd/: the
 * engine's word on which leaves it may write .grad for, and a way to hide
 * and show forward mode's tangents.
 *
 * Forward mode (nb_jvp) goes through it the same way: the first run of f
 * hides the tangents, so it keeps nothing; the jvp rule runs f again on the
 * inputs with their tangents shown, replaying the generator. And a backward
 * run under nb_jvp (forward over reverse, nb_hvp) gives the detached copies
 * it recomputes from the tangents of the inputs they copy.
 */
#include "tensor_internal.h"

#include <string.h>

/* The closure, followed in the tensor by one storage version per input and
 * then, when ctx_size > 0, by a copy of the context. */
typedef struct closure {
    nb_checkpoint_fn f;
    void *ctx;
    size_t ctx_size;
    nb_generator rng; /* the default generator as the forward found it */
} closure;

/* Inputs of a segment held in a stack array; more take one allocation. */
#define INLINE_ARGS 16

/* Where the context copy starts: 16-byte aligned (the tensor's data is
 * 64-byte aligned), enough for any struct of scalars and pointers. */
static size_t ctx_offset(int ninputs) {
    size_t end = sizeof(closure) + (size_t)ninputs * sizeof(uint64_t);
    return (end + 15) / 16 * 16;
}

static int64_t closure_floats(int ninputs, size_t ctx_size) {
    size_t bytes = ctx_offset(ninputs) + ctx_size;
    return (int64_t)((bytes + sizeof(float) - 1) / sizeof(float));
}

static void checkpoint_backward(nb_tensor *node, nb_tensor *gy, nb_tensor **gx);
static nb_tensor *checkpoint_jvp(nb_tensor *node, nb_tensor *const *tangents);
static const nb_op checkpoint_op = {"checkpoint", checkpoint_backward, checkpoint_jvp};

/* The closure saved with node, after checking that the inputs were not
 * changed in place since the forward (the recomputation reads them as they
 * are now, and would silently differ). NULL with a message naming who. */
static const char *closure_of(nb_tensor *node, const char *who, closure *c) {
    nb_tensor *saved = nb_saved(node, 0);
    if (!saved) return NULL;
    const char *bytes = (const char *)nb_data(saved);
    memcpy(c, bytes, sizeof *c);
    for (int i = 0; i < node->ninputs; i++) {
        uint64_t v;
        memcpy(&v, bytes + sizeof *c + (size_t)i * sizeof v, sizeof v);
        nb_tensor *in = nb_input(node, i);
        if (in->storage->version != v) {
            char b[NB_SHAPE_CHARS];
            nb_set_error("%s: input %d of shape %s of 'checkpoint' was modified in place after the "
                         "forward; run the forward again after changing it",
                         who, i, nb_shape_str(in->ndim, in->shape, b, sizeof b));
            return NULL;
        }
    }
    return bytes;
}

/* Runs f again on args, with the default generator as the forward found it
 * (so that dropout draws the same masks) and grad mode as given; checks
 * that it made a tensor of the node's shape. NULL with a message. */
static nb_tensor *recompute(nb_tensor *node, const closure *c, const char *bytes,
                            nb_tensor *const *args, bool grad, const char *who) {
    bool was = nb_set_grad_enabled(grad);
    nb_generator *g = nb_default_generator(), now = *g;
    *g = c->rng;
    uint64_t errors = nb_error_count();
    nb_tensor *y = c->f(args, c->ctx_size ? (void *)(bytes + ctx_offset(node->ninputs)) : c->ctx);
    *g = now;
    nb_set_grad_enabled(was);
    /* the engine tells failure by a message: a silent NULL needs one */
    if (!y && nb_error_count() == errors)
        nb_set_error("%s: the checkpointed function returned NULL when recomputed", who);
    if (y && !nb_same_shape(y, node)) {
        char b1[NB_SHAPE_CHARS], b2[NB_SHAPE_CHARS];
        nb_set_error("%s: the checkpointed function returned shape %s when recomputed, %s the "
                     "first time", who, nb_shape_str(y->ndim, y->shape, b1, sizeof b1),
                     nb_shape_str(node->ndim, node->shape, b2, sizeof b2));
        y = NULL;
    }
    return y;
}

/* Forward mode: the tangent of f(inputs) is found by running f again on
 * dual numbers. The inputs carry their tangents already (that is how this
 * rule was reached), so f is run on them with the tangents shown to its
 * ops, whose own rules then carry them through, and the tangent of what f
 * returns is the answer. With grad mode on, the recomputation records as
 * any rule's ops do, so reverse over forward works through it. */
static nb_tensor *checkpoint_jvp(nb_tensor *node, nb_tensor *const *tangents) {
    (void)tangents;
    closure c;
    const char *bytes = closure_of(node, "nb_jvp", &c);
    if (!bytes) return NULL;
    int hidden = nb__forward_set_hidden(0);
    nb_tensor *y = recompute(node, &c, bytes, node->inputs, nb_is_grad_enabled(), "nb_jvp");
    nb_tensor *t = y ? nb_tangent_of(y) : NULL;
    nb__forward_set_hidden(hidden);
    return t;
}

static void checkpoint_backward(nb_tensor *node, nb_tensor *gy, nb_tensor **gx) {
    closure c;
    const char *bytes = closure_of(node, "nb_backward", &c);
    if (!bytes) return;
    int n = nb_num_inputs(node);
    nb_tensor *args_inline[INLINE_ARGS], *grads_inline[INLINE_ARGS];
    nb_tensor *want_inline[INLINE_ARGS], *ready_inline[INLINE_ARGS];
    int want_index_inline[INLINE_ARGS];
    nb_tensor **args = args_inline, **grads = grads_inline, **want = want_inline;
    nb_tensor **ready = ready_inline;
    int *want_index = want_index_inline;
    if (n > INLINE_ARGS) {
        args = nb_malloc((size_t)n * 4 * sizeof *args);
        want_index = nb_malloc((size_t)n * sizeof *want_index);
        if (!args || !want_index) {
            nb_free(args);
            nb_free(want_index);
            nb_set_error("nb_backward: out of memory recomputing a checkpoint of %d inputs", n);
            return;
        }
        grads = args + n;
        want = args + 2 * n;
        ready = args + 3 * n;
    }
    /* Without create_graph the segment is recomputed from detached copies
     * of the inputs that are graph nodes, so that its gradient stops there
     * (under nb_jvp, forward over reverse, the copies carry the inputs'
     * tangents). With create_graph the gradient must be a function of the
     * inputs themselves, so they are used as they are (nb_grad runs only
     * the nodes that lead to them). Leaves are always used as they are: a
     * module's parameters are the tensors its forward reads. */
    bool create_graph = nb_is_grad_enabled();
    bool ok = true;
    for (int i = 0; i < n && ok; i++) {
        nb_tensor *in = nb_input(node, i);
        args[i] = in;
        if (!create_graph && in->op && in->requires_grad) {
            args[i] = nb_set_requires_grad(nb_detach(in), true);
            ok = args[i] != NULL;
            if (ok && !nb__forward_share_tangent(args[i], in)) {
                nb_set_error("nb_backward: out of memory recomputing a checkpoint");
                ok = false;
            }
        }
    }
    nb_tensor *y = ok ? recompute(node, &c, bytes, args, true, "nb_backward") : NULL;
    /* The leaves whose .grad the recomputation may write itself (see the
     * top of the file), and the inputs whose gradient is returned. */
    int nwant = 0, nready = 0;
    for (int i = 0; y && i < n; i++) { /* args is complete only when y is made */
        if (!nb_needs_input_grad(node, i)) continue;
        if (nb__grad_final_here(args[i])) {
            ready[nready++] = args[i];
        } else {
            want_index[nwant] = i;
            want[nwant++] = args[i];
        }
    }
    /* A segment whose output no longer depends on the inputs (it did not
     * record) gives them no gradient, as the plain run would. The graph
     * is retained so that the inner backward frees nothing outside the
     * segment; the recomputed graph itself goes with this formula's scope. */
    if (y && nwant + nready > 0 && nb_requires_grad(y) &&
        nb__segment_grad(y, gy, nwant, want, grads, nready, ready, create_graph) == 0)
        for (int j = 0; j < nwant; j++) gx[want_index[j]] = grads[j];
    if (args != args_inline) {
        nb_free(args);
        nb_free(want_index);
    }
}

nb_tensor *nb_checkpoint(nb_checkpoint_fn f, void *ctx, size_t ctx_size, int ninputs,
                         nb_tensor *const *inputs) {
    if (!f || ninputs < 0 || (ninputs > 0 && !inputs) || (ctx_size > 0 && !ctx) ||
        ctx_size > ((size_t)1 << 20)) {
        nb_set_error("nb_checkpoint: needs a function, an array of its inputs (%d given) and a "
                     "context of at most 1 MiB to copy (%zu bytes given)", ninputs, ctx_size);
        return NULL;
    }
    for (int i = 0; i < ninputs; i++)
        if (!inputs[i]) return NULL;
    closure c = {f, ctx, ctx_size, *nb_default_generator()};
    int depth = nb_scope_begin();
    /* f keeps nothing: no graph, and under nb_jvp no tangents either (the
     * jvp rule runs f again for them, if they are wanted) */
    bool was = nb_set_grad_enabled(false);
    int hidden = nb__forward_set_hidden(1);
    nb_tensor *y = f(inputs, ctx);
    nb__forward_set_hidden(hidden);
    nb_set_grad_enabled(was);
    /* The node must be a tensor of its own: f may return one of its inputs,
     * or a tensor that lives elsewhere. */
    if (y && (y->scope_depth != depth || y->requires_grad))
        y = nb_from_array(y->ndim, y->shape, nb_data(y));
    uint64_t errors = nb_error_count();
    if (y) {
        y = nb_record(y, &checkpoint_op, ninputs, inputs); /* NULL: anomaly mode found a NaN */
        if (nb_error_count() != errors) y = NULL; /* out of memory */
        if (y && y->op == &checkpoint_op) {
            nb_tensor *saved = nb_empty(NB_SHAPE(closure_floats(ninputs, ctx_size)));
            if (saved) {
                char *bytes = (char *)nb_data_mut(saved);
                memcpy(bytes, &c, sizeof c);
                for (int i = 0; i < ninputs; i++) {
                    uint64_t v = inputs[i]->storage->version;
                    memcpy(bytes + sizeof c + (size_t)i * sizeof v, &v, sizeof v);
                }
                if (ctx_size) memcpy(bytes + ctx_offset(ninputs), ctx, ctx_size);
                nb_save(y, saved);
            }
            if (!saved || y->nsaved != 1) y = NULL; /* out of memory: its message is set */
        }
    }
    nb_escape(y);
    nb_scope_end();
    return y;
}
