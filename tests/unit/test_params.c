/* The trainable parameter vector of each method (src/train/params.c): its segments, PEFT's
 * prefix order, and the gradient through the reparametrization MLP (PEFT's PrefixEncoder)
 * against finite differences of the engine's loss, on a tiny random GPT-2 and a Llama with
 * grouped-query attention. (Against transformers + PEFT in float64: test_reference.) */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "softprompt/engine.h"
#include "train/params.h"

/* Segments: a method is its list, in this order, with the prompt's optimizer names kept. */
START_TEST(test_segments_of_each_method) {
    sp_model m;
    char *dir = tu_tiny_gpt2("model", 1);
    tu_model_load_ok(&m, dir);
    sp_error err;
    sp__params p;
    ck_assert(sp__params_init(&p, SP_METHOD_PROMPT, &m.cfg, 5, 7, 0, 0, &err) == 0);
    ck_assert(p.n_seg == 1 && strcmp(p.seg[0].name, "prompt") == 0 && p.seg[0].optim[0] == 0);
    ck_assert(p.n == 5 * 16 && p.in_grad == p.grad && !p.mapped && p.n_prefix == 0);
    sp__params_free(&p);
    ck_assert(sp__params_init(&p, SP_METHOD_PTUNING_V2, &m.cfg, 5, 7, 0, 0.1, &err) == 0);
    ck_assert(p.n_seg == 1 && strcmp(p.seg[0].name, "prefix") == 0 && p.n_prompt == 0);
    ck_assert(p.n == 2 * 2 * 7 * 16 && p.mapped && p.in_grad != p.grad);
    sp__params_free(&p);
    ck_assert(sp__params_init(&p, SP_METHOD_PREFIX, &m.cfg, 5, 7, 3, 0, &err) == 0);
    ck_assert(p.n_seg == 5 && p.hidden == 3 && p.n == 7 * 16 + 3 * 16 + 3 + 64 * 3 + 64);
    ck_assert(strcmp(p.seg[3].name, "prefix_encoder/w2") == 0 && p.seg[3].rows == 64);
    sp__params_free(&p);
    ck_assert(sp__params_init(&p, SP_METHOD_PROMPT_PREFIX, &m.cfg, 5, 7, 0, 0, &err) == 0);
    ck_assert(p.n_seg == 2 && p.seg[1].offset == 5 * 16 && p.n_in == p.n);
    sp__params_free(&p);
    ck_assert(sp__params_init(&p, SP_METHOD_PREFIX, &m.cfg, 0, 0, 0, 0, &err) != 0);
    tu_assert_has(err.msg, "prefix length");
    sp_model_free(&m);
    free(dir);
}
END_TEST

/* PEFT's prompt_embeddings [P, L 2 kv] column j = 2l + s holds layer l's keys (s 0) or values. */
START_TEST(test_peft_order) {
    enum { L = 3, P = 4, KV = 5 };
    float ours[L * 2 * P * KV], peft[L * 2 * P * KV], back[L * 2 * P * KV];
    for (int i = 0; i < L * 2 * P * KV; i++) ours[i] = (float)i;
    sp__prefix_to_peft(ours, L, P, KV, peft);
    for (int l = 0; l < L; l++)
        for (int s = 0; s < 2; s++)
            for (int r = 0; r < P; r++)
                for (int c = 0; c < KV; c++)
                    ck_assert(peft[(r * 2 * L + 2 * l + s) * KV + c] ==
                              ours[((l * 2 + s) * P + r) * KV + c]);
    sp__prefix_from_peft(peft, L, P, KV, back);
    ck_assert(memcmp(back, ours, sizeof ours) == 0);
}
END_TEST

static double loss_of(sp_worker *w, const sp_batch *b, sp__params *p) {
    sp__params_forward(p, 0, NULL);
    sp_pass pass;
    sp__params_pass(p, &pass, 0);
    sp_error err;
    double loss;
    ck_assert_msg(sp_engine_run(w, b, &pass, &loss, &err) == 0, "%s", err.msg);
    return loss;
}

/* The gradient of every encoder tensor (engine's prefix gradient, then sp__params_backward)
 * against Richardson-extrapolated central differences at its largest coordinates. */
static void check_encoder_fd(const char *dir) {
    sp_model m;
    tu_model_load_ok(&m, dir);
    sp_error err;
    sp__params p;
    ck_assert(sp__params_init(&p, SP_METHOD_PREFIX, &m.cfg, 0, 3, 6, 0, &err) == 0);
    sp_rng r;
    sp_rng_seed(&r, 5);
    for (size_t i = 0; i < p.n; i++) p.theta[i] = (float)(0.5 * sp_rng_normal(&r));
    const int32_t tokens[] = {5, 11, 2, 7, 3, 9, 4, 8, 1, 6, 12};
    const int32_t start[] = {0, 6, 11}, pos[] = {2, 5, 10}, ids[] = {3, 17, 30};
    sp_batch b = {2, start, tokens, 3, pos, ids, NULL, NULL};
    sp_worker *w = sp_worker_new(&m);
    sp__params_forward(&p, 0, NULL);
    sp_pass pass;
    sp__params_pass(&p, &pass, 1);
    memset(p.in_grad, 0, p.n_in * sizeof *p.in_grad);
    double loss;
    ck_assert_msg(sp_engine_run(w, &b, &pass, &loss, &err) == 0, "%s", err.msg);
    sp__params_backward(&p);
    for (int s = 0; s < p.n_seg; s++) {
        const sp__segment *seg = &p.seg[s];
        for (int trial = 0; trial < 3; trial++) {
            size_t best = seg->offset;
            for (size_t i = seg->offset; i < seg->offset + seg->n; i++)
                best = fabsf(p.grad[i]) > fabsf(p.grad[best]) ? i : best;
            float x0 = p.theta[best];
            double d[2];
            for (int k = 0; k < 2; k++) {
                double h = k == 0 ? 2e-2 : 1e-2;
                p.theta[best] = x0 + (float)h;
                double plus = loss_of(w, &b, &p);
                p.theta[best] = x0 - (float)h;
                double minus = loss_of(w, &b, &p);
                d[k] = (plus - minus) / (2 * h);
            }
            p.theta[best] = x0;
            double fd = (4 * d[1] - d[0]) / 3;
            ck_assert_msg(fabs(fd - p.grad[best]) <= 5e-3 * fabs(p.grad[best]) + 5e-4,
                          "%s %s[%zu]: analytic %.6g, finite difference %.6g",
                          sp_arch_model_type(m.cfg.arch), seg->name, best - seg->offset,
                          p.grad[best], fd);
            p.grad[best] = 0; /* the next trial takes the next largest */
        }
    }
    sp_worker_free(w);
    sp__params_free(&p);
    sp_model_free(&m);
}

START_TEST(test_encoder_gradient_fd) {
    char *dir = tu_tiny_gpt2("gpt2", 3);
    check_encoder_fd(dir);
    free(dir);
    check_encoder_fd(SP_FIXTURES_DIR "/ref/llama_l2_h4_kv2_d32_bf16"); /* GQA 2:1 */
}
END_TEST

int main(void) {
    const TTest *tests[] = {test_segments_of_each_method, test_peft_order, test_encoder_gradient_fd,
                            NULL};
    return tu_main("params", tests, NULL, NULL);
}
