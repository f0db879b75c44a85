/* Large working buffers (activations, kernel scratch) on transparent huge pages where the
 * kernel offers them: sp__big_alloc returns bytes aligned to 2 MiB (64 for small sizes) with
 * madvise(MADV_HUGEPAGE) asked for, so that streaming over hundreds of MiB of activations does
 * not miss the TLB every 4 KiB (and faults once per 2 MiB instead of per page when first
 * touched). Under THP "madvise" (Debian's default) nothing else would use huge pages here.
 * Free with free(); NULL when out of memory. */
#ifndef SP_UTIL_BIGALLOC_H
#define SP_UTIL_BIGALLOC_H

#include <stddef.h>

void *sp__big_alloc(size_t bytes);

#endif
