/* Parsing of command-line values shared by the subcommands. Each reports a bad value as
 * "softprompt <cmd>: <flag> '<value>': expected <what>" on stderr and returns 2 (the usage-error
 * exit status), or returns 0 and stores the value. */
#ifndef SP_CLI_FLAGS_H
#define SP_CLI_FLAGS_H

#include <stdint.h>

int sp_flag_int(const char *cmd, const char *flag, const char *s, long lo, long hi, int *out);
int sp_flag_int64(const char *cmd, const char *flag, const char *s, int64_t lo, int64_t hi,
                  int64_t *out);
int sp_flag_u64(const char *cmd, const char *flag, const char *s, uint64_t *out);
/* A finite number in [lo, hi]. */
int sp_flag_double(const char *cmd, const char *flag, const char *s, double lo, double hi,
                   double *out);
/* Reports an invalid value with a free-form expectation; returns 2. */
int sp_flag_bad(const char *cmd, const char *flag, const char *value, const char *expected);

#endif
