/* test_model.c — the Keras-style model of nn/model.c and the losses and
 * metrics of nn/losses.c.
 *
 * The contract under test: a call with bad arguments (compile with an
 * unknown name, fit with mismatched or ill-shaped data, add with a layer
 * that does not fit) returns NULL or -1 with a message and leaves the model
 * exactly as it was, parameters compared bit for bit; fit lowers the loss
 * of a learnable problem and repeats itself bit for bit from the same seed;
 * evaluate and predict agree with the loss and the forward computed by
 * hand; validation, early stopping, callbacks and the stop on a NaN loss
 * end training where they should and say why; summary and the progress
 * output print Keras's lines. The crossentropies and the "accuracy" metric
 * (binary, categorical or sparse, picked from the loss) are checked on
 * probabilities written literally, through a model that passes its input
 * through unchanged.
 */
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

TestSuite(model, NB_TEST_HOOKS);

/* ---- helpers ------------------------------------------------------------------------- */

/* x [n, 3] uniform in [-1, 1], y = x [1, -2, 0.5]^T + 0.3, [n, 1] */
static void linear_data(int64_t n, nb_tensor **x, nb_tensor **y) {
    *x = nb_uniform(NULL, -1, 1, NB_SHAPE(n, 3));
    *y = nb_add_scalar(nb_matmul(*x, nb_from_array(NB_SHAPE(3, 1), (const float[]){1, -2, 0.5f})), 0.3f);
}

/* Dense(8, tanh, input 3) -> Dense(1), not compiled */
static nb_model *small_model(void) {
    nb_model *m = nb_model_sequential();
    cr_assert_not_null(m);
    cr_assert_eq(nb_model_add(m, nb_dense(8, "tanh", 3)), 0, "%s", nb_error() ? nb_error() : "");
    cr_assert_eq(nb_model_add(m, nb_dense(1, "linear", 0)), 0, "%s", nb_error() ? nb_error() : "");
    return m;
}

static nb_fit_opts quiet_fit(int epochs, int batch_size) {
    nb_fit_opts o = nb_fit_defaults();
    o.epochs = epochs;
    o.batch_size = batch_size;
    o.verbose = 0;
    return o;
}

/* A copy of every parameter's data, to compare bit for bit later. */
typedef struct snapshot {
    int n;
    float *data[16];
    int64_t numel[16];
} snapshot;

static snapshot take_snapshot(nb_model *m) {
    snapshot s = {0};
    nb_tensor **p = nb_model_parameters(m, &s.n);
    cr_assert(s.n <= 16);
    for (int i = 0; i < s.n; i++) {
        s.numel[i] = nb_numel(p[i]);
        s.data[i] = malloc(sizeof(float) * (size_t)s.numel[i]);
        memcpy(s.data[i], nb_data(p[i]), sizeof(float) * (size_t)s.numel[i]);
    }
    return s;
}

static bool snapshot_equal(nb_model *m, const snapshot *s) {
    int n = 0;
    nb_tensor **p = nb_model_parameters(m, &n);
    if (n != s->n) return false;
    for (int i = 0; i < n; i++)
        if (nb_numel(p[i]) != s->numel[i] ||
            memcmp(nb_data(p[i]), s->data[i], sizeof(float) * (size_t)s->numel[i]) != 0)
            return false;
    return true;
}

static void snapshot_free(snapshot *s) {
    for (int i = 0; i < s->n; i++) free(s->data[i]);
}

/* Everything a FILE* received, through fmemopen. */
typedef struct capture {
    char buf[8192];
    FILE *f;
} capture;

static void capture_begin(capture *c) {
    memset(c->buf, 0, sizeof c->buf);
    c->f = fmemopen(c->buf, sizeof c->buf - 1, "w");
    cr_assert_not_null(c->f);
}

static const char *capture_end(capture *c) {
    fclose(c->f);
    return c->buf;
}

/* A model whose output is its input: evaluate then scores given predictions. */
static nb_model *passthrough(const char *loss, const char *metrics) {
    nb_model *m = nb_model_from_module(nb_activation("linear"));
    cr_assert_not_null(m);
    cr_assert_eq(nb_model_compile(m, "sgd", loss, metrics), 0, "%s", nb_error() ? nb_error() : "");
    return m;
}

/* ---- compile --------------------------------------------------------------------------- */

Test(model, compile_errors_leave_the_model_usable) {
    nb_tensor *x, *y;
    linear_data(20, &x, &y);
    nb_model *m = small_model();
    nb_clear_error();
    cr_expect_eq(nb_model_compile(m, "sgdx", "mse", NULL), -1);
    EXPECT_ERROR("nb_model_compile", "unknown optimizer 'sgdx'");
    nb_clear_error();
    cr_expect_eq(nb_model_compile(m, "sgd", "msx", NULL), -1);
    EXPECT_ERROR("nb_model_compile", "unknown loss 'msx'");
    nb_clear_error();
    cr_expect_eq(nb_model_compile(m, "sgd", "mse", "mae, bogus"), -1);
    EXPECT_ERROR("nb_model_compile", "unknown metric 'bogus'");
    nb_clear_error();
    cr_expect_eq(nb_model_compile(m, NULL, "mse", NULL), -1);
    EXPECT_ERROR("nb_model_compile", "optimizer");

    /* none of the failed calls compiled anything */
    nb_fit_opts o = quiet_fit(1, 5);
    nb_clear_error();
    cr_expect_null(nb_model_fit(m, x, y, &o));
    EXPECT_ERROR("not compiled");

    /* a good compile, then a bad one: the good one stays */
    cr_assert_eq(nb_model_compile(m, "adam", "mse", "mae"), 0, "%s", nb_error());
    cr_expect_eq(nb_model_compile(m, "rmsprop", "mse", "nope"), -1);
    cr_expect_str_eq(nb_optimizer_name(nb_model_optimizer(m)), "adam");
    nb_history *h = nb_model_fit(m, x, y, &o);
    cr_assert_not_null(h, "%s", nb_error());
    cr_expect_not_null(nb_history_get(h, "mae"));
    nb_history_free(h);
    nb_model_free(m);
}

Test(model, compile_names_and_aliases) {
    const char *optimizers[] = {"sgd", "adam", "adamw", "rmsprop", "adagrad"};
    const char *losses[] = {"mean_squared_error", "mse", "mean_absolute_error", "mae", "huber"};
    nb_model *m = small_model();
    for (int i = 0; i < 5; i++) {
        cr_expect_eq(nb_model_compile(m, optimizers[i], losses[i], "mse, mae"), 0, "%s %s: %s",
                     optimizers[i], losses[i], nb_error() ? nb_error() : "");
        cr_expect_str_eq(nb_optimizer_name(nb_model_optimizer(m)), optimizers[i]);
    }
    /* sgd by name is Keras's: lr 0.01 */
    nb_model_compile(m, "sgd", "mse", NULL);
    cr_expect_float_eq(nb_optimizer_lr(nb_model_optimizer(m)), 0.01f, 1e-9);
    nb_model_free(m);
}

/* ---- fit: bad input changes nothing -------------------------------------------------------- */

