/* test_checkpoint.c — parameter files and training checkpoints
 * (nn/io/checkpoint.c): round trips, every mismatch in one message, partial
 * loads, all-or-nothing loads, saves that fail (out of memory at every
 * allocation, a full disk) or are killed at random moments leaving the old
 * file intact, training resumed in a fresh process bit-identical to an
 * uninterrupted run (with fit and with an explicit loop), and the round
 * trip through PyTorch when python3 has torch.
 */
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

TestSuite(checkpoint, NB_TEST_HOOKS);

static char dir[64];

static void make_dir(void) {
    strcpy(dir, "/tmp/nb_test_ckpt_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static const char *in_dir(const char *name) {
    static char paths[4][512];
    static int k;
    char *p = paths[k++ % 4];
    snprintf(p, 512, "%s/%.255s", dir, name);
    return p;
}

/* Files in dir other than the listed one (temporaries left behind). */
static int others_in_dir(const char *keep) {
    DIR *d = opendir(dir);
    int count = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.' && strcmp(e->d_name, keep) != 0) count++;
    if (d) closedir(d);
    return count;
}

static void remove_dir(void) {
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));)
        if (e->d_name[0] != '.') unlink(in_dir(e->d_name));
    if (d) closedir(d);
    rmdir(dir);
}

/* Ends a forked child with code by replacing the process image rather than
 * exiting: the child holds a copy of the parent's heap whose owners did not
 * survive the fork, and a memory checker would report those blocks at exit. */
static _Noreturn void child_exit(int code) {
    char cmd[32];
    snprintf(cmd, sizeof cmd, "exit %d", code);
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(code);
}

/* nb_sequential(Linear(in, hidden), ReLU, Linear(hidden, out)): named like
 * torch.nn.Sequential(Linear, ReLU, Linear). */
static nb_module *mlp(int64_t in, int64_t hidden, int64_t out) {
    return nb_sequential(3, (nb_module *[]){nb_linear(in, hidden), nb_relu_layer(), nb_linear(hidden, out)});
}

/* Whether every parameter of a and b is bitwise equal. */
static bool same_params(nb_module *a, nb_module *b) {
    int na, nb;
    nb_tensor **pa = nb_module_parameters(a, &na), **pb = nb_module_parameters(b, &nb);
    if (na != nb) return false;
    for (int i = 0; i < na; i++)
        if (!nb_same_shape(pa[i], pb[i]) ||
            memcmp(nb_data(pa[i]), nb_data(pb[i]), sizeof(float) * (size_t)nb_numel(pa[i])) != 0)
            return false;
    return true;
}

/* Whether every parameter of m equals the file's tensor of its name, bitwise. */
static bool params_equal_file(nb_module *m, const char *path) {
    nb_safetensors *st = nb_safetensors_read(path);
    cr_assert_not_null(st, "%s", nb_error());
    int n;
    nb_tensor **p = nb_module_parameters(m, &n);
    bool same = true;
    nb_scope_begin();
    for (int i = 0; i < n && same; i++) {
        nb_tensor *t = nb_safetensors_get(st, nb_module_parameter_name(m, i));
        same = t && nb_same_shape(t, p[i]) &&
               memcmp(nb_data(t), nb_data(p[i]), sizeof(float) * (size_t)nb_numel(t)) == 0;
    }
    nb_scope_end();
    nb_safetensors_free(st);
    return same;
}

Test(checkpoint, parameters_round_trip) {
    make_dir();
    nb_module *a = mlp(4, 8, 3), *b = mlp(4, 8, 3);
    cr_assert(!same_params(a, b));
    const char *meta[] = {"note", "first", NULL};
    cr_assert_eq(nb_save_parameters(a, in_dir("p.safetensors"), meta), 0, "%s", nb_error());
    cr_assert_eq(nb_load_parameters(b, in_dir("p.safetensors"), NULL), 4, "%s", nb_error());
    cr_assert(same_params(a, b));
    nb_safetensors *st = nb_safetensors_read(in_dir("p.safetensors"));
    cr_assert_str_eq(nb_safetensors_metadata(st, "note"), "first");
    cr_assert_eq(nb_safetensors_find(st, "2.weight"), 3); /* sorted by name */
    int ndim;
    const int64_t *shape = nb_safetensors_shape(st, 0, &ndim);
    cr_assert(ndim == 1 && shape[0] == 8); /* 0.bias */
    nb_safetensors_free(st);
    cr_assert_eq(others_in_dir("p.safetensors"), 0);
    nb_module_free(a);
    nb_module_free(b);
    remove_dir();
}

