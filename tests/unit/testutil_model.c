/* Test factories for models, classification sets, prompt checkpoints and PEFT adapters. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "softprompt/rng.h"
#include "testutil.h"

sp_model_config tu_gpt2_config(int n_layer, int d_model, int n_head, int d_ff, int vocab_size,
                               int n_ctx) {
    return (sp_model_config){.n_layer = n_layer,
                             .d_model = d_model,
                             .n_head = n_head,
                             .d_ff = d_ff,
                             .vocab_size = vocab_size,
                             .n_ctx = n_ctx,
                             .ln_eps = 1e-5f,
                             .tied = 1,
                             .arch = SP_ARCH_GPT2};
}

sp_init_options tu_gpt2_options(int n_layer, int d_model, int n_head, int d_ff, int vocab_size,
                                int n_ctx, uint64_t seed) {
    sp_init_options o;
    sp_init_options_default(&o);
    o.cfg = tu_gpt2_config(n_layer, d_model, n_head, d_ff, vocab_size, n_ctx);
    o.seed = seed;
    return o;
}

char *tu_write_model(const char *name, const sp_init_options *o) {
    char *dir = tu_path(tu_dir, name);
    sp_error err = {0};
    ck_assert_msg(sp_init_model_write(dir, o, &err) == 0, "%s", err.msg);
    return dir;
}

char *tu_tiny_gpt2(const char *name, uint64_t seed) {
    sp_init_options o = tu_gpt2_options(2, 16, 2, 64, 211, 32, seed);
    return tu_write_model(name, &o);
}

void tu_model_load_ok(sp_model *m, const char *dir) {
    sp_error err = {0};
    ck_assert_msg(sp_model_load(m, dir, &err) == 0, "%s", err.msg);
}

static const int32_t VERB[2] = {10, 20};
static const char *const CLASSES[2] = {"neg", "pos"};

/* "<soft0> <soft1> ... {text} It was" for n soft tokens. */
static char *default_template(int n) {
    size_t cap = 16 + (size_t)n * 12, len = 0;
    char *s = malloc(cap);
    for (int k = 0; k < n; k++) len += (size_t)snprintf(s + len, cap - len, "<soft%d> ", k);
    snprintf(s + len, cap - len, "{text} It was");
    return s;
}

static void add_example(sp_dataset_writer *w, const tu_cls_set *s, int i) {
    int32_t tok[64];
    int len = s->n_soft + s->text_min + i % s->text_mod + (s->longer == i + 1);
    ck_assert_int_le(len, 64);
    for (int k = 0; k < s->n_soft; k++) tok[k] = SP_SOFT(k);
    for (int t = s->n_soft; t < len; t++) tok[t] = 100 + i + t;
    int label = (i % 3 == 0) ^ (s->flip_label == i + 1);
    int32_t pos = len - 1, id = VERB[label];
    sp_error err = {0};
    ck_assert_msg(sp_dataset_writer_add(w, tok, len, &pos, &id, 1, label, &err) == 0, "%s",
                  err.msg);
}

char *tu_write_cls_set(const char *name, const tu_cls_set *s) {
    char *tpl = s->template_spec ? NULL : default_template(s->n_soft);
    sp_dataset_meta m = {0};
    m.task = SP_TASK_CLASSIFICATION;
    m.n_soft = s->n_soft, m.n_classes = 2, m.verbalizer = VERB, m.class_names = CLASSES;
    m.max_length = 32, m.seed = 5;
    m.tokenizer_hash = "sha256:tok";
    m.template_spec = s->template_spec ? s->template_spec : tpl;
    m.target_spec = "{label}";
    m.verbalizer_spec = "neg: 10, pos: 20";
    m.source = name, m.split = name, m.created_by = "test";
    char *path = tu_path(tu_dir, name);
    sp_error err = {0};
    sp_dataset_writer *w = sp_dataset_writer_open(path, &m, 0, &err);
    ck_assert_msg(w != NULL, "%s", err.msg);
    for (int i = 0; i < s->n_examples; i++) add_example(w, s, i);
    ck_assert_msg(sp_dataset_writer_close(w, &err) == 0, "%s", err.msg);
    free(tpl);
    return path;
}

void tu_fill_prompt(float *p, int n, float scale) {
    for (int i = 0; i < n; i++) p[i] = scale * (float)((i * 7) % 13 - 6);
}

float *tu_random_rows(size_t n, uint64_t seed, float std) {
    float *p = malloc(n * sizeof *p);
    ck_assert(p != NULL);
    sp_rng r;
    sp_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) p[i] = std * (float)sp_rng_normal(&r);
    return p;
}

char *tu_write_prompt_checkpoint(const char *name, const char *model_dir, int n_prompt,
                                 const char *config_json) {
    sp_model m;
    tu_model_load_ok(&m, model_dir);
    int d = m.cfg.d_model;
    char fp[17];
    sp_model_fingerprint(&m, fp);
    sp_model_free(&m);
    float *prompt = malloc((size_t)n_prompt * (size_t)d * sizeof *prompt);
    tu_fill_prompt(prompt, n_prompt * d, 0.01f);
    sp_checkpoint c = {0};
    c.n_prompt = n_prompt, c.d = d, c.prompt = prompt, c.step = 12, c.optim_step = 12;
    c.rng[0] = 1, c.metric = c.best_metric = NAN, c.best_step = -1;
    c.config_json = (char *)config_json, c.model_fingerprint = fp;
    char *path = tu_path(tu_dir, name);
    sp_error err = {0};
    ck_assert_msg(sp_checkpoint_write(path, &c, &err) == 0, "%s", err.msg);
    free(prompt);
    return path;
}

