/* test_inflate.c — the inflater (nn/io/inflate.c) against streams made two
 * ways: by zlib itself (inflate_vectors.h: dynamic Huffman blocks in gzip,
 * zlib and raw form), and by a small encoder written here for stored and
 * fixed blocks and for hand-made dynamic block headers, which is how the
 * corrupt streams are made: each kind of corruption the RFCs allow has a
 * test that checks its message, and the offset and name it reports.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "inflate_vectors.h"
#include "test_util.h"

TestSuite(inflate, NB_TEST_HOOKS);

/* ---- a bit writer and a small deflate encoder --------------------------------------- */

typedef struct bits {
    uint8_t buf[1 << 17];
    size_t pos; /* in bits */
} bits;

static bits *bits_new(void) { return calloc(1, sizeof(bits)); }
static size_t bits_bytes(const bits *w) { return (w->pos + 7) / 8; }

/* Values go least significant bit first... */
static void put(bits *w, uint32_t v, int n) {
    for (int i = 0; i < n; i++, w->pos++) w->buf[w->pos / 8] |= (uint8_t)(((v >> i) & 1) << (w->pos % 8));
}
/* ...Huffman codes most significant bit first. */
static void put_code(bits *w, uint32_t code, int len) {
    for (int i = len - 1; i >= 0; i--) put(w, code >> i, 1);
}
static void align(bits *w) { w->pos = (w->pos + 7) & ~(size_t)7; }
static void put_bytes(bits *w, const void *p, size_t n) {
    align(w);
    memcpy(w->buf + w->pos / 8, p, n);
    w->pos += 8 * n;
}

static void stored_block(bits *w, bool final, const void *data, uint16_t n) {
    put(w, final, 1);
    put(w, 0, 2);
    align(w);
    put(w, n, 16);
    put(w, (uint16_t)~n, 16);
    put_bytes(w, data, n);
}

