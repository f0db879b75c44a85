/* The T5 encoder-decoder (internal; t5.c): sp_engine_run and sp_engine_validate hand a T5 model's
 * batches here.
 *
 * A T5 batch is the engine's packed layout (softprompt/engine.h) read as seq2seq: in each
 * sequence, the positions up to and including its first target are the encoder's input (soft
 * tokens anywhere among them); the decoder's input is decoder_start_token_id, then the tokens
 * after the first target, up to the last target. The target at packed position p is scored at
 * decoder position p - first target: the decoder's output there against the target id. So the
 * layout a causal LM is trained on (template, then the target tokens, each target at the position
 * before its token) is HF's T5 labels path (decoder input = the labels shifted right behind the
 * start token), and a classification example (one target, at the template's last position)
 * scores the verbalizer at the first decoder position. A sequence without targets contributes
 * nothing. */
#ifndef SP_MODEL_T5_H
#define SP_MODEL_T5_H

#include <stddef.h>

#include "softprompt/engine.h"
#include "softprompt/generate.h"

struct sp_worker;
typedef struct sp__t5_work sp__t5_work;
typedef struct sp__t5_gen sp__t5_gen;

/* T5's checks beyond the engine's common ones: no key/value prefix; per sequence with targets
 * an encoder input of at most n_positions, a decoder input (the target span) of at most
 * n_positions, no soft token in the decoder's input. -1 with a message naming the sequence. */
int sp__t5_validate(const sp_model *m, const sp_batch *b, const sp_pass *pass, sp_error *err);

/* sp_engine_run for a T5 model (validated already). */
int sp__t5_run(struct sp_worker *w, const sp_batch *b, const sp_pass *pass, double *loss_sum,
               sp_error *err);

/* Bytes a T5 run allocates for n_tokens packed tokens, n_targets targets and sequences of at
 * most max_len tokens (an upper bound of every batch of those sizes: every token counted in the
 * encoder and in the decoder). */
size_t sp__t5_activation_bytes(const sp_model *m, size_t n_tokens, size_t n_targets, int max_len);
void sp__t5_work_free(sp__t5_work *t);
/* Bytes t holds (0 for NULL). */
size_t sp__t5_work_bytes(const sp__t5_work *t);

/* HF's _relative_position_bucket of rel = key position - query position, in float32 as
 * transformers computes it: bidirectional (the encoder) or causal (the decoder). */
int sp__t5_bucket(int rel, int bidirectional, int num_buckets, int max_distance);

/* ---- generation (t5_generate.c) -------------------------------------------------------------
 *
 * A T5 sequence's cache (struct sp_kv_cache, steps.h) holds, in every decoder layer, the
 * cross-attention keys and values of its encoder output (the first `enc` rows, computed once per
 * request) and then the decoder's self-attention keys and values (one row per decoder position).
 * sp_generate_extend on a sequence whose cache is empty runs its tokens (ids and soft tokens)
 * through the encoder, fills the cross-attention rows and runs the decoder's first position
 * (decoder_start_token_id); on a sequence with rows, its tokens are the decoder's next inputs. */

/* The encoder alone over every position of b's sequences (sequence s's soft tokens read
 * prompts[s], NULL entries: none), one layer's buffers reused by every layer: the encoder's output
 * [N, d] in b's packed order, in w's T5 buffers until its next run. NULL when out of memory. */
const float *sp__t5_encode(struct sp_worker *w, const sp_batch *b, const float *const *prompts);

/* The first decoder layer's self-attention keys and values of every token of b (its embedding,
 * the layer's first norm, k and v; T5 has no positions in them): kv [2, N, qd], the keys then the
 * values, what a prefix row of that token would hold (sp_engine_first_kv). -1 when out of
 * memory. */
int sp__t5_first_kv(const sp_model *m, const sp_batch *b, float *kv);
/* Bytes sp__t5_encode allocates for n_rows packed rows, sequences of at most max_len. */
size_t sp__t5_encode_bytes(const sp_model *m, size_t n_rows, int max_len);

/* One generation step of a T5 model (validated by sp_generate_extend): as sp_generate_extend.
 * 0, or -1 when out of memory (nothing appended). */
int sp__t5_extend(struct sp_worker *w, const sp_gen_seq *seqs, int n_seq, const int32_t *seq_start,
                  const int32_t *tokens, float *logits);
/* sp_model_generate_bytes of a T5 model: the encoder over n_rows rows (sequences up to max_new
 * new rows) and the decoder's step buffers for up to n_rows rows, n_logits logits, attention over
 * up to max_past + max_new keys. */
size_t sp__t5_generate_bytes(const sp_model *m, size_t n_rows, size_t n_logits, int max_new,
                             int max_past);
void sp__t5_gen_free(sp__t5_gen *g);
size_t sp__t5_gen_bytes(const sp__t5_gen *g); /* 0 for NULL */

#endif
