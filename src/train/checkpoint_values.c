/* The values of a checkpoint are state a run continues from: non-finite numbers (a diverged
 * run) are never written and never read back. Shared by sp_checkpoint_write (before anything
 * touches the disk) and sp_checkpoint_read (after the checksum, so corruption is reported as
 * corruption). */
#include <math.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "train/checkpoint_internal.h"

/* Index of the first non-finite value of x[0..n), or n when all are finite. */
static size_t first_nonfinite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return i;
    return n;
}

/* Names element i of an array of n values: [row, col] when the array has the prompt's shape
 * (as it is stored, docs/formats.md), else [i]. */
static int array_fails(const char *path, const char *shown, const float *x, size_t n,
                       const sp_checkpoint *c, sp_error *err) {
    size_t i = first_nonfinite(x, n), cols = (size_t)c->d;
    if (i == n) return 0;
    if (n == (size_t)c->n_prompt * cols)
        return sp_fail(err,
                       "%s: dataset \"%s\" element [%zu, %zu] is %g: a checkpoint holds no "
                       "non-finite values (was the run diverging?)",
                       path, shown, i / cols, i % cols, (double)x[i]);
    return sp_fail(err,
                   "%s: dataset \"%s\" element [%zu] is %g: a checkpoint holds no non-finite "
                   "values (was the run diverging?)",
                   path, shown, i, (double)x[i]);
}

int sp__ckpt_tensor_name_ok(const char *name) {
    const char *word = name;
    if (strncmp(name, "prefix_encoder/", 15) == 0)
        word = name + 15;
    else if (strcmp(name, "prefix") != 0)
        return 0;
    size_t n = strnlen(word, 32);
    if (n == 0 || n == 32) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)word[i]) && word[i] != '_') return 0;
    return 1;
}

/* A metric is a finite number or NaN ("none yet"); an infinity is neither. */
static int metric_fails(const char *path, const char *name, double v, sp_error *err) {
    if (!isinf(v)) return 0;
    return sp_fail(err,
                   "%s: root attribute \"%s\" is %g: a metric is finite, or NaN when there is "
                   "none yet",
                   path, name, v);
}

int sp__ckpt_check_values(const sp_checkpoint *c, const char *path, sp_error *err) {
    if (array_fails(path, "prompt", c->prompt, (size_t)c->n_prompt * (size_t)c->d, c, err))
        return -1;
    for (int k = 0; k < c->n_tensors; k++)
        if (array_fails(path, c->tensors[k].name, c->tensors[k].data, c->tensors[k].n, c, err))
            return -1;
    for (int k = 0; k < c->n_optim; k++) {
        char shown[48];
        snprintf(shown, sizeof shown, "optimizer/%s", c->optim[k].name);
        if (array_fails(path, shown, c->optim[k].data, c->optim[k].n, c, err)) return -1;
    }
    if (metric_fails(path, "metric", c->metric, err) ||
        metric_fails(path, "best_metric", c->best_metric, err))
        return -1;
    return 0;
}
