/* test_debug.c — the tools for looking inside: graph export with its
 * options, trace mode, anomaly mode with source locations, and gradient
 * hooks. This file is compiled with -DNB_LOCATIONS, so the ops it calls
 * record the line they are called from. Expected norms and gradients are
 * worked out by hand in the comments.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

TestSuite(debug, NB_TEST_HOOKS);

static nb_tensor *vec(int n, const float *v) { return nb_from_array(1, (int64_t[]){n}, v); }
static nb_tensor *leaf(int n, const float *v, const char *name) {
    return nb_set_name(nb_set_requires_grad(vec(n, v), true), name);
}

/* The dot text of t with opts, in a malloc'd string. */
static char *dot_of(const nb_tensor *t, const nb_export_opts *opts) {
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    cr_assert_eq(nb_export_dot_ex(t, f, opts), 0, "%s", nb_error());
    fclose(f);
    return buf;
}

static int count(const char *s, const char *what) {
    int n = 0;
    for (const char *p = strstr(s, what); p; p = strstr(p + 1, what)) n++;
    return n;
}

/* The line of node number k ("  nK [label=...") */
static const char *node_line(const char *dot, int k, char *out, size_t size) {
    char key[32];
    snprintf(key, sizeof key, "  n%d [label=", k);
    const char *p = strstr(dot, key);
    cr_assert_not_null(p, "no node %d in\n%s", k, dot);
    size_t n = strcspn(p, "\n");
    snprintf(out, size, "%.*s", (int)n, p);
    return out;
}

/* y = sum((w + c) * x): w a parameter (held by a container), c a constant,
 * x an input (a leaf that requires grad). */
typedef struct small_graph {
    nb_tensor *w, *c, *x, *s, *p, *y;
} small_graph;

static small_graph make_small_graph(void) {
    small_graph g;
    g.w = nb_adopt(leaf(2, (float[]){1, 2}, "w"), "test");
    g.c = nb_set_name(vec(2, (float[]){0.5f, -1}), "c");
    g.x = leaf(2, (float[]){3, 4}, "x");
    g.s = nb_set_name(nb_add(g.w, g.c), "s");
    g.p = nb_set_name(nb_mul(g.s, g.x), "p");
    g.y = nb_set_name(nb_sum(g.p, NB_ALL, false), "y");
    return g;
}

Test(debug, export_marks_leaves_and_numbers_nodes) {
    small_graph g = make_small_graph();
    char *dot = dot_of(g.y, NULL);
    char line[512];
    /* breadth-first from y: y, p, then p's inputs s and x, then w and c */
    cr_assert(strstr(node_line(dot, 0, line, sizeof line), "y\\nsum []"), "%s", line);
    cr_assert(strstr(node_line(dot, 1, line, sizeof line), "p\\nmul [2]"), "%s", line);
    cr_assert(strstr(node_line(dot, 2, line, sizeof line), "s\\nadd [2]"), "%s", line);
    node_line(dot, 3, line, sizeof line);
    cr_assert(strstr(line, "x\\ninput [2]") && strstr(line, "palegreen"), "%s", line);
    node_line(dot, 4, line, sizeof line);
    cr_assert(strstr(line, "w\\nparameter [2]") && strstr(line, "lightblue"), "%s", line);
    node_line(dot, 5, line, sizeof line);
    cr_assert(strstr(line, "c\\nconstant [2]") && strstr(line, "lightgrey"), "%s", line);
    /* the five edges, input -> output, and nothing else */
    const char *edges[] = {"n1 -> n0;", "n2 -> n1;", "n3 -> n1;", "n4 -> n2;", "n5 -> n2;"};
    for (int i = 0; i < 5; i++) cr_assert(strstr(dot, edges[i]), "no %s in\n%s", edges[i], dot);
    cr_assert_eq(count(dot, "->"), 5, "%s", dot);
    cr_assert_eq(count(dot, "subgraph"), 0);
    free(dot);
    nb_disown(g.w, "test");
}

