#include "cli/ranks.h"

#include <stdio.h>

int sp__cli_run_ranks(const char *cmd, int *argc, char ***argv, sp__rank_body body, void *arg) {
    sp_dist d;
    if (sp_dist_init(&d, argc, argv)) {
        fprintf(stderr, "softprompt %s: MPI initialisation failed\n", cmd);
        return 1;
    }
    sp_error err = {0};
    int rc = body(arg, &d, &err);
    if (rc < 0) {
        if (d.size > 1 && !err.all_ranks) {
            fprintf(stderr, "softprompt %s: rank %d: %s\n", cmd, d.rank, err.msg);
            sp_dist_abort(1);
        }
        if (d.rank == 0) fprintf(stderr, "softprompt %s: %s\n", cmd, err.msg);
        rc = 1;
    }
    sp_dist_finalize();
    return rc;
}
