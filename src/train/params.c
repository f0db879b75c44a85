/* The trainable parameter vector of each method (train/params.h) and the reparametrization of
 * the prefix (PEFT's PrefixEncoder), forward and backward by hand: the MLP sees Pk rows, so its
 * cost is negligible next to a step. */
#include "train/params.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const METHOD_NAMES[] = {
    [SP_METHOD_PROMPT] = "prompt",
    [SP_METHOD_PREFIX] = "prefix",
    [SP_METHOD_PTUNING_V2] = "ptuning-v2",
    [SP_METHOD_PROMPT_PREFIX] = "prompt+prefix",
};

const char *sp_method_name(sp_method m) {
    return METHOD_NAMES[m];
}

int sp_method_parse(const char *name, sp_method *out) {
    for (int k = 0; k <= SP_METHOD_PROMPT_PREFIX; k++)
        if (strcmp(name, METHOD_NAMES[k]) == 0) return *out = (sp_method)k, 0;
    return -1;
}

int sp_method_has_prompt(sp_method m) {
    return m == SP_METHOD_PROMPT || m == SP_METHOD_PROMPT_PREFIX;
}

int sp_method_has_prefix(sp_method m) {
    return m != SP_METHOD_PROMPT;
}

/* ---- layout ---- */

static void add_segment(sp__params *p, const char *name, const char *optim, int rank,
                        const int *dims, int rows, int cols) {
    sp__segment *s = &p->seg[p->n_seg++];
    s->name = name, s->optim = optim, s->rank = rank;
    s->n = 1;
    for (int i = 0; i < 4; i++) s->dims[i] = i < rank ? dims[i] : 1;
    for (int i = 0; i < rank; i++) s->n *= (size_t)dims[i];
    s->rows = rows, s->cols = cols;
    s->offset = p->n;
    p->n += s->n;
}

/* The encoder (PEFT's PrefixEncoder with prefix_projection): embedding [Pk, t] ->
 * Linear(t, h) -> tanh -> Linear(h, L 2 t), t = kv_dim; weights stored as torch's [out, in]. */
static void add_encoder(sp__params *p) {
    int P = p->n_prefix, t = p->kv_dim, h = p->hidden, o = p->n_layer * 2 * t;
    add_segment(p, "prefix_encoder/embedding", "prefix_encoder.embedding.", 2, (int[]){P, t}, P, t);
    add_segment(p, "prefix_encoder/w1", "prefix_encoder.w1.", 2, (int[]){h, t}, h, t);
    add_segment(p, "prefix_encoder/b1", "prefix_encoder.b1.", 1, (int[]){h}, 1, h);
    add_segment(p, "prefix_encoder/w2", "prefix_encoder.w2.", 2, (int[]){o, h}, o, h);
    add_segment(p, "prefix_encoder/b2", "prefix_encoder.b2.", 1, (int[]){o}, 1, o);
}

int sp__params_init(sp__params *p, sp_method m, const sp_model_config *cfg, int n_prompt,
                    int n_prefix, int hidden, double dropout, sp_error *err) {
    memset(p, 0, sizeof *p);
    p->method = m, p->d = sp_config_embed_dim(cfg), p->n_layer = cfg->n_layer;
    p->kv_dim = sp_config_kv_heads(cfg) * sp_config_head_dim(cfg);
    p->n_prompt = sp_method_has_prompt(m) ? n_prompt : 0;
    p->n_prefix = sp_method_has_prefix(m) ? n_prefix : 0;
    p->hidden = m == SP_METHOD_PREFIX ? hidden : 0;
    p->dropout = m == SP_METHOD_PTUNING_V2 ? dropout : 0.0;
    if (sp_method_has_prompt(m) && n_prompt < 1)
        return sp_fail(err, "method %s needs soft-prompt slots in the template", sp_method_name(m));
    if (sp_method_has_prefix(m) && n_prefix < 1)
        return sp_fail(err, "method %s needs a prefix length >= 1", sp_method_name(m));
    size_t L2 = (size_t)p->n_layer * 2;
    p->n_prefix_values = L2 * (size_t)p->n_prefix * (size_t)p->kv_dim;
    if (p->n_prompt) add_segment(p, "prompt", "", 2, (int[]){p->n_prompt, p->d}, p->n_prompt, p->d);
    if (p->n_prefix && p->hidden)
        add_encoder(p);
    else if (p->n_prefix) /* Adafactor's rows: one per (layer, key/value, position) */
        add_segment(p, "prefix", "prefix.", 4, (int[]){p->n_layer, 2, p->n_prefix, p->kv_dim},
                    (int)L2 * p->n_prefix, p->kv_dim);
    p->n_in = (size_t)p->n_prompt * p->d + p->n_prefix_values;
    p->mapped = p->hidden > 0 || p->dropout > 0;
    p->theta = calloc(p->n, sizeof(float));
    p->grad = calloc(p->n, sizeof(float));
    p->in_grad = p->mapped ? calloc(p->n_in, sizeof(float)) : p->grad;
    int ok = p->theta && p->grad && p->in_grad;
    if (p->hidden) {
        size_t o = L2 * p->kv_dim, P = (size_t)p->n_prefix;
        p->enc_prefix = calloc(p->n_prefix_values, sizeof(float));
        p->enc_out = calloc(P * o, sizeof(float));
        p->enc_gout = calloc(P * o, sizeof(float));
        p->enc_act = calloc(P * (size_t)p->hidden, sizeof(float));
        p->enc_gact = calloc(P * (size_t)p->hidden, sizeof(float));
        ok = ok && p->enc_prefix && p->enc_out && p->enc_gout && p->enc_act && p->enc_gact;
    }
    if (p->dropout > 0) {
        p->mask = calloc(p->n_prefix_values, sizeof(float));
        p->dropped = calloc(p->n_prefix_values, sizeof(float));
        ok = ok && p->mask && p->dropped;
    }
    if (!ok) {
        sp__params_free(p);
        return sp_fail(err, "out of memory for %zu trainable values", p->n);
    }
    const sp__segment *pre = sp__params_find(p, "prefix");
    p->prefix = p->hidden ? p->enc_prefix : pre ? p->theta + pre->offset : NULL;
    return 0;
}

