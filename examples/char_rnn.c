/* char_rnn.c — a character-level LSTM that learns what English words look
 * like from Debian's word list (package wamerican, /usr/share/dict/words)
 * and then makes up new ones: an embedding, one LSTM and a linear layer
 * over 27 tokens (a to z, and '.' marking both the start and the end of a
 * word), trained with Adam on per-word sequences, then sampled a character
 * at a time with nb_sample_logits.
 *
 *   build/examples/char_rnn                      2,000 steps of 32 words
 *   options: --steps N  --batch N  --hidden N  --lr X  --threads N  --seed N
 *            --temperature T (default 0.8; 0 is argmax)  --top-k K (0: all)
 *            --samples N (words to generate)  --words FILE
 *            --limit N (only the first N words of the list: a quick run)
 *
 * Each word "cab" is the sequence . c a b with targets c a b . : the model
 * reads a prefix and predicts the next character, and the loss is the mean
 * cross-entropy per predicted character (nats), padding masked out. One
 * word in twenty is held out to measure the loss on words never trained
 * on. A uniform guess scores ln 27 = 3.30.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nabla.h"

enum { VOCAB = 27, MAX_LETTERS = 20, EMBED = 16 };

typedef struct options {
    int steps, batch, hidden, threads, top_k, samples, limit;
    unsigned long long seed;
    float lr, temperature;
    const char *words;
} options;

static int usage(const char *why) {
    fprintf(stderr,
            "char_rnn: %s\n"
            "usage: char_rnn [--steps N] [--batch N] [--hidden N] [--lr X] [--threads N] [--seed N]\n"
            "                [--temperature T] [--top-k K] [--samples N] [--words FILE] [--limit N]\n",
            why);
    return 2;
}

static int parse(int argc, char **argv, options *o) {
    *o = (options){.steps = 2000, .batch = 32, .hidden = 128, .samples = 20, .lr = 0.005f,
                   .temperature = 0.8f, .words = "/usr/share/dict/words"};
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return usage("an option is missing its value");
        if (strcmp(a, "--steps") == 0) o->steps = atoi(v);
        else if (strcmp(a, "--batch") == 0) o->batch = atoi(v);
        else if (strcmp(a, "--hidden") == 0) o->hidden = atoi(v);
        else if (strcmp(a, "--lr") == 0) o->lr = strtof(v, NULL);
        else if (strcmp(a, "--threads") == 0) o->threads = atoi(v);
        else if (strcmp(a, "--seed") == 0) o->seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--temperature") == 0) o->temperature = strtof(v, NULL);
        else if (strcmp(a, "--top-k") == 0) o->top_k = atoi(v);
        else if (strcmp(a, "--samples") == 0) o->samples = atoi(v);
        else if (strcmp(a, "--words") == 0) o->words = v;
        else if (strcmp(a, "--limit") == 0) o->limit = atoi(v);
        else return usage("unknown option");
    }
    if (o->steps < 0 || o->batch < 1 || o->hidden < 1 || !(o->lr > 0) || o->samples < 0 || !(o->temperature >= 0))
        return usage("steps, samples >= 0; batch, hidden, lr > 0; temperature >= 0");
    return 0;
}

/* ---- the word list ----------------------------------------------------------------------- */

typedef struct word_list {
    char (*w)[MAX_LETTERS + 1];
    int n, cap;
} word_list;

static int push(word_list *l, const char *w) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 4096;
        void *p = realloc(l->w, (size_t)cap * sizeof *l->w);
        if (!p) return -1;
        l->w = p;
        l->cap = cap;
    }
    strcpy(l->w[l->n++], w);
    return 0;
}

/* Keeps the lines that are a word of 1 to MAX_LETTERS letters a-z (no
 * capitals, which are names, and no "'s" forms); every twentieth goes to
 * the held-out list. limit > 0 stops after that many. */
static int load_words(const char *path, int limit, word_list *train, word_list *held) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "char_rnn: cannot read %s: %s\n", path, strerror(errno));
        fprintf(stderr, "  Debian's word list comes with the package wamerican (apt-get install wamerican);\n"
                        "  or give another file of one word per line with --words FILE\n");
        return -1;
    }
    char line[256];
    int kept = 0;
    while ((limit <= 0 || kept < limit) && fgets(line, sizeof line, f)) {
        size_t len = strcspn(line, "\r\n");
        line[len] = 0;
        bool ok = len >= 1 && len <= MAX_LETTERS;
        for (size_t i = 0; ok && i < len; i++) ok = line[i] >= 'a' && line[i] <= 'z';
        if (!ok) continue;
        if (push(kept++ % 20 == 19 ? held : train, line) != 0) {
            fclose(f);
            fprintf(stderr, "char_rnn: out of memory\n");
            return -1;
        }
    }
    fclose(f);
    if (train->n == 0 || held->n == 0) {
        fprintf(stderr, "char_rnn: %s holds too few lowercase words (%d)\n", path, kept);
        return -1;
    }
    return 0;
}

static int compare_words(const void *a, const void *b) { return strcmp(a, b); }

