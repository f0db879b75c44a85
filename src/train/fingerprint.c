/* Model and dataset fingerprints: 64-bit hashes that let a resumed run check it is continuing
 * with the same frozen model and the same training data. */
#include <stdint.h>
#include <string.h>

#include "softprompt/checkpoint.h"
#include "train/hash64.h"

static void hash_floats(sp_h64 *h, const char *name, const float *x, size_t n) {
    sp_h64_str(h, name);
    sp_h64_u64(h, n);
    sp_h64_update(h, x, n * sizeof *x);
}

/* Llama-family layer tensors in a fixed order, with their element counts. */
static void hash_llama_layer(sp_h64 *h, const sp_model_config *c, const sp_layer *L) {
    size_t d = (size_t)c->d_model, f = (size_t)c->d_ff;
    size_t qd = (size_t)c->n_head * sp_config_head_dim(c);
    size_t kvd = (size_t)sp_config_kv_heads(c) * sp_config_head_dim(c);
    hash_floats(h, "input_layernorm.weight", L->ln1_w, d);
    hash_floats(h, "q_proj.weight", L->q_w, qd * d);
    hash_floats(h, "k_proj.weight", L->k_w, kvd * d);
    hash_floats(h, "v_proj.weight", L->v_w, kvd * d);
    if (c->qkv_bias) {
        hash_floats(h, "q_proj.bias", L->q_b, qd);
        hash_floats(h, "k_proj.bias", L->k_b, kvd);
        hash_floats(h, "v_proj.bias", L->v_b, kvd);
    }
    hash_floats(h, "o_proj.weight", L->attn_proj_w, d * qd);
    if (c->o_bias) hash_floats(h, "o_proj.bias", L->attn_proj_b, d);
    hash_floats(h, "post_attention_layernorm.weight", L->ln2_w, d);
    hash_floats(h, "gate_proj.weight", L->gate_w, f * d);
    hash_floats(h, "up_proj.weight", L->up_w, f * d);
    hash_floats(h, "down_proj.weight", L->down_w, d * f);
    if (c->mlp_bias) {
        hash_floats(h, "gate_proj.bias", L->gate_b, f);
        hash_floats(h, "up_proj.bias", L->up_b, f);
        hash_floats(h, "down_proj.bias", L->down_b, d);
    }
}

static void hash_gpt2_layer(sp_h64 *h, const sp_model_config *c, const sp_layer *L) {
    size_t d = (size_t)c->d_model, f = (size_t)c->d_ff;
    hash_floats(h, "ln_1.weight", L->ln1_w, d);
    hash_floats(h, "ln_1.bias", L->ln1_b, d);
    hash_floats(h, "attn.c_attn.weight", L->qkv_w, d * 3 * d);
    hash_floats(h, "attn.c_attn.bias", L->qkv_b, 3 * d);
    hash_floats(h, "attn.c_proj.weight", L->attn_proj_w, d * d);
    hash_floats(h, "attn.c_proj.bias", L->attn_proj_b, d);
    hash_floats(h, "ln_2.weight", L->ln2_w, d);
    hash_floats(h, "ln_2.bias", L->ln2_b, d);
    hash_floats(h, "mlp.c_fc.weight", L->fc_w, d * f);
    hash_floats(h, "mlp.c_fc.bias", L->fc_b, f);
    hash_floats(h, "mlp.c_proj.weight", L->fc_proj_w, f * d);
    hash_floats(h, "mlp.c_proj.bias", L->fc_proj_b, d);
}

/* Configuration values that change the computation of the Llama family. */
static void hash_llama_config(sp_h64 *h, const sp_model_config *c, const sp_model *m) {
    sp_h64_str(h, c->model_type);
    sp_h64_i64(h, sp_config_kv_heads(c));
    sp_h64_i64(h, sp_config_head_dim(c));
    hash_floats(h, "rope_inv_freq", m->rope_inv_freq, (size_t)sp_config_head_dim(c) / 2);
}

/* The configuration, then every tensor's float32 values in a fixed order. Values, not files, are
 * hashed: the same weights in one file or in shards, with or without the "transformer." prefix,
 * give the same fingerprint; the same F16 weights converted at load do too. GPT-2 fingerprints
 * are unchanged from the first version (checkpoints written before Llama support resume). */
void sp_model_fingerprint(const sp_model *m, char out[17]) {
    const sp_model_config *c = &m->cfg;
    size_t d = (size_t)c->d_model, v = (size_t)c->vocab_size;
    int gpt2 = m->arch == SP_ARCH_GPT2;
    sp_h64 h;
    sp_h64_init(&h);
    sp_h64_str(&h, "softprompt-model-fingerprint-v1");
    sp_h64_str(&h, gpt2 ? "gpt2" : "llama");
    sp_h64_i64(&h, c->n_layer);
    sp_h64_i64(&h, c->d_model);
    sp_h64_i64(&h, c->n_head);
    sp_h64_i64(&h, c->d_ff);
    sp_h64_i64(&h, c->vocab_size);
    sp_h64_i64(&h, c->n_ctx);
    sp_h64_f64(&h, c->ln_eps);
    if (!gpt2) hash_llama_config(&h, c, m);
    hash_floats(&h, "wte", m->wte, v * d);
    if (gpt2) hash_floats(&h, "wpe", m->wpe, (size_t)c->n_ctx * d);
    for (int l = 0; l < c->n_layer && m->layers; l++) {
        sp_h64_i64(&h, l);
        if (gpt2)
            hash_gpt2_layer(&h, c, &m->layers[l]);
        else
            hash_llama_layer(&h, c, &m->layers[l]);
    }
    hash_floats(&h, "ln_f.weight", m->lnf_w, d);
    if (gpt2) hash_floats(&h, "ln_f.bias", m->lnf_b, d);
    /* An untied head is part of the model. */
    int tied = m->lm_head == m->wte;
    sp_h64_i64(&h, tied);
    if (!tied) hash_floats(&h, "lm_head", m->lm_head, v * d);
    sp_h64_hex(sp_h64_final(&h), out);
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
    sp_h64 h;
    sp_h64_init(&h);
    sp_h64_str(&h, "softprompt-dataset-fingerprint-v1");
    sp_h64_str(&h, sp_task_name(m->task));
    sp_h64_i64(&h, m->n_soft);
    sp_h64_i64(&h, m->n_classes);
    for (int c = 0; c < m->n_classes; c++) sp_h64_i64(&h, m->verbalizer[c]);
    sp_h64_u64(&h, m->seed);
    sp_h64_str(&h, m->tokenizer_hash);
    sp_h64_str(&h, m->template_spec);
    sp_h64_str(&h, m->target_spec);
    sp_h64_str(&h, m->verbalizer_spec);
    sp_h64_i64(&h, n);
    sp_h64_i64(&h, m->n_tokens);
    sp_h64_i64(&h, m->n_targets);
    const int64_t *off = sp_dataset_offsets(ds);
    for (int64_t i = 0; i <= n; i++) sp_h64_i64(&h, off[i]);
    for (int64_t i = 0; i < n; i++) sp_h64_i64(&h, sp_dataset_example_targets(ds, i));
    const int32_t *labels = sp_dataset_labels(ds);
    sp_h64_i64(&h, labels != NULL);
    for (int64_t i = 0; labels && i < n; i++) sp_h64_i64(&h, labels[i]);
    sp_h64_hex(sp_h64_final(&h), out);
    return 0;
}