void sp__params_free(sp__params *p) {
    if (p->in_grad != p->grad) free(p->in_grad);
    free(p->theta), free(p->grad), free(p->enc_prefix), free(p->enc_out), free(p->enc_gout);
    free(p->enc_act), free(p->enc_gact), free(p->mask), free(p->dropped);
    memset(p, 0, sizeof *p);
}

const sp__segment *sp__params_find(const sp__params *p, const char *name) {
    for (int i = 0; i < p->n_seg; i++)
        if (strcmp(p->seg[i].name, name) == 0) return &p->seg[i];
    return NULL;
}

float *sp__params_prompt(const sp__params *p) {
    const sp__segment *s = sp__params_find(p, "prompt");
    return s ? p->theta + s->offset : NULL;
}

/* ---- PEFT's order ---- */

/* PEFT views prompt_embeddings [P, L 2 t] as [P, 2L, t] and takes key/value j = 2l + s. */
void sp__prefix_to_peft(const float *prefix, int L, int P, int kv, float *peft) {
    for (int ls = 0; ls < 2 * L; ls++)
        for (int r = 0; r < P; r++)
            memcpy(peft + ((size_t)r * 2 * L + ls) * kv, prefix + ((size_t)ls * P + r) * kv,
                   (size_t)kv * sizeof *peft);
}

void sp__prefix_from_peft(const float *peft, int L, int P, int kv, float *prefix) {
    for (int ls = 0; ls < 2 * L; ls++)
        for (int r = 0; r < P; r++)
            memcpy(prefix + ((size_t)ls * P + r) * kv, peft + ((size_t)r * 2 * L + ls) * kv,
                   (size_t)kv * sizeof *prefix);
}

/* ---- the encoder ---- */

static float *seg_data(const sp__params *p, float *base, const char *name) {
    return base + sp__params_find(p, name)->offset;
}

void sp__prefix_encoder_forward(sp__params *p, float *out) {
    int P = p->n_prefix, t = p->kv_dim, h = p->hidden, o = p->n_layer * 2 * t;
    const float *E = seg_data(p, p->theta, "prefix_encoder/embedding");
    const float *w1 = seg_data(p, p->theta, "prefix_encoder/w1");
    const float *b1 = seg_data(p, p->theta, "prefix_encoder/b1");
    const float *w2 = seg_data(p, p->theta, "prefix_encoder/w2");
    const float *b2 = seg_data(p, p->theta, "prefix_encoder/b2");
    float *a = p->enc_act, *y = p->enc_out;
    for (int r = 0; r < P; r++) memcpy(a + (size_t)r * h, b1, (size_t)h * sizeof *a);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, P, h, t, 1.0f, E, t, w1, t, 1.0f, a, h);
    for (size_t i = 0; i < (size_t)P * h; i++) a[i] = tanhf(a[i]);
    for (int r = 0; r < P; r++) memcpy(y + (size_t)r * o, b2, (size_t)o * sizeof *y);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, P, o, h, 1.0f, a, h, w2, h, 1.0f, y, o);
    sp__prefix_from_peft(y, p->n_layer, P, t, out);
}

