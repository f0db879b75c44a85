/* The loader's bookkeeping behind sp_model.store (internal): the mapped safetensors files and
 * the copies made at load, freed by sp_model_free. Callers outside src/model/ use
 * sp_model_n_files / sp_model_file_path; tests may look inside. */
#ifndef SP_MODEL_MODEL_STORE_H
#define SP_MODEL_MODEL_STORE_H

#include "softprompt/model.h"
#include "softprompt/safetensors.h"

typedef struct sp__model_store {
    int n_files;
    sp_st_file *files; /* [n_files] mapped, index order */
    void **owned;      /* converted or realigned tensors (float32, or BF16 uint16) */
    int n_owned;
    /* the stored tensor of each matrix held in another storage than float32 (BF16), so that
     * what is hashed as the model (fingerprints) is the file's values whatever --weights */
    const sp_linear **src_lin;
    const sp_st_tensor **src_tensor;
    int n_src;
} sp__model_store;

/* The stored tensor a linear layer's weight came from when it is not float32; NULL otherwise. */
const sp_st_tensor *sp__model_linear_source(const sp_model *m, const sp_linear *lin);

#endif