Test(model, fit_bad_input_leaves_the_parameters) {
    nb_tensor *x, *y;
    linear_data(10, &x, &y);
    nb_model *m = small_model();
    cr_assert_eq(nb_model_compile(m, "sgd", "mse", NULL), 0);
    snapshot before = take_snapshot(m);
    nb_fit_opts o = quiet_fit(2, 4);

    /* rows differ */
    nb_clear_error();
    cr_expect_null(nb_model_fit(m, x, nb_zeros(NB_SHAPE(9, 1)), &o));
    EXPECT_ERROR("nb_model_fit", "[10,3]", "[9,1]", "same number of rows");
    cr_expect(snapshot_equal(m, &before));

    /* batch_size 0, negative epochs, validation_split 1 */
    nb_fit_opts bad = o;
    bad.batch_size = 0;
    nb_clear_error();
    cr_expect_null(nb_model_fit(m, x, y, &bad));
    EXPECT_ERROR("nb_model_fit", "batch_size", "got 0");
    bad = o;
    bad.epochs = -1;
    nb_clear_error();
    cr_expect_null(nb_model_fit(m, x, y, &bad));
    EXPECT_ERROR("nb_model_fit", "epochs");
    bad = o;
    bad.validation_split = 1;
    nb_clear_error();
    cr_expect_null(nb_model_fit(m, x, y, &bad));
    EXPECT_ERROR("nb_model_fit", "validation_split");
    cr_expect(snapshot_equal(m, &before));

    /* x of the wrong width */
    nb_clear_error();
    cr_expect_null(nb_model_fit(m, nb_zeros(NB_SHAPE(10, 4)), y, &o));
    EXPECT_ERROR("nb_model_fit", "[10,4]", "[3]");
    cr_expect(snapshot_equal(m, &before));

    /* y that does not fit the output (the loss refuses [1,1] against [1,2]) */
    nb_clear_error();
    cr_expect_null(nb_model_fit(m, x, nb_zeros(NB_SHAPE(10, 2)), &o));
    EXPECT_ERROR("nb_model_fit", "[10,2]", "do not fit the model");
    cr_expect(snapshot_equal(m, &before));

    /* validation data of the wrong width, or x_val without y_val */
    bad = o;
    bad.x_val = nb_zeros(NB_SHAPE(4, 2));
    bad.y_val = nb_zeros(NB_SHAPE(4, 1));
    nb_clear_error();
    cr_expect_null(nb_model_fit(m, x, y, &bad));
    EXPECT_ERROR("nb_model_fit", "validation", "[4,2]");
    bad.x_val = x;
    bad.y_val = NULL;
    nb_clear_error();
    cr_expect_null(nb_model_fit(m, x, y, &bad));
    EXPECT_ERROR("nb_model_fit", "validation");
    cr_expect(snapshot_equal(m, &before));

    /* early stopping on a key that will never be recorded */
    bad = o;
    bad.patience = 2;
    bad.monitor = "val_loss";
    nb_clear_error();
    cr_expect_null(nb_model_fit(m, x, y, &bad));
    EXPECT_ERROR("nb_model_fit", "val_loss");
    cr_expect(snapshot_equal(m, &before));

    /* NULL data: NULL without a message */
    nb_clear_error();
    cr_expect_null(nb_model_fit(m, NULL, y, &o));
    cr_expect_null(nb_model_fit(NULL, x, y, &o));
    cr_expect_null(nb_error());
    cr_expect(snapshot_equal(m, &before));

    /* and the model still trains */
    nb_history *h = nb_model_fit(m, x, y, &o);
    cr_assert_not_null(h, "%s", nb_error());
    cr_expect(!snapshot_equal(m, &before));
    nb_history_free(h);
    snapshot_free(&before);
    nb_model_free(m);
}

Test(model, fit_not_compiled_or_without_optimizer) {
    nb_tensor *x, *y;
    linear_data(10, &x, &y);
    nb_model *m = small_model();
    snapshot before = take_snapshot(m);
    nb_fit_opts o = quiet_fit(1, 4);
    nb_clear_error();
    cr_expect_null(nb_model_fit(m, x, y, &o));
    EXPECT_ERROR("nb_model_fit", "not compiled", "nb_model_compile");
    /* a loss of one's own but no optimizer */
    cr_assert_eq(nb_model_set_loss(m, "mine", nb_loss_by_name("mse")), 0);
    nb_clear_error();
    cr_expect_null(nb_model_fit(m, x, y, &o));
    EXPECT_ERROR("nb_model_fit", "optimizer");
    cr_expect(snapshot_equal(m, &before));
    snapshot_free(&before);
    nb_model_free(m);

    /* a model without parameters has nothing to train */
    m = passthrough("mse", NULL);
    nb_clear_error();
    cr_expect_null(nb_model_fit(m, y, y, &o));
    EXPECT_ERROR("nb_model_fit", "no parameters");
    nb_model_free(m);
}

Test(model, add_refuses_a_layer_that_does_not_fit) {
    nb_model *m = nb_model_sequential();
    cr_assert_eq(nb_model_add(m, nb_dense(4, "relu", 3)), 0);
    snapshot before = take_snapshot(m);
    nb_clear_error();
    cr_expect_eq(nb_model_add(m, nb_dense(2, "linear", 5)), -1);
    EXPECT_ERROR("nb_model_add", "layer 1", "Dense(2)", "5 features", "[1,4]");
    cr_expect_eq(nb_sequential_len(nb_model_module(m)), 1);
    cr_expect(snapshot_equal(m, &before), "the parameters are those of the first layer, unchanged");
    /* a failed constructor passes through */
    nb_clear_error();
    cr_expect_eq(nb_model_add(m, nb_dense(2, "swish", 4)), -1);
    EXPECT_ERROR("nb_dense", "swish");
    cr_expect_eq(nb_sequential_len(nb_model_module(m)), 1);
    /* the right width is accepted, and a lazy layer is built at once */
    cr_expect_eq(nb_model_add(m, nb_dense(2, "linear", 4)), 0);
    cr_expect_eq(nb_model_add(m, nb_dense(1, "linear", 0)), 0);
    cr_expect_eq(nb_sequential_len(nb_model_module(m)), 3);
    cr_expect_eq(nb_module_num_weights(nb_model_module(m)), 16 + 10 + 3);
    snapshot_free(&before);
    nb_model_free(m);

    /* only a Sequential model can grow */
    m = nb_model_from_module(nb_dense(2, "relu", 2));
    nb_clear_error();
    cr_expect_eq(nb_model_add(m, nb_relu_layer()), -1);
    EXPECT_ERROR("nb_model_add", "Dense", "not a Sequential");
    nb_model_free(m);
}

/* ---- fit: training ------------------------------------------------------------------------- */

Test(model, fit_lowers_the_loss) {
    nb_tensor *x, *y;
    linear_data(64, &x, &y);
    nb_model *m = small_model();
    cr_assert_eq(nb_model_compile(m, "rmsprop", "mse", "mae"), 0);
    /* Keras's rmsprop: lr 1e-3, so 960 steps of batch 4 */
    nb_fit_opts o = quiet_fit(60, 4);
    nb_history *h = nb_model_fit(m, x, y, &o);
    cr_assert_not_null(h, "%s", nb_error());
    cr_expect_eq(nb_history_epochs(h), 60);
    cr_expect_str_eq(nb_history_stop_reason(h), "");
    cr_expect_eq(nb_history_num_keys(h), 2);
    cr_expect_str_eq(nb_history_key(h, 0), "loss");
    cr_expect_str_eq(nb_history_key(h, 1), "mae");
    cr_expect_null(nb_history_key(h, 2));
    cr_expect_null(nb_history_get(h, "val_loss"));
    const float *loss = nb_history_get(h, "loss"), *mae = nb_history_get(h, "mae");
    cr_expect(loss[59] * 20 < loss[0], "loss %g -> %g", (double)loss[0], (double)loss[59]);
    cr_expect(mae[59] * 4 < mae[0], "mae %g -> %g", (double)mae[0], (double)mae[59]);
    nb_history_free(h);
    nb_model_free(m);
}

Test(model, layers_added_after_compile_are_trained) {
    nb_tensor *x, *y;
    linear_data(16, &x, &y);
    nb_model *m = nb_model_sequential();
    nb_model_add(m, nb_dense(4, "tanh", 3));
    cr_assert_eq(nb_model_compile(m, "adam", "mse", NULL), 0);
    nb_model_add(m, nb_dense(1, "linear", 0));
    snapshot before = take_snapshot(m);
    cr_assert_eq(before.n, 4);
    nb_fit_opts o = quiet_fit(1, 16);
    nb_history *h = nb_model_fit(m, x, y, &o);
    cr_assert_not_null(h, "%s", nb_error());
    cr_expect_str_eq(nb_optimizer_name(nb_model_optimizer(m)), "adam");
    cr_expect_eq(nb_optimizer_num_params(nb_model_optimizer(m)), 4);
    nb_tensor **p = nb_model_parameters(m, NULL);
    cr_expect(memcmp(nb_data(p[2]), before.data[2], 4 * sizeof(float)) != 0, "the new layer moved");
    nb_history_free(h);
    snapshot_free(&before);
    nb_model_free(m);
}

static nb_history *seeded_run(nb_tensor *x, nb_tensor *y, snapshot *after) {
    nb_manual_seed(123);
    nb_model *m = nb_model_sequential();
    nb_model_add(m, nb_dense(6, "relu", 3));
    nb_model_add(m, nb_dropout(0.2f));
    nb_model_add(m, nb_dense(1, "linear", 0));
    nb_model_compile(m, "sgd", "mse", "mae");
    nb_fit_opts o = quiet_fit(5, 7);
    nb_history *h = nb_model_fit(m, x, y, &o);
    cr_assert_not_null(h, "%s", nb_error());
    *after = take_snapshot(m);
    nb_model_free(m);
    return h;
}