Test(debug, export_values_gradients_and_flow) {
    small_graph g = make_small_graph();
    /* y = sum((w + c) * x): dy/dw = x = [3, 4], dy/dx = w + c = [1.5, 1];
     * y = 1.5*3 + 1*4 = 8.5 */
    cr_assert_eq(nb_backward_ex(g.y, NULL, &(nb_backward_opts){.retain_graph = true}), 0);
    nb_export_opts o = nb_export_defaults();
    cr_assert_eq(o.max_values, 8);
    o.values = o.grads = o.grad_flow = true;
    char *dot = dot_of(g.y, &o);
    char line[512];
    cr_assert(strstr(node_line(dot, 0, line, sizeof line), "\\n= [8.5]"), "%s", line);
    cr_assert(strstr(node_line(dot, 3, line, sizeof line), "= [3, 4]\\ngrad [1.5, 1]"), "%s", line);
    cr_assert(strstr(node_line(dot, 4, line, sizeof line), "= [1, 2]\\ngrad [3, 4]"), "%s", line);
    cr_assert(strstr(node_line(dot, 5, line, sizeof line), "= [0.5, -1]\""), "%s", line);
    /* the gradient flows back along every edge into a tensor that requires
     * grad: y->p, p->s, p->x, s->w, but not s->c */
    cr_assert_eq(count(dot, "color=red, style=dashed"), 4, "%s", dot);
    cr_assert(strstr(dot, "n2 -> n4 [color=red") && !strstr(dot, "n2 -> n5 [color=red"), "%s", dot);
    /* a larger tensor shows the norm of its values instead */
    o.max_values = 1;
    free(dot);
    dot = dot_of(g.y, &o);
    cr_assert(strstr(node_line(dot, 4, line, sizeof line), "norm 2.236\\ngrad norm 5\""), "%s", line);
    free(dot);
    nb_disown(g.w, "test");
}

Test(debug, export_names_and_clusters) {
    small_graph g = make_small_graph();
    const nb_tensor *named[] = {g.w, g.x, g.c};
    const char *names[] = {"0.weight", "1.scale", "0.bias"};
    nb_export_opts o = nb_export_defaults();
    o.nnamed = 3;
    o.named = named;
    o.names = names;
    char *dot = dot_of(g.y, &o);
    char line[512];
    /* named tensors are parameters, under their given names */
    cr_assert(strstr(node_line(dot, 3, line, sizeof line), "1.scale\\nparameter [2]"), "%s", line);
    cr_assert(strstr(node_line(dot, 5, line, sizeof line), "0.bias\\nparameter [2]"), "%s", line);
    /* one box per module, holding its tensors */
    cr_assert(strstr(dot, "subgraph cluster_0 {\n    label=\"0\";\n    style=rounded;\n    "
                          "color=steelblue;\n    n4;\n    n5;\n  }"), "%s", dot);
    cr_assert(strstr(dot, "subgraph cluster_1 {\n    label=\"1\";"), "%s", dot);
    cr_assert_eq(count(dot, "subgraph"), 2);
    free(dot);
    nb_disown(g.w, "test");
}

Test(debug, export_parses_with_graphviz) {
    if (system("command -v dot > /dev/null 2>&1") != 0) cr_skip_test("graphviz (dot) is not installed");
    small_graph g = make_small_graph();
    nb_set_name(g.c, "a \"quoted\" \\ name\nwith a newline\t");
    cr_assert_eq(nb_backward_ex(g.y, NULL, &(nb_backward_opts){.retain_graph = true}), 0);
    const nb_tensor *named[] = {g.w};
    const char *names[] = {"layer \"0\".weight"};
    nb_export_opts o = {.values = true, .grads = true, .grad_flow = true, .max_values = 8,
                        .nnamed = 1, .named = named, .names = names};
    /* dot reads the export from a pipe and fails on a syntax error */
    FILE *dot = popen("dot -Tsvg -o /dev/null", "w");
    cr_assert_not_null(dot);
    cr_assert_eq(nb_export_dot_ex(g.y, dot, &o), 0);
    cr_assert_eq(pclose(dot), 0, "dot could not read the export");
    nb_disown(g.w, "test");
}

