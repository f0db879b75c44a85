/* Optimizers and learning-rate schedules for the soft prompt (a [rows, cols] = [P, d] matrix).
 *
 * Every rank holds the same prompt, receives the same (allreduced) gradient and applies the same
 * update, so the prompts stay identical without communication. The update is deterministic:
 * the same inputs give bitwise the same outputs (serial loops in a fixed order, no threads).
 *
 * Precision: the prompt and every state array are float32; each element's new value is computed
 * in double from the stored float32 values and rounded once when stored; means and norms are
 * accumulated in double. Results agree with PyTorch float32 (torch.optim.SGD/AdamW, Hugging
 * Face's Adafactor) to a few 1e-7 relative (tests/unit/test_optim.c). */
#ifndef SOFTPROMPT_OPTIM_H
#define SOFTPROMPT_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "softprompt/error.h"

typedef enum sp_optim_kind { SP_OPTIM_ADAFACTOR, SP_OPTIM_ADAMW, SP_OPTIM_SGD } sp_optim_kind;
typedef enum sp_sched_kind { SP_SCHED_CONSTANT, SP_SCHED_LINEAR, SP_SCHED_COSINE } sp_sched_kind;

/* lr_t below is the scheduled learning rate of the update, sp_optim_lr(c, step), times
 * max(eps2, RMS(param)) for Adafactor with scale_parameter.
 *
 *  SGD       p *= 1 - lr_t*wd; buf = momentum*buf + g (buf starts at 0, so the first buf is g,
 *            as torch.optim.SGD with dampening 0, no Nesterov); p -= lr_t*buf (buf = g without
 *            momentum). The weight decay is DECOUPLED and applied first, unlike torch.optim.SGD's
 *            weight_decay, which adds wd*p to the gradient (and so into the momentum).
 *  AdamW     torch.optim.AdamW (amsgrad off): p *= 1 - lr_t*wd; m = b1 m + (1-b1) g;
 *            v = b2 v + (1-b2) g^2; p -= lr_t/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps).
 *  Adafactor transformers.Adafactor with relative_step=False, warmup_init=False, factored second
 *            moment (HF factors every parameter of 2 or more dimensions, so the prompt always,
 *            even with P = 1): see src/train/optim.c. beta1 > 0 enables the first moment (HF's
 *            beta1=None otherwise); weight decay p -= wd*lr_t*p is applied before the update. */
typedef struct sp_optim_config {
    sp_optim_kind kind;
    double lr;             /* peak learning rate, > 0 */
    double weight_decay;   /* decoupled, >= 0: p -= lr_t * wd * p before the update, all kinds */
    double beta1;          /* [0, 1). AdamW: 0.9; SGD: momentum (0 = plain SGD); Adafactor: 0 =
                              no first moment (HF beta1=None) */
    double beta2;          /* AdamW: [0, 1), 0.999 */
    double eps;            /* AdamW: > 0, 1e-8 */
    double decay_rate;     /* Adafactor: <= 0, -0.8 (beta2_t = 1 - t^decay_rate) */
    double eps1, eps2;     /* Adafactor: > 0 and >= 0: 1e-30 (added to grad^2), 1e-3 (floor of
                              the parameter scale) */
    double clip_threshold; /* Adafactor: > 0, update RMS clipping, 1.0 */
    int scale_parameter;   /* Adafactor: multiply lr by max(eps2, RMS(p)); Lester et al.: off */
    double clip_norm;      /* clip the gradient by global L2 norm before the update; 0 = off */
    sp_sched_kind schedule;
    int64_t warmup_steps; /* >= 0: linear warm-up over these steps, then the schedule */
    int64_t total_steps;  /* linear/cosine: >= 1 and >= warmup_steps, lr reaches 0 there;
                             constant: ignored */
} sp_optim_config;

/* Defaults per kind: Adafactor as Lester et al. 2021 (lr 0.3, no parameter scaling,
 * decay_rate -0.8, weight decay 1e-5, clip_threshold 1, no momentum); AdamW (lr 1e-3 — note
 * prompt tuning usually wants far more, betas 0.9/0.999, eps 1e-8, wd 0.01); SGD (lr 0.1, no
 * momentum, no weight decay). schedule constant, no warm-up, no clipping. Fields another kind
 * uses get that kind's defaults too (beta2 0.999, eps 1e-8, decay_rate -0.8, eps1 1e-30,
 * eps2 1e-3, clip_threshold 1), so changing c->kind afterwards leaves a valid config. */
