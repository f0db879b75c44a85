/* Rewrites one counter of a checkpoint with a valid checksum, as a hostile or buggy writer
 * could (integration tests of what the trainer validates beyond the checksum):
 *   sp_ckpt_edit FILE.h5 FIELD VALUE     FIELD: step, epoch, epoch_position, tokens_seen,
 *                                        optim_step, best_step
 *   sp_ckpt_edit FILE.h5 prefix DELTA    adds DELTA to the first value of dataset "prefix" */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "softprompt/checkpoint.h"

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s FILE.h5 FIELD VALUE\n", argv[0]);
        return 2;
    }
    sp_checkpoint c;
    sp_error err;
    if (sp_checkpoint_read(argv[1], &c, &err)) return fprintf(stderr, "%s\n", err.msg), 1;
    if (strcmp(argv[2], "prefix") == 0) {
        int found = 0;
        for (int i = 0; i < c.n_tensors; i++)
            if (strcmp(c.tensors[i].name, "prefix") == 0)
                c.tensors[i].data[0] += (float)atof(argv[3]), found = 1;
        if (!found) return fprintf(stderr, "%s: no prefix\n", argv[1]), 1;
        int rc = sp_checkpoint_write(argv[1], &c, &err);
        if (rc) fprintf(stderr, "%s\n", err.msg);
        sp_checkpoint_free(&c);
        return rc ? 1 : 0;
    }
    static const char *const names[] = {"step",        "epoch",      "epoch_position",
                                        "tokens_seen", "optim_step", "best_step"};
    int64_t *fields[] = {&c.step,        &c.epoch,      &c.epoch_position,
                         &c.tokens_seen, &c.optim_step, &c.best_step};
    int k = 0;
    while (k < 6 && strcmp(argv[2], names[k]) != 0) k++;
    if (k == 6) return fprintf(stderr, "unknown field %s\n", argv[2]), 2;
    *fields[k] = strtoll(argv[3], NULL, 10);
    int rc = sp_checkpoint_write(argv[1], &c, &err);
    if (rc) fprintf(stderr, "%s\n", err.msg);
    sp_checkpoint_free(&c);
    return rc ? 1 : 0;
}
