/* Loading a Hugging Face GPT-2 directory: config.json + one or more safetensors files.
 *
 * Every tensor the model needs is located (with or without the "transformer." prefix), checked
 * against the shapes config.json implies and either used in place (aligned F32) or converted to
 * a private float32 copy. Tensors nobody asked for are an error, except the attention-mask
 * buffers HF stores, so a checkpoint of another architecture or depth is never half-loaded. */
#include "softprompt/model.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/fileutil.h"
#include "model/config.h"
#include "util/path.h"

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"
#define PREFIX "transformer."

typedef struct loader {
    sp_model *m;
    char *where;  /* file named in "missing tensor" errors: index or single file */
    json_t *wmap; /* weight_map of the index, NULL for a single file */
    char **shard; /* [n_files] base names of the shard files (index order) */
    char **used;  /* [n_files][n_tensors] tensors claimed so far */
    int owned_cap;
} loader;

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* ---- opening the files ------------------------------------------------------------------- */

static int add_file(loader *L, const char *dir, const char *base, sp_error *err) {
    sp_model *m = L->m;
    sp_st_file *files = realloc(m->files, ((size_t)m->n_files + 1) * sizeof *files);
    char **shard = realloc(L->shard, ((size_t)m->n_files + 1) * sizeof *shard);
    if (files) m->files = files;
    if (shard) L->shard = shard;
    char *path = sp_path_join(dir, base);
    if (!files || !shard || !path) {
        free(path);
        return sp_fail(err, "%s: out of memory", dir);
    }
    int rc = sp_st_open(&m->files[m->n_files], path, err);
    free(path);
    if (rc != 0) return -1;
    L->shard[m->n_files] = strdup(base);
    m->bytes_mapped += m->files[m->n_files].map_len;
    m->n_files++;
    return L->shard[m->n_files - 1] ? 0 : sp_fail(err, "%s: out of memory", dir);
}

static int shard_index(const loader *L, const char *base) {
    for (int i = 0; i < L->m->n_files; i++)
        if (strcmp(L->shard[i], base) == 0) return i;
    return -1;
}

/* Reads the index's weight_map and opens each distinct shard once, in order of appearance. */
static int open_index(loader *L, const char *dir, const char *index, sp_error *err) {
    json_error_t je;
    if (sp_check_file_size(index, SP_MAX_INDEX_FILE_BYTES, "index", err) != 0) return -1;
    json_t *root = json_load_file(index, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return sp_fail(err, "%s: invalid JSON: %s (line %d, column %d)", index, je.text, je.line,
                       je.column);
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm)) {
        json_decref(root);
        return sp_fail(err, "%s: missing key 'weight_map' (an object of tensor name -> shard file)",
                       index);
    }
    L->wmap = json_incref(wm);
    json_decref(root);
    const char *name;
    json_t *v;
    json_object_foreach(L->wmap, name, v) {
        const char *base = json_string_value(v);
        if (!base || !*base || strchr(base, '/') || strstr(base, ".."))
            return sp_fail(err,
                           "%s: weight_map['%s'] must be the plain name of a file in the same "
                           "directory (no '/' or '..')",
                           index, name);
        if (shard_index(L, base) >= 0) continue;
        char *path = sp_path_join(dir, base);
        int missing = path && !exists(path);
        free(path);
        if (missing)
            return sp_fail(err, "%s: shard '%s' (holding tensor '%s') does not exist in %s", index,
                           base, name, dir);
        if (add_file(L, dir, base, err) != 0) return -1;
    }
    if (L->m->n_files == 0) return sp_fail(err, "%s: weight_map is empty", index);
    return 0;
}