/* ---- trace ------------------------------------------------------------------------ */

typedef struct trace_line {
    char dir[16], op[32], shape[32], name[32];
    double grad, sent[4];
    int nsent;
} trace_line;

/* Parses "backward OP SHAPE "NAME" |grad| G [-> S0 S1 ... T us]". */
static int parse_trace(char *text, trace_line *lines, int max) {
    int n = 0;
    for (char *line = strtok(text, "\n"); line && n < max; line = strtok(NULL, "\n")) {
        trace_line *t = &lines[n];
        memset(t, 0, sizeof *t);
        int used = 0;
        if (sscanf(line, "%15s %31s %31s \"%31[^\"]\" |grad| %lf%n", t->dir, t->op, t->shape,
                   t->name, &t->grad, &used) != 5)
            continue;
        const char *rest = line + used;
        if (!strncmp(rest, " ->", 3)) {
            rest += 3;
            double v;
            int k;
            while (t->nsent < 4) {
                if (!strncmp(rest, " -", 2) && (rest[2] == ' ' || !rest[2])) {
                    t->sent[t->nsent++] = -1;
                    rest += 2;
                } else if (sscanf(rest, " %lf%n", &v, &k) == 1 && strncmp(rest + k, " us", 3)) {
                    t->sent[t->nsent++] = v;
                    rest += k;
                } else {
                    break;
                }
            }
            cr_assert(strstr(rest, " us"), "no time in \"%s\"", line);
        }
        n++;
    }
    return n;
}

Test(debug, trace_backward_order_and_norms) {
    /* x = [1, 2, 3]; h = 2x; q = h*h; y = sum(q) = 56.
     * Backward: y gets 1 and sends ones(3), norm sqrt(3), to q; q sends
     * g*h = [2, 4, 6], norm sqrt(56), to each of its two inputs (both h);
     * h gets their sum [4, 8, 12], norm sqrt(224), and sends 2 * that,
     * norm sqrt(896), to x, which gets it. */
    nb_tensor *x = leaf(3, (float[]){1, 2, 3}, "x");
    nb_tensor *h = nb_set_name(nb_mul_scalar(x, 2), "h");
    nb_tensor *q = nb_set_name(nb_mul(h, h), "q");
    nb_tensor *y = nb_set_name(nb_sum(q, NB_ALL, false), "y");
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    FILE *before = nb_set_trace(f, NB_TRACE_BACKWARD);
    cr_assert_null(before);
    int rc = nb_backward(y);
    cr_assert_eq(nb_set_trace(NULL, 0), f);
    fclose(f);
    cr_assert_eq(rc, 0, "%s", nb_error());
    trace_line lines[8];
    int n = parse_trace(text, lines, 8);
    cr_assert_eq(n, 4, "%s", text);
    /* a valid reverse topological order: every node before its inputs */
    const char *order[] = {"y", "q", "h", "x"};
    const char *ops[] = {"sum", "mul", "mul_scalar", "leaf"};
    for (int i = 0; i < 4; i++) {
        cr_assert_str_eq(lines[i].dir, "backward");
        cr_assert_str_eq(lines[i].name, order[i], "line %d of\n%s", i, text);
        cr_assert_str_eq(lines[i].op, ops[i], "line %d of\n%s", i, text);
    }
    cr_assert_str_eq(lines[0].shape, "[]");
    cr_assert_str_eq(lines[3].shape, "[3]");
    double tol = 1e-4;
    cr_assert_float_eq(lines[0].grad, 1, tol);
    cr_assert_eq(lines[0].nsent, 1);
    cr_assert_float_eq(lines[0].sent[0], sqrt(3), tol);
    cr_assert_float_eq(lines[1].grad, sqrt(3), tol);
    cr_assert_eq(lines[1].nsent, 2);
    cr_assert_float_eq(lines[1].sent[0], sqrt(56), tol);
    cr_assert_float_eq(lines[1].sent[1], sqrt(56), tol);
    cr_assert_float_eq(lines[2].grad, sqrt(224), tol);
    cr_assert_eq(lines[2].nsent, 1);
    cr_assert_float_eq(lines[2].sent[0], sqrt(896), 1e-3);
    cr_assert_float_eq(lines[3].grad, sqrt(896), 1e-3);
    cr_assert_eq(lines[3].nsent, 0);
    free(text);
}

