/* The blocked attention kernels (src/model/kernels.c) against a naive float64 implementation
 * that materialises the whole [len, np + len] probability matrix per head and uses the textbook
 * softmax backward dS = P o (dP - rowsum(P o dP)). Lengths straddle the query block size so that
 * single blocks, exact multiples and ragged last blocks are all covered; grouped-query layouts
 * (several query heads per key/value head) as well as GPT-2's one-to-one layout; a past of np
 * rows (a per-layer prefix with its gradient, or a key/value cache filled row by row). */
#include <check.h>
#include <math.h>
#include <stdlib.h>

#include "model/kernels.h"
#include "softprompt/rng.h"
#include "testutil.h"

/* The past of a sequence as the tests lay it out: np rows of keys and np rows of values, each
 * row n_kv_head * hd wide, at row stride ld (>= the width: strided layouts are covered too). */
typedef struct past_rows {
    float *k, *v;
    int np, ld;
} past_rows;

typedef struct naive {
    double *out, *dq;  /* [len, H * hd] */
    double *dk, *dv;   /* [len, Hkv * hd]: sums over the query heads sharing a key head */
    double *dkp, *dvp; /* [np, Hkv * hd]: the same for the past's rows */
} naive;

/* The first key index query row i sees (keys: the past's np rows, then the current ones, key j
 * at position j, query i at np + i): the key is visible iff np + i - j < window (0: all). */
static int naive_first_key(int np, int i, int window) {
    return window > 0 && np + i - window + 1 > 0 ? np + i - window + 1 : 0;
}

/* One past the last key query row i sees: its own (causal) or the last current row (full). */
static int naive_end(int np, int i, int len, const sp__heads *hs) {
    return hs->full ? np + len : np + i + 1;
}

/* Float64 attention of query head h over the past's np rows and the current rows (causal, within
 * hs->window when there is one): fills out and dq for its columns and adds its part of dk, dv (and
 * the past's dkp, dvp) to the columns of its key/value head. Key index j < np is past row j, else
 * current row j - np. */
