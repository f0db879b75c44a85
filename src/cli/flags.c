#include <assert.h>
#include "cli/flags.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "softprompt/input.h"
#include "softprompt/model.h"
#include "softprompt/train.h"

/* ---------------------------------------------------------------- messages */

/* What the messages name: "softprompt train" for a command, the program for a separate
 * executable (spec.program). */
static const char *who(const sp__flag_spec *spec, char *buf, size_t cap) {
    if (spec->program) return spec->program;
    snprintf(buf, cap, "softprompt %s", spec->cmd);
    return buf;
}

static int vmessage(const char *name, const char *fmt, va_list ap) {
    fprintf(stderr, "%s: ", name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    return 2;
}

int sp__flag_usage_error(const char *cmd, const char *fmt, ...) {
    char name[96];
    snprintf(name, sizeof name, "softprompt %s", cmd);
    va_list ap;
    va_start(ap, fmt);
    vmessage(name, fmt, ap);
    va_end(ap);
    return 2;
}

int sp__flag_bad(const char *cmd, const char *flag, const char *value, const char *expected) {
    return sp__flag_usage_error(cmd, "%s '%s': expected %s", flag, value, expected);
}

int sp__flags_error(const sp__flag_spec *spec, const char *fmt, ...) {
    char name[96];
    va_list ap;
    va_start(ap, fmt);
    vmessage(who(spec, name, sizeof name), fmt, ap);
    va_end(ap);
    return 2;
}

static int spec_bad(const sp__flag_spec *spec, const char *flag, const char *value,
                    const char *expected) {
    return sp__flags_error(spec, "%s '%s': expected %s", flag, value, expected);
}

/* ---------------------------------------------------------------- values */

int sp__parse_int64(const char *s, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int sp__parse_u64(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end || errno || s[0] == '-' || s[0] == '+' || s[0] == ' ') return -1;
    *out = v;
    return 0;
}

int sp__parse_double(const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v) || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

const char *sp__flag_methods(void) {
    static char list[128];
    if (list[0]) return list;
    size_t n = 0;
    for (int k = 0; k <= SP_METHOD_PROMPT_PREFIX; k++)
        n += (size_t)snprintf(list + n, sizeof list - n, "%s%s",
                              k == 0                         ? ""
                              : k == SP_METHOD_PROMPT_PREFIX ? " or "
                                                             : ", ",
                              sp_method_name((sp_method)k));
    return list;
}

/* Stores one value; returns 0 or 2 after the bad-value message. */
static int store(const sp__flag_spec *spec, const sp__flag *f, const char *v, void *args) {
    char *p = (char *)args + f->offset, expected[96], flag[80];
    snprintf(flag, sizeof flag, "--%s", f->name);
    int64_t i;
    switch (f->type) {
    case SP_FLAG_SWITCH:
        *(int *)p = f->set;
        return 0;
    case SP_FLAG_STRING:
        *(const char **)p = v;
        return 0;
    case SP_FLAG_INT:
    case SP_FLAG_INT64:
        if (sp__parse_int64(v, (int64_t)f->lo, (int64_t)f->hi, &i) == 0) {
            if (f->type == SP_FLAG_INT)
                *(int *)p = (int)i;
            else
                *(int64_t *)p = i;
            return 0;
        }
        snprintf(expected, sizeof expected, "an integer from %" PRId64 " to %" PRId64,
                 (int64_t)f->lo, (int64_t)f->hi);
        return spec_bad(spec, flag, v, expected);
    case SP_FLAG_U64:
        if (sp__parse_u64(v, (uint64_t *)p) == 0) return 0;
        return spec_bad(spec, flag, v, "an integer from 0 to 18446744073709551615");
    case SP_FLAG_DOUBLE:
        if (sp__parse_double(v, f->lo, f->hi, (double *)p) == 0) return 0;
        snprintf(expected, sizeof expected, "a number from %g to %g", f->lo, f->hi);
        return spec_bad(spec, flag, v, expected);
    case SP_FLAG_CUSTOM: {
        const char *want = f->parse(args, v);
        return want ? spec_bad(spec, flag, v, want) : 0;
    }
    case SP_FLAG_WEIGHTS:
        if (sp_weights_parse(v, (sp_weights *)p) == 0) return 0;
        return spec_bad(spec, flag, v, "auto, f32 or bf16");
    case SP_FLAG_METHOD: {
        sp_method m;
        if (sp_method_parse(v, &m) == 0) return *(const char **)p = v, 0;
        return spec_bad(spec, flag, v, sp__flag_methods());
    }
    case SP_FLAG_INPUT_FORMAT:
        if (sp_input_format_known(v)) return *(const char **)p = v, 0;
        return spec_bad(spec, flag, v, SP_INPUT_FORMATS);
    }
    return 2;
}

/* ---------------------------------------------------------------- parsing */

static const sp__flag *find(const sp__flag *flags, const char *name, size_t len) {
    for (const sp__flag *f = flags; f->name; f++)
        if (strlen(f->name) == len && strncmp(f->name, name, len) == 0) return f;
    return NULL;
}

/* Edit distance (insertions, deletions, substitutions, adjacent swaps), capped strings. */
static int distance(const char *a, size_t n, const char *b) {
    size_t m = strlen(b);
    if (n > 40 || m > 40) return 99;
    int d[41][41];
    for (size_t i = 0; i <= n; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= m; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= n; i++)
        for (size_t j = 1; j <= m; j++) {
            int best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[n][m];
}

static int unknown(const sp__flag_spec *spec, const char *arg, const char *name, size_t len) {
    const sp__flag *best = NULL;
    int best_d = 3;
    for (const sp__flag *f = spec->flags; f->name; f++) {
        int dist = distance(name, len, f->name);
        size_t k = strlen(f->name);
        if (len >= 3 && len < k && strncmp(f->name, name, len) == 0) dist = 1; /* a prefix */
        if (dist < best_d) best_d = dist, best = f;
    }
    if (best)
        return sp__flags_error(spec, "unknown option '%s' (did you mean --%s?)", arg, best->name);
    char prog[96];
    return sp__flags_error(spec, "unknown option '%s' (see %s --help)", arg,
                           who(spec, prog, sizeof prog));
}

typedef struct occurrence {
    const sp__flag *flag;
    const char *value;
} occurrence;

/* A second occurrence of a flag, or of another flag storing into the same place. */
static int conflict(const sp__flag_spec *spec, const occurrence *seen, int n, const sp__flag *f,
                    const char *value) {
    for (int k = 0; k < n; k++) {
        const sp__flag *g = seen[k].flag;
        if (g == f && !(f->flags & SP_FLAG_REPEAT)) {
            if (f->type == SP_FLAG_SWITCH)
                return sp__flags_error(spec, "--%s given twice", f->name);
            return sp__flags_error(spec, "--%s given twice ('%s', then '%s')", f->name,
                                   seen[k].value, value);
        }
        if (g != f && g->offset == f->offset && g->type != SP_FLAG_CUSTOM &&
            f->type != SP_FLAG_CUSTOM)
            return sp__flags_error(spec, "--%s and --%s both given: choose one", g->name, f->name);
    }
    return 0;
}

static int apply_in_order(const sp__flag_spec *spec, occurrence *seen, int n, void *args) {
    int lo = 0, hi = 0;
    for (int k = 0; k < n; k++) {
        if (seen[k].flag->order < lo) lo = seen[k].flag->order;
        if (seen[k].flag->order > hi) hi = seen[k].flag->order;
    }
    for (int order = lo; order <= hi; order++)
        for (int k = 0; k < n; k++)
            if (seen[k].flag->order == order) {
                int rc = store(spec, seen[k].flag, seen[k].value, args);
                if (rc) return rc;
            }
    return 0;
}

static int check_positionals(const sp__flag_spec *spec, char **pos, int n_pos) {
    char name[96];
    if (!spec->positional && n_pos > 0)
        return sp__flags_error(spec, "unexpected argument '%s' (see %s --help)", pos[0],
                               who(spec, name, sizeof name));
    if (!spec->positional) return 0;
    int lo = spec->min_positional, hi = spec->max_positional;
    if (n_pos >= lo && (hi < 0 || n_pos <= hi)) return 0;
    if (lo == 1 && hi == 1)
        return sp__flags_error(spec, "expected exactly one %s, got %d", spec->positional, n_pos);
    if (n_pos > hi)
        return sp__flags_error(spec, "unexpected argument '%s' (at most %d %s)", pos[hi], hi,
                               spec->positional);
    return sp__flags_error(spec, "expected at least %d %s, got %d", lo, spec->positional, n_pos);
}

#ifndef NDEBUG
/* What every table must be (the tables are code: checked where asserts are compiled in). */
static int table_ok(const sp__flag_spec *spec) {
    for (const sp__flag *f = spec->flags; f->name; f++) {
        if ((f->type == SP_FLAG_SWITCH) != (f->metavar == NULL)) return 0;
        if ((f->type == SP_FLAG_CUSTOM) != (f->parse != NULL) || !f->help) return 0;
        for (const sp__flag *g = spec->flags; g < f; g++)
            if (strcmp(g->name, f->name) == 0) return 0;
    }
    return 1;
}
#endif

int sp__flags_parse(const sp__flag_spec *spec, int argc, char **argv, void *args, char **pos,
                    int *n_pos) {
    assert(table_ok(spec));
    occurrence *seen = calloc((size_t)argc + 1, sizeof *seen);
    if (!seen) return sp__flags_error(spec, "out of memory");
    int n = 0, rc = 0, only_positional = 0;
    char name[96];
    *n_pos = 0;
    for (int i = 1; i < argc && rc == 0; i++) {
        const char *a = argv[i];
        if (only_positional || a[0] != '-' || a[1] == '\0') {
            if (!spec->positional) { /* then pos may be NULL */
                rc = check_positionals(spec, argv + i, 1);
                break;
            }
            pos[(*n_pos)++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_positional = 1;
            continue;
        }
        if (a[1] != '-') {
            rc = unknown(spec, a, a + 1, strlen(a + 1));
            break;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const sp__flag *f = find(spec->flags, name, len);
        if (!f) {
            rc = unknown(spec, a, name, len);
            break;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (f->type == SP_FLAG_SWITCH && value) {
            rc = sp__flags_error(spec, "--%s takes no value (given '%s')", f->name, a);
            break;
        }
        if (f->type != SP_FLAG_SWITCH && !value) {
            if (i + 1 >= argc) {
                rc = sp__flags_error(spec, "--%s needs a value (%s)", f->name,
                                     f->metavar ? f->metavar : "VALUE");
                break;
            }
            value = argv[++i];
        }
        rc = conflict(spec, seen, n, f, value ? value : "");
        seen[n].flag = f, seen[n].value = value, n++;
    }
    if (rc == 0) rc = apply_in_order(spec, seen, n, args);
    for (const sp__flag *f = spec->flags; rc == 0 && f->name; f++) {
        if (!(f->flags & SP_FLAG_REQUIRED)) continue;
        int given = 0;
        for (int k = 0; k < n; k++) given |= seen[k].flag == f;
        if (!given)
            rc = sp__flags_error(spec, "--%s is required (see %s --help)", f->name,
                                 who(spec, name, sizeof name));
    }
    free(seen);
    return rc ? rc : check_positionals(spec, pos, *n_pos);
}

int sp__flags_wants_help(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) break;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) return 1;
    }
    return 0;
}

int sp__flags_program(const sp__flag_spec *spec, int argc, char **argv, void *args, char **pos,
                      int *n_pos, int *status) {
    int none = 0;
    if (sp__flags_wants_help(argc, argv)) {
        sp__flags_usage(spec, stdout);
        return *status = 0, 1;
    }
    *status = sp__flags_parse(spec, argc, argv, args, pos, n_pos ? n_pos : &none);
    return *status != 0;
}

int sp__flags_given(int argc, char **argv, const char *name) {
    size_t len = strlen(name);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) break;
        if (strncmp(a, "--", 2) == 0 && strncmp(a + 2, name, len) == 0 &&
            (a[2 + len] == '\0' || a[2 + len] == '='))
            return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- --help */

static void flag_text(const sp__flag *f, char *buf, size_t cap) {
    if (f->metavar)
        snprintf(buf, cap, "--%s %s", f->name, f->metavar);
    else
        snprintf(buf, cap, "--%s", f->name);
}

static void print_help_lines(FILE *out, const char *help, int column) {
    for (const char *s = help;;) {
        const char *nl = strchr(s, '\n');
        int len = nl ? (int)(nl - s) : (int)strlen(s);
        fprintf(out, "%.*s\n", len, s);
        if (!nl) break;
        s = nl + 1;
        fprintf(out, "%*s", column, "");
    }
}

#define MAX_LEFT 22

void sp__flags_usage(const sp__flag_spec *spec, FILE *out) {
    fputs(spec->usage, out);
    if (spec->about) fprintf(out, "\n%s", spec->about);
    int width = 10; /* "-h, --help" */
    char left[128];
    for (const sp__flag *f = spec->flags; f->name; f++) {
        flag_text(f, left, sizeof left);
        int n = (int)strlen(left);
        if (n > width && n <= MAX_LEFT) width = n;
    }
    int column = 2 + width + 2;
    const char *group = NULL;
    for (const sp__flag *f = spec->flags; f->name; f++) {
        if (f == spec->flags || (f->group && (!group || strcmp(f->group, group) != 0)))
            fprintf(out, "\n%s:\n", f->group ? f->group : "options");
        if (f->group) group = f->group;
        flag_text(f, left, sizeof left);
        if ((int)strlen(left) > width)
            fprintf(out, "  %s\n%*s", left, column, "");
        else
            fprintf(out, "  %-*s  ", width, left);
        print_help_lines(out, f->help, column);
    }
    fprintf(out, "%s  %-*s  show this help\n", spec->flags[0].name ? "" : "\noptions:\n", width,
            "-h, --help");
    if (spec->epilog) fprintf(out, "\n%s", spec->epilog);
}
