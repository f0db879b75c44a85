#include "softprompt/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int sp_fail(sp_error *err, const char *fmt, ...) {
    if (!err) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    err->all_ranks = 0;
    return -1;
}

int sp_fail_all_ranks(sp_error *err) {
    if (err) err->all_ranks = 1;
    return -1;
}

int sp_fail_prefix(sp_error *err, const char *fmt, ...) {
    if (!err) return -1;
    char prefix[SP_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    /* Truncation of an over-long message is acceptable; build it piecewise to say so. */
    char old[SP_ERROR_MAX];
    memcpy(old, err->msg, sizeof old);
    size_t n = strnlen(prefix, sizeof err->msg - 3);
    memcpy(err->msg, prefix, n);
    memcpy(err->msg + n, ": ", 2);
    size_t room = sizeof err->msg - n - 3;
    size_t m = strnlen(old, room);
    memcpy(err->msg + n + 2, old, m);
    err->msg[n + 2 + m] = '\0';
    return -1;
}