static void naive_head(naive *r, const float *qkv, const float *dout, int len, const sp__heads *hs,
                       const past_rows *past, int h) {
    int ld = SP_QKV_WIDTH(hs), hd = hs->hd, d = hs->n_head * hd, kvd = hs->n_kv_head * hd;
    int kv = SP_KV_OF(hs, h), np = past->np, nk = np + len;
    double scale = hs->scale > 0 ? hs->scale : 1.0 / sqrt((double)hd), cap = hs->softcap;
    double *p = calloc((size_t)len * nk, sizeof *p), *dp = calloc((size_t)len * nk, sizeof *dp);
    double *gf = calloc((size_t)len * nk, sizeof *gf); /* d capped / d raw */
    double *dk = calloc((size_t)nk * hd, sizeof *dk), *dv = calloc((size_t)nk * hd, sizeof *dv);
#define Q(i, c) ((double)qkv[(size_t)(i)*ld + h * hd + (c)])
#define K(j, c)                                                                                    \
    ((double)((j) < np ? past->k[(size_t)(j)*past->ld + kv * hd + (c)]                             \
                       : qkv[(size_t)((j)-np) * ld + SP_K_COL(hs, h) + (c)]))
#define V(j, c)                                                                                    \
    ((double)((j) < np ? past->v[(size_t)(j)*past->ld + kv * hd + (c)]                             \
                       : qkv[(size_t)((j)-np) * ld + SP_V_COL(hs, h) + (c)]))
#define DO(i, c) ((double)dout[(size_t)(i)*d + h * hd + (c)])
#define P(i, j) p[(size_t)(i)*nk + (j)]
#define DP(i, j) dp[(size_t)(i)*nk + (j)]
    for (int i = 0; i < len; i++) {
        int vis = naive_end(np, i, len, hs), lo = naive_first_key(np, i, hs->window);
        double mx = -INFINITY, sum = 0.0;
        for (int j = lo; j < vis; j++) {
            double s = 0.0;
            for (int c = 0; c < hd; c++) s += Q(i, c) * K(j, c);
            s *= scale;
            gf[(size_t)i * nk + j] = cap > 0 ? 1.0 - tanh(s / cap) * tanh(s / cap) : 1.0;
            if (cap > 0) s = cap * tanh(s / cap);
            if (hs->alibi) s += (double)hs->alibi[h] * (j - (np + i)); /* key j, query np + i */
            P(i, j) = s;
            mx = fmax(mx, s);
        }
        for (int j = lo; j < vis; j++) sum += (P(i, j) = exp(P(i, j) - mx));
        for (int j = lo; j < vis; j++) P(i, j) /= sum;
    }
    for (int i = 0; i < len; i++)
        for (int c = 0; c < hd; c++) {
            double o = 0.0;
            for (int j = naive_first_key(np, i, hs->window); j < naive_end(np, i, len, hs); j++)
                o += P(i, j) * V(j, c);
            r->out[(size_t)i * d + h * hd + c] = o;
        }
    for (int i = 0; i < len; i++) { /* dS = P o (dP - rowsum(P o dP)) */
        double rowdot = 0.0;
        int lo = naive_first_key(np, i, hs->window);
        for (int j = lo; j < naive_end(np, i, len, hs); j++) {
            double g = 0.0;
            for (int c = 0; c < hd; c++) g += DO(i, c) * V(j, c);
            DP(i, j) = g;
            rowdot += g * P(i, j);
        }
        for (int j = lo; j < naive_end(np, i, len, hs); j++)
            DP(i, j) = scale * gf[(size_t)i * nk + j] * P(i, j) * (DP(i, j) - rowdot);
    }
    for (int i = 0; i < len; i++)
        for (int c = 0; c < hd; c++) {
            double gq = 0.0;
            for (int j = naive_first_key(np, i, hs->window); j < naive_end(np, i, len, hs); j++)
                gq += DP(i, j) * K(j, c);
            r->dq[(size_t)i * d + h * hd + c] = gq;
        }
    for (int j = 0; j < nk; j++) /* P^T dO and dS^T Q over the queries that see key j */
        for (int c = 0; c < hd; c++)
            for (int i = j < np || hs->full ? 0 : j - np; i < len; i++) {
                dv[(size_t)j * hd + c] += P(i, j) * DO(i, c);
                dk[(size_t)j * hd + c] += DP(i, j) * Q(i, c);
            }
    for (int j = 0; j < nk; j++)
        for (int c = 0; c < hd; c++) {
            double *tk = j < np ? r->dkp + (size_t)j * kvd : r->dk + (size_t)(j - np) * kvd;
            double *tv = j < np ? r->dvp + (size_t)j * kvd : r->dv + (size_t)(j - np) * kvd;
            tk[kv * hd + c] += dk[(size_t)j * hd + c];
            tv[kv * hd + c] += dv[(size_t)j * hd + c];
        }
#undef Q
#undef K
#undef V
#undef DO
#undef P
#undef DP
    free(p), free(dp), free(dk), free(dv), free(gf);
}

/* Largest |a - b| over the largest |b|, for n values of b laid out with stride/offset. */
static double rel_err(const float *a, int lda, int off, const double *b, int len, int d) {
    double err = 0.0, scale = 1e-30;
    for (int i = 0; i < len; i++)
        for (int c = 0; c < d; c++) {
            double ref = b[(size_t)i * d + c];
            err = fmax(err, fabs((double)a[(size_t)i * lda + off + c] - ref));
            scale = fmax(scale, fabs(ref));
        }
    return err / scale;
}

static float *normal_floats(size_t n, sp_rng *rng) {
    float *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = (float)sp_rng_normal(rng);
    return x;
}

/* np random past rows (np = 0: none) at row stride ld: keys and values interleaved in one
 * buffer when ld = 2 kvd (as a cache may hold them), separate arrays when ld = kvd (as the
 * prefix's [2, P, kvd] layout does). */