static int open_weights(loader *L, const char *dir, sp_error *err) {
    char *index = sp_path_join(dir, INDEX_NAME), *single = sp_path_join(dir, SINGLE_NAME);
    int rc;
    if (!index || !single) {
        rc = sp_fail(err, "%s: out of memory", dir);
    } else if (exists(index)) {
        L->where = index, index = NULL;
        rc = open_index(L, dir, L->where, err);
    } else if (exists(single)) {
        L->where = single, single = NULL;
        rc = add_file(L, dir, SINGLE_NAME, err);
    } else {
        char *bin = sp_path_join(dir, "pytorch_model.bin");
        rc =
            sp_fail(err, "%s: no weights: neither %s nor %s exists%s", dir, SINGLE_NAME, INDEX_NAME,
                    bin && exists(bin) ? " (pytorch_model.bin is not supported: convert it to "
                                         "safetensors)"
                                       : "");
        free(bin);
    }
    free(index), free(single);
    if (rc != 0) return -1;
    L->used = calloc((size_t)L->m->n_files, sizeof *L->used);
    if (!L->used) return sp_fail(err, "%s: out of memory", dir);
    for (int i = 0; i < L->m->n_files; i++)
        if (!(L->used[i] = calloc((size_t)L->m->files[i].n_tensors + 1, 1)))
            return sp_fail(err, "%s: out of memory", dir);
    return 0;
}

/* ---- finding and checking tensors -------------------------------------------------------- */

/* Finds name (bare or prefixed) in any file. Sets *t = NULL when absent. Ambiguity and
 * disagreement with the index's weight_map are errors. */
static int find(loader *L, const char *name, const sp_st_tensor **t, int *fi, sp_error *err) {
    char prefixed[256];
    snprintf(prefixed, sizeof prefixed, PREFIX "%s", name);
    *t = NULL;
    for (int i = 0; i < L->m->n_files; i++) {
        const sp_st_tensor *c[2] = {sp_st_find(&L->m->files[i], name),
                                    sp_st_find(&L->m->files[i], prefixed)};
        for (int k = 0; k < 2; k++) {
            if (!c[k]) continue;
            if (*t)
                return sp_fail(err, "%s: tensor '%s' is stored twice (also as '%s' in %s)",
                               L->m->files[i].path, c[k]->name, (*t)->name, L->m->files[*fi].path);
            *t = c[k], *fi = i;
        }
    }
    if (!*t || !L->wmap) return 0;
    const char *mapped = json_string_value(json_object_get(L->wmap, (*t)->name));
    if (!mapped || strcmp(mapped, L->shard[*fi]) != 0)
        return sp_fail(err, "%s: tensor '%s' is in %s, but weight_map %s%s", L->where, (*t)->name,
                       L->shard[*fi], mapped ? "maps it to " : "does not list it",
                       mapped ? mapped : "");
    return 0;
}

static const char *fmt_dims(char *buf, size_t cap, const int64_t *dims, int ndim) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)dims[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
    return buf;
}

/* Makes t usable as float32: in place if it is aligned F32, else a converted private copy. */
static int materialize(loader *L, const sp_st_tensor *t, const char *path, const float **out,
                       sp_error *err) {
    sp_model *m = L->m;
    m->n_params += t->numel;
    m->params_by_dtype[t->dtype] += t->numel;
    if (t->dtype == SP_DTYPE_F32 && (uintptr_t)t->data % _Alignof(float) == 0) {
        *out = t->data;
        m->bytes_in_place += t->nbytes;
        return 0;
    }
    float *buf = malloc((size_t)t->numel * sizeof(float));
    if (!buf || m->n_owned >= L->owned_cap) {
        free(buf);
        return sp_fail(err, "%s: tensor '%s': out of memory converting %lld elements to float32",
                       path, t->name, (long long)t->numel);
    }
    sp_convert_to_f32(t->dtype, t->data, buf, (size_t)t->numel);
    m->owned[m->n_owned++] = buf;
    m->bytes_converted += (size_t)t->numel * sizeof(float);
    *out = buf;
    return 0;
}

/* Locates name, checks dtype and shape [d0] or [d0, d1], and sets *out. An absent optional
 * tensor leaves *out NULL. */
static int take(loader *L, const char *name, int ndim, int64_t d0, int64_t d1, int optional,
                const float **out, sp_error *err) {
    const sp_st_tensor *t;
    int fi = 0;
    *out = NULL;
    if (find(L, name, &t, &fi, err) != 0) return -1;
    if (!t) return optional ? 0 : sp_fail(err, "%s: missing tensor '%s'", L->where, name);
    const char *path = L->m->files[fi].path;
    L->used[fi][t - L->m->files[fi].tensors] = 1;
    if (!sp_dtype_is_float(t->dtype))
        return sp_fail(err,
                       "%s: tensor '%s' has dtype %s; model weights must be F32, F16, BF16 or F64",
                       path, t->name, sp_dtype_name(t->dtype));
    int64_t want[2] = {d0, d1};
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == want[i];
    if (!same) {
        char have_s[256], want_s[64];
        return sp_fail(err, "%s: tensor '%s' has shape %s, config.json implies %s", path, t->name,
                       fmt_dims(have_s, sizeof have_s, t->shape, t->ndim),
                       fmt_dims(want_s, sizeof want_s, want, ndim));
    }
    return materialize(L, t, path, out, err);
}

