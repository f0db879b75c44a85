/* The communication layer (src/dist/dist.c) in a plain process, as `softprompt` runs without a
 * launcher: init without MPI (one rank of one), every collective the identity, rank 0's
 * failure agreed on, abort exiting with its code; and sp_dist_threads' choice of threads from
 * --threads, SLURM_CPUS_PER_TASK and OMP_NUM_THREADS, capped at the cores this rank owns: its
 * affinity set when bound, the node's cores shared among the node's ranks when not. */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "softprompt/dist.h"
#include "testutil.h"

/* What makes dist.c start MPI, and what sp_dist_threads reads. */
static const char *const LAUNCHER_VARS[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK",
                                            "PMI_SIZE", "MPI_LOCALNRANKS"};

static void plain_process(void) {
    for (size_t i = 0; i < sizeof LAUNCHER_VARS / sizeof *LAUNCHER_VARS; i++)
        unsetenv(LAUNCHER_VARS[i]);
    unsetenv("SLURM_CPUS_PER_TASK");
    unsetenv("OMP_NUM_THREADS");
}

static sp_dist init_plain(void) {
    sp_dist d = {-1, -1, -1, -1};
    int argc = 2;
    char *args[] = {"softprompt", "train", NULL}, **argv = args;
    ck_assert_int_eq(sp_dist_init(&d, &argc, &argv), 0);
    ck_assert_int_eq(argc, 2);
    ck_assert_ptr_eq(argv, args);
    return d;
}

START_TEST(init_without_mpi_is_one_rank) {
    sp_dist d = init_plain();
    ck_assert_int_eq(d.rank, 0);
    ck_assert_int_eq(d.size, 1);
    ck_assert_int_eq(d.local_rank, 0);
    ck_assert_int_eq(d.local_size, 1);
    sp_dist_finalize();
    sp_dist_finalize(); /* nothing to finalize, twice */
}
END_TEST

START_TEST(collectives_are_the_identity) {
    init_plain();
    double sums[3] = {1.5, -0.0, 1e300};
    sp_dist_sum_double(sums, 3);
    ck_assert(sums[0] == 1.5 && sums[2] == 1e300);
    ck_assert(sums[1] == 0 && 1 / sums[1] < 0); /* -0.0 stays */
    sp_dist_sum_double(NULL, 0);
    char buf[] = "rank 0's bytes";
    sp_dist_bcast(buf, sizeof buf);
    ck_assert_str_eq(buf, "rank 0's bytes");
    ck_assert_int_eq(sp_dist_any(0), 0);
    ck_assert_int_eq(sp_dist_any(1), 1);
    ck_assert_int_eq(sp_dist_any(-7), 1); /* any non-zero flag, as 1 */
    sp_dist_finalize();
}
END_TEST

/* The only rank is rank 0: its outcome is the job's, its message kept, marked all_ranks. */
START_TEST(rank0_agree_is_rank0s_outcome) {
    init_plain();
    sp_error err = {0};
    ck_assert_int_eq(sp_dist_rank0_agree(0, "write the checkpoint", &err), 0);
    ck_assert_str_eq(err.msg, "");
    ck_assert_int_eq(err.all_ranks, 0);
    sp_fail(&err, "ck.h5: No space left on device");
    ck_assert_int_eq(sp_dist_rank0_agree(-1, "write the checkpoint", &err), -1);
    ck_assert_str_eq(err.msg, "ck.h5: No space left on device");
    ck_assert_int_eq(err.all_ranks, 1);
    sp_dist_finalize();
}
END_TEST

START_TEST(abort_exits_with_its_code) {
    init_plain();
    sp_dist_abort(3);
}
END_TEST

/* ---- threads ---- */