/* The position of the line named name, or -1. */
static int line_of(const trace_line *lines, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(lines[i].name, name)) return i;
    return -1;
}

Test(debug, trace_diamond_in_reverse_topological_order) {
    /* a = 2x, b = exp(x), c = a*b, s = c + a, y = sum(s): a is used twice
     * and must come after both its users (c and s); x after a and b. At
     * x = [0, 0]: a = 0, b = 1; dy/ds = 1, dy/dc = 1, dy/da = b + 1 = 2,
     * dy/db = a = 0, dy/dx = 2*2 + 0*b = 4, per element: norm 4*sqrt(2). */
    nb_tensor *x = leaf(2, (float[]){0, 0}, "x");
    nb_tensor *a = nb_set_name(nb_mul_scalar(x, 2), "a");
    nb_tensor *b = nb_set_name(nb_exp(x), "b");
    nb_tensor *c = nb_set_name(nb_mul(a, b), "c");
    nb_tensor *s = nb_set_name(nb_add(c, a), "s");
    nb_tensor *y = nb_set_name(nb_sum(s, NB_ALL, false), "y");
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    nb_set_trace(f, NB_TRACE_BACKWARD);
    int rc = nb_backward(y);
    nb_set_trace(NULL, 0);
    fclose(f);
    cr_assert_eq(rc, 0, "%s", nb_error());
    trace_line lines[8];
    int n = parse_trace(text, lines, 8);
    cr_assert_eq(n, 6, "%s", text);
    /* every edge user -> input: the user's line comes first */
    const char *edges[][2] = {{"y", "s"}, {"s", "c"}, {"s", "a"}, {"c", "a"},
                              {"c", "b"}, {"a", "x"}, {"b", "x"}};
    for (int e = 0; e < 7; e++) {
        int user = line_of(lines, n, edges[e][0]), input = line_of(lines, n, edges[e][1]);
        cr_assert(user >= 0 && input >= 0 && user < input, "%s listed after its input %s:\n%s",
                  edges[e][0], edges[e][1], text);
    }
    /* a receives its two contributions summed, once: dy/da = [2, 2] */
    cr_assert_float_eq(lines[line_of(lines, n, "a")].grad, 2 * sqrt(2), 1e-5, "%s", text);
    cr_assert_float_eq(lines[line_of(lines, n, "b")].grad, 0, 1e-6, "%s", text);
    cr_assert_float_eq(lines[line_of(lines, n, "x")].grad, 4 * sqrt(2), 1e-5, "%s", text);
    free(text);
}

Test(debug, trace_input_without_gradient_and_forward) {
    /* y = sum(x * c), c a constant: mul sends x's gradient c = [3, 4]
     * (norm 5) and nothing ("-") to c. Forward lines give the output norm
     * and the input shapes: |x*c| = |[3, 8]| = sqrt(73). */
    nb_tensor *x = leaf(2, (float[]){1, 2}, "x");
    nb_tensor *c = vec(2, (float[]){3, 4});
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    nb_set_trace(f, NB_TRACE_FORWARD | NB_TRACE_BACKWARD);
    nb_tensor *y = nb_sum(nb_mul(x, c), NB_ALL, false);
    int rc = nb_backward(y);
    nb_set_trace(NULL, 0);
    fclose(f);
    cr_assert_eq(rc, 0, "%s", nb_error());
    cr_assert(strstr(text, "forward mul [2] |y| 8.544 <- [2] [2] +"), "%s", text);
    cr_assert(strstr(text, "forward sum [] |y| 11 <- [2] +"), "%s", text);
    cr_assert_eq(count(text, " us\n"), 4, "every line has its time: %s", text);
    cr_assert(strstr(text, "backward mul [2] \"\" |grad| 1.41421 -> 5 - "), "%s", text);
    /* the ops of backward formulas are not listed as forward ops */
    cr_assert_eq(count(text, "forward"), 2, "%s", text);
    free(text);
}

