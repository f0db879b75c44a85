/* Model and dataset fingerprints: 64-bit hashes that let a resumed run check it is continuing
 * with the same frozen model and the same training data. */
#include <stdint.h>
#include <string.h>

#include "model/family.h"
#include "model/model_store.h"
#include "softprompt/checkpoint.h"
#include "train/hash64.h"

static void hash_floats(sp__h64 *h, const char *name, const float *x, size_t n) {
    sp__h64_str(h, name);
    sp__h64_u64(h, n);
    sp__h64_update(h, x, n * sizeof *x);
}

/* A matrix held in another storage than float32 (BF16): the float32 values of the tensor it was
 * stored as, as the float32 model would hold them, so that a model has one fingerprint whatever
 * --weights (a checkpoint resumes, a prompt is checked against its model, across modes). */
static void hash_source(sp__h64 *h, const char *name, const sp_st_tensor *t, size_t n) {
    sp__h64_str(h, name);
    sp__h64_u64(h, n);
    float chunk[512];
    size_t esz = sp_dtype_size(t->dtype);
    for (size_t i0 = 0; i0 < n; i0 += 512) {
        size_t c = n - i0 < 512 ? n - i0 : 512;
        sp_convert_to_f32(t->dtype, (const unsigned char *)t->data + i0 * esz, chunk, c);
        sp__h64_update(h, chunk, c * sizeof *chunk);
    }
}

/* The family's tag and the configuration values beyond the common ones that change its
 * computation. A new family decides here what identifies it (the switch makes that a compile
 * error to forget); GPT-2 and the Llama family hash exactly what the first versions did. */
/* What Gemma 2 adds to Gemma's block (Gemma 3 has it too), in the fingerprint's order. */
static void hash_gemma2_options(sp__h64 *h, const sp_model *m) {
    const sp_model_config *c = &m->cfg;
    sp__h64_f64(h, m->embed_scale);
    sp__h64_i64(h, c->sliding_window);
    sp__h64_i64(h, c->window_pattern);
    sp__h64_f64(h, c->attn_softcap);
    sp__h64_f64(h, c->logit_softcap);
    sp__h64_f64(h, c->query_scale);
}

static void hash_family(sp__h64 *h, const sp_model *m) {
    const sp_model_config *c = &m->cfg;
    switch (c->arch) {
    case SP_ARCH_GPT2:
        sp__h64_str(h, "gpt2");
        return;
    case SP_ARCH_LLAMA:
    case SP_ARCH_QWEN2:
        sp__h64_str(h, "llama");
        return;
    case SP_ARCH_MISTRAL:
        sp__h64_str(h, "mistral");
        sp__h64_i64(h, c->sliding_window);
        sp__h64_i64(h, c->window_pattern);
        return;
    case SP_ARCH_QWEN3:
        sp__h64_str(h, "qwen3"); /* the q/k norm gains are rows of its table */
        return;
    case SP_ARCH_GEMMA:
        sp__h64_str(h, "gemma");
        sp__h64_f64(h, m->embed_scale);
        return;
    case SP_ARCH_GEMMA2:
        sp__h64_str(h, "gemma2");
        hash_gemma2_options(h, m);
        return;
    case SP_ARCH_GEMMA3:
        sp__h64_str(h, "gemma3_text");
        hash_gemma2_options(h, m);
        hash_floats(h, "rope_inv_freq_local", m->rope_inv_freq_local,
                    (size_t)sp_config_head_dim(c) / 2);
        return;
    case SP_ARCH_OPT: /* the position table is a row of its table; opt-350m's block and width
                       * (pre-norm models without projections hash as before they existed) */
        sp__h64_str(h, "opt");
        if (c->post_norm || sp_config_embed_dim(c) != c->d_model) {
            sp__h64_i64(h, c->post_norm);
            sp__h64_i64(h, sp_config_embed_dim(c));
        }
        return;
    case SP_ARCH_PHI:
        sp__h64_str(h, "phi");
        sp__h64_i64(h, c->rotary_dim);
        return;
    case SP_ARCH_PHI3:
        sp__h64_str(h, "phi3");
        sp__h64_i64(h, c->sliding_window);
        sp__h64_i64(h, c->rotary_dim);
        return;
    case SP_ARCH_GPT_NEOX:
        sp__h64_str(h, "gpt_neox");
        sp__h64_i64(h, c->parallel_residual);
        sp__h64_i64(h, c->gelu_exact);
        sp__h64_i64(h, c->rotary_dim);
        return;
    case SP_ARCH_BERT:
    case SP_ARCH_ROBERTA: /* where positions start; the rest are rows of the table */
        sp__h64_str(h, sp_arch_model_type(c->arch));
        sp__h64_i64(h, c->pos_offset);
        sp__h64_i64(h, c->type_vocab_size);
        return;
    case SP_ARCH_T5: /* the buckets, the MLP, the decoder's first input; d_kv below */
        sp__h64_str(h, "t5");
        sp__h64_i64(h, sp_config_head_dim(c));
        sp__h64_i64(h, c->rel_buckets);
        sp__h64_i64(h, c->rel_max_distance);
        sp__h64_i64(h, c->ff_gated);
        sp__h64_i64(h, c->decoder_start);
        return;
    case SP_ARCH_BLOOM: /* the block's residual and the ALiBi slopes */
        sp__h64_str(h, "bloom");
        sp__h64_i64(h, c->residual_from_norm);
        hash_floats(h, "alibi_slopes", m->alibi_slopes, (size_t)c->n_head);
        return;
    }
}

