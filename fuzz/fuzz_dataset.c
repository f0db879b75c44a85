/* HDF5 datasets (dataset.h): sp_dataset_open, then batch reads of every example, the checks
 * against a model (sp_dataset_check_model) and the dataset fingerprint, on a valid classification
 * or generation dataset written by the library and edited by the input (fuzz_h5mut.h; the first
 * input byte picks the base file). */
#include "fuzz_h5mut.h"
#include "softprompt/checkpoint.h"
#include "softprompt/dataset.h"

static h5m_base bases[2];

static void make_base(int generation, const char *path) {
    static const int32_t verbalizer[2] = {7, 9};
    static const char *const class_names[2] = {"neg", "pos"};
    sp_dataset_meta m = {0};
    m.task = generation ? SP_TASK_GENERATION : SP_TASK_CLASSIFICATION;
    m.n_soft = 2;
    m.n_classes = generation ? 0 : 2;
    m.verbalizer = generation ? NULL : verbalizer;
    m.class_names = generation ? NULL : class_names;
    m.max_length = 16;
    m.seed = 1;
    m.tokenizer_hash = "0123456789abcdef";
    m.template_spec = "{soft:2}{text} It was";
    m.target_spec = "{label}";
    m.verbalizer_spec = generation ? NULL : "0=neg,1=pos";
    m.source = "fuzz.jsonl";
    m.split = "train";
    m.created_by = "softprompt fuzz";
    sp_error err;
    sp_dataset_writer *w = sp_dataset_writer_open(path, &m, 1, &err);
    if (!w) fz_die("cannot write the base dataset", err.msg);
    for (int i = 0; i < 5; i++) {
        int32_t tokens[8] = {SP_SOFT(0), SP_SOFT(1), 3 + i, 4, 5, 6, 7, 8};
        int n_tok = 4 + i % 3;
        int label = i % 2;
        int32_t pos[2] = {n_tok - 2, n_tok - 1};
        int32_t ids[2] = {generation ? 11 : verbalizer[label], 12};
        int n_tgt = generation ? 2 : 1;
        if (!generation) pos[0] = n_tok - 1;
        if (sp_dataset_writer_add(w, tokens, n_tok, pos, ids, n_tgt, label, &err) != 0)
            fz_die("cannot add to the base dataset", err.msg);
    }
    if (sp_dataset_writer_close(w, &err) != 0) fz_die("cannot close the base dataset", err.msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!bases[0].bytes) {
        for (int g = 0; g < 2; g++) {
            const char *p = fz_path(0, g ? "base-gen.h5" : "base-cls.h5");
            make_base(g, p);
            h5m_base_load(&bases[g], p);
        }
    }
    if (size < 1) return 0;
    const char *path = fz_path(0, "dataset.h5");
    h5m_apply(&bases[data[0] & 1], path, data + 1, size - 1);
    sp_error err;
    sp_dataset *ds = sp_dataset_open(path, &err);
    if (!ds) return 0;
    int64_t n = sp_dataset_n_examples(ds);
    if (n > 0 && n <= 64) {
        int64_t ids[130];
        int k = 0;
        for (int64_t i = 0; i < n; i++) ids[k++] = i;
        for (int64_t i = n - 1; i >= 0; i--) ids[k++] = i; /* reverse order, repeats */
        sp_batch_data b;
        sp_batch_data_init(&b);
        for (int64_t i = 0; i < n; i++) {
            (void)sp_dataset_example_length(ds, i);
            (void)sp_dataset_example_targets(ds, i);
            sp_dataset_read_batch(ds, &ids[i], 1, &b, &err);
        }
        sp_dataset_read_batch(ds, ids, k, &b, &err);
        sp_batch_data_free(&b);
    }
    sp_model_config cfg = {.vocab_size = 16, .n_ctx = 6, .arch = SP_ARCH_GPT2};
    sp_dataset_check_model(ds, &cfg, &err);
    sp_dataset_check_model(ds, NULL, &err);
    char fp[17];
    sp_dataset_fingerprint(ds, fp, &err);
    sp_dataset_close(ds);
    return 0;
}
