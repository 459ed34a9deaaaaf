/* io_internal.h — what the readers of nn/io share and keep private: reading
 * a whole file into memory, and the inflater with the name of the public
 * function that called it, so that a message about a corrupt .gz inside an
 * IDX or CSV read starts with nb_read_idx_images or nb_read_csv, not with a
 * function the user never called.
 */
#ifndef NB_IO_INTERNAL_H
#define NB_IO_INTERNAL_H

#include "nb_io.h"

/* Reads the whole file into a new nb_malloc buffer (never NULL on success,
 * even when the file is empty). Returns 0, or -1 with a message
 * "who: path: what". */
int nb__read_file(const char *who, const char *path, uint8_t **data, size_t *size);

/* Replacing a file atomically: nb__atomic_begin opens a temporary file
 * beside path (a.f, to write to), nb__atomic_commit makes it durable and
 * renames it over path, nb__atomic_abort removes it. On any failure (a
 * message "who: path: what") the old file is intact and nothing is left. */
typedef struct nb__atomic_file {
    FILE *f;
    const char *path;
    char *tmp, *folder;
} nb__atomic_file;
int nb__atomic_begin(const char *who, const char *path, nb__atomic_file *a);
int nb__atomic_commit(const char *who, nb__atomic_file *a);
void nb__atomic_abort(nb__atomic_file *a);

/* nb_inflate, with messages starting "who: ". */
int nb__inflate(const char *who, const void *in, size_t size, uint8_t **out, size_t *out_size,
                const nb_inflate_opts *opts);

/* Whether the bytes start like a gzip member (1f 8b). */
static inline bool nb__is_gzip(const uint8_t *data, size_t size) {
    return size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
}

/* safetensors with messages starting "who: " (nn/io/safetensors.c). */
nb_safetensors *nb__safetensors_read(const char *who, const char *path);
int nb__safetensors_write(const char *who, const char *path, int n, const char *const *names,
                          nb_tensor *const *tensors, const char *const *metadata);
/* Converts tensor i's data to n floats at out (n = its element count). */
int nb__safetensors_copy(const nb_safetensors *st, int i, float *out);
/* The name messages give the file, and where entry i starts in it. */
const char *nb__safetensors_file(const nb_safetensors *st);
size_t nb__safetensors_entry_offset(const nb_safetensors *st, int i);

#endif