/* Marks name as known but unused (when present), so check_leftovers accepts it. */
static int skip(loader *L, const char *name, sp_error *err) {
    const sp_st_tensor *t;
    int fi = 0;
    if (find(L, name, &t, &fi, err) != 0) return -1;
    if (t) L->used[fi][t - L->m->files[fi].tensors] = 1;
    return 0;
}

/* ---- the tensor sets ---------------------------------------------------------------------- */

enum { D = -1, D3 = -2, DFF = -3, QD = -4, KVD = -5 }; /* dimensions resolved from the config */
enum { ALWAYS, IF_QKV_BIAS, IF_O_BIAS, IF_MLP_BIAS };  /* when a tensor exists */

typedef struct layer_tensor {
    const char *suffix;
    int ndim, d0, d1;
    size_t field;
    int when;
} layer_tensor;

#define F(x) offsetof(sp_layer, x)
static const layer_tensor GPT2_LAYER[] = {
    {"ln_1.weight", 1, D, 0, F(ln1_w), ALWAYS},
    {"ln_1.bias", 1, D, 0, F(ln1_b), ALWAYS},
    {"attn.c_attn.weight", 2, D, D3, F(qkv_w), ALWAYS},
    {"attn.c_attn.bias", 1, D3, 0, F(qkv_b), ALWAYS},
    {"attn.c_proj.weight", 2, D, D, F(attn_proj_w), ALWAYS},
    {"attn.c_proj.bias", 1, D, 0, F(attn_proj_b), ALWAYS},
    {"ln_2.weight", 1, D, 0, F(ln2_w), ALWAYS},
    {"ln_2.bias", 1, D, 0, F(ln2_b), ALWAYS},
    {"mlp.c_fc.weight", 2, D, DFF, F(fc_w), ALWAYS},
    {"mlp.c_fc.bias", 1, DFF, 0, F(fc_b), ALWAYS},
    {"mlp.c_proj.weight", 2, DFF, D, F(fc_proj_w), ALWAYS},
    {"mlp.c_proj.bias", 1, D, 0, F(fc_proj_b), ALWAYS},
};
static const layer_tensor LLAMA_LAYER[] = {
    {"input_layernorm.weight", 1, D, 0, F(ln1_w), ALWAYS},
    {"self_attn.q_proj.weight", 2, QD, D, F(q_w), ALWAYS},
    {"self_attn.k_proj.weight", 2, KVD, D, F(k_w), ALWAYS},
    {"self_attn.v_proj.weight", 2, KVD, D, F(v_w), ALWAYS},
    {"self_attn.q_proj.bias", 1, QD, 0, F(q_b), IF_QKV_BIAS},
    {"self_attn.k_proj.bias", 1, KVD, 0, F(k_b), IF_QKV_BIAS},
    {"self_attn.v_proj.bias", 1, KVD, 0, F(v_b), IF_QKV_BIAS},
    {"self_attn.o_proj.weight", 2, D, QD, F(attn_proj_w), ALWAYS},
    {"self_attn.o_proj.bias", 1, D, 0, F(attn_proj_b), IF_O_BIAS},
    {"post_attention_layernorm.weight", 1, D, 0, F(ln2_w), ALWAYS},
    {"mlp.gate_proj.weight", 2, DFF, D, F(gate_w), ALWAYS},
    {"mlp.up_proj.weight", 2, DFF, D, F(up_w), ALWAYS},
    {"mlp.down_proj.weight", 2, D, DFF, F(down_w), ALWAYS},
    {"mlp.gate_proj.bias", 1, DFF, 0, F(gate_b), IF_MLP_BIAS},
    {"mlp.up_proj.bias", 1, DFF, 0, F(up_b), IF_MLP_BIAS},
    {"mlp.down_proj.bias", 1, D, 0, F(down_b), IF_MLP_BIAS},
};
#undef F
#define COUNT(a) (int)(sizeof a / sizeof a[0])

