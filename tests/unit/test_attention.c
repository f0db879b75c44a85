/* The blocked attention kernels (src/model/kernels.c) against a naive float64 implementation
 * that materialises the whole [len, len] probability matrix per head and uses the textbook
 * softmax backward dS = P o (dP - rowsum(P o dP)). Lengths straddle the query block size so that
 * single blocks, exact multiples and ragged last blocks are all covered; grouped-query layouts
 * (several query heads per key/value head) as well as GPT-2's one-to-one layout. */
#include <check.h>
#include <math.h>
#include <stdlib.h>

#include "model/kernels.h"
#include "softprompt/rng.h"
#include "testutil.h"

typedef struct naive {
    double *out, *dq; /* [len, H * hd] */
    double *dk, *dv;  /* [len, Hkv * hd]: sums over the query heads sharing a key head */
} naive;

/* Float64 causal attention of query head h: fills out and dq for its columns and adds its part
 * of dk and dv to the columns of its key/value head. */
static void naive_head(naive *r, const float *qkv, const float *dout, int len, const sp_heads *hs,
                       int h) {
    int ld = SP_QKV_WIDTH(hs), hd = hs->hd, d = hs->n_head * hd, kvd = hs->n_kv_head * hd;
    int kv = SP_KV_OF(hs, h);
    double scale = 1.0 / sqrt((double)hd);
    double *p = calloc((size_t)len * len, sizeof *p), *dp = calloc((size_t)len * len, sizeof *dp);
#define Q(i, j) ((double)qkv[(size_t)(i)*ld + h * hd + (j)])
#define K(i, j) ((double)qkv[(size_t)(i)*ld + SP_K_COL(hs, h) + (j)])
#define V(i, j) ((double)qkv[(size_t)(i)*ld + SP_V_COL(hs, h) + (j)])
#define DO(i, j) ((double)dout[(size_t)(i)*d + h * hd + (j)])
    for (int i = 0; i < len; i++) {
        double mx = -INFINITY, sum = 0.0;
        for (int j = 0; j <= i; j++) {
            double s = 0.0;
            for (int c = 0; c < hd; c++) s += Q(i, c) * K(j, c);
            p[(size_t)i * len + j] = s * scale;
            mx = fmax(mx, s * scale);
        }
        for (int j = 0; j <= i; j++)
            sum += (p[(size_t)i * len + j] = exp(p[(size_t)i * len + j] - mx));
        for (int j = 0; j <= i; j++) p[(size_t)i * len + j] /= sum;
    }
    for (int i = 0; i < len; i++)
        for (int c = 0; c < hd; c++) {
            double o = 0.0, g = 0.0;
            for (int j = 0; j <= i; j++) o += p[(size_t)i * len + j] * V(j, c);
            for (int j = i; j < len; j++) g += p[(size_t)j * len + i] * DO(j, c); /* P^T dO */
            r->out[(size_t)i * d + h * hd + c] = o;
            r->dv[(size_t)i * kvd + kv * hd + c] += g;
        }
    for (int i = 0; i < len; i++) {
        double rowdot = 0.0;
        for (int j = 0; j <= i; j++) {
            double g = 0.0;
            for (int c = 0; c < hd; c++) g += DO(i, c) * V(j, c);
            dp[(size_t)i * len + j] = g;
            rowdot += g * p[(size_t)i * len + j];
        }
        for (int j = 0; j <= i; j++)
            dp[(size_t)i * len + j] =
                scale * p[(size_t)i * len + j] * (dp[(size_t)i * len + j] - rowdot);
    }
    for (int i = 0; i < len; i++)
        for (int c = 0; c < hd; c++) {
            double gq = 0.0, gk = 0.0;
            for (int j = 0; j <= i; j++) gq += dp[(size_t)i * len + j] * K(j, c);
            for (int j = i; j < len; j++) gk += dp[(size_t)j * len + i] * Q(j, c);
            r->dq[(size_t)i * d + h * hd + c] = gq;
            r->dk[(size_t)i * kvd + kv * hd + c] += gk;
        }
#undef Q
#undef K
#undef V
#undef DO
    free(p);
    free(dp);
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

static void check_attention(int len, int n_head, int n_kv_head, int hd, uint64_t seed) {
    sp_heads hs = {n_head, n_kv_head, hd};
    int ld = SP_QKV_WIDTH(&hs), d = n_head * hd, kvd = n_kv_head * hd;
    sp_rng rng;
    sp_rng_seed(&rng, seed);
    size_t nq = (size_t)len * ld, no = (size_t)len * d;
    float *qkv = malloc(nq * sizeof *qkv), *dout = malloc(no * sizeof *dout);
    /* q, k with std 1: scores of std ~sqrt(hd) * scale = 1, so softmax rows are far from uniform */
    for (size_t i = 0; i < nq; i++) qkv[i] = (float)sp_rng_normal(&rng);
    for (size_t i = 0; i < no; i++) dout[i] = (float)sp_rng_normal(&rng);
    float *out = malloc(no * sizeof *out), *lse = malloc((size_t)n_head * len * sizeof *lse);
    float *dqkv = malloc(nq * sizeof *dqkv);
    float *scratch = malloc(SP_ATT_BWD_SCRATCH(len) * sizeof *scratch);
    for (size_t i = 0; i < nq; i++) dqkv[i] = NAN; /* every entry must be written */
    sp_attention_forward(out, lse, scratch, qkv, len, &hs);
    sp_attention_backward(dqkv, scratch, dout, out, lse, qkv, len, &hs);

    size_t nkv = (size_t)len * kvd;
    naive r = {calloc(no, 8), calloc(no, 8), calloc(nkv, 8), calloc(nkv, 8)};
    for (int h = 0; h < n_head; h++) naive_head(&r, qkv, dout, len, &hs, h);
    double e_out = rel_err(out, d, 0, r.out, len, d), e_dq = rel_err(dqkv, ld, 0, r.dq, len, d);
    double e_dk = rel_err(dqkv, ld, d, r.dk, len, kvd);
    double e_dv = rel_err(dqkv, ld, d + kvd, r.dv, len, kvd);
    /* float32 sums over up to len * hd terms: 1e-5 leaves two orders of margin at len 200 */
    ck_assert_msg(e_out < 1e-5 && e_dq < 1e-5 && e_dk < 1e-5 && e_dv < 1e-5,
                  "len %d heads %d/%d hd %d: relative errors out %.2e dq %.2e dk %.2e dv %.2e", len,
                  n_head, n_kv_head, hd, e_out, e_dq, e_dk, e_dv);
    free(qkv), free(dout), free(out), free(lse), free(dqkv), free(scratch);
    free(r.out), free(r.dq), free(r.dk), free(r.dv);
}

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
    sp_heads hs = {1, 1, hd};
    sp_attention_forward(out, lse, scratch, qkv, len, &hs);
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

int main(void) {
    Suite *s = suite_create("attention");
    TCase *tc = tcase_create("blocked");
    tcase_add_test(tc, test_lengths_around_block_size);
    tcase_add_test(tc, test_one_head_wide);
    tcase_add_test(tc, test_many_small_heads);
    tcase_add_test(tc, test_grouped_query_heads);
    tcase_add_test(tc, test_lse_is_row_logsumexp);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