Test(model, same_seed_same_history) {
    nb_tensor *x, *y;
    linear_data(40, &x, &y);
    snapshot pa, pb;
    nb_history *a = seeded_run(x, y, &pa), *b = seeded_run(x, y, &pb);
    cr_assert_eq(nb_history_epochs(a), 5);
    cr_assert_eq(nb_history_epochs(b), 5);
    cr_expect(memcmp(nb_history_get(a, "loss"), nb_history_get(b, "loss"), 5 * sizeof(float)) == 0);
    cr_expect(memcmp(nb_history_get(a, "mae"), nb_history_get(b, "mae"), 5 * sizeof(float)) == 0);
    cr_expect_eq(pa.n, pb.n);
    for (int i = 0; i < pa.n; i++)
        cr_expect(memcmp(pa.data[i], pb.data[i], sizeof(float) * (size_t)pa.numel[i]) == 0,
                  "parameter %d differs", i);
    /* and the losses did change from epoch to epoch: the runs really trained */
    cr_expect(nb_history_get(a, "loss")[4] != nb_history_get(a, "loss")[0]);
    snapshot_free(&pa);
    snapshot_free(&pb);
    nb_history_free(a);
    nb_history_free(b);
}

/* ---- evaluate and predict ---------------------------------------------------------------------- */

Test(model, evaluate_matches_the_loss_by_hand) {
    nb_tensor *x, *y;
    linear_data(23, &x, &y);
    nb_model *m = small_model();
    cr_assert_eq(nb_model_compile(m, "sgd", "mse", "mae"), 0);
    nb_tensor *pred = nb_model_predict(m, x, 0);
    cr_assert_not_null(pred, "%s", nb_error());
    double se = 0, ae = 0;
    for (int i = 0; i < 23; i++) {
        double d = (double)nb_data(pred)[i] - (double)nb_data(y)[i];
        se += d * d;
        ae += fabs(d);
    }
    float out[4] = {-1, -1, -1, -1};
    /* batches of 5: 5+5+5+5+3 rows, weighted by size */
    cr_assert_eq(nb_model_evaluate(m, x, y, 5, out, 4), 2, "%s", nb_error() ? nb_error() : "");
    cr_expect(fabs(out[0] - se / 23) <= 1e-5 * (se / 23), "mse %g, by hand %g", (double)out[0], se / 23);
    cr_expect(fabs(out[1] - ae / 23) <= 1e-5 * (ae / 23), "mae %g, by hand %g", (double)out[1], ae / 23);
    cr_expect_eq(out[2], -1.0f, "nothing written past the values");
    /* nout limits what is written */
    float one = -1;
    cr_expect_eq(nb_model_evaluate(m, x, y, 0, &one, 1), 1);
    cr_expect(fabs(one - out[0]) <= 1e-5 * out[0]);
    /* bad input */
    nb_clear_error();
    cr_expect_eq(nb_model_evaluate(m, x, nb_zeros(NB_SHAPE(3, 1)), 0, out, 4), -1);
    EXPECT_ERROR("nb_model_evaluate", "[23,3]", "[3,1]");
    nb_model_free(m);
}

Test(model, predict_is_the_forward) {
    nb_tensor *x, *y;
    linear_data(10, &x, &y);
    nb_model *m = small_model();
    nb_tensor *pred = nb_model_predict(m, x, 4); /* batches 4, 4, 2 */
    cr_assert_not_null(pred, "%s", nb_error());
    EXPECT_SHAPE(pred, 10, 1);
    cr_expect(!nb_requires_grad(pred), "predict records no graph");
    nb_tensor *fwd = nb_module_forward(nb_model_module(m), x);
    cr_assert_not_null(fwd);
    for (int i = 0; i < 10; i++)
        cr_expect(fabsf(nb_data(pred)[i] - nb_data(fwd)[i]) <= 1e-6f, "row %d: %g vs %g", i,
                  (double)nb_data(pred)[i], (double)nb_data(fwd)[i]);
    /* eval mode: dropout does nothing in predict */
    nb_model *d = nb_model_sequential();
    nb_model_add(d, nb_dropout(0.5f));
    nb_tensor *ones = nb_ones(NB_SHAPE(6, 2));
    EXPECT_VALUES(nb_model_predict(d, ones, 0), 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1);
    cr_expect(nb_model_module(d)->training, "predict restores the training flag");
    nb_model_free(d);
    /* bad input */
    nb_clear_error();
    cr_expect_null(nb_model_predict(m, nb_zeros(NB_SHAPE(3, 5)), 0));
    EXPECT_ERROR("nb_model_predict", "[3,5]", "[3]");
    nb_clear_error();
    cr_expect_null(nb_model_predict(m, nb_zeros(NB_SHAPE(0, 3)), 0));
    EXPECT_ERROR("nb_model_predict");
    nb_clear_error();
    cr_expect_null(nb_model_predict(m, NULL, 0));
    cr_expect_null(nb_error());
    nb_model_free(m);
}

/* ---- validation ------------------------------------------------------------------------------ */

Test(model, validation_split_is_the_last_rows) {
    nb_tensor *x, *y;
    linear_data(10, &x, &y);
    nb_model *m = small_model();
    cr_assert_eq(nb_model_compile(m, "sgd", "mse", "mae"), 0);
    nb_fit_opts o = quiet_fit(2, 4);
    o.validation_split = 0.2f; /* 8 rows to train, the last 2 to validate, as in Keras */
    nb_history *h = nb_model_fit(m, x, y, &o);
    cr_assert_not_null(h, "%s", nb_error());
    const float *val = nb_history_get(h, "val_loss"), *val_mae = nb_history_get(h, "val_mae");
    cr_assert_not_null(val);
    cr_assert_not_null(val_mae);
    float out[2];
    nb_tensor *xv = nb_slice(x, 0, 8, 10, 1), *yv = nb_slice(y, 0, 8, 10, 1);
    cr_assert_eq(nb_model_evaluate(m, xv, yv, 0, out, 2), 2);
    cr_expect(fabsf(val[1] - out[0]) <= 1e-6f * out[0], "val_loss %.9g, loss on rows 8..9 %.9g",
              (double)val[1], (double)out[0]);
    cr_expect(fabsf(val_mae[1] - out[1]) <= 1e-6f * out[1]);
    nb_history_free(h);
    nb_model_free(m);
}

Test(model, validation_data) {
    nb_tensor *x, *y, *xv, *yv;
    linear_data(12, &x, &y);
    linear_data(5, &xv, &yv);
    nb_model *m = small_model();
    cr_assert_eq(nb_model_compile(m, "adam", "mse", NULL), 0);
    nb_fit_opts o = quiet_fit(3, 4);
    o.x_val = xv;
    o.y_val = yv;
    nb_history *h = nb_model_fit(m, x, y, &o);
    cr_assert_not_null(h, "%s", nb_error());
    const float *val = nb_history_get(h, "val_loss");
    cr_assert_not_null(val);
    float out;
    cr_assert_eq(nb_model_evaluate(m, xv, yv, 0, &out, 1), 1);
    cr_expect(fabsf(val[2] - out) <= 1e-6f * out, "val_loss %g, evaluate %g", (double)val[2], (double)out);
    nb_history_free(h);
    nb_model_free(m);
}

/* ---- stopping early ---------------------------------------------------------------------------- */

/* A compiled model whose optimizer does nothing: sgd with lr 0. */
static nb_model *frozen_model(void) {
    nb_model *m = small_model();
    cr_assert_eq(nb_model_compile(m, "sgd", "mse", NULL), 0);
    int n = 0;
    nb_tensor **p = nb_model_parameters(m, &n);
    nb_sgd_opts sgd = nb_sgd_defaults();
    sgd.lr = 0;
    cr_assert_eq(nb_model_set_optimizer(m, nb_sgd(n, p, &sgd)), 0);
    return m;
}

Test(model, early_stopping_on_a_plateau) {
    nb_tensor *x, *y;
    linear_data(10, &x, &y);
    nb_model *m = frozen_model();
    nb_fit_opts o = quiet_fit(10, 10);
    o.shuffle = false; /* the same batch every epoch: exactly the same loss */
    o.patience = 2;
    nb_history *h = nb_model_fit(m, x, y, &o);
    cr_assert_not_null(h, "%s", nb_error());
    /* epoch 1 sets the best, epochs 2 and 3 do not improve: stop after 3 */
    cr_expect_eq(nb_history_epochs(h), 3);
    const float *loss = nb_history_get(h, "loss");
    cr_expect_eq(loss[0], loss[2]);
    const char *why = nb_history_stop_reason(h);
    cr_expect(strstr(why, "early stopping at epoch 3") && strstr(why, "loss did not improve for 2 epochs") &&
                  strstr(why, "at epoch 1"),
              "stop reason: %s", why);
    nb_history_free(h);

    /* with restore_best_weights on a model that does not move, nothing moves */
    snapshot before = take_snapshot(m);
    o.restore_best_weights = true;
    h = nb_model_fit(m, x, y, &o);
    cr_assert_not_null(h, "%s", nb_error());
    cr_expect(snapshot_equal(m, &before));
    nb_history_free(h);
    snapshot_free(&before);
    nb_model_free(m);
}

