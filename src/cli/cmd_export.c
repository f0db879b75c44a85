/* `softprompt export`: a checkpoint's prompt as a Hugging Face PEFT prompt-tuning adapter, a
 * NumPy .npy (Lester et al.) or a KoboldAI soft prompt zip. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/commands.h"
#include "cli/flags.h"
#include "softprompt/checkpoint.h"

typedef struct export_args {
    const char *model, *prompt, *out, *base, *format, *method;
    sp_kobold_meta kobold;
    int allow_model_mismatch; /* --allow-model-mismatch: a checkpoint of another model is used */
    int force;                /* replace an adapter already in --out */
} export_args;

#define AT(field) offsetof(export_args, field)

static const sp__flag FLAGS[] = {
    SP_OPT_STR("model", AT(model), "DIR",
               "the model the prompt was trained for (shapes are checked)",
               .flags = SP_FLAG_REQUIRED),
    SP_OPT_STR("prompt", AT(prompt), "PATH",
               "a checkpoint, any HDF5 file with a \"prompt\" dataset, or a PEFT\n"
               "adapter (directory or adapter_model.safetensors)",
               .flags = SP_FLAG_REQUIRED),
    SP_OPT_STR("out", AT(out), "PATH",
               "adapter directory (created; files written atomically; an\n"
               "adapter already there is kept unless --force); with --format\n"
               "npy or kobold the file to write",
               .flags = SP_FLAG_REQUIRED),
    SP_OPT_STR("base-model", AT(base), "NAME",
               "base_model_name_or_path to record (default: the Hugging Face\n"
               "repository and revision of a model fetched by scripts/get-model,\n"
               "else the model directory's absolute path)"),
    SP_OPT_STR("format", AT(format), "F",
               "peft (default): an adapter directory; npy: one .npy file\n"
               "[P, d] float32 (Lester et al.); kobold: a KoboldAI soft prompt\n"
               "zip (tensor.npy + meta.json)"),
    SP_OPT_STR("name", AT(kobold.name), "TEXT", "kobold: meta.json's name (default: the file's)"),
    SP_OPT_STR("author", AT(kobold.author), "TEXT", "kobold: meta.json's author"),
    SP_OPT_STR("description", AT(kobold.description), "TEXT", "kobold: meta.json's description"),
    SP_OPT_STR("supported", AT(kobold.supported), "TEXT",
               "kobold: meta.json's supported models (default: the model\n"
               "directory's name)"),
    SP_OPT_METHOD(AT(method), "what --prompt must hold (default: whatever it holds): prompt\n"
                              "(a PROMPT_TUNING adapter) or prefix / ptuning-v2 (PREFIX_TUNING)"),
    SP_OPT_SWITCH("force", AT(force), 1, "replace the adapter files (or the file) in --out"),
    SP_OPT_SWITCH("allow-model-mismatch", AT(allow_model_mismatch), 1,
                  "use a checkpoint trained for another model (a warning instead\n"
                  "of the refusal)"),
    {0},
};

static const sp__flag_spec SPEC = {
    .cmd = "export",
    .usage = "usage: softprompt export --model DIR --prompt PATH --out DIR [--base-model NAME]\n"
             "       softprompt export --model DIR --prompt PATH --format npy|kobold --out FILE\n",
    .about =
        "Writes the prompt of a checkpoint (e.g. run/best.h5) as a Hugging Face PEFT\n"
        "prompt-tuning adapter: DIR/adapter_model.safetensors (prompt_embeddings [P, d]) and\n"
        "DIR/adapter_config.json (peft_type PROMPT_TUNING, task_type CAUSAL_LM), loadable with\n"
        "PeftModel.from_pretrained(model, DIR). `softprompt train` already exports the final\n"
        "prompt to run/adapter; use this for the best or any other checkpoint. --format npy\n"
        "and kobold write the prompt for other programs; `softprompt predict` and `eval` read\n"
        "all three back. A checkpoint of a prefix run (--method prefix, ptuning-v2) becomes a\n"
        "PREFIX_TUNING adapter: prompt_embeddings [P, layers x 2 x token_dim] in PEFT's order,\n"
        "token_dim = head_dim x num_key_value_heads (docs/formats.md); npy and kobold hold\n"
        "input prompts only.\n",
    .flags = FLAGS,
};

static void usage(FILE *out) {
    sp__flags_usage(&SPEC, out);
}

/* What base_model_name_or_path will say when --base-model is not given. */
static void print_base_model(const sp_model *m, const char *base) {
    if (base) {
        printf("base_model_name_or_path: %s (--base-model)\n", base);
        return;
    }
    char *revision = NULL;
    const char *origin = NULL;
    sp_error err;
    char *name = sp_peft_base_model(m, &revision, &origin, &err);
    if (!name) return; /* sp_peft_export has already reported it */
    printf("base_model_name_or_path: %s (%s)%s%s\n", name, origin, revision ? ", revision " : "",
           revision ? revision : "");
    free(name), free(revision);
}

/* An adapter already in dir is someone's work: replaced only with --force. */
static int check_out(const char *dir, int force, sp_error *err) {
    static const char *const names[] = {"adapter_model.safetensors", "adapter_config.json"};
    for (int i = 0; i < 2 && !force; i++) {
        char path[4200];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (stat(path, &st) == 0)
            return sp_fail(err, "%s already exists (--force replaces it)", path);
    }
    return 0;
}

