/* The summary of a checkpoint for `softprompt info` (src/train/checkpoint_describe.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil_ckpt.h"

START_TEST(describe_summarises_a_checkpoint) {
    char *path = tu_ck_write_sample("ck.h5", 12);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    sp_error err = {0};
    ck_assert_msg(sp_checkpoint_describe(out, path, &err) == 0, "%s", err.msg);
    fclose(out);
    const char *want[] = {"step              12",
                          "epoch 2, 17 examples",
                          "123456789012",
                          "[5, 7] float32, RMS",
                          "optimizer/m",
                          "optimizer/vr",
                          "valid_accuracy = 0.8125; best 0.875 at step 11",
                          "0123456789abcdef",
                          "fedcba9876543210",
                          "optimizer.lr = 0.3",
                          "softprompt test"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ck_assert_msg(strstr(text, want[i]) != NULL, "missing \"%s\" in:\n%s", want[i], text);
    free(text);
    /* `softprompt info` tells the file apart by its format attribute, then describes it */
    char *cli_out = NULL, *cli_err = NULL;
    const char *args[] = {"info", path, NULL};
    int rc = tu_run_cli(args, &cli_out, &cli_err);
    ck_assert_msg(rc == 0, "info: %s", cli_err);
    ck_assert_msg(strstr(cli_out, "softprompt checkpoint (format_version 1, checksum verified)"),
                  "%s", cli_out);
    free(cli_out), free(cli_err);
    char *bad = tu_path(tu_dir, "bad.h5");
    tu_write_file(bad, "junk", 4);
    out = open_memstream(&text, &len);
    ck_assert_int_eq(sp_checkpoint_describe(out, bad, &err), -1);
    fclose(out);
    ck_assert_ptr_nonnull(strstr(err.msg, bad));
    free(text), free(path), free(bad);
}
END_TEST

int main(void) {
    const TTest *tests[] = {describe_summarises_a_checkpoint, NULL};
    return tu_main("checkpoint_describe", tests, tu_ck_quiet_hdf5, NULL);
}
