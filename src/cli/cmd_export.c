/* `softprompt export`: a checkpoint's prompt as a Hugging Face PEFT prompt-tuning adapter. */
#include <stddef.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/flags.h"
#include "softprompt/checkpoint.h"

typedef struct export_args {
    const char *model, *prompt, *out, *base;
} export_args;

#define AT(field) offsetof(export_args, field)

static const sp_flag FLAGS[] = {
    SP_OPT_STR("model", AT(model), "DIR",
               "the model the prompt was trained for (shapes are checked)",
               .flags = SP_FLAG_REQUIRED),
    SP_OPT_STR("prompt", AT(prompt), "CKPT.h5",
               "a checkpoint, or any HDF5 file with a \"prompt\" dataset",
               .flags = SP_FLAG_REQUIRED),
    SP_OPT_STR("out", AT(out), "DIR", "adapter directory (created; files written atomically)",
               .flags = SP_FLAG_REQUIRED),
    SP_OPT_STR("base-model", AT(base), "NAME",
               "base_model_name_or_path to record (default: the --model path)"),
    {NULL},
};

static const sp_flag_spec SPEC = {
    .cmd = "export",
    .usage =
        "usage: softprompt export --model DIR --prompt CKPT.h5 --out DIR [--base-model NAME]\n",
    .about =
        "Writes the prompt of a checkpoint (e.g. run/best.h5) as a Hugging Face PEFT\n"
        "prompt-tuning adapter: DIR/adapter_model.safetensors (prompt_embeddings [P, d]) and\n"
        "DIR/adapter_config.json (peft_type PROMPT_TUNING, task_type CAUSAL_LM), loadable with\n"
        "PeftModel.from_pretrained(model, DIR). `softprompt train` already exports the final\n"
        "prompt to run/adapter; use this for the best or any other checkpoint.\n",
    .flags = FLAGS,
};

static void usage(FILE *out) {
    sp_flags_usage(&SPEC, out);
}

/* The initialisation recorded in the checkpoint's configuration, if it is one. */
static char *checkpoint_init(const char *path, char **init_text) {
    sp_checkpoint ck;
    sp_error err;
    *init_text = NULL;
    if (sp_checkpoint_read(path, &ck, &err)) return NULL;
    json_t *cfg = json_loads(ck.config_json, 0, NULL);
    const char *init = json_string_value(json_object_get(cfg, "init"));
    const char *arg = json_string_value(json_object_get(cfg, "init_arg"));
    char *out = init ? strdup(init) : NULL;
    if (out && strcmp(out, "text") == 0 && arg) *init_text = strdup(arg);
    json_decref(cfg);
    sp_checkpoint_free(&ck);
    return out;
}

static int export_adapter(const char *model_dir, const char *prompt_path, const char *out,
                          const char *base) {
    sp_model m;
    sp_error err;
    float *prompt = NULL;
    int P, d, rc = sp_model_load(&m, model_dir, &err);
    if (rc == 0) rc = sp_prompt_read_h5(prompt_path, &prompt, &P, &d, &err);
    if (rc == 0 && d != m.cfg.d_model)
        rc = sp_fail(&err, "%s: prompt width %d, the model's is %d", prompt_path, d, m.cfg.d_model);
    char *init_text = NULL, *init = rc == 0 ? checkpoint_init(prompt_path, &init_text) : NULL;
    if (rc == 0)
        rc = sp_peft_export(out, prompt, P, &m, base ? base : model_dir, init ? init : "file",
                            init_text, &err);
    if (rc == 0)
        printf("wrote %s/adapter_model.safetensors and adapter_config.json (%d x %d)\n", out, P, d);
    else
        fprintf(stderr, "softprompt export: %s\n", err.msg);
    free(init), free(init_text), free(prompt);
    sp_model_free(&m);
    return rc ? 1 : 0;
}

static int run(int argc, char **argv) {
    export_args a = {0};
    char *pos[argc > 0 ? argc : 1];
    int n_pos, rc = sp_flags_parse(&SPEC, argc, argv, &a, pos, &n_pos);
    return rc ? rc : export_adapter(a.model, a.prompt, a.out, a.base);
}

const sp_command SP_CMD_EXPORT = {"export", "write a checkpoint's prompt as a PEFT adapter", run,
                                  usage};