static past_rows random_past(int np, int kvd, int interleaved, sp_rng *rng) {
    past_rows p = {NULL, NULL, np, interleaved ? 2 * kvd : kvd};
    if (interleaved) {
        p.k = normal_floats((size_t)np * 2 * kvd, rng);
        p.v = p.k + kvd;
    } else {
        p.k = normal_floats((size_t)np * kvd, rng);
        p.v = normal_floats((size_t)np * kvd, rng);
    }
    return p;
}

static void free_past(past_rows *p, int interleaved) {
    free(p->k);
    if (!interleaved) free(p->v);
}

/* The kernels against naive_head for one shape, with np past rows: outputs and every gradient,
 * the past's accumulated onto a non-zero start (the kernel adds). */
static void check_heads_attention(const sp__heads *heads, int len, int np, int interleaved,
                                  uint64_t seed) {
    sp__heads hs = *heads;
    int n_head = hs.n_head, n_kv_head = hs.n_kv_head, hd = hs.hd, window = hs.window;
    int ld = SP_QKV_WIDTH(&hs), d = n_head * hd, kvd = n_kv_head * hd;
    sp_rng rng;
    sp_rng_seed(&rng, seed);
    size_t nq = (size_t)len * ld, no = (size_t)len * d, npk = (size_t)np * kvd;
    /* q, k with std 1: scores of std ~sqrt(hd) * scale = 1, so softmax rows are far from uniform */
    float *qkv = normal_floats(nq, &rng), *dout = normal_floats(no, &rng);
    past_rows past = random_past(np, kvd, interleaved, &rng);
    float *out = malloc(no * sizeof *out), *lse = malloc((size_t)n_head * len * sizeof *lse);
    float *dqkv = malloc(nq * sizeof *dqkv);
    float *scratch = malloc(SP_ATT_BWD_SCRATCH(np + len) * sizeof *scratch);
    float *dkp = malloc((npk ? npk : 1) * sizeof *dkp), *dvp = malloc((npk ? npk : 1) * 4);
    for (size_t i = 0; i < nq; i++) dqkv[i] = NAN; /* every entry must be written */
    for (size_t i = 0; i < npk; i++) dkp[i] = 1.0f, dvp[i] = -2.0f; /* added to */
    sp__kv_past kp = {past.k, past.v, np, past.ld};
    sp__kv_grad g = {dkp, dvp, kvd};
    sp__attention_forward(out, lse, scratch, qkv, len, &hs, np ? &kp : NULL);
    sp__attention_backward(dqkv, np ? &g : NULL, scratch, dout, out, lse, qkv, len, &hs,
                           np ? &kp : NULL);

    size_t nkv = (size_t)len * kvd;
    naive r = {calloc(no, 8),  calloc(no, 8),      calloc(nkv, 8),
               calloc(nkv, 8), calloc(npk + 1, 8), calloc(npk + 1, 8)};
    for (int h = 0; h < n_head; h++) naive_head(&r, qkv, dout, len, &hs, &past, h);
    for (size_t i = 0; i < npk; i++) r.dkp[i] += 1.0, r.dvp[i] -= 2.0;
    double e_out = rel_err(out, d, 0, r.out, len, d), e_dq = rel_err(dqkv, ld, 0, r.dq, len, d);
    double e_dk = rel_err(dqkv, ld, d, r.dk, len, kvd);
    double e_dv = rel_err(dqkv, ld, d + kvd, r.dv, len, kvd);
    double e_dkp = np ? rel_err(dkp, kvd, 0, r.dkp, np, kvd) : 0;
    double e_dvp = np ? rel_err(dvp, kvd, 0, r.dvp, np, kvd) : 0;
    /* float32 sums over up to len * hd terms: 1e-5 leaves two orders of margin at len 200 */
    ck_assert_msg(e_out < 1e-5 && e_dq < 1e-5 && e_dk < 1e-5 && e_dv < 1e-5 && e_dkp < 1e-5 &&
                      e_dvp < 1e-5,
                  "len %d past %d heads %d/%d hd %d window %d: relative errors out %.2e dq %.2e dk "
                  "%.2e dv %.2e past dk %.2e dv %.2e",
                  len, np, n_head, n_kv_head, hd, window, e_out, e_dq, e_dk, e_dv, e_dkp, e_dvp);
    free(qkv), free(dout), free(out), free(lse), free(dqkv), free(scratch), free(dkp), free(dvp);
    free(r.out), free(r.dq), free(r.dk), free(r.dv), free(r.dkp), free(r.dvp);
    free_past(&past, interleaved);
}