/* Saves the parameters after every epoch, for the test below. */
typedef struct epoch_weights {
    snapshot after[20];
    int epochs;
} epoch_weights;

static bool save_weights(nb_model *model, int epoch, const nb_history *h, void *user) {
    (void)h;
    epoch_weights *w = user;
    w->after[epoch] = take_snapshot(model);
    w->epochs = epoch + 1;
    return true;
}

/* small_model trained by sgd at a rate too high for the problem, so that the
 * loss jumps about, with restore_best_weights, unshuffled, saving every
 * epoch's weights in *saved. */
static nb_history *jumpy_fit(nb_model *m, int epochs, int patience, epoch_weights *saved) {
    nb_tensor *x, *y;
    linear_data(8, &x, &y);
    cr_assert_eq(nb_model_compile(m, "sgd", "mse", NULL), 0);
    int n = 0;
    nb_tensor **p = nb_model_parameters(m, &n);
    nb_sgd_opts sgd = nb_sgd_defaults();
    sgd.lr = 1.2f;
    nb_model_set_optimizer(m, nb_sgd(n, p, &sgd));
    nb_fit_opts o = quiet_fit(epochs, 8);
    o.shuffle = false;
    o.patience = patience;
    o.restore_best_weights = true;
    o.on_epoch_end = save_weights;
    o.user = saved;
    nb_history *h = nb_model_fit(m, x, y, &o);
    cr_assert_not_null(h, "%s", nb_error());
    return h;
}

/* The epoch of the lowest loss (the first of equals). */
static int best_epoch(const nb_history *h) {
    const float *loss = nb_history_get(h, "loss");
    int best = 0;
    for (int e = 1; e < nb_history_epochs(h); e++)
        if (loss[e] < loss[best]) best = e;
    return best;
}

Test(model, early_stopping_restores_the_best_weights) {
    /* training stops after two epochs without a new best; the model must
     * end with the weights of the epoch of the lowest loss */
    nb_model *m = small_model();
    epoch_weights saved = {0};
    nb_history *h = jumpy_fit(m, 20, 2, &saved);
    int epochs = nb_history_epochs(h), best = best_epoch(h);
    cr_assert(epochs < 20 && strstr(nb_history_stop_reason(h), "early stopping"),
              "training should stop early: %d epochs, reason \"%s\"", epochs, nb_history_stop_reason(h));
    cr_assert(best < epochs - 1, "the best epoch is not the last one");
    cr_expect(snapshot_equal(m, &saved.after[best]), "the weights of epoch %d are restored", best + 1);
    cr_expect(!snapshot_equal(m, &saved.after[epochs - 2]) || best == epochs - 2);
    for (int e = 0; e < saved.epochs; e++) snapshot_free(&saved.after[e]);
    nb_history_free(h);
    nb_model_free(m);
}

typedef struct callback_log {
    int calls, stop_after;
    int epochs_seen[8];
} callback_log;

static bool stop_at(nb_model *model, int epoch, const nb_history *h, void *user) {
    (void)model;
    callback_log *log = user;
    log->epochs_seen[log->calls++] = nb_history_epochs(h);
    return epoch + 1 < log->stop_after;
}

Test(model, callback_can_stop_training) {
    nb_tensor *x, *y;
    linear_data(10, &x, &y);
    nb_model *m = small_model();
    cr_assert_eq(nb_model_compile(m, "sgd", "mse", NULL), 0);
    callback_log log = {.stop_after = 2};
    nb_fit_opts o = quiet_fit(6, 5);
    o.on_epoch_end = stop_at;
    o.user = &log;
    nb_history *h = nb_model_fit(m, x, y, &o);
    cr_assert_not_null(h, "%s", nb_error());
    cr_expect_eq(log.calls, 2);
    cr_expect_eq(log.epochs_seen[0], 1, "the callback sees the history so far");
    cr_expect_eq(log.epochs_seen[1], 2);
    cr_expect_eq(nb_history_epochs(h), 2);
    cr_expect_str_eq(nb_history_stop_reason(h), "stopped by the callback after epoch 2");
    nb_history_free(h);
    nb_model_free(m);
}

/* A loss that is NaN from the start: log of a negative number. */
static nb_tensor *nan_loss(nb_tensor *pred, nb_tensor *target) {
    return nb_mean(nb_log(nb_sub_scalar(nb_abs(nb_sub(pred, target)), 100)), NB_ALL, false);
}

Test(model, nan_loss_stops_training) {
    nb_tensor *x, *y;
    linear_data(10, &x, &y);
    nb_model *m = small_model();
    cr_assert_eq(nb_model_compile(m, "sgd", "mse", NULL), 0);
    cr_assert_eq(nb_model_set_loss(m, "nan", nan_loss), 0);
    snapshot before = take_snapshot(m);
    nb_fit_opts o = quiet_fit(3, 5);
    nb_clear_error();
    nb_history *h = nb_model_fit(m, x, y, &o);
    cr_assert_not_null(h, "training that stops returns its history: %s", nb_error());
    cr_expect_eq(nb_history_epochs(h), 0);
    const char *why = nb_history_stop_reason(h);
    cr_expect(strstr(why, "nan") && strstr(why, "epoch 1, batch 1"), "stop reason: %s", why);
    EXPECT_ERROR("nb_model_fit", "nan", "epoch 1, batch 1");
    cr_expect(snapshot_equal(m, &before), "no step was taken on a NaN loss");
    snapshot_free(&before);
    nb_history_free(h);
    nb_model_free(m);
}

Test(model, diverging_loss_stops_training) {
    nb_tensor *x, *y;
    linear_data(40, &x, &y);
    nb_tensor *big = nb_mul_scalar(x, 1e3f);
    nb_model *m = small_model();
    cr_assert_eq(nb_model_compile(m, "sgd", "mse", NULL), 0);
    int n = 0;
    nb_tensor **p = nb_model_parameters(m, &n);
    nb_sgd_opts sgd = nb_sgd_defaults();
    sgd.lr = 1e6f;
    nb_model_set_optimizer(m, nb_sgd(n, p, &sgd));
    nb_fit_opts o = quiet_fit(50, 10);
    nb_history *h = nb_model_fit(m, big, y, &o);
    cr_assert_not_null(h, "%s", nb_error());
    cr_expect(nb_history_epochs(h) < 50);
    const char *why = nb_history_stop_reason(h);
    cr_expect((strstr(why, "nan") || strstr(why, "infinite")) && strstr(why, "epoch") && strstr(why, "batch") &&
                  strstr(why, "training stopped"),
              "stop reason: %s", why);
    nb_history_free(h);
    nb_model_free(m);
}

/* ---- printing ---------------------------------------------------------------------------------- */

Test(model, summary_prints_the_keras_table) {
    nb_model *m = nb_model_sequential();
    nb_model_add(m, nb_dense(10, "relu", 10));
    nb_model_add(m, nb_dense(1, "linear", 0));
    capture c;
    capture_begin(&c);
    nb_model_summary(m, c.f);
    const char *s = capture_end(&c);
    const char *lines[] = {
        "Model: \"sequential\"\n",
        "_________________________________________________________________\n",
        " Layer (type)                Output Shape              Param #\n",
        "=================================================================\n",
        " dense (Dense)               (None, 10)                110\n",
        " dense_1 (Dense)             (None, 1)                 11\n",
        "Total params: 121\n",
        "Trainable params: 121\n",
        "Non-trainable params: 0\n",
    };
    for (size_t i = 0; i < sizeof lines / sizeof *lines; i++)
        cr_expect(strstr(s, lines[i]) != NULL, "summary lacks the line \"%s\":\n%s", lines[i], s);
    /* the table's order */
    cr_expect(strstr(s, "dense (Dense)") < strstr(s, "dense_1 (Dense)"));
    cr_expect(strstr(s, "dense_1 (Dense)") < strstr(s, "Total params"));
    nb_model_free(m);
}

