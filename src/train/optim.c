/* Optimizers (SGD, AdamW, Adafactor) and learning-rate schedules for the soft prompt.
 *
 * Conventions shared by every kind (see include/softprompt/optim.h):
 *  - The parameter and the state arrays are float32. Each element's new value is computed in
 *    double from the stored float32 values, in the operation order of the PyTorch reference, and
 *    rounded to float32 once when stored. PyTorch float32 rounds after every tensor operation
 *    (and uses FMA in its vectorised kernels), so bitwise agreement with it is impossible anyway;
 *    rounding once keeps us within about one float32 ulp of the exact result per step.
 *  - Reductions (norms, means) are accumulated in double, serially, in index order: the result
 *    depends only on the inputs, so every rank computes bitwise the same update.
 *  - Weight decay is decoupled (p -= lr_t * wd * p) and applied before the gradient update, for
 *    all kinds. For AdamW and Adafactor this is exactly torch / Hugging Face. For SGD it is a
 *    deliberate deviation from torch.optim.SGD's weight_decay (which adds wd * p to the gradient,
 *    i.e. L2 regularisation that also enters the momentum buffer).
 *  - Global-norm gradient clipping precedes the update (torch.nn.utils.clip_grad_norm_).
 *  - The compiler must not contract a*b+c into FMA (it would still be deterministic on one
 *    machine type, but not across builds): the build is ISO C11 (CMAKE_C_EXTENSIONS OFF), for
 *    which GCC defaults to -ffp-contract=off. */
#include "softprompt/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------ config */

void sp_optim_config_default(sp_optim_config *c, sp_optim_kind kind) {
    memset(c, 0, sizeof *c);
    c->kind = kind;
    /* Every kind-specific field gets its usual value, so a later change of kind stays valid. */
    c->beta2 = 0.999;
    c->eps = 1e-8;
    c->decay_rate = -0.8;
    c->eps1 = 1e-30;
    c->eps2 = 1e-3;
    c->clip_threshold = 1.0;
    c->scale_parameter = 0;
    c->clip_norm = 0.0;
    c->schedule = SP_SCHED_CONSTANT;
    c->warmup_steps = 0;
    c->total_steps = 0;
    switch (kind) {
    case SP_OPTIM_ADAFACTOR: /* Lester et al. 2021 */
        c->lr = 0.3;
        c->weight_decay = 1e-5;
        c->beta1 = 0.0;
        break;
    case SP_OPTIM_ADAMW: /* torch.optim.AdamW defaults */
        c->lr = 1e-3;
        c->weight_decay = 0.01;
        c->beta1 = 0.9;
        break;
    case SP_OPTIM_SGD:
    default:
        c->lr = 0.1;
        c->weight_decay = 0.0;
        c->beta1 = 0.0;
        break;
    }
}

static const char *const optim_names[] = {"adafactor", "adamw", "sgd"};
static const char *const sched_names[] = {"constant", "linear", "cosine"};

int sp_optim_kind_parse(const char *name, sp_optim_kind *out) {
    for (int i = 0; i < 3; i++)
        if (name && strcmp(name, optim_names[i]) == 0) {
            *out = (sp_optim_kind)i;
            return 0;
        }
    return -1;
}

int sp_sched_kind_parse(const char *name, sp_sched_kind *out) {
    for (int i = 0; i < 3; i++)
        if (name && strcmp(name, sched_names[i]) == 0) {
            *out = (sp_sched_kind)i;
            return 0;
        }
    return -1;
}

const char *sp_optim_kind_name(sp_optim_kind k) {
    return (unsigned)k < 3 ? optim_names[k] : "unknown";
}

const char *sp_sched_kind_name(sp_sched_kind k) {
    return (unsigned)k < 3 ? sched_names[k] : "unknown";
}

/* ------------------------------------------------------------------------------ schedule */

