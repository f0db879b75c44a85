/* Random-weight model directories of every family in Hugging Face's layout (config.json +
 * safetensors), the tensors from the family's table (model/family.c).
 *
 * Values come from one RNG stream consumed in the order of HF's state dict, so a given seed gives
 * the same weights whatever the dtype or shard count. Only one tensor is in memory at a time:
 * each is generated, converted to the output dtype in place and streamed into its shard. */
#include "softprompt/model_init.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/family.h"
#include "io/fileutil.h"
#include "softprompt/rng.h"
#include "softprompt/safetensors.h"
#include "util/path.h"

typedef struct plan_tensor {
    char name[96];
    int ndim;
    int64_t shape[2];
    sp__init_kind kind;
    int64_t numel;
    int shard;
} plan_tensor;

void sp_init_options_default(sp_init_options *o) {
    memset(o, 0, sizeof *o);
    o->cfg = (sp_model_config){.n_layer = 12,
                               .d_model = 768,
                               .n_head = 12,
                               .d_ff = 3072,
                               .vocab_size = 50257,
                               .n_ctx = 1024,
                               .ln_eps = 1e-5f,
                               .tied = 1,
                               .arch = SP_ARCH_GPT2};
    o->dtype = SP_DTYPE_F32;
    o->n_shards = 1;
    o->seed = 0;
    o->std = 0.02f;
}

/* ---- validation and the tensor plan ------------------------------------------------------ */

/* The rows of the position table before position 0 as the family's config implies them: OPT's 2,
 * RoBERTa's pad_token_id + 1 (at least 1), none elsewhere. */
static int check_pos_offset(const char *dir, const sp_model_config *c, sp_error *err) {
    int lo = c->arch == SP_ARCH_OPT ? 2 : c->arch == SP_ARCH_ROBERTA ? 1 : 0;
    int hi = c->arch == SP_ARCH_ROBERTA ? 1 << 20 : lo;
    if (c->pos_offset < lo || c->pos_offset > hi)
        return sp_fail(err, "%s: pos_offset = %d, expected %d for %s%s", dir, c->pos_offset, lo,
                       sp_arch_model_type(c->arch), lo == hi ? "" : " or more");
    return 0;
}

static int check_options(const char *dir, const sp_init_options *o, int n_tensors, sp_error *err) {
    const sp_model_config *c = &o->cfg;
    const sp__family *f = sp__family_of(c->arch);
    const struct {
        const char *name;
        int value, max;
    } dims[] = {{"n_layer", c->n_layer, 1024},          {"d_model", c->d_model, 65536},
                {"n_head", c->n_head, 65536},           {"d_ff", c->d_ff, 1 << 20},
                {"vocab_size", c->vocab_size, 1 << 24}, {"n_ctx", c->n_ctx, 1 << 20}};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i].value < 1 || dims[i].value > dims[i].max)
            return sp_fail(err, "%s: %s = %d, expected 1 to %d", dir, dims[i].name, dims[i].value,
                           dims[i].max);
    if (c->d_model % c->n_head != 0 && !(f->gqa && c->head_dim > 0))
        return sp_fail(err, "%s: d_model = %d is not divisible by n_head = %d", dir, c->d_model,
                       c->n_head);
    if (f->gqa && (c->n_head % sp_config_kv_heads(c) != 0 || sp_config_head_dim(c) % 2))
        return sp_fail(err,
                       "%s: n_head = %d must be a multiple of n_kv_head = %d and head_dim = %d "
                       "even",
                       dir, c->n_head, sp_config_kv_heads(c), sp_config_head_dim(c));
    if (c->arch == SP_ARCH_T5 && sp_config_kv_heads(c) != c->n_head)
        return sp_fail(err, "%s: n_kv_head = %d: t5 has no grouped-query heads (n_head %d)", dir,
                       sp_config_kv_heads(c), c->n_head);
    int rot = sp_config_rotary_dim(c);
    if (rot % 2 != 0 || rot > sp_config_head_dim(c))
        return sp_fail(err, "%s: rotary_dim = %d, expected an even number up to head_dim = %d", dir,
                       rot, sp_config_head_dim(c));
    if (!(c->ln_eps > 0 && c->ln_eps < 1))
        return sp_fail(err, "%s: ln_eps = %g, expected a number in (0, 1)", dir, c->ln_eps);
    if (check_pos_offset(dir, c, err)) return -1;
    if (c->arch != SP_ARCH_OPT && (c->post_norm || c->d_embed))
        return sp_fail(err, "%s: post_norm = %d, d_embed = %d: only opt has them", dir,
                       c->post_norm, c->d_embed);
    if (c->d_embed < 0 || c->d_embed > 65536)
        return sp_fail(err, "%s: d_embed = %d, expected 0 (d_model) to 65536", dir, c->d_embed);
    if (c->arch == SP_ARCH_BLOOM && c->d_ff != 4 * c->d_model) /* BloomMLP: no key for it */
        return sp_fail(err, "%s: d_ff = %d, expected 4 d_model = %d for bloom", dir, c->d_ff,
                       4 * c->d_model);
    if (o->prefix && !f->name_prefix)
        return sp_fail(err, "%s: the transformer. prefix is GPT-2's naming; %s files use model.*",
                       dir, f->model_type);
    if (o->dtype != SP_DTYPE_F32 && o->dtype != SP_DTYPE_F16 && o->dtype != SP_DTYPE_BF16)
        return sp_fail(err, "%s: dtype must be F32, F16 or BF16", dir);
    if (o->n_shards < 1 || o->n_shards > n_tensors || o->n_shards > 99999)
        return sp_fail(err, "%s: n_shards = %d, expected 1 to %d (one tensor per shard at most)",
                       dir, o->n_shards, n_tensors < 99999 ? n_tensors : 99999);
    if (!(o->std >= 0 && isfinite(o->std)))
        return sp_fail(err, "%s: std = %g, expected a finite number >= 0", dir, o->std);
    return 0;
}

