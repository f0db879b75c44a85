/* Optimizers and schedules (src/train/optim.c) against PyTorch / Hugging Face references.
 *
 * tests/fixtures/optim/<case>.json (written by tests/ref/optim_reference.py, see the README
 * there) holds, for a [3, 5] parameter and 6 fixed gradients, the parameter after every update
 * computed by torch.optim.SGD / torch.optim.AdamW / Hugging Face's Adafactor (transcribed) in
 * float32 and in float64, with softprompt's learning rate of each update.
 *
 * Tolerances (normwise: max_i |ours_i - ref_i| / max_i |ref_i|, at every step):
 *  - TOL_F32 = 1e-6 against torch float32. Both sides store float32 (unit roundoff u = 6e-8);
 *    torch rounds after every tensor operation (about 10 per step for AdamW/Adafactor, with FMA
 *    in its vectorised kernels) while we round once per stored value, so each step may differ by
 *    a few u and the differences add up over 6 steps. The reference's own float32-vs-float64
 *    distance reaches 2.1e-7 (printed by the script). Observed: at most 2.5e-7 (AdamW).
 *  - TOL_F64 = 5e-7 against float64: our only errors are the float32 roundings of the stored
 *    parameter and state (about u each per step). Observed: at most 1.3e-7.
 * The observed values are printed per case. The margin is 4x; a real mistake shows up far
 * beyond it: leaving out eps1, the weight decay, the bias correction's step, or Adafactor's
 * bias-free momentum, or decaying after the update instead of before (adafactor_all_linear,
 * wd 0.1), misses by 2.5x to 10^5x; even a 1e-5 relative error in Adafactor's parameter scale
 * is caught. (AdamW's eps placement is invisible at eps = 1e-8, as in any such test.)
 *
 * Also: schedule values (formulas and HF's LambdaLR), gradient clipping, determinism, restoring
 * from the state arrays, config validation messages and the state arrays per kind. */
#include "testutil.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "softprompt/optim.h"

#define OPTIM_DIR SP_FIXTURES_DIR "/optim"
#define OPTIM_MIN_CASES 18 /* cases optim_reference.py writes: a missing file fails the test */
#define TOL_F32 1e-6
#define TOL_F64 5e-7
#define MAX_STEPS 8

/* ------------------------------------------------------------------------------ fixtures */

typedef struct optim_case {
    char name[128];
    sp_optim_config cfg;
    int rows, cols, steps;
    float *param0;
    float *grads[MAX_STEPS];
    double lr[MAX_STEPS], grad_norm[MAX_STEPS];
    double *f32[MAX_STEPS], *f64[MAX_STEPS];
} optim_case;

static double jnum(json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    ck_assert_msg(v != NULL && json_is_number(v), "missing number %s", key);
    return json_number_value(v);
}

static void read_floats(json_t *arr, float *out, int n) {
    ck_assert_msg(json_is_array(arr) && (int)json_array_size(arr) == n, "bad array");
    for (int i = 0; i < n; i++) {
        double x = json_number_value(json_array_get(arr, (size_t)i));
        out[i] = (float)x;
        ck_assert_msg((double)out[i] == x, "fixture value %.17g is not a float32", x);
    }
}

static void read_doubles(json_t *arr, double *out, int n) {
    ck_assert_msg(json_is_array(arr) && (int)json_array_size(arr) == n, "bad array");
    for (int i = 0; i < n; i++) out[i] = json_number_value(json_array_get(arr, (size_t)i));
}

static void load_case(const char *path, optim_case *c) {
    memset(c, 0, sizeof *c);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    ck_assert_msg(root != NULL, "%s: %s", path, jerr.text);
    snprintf(c->name, sizeof c->name, "%s", json_string_value(json_object_get(root, "name")));
    json_t *jc = json_object_get(root, "config");
    sp_optim_kind kind;
    ck_assert_int_eq(sp_optim_kind_parse(json_string_value(json_object_get(jc, "kind")), &kind), 0);
    sp_optim_config_default(&c->cfg, kind);
    ck_assert_int_eq(
        sp_sched_kind_parse(json_string_value(json_object_get(jc, "schedule")), &c->cfg.schedule),
        0);
    c->cfg.lr = jnum(jc, "lr");
    c->cfg.weight_decay = jnum(jc, "weight_decay");
    c->cfg.beta1 = jnum(jc, "beta1");
    c->cfg.beta2 = jnum(jc, "beta2");
    c->cfg.eps = jnum(jc, "eps");
    c->cfg.decay_rate = jnum(jc, "decay_rate");
    c->cfg.eps1 = jnum(jc, "eps1");
    c->cfg.eps2 = jnum(jc, "eps2");
    c->cfg.clip_threshold = jnum(jc, "clip_threshold");
    c->cfg.scale_parameter = (int)jnum(jc, "scale_parameter");
    c->cfg.clip_norm = jnum(jc, "clip_norm");
    c->cfg.warmup_steps = (int64_t)jnum(jc, "warmup_steps");
    c->cfg.total_steps = (int64_t)jnum(jc, "total_steps");
    c->rows = (int)jnum(root, "rows");
    c->cols = (int)jnum(root, "cols");
    int n = c->rows * c->cols;
    json_t *grads = json_object_get(root, "grads");
    c->steps = (int)json_array_size(grads);
    ck_assert(c->steps >= 1 && c->steps <= MAX_STEPS);
    c->param0 = malloc((size_t)n * sizeof(float));
    read_floats(json_object_get(root, "param0"), c->param0, n);
    read_doubles(json_object_get(root, "lr"), c->lr, c->steps);
    read_doubles(json_object_get(root, "grad_norm"), c->grad_norm, c->steps);
    for (int s = 0; s < c->steps; s++) {
        c->grads[s] = malloc((size_t)n * sizeof(float));
        c->f32[s] = malloc((size_t)n * sizeof(double));
        c->f64[s] = malloc((size_t)n * sizeof(double));
        read_floats(json_array_get(grads, (size_t)s), c->grads[s], n);
        read_doubles(json_array_get(json_object_get(root, "expected_f32"), (size_t)s), c->f32[s],
                     n);
        read_doubles(json_array_get(json_object_get(root, "expected_f64"), (size_t)s), c->f64[s],
                     n);
    }
    json_decref(root);
}

