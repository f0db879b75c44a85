/* The subcommands of the softprompt executable. Each takes argv starting at its own name
 * (argv[0] == "info"), prints its errors as "softprompt <cmd>: ..." on stderr and returns
 * the process exit status: 0 success, 1 failure (bad input, I/O), 2 usage error. */
#ifndef SP_CLI_COMMANDS_H
#define SP_CLI_COMMANDS_H

#include <stdio.h>

typedef struct sp__command {
    const char *name;
    const char *summary; /* one line for `softprompt help` */
    int (*run)(int argc, char **argv);
    void (*usage)(FILE *out); /* full --help text */
} sp__command;

extern const sp__command SP_CMD_INFO;
extern const sp__command SP_CMD_INIT_MODEL;
extern const sp__command SP_CMD_PREPARE;
extern const sp__command SP_CMD_TRAIN;
extern const sp__command SP_CMD_EVAL;
extern const sp__command SP_CMD_EXPORT;
extern const sp__command SP_CMD_PREDICT;
extern const sp__command SP_CMD_INSPECT;
extern const sp__command SP_CMD_GENERATE;

#endif
