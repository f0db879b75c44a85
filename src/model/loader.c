/* Loading a Hugging Face model directory: config.json + one or more safetensors files.
 *
 * Every tensor of the family's table (model/family.c) that the configuration has is located
 * (GPT-2's with or without the "transformer." prefix), checked against the shape config.json
 * implies and either used in place (aligned F32) or converted to a private float32 copy. With
 * BF16 weights, the matrices of the blocks (and an untied LM head) are BF16 instead: used in
 * place when stored BF16 (and aligned), otherwise rounded once to a private BF16 copy.
 * Tensors nobody asked for are an error, except the buffers the table names (attention masks,
 * inv_freq), so a checkpoint of another architecture or depth is never half-loaded. */
#include "softprompt/model.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "io/fileutil.h"
#include "model/config.h"
#include "model/family.h"
#include "model/kernels.h"
#include "model/model_store.h"
#include "util/path.h"

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"

typedef struct loader {
    sp_model *m;
    char *where;  /* file named in "missing tensor" errors: index or single file */
    json_t *wmap; /* weight_map of the index, NULL for a single file */
    char **shard; /* [n_files] base names of the shard files (index order) */
    char **used;  /* [n_files][n_tensors] tensors claimed so far */
    int src_cap;
    sp_weights weights; /* F32 or BF16 (auto resolved before tensors are taken) */
    int plan;           /* the first walk: validate every tensor and size the copies only */
    size_t copies;      /* bytes of the copies (planned), then the next copy's offset */
    int writer;         /* this process converts into the copies (another rank of its node may) */
} loader;

/* Each copy starts on a cache line. */
static size_t copy_size(size_t bytes) {
    return (bytes + 63) & ~(size_t)63;
}

/* Whether t is used in place as float32, or as BF16 with bf16. */
static int usable_in_place(const sp_st_tensor *t, int bf16) {
    if (bf16) return t->dtype == SP_DTYPE_BF16 && (uintptr_t)t->data % _Alignof(uint16_t) == 0;
    return t->dtype == SP_DTYPE_F32 && (uintptr_t)t->data % _Alignof(float) == 0;
}

/* After a copy was made from t: its pages of the file mapping leave this process's resident set
 * (they stay in the page cache, and come back if read again), so a converted model does not
 * count both its stored and converted forms. */
static void release_source(const sp_st_tensor *t) {
    uintptr_t page = 4096, lo = ((uintptr_t)t->data + page - 1) & ~(page - 1);
    uintptr_t hi = ((uintptr_t)t->data + t->nbytes) & ~(page - 1);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* The next copy of bytes in the block (the walk that takes tensors visits them as the planning
 * walk did, so the offsets are the same on every rank). */
static void *next_copy(loader *L, size_t bytes) {
    void *p = (unsigned char *)L->m->store->copies + L->copies;
    L->copies += copy_size(bytes);
    L->m->store->n_owned++;
    return p;
}

static int exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* ---- opening the files ------------------------------------------------------------------- */

static int add_file(loader *L, const char *dir, const char *base, sp_error *err) {
    sp_model *m = L->m;
    sp_st_file *files = realloc(m->store->files, ((size_t)m->store->n_files + 1) * sizeof *files);
    char **shard = realloc(L->shard, ((size_t)m->store->n_files + 1) * sizeof *shard);
    if (files) m->store->files = files;
    if (shard) L->shard = shard;
    char *path = sp__path_join(dir, base);
    if (!files || !shard || !path) {
        free(path);
        return sp_fail(err, "%s: out of memory", dir);
    }
    int rc = sp_st_open(&m->store->files[m->store->n_files], path, err);
    free(path);
    if (rc != 0) return -1;
    L->shard[m->store->n_files] = strdup(base);
    m->bytes_mapped += m->store->files[m->store->n_files].map_len;
    m->store->n_files++;
    return L->shard[m->store->n_files - 1] ? 0 : sp_fail(err, "%s: out of memory", dir);
}

static int shard_index(const loader *L, const char *base) {
    for (int i = 0; i < L->m->store->n_files; i++)
        if (strcmp(L->shard[i], base) == 0) return i;
    return -1;
}

/* Reads the index's weight_map and opens each distinct shard once, in order of appearance. */
static int open_index(loader *L, const char *dir, const char *index, sp_error *err) {
    json_error_t je;
    if (sp__check_file_size(index, SP_MAX_INDEX_FILE_BYTES, "index", err) != 0) return -1;
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
        char *path = sp__path_join(dir, base);
        int missing = path && !exists(path);
        free(path);
        if (missing)
            return sp_fail(err, "%s: shard '%s' (holding tensor '%s') does not exist in %s", index,
                           base, name, dir);
        if (add_file(L, dir, base, err) != 0) return -1;
    }
    if (L->m->store->n_files == 0) return sp_fail(err, "%s: weight_map is empty", index);
    return 0;
}

