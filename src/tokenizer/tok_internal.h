/* Private layout of sp_tokenizer, shared by the loader, the vocabulary code and the encoder. */
#ifndef SP_TOK_INTERNAL_H
#define SP_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "softprompt/error.h"
#include "softprompt/tokenizer.h"
#include "util/vec.h"

/* Ids beyond this are refused: per-id arrays are sized by the largest id. */
#define TOK_MAX_ID (1 << 24)

enum { TOK_ABSENT = 0, TOK_NORMAL = 1, TOK_ADDED = 2, TOK_SPECIAL = 3 };

/* What BPE runs over: GPT-2's byte alphabet, or Unicode characters (SentencePiece-style). */
enum { TOK_MODE_BYTE = 0, TOK_MODE_CHAR = 1 };

/* The model: BPE (merges), Unigram (Viterbi over scored pieces), WordPiece (greedy longest
 * match with a continuing-subword prefix). */
enum { TOK_MODEL_BPE = 0, TOK_MODEL_UNIGRAM = 1, TOK_MODEL_WORDPIECE = 2 };

/* SentencePiece's precompiled_charsmap (the Precompiled normalizer, charsmap.c): a Darts
 * double-array trie of keys whose values are offsets of NUL-terminated replacements. */
typedef struct tok_charsmap {
    uint32_t *units;
    size_t n_units;
    char *norm; /* the replacements blob (valid UTF-8) */
    size_t norm_len;
    uint64_t hash; /* of the whole blob, for the tokenizer hash */
    void *brk;     /* ICU grapheme break iterator, opened on first use */
} tok_charsmap;

/* Normalizers (applied in order to each span between added tokens). */
enum {
    NORM_NFC,
    NORM_NFD,
    NORM_NFKC,
    NORM_NFKD,
    NORM_PREPEND,
    NORM_REPLACE,
    NORM_STRIP,
    NORM_PRECOMPILED,
    NORM_BERT,
    NORM_LOWERCASE
};
typedef struct tok_norm {
    int kind;
    char *a, *b; /* PREPEND: a = text; REPLACE: literal a -> b (when re is NULL) */
    size_t alen, blen;
    pcre2_code *re;     /* REPLACE with a {"Regex": ...} pattern */
    int left, right;    /* STRIP: which ends lose their whitespace */
    int clean, chinese; /* BERT: clean_text, handle_chinese_chars */
    int accents, lower; /* BERT: strip_accents (null resolved to lowercase), lowercase */
    tok_charsmap *cmap; /* PRECOMPILED */
} tok_norm;

/* Pre-tokenizer steps (a Sequence, applied in order to every piece the previous step made). */
enum { PRE_SPLIT, PRE_BYTELEVEL, PRE_METASPACE };
/* Hugging Face's SplitDelimiterBehavior. */
enum { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS };
enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };
typedef struct tok_pre {
    int kind;
    pcre2_code *re; /* SPLIT (also Digits); BYTELEVEL with use_regex: GPT-2's pattern */
    int behavior, invert;
    int add_prefix_space; /* BYTELEVEL */
    char repl[8];         /* METASPACE: the replacement character (UTF-8) */
    size_t repl_len;
    int prepend_scheme, split; /* METASPACE */
} tok_pre;

/* One segment of a piece while splitting: [start, end) and whether it is a match. */
typedef struct tok_seg {
    size_t start, end;
    int match;
} tok_seg;

/* Per-step scratch of the pre-tokenizer (each step recurses into the next). */
typedef struct tok_level {
    char *buf; /* the piece after text-changing steps (prefix space, metaspace) */
    size_t buf_cap;
    tok_seg *segs;
    size_t segs_cap;
} tok_level;

