/* sp_predict: the verbalizer logits of every example under every prompt, computed by rounds of
 * chunks over the ranks and written in input order to a file that survives being stopped
 * (predict.h describes the output, the progress record and the resume). */
#include "softprompt/predict.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/fileutil.h"
#include "softprompt/train.h"
#include "train/hash64.h"
#include "train/internal.h"
#include "train/predict_internal.h"

#define PROGRESS_FORMAT "softprompt-predict-progress"

typedef struct run {
    sp_team *team;
    const sp_examples *ex;
    const sp_predict_options *o;
    const sp_dist *d;
    sp_predict_metrics *m;
    int K, C, V;
    int64_t n_chunks, done; /* chunks in all, chunks in the output */
    char *partial, *progress;
    char fp[17];
    sp__run_lock lock; /* rank 0: OUT.lock, this run's while it writes OUT */
    int fd;            /* rank 0: the partial output */
    int64_t bytes;     /* rank 0: its length */
    /* one micro-batch */
    int32_t *seq_start, *tokens, *tpos, *tids;
    const float **seq_prompts;
    float *logits; /* [micro_batch * K, V] */
    double *round; /* [size * chunk * K * C + 1]: a round's logits, then the stop flag */
    size_t n_round;
    sp__scores s;
} run;

/* ---- the fingerprint of everything that decides the output's bytes -------------------------- */

/* Floats of one row of a key/value prefix over every layer: L * 2 * kv_dim. */
static size_t kv_row_floats(const run *r) {
    const sp_model_config *c = &sp_team_model(r->team)->cfg;
    return (size_t)c->n_layer * 2 * (size_t)sp_config_kv_heads(c) * (size_t)sp_config_head_dim(c);
}

/* Rows of prompt k's key/value prefix (0: none). */
static int kv_rows(const run *r, int k) {
    return r->o->kv_prefixes && r->o->kv_prefixes[k] ? r->o->n_kv_prefix[k] : 0;
}

static void fingerprint(run *r) {
    const sp_predict_options *o = r->o;
    const sp_examples *ex = r->ex;
    sp__h64 h;
    sp__h64_init(&h);
    sp__h64_str(&h, PROGRESS_FORMAT " 1");
    sp__h64_i64(&h, o->format), sp__h64_i64(&h, o->micro_batch), sp__h64_i64(&h, o->chunk);
    sp__h64_i64(&h, o->n_prompts), sp__h64_i64(&h, o->n_prompt);
    sp__h64_str(&h, o->model_fingerprint ? o->model_fingerprint : "");
    size_t d = (size_t)sp_config_embed_dim(&sp_team_model(r->team)->cfg);
    for (int k = 0; o->n_prompt > 0 && k < o->n_prompts; k++) /* (a prefix alone: none) */
        sp__h64_update(&h, o->prompts[k], (size_t)o->n_prompt * d * sizeof(float));
    for (int k = 0; o->kv_prefixes && k < o->n_prompts; k++) { /* (none: as before prefixes) */
        size_t n = (size_t)o->n_kv_prefix[k] * kv_row_floats(r);
        sp__h64_i64(&h, o->n_kv_prefix[k]);
        if (n) sp__h64_update(&h, o->kv_prefixes[k], n * sizeof(float));
    }
    sp__h64_i64(&h, ex->n);
    sp__h64_update(&h, ex->start, (size_t)(ex->n + 1) * sizeof *ex->start);
    sp__h64_update(&h, ex->tokens, (size_t)ex->start[ex->n] * sizeof *ex->tokens);
    sp__h64_update(&h, ex->target_pos, (size_t)ex->n * sizeof *ex->target_pos);
    sp__h64_update(&h, ex->labels, (size_t)ex->n * sizeof *ex->labels);
    sp__h64_update(&h, ex->verbalizer, (size_t)ex->n_classes * sizeof *ex->verbalizer);
    for (int c = 0; c < ex->n_classes; c++) sp__h64_str(&h, ex->class_names[c]);
    sp__h64_hex(sp__h64_final(&h), r->fp);
}

/* ---- computing one chunk ------------------------------------------------------------------- */