static void free_case(optim_case *c) {
    free(c->param0);
    for (int s = 0; s < c->steps; s++) free(c->grads[s]), free(c->f32[s]), free(c->f64[s]);
}

/* The case files: every *.json but schedules.json (for tu_list_dir). */
static int is_case_file(const char *dir, const char *name) {
    (void)dir;
    size_t len = strlen(name);
    return len >= 6 && strcmp(name + len - 5, ".json") == 0 && strcmp(name, "schedules.json") != 0;
}

/* max_i |a_i - b_i| / max_i |b_i| */
static double normwise_err(const float *a, const double *b, int n) {
    double num = 0.0, den = 0.0;
    for (int i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > num) num = d;
        if (fabs(b[i]) > den) den = fabs(b[i]);
    }
    return num / den;
}

static double norm2(const float *x, int n) {
    double s = 0.0;
    for (int i = 0; i < n; i++) s += (double)x[i] * x[i];
    return sqrt(s);
}

/* ------------------------------------------------------------------------------ references */

START_TEST(test_reference_trajectories) {
    int n_cases = 0;
    char **names = tu_list_dir(OPTIM_DIR, is_case_file, &n_cases);
    ck_assert_msg(n_cases >= OPTIM_MIN_CASES, "only %d optimizer fixtures in %s", n_cases,
                  OPTIM_DIR);
    double worst32 = 0.0, worst64 = 0.0;
    for (int k = 0; k < n_cases; k++) {
        optim_case c;
        char *path = tu_path(OPTIM_DIR, names[k]);
        load_case(path, &c);
        free(path);
        int n = c.rows * c.cols;
        sp_optim o;
        sp_error err = {0};
        ck_assert_msg(sp_optim_init(&o, &c.cfg, c.rows, c.cols, &err) == 0, "%s: %s", c.name,
                      err.msg);
        float *p = malloc((size_t)n * sizeof(float)), *g = malloc((size_t)n * sizeof(float));
        memcpy(p, c.param0, (size_t)n * sizeof(float));
        double e32 = 0.0, e64 = 0.0;
        for (int s = 0; s < c.steps; s++) {
            double lr = sp_optim_lr(&c.cfg, s + 1);
            ck_assert_msg(fabs(lr - c.lr[s]) <= 1e-15 * c.cfg.lr, "%s step %d: lr %.17g vs %.17g",
                          c.name, s + 1, lr, c.lr[s]);
            memcpy(g, c.grads[s], (size_t)n * sizeof(float));
            double gn = -1.0;
            sp_optim_step(&o, p, g, &gn);
            ck_assert_int_eq(o.step, s + 1);
            ck_assert_msg(fabs(gn - c.grad_norm[s]) <= 1e-12 * c.grad_norm[s],
                          "%s step %d: grad norm %.17g vs %.17g", c.name, s + 1, gn,
                          c.grad_norm[s]);
            if (c.cfg.clip_norm > 0.0 && gn > c.cfg.clip_norm) {
                double after = norm2(g, n);
                ck_assert_msg(fabs(after - c.cfg.clip_norm) <= 1e-6 * c.cfg.clip_norm,
                              "%s step %d: clipped norm %.9g", c.name, s + 1, after);
            } else {
                ck_assert_msg(memcmp(g, c.grads[s], (size_t)n * sizeof(float)) == 0,
                              "%s step %d: gradient modified without clipping", c.name, s + 1);
            }
            double a = normwise_err(p, c.f32[s], n), b = normwise_err(p, c.f64[s], n);
            ck_assert_msg(a <= TOL_F32, "%s step %d: error vs torch float32 %.3g > %g", c.name,
                          s + 1, a, TOL_F32);
            ck_assert_msg(b <= TOL_F64, "%s step %d: error vs float64 %.3g > %g", c.name, s + 1, b,
                          TOL_F64);
            if (a > e32) e32 = a;
            if (b > e64) e64 = b;
        }
        printf("optim %-28s max error vs float32 %.2e, vs float64 %.2e\n", c.name, e32, e64);
        if (e32 > worst32) worst32 = e32;
        if (e64 > worst64) worst64 = e64;
        free(p);
        free(g);
        sp_optim_free(&o);
        free_case(&c);
    }
    printf("optim all %d cases: max error vs float32 %.2e, vs float64 %.2e\n", n_cases, worst32,
           worst64);
    tu_free_list(names, n_cases);
}
END_TEST

