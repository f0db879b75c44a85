#include "model/kernels.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

void sp__layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w,
                           const float *b, int n, int d, float eps) {
    if (sp__vmath_ok()) { /* AVX-512 (vmath.c): the same sums, 16 columns at a time */
        sp__vmath_layernorm_forward(out, mean, rstd, x, w, b, n, d, eps);
        return;
    }
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

void sp__layernorm_backward(float *dx, const float *dout, const float *x, const float *mean,
                            const float *rstd, const float *w, int n, int d) {
    if (sp__vmath_ok()) { /* AVX-512 (vmath.c): the same sums, 16 columns at a time */
        sp__vmath_layernorm_backward(dx, dout, x, mean, rstd, w, n, d);
        return;
    }
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

static _Thread_local int single_row_gemv;

void sp__linear_single_row_gemv(int on) {
    single_row_gemv = on;
}

/* y [out] = x [in] . W (+ beta y) by sgemv (a decode step's one row without AVX-512). */
static void product_row(float *y, const float *x, const float *w, const sp_linear *W, float beta) {
    switch (W->layout) {
    case SP_W_IN_OUT: /* W [in, out]: y = W^T x */
        cblas_sgemv(CblasRowMajor, CblasTrans, W->in, W->out, 1.0f, w, W->out, x, 1, beta, y, 1);
        return;
    case SP_W_OUT_IN: /* W [out, in]: y = W x */
        cblas_sgemv(CblasRowMajor, CblasNoTrans, W->out, W->in, 1.0f, w, W->in, x, 1, beta, y, 1);
        return;
    }
}

/* C[m, n] = A[m, k] op(W) + beta C for a float32 weight: the LM head (exact) by sp__sgemm_small,
 * so that its sums are those of its BF16 store's float32 path (bf16.c), every other by sgemm. */
static void f32_product(const sp_linear *W, CBLAS_TRANSPOSE tw, int m, int n, int k, const float *a,
                        int lda, int ldw, float beta, float *c, int ldc) {
    if (W->exact)
        sp__sgemm_small(CblasNoTrans, tw, m, n, k, 1.0f, a, lda, W->w, ldw, beta, c, ldc);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, tw, m, n, k, 1.0f, a, lda, W->w, ldw, beta, c,
                    ldc);
}

/* y = start + x . W, start = residual + bias (either may be NULL: zero): the one product of every
 * linear layer, by the weight's storage. The BF16 kernel adds the start as it stores its tiles;
 * every other path forms it in y first and adds the product to it (the same sums either way). */
static void product(float *y, int ldy, const float *x, int ldx, const sp_linear *W, int n,
                    const sp__gemm_start *start) {
    int wt = W->layout == SP_W_OUT_IN, ldw = wt ? W->in : W->out;
    if (W->store == SP_WSTORE_BF16 &&
        !(single_row_gemv && (W->exact || !sp__bf16_native()) && sp__gemm_few_ok(n))) {
        sp__gemm_bf16_start(n, W->out, W->in, x, ldx, W->w, ldw, wt, W->exact, start, y, ldy);
        return;
    }
    float beta = start->bias || start->res ? 1.0f : 0.0f;
    if (beta != 0.0f) sp__gemm_start_fill(y, ldy, n, W->out, start);
    switch (W->store) {
    case SP_WSTORE_F32: {
        const float *w = W->w;
        /* a decode step: the few-row kernel, the weight read in place, each element the same sum
         * whatever the threads (and, but for one row of a narrow [n, k] weight, whatever the
         * rows beside it) */
        if (single_row_gemv && sp__gemm_few_ok(n)) {
            sp__gemm_few(n, W->out, W->in, x, ldx, w, ldw, wt, 0, beta, y, ldy);
            return;
        }
        if (n == 1 && single_row_gemv) {
            product_row(y, x, w, W, beta);
            return;
        }
        f32_product(W, wt ? CblasTrans : CblasNoTrans, n, W->out, W->in, x, ldx, ldw, beta, y, ldy);
        return;
    }
    case SP_WSTORE_BF16: /* decode rows computed in float32 (exact, or no AVX512-BF16) */
        sp__gemm_few(n, W->out, W->in, x, ldx, W->w, ldw, wt, 1, beta, y, ldy);
        return;
    }
}

void sp__linear_fwd(float *y, int ldy, const float *x, int ldx, const sp_linear *W, int n) {
    if (n == 0) return;
    sp__gemm_start start = {.bias = W->b};
    product(y, ldy, x, ldx, W, n, &start);
}

void sp__linear_fwd_residual(float *y, const float *residual, const float *x, int ldx,
                             const sp_linear *W, int n) {
    if (n == 0) return;
    sp__gemm_start start = {.bias = W->b, .res = residual, .ldres = W->out};
    product(y, W->out, x, ldx, W, n, &start);
}

void sp__linear_bwd(float *dx, int lddx, const float *dy, int lddy, const sp_linear *W, int n,
                    int accumulate) {
    if (n == 0) return;
    float beta = accumulate ? 1.0f : 0.0f;
    switch (W->store) {
    case SP_WSTORE_F32: { /* dx = dy W^T (W [in, out]) or dy W (W [out, in]) */
        int wt = W->layout == SP_W_OUT_IN;
        f32_product(W, wt ? CblasNoTrans : CblasTrans, n, W->in, W->out, dy, lddy,
                    wt ? W->in : W->out, beta, dx, lddx);
        return;
    }
    case SP_WSTORE_BF16:
        switch (W->layout) {
        case SP_W_IN_OUT: /* dx = dy W^T, W [in, out] */
            sp__gemm_bf16(n, W->in, W->out, dy, lddy, W->w, W->out, 1, W->exact, beta, dx, lddx);
            return;
        case SP_W_OUT_IN: /* dx = dy W, W [out, in] */
            sp__gemm_bf16(n, W->in, W->out, dy, lddy, W->w, W->in, 0, W->exact, beta, dx, lddx);
            return;
        }
        return;
    }
}

void sp__rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int n, int d,
                         float eps) {
    if (sp__vmath_ok()) { /* AVX-512 (vmath.c): the same sums, 16 columns at a time */
        sp__vmath_rmsnorm_forward(out, rstd, x, w, n, d, eps);
        return;
    }
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

void sp__rmsnorm_backward(float *dx, const float *dout, const float *x, const float *rstd,
                          const float *w, int n, int d) {
    if (sp__vmath_ok()) { /* AVX-512 (vmath.c): the same sums, 16 columns at a time */
        sp__vmath_rmsnorm_backward(dx, dout, x, rstd, w, n, d);
        return;
    }
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

void sp__rmsnorm1p_forward(float *out, float *rstd, const float *x, const float *w, int n, int d,
                           float eps) {
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d;
        float *oi = out + (size_t)i * d;
        double ss = 0.0;
        for (int j = 0; j < d; j++) ss += (double)xi[j] * xi[j];
        float s = (float)(1.0 / sqrt(ss / d + eps));
        for (int j = 0; j < d; j++) oi[j] = (xi[j] * s) * (1.0f + w[j]);
        rstd[i] = s;
    }
}

void sp__rmsnorm1p_backward(float *dx, const float *dout, const float *x, const float *rstd,
                            const float *w, int n, int d) {
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d, *gi = dout + (size_t)i * d;
        float *dxi = dx + (size_t)i * d;
        /* g = dout * (1 + w); dx = rstd * (g - xhat * mean(g * xhat)) */
        double sum_gx = 0.0;
        for (int j = 0; j < d; j++) sum_gx += (double)gi[j] * (1.0f + w[j]) * (xi[j] * rstd[i]);
        float mgx = (float)(sum_gx / d);
        for (int j = 0; j < d; j++)
            dxi[j] += rstd[i] * (gi[j] * (1.0f + w[j]) - xi[j] * rstd[i] * mgx);
    }
}

