/* softprompt: prompt tuning of frozen language models on CPU clusters.
 * Git-style front end: `softprompt <command> [options]`, `softprompt help [command]`. */
#include <hdf5.h>
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/flags.h"

static const sp__command *const COMMANDS[] = {
    &SP_CMD_INFO,    &SP_CMD_INIT_MODEL, &SP_CMD_PREPARE, &SP_CMD_TRAIN,  &SP_CMD_EVAL,
    &SP_CMD_PREDICT, &SP_CMD_GENERATE,   &SP_CMD_INSPECT, &SP_CMD_EXPORT,
};
#define N_COMMANDS (sizeof COMMANDS / sizeof COMMANDS[0])

static void print_overview(FILE *out) {
    fprintf(out, "usage: softprompt <command> [options]\n\n"
                 "Prompt tuning of frozen Hugging Face language models on CPU clusters.\n\n"
                 "commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-12s %s\n", COMMANDS[i]->name, COMMANDS[i]->summary);
    fprintf(out, "  %-12s %s\n\n", "help",
            "show this overview, or `help <command>` for one command");
    fprintf(out, "Run `softprompt <command> --help` for a command's options.\n");
}

static const sp__command *find_command(const char *name) {
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(COMMANDS[i]->name, name) == 0) return COMMANDS[i];
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        print_overview(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (strcmp(name, "help") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
        if (argc > 2) {
            const sp__command *c = find_command(argv[2]);
            if (!c) {
                fprintf(stderr, "softprompt: unknown command '%s' (see `softprompt help`)\n",
                        argv[2]);
                return 2;
            }
            c->usage(stdout);
            return 0;
        }
        print_overview(stdout);
        return 0;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
        printf("softprompt %s\n", SP_VERSION);
        return 0;
    }
    const sp__command *c = find_command(name);
    if (!c) {
        fprintf(stderr, "softprompt: unknown command '%s' (see `softprompt help`)\n", name);
        return 2;
    }
    if (sp__flags_wants_help(argc - 1, argv + 1)) {
        c->usage(stdout);
        return 0;
    }
    /* HDF5 1.10's exit handler crashes (H5F__close_cb) on a file whose H5Fclose failed, e.g.
     * when the disk filled up while a dataset was flushed. Every module closes its files itself,
     * so the handler has nothing to do; without it such a run exits with its own message. */
    H5dont_atexit();
    return c->run(argc - 1, argv + 1);
}
