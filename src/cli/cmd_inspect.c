/* `softprompt inspect PROMPT --model M`: each soft token's nearest vocabulary tokens by cosine
 * similarity and its norm against the embedding table's (sp_prompt_inspect); each prefix row's
 * nearest tokens by layer-0 keys and values, and its norms (sp_prefix_inspect). */
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/flags.h"
#include "softprompt/checkpoint.h"
#include "softprompt/inspect.h"
#include "softprompt/tokenizer.h"
#include "util/escape.h"

typedef struct inspect_args {
    const char *model, *tokenizer, *method;
    int top, json, allow_model_mismatch;
} inspect_args;

#define CMD "inspect"
#define AT(field) offsetof(inspect_args, field)

static const sp__flag FLAGS[] = {
    SP_OPT_STR("model", AT(model), "DIR", "the model the prompt was trained for",
               .flags = SP_FLAG_REQUIRED),
    SP_OPT_STR("tokenizer", AT(tokenizer), "DIR",
               "decodes the nearest tokens (default: the model directory;\n"
               "without one, ids are shown)"),
    SP_OPT_INT("top", AT(top), "K", 1, 1000,
               "nearest vocabulary tokens per soft token or prefix row (5)"),
    SP_OPT_SWITCH("json", AT(json), 1, "print one JSON object"),
    SP_OPT_METHOD(AT(method), "what PROMPT must hold (default: whatever it holds): prompt,\n"
                              "prefix, ptuning-v2 or prompt+prefix"),
    SP_OPT_SWITCH("allow-model-mismatch", AT(allow_model_mismatch), 1,
                  "read a checkpoint trained for another model (a warning instead\n"
                  "of the refusal)"),
    {0},
};

static const sp__flag_spec SPEC = {
    .cmd = CMD,
    .usage = "usage: softprompt inspect PROMPT --model DIR [--top K] [--json]\n",
    .about = "Interprets a tuned prompt as Lester et al. (2021) do: for each soft token, the\n"
             "vocabulary tokens whose input embeddings are nearest by cosine similarity, and its\n"
             "norm beside the norms of the embedding table (mean, percentiles; \"rank\" is the\n"
             "percent of vocabulary embeddings with a smaller norm). PROMPT is anything `eval`\n"
             "reads: a checkpoint, a PEFT adapter, a .npy or a KoboldAI zip.\n"
             "\n"
             "A key/value prefix (prefix tuning, P-tuning v2) is read through the first layer:\n"
             "a layer-0 key or value depends on the token and its position alone, so each\n"
             "prefix row j is compared with the layer-0 key and value of every vocabulary token\n"
             "at position j, scored by the mean of the two cosines (a row captured from a token\n"
             "by --init text or vocab scores 1 for it); norms are shown beside the vocabulary's\n"
             "layer-0 norms, and per layer (deeper rows depend on context, so no neighbours).\n"
             "This runs the first layer over the vocabulary (rotary, ALiBi: keys turned back to\n"
             "position 0) or vocabulary x prefix rows (learned positions, GPT-2: ~25 s for\n"
             "124M with 20 rows).\n",
    .flags = FLAGS,
    .positional = "PROMPT",
    .min_positional = 1,
    .max_positional = 1,
};

static void usage(FILE *out) {
    sp__flags_usage(&SPEC, out);
}

/* The decoded text of id (malloc'd), or NULL without a tokenizer. */
static char *token_text(const sp_tokenizer *tok, int32_t id) {
    char *s = NULL;
    size_t len;
    sp_error ignored;
    if (tok && sp_tokenizer_decode(tok, &id, 1, 0, &s, &len, &ignored) == 0) return s;
    return NULL;
}

static json_t *stats_json(const sp_norm_stats *s) {
    return json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "mean", s->mean,
                     "std", s->std, "min", s->min, "p1", s->p1, "p5", s->p5, "p25", s->p25, "p50",
                     s->p50, "p75", s->p75, "p95", s->p95, "p99", s->p99, "max", s->max);
}

static json_t *tokens_json(const sp_prompt_view *v, const sp_tokenizer *tok) {
    json_t *tokens = json_array();
    for (int p = 0; p < v->n_prompt; p++) {
        json_t *near = json_array();
        for (int k = 0; k < v->top; k++) {
            int32_t id = v->nearest[(size_t)p * v->top + k];
            char *text = token_text(tok, id);
            json_array_append_new(near, json_pack("{s:i, s:o, s:f}", "id", id, "token",
                                                  text ? json_string(text) : json_null(), "cosine",
                                                  v->cosine[(size_t)p * v->top + k]));
            free(text);
        }
        json_array_append_new(tokens,
                              json_pack("{s:i, s:f, s:f, s:o}", "index", p, "norm", v->norm[p],
                                        "norm_rank", v->norm_rank[p], "nearest", near));
    }
    return tokens;
}

