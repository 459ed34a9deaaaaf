/* test_corpus.c — replays the fuzzers' corpus (tests/fuzz/corpus: seeds,
 * and every input a fuzzer ever found to fail, kept as a regression file)
 * through the harnesses' own checking functions, so that the regular build
 * and CI check them without clang or libFuzzer. The harness files are
 * included here with their libFuzzer entry points left out, and their
 * checks become Criterion assertions naming the corpus file.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

static char corpus_file[1024];

#define FUZZ_CHECK(cond) cr_assert((cond), "%s: %s (last error: %s)", corpus_file, #cond, \
                                   nb_error() ? nb_error() : "none")
#define NB_FUZZ_NO_ENTRY
#include "../../fuzz/fuzz_csv.c"
#include "../../fuzz/fuzz_idx.c"
#include "../../fuzz/fuzz_inflate.c"
#include "../../fuzz/fuzz_safetensors.c"

TestSuite(corpus, NB_TEST_HOOKS);

/* Runs every file of tests/fuzz/corpus/<reader> through one; returns how many. */
static int replay(const char *reader, int (*one)(const uint8_t *, size_t)) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus/%s", NB_SOURCE_ROOT, reader);
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "cannot open %s", dir);
    int count = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        snprintf(corpus_file, sizeof corpus_file, "%s/%s", dir, e->d_name);
        FILE *f = fopen(corpus_file, "rb");
        cr_assert_not_null(f, "cannot open %s", corpus_file);
        static uint8_t buf[1 << 20];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        /* a copy of exactly n bytes, so that a read past the end is caught
         * by ASan and valgrind */
        uint8_t *data = malloc(n ? n : 1);
        memcpy(data, buf, n);
        one(data, n);
        free(data);
        count++;
    }
    closedir(d);
    return count;
}

Test(corpus, inflate) { cr_expect_geq(replay("inflate", fuzz_inflate_one), 5); }
Test(corpus, idx) { cr_expect_geq(replay("idx", fuzz_idx_one), 5); }
Test(corpus, csv) { cr_expect_geq(replay("csv", fuzz_csv_one), 5); }
Test(corpus, safetensors) { cr_expect_geq(replay("safetensors", fuzz_safetensors_one), 5); }
