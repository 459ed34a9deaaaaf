/* test_idx.c — the IDX reader (nn/io/idx.c): small files written here, raw
 * and gzip-compressed (a stored-block gzip wrapper made in the test), each
 * bad header with its message and offset, and the real Fashion-MNIST files
 * when the Debian package dataset-fashion-mnist is installed (the expected
 * sums and labels were computed from those files with Python's gzip).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

TestSuite(idx, NB_TEST_HOOKS);

#define FASHION "/usr/share/datasets/fashion-mnist/"

/* ---- making files ------------------------------------------------------------------- */

static void be32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i));
}

/* An IDX file in buf: magic, dims, then n data bytes. Returns its size. */
static size_t make_idx(uint8_t *buf, uint32_t magic, int ndim, const uint32_t *dims,
                       const uint8_t *data, size_t n) {
    be32(buf, magic);
    for (int i = 0; i < ndim; i++) be32(buf + 4 + 4 * i, dims[i]);
    if (n) memcpy(buf + 4 + 4 * ndim, data, n);
    return 4 + 4 * (size_t)ndim + n;
}

/* The same bytes as a gzip file with one stored block (n < 65536). */
static size_t make_gzip(uint8_t *out, const uint8_t *in, size_t n) {
    static const uint8_t header[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    memcpy(out, header, 10);
    uint8_t *p = out + 10;
    *p++ = 1; /* final, stored */
    *p++ = (uint8_t)n;
    *p++ = (uint8_t)(n >> 8);
    *p++ = (uint8_t)~n;
    *p++ = (uint8_t)(~n >> 8);
    memcpy(p, in, n);
    p += n;
    uint32_t crc = nb_crc32(0, in, n);
    for (int i = 0; i < 4; i++) *p++ = (uint8_t)(crc >> 8 * i);
    for (int i = 0; i < 4; i++) *p++ = (uint8_t)(n >> 8 * i);
    return (size_t)(p - out);
}

static char tmp_path[64];

/* Writes bytes to a fresh temporary file; the test unlinks it. */
static const char *write_tmp(const void *data, size_t n) {
    strcpy(tmp_path, "/tmp/nb_test_idx_XXXXXX");
    int fd = mkstemp(tmp_path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, data, n), (ssize_t)n);
    close(fd);
    return tmp_path;
}

static const uint8_t pixels[12] = {0, 51, 102, 153, 204, 255, 1, 2, 3, 4, 5, 6};
static const uint32_t two_2x3[3] = {2, 2, 3};

/* ---- good files --------------------------------------------------------------------- */

Test(idx, images_scaled_and_raw) {
    uint8_t f[64];
    size_t n = make_idx(f, NB_IDX_IMAGES, 3, two_2x3, pixels, 12);
    const char *path = write_tmp(f, n);
    nb_tensor *x = nb_read_idx_images(path, false);
    EXPECT_SHAPE(x, 2, 2, 3);
    EXPECT_VALUES(x, 1e-7, 0, 0.2f, 0.4f, 0.6f, 0.8f, 1, 1 / 255.f, 2 / 255.f, 3 / 255.f,
                  4 / 255.f, 5 / 255.f, 6 / 255.f);
    nb_tensor *r = nb_read_idx_images(path, true);
    EXPECT_VALUES(r, 0, 0, 51, 102, 153, 204, 255, 1, 2, 3, 4, 5, 6);
    unlink(path);
}

Test(idx, labels_are_cross_entropy_targets) {
    uint8_t f[32];
    size_t n = make_idx(f, NB_IDX_LABELS, 1, (uint32_t[]){3}, (const uint8_t[]){0, 9, 3}, 3);
    const char *path = write_tmp(f, n);
    nb_tensor *y = nb_read_idx_labels(path, 10);
    EXPECT_SHAPE(y, 3);
    EXPECT_VALUES(y, 0, 0, 9, 3);
    nb_tensor *logits = nb_zeros(NB_SHAPE(3, 10));
    nb_tensor *loss = nb_cross_entropy_loss(logits, y, NB_REDUCE_MEAN);
    cr_assert_not_null(loss, "%s", nb_error());
    cr_expect_float_eq(nb_item(loss), logf(10), 1e-5);
    cr_assert_not_null(nb_read_idx_labels(path, 0)); /* no check */
    unlink(path);
}

