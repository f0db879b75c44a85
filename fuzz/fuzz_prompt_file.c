/* Prompt files as sp_prompt_load reads them for every command: the input is the file (a NumPy
 * .npy, a KoboldAI zip, a safetensors adapter tensor, an HDF5 file, told apart by content), so
 * the strict .npy header parser and the zip reader see arbitrary bytes. */
#include "fuzz_util.h"
#include "softprompt/checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fz_path(0, "prompt.in");
    fz_write(path, data, size);
    sp_prompt_file pf;
    sp_error err;
    if (sp_prompt_load(path, &pf, &err) == 0) {
        volatile float sum = 0;
        for (size_t i = 0; i < (size_t)pf.n_prompt * (size_t)pf.d; i++) sum += pf.prompt[i];
        (void)sum;
    }
    sp_prompt_file_free(&pf);
    return 0;
}
