/* Tokenizer file formats: tokenizer.json, vocab.json + merges.txt, encoder.json + vocab.bpe. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/fileutil.h"
#include "tok_internal.h"
#include "util/path.h"

static json_t *load_json(const char *path, sp_error *err) {
    if (sp__check_file_size(path, SP_MAX_TOKENIZER_FILE_BYTES, "tokenizer file", err) != 0)
        return NULL;
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root) sp_fail(err, "%s:%d:%d: invalid JSON: %s", path, je.line, je.column, je.text);
    return root;
}

/* Adds every "token": id entry of a JSON object; where names the object in messages. */
static int add_vocab_object(sp_tokenizer *t, json_t *obj, const char *path, const char *where,
                            sp_error *err) {
    if (!json_is_object(obj)) return sp_fail(err, "%s: %s is not a JSON object", path, where);
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val) {
        if (!json_is_integer(val))
            return sp_fail(err, "%s: %s[\"%.60s\"]: the id is not an integer", path, where, key);
        if (tok_add_token(t, key, strlen(key), json_integer_value(val), TOK_NORMAL, err))
            return sp_fail_prefix(err, "%s: %s", path, where);
    }
    if (t->n_tokens == 0) return sp_fail(err, "%s: %s is empty", path, where);
    return 0;
}

int tok_load_vocab_json(sp_tokenizer *t, const char *path, sp_error *err) {
    json_t *root = load_json(path, err);
    if (!root) return -1;
    int rc = add_vocab_object(t, root, path, "vocabulary", err);
    json_decref(root);
    if (rc) return -1;
    /* The two-file formats carry no added-token list; GPT-2's one special token is in the vocab. */
    int32_t eos = tok_lookup(t, "<|endoftext|>", 13);
    if (eos >= 0 && tok_add_token(t, "<|endoftext|>", 13, eos, TOK_SPECIAL, err)) return -1;
    return 0;
}

static int read_file(const char *path, char **buf, size_t *len, sp_error *err) {
    if (sp__check_file_size(path, SP_MAX_TOKENIZER_FILE_BYTES, "tokenizer file", err) != 0)
        return -1;
    FILE *f = fopen(path, "rb");
    if (!f) return sp_fail(err, "%s: %s", path, strerror(errno));
    sp__buf b = {0};
    int rc = sp__buf_read(&b, f), bad = ferror(f);
    fclose(f);
    if (rc != 0) {
        sp__buf_free(&b);
        return sp_fail(err, "%s: %s", path, bad ? "read error" : "out of memory");
    }
    *buf = b.p, *len = b.len;
    return 0;
}

/* One merges.txt line: exactly two non-empty tokens separated by one space. */
static int merge_line(sp_tokenizer *t, const char *s, size_t len, sp_error *err) {
    const char *sp = memchr(s, ' ', len);
    if (!sp || sp == s || sp + 1 == s + len || memchr(sp + 1, ' ', (size_t)(s + len - sp - 1)))
        return sp_fail(err, "expected two tokens separated by one space, got '%.*s'",
                       (int)(len < 80 ? len : 80), s);
    return tok_add_merge(t, s, (size_t)(sp - s), sp + 1, (size_t)(s + len - sp - 1), err);
}

int tok_load_merges_txt(sp_tokenizer *t, const char *path, sp_error *err) {
    char *buf = NULL;
    size_t len = 0;
    if (read_file(path, &buf, &len, err)) return -1;
    int rc = 0;
    size_t lineno = 0;
    for (size_t at = 0; at < len && rc == 0;) {
        const char *s = buf + at, *nl = memchr(s, '\n', len - at);
        size_t n = nl ? (size_t)(nl - s) : len - at;
        at += n + (nl != NULL);
        lineno++;
        if (n && s[n - 1] == '\r') n--; /* tolerate CRLF files */
        if (lineno == 1 && n >= 8 && memcmp(s, "#version", 8) == 0) continue;
        if (n == 0 && at >= len) break; /* blank last line */
        if (merge_line(t, s, n, err)) rc = sp_fail_prefix(err, "%s:%zu", path, lineno);
    }
    free(buf);
    return rc;
}

