/* nb_io.h — reading data as it is distributed: gzip, zlib and raw deflate
 * streams (an inflater written from RFCs 1950, 1951 and 1952, since nabla
 * links nothing but libc), IDX files (MNIST, Fashion-MNIST), and numeric CSV
 * tables. The readers turn files into tensors ready for nb_model_fit.
 *
 * OWNERSHIP: tensors follow the rule of nb_autograd.h (they belong to the
 * innermost open scope). Byte buffers returned by nb_inflate and
 * nb_gunzip_file come from nb_malloc and are freed with nb_free.
 *
 * ERRORS: every function returns NULL or -1 and sets one message of the form
 *     "nb_function: file:offset: what"        (binary formats)
 *     "nb_function: file:line:column: what"   (CSV)
 * No input, however corrupt or truncated, makes a reader crash, hang, or
 * read outside its buffer; tests/fuzz holds the harnesses that check this.
 * On failure the output arguments are set to NULL (and 0) and nothing leaks.
 */
#ifndef NB_IO_H
#define NB_IO_H

#include "nb_autograd.h"
#include "nb_nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- inflate (nn/io/inflate.c) ----------------------------------------------------- */

/* Decompressed output larger than this is refused (a zip bomb guard) unless
 * nb_inflate_opts.max_output says otherwise: 1 GiB. */
#define NB_INFLATE_MAX_OUTPUT ((size_t)1 << 30)

typedef enum nb_inflate_format {
    NB_INFLATE_AUTO = 0, /* gzip or zlib, told apart by the header */
    NB_INFLATE_GZIP,     /* RFC 1952, one member or several (concatenated files) */
    NB_INFLATE_ZLIB,     /* RFC 1950 */
    NB_INFLATE_RAW       /* RFC 1951 deflate data without a wrapper */
} nb_inflate_format;

/* Options; NULL, or a field left zero, means the default. */
typedef struct nb_inflate_opts {
    nb_inflate_format format;
    size_t max_output; /* 0: NB_INFLATE_MAX_OUTPUT */
    const char *name;  /* what nb_inflate's messages call the input; NULL: "(memory)" */
} nb_inflate_opts;

/* Decompresses size bytes at in into a new buffer *out of *out_size bytes.
 * Checks what the format carries: gzip's CRC-32 and ISIZE, zlib's Adler-32.
 * Bytes after the end of the stream (other than further gzip members) are
 * an error. Returns 0, or -1 with a message naming the input and the byte
 * offset where the data went wrong. */
int nb_inflate(const void *in, size_t size, uint8_t **out, size_t *out_size,
               const nb_inflate_opts *opts);
/* Reads and decompresses a whole .gz (or zlib) file. */
int nb_gunzip_file(const char *path, uint8_t **data, size_t *size, const nb_inflate_opts *opts);

/* Checksums, to be chained: crc = nb_crc32(crc, more, n), starting from 0
 * (CRC-32 of gzip, PNG, zip) and from 1 (Adler-32 of zlib). */
uint32_t nb_crc32(uint32_t crc, const void *data, size_t size);
uint32_t nb_adler32(uint32_t adler, const void *data, size_t size);

/* ---- IDX files (nn/io/idx.c) ---------------------------------------------------------
 * The format of MNIST and Fashion-MNIST: a big-endian magic (0x00000803 for
 * images, 0x00000801 for labels), one big-endian uint32 per dimension, then
 * the unsigned bytes. Files may be gzip-compressed (as distributed) or not;
 * the reader looks at the first bytes, not at the name. Offsets in messages
 * about a compressed file are offsets in its decompressed data. */

#define NB_IDX_IMAGES 0x00000803u
#define NB_IDX_LABELS 0x00000801u

/* Images as a float tensor [N, rows, cols], values scaled to [0, 1], or the
 * byte values 0..255 when raw is true. */
nb_tensor *nb_read_idx_images(const char *path, bool raw);
/* Labels as a float tensor [N] of class indices: the targets that
 * nb_cross_entropy_loss, nb_nll_loss and nb_sparse_categorical_crossentropy
 * take. num_classes > 0 makes a label >= num_classes an error; 0: no check. */
