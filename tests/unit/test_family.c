/* The family descriptions (src/model/family.c) and the activation table (src/model/worker.c):
 *  - every sp_arch has a description that maps back from its model_type, and the supported
 *    lists messages print come from them;
 *  - every tensor table is well formed for the walks the loader, init-model and the fingerprint
 *    make over it, and counts the parameters the loader finds;
 *  - the memory a run touches stays within the estimate the memory check and `info` use, for
 *    every family and for short and long sequences. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/family.h"
#include "model/worker.h"
#include "softprompt/engine.h"
#include "softprompt/model_init.h"
#include "softprompt/rng.h"
#include "testutil.h"

START_TEST(every_arch_has_a_family) {
    for (int i = 0; i < SP_N_ARCH; i++) {
        const sp__family *f = sp__family_of((sp_arch)i);
        ck_assert_int_eq(f->arch, i);
        ck_assert(f->model_type && f->hf_class && f->layer_prefix && f->n_tensors > 0);
        sp_arch back;
        ck_assert_int_eq(sp__arch_from_model_type(f->model_type, &back), 0);
        ck_assert_int_eq(back, i);
        ck_assert_str_eq(sp_arch_model_type((sp_arch)i), f->model_type);
    }
    sp_arch a;
    ck_assert_int_eq(sp__arch_from_model_type("mt5", &a), -1);
    ck_assert_int_eq(sp__arch_from_model_type("", &a), -1);
    ck_assert_str_eq(sp__arch_supported_quoted(),
                     "\"gpt2\", \"llama\", \"qwen2\", \"mistral\", \"qwen3\", \"gemma\", "
                     "\"gemma2\", \"gemma3_text\", \"gpt_neox\", \"phi3\", \"opt\", \"phi\", "
                     "\"bert\", \"roberta\", \"t5\", \"bloom\"");
    ck_assert_str_eq(sp__arch_supported_plain(),
                     "gpt2, llama, qwen2, mistral, qwen3, gemma, gemma2, gemma3_text, gpt_neox, "
                     "phi3, opt, phi, bert, roberta, t5 or bloom");
}
END_TEST

typedef struct order_ctx {
    int runs;      /* runs of per-layer model rows seen */
    int in_layer;  /* the last row was a layer's */
    int last_rank; /* HF order: ranks increase */
    int n;
} order_ctx;

static int note_row(void *ctx, const sp__tensor_desc *row, int layer) {
    order_ctx *k = ctx;
    if (row->role == SP_ROLE_BUFFER) return 0;
    if (layer == 0 && !k->in_layer) k->runs++;
    k->in_layer = layer >= 0;
    k->n++;
    return 0;
}

/* Each table: a layer's tensors (buffers aside) form one run in both orders, so that a
 * layer's rows are hashed and written together; HF ranks are distinct; roles other than
 * buffers appear once; buffers are never loaded, written or hashed; every row has a name the
 * fingerprint hashes it under and a shape. */
START_TEST(tensor_tables_are_well_formed) {
    for (int i = 0; i < SP_N_ARCH; i++) {
        const sp__family *f = sp__family_of((sp_arch)i);
        int seen_role[2][SP_ROLE_BUFFER + 1] = {{0}}, seen_rank[64] = {0};
        sp_model_config c = {.arch = f->arch, .n_layer = 1};
        for (int r = 0; r < f->n_tensors; r++) {
            const sp__tensor_desc *row = &f->tensors[r];
            ck_assert_msg(row->hf_rank >= 0 && row->hf_rank < 64 && !seen_rank[row->hf_rank]++,
                          "%s: %s", f->model_type, row->name);
            if (row->role == SP_ROLE_BUFFER) {
                ck_assert(row->when == SP_NEVER && row->init == SP_INIT_NONE && !row->fp_name);
                continue;
            }
            /* T5: the decoder's blocks (stack 1) have the encoder's roles; a gated MLP's wi_0
             * has the role of an ungated one's wi (its alternative) */
            int stack = sp__tensor_layer(row, &c, 0) != 0;
            if (row->when != SP_IF_NOT_GATED)
                ck_assert_msg(!seen_role[stack][row->role]++, "%s: role of %s twice", f->model_type,
                              row->name);
            ck_assert(row->fp_name && row->shape[0] != SP_DIM_NONE && row->when != SP_NEVER);
        }
        for (int o = 0; o < 2; o++) {
            order_ctx k = {0};
            sp__tensors_walk(f, 3, o ? SP_ORDER_HF : SP_ORDER_TABLE, note_row, &k);
            ck_assert_msg(k.runs == (f->arch == SP_ARCH_T5 ? 2 : 1), "%s: layer rows in %d runs",
                          f->model_type, k.runs);
        }
    }
}
END_TEST