static void check_window_attention(int len, int n_head, int n_kv_head, int hd, int np,
                                   int interleaved, int window, uint64_t seed) {
    sp__heads hs = {n_head, n_kv_head, hd, window, 0, 0, 0, NULL};
    check_heads_attention(&hs, len, np, interleaved, seed);
}

static void check_past_attention(int len, int n_head, int n_kv_head, int hd, int np,
                                 int interleaved, uint64_t seed) {
    check_window_attention(len, n_head, n_kv_head, hd, np, interleaved, 0, seed);
}

static void check_attention(int len, int n_head, int n_kv_head, int hd, uint64_t seed) {
    check_past_attention(len, n_head, n_kv_head, hd, 0, 0, seed);
}

/* Bidirectional attention (BERT, RoBERTa): every row sees every row, behind a past or not, across
 * query blocks (keys after the block's last row are visible). */
START_TEST(test_full_attention) {
    const int lens[] = {2, 5, SP_ATT_QBLOCK + 1, 2 * SP_ATT_QBLOCK + 37};
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
        sp__heads hs = {3, 3, 16, 0, 0, 0, 1, NULL}, g = {4, 2, 8, 0, 0, 0, 1, NULL};
        check_heads_attention(&hs, lens[i], 0, 0, 40 + i);
        check_heads_attention(&g, lens[i], 3, 1, 50 + i);
    }
}
END_TEST

START_TEST(test_lengths_around_block_size) {
    const int lens[] = {1,
                        2,
                        SP_ATT_QBLOCK - 1,
                        SP_ATT_QBLOCK,
                        SP_ATT_QBLOCK + 1,
                        2 * SP_ATT_QBLOCK,
                        2 * SP_ATT_QBLOCK + 37};
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++)
        check_attention(lens[i], 3, 3, 16, 7 + i);
}
END_TEST

START_TEST(test_one_head_wide) {
    check_attention(3 * SP_ATT_QBLOCK + 5, 1, 1, 64, 99);
}
END_TEST

START_TEST(test_many_small_heads) {
    check_attention(SP_ATT_QBLOCK + 20, 16, 16, 4, 5);
}
END_TEST

/* Grouped-query attention: 2 and 4 query heads per key/value head, and multi-query (1 kv head). */
START_TEST(test_grouped_query_heads) {
    check_attention(SP_ATT_QBLOCK + 11, 4, 2, 8, 21);
    check_attention(2 * SP_ATT_QBLOCK + 3, 8, 2, 16, 22);
    check_attention(37, 6, 1, 12, 23);
}
END_TEST

/* The saved log-sum-exp is what backward recomputes probabilities from: check it directly. */
START_TEST(test_lse_is_row_logsumexp) {
    int len = SP_ATT_QBLOCK + 9, d = 8, hd = 8;
    sp_rng rng;
    sp_rng_seed(&rng, 3);
    float *qkv = malloc((size_t)len * 3 * d * sizeof *qkv), *out = malloc((size_t)len * d * 4);
    float *lse = malloc((size_t)len * 4), *scratch = malloc(SP_ATT_FWD_SCRATCH(len) * 4);
    for (int i = 0; i < len * 3 * d; i++) qkv[i] = 3.0f * (float)sp_rng_normal(&rng);
    sp__heads hs = {1, 1, hd, 0, 0, 0, 0, NULL};
    sp__attention_forward(out, lse, scratch, qkv, len, &hs, NULL);
    for (int i = 0; i < len; i++) {
        double mx = -INFINITY, s[len];
        for (int j = 0; j <= i; j++) {
            s[j] = 0.0;
            for (int c = 0; c < hd; c++)
                s[j] += (double)qkv[i * 3 * d + c] * qkv[j * 3 * d + d + c];
            s[j] /= sqrt((double)hd);
            mx = fmax(mx, s[j]);
        }
        double sum = 0.0;
        for (int j = 0; j <= i; j++) sum += exp(s[j] - mx);
        ck_assert_msg(fabs(lse[i] - (mx + log(sum))) < 1e-4 * (1 + fabs(mx)),
                      "row %d: lse %g vs %g", i, lse[i], mx + log(sum));
    }
    free(qkv), free(out), free(lse), free(scratch);
}
END_TEST

