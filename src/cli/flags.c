#include "cli/flags.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int sp_flag_bad(const char *cmd, const char *flag, const char *value, const char *expected) {
    fprintf(stderr, "softprompt %s: %s '%s': expected %s\n", cmd, flag, value, expected);
    return 2;
}

int sp_flag_int64(const char *cmd, const char *flag, const char *s, int64_t lo, int64_t hi,
                  int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) {
        char expected[96];
        snprintf(expected, sizeof expected, "an integer from %" PRId64 " to %" PRId64, lo, hi);
        return sp_flag_bad(cmd, flag, s, expected);
    }
    *out = v;
    return 0;
}

int sp_flag_int(const char *cmd, const char *flag, const char *s, long lo, long hi, int *out) {
    int64_t v;
    int rc = sp_flag_int64(cmd, flag, s, lo, hi, &v);
    if (rc == 0) *out = (int)v;
    return rc;
}

int sp_flag_u64(const char *cmd, const char *flag, const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (end == s || *end || errno || s[0] == '-')
        return sp_flag_bad(cmd, flag, s, "an integer from 0 to 18446744073709551615");
    *out = v;
    return 0;
}

int sp_flag_double(const char *cmd, const char *flag, const char *s, double lo, double hi,
                   double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v) || v < lo || v > hi) {
        char expected[96];
        snprintf(expected, sizeof expected, "a number from %g to %g", lo, hi);
        return sp_flag_bad(cmd, flag, s, expected);
    }
    *out = v;
    return 0;
}
