/* Shared between the HDF5 dataset writer and reader (src/data/dataset_*.c). */
#ifndef SP_DATASET_INTERNAL_H
#define SP_DATASET_INTERNAL_H

#include "io/h5util.h"
#include "softprompt/dataset.h"

/* Chunk length (elements) of the growing 1-D datasets: 16 KiB of int32. A random example costs
 * one or two chunk decompressions, so smaller chunks make scattered batch reads cheap; measured
 * on 19M GPT-2-range token ids, 4096 reads a random 32-example batch 7x faster than 16384
 * (0.9 vs 5.8 ms) for 3% more bytes (shuffle+deflate reach ~2x either way). */
#define SP_DS_CHUNK 4096
/* Small fixed arrays (verbalizer, class names) below this many bytes are stored compact. */
#define SP_DS_COMPACT_MAX 32768

/* One requested batch slot; sorted by example id to build the file selection. */
typedef struct slot {
    int64_t id;
    int seq;    /* position in the request */
    int unique; /* index among the distinct examples, in file order */
} slot;

/* An open dataset (reader: dataset_read.c; checks against a model: dataset_check.c). */
struct sp_dataset {
    char *path;
    hid_t file, d_tokens, d_tpos, d_tids;
    sp_dataset_meta meta;
    char *strings[8];    /* owned copies of the string attributes (meta points here) */
    int64_t *offsets;    /* [n_examples + 1] */
    int64_t *toffsets;   /* [n_examples + 1] */
    int32_t *labels;     /* [n_examples] or NULL */
    int32_t *verbalizer; /* [n_classes] */
    char **class_names;  /* [n_classes] */
    int32_t *scratch;    /* file-order staging for one batch read */
    size_t cap_scratch;
    struct slot *order; /* batch ids sorted by example */
    size_t cap_order;
};

/* Reads elements [start, start + len) of 1-D int32 dataset d (/name) into dst; what says whose
 * elements they are in a message ("examples 3-7"). 0 or -1. */
int sp__ds_read_block(const sp_dataset *ds, hid_t d, const char *name, int64_t start, int64_t len,
                      int32_t *dst, const char *what, sp_error *err);

#endif