static int alloc_run(run *r, sp_error *err) {
    size_t mb = (size_t)r->o->micro_batch, ns = mb * (size_t)r->K, longest = 0;
    for (int64_t i = 0; i < r->ex->n; i++) {
        size_t len = (size_t)(r->ex->start[i + 1] - r->ex->start[i]);
        longest = len > longest ? len : longest;
    }
    r->n_round = (size_t)r->d->size * (size_t)r->o->chunk * r->K * r->C + 1;
    r->seq_start = malloc((ns + 1) * sizeof *r->seq_start);
    r->tokens = malloc(ns * longest * sizeof *r->tokens);
    r->tpos = malloc(ns * sizeof *r->tpos), r->tids = malloc(ns * sizeof *r->tids);
    r->seq_prompts = malloc(ns * sizeof *r->seq_prompts);
    r->logits = malloc(ns * (size_t)r->V * sizeof *r->logits);
    r->round = malloc(r->n_round * sizeof *r->round);
    r->s.probs = malloc((size_t)r->K * r->C * sizeof *r->s.probs);
    r->s.pred = malloc((size_t)r->K * sizeof *r->s.pred);
    r->s.mean = malloc((size_t)r->C * sizeof *r->s.mean);
    if (!r->seq_start || !r->tokens || !r->tpos || !r->tids || !r->seq_prompts || !r->logits ||
        !r->round || !r->s.probs || !r->s.pred || !r->s.mean)
        return sp_fail(err, "out of memory for micro-batches of %d examples x %d prompts",
                       r->o->micro_batch, r->K);
    return 0;
}

/* Examples [first, first + n) under every prompt (example-major) as one batch, or (only >= 0)
 * under prompt only alone. */
static sp_batch build_batch(run *r, int64_t first, int n, int only) {
    const sp_examples *ex = r->ex;
    int s = 0;
    r->seq_start[0] = 0;
    for (int i = 0; i < n; i++) {
        int64_t e = first + i, len = ex->start[e + 1] - ex->start[e];
        for (int k = only < 0 ? 0 : only; k < (only < 0 ? r->K : only + 1); k++, s++) {
            memcpy(r->tokens + r->seq_start[s], ex->tokens + ex->start[e],
                   (size_t)len * sizeof *r->tokens);
            r->tpos[s] = r->seq_start[s] + ex->target_pos[e];
            r->tids[s] = ex->verbalizer[0]; /* the logits are what is used */
            r->seq_prompts[s] = r->o->prompts[k];
            r->seq_start[s + 1] = r->seq_start[s] + (int32_t)len;
        }
    }
    return (sp_batch){s, r->seq_start, r->tokens, s, r->tpos, r->tids, ex->source, NULL};
}

/* out [n, K, C] = the verbalizer logits of examples [first, first + n): every prompt in one
 * engine call (only < 0), or prompt only's alone behind its key/value prefix. */
static int engine_call(run *r, int64_t first, int n, int only, double *out, sp_error *err) {
    sp_batch b = build_batch(r, first, n, only);
    int k0 = only < 0 ? 0 : only, per = only < 0 ? r->K : 1; /* sequences per example */
    sp_pass pass = {.prompt = r->o->prompts[k0],
                    .n_prompt = r->o->n_prompt,
                    .seq_prompts = only < 0 ? r->seq_prompts : NULL,
                    .kv_prefix = kv_rows(r, k0) ? r->o->kv_prefixes[k0] : NULL,
                    .n_kv_prefix = kv_rows(r, k0),
                    .target_logits = r->logits};
    double loss;
    if (sp_team_run(r->team, &b, &pass, &loss, err))
        return sp_fail_prefix(err, "%s: examples %lld-%lld", r->ex->source, (long long)first,
                              (long long)(first + n - 1));
    for (int s = 0; s < b.n_seq; s++) {
        int i = s / per, k = k0 + s % per;
        for (int c = 0; c < r->C; c++) {
            float x = r->logits[(size_t)s * r->V + r->ex->verbalizer[c]];
            if (!isfinite(x))
                return sp_fail(err,
                               "%s: example %lld, prompt %d: the logit of class %d is %g: the "
                               "model or the prompt holds non-finite values or they overflow",
                               r->ex->source, (long long)(first + i), k + 1, c, (double)x);
            out[((size_t)i * r->K + k) * r->C + c] = x + 0.0f; /* -0 is 0: sums keep it */
        }
    }
    return 0;
}

