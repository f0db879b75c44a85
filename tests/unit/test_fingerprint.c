/* Model and dataset fingerprints (src/train/fingerprint.c): the same values give the same
 * fingerprint whatever the files and names, one changed weight bit, label, length or template
 * another. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "softprompt/checkpoint.h"
#include "softprompt/safetensors.h"
#include "testutil.h"

static char *make_model(const char *name, uint64_t seed, int shards, int prefix, sp_dtype dt) {
    sp_init_options o = tu_gpt2_options(2, 16, 2, 64, 211, 24, seed);
    o.n_shards = shards, o.prefix = prefix, o.dtype = dt;
    o.random_norms = 1;
    return tu_write_model(name, &o);
}

static void model_fp_weights(const char *dir, sp_weights w, char out[17]) {
    sp_model m;
    sp_error err = {0};
    ck_assert_msg(sp_model_load_weights(&m, dir, w, &err) == 0, "%s", err.msg);
    sp_model_fingerprint(&m, out);
    sp_model_free(&m);
    ck_assert_uint_eq(strlen(out), 16);
    ck_assert_uint_eq(strspn(out, "0123456789abcdef"), 16);
}

static void model_fp(const char *dir, char out[17]) {
    model_fp_weights(dir, SP_WEIGHTS_F32, out);
}

/* A classification set of 20 examples; variant changes one thing: 1 a label, 2 a length,
 * 3 the template attribute; source and split differ with the name. */
static char *make_dataset(const char *name, int variant) {
    return tu_write_cls_set(
        name, &(tu_cls_set){.n_soft = 2,
                            .n_examples = 20,
                            .text_min = 3,
                            .text_mod = 6,
                            .template_spec = variant == 3 ? "<soft0> <soft1> {text} So it was"
                                                          : "<soft0> <soft1> {text} It was",
                            .flip_label = variant == 1 ? 12 : 0,
                            .longer = variant == 2 ? 8 : 0});
}

static void dataset_fp(const char *path, char out[17]) {
    sp_error err = {0};
    sp_dataset *ds = sp_dataset_open(path, &err);
    ck_assert_msg(ds != NULL, "%s", err.msg);
    ck_assert_msg(sp_dataset_fingerprint(ds, out, &err) == 0, "%s", err.msg);
    sp_dataset_close(ds);
    ck_assert_uint_eq(strlen(out), 16);
}

START_TEST(model_fingerprint_follows_the_weights) {
    char *a = make_model("a", 1, 1, 0, SP_DTYPE_F32);
    char *a_sharded = make_model("a3", 1, 3, 1, SP_DTYPE_F32);
    char *b = make_model("b", 2, 1, 0, SP_DTYPE_F32);
    char fa[17], fa3[17], fb[17], fa2[17], fc[17];
    model_fp(a, fa);
    model_fp(a_sharded, fa3);
    model_fp(b, fb);
    model_fp(a, fa2);
    ck_assert_str_eq(fa, fa2);
    ck_assert_str_eq(fa, fa3); /* same values, different files and names */
    ck_assert_str_ne(fa, fb);  /* different seed */

    /* One weight changed in a copy of the file: the last element of one layer's c_proj. */
    char *c =
        tu_copy_files(a, "c", (const char *const[]){"config.json", "model.safetensors", NULL});
    char *st_path = tu_path(c, "model.safetensors");
    sp_st_file f;
    sp_error err = {0};
    ck_assert_msg(sp_st_open(&f, st_path, &err) == 0, "%s", err.msg);
    const sp_st_tensor *t = sp_st_find(&f, "h.1.attn.c_proj.weight");
    ck_assert_ptr_nonnull(t);
    long off = (long)((const char *)t->data - (const char *)f.map) + (long)t->nbytes - 4;
    sp_st_close(&f);
    tu_flip_byte(st_path, off, 0x01); /* lowest mantissa bit of a float32 */
    model_fp(c, fc);
    ck_assert_str_ne(fa, fc);
    free(a), free(a_sharded), free(b), free(c), free(st_path);
}
END_TEST

START_TEST(dataset_fingerprint_follows_the_data) {
    char *a = make_dataset("a.h5", 0), *a2 = make_dataset("a-copy.h5", 0);
    char *l = make_dataset("label.h5", 1), *n = make_dataset("len.h5", 2),
         *t = make_dataset("tmpl.h5", 3);
    char fa[17], fa2[17], fl[17], fn[17], ft[17];
    dataset_fp(a, fa);
    dataset_fp(a2, fa2);
    dataset_fp(l, fl);
    dataset_fp(n, fn);
    dataset_fp(t, ft);
    ck_assert_str_eq(fa, fa2); /* file, source and split names do not matter */
    ck_assert_str_ne(fa, fl);
    ck_assert_str_ne(fa, fn);
    ck_assert_str_ne(fa, ft);
    free(a), free(a2), free(l), free(n), free(t);
}
END_TEST
/* The fingerprint is of the file's values, whatever storage --weights chooses for the matrices:
 * a BF16 file loaded as float32 or in place, an F32 file as float32 or rounded to BF16. */
START_TEST(model_fingerprint_is_the_same_whatever_weights) {
    char *bf = make_model("bf", 1, 1, 0, SP_DTYPE_BF16);
    char *f32 = make_model("f32", 1, 2, 0, SP_DTYPE_F32);
    char a[17], b[17], c[17], d[17];
    model_fp_weights(bf, SP_WEIGHTS_F32, a);
    model_fp_weights(bf, SP_WEIGHTS_BF16, b);
    ck_assert_str_eq(a, b);
    model_fp_weights(f32, SP_WEIGHTS_F32, c);
    model_fp_weights(f32, SP_WEIGHTS_BF16, d);
    ck_assert_str_eq(c, d);
    ck_assert_str_ne(a, c); /* the BF16 file holds other (rounded) values */
    free(bf), free(f32);
}
END_TEST

int main(void) {
    const TTest *tests[] = {model_fingerprint_follows_the_weights,
                            model_fingerprint_is_the_same_whatever_weights,
                            dataset_fingerprint_follows_the_data, NULL};
    return tu_main("fingerprint", tests, NULL, NULL);
}
