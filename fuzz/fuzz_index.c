/* model.safetensors.index.json: sp_model_load on a directory holding a valid config.json and the
 * two shards of a sharded fixture, with the input as the index (weight_map, shard names). */
#include "fuzz_util.h"
#include "softprompt/model.h"

#define FIX "ref/l2_h2_d24_sharded2_bf16/"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *dir;
    if (!dir) {
        dir = fz_subdir("sharded");
        fz_copy_fixture(FIX "config.json", "sharded/config.json");
        fz_copy_fixture(FIX "model-00001-of-00002.safetensors",
                        "sharded/model-00001-of-00002.safetensors");
        fz_copy_fixture(FIX "model-00002-of-00002.safetensors",
                        "sharded/model-00002-of-00002.safetensors");
    }
    fz_write(fz_path(0, "sharded/model.safetensors.index.json"), data, size);
    sp_model m;
    sp_error err;
    sp_model_load(&m, dir, &err);
    sp_model_free(&m);
    return 0;
}