typedef struct plan_ctx {
    plan_tensor *p;
    int n;
    const sp_init_options *o;
} plan_ctx;

/* A present row of the family's table, named as HF saves it: the optional base-model prefix
 * (GPT-2's transformer.) on everything but the LM head. */
static int plan_row(void *ctx, const sp__tensor_desc *row, int layer) {
    plan_ctx *k = ctx;
    const sp_model_config *c = &k->o->cfg;
    const sp__family *f = sp__family_for(c);
    if (!sp__tensor_present(row, c)) return 0;
    plan_tensor *t = &k->p[k->n++];
    char name[96];
    sp__tensor_name(row, layer, name, sizeof name);
    int prefixed = k->o->prefix && f->name_prefix && row->role != SP_ROLE_LM_HEAD;
    snprintf(t->name, sizeof t->name, "%s%s", prefixed ? f->name_prefix : "", name);
    t->ndim = sp__tensor_shape(row, c, t->shape);
    t->numel = t->ndim == 1 ? t->shape[0] : t->shape[0] * t->shape[1];
    t->kind = row->init;
    return 0;
}

/* The tensors in the order of HF's state dict (the LM head only when untied). */
static int plan_tensors(plan_tensor *p, const sp_init_options *o) {
    plan_ctx k = {p, 0, o};
    sp__tensors_walk(sp__family_for(&o->cfg), o->cfg.n_layer, SP_ORDER_HF, plan_row, &k);
    return k.n;
}

/* Splits the tensors, in order, into n_shards runs of roughly equal bytes (none empty). */
static void assign_shards(plan_tensor *p, int n, int n_shards) {
    int64_t total = 0, cum = 0;
    for (int i = 0; i < n; i++) total += p[i].numel;
    int s = 0;
    for (int i = 0; i < n; i++) {
        p[i].shard = s;
        cum += p[i].numel;
        int tensors_left = n - i - 1, shards_left = n_shards - s - 1;
        int full = cum * n_shards >= total * (s + 1);
        if (shards_left > 0 && (full || tensors_left == shards_left)) s++;
    }
}

/* ---- the directory ------------------------------------------------------------------------- */

static int mkdir_p(const char *dir, sp_error *err) {
    char *p = strdup(dir);
    if (!p) return sp_fail(err, "%s: out of memory", dir);
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0') continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            int e = errno;
            sp_fail(err, "%s: cannot create directory %s: %s", dir, p, strerror(e));
            free(p);
            return -1;
        }
        if (!(*s = c)) break;
    }
    free(p);
    return 0;
}

static int prepare_dir(const char *dir, int force, sp_error *err) {
    struct stat st;
    if (stat(dir, &st) != 0) {
        if (errno != ENOENT) return sp_fail(err, "%s: cannot stat: %s", dir, strerror(errno));
        return mkdir_p(dir, err);
    }
    if (!S_ISDIR(st.st_mode)) return sp_fail(err, "%s: exists and is not a directory", dir);
    DIR *d = opendir(dir);
    if (!d) return sp_fail(err, "%s: cannot read directory: %s", dir, strerror(errno));
    int entries = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) entries++;
    closedir(d);
    if (entries && !force)
        return sp_fail(err, "%s: directory is not empty (use --force to write into it anyway)",
                       dir);
    return 0;
}

/* ---- weights ------------------------------------------------------------------------------- */

/* Fills buf[numel] with t's initial values and converts them to dtype in place (the 16-bit
 * values are packed at the start of the same buffer). Returns the byte count. */
