/* inflate.c — a deflate decompressor (RFC 1951) with its two wrappers, zlib
 * (RFC 1950) and gzip (RFC 1952), and their checksums. nabla links nothing
 * but libc, and data sets are distributed as .gz files, so nabla inflates
 * them itself.
 *
 * The shape follows Mark Adler's puff.c, the reference decoder written to be
 * read: a bit reader, canonical Huffman codes built from code lengths, one
 * function per block type. Two things are added for speed: bits are loaded
 * 64 at a time, and each Huffman code has a 2^FAST_BITS table that decodes
 * any code of up to FAST_BITS bits in one look-up (longer codes, which are
 * rare, fall back to puff's bit-by-bit canonical decoding).
 *
 * Corrupt input is expected, not exceptional: every read is bounds-checked,
 * every count is validated before it is used, output is capped (a zip bomb
 * meets max_output, not the allocator), and each failure is reported once
 * with the input's name and the offset of the byte where it was found.
 */
#include "io_internal.h"

#include <pthread.h>
#include <stdarg.h>
#include <string.h>

#define MAX_BITS 15       /* longest code deflate allows */
#define MAX_LIT 288       /* literal/length symbols (286 and 287 never occur) */
#define MAX_DIST 32       /* distance symbols (30 and 31 never occur) */
#define FAST_BITS 10      /* codes this long or shorter decode in one look-up */

/* ---- checksums -------------------------------------------------------------------- */

/* Slicing-by-8 (Intel's method): crc_table[k][b] is the CRC of byte b
 * followed by k zero bytes, so eight input bytes take eight look-ups that
 * do not wait on each other, about four times the speed of one byte at a
 * time. */
static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int k = 1; k < 8; k++)
            crc_table[k][n] = crc_table[0][crc_table[k - 1][n] & 0xff] ^ (crc_table[k - 1][n] >> 8);
}

uint32_t nb_crc32(uint32_t crc, const void *data, size_t size) {
    pthread_once(&crc_once, crc_init);
    const uint8_t *p = data;
    crc = ~crc;
    for (; size >= 8; size -= 8, p += 8) {
        uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                             (uint32_t)p[3] << 24);
        crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
              crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^ crc_table[3][p[4]] ^
              crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
    }
    while (size--) crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