char *tu_write_adapter(const char *name, const char *model_dir, int n_prompt, const char *init,
                       const char *text) {
    sp_model m;
    tu_model_load_ok(&m, model_dir);
    int d = m.cfg.d_model;
    float *prompt = malloc((size_t)n_prompt * (size_t)d * sizeof *prompt);
    tu_fill_prompt(prompt, n_prompt * d, 0.02f);
    char *dir = tu_path(tu_dir, name);
    sp_error err = {0};
    ck_assert_msg(sp_peft_export(dir, prompt, n_prompt, &m, "org/base", init, text, &err) == 0,
                  "%s", err.msg);
    sp_model_free(&m);
    free(prompt);
    return dir;
}

sp_prompt_file tu_prompt_load_ok(const char *path, int n_prompt, int d) {
    sp_prompt_file pf;
    sp_error err = {0};
    ck_assert_msg(sp_prompt_load(path, &pf, &err) == 0, "%s: %s", path, err.msg);
    ck_assert_int_eq(pf.n_prompt, n_prompt);
    ck_assert_int_eq(pf.d, d);
    return pf;
}

void tu_prompt_load_fails(const char *path, const char *names, const char *want) {
    sp_prompt_file pf;
    sp_error err = {0};
    ck_assert_msg(sp_prompt_load(path, &pf, &err) == -1, "%s loaded", path);
    ck_assert_ptr_null(pf.prompt);
    ck_assert_msg(strstr(err.msg, names) != NULL, "message does not name %s: %s", names, err.msg);
    ck_assert_msg(strstr(err.msg, want) != NULL, "expected \"%s\" in: %s", want, err.msg);
}

char *tu_copy_files(const char *from, const char *to_name, const char *const *files) {
    char *to = tu_path(tu_dir, to_name);
    ck_assert_int_eq(mkdir(to, 0755), 0);
    for (int i = 0; files[i]; i++) {
        char *a = tu_path(from, files[i]), *b = tu_path(to, files[i]);
        tu_copy_file(a, b);
        free(a), free(b);
    }
    return to;
}

char *tu_copy_adapter(const char *from, const char *to_name) {
    return tu_copy_files(
        from, to_name,
        (const char *const[]){"adapter_config.json", "adapter_model.safetensors", NULL});
}

void tu_write_adapter_tensors(const char *dir, const sp_st_out *t, int n) {
    char *path = tu_path(dir, "adapter_model.safetensors");
    sp_error err = {0};
    ck_assert_msg(sp_st_write(path, t, n, NULL, 0, &err) == 0, "%s", err.msg);
    free(path);
}

void tu_edit_adapter_config(const char *dir, const char *key, json_t *value) {
    char *path = tu_path(dir, "adapter_config.json");
    tu_json_edit(path, key, value);
    free(path);
}

json_t *tu_json_load(const char *path) {
    json_error_t je;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    ck_assert_msg(j != NULL, "%s:%d: %s", path, je.line, je.text);
    return j;
}

void tu_json_edit(const char *path, const char *key, json_t *value) {
    json_t *root = tu_json_load(path);
    if (value)
        json_object_set_new(root, key, value);
    else
        json_object_del(root, key);
    ck_assert_int_eq(json_dump_file(root, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER), 0);
    json_decref(root);
}

void tu_gen_ref_load(tu_gen_ref *r, const char *dir) {
    char *js = tu_path(dir, "generate.json");
    json_error_t je;
    r->root = json_load_file(js, 0, &je);
    ck_assert_msg(r->root, "%s: %s", js, je.text);
    free(js);
    r->reqs = json_object_get(r->root, "requests");
    r->n = (int)json_array_size(r->reqs);
    r->max_new = (int)json_integer_value(json_object_get(r->root, "max_new_tokens"));
    ck_assert(r->n == 4 && r->max_new > 0);
    for (int i = 0; i < r->n; i++) {
        json_t *t = json_object_get(json_array_get(r->reqs, i), "tokens");
        ck_assert(json_array_size(t) <= 64);
        for (size_t j = 0; j < json_array_size(t); j++)
            r->tok[i][j] = (int32_t)json_integer_value(json_array_get(t, j));
        r->rq[i] = (sp_gen_request){r->tok[i], (int)json_array_size(t), 0, (uint64_t)i};
    }
}

int tu_gen_ref_compare(const tu_gen_ref *r, int i, const sp_gen_result *out, double margin,
                       const char *what) {
    json_t *q = json_array_get(r->reqs, i), *ids = json_object_get(q, "ids");
    json_t *margins = json_object_get(q, "margins");
    ck_assert_int_eq(out->n_ids, r->max_new);
    int compared = 0;
    for (int j = 0; j < r->max_new; j++) {
        if (json_real_value(json_array_get(margins, j)) <= margin) break;
        ck_assert_msg(out->ids[j] == json_integer_value(json_array_get(ids, j)),
                      "%s request %d step %d: %d, the reference %lld", what, i, j, out->ids[j],
                      json_integer_value(json_array_get(ids, j)));
        compared++;
    }
    return compared;
}

void tu_gen_ref_free(tu_gen_ref *r) {
    json_decref(r->root);
}
