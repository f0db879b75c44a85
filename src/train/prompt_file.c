/* sp_prompt_load: the one way a prompt is read for use (eval --prompt, export --prompt): a
 * checkpoint, an h5py-made HDF5 file, or a PEFT adapter, told apart by what the path holds;
 * and sp_prompt_check_model: is it a prompt for this model. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "softprompt/train.h"
#include "train/checkpoint_internal.h"
#include "util/path.h"
#include "util/vec.h"

void sp_prompt_file_free(sp_prompt_file *pf) {
    if (!pf) return;
    free(pf->path), free(pf->prompt), free(pf->prefix), free(pf->init_name), free(pf->init_text);
    free(pf->model_fingerprint), free(pf->config_path), free(pf->base_model);
    memset(pf, 0, sizeof *pf);
}

/* ---- what a file holds ------------------------------------------------------------------ */

typedef enum {
    HOLDS_HDF5,
    HOLDS_SAFETENSORS,
    HOLDS_ZIP,
    HOLDS_NPY,
    HOLDS_PICKLE,
    HOLDS_OTHER
} holds;

/* By content: the HDF5 signature; a safetensors header (u64 length, then '{'); a zip (a KoboldAI
 * soft prompt, or what torch.save writes since PyTorch 1.6: told apart by its entries); the .npy
 * magic; a pickle stream (older torch.save); by name for the usual pickle suffixes. */
static holds file_holds(const char *path, sp_error *err, int *rc) {
    unsigned char h[9] = {0};
    *rc = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *rc = sp_fail(err, "%s: cannot open: %s", path, strerror(errno));
        return HOLDS_OTHER;
    }
    ssize_t got = read(fd, h, sizeof h);
    close(fd);
    if (got == (ssize_t)sizeof h && memcmp(h, sp_ckpt_hdf5_signature, 8) == 0) return HOLDS_HDF5;
    if (got == (ssize_t)sizeof h && h[8] == '{' && h[7] == 0 && h[6] == 0) return HOLDS_SAFETENSORS;
    if (got >= 6 && memcmp(h, "\x93NUMPY", 6) == 0) return HOLDS_NPY;
    if (got >= 2 && h[0] == 0x80 && h[1] <= 5) return HOLDS_PICKLE;
    const char *pickles[] = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"};
    for (size_t i = 0; i < sizeof pickles / sizeof *pickles; i++)
        if (sp__ends_with(path, pickles[i])) return HOLDS_PICKLE;
    if (got >= 4 && memcmp(h, "PK\003\004", 4) == 0) return HOLDS_ZIP; /* KoboldAI or torch */
    return HOLDS_OTHER;
}

static int refuse_pickle(const char *path, sp_error *err) {
    return sp_fail(err,
                   "%s: a PyTorch pickle (as adapter_model.bin is): refused, because loading a "
                   "pickle can run arbitrary code. Convert it once, in Python, if you trust it: "
                   "python3 -c \"import torch; from safetensors.torch import save_file; "
                   "save_file(torch.load('%s', map_location='cpu', weights_only=True), "
                   "'adapter_model.safetensors')\" (keep adapter_config.json beside it)",
                   path, path);
}

/* ---- the kinds -------------------------------------------------------------------------- */

/* The initialisation recorded in a checkpoint's configuration: "init", and "init_arg" for a
 * text init. */
static int checkpoint_init(const char *config_json, sp_prompt_file *pf, const char *path,
                           sp_error *err) {
    json_t *cfg = json_loads(config_json, 0, NULL);
    const char *init = json_string_value(json_object_get(cfg, "init"));
    const char *arg = json_string_value(json_object_get(cfg, "init_arg"));
    int rc = 0;
    if (init && !(pf->init_name = strdup(init))) rc = sp_fail(err, "%s: out of memory", path);
    if (rc == 0 && init && strcmp(init, "text") == 0 && arg && !(pf->init_text = strdup(arg)))
        rc = sp_fail(err, "%s: out of memory", path);
    json_decref(cfg);
    return rc;
}

static int load_checkpoint(const char *path, sp_prompt_file *pf, sp_error *err) {
    sp_checkpoint c;
    if (sp_checkpoint_read(path, &c, err)) return -1;
    pf->kind = SP_PROMPT_CHECKPOINT;
    pf->n_prompt = c.n_prompt, pf->d = c.d, pf->prompt = c.prompt, pf->step = c.step;
    pf->model_fingerprint = c.model_fingerprint;
    c.prompt = NULL, c.model_fingerprint = NULL;
    for (int i = 0; i < c.n_tensors; i++) { /* a prefix-tuning run: its prefix, as trained */
        sp_checkpoint_tensor *a = &c.tensors[i];
        if (strcmp(a->name, "prefix") != 0) continue;
        if (a->rank != 4 || a->dims[1] != 2) {
            sp_checkpoint_free(&c);
            return sp_fail(err, "%s: dataset \"prefix\" is not [L, 2, P, kv_dim]", path);
        }
        pf->n_layer = (int)a->dims[0], pf->n_prefix = (int)a->dims[2];
        pf->kv_dim = (int)a->dims[3], pf->prefix = a->data;
        a->data = NULL;
    }
    int rc = checkpoint_init(c.config_json, pf, path, err);
    sp_checkpoint_free(&c);
    return rc;
}