static size_t generate(const plan_tensor *t, const sp_init_options *o, sp_rng *rng, float *buf) {
    double std = o->std;
    if (t->kind == SP_INIT_PROJ) std /= sqrt(2.0 * o->cfg.n_layer); /* GPT-2 only */
    for (int64_t i = 0; i < t->numel; i++) {
        switch (t->kind) {
        case SP_INIT_NORMAL:
        case SP_INIT_PROJ:
            buf[i] = (float)(std * sp_rng_normal(rng));
            break;
        case SP_INIT_GAIN:
            buf[i] = o->random_norms ? (float)(1.0 + 0.1 * sp_rng_normal(rng)) : 1;
            break;
        case SP_INIT_GAIN_OFFSET:
            buf[i] = o->random_norms ? (float)(0.1 * sp_rng_normal(rng)) : 0;
            break;
        case SP_INIT_BIAS:
            buf[i] = o->random_norms ? (float)(0.05 * sp_rng_normal(rng)) : 0;
            break;
        case SP_INIT_NONE: /* buffers are not planned */
            buf[i] = 0;
            break;
        }
    }
    if (o->dtype == SP_DTYPE_F32) return (size_t)t->numel * 4;
    /* Element i moves from bytes [4i, 4i+4) to [2i, 2i+2): never over an unread float. */
    for (int64_t i = 0; i < t->numel; i++) {
        uint16_t h = o->dtype == SP_DTYPE_F16 ? sp_f32_to_f16(buf[i]) : sp_f32_to_bf16(buf[i]);
        memcpy((char *)buf + 2 * i, &h, 2);
    }
    return (size_t)t->numel * 2;
}

static int write_shard(const char *path, const plan_tensor *p, int n, int shard,
                       const sp_init_options *o, sp_rng *rng, float *buf, sp_error *err) {
    sp_st_out *outs = calloc((size_t)n, sizeof *outs);
    if (!outs) return sp_fail(err, "%s: out of memory", path);
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (p[i].shard != shard) continue;
        outs[k] = (sp_st_out){.name = p[i].name, .dtype = o->dtype, .ndim = p[i].ndim};
        memcpy(outs[k].shape, p[i].shape, sizeof p[i].shape);
        k++;
    }
    static const char *const meta[] = {"format", "pt"};
    sp_st_writer *w = sp_st_writer_open(path, outs, k, meta, 1, err);
    free(outs);
    if (!w) return -1;
    for (int i = 0; i < n; i++) {
        if (p[i].shard != shard) continue;
        size_t nbytes = generate(&p[i], o, rng, buf);
        if (sp_st_writer_put(w, buf, nbytes, err) != 0) return -1;
    }
    return sp_st_writer_commit(w, err);
}

/* Writes the index HF uses for sharded checkpoints: total_size and tensor -> file. */
static int write_index(const char *dir, const plan_tensor *p, int n, const sp_init_options *o,
                       sp_error *err) {
    json_t *wm = json_object();
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        char file[64];
        snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", p[i].shard + 1, o->n_shards);
        json_object_set_new(wm, p[i].name, json_string(file));
        total += p[i].numel * (int64_t)sp_dtype_size(o->dtype);
    }
    json_t *root =
        json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)total, "weight_map", wm);
    char *s = root ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    char *path = sp__path_join(dir, "model.safetensors.index.json");
    int rc = s && path ? sp__write_file_atomic(path, s, strlen(s), err)
                       : sp_fail(err, "%s: out of memory", dir);
    free(s), free(path);
    return rc;
}

static int write_weights(const char *dir, plan_tensor *p, int n, const sp_init_options *o,
                         sp_error *err) {
    int64_t max_numel = 1;
    for (int i = 0; i < n; i++)
        if (p[i].numel > max_numel) max_numel = p[i].numel;
    float *buf = malloc((size_t)max_numel * sizeof *buf);
    if (!buf)
        return sp_fail(err, "%s: out of memory for a %lld-element tensor", dir,
                       (long long)max_numel);
    sp_rng rng;
    sp_rng_seed(&rng, o->seed);
    assign_shards(p, n, o->n_shards);
    int rc = 0;
    for (int s = 0; s < o->n_shards && rc == 0; s++) {
        char name[64];
        if (o->n_shards == 1)
            snprintf(name, sizeof name, "model.safetensors");
        else
            snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, o->n_shards);
        char *path = sp__path_join(dir, name);
        rc = path ? write_shard(path, p, n, s, o, &rng, buf, err)
                  : sp_fail(err, "%s: out of memory", dir);
        free(path);
    }
    free(buf);
    if (rc == 0 && o->n_shards > 1) rc = write_index(dir, p, n, o, err);
    return rc;
}

/* ---- config.json --------------------------------------------------------------------------- */

/* The shortest decimal that reads back as f, so config.json says 0.02, not 0.0199999996. */
static json_t *short_real(float f) {
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if (strtof(buf, NULL) == f) break;
    }
    return json_real(strtod(buf, NULL));
}