uint32_t nb_adler32(uint32_t adler, const void *data, size_t size) {
    const uint8_t *p = data;
    uint32_t a = adler & 0xffff, b = adler >> 16;
    while (size > 0) {
        /* 5552 is the most bytes whose sums cannot overflow 32 bits before the modulo */
        size_t n = size < 5552 ? size : 5552;
        size -= n;
        while (n--) {
            a += *p++;
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    return b << 16 | a;
}

/* ---- the decoder's state, bits and errors ------------------------------------------ */

typedef struct inflater {
    const char *who, *name;   /* for messages */
    const uint8_t *in;
    size_t size, pos;         /* pos: next byte to load into bits */
    uint64_t bits;            /* loaded, not yet consumed; the next bit is bit 0 */
    int nbits;
    uint8_t *out;
    size_t len, cap, max;     /* bytes written, allocated, allowed */
    size_t window;            /* where the current stream's output starts */
    bool failed;
} inflater;

/* The byte holding the next unread bit: where an error was found. */
static size_t offset_of(const inflater *z) { return z->pos - (size_t)(z->nbits + 7) / 8; }

static int fail_at(inflater *z, size_t offset, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static int fail_at(inflater *z, size_t offset, const char *fmt, ...) {
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (!z->failed) nb_set_error("%s: %s:%zu: %s", z->who, z->name, offset, what);
    z->failed = true;
    return -1;
}

static int truncated(inflater *z) {
    return fail_at(z, z->size, "truncated: the compressed data ends too early");
}

static inline void refill(inflater *z) {
    if (z->size - z->pos >= 8) { /* whole bytes up to 56 or more bits, in one load */
        const uint8_t *p = z->in + z->pos;
        uint64_t w = (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
                     (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 |
                     (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
        z->bits |= w << z->nbits;
        z->pos += (size_t)(63 - z->nbits) >> 3;
        z->nbits |= 56;
        return;
    }
    while (z->nbits <= 56 && z->pos < z->size) {
        z->bits |= (uint64_t)z->in[z->pos++] << z->nbits;
        z->nbits += 8;
    }
}

/* Makes n <= 32 bits available, or reports truncation. */
static inline bool need(inflater *z, int n) {
    if (z->nbits < n) refill(z);
    if (z->nbits >= n) return true;
    truncated(z);
    return false;
}

static inline uint32_t take(inflater *z, int n) {
    uint32_t v = (uint32_t)(z->bits & ((1ull << n) - 1));
    z->bits >>= n;
    z->nbits -= n;
    return v;
}

/* Drops the bits left in the current byte and hands back the whole bytes
 * loaded ahead, so that byte-aligned data (stored blocks, trailers) is read
 * straight from the input. */
static void align_to_byte(inflater *z) {
    z->pos -= (size_t)z->nbits / 8;
    z->bits = 0;
    z->nbits = 0;
}

/* Makes room for n more output bytes, growing the buffer geometrically. */
static bool room(inflater *z, size_t n) {
    if (n <= z->cap - z->len) return true;
    if (n > z->max - z->len)
        return fail_at(z, offset_of(z),
                       "decompressed data exceeds the limit of %zu bytes "
                       "(raise nb_inflate_opts.max_output if the file is trusted)",
                       z->max) == 0;
    size_t cap = z->cap < z->max / 2 ? z->cap * 2 : z->max;
    if (cap < z->len + n) cap = z->len + n;
    uint8_t *out = nb_realloc(z->out, cap);
    if (!out) return fail_at(z, offset_of(z), "out of memory for %zu bytes of output", cap) == 0;
    z->out = out;
    z->cap = cap;
    return true;
}

/* ---- Huffman codes -------------------------------------------------------------------
 * A code is given by the length of each symbol's code (0: unused); the codes
 * themselves are canonical (RFC 1951 3.2.2). count and symbol are puff's
 * tables for bit-by-bit decoding; fast maps the next FAST_BITS input bits to
 * symbol << 4 | length, or 0 when the code there is longer (or invalid). */
typedef struct huffman {
    uint16_t fast[1 << FAST_BITS];
    uint16_t count[MAX_BITS + 1]; /* codes of each length */
    uint16_t symbol[MAX_LIT];     /* symbols ordered by code */
    int ncodes;                   /* symbols with a code */
} huffman;

/* Builds h. Returns 0 for a complete code, > 0 for an incomplete one (codes
 * left unused) and < 0 for an over-subscribed one (more codes than fit). */
static int build(huffman *h, const uint8_t *lengths, int n) {
    memset(h->count, 0, sizeof h->count);
    for (int s = 0; s < n; s++) h->count[lengths[s]]++;
    memset(h->fast, 0, sizeof h->fast);
    h->ncodes = n - h->count[0];
    if (h->ncodes == 0) return 0; /* no codes: complete, but decoding any fails */
    int left = 1;
    for (int len = 1; len <= MAX_BITS; len++) {
        left = (left << 1) - h->count[len];
        if (left < 0) return left;
    }
    uint16_t offs[MAX_BITS + 2], next[MAX_BITS + 1];
    offs[1] = 0;
    for (int len = 1; len <= MAX_BITS; len++) offs[len + 1] = (uint16_t)(offs[len] + h->count[len]);
    unsigned code = 0;
    for (int len = 1; len <= MAX_BITS; len++) {
        code = (code + (len > 1 ? h->count[len - 1] : 0)) << 1;
        next[len] = (uint16_t)code;
    }
    for (int s = 0; s < n; s++) {
        int len = lengths[s];
        if (!len) continue;
        h->symbol[offs[len]++] = (uint16_t)s;
        unsigned c = next[len]++;
        if (len > FAST_BITS) continue;
        unsigned rev = 0; /* deflate sends codes most significant bit first */
        for (int i = 0; i < len; i++) rev |= ((c >> i) & 1u) << (len - 1 - i);
        for (unsigned k = rev; k < (1u << FAST_BITS); k += 1u << len)
            h->fast[k] = (uint16_t)(s << 4 | len);
    }
    return left;
}

/* puff's decode: one bit at a time, for codes longer than FAST_BITS. */
static int decode_slow(inflater *z, const huffman *h) {
    int code = 0, first = 0, index = 0;
    for (int len = 1; len <= MAX_BITS; len++) {
        if (!need(z, 1)) return -1;
        code |= (int)take(z, 1);
        int count = h->count[len];
        if (code - count < first) return h->symbol[index + (code - first)];
        index += count;
        if (index == h->ncodes) break; /* no longer codes: these bits match none */
        first = (first + count) << 1;
        code <<= 1;
    }
    return fail_at(z, offset_of(z), "invalid Huffman code");
}

static inline int decode(inflater *z, const huffman *h) {
    if (z->nbits < FAST_BITS) refill(z);
    unsigned e = h->fast[z->bits & ((1u << FAST_BITS) - 1)];
    if (e && (int)(e & 15) <= z->nbits) {
        take(z, (int)(e & 15));
        return (int)(e >> 4);
    }
    return decode_slow(z, h);
}

/* ---- blocks ------------------------------------------------------------------------- */

static const uint16_t length_base[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                         31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t length_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                         2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint16_t dist_base[30] = {1,    2,    3,    4,    5,    7,     9,     13,    17,  25,
                                       33,   49,   65,   97,   129,  193,   257,   385,   513, 769,
                                       1025, 1537, 2049, 3073, 4097, 6145,  8193,  12289, 16385, 24577};
static const uint8_t dist_extra[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                       6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

/* Stored block (BTYPE 00): LEN, its complement NLEN, LEN bytes. */
static int stored(inflater *z) {
    align_to_byte(z);
    if (z->size - z->pos < 4) return truncated(z);
    const uint8_t *p = z->in + z->pos;
    unsigned len = p[0] | (unsigned)p[1] << 8, nlen = p[2] | (unsigned)p[3] << 8;
    if (len != (~nlen & 0xffff))
        return fail_at(z, z->pos, "stored block length %u does not match its complement %u", len,
                       nlen);
    z->pos += 4;
    if (z->size - z->pos < len) return truncated(z);
    if (!room(z, len)) return -1;
    memcpy(z->out + z->len, z->in + z->pos, len);
    z->len += len;
    z->pos += len;
    return 0;
}

/* The data of a Huffman-coded block, up to its end-of-block code. */
static int codes(inflater *z, const huffman *lit, const huffman *dist) {
    for (;;) {
        int sym = decode(z, lit);
        if (sym < 0) return -1;
        if (sym < 256) {
            if (z->len == z->cap && !room(z, 1)) return -1;
            z->out[z->len++] = (uint8_t)sym;
            continue;
        }
        if (sym == 256) return 0;
        sym -= 257;
        if (sym >= 29) return fail_at(z, offset_of(z), "invalid length symbol %d", sym + 257);
        if (!need(z, length_extra[sym])) return -1;
        size_t len = length_base[sym] + take(z, length_extra[sym]);
        int dsym = decode(z, dist);
        if (dsym < 0) return -1;
        if (dsym >= 30) return fail_at(z, offset_of(z), "invalid distance symbol %d", dsym);
        if (!need(z, dist_extra[dsym])) return -1;
        size_t d = dist_base[dsym] + take(z, dist_extra[dsym]);
        if (d > z->len - z->window)
            return fail_at(z, offset_of(z), "distance %zu too far back (only %zu bytes written)",
                           d, z->len - z->window);
        if (!room(z, len)) return -1;
        uint8_t *to = z->out + z->len;
        const uint8_t *from = to - d;
        if (d >= len) memcpy(to, from, len);
        else for (size_t i = 0; i < len; i++) to[i] = from[i]; /* overlapping: a run */
        z->len += len;
    }
}

/* Fixed Huffman block (BTYPE 01): the codes of RFC 1951 3.2.6. */
static int fixed(inflater *z, huffman *lit, huffman *dist) {
    uint8_t lengths[MAX_LIT];
    int s = 0;
    for (; s < 144; s++) lengths[s] = 8;
    for (; s < 256; s++) lengths[s] = 9;
    for (; s < 280; s++) lengths[s] = 7;
    for (; s < MAX_LIT; s++) lengths[s] = 8;
    build(lit, lengths, MAX_LIT);
    for (s = 0; s < MAX_DIST; s++) lengths[s] = 5;
    build(dist, lengths, MAX_DIST);
    return codes(z, lit, dist);
}

/* Dynamic Huffman block (BTYPE 10): the code lengths come first, themselves
 * Huffman-coded with a code whose lengths come first (RFC 1951 3.2.7). */
static int dynamic(inflater *z, huffman *lit, huffman *dist) {
    static const uint8_t order[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    uint8_t lengths[MAX_LIT + MAX_DIST];
    if (!need(z, 14)) return -1;
    int nlit = (int)take(z, 5) + 257, ndist = (int)take(z, 5) + 1, ncode = (int)take(z, 4) + 4;
    if (nlit > 286 || ndist > 30)
        return fail_at(z, offset_of(z), "bad code counts: %d literal/length and %d distance codes "
                       "(at most 286 and 30)", nlit, ndist);
    memset(lengths, 0, 19);
    for (int i = 0; i < ncode; i++) {
        if (!need(z, 3)) return -1;
        lengths[order[i]] = (uint8_t)take(z, 3);
    }
    int err = build(lit, lengths, 19); /* lit holds the code-length code for now */
    if (err != 0)
        return fail_at(z, offset_of(z), "%s code-length code",
                       err < 0 ? "over-subscribed" : "incomplete");
    for (int i = 0; i < nlit + ndist;) {
        int sym = decode(z, lit);
        if (sym < 0) return -1;
        if (sym < 16) {
            lengths[i++] = (uint8_t)sym;
            continue;
        }
        uint8_t value = 0;
        int repeat;
        if (sym == 16) {
            if (i == 0) return fail_at(z, offset_of(z), "code length repeat with no previous length");
            value = lengths[i - 1];
            if (!need(z, 2)) return -1;
            repeat = 3 + (int)take(z, 2);
        } else if (sym == 17) {
            if (!need(z, 3)) return -1;
            repeat = 3 + (int)take(z, 3);
        } else {
            if (!need(z, 7)) return -1;
            repeat = 11 + (int)take(z, 7);
        }
        if (i + repeat > nlit + ndist)
            return fail_at(z, offset_of(z), "code lengths repeat past the %d codes", nlit + ndist);
        while (repeat--) lengths[i++] = value;
    }
    if (lengths[256] == 0) return fail_at(z, offset_of(z), "no end-of-block code");
    /* An incomplete code is allowed only when it is a single code of one bit
     * (RFC 1951 3.2.7: "one distance code of one bit"), as zlib and puff do. */
    err = build(lit, lengths, nlit);
    if (err < 0 || (err > 0 && nlit != lit->count[0] + lit->count[1]))
        return fail_at(z, offset_of(z), "%s literal/length code",
                       err < 0 ? "over-subscribed" : "incomplete");
    err = build(dist, lengths + nlit, ndist);
    if (err < 0 || (err > 0 && ndist != dist->count[0] + dist->count[1]))
        return fail_at(z, offset_of(z), "%s distance code", err < 0 ? "over-subscribed" : "incomplete");
    return codes(z, lit, dist);
}

/* A whole deflate stream: blocks until the one marked final. Leaves the
 * reader at the byte after it. */
static int deflate_stream(inflater *z) {
    huffman *codes2 = nb_malloc(2 * sizeof(huffman)); /* 5 KB: off the stack */
    if (!codes2) return fail_at(z, offset_of(z), "out of memory");
    z->window = z->len;
    int final = 0, err = 0;
    while (!final && err == 0) {
        if (!need(z, 3)) {
            err = -1;
            break;
        }
        size_t at = offset_of(z);
        final = (int)take(z, 1);
        int type = (int)take(z, 2);
        if (type == 0) err = stored(z);
        else if (type == 1) err = fixed(z, &codes2[0], &codes2[1]);
        else if (type == 2) err = dynamic(z, &codes2[0], &codes2[1]);
        else err = fail_at(z, at, "invalid block type 3");
    }
    nb_free(codes2);
    align_to_byte(z);
    return err;
}

/* ---- the wrappers ------------------------------------------------------------------- */

static uint32_t le32(const uint8_t *p) {
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Skips a zero-terminated field of the gzip header. */
static int skip_string(inflater *z) {
    const uint8_t *end = memchr(z->in + z->pos, 0, z->size - z->pos);
    if (!end) return truncated(z);
    z->pos = (size_t)(end - z->in) + 1;
    return 0;
}

/* One gzip member: header, deflate data, CRC-32 and ISIZE. */
static int gzip_member(inflater *z) {
    size_t start = z->pos;
    const uint8_t *h = z->in + start;
    if (z->size - start < 10) return truncated(z);
    if (h[0] != 0x1f || h[1] != 0x8b)
        return fail_at(z, start, "not gzip data (bytes %02x %02x, expected 1f 8b)", h[0], h[1]);
    if (h[2] != 8) return fail_at(z, start + 2, "unknown compression method %d (8 is deflate)", h[2]);
    int flags = h[3];
    if (flags & 0xe0) return fail_at(z, start + 3, "reserved header flags set (0x%02x)", flags);
    z->pos += 10;
    if (flags & 4) { /* FEXTRA */
        if (z->size - z->pos < 2) return truncated(z);
        size_t xlen = z->in[z->pos] | (size_t)z->in[z->pos + 1] << 8;
        if (z->size - z->pos - 2 < xlen) return truncated(z);
        z->pos += 2 + xlen;
    }
    if ((flags & 8) && skip_string(z)) return -1;  /* FNAME */
    if ((flags & 16) && skip_string(z)) return -1; /* FCOMMENT */
    if (flags & 2) {                               /* FHCRC: CRC-32 of the header, low half */
        if (z->size - z->pos < 2) return truncated(z);
        unsigned want = z->in[z->pos] | (unsigned)z->in[z->pos + 1] << 8;
        unsigned got = nb_crc32(0, z->in + start, z->pos - start) & 0xffff;
        if (want != got)
            return fail_at(z, z->pos, "header CRC mismatch (stored %04x, computed %04x)", want, got);
        z->pos += 2;
    }
    size_t out_start = z->len;
    if (deflate_stream(z)) return -1;
    if (z->size - z->pos < 8) return truncated(z);
    uint32_t crc = le32(z->in + z->pos), isize = le32(z->in + z->pos + 4);
    uint32_t got = nb_crc32(0, z->out + out_start, z->len - out_start);
    if (crc != got)
        return fail_at(z, z->pos, "CRC-32 mismatch (stored %08x, computed %08x)", (unsigned)crc,
                       (unsigned)got);
    if (isize != (uint32_t)(z->len - out_start))
        return fail_at(z, z->pos + 4, "ISIZE mismatch (stored %u, decompressed %u mod 2^32)",
                       (unsigned)isize, (unsigned)(uint32_t)(z->len - out_start));
    z->pos += 8;
    return 0;
}

static int gzip(inflater *z) {
    do {
        if (gzip_member(z)) return -1;
    } while (z->pos < z->size && nb__is_gzip(z->in + z->pos, z->size - z->pos));
    return 0;
}

static bool zlib_header_ok(const uint8_t *p, size_t size) {
    return size >= 2 && (p[0] & 15) == 8 && (p[0] >> 4) <= 7 && (p[0] << 8 | p[1]) % 31 == 0;
}

static int zlib(inflater *z) {
    if (z->size < 2) return truncated(z);
    const uint8_t *h = z->in;
    if ((h[0] & 15) != 8) return fail_at(z, 0, "unknown compression method %d (8 is deflate)", h[0] & 15);
    if ((h[0] >> 4) > 7) return fail_at(z, 0, "window size 2^%d too large", (h[0] >> 4) + 8);
    if ((h[0] << 8 | h[1]) % 31 != 0) return fail_at(z, 1, "zlib header check failed");
    if (h[1] & 0x20) return fail_at(z, 1, "a preset dictionary is not supported");
    z->pos = 2;
    if (deflate_stream(z)) return -1;
    if (z->size - z->pos < 4) return truncated(z);
    const uint8_t *p = z->in + z->pos;
    uint32_t want = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    uint32_t got = nb_adler32(1, z->out, z->len);
    if (want != got)
        return fail_at(z, z->pos, "Adler-32 mismatch (stored %08x, computed %08x)", (unsigned)want,
                       (unsigned)got);
    z->pos += 4;
    return 0;
}

int nb__inflate(const char *who, const void *in, size_t size, uint8_t **out, size_t *out_size,
                const nb_inflate_opts *opts) {
    if (out) *out = NULL;
    if (out_size) *out_size = 0;
    nb_inflate_opts o = opts ? *opts : (nb_inflate_opts){0};
    inflater z = {.who = who, .name = o.name ? o.name : "(memory)", .in = in, .size = size,
                  .max = o.max_output ? o.max_output : NB_INFLATE_MAX_OUTPUT};
    if ((!in && size) || !out || !out_size) {
        nb_set_error("%s: %s: NULL argument", who, z.name);
        return -1;
    }
    if (o.format > NB_INFLATE_RAW) {
        nb_set_error("%s: %s: unknown format %d", who, z.name, (int)o.format);
        return -1;
    }
    nb_inflate_format format = o.format;
    if (format == NB_INFLATE_AUTO) {
        if (nb__is_gzip(in, size)) format = NB_INFLATE_GZIP;
        else if (zlib_header_ok(in, size)) format = NB_INFLATE_ZLIB;
        else {
            nb_set_error("%s: %s:0: neither a gzip nor a zlib header "
                         "(raw deflate data needs NB_INFLATE_RAW)", who, z.name);
            return -1;
        }
    }
    /* First guess at the size: gzip's last ISIZE (exact for one member
     * under 4 GB), else four times the input; never more than deflate's
     * largest ratio (1032:1) allows, nor than the cap. */
    size_t guess = size < SIZE_MAX / 4 ? 4 * size : SIZE_MAX;
    if (format == NB_INFLATE_GZIP && size >= 18) guess = le32((const uint8_t *)in + size - 4);
    if (size < SIZE_MAX / 1032 && guess > 1032 * size) guess = 1032 * size;
    if (guess < 64) guess = 64;
    if (guess > z.max) guess = z.max; /* the cap is checked against cap - len: never above max */
    z.out = nb_malloc(guess);
    if (!z.out) {
        nb_set_error("%s: %s: out of memory for %zu bytes of output", who, z.name, guess);
        return -1;
    }
    z.cap = guess;
    int err = format == NB_INFLATE_GZIP ? gzip(&z)
              : format == NB_INFLATE_ZLIB ? zlib(&z)
                                          : deflate_stream(&z);
    if (err == 0 && z.pos < z.size)
        err = fail_at(&z, z.pos, "%zu bytes of trailing garbage after the compressed data",
                      z.size - z.pos);
    if (err) {
        nb_free(z.out);
        return -1;
    }
    if (z.cap > z.len + z.len / 8 + 64) { /* give back a generous guess */
        uint8_t *fit = nb_realloc(z.out, z.len);
        if (fit) z.out = fit;
    }
    *out = z.out;
    *out_size = z.len;
    return 0;
}

int nb_inflate(const void *in, size_t size, uint8_t **out, size_t *out_size,
               const nb_inflate_opts *opts) {
    return nb__inflate("nb_inflate", in, size, out, out_size, opts);
}

int nb_gunzip_file(const char *path, uint8_t **data, size_t *size, const nb_inflate_opts *opts) {
    if (data) *data = NULL;
    if (size) *size = 0;
    uint8_t *in;
    size_t n;
    if (nb__read_file("nb_gunzip_file", path, &in, &n)) return -1;
    nb_inflate_opts o = opts ? *opts : (nb_inflate_opts){0};
    o.name = path;
    int err = nb__inflate("nb_gunzip_file", in, n, data, size, &o);
    nb_free(in);
    return err;
}
