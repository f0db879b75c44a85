/* The step-*.h5 files of a run: their names, the newest one that verifies (for --resume auto),
 * and pruning of old ones. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "softprompt/checkpoint.h"
#include "util/path.h"
#include "util/vec.h"

char *sp_checkpoint_path(const char *dir, int64_t step) {
    if (step < 0) return NULL;
    char *p = NULL;
    if (asprintf(&p, "%s/step-%012lld.h5", dir, (long long)step) < 0) return NULL;
    return p;
}

/* step-<12 to 18 digits>.h5 exactly; returns the step or -1. */
static int64_t parse_step_name(const char *name) {
    if (strncmp(name, "step-", 5) != 0) return -1;
    const char *p = name + 5;
    int64_t v = 0;
    int n = 0;
    while (*p >= '0' && *p <= '9' && n < 19) v = v * 10 + (*p++ - '0'), n++;
    if (n < 12 || n > 18 || strcmp(p, ".h5") != 0) return -1;
    return v;
}

typedef struct step_file {
    int64_t step;
    char *name;
} step_file;

static int cmp_newest_first(const void *a, const void *b) {
    const step_file *x = a, *y = b;
    if (x->step != y->step) return x->step > y->step ? -1 : 1;
    return strcmp(x->name, y->name);
}

static void free_list(step_file *v, size_t n) {
    for (size_t i = 0; i < n; i++) free(v[i].name);
    free(v);
}

/* Lists dir's step-*.h5 names, newest first. *missing = 1 (and 0 files) when dir does not
 * exist. */
static int list_steps(const char *dir, step_file **out, size_t *count, int *missing,
                      sp_error *err) {
    *out = NULL, *count = 0;
    if (missing) *missing = 0;
    DIR *dp = opendir(dir);
    if (!dp) {
        if (errno == ENOENT && missing) {
            *missing = 1;
            return 0;
        }
        return sp_fail(err, "%s: cannot list the checkpoint directory: %s", dir, strerror(errno));
    }
    step_file *v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(dp)) != NULL) {
        int64_t step = parse_step_name(e->d_name);
        if (step < 0) continue;
        step_file f = {.name = strdup(e->d_name), .step = step};
        if (!f.name || SP_VEC_PUSH(v, n, cap, f) != 0) {
            free(f.name);
            rc = sp_fail(err, "%s: out of memory", dir);
            break;
        }
    }
    closedir(dp);
    if (rc != 0) {
        free_list(v, n);
        return -1;
    }
    if (n) qsort(v, n, sizeof *v, cmp_newest_first);
    *out = v, *count = n;
    return 0;
}

int sp_checkpoint_find_latest(const char *dir, char **path, char **warnings, sp_error *err) {
    *path = NULL;
    if (warnings) *warnings = NULL;
    step_file *v;
    size_t n;
    int missing;
    if (list_steps(dir, &v, &n, &missing, err) != 0) return -1;
    char *warn = NULL;
    size_t warn_len = 0;
    FILE *w = warnings ? open_memstream(&warn, &warn_len) : NULL;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        char *p = sp__path_join(dir, v[i].name);
        if (!p) {
            rc = sp_fail(err, "%s: out of memory", dir);
            break;
        }
        sp_checkpoint c;
        sp_error e = {0};
        if (sp_checkpoint_read(p, &c, &e) == 0) {
            sp_checkpoint_free(&c);
            *path = p;
            break;
        }
        /* The reason usually starts with the path already; do not say it twice. */
        size_t plen = strlen(p);
        const char *reason = strncmp(e.msg, p, plen) == 0 && strncmp(e.msg + plen, ": ", 2) == 0
                                 ? e.msg + plen + 2
                                 : e.msg;
        if (w) fprintf(w, "skipping %s: %s\n", p, reason);
        free(p);
    }
    if (w) fclose(w);
    free_list(v, n);
    if (rc != 0) {
        free(warn);
        return -1;
    }
    if (warnings) {
        if (warn && warn_len == 0) free(warn), warn = NULL;
        *warnings = warn;
    }
    return 0;
}

int sp_checkpoint_prune(const char *dir, int keep_last, const char *keep_also, sp_error *err) {
    if (keep_last < 1)
        return sp_fail(err, "%s: keep_last must be at least 1 (got %d)", dir, keep_last);
    struct stat keep_st;
    int have_keep = keep_also && stat(keep_also, &keep_st) == 0;
    step_file *v;
    size_t n;
    if (list_steps(dir, &v, &n, NULL, err) != 0) return -1;
    int rc = 0;
    for (size_t i = (size_t)keep_last; i < n; i++) {
        char *p = sp__path_join(dir, v[i].name);
        if (!p) {
            rc = sp_fail(err, "%s: out of memory", dir);
            break;
        }
        struct stat st;
        int is_keep = have_keep && stat(p, &st) == 0 && st.st_dev == keep_st.st_dev &&
                      st.st_ino == keep_st.st_ino;
        if (!is_keep && unlink(p) != 0 && errno != ENOENT && rc == 0)
            rc = sp_fail(err, "%s: cannot delete old checkpoint: %s", p, strerror(errno));
        free(p);
    }
    free_list(v, n);
    return rc;
}
