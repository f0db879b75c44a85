/* Building blocks of the transformer forward and backward passes: plain functions over row-major
 * float32 arrays, each with its shapes in the comment. Backward functions compute activation
 * gradients only (the weights are frozen); the norms' ACCUMULATE (+=) into dx, the gradient of
 * the residual stream, which also reaches the norm's input unchanged through the residual
 * connection. */
#ifndef SP_MODEL_KERNELS_H
#define SP_MODEL_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include <cblas.h>

#include "softprompt/model.h"

/* out[n,d] = (x - mean) * rstd * w + b per row; saves mean[n] and rstd[n] for backward. */
void sp__layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w,
                           const float *b, int n, int d, float eps);

/* dx[n,d] += d(layernorm)/dx . dout, from the saved mean/rstd of the forward. */
void sp__layernorm_backward(float *dx, const float *dout, const float *x, const float *mean,
                            const float *rstd, const float *w, int n, int d);

/* Generation's decode multiplies one row per request. For a single row, sgemm packs the whole
 * weight before a product that reads it once, 2-3x slower than sgemv at the memory's speed
 * (bench_generate). While on is set on the calling thread, products of one row with float32
 * weights use sp__gemm_few (below; sgemv without AVX-512); sp_generate_extend turns it on for
 * its duration. Training never does, so its products and results stay the same sgemm calls,
 * bitwise. */
void sp__linear_single_row_gemv(int on);

/* Decode steps of up to SP_FEW_ROWS requests: while sp__linear_single_row_gemv is on, products
 * of 1..SP_FEW_ROWS rows with float32 weights and BF16 ones computed in float32 (exact, or no
 * AVX512-BF16) use sp__gemm_few instead of sgemm, which would copy the whole weight at every
 * call (fewrows.c); without AVX-512 they keep sgemm. */
#define SP_FEW_ROWS 16
/* One-row products with an [n, k] float32 weight of this n and more (an LM head) keep the chain
 * of FMAs of 2..16 rows (16 x 16 blocks transposed in registers); narrower ones (a layer) are dot
 * products along k, whose sums differ from those of more rows: the transposes cost more than they
 * save on SmolLM2's 576-wide layers (bench_generate --batch 1: 48.6-49.6 tokens/s against
 * 52.2-55.1 with sgemv for them), not on a 50,257-row head. */
#define SP_FEW_NK_ROW_MIN 4096
/* 1 when sp__gemm_few serves m rows on this CPU (AVX-512; 1 <= m <= SP_FEW_ROWS). */
int sp__gemm_few_ok(int m);
/* C[m, n] (row stride ldc) = beta C + A[m, k] (row stride lda) . W, W float32 or (bf16) BF16,
 * stored [k, n] (wt = 0) or [n, k] (wt = 1), row stride ldw, read in place; beta 0 or 1. Each
 * element is one sum over k in a fixed order (deterministic, independent of m and threads). */
void sp__gemm_few(int m, int n, int k, const float *a, int lda, const void *w, int ldw, int wt,
                  int bf16, float beta, float *c, int ldc);

/* The threads of the few-row products: the count OpenBLAS was given (openblas_set_num_threads),
 * at least 1. sp__few_run runs fn(arg, part) for part 0..threads-1 at once, part 0 on the caller,
 * and returns when all have; when the pool is busy (another thread's product) or threads <= 1,
 * only fn(arg, 0) runs, so fn must hand its work out dynamically (whatever the parts that run
 * take, all of it gets done). */
int sp__few_threads(void);
void sp__few_run(int threads, void (*fn)(void *arg, int part), void *arg);

/* Frozen linear layers (sp_linear, softprompt/model.h), whatever the weight's storage.
 * y[n, W->out] (row stride ldy) = x[n, W->in] (row stride ldx) . W + b. */
void sp__linear_fwd(float *y, int ldy, const float *x, int ldx, const sp_linear *W, int n);
/* The same with a residual input: y[n, out] = residual[n, out] + x . W + b (all rows of y and
 * residual of stride out). One product: residual + b is formed in y, the product added to it. */
void sp__linear_fwd_residual(float *y, const float *residual, const float *x, int ldx,
                             const sp_linear *W, int n);
/* dx[n, W->in] (row stride lddx; =, or += with accumulate) = dy[n, W->out] (row stride lddy)
 * . the transpose of the forward's W. No dW, no db: frozen. */