Test(checkpoint, buffers_travel_with_the_parameters) {
    /* a batch norm's running statistics are state as much as its weights:
     * like PyTorch's state_dict, the file holds both */
    make_dir();
    nb_module *a = nb_sequential(2, (nb_module *[]){nb_linear(3, 4), nb_batch_norm_layer(0.5f, 1e-5f)});
    nb_module *b = nb_sequential(2, (nb_module *[]){nb_linear(3, 4), nb_batch_norm_layer(0.5f, 1e-5f)});
    nb_tensor *x = nb_uniform(NULL, -2, 3, NB_SHAPE(6, 3));
    cr_assert_not_null(nb_module_forward(a, x), "%s", nb_error()); /* training mode: the stats move */
    cr_assert_not_null(nb_module_forward(b, x), "%s", nb_error());
    int na, nb;
    nb_tensor **ba = nb_module_buffers(a, &na), **bb = nb_module_buffers(b, &nb);
    cr_assert(na == 2 && nb == 2, "%d and %d buffers", na, nb);
    cr_assert_str_eq(nb_module_buffer_name(a, 0), "1.running_mean");
    cr_assert_eq(nb_save_parameters(a, in_dir("bn.safetensors"), NULL), 0, "%s", nb_error());
    cr_assert_eq(nb_load_parameters(b, in_dir("bn.safetensors"), NULL), 6, "%s", nb_error()); /* 4 + 2 */
    cr_assert(same_params(a, b));
    for (int i = 0; i < 2; i++)
        cr_assert(memcmp(nb_data(ba[i]), nb_data(bb[i]), sizeof(float) * (size_t)nb_numel(ba[i])) == 0,
                  "buffer %s differs after the load", nb_module_buffer_name(b, i));
    nb_module_free(a);
    nb_module_free(b);
    remove_dir();
}

Test(checkpoint, every_mismatch_in_one_message_and_partial_loads) {
    make_dir();
    /* a file with 0.weight of the wrong shape, 2.bias, and an extra tensor */
    nb_tensor *w = nb_ones(NB_SHAPE(5, 8)), *bias = nb_full(NB_SHAPE(3), 0.25f), *extra = nb_zeros(NB_SHAPE(1));
    const char *names[] = {"0.weight", "2.bias", "extra"};
    cr_assert_eq(nb_safetensors_write(in_dir("f.safetensors"), 3, names, (nb_tensor *[]){w, bias, extra}, NULL), 0);
    nb_module *m = mlp(4, 8, 3), *copy = mlp(4, 8, 3);
    cr_assert_eq(nb_load_parameters(copy, NULL, NULL), -1);
    cr_assert_eq(nb_save_parameters(m, in_dir("m.safetensors"), NULL), 0);
    cr_assert_eq(nb_load_parameters(copy, in_dir("m.safetensors"), NULL), 4);

    cr_assert_eq(nb_load_parameters(m, in_dir("f.safetensors"), NULL), -1);
    EXPECT_ERROR("nb_load_parameters: ", "f.safetensors: the file does not match the module",
                 "2 missing: 0.bias, 2.weight", "1 unexpected: extra",
                 "1 shape differs: 0.weight [5,8] in the file, [4,8] in the module");
    cr_assert(same_params(m, copy), "a failed load changed the module");

    char skipped[512];
    nb_load_opts partial = {.strict = false, .skipped = skipped, .skipped_size = sizeof skipped};
    cr_assert_eq(nb_load_parameters(m, in_dir("f.safetensors"), &partial), 1, "%s", nb_error());
    cr_assert(strstr(skipped, "2 missing: 0.bias, 2.weight") && strstr(skipped, "unexpected: extra") &&
                  strstr(skipped, "shape differs: 0.weight"), "%s", skipped);
    int n;
    nb_tensor **p = nb_module_parameters(m, &n);
    EXPECT_VALUES(p[3], 0, 0.25f, 0.25f, 0.25f);
    nb_tensor **q = nb_module_parameters(copy, &n);
    cr_assert(memcmp(nb_data(p[0]), nb_data(q[0]), sizeof(float) * 32) == 0);

    /* a corrupt file names itself and the offset */
    FILE *f = fopen(in_dir("bad.safetensors"), "wb");
    fwrite("\x02\0\0\0\0\0\0\0[]", 1, 10, f);
    fclose(f);
    cr_assert_eq(nb_load_parameters(m, in_dir("bad.safetensors"), NULL), -1);
    EXPECT_ERROR("nb_load_parameters: ", "bad.safetensors:8: expected '{'");
    nb_module_free(m);
    nb_module_free(copy);
    remove_dir();
}