void sp__rope_rotate(float *x, int ld, int len, int n_heads, int hd, const float *cos,
                     const float *sin, int inverse) {
    sp__rope_rotate_part(x, ld, len, n_heads, hd, hd, cos, sin, inverse);
}

void sp__rope_rotate_part(float *x, int ld, int len, int n_heads, int hd, int rot, const float *cos,
                          const float *sin, int inverse) {
    int half = rot / 2;
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

/* Attention works on blocks of SP_ATT_QBLOCK query rows: a block's scores against the np past
 * keys and every current key up to its last row fit in scratch [SP_ATT_QBLOCK, np + len], so no
 * [len, len] matrix per head is stored, and causality wastes only the triangle inside the
 * diagonal block. Backward recomputes the probabilities from the saved log-sum-exp of each
 * row. A row of scores holds the np past columns first, then the current ones. */

/* The first visible column of a row of scores whose last visible one is n - 1 (the query's own
 * key): with a window, the query sees its own key and the window - 1 before it. Columns are
 * positions (past rows first), so a prefix's rows fall out of the window like any token's. */
static int first_visible(int n, int window) {
    return window > 0 && n > window ? n - window : 0;
}

/* One past the last visible column of row i0 + r in a block whose current keys end at kend (a
 * causal row sees its own key and those before it; a full one every key of the block). */
static int visible_end(const sp__heads *hs, int np, int i0, int r, int kend) {
    return hs->full ? np + kend : np + i0 + r + 1;
}

/* The current keys a block of rows query rows from i0 reads: up to its last row, or all len. */
static int block_keys(const sp__heads *hs, int i0, int rows, int len) {
    return hs->full ? len : i0 + rows;
}

void sp__alibi_slopes(float *slopes, int n_head) {
    int p = 1;
    while (p * 2 <= n_head) p *= 2;
    double lg = log2((double)p);
    float base = (float)pow(2.0, -pow(2.0, -(lg - 3.0)));
    for (int k = 0; k < p; k++) slopes[k] = (float)pow((double)base, k + 1);
    float extra = (float)pow(2.0, -pow(2.0, -(lg + 1.0 - 3.0)));
    for (int k = 0; k < n_head - p; k++) slopes[p + k] = (float)pow((double)extra, 2 * k + 1);
}

/* ALiBi: n scores of the query at position qpos, score c of the key at position first + c, gain
 * slope (first + c - qpos) (nothing when slope is 0). */
static void alibi_row(float *s, int n, int first, int qpos, float slope) {
    if (slope == 0.0f) return;
    for (int c = 0; c < n; c++) s[c] += slope * (float)(first + c - qpos);
}

/* Head h's ALiBi slope (0: none). */
static float alibi_slope(const sp__heads *hs, int h) {
    return hs->alibi ? hs->alibi[h] : 0.0f;
}

/* Row r of the block holds scores of query i0 + r against the np past keys and the current keys
 * 0..kend-1 (kend = i0 + rows; row stride np + kend); the past and current keys 0..i0+r are
 * visible, within the window. Turns row r into probabilities (zero past the visible ones) and
 * returns its log-sum-exp through lse[r]. */
static void block_softmax(float *s, float *lse, int np, int i0, int rows, int kend,
                          const sp__heads *hs, float slope) {
    int lds = np + kend;
    float cap = hs->softcap;
    for (int r = 0; r < rows; r++) {
        float *row = s + (size_t)r * lds;
        int n = visible_end(hs, np, i0, r, kend), lo = first_visible(n, hs->window);
        if (cap > 0)
            for (int j = lo; j < n; j++) row[j] = cap * tanhf(row[j] / cap);
        alibi_row(row + lo, n - lo, lo, np + i0 + r, slope);
        float mx = row[lo];
        for (int j = lo + 1; j < n; j++) mx = row[j] > mx ? row[j] : mx;
        float sum = sp__exp_shift_sum(row + lo, n - lo, mx);
        float inv = 1.0f / sum;
        for (int j = lo; j < n; j++) row[j] *= inv;
        memset(row, 0, (size_t)lo * sizeof(float));
        memset(row + n, 0, (size_t)(lds - n) * sizeof(float));
        lse[r] = mx + logf(sum);
    }
}

/* The keys and values one query head reads: its key/value head's columns, current and past. */
typedef struct head_kv {
    const float *k, *v;   /* current rows, stride ld */
    const float *kp, *vp; /* past rows, stride ldp (np == 0: unused) */
    int ld, ldp, np;
} head_kv;

static head_kv head_keys(const float *qkv, const sp__heads *hs, const sp__kv_past *past, int h) {
    head_kv r = {qkv + SP_K_COL(hs, h), qkv + SP_V_COL(hs, h), NULL, NULL, SP_QKV_WIDTH(hs), 0, 0};
    if (past && past->n > 0) {
        int kv = SP_KV_OF(hs, h) * hs->hd;
        r.kp = past->k + kv, r.vp = past->v + kv, r.ldp = past->ld, r.np = past->n;
    }
    return r;
}

/* s[rows, np + kend] = scale * q[rows] . [K_past; K[0:kend]]^T, for any matrix "keys" in that
 * place (the backward's dP uses the values instead, with scale 1). */
static void scores(float *s, const float *q, int ldq, const float *kp, int ldp, int np,
                   const float *k, int ldk, int rows, int kend, int hd, float scale) {
    int lds = np + kend;
    if (np)
        sp__sgemm_small(CblasNoTrans, CblasTrans, rows, np, hd, scale, q, ldq, kp, ldp, 0.0f, s,
                        lds);
    sp__sgemm_small(CblasNoTrans, CblasTrans, rows, kend, hd, scale, q, ldq, k, ldk, 0.0f, s + np,
                    lds);
}

void sp__attention_forward(float *out, float *lse, float *scratch, const float *qkv, int len,
                           const sp__heads *hs, const sp__kv_past *past) {
    int hd = hs->hd, ld = SP_QKV_WIDTH(hs), d = hs->n_head * hd;
    float scale = hs->scale > 0 ? hs->scale : 1.0f / sqrtf((float)hd);
    for (int h = 0; h < hs->n_head; h++) {
        const float *q = qkv + h * hd;
        head_kv kv = head_keys(qkv, hs, past, h);
        for (int i0 = 0; i0 < len; i0 += SP_ATT_QBLOCK) {
            int rows = len - i0 < SP_ATT_QBLOCK ? len - i0 : SP_ATT_QBLOCK;
            int kend = block_keys(hs, i0, rows, len);
            int lds = kv.np + kend;
            /* scratch[rows, np + kend] = scale * Q[i0:kend] [K_past; K[0:kend]]^T, softmax */
            scores(scratch, q + (size_t)i0 * ld, ld, kv.kp, kv.ldp, kv.np, kv.k, ld, rows, kend, hd,
                   scale);
            block_softmax(scratch, lse + (size_t)h * len + i0, kv.np, i0, rows, kend, hs,
                          alibi_slope(hs, h));
            /* out[i0:kend, head h] = P_cur V[0:kend] + P_past V_past */
            float *o = out + (size_t)i0 * d + h * hd;
            sp__sgemm_small(CblasNoTrans, CblasNoTrans, rows, hd, kend, 1.0f, scratch + kv.np, lds,
                            kv.v, ld, 0.0f, o, d);
            if (kv.np)
                sp__sgemm_small(CblasNoTrans, CblasNoTrans, rows, hd, kv.np, 1.0f, scratch, lds,
                                kv.vp, kv.ldp, 1.0f, o, d);
        }
    }
}

/* dS = scale * P o (dP - D) in place of dp, where P is recomputed from the scores s and the
 * saved lse, and D[r] = dO_r . O_r (= sum_j P_rj dP_rj). s becomes P. Rows as block_softmax's. */
static void block_softmax_backward(float *s, float *dp, const float *lse, const float *dsum, int np,
                                   int i0, int rows, int kend, float scale, const sp__heads *hs,
                                   float slope) {
    int lds = np + kend;
    float cap = hs->softcap;
    for (int r = 0; r < rows; r++) {
        float *pr = s + (size_t)r * lds, *dr = dp + (size_t)r * lds;
        int n = visible_end(hs, np, i0, r, kend), lo = first_visible(n, hs->window);
        if (cap > 0) { /* capped = cap t, t = tanh(raw / cap): d raw = (1 - t^2) d capped */
            for (int j = lo; j < n; j++) {
                float t = tanhf(pr[j] / cap);
                pr[j] = cap * t;
                dr[j] = scale * (1.0f - t * t) * (dr[j] - dsum[r]);
            }
            alibi_row(pr + lo, n - lo, lo, np + i0 + r,
                      slope); /* a constant: no gradient of its own */
            sp__exp_shift(pr + lo, n - lo, lse[r]);
            for (int j = lo; j < n; j++) dr[j] *= pr[j];
        } else {
            alibi_row(pr + lo, n - lo, lo, np + i0 + r, slope);
            sp__exp_shift(pr + lo, n - lo, lse[r]);
            for (int j = lo; j < n; j++) dr[j] = scale * pr[j] * (dr[j] - dsum[r]);
        }
        memset(pr, 0, (size_t)lo * sizeof(float));
        memset(dr, 0, (size_t)lo * sizeof(float));
        memset(pr + n, 0, (size_t)(lds - n) * sizeof(float));
        memset(dr + n, 0, (size_t)(lds - n) * sizeof(float));
    }
}

/* The past's part of a block's backward: dQ += dS_past K_past and, with a gradient,
 * dK_past += dS_past^T Q, dV_past += P_past^T dO. */
static void past_backward(float *dq, int ldq, const sp__kv_grad *dpast, const head_kv *kv,
                          const float *s, const float *dp, int lds, const float *q, int ld,
                          const float *dO, int d, int rows, int hd, int kvcol) {
    sp__sgemm_small(CblasNoTrans, CblasNoTrans, rows, hd, kv->np, 1.0f, dp, lds, kv->kp, kv->ldp,
                    1.0f, dq, ldq);
    if (!dpast) return;
    sp__sgemm_small(CblasTrans, CblasNoTrans, kv->np, hd, rows, 1.0f, s, lds, dO, d, 1.0f,
                    dpast->dv + kvcol, dpast->ld);
    sp__sgemm_small(CblasTrans, CblasNoTrans, kv->np, hd, rows, 1.0f, dp, lds, q, ld, 1.0f,
                    dpast->dk + kvcol, dpast->ld);
}

void sp__attention_backward(float *dqkv, const sp__kv_grad *dpast, float *scratch,
                            const float *dout, const float *out, const float *lse, const float *qkv,
                            int len, const sp__heads *hs, const sp__kv_past *past) {
    int hd = hs->hd, ld = SP_QKV_WIDTH(hs), d = hs->n_head * hd, n_head = hs->n_head;
    int np = past ? past->n : 0;
    float scale = hs->scale > 0 ? hs->scale : 1.0f / sqrtf((float)hd);
    float *s = scratch, *dp = scratch + (size_t)SP_ATT_QBLOCK * (np + len);
    float *dsum = dp + (size_t)SP_ATT_QBLOCK * (np + len); /* [SP_ATT_QBLOCK] */
    /* dK and dV accumulate over query blocks and over the query heads sharing a key head */
    for (int i = 0; i < len; i++)
        memset(dqkv + (size_t)i * ld + d, 0, (size_t)(ld - d) * sizeof(float));
    for (int h = 0; h < n_head; h++) {
        const float *q = qkv + h * hd;
        head_kv kv = head_keys(qkv, hs, past, h);
        float *dq = dqkv + h * hd, *dk = dqkv + SP_K_COL(hs, h), *dv = dqkv + SP_V_COL(hs, h);
        for (int i0 = 0; i0 < len; i0 += SP_ATT_QBLOCK) {
            int rows = len - i0 < SP_ATT_QBLOCK ? len - i0 : SP_ATT_QBLOCK;
            int kend = block_keys(hs, i0, rows, len);
            int lds = kv.np + kend;
            const float *dO = dout + (size_t)i0 * d + h * hd, *O = out + (size_t)i0 * d + h * hd;
            const float *qb = q + (size_t)i0 * ld;
            for (int r = 0; r < rows; r++) {
                float acc = 0.0f;
                for (int j = 0; j < hd; j++) acc += dO[(size_t)r * d + j] * O[(size_t)r * d + j];
                dsum[r] = acc;
            }
            scores(s, qb, ld, kv.kp, kv.ldp, kv.np, kv.k, ld, rows, kend, hd, scale);
            /* dP[rows, np + kend] = dO [V_past; V[0:kend]]^T */
            scores(dp, dO, d, kv.vp, kv.ldp, kv.np, kv.v, ld, rows, kend, hd, 1.0f);
            block_softmax_backward(s, dp, lse + (size_t)h * len + i0, dsum, kv.np, i0, rows, kend,
                                   scale, hs, alibi_slope(hs, h));
            /* dV[0:kend] += P^T dO,  dQ[i0:kend] = dS K[0:kend],  dK[0:kend] += dS^T Q[i0:kend] */
            sp__sgemm_small(CblasTrans, CblasNoTrans, kend, hd, rows, 1.0f, s + kv.np, lds, dO, d,
                            1.0f, dv, ld);
            sp__sgemm_small(CblasNoTrans, CblasNoTrans, rows, hd, kend, 1.0f, dp + kv.np, lds, kv.k,
                            ld, 0.0f, dq + (size_t)i0 * ld, ld);
            sp__sgemm_small(CblasTrans, CblasNoTrans, kend, hd, rows, 1.0f, dp + kv.np, lds, qb, ld,
                            1.0f, dk, ld);
            if (kv.np)
                past_backward(dq + (size_t)i0 * ld, ld, dpast, &kv, s, dp, lds, qb, ld, dO, d, rows,
                              hd, SP_KV_OF(hs, h) * hd);
        }
    }
}

/* Rows of scores s [rows, n] become probabilities (every column visible). */
static void dense_softmax(float *s, int rows, int n) {
    for (int r = 0; r < rows; r++) {
        float *row = s + (size_t)r * n;
        float sum = sp__exp_shift_sum(row, n, sp__max(row, n));
        float inv = 1.0f / sum;
        for (int j = 0; j < n; j++) row[j] *= inv;
    }
}

/* s[j] = scale * q . k_j for n keys of hd columns at row stride ld. */
static void dot_rows(float *s, const float *q, const float *k, int n, int ld, int hd, float scale) {
    for (int j = 0; j < n; j++) {
        const float *kj = k + (size_t)j * ld;
        float acc[8] = {0}; /* eight partial sums: the loop vectorises */
        int c = 0;
        for (; c + 8 <= hd; c += 8)
            for (int u = 0; u < 8; u++) acc[u] += q[c + u] * kj[c + u];
        float sum =
            ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        for (; c < hd; c++) sum += q[c] * kj[c];
        s[j] = scale * sum;
    }
}

/* o [hd] += sum_j p[j] v_j over n values at row stride ld. */
static void mix_rows(float *o, const float *p, const float *v, int n, int ld, int hd) {
    for (int j = 0; j < n; j++) {
        const float *vj = v + (size_t)j * ld;
        for (int c = 0; c < hd; c++) o[c] += p[j] * vj[c];
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define ATT_X86 1
#define TGT512 __attribute__((target("avx512f")))

/* dot_rows for hd a multiple of 8 up to ATT_HD_MAX, two keys per vector (key j in the low eight
 * lanes, j + 1 in the high): the same eight partial sums, added in the same tree, so the same
 * scores bitwise. */
#define ATT_HD_MAX 256
TGT512 static void dot_rows_x2(float *s, const float *q, const float *k, int n, int ld, int hd,
                               float scale) {
    __m512 qq[ATT_HD_MAX / 8]; /* q[c .. c + 8] in both halves */
    for (int c = 0; c < hd; c += 8)
        qq[c / 8] =
            _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(q + c))));
    int j = 0;
    for (; j + 2 <= n; j += 2) {
        const float *k0 = k + (size_t)j * ld, *k1 = k0 + ld;
        __m512 acc = _mm512_setzero_ps();
        for (int c = 0; c < hd; c += 8) {
            __m512d lo = _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_loadu_ps(k0 + c)));
            __m512 kk = _mm512_castpd_ps(
                _mm512_insertf64x4(lo, _mm256_castps_pd(_mm256_loadu_ps(k1 + c)), 1));
            acc = _mm512_add_ps(acc, _mm512_mul_ps(qq[c / 8], kk));
        }
        acc = _mm512_add_ps(acc, _mm512_permute_ps(acc, 0xB1));         /* a0 + a1, a2 + a3, .. */
        acc = _mm512_add_ps(acc, _mm512_permute_ps(acc, 0x4E));         /* (a0 + a1) + (a2 + a3) */
        acc = _mm512_add_ps(acc, _mm512_shuffle_f32x4(acc, acc, 0xB1)); /* + ((a4 + a5) + ..) */
        s[j] = scale * _mm512_cvtss_f32(acc);
        s[j + 1] = scale * _mm_cvtss_f32(_mm512_extractf32x4_ps(acc, 2));
    }
    if (j < n) dot_rows(s + j, q, k + (size_t)j * ld, 1, ld, hd, scale);
}

