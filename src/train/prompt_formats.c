/* Prompts in other programs' files: Lester et al.'s .npy ([n, d] float32) and KoboldAI's soft
 * prompt zip (tensor.npy [n, d] + meta.json), written and read (docs/formats.md). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zip.h>

#include "io/fileutil.h"
#include "io/npy.h"
#include "train/checkpoint_internal.h"
#include "util/vec.h"

#define MAX_PROMPT_FILE_BYTES ((size_t)1 << 30)

/* ---- reading ------------------------------------------------------------------------------- */

int sp__prompt_read_npy(const char *path, sp_prompt_file *pf, sp_error *err) {
    if (sp__check_file_size(path, MAX_PROMPT_FILE_BYTES, "a .npy prompt", err)) return -1;
    FILE *f = fopen(path, "rb");
    if (!f) return sp_fail(err, "%s: cannot open: %s", path, strerror(errno));
    sp__buf b = {0};
    int rc = sp__buf_read(&b, f) ? sp_fail(err, "%s: cannot read: %s", path, strerror(errno)) : 0;
    fclose(f);
    if (rc == 0)
        rc = sp__npy_parse((const unsigned char *)b.p, b.len, path, &pf->prompt, &pf->n_prompt,
                           &pf->d, err);
    sp__buf_free(&b);
    pf->kind = SP_PROMPT_NPY;
    return rc;
}

/* Entry name of z into a malloc'd buffer (at most cap bytes); NULL with err. */
static unsigned char *read_entry(zip_t *z, const char *path, const char *name, size_t cap,
                                 size_t *len, sp_error *err) {
    zip_stat_t st;
    if (zip_stat(z, name, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE)) {
        sp_fail(err, "%s: no %s in the zip", path, name);
        return NULL;
    }
    if (st.size > cap) {
        sp_fail(err, "%s: %s is %llu bytes, more than the limit of %zu MiB", path, name,
                (unsigned long long)st.size, cap >> 20);
        return NULL;
    }
    unsigned char *buf = malloc(st.size ? st.size : 1);
    zip_file_t *f = buf ? zip_fopen(z, name, 0) : NULL;
    zip_int64_t got = f ? zip_fread(f, buf, st.size) : -1;
    if (f) zip_fclose(f);
    if (got < 0 || (zip_uint64_t)got != st.size) {
        free(buf);
        sp_fail(err, "%s: cannot read %s from the zip (damaged?)", path, name);
        return NULL;
    }
    *len = (size_t)st.size;
    return buf;
}

/* meta.json's "name" and "description", when it has them, as the prompt's description. */
static void kobold_meta(zip_t *z, const char *path, sp_prompt_file *pf) {
    size_t len;
    sp_error ignored;
    if (zip_name_locate(z, "meta.json", 0) < 0) return;
    unsigned char *m = read_entry(z, path, "meta.json", (size_t)1 << 20, &len, &ignored);
    json_t *j = m ? json_loadb((const char *)m, len, 0, NULL) : NULL;
    const char *name = json_string_value(json_object_get(j, "name"));
    if (name) pf->init_text = strdup(name);
    json_decref(j);
    free(m);
}

/* torch.save's zip: ARCHIVE/data.pkl. */
static int holds_pickle(zip_t *z) {
    zip_int64_t n = zip_get_num_entries(z, 0);
    for (zip_int64_t i = 0; i < n; i++) {
        const char *name = zip_get_name(z, (zip_uint64_t)i, 0);
        size_t len = name ? strlen(name) : 0;
        if (len >= 8 && strcmp(name + len - 8, "data.pkl") == 0) return 1;
    }
    return 0;
}

