/* test_history.c — the training history written as CSV and as an SVG
 * chart (nn/io/history.c): the CSV reads back to exactly the recorded
 * values, the chart has a panel per quantity with a curve per series, the
 * title is escaped, and a save that cannot happen leaves the old file. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

TestSuite(history, NB_TEST_HOOKS);

/* A short fit of the seed network with a metric and validation. */
static nb_history *short_history(int epochs) {
    nb_tensor *x = nb_rand(NB_SHAPE(40, 10));
    nb_tensor *y = nb_add_scalar(nb_matmul(x, nb_rand(NB_SHAPE(10, 1))), 0.5f);
    nb_model *m = nb_model_sequential();
    nb_model_add(m, nb_dense(10, "relu", 10));
    nb_model_add(m, nb_dense(1, "linear", 0));
    cr_assert_eq(nb_model_compile(m, "sgd", "mean_squared_error", "mae"), 0, "%s", nb_error());
    nb_fit_opts o = nb_fit_defaults();
    o.epochs = epochs;
    o.batch_size = 10;
    o.verbose = 0;
    o.validation_split = 0.25f;
    nb_history *h = nb_model_fit(m, x, y, &o);
    cr_assert_not_null(h, "%s", nb_error());
    nb_model_free(m);
    return h;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static int count(const char *text, const char *what) {
    int n = 0;
    for (const char *p = strstr(text, what); p; p = strstr(p + 1, what)) n++;
    return n;
}

Test(history, csv_reads_back_exactly) {
    nb_history *h = short_history(4);
    char path[] = "/tmp/nabla-history-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    cr_assert_eq(nb_history_save_csv(h, path), 0, "%s", nb_error());
    char *text = slurp(path);
    const char *header = "epoch,loss,mae,val_loss,val_mae\n";
    cr_assert(strncmp(text, header, strlen(header)) == 0, "header: %.60s", text);
    char *line = text + strlen(header);
    for (int e = 0; e < 4; e++) {
        char *end;
        cr_assert_eq(strtol(line, &end, 10), e + 1);
        for (int k = 0; k < 4; k++) {
            cr_assert_eq(*end, ',');
            float v = strtof(end + 1, &end);
            float want = nb_history_get(h, nb_history_key(h, k))[e];
            cr_assert(v == want, "epoch %d key %s: %.9g written, %.9g recorded", e + 1,
                      nb_history_key(h, k), (double)v, (double)want);
        }
        cr_assert_eq(*end, '\n');
        line = end + 1;
    }
    cr_assert_eq(*line, '\0');
    unlink(path);
    nb_history_free(h);
}

Test(history, svg_has_a_panel_per_quantity) {
    nb_history *h = short_history(6);
    char path[] = "/tmp/nabla-history-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    cr_assert_eq(nb_history_save_svg(h, path, "loss & <mae>"), 0, "%s", nb_error());
    char *svg = slurp(path);
    cr_assert(strncmp(svg, "<?xml", 5) == 0);
    cr_assert(strstr(svg, "</svg>\n") != NULL);
    cr_assert(strstr(svg, "loss &amp; &lt;mae&gt;") != NULL, "the title is escaped");
    /* two panels (loss, mae), each with a training and a validation curve */
    cr_assert_eq(count(svg, ">loss</text>"), 1);
    cr_assert_eq(count(svg, ">mae</text>"), 1);
    cr_assert_eq(count(svg, "<polyline fill=\"none\" stroke=\"#1f77b4\""), 2);
    cr_assert_eq(count(svg, "<polyline fill=\"none\" stroke=\"#ff7f0e\""), 2);
    cr_assert_eq(count(svg, "<circle"), 4 * 6, "a point per epoch and curve");
    cr_assert_null(strstr(svg, "nan"));
    unlink(path);
    nb_history_free(h);
}

Test(history, a_failed_save_leaves_the_old_file) {
    nb_history *h = short_history(2);
    cr_assert_eq(nb_history_save_svg(h, "/nonexistent-folder/h.svg", NULL), -1);
    EXPECT_ERROR("nb_history_save_svg", "/nonexistent-folder/h.svg", "temporary");
    char path[] = "/tmp/nabla-history-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, "old", 3), 3);
    close(fd);
    /* out of memory: the old file stays as it was, and no temporary is left */
    nb_set_alloc_hook(nb_test_alloc_hook, &(nb_test_alloc){.fail_at = 1, .persistent = true});
    int rc = nb_history_save_csv(h, path);
    nb_set_alloc_hook(NULL, NULL);
    cr_assert_eq(rc, -1);
    EXPECT_ERROR("nb_history_save_csv", "out of memory");
    cr_assert_str_eq(slurp(path), "old");
    cr_assert_eq(nb_history_save_csv(NULL, path), -1);
    EXPECT_ERROR("nb_history_save_csv", "history is NULL");
    unlink(path);
    nb_history_free(h);
}
