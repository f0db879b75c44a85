/* Parsing of Hugging Face config.json files into model configurations (internal). */
#ifndef SP_MODEL_CONFIG_H
#define SP_MODEL_CONFIG_H

#include "softprompt/error.h"
#include "softprompt/model.h"

/* Reads path (config.json of a GPT-2 or Llama-family model), validates every key the engine
 * relies on and fills cfg and *arch. Errors name path and the key at fault. */
int sp_config_load(sp_model_config *cfg, sp_arch *arch, const char *path, sp_error *err);

#endif
