/* What an exported adapter records as base_model_name_or_path when the user names none: what
 * the user can load (AutoModelForCausalLM.from_pretrained(X), or PEFT's AutoPeftModel, which
 * loads base_model_name_or_path at revision itself).
 *
 *  1. The Hugging Face repository scripts/get-model downloaded the model from, with the commit
 *     it resolved to as revision, when the download is intact: MODEL/.get-model/source names
 *     them, and config.json and every weight file the model was loaded from are listed in
 *     MODEL/.get-model/manifest.tsv with their current size and modification time (get-model
 *     verified their checksums when it recorded those).
 *  2. Otherwise the model directory's absolute path (symbolic links resolved): loadable on this
 *     machine and on a cluster's shared file system, never relative to where export ran.
 *
 * config.json's "_name_or_path" is not used: transformers writes the name the weights were
 * loaded from before they were saved, which for a fine-tuned model is the model before
 * fine-tuning (current transformers no longer writes it at all). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "softprompt/checkpoint.h"
#include "util/path.h"

/* A Hugging Face repository id: NAME or ORG/NAME of [A-Za-z0-9._-], not starting with '.' or
 * '-', without "..". */
static int is_repo_id(const char *s) {
    int slashes = 0, seg_start = 1;
    if (!*s || strstr(s, "..") || strlen(s) > 200) return 0;
    for (const char *p = s; *p; p++) {
        if (*p == '/') {
            if (seg_start || ++slashes > 1) return 0;
            seg_start = 1;
            continue;
        }
        int ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                 *p == '.' || *p == '_' || *p == '-';
        if (!ok || (seg_start && (*p == '.' || *p == '-'))) return 0;
        seg_start = 0;
    }
    return !seg_start;
}

static int is_commit(const char *s) {
    if (strlen(s) != 40) return 0;
    for (int i = 0; i < 40; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

/* "repository X" and "commit Y" lines of get-model's source file. */
static void read_source(const char *path, char **repo, char **commit) {
    FILE *f = fopen(path, "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (strncmp(line, "repository ", 11) == 0 && !*repo && is_repo_id(line + 11))
            *repo = strdup(line + 11);
        else if (strncmp(line, "commit ", 7) == 0 && !*commit && is_commit(line + 7))
            *commit = strdup(line + 7);
    }
    if (f) fclose(f);
}

/* base (a file of dir) is listed in manifest.tsv with its current size and mtime (as
 * `stat -c '%s %.9Y'` prints them). */
static int unchanged(const char *dir, const char *manifest, const char *base) {
    char *path = sp__path_join(dir, base);
    struct stat st;
    int ok = path && stat(path, &st) == 0;
    free(path);
    if (!ok) return 0;
    char size[32], mtime[48];
    snprintf(size, sizeof size, "%lld", (long long)st.st_size);
    snprintf(mtime, sizeof mtime, "%lld.%09ld", (long long)st.st_mtim.tv_sec,
             (long)st.st_mtim.tv_nsec);
    FILE *f = fopen(manifest, "r");
    char line[4096];
    int found = 0;
    while (f && !found && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *field[5] = {line}, *p = line;
        int n = 1;
        while (n < 5 && (p = strchr(p, '\t'))) *p++ = '\0', field[n++] = p;
        found = n == 5 && strcmp(field[0], base) == 0 && strcmp(field[3], size) == 0 &&
                strcmp(field[4], mtime) == 0;
    }
    if (f) fclose(f);
    return found;
}

/* Every file the model was read from is as get-model verified it. */
static int download_intact(const sp_model *m, const char *state) {
    char *manifest = sp__path_join(state, "manifest.tsv"),
         *index = sp__path_join(m->dir, "model.safetensors.index.json");
    struct stat st;
    int ok = manifest && index && unchanged(m->dir, manifest, "config.json");
    if (ok && stat(index, &st) == 0)
        ok = unchanged(m->dir, manifest, "model.safetensors.index.json");
    for (int i = 0; ok && i < sp_model_n_files(m); i++)
        ok = unchanged(m->dir, manifest, sp__base_name(sp_model_file_path(m, i)));
    free(manifest), free(index);
    return ok;
}

char *sp_peft_base_model(const sp_model *m, char **revision, const char **origin, sp_error *err) {
    *revision = NULL;
    char *state = sp__path_join(m->dir, ".get-model"),
         *source = state ? sp__path_join(state, "source") : NULL;
    char *repo = NULL;
    if (source) read_source(source, &repo, revision);
    if (repo && download_intact(m, state)) {
        if (origin) *origin = "the Hugging Face repository scripts/get-model downloaded it from";
    } else {
        free(repo), free(*revision), *revision = NULL;
        repo = realpath(m->dir, NULL);
        if (origin) *origin = "the model directory's absolute path";
        if (!repo)
            sp_fail(err, "%s: cannot resolve the model directory's absolute path: %s", m->dir,
                    strerror(errno));
    }
    free(state), free(source);
    return repo;
}
