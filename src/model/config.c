/* Hugging Face config.json for the supported families (model/family.c maps model_type to
 * sp_arch): GPT-2 ("gpt2") and the Llama family ("llama", "qwen2", "mistral", "qwen3"). Every key
 * the engine depends on is checked, with messages that say what to fix; keys with values the engine
 * does not implement are refused rather than ignored. */
#include "model/config.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "io/fileutil.h"
#include "model/family.h"

static const char *kind(const json_t *v) {
    if (json_is_object(v)) return "object";
    if (json_is_array(v)) return "array";
    if (json_is_string(v)) return "string";
    if (json_is_integer(v)) return "integer";
    if (json_is_real(v)) return "real number";
    if (json_is_boolean(v)) return "boolean";
    return "null";
}

typedef struct reader {
    json_t *root;
    const char *path;
    const char *needs; /* the required keys, for "missing key" messages */
    sp_error *err;
} reader;

/* Reads an integer key in [lo, hi]. Absent (or null when null_ok) leaves *out unchanged. */
static int get_int(const reader *r, const char *key, int required, int null_ok, long long lo,
                   long long hi, int *out) {
    json_t *v = json_object_get(r->root, key);
    if (!v || (null_ok && json_is_null(v))) {
        if (!required) return 0;
        return sp_fail(r->err, "%s: missing key '%s' (%s)", r->path, key, r->needs);
    }
    if (!json_is_integer(v))
        return sp_fail(r->err, "%s: key '%s' is a JSON %s, expected an integer%s", r->path, key,
                       kind(v), null_ok ? " or null" : "");
    long long x = json_integer_value(v);
    if (x < lo || x > hi)
        return sp_fail(r->err, "%s: key '%s' is %lld, expected an integer from %lld to %lld",
                       r->path, key, x, lo, hi);
    *out = (int)x;
    return 0;
}

/* Reads a number key in (lo, hi); absent leaves *out unchanged. */
static int get_num(const reader *r, json_t *obj, const char *key, double lo, double hi,
                   double *out) {
    json_t *v = json_object_get(obj, key);
    if (!v) return 0;
    if (!json_is_number(v))
        return sp_fail(r->err, "%s: key '%s' is a JSON %s, expected a number", r->path, key,
                       kind(v));
    double x = json_number_value(v);
    if (!(x > lo && x < hi))
        return sp_fail(r->err, "%s: key '%s' is %g, expected a number in (%g, %g)", r->path, key, x,
                       lo, hi);
    *out = x;
    return 0;
}

/* A boolean key; absent leaves *out unchanged. */
static int get_bool(const reader *r, const char *key, int *out) {
    json_t *v = json_object_get(r->root, key);
    if (!v) return 0;
    if (!json_is_boolean(v))
        return sp_fail(r->err, "%s: key '%s' is a JSON %s, expected a boolean", r->path, key,
                       kind(v));
    *out = json_is_true(v);
    return 0;
}

/* A boolean key that, if present, must have the value the engine implements. */
static int check_bool(const reader *r, const char *key, int want) {
    int v = want;
    if (get_bool(r, key, &v)) return -1;
    if (v != want)
        return sp_fail(r->err, "%s: %s = %s is unsupported (only %s is implemented)", r->path, key,
                       want ? "false" : "true", want ? "true" : "false");
    return 0;
}

/* A string key that, if present, must be one of the '|'-separated accepted values. */
static int check_string(const reader *r, const char *key, const char *accepted) {
    json_t *v = json_object_get(r->root, key);
    if (!v) return 0;
    if (!json_is_string(v))
        return sp_fail(r->err, "%s: key '%s' is a JSON %s, expected a string", r->path, key,
                       kind(v));
    const char *s = json_string_value(v);
    size_t n = strlen(s);
    for (const char *p = accepted; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, s, n) == 0) return 0;
        p += len + (bar != NULL);
    }
    return sp_fail(r->err, "%s: unsupported %s '%s' (supported: %s)", r->path, key, s, accepted);
}

/* ---- GPT-2 --------------------------------------------------------------------------------- */

static int parse_gpt2(sp_model_config *c, const reader *r) {
    double eps = 1e-5;
    if (check_string(r, "activation_function", "gelu_new|gelu_pytorch_tanh") || /* same tanh form */
        get_int(r, "n_layer", 1, 0, 1, 1024, &c->n_layer) ||
        get_int(r, "n_embd", 1, 0, 1, 65536, &c->d_model) ||
        get_int(r, "n_head", 1, 0, 1, 65536, &c->n_head) ||
        get_int(r, "vocab_size", 1, 0, 1, 1 << 24, &c->vocab_size) ||
        get_int(r, sp__family_of(c->arch)->ctx_key, 1, 0, 1, 1 << 20, &c->n_ctx))
        return -1;
    if (c->d_model % c->n_head != 0)
        return sp_fail(r->err, "%s: n_embd = %d is not divisible by n_head = %d", r->path,
                       c->d_model, c->n_head);
    c->d_ff = 4 * c->d_model; /* HF's meaning of n_inner = null */
    if (get_int(r, "n_inner", 0, 1, 1, 1 << 20, &c->d_ff) ||
        get_num(r, r->root, "layer_norm_epsilon", 0, 1, &eps) ||
        check_bool(r, "scale_attn_weights", 1) ||
        check_bool(r, "scale_attn_by_inverse_layer_idx", 0) ||
        check_bool(r, "reorder_and_upcast_attn", 0))
        return -1;
    c->ln_eps = (float)eps;
    c->tied = 1; /* GPT2LMHeadModel ties unless told otherwise */
    return get_bool(r, "tie_word_embeddings", &c->tied);
}