/* ------------------------------------------------------------------------------ schedules */

static void sched_cfg(sp_optim_config *c, sp_sched_kind kind, double lr, int64_t w, int64_t t) {
    sp_optim_config_default(c, SP_OPTIM_ADAFACTOR);
    c->lr = lr;
    c->schedule = kind;
    c->warmup_steps = w;
    c->total_steps = t;
}

START_TEST(test_schedule_fixture) {
    json_error_t jerr;
    json_t *root = json_load_file(OPTIM_DIR "/schedules.json", 0, &jerr);
    ck_assert_msg(root != NULL, "schedules.json: %s", jerr.text);
    json_t *list = json_object_get(root, "schedules");
    ck_assert(json_array_size(list) >= 8);
    for (size_t k = 0; k < json_array_size(list); k++) {
        json_t *e = json_array_get(list, k);
        sp_sched_kind kind;
        ck_assert_int_eq(
            sp_sched_kind_parse(json_string_value(json_object_get(e, "schedule")), &kind), 0);
        sp_optim_config c;
        int64_t w = (int64_t)jnum(e, "warmup_steps"), t = (int64_t)jnum(e, "total_steps");
        sched_cfg(&c, kind, jnum(e, "lr"), w, t);
        sp_optim o;
        sp_error err = {0};
        ck_assert_msg(sp_optim_init(&o, &c, 2, 3, &err) == 0, "%s", err.msg);
        sp_optim_free(&o);
        json_t *steps = json_object_get(e, "steps"), *exp = json_object_get(e, "expected");
        json_t *hf = json_object_get(e, "hf_lambdalr");
        for (size_t i = 0; i < json_array_size(steps); i++) {
            int64_t s = (int64_t)json_number_value(json_array_get(steps, i));
            double ours = sp_optim_lr(&c, s);
            double want = json_number_value(json_array_get(exp, i));
            double h = json_number_value(json_array_get(hf, i));
            ck_assert_msg(fabs(ours - want) <= 1e-15 * c.lr,
                          "%s W=%lld T=%lld step %lld: %.17g "
                          "vs %.17g",
                          sp_sched_kind_name(kind), (long long)w, (long long)t, (long long)s, ours,
                          want);
            /* Against Hugging Face's LambdaLR: warm-up shifted by one update, identical after
             * (until total_steps, where our cosine stays at 0). */
            if (s <= w) {
                ck_assert(fabs(h - c.lr * (double)(s - 1) / (double)w) <= 1e-15 * c.lr);
                ck_assert(fabs(ours - c.lr * (double)s / (double)w) <= 1e-15 * c.lr);
            } else if (kind == SP_SCHED_CONSTANT || s <= t + 1) {
                ck_assert_msg(fabs(ours - h) <= 1e-15 * c.lr, "step %lld: %.17g vs HF %.17g",
                              (long long)s, ours, h);
            } else {
                ck_assert(ours == 0.0);
            }
        }
    }
    json_decref(root);
}
END_TEST