int sp__prompt_read_kobold(const char *path, sp_prompt_file *pf, sp_error *err) {
    int zerr = 0;
    zip_t *z = zip_open(path, ZIP_RDONLY | ZIP_CHECKCONS, &zerr);
    if (!z) {
        zip_error_t e;
        zip_error_init_with_code(&e, zerr);
        sp_fail(err, "%s: not a readable zip: %s", path, zip_error_strerror(&e));
        zip_error_fini(&e);
        return -1;
    }
    int rc = 0;
    if (holds_pickle(z))
        rc = sp_fail(err,
                     "%s: a PyTorch pickle (torch.save's zip, with data.pkl): refused, because "
                     "loading a pickle can run arbitrary code. Convert it once, in Python, if you "
                     "trust it: numpy.save('prompt.npy', torch.load('%s', weights_only=True)"
                     ".float().numpy())",
                     path, path);
    else if (zip_name_locate(z, "tensor.npy", 0) < 0)
        rc = sp_fail(err, "%s: a zip without tensor.npy: not a KoboldAI soft prompt", path);
    size_t len;
    unsigned char *npy =
        rc ? NULL : read_entry(z, path, "tensor.npy", MAX_PROMPT_FILE_BYTES, &len, err);
    if (rc == 0 && !npy) rc = -1;
    char what[4200];
    snprintf(what, sizeof what, "%s: tensor.npy", path);
    if (rc == 0) rc = sp__npy_parse(npy, len, what, &pf->prompt, &pf->n_prompt, &pf->d, err);
    if (rc == 0) kobold_meta(z, path, pf);
    free(npy);
    zip_discard(z);
    pf->kind = SP_PROMPT_KOBOLD;
    return rc;
}

/* ---- writing ------------------------------------------------------------------------------- */

static int refuse_existing(const char *path, int force, sp_error *err) {
    struct stat st;
    if (!force && stat(path, &st) == 0)
        return sp_fail(err, "%s: already exists (--force replaces it)", path);
    return 0;
}

int sp_prompt_export_npy(const char *path, const float *prompt, int n_prompt, int d, int force,
                         sp_error *err) {
    unsigned char *b;
    size_t len;
    if (refuse_existing(path, force, err)) return -1;
    if (sp__npy_write(prompt, n_prompt, d, &b, &len)) return sp_fail(err, "out of memory");
    int rc = sp__write_file_atomic(path, b, len, err);
    free(b);
    return rc;
}

static int add_buffer(zip_t *z, const char *name, void *data, size_t len) {
    zip_source_t *s = zip_source_buffer(z, data, len, 0);
    if (!s) return -1;
    if (zip_file_add(z, name, s, ZIP_FL_ENC_UTF_8) < 0) {
        zip_source_free(s);
        return -1;
    }
    return 0;
}

/* meta.json as KoboldAI's soft-prompt tuner writes it: name, author, supported, description. */
static char *kobold_meta_json(const sp_kobold_meta *m) {
    json_t *j = json_pack("{s:s, s:s, s:s, s:s}", "name", m->name ? m->name : "", "author",
                          m->author ? m->author : "", "supported", m->supported ? m->supported : "",
                          "description", m->description ? m->description : "");
    char *s = j ? json_dumps(j, JSON_INDENT(4) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    return s;
}

/* The zip into tmp (created empty by sp__temp_beside). */
static int write_zip(const char *tmp, unsigned char *npy, size_t npy_len, char *meta,
                     sp_error *err) {
    int zerr = 0;
    zip_t *z = zip_open(tmp, ZIP_TRUNCATE, &zerr);
    if (!z) return sp_fail(err, "%s: cannot create the zip (libzip error %d)", tmp, zerr);
    if (add_buffer(z, "tensor.npy", npy, npy_len) ||
        add_buffer(z, "meta.json", meta, strlen(meta))) {
        sp_fail(err, "%s: %s", tmp, zip_strerror(z));
        zip_discard(z);
        return -1;
    }
    if (zip_close(z) != 0) {
        sp_fail(err, "%s: cannot write: %s", tmp, zip_strerror(z));
        zip_discard(z);
        return -1;
    }
    return 0;
}

int sp_prompt_export_kobold(const char *path, const float *prompt, int n_prompt, int d,
                            const sp_kobold_meta *meta, int force, sp_error *err) {
    unsigned char *npy = NULL;
    size_t len;
    char *tmp = NULL, *mj = NULL;
    if (refuse_existing(path, force, err)) return -1;
    if (sp__npy_write(prompt, n_prompt, d, &npy, &len) || !(mj = kobold_meta_json(meta))) {
        free(npy);
        return sp_fail(err, "out of memory");
    }
    int fd = sp__temp_beside(path, &tmp, err), rc = fd < 0 ? -1 : 0;
    if (fd >= 0) close(fd);
    if (rc == 0 && write_zip(tmp, npy, len, mj, err)) rc = -1;
    if (rc == 0) {
        rc = sp__commit(-1, tmp, path, err);
        if (rc == SP_COMMIT_UNSYNCED) unlink(path), rc = -1;
    } else if (tmp) {
        unlink(tmp);
    }
    free(tmp), free(npy), free(mj);
    return rc;
}