void sp__linear_bwd(float *dx, int lddx, const float *dy, int lddy, const sp_linear *W, int n,
                    int accumulate);

/* C[m, n] (row stride ldc) = beta C + A[m, k] (float32, row stride lda) . B, with B a BF16
 * matrix (uint16 bit patterns) stored [k, n] (bt = 0) or [n, k] (bt = 1: B is that transposed),
 * row stride ldb; beta is 0 or 1 (bf16.c). With AVX512-BF16 (sp__bf16_native) and !exact, A is
 * rounded to BF16 and the products summed in float32 by vdpbf16ps; otherwise tiles of B are
 * converted to float32 and multiplied by sgemm. With vdpbf16ps a row of C does not depend on the
 * other rows (with sgemm it may: OpenBLAS picks kernels by size). */
void sp__gemm_bf16(int m, int n, int k, const float *a, int lda, const uint16_t *b, int ldb, int bt,
                   int exact, float beta, float *c, int ldc);
/* What C starts as before a product is added to it: res[m, n] (row stride ldres) + bias[n], in
 * that order; either may be NULL (both NULL: zero). */
typedef struct sp__gemm_start {
    const float *bias, *res;
    int ldres;
} sp__gemm_start;
/* C = start + A . B, as sp__gemm_bf16 otherwise: the AVX512-BF16 kernel adds the start to its
 * tiles as it stores them (C is written once, not filled first and read back), bitwise what
 * filling C and adding the product with beta 1 gives. */
void sp__gemm_bf16_start(int m, int n, int k, const float *a, int lda, const uint16_t *b, int ldb,
                         int bt, int exact, const sp__gemm_start *start, float *c, int ldc);
/* C[m, n] (row stride ldc) = start->res + start->bias (or zero). */
void sp__gemm_start_fill(float *c, int ldc, int m, int n, const sp__gemm_start *start);
/* 1 when products with BF16 weights use the CPU's BF16 instructions: the CPU has AVX512-BF16
 * and the environment does not set SP_CPU_NO_BF16 (to a value other than 0), read once. */
int sp__bf16_native(void);
/* Tests: on forces the float32 path (as SP_CPU_NO_BF16=1), off chooses again as at start. Call
 * it while no product runs. */
void sp__bf16_force_float32(int on);
/* "avx512-bf16" or the float32 path's name, for messages and benchmarks. */
const char *sp__bf16_path_name(void);

/* RMSNorm (Llama): out[n,d] = w * (x * rstd), rstd = 1/sqrt(mean(x^2) + eps); saves rstd[n]. */
void sp__rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int n, int d,
                         float eps);
/* dx[n,d] += d(rmsnorm)/dx . dout, from the saved rstd. */
void sp__rmsnorm_backward(float *dx, const float *dout, const float *x, const float *rstd,
                          const float *w, int n, int d);

/* Gemma's RMSNorm: out = (1 + w) * (x * rstd), the gain stored as an offset from 1; saves rstd. */
void sp__rmsnorm1p_forward(float *out, float *rstd, const float *x, const float *w, int n, int d,
                           float eps);
/* dx[n,d] += its gradient, from the saved rstd. */
void sp__rmsnorm1p_backward(float *dx, const float *dout, const float *x, const float *rstd,
                            const float *w, int n, int d);

/* Rotary embedding in Hugging Face's rotate-half convention, in place on n_heads consecutive
 * heads of hd columns in each of len rows (row stride ld; row t has position t): for
 * j < hd/2, (a, b) = (x[j], x[j + hd/2]) becomes (a cos - b sin, b cos + a sin) with the angle
 * of row t and frequency j from cos/sin [len, hd/2]. inverse rotates by minus the angle: the
 * transpose, which maps gradients of the rotated values to gradients of the inputs. */
void sp__rope_rotate(float *x, int ld, int len, int n_heads, int hd, const float *cos,
                     const float *sin, int inverse);
/* The same over the first rot (even, <= hd) columns of each head only, pairs (j, j + rot/2) and
 * tables [len, rot/2] (GPT-NeoX's partial rotary: rotary_pct); the other columns are left. */
void sp__rope_rotate_part(float *x, int ld, int len, int n_heads, int hd, int rot, const float *cos,
                          const float *sin, int inverse);

