#include "model/kernels.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

void sp_layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w,
                          const float *b, int n, int d, float eps) {
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d;
        float *oi = out + (size_t)i * d;
        /* Two passes in double: the variance of near-constant rows must not cancel badly. */
        double m = 0.0, v = 0.0;
        for (int j = 0; j < d; j++) m += xi[j];
        m /= d;
        for (int j = 0; j < d; j++) v += (xi[j] - m) * (xi[j] - m);
        v /= d;
        float s = (float)(1.0 / sqrt(v + eps));
        for (int j = 0; j < d; j++) oi[j] = ((xi[j] - (float)m) * s) * w[j] + b[j];
        mean[i] = (float)m;
        rstd[i] = s;
    }
}

void sp_layernorm_backward(float *dx, const float *dout, const float *x, const float *mean,
                           const float *rstd, const float *w, int n, int d) {
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d, *gi = dout + (size_t)i * d;
        float *dxi = dx + (size_t)i * d;
        /* With xhat = (x - mean) * rstd and g = dout * w:
         * dx = rstd * (g - mean(g) - xhat * mean(g * xhat)). */
        double sum_g = 0.0, sum_gx = 0.0;
        for (int j = 0; j < d; j++) {
            float xhat = (xi[j] - mean[i]) * rstd[i];
            float g = gi[j] * w[j];
            sum_g += g;
            sum_gx += (double)g * xhat;
        }
        float mg = (float)(sum_g / d), mgx = (float)(sum_gx / d);
        for (int j = 0; j < d; j++) {
            float xhat = (xi[j] - mean[i]) * rstd[i];
            dxi[j] += rstd[i] * (gi[j] * w[j] - mg - xhat * mgx);
        }
    }
}

void sp_linear_fwd(float *y, int ldy, const float *x, int ldx, const float *w, sp_wlayout layout,
                   const float *b, int n, int in, int out, int accumulate) {
    if (n == 0) return;
    if (b) {
        for (int i = 0; i < n; i++) {
            float *yi = y + (size_t)i * ldy;
            if (accumulate)
                for (int j = 0; j < out; j++) yi[j] += b[j];
            else
                memcpy(yi, b, (size_t)out * sizeof *b);
        }
    }
    float beta = (b || accumulate) ? 1.0f : 0.0f;
    if (layout == SP_W_IN_OUT)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, out, in, 1.0f, x, ldx, w, out,
                    beta, y, ldy);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, ldx, w, in, beta,
                    y, ldy);
}

void sp_linear_bwd(float *dx, int lddx, const float *dy, int lddy, const float *w,
                   sp_wlayout layout, int n, int in, int out, int accumulate) {
    if (n == 0) return;
    float beta = accumulate ? 1.0f : 0.0f;
    if (layout == SP_W_IN_OUT) /* dx = dy W^T, W [in, out] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, in, out, 1.0f, dy, lddy, w, out,
                    beta, dx, lddx);
    else /* dx = dy W, W [out, in] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy, lddy, w, in,
                    beta, dx, lddx);
}

void sp_linear_forward(float *y, const float *x, const float *w, const float *b, int n, int in,
                       int out, int accumulate) {
    sp_linear_fwd(y, out, x, in, w, SP_W_IN_OUT, b, n, in, out, accumulate);
}

void sp_linear_backward(float *dx, const float *dy, const float *w, int n, int in, int out,
                        int accumulate) {
    sp_linear_bwd(dx, in, dy, out, w, SP_W_IN_OUT, n, in, out, accumulate);
}

void sp_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int n, int d,
                        float eps) {
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d;
        float *oi = out + (size_t)i * d;
        double ss = 0.0;
        for (int j = 0; j < d; j++) ss += (double)xi[j] * xi[j];
        float s = (float)(1.0 / sqrt(ss / d + eps));
        for (int j = 0; j < d; j++) oi[j] = w[j] * (xi[j] * s);
        rstd[i] = s;
    }
}

void sp_rmsnorm_backward(float *dx, const float *dout, const float *x, const float *rstd,
                         const float *w, int n, int d) {
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d, *gi = dout + (size_t)i * d;
        float *dxi = dx + (size_t)i * d;
        /* With xhat = x * rstd and g = dout * w: dx = rstd * (g - xhat * mean(g * xhat)). */
        double sum_gx = 0.0;
        for (int j = 0; j < d; j++) sum_gx += (double)gi[j] * w[j] * (xi[j] * rstd[i]);
        float mgx = (float)(sum_gx / d);
        for (int j = 0; j < d; j++) dxi[j] += rstd[i] * (gi[j] * w[j] - xi[j] * rstd[i] * mgx);
    }
}

