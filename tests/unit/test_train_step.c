/* The trainer in-process (one rank, no MPI started):
 *  - one SGD step moves the prompt by exactly -lr x the gradient of the mean loss that the
 *    independent float64 PyTorch reference computed for the same model and batch
 *    (tests/fixtures/ref), with the batch split over several micro-batches;
 *  - every prompt initialisation does what its name says. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "softprompt/checkpoint.h"
#include "softprompt/dataset.h"
#include "softprompt/model_init.h"
#include "softprompt/safetensors.h"
#include "softprompt/tokenizer.h"
#include "softprompt/train.h"
#include "testutil.h"
#include "train/internal.h"

static const sp_dist ONE_RANK = {0, 1, 0, 1};

/* Writes prompt [P, d] as the root dataset "prompt" of a plain HDF5 file (as h5py users would). */
static void write_prompt_h5(const char *path, const float *prompt, int P, int d) {
    hsize_t dims[2] = {(hsize_t)P, (hsize_t)d};
    tu_h5_write_dataset(path, "prompt", 2, dims, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, prompt);
}

static int32_t *json_ints(json_t *root, const char *key, int *n) {
    json_t *a = json_object_get(root, key);
    ck_assert_msg(json_is_array(a), "batch.json: %s", key);
    *n = (int)json_array_size(a);
    int32_t *v = malloc(((size_t)*n + 1) * sizeof *v);
    for (int i = 0; i < *n; i++) v[i] = (int32_t)json_integer_value(json_array_get(a, (size_t)i));
    return v;
}

/* The fixture's packed batch as a generation dataset, one example per sequence. */
static int write_fixture_dataset(const char *case_dir, const char *out, int *n_prompt) {
    char path[2048];
    snprintf(path, sizeof path, "%s/batch.json", case_dir);
    json_error_t je;
    json_t *b = json_load_file(path, 0, &je);
    ck_assert_msg(b != NULL, "%s: %s", path, je.text);
    *n_prompt = (int)json_integer_value(json_object_get(b, "n_prompt"));
    int n_start, n_tok, n_tgt, n_ids;
    int32_t *start = json_ints(b, "seq_start", &n_start), *tok = json_ints(b, "tokens", &n_tok);
    int32_t *pos = json_ints(b, "target_pos", &n_tgt), *ids = json_ints(b, "target_ids", &n_ids);
    sp_dataset_meta meta = {.task = SP_TASK_GENERATION,
                            .n_soft = *n_prompt,
                            .tokenizer_hash = "fixture",
                            .split = "train"};
    sp_error err;
    sp_dataset_writer *w = sp_dataset_writer_open(out, &meta, 1, &err);
    ck_assert_msg(w != NULL, "%s", err.msg);
    int j = 0;
    for (int s = 0; s + 1 < n_start; s++) {
        int32_t lp[64], li[64];
        int n = 0;
        for (; j < n_tgt && pos[j] < start[s + 1]; j++) lp[n] = pos[j] - start[s], li[n++] = ids[j];
        ck_assert_msg(sp_dataset_writer_add(w, tok + start[s], start[s + 1] - start[s], lp, li, n,
                                            -1, &err) == 0,
                      "%s", err.msg);
    }
    ck_assert_msg(sp_dataset_writer_close(w, &err) == 0, "%s", err.msg);
    free(start), free(tok), free(pos), free(ids);
    json_decref(b);
    return n_start - 1;
}

static double *read_f64(const sp_st_file *f, const char *name, size_t *n) {
    const sp_st_tensor *t = sp_st_find(f, name);
    ck_assert_msg(t && t->dtype == SP_DTYPE_F64, "expected.safetensors: %s", name);
    double *v = malloc((size_t)t->numel * sizeof *v);
    memcpy(v, t->data, (size_t)t->numel * sizeof *v);
    *n = (size_t)t->numel;
    return v;
}

