/* The steps of a block that depend on the family's kinds (engine.c), shared by the training
 * engine (sp_engine_run) and generation (generate.c, sp_generate_extend): each switches on one
 * kind of the family and calls the kernels, over n rows of the worker's sizes (w->z). */
#ifndef SP_MODEL_STEPS_H
#define SP_MODEL_STEPS_H

#include "model/worker.h"

/* out[n, d] = norm(x) with gain and bias p; the statistics backward needs go to mean (LayerNorm
 * only) and rstd [n]. */
void sp__norm_forward(const sp_worker *w, float *out, float *mean, float *rstd, const float *x,
                      const sp_normw *p, int n);

/* qkv [n, Wq] = ln1 [n, d] . W_qkv + b, without positions. */
void sp__qkv_project(const sp_worker *w, const sp_layer *p, float *qkv, const float *ln1, int n);

/* act [n, F] = the MLP's activation of a->ln2 [n, d] (GELU: gelu(ln2 W_in + b); SwiGLU:
 * silu(ln2 W_gate) * ln2 W_up), saving in a->fc, a->fc_aux, a->up what backward needs. */
void sp__mlp_act_forward(const sp_worker *w, const sp_layer *p, const sp__layer_acts *a, float *act,
                         int n);

/* The rotary angles of one position: cos, sin [half] of position times each frequency, the
 * angle rounded to float first as Hugging Face computes it. */
void sp__rope_row(float *cos_row, float *sin_row, const float *inv_freq, int position, int half);

#endif
