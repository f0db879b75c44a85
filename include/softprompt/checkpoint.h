/* Training checkpoints in HDF5 (layout: docs/formats.md, "Checkpoints").
 *
 * A checkpoint holds everything needed to continue a run bit for bit: the prompt [P, d]
 * (float32 dataset "prompt" at the root, so any HDF5 tool or h5py reads it), the optimizer
 * state, the step and data position, the RNG state, the whole training configuration (JSON),
 * and fingerprints of the model and the training dataset that resume checks. A checksum over
 * all of it detects truncation and bit flips. Files are written to a temporary name, fsynced,
 * renamed, and the directory fsynced: a crash mid-write never destroys the previous one. */
#ifndef SOFTPROMPT_CHECKPOINT_H
#define SOFTPROMPT_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "softprompt/dataset.h"
#include "softprompt/error.h"
#include "softprompt/model.h"

#define SP_CHECKPOINT_FORMAT "softprompt-checkpoint"
#define SP_CHECKPOINT_VERSION 1
#define SP_CHECKPOINT_MAX_OPTIM 24 /* 4 arrays for each of up to 6 trainable tensors */
#define SP_CHECKPOINT_MAX_TENSORS 6

typedef struct sp_checkpoint_array {
    char name[32]; /* e.g. "m", "v", "vr", "vc" (stored under /optimizer/<name>) */
    float *data;   /* owned by the checkpoint when read; borrowed when writing */
    size_t n;
} sp_checkpoint_array;

/* A trainable tensor besides the prompt (prefix tuning): "prefix" [L, 2, P, kv_dim] at the root,
 * "prefix_encoder/<name>" for the reparametrization's embedding, weights and biases. */
typedef struct sp_checkpoint_tensor {
    char name[40];
    int rank;        /* 1..4 */
    int64_t dims[4]; /* 1 past rank */
    float *data;     /* owned when read; borrowed when writing */
    size_t n;        /* product of dims */
} sp_checkpoint_tensor;

typedef struct sp_checkpoint {
    int n_prompt, d;
    float *prompt; /* [n_prompt, d]; n_prompt 0 and NULL when the run trains no input prompt
                      (then at least one tensor) */
    int n_tensors;
    sp_checkpoint_tensor tensors[SP_CHECKPOINT_MAX_TENSORS];
    int64_t step;           /* optimizer updates done */
    int64_t epoch;          /* epoch of the next batch (0-based) */
    int64_t epoch_position; /* examples of that epoch already consumed */
    int64_t tokens_seen;
    uint64_t rng[4]; /* trainer RNG state (sp_rng) */
    int n_optim;
    sp_checkpoint_array optim[SP_CHECKPOINT_MAX_OPTIM];
    int64_t optim_step;        /* sp_optim.step */
    char *config_json;         /* the whole training configuration */
    char *model_fingerprint;   /* sp_model_fingerprint hex */
    char *dataset_fingerprint; /* sp_dataset_fingerprint hex of the training set */
    char *metric_name;         /* e.g. "valid_accuracy"; "" when no evaluation yet */
    double metric;             /* value of metric_name at this step (NaN if none) */
    double best_metric;        /* best value so far in the run (NaN if none) */
    int64_t best_step;         /* step of best_metric (-1 if none) */
    char *created_by;          /* "softprompt <version>"; NULL when writing: "softprompt" */
} sp_checkpoint;

/* Writes path atomically (see above). Borrowed pointers are not freed; NULL strings are stored
 * as "". Refuses (before touching the disk) n_prompt or d < 1, more than SP_CHECKPOINT_MAX_OPTIM
 * optimizer arrays, empty/duplicate/over-long names or names with '/', negative counters,
 * non-finite prompt or optimizer values and infinite metrics (non-finite state is never
 * persisted). */
int sp_checkpoint_write(const char *path, const sp_checkpoint *c, sp_error *err);
/* Reads and verifies path (format, version, presence, dtypes, shapes, ranges, checksum, then
 * values: every prompt and optimizer value finite, metric and best_metric finite or NaN). On
 * failure c is left empty (zeroed) and err names the file and the dataset or attribute (and
 * the element of a non-finite value). */
int sp_checkpoint_read(const char *path, sp_checkpoint *c, sp_error *err);
/* Frees what sp_checkpoint_read allocated and zeroes c. */
void sp_checkpoint_free(sp_checkpoint *c);

/* Before a trainer continues from checkpoint ck (read from path, so verified): its counters
 * against the training set, the run's seed and global batch, which resume requires unchanged.
 * Checks 0 <= epoch_position <= n_examples and step * global_batch == epoch * n_examples +
 * epoch_position (the data order is deterministic), tokens_seen equal to the tokens of exactly
 * those examples, optim_step == step, -1 <= best_step <= step, best_step >= 0 exactly when
 * best_metric is a number, metric values NaN (none) or in their metric's range, metric_name
 * "" or valid_accuracy / valid_loss, an RNG state that is not all zero. Fails with a message
 * naming path and the field. Costs one permutation of the training set (O(n_examples)). */