void sp_rope_rotate(float *x, int ld, int len, int n_heads, int hd, const float *cos,
                    const float *sin, int inverse) {
    int half = hd / 2;
    float sign = inverse ? -1.0f : 1.0f;
    for (int t = 0; t < len; t++) {
        const float *c = cos + (size_t)t * half, *s = sin + (size_t)t * half;
        for (int h = 0; h < n_heads; h++) {
            float *a = x + (size_t)t * ld + (size_t)h * hd, *b = a + half;
            for (int j = 0; j < half; j++) {
                float x1 = a[j], x2 = b[j], sj = sign * s[j];
                a[j] = x1 * c[j] - x2 * sj;
                b[j] = x2 * c[j] + x1 * sj;
            }
        }
    }
}

/* Attention works on blocks of SP_ATT_QBLOCK query rows: a block's scores against every key up
 * to its last row fit in scratch [SP_ATT_QBLOCK, len], so no [len, len] matrix per head is
 * stored, and causality wastes only the triangle inside the diagonal block. Backward
 * recomputes the probabilities from the saved log-sum-exp of each row. */

/* Row r of the block holds scores of query i0 + r against keys 0..kend-1 (kend = i0 + rows);
 * only keys 0..i0+r are visible. Turns row r into probabilities (zero past i0+r) and returns
 * its log-sum-exp through lse[r]. */
static void block_softmax(float *s, float *lse, int i0, int rows, int kend) {
    for (int r = 0; r < rows; r++) {
        float *row = s + (size_t)r * kend;
        int n = i0 + r + 1;
        float mx = row[0];
        for (int j = 1; j < n; j++) mx = row[j] > mx ? row[j] : mx;
        float sum = sp_exp_shift_sum(row, n, mx);
        float inv = 1.0f / sum;
        for (int j = 0; j < n; j++) row[j] *= inv;
        memset(row + n, 0, (size_t)(kend - n) * sizeof(float));
        lse[r] = mx + logf(sum);
    }
}

