/* Dataset pieces shared by reader and writer: task names, packed batch buffers. */
#include <stdlib.h>
#include <string.h>

#include "data/dataset_internal.h"

const char *sp_task_name(sp_task t) {
    return t == SP_TASK_GENERATION ? "generation" : "classification";
}

/* ------------------------------------------------------------------------------------------ */
/* Packed batches                                                                             */
/* ------------------------------------------------------------------------------------------ */

void sp_batch_data_init(sp_batch_data *b) {
    memset(b, 0, sizeof *b);
}

void sp_batch_data_free(sp_batch_data *b) {
    free(b->seq_start), free(b->tokens), free(b->target_start);
    free(b->target_pos), free(b->target_ids), free(b->labels), free(b->example_ids);
    memset(b, 0, sizeof *b);
}

sp_batch sp_batch_data_view(const sp_batch_data *b) {
    static const int32_t zero = 0;
    sp_batch v = {
        .n_seq = b->n_seq,
        .seq_start = b->seq_start ? b->seq_start : &zero,
        .tokens = b->tokens,
        .n_targets = b->n_targets,
        .target_pos = b->target_pos,
        .target_ids = b->target_ids,
        .source = b->n_seq > 0 ? b->source : NULL,
        .example_ids = b->n_seq > 0 ? b->example_ids : NULL,
    };
    return v;
}

/* Removes soft-token positions from b in place (zero-shot evaluation of the template alone) and
 * shifts target positions accordingly. A target at a soft position moves to the last
 * preceding text position; a sequence made only of soft tokens cannot be evaluated. */
int sp_batch_data_strip_soft(sp_batch_data *b, sp_error *err) {
    int32_t *new_pos = malloc(((size_t)b->seq_start[b->n_seq] + 1) * sizeof *new_pos);
    if (!new_pos) return sp_fail(err, "out of memory");
    int out = 0;
    for (int s = 0; s < b->n_seq; s++) {
        int begin = out;
        for (int t = b->seq_start[s]; t < b->seq_start[s + 1]; t++) {
            new_pos[t] = SP_IS_SOFT(b->tokens[t]) ? out - 1 : out;
            if (!SP_IS_SOFT(b->tokens[t])) b->tokens[out++] = b->tokens[t];
        }
        if (out == begin) {
            free(new_pos);
            return sp_fail(err, "example %lld consists of soft tokens only: no zero-shot input",
                           (long long)b->example_ids[s]);
        }
        for (int j = b->target_start[s]; j < b->target_start[s + 1]; j++) {
            int p = new_pos[b->target_pos[j]];
            b->target_pos[j] = p < begin ? begin : p;
        }
        b->seq_start[s] = begin;
    }
    b->seq_start[b->n_seq] = out;
    free(new_pos);
    return 0;
}