/* mix_rows for hd a multiple of 16: o in registers, 64 columns at a time, each element the same
 * products added in the same order. */
TGT512 static void mix_rows_v(float *o, const float *p, const float *v, int n, int ld, int hd) {
    for (int c0 = 0; c0 < hd; c0 += 64) {
        int nv = hd - c0 >= 64 ? 4 : (hd - c0) / 16;
        __m512 acc[4];
        for (int u = 0; u < nv; u++) acc[u] = _mm512_loadu_ps(o + c0 + 16 * u);
        for (int j = 0; j < n; j++) {
            __m512 pj = _mm512_set1_ps(p[j]);
            const float *vj = v + (size_t)j * ld + c0;
            if (nv == 4) {
#pragma GCC unroll 4
                for (int u = 0; u < 4; u++)
                    acc[u] = _mm512_add_ps(acc[u], _mm512_mul_ps(pj, _mm512_loadu_ps(vj + 16 * u)));
            } else {
                for (int u = 0; u < nv; u++)
                    acc[u] = _mm512_add_ps(acc[u], _mm512_mul_ps(pj, _mm512_loadu_ps(vj + 16 * u)));
            }
        }
        for (int u = 0; u < nv; u++) _mm512_storeu_ps(o + c0 + 16 * u, acc[u]);
    }
}
#else
#define ATT_X86 0
#endif