/* Elementwise math with AVX-512 (vmath.c): every element through the same vector code, so a
 * result depends on its input only, not on its position or n. sp__vmath_ok: the CPU has
 * AVX-512F/DQ and SP_CPU_NO_AVX512 is not set (to a value other than 0); the others may be
 * called only then. activations.c's functions below dispatch to them. */
int sp__vmath_ok(void);
/* Tests: on makes sp__vmath_ok 0 (the libm loops), off chooses again; call it while nothing runs.
 */
void sp__vmath_force_off(int on);
void sp__vmath_exp(float *y, const float *x, size_t n);
void sp__vmath_gelu_forward(float *out, float *t, const float *x, size_t n);
void sp__vmath_geglu_forward(float *act, float *t, const float *gate, const float *up, size_t n);
void sp__vmath_swiglu_forward(float *act, float *sig, const float *gate, const float *up, size_t n);
/* Backward without the saved tanh / sigmoid: recomputed from the input (the same bits). */
void sp__vmath_gelu_backward(float *dx, const float *dout, const float *x, size_t n);
void sp__vmath_geglu_backward(float *dgate, float *dup, const float *dact, const float *gate,
                              const float *up, size_t n);
void sp__vmath_swiglu_backward(float *dgate, float *dup, const float *dact, const float *gate,
                               const float *up, size_t n);
void sp__vmath_exp_shift(float *row, size_t n, float shift);
float sp__vmath_exp_shift_sum(float *row, size_t n, float shift);
void sp__vmath_layernorm_forward(float *out, float *mean, float *rstd, const float *x,
                                 const float *w, const float *b, int n, int d, float eps);
void sp__vmath_layernorm_backward(float *dx, const float *dout, const float *x, const float *mean,
                                  const float *rstd, const float *w, int n, int d);
void sp__vmath_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int n,
                               int d, float eps);
void sp__vmath_rmsnorm_backward(float *dx, const float *dout, const float *x, const float *rstd,
                                const float *w, int n, int d);

/* GPT-2's gelu_new (tanh approximation), elementwise over n values:
 * out = 0.5 x (1 + t), t = tanh(sqrt(2/pi) (x + 0.044715 x^3)); t is saved for backward
 * unless t is NULL (then backward, given t NULL, recomputes it; the same for SwiGLU's sig and
 * GeGLU's t below).
 * (src/model/activations.c: sp__vmath_gelu_forward with AVX-512, else vectorised libm calls.) */
void sp__gelu_forward(float *out, float *t, const float *x, size_t n);
/* dx[i] = dout[i] * gelu'(x[i]) from the saved t; dx may alias dout. */
void sp__gelu_backward(float *dx, const float *dout, const float *x, const float *t, size_t n);
/* The exact GELU (torch's gelu, HF's "gelu"): out = x Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2
 * saved in cdf; backward: dx = dout (Phi(x) + x phi(x)). dx may alias dout. */
void sp__gelu_erf_forward(float *out, float *cdf, const float *x, size_t n);
/* ReLU (OPT): out = max(x, 0); backward dx = dout where x > 0, else 0 (dx may alias dout). */
void sp__relu_forward(float *out, const float *x, size_t n);
void sp__relu_backward(float *dx, const float *dout, const float *x, size_t n);
void sp__gelu_erf_backward(float *dx, const float *dout, const float *x, const float *cdf,
                           size_t n);

/* Head layout of a qkv row: n_head query heads, then n_kv_head key heads, then n_kv_head value
 * heads, hd columns each; query head h reads key/value head h / (n_head / n_kv_head) (grouped
 * query attention; GPT-2 has n_kv_head = n_head). */
typedef struct sp__heads {
    int n_head, n_kv_head, hd;
    int window;    /* sliding window: a key is visible to the queries fewer than window positions
                    * after it, a past row j at position j and current row i at n_past + i (0: all) */
    float softcap; /* scores become softcap tanh(scores / softcap) before the softmax (0: none) */
    float scale;   /* of q k^T (0: 1 / sqrt(hd)) */
    int full;      /* bidirectional (encoders): every row sees every current and past row (no
                    * window); 0: causal */
    const float *alibi; /* [n_head] ALiBi slopes: head h's score of a key gains
                         * alibi[h] (key position - query position), after the soft-cap (NULL:
                         * none). Positions as the window's: past row j at j, current row i at
                         * n_past + i */
} sp__heads;
#define SP_QKV_WIDTH(hs) (((hs)->n_head + 2 * (hs)->n_kv_head) * (hs)->hd)
#define SP_KV_OF(hs, h) ((h) / ((hs)->n_head / (hs)->n_kv_head))
#define SP_K_COL(hs, h) (((hs)->n_head + SP_KV_OF(hs, h)) * (hs)->hd)
#define SP_V_COL(hs, h) (((hs)->n_head + (hs)->n_kv_head + SP_KV_OF(hs, h)) * (hs)->hd)

