/* Building blocks of the transformer forward and backward passes: plain functions over row-major
 * float32 arrays, each with its shapes in the comment. Backward functions compute activation
 * gradients only (the weights are frozen); they ACCUMULATE (+=) into dx where noted, because
 * residual connections sum gradients from two paths. */
#ifndef SP_MODEL_KERNELS_H
#define SP_MODEL_KERNELS_H

#include <stddef.h>

/* out[n,d] = (x - mean) * rstd * w + b per row; saves mean[n] and rstd[n] for backward. */
void sp_layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w,
                          const float *b, int n, int d, float eps);

/* dx[n,d] += d(layernorm)/dx . dout, from the saved mean/rstd of the forward. */
void sp_layernorm_backward(float *dx, const float *dout, const float *x, const float *mean,
                           const float *rstd, const float *w, int n, int d);

/* Weight layouts: GPT-2's Conv1D stores W [in, out] (y = x W), nn.Linear W [out, in]
 * (y = x W^T). */
typedef enum sp_wlayout { SP_W_IN_OUT, SP_W_OUT_IN } sp_wlayout;

/* y[n, out] (row stride ldy) = x[n, in] (row stride ldx) . W + b  (bias may be NULL); with
 * accumulate, y += instead (the residual add comes for free). */
void sp_linear_fwd(float *y, int ldy, const float *x, int ldx, const float *w, sp_wlayout layout,
                   const float *b, int n, int in, int out, int accumulate);
/* dx[n, in] (=, or += with accumulate) = dy[n, out] . (the transpose of the forward's W).
 * No dW, no db: frozen. */
void sp_linear_bwd(float *dx, int lddx, const float *dy, int lddy, const float *w,
                   sp_wlayout layout, int n, int in, int out, int accumulate);
/* The dense Conv1D forms of the two above (row strides = widths). */
void sp_linear_forward(float *y, const float *x, const float *w, const float *b, int n, int in,
                       int out, int accumulate);
void sp_linear_backward(float *dx, const float *dy, const float *w, int n, int in, int out,
                        int accumulate);

/* Llama's RMSNorm: out[n,d] = w * (x * rstd), rstd = 1/sqrt(mean(x^2) + eps); saves rstd[n]. */
void sp_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int n, int d,
                        float eps);
/* dx[n,d] += d(rmsnorm)/dx . dout, from the saved rstd. */
void sp_rmsnorm_backward(float *dx, const float *dout, const float *x, const float *rstd,
                         const float *w, int n, int d);

/* Rotary embedding in Hugging Face's rotate-half convention, in place on n_heads consecutive
 * heads of hd columns in each of len rows (row stride ld; row t has position t): for
 * j < hd/2, (a, b) = (x[j], x[j + hd/2]) becomes (a cos - b sin, b cos + a sin) with the angle
 * of row t and frequency j from cos/sin [len, hd/2]. inverse rotates by minus the angle: the
 * transpose, which maps gradients of the rotated values to gradients of the inputs. */
void sp_rope_rotate(float *x, int ld, int len, int n_heads, int hd, const float *cos,
                    const float *sin, int inverse);

/* GPT-2's gelu_new (tanh approximation), elementwise over n values:
 * out = 0.5 x (1 + t), t = tanh(sqrt(2/pi) (x + 0.044715 x^3)); t is saved for backward.
 * (src/model/activations.c, compiled for vectorised libm calls.) */
void sp_gelu_forward(float *out, float *t, const float *x, size_t n);
/* dx[i] = dout[i] * gelu'(x[i]) from the saved t; dx may alias dout. */
void sp_gelu_backward(float *dx, const float *dout, const float *x, const float *t, size_t n);

/* Head layout of a qkv row: n_head query heads, then n_kv_head key heads, then n_kv_head value
 * heads, hd columns each; query head h reads key/value head h / (n_head / n_kv_head) (grouped
 * query attention; GPT-2 has n_kv_head = n_head). */
typedef struct sp_heads {
    int n_head, n_kv_head, hd;
} sp_heads;
#define SP_QKV_WIDTH(hs) (((hs)->n_head + 2 * (hs)->n_kv_head) * (hs)->hd)
#define SP_KV_OF(hs, h) ((h) / ((hs)->n_head / (hs)->n_kv_head))
#define SP_K_COL(hs, h) (((hs)->n_head + SP_KV_OF(hs, h)) * (hs)->hd)
#define SP_V_COL(hs, h) (((hs)->n_head + (hs)->n_kv_head + SP_KV_OF(hs, h)) * (hs)->hd)

/* Causal self-attention of one sequence of length len, all heads, in blocks of SP_ATT_QBLOCK
 * query rows (kernels.c). qkv: [len, SP_QKV_WIDTH] rows, out: [len, n_head * hd]; lse:
 * [n_head, len] log-sum-exp of each row's scores, saved for backward instead of the
 * probabilities; scratch: SP_ATT_FWD_SCRATCH(len) floats. */
#define SP_ATT_QBLOCK 64
#define SP_ATT_FWD_SCRATCH(len) ((size_t)SP_ATT_QBLOCK * (size_t)(len))
void sp_attention_forward(float *out, float *lse, float *scratch, const float *qkv, int len,
                          const sp_heads *hs);

/* Gradients of the attention above: dqkv (overwritten, qkv's layout) from dout, given the
 * forward's out and lse. scratch: SP_ATT_BWD_SCRATCH(len) floats. */
#define SP_ATT_BWD_SCRATCH(len) (2 * (size_t)SP_ATT_QBLOCK * (size_t)(len) + SP_ATT_QBLOCK)
void sp_attention_backward(float *dqkv, float *scratch, const float *dout, const float *out,
                           const float *lse, const float *qkv, int len, const sp_heads *hs);

/* Llama's SwiGLU, elementwise over n values: sig = sigmoid(gate) (saved for backward),
 * act = gate * sig * up (activations.c). */
void sp_swiglu_forward(float *act, float *sig, const float *gate, const float *up, size_t n);
/* dgate, dup from dact and the saved gate, sig, up (dgate may alias dact). */
void sp_swiglu_backward(float *dgate, float *dup, const float *dact, const float *gate,
                        const float *sig, const float *up, size_t n);

/* row[j] = exp(row[j] - shift) for j < n (activations.c, vectorised); the _sum form returns
 * the sum of the new values. */
void sp_exp_shift(float *row, int n, float shift);
float sp_exp_shift_sum(float *row, int n, float shift);
/* The same with the sum accumulated in double (the cross-entropy over a whole vocabulary). */
double sp_exp_shift_sum_f64(float *row, int n, float shift);
/* Largest of row[0..n-1] (n >= 1). */
float sp_max(const float *row, int n);

/* Cross-entropy of one row of logits[V] against target, -log softmax[target], returned in
 * double precision. The row is scratch: with want_grad it becomes dlogits = softmax - onehot
 * (times scale), otherwise it holds the unnormalised exponentials. */
double sp_cross_entropy(float *logits, int vocab, int target, int want_grad, float scale);

#endif
