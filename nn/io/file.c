/* file.c — reading a whole file into memory, and replacing one atomically,
 * for the readers and writers of nn/io. The
 * formats they read are parsed from one buffer (and inflated from one), so
 * a file is read once, in chunks that grow, which also works for pipes and
 * files whose size changes under us.
 */
#include "io_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* ---- replacing a file atomically ------------------------------------------------
 * The data goes to a temporary file beside the target (so that rename stays
 * within one file system and is atomic), is flushed and fsync'ed, renamed
 * over the target, and the folder is fsync'ed so that the rename survives a
 * crash. Until the rename the old file is untouched; after it the new one is
 * complete. */

int nb__atomic_begin(const char *who, const char *path, nb__atomic_file *a) {
    memset(a, 0, sizeof *a);
    size_t n = strlen(path);
    a->tmp = nb_malloc(n + 16);
    a->folder = nb_malloc(n + 2);
    if (!a->tmp || !a->folder) {
        nb_set_error("%s: %s: out of memory", who, path);
        nb_free(a->tmp); /* no temporary file yet: nothing to unlink */
        a->tmp = NULL;
        nb__atomic_abort(a);
        return -1;
    }
    const char *slash = strrchr(path, '/');
    if (slash) {
        memcpy(a->folder, path, (size_t)(slash - path) + 1);
        a->folder[slash - path + 1] = '\0';
    } else
        strcpy(a->folder, ".");
    snprintf(a->tmp, n + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(a->tmp);
    if (fd < 0) {
        nb_set_error("%s: %s: cannot create a temporary file in %s: %s", who, path, a->folder,
                     strerror(errno));
        nb_free(a->tmp);
        a->tmp = NULL;
        nb__atomic_abort(a);
        return -1;
    }
    (void)fchmod(fd, 0644); /* mkstemp makes it 0600; a saved file is a normal file */
    a->f = fdopen(fd, "wb");
    if (!a->f) {
        nb_set_error("%s: %s: cannot open %s: %s", who, path, a->tmp, strerror(errno));
        close(fd);
        nb__atomic_abort(a);
        return -1;
    }
    a->path = path;
    return 0;
}

int nb__atomic_commit(const char *who, nb__atomic_file *a) {
    bool ok = !ferror(a->f) && fflush(a->f) == 0 && fsync(fileno(a->f)) == 0;
    int saved = errno;
    if (fclose(a->f) != 0 && ok) {
        ok = false;
        saved = errno;
    }
    a->f = NULL;
    if (!ok) {
        nb_set_error("%s: %s: cannot write %s: %s", who, a->path, a->tmp, strerror(saved));
        nb__atomic_abort(a);
        return -1;
    }
    if (rename(a->tmp, a->path) != 0) {
        nb_set_error("%s: %s: cannot rename %s over it: %s", who, a->path, a->tmp, strerror(errno));
        nb__atomic_abort(a);
        return -1;
    }
    int dfd = open(a->folder, O_RDONLY);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    nb_free(a->tmp);
    a->tmp = NULL;
    nb__atomic_abort(a); /* frees the rest; the temporary is gone already */
    return 0;
}

void nb__atomic_abort(nb__atomic_file *a) {
    if (a->f) fclose(a->f);
    if (a->tmp) unlink(a->tmp);
    nb_free(a->tmp);
    nb_free(a->folder);
    memset(a, 0, sizeof *a);
}