/* ---- failing saves ------------------------------------------------------------------- */

Test(checkpoint, out_of_memory_at_every_allocation_leaves_the_old_file) {
    make_dir();
    nb_module *a = mlp(4, 8, 3), *b = mlp(4, 8, 3);
    char path[512];
    snprintf(path, sizeof path, "%s", in_dir("p.safetensors"));
    cr_assert_eq(nb_save_parameters(a, path, NULL), 0);
    int failures = 0;
    for (int64_t fail = 1;; fail++) {
        nb_test_alloc f = {.fail_at = fail};
        nb_set_alloc_hook(nb_test_alloc_hook, &f);
        int rc = nb_save_parameters(b, path, (const char *[]){"k", "v", NULL});
        nb_set_alloc_hook(NULL, NULL);
        if (rc == 0) break;
        failures++;
        EXPECT_ERROR("nb_save_parameters: ", "out of memory");
        cr_assert(params_equal_file(a, path), "allocation %lld failing changed the file", (long long)fail);
        cr_assert_eq(others_in_dir("p.safetensors"), 0, "a temporary file was left behind");
    }
    cr_assert_geq(failures, 3);
    cr_assert(params_equal_file(b, path));
    /* and a load failing anywhere leaves the module as it was */
    cr_assert_eq(nb_save_parameters(a, path, NULL), 0);
    nb_module *c = mlp(4, 8, 3);
    for (int64_t fail = 1;; fail++) {
        nb_test_alloc f = {.fail_at = fail};
        nb_set_alloc_hook(nb_test_alloc_hook, &f);
        int rc = nb_load_parameters(b, path, NULL);
        nb_set_alloc_hook(NULL, NULL);
        if (rc >= 0) break;
        EXPECT_ERROR("nb_load_parameters: ", "out of memory");
        cr_assert(!same_params(a, b), "a load failing at allocation %lld changed the module", (long long)fail);
    }
    cr_assert(same_params(a, b));
    nb_module_free(a);
    nb_module_free(b);
    nb_module_free(c);
    remove_dir();
}

Test(checkpoint, a_full_disk_leaves_the_old_file) {
    make_dir();
    nb_module *a = mlp(16, 32, 3), *b = mlp(16, 32, 3);
    char path[512];
    snprintf(path, sizeof path, "%s", in_dir("p.safetensors"));
    cr_assert_eq(nb_save_parameters(a, path, NULL), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        /* files beyond 1000 bytes fail with EFBIG, as a full disk fails
         * with ENOSPC: the same write error path */
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit lim = {1000, 1000};
        setrlimit(RLIMIT_FSIZE, &lim);
        int rc = nb_save_parameters(b, path, NULL);
        bool said = nb_error() && strstr(nb_error(), "nb_save_parameters: ") && strstr(nb_error(), "cannot write");
        child_exit(rc == -1 && said ? 0 : 1);
    }
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the save in the child did not fail as it should");
    cr_assert(params_equal_file(a, path));
    cr_assert_eq(others_in_dir("p.safetensors"), 0, "a temporary file was left behind");
    nb_module_free(a);
    nb_module_free(b);
    remove_dir();
}

