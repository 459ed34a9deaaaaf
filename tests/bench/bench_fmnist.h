/* bench_fmnist.h — what the Fashion-MNIST benchmarks (bench_mlp, bench_cnn)
 * share with their PyTorch peers: the data set where Debian's
 * dataset-fashion-mnist installs it, and the peers' loss, softmax
 * cross-entropy on the logits. */
#ifndef NB_BENCH_FMNIST_H
#define NB_BENCH_FMNIST_H

#include <stdio.h>

#include "nabla.h"

#define BENCH_FMNIST_DIR "/usr/share/datasets/fashion-mnist/"

static nb_tensor *cross_entropy(nb_tensor *logits, nb_tensor *labels) {
    return nb_cross_entropy_loss(logits, labels, NB_REDUCE_MEAN);
}

/* The images (float in [0, 1]) and labels of one part, "train" or "t10k",
 * in the current scope; false, having said so on stdout with who's name,
 * when the data set is not installed (a benchmark then skips). */
static bool bench_fmnist(const char *who, const char *part, nb_tensor **x, nb_tensor **y) {
    char images[128], labels[128];
    snprintf(images, sizeof images, BENCH_FMNIST_DIR "%s-images-idx3-ubyte.gz", part);
    snprintf(labels, sizeof labels, BENCH_FMNIST_DIR "%s-labels-idx1-ubyte.gz", part);
    *x = nb_read_idx_images(images, false);
    *y = nb_read_idx_labels(labels, 10);
    if (*x && *y) return true;
    printf("%s: skipped, no data set (apt-get install dataset-fashion-mnist): %s\n", who, nb_error());
    return false;
}

#endif
