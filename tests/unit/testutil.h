/* Shared helpers for the Check unit tests. */
#ifndef SP_TESTUTIL_H
#define SP_TESTUTIL_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

/* softprompt_core keeps the HDF5 include directory private; Debian's serial headers are under
 * hdf5/serial when it is not on the include path. */
#if __has_include(<hdf5.h>)
#include <hdf5.h>
#else
#include <hdf5/serial/hdf5.h>
#endif

#include "softprompt/dataset.h"

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

/* Writes code point cp (< 0x110000, not a surrogate) as UTF-8 at o; returns its 1-4 bytes. */
size_t tu_put_utf8(uint32_t cp, char *o);

/* Runs a Check suite and returns the process exit status (for main). */
int tu_run_suite(Suite *s);

#endif