/* ---- tokenizer.json ---- */

static int is_null_or(json_t *v, int (*ok)(json_t *)) {
    return !v || json_is_null(v) || ok(v);
}
static int is_empty_string(json_t *v) {
    return json_is_string(v) && json_string_length(v) == 0;
}
static int is_zero(json_t *v) {
    return json_is_number(v) && json_number_value(v) == 0;
}

/* model.type: BPE when absent; WordPiece, Unigram; anything else is refused. */
static int model_type(sp_tokenizer *t, json_t *model, const char *path, sp_error *err) {
    json_t *type = json_object_get(model, "type");
    const char *s = json_string_value(type);
    if (!type || (s && !strcmp(s, "BPE"))) return t->model = TOK_MODEL_BPE, 0;
    if (s && !strcmp(s, "Unigram")) return t->model = TOK_MODEL_UNIGRAM, 0;
    if (s && !strcmp(s, "WordPiece")) return t->model = TOK_MODEL_WORDPIECE, 0;
    return sp_fail(err, "%s: model.type is %s%s%s, supported: \"BPE\", \"Unigram\", \"WordPiece\"",
                   path, s ? "\"" : "", s ? s : "not a string", s ? "\"" : "");
}

/* Refuses BPE options whose effect this tokenizer does not implement. */
static int check_model_options(json_t *model, const char *path, sp_error *err) {
    if (!is_null_or(json_object_get(model, "dropout"), is_zero))
        return sp_fail(err, "%s: model.dropout (BPE dropout) is not supported", path);
    if (!is_null_or(json_object_get(model, "continuing_subword_prefix"), is_empty_string))
        return sp_fail(err, "%s: model.continuing_subword_prefix is not supported", path);
    if (!is_null_or(json_object_get(model, "end_of_word_suffix"), is_empty_string))
        return sp_fail(err, "%s: model.end_of_word_suffix is not supported", path);
    return 0;
}

/* model.byte_fallback, unk_token, fuse_unk (after the vocabulary is in). */
static int model_unk_options(sp_tokenizer *t, json_t *model, const char *path, sp_error *err) {
    static const char *const flags[] = {"byte_fallback", "fuse_unk", "ignore_merges"};
    for (int k = 0; k < 3; k++) {
        json_t *v = json_object_get(model, flags[k]);
        if (v && !json_is_null(v) && !json_is_boolean(v))
            return sp_fail(err, "%s: model.%s is not a boolean", path, flags[k]);
    }
    t->byte_fallback = json_is_true(json_object_get(model, "byte_fallback"));
    t->fuse_unk = json_is_true(json_object_get(model, "fuse_unk"));
    t->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
    json_t *unk = json_object_get(model, "unk_token");
    if (!unk || json_is_null(unk)) return 0;
    if (!json_is_string(unk)) return sp_fail(err, "%s: model.unk_token is not a string", path);
    t->unk = tok_lookup(t, json_string_value(unk), json_string_length(unk));
    if (t->unk < 0)
        return sp_fail(err, "%s: model.unk_token '%s' is not in the vocabulary", path,
                       json_string_value(unk));
    return 0;
}

static int hf_merges(sp_tokenizer *t, json_t *merges, const char *path, sp_error *err) {
    if (!json_is_array(merges))
        return sp_fail(err, "%s: model.merges is missing or not an array", path);
    size_t i;
    json_t *m;
    json_array_foreach(merges, i, m) {
        int rc;
        if (json_is_string(m)) {
            rc = merge_line(t, json_string_value(m), json_string_length(m), err);
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
            json_t *a = json_array_get(m, 0), *b = json_array_get(m, 1);
            rc = tok_add_merge(t, json_string_value(a), json_string_length(a), json_string_value(b),
                               json_string_length(b), err);
        } else {
            rc = sp_fail(err, "expected \"a b\" or [\"a\", \"b\"]");
        }
        if (rc) return sp_fail_prefix(err, "%s: model.merges[%zu]", path, i);
    }
    return 0;
}