void sp_optim_config_default(sp_optim_config *c, sp_optim_kind kind);
int sp_optim_kind_parse(const char *name, sp_optim_kind *out); /* adafactor | adamw | sgd */
int sp_sched_kind_parse(const char *name, sp_sched_kind *out); /* constant | linear | cosine */
const char *sp_optim_kind_name(sp_optim_kind k);
const char *sp_sched_kind_name(sp_sched_kind k);

/* Learning rate applied by update number `step` (1-based: the first update is step 1; values
 * below 1 are treated as 1). With W = warmup_steps, T = total_steps:
 *
 *   step <= W:  lr * step / W                       (warm-up; update W uses the full lr)
 *   step >  W:  lr * f(step - 1), where f(k) is Hugging Face's lr_lambda(k):
 *                 constant  1
 *                 linear    max(0, (T - k) / max(1, T - W))
 *                 cosine    0.5 * (1 + cos(pi * min(1, (k - W) / max(1, T - W))))
 *
 * Relation to Hugging Face (LambdaLR, whose update s uses lr_lambda(s - 1)): identical for every
 * update after the warm-up, and for the whole run when W = 0. During warm-up HF's update s uses
 * (s-1)/W, so its first update has lr 0 and is wasted; ours uses s/W (first update lr/W), so the
 * peak lr is used by updates W and W+1. A run of T updates ends with lr > 0 (update T uses
 * f(T-1)), as in HF. Beyond T the lr stays 0 (HF's cosine would rise again; we clamp). */
double sp_optim_lr(const sp_optim_config *c, int64_t step);

/* Optimizer state (for checkpoints: every array is listed by sp_optim_state). Arrays the kind
 * does not use are NULL. */
typedef struct sp_optim {
    sp_optim_config cfg;
    int rows, cols;
    int64_t step; /* updates applied so far */
    float *m;     /* [rows * cols] AdamW first moment, SGD momentum, Adafactor beta1 average */
    float *v;     /* [rows * cols] AdamW second moment */
    float *vr;    /* [rows] Adafactor factored second moment, row statistics (HF exp_avg_sq_row) */
    float *vc;    /* [cols] Adafactor factored second moment, column statistics (exp_avg_sq_col) */
} sp_optim;

/* Validates c (a message naming the field at fault otherwise) and allocates zeroed state for a
 * [rows, cols] parameter; step = 0. On failure *o is zeroed (sp_optim_free is safe). */
int sp_optim_init(sp_optim *o, const sp_optim_config *c, int rows, int cols, sp_error *err);
void sp_optim_free(sp_optim *o);

/* Applies one update to param [rows, cols] from grad (the gradient of the MEAN loss). Computes
 * the global L2 norm of grad, then with clip_norm > 0 scales grad IN PLACE by
 * coef = clip_norm / (norm + 1e-6) when coef < 1 (torch.nn.utils.clip_grad_norm_). Increments
 * o->step first and uses the lr of that step, sp_optim_lr(&o->cfg, o->step). Returns the norm
 * of grad before clipping through *grad_norm (may be NULL). A non-finite gradient is not
 * detected here and poisons param and state: callers check *grad_norm beforehand if needed. */
void sp_optim_step(sp_optim *o, float *param, float *grad, double *grad_norm);
/* The clipping sp_optim_step does, alone: returns the L2 norm of grad [n] and, with clip_norm >
 * 0, scales grad in place as above. For parameters made of several tensors, each with its own
 * optimizer (prefix tuning's MLP), whose global norm is clipped once. */
double sp_optim_clip(float *grad, size_t n, double clip_norm);

/* The state arrays, for saving and restoring: name, pointer and length (floats). Arrays the
 * kind does not use are omitted. Returns their count (at most 4). In this order, when in use:
 *   "m"  [rows*cols]  AdamW; SGD with momentum (beta1 > 0); Adafactor with beta1 > 0
 *   "v"  [rows*cols]  AdamW
 *   "vr" [rows]       Adafactor
 *   "vc" [cols]       Adafactor
 * To restore: sp_optim_init with the same config and shape, copy each array into data, and
 * set o->step. */
typedef struct sp_optim_array {
    const char *name;
    float *data;
    size_t n;
} sp_optim_array;
int sp_optim_state(sp_optim *o, sp_optim_array out[4]);

#endif
