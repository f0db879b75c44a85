/* sp_checkpoint_describe: the human-readable summary of a checkpoint for `softprompt info`. */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "softprompt/checkpoint.h"

static double rms(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return n ? sqrt(s / (double)n) : 0;
}

/* One "  key = value" line per scalar of the configuration, nested objects as dotted names. */
static void describe_json(FILE *out, const char *prefix, json_t *v, int *lines) {
    const char *key;
    json_t *x;
    json_object_foreach(v, key, x) {
        char name[256];
        snprintf(name, sizeof name, "%s%s%s", prefix, prefix[0] ? "." : "", key);
        if (json_is_object(x)) {
            describe_json(out, name, x, lines);
            continue;
        }
        if (++*lines > 60) {
            if (*lines == 61) fprintf(out, "    ...\n");
            continue;
        }
        char *s = json_dumps(x, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(12));
        if (s && strlen(s) > 100) strcpy(s + 96, "...");
        fprintf(out, "    %s = %s\n", name, s ? s : "?");
        free(s);
    }
}

int sp_checkpoint_describe(FILE *out, const char *path, sp_error *err) {
    sp_checkpoint c;
    if (sp_checkpoint_read(path, &c, err) != 0) return -1;
    size_t np = (size_t)c.n_prompt * (size_t)c.d;
    fprintf(out, "%s: softprompt checkpoint (format_version %d, checksum verified)\n", path,
            SP_CHECKPOINT_VERSION);
    fprintf(out, "  created by        %s\n", c.created_by);
    fprintf(out, "  step              %" PRId64 " (optimizer step %" PRId64 ")\n", c.step,
            c.optim_step);
    fprintf(out, "  data position     epoch %" PRId64 ", %" PRId64 " examples into it\n", c.epoch,
            c.epoch_position);
    fprintf(out, "  tokens seen       %" PRId64 "\n", c.tokens_seen);
    if (c.n_prompt)
        fprintf(out, "  prompt            [%d, %d] float32, RMS %.6g\n", c.n_prompt, c.d,
                rms(c.prompt, np));
    for (int i = 0; i < c.n_tensors; i++) { /* prefix tuning: the prefix, the MLP */
        const sp_checkpoint_tensor *a = &c.tensors[i];
        char shape[96] = "";
        for (int k = 0, n = 0; k < a->rank && n < (int)sizeof shape; k++)
            n += snprintf(shape + n, sizeof shape - (size_t)n, "%s%" PRId64, k ? ", " : "",
                          a->dims[k]);
        fprintf(out, "  %-17s [%s] float32, RMS %.6g\n", a->name, shape, rms(a->data, a->n));
    }
    if (c.n_optim == 0) fprintf(out, "  optimizer state   none\n");
    for (int i = 0; i < c.n_optim; i++)
        fprintf(out, "  optimizer/%-7s %zu floats, RMS %.6g\n", c.optim[i].name, c.optim[i].n,
                rms(c.optim[i].data, c.optim[i].n));
    fprintf(out,
            "  rng state         %016" PRIx64 " %016" PRIx64 " %016" PRIx64 " %016" PRIx64 "\n",
            c.rng[0], c.rng[1], c.rng[2], c.rng[3]);
    if (c.metric_name[0])
        fprintf(out, "  metric            %s = %.6g; best %.6g at step %" PRId64 "\n",
                c.metric_name, c.metric, c.best_metric, c.best_step);
    else
        fprintf(out, "  metric            none yet\n");
    fprintf(out, "  model             fingerprint %s\n",
            c.model_fingerprint[0] ? c.model_fingerprint : "(none)");
    fprintf(out, "  dataset           fingerprint %s\n",
            c.dataset_fingerprint[0] ? c.dataset_fingerprint : "(none)");
    json_error_t je;
    json_t *cfg = c.config_json[0] ? json_loads(c.config_json, 0, &je) : NULL;
    if (!c.config_json[0]) {
        fprintf(out, "  configuration     (none)\n");
    } else if (!json_is_object(cfg)) {
        fprintf(out, "  configuration     %zu bytes (not a JSON object)\n", strlen(c.config_json));
    } else {
        fprintf(out, "  configuration\n");
        int lines = 0;
        describe_json(out, "", cfg, &lines);
    }
    json_decref(cfg);
    sp_checkpoint_free(&c);
    return 0;
}