/* ---- Llama family -------------------------------------------------------------------------- */

/* rope_scaling: null, {"rope_type"|"type": "default"}, "linear" {factor} or "llama3" {factor,
 * low_freq_factor, high_freq_factor, original_max_position_embeddings}. */
static int parse_rope_scaling(sp_model_config *c, const reader *r) {
    json_t *s = json_object_get(r->root, "rope_scaling");
    if (!s || json_is_null(s)) return 0;
    if (!json_is_object(s))
        return sp_fail(r->err, "%s: key 'rope_scaling' is a JSON %s, expected an object or null",
                       r->path, kind(s));
    json_t *t = json_object_get(s, "rope_type");
    if (!t) t = json_object_get(s, "type");
    const char *type = json_string_value(t);
    if (!type) return sp_fail(r->err, "%s: rope_scaling has no string 'rope_type'", r->path);
    if (strcmp(type, "default") == 0) return 0;
    int llama3 = strcmp(type, "llama3") == 0;
    if (!llama3 && strcmp(type, "linear") != 0)
        return sp_fail(r->err,
                       "%s: unsupported rope_scaling type '%s' (supported: default, linear, "
                       "llama3)",
                       r->path, type);
    c->rope_scaling = llama3 ? SP_ROPE_LLAMA3 : SP_ROPE_LINEAR;
    c->rope_factor = 0;
    if (get_num(r, s, "factor", 0, 1e6, &c->rope_factor)) return -1;
    if (c->rope_factor == 0)
        return sp_fail(r->err, "%s: rope_scaling needs a positive 'factor'", r->path);
    if (!llama3) return 0;
    double orig = 0;
    c->rope_low_freq_factor = 1, c->rope_high_freq_factor = 4;
    if (get_num(r, s, "low_freq_factor", 0, 1e6, &c->rope_low_freq_factor) ||
        get_num(r, s, "high_freq_factor", 0, 1e6, &c->rope_high_freq_factor) ||
        get_num(r, s, "original_max_position_embeddings", 0, 1 << 24, &orig))
        return -1;
    if (orig < 1 || orig != floor(orig) || c->rope_high_freq_factor <= c->rope_low_freq_factor)
        return sp_fail(r->err,
                       "%s: llama3 rope_scaling needs an integer original_max_position_embeddings "
                       "and high_freq_factor > low_freq_factor",
                       r->path);
    c->rope_original_ctx = (int)orig;
    return 0;
}

/* Keys of LlamaConfig that the families built on it share, the activation aside. */
static int parse_llama_shape(sp_model_config *c, const reader *r) {
    double eps = 1e-6, theta = 10000;
    if (get_int(r, "num_hidden_layers", 1, 0, 1, 1024, &c->n_layer) ||
        get_int(r, "hidden_size", 1, 0, 1, 65536, &c->d_model) ||
        get_int(r, "intermediate_size", 1, 0, 1, 1 << 20, &c->d_ff) ||
        get_int(r, "num_attention_heads", 1, 0, 1, 65536, &c->n_head) ||
        get_int(r, "vocab_size", 1, 0, 1, 1 << 24, &c->vocab_size) ||
        get_int(r, sp__family_of(c->arch)->ctx_key, 1, 0, 1, 1 << 24, &c->n_ctx))
        return -1;
    c->n_kv_head = c->n_head;
    if (get_int(r, "num_key_value_heads", 0, 1, 1, 65536, &c->n_kv_head)) return -1;
    if (c->n_head % c->n_kv_head != 0)
        return sp_fail(r->err,
                       "%s: num_attention_heads = %d is not a multiple of num_key_value_heads = %d",
                       r->path, c->n_head, c->n_kv_head);
    if (c->d_model % c->n_head != 0 && !json_object_get(r->root, "head_dim") && !c->head_dim)
        return sp_fail(r->err, "%s: hidden_size = %d is not divisible by num_attention_heads = %d",
                       r->path, c->d_model, c->n_head);
    if (!c->head_dim) c->head_dim = c->d_model / c->n_head; /* a family's default comes first */
    if (get_int(r, "head_dim", 0, 1, 2, 4096, &c->head_dim)) return -1;
    if (c->head_dim % 2 != 0)
        return sp_fail(r->err, "%s: head_dim %d is odd; rotary embeddings need an even one",
                       r->path, c->head_dim);
    c->tied = 0;
    if (get_num(r, r->root, "rms_norm_eps", 0, 1, &eps) ||
        get_num(r, r->root, "rope_theta", 0, 1e12, &theta) ||
        get_bool(r, "tie_word_embeddings", &c->tied) || parse_rope_scaling(c, r))
        return -1;
    c->ln_eps = (float)eps;
    c->rope_theta = theta;
    return 0;
}

