/* Checks of an open dataset's contents and of its fit to a model, made once before training or
 * evaluation so that nothing knowable from the file fails when its batch runs (see dataset.h).
 * The per-example arrays are in memory; /tokens, /target_pos and /target_ids are streamed once,
 * CHECK_BLOCK elements at a time, whatever the size of the set. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "data/dataset_internal.h"
#include "model/family.h"
#include "softprompt/template.h"
#include "util/escape.h"

#define CHECK_BLOCK ((int64_t)SP_DS_CHUNK * 256) /* 1 Mi elements: 4 MiB per buffer */

/* The example holding element p of a dataset delimited by off [n + 1] (non-decreasing). */
static int64_t example_of(const int64_t *off, int64_t n, int64_t p) {
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        if (off[mid] <= p)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* Which config.json key the model's position limit came from. */
static const char *positions_key(const sp_model_config *cfg) {
    return sp__family_of(cfg->arch)->ctx_key;
}

/* Example lengths (from /offsets, in memory) against the model's positions. */
static int check_lengths(const sp_dataset *ds, const sp_model_config *cfg, sp_error *err) {
    int64_t n = ds->meta.n_examples, first = -1, n_over = 0, longest = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t len = ds->offsets[i + 1] - ds->offsets[i];
        if (len > longest) longest = len;
        if (len > cfg->n_ctx && n_over++ == 0) first = i;
    }
    if (n_over == 0) return 0;
    return sp_fail(err,
                   "%s: example %" PRId64 " has %" PRId64 " tokens (soft tokens included), more "
                   "than the model's %d positions (%s in its config.json); %" PRId64 " of %" PRId64
                   " examples are longer, the longest has %" PRId64 " tokens: prepare the data "
                   "again with `softprompt prepare --max-length %d`",
                   ds->path, first, ds->offsets[first + 1] - ds->offsets[first], cfg->n_ctx,
                   positions_key(cfg), n_over, n, longest, cfg->n_ctx);
}

static int check_verbalizer(const sp_dataset *ds, int V, sp_error *err) {
    char name[128];
    for (int c = 0; c < ds->meta.n_classes; c++)
        if (ds->verbalizer[c] >= V)
            return sp_fail(err,
                           "%s: /verbalizer[%d] = %d (class \"%s\") is outside the model's "
                           "vocabulary of %d tokens (vocab_size): was the dataset prepared with "
                           "another tokenizer?",
                           ds->path, c, (int)ds->verbalizer[c],
                           sp__escape(ds->class_names[c], name, sizeof name), V);
    return 0;
}

/* "examples a-b" (or "example a") for the elements [b, b + len) of a dataset delimited by off. */
static void block_examples(const sp_dataset *ds, const int64_t *off, int64_t b, int64_t len,
                           char *out, size_t cap) {
    int64_t n = ds->meta.n_examples, first = example_of(off, n, b);
    int64_t last = example_of(off, n, b + len - 1);
    if (first == last)
        snprintf(out, cap, "example %" PRId64, first);
    else
        snprintf(out, cap, "examples %" PRId64 "-%" PRId64, first, last);
}

static int bad_token(const sp_dataset *ds, int64_t p, int32_t t, int V, sp_error *err) {
    int64_t ex = example_of(ds->offsets, ds->meta.n_examples, p), at = p - ds->offsets[ex];
    if (SP_IS_SOFT(t))
        return sp_fail(err,
                       "%s: /tokens[%" PRId64 "] (example %" PRId64 ", position %" PRId64
                       ") is soft slot %d, but n_soft is %d",
                       ds->path, p, ex, at, (int)SP_SOFT_INDEX(t), ds->meta.n_soft);
    return sp_fail(err,
                   "%s: /tokens[%" PRId64 "] (example %" PRId64 ", position %" PRId64
                   ") is token id %d, outside the model's vocabulary of %d tokens (vocab_size): "
                   "was the dataset prepared with another tokenizer?",
                   ds->path, p, ex, at, (int)t, V);
}

