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

/* y[n,out] = x[n,in] . W[in,out] + b[out]  (Conv1D layout, bias may be NULL);
 * with accumulate, y += x . W + b instead (the residual add comes for free). */
void sp_linear_forward(float *y, const float *x, const float *w, const float *b, int n, int in,
                       int out, int accumulate);

/* dx[n,in] (=, or += with accumulate) dy[n,out] . W[in,out]^T.  No dW, no db: frozen. */
void sp_linear_backward(float *dx, const float *dy, const float *w, int n, int in, int out,
                        int accumulate);

/* GPT-2's gelu_new (tanh approximation), elementwise over n values:
 * out = 0.5 x (1 + t), t = tanh(sqrt(2/pi) (x + 0.044715 x^3)); t is saved for backward.
 * (src/model/activations.c, compiled for vectorised libm calls.) */
void sp_gelu_forward(float *out, float *t, const float *x, size_t n);
/* dx[i] = dout[i] * gelu'(x[i]) from the saved t; dx may alias dout. */
void sp_gelu_backward(float *dx, const float *dout, const float *x, const float *t, size_t n);

/* Causal self-attention of one sequence of length len, all heads, in blocks of SP_ATT_QBLOCK
 * query rows (kernels.c). qkv: [len, 3d] rows (q | k | v, head h at columns h*hd..), out:
 * [len, d]; lse: [n_head, len] log-sum-exp of each row's scores, saved for backward instead of
 * the probabilities; scratch: SP_ATT_FWD_SCRATCH(len) floats. */
#define SP_ATT_QBLOCK 64
#define SP_ATT_FWD_SCRATCH(len) ((size_t)SP_ATT_QBLOCK * (size_t)(len))
void sp_attention_forward(float *out, float *lse, float *scratch, const float *qkv, int len, int d,
                          int n_head);

/* Gradients of the attention above: dqkv[len, 3d] (overwritten) from dout[len, d], given the
 * forward's out and lse. scratch: SP_ATT_BWD_SCRATCH(len) floats. */
#define SP_ATT_BWD_SCRATCH(len) (2 * (size_t)SP_ATT_QBLOCK * (size_t)(len) + SP_ATT_QBLOCK)
void sp_attention_backward(float *dqkv, float *scratch, const float *dout, const float *out,
                           const float *lse, const float *qkv, int len, int d, int n_head);

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