/* ---- anomaly mode ------------------------------------------------------------------- */

Test(debug, anomaly_names_forward_op_and_line) {
    cr_assert_not(nb_is_anomaly_enabled());
    nb_tensor *x = leaf(2, (float[]){1, 0}, "x");
    /* off: log(0) is -inf and nothing complains */
    nb_tensor *quiet = nb_log(x);
    cr_assert_not_null(quiet);
    cr_assert_null(nb_error());
    cr_assert_not(nb_set_detect_anomaly(true));
    cr_assert(nb_is_anomaly_enabled());
    nb_tensor *a = nb_mul_scalar(x, 2);
    int line = __LINE__ + 1;
    nb_tensor *bad = nb_log(a);
    nb_tensor *later = nb_sum(bad, NB_ALL, false);
    nb_set_detect_anomaly(false);
    cr_assert_null(bad);
    cr_assert_null(later); /* NULL in, NULL out: the first message stands */
    char where[64];
    snprintf(where, sizeof where, "test_debug.c:%d", line);
    EXPECT_ERROR("nb_log: anomaly detection: op 'log' produced -inf", "element 1", "input shapes [2]", where);
}

Test(debug, anomaly_names_backward_and_its_forward_op) {
    /* sqrt's gradient at 0 is 0.5 / sqrt(0) = inf: the backward formula's
     * division is the first op to make it */
    nb_set_detect_anomaly(true);
    nb_tensor *x = leaf(3, (float[]){4, 0, 1}, "x");
    int line = __LINE__ + 1;
    nb_tensor *r = nb_sqrt(x);
    nb_tensor *y = nb_sum(r, NB_ALL, false);
    cr_assert_not_null(y, "%s", nb_error());
    int rc = nb_backward(y);
    nb_set_detect_anomaly(false);
    cr_assert_eq(rc, -1);
    char where[64];
    snprintf(where, sizeof where, "test_debug.c:%d", line);
    EXPECT_ERROR("nb_backward: anomaly detection: in the backward of 'sqrt'", "input shapes [3]",
                 "created by nb_sqrt at", where, "produced inf");
    cr_assert_null(nb_grad_of(x), "a failed backward leaves .grad alone");
}

/* A custom op whose backward writes a NaN with a plain loop, which no op
 * of the formula sees: the engine's check of the gradients finds it. */
static void nan_backward(nb_tensor *node, nb_tensor *g, nb_tensor **gin) {
    (void)node;
    nb_tensor *t = nb_empty_like(g);
    for (int64_t i = 0; i < nb_numel(t); i++) nb_data_mut(t)[i] = i == 1 ? NAN : 1;
    gin[0] = t;
}
static const nb_op nan_op = {"nan_grad", nan_backward};
static nb_tensor *nan_grad(nb_tensor *x) {
    nb_tensor *out = nb_empty_like(x);
    memcpy(nb_data_mut(out), nb_data(x), (size_t)nb_numel(x) * sizeof(float));
    return nb_record(out, &nan_op, 1, &x);
}
#define nan_grad(x) NB_AT(nan_grad(x))