/* Hugging Face's lr_lambda(k) after the warm-up (k >= W), for get_constant_schedule_with_warmup,
 * get_linear_schedule_with_warmup and get_cosine_schedule_with_warmup (num_cycles 0.5), with the
 * cosine progress clamped to 1 so the lr stays 0 after total_steps. */
static double hf_decay(const sp_optim_config *c, int64_t k) {
    const int64_t w = c->warmup_steps, t = c->total_steps;
    const double span = (double)(t - w > 1 ? t - w : 1);
    switch (c->schedule) {
    case SP_SCHED_LINEAR: {
        double f = (double)(t - k) / span;
        return f > 0.0 ? f : 0.0;
    }
    case SP_SCHED_COSINE: {
        double progress = (double)(k - w) / span;
        if (progress > 1.0) progress = 1.0;
        double f = 0.5 * (1.0 + cos(M_PI * progress));
        return f > 0.0 ? f : 0.0;
    }
    case SP_SCHED_CONSTANT:
    default:
        return 1.0;
    }
}

double sp_optim_lr(const sp_optim_config *c, int64_t step) {
    if (step < 1) step = 1;
    /* Warm-up counts the update being applied: update s of W uses s/W (HF: (s-1)/W, whose first
     * update has lr 0). Afterwards update s uses HF's lr_lambda(s - 1), exactly as HF's LambdaLR
     * (optimizer.step(); scheduler.step()) does. */
    if (c->warmup_steps > 0 && step <= c->warmup_steps)
        return c->lr * ((double)step / (double)c->warmup_steps);
    return c->lr * hf_decay(c, step - 1);
}

/* ------------------------------------------------------------------------------ init */

static int bad_real(sp_error *err, const char *field, double v, const char *want) {
    return sp_fail(err, "invalid optimizer configuration: %s = %g, must be %s", field, v, want);
}

static int validate(const sp_optim_config *c, int rows, int cols, sp_error *err) {
    if ((unsigned)c->kind > SP_OPTIM_SGD)
        return sp_fail(err,
                       "invalid optimizer configuration: kind = %d is not adafactor, adamw "
                       "or sgd",
                       (int)c->kind);
    if ((unsigned)c->schedule > SP_SCHED_COSINE)
        return sp_fail(err,
                       "invalid optimizer configuration: schedule = %d is not constant, "
                       "linear or cosine",
                       (int)c->schedule);
    if (rows <= 0 || cols <= 0)
        return sp_fail(err,
                       "invalid optimizer configuration: parameter shape [%d, %d] must be "
                       "positive",
                       rows, cols);
    if (!(c->lr > 0.0 && isfinite(c->lr))) return bad_real(err, "lr", c->lr, "> 0 and finite");
    if (!(c->weight_decay >= 0.0 && isfinite(c->weight_decay)))
        return bad_real(err, "weight_decay", c->weight_decay, ">= 0 and finite");
    if (!(c->clip_norm >= 0.0 && isfinite(c->clip_norm)))
        return bad_real(err, "clip_norm", c->clip_norm, ">= 0 and finite (0 = no clipping)");
    const char *b1_name = c->kind == SP_OPTIM_SGD ? "beta1 (SGD momentum)" : "beta1";
    if (!(c->beta1 >= 0.0 && c->beta1 < 1.0)) return bad_real(err, b1_name, c->beta1, "in [0, 1)");
    switch (c->kind) {
    case SP_OPTIM_ADAMW:
        if (!(c->beta2 >= 0.0 && c->beta2 < 1.0))
            return bad_real(err, "beta2", c->beta2, "in [0, 1)");
        if (!(c->eps > 0.0 && isfinite(c->eps)))
            return bad_real(err, "eps", c->eps, "> 0 and finite");
        break;
    case SP_OPTIM_ADAFACTOR:
        if (!(c->decay_rate <= 0.0 && isfinite(c->decay_rate)))
            return bad_real(err, "decay_rate", c->decay_rate,
                            "<= 0 and finite (beta2_t = 1 - t^decay_rate, e.g. -0.8)");
        if (!(c->eps1 > 0.0 && isfinite(c->eps1)))
            return bad_real(err, "eps1", c->eps1, "> 0 and finite (e.g. 1e-30)");
        if (!(c->eps2 >= 0.0 && isfinite(c->eps2)))
            return bad_real(err, "eps2", c->eps2, ">= 0 and finite (e.g. 1e-3)");
        if (!(c->clip_threshold > 0.0 && isfinite(c->clip_threshold)))
            return bad_real(err, "clip_threshold", c->clip_threshold, "> 0 and finite (e.g. 1)");
        break;
    case SP_OPTIM_SGD:
        break;
    }
    if (c->warmup_steps < 0)
        return sp_fail(err, "invalid optimizer configuration: warmup_steps = %lld, must be >= 0",
                       (long long)c->warmup_steps);
    if (c->total_steps < 0)
        return sp_fail(err, "invalid optimizer configuration: total_steps = %lld, must be >= 0",
                       (long long)c->total_steps);
    if (c->schedule != SP_SCHED_CONSTANT) {
        if (c->total_steps < 1)
            return sp_fail(err,
                           "invalid optimizer configuration: total_steps = %lld, must be >= 1 "
                           "for the %s schedule (the lr decays to 0 at total_steps)",
                           (long long)c->total_steps, sp_sched_kind_name(c->schedule));
        if (c->warmup_steps > c->total_steps)
            return sp_fail(err,
                           "invalid optimizer configuration: warmup_steps = %lld exceeds "
                           "total_steps = %lld (%s schedule)",
                           (long long)c->warmup_steps, (long long)c->total_steps,
                           sp_sched_kind_name(c->schedule));
    }
    return 0;
}