/* LlamaConfig's keys with SiLU. */
static int parse_llama(sp_model_config *c, const reader *r) {
    return check_string(r, "hidden_act", "silu") || parse_llama_shape(c, r) ? -1 : 0;
}

/* GemmaConfig: the MLP's activation is hidden_activation, and the tanh GELU when that is absent
 * (transformers ignores hidden_act then: Gemma's original configs say "gelu" and mean the tanh
 * approximation, its PR 29402); head_dim defaults to 256; the head is tied unless
 * tie_word_embeddings is false; attention_bias gives q/k/v and o_proj biases. */
static int parse_gemma(sp_model_config *c, const reader *r) {
    json_t *act = json_object_get(r->root, "hidden_activation");
    if (act && !json_is_null(act) ? check_string(r, "hidden_activation", "gelu_pytorch_tanh")
                                  : check_string(r, "hidden_act", "gelu|gelu_pytorch_tanh"))
        return -1;
    if (!json_object_get(r->root, "head_dim")) c->head_dim = 256;
    if (parse_llama_shape(c, r)) return -1;
    int attention_bias = 0;
    c->tied = 1;
    if (get_bool(r, "attention_bias", &attention_bias) ||
        get_bool(r, "tie_word_embeddings", &c->tied))
        return -1;
    c->qkv_bias = c->o_bias = attention_bias;
    return 0;
}

/* A number key in (lo, hi) or null (then *out = 0); absent leaves *out unchanged. */
static int get_num_or_null(const reader *r, const char *key, double lo, double hi, double *out) {
    json_t *v = json_object_get(r->root, key);
    if (v && json_is_null(v)) {
        *out = 0;
        return 0;
    }
    return get_num(r, r->root, key, lo, hi, out);
}

static int check_layer_types(const sp_model_config *c, const reader *r);

/* Gemma2Config on top of Gemma's keys (its defaults when absent, as transformers has them):
 * sliding_window (4096) in every other layer from the first, attn_logit_softcapping (50) and
 * final_logit_softcapping (30), null for none, and query_pre_attn_scalar (256), whose inverse
 * square root scales the scores. */
static int parse_gemma2(sp_model_config *c, const reader *r) {
    double attn_cap = 50, logit_cap = 30, qpas = 256;
    c->sliding_window = 4096, c->window_pattern = 2;
    if (parse_gemma(c, r) ||
        get_int(r, sp__family_of(c->arch)->window_key, 0, 1, 1, 1 << 24, &c->sliding_window) ||
        get_num_or_null(r, "attn_logit_softcapping", 0, 1e6, &attn_cap) ||
        get_num_or_null(r, "final_logit_softcapping", 0, 1e6, &logit_cap) ||
        get_num(r, r->root, "query_pre_attn_scalar", 0, 1e9, &qpas) || check_layer_types(c, r))
        return -1;
    if (json_is_null(json_object_get(r->root, "sliding_window"))) c->sliding_window = 0;
    c->attn_softcap = (float)attn_cap, c->logit_softcap = (float)logit_cap;
    c->query_scale = 1.0 / sqrt(qpas);
    return 0;
}

/* Gemma3TextConfig on top of Gemma's keys (transformers' defaults when absent): sliding_window
 * (4096) in every layer but each sliding_window_pattern-th (6), rope_local_base_freq (10000) for
 * those, rope_theta (1e6) and rope_scaling for the others, query_pre_attn_scalar (256), soft-
 * capping (none by default). */
static int parse_gemma3(sp_model_config *c, const reader *r) {
    double attn_cap = 0, logit_cap = 0, qpas = 256, local = 10000;
    c->sliding_window = 4096, c->window_pattern = 6;
    if (parse_gemma(c, r) ||
        get_int(r, sp__family_of(c->arch)->window_key, 0, 1, 1, 1 << 24, &c->sliding_window) ||
        get_int(r, "sliding_window_pattern", 0, 0, 1, 1 << 20, &c->window_pattern) ||
        get_num_or_null(r, "attn_logit_softcapping", 0, 1e6, &attn_cap) ||
        get_num_or_null(r, "final_logit_softcapping", 0, 1e6, &logit_cap) ||
        get_num(r, r->root, "query_pre_attn_scalar", 0, 1e9, &qpas) ||
        get_num(r, r->root, "rope_local_base_freq", 0, 1e12, &local) || check_layer_types(c, r) ||
        check_bool(r, "use_bidirectional_attention", 0))
        return -1;
    if (json_is_null(json_object_get(r->root, "sliding_window"))) c->sliding_window = 0;
    if (!json_object_get(r->root, "rope_theta")) c->rope_theta = 1000000;
    c->attn_softcap = (float)attn_cap, c->logit_softcap = (float)logit_cap;
    c->query_scale = 1.0 / sqrt(qpas), c->rope_local_theta = local;
    return 0;
}

