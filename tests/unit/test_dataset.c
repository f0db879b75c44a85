/* HDF5 datasets: write -> read round trips (classification and generation, soft tokens,
 * several targets, arbitrary batch subsets), atomic writing (abort, refusal to overwrite), the
 * h5py example script, and refusal of corrupted files built with the HDF5 API. */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "softprompt/checkpoint.h"
#include "softprompt/dataset.h"
#include "testutil.h"

/* tests/fixtures/../.. is the repository (for scripts/examples). */
#define SP_REPO_DIR SP_FIXTURES_DIR "/../.."
#define PYTHON "/usr/bin/python3"

extern char **environ;

static const int32_t VERB[2] = {100, 200};
static const char *const CLASS_NAMES[2] = {"negative", "positive \xE2\x9C\x93"};

static sp_dataset_meta meta_for(sp_task task) {
    sp_dataset_meta m = {0};
    m.task = task;
    m.n_soft = 3;
    m.max_length = 64;
    m.seed = 0xFEEDFACECAFEBEEFull;
    m.tokenizer_hash = "sha256:abc";
    m.template_spec = "<soft0> {text} <soft1> <soft2> It was";
    m.target_spec = "{label}";
    m.source = "train.jsonl";
    m.split = "train";
    m.created_by = "softprompt test";
    if (task == SP_TASK_CLASSIFICATION) {
        m.n_classes = 2;
        m.verbalizer = VERB;
        m.class_names = CLASS_NAMES;
        m.verbalizer_spec = "0: terrible, 1: great";
    }
    return m;
}

/* Deterministic example i: length 4..(4+span-1), soft slots at positions 0, 2 and 3, other
 * tokens 1000*i + t. Classification: one target at the last position (label i % 2);
 * generation: targets at every other position from 1, id 7*i + t. */
typedef struct example {
    int32_t tok[64], pos[64], ids[64];
    int n_tok, n_tgt, label;
} example;

static void make_example(example *e, sp_task task, int64_t i, int span) {
    e->n_tok = 4 + (int)((i * 7) % span);
    for (int t = 0; t < e->n_tok; t++) e->tok[t] = (int32_t)(1000 * i + t);
    e->tok[0] = SP_SOFT(0), e->tok[2] = SP_SOFT(1), e->tok[3] = SP_SOFT(2);
    e->label = task == SP_TASK_CLASSIFICATION ? (int)(i % 2) : -1;
    e->n_tgt = 0;
    if (task == SP_TASK_CLASSIFICATION) {
        e->pos[0] = e->n_tok - 1, e->ids[0] = VERB[e->label], e->n_tgt = 1;
        return;
    }
    for (int t = 1; t < e->n_tok; t += 2)
        e->pos[e->n_tgt] = t, e->ids[e->n_tgt++] = (int32_t)(7 * i + t);
}

static char *write_dataset(const char *name, sp_task task, int64_t n, int span) {
    char *path = tu_path(tu_dir, name);
    sp_dataset_meta m = meta_for(task);
    sp_error err = {0};
    sp_dataset_writer *w = sp_dataset_writer_open(path, &m, 0, &err);
    ck_assert_msg(w != NULL, "%s", err.msg);
    example e;
    for (int64_t i = 0; i < n; i++) {
        make_example(&e, task, i, span);
        ck_assert_msg(
            sp_dataset_writer_add(w, e.tok, e.n_tok, e.pos, e.ids, e.n_tgt, e.label, &err) == 0,
            "%s", err.msg);
    }
    sp_dataset_writer_set_truncated(w, 5);
    ck_assert_msg(sp_dataset_writer_close(w, &err) == 0, "%s", err.msg);
    return path;
}

/* Checks that b holds exactly examples ids[0..n) in the engine's packed layout. */
static void check_batch(const sp_batch_data *b, sp_task task, const int64_t *ids, int n, int span) {
    ck_assert_int_eq(b->n_seq, n);
    sp_batch v = sp_batch_data_view(b);
    ck_assert_int_eq(v.n_seq, n);
    ck_assert_int_eq(v.seq_start[0], 0);
    int tgt = 0;
    example e;
    for (int s = 0; s < n; s++) {
        make_example(&e, task, ids[s], span);
        int32_t start = v.seq_start[s];
        ck_assert_int_eq(v.seq_start[s + 1] - start, e.n_tok);
        ck_assert_mem_eq(v.tokens + start, e.tok, (size_t)e.n_tok * sizeof(int32_t));
        ck_assert_int_eq(b->target_start[s], tgt);
        for (int j = 0; j < e.n_tgt; j++, tgt++) {
            ck_assert_int_eq(v.target_pos[tgt], start + e.pos[j]);
            ck_assert_int_eq(v.target_ids[tgt], e.ids[j]);
        }
        ck_assert_int_eq(b->labels[s], e.label);
        ck_assert_int_eq(b->example_ids[s], ids[s]);
    }
    ck_assert_int_eq(v.n_targets, tgt);
    ck_assert_int_eq(b->target_start[n], tgt);
}

/* ------------------------------------------------------------------------------------------ */
/* Round trips                                                                                */
/* ------------------------------------------------------------------------------------------ */

