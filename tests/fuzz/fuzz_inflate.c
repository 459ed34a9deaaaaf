/* fuzz_inflate.c — libFuzzer harness for the inflater (nn/io/inflate.c).
 * The first byte picks the format (auto, gzip, zlib, raw), the rest is the
 * stream. Whatever the bytes, nb_inflate must return, within the 1 MB cap
 * set here, either 0 with a buffer of the size it reports or -1 with a
 * message naming the input, nothing allocated and nothing leaked.
 *
 * Built with -Dfuzz=true (clang); tests/nn/io/test_corpus.c replays the
 * corpus in tests/fuzz/corpus/inflate through the same function in the
 * regular build, where FUZZ_CHECK becomes a Criterion assertion.
 */
#include "fuzz_util.h"

static int fuzz_inflate_one(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    nb_inflate_opts o = {.format = (nb_inflate_format)(data[0] & 3), .max_output = 1 << 20,
                         .name = "fuzz"};
    uint8_t *out = (uint8_t *)&o;
    size_t n = 1;
    nb_clear_error();
    if (nb_inflate(data + 1, size - 1, &out, &n, &o) == 0) {
        FUZZ_CHECK(out != NULL && n <= o.max_output);
        volatile uint32_t crc = nb_crc32(0, out, n); /* every reported byte is readable */
        (void)crc;
        nb_free(out);
    } else {
        FUZZ_CHECK(out == NULL && n == 0);
        FUZZ_CHECK(nb_error() && strncmp(nb_error(), "nb_inflate: fuzz:", 17) == 0);
    }
    return 0;
}

NB_FUZZ_ENTRY(fuzz_inflate_one)