/* Names match their rows with or without GPT-2's prefix, and nothing else does. */
START_TEST(tensor_names_match_their_rows) {
    const sp__family *g = sp__family_of(SP_ARCH_GPT2), *l = sp__family_of(SP_ARCH_LLAMA);
    int layer = -7;
    const sp__tensor_desc *row = sp__tensor_match(g, "transformer.h.11.mlp.c_fc.bias", &layer);
    ck_assert(row && row->role == SP_ROLE_MLP_IN_B && layer == 11);
    row = sp__tensor_match(g, "h.3.attn.masked_bias", &layer);
    ck_assert(row && row->role == SP_ROLE_BUFFER && layer == 3);
    row = sp__tensor_match(g, "wte.weight", &layer);
    ck_assert(row && row->role == SP_ROLE_WTE && layer == -1);
    ck_assert_ptr_null(sp__tensor_match(g, "h.-1.ln_1.weight", &layer));
    ck_assert_ptr_null(sp__tensor_match(g, "h. 1.ln_1.weight", &layer));
    ck_assert_ptr_null(sp__tensor_match(g, "h.1.ln_1.weightx", &layer));
    ck_assert_ptr_null(sp__tensor_match(g, "h..ln_1.weight", &layer));
    ck_assert_ptr_null(sp__tensor_match(l, "transformer.model.norm.weight", &layer));
    row = sp__tensor_match(l, "model.layers.0.self_attn.k_proj.bias", &layer);
    ck_assert(row && row->role == SP_ROLE_K_B && layer == 0);
    char name[96];
    sp__tensor_name(row, 12, name, sizeof name);
    ck_assert_str_eq(name, "model.layers.12.self_attn.k_proj.bias");
}
END_TEST

/* The encoders' real shapes: BertForMaskedLM bert-base-uncased and RobertaForMaskedLM roberta-base
 * have 109,514,298 and 124,697,433 parameters in transformers (the decoder tied to the word
 * embeddings, its bias once, no pooler); both names of each tensor, with and without the base
 * model's prefix, and the pooler, position_ids and decoder bias known as buffers. */
START_TEST(encoder_shapes_and_names) {
    sp_model_config bert = {.arch = SP_ARCH_BERT,
                            .n_layer = 12,
                            .d_model = 768,
                            .n_head = 12,
                            .d_ff = 3072,
                            .vocab_size = 30522,
                            .n_ctx = 512,
                            .tied = 1,
                            .type_vocab_size = 2};
    sp_model_config roberta = bert;
    roberta.arch = SP_ARCH_ROBERTA, roberta.vocab_size = 50265, roberta.type_vocab_size = 1;
    roberta.pos_offset = 2;
    ck_assert_int_eq(sp__family_param_count(&bert), 109514298);
    ck_assert_int_eq(sp__family_param_count(&roberta), 124697433);
    const sp__family *b = sp__family_of(SP_ARCH_BERT), *r = sp__family_of(SP_ARCH_ROBERTA);
    int layer = -1;
    const sp__tensor_desc *row =
        sp__tensor_match(b, "bert.encoder.layer.11.attention.output.LayerNorm.bias", &layer);
    ck_assert(row && row->role == SP_ROLE_LN_POST_ATTN_B && layer == 11);
    row = sp__tensor_match(b, "encoder.layer.3.output.dense.weight", &layer);
    ck_assert(row && row->role == SP_ROLE_MLP_OUT_W && layer == 3);
    row = sp__tensor_match(b, "cls.predictions.bias", &layer);
    ck_assert(row && row->role == SP_ROLE_LM_HEAD_B);
    row = sp__tensor_match(r, "roberta.embeddings.position_embeddings.weight", &layer);
    ck_assert(row && row->role == SP_ROLE_WPE);
    int64_t shape[2];
    sp__tensor_shape(row, &roberta, shape);
    ck_assert(shape[0] == 514 && shape[1] == 768);
    row = sp__tensor_match(r, "lm_head.layer_norm.weight", &layer);
    ck_assert(row && row->role == SP_ROLE_HEAD_LN_W);
    const char *buffers[] = {"bert.pooler.dense.weight", "bert.embeddings.position_ids",
                             "cls.predictions.decoder.bias"};
    for (int i = 0; i < 3; i++) {
        row = sp__tensor_match(b, buffers[i], &layer);
        ck_assert_msg(row && row->role == SP_ROLE_BUFFER, "%s", buffers[i]);
    }
    ck_assert_ptr_null(sp__tensor_match(b, "roberta.embeddings.word_embeddings.weight", &layer));
}
END_TEST

