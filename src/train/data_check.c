/* Datasets against the model they are used with, before any batch runs (train and eval). */
#include "softprompt/tokenizer.h"
#include "softprompt/train.h"

int sp_train_check_datasets(const sp_model *m, sp_dataset *const *sets, int n_sets,
                            const char *tokenizer_dir, int allow_tokenizer_mismatch,
                            sp_error *err) {
    for (int i = 0; i < n_sets; i++)
        if (sets[i] && sp_dataset_check_model(sets[i], &m->cfg, err)) return -1;
    if (allow_tokenizer_mismatch || !tokenizer_dir) return 0;
    char hash[17];
    int found = 0;
    if (sp_tokenizer_hash_of_dir(tokenizer_dir, hash, &found, err)) return -1;
    for (int i = 0; found && i < n_sets; i++)
        if (sets[i] && sp_dataset_check_tokenizer(sets[i], hash, tokenizer_dir, err) < 0) return -1;
    return 0;
}
