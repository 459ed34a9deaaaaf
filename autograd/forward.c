/* forward.c — forward-mode differentiation: nb_jvp and the tangents it
 * carries through ops.
 *
 * Forward mode computes J·v, the derivative of f along a direction v, in the
 * same pass as f: every value x is paired with a tangent dx (a dual number
 * x + dx·ε), and each op maps its inputs' tangents to its output's with its
 * jvp rule (for mul, da·b + a·db). Reverse mode gives a row of J per
 * backward; forward mode gives a column per pass, which is cheaper when f
 * has few inputs and many outputs, and a JVP of a gradient is a
 * Hessian-vector product.
 *
 * Where the rules run. An op records its node with nb_record and then saves
 * what its backward needs (nb_save, nb_set_attr), so at nb_record time a
 * rule would not yet find the saved values. The rule therefore runs later:
 * nb_record marks the output as owing a tangent ("pending"), and the rule
 * runs the first time anyone needs that tangent — when the output becomes
 * the input of another op (nb_record), when f asks for it (nb_tangent_of),
 * when nb_jvp collects the outputs', or just before a backward frees the
 * node's graph. The op has returned by then, so its node is complete, and a
 * tangent nobody uses is never computed. Because a tensor's rule runs when
 * it is first used, a chain of 100,000 ops runs its rules one at a time, with
 * no recursion.
 *
 * A node only for forward mode. nb_record makes a node when grad mode is on
 * and an input requires grad; during nb_jvp it also makes one, grad mode or
 * not, when an input carries a tangent, because the rule needs the inputs
 * and saved values as backward does. Such a node does not require grad (no
 * backward walks into it), and once its rule has run its inputs and saved
 * values are released and it becomes a plain tensor again.
 *
 * Rules run with tangents hidden (nb_record ignores them), so the ops of a
 * rule record no tangents of their own: one level of forward mode, as in a
 * dual number with one ε. They do record for reverse mode as usual, which is
 * what makes reverse over forward work; and backward formulas, being ops,
 * carry tangents when their saved values have them, which is forward over
 * reverse.
 *
 * Ownership. Every tensor that gets a tangent (or a pending rule) during
 * nb_jvp is listed, with a reference, in the thread's level; when nb_jvp
 * returns, the level drops every tangent and every pending rule, and then
 * its references. The list is what frees the cycle a tangent can make with
 * its primal under reverse over forward (exp's tangent dx·y holds y, whose
 * tangent it is), and it is reused from call to call, so a steady loop of
 * nb_jvp calls allocates nothing for it.
 */
#include "tensor_internal.h"

#include <string.h>

typedef struct level {
    bool open;       /* inside nb_jvp */
    int hidden;      /* > 0 while a jvp rule runs */
    nb_tensor **listed; /* every tensor given a tangent or a pending rule */
    int64_t count, cap;
} level;

static _Thread_local level lv;

_Thread_local bool nb__forward_live;

/* nb__forward_live (read by nb__forward_on, inline) follows lv: called
 * after every change of lv.open or lv.hidden. */
static void sync_live(void) { nb__forward_live = lv.open && lv.hidden == 0; }

void nb__forward_thread_exit(void) {
    if (lv.open) return; /* nb_empty_cache called inside f: the list is in use */
    nb_free(lv.listed);
    lv.listed = NULL;
    lv.cap = 0;
}

/* Lists t with a reference of the level's own. */
static bool list(nb_tensor *t) {
    if (lv.count == lv.cap) {
        int64_t cap = lv.cap ? 2 * lv.cap : 256;
        if (!nb__grow((void **)&lv.listed, cap, sizeof *lv.listed)) return false;
        lv.cap = cap;
        nb__thread_cache_used();
    }
    nb__tensor_retain(t);
    lv.listed[lv.count++] = t;
    return true;
}

int nb__forward_set_hidden(int hidden) {
    int was = lv.hidden;
    lv.hidden = hidden;
    sync_live();
    return was;
}

