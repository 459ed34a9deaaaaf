/* test_safetensors.c — the safetensors reader and writer (nn/io/safetensors.c):
 * a round trip with metadata, the exact bytes the reference writer would
 * produce, the dtypes converted on reading, every kind of bad header with
 * its message and byte offset, every truncation of a good file, and
 * writes that fail leaving the old file in place.
 */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

TestSuite(safetensors, NB_TEST_HOOKS);

/* A file of the given header (not padded) and data; *size its length. */
static uint8_t *make(const char *header, const void *data, size_t n, size_t *size) {
    size_t h = strlen(header);
    uint8_t *b = malloc(8 + h + n + 1);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(b + 8, header, h);
    if (n) memcpy(b + 8 + h, data, n);
    *size = 8 + h + n;
    return b;
}

static char dir[64];

static void make_dir(void) {
    strcpy(dir, "/tmp/nb_test_st_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

/* Removes every file in dir, then dir; returns how many files there were. */
static int remove_dir(void) {
    DIR *d = opendir(dir);
    int count = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
        count++;
    }
    if (d) closedir(d);
    rmdir(dir);
    return count;
}

static uint8_t *slurp(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    uint8_t *b = malloc(1 << 16);
    *size = fread(b, 1, 1 << 16, f);
    fclose(f);
    return b;
}

Test(safetensors, round_trip_in_reference_order) {
    make_dir();
    char path[128];
    snprintf(path, sizeof path, "%s/t.safetensors", dir);
    nb_tensor *b = nb_from_array(NB_SHAPE(2), (float[]){1.5f, -2});
    nb_tensor *a = nb_from_array(NB_SHAPE(1, 1), (float[]){3});
    const char *names[] = {"b", "a"};
    const char *meta[] = {"k", "v\"\n", NULL};
    cr_assert_eq(nb_safetensors_write(path, 2, names, (nb_tensor *[]){b, a}, meta), 0, "%s", nb_error());
    size_t size;
    uint8_t *bytes = slurp(path, &size);
    const char *want = "{\"__metadata__\":{\"k\":\"v\\\"\\n\"},\"a\":{\"dtype\":\"F32\",\"shape\":[1,1],"
                       "\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}";
    size_t h = bytes[0] | (size_t)bytes[1] << 8;
    cr_assert_eq(h % 8, 0, "header length %zu is not a multiple of 8", h);
    cr_assert(h >= strlen(want) && h < strlen(want) + 8);
    cr_assert(memcmp(bytes + 8, want, strlen(want)) == 0, "header: %.*s", (int)h, bytes + 8);
    for (size_t i = strlen(want); i < h; i++) cr_assert_eq(bytes[8 + i], ' ');
    cr_assert_eq(size, 8 + h + 12);
    float data[3];
    memcpy(data, bytes + 8 + h, 12);
    cr_assert(data[0] == 3 && data[1] == 1.5f && data[2] == -2);
    free(bytes);

    nb_safetensors *st = nb_safetensors_read(path);
    cr_assert_not_null(st, "%s", nb_error());
    cr_assert_eq(nb_safetensors_count(st), 2);
    cr_assert_str_eq(nb_safetensors_name(st, 0), "a");
    cr_assert_str_eq(nb_safetensors_dtype(st, 1), "F32");
    cr_assert_str_eq(nb_safetensors_metadata(st, "k"), "v\"\n");
    cr_assert_null(nb_safetensors_metadata(st, "nope"));
    EXPECT_SHAPE(nb_safetensors_get(st, "b"), 2);
    EXPECT_VALUES(nb_safetensors_get(st, "b"), 0, 1.5f, -2);
    cr_assert_null(nb_safetensors_get(st, "c"));
    EXPECT_ERROR("nb_safetensors_get", "no tensor named 'c'");
    nb_safetensors_free(st);
    cr_assert_eq(remove_dir(), 1, "a temporary file was left behind");
}

Test(safetensors, scalar_empty_and_converted_dtypes) {
    /* F64 1.5, -2; F16 1.0 and the smallest subnormal; BF16 1.0, -2.0 */
    uint8_t data[24];
    double d[2] = {1.5, -2};
    uint16_t f16[2] = {0x3c00, 0x0001}, bf16[2] = {0x3f80, 0xc000};
    memcpy(data, d, 16);
    memcpy(data + 16, f16, 4);
    memcpy(data + 20, bf16, 4);
    size_t size;
    uint8_t *f = make("{\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},"
                      "\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[16,20]},"
                      "\"c\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[20,24]},"
                      "\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[24,24]}}",
                      data, 24, &size);
    nb_safetensors *st = nb_safetensors_parse(f, size, "mem");
    cr_assert_not_null(st, "%s", nb_error());
    EXPECT_VALUES(nb_safetensors_get(st, "a"), 0, 1.5f, -2);
    EXPECT_VALUES(nb_safetensors_get(st, "b"), 0, 1, 5.9604645e-8f);
    EXPECT_SHAPE(nb_safetensors_get(st, "c"), 1, 2);
    EXPECT_VALUES(nb_safetensors_get(st, "c"), 0, 1, -2);
    EXPECT_SHAPE(nb_safetensors_get(st, "e"), 0, 3);
    nb_safetensors_free(st);
    free(f);
    float one = 7;
    f = make("{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", &one, 4, &size);
    st = nb_safetensors_parse(f, size, "mem");
    cr_assert_not_null(st, "%s", nb_error());
    cr_assert_eq(nb_ndim(nb_safetensors_get(st, "s")), 0);
    nb_safetensors_free(st);
    free(f);
}

/* Parses header + n zero bytes; expects failure with every fragment. */
static void bad(const char *header, size_t n, const char *frag1, const char *frag2) {
    uint8_t zeros[64] = {0};
    size_t size;
    uint8_t *f = make(header, zeros, n, &size);
    nb_clear_error();
    nb_safetensors *st = nb_safetensors_parse(f, size, "bad.st");
    free(f);
    cr_assert_null(st, "accepted: %s", header);
    EXPECT_ERROR("nb_safetensors_parse: bad.st:", frag1, frag2);
}

#define T(name, shape, off) "\"" name "\":{\"dtype\":\"F32\",\"shape\":" shape ",\"data_offsets\":" off "}"

Test(safetensors, bad_headers_name_file_and_offset) {
    bad("{" T("a", "[1]", "[0,4]") "," T("a", "[1]", "[4,8]") "}", 8, "duplicate tensor name 'a'", ":62:");
    bad("{" T("a", "[2]", "[0,8]") "," T("b", "[1]", "[4,8]") "}", 8, "overlap", "'b'");
    bad("{" T("a", "[1]", "[0,4]") "," T("b", "[1]", "[8,12]") "}", 12, "unused", "'b'");
    bad("{" T("a", "[1]", "[0,4]") "}", 8, "cover 4 bytes of the 8-byte data section", ":");
    bad("{" T("a", "[1]", "[0,4]") "}", 2, "out of range", "'a'");
    bad("{" T("a", "[2]", "[0,4]") "}", 4, "needs 8 bytes", "'a'");
    bad("{" T("a", "[-1]", "[0,4]") "}", 4, "expected a non-negative integer", ":");
    bad("{" T("a", "[1.5]", "[0,4]") "}", 4, "fraction", ":");
    bad("{" T("a", "[01]", "[0,4]") "}", 4, "leading zero", ":");
    bad("{" T("a", "[1,1,1,1,1,1,1,1,1]", "[0,4]") "}", 4, "more than 8", "shape");
    bad("{" T("a", "[1]", "[0]") "}", 4, "[begin, end]", "'a'");
    bad("{" T("a", "[1]", "[0,4]") "} x", 4, "unexpected bytes after", ":63:");
    bad("{\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "unsupported dtype 'I64'", ":22:");
    bad("{\"a\":{\"dtype\":\"Q7\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype 'Q7'", ":");
    bad("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "has no \"dtype\"", ":9:");
    bad("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "duplicate key", ":");
    bad("{\"a\":{\"dtype\":\"F32\",\"x\":1,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown key 'x'", ":");
    bad("{\"__metadata__\":{\"k\":1}}", 0, "not a string", ":");
    bad("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, "duplicate metadata key", ":");
    bad("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate \"__metadata__\"", ":");
    bad("{\"a\\u0000\":{}}", 0, "\\u0000", ":");
    bad("{\"a\\ud800\":{}}", 0, "surrogate", ":");
    bad("{\"a\xff\":{}}", 0, "UTF-8", ":");
    bad("{\"a\n\":{}}", 0, "control character", ":");
    bad("{\"__metadata__\":{}", 0, "header ends", ":26:");
    bad("[]", 0, "expected '{'", ":8:");
    bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,99999999999999999999]}}", 4, "too large", ":");

    /* a header length past the end of the file, and a file too short */
    uint8_t f[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}'};
    cr_assert_null(nb_safetensors_parse(f, 10, "short.st"));
    EXPECT_ERROR("nb_safetensors_parse: short.st:0:", "header length 65535", "rest of the file (2 bytes)");
    cr_assert_null(nb_safetensors_parse(f, 5, "tiny.st"));
    EXPECT_ERROR("nb_safetensors_parse: tiny.st:0:", "shorter than the 8-byte");
    cr_assert_null(nb_safetensors_read("/nonexistent/x.safetensors"));
    EXPECT_ERROR("nb_safetensors_read: /nonexistent/x.safetensors: cannot open");
}

Test(safetensors, every_truncation_is_an_error) {
    float data[6] = {1, 2, 3, 4, 5, 6};
    size_t size;
    uint8_t *f = make("{\"__metadata__\":{\"k\":\"v\"}," T("w", "[2,2]", "[0,16]") "," T("b", "[2]", "[16,24]") "}",
                      data, 24, &size);
    nb_safetensors *st = nb_safetensors_parse(f, size, "whole");
    cr_assert_not_null(st, "%s", nb_error());
    nb_safetensors_free(st);
    for (size_t n = 0; n < size; n++) {
        uint8_t *cut = malloc(n ? n : 1);
        memcpy(cut, f, n);
        cr_assert_null(nb_safetensors_parse(cut, n, "cut"), "a file cut to %zu bytes was accepted", n);
        free(cut);
    }
    free(f);
}

Test(safetensors, failed_writes_leave_the_old_file) {
    make_dir();
    char path[128];
    snprintf(path, sizeof path, "%s/t.safetensors", dir);
    nb_tensor *a = nb_from_array(NB_SHAPE(2), (float[]){1, 2});
    cr_assert_eq(nb_safetensors_write(path, 1, (const char *[]){"a"}, &a, NULL), 0, "%s", nb_error());
    /* bad arguments: nothing written */
    cr_assert_eq(nb_safetensors_write(path, 2, (const char *[]){"a", "a"}, (nb_tensor *[]){a, a}, NULL), -1);
    EXPECT_ERROR("duplicate tensor name 'a'");
    cr_assert_eq(nb_safetensors_write(path, 1, (const char *[]){"__metadata__"}, &a, NULL), -1);
    EXPECT_ERROR("reserved");
    cr_assert_eq(nb_safetensors_write(path, 1, (const char *[]){"b"}, &a, (const char *[]){"k", NULL}), -1);
    EXPECT_ERROR("metadata key 'k' has a NULL value");
    cr_assert_eq(nb_safetensors_write("/nonexistent/dir/x", 1, (const char *[]){"a"}, &a, NULL), -1);
    EXPECT_ERROR("nb_safetensors_write: /nonexistent/dir/x: cannot create a temporary file");
    nb_safetensors *st = nb_safetensors_read(path);
    cr_assert_not_null(st, "%s", nb_error());
    cr_assert_eq(nb_safetensors_find(st, "a"), 0);
    nb_safetensors_free(st);
    cr_assert_eq(remove_dir(), 1);
}
