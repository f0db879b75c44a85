/* HDF5 checkpoints (checkpoint.h): sp_checkpoint_read, sp_prompt_read_h5 (--init FILE.h5) and
 * sp_checkpoint_describe (`softprompt info`) on a valid checkpoint written by the library and
 * edited by the input (fuzz_h5mut.h). */
#include <math.h>

#include "fuzz_h5mut.h"
#include "softprompt/checkpoint.h"

static h5m_base base;

static void make_base(const char *path) {
    static float prompt[3 * 4], m[3 * 4], vr[3], vc[4];
    for (int i = 0; i < 12; i++) prompt[i] = 0.25f * (float)i, m[i] = -0.5f * (float)i;
    sp_checkpoint c = {0};
    c.n_prompt = 3, c.d = 4, c.prompt = prompt;
    c.step = 10, c.epoch = 1, c.epoch_position = 2, c.tokens_seen = 300;
    c.rng[0] = 1, c.rng[1] = 2, c.rng[2] = 3, c.rng[3] = 4;
    c.n_optim = 3;
    snprintf(c.optim[0].name, sizeof c.optim[0].name, "m");
    c.optim[0].data = m, c.optim[0].n = 12;
    snprintf(c.optim[1].name, sizeof c.optim[1].name, "vr");
    c.optim[1].data = vr, c.optim[1].n = 3;
    snprintf(c.optim[2].name, sizeof c.optim[2].name, "vc");
    c.optim[2].data = vc, c.optim[2].n = 4;
    c.optim_step = 10;
    c.config_json = "{\"steps\": 100}";
    c.model_fingerprint = "0123456789abcdef";
    c.dataset_fingerprint = "fedcba9876543210";
    c.metric_name = "valid_accuracy";
    c.metric = 0.5, c.best_metric = 0.75, c.best_step = 5;
    sp_error err;
    if (sp_checkpoint_write(path, &c, &err) != 0)
        fz_die("cannot write the base checkpoint", err.msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!base.bytes) {
        const char *p = fz_path(0, "base-ckpt.h5");
        make_base(p);
        h5m_base_load(&base, p);
    }
    const char *path = fz_path(0, "checkpoint.h5");
    h5m_apply(&base, path, data, size);
    sp_error err;
    sp_checkpoint c;
    if (sp_checkpoint_read(path, &c, &err) == 0) sp_checkpoint_free(&c);
    float *prompt = NULL;
    int n_prompt, d;
    if (sp_prompt_read_h5(path, &prompt, &n_prompt, &d, &err) == 0) {
        for (int i = 0; i < n_prompt * d; i++)
            if (!isfinite(prompt[i])) abort();
        free(prompt);
    }
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    if (!out) fz_die("open_memstream failed", NULL);
    sp_checkpoint_describe(out, path, &err);
    fclose(out);
    free(text);
    return 0;
}
