/* sp_checkpoint_read: the checkpoint layout (see checkpoint_internal.h), read field by field
 * with every dtype, shape and range checked, then the checksum recomputed and compared, then
 * the values checked (no non-finite state). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/checkpoint_internal.h"
#include "train/hash64.h"

int sp__ckpt_check_prompt_dims(const hsize_t dims[2], const char *path, sp_error *err) {
    if (dims[0] < 1 || dims[1] < 1 || dims[0] > SP_CKPT_PROMPT_MAX_DIM ||
        dims[1] > SP_CKPT_PROMPT_MAX_DIM || dims[0] * dims[1] > SP_CKPT_PROMPT_MAX_ELEMS)
        return sp_fail(err, "%s: dataset \"prompt\" has an invalid shape [%llu, %llu]", path,
                       (unsigned long long)dims[0], (unsigned long long)dims[1]);
    return 0;
}

/* One trainable tensor (name checked by the caller), any shape of 1 to 4 dimensions. */
static int read_tensor(hid_t f, const char *name, sp_checkpoint *c, const char *path,
                       sp_error *err) {
    if (c->n_tensors == SP_CHECKPOINT_MAX_TENSORS)
        return sp_fail(err, "%s: more than %d trainable tensors", path, SP_CHECKPOINT_MAX_TENSORS);
    sp_checkpoint_tensor *a = &c->tensors[c->n_tensors];
    if (!sp__ckpt_tensor_name_ok(name) || strlen(name) >= sizeof a->name)
        return sp_fail(err, "%s: unexpected dataset \"%.60s\"", path, name);
    hsize_t dims[4];
    hid_t d = sp__ckpt_open_dataset(f, name, name, 'f', 1, 1, 4, dims, path, err);
    if (d < 0) return -1;
    hid_t space = H5Dget_space(d);
    int rank = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    sp__h5_close(space);
    size_t n = 1;
    for (int k = 0; k < rank; k++)
        n = dims[k] >= 1 && dims[k] <= SP_CKPT_PROMPT_MAX_DIM ? n * (size_t)dims[k] : 0;
    if (rank < 1 || n == 0 || n > SP_CKPT_PROMPT_MAX_ELEMS) {
        H5Dclose(d);
        return sp_fail(err, "%s: dataset \"%s\" has an invalid shape", path, name);
    }
    snprintf(a->name, sizeof a->name, "%s", name);
    a->rank = rank, a->n = n;
    for (int k = 0; k < 4; k++) a->dims[k] = k < rank ? (int64_t)dims[k] : 1;
    a->data = sp__ckpt_read_all(d, H5T_NATIVE_FLOAT, n, sizeof(float), name, path, err);
    H5Dclose(d);
    if (!a->data) return -1;
    c->n_tensors++;
    return 0;
}

/* "prefix" at the root and every dataset of group "prefix_encoder", when present. */
static int read_tensors(hid_t f, sp_checkpoint *c, const char *path, sp_error *err) {
    htri_t has = H5Lexists(f, "prefix", H5P_DEFAULT);
    if (has < 0) return sp__h5_fail(err, "%s: cannot look up dataset \"prefix\"", path);
    if (has && read_tensor(f, "prefix", c, path, err)) return -1;
    has = H5Lexists(f, "prefix_encoder", H5P_DEFAULT);
    if (has < 0) return sp__h5_fail(err, "%s: cannot look up group \"prefix_encoder\"", path);
    if (!has) return 0;
    hid_t g = H5Gopen2(f, "prefix_encoder", H5P_DEFAULT);
    H5G_info_t info;
    if (g < 0 || H5Gget_info(g, &info) < 0) {
        sp__h5_close(g);
        return sp__h5_fail(err, "%s: \"prefix_encoder\" is not a readable group", path);
    }
    int rc = info.nlinks > SP_CHECKPOINT_MAX_TENSORS
                 ? sp_fail(err, "%s: group \"prefix_encoder\" holds %llu datasets", path,
                           (unsigned long long)info.nlinks)
                 : 0;
    for (hsize_t i = 0; rc == 0 && i < info.nlinks; i++) {
        char word[40], name[64];
        ssize_t len = H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, word, sizeof word,
                                         H5P_DEFAULT);
        if (len < 0 || (size_t)len >= sizeof word) {
            rc = sp_fail(err, "%s: group \"prefix_encoder\": unreadable or long name", path);
            break;
        }
        snprintf(name, sizeof name, "prefix_encoder/%s", word);
        rc = read_tensor(f, name, c, path, err);
    }
    H5Gclose(g);
    return rc;
}

