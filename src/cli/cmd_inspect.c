/* `softprompt inspect PROMPT --model M`: each soft token's nearest vocabulary tokens by cosine
 * similarity and its norm against the embedding table's (sp_prompt_inspect). */
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
    SP_OPT_INT("top", AT(top), "K", 1, 1000, "nearest vocabulary tokens per soft token (5)"),
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
             "reads: a checkpoint, a PEFT adapter, a .npy or a KoboldAI zip. A key/value prefix\n"
             "(prefix tuning) has no input embeddings to compare with the vocabulary: a prefix\n"
             "alone is refused; of prompt+prefix, the prompt is shown.\n",
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

static void print_json(const char *path, const sp_prompt_view *v, const sp_tokenizer *tok) {
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
    json_t *j = json_pack("{s:s, s:o, s:o}", "prompt", path, "embedding_norms",
                          stats_json(&v->vocab), "tokens", tokens);
    char *s = json_dumps(j, JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    if (s) printf("%s\n", s);
    free(s);
    json_decref(j);
}

static void print_text(const char *path, const sp_prompt_view *v, const sp_tokenizer *tok, int d) {
    const sp_norm_stats *s = &v->vocab;
    printf("%s: %d soft tokens x %d\n", path, v->n_prompt, d);
    printf("embedding norms: mean %.3f std %.3f | min %.3f p1 %.3f p5 %.3f p50 %.3f p95 %.3f "
           "p99 %.3f max %.3f\n",
           s->mean, s->std, s->min, s->p1, s->p5, s->p50, s->p95, s->p99, s->max);
    printf("%4s %9s %6s  nearest tokens (cosine)\n", "soft", "norm", "rank");
    for (int p = 0; p < v->n_prompt; p++) {
        printf("%4d %9.3f %5.1f%% ", p, v->norm[p], v->norm_rank[p]);
        for (int k = 0; k < v->top; k++) {
            int32_t id = v->nearest[(size_t)p * v->top + k];
            char *text = token_text(tok, id), shown[128];
            if (text)
                printf(" \"%s\" %.3f", sp__escape(text, shown, sizeof shown),
                       v->cosine[(size_t)p * v->top + k]);
            else
                printf(" #%d %.3f", id, v->cosine[(size_t)p * v->top + k]);
            free(text);
        }
        printf("\n");
    }
}

/* A key/value prefix lives in every layer's attention, not in the input embedding space: nearest
 * vocabulary tokens mean nothing for it. A prefix alone is refused; beside a prompt, a note. */
static int check_prefix(const char *path, const sp_prompt_file *pf, sp_error *err) {
    if (pf->n_prefix == 0) return 0;
    if (pf->n_prompt == 0)
        return sp_fail(err,
                       "%s holds a key/value prefix (%d rows x %d layers, prefix tuning), not "
                       "input soft tokens: its keys and values are not in the embedding space, "
                       "so there are no nearest vocabulary tokens to show (`softprompt info` "
                       "shows its shape)",
                       path, pf->n_prefix, pf->n_layer);
    fprintf(stderr,
            "softprompt inspect: note: %s also holds a key/value prefix (%d rows); only its "
            "soft tokens are shown\n",
            path, pf->n_prefix);
    return 0;
}

static int inspect(const inspect_args *a, const char *path) {
    sp_model m = {0};
    sp_error err;
    sp_prompt_file pf = {0};
    sp_prompt_view v = {0};
    char *warnings = NULL;
    int rc = sp_model_load(&m, a->model, &err);
    if (rc == 0) rc = sp_prompt_load(path, &pf, &err);
    if (rc == 0) rc = sp_prompt_check_model(&pf, &m, a->allow_model_mismatch, &warnings, &err);
    if (warnings) fprintf(stderr, "softprompt inspect: warning: %s", warnings);
    if (rc == 0 && a->method) rc = sp_prompt_check_method(&pf, a->method, &err);
    if (rc == 0) rc = check_prefix(path, &pf, &err);
    sp_tokenizer *tok = NULL;
    if (rc == 0) {
        tok = sp_tokenizer_load(a->tokenizer ? a->tokenizer : a->model, &err);
        if (!tok && a->tokenizer) rc = -1;
        if (!tok && !a->tokenizer)
            fprintf(stderr, "softprompt inspect: note: no tokenizer in %s: showing ids\n",
                    a->model);
    }
    if (rc == 0) rc = sp_prompt_inspect(&m, pf.prompt, pf.n_prompt, a->top, &v, &err);
    if (rc == 0 && a->json) print_json(path, &v, tok);
    if (rc == 0 && !a->json) print_text(path, &v, tok, pf.d);
    if (rc) fprintf(stderr, "softprompt inspect: %s\n", err.msg);
    sp_prompt_view_free(&v);
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
    "inspect", "nearest vocabulary tokens and norms of a prompt's soft tokens", run, usage};