static const int len_base[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const int len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                  2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const int dist_base[30] = {1,    2,    3,    4,    5,    7,    9,    13,    17,    25,
                                  33,   49,   65,   97,   129,  193,  257,  385,   513,   769,
                                  1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const int dist_extra[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                   6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

/* A literal/length symbol in the fixed code of RFC 1951 3.2.6. */
static void fixed_sym(bits *w, int sym) {
    if (sym < 144) put_code(w, 0x30 + sym, 8);
    else if (sym < 256) put_code(w, 0x190 + sym - 144, 9);
    else if (sym < 280) put_code(w, sym - 256, 7);
    else put_code(w, 0xc0 + sym - 280, 8);
}

static void fixed_match(bits *w, int len, int dist) {
    int i = 28, j = 29;
    while (len_base[i] > len) i--;
    while (dist_base[j] > dist) j--;
    fixed_sym(w, 257 + i);
    put(w, (uint32_t)(len - len_base[i]), len_extra[i]);
    put_code(w, (uint32_t)j, 5);
    put(w, (uint32_t)(dist - dist_base[j]), dist_extra[j]);
}

static void fixed_header(bits *w, bool final) {
    put(w, final, 1);
    put(w, 1, 2);
}

/* A whole fixed block: greedy LZ77 with a hash of the last position of
 * each 3-byte string, so matches of many lengths and distances occur. */
static void fixed_block(bits *w, bool final, const uint8_t *d, size_t n) {
    static int32_t last[1 << 12];
    for (size_t i = 0; i < sizeof last / sizeof *last; i++) last[i] = -1;
    fixed_header(w, final);
    for (size_t i = 0; i < n;) {
        int len = 0, dist = 0;
        if (i + 3 <= n) {
            unsigned h = (d[i] * 506832829u ^ d[i + 1] * 2654435761u ^ d[i + 2] * 40503u) >> 20;
            int32_t c = last[h];
            last[h] = (int32_t)i;
            if (c >= 0 && i - (size_t)c <= 32768) {
                while (len < 258 && i + (size_t)len < n && d[c + len] == d[i + (size_t)len]) len++;
                dist = (int)(i - (size_t)c);
            }
        }
        if (len >= 3) {
            fixed_match(w, len, dist);
            i += (size_t)len;
        } else fixed_sym(w, d[i++]);
    }
    fixed_sym(w, 256);
}

/* gzip and zlib wrappers around raw deflate data. */
static size_t wrap_gzip(uint8_t *out, const bits *w, const void *plain, size_t n) {
    static const uint8_t header[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    memcpy(out, header, 10);
    memcpy(out + 10, w->buf, bits_bytes(w));
    size_t k = 10 + bits_bytes(w);
    uint32_t crc = nb_crc32(0, plain, n), size = (uint32_t)n;
    for (int i = 0; i < 4; i++) out[k + (size_t)i] = (uint8_t)(crc >> 8 * i);
    for (int i = 0; i < 4; i++) out[k + 4 + (size_t)i] = (uint8_t)(size >> 8 * i);
    return k + 8;
}

static size_t wrap_zlib(uint8_t *out, const bits *w, const void *plain, size_t n) {
    out[0] = 0x78;
    out[1] = 0x01; /* 0x7801 % 31 == 0 */
    memcpy(out + 2, w->buf, bits_bytes(w));
    size_t k = 2 + bits_bytes(w);
    uint32_t a = nb_adler32(1, plain, n);
    for (int i = 0; i < 4; i++) out[k + (size_t)i] = (uint8_t)(a >> (24 - 8 * i));
    return k + 4;
}

/* ---- helpers -------------------------------------------------------------------------- */

static uint8_t *text_of_vectors(size_t *n) {
    static uint8_t text[1024];
    size_t k = 0;
    for (int i = 0; i < 80; i++)
        k += (size_t)snprintf((char *)text + k, sizeof text - k, "line %d: %d\n", i, i * i % 97);
    *n = k;
    return text;
}

/* Inflates and expects success with the given output. */
static void expect_inflate(const void *in, size_t n, nb_inflate_format f, const void *want,
                           size_t want_n) {
    uint8_t *out;
    size_t out_n;
    int err = nb_inflate(in, n, &out, &out_n, &(nb_inflate_opts){.format = f});
    cr_assert_eq(err, 0, "nb_inflate failed: %s", nb_error());
    cr_assert_eq(out_n, want_n, "inflated %zu bytes, expected %zu", out_n, want_n);
    cr_assert(want_n == 0 || memcmp(out, want, want_n) == 0, "inflated bytes differ");
    nb_free(out);
}

/* Inflates and expects failure with a message holding every fragment. */
#define EXPECT_INFLATE_ERROR(in, n, f, ...)                                                  \
    do {                                                                                   \
        uint8_t *out_ = (uint8_t *)1;                                                      \
        size_t out_n_ = 1;                                                                 \
        nb_clear_error();                                                                  \
        int err_ = nb_inflate((in), (n), &out_, &out_n_,                                   \
                              &(nb_inflate_opts){.format = (f), .name = "t.gz"});          \
        cr_assert_eq(err_, -1, "corrupt stream accepted");                                 \
        cr_assert_null(out_);                                                              \
        cr_assert_eq(out_n_, 0);                                                           \
        EXPECT_ERROR("nb_inflate: t.gz:", __VA_ARGS__);                                    \
    } while (0)

/* ---- checksums ------------------------------------------------------------------------ */

Test(inflate, checksums_known_values) {
    cr_expect_eq(nb_crc32(0, "123456789", 9), 0xcbf43926u);
    cr_expect_eq(nb_crc32(0, "", 0), 0u);
    cr_expect_eq(nb_adler32(1, "Wikipedia", 9), 0x11e60398u);
    /* chaining equals one call, across the 8-byte and 5552-byte strides */
    static uint8_t big[20000];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)(i * 7 + (i >> 5));
    cr_expect_eq(nb_crc32(nb_crc32(0, big, 13), big + 13, sizeof big - 13), nb_crc32(0, big, sizeof big));
    cr_expect_eq(nb_adler32(nb_adler32(1, big, 9999), big + 9999, sizeof big - 9999),
                 nb_adler32(1, big, sizeof big));
}

/* ---- valid streams -------------------------------------------------------------------- */

Test(inflate, zlib_made_dynamic_blocks) {
    size_t n;
    const uint8_t *text = text_of_vectors(&n);
    cr_assert_eq(n, 940);
    expect_inflate(text_gz, sizeof text_gz, NB_INFLATE_AUTO, text, n);
    expect_inflate(text_gz, sizeof text_gz, NB_INFLATE_GZIP, text, n);
    expect_inflate(text_zlib, sizeof text_zlib, NB_INFLATE_AUTO, text, n);
    expect_inflate(text_zlib, sizeof text_zlib, NB_INFLATE_ZLIB, text, n);
    expect_inflate(text_raw, sizeof text_raw, NB_INFLATE_RAW, text, n);
}

Test(inflate, stored_blocks) {
    bits *w = bits_new();
    stored_block(w, false, "hello, ", 7);
    stored_block(w, false, "", 0);
    stored_block(w, true, "world", 5);
    expect_inflate(w->buf, bits_bytes(w), NB_INFLATE_RAW, "hello, world", 12);
    free(w);
}

Test(inflate, fixed_blocks_literals_and_runs) {
    bits *w = bits_new();
    fixed_header(w, true);
    fixed_sym(w, 'a');
    fixed_sym(w, 'b');
    fixed_match(w, 10, 2); /* overlapping copy: a run of "ab" */
    fixed_sym(w, 0xff);    /* a 9-bit literal */
    fixed_match(w, 258, 1);
    fixed_sym(w, 256);
    uint8_t want[12 + 1 + 258];
    for (int i = 0; i < 12; i++) want[i] = "ab"[i % 2];
    want[12] = 0xff;
    memset(want + 13, 0xff, 258);
    expect_inflate(w->buf, bits_bytes(w), NB_INFLATE_RAW, want, sizeof want);
    free(w);
}

Test(inflate, fixed_encoder_round_trip_every_length_and_distance) {
    /* text with repeats at every distance up to 32K and lengths up to 258 */
    size_t n = 100000;
    uint8_t *d = malloc(n);
    uint32_t s = 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 1103515245u + 12345u;
        size_t back = 1 + (s >> 8) % 32768;
        d[i] = (i > back && (s >> 28) < 12) ? d[i - back] : (uint8_t)(s >> 16);
    }
    bits *w = bits_new();
    fixed_block(w, false, d, n / 2);
    stored_block(w, false, d + n / 2, 1000);
    fixed_block(w, true, d + n / 2 + 1000, n - n / 2 - 1000);
    expect_inflate(w->buf, bits_bytes(w), NB_INFLATE_RAW, d, n);
    uint8_t *gz = malloc(bits_bytes(w) + 18), *zl = malloc(bits_bytes(w) + 6);
    expect_inflate(gz, wrap_gzip(gz, w, d, n), NB_INFLATE_AUTO, d, n);
    expect_inflate(zl, wrap_zlib(zl, w, d, n), NB_INFLATE_AUTO, d, n);
    free(gz);
    free(zl);
    free(w);
    free(d);
}

Test(inflate, empty_streams) {
    bits *w = bits_new();
    fixed_header(w, true);
    fixed_sym(w, 256);
    expect_inflate(w->buf, bits_bytes(w), NB_INFLATE_RAW, "", 0);
    uint8_t gz[32];
    expect_inflate(gz, wrap_gzip(gz, w, "", 0), NB_INFLATE_GZIP, "", 0);
    free(w);
}

Test(inflate, gzip_header_fields_and_multi_member) {
    size_t n;
    const uint8_t *text = text_of_vectors(&n);
    /* member 1: FEXTRA, FNAME, FCOMMENT and FHCRC, with the text;
     * member 2: plain header, "tail" in a fixed block */
    uint8_t file[2048];
    size_t k = 0;
    const uint8_t head[10] = {0x1f, 0x8b, 8, 4 | 8 | 16 | 2, 0, 0, 0, 0, 0, 3};
    memcpy(file, head, 10);
    k = 10;
    file[k++] = 3;
    file[k++] = 0;
    memcpy(file + k, "xyz", 3);
    k += 3;
    memcpy(file + k, "name.txt", 9);
    k += 9;
    memcpy(file + k, "a comment", 10);
    k += 10;
    uint32_t hcrc = nb_crc32(0, file, k);
    file[k++] = (uint8_t)hcrc;
    file[k++] = (uint8_t)(hcrc >> 8);
    memcpy(file + k, text_gz + 10, sizeof text_gz - 10); /* deflate data and trailer */
    k += sizeof text_gz - 10;
    bits *w = bits_new();
    fixed_header(w, true);
    for (const char *p = "tail"; *p; p++) fixed_sym(w, *p);
    fixed_sym(w, 256);
    k += wrap_gzip(file + k, w, "tail", 4);
    uint8_t want[1024];
    memcpy(want, text, n);
    memcpy(want + n, "tail", 4);
    expect_inflate(file, k, NB_INFLATE_AUTO, want, n + 4);
    /* a corrupt header CRC is caught */
    file[10 + 2 + 3 + 9 + 10] ^= 1;
    EXPECT_INFLATE_ERROR(file, k, NB_INFLATE_AUTO, "header CRC mismatch", "t.gz:34:");
    free(w);
}

Test(inflate, member_cannot_reach_into_the_previous_one) {
    bits *w1 = bits_new(), *w2 = bits_new();
    fixed_header(w1, true);
    for (const char *p = "abcd"; *p; p++) fixed_sym(w1, *p);
    fixed_sym(w1, 256);
    fixed_header(w2, true);
    fixed_match(w2, 4, 4); /* would copy member 1's "abcd" */
    fixed_sym(w2, 256);
    uint8_t file[128];
    size_t k = wrap_gzip(file, w1, "abcd", 4);
    k += wrap_gzip(file + k, w2, "abcd", 4);
    EXPECT_INFLATE_ERROR(file, k, NB_INFLATE_GZIP, "distance 4 too far back (only 0 bytes written)");
    free(w1);
    free(w2);
}

Test(inflate, gunzip_file) {
    char path[] = "/tmp/nb_test_inflate_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, text_gz, sizeof text_gz), (ssize_t)sizeof text_gz);
    close(fd);
    uint8_t *out;
    size_t n, want_n;
    const uint8_t *want = text_of_vectors(&want_n);
    cr_assert_eq(nb_gunzip_file(path, &out, &n, NULL), 0, "%s", nb_error());
    cr_assert_eq(n, want_n);
    cr_assert(memcmp(out, want, n) == 0);
    nb_free(out);
    /* a message names the file */
    cr_assert_eq(nb_gunzip_file(path, &out, &n, &(nb_inflate_opts){.max_output = 100}), -1);
    EXPECT_ERROR("nb_gunzip_file: ", path, "exceeds the limit of 100 bytes", "max_output");
    cr_assert_null(out);
    unlink(path);
    cr_assert_eq(nb_gunzip_file(path, &out, &n, NULL), -1);
    EXPECT_ERROR("nb_gunzip_file: ", path, "cannot open");
    cr_assert_eq(nb_gunzip_file(NULL, &out, &n, NULL), -1);
    EXPECT_ERROR("nb_gunzip_file: path is NULL");
}

/* ---- corruption, one kind at a time --------------------------------------------------- */

Test(inflate, bad_wrappers) {
    uint8_t b[sizeof text_gz];
    memcpy(b, text_gz, sizeof b);
    EXPECT_INFLATE_ERROR("PK\3\4", 4, NB_INFLATE_AUTO, "t.gz:0:", "neither a gzip nor a zlib header");
    EXPECT_INFLATE_ERROR("PK\3\4xxxxxxxxxx", 14, NB_INFLATE_GZIP, "t.gz:0:", "not gzip data");
    b[2] = 7;
    EXPECT_INFLATE_ERROR(b, sizeof b, NB_INFLATE_GZIP, "t.gz:2:", "unknown compression method 7");
    b[2] = 8;
    b[3] = 0x20;
    EXPECT_INFLATE_ERROR(b, sizeof b, NB_INFLATE_GZIP, "t.gz:3:", "reserved header flags");
    uint8_t z[sizeof text_zlib];
    memcpy(z, text_zlib, sizeof z);
    z[1] ^= 1;
    EXPECT_INFLATE_ERROR(z, sizeof z, NB_INFLATE_ZLIB, "t.gz:1:", "zlib header check failed");
    z[0] = 0x88;
    EXPECT_INFLATE_ERROR(z, sizeof z, NB_INFLATE_ZLIB, "t.gz:0:", "window size 2^16 too large");
    z[0] = 0x79;
    EXPECT_INFLATE_ERROR(z, sizeof z, NB_INFLATE_ZLIB, "t.gz:0:", "unknown compression method 9");
    EXPECT_INFLATE_ERROR("\x78\x20", 2, NB_INFLATE_ZLIB, "t.gz:1:", "preset dictionary");
}

Test(inflate, checksum_and_size_mismatches) {
    uint8_t b[sizeof text_gz];
    memcpy(b, text_gz, sizeof b);
    b[sizeof b - 8] ^= 0x10;
    EXPECT_INFLATE_ERROR(b, sizeof b, NB_INFLATE_AUTO, "t.gz:314:", "CRC-32 mismatch");
    b[sizeof b - 8] ^= 0x10;
    b[sizeof b - 4] ^= 1;
    EXPECT_INFLATE_ERROR(b, sizeof b, NB_INFLATE_AUTO, "t.gz:318:", "ISIZE mismatch",
                         "stored 941, decompressed 940");
    uint8_t z[sizeof text_zlib];
    memcpy(z, text_zlib, sizeof z);
    z[sizeof z - 1] ^= 1;
    EXPECT_INFLATE_ERROR(z, sizeof z, NB_INFLATE_AUTO, "Adler-32 mismatch");
}

Test(inflate, trailing_garbage) {
    uint8_t b[sizeof text_gz + 3];
    memcpy(b, text_gz, sizeof text_gz);
    memcpy(b + sizeof text_gz, "xyz", 3);
    EXPECT_INFLATE_ERROR(b, sizeof b, NB_INFLATE_AUTO, "t.gz:322:", "3 bytes of trailing garbage");
    memset(b + sizeof text_gz, 0, 3); /* zero padding is garbage too */
    EXPECT_INFLATE_ERROR(b, sizeof b, NB_INFLATE_AUTO, "trailing garbage");
    uint8_t z[sizeof text_zlib + 1];
    memcpy(z, text_zlib, sizeof text_zlib);
    z[sizeof text_zlib] = 0;
    EXPECT_INFLATE_ERROR(z, sizeof z, NB_INFLATE_AUTO, "t.gz:310:", "1 bytes of trailing garbage");
    uint8_t r[sizeof text_raw + 1];
    memcpy(r, text_raw, sizeof text_raw);
    r[sizeof text_raw] = 0;
    EXPECT_INFLATE_ERROR(r, sizeof r, NB_INFLATE_RAW, "t.gz:350:", "trailing garbage");
}

Test(inflate, bad_block_type_and_stored_length) {
    EXPECT_INFLATE_ERROR("\x07", 1, NB_INFLATE_RAW, "t.gz:0:", "invalid block type 3");
    bits *w = bits_new();
    stored_block(w, true, "abc", 3);
    w->buf[3] ^= 1; /* NLEN */
    EXPECT_INFLATE_ERROR(w->buf, bits_bytes(w), NB_INFLATE_RAW, "t.gz:1:",
                         "stored block length 3 does not match its complement 65533");
    free(w);
}

Test(inflate, fixed_block_bad_symbols_and_distances) {
    bits *w = bits_new();
    fixed_header(w, true);
    fixed_sym(w, 286);
    EXPECT_INFLATE_ERROR(w->buf, bits_bytes(w), NB_INFLATE_RAW, "invalid length symbol 286");
    memset(w, 0, sizeof *w);
    fixed_header(w, true);
    fixed_sym(w, 'a');
    fixed_sym(w, 257);
    put_code(w, 30, 5);
    EXPECT_INFLATE_ERROR(w->buf, bits_bytes(w), NB_INFLATE_RAW, "invalid distance symbol 30");
    memset(w, 0, sizeof *w);
    fixed_header(w, true);
    fixed_sym(w, 'a');
    fixed_match(w, 3, 2);
    fixed_sym(w, 256);
    EXPECT_INFLATE_ERROR(w->buf, bits_bytes(w), NB_INFLATE_RAW, "t.gz:2:",
                         "distance 2 too far back (only 1 bytes written)");
    free(w);
}

/* A dynamic block header: the code-length code given by lengths of the 19
 * code-length symbols, then a sequence of code-length symbols (with their
 * extra bits) for nlit + ndist lengths. */
typedef struct cl_item {
    int sym, extra;
} cl_item;

static void canonical(const int *len, int n, int *code) {
    int count[16] = {0}, next[16] = {0};
    for (int i = 0; i < n; i++) count[len[i]]++;
    count[0] = 0;
    for (int b = 1, c = 0; b < 16; b++) next[b] = c = (c + count[b - 1]) << 1;
    for (int i = 0; i < n; i++)
        if (len[i]) code[i] = next[len[i]]++;
}

static void dynamic_header(bits *w, int nlit, int ndist, const int cl_len[19], const cl_item *items,
                           int nitems) {
    static const int order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    put(w, 1, 1);
    put(w, 2, 2);
    put(w, (uint32_t)(nlit - 257), 5);
    put(w, (uint32_t)(ndist - 1), 5);
    put(w, 19 - 4, 4);
    for (int i = 0; i < 19; i++) put(w, (uint32_t)cl_len[order[i]], 3);
    int code[19] = {0};
    canonical(cl_len, 19, code);
    for (int i = 0; i < nitems; i++) {
        int s = items[i].sym;
        put_code(w, (uint32_t)code[s], cl_len[s]);
        if (s == 16) put(w, (uint32_t)items[i].extra - 3, 2);
        if (s == 17) put(w, (uint32_t)items[i].extra - 3, 3);
        if (s == 18) put(w, (uint32_t)items[i].extra - 11, 7);
    }
}

/* The code-length code {0, 1, 2, 18} with two bits each: complete. */
static const int cl_0_1_2_18[19] = {[0] = 2, [1] = 2, [2] = 2, [18] = 2};

#define DYNAMIC_ERROR(nlit, ndist, cl, ...)                                                  \
    do {                                                                                   \
        bits *w_ = bits_new();                                                             \
        const cl_item items_[] = __VA_ARGS__;                                              \
        dynamic_header(w_, nlit, ndist, cl, items_, (int)(sizeof items_ / sizeof *items_)); \
        uint8_t *o_;                                                                       \
        size_t n_;                                                                         \
        nb_clear_error();                                                                  \
        cr_assert_eq(nb_inflate(w_->buf, bits_bytes(w_), &o_, &n_,                         \
                                &(nb_inflate_opts){.format = NB_INFLATE_RAW}), -1);        \
        free(w_);                                                                          \
    } while (0)

Test(inflate, dynamic_header_errors) {
    /* too many literal/length codes: HLIT = 30 means 287 */
    bits *w = bits_new();
    put(w, 1, 1);
    put(w, 2, 2);
    put(w, 30, 5);
    put(w, 0, 5);
    put(w, 0, 4);
    EXPECT_INFLATE_ERROR(w->buf, bits_bytes(w), NB_INFLATE_RAW, "bad code counts: 287 literal/length");
    free(w);

    const int over[19] = {[16] = 1, [17] = 1, [18] = 1, [0] = 1};
    DYNAMIC_ERROR(257, 1, over, {{0, 0}});
    EXPECT_ERROR("over-subscribed code-length code");
    const int incomplete[19] = {[16] = 2};
    DYNAMIC_ERROR(257, 1, incomplete, {{16, 3}});
    EXPECT_ERROR("incomplete code-length code");
    const int cl_0_16[19] = {[0] = 1, [16] = 1};
    DYNAMIC_ERROR(257, 1, cl_0_16, {{16, 3}});
    EXPECT_ERROR("code length repeat with no previous length");
    const int cl_0_18[19] = {[0] = 1, [18] = 1};
    DYNAMIC_ERROR(257, 1, cl_0_18, {{18, 138}, {18, 138}});
    EXPECT_ERROR("code lengths repeat past the 258 codes");
    DYNAMIC_ERROR(257, 1, cl_0_18, {{18, 138}, {18, 120}});
    EXPECT_ERROR("no end-of-block code");
    /* four one-bit literal codes */
    DYNAMIC_ERROR(257, 1, cl_0_1_2_18, {{1, 0}, {1, 0}, {1, 0}, {18, 138}, {18, 115}, {1, 0}, {1, 0}});
    EXPECT_ERROR("over-subscribed literal/length code");
    /* literal 0 with one bit and end-of-block with two: a code left unused */
    DYNAMIC_ERROR(257, 1, cl_0_1_2_18, {{1, 0}, {18, 138}, {18, 117}, {2, 0}, {1, 0}});
    EXPECT_ERROR("incomplete literal/length code");
    /* one distance code of two bits (only one bit is allowed alone) */
    DYNAMIC_ERROR(257, 2, cl_0_1_2_18, {{1, 0}, {18, 138}, {18, 117}, {1, 0}, {2, 0}, {0, 0}});
    EXPECT_ERROR("incomplete distance code");
    /* three one-bit distance codes */
    DYNAMIC_ERROR(257, 3, cl_0_1_2_18, {{1, 0}, {18, 138}, {18, 117}, {1, 0}, {1, 0}, {1, 0}, {1, 0}});
    EXPECT_ERROR("over-subscribed distance code");
}

Test(inflate, dynamic_single_distance_code_and_invalid_code) {
    /* literals: 0 (1 bit), 256 and 257 (2 bits); one distance code of one
     * bit, the case RFC 1951 allows incomplete. */
    const cl_item items[] = {{1, 0}, {18, 138}, {18, 117}, {2, 0}, {2, 0}, {1, 0}};
    int lit_len[258] = {[0] = 1, [256] = 2, [257] = 2}, lit_code[258] = {0};
    canonical(lit_len, 258, lit_code);
    for (int bad = 0; bad < 2; bad++) {
        bits *w = bits_new();
        dynamic_header(w, 258, 1, cl_0_1_2_18, items, 6);
        put_code(w, (uint32_t)lit_code[0], 1);     /* literal 0 */
        put_code(w, (uint32_t)lit_code[257], 2);   /* length 3 */
        put_code(w, (uint32_t)bad, 1);             /* distance code 0 (distance 1), or nothing */
        put_code(w, (uint32_t)lit_code[256], 2);
        if (!bad) expect_inflate(w->buf, bits_bytes(w), NB_INFLATE_RAW, "\0\0\0\0", 4);
        else EXPECT_INFLATE_ERROR(w->buf, bits_bytes(w), NB_INFLATE_RAW, "invalid Huffman code");
        free(w);
    }
}

Test(inflate, every_truncation_is_reported) {
    for (size_t n = 0; n < sizeof text_gz; n++)
        EXPECT_INFLATE_ERROR(text_gz, n, NB_INFLATE_GZIP, "truncated");
    for (size_t n = 0; n < sizeof text_zlib; n++)
        EXPECT_INFLATE_ERROR(text_zlib, n, NB_INFLATE_ZLIB, "truncated");
    for (size_t n = 0; n < sizeof text_raw; n++)
        EXPECT_INFLATE_ERROR(text_raw, n, NB_INFLATE_RAW, "truncated");
    char at[32];
    snprintf(at, sizeof at, "t.gz:%d:", 100);
    EXPECT_INFLATE_ERROR(text_gz, 100, NB_INFLATE_GZIP, at, "the compressed data ends too early");
}

Test(inflate, every_bit_flip_is_survived) {
    /* No flip may crash or leak, and none may change the output unnoticed:
     * a flip is accepted only where nothing checked lives (FTEXT, MTIME,
     * XFL, OS, the padding bits after the last block). */
    size_t want_n;
    const uint8_t *want = text_of_vectors(&want_n);
    uint8_t b[sizeof text_gz];
    int accepted = 0;
    for (size_t i = 0; i < sizeof b; i++)
        for (int bit = 0; bit < 8; bit++) {
            memcpy(b, text_gz, sizeof b);
            b[i] ^= (uint8_t)(1 << bit);
            uint8_t *out;
            size_t n;
            if (nb_inflate(b, sizeof b, &out, &n, NULL) == 0) {
                accepted++;
                cr_assert(n == want_n && memcmp(out, want, n) == 0,
                          "flip of bit %d of byte %zu changed the output unnoticed", bit, i);
                nb_free(out);
            } else cr_assert_not_null(nb_error());
        }
    cr_expect_leq(accepted, 1 + 6 * 8 + 7);
}

Test(inflate, output_cap_stops_zip_bombs) {
    /* 1 MB of zeros from about 4 KB of fixed-block matches */
    bits *w = bits_new();
    fixed_header(w, true);
    fixed_sym(w, 0);
    for (int i = 0; i < 4065; i++) fixed_match(w, 258, 1);
    fixed_sym(w, 256);
    uint8_t *out;
    size_t n;
    cr_assert_eq(nb_inflate(w->buf, bits_bytes(w), &out, &n,
                            &(nb_inflate_opts){.format = NB_INFLATE_RAW}), 0);
    cr_assert_eq(n, 1 + 4065 * 258);
    nb_free(out);
    cr_assert_eq(nb_inflate(w->buf, bits_bytes(w), &out, &n,
                            &(nb_inflate_opts){.format = NB_INFLATE_RAW, .max_output = 65536}), -1);
    EXPECT_ERROR("nb_inflate: (memory):", "decompressed data exceeds the limit of 65536 bytes");
    /* a cap below the first guess at the size */
    cr_assert_eq(nb_inflate(text_gz, sizeof text_gz, &out, &n, &(nb_inflate_opts){.max_output = 10}), -1);
    EXPECT_ERROR("exceeds the limit of 10 bytes");
    cr_assert_eq(nb_inflate(text_gz, sizeof text_gz, &out, &n, &(nb_inflate_opts){.max_output = 940}), 0);
    nb_free(out);
    cr_assert_eq(nb_inflate(text_gz, sizeof text_gz, &out, &n, &(nb_inflate_opts){.max_output = 939}), -1);
    free(w);
}

Test(inflate, bad_arguments) {
    uint8_t *out;
    size_t n;
    cr_assert_eq(nb_inflate(NULL, 5, &out, &n, NULL), -1);
    EXPECT_ERROR("nb_inflate: (memory): NULL argument");
    cr_assert_eq(nb_inflate(text_gz, sizeof text_gz, NULL, &n, NULL), -1);
    cr_assert_eq(nb_inflate(text_gz, sizeof text_gz, &out, &n, &(nb_inflate_opts){.format = 9}), -1);
    EXPECT_ERROR("unknown format 9");
}

/* ---- out of memory ---------------------------------------------------------------- */

Test(inflate, out_of_memory_at_every_allocation) {
    size_t want_n;
    const uint8_t *want = text_of_vectors(&want_n);
    int64_t fail_at;
    for (fail_at = 1;; fail_at++) {
        nb_test_alloc a = {.fail_at = fail_at};
        nb_set_alloc_hook(nb_test_alloc_hook, &a);
        uint8_t *out;
        size_t n;
        nb_clear_error();
        int err = nb_inflate(text_gz, sizeof text_gz, &out, &n, NULL);
        nb_set_alloc_hook(NULL, NULL);
        if (err == 0) { /* a failed shrink of the buffer is no failure */
            cr_assert(n == want_n && memcmp(out, want, n) == 0);
            nb_free(out);
            if (!a.fired) break;
            continue;
        }
        EXPECT_ERROR("nb_inflate: ", "out of memory");
    }
    cr_expect_geq(fail_at, 3);
}