Test(checkpoint, killed_saves_never_tear_the_file, .timeout = 120) {
    make_dir();
    nb_module *a = mlp(64, 128, 32), *b = mlp(64, 128, 32), *m = mlp(64, 128, 32);
    char path[512];
    snprintf(path, sizeof path, "%s", in_dir("p.safetensors"));
    cr_assert_eq(nb_save_parameters(a, path, NULL), 0);
    unsigned seed = 12345;
    int seen_a = 0, seen_b = 0;
    for (int round = 0; round < 50; round++) {
        fflush(NULL);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0)
            for (int k = 0;; k++) nb_save_parameters(k % 2 ? a : b, path, NULL);
        nanosleep(&(struct timespec){0, (long)(rand_r(&seed) % 20000) * 1000}, NULL);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        cr_assert_eq(nb_load_parameters(m, path, NULL), 4, "round %d: %s", round, nb_error());
        bool is_a = same_params(m, a), is_b = same_params(m, b);
        cr_assert(is_a || is_b, "round %d: the file holds neither parameter set", round);
        seen_a += is_a;
        seen_b += is_b;
        /* a killed save may leave its temporary file: never the target */
        DIR *d = opendir(dir);
        for (struct dirent *e; (e = readdir(d));)
            if (strncmp(e->d_name, "p.safetensors.tmp.", 18) == 0) unlink(in_dir(e->d_name));
        closedir(d);
    }
    cr_log_info("after 50 kills the file held set a %d times, set b %d times", seen_a, seen_b);
    cr_assert(seen_b > 0, "no save completed before a kill: the test proved nothing");
    nb_module_free(a);
    nb_module_free(b);
    nb_module_free(m);
    remove_dir();
}

/* ---- resuming training ----------------------------------------------------------------- */

/* 64 rows of 4 features and y = a fixed function of them, from a generator
 * of their own, so that the default generator drives only the model. */
static void data(nb_tensor **x, nb_tensor **y) {
    nb_generator g;
    nb_generator_seed(&g, 7);
    *x = nb_uniform(&g, -1, 1, NB_SHAPE(64, 4));
    *y = nb_add_scalar(nb_sum(nb_mul(*x, nb_from_array(NB_SHAPE(4), (float[]){1, -2, 0.5f, 3})), NB_AXES(1), true),
                       0.5f);
}

static nb_model *make_model(void) {
    nb_model *model = nb_model_sequential();
    nb_model_add(model, nb_dense(8, "relu", 4));
    nb_model_add(model, nb_dense(1, "linear", 0));
    cr_assert_eq(nb_model_compile(model, "adam", "mse", NULL), 0, "%s", nb_error());
    return model;
}

static nb_history *fit(nb_model *model, nb_tensor *x, nb_tensor *y, int initial, int epochs, const char *ckpt) {
    nb_fit_opts o = nb_fit_defaults();
    o.epochs = epochs;
    o.initial_epoch = initial;
    o.batch_size = 16;
    o.verbose = 0;
    o.checkpoint_path = ckpt;
    return nb_model_fit(model, x, y, &o);
}

/* The second half of the fit test, run in a fresh process (this binary
 * exec'ed with NB_CKPT_RESUME=dir): a model built from another seed loads
 * the checkpoint, trains epoch 5 and saves its parameters. */