/* ---- models of every family ---------------------------------------------------------------- */

/* A tiny random model of family a with every bias its family can have and an untied head. */
static char *write_model(const char *name, sp_arch a, uint64_t seed) {
    sp_init_options o;
    sp_init_options_default(&o);
    o.cfg = (sp_model_config){.arch = a,
                              .n_layer = 2,
                              .d_model = 24,
                              .n_head = 4,
                              .d_ff = 40,
                              .vocab_size = 53,
                              .n_ctx = 256,
                              .ln_eps = 1e-5f,
                              .rope_theta = 10000};
    const sp__family *f = sp__family_of(a);
    if (f->gqa) o.cfg.n_kv_head = 2, o.cfg.head_dim = 8; /* qd 32 != d */
    int attention_bias =
        a == SP_ARCH_QWEN3 || a == SP_ARCH_GEMMA || a == SP_ARCH_GEMMA2 || a == SP_ARCH_GEMMA3;
    o.cfg.qkv_bias = a == SP_ARCH_QWEN2 || a == SP_ARCH_LLAMA || attention_bias;
    o.cfg.o_bias = a == SP_ARCH_LLAMA || attention_bias;
    o.cfg.mlp_bias = a == SP_ARCH_LLAMA;
    if (f->window_key) o.cfg.sliding_window = 16; /* shorter than the long sequences */
    if (a == SP_ARCH_GEMMA2 || a == SP_ARCH_GEMMA3) o.cfg.attn_softcap = 5, o.cfg.logit_softcap = 3;
    if (a == SP_ARCH_GEMMA2) o.cfg.window_pattern = 2;
    if (a == SP_ARCH_GEMMA3) o.cfg.window_pattern = 2, o.cfg.rope_local_theta = 100;
    if (a == SP_ARCH_BERT) o.cfg.type_vocab_size = 2;
    if (a == SP_ARCH_ROBERTA) o.cfg.type_vocab_size = 1, o.cfg.pos_offset = 2;
    if (a == SP_ARCH_GPT_NEOX) /* Pythia's block with a partial rotation, q/k/v and dense biases */
        o.cfg.qkv_bias = o.cfg.o_bias = 1, o.cfg.parallel_residual = 1, o.cfg.gelu_exact = 1,
        o.cfg.rotary_dim = 2;
    if (a == SP_ARCH_PHI3) o.cfg.rotary_dim = 4; /* half of head_dim 8 */
    if (a == SP_ARCH_OPT) /* enable_bias, position 0 at row 2; an even seed: opt-350m's form */
        o.cfg.qkv_bias = o.cfg.o_bias = o.cfg.mlp_bias = 1, o.cfg.pos_offset = 2,
        o.cfg.post_norm = seed % 2 == 0, o.cfg.d_embed = seed % 2 == 0 ? 16 : 0;
    if (a == SP_ARCH_PHI) o.cfg.rotary_dim = 4;
    if (a == SP_ARCH_T5) /* every head of the encoder and decoder, ReLU and gated-GELU */
        o.cfg.n_kv_head = 0, o.cfg.rel_buckets = 8, o.cfg.rel_max_distance = 20,
        o.cfg.ff_gated = (int)(seed % 2);
    if (a == SP_ARCH_BLOOM) /* BloomMLP's 4 d, biases everywhere, residuals from the norms */
        o.cfg.d_ff = 96, o.cfg.qkv_bias = o.cfg.o_bias = o.cfg.mlp_bias = 1,
        o.cfg.residual_from_norm = 1;
    o.seed = seed, o.random_norms = 1, o.std = 0.2f;
    char *dir = tu_path(tu_dir, name);
    sp_error err = {0};
    ck_assert_msg(sp_init_model_write(dir, &o, &err) == 0, "%s", err.msg);
    return dir;
}