/* Added-token flags: lstrip/rstrip are implemented; single_word is refused; normalized (true by
 * default for a non-special token) matters when there is a normalizer: the token is then matched
 * in the normalized text, as Hugging Face's AddedVocabulary does. */
static int hf_added_token(sp_tokenizer *t, json_t *a, sp_error *err) {
    json_t *id = json_object_get(a, "id"), *content = json_object_get(a, "content");
    if (!json_is_integer(id)) return sp_fail(err, "\"id\" is missing or not an integer");
    if (!json_is_string(content)) return sp_fail(err, "\"content\" is missing or not a string");
    const char *c = json_string_value(content);
    if (json_is_true(json_object_get(a, "single_word")))
        return sp_fail(err,
                       "'%s': \"single_word\": true is not supported (supported: lstrip, "
                       "rstrip, special, normalized)",
                       c);
    int special = json_is_true(json_object_get(a, "special"));
    /* Hugging Face's default for "normalized" is the opposite of "special". */
    json_t *norm = json_object_get(a, "normalized");
    int normalized = norm ? json_is_true(norm) : !special;
    int64_t i = json_integer_value(id);
    if (tok_add_token(t, c, json_string_length(content), i, special ? TOK_SPECIAL : TOK_ADDED, err))
        return -1;
    t->lstrip[i] = json_is_true(json_object_get(a, "lstrip"));
    t->rstrip[i] = json_is_true(json_object_get(a, "rstrip"));
    t->normed[i] = normalized && t->n_norm > 0;
    return 0;
}

static int hf_load(sp_tokenizer *t, json_t *root, const char *path, const char *config,
                   sp_error *err) {
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model))
        return sp_fail(err, "%s: \"model\" is missing or not an object", path);
    t->pipeline = 1;
    if (model_type(t, model, path, err)) return -1;
    if (t->model == TOK_MODEL_BPE && check_model_options(model, path, err)) return -1;
    if (tok_parse_pipeline(t, root, path, err)) return -1;
    if (t->model != TOK_MODEL_BPE && t->mode == TOK_MODE_BYTE)
        return sp_fail(err, "%s: a ByteLevel pre-tokenizer is supported with a BPE model only",
                       path);
    if (t->model == TOK_MODEL_UNIGRAM
            ? tok_load_unigram(t, model, path, err)
            : add_vocab_object(t, json_object_get(model, "vocab"), path, "model.vocab", err))
        return -1;
    json_t *added = json_object_get(root, "added_tokens"), *a;
    if (added && !json_is_null(added) && !json_is_array(added))
        return sp_fail(err, "%s: added_tokens is not an array", path);
    size_t i;
    json_array_foreach(added, i, a) {
        if (hf_added_token(t, a, err)) return sp_fail_prefix(err, "%s: added_tokens[%zu]", path, i);
    }
    if (t->model == TOK_MODEL_WORDPIECE && tok_load_wordpiece(t, model, path, err)) return -1;
    if (t->model == TOK_MODEL_BPE && model_unk_options(t, model, path, err)) return -1;
    if (tok_finish_vocab(t, err)) return sp_fail_prefix(err, "%s", path);
    if (t->model == TOK_MODEL_BPE && hf_merges(t, json_object_get(model, "merges"), path, err))
        return -1;
    return tok_parse_post(t, root, path, config, err);
}

int tok_load_hf_json(sp_tokenizer *t, const char *path, const char *config, sp_error *err) {
    json_t *root = load_json(path, err);
    if (!root) return -1;
    int rc = json_is_object(root) ? hf_load(t, root, path, config, err)
                                  : sp_fail(err, "%s: the top level is not a JSON object", path);
    json_decref(root);
    return rc;
}