START_TEST(test_schedule_formulas) {
    sp_optim_config c;
    const double lr = 0.3;
    /* constant, no warm-up */
    sched_cfg(&c, SP_SCHED_CONSTANT, lr, 0, 0);
    for (int s = 1; s < 100; s += 7) ck_assert(sp_optim_lr(&c, s) == lr);
    ck_assert(sp_optim_lr(&c, 0) == lr); /* below 1: treated as 1 */
    /* constant with warm-up 4: the first update uses lr/4, update 4 the full lr */
    sched_cfg(&c, SP_SCHED_CONSTANT, lr, 4, 0);
    ck_assert(sp_optim_lr(&c, 1) == lr * 0.25);
    ck_assert(sp_optim_lr(&c, 2) == lr * 0.5);
    ck_assert(sp_optim_lr(&c, 4) == lr);
    ck_assert(sp_optim_lr(&c, 5) == lr);
    ck_assert(sp_optim_lr(&c, -3) == lr * 0.25);
    /* linear, W = 0, T = 10: update s uses (T - (s-1)) / T */
    sched_cfg(&c, SP_SCHED_LINEAR, lr, 0, 10);
    ck_assert(sp_optim_lr(&c, 1) == lr);
    ck_assert(fabs(sp_optim_lr(&c, 10) - lr * 0.1) < 1e-16);
    ck_assert(sp_optim_lr(&c, 11) == 0.0);
    ck_assert(sp_optim_lr(&c, 1000) == 0.0);
    /* linear, W = 2, T = 6: 1/2, 1, then HF's f(k) = (6 - k)/4 at k = s - 1 */
    sched_cfg(&c, SP_SCHED_LINEAR, lr, 2, 6);
    ck_assert(sp_optim_lr(&c, 1) == lr * 0.5);
    ck_assert(sp_optim_lr(&c, 2) == lr);
    ck_assert(sp_optim_lr(&c, 3) == lr);
    ck_assert(sp_optim_lr(&c, 4) == lr * 0.75);
    ck_assert(sp_optim_lr(&c, 6) == lr * 0.25); /* the last update of a 6-step run: lr > 0 */
    ck_assert(sp_optim_lr(&c, 7) == 0.0);
    /* cosine, W = 2, T = 8: 0.5 (1 + cos(pi (s - 1 - 2) / 6)) after the warm-up */
    sched_cfg(&c, SP_SCHED_COSINE, lr, 2, 8);
    ck_assert(sp_optim_lr(&c, 1) == lr * 0.5);
    ck_assert(sp_optim_lr(&c, 2) == lr);
    ck_assert(sp_optim_lr(&c, 3) == lr);
    for (int s = 3; s <= 9; s++) {
        double want = lr * 0.5 * (1.0 + cos(M_PI * (double)(s - 3) / 6.0));
        ck_assert_msg(fabs(sp_optim_lr(&c, s) - want) <= 1e-16, "cosine step %d", s);
    }
    ck_assert(fabs(sp_optim_lr(&c, 6) - lr * 0.5) < 1e-16); /* halfway */
    ck_assert(sp_optim_lr(&c, 8) > 0.0);
    ck_assert(sp_optim_lr(&c, 9) < 1e-17);
    for (int s = 10; s < 40; s++) ck_assert(sp_optim_lr(&c, s) < 1e-17); /* no rise after T */
    /* warm-up equal to total: all warm-up, then 0 */
    sched_cfg(&c, SP_SCHED_LINEAR, lr, 5, 5);
    ck_assert(sp_optim_lr(&c, 5) == lr);
    ck_assert(sp_optim_lr(&c, 6) == 0.0);
}
END_TEST

/* sp_optim_step applies the lr of the incremented step: with SGD (no momentum, no decay) and a
 * unit gradient, update s moves the parameter by exactly sp_optim_lr(s). */
START_TEST(test_step_uses_lr_of_incremented_step) {
    sp_optim_config c;
    sp_optim_config_default(&c, SP_OPTIM_SGD);
    c.lr = 0.5;
    c.schedule = SP_SCHED_LINEAR;
    c.warmup_steps = 4;
    c.total_steps = 8;
    sp_optim o;
    sp_error err;
    ck_assert_int_eq(sp_optim_init(&o, &c, 1, 1, &err), 0);
    for (int s = 1; s <= 9; s++) {
        float p = 0.0f, g = 1.0f;
        sp_optim_step(&o, &p, &g, NULL);
        ck_assert_msg((double)p == (double)(float)-sp_optim_lr(&c, s), "step %d: %g", s, p);
        if (s == 1) ck_assert(p == -0.125f); /* first warm-up update: lr / W, not 0 */
    }
    sp_optim_free(&o);
}
END_TEST

/* ------------------------------------------------------------------------------ clipping */

static void fill(float *x, int n, unsigned seed, double scale) {
    unsigned s = seed * 2654435761u + 1u;
    for (int i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(scale * (((double)(s >> 8) / 16777216.0) * 2.0 - 1.0));
    }
}