Test(model, fit_verbosity) {
    nb_tensor *x, *y;
    linear_data(10, &x, &y);
    nb_model *m = small_model();
    cr_assert_eq(nb_model_compile(m, "sgd", "mse", "mae"), 0);
    capture c;

    /* 0: silent */
    capture_begin(&c);
    nb_fit_opts o = quiet_fit(2, 4);
    o.out = c.f;
    nb_history *h = nb_model_fit(m, x, y, &o);
    cr_assert_not_null(h);
    nb_history_free(h);
    cr_expect_str_eq(capture_end(&c), "");

    /* 1 to a file, which is not a terminal: no carriage returns, one final
     * bar per epoch */
    capture_begin(&c);
    o.verbose = 1;
    o.out = c.f;
    h = nb_model_fit(m, x, y, &o);
    cr_assert_not_null(h);
    nb_history_free(h);
    const char *s = capture_end(&c);
    cr_expect(strncmp(s, "Epoch 1/2\n", 10) == 0, "output:\n%s", s);
    cr_expect(strstr(s, "\nEpoch 2/2\n") != NULL, "output:\n%s", s);
    cr_expect(strstr(s, "3/3 [==============================] - ") != NULL, "output:\n%s", s);
    cr_expect(strstr(s, " - loss: ") != NULL && strstr(s, " - mae: ") != NULL, "output:\n%s", s);
    cr_expect(strchr(s, '\r') == NULL, "no carriage returns in a file:\n%s", s);
    const char *bar = strstr(s, "[==");
    cr_expect(bar && strstr(bar, "loss:") && strchr(bar, '\n') > strstr(bar, "loss:"),
              "the bar line carries the loss:\n%s", s);

    /* 2: one line per epoch, no bar */
    capture_begin(&c);
    o.verbose = 2;
    o.out = c.f;
    h = nb_model_fit(m, x, y, &o);
    cr_assert_not_null(h);
    nb_history_free(h);
    s = capture_end(&c);
    cr_expect(strstr(s, "Epoch 2/2\n3/3 - ") != NULL && strchr(s, '[') == NULL, "output:\n%s", s);
    nb_model_free(m);
}

/* ---- losses and accuracy by hand ------------------------------------------------------------------- */

/* probabilities of 3 classes for 2 samples; the targets are classes 0 and 2 */
static const float probs[] = {0.7f, 0.2f, 0.1f, 0.1f, 0.5f, 0.4f};
static const float onehot[] = {1, 0, 0, 0, 0, 1};
static const float labels[] = {0, 2};

Test(model, categorical_crossentropy_by_hand) {
    /* -(ln 0.7 + ln 0.4) / 2 = (0.35667494 + 0.91629073) / 2 */
    const float want = 0.63648284f;
    nb_tensor *p = nb_from_array(NB_SHAPE(2, 3), probs);
    EXPECT_VALUES(nb_categorical_crossentropy(p, nb_from_array(NB_SHAPE(2, 3), onehot)), 1e-6, want);
    EXPECT_VALUES(nb_sparse_categorical_crossentropy(p, nb_from_array(NB_SHAPE(2), labels)), 1e-6, want);
    EXPECT_VALUES(nb_sparse_categorical_crossentropy(p, nb_from_array(NB_SHAPE(2, 1), labels)), 1e-6, want);
    /* probabilities are clipped to [1e-7, 1 - 1e-7]: a zero costs -ln(1e-7) */
    nb_tensor *hard = nb_from_array(NB_SHAPE(1, 2), (const float[]){0, 1});
    EXPECT_VALUES(nb_categorical_crossentropy(hard, nb_from_array(NB_SHAPE(1, 2), (const float[]){1, 0})),
                  1e-3, 16.118095f);
    /* the model reports the same through compile and evaluate */
    float out[2];
    nb_model *m = passthrough("categorical_crossentropy", "accuracy");
    cr_assert_eq(nb_model_evaluate(m, p, nb_from_array(NB_SHAPE(2, 3), onehot), 0, out, 2), 2);
    cr_expect_float_eq(out[0], want, 1e-6);
    nb_model_free(m);
    m = passthrough("sparse_categorical_crossentropy", "accuracy");
    cr_assert_eq(nb_model_evaluate(m, p, nb_from_array(NB_SHAPE(2), labels), 0, out, 2), 2);
    cr_expect_float_eq(out[0], want, 1e-6);
    nb_model_free(m);
    /* bad shapes */
    nb_clear_error();
    cr_expect_null(nb_categorical_crossentropy(p, nb_zeros(NB_SHAPE(2, 2))));
    EXPECT_ERROR("categorical_crossentropy", "[2,3]", "[2,2]");
}

Test(model, accuracy_follows_the_loss) {
    nb_tensor *p = nb_from_array(NB_SHAPE(2, 3), probs);
    nb_tensor *t = nb_from_array(NB_SHAPE(2, 3), onehot);
    float out[3];

    /* categorical: argmax [0, 1] against [0, 2] -> 1/2 */
    nb_model *m = passthrough("categorical_crossentropy", "accuracy, binary_accuracy");
    cr_assert_eq(nb_model_evaluate(m, p, t, 0, out, 3), 3);
    cr_expect_float_eq(out[1], 0.5f, 1e-7);
    /* binary_accuracy on the same: elementwise p > 0.5 against t > 0.5,
     * [1,0,0] vs [1,0,0] and [0,0,0] vs [0,0,1]: 5 of 6 */
    cr_expect_float_eq(out[2], 5.0f / 6.0f, 1e-7);
    nb_model_free(m);

    /* sparse: the same rows with labels [0, 2] -> 1/2 */
    m = passthrough("sparse_categorical_crossentropy", "acc");
    cr_assert_eq(nb_model_evaluate(m, p, nb_from_array(NB_SHAPE(2), labels), 0, out, 2), 2);
    cr_expect_float_eq(out[1], 0.5f, 1e-7);
    nb_model_free(m);

    /* binary: p [0.9, 0.2, 0.6, 0.7] against [1, 0, 0, 1] -> 3 of 4;
     * bce = -(ln 0.9 + ln 0.8 + ln 0.4 + ln 0.7) / 4 */
    nb_tensor *pb = nb_from_array(NB_SHAPE(4, 1), (const float[]){0.9f, 0.2f, 0.6f, 0.7f});
    nb_tensor *tb = nb_from_array(NB_SHAPE(4, 1), (const float[]){1, 0, 0, 1});
    m = passthrough("binary_crossentropy", "accuracy, mae");
    cr_assert_eq(nb_model_evaluate(m, pb, tb, 3, out, 3), 3);
    cr_expect_float_eq(out[0], 0.40036742f, 1e-6);
    cr_expect_float_eq(out[1], 0.75f, 1e-7);
    /* mae: (0.1 + 0.2 + 0.6 + 0.3) / 4 */
    cr_expect_float_eq(out[2], 0.3f, 1e-6);
    nb_model_free(m);
}

Test(model, history_keys_of_metrics) {
    /* "acc" with a sparse loss is sparse categorical accuracy, recorded as
     * "accuracy", with its "val_" twin; over 9 training rows and 3
     * validation rows it is a count of hits over 9 and over 3 */
    nb_tensor *x = nb_uniform(NULL, -1, 1, NB_SHAPE(12, 2));
    nb_tensor *y = nb_from_array(NB_SHAPE(12), (const float[]){0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2});
    nb_model *m = nb_model_sequential();
    nb_model_add(m, nb_dense(3, "softmax", 2));
    cr_assert_eq(nb_model_compile(m, "adam", "sparse_categorical_crossentropy", "acc"), 0);
    nb_fit_opts o = quiet_fit(2, 4);
    o.validation_split = 0.25f;
    nb_history *h = nb_model_fit(m, x, y, &o);
    cr_assert_not_null(h, "%s", nb_error());
    const char *keys[] = {"loss", "accuracy", "val_loss", "val_accuracy"};
    cr_assert_eq(nb_history_num_keys(h), 4);
    for (int i = 0; i < 4; i++) cr_expect_str_eq(nb_history_key(h, i), keys[i]);
    for (int e = 0; e < 2; e++) {
        double acc = nb_history_get(h, "accuracy")[e] * 9.0, val = nb_history_get(h, "val_accuracy")[e] * 3.0;
        cr_expect(fabs(acc - round(acc)) < 1e-4, "accuracy %g is not hits / 9", acc / 9);
        cr_expect(fabs(val - round(val)) < 1e-4, "val_accuracy %g is not hits / 3", val / 3);
    }
    nb_history_free(h);
    nb_model_free(m);
}

Test(model, a_wrapped_sequential_is_a_sequential) {
    nb_model *m = nb_model_from_module(
        nb_sequential(2, (nb_module *[]){nb_dense(4, "relu", 3), nb_dense(2, "linear", 0)}));
    cr_assert_eq(nb_model_add(m, nb_dense(1, "linear", 0)), 0, "%s", nb_error() ? nb_error() : "");
    cr_assert_eq(nb_model_add(m, nb_dense(1, "linear", 5)), -1, "a layer that does not fit is refused");
    EXPECT_ERROR("nb_model_add", "layer 3");
    capture c;
    capture_begin(&c);
    nb_model_summary(m, c.f);
    const char *s = capture_end(&c);
    cr_assert(strstr(s, "dense_2 (Dense)             (None, 1)                 3\n"), "%s", s);
    cr_assert(strstr(s, "Total params: 29\n"), "%s", s); /* 16 + 10 + 3 */
    nb_model_free(m);
}