#define TOK_MAX_PRE 8
#define TOK_MAX_NORM 8

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
    int ignore_merges;        /* tokenizer.json option: a piece that is a whole token skips BPE */
    int mode;                 /* TOK_MODE_BYTE / TOK_MODE_CHAR */
    int pipeline;             /* tokenizer.json gave the pipeline (else GPT-2's default) */
    int model;                /* TOK_MODEL_* */
    int byte_fallback;        /* CHAR: unknown characters become <0xNN> tokens */
    int32_t unk;              /* CHAR: id of model.unk_token, or -1 */
    int fuse_unk;             /* CHAR: consecutive unknown characters give one unk */
    int32_t fallback_id[256]; /* CHAR with byte_fallback: id of "<0xNN>" */
    uint8_t *in_model;        /* per id: listed in model.vocab (BPE lookups use only these) */
    uint8_t *lstrip, *rstrip; /* per id: added token absorbs whitespace on its left / right */
    uint8_t *normed;          /* per id: added token matched in the normalized text (normalized
                               * true beside a normalizer), not in the text as given */

    /* Pipeline (tokenizer.json); the defaults are GPT-2's: no normalizer, ByteLevel. */
    tok_norm norm[TOK_MAX_NORM];
    int n_norm;
    tok_pre pre[TOK_MAX_PRE];
    int n_pre;
    tok_level lvl[TOK_MAX_PRE];
    char *nbuf[2]; /* normalizer scratch */
    size_t nbuf_cap[2];
    uint16_t *u16[2]; /* NFC scratch (ICU works in UTF-16) */
    size_t u16_cap[2];

    /* Unigram: per-id scores, their minimum (unknown characters score min - 10); Viterbi
     * scratch. Unigram and WordPiece: the ids of model.vocab sorted by their bytes (prefix.c). */
    double *score; /* n_score entries (model.vocab) */
    size_t n_score;
    double min_score;
    int32_t *sorted;
    size_t n_sorted;
    struct tok_uni_node *u_node;
    size_t u_cap;
    /* WordPiece: continuing_subword_prefix, max_input_chars_per_word (unk is t->unk). */
    char wp_prefix[32];
    size_t wp_prefix_len;
    int64_t wp_max_chars;

    /* Decoding (CHAR mode): replace dec_from by dec_to, bytes from <0xNN>, then strip. */
    char dec_from[8], dec_to[8];
    size_t dec_from_len, dec_to_len;
    int dec_byte_fallback;
    int dec_strip_start, dec_strip_stop; /* leading / trailing dec_strip_chr to remove */
    char dec_strip_chr;
    int dec_meta_first; /* Metaspace decoder: the first token loses its replacement chars */
    int dec_wordpiece;  /* WordPiece decoder: "##" pieces join, others get a space */
    int dec_cleanup;    /* WordPiece decoder's cleanup (" ." -> ".", " n't" -> "n't", ...) */

    /* Sequence framing from the post-processor and tokenizer_config.json. */
    int32_t bos, eos_cfg;
    int add_bos, add_eos;
    sp__buf desc;    /* canonical description of everything beyond GPT-2's defaults ("" if none) */
    int desc_failed; /* out of memory while building desc */
    int32_t *added;  /* ids of added tokens (matched in the text before pre-tokenization) */
    size_t n_added;
    uint64_t hash;

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
/* config: tokenizer_config.json beside it, or NULL. */
int tok_load_hf_json(sp_tokenizer *t, const char *path, const char *config, sp_error *err);
int tok_load_vocab_json(sp_tokenizer *t, const char *path, sp_error *err);
int tok_load_merges_txt(sp_tokenizer *t, const char *path, sp_error *err);

/* Pipeline parsing (pipeline.c): normalizer, pre_tokenizer, decoder, post_processor and
 * tokenizer_config.json. Messages name path and the JSON path. */
int tok_parse_pipeline(sp_tokenizer *t, json_t *root, const char *path, sp_error *err);
/* tokenizer_config.json beside vocab.json + merges.txt, read as transformers' GPT2Tokenizer
 * reads it: bos_token, eos_token and add_bos_token (default false; OPT's true: "</s>" first,
 * bos_token defaulting to <|endoftext|>). GPT2Tokenizer has no add_eos_token. */
int tok_apply_pair_config(sp_tokenizer *t, const char *cfg_path, sp_error *err);
int tok_parse_post(sp_tokenizer *t, json_t *root, const char *path, const char *config_path,
                   sp_error *err);