static void hash_rotary(sp__h64 *h, const sp_model *m) {
    const sp_model_config *c = &m->cfg;
    switch (c->arch) {
    case SP_ARCH_GPT2:
    case SP_ARCH_BERT:
    case SP_ARCH_ROBERTA:
    case SP_ARCH_OPT:
    case SP_ARCH_T5:
    case SP_ARCH_BLOOM:
        return;
    case SP_ARCH_LLAMA:
    case SP_ARCH_QWEN2:
    case SP_ARCH_MISTRAL:
    case SP_ARCH_QWEN3:
    case SP_ARCH_GEMMA:
    case SP_ARCH_GEMMA2:
    case SP_ARCH_GEMMA3:
    case SP_ARCH_PHI3: /* rotary_dim is head_dim but for Phi-3's partial_rotary_factor */
    case SP_ARCH_PHI:
        sp__h64_str(h, sp_arch_model_type(c->arch));
        sp__h64_i64(h, sp_config_kv_heads(c));
        sp__h64_i64(h, sp_config_head_dim(c));
        hash_floats(h, "rope_inv_freq", m->rope_inv_freq, (size_t)sp_config_rotary_dim(c) / 2);
        return;
    case SP_ARCH_GPT_NEOX:
        sp__h64_str(h, sp_arch_model_type(c->arch));
        sp__h64_i64(h, sp_config_head_dim(c));
        hash_floats(h, "rope_inv_freq", m->rope_inv_freq, (size_t)sp_config_rotary_dim(c) / 2);
        return;
    }
}

typedef struct fp_ctx {
    sp__h64 *h;
    const sp_model *m;
    int layer; /* of the rows hashed last */
} fp_ctx;

/* One row of the family's tensor table: each layer starts with its index; the LM head with
 * whether it is tied (then it is the embedding, not hashed again). */
static int hash_row(void *ctx, const sp__tensor_desc *row, int layer) {
    fp_ctx *k = ctx;
    const sp_model_config *c = &k->m->cfg;
    if (row->role == SP_ROLE_BUFFER || (layer >= 0 && !k->m->layers)) return 0;
    if (layer >= 0 && layer != k->layer) sp__h64_i64(k->h, layer);
    k->layer = layer;
    if (row->role == SP_ROLE_LM_HEAD) sp__h64_i64(k->h, c->tied);
    if (!sp__tensor_present(row, c)) return 0;
    int64_t shape[2];
    int ndim = sp__tensor_shape(row, c, shape);
    size_t n = (size_t)(ndim == 1 ? shape[0] : shape[0] * shape[1]);
    layer = sp__tensor_layer(row, c, layer); /* T5's decoder blocks follow the encoder's */
    const float *f = sp__model_tensor(k->m, layer, row->role);
    if (f) {
        hash_floats(k->h, row->fp_name, f, n);
        return 0;
    }
    const void *slot = sp__model_linear((sp_model *)k->m, layer, row->role);
    if (row->role == SP_ROLE_WTE) slot = &k->m->wte; /* a BF16 table used in place */
    const sp_st_tensor *t = slot ? sp__model_source(k->m, slot) : NULL;
    if (t) hash_source(k->h, row->fp_name, t, n);
    return 0;
}