Test(model, adding_layers_drops_a_custom_optimizer) {
    nb_model *m = small_model();
    int n;
    nb_tensor **p = nb_model_parameters(m, &n);
    nb_sgd_opts o = nb_sgd_defaults();
    o.lr = 0.5f;
    cr_assert_eq(nb_model_set_loss(m, "mse", nb_loss_by_name("mse")), 0);
    cr_assert_eq(nb_model_set_optimizer(m, nb_sgd(n, p, &o)), 0);
    cr_assert_eq(nb_model_add(m, nb_dense(1, "linear", 0)), 0);
    nb_tensor *x, *y;
    linear_data(8, &x, &y);
    nb_fit_opts fit = quiet_fit(1, 4);
    cr_assert_null(nb_model_fit(m, x, y, &fit));
    EXPECT_ERROR("nb_model_fit", "nb_model_set_optimizer", "new parameter list");
    cr_assert_null(nb_model_optimizer(m));
    nb_model_free(m);
}

Test(model, a_layer_without_parameters_keeps_the_optimizer) {
    nb_model *m = small_model();
    int n;
    nb_tensor **p = nb_model_parameters(m, &n);
    cr_assert_eq(nb_model_compile(m, "sgd", "mse", NULL), 0);
    nb_optimizer *adam = nb_adam(n, p, NULL);
    cr_assert_eq(nb_model_set_optimizer(m, adam), 0);
    cr_assert_eq(nb_model_add(m, nb_relu_layer()), 0);
    nb_tensor *x, *y;
    linear_data(8, &x, &y);
    nb_fit_opts fit = quiet_fit(1, 4);
    nb_history *h = nb_model_fit(m, x, y, &fit);
    cr_assert_not_null(h, "%s", nb_error());
    cr_assert_eq(nb_model_optimizer(m), adam, "the same optimizer, state and all");
    cr_assert_eq(nb_optimizer_steps(adam), 2);
    nb_history_free(h);
    nb_model_free(m);
}

Test(model, lazily_built_parameters_are_trained) {
    /* compile sees two parameters; the first fit builds two more, and the
     * optimizer named at compile must cover all four */
    nb_model *m = nb_model_from_module(
        nb_sequential(2, (nb_module *[]){nb_dense(4, "tanh", 0), nb_dense(1, "linear", 0)}));
    cr_assert_eq(nb_model_compile(m, "sgd", "mse", NULL), 0);
    nb_tensor *x, *y;
    linear_data(16, &x, &y);
    nb_fit_opts fit = quiet_fit(2, 4);
    nb_history_free(nb_model_fit(m, x, y, &fit));
    snapshot before = take_snapshot(m);
    cr_assert_eq(before.n, 4);
    nb_history_free(nb_model_fit(m, x, y, &fit));
    int n;
    nb_tensor **p = nb_model_parameters(m, &n);
    for (int i = 0; i < n; i++)
        cr_assert_neq(memcmp(nb_data(p[i]), before.data[i], sizeof(float) * (size_t)before.numel[i]), 0,
                      "parameter %s was not trained", nb_module_parameter_name(nb_model_module(m), i));
    snapshot_free(&before);
    nb_model_free(m);
}

Test(model, validation_data_overrides_the_split) {
    nb_model *m = small_model();
    cr_assert_eq(nb_model_compile(m, "sgd", "mse", NULL), 0);
    nb_tensor *x, *y, *xv, *yv;
    linear_data(10, &x, &y);
    linear_data(4, &xv, &yv);
    nb_fit_opts fit = quiet_fit(1, 1);
    fit.validation_split = 0.5f;
    fit.x_val = xv;
    fit.y_val = yv;
    nb_history *h = nb_model_fit(m, x, y, &fit);
    cr_assert_not_null(h, "%s", nb_error());
    cr_assert_eq(nb_optimizer_steps(nb_model_optimizer(m)), 10, "all 10 rows train");
    nb_history_free(h);
    nb_model_free(m);
}

Test(model, predict_checks_the_output_rows) {
    /* a Dense fed a 1-D x gives an output without a batch axis */
    nb_model *m = nb_model_from_module(nb_dense(3, "linear", 0));
    cr_assert_null(nb_model_predict(m, nb_ones(NB_SHAPE(100)), 100));
    EXPECT_ERROR("nb_model_predict", "not one row per sample");
    nb_model_free(m);
}

/* Principle 6: the thread count never changes a result. Layers wide enough
 * for the matrix products to be split between threads, trained with 1 and
 * with 3 threads, give the same history and weights bit for bit. */
static nb_history *wide_run(int threads, snapshot *after) {
    nb_set_num_threads(threads);
    nb_manual_seed(11);
    nb_tensor *x = nb_uniform(NULL, -1, 1, NB_SHAPE(64, 128));
    nb_tensor *y = nb_uniform(NULL, -1, 1, NB_SHAPE(64, 8));
    nb_model *m = nb_model_sequential();
    nb_model_add(m, nb_dense(256, "relu", 128));
    nb_model_add(m, nb_dense(8, "linear", 0));
    cr_assert_eq(nb_model_compile(m, "adam", "mse", NULL), 0);
    nb_fit_opts fit = quiet_fit(3, 32);
    nb_history *h = nb_model_fit(m, x, y, &fit);
    cr_assert_not_null(h, "%s", nb_error());
    *after = take_snapshot(m);
    nb_model_free(m);
    return h;
}

Test(model, thread_count_does_not_change_results) {
    int before = nb_get_num_threads();
    snapshot w1, w3;
    nb_history *h1 = wide_run(1, &w1), *h3 = wide_run(3, &w3);
    nb_set_num_threads(before);
    cr_assert_eq(memcmp(nb_history_get(h1, "loss"), nb_history_get(h3, "loss"), 3 * sizeof(float)), 0);
    cr_assert_eq(w1.n, w3.n);
    for (int i = 0; i < w1.n; i++)
        cr_assert_eq(memcmp(w1.data[i], w3.data[i], sizeof(float) * (size_t)w1.numel[i]), 0,
                     "parameter %d differs between 1 and 3 threads", i);
    snapshot_free(&w1);
    snapshot_free(&w3);
    nb_history_free(h1);
    nb_history_free(h3);
}

Test(model, best_weights_are_restored_only_on_early_stopping) {
    /* as in Keras: a run that uses all its epochs keeps its last weights,
     * even when an earlier epoch was better */
    nb_model *m = small_model();
    epoch_weights saved = {0};
    nb_history *h = jumpy_fit(m, 6, 100, &saved);
    cr_assert_eq(nb_history_epochs(h), 6);
    cr_assert_str_eq(nb_history_stop_reason(h), "");
    cr_assert_neq(best_epoch(h), 5, "precondition: the last epoch is not the best");
    cr_expect(snapshot_equal(m, &saved.after[5]), "the last epoch's weights are kept");
    for (int e = 0; e < saved.epochs; e++) snapshot_free(&saved.after[e]);
    nb_history_free(h);
    nb_model_free(m);
}

/* ---- the optimizer must train this model ---------------------------------------------------- */

Test(model, set_optimizer_refuses_another_models_parameters) {
    nb_model *m = small_model(), *other = small_model();
    cr_assert_eq(nb_model_compile(m, "sgd", "mse", NULL), 0);
    nb_optimizer *compiled = nb_model_optimizer(m);
    int n = 0;
    nb_tensor **theirs = nb_model_parameters(other, &n);
    nb_optimizer *foreign = nb_sgd(n, theirs, NULL);
    nb_clear_error();
    cr_expect_eq(nb_model_set_optimizer(m, foreign), -1);
    EXPECT_ERROR("nb_model_set_optimizer", "does not update", "'0.weight'");
    cr_expect_eq(nb_model_optimizer(m), compiled, "a refused optimizer changes nothing");

    /* one that leaves out a parameter is refused too, naming it */
    nb_tensor **mine = nb_model_parameters(m, &n);
    cr_assert_eq(n, 4);
    nb_optimizer *part = nb_sgd(3, mine, NULL);
    nb_clear_error();
    cr_expect_eq(nb_model_set_optimizer(m, part), -1);
    EXPECT_ERROR("nb_model_set_optimizer", "'1.bias'");

    /* one that updates more than the model (a learnable loss weight, say)
     * is fine, as a PyTorch optimizer over several parameter sets is */
    nb_tensor *extra = nb_keep(nb_set_requires_grad(nb_zeros(NB_SHAPE(1)), true));
    nb_tensor *all[5] = {mine[0], mine[1], mine[2], mine[3], extra};
    nb_optimizer *more = nb_sgd(5, all, NULL);
    cr_expect_eq(nb_model_set_optimizer(m, more), 0, "%s", nb_error());
    snapshot before = take_snapshot(m);
    nb_tensor *x, *y;
    linear_data(8, &x, &y);
    nb_fit_opts fit = quiet_fit(1, 4);
    nb_history *h = nb_model_fit(m, x, y, &fit);
    cr_assert_not_null(h, "%s", nb_error());
    cr_expect(!snapshot_equal(m, &before), "fit trained the model");
    nb_history_free(h);
    snapshot_free(&before);
    nb_optimizer_free(foreign);
    nb_optimizer_free(part);
    nb_model_free(m);
    nb_model_free(other);
    nb_release(extra);

    /* a model whose layers are not built yet has no parameters to cover */
    m = nb_model_from_module(nb_sequential(1, (nb_module *[]){nb_dense(2, NULL, 0)}));
    nb_tensor *w = nb_keep(nb_set_requires_grad(nb_zeros(NB_SHAPE(2)), true));
    nb_optimizer *early = nb_sgd(1, &w, NULL);
    nb_clear_error();
    cr_expect_eq(nb_model_set_optimizer(m, early), -1);
    EXPECT_ERROR("nb_model_set_optimizer", "no parameters yet");
    nb_optimizer_free(early);
    nb_release(w);
    nb_model_free(m);
}