int sp_optim_init(sp_optim *o, const sp_optim_config *c, int rows, int cols, sp_error *err) {
    memset(o, 0, sizeof *o);
    if (validate(c, rows, cols, err) != 0) return -1;
    o->cfg = *c;
    o->rows = rows;
    o->cols = cols;
    size_t n = (size_t)rows * (size_t)cols;
    int ok = 1;
    if (c->kind == SP_OPTIM_ADAMW || c->beta1 > 0.0) ok &= (o->m = calloc(n, sizeof(float))) != 0;
    if (c->kind == SP_OPTIM_ADAMW) ok &= (o->v = calloc(n, sizeof(float))) != 0;
    if (c->kind == SP_OPTIM_ADAFACTOR) {
        ok &= (o->vr = calloc((size_t)rows, sizeof(float))) != 0;
        ok &= (o->vc = calloc((size_t)cols, sizeof(float))) != 0;
    }
    if (!ok) {
        sp_optim_free(o);
        return sp_fail(err, "optimizer: out of memory for the state of a [%d, %d] parameter", rows,
                       cols);
    }
    return 0;
}

void sp_optim_free(sp_optim *o) {
    if (!o) return;
    free(o->m);
    free(o->v);
    free(o->vr);
    free(o->vc);
    memset(o, 0, sizeof *o);
}

int sp_optim_state(sp_optim *o, sp_optim_array out[4]) {
    size_t n = (size_t)o->rows * (size_t)o->cols;
    int k = 0;
    if (o->m) out[k++] = (sp_optim_array){"m", o->m, n};
    if (o->v) out[k++] = (sp_optim_array){"v", o->v, n};
    if (o->vr) out[k++] = (sp_optim_array){"vr", o->vr, (size_t)o->rows};
    if (o->vc) out[k++] = (sp_optim_array){"vc", o->vc, (size_t)o->cols};
    return k;
}

/* ------------------------------------------------------------------------------ updates */

static double sum_squares(const float *x, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
    return s;
}

