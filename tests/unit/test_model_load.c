/* Model directories: random tiny models written by sp_init_model_write load back with the right
 * config, in-place F32 and exactly converted F16/BF16 weights, across sharding and name
 * prefixes; then one broken directory per failure mode, checked through `softprompt info`. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/config.h"
#include "model/family.h"
#include "model/model_store.h"
#include "softprompt/model.h"
#include "softprompt/checkpoint.h"
#include "softprompt/engine.h"
#include "softprompt/model_init.h"
#include "softprompt/rng.h"
#include "testutil.h"

enum { L = 2, D = 16, H = 2, FF = 64, V = 50, CTX = 16 };

/* Writes a tiny random model into tu_dir/name and returns the malloc'd directory path. */
static char *make_model(const char *name, sp_dtype dt, int shards, int prefix) {
    sp_init_options o = tu_gpt2_options(L, D, H, FF, V, CTX, 7);
    o.dtype = dt;
    o.n_shards = shards;
    o.prefix = prefix;
    o.random_norms = 1;
    return tu_write_model(name, &o);
}

static int64_t expected_params(void) {
    return (int64_t)V * D + CTX * D + L * (12 * D * D + 13 * D) + 2 * D;
}

static void load_ok(sp_model *m, const char *dir) {
    sp_error err;
    ck_assert_msg(sp_model_load(m, dir, &err) == 0, "%s", err.msg);
}

static int in_mapping(const sp_model *m, const void *p) {
    for (int i = 0; i < m->store->n_files; i++) {
        const char *b = m->store->files[i].map;
        if ((const char *)p >= b && (const char *)p < b + m->store->files[i].map_len) return 1;
    }
    return 0;
}

/* Every weight of a layer with its element count, for whole-model comparisons. */
static void layer_tensors(const sp_layer *l, const float *p[12], size_t n[12]) {
    const float *q[12] = {l->ln1.w, l->ln1.b, l->qkv.w,    l->qkv.b,    l->o.w,       l->o.b,
                          l->ln2.w, l->ln2.b, l->mlp_in.w, l->mlp_in.b, l->mlp_out.w, l->mlp_out.b};
    size_t k[12] = {D, D, D * 3 * D, 3 * D, D * D, D, D, D, D * FF, FF, FF * D, D};
    memcpy(p, q, sizeof q);
    memcpy(n, k, sizeof k);
}

/* Calls f(a_tensor, b_tensor, n) for every weight of two tiny models. */
static void each_tensor(const sp_model *a, const sp_model *b,
                        void (*f)(const float *, const float *, size_t)) {
    f(a->wte, b->wte, V * D);
    f(a->wpe, b->wpe, CTX * D);
    for (int l = 0; l < L; l++) {
        const float *pa[12], *pb[12];
        size_t n[12];
        layer_tensors(&a->layers[l], pa, n);
        layer_tensors(&b->layers[l], pb, n);
        for (int k = 0; k < 12; k++) f(pa[k], pb[k], n[k]);
    }
    f(a->lnf.w, b->lnf.w, D);
    f(a->lnf.b, b->lnf.b, D);
}

static void same_values(const float *a, const float *b, size_t n) {
    ck_assert(memcmp(a, b, n * sizeof *a) == 0);
}

static void f16_of(const float *f32, const float *f16, size_t n) {
    for (size_t i = 0; i < n; i++) ck_assert(f16[i] == sp_f16_to_f32(sp_f32_to_f16(f32[i])));
}

static void bf16_of(const float *f32, const float *bf, size_t n) {
    for (size_t i = 0; i < n; i++) ck_assert(bf[i] == sp_bf16_to_f32(sp_f32_to_bf16(f32[i])));
}

/* ---- loading good models ---------------------------------------------------------------- */

START_TEST(defaults_are_gpt2_124m) {
    sp_init_options o;
    sp_init_options_default(&o);
    ck_assert_int_eq(o.cfg.n_layer, 12);
    ck_assert_int_eq(o.cfg.d_model, 768);
    ck_assert_int_eq(o.cfg.n_head, 12);
    ck_assert_int_eq(o.cfg.d_ff, 3072);
    ck_assert_int_eq(o.cfg.vocab_size, 50257);
    ck_assert_int_eq(o.cfg.n_ctx, 1024);
    ck_assert(o.cfg.ln_eps == 1e-5f);
    ck_assert_int_eq(o.dtype, SP_DTYPE_F32);
    ck_assert_int_eq(o.n_shards, 1);
    ck_assert(o.std == 0.02f);
    int64_t d = o.cfg.d_model;
    int64_t n =
        o.cfg.vocab_size * d + o.cfg.n_ctx * d + o.cfg.n_layer * (12 * d * d + 13 * d) + 2 * d;
    ck_assert_int_eq(n, 124439808);
}
END_TEST

START_TEST(load_f32_in_place) {
    char *dir = make_model("m", SP_DTYPE_F32, 1, 0);
    sp_model m;
    load_ok(&m, dir);
    ck_assert_int_eq(m.cfg.arch, SP_ARCH_GPT2);
    ck_assert_int_eq(m.cfg.n_layer, L);
    ck_assert_int_eq(m.cfg.d_model, D);
    ck_assert_int_eq(m.cfg.n_head, H);
    ck_assert_int_eq(m.cfg.d_ff, FF);
    ck_assert_int_eq(m.cfg.vocab_size, V);
    ck_assert_int_eq(m.cfg.n_ctx, CTX);
    ck_assert(m.cfg.ln_eps == 1e-5f);
    ck_assert_str_eq(m.dir, dir);
    ck_assert_int_eq(m.store->n_files, 1);
    ck_assert_int_eq(m.n_params, expected_params());
    ck_assert_int_eq(m.params_by_dtype[SP_DTYPE_F32], expected_params());
    ck_assert_uint_eq(m.bytes_in_place, (size_t)expected_params() * 4);
    ck_assert_uint_eq(m.bytes_converted, 0);
    ck_assert_int_eq(m.store->n_owned, 0);
    ck_assert_uint_eq(m.bytes_mapped, m.store->files[0].map_len);
    ck_assert_ptr_eq(m.lm_head.w, m.wte); /* tied */
    ck_assert_ptr_eq(m.wte, sp_st_find(&m.store->files[0], "wte.weight")->data);
    ck_assert_ptr_eq(m.layers[1].mlp_out.b,
                     sp_st_find(&m.store->files[0], "h.1.mlp.c_proj.bias")->data);
    ck_assert(in_mapping(&m, m.layers[0].qkv.w) && in_mapping(&m, m.lnf.b));
    /* random_norms: LayerNorm gains near 1, biases small but not zero */
    ck_assert(m.layers[0].ln1.w[0] != 1.0f && m.layers[0].ln1.w[0] > 0.3f);
    ck_assert(m.layers[0].qkv.b[0] != 0.0f);
    sp_model_free(&m);
    ck_assert_ptr_null(m.store);
    ck_assert_ptr_null(m.dir);
    free(dir);
}
END_TEST

/* Reduced-precision weights are converted exactly, and the generator draws the same values
 * whatever the dtype. */
static void check_converted(sp_dtype dt) {
    char *d32 = make_model("f32", SP_DTYPE_F32, 1, 0), *d16 = make_model("low", dt, 1, 0);
    sp_model a, b;
    load_ok(&a, d32);
    load_ok(&b, d16);
    ck_assert_int_eq(b.n_params, expected_params());
    ck_assert_int_eq(b.params_by_dtype[dt], expected_params());
    ck_assert_int_eq(b.params_by_dtype[SP_DTYPE_F32], 0);
    ck_assert_uint_eq(b.bytes_in_place, 0);
    ck_assert_uint_eq(b.bytes_converted, (size_t)expected_params() * 4);
    ck_assert_int_eq(b.store->n_owned, 4 + 12 * L);
    ck_assert(!in_mapping(&b, b.wte));
    /* against the stored bits */
    const sp_st_tensor *t = sp_st_find(&b.store->files[0], "h.1.attn.c_attn.weight");
    ck_assert_int_eq(t->dtype, dt);
    for (int64_t i = 0; i < t->numel; i++) {
        uint16_t bits;
        memcpy(&bits, (const char *)t->data + 2 * i, 2);
        float want = dt == SP_DTYPE_F16 ? sp_f16_to_f32(bits) : sp_bf16_to_f32(bits);
        ck_assert(((const float *)b.layers[1].qkv.w)[i] == want);
    }
    each_tensor(&a, &b, dt == SP_DTYPE_F16 ? f16_of : bf16_of);
    sp_model_free(&a);
    sp_model_free(&b);
    free(d32), free(d16);
}

