/* Forward and backward of a frozen model with trainable soft-prompt vectors.
 *
 * A batch packs n_seq sequences of different lengths back to back (no padding, no work spent
 * on it). Each position holds a vocabulary id >= 0 or a soft token SP_SOFT(k), 0 <= k < P,
 * whose input embedding is prompt[k] instead of wte[id]. Targets are (position, token) pairs:
 * the logits computed at a packed position t are scored against the token that should follow.
 *
 * The engine computes the sum over targets of the cross-entropy over the full vocabulary and
 * its exact gradient with respect to the prompt. The trainer divides by the global target count
 * (Hugging Face's mean over labelled tokens) after summing across ranks. Backward computes only
 * activation gradients: no weight gradients, and the vocabulary projection only at targets. */
#ifndef SOFTPROMPT_ENGINE_H
#define SOFTPROMPT_ENGINE_H

#include <stdint.h>

#include "softprompt/error.h"
#include "softprompt/model.h"

#define SP_SOFT(k) (-1 - (int32_t)(k))
#define SP_IS_SOFT(tok) ((tok) < 0)
#define SP_SOFT_INDEX(tok) (-1 - (tok))

typedef struct sp_batch {
    int n_seq;
    const int32_t *seq_start; /* [n_seq + 1] offsets into tokens; seq s is [start[s], start[s+1]) */
    const int32_t *tokens;    /* [seq_start[n_seq]] vocabulary id or SP_SOFT(k) */
    int n_targets;
    const int32_t *target_pos; /* [n_targets] packed positions, strictly increasing */
    const int32_t *target_ids; /* [n_targets] token ids the logits at target_pos are scored on */
    /* Optional, for messages: the dataset file the sequences come from and each sequence's
     * example index in it ([n_seq]); a refused batch is then named by file and example. */
    const char *source;
    const int64_t *example_ids;
} sp_batch;

typedef struct sp_pass {
    const float *prompt; /* [n_prompt, d] */
    int n_prompt;
    /* NULL: no prompt gradient (forward only, unless kv_prefix_grad asks for the prefix's).
     * Otherwise the gradient of the batch's loss sum is ADDED here:
     * [n_prompt, d], or [n_seq, n_prompt, d] with per_sequence_grad (lets the trainer reduce
     * per-sequence contributions in a fixed order, independent of how sequences were grouped). */
    float *grad;
    int per_sequence_grad;
    float *target_logits; /* optional out: [n_targets, V] */
    double *target_loss;  /* optional out: [n_targets] cross-entropy of each target */
    /* Optional per-layer key/value prefix (prefix tuning, P-tuning v2), as transformers runs
     * PEFT's past_key_values: in every layer, every position of every sequence attends to
     * n_kv_prefix rows of keys and values before its own. The keys are used as given (a prefix
     * key is not rotated) and the text's positions start at n_kv_prefix (learned positions and
     * rotary alike), so a sequence may be n_positions - n_kv_prefix long. Layout [L, 2,
     * n_kv_prefix, kv_dim]: each layer's keys, then its values (kv_dim = n_kv_head * head_dim,
     * sp_config_kv_heads * sp_config_head_dim). NULL with n_kv_prefix 0: none. */
    const float *kv_prefix;
    int n_kv_prefix;
    /* NULL, or the gradient of the batch's loss sum with respect to kv_prefix, ADDED here:
     * [L, 2, n_kv_prefix, kv_dim], or [n_seq, L, 2, n_kv_prefix, kv_dim] with
     * per_sequence_grad. Either gradient may be asked for alone. */
    float *kv_prefix_grad;
    /* Optional, forward only: a different prompt per sequence in one batch (ensembles, requests
     * naming different tasks). NULL, or [n_seq] pointers: sequence s's soft tokens read
     * seq_prompts[s] ([n_prompt, d], the same n_prompt for all), a NULL entry meaning prompt.
     * Refused together with grad (a gradient would belong to several prompts). */
    const float *const *seq_prompts;
} sp_pass;

typedef struct sp_worker sp_worker;

/* Per-thread / per-rank state: activations and scratch, grown on demand to the largest batch. */
sp_worker *sp_worker_new(const sp_model *m);
void sp_worker_free(sp_worker *w);
size_t sp_worker_bytes(const sp_worker *w);
const sp_model *sp_worker_model(const sp_worker *w);

/* The checks sp_engine_run makes before any work: ids, soft indices, lengths (with the key/value
 * prefix) <= n_ctx, targets strictly increasing. 0 or -1 with a message naming the position
 * ("batch: position 20 holds token id 37, expected < 37"), prefixed with the file and example
 * when the batch says them ("data.h5: example 17, position 3: batch: ..."). */
int sp_engine_validate(const sp_model *m, const sp_batch *b, const sp_pass *pass, sp_error *err);

/* The keys and values tokens[0..n) produce at every layer when run alone from position 0 (keys
 * rotated at their positions, as a cache holds them): kv [L, 2, n, kv_dim], the layout of
 * sp_pass.kv_prefix. A prefix of these equals prepending the tokens (prefix initialisation from
 * text or vocabulary). Tokens are vocabulary ids; 1 <= n <= n_ctx. */
int sp_engine_capture_kv(sp_worker *w, const int32_t *tokens, int n, float *kv, sp_error *err);

/* The first layer's keys and values of every position of b (forward through the embedding,
 * the first norm and the q/k/v projection only; keys rotated at their positions): kv [2, N,
 * kv_dim], the N keys then the N values, the layout of one layer of sp_pass.kv_prefix. A layer-0
 * key or value depends on the token and its position alone, so this is what a prefix row at that
 * position holds when it was captured from that token (`softprompt inspect` on a prefix).
 * Targets are not needed. */
int sp_engine_first_kv(sp_worker *w, const sp_batch *b, float *kv, sp_error *err);

/* 1 when a layer-0 key at position j is the key at position 0 turned by j and a value does not
 * depend on the position (rotary, ALiBi), so the vocabulary's layer-0 keys and values at
 * position 0 serve every position; 0 when positions enter before the first norm (learned
 * positions: GPT-2, OPT, BERT). */
int sp_engine_first_kv_turns(const sp_model *m);

/* keys [n, kv_dim] (rows at positions 0..n-1: the first half of sp_engine_first_kv's layout, or
 * a prefix's layer 0): each turned back to position 0 in place (the inverse rotation; nothing
 * for ALiBi and T5). Refused when sp_engine_first_kv_turns is 0. */
int sp_engine_first_keys_unturn(sp_worker *w, float *keys, int n, sp_error *err);

/* Runs forward (and backward when pass->grad). *loss_sum receives the summed cross-entropy.
 * Validates the batch (ids, soft indices, lengths <= n_ctx, targets) before any work. */
int sp_engine_run(sp_worker *w, const sp_batch *b, const sp_pass *pass, double *loss_sum,
                  sp_error *err);

#endif