int sp_checkpoint_check_resume_state(const sp_checkpoint *ck, const char *path,
                                     const sp_dataset *train, uint64_t seed, int global_batch,
                                     sp_error *err);

/* Reads only a prompt [P, d] from an HDF5 file holding a float dataset "prompt" at the root
 * (any checkpoint, or a file a user made with h5py; float64 is converted to float32). A
 * softprompt checkpoint is fully verified (checksum included); other files must hold a 2-D
 * floating-point "prompt" of finite values. *prompt is malloc'd. */
int sp_prompt_read_h5(const char *path, float **prompt, int *n_prompt, int *d, sp_error *err);

/* ---- A prompt for use (eval --prompt, export --prompt) -------------------------------------- */

typedef enum sp_prompt_kind {
    SP_PROMPT_CHECKPOINT, /* a softprompt checkpoint, verified in full (checksum included) */
    SP_PROMPT_H5,         /* another HDF5 file with a 2-D float dataset "prompt" (e.g. h5py) */
    SP_PROMPT_PEFT,       /* a PEFT prompt-tuning adapter (adapter_config.json validated) */
    SP_PROMPT_NPY,        /* a NumPy .npy [n, d] (Lester et al.'s prompt files) */
    SP_PROMPT_KOBOLD,     /* a KoboldAI soft prompt zip (tensor.npy + meta.json) */
} sp_prompt_kind;

typedef struct sp_prompt_file {
    sp_prompt_kind kind;
    char *path; /* the file read: for an adapter directory its adapter_model.safetensors */
    int n_prompt, d;
    float *prompt; /* [n_prompt, d], every value finite; NULL with n_prompt 0 for a prefix */
    /* A key/value prefix (a prefix-tuning checkpoint, a PEFT PREFIX_TUNING adapter): [n_layer,
     * 2, n_prefix, kv_dim], the layout of sp_pass.kv_prefix; NULL with n_prefix 0 otherwise. */
    int n_prefix, n_layer, kv_dim;
    float *prefix;
    char *init_name; /* how it was initialised, in softprompt's names (a checkpoint's "init"; an
                        adapter's prompt_tuning_init as text/vocab/random); NULL if unknown */
    char *init_text; /* the text of a text init (a KoboldAI zip: meta.json's name), else NULL */
    /* SP_PROMPT_CHECKPOINT */
    char *model_fingerprint; /* of the model it was trained with */
    int64_t step;            /* -1 for the other kinds */
    /* SP_PROMPT_PEFT: from adapter_config.json */
    char *config_path;
    char *base_model;                    /* base_model_name_or_path; NULL when null */
    int num_layers, num_attention_heads; /* 0 when null */
} sp_prompt_file;

/* Loads a prompt from path: a softprompt checkpoint or any HDF5 file with a "prompt" dataset
 * (told apart by content, not name), a PEFT adapter directory, or an adapter_model.safetensors
 * file (with its adapter_config.json beside it), a NumPy .npy file (strictly checked: see
 * io/npy.h; object arrays refused) or a KoboldAI soft prompt zip (its tensor.npy; a zip
 * without it, such as torch.save's, refused as a pickle). Refuses non-finite values (naming the
 * element); adapters whose peft_type is not PROMPT_TUNING, whose task_type is set and not
 * CAUSAL_LM, with num_transformer_submodules > 1, whose tensor does not have the shape
 * [num_virtual_tokens, token_dim] of their config, with tensors besides prompt_embeddings, or
 * without adapter_config.json (PEFT cannot load those either); PyTorch pickles
 * (adapter_model.bin), saying why and how to convert them. On failure pf is empty and err names
 * the file and the key, tensor or element. */
int sp_prompt_load(const char *path, sp_prompt_file *pf, sp_error *err);
void sp_prompt_file_free(sp_prompt_file *pf);
/* pf holds what method (a --method name: prompt, prefix, ptuning-v2, prompt+prefix) trains: a
 * prompt, a prefix, or both; else -1 naming the file, what it holds and the method. */
int sp_prompt_check_method(const sp_prompt_file *pf, const char *method, sp_error *err);

/* Is pf a prompt for model m? Its width must be m's d_model (else -1). A checkpoint trained with
 * another model (fingerprints differ; both are named) is refused unless allow_mismatch (the
 * --allow-model-mismatch flag), which turns the refusal into a warning. A PEFT adapter whose
 * num_layers or num_attention_heads differ from m's gets a warning: PEFT itself ignores those
 * keys for prompt tuning, but they say the adapter was made for another model. Warnings (one
 * line each, ending in '\n') go to *warnings (malloc'd; NULL when none). Computes m's
 * fingerprint for a checkpoint (every weight hashed: 0.05 s warm, 0.2-0.5 s cold for GPT-2
 * 124M). */
int sp_prompt_check_model(const sp_prompt_file *pf, const sp_model *m, int allow_mismatch,
                          char **warnings, sp_error *err);

/* Checkpoints of a run live in dir as step-<12 digits>.h5 (other names, including the
 * *.tmp.XXXXXX leftovers of interrupted writes, are ignored). Returns the newest one that reads
 * and verifies (NULL in *path when there is none, also when dir does not exist); each skipped
 * corrupt or truncated file adds a line "skipping <file>: <reason>\n" to *warnings (malloc'd,
 * NULL when none). Fails only when dir cannot be listed. */
