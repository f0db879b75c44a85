/* Helpers shared by the fuzz targets (fuzz/fuzz_*.c; see fuzz/README.md).
 *
 * Every target is one LLVMFuzzerTestOneInput that hands the input to a real parser of the
 * library, through a file when the parser takes a path. Files go to a private directory made
 * once per process under $TMPDIR (scripts/fuzz points it into the build tree). A target must
 * never crash, hang, leak or trip a sanitizer on any input: errors are normal outcomes. */
#ifndef SP_FUZZ_UTIL_H
#define SP_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "softprompt/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts with a message: a broken fuzzing setup, not a finding about the input. */
static inline void fz_die(const char *what, const char *detail) {
    fprintf(stderr, "fuzz setup: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    abort();
}

/* The private scratch directory of this process (created on first use, removed at exit). */
static char fz_dir_path[4096];

static inline void fz_dir_cleanup(void) {
    if (!fz_dir_path[0]) return;
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fz_dir_path);
    if (system(cmd) != 0) fprintf(stderr, "fuzz: could not remove %s\n", fz_dir_path);
}

static inline const char *fz_dir(void) {
    if (!fz_dir_path[0]) {
        const char *base = getenv("TMPDIR");
        if (!base || !*base) base = P_tmpdir;
        snprintf(fz_dir_path, sizeof fz_dir_path, "%s/sp-fuzz.XXXXXX", base);
        if (!mkdtemp(fz_dir_path)) fz_die("cannot create a scratch directory under", base);
        atexit(fz_dir_cleanup);
    }
    return fz_dir_path;
}

/* fz_dir()/name in a static buffer of slot (0..3) so a few paths can be held at once. */
static inline const char *fz_path(int slot, const char *name) {
    static char buf[4][4200];
    snprintf(buf[slot], sizeof buf[slot], "%s/%s", fz_dir(), name);
    return buf[slot];
}

static inline void fz_write(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) fz_die("cannot write", path);
}

/* Reads a whole file (malloc'd, NUL-terminated; length in *n). */
static inline char *fz_read(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) fz_die("cannot read", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) fz_die("cannot read", path);
    fclose(f);
    buf[len] = 0;
    if (n) *n = (size_t)len;
    return buf;
}

/* Copies the fixture file SP_FIXTURES_DIR/rel to fz_dir()/name. */
static inline void fz_copy_fixture(const char *rel, const char *name) {
    char src[4200];
    snprintf(src, sizeof src, "%s/%s", SP_FIXTURES_DIR, rel);
    size_t n;
    char *buf = fz_read(src, &n);
    fz_write(fz_path(3, name), buf, n);
    free(buf);
}

/* Creates fz_dir()/name as a directory; returns its path (malloc'd: call once and keep it). */
static inline const char *fz_subdir(const char *name) {
    const char *p = fz_path(2, name);
    if (mkdir(p, 0755) != 0) fz_die("cannot create", p);
    char *copy = strdup(p);
    if (!copy) fz_die("out of memory", NULL);
    return copy;
}

/* Splits data at the first NUL byte: [0, *n1) and, when there is one, (*n1, size). Returns a
 * pointer to the second part (NULL when there is no NUL). */
static inline const uint8_t *fz_split(const uint8_t *data, size_t size, size_t *n1, size_t *n2) {
    const uint8_t *z = memchr(data, 0, size);
    if (!z) {
        *n1 = size, *n2 = 0;
        return NULL;
    }
    *n1 = (size_t)(z - data), *n2 = size - *n1 - 1;
    return z + 1;
}

/* A NUL-terminated malloc'd copy of n bytes. */
static inline char *fz_strndup(const uint8_t *p, size_t n) {
    char *s = malloc(n + 1);
    if (!s) fz_die("out of memory", NULL);
    if (n) memcpy(s, p, n);
    s[n] = 0;
    return s;
}

/* What the tokenizer-loading targets do with a tokenizer that loaded: every id in use (the first
 * 8192) maps to a token that maps back to it, and text (special tokens allowed) encodes and its
 * ids decode, so that what the loader accepted is exercised by the encoder too. */
static inline void fz_exercise_tokenizer(sp_tokenizer *tok, const char *text, size_t len) {
    int32_t n = sp_tokenizer_vocab_size(tok);
    if (n > 8192) n = 8192;
    for (int32_t id = 0; id < n; id++) {
        size_t len;
        const char *s = sp_tokenizer_id_to_token(tok, id, &len);
        if (s && sp_tokenizer_token_to_id(tok, s, len) != id) {
            fprintf(stderr, "id %d: token does not map back\n", (int)id);
            abort();
        }
    }
    sp_error err;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (sp_tokenizer_encode(tok, text, len, SP_TOK_ALLOW_SPECIAL, &ids, &n_ids, &err) == 0) {
        char *out = NULL;
        size_t out_len;
        if (sp_tokenizer_decode(tok, ids, n_ids, 0, &out, &out_len, &err) == 0) free(out);
    }
    free(ids);
}

#endif