/* ---- the model ---------------------------------------------------------------------------- */

/* Token of a letter: 1..26; 0 is '.', the start and end of a word. */
static float token(char c) { return (float)(c - 'a' + 1); }

typedef struct model {
    nb_module *net; /* Sequential: Embedding, LSTM (every step), Linear to VOCAB logits */
    nb_module *embed, *lstm, *head;
} model;

static int model_new(model *m, int hidden) {
    m->embed = nb_embedding_layer(VOCAB, EMBED);
    m->lstm = nb_lstm_layer(hidden, &(nb_rnn_opts){.input_size = EMBED, .return_sequences = true});
    m->head = nb_linear(hidden, VOCAB);
    m->net = nb_sequential(3, (nb_module *[]){m->embed, m->lstm, m->head});
    return m->net ? 0 : -1;
}

/* The mean loss per predicted character of n words, and its gradient when
 * grad mode is on. Rows are padded to the longest word; padded targets
 * have weight 0. */
static nb_tensor *batch_loss(model *m, const char (*words)[MAX_LETTERS + 1], const int *pick, int n) {
    int64_t t = 0;
    for (int i = 0; i < n; i++) {
        int64_t len = (int64_t)strlen(words[pick[i]]) + 1;
        t = len > t ? len : t;
    }
    nb_tensor *x = nb_zeros(NB_SHAPE(n, t)), *y = nb_zeros(NB_SHAPE(n * t)), *w = nb_zeros(NB_SHAPE(n * t));
    if (!x || !y || !w) return NULL;
    float *xd = nb_data_mut(x), *yd = nb_data_mut(y), *wd = nb_data_mut(w);
    int64_t count = 0;
    for (int i = 0; i < n; i++) {
        const char *s = words[pick[i]];
        int64_t len = (int64_t)strlen(s);
        for (int64_t j = 0; j <= len; j++) {
            xd[i * t + j] = j ? token(s[j - 1]) : 0;
            yd[i * t + j] = j < len ? token(s[j]) : 0;
            wd[i * t + j] = 1;
        }
        count += len + 1;
    }
    nb_tensor *logits = nb_reshape(nb_module_forward(m->net, x), NB_SHAPE(n * t, VOCAB));
    nb_tensor *each = nb_cross_entropy_loss(logits, y, NB_REDUCE_NONE);
    return nb_div_scalar(nb_sum(nb_mul(each, w), NB_ALL, false), (float)count);
}

/* The loss over a whole list, in batches of 256, without a graph. */
static float list_loss(model *m, const word_list *l) {
    bool was = nb_set_grad_enabled(false);
    double total = 0;
    int64_t chars = 0;
    int pick[256];
    for (int first = 0; first < l->n; first += 256) {
        int n = l->n - first < 256 ? l->n - first : 256, batch_chars = 0;
        for (int i = 0; i < n; i++) {
            pick[i] = first + i;
            batch_chars += (int)strlen(l->w[first + i]) + 1;
        }
        nb_scope_begin();
        total += (double)nb_item(batch_loss(m, (const char (*)[MAX_LETTERS + 1])l->w, pick, n)) * batch_chars;
        nb_scope_end();
        chars += batch_chars;
    }
    nb_set_grad_enabled(was);
    return (float)(total / (double)chars);
}

/* n new words, all at once: every row starts from '.', feeds back the
 * character it drew, and stops at the next '.' (or MAX_LETTERS). The
 * LSTM's state is carried by nb_lstm_run from one step to the next. */
static void generate(model *m, const options *o, nb_generator *g, const word_list *known) {
    int n = o->samples;
    if (n == 0) return;
    char(*out)[MAX_LETTERS + 1] = calloc((size_t)n, sizeof *out);
    bool *done = calloc((size_t)n, sizeof *done);
    if (!out || !done) {
        free(out);
        free(done);
        return;
    }
    bool was = nb_set_grad_enabled(false);
    nb_scope_begin();
    nb_tensor *h = NULL, *c = NULL, *next = nb_zeros(NB_SHAPE(n, 1));
    for (int step = 0; step < MAX_LETTERS && next; step++) {
        nb_tensor *emb = nb_module_forward(m->embed, next);
        nb_tensor *y = nb_lstm_run(m->lstm, emb, h, c, &h, &c);
        nb_tensor *logits = nb_clone(nb_reshape(nb_module_forward(m->head, y), NB_SHAPE(n, VOCAB)));
        /* no empty word: '.' cannot come first (probability 0) */
        if (logits && step == 0)
            for (int i = 0; i < n; i++) nb_data_mut(logits)[i * VOCAB] = -INFINITY;
        next = nb_reshape(nb_sample_logits(logits, o->temperature, o->top_k, g), NB_SHAPE(n, 1));
        if (!next) break;
        int live = 0;
        for (int i = 0; i < n; i++) {
            int tok = (int)nb_data(next)[i];
            if (done[i] || tok == 0) done[i] = true;
            else out[i][step] = (char)('a' + tok - 1);
            live += !done[i];
        }
        if (!live) break;
    }
    if (!next) fprintf(stderr, "char_rnn: generation failed: %s\n", nb_error());
    nb_scope_end();
    nb_set_grad_enabled(was);
    int novel = 0;
    for (int i = 0; i < n; i++) {
        bool seen = bsearch(out[i], known->w, (size_t)known->n, sizeof *known->w, compare_words) != NULL;
        novel += !seen;
        printf("  %-22s%s\n", out[i], seen ? "(in the word list)" : "");
    }
    printf("%d of %d are not in the word list\n", novel, n);
    free(out);
    free(done);
}