int sp_checkpoint_find_latest(const char *dir, char **path, char **warnings, sp_error *err);
/* Path of step s in dir: dir/step-000000000123.h5 (malloc'd; NULL if s < 0 or out of memory). */
char *sp_checkpoint_path(const char *dir, int64_t step);
/* Deletes all but the keep_last (>= 1) newest step-*.h5 in dir, never deleting keep_also (may be
 * NULL; compared by identity of the file, so any path to it works). Temporary files and other
 * names are never touched. */
int sp_checkpoint_prune(const char *dir, int keep_last, const char *keep_also, sp_error *err);

/* Fingerprints (16 lowercase hex digits + NUL): the model from its config and a checksum of
 * every tensor's float32 values; a dataset from its counts, offsets, targets and labels, and
 * tokenizer/template attributes. */
void sp_model_fingerprint(const sp_model *m, char out[17]);
int sp_dataset_fingerprint(sp_dataset *ds, char out[17], sp_error *err);

/* base_model_name_or_path for an adapter of model m when the user names none (malloc'd; NULL
 * with err on failure): the Hugging Face repository scripts/get-model downloaded m from, with
 * the commit as *revision, when the download is intact (config.json and the weight files as
 * get-model verified them); else m's directory as an absolute path (*revision NULL). Never
 * config.json's "_name_or_path" (the model before fine-tuning, for a fine-tuned one). *origin
 * (if origin is not NULL) receives which rule applied, as a phrase. docs/formats.md. */
char *sp_peft_base_model(const sp_model *m, char **revision, const char **origin, sp_error *err);

/* Writes a Hugging Face PEFT prompt-tuning adapter into dir (created if missing, parents too):
 * adapter_model.safetensors with "prompt_embeddings" [P, d] F32 and adapter_config.json
 * (peft_type PROMPT_TUNING, task_type CAUSAL_LM, num_virtual_tokens, token_dim,
 * num_transformer_submodules 1, num_attention_heads, num_layers, prompt_tuning_init,
 * prompt_tuning_init_text, tokenizer_name_or_path, base_model_name_or_path, revision,
 * auto_mapping null, inference_mode true: only keys every PEFT since 0.6 accepts), each file
 * written atomically. base_model: the Hugging Face name or path to record, as given (the
 * --base-model flag; revision null); NULL: sp_peft_base_model(m) and its revision. init_name: how
 * the prompt was initialised (softprompt's name; mapped to PEFT's RANDOM | SAMPLE_VOCAB | TEXT).
 * init_text: the text of a text init, or NULL. PEFT refuses to load a TEXT config without
 * prompt_tuning_init_text, so a text init without init_text is recorded as RANDOM (the trained
 * embeddings are loaded from the file either way). */
int sp_peft_export(const char *dir, const float *prompt, int n_prompt, const sp_model *m,
                   const char *base_model, const char *init_name, const char *init_text,
                   sp_error *err);

/* Lester et al.'s prompt file: path = prompt [n_prompt, d] as a NumPy .npy (version 1.0,
 * '<f4', C order), written atomically; an existing path is refused unless force. */
int sp_prompt_export_npy(const char *path, const float *prompt, int n_prompt, int d, int force,
                         sp_error *err);

/* meta.json of a KoboldAI soft prompt: the fields KoboldAI's tuner writes (NULL: ""). */
typedef struct sp_kobold_meta {
    const char *name, *author, *supported, *description;
} sp_kobold_meta;

/* KoboldAI's soft prompt: a zip of tensor.npy (prompt [n_prompt, d], as sp_prompt_export_npy)
 * and meta.json, written atomically; an existing path is refused unless force. */
int sp_prompt_export_kobold(const char *path, const float *prompt, int n_prompt, int d,
                            const sp_kobold_meta *meta, int force, sp_error *err);

/* Writes a PEFT PREFIX_TUNING adapter of prefix [L, 2, n_prefix, kv_dim] (the layout of
 * sp_pass.kv_prefix) into dir, as PEFT saves one for a causal LM: "prompt_embeddings"
 * [n_prefix, L 2 token_dim], row r holding for j = 2l + s (s = 0 keys, 1 values) the kv_dim
 * values of layer l at columns [j token_dim, (j + 1) token_dim); adapter_config.json with
 * token_dim = kv_dim = head_dim num_key_value_heads and num_attention_heads =
 * num_key_value_heads (what PEFT's _prepare_prompt_learning_config writes for grouped-query
 * models), num_layers, num_transformer_submodules 1, encoder_hidden_size, and prefix_projection
 * false: a reparametrized prefix is exported as the encoder's output, which is what PEFT saves
 * and loads for inference. Other fields and files as sp_peft_export. */
int sp_peft_export_prefix(const char *dir, const float *prefix, int n_prefix, const sp_model *m,
                          const char *base_model, int encoder_hidden, sp_error *err);

/* Human-readable summary of a checkpoint file (for `softprompt info`). */
int sp_checkpoint_describe(FILE *out, const char *path, sp_error *err);

#endif
