#include <assert.h>
#include <stdlib.h>

#include "train/internal.h"

int sp__data_order_init(sp__data_order *o, int64_t n_examples, uint64_t seed, sp_error *err) {
    if (n_examples <= 0) return sp_fail(err, "the training dataset has no examples");
    o->n_examples = n_examples, o->seed = seed, o->epoch = 0, o->position = 0;
    o->perm_epoch = -1;
    o->perm = malloc((size_t)n_examples * sizeof *o->perm);
    return o->perm ? 0
                   : sp_fail(err, "out of memory for the order of %lld examples",
                             (long long)n_examples);
}

void sp__data_order_free(sp__data_order *o) {
    free(o->perm);
    o->perm = NULL;
}

/* Fisher-Yates with an RNG seeded by (seed, epoch) only. */
static void shuffle_epoch(sp__data_order *o) {
    sp_rng r;
    sp_rng_seed(&r, o->seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(o->epoch + 1)));
    for (int64_t i = 0; i < o->n_examples; i++) o->perm[i] = i;
    for (int64_t i = o->n_examples - 1; i > 0; i--) {
        int64_t j = (int64_t)sp_rng_below(&r, (uint64_t)i + 1);
        int64_t t = o->perm[i];
        o->perm[i] = o->perm[j], o->perm[j] = t;
    }
    o->perm_epoch = o->epoch;
}

void sp__data_order_next(sp__data_order *o, int64_t *ids, int count) {
    /* restored positions are checked against the set (sp_checkpoint_check_resume_state) */
    assert(o->perm && o->position >= 0 && o->position <= o->n_examples && count >= 0);
    for (int k = 0; k < count; k++) {
        if (o->position == o->n_examples) o->epoch++, o->position = 0;
        if (o->perm_epoch != o->epoch) shuffle_epoch(o);
        ids[k] = o->perm[o->position++];
    }
}