/* A per-layer prefix (past rows every query attends to, with their gradient): short and long
 * prefixes (past a query block), with sequences around the block size, grouped-query heads,
 * and both the separate [2, P, kvd] and an interleaved row layout. */
START_TEST(test_prefix_forward_backward) {
    check_past_attention(1, 2, 2, 8, 1, 0, 31);
    check_past_attention(7, 4, 2, 8, 5, 0, 32);
    check_past_attention(SP_ATT_QBLOCK + 3, 3, 3, 16, 20, 0, 33);
    check_past_attention(2 * SP_ATT_QBLOCK, 8, 2, 8, SP_ATT_QBLOCK + 6, 1, 34);
    check_past_attention(37, 6, 1, 12, 3, 1, 35);
}
END_TEST

/* A sliding window (Mistral): windows shorter than a query block, straddling it, longer than the
 * sequence (no effect), of 2 (a query and the key before it); with a prefix, whose rows sit at
 * positions 0..np-1 and fall out of the window like any token's (transformers' mask over cache
 * positions, kv_idx > q_idx - sliding_window). */
START_TEST(test_sliding_window) {
    check_window_attention(40, 2, 2, 8, 0, 0, 5, 61);
    check_window_attention(2 * SP_ATT_QBLOCK + 9, 4, 2, 8, 0, 0, SP_ATT_QBLOCK + 3, 62);
    check_window_attention(30, 2, 1, 8, 0, 0, 100, 63);
    check_window_attention(12, 2, 2, 4, 0, 0, 2, 64);
    check_window_attention(25, 4, 2, 8, 6, 0, 9, 65); /* the prefix leaves the window at row 3 */
    check_window_attention(SP_ATT_QBLOCK + 7, 3, 3, 8, SP_ATT_QBLOCK + 2, 1, 20, 66);
}
END_TEST

/* Gemma 2's attention: scores soft-capped (cap tanh(s / cap), caps that bite: the scores of std
 * ~3 here reach the cap's range), a scale other than 1 / sqrt(hd) (query_pre_attn_scalar), with a
 * window and a prefix. */
START_TEST(test_softcap_and_scale) {
    const sp__heads a = {4, 2, 8, 0, 2.0f, 1.0f, 0, NULL}, b = {2, 2, 16, 7, 3.0f, 0.2f, 0, NULL},
                    c = {3, 1, 8, 0, 0.0f, 0.5f, 0, NULL};
    check_heads_attention(&a, SP_ATT_QBLOCK + 5, 0, 0, 71);
    check_heads_attention(&b, 30, 4, 0, 72);
    check_heads_attention(&c, 20, 3, 1, 73);
}
END_TEST

/* The same rows computed through a cache: the cache starts with np prefix rows, the first
 * prefill rows are computed at once (prefill 0: none), then one row at a time, each appended to
 * the cache after it is computed. Every output row and log-sum-exp equals the computation of
 * the whole sequence with the prefix as its past (only float32 rounding apart), and both equal
 * the float64 reference. */