/* SGD with decoupled weight decay and optional heavy-ball momentum (torch.optim.SGD, dampening 0,
 * no Nesterov): p *= 1 - lr*wd; buf = momentum*buf + g; p -= lr*buf. */
static void step_sgd(sp_optim *o, float *p, const float *g, double lr) {
    const size_t n = (size_t)o->rows * (size_t)o->cols;
    const double decay = 1.0 - lr * o->cfg.weight_decay, mom = o->cfg.beta1;
    for (size_t i = 0; i < n; i++) {
        double d = g[i];
        if (o->m) {
            o->m[i] = (float)(mom * (double)o->m[i] + d);
            d = o->m[i];
        }
        p[i] = (float)((double)p[i] * decay - lr * d);
    }
}

/* torch.optim.AdamW, single-tensor implementation (torch 1.13), in its operation order:
 *   param.mul_(1 - lr*wd)
 *   exp_avg.mul_(b1).add_(grad, alpha=1-b1)
 *   exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1-b2)
 *   denom = (exp_avg_sq.sqrt() / sqrt(bias_correction2)).add_(eps)
 *   param.addcdiv_(exp_avg, denom, value=-lr/bias_correction1) */
static void step_adamw(sp_optim *o, float *p, const float *g, double lr) {
    const size_t n = (size_t)o->rows * (size_t)o->cols;
    const sp_optim_config *c = &o->cfg;
    const double b1 = c->beta1, b2 = c->beta2, t = (double)o->step;
    const double bias_correction1 = 1.0 - pow(b1, t);
    const double bias_correction2 = 1.0 - pow(b2, t);
    const double step_size = lr / bias_correction1;
    const double bc2_sqrt = sqrt(bias_correction2);
    const double decay = 1.0 - lr * c->weight_decay;
    for (size_t i = 0; i < n; i++) {
        const double gi = g[i];
        o->m[i] = (float)((double)o->m[i] * b1 + (1.0 - b1) * gi);
        o->v[i] = (float)((double)o->v[i] * b2 + (1.0 - b2) * (gi * gi));
        const double denom = sqrt((double)o->v[i]) / bc2_sqrt + c->eps;
        p[i] = (float)((double)p[i] * decay - step_size * ((double)o->m[i] / denom));
    }
}

/* Hugging Face transformers.Adafactor.step for a 2-D parameter, relative_step=False,
 * warmup_init=False (so the step size is the external, scheduled lr):
 *   t += 1
 *   lr_t = lr * (scale_parameter ? max(eps2, RMS(p)) : 1)   RMS of p before this update
 *   beta2t = 1 - t^decay_rate
 *   u = g^2 + eps1
 *   vr = beta2t*vr + (1-beta2t)*mean(u, over columns)       [rows]
 *   vc = beta2t*vc + (1-beta2t)*mean(u, over rows)          [cols]
 *   u = rsqrt(vr / mean(vr))[:, None] * rsqrt(vc)[None, :] * g
 *   u /= max(1, RMS(u) / clip_threshold)
 *   u *= lr_t
 *   if beta1: m = beta1*m + (1-beta1)*u; u = m               (m holds lr-scaled updates)
 *   if wd:    p += -wd*lr_t * p                              (decay first, as HF on its copy)
 *   p -= u
 * The factored statistics are always used (HF factors every tensor of >= 2 dimensions). Column
 * means and the RMS of u are computed with extra passes instead of a scratch array: u is
 * recomputed from the same values, so both passes see identical numbers. */