/* The scores and the mix of the cached attention, vectorised where the CPU and hd allow (the
 * same results either way). */
static void att_dot(float *s, const float *q, const float *k, int n, int ld, int hd, float scale) {
#if ATT_X86
    if (hd % 8 == 0 && hd <= ATT_HD_MAX && sp__gemm_few_ok(1)) {
        dot_rows_x2(s, q, k, n, ld, hd, scale);
        return;
    }
#endif
    dot_rows(s, q, k, n, ld, hd, scale);
}

static void att_mix(float *o, const float *p, const float *v, int n, int ld, int hd) {
#if ATT_X86
    if (hd % 16 == 0 && sp__gemm_few_ok(1)) {
        mix_rows_v(o, p, v, n, ld, hd);
        return;
    }
#endif
    mix_rows(o, p, v, n, ld, hd);
}

/* o [rows, hd] (row stride hd) = softmax(cap(scale q [rows, hd] [Ka; Kb]^T) + ALiBi) [Va; Vb] for
 * the rows of one key/value head (query heads h_first..): ka, va (na rows, stride lda) and kb, vb
 * (nb rows, stride ldb), columns first_visible(na + nb, window) on (positions: a's rows first; the
 * query is the last). Plain loops: with a handful of query rows (a decode step) BLAS calls cost
 * more than the products. */
