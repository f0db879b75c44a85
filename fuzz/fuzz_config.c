/* config.json of GPT-2 and Llama-family models: sp_model_load on a directory whose config.json
 * is the input and whose model.safetensors is a small valid fixture (GPT-2 when the input
 * mentions "gpt2", else Llama), so the parsed values are also checked against real tensors. */
#include <string.h>

#include "fuzz_util.h"
#include "softprompt/model.h"

static const char *gpt2_dir, *llama_dir;

static void setup(void) {
    gpt2_dir = fz_subdir("gpt2");
    llama_dir = fz_subdir("llama");
    fz_copy_fixture("ref/l1_h1_d16_f32/model.safetensors", "gpt2/model.safetensors");
    fz_copy_fixture("ref/llama_l2_h4_kv4_d32_f32/model.safetensors", "llama/model.safetensors");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!gpt2_dir) setup();
    const char *dir = memmem(data, size, "gpt2", 4) ? gpt2_dir : llama_dir;
    char path[4300];
    snprintf(path, sizeof path, "%s/config.json", dir);
    fz_write(path, data, size);
    sp_model m;
    sp_error err;
    if (sp_model_load(&m, dir, &err) == 0) {
        volatile size_t b = sp_model_activation_bytes_per_token(&m, 16);
        (void)b;
    }
    sp_model_free(&m);
    return 0;
}
