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
    /* converted or realigned tensors (float32, or BF16 uint16), one after the other in one
     * mapping: private (anonymous), or one per node shared by its ranks (sp_model_share) */
    void *copies;
    size_t copies_len;
    int n_owned; /* tensors in it */
    /* the stored tensor of each matrix (and of wte) held in another storage than float32
     * (BF16), so that what is hashed as the model (fingerprints) is the file's values whatever
     * --weights; keyed by the slot (an sp_linear, or &m->wte) */
    const void **src_slot;
    const sp_st_tensor **src_tensor;
    int n_src;
} sp__model_store;

/* The stored tensor a slot's data came from when it is not float32 (slot: an sp_linear, or
 * &m->wte); NULL otherwise. */
const sp_st_tensor *sp__model_source(const sp_model *m, const void *slot);

#endif