/* ---- choosing the files ---- */

/* vocab.json + merges.txt (or encoder.json + vocab.bpe), and the directory's
 * tokenizer_config.json (config, NULL when absent) as GPT2Tokenizer reads it. */
static int load_pair(sp_tokenizer *t, const char *vocab, const char *merges, const char *config,
                     sp_error *err) {
    if (tok_load_vocab_json(t, vocab, err)) return -1;
    if (tok_finish_vocab(t, err)) return sp_fail_prefix(err, "%s", vocab);
    if (tok_load_merges_txt(t, merges, err)) return -1;
    return config ? tok_apply_pair_config(t, config, err) : 0;
}

/* Loads from dir into t: returns 0/-1. */
static int load_dir(sp_tokenizer *t, const char *dir, sp_error *err) {
    static const char *const pairs[][2] = {{"vocab.json", "merges.txt"},
                                           {"encoder.json", "vocab.bpe"}};
    struct stat st;
    if (stat(dir, &st) != 0)
        return sp_fail(err, "tokenizer directory %s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return sp_fail(err, "tokenizer directory %s: not a directory", dir);
    char *p = sp__path_join(dir, "tokenizer.json"),
         *c = sp__path_join(dir, "tokenizer_config.json");
    if (!p || !c) {
        free(p), free(c);
        return sp_fail(err, "out of memory");
    }
    const char *config = sp__is_file(c) ? c : NULL;
    int rc = sp__is_file(p) ? tok_load_hf_json(t, p, config, err) : 1;
    for (size_t k = 0; rc == 1 && k < 2; k++) {
        char *v = sp__path_join(dir, pairs[k][0]), *m = sp__path_join(dir, pairs[k][1]);
        if (!v || !m)
            rc = sp_fail(err, "out of memory");
        else if (sp__is_file(v) && sp__is_file(m))
            rc = load_pair(t, v, m, config, err);
        else if (sp__is_file(v) || sp__is_file(m))
            rc = sp_fail(err, "%s is missing (needed with %s)", sp__is_file(v) ? m : v,
                         sp__is_file(v) ? v : m);
        free(v), free(m);
    }
    free(p), free(c);
    if (rc == 1)
        return sp_fail(
            err,
            "%s: no tokenizer files (looked for tokenizer.json, vocab.json + merges.txt, "
            "encoder.json + vocab.bpe)",
            dir);
    return rc;
}

sp_tokenizer *sp_tokenizer_load(const char *dir, sp_error *err) {
    if (!dir) {
        sp_fail(err, "sp_tokenizer_load: no directory given");
        return NULL;
    }
    sp_tokenizer *t = tok_new();
    if (!t) {
        sp_fail(err, "out of memory");
        return NULL;
    }
    if (load_dir(t, dir, err) || tok_finish(t, err)) {
        sp_tokenizer_free(t);
        return NULL;
    }
    return t;
}

/* 1 when dir holds any of the files sp_tokenizer_load reads. */
static int has_tokenizer_files(const char *dir) {
    static const char *const names[] = {"tokenizer.json", "vocab.json", "merges.txt",
                                        "encoder.json", "vocab.bpe"};
    int found = 0;
    for (size_t k = 0; !found && k < sizeof names / sizeof *names; k++) {
        char *p = sp__path_join(dir, names[k]);
        found = p && sp__is_file(p);
        free(p);
    }
    return found;
}

int sp_tokenizer_hash_of_dir(const char *dir, char out[17], int *found, sp_error *err) {
    out[0] = '\0';
    *found = has_tokenizer_files(dir);
    if (!*found) return 0;
    sp_tokenizer *t = sp_tokenizer_load(dir, err);
    if (!t) return -1;
    sp_tokenizer_hash_hex(t, out);
    sp_tokenizer_free(t);
    return 0;
}
