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