Test(idx, gzip_files_and_memory) {
    uint8_t f[64], gz[128];
    size_t n = make_idx(f, NB_IDX_IMAGES, 3, two_2x3, pixels, 12);
    size_t gn = make_gzip(gz, f, n);
    const char *path = write_tmp(gz, gn);
    nb_tensor *x = nb_read_idx_images(path, true);
    EXPECT_VALUES(x, 0, 0, 51, 102, 153, 204, 255, 1, 2, 3, 4, 5, 6);
    unlink(path);
    EXPECT_VALUES(nb_parse_idx_images(gz, gn, "mem", true), 0, 0, 51, 102, 153, 204, 255, 1, 2, 3,
                  4, 5, 6);
    EXPECT_VALUES(nb_parse_idx_images(f, n, NULL, true), 0, 0, 51, 102, 153, 204, 255, 1, 2, 3, 4,
                  5, 6);
}

Test(idx, empty_set) {
    uint8_t f[32];
    size_t n = make_idx(f, NB_IDX_IMAGES, 3, (uint32_t[]){0, 28, 28}, NULL, 0);
    EXPECT_SHAPE(nb_parse_idx_images(f, n, "empty", false), 0, 28, 28);
}

/* ---- bad files ---------------------------------------------------------------------- */

#define EXPECT_IMAGES_ERROR(data, n, ...)                                                \
    do {                                                                               \
        nb_clear_error();                                                              \
        cr_assert_null(nb_parse_idx_images((data), (n), "f.idx", false));              \
        EXPECT_ERROR("nb_parse_idx_images: f.idx:", __VA_ARGS__);                      \
    } while (0)

Test(idx, wrong_magic) {
    uint8_t f[64];
    size_t n = make_idx(f, NB_IDX_LABELS, 1, (uint32_t[]){2}, pixels, 2);
    EXPECT_IMAGES_ERROR(f, n, "f.idx:0: magic 0x00000801 (a labels file), expected 0x00000803 for IDX images");
    n = make_idx(f, NB_IDX_IMAGES, 3, two_2x3, pixels, 12);
    const char *path = write_tmp(f, n);
    cr_assert_null(nb_read_idx_labels(path, 10));
    EXPECT_ERROR("nb_read_idx_labels: ", path, ":0: magic 0x00000803 (an images file)");
    unlink(path);
    EXPECT_IMAGES_ERROR("P5\n28 28\n255\n", 13, ":0: magic 0x50350a32 (not an IDX file)");
    EXPECT_IMAGES_ERROR("\0\0\x08\x02", 4, ":0: magic 0x00000802, expected 0x00000803");
    EXPECT_IMAGES_ERROR("\0\0\x08", 3, ":0: 3 bytes is too short for an IDX header");
    EXPECT_IMAGES_ERROR("", 0, ":0: 0 bytes is too short");
}

Test(idx, header_and_data_sizes) {
    uint8_t f[64];
    size_t n = make_idx(f, NB_IDX_IMAGES, 3, two_2x3, pixels, 12);
    EXPECT_IMAGES_ERROR(f, 10, ":10: the header ends early (3 dimensions need 16 bytes)");
    EXPECT_IMAGES_ERROR(f, n - 1, ":16: the header claims [2,2,3], 12 bytes of data, but the file has 11");
    n = make_idx(f, NB_IDX_IMAGES, 3, (uint32_t[]){60000, 28, 28}, pixels, 12);
    EXPECT_IMAGES_ERROR(f, n, ":16: the header claims [60000,28,28], 47040000 bytes");
    n = make_idx(f, NB_IDX_IMAGES, 3, (uint32_t[]){1, 2, 3}, pixels, 12);
    EXPECT_IMAGES_ERROR(f, n, ":22: 6 bytes after the data the header announces");
    n = make_idx(f, NB_IDX_IMAGES, 3, (uint32_t[]){1, 0xffffffffu, 0xffffffffu}, pixels, 12);
    EXPECT_IMAGES_ERROR(f, n, ":12: dimensions overflow (dimension 2 is 4294967295)");
}

Test(idx, label_range) {
    uint8_t f[32];
    size_t n = make_idx(f, NB_IDX_LABELS, 1, (uint32_t[]){4}, (const uint8_t[]){1, 2, 10, 3}, 4);
    cr_assert_null(nb_parse_idx_labels(f, n, "l.idx", 10));
    EXPECT_ERROR("nb_parse_idx_labels: l.idx:10: label 10 of sample 2 is out of range [0, 10)");
    cr_assert_not_null(nb_parse_idx_labels(f, n, "l.idx", 11));
    cr_assert_null(nb_parse_idx_labels(f, n, "l.idx", -1));
    EXPECT_ERROR("num_classes is -1");
    uint8_t gz[64];
    size_t gn = make_gzip(gz, f, n);
    cr_assert_null(nb_parse_idx_labels(gz, gn, "l.gz", 10));
    EXPECT_ERROR("nb_parse_idx_labels: l.gz (decompressed):10: label 10");
}

