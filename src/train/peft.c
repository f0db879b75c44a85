/* Export of a trained prompt as a Hugging Face PEFT prompt-tuning adapter:
 *   dir/adapter_model.safetensors  one F32 tensor "prompt_embeddings" [P, d]
 *   dir/adapter_config.json        PromptTuningConfig fields (PEFT writes them sorted, indent 2)
 * so that PeftModel.from_pretrained(base_model, dir) loads it. Only keys every PEFT since 0.6
 * accepts are written: PEFT up to 0.13 raises TypeError on a key its config class does not
 * have (0.14 to 0.16 warn), e.g. modules_to_save (0.17) or peft_version (0.18). The field lists
 * per PEFT release are in tests/fixtures/peft/prompt_tuning_config_fields.json. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "io/fileutil.h"
#include "model/family.h"
#include "softprompt/checkpoint.h"
#include "softprompt/safetensors.h"
#include "train/params.h"

/* mkdir -p: creates dir and any missing parents. */
static int make_dirs(const char *dir, sp_error *err) {
    char *p = strdup(dir);
    if (!p) return sp_fail(err, "%s: out of memory", dir);
    int rc = 0;
    for (char *s = p + 1; rc == 0; s++) {
        if (*s != '/' && *s != '\0') continue;
        char saved = *s;
        *s = '\0';
        struct stat st;
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            rc = sp_fail(err, "%s: cannot create directory %s: %s", dir, p, strerror(errno));
        else if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode))
            rc = sp_fail(err, "%s: %s exists and is not a directory", dir, p);
        *s = saved;
        if (saved == '\0') break;
    }
    free(p);
    return rc;
}

/* softprompt's init names (random, vocab, vocab-top, text, labels, file) to PEFT's
 * PromptTuningInit. PEFT has no class-label or file init; those (and anything unknown) are RANDOM,
 * which only means "no special initialisation" when PEFT loads trained weights. */
static const char *peft_init(const char *init_name, const char *init_text) {
    if (!init_name) return "RANDOM";
    if (strcasecmp(init_name, "text") == 0) return init_text ? "TEXT" : "RANDOM";
    /* "vocab" (uniform over the vocabulary), "vocab-top" (the most frequent tokens), PEFT's own
     * spellings: all sample token embeddings. */
    if (strncasecmp(init_name, "vocab", 5) == 0 || strcasecmp(init_name, "sample_vocab") == 0 ||
        strcasecmp(init_name, "sampled_vocab") == 0 || strcasecmp(init_name, "sample-vocab") == 0)
        return "SAMPLE_VOCAB";
    return "RANDOM";
}

static json_t *str_or_null(const char *s) {
    return s ? json_string(s) : json_null();
}

/* Writes dir/adapter_model.safetensors ("prompt_embeddings" [rows, cols] F32) and
 * dir/adapter_config.json: cfg (consumed) plus the base model's name and revision. */