static int micro_batch(run *r, int64_t first, int n, double *out, sp_error *err) {
    if (!r->o->kv_prefixes) return engine_call(r, first, n, -1, out, err);
    for (int k = 0; k < r->K; k++)
        if (engine_call(r, first, n, k, out, err)) return -1;
    return 0;
}

static int64_t chunk_end(const run *r, int64_t c) {
    int64_t end = (c + 1) * r->o->chunk;
    return end < r->ex->n ? end : r->ex->n;
}

static int compute_chunk(run *r, int64_t c, double *out, sp_error *err) {
    int64_t end = chunk_end(r, c);
    size_t per = (size_t)r->K * r->C;
    for (int64_t i = c * r->o->chunk; i < end; i += r->o->micro_batch) {
        int n = (int)(end - i < r->o->micro_batch ? end - i : r->o->micro_batch);
        if (micro_batch(r, i, n, out + (size_t)(i - c * r->o->chunk) * per, err)) return -1;
    }
    return 0;
}

/* ---- the progress record and the partial output (rank 0) ----------------------------------- */

static size_t n_counts(const run *r) {
    return (size_t)r->m->n_predictors * r->C * r->C;
}

static int write_progress(run *r, sp_error *err) {
    json_t *conf = json_array();
    for (size_t i = 0; i < n_counts(r); i++)
        json_array_append_new(conf, json_integer((json_int_t)r->m->confusion[i]));
    json_t *j = json_pack("{s:s, s:i, s:s, s:I, s:I, s:I, s:I, s:I, s:o}", "format",
                          PROGRESS_FORMAT, "version", 1, "fingerprint", r->fp, "chunks_done",
                          (json_int_t)r->done, "n_chunks", (json_int_t)r->n_chunks, "bytes",
                          (json_int_t)r->bytes, "examples", (json_int_t)r->m->n_examples,
                          "labelled", (json_int_t)r->m->n_labelled, "confusion", conf);
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (!text) return sp_fail(err, "%s: out of memory", r->progress);
    size_t len = strlen(text);
    text[len] = '\n'; /* replaces the NUL; written with its length */
    int rc = sp__write_file_atomic(r->progress, text, len + 1, err);
    free(text);
    return rc;
}

static int64_t get_int(json_t *j, const char *key, int64_t lo, int64_t hi, int *bad) {
    json_t *v = json_object_get(j, key);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        if (!*bad) *bad = 1;
        return 0;
    }
    return json_integer_value(v);
}

/* Reads the progress record of an earlier run of the same output. 1: resume from it; 0: none;
 * -1: refused (another run's, damaged, or the partial output shorter than it says). */
static int read_progress(run *r, sp_error *err) {
    struct stat st;
    if (stat(r->progress, &st) != 0) return 0;
    json_error_t je;
    json_t *j = json_load_file(r->progress, 0, &je);
    if (!j) return sp_fail(err, "%s: not a progress record (%s)", r->progress, je.text);
    const char *fp = json_string_value(json_object_get(j, "fingerprint"));
    const char *fmt = json_string_value(json_object_get(j, "format"));
    int bad = !fmt || strcmp(fmt, PROGRESS_FORMAT) != 0 || !fp;
    if (!bad && strcmp(fp, r->fp) != 0) {
        json_decref(j);
        return sp_fail(err,
                       "%s: the progress of another run (other inputs, prompts, model or "
                       "options); --force starts over",
                       r->progress);
    }
    int64_t done = get_int(j, "chunks_done", 0, r->n_chunks, &bad);
    int64_t bytes = get_int(j, "bytes", 0, INT64_MAX, &bad);
    int64_t examples = get_int(j, "examples", 0, r->ex->n, &bad);
    int64_t labelled = get_int(j, "labelled", 0, examples, &bad);
    json_t *conf = json_object_get(j, "confusion");
    bad = bad || get_int(j, "n_chunks", r->n_chunks, r->n_chunks, &bad) != r->n_chunks ||
          !json_is_array(conf) || json_array_size(conf) != n_counts(r) ||
          examples != (done == r->n_chunks ? r->ex->n : done * r->o->chunk);
    for (size_t i = 0; !bad && i < n_counts(r); i++) {
        json_t *v = json_array_get(conf, i);
        bad = !json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > labelled;
        r->m->confusion[i] = bad ? 0 : json_integer_value(v);
    }
    json_decref(j);
    if (bad) return sp_fail(err, "%s: a damaged progress record; --force starts over", r->progress);
    if (stat(r->partial, &st) != 0 || st.st_size < bytes)
        return sp_fail(err, "%s: %s; --force starts over", r->partial,
                       errno == ENOENT ? "missing, but the progress record says it was begun"
                                       : "shorter than its progress record says");
    r->done = done, r->bytes = bytes, r->m->n_examples = examples, r->m->n_labelled = labelled;
    return 1;
}