static int64_t dim(const sp_model_config *c, int code) {
    switch (code) {
    case D:
        return c->d_model;
    case D3:
        return 3 * (int64_t)c->d_model;
    case DFF:
        return c->d_ff;
    case QD:
        return (int64_t)c->n_head * sp_config_head_dim(c);
    case KVD:
        return (int64_t)sp_config_kv_heads(c) * sp_config_head_dim(c);
    default:
        return code;
    }
}

static int present(const sp_model_config *c, int when) {
    return when == ALWAYS || (when == IF_QKV_BIAS && c->qkv_bias) ||
           (when == IF_O_BIAS && c->o_bias) || (when == IF_MLP_BIAS && c->mlp_bias);
}

static int take_layers(loader *L, sp_error *err) {
    sp_model *m = L->m;
    const sp_model_config *c = &m->cfg;
    int gpt2 = m->arch == SP_ARCH_GPT2;
    const layer_tensor *tab = gpt2 ? GPT2_LAYER : LLAMA_LAYER;
    int n = gpt2 ? COUNT(GPT2_LAYER) : COUNT(LLAMA_LAYER);
    for (int l = 0; l < c->n_layer; l++) {
        for (int k = 0; k < n; k++) {
            if (!present(c, tab[k].when)) continue;
            char name[160];
            snprintf(name, sizeof name, gpt2 ? "h.%d.%s" : "model.layers.%d.%s", l, tab[k].suffix);
            const float **slot = (const float **)((char *)&m->layers[l] + tab[k].field);
            if (take(L, name, tab[k].ndim, dim(c, tab[k].d0), dim(c, tab[k].d1), 0, slot, err))
                return -1;
        }
    }
    return 0;
}

static int take_all(loader *L, sp_error *err) {
    sp_model *m = L->m;
    const sp_model_config *c = &m->cfg;
    int gpt2 = m->arch == SP_ARCH_GPT2;
    L->owned_cap = COUNT(LLAMA_LAYER) * c->n_layer + 6;
    m->owned = calloc((size_t)L->owned_cap, sizeof *m->owned);
    m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
    if (!m->owned || !m->layers) return sp_fail(err, "%s: out of memory", m->dir);
    if (take(L, gpt2 ? "wte.weight" : "model.embed_tokens.weight", 2, c->vocab_size, c->d_model, 0,
             &m->wte, err) ||
        (gpt2 && take(L, "wpe.weight", 2, c->n_ctx, c->d_model, 0, &m->wpe, err)) ||
        take_layers(L, err) ||
        take(L, gpt2 ? "ln_f.weight" : "model.norm.weight", 1, c->d_model, 0, 0, &m->lnf_w, err) ||
        (gpt2 && take(L, "ln_f.bias", 1, c->d_model, 0, 0, &m->lnf_b, err)) ||
        (!c->tied && take(L, "lm_head.weight", 2, c->vocab_size, c->d_model, 0, &m->lm_head, err)))
        return -1;
    /* Tied: the head is the embedding; a stored copy, which some files carry, is not read. */
    if (c->tied) {
        m->lm_head = m->wte;
        return skip(L, "lm_head.weight", err);
    }
    return 0;
}

/* HF's rotary frequencies: inv_freq[i] = theta^(-2i / hd), then rope_scaling ("linear" divides
 * by factor; "llama3" divides the low frequencies by factor and blends the middle band). */
