#include "softprompt/dist.h"

#include <errno.h>
#include <fcntl.h>
#include <mpi.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "softprompt/model.h"

/* A plain process (no mpirun, no srun) runs without MPI at all: every collective is the
 * identity on one rank, and no MPI runtime (daemons, shared-memory segments) is started. */
static int use_mpi = 0;
static MPI_Comm node_comm = MPI_COMM_NULL; /* the ranks of this node */
static int node_rank, node_size = 1;

static int launched_by_mpi(void) {
    static const char *const VARS[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE",
                                       "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof VARS / sizeof *VARS; i++)
        if (getenv(VARS[i])) return 1;
    return 0;
}

int sp_dist_init(sp_dist *d, int *argc, char ***argv) {
    if (!launched_by_mpi()) {
        d->rank = 0, d->size = 1, d->local_rank = 0, d->local_size = 1;
        return 0;
    }
    use_mpi = 1;
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) return -1;
    /* Errors abort the job: a failed collective must never leave other ranks waiting. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->size);
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &node_comm);
    MPI_Comm_rank(node_comm, &d->local_rank);
    MPI_Comm_size(node_comm, &d->local_size);
    node_rank = d->local_rank, node_size = d->local_size;
    return 0;
}

void sp_dist_finalize(void) {
    if (!use_mpi) return;
    int done = 0;
    MPI_Finalized(&done);
    if (done) return;
    if (node_comm != MPI_COMM_NULL) MPI_Comm_free(&node_comm);
    MPI_Finalize();
}

_Noreturn void sp_dist_abort(int code) {
    if (!use_mpi) exit(code);
    MPI_Abort(MPI_COMM_WORLD, code);
    exit(code); /* not reached */
}

void sp_dist_sum_double(double *buf, size_t n) {
    /* Chunks keep each count within int; the sum is elementwise, so chunking changes nothing. */
    if (!use_mpi) return;
    const size_t chunk = (size_t)1 << 28;
    for (size_t off = 0; off < n; off += chunk) {
        size_t c = n - off < chunk ? n - off : chunk;
        MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)c, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    }
}

void sp_dist_bcast(void *buf, size_t n) {
    if (!use_mpi) return;
    const size_t chunk = (size_t)1 << 30;
    for (size_t off = 0; off < n; off += chunk) {
        size_t c = n - off < chunk ? n - off : chunk;
        MPI_Bcast((char *)buf + off, (int)c, MPI_BYTE, 0, MPI_COMM_WORLD);
    }
}

int sp_dist_any(int flag) {
    if (!use_mpi) return flag != 0;
    int out = 0;
    MPI_Allreduce(&flag, &out, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
    return out;
}

int sp_dist_rank0_agree(int rc, const char *what, sp_error *err) {
    if (!sp_dist_any(rc != 0)) return 0;
    if (rc == 0) sp_fail(err, "rank 0 failed to %s", what);
    return sp_fail_all_ranks(err);
}

static int online_cores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static int affinity_cores(void) {
    cpu_set_t set;
    return sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : online_cores();
}

static int env_int(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v) return 0;
    char *end;
    long n = strtol(v, &end, 10);
    return (*end == '\0' || *end == '(') && n > 0 && n < 100000 ? (int)n : 0;
}

int sp_dist_threads(const sp_dist *d, int requested, int *capped_from) {
    /* A rank bound to a subset of cores (mpirun --bind-to, Slurm task/affinity or cgroups) owns
     * exactly that subset; an unbound rank shares the node's cores with the node's other ranks. */
    int online = online_cores(), mine = affinity_cores();
    int share = mine < online ? mine : online / (d->local_size > 0 ? d->local_size : 1);
    if (share < 1) share = 1;
    int want = requested > 0 ? requested : env_int("SLURM_CPUS_PER_TASK");
    if (want <= 0) want = env_int("OMP_NUM_THREADS");
    if (want <= 0) want = share;
    *capped_from = want > share ? want : 0;
    return want > share ? share : want;
}

/* ---- memory shared by the ranks of a node (sp_model_share) ---------------------------------- */

/* Whether every rank of the node has flag set. */
static int node_all(int flag) {
    int all = 0;
    MPI_Allreduce(&flag, &all, 1, MPI_INT, MPI_MIN, node_comm);
    return all;
}

/* Local rank 0 creates a POSIX shared-memory object of bytes and maps it writable; the others
 * map it read-only; once every rank has mapped it, it is unlinked (the memory lives until the
 * last rank unmaps it, and nothing is left behind in /dev/shm). */
static int share_map(void *ctx, size_t bytes, int ok, void **p, int *writer, sp_error *err) {
    (void)ctx;
    *p = NULL, *writer = node_rank == 0;
    if (!node_all(ok)) {
        if (ok) sp_fail(err, "another rank on this node failed to load the model");
        return -1;
    }
    if (bytes == 0) return 0;
    static unsigned serial;
    int head[3] = {0, (int)getpid(), (int)serial++}; /* created, pid, serial of local rank 0 */
    char name[64];
    int fd = -1, e = 0;
    if (node_rank == 0) {
        snprintf(name, sizeof name, "/softprompt-%d-%d", head[1], head[2]);
        fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
        if (fd >= 0 && ftruncate(fd, (off_t)bytes) == 0) head[0] = 1;
        e = errno;
        if (fd >= 0 && !head[0]) close(fd), shm_unlink(name), fd = -1;
    }
    MPI_Bcast(head, 3, MPI_INT, 0, node_comm);
    snprintf(name, sizeof name, "/softprompt-%d-%d", head[1], head[2]);
    if (!head[0]) {
        if (node_rank == 0)
            return sp_fail(err, "shared memory %s of %zu bytes for the converted weights: %s", name,
                           bytes, strerror(e));
        return sp_fail(err, "local rank 0 could not create shared memory for the weights");
    }
    if (node_rank != 0) fd = shm_open(name, O_RDONLY, 0);
    void *m = MAP_FAILED;
    if (fd >= 0) {
        m = mmap(NULL, bytes, node_rank == 0 ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd,
                 0);
        e = errno;
        close(fd);
    } else {
        e = errno;
    }
    int mapped = node_all(m != MAP_FAILED);
    if (node_rank == 0) shm_unlink(name);
    if (!mapped) {
        if (m != MAP_FAILED) munmap(m, bytes);
        if (m == MAP_FAILED)
            return sp_fail(err, "shared memory %s of %zu bytes for the converted weights: %s", name,
                           bytes, strerror(e));
        return sp_fail(err, "another rank on this node could not map the shared weights");
    }
    *p = m;
    return 0;
}

static int share_ready(void *ctx, int ok, sp_error *err) {
    (void)ctx;
    if (node_all(ok)) return 0;
    if (ok)
        sp_fail(err, "the rank converting the weights on this node failed (its message says why)");
    return -1;
}

static const sp_model_share node_share = {share_map, share_ready, NULL};

const sp_model_share *sp_dist_model_share(void) {
    return use_mpi && node_size > 1 ? &node_share : NULL;
}
