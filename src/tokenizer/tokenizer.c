/* Public lookups, the vocabulary hash, finishing and freeing a tokenizer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

typedef struct fnv {
    uint64_t h;
} fnv;

static void fnv_add(fnv *f, const void *data, size_t len) {
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++) f->h = (f->h ^ p[i]) * 0x100000001b3ull;
}

static void fnv_u32(fnv *f, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    fnv_add(f, b, 4);
}

/* The canonical form documented in tokenizer.h; independent of the file format. */
static uint64_t vocab_hash(const sp_tokenizer *t) {
    fnv f = {0xcbf29ce484222325ull};
    fnv_add(&f, "sp-bpe-v1", 9);
    for (int32_t id = 0; id < t->n_ids; id++) {
        if (t->kind[id] == TOK_ABSENT) continue;
        uint8_t flag = (uint8_t)(t->kind[id] - TOK_NORMAL);
        fnv_u32(&f, (uint32_t)id);
        fnv_add(&f, &flag, 1);
        fnv_u32(&f, t->str_len[id]);
        fnv_add(&f, t->strs + t->str_off[id], t->str_len[id]);
    }
    for (size_t i = 0; i < t->n_merges; i++) {
        fnv_u32(&f, (uint32_t)(t->merges[i] >> 32));
        fnv_u32(&f, (uint32_t)t->merges[i]);
    }
    /* Only tokenizers that differ from GPT-2's pipeline carry the description, so the hash of
     * every GPT-2-style tokenizer is what it was before the description existed. */
    if (t->desc.len) {
        fnv_add(&f, "sp-pipe-v1", 10);
        fnv_add(&f, t->desc.p, t->desc.len);
    }
    return f.h;
}

/* Completes t->desc with what else decides the ids: model options, added-token stripping, the
 * BOS/EOS policy; then blanks it if it is exactly GPT-2's pipeline. */
static int finish_desc(sp_tokenizer *t) {
    int rc = tok_desc(t, "%s", ""); /* so that desc exists even when empty */
    if (t->mode == TOK_MODE_CHAR && t->model == TOK_MODEL_BPE) rc |= tok_desc(t, "model:char;");
    if (t->model == TOK_MODEL_UNIGRAM)
        rc |= tok_desc(t, "model:unigram(scores=%016llx);",
                       (unsigned long long)tok_fnv1a(t->score, t->n_score * sizeof *t->score));
    if (t->model == TOK_MODEL_WORDPIECE)
        rc |= tok_desc(t, "model:wordpiece(%s,%lld);", t->wp_prefix, (long long)t->wp_max_chars);
    if (t->ignore_merges) rc |= tok_desc(t, "model:ignore_merges;");
    if (t->byte_fallback) rc |= tok_desc(t, "model:byte_fallback;");
    if (t->unk >= 0) rc |= tok_desc(t, "model:unk=%d,fuse=%d;", t->unk, t->fuse_unk);
    for (int32_t id = 0; id < t->n_ids; id++)
        if (t->lstrip[id] || t->rstrip[id])
            rc |= tok_desc(t, "added:%d,l=%d,r=%d;", id, t->lstrip[id], t->rstrip[id]);
    for (int32_t id = 0; id < t->n_ids; id++)
        if (t->normed[id]) rc |= tok_desc(t, "added:%d,normalized;", id);
    if (t->add_bos) rc |= tok_desc(t, "bos:%d;", t->bos);
    if (t->add_eos) rc |= tok_desc(t, "add_eos;");
    if (t->eos_cfg >= 0 && t->eos_cfg != tok_lookup(t, "<|endoftext|>", 13))
        rc |= tok_desc(t, "eos:%d;", t->eos_cfg);
    if (rc || t->desc_failed) return -1;
    if (!strcmp(t->desc.p, "pre:bytelevel(aps=0,re=1);")) t->desc.len = 0, t->desc.p[0] = '\0';
    return 0;
}

int tok_finish(sp_tokenizer *t, sp_error *err) {
    for (int32_t id = 0; id < t->n_ids; id++)
        if (t->kind[id] == TOK_ADDED || t->kind[id] == TOK_SPECIAL) t->n_added++;
    t->added = malloc((t->n_added ? t->n_added : 1) * sizeof *t->added);
    if (!t->added) return sp_fail(err, "out of memory");
    size_t k = 0;
    for (int32_t id = 0; id < t->n_ids; id++)
        if (t->kind[id] == TOK_ADDED || t->kind[id] == TOK_SPECIAL) t->added[k++] = id;
    if (t->eos_cfg >= 0) t->eos = t->eos_cfg;
    if (tok_init_encoder(t, err)) return -1;
    if (finish_desc(t)) return sp_fail(err, "out of memory");
    t->hash = vocab_hash(t);
    return 0;
}

void sp_tokenizer_free(sp_tokenizer *t) {
    if (!t) return;
    tok_free_encoder(t);
    free(t->kind), free(t->str_off), free(t->str_len), free(t->raw_off), free(t->raw_len);
    free(t->strs), free(t->raw), free(t->smap);
    free(t->pkeys), free(t->prank), free(t->pmerged), free(t->merges);
    free(t->added), free(t->in_model), free(t->lstrip), free(t->rstrip), free(t->normed);
    free(t);
}