static const char *torch_dtype(sp_dtype dt) {
    return dt == SP_DTYPE_F16 ? "float16" : dt == SP_DTYPE_BF16 ? "bfloat16" : "float32";
}

static json_t *rope_scaling_json(const sp_model_config *c) {
    if (c->rope_scaling == SP_ROPE_NONE) return json_null();
    if (c->rope_scaling == SP_ROPE_LINEAR)
        return json_pack("{s:s, s:f}", "rope_type", "linear", "factor", c->rope_factor);
    return json_pack("{s:f, s:f, s:f, s:i, s:s}", "factor", c->rope_factor, "high_freq_factor",
                     c->rope_high_freq_factor, "low_freq_factor", c->rope_low_freq_factor,
                     "original_max_position_embeddings", c->rope_original_ctx, "rope_type",
                     "llama3");
}

/* rotary_pct for rotary_dim of head_dim: rot / hd rounded up at the 9th decimal (the digits
 * config.json keeps), so that int(hd * pct), as transformers computes the rotary columns, is
 * rot (hd < 1e9). */
static double rotary_pct(int rot, int hd) {
    return rot == hd ? 1.0 : ceil((double)rot / hd * 1e9) / 1e9;
}

/* The keys only some of the Llama family's configs have. */
enum {
    KEY_LLAMA_BIASES = 1,   /* attention_bias, mlp_bias (Llama) */
    KEY_QWEN2_WINDOW = 2,   /* use_sliding_window false (Qwen2, Qwen3) */
    KEY_ATTENTION_BIAS = 4, /* attention_bias (Qwen3) */
    KEY_SLIDING_WINDOW = 8, /* sliding_window, an integer or null (Mistral) */
    KEY_GELU = 16,          /* hidden_act, hidden_activation gelu_pytorch_tanh; head_dim (Gemma) */
    KEY_GEMMA2 = 32,        /* soft-capping, query_pre_attn_scalar (Gemma 2) */
    KEY_GEMMA3 = 64,        /* sliding_window_pattern, rope_local_base_freq (Gemma 3) */
    KEY_PHI3 = 128,         /* partial_rotary_factor, original_max_position_embeddings (Phi-3) */
    KEY_PHI = 256, /* partial_rotary_factor, layer_norm_eps, gelu_new, qk_layernorm (Phi-2) */
};

/* Keys as transformers writes them for LlamaForCausalLM and the families built on it (sorted);
 * keys: which of the optional ones the family has. */
static json_t *llama_config(const sp_init_options *o, int keys) {
    const sp_model_config *c = &o->cfg;
    json_t *r = json_object();
    json_object_set_new(r, "architectures", json_pack("[s]", sp__family_of(c->arch)->hf_class));
    if (keys & (KEY_LLAMA_BIASES | KEY_ATTENTION_BIAS))
        json_object_set_new(r, "attention_bias", json_boolean(c->o_bias));
    json_object_set_new(r, "attention_dropout", json_real(0.0));
    json_object_set_new(r, "bos_token_id", json_integer(c->vocab_size > 1 ? 1 : 0));
    json_object_set_new(r, "eos_token_id", json_integer(c->vocab_size > 2 ? 2 : 0));
    if (c->head_dim > 0 || (keys & KEY_GELU))
        json_object_set_new(r, "head_dim", json_integer(sp_config_head_dim(c)));
    json_object_set_new(r, "hidden_act",
                        json_string(keys & KEY_PHI    ? "gelu_new"
                                    : keys & KEY_GELU ? "gelu_pytorch_tanh"
                                                      : "silu"));
    if (keys & KEY_PHI) {
        json_object_set_new(r, "layer_norm_eps", short_real(c->ln_eps));
        json_object_set_new(r, "partial_rotary_factor",
                            json_real(rotary_pct(sp_config_rotary_dim(c), sp_config_head_dim(c))));
        json_object_set_new(r, "qk_layernorm", json_false());
    }
    if (keys & KEY_GELU)
        json_object_set_new(r, "hidden_activation", json_string("gelu_pytorch_tanh"));
    json_object_set_new(r, "hidden_size", json_integer(c->d_model));
    json_object_set_new(r, "initializer_range", short_real(o->std));
    json_object_set_new(r, "intermediate_size", json_integer(c->d_ff));
    json_object_set_new(r, "max_position_embeddings", json_integer(c->n_ctx));
    if (keys & KEY_LLAMA_BIASES) json_object_set_new(r, "mlp_bias", json_boolean(c->mlp_bias));
    if (keys & KEY_PHI3) {
        json_object_set_new(r, "original_max_position_embeddings", json_integer(c->n_ctx));
        json_object_set_new(r, "partial_rotary_factor",
                            json_real(rotary_pct(sp_config_rotary_dim(c), sp_config_head_dim(c))));
    }
    if (keys & KEY_GEMMA2) {
        json_object_set_new(r, "attn_logit_softcapping",
                            c->attn_softcap > 0 ? short_real(c->attn_softcap) : json_null());
        json_object_set_new(r, "final_logit_softcapping",
                            c->logit_softcap > 0 ? short_real(c->logit_softcap) : json_null());
        json_object_set_new(r, "query_pre_attn_scalar",
                            json_real(c->query_scale > 0 ? 1.0 / (c->query_scale * c->query_scale)
                                                         : sp_config_head_dim(c)));
    }
    json_object_set_new(r, "model_type", json_string(sp_arch_model_type(c->arch)));
    json_object_set_new(r, "num_attention_heads", json_integer(c->n_head));
    json_object_set_new(r, "num_hidden_layers", json_integer(c->n_layer));
    json_object_set_new(r, "num_key_value_heads", json_integer(sp_config_kv_heads(c)));
    json_object_set_new(r, "rms_norm_eps", short_real(c->ln_eps));
    json_object_set_new(r, "rope_scaling", rope_scaling_json(c));
    if (keys & KEY_GEMMA3) {
        json_object_set_new(r, "rope_local_base_freq", json_real(c->rope_local_theta));
        json_object_set_new(r, "sliding_window_pattern", json_integer(c->window_pattern));
    }
    json_object_set_new(r, "rope_theta", json_real(c->rope_theta));
    if (keys & KEY_SLIDING_WINDOW)
        json_object_set_new(r, "sliding_window",
                            c->sliding_window > 0 ? json_integer(c->sliding_window) : json_null());
    json_object_set_new(r, "tie_word_embeddings", json_boolean(c->tied));
    json_object_set_new(r, "torch_dtype", json_string(torch_dtype(o->dtype)));
    if (keys & KEY_QWEN2_WINDOW) json_object_set_new(r, "use_sliding_window", json_false());
    json_object_set_new(r, "use_cache", json_true());
    json_object_set_new(r, "vocab_size", json_integer(c->vocab_size));
    return r;
}