static void cached_rows(float *o, float *s, const float *q, int rows, const sp__heads *hs,
                        int h_first, float scale, const float *ka, const float *va, int na, int lda,
                        const float *kb, const float *vb, int nb, int ldb) {
    int hd = hs->hd, lo = first_visible(na + nb, hs->window);
    int a0 = lo < na ? lo : na, b0 = lo > na ? lo - na : 0; /* the first visible rows */
    int ma = na - a0, n = ma + nb - b0;                     /* visible columns */
    ka += (size_t)a0 * lda, va += (size_t)a0 * lda, kb += (size_t)b0 * ldb, vb += (size_t)b0 * ldb;
    for (int r = 0; r < rows; r++) {
        const float *qr = q + (size_t)r * hd;
        float *sr = s + (size_t)r * n;
        if (ma) att_dot(sr, qr, ka, ma, lda, hd, scale);
        att_dot(sr + ma, qr, kb, nb - b0, ldb, hd, scale);
    }
    if (hs->softcap > 0)
        for (size_t j = 0; j < (size_t)rows * n; j++)
            s[j] = hs->softcap * tanhf(s[j] / hs->softcap);
    for (int r = 0; r < rows; r++) /* column c is at position lo + c, the query at na + nb - 1 */
        alibi_row(s + (size_t)r * n, n, lo, na + nb - 1, alibi_slope(hs, h_first + r));
    dense_softmax(s, rows, n);
    for (int r = 0; r < rows; r++) {
        const float *sr = s + (size_t)r * n;
        float *orow = o + (size_t)r * hd;
        memset(orow, 0, (size_t)hd * sizeof *orow);
        if (ma) att_mix(orow, sr, va, ma, lda, hd);
        att_mix(orow, sr + ma, vb, nb - b0, ldb, hd);
    }
}