Test(idx, corrupt_gzip_and_missing_files) {
    uint8_t f[64], gz[128];
    size_t n = make_idx(f, NB_IDX_IMAGES, 3, two_2x3, pixels, 12);
    size_t gn = make_gzip(gz, f, n);
    gz[gn - 6] ^= 1; /* CRC */
    const char *path = write_tmp(gz, gn);
    cr_assert_null(nb_read_idx_images(path, false));
    EXPECT_ERROR("nb_read_idx_images: ", path, "CRC-32 mismatch");
    unlink(path);
    cr_assert_null(nb_read_idx_images(path, false));
    EXPECT_ERROR("nb_read_idx_images: ", path, "cannot open");
    cr_assert_null(nb_read_idx_images(NULL, false));
    EXPECT_ERROR("path is NULL");
    cr_assert_null(nb_parse_idx_images(NULL, 5, NULL, false));
    EXPECT_ERROR("nb_parse_idx_images: (memory): data is NULL");
}

Test(idx, out_of_memory_at_every_allocation) {
    uint8_t f[64], gz[128];
    size_t n = make_idx(f, NB_IDX_IMAGES, 3, two_2x3, pixels, 12);
    size_t gn = make_gzip(gz, f, n);
    const char *path = write_tmp(gz, gn);
    nb_empty_cache();
    int64_t fail_at;
    for (fail_at = 1;; fail_at++) {
        nb_test_alloc a = {.fail_at = fail_at};
        nb_clear_error();
        nb_set_alloc_hook(nb_test_alloc_hook, &a);
        nb_tensor *x = nb_read_idx_images(path, true);
        nb_set_alloc_hook(NULL, NULL);
        if (x) {
            EXPECT_VALUES(x, 0, 0, 51, 102, 153, 204, 255, 1, 2, 3, 4, 5, 6);
            nb_release(nb_keep(x));
            if (!a.fired) break;
            continue;
        }
        EXPECT_ERROR("nb_read_idx_images: ", "out of memory");
        nb_empty_cache();
    }
    cr_expect_geq(fail_at, 4);
    unlink(path);
}

/* ---- the real data set -------------------------------------------------------------- */

static bool have_fashion(void) {
    if (access(FASHION "train-images-idx3-ubyte.gz", R_OK) == 0) return true;
    cr_skip_test("Fashion-MNIST is not installed in " FASHION " (apt-get install dataset-fashion-mnist)");
    return false;
}

static void check_set(const char *images, const char *labels, int64_t n, double pixel_sum,
                      const float *first_labels) {
    nb_tensor *x = nb_read_idx_images(images, true);
    EXPECT_SHAPE(x, n, 28, 28);
    double sum = 0;
    const float *px = nb_data(x);
    for (int64_t i = 0; i < nb_numel(x); i++) sum += px[i];
    cr_expect_eq(sum, pixel_sum, "sum of the pixels %.0f, expected %.0f", sum, pixel_sum);
    nb_tensor *y = nb_read_idx_labels(labels, 10);
    EXPECT_SHAPE(y, n);
    const float *py = nb_data(y);
    for (int i = 0; i < 10; i++) cr_expect_eq(py[i], first_labels[i], "label %d", i);
    int64_t count[10] = {0};
    for (int64_t i = 0; i < n; i++) count[(int)py[i]]++;
    for (int c = 0; c < 10; c++) cr_expect_eq(count[c], n / 10, "class %d has %lld samples", c, (long long)count[c]);
}

Test(idx, fashion_mnist_train, .timeout = 120) {
    if (!have_fashion()) return;
    check_set(FASHION "train-images-idx3-ubyte.gz", FASHION "train-labels-idx1-ubyte.gz", 60000,
              3431114169.0, (const float[]){9, 0, 0, 3, 0, 2, 7, 2, 5, 5});
    nb_tensor *x = nb_read_idx_images(FASHION "train-images-idx3-ubyte.gz", false);
    cr_assert_not_null(x);
    float lo = 1, hi = 0;
    const float *p = nb_data(x);
    for (int64_t i = 0; i < nb_numel(x); i++) {
        lo = p[i] < lo ? p[i] : lo;
        hi = p[i] > hi ? p[i] : hi;
    }
    cr_expect(lo == 0 && hi == 1, "pixels in [%g, %g], expected [0, 1]", (double)lo, (double)hi);
}

Test(idx, fashion_mnist_test, .timeout = 120) {
    if (!have_fashion()) return;
    check_set(FASHION "t10k-images-idx3-ubyte.gz", FASHION "t10k-labels-idx1-ubyte.gz", 10000,
              573469082.0, (const float[]){9, 2, 1, 1, 6, 1, 4, 6, 5, 7});
}
