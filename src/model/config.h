/* Parsing of Hugging Face config.json files into model configurations (internal). */
#ifndef SP_MODEL_CONFIG_H
#define SP_MODEL_CONFIG_H

#include "softprompt/error.h"
#include "softprompt/model.h"

/* Reads path (config.json of a model of a supported family), validates every key the engine
 * relies on and fills cfg (cfg->arch: the family model_type names). Errors name path and the key
 * at fault. */
int sp__config_load(sp_model_config *cfg, const char *path, sp_error *err);

#endif