static void check_cache(int len, int n_head, int n_kv_head, int hd, int np, int prefill,
                        uint64_t seed) {
    sp__heads hs = {n_head, n_kv_head, hd, 0, 0, 0, 0, NULL};
    int ld = SP_QKV_WIDTH(&hs), d = n_head * hd, kvd = n_kv_head * hd;
    sp_rng rng;
    sp_rng_seed(&rng, seed);
    float *qkv = normal_floats((size_t)len * ld, &rng);
    past_rows prefix = random_past(np, kvd, 0, &rng);
    sp__kv_past pk = {prefix.k, prefix.v, np, kvd};
    float *scratch = malloc(SP_ATT_BWD_SCRATCH(np + len) * sizeof *scratch);
    float *full = malloc((size_t)len * d * sizeof *full), *step = malloc((size_t)len * d * 4);
    float *lse_full = malloc((size_t)n_head * len * 4), *lse = malloc((size_t)n_head * len * 4);
    sp__attention_forward(full, lse_full, scratch, qkv, len, &hs, &pk);

    sp__kv_cache c = {malloc((size_t)(np + len) * kvd * 4), malloc((size_t)(np + len) * kvd * 4), 0,
                      np + len, kvd};
    ck_assert_int_eq(sp__kv_append(&c, &pk), 0);
    for (int r0 = 0; r0 < len;) {
        int rows = r0 == 0 && prefill > 0 ? prefill : 1;
        sp__kv_past view = sp__kv_view(&c);
        sp__attention_forward(step + (size_t)r0 * d, lse, scratch, qkv + (size_t)r0 * ld, rows, &hs,
                              &view);
        sp__kv_past added = sp__kv_of_qkv(qkv + (size_t)r0 * ld, rows, &hs);
        ck_assert_int_eq(sp__kv_append(&c, &added), 0);
        for (int h = 0; h < n_head; h++)
            for (int r = 0; r < rows; r++) {
                float a = lse[(size_t)h * rows + r], b = lse_full[(size_t)h * len + r0 + r];
                ck_assert_msg(fabsf(a - b) <= 1e-5f * (1 + fabsf(b)),
                              "row %d head %d: lse %g through the cache, %g at once", r0 + r, h, a,
                              b);
            }
        r0 += rows;
    }
    ck_assert_int_eq(c.len, np + len);
    ck_assert_int_eq(sp__kv_append(&c, &pk), np > 0 ? -1 : 0); /* full */

    naive r = {calloc((size_t)len * d, 8),      calloc((size_t)len * d, 8),
               calloc((size_t)len * kvd, 8),    calloc((size_t)len * kvd, 8),
               calloc((size_t)np * kvd + 1, 8), calloc((size_t)np * kvd + 1, 8)};
    float *zero = calloc((size_t)len * d, sizeof *zero);
    for (int h = 0; h < n_head; h++) naive_head(&r, qkv, zero, len, &hs, &prefix, h);
    double e_full = rel_err(full, d, 0, r.out, len, d), e_step = rel_err(step, d, 0, r.out, len, d);
    ck_assert_msg(
        e_full < 1e-5 && e_step < 1e-5,
        "len %d prefix %d prefill %d: relative error at once %.2e, through the cache %.2e", len, np,
        prefill, e_full, e_step);
    free(qkv), free(scratch), free(full), free(step), free(lse_full), free(lse), free(zero);
    free(c.k), free(c.v), free(r.out), free(r.dq), free(r.dk), free(r.dv), free(r.dkp), free(r.dvp);
    free_past(&prefix, 0);
}

START_TEST(test_cache_matches_whole_sequence) {
    check_cache(9, 2, 2, 8, 0, 0, 41);                  /* token by token from the start */
    check_cache(SP_ATT_QBLOCK + 12, 4, 2, 8, 0, 5, 42); /* a prompt, then decoding */
    check_cache(30, 6, 3, 12, 7, 0, 43);                /* a prefix in the cache */
    check_cache(2 * SP_ATT_QBLOCK + 4, 4, 1, 16, 11, SP_ATT_QBLOCK + 1, 44);
}
END_TEST

/* sp__attention_cached (generation's decode) with the layer's window, soft-cap and query scale:
 * a shared past a of np rows, the sequence's own rows b (its first `first` rows computed before,
 * then `step` rows at a time, appended before the call), every output row against the float64
 * reference of the whole sequence. */