nb_tensor *nb_read_idx_labels(const char *path, int64_t num_classes);
/* The same from bytes in memory; name is what messages call them. */
nb_tensor *nb_parse_idx_images(const void *data, size_t size, const char *name, bool raw);
nb_tensor *nb_parse_idx_labels(const void *data, size_t size, const char *name,
                               int64_t num_classes);

/* ---- CSV tables (nn/io/csv.c) ---------------------------------------------------------
 * Numeric tables as RFC 4180 writes them: fields separated by a delimiter,
 * optionally quoted ("1.5", with "" for a quote inside), lines ending in LF
 * or CRLF, an optional header line, a final line ending optional. Every
 * field must be a number (strtod's syntax, spaces around it allowed); a
 * missing or non-numeric value, a row with too few or too many fields, an
 * unterminated quote are errors naming the file, line and column. A UTF-8
 * byte order mark and blank lines at the end of the file are ignored. A
 * .gz file is decompressed first. */

typedef struct nb_csv_opts {
    char delimiter;  /* 0: ',' */
    bool header;     /* the first line names the columns */
    /* The label columns, which go to y in the order given; every other
     * column goes to x. Either by 0-based index (negative counts from the
     * end: -1 is the last column) or, with a header, by name. */
    int nlabels;
    const int *label_columns;
    const char *const *label_names; /* used when label_columns is NULL */
} nb_csv_opts;

/* Reads a table into *x [rows, features] and *y [rows, nlabels] (y may be
 * NULL when nlabels is 0; *y is then NULL). Returns 0, or -1 with a message;
 * on failure *x and *y are NULL. */
int nb_read_csv(const char *path, const nb_csv_opts *opts, nb_tensor **x, nb_tensor **y);
/* The same from size bytes of text in memory; name is what messages call it. */
int nb_parse_csv(const char *text, size_t size, const char *name, const nb_csv_opts *opts,
                 nb_tensor **x, nb_tensor **y);

/* ---- the training history as files -------------------------------------------
 * One row per epoch, one column per key ("epoch,loss,accuracy,val_loss,..."),
 * like Keras's CSVLogger; and a self-contained SVG chart, one panel per
 * quantity with its training and (dashed) validation curves, that a browser
 * opens. The _write forms write to an open FILE; the _save forms replace
 * path atomically. title may be NULL. Each returns 0 or -1 with a message. */
int nb_history_write_csv(const nb_history *h, FILE *out);
int nb_history_write_svg(const nb_history *h, FILE *out, const char *title);
int nb_history_save_csv(const nb_history *h, const char *path);
int nb_history_save_svg(const nb_history *h, const char *path, const char *title);

/* ---- safetensors files and checkpoints (nn/io/safetensors.c, nn/io/checkpoint.c) ----
 * The safetensors format: an 8-byte little-endian header length N, N bytes
 * of JSON ({"name": {"dtype": "F32", "shape": [2, 3], "data_offsets":
 * [begin, end]}, ..., "__metadata__": {"key": "value", ...}}), then the raw
 * little-endian data, offsets relative to its start. The reader is strict:
 * a duplicate name or key, offsets that overlap, leave a gap, do not cover
 * the data exactly or run past it, a size that does not match the shape,
 * more than 8 dimensions, an unknown dtype, malformed JSON, bytes after it
 * or a header length beyond the file are errors "who: file:offset: what".
 * F32 is read as is; F64, F16 and BF16 are converted to float32. nabla
 * writes F32 only, as the reference writer orders it ("__metadata__"
 * first, tensors by name, header padded with spaces to a multiple of 8).
 *
 * Every write that replaces a file is atomic and durable: the data goes to
 * a temporary file in the same folder (path.tmp.XXXXXX), is flushed and
 * fsync'ed, renamed over path, and the folder fsync'ed. On any failure (no
 * space, out of memory) path is untouched and the temporary removed; a
 * process killed mid-write may leave a path.tmp.* file behind, never a
 * torn path. */

typedef struct nb_safetensors nb_safetensors;

/* Reads and checks a whole file, or size bytes in memory (copied; name is
 * what messages call them). Free the result with nb_safetensors_free. */
nb_safetensors *nb_safetensors_read(const char *path);
nb_safetensors *nb_safetensors_parse(const void *data, size_t size, const char *name);
void nb_safetensors_free(nb_safetensors *st);
/* Tensors in file order (by data offset); names, dtypes ("F32", "F64",
 * "F16", "BF16") and shapes are borrowed from st. */