void sp__attention_cached_head(float *out, float *scratch, const float *q, int ldq, int i, int g,
                               const sp__heads *hs, const sp__kv_past *a, const sp__kv_past *b,
                               int b_base) {
    int hd = hs->hd, d = hs->n_head * hd, group = hs->n_head / hs->n_kv_head;
    int na = a ? a->n : 0, col = g * hd;
    float scale = hs->scale > 0 ? hs->scale : 1.0f / sqrtf((float)hd);
    const float *ka = na ? a->k + col : NULL, *va = na ? a->v + col : NULL;
    for (int h0 = 0; h0 < group; h0 += SP_ATT_QBLOCK) {
        int rows = group - h0 < SP_ATT_QBLOCK ? group - h0 : SP_ATT_QBLOCK;
        size_t at = (size_t)(g * group + h0) * hd; /* the first query head's columns */
        cached_rows(out + (size_t)i * d + at, scratch, q + (size_t)i * ldq + at, rows, hs,
                    g * group + h0, scale, ka, va, na, na ? a->ld : 0, b->k + col, b->v + col,
                    b_base + i + 1, b->ld);
    }
}

void sp__attention_cached(float *out, float *scratch, const float *q, int ldq, int len,
                          const sp__heads *hs, const sp__kv_past *a, const sp__kv_past *b,
                          int b_base) {
    for (int i = 0; i < len; i++)
        for (int g = 0; g < hs->n_kv_head; g++)
            sp__attention_cached_head(out, scratch, q, ldq, i, g, hs, a, b, b_base);
}