bool nb__forward_share_tangent(nb_tensor *dst, nb_tensor *src) {
    if (!nb__forward_on() || !nb__has_tangent(src)) return true;
    if (!list(dst)) return false;
    nb__tensor_retain(src->tangent);
    dst->tangent = src->tangent;
    return true;
}

bool nb__forward_mark(nb_tensor *t) {
    if (!list(t)) return false;
    t->tangent_pending = true;
    return true;
}

/* Runs t's pending rule: t->tangent is set (NULL for a zero tangent)
 * unless the op has no rule or the rule fails, which sets the error that
 * makes nb_jvp fail. */
static void run_rule(nb_tensor *t) {
    t->tangent_pending = false;
    const nb_op *op = t->op;
    if (!op->jvp) {
        nb_set_error("nb_jvp: op '%s' has no forward-mode rule (its nb_op has no jvp), so no "
                     "tangent can pass through it", op->name);
    } else {
        nb_tensor *inline_tangents[NB_INLINE_INPUTS], **tin = inline_tangents;
        if (t->ninputs > NB_INLINE_INPUTS) tin = nb_malloc((size_t)t->ninputs * sizeof *tin);
        if (!tin) {
            nb_set_error("nb_jvp: out of memory running the rule of '%s'", op->name);
            return;
        }
        /* an input's own rule ran when this node was recorded */
        for (int i = 0; i < t->ninputs; i++) tin[i] = t->inputs[i]->tangent;
        uint64_t errors = nb_error_count();
        lv.hidden++;
        sync_live();
        nb_scope_begin();
        nb_tensor *r = op->jvp(t, tin);
        bool ok = nb_error_count() == errors;
        if (ok && r && !nb_same_shape(r, t)) {
            char b1[NB_SHAPE_CHARS], b2[NB_SHAPE_CHARS];
            nb_set_error("nb_jvp: the jvp rule of '%s' returned a tangent of shape %s for an "
                         "output of shape %s", op->name,
                         nb_shape_str(r->ndim, r->shape, b1, sizeof b1),
                         nb_shape_str(t->ndim, t->shape, b2, sizeof b2));
            ok = false;
        }
        if (ok && r) {
            nb__tensor_retain(r);
            t->tangent = r;
        }
        nb_scope_end();
        lv.hidden--;
        sync_live();
        if (tin != inline_tangents) nb_free(tin);
    }
    /* A node made for forward mode alone has served its purpose. */
    if (!t->requires_grad) {
        nb__release_graph(t);
        t->op = NULL;
    }
}

bool nb__has_tangent(nb_tensor *t) {
    if (t->tangent_pending) run_rule(t);
    return t->tangent != NULL;
}

void nb__forward_settle(nb_tensor *t) {
    if (t->tangent_pending && lv.open) run_rule(t);
}

nb_tensor *nb_tangent_of(nb_tensor *t) {
    if (!t) return NULL;
    if (t->tangent_pending && lv.open && lv.hidden == 0) run_rule(t);
    return t->tangent;
}

/* Ends the level: drops every tangent and pending rule first, then the
 * level's references, so that no listed tensor is freed while another
 * still has its tangent. */
static void close_level(void) {
    for (int64_t i = 0; i < lv.count; i++) {
        nb_tensor *t = lv.listed[i];
        if (t->tangent_pending) {
            t->tangent_pending = false;
            if (!t->requires_grad) {
                nb__release_graph(t);
                t->op = NULL;
            }
        }
        nb_tensor *tangent = t->tangent;
        t->tangent = NULL;
        if (tangent) nb__tensor_decref(tangent);
    }
    for (int64_t i = 0; i < lv.count; i++) nb__tensor_decref(lv.listed[i]);
    lv.count = 0;
    lv.open = false;
    sync_live();
}

/* The identity between a tensor and a new one sharing its values: the
 * inputs f sees (which carry the tangents), and the tangents handed back. */
static void same_backward(nb_tensor *node, nb_tensor *g, nb_tensor **gin) {
    (void)node;
    gin[0] = g;
}
static nb_tensor *same_jvp(nb_tensor *node, nb_tensor *const *t) {
    (void)node;
    return t[0];
}
static const nb_op same_op = {"jvp_input", same_backward, same_jvp};

