/* Reading a Hugging Face PEFT prompt-tuning adapter for use (eval --prompt, export --prompt):
 * adapter_model.safetensors and the adapter_config.json beside it, each checked against the
 * other. PEFT itself needs adapter_config.json to load an adapter (PeftConfig.from_pretrained),
 * and without it nothing says what the tensor is, so a safetensors file without one is refused.
 * What PEFT does with each key: docs/formats.md, "Reading PEFT adapters". */
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/fileutil.h"
#include "softprompt/safetensors.h"
#include "train/checkpoint_internal.h"
#include "train/params.h"
#include "util/path.h"

#define ADAPTER_TENSOR "prompt_embeddings"

/* A string from a file, safe to print: at most 60 bytes, control characters as '?'. */
static const char *printable(const char *s, char buf[64]) {
    size_t n = 0;
    for (; s[n] && n < 60; n++) buf[n] = (unsigned char)s[n] < 0x20 || s[n] == 0x7f ? '?' : s[n];
    snprintf(buf + n, 64 - n, "%s", s[n] ? "..." : "");
    return buf;
}

/* Optional string key: NULL when absent or null. */
static int config_str(json_t *cfg, const char *key, char **out, const char *path, sp_error *err) {
    json_t *v = json_object_get(cfg, key);
    *out = NULL;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v)) return sp_fail(err, "%s: \"%s\" must be a string or null", path, key);
    *out = strdup(json_string_value(v));
    return *out ? 0 : sp_fail(err, "%s: out of memory", path);
}

/* Integer key >= 1; 0 when absent or null (PEFT then takes it from the model), unless required. */
static int config_int(json_t *cfg, const char *key, int required, int *out, const char *path,
                      sp_error *err) {
    json_t *v = json_object_get(cfg, key);
    *out = 0;
    if (!v || json_is_null(v))
        return required ? sp_fail(err, "%s: missing \"%s\" (an integer >= 1)", path, key) : 0;
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > INT_MAX)
        return sp_fail(err, "%s: \"%s\" must be an integer >= 1", path, key);
    *out = (int)json_integer_value(v);
    return 0;
}

static const char *method_hint(const char *type) {
    if (strcmp(type, "P_TUNING") == 0)
        return "P_TUNING (P-tuning v1) trains a prompt encoder, an LSTM or MLP, whose weights "
               "PEFT does not save: the file holds only that encoder's output, so what was "
               "trained cannot be read back or trained further. P-tuning v2 is PEFT's "
               "PREFIX_TUNING, which softprompt reads";
    if (strcmp(type, "MULTITASK_PROMPT_TUNING") == 0)
        return "that method's file holds a shared prompt and per-task low-rank factors, not "
               "one prompt";
    return "that method changes the model's weights; it is not a prompt";
}

/* peft_type PROMPT_TUNING or PREFIX_TUNING, task_type CAUSAL_LM, FEATURE_EXTRACTION (masked
 * LMs: the prompt prepended to inputs_embeds alike) or unset, one transformer submodule; or
 * SEQ_2_SEQ_LM (T5), whose num_transformer_submodules is 2 by PEFT's default: a prompt tuning
 * tensor holds num_virtual_tokens rows per stack, and PeftModelForSeq2SeqLM (since PEFT 0.4.0)
 * prepends only the first num_virtual_tokens, the encoder's, to inputs_embeds; a prefix tensor
 * holds num_virtual_tokens rows (get_prompt_embedding_to_save keeps those), given to the
 * decoder's self-attention. *sub: the submodules (1 or 2). */
static int check_method(json_t *cfg, const char *path, int *sub, sp_error *err) {
    char buf[64];
    json_t *type = json_object_get(cfg, "peft_type");
    if (!json_is_string(type))
        return sp_fail(err, "%s: missing \"peft_type\" (a string; PROMPT_TUNING for a prompt)",
                       path);
    const char *t = json_string_value(type);
    if (strcmp(t, "PROMPT_TUNING") != 0 && strcmp(t, "PREFIX_TUNING") != 0)
        return sp_fail(err,
                       "%s: peft_type is \"%s\": softprompt reads PROMPT_TUNING and "
                       "PREFIX_TUNING adapters only (%s)",
                       path, printable(t, buf), method_hint(t));
    json_t *task = json_object_get(cfg, "task_type");
    int seq2seq = json_is_string(task) && strcmp(json_string_value(task), "SEQ_2_SEQ_LM") == 0;
    if (task && !json_is_null(task) && !seq2seq &&
        (!json_is_string(task) || (strcmp(json_string_value(task), "CAUSAL_LM") != 0 &&
                                   strcmp(json_string_value(task), "FEATURE_EXTRACTION") != 0)))
        return sp_fail(err,
                       "%s: task_type is \"%s\": softprompt runs causal language models "
                       "(CAUSAL_LM), masked LMs (FEATURE_EXTRACTION) and T5 (SEQ_2_SEQ_LM); a "
                       "prompt trained for another task or architecture is not one for them",
                       path, json_is_string(task) ? printable(json_string_value(task), buf) : "?");
    if (config_int(cfg, "num_transformer_submodules", 0, sub, path, err)) return -1;
    if (seq2seq) {
        if (*sub == 0) *sub = 2; /* PEFT's default for SEQ_2_SEQ_LM */
        if (*sub <= 2) return 0;
    }
    if (*sub == 0) *sub = 1;
    if (*sub > 1)
        return sp_fail(err,
                       "%s: num_transformer_submodules is %d: the adapter holds a prompt for each "
                       "of %d stacks (encoder-decoder models); softprompt runs decoder-only "
                       "causal LMs (1)",
                       path, *sub, *sub);
    return 0;
}