/* BLOOM's ALiBi slopes of n_head heads into slopes [n_head], as transformers' build_alibi_tensor
 * computes them in float32: with p the largest power of 2 <= n_head, base 2^(-8 / p) rounded to
 * float and slopes base^1 .. base^p; the n_head - p others (non-power-of-2 counts) are the odd
 * powers 1, 3, 5, .. of 2^(-4 / p) (rounded likewise). Each power is rounded to float once. */
void sp__alibi_slopes(float *slopes, int n_head);

/* Keys and values that precede the current rows of a sequence: a per-layer prefix (P trainable
 * rows every position attends to, as PEFT's prefix tuning passes past_key_values), a cache of
 * the positions already computed (generation), or both (a cache that starts with the prefix).
 * Rows hold n_kv_head heads of hd columns, k and v at row stride ld; they are used as stored
 * (a prefix key is not rotated; a cached key was rotated when it was appended). */
typedef struct sp__kv_past {
    const float *k, *v; /* [n, ld] */
    int n, ld;
} sp__kv_past;

/* Where the gradient of a past's keys and values goes (ADDED, row stride ld); NULL for a
 * cache. */
typedef struct sp__kv_grad {
    float *dk, *dv; /* [n, ld] */
    int ld;
} sp__kv_grad;

/* C[m, n] = alpha op(A)[m, k] op(B)[k, n] + beta C in row-major storage, as cblas_sgemm computes
 * it (beta 0: C is not read), for attention's small products (smallgemm.c): AVX-512 register
 * tiles when the CPU has them (sp__vmath_ok), each element one chain of FMAs over k in order, so
 * an element does not depend on m, n or the tiling around it; cblas_sgemm otherwise. */
void sp__sgemm_small(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha,
                     const float *a, int lda, const float *b, int ldb, float beta, float *c,
                     int ldc);

/* Causal self-attention of one sequence of len current rows, all heads, in blocks of
 * SP_ATT_QBLOCK query rows (kernels.c). Current row i attends to every row of past (NULL: none)
 * and to current rows 0..i, within hs->window when there is one (hs->full: to every current
 * row). qkv: [len, SP_QKV_WIDTH] rows (q
 * and k already carry their positions), out: [len, n_head * hd]; lse: [n_head, len] log-sum-exp of
 * each row's scores, saved for backward instead of the probabilities; scratch:
 * SP_ATT_FWD_SCRATCH(n_past + len) floats. */
#define SP_ATT_QBLOCK 64
#define SP_ATT_FWD_SCRATCH(keys) ((size_t)SP_ATT_QBLOCK * (size_t)(keys))
void sp__attention_forward(float *out, float *lse, float *scratch, const float *qkv, int len,
                           const sp__heads *hs, const sp__kv_past *past);

/* Gradients of the attention above: dqkv (overwritten, qkv's layout) from dout, given the
 * forward's out and lse; the past's key/value gradients are added to dpast when it is not NULL.
 * scratch: SP_ATT_BWD_SCRATCH(n_past + len) floats. */
#define SP_ATT_BWD_SCRATCH(keys) (2 * (size_t)SP_ATT_QBLOCK * (size_t)(keys) + SP_ATT_QBLOCK)
void sp__attention_backward(float *dqkv, const sp__kv_grad *dpast, float *scratch,
                            const float *dout, const float *out, const float *lse, const float *qkv,
                            int len, const sp__heads *hs, const sp__kv_past *past);