static void step_adafactor(sp_optim *o, float *p, const float *g, double lr) {
    const sp_optim_config *c = &o->cfg;
    const int rows = o->rows, cols = o->cols;
    const size_t n = (size_t)rows * (size_t)cols;

    double lr_t = lr;
    if (c->scale_parameter) {
        double rms_p = sqrt(sum_squares(p, n)) / sqrt((double)n); /* HF: norm / sqrt(numel) */
        lr_t = lr * (rms_p > c->eps2 ? rms_p : c->eps2);
    }
    const double beta2t = 1.0 - pow((double)o->step, c->decay_rate);
    const double eps1 = c->eps1;

    /* Row statistics: mean over the columns of g^2 + eps1. */
    for (int i = 0; i < rows; i++) {
        const float *gr = g + (size_t)i * cols;
        double s = 0.0;
        for (int j = 0; j < cols; j++) s += (double)gr[j] * gr[j] + eps1;
        o->vr[i] = (float)(beta2t * o->vr[i] + (1.0 - beta2t) * (s / cols));
    }
    /* Column statistics: mean over the rows, summed in row order. */
    for (int j = 0; j < cols; j++) {
        double s = 0.0;
        for (int i = 0; i < rows; i++) {
            const double x = g[(size_t)i * cols + j];
            s += x * x + eps1;
        }
        o->vc[j] = (float)(beta2t * o->vc[j] + (1.0 - beta2t) * (s / rows));
    }
    double mean_vr = 0.0;
    for (int i = 0; i < rows; i++) mean_vr += o->vr[i];
    mean_vr /= rows;

    /* RMS of the unscaled update r_i * c_j * g_ij. */
    double ss = 0.0;
    for (int i = 0; i < rows; i++) {
        const double r = 1.0 / sqrt((double)o->vr[i] / mean_vr);
        const float *gr = g + (size_t)i * cols;
        for (int j = 0; j < cols; j++) {
            const double u = r * (1.0 / sqrt((double)o->vc[j])) * gr[j];
            ss += u * u;
        }
    }
    const double rms_u = sqrt(ss) / sqrt((double)n);
    const double clip = rms_u / c->clip_threshold > 1.0 ? rms_u / c->clip_threshold : 1.0;
    const double wd = c->weight_decay * lr_t, b1 = c->beta1;

    for (int i = 0; i < rows; i++) {
        const double r = 1.0 / sqrt((double)o->vr[i] / mean_vr);
        const float *gr = g + (size_t)i * cols;
        float *pr = p + (size_t)i * cols;
        float *mr = o->m ? o->m + (size_t)i * cols : NULL;
        for (int j = 0; j < cols; j++) {
            double u = r * (1.0 / sqrt((double)o->vc[j])) * gr[j];
            u = (u / clip) * lr_t;
            if (mr) {
                mr[j] = (float)(b1 * mr[j] + (1.0 - b1) * u);
                u = mr[j];
            }
            const double pj = pr[j];
            pr[j] = (float)((pj - wd * pj) - u);
        }
    }
}

double sp_optim_clip(float *grad, size_t n, double clip_norm) {
    const double norm = sqrt(sum_squares(grad, n));
    if (clip_norm > 0.0) {
        /* torch.nn.utils.clip_grad_norm_: coef = max_norm / (total_norm + 1e-6), applied when < 1
         * (torch multiplies by min(coef, 1) unconditionally: the same result). */
        const double coef = clip_norm / (norm + 1e-6);
        if (coef < 1.0)
            for (size_t i = 0; i < n; i++) grad[i] = (float)((double)grad[i] * coef);
    }
    return norm;
}

void sp_optim_step(sp_optim *o, float *param, float *grad, double *grad_norm) {
    const size_t n = (size_t)o->rows * (size_t)o->cols;
    const double norm = sp_optim_clip(grad, n, o->cfg.clip_norm);
    if (grad_norm) *grad_norm = norm;
    o->step++;
    const double lr = sp_optim_lr(&o->cfg, o->step);
    switch (o->cfg.kind) {
    case SP_OPTIM_ADAFACTOR:
        step_adafactor(o, param, grad, lr);
        break;
    case SP_OPTIM_ADAMW:
        step_adamw(o, param, grad, lr);
        break;
    case SP_OPTIM_SGD:
        step_sgd(o, param, grad, lr);
        break;
    }
}