/* LlamaConfig's optional biases. */
static int parse_llama_biases(sp_model_config *c, const reader *r) {
    int attention_bias = 0;
    if (get_bool(r, "attention_bias", &attention_bias) || get_bool(r, "mlp_bias", &c->mlp_bias))
        return -1;
    c->qkv_bias = c->o_bias = attention_bias;
    return 0;
}

/* Qwen2 always has q/k/v biases and none on o_proj. */
static int parse_qwen2_options(sp_model_config *c, const reader *r) {
    c->qkv_bias = 1;
    return check_bool(r, "use_sliding_window", 0);
}

/* MistralConfig's sliding_window: an integer, or null for none. */
static int parse_mistral_options(sp_model_config *c, const reader *r) {
    c->sliding_window = 0;
    return get_int(r, sp__family_of(c->arch)->window_key, 0, 1, 1, 1 << 24, &c->sliding_window);
}

/* layer_types (newer configs): every entry must be "full_attention" where no layer has a window
 * and say which do otherwise, as window_pattern implies. */
static int check_layer_types(const sp_model_config *c, const reader *r) {
    json_t *v = json_object_get(r->root, "layer_types");
    if (!v || json_is_null(v)) return 0;
    if (!json_is_array(v) || json_array_size(v) != (size_t)c->n_layer)
        return sp_fail(r->err,
                       "%s: key 'layer_types' is not an array of num_hidden_layers = %d "
                       "strings",
                       r->path, c->n_layer);
    for (int l = 0; l < c->n_layer; l++) {
        const char *t = json_string_value(json_array_get(v, (size_t)l));
        const char *want = sp_config_layer_window(c, l) ? "sliding_attention" : "full_attention";
        if (!t || strcmp(t, want) != 0)
            return sp_fail(r->err,
                           "%s: layer_types[%d] is %s%s%s, expected \"%s\" (per-layer attention "
                           "types other than this family's pattern are unsupported)",
                           r->path, l, t ? "\"" : "not a string", t ? t : "", t ? "\"" : "", want);
    }
    return 0;
}

/* Qwen3Config: attention_bias (q/k/v and o_proj), no MLP biases; its sliding window is not
 * implemented. */
static int parse_qwen3_options(sp_model_config *c, const reader *r) {
    int attention_bias = 0;
    if (get_bool(r, "attention_bias", &attention_bias) || check_bool(r, "use_sliding_window", 0) ||
        check_layer_types(c, r))
        return -1;
    c->qkv_bias = c->o_bias = attention_bias;
    return 0;
}

/* ---- GPT-NeoX ------------------------------------------------------------------------------ */

/* The rotary columns of each head: int(head_dim * key's fraction) as transformers takes them
 * (the fraction pct when the key is absent). */
static int get_rotary_dim(sp_model_config *c, const reader *r, const char *key, double pct) {
    if (get_num(r, r->root, key, 0, 2, &pct)) return -1;
    int hd = sp_config_head_dim(c), rot = (int)(hd * pct);
    if (pct > 1)
        return sp_fail(r->err, "%s: key '%s' is %g, expected a number in (0, 1]", r->path, key,
                       pct);
    if (rot < 2 || rot % 2 != 0)
        return sp_fail(r->err,
                       "%s: %s = %g turns %d of head_dim %d columns; rotary embeddings need an "
                       "even number >= 2",
                       r->path, key, pct, rot, hd);
    c->rotary_dim = rot;
    return 0;
}

/* rotary_pct (0.25 when absent) of each head rotates; the base is rotary_emb_base (10000). */
static int parse_neox_rotary(sp_model_config *c, const reader *r) {
    double base = 10000;
    if (get_num(r, r->root, "rotary_emb_base", 0, 1e12, &base) || parse_rope_scaling(c, r))
        return -1;
    c->rope_theta = base;
    return get_rotary_dim(c, r, "rotary_pct", 0.25);
}

/* GPTNeoXConfig: hidden_act gelu (erf) or a tanh GELU, use_parallel_residual (true),
 * attention_bias (true: q/k/v and dense), layer_norm_eps (1e-5), an untied embed_out unless
 * tie_word_embeddings; its defaults when a key is absent. */
