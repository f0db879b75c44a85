/* safetensors files: sp_st_open on the input as a file (header length, JSON header, dtypes,
 * shapes, data_offsets), then every tensor's bytes are read and converted as the loader would. */
#include <stdlib.h>

#include "fuzz_util.h"
#include "softprompt/dtype.h"
#include "softprompt/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fz_path(0, "model.safetensors");
    fz_write(path, data, size);
    sp_st_file f;
    sp_error err;
    if (sp_st_open(&f, path, &err) != 0) return 0;
    volatile unsigned sink = 0;
    for (int i = 0; i < f.n_tensors; i++) {
        const sp_st_tensor *t = &f.tensors[i];
        if (sp_st_find(&f, t->name) == NULL) abort(); /* every listed name must be found */
        if ((size_t)t->numel * sp_dtype_size(t->dtype) != t->nbytes) abort();
        /* The data lie inside the mapping, after the 8-byte length and the header. */
        const char *lo = (const char *)f.map + 8, *hi = (const char *)f.map + f.map_len;
        if (t->nbytes && ((const char *)t->data < lo || (const char *)t->data > hi ||
                          t->nbytes > (size_t)(hi - (const char *)t->data)))
            abort();
        const unsigned char *p = t->data;
        for (size_t b = 0; b < t->nbytes; b++) sink += p[b];
        if (sp_dtype_is_float(t->dtype) && t->numel > 0 && t->numel <= 4096) {
            float *out = malloc((size_t)t->numel * sizeof *out);
            if (!out) abort();
            sp_convert_to_f32(t->dtype, t->data, out, (size_t)t->numel);
            sink += (unsigned)(out[0] == out[0]);
            free(out);
        }
    }
    for (int i = 0; i < f.n_meta; i++)
        if (sp_st_metadata(&f, f.meta_kv[2 * i]) == NULL) abort();
    (void)sink;
    sp_st_close(&f);
    return 0;
}