/* Every token: an id in [0, V) or a soft slot below n_soft. */
static int check_tokens(const sp_dataset *ds, int V, int32_t *buf, sp_error *err) {
    int64_t total = ds->meta.n_tokens;
    int P = ds->meta.n_soft;
    char what[64];
    for (int64_t b = 0; b < total; b += CHECK_BLOCK) {
        int64_t len = total - b < CHECK_BLOCK ? total - b : CHECK_BLOCK;
        block_examples(ds, ds->offsets, b, len, what, sizeof what);
        if (sp__ds_read_block(ds, ds->d_tokens, "tokens", b, len, buf, what, err)) return -1;
        for (int64_t k = 0; k < len; k++) {
            int32_t t = buf[k];
            if (SP_IS_SOFT(t) ? SP_SOFT_INDEX(t) >= P : t >= V)
                return bad_token(ds, b + k, t, V, err);
        }
    }
    return 0;
}

/* Classification: exactly one target per example (its id is checked with the stream). */
static int check_target_counts(const sp_dataset *ds, sp_error *err) {
    if (!ds->labels) return 0;
    for (int64_t i = 0; i < ds->meta.n_examples; i++)
        if (ds->toffsets[i + 1] - ds->toffsets[i] != 1)
            return sp_fail(err,
                           "%s: example %" PRId64 " (label %d) has %" PRId64 " targets: a "
                           "classification example needs exactly one, with id "
                           "/verbalizer[label] = %d",
                           ds->path, i, (int)ds->labels[i], ds->toffsets[i + 1] - ds->toffsets[i],
                           (int)ds->verbalizer[ds->labels[i]]);
    return 0;
}

/* Target j of example ex: position (within the example; prev is the example's previous one or
 * -1) and id. */
static int check_target(const sp_dataset *ds, int64_t ex, int64_t j, int32_t pos, int32_t prev,
                        int32_t id, int V, sp_error *err) {
    int64_t len = ds->offsets[ex + 1] - ds->offsets[ex];
    if (pos < 0 || pos >= len || pos <= prev)
        return sp_fail(err,
                       "%s: /target_pos[%" PRId64 "] = %d (example %" PRId64 " of %" PRId64
                       " tokens): positions must lie in [0, %" PRId64 ") and increase strictly",
                       ds->path, j, (int)pos, ex, len, len);
    if (id < 0 || id >= V)
        return sp_fail(err,
                       "%s: /target_ids[%" PRId64 "] = %d (example %" PRId64 ") is outside %s "
                       "vocabulary%s",
                       ds->path, j, (int)id, ex, V < INT32_MAX ? "the model's" : "any",
                       V < INT32_MAX ? " (vocab_size): was the dataset prepared with another "
                                       "tokenizer?"
                                     : "");
    if (ds->labels && id != ds->verbalizer[ds->labels[ex]])
        return sp_fail(err,
                       "%s: example %" PRId64 " (label %d): a classification example needs "
                       "exactly one target, with id /verbalizer[label] = %d",
                       ds->path, ex, (int)ds->labels[ex], (int)ds->verbalizer[ds->labels[ex]]);
    return 0;
}

/* Every target, streamed: position within its example and increasing, id in [0, V), and for
 * classification the verbalizer token of the example's label. */
static int check_targets(const sp_dataset *ds, int V, int32_t *pos, int32_t *ids, sp_error *err) {
    int64_t total = ds->meta.n_targets, ex = 0;
    int32_t prev = -1;
    char what[64];
    for (int64_t b = 0; b < total; b += CHECK_BLOCK) {
        int64_t len = total - b < CHECK_BLOCK ? total - b : CHECK_BLOCK;
        block_examples(ds, ds->toffsets, b, len, what, sizeof what);
        if (sp__ds_read_block(ds, ds->d_tpos, "target_pos", b, len, pos, what, err) ||
            sp__ds_read_block(ds, ds->d_tids, "target_ids", b, len, ids, what, err))
            return -1;
        for (int64_t k = 0; k < len; k++) {
            int64_t j = b + k;
            while (ds->toffsets[ex + 1] <= j) ex++, prev = -1;
            if (check_target(ds, ex, j, pos[k], prev, ids[k], V, err)) return -1;
            prev = pos[k];
        }
    }
    return 0;
}