static int parse_gpt_neox(sp_model_config *c, const reader *r) {
    double eps = 1e-5;
    int attention_bias = 1;
    if (check_string(r, "hidden_act", "gelu|gelu_new|gelu_pytorch_tanh|gelu_fast") ||
        get_int(r, "num_hidden_layers", 1, 0, 1, 1024, &c->n_layer) ||
        get_int(r, "hidden_size", 1, 0, 1, 65536, &c->d_model) ||
        get_int(r, "intermediate_size", 1, 0, 1, 1 << 20, &c->d_ff) ||
        get_int(r, "num_attention_heads", 1, 0, 1, 65536, &c->n_head) ||
        get_int(r, "vocab_size", 1, 0, 1, 1 << 24, &c->vocab_size) ||
        get_int(r, sp__family_of(c->arch)->ctx_key, 1, 0, 1, 1 << 24, &c->n_ctx))
        return -1;
    if (c->d_model % c->n_head != 0)
        return sp_fail(r->err, "%s: hidden_size = %d is not divisible by num_attention_heads = %d",
                       r->path, c->d_model, c->n_head);
    json_t *act = json_object_get(r->root, "hidden_act");
    c->gelu_exact = !act || strcmp(json_string_value(act), "gelu") == 0;
    c->parallel_residual = 1, c->tied = 0;
    if (get_num(r, r->root, "layer_norm_eps", 0, 1, &eps) ||
        get_bool(r, "use_parallel_residual", &c->parallel_residual) ||
        get_bool(r, "attention_bias", &attention_bias) ||
        get_bool(r, "tie_word_embeddings", &c->tied) || parse_neox_rotary(c, r))
        return -1;
    c->ln_eps = (float)eps;
    c->qkv_bias = c->o_bias = attention_bias;
    return 0;
}

/* Phi3Config: Mistral's keys (sliding_window, null for none) and partial_rotary_factor (1); no
 * biases. rope_scaling longrope / su is refused by parse_rope_scaling, naming the type. */
static int parse_phi3_options(sp_model_config *c, const reader *r) {
    c->sliding_window = 0;
    if (get_int(r, sp__family_of(c->arch)->window_key, 0, 1, 1, 1 << 24, &c->sliding_window))
        return -1;
    return get_rotary_dim(c, r, "partial_rotary_factor", 1.0);
}

/* ---- OPT --------------------------------------------------------------------------------- */

/* OPTConfig's keys: activation_function relu; enable_bias (true) on every linear; the head tied
 * unless tie_word_embeddings is false; do_layer_norm_before (true; false: the post-norm blocks of
 * opt-350m, without a final norm); word_embed_proj_dim (hidden_size; narrower: the embeddings and
 * the head's input that wide, project_in / project_out between them and the blocks). Not
 * implemented, refused by name: no final norm in a pre-norm model (_remove_final_layer_norm),
 * norms without gains (layer_norm_elementwise_affine). */
static int parse_opt(sp_model_config *c, const reader *r) {
    int bias = 1, wed = 0, before = 1;
    if (check_string(r, "activation_function", "relu") ||
        get_int(r, "num_hidden_layers", 1, 0, 1, 1024, &c->n_layer) ||
        get_int(r, "hidden_size", 1, 0, 1, 65536, &c->d_model) ||
        get_int(r, "ffn_dim", 1, 0, 1, 1 << 20, &c->d_ff) ||
        get_int(r, "num_attention_heads", 1, 0, 1, 65536, &c->n_head) ||
        get_int(r, "vocab_size", 1, 0, 1, 1 << 24, &c->vocab_size) ||
        get_int(r, sp__family_of(c->arch)->ctx_key, 1, 0, 1, 1 << 24, &c->n_ctx) ||
        get_int(r, "word_embed_proj_dim", 0, 1, 1, 65536, &wed) ||
        get_bool(r, "do_layer_norm_before", &before) ||
        check_bool(r, "layer_norm_elementwise_affine", 1) || get_bool(r, "enable_bias", &bias))
        return -1;
    /* OPTDecoder: _remove_final_layer_norm only matters with do_layer_norm_before */
    if (before && check_bool(r, "_remove_final_layer_norm", 0)) return -1;
    if (c->d_model % c->n_head != 0)
        return sp_fail(r->err, "%s: hidden_size = %d is not divisible by num_attention_heads = %d",
                       r->path, c->d_model, c->n_head);
    c->d_embed = wed && wed != c->d_model ? wed : 0; /* 0: as wide as the blocks */
    c->post_norm = !before;
    c->qkv_bias = c->o_bias = c->mlp_bias = bias;
    c->pos_offset = 2; /* OPTLearnedPositionalEmbedding: position 0 is the table's row 2 */
    c->ln_eps = 1e-5f, c->tied = 1;
    return get_bool(r, "tie_word_embeddings", &c->tied);
}

/* PhiConfig (Phi-2): hidden_act gelu_new (the tanh GELU), partial_rotary_factor (0.5),
 * layer_norm_eps (1e-5), num_key_value_heads, rope_theta and rope_scaling as Llama's, an untied
 * head unless tie_word_embeddings; qk_layernorm refused by name. */
static int parse_phi(sp_model_config *c, const reader *r) {
    double eps = 1e-5;
    if (check_string(r, "hidden_act", "gelu_new|gelu_pytorch_tanh|gelu_fast") ||
        check_bool(r, "qk_layernorm", 0) || parse_llama_shape(c, r) ||
        get_num(r, r->root, "layer_norm_eps", 0, 1, &eps) ||
        get_rotary_dim(c, r, "partial_rotary_factor", 0.5))
        return -1;
    c->ln_eps = (float)eps;
    return 0;
}

/* ---- BLOOM ------------------------------------------------------------------------------- */

