/* char_gpt.c — a character-level GPT trained through nabla's autograd on
 * text Debian ships: the fortune cookies of the `fortunes` package
 * (/usr/share/games/fortunes). It is the model and optimizer of the PyTorch
 * peer script, so the two can be timed side by side and their losses
 * compared: token and position embeddings, 4 pre-LayerNorm transformer
 * blocks (4 heads, causal), n_embd 128, context 64, a final LayerNorm and a
 * separate output head; AdamW lr 1e-3, betas (0.9, 0.99), weight decay
 * 0.01, batch 32, no dropout. Parameters start as PyTorch's defaults
 * (Linear U(±1/sqrt(in)), Embedding N(0, 1)), so the loss curves match.
 *
 * The text is every regular file of the folder that is not a .dat index or
 * a .u8 copy, in sorted order, concatenated; the vocabulary is the sorted
 * set of its bytes; the last 10% is validation.
 *
 *   build/examples/char_gpt                       train 2500 steps, then sample
 *   options: --steps N  --threads N  --eval-every N  --save FILE  --resume FILE
 *            --sample N (characters to generate, 0: none)  --prompt TEXT
 *            --seed N  --data DIR
 *
 * It prints the training loss and ms/step as it goes, the validation loss
 * (mean over the same 20 batches each time) every --eval-every steps and at
 * the end, saves a checkpoint (parameters, AdamW state, step count and the
 * batch generator) that --resume continues exactly, and samples text from
 * the prompt.
 */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "nabla.h"

enum { CTX = 64, EMBD = 128, HEADS = 4, LAYERS = 4, BATCH = 32, EVAL_BATCHES = 20 };

typedef struct options {
    int steps, threads, eval_every, sample;
    const char *save, *resume, *prompt, *data;
    uint64_t seed;
} options;

static int usage(const char *why) {
    fprintf(stderr,
            "char_gpt: %s\n"
            "usage: char_gpt [--steps N] [--threads N] [--eval-every N] [--save FILE] [--resume FILE]\n"
            "                [--sample N] [--prompt TEXT] [--seed N] [--data DIR]\n",
            why);
    return 2;
}

static int parse(int argc, char **argv, options *o) {
    *o = (options){.steps = 2500, .eval_every = 250, .sample = 400, .prompt = "The ",
                   .data = "/usr/share/games/fortunes"};
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return usage("an option is missing its value");
        if (strcmp(a, "--steps") == 0) o->steps = atoi(v);
        else if (strcmp(a, "--threads") == 0) o->threads = atoi(v);
        else if (strcmp(a, "--eval-every") == 0) o->eval_every = atoi(v);
        else if (strcmp(a, "--sample") == 0) o->sample = atoi(v);
        else if (strcmp(a, "--save") == 0) o->save = v;
        else if (strcmp(a, "--resume") == 0) o->resume = v;
        else if (strcmp(a, "--prompt") == 0) o->prompt = v;
        else if (strcmp(a, "--seed") == 0) o->seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--data") == 0) o->data = v;
        else return usage("unknown option");
    }
    if (o->steps < 0 || o->eval_every < 0 || o->sample < 0) return usage("counts must be >= 0");
    return 0;
}

/* ---- the text --------------------------------------------------------------------- */

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool wanted(const char *name) {
    size_t n = strlen(name);
    if (name[0] == '.') return false;
    if (n >= 4 && strcmp(name + n - 4, ".dat") == 0) return false;
    if (n >= 3 && strcmp(name + n - 3, ".u8") == 0) return false;
    return true;
}

