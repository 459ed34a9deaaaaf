/* fashion_mnist.c — real data in, a trained model out: Fashion-MNIST as
 * Debian ships it (gzipped IDX files), an MLP or a CNN trained with Keras's
 * progress and validation, the test accuracy, a checkpoint that reloads
 * into a fresh model with the same accuracy, and the history as CSV and as
 * an SVG chart.
 *
 *   build/examples/fashion_mnist                  MLP 784-128-10, 10 epochs
 *   build/examples/fashion_mnist --cnn            the CNN of the PyTorch peer, 5 epochs
 *   options: --epochs N  --data DIR  --save FILE  --resume FILE  --threads N
 *            --limit N (train on the first N images only: a quick run)
 *
 * The Keras program it follows:
 *   model = Sequential([Flatten(input_shape=(28, 28)), Dense(128, activation='relu'),
 *                       Dense(10, activation='softmax')])
 *   model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
 *   model.fit(x_train, y_train, epochs=10, batch_size=64, validation_split=0.1)
 *   model.evaluate(x_test, y_test)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nabla.h"

typedef struct options {
    bool cnn;
    int epochs; /* 0: the default of the network */
    const char *data, *save, *resume;
    int threads;   /* 0: nabla's default */
    int64_t limit; /* 0: every training image */
} options;

static int usage(const char *why) {
    fprintf(stderr,
            "fashion_mnist: %s\n"
            "usage: fashion_mnist [--cnn] [--epochs N] [--data DIR] [--save FILE] [--resume FILE]\n"
            "                     [--threads N] [--limit N]\n",
            why);
    return 2;
}

static int parse(int argc, char **argv, options *o) {
    *o = (options){.data = "/usr/share/datasets/fashion-mnist", .save = "fashion_mnist.safetensors"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--cnn") == 0) {
            o->cnn = true;
            continue;
        }
        if (!v) return usage("an option is missing its value");
        if (strcmp(a, "--epochs") == 0) o->epochs = atoi(v);
        else if (strcmp(a, "--data") == 0) o->data = v;
        else if (strcmp(a, "--save") == 0) o->save = v;
        else if (strcmp(a, "--resume") == 0) o->resume = v;
        else if (strcmp(a, "--threads") == 0) o->threads = atoi(v);
        else if (strcmp(a, "--limit") == 0) o->limit = atoll(v);
        else return usage("unknown option");
        i++;
    }
    if (o->epochs <= 0) o->epochs = o->cnn ? 5 : 10;
    return 0;
}

/* One of the four files; images come out [N, 28, 28] in [0, 1] (the CNN
 * adds the channel axis), labels [N] as class indices. */
static nb_tensor *load(const options *o, const char *file, bool labels) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", o->data, file);
    return labels ? nb_read_idx_labels(path, 10) : nb_read_idx_images(path, false);
}

/* The MLP of the Keras program above, or the PyTorch peer's CNN: conv 3x3
 * 1->32 pad 1, ReLU, max-pool 2, conv 3x3 32->64 pad 1, ReLU, max-pool 2,
 * Dense 3136->128 ReLU, Dense 128->10 (softmax here: the loss takes
 * probabilities, as Keras's does). */
static nb_model *build(bool cnn) {
    nb_model *m = nb_model_sequential();
    if (cnn) {
        nb_model_add(m, nb_conv2d_layer(32, 3, 3, &(nb_conv2d_layer_opts){.padding = {1, 1}, .activation = "relu"}));
        nb_model_add(m, nb_max_pool2d_layer(2, 2, NULL));
        nb_model_add(m, nb_conv2d_layer(64, 3, 3, &(nb_conv2d_layer_opts){.padding = {1, 1}, .activation = "relu"}));
        nb_model_add(m, nb_max_pool2d_layer(2, 2, NULL));
        nb_model_add(m, nb_flatten_layer());
        nb_model_add(m, nb_dense(128, "relu", 0));
    } else {
        nb_model_add(m, nb_flatten_layer());
        nb_model_add(m, nb_dense(128, "relu", 784));
    }
    nb_model_add(m, nb_dense(10, "softmax", 0));
    if (nb_model_compile(m, "adam", "sparse_categorical_crossentropy", "accuracy") != 0) {
        nb_model_free(m);
        return NULL;
    }
    return m;
}

