/* Growable arrays and byte strings (see vec.h). */
#include "util/vec.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

size_t sp__vec_cap(size_t cap, size_t need, size_t min_cap, size_t elem) {
    size_t max = SIZE_MAX / (elem ? elem : 1);
    if (need <= cap) return cap;
    if (need > max) return 0;
    size_t c = cap ? cap : min_cap ? min_cap : 1;
    while (c < need) c = c > max / 2 ? max : 2 * c;
    return c;
}

int sp__vec_resize(void *vp, size_t n, size_t elem) {
    if (elem && n > SIZE_MAX / elem) return -1;
    void *old;
    memcpy(&old, vp, sizeof old); /* vp is the address of some T * */
    void *p = realloc(old, n ? n * elem : 1);
    if (!p) return -1;
    memcpy(vp, &p, sizeof p);
    return 0;
}

int sp__vec_reserve(void *vp, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = sp__vec_cap(*cap, need, 16, elem);
    if (c == 0 || sp__vec_resize(vp, c, elem) != 0) return -1;
    *cap = c;
    return 0;
}

int sp__buf_reserve(sp__buf *b, size_t n) {
    if (n > SIZE_MAX - 1 - b->len) return -1;
    return sp__vec_reserve(&b->p, &b->cap, b->len + n + 1 > 64 ? b->len + n + 1 : 64, 1);
}

int sp__buf_add(sp__buf *b, const void *s, size_t n) {
    if (sp__buf_reserve(b, n) != 0) return -1;
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int sp__buf_vaddf(sp__buf *b, const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0 || sp__buf_reserve(b, (size_t)n) != 0) return -1;
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int sp__buf_addf(sp__buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = sp__buf_vaddf(b, fmt, ap);
    va_end(ap);
    return rc;
}

int sp__buf_read(sp__buf *b, FILE *f) {
    for (;;) {
        if (b->cap - b->len < 2 && sp__buf_reserve(b, 4096) != 0) return -1;
        size_t room = b->cap - b->len - 1, r = fread(b->p + b->len, 1, room, f);
        b->len += r;
        b->p[b->len] = '\0';
        if (r < room) return ferror(f) ? -1 : 0;
    }
}

void sp__buf_free(sp__buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}