static json_t *prefix_json(const sp_prefix_view *v, const sp_tokenizer *tok) {
    json_t *rows = json_array(), *layers = json_array();
    for (int j = 0; j < v->n_prefix; j++) {
        json_t *near = json_array();
        for (int k = 0; k < v->top; k++) {
            size_t at = (size_t)j * v->top + k;
            char *text = token_text(tok, v->nearest[at]);
            json_array_append_new(near,
                                  json_pack("{s:i, s:o, s:f, s:f, s:f}", "id", v->nearest[at],
                                            "token", text ? json_string(text) : json_null(),
                                            "score", v->score[at], "key_cosine", v->key_cosine[at],
                                            "value_cosine", v->value_cosine[at]));
            free(text);
        }
        json_array_append_new(rows, json_pack("{s:i, s:f, s:f, s:f, s:f, s:o}", "index", j,
                                              "key_norm", v->key_norm[j], "key_rank",
                                              v->key_rank[j], "value_norm", v->value_norm[j],
                                              "value_rank", v->value_rank[j], "nearest", near));
    }
    for (int l = 0; l < v->n_layer; l++) {
        json_t *k = json_array(), *val = json_array();
        for (int j = 0; j < v->n_prefix; j++) {
            json_array_append_new(k, json_real(v->key_norm[(size_t)l * v->n_prefix + j]));
            json_array_append_new(val, json_real(v->value_norm[(size_t)l * v->n_prefix + j]));
        }
        json_array_append_new(
            layers, json_pack("{s:i, s:o, s:o}", "layer", l, "key_norms", k, "value_norms", val));
    }
    return json_pack("{s:i, s:i, s:i, s:o, s:o, s:o, s:o}", "layers", v->n_layer, "rows",
                     v->n_prefix, "kv_dim", v->kv_dim, "vocab_key_norms", stats_json(&v->vocab_key),
                     "vocab_value_norms", stats_json(&v->vocab_value), "first_layer", rows,
                     "per_layer", layers);
}