/* The concatenated text of dir's files, or NULL with a message. */
static unsigned char *read_corpus(const char *dir, size_t *size) {
    DIR *d = opendir(dir);
    if (!d) return NULL;
    char **names = NULL;
    size_t n = 0, cap = 0, total = 0;
    unsigned char *text = NULL;
    for (struct dirent *e; (e = readdir(d));) {
        if (!wanted(e->d_name)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **more = realloc(names, cap * sizeof *names);
            if (!more) goto done;
            names = more;
        }
        names[n] = malloc(strlen(dir) + strlen(e->d_name) + 2);
        if (!names[n]) goto done;
        sprintf(names[n], "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(names[n], &st) != 0 || !S_ISREG(st.st_mode)) {
            free(names[n]);
            continue;
        }
        total += (size_t)st.st_size;
        n++;
    }
    qsort(names, n, sizeof *names, by_name);
    text = malloc(total ? total : 1);
    *size = 0;
    for (size_t i = 0; text && i < n; i++) {
        FILE *f = fopen(names[i], "rb");
        if (!f) continue;
        *size += fread(text + *size, 1, total - *size, f);
        fclose(f);
    }
done:
    closedir(d);
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    if (text && *size == 0) {
        free(text);
        text = NULL;
    }
    return text;
}

/* ---- the model ---------------------------------------------------------------------- */

typedef struct gpt {
    nb_module base;
    nb_module *tok, *pos, *blocks, *ln, *head;
} gpt;

/* idx [B,T] of token ids -> logits [B,T,V] */
static nb_tensor *gpt_forward(nb_module *m, nb_tensor *idx) {
    gpt *g = (gpt *)m;
    nb_tensor *x = nb_add(nb_module_forward(g->tok, idx),
                          nb_module_forward(g->pos, nb_arange(0, (double)nb_dim(idx, 1), 1)));
    return nb_module_forward(g->head, nb_module_forward(g->ln, nb_module_forward(g->blocks, x)));
}
static const nb_module_type gpt_type = {"GPT", gpt_forward, NULL};

/* PyTorch's default initialisation: Linear weight and bias U(±1/sqrt(in)),
 * Embedding N(0, 1); LayerNorm ones and zeros as nabla already has them. */
static void init_like_pytorch(nb_module *m) {
    int n;
    nb_tensor **p = nb_module_parameters(m, &n);
    for (int i = 0; i < n; i++) {
        const char *name = nb_module_parameter_name(m, i);
        if (strncmp(name, "tok.", 4) == 0 || strncmp(name, "pos.", 4) == 0) {
            nb_init_normal(p[i], 0, 1, NULL);
        } else if (!strstr(name, "ln")) {
            /* the Linear's input size: its weight [in, out] is this or the one before */
            nb_tensor *w = strstr(name, ".bias") ? p[i - 1] : p[i];
            float bound = 1.0f / sqrtf((float)nb_dim(w, 0));
            nb_init_uniform(p[i], -bound, bound, NULL);
        }
    }
}

static nb_module *gpt_new(int64_t vocab) {
    gpt *g = (gpt *)nb_module_new(&gpt_type, sizeof *g);
    if (!g) return NULL;
    nb_module *blocks[LAYERS];
    for (int i = 0; i < LAYERS; i++) blocks[i] = nb_transformer_block(EMBD, HEADS, true);
    g->tok = nb_module_add_child(&g->base, "tok", nb_embedding_layer(vocab, EMBD));
    g->pos = nb_module_add_child(&g->base, "pos", nb_embedding_layer(CTX, EMBD));
    g->blocks = nb_module_add_child(&g->base, "blocks", nb_sequential(LAYERS, blocks));
    g->ln = nb_module_add_child(&g->base, "ln", nb_layer_norm_layer(1, 1e-5f));
    g->head = nb_module_add_child(&g->base, "head", nb_linear(EMBD, vocab));
    nb_module *m = nb_module_ok(&g->base);
    if (m) {
        /* build the final LayerNorm now, so that every parameter exists */
        nb_scope_begin();
        bool was = nb_set_grad_enabled(false);
        nb_module_forward(g->ln, nb_zeros(NB_SHAPE(1, EMBD)));
        nb_set_grad_enabled(was);
        nb_scope_end();
        init_like_pytorch(m);
    }
    return m;
}

/* ---- batches ------------------------------------------------------------------------- */

/* x, y [BATCH, CTX]: windows of ids at offsets drawn from g, y shifted by one. */
static void make_batch(nb_generator *g, const unsigned char *ids, size_t n, float *x, float *y) {
    for (int b = 0; b < BATCH; b++) {
        size_t start = (size_t)(nb_generator_uniform(g) * (double)(n - CTX - 1));
        for (int t = 0; t < CTX; t++) {
            x[b * CTX + t] = ids[start + t];
            y[b * CTX + t] = ids[start + t + 1];
        }
    }
}