/* An integer under one of two names (BloomConfig's attribute_map: num_hidden_layers is n_layer,
 * num_attention_heads is n_head; n_embed the old name of hidden_size); the first one present. */
static int get_int_either(const reader *r, const char *key, const char *alias, long long lo,
                          long long hi, int *out) {
    if (!json_object_get(r->root, key) && json_object_get(r->root, alias)) key = alias;
    return get_int(r, key, 1, 0, lo, hi, out);
}

/* BloomConfig: the MLP is 4 hidden_size wide whatever n_inner says (BloomMLP), biases on every
 * linear, LayerNorms with layer_norm_epsilon (1e-5), the head tied unless tie_word_embeddings is
 * false, apply_residual_connection_post_layernorm (false). ALiBi has no position table: the
 * context is seq_length when the config has it, else 2048 (the length BLOOM was trained at).
 * pretraining_tp and slow_but_exact only split the same products into slices. */
static int parse_bloom(sp_model_config *c, const reader *r) {
    double eps = 1e-5;
    c->n_ctx = 2048;
    if (get_int_either(r, "n_layer", "num_hidden_layers", 1, 1024, &c->n_layer) ||
        get_int_either(r, "hidden_size", "n_embed", 1, 65536, &c->d_model) ||
        get_int_either(r, "n_head", "num_attention_heads", 1, 65536, &c->n_head) ||
        get_int(r, "vocab_size", 1, 0, 1, 1 << 24, &c->vocab_size) ||
        get_int(r, sp__family_of(c->arch)->ctx_key, 0, 1, 1, 1 << 24, &c->n_ctx) ||
        get_num(r, r->root, "layer_norm_epsilon", 0, 1, &eps))
        return -1;
    if (c->d_model % c->n_head != 0)
        return sp_fail(r->err, "%s: hidden_size = %d is not divisible by n_head = %d", r->path,
                       c->d_model, c->n_head);
    c->d_ff = 4 * c->d_model;
    c->qkv_bias = c->o_bias = c->mlp_bias = 1;
    c->ln_eps = (float)eps, c->tied = 1;
    return get_bool(r, "apply_residual_connection_post_layernorm", &c->residual_from_norm) ||
                   get_bool(r, "tie_word_embeddings", &c->tied)
               ? -1
               : 0;
}

/* ---- BERT, RoBERTa -------------------------------------------------------------------------- */

/* BertConfig / RobertaConfig: an encoder with absolute learned positions (RoBERTa's from
 * pad_token_id + 1, as create_position_ids_from_input_ids counts them), token types, the exact
 * GELU and a tied MLM head. */
static int parse_encoder(sp_model_config *c, const reader *r) {
    double eps = 1e-12;
    int max_pos = 0, pad = c->arch == SP_ARCH_ROBERTA ? 1 : 0;
    c->type_vocab_size = 2;
    if (check_string(r, "hidden_act", "gelu") ||
        check_string(r, "position_embedding_type", "absolute") || check_bool(r, "is_decoder", 0) ||
        check_bool(r, "add_cross_attention", 0) ||
        get_int(r, "num_hidden_layers", 1, 0, 1, 1024, &c->n_layer) ||
        get_int(r, "hidden_size", 1, 0, 1, 65536, &c->d_model) ||
        get_int(r, "intermediate_size", 1, 0, 1, 1 << 20, &c->d_ff) ||
        get_int(r, "num_attention_heads", 1, 0, 1, 65536, &c->n_head) ||
        get_int(r, "vocab_size", 1, 0, 1, 1 << 24, &c->vocab_size) ||
        get_int(r, "max_position_embeddings", 1, 0, 1, 1 << 24, &max_pos) ||
        get_int(r, "type_vocab_size", 0, 0, 1, 1 << 16, &c->type_vocab_size) ||
        get_num(r, r->root, "layer_norm_eps", 0, 1, &eps))
        return -1;
    if (c->arch == SP_ARCH_ROBERTA && get_int(r, "pad_token_id", 0, 0, 0, 1 << 24, &pad)) return -1;
    if (c->d_model % c->n_head != 0)
        return sp_fail(r->err, "%s: hidden_size = %d is not divisible by num_attention_heads = %d",
                       r->path, c->d_model, c->n_head);
    c->pos_offset = c->arch == SP_ARCH_ROBERTA ? pad + 1 : 0;
    if (max_pos <= c->pos_offset)
        return sp_fail(r->err,
                       "%s: max_position_embeddings = %d leaves no position after the first %d "
                       "(pad_token_id %d + 1)",
                       r->path, max_pos, c->pos_offset, pad);
    c->n_ctx = max_pos - c->pos_offset;
    c->ln_eps = (float)eps;
    c->tied = 1;
    return get_bool(r, "tie_word_embeddings", &c->tied);
}

/* ---- T5 ------------------------------------------------------------------------------------ */