START_TEST(test_clipping) {
    const int rows = 7, cols = 33, n = rows * cols;
    float *p = calloc((size_t)n, sizeof(float)), *g = malloc((size_t)n * sizeof(float));
    float *g0 = malloc((size_t)n * sizeof(float));
    sp_optim_kind kinds[3] = {SP_OPTIM_SGD, SP_OPTIM_ADAMW, SP_OPTIM_ADAFACTOR};
    for (int k = 0; k < 3; k++) {
        sp_optim_config c;
        sp_optim_config_default(&c, kinds[k]);
        c.clip_norm = 2.5;
        sp_optim o;
        sp_error err;
        ck_assert_int_eq(sp_optim_init(&o, &c, rows, cols, &err), 0);
        /* large gradient: clipped to norm 2.5 (times norm / (norm + 1e-6)) */
        fill(g0, n, 3, 10.0);
        memcpy(g, g0, (size_t)n * sizeof(float));
        double before = norm2(g0, n), reported = 0.0;
        sp_optim_step(&o, p, g, &reported);
        ck_assert(reported == before);
        double want = 2.5 * before / (before + 1e-6);
        ck_assert_msg(fabs(norm2(g, n) - want) <= 1e-6 * want, "clipped norm %.9g", norm2(g, n));
        for (int i = 0; i < n; i++) /* same direction */
            ck_assert(fabs(g[i] - g0[i] * (2.5 / (before + 1e-6))) <= 1e-6 * fabs(g0[i]) + 1e-30);
        /* small gradient: untouched */
        fill(g0, n, 4, 0.01);
        memcpy(g, g0, (size_t)n * sizeof(float));
        sp_optim_step(&o, p, g, &reported);
        ck_assert(reported == norm2(g0, n) && reported < 2.5);
        ck_assert(memcmp(g, g0, (size_t)n * sizeof(float)) == 0);
        sp_optim_free(&o);
        /* clip_norm 0: never clipped, norm still reported */
        c.clip_norm = 0.0;
        ck_assert_int_eq(sp_optim_init(&o, &c, rows, cols, &err), 0);
        fill(g0, n, 5, 100.0);
        memcpy(g, g0, (size_t)n * sizeof(float));
        sp_optim_step(&o, p, g, &reported);
        ck_assert(reported == norm2(g0, n) && reported > 100.0);
        ck_assert(memcmp(g, g0, (size_t)n * sizeof(float)) == 0);
        sp_optim_step(&o, p, g, NULL); /* grad_norm may be NULL */
        sp_optim_free(&o);
    }
    free(p);
    free(g);
    free(g0);
}
END_TEST

/* ------------------------------------------------------------------------------ determinism */

/* Runs `steps` updates of kind k (variant 1: momentum, parameter scaling, weight decay, clipping,
 * warm-up + cosine decay to 0 at `total`) from a fixed start; returns the parameter and (via o)
 * the state. */
static float *run(sp_optim *o, sp_optim_kind k, int variant, int rows, int cols, int steps,
                  int total) {
    sp_optim_config c;
    sp_optim_config_default(&c, k);
    if (variant) {
        c.beta1 = 0.9;
        c.scale_parameter = 1;
        c.weight_decay = 0.01;
        c.clip_norm = 5.0;
        c.schedule = SP_SCHED_COSINE;
        c.warmup_steps = 3;
        c.total_steps = total;
    }
    sp_error err;
    ck_assert_int_eq(sp_optim_init(o, &c, rows, cols, &err), 0);
    int n = rows * cols;
    float *p = malloc((size_t)n * sizeof(float)), *g = malloc((size_t)n * sizeof(float));
    fill(p, n, 1, 0.5);
    for (int s = 0; s < steps; s++) {
        fill(g, n, 100u + (unsigned)s, s % 3 == 0 ? 3.0 : 0.3);
        sp_optim_step(o, p, g, NULL);
    }
    free(g);
    return p;
}

START_TEST(test_determinism) {
    const int rows = 20, cols = 77, n = rows * cols;
    sp_optim_kind kinds[3] = {SP_OPTIM_SGD, SP_OPTIM_ADAMW, SP_OPTIM_ADAFACTOR};
    for (int k = 0; k < 3; k++)
        for (int variant = 0; variant < 2; variant++) {
            sp_optim a, b;
            float *pa = run(&a, kinds[k], variant, rows, cols, 25, 25);
            float *pb = run(&b, kinds[k], variant, rows, cols, 25, 25);
            ck_assert(memcmp(pa, pb, (size_t)n * sizeof(float)) == 0);
            for (int i = 0; i < n; i++) ck_assert(isfinite(pa[i]));
            sp_optim_array sa[4], sb[4];
            int na = sp_optim_state(&a, sa), nb = sp_optim_state(&b, sb);
            ck_assert_int_eq(na, nb);
            for (int i = 0; i < na; i++) {
                ck_assert_str_eq(sa[i].name, sb[i].name);
                ck_assert(memcmp(sa[i].data, sb[i].data, sa[i].n * sizeof(float)) == 0);
            }
            free(pa);
            free(pb);
            sp_optim_free(&a);
            sp_optim_free(&b);
        }
}
END_TEST

/* Save the state arrays and step after 10 updates, restore them into a fresh optimizer and
 * continue: bitwise the same as an uninterrupted run (what checkpoints rely on). */
START_TEST(test_restore_from_state) {
    const int rows = 6, cols = 19, n = rows * cols;
    sp_optim_kind kinds[3] = {SP_OPTIM_SGD, SP_OPTIM_ADAMW, SP_OPTIM_ADAFACTOR};
    for (int k = 0; k < 3; k++) {
        sp_optim full;
        float *pf = run(&full, kinds[k], 1, rows, cols, 20, 20);

        sp_optim first, second;
        float *p = run(&first, kinds[k], 1, rows, cols, 10, 20);
        sp_error err;
        ck_assert_int_eq(sp_optim_init(&second, &full.cfg, rows, cols, &err), 0);
        sp_optim_array from[4], to[4];
        int nf = sp_optim_state(&first, from), nt = sp_optim_state(&second, to);
        ck_assert_int_eq(nf, nt);
        for (int i = 0; i < nf; i++) memcpy(to[i].data, from[i].data, from[i].n * sizeof(float));
        second.step = first.step;
        float *g = malloc((size_t)n * sizeof(float));
        for (int s = 10; s < 20; s++) {
            fill(g, n, 100u + (unsigned)s, s % 3 == 0 ? 3.0 : 0.3);
            sp_optim_step(&second, p, g, NULL);
        }
        ck_assert(memcmp(p, pf, (size_t)n * sizeof(float)) == 0);
        free(g);
        free(p);
        free(pf);
        sp_optim_free(&full);
        sp_optim_free(&first);
        sp_optim_free(&second);
    }
}
END_TEST