static int read_config(const char *path, sp_prompt_file *pf, int *token_dim, int *prefix, int *sub,
                       sp_error *err) {
    struct stat st;
    if (stat(path, &st) != 0)
        return sp_fail(err,
                       "%s: missing: PEFT needs adapter_config.json beside "
                       "adapter_model.safetensors to load an adapter, and softprompt to know "
                       "what the tensor is. Put the adapter's adapter_config.json there; for a "
                       "bare [P, d] prompt, store it as dataset \"prompt\" of an HDF5 file "
                       "instead (h5py: f.create_dataset(\"prompt\", data=x))",
                       path);
    if (sp__check_file_size(path, SP_MAX_CONFIG_FILE_BYTES, "adapter config", err)) return -1;
    json_error_t je;
    json_t *cfg = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!cfg)
        return sp_fail(err, "%s: invalid JSON: %s (line %d, column %d)", path, je.text, je.line,
                       je.column);
    int rc = json_is_object(cfg) ? 0 : sp_fail(err, "%s: not a JSON object", path);
    if (rc == 0) rc = check_method(cfg, path, sub, err);
    if (rc == 0)
        *prefix =
            strcmp(json_string_value(json_object_get(cfg, "peft_type")), "PREFIX_TUNING") == 0;
    if (rc == 0) rc = config_int(cfg, "num_virtual_tokens", 1, &pf->n_prompt, path, err);
    if (rc == 0 && *prefix) rc = config_int(cfg, "num_layers", 1, &pf->num_layers, path, err);
    if (rc == 0) rc = config_int(cfg, "token_dim", 0, token_dim, path, err);
    if (rc == 0) rc = config_int(cfg, "num_layers", 0, &pf->num_layers, path, err);
    if (rc == 0)
        rc = config_int(cfg, "num_attention_heads", 0, &pf->num_attention_heads, path, err);
    if (rc == 0) rc = config_str(cfg, "base_model_name_or_path", &pf->base_model, path, err);
    char *init = NULL;
    if (rc == 0) rc = config_str(cfg, "prompt_tuning_init", &init, path, err);
    if (rc == 0) rc = config_str(cfg, "prompt_tuning_init_text", &pf->init_text, path, err);
    /* PEFT's PromptTuningInit in softprompt's names (sp_peft_export maps them back). */
    if (rc == 0 && init) {
        const char *name = strcmp(init, "TEXT") == 0 && pf->init_text ? "text"
                           : strcmp(init, "SAMPLE_VOCAB") == 0        ? "vocab"
                                                                      : "random";
        pf->init_name = strdup(name);
        if (strcmp(name, "text") != 0) free(pf->init_text), pf->init_text = NULL;
    }
    free(init);
    json_decref(cfg);
    return rc;
}

/* Refuses any tensor but prompt_embeddings, naming up to three of them. */
static int check_tensor_names(const sp_st_file *f, sp_error *err) {
    char names[256] = "", buf[64];
    int extra = 0;
    size_t len = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        if (strcmp(f->tensors[i].name, ADAPTER_TENSOR) == 0) continue;
        if (++extra <= 3 && len < sizeof names)
            len += (size_t)snprintf(names + len, sizeof names - len, "%s\"%s\"",
                                    extra > 1 ? ", " : "", printable(f->tensors[i].name, buf));
    }
    if (extra == 0) return 0;
    if (extra > 3 && len < sizeof names)
        snprintf(names + len, sizeof names - len, " and %d more", extra - 3);
    return sp_fail(err,
                   "%s: unexpected tensor%s %s beside \"" ADAPTER_TENSOR
                   "\": a prompt-tuning adapter for a causal LM holds that tensor only (these "
                   "would change the model, e.g. PEFT's modules_to_save, which softprompt does "
                   "not do)",
                   f->path, extra > 1 ? "s" : "", names);
}

/* prompt_embeddings [num_virtual_tokens x sub, token_dim], floating point, finite as float32;
 * the first num_virtual_tokens rows are the prompt (the encoder's, when sub is 2). */