void sp_attention_forward(float *out, float *lse, float *scratch, const float *qkv, int len,
                          const sp_heads *hs) {
    int hd = hs->hd, ld = SP_QKV_WIDTH(hs), d = hs->n_head * hd;
    float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < hs->n_head; h++) {
        const float *q = qkv + h * hd, *k = qkv + SP_K_COL(hs, h), *v = qkv + SP_V_COL(hs, h);
        for (int i0 = 0; i0 < len; i0 += SP_ATT_QBLOCK) {
            int rows = len - i0 < SP_ATT_QBLOCK ? len - i0 : SP_ATT_QBLOCK, kend = i0 + rows;
            /* scratch[rows, kend] = scale * Q[i0:kend] K[0:kend]^T, then softmax per row */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, kend, hd, scale,
                        q + (size_t)i0 * ld, ld, k, ld, 0.0f, scratch, kend);
            block_softmax(scratch, lse + (size_t)h * len + i0, i0, rows, kend);
            /* out[i0:kend, head h] = P V[0:kend] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, kend, 1.0f, scratch,
                        kend, v, ld, 0.0f, out + (size_t)i0 * d + h * hd, d);
        }
    }
}

/* dS = scale * P o (dP - D) in place of dp, where P is recomputed from the scores s and the
 * saved lse, and D[r] = dO_r . O_r (= sum_j P_rj dP_rj). s becomes P. */
static void block_softmax_backward(float *s, float *dp, const float *lse, const float *dsum, int i0,
                                   int rows, int kend, float scale) {
    for (int r = 0; r < rows; r++) {
        float *pr = s + (size_t)r * kend, *dr = dp + (size_t)r * kend;
        int n = i0 + r + 1;
        sp_exp_shift(pr, n, lse[r]);
        for (int j = 0; j < n; j++) dr[j] = scale * pr[j] * (dr[j] - dsum[r]);
        memset(pr + n, 0, (size_t)(kend - n) * sizeof(float));
        memset(dr + n, 0, (size_t)(kend - n) * sizeof(float));
    }
}

void sp_attention_backward(float *dqkv, float *scratch, const float *dout, const float *out,
                           const float *lse, const float *qkv, int len, const sp_heads *hs) {
    int hd = hs->hd, ld = SP_QKV_WIDTH(hs), d = hs->n_head * hd, n_head = hs->n_head;
    float scale = 1.0f / sqrtf((float)hd);
    float *s = scratch, *dp = scratch + (size_t)SP_ATT_QBLOCK * len;
    float *dsum = dp + (size_t)SP_ATT_QBLOCK * len; /* [SP_ATT_QBLOCK] */
    /* dK and dV accumulate over query blocks and over the query heads sharing a key head */
    for (int i = 0; i < len; i++)
        memset(dqkv + (size_t)i * ld + d, 0, (size_t)(ld - d) * sizeof(float));
    for (int h = 0; h < n_head; h++) {
        const float *q = qkv + h * hd, *k = qkv + SP_K_COL(hs, h), *v = qkv + SP_V_COL(hs, h);
        float *dq = dqkv + h * hd, *dk = dqkv + SP_K_COL(hs, h), *dv = dqkv + SP_V_COL(hs, h);
        for (int i0 = 0; i0 < len; i0 += SP_ATT_QBLOCK) {
            int rows = len - i0 < SP_ATT_QBLOCK ? len - i0 : SP_ATT_QBLOCK, kend = i0 + rows;
            const float *dO = dout + (size_t)i0 * d + h * hd, *O = out + (size_t)i0 * d + h * hd;
            for (int r = 0; r < rows; r++) {
                float acc = 0.0f;
                for (int j = 0; j < hd; j++) acc += dO[(size_t)r * d + j] * O[(size_t)r * d + j];
                dsum[r] = acc;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, kend, hd, scale,
                        q + (size_t)i0 * ld, ld, k, ld, 0.0f, s, kend);
            /* dP[rows, kend] = dO V^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, kend, hd, 1.0f, dO, d, v, ld,
                        0.0f, dp, kend);
            block_softmax_backward(s, dp, lse + (size_t)h * len + i0, dsum, i0, rows, kend, scale);
            /* dV[0:kend] += P^T dO,  dQ[i0:kend] = dS K[0:kend],  dK[0:kend] += dS^T Q[i0:kend] */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kend, hd, rows, 1.0f, s, kend, dO,
                        d, 1.0f, dv, ld);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, kend, 1.0f, dp, kend,
                        k, ld, 0.0f, dq + (size_t)i0 * ld, ld);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kend, hd, rows, 1.0f, dp, kend,
                        q + (size_t)i0 * ld, ld, 1.0f, dk, ld);
        }
    }
}

double sp_cross_entropy(float *logits, int vocab, int target, int want_grad, float scale) {
    float mx = sp_max(logits, vocab), at_target = logits[target];
    /* logits[j] becomes exp(logits[j] - mx) (vectorised, float); the sum is taken in double */
    double sum = sp_exp_shift_sum_f64(logits, vocab, mx);
    double loss = log(sum) - (double)(at_target - mx);
    if (want_grad) {
        float k = (float)(scale / sum);
        for (int j = 0; j < vocab; j++) logits[j] *= k;
        logits[target] -= scale;
    }
    return loss;
}