/* ------------------------------------------------------------------------------ state */

/* Whether the comma-separated list names holds x. */
static int has_name(const char *names, const char *x) {
    size_t n = strlen(x);
    for (const char *p = names; *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && strncmp(p, x, n) == 0) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

static void expect_state(sp_optim_kind kind, double beta1, const char *names, int rows, int cols) {
    sp_optim_config c;
    sp_optim_config_default(&c, kind);
    c.beta1 = beta1;
    sp_optim o;
    sp_error err;
    ck_assert_int_eq(sp_optim_init(&o, &c, rows, cols, &err), 0);
    sp_optim_array a[4];
    int k = sp_optim_state(&o, a);
    char got[64] = "";
    for (int i = 0; i < k; i++) {
        if (i) strcat(got, ",");
        strcat(got, a[i].name);
        size_t want_n = strcmp(a[i].name, "vr") == 0   ? (size_t)rows
                        : strcmp(a[i].name, "vc") == 0 ? (size_t)cols
                                                       : (size_t)rows * cols;
        ck_assert_uint_eq(a[i].n, want_n);
        float *field = strcmp(a[i].name, "m") == 0    ? o.m
                       : strcmp(a[i].name, "v") == 0  ? o.v
                       : strcmp(a[i].name, "vr") == 0 ? o.vr
                                                      : o.vc;
        ck_assert_ptr_eq(a[i].data, field);
        for (size_t j = 0; j < a[i].n; j++) ck_assert(a[i].data[j] == 0.0f); /* zeroed */
    }
    ck_assert_msg(strcmp(got, names) == 0, "%s beta1=%g: state %s, want %s",
                  sp_optim_kind_name(kind), beta1, got, names);
    /* arrays not listed are not allocated */
    ck_assert((o.m != NULL) == has_name(names, "m"));
    ck_assert((o.v != NULL) == has_name(names, "v"));
    ck_assert((o.vr != NULL) == has_name(names, "vr"));
    ck_assert((o.vc != NULL) == has_name(names, "vc"));
    ck_assert(o.step == 0);
    sp_optim_free(&o);
    ck_assert(o.m == NULL && o.v == NULL && o.vr == NULL && o.vc == NULL);
    sp_optim_free(&o); /* twice is harmless */
}

START_TEST(test_state_per_kind) {
    expect_state(SP_OPTIM_SGD, 0.0, "", 4, 9);
    expect_state(SP_OPTIM_SGD, 0.9, "m", 4, 9);
    expect_state(SP_OPTIM_ADAMW, 0.9, "m,v", 4, 9);
    expect_state(SP_OPTIM_ADAMW, 0.0, "m,v", 4, 9);
    expect_state(SP_OPTIM_ADAFACTOR, 0.0, "vr,vc", 4, 9);
    expect_state(SP_OPTIM_ADAFACTOR, 0.9, "m,vr,vc", 4, 9);
    expect_state(SP_OPTIM_ADAFACTOR, 0.0, "vr,vc", 1, 9); /* P = 1 is still factored */
}
END_TEST

/* ------------------------------------------------------------------------------ config */

START_TEST(test_defaults_and_names) {
    sp_optim_config c;
    sp_optim_config_default(&c, SP_OPTIM_ADAFACTOR);
    ck_assert(c.kind == SP_OPTIM_ADAFACTOR && c.lr == 0.3 && c.weight_decay == 1e-5);
    ck_assert(c.beta1 == 0.0 && c.decay_rate == -0.8 && c.eps1 == 1e-30 && c.eps2 == 1e-3);
    ck_assert(c.clip_threshold == 1.0 && c.scale_parameter == 0 && c.clip_norm == 0.0);
    ck_assert(c.schedule == SP_SCHED_CONSTANT && c.warmup_steps == 0 && c.total_steps == 0);
    sp_optim_config_default(&c, SP_OPTIM_ADAMW);
    ck_assert(c.lr == 1e-3 && c.beta1 == 0.9 && c.beta2 == 0.999 && c.eps == 1e-8);
    ck_assert(c.weight_decay == 0.01);
    sp_optim_config_default(&c, SP_OPTIM_SGD);
    ck_assert(c.lr == 0.1 && c.beta1 == 0.0 && c.weight_decay == 0.0);
    /* every default, and every default with the kind changed afterwards, validates */
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
            sp_optim_config_default(&c, (sp_optim_kind)a);
            c.kind = (sp_optim_kind)b;
            sp_optim o;
            sp_error err;
            ck_assert_msg(sp_optim_init(&o, &c, 3, 4, &err) == 0, "%s", err.msg);
            sp_optim_free(&o);
        }
    const char *kn[3] = {"adafactor", "adamw", "sgd"}, *sn[3] = {"constant", "linear", "cosine"};
    for (int i = 0; i < 3; i++) {
        sp_optim_kind k;
        sp_sched_kind s;
        ck_assert_int_eq(sp_optim_kind_parse(kn[i], &k), 0);
        ck_assert_str_eq(sp_optim_kind_name(k), kn[i]);
        ck_assert_int_eq(sp_sched_kind_parse(sn[i], &s), 0);
        ck_assert_str_eq(sp_sched_kind_name(s), sn[i]);
    }
    sp_optim_kind k = SP_OPTIM_SGD;
    sp_sched_kind s = SP_SCHED_LINEAR;
    ck_assert_int_eq(sp_optim_kind_parse("adam", &k), -1);
    ck_assert_int_eq(sp_optim_kind_parse("AdamW", &k), -1);
    ck_assert_int_eq(sp_optim_kind_parse(NULL, &k), -1);
    ck_assert_int_eq(sp_sched_kind_parse("cos", &s), -1);
    ck_assert(k == SP_OPTIM_SGD && s == SP_SCHED_LINEAR); /* untouched on failure */
}
END_TEST

