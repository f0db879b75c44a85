/* A team of engine workers that share one rank's cores: a batch is split by sequence into one
 * part per thread, the parts run concurrently with single-threaded BLAS each, and their loss
 * sums and prompt gradients are added in part order.
 *
 * Why not multi-threaded BLAS alone: a step's GEMMs are small (attention blocks of 64 rows,
 * products over a few hundred packed tokens) and its element-wise kernels are serial, so one
 * rank with 2 BLAS threads ran 1.2x slower than 2 single-threaded ranks. Splitting the batch
 * gives each thread whole sequences, as separate ranks would, but the model stays shared.
 *
 * A batch of one sequence (or a team of one) runs on the calling thread with all the team's
 * threads given to BLAS instead. Results equal sp_engine_run's up to the order in which the
 * parts' float gradients are added (deterministic for a given thread count). */
#ifndef SOFTPROMPT_TEAM_H
#define SOFTPROMPT_TEAM_H

#include "softprompt/engine.h"

typedef struct sp_team sp_team;

/* n_threads >= 1 threads, the caller's included; NULL when out of memory or threads. */
sp_team *sp_team_new(const sp_model *m, int n_threads);
void sp_team_free(sp_team *t);
const sp_model *sp_team_model(const sp_team *t);
/* Activation and scratch memory of all the team's workers. */
size_t sp_team_bytes(const sp_team *t);

/* Same contract as sp_engine_run: the gradient is ADDED to pass->grad, the outputs
 * target_logits / target_loss are written for every target. */
int sp_team_run(sp_team *t, const sp_batch *b, const sp_pass *pass, double *loss_sum,
                sp_error *err);

#endif
