/* fuzz_csv.c — libFuzzer harness for the CSV reader (nn/io/csv.c). The
 * first byte picks the delimiter, whether there is a header, and the label
 * columns (none, the last, the first and the last, or the one named "y");
 * the rest is the text. A success must give x and y with one row per
 * record and every column accounted for; a failure a message of the form
 * "nb_parse_csv: fuzz:line:column: what"; and no tensor may outlive the
 * scope.
 *
 * Built with -Dfuzz=true (clang); tests/nn/io/test_corpus.c replays the
 * corpus in tests/fuzz/corpus/csv in the regular build.
 */
#include "fuzz_util.h"

static int fuzz_csv_one(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    static const char delims[4] = {',', ';', '\t', ' '};
    static const int last[1] = {-1}, first_last[2] = {0, -1};
    static const char *const names[1] = {"y"};
    nb_csv_opts o = {.delimiter = delims[data[0] & 3], .header = data[0] & 4};
    switch ((data[0] >> 3) & 3) {
    case 1: o.nlabels = 1, o.label_columns = last; break;
    case 2: o.nlabels = 2, o.label_columns = first_last; break;
    case 3: o.nlabels = 1, o.label_names = names; break;
    default: break;
    }
    int64_t live = nb_live_tensors();
    nb_scope_begin();
    nb_clear_error();
    nb_tensor *x = NULL, *y = NULL;
    if (nb_parse_csv((const char *)data + 1, size - 1, "fuzz", &o, &x, &y) == 0) {
        FUZZ_CHECK(x && nb_ndim(x) == 2 && (o.nlabels ? y != NULL : y == NULL));
        if (y) FUZZ_CHECK(nb_ndim(y) == 2 && nb_dim(y, 0) == nb_dim(x, 0) && nb_dim(y, 1) == o.nlabels);
    } else {
        FUZZ_CHECK(!x && !y);
        FUZZ_CHECK(nb_error() && strncmp(nb_error(), "nb_parse_csv: fuzz", 18) == 0);
    }
    nb_scope_end();
    FUZZ_CHECK(nb_live_tensors() == live);
    return 0;
}

NB_FUZZ_ENTRY(fuzz_csv_one)