/* T5Config: feed_forward_proj "relu" (T5 1.0) or "gated-gelu" (T5 1.1, Flan-T5: T5Config makes
 * its act gelu_new, the tanh GELU); dense_act_fn / is_gated_act, which newer transformers also
 * write, must agree. The encoder and decoder have the same number of blocks (num_decoder_layers
 * other than num_layers: not implemented). */
static int parse_t5_ff(sp_model_config *c, const reader *r) {
    const char *ff = c->mt5 ? "gated-gelu" : "relu"; /* MT5Config's default, T5Config's */
    json_t *v = json_object_get(r->root, "feed_forward_proj");
    if (v && !json_is_string(v))
        return sp_fail(r->err, "%s: key 'feed_forward_proj' is a JSON %s, expected a string",
                       r->path, kind(v));
    if (v) ff = json_string_value(v);
    if (strcmp(ff, "relu") != 0 && strcmp(ff, "gated-gelu") != 0)
        return sp_fail(r->err,
                       "%s: unsupported feed_forward_proj '%s' (supported: relu, gated-gelu)",
                       r->path, ff);
    c->ff_gated = strcmp(ff, "gated-gelu") == 0;
    if (c->mt5 && !c->ff_gated)
        return sp_fail(r->err,
                       "%s: model_type mt5 with feed_forward_proj '%s': not implemented (mT5 is "
                       "T5 1.1: gated-gelu)",
                       r->path, ff);
    if (check_string(r, "dense_act_fn", c->ff_gated ? "gelu_new" : "relu") ||
        check_bool(r, "is_gated_act", c->ff_gated))
        return -1;
    return 0;
}

static int parse_t5(sp_model_config *c, const reader *r) {
    double eps = 1e-6;
    int n_dec = 0, pad = 0;
    c->rel_buckets = 32, c->rel_max_distance = 128, c->n_ctx = 512;
    c->tied = !c->mt5; /* MT5Config unties the head, T5Config ties it */
    if (check_bool(r, "is_encoder_decoder", 1) || parse_t5_ff(c, r) ||
        get_int(r, "num_layers", 1, 0, 1, 1024, &c->n_layer) ||
        get_int(r, "num_decoder_layers", 0, 1, 1, 1024, &n_dec) ||
        get_int(r, "d_model", 1, 0, 1, 65536, &c->d_model) ||
        get_int(r, "d_kv", 1, 0, 1, 65536, &c->head_dim) ||
        get_int(r, "d_ff", 1, 0, 1, 1 << 20, &c->d_ff) ||
        get_int(r, "num_heads", 1, 0, 1, 65536, &c->n_head) ||
        get_int(r, "vocab_size", 1, 0, 1, 1 << 24, &c->vocab_size) ||
        get_int(r, "n_positions", 0, 1, 1, 1 << 24, &c->n_ctx) ||
        get_int(r, "relative_attention_num_buckets", 0, 0, 2, 1 << 16, &c->rel_buckets) ||
        get_int(r, "relative_attention_max_distance", 0, 0, 1, 1 << 24, &c->rel_max_distance) ||
        get_int(r, "pad_token_id", 0, 1, 0, 1 << 24, &pad) ||
        get_num(r, r->root, "layer_norm_epsilon", 0, 1, &eps) ||
        get_bool(r, "tie_word_embeddings", &c->tied))
        return -1;
    c->decoder_start = pad;
    if (get_int(r, "decoder_start_token_id", 0, 1, 0, c->vocab_size - 1, &c->decoder_start))
        return -1;
    if (n_dec && n_dec != c->n_layer)
        return sp_fail(r->err,
                       "%s: num_decoder_layers = %d differs from num_layers = %d: not "
                       "implemented (the encoder and decoder must have as many blocks)",
                       r->path, n_dec, c->n_layer);
    /* the bucket arithmetic needs max_exact = buckets / 4 >= 1 (bidirectional halves) and a
     * max_distance beyond it (its log is the denominator) */
    if (c->rel_buckets < 4 || c->rel_max_distance <= c->rel_buckets / 4)
        return sp_fail(r->err,
                       "%s: relative_attention_num_buckets = %d with "
                       "relative_attention_max_distance = %d: expected at least 4 buckets and a "
                       "distance above a quarter of them",
                       r->path, c->rel_buckets, c->rel_max_distance);
    if (c->decoder_start >= c->vocab_size)
        return sp_fail(r->err,
                       "%s: pad_token_id = %d (the decoder's start) is not below "
                       "vocab_size = %d",
                       r->path, c->decoder_start, c->vocab_size);
    c->n_kv_head = c->n_head;
    c->ln_eps = (float)eps;
    return 0;
}

#define ENCODER_NEEDS                                                                              \
    "BERT/RoBERTa configs need num_hidden_layers, hidden_size, intermediate_size, "                \
    "num_attention_heads, vocab_size, max_position_embeddings"

#define LLAMA_NEEDS                                                                                \
    "Llama-family configs need num_hidden_layers, hidden_size, intermediate_size, "                \
    "num_attention_heads, vocab_size, max_position_embeddings"

