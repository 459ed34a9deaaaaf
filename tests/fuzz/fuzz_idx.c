/* fuzz_idx.c — libFuzzer harness for the IDX reader (nn/io/idx.c). The
 * first byte picks images or labels, raw or scaled values, and the number
 * of classes to check labels against; the rest is the file, raw or gzip.
 * A success must give a tensor of the shape the header gives with values
 * in range; a failure a message from the function called; and the live
 * tensor count must come back to where it was either way.
 *
 * Built with -Dfuzz=true (clang); tests/nn/io/test_corpus.c replays the
 * corpus in tests/fuzz/corpus/idx in the regular build.
 */
#include "fuzz_util.h"

static int fuzz_idx_one(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    bool images = data[0] & 1, raw = data[0] & 2;
    int64_t num_classes = data[0] >> 2; /* 0: no check */
    int64_t live = nb_live_tensors();
    nb_scope_begin();
    nb_clear_error();
    nb_tensor *t = images ? nb_parse_idx_images(data + 1, size - 1, "fuzz", raw)
                          : nb_parse_idx_labels(data + 1, size - 1, "fuzz", num_classes);
    if (t) {
        FUZZ_CHECK(nb_ndim(t) == (images ? 3 : 1));
        const float *v = nb_data(t);
        float hi = images ? (raw ? 255.0f : 1.0f) : num_classes ? (float)(num_classes - 1) : 255.0f;
        for (int64_t i = 0; i < nb_numel(t); i++) FUZZ_CHECK(v[i] >= 0 && v[i] <= hi);
    } else {
        const char *want = images ? "nb_parse_idx_images: fuzz" : "nb_parse_idx_labels: fuzz";
        FUZZ_CHECK(nb_error() && strncmp(nb_error(), want, strlen(want)) == 0);
    }
    nb_scope_end();
    FUZZ_CHECK(nb_live_tensors() == live);
    return 0;
}

NB_FUZZ_ENTRY(fuzz_idx_one)