void sp_token_buf_free(sp_token_buf *b) {
    if (!b) return;
    free(b->ids);
    memset(b, 0, sizeof *b);
}

int sp_token_buf_append(sp_token_buf *b, const int32_t *ids, size_t n) {
    if (sp__vec_reserve(&b->ids, &b->cap, b->n + n, sizeof *b->ids) != 0) return -1;
    if (n) memcpy(b->ids + b->n, ids, n * sizeof *ids);
    b->n += n;
    return 0;
}

int32_t sp_tokenizer_token_to_id(const sp_tokenizer *t, const char *token, size_t len) {
    return token ? tok_lookup(t, token, len) : -1;
}

const char *sp_tokenizer_id_to_token(const sp_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_ids || t->kind[id] == TOK_ABSENT) return NULL;
    if (len) *len = t->str_len[id];
    return t->strs + t->str_off[id];
}

int sp_tokenizer_is_special(const sp_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids && t->kind[id] == TOK_SPECIAL;
}

int32_t sp_tokenizer_vocab_size(const sp_tokenizer *t) {
    return t->n_ids;
}
int32_t sp_tokenizer_eos_id(const sp_tokenizer *t) {
    return t->eos;
}
int32_t sp_tokenizer_bos_id(const sp_tokenizer *t) {
    return t->bos;
}
int sp_tokenizer_adds_bos(const sp_tokenizer *t) {
    return t->add_bos;
}
int sp_tokenizer_adds_eos(const sp_tokenizer *t) {
    return t->add_eos;
}
const char *sp_tokenizer_describe(const sp_tokenizer *t) {
    return t->desc.p ? t->desc.p : "";
}
size_t sp_tokenizer_n_merges(const sp_tokenizer *t) {
    return t->n_merges;
}
uint64_t sp_tokenizer_hash(const sp_tokenizer *t) {
    return t->hash;
}

void sp_tokenizer_hash_hex(const sp_tokenizer *t, char out[17]) {
    snprintf(out, 17, "%016llx", (unsigned long long)t->hash);
}

/* The Metaspace decoder drops the replacement characters of the first token instead of turning
 * them into spaces; writes that form of token id into out (NULL: only counts). */
static size_t meta_first(const sp_tokenizer *t, int32_t id, char *out) {
    const char *s = t->strs + t->str_off[id];
    size_t len = t->str_len[id], n = 0;
    if (t->raw_len[id] == 1 && len == 6 && s[0] == '<') { /* a <0xNN> byte token */
        if (out) out[0] = (char)t->raw[t->raw_off[id]];
        return 1;
    }
    for (size_t i = 0; i < len;) {
        if (len - i >= t->dec_from_len && !memcmp(s + i, t->dec_from, t->dec_from_len)) {
            i += t->dec_from_len;
            continue;
        }
        if (out) out[n] = s[i];
        n++, i++;
    }
    return n;
}

/* The decoder's Strip: up to start leading and stop trailing strip characters go. */
static void strip_ends(const sp_tokenizer *t, char *buf, size_t *at) {
    size_t a = 0;
    while ((int)a < t->dec_strip_start && a < *at && buf[a] == t->dec_strip_chr) a++;
    memmove(buf, buf + a, *at - a);
    *at -= a;
    for (int k = 0; k < t->dec_strip_stop && *at && buf[*at - 1] == t->dec_strip_chr; k++) (*at)--;
    buf[*at] = '\0';
}

int sp_tokenizer_decode(const sp_tokenizer *t, const int32_t *ids, size_t n, unsigned flags,
                        char **out, size_t *len, sp_error *err) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || t->kind[id] == TOK_ABSENT)
            return sp_fail(err, "decode: id %d at position %zu is not in the vocabulary", id, i);
        if (!((flags & SP_TOK_SKIP_SPECIAL) && t->kind[id] == TOK_SPECIAL))
            total += t->raw_len[id] + (t->dec_wordpiece ? t->str_len[id] : 0);
    }
    char *buf = malloc(total + 1);
    if (!buf) return sp_fail(err, "decode: out of memory for %zu bytes", total);
    size_t at = 0;
    int first = 1;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if ((flags & SP_TOK_SKIP_SPECIAL) && t->kind[id] == TOK_SPECIAL) continue;
        if (first && t->dec_wordpiece) { /* the first token keeps its prefix, gets no space */
            at = tok_wordpiece_decode(t, t->strs + t->str_off[id], t->str_len[id], 1, buf);
            first = 0;
            continue;
        }
        if (first && t->dec_meta_first) { /* never longer than the raw form */
            at = meta_first(t, id, buf);
            first = 0;
            continue;
        }
        first = 0;
        memcpy(buf + at, t->raw + t->raw_off[id], t->raw_len[id]);
        at += t->raw_len[id];
    }
    buf[at] = '\0';
    strip_ends(t, buf, &at);
    *out = buf;
    if (len) *len = at;
    return 0;
}