/* Rank 0: refuses an existing output (unless force), resumes or starts the partial output. */
static int open_output(run *r, sp_error *err) {
    const sp_predict_options *o = r->o;
    struct stat st;
    if (!o->force && stat(o->out, &st) == 0)
        return sp_fail(err, "%s: already exists (use --force to overwrite it)", o->out);
    int resumed = read_progress(r, err);
    if (resumed < 0 && !o->force) return -1;
    if (resumed <= 0) { /* start over */
        memset(r->m->confusion, 0, n_counts(r) * sizeof *r->m->confusion);
        r->done = r->bytes = r->m->n_examples = r->m->n_labelled = 0;
    }
    r->fd = open(r->partial, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (r->fd < 0 || ftruncate(r->fd, (off_t)r->bytes) != 0 ||
        lseek(r->fd, (off_t)r->bytes, SEEK_SET) < 0)
        return sp_fail(err, "%s: cannot write: %s", r->partial, strerror(errno));
    return resumed <= 0 ? write_progress(r, err) : 0;
}

/* ---- a round: rank 0 writes its chunks in order -------------------------------------------- */

static void count(run *r, int64_t i, const sp__scores *s) {
    sp_predict_metrics *m = r->m;
    int label = r->ex->labels[i], C = r->C;
    m->n_examples++;
    if (label < 0) return;
    m->n_labelled++;
    for (int k = 0; k < m->n_predictors; k++) {
        int p = k < r->K ? s->pred[k] : k == r->K ? s->predicted : s->vote;
        m->confusion[((size_t)k * C + label) * C + p]++;
    }
}

/* The rows of chunks [first, last) from the round's logits, counted (every rank) and, on rank
 * 0, appended to buf. */
static int rows(run *r, int64_t first, int64_t last, sp__buf *buf) {
    size_t per = (size_t)r->K * r->C;
    int rc = 0;
    if (first == 0) rc = sp__predict_header(buf, r->o->format, r->ex, r->K);
    for (int64_t c = first; rc == 0 && c < last; c++) {
        const double *x = r->round + (size_t)(c - first) * r->o->chunk * per;
        for (int64_t i = c * r->o->chunk; rc == 0 && i < chunk_end(r, c); i++, x += per) {
            float lg[SP_PREDICT_MAX_PROMPTS * 64], *l = per <= sizeof lg / sizeof *lg ? lg : NULL;
            float *big = l ? NULL : malloc(per * sizeof *big);
            if (!l && !(l = big)) return -1;
            for (size_t j = 0; j < per; j++) l[j] = (float)x[j];
            sp_predict_score(l, r->K, r->C, r->s.probs, r->s.pred, r->s.mean, &r->s.predicted,
                             &r->s.vote);
            count(r, i, &r->s);
            if (r->d->rank == 0) rc = sp__predict_row(buf, r->o->format, r->ex, i, l, r->K, &r->s);
            free(big);
        }
    }
    return rc;
}

static int append(run *r, const sp__buf *buf, sp_error *err) {
    if (sp__write_all(r->fd, buf->p ? buf->p : "", buf->len) != 0 || fsync(r->fd) != 0)
        return sp_fail(err, "%s: cannot write: %s", r->partial, strerror(errno));
    r->bytes += (int64_t)buf->len;
    return write_progress(r, err);
}

/* One round: chunk done + rank on each rank, gathered; returns the stop flag, or -1. */
static int one_round(run *r, sp_error *err) {
    int64_t first = r->done, last = first + r->d->size, mine = first + r->d->rank;
    if (last > r->n_chunks) last = r->n_chunks;
    size_t slot = (size_t)r->o->chunk * r->K * r->C;
    memset(r->round, 0, r->n_round * sizeof *r->round);
    int rc =
        mine < r->n_chunks ? compute_chunk(r, mine, r->round + (size_t)r->d->rank * slot, err) : 0;
    if (sp_dist_any(rc != 0)) return rc ? -1 : sp_fail(err, "predict failed on another rank");
    r->round[r->n_round - 1] = sp__signals_stop_requested() ? 1 : 0;
    sp_dist_sum_double(r->round, r->n_round);
    sp__buf buf = {0};
    rc = rows(r, first, last, &buf) ? sp_fail(err, "out of memory for the output rows") : 0;
    r->done = last;
    if (rc == 0 && r->d->rank == 0) rc = append(r, &buf, err);
    sp__buf_free(&buf);
    if (sp_dist_rank0_agree(rc, "write the output", err)) return -1;
    return r->round[r->n_round - 1] > 0;
}

/* ---- sp_predict ---------------------------------------------------------------------------- */

static int check_options(const run *r, sp_error *err) {
    const sp_predict_options *o = r->o;
    if (o->n_prompts < 1 || o->n_prompts > SP_PREDICT_MAX_PROMPTS)
        return sp_fail(err, "%d prompts: expected 1..%d", o->n_prompts, SP_PREDICT_MAX_PROMPTS);
    if (o->micro_batch < 1 || o->chunk < 1)
        return sp_fail(err, "micro-batch %d, chunk %lld: expected >= 1", o->micro_batch,
                       (long long)o->chunk);
    if (o->n_prompt != r->ex->n_soft)
        return sp_fail(err, "the prompts have %d rows but the examples of %s have %d soft slots",
                       o->n_prompt, r->ex->source, r->ex->n_soft);
    for (int k = 0; o->kv_prefixes && k < o->n_prompts; k++)
        if (o->kv_prefixes[k] && o->n_kv_prefix[k] < 0)
            return sp_fail(err, "prompt %d: a key/value prefix of %d rows", k + 1,
                           o->n_kv_prefix[k]);
    for (int c = 0; o->format == SP_PREDICT_TSV && c < r->C; c++)
        if (strpbrk(r->ex->class_names[c], "\t\r\n"))
            return sp_fail(err,
                           "class %d's name holds a tab or a line break: not a TSV column "
                           "(--format jsonl or csv)",
                           c);
    return 0;
}

static char *with_suffix(const char *path, const char *suffix) {
    size_t n = strlen(path) + strlen(suffix) + 1;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s%s", path, suffix);
    return p;
}

/* What a micro-batch needs, against what this rank may use (train's check). */
static int check_memory(const run *r, sp_error *err) {
    int max_prefix = 0, prefix_rows = 0;
    for (int k = 0; k < r->K; k++) {
        int n = kv_rows(r, k);
        max_prefix = n > max_prefix ? n : max_prefix, prefix_rows += n;
    }
    int per = r->o->kv_prefixes ? 1 : r->K; /* sequences per example in one engine call */
    return sp__predict_check_memory(sp_team_model(r->team), r->ex, r->o->micro_batch, per,
                                    r->o->micro_batch * r->K, max_prefix, prefix_rows,
                                    r->d->local_size, err);
}

/* Rank 0: OUT.partial becomes OUT, the progress record goes. */
static int publish(run *r, sp_error *err) {
    int fd = r->fd;
    r->fd = -1;
    int rc = sp__commit(fd, r->partial, r->o->out, err);
    if (rc == SP_COMMIT_UNSYNCED) rc = -1;
    if (rc == 0) unlink(r->progress);
    return rc;
}

static int setup(run *r, sp_error *err) {
    const sp_examples *ex = r->ex;
    sp_predict_metrics *m = r->m;
    r->K = r->o->n_prompts, r->C = ex->n_classes, r->V = sp_team_model(r->team)->cfg.vocab_size;
    r->fd = -1;
    if (check_options(r, err)) return -1;
    r->n_chunks = (ex->n + r->o->chunk - 1) / r->o->chunk;
    m->n_predictors = r->K > 1 ? r->K + 2 : 1, m->n_classes = r->C;
    if (!(m->confusion = calloc(n_counts(r), sizeof *m->confusion)) ||
        !(r->partial = with_suffix(r->o->out, ".partial")) ||
        !(r->progress = with_suffix(r->o->out, ".progress.json")))
        return sp_fail(err, "out of memory");
    fingerprint(r);
    return check_memory(r, err) ? -1 : alloc_run(r, err);
}

/* Every rank learns where rank 0 continues from and what was counted before. */
static void share_start(run *r) {
    int64_t head[3] = {r->done, r->m->n_examples, r->m->n_labelled};
    sp_dist_bcast(head, sizeof head);
    r->done = head[0], r->m->n_examples = head[1], r->m->n_labelled = head[2];
    sp_dist_bcast(r->m->confusion, n_counts(r) * sizeof *r->m->confusion);
}

/* --check: what open_output would refuse, without writing. */
static int check_output(run *r, sp_error *err) {
    struct stat st;
    if (sp__out_lock_probe(r->o->out, "predict", err)) return -1;
    if (!r->o->force && stat(r->o->out, &st) == 0)
        return sp_fail(err, "%s: already exists (use --force to overwrite it)", r->o->out);
    int resumed = read_progress(r, err);
    if (resumed < 0 && !r->o->force) return -1;
    if (resumed <= 0) r->done = 0;
    return 0;
}

/* Rank 0: OUT is this run's (the run lock, as train's), then its partial output is open. */
static int claim_output(run *r, sp_error *err) {
    return sp__out_lock_acquire(&r->lock, r->o->out, "predict", err) || open_output(r, err) ? -1
                                                                                            : 0;
}

static int loop(run *r, sp_error *err) {
    int rc =
        sp_dist_rank0_agree(r->d->rank == 0 ? claim_output(r, err) : 0, "open the output", err);
    if (rc) return -1;
    share_start(r);
    r->m->chunks = r->n_chunks, r->m->resumed_from = r->done;
    sp__signals_install();
    while (r->done < r->n_chunks) {
        int stop = one_round(r, err);
        if (stop < 0) return -1;
        if (stop && r->done < r->n_chunks) return SP_EXIT_STOPPED;
    }
    return sp_dist_rank0_agree(r->d->rank == 0 ? publish(r, err) : 0, "publish the output", err);
}

int sp_predict(sp_team *team, const sp_examples *ex, const sp_predict_options *o, const sp_dist *d,
               sp_predict_metrics *m, sp_error *err) {
    memset(m, 0, sizeof *m);
    run r = {.team = team, .ex = ex, .o = o, .d = d, .m = m};
    int rc = setup(&r, err);
    if (sp_dist_any(rc != 0)) rc = rc ? -1 : sp_fail(err, "predict failed on another rank");
    if (rc == 0 && o->check) {
        rc = sp_dist_rank0_agree(d->rank == 0 ? check_output(&r, err) : 0, "check", err);
        m->chunks = r.n_chunks, m->resumed_from = r.done;
    } else if (rc == 0) {
        rc = loop(&r, err);
    }
    if (r.fd >= 0) close(r.fd);
    sp__run_lock_release(&r.lock, 1); /* (a lock file this run created goes) */
    free(r.partial), free(r.progress), free(r.seq_start), free(r.tokens), free(r.tpos);
    free(r.tids), free(r.seq_prompts), free(r.logits), free(r.round);
    free(r.s.probs), free(r.s.pred), free(r.s.mean);
    if (rc < 0) sp_predict_metrics_free(m);
    return rc;
}