/* Mean cross-entropy over EVAL_BATCHES validation batches, without a graph.
 * The batches come from a generator of their own, seeded the same each
 * time: every evaluation sees the same batches (so the figures compare),
 * and training's generator, which a checkpoint saves, is left alone. */
static float evaluate(nb_module *m, const unsigned char *ids, size_t n, float *x, float *y) {
    nb_generator gen;
    nb_generator_seed(&gen, 12345);
    bool was = nb_set_grad_enabled(false);
    nb_module_train(m, false);
    double total = 0;
    for (int i = 0; i < EVAL_BATCHES; i++) {
        nb_scope_begin();
        make_batch(&gen, ids, n, x, y);
        nb_tensor *logits = nb_module_forward(m, nb_from_array(NB_SHAPE(BATCH, CTX), x));
        total += nb_item(nb_cross_entropy_loss(logits, nb_from_array(NB_SHAPE(BATCH, CTX), y), NB_REDUCE_MEAN));
        nb_scope_end();
    }
    nb_module_train(m, true);
    nb_set_grad_enabled(was);
    return (float)(total / EVAL_BATCHES);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- sampling ------------------------------------------------------------------------ */

/* Appends count characters to the prompt, each drawn from the model's
 * distribution for the last CTX characters (temperature 0.8, top 40). */
static int generate(nb_module *m, const unsigned char *vocab, int nvocab, const int *stoi,
                    const char *prompt, int count) {
    size_t plen = strlen(prompt);
    int *ctx = malloc(sizeof(int) * (plen + (size_t)count + 1));
    if (!ctx) return -1;
    int len = 0;
    for (size_t i = 0; i < plen; i++)
        if (stoi[(unsigned char)prompt[i]] >= 0) ctx[len++] = stoi[(unsigned char)prompt[i]];
    if (len == 0) ctx[len++] = 0;
    bool was = nb_set_grad_enabled(false);
    nb_module_train(m, false);
    nb_generator gen;
    nb_generator_seed(&gen, 1);
    printf("---- sample ----\n");
    for (int i = 0; i < len; i++) putchar(vocab[ctx[i]]);
    int status = 0;
    float window[CTX];
    for (int i = 0; i < count; i++) {
        int start = len > CTX ? len - CTX : 0, t = len - start;
        for (int j = 0; j < t; j++) window[j] = (float)ctx[start + j];
        nb_scope_begin();
        nb_tensor *logits = nb_module_forward(m, nb_from_array(NB_SHAPE(1, t), window));
        nb_tensor *last = nb_reshape(nb_slice(logits, 1, t - 1, t, 1), NB_SHAPE(nvocab));
        nb_tensor *next = nb_sample_logits(last, 0.8f, 40, &gen);
        if (!next) status = -1;
        else ctx[len++] = (int)nb_item(next);
        nb_scope_end();
        if (status) break;
        putchar(vocab[ctx[len - 1]]);
    }
    printf("\n----------------\n");
    nb_module_train(m, true);
    nb_set_grad_enabled(was);
    free(ctx);
    return status;
}

/* ---- main ----------------------------------------------------------------------------- */

int main(int argc, char **argv) {
    int status = 1; /* until everything has succeeded */
    options o;
    if (parse(argc, argv, &o) != 0) return 2;
    if (o.threads > 0) nb_set_num_threads(o.threads);
    nb_manual_seed(o.seed);

    size_t size = 0;
    unsigned char *text = read_corpus(o.data, &size);
    if (!text || size < 10 * (CTX + 1)) {
        fprintf(stderr, "char_gpt: no text in %s (it ships as a Debian package: apt-get install "
                        "fortunes; or pass --data DIR)\n", o.data);
        free(text);
        return 1;
    }
    /* the vocabulary: the sorted set of bytes; the text becomes ids in place */
    int stoi[256], nvocab = 0;
    unsigned char vocab[256];
    bool seen[256] = {false};
    for (size_t i = 0; i < size; i++) seen[text[i]] = true;
    for (int c = 0; c < 256; c++) {
        stoi[c] = seen[c] ? nvocab : -1;
        if (seen[c]) vocab[nvocab++] = (unsigned char)c;
    }
    for (size_t i = 0; i < size; i++) text[i] = (unsigned char)stoi[text[i]];
    size_t ntrain = (size_t)(0.9 * (double)size);
    const unsigned char *train = text, *val = text + ntrain;
    size_t nval = size - ntrain;

    float *x = malloc(sizeof(float) * BATCH * CTX), *y = malloc(sizeof(float) * BATCH * CTX);
    double *times = malloc(sizeof(double) * (size_t)(o.steps + 1));
    nb_module *model = gpt_new(nvocab);
    int nparams = 0;
    nb_tensor **params = model ? nb_module_parameters(model, &nparams) : NULL;
    nb_adam_opts ao = nb_adamw_defaults();
    ao.lr = 1e-3f;
    ao.beta1 = 0.9f;
    ao.beta2 = 0.99f;
    ao.weight_decay = 0.01f;
    nb_optimizer *opt = params ? nb_adamw(nparams, params, &ao) : NULL;
    if (!opt || !x || !y || !times) goto failed;
    printf("char-gpt: %zu characters, vocabulary %d, %lld parameters, %d layers, %d heads, n_embd %d, "
           "context %d, batch %d, %d thread(s)\n",
           size, nvocab, (long long)nb_module_num_weights(model), LAYERS, HEADS, EMBD, CTX, BATCH,
           nb_get_num_threads());

    int64_t first = 0;
    if (o.resume) {
        if (nb_load_checkpoint(o.resume, model, opt, NULL, &first) != 0) goto failed;
        printf("resumed from %s after step %lld\n", o.resume, (long long)first);
    }

    float loss_value = NAN;
    int timed = 0;
    for (int step = 0; step < o.steps; step++) {
        make_batch(nb_default_generator(), train, ntrain, x, y);
        double t0 = now_ms();
        nb_scope_begin();
        nb_tensor *logits = nb_module_forward(model, nb_from_array(NB_SHAPE(BATCH, CTX), x));
        nb_tensor *loss = nb_cross_entropy_loss(logits, nb_from_array(NB_SHAPE(BATCH, CTX), y), NB_REDUCE_MEAN);
        nb_optimizer_zero_grad(opt);
        int rc = loss ? nb_backward(loss) : -1;
        if (rc == 0) rc = nb_optimizer_step(opt);
        loss_value = loss ? nb_item(loss) : NAN;
        nb_scope_end();
        times[timed++] = now_ms() - t0;
        if (rc != 0) goto failed;
        long long done = first + step + 1;
        if (step % 10 == 9 || step == o.steps - 1) {
            printf("step %5lld  train loss %.4f  %.1f ms/step\n", done, (double)loss_value, times[timed - 1]);
            fflush(stdout);
        }
        if (o.eval_every > 0 && done % o.eval_every == 0 && step != o.steps - 1) {
            printf("step %5lld  val loss %.4f\n", done, (double)evaluate(model, val, nval, x, y));
            fflush(stdout);
        }
    }
    qsort(times, (size_t)timed, sizeof *times, by_value);
    float val_loss = evaluate(model, val, nval, x, y);
    printf("char-gpt params=%lld vocab=%d chars=%zu threads=%d steps=%lld ms/step median %.1f; "
           "train loss %.3f; val loss %.3f\n",
           (long long)nb_module_num_weights(model), nvocab, size, nb_get_num_threads(),
           (long long)(first + o.steps), timed ? times[timed / 2] : 0.0, (double)loss_value,
           (double)val_loss);
    if (o.save) {
        if (nb_save_checkpoint(o.save, model, opt, NULL, first + o.steps) != 0) goto failed;
        printf("saved %s\n", o.save);
    }
    if (o.sample > 0 && generate(model, vocab, nvocab, stoi, o.prompt, o.sample) != 0) goto failed;
    status = 0;

failed:
    if (status != 0) fprintf(stderr, "char_gpt: %s\n", nb_error() ? nb_error() : "out of memory");
    nb_optimizer_free(opt);
    nb_module_free(model);
    free(times);
    free(x);
    free(y);
    free(text);
    return status;
}
