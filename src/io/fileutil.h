/* Writing files atomically, the one way every writer here does it (safetensors, datasets,
 * checkpoints, adapters, configs, metrics): write a temporary beside the target (sp__temp_beside),
 * then sp__commit it: fsync, close, rename over the target, fsync the directory. And the size caps
 * of the JSON/text files that readers load whole. */
#ifndef SP_IO_FILEUTIL_H
#define SP_IO_FILEUTIL_H

#include <stddef.h>

#include "softprompt/error.h"

/* Writes all len bytes to fd (retrying short writes and EINTR). Returns 0, or -1 with errno
 * set (EIO when write wrote nothing). */
int sp__write_all(int fd, const void *buf, size_t len);

/* Creates path.tmp.XXXXXX next to path, mode 0644 (readable by other ranks and users), and
 * returns its descriptor (close-on-exec) with *tmp = its malloc'd name. Failure: -1, *tmp =
 * NULL, and "<path>: cannot create a temporary file next to it: ..." (or out of memory). */
int sp__temp_beside(const char *path, char **tmp, sp_error *err);

/* fsyncs the directory holding path, making a rename into it durable. Returns 0, or the errno of
 * a failed fsync (some file systems refuse to fsync directories: EINVAL); a directory that
 * cannot be opened counts as 0 (best effort). */
int sp__fsync_parent_dir(const char *path);

/* sp__commit's result when path holds the new file but its directory could not be synced. */
#define SP_COMMIT_UNSYNCED 1

/* Publishes the finished temporary tmp as path: fsyncs and closes fd (the temporary's descriptor;
 * -1: the file is closed already, as HDF5 leaves it, and is opened here to be synced), renames tmp
 * over path, and fsyncs path's directory so that the rename survives a crash.
 *
 * The policy on a failed directory fsync, the same for every writer: an error other than EIO
 * means the file system does not sync directories (EINVAL on some) and is accepted; EIO is an
 * error. Returns
 *   0                   path is the new file, durably;
 *   -1                  something before the rename failed (err names path, the temporary and
 *                       the system error): the temporary is removed and path is as it was;
 *   SP_COMMIT_UNSYNCED  the directory fsync failed with EIO: path is the new file, complete and
 *                       synced, but a crash may undo the rename; err says "written, but syncing
 *                       directory D failed". A writer that promises all or nothing removes it.
 * fd is closed in every case; tmp (the name) stays the caller's to free. */
int sp__commit(int fd, const char *tmp, const char *path, sp_error *err);

/* Writes len bytes to path atomically (sp__temp_beside, write, sp__commit): for whole files built
 * in memory (checkpoint images, config.json, model.safetensors.index.json, adapter_config.json,
 * metrics.jsonl). Returns 0, or -1 with err set (also for SP_COMMIT_UNSYNCED, path then holding
 * the new file). */
int sp__write_file_atomic(const char *path, const void *data, size_t len, sp_error *err);

/* Largest files the readers load into memory whole (far above any real one, far below what would
 * exhaust a node): config.json and tokenizer_config.json; model.safetensors.index.json;
 * tokenizer.json, vocab.json/encoder.json and merges.txt/vocab.bpe. */
#define SP_MAX_CONFIG_FILE_BYTES ((size_t)16 << 20)
#define SP_MAX_INDEX_FILE_BYTES ((size_t)64 << 20)
#define SP_MAX_TOKENIZER_FILE_BYTES ((size_t)512 << 20)

/* Refuses a regular file larger than max bytes before it is read: -1 and "<path>: <what> of
 * N bytes is larger than the limit of M MiB". Returns 0 otherwise, also when path cannot be
 * stat'ed (opening it then reports why). */
int sp__check_file_size(const char *path, size_t max, const char *what, sp_error *err);

#endif
