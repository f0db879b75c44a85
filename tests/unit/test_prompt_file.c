/* Prompts for use (src/train/prompt_file.c: sp_prompt_load, sp_prompt_check_model):
 * checkpoints, h5py files and PEFT adapters (directory or file, F16 converted) load, with what
 * is known of their origin; pickles, run directories and other files are refused naming what
 * to pass instead; a checkpoint of another model is refused (or a warning with the override),
 * a prompt of another width refused, an adapter with another model's num_layers or
 * num_attention_heads gets a warning. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testutil.h"

enum { NP = 4, DM = 16 };

START_TEST(loads_checkpoints_h5py_files_and_adapters) {
    char *model = tu_tiny_gpt2("model", 1);
    char *ck = tu_write_prompt_checkpoint("ck.h5", model, NP,
                                          "{\"init\": \"text\", \"init_arg\": \"Classify:\"}");
    sp_prompt_file pf = tu_prompt_load_ok(ck, NP, DM);
    ck_assert_int_eq(pf.kind, SP_PROMPT_CHECKPOINT);
    ck_assert_int_eq(pf.step, 12);
    ck_assert_str_eq(pf.init_name, "text");
    ck_assert_str_eq(pf.init_text, "Classify:");
    ck_assert_uint_eq(strlen(pf.model_fingerprint), 16);
    ck_assert(pf.prompt[1] == 0.01f * (float)(7 % 13 - 6));
    sp_prompt_file_free(&pf);

    /* An h5py-style file, named without .h5: told apart by content. */
    double vals[NP * DM];
    for (int i = 0; i < NP * DM; i++) vals[i] = 0.5 * i;
    hsize_t dims[2] = {NP, DM};
    char *plain = tu_path(tu_dir, "plain.prompt");
    tu_h5_write_dataset(plain, "prompt", 2, dims, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, vals);
    pf = tu_prompt_load_ok(plain, NP, DM);
    ck_assert_int_eq(pf.kind, SP_PROMPT_H5);
    ck_assert_ptr_null(pf.init_name);
    ck_assert_ptr_null(pf.model_fingerprint);
    ck_assert_int_eq(pf.step, -1);
    ck_assert(pf.prompt[5] == 2.5f);
    sp_prompt_file_free(&pf);

    /* A PEFT adapter: the directory, or its safetensors file. */
    char *ad = tu_write_adapter("adapter", model, NP, "text", "Classify:");
    char *ad_file = tu_path(ad, "adapter_model.safetensors");
    const char *paths[] = {ad, ad_file};
    for (int i = 0; i < 2; i++) {
        pf = tu_prompt_load_ok(paths[i], NP, DM);
        ck_assert_int_eq(pf.kind, SP_PROMPT_PEFT);
        ck_assert_str_eq(pf.path, ad_file);
        ck_assert_str_eq(pf.init_name, "text");
        ck_assert_str_eq(pf.init_text, "Classify:");
        ck_assert_str_eq(pf.base_model, "org/base");
        ck_assert_int_eq(pf.num_layers, 2);
        ck_assert_int_eq(pf.num_attention_heads, 2);
        ck_assert(pf.prompt[1] == 0.02f * (float)(7 % 13 - 6));
        sp_prompt_file_free(&pf);
    }
    /* PEFT's init names map back to softprompt's. */
    char *vocab = tu_write_adapter("vocab", model, NP, "vocab", NULL);
    pf = tu_prompt_load_ok(vocab, NP, DM);
    ck_assert_str_eq(pf.init_name, "vocab");
    ck_assert_ptr_null(pf.init_text);
    sp_prompt_file_free(&pf);
    char *labels = tu_write_adapter("labels", model, NP, "labels", NULL);
    pf = tu_prompt_load_ok(labels, NP, DM);
    ck_assert_str_eq(pf.init_name, "random");
    sp_prompt_file_free(&pf);
    /* F16 adapters (PEFT on a half-precision model) are converted. */
    uint16_t h[NP * DM];
    for (int i = 0; i < NP * DM; i++) h[i] = sp_f32_to_f16(0.25f * (float)(i % 5));
    sp_st_out t = {.name = "prompt_embeddings", .dtype = SP_DTYPE_F16, .ndim = 2, .data = h};
    t.shape[0] = NP, t.shape[1] = DM;
    char *half = tu_copy_adapter(ad, "half");
    tu_write_adapter_tensors(half, &t, 1);
    pf = tu_prompt_load_ok(half, NP, DM);
    ck_assert(pf.prompt[4] == 1.0f);
    sp_prompt_file_free(&pf);
    free(model), free(ck), free(plain), free(ad), free(ad_file), free(vocab), free(labels);
    free(half);
}
END_TEST

