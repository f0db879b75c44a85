/* Shared helpers for the Check unit tests. */
#ifndef SP_TESTUTIL_H
#define SP_TESTUTIL_H

#include <check.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* softprompt_core keeps the HDF5 include directory private; Debian's serial headers are under
 * hdf5/serial when it is not on the include path. */
#if __has_include(<hdf5.h>)
#include <hdf5.h>
#else
#include <hdf5/serial/hdf5.h>
#endif

#include "softprompt/checkpoint.h"
#include "softprompt/dataset.h"
#include "softprompt/generate.h"
#include "softprompt/model_init.h"
#include "softprompt/safetensors.h"

/* Creates a fresh temporary directory (mkdtemp under $TMPDIR or /tmp); returns a malloc'd path. */
char *tu_mkdtemp(void);
/* Removes a directory tree (used for the temporary directories above). */
void tu_rmtree(const char *path);
/* Writes len bytes to path, aborting the test on failure. */
void tu_write_file(const char *path, const void *data, size_t len);
/* Reads a whole file; *len receives its size. Returns malloc'd bytes (NUL-terminated). */
char *tu_read_file(const char *path, size_t *len);
/* Path join into a static-free malloc'd string. */
char *tu_path(const char *dir, const char *name);
/* Copies file from to file to (overwriting it). */
void tu_copy_file(const char *from, const char *to);
/* Number of entries of dir (without "." and "..") whose name contains part (NULL: all). */
int tu_count_entries(const char *dir, const char *part);
/* The names in dir for which keep(dir, name) is true, sorted by strcmp; *n receives their
 * count. Free with tu_free_list. */
char **tu_list_dir(const char *dir, int (*keep)(const char *dir, const char *name), int *n);
void tu_free_list(char **list, int n);

/* A Check fixture (tcase_add_checked_fixture(tc, tu_dir_setup, tu_dir_teardown)): tu_dir is a
 * fresh temporary directory during each test. */
extern char *tu_dir;
void tu_dir_setup(void);
void tu_dir_teardown(void);

/* Opens a dataset, failing the test with the reader's message if it does not open. */
sp_dataset *tu_dataset_open_ok(const char *path);

/* HDF5 files made or damaged by hand (as h5py users would). tu_h5_write_dataset creates path
 * holding one dataset name of the given shape and file type; data (mem_type) may be NULL to
 * leave it unwritten. The attribute setters replace (or add) a root attribute of an existing
 * file and return 1 if there was one to replace, else 0: strings fixed-length UTF-8 as
 * softprompt writes them, or variable-length (vlen) as h5py writes str; integers int64. */
void tu_h5_write_dataset(const char *path, const char *name, int rank, const hsize_t *dims,
                         hid_t file_type, hid_t mem_type, const void *data);
int tu_h5_set_str_attr(const char *path, const char *name, const char *value, int vlen);
int tu_h5_set_i64_attr(const char *path, const char *name, int64_t value);

/* Overwrites element `index` (flat, row-major) of F32 tensor `tensor` in the safetensors file
 * path with value, in place (e.g. a NaN in one embedding row of a model made by init-model). */
void tu_st_set_f32(const char *path, const char *tensor, int64_t index, float value);

/* Writes tu_dir/out_name (returned, malloc'd): a copy of path with one byte of object name's
 * header changed ("." is the root group), the first from the header's start that makes HDF5
 * fail the header's metadata checksum. Empties HDF5's free lists first (H5garbage_collect), so
 * that LeakSanitizer sees libhdf5's leak on such files with its own stack (tests/lsan.supp). */
char *tu_damage_header(const char *path, const char *name, const char *out_name);

/* Runs the softprompt CLI with argv (NULL-terminated, without argv[0]); captures stdout and
 * stderr into malloc'd strings (may pass NULL to discard) and returns the exit status
 * (128 + signal number if it was killed). */
int tu_run_cli(const char *const *args, char **out, char **errout);

/* One run of the CLI: its exit status and everything it printed. */
typedef struct tu_cli {
    int rc;
    char *out, *err;
} tu_cli;
tu_cli tu_cli_run(const char *const *args);
void tu_cli_free(tu_cli *r);

/* Fails the test unless hay contains needle (the message shows both). */
void tu_assert_has(const char *hay, const char *needle);

/* Flips the bits of mask in the byte at offset off of file path, in place. */
void tu_flip_byte(const char *path, long off, unsigned char mask);
/* File offset of the bytes of contiguous HDF5 dataset name in path. */
long tu_h5_dataset_offset(const char *path, const char *name);

/* Writes code point cp (< 0x110000, not a surrogate) as UTF-8 at o; returns its 1-4 bytes. */
size_t tu_put_utf8(uint32_t cp, char *o);

/* Runs a Check suite and returns the process exit status (for main). */
int tu_run_suite(Suite *s);
/* A test case of s whose tests each run in a fresh tu_dir (the tu_dir fixture). */
TCase *tu_tcase(Suite *s, const char *name);
/* main() of a test program of one suite and one test case, both called name, running tests
 * (NULL-terminated) each in a fresh tu_dir; setup and teardown (each may be NULL) run inside
 * the tu_dir fixture; the timeout is 300 s, as under ctest. Returns the process exit status. */