static void check_sgd_step(const char *case_name) {
    char case_dir[1024], path[2048];
    snprintf(case_dir, sizeof case_dir, "%s/ref/%s", SP_FIXTURES_DIR, case_name);
    char *tmp = tu_mkdtemp(), *data = tu_path(tmp, "train.h5"), *init = tu_path(tmp, "p0.h5");
    char *out = tu_path(tmp, "out");
    int P, n_seq = write_fixture_dataset(case_dir, data, &P);

    snprintf(path, sizeof path, "%s/expected.safetensors", case_dir);
    sp_st_file ex;
    sp_error err;
    ck_assert_msg(sp_st_open(&ex, path, &err) == 0, "%s", err.msg);
    const sp_st_tensor *p0 = sp_st_find(&ex, "prompt");
    int d = (int)p0->shape[1];
    float *prompt0 = malloc((size_t)P * d * sizeof *prompt0);
    sp_convert_to_f32(p0->dtype, p0->data, prompt0, (size_t)P * d);
    size_t n;
    double *grad = read_f64(&ex, "grad_mean", &n);
    write_prompt_h5(init, prompt0, P, d);

    sp_train_config c;
    sp_train_config_default(&c);
    c.model_dir = case_dir, c.train_path = data, c.out_dir = out;
    c.steps = 1, c.global_batch = n_seq, c.micro_batch = 2; /* several micro-batches per step */
    sp_optim_config_default(&c.optim, SP_OPTIM_SGD);
    c.optim.lr = 0.5, c.optim.weight_decay = 0, c.optim.beta1 = 0;
    c.init = SP_INIT_FILE, c.init_arg = init, c.quiet = 1, c.resume = "never", c.threads = 1;
    ck_assert_msg(sp_train_run(&c, &ONE_RANK, &err) == 0, "%s: %s", case_name, err.msg);

    snprintf(path, sizeof path, "%s/checkpoints", out);
    char *ckpt = sp_checkpoint_path(path, 1);
    sp_checkpoint ck;
    ck_assert_msg(sp_checkpoint_read(ckpt, &ck, &err) == 0, "%s", err.msg);
    /* (p0 - p1) / lr against the reference gradient, normwise relative: the float32 engine and
     * the float32 update round at ~1e-6 of max|grad|. */
    double gmax = 0, worst = 0;
    for (size_t i = 0; i < n; i++) gmax = fmax(gmax, fabs(grad[i]));
    for (size_t i = 0; i < n; i++) {
        double moved = ((double)prompt0[i] - (double)ck.prompt[i]) / c.optim.lr;
        worst = fmax(worst, fabs(moved - grad[i]));
    }
    printf("%s: SGD step vs reference gradient: max error %.3g of max |grad| %.3g\n", case_name,
           worst, gmax);
    ck_assert_msg(worst <= 1e-4 * gmax,
                  "%s: step moved the prompt by -lr x (grad + error), error "
                  "%.3g > 1e-4 x %.3g",
                  case_name, worst, gmax);
    sp_checkpoint_free(&ck);
    free(ckpt), free(grad), free(prompt0);
    sp_st_close(&ex);
    tu_rmtree(tmp);
    free(tmp), free(data), free(init), free(out);
}

START_TEST(test_sgd_step_matches_reference) {
    check_sgd_step("l3_h4_d32_sharded3_prefix_f32");
    check_sgd_step("l2_h4_d32_f16");
    check_sgd_step("l1_h1_d16_f32");
}
END_TEST

/* ---------------------------------------------------------------- initialisation */

typedef struct init_env {
    char *tmp, *model_dir, *data;
    sp_model m;
    sp_dataset *ds;
} init_env;

static void init_env_open(init_env *e, int vocab) {
    e->tmp = tu_mkdtemp();
    e->model_dir = tu_path(e->tmp, "model"), e->data = tu_path(e->tmp, "train.h5");
    sp_init_options o = tu_gpt2_options(1, 8, 2, 32, vocab, 32, 3);
    sp_error err;
    ck_assert_msg(sp_init_model_write(e->model_dir, &o, &err) == 0, "%s", err.msg);
    ck_assert_msg(sp_model_load(&e->m, e->model_dir, &err) == 0, "%s", err.msg);
    /* Classification set: soft slots, tokens 40..47 (45 the most frequent), answer 5 or 6. */
    int32_t verbalizer[2] = {5, 6};
    const char *names[2] = {"a", "b"};
    sp_dataset_meta meta = {.task = SP_TASK_CLASSIFICATION,
                            .n_soft = 4,
                            .n_classes = 2,
                            .verbalizer = verbalizer,
                            .class_names = names,
                            .tokenizer_hash = "t",
                            .split = "train"};
    sp_dataset_writer *w = sp_dataset_writer_open(e->data, &meta, 1, &err);
    ck_assert_msg(w != NULL, "%s", err.msg);
    for (int i = 0; i < 20; i++) {
        int32_t tok[] = {SP_SOFT(0), SP_SOFT(1), SP_SOFT(2), SP_SOFT(3), 40 + i % 8, 45, 45};
        int32_t pos = 6, id = verbalizer[i % 2];
        ck_assert_msg(sp_dataset_writer_add(w, tok, 7, &pos, &id, 1, i % 2, &err) == 0, "%s",
                      err.msg);
    }
    ck_assert_msg(sp_dataset_writer_close(w, &err) == 0, "%s", err.msg);
    e->ds = sp_dataset_open(e->data, &err);
    ck_assert_msg(e->ds != NULL, "%s", err.msg);
}