START_TEST(pickles_and_other_files_are_refused) {
    char *model = tu_tiny_gpt2("model", 1);
    char *good = tu_write_adapter("good", model, NP, "random", NULL);
    /* A directory with PEFT's pickle format only. */
    char *pk = tu_path(tu_dir, "pickled");
    ck_assert_int_eq(mkdir(pk, 0755), 0);
    char *cfg_from = tu_path(good, "adapter_config.json"),
         *cfg_to = tu_path(pk, "adapter_config.json");
    tu_copy_file(cfg_from, cfg_to);
    char *bin = tu_path(pk, "adapter_model.bin");
    static const char zip[] = "PK\003\004 torch.save zip";
    tu_write_file(bin, zip, sizeof zip - 1);
    const char *why = "a PyTorch pickle (as adapter_model.bin is): refused, because loading a "
                      "pickle can run arbitrary code";
    tu_prompt_load_fails(pk, bin, why);
    tu_prompt_load_fails(bin, bin, "save_file(torch.load(");
    /* Older torch.save (a bare pickle stream), under any name. */
    char *old = tu_path(tu_dir, "prompt.dat");
    static const char stream[] = "\x80\x02}q\x00.";
    tu_write_file(old, stream, sizeof stream - 1);
    tu_prompt_load_fails(old, old, why);
    /* A run directory instead of its adapter or checkpoint. */
    char *run = tu_path(tu_dir, "run");
    ck_assert_int_eq(mkdir(run, 0755), 0);
    char *best = tu_path(run, "best.h5");
    tu_write_file(best, "x", 1);
    tu_prompt_load_fails(run, run, "is a training run's directory, not an adapter: pass");
    char *empty = tu_path(tu_dir, "emptydir");
    ck_assert_int_eq(mkdir(empty, 0755), 0);
    tu_prompt_load_fails(empty, empty,
                         "no adapter_model.safetensors: not a PEFT adapter directory");
    char *txt = tu_path(tu_dir, "notes.txt");
    tu_write_file(txt, "hello, world", 12);
    tu_prompt_load_fails(txt, txt, "not a prompt file: expected a softprompt checkpoint");
    char *missing = tu_path(tu_dir, "nope.h5");
    tu_prompt_load_fails(missing, missing, "cannot open: No such file or directory");
    free(model), free(good), free(pk), free(cfg_from), free(cfg_to), free(bin), free(old);
    free(run), free(best), free(empty), free(txt), free(missing);
}
END_TEST