START_TEST(classification_round_trip) {
    char *path = write_dataset("cls.h5", SP_TASK_CLASSIFICATION, 50, 11);
    sp_dataset *ds = tu_dataset_open_ok(path);
    const sp_dataset_meta *m = sp_dataset_get_meta(ds);
    ck_assert_int_eq(m->task, SP_TASK_CLASSIFICATION);
    ck_assert_int_eq(m->n_examples, 50);
    ck_assert_int_eq(m->n_targets, 50);
    ck_assert_int_eq(m->n_soft, 3);
    ck_assert_int_eq(m->n_classes, 2);
    ck_assert_int_eq(m->max_length, 64);
    ck_assert_int_eq(m->n_truncated, 5);
    ck_assert(m->seed == 0xFEEDFACECAFEBEEFull);
    ck_assert_int_eq(m->verbalizer[0], 100);
    ck_assert_int_eq(m->verbalizer[1], 200);
    ck_assert_str_eq(m->class_names[1], "positive \xE2\x9C\x93");
    ck_assert_str_eq(m->tokenizer_hash, "sha256:abc");
    ck_assert_str_eq(m->template_spec, "<soft0> {text} <soft1> <soft2> It was");
    ck_assert_str_eq(m->target_spec, "{label}");
    ck_assert_str_eq(m->verbalizer_spec, "0: terrible, 1: great");
    ck_assert_str_eq(m->source, "train.jsonl");
    ck_assert_str_eq(m->split, "train");
    ck_assert_str_eq(m->created_by, "softprompt test");
    int64_t total = 0;
    example e;
    for (int64_t i = 0; i < 50; i++) {
        make_example(&e, SP_TASK_CLASSIFICATION, i, 11);
        ck_assert_int_eq(sp_dataset_example_length(ds, i), e.n_tok);
        ck_assert_int_eq(sp_dataset_example_targets(ds, i), 1);
        ck_assert_int_eq(sp_dataset_offsets(ds)[i], total);
        ck_assert_int_eq(sp_dataset_labels(ds)[i], i % 2);
        total += e.n_tok;
    }
    ck_assert_int_eq(m->n_tokens, total);
    /* Arbitrary order, a repeat, a run of adjacent examples, the first and last. */
    const int64_t ids[] = {7, 3, 3, 49, 0, 1, 2, 20, 21};
    sp_batch_data b;
    sp_batch_data_init(&b);
    sp_error err = {0};
    ck_assert_msg(sp_dataset_read_batch(ds, ids, 9, &b, &err) == 0, "%s", err.msg);
    check_batch(&b, SP_TASK_CLASSIFICATION, ids, 9, 11);
    /* The buffers are reused for a smaller batch, and an empty batch is fine. */
    ck_assert_int_eq(sp_dataset_read_batch(ds, ids + 4, 2, &b, &err), 0);
    check_batch(&b, SP_TASK_CLASSIFICATION, ids + 4, 2, 11);
    ck_assert_int_eq(sp_dataset_read_batch(ds, ids, 0, &b, &err), 0);
    ck_assert_int_eq(b.n_seq, 0);
    ck_assert_int_eq(sp_batch_data_view(&b).seq_start[0], 0);
    const int64_t bad[] = {2, 50};
    ck_assert_int_eq(sp_dataset_read_batch(ds, bad, 2, &b, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "cls.h5: example 50 requested, but the dataset has 50"));
    sp_batch_data_free(&b);
    sp_dataset_close(ds);
    free(path);
}
END_TEST