/* The configuration, then every tensor's float32 values in the order of the family's table.
 * Values, not files, are hashed: the same weights in one file or in shards, with or without the
 * "transformer." prefix, give the same fingerprint; the same F16 weights converted at load do
 * too. GPT-2 fingerprints are unchanged from the first version (checkpoints written before
 * Llama support resume), and those of both from before the family tables
 * (tests/unit/test_fingerprint_pins.c). */
void sp_model_fingerprint(const sp_model *m, char out[17]) {
    const sp_model_config *c = &m->cfg;
    sp__h64 h;
    sp__h64_init(&h);
    sp__h64_str(&h, "softprompt-model-fingerprint-v1");
    hash_family(&h, m);
    sp__h64_i64(&h, c->n_layer);
    sp__h64_i64(&h, c->d_model);
    sp__h64_i64(&h, c->n_head);
    sp__h64_i64(&h, c->d_ff);
    sp__h64_i64(&h, c->vocab_size);
    sp__h64_i64(&h, c->n_ctx);
    sp__h64_f64(&h, c->ln_eps);
    hash_rotary(&h, m);
    fp_ctx k = {&h, m, -1};
    sp__tensors_walk(sp__family_for(c), c->n_layer, SP_ORDER_TABLE, hash_row, &k);
    sp__h64_hex(sp__h64_final(&h), out);
}

/* Everything that identifies the training examples and is already in memory after
 * sp_dataset_open: counts, task, soft slots, classes and verbalizer, tokenizer and template
 * attributes, the shuffle seed, every example's length (offsets) and target count, and the
 * labels. Token ids are not read (that would read the whole file); the tokenizer hash and the
 * template pin them down. The source file name, split name, creator and max_length are left
 * out: renaming or re-creating the same data gives the same fingerprint. */
int sp_dataset_fingerprint(sp_dataset *ds, char out[17], sp_error *err) {
    (void)err;
    const sp_dataset_meta *m = sp_dataset_get_meta(ds);
    int64_t n = sp_dataset_n_examples(ds);
    sp__h64 h;
    sp__h64_init(&h);
    sp__h64_str(&h, "softprompt-dataset-fingerprint-v1");
    sp__h64_str(&h, sp_task_name(m->task));
    sp__h64_i64(&h, m->n_soft);
    sp__h64_i64(&h, m->n_classes);
    for (int c = 0; c < m->n_classes; c++) sp__h64_i64(&h, m->verbalizer[c]);
    sp__h64_u64(&h, m->seed);
    sp__h64_str(&h, m->tokenizer_hash);
    sp__h64_str(&h, m->template_spec);
    sp__h64_str(&h, m->target_spec);
    sp__h64_str(&h, m->verbalizer_spec);
    sp__h64_i64(&h, n);
    sp__h64_i64(&h, m->n_tokens);
    sp__h64_i64(&h, m->n_targets);
    const int64_t *off = sp_dataset_offsets(ds);
    for (int64_t i = 0; i <= n; i++) sp__h64_i64(&h, off[i]);
    for (int64_t i = 0; i < n; i++) sp__h64_i64(&h, sp_dataset_example_targets(ds, i));
    const int32_t *labels = sp_dataset_labels(ds);
    sp__h64_i64(&h, labels != NULL);
    for (int64_t i = 0; labels && i < n; i++) sp__h64_i64(&h, labels[i]);
    sp__h64_hex(sp__h64_final(&h), out);
    return 0;
}