Test(checkpoint, resume_child) {
    const char *d = getenv("NB_CKPT_RESUME");
    if (!d) cr_skip_test("run by checkpoint::fit_resumes_bit_identically in a fresh process");
    snprintf(dir, sizeof dir, "%s", d);
    nb_manual_seed(999); /* a different init and shuffle: the checkpoint must restore both */
    nb_tensor *x, *y;
    data(&x, &y);
    nb_model *model = make_model();
    int epoch = -1;
    cr_assert_eq(nb_model_load_checkpoint(model, in_dir("ckpt.safetensors"), &epoch), 0, "%s", nb_error());
    cr_assert_eq(epoch, 4);
    nb_history *h = fit(model, x, y, epoch, 5, NULL);
    cr_assert_not_null(h, "%s", nb_error());
    cr_assert_eq(nb_history_epochs(h), 1);
    nb_history_free(h);
    cr_assert_eq(nb_save_parameters(nb_model_module(model), in_dir("resumed.safetensors"), NULL), 0);
    nb_model_free(model);
}

Test(checkpoint, fit_resumes_bit_identically, .timeout = 120) {
    make_dir();
    nb_tensor *x, *y;
    data(&x, &y);
    /* straight: 5 epochs */
    nb_manual_seed(1);
    nb_model *straight = make_model();
    nb_history *h = fit(straight, x, y, 0, 5, NULL);
    cr_assert_not_null(h, "%s", nb_error());
    nb_history_free(h);
    /* interrupted: 4 epochs with a checkpoint after each */
    nb_manual_seed(1);
    nb_model *first = make_model();
    h = fit(first, x, y, 0, 4, in_dir("ckpt.safetensors"));
    cr_assert_not_null(h, "%s", nb_error());
    nb_history_free(h);
    cr_assert(!same_params(nb_model_module(first), nb_model_module(straight)));
    nb_safetensors *st = nb_safetensors_read(in_dir("ckpt.safetensors"));
    cr_assert_not_null(st, "%s", nb_error());
    cr_assert_str_eq(nb_safetensors_metadata(st, "epoch"), "4");
    cr_assert_str_eq(nb_safetensors_metadata(st, "optimizer"), "adam");
    cr_assert_str_eq(nb_safetensors_metadata(st, "optimizer.0.step"), "16");
    cr_assert_geq(nb_safetensors_find(st, "optimizer.0.exp_avg"), 0);
    cr_assert_geq(nb_safetensors_find(st, "optimizer.3.exp_avg_sq"), 0);
    nb_safetensors_free(st);

    /* the fifth epoch in a fresh process */
    char self[1024];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    cr_assert_gt(len, 0);
    self[len] = '\0';
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        setenv("NB_CKPT_RESUME", dir, 1);
        unsetenv("BXFI_MAP"); /* else the new process takes itself for a Criterion worker */
        execl(self, self, "--filter=checkpoint/resume_child", "--jobs=1", (char *)NULL);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the resumed run failed (status %d)", status);
    cr_assert(params_equal_file(nb_model_module(straight), in_dir("resumed.safetensors")),
              "4 epochs + checkpoint + 1 epoch differ from 5 epochs");

    /* in this process too, and a failed load changes nothing */
    nb_manual_seed(5);
    nb_model *again = make_model();
    nb_model *other = nb_model_sequential();
    nb_model_add(other, nb_dense(9, "relu", 4));
    nb_model_add(other, nb_dense(1, "linear", 0));
    nb_model_compile(other, "adam", "mse", NULL);
    cr_assert_eq(nb_model_load_checkpoint(other, in_dir("ckpt.safetensors"), NULL), -1);
    EXPECT_ERROR("nb_model_load_checkpoint: ", "ckpt.safetensors: the file does not match the module",
                 "shape differs: 0.weight [4,8] in the file, [4,9] in the module");
    nb_model_free(other);
    int epoch;
    cr_assert_eq(nb_model_load_checkpoint(again, in_dir("ckpt.safetensors"), &epoch), 0, "%s", nb_error());
    h = fit(again, x, y, epoch, 5, NULL);
    nb_history_free(h);
    cr_assert(same_params(nb_model_module(again), nb_model_module(straight)));
    nb_model_free(again);
    nb_model_free(first);
    nb_model_free(straight);
    remove_dir();
}

