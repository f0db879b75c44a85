/* Template, target and verbalizer strings (template.h). The first input byte holds options
 * (classification or generation, EOS, max_length, prompt_length, which field is truncated);
 * the rest is split at NUL bytes into: template, target, verbalizer, the record's "text" and
 * "label" values. The three specs are parsed on their own, then a formatter over a fixed
 * Llama 3-style tokenizer checks and renders the record, as `softprompt prepare` does. */
#include "fuzz_util.h"
#include "softprompt/records.h"
#include "softprompt/template.h"
#include "softprompt/tokenizer.h"

#define N_PARTS 5

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static sp_tokenizer *tok;
    sp_error err;
    if (!tok) {
        char dir[4200];
        snprintf(dir, sizeof dir, "%s/tokenizer/hf/llama3", SP_FIXTURES_DIR);
        if (!(tok = sp_tokenizer_load(dir, &err))) fz_die("cannot load", err.msg);
    }
    if (size < 1) return 0;
    uint8_t opt = data[0];
    const uint8_t *p = data + 1;
    size_t left = size - 1;
    char *part[N_PARTS] = {0};
    for (int i = 0; i < N_PARTS; i++) {
        size_t n1 = 0, n2 = 0;
        const uint8_t *rest = p ? fz_split(p, left, &n1, &n2) : NULL;
        part[i] = fz_strndup(p ? p : (const uint8_t *)"", p ? n1 : 0);
        p = rest, left = n2;
    }

    sp_template t;
    if (sp_template_parse(&t, part[0], 1, "--template", &err) == 0) {
        (void)sp_template_count_field(&t, "text");
        sp_template_free(&t);
    }
    if (sp_template_parse(&t, part[1], 0, "--target", &err) == 0) sp_template_free(&t);
    sp_verbalizer v;
    if (sp_verbalizer_parse(&v, part[2], &err) == 0) {
        (void)sp_verbalizer_find(&v, part[4]);
        sp_verbalizer_free(&v);
    }

    sp_format_options o = {0};
    o.template_spec = part[0];
    o.target_spec = (opt & 1) ? part[1] : NULL;
    o.verbalizer_spec = (opt & 2) ? part[2] : NULL;
    o.prompt_length = (opt & 4) ? 3 : -1;
    o.max_length = (opt & 8) ? 4 + (opt >> 5) * 3 : 0;
    o.eos = (opt >> 4) & 1;
    o.truncate_field = (opt & 0x80) && (opt & 0x40) ? "label" : NULL;
    sp_formatter *f = sp_formatter_new(tok, &o, &err);
    if (f) {
        const char *names[2] = {"text", "label"};
        const char *values[2] = {part[3], part[4]};
        const char *kinds[2] = {NULL, NULL};
        sp_record rec = {.path = "fuzz",
                         .line = 1,
                         .n_fields = 2,
                         .names = names,
                         .values = values,
                         .kinds = kinds};
        int label;
        (void)sp_formatter_check(f, &rec, "fuzz:1", &label, &err);
        sp_example ex = {0};
        if (sp_formatter_render(f, &rec, "fuzz:1", &ex, &err) == 0) {
            if (o.max_length && ex.tokens.n > (size_t)o.max_length) abort();
            for (int i = 0; i < ex.n_targets; i++)
                if (ex.target_pos[i] < 0 || (size_t)ex.target_pos[i] >= ex.tokens.n) abort();
        }
        sp_example_free(&ex);
        sp_formatter_free(f);
    }
    for (int i = 0; i < N_PARTS; i++) free(part[i]);
    return 0;
}