int tu_main(const char *name, const TTest *const *tests, void (*setup)(void),
            void (*teardown)(void));

/* ---- models, datasets and prompts (testutil_model.c) ---- */

/* A GPT-2 configuration of the given shape (LayerNorm eps 1e-5, tied head). */
sp_model_config tu_gpt2_config(int n_layer, int d_model, int n_head, int d_ff, int vocab_size,
                               int n_ctx);
/* init-model options of tu_gpt2_config's shape, the defaults otherwise (F32, one file), with
 * seed. */
sp_init_options tu_gpt2_options(int n_layer, int d_model, int n_head, int d_ff, int vocab_size,
                                int n_ctx, uint64_t seed);
/* Writes a random model of options o into tu_dir/name; returns the malloc'd directory. */
char *tu_write_model(const char *name, const sp_init_options *o);
/* A tiny GPT-2 (2 layers, d_model 16, 2 heads, d_ff 64, vocabulary 211 that covers
 * tu_write_cls_set's tokens, context 32) of seed in tu_dir/name; malloc'd. */
char *tu_tiny_gpt2(const char *name, uint64_t seed);
/* Loads the model in dir, failing the test with the loader's message if it does not load. */
void tu_model_load_ok(sp_model *m, const char *dir);

/* A case's generate.json (tests/ref: float64 greedy decoding without a cache): its requests'
 * tokens as sp_gen_requests (4 of them, ids 0..3) and max_new_tokens. */
typedef struct tu_gen_ref {
    json_t *root, *reqs;
    int n, max_new;
    int32_t tok[4][64];
    sp_gen_request rq[4];
} tu_gen_ref;
/* Loads dir/generate.json into r (the test fails on a missing or malformed file). */
void tu_gen_ref_load(tu_gen_ref *r, const char *dir);
/* Request i's greedy ids in out against the reference's, up to the first step whose top-2
 * margin there is at most margin (float32 may then choose either); returns the steps compared.
 * what names the case in the failure message. */
int tu_gen_ref_compare(const tu_gen_ref *r, int i, const sp_gen_result *out, double margin,
                       const char *what);
void tu_gen_ref_free(tu_gen_ref *r);

/* A classification set (classes "neg" and "pos" with verbalizer ids 10 and 20): example i is
 * n_soft soft tokens, then tokens 100 + i + t at positions t up to n_soft + text_min + i %
 * text_mod (exclusive), labelled i % 3 == 0 and classified at its last token. */
typedef struct tu_cls_set {
    int n_soft, n_examples, text_min, text_mod;
    const char *template_spec; /* NULL: "<soft0> ... <softN> {text} It was" */
    int flip_label;            /* 1 + an example whose label is flipped; 0: none */
    int longer;                /* 1 + an example that holds one token more; 0: none */
} tu_cls_set;
/* Writes the set into tu_dir/name (also its source and split); returns the malloc'd path. */
char *tu_write_cls_set(const char *name, const tu_cls_set *s);

/* p[i] = scale * ((7 i) % 13 - 6): distinct, exactly representable values. */
void tu_fill_prompt(float *p, int n, float scale);
/* n values std * N(0, 1) from sp_rng seeded with seed, malloc'd (the caller frees). */
float *tu_random_rows(size_t n, uint64_t seed, float std);
/* A checkpoint at step 12 of an n_prompt-token prompt (tu_fill_prompt, scale 0.01) as wide as
 * the model in model_dir, with its fingerprint and config_json; tu_dir/name, malloc'd. */
char *tu_write_prompt_checkpoint(const char *name, const char *model_dir, int n_prompt,
                                 const char *config_json);
/* A PEFT adapter directory tu_dir/name exported from the model in model_dir (base model
 * "org/base") for an n_prompt-token prompt (tu_fill_prompt, scale 0.02); malloc'd. */
char *tu_write_adapter(const char *name, const char *model_dir, int n_prompt, const char *init,
                       const char *text);

/* sp_prompt_load of path, which must work and give an n_prompt x d prompt. */
sp_prompt_file tu_prompt_load_ok(const char *path, int n_prompt, int d);
/* sp_prompt_load of path must fail with a message naming `names` (the file at fault) and
 * containing want. */
void tu_prompt_load_fails(const char *path, const char *names, const char *want);
/* A new directory tu_dir/to_name (returned, malloc'd) holding copies of the named files
 * (NULL-terminated) of directory from. */
char *tu_copy_files(const char *from, const char *to_name, const char *const *files);
/* A copy of adapter directory from (both files) as tu_dir/to_name; malloc'd. */
char *tu_copy_adapter(const char *from, const char *to_name);
/* Replaces dir/adapter_model.safetensors with the given tensors. */
void tu_write_adapter_tensors(const char *dir, const sp_st_out *t, int n);
/* The adapter's config with key set to value (stolen; json_null() sets null, NULL deletes). */
void tu_edit_adapter_config(const char *dir, const char *key, json_t *value);

/* The JSON in path (duplicate keys refused), failing the test if it does not parse. */
json_t *tu_json_load(const char *path);
/* Rewrites the JSON object in path with key set to value (stolen; NULL deletes the key). */
void tu_json_edit(const char *path, const char *key, json_t *value);

#endif
