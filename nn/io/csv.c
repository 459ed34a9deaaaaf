/* csv.c — numeric tables from CSV files (RFC 4180): fields separated by a
 * delimiter, optionally quoted with doubled quotes inside, records ending
 * in LF or CRLF, an optional header naming the columns. Label columns,
 * chosen by index or by name, go to y and the rest to x, both float
 * tensors of one row per record.
 *
 * The parser is a single pass over the text that keeps the line and column
 * of every field it reads, because a CSV error is only useful when it says
 * where: "data.csv:3:7: not a number: 'abc'". Values are collected in one
 * growing array (row-major over every column) and split into x and y at the
 * end, once the table is known to be whole.
 */
#include "io_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct csv {
    const char *who, *name;
    const char *s;
    size_t n, p;             /* the text and the read position */
    size_t line, line_start; /* current line (from 1) and the offset where it starts */
    char delim;
    char *field;             /* the field just read, NUL-terminated */
    size_t flen, fcap;
    size_t fline, fcol;      /* where it starts */
    size_t eline, ecol;      /* where the record it belongs to ends */
    bool failed;
} csv;

static int fail(csv *c, size_t line, size_t col, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static int fail(csv *c, size_t line, size_t col, const char *fmt, ...) {
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (!c->failed) nb_set_error("%s: %s:%zu:%zu: %s", c->who, c->name, line, col, what);
    c->failed = true;
    return -1;
}

static size_t column(const csv *c) { return c->p - c->line_start + 1; }

static bool append(csv *c, char ch) {
    if (c->flen + 1 >= c->fcap) {
        size_t cap = c->fcap ? 2 * c->fcap : 64;
        char *f = nb_realloc(c->field, cap);
        if (!f) return fail(c, c->fline, c->fcol, "out of memory for a field") == 0;
        c->field = f;
        c->fcap = cap;
    }
    c->field[c->flen++] = ch;
    return true;
}

static bool at_line_end(const csv *c) {
    return c->p < c->n &&
           (c->s[c->p] == '\n' || (c->s[c->p] == '\r' && c->p + 1 < c->n && c->s[c->p + 1] == '\n'));
}

/* Reads one field into c->field. Returns 0 when a delimiter follows (more
 * fields in the record), 1 when the record ends, -1 on error. */
static int read_field(csv *c) {
    c->flen = 0;
    c->fline = c->line;
    c->fcol = column(c);
    if (c->p < c->n && c->s[c->p] == '"') {
        c->p++;
        for (;;) {
            if (c->p >= c->n) return fail(c, c->fline, c->fcol, "unterminated quoted field");
            char ch = c->s[c->p++];
            if (ch == '"') {
                if (c->p >= c->n || c->s[c->p] != '"') break;
                c->p++; /* "" is a quote */
            } else if (ch == '\n') {
                c->line++;
                c->line_start = c->p;
            }
            if (!append(c, ch)) return -1;
        }
        if (c->p < c->n && c->s[c->p] != c->delim && !at_line_end(c))
            return fail(c, c->line, column(c), "unexpected character after a closing quote");
    } else {
        while (c->p < c->n && c->s[c->p] != c->delim && !at_line_end(c)) {
            if (c->s[c->p] == '"')
                return fail(c, c->line, column(c), "quote inside an unquoted field");
            if (!append(c, c->s[c->p++])) return -1;
        }
    }
    if (!append(c, '\0')) return -1;
    c->flen--;
    c->eline = c->line;
    c->ecol = column(c);
    if (c->p >= c->n) return 1;
    if (c->s[c->p] == c->delim) {
        c->p++;
        return 0;
    }
    c->p += c->s[c->p] == '\r' ? 2 : 1;
    c->line++;
    c->line_start = c->p;
    return 1;
}

/* True when nothing but line ends remains: the table is over. */
static bool only_blank_lines_left(const csv *c) {
    for (size_t i = c->p; i < c->n; i++)
        if (c->s[i] != '\n' && c->s[i] != '\r') return false;
    return true;
}

/* The field as a number; spaces around it are allowed. */
static int field_value(csv *c, float *out) {
    char *b = c->field, *e = c->field + c->flen;
    while (b < e && (*b == ' ' || *b == '\t' || *b == '\r')) b++;
    while (e > b && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) e--;
    if (b == e) return fail(c, c->fline, c->fcol, "missing value");
    *e = '\0';
    char *end;
    double v = strtod(b, &end);
    if (end != e) return fail(c, c->fline, c->fcol, "not a number: '%.40s'", b);
    if (isfinite(v) && !isfinite((float)v))
        return fail(c, c->fline, c->fcol, "%.40s is out of the float32 range", b);
    *out = (float)v;
    return 0;
}

typedef struct table {
    float *vals; /* every value, row-major over all columns */
    size_t nvals, cap;
    int ncols;
    char *names; /* header names, NUL-separated */
    size_t names_len;
} table;

static int push(csv *c, table *t, float v) {
    if (t->nvals == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 1024;
        float *vals = cap < SIZE_MAX / sizeof(float) ? nb_realloc(t->vals, cap * sizeof(float)) : NULL;
        if (!vals) return fail(c, c->fline, c->fcol, "out of memory for %zu values", cap);
        t->vals = vals;
        t->cap = cap;
    }
    t->vals[t->nvals++] = v;
    return 0;
}

static int read_header(csv *c, table *t) {
    if (c->p >= c->n) return fail(c, 1, 1, "empty file: expected a header line");
    int r = 0;
    while (r == 0) {
        if ((r = read_field(c)) < 0) return -1;
        char *names = nb_realloc(t->names, t->names_len + c->flen + 1);
        if (!names) return fail(c, c->fline, c->fcol, "out of memory for the header");
        memcpy(names + t->names_len, c->field, c->flen + 1);
        t->names = names;
        t->names_len += c->flen + 1;
        if (t->ncols == INT32_MAX) return fail(c, c->fline, c->fcol, "too many columns");
        t->ncols++;
    }
    return 0;
}

/* Reads the data records; the first one fixes the number of columns when
 * there was no header. */
static int read_rows(csv *c, table *t) {
    while (!only_blank_lines_left(c)) {
        if (at_line_end(c)) return fail(c, c->line, 1, "empty line inside the table");
        int r = 0, k = 0;
        while (r == 0) {
            if ((r = read_field(c)) < 0) return -1;
            if (t->ncols && k >= t->ncols)
                return fail(c, c->fline, c->fcol, "row has more than %d fields", t->ncols);
            float v = 0;
            if (field_value(c, &v) || push(c, t, v)) return -1;
            k++;
            if (!t->ncols && k == INT32_MAX) return fail(c, c->fline, c->fcol, "too many columns");
        }
        if (!t->ncols) t->ncols = k;
        else if (k < t->ncols)
            return fail(c, c->eline, c->ecol, "row has %d field%s, expected %d", k,
                        k == 1 ? "" : "s", t->ncols);
    }
    return 0;
}

/* Which column each label is: fills label_of[col] with the label index or
 * -1 for features. */
static int resolve_labels(csv *c, const table *t, const nb_csv_opts *o, int *label_of) {
    for (int j = 0; j < t->ncols; j++) label_of[j] = -1;
    for (int i = 0; i < o->nlabels; i++) {
        int col = -1;
        if (o->label_columns) {
            int want = o->label_columns[i];
            col = want < 0 ? t->ncols + want : want;
            if (col < 0 || col >= t->ncols)
                return fail(c, 1, 1, "label column %d is out of range: the table has %d columns",
                            want, t->ncols);
        } else {
            const char *want = o->label_names[i] ? o->label_names[i] : "(null)";
            const char *name = t->names;
            for (int j = 0; j < t->ncols; j++, name += strlen(name) + 1)
                if (strcmp(name, want) == 0) {
                    col = j;
                    break;
                }
            if (col < 0) return fail(c, 1, 1, "no column named '%.60s' in the header", want);
        }
        if (label_of[col] >= 0) return fail(c, 1, 1, "column %d is chosen as a label twice", col);
        label_of[col] = i;
    }
    return 0;
}

/* Splits the values into x and y, made in a scope of their own so that a
 * failure of the second leaves neither behind. */
static int make_tensors(csv *c, const table *t, const int *label_of, int nlabels, nb_tensor **x,
                        nb_tensor **y) {
    int64_t rows = t->ncols ? (int64_t)(t->nvals / (size_t)t->ncols) : 0;
    int nfeat = t->ncols - nlabels;
    nb_scope_begin();
    nb_tensor *tx = nb_empty(NB_SHAPE(rows, nfeat));
    nb_tensor *ty = nlabels ? nb_empty(NB_SHAPE(rows, nlabels)) : NULL;
    if (!tx || (nlabels && !ty)) {
        nb_scope_end();
        return fail(c, c->line, 1, "out of memory for a table of %lld rows", (long long)rows);
    }
    float *px = nb_data_mut(tx), *py = ty ? nb_data_mut(ty) : NULL;
    const float *v = t->vals;
    for (int64_t r = 0; r < rows; r++)
        for (int j = 0; j < t->ncols; j++, v++)
            if (label_of[j] >= 0) py[r * nlabels + label_of[j]] = *v;
            else *px++ = *v;
    *x = nb_escape(tx);
    if (y) *y = nb_escape(ty);
    nb_scope_end();
    return 0;
}

static int parse(const char *who, const char *text, size_t size, const char *name,
                 const nb_csv_opts *opts, nb_tensor **x, nb_tensor **y) {
    if (x) *x = NULL;
    if (y) *y = NULL;
    if (!name) name = "(memory)";
    nb_csv_opts o = opts ? *opts : (nb_csv_opts){0};
    if (!o.delimiter) o.delimiter = ',';
    if ((!text && size) || !x) {
        nb_set_error("%s: %s: NULL argument", who, name);
        return -1;
    }
    if (o.delimiter == '"' || o.delimiter == '\n' || o.delimiter == '\r') {
        nb_set_error("%s: %s: the delimiter cannot be a quote or a line end", who, name);
        return -1;
    }
    if (o.nlabels < 0 || (o.nlabels > 0 && !o.label_columns && !o.label_names) ||
        (o.nlabels > 0 && !y)) {
        nb_set_error("%s: %s: %d label columns asked for, without %s", who, name, o.nlabels,
                     o.nlabels < 0 ? "sense" : !y ? "a y to return them in" : "their indices or names");
        return -1;
    }
    if (o.nlabels > 0 && !o.label_columns && !o.header) {
        nb_set_error("%s: %s: label columns chosen by name need a header (opts.header)", who, name);
        return -1;
    }
    csv c = {.who = who, .name = name, .s = text, .n = size, .line = 1, .delim = o.delimiter};
    if (size >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) c.p = c.line_start = 3; /* UTF-8 BOM */
    table t = {0};
    int *label_of = NULL;
    int err = o.header ? read_header(&c, &t) : 0;
    if (!err) err = read_rows(&c, &t);
    if (!err && !t.ncols) err = fail(&c, 1, 1, "no data: the file is empty");
    if (!err && !(label_of = nb_malloc(sizeof(int) * (size_t)t.ncols)))
        err = fail(&c, 1, 1, "out of memory");
    if (!err) err = resolve_labels(&c, &t, &o, label_of);
    if (!err) err = make_tensors(&c, &t, label_of, o.nlabels, x, y);
    nb_free(label_of);
    nb_free(t.vals);
    nb_free(t.names);
    nb_free(c.field);
    return err;
}

int nb_parse_csv(const char *text, size_t size, const char *name, const nb_csv_opts *opts,
                 nb_tensor **x, nb_tensor **y) {
    return parse("nb_parse_csv", text, size, name, opts, x, y);
}

int nb_read_csv(const char *path, const nb_csv_opts *opts, nb_tensor **x, nb_tensor **y) {
    if (x) *x = NULL;
    if (y) *y = NULL;
    uint8_t *data;
    size_t size;
    if (nb__read_file("nb_read_csv", path, &data, &size)) return -1;
    if (nb__is_gzip(data, size)) {
        uint8_t *plain;
        size_t n;
        int err = nb__inflate("nb_read_csv", data, size, &plain, &n, &(nb_inflate_opts){.name = path});
        nb_free(data);
        if (err) return -1;
        data = plain;
        size = n;
    }
    int err = parse("nb_read_csv", (const char *)data, size, path, opts, x, y);
    nb_free(data);
    return err;
}
