/* The trainer's data order (src/train/data_order.c): every epoch a permutation drawn from
 * (seed, epoch) alone, global batches that run past the end of an epoch continuing with the
 * next epoch's permutation, and any later batch recomputed from (epoch, position) alone, as a
 * resumed run does. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "train/internal.h"

static void order_init(sp__data_order *o, int64_t n, uint64_t seed) {
    sp_error err = {0};
    ck_assert_msg(sp__data_order_init(o, n, seed, &err) == 0, "%s", err.msg);
}

/* The first total ids of the order (n, seed), taken in batches of batch. */
static int64_t *take(int64_t n, uint64_t seed, int batch, int total) {
    sp__data_order o;
    order_init(&o, n, seed);
    int64_t *ids = malloc((size_t)(total + batch) * sizeof *ids);
    for (int at = 0; at < total; at += batch) sp__data_order_next(&o, ids + at, batch);
    sp__data_order_free(&o);
    return ids;
}

/* ids[0..n) holds every example of 0..n once. */
static void assert_permutation(const int64_t *ids, int64_t n, int epoch) {
    char *seen = calloc((size_t)n, 1);
    for (int64_t i = 0; i < n; i++) {
        ck_assert_msg(ids[i] >= 0 && ids[i] < n, "epoch %d: id %lld out of range", epoch,
                      (long long)ids[i]);
        ck_assert_msg(!seen[ids[i]], "epoch %d: example %lld twice", epoch, (long long)ids[i]);
        seen[ids[i]] = 1;
    }
    free(seen);
}

START_TEST(every_epoch_is_a_permutation) {
    enum { N = 37, EPOCHS = 6 };
    int64_t *ids = take(N, 5, 1, N * EPOCHS);
    for (int e = 0; e < EPOCHS; e++) {
        assert_permutation(ids + e * N, N, e);
        int identity = 1;
        for (int i = 0; i < N; i++) identity &= ids[e * N + i] == i;
        ck_assert_msg(!identity, "epoch %d is not shuffled", e);
        if (e > 0)
            ck_assert_msg(memcmp(ids + e * N, ids + (e - 1) * N, N * sizeof *ids) != 0,
                          "epochs %d and %d visit the examples in the same order", e - 1, e);
    }
    free(ids);
    /* One example: always it. */
    ids = take(1, 5, 3, 9);
    for (int i = 0; i < 9; i++) ck_assert_int_eq(ids[i], 0);
    free(ids);
}
END_TEST

/* The order is a function of (seed, epoch): the batch size does not change it, the seed does. */
START_TEST(order_depends_on_seed_and_epoch_only) {
    enum { N = 20, TOTAL = 84 };
    int64_t *a = take(N, 11, 3, TOTAL), *b = take(N, 11, 7, TOTAL), *c = take(N, 12, 3, TOTAL);
    ck_assert(memcmp(a, b, TOTAL * sizeof *a) == 0);
    ck_assert(memcmp(a, c, N * sizeof *a) != 0);
    free(a), free(b), free(c);
}
END_TEST

/* A global batch that runs past the end of an epoch continues with the next epoch's first
 * examples; the epoch advances lazily, when the next example is taken. */
START_TEST(batch_crossing_an_epoch) {
    enum { N = 10 };
    int64_t *whole = take(N, 3, 1, 2 * N); /* epochs 0 and 1 one by one */
    sp__data_order o;
    order_init(&o, N, 3);
    int64_t ids[4];
    sp__data_order_next(&o, ids, 4);
    sp__data_order_next(&o, ids, 4);
    ck_assert_int_eq(o.epoch, 0);
    ck_assert_int_eq(o.position, 8);
    sp__data_order_next(&o, ids, 4);
    ck_assert(memcmp(ids, whole + 8, 4 * sizeof *ids) == 0); /* 2 of epoch 0, 2 of epoch 1 */
    ck_assert_int_eq(o.epoch, 1);
    ck_assert_int_eq(o.position, 2);
    sp__data_order_free(&o);

    order_init(&o, N, 3);
    for (int k = 0; k < 5; k++) sp__data_order_next(&o, ids, 2);
    ck_assert_int_eq(o.epoch, 0); /* the whole epoch taken, the next not begun */
    ck_assert_int_eq(o.position, N);
    sp__data_order_next(&o, ids, 1);
    ck_assert_int_eq(o.epoch, 1);
    ck_assert_int_eq(o.position, 1);
    ck_assert_int_eq(ids[0], whole[N]);
    sp__data_order_free(&o);
    free(whole);
}
END_TEST

/* A resumed trainer sets (epoch, position) from the checkpoint on a fresh order (trainer.c):
 * from any state, also mid-batch across epochs and at the lazy epoch boundary, the following
 * batches are the uninterrupted run's. */
START_TEST(resume_recomputes_from_epoch_and_position) {
    enum { N = 20, G = 3, STEPS = 30 };
    int64_t *run = take(N, 11, G, STEPS * G);
    for (int step = 0; step < STEPS; step++) {
        sp__data_order a;
        order_init(&a, N, 11);
        int64_t ids[G];
        for (int s = 0; s < step; s++) sp__data_order_next(&a, ids, G);
        sp__data_order b;
        order_init(&b, N, 11);
        b.epoch = a.epoch, b.position = a.position;
        for (int s = step; s < STEPS; s++) {
            sp__data_order_next(&b, ids, G);
            ck_assert_msg(memcmp(ids, run + s * G, sizeof ids) == 0,
                          "resumed at step %d (epoch %lld, position %lld): step %d differs", step,
                          (long long)a.epoch, (long long)a.position, s);
        }
        sp__data_order_free(&a), sp__data_order_free(&b);
    }
    free(run);
}
END_TEST

/* The permutations themselves are part of the checkpoint format: a checkpoint records only
 * (epoch, position), and resuming it (and the resume checks, which replay the order to
 * recompute tokens_seen) must draw the same examples as the build that wrote it. */
START_TEST(order_is_pinned) {
    static const int64_t want[20] = {3, 6, 8, 2, 9, 0, 5, 4, 7, 1,  /* epoch 0 */
                                     3, 2, 7, 6, 9, 5, 1, 4, 8, 0}; /* epoch 1 */
    int64_t *ids = take(10, 11, 4, 20);
    for (int i = 0; i < 20; i++)
        ck_assert_msg(ids[i] == want[i], "example %d of seed 11 is %lld, expected %lld", i,
                      (long long)ids[i], (long long)want[i]);
    free(ids);
}
END_TEST

START_TEST(empty_dataset_refused) {
    sp__data_order o;
    sp_error err = {0};
    ck_assert_int_eq(sp__data_order_init(&o, 0, 1, &err), -1);
    ck_assert_str_eq(err.msg, "the training dataset has no examples");
    ck_assert_int_eq(sp__data_order_init(&o, -4, 1, &err), -1);
    order_init(&o, 3, 1);
    sp__data_order_free(&o);
    ck_assert_ptr_null(o.perm);
    sp__data_order_free(&o); /* again: harmless */
}
END_TEST

int main(void) {
    const TTest *tests[] = {every_epoch_is_a_permutation,
                            order_depends_on_seed_and_epoch_only,
                            batch_crossing_an_epoch,
                            resume_recomputes_from_epoch_and_position,
                            order_is_pinned,
                            empty_dataset_refused,
                            NULL};
    return tu_main("data_order", tests, NULL, NULL);
}