/* The family's keys, once model_type has named it. */
static int parse_family(sp_model_config *c, reader *r) {
    switch (c->arch) {
    case SP_ARCH_GPT2:
        r->needs = "GPT-2 configs need n_layer, n_embd, n_head, vocab_size, n_positions";
        return parse_gpt2(c, r);
    case SP_ARCH_LLAMA:
        r->needs = LLAMA_NEEDS;
        return parse_llama(c, r) || parse_llama_biases(c, r) ? -1 : 0;
    case SP_ARCH_QWEN2:
        r->needs = LLAMA_NEEDS;
        return parse_llama(c, r) || parse_qwen2_options(c, r) ? -1 : 0;
    case SP_ARCH_MISTRAL:
        r->needs = LLAMA_NEEDS;
        return parse_llama(c, r) || parse_mistral_options(c, r) || check_layer_types(c, r) ? -1 : 0;
    case SP_ARCH_QWEN3:
        r->needs = LLAMA_NEEDS;
        return parse_llama(c, r) || parse_qwen3_options(c, r) ? -1 : 0;
    case SP_ARCH_GEMMA:
        r->needs = LLAMA_NEEDS;
        return parse_gemma(c, r);
    case SP_ARCH_GEMMA2:
        r->needs = LLAMA_NEEDS;
        return parse_gemma2(c, r);
    case SP_ARCH_GEMMA3:
        r->needs = LLAMA_NEEDS;
        return parse_gemma3(c, r);
    case SP_ARCH_PHI3:
        r->needs = LLAMA_NEEDS;
        return parse_llama(c, r) || parse_phi3_options(c, r) ? -1 : 0;
    case SP_ARCH_PHI:
        r->needs = LLAMA_NEEDS;
        return parse_phi(c, r);
    case SP_ARCH_OPT:
        r->needs = "OPT configs need num_hidden_layers, hidden_size, ffn_dim, num_attention_heads, "
                   "vocab_size, max_position_embeddings";
        return parse_opt(c, r);
    case SP_ARCH_GPT_NEOX:
        r->needs = "GPT-NeoX configs need num_hidden_layers, hidden_size, intermediate_size, "
                   "num_attention_heads, vocab_size, max_position_embeddings";
        return parse_gpt_neox(c, r);
    case SP_ARCH_BERT:
    case SP_ARCH_ROBERTA:
        r->needs = ENCODER_NEEDS;
        return parse_encoder(c, r);
    case SP_ARCH_T5:
        r->needs = "T5 configs need num_layers, d_model, d_kv, d_ff, num_heads, vocab_size";
        return parse_t5(c, r);
    case SP_ARCH_BLOOM:
        r->needs = "BLOOM configs need n_layer, hidden_size, n_head, vocab_size";
        return parse_bloom(c, r);
    }
    return -1;
}

static int parse(sp_model_config *c, json_t *root, const char *path, sp_error *err) {
    reader r = {root, path, "", err};
    if (!json_is_object(root))
        return sp_fail(err, "%s: is a JSON %s, expected an object", path, kind(root));
    json_t *mt = json_object_get(root, "model_type");
    if (mt && !json_is_string(mt))
        return sp_fail(err, "%s: key 'model_type' is a JSON %s, expected a string", path, kind(mt));
    if (!mt && !json_object_get(root, "n_layer") && !json_object_get(root, "n_embd")) {
        /* old GPT-2 configs omit model_type; anything else without it is not one of ours */
        json_t *arch = json_array_get(json_object_get(root, "architectures"), 0);
        return sp_fail(err,
                       "%s: no model_type%s%s%s, and not a GPT-2 config (no n_layer, n_embd): "
                       "not a supported model (supported: %s)",
                       path, json_is_string(arch) ? " (architectures: " : "",
                       json_is_string(arch) ? json_string_value(arch) : "",
                       json_is_string(arch) ? ")" : "", sp__arch_supported_quoted());
    }
    /* old GPT-2 configs omit model_type */
    const char *type = mt ? json_string_value(mt) : sp_arch_model_type(SP_ARCH_GPT2);
    if (sp__model_type_lookup(type, c) != 0)
        return sp_fail(err, "%s: unsupported model_type '%s' (supported: %s, mt5)", path, type,
                       sp__arch_supported_quoted());
    return parse_family(c, &r);
}

int sp__config_load(sp_model_config *cfg, const char *path, sp_error *err) {
    memset(cfg, 0, sizeof *cfg);
    if (sp__check_file_size(path, SP_MAX_CONFIG_FILE_BYTES, "config", err) != 0) return -1;
    FILE *fp = fopen(path, "rb");
    if (!fp) return sp_fail(err, "%s: cannot open: %s", path, strerror(errno));
    json_error_t je;
    json_t *root = json_loadf(fp, JSON_REJECT_DUPLICATES, &je);
    fclose(fp);
    if (!root)
        return sp_fail(err, "%s: invalid JSON: %s (line %d, column %d)", path, je.text, je.line,
                       je.column);
    int rc = parse(cfg, root, path, err);
    json_decref(root);
    if (rc != 0) memset(cfg, 0, sizeof *cfg);
    return rc;
}
