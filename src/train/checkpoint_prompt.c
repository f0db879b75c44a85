/* sp_prompt_read_h5 (and through sp_prompt_load, --init FILE): the prompt of a softprompt
 * checkpoint (fully verified), or the 2-D float dataset "prompt" of any other HDF5 file, e.g. one
 * written with h5py. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "softprompt/dataset.h"
#include "train/checkpoint_internal.h"

/* 1 when the root attribute "format" says softprompt dataset (a common slip: the data file
 * given where the prompt goes). */
static int says_dataset(hid_t f, const char *path) {
    char format[64];
    sp_error ignored;
    int yes = sp__h5_root_format(f, path, format, sizeof format, &ignored) == 0 &&
              strcmp(format, SP_DATASET_FORMAT) == 0;
    H5Eclear2(H5E_DEFAULT);
    return yes;
}

int sp_prompt_read_h5(const char *path, float **prompt, int *n_prompt, int *d, sp_error *err) {
    *prompt = NULL, *n_prompt = 0, *d = 0;
    sp__h5_quiet();
    if (sp__ckpt_precheck(path, 0, err) != 0) return -1;
    hid_t f = sp__ckpt_open_h5(path, err);
    if (f < 0) return -1;
    if (says_dataset(f, path)) {
        H5Fclose(f);
        return sp_fail(err, "%s is a softprompt dataset, not a prompt or checkpoint", path);
    }
    if (sp__ckpt_says_checkpoint(f)) {
        H5Fclose(f);
        sp_checkpoint c;
        if (sp_checkpoint_read(path, &c, err) != 0) return -1;
        *prompt = c.prompt, *n_prompt = c.n_prompt, *d = c.d;
        c.prompt = NULL;
        sp_checkpoint_free(&c);
        return 0;
    }
    hsize_t dims[2];
    hid_t ds = sp__ckpt_open_dataset(f, "prompt", "prompt", 'f', 0, 2, 2, dims, path, err);
    float *p = NULL;
    int rc = ds < 0 ? -1 : sp__ckpt_check_prompt_dims(dims, path, err);
    if (rc == 0) {
        /* HDF5 converts float64 (h5py's default) and other float widths to float32. */
        p = sp__ckpt_read_all(ds, H5T_NATIVE_FLOAT, dims[0] * dims[1], sizeof(float), "prompt",
                              path, err);
        if (!p) rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < dims[0] * dims[1]; i++)
        if (!isfinite(p[i]))
            rc = sp_fail(err,
                         "%s: dataset \"prompt\" element [%zu, %zu] is %g (not finite as "
                         "float32)",
                         path, i / (size_t)dims[1], i % (size_t)dims[1], (double)p[i]);
    sp__h5_close(ds);
    H5Fclose(f);
    H5Eclear2(H5E_DEFAULT);
    if (rc != 0) {
        free(p);
        return -1;
    }
    *prompt = p, *n_prompt = (int)dims[0], *d = (int)dims[1];
    return 0;
}