/* Keys as transformers writes them for GPT2LMHeadModel (sorted). */
static json_t *gpt2_config(const sp_init_options *o) {
    const sp_model_config *c = &o->cfg;
    json_t *r = json_object();
    json_object_set_new(r, "activation_function", json_string("gelu_new"));
    json_object_set_new(r, "architectures", json_pack("[s]", sp__family_of(c->arch)->hf_class));
    json_object_set_new(r, "attn_pdrop", short_real(0.1f));
    json_object_set_new(r, "bos_token_id", json_integer(c->vocab_size - 1));
    json_object_set_new(r, "embd_pdrop", short_real(0.1f));
    json_object_set_new(r, "eos_token_id", json_integer(c->vocab_size - 1));
    json_object_set_new(r, "initializer_range", short_real(o->std));
    json_object_set_new(r, "layer_norm_epsilon", short_real(c->ln_eps));
    json_object_set_new(r, "model_type", json_string(sp_arch_model_type(c->arch)));
    json_object_set_new(r, "n_ctx", json_integer(c->n_ctx));
    json_object_set_new(r, "n_embd", json_integer(c->d_model));
    json_object_set_new(r, "n_head", json_integer(c->n_head));
    json_object_set_new(r, "n_inner",
                        c->d_ff == 4 * c->d_model ? json_null() : json_integer(c->d_ff));
    json_object_set_new(r, "n_layer", json_integer(c->n_layer));
    json_object_set_new(r, "n_positions", json_integer(c->n_ctx));
    json_object_set_new(r, "reorder_and_upcast_attn", json_false());
    json_object_set_new(r, "resid_pdrop", short_real(0.1f));
    json_object_set_new(r, "scale_attn_by_inverse_layer_idx", json_false());
    json_object_set_new(r, "scale_attn_weights", json_true());
    if (!c->tied) json_object_set_new(r, "tie_word_embeddings", json_false());
    json_object_set_new(r, "torch_dtype", json_string(torch_dtype(o->dtype)));
    json_object_set_new(r, "use_cache", json_true());
    json_object_set_new(r, "vocab_size", json_integer(c->vocab_size));
    return r;
}