/* An explicit loop over nb_optimizer with a schedule: epochs [from, to). */
static void train_loop(nb_module *net, nb_optimizer *opt, nb_lr_schedule *sched, nb_tensor *x, nb_tensor *y,
                       int from, int to) {
    int64_t order[64];
    for (int epoch = from; epoch < to; epoch++) {
        nb_randperm(NULL, 64, order);
        for (int b = 0; b < 4; b++) {
            nb_scope_begin();
            nb_tensor *xb = nb_empty(NB_SHAPE(16, 4)), *yb = nb_empty(NB_SHAPE(16, 1));
            for (int i = 0; i < 16; i++) {
                memcpy(nb_data_mut(xb) + 4 * i, nb_data(x) + 4 * order[16 * b + i], 4 * sizeof(float));
                nb_data_mut(yb)[i] = nb_data(y)[order[16 * b + i]];
            }
            nb_tensor *loss = nb_mse_loss(nb_module_forward(net, xb), yb, NB_REDUCE_MEAN);
            nb_optimizer_zero_grad(opt);
            cr_assert_eq(nb_backward(loss), 0, "%s", nb_error());
            cr_assert_eq(nb_optimizer_step(opt), 0);
            nb_scope_end();
        }
        nb_lr_schedule_step(sched);
    }
}

typedef struct run {
    nb_module *net;
    nb_optimizer *opt;
    nb_lr_schedule *sched;
} run;

static run make_run(void) {
    run r;
    r.net = nb_sequential(3, (nb_module *[]){nb_linear(4, 8), nb_dropout(0.25f), nb_linear(8, 1)});
    int n;
    nb_tensor **p = nb_module_parameters(r.net, &n);
    nb_adam_opts o = nb_adam_defaults();
    o.lr = 0.01f;
    o.amsgrad = true;
    r.opt = nb_adam(n, p, &o);
    r.sched = nb_step_lr(r.opt, 2, 0.5f);
    return r;
}

static void free_run(run r) {
    nb_lr_schedule_free(r.sched);
    nb_optimizer_free(r.opt);
    nb_module_free(r.net);
}

Test(checkpoint, explicit_loop_resumes_bit_identically, .timeout = 120) {
    make_dir();
    nb_tensor *x, *y;
    data(&x, &y);
    nb_manual_seed(3);
    run straight = make_run();
    train_loop(straight.net, straight.opt, straight.sched, x, y, 0, 5);

    nb_manual_seed(3);
    run first = make_run();
    train_loop(first.net, first.opt, first.sched, x, y, 0, 4);
    cr_assert_eq(nb_save_checkpoint(in_dir("loop.safetensors"), first.net, first.opt, first.sched, 4), 0, "%s",
                 nb_error());
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) { /* a fresh run from another seed, resumed from the file */
        nb_manual_seed(77);
        run r = make_run();
        int64_t epoch = -1;
        if (nb_load_checkpoint(in_dir("loop.safetensors"), r.net, r.opt, r.sched, &epoch) != 0 || epoch != 4)
            child_exit(2);
        train_loop(r.net, r.opt, r.sched, x, y, (int)epoch, 5);
        child_exit(nb_save_parameters(r.net, in_dir("loop_resumed.safetensors"), NULL) == 0 ? 0 : 3);
    }
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the resumed run failed (status %d)", status);
    cr_assert(params_equal_file(straight.net, in_dir("loop_resumed.safetensors")));

    /* an optimizer of another kind, or with other state, is refused and
     * nothing changes */
    int n;
    nb_tensor **p = nb_module_parameters(first.net, &n);
    nb_optimizer *sgd = nb_sgd(n, p, NULL);
    cr_assert_eq(nb_load_checkpoint(in_dir("loop.safetensors"), first.net, sgd, NULL, NULL), -1);
    EXPECT_ERROR("nb_load_checkpoint: ", "the file holds the 'adam' optimizer state, the optimizer is sgd");
    nb_optimizer_free(sgd);
    nb_optimizer *plain = nb_adam(n, p, NULL);
    cr_assert_eq(nb_load_checkpoint(in_dir("loop.safetensors"), first.net, plain, NULL, NULL), -1);
    EXPECT_ERROR("optimizer.0.max_exp_avg_sq");
    cr_assert_eq(nb_optimizer_param_steps(plain, 0), 0);
    nb_optimizer_free(plain);
    cr_assert_eq(nb_load_parameters(first.net, in_dir("loop.safetensors"), NULL), -1);
    EXPECT_ERROR("unexpected: optimizer.0.exp_avg");
    free_run(straight);
    free_run(first);
    remove_dir();
}

