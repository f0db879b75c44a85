/* Tokenizers of Hugging Face tokenizer.json (BPE: GPT-2, Llama, Qwen, Gemma, RoBERTa; Unigram:
 * T5, mT5, Flan-T5; WordPiece: BERT) and GPT-2's two-file format.
 *
 * Loading: sp_tokenizer_load(dir) reads, in this order of preference,
 *   1. tokenizer.json   (Hugging Face: model.type "BPE" with model.vocab and model.merges as
 *                        "a b" strings or [a, b] pairs, "Unigram" or "WordPiece" (below),
 *                        added_tokens, and the pipeline below), with
 *                        tokenizer_config.json beside it when present,
 *   2. vocab.json   + merges.txt,
 *   3. encoder.json + vocab.bpe   (OpenAI's names for the same two files).
 * A merges file may start with a "#version" line. Every merge must name two vocabulary tokens
 * whose concatenation is also a vocabulary token; anything else is a load error naming file:line
 * (or file: JSON path). The two-file formats are GPT-2's pipeline, with "<|endoftext|>", when in
 * the vocabulary, as the one special token.
 *
 * tokenizer.json, what is supported (anything else is refused by a load error that names the
 * file, the JSON path and the supported values):
 *   normalizer     null; NFC, NFD, NFKC, NFKD (ICU); Prepend; Replace (String or Regex pattern);
 *                  Strip (strip_left/right: Unicode White_Space); Precompiled (SentencePiece's
 *                  precompiled_charsmap, validated whole; per grapheme, shortest key);
 *                  BertNormalizer (clean_text, handle_chinese_chars, strip_accents, null =
 *                  lowercase, lowercase); Lowercase; Sequence of these. StripAccents alone is
 *                  refused.
 *   pre_tokenizer  null; Split (pattern {"Regex"} or {"String"}; behavior Removed, Isolated,
 *                  MergedWithPrevious, MergedWithNext, Contiguous; invert); ByteLevel
 *                  (add_prefix_space, use_regex = GPT-2's pattern); Digits (individual_digits);
 *                  Metaspace (replacement, prepend_scheme always/first/never or the legacy
 *                  add_prefix_space, split); WhitespaceSplit; BertPreTokenizer (whitespace
 *                  removed, each punctuation character isolated); Sequence of these. With a
 *                  ByteLevel step the BPE
 *                  runs over GPT-2's byte alphabet (Llama 3, Qwen2, SmolLM, GPT-2) and every
 *                  byte token must exist; without one it runs over Unicode characters
 *                  (SentencePiece-style: Llama 2, TinyLlama).
 *   model          BPE with ignore_merges (a pre-token that is a vocabulary token is emitted as
 *                  is), byte_fallback (a character outside the vocabulary becomes its <0xNN>
 *                  tokens), unk_token, fuse_unk; dropout null/0, continuing_subword_prefix and
 *                  end_of_word_suffix null/"" only. Merges are applied by rank.
 *                  Unigram: vocab [[piece, score]...] (ids = positions), unk_id, byte_fallback;
 *                  the highest-scoring segmentation as Hugging Face finds it (an unknown
 *                  character scores min - 10, consecutive ones are fused, then <0xNN> tokens
 *                  with byte_fallback, else unk_id; without unk_id it is an encode error).
 *                  WordPiece: vocab, unk_token, continuing_subword_prefix,
 *                  max_input_chars_per_word (longest match first; a word that cannot be cut, or
 *                  is longer, is unk_token). Both need a pre-tokenizer without ByteLevel.
 *   decoder        byte-level: ByteLevel or null. Character-level: Replace (String -> string),
 *                  ByteFallback, Fuse, Strip (after Fuse), Metaspace, alone or in a Sequence;
 *                  Replace/Metaspace before ByteFallback, ByteFallback before Fuse (the order
 *                  changes Hugging Face's result; the other orders are refused). WordPiece
 *                  (prefix, cleanup) alone, for a WordPiece model.
 *   added_tokens   special or not; lstrip/rstrip (the token takes the Unicode whitespace on
 *                  that side); normalized: true only without a normalizer; single_word refused.
 *   post_processor TemplateProcessing whose single is [BOS] $A [EOS] (each optional),
 *                  BertProcessing and RobertaProcessing ([CLS] $A [SEP], <s> $A </s>: BOS
 *                  and EOS), ByteLevel (offsets only), Sequence of these.
 *   tokenizer_config.json: bos_token, eos_token (string or {"content": ...}), add_bos_token,
 *                  add_eos_token; where it and the post-processor disagree, loading fails.
 *
 * Encoding: text is split around added tokens (leftmost, then longest; see
 * SP_TOK_ALLOW_SPECIAL), each remaining span is normalized and pre-tokenized, and each piece is
 * merged by BPE and looked up, as Hugging Face's tokenizers do; no BOS/EOS is added (see
 * sp_tokenizer_adds_bos). Regular expressions run on PCRE2 (UTF + UCP) where Hugging Face uses
 * Oniguruma: \s and \S are rewritten to Unicode White_Space (U+0009-000D, U+0020, U+0085, U+00A0,
 * U+1680, U+2000-200A, U+2028/9, U+202F, U+205F, U+3000), which Oniguruma and Python's `regex`
 * use, so U+0085 is whitespace and U+180E is not; (?i:...), \p{L}, \p{N}, {1,3}, lookahead and
 * possessive forms behave alike. \p{..} and case folding follow the installed libpcre2's Unicode
 * version (14.0 for 10.42) and normalization ICU's (15.0 for ICU 72): characters assigned later
 * may differ. Known divergences, none met by real tokenizer.json files: empty regex matches
 * are skipped (Hugging Face keeps them as zero-width delimiters), non-normalized and normalized
 * added tokens are matched in one pass, and a character that is neither in a character-level
 * vocabulary nor covered by byte_fallback/unk_token is an encode error (Hugging Face drops it).
 *
 * Invalid UTF-8 policy: encode rejects text that is not valid UTF-8 (overlong forms, surrogates,
 * code points above U+10FFFF, truncated sequences) with an error giving the byte offset of the
 * first bad byte; nothing is replaced. NUL bytes are valid (U+0000): text is length-delimited.
 *
 * Decoding gives bytes: byte-level tokens map back through GPT-2's byte table, character-level
 * ones through the decoder (U+2581 -> space, <0xNN> -> the byte, Strip of the leading space).
 * decode(encode(x)) == x byte for byte for every valid UTF-8 x with GPT-2, Llama 3 and SmolLM
 * kinds and with Llama 2's normalizer form; not where Hugging Face loses text too (NFC/NFKC,
 * a ByteLevel add_prefix_space, Metaspace's prefix). Where Hugging Face would print U+FFFD for
 * bytes that are not valid UTF-8 (a sequence cut inside a character), decode returns the bytes.
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
/* Appends ids[0..n); 0, or -1 (out of memory) leaving b as it was. */
int sp_token_buf_append(sp_token_buf *b, const int32_t *ids, size_t n);

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