/* A masked LM is scored at a {mask}, a causal LM after its text: the dataset's template (its
 * "template" attribute) must have a {mask} exactly when the model is a masked LM. */
static int check_mask(const sp_dataset *ds, const sp_model_config *cfg, sp_error *err) {
    const char *spec = ds->meta.template_spec ? ds->meta.template_spec : "";
    sp_template t = {0};
    sp_error ignored = {0};
    int n_mask =
        spec[0] && sp_template_parse(&t, spec, 1, "template", &ignored) == 0 ? t.n_mask : 0;
    sp_template_free(&t);
    const char *type = sp_arch_model_type(cfg->arch);
    switch (sp__family_of(cfg->arch)->mask) {
    case SP_MASK_CAUSAL:
    case SP_MASK_SEQ2SEQ: /* T5: the template feeds the encoder, the target the decoder */
        if (n_mask == 0) return 0;
        return sp_fail(err,
                       "%s: the template '%s' has {mask}, but the model (%s) is %s: {mask} is for "
                       "masked LMs (bert, roberta); prepare the data again without it",
                       ds->path, spec, type,
                       sp__family_of(cfg->arch)->mask == SP_MASK_SEQ2SEQ
                           ? "an encoder-decoder (its decoder scores the target)"
                           : "a causal LM");
    case SP_MASK_FULL:
        if (n_mask == 1 && ds->meta.task == SP_TASK_CLASSIFICATION) return 0;
        return sp_fail(err,
                       "%s: the model (%s) is a masked LM, scored at a {mask} position, but the "
                       "dataset's template '%s' has no {mask}%s: prepare the data again with one "
                       "where the class word goes, e.g. --template '{text} It was {mask}.'",
                       ds->path, type, spec,
                       ds->meta.task == SP_TASK_CLASSIFICATION ? ""
                                                               : " (or it is not a "
                                                                 "classification set)");
    }
    return 0;
}

int sp_dataset_check_model(sp_dataset *ds, const sp_model_config *cfg, sp_error *err) {
    if (cfg && check_mask(ds, cfg, err)) return -1;
    int V = cfg ? cfg->vocab_size : INT32_MAX;
    if ((cfg && check_lengths(ds, cfg, err)) || check_verbalizer(ds, V, err) ||
        check_target_counts(ds, err))
        return -1;
    int64_t most = ds->meta.n_tokens > ds->meta.n_targets ? ds->meta.n_tokens : ds->meta.n_targets;
    size_t n = (size_t)(most < CHECK_BLOCK ? (most > 0 ? most : 1) : CHECK_BLOCK);
    int32_t *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    int rc = a && b ? 0 : sp_fail(err, "%s: out of memory", ds->path);
    if (rc == 0) rc = check_tokens(ds, V, a, err);
    if (rc == 0) rc = check_targets(ds, V, a, b, err);
    free(a), free(b);
    return rc;
}

int sp_dataset_check_tokenizer(const sp_dataset *ds, const char *hash, const char *tokenizer_dir,
                               sp_error *err) {
    const char *mine = ds->meta.tokenizer_hash;
    if (!hash || !hash[0] || !mine[0]) return 1;
    if (strcmp(mine, hash) == 0) return 0;
    char shown[64];
    return sp_fail(err,
                   "%s was prepared with tokenizer %s, but the model's tokenizer (%s) is %s: "
                   "the token ids would mean other words to the model. Prepare the data again "
                   "with `softprompt prepare --tokenizer %s`, or pass --allow-tokenizer-mismatch "
                   "if the two tokenizers give the same ids",
                   ds->path, sp__escape(mine, shown, sizeof shown), tokenizer_dir, hash,
                   tokenizer_dir);
}