/* ---- PyTorch ------------------------------------------------------------------------------ */

Test(checkpoint, torch_round_trip, .timeout = 120) {
    const char *preload = getenv("LD_PRELOAD");
    if (preload && strstr(preload, "vgpreload"))
        cr_skip_test("under valgrind, which would trace python and torch: the PyTorch round trip is not checked");
    if (system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0)
        cr_skip_test("/usr/bin/python3 cannot import torch: the PyTorch round trip is not checked");
    make_dir();
    nb_module *a = mlp(4, 8, 3);
    cr_assert_eq(nb_save_parameters(a, in_dir("nabla.safetensors"), NULL), 0);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/nn/io/torch_roundtrip.py %s %s", NB_SOURCE_ROOT,
             in_dir("nabla.safetensors"), dir);
    cr_assert_eq(system(cmd), 0, "%s failed", cmd);
    nb_safetensors *out = nb_safetensors_read(in_dir("outputs.safetensors"));
    cr_assert_not_null(out, "%s", nb_error());
    nb_tensor *x = nb_safetensors_get(out, "x"), *y = nb_safetensors_get(out, "y"), *y2 = nb_safetensors_get(out, "y2");
    nb_safetensors_free(out);
    /* nabla's parameters went to torch and came back bit for bit */
    cr_assert(params_equal_file(a, in_dir("back.safetensors")));
    /* torch's forward on them matches nabla's */
    nb_tensor *ya = nb_module_forward(a, x);
    for (int i = 0; i < 15; i++)
        cr_assert(fabsf(nb_data(ya)[i] - nb_data(y)[i]) <= 1e-6f, "y[%d]: nabla %.9g, torch %.9g", i,
                  (double)nb_data(ya)[i], (double)nb_data(y)[i]);
    /* a torch model's state_dict loads into the matching nabla model */
    nb_module *b = mlp(4, 8, 3);
    cr_assert_eq(nb_load_parameters(b, in_dir("torch.safetensors"), NULL), 4, "%s", nb_error());
    nb_tensor *yb = nb_module_forward(b, x);
    for (int i = 0; i < 15; i++)
        cr_assert(fabsf(nb_data(yb)[i] - nb_data(y2)[i]) <= 1e-6f, "y2[%d]: nabla %.9g, torch %.9g", i,
                  (double)nb_data(yb)[i], (double)nb_data(y2)[i]);
    nb_module_free(a);
    nb_module_free(b);
    remove_dir();
}

/* ---- fit's checkpoint options -------------------------------------------------------------- */

