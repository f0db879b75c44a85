/* Private layout of sp_tokenizer, shared by the loader, the vocabulary code and the encoder. */
#ifndef SP_TOK_INTERNAL_H
#define SP_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "softprompt/error.h"
#include "softprompt/tokenizer.h"

/* Ids beyond this are refused: per-id arrays are sized by the largest id. */
#define TOK_MAX_ID (1 << 24)

enum { TOK_ABSENT = 0, TOK_NORMAL = 1, TOK_ADDED = 2, TOK_SPECIAL = 3 };

/* A word-cache entry: piece bytes -> ids, both stored in arenas. n_ids == 0 marks a free slot. */
typedef struct tok_cache_entry {
    uint64_t hash;
    uint32_t key_off, key_len, ids_off, n_ids;
} tok_cache_entry;

/* A BPE merge candidate; key = rank << 32 | position so the heap pops the lowest rank first
 * and, within a rank, the leftmost occurrence first (encoder.py's left-to-right pass). */
typedef struct tok_cand {
    uint64_t key;
    int32_t left, right, merged;
} tok_cand;

struct sp_tokenizer {
    /* Per id (n_ids entries, grown while loading). */
    int32_t n_ids;
    size_t ids_cap;
    uint8_t *kind;               /* TOK_ABSENT / NORMAL / ADDED / SPECIAL */
    uint32_t *str_off, *str_len; /* vocabulary form in strs (NUL-terminated) */
    uint32_t *raw_off, *raw_len; /* decoded bytes in raw */
    char *strs;
    size_t strs_len, strs_cap;
    uint8_t *raw;
    size_t n_tokens;

    /* Vocabulary form -> id: open addressing over ids, -1 = empty. */
    int32_t *smap;
    size_t smap_cap; /* power of two */

    /* (left, right) -> rank and merged id: open addressing, key UINT64_MAX = empty. */
    uint64_t *pkeys;
    int32_t *prank, *pmerged;
    size_t pmap_cap;
    uint64_t *merges; /* left << 32 | right, in rank order (for the hash) */
    size_t n_merges, merges_cap;

    int32_t byte_id[256];  /* id of each byte's single-character token */
    char byte_chr[256][2]; /* UTF-8 of each byte's character (1 or 2 bytes) */
    uint8_t byte_chr_len[256];
    int32_t eos;
    int ignore_merges; /* tokenizer.json option: a piece that is a whole token skips BPE */
    int32_t *added;    /* ids of added tokens (matched in the text before pre-tokenization) */
    size_t n_added;
    uint64_t hash;

    pcre2_code *re;
    pcre2_match_data *md;

    /* Encoder scratch, grown on demand. */
    int32_t *s_id, *s_next, *s_prev, *s_merged;
    tok_cand *s_heap;
    size_t s_cap;
    char *s_word; /* vocabulary form of a piece (ignore_merges lookups) */
    size_t s_word_cap;

    /* Word cache. */
    tok_cache_entry *cache;
    size_t cache_cap, cache_used;
    char *cache_keys;
    size_t cache_keys_len, cache_keys_cap;
    int32_t *cache_ids;
    size_t cache_ids_len, cache_ids_cap;
};

/* GPT-2's bytes_to_unicode: the code point standing for byte b, and the inverse (-1 if cp is
 * not one of the 256). */
uint32_t tok_byte_to_cp(uint8_t b);
int tok_cp_to_byte(uint32_t cp);
/* Writes the UTF-8 form of byte b's character (1 or 2 bytes) into out; returns its length. */
size_t tok_byte_char(uint8_t b, char out[2]);

uint64_t tok_fnv1a(const void *data, size_t len);
/* Reallocates *bufp (the address of a T *) to n elements of size elem; 0, or -1 leaving it as
 * it was on overflow or out of memory. */
int tok_resize(void *bufp, size_t n, size_t elem);
/* Grows *bufp to hold at least need elements, doubling *cap; 0 or -1 as above. */
int tok_reserve(void *buf, size_t *cap, size_t need, size_t elem);

/* Building (vocab.c). Messages in err have no file prefix; the loader adds it. */
sp_tokenizer *tok_new(void);
int tok_add_token(sp_tokenizer *t, const char *s, size_t len, int64_t id, int kind, sp_error *err);
int tok_add_merge(sp_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen,
                  sp_error *err);
/* After all tokens: byte ids, decoded bytes. Before any merge. */
int tok_finish_vocab(sp_tokenizer *t, sp_error *err);
/* After all merges: hash, regex, added-token list. */
int tok_finish(sp_tokenizer *t, sp_error *err);
int32_t tok_lookup(const sp_tokenizer *t, const char *s, size_t len);
/* Rank and merged id of the pair, or -1. */
int32_t tok_pair_rank(const sp_tokenizer *t, int32_t left, int32_t right, int32_t *merged);

/* Loading (load.c). */
int tok_load_hf_json(sp_tokenizer *t, const char *path, sp_error *err);
int tok_load_vocab_json(sp_tokenizer *t, const char *path, sp_error *err);
int tok_load_merges_txt(sp_tokenizer *t, const char *path, sp_error *err);

/* Encoder (encode.c). */
int tok_compile_regex(sp_tokenizer *t, sp_error *err);
void tok_free_encoder(sp_tokenizer *t);

#endif