static int rope_frequencies(sp_model *m, sp_error *err) {
    const sp_model_config *c = &m->cfg;
    int half = sp_config_head_dim(c) / 2;
    float *f = malloc((size_t)half * sizeof *f);
    if (!f) return sp_fail(err, "%s: out of memory", m->dir);
    double lo_wavelen = c->rope_original_ctx / c->rope_low_freq_factor;
    double hi_wavelen = c->rope_original_ctx / c->rope_high_freq_factor;
    for (int i = 0; i < half; i++) {
        double inv = 1.0 / pow(c->rope_theta, 2.0 * i / sp_config_head_dim(c));
        if (c->rope_scaling == SP_ROPE_LINEAR) inv /= c->rope_factor;
        if (c->rope_scaling == SP_ROPE_LLAMA3) {
            double wavelen = 2 * M_PI / inv;
            if (wavelen > lo_wavelen) {
                inv /= c->rope_factor;
            } else if (wavelen >= hi_wavelen) {
                double smooth = (c->rope_original_ctx / wavelen - c->rope_low_freq_factor) /
                                (c->rope_high_freq_factor - c->rope_low_freq_factor);
                inv = (1 - smooth) * inv / c->rope_factor + smooth * inv;
            }
        }
        f[i] = (float)inv;
    }
    m->rope_inv_freq = f;
    return 0;
}

/* Buffers some checkpoints store next to the weights are constants: GPT-2's attention masks
 * (h.N.attn.bias / masked_bias) and older Llama files' rotary inv_freq. */
static int is_buffer(const char *name) {
    int layer, end = 0;
    if (sscanf(name, "model.layers.%d.self_attn.rotary_emb.inv_freq%n", &layer, &end) == 1 && end &&
        !name[end])
        return 1;
    end = 0;
    if (sscanf(name, "h.%d.attn.bias%n", &layer, &end) == 1 && end && !name[end]) return 1;
    end = 0;
    if (sscanf(name, "h.%d.attn.masked_bias%n", &layer, &end) == 1 && end && !name[end]) return 1;
    return 0;
}

/* Rejects tensors the model did not claim, so a deeper or different checkpoint fails loudly. */
static int check_leftovers(loader *L, sp_error *err) {
    const sp_model *m = L->m;
    for (int i = 0; i < m->n_files; i++) {
        const sp_st_file *f = &m->files[i];
        for (int k = 0; k < f->n_tensors; k++) {
            const char *name = f->tensors[k].name;
            if (L->used[i][k]) continue;
            const char *bare = strncmp(name, PREFIX, strlen(PREFIX)) ? name : name + strlen(PREFIX);
            if (is_buffer(bare)) continue;
            int layer;
            if ((sscanf(bare, "h.%d.", &layer) == 1 ||
                 sscanf(bare, "model.layers.%d.", &layer) == 1) &&
                layer >= m->cfg.n_layer)
                return sp_fail(err,
                               "%s: tensor '%s' belongs to layer %d, but config.json has "
                               "n_layer = %d",
                               f->path, name, layer, m->cfg.n_layer);
            return sp_fail(err,
                           "%s: unexpected tensor '%s' (not part of a %s model as config.json "
                           "describes it)",
                           f->path, name, m->cfg.model_type);
        }
    }
    if (!L->wmap) return 0;
    const char *name;
    json_t *v;
    json_object_foreach(L->wmap, name, v) {
        int fi = shard_index(L, json_string_value(v));
        if (fi >= 0 && !sp_st_find(&m->files[fi], name))
            return sp_fail(err, "%s: missing tensor '%s' (weight_map places it in this file)",
                           m->files[fi].path, name);
    }
    return 0;
}

/* ---- non-finite weights ------------------------------------------------------------------- */

/* A tensor of the files the model computes with: not a buffer, not a tied head's stored copy
 * (check_leftovers made sure every other tensor was taken). */
static int computes_with(const sp_model *m, const sp_st_tensor *t) {
    const char *bare =
        strncmp(t->name, PREFIX, strlen(PREFIX)) ? t->name : t->name + strlen(PREFIX);
    return sp_dtype_is_float(t->dtype) && !is_buffer(bare) &&
           !(m->cfg.tied && strcmp(bare, "lm_head.weight") == 0);
}

/* Whether element i of t is non-finite in its stored dtype, or once converted to float32 (F64
 * beyond float32's range); *v receives it. Exponent bits all ones is infinity or NaN. */
