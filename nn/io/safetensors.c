/* safetensors.c — reading and writing the safetensors format (Hugging Face's
 * tensor file, which PyTorch, JAX and Keras users exchange weights in):
 *
 *     8 bytes   N, the header length, little-endian u64
 *     N bytes   a JSON object: {"__metadata__": {"k": "v", ...},
 *               "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, ...}
 *     the rest  the tensors' raw little-endian bytes, offsets relative to here
 *
 * The header is parsed by the small strict JSON reader below rather than a
 * general one: it accepts exactly the shape of header the format allows,
 * and every departure (a duplicate name, offsets that overlap, leave a gap
 * or run past the data, a dtype it cannot read, a malformed shape, bytes
 * after the object) is an error naming the file and the byte offset. F32 is
 * read as is; F64, F16 and BF16 are converted to float32 on reading.
 *
 * The writer follows the reference implementation (safetensors' Rust
 * serialize): "__metadata__" first, then the tensors sorted by dtype
 * alignment, largest first, then by name (with F32 only, by name), data in
 * that order, the header padded with spaces to a multiple of 8. A file that
 * replaces another is written atomically (nb__atomic_begin, file.c): to a
 * temporary file in the same folder, flushed and fsync'ed, renamed over
 * the target, the folder fsync'ed; on any failure the old file is left as
 * it was.
 */
#include "io_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HEADER ((uint64_t)100 << 20) /* the reference reader's limit */

typedef enum { DT_F32, DT_F64, DT_F16, DT_BF16 } dtype;
static const char *const dtype_names[] = {"F32", "F64", "F16", "BF16"};
static const int dtype_sizes[] = {4, 8, 2, 2};

typedef struct entry {
    char *name;
    dtype type;
    int ndim;
    int64_t shape[NB_MAX_DIMS];
    uint64_t begin, end;
    size_t at; /* offset of the entry's key in the file, for messages */
} entry;

struct nb_safetensors {
    char *file;            /* what messages call it */
    uint8_t *bytes;        /* the whole file */
    size_t size;
    const uint8_t *data;   /* the data section */
    size_t data_size;
    int n, cap;
    entry *entries;
    int nmeta, meta_cap;
    char **meta_keys, **meta_values;
};

/* ---- helpers -------------------------------------------------------------- */

