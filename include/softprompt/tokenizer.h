/* GPT-2-style byte-level BPE tokenizer.
 *
 * Loading: sp_tokenizer_load(dir) reads, in this order of preference,
 *   1. tokenizer.json   (Hugging Face: model.type "BPE", model.vocab, model.merges as "a b"
 *                        strings or [a, b] pairs, added_tokens, pre_tokenizer ByteLevel),
 *   2. vocab.json   + merges.txt,
 *   3. encoder.json + vocab.bpe   (OpenAI's names for the same two files).
 * A merges file may start with a "#version" line. Every merge must name two vocabulary tokens
 * whose concatenation is also a vocabulary token; anything else is a load error naming file:line.
 * In the two-file formats "<|endoftext|>", when in the vocabulary, is the one special token.
 * In tokenizer.json every added_tokens entry is an added token; those with "special": true are
 * special tokens. Added tokens with lstrip/rstrip/single_word set, normalizers, and
 * pre-tokenizers other than a plain ByteLevel are refused rather than silently mis-tokenized.
 *
 * Encoding: text is split around added tokens (see SP_TOK_ALLOW_SPECIAL), each remaining span
 * is pre-tokenized with GPT-2's regular expression
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * (PCRE2, UTF + UCP), each piece's bytes are mapped through GPT-2's bytes_to_unicode table and
 * merged by BPE rank exactly as OpenAI's encoder.py does, and the parts looked up in the
 * vocabulary. Regex semantics are PCRE2's: \s is the Unicode Z categories plus \t\n\v\f\r and
 * U+180E, so unlike Python's `regex` module U+0085 is not whitespace and U+180E is, and \p{L}/\p{N}
 * follow the Unicode version of the installed libpcre2 (14.0 for 10.42). Text without those
 * characters (and without letters/digits newer than that Unicode version) tokenizes identically.
 *
 * Invalid UTF-8 policy: encode rejects text that is not valid UTF-8 (overlong forms, surrogates,
 * code points above U+10FFFF, truncated sequences) with an error giving the byte offset of the
 * first bad byte; nothing is replaced. NUL bytes are valid (U+0000): text is length-delimited.
 *
 * Decoding is the exact inverse: decode(encode(x)) == x byte for byte for every valid UTF-8 x.
 * Decoding an arbitrary id sequence yields bytes that need not be valid UTF-8.
 *
 * Threads: decoding and the lookups only read the tokenizer and may run concurrently. Encoding
 * uses per-tokenizer scratch space and a word cache, so concurrent sp_tokenizer_encode calls
 * must use separate tokenizers (load one per thread). */
#ifndef SOFTPROMPT_TOKENIZER_H
#define SOFTPROMPT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "softprompt/error.h"

typedef struct sp_tokenizer sp_tokenizer;

/* Encode flags. */
enum {
    /* Recognise special-token strings (e.g. "<|endoftext|>") in the text and emit their ids.
     * Without it they are ordinary text ("<", "|", "end", ...). Non-special added tokens from
     * tokenizer.json are always recognised, as Hugging Face does. */
    SP_TOK_ALLOW_SPECIAL = 1u << 0,
};

/* Decode flags. */
enum {
    SP_TOK_SKIP_SPECIAL = 1u << 0, /* leave special tokens out of the decoded text */
};

/* A growable id buffer that encode appends to (so templates can concatenate pieces). */
typedef struct sp_token_buf {
    int32_t *ids;
    size_t n, cap;
} sp_token_buf;

void sp_token_buf_free(sp_token_buf *b); /* frees ids and zeroes the struct */

/* Loads the tokenizer files found in dir (see above). Returns NULL and fills err on failure. */
sp_tokenizer *sp_tokenizer_load(const char *dir, sp_error *err);
void sp_tokenizer_free(sp_tokenizer *tok);

/* Encodes len bytes of UTF-8 text and appends the ids to out. On failure out->n is unchanged. */
int sp_tokenizer_encode_append(sp_tokenizer *tok, const char *text, size_t len, unsigned flags,
                               sp_token_buf *out, sp_error *err);
/* Convenience form: *ids receives a malloc'd array (non-NULL even when *n == 0). */
int sp_tokenizer_encode(sp_tokenizer *tok, const char *text, size_t len, unsigned flags,
                        int32_t **ids, size_t *n, sp_error *err);

/* Decodes ids to bytes: *out receives a malloc'd, NUL-terminated buffer of *len bytes (the
 * terminator is not counted). Unknown ids are an error naming their position. */
int sp_tokenizer_decode(const sp_tokenizer *tok, const int32_t *ids, size_t n, unsigned flags,
                        char **out, size_t *len, sp_error *err);

/* Vocabulary form of a token (byte-level characters, e.g. "\xc4\xa0the" for " the"; added tokens
 * as written) -> id, or -1 when absent. */
int32_t sp_tokenizer_token_to_id(const sp_tokenizer *tok, const char *token, size_t len);
/* id -> NUL-terminated vocabulary form (length in *len if non-NULL), or NULL for unknown ids. */
const char *sp_tokenizer_id_to_token(const sp_tokenizer *tok, int32_t id, size_t *len);
/* True if id is a special token. */
int sp_tokenizer_is_special(const sp_tokenizer *tok, int32_t id);

/* One more than the largest id (GPT-2: 50257). Ids below it may be unused only if the files
 * leave gaps; sp_tokenizer_id_to_token returns NULL for those. */
int32_t sp_tokenizer_vocab_size(const sp_tokenizer *tok);
/* Id of "<|endoftext|>", or -1 when the vocabulary has none. */
int32_t sp_tokenizer_eos_id(const sp_tokenizer *tok);
size_t sp_tokenizer_n_merges(const sp_tokenizer *tok);

/* Identifies the vocabulary for dataset files: FNV-1a 64 over a canonical form that does not
 * depend on which file format it came from, namely the ASCII tag "sp-bpe-v1", then for every
 * present id in increasing order: id (u32 LE), special flag (u8: 0 normal, 1 added, 2 special),
 * token length (u32 LE), token bytes (vocabulary form); then for every merge in rank order:
 * left id, right id (u32 LE each). Not a cryptographic hash: it guards against mix-ups. */
uint64_t sp_tokenizer_hash(const sp_tokenizer *tok);
/* The hash as 16 lowercase hex digits plus NUL. */
void sp_tokenizer_hash_hex(const sp_tokenizer *tok, char out[17]);

#endif