static void print_json(const char *path, const sp_prompt_view *v, const sp_prefix_view *pv,
                       const sp_tokenizer *tok) {
    json_t *j = json_pack("{s:s}", "prompt", path);
    if (v->n_prompt > 0) {
        json_object_set_new(j, "embedding_norms", stats_json(&v->vocab));
        json_object_set_new(j, "tokens", tokens_json(v, tok));
    }
    if (pv->n_prefix > 0) json_object_set_new(j, "prefix", prefix_json(pv, tok));
    char *s = json_dumps(j, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    if (s) printf("%s\n", s);
    free(s);
    json_decref(j);
}

static void print_stats(const char *what, const sp_norm_stats *s) {
    printf("%s: mean %.3f std %.3f | min %.3f p1 %.3f p5 %.3f p50 %.3f p95 %.3f p99 %.3f max "
           "%.3f\n",
           what, s->mean, s->std, s->min, s->p1, s->p5, s->p50, s->p95, s->p99, s->max);
}

/* One neighbour: the decoded token (or its id) and its score. */
static void print_neighbour(const sp_tokenizer *tok, int32_t id, double score) {
    char *text = token_text(tok, id), shown[128];
    if (text)
        printf(" \"%s\" %.3f", sp__escape(text, shown, sizeof shown), score);
    else
        printf(" #%d %.3f", id, score);
    free(text);
}

static void print_text(const char *path, const sp_prompt_view *v, const sp_tokenizer *tok, int d) {
    printf("%s: %d soft tokens x %d\n", path, v->n_prompt, d);
    print_stats("embedding norms", &v->vocab);
    printf("%4s %9s %6s  nearest tokens (cosine)\n", "soft", "norm", "rank");
    for (int p = 0; p < v->n_prompt; p++) {
        printf("%4d %9.3f %5.1f%% ", p, v->norm[p], v->norm_rank[p]);
        for (int k = 0; k < v->top; k++)
            print_neighbour(tok, v->nearest[(size_t)p * v->top + k],
                            v->cosine[(size_t)p * v->top + k]);
        printf("\n");
    }
}

static void print_prefix_text(const char *path, const sp_prefix_view *v, const sp_tokenizer *tok) {
    int P = v->n_prefix;
    printf("%s: key/value prefix of %d rows x %d layers (kv_dim %d)\n", path, P, v->n_layer,
           v->kv_dim);
    char what[96];
    snprintf(what, sizeof what, "layer-0 key norms of the vocabulary at positions 0..%d", P - 1);
    print_stats(what, &v->vocab_key);
    snprintf(what, sizeof what, "layer-0 value norms of the vocabulary at positions 0..%d", P - 1);
    print_stats(what, &v->vocab_value);
    printf("%4s %9s %6s %9s %6s  nearest tokens by layer-0 key and value (mean cosine)\n", "row",
           "key norm", "rank", "val norm", "rank");
    for (int j = 0; j < P; j++) {
        printf("%4d %9.3f %5.1f%% %9.3f %5.1f%% ", j, v->key_norm[j], v->key_rank[j],
               v->value_norm[j], v->value_rank[j]);
        for (int k = 0; k < v->top; k++)
            print_neighbour(tok, v->nearest[(size_t)j * v->top + k],
                            v->score[(size_t)j * v->top + k]);
        printf("\n");
    }
    printf("%5s %14s %14s %14s %14s\n", "layer", "key norm mean", "key norm max", "val norm mean",
           "val norm max");
    for (int l = 0; l < v->n_layer; l++) {
        double ks = 0, km = 0, vs = 0, vm = 0;
        for (int j = 0; j < P; j++) {
            double kn = v->key_norm[(size_t)l * P + j], vn = v->value_norm[(size_t)l * P + j];
            ks += kn, vs += vn, km = kn > km ? kn : km, vm = vn > vm ? vn : vm;
        }
        printf("%5d %14.3f %14.3f %14.3f %14.3f\n", l, ks / P, km, vs / P, vm);
    }
}

static int inspect(const inspect_args *a, const char *path) {
    sp_model m = {0};
    sp_error err;
    sp_prompt_file pf = {0};
    sp_prompt_view v = {0};
    sp_prefix_view pv = {0};
    char *warnings = NULL;
    int rc = sp_model_load(&m, a->model, &err);
    if (rc == 0) rc = sp_prompt_load(path, &pf, &err);
    if (rc == 0) rc = sp_prompt_check_model(&pf, &m, a->allow_model_mismatch, &warnings, &err);
    if (warnings) fprintf(stderr, "softprompt inspect: warning: %s", warnings);
    if (rc == 0 && a->method) rc = sp_prompt_check_method(&pf, a->method, &err);
    sp_tokenizer *tok = NULL;
    if (rc == 0) {
        tok = sp_tokenizer_load(a->tokenizer ? a->tokenizer : a->model, &err);
        if (!tok && a->tokenizer) rc = -1;
        if (!tok && !a->tokenizer)
            fprintf(stderr, "softprompt inspect: note: no tokenizer in %s: showing ids\n",
                    a->model);
    }
    if (rc == 0 && pf.n_prompt > 0)
        rc = sp_prompt_inspect(&m, pf.prompt, pf.n_prompt, a->top, &v, &err);
    if (rc == 0 && pf.n_prefix > 0)
        rc =
            sp_prefix_inspect(&m, pf.prefix, pf.n_layer, pf.n_prefix, pf.kv_dim, a->top, &pv, &err);
    if (rc == 0 && a->json) print_json(path, &v, &pv, tok);
    if (rc == 0 && !a->json && pf.n_prompt > 0) print_text(path, &v, tok, pf.d);
    if (rc == 0 && !a->json && pf.n_prefix > 0) print_prefix_text(path, &pv, tok);
    if (rc) fprintf(stderr, "softprompt inspect: %s\n", err.msg);
    sp_prompt_view_free(&v);
    sp_prefix_view_free(&pv);
    sp_tokenizer_free(tok);
    free(warnings);
    sp_prompt_file_free(&pf);
    sp_model_free(&m);
    return rc ? 1 : 0;
}

static int run(int argc, char **argv) {
    inspect_args a = {.top = 5};
    char *pos[argc > 0 ? argc : 1];
    int n_pos, rc = sp__flags_parse(&SPEC, argc, argv, &a, pos, &n_pos);
    return rc ? rc : inspect(&a, pos[0]);
}

const sp__command SP_CMD_INSPECT = {
    "inspect", "nearest vocabulary tokens and norms of a prompt's soft tokens or prefix rows", run,
    usage};
