/* fuzz_safetensors.c — libFuzzer harness for the safetensors reader
 * (nn/io/safetensors.c). The input is the file. A success must give
 * tensors whose sizes add up to the data section, each readable as a
 * float32 tensor of its shape, names unique and findable, and metadata
 * whose keys find their values; a failure a message starting
 * "nb_safetensors_parse: fuzz:"; and the live tensor count must come back
 * to where it was either way.
 *
 * Built with -Dfuzz=true (clang); tests/nn/io/test_corpus.c replays the
 * corpus in tests/fuzz/corpus/safetensors in the regular build.
 */
#include "fuzz_util.h"

static int fuzz_safetensors_one(const uint8_t *data, size_t size) {
    int64_t live = nb_live_tensors();
    nb_scope_begin();
    nb_clear_error();
    nb_safetensors *st = nb_safetensors_parse(data, size, "fuzz");
    if (st) {
        FUZZ_CHECK(size >= 8);
        uint64_t header = 0;
        for (int i = 7; i >= 0; i--) header = header << 8 | data[i];
        uint64_t bytes = 0;
        for (int i = 0; i < nb_safetensors_count(st); i++) {
            const char *name = nb_safetensors_name(st, i), *dtype = nb_safetensors_dtype(st, i);
            FUZZ_CHECK(name && dtype && nb_safetensors_find(st, name) == i);
            int ndim;
            const int64_t *shape = nb_safetensors_shape(st, i, &ndim);
            FUZZ_CHECK(ndim >= 0 && ndim <= NB_MAX_DIMS && (ndim == 0 || shape));
            uint64_t numel = 1;
            for (int d = 0; d < ndim; d++) numel *= (uint64_t)shape[d];
            int elem = strcmp(dtype, "F32") == 0 ? 4 : strcmp(dtype, "F64") == 0 ? 8 : 2;
            bytes += numel * (uint64_t)elem;
            nb_tensor *t = nb_safetensors_get(st, name);
            FUZZ_CHECK(t && (uint64_t)nb_numel(t) == numel && nb_ndim(t) == ndim);
        }
        FUZZ_CHECK(bytes == size - 8 - header);
        for (int i = 0; i < nb_safetensors_num_metadata(st); i++) {
            const char *key = nb_safetensors_metadata_key(st, i);
            FUZZ_CHECK(key && nb_safetensors_metadata(st, key));
        }
        nb_safetensors_free(st);
    } else {
        const char *want = "nb_safetensors_parse: fuzz:";
        FUZZ_CHECK(nb_error() && strncmp(nb_error(), want, strlen(want)) == 0);
    }
    nb_scope_end();
    FUZZ_CHECK(nb_live_tensors() == live);
    return 0;
}

NB_FUZZ_ENTRY(fuzz_safetensors_one)