typedef struct bad_case {
    sp_optim_kind kind;
    const char *field; /* set to value */
    double value;
    const char *expect; /* substring of the message */
} bad_case;

static void set_field(sp_optim_config *c, const char *f, double v) {
    if (!strcmp(f, "lr"))
        c->lr = v;
    else if (!strcmp(f, "weight_decay"))
        c->weight_decay = v;
    else if (!strcmp(f, "beta1"))
        c->beta1 = v;
    else if (!strcmp(f, "beta2"))
        c->beta2 = v;
    else if (!strcmp(f, "eps"))
        c->eps = v;
    else if (!strcmp(f, "decay_rate"))
        c->decay_rate = v;
    else if (!strcmp(f, "eps1"))
        c->eps1 = v;
    else if (!strcmp(f, "eps2"))
        c->eps2 = v;
    else if (!strcmp(f, "clip_threshold"))
        c->clip_threshold = v;
    else if (!strcmp(f, "clip_norm"))
        c->clip_norm = v;
    else if (!strcmp(f, "warmup_steps"))
        c->warmup_steps = (int64_t)v;
    else if (!strcmp(f, "total_steps"))
        c->total_steps = (int64_t)v;
    else if (!strcmp(f, "linear_total"))
        c->schedule = SP_SCHED_LINEAR, c->total_steps = (int64_t)v;
    else if (!strcmp(f, "cosine_warmup"))
        c->schedule = SP_SCHED_COSINE, c->total_steps = 3, c->warmup_steps = (int64_t)v;
    else if (!strcmp(f, "kind"))
        c->kind = (sp_optim_kind)(int)v;
    else if (!strcmp(f, "schedule"))
        c->schedule = (sp_sched_kind)(int)v;
    else
        ck_abort_msg("unknown field %s", f);
}