static void check_cached_heads(const sp__heads *heads, int len, int np, int first, int step,
                               uint64_t seed) {
    sp__heads hs = *heads;
    int ld = SP_QKV_WIDTH(&hs), d = hs.n_head * hs.hd, kvd = hs.n_kv_head * hs.hd;
    sp_rng rng;
    sp_rng_seed(&rng, seed);
    float *qkv = normal_floats((size_t)len * ld, &rng);
    past_rows prefix = random_past(np, kvd, 0, &rng);
    sp__kv_past pk = {prefix.k, prefix.v, np, kvd};
    float *scratch = malloc(SP_ATT_CACHED_SCRATCH(np + len) * sizeof *scratch);
    float *out = malloc((size_t)len * d * sizeof *out);
    sp__kv_cache c = {malloc((size_t)len * kvd * 4), malloc((size_t)len * kvd * 4), 0, len, kvd};
    sp__kv_past rows = sp__kv_of_qkv(qkv, first, &hs);
    ck_assert_int_eq(sp__kv_append(&c, &rows), 0);
    for (int r0 = first; r0 < len; r0 += step) {
        int n = len - r0 < step ? len - r0 : step, base = c.len;
        rows = sp__kv_of_qkv(qkv + (size_t)r0 * ld, n, &hs);
        ck_assert_int_eq(sp__kv_append(&c, &rows), 0);
        sp__kv_past mine = sp__kv_view(&c);
        sp__attention_cached(out + (size_t)r0 * d, scratch, qkv + (size_t)r0 * ld, ld, n, &hs,
                             np ? &pk : NULL, &mine, base);
    }
    naive r = {calloc((size_t)len * d, 8),      calloc((size_t)len * d, 8),
               calloc((size_t)len * kvd, 8),    calloc((size_t)len * kvd, 8),
               calloc((size_t)np * kvd + 1, 8), calloc((size_t)np * kvd + 1, 8)};
    float *zero = calloc((size_t)len * d, sizeof *zero);
    for (int h = 0; h < hs.n_head; h++) naive_head(&r, qkv, zero, len, &hs, &prefix, h);
    double e = rel_err(out + (size_t)first * d, d, 0, r.out + (size_t)first * d, len - first, d);
    ck_assert_msg(e < 1e-5,
                  "len %d past %d window %d cap %g scale %g: relative error through the cache "
                  "%.2e",
                  len, np, hs.window, hs.softcap, hs.scale, e);
    free(qkv), free(scratch), free(out), free(zero), free(c.k), free(c.v);
    free(r.out), free(r.dq), free(r.dk), free(r.dv), free(r.dkp), free(r.dvp);
    free_past(&prefix, 0);
}

/* Windows shorter than the past (the shared rows fall out of it), than the own rows, and longer
 * than the sequence; Gemma 2's soft-cap and query scale; grouped-query heads. */
START_TEST(test_cached_window_softcap_scale) {
    const sp__heads plain = {4, 2, 8, 0, 0.0f, 0.0f, 0, NULL},
                    win = {4, 2, 8, 5, 0.0f, 0.0f, 0, NULL},
                    gemma2 = {4, 2, 8, 4, 2.0f, 0.4f, 0, NULL},
                    wide = {2, 1, 16, 100, 3.0f, 0.2f, 0, NULL};
    check_cached_heads(&plain, 20, 3, 6, 1, 81);
    check_cached_heads(&win, 20, 3, 6, 1, 82);
    check_cached_heads(&win, 24, 9, 1, 3, 83); /* several rows per call */
    check_cached_heads(&gemma2, 18, 2, 4, 1, 84);
    check_cached_heads(&gemma2, 18, 0, 1, 2, 85);
    check_cached_heads(&wide, 15, 4, 5, 1, 86);
}
END_TEST

/* BLOOM's slopes as transformers' build_alibi_tensor gives them: 2^(-8k/n) for a power of 2
 * (8 heads: 1/2 .. 1/256), the odd powers of 2^(-4/p) after the p of the largest power of 2 below
 * n (12 heads: 1/2 .. 1/256, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5; 6 heads: 1/4 .. 1/256, 1/2,
 * 1/8). */