static void load_model(sp_model *m, sp_arch a, uint64_t seed) {
    char name[32];
    snprintf(name, sizeof name, "%s-%llu", sp_arch_model_type(a), (unsigned long long)seed);
    char *dir = write_model(name, a, seed);
    sp_error err = {0};
    ck_assert_msg(sp_model_load(m, dir, &err) == 0, "%s", err.msg);
    free(dir);
}

/* The table's parameter count is the loader's (tied: the head counted once). */
START_TEST(param_count_is_the_loaders) {
    for (int i = 0; i <= SP_N_ARCH; i++) { /* the last: OPT post-norm with project_in/out */
        sp_model m;
        load_model(&m, i < SP_N_ARCH ? (sp_arch)i : SP_ARCH_OPT, i < SP_N_ARCH ? 5 : 6);
        ck_assert_int_eq(sp__family_param_count(&m.cfg), m.n_params);
        ck_assert_int_eq(sp_config_embed_dim(&m.cfg), i < SP_N_ARCH ? 24 : 16);
        sp_model_free(&m);
    }
}
END_TEST

/* ---- activation memory --------------------------------------------------------------------- */

#define CANARY 0x7fbadbadu /* a NaN no kernel writes */

static void fill_canary(sp_worker *w) {
    for (int i = 0; i < SP_N_ACT; i++) {
        size_t cap;
        float *p = sp__worker_buffer(w, i, &cap);
        for (size_t j = 0; j < cap; j++) memcpy(&p[j], &(uint32_t){CANARY}, 4);
    }
}

/* Floats of buffer i up to the last one the run changed. */
static size_t touched(const sp_worker *w, int i) {
    size_t cap;
    const float *p = sp__worker_buffer(w, i, &cap);
    for (size_t j = cap; j > 0; j--) {
        uint32_t u;
        memcpy(&u, &p[j - 1], 4);
        if (u != CANARY) return j;
    }
    return 0;
}

/* A batch of sequences of the given lengths, a few soft tokens at the start of each, targets
 * at the last position (classification) or at every position from the fifth (generation). */
typedef struct test_batch {
    int32_t start[8], tokens[1024], pos[1024], ids[1024];
    sp_batch b;
} test_batch;

static void make_batch(test_batch *t, const int *lens, int n, int generation, int V, sp_rng *r) {
    int nt = 0;
    t->start[0] = 0;
    for (int s = 0; s < n; s++) {
        t->start[s + 1] = t->start[s] + lens[s];
        for (int k = 0; k < lens[s]; k++) {
            int at = t->start[s] + k;
            t->tokens[at] = k < 3 ? SP_SOFT(k) : (int32_t)sp_rng_below(r, (uint64_t)V);
            if (generation ? k >= 4 : k == lens[s] - 1)
                t->pos[nt] = at, t->ids[nt++] = (int32_t)sp_rng_below(r, (uint64_t)V);
        }
    }
    t->b = (sp_batch){n, t->start, t->tokens, nt, t->pos, t->ids, NULL, NULL};
}

/* Runs b (behind a key/value prefix of n_kv rows) with a fresh worker, then again over
 * canary-filled buffers, and checks what the second run touched against what was allocated and
 * estimated: every buffer touched within its size, every allocated buffer touched (the table
 * has no dead rows), the total within sp_model_activation_bytes for the batch's sizes and
 * within the memory check's per-token bound. Under the sanitizer build (SP_SANITIZE) a write
 * past the end of any buffer fails the run itself. */