Test(debug, anomaly_in_gradient_of_custom_op) {
    nb_set_detect_anomaly(true);
    nb_tensor *x = leaf(2, (float[]){1, 2}, "x");
    int line = __LINE__ + 1;
    nb_tensor *y = nb_sum(nan_grad(x), NB_ALL, false);
    int rc = nb_backward(y);
    nb_set_detect_anomaly(false);
    cr_assert_eq(rc, -1);
    char where[64];
    snprintf(where, sizeof where, "test_debug.c:%d", line);
    EXPECT_ERROR("nb_backward: anomaly detection: the backward of 'nan_grad'", where,
                 "produced NaN at element 1 of the gradient of input 0 (shape [2])");
}

Test(debug, anomaly_without_location) {
    /* with the mode on but an op not placed (the raw function, called
     * through its address), the message says how to get the place */
    nb_set_detect_anomaly(true);
    nb_tensor *(*log_fn)(nb_tensor *) = nb_log;
    nb_tensor *bad = log_fn(vec(1, (float[]){-1}));
    nb_set_detect_anomaly(false);
    cr_assert_null(bad);
    EXPECT_ERROR("'log' produced NaN", "compile with -DNB_LOCATIONS");
}

/* ---- gradient hooks ------------------------------------------------------------------ */

typedef struct hook_log {
    char order[64];
    float scale;
    int freed;
} hook_log;

typedef struct hook_arg {
    hook_log *log;
    char tag;
} hook_arg;

static nb_tensor *scaling_hook(nb_tensor *grad, void *user) {
    hook_arg *a = user;
    size_t n = strlen(a->log->order);
    if (n + 1 < sizeof a->log->order) a->log->order[n] = a->tag;
    return a->log->scale == 1 ? NULL : nb_mul_scalar(grad, a->log->scale);
}

static void count_free(void *user) { ((hook_arg *)user)->log->freed++; }

Test(debug, hooks_fire_in_order_and_replace_gradients) {
    /* y = sum(3 * x): dy/dx = 3; with a hook doubling the gradient at h,
     * x receives 6; a second hook on x doubling again gives 12. */
    hook_log log = {.scale = 2};
    hook_arg on_h = {&log, 'h'}, on_x = {&log, 'x'}, on_x2 = {&log, 'X'};
    nb_tensor *x = leaf(2, (float[]){1, 2}, "x");
    nb_tensor *h = nb_mul_scalar(x, 3);
    nb_tensor *y = nb_sum(h, NB_ALL, false);
    int hh = nb_register_hook(h, scaling_hook, &on_h);
    cr_assert_gt(hh, 0, "%s", nb_error());
    int hx = nb_register_hook(x, scaling_hook, &on_x);
    int hx2 = nb_register_hook_ex(x, scaling_hook, &on_x2, count_free);
    cr_assert_gt(hx2, hx);
    cr_assert_eq(nb_backward_ex(y, NULL, &(nb_backward_opts){.retain_graph = true}), 0, "%s", nb_error());
    /* h's hook before x's (the order backward meets them), x's two in the
     * order registered */
    cr_assert_str_eq(log.order, "hxX");
    EXPECT_VALUES(nb_grad_of(x), 1e-6, 24, 24);
    /* removed: they stop */
    cr_assert_eq(nb_remove_hook(h, hh), 0);
    cr_assert_eq(nb_remove_hook(x, hx), 0);
    cr_assert_eq(nb_remove_hook(x, hx), -1);
    EXPECT_ERROR("nb_remove_hook", "no hook");
    nb_clear_grad(x);
    memset(log.order, 0, sizeof log.order);
    cr_assert_eq(nb_backward(y), 0, "%s", nb_error());
    cr_assert_str_eq(log.order, "X");
    EXPECT_VALUES(nb_grad_of(x), 1e-6, 6, 6);
    /* the hook's user data is freed when it is removed, not before (the
     * data lives on this stack: the hook must go before the test ends) */
    cr_assert_eq(log.freed, 0);
    cr_assert_eq(nb_remove_hook(x, hx2), 0);
    cr_assert_eq(log.freed, 1);
}

