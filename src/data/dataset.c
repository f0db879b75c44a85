/* HDF5 dataset pieces shared by reader and writer: task names, HDF5 error text, packed
 * batch buffers. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/dataset_internal.h"

const char *sp_task_name(sp_task t) {
    return t == SP_TASK_GENERATION ? "generation" : "classification";
}

void sp_ds_h5_quiet(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

/* H5Ewalk2 callback keeping the innermost (first, walking upward) description. */
static herr_t keep_innermost(unsigned n, const H5E_error2_t *e, void *data) {
    if (n == 0 && e->desc) snprintf(data, SP_ERROR_MAX / 2, "%s", e->desc);
    return 0;
}

int sp_ds_h5_fail(sp_error *err, const char *fmt, ...) {
    if (!err) return -1;
    char detail[SP_ERROR_MAX / 2] = "";
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, keep_innermost, detail);
    H5Eclear2(H5E_DEFAULT);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    size_t n = strlen(err->msg);
    if (detail[0] && n + 16 < sizeof err->msg)
        snprintf(err->msg + n, sizeof err->msg - n, " (HDF5: %s)", detail);
    return -1;
}

void sp_ds_h5_close(hid_t id) {
    if (id < 0) return;
    switch (H5Iget_type(id)) {
    case H5I_FILE:
        H5Fclose(id);
        break;
    case H5I_GROUP:
        H5Gclose(id);
        break;
    case H5I_DATATYPE:
        H5Tclose(id);
        break;
    case H5I_DATASPACE:
        H5Sclose(id);
        break;
    case H5I_DATASET:
        H5Dclose(id);
        break;
    case H5I_ATTR:
        H5Aclose(id);
        break;
    case H5I_GENPROP_LST:
        H5Pclose(id);
        break;
    default:
        break;
    }
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
    };
    return v;
}
