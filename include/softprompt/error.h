/* Error reporting: every fallible function returns 0 on success or -1 on failure and,
 * on failure, leaves a complete human-readable message (naming the file, tensor or key
 * at fault) in an sp_error supplied by the caller. Nothing in the library prints or exits. */
#ifndef SOFTPROMPT_ERROR_H
#define SOFTPROMPT_ERROR_H

#define SP_ERROR_MAX 1024

typedef struct sp_error {
    char msg[SP_ERROR_MAX];
    /* Every rank of an MPI job failed together (after agreeing on it in a collective), and rank
     * 0's message says why: the front end then reports it once and ends the job normally
     * instead of aborting it from each rank. */
    int all_ranks;
} sp_error;

/* Formats the message into err (if non-NULL) and returns -1, so callers can write
 * `return sp_fail(err, "...", ...);`. Clears all_ranks. */
int sp_fail(sp_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Marks err as a failure of every rank (see all_ranks); returns -1. */
int sp_fail_all_ranks(sp_error *err);

/* Prepends "prefix: " to an existing message (e.g. a file name to a parser error). */
int sp_fail_prefix(sp_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