/* Attention of len query rows over keys and values that are all cached (generation): query row
 * i (row stride ldq, n_head heads of hd, positions applied) attends to every row of a (NULL or
 * empty: none; a shared prefix) and to rows 0..b_base + i of b (the sequence's own rows, the
 * current rows' keys and values appended at b_base.. before the call), as sp__attention_forward
 * computes it: a's rows are the first positions, hs's window, soft-cap and scale apply. out:
 * [len, n_head * hd];
 * scratch: SP_ATT_CACHED_SCRATCH(a->n + b->n) floats (SP_ATT_FWD_SCRATCH's size suffices when
 * n_head / n_kv_head <= SP_ATT_QBLOCK). Query heads that share a key/value head are one
 * product. */
#define SP_ATT_CACHED_SCRATCH(keys) ((size_t)SP_ATT_QBLOCK * (size_t)(keys))
void sp__attention_cached(float *out, float *scratch, const float *q, int ldq, int len,
                          const sp__heads *hs, const sp__kv_past *a, const sp__kv_past *b,
                          int b_base);
/* The part of it of query row i and key/value head g (the query heads that read it), as
 * sp__attention_cached computes it; the (i, g) parts of a call write apart and can run at once,
 * each with its own scratch of SP_ATT_CACHED_HEAD_SCRATCH(hs, a->n + b->n) floats. */
#define SP_ATT_CACHED_GROUP(hs)                                                                    \
    ((hs)->n_head / (hs)->n_kv_head < SP_ATT_QBLOCK ? (hs)->n_head / (hs)->n_kv_head               \
                                                    : SP_ATT_QBLOCK)
#define SP_ATT_CACHED_HEAD_SCRATCH(hs, keys) ((size_t)SP_ATT_CACHED_GROUP(hs) * (size_t)(keys))
void sp__attention_cached_head(float *out, float *scratch, const float *q, int ldq, int i, int g,
                               const sp__heads *hs, const sp__kv_past *a, const sp__kv_past *b,
                               int b_base);

/* A key/value cache of one layer: cap rows of width (n_kv_head * hd) keys and as many values,
 * the first len in use. sp__kv_append copies rows->n rows of keys and values (width floats each,
 * row stride rows->ld) after them, -1 (nothing copied) when they do not fit; sp__kv_view is the
 * cache as the past of the next rows; sp__kv_of_qkv the k and v columns of rows qkv rows, as
 * attention computed them (so that they can be appended). */
typedef struct sp__kv_cache {
    float *k, *v; /* [cap, width] */
    int len, cap, width;
} sp__kv_cache;
int sp__kv_append(sp__kv_cache *c, const sp__kv_past *rows);
sp__kv_past sp__kv_view(const sp__kv_cache *c);
sp__kv_past sp__kv_of_qkv(const float *qkv, int rows, const sp__heads *hs);

/* Llama's SwiGLU, elementwise over n values: sig = sigmoid(gate) (saved for backward),
 * act = gate * sig * up (activations.c). */
void sp__swiglu_forward(float *act, float *sig, const float *gate, const float *up, size_t n);
/* dgate, dup from dact and the saved gate, sig, up (dgate may alias dact). */
void sp__swiglu_backward(float *dgate, float *dup, const float *dact, const float *gate,
                         const float *sig, const float *up, size_t n);

/* Gemma's GeGLU, elementwise: t = tanh(...) of gelu_tanh(gate) (saved for backward),
 * act = gelu_tanh(gate) * up (activations.c). */
void sp__geglu_forward(float *act, float *t, const float *gate, const float *up, size_t n);
/* dgate, dup from dact and the saved gate, t, up (dgate may alias dact). */
void sp__geglu_backward(float *dgate, float *dup, const float *dact, const float *gate,
                        const float *t, const float *up, size_t n);

/* row[j] = exp(row[j] - shift) for j < n (activations.c, vectorised); the _sum form returns
 * the sum of the new values. */
void sp__exp_shift(float *row, int n, float shift);
float sp__exp_shift_sum(float *row, int n, float shift);
/* The same with the sum accumulated in double (the cross-entropy over a whole vocabulary). */
double sp__exp_shift_sum_f64(float *row, int n, float shift);
/* Largest of row[0..n-1] (n >= 1). */
float sp__max(const float *row, int n);

/* Cross-entropy of one row of logits[V] against target, -log softmax[target], returned in
 * double precision. The row is scratch: with want_grad it becomes dlogits = softmax - onehot
 * (times scale), otherwise it holds the unnormalised exponentials. */
double sp__cross_entropy(float *logits, int vocab, int target, int want_grad, float scale);

#endif