static int load_h5(const char *path, sp_prompt_file *pf, sp_error *err) {
    if (sp__ckpt_precheck(path, 0, err)) return -1;
    hid_t f = sp__ckpt_open_h5(path, err);
    if (f < 0) return -1;
    int checkpoint = sp__ckpt_says_checkpoint(f);
    H5Fclose(f);
    if (checkpoint) return load_checkpoint(path, pf, err);
    pf->kind = SP_PROMPT_H5;
    return sp_prompt_read_h5(path, &pf->prompt, &pf->n_prompt, &pf->d, err);
}

/* Why dir holds no adapter_model.safetensors: a pickled adapter, a run directory, or neither. */
static int no_adapter(const char *dir, const char *bin, const char *run, const char *cfg,
                      sp_error *err) {
    if (sp__is_file(bin)) return refuse_pickle(bin, err);
    if (sp__is_file(run))
        return sp_fail(err,
                       "%s is a training run's directory, not an adapter: pass %s (its best "
                       "checkpoint) or %s/adapter (the final prompt)",
                       dir, run, dir);
    return sp_fail(err, "%s: no adapter_model.safetensors%s: not a PEFT adapter directory", dir,
                   sp__is_file(cfg) ? " beside adapter_config.json" : "");
}

/* An adapter directory's adapter_model.safetensors (malloc'd), or NULL and why not. */
static char *adapter_file(const char *dir, sp_error *err) {
    char *st = sp__path_join(dir, "adapter_model.safetensors"),
         *bin = sp__path_join(dir, "adapter_model.bin");
    char *run = sp__path_join(dir, "best.h5"), *cfg = sp__path_join(dir, "adapter_config.json");
    if (!st || !bin || !run || !cfg)
        sp_fail(err, "%s: out of memory", dir);
    else if (!sp__is_file(st))
        no_adapter(dir, bin, run, cfg, err);
    if (st && !(bin && run && cfg && sp__is_file(st))) free(st), st = NULL;
    free(bin), free(run), free(cfg);
    return st;
}

int sp_prompt_load(const char *path, sp_prompt_file *pf, sp_error *err) {
    memset(pf, 0, sizeof *pf);
    pf->step = -1;
    struct stat st;
    if (stat(path, &st) != 0) return sp_fail(err, "%s: cannot open: %s", path, strerror(errno));
    char *file = S_ISDIR(st.st_mode) ? adapter_file(path, err) : strdup(path);
    if (!file) return S_ISDIR(st.st_mode) ? -1 : sp_fail(err, "%s: out of memory", path);
    int rc = 0;
    holds h = file_holds(file, err, &rc);
    if (rc == 0) {
        pf->path = file, file = NULL;
        if (h == HOLDS_HDF5)
            rc = load_h5(pf->path, pf, err);
        else if (h == HOLDS_SAFETENSORS)
            pf->kind = SP_PROMPT_PEFT, rc = sp__peft_read(pf->path, pf, err);
        else if (h == HOLDS_ZIP)
            rc = sp__prompt_read_kobold(pf->path, pf, err);
        else if (h == HOLDS_NPY)
            rc = sp__prompt_read_npy(pf->path, pf, err);
        else if (h == HOLDS_PICKLE)
            rc = refuse_pickle(pf->path, err);
        else
            rc = sp_fail(err,
                         "%s: not a prompt file: expected a softprompt checkpoint or an HDF5 file "
                         "with a \"prompt\" dataset, a PEFT adapter directory or its "
                         "adapter_model.safetensors, a NumPy .npy or a KoboldAI soft prompt zip",
                         pf->path);
    }
    free(file);
    if (rc) sp_prompt_file_free(pf);
    return rc;
}

/* ---- is it a prompt for this model? ------------------------------------------------------ */

static int add_warning(sp__buf *warnings, const char *line, sp_error *err) {
    return sp__buf_addf(warnings, "%s\n", line) != 0 ? sp_fail(err, "out of memory") : 0;
}

static int check_fingerprint(const sp_prompt_file *pf, const sp_model *m, int allow_mismatch,
                             sp__buf *warnings, sp_error *err) {
    char fp[17];
    sp_model_fingerprint(m, fp);
    if (strcmp(fp, pf->model_fingerprint) == 0) return 0;
    if (!allow_mismatch)
        return sp_fail(err,
                       "%s was trained with another model (fingerprint %.16s; %s has %s): its "
                       "prompt is tuned to that model's embeddings. Use the model it was trained "
                       "with, or pass --allow-model-mismatch to use it anyway",
                       pf->path, pf->model_fingerprint, m->dir, fp);
    char line[SP_ERROR_MAX];
    snprintf(line, sizeof line,
             "%s was trained with another model (fingerprint %.16s; %s has %s); using it anyway "
             "(--allow-model-mismatch)",
             pf->path, pf->model_fingerprint, m->dir, fp);
    return add_warning(warnings, line, err);
}