static int read_prompt(hid_t f, sp_checkpoint *c, const char *path, sp_error *err) {
    htri_t has = H5Lexists(f, "prompt", H5P_DEFAULT);
    if (has == 0 && c->n_tensors > 0) return 0; /* a prefix run: no input prompt */
    hsize_t dims[2];
    hid_t d = sp__ckpt_open_dataset(f, "prompt", "prompt", 'f', 1, 2, 2, dims, path, err);
    if (d < 0) return -1;
    if (sp__ckpt_check_prompt_dims(dims, path, err) != 0) {
        H5Dclose(d);
        return -1;
    }
    c->n_prompt = (int)dims[0], c->d = (int)dims[1];
    c->prompt = sp__ckpt_read_all(d, H5T_NATIVE_FLOAT, dims[0] * dims[1], sizeof(float), "prompt",
                                  path, err);
    H5Dclose(d);
    return c->prompt ? 0 : -1;
}

static int read_optimizer(hid_t f, sp_checkpoint *c, const char *path, sp_error *err) {
    htri_t has = H5Lexists(f, "optimizer", H5P_DEFAULT);
    if (has <= 0)
        return has < 0 ? sp__h5_fail(err, "%s: cannot look up group \"optimizer\"", path)
                       : sp_fail(err, "%s: missing group \"optimizer\"", path);
    hid_t g = H5Gopen2(f, "optimizer", H5P_DEFAULT);
    H5G_info_t info;
    if (g < 0 || H5Gget_info(g, &info) < 0) {
        sp__h5_close(g);
        return sp__h5_fail(err, "%s: \"optimizer\" is not a readable group", path);
    }
    if (info.nlinks > SP_CHECKPOINT_MAX_OPTIM) {
        H5Gclose(g);
        return sp_fail(err, "%s: group \"optimizer\" holds %llu arrays (at most %d)", path,
                       (unsigned long long)info.nlinks, SP_CHECKPOINT_MAX_OPTIM);
    }
    int rc = 0;
    for (hsize_t i = 0; i < info.nlinks && rc == 0; i++) {
        sp_checkpoint_array *a = &c->optim[c->n_optim];
        ssize_t len = H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, a->name,
                                         sizeof a->name, H5P_DEFAULT);
        if (len < 0) {
            rc = sp__h5_fail(err, "%s: cannot list group \"optimizer\"", path);
            break;
        }
        if ((size_t)len >= sizeof a->name) {
            rc = sp_fail(err, "%s: optimizer array name \"optimizer/%s...\" is too long", path,
                         a->name);
            break;
        }
        char shown[48];
        snprintf(shown, sizeof shown, "optimizer/%s", a->name);
        hsize_t dims[2];
        hid_t d = sp__ckpt_open_dataset(g, a->name, shown, 'f', 1, 1, 2, dims, path, err);
        if (d < 0) {
            rc = -1;
            break;
        }
        int rank = 1;
        hid_t space = H5Dget_space(d);
        if (space >= 0) rank = H5Sget_simple_extent_ndims(space), H5Sclose(space);
        if (rank == 2 && (dims[0] != (hsize_t)c->n_prompt || dims[1] != (hsize_t)c->d))
            rc = sp_fail(err,
                         "%s: dataset \"%s\" is [%llu, %llu] but a 2-D optimizer array must "
                         "match the prompt [%d, %d]",
                         path, shown, (unsigned long long)dims[0], (unsigned long long)dims[1],
                         c->n_prompt, c->d);
        else if (rank == 1 && (dims[0] < 1 || dims[0] > SP_CKPT_PROMPT_MAX_ELEMS))
            rc = sp_fail(err, "%s: dataset \"%s\" has an invalid length %llu", path, shown,
                         (unsigned long long)dims[0]);
        if (rc == 0) {
            a->n = rank == 2 ? (size_t)(dims[0] * dims[1]) : (size_t)dims[0];
            a->data = sp__ckpt_read_all(d, H5T_NATIVE_FLOAT, a->n, sizeof(float), shown, path, err);
            if (a->data)
                c->n_optim++;
            else
                rc = -1;
        }
        H5Dclose(d);
    }
    H5Gclose(g);
    return rc;
}

static int read_rng(hid_t f, sp_checkpoint *c, const char *path, sp_error *err) {
    hsize_t dims[2];
    hid_t d = sp__ckpt_open_dataset(f, "rng_state", "rng_state", 'u', 1, 1, 1, dims, path, err);
    if (d < 0) return -1;
    int rc = 0;
    if (dims[0] != 4)
        rc = sp_fail(err, "%s: dataset \"rng_state\" must hold 4 values (found %llu)", path,
                     (unsigned long long)dims[0]);
    else if (H5Dread(d, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, c->rng) < 0)
        rc = sp__h5_fail(err, "%s: cannot read dataset \"rng_state\"", path);
    H5Dclose(d);
    return rc;
}

