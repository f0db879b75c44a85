/* Running a subcommand on every rank of an MPI job (mpirun, srun) or as one plain process. */
#ifndef SP_CLI_RANKS_H
#define SP_CLI_RANKS_H

#include "softprompt/dist.h"
#include "softprompt/error.h"

/* body returns an exit status >= 0, or -1 with err filled. */
typedef int (*sp__rank_body)(void *arg, const sp_dist *d, sp_error *err);

/* Initialises the distributed layer, runs body, and finalises. A failing rank prints
 * "softprompt <cmd>: rank N: <message>" (without the rank when it runs alone) and ends every
 * rank of the job, so none is left waiting in a collective; a failure of all ranks together
 * (err.all_ranks) is printed once, by rank 0, and the job ends normally. Returns the exit
 * status. */
int sp__cli_run_ranks(const char *cmd, int *argc, char ***argv, sp__rank_body body, void *arg);

#endif