void tok_free_pipeline(sp_tokenizer *t);
/* Compiles pattern (UTF + UCP; literal if is_literal). */
pcre2_code *tok_regex(const char *pattern, size_t len, int is_literal, sp_error *err);
/* Appends to t->desc (the canonical description that the hash covers); returns 0, and on
 * running out of memory sets desc_failed, which finishing the tokenizer reports. */
int tok_desc(sp_tokenizer *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Normalization (normalize.c): applies t->norm to s; *out points to s or to scratch. */
int tok_normalize(sp_tokenizer *t, const char *s, size_t n, const char **out, size_t *out_len,
                  sp_error *err);

/* Precompiled charsmap (charsmap.c). Parsing validates the whole blob (sizes, UTF-8, every
 * trie position and value reachable from the root) so lookups cannot go out of bounds. */
int tok_base64_decode(const char *s, size_t n, uint8_t **out, size_t *out_len);
int tok_charsmap_parse(tok_charsmap *m, const uint8_t *blob, size_t len, sp_error *err);
void tok_charsmap_free(tok_charsmap *m);
/* The replacement of the shortest key that prefixes s[0, n) (stopping at a NUL byte): 1 and
 * [*out, *out + *out_len), or 0 when no key does. */
int tok_charsmap_lookup(const tok_charsmap *m, const char *s, size_t n, const char **out,
                        size_t *out_len);
/* Hugging Face's Precompiled normalizer: per extended grapheme cluster (shorter than 6 bytes)
 * its replacement, else per character. Appends to out. */
int tok_charsmap_normalize(tok_charsmap *m, const char *s, size_t n, sp__buf *out, sp_error *err);

/* Common-prefix search over model.vocab (prefix.c): after the vocabulary is loaded, build;
 * then a walk from start, one byte per step, reports the pieces equal to the bytes read, in
 * increasing length, and stops (returns 0) when no piece continues them. */
typedef struct tok_prefix_walk {
    size_t lo, hi, len;
} tok_prefix_walk;
int tok_prefix_build(sp_tokenizer *t, sp_error *err);
void tok_prefix_start(const sp_tokenizer *t, tok_prefix_walk *w);
int tok_prefix_step(const sp_tokenizer *t, tok_prefix_walk *w, uint8_t c, int32_t *id);
/* The walk's text is skip bytes already stepped, then q[0, n): advances to the next piece that
 * ends in it (1, its *id; w->len is its length) or returns 0 when none does. */
int tok_prefix_next(const sp_tokenizer *t, tok_prefix_walk *w, const uint8_t *q, size_t skip,
                    size_t n, int32_t *id);

/* Models other than BPE (unigram.c, wordpiece.c): the ids of one pre-tokenized piece. */
int tok_load_unigram(sp_tokenizer *t, json_t *model, const char *path, sp_error *err);
int tok_unigram_piece(sp_tokenizer *t, const uint8_t *p, size_t n, sp_token_buf *out,
                      sp_error *err);
int tok_load_wordpiece(sp_tokenizer *t, json_t *model, const char *path, sp_error *err);
int tok_wordpiece_piece(sp_tokenizer *t, const uint8_t *p, size_t n, sp_token_buf *out,
                        sp_error *err);
/* The WordPiece decoder's text of token s: first: as is; else without the prefix or after a
 * space; then cleanup if enabled. out has room for len + 1 bytes; returns the length. */
size_t tok_wordpiece_decode(const sp_tokenizer *t, const char *s, size_t len, int first, char *out);
/* A token of model.vocab (added tokens outside it take no part in the model), or -1. */
int32_t tok_model_lookup(const sp_tokenizer *t, const char *s, size_t n);

/* Encoder (encode.c). */
/* After loading: GPT-2's pipeline unless tokenizer.json gave one; match data. */
int tok_init_encoder(sp_tokenizer *t, sp_error *err);
void tok_free_encoder(sp_tokenizer *t);
/* Unicode White_Space (Rust's char::is_whitespace), for added-token lstrip/rstrip. */
int tok_is_whitespace(uint32_t cp);
/* Decodes one UTF-8 character at s (valid input); returns its length. */
size_t tok_utf8_next(const uint8_t *s, uint32_t *cp);

#endif
