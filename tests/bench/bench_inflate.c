/* bench_inflate.c — how fast nabla reads data as distributed: the median
 * over 7 runs of nb_gunzip_file on Fashion-MNIST's 26 MB
 * train-images-idx3-ubyte.gz (47 MB out: reading, inflating, checking the
 * CRC), and of nb_read_idx_images on it (the same, plus the [60000,28,28]
 * float tensor). Both wall-clock and process CPU time are printed, since
 * a busy machine stretches the first but hardly the second. The peer is
 * `gzip -dc FILE > /dev/null` timed the same way.
 *
 *   usage: bench_inflate [file.gz]   (default: the Debian package's copy)
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "nabla.h"
#include "bench_util.h"

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1]
                                : "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz";
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("bench_inflate: %s not found (apt-get install dataset-fashion-mnist); skipped\n", path);
        return 77;
    }
    fclose(f);
    enum { RUNS = 7 };
    for (int what = 0; what < 2; what++) {
        double wall[RUNS], cpu[RUNS];
        size_t n = 0;
        for (int r = 0; r < RUNS; r++) {
            double w0 = bench_clock(CLOCK_MONOTONIC), c0 = bench_clock(CLOCK_PROCESS_CPUTIME_ID);
            if (what == 0) {
                uint8_t *data;
                if (nb_gunzip_file(path, &data, &n, NULL)) {
                    printf("%s\n", nb_error());
                    return 1;
                }
                nb_free(data);
            } else {
                nb_tensor *x = nb_read_idx_images(path, false);
                if (!x) {
                    printf("%s\n", nb_error());
                    return 1;
                }
                n = (size_t)nb_numel(x);
                nb_release(x);
            }
            wall[r] = bench_clock(CLOCK_MONOTONIC) - w0;
            cpu[r] = bench_clock(CLOCK_PROCESS_CPUTIME_ID) - c0;
        }
        printf("%-20s %zu %s: %.3f s wall, %.3f s CPU (medians of %d)\n",
               what ? "nb_read_idx_images" : "nb_gunzip_file", n, what ? "floats" : "bytes",
               median(wall, RUNS), median(cpu, RUNS), RUNS);
    }
    return 0;
}