/* Enough tokens (> 1 Mi) that the writer flushes whole chunks several times. */
START_TEST(generation_round_trip_random_batches) {
    const int64_t n = 40000;
    const int span = 57;
    char *path = write_dataset("gen.h5", SP_TASK_GENERATION, n, span);
    sp_dataset *ds = tu_dataset_open_ok(path);
    const sp_dataset_meta *m = sp_dataset_get_meta(ds);
    ck_assert_int_eq(m->task, SP_TASK_GENERATION);
    ck_assert_int_eq(m->n_classes, 0);
    ck_assert_ptr_null(sp_dataset_labels(ds));
    ck_assert_int_gt(m->n_tokens, 1 << 20);
    sp_batch_data b = {0};
    sp_error err = {0};
    int64_t ids[64];
    uint64_t x = 12345;
    for (int round = 0; round < 30; round++) {
        int k = 1 + round * 2;
        for (int s = 0; s < k; s++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            ids[s] = (int64_t)((x >> 33) % (uint64_t)n);
        }
        ck_assert_msg(sp_dataset_read_batch(ds, ids, k, &b, &err) == 0, "%s", err.msg);
        check_batch(&b, SP_TASK_GENERATION, ids, k, span);
    }
    /* A contiguous range across chunk boundaries, read back to front. */
    for (int s = 0; s < 64; s++) ids[s] = 20063 - s;
    ck_assert_msg(sp_dataset_read_batch(ds, ids, 64, &b, &err) == 0, "%s", err.msg);
    check_batch(&b, SP_TASK_GENERATION, ids, 64, span);
    sp_batch_data_free(&b);
    sp_dataset_close(ds);
    free(path);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* Atomic writing                                                                             */
/* ------------------------------------------------------------------------------------------ */

START_TEST(abort_leaves_nothing) {
    char *path = tu_path(tu_dir, "aborted.h5");
    sp_dataset_meta m = meta_for(SP_TASK_CLASSIFICATION);
    sp_error err = {0};
    sp_dataset_writer *w = sp_dataset_writer_open(path, &m, 0, &err);
    ck_assert_msg(w != NULL, "%s", err.msg);
    ck_assert_int_eq(tu_count_entries(tu_dir, NULL), 1); /* the temporary file */
    example e;
    for (int i = 0; i < 10; i++) {
        make_example(&e, SP_TASK_CLASSIFICATION, i, 11);
        ck_assert_int_eq(sp_dataset_writer_add(w, e.tok, e.n_tok, e.pos, e.ids, 1, e.label, &err),
                         0);
    }
    sp_dataset_writer_abort(w);
    ck_assert_int_ne(access(path, F_OK), 0);
    ck_assert_int_eq(tu_count_entries(tu_dir, NULL), 0);
    free(path);
}
END_TEST

START_TEST(existing_output_needs_force) {
    char *path = write_dataset("out.h5", SP_TASK_CLASSIFICATION, 3, 11);
    sp_dataset_meta m = meta_for(SP_TASK_GENERATION);
    sp_error err = {0};
    ck_assert_ptr_null(sp_dataset_writer_open(path, &m, 0, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "out.h5: already exists (use --force"));
    sp_dataset_writer *w = sp_dataset_writer_open(path, &m, 1, &err);
    ck_assert_msg(w != NULL, "%s", err.msg);
    example e;
    make_example(&e, SP_TASK_GENERATION, 4, 11);
    ck_assert_int_eq(sp_dataset_writer_add(w, e.tok, e.n_tok, e.pos, e.ids, e.n_tgt, -1, &err), 0);
    ck_assert_msg(sp_dataset_writer_close(w, &err) == 0, "%s", err.msg);
    sp_dataset *ds = tu_dataset_open_ok(path);
    ck_assert_int_eq(sp_dataset_get_meta(ds)->task, SP_TASK_GENERATION);
    ck_assert_int_eq(sp_dataset_n_examples(ds), 1);
    sp_dataset_close(ds);
    ck_assert_int_eq(tu_count_entries(tu_dir, NULL), 1);
    free(path);
}
END_TEST

/* The writer refuses examples the reader would refuse, naming the example. */
START_TEST(writer_rejects_bad_examples) {
    char *path = tu_path(tu_dir, "w.h5");
    sp_dataset_meta m = meta_for(SP_TASK_CLASSIFICATION);
    sp_error err = {0};
    sp_dataset_writer *w = sp_dataset_writer_open(path, &m, 0, &err);
    ck_assert_msg(w != NULL, "%s", err.msg);
    int32_t tok[3] = {SP_SOFT(0), 5, 6}, pos[1] = {2}, ids[1] = {200};
    ck_assert_int_eq(sp_dataset_writer_add(w, tok, 3, pos, ids, 1, 1, &err), 0);
    tok[1] = SP_SOFT(3);
    ck_assert_int_eq(sp_dataset_writer_add(w, tok, 3, pos, ids, 1, 1, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "example 1 position 1: soft slot 3 but n_soft is 3"));
    tok[1] = 5, pos[0] = 3;
    ck_assert_int_eq(sp_dataset_writer_add(w, tok, 3, pos, ids, 1, 1, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "example 1: target 0 at position 3"));
    pos[0] = 2;
    ck_assert_int_eq(sp_dataset_writer_add(w, tok, 3, pos, ids, 1, 2, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "example 1: label 2 outside [0, 2)"));
    ck_assert_int_eq(sp_dataset_writer_add(w, tok, 3, pos, ids, 1, 0, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "verbalizer token of its label (100)"));
    ck_assert_int_eq(sp_dataset_writer_add(w, tok, 0, pos, ids, 0, 0, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "example 1 has no tokens"));
    sp_dataset_writer_abort(w);
    m.n_classes = 0;
    ck_assert_ptr_null(sp_dataset_writer_open(path, &m, 0, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "needs n_classes >= 1"));
    free(path);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* The h5py example                                                                           */
/* ------------------------------------------------------------------------------------------ */

START_TEST(h5py_example_script_is_accepted) {
    char *out = tu_path(tu_dir, "py.h5");
    char *argv[] = {PYTHON, SP_REPO_DIR "/scripts/examples/write_dataset_h5py.py", out, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, PYTHON, NULL, NULL, argv, environ);
    ck_assert_msg(rc == 0, "cannot run " PYTHON ": %s", strerror(rc));
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "the example script failed (is python3-h5py installed? scripts/setup)");
    sp_dataset *ds = tu_dataset_open_ok(out);
    const sp_dataset_meta *m = sp_dataset_get_meta(ds);
    ck_assert_int_eq(m->n_examples, 3);
    ck_assert_int_eq(m->n_tokens, 25);
    ck_assert_int_eq(m->n_soft, 2);
    ck_assert_int_eq(m->n_classes, 2);
    ck_assert_str_eq(m->class_names[0], "negative");
    ck_assert_int_eq(m->verbalizer[1], 1049);
    ck_assert(m->seed == 1234);
    ck_assert_str_eq(m->split, "train");
    const int64_t ids[] = {2, 0};
    sp_batch_data b = {0};
    sp_error err = {0};
    ck_assert_msg(sp_dataset_read_batch(ds, ids, 2, &b, &err) == 0, "%s", err.msg);
    const int32_t tokens[] = {-1, -2, 317,  34264, 13, 632, 373, -1,
                              -2, 40, 1842, 340,   13, 632, 373};
    ck_assert_int_eq(b.seq_start[2], 15);
    ck_assert_int_eq(b.seq_start[1], 7);
    ck_assert_mem_eq(b.tokens, tokens, sizeof tokens);
    ck_assert_int_eq(b.n_targets, 2);
    ck_assert_int_eq(b.target_pos[0], 6);
    ck_assert_int_eq(b.target_pos[1], 14);
    ck_assert_int_eq(b.target_ids[0], 1049);
    ck_assert_int_eq(b.target_ids[1], 1049);
    ck_assert_int_eq(b.labels[0], 1);
    ck_assert_int_eq(b.labels[1], 1);
    sp_batch_data_free(&b);
    sp_dataset_close(ds);
    free(out);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* Corrupted files                                                                            */
/* ------------------------------------------------------------------------------------------ */

static hid_t open_rw(const char *path) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    return f;
}

/* Overwrites element index of 1-D dataset name with value (through a native int64 buffer,
 * which HDF5 converts to the stored type). */
static void patch(const char *path, const char *name, hsize_t index, int64_t value) {
    hid_t f = open_rw(path), d = H5Dopen2(f, name, H5P_DEFAULT), s = H5Dget_space(d);
    hsize_t one = 1;
    hid_t ms = H5Screate_simple(1, &one, NULL);
    ck_assert_int_ge(H5Sselect_hyperslab(s, H5S_SELECT_SET, &index, NULL, &one, NULL), 0);
    ck_assert_int_ge(H5Dwrite(d, H5T_NATIVE_INT64, ms, s, H5P_DEFAULT, &value), 0);
    H5Sclose(ms), H5Sclose(s), H5Dclose(d), H5Fclose(f);
}

static void delete_dataset(const char *path, const char *name) {
    hid_t f = open_rw(path);
    ck_assert_int_ge(H5Ldelete(f, name, H5P_DEFAULT), 0);
    H5Fclose(f);
}

/* Replaces dataset name by one of the same length and the given file type. */
static void retype_dataset(const char *path, const char *name, hid_t type) {
    hid_t f = open_rw(path), d = H5Dopen2(f, name, H5P_DEFAULT), s = H5Dget_space(d);
    hssize_t n = H5Sget_simple_extent_npoints(s);
    double *v = calloc((size_t)n, sizeof *v);
    ck_assert_int_ge(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v), 0);
    H5Dclose(d);
    H5Ldelete(f, name, H5P_DEFAULT);
    hsize_t dim = (hsize_t)n; /* fixed size: contiguous layout */
    hid_t fixed = H5Screate_simple(1, &dim, NULL);
    d = H5Dcreate2(f, name, type, fixed, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Sclose(fixed);
    ck_assert_int_ge(H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v), 0);
    free(v);
    H5Dclose(d), H5Sclose(s), H5Fclose(f);
}