/* Gradients are written (not added) into p->grad's encoder segments. */
void sp__prefix_encoder_backward(sp__params *p, const float *g_prefix) {
    int P = p->n_prefix, t = p->kv_dim, h = p->hidden, o = p->n_layer * 2 * t;
    const float *E = seg_data(p, p->theta, "prefix_encoder/embedding");
    const float *w1 = seg_data(p, p->theta, "prefix_encoder/w1");
    const float *w2 = seg_data(p, p->theta, "prefix_encoder/w2");
    float *gE = seg_data(p, p->grad, "prefix_encoder/embedding");
    float *gw1 = seg_data(p, p->grad, "prefix_encoder/w1");
    float *gb1 = seg_data(p, p->grad, "prefix_encoder/b1");
    float *gw2 = seg_data(p, p->grad, "prefix_encoder/w2");
    float *gb2 = seg_data(p, p->grad, "prefix_encoder/b2");
    float *gy = p->enc_gout, *ga = p->enc_gact;
    const float *a = p->enc_act;
    sp__prefix_to_peft(g_prefix, p->n_layer, P, t, gy);
    /* out = a w2^T + b2: dw2 = gy^T a, db2 = sum of gy's rows, da = gy w2 */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, o, h, P, 1.0f, gy, o, a, h, 0.0f, gw2, h);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, P, h, o, 1.0f, gy, o, w2, h, 0.0f, ga,
                h);
    for (int j = 0; j < o; j++) {
        double s = 0;
        for (int r = 0; r < P; r++) s += gy[(size_t)r * o + j];
        gb2[j] = (float)s;
    }
    /* a = tanh(z): dz = da (1 - a^2) */
    for (size_t i = 0; i < (size_t)P * h; i++) ga[i] *= 1.0f - a[i] * a[i];
    /* z = E w1^T + b1: dw1 = dz^T E, db1 = sum of dz's rows, dE = dz w1 */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, h, t, P, 1.0f, ga, h, E, t, 0.0f, gw1, t);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, P, t, h, 1.0f, ga, h, w1, t, 0.0f, gE,
                t);
    for (int j = 0; j < h; j++) {
        double s = 0;
        for (int r = 0; r < P; r++) s += ga[(size_t)r * h + j];
        gb1[j] = (float)s;
    }
}

/* ---- a step ---- */

/* The prefix before dropout: theta's segment or the encoder's output. */
static const float *clean_prefix(const sp__params *p) {
    return p->hidden ? p->enc_prefix : p->theta + sp__params_find(p, "prefix")->offset;
}

void sp__params_forward(sp__params *p, int train, sp_rng *rng) {
    if (!p->n_prefix) return;
    if (p->hidden) sp__prefix_encoder_forward(p, p->enc_prefix);
    const float *clean = clean_prefix(p);
    p->prefix = (float *)clean;
    if (!(train && p->dropout > 0)) return;
    float keep = (float)(1.0 / (1.0 - p->dropout));
    for (size_t i = 0; i < p->n_prefix_values; i++) {
        p->mask[i] = sp_rng_uniform(rng) < p->dropout ? 0.0f : keep;
        p->dropped[i] = clean[i] * p->mask[i];
    }
    p->prefix = p->dropped;
}

void sp__params_backward(sp__params *p) {
    if (!p->mapped) return;
    size_t np = (size_t)p->n_prompt * p->d;
    float *g_prefix = p->in_grad + np;
    memcpy(p->grad, p->in_grad, np * sizeof(float)); /* the prompt segment comes first */
    if (p->dropout > 0 && p->prefix == p->dropped)
        for (size_t i = 0; i < p->n_prefix_values; i++) g_prefix[i] *= p->mask[i];
    if (p->hidden)
        sp__prefix_encoder_backward(p, g_prefix);
    else
        memcpy(p->grad + np, g_prefix, p->n_prefix_values * sizeof(float));
}

void sp__params_pass(const sp__params *p, sp_pass *pass, int with_grad) {
    memset(pass, 0, sizeof *pass);
    pass->prompt = sp__params_prompt(p);
    pass->n_prompt = p->n_prompt;
    pass->kv_prefix = p->n_prefix ? p->prefix : NULL;
    pass->n_kv_prefix = p->n_prefix;
    if (!with_grad) return;
    pass->grad = p->n_prompt ? p->in_grad : NULL;
    pass->kv_prefix_grad = p->n_prefix ? p->in_grad + (size_t)p->n_prompt * p->d : NULL;
}