START_TEST(prompts_are_checked_against_the_model) {
    char *a_dir = tu_tiny_gpt2("a", 1), *b_dir = tu_tiny_gpt2("b", 2);
    sp_model a, b;
    tu_model_load_ok(&a, a_dir);
    tu_model_load_ok(&b, b_dir);
    char *ck = tu_write_prompt_checkpoint("ck.h5", a_dir, NP, "{}");
    sp_prompt_file pf = tu_prompt_load_ok(ck, NP, DM);
    char *w = (char *)1;
    sp_error err = {0};
    ck_assert_msg(sp_prompt_check_model(&pf, &a, 0, &w, &err) == 0, "%s", err.msg);
    ck_assert_ptr_null(w);
    /* Same width, other weights: refused, both fingerprints and the override named. */
    char fa[17], fb[17];
    sp_model_fingerprint(&a, fa);
    sp_model_fingerprint(&b, fb);
    ck_assert_int_eq(sp_prompt_check_model(&pf, &b, 0, &w, &err), -1);
    ck_assert_ptr_null(w);
    ck_assert_msg(strstr(err.msg, ck) && strstr(err.msg, "trained with another model") &&
                      strstr(err.msg, fa) && strstr(err.msg, fb) &&
                      strstr(err.msg, "--allow-model-mismatch"),
                  "%s", err.msg);
    ck_assert_msg(sp_prompt_check_model(&pf, &b, 1, &w, &err) == 0, "%s", err.msg);
    ck_assert_msg(w && strstr(w, "using it anyway (--allow-model-mismatch)\n"), "%s", w);
    free(w);
    sp_prompt_file_free(&pf);

    /* Width. */
    sp_init_options o = tu_gpt2_options(1, 8, 2, 16, 50, 8, 0);
    char *narrow_dir = tu_write_model("narrow", &o);
    sp_model narrow;
    tu_model_load_ok(&narrow, narrow_dir);
    char *ad = tu_write_adapter("adapter", a_dir, NP, "random", NULL);
    pf = tu_prompt_load_ok(ad, NP, DM);
    ck_assert_int_eq(sp_prompt_check_model(&pf, &narrow, 1, &w, &err), -1);
    ck_assert_msg(strstr(err.msg, "the prompt is 16 wide (token_dim)") &&
                      strstr(err.msg, "has d_model 8"),
                  "%s", err.msg);
    /* OPT-350m's form: d_model 16 like the adapter, but prompts are word_embed_proj_dim 8 */
    sp_init_options oo = tu_gpt2_options(1, DM, 2, 16, 50, 8, 0);
    oo.cfg.arch = SP_ARCH_OPT, oo.cfg.pos_offset = 2, oo.cfg.qkv_bias = oo.cfg.o_bias = 1;
    oo.cfg.mlp_bias = 1, oo.cfg.post_norm = 1, oo.cfg.d_embed = 8;
    char *opt_dir = tu_write_model("opt350", &oo);
    sp_model opt;
    tu_model_load_ok(&opt, opt_dir);
    ck_assert_int_eq(sp_prompt_check_model(&pf, &opt, 1, &w, &err), -1);
    ck_assert_msg(strstr(err.msg, "the prompt is 16 wide (token_dim)") &&
                      strstr(err.msg, "takes prompts of word_embed_proj_dim 8 (its embeddings' "
                                      "width, before project_in to d_model 16)"),
                  "%s", err.msg);
    sp_model_free(&opt);
    free(opt_dir);
    /* An adapter of the same width and shape: no warning. Other layers/heads: a warning. */
    ck_assert_msg(sp_prompt_check_model(&pf, &b, 0, &w, &err) == 0, "%s", err.msg);
    ck_assert_ptr_null(w);
    sp_prompt_file_free(&pf);
    tu_edit_adapter_config(ad, "num_layers", json_integer(24));
    pf = tu_prompt_load_ok(ad, NP, DM);
    ck_assert_msg(sp_prompt_check_model(&pf, &a, 0, &w, &err) == 0, "%s", err.msg);
    ck_assert_msg(w && strstr(w, "says num_layers 24 and num_attention_heads 2") &&
                      strstr(w, "has 2 and 2: the adapter was probably made for another model "
                                "(base_model_name_or_path org/base)"),
                  "%s", w);
    free(w);
    sp_prompt_file_free(&pf);
    sp_model_free(&a), sp_model_free(&b), sp_model_free(&narrow);
    free(a_dir), free(b_dir), free(ck), free(narrow_dir), free(ad);
}
END_TEST

int main(void) {
    const TTest *tests[] = {loads_checkpoints_h5py_files_and_adapters,
                            pickles_and_other_files_are_refused,
                            prompts_are_checked_against_the_model, NULL};
    return tu_main("prompt_file", tests, NULL, NULL);
}