START_TEST(test_validation) {
    const bad_case bad[] = {
        {SP_OPTIM_ADAFACTOR, "lr", 0.0, "lr = 0, must be > 0"},
        {SP_OPTIM_ADAMW, "lr", -1e-3, "lr = -0.001"},
        {SP_OPTIM_SGD, "lr", NAN, "lr = nan"},
        {SP_OPTIM_SGD, "lr", INFINITY, "lr = inf"},
        {SP_OPTIM_ADAMW, "weight_decay", -0.1, "weight_decay = -0.1, must be >= 0"},
        {SP_OPTIM_ADAMW, "beta1", 1.0, "beta1 = 1, must be in [0, 1)"},
        {SP_OPTIM_ADAFACTOR, "beta1", -0.5, "beta1 = -0.5"},
        {SP_OPTIM_SGD, "beta1", 1.5, "beta1 (SGD momentum) = 1.5"},
        {SP_OPTIM_ADAMW, "beta2", 1.0, "beta2 = 1, must be in [0, 1)"},
        {SP_OPTIM_ADAMW, "beta2", NAN, "beta2 = nan"},
        {SP_OPTIM_ADAMW, "eps", 0.0, "eps = 0, must be > 0"},
        {SP_OPTIM_ADAFACTOR, "decay_rate", 0.8, "decay_rate = 0.8, must be <= 0"},
        {SP_OPTIM_ADAFACTOR, "eps1", 0.0, "eps1 = 0, must be > 0"},
        {SP_OPTIM_ADAFACTOR, "eps2", -1e-3, "eps2 = -0.001, must be >= 0"},
        {SP_OPTIM_ADAFACTOR, "clip_threshold", 0.0, "clip_threshold = 0, must be > 0"},
        {SP_OPTIM_SGD, "clip_norm", -1.0, "clip_norm = -1, must be >= 0"},
        {SP_OPTIM_ADAMW, "warmup_steps", -1, "warmup_steps = -1, must be >= 0"},
        {SP_OPTIM_ADAMW, "total_steps", -5, "total_steps = -5, must be >= 0"},
        {SP_OPTIM_ADAMW, "linear_total", 0, "total_steps = 0, must be >= 1 for the linear"},
        {SP_OPTIM_ADAMW, "cosine_warmup", 4,
         "warmup_steps = 4 exceeds total_steps = 3 (cosine schedule)"},
        {SP_OPTIM_ADAMW, "kind", 7, "kind = 7"},
        {SP_OPTIM_ADAMW, "schedule", -1, "schedule = -1"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sp_optim_config c;
        sp_optim_config_default(&c, bad[i].kind);
        set_field(&c, bad[i].field, bad[i].value);
        sp_optim o;
        memset(&o, 0xab, sizeof o);
        sp_error err = {0};
        ck_assert_int_eq(sp_optim_init(&o, &c, 3, 5, &err), -1);
        ck_assert_msg(strstr(err.msg, bad[i].expect) != NULL, "case %zu (%s): message '%s'", i,
                      bad[i].field, err.msg);
        ck_assert_msg(strstr(err.msg, "invalid optimizer configuration") != NULL, "%s", err.msg);
        ck_assert(o.m == NULL && o.v == NULL && o.vr == NULL && o.vc == NULL && o.step == 0);
        sp_optim_free(&o);
    }
    /* fields another kind uses are not checked */
    sp_optim_config c;
    sp_optim_config_default(&c, SP_OPTIM_SGD);
    c.beta2 = 7.0, c.eps = -1.0, c.decay_rate = 3.0, c.eps1 = -1.0, c.clip_threshold = 0.0;
    sp_optim o;
    sp_error err;
    ck_assert_msg(sp_optim_init(&o, &c, 3, 5, &err) == 0, "%s", err.msg);
    sp_optim_free(&o);
    /* constant schedule ignores total_steps; warm-up may exceed it */
    sp_optim_config_default(&c, SP_OPTIM_ADAFACTOR);
    c.warmup_steps = 100;
    ck_assert_int_eq(sp_optim_init(&o, &c, 3, 5, &err), 0);
    sp_optim_free(&o);
    /* warm-up equal to total is allowed */
    c.schedule = SP_SCHED_LINEAR, c.total_steps = 100;
    ck_assert_int_eq(sp_optim_init(&o, &c, 3, 5, &err), 0);
    sp_optim_free(&o);
    /* shape */
    ck_assert_int_eq(sp_optim_init(&o, &c, 0, 5, &err), -1);
    ck_assert_msg(strstr(err.msg, "shape [0, 5]") != NULL, "%s", err.msg);
    ck_assert_int_eq(sp_optim_init(&o, &c, 3, -1, &err), -1);
}
END_TEST

/* Adafactor with a zero gradient (e.g. a soft token absent from the batch): finite, and with
 * no weight decay and no momentum the parameter does not move. */
START_TEST(test_adafactor_zero_gradient) {
    sp_optim_config c;
    sp_optim_config_default(&c, SP_OPTIM_ADAFACTOR);
    c.weight_decay = 0.0;
    sp_optim o;
    sp_error err;
    ck_assert_int_eq(sp_optim_init(&o, &c, 4, 6, &err), 0);
    float p[24], p0[24], g[24];
    fill(p, 24, 9, 0.5);
    memcpy(p0, p, sizeof p);
    for (int s = 0; s < 5; s++) {
        memset(g, 0, sizeof g);
        sp_optim_step(&o, p, g, NULL);
    }
    ck_assert(memcmp(p, p0, sizeof p) == 0);
    for (int i = 0; i < 4; i++) ck_assert(isfinite(o.vr[i]) && o.vr[i] > 0.0f);
    for (int j = 0; j < 6; j++) ck_assert(isfinite(o.vc[j]) && o.vc[j] > 0.0f);
    sp_optim_free(&o);
}
END_TEST

static Suite *optim_suite(void) {
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_reference_trajectories);
    tcase_add_test(tc, test_schedule_fixture);
    tcase_add_test(tc, test_schedule_formulas);
    tcase_add_test(tc, test_step_uses_lr_of_incremented_step);
    tcase_add_test(tc, test_clipping);
    tcase_add_test(tc, test_determinism);
    tcase_add_test(tc, test_restore_from_state);
    tcase_add_test(tc, test_state_per_kind);
    tcase_add_test(tc, test_defaults_and_names);
    tcase_add_test(tc, test_validation);
    tcase_add_test(tc, test_adafactor_zero_gradient);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    return tu_run_suite(optim_suite());
}
