/* Tokenized datasets in HDF5 (layout: docs/formats.md, "HDF5 datasets").
 *
 * All examples' input tokens lie back to back in /tokens (int32; a soft-prompt slot k is
 * stored as SP_SOFT(k) = -1-k), delimited by /offsets (int64 [n_examples + 1]). The targets
 * (position within the example, token id) lie in /target_pos and /target_ids, delimited by
 * /target_offsets. Classification datasets add /labels, /verbalizer and /class_names.
 *
 * Many MPI ranks read the same file read-only: each opens it, reads /offsets once, and then
 * reads only the examples of its batches (hyperslab selections of the token and target
 * ranges). A handle is not thread-safe (nor is the serial HDF5 library): one thread per
 * process uses it at a time.
 *
 * Validation: opening checks that the file can be read (saying why not: permission denied, a
 * directory, an empty file), the format attribute and version, every dataset's presence,
 * integer class, width, rank and shape, the counts against the shapes, offsets (start at 0,
 * non-decreasing, end at the count, no empty example, no example over max_length) and labels
 * (within [0, n_classes)). A failed HDF5 metadata checksum is reported as damage ("metadata
 * checksum mismatch: the file is damaged"), never as something missing. Reading a batch
 * checks what it reads: soft indices < n_soft, target positions within their example and
 * strictly increasing, target ids >= 0, and for classification exactly one target per example
 * whose id is verbalizer[label]; sp_dataset_check_model makes all of these checks, and those
 * against a model, for the whole file at once (before training or evaluation). Messages name
 * the file and the example. */
#ifndef SOFTPROMPT_DATASET_H
#define SOFTPROMPT_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "softprompt/engine.h"
#include "softprompt/error.h"

#define SP_DATASET_FORMAT "softprompt-dataset"
#define SP_DATASET_VERSION 1

typedef enum sp_task {
    SP_TASK_CLASSIFICATION = 0,
    SP_TASK_GENERATION = 1,
} sp_task;

const char *sp_task_name(sp_task t); /* "classification" | "generation" */

/* Dataset-wide metadata. The writer copies what it is given; counts marked "reader" are
 * filled by sp_dataset_open and ignored by the writer. Strings may be NULL (stored as ""). */
typedef struct sp_dataset_meta {
    sp_task task;
    int n_soft;                     /* number of distinct soft slots P the template uses */
    int n_classes;                  /* classification: >= 1; generation: 0 */
    const int32_t *verbalizer;      /* [n_classes] token id of each class */
    const char *const *class_names; /* [n_classes] UTF-8 */
    int max_length;                 /* longest allowed example in tokens; 0: no limit */
    int64_t n_truncated;            /* examples shortened to max_length (informational) */
    uint64_t seed;
    const char *tokenizer_hash;
    const char *template_spec;   /* attribute "template", as the user gave it */
    const char *target_spec;     /* attribute "target" */
    const char *verbalizer_spec; /* attribute "verbalizer" */
    const char *source;          /* input file name */
    const char *split;           /* "train", "validation", ... */
    const char *created_by;      /* "softprompt <version>" */
    int64_t n_examples;          /* reader */
    int64_t n_tokens;            /* reader */
    int64_t n_targets;           /* reader */
} sp_dataset_meta;

/* ------------------------------------------------------------------------------------------ */
/* Writing                                                                                    */
/* ------------------------------------------------------------------------------------------ */

typedef struct sp_dataset_writer sp_dataset_writer;

/* Creates final_path + ".tmp.XXXXXX" next to final_path. An existing final_path is refused
 * unless force. Returns NULL and fills err on failure. */
sp_dataset_writer *sp_dataset_writer_open(const char *final_path, const sp_dataset_meta *meta,
                                          int force, sp_error *err);

/* Appends one example: tokens [n_tokens] (ids >= 0 or SP_SOFT(k), k < n_soft), target_pos
 * [n_targets] positions within the example (strictly increasing, < n_tokens), target_ids
 * [n_targets] (>= 0). label: class index for classification (then exactly one target whose id
 * is verbalizer[label]); ignored for generation. Data are buffered and appended in chunks. */
int sp_dataset_writer_add(sp_dataset_writer *w, const int32_t *tokens, int n_tokens,
                          const int32_t *target_pos, const int32_t *target_ids, int n_targets,
                          int label, sp_error *err);

/* Updates the informational n_truncated attribute before close. */
void sp_dataset_writer_set_truncated(sp_dataset_writer *w, int64_t n_truncated);

/* Flushes, writes the count attributes, closes, fsyncs and renames to the final path, and
 * fsyncs its directory. Always frees w; on failure nothing it wrote is left: the temporary file
 * is removed, and so is the final file when only syncing its directory failed. */
int sp_dataset_writer_close(sp_dataset_writer *w, sp_error *err);

/* Discards everything written and removes the temporary file; frees w (NULL is fine). */
void sp_dataset_writer_abort(sp_dataset_writer *w);

/* ------------------------------------------------------------------------------------------ */
/* Reading                                                                                    */
/* ------------------------------------------------------------------------------------------ */

typedef struct sp_dataset sp_dataset;

