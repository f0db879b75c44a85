/* POSIX helpers for writing files atomically (a temporary in the same directory, fsync, rename,
 * fsync of the directory), shared by the safetensors, dataset and checkpoint writers; and the
 * size caps of the JSON/text files that readers load whole. */
#ifndef SP_IO_FILEUTIL_H
#define SP_IO_FILEUTIL_H

#include <stddef.h>

#include "softprompt/error.h"

/* Writes all len bytes to fd (retrying short writes and EINTR). Returns 0, or -1 with errno
 * set (EIO when write wrote nothing). */
int sp_write_all(int fd, const void *buf, size_t len);

/* Creates path.tmp.XXXXXX next to path, mode 0644 (readable by other ranks and users), and
 * returns its descriptor (close-on-exec) with *tmp = its malloc'd name. Failure: -1, *tmp =
 * NULL, and "<path>: cannot create a temporary file next to it: ..." (or out of memory). */
int sp_temp_beside(const char *path, char **tmp, sp_error *err);

/* fsyncs the directory holding path, making a rename into it durable. Returns 0, or the errno of
 * a failed fsync (some file systems refuse to fsync directories: EINVAL); a directory that
 * cannot be opened counts as 0 (best effort). */
int sp_fsync_parent_dir(const char *path);

/* Largest files the readers load into memory whole (far above any real one, far below what would
 * exhaust a node): config.json and tokenizer_config.json; model.safetensors.index.json;
 * tokenizer.json, vocab.json/encoder.json and merges.txt/vocab.bpe. */
#define SP_MAX_CONFIG_FILE_BYTES ((size_t)16 << 20)
#define SP_MAX_INDEX_FILE_BYTES ((size_t)64 << 20)
#define SP_MAX_TOKENIZER_FILE_BYTES ((size_t)512 << 20)

/* Refuses a regular file larger than max bytes before it is read: -1 and "<path>: <what> of
 * N bytes is larger than the limit of M MiB". Returns 0 otherwise, also when path cannot be
 * stat'ed (opening it then reports why). */
int sp_check_file_size(const char *path, size_t max, const char *what, sp_error *err);

#endif