/* PROMPT_TUNING for a prompt, PREFIX_TUNING for a prefix; PEFT has no type for both. */
static int write_adapter(const char *out, const sp_prompt_file *pf, const sp_model *m,
                         const char *base, sp_error *err) {
    if (pf->n_prompt && pf->n_prefix)
        return sp_fail(err,
                       "%s holds a prompt and a key/value prefix (--method prompt+prefix): PEFT "
                       "has no adapter type for both, so no adapter can hold it",
                       pf->path);
    if (pf->n_prefix) return sp_peft_export_prefix(out, pf->prefix, pf->n_prefix, m, base, 0, err);
    return sp_peft_export(out, pf->prompt, pf->n_prompt, m, base,
                          pf->init_name ? pf->init_name : "file", pf->init_text, err);
}

static int export_adapter(const char *model_dir, const char *prompt_path, const char *out,
                          const char *base, const char *method, int allow_model_mismatch,
                          int force) {
    sp_model m = {0};
    sp_error err;
    sp_prompt_file pf = {0};
    char *warnings = NULL;
    int rc = check_out(out, force, &err);
    if (rc == 0) rc = sp_model_load(&m, model_dir, &err);
    if (rc == 0) rc = sp_prompt_load(prompt_path, &pf, &err);
    if (rc == 0) rc = sp_prompt_check_model(&pf, &m, allow_model_mismatch, &warnings, &err);
    if (warnings) fprintf(stderr, "softprompt export: warning: %s", warnings);
    if (rc == 0 && method) rc = sp_prompt_check_method(&pf, method, &err);
    if (rc == 0) rc = write_adapter(out, &pf, &m, base, &err);
    if (rc == 0) {
        if (pf.n_prefix)
            printf("wrote %s/adapter_model.safetensors and adapter_config.json (PREFIX_TUNING, "
                   "%d x %d)\n",
                   out, pf.n_prefix, pf.n_layer * 2 * pf.kv_dim);
        else
            printf("wrote %s/adapter_model.safetensors and adapter_config.json (%d x %d)\n", out,
                   pf.n_prompt, pf.d);
        print_base_model(&m, base);
    } else {
        fprintf(stderr, "softprompt export: %s\n", err.msg);
    }
    free(warnings);
    sp_prompt_file_free(&pf);
    sp_model_free(&m);
    return rc ? 1 : 0;
}

/* --format npy | kobold: one file. */
static int export_file(const export_args *a) {
    sp_model m = {0};
    sp_error err;
    sp_prompt_file pf = {0};
    char *warnings = NULL;
    int rc = sp_model_load(&m, a->model, &err);
    if (rc == 0) rc = sp_prompt_load(a->prompt, &pf, &err);
    if (rc == 0) rc = sp_prompt_check_model(&pf, &m, a->allow_model_mismatch, &warnings, &err);
    if (warnings) fprintf(stderr, "softprompt export: warning: %s", warnings);
    if (rc == 0 && a->method) rc = sp_prompt_check_method(&pf, a->method, &err);
    if (rc == 0 && pf.n_prefix > 0)
        rc = sp_fail(&err,
                     "%s holds a key/value prefix (%d rows per layer): --format %s holds an input "
                     "prompt only; export it as a PEFT PREFIX_TUNING adapter (--format peft)",
                     a->prompt, pf.n_prefix, a->format);
    sp_kobold_meta meta = a->kobold;
    const char *slash = strrchr(a->out, '/');
    if (!meta.name) meta.name = slash ? slash + 1 : a->out;
    if (!meta.supported) meta.supported = m.dir;
    if (rc == 0)
        rc = !strcmp(a->format, "npy")
                 ? sp_prompt_export_npy(a->out, pf.prompt, pf.n_prompt, pf.d, a->force, &err)
                 : sp_prompt_export_kobold(a->out, pf.prompt, pf.n_prompt, pf.d, &meta, a->force,
                                           &err);
    if (rc == 0)
        printf("wrote %s (%s, %d x %d)\n", a->out, a->format, pf.n_prompt, pf.d);
    else
        fprintf(stderr, "softprompt export: %s\n", err.msg);
    free(warnings);
    sp_prompt_file_free(&pf);
    sp_model_free(&m);
    return rc ? 1 : 0;
}

static int run(int argc, char **argv) {
    export_args a = {0};
    char *pos[argc > 0 ? argc : 1];
    int n_pos, rc = sp__flags_parse(&SPEC, argc, argv, &a, pos, &n_pos);
    if (rc) return rc;
    if (!a.format) a.format = "peft";
    if (strcmp(a.format, "peft") && strcmp(a.format, "npy") && strcmp(a.format, "kobold"))
        return sp__flag_bad("export", "--format", a.format, "peft, npy or kobold");
    int kobold_flag =
        a.kobold.name || a.kobold.author || a.kobold.description || a.kobold.supported;
    if (kobold_flag && strcmp(a.format, "kobold"))
        return sp__flag_usage_error("export", "--name, --author, --description and --supported "
                                              "are meta.json's: they need --format kobold");
    if (strcmp(a.format, "peft")) {
        if (a.base) return sp__flag_usage_error("export", "--base-model is for --format peft");
        return export_file(&a);
    }
    return export_adapter(a.model, a.prompt, a.out, a.base, a.method, a.allow_model_mismatch,
                          a.force);
}

const sp__command SP_CMD_EXPORT = {
    "export", "write a prompt as a PEFT adapter, a .npy or a KoboldAI zip", run, usage};
