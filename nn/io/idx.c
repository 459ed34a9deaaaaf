/* idx.c — the IDX format of MNIST and Fashion-MNIST (Yann LeCun's page
 * describes it): a 4-byte big-endian magic whose third byte is the element
 * type (0x08, unsigned byte) and whose fourth is the number of dimensions,
 * then each dimension as a big-endian uint32, then the elements. Images are
 * 0x00000803 [N, rows, cols], labels 0x00000801 [N].
 *
 * The files are distributed gzip-compressed; the reader inflates them when
 * their first bytes say so. Everything the header claims is checked against
 * the bytes actually there before anything is allocated, so a corrupt
 * header is a message, not a huge allocation or a read past the end.
 */
#include "io_internal.h"

#include <string.h>

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Parses IDX bytes (already inflated) that must carry the given magic. */
static nb_tensor *parse(const char *who, const uint8_t *d, size_t n, const char *name,
                        uint32_t magic, bool raw, int64_t num_classes) {
    const char *kind = magic == NB_IDX_IMAGES ? "images" : "labels";
    if (n < 4) {
        nb_set_error("%s: %s:0: %zu bytes is too short for an IDX header", who, name, n);
        return NULL;
    }
    uint32_t m = be32(d);
    if (m != magic) {
        const char *hint = m == NB_IDX_IMAGES ? " (an images file)"
                           : m == NB_IDX_LABELS ? " (a labels file)"
                           : (m >> 16) != 0 ? " (not an IDX file)" : "";
        nb_set_error("%s: %s:0: magic 0x%08x%s, expected 0x%08x for IDX %s", who, name,
                     (unsigned)m, hint, (unsigned)magic, kind);
        return NULL;
    }
    int ndim = (int)(magic & 0xff);
    size_t header = 4 + 4 * (size_t)ndim;
    if (n < header) {
        nb_set_error("%s: %s:%zu: the header ends early (%d dimensions need %zu bytes)", who, name,
                     n, ndim, header);
        return NULL;
    }
    int64_t shape[3];
    uint64_t count = 1;
    for (int i = 0; i < ndim; i++) {
        uint32_t dim = be32(d + 4 + 4 * i);
        if (dim && count > (uint64_t)INT64_MAX / 4 / dim) {
            nb_set_error("%s: %s:%d: dimensions overflow (dimension %d is %u)", who, name,
                         4 + 4 * i, i, (unsigned)dim);
            return NULL;
        }
        shape[i] = dim;
        count *= dim;
    }
    size_t have = n - header;
    if (count > have) {
        char s[96];
        nb_set_error("%s: %s:%zu: the header claims %s, %llu bytes of data, but the file has %zu",
                     who, name, header, nb_shape_str(ndim, shape, s, sizeof s),
                     (unsigned long long)count, have);
        return NULL;
    }
    if (count < have) {
        nb_set_error("%s: %s:%zu: %zu bytes after the data the header announces", who, name,
                     header + (size_t)count, have - (size_t)count);
        return NULL;
    }
    const uint8_t *v = d + header;
    if (num_classes > 0)
        for (size_t i = 0; i < count; i++)
            if (v[i] >= num_classes) {
                nb_set_error("%s: %s:%zu: label %d of sample %zu is out of range [0, %lld)", who,
                             name, header + i, v[i], i, (long long)num_classes);
                return NULL;
            }
    nb_tensor *t = nb_empty(ndim, shape);
    if (!t) {
        nb_set_error("%s: %s: out of memory for %llu values", who, name, (unsigned long long)count);
        return NULL;
    }
    float *out = nb_data_mut(t);
    for (size_t i = 0; i < count; i++) out[i] = raw ? (float)v[i] : (float)v[i] / 255.0f;
    return t;
}

/* Inflates gzip data first, then parses; messages name the data "name"
 * or, once inflated, "name (decompressed)". */
static nb_tensor *parse_any(const char *who, const void *data, size_t size, const char *name,
                            uint32_t magic, bool raw, int64_t num_classes) {
    if (!name) name = "(memory)";
    if (!data && size) {
        nb_set_error("%s: %s: data is NULL", who, name);
        return NULL;
    }
    if (num_classes < 0) {
        nb_set_error("%s: %s: num_classes is %lld (0 means no check)", who, name,
                     (long long)num_classes);
        return NULL;
    }
    if (!nb__is_gzip(data, size)) return parse(who, data, size, name, magic, raw, num_classes);
    uint8_t *plain;
    size_t n;
    if (nb__inflate(who, data, size, &plain, &n, &(nb_inflate_opts){.name = name})) return NULL;
    char inflated[512];
    snprintf(inflated, sizeof inflated, "%s (decompressed)", name);
    nb_tensor *t = parse(who, plain, n, inflated, magic, raw, num_classes);
    nb_free(plain);
    return t;
}

static nb_tensor *read_file(const char *who, const char *path, uint32_t magic, bool raw,
                            int64_t num_classes) {
    uint8_t *data;
    size_t size;
    if (nb__read_file(who, path, &data, &size)) return NULL;
    nb_tensor *t = parse_any(who, data, size, path, magic, raw, num_classes);
    nb_free(data);
    return t;
}

nb_tensor *nb_read_idx_images(const char *path, bool raw) {
    return read_file("nb_read_idx_images", path, NB_IDX_IMAGES, raw, 0);
}

nb_tensor *nb_read_idx_labels(const char *path, int64_t num_classes) {
    return read_file("nb_read_idx_labels", path, NB_IDX_LABELS, true, num_classes);
}

nb_tensor *nb_parse_idx_images(const void *data, size_t size, const char *name, bool raw) {
    return parse_any("nb_parse_idx_images", data, size, name, NB_IDX_IMAGES, raw, 0);
}

nb_tensor *nb_parse_idx_labels(const void *data, size_t size, const char *name,
                               int64_t num_classes) {
    return parse_any("nb_parse_idx_labels", data, size, name, NB_IDX_LABELS, true, num_classes);
}