static void init_env_close(init_env *e) {
    sp_dataset_close(e->ds);
    sp_model_free(&e->m);
    tu_rmtree(e->tmp);
    free(e->tmp), free(e->model_dir), free(e->data);
}

/* Index of the vocabulary row prompt row k equals, or -1. */
static int embedding_row(const sp_model *m, const float *row) {
    for (int v = 0; v < m->cfg.vocab_size; v++)
        if (memcmp((const float *)m->wte + (size_t)v * m->cfg.d_model, row,
                   (size_t)m->cfg.d_model * 4) == 0)
            return v;
    return -1;
}

static void run_init(init_env *e, sp_train_config *c, float *prompt, int P) {
    sp_rng r;
    sp_rng_seed(&r, 11);
    sp_error err;
    c->model_dir = e->model_dir;
    ck_assert_msg(sp__prompt_init(prompt, P, &e->m, c, e->ds, &r, &err) == 0, "%s", err.msg);
}

START_TEST(test_init_kinds) {
    init_env e;
    init_env_open(&e, 64);
    sp_train_config c;
    sp_train_config_default(&c);
    float p[4 * 8];
    c.init = SP_INIT_RANDOM;
    run_init(&e, &c, p, 4);
    for (int i = 0; i < 32; i++) ck_assert(p[i] >= -0.5f && p[i] < 0.5f);
    ck_assert(p[0] != p[1]);
    c.init = SP_INIT_VOCAB;
    run_init(&e, &c, p, 4);
    for (int k = 0; k < 4; k++) ck_assert_int_ge(embedding_row(&e.m, p + k * 8), 0);
    /* Sampled from the training set's tokens only (top 5,000 of 8 distinct: all of them). */
    c.init = SP_INIT_VOCAB_TOP;
    run_init(&e, &c, p, 4);
    for (int k = 0; k < 4; k++) {
        int v = embedding_row(&e.m, p + k * 8);
        ck_assert_msg(v >= 40 && v <= 47, "row %d is token %d, which the dataset lacks", k, v);
    }
    c.init = SP_INIT_LABELS; /* class words first, then sampled vocabulary */
    run_init(&e, &c, p, 4);
    ck_assert_int_eq(embedding_row(&e.m, p), 5);
    ck_assert_int_eq(embedding_row(&e.m, p + 8), 6);
    int v = embedding_row(&e.m, p + 16);
    ck_assert(v >= 40 && v <= 47);
    init_env_close(&e);
}
END_TEST

START_TEST(test_init_text_and_file) {
    init_env e;
    init_env_open(&e, 50257);
    sp_train_config c;
    sp_train_config_default(&c);
    c.init = SP_INIT_TEXT, c.init_arg = "Hello world";
    c.tokenizer_dir = SP_CACHE_DIR "/gpt2-tokenizer";
    float p[5 * 8];
    run_init(&e, &c, p, 5);
    /* PEFT's TEXT init: the text's tokens repeated to the prompt length. */
    int expect[5] = {15496, 995, 15496, 995, 15496};
    for (int k = 0; k < 5; k++) ck_assert_int_eq(embedding_row(&e.m, p + k * 8), expect[k]);

    char *f = tu_path(e.tmp, "p.h5");
    float q[4 * 8];
    for (int i = 0; i < 32; i++) q[i] = (float)i / 7.0f;
    write_prompt_h5(f, q, 4, 8);
    c.init = SP_INIT_FILE, c.init_arg = f;
    run_init(&e, &c, p, 4);
    ck_assert_mem_eq(p, q, sizeof q);
    sp_rng r;
    sp_error err;
    ck_assert_int_eq(sp__prompt_init(p, 5, &e.m, &c, e.ds, &r, &err), -1);
    ck_assert_msg(strstr(err.msg, "prompt has shape [4, 8], this run needs [5, 8]"), "%s", err.msg);
    free(f);
    init_env_close(&e);
}
END_TEST

int main(void) {
    Suite *s = suite_create("train_step");
    TCase *tc = tcase_create("trainer");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_sgd_step_matches_reference);
    tcase_add_test(tc, test_init_kinds);
    tcase_add_test(tc, test_init_text_and_file);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
