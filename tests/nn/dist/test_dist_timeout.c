/* test_dist_timeout.c — a rank that stops answering: the others report it
 * within the configured timeout instead of hanging, and the last
 * checkpoint stays whole.
 *
 * Two programs in one. Run plainly (as meson does), it is the driver: it
 * starts `mpirun -np 2` on itself with --worker, waits at most 120 s (a
 * hang fails here instead of blocking the test run), then checks what the
 * workers printed and loads the checkpoint. As workers, two ranks train
 * with nb_dist_fit (timeout 2 s, a checkpoint after every epoch); after
 * the first epoch rank 1 stops answering (it sleeps for two minutes, as a
 * hung process or a lost machine would). Rank 0 must then fail in the
 * second epoch's gradient average with the timeout message, 2 s (plus a
 * step) after the epoch ended, and nb_dist_finalize ends the job with
 * MPI_Abort (exit status not 0). (A rank that exits is not the case
 * tested: mpirun notices it and ends the job by itself.)
 *
 * A plain program, not Criterion: an MPI process cannot be forked.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "nabla.h"
#include "nb_dist.h"

#define TIMEOUT 2.0
#define CHECKPOINT "test_dist_timeout.safetensors"
#define LOG "test_dist_timeout.log"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static nb_model *make_model(void) {
    nb_manual_seed(1);
    nb_model *m = nb_model_from_module(
        nb_sequential(2, (nb_module *[]){nb_dense(8, "tanh", 4), nb_dense(2, "linear", 8)}));
    if (m) nb_model_compile(m, "sgd", "mse", NULL);
    return m;
}

/* ---- the workers ------------------------------------------------------------------------ */

static double epoch_ended;

static bool after_epoch(nb_model *model, int epoch, const nb_history *h, void *user) {
    (void)model, (void)h;
    nb_dist *d = user;
    epoch_ended = now_seconds();
    if (epoch == 0 && nb_dist_rank(d) == 1) {
        printf("rank 1 stops answering after epoch 1\n");
        fflush(stdout);
        sleep(120);
        _exit(0);
    }
    return true;
}

static int worker(int argc, char **argv) {
    nb_dist *d = nb_dist_init(&argc, &argv, &(nb_dist_opts){.timeout = TIMEOUT});
    if (!d) {
        fprintf(stderr, "%s\n", nb_error());
        return 1;
    }
    nb_model *model = make_model();
    nb_manual_seed(2);
    nb_tensor *x = nb_keep(nb_uniform(NULL, -1, 1, 2, (int64_t[]){64, 4}));
    nb_tensor *y = nb_keep(nb_uniform(NULL, -1, 1, 2, (int64_t[]){64, 2}));
    nb_fit_opts o = nb_fit_defaults();
    o.epochs = 3;
    o.batch_size = 4;
    o.verbose = 0;
    o.checkpoint_path = CHECKPOINT;
    o.on_epoch_end = after_epoch;
    o.user = d;
    nb_history *h = nb_dist_fit(d, model, x, y, &o);
    double stopped = now_seconds();
    if (nb_dist_rank(d) == 0) {
        printf("rank 0 trained %d epoch(s), then: %s\n", nb_history_epochs(h), nb_history_stop_reason(h));
        printf("rank 0 stopped %.3f s after the end of epoch 1\n", stopped - epoch_ended);
        fflush(stdout);
    }
    nb_history_free(h);
    nb_release(x);
    nb_release(y);
    nb_model_free(model);
    nb_dist_finalize(d); /* failed: MPI_Abort for every rank */
    return 0;
}

/* ---- the driver --------------------------------------------------------------------------- */

static int fail(const char *why, const char *log) {
    fprintf(stderr, "test_dist_timeout: %s\n--- what the ranks printed ---\n%s\n", why, log);
    return 1;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--worker") == 0) return worker(argc, argv);

    remove(CHECKPOINT);
    double t0 = now_seconds();
    pid_t pid = fork();
    if (pid < 0) return fail("fork failed", "");
    if (pid == 0) {
        setpgid(0, 0); /* a group of its own, to stop all of it if it hangs */
        if (!freopen(LOG, "w", stdout) || dup2(fileno(stdout), 2) < 0) _exit(127);
        execl(NB_MPIRUN, "mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2", argv[0], "--worker",
              (char *)NULL);
        _exit(127);
    }
    int status = 0;
    bool ended = false;
    while (now_seconds() - t0 < 120) {
        if (waitpid(pid, &status, WNOHANG) == pid) {
            ended = true;
            break;
        }
        nanosleep(&(struct timespec){0, 50000000}, NULL);
    }
    if (!ended) {
        kill(-pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    double elapsed = now_seconds() - t0;

    static char log[1 << 16];
    FILE *f = fopen(LOG, "r");
    size_t len = f ? fread(log, 1, sizeof log - 1, f) : 0;
    if (f) fclose(f);
    log[len] = 0;

    if (!ended) return fail("the job hung: still running after 120 s", log);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127) return fail("mpirun could not be started", log);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return fail("mpirun exited with status 0: the job should have been aborted", log);
    if (!strstr(log, "rank 1 stops answering")) return fail("rank 1 did not reach the end of epoch 1", log);
    const char *msg = strstr(log, "rank 0 trained 1 epoch(s), then: ");
    if (!msg) return fail("rank 0 did not stop after one epoch", log);
    const char *want[] = {"nb_dist_reducer_wait: averaging the gradients", "did not complete within 2 s",
                          "rank 0 of 2", "a rank died or stopped answering", "at epoch 2, batch 1"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        if (!strstr(msg, want[i])) {
            char why[160];
            snprintf(why, sizeof why, "rank 0's message lacks \"%s\"", want[i]);
            return fail(why, log);
        }
    const char *when = strstr(log, "rank 0 stopped ");
    double after = when ? atof(when + strlen("rank 0 stopped ")) : -1;
    /* the timeout, plus one training step and some slack for a loaded machine */
    if (!(after >= TIMEOUT && after < TIMEOUT + 3))
        return fail("rank 0 did not stop within the timeout after rank 1 stopped answering", log);

    /* the checkpoint of epoch 1, whole */
    nb_model *model = make_model();
    int epoch = -1;
    if (!model || nb_model_load_checkpoint(model, CHECKPOINT, &epoch) != 0 || epoch != 1) {
        char why[600];
        snprintf(why, sizeof why, "the checkpoint does not load as epoch 1 (epoch %d): %s", epoch,
                 nb_error() ? nb_error() : "");
        nb_model_free(model);
        return fail(why, log);
    }
    nb_model_free(model);
    remove(CHECKPOINT);
    remove(LOG);
    printf("test_dist_timeout: rank 0 reported the lost rank %.2f s after it stopped (timeout %g s); the job "
           "ended after %.1f s; the checkpoint of epoch 1 loads\n", after, TIMEOUT, elapsed);
    return 0;
}