/* A packed batch in the engine's layout plus labels; the buffers grow on demand and are
 * reused across reads. Initialize with {0} (or sp_batch_data_init), free with
 * sp_batch_data_free. */
typedef struct sp_batch_data {
    int n_seq;
    int n_targets;
    int32_t *seq_start;    /* [n_seq + 1] offsets into tokens */
    int32_t *tokens;       /* [seq_start[n_seq]] */
    int32_t *target_start; /* [n_seq + 1] sequence s owns targets [target_start[s], [s+1]) */
    int32_t *target_pos;   /* [n_targets] PACKED positions (sequence start + position) */
    int32_t *target_ids;   /* [n_targets] */
    int32_t *labels;       /* [n_seq] class index; -1 for generation datasets */
    int64_t *example_ids;  /* [n_seq] which example each sequence is */
    const char *source;    /* the dataset's path (owned by the dataset), for messages */
    size_t cap_seq, cap_tokens, cap_targets;
} sp_batch_data;

void sp_batch_data_init(sp_batch_data *b);
void sp_batch_data_free(sp_batch_data *b);
/* The engine's view of b (pointers into b; valid until b is next modified), naming the dataset
 * file and examples so that a batch the engine refuses is reported by file and example. */
sp_batch sp_batch_data_view(const sp_batch_data *b);
/* Removes soft-token positions from b in place (zero-shot evaluation of the template alone;
 * prefix tuning, which feeds nothing into the input) and shifts target positions accordingly.
 * A target at a soft position moves to the last preceding text position; a sequence made only
 * of soft tokens fails (naming its example). */
int sp_batch_data_strip_soft(sp_batch_data *b, sp_error *err);

/* Opens and validates path (see the top of this file). Returns NULL and fills err on failure. */
sp_dataset *sp_dataset_open(const char *path, sp_error *err);
void sp_dataset_close(sp_dataset *ds);

const char *sp_dataset_path(const sp_dataset *ds);
/* All metadata, counts included; strings are never NULL. Owned by ds. */
const sp_dataset_meta *sp_dataset_get_meta(const sp_dataset *ds);
int64_t sp_dataset_n_examples(const sp_dataset *ds);
/* [n_examples + 1]: example i is tokens [offsets[i], offsets[i+1]). */
const int64_t *sp_dataset_offsets(const sp_dataset *ds);
/* Number of tokens / targets of example i (0 <= i < n_examples). */
int64_t sp_dataset_example_length(const sp_dataset *ds, int64_t i);
int64_t sp_dataset_example_targets(const sp_dataset *ds, int64_t i);
/* [n_examples] class indices (classification) or NULL (generation). */
const int32_t *sp_dataset_labels(const sp_dataset *ds);

/* Reads exactly the examples example_ids[0..n) (any order, repeats allowed) into out, packed
 * in that order. The examples are read in file order, one hyperslab per run of consecutive
 * examples, so only their chunks are touched. The packed batch must fit int32 positions. On
 * error out is left empty (n_seq = 0). */
int sp_dataset_read_batch(sp_dataset *ds, const int64_t *example_ids, int n, sp_batch_data *out,
                          sp_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Checks before training or evaluation                                                       */
/* ------------------------------------------------------------------------------------------ */

/* Checks every example of ds against the model whose config is cfg, so that nothing knowable
 * from the file fails when its batch runs (at step 11 of 51, and at the same step on every
 * resume):
 *   - every example's length (from /offsets) <= cfg->n_ctx, the model's positions: GPT-2's
 *     n_positions (learned position embeddings: there are no more) and the Llama family's
 *     max_position_embeddings alike. Hugging Face computes rotary positions past
 *     max_position_embeddings without a word, but the model never saw them in training, so
 *     the engine refuses them too; the message says `softprompt prepare --max-length N`;
 *   - the verbalizer ids, every token id (/tokens) and every target id in [0, vocab_size);
 *     soft slots SP_SOFT(k) with k < n_soft;
 *   - every target position within its example and strictly increasing; in classification
 *     datasets exactly one target per example, whose id is /verbalizer[label].
 * /tokens and the targets are streamed in blocks of 1 Mi elements (8 MiB of buffers whatever
 * the set's size); 0.02-0.05 s per million tokens measured (docs/reliability.md).
 * cfg may be NULL: then only the checks that need no model. Returns 0, or -1 with a message
 * naming the file, the example (and its element), the value and the limit. */
int sp_dataset_check_model(sp_dataset *ds, const sp_model_config *cfg, sp_error *err);

/* Compares the tokenizer hash recorded in ds (sp_tokenizer_hash_hex of the tokenizer `prepare`
 * used) with hash, that of the model's tokenizer (sp_tokenizer_hash_of_dir; tokenizer_dir
 * names it in the message). Returns 0 when they are equal; 1 when there is nothing to compare
 * (hash NULL or "": the model directory has no tokenizer; or the dataset records none, as
 * datasets written with h5py may not); -1 on a mismatch, with a message naming the dataset,
 * both hashes, `softprompt prepare --tokenizer DIR` and the override --allow-tokenizer-mismatch. */
int sp_dataset_check_tokenizer(const sp_dataset *ds, const char *hash, const char *tokenizer_dir,
                               sp_error *err);

#endif
