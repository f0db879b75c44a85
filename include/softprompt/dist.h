/* Data-parallel communication: a thin layer over MPI so the trainer reads as training code.
 * Works under mpirun, under srun --mpi=pmix, and as one plain process, which runs without
 * starting MPI at all (detected from the launchers' environment variables). */
#ifndef SOFTPROMPT_DIST_H
#define SOFTPROMPT_DIST_H

#include <stddef.h>

#include "softprompt/error.h"

typedef struct sp_dist {
    int rank, size;
    int local_rank, local_size; /* among the ranks of this node (shared-memory domain) */
} sp_dist;

/* Initialises MPI (thread level FUNNELED: only the main thread calls MPI). */
int sp_dist_init(sp_dist *d, int *argc, char ***argv);
void sp_dist_finalize(void);
/* Ends every rank of the job with code (MPI_Abort): for errors on one rank, so none hangs. */
_Noreturn void sp_dist_abort(int code);

/* In-place sums over all ranks, the same result on every rank. */
void sp_dist_sum_double(double *buf, size_t n);
/* Broadcasts n bytes from rank 0. */
void sp_dist_bcast(void *buf, size_t n);
/* Logical OR of flag over all ranks. */
int sp_dist_any(int flag);
/* After rank 0 did something alone (rc its outcome; 0 on the other ranks): every rank learns
 * whether it failed and, if so, returns -1 with err marked all_ranks (rank 0's err says why,
 * the others' "rank 0 failed to <what>"); 0 when it worked. */
int sp_dist_rank0_agree(int rc, const char *what, sp_error *err);

/* Threads this rank may use: SLURM_CPUS_PER_TASK, else OMP_NUM_THREADS, else the usable cores
 * divided among the ranks of this node; never more than cores / local ranks (no
 * oversubscription). requested > 0 overrides the environment but is capped the same way;
 * *capped_from receives the larger request when a cap applied (0 otherwise). */
int sp_dist_threads(const sp_dist *d, int requested, int *capped_from);

/* Memory shared by the ranks of this node for a model's converted copies, for
 * sp_model_load_shared (which every rank of the node then calls together): one copy per node
 * instead of one per rank. NULL (private copies) for a single process or one rank per node. */
struct sp_model_share;
const struct sp_model_share *sp_dist_model_share(void);

#endif