/* ---- a custom loss that goes wrong is reported as such -------------------------------------- */

static nb_tensor *per_sample_loss(nb_tensor *pred, nb_tensor *target) { return nb_square(nb_sub(pred, target)); }

static nb_tensor *refusing_loss(nb_tensor *pred, nb_tensor *target) {
    (void)pred, (void)target;
    nb_set_error("my_loss: targets must be positive");
    return NULL;
}

static nb_tensor *silent_loss(nb_tensor *pred, nb_tensor *target) {
    (void)pred, (void)target;
    return NULL;
}

static int flaky_calls;
static nb_tensor *flaky_loss(nb_tensor *pred, nb_tensor *target) {
    if (++flaky_calls > 2) {
        nb_set_error("flaky: gave up");
        return NULL;
    }
    return nb_mse_loss(pred, target, NB_REDUCE_MEAN);
}

Test(model, a_loss_that_is_not_one_value_is_an_error) {
    nb_tensor *x, *y;
    linear_data(10, &x, &y);
    nb_model *m = small_model();
    cr_assert_eq(nb_model_compile(m, "sgd", "mse", NULL), 0);
    cr_assert_eq(nb_model_set_loss(m, "per_sample", per_sample_loss), 0);
    snapshot before = take_snapshot(m);
    nb_fit_opts o = quiet_fit(2, 5);
    nb_clear_error();
    cr_expect_null(nb_model_fit(m, x, y, &o));
    EXPECT_ERROR("nb_model_fit", "loss 'per_sample'", "[2,1]", "a single value");
    cr_expect(snapshot_equal(m, &before));
    float out[1];
    nb_clear_error();
    cr_expect_eq(nb_model_evaluate(m, x, y, 5, out, 1), -1);
    EXPECT_ERROR("nb_model_evaluate", "loss 'per_sample'", "a single value");
    snapshot_free(&before);
    nb_model_free(m);
}

Test(model, a_loss_that_returns_null_keeps_its_message) {
    nb_tensor *x, *y;
    linear_data(10, &x, &y);
    nb_model *m = small_model();
    cr_assert_eq(nb_model_compile(m, "sgd", "mse", NULL), 0);
    nb_fit_opts o = quiet_fit(2, 5);

    cr_assert_eq(nb_model_set_loss(m, "mine", refusing_loss), 0);
    nb_clear_error();
    cr_expect_null(nb_model_fit(m, x, y, &o));
    EXPECT_ERROR("nb_model_fit", "loss 'mine'", "my_loss: targets must be positive");
    cr_expect_null(strstr(nb_error(), "the model returned nothing"));

    cr_assert_eq(nb_model_set_loss(m, "silent", silent_loss), 0);
    nb_set_error("an old message that has nothing to do with it");
    cr_expect_null(nb_model_fit(m, x, y, &o));
    EXPECT_ERROR("nb_model_fit", "loss 'silent'", "returned NULL");
    cr_expect_null(strstr(nb_error(), "old message"), "%s", nb_error());

    /* failing during training: training stops, history kept, the loss's
     * own message in the reason */
    flaky_calls = 0;
    cr_assert_eq(nb_model_set_loss(m, "flaky", flaky_loss), 0);
    nb_history *h = nb_model_fit(m, x, y, &o);
    cr_assert_not_null(h, "%s", nb_error());
    const char *why = nb_history_stop_reason(h);
    cr_expect(strstr(why, "loss 'flaky'") && strstr(why, "flaky: gave up") && strstr(why, "epoch 1, batch 2"),
              "stop reason: %s", why);
    nb_history_free(h);
    nb_model_free(m);
}

/* ---- compile's optimizer names mean what Keras means ------------------------------------------ */

/* One step of fit with the optimizer called name on Dense(1, linear, 1)
 * with w = 1, b = 0, x = [[1]] and y = [[target]]: the prediction is 1, the
 * mean squared error (1 - target)^2 and both gradients g = 2 (1 - target). */
static void one_keras_step(const char *name, float target, double *w, double *b) {
    nb_model *m = nb_model_sequential();
    cr_assert_eq(nb_model_add(m, nb_dense(1, "linear", 1)), 0);
    cr_assert_eq(nb_model_compile(m, name, "mse", NULL), 0, "%s", nb_error());
    nb_tensor **p = nb_model_parameters(m, NULL);
    nb_data_mut(p[0])[0] = 1;
    nb_fit_opts o = quiet_fit(1, 1);
    o.shuffle = false;
    nb_history *h = nb_model_fit(m, nb_ones(NB_SHAPE(1, 1)), nb_full(NB_SHAPE(1, 1), target), &o);
    cr_assert_not_null(h, "%s", nb_error());
    *w = nb_data(p[0])[0];
    *b = nb_data(p[1])[0];
    nb_history_free(h);
    nb_model_free(m);
}

Test(model, compile_names_use_keras_defaults) {
    /* Keras 3's update rules and defaults, first step (t = 1), gradient g:
     *   sgd      lr 0.01:                 p -= lr g
     *   rmsprop  lr 1e-3, rho 0.9, eps 1e-7 inside the root:
     *            v = (1 - rho) g^2;       p -= lr g / sqrt(v + eps)
     *   adagrad  lr 1e-3, accumulator from 0.1, eps 1e-7 inside the root:
     *            a = 0.1 + g^2;           p -= lr g / sqrt(a + eps)
     *   adam     lr 1e-3, betas 0.9, 0.999, eps 1e-7 added to sqrt(v)
     *            before the bias correction ("epsilon hat"):
     *            m = 0.1 g, v = 0.001 g^2;
     *            p -= lr sqrt(1 - 0.999) / (1 - 0.9) * m / (sqrt(v) + eps)
     *   adamw    as adam, after p -= lr * 0.004 * p */
    const float targets[] = {0.0f, 1.0f - 0x1p-20f}; /* g = 2, and g = 2^-19 where eps matters */
    for (int k = 0; k < 2; k++) {
        double g = 2.0 * (1.0 - (double)targets[k]), w, b, want;
        one_keras_step("sgd", targets[k], &w, &b);
        cr_expect_float_eq(w, 1 - 0.01 * g, 1e-6, "sgd: w %.9g", w);
        one_keras_step("rmsprop", targets[k], &w, &b);
        want = 1e-3 * g / sqrt(0.1 * g * g + 1e-7);
        cr_expect_float_eq(w, 1 - want, 1e-6, "rmsprop: w %.9g, want %.9g", w, 1 - want);
        cr_expect_float_eq(b, -want, 1e-7, "rmsprop: b %.9g, want %.9g", b, -want);
        one_keras_step("adagrad", targets[k], &w, &b);
        want = 1e-3 * g / sqrt(0.1 + g * g + 1e-7);
        cr_expect_float_eq(w, 1 - want, 1e-6, "adagrad: w %.9g, want %.9g", w, 1 - want);
        cr_expect_float_eq(b, -want, 1e-7, "adagrad: b %.9g, want %.9g", b, -want);
        double adam = 1e-3 * sqrt(1 - 0.999) / (1 - 0.9) * (0.1 * g) / (sqrt(0.001 * g * g) + 1e-7);
        one_keras_step("adam", targets[k], &w, &b);
        cr_expect_float_eq(w, 1 - adam, 1e-6, "adam: w %.9g, want %.9g", w, 1 - adam);
        cr_expect_float_eq(b, -adam, 1e-7, "adam: b %.9g, want %.9g", b, -adam);
        one_keras_step("adamw", targets[k], &w, &b);
        cr_expect_float_eq(w, 1 - 1e-3 * 0.004 - adam, 1e-6, "adamw: w %.9g, want %.9g", w,
                           1 - 1e-3 * 0.004 - adam);
        cr_expect_float_eq(b, -adam, 1e-7, "adamw: b %.9g", b);
    }
}