/* PEFT reads num_layers and num_attention_heads only for prefix tuning; for a prompt they are a
 * hint of which model it was made for. */
static int check_adapter_shape(const sp_prompt_file *pf, const sp_model *m, sp__buf *warnings,
                               sp_error *err) {
    int layers = pf->num_layers && pf->num_layers != m->cfg.n_layer;
    int heads = pf->num_attention_heads && pf->num_attention_heads != m->cfg.n_head;
    if (!layers && !heads) return 0;
    char line[SP_ERROR_MAX];
    snprintf(line, sizeof line,
             "%s says num_layers %d and num_attention_heads %d, %s has %d and %d: the adapter "
             "was probably made for another model (base_model_name_or_path %.200s)",
             pf->config_path, pf->num_layers, pf->num_attention_heads, m->dir, m->cfg.n_layer,
             m->cfg.n_head, pf->base_model ? pf->base_model : "null");
    return add_warning(warnings, line, err);
}

/* PEFT splits a prefix row into num_attention_heads heads: for a grouped-query model those must
 * be its key/value heads (what PEFT writes), or the heads would be cut elsewhere. */
static int check_prefix_shape(const sp_prompt_file *pf, const sp_model *m, sp_error *err) {
    const sp_model_config *c = &m->cfg;
    int kv = sp_config_kv_heads(c) * sp_config_head_dim(c);
    if (pf->kind == SP_PROMPT_PEFT && pf->num_attention_heads &&
        pf->num_attention_heads != sp_config_kv_heads(c))
        return sp_fail(err,
                       "%s: num_attention_heads is %d, %s has %d key/value heads: PEFT splits "
                       "each prefix row into num_attention_heads heads, which for this model "
                       "must be its num_key_value_heads",
                       pf->config_path, pf->num_attention_heads, m->dir, sp_config_kv_heads(c));
    if (pf->n_layer == c->n_layer && pf->kv_dim == kv && pf->n_prefix < c->n_ctx) return 0;
    return sp_fail(err,
                   "%s: the prefix is %d layers x %d values per key/value row, %s has %d layers "
                   "x %d (head_dim x num_key_value_heads)%s",
                   pf->path, pf->n_layer, pf->kv_dim, m->dir, c->n_layer, kv,
                   pf->n_prefix >= c->n_ctx ? ", and it is longer than the model's context" : "");
}

int sp_prompt_check_model(const sp_prompt_file *pf, const sp_model *m, int allow_mismatch,
                          char **warnings, sp_error *err) {
    sp__buf w = {0};
    *warnings = NULL;
    if (pf->n_prefix && check_prefix_shape(pf, m, err)) return -1;
    int e = sp_config_embed_dim(&m->cfg); /* inputs_embeds' width */
    const char *what = pf->kind == SP_PROMPT_PEFT ? "token_dim" : "[P, d]";
    if (pf->n_prompt && pf->d != e && e == m->cfg.d_model)
        return sp_fail(err, "%s: the prompt is %d wide (%s), %s has d_model %d", pf->path, pf->d,
                       what, m->dir, m->cfg.d_model);
    if (pf->n_prompt && pf->d != e)
        return sp_fail(err,
                       "%s: the prompt is %d wide (%s), %s takes prompts of word_embed_proj_dim "
                       "%d (its embeddings' width, before project_in to d_model %d)",
                       pf->path, pf->d, what, m->dir, e, m->cfg.d_model);
    int rc = 0;
    if (pf->kind == SP_PROMPT_CHECKPOINT)
        rc = check_fingerprint(pf, m, allow_mismatch, &w, err);
    else if (pf->kind == SP_PROMPT_PEFT && !pf->n_prefix)
        rc = check_adapter_shape(pf, m, &w, err);
    if (rc)
        sp__buf_free(&w);
    else
        *warnings = w.p;
    return rc;
}

int sp_prompt_check_method(const sp_prompt_file *pf, const char *method, sp_error *err) {
    sp_method m;
    if (sp_method_parse(method, &m))
        return sp_fail(err, "--method '%s': expected prompt, prefix, ptuning-v2 or prompt+prefix",
                       method);
    if (sp_method_has_prompt(m) == (pf->n_prompt > 0) &&
        sp_method_has_prefix(m) == (pf->n_prefix > 0))
        return 0;
    return sp_fail(err, "%s holds %s%s%s, not what --method %s trains", pf->path,
                   pf->n_prompt ? "a prompt" : "", pf->n_prompt && pf->n_prefix ? " and " : "",
                   pf->n_prefix ? "a key/value prefix" : "", method);
}