/* Keys as transformers writes them for GPTNeoXForCausalLM (sorted). */
static json_t *neox_config(const sp_init_options *o) {
    const sp_model_config *c = &o->cfg;
    json_t *r = json_object();
    json_object_set_new(r, "architectures", json_pack("[s]", sp__family_of(c->arch)->hf_class));
    json_object_set_new(r, "attention_bias", json_boolean(c->qkv_bias));
    json_object_set_new(r, "attention_dropout", json_real(0.0));
    json_object_set_new(r, "bos_token_id", json_integer(0));
    json_object_set_new(r, "eos_token_id", json_integer(c->vocab_size > 2 ? 2 : 0));
    json_object_set_new(r, "hidden_act", json_string(c->gelu_exact ? "gelu" : "gelu_new"));
    json_object_set_new(r, "hidden_dropout", json_real(0.0));
    json_object_set_new(r, "hidden_size", json_integer(c->d_model));
    json_object_set_new(r, "initializer_range", short_real(o->std));
    json_object_set_new(r, "intermediate_size", json_integer(c->d_ff));
    json_object_set_new(r, "layer_norm_eps", short_real(c->ln_eps));
    json_object_set_new(r, "max_position_embeddings", json_integer(c->n_ctx));
    json_object_set_new(r, "model_type", json_string(sp_arch_model_type(c->arch)));
    json_object_set_new(r, "num_attention_heads", json_integer(c->n_head));
    json_object_set_new(r, "num_hidden_layers", json_integer(c->n_layer));
    json_object_set_new(r, "rope_scaling", rope_scaling_json(c));
    json_object_set_new(r, "rotary_emb_base", json_real(c->rope_theta));
    json_object_set_new(r, "rotary_pct",
                        json_real(rotary_pct(sp_config_rotary_dim(c), sp_config_head_dim(c))));
    json_object_set_new(r, "tie_word_embeddings", json_boolean(c->tied));
    json_object_set_new(r, "torch_dtype", json_string(torch_dtype(o->dtype)));
    json_object_set_new(r, "use_cache", json_true());
    json_object_set_new(r, "use_parallel_residual", json_boolean(c->parallel_residual));
    json_object_set_new(r, "vocab_size", json_integer(c->vocab_size));
    return r;
}

