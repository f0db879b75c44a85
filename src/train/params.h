/* The trainable parameters of a run as one vector (params.c).
 *
 * A method (include/softprompt/train.h) is data: the list of segments of the vector theta it
 * trains, and whether the prefix the engine reads is a segment of theta itself or the output of
 * the reparametrization MLP. Everything else (optimizer, allreduce, guards, checkpoints) walks
 * the segments and never asks which method runs.
 *
 * Two vectors:
 *   theta [n]      what the optimizer updates: segments in order (prompt, prefix or the
 *                  encoder's embedding, w1, b1, w2, b2)
 *   in_grad [n_in] the gradient of the engine's inputs: prompt [P, d] then prefix
 *                  [L, 2, Pk, kv_dim]; it is what ranks allreduce (one vector, one call). Without
 *                  an encoder or dropout it is the gradient of theta itself (same buffer);
 *                  otherwise sp__params_backward maps it onto grad (MLP backward, dropout mask),
 *                  on every rank alike after the allreduce. */
#ifndef SP_TRAIN_PARAMS_H
#define SP_TRAIN_PARAMS_H

#include <stddef.h>

#include "softprompt/dataset.h"
#include "softprompt/error.h"
#include "softprompt/model.h"
#include "softprompt/rng.h"
#include "softprompt/train.h"

enum { SP__SEG_MAX = 6 };

typedef struct sp__segment {
    const char *name;  /* the checkpoint's dataset: prompt, prefix, prefix_encoder/w1, ... */
    const char *optim; /* prefix of its optimizer arrays' names ("" for the prompt: m, v, ...) */
    int rank;
    int dims[4];
    int rows, cols; /* the optimizer's matrix view (Adafactor factors over it) */
    size_t offset, n;
} sp__segment;

typedef struct sp__params {
    sp_method method;
    int n_prompt, d;               /* input prompt [n_prompt, d]; n_prompt 0: none */
    int n_prefix, n_layer, kv_dim; /* prefix [n_layer, 2, n_prefix, kv_dim]; n_prefix 0: none */
    int hidden;                    /* encoder hidden size; 0: the prefix is trained directly */
    double dropout;                /* on the prefix, training steps only */
    int n_seg;
    sp__segment seg[SP__SEG_MAX];
    size_t n, n_in, n_prefix_values;
    float *theta, *grad; /* [n] */
    float *in_grad;      /* [n_in]; == grad when mapped is 0 */
    int mapped;          /* an encoder or dropout sits between theta and the engine */
    float *prefix;       /* what the engine reads: into theta, or enc_prefix / dropped */
    float *enc_prefix;   /* encoder: its output [L, 2, Pk, kv] */
    float *enc_out;      /* encoder: [Pk, L 2 kv] PEFT's order, scratch */
    float *enc_act;      /* encoder: tanh activations [Pk, h] */
    float *enc_gout;     /* encoder: [Pk, L 2 kv] and [Pk, h] scratch */
    float *enc_gact;
    float *mask;    /* dropout: [n_prefix_values] 0 or 1 / (1 - p) of this step; NULL: none */
    float *dropped; /* dropout: the masked prefix */
} sp__params;

/* Lays out the segments of method m for model cfg (n_prompt input soft tokens, n_prefix prefix
 * rows, hidden > 0 for the encoder) and allocates theta, grad and the engine's buffers. */
int sp__params_init(sp__params *p, sp_method m, const sp_model_config *cfg, int n_prompt,
                    int n_prefix, int hidden, double dropout, sp_error *err);
void sp__params_free(sp__params *p);
/* Initial values of theta for c->init (prefix_init.c); runs on rank 0. */
int sp__params_init_values(sp__params *p, const sp_model *m, const sp_train_config *c,
                           sp_dataset *train, sp_rng *rng, sp_error *err);
const sp__segment *sp__params_find(const sp__params *p, const char *name);
float *sp__params_prompt(const sp__params *p); /* theta's prompt segment, NULL without */

/* Before a step or an evaluation: computes the prefix the engine reads (the encoder's output;
 * with train and dropout, a new mask from rng). */
void sp__params_forward(sp__params *p, int train, sp_rng *rng);
/* After the allreduce and scaling of in_grad: grad of theta (encoder backward, dropout mask). */
void sp__params_backward(sp__params *p);
/* An engine pass reading the current prompt and prefix; grads into in_grad when with_grad. */
void sp__params_pass(const sp__params *p, sp_pass *pass, int with_grad);

/* The reparametrization alone, for tests: out [L, 2, Pk, kv] from the encoder's segments of
 * theta; and, given g_prefix [L, 2, Pk, kv], the encoder's gradient into grad. */
void sp__prefix_encoder_forward(sp__params *p, float *out);
void sp__prefix_encoder_backward(sp__params *p, const float *g_prefix);

/* PEFT's prompt_embeddings [Pk, L 2 kv] from the layout [L, 2, Pk, kv], and back. */
void sp__prefix_to_peft(const float *prefix, int L, int P, int kv, float *peft);
void sp__prefix_from_peft(const float *peft, int L, int P, int kv, float *prefix);

#endif