static void check_memory(const sp_model *m, const sp_batch *b, int n_kv, const char *what) {
    sp_worker *w = sp_worker_new(m);
    float prompt[3 * 24], grad[3 * 24] = {0};
    for (int i = 0; i < 3 * 24; i++) prompt[i] = 0.1f * (float)(i % 7);
    size_t nkv = (size_t)m->cfg.n_layer * 2 * n_kv * sp_config_kv_heads(&m->cfg) *
                 sp_config_head_dim(&m->cfg);
    float *prefix = calloc(nkv + 1, sizeof *prefix), *kv_grad = calloc(nkv + 1, sizeof *kv_grad);
    for (size_t i = 0; i < nkv; i++) prefix[i] = 0.01f * (float)(i % 13);
    sp_pass pass = {.prompt = prompt,
                    .n_prompt = 3,
                    .grad = grad,
                    .kv_prefix = prefix,
                    .n_kv_prefix = n_kv,
                    .kv_prefix_grad = kv_grad};
    double loss;
    sp_error err = {0};
    ck_assert_msg(sp_engine_run(w, b, &pass, &loss, &err) == 0, "%s", err.msg);
    fill_canary(w);
    ck_assert_msg(sp_engine_run(w, b, &pass, &loss, &err) == 0, "%s", err.msg);
    ck_assert_msg(isfinite(loss), "%s: loss %g", what, loss);
    int max_len = n_kv; /* the most keys a query attends to */
    for (int s = 0; s < b->n_seq; s++)
        if (n_kv + b->seq_start[s + 1] - b->seq_start[s] > max_len)
            max_len = n_kv + b->seq_start[s + 1] - b->seq_start[s];
    size_t N = (size_t)b->seq_start[b->n_seq], nt = (size_t)b->n_targets, total = 0;
    for (int i = 0; i < SP_N_ACT; i++) {
        size_t cap, used = touched(w, i);
        sp__worker_buffer(w, i, &cap);
        ck_assert_msg(used <= cap, "%s: %s", what, sp__worker_buffer_name(i));
        ck_assert_msg(cap == 0 || used > 0, "%s: buffer %s (%zu floats) allocated, never used",
                      what, sp__worker_buffer_name(i), cap);
        total += used * sizeof(float);
    }
    size_t estimate = sp_model_activation_bytes(m, N, nt, max_len);
    size_t per_token = N * sp_model_activation_bytes_per_token(m, max_len) +
                       nt * (size_t)m->cfg.vocab_size * sizeof(float);
    if (m->cfg.arch == SP_ARCH_T5) /* its buffers, sized by rows of each stack: at most that */
        ck_assert_uint_le(sp_worker_bytes(w), estimate);
    else /* a fresh worker allocates the estimate */
        ck_assert_uint_eq(sp_worker_bytes(w), estimate);
    ck_assert_msg(total <= estimate && estimate <= per_token,
                  "%s (N %zu, %zu targets, longest %d): touched %zu bytes, estimate %zu, per-token "
                  "bound %zu",
                  what, N, nt, max_len, total, estimate, per_token);
    sp_worker_free(w);
    free(prefix), free(kv_grad);
}

START_TEST(memory_touched_within_the_estimate) {
    static const struct {
        const char *what;
        int n, lens[4], generation, n_kv;
    } batches[] = {
        {"one token", 1, {1}, 0, 0},
        {"short sequences, classification", 3, {4, 6, 5}, 0, 0},
        {"short sequences, generation", 3, {7, 5, 9}, 1, 0},
        {"long sequences, classification", 3, {200, 70, 130}, 0, 0},
        {"long sequences, generation", 2, {250, 129}, 1, 0},
        {"short sequences behind a prefix of 20", 3, {20, 6, 25}, 0, 20},
        {"long sequences behind a prefix of 50", 2, {200, 150}, 1, 50},
    };
    sp_rng r;
    sp_rng_seed(&r, 3);
    for (int j = 0; j <= SP_N_ARCH; j++) { /* the last: OPT's opt-350m form (an even seed) */
        int i = j < SP_N_ARCH ? j : SP_ARCH_OPT;
        sp_model m;
        load_model(&m, (sp_arch)i, j < SP_N_ARCH ? 7 + (uint64_t)i : 100);
        for (size_t k = 0; k < sizeof batches / sizeof batches[0]; k++) {
            test_batch t;
            char what[128];
            make_batch(&t, batches[k].lens, batches[k].n, batches[k].generation, m.cfg.vocab_size,
                       &r);
            snprintf(what, sizeof what, "%s: %s", sp_arch_model_type((sp_arch)i), batches[k].what);
            check_memory(&m, &t.b, batches[k].n_kv, what);
        }
        sp_model_free(&m);
    }
}
END_TEST

int main(void) {
    Suite *s = suite_create("family");
    TCase *tc = tcase_create("descriptions");
    tcase_add_test(tc, every_arch_has_a_family);
    tcase_add_test(tc, tensor_tables_are_well_formed);
    tcase_add_test(tc, tensor_names_match_their_rows);
    tcase_add_test(tc, encoder_shapes_and_names);
    suite_add_tcase(s, tc);
    TCase *models = tcase_create("models");
    tcase_add_checked_fixture(models, tu_dir_setup, tu_dir_teardown);
    tcase_add_test(models, param_count_is_the_loaders);
    tcase_add_test(models, memory_touched_within_the_estimate);
    suite_add_tcase(s, models);
    return tu_run_suite(s);
}