int sp__kv_append(sp__kv_cache *c, const sp__kv_past *rows) {
    if (rows->n < 0 || rows->n > c->cap - c->len) return -1;
    size_t w = (size_t)c->width;
    for (int r = 0; r < rows->n; r++) {
        memcpy(c->k + (size_t)(c->len + r) * w, rows->k + (size_t)r * rows->ld, w * sizeof(float));
        memcpy(c->v + (size_t)(c->len + r) * w, rows->v + (size_t)r * rows->ld, w * sizeof(float));
    }
    c->len += rows->n;
    return 0;
}

sp__kv_past sp__kv_view(const sp__kv_cache *c) {
    return (sp__kv_past){c->k, c->v, c->len, c->width};
}

sp__kv_past sp__kv_of_qkv(const float *qkv, int rows, const sp__heads *hs) {
    int qd = hs->n_head * hs->hd, kvd = hs->n_kv_head * hs->hd;
    return (sp__kv_past){qkv + qd, qkv + qd + kvd, rows, SP_QKV_WIDTH(hs)};
}

double sp__cross_entropy(float *logits, int vocab, int target, int want_grad, float scale) {
    float mx = sp__max(logits, vocab), at_target = logits[target];
    /* logits[j] becomes exp(logits[j] - mx) (vectorised, float); the sum is taken in double */
    double sum = sp__exp_shift_sum_f64(logits, vocab, mx);
    double loss = log(sum) - (double)(at_target - mx);
    if (want_grad) {
        float k = (float)(scale / sum);
        for (int j = 0; j < vocab; j++) logits[j] *= k;
        logits[target] -= scale;
    }
    return loss;
}
