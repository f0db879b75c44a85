/* Shared helpers for the Check unit tests. */
#ifndef SP_TESTUTIL_H
#define SP_TESTUTIL_H

#include <check.h>
#include <stddef.h>

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

/* Runs the softprompt CLI with argv (NULL-terminated, without argv[0]); captures stdout and
 * stderr into malloc'd strings (may pass NULL to discard) and returns the exit status
 * (128 + signal number if it was killed). */
int tu_run_cli(const char *const *args, char **out, char **errout);

/* Runs a Check suite and returns the process exit status (for main). */
int tu_run_suite(Suite *s);

#endif