/* Loss and accuracy on the 10,000 test images. */
static float test_accuracy(nb_model *m, nb_tensor *x, nb_tensor *y) {
    float out[2] = {0, 0};
    return nb_model_evaluate(m, x, y, 500, out, 2) == 2 ? out[1] : -1;
}

int main(int argc, char **argv) {
    options o;
    if (parse(argc, argv, &o) != 0) return 2;
    if (o.threads > 0) nb_set_num_threads(o.threads);
    nb_manual_seed(0);
    nb_scope_begin();

    nb_tensor *x = load(&o, "train-images-idx3-ubyte.gz", false);
    nb_tensor *y = load(&o, "train-labels-idx1-ubyte.gz", true);
    nb_tensor *xt = load(&o, "t10k-images-idx3-ubyte.gz", false);
    nb_tensor *yt = load(&o, "t10k-labels-idx1-ubyte.gz", true);
    if (!x || !y || !xt || !yt) {
        fprintf(stderr, "fashion_mnist: %s\n(the data set ships as a Debian package: "
                        "apt-get install dataset-fashion-mnist; or pass --data DIR)\n", nb_error());
        return 1;
    }
    if (o.limit > 0 && o.limit < nb_dim(x, 0)) {
        x = nb_slice(x, 0, 0, o.limit, 1);
        y = nb_slice(y, 0, 0, o.limit, 1);
    }
    if (o.cnn) { /* NCHW: one channel */
        x = nb_unsqueeze(x, 1);
        xt = nb_unsqueeze(xt, 1);
    }
    printf("Fashion-MNIST: %lld training images (the last 10%% validate), %lld test images; %s\n",
           (long long)nb_dim(x, 0), (long long)nb_dim(xt, 0), o.cnn ? "CNN" : "MLP 784-128-10");

    nb_model *model = build(o.cnn);
    nb_fit_opts fit = nb_fit_defaults();
    fit.epochs = o.epochs;
    fit.batch_size = 64;
    fit.validation_split = 0.1f; /* 54,000 to train on, as the PyTorch peers do */
    if (model && o.resume) {
        int done = 0;
        if (nb_model_load_checkpoint(model, o.resume, &done) != 0) goto failed;
        printf("resumed from %s after epoch %d\n", o.resume, done);
        fit.initial_epoch = done;
        fit.epochs = done + o.epochs;
    }
    nb_history *history = model ? nb_model_fit(model, x, y, &fit) : NULL;
    if (!history || nb_history_stop_reason(history)[0]) goto failed;
    nb_model_summary(model, stdout);

    float accuracy = test_accuracy(model, xt, yt);
    printf("test accuracy: %.2f%%\n", 100.0 * accuracy);
    if (nb_model_save_checkpoint(model, o.save) != 0 || nb_history_save_csv(history, "fashion_mnist_history.csv") != 0 ||
        nb_history_save_svg(history, "fashion_mnist_history.svg",
                            o.cnn ? "Fashion-MNIST, CNN" : "Fashion-MNIST, MLP 784-128-10") != 0)
        goto failed;
    printf("saved %s, fashion_mnist_history.csv and fashion_mnist_history.svg\n", o.save);

    /* the checkpoint in a model of its own gives the same accuracy */
    nb_model *fresh = build(o.cnn);
    int epoch = 0;
    nb_tensor *probe = nb_slice(xt, 0, 0, 1, 1); /* builds the lazy layers first */
    if (!fresh || !nb_model_predict(fresh, probe, 1) || nb_model_load_checkpoint(fresh, o.save, &epoch) != 0) {
        nb_model_free(fresh);
        goto failed;
    }
    float again = test_accuracy(fresh, xt, yt);
    printf("reloaded from %s (epoch %d): test accuracy %.2f%%%s\n", o.save, epoch, 100.0 * again,
           again == accuracy ? ", the same" : ", DIFFERENT");
    nb_model_free(fresh);
    nb_history_free(history);
    nb_model_free(model);
    nb_scope_end();
    return again == accuracy ? 0 : 1;

failed:
    fprintf(stderr, "fashion_mnist: %s\n", nb_error() ? nb_error() : "training stopped");
    return 1;
}