START_TEST(load_f16_converted) {
    check_converted(SP_DTYPE_F16);
}
END_TEST

START_TEST(load_bf16_converted) {
    check_converted(SP_DTYPE_BF16);
}
END_TEST

/* --weights bf16: a BF16 file's matrices and token embedding table in place from the mapping
 * (auto chooses it; the tied head is that table, its products exact), an F32 file's matrices
 * rounded once to BF16 copies and its table float32 in place; norms, biases and positions
 * float32; the memory accounting (bytes_in_place shared, bytes_converted the copies, which
 * `info` and the memory check use) counts matrices at 2 bytes and has no float32 copy of a BF16
 * embedding table. */
START_TEST(load_bf16_weights_in_place_and_rounded) {
    const size_t mat = (size_t)L * 12 * D * D, emb = (size_t)V * D;
    const size_t rest = (size_t)expected_params() - mat - emb;
    char *dbf = make_model("bf", SP_DTYPE_BF16, 1, 0), *d32 = make_model("f32", SP_DTYPE_F32, 1, 0);
    sp_model b, r, f;
    sp_error err;
    ck_assert_msg(sp_model_load_weights(&b, dbf, SP_WEIGHTS_AUTO, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(b.weights, SP_WEIGHTS_BF16);
    ck_assert_int_eq(b.layers[1].mlp_out.store, SP_WSTORE_BF16);
    ck_assert_ptr_eq(b.layers[1].qkv.w,
                     sp_st_find(&b.store->files[0], "h.1.attn.c_attn.weight")->data);
    ck_assert(in_mapping(&b, b.layers[0].mlp_in.w) && in_mapping(&b, b.wte));
    ck_assert_ptr_eq(b.wte, sp_st_find(&b.store->files[0], "wte.weight")->data);
    ck_assert_int_eq(b.wte_store, SP_WSTORE_BF16);
    ck_assert_uint_eq(b.bytes_matrices, mat * 2);
    ck_assert_uint_eq(b.bytes_in_place, (mat + emb) * 2);
    ck_assert_uint_eq(b.bytes_converted, rest * 4); /* no float32 copy of the embedding */
    ck_assert_ptr_eq(b.lm_head.w, b.wte);           /* tied: the BF16 table, products exact */
    ck_assert_int_eq(b.lm_head.store, SP_WSTORE_BF16);
    ck_assert_int_eq(b.lm_head.exact, 1);
    float row[D];
    sp_model_embedding_row(&b, 7, row);
    for (int j = 0; j < D; j++)
        ck_assert_float_eq(row[j], sp_bf16_to_f32(((const uint16_t *)b.wte)[7 * D + j]));
    ck_assert_msg(sp_model_load_weights(&r, d32, SP_WEIGHTS_BF16, &err) == 0, "%s", err.msg);
    ck_assert_msg(sp_model_load_weights(&f, d32, SP_WEIGHTS_AUTO, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(f.weights, SP_WEIGHTS_F32);
    ck_assert_int_eq(f.layers[0].o.store, SP_WSTORE_F32);
    ck_assert_uint_eq(f.bytes_matrices, mat * 4);
    ck_assert_int_eq(r.layers[0].o.store, SP_WSTORE_BF16);
    ck_assert(!in_mapping(&r, r.layers[0].o.w) && in_mapping(&r, r.wte));
    ck_assert_int_eq(r.wte_store, SP_WSTORE_F32);
    ck_assert_uint_eq(r.bytes_matrices, mat * 2);
    ck_assert_uint_eq(r.bytes_converted, mat * 2);
    ck_assert_uint_eq(r.bytes_in_place, (rest + emb) * 4);
    const float *w32 = f.layers[1].o.w;
    const uint16_t *w16 = r.layers[1].o.w;
    for (int i = 0; i < D * D; i++) ck_assert_uint_eq(w16[i], sp_f32_to_bf16(w32[i]));
    sp_model_free(&b), sp_model_free(&r), sp_model_free(&f);
    free(dbf), free(d32);
}
END_TEST

/* Two ranks of a node, played by two loads in this process: the copies live in one memfd that
 * the writer maps writable and the other rank read-only (a write there would crash the test). */
typedef struct fake_share {
    int fd, writer, fail_ready, map_calls, ready_calls, map_ok;
    size_t bytes;
} fake_share;

static int fake_map(void *ctx, size_t bytes, int ok, void **p, int *writer, sp_error *err) {
    fake_share *f = ctx;
    f->map_calls++, f->map_ok = ok;
    *p = NULL, *writer = f->writer;
    if (!ok) return -1;
    if (bytes == 0) return 0;
    if (f->writer) {
        ck_assert_int_eq(ftruncate(f->fd, (off_t)bytes), 0);
        f->bytes = bytes;
    }
    ck_assert_uint_eq(bytes, f->bytes); /* the same plan on every rank */
    void *m =
        mmap(NULL, bytes, f->writer ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, f->fd, 0);
    if (m == MAP_FAILED) return sp_fail(err, "mmap failed");
    *p = m;
    return 0;
}

static int fake_ready(void *ctx, int ok, sp_error *err) {
    fake_share *f = ctx;
    f->ready_calls++;
    if (ok && f->fail_ready) return sp_fail(err, "the rank converting the weights failed");
    return ok ? 0 : -1;
}

/* F16 checkpoint, --weights bf16: its matrices rounded to BF16 and its other tensors (the
 * embedding table included) converted to float32, all in the node's one copy: the second rank
 * converts nothing (its mapping is read-only) and sees the first rank's values. */
START_TEST(load_copies_shared_by_the_ranks_of_a_node) {
    char *dir = make_model("f16-shared", SP_DTYPE_F16, 1, 0);
    int fd = memfd_create("copies", 0);
    ck_assert_int_ge(fd, 0);
    fake_share fs[2] = {{.fd = fd, .writer = 1}, {.fd = fd, .writer = 0}};
    sp_model a, b, p;
    sp_error err;
    sp_model_share sh[2] = {{fake_map, fake_ready, &fs[0]}, {fake_map, fake_ready, &fs[1]}};
    ck_assert_msg(sp_model_load_shared(&a, dir, SP_WEIGHTS_BF16, &sh[0], &err) == 0, "%s", err.msg);
    fs[1].bytes = fs[0].bytes;
    ck_assert_msg(sp_model_load_shared(&b, dir, SP_WEIGHTS_BF16, &sh[1], &err) == 0, "%s", err.msg);
    ck_assert_msg(sp_model_load_weights(&p, dir, SP_WEIGHTS_BF16, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(fs[1].map_calls, 1);
    ck_assert_int_eq(fs[1].ready_calls, 1);
    const size_t mat = (size_t)L * 12 * D * D, rest = (size_t)expected_params() - mat;
    ck_assert_uint_eq(b.bytes_converted, mat * 2 + rest * 4); /* F16: everything is a copy */
    ck_assert(b.copies_shared && a.copies_shared && !p.copies_shared);
    ck_assert_uint_ge(fs[0].bytes, b.bytes_converted);
    ck_assert_int_eq(b.wte_store, SP_WSTORE_F32); /* F16 table: float32, not rounded */
    ck_assert_ptr_ne(b.layers[1].o.w, a.layers[1].o.w);
    ck_assert_mem_eq(b.layers[1].o.w, p.layers[1].o.w, D * D * 2);
    ck_assert_mem_eq(b.layers[0].mlp_out.w, p.layers[0].mlp_out.w, FF * D * 2);
    ck_assert_mem_eq(b.wte, p.wte, (size_t)V * D * 4);
    ck_assert_mem_eq(b.lnf.b, p.lnf.b, D * 4);
    char fa[17], fb[17];
    sp_model_fingerprint(&a, fa), sp_model_fingerprint(&b, fb);
    ck_assert_str_eq(fa, fb);
    sp_model_free(&a), sp_model_free(&b), sp_model_free(&p);
    /* the writer failing (here: told so by ready): every rank fails, nothing left mapped */
    fs[1].fail_ready = 1;
    ck_assert_int_eq(sp_model_load_shared(&b, dir, SP_WEIGHTS_BF16, &sh[1], &err), -1);
    tu_assert_has(err.msg, "the rank converting the weights failed");
    ck_assert_ptr_null(b.store);
    ck_assert_ptr_null(b.layers);
    /* a load that fails before the copies still takes part in map (ok = 0), then stops */
    char *gone = tu_path(dir, "nonexistent");
    ck_assert_int_eq(sp_model_load_shared(&b, gone, SP_WEIGHTS_BF16, &sh[0], &err), -1);
    tu_assert_has(err.msg, "config.json");
    ck_assert_int_eq(fs[0].map_calls, 2);
    ck_assert_int_eq(fs[0].map_ok, 0);
    ck_assert_int_eq(fs[0].ready_calls, 1);
    close(fd);
    free(gone), free(dir);
}
END_TEST

START_TEST(load_sharded_matches_single) {
    char *d1 = make_model("one", SP_DTYPE_F32, 1, 0), *d3 = make_model("three", SP_DTYPE_F32, 3, 0);
    char *shard2 = tu_path(d3, "model-00002-of-00003.safetensors");
    char *index = tu_path(d3, "model.safetensors.index.json");
    char *single = tu_path(d3, "model.safetensors");
    ck_assert_int_eq(access(shard2, F_OK), 0);
    ck_assert_int_eq(access(index, F_OK), 0);
    ck_assert_int_ne(access(single, F_OK), 0);
    sp_model a, b;
    load_ok(&a, d1);
    load_ok(&b, d3);
    ck_assert_int_eq(sp_model_n_files(&b), 3);
    for (int i = 0; i < 3; i++) ck_assert_int_gt(b.store->files[i].n_tensors, 0);
    ck_assert_str_eq(sp_model_file_path(&b, 1), shard2);
    ck_assert_ptr_null(sp_model_file_path(&b, 3));
    ck_assert_ptr_null(sp_model_file_path(&b, -1));
    ck_assert_int_eq(b.n_params, expected_params());
    ck_assert_uint_eq(b.bytes_in_place, (size_t)expected_params() * 4);
    ck_assert(in_mapping(&b, b.wte) && in_mapping(&b, b.lnf.b));
    each_tensor(&a, &b, same_values);
    sp_model_free(&a);
    sp_model_free(&b);
    free(d1), free(d3), free(shard2), free(index), free(single);
}
END_TEST

START_TEST(load_prefixed_names) {
    char *d = make_model("plain", SP_DTYPE_F32, 1, 0), *p = make_model("pre", SP_DTYPE_F16, 2, 1);
    sp_model a, b;
    load_ok(&a, d);
    load_ok(&b, p);
    ck_assert_int_eq(b.store->n_files, 2);
    ck_assert_ptr_nonnull(sp_st_find(&b.store->files[0], "transformer.wte.weight"));
    ck_assert_ptr_null(sp_st_find(&b.store->files[0], "wte.weight"));
    each_tensor(&a, &b, f16_of);
    sp_model_free(&a);
    sp_model_free(&b);
    free(d), free(p);
}
END_TEST

/* ---- editing safetensors headers -------------------------------------------------------- */

typedef struct st_image {
    json_t *hdr;
    unsigned char *data;
    size_t data_len;
} st_image;

static st_image st_load(const char *file) {
    size_t len;
    unsigned char *raw = (unsigned char *)tu_read_file(file, &len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | raw[i];
    st_image im;
    im.hdr = json_loadb((const char *)raw + 8, n, 0, NULL);
    ck_assert_ptr_nonnull(im.hdr);
    im.data_len = len - 8 - n;
    im.data = malloc(im.data_len + 1);
    memcpy(im.data, raw + 8 + n, im.data_len);
    free(raw);
    return im;
}

/* Re-emits the file from (possibly edited) header and data; frees the image. */
static void st_save(const char *file, st_image *im) {
    char *s = json_dumps(im->hdr, JSON_COMPACT | JSON_PRESERVE_ORDER);
    size_t n = strlen(s), padded = (n + 7) & ~(size_t)7;
    unsigned char *buf = malloc(8 + padded + im->data_len);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, s, n);
    memset(buf + 8 + n, ' ', padded - n);
    memcpy(buf + 8 + padded, im->data, im->data_len);
    tu_write_file(file, buf, 8 + padded + im->data_len);
    free(buf), free(s), free(im->data);
    json_decref(im->hdr);
}

/* Appends a tensor of nbytes (filled with 0.5f floats when F32) at data offset begin
 * (>= data_len; any gap is zero-filled). */
static void st_append(st_image *im, const char *name, const char *dtype, json_t *shape,
                      size_t begin, size_t nbytes) {
    im->data = realloc(im->data, begin + nbytes);
    memset(im->data + im->data_len, 0, begin - im->data_len);
    for (size_t i = 0; i + 4 <= nbytes; i += 4) {
        float h = 0.5f;
        memcpy(im->data + begin + i, &h, 4);
    }
    im->data_len = begin + nbytes;
    json_object_set_new(im->hdr, name,
                        json_pack("{s:s, s:o, s:[I, I]}", "dtype", dtype, "shape", shape,
                                  "data_offsets", (json_int_t)begin, (json_int_t)(begin + nbytes)));
}

static json_t *entry(st_image *im, const char *name) {
    json_t *e = json_object_get(im->hdr, name);
    ck_assert_msg(e != NULL, "no tensor %s", name);
    return e;
}

static void edit_config(const char *dir, const char *key, json_t *value);

/* A stored lm_head.weight of a tied GPT-2 (HF ties by default) is ignored, not converted. */
START_TEST(tied_head_ignores_stored_copy) {
    char *dir = make_model("m", SP_DTYPE_F32, 1, 0);
    char *file = tu_path(dir, "model.safetensors");
    st_image im = st_load(file);
    st_append(&im, "lm_head.weight", "F32", json_pack("[i,i]", V, D), im.data_len, V * D * 4);
    st_save(file, &im);
    sp_model m;
    load_ok(&m, dir);
    ck_assert_ptr_eq(m.lm_head.w, m.wte);
    ck_assert_int_eq(m.n_params, expected_params());
    ck_assert_uint_eq(m.bytes_converted, 0);
    sp_model_free(&m);
    free(dir), free(file);
}
END_TEST

START_TEST(mask_buffers_ignored_and_untied_misaligned_head) {
    char *dir = make_model("m", SP_DTYPE_F32, 1, 0);
    edit_config(dir, "tie_word_embeddings", json_false());
    char *file = tu_path(dir, "model.safetensors");
    st_image im = st_load(file);
    st_append(&im, "h.0.attn.bias", "F32", json_pack("[i,i,i,i]", 1, 1, CTX, CTX), im.data_len,
              CTX * CTX * 4);
    st_append(&im, "h.1.attn.masked_bias", "F32", json_array(), im.data_len, 4);
    /* 2 bytes past a 4-aligned offset: the F32 head must be copied to aligned memory */
    st_append(&im, "lm_head.weight", "F32", json_pack("[i,i]", V, D), im.data_len + 2, V * D * 4);
    st_save(file, &im);
    sp_model m;
    load_ok(&m, dir);
    ck_assert_int_eq(m.n_params, expected_params() + V * D);
    const float *head = m.lm_head.w;
    ck_assert_ptr_ne(head, m.wte);
    ck_assert_uint_eq((uintptr_t)head % 4, 0);
    ck_assert(head[0] == 0.5f && head[V * D - 1] == 0.5f);
    ck_assert_uint_eq(m.bytes_converted, V * D * 4);
    ck_assert_uint_eq(m.bytes_in_place, (size_t)expected_params() * 4);
    sp_model_free(&m);
    free(dir), free(file);
}
END_TEST

/* Overwrites element index of 16-bit tensor `tensor` in file with the raw value bits. */
static void set_u16(const char *file, const char *tensor, int64_t index, uint16_t bits) {
    sp_st_file f;
    sp_error err;
    ck_assert_msg(sp_st_open(&f, file, &err) == 0, "%s", err.msg);
    const sp_st_tensor *t = sp_st_find(&f, tensor);
    ck_assert_ptr_nonnull(t);
    long off = (long)((const char *)t->data - (const char *)f.map) + (long)index * 2;
    sp_st_close(&f);
    FILE *fp = fopen(file, "r+b");
    ck_assert_int_eq(fseek(fp, off, SEEK_SET), 0);
    ck_assert_uint_eq(fwrite(&bits, 2, 1, fp), 1);
    fclose(fp);
}

/* Scans dir's model; r's names are borrowed from m, which stays loaded until the next scan or
 * done(). */
static sp_model scanned;
static sp_nonfinite scan(const char *dir) {
    sp_nonfinite r;
    sp_model_free(&scanned);
    load_ok(&scanned, dir);
    sp_model_scan_nonfinite(&scanned, &r);
    return r;
}

/* Every value the model computes with is checked, in its stored dtype; constants it does not
 * use (mask buffers, a tied head's stored copy) are not. */
START_TEST(nonfinite_weights_are_found) {
    char *dir = make_model("m", SP_DTYPE_F32, 1, 0);
    char *file = tu_path(dir, "model.safetensors");
    sp_nonfinite r = scan(dir);
    ck_assert_int_eq(r.count, 0);
    ck_assert_int_eq(r.checked, expected_params());
    ck_assert_ptr_null(r.tensor);
    st_image im = st_load(file);
    st_append(&im, "lm_head.weight", "F32", json_pack("[i,i]", V, D), im.data_len, V * D * 4);
    st_append(&im, "h.0.attn.bias", "F32", json_pack("[i,i,i,i]", 1, 1, CTX, CTX), im.data_len,
              CTX * CTX * 4);
    st_save(file, &im);
    tu_st_set_f32(file, "lm_head.weight", 0, NAN);
    tu_st_set_f32(file, "h.0.attn.bias", 3, INFINITY);
    r = scan(dir);
    ck_assert_int_eq(r.count, 0);
    ck_assert_int_eq(r.checked, expected_params());

    tu_st_set_f32(file, "wte.weight", 7 * D + 2, NAN);
    r = scan(dir);
    ck_assert_int_eq(r.count, 1);
    ck_assert_int_eq(r.n_tensors, 1);
    ck_assert_str_eq(r.tensor, "wte.weight");
    ck_assert_str_eq(r.file, file);
    ck_assert_int_eq(r.ndim, 2);
    ck_assert_int_eq(r.index[0], 7);
    ck_assert_int_eq(r.index[1], 2);
    ck_assert(isnan(r.value));
    tu_st_set_f32(file, "h.1.mlp.c_fc.bias", FF - 1, -INFINITY);
    tu_st_set_f32(file, "h.1.mlp.c_fc.bias", 0, INFINITY);
    r = scan(dir);
    ck_assert_int_eq(r.count, 3);
    ck_assert_int_eq(r.n_tensors, 2);

    /* 16-bit files: checked as stored (an F16 infinity, a BF16 NaN). */
    const sp_dtype dts[2] = {SP_DTYPE_F16, SP_DTYPE_BF16};
    const uint16_t bits[2] = {0xfc00, 0x7fc1};
    for (int k = 0; k < 2; k++) {
        char name[8];
        snprintf(name, sizeof name, "h%d", k);
        char *hdir = make_model(name, dts[k], 1, 0), *hfile = tu_path(hdir, "model.safetensors");
        ck_assert_int_eq(scan(hdir).count, 0);
        set_u16(hfile, "ln_f.bias", 5, bits[k]);
        r = scan(hdir);
        ck_assert_int_eq(r.count, 1);
        ck_assert_str_eq(r.tensor, "ln_f.bias");
        ck_assert_int_eq(r.ndim, 1);
        ck_assert_int_eq(r.index[0], 5);
        ck_assert(k == 0 ? r.value == -INFINITY : isnan(r.value));
        free(hdir), free(hfile);
    }
    sp_model_free(&scanned);
    free(dir), free(file);
}
END_TEST

/* `softprompt info` reports the scan: a full check, and a model with a NaN is an error naming
 * the tensor and the element. */
START_TEST(cli_info_reports_nonfinite_weights) {
    char *dir = make_model("m", SP_DTYPE_F32, 1, 0);
    char *file = tu_path(dir, "model.safetensors");
    const char *args[] = {"info", dir, NULL};
    char *out, *errout, want[256];
    int rc = tu_run_cli(args, &out, &errout);
    ck_assert_msg(rc == 0, "%s", errout);
    long long n = expected_params();
    snprintf(want, sizeof want, "weights       all %lld,%03lld values finite (full check)",
             n / 1000, n % 1000);
    ck_assert_int_lt(n, 1000000);
    ck_assert_msg(strstr(out, want), "expected '%s' in: %s", want, out);
    free(out), free(errout);
    tu_st_set_f32(file, "wte.weight", 3 * D, NAN);
    rc = tu_run_cli(args, &out, &errout);
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(out, "weights       1 of ") &&
                      strstr(out, "values NOT FINITE, in 1 tensor "
                                  "(full check)"),
                  "%s", out);
    snprintf(want, sizeof want, "softprompt info: %s: tensor 'wte.weight' element [3, 0] is nan",
             file);
    ck_assert_msg(strstr(errout, want), "expected '%s' in: %s", want, errout);
    free(out), free(errout), free(dir), free(file);
}
END_TEST

/* ---- published configurations -------------------------------------------------------------- */

#define REAL_CONFIGS SP_FIXTURES_DIR "/configs"

typedef struct sparse_ctx {
    const sp_model_config *c;
    json_t *hdr;
    int64_t offset;
} sparse_ctx;

/* One present tensor of the family's table as an F32 header entry at the next offset. */
static int sparse_row(void *ctx, const sp__tensor_desc *row, int layer) {
    sparse_ctx *k = ctx;
    if (!sp__tensor_present(row, k->c)) return 0;
    int64_t shape[2];
    int ndim = sp__tensor_shape(row, k->c, shape);
    int64_t bytes = 4 * (ndim == 1 ? shape[0] : shape[0] * shape[1]);
    char name[160];
    sp__tensor_name(row, layer, name, sizeof name);
    json_t *sh = ndim == 1 ? json_pack("[I]", (json_int_t)shape[0])
                           : json_pack("[I, I]", (json_int_t)shape[0], (json_int_t)shape[1]);
    json_object_set_new(k->hdr, name,
                        json_pack("{s:s, s:o, s:[I, I]}", "dtype", "F32", "shape", sh,
                                  "data_offsets", (json_int_t)k->offset,
                                  (json_int_t)(k->offset + bytes)));
    k->offset += bytes;
    return 0;
}

/* A directory holding the published config.json `name` and a model.safetensors of every tensor
 * it implies, F32 zeros in a sparse file (holes: no disk, the page cache's zero page), so that
 * `info` runs on the real shape without gigabytes of weights. */
static char *real_shape_dir(const char *name, sp_model_config *c) {
    char src[512], *dir = tu_path(tu_dir, name);
    snprintf(src, sizeof src, "%s/%s.json", REAL_CONFIGS, name);
    sp_error err = {0};
    ck_assert_msg(sp__config_load(c, src, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    char *cfg = tu_path(dir, "config.json"), *st = tu_path(dir, "model.safetensors");
    size_t len;
    char *text = tu_read_file(src, &len);
    tu_write_file(cfg, text, len);
    sparse_ctx k = {c, json_object(), 0};
    sp__tensors_walk(sp__family_for(c), c->n_layer, SP_ORDER_TABLE, sparse_row, &k);
    char *h = json_dumps(k.hdr, JSON_COMPACT);
    uint64_t hl = strlen(h);
    FILE *fp = fopen(st, "wb");
    ck_assert(fp && fwrite(&hl, 8, 1, fp) == 1 && fwrite(h, 1, hl, fp) == hl);
    ck_assert_int_eq(fclose(fp), 0);
    ck_assert_int_eq(truncate(st, (off_t)(8 + hl + (uint64_t)k.offset)), 0);
    json_decref(k.hdr);
    free(h), free(text), free(cfg), free(st);
    return dir;
}

/* Published config.json files parse into their real shapes (the parameter counts their model
 * cards give), and `info` describes a model of the smaller ones (a full scan of 7B zeros would
 * take minutes): its family's block, window and q/k norms. */
START_TEST(real_configs) {
    static const struct {
        const char *name;
        int64_t params; /* the family table's count: a tied head once */
        int window, head_dim, tied;
        const char *block; /* NULL: too large to run info on */
    } cases[] = {
        {"mistral-7b-v0.1", 7241732096, 4096, 128, 0, NULL},
        {"mistral-7b-instruct-v0.2", 7241732096, 0, 128, 0, NULL},
        {"gemma-2b", 2506172416, 0, 256, 1, NULL}, /* head_dim 256, tied; the tanh GELU */
        {"gemma-2-2b", 2614341888, 4096, 256, 1, NULL},
        {"gemma-3-270m", 268098176, 512, 256, 1, NULL},
        {"gemma-3-1b", 999885952, 512, 256, 1, NULL},
        {"qwen3-0.6b", 596049920, 0, 128, 1,
         "RMSNorm (eps 1e-06), rotary theta 1e+06, per-head q/k norms, SwiGLU MLP"},
        {"pythia-410m", 405334016, 0, 64, 0, NULL},
        {"phi-3-mini-4k", 3821079552, 2047, 96, 0, NULL},
        {"phi-2", 2779683840, 0, 80, 0, NULL},
        {"opt-125m", 125239296, 0, 64, 1, "LayerNorm (eps 1e-05), learned positions, ReLU MLP"},
        {"flan-t5-base", 247577856, 0, 64, 0, NULL}, /* gated-GELU, untied */
        {"mt5-small", 300176768, 0, 64, 0,
         "architecture  MT5ForConditionalGeneration (model_type mt5)"}, /* T5 1.1's blocks */
        {"t5-small", 60506624, 0, 64, 1,
         "RMSNorm (eps 1e-06), relative position bias (32 buckets, max distance 128), ReLU MLP"},
        {"bloomz-560m", 559214592, 0, 64, 1, NULL},
        {"bloom-560m", 559214592, 0, 64, 1, NULL}, /* (info over 559M values: too slow in the
                                                    * sanitizer build next to qwen3-0.6b) */
        {"pythia-160m", 162322944, 0, 64, 0,
         "LayerNorm (eps 1e-05), rotary theta 10000 on 16 of 64 columns per head, GELU (erf) "
         "MLP, q/k/v biases, output projection bias, MLP biases"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sp_model_config c;
        char src[512];
        snprintf(src, sizeof src, "%s/%s.json", REAL_CONFIGS, cases[i].name);
        sp_error err = {0};
        ck_assert_msg(sp__config_load(&c, src, &err) == 0, "%s", err.msg);
        ck_assert_int_eq(sp__family_param_count(&c), cases[i].params);
        ck_assert_int_eq(c.sliding_window, cases[i].window);
        ck_assert_int_eq(sp_config_head_dim(&c), cases[i].head_dim);
        ck_assert_int_eq(c.tied, cases[i].tied);
        if (c.arch == SP_ARCH_GEMMA3) /* 5 windowed layers of 6, their own base; no caps */
            ck_assert(c.window_pattern == 6 && sp_config_layer_window(&c, 4) == 512 &&
                      sp_config_layer_window(&c, 5) == 0 && c.rope_local_theta == 10000 &&
                      c.rope_theta == 1e6 && c.attn_softcap == 0 && c.logit_softcap == 0);
        if (c.arch == SP_ARCH_GEMMA2) /* windows in layers 0, 2, ..; caps; 256^-1/2 */
            ck_assert(c.window_pattern == 2 && sp_config_layer_window(&c, 0) == 4096 &&
                      sp_config_layer_window(&c, 1) == 0 && c.attn_softcap == 50.0f &&
                      c.logit_softcap == 30.0f && c.query_scale == 1.0 / 16);
        if (c.arch == SP_ARCH_T5) /* T5Config's buckets; the decoder starts with pad (0) */
            ck_assert(c.rel_buckets == 32 && c.rel_max_distance == 128 && c.decoder_start == 0 &&
                      c.ff_gated == (strcmp(cases[i].name, "t5-small") != 0) &&
                      c.mt5 == (strcmp(cases[i].name, "mt5-small") == 0) && c.n_ctx == 512 &&
                      c.ln_eps == 1e-6f);
        if (c.arch == SP_ARCH_PHI) /* 0.4 of head_dim 80 */
            ck_assert(c.rotary_dim == 32 && c.rope_theta == 10000);
        if (c.arch == SP_ARCH_BLOOM) /* 4 d whatever n_inner says; 2048 without seq_length */
            ck_assert(c.d_ff == 4096 && c.n_ctx == 2048 && !c.residual_from_norm &&
                      c.ln_eps == 1e-5f && c.qkv_bias && c.o_bias && c.mlp_bias);
        if (c.arch == SP_ARCH_GPT_NEOX) /* Pythia: parallel, erf GELU, a quarter of each head */
            ck_assert(c.parallel_residual && c.gelu_exact && c.rotary_dim == 16 &&
                      c.rope_theta == 10000 && c.qkv_bias && c.o_bias);
        if (!cases[i].block) continue;
        char *dir = real_shape_dir(cases[i].name, &c);
        const char *args[] = {"info", dir, NULL};
        char *out, *errout;
        int rc = tu_run_cli(args, &out, &errout);
        ck_assert_msg(rc == 0, "%s: %s", cases[i].name, errout);
        ck_assert_msg(strstr(out, cases[i].block), "%s: expected '%s' in: %s", cases[i].name,
                      cases[i].block, out);
        free(out), free(errout), free(dir);
    }
}
END_TEST

/* opt-350m's published config (do_layer_norm_before false, word_embed_proj_dim 512 under
 * hidden_size 1024): its 331,196,416 parameters (the model card's 331M: project_in/out, no final
 * norm), and `info` on a model of its shape describes the post-norm blocks and the 512-wide
 * embeddings; the engine runs it (one token through every layer). */
START_TEST(real_config_opt350m) {
    sp_model_config c;
    char src[512];
    snprintf(src, sizeof src, "%s/opt-350m.json", REAL_CONFIGS);
    sp_error err = {0};
    ck_assert_msg(sp__config_load(&c, src, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(sp__family_param_count(&c), 331196416);
    ck_assert(c.post_norm && c.d_embed == 512 && sp_config_embed_dim(&c) == 512 &&
              c.d_model == 1024 && c.tied && c.pos_offset == 2 && c.n_ctx == 2048);
    char *dir = real_shape_dir("opt-350m", &c);
    const char *args[] = {"info", dir, NULL};
    char *out, *errout;
    ck_assert_msg(tu_run_cli(args, &out, &errout) == 0, "%s", errout);
    const char *want[] = {"post-norm     norms after each residual add, none before the LM head",
                          "embeddings    512 wide (the prompt's too), project_in to 1024",
                          "LayerNorm (eps 1e-05), learned positions, ReLU MLP", "331,196,416"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        ck_assert_msg(strstr(out, want[i]), "expected '%s' in: %s", want[i], out);
    sp_model m;
    ck_assert_msg(sp_model_load(&m, dir, &err) == 0, "%s", err.msg);
    sp_worker *w = sp_worker_new(&m);
    int32_t start[2] = {0, 2}, toks[2] = {SP_SOFT(0), 7}, pos = 1, id = 3;
    sp_batch b = {1, start, toks, 1, &pos, &id, NULL, NULL};
    float prompt[512] = {0}, grad[512] = {0};
    sp_pass pass = {.prompt = prompt, .n_prompt = 1, .grad = grad};
    double loss;
    ck_assert_msg(sp_engine_run(w, &b, &pass, &loss, &err) == 0, "%s", err.msg);
    ck_assert_msg(fabs(loss - log(50272.0)) < 1e-4, "loss %.9g: zero weights give uniform logits",
                  loss);
    sp_worker_free(w);
    sp_model_free(&m);
    free(out), free(errout), free(dir);
}
END_TEST

/* Phi-4-mini's config is refused for its longrope scaling (above); with rope_scaling null it is
 * its real shape: partial_rotary_factor 0.75 of head_dim 128, 8 key/value heads, tied, a window
 * of 262144. */
START_TEST(real_config_phi4_mini_without_longrope) {
    char src[512], *path = tu_path(tu_dir, "config.json");
    snprintf(src, sizeof src, "%s/phi-4-mini.json", REAL_CONFIGS);
    json_t *root = json_load_file(src, 0, NULL);
    ck_assert_ptr_nonnull(root);
    json_object_set_new(root, "rope_scaling", json_null());
    ck_assert_int_eq(json_dump_file(root, path, 0), 0);
    json_decref(root);
    sp_model_config c;
    sp_error err = {0};
    ck_assert_msg(sp__config_load(&c, path, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(sp__family_param_count(&c), 3836021760);
    ck_assert(c.rotary_dim == 96 && sp_config_head_dim(&c) == 128 && c.n_kv_head == 8 && c.tied &&
              c.sliding_window == 262144);
    free(path);
}
END_TEST

/* Options of the published configs' families that the engine does not implement are refused,
 * by name, rather than ignored. */
START_TEST(real_configs_refuse_unsupported_options) {
    static const struct {
        const char *config, *key, *value, *want;
    } cases[] = {
        {"qwen3-0.6b", "use_sliding_window", "true", "use_sliding_window = true is unsupported"},
        {"qwen3-0.6b", "layer_types", "[\"sliding_attention\"]",
         "key 'layer_types' is not an array of num_hidden_layers = 28"},
        {"qwen3-0.6b", "hidden_act", "\"gelu\"", "unsupported hidden_act 'gelu'"},
        {"qwen3-0.6b", "rope_scaling", "{\"rope_type\": \"yarn\", \"factor\": 4.0}",
         "unsupported rope_scaling type 'yarn'"},
        {"mistral-7b-v0.1", "sliding_window", "\"4096\"",
         "key 'sliding_window' is a JSON string, expected an integer or null"},
        {"gemma-3-270m", "use_bidirectional_attention", "true",
         "use_bidirectional_attention = true is unsupported"},
        {"pythia-160m", "hidden_act", "\"relu\"", "unsupported hidden_act 'relu'"},
        {"phi-4-mini", "rope_scaling",
         "{\"type\": \"longrope\", \"long_factor\": [1.0], \"short_factor\": [1.0]}",
         "unsupported rope_scaling type 'longrope'"},
        {"phi-3-mini-4k", "rope_scaling", "{\"type\": \"su\", \"long_factor\": [1.0]}",
         "unsupported rope_scaling type 'su'"},
        {"phi-3-mini-4k", "partial_rotary_factor", "0.01",
         "partial_rotary_factor = 0.01 turns 0 of head_dim 96 columns"},
        {"phi-3-mini-4k", "hidden_act", "\"gelu\"", "unsupported hidden_act 'gelu'"},
        {"opt-350m", "layer_norm_elementwise_affine", "false",
         "layer_norm_elementwise_affine = false is unsupported"},
        {"opt-350m", "do_layer_norm_before", "0",
         "key 'do_layer_norm_before' is a JSON integer, expected a boolean"},
        {"opt-350m", "word_embed_proj_dim", "0",
         "key 'word_embed_proj_dim' is 0, expected an integer from 1"},
        {"phi-2", "qk_layernorm", "true", "qk_layernorm = true is unsupported"},
        {"phi-2", "hidden_act", "\"gelu\"", "unsupported hidden_act 'gelu'"},
        {"opt-125m", "_remove_final_layer_norm", "true",
         "_remove_final_layer_norm = true is unsupported"},
        {"opt-125m", "activation_function", "\"gelu\"", "unsupported activation_function 'gelu'"},
        {"bloom-560m", "n_head", "12", "hidden_size = 1024 is not divisible by n_head = 12"},
        {"bloom-560m", "apply_residual_connection_post_layernorm", "1",
         "key 'apply_residual_connection_post_layernorm' is a JSON integer, expected a boolean"},
        {"bloomz-560m", "seq_length", "0", "key 'seq_length' is 0, expected an integer from 1"},
        {"pythia-160m", "rotary_pct", "0.01", "rotary_pct = 0.01 turns 0 of head_dim 64 columns"},
        {"pythia-160m", "rotary_pct", "1.5",
         "key 'rotary_pct' is 1.5, expected a number in (0, 1]"},
        {"pythia-160m", "use_parallel_residual", "1",
         "key 'use_parallel_residual' is a JSON integer, expected a boolean"},
        {"pythia-160m", "rope_scaling", "{\"type\": \"dynamic\", \"factor\": 2.0}",
         "unsupported rope_scaling type 'dynamic'"},
        /* layer_types that the pattern does not give */
        {"gemma-3-270m", "sliding_window_pattern", "3",
         "layer_types[2] is \"sliding_attention\", expected \"full_attention\""},
        {"gemma-2b", "hidden_activation", "\"gelu\"", "unsupported hidden_activation 'gelu'"},
        {"gemma-2-2b", "layer_types", "[]",
         "key 'layer_types' is not an array of num_hidden_layers"},
        {"gemma-2-2b", "attn_logit_softcapping", "\"50\"",
         "key 'attn_logit_softcapping' is a JSON string, expected a number"},
        {"gemma-2b", "hidden_act", "\"relu\"", "unsupported hidden_act 'relu'"},
        {"mistral-7b-v0.1", "sliding_window", "0",
         "key 'sliding_window' is 0, expected an integer from 1"},
        {"flan-t5-base", "feed_forward_proj", "\"gated-silu\"",
         "unsupported feed_forward_proj 'gated-silu' (supported: relu, gated-gelu)"},
        {"t5-small", "feed_forward_proj", "\"gelu\"",
         "unsupported feed_forward_proj 'gelu' (supported: relu, gated-gelu)"},
        {"flan-t5-base", "num_decoder_layers", "6",
         "num_decoder_layers = 6 differs from num_layers = 12: not implemented"},
        {"flan-t5-base", "dense_act_fn", "\"gelu\"", "unsupported dense_act_fn 'gelu'"},
        {"flan-t5-base", "is_gated_act", "false", "is_gated_act = false is unsupported"},
        {"t5-small", "is_encoder_decoder", "false", "is_encoder_decoder = false is unsupported"},
        {"t5-small", "relative_attention_max_distance", "4",
         "relative_attention_num_buckets = 32 with relative_attention_max_distance = 4"},
        {"t5-small", "decoder_start_token_id", "32128",
         "key 'decoder_start_token_id' is 32128, expected an integer from 0 to 32127"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char src[512], *path = tu_path(tu_dir, "config.json");
        snprintf(src, sizeof src, "%s/%s.json", REAL_CONFIGS, cases[i].config);
        json_t *root = json_load_file(src, 0, NULL);
        ck_assert_ptr_nonnull(root);
        json_object_set_new(root, cases[i].key, json_loads(cases[i].value, JSON_DECODE_ANY, NULL));
        ck_assert_int_eq(json_dump_file(root, path, 0), 0);
        json_decref(root);
        sp_model_config c;
        sp_error err = {0};
        ck_assert_int_eq(sp__config_load(&c, path, &err), -1);
        ck_assert_msg(strstr(err.msg, cases[i].want) && strstr(err.msg, path),
                      "%s %s: expected '%s' in: %s", cases[i].config, cases[i].key, cases[i].want,
                      err.msg);
        free(path);
    }
}
END_TEST

START_TEST(failed_load_leaves_model_empty) {
    char *dir = make_model("m", SP_DTYPE_F16, 3, 0);
    char *file = tu_path(dir, "model-00003-of-00003.safetensors");
    st_image im = st_load(file);
    json_object_del(im.hdr, "ln_f.bias");
    st_save(file, &im);
    sp_model m, zero;
    memset(&zero, 0, sizeof zero);
    sp_error err;
    ck_assert_int_eq(sp_model_load(&m, dir, &err), -1);
    ck_assert_msg(strstr(err.msg, "missing tensor 'ln_f.bias'"), "%s", err.msg);
    ck_assert(memcmp(&m, &zero, sizeof m) == 0);
    sp_model_free(&m); /* still safe */
    free(dir), free(file);
}
END_TEST

START_TEST(init_refuses_non_empty_dir_unless_forced) {
    char *dir = make_model("m", SP_DTYPE_F32, 3, 0);
    sp_init_options o = tu_gpt2_options(L, D, H, FF, V, CTX, 0);
    sp_error err;
    ck_assert_int_eq(sp_init_model_write(dir, &o, &err), -1);
    ck_assert_msg(strstr(err.msg, dir) && strstr(err.msg, "not empty"), "%s", err.msg);
    o.force = 1; /* rewrite as a single file: the stale index must go */
    ck_assert_msg(sp_init_model_write(dir, &o, &err) == 0, "%s", err.msg);
    char *index = tu_path(dir, "model.safetensors.index.json");
    ck_assert_int_ne(access(index, F_OK), 0);
    sp_model m;
    load_ok(&m, dir);
    ck_assert_int_eq(m.store->n_files, 1);
    sp_model_free(&m);
    o.cfg.n_head = 3; /* does not divide 16 */
    ck_assert_int_eq(sp_init_model_write(dir, &o, &err), -1);
    ck_assert_msg(strstr(err.msg, "not divisible by n_head = 3"), "%s", err.msg);
    o.cfg.n_head = H, o.cfg.pos_offset = 2; /* GPT-2's table starts at position 0 */
    ck_assert_int_eq(sp_init_model_write(dir, &o, &err), -1);
    ck_assert_msg(strstr(err.msg, "pos_offset = 2, expected 0 for gpt2"), "%s", err.msg);
    o.cfg.arch = SP_ARCH_OPT, o.cfg.pos_offset = 0; /* OPT's has 2 rows before it */
    ck_assert_int_eq(sp_init_model_write(dir, &o, &err), -1);
    ck_assert_msg(strstr(err.msg, "pos_offset = 0, expected 2 for opt"), "%s", err.msg);
    free(dir), free(index);
}
END_TEST

/* ---- broken directories, through the CLI ------------------------------------------------- */

/* Rewrites dir/config.json with key set to value (NULL: deleted). Steals value. */
static void edit_config(const char *dir, const char *key, json_t *value) {
    char *cfg = tu_path(dir, "config.json");
    tu_json_edit(cfg, key, value);
    free(cfg);
}

/* One way to break a model directory, and the message `softprompt info` must then give. */
typedef struct broken broken;
struct broken {
    const char *name; /* what the case shows */
    int shards;       /* the good model it starts from: 1 (model.safetensors) or 3 */
    /* Breaks dir (file: its model.safetensors) using the row's key and value. */
    void (*damage)(const broken *b, const char *dir, const char *file);
    const char *key, *value;
    /* The message starts with the path of the weights file, the directory, its config.json or
     * its index, then rest; it also contains also (if non-NULL). */
    enum { AT_FILE, AT_DIR, AT_CONFIG, AT_INDEX } at;
    const char *rest, *also;
};

/* A JSON value written in the table. */
static json_t *parse(const char *text) {
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    ck_assert_msg(v != NULL, "not JSON: %s", text);
    return v;
}

static void truncate_half(const broken *b, const char *dir, const char *file) {
    (void)b, (void)dir;
    size_t len;
    free(tu_read_file(file, &len));
    ck_assert_int_eq(truncate(file, (off_t)len / 2), 0);
}

static void truncate_to_3(const broken *b, const char *dir, const char *file) {
    (void)b, (void)dir;
    ck_assert_int_eq(truncate(file, 3), 0);
}

static void header_length_past_end(const broken *b, const char *dir, const char *file) {
    (void)b, (void)dir;
    size_t len;
    char *raw = tu_read_file(file, &len);
    uint64_t n = len; /* more than the bytes after the prefix */
    for (int i = 0; i < 8; i++) raw[i] = (char)(n >> (8 * i));
    tu_write_file(file, raw, len);
    free(raw);
}

static void header_not_json(const broken *b, const char *dir, const char *file) {
    (void)b, (void)dir;
    size_t len;
    char *raw = tu_read_file(file, &len);
    raw[8] = 'x';
    tu_write_file(file, raw, len);
    free(raw);
}

/* Tensor key's end offset far past the data. */
static void offsets_past_end(const broken *b, const char *dir, const char *file) {
    (void)dir;
    st_image im = st_load(file);
    json_array_set_new(json_object_get(entry(&im, b->key), "data_offsets"), 1,
                       json_integer(1 << 30));
    st_save(file, &im);
}

/* Tensor key gets the offsets of tensor value. */
static void same_offsets_as(const broken *b, const char *dir, const char *file) {
    (void)dir;
    st_image im = st_load(file);
    json_t *src = json_object_get(entry(&im, b->value), "data_offsets");
    json_object_set(entry(&im, b->key), "data_offsets", src);
    st_save(file, &im);
}

/* Header entry key: "tensor/field" set to the JSON value, or "tensor" deleted (value NULL). */
static void edit_header(const broken *b, const char *dir, const char *file) {
    (void)dir;
    st_image im = st_load(file);
    char tensor[64];
    snprintf(tensor, sizeof tensor, "%s", b->key);
    char *field = strchr(tensor, '/');
    if (field) *field++ = '\0';
    if (b->value)
        json_object_set_new(entry(&im, tensor), field, parse(b->value));
    else
        json_object_del(im.hdr, tensor);
    st_save(file, &im);
}

static void extra_tensor(const broken *b, const char *dir, const char *file) {
    (void)dir;
    st_image im = st_load(file);
    st_append(&im, b->key, "F32", json_pack("[i]", 2), im.data_len, 8);
    st_save(file, &im);
}

/* config.json's key set to the JSON value, or deleted (value NULL). */
static void edit_config_key(const broken *b, const char *dir, const char *file) {
    (void)file;
    edit_config(dir, b->key, b->value ? parse(b->value) : NULL);
}

static void write_config(const broken *b, const char *dir, const char *file) {
    (void)file;
    char *cfg = tu_path(dir, "config.json");
    tu_write_file(cfg, b->value, strlen(b->value));
    free(cfg);
}

static void remove_file(const broken *b, const char *dir, const char *file) {
    (void)file;
    char *p = tu_path(dir, b->key);
    ck_assert_int_eq(unlink(p), 0);
    free(p);
}

/* The index maps tensor key to file value. */
static void edit_weight_map(const broken *b, const char *dir, const char *file) {
    (void)file;
    char *index = tu_path(dir, "model.safetensors.index.json");
    json_t *root = json_load_file(index, 0, NULL);
    json_object_set_new(json_object_get(root, "weight_map"), b->key, json_string(b->value));
    ck_assert_int_eq(json_dump_file(root, index, 0), 0);
    json_decref(root);
    free(index);
}

#define SHARD(k) "model-0000" #k "-of-00003.safetensors"
static const broken BROKEN[] = {
    {"cli_truncated_weights", 1, truncate_half, NULL, NULL, AT_FILE, ": tensor '",
     "run past the end of the data buffer"},
    {"cli_file_shorter_than_prefix", 1, truncate_to_3, NULL, NULL, AT_FILE, ": truncated", NULL},
    {"cli_header_length_past_end", 1, header_length_past_end, NULL, NULL, AT_FILE,
     ": header length", "runs past the end of the file"},
    {"cli_invalid_json_header", 1, header_not_json, NULL, NULL, AT_FILE,
     ": header is not valid JSON", NULL},
    {"cli_offsets_out_of_range", 1, offsets_past_end, "ln_f.bias", NULL, AT_FILE,
     ": tensor 'ln_f.bias': data_offsets", "run past the end of the data buffer"},
    {"cli_overlapping_offsets", 1, same_offsets_as, "h.0.ln_1.bias", "h.0.ln_1.weight", AT_FILE,
     ": tensor 'h.0.ln_1.", "overlap those of tensor 'h.0.ln_1."},
    {"cli_size_not_shape_times_dtype", 1, edit_header, "ln_f.weight/shape", "[17]", AT_FILE,
     ": tensor 'ln_f.weight': data_offsets", "shape [17] of F32 needs 68"},
    {"cli_unknown_dtype", 1, edit_header, "wpe.weight/dtype", "\"Q4\"", AT_FILE,
     ": tensor 'wpe.weight': unknown dtype \"Q4\"", NULL},
    /* I32 has F32's size, so only the dtype check can object */
    {"cli_integer_weight", 1, edit_header, "ln_f.bias/dtype", "\"I32\"", AT_FILE,
     ": tensor 'ln_f.bias' has dtype I32", "must be F32, F16, BF16 or F64"},
    {"cli_missing_tensor", 1, edit_header, "h.1.mlp.c_fc.weight", NULL, AT_FILE,
     ": missing tensor 'h.1.mlp.c_fc.weight'", NULL},
    {"cli_unexpected_tensor", 1, extra_tensor, "score.weight", NULL, AT_FILE,
     ": unexpected tensor 'score.weight'", NULL},
    {"cli_shape_disagrees_with_config", 1, edit_config_key, "n_inner", "32", AT_FILE,
     ": tensor 'h.0.mlp.c_fc.weight' has shape [16, 64], config.json implies [16, 32]", NULL},
    {"cli_more_layers_than_config", 1, edit_config_key, "n_layer", "1", AT_FILE, ": tensor 'h.1.",
     "belongs to layer 1, but config.json has n_layer = 1"},
    {"cli_config_missing_key", 1, edit_config_key, "n_embd", NULL, AT_CONFIG,
     ": missing key 'n_embd'", "n_layer, n_embd, n_head, vocab_size, n_positions"},
    {"cli_config_wrong_type", 1, edit_config_key, "n_head", "\"2\"", AT_CONFIG,
     ": key 'n_head' is a JSON string, expected an integer", NULL},
    {"cli_config_heads_do_not_divide", 1, edit_config_key, "n_head", "3", AT_CONFIG,
     ": n_embd = 16 is not divisible by n_head = 3", NULL},
    {"cli_config_invalid_json", 1, write_config, NULL, "{\"n_layer\": 2,", AT_CONFIG,
     ": invalid JSON", NULL},
    {"cli_unsupported_model_type", 1, edit_config_key, "model_type", "\"umt5\"", AT_CONFIG,
     ": unsupported model_type 'umt5'", "\"gpt2\", \"llama\", \"qwen2\""},
    /* A RoBERTa config without model_type is not taken for a GPT-2 one missing its keys. */
    {"cli_config_without_model_type", 1, write_config, NULL,
     "{\"architectures\": [\"RobertaForMaskedLM\"], \"hidden_size\": 768, "
     "\"num_hidden_layers\": 12, \"vocab_size\": 50265}",
     AT_CONFIG,
     ": no model_type (architectures: RobertaForMaskedLM), and not a GPT-2 config (no n_layer, "
     "n_embd)",
     "\"gpt2\", \"llama\", \"qwen2\""},
    {"cli_unsupported_attention_option", 1, edit_config_key, "scale_attn_by_inverse_layer_idx",
     "true", AT_CONFIG, ": scale_attn_by_inverse_layer_idx = true is unsupported", NULL},
    {"cli_unsupported_activation", 1, edit_config_key, "activation_function", "\"relu\"", AT_CONFIG,
     ": unsupported activation_function 'relu'", "gelu_new"},
    {"cli_no_weights", 1, remove_file, "model.safetensors", NULL, AT_DIR,
     ": no weights: neither model.safetensors nor model.safetensors.index.json exists", NULL},
    {"cli_no_config", 1, remove_file, "config.json", NULL, AT_CONFIG, ": cannot open", NULL},
    {"cli_index_names_missing_shard", 3, remove_file, SHARD(2), NULL, AT_INDEX,
     ": shard '" SHARD(2) "'", "does not exist"},
    {"cli_index_path_escape", 3, edit_weight_map, "wte.weight", "../" SHARD(1), AT_INDEX,
     ": weight_map['wte.weight']", "no '/' or '..'"},
    {"cli_index_disagrees_with_shards", 3, edit_weight_map, "wte.weight", SHARD(3), AT_INDEX,
     ": tensor 'wte.weight' is in " SHARD(1), "weight_map maps it to " SHARD(3)},
};
#define N_BROKEN (int)(sizeof BROKEN / sizeof *BROKEN)

/* Each broken directory: `softprompt info` exits 1, prints nothing on stdout and names the
 * file at fault and what is wrong with it on stderr. */
START_TEST(broken_directory) {
    const broken *b = &BROKEN[_i];
    char *dir = make_model("m", SP_DTYPE_F32, b->shards, 0);
    char *file = tu_path(dir, "model.safetensors");
    b->damage(b, dir, file);
    const char *names[] = {[AT_FILE] = "/model.safetensors",
                           [AT_DIR] = "",
                           [AT_CONFIG] = "/config.json",
                           [AT_INDEX] = "/model.safetensors.index.json"};
    char want[512];
    snprintf(want, sizeof want, "softprompt info: %s%s%s", dir, names[b->at], b->rest);
    const char *args[] = {"info", dir, NULL};
    tu_cli r = tu_cli_run(args);
    ck_assert_msg(r.rc == 1, "%s: exit %d, stderr: %s", b->name, r.rc, r.err);
    ck_assert_msg(strstr(r.err, want) == r.err, "%s: expected '%s' at the start of: %s", b->name,
                  want, r.err);
    if (b->also)
        ck_assert_msg(strstr(r.err, b->also), "%s: expected '%s' in: %s", b->name, b->also, r.err);
    ck_assert_str_eq(r.out, "");
    tu_cli_free(&r);
    free(dir), free(file);
}
END_TEST

/* An OPT model of opt-350m's form (d 32, word_embed_proj_dim 16) with a broken projection: each
 * refused by `info`, exit 1, the file and tensor named. */
START_TEST(broken_opt350m_projections) {
    static const broken cases[] = {
        /* the same number of values, transposed: only the shape check can object */
        {"project_in transposed", 1, edit_header, "decoder.project_in.weight/shape", "[16, 32]",
         AT_FILE,
         ": tensor 'decoder.project_in.weight' has shape [16, 32], config.json implies "
         "[32, 16]",
         NULL},
        {"project_out missing", 1, edit_header, "decoder.project_out.weight", NULL, AT_FILE,
         ": missing tensor 'decoder.project_out.weight'", NULL},
        {"a final norm a post-norm model does not have", 1, extra_tensor,
         "decoder.final_layer_norm.weight", NULL, AT_FILE,
         ": unexpected tensor 'decoder.final_layer_norm.weight'", NULL},
        {"embeddings of hidden_size", 1, edit_config_key, "word_embed_proj_dim", "32", AT_FILE,
         ": tensor 'decoder.embed_tokens.weight' has shape [50, 16], config.json implies "
         "[50, 32]",
         NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const broken *b = &cases[i];
        sp_init_options o = tu_gpt2_options(1, 32, 2, 48, 50, 16, 0);
        o.cfg.arch = SP_ARCH_OPT, o.cfg.pos_offset = 2, o.cfg.qkv_bias = o.cfg.o_bias = 1;
        o.cfg.mlp_bias = 1, o.cfg.post_norm = 1, o.cfg.d_embed = 16;
        char name[32];
        snprintf(name, sizeof name, "opt350-%zu", i);
        char *dir = tu_write_model(name, &o), *file = tu_path(dir, "model.safetensors");
        b->damage(b, dir, file);
        char want[512];
        snprintf(want, sizeof want, "softprompt info: %s/model.safetensors%s", dir, b->rest);
        const char *args[] = {"info", dir, NULL};
        tu_cli r = tu_cli_run(args);
        ck_assert_msg(r.rc == 1, "%s: exit %d, stderr: %s", b->name, r.rc, r.err);
        ck_assert_msg(strstr(r.err, want) == r.err, "%s: expected '%s' at the start of: %s",
                      b->name, want, r.err);
        tu_cli_free(&r);
        free(dir), free(file);
    }
}
END_TEST

/* Random edits to the header of a whole model: the load fails with a message or, when the
 * edit was harmless (e.g. inside the padding), yields the full model. Never crashes. */
START_TEST(random_header_mutations_never_crash) {
    char *dir = make_model("m", SP_DTYPE_F32, 1, 0), *file = tu_path(dir, "model.safetensors");
    size_t len;
    unsigned char *raw = (unsigned char *)tu_read_file(file, &len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | raw[i];
    unsigned char *buf = malloc(len);
    sp_rng rng;
    sp_rng_seed(&rng, 99);
    for (int it = 0; it < 400; it++) {
        memcpy(buf, raw, len);
        size_t pos = 8 + (size_t)sp_rng_below(&rng, n);
        buf[pos] = (unsigned char)("0123456789,[]{}\"x"[sp_rng_below(&rng, 17)]);
        tu_write_file(file, buf, len);
        sp_model m;
        sp_error err;
        if (sp_model_load(&m, dir, &err) == 0) {
            ck_assert_int_eq(m.n_params, expected_params());
            sp_model_free(&m);
        } else {
            ck_assert_msg(strstr(err.msg, dir) == err.msg, "%s", err.msg);
        }
    }
    free(buf), free(raw), free(dir), free(file);
}
END_TEST

int main(void) {
    Suite *s = suite_create("model_load");
    TCase *tc = tcase_create("load");
    tcase_add_checked_fixture(tc, tu_dir_setup, tu_dir_teardown);
    tcase_add_test(tc, defaults_are_gpt2_124m);
    tcase_add_test(tc, nonfinite_weights_are_found);
    tcase_add_test(tc, cli_info_reports_nonfinite_weights);
    tcase_add_test(tc, load_f32_in_place);
    tcase_add_test(tc, load_f16_converted);
    tcase_add_test(tc, load_bf16_converted);
    tcase_add_test(tc, load_sharded_matches_single);
    tcase_add_test(tc, load_prefixed_names);
    tcase_add_test(tc, mask_buffers_ignored_and_untied_misaligned_head);
    tcase_add_test(tc, tied_head_ignores_stored_copy);
    tcase_add_test(tc, load_bf16_weights_in_place_and_rounded);
    tcase_add_test(tc, load_copies_shared_by_the_ranks_of_a_node);
    tcase_add_test(tc, failed_load_leaves_model_empty);
    tcase_add_test(tc, init_refuses_non_empty_dir_unless_forced);
    tcase_add_test(tc, random_header_mutations_never_crash);
    tcase_add_test(tc, real_configs);
    tcase_add_test(tc, real_configs_refuse_unsupported_options);
    tcase_add_test(tc, real_config_phi4_mini_without_longrope);
    tcase_add_test(tc, real_config_opt350m);
    suite_add_tcase(s, tc);

    TCase *bad = tcase_create("broken directories");
    tcase_add_checked_fixture(bad, tu_dir_setup, tu_dir_teardown);
    tcase_add_loop_test(bad, broken_directory, 0, N_BROKEN);
    tcase_add_test(bad, broken_opt350m_projections);
    suite_add_tcase(s, bad);
    return tu_run_suite(s);
}