static int write_adapter(const char *dir, const float *x, int rows, int cols, const sp_model *m,
                         const char *base_model, const char *init_name, json_t *cfg,
                         sp_error *err) {
    if (!cfg) return sp_fail(err, "%s: out of memory", dir);
    if (make_dirs(dir, err) != 0) return json_decref(cfg), -1;
    char *revision = NULL, *found = base_model ? NULL : sp_peft_base_model(m, &revision, NULL, err);
    if (!base_model && !found) return json_decref(cfg), -1;
    const char *base = base_model ? base_model : found;
    size_t n = strlen(dir) + 32;
    char *st_path = malloc(n), *cfg_path = malloc(n);
    if (!st_path || !cfg_path) {
        free(st_path), free(cfg_path), free(found), free(revision), json_decref(cfg);
        return sp_fail(err, "%s: out of memory", dir);
    }
    snprintf(st_path, n, "%s/adapter_model.safetensors", dir);
    snprintf(cfg_path, n, "%s/adapter_config.json", dir);
    sp_st_out t = {.name = "prompt_embeddings", .dtype = SP_DTYPE_F32, .ndim = 2, .data = x};
    t.shape[0] = rows, t.shape[1] = cols;
    /* "format": "pt" is what PyTorch-saved safetensors (and PEFT) carry. */
    const char *meta[] = {"format", "pt", "softprompt_init", init_name ? init_name : ""};
    int rc = sp_st_write(st_path, &t, 1, meta, 2, err);
    if (json_object_get(cfg, "tokenizer_name_or_path"))
        json_object_set_new(cfg, "tokenizer_name_or_path", str_or_null(base));
    json_object_set_new(cfg, "base_model_name_or_path", str_or_null(base));
    json_object_set_new(cfg, "inference_mode", json_true());
    json_object_set_new(cfg, "revision", str_or_null(revision));
    json_object_set_new(cfg, "auto_mapping", json_null());
    char *text = rc == 0 ? json_dumps(cfg, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    json_decref(cfg);
    if (rc == 0 && !text) rc = sp_fail(err, "%s: out of memory", cfg_path);
    if (rc == 0) {
        size_t len = strlen(text);
        char *withnl = realloc(text, len + 2);
        if (withnl) text = withnl, text[len++] = '\n', text[len] = '\0';
        rc = sp__write_file_atomic(cfg_path, text, len, err);
    }
    free(text);
    free(st_path), free(cfg_path), free(found), free(revision);
    return rc;
}

/* PEFT's task type for the model: a masked LM's prompt is prepended to inputs_embeds by
 * PeftModelForFeatureExtraction (its forward concatenates the prompt and calls the base model,
 * BertForMaskedLM / RobertaForMaskedLM, whose logits are read at the mask); PEFT has no masked-LM
 * task type, and SEQ_CLS needs a classification head. */
static const char *peft_task(const sp_model *m) {
    switch (sp__family_of(m->cfg.arch)->mask) {
    case SP_MASK_CAUSAL:
        return "CAUSAL_LM";
    case SP_MASK_FULL:
        return "FEATURE_EXTRACTION";
    case SP_MASK_SEQ2SEQ:
        return "SEQ_2_SEQ_LM";
    }
    return "CAUSAL_LM";
}

/* PEFT's num_transformer_submodules: 2 for SEQ_2_SEQ_LM (PeftModel's default), else 1. */
static int peft_submodules(const sp_model *m) {
    return strcmp(peft_task(m), "SEQ_2_SEQ_LM") == 0 ? 2 : 1;
}

int sp_peft_export(const char *dir, const float *prompt, int n_prompt, const sp_model *m,
                   const char *base_model, const char *init_name, const char *init_text,
                   sp_error *err) {
    int d = sp_config_embed_dim(&m->cfg); /* inputs_embeds: OPT-350m's word_embed_proj_dim */
    if (!prompt || n_prompt < 1 || d < 1)
        return sp_fail(err, "%s: cannot export an empty prompt (%d x %d)", dir, n_prompt, d);
    const char *init = peft_init(init_name, init_text);
    /* seq2seq: PEFT's tensor is [num_virtual_tokens x 2, d], the encoder's rows then the
     * decoder's; PeftModelForSeq2SeqLM's prompt tuning (PEFT >= 0.4.0) prepends only the first
     * num_virtual_tokens to the encoder's inputs_embeds and never reads the others, which are
     * written as zeros (nothing trained them) */
    int sub = peft_submodules(m);
    float *rows = sub > 1 ? calloc((size_t)n_prompt * sub * (size_t)d, sizeof *rows) : NULL;
    if (sub > 1 && !rows) return sp_fail(err, "%s: out of memory", dir);
    if (rows) memcpy(rows, prompt, (size_t)n_prompt * (size_t)d * sizeof *rows);
    json_t *cfg = json_object();
    if (cfg) {
        json_object_set_new(cfg, "peft_type", json_string("PROMPT_TUNING"));
        json_object_set_new(cfg, "task_type", json_string(peft_task(m)));
        json_object_set_new(cfg, "num_virtual_tokens", json_integer(n_prompt));
        json_object_set_new(cfg, "token_dim", json_integer(d));
        json_object_set_new(cfg, "num_transformer_submodules", json_integer(sub));
        json_object_set_new(cfg, "num_attention_heads", json_integer(m->cfg.n_head));
        json_object_set_new(cfg, "num_layers", json_integer(m->cfg.n_layer));
        json_object_set_new(cfg, "prompt_tuning_init", json_string(init));
        json_object_set_new(cfg, "prompt_tuning_init_text",
                            str_or_null(strcmp(init, "TEXT") == 0 ? init_text : NULL));
        json_object_set_new(cfg, "tokenizer_name_or_path", json_null());
    }
    int rc = write_adapter(dir, rows ? rows : prompt, n_prompt * sub, d, m, base_model, init_name,
                           cfg, err);
    free(rows);
    return rc;
}

int sp_peft_export_prefix(const char *dir, const float *prefix, int n_prefix, const sp_model *m,
                          const char *base_model, int encoder_hidden, sp_error *err) {
    const sp_model_config *c = &m->cfg;
    int kv = sp_config_kv_heads(c) * sp_config_head_dim(c), L = c->n_layer;
    if (!prefix || n_prefix < 1)
        return sp_fail(err, "%s: cannot export an empty prefix (%d rows)", dir, n_prefix);
    size_t cols = (size_t)L * 2 * kv;
    float *peft = malloc((size_t)n_prefix * cols * sizeof *peft);
    if (!peft) return sp_fail(err, "%s: out of memory", dir);
    sp__prefix_to_peft(prefix, L, n_prefix, kv, peft);
    json_t *cfg = json_object();
    if (cfg) { /* PrefixTuningConfig; for GQA PEFT writes the key/value heads (see the header) */
        json_object_set_new(cfg, "peft_type", json_string("PREFIX_TUNING"));
        json_object_set_new(cfg, "task_type", json_string(peft_task(m)));
        json_object_set_new(cfg, "num_virtual_tokens", json_integer(n_prefix));
        json_object_set_new(cfg, "token_dim", json_integer(kv));
        /* T5: 2, PEFT's default for SEQ_2_SEQ_LM; the tensor still holds P rows (PEFT saves
         * the first num_virtual_tokens and gives the decoder's self-attention the prefix) */
        json_object_set_new(cfg, "num_transformer_submodules", json_integer(peft_submodules(m)));
        json_object_set_new(cfg, "num_attention_heads", json_integer(sp_config_kv_heads(c)));
        json_object_set_new(cfg, "num_layers", json_integer(L));
        json_object_set_new(cfg, "encoder_hidden_size",
                            json_integer(encoder_hidden > 0 ? encoder_hidden : kv));
        json_object_set_new(cfg, "prefix_projection", json_false());
    }
    int rc = write_adapter(dir, peft, n_prefix, (int)cols, m, base_model, "prefix", cfg, err);
    free(peft);
    return rc;
}
