/* Shared between the HDF5 dataset writer and reader (src/data/dataset_*.c). */
#ifndef SP_DATASET_INTERNAL_H
#define SP_DATASET_INTERNAL_H

#include <hdf5.h>

#include "softprompt/dataset.h"

/* Chunk length (elements) of the growing 1-D datasets: 16 KiB of int32. A random example costs
 * one or two chunk decompressions, so smaller chunks make scattered batch reads cheap; measured
 * on 19M GPT-2-range token ids, 4096 reads a random 32-example batch 7x faster than 16384
 * (0.9 vs 5.8 ms) for 3% more bytes (shuffle+deflate reach ~2x either way). */
#define SP_DS_CHUNK 4096
/* Small fixed arrays (verbalizer, class names) below this many bytes are stored compact. */
#define SP_DS_COMPACT_MAX 32768

/* Turns HDF5's automatic error printing off (the library never prints). */
void sp_ds_h5_quiet(void);

/* Like sp_fail, and appends HDF5's innermost error description when there is one. */
int sp_ds_h5_fail(sp_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Closes an HDF5 identifier of any kind if it is valid (>= 0). */
void sp_ds_h5_close(hid_t id);

#endif