/* format and format_version, checked first so a foreign file gets a plain answer. */
static int read_format(hid_t f, const char *path, sp_error *err) {
    htri_t has = H5Aexists(f, "format");
    if (has <= 0)
        return has < 0 ? sp__h5_fail(err, "%s: cannot look up root attribute \"format\"", path)
                       : sp_fail(err,
                                 "%s: missing root attribute \"format\" (not a softprompt "
                                 "checkpoint)",
                                 path);
    char *format = NULL;
    if (sp__ckpt_read_str(f, "format", &format, path, err) != 0) return -1;
    int same = strcmp(format, SP_CHECKPOINT_FORMAT) == 0;
    if (!same)
        sp_fail(err, "%s: format is \"%.100s\", not \"%s\" (not a softprompt checkpoint)", path,
                format, SP_CHECKPOINT_FORMAT);
    free(format);
    if (!same) return -1;
    int64_t version;
    if (sp__ckpt_read_i64(f, "format_version", INT64_MIN, &version, path, err) != 0) return -1;
    if (version > SP_CHECKPOINT_VERSION)
        return sp_fail(err,
                       "%s: format_version %" PRId64
                       " is newer than this softprompt reads (%d); upgrade softprompt",
                       path, version, SP_CHECKPOINT_VERSION);
    if (version != SP_CHECKPOINT_VERSION)
        return sp_fail(err, "%s: unsupported format_version %" PRId64 " (expected %d)", path,
                       version, SP_CHECKPOINT_VERSION);
    return 0;
}

static int is_hex16(const char *s) {
    if (strlen(s) != 16) return 0;
    for (int i = 0; i < 16; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

int sp__ckpt_read_contents(hid_t f, sp_checkpoint *c, const char *path, sp_error *err) {
    char *stored = NULL;
    if (read_format(f, path, err) || read_tensors(f, c, path, err) ||
        read_prompt(f, c, path, err) || read_optimizer(f, c, path, err) ||
        read_rng(f, c, path, err) || sp__ckpt_read_i64(f, "step", 0, &c->step, path, err) ||
        sp__ckpt_read_i64(f, "epoch", 0, &c->epoch, path, err) ||
        sp__ckpt_read_i64(f, "epoch_position", 0, &c->epoch_position, path, err) ||
        sp__ckpt_read_i64(f, "tokens_seen", 0, &c->tokens_seen, path, err) ||
        sp__ckpt_read_i64(f, "optim_step", 0, &c->optim_step, path, err) ||
        sp__ckpt_read_str(f, "config_json", &c->config_json, path, err) ||
        sp__ckpt_read_str(f, "model_fingerprint", &c->model_fingerprint, path, err) ||
        sp__ckpt_read_str(f, "dataset_fingerprint", &c->dataset_fingerprint, path, err) ||
        sp__ckpt_read_str(f, "metric_name", &c->metric_name, path, err) ||
        sp__ckpt_read_f64(f, "metric", &c->metric, path, err) ||
        sp__ckpt_read_f64(f, "best_metric", &c->best_metric, path, err) ||
        sp__ckpt_read_i64(f, "best_step", -1, &c->best_step, path, err) ||
        sp__ckpt_read_str(f, "created_by", &c->created_by, path, err) ||
        sp__ckpt_read_str(f, "checksum", &stored, path, err))
        return -1;
    char computed[17];
    sp__h64_hex(sp__ckpt_checksum(c, c->created_by), computed);
    int rc = 0;
    if (!is_hex16(stored))
        rc = sp_fail(err,
                     "%s: root attribute \"checksum\" is \"%.40s\", not 16 hex digits: the file "
                     "is corrupt",
                     path, stored);
    else if (strcmp(stored, computed) != 0)
        rc = sp_fail(err, "%s: checksum mismatch: the file is corrupt (stored %s, computed %s)",
                     path, stored, computed);
    free(stored);
    /* Meaning after integrity: a corrupt file is reported as corrupt, a verified one holding
     * non-finite state as such. */
    return rc == 0 ? sp__ckpt_check_values(c, path, err) : rc;
}

void sp_checkpoint_free(sp_checkpoint *c) {
    if (!c) return;
    free(c->prompt);
    for (int i = 0; i < c->n_tensors && i < SP_CHECKPOINT_MAX_TENSORS; i++)
        free(c->tensors[i].data);
    for (int i = 0; i < c->n_optim && i < SP_CHECKPOINT_MAX_OPTIM; i++) free(c->optim[i].data);
    free(c->config_json), free(c->model_fingerprint), free(c->dataset_fingerprint);
    free(c->metric_name), free(c->created_by);
    memset(c, 0, sizeof *c);
}

int sp_checkpoint_read(const char *path, sp_checkpoint *c, sp_error *err) {
    memset(c, 0, sizeof *c);
    sp__h5_quiet();
    if (sp__ckpt_precheck(path, 1, err) != 0) return -1;
    hid_t f = sp__ckpt_open_h5(path, err);
    if (f < 0) return -1;
    int rc = sp__ckpt_read_contents(f, c, path, err);
    if (H5Fclose(f) < 0 && rc == 0) rc = sp__h5_fail(err, "%s: cannot close", path);
    H5Eclear2(H5E_DEFAULT);
    if (rc != 0) sp_checkpoint_free(c);
    return rc;
}
