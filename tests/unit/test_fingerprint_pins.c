/* Values pinned with the engine as it was before the family redesign (main at 58f36a4): the
 * fingerprints of models written by sp_init_model_write. A checkpoint records its model's
 * fingerprint and resumes only on an equal one, so a change here would strand every existing
 * checkpoint. The fingerprint hashes values in a fixed order; the models cover GPT-2 and the
 * Llama family, tied and untied heads, every kind of bias, grouped-query heads, an explicit
 * head_dim and rope scaling. (tests/integration/test_init_model_pins.sh pins the bytes init-model
 * writes.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "softprompt/checkpoint.h"
#include "softprompt/model.h"
#include "softprompt/model_init.h"
#include "testutil.h"

typedef struct pin {
    const char *name;
    sp_init_options o;
    const char *fingerprint;
} pin;

static sp_model_config tiny(sp_arch arch) {
    sp_model_config c = {.arch = arch,
                         .n_layer = 2,
                         .d_model = 32,
                         .n_head = 4,
                         .d_ff = 48,
                         .vocab_size = 61,
                         .n_ctx = 40,
                         .ln_eps = 1e-5f,
                         .rope_theta = 10000};
    return c;
}

static sp_init_options opts(sp_model_config c, uint64_t seed, int random_norms) {
    sp_init_options o;
    sp_init_options_default(&o);
    o.cfg = c;
    o.seed = seed;
    o.random_norms = random_norms;
    return o;
}

/* The cases, built in code so that each names what it covers. */
static int make_pins(pin *p) {
    int n = 0;
    sp_model_config c = tiny(SP_ARCH_GPT2);
    c.tied = 1;
    p[n++] = (pin){"gpt2 tied, random norms and biases", opts(c, 11, 1), NULL};
    c.tied = 0;
    p[n++] = (pin){"gpt2 untied", opts(c, 12, 1), NULL};
    c = tiny(SP_ARCH_GPT2);
    c.tied = 1, c.d_ff = 128, c.ln_eps = 1e-6f;
    p[n++] = (pin){"gpt2 tied, plain norms", opts(c, 13, 0), NULL};
    c = tiny(SP_ARCH_LLAMA);
    c.n_kv_head = 2;
    p[n++] = (pin){"llama untied, GQA 2:1", opts(c, 21, 1), NULL};
    c.tied = 1, c.qkv_bias = c.o_bias = c.mlp_bias = 1;
    p[n++] = (pin){"llama tied, attention and MLP biases", opts(c, 22, 1), NULL};
    c = tiny(SP_ARCH_LLAMA);
    c.n_kv_head = 1, c.head_dim = 12, c.rope_theta = 500000;
    c.rope_scaling = SP_ROPE_LLAMA3, c.rope_factor = 8, c.rope_low_freq_factor = 1;
    c.rope_high_freq_factor = 4, c.rope_original_ctx = 16;
    p[n++] = (pin){"llama head_dim 12, llama3 rope scaling", opts(c, 23, 1), NULL};
    c = tiny(SP_ARCH_LLAMA);
    c.rope_scaling = SP_ROPE_LINEAR, c.rope_factor = 2;
    p[n++] = (pin){"llama linear rope scaling", opts(c, 24, 0), NULL};
    c = tiny(SP_ARCH_QWEN2);
    c.n_kv_head = 2, c.qkv_bias = 1, c.tied = 1, c.ln_eps = 1e-6f, c.rope_theta = 1000000;
    p[n++] = (pin){"qwen2 tied, q/k/v biases", opts(c, 31, 1), NULL};
    c.tied = 0;
    p[n++] = (pin){"qwen2 untied", opts(c, 32, 1), NULL};
    return n;
}

static const char *const EXPECTED[] = {
    "10470896f1558348", /* gpt2 tied, random norms and biases */
    "edc4ca970ce2b7fd", /* gpt2 untied */
    "fc9f5ffff4e0786e", /* gpt2 tied, plain norms */
    "ea0758432934d15c", /* llama untied, GQA 2:1 */
    "ee93d91d84914c7e", /* llama tied, attention and MLP biases */
    "b803ede1dcf654cc", /* llama head_dim 12, llama3 rope scaling */
    "dca2fca99ab750c9", /* llama linear rope scaling */
    "14bc0ded8f98f112", /* qwen2 tied, q/k/v biases */
    "5cfc6db438bbb0d3", /* qwen2 untied */
};

static void fingerprint_of(const char *dir, char out[17]) {
    sp_model m;
    sp_error err = {0};
    ck_assert_msg(sp_model_load(&m, dir, &err) == 0, "%s", err.msg);
    sp_model_fingerprint(&m, out);
    sp_model_free(&m);
}

/* Every case keeps its fingerprint; all mismatches are listed at once (with the values seen,
 * which is also how the table above was filled in from main's build). */
START_TEST(fingerprints_unchanged) {
    pin p[16];
    int n = make_pins(p);
    ck_assert_int_eq(n, (int)(sizeof EXPECTED / sizeof EXPECTED[0]));
    char report[4096] = "";
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        char name[32], fp[17];
        snprintf(name, sizeof name, "m%d", i);
        char *dir = tu_path(tu_dir, name);
        sp_error err = {0};
        ck_assert_msg(sp_init_model_write(dir, &p[i].o, &err) == 0, "%s: %s", p[i].name, err.msg);
        fingerprint_of(dir, fp);
        printf("    \"%s\", /* %s */\n", fp, p[i].name);
        if (strcmp(fp, EXPECTED[i]) != 0 && len < sizeof report)
            len += (size_t)snprintf(report + len, sizeof report - len, "%s: %s, pinned %s\n",
                                    p[i].name, fp, EXPECTED[i]);
        free(dir);
    }
    ck_assert_msg(len == 0, "fingerprints changed:\n%s", report);
}
END_TEST

/* The same weights stored differently (shards, GPT-2's transformer. prefix) keep the pinned
 * fingerprint: values are hashed, not files. */
START_TEST(fingerprints_independent_of_storage) {
    pin p[16];
    make_pins(p);
    sp_init_options gpt2 = p[1].o, llama = p[3].o;
    gpt2.n_shards = 4, gpt2.prefix = 1;
    llama.n_shards = 3;
    const sp_init_options *o[2] = {&gpt2, &llama};
    const int which[2] = {1, 3};
    for (int k = 0; k < 2; k++) {
        char *dir = tu_path(tu_dir, k ? "llama" : "gpt2");
        sp_error err = {0};
        char fp[17];
        ck_assert_msg(sp_init_model_write(dir, o[k], &err) == 0, "%s", err.msg);
        fingerprint_of(dir, fp);
        ck_assert_str_eq(fp, EXPECTED[which[k]]);
        free(dir);
    }
}
END_TEST

int main(void) {
    Suite *s = suite_create("fingerprint_pins");
    TCase *tc = tcase_create("pins");
    tcase_add_checked_fixture(tc, tu_dir_setup, tu_dir_teardown);
    tcase_add_test(tc, fingerprints_unchanged);
    tcase_add_test(tc, fingerprints_independent_of_storage);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
