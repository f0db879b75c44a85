/* Parsing of Hugging Face config.json files into model configurations (internal). */
#ifndef SP_MODEL_CONFIG_H
#define SP_MODEL_CONFIG_H

#include "softprompt/error.h"
#include "softprompt/model.h"

/* Reads path (a GPT-2 config.json), validates every key the engine relies on and fills cfg.
 * Errors name path and the key at fault. */
int sp_gpt2_config_load(sp_gpt2_config *cfg, const char *path, sp_error *err);

#endif