/* Replaces dataset name by a chunked int64 one of n elements whose chunks are never written:
 * a few hundred bytes of file that claim n * 8 bytes of data. */
static void declare_unwritten(const char *path, const char *name, hsize_t n) {
    hid_t f = open_rw(path);
    ck_assert_int_ge(H5Ldelete(f, name, H5P_DEFAULT), 0);
    hsize_t chunk = 1 << 16;
    hid_t s = H5Screate_simple(1, &n, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 1, &chunk);
    hid_t d = H5Dcreate2(f, name, H5T_STD_I64LE, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    ck_assert_int_ge(d, 0);
    H5Dclose(d), H5Pclose(dcpl), H5Sclose(s), H5Fclose(f);
}

static void expect_open_error(const char *path, const char *want) {
    sp_error err = {0};
    sp_dataset *ds = sp_dataset_open(path, &err);
    ck_assert_msg(ds == NULL, "%s: expected refusal with \"%s\"", path, want);
    ck_assert_msg(strstr(err.msg, want) != NULL, "message \"%s\" lacks \"%s\"", err.msg, want);
}

/* Opens fine, but reading every example fails with want. */
static void expect_read_error(const char *path, int64_t n, const char *want) {
    sp_dataset *ds = tu_dataset_open_ok(path);
    int64_t *ids = malloc((size_t)n * sizeof *ids);
    for (int64_t i = 0; i < n; i++) ids[i] = i;
    sp_batch_data b = {0};
    sp_error err = {0};
    ck_assert_int_eq(sp_dataset_read_batch(ds, ids, (int)n, &b, &err), -1);
    ck_assert_msg(strstr(err.msg, want) != NULL, "message \"%s\" lacks \"%s\"", err.msg, want);
    ck_assert_int_eq(b.n_seq, 0);
    sp_batch_data_free(&b);
    free(ids);
    sp_dataset_close(ds);
}

static char *fresh(const char *name) {
    return write_dataset(name, SP_TASK_CLASSIFICATION, 20, 11);
}

START_TEST(refuses_bad_format_attributes) {
    char *p = fresh("fmt.h5");
    tu_h5_set_str_attr(p, "format", "something-else", 1);
    expect_open_error(p, "fmt.h5: root attribute \"format\" is \"something-else\", expected "
                         "\"softprompt-dataset\"");
    free(p);
    p = fresh("ver.h5");
    tu_h5_set_i64_attr(p, "format_version", 2);
    expect_open_error(p, "ver.h5: format_version 2 is not supported");
    free(p);
    p = fresh("task.h5");
    tu_h5_set_str_attr(p, "task", "regression", 1);
    expect_open_error(p, "task.h5: root attribute \"task\" is \"regression\"");
    free(p);
    p = fresh("noattr.h5");
    hid_t f = open_rw(p);
    H5Adelete(f, "n_soft");
    H5Fclose(f);
    expect_open_error(p, "noattr.h5: missing root attribute \"n_soft\"");
    free(p);
    p = fresh("count.h5");
    tu_h5_set_i64_attr(p, "n_examples", 21);
    expect_open_error(p, "count.h5: dataset \"/offsets\" has 21 elements, expected 22");
    free(p);
    /* Found by fuzz/fuzz_dataset: a generation dataset claiming classes had its (absent)
     * verbalizer read through a NULL pointer. */
    p = write_dataset("gencls.h5", SP_TASK_GENERATION, 20, 11);
    tu_h5_set_i64_attr(p, "n_classes", 2);
    expect_open_error(p, "gencls.h5: generation dataset with n_classes = 2 (must be 0)");
    free(p);
}
END_TEST

/* A damaged header must not make the reader allocate what it claims (1e9 offsets = 8 GB). */
START_TEST(refuses_declared_sizes_the_file_cannot_hold) {
    char *p = fresh("huge.h5");
    const int64_t n = 1000000000;
    tu_h5_set_i64_attr(p, "n_examples", n);
    declare_unwritten(p, "offsets", (hsize_t)n + 1);
    expect_open_error(p, "huge.h5: dataset \"/offsets\" declares 8000000008 bytes of data but "
                         "stores only 0 (more than deflate's maximum ratio of 1032:1)");
    free(p);
}
END_TEST

START_TEST(refuses_bad_datasets) {
    char *p = fresh("missing.h5");
    delete_dataset(p, "target_ids");
    expect_open_error(p, "missing.h5: missing dataset \"/target_ids\"");
    free(p);
    p = fresh("float.h5");
    retype_dataset(p, "tokens", H5T_IEEE_F32LE);
    expect_open_error(p, "float.h5: dataset \"/tokens\" has 4-byte floating-point elements, "
                         "expected 4-byte signed integers");
    free(p);
    p = fresh("wide.h5");
    retype_dataset(p, "tokens", H5T_STD_I64LE);
    expect_open_error(p, "wide.h5: dataset \"/tokens\" has 8-byte integer elements");
    free(p);
    p = fresh("uoff.h5");
    retype_dataset(p, "offsets", H5T_STD_U64LE);
    expect_open_error(p, "uoff.h5: dataset \"/offsets\" has 8-byte unsigned integer elements");
    free(p);
    p = fresh("be.h5"); /* big-endian int32 is fine: HDF5 converts on read */
    retype_dataset(p, "tokens", H5T_STD_I32BE);
    sp_dataset *ds = tu_dataset_open_ok(p);
    const int64_t ids[] = {19, 4, 5};
    sp_batch_data b = {0};
    sp_error err = {0};
    ck_assert_msg(sp_dataset_read_batch(ds, ids, 3, &b, &err) == 0, "%s", err.msg);
    check_batch(&b, SP_TASK_CLASSIFICATION, ids, 3, 11);
    sp_batch_data_free(&b);
    sp_dataset_close(ds);
    free(p);
    char *q = tu_path(tu_dir, "garbage.h5");
    tu_write_file(q, "not hdf5 at all", 15);
    expect_open_error(q, "garbage.h5: not an HDF5 file");
    free(q);
    q = tu_path(tu_dir, "absent.h5");
    expect_open_error(q, "absent.h5: cannot open: No such file or directory");
    free(q);
}
END_TEST

START_TEST(refuses_bad_offsets_and_labels) {
    char *p = fresh("mono.h5");
    patch(p, "offsets", 3, 1000000);
    expect_open_error(p, "mono.h5: /offsets is not non-decreasing: /offsets[4] = ");
    free(p);
    p = fresh("end.h5");
    sp_dataset *ds = tu_dataset_open_ok(p);
    int64_t n_tokens = sp_dataset_get_meta(ds)->n_tokens;
    sp_dataset_close(ds);
    patch(p, "offsets", 20, n_tokens - 1);
    char want[200];
    snprintf(want, sizeof want, "end.h5: /offsets ends at %lld but n_tokens is %lld",
             (long long)n_tokens - 1, (long long)n_tokens);
    expect_open_error(p, want);
    free(p);
    p = fresh("start.h5");
    patch(p, "target_offsets", 0, 1);
    expect_open_error(p, "start.h5: /target_offsets[0] is 1, must be 0");
    free(p);
    p = fresh("label.h5");
    patch(p, "labels", 5, 2);
    expect_open_error(p, "label.h5: /labels[5] = 2 is outside [0, n_classes = 2)");
    free(p);
    p = fresh("neg.h5");
    patch(p, "labels", 6, -1);
    expect_open_error(p, "neg.h5: /labels[6] = -1 is outside");
    free(p);
}
END_TEST

START_TEST(refuses_bad_tokens_and_targets) {
    char *p = fresh("soft.h5");
    patch(p, "tokens", 9, SP_SOFT(3)); /* example 1 (4 + 7 tokens from 4): position 5 */
    expect_read_error(p, 20,
                      "soft.h5: /tokens[9] (example 1, position 5) is soft slot 3, but "
                      "n_soft is 3");
    free(p);
    p = fresh("tpos.h5");
    patch(p, "target_pos", 4, 999);
    expect_read_error(p, 20, "tpos.h5: /target_pos[4] = 999 (example 4 of");
    free(p);
    p = fresh("tneg.h5");
    patch(p, "target_pos", 2, -1);
    expect_read_error(p, 20, "tneg.h5: /target_pos[2] = -1 (example 2 of");
    free(p);
    p = fresh("tneg_id.h5");
    patch(p, "target_ids", 3, -5);
    expect_read_error(p, 20, "tneg_id.h5: /target_ids[3] = -5 (example 3) is not a token id");
    free(p);
    p = fresh("tid.h5");
    patch(p, "target_ids", 3, 100); /* label 1 expects 200 */
    expect_read_error(p, 20,
                      "tid.h5: example 3 (label 1): a classification example needs "
                      "exactly one target, with id /verbalizer[label] = 200");
    free(p);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* Damaged and unreadable files                                                               */
/* ------------------------------------------------------------------------------------------ */

/* A failed metadata checksum is reported as damage, wherever it is met: never as a missing
 * attribute or dataset, nor as a raw HDF5 message. */
START_TEST(damaged_metadata_is_named_as_damage) {
    char *p = fresh("good.h5");
    const char *objects[] = {".", "offsets", "tokens"};
    for (int k = 0; k < 3; k++) {
        char *bad = tu_damage_header(p, objects[k], "damaged.h5");
        expect_open_error(bad, "damaged.h5: ");
        expect_open_error(bad, "(metadata checksum mismatch: the file is damaged)");
        free(bad);
    }
    free(p);
}
END_TEST

/* A damaged chunk of /tokens is found when a batch reads it: the message names the file, the
 * elements, the examples and the damage. */
START_TEST(damaged_chunk_names_the_examples) {
    char *p = fresh("chunk.h5");
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT), d = H5Dopen2(f, "tokens", H5P_DEFAULT);
    hsize_t offset[1];
    unsigned mask;
    haddr_t addr;
    hsize_t size;
    hid_t space = H5Dget_space(d);
    ck_assert_int_ge(H5Dget_chunk_info(d, space, 0, offset, &mask, &addr, &size), 0);
    H5Sclose(space), H5Dclose(d), H5Fclose(f);
    size_t n;
    char *bytes = tu_read_file(p, &n);
    bytes[addr + size / 2] ^= 0x5a;
    tu_write_file(p, bytes, n);
    free(bytes);
    expect_read_error(p, 20, "chunk.h5: cannot read /tokens[0:");
    expect_read_error(p, 20,
                      "(examples 0-19) (compressed data do not inflate: the file is damaged)");
    free(p);
}
END_TEST

/* Reads the open error of path as user "nobody" (root reads files whatever their mode). */
static void open_error_as_nobody(const char *path, char *msg, size_t cap) {
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        sp_error err = {0};
        if (setgid(65534) != 0 || setuid(65534) != 0)
            snprintf(err.msg, sizeof err.msg, "setuid");
        else if (sp_dataset_open(path, &err))
            snprintf(err.msg, sizeof err.msg, "opened");
        ssize_t w = write(fds[1], err.msg, strlen(err.msg));
        _exit(w < 0);
    }
    close(fds[1]);
    ssize_t got = read(fds[0], msg, cap - 1);
    msg[got > 0 ? got : 0] = '\0';
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
}