static int element_nonfinite(const sp_st_tensor *t, int64_t i, double *v) {
    const unsigned char *p = (const unsigned char *)t->data + (size_t)i * sp_dtype_size(t->dtype);
    uint16_t h;
    uint32_t u;
    double d;
    switch (t->dtype) {
    case SP_DTYPE_F32:
        memcpy(&u, p, 4);
        if ((u & 0x7f800000u) != 0x7f800000u) return 0;
        float f;
        memcpy(&f, p, 4);
        *v = f;
        return 1;
    case SP_DTYPE_F16:
        memcpy(&h, p, 2);
        if ((h & 0x7c00u) != 0x7c00u) return 0;
        *v = sp_f16_to_f32(h);
        return 1;
    case SP_DTYPE_BF16:
        memcpy(&h, p, 2);
        if ((h & 0x7f80u) != 0x7f80u) return 0;
        *v = sp_bf16_to_f32(h);
        return 1;
    case SP_DTYPE_F64:
        memcpy(&d, p, 8);
        if (isfinite((float)d)) return 0;
        *v = (float)d;
        return 1;
    default:
        return 0;
    }
}

/* Non-finite values of a 32- or 16-bit float tensor: exponent bits all ones (a branch-free
 * pass the compiler vectorises). */
static int64_t count_exponent_ones(const sp_st_tensor *t) {
    const unsigned char *p = t->data;
    int64_t count = 0;
    if (t->dtype == SP_DTYPE_F32) {
        for (int64_t i = 0; i < t->numel; i++) {
            uint32_t u;
            memcpy(&u, p + 4 * i, 4);
            count += (u & 0x7f800000u) == 0x7f800000u;
        }
        return count;
    }
    const uint16_t mask = t->dtype == SP_DTYPE_F16 ? 0x7c00u : 0x7f80u;
    for (int64_t i = 0; i < t->numel; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        count += (h & mask) == mask;
    }
    return count;
}

/* Counts the non-finite values of t and records the first one the model has. */
static void scan_tensor(const sp_st_file *f, const sp_st_tensor *t, sp_nonfinite *r) {
    double v = 0;
    int64_t count = 0, first = -1;
    if (t->dtype == SP_DTYPE_F64)
        for (int64_t i = 0; i < t->numel; i++) count += element_nonfinite(t, i, &v);
    else
        count = count_exponent_ones(t);
    r->checked += t->numel;
    if (count == 0) return;
    r->count += count, r->n_tensors++;
    if (r->tensor) return;
    for (first = 0; !element_nonfinite(t, first, &v); first++) continue;
    r->file = f->path, r->tensor = t->name, r->ndim = t->ndim, r->value = v;
    for (int k = t->ndim - 1; k >= 0; k--) {
        int64_t dim = t->shape[k] > 0 ? t->shape[k] : 1;
        r->index[k] = first % dim, first /= dim;
    }
}

void sp_model_scan_nonfinite(const sp_model *m, sp_nonfinite *r) {
    memset(r, 0, sizeof *r);
    for (int i = 0; i < m->n_files; i++)
        for (int k = 0; k < m->files[i].n_tensors; k++)
            if (computes_with(m, &m->files[i].tensors[k]))
                scan_tensor(&m->files[i], &m->files[i].tensors[k], r);
}

/* ---- entry points ------------------------------------------------------------------------ */

static void loader_free(loader *L) {
    for (int i = 0; i < L->m->n_files; i++) {
        if (L->used) free(L->used[i]);
        if (L->shard) free(L->shard[i]);
    }
    free(L->used);
    free(L->shard);
    free(L->where);
    json_decref(L->wmap);
}

int sp_model_load(sp_model *m, const char *dir, sp_error *err) {
    memset(m, 0, sizeof *m);
    loader L = {.m = m};
    char *config = sp_path_join(dir, "config.json");
    int rc = -1;
    if (!(m->dir = strdup(dir)) || !config)
        sp_fail(err, "%s: out of memory", dir);
    else if (sp_config_load(&m->cfg, &m->arch, config, err) == 0 &&
             open_weights(&L, dir, err) == 0 && take_all(&L, err) == 0 &&
             check_leftovers(&L, err) == 0 &&
             (m->arch == SP_ARCH_GPT2 || rope_frequencies(m, err) == 0))
        rc = 0;
    free(config);
    loader_free(&L);
    if (rc != 0) sp_model_free(m);
    return rc;
}

void sp_model_free(sp_model *m) {
    for (int i = 0; i < m->n_files; i++) sp_st_close(&m->files[i]);
    free(m->files);
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    free(m->rope_inv_freq);
    free(m->dir);
    memset(m, 0, sizeof *m);
}
