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

void sp_linear_forward(float *y, const float *x, const float *w, const float *b, int n, int in,
                       int out, int accumulate) {
    if (n == 0) return;
    if (b) {
        for (int i = 0; i < n; i++) {
            float *yi = y + (size_t)i * out;
            if (accumulate)
                for (int j = 0; j < out; j++) yi[j] += b[j];
            else
                memcpy(yi, b, (size_t)out * sizeof *b);
        }
    }
    float beta = (b || accumulate) ? 1.0f : 0.0f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, out, in, 1.0f, x, in, w, out, beta, y,
                out);
}

void sp_linear_backward(float *dx, const float *dy, const float *w, int n, int in, int out,
                        int accumulate) {
    if (n == 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, in, out, 1.0f, dy, out, w, out,
                accumulate ? 1.0f : 0.0f, dx, in);
}

/* Row i of scores[len, len] becomes softmax over columns 0..i; columns past i become 0. */
static void causal_softmax(float *scores, int len) {
    for (int i = 0; i < len; i++) {
        float *row = scores + (size_t)i * len;
        float mx = row[0];
        for (int j = 1; j <= i; j++) mx = row[j] > mx ? row[j] : mx;
        float sum = 0.0f;
        for (int j = 0; j <= i; j++) sum += (row[j] = expf(row[j] - mx));
        float inv = 1.0f / sum;
        for (int j = 0; j <= i; j++) row[j] *= inv;
        for (int j = i + 1; j < len; j++) row[j] = 0.0f;
    }
}

void sp_attention_forward(float *out, float *probs, const float *qkv, int len, int d, int n_head) {
    int hd = d / n_head, ld = 3 * d;
    float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < n_head; h++) {
        const float *q = qkv + h * hd, *k = qkv + d + h * hd, *v = qkv + 2 * d + h * hd;
        float *p = probs + (size_t)h * len * len;
        /* scores[len, len] = scale * Q K^T (the upper triangle is computed and then zeroed:
         * cheaper than len small products for the sizes that matter) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, len, len, hd, scale, q, ld, k, ld,
                    0.0f, p, len);
        causal_softmax(p, len);
        /* out[:, head h] = P V */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, len, hd, len, 1.0f, p, len, v, ld,
                    0.0f, out + h * hd, d);
    }
}

void sp_attention_backward(float *dqkv, float *scratch, const float *dout, const float *probs,
                           const float *qkv, int len, int d, int n_head) {
    int hd = d / n_head, ld = 3 * d;
    float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < n_head; h++) {
        const float *q = qkv + h * hd, *k = qkv + d + h * hd, *v = qkv + 2 * d + h * hd;
        const float *p = probs + (size_t)h * len * len, *dO = dout + h * hd;
        float *dq = dqkv + h * hd, *dk = dqkv + d + h * hd, *dv = dqkv + 2 * d + h * hd;
        float *ds = scratch; /* [len, len]: dP, then dS in place */
        /* dV = P^T dO */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, len, hd, len, 1.0f, p, len, dO, d,
                    0.0f, dv, ld);
        /* dP = dO V^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, len, len, hd, 1.0f, dO, d, v, ld, 0.0f,
                    ds, len);
        /* softmax backward: dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik), times the score scale */
        for (int i = 0; i < len; i++) {
            const float *pi = p + (size_t)i * len;
            float *di = ds + (size_t)i * len;
            float dot = 0.0f;
            for (int j = 0; j <= i; j++) dot += pi[j] * di[j];
            for (int j = 0; j <= i; j++) di[j] = scale * pi[j] * (di[j] - dot);
            for (int j = i + 1; j < len; j++) di[j] = 0.0f;
        }
        /* dQ = dS K,  dK = dS^T Q */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, len, hd, len, 1.0f, ds, len, k, ld,
                    0.0f, dq, ld);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, len, hd, len, 1.0f, ds, len, q, ld,
                    0.0f, dk, ld);
    }
}

double sp_cross_entropy(float *logits, int vocab, int target, int want_grad, float scale) {
    float mx = logits[0];
    for (int j = 1; j < vocab; j++) mx = logits[j] > mx ? logits[j] : mx;
    double sum = 0.0;
    for (int j = 0; j < vocab; j++) sum += exp((double)(logits[j] - mx));
    double loss = log(sum) - (double)(logits[target] - mx);
    if (want_grad) {
        double inv = 1.0 / sum;
        for (int j = 0; j < vocab; j++)
            logits[j] = scale * (float)(exp((double)(logits[j] - mx)) * inv);
        logits[target] -= scale;
    }
    return loss;
}