int nb_safetensors_count(const nb_safetensors *st);
const char *nb_safetensors_name(const nb_safetensors *st, int i);
int nb_safetensors_find(const nb_safetensors *st, const char *name); /* index or -1 */
const char *nb_safetensors_dtype(const nb_safetensors *st, int i);
const int64_t *nb_safetensors_shape(const nb_safetensors *st, int i, int *ndim);
/* The tensor called name as a new float32 tensor (ownership rule of
 * nb_autograd.h), or NULL and a message when there is none. */
nb_tensor *nb_safetensors_get(const nb_safetensors *st, const char *name);
/* The "__metadata__" strings: the value of key (borrowed) or NULL. */
const char *nb_safetensors_metadata(const nb_safetensors *st, const char *key);
int nb_safetensors_num_metadata(const nb_safetensors *st);
const char *nb_safetensors_metadata_key(const nb_safetensors *st, int i);
/* Writes n float32 tensors under names (unique, non-empty, not
 * "__metadata__") and the metadata, a NULL-terminated list of key, value
 * pairs ({"epoch", "4", NULL}; NULL for none), atomically. Returns 0 or -1. */
int nb_safetensors_write(const char *path, int n, const char *const *names, nb_tensor *const *tensors,
                         const char *const *metadata);

/* A module's parameters under their nb_module_parameter_name names, and its
 * buffers (running statistics) under theirs, as PyTorch's state_dict ("0.weight",
 * "0.bias", ... : nabla's own layout, so a Dense kernel is [in, out] where
 * PyTorch's Linear.weight is [out, in]; see the README for the two lines of
 * Python that transpose it). metadata as for nb_safetensors_write. */
int nb_save_parameters(nb_module *m, const char *path, const char *const *metadata);

typedef struct nb_load_opts {
    /* true (the default): the file must hold exactly the module's
     * parameters with their shapes. false: a partial load, which copies
     * the parameters whose name and shape match and skips the rest. */
    bool strict;
    /* When not NULL, receives what a partial load skipped ("" if nothing):
     * "missing: a, b; unexpected: c; shape differs: d [2,3] in the file,
     * [3,2] in the module". */
    char *skipped;
    size_t skipped_size;
} nb_load_opts;

nb_load_opts nb_load_defaults(void); /* strict, no report */
/* Loads the parameters of m from path (opts NULL: the defaults). A strict
 * load that finds any difference fails with one message listing every one
 * (missing, unexpected, shape differs); nothing in m changes unless the
 * whole load succeeds. Returns the number of tensors loaded, or -1. */
int nb_load_parameters(nb_module *m, const char *path, const nb_load_opts *opts);

/* A training checkpoint, in one safetensors file: the module's parameters
 * (as nb_save_parameters), the optimizer's state tensors ("optimizer.3.exp_avg":
 * state exp_avg of the optimizer's parameter 3), and in the metadata, as
 * decimal strings that read back exactly: the optimizer's name, lr, step
 * count and per-parameter step counts ("optimizer.3.step"), the schedule's
 * epoch, the training epoch, and the calling thread's default generator
 * (nb_generator's fields), which drives shuffling and dropout. optimizer and
 * schedule may be NULL. Loading the file into the same module, optimizer
 * and schedule (built the same way) makes training continue exactly as if
 * it had not stopped; it checks everything first and changes nothing
 * unless all of it fits. *epoch (may be NULL) receives the saved epoch.
 * A generator of one's own (nb_loader_opts.generator, say) is not
 * in the file: save and restore it beside, or use the default one. */
int nb_save_checkpoint(const char *path, nb_module *m, nb_optimizer *optimizer, nb_lr_schedule *schedule,
                       int64_t epoch);
int nb_load_checkpoint(const char *path, nb_module *m, nb_optimizer *optimizer, nb_lr_schedule *schedule,
                       int64_t *epoch);

/* The same for a compiled model: its module, its optimizer (built now if
 * compile named one and the parameters exist) and the epochs trained so
 * far (what nb_fit_opts.initial_epoch takes to resume). nb_model_fit saves
 * these too when nb_fit_opts.checkpoint_path is set. */
int nb_model_save_checkpoint(nb_model *model, const char *path);
int nb_model_load_checkpoint(nb_model *model, const char *path, int *epoch);

#ifdef __cplusplus
}
#endif
#endif
