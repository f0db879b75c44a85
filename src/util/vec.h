/* Growable arrays and byte strings: the one way this code grows a buffer.
 *
 * A growable array is a pointer with a count and a capacity beside it, in whatever struct owns
 * them (`T *v; size_t n, cap;`). sp__vec_reserve makes room for `need` elements, at least
 * doubling the capacity so that n appends cost O(n); SP_VEC_PUSH appends one element. Arrays
 * that share one count (the columns of a table: names, values, kinds) get their new capacity
 * from sp__vec_cap and are sized with sp__vec_resize each. Nothing changes when a call fails
 * (-1: out of memory, or a size that would overflow): the owner still frees what it holds.
 *
 * sp__buf is the same for bytes: a NUL always follows the `len` bytes once anything (even zero
 * bytes) was added, so p is a C string for text. An all-zero sp__buf is empty and valid. */
#ifndef SP_UTIL_VEC_H
#define SP_UTIL_VEC_H

#include <stdarg.h>
#include <stdio.h>
#include <stddef.h>

/* The capacity to grow cap to so that need elements fit: cap (min_cap when 0) doubled until it
 * is >= need; cap itself when need <= cap. 0 when that would pass SIZE_MAX / elem elements. */
size_t sp__vec_cap(size_t cap, size_t need, size_t min_cap, size_t elem);

/* *(T **)vp = realloc'd to n elements of elem bytes (n = 0: a 1-byte block, never NULL). */
int sp__vec_resize(void *vp, size_t n, size_t elem);

/* Makes room for need elements in *(T **)vp whose capacity is *cap (grown from 16). */
int sp__vec_reserve(void *vp, size_t *cap, size_t need, size_t elem);

/* Appends x to array v of count n and capacity cap (all lvalues, cap a size_t): 0 or -1. */
#define SP_VEC_PUSH(v, n, cap, x)                                                                  \
    (sp__vec_reserve(&(v), &(cap), (size_t)(n) + 1, sizeof *(v)) != 0 ? -1 : ((v)[(n)++] = (x), 0))

typedef struct sp__buf {
    char *p;
    size_t len, cap;
} sp__buf;

/* Makes room for n more bytes and the NUL after them (grown from 64). */
int sp__buf_reserve(sp__buf *b, size_t n);
/* Appends n bytes of s (s may be NULL when n is 0). */
int sp__buf_add(sp__buf *b, const void *s, size_t n);
/* Appends one byte (inline: readers append byte by byte). */
static inline int sp__buf_addc(sp__buf *b, char c) {
    if (b->len + 2 > b->cap && sp__buf_reserve(b, 1) != 0) return -1;
    b->p[b->len++] = c;
    b->p[b->len] = '\0';
    return 0;
}
/* Appends printf-formatted text. */
int sp__buf_addf(sp__buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int sp__buf_vaddf(sp__buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Appends everything f has left to read. -1 when out of memory or when reading failed
 * (ferror(f) tells which); what was read stays in b either way. */
int sp__buf_read(sp__buf *b, FILE *f);
/* Frees the bytes and empties b. */
void sp__buf_free(sp__buf *b);

#endif