static char *dup_string(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = nb_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static uint64_t read_u64le(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static bool host_is_le(void) {
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

void nb_safetensors_free(nb_safetensors *st) {
    if (!st) return;
    for (int i = 0; i < st->n; i++) nb_free(st->entries[i].name);
    for (int i = 0; i < st->nmeta; i++) {
        nb_free(st->meta_keys[i]);
        nb_free(st->meta_values[i]);
    }
    nb_free(st->entries);
    nb_free(st->meta_keys);
    nb_free(st->meta_values);
    nb_free(st->bytes);
    nb_free(st->file);
    nb_free(st);
}

/* ---- the header parser ----------------------------------------------------- */

typedef struct parser {
    const char *who;
    nb_safetensors *st;
    const uint8_t *p; /* the header */
    size_t n, pos;
    bool failed;
} parser;

static void fail_at(parser *ps, size_t pos, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* "who: file:offset: what", offset counted from the start of the file. */
static void fail_at(parser *ps, size_t pos, const char *fmt, ...) {
    if (ps->failed) return;
    ps->failed = true;
    char what[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    nb_set_error("%s: %s:%zu: %s", ps->who, ps->st->file, pos + 8, what);
}

static void skip_ws(parser *ps) {
    while (ps->pos < ps->n) {
        uint8_t c = ps->p[ps->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        ps->pos++;
    }
}

static bool expect(parser *ps, char c) {
    skip_ws(ps);
    if (ps->pos < ps->n && ps->p[ps->pos] == (uint8_t)c) {
        ps->pos++;
        return true;
    }
    if (ps->pos >= ps->n) fail_at(ps, ps->pos, "the header ends where '%c' was expected", c);
    else fail_at(ps, ps->pos, "expected '%c', found '%c'", c, ps->p[ps->pos] >= 32 && ps->p[ps->pos] < 127 ? ps->p[ps->pos] : '?');
    return false;
}

/* Peeks at the next non-blank byte (0 at the end). */
static uint8_t peek(parser *ps) {
    skip_ws(ps);
    return ps->pos < ps->n ? ps->p[ps->pos] : 0;
}

static int hex(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static size_t put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | (cp >> 6 & 0x3F)); o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the well-formed UTF-8 sequence at p (n bytes left), or 0. */
static size_t utf8_len(const uint8_t *p, size_t n) {
    uint8_t c = p[0];
    size_t len;
    uint32_t cp, min;
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; min = 0x10000; }
    else return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

/* A JSON string, decoded into a new nb_malloc buffer (NUL-terminated); a
 * string holding "\u0000" is refused, since names are C strings. */
static char *parse_string(parser *ps) {
    if (!expect(ps, '"')) return NULL;
    size_t start = ps->pos;
    /* decoded is never longer than the source */
    size_t end = start;
    while (end < ps->n && ps->p[end] != '"') end += ps->p[end] == '\\' ? 2 : 1;
    size_t cap = (end > ps->n ? ps->n : end) - start + 1;
    char *out = nb_malloc(cap), *o = out;
    if (!out) {
        fail_at(ps, start, "out of memory");
        return NULL;
    }
    while (ps->pos < ps->n) {
        uint8_t c = ps->p[ps->pos];
        if (c == '"') {
            ps->pos++;
            *o = '\0';
            return out;
        }
        if (c < 0x20) {
            fail_at(ps, ps->pos, "control character 0x%02x inside a string", c);
            break;
        }
        if (c != '\\') {
            size_t len = utf8_len(ps->p + ps->pos, ps->n - ps->pos);
            if (!len) {
                fail_at(ps, ps->pos, "invalid UTF-8 inside a string");
                break;
            }
            memcpy(o, ps->p + ps->pos, len);
            o += len;
            ps->pos += len;
            continue;
        }
        size_t at = ps->pos;
        if (ps->pos + 1 >= ps->n) break;
        uint8_t e = ps->p[ps->pos + 1];
        ps->pos += 2;
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            *o++ = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"];
            continue;
        }
        if (e != 'u') {
            fail_at(ps, at, "invalid escape '\\%c' in a string", e >= 32 && e < 127 ? e : '?');
            break;
        }
        uint32_t cp = 0;
        for (int k = 0; k < 4; k++) {
            int h = ps->pos < ps->n ? hex(ps->p[ps->pos]) : -1;
            if (h < 0) {
                fail_at(ps, at, "invalid \\u escape in a string");
                nb_free(out);
                return NULL;
            }
            cp = cp << 4 | (uint32_t)h;
            ps->pos++;
        }
        if (cp >= 0xD800 && cp <= 0xDBFF) { /* a surrogate pair */
            uint32_t lo = 0;
            bool ok = ps->pos + 6 <= ps->n && ps->p[ps->pos] == '\\' && ps->p[ps->pos + 1] == 'u';
            for (int k = 0; ok && k < 4; k++) {
                int h = hex(ps->p[ps->pos + 2 + (size_t)k]);
                ok = h >= 0;
                lo = lo << 4 | (uint32_t)(h < 0 ? 0 : h);
            }
            if (!ok || lo < 0xDC00 || lo > 0xDFFF) {
                fail_at(ps, at, "unpaired surrogate in a \\u escape");
                break;
            }
            ps->pos += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if ((cp >= 0xDC00 && cp <= 0xDFFF) || cp == 0) {
            fail_at(ps, at, cp ? "unpaired surrogate in a \\u escape" : "\\u0000 in a string");
            break;
        }
        o += put_utf8(o, cp);
    }
    if (!ps->failed) fail_at(ps, start - 1, "unterminated string");
    nb_free(out);
    return NULL;
}

/* A non-negative integer without sign, fraction or exponent. */
static bool parse_uint(parser *ps, uint64_t *v) {
    skip_ws(ps);
    size_t start = ps->pos;
    *v = 0;
    while (ps->pos < ps->n && ps->p[ps->pos] >= '0' && ps->p[ps->pos] <= '9') {
        unsigned d = ps->p[ps->pos] - '0';
        if (*v > (UINT64_MAX - d) / 10) {
            fail_at(ps, start, "integer too large");
            return false;
        }
        *v = *v * 10 + d;
        ps->pos++;
    }
    if (ps->pos == start) {
        fail_at(ps, start, "expected a non-negative integer");
        return false;
    }
    if (ps->p[start] == '0' && ps->pos - start > 1) {
        fail_at(ps, start, "integer with a leading zero");
        return false;
    }
    uint8_t c = ps->pos < ps->n ? ps->p[ps->pos] : 0;
    if (c == '.' || c == 'e' || c == 'E') {
        fail_at(ps, start, "expected an integer, found a fraction or exponent");
        return false;
    }
    return true;
}

/* [u, u, ...] into out (at most max values); *count how many. */
static bool parse_uint_array(parser *ps, uint64_t *out, int max, int *count, const char *what) {
    *count = 0;
    size_t at = (skip_ws(ps), ps->pos);
    if (!expect(ps, '[')) return false;
    if (peek(ps) == ']') {
        ps->pos++;
        return true;
    }
    for (;;) {
        uint64_t v;
        if (!parse_uint(ps, &v)) return false;
        if (*count == max) {
            fail_at(ps, at, "%s has more than %d entries", what, max);
            return false;
        }
        out[(*count)++] = v;
        uint8_t c = peek(ps);
        if (c == ',') {
            ps->pos++;
            continue;
        }
        return expect(ps, ']');
    }
}

static bool grow(void **p, int *cap, int need, size_t elem) {
    if (need <= *cap) return true;
    int cap2 = *cap ? *cap * 2 : 8;
    void *q = nb_realloc(*p, (size_t)cap2 * elem);
    if (!q) return false;
    *p = q;
    *cap = cap2;
    return true;
}

static bool parse_metadata(parser *ps) {
    nb_safetensors *st = ps->st;
    if (!expect(ps, '{')) return false;
    if (peek(ps) == '}') {
        ps->pos++;
        return true;
    }
    for (;;) {
        size_t at = (skip_ws(ps), ps->pos);
        char *key = parse_string(ps);
        if (!key) return false;
        for (int i = 0; i < st->nmeta; i++)
            if (strcmp(st->meta_keys[i], key) == 0) {
                fail_at(ps, at, "duplicate metadata key '%.64s'", key);
                nb_free(key);
                return false;
            }
        if (!expect(ps, ':')) {
            nb_free(key);
            return false;
        }
        if (peek(ps) != '"') {
            fail_at(ps, ps->pos, "the value of metadata key '%.64s' is not a string", key);
            nb_free(key);
            return false;
        }
        char *value = parse_string(ps);
        if (!value) {
            nb_free(key);
            return false;
        }
        int c1 = st->meta_cap, c2 = st->meta_cap;
        if (!grow((void **)&st->meta_keys, &c1, st->nmeta + 1, sizeof(char *)) ||
            !grow((void **)&st->meta_values, &c2, st->nmeta + 1, sizeof(char *))) {
            /* one of the two may have grown: keep the smaller capacity */
            st->meta_cap = c1 < c2 ? c1 : c2;
            fail_at(ps, at, "out of memory");
            nb_free(key);
            nb_free(value);
            return false;
        }
        st->meta_cap = c1 < c2 ? c1 : c2;
        st->meta_keys[st->nmeta] = key;
        st->meta_values[st->nmeta++] = value;
        uint8_t c = peek(ps);
        if (c == ',') {
            ps->pos++;
            continue;
        }
        return expect(ps, '}');
    }
}

static bool parse_dtype(parser *ps, dtype *t) {
    size_t at = (skip_ws(ps), ps->pos);
    char *s = parse_string(ps);
    if (!s) return false;
    for (int k = 0; k < 4; k++)
        if (strcmp(s, dtype_names[k]) == 0) {
            *t = (dtype)k;
            nb_free(s);
            return true;
        }
    const char *known[] = {"BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64",
                           "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64"};
    bool other = false;
    for (size_t k = 0; k < sizeof known / sizeof *known; k++) other |= strcmp(s, known[k]) == 0;
    fail_at(ps, at, "%s dtype '%.32s' (nabla reads F32, F64, F16 and BF16)",
            other ? "unsupported" : "unknown", s);
    nb_free(s);
    return false;
}

/* {"dtype": ..., "shape": [...], "data_offsets": [b, e]}, each key once. */
static bool parse_info(parser *ps, entry *e) {
    if (!expect(ps, '{')) return false;
    bool have[3] = {false, false, false};
    if (peek(ps) != '}')
        for (;;) {
            size_t at = (skip_ws(ps), ps->pos);
            char *key = parse_string(ps);
            if (!key) return false;
            int k = strcmp(key, "dtype") == 0 ? 0 : strcmp(key, "shape") == 0 ? 1
                    : strcmp(key, "data_offsets") == 0 ? 2 : -1;
            if (k < 0) fail_at(ps, at, "unknown key '%.32s' in the entry of tensor '%.64s'", key, e->name);
            else if (have[k]) fail_at(ps, at, "duplicate key '%s' in the entry of tensor '%.64s'", key, e->name);
            nb_free(key);
            if (ps->failed || !expect(ps, ':')) return false;
            have[k] = true;
            if (k == 0 && !parse_dtype(ps, &e->type)) return false;
            if (k == 1) {
                uint64_t dims[NB_MAX_DIMS];
                size_t sat = (skip_ws(ps), ps->pos);
                if (!parse_uint_array(ps, dims, NB_MAX_DIMS, &e->ndim, "shape")) return false;
                for (int d = 0; d < e->ndim; d++) {
                    if (dims[d] > (uint64_t)INT64_MAX) {
                        fail_at(ps, sat, "shape dimension %d is too large", d);
                        return false;
                    }
                    e->shape[d] = (int64_t)dims[d];
                }
            }
            if (k == 2) {
                uint64_t off[2];
                int count;
                size_t oat = (skip_ws(ps), ps->pos);
                if (!parse_uint_array(ps, off, 2, &count, "data_offsets")) return false;
                if (count != 2) {
                    fail_at(ps, oat, "data_offsets of tensor '%.64s' must be [begin, end]", e->name);
                    return false;
                }
                e->begin = off[0];
                e->end = off[1];
            }
            uint8_t c = peek(ps);
            if (c == ',') {
                ps->pos++;
                continue;
            }
            if (!expect(ps, '}')) return false;
            break;
        }
    else
        ps->pos++;
    const char *keys[3] = {"dtype", "shape", "data_offsets"};
    for (int k = 0; k < 3; k++)
        if (!have[k]) {
            fail_at(ps, e->at, "tensor '%.64s' has no \"%s\"", e->name, keys[k]);
            return false;
        }
    return true;
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const entry *)a)->name, ((const entry *)b)->name);
}

static int by_offset(const void *a, const void *b) {
    const entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->at < y->at ? -1 : x->at > y->at;
}

/* Checks what the JSON grammar cannot: sizes agree with shapes, names are
 * unique, and the offsets tile the data section exactly. Leaves the
 * entries sorted by offset (file order). */
static bool check_entries(parser *ps) {
    nb_safetensors *st = ps->st;
    for (int i = 0; i < st->n; i++) {
        entry *e = &st->entries[i];
        uint64_t numel = 1;
        for (int d = 0; d < e->ndim; d++) {
            uint64_t s = (uint64_t)e->shape[d];
            if (s && numel > (uint64_t)INT64_MAX / s) {
                fail_at(ps, e->at, "tensor '%.64s': shape too large", e->name);
                return false;
            }
            numel *= s;
        }
        if (e->begin > e->end || e->end > st->data_size) {
            fail_at(ps, e->at, "tensor '%.64s': data_offsets [%llu, %llu] out of range (data section %zu bytes)",
                    e->name, (unsigned long long)e->begin, (unsigned long long)e->end, st->data_size);
            return false;
        }
        if (numel > (uint64_t)INT64_MAX / 8 || e->end - e->begin != numel * (uint64_t)dtype_sizes[e->type]) {
            char shape[128];
            nb_shape_str(e->ndim, e->shape, shape, sizeof shape);
            fail_at(ps, e->at, "tensor '%.64s': %s %s needs %llu bytes, data_offsets [%llu, %llu] hold %llu",
                    e->name, dtype_names[e->type], shape,
                    (unsigned long long)(numel * (uint64_t)dtype_sizes[e->type]), (unsigned long long)e->begin,
                    (unsigned long long)e->end, (unsigned long long)(e->end - e->begin));
            return false;
        }
    }
    if (st->n > 1) {
        qsort(st->entries, (size_t)st->n, sizeof *st->entries, by_name);
        for (int i = 1; i < st->n; i++)
            if (strcmp(st->entries[i].name, st->entries[i - 1].name) == 0) {
                size_t at = st->entries[i].at > st->entries[i - 1].at ? st->entries[i].at : st->entries[i - 1].at;
                fail_at(ps, at, "duplicate tensor name '%.64s'", st->entries[i].name);
                return false;
            }
        qsort(st->entries, (size_t)st->n, sizeof *st->entries, by_offset);
    }
    uint64_t expected = 0;
    for (int i = 0; i < st->n; i++) {
        entry *e = &st->entries[i];
        if (e->begin != expected) {
            if (e->begin < expected)
                fail_at(ps, e->at, "tensor '%.64s': data_offsets [%llu, %llu] overlap the previous tensor's data, "
                        "which ends at %llu", e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                        (unsigned long long)expected);
            else
                fail_at(ps, e->at, "tensor '%.64s': data_offsets [%llu, %llu] leave bytes %llu to %llu unused",
                        e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                        (unsigned long long)expected, (unsigned long long)e->begin);
            return false;
        }
        expected = e->end;
    }
    if (expected != st->data_size) {
        fail_at(ps, ps->n, "the tensors cover %llu bytes of the %zu-byte data section",
                (unsigned long long)expected, st->data_size);
        return false;
    }
    return true;
}

static bool parse_header(parser *ps) {
    nb_safetensors *st = ps->st;
    bool seen_meta = false;
    if (!expect(ps, '{')) return false;
    if (peek(ps) == '}') ps->pos++;
    else
        for (;;) {
            size_t at = (skip_ws(ps), ps->pos);
            char *key = parse_string(ps);
            if (!key) return false;
            if (!expect(ps, ':')) {
                nb_free(key);
                return false;
            }
            if (strcmp(key, "__metadata__") == 0) {
                nb_free(key);
                if (seen_meta) {
                    fail_at(ps, at, "duplicate \"__metadata__\"");
                    return false;
                }
                seen_meta = true;
                if (!parse_metadata(ps)) return false;
            } else {
                if (!grow((void **)&st->entries, &st->cap, st->n + 1, sizeof *st->entries)) {
                    nb_free(key);
                    fail_at(ps, at, "out of memory");
                    return false;
                }
                entry *e = &st->entries[st->n++];
                memset(e, 0, sizeof *e);
                e->name = key;
                e->at = at;
                if (!parse_info(ps, e)) return false;
            }
            uint8_t c = peek(ps);
            if (c == ',') {
                ps->pos++;
                continue;
            }
            if (!expect(ps, '}')) return false;
            break;
        }
    skip_ws(ps);
    if (ps->pos != ps->n) {
        fail_at(ps, ps->pos, "unexpected bytes after the header's JSON object");
        return false;
    }
    return check_entries(ps);
}

/* Takes bytes (an nb_malloc buffer of size bytes) in all cases. */
static nb_safetensors *parse_owned(const char *who, uint8_t *bytes, size_t size, const char *file) {
    nb_safetensors *st = nb_calloc(1, sizeof *st);
    char *name = dup_string(file);
    if (!st || !name) {
        nb_set_error("%s: %s: out of memory", who, file);
        nb_free(st);
        nb_free(name);
        nb_free(bytes);
        return NULL;
    }
    st->file = name;
    st->bytes = bytes;
    st->size = size;
    if (size < 8) {
        nb_set_error("%s: %s:0: the file is %zu bytes, shorter than the 8-byte header length", who, file, size);
        nb_safetensors_free(st);
        return NULL;
    }
    uint64_t n = read_u64le(bytes);
    if (n > size - 8 || n > MAX_HEADER) {
        nb_set_error("%s: %s:0: header length %llu is larger than the %s (%zu bytes)", who, file,
                     (unsigned long long)n, n > MAX_HEADER ? "100 MiB limit" : "rest of the file",
                     n > MAX_HEADER ? (size_t)MAX_HEADER : size - 8);
        nb_safetensors_free(st);
        return NULL;
    }
    if (n < 2) {
        nb_set_error("%s: %s:8: header of %llu bytes cannot hold a JSON object", who, file, (unsigned long long)n);
        nb_safetensors_free(st);
        return NULL;
    }
    st->data = bytes + 8 + n;
    st->data_size = size - 8 - (size_t)n;
    parser ps = {who, st, bytes + 8, (size_t)n, 0, false};
    if (!parse_header(&ps)) {
        nb_safetensors_free(st);
        return NULL;
    }
    return st;
}

nb_safetensors *nb_safetensors_parse(const void *data, size_t size, const char *name) {
    const char *who = "nb_safetensors_parse";
    name = name ? name : "(memory)";
    if (!data && size) {
        nb_set_error("%s: %s: data is NULL", who, name);
        return NULL;
    }
    uint8_t *copy = nb_malloc(size ? size : 1);
    if (!copy) {
        nb_set_error("%s: %s: out of memory", who, name);
        return NULL;
    }
    if (size) memcpy(copy, data, size);
    return parse_owned(who, copy, size, name);
}

nb_safetensors *nb__safetensors_read(const char *who, const char *path) {
    uint8_t *bytes;
    size_t size;
    if (nb__read_file(who, path, &bytes, &size) != 0) return NULL;
    return parse_owned(who, bytes, size, path);
}

nb_safetensors *nb_safetensors_read(const char *path) { return nb__safetensors_read("nb_safetensors_read", path); }

/* ---- queries ---------------------------------------------------------------- */

int nb_safetensors_count(const nb_safetensors *st) { return st ? st->n : 0; }

const char *nb_safetensors_name(const nb_safetensors *st, int i) {
    return st && i >= 0 && i < st->n ? st->entries[i].name : NULL;
}

int nb_safetensors_find(const nb_safetensors *st, const char *name) {
    for (int i = 0; st && name && i < st->n; i++)
        if (strcmp(st->entries[i].name, name) == 0) return i;
    return -1;
}

const char *nb_safetensors_dtype(const nb_safetensors *st, int i) {
    return st && i >= 0 && i < st->n ? dtype_names[st->entries[i].type] : NULL;
}

const int64_t *nb_safetensors_shape(const nb_safetensors *st, int i, int *ndim) {
    if (!st || i < 0 || i >= st->n) {
        if (ndim) *ndim = 0;
        return NULL;
    }
    if (ndim) *ndim = st->entries[i].ndim;
    return st->entries[i].shape;
}

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = h >> 10 & 0x1F, mant = h & 0x3FF, bits;
    if (exp == 0x1F) bits = sign | 0x7F800000u | mant << 13;
    else if (exp) bits = sign | (exp + 112) << 23 | mant << 13;
    else if (!mant) bits = sign;
    else { /* subnormal: normalise */
        int e = -1;
        do { mant <<= 1; e++; } while (!(mant & 0x400));
        bits = sign | (uint32_t)(112 - e) << 23 | (mant & 0x3FF) << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

int nb__safetensors_copy(const nb_safetensors *st, int i, float *out) {
    const entry *e = &st->entries[i];
    const uint8_t *src = st->data + e->begin;
    int64_t n = (int64_t)((e->end - e->begin) / (uint64_t)dtype_sizes[e->type]);
    for (int64_t k = 0; k < n; k++) {
        const uint8_t *b = src + k * dtype_sizes[e->type];
        switch (e->type) {
        case DT_F32: {
            uint32_t v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
            memcpy(&out[k], &v, 4);
            break;
        }
        case DT_F64: {
            uint64_t v = read_u64le(b);
            double d;
            memcpy(&d, &v, 8);
            out[k] = (float)d;
            break;
        }
        case DT_F16:
            out[k] = half_to_float((uint16_t)(b[0] | b[1] << 8));
            break;
        case DT_BF16: {
            uint32_t v = (uint32_t)(b[0] | b[1] << 8) << 16;
            memcpy(&out[k], &v, 4);
            break;
        }
        }
    }
    return 0;
}

nb_tensor *nb_safetensors_get(const nb_safetensors *st, const char *name) {
    if (!st || !name) return NULL;
    int i = nb_safetensors_find(st, name);
    if (i < 0) {
        nb_set_error("nb_safetensors_get: %s: no tensor named '%s'", st->file, name);
        return NULL;
    }
    nb_tensor *t = nb_empty(st->entries[i].ndim, st->entries[i].shape);
    if (!t) return NULL;
    nb__safetensors_copy(st, i, nb_data_mut(t));
    return t;
}

int nb_safetensors_num_metadata(const nb_safetensors *st) { return st ? st->nmeta : 0; }

const char *nb_safetensors_metadata_key(const nb_safetensors *st, int i) {
    return st && i >= 0 && i < st->nmeta ? st->meta_keys[i] : NULL;
}

const char *nb_safetensors_metadata(const nb_safetensors *st, const char *key) {
    for (int i = 0; st && key && i < st->nmeta; i++)
        if (strcmp(st->meta_keys[i], key) == 0) return st->meta_values[i];
    return NULL;
}

const char *nb__safetensors_file(const nb_safetensors *st) { return st->file; }

size_t nb__safetensors_entry_offset(const nb_safetensors *st, int i) { return st->entries[i].at + 8; }

/* ---- writing ------------------------------------------------------------------ */

typedef struct text {
    char *s;
    size_t len, cap;
    bool oom;
} text;

static void put(text *t, const char *s, size_t n) {
    if (t->oom) return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < t->len + n + 1) cap *= 2;
        char *s2 = nb_realloc(t->s, cap);
        if (!s2) {
            t->oom = true;
            return;
        }
        t->s = s2;
        t->cap = cap;
    }
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = '\0';
}

static void puts_(text *t, const char *s) { put(t, s, strlen(s)); }

static void put_json_string(text *t, const char *s) {
    put(t, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            put(t, esc, 2);
        } else if (c < 0x20) {
            const char *p = strchr("\b\f\n\r\t", c);
            if (c && p) {
                esc[0] = '\\';
                esc[1] = "bfnrt"[p - "\b\f\n\r\t"];
                put(t, esc, 2);
            } else {
                snprintf(esc, sizeof esc, "\\u%04x", c);
                put(t, esc, 6);
            }
        } else
            put(t, (const char *)&c, 1);
    }
    put(t, "\"", 1);
}

typedef struct out_tensor {
    const char *name;
    const nb_tensor *t;
} out_tensor;

static int out_by_name(const void *a, const void *b) {
    return strcmp(((const out_tensor *)a)->name, ((const out_tensor *)b)->name);
}

static bool write_all(FILE *f, const void *p, size_t n) { return n == 0 || fwrite(p, 1, n, f) == n; }

/* The float data of t, little-endian. */
static bool write_floats(FILE *f, const float *v, int64_t n) {
    if (host_is_le()) return write_all(f, v, sizeof(float) * (size_t)n);
    uint8_t buf[4096];
    for (int64_t k = 0; k < n;) {
        size_t m = 0;
        for (; m + 4 <= sizeof buf && k < n; k++, m += 4) {
            uint32_t b;
            memcpy(&b, &v[k], 4);
            for (int j = 0; j < 4; j++) buf[m + (size_t)j] = (uint8_t)(b >> (8 * j));
        }
        if (!write_all(f, buf, m)) return false;
    }
    return true;
}

int nb__safetensors_write(const char *who, const char *path, int n, const char *const *names,
                          nb_tensor *const *tensors, const char *const *metadata) {
    if (!path) {
        nb_set_error("%s: path is NULL", who);
        return -1;
    }
    if (n < 0 || (n > 0 && (!names || !tensors))) {
        nb_set_error("%s: %s: %d tensors, names %s, tensors %s", who, path, n, names ? "given" : "NULL",
                     tensors ? "given" : "NULL");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (!tensors[i]) return -1; /* a NULL tensor passes through: its maker set the message */
        if (!names[i] || !names[i][0] || strcmp(names[i], "__metadata__") == 0) {
            nb_set_error("%s: %s: tensor %d has %s name", who, path, i,
                         names[i] && names[i][0] ? "the reserved" : "an empty or NULL");
            return -1;
        }
    }
    size_t nmeta = 0;
    for (; metadata && metadata[2 * nmeta]; nmeta++)
        if (!metadata[2 * nmeta + 1]) {
            nb_set_error("%s: %s: metadata key '%s' has a NULL value", who, path, metadata[2 * nmeta]);
            return -1;
        }
    for (size_t i = 0; i < nmeta; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(metadata[2 * i], metadata[2 * j]) == 0) {
                nb_set_error("%s: %s: duplicate metadata key '%s'", who, path, metadata[2 * i]);
                return -1;
            }

    int rc = -1;
    text h = {0};
    out_tensor *order = nb_malloc(sizeof *order * (size_t)(n ? n : 1));
    if (!order) goto oom;
    for (int i = 0; i < n; i++) order[i] = (out_tensor){names[i], tensors[i]};
    qsort(order, (size_t)n, sizeof *order, out_by_name); /* all F32: dtype order is name order */
    for (int i = 1; i < n; i++)
        if (strcmp(order[i].name, order[i - 1].name) == 0) {
            nb_set_error("%s: %s: duplicate tensor name '%s'", who, path, order[i].name);
            goto done;
        }

    puts_(&h, "{");
    if (nmeta) {
        puts_(&h, "\"__metadata__\":{");
        for (size_t i = 0; i < nmeta; i++) {
            if (i) puts_(&h, ",");
            put_json_string(&h, metadata[2 * i]);
            puts_(&h, ":");
            put_json_string(&h, metadata[2 * i + 1]);
        }
        puts_(&h, "}");
    }
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        char buf[64];
        if (nmeta || i) puts_(&h, ",");
        put_json_string(&h, order[i].name);
        puts_(&h, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < nb_ndim(order[i].t); d++) {
            snprintf(buf, sizeof buf, "%s%lld", d ? "," : "", (long long)nb_shape(order[i].t)[d]);
            puts_(&h, buf);
        }
        uint64_t bytes = 4 * (uint64_t)nb_numel(order[i].t);
        snprintf(buf, sizeof buf, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
                 (unsigned long long)(offset + bytes));
        puts_(&h, buf);
        offset += bytes;
    }
    puts_(&h, "}");
    while (!h.oom && h.len % 8) puts_(&h, " ");
    if (h.oom) goto oom;

    nb__atomic_file af;
    if (nb__atomic_begin(who, path, &af) != 0) goto done;
    uint8_t len8[8];
    for (int k = 0; k < 8; k++) len8[k] = (uint8_t)((uint64_t)h.len >> (8 * k));
    bool ok = write_all(af.f, len8, 8) && write_all(af.f, h.s, h.len);
    for (int i = 0; ok && i < n; i++) ok = write_floats(af.f, nb_data(order[i].t), nb_numel(order[i].t));
    if (!ok) {
        nb_set_error("%s: %s: cannot write %s: %s", who, path, af.tmp, strerror(errno));
        nb__atomic_abort(&af);
        goto done;
    }
    if (nb__atomic_commit(who, &af) != 0) goto done;
    rc = 0;
    goto done;
oom:
    nb_set_error("%s: %s: out of memory", who, path);
done:
    nb_free(h.s);
    nb_free(order);
    return rc;
}

int nb_safetensors_write(const char *path, int n, const char *const *names, nb_tensor *const *tensors,
                         const char *const *metadata) {
    return nb__safetensors_write("nb_safetensors_write", path, n, names, tensors, metadata);
}