/* ---- constructors under allocation failure ----------------------------------------------------- */

Test(model, model_constructors_fail_whole) {
    for (int which = 0; which < 2; which++) {
        bool made = false;
        for (long fail = 1; fail < 100 && !made; fail++) {
            int64_t live = nb_live_tensors();
            nb_test_alloc c = {.fail_at = fail};
            nb_module *net = which ? nb_sequential(1, (nb_module *[]){nb_dense(2, NULL, 2)}) : NULL;
            nb_clear_error();
            nb_set_alloc_hook(nb_test_alloc_hook, &c);
            nb_model *m = which ? nb_model_from_module(net) : nb_model_sequential();
            nb_set_alloc_hook(NULL, NULL);
            if (!m) {
                EXPECT_ERROR(which ? "nb_model_from_module" : "nb_model_sequential", "out of memory");
                cr_expect_eq(nb_live_tensors(), live, "the module given is freed");
                continue;
            }
            made = true;
            int n = -1;
            nb_model_parameters(m, &n);
            cr_expect_eq(n, which ? 2 : 0);
            nb_model_free(m);
        }
        cr_expect(made);
    }
}

/* fit, evaluate, predict and compile when any one allocation fails: a
 * message naming the function and "out of memory" (for fit, either as its
 * error or as the reason training stopped), no tensor left behind, and
 * otherwise complete results. */
Test(model, out_of_memory_in_fit_evaluate_predict) {
    nb_tensor *x, *y;
    linear_data(12, &x, &y);
    int failures = 0;
    for (long fail = 1; fail < 400; fail++) {
        nb_model *m = small_model();
        int64_t live = nb_live_tensors();
        nb_test_alloc c = {.fail_at = fail};
        nb_scope_begin();
        nb_clear_error();
        nb_set_alloc_hook(nb_test_alloc_hook, &c);
        int compiled = nb_model_compile(m, "adam", "mse", "mae");
        nb_fit_opts o = quiet_fit(2, 5);
        o.validation_split = 0.25f;
        nb_history *h = compiled == 0 ? nb_model_fit(m, x, y, &o) : NULL;
        float out[2] = {0};
        bool trained = h && nb_history_stop_reason(h)[0] == '\0';
        int got = trained ? nb_model_evaluate(m, x, y, 5, out, 2) : 0;
        nb_tensor *pred = h && got > 0 ? nb_model_predict(m, x, 5) : NULL;
        nb_set_alloc_hook(NULL, NULL);
        bool whole = trained && got == 2 && pred;
        if (!whole) {
            failures++;
            cr_assert_not_null(nb_error(), "allocation %ld of %lld failed without a message", fail, (long long)c.calls);
            const char *who = compiled != 0 ? "nb_model_compile"
                              : !h          ? "nb_model_fit"
                              : nb_history_stop_reason(h)[0] ? "nb_model_fit"
                              : got != 2    ? "nb_model_evaluate"
                                            : "nb_model_predict";
            EXPECT_ERROR(who, "out of memory");
        } else {
            cr_expect_eq(nb_history_epochs(h), 2);
            cr_expect_not_null(nb_history_get(h, "val_mae"));
            EXPECT_SHAPE(pred, 12, 1);
        }
        nb_history_free(h);
        nb_scope_end();
        nb_model_free(m);
        cr_expect_eq(nb_live_tensors(), live - 4, "allocation %ld: tensors left behind", fail);
        if (whole) {
            cr_expect_lt(c.calls, fail, "the run that succeeded had every allocation (fail %ld calls %lld)", fail, (long long)c.calls);
            break;
        }
    }
    cr_expect(failures > 5, "the sweep reached only %d allocations", failures);
}

/* ---- restore_best_weights keeps the buffers too ------------------------------------- */

typedef struct epoch_buffers {
    int epochs;
    float mean[20][8], var[20][8];
} epoch_buffers;

static bool save_buffers(nb_model *model, int epoch, const nb_history *h, void *user) {
    (void)h;
    epoch_buffers *w = user;
    int n;
    nb_tensor **b = nb_module_buffers(nb_model_module(model), &n);
    cr_assert_eq(n, 2);
    memcpy(w->mean[epoch], nb_data(b[0]), sizeof w->mean[0]);
    memcpy(w->var[epoch], nb_data(b[1]), sizeof w->var[0]);
    w->epochs = epoch + 1;
    return true;
}

Test(model, early_stopping_restores_the_running_statistics) {
    /* a batch norm's running statistics are weights in Keras's sense: the
     * model that restores epoch e's parameters must restore its statistics
     * of epoch e as well, or its predictions in eval mode mix two epochs */
    nb_tensor *x, *y;
    linear_data(8, &x, &y);
    nb_model *m = nb_model_sequential();
    cr_assert_eq(nb_model_add(m, nb_dense(8, "tanh", 3)), 0, "%s", nb_error());
    cr_assert_eq(nb_model_add(m, nb_batch_norm_layer(0.5f, 1e-5f)), 0, "%s", nb_error());
    cr_assert_eq(nb_model_add(m, nb_dense(1, "linear", 0)), 0, "%s", nb_error());
    cr_assert_eq(nb_model_compile(m, "sgd", "mse", NULL), 0, "%s", nb_error());
    int n = 0;
    nb_tensor **p = nb_model_parameters(m, &n);
    nb_sgd_opts sgd = nb_sgd_defaults();
    sgd.lr = 1.2f; /* too high: the loss jumps about, so the best epoch is not the last */
    cr_assert_eq(nb_model_set_optimizer(m, nb_sgd(n, p, &sgd)), 0, "%s", nb_error());
    epoch_buffers saved = {0};
    nb_fit_opts o = quiet_fit(20, 8);
    o.shuffle = false;
    o.patience = 2;
    o.restore_best_weights = true;
    o.on_epoch_end = save_buffers;
    o.user = &saved;
    nb_history *h = nb_model_fit(m, x, y, &o);
    cr_assert_not_null(h, "%s", nb_error());
    int epochs = nb_history_epochs(h), best = best_epoch(h);
    cr_assert(epochs < 20 && strstr(nb_history_stop_reason(h), "early stopping"),
              "training should stop early: %d epochs, reason \"%s\"", epochs, nb_history_stop_reason(h));
    cr_assert(best < epochs - 1, "the best epoch is not the last one");
    cr_assert(memcmp(saved.mean[best], saved.mean[epochs - 1], sizeof saved.mean[0]) != 0,
              "the statistics moved after the best epoch");
    int nb;
    nb_tensor **b = nb_module_buffers(nb_model_module(m), &nb);
    cr_expect(memcmp(nb_data(b[0]), saved.mean[best], sizeof saved.mean[0]) == 0 &&
                  memcmp(nb_data(b[1]), saved.var[best], sizeof saved.var[0]) == 0,
              "the running statistics of epoch %d are restored", best + 1);
    nb_history_free(h);
    nb_model_free(m);
}

/* Compiled by name before its layers were built: the optimizer appears with
 * the parameters, and what the user sets on it before fit is what fit uses. */
Test(model, optimizer_of_a_model_built_after_compile) {
    nb_model *m = nb_model_sequential();
    nb_model_add(m, nb_dense(4, "tanh", 0));
    nb_model_add(m, nb_dense(1, "linear", 0));
    cr_assert_eq(nb_model_compile(m, "adam", "mse", NULL), 0);
    cr_assert_null(nb_model_optimizer(m));
    EXPECT_ERROR("nb_model_optimizer", "no parameters yet", "'adam'");
    nb_tensor *x, *y;
    linear_data(8, &x, &y);
    cr_assert_not_null(nb_model_predict(m, x, 8), "%s", nb_error());
    nb_optimizer *opt = nb_model_optimizer(m);
    cr_assert_not_null(opt, "%s", nb_error());
    cr_expect_str_eq(nb_optimizer_name(opt), "adam");
    cr_expect_eq(nb_optimizer_num_params(opt), 4);
    nb_optimizer_set_lr(opt, 0.125f);
    nb_fit_opts o = quiet_fit(1, 8);
    nb_history *h = nb_model_fit(m, x, y, &o);
    cr_assert_not_null(h, "%s", nb_error());
    cr_expect_eq(nb_model_optimizer(m), opt, "fit kept the optimizer");
    cr_expect_float_eq(nb_optimizer_lr(opt), 0.125f, 0);
    cr_expect_eq(nb_optimizer_steps(opt), 1);
    nb_history_free(h);
    nb_model_free(m);
}