static nb_tensor *same(nb_tensor *t) {
    nb_tensor *v = nb__tensor_view(t, t->ndim, t->shape);
    return nb_record(v, &same_op, 1, &t);
}

int nb_jvp(nb_jvp_fn f, void *ctx, int ninputs, nb_tensor *const *inputs,
           nb_tensor *const *tangents, int noutputs, nb_tensor **outputs,
           nb_tensor **out_tangents) {
    if (!f || ninputs < 1 || !inputs || noutputs < 1 || !outputs || !out_tangents) {
        nb_set_error("nb_jvp: needs a function, at least one input and one output, and arrays "
                     "for the outputs and their tangents");
        return -1;
    }
    for (int i = 0; i < noutputs; i++) outputs[i] = out_tangents[i] = NULL;
    for (int i = 0; i < ninputs; i++) {
        nb_tensor *x = inputs[i], *v = tangents ? tangents[i] : NULL;
        if (!x) return -1; /* an earlier op failed: its message stands */
        if (v && !nb_same_shape(v, x)) {
            char b1[NB_SHAPE_CHARS], b2[NB_SHAPE_CHARS];
            nb_set_error("nb_jvp: tangent %d has shape %s, input %d has shape %s", i,
                         nb_shape_str(v->ndim, v->shape, b1, sizeof b1), i,
                         nb_shape_str(x->ndim, x->shape, b2, sizeof b2));
            return -1;
        }
    }
    if (lv.open) {
        nb_set_error("nb_jvp: called inside another nb_jvp (or inside a jvp rule); forward mode "
                     "has one level");
        return -1;
    }
    nb_tensor *inline_duals[8], **duals = inline_duals;
    if (ninputs > 8 && !(duals = nb_malloc((size_t)ninputs * sizeof *duals))) {
        nb_set_error("nb_jvp: out of memory");
        return -1;
    }
    uint64_t errors = nb_error_count();
    nb_scope_begin();
    lv.open = true;
    sync_live();
    bool ok = true;
    for (int i = 0; i < ninputs; i++) {
        duals[i] = same(inputs[i]);
        nb_tensor *v = tangents ? tangents[i] : NULL;
        if (!duals[i]) ok = false;
        else if (v) {
            if (!list(duals[i])) {
                nb_set_error("nb_jvp: out of memory");
                ok = false;
                break;
            }
            nb__tensor_retain(v);
            duals[i]->tangent = v;
        }
    }
    if (ok && f(duals, outputs, ctx) != 0) {
        if (nb_error_count() == errors) nb_set_error("nb_jvp: f returned an error without a message");
        ok = false;
    }
    for (int i = 0; ok && i < noutputs; i++) {
        if (!outputs[i]) {
            if (nb_error_count() == errors) nb_set_error("nb_jvp: f returned no output %d", i);
            ok = false;
        } else if (outputs[i]->tangent_pending) {
            run_rule(outputs[i]);
        }
    }
    ok = ok && nb_error_count() == errors;
    /* Hold the outputs' tangents past the level's end. */
    for (int i = 0; ok && i < noutputs; i++)
        if ((out_tangents[i] = outputs[i]->tangent)) nb__tensor_retain(out_tangents[i]);
    close_level();
    /* every held tangent is let go, also past a failure */
    for (int i = 0; i < noutputs; i++) {
        nb_tensor *held = out_tangents[i];
        if (ok) {
            out_tangents[i] = held ? same(held) : nb_zeros_like(outputs[i]);
            if (!out_tangents[i]) ok = false;
        }
        if (held) nb__tensor_decref(held);
    }
    for (int i = 0; i < noutputs; i++) {
        if (ok) {
            nb_escape(outputs[i]);
            nb_escape(out_tangents[i]);
        } else {
            outputs[i] = out_tangents[i] = NULL;
        }
    }
    nb_scope_end();
    if (duals != inline_duals) nb_free(duals);
    return ok ? 0 : -1;
}
