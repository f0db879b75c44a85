/* Internals shared by the checkpoint modules (the public API is softprompt/checkpoint.h):
 *
 *   checkpoint_checksum.c  the checksum over every field, shared by writing and reading
 *   checkpoint_write.c     sp_checkpoint_write: check, build the file in memory, verify it,
 *                          write it atomically
 *   checkpoint_h5read.c    HDF5 reading primitives that check presence, type, rank and range
 *   checkpoint_read.c      sp_checkpoint_read / sp_checkpoint_free: the layout, verified
 *   checkpoint_values.c    no non-finite state: shared by writing and reading
 *   checkpoint_resume.c    sp_checkpoint_check_resume_state: the counters against the data
 *   checkpoint_prompt.c    sp_prompt_read_h5 (and through sp_prompt_load, --init FILE)
 *   prompt_file.c          sp_prompt_load and sp_prompt_check_model (eval/export --prompt)
 *   peft_read.c            sp__peft_read: a PEFT adapter's tensor and adapter_config.json
 *   checkpoint_dir.c       the step-*.h5 files of a run: path, find_latest, prune
 *   checkpoint_describe.c  sp_checkpoint_describe (`softprompt info`)
 *
 * Layout (format_version 1; docs/formats-checkpoints.md): /prompt float32 [P, d],
 * /optimizer/<name> float32 ([P, d] when it has P*d elements, else [n]), /rng_state uint64 [4],
 * and root attributes (counters, configuration, fingerprints, metrics, checksum), strings
 * fixed-length. Files use the HDF5 1.8 format (superblock v2, v2 object headers), where HDF5
 * checksums all metadata itself; the "checksum" attribute covers the raw data and the values
 * of every other field.
 *
 * Every function that can fail returns 0 (or a valid handle / pointer), or -1 (NULL) with err
 * naming `path` and the dataset or attribute. */
#ifndef SP_TRAIN_CHECKPOINT_INTERNAL_H
#define SP_TRAIN_CHECKPOINT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "io/h5util.h"
#include "softprompt/checkpoint.h"

/* Bounds that keep a corrupt or hostile header from asking for absurd allocations. */
#define SP_CKPT_PROMPT_MAX_DIM (1 << 24)
#define SP_CKPT_PROMPT_MAX_ELEMS ((size_t)1 << 30)

/* The 8 bytes every HDF5 file starts with. */
extern const unsigned char sp_ckpt_hdf5_signature[8];

static inline const char *sp__ckpt_nz(const char *s) {
    return s ? s : "";
}

/* A trainable tensor's name: "prefix", or "prefix_encoder/<word>" (letters, digits, '_'). */
int sp__ckpt_tensor_name_ok(const char *name);

/* ---- checkpoint_checksum.c ---- */

/* c->created_by, or "softprompt" when it is NULL or empty (what a write stores). */
const char *sp__ckpt_created_by(const sp_checkpoint *c);
/* The checksum of every field of c but the checksum itself, with created_by as stored. */
uint64_t sp__ckpt_checksum(const sp_checkpoint *c, const char *created_by);

/* ---- checkpoint_values.c ---- */

/* Every prompt and optimizer value is finite; metric and best_metric are finite or NaN (none).
 * The message names path, the dataset or attribute and the element. */
int sp__ckpt_check_values(const sp_checkpoint *c, const char *path, sp_error *err);

/* ---- checkpoint_h5read.c ---- */

/* path is a regular, non-empty HDF5 file; with need_v2, of superblock version >= 2. */
int sp__ckpt_precheck(const char *path, int need_v2, sp_error *err);
/* 1 when the open file's root attribute "format" says softprompt checkpoint, else 0. */
int sp__ckpt_says_checkpoint(hid_t f);
/* Opens path read-only (no file locking); -1 on failure. */
hid_t sp__ckpt_open_h5(const char *path, sp_error *err);
/* Scalar root attributes: a fixed-length string (malloc'd into *out), a signed integer >= lo,
 * a float. */
int sp__ckpt_read_str(hid_t f, const char *name, char **out, const char *path, sp_error *err);
int sp__ckpt_read_i64(hid_t f, const char *name, int64_t lo, int64_t *out, const char *path,
                      sp_error *err);
int sp__ckpt_read_f64(hid_t f, const char *name, double *out, const char *path, sp_error *err);
/* Opens dataset name under loc and checks its element type (kind 'f' float, float32 when
 * exact_size; 'u' uint64) and rank in [min_rank, max_rank]; dims[0..rank) receive the shape,
 * the rest of dims[0..max_rank) 1. Returns the dataset or -1. */
hid_t sp__ckpt_open_dataset(hid_t loc, const char *name, const char *shown, char kind,
                            int exact_size, int min_rank, int max_rank, hsize_t *dims,
                            const char *path, sp_error *err);
/* All n elements of d as mem_type (elem bytes each), malloc'd; NULL on failure. */
void *sp__ckpt_read_all(hid_t d, hid_t mem_type, size_t n, size_t elem, const char *shown,
                        const char *path, sp_error *err);

/* ---- checkpoint_read.c ---- */

/* dims is a valid prompt shape [P, d] (both >= 1, within the bounds above). */
int sp__ckpt_check_prompt_dims(const hsize_t dims[2], const char *path, sp_error *err);
/* Reads and verifies every field of the open file f into c (zeroed by the caller; on failure
 * it may hold part of the fields: free it with sp_checkpoint_free). */
int sp__ckpt_read_contents(hid_t f, sp_checkpoint *c, const char *path, sp_error *err);

/* ---- peft_read.c ---- */

/* Reads the adapter file st_path and its adapter_config.json into pf (zeroed by the caller;
 * on failure it may hold part of the fields: free it with sp_prompt_file_free). */
int sp__peft_read(const char *st_path, sp_prompt_file *pf, sp_error *err);

/* ---- prompt_formats.c ---- a .npy prompt, a KoboldAI zip (checkpoint.h, sp_prompt_load) */
int sp__prompt_read_npy(const char *path, sp_prompt_file *pf, sp_error *err);
int sp__prompt_read_kobold(const char *path, sp_prompt_file *pf, sp_error *err);

#endif