/* Keys as transformers writes them for OPTForCausalLM (sorted). */
static json_t *opt_config(const sp_init_options *o) {
    const sp_model_config *c = &o->cfg;
    json_t *r = json_object();
    json_object_set_new(r, "_remove_final_layer_norm", json_false());
    json_object_set_new(r, "activation_dropout", json_real(0.0));
    json_object_set_new(r, "activation_function", json_string("relu"));
    json_object_set_new(r, "architectures", json_pack("[s]", sp__family_of(c->arch)->hf_class));
    json_object_set_new(r, "attention_dropout", json_real(0.0));
    json_object_set_new(r, "bos_token_id", json_integer(c->vocab_size > 2 ? 2 : 0));
    json_object_set_new(r, "do_layer_norm_before", json_boolean(!c->post_norm));
    json_object_set_new(r, "dropout", short_real(0.1f));
    json_object_set_new(r, "enable_bias", json_boolean(c->qkv_bias));
    json_object_set_new(r, "eos_token_id", json_integer(c->vocab_size > 2 ? 2 : 0));
    json_object_set_new(r, "ffn_dim", json_integer(c->d_ff));
    json_object_set_new(r, "hidden_size", json_integer(c->d_model));
    json_object_set_new(r, "init_std", short_real(o->std));
    json_object_set_new(r, "layer_norm_elementwise_affine", json_true());
    json_object_set_new(r, "layerdrop", json_real(0.0));
    json_object_set_new(r, "max_position_embeddings", json_integer(c->n_ctx));
    json_object_set_new(r, "model_type", json_string(sp_arch_model_type(c->arch)));
    json_object_set_new(r, "num_attention_heads", json_integer(c->n_head));
    json_object_set_new(r, "num_hidden_layers", json_integer(c->n_layer));
    json_object_set_new(r, "pad_token_id", json_integer(c->vocab_size > 1 ? 1 : 0));
    json_object_set_new(r, "tie_word_embeddings", json_boolean(c->tied));
    json_object_set_new(r, "torch_dtype", json_string(torch_dtype(o->dtype)));
    json_object_set_new(r, "use_cache", json_true());
    json_object_set_new(r, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(r, "word_embed_proj_dim", json_integer(sp_config_embed_dim(c)));
    return r;
}

/* Keys as transformers writes them for BertForMaskedLM / RobertaForMaskedLM (sorted). */
static json_t *encoder_config(const sp_init_options *o) {
    const sp_model_config *c = &o->cfg;
    int roberta = c->arch == SP_ARCH_ROBERTA, pad = roberta ? c->pos_offset - 1 : 0;
    json_t *r = json_object();
    json_object_set_new(r, "architectures", json_pack("[s]", sp__family_of(c->arch)->hf_class));
    json_object_set_new(r, "attention_probs_dropout_prob", short_real(0.1f));
    if (roberta) json_object_set_new(r, "bos_token_id", json_integer(0));
    json_object_set_new(r, "classifier_dropout", json_null());
    if (roberta) json_object_set_new(r, "eos_token_id", json_integer(2));
    json_object_set_new(r, "hidden_act", json_string("gelu"));
    json_object_set_new(r, "hidden_dropout_prob", short_real(0.1f));
    json_object_set_new(r, "hidden_size", json_integer(c->d_model));
    json_object_set_new(r, "initializer_range", short_real(o->std));
    json_object_set_new(r, "intermediate_size", json_integer(c->d_ff));
    json_object_set_new(r, "layer_norm_eps", short_real(c->ln_eps));
    json_object_set_new(r, "max_position_embeddings", json_integer(c->n_ctx + c->pos_offset));
    json_object_set_new(r, "model_type", json_string(sp_arch_model_type(c->arch)));
    json_object_set_new(r, "num_attention_heads", json_integer(c->n_head));
    json_object_set_new(r, "num_hidden_layers", json_integer(c->n_layer));
    json_object_set_new(r, "pad_token_id", json_integer(pad));
    json_object_set_new(r, "position_embedding_type", json_string("absolute"));
    if (!c->tied) json_object_set_new(r, "tie_word_embeddings", json_false());
    json_object_set_new(r, "torch_dtype", json_string(torch_dtype(o->dtype)));
    json_object_set_new(r, "type_vocab_size", json_integer(c->type_vocab_size));
    json_object_set_new(r, "use_cache", json_true());
    json_object_set_new(r, "vocab_size", json_integer(c->vocab_size));
    return r;
}

/* Keys as transformers writes them for T5ForConditionalGeneration (sorted; n_positions as the
 * published t5-small keeps it); MT5ForConditionalGeneration's names with cfg.mt5. */
static json_t *t5_config(const sp_init_options *o) {
    const sp_model_config *c = &o->cfg;
    json_t *r = json_object();
    json_object_set_new(r, "architectures", json_pack("[s]", sp__family_for(c)->hf_class));
    json_object_set_new(r, "classifier_dropout", json_real(0.0));
    json_object_set_new(r, "d_ff", json_integer(c->d_ff));
    json_object_set_new(r, "d_kv", json_integer(sp_config_head_dim(c)));
    json_object_set_new(r, "d_model", json_integer(c->d_model));
    json_object_set_new(r, "decoder_start_token_id", json_integer(c->decoder_start));
    json_object_set_new(r, "dense_act_fn", json_string(c->ff_gated ? "gelu_new" : "relu"));
    json_object_set_new(r, "dropout_rate", short_real(0.1f));
    json_object_set_new(r, "eos_token_id", json_integer(c->vocab_size > 1 ? 1 : 0));
    json_object_set_new(r, "feed_forward_proj", json_string(c->ff_gated ? "gated-gelu" : "relu"));
    json_object_set_new(r, "initializer_factor", json_real(1.0));
    json_object_set_new(r, "is_encoder_decoder", json_true());
    json_object_set_new(r, "is_gated_act", json_boolean(c->ff_gated));
    json_object_set_new(r, "layer_norm_epsilon", short_real(c->ln_eps));
    json_object_set_new(r, "model_type", json_string(sp__family_for(c)->model_type));
    json_object_set_new(r, "n_positions", json_integer(c->n_ctx));
    json_object_set_new(r, "num_decoder_layers", json_integer(c->n_layer));
    json_object_set_new(r, "num_heads", json_integer(c->n_head));
    json_object_set_new(r, "num_layers", json_integer(c->n_layer));
    json_object_set_new(r, "pad_token_id", json_integer(c->decoder_start));
    json_object_set_new(r, "relative_attention_max_distance", json_integer(c->rel_max_distance));
    json_object_set_new(r, "relative_attention_num_buckets", json_integer(c->rel_buckets));
    json_object_set_new(r, "tie_word_embeddings", json_boolean(c->tied));
    json_object_set_new(r, "torch_dtype", json_string(torch_dtype(o->dtype)));
    json_object_set_new(r, "use_cache", json_true());
    json_object_set_new(r, "vocab_size", json_integer(c->vocab_size));
    return r;
}

/* Keys as transformers writes them for BloomForCausalLM (sorted); seq_length is the context
 * softprompt reads (BloomConfig has no key of its own). */
static json_t *bloom_config(const sp_init_options *o) {
    const sp_model_config *c = &o->cfg;
    json_t *r = json_object();
    json_object_set_new(r, "apply_residual_connection_post_layernorm",
                        json_boolean(c->residual_from_norm));
    json_object_set_new(r, "architectures", json_pack("[s]", sp__family_of(c->arch)->hf_class));
    json_object_set_new(r, "attention_dropout", json_real(0.0));
    json_object_set_new(r, "bos_token_id", json_integer(c->vocab_size > 1 ? 1 : 0));
    json_object_set_new(r, "eos_token_id", json_integer(c->vocab_size > 2 ? 2 : 0));
    json_object_set_new(r, "hidden_dropout", json_real(0.0));
    json_object_set_new(r, "hidden_size", json_integer(c->d_model));
    json_object_set_new(r, "initializer_range", short_real(o->std));
    json_object_set_new(r, "layer_norm_epsilon", short_real(c->ln_eps));
    json_object_set_new(r, "model_type", json_string(sp_arch_model_type(c->arch)));
    json_object_set_new(r, "n_head", json_integer(c->n_head));
    json_object_set_new(r, "n_layer", json_integer(c->n_layer));
    json_object_set_new(r, "pad_token_id", json_integer(c->vocab_size > 3 ? 3 : 0));
    json_object_set_new(r, "pretraining_tp", json_integer(1));
    json_object_set_new(r, "seq_length", json_integer(c->n_ctx));
    json_object_set_new(r, "slow_but_exact", json_false());
    json_object_set_new(r, "tie_word_embeddings", json_boolean(c->tied));
    json_object_set_new(r, "torch_dtype", json_string(torch_dtype(o->dtype)));
    json_object_set_new(r, "use_cache", json_true());
    json_object_set_new(r, "vocab_size", json_integer(c->vocab_size));
    return r;
}

static json_t *family_config(const sp_init_options *o) {
    switch (o->cfg.arch) {
    case SP_ARCH_GPT2:
        return gpt2_config(o);
    case SP_ARCH_LLAMA:
        return llama_config(o, KEY_LLAMA_BIASES);
    case SP_ARCH_QWEN2:
        return llama_config(o, KEY_QWEN2_WINDOW);
    case SP_ARCH_MISTRAL:
        return llama_config(o, KEY_SLIDING_WINDOW);
    case SP_ARCH_QWEN3:
        return llama_config(o, KEY_ATTENTION_BIAS | KEY_QWEN2_WINDOW);
    case SP_ARCH_GEMMA:
        return llama_config(o, KEY_ATTENTION_BIAS | KEY_GELU);
    case SP_ARCH_GEMMA2:
        return llama_config(o, KEY_ATTENTION_BIAS | KEY_GELU | KEY_GEMMA2 | KEY_SLIDING_WINDOW);
    case SP_ARCH_GEMMA3:
        return llama_config(o, KEY_ATTENTION_BIAS | KEY_GELU | KEY_GEMMA2 | KEY_SLIDING_WINDOW |
                                   KEY_GEMMA3);
    case SP_ARCH_GPT_NEOX:
        return neox_config(o);
    case SP_ARCH_PHI3:
        return llama_config(o, KEY_SLIDING_WINDOW | KEY_PHI3);
    case SP_ARCH_OPT:
        return opt_config(o);
    case SP_ARCH_PHI:
        return llama_config(o, KEY_PHI);
    case SP_ARCH_BERT:
    case SP_ARCH_ROBERTA:
        return encoder_config(o);
    case SP_ARCH_T5:
        return t5_config(o);
    case SP_ARCH_BLOOM:
        return bloom_config(o);
    }
    return NULL;
}

static int write_config(const char *dir, const sp_init_options *o, sp_error *err) {
    json_t *r = family_config(o);
    char *s = json_dumps(r, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(r);
    char *path = sp__path_join(dir, "config.json");
    int rc = -1;
    if (!s || !path) {
        sp_fail(err, "%s: out of memory", dir);
    } else {
        size_t len = strlen(s);
        s[len] = '\n'; /* replaces the terminating NUL; the length is passed explicitly */
        rc = sp__write_file_atomic(path, s, len + 1, err);
    }
    free(s), free(path);
    return rc;
}

/* The tensor plan of o (NULL on a shape check_options refuses); *n receives its length. */
static plan_tensor *make_plan(const sp_init_options *o, int *n) {
    int layers = o->cfg.n_layer > 0 && o->cfg.n_layer <= 1024 ? o->cfg.n_layer : 0;
    plan_tensor *p = calloc((size_t)sp__family_for(&o->cfg)->n_tensors * (layers + 1), sizeof *p);
    if (p) *n = plan_tensors(p, o);
    return p;
}

int sp_init_model_write(const char *dir, const sp_init_options *o, sp_error *err) {
    if (!dir || !*dir) return sp_fail(err, "init-model: the output directory name is empty");
    if (check_options(dir, o, 99999, err)) return -1;
    int n = 0;
    plan_tensor *p = make_plan(o, &n);
    if (!p) return sp_fail(err, "%s: out of memory", dir);
    int rc = check_options(dir, o, n, err) || prepare_dir(dir, o->force, err) ? -1 : 0;
    if (rc == 0) rc = write_weights(dir, p, n, o, err);
    free(p);
    if (rc == 0) rc = write_config(dir, o, err);
    if (rc != 0) return -1;
    /* A forced rewrite must not leave the other layout behind: the loader prefers the index. */
    char *stale =
        sp__path_join(dir, o->n_shards > 1 ? "model.safetensors" : "model.safetensors.index.json");
    if (stale) unlink(stale);
    free(stale);
    return 0;
}