/* Vocabulary form of a token (byte-level characters, e.g. "\xc4\xa0the" for " the"; in a
 * character-level vocabulary the text with U+2581 for spaces, e.g. "\xe2\x96\x81the"; added
 * tokens as written) -> id, or -1 when absent. */
int32_t sp_tokenizer_token_to_id(const sp_tokenizer *tok, const char *token, size_t len);
/* id -> NUL-terminated vocabulary form (length in *len if non-NULL), or NULL for unknown ids. */
const char *sp_tokenizer_id_to_token(const sp_tokenizer *tok, int32_t id, size_t *len);
/* True if id is a special token. */
int sp_tokenizer_is_special(const sp_tokenizer *tok, int32_t id);

/* One more than the largest id (GPT-2: 50257). Ids below it may be unused only if the files
 * leave gaps; sp_tokenizer_id_to_token returns NULL for those. */
int32_t sp_tokenizer_vocab_size(const sp_tokenizer *tok);
/* EOS: tokenizer_config.json's eos_token, else the post-processor's trailing special token,
 * else "<|endoftext|>"; -1 when there is none. */
int32_t sp_tokenizer_eos_id(const sp_tokenizer *tok);
/* BOS: tokenizer_config.json's bos_token or the post-processor's leading special token; -1
 * when there is none (GPT-2). */
int32_t sp_tokenizer_bos_id(const sp_tokenizer *tok);
/* True if a whole sequence starts with BOS (post_processor TemplateProcessing, or
 * tokenizer_config.json's add_bos_token) / ends with EOS (add_eos_token). Encoding never adds
 * them itself (pieces of a template are encoded separately): callers that build whole
 * sequences, like softprompt prepare, add them. */
int sp_tokenizer_adds_bos(const sp_tokenizer *tok);
int sp_tokenizer_adds_eos(const sp_tokenizer *tok);
/* The canonical description of the pipeline beyond GPT-2's (see sp_tokenizer_hash); "" for
 * GPT-2-style tokenizers. */
const char *sp_tokenizer_describe(const sp_tokenizer *tok);
size_t sp_tokenizer_n_merges(const sp_tokenizer *tok);

/* Identifies the vocabulary for dataset files: FNV-1a 64 over a canonical form that does not
 * depend on which file format it came from, namely the ASCII tag "sp-bpe-v1", then for every
 * present id in increasing order: id (u32 LE), special flag (u8: 0 normal, 1 added, 2 special),
 * token length (u32 LE), token bytes (vocabulary form); then for every merge in rank order:
 * left id, right id (u32 LE each); then, only for tokenizers whose pipeline is not GPT-2's (so
 * GPT-2-style hashes are unchanged), the tag "sp-pipe-v1" and sp_tokenizer_describe's text,
 * which lists the normalizers, pre-tokenizer steps with their patterns, character-level BPE,
 * ignore_merges, byte_fallback, unk/fuse_unk, lstrip/rstrip of added tokens, the BOS/EOS
 * policy and a non-default EOS id. Not a cryptographic hash: it guards against mix-ups. */
uint64_t sp_tokenizer_hash(const sp_tokenizer *tok);
/* The hash as 16 lowercase hex digits plus NUL. */
void sp_tokenizer_hash_hex(const sp_tokenizer *tok, char out[17]);

/* The hash (sp_tokenizer_hash_hex) of the tokenizer in dir, loaded as sp_tokenizer_load (and
 * so `softprompt prepare --tokenizer dir`) loads it, e.g. to compare a model directory's
 * tokenizer with a dataset's (sp_dataset_check_tokenizer). *found = 0 and out = "" when dir
 * holds none of the tokenizer files (tokenizer.json, vocab.json, merges.txt, encoder.json,
 * vocab.bpe); files that do not load are an error (-1, err names the file). */
int sp_tokenizer_hash_of_dir(const char *dir, char out[17], int *found, sp_error *err);

#endif
