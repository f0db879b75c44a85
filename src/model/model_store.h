/* The loader's bookkeeping behind sp_model.store (internal): the mapped safetensors files and
 * the copies made at load, freed by sp_model_free. Callers outside src/model/ use
 * sp_model_n_files / sp_model_file_path; tests may look inside. */
#ifndef SP_MODEL_MODEL_STORE_H
#define SP_MODEL_MODEL_STORE_H

#include "softprompt/safetensors.h"

typedef struct sp__model_store {
    int n_files;
    sp_st_file *files; /* [n_files] mapped, index order */
    void **owned;      /* converted or realigned tensors (float32, or BF16 uint16) */
    int n_owned;
} sp__model_store;

#endif
