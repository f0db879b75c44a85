/* Engine workers sharing a rank's cores (include/softprompt/team.h). Threads are persistent:
 * OpenBLAS keeps a buffer per calling thread, and short-lived threads would exhaust them. */
#include "softprompt/team.h"

#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* One thread's share of a batch: sequences [s0, s1) rebased to start at position 0. */
typedef struct part {
    sp_worker *w;
    int32_t *start, *tpos; /* [n_seq + 1], [n_targets]: rebased copies */
    int cap_start, cap_tpos;
    float *grad;    /* [P, d] this part's prompt gradient, added to the caller's in part order */
    float *kv_grad; /* [L, 2, P, kv_dim] the same for the key/value prefix */
    size_t cap_grad, cap_kv_grad;
    sp_batch b;
    sp_pass pass;
    double loss;
    int rc;
    sp_error err;
} part;

struct sp_team {
    int n;
    part *parts;
    pthread_t *threads; /* [n - 1]: part 0 runs on the caller */
    int *bounds;        /* [n + 1] sequence boundaries of the parts */
    int started;        /* threads created */
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    unsigned long generation; /* bumped per parallel run */
    int n_active, pending, quit;
};

typedef struct thread_arg {
    sp_team *t;
    int k;
} thread_arg;

static void run_part(part *p) {
    p->rc = sp_engine_run(p->w, &p->b, &p->pass, &p->loss, &p->err);
}

static void *thread_main(void *arg) {
    thread_arg a = *(thread_arg *)arg;
    free(arg);
    sp_team *t = a.t;
    unsigned long seen = 0;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        while (t->generation == seen && !t->quit) pthread_cond_wait(&t->go, &t->mu);
        if (t->quit) break;
        seen = t->generation;
        if (a.k >= t->n_active) continue;
        pthread_mutex_unlock(&t->mu);
        run_part(&t->parts[a.k]);
        pthread_mutex_lock(&t->mu);
        if (--t->pending == 0) pthread_cond_signal(&t->done);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

static int start_threads(sp_team *t) {
    for (int k = 1; k < t->n; k++) {
        thread_arg *a = malloc(sizeof *a);
        if (!a) return -1;
        *a = (thread_arg){t, k};
        if (pthread_create(&t->threads[k - 1], NULL, thread_main, a) != 0) {
            free(a);
            return -1;
        }
        t->started++;
    }
    return 0;
}

sp_team *sp_team_new(const sp_model *m, int n_threads) {
    sp_team *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->n = n_threads < 1 ? 1 : n_threads;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->go, NULL);
    pthread_cond_init(&t->done, NULL);
    t->parts = calloc((size_t)t->n, sizeof *t->parts);
    t->threads = calloc((size_t)t->n, sizeof *t->threads);
    t->bounds = calloc((size_t)t->n + 1, sizeof *t->bounds);
    int ok = t->parts && t->threads && t->bounds;
    for (int k = 0; ok && k < t->n; k++) ok = (t->parts[k].w = sp_worker_new(m)) != NULL;
    if (!ok || start_threads(t) != 0) {
        sp_team_free(t);
        return NULL;
    }
    return t;
}

void sp_team_free(sp_team *t) {
    if (!t) return;
    pthread_mutex_lock(&t->mu);
    t->quit = 1;
    pthread_cond_broadcast(&t->go);
    pthread_mutex_unlock(&t->mu);
    for (int k = 0; k < t->started; k++) pthread_join(t->threads[k], NULL);
    for (int k = 0; t->parts && k < t->n; k++) {
        part *p = &t->parts[k];
        sp_worker_free(p->w);
        free(p->start), free(p->tpos), free(p->grad), free(p->kv_grad);
    }
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->go);
    pthread_cond_destroy(&t->done);
    free(t->parts), free(t->threads), free(t->bounds), free(t);
}

const sp_model *sp_team_model(const sp_team *t) {
    return sp_worker_model(t->parts[0].w);
}

size_t sp_team_bytes(const sp_team *t) {
    size_t sum = 0;
    for (int k = 0; k < t->n; k++) sum += sp_worker_bytes(t->parts[k].w);
    return sum;
}

/* ------------------------------------------------------------------------------------------ */

/* bounds[0..n]: sequence boundaries giving every part about the same number of tokens and at
 * least one sequence. */
static void split_points(const sp_batch *b, int n, int *bounds) {
    int64_t total = b->seq_start[b->n_seq];
    bounds[0] = 0, bounds[n] = b->n_seq;
    for (int k = 1; k < n; k++) {
        int s = bounds[k - 1] + 1;
        while (s < b->n_seq - (n - k) && b->seq_start[s] * (int64_t)n < total * k) s++;
        bounds[k] = s;
    }
}

static int grow_i32(int32_t **p, int *cap, int need) {
    if (need <= *cap) return 0;
    int32_t *q = realloc(*p, (size_t)need * sizeof *q);
    if (!q) return -1;
    *p = q, *cap = need;
    return 0;
}