static int online(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static int owned(void) {
    cpu_set_t set;
    ck_assert_int_eq(sched_getaffinity(0, sizeof set, &set), 0);
    return CPU_COUNT(&set);
}

static const char *env(const char *name) {
    const char *v = getenv(name);
    return v ? v : "(unset)";
}

/* sp_dist_threads(d, requested) returns want and reports capped_from. */
static void expect_threads(const sp_dist *d, int requested, int want, int capped_from) {
    int capped = -1;
    int got = sp_dist_threads(d, requested, &capped);
    ck_assert_msg(got == want && capped == capped_from,
                  "local_size %d, requested %d, SLURM_CPUS_PER_TASK %s, OMP_NUM_THREADS %s: %d "
                  "threads (capped from %d), expected %d (%d)",
                  d->local_size, requested, env("SLURM_CPUS_PER_TASK"), env("OMP_NUM_THREADS"), got,
                  capped, want, capped_from);
}

static int min(int a, int b) {
    return a < b ? a : b;
}

/* The variables in order of precedence, each capped at the share of cores (here: as the test
 * process is bound or not, one rank on the node). */
START_TEST(threads_from_the_environment) {
    sp_dist d = {0, 1, 0, 1};
    int share = owned() < online() ? owned() : online();
    char big[16];
    snprintf(big, sizeof big, "%d", share + 3);
    expect_threads(&d, 0, share, 0); /* nothing set: every core this rank may use */
    setenv("OMP_NUM_THREADS", "1", 1);
    expect_threads(&d, 0, 1, 0);
    setenv("OMP_NUM_THREADS", big, 1);
    expect_threads(&d, 0, share, share + 3);
    setenv("SLURM_CPUS_PER_TASK", "1", 1); /* before OMP_NUM_THREADS */
    expect_threads(&d, 0, 1, 0);
    setenv("SLURM_CPUS_PER_TASK", "1(x4)", 1); /* Slurm's repeat count */
    expect_threads(&d, 0, 1, 0);
    expect_threads(&d, 2, min(2, share), share < 2 ? 2 : 0); /* --threads before both */
    expect_threads(&d, share + 1, share, share + 1);
    /* Values that are not a positive count are ignored: the next source decides. */
    static const char *const ignored[] = {"", "0", "-2", "abc", "2x", "100000"};
    setenv("OMP_NUM_THREADS", "1", 1);
    for (size_t i = 0; i < sizeof ignored / sizeof *ignored; i++) {
        setenv("SLURM_CPUS_PER_TASK", ignored[i], 1);
        expect_threads(&d, 0, 1, 0);
    }
    unsetenv("SLURM_CPUS_PER_TASK");
    for (size_t i = 0; i < sizeof ignored / sizeof *ignored; i++) {
        setenv("OMP_NUM_THREADS", ignored[i], 1);
        expect_threads(&d, 0, share, 0);
    }
}
END_TEST

/* Unbound (the affinity set is every online core), a rank gets the node's cores divided among
 * the node's ranks, at least one. */
START_TEST(unbound_ranks_share_the_node) {
    cpu_set_t all;
    CPU_ZERO(&all);
    for (int c = 0; c < online() && c < CPU_SETSIZE; c++) CPU_SET(c, &all);
    if (sched_setaffinity(0, sizeof all, &all) != 0 || owned() != online()) {
        printf("unbound_ranks_share_the_node: cannot own every online core here, not tested\n");
        return;
    }
    int n = online();
    sp_dist d = {0, 1, 0, 1};
    expect_threads(&d, 0, n, 0);
    d.local_size = 2;
    expect_threads(&d, 0, n / 2 > 0 ? n / 2 : 1, 0);
    expect_threads(&d, n, n / 2 > 0 ? n / 2 : 1, n);
    d.local_size = 4 * n;
    expect_threads(&d, 0, 1, 0);
    d.local_size = 0; /* unknown: one rank */
    expect_threads(&d, 0, n, 0);
}
END_TEST

/* Bound to a subset of the cores (mpirun --bind-to, Slurm's task/affinity), a rank owns that
 * subset, however many ranks share the node. */
START_TEST(bound_ranks_own_their_cores) {
    cpu_set_t set, one;
    ck_assert_int_eq(sched_getaffinity(0, sizeof set, &set), 0);
    if (online() < 2) {
        printf("bound_ranks_own_their_cores: one online core, not tested\n");
        return;
    }
    int first = 0;
    while (!CPU_ISSET(first, &set)) first++;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    ck_assert_int_eq(sched_setaffinity(0, sizeof one, &one), 0);
    sp_dist d = {0, 1, 0, 1};
    expect_threads(&d, 0, 1, 0);
    expect_threads(&d, 4, 1, 4);
    d.local_size = 8;
    expect_threads(&d, 0, 1, 0);
    setenv("OMP_NUM_THREADS", "2", 1);
    expect_threads(&d, 0, 1, 2);
}
END_TEST

int main(void) {
    plain_process();
    Suite *s = suite_create("dist");
    TCase *tc = tcase_create("single process");
    tcase_add_test(tc, init_without_mpi_is_one_rank);
    tcase_add_test(tc, collectives_are_the_identity);
    tcase_add_test(tc, rank0_agree_is_rank0s_outcome);
    tcase_add_exit_test(tc, abort_exits_with_its_code, 3);
    suite_add_tcase(s, tc);
    TCase *threads = tcase_create("threads");
    tcase_add_test(threads, threads_from_the_environment);
    tcase_add_test(threads, unbound_ranks_share_the_node);
    tcase_add_test(threads, bound_ranks_own_their_cores);
    suite_add_tcase(s, threads);
    return tu_run_suite(s);
}