START_TEST(test_alibi_slopes) {
    float s[16];
    sp__alibi_slopes(s, 8);
    for (int k = 0; k < 8; k++) ck_assert_float_eq(s[k], ldexpf(1.0f, -(k + 1)));
    sp__alibi_slopes(s, 12);
    for (int k = 0; k < 8; k++) ck_assert_float_eq(s[k], ldexpf(1.0f, -(k + 1)));
    for (int k = 0; k < 4; k++)
        ck_assert_msg(fabs(s[8 + k] - pow(2.0, -0.5 - k)) < 1e-7, "slope %d: %.9g", 8 + k,
                      (double)s[8 + k]);
    sp__alibi_slopes(s, 6);
    const float six[6] = {0.25f, 0.0625f, 0.015625f, 0.00390625f, 0.5f, 0.125f};
    for (int k = 0; k < 6; k++) ck_assert_float_eq(s[k], six[k]);
    sp__alibi_slopes(s, 1);
    ck_assert_float_eq(s[0], 0.00390625f); /* p = 1: 2^-8 */
}
END_TEST

/* ALiBi (BLOOM): slope_h (key position - query position) on the scores, the past's rows at
 * positions 0..np-1 (a prefix or a cache), in the blocked kernels (forward and backward, around
 * the query block size) and through the cache (decode), 6 heads (not a power of 2) and 4. */
START_TEST(test_alibi_attention) {
    float slopes[6];
    sp__alibi_slopes(slopes, 6);
    sp__heads six = {6, 6, 8, 0, 0, 0, 0, slopes}, four = {4, 4, 8, 0, 0, 0, 0, slopes};
    for (int k = 0; k < 6; k++) slopes[k] *= 8; /* biases that matter at these lengths */
    check_heads_attention(&six, 40, 0, 0, 91);
    check_heads_attention(&six, SP_ATT_QBLOCK + 9, 5, 0, 92);
    check_heads_attention(&four, 2 * SP_ATT_QBLOCK + 3, SP_ATT_QBLOCK + 2, 1, 93);
    check_cached_heads(&six, 20, 3, 6, 1, 94);
    check_cached_heads(&four, 24, 0, 1, 3, 95);
}
END_TEST

/* A cache refuses rows that do not fit, and copies nothing then. */
START_TEST(test_cache_capacity) {
    sp__heads hs = {2, 1, 4, 0, 0, 0, 0, NULL};
    float qkv[3 * 16] = {0}, k[2 * 4] = {0}, v[2 * 4] = {0};
    for (int i = 0; i < 3 * 16; i++) qkv[i] = (float)i;
    sp__kv_cache c = {k, v, 0, 2, 4};
    sp__kv_past three = sp__kv_of_qkv(qkv, 3, &hs), one = sp__kv_of_qkv(qkv + 16, 1, &hs);
    ck_assert_int_eq(sp__kv_append(&c, &three), -1);
    ck_assert_int_eq(c.len, 0);
    ck_assert_int_eq(sp__kv_append(&c, &one), 0);
    ck_assert_int_eq(c.len, 1);
    ck_assert(k[0] == 24.0f && k[3] == 27.0f && v[0] == 28.0f && v[3] == 31.0f); /* row 1 */
    sp__kv_past view = sp__kv_view(&c);
    ck_assert_int_eq(view.n, 1);
    ck_assert_ptr_eq(view.k, k);
}
END_TEST

int main(void) {
    Suite *s = suite_create("attention");
    TCase *tc = tcase_create("blocked");
    tcase_add_test(tc, test_full_attention);
    tcase_add_test(tc, test_lengths_around_block_size);
    tcase_add_test(tc, test_one_head_wide);
    tcase_add_test(tc, test_many_small_heads);
    tcase_add_test(tc, test_grouped_query_heads);
    tcase_add_test(tc, test_lse_is_row_logsumexp);
    suite_add_tcase(s, tc);
    TCase *past = tcase_create("prefix and cache");
    tcase_add_test(past, test_prefix_forward_backward);
    tcase_add_test(past, test_cache_matches_whole_sequence);
    tcase_add_test(past, test_sliding_window);
    tcase_add_test(past, test_softcap_and_scale);
    tcase_add_test(past, test_cache_capacity);
    tcase_add_test(past, test_cached_window_softcap_scale);
    tcase_add_test(past, test_alibi_slopes);
    tcase_add_test(past, test_alibi_attention);
    suite_add_tcase(s, past);
    return tu_run_suite(s);
}
