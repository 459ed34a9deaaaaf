/* file.c — reading a whole file into memory, for the readers of nn/io. The
 * formats they read are parsed from one buffer (and inflated from one), so
 * a file is read once, in chunks that grow, which also works for pipes and
 * files whose size changes under us.
 */
#include "io_internal.h"

#include <errno.h>
#include <string.h>

int nb__read_file(const char *who, const char *path, uint8_t **data, size_t *size) {
    *data = NULL;
    *size = 0;
    if (!path) {
        nb_set_error("%s: path is NULL", who);
        return -1;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        nb_set_error("%s: %s: cannot open: %s", who, path, strerror(errno));
        return -1;
    }
    size_t len = 0, cap = 1 << 16;
    uint8_t *buf = nb_malloc(cap);
    for (;;) {
        if (!buf) {
            nb_set_error("%s: %s: out of memory reading the file", who, path);
            fclose(f);
            return -1;
        }
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap) break;
        uint8_t *more = cap <= SIZE_MAX / 2 ? nb_realloc(buf, cap * 2) : NULL;
        if (!more) nb_free(buf);
        buf = more;
        cap *= 2;
    }
    if (ferror(f)) {
        nb_set_error("%s: %s: read error after %zu bytes: %s", who, path, len, strerror(errno));
        nb_free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    *data = buf;
    *size = len;
    return 0;
}