static int open_weights(loader *L, const char *dir, sp_error *err) {
    char *index = sp__path_join(dir, INDEX_NAME), *single = sp__path_join(dir, SINGLE_NAME);
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
        char *bin = sp__path_join(dir, "pytorch_model.bin");
        rc =
            sp_fail(err, "%s: no weights: neither %s nor %s exists%s", dir, SINGLE_NAME, INDEX_NAME,
                    bin && exists(bin) ? " (pytorch_model.bin is not supported: convert it to "
                                         "safetensors)"
                                       : "");
        free(bin);
    }
    free(index), free(single);
    if (rc != 0) return -1;
    L->used = calloc((size_t)L->m->store->n_files, sizeof *L->used);
    if (!L->used) return sp_fail(err, "%s: out of memory", dir);
    for (int i = 0; i < L->m->store->n_files; i++)
        if (!(L->used[i] = calloc((size_t)L->m->store->files[i].n_tensors + 1, 1)))
            return sp_fail(err, "%s: out of memory", dir);
    return 0;
}

/* ---- finding and checking tensors -------------------------------------------------------- */

/* Finds name (bare or with the family's optional prefix) in any file. Sets *t = NULL when
 * absent. Ambiguity and disagreement with the index's weight_map are errors. */
static int find(loader *L, const char *name, const sp_st_tensor **t, int *fi, sp_error *err) {
    const char *prefix = sp__family_of(L->m->cfg.arch)->name_prefix;
    char prefixed[256];
    snprintf(prefixed, sizeof prefixed, "%s%s", prefix ? prefix : "", name);
    *t = NULL;
    for (int i = 0; i < L->m->store->n_files; i++) {
        const sp_st_tensor *c[2] = {sp_st_find(&L->m->store->files[i], name),
                                    prefix ? sp_st_find(&L->m->store->files[i], prefixed) : NULL};
        for (int k = 0; k < 2; k++) {
            if (!c[k]) continue;
            if (*t)
                return sp_fail(err, "%s: tensor '%s' is stored twice (also as '%s' in %s)",
                               L->m->store->files[i].path, c[k]->name, (*t)->name,
                               L->m->store->files[*fi].path);
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

/* Makes t usable as float32: in place if it is aligned F32, else a converted copy. */
static int materialize(loader *L, const sp_st_tensor *t, const float **out) {
    sp_model *m = L->m;
    m->n_params += t->numel;
    m->params_by_dtype[t->dtype] += t->numel;
    if (usable_in_place(t, 0)) {
        *out = t->data;
        m->bytes_in_place += t->nbytes;
        return 0;
    }
    float *buf = next_copy(L, (size_t)t->numel * sizeof(float));
    if (L->writer) sp_convert_to_f32(t->dtype, t->data, buf, (size_t)t->numel), release_source(t);
    m->bytes_converted += (size_t)t->numel * sizeof(float);
    *out = buf;
    return 0;
}

/* Rounds t to a private BF16 copy; a finite value that rounds beyond BF16's range is an error. */
static int round_bf16(loader *L, const sp_st_tensor *t, const char *path, uint16_t *buf,
                      sp_error *err) {
    float chunk[1024];
    size_t n = (size_t)t->numel, esz = sp_dtype_size(t->dtype);
    for (size_t i0 = 0; i0 < n; i0 += 1024) {
        size_t c = n - i0 < 1024 ? n - i0 : 1024;
        sp_convert_to_f32(t->dtype, (const unsigned char *)t->data + i0 * esz, chunk, c);
        for (size_t i = 0; i < c; i++) {
            buf[i0 + i] = sp_f32_to_bf16(chunk[i]);
            if (isfinite(chunk[i]) && (buf[i0 + i] & 0x7f80u) == 0x7f80u)
                return sp_fail(err,
                               "%s: tensor '%s': element %zu (%g) is beyond BF16's range once "
                               "rounded; load it with --weights f32",
                               path, t->name, i0 + i, (double)chunk[i]);
        }
    }
    (void)L;
    return 0;
}

/* Makes t usable as BF16: in place if it is aligned BF16, else a rounded copy. */
static int materialize_bf16(loader *L, const sp_st_tensor *t, const char *path, const void **out,
                            sp_error *err) {
    sp_model *m = L->m;
    m->n_params += t->numel;
    m->params_by_dtype[t->dtype] += t->numel;
    if (usable_in_place(t, 1)) {
        *out = t->data;
        m->bytes_in_place += t->nbytes;
        return 0;
    }
    uint16_t *buf = next_copy(L, (size_t)t->numel * sizeof *buf);
    if (L->writer && round_bf16(L, t, path, buf, err)) return -1;
    if (L->writer) release_source(t);
    m->bytes_converted += (size_t)t->numel * sizeof *buf;
    *out = buf;
    return 0;
}

/* Locates name, checks dtype and shape[ndim], and sets *out: float32 data, or BF16 with bf16. */
static int take(loader *L, const char *name, int ndim, const int64_t want[2], int bf16,
                const void **out, sp_error *err) {
    const sp_st_tensor *t;
    int fi = 0;
    *out = NULL;
    if (find(L, name, &t, &fi, err) != 0) return -1;
    if (!t) return sp_fail(err, "%s: missing tensor '%s'", L->where, name);
    const char *path = L->m->store->files[fi].path;
    L->used[fi][t - L->m->store->files[fi].tensors] = 1;
    if (!sp_dtype_is_float(t->dtype))
        return sp_fail(err,
                       "%s: tensor '%s' has dtype %s; model weights must be F32, F16, BF16 or F64",
                       path, t->name, sp_dtype_name(t->dtype));
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == want[i];
    if (!same) {
        char have_s[256], want_s[64];
        return sp_fail(err, "%s: tensor '%s' has shape %s, config.json implies %s", path, t->name,
                       fmt_dims(have_s, sizeof have_s, t->shape, t->ndim),
                       fmt_dims(want_s, sizeof want_s, want, ndim));
    }
    if (L->plan) { /* sizes only */
        if (!usable_in_place(t, bf16))
            L->copies += copy_size((size_t)t->numel * (bf16 ? sizeof(uint16_t) : sizeof(float)));
        return 0;
    }
    if (bf16) return materialize_bf16(L, t, path, out, err);
    const float *f = NULL;
    int rc = materialize(L, t, &f);
    *out = f;
    return rc;
}

/* Marks name as known but unused (when present), so check_leftovers accepts it. */
static int skip(loader *L, const char *name, sp_error *err) {
    const sp_st_tensor *t;
    int fi = 0;
    if (find(L, name, &t, &fi, err) != 0) return -1;
    if (t) L->used[fi][t - L->m->store->files[fi].tensors] = 1;
    return 0;
}

/* ---- the family's tensors ------------------------------------------------------------------ */

typedef struct take_ctx {
    loader *L;
    sp_error *err;
} take_ctx;

/* One row of the family's table for one layer: taken when the configuration has it; a tied
 * model's stored LM head is marked as seen but not read. */
static int take_row(void *ctx, const sp__tensor_desc *row, int layer) {
    take_ctx *k = ctx;
    sp_model *m = k->L->m;
    char name[160];
    sp__tensor_name(row, layer, name, sizeof name);
    if (!sp__tensor_present(row, &m->cfg))
        return row->when == SP_IF_UNTIED ? skip(k->L, name, k->err) : 0;
    int64_t shape[2];
    int ndim = sp__tensor_shape(row, &m->cfg, shape);
    layer = sp__tensor_layer(row, &m->cfg, layer); /* the decoder's blocks follow (T5) */
    sp_linear *lin = ndim == 2 ? sp__model_linear(m, layer, row->role) : NULL;
    const sp_st_tensor *t = NULL;
    int fi = 0;
    if (find(k->L, name, &t, &fi, k->err)) return -1;
    /* BF16: the matrices, and the embedding table where it is stored BF16 (used in place; an
     * F32 or F16 table stays float32: rounding it would change the embeddings' values) */
    int bf16 = k->L->weights == SP_WEIGHTS_BF16 &&
               (lin || (row->role == SP_ROLE_WTE && t && t->dtype == SP_DTYPE_BF16));
    const void *data;
    if (take(k->L, name, ndim, shape, bf16, &data, k->err)) return -1;
    if (k->L->plan) return 0;
    sp__model_set_tensor(m, layer, row->role, data, bf16 ? SP_WSTORE_BF16 : SP_WSTORE_F32, ndim,
                         shape);
    if (lin) m->bytes_matrices += (size_t)(shape[0] * shape[1]) * (bf16 ? 2 : 4);
    if (lin) lin->exact = row->role == SP_ROLE_LM_HEAD;
    if (!bf16) return 0;
    sp__model_store *st = m->store;
    if (st->n_src >= k->L->src_cap) return sp_fail(k->err, "%s: too many tensors", m->dir);
    st->src_slot[st->n_src] = lin ? (const void *)lin : (const void *)&m->wte;
    st->src_tensor[st->n_src++] = t;
    return 0;
}

const sp_st_tensor *sp__model_source(const sp_model *m, const void *slot) {
    for (int i = 0; m->store && i < m->store->n_src; i++)
        if (m->store->src_slot[i] == slot) return m->store->src_tensor[i];
    return NULL;
}

/* SP_WEIGHTS_AUTO: BF16 when every matrix the model computes with is stored BF16. */
typedef struct dtype_ctx {
    loader *L;
    int all_bf16, any;
} dtype_ctx;

static int matrix_dtype(void *ctx, const sp__tensor_desc *row, int layer) {
    dtype_ctx *k = ctx;
    sp_model *m = k->L->m;
    int64_t shape[2];
    if (!sp__tensor_present(row, &m->cfg) || sp__tensor_shape(row, &m->cfg, shape) != 2 ||
        !sp__model_linear(m, sp__tensor_layer(row, &m->cfg, layer), row->role))
        return 0;
    char name[160];
    sp__tensor_name(row, layer, name, sizeof name);
    const sp_st_tensor *t = NULL;
    int fi = 0;
    sp_error ignored;
    if (find(k->L, name, &t, &fi, &ignored) == 0 && t) {
        k->any = 1;
        if (t->dtype != SP_DTYPE_BF16) k->all_bf16 = 0;
    }
    return 0;
}

static void resolve_weights(loader *L) {
    if (L->weights != SP_WEIGHTS_AUTO) return;
    const sp__family *f = sp__family_for(&L->m->cfg);
    dtype_ctx k = {L, 1, 0};
    sp__tensors_walk(f, L->m->cfg.n_layer, SP_ORDER_TABLE, matrix_dtype, &k);
    L->weights = k.any && k.all_bf16 ? SP_WEIGHTS_BF16 : SP_WEIGHTS_F32;
}

/* The first walk over the family's tensors: every one located and checked, the bytes of the
 * copies to make counted (L->copies), nothing taken. */
static int plan_all(loader *L, sp_error *err) {
    sp_model *m = L->m;
    const sp_model_config *c = &m->cfg;
    const sp__family *f = sp__family_for(c);
    int n_blocks = c->arch == SP_ARCH_T5 ? 2 * c->n_layer : c->n_layer; /* encoder, decoder */
    L->src_cap = f->n_tensors * (c->n_layer + 1);
    m->store->src_slot = calloc((size_t)L->src_cap, sizeof *m->store->src_slot);
    m->store->src_tensor = calloc((size_t)L->src_cap, sizeof *m->store->src_tensor);
    m->layers = calloc((size_t)n_blocks, sizeof *m->layers);
    if (!m->store->src_slot || !m->store->src_tensor || !m->layers)
        return sp_fail(err, "%s: out of memory", m->dir);
    take_ctx k = {L, err};
    resolve_weights(L);
    m->weights = L->weights;
    L->plan = 1, L->copies = 0;
    return sp__tensors_walk(f, c->n_layer, SP_ORDER_TABLE, take_row, &k);
}

/* The memory of the copies: one private anonymous mapping, or (share) one per node that its
 * ranks map, filled by one of them. Collective with share: called whatever ok is. */
static int map_copies(loader *L, const sp_model_share *share, int ok, sp_error *err) {
    sp__model_store *st = L->m->store;
    size_t bytes = ok ? L->copies : 0;
    if (share) {
        void *p = NULL;
        int writer = 0;
        if (share->map(share->ctx, bytes, ok, &p, &writer, err) != 0 || !ok) return -1;
        st->copies = p, st->copies_len = p ? bytes : 0, L->writer = writer;
        L->m->copies_shared = 1;
        return 0;
    }
    if (!ok) return -1;
    L->writer = 1;
    if (bytes == 0) return 0;
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return sp_fail(err, "%s: out of memory: %zu bytes for the converted tensors", L->m->dir,
                       bytes);
    st->copies = p, st->copies_len = bytes;
    return 0;
}

/* The second walk: every tensor taken (the writer converting the copies), the tied head set. */
static int take_all(loader *L, sp_error *err) {
    sp_model *m = L->m;
    const sp_model_config *c = &m->cfg;
    take_ctx k = {L, err};
    L->plan = 0, L->copies = 0;
    if (sp__tensors_walk(sp__family_for(c), c->n_layer, SP_ORDER_TABLE, take_row, &k)) return -1;
    if (c->tied) { /* the head is the embedding, in its store (exact products) */
        int64_t shape[2] = {c->vocab_size, sp_config_embed_dim(c)};
        sp__model_set_tensor(m, -1, SP_ROLE_LM_HEAD, m->wte, m->wte_store, 2, shape);
        m->lm_head.exact = 1;
    }
    return 0;
}

/* HF's rotary frequencies: inv_freq[i] = theta^(-2i / rot) (rot: the rotary columns, hd but for
 * GPT-NeoX's rotary_pct), then rope_scaling ("linear" divides
 * by factor; "llama3" divides the low frequencies by factor and blends the middle band). */
static int rope_frequencies(sp_model *m, sp_error *err) {
    const sp_model_config *c = &m->cfg;
    int rot = sp_config_rotary_dim(c), half = rot / 2; /* GPT-NeoX: part of each head */
    float *f = malloc((size_t)half * sizeof *f);
    if (!f) return sp_fail(err, "%s: out of memory", m->dir);
    double lo_wavelen = c->rope_original_ctx / c->rope_low_freq_factor;
    double hi_wavelen = c->rope_original_ctx / c->rope_high_freq_factor;
    for (int i = 0; i < half; i++) {
        double inv = 1.0 / pow(c->rope_theta, 2.0 * i / rot);
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
    if (c->rope_local_theta <= 0) return 0;
    half = sp_config_head_dim(c) / 2;
    if (!(f = malloc((size_t)half * sizeof *f))) return sp_fail(err, "%s: out of memory", m->dir);
    for (int i = 0; i < half; i++)
        f[i] = (float)(1.0 / pow(c->rope_local_theta, 2.0 * i / sp_config_head_dim(c)));
    m->rope_inv_freq_local = f;
    return 0;
}

/* The wte row's stored tensor (its dtype). */
static const sp_st_tensor *wte_tensor(loader *L, sp_error *err) {
    const sp__family *f = sp__family_for(&L->m->cfg);
    for (int i = 0; i < f->n_tensors; i++) {
        if (f->tensors[i].role != SP_ROLE_WTE) continue;
        const sp_st_tensor *t = NULL;
        int fi = 0;
        return find(L, f->tensors[i].name, &t, &fi, err) == 0 ? t : NULL;
    }
    return NULL;
}

/* What the family multiplies input embeddings by: Gemma's sqrt(d_model), rounded to the stored
 * embedding's dtype as transformers' normalizer (a tensor of the embeddings' dtype) is. */
static int embedding_scale(loader *L, sp_error *err) {
    sp_model *m = L->m;
    m->embed_scale = 1.0f;
    switch (sp__family_for(&m->cfg)->embed) {
    case SP_EMBED_PLAIN:
    case SP_EMBED_TYPES_NORM:
    case SP_EMBED_NORM:
    case SP_EMBED_PROJECT:
        return 0;
    case SP_EMBED_SQRT_D:
    case SP_EMBED_SQRT_D_TOKENS: {
        const sp_st_tensor *t = wte_tensor(L, err);
        if (!t) return -1;
        float s = (float)sqrt((double)m->cfg.d_model);
        if (t->dtype == SP_DTYPE_BF16) s = sp_bf16_to_f32(sp_f32_to_bf16(s));
        if (t->dtype == SP_DTYPE_F16) s = sp_f16_to_f32(sp_f32_to_f16(s));
        m->embed_scale = s;
        return 0;
    }
    }
    return 0;
}

/* What the family's positions need computed at load. */
static int positions(sp_model *m, sp_error *err) {
    switch (sp__family_of(m->cfg.arch)->pos) {
    case SP_POS_LEARNED:
        return 0;
    case SP_POS_ROTARY:
        return rope_frequencies(m, err);
    case SP_POS_RELATIVE: /* T5's biases are tensors */
        return 0;
    case SP_POS_ALIBI:
        if (!(m->alibi_slopes = malloc((size_t)m->cfg.n_head * sizeof *m->alibi_slopes)))
            return sp_fail(err, "%s: out of memory", m->dir);
        sp__alibi_slopes(m->alibi_slopes, m->cfg.n_head);
        return 0;
    }
    return 0;
}

/* A tensor of the table that is not part of the model: a buffer (constant) some checkpoints
 * store next to the weights. */
static int is_buffer(const sp_model *m, const char *name) {
    int layer;
    const sp__tensor_desc *row = sp__tensor_match(sp__family_for(&m->cfg), name, &layer);
    return row && row->role == SP_ROLE_BUFFER;
}

/* The layer a tensor name belongs to by the family's naming, or -1. */
static int layer_of(const sp_model *m, const char *name) {
    const sp__family *f = sp__family_of(m->cfg.arch);
    size_t n = f->name_prefix ? strlen(f->name_prefix) : 0;
    if (n && strncmp(name, f->name_prefix, n) == 0) name += n;
    char fmt[64];
    snprintf(fmt, sizeof fmt, "%s", f->layer_prefix);
    int layer = -1;
    return sscanf(name, fmt, &layer) == 1 ? layer : -1;
}

/* Rejects tensors the model did not claim, so a deeper or different checkpoint fails loudly. */
static int check_leftovers(loader *L, sp_error *err) {
    const sp_model *m = L->m;
    for (int i = 0; i < m->store->n_files; i++) {
        const sp_st_file *f = &m->store->files[i];
        for (int k = 0; k < f->n_tensors; k++) {
            const char *name = f->tensors[k].name;
            if (L->used[i][k] || is_buffer(m, name)) continue;
            int layer = layer_of(m, name);
            if (layer >= m->cfg.n_layer)
                return sp_fail(err,
                               "%s: tensor '%s' belongs to layer %d, but config.json has "
                               "n_layer = %d",
                               f->path, name, layer, m->cfg.n_layer);
            return sp_fail(err,
                           "%s: unexpected tensor '%s' (not part of a %s model as config.json "
                           "describes it)",
                           f->path, name, sp_arch_model_type(m->cfg.arch));
        }
    }
    if (!L->wmap) return 0;
    const char *name;
    json_t *v;
    json_object_foreach(L->wmap, name, v) {
        int fi = shard_index(L, json_string_value(v));
        if (fi >= 0 && !sp_st_find(&m->store->files[fi], name))
            return sp_fail(err, "%s: missing tensor '%s' (weight_map places it in this file)",
                           m->store->files[fi].path, name);
    }
    return 0;
}

/* ---- non-finite weights ------------------------------------------------------------------- */

/* A tensor of the files the model computes with: not a buffer, not a tied head's stored copy
 * (check_leftovers made sure every other tensor was taken). */
static int computes_with(const sp_model *m, const sp_st_tensor *t) {
    int layer;
    const sp__tensor_desc *row = sp__tensor_match(sp__family_for(&m->cfg), t->name, &layer);
    return sp_dtype_is_float(t->dtype) && !(row && !sp__tensor_present(row, &m->cfg));
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
    for (int i = 0; i < m->store->n_files; i++)
        for (int k = 0; k < m->store->files[i].n_tensors; k++)
            if (computes_with(m, &m->store->files[i].tensors[k]))
                scan_tensor(&m->store->files[i], &m->store->files[i].tensors[k], r);
}

/* ---- entry points ------------------------------------------------------------------------ */

static void loader_free(loader *L) {
    for (int i = 0; i < L->m->store->n_files; i++) {
        if (L->used) free(L->used[i]);
        if (L->shard) free(L->shard[i]);
    }
    free(L->used);
    free(L->shard);
    free(L->where);
    json_decref(L->wmap);
}

int sp_weights_parse(const char *name, sp_weights *out) {
    static const char *const names[] = {"auto", "f32", "bf16"};
    for (int i = 0; i < 3; i++)
        if (name && strcmp(name, names[i]) == 0) return *out = (sp_weights)i, 0;
    return -1;
}

const char *sp_weights_name(sp_weights w) {
    switch (w) {
    case SP_WEIGHTS_AUTO:
        return "auto";
    case SP_WEIGHTS_F32:
        return "f32";
    case SP_WEIGHTS_BF16:
        return "bf16";
    }
    return "?";
}

const char *sp_bf16_compute(void) {
    return sp__bf16_path_name();
}

int sp_model_load(sp_model *m, const char *dir, sp_error *err) {
    return sp_model_load_weights(m, dir, SP_WEIGHTS_F32, err);
}

int sp_model_load_weights(sp_model *m, const char *dir, sp_weights weights, sp_error *err) {
    return sp_model_load_shared(m, dir, weights, NULL, err);
}

/* Plans, maps the copies (collectively with share), takes every tensor, then (with share) waits
 * until the node's copies are complete. */
int sp_model_load_shared(sp_model *m, const char *dir, sp_weights weights,
                         const sp_model_share *share, sp_error *err) {
    memset(m, 0, sizeof *m);
    loader L = {.m = m, .weights = weights};
    char *config = sp__path_join(dir, "config.json");
    int ok = 0;
    if (!(m->dir = strdup(dir)) || !config || !(m->store = calloc(1, sizeof *m->store)))
        sp_fail(err, "%s: out of memory", dir);
    else
        ok = sp__config_load(&m->cfg, config, err) == 0 && open_weights(&L, dir, err) == 0 &&
             plan_all(&L, err) == 0 && check_leftovers(&L, err) == 0;
    int rc = map_copies(&L, share, ok, err);
    if (rc == 0) {
        rc = take_all(&L, err);
        if (share && share->ready(share->ctx, rc == 0, err) != 0) rc = -1;
    }
    if (rc == 0 && m->store->copies) mprotect(m->store->copies, m->store->copies_len, PROT_READ);
    if (rc == 0 && (embedding_scale(&L, err) != 0 || positions(m, err) != 0)) rc = -1;
    free(config);
    loader_free(&L);
    if (rc != 0) sp_model_free(m);
    return rc;
}

void sp_model_embedding_row(const sp_model *m, int64_t id, float *out) {
    size_t d = (size_t)sp_config_embed_dim(&m->cfg);
    switch (m->wte_store) {
    case SP_WSTORE_F32:
        memcpy(out, (const float *)m->wte + (size_t)id * d, d * sizeof *out);
        return;
    case SP_WSTORE_BF16: {
        const uint16_t *h = (const uint16_t *)m->wte + (size_t)id * d;
        uint32_t *u = (uint32_t *)(void *)out;
        for (size_t j = 0; j < d; j++) u[j] = (uint32_t)h[j] << 16; /* exact */
        return;
    }
    }
}

void sp_model_input_row(const sp_model *m, int64_t id, float *out) {
    sp_model_embedding_row(m, id, out);
    switch (sp__family_of(m->cfg.arch)->embed) {
    case SP_EMBED_PLAIN:
    case SP_EMBED_SQRT_D: /* on inputs_embeds, in the engine */
    case SP_EMBED_TYPES_NORM:
    case SP_EMBED_NORM:
    case SP_EMBED_PROJECT: /* project_in, in the engine */
        return;
    case SP_EMBED_SQRT_D_TOKENS:
        for (int j = 0; j < sp_config_embed_dim(&m->cfg); j++) out[j] *= m->embed_scale;
        return;
    }
}

int sp_model_n_files(const sp_model *m) {
    return m->store ? m->store->n_files : 0;
}

const char *sp_model_file_path(const sp_model *m, int i) {
    return m->store && i >= 0 && i < m->store->n_files ? m->store->files[i].path : NULL;
}

void sp_model_free(sp_model *m) {
    sp__model_store *s = m->store;
    for (int i = 0; s && i < s->n_files; i++) sp_st_close(&s->files[i]);
    if (s && s->copies) munmap(s->copies, s->copies_len);
    if (s) free(s->files), free(s->src_slot), free(s->src_tensor), free(s);
    free(m->layers);
    free(m->rope_inv_freq);
    free(m->rope_inv_freq_local);
    free(m->alibi_slopes);
    free(m->dir);
    memset(m, 0, sizeof *m);
}
