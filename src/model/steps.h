/* The engine's forward over a key/value cache (engine.c), which generation (generate.c,
 * sp_generate_extend) runs: the same embedding, blocks and head as sp_engine_run, with each
 * sequence's new rows attending to its cached rows instead of a training batch's prefix. */
#ifndef SP_MODEL_STEPS_H
#define SP_MODEL_STEPS_H

#include "model/kernels.h"
#include "model/worker.h"
#include "softprompt/generate.h"

/* A key/value cache of every layer (softprompt/generate.h): layer l's rows are layer[l], views
 * into mem. Every layer holds the same number of rows between two steps. */
struct sp_kv_cache {
    const sp_model *m;
    int cap, width, n_layer;
    int enc; /* T5: every layer's first enc rows are the cross-attention keys and values of the
                encoder's output, the decoder's own rows follow (t5.h); 0 otherwise */
    float *mem;
    sp__kv_cache *layer; /* [n_layer], each cap rows of keys then of values */
};

/* One step of generation over the new rows of b's sequences (packed; sequence s's rows
 * b->seq_start[s]..) behind seqs[s]'s shared and own rows: every layer's keys and values of the
 * new rows are appended to seqs[s].own, and the logits at b's targets (each sequence's last new
 * row, or none) go to logits [b->n_targets, V]. The rows' positions continue after each
 * sequence's cached rows. Validated by the caller, and the worker sized for it
 * (sp__worker_reserve_generate). */
void sp__engine_extend(sp_worker *w, const sp_batch *b, const sp_gen_seq *seqs, float *logits);

#endif