static int read_tensor(const sp_st_file *f, sp_prompt_file *pf, int token_dim, int prefix_layers,
                       int sub, sp_error *err) {
    int width = prefix_layers ? prefix_layers * 2 * token_dim : token_dim;
    const sp_st_tensor *t = sp_st_find(f, ADAPTER_TENSOR);
    if (!t)
        return sp_fail(err, "%s: no tensor \"" ADAPTER_TENSOR "\" (a PEFT prompt-tuning adapter)",
                       f->path);
    if (t->ndim != 2 || !sp_dtype_is_float(t->dtype))
        return sp_fail(err, "%s: tensor \"" ADAPTER_TENSOR "\" is %d-D %s; expected 2-D floats",
                       f->path, t->ndim, sp_dtype_name(t->dtype));
    if (t->shape[0] < 1 || t->shape[1] < 1 || t->shape[0] > SP_CKPT_PROMPT_MAX_DIM ||
        t->shape[1] > SP_CKPT_PROMPT_MAX_DIM || (size_t)t->numel > SP_CKPT_PROMPT_MAX_ELEMS)
        return sp_fail(err, "%s: tensor \"" ADAPTER_TENSOR "\" has an invalid shape [%lld, %lld]",
                       f->path, (long long)t->shape[0], (long long)t->shape[1]);
    if (t->shape[0] != (int64_t)pf->n_prompt * sub || (token_dim && t->shape[1] != width))
        return sp_fail(err,
                       "%s: tensor \"" ADAPTER_TENSOR
                       "\" is [%lld, %lld] but adapter_config.json says num_virtual_tokens %d%s, "
                       "token_dim %d%s",
                       f->path, (long long)t->shape[0], (long long)t->shape[1], pf->n_prompt,
                       sub > 1 ? " x num_transformer_submodules 2" : "", token_dim,
                       prefix_layers ? " (PREFIX_TUNING: rows of num_layers x 2 x token_dim)" : "");
    /* the encoder's rows: the decoder's copy (sub 2) is not read by PEFT's prompt tuning */
    size_t n = (size_t)pf->n_prompt * (size_t)t->shape[1], cols = (size_t)t->shape[1];
    pf->d = (int)t->shape[1];
    pf->prompt = malloc(n * sizeof(float));
    if (!pf->prompt) return sp_fail(err, "%s: out of memory", f->path);
    sp_convert_to_f32(t->dtype, t->data, pf->prompt, n);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(pf->prompt[i]))
            return sp_fail(err,
                           "%s: tensor \"" ADAPTER_TENSOR
                           "\" element [%zu, %zu] is %g (not finite as float32)",
                           f->path, i / cols, i % cols, (double)pf->prompt[i]);
    return 0;
}

/* A PREFIX_TUNING tensor [P, L 2 token_dim] in PEFT's order becomes pf's prefix [L, 2, P,
 * token_dim] (sp_peft_export_prefix describes the order). */
static int to_prefix(sp_prompt_file *pf, sp_error *err) {
    int L = pf->num_layers, P = pf->n_prompt;
    if (pf->d % (2 * L) != 0)
        return sp_fail(err,
                       "%s: prompt_embeddings rows hold %d values, not num_layers (%d) x 2 x "
                       "token_dim",
                       pf->path, pf->d, L);
    int kv = pf->d / (2 * L);
    float *prefix = malloc((size_t)P * pf->d * sizeof *prefix);
    if (!prefix) return sp_fail(err, "%s: out of memory", pf->path);
    sp__prefix_from_peft(pf->prompt, L, P, kv, prefix);
    free(pf->prompt);
    pf->prompt = NULL, pf->prefix = prefix;
    pf->n_prefix = P, pf->n_layer = L, pf->kv_dim = kv, pf->n_prompt = 0, pf->d = 0;
    return 0;
}

int sp__peft_read(const char *st_path, sp_prompt_file *pf, sp_error *err) {
    char *dir = sp__dir_of(st_path);
    size_t n = dir ? strlen(dir) + 32 : 0;
    pf->config_path = dir ? malloc(n) : NULL;
    if (!pf->config_path) {
        free(dir);
        return sp_fail(err, "%s: out of memory", st_path);
    }
    snprintf(pf->config_path, n, "%s/adapter_config.json", dir);
    free(dir);
    int token_dim = 0, prefix = 0, sub = 1;
    if (read_config(pf->config_path, pf, &token_dim, &prefix, &sub, err)) return -1;
    sp_st_file f;
    if (sp_st_open(&f, st_path, err)) return -1;
    int rc = check_tensor_names(&f, err);
    /* a prefix's rows are [L 2 token_dim] wide */
    if (rc == 0)
        rc = read_tensor(&f, pf, token_dim, prefix ? pf->num_layers : 0, prefix ? 1 : sub, err);
    sp_st_close(&f);
    if (rc == 0 && prefix) rc = to_prefix(pf, err);
    return rc;
}