Test(debug, hook_user_data_freed_with_tensor) {
    hook_log log = {.scale = 1};
    hook_arg a = {&log, 'a'};
    nb_scope_begin();
    nb_tensor *x = leaf(1, (float[]){1}, "x");
    cr_assert_gt(nb_register_hook_ex(x, scaling_hook, &a, count_free), 0);
    nb_scope_end();
    cr_assert_eq(log.freed, 1);
    /* a tensor that does not require grad takes no hook, and frees the data */
    cr_assert_eq(nb_register_hook_ex(vec(1, (float[]){1}), scaling_hook, &a, count_free), -1);
    EXPECT_ERROR("nb_register_hook", "does not require grad");
    cr_assert_eq(log.freed, 2);
}

Test(debug, hook_on_intermediate_reads_without_changing) {
    /* a hook returning NULL sees the gradient and leaves it */
    hook_log log = {.scale = 1};
    hook_arg a = {&log, 'q'};
    nb_tensor *x = leaf(2, (float[]){1, 2}, "x");
    nb_tensor *q = nb_mul(x, x);
    nb_register_hook(q, scaling_hook, &a);
    cr_assert_eq(nb_backward(nb_sum(q, NB_ALL, false)), 0);
    cr_assert_str_eq(log.order, "q");
    EXPECT_VALUES(nb_grad_of(x), 1e-6, 2, 4);
}

Test(debug, hook_with_create_graph_stays_differentiable) {
    /* y = sum(x^3): dy/dx = 3x^2, doubled by a hook on x to 6x^2; the
     * hook's op is recorded, so d(sum(6x^2))/dx = 12x. */
    hook_log log = {.scale = 2};
    hook_arg a = {&log, 'x'};
    nb_tensor *x = leaf(2, (float[]){1, 2}, "x");
    nb_register_hook(x, scaling_hook, &a);
    nb_tensor *y = nb_sum(nb_mul(x, nb_mul(x, x)), NB_ALL, false);
    nb_tensor *g;
    cr_assert_eq(nb_grad(1, &y, NULL, 1, &x, &g, &(nb_grad_opts){.create_graph = true}), 0, "%s", nb_error());
    EXPECT_VALUES(g, 1e-5, 6, 24);
    nb_tensor *s = nb_sum(g, NB_ALL, false), *gg;
    cr_assert_eq(nb_grad(1, &s, NULL, 1, &x, &gg, NULL), 0, "%s", nb_error());
    /* the second nb_grad passes x too: its hook doubles again, 24x */
    EXPECT_VALUES(gg, 1e-5, 24, 48);
}

static nb_tensor *wrong_shape_hook(nb_tensor *grad, void *user) {
    (void)grad;
    (void)user;
    return nb_zeros(NB_SHAPE(3));
}

Test(debug, hook_returning_wrong_shape_fails_backward) {
    nb_tensor *x = leaf(2, (float[]){1, 2}, "x");
    nb_register_hook(x, wrong_shape_hook, NULL);
    cr_assert_eq(nb_backward(nb_sum(x, NB_ALL, false)), -1);
    EXPECT_ERROR("nb_backward", "hook on the tensor 'x' of shape [2] returned a gradient of shape [3]");
    cr_assert_null(nb_grad_of(x));
}

Test(debug, hook_out_of_memory_frees_user_data) {
    hook_log log = {.scale = 1};
    hook_arg a = {&log, 'a'};
    nb_tensor *x = leaf(1, (float[]){1}, "x");
    nb_test_alloc fail = {.fail_at = 1};
    nb_set_alloc_hook(nb_test_alloc_hook, &fail);
    int h = nb_register_hook_ex(x, scaling_hook, &a, count_free);
    nb_set_alloc_hook(NULL, NULL);
    cr_assert_eq(h, -1);
    EXPECT_ERROR("nb_register_hook: out of memory");
    cr_assert_eq(log.freed, 1);
    /* and x has no hook: backward runs as without */
    cr_assert_eq(nb_backward(nb_sum(x, NB_ALL, false)), 0);
    cr_assert_str_eq(log.order, "");
}