Test(checkpoint, fit_options) {
    make_dir();
    nb_tensor *x, *y;
    data(&x, &y);
    nb_model *model = make_model();
    nb_fit_opts o = nb_fit_defaults();
    o.verbose = 0;
    o.epochs = 5;
    o.batch_size = 16;
    o.checkpoint_path = in_dir("every2.safetensors");
    o.checkpoint_every = 2;
    nb_history *h = nb_model_fit(model, x, y, &o);
    cr_assert_not_null(h, "%s", nb_error());
    nb_history_free(h);
    nb_safetensors *st = nb_safetensors_read(in_dir("every2.safetensors"));
    cr_assert_not_null(st, "%s", nb_error());
    cr_assert_str_eq(nb_safetensors_metadata(st, "epoch"), "4");
    nb_safetensors_free(st);

    /* save_best_only: the file holds the epoch with the lowest loss */
    o.epochs = 8;
    o.initial_epoch = 5;
    o.checkpoint_path = in_dir("best.safetensors");
    o.checkpoint_every = 0;
    o.save_best_only = true;
    h = nb_model_fit(model, x, y, &o);
    cr_assert_not_null(h, "%s", nb_error());
    cr_assert_eq(nb_history_epochs(h), 3);
    const float *loss = nb_history_get(h, "loss");
    int best = 0;
    for (int e = 1; e < 3; e++)
        if (loss[e] < loss[best]) best = e;
    nb_history_free(h);
    st = nb_safetensors_read(in_dir("best.safetensors"));
    cr_assert_not_null(st, "%s", nb_error());
    char want[8];
    snprintf(want, sizeof want, "%d", 5 + best + 1);
    cr_assert_str_eq(nb_safetensors_metadata(st, "epoch"), want);
    nb_safetensors_free(st);

    /* bad options, and a save that fails, which stops training */
    o.initial_epoch = 9;
    cr_assert_null(nb_model_fit(model, x, y, &o));
    EXPECT_ERROR("nb_model_fit: initial_epoch must be in [0, epochs] (got 9, epochs 8)");
    o.initial_epoch = 0;
    o.save_best_only = false;
    o.checkpoint_path = "/nonexistent/dir/ckpt.safetensors";
    h = nb_model_fit(model, x, y, &o);
    cr_assert_not_null(h);
    cr_assert_eq(nb_history_epochs(h), 1);
    cr_assert(strstr(nb_history_stop_reason(h), "saving the checkpoint after epoch 1 failed") &&
                  strstr(nb_history_stop_reason(h), "cannot create a temporary file"),
              "%s", nb_history_stop_reason(h));
    nb_history_free(h);
    nb_model_free(model);
    remove_dir();
}

Test(checkpoint, training_checkpoints_under_out_of_memory) {
    make_dir();
    char path[512];
    snprintf(path, sizeof path, "%s", in_dir("c.safetensors"));
    run r = make_run();
    cr_assert_eq(nb_save_checkpoint(path, r.net, r.opt, r.sched, 1), 0, "%s", nb_error());
    run s = make_run(); /* other parameters, same structure */
    for (int64_t fail = 1;; fail++) {
        nb_test_alloc f = {.fail_at = fail};
        nb_set_alloc_hook(nb_test_alloc_hook, &f);
        int rc = nb_save_checkpoint(path, s.net, s.opt, s.sched, 2);
        nb_set_alloc_hook(NULL, NULL);
        if (rc == 0) break;
        EXPECT_ERROR("nb_save_checkpoint: ", "out of memory");
        cr_assert(params_equal_file(r.net, path), "allocation %lld failing changed the file", (long long)fail);
        cr_assert_eq(others_in_dir("c.safetensors"), 0);
    }
    cr_assert(params_equal_file(s.net, path));
    cr_assert_eq(nb_save_checkpoint(path, r.net, r.opt, r.sched, 1), 0);
    nb_generator before = *nb_default_generator();
    nb_generator_next(nb_default_generator()); /* the load must restore it */
    nb_generator moved = *nb_default_generator();
    for (int64_t fail = 1;; fail++) {
        nb_test_alloc f = {.fail_at = fail};
        nb_set_alloc_hook(nb_test_alloc_hook, &f);
        int64_t epoch = -1;
        int rc = nb_load_checkpoint(path, s.net, s.opt, s.sched, &epoch);
        nb_set_alloc_hook(NULL, NULL);
        if (rc == 0) {
            cr_assert_eq(epoch, 1);
            break;
        }
        EXPECT_ERROR("nb_load_checkpoint: ", "out of memory");
        cr_assert(!same_params(r.net, s.net) && nb_default_generator()->state == moved.state);
    }
    cr_assert(same_params(r.net, s.net));
    cr_assert_eq(nb_default_generator()->state, before.state);
    free_run(r);
    free_run(s);
    remove_dir();
}