/* Where a part's gradient goes: the caller's slices of sequences from s0 on (per-sequence
 * gradients), or the part's own zeroed buffer *own [n] (grown as needed), added in part order
 * afterwards. NULL when not asked for. */
static float *part_grad(float *caller, int per_sequence, int s0, size_t n, float **own, size_t *cap,
                        int *rc) {
    if (!caller) return NULL;
    if (per_sequence) return caller + (size_t)s0 * n;
    if (n == 0) return caller;
    if (*cap < n) {
        float *g = realloc(*own, n * sizeof(float));
        if (!g) {
            *rc = -1;
            return NULL;
        }
        *own = g, *cap = n;
    }
    memset(*own, 0, n * sizeof(float));
    return *own;
}

/* Fills part p with sequences [s0, s1) of b and the matching slices of pass's outputs; n_params
 * and n_kv are the sizes of one sequence's prompt and prefix gradients. */
static int make_part(part *p, const sp_batch *b, const sp_pass *pass, int s0, int s1, int V,
                     size_t n_params, size_t n_kv) {
    int base = b->seq_start[s0], end = b->seq_start[s1];
    int j0 = 0, j1;
    while (j0 < b->n_targets && b->target_pos[j0] < base) j0++;
    for (j1 = j0; j1 < b->n_targets && b->target_pos[j1] < end; j1++) continue;
    if (grow_i32(&p->start, &p->cap_start, s1 - s0 + 1) ||
        grow_i32(&p->tpos, &p->cap_tpos, j1 - j0 + 1))
        return -1;
    for (int s = s0; s <= s1; s++) p->start[s - s0] = b->seq_start[s] - base;
    for (int j = j0; j < j1; j++) p->tpos[j - j0] = b->target_pos[j] - base;
    p->b = (sp_batch){s1 - s0, p->start, b->tokens + base, j1 - j0, p->tpos, b->target_ids + j0,
                      NULL,    NULL}; /* the team validated the whole batch, naming its examples */
    p->pass = *pass;
    int rc = 0, per_seq = pass->per_sequence_grad;
    p->pass.grad = part_grad(pass->grad, per_seq, s0, n_params, &p->grad, &p->cap_grad, &rc);
    p->pass.kv_prefix_grad =
        part_grad(pass->kv_prefix_grad, per_seq, s0, n_kv, &p->kv_grad, &p->cap_kv_grad, &rc);
    if (rc) return -1;
    if (pass->target_logits) p->pass.target_logits = pass->target_logits + (size_t)j0 * V;
    if (pass->target_loss) p->pass.target_loss = pass->target_loss + j0;
    if (pass->seq_prompts) p->pass.seq_prompts = pass->seq_prompts + s0;
    return 0;
}

static void run_parallel(sp_team *t, int n) {
    openblas_set_num_threads(1);
    pthread_mutex_lock(&t->mu);
    t->n_active = n, t->pending = n - 1;
    t->generation++;
    pthread_cond_broadcast(&t->go);
    pthread_mutex_unlock(&t->mu);
    run_part(&t->parts[0]);
    pthread_mutex_lock(&t->mu);
    while (t->pending > 0) pthread_cond_wait(&t->done, &t->mu);
    pthread_mutex_unlock(&t->mu);
    openblas_set_num_threads(t->n);
}

int sp_team_run(sp_team *t, const sp_batch *b, const sp_pass *pass, double *loss_sum,
                sp_error *err) {
    int n = t->n < b->n_seq ? t->n : b->n_seq;
    if (n < 2) return sp_engine_run(t->parts[0].w, b, pass, loss_sum, err);
    const sp_model *m = sp_worker_model(t->parts[0].w);
    /* the whole batch, so that a message names positions of the caller's batch, not of a part */
    if (sp_engine_validate(m, b, pass, err)) return -1;
    const sp_model_config *c = &m->cfg;
    size_t n_params = (size_t)pass->n_prompt * sp_config_embed_dim(c);
    size_t n_kv =
        (size_t)c->n_layer * 2 * pass->n_kv_prefix * sp_config_kv_heads(c) * sp_config_head_dim(c);
    int *bounds = t->bounds;
    split_points(b, n, bounds);
    for (int k = 0; k < n; k++)
        if (make_part(&t->parts[k], b, pass, bounds[k], bounds[k + 1], c->vocab_size, n_params,
                      n_kv))
            return sp_fail(err, "out of memory splitting a batch of %d sequences", b->n_seq);
    run_parallel(t, n);
    *loss_sum = 0.0;
    for (int k = 0; k < n; k++) {
        part *p = &t->parts[k];
        if (p->rc != 0) {
            *err = p->err;
            return -1;
        }
        *loss_sum += p->loss;
        if (pass->per_sequence_grad) continue;
        if (pass->grad && n_params > 0)
            for (size_t i = 0; i < n_params; i++) pass->grad[i] += p->grad[i];
        if (pass->kv_prefix_grad && n_kv > 0)
            for (size_t i = 0; i < n_kv; i++) pass->kv_prefix_grad[i] += p->kv_grad[i];
    }
    return 0;
}