/* ---- main ------------------------------------------------------------------------------------- */

/* Wall-clock time, and the CPU time of the whole process (all threads):
 * on a machine shared with other work the second is the steadier. */
static double seconds(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    options o;
    if (parse(argc, argv, &o) != 0) return 2;
    if (o.threads > 0) nb_set_num_threads(o.threads);
    nb_manual_seed(o.seed);
    word_list train = {0}, held = {0};
    if (load_words(o.words, o.limit, &train, &held) != 0) {
        free(train.w);
        free(held.w);
        return 1;
    }
    printf("%d words to train on, %d held out; LSTM(%d), batches of %d words, %d steps, %d thread%s\n", train.n,
           held.n, o.hidden, o.batch, o.steps, nb_get_num_threads(), nb_get_num_threads() == 1 ? "" : "s");

    model m;
    int np = 0;
    nb_tensor **params = NULL;
    nb_optimizer *opt = NULL;
    int *pick = malloc((size_t)o.batch * sizeof *pick);
    if (model_new(&m, o.hidden) == 0) params = nb_module_parameters(m.net, &np);
    if (params) {
        nb_adam_opts adam = nb_adam_defaults();
        adam.lr = o.lr;
        opt = nb_adam(np, params, &adam);
    }
    int status = 0;
    if (!opt || !pick) {
        fprintf(stderr, "char_rnn: %s\n", nb_error() ? nb_error() : "out of memory");
        status = 1;
    }

    nb_generator *g = nb_default_generator();
    double running = 0, t0 = seconds(CLOCK_MONOTONIC), since = t0, cpu_since = seconds(CLOCK_PROCESS_CPUTIME_ID);
    int every = o.steps < 10 ? 1 : o.steps < 100 ? 10 : 100;
    for (int step = 1; step <= o.steps && status == 0; step++) {
        for (int i = 0; i < o.batch; i++) pick[i] = (int)(nb_generator_uniform(g) * train.n);
        nb_scope_begin();
        nb_tensor *loss = batch_loss(&m, (const char (*)[MAX_LETTERS + 1])train.w, pick, o.batch);
        nb_optimizer_zero_grad(opt);
        if (!loss || nb_backward(loss) != 0) {
            fprintf(stderr, "char_rnn: step %d failed: %s\n", step, nb_error());
            status = 1;
        } else {
            /* an LSTM's gradients can spike on a batch of odd words */
            nb_clip_grad_norm(np, params, 5.0f);
            nb_optimizer_step(opt);
            running += nb_item(loss);
        }
        nb_scope_end();
        if (status == 0 && step % every == 0) {
            double now = seconds(CLOCK_MONOTONIC), cpu = seconds(CLOCK_PROCESS_CPUTIME_ID);
            printf("step %5d  loss %.3f  %.1f ms/step (CPU %.1f)", step, running / every, (now - since) * 1e3 / every,
                   (cpu - cpu_since) * 1e3 / every);
            if (step % (every * 5) == 0 || step == o.steps) printf("  held-out loss %.3f", list_loss(&m, &held));
            printf("\n");
            fflush(stdout);
            running = 0;
            since = seconds(CLOCK_MONOTONIC);
            cpu_since = seconds(CLOCK_PROCESS_CPUTIME_ID);
        }
    }
    if (status == 0) {
        printf("trained in %.1f s; held-out loss %.3f nats per character\n", seconds(CLOCK_MONOTONIC) - t0, list_loss(&m, &held));
        if (o.top_k > 0) printf("new words (temperature %g, top-k %d):\n", o.temperature, o.top_k);
        else printf("new words (temperature %g):\n", o.temperature);
        qsort(train.w, (size_t)train.n, sizeof *train.w, compare_words);
        qsort(held.w, (size_t)held.n, sizeof *held.w, compare_words);
        nb_generator sampler;
        nb_generator_seed(&sampler, o.seed);
        /* the held-out words are in the word list too */
        word_list all = {0};
        for (int i = 0; i < train.n && status == 0; i++) status = push(&all, train.w[i]);
        for (int i = 0; i < held.n && status == 0; i++) status = push(&all, held.w[i]);
        if (status == 0) {
            qsort(all.w, (size_t)all.n, sizeof *all.w, compare_words);
            generate(&m, &o, &sampler, &all);
        }
        free(all.w);
        if (status != 0) fprintf(stderr, "char_rnn: out of memory\n");
        status = status ? 1 : 0;
    }
    nb_optimizer_free(opt);
    nb_module_free(m.net);
    free(pick);
    free(train.w);
    free(held.w);
    return status;
}
