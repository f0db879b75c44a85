/* `softprompt export`: a checkpoint's prompt as a Hugging Face PEFT prompt-tuning adapter. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "softprompt/checkpoint.h"

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: softprompt export --model DIR --prompt CKPT.h5 --out DIR [--base-model NAME]\n\n"
        "Writes the prompt of a checkpoint (e.g. run/best.h5) as a Hugging Face PEFT\n"
        "prompt-tuning adapter: DIR/adapter_model.safetensors (prompt_embeddings [P, d]) and\n"
        "DIR/adapter_config.json (peft_type PROMPT_TUNING, task_type CAUSAL_LM), loadable with\n"
        "PeftModel.from_pretrained(model, DIR). `softprompt train` already exports the final\n"
        "prompt to run/adapter; use this for the best or any other checkpoint.\n\n"
        "  --model DIR         the model the prompt was trained for (shapes are checked)\n"
        "  --prompt CKPT.h5    a checkpoint, or any HDF5 file with a \"prompt\" dataset\n"
        "  --out DIR           adapter directory (created; files written atomically)\n"
        "  --base-model NAME   base_model_name_or_path to record (default: the --model path)\n");
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
    static const struct option opts[] = {{"model", 1, 0, 'm'}, {"prompt", 1, 0, 'p'},
                                         {"out", 1, 0, 'o'},   {"base-model", 1, 0, 'b'},
                                         {"help", 0, 0, 'h'},  {0, 0, 0, 0}};
    const char *model = NULL, *prompt = NULL, *out = NULL, *base = NULL;
    optind = 1, opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case 'm':
            model = optarg;
            break;
        case 'p':
            prompt = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 'b':
            base = optarg;
            break;
        default:
            fprintf(stderr, "softprompt export: unknown option or missing value: %s\n",
                    argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc || !model || !prompt || !out) {
        fprintf(stderr, "softprompt export: %s (see softprompt export --help)\n",
                optind < argc ? "unexpected argument" : "--model, --prompt and --out are required");
        return 2;
    }
    return export_adapter(model, prompt, out, base);
}

const sp_command SP_CMD_EXPORT = {"export", "write a checkpoint's prompt as a PEFT adapter", run,
                                  usage};