/* An unreadable file says why (not "not an HDF5 file"): permission denied, a directory, an
 * empty file. */
START_TEST(unreadable_file_says_why) {
    char *p = fresh("secret.h5");
    ck_assert_int_eq(chmod(p, 0), 0);
    if (geteuid() == 0) {
        ck_assert_int_eq(chmod(tu_dir, 0755), 0);
        char msg[SP_ERROR_MAX];
        open_error_as_nobody(p, msg, sizeof msg);
        ck_assert_msg(strstr(msg, "secret.h5: cannot open: Permission denied"), "got \"%s\"", msg);
    } else {
        expect_open_error(p, "secret.h5: cannot open: Permission denied");
    }
    free(p);
    char *q = tu_path(tu_dir, "dir.h5");
    ck_assert_int_eq(mkdir(q, 0755), 0);
    expect_open_error(q, "dir.h5: is a directory, not an HDF5 file");
    free(q);
    q = tu_path(tu_dir, "empty.h5");
    tu_write_file(q, "", 0);
    expect_open_error(q, "empty.h5: empty file (truncated?)");
    free(q);
}
END_TEST

/* A dataset given where a prompt goes (eval --prompt, train --init) says so. */
START_TEST(dataset_is_not_a_prompt) {
    char *p = fresh("data.h5");
    float *prompt = NULL;
    int P = 0, d = 0;
    sp_error err = {0};
    ck_assert_int_eq(sp_prompt_read_h5(p, &prompt, &P, &d, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "data.h5 is a softprompt dataset, not a prompt or "
                                          "checkpoint"));
    ck_assert_ptr_null(prompt);
    free(p);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* Checks against a model, before any batch runs                                              */
/* ------------------------------------------------------------------------------------------ */

static sp_model_config model_cfg(sp_arch arch, int vocab, int n_ctx) {
    sp_model_config c = {0};
    c.arch = arch;
    c.vocab_size = vocab, c.n_ctx = n_ctx;
    return c;
}

static void expect_check_error(const char *path, const sp_model_config *cfg, const char *want) {
    sp_dataset *ds = tu_dataset_open_ok(path);
    sp_error err = {0};
    ck_assert_msg(sp_dataset_check_model(ds, cfg, &err) == -1, "%s: expected \"%s\"", path, want);
    ck_assert_msg(strstr(err.msg, want) != NULL, "message \"%s\" lacks \"%s\"", err.msg, want);
    sp_dataset_close(ds);
}

static void expect_check_ok(const char *path, const sp_model_config *cfg) {
    sp_dataset *ds = tu_dataset_open_ok(path);
    sp_error err = {0};
    ck_assert_msg(sp_dataset_check_model(ds, cfg, &err) == 0, "%s", err.msg);
    sp_dataset_close(ds);
}

/* Lengths, token and target ids against the model; the message names the file, the example,
 * the value and the limit (examples: 4 + (7 i mod 11) tokens, ids 1000 i + t, soft slots at
 * positions 0, 2 and 3). */
START_TEST(check_model_lengths_and_ids) {
    char *p = fresh("cls.h5");
    sp_model_config gpt2 = model_cfg(SP_ARCH_GPT2, 50257, 1024);
    expect_check_ok(p, &gpt2);
    expect_check_ok(p, NULL);
    sp_model_config shortctx = model_cfg(SP_ARCH_GPT2, 50257, 10);
    expect_check_error(p, &shortctx,
                       "cls.h5: example 1 has 11 tokens (soft tokens included), more than the "
                       "model's 10 positions (n_positions in its config.json); 7 of 20 examples "
                       "are longer, the longest has 14 tokens: prepare the data again with "
                       "`softprompt prepare --max-length 10`");
    sp_model_config llama = model_cfg(SP_ARCH_LLAMA, 50257, 13);
    expect_check_error(p, &llama, "more than the model's 13 positions (max_position_embeddings");
    sp_model_config small = model_cfg(SP_ARCH_GPT2, 19000, 1024);
    expect_check_error(p, &small, "cls.h5: /tokens[");
    expect_check_error(p, &small,
                       " (example 19, position 1) is token id 19001, outside the model's "
                       "vocabulary of 19000 tokens (vocab_size)");
    sp_model_config tiny = model_cfg(SP_ARCH_GPT2, 150, 1024);
    expect_check_error(p, &tiny,
                       "cls.h5: /verbalizer[1] = 200 (class \"positive \xE2\x9C\x93\") is "
                       "outside the model's vocabulary of 150 tokens");
    free(p);
}
END_TEST

/* What sp_dataset_read_batch finds in a batch is found for the whole set at once, without a
 * model too: soft slots, target positions and ids, the classification target. */
START_TEST(check_model_contents) {
    char *p = fresh("soft.h5");
    patch(p, "tokens", 9, SP_SOFT(3));
    expect_check_error(p, NULL,
                       "soft.h5: /tokens[9] (example 1, position 5) is soft slot 3, but n_soft is "
                       "3");
    free(p);
    p = fresh("tpos.h5");
    patch(p, "target_pos", 4, 999);
    expect_check_error(p, NULL, "tpos.h5: /target_pos[4] = 999 (example 4 of 10 tokens)");
    free(p);
    p = fresh("tid.h5");
    patch(p, "target_ids", 3, 100);
    expect_check_error(p, NULL,
                       "tid.h5: example 3 (label 1): a classification example needs exactly one "
                       "target, with id /verbalizer[label] = 200");
    free(p);
    p = write_dataset("gen.h5", SP_TASK_GENERATION, 20, 11);
    sp_model_config gpt2 = model_cfg(SP_ARCH_GPT2, 50257, 1024);
    expect_check_ok(p, &gpt2);
    patch(p, "target_ids", 5, 60000);
    expect_check_error(p, &gpt2, "gen.h5: /target_ids[5] = 60000 (example ");
    expect_check_error(p, &gpt2, "is outside the model's vocabulary (vocab_size)");
    patch(p, "target_ids", 5, -2);
    expect_check_error(p, NULL, "gen.h5: /target_ids[5] = -2 (example ");
    free(p);
}
END_TEST

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A set of more than two streaming blocks (1 Mi elements each): a bad id in the last block is
 * found and named by its example. Prints the time the check takes. */
START_TEST(check_model_streams_large_sets) {
    char *path = tu_path(tu_dir, "large.h5");
    sp_dataset_meta m = meta_for(SP_TASK_GENERATION);
    m.max_length = 0;
    sp_error err = {0};
    sp_dataset_writer *w = sp_dataset_writer_open(path, &m, 0, &err);
    ck_assert_msg(w != NULL, "%s", err.msg);
    enum { N = 12000, L = 250 };
    int32_t tok[L], pos[L / 2], ids[L / 2];
    for (int t = 0; t < L; t++) tok[t] = (t * 7919) % 50257;
    tok[0] = SP_SOFT(0), tok[1] = SP_SOFT(1), tok[2] = SP_SOFT(2);
    for (int j = 0; j < L / 2; j++) pos[j] = 2 * j + 1, ids[j] = (j * 31) % 50257;
    for (int i = 0; i < N; i++)
        ck_assert_msg(sp_dataset_writer_add(w, tok, L, pos, ids, L / 2, -1, &err) == 0, "%s",
                      err.msg);
    ck_assert_msg(sp_dataset_writer_close(w, &err) == 0, "%s", err.msg);
    sp_model_config gpt2 = model_cfg(SP_ARCH_GPT2, 50257, 1024);
    double t0 = now_s();
    expect_check_ok(path, &gpt2);
    fprintf(stderr, "check_model: %d examples, %d tokens, %d targets: %.3f s\n", N, N * L,
            N * L / 2, now_s() - t0);
    patch(path, "tokens", (hsize_t)(N - 3) * L + 17, 50257);
    expect_check_error(path, &gpt2,
                       "/tokens[2999267] (example 11997, position 17) is token id "
                       "50257, outside the model's vocabulary of 50257 tokens");
    patch(path, "tokens", (hsize_t)(N - 3) * L + 17, 5);
    patch(path, "target_pos", (hsize_t)(N - 1) * (L / 2) + 124, 240);
    expect_check_error(path, &gpt2, "/target_pos[1499999] = 240 (example 11999 of 250 tokens)");
    free(path);
}
END_TEST

START_TEST(check_tokenizer_compares_hashes) {
    char *p = fresh("tok.h5"); /* records tokenizer "sha256:abc" */
    sp_dataset *ds = tu_dataset_open_ok(p);
    sp_error err = {0};
    ck_assert_int_eq(sp_dataset_check_tokenizer(ds, "sha256:abc", "models/x", &err), 0);
    ck_assert_int_eq(sp_dataset_check_tokenizer(ds, "", "models/x", &err), 1);
    ck_assert_int_eq(sp_dataset_check_tokenizer(ds, NULL, "models/x", &err), 1);
    ck_assert_int_eq(sp_dataset_check_tokenizer(ds, "0123456789abcdef", "models/x", &err), -1);
    ck_assert_msg(strstr(err.msg, "tok.h5 was prepared with tokenizer sha256:abc, but the model's "
                                  "tokenizer (models/x) is 0123456789abcdef") &&
                      strstr(err.msg, "softprompt prepare --tokenizer models/x") &&
                      strstr(err.msg, "--allow-tokenizer-mismatch"),
                  "%s", err.msg);
    sp_dataset_close(ds);
    free(p);
}
END_TEST

/* A batch the engine refuses is named by file and example (the trainer adds "step N"). */
START_TEST(engine_names_file_and_example) {
    char *p = fresh("eng.h5");
    sp_dataset *ds = tu_dataset_open_ok(p);
    const int64_t ids[] = {3, 7};
    sp_batch_data b = {0};
    sp_error err = {0};
    ck_assert_msg(sp_dataset_read_batch(ds, ids, 2, &b, &err) == 0, "%s", err.msg);
    sp_batch v = sp_batch_data_view(&b);
    sp_model m;
    memset(&m, 0, sizeof m);
    m.cfg = model_cfg(SP_ARCH_GPT2, 50257, 10); /* example 7: 4 + 49 mod 11 = 9 tokens; 3: 14 */
    sp_pass pass = {0};
    pass.n_prompt = 3;
    ck_assert_int_eq(sp_engine_validate(&m, &v, &pass, &err), -1);
    ck_assert_msg(strstr(err.msg, "eng.h5: example 3: batch: sequence 0 has length 14, expected "
                                  "1..10"),
                  "%s", err.msg);
    m.cfg = model_cfg(SP_ARCH_GPT2, 7000, 64);
    ck_assert_int_eq(sp_engine_validate(&m, &v, &pass, &err), -1);
    ck_assert_msg(strstr(err.msg, "eng.h5: example 7, position 1: batch: position 15 holds token "
                                  "id 7001, expected < 7000"),
                  "%s", err.msg);
    sp_batch_data_free(&b);
    sp_dataset_close(ds);
    free(p);
}
END_TEST

/* LeakSanitizer's interface, present only in sanitizer builds. */
void __lsan_disable(void) __attribute__((weak));
void __lsan_enable(void) __attribute__((weak));

/* Damaged files are refused or read, never crash: bytes flipped at pseudo-random places
 * (metadata is checksummed, chunks carry deflate's Adler-32, and every value is validated).
 * libhdf5 1.10 itself leaks on some of its error paths for damaged files, so leak tracking is
 * off during this test only (which matters with CK_FORK=no, where tests share a process). */
START_TEST(flipped_bytes_never_crash) {
    if (__lsan_disable) __lsan_disable();
    H5garbage_collect(); /* else HDF5's free lists hand out blocks allocated before */
    char *path = fresh("good.h5");
    size_t n;
    char *good = tu_read_file(path, &n);
    char *bad = malloc(n);
    char *copy = tu_path(tu_dir, "flipped.h5");
    uint64_t x = 42;
    int refused = 0;
    for (int it = 0; it < 150; it++) {
        memcpy(bad, good, n);
        for (int k = 0; k < 1 + it % 3; k++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            bad[(x >> 33) % n] ^= (char)(1 + (x >> 20) % 255);
        }
        tu_write_file(copy, bad, n);
        sp_error err = {0};
        sp_dataset *ds = sp_dataset_open(copy, &err);
        if (!ds) {
            ck_assert_ptr_nonnull(strstr(err.msg, "flipped.h5: "));
            refused++;
            continue;
        }
        int64_t ids[20];
        for (int i = 0; i < 20; i++) ids[i] = i % sp_dataset_n_examples(ds);
        sp_batch_data b = {0};
        if (sp_dataset_read_batch(ds, ids, 20, &b, &err) != 0)
            ck_assert_ptr_nonnull(strstr(err.msg, "flipped.h5: "));
        sp_batch_data_free(&b);
        sp_dataset_close(ds);
    }
    ck_assert_int_gt(refused, 75);
    free(copy), free(bad), free(good), free(path);
    if (__lsan_enable) __lsan_enable();
}
END_TEST

int main(void) {
    Suite *s = suite_create("dataset");
    TCase *tc = tcase_create("dataset");
    tcase_add_checked_fixture(tc, tu_dir_setup, tu_dir_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, classification_round_trip);
    tcase_add_test(tc, generation_round_trip_random_batches);
    tcase_add_test(tc, abort_leaves_nothing);
    tcase_add_test(tc, existing_output_needs_force);
    tcase_add_test(tc, writer_rejects_bad_examples);
    tcase_add_test(tc, h5py_example_script_is_accepted);
    tcase_add_test(tc, refuses_bad_format_attributes);
    tcase_add_test(tc, refuses_declared_sizes_the_file_cannot_hold);
    tcase_add_test(tc, refuses_bad_datasets);
    tcase_add_test(tc, refuses_bad_offsets_and_labels);
    tcase_add_test(tc, refuses_bad_tokens_and_targets);
    tcase_add_test(tc, flipped_bytes_never_crash);
    tcase_add_test(tc, damaged_metadata_is_named_as_damage);
    tcase_add_test(tc, damaged_chunk_names_the_examples);
    tcase_add_test(tc, unreadable_file_says_why);
    tcase_add_test(tc, dataset_is_not_a_prompt);
    tcase_add_test(tc, check_model_lengths_and_ids);
    tcase_add_test(tc, check_model_contents);
    tcase_add_test(tc, check_model_streams_large_sets);
    tcase_add_test(tc, check_tokenizer_compares_hashes);
    tcase_add_test(tc, engine_names_file_and_example);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
