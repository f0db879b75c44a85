/* Display-safe text: strings read from files (class names, templates, attribute values) go
 * through sp__escape before they are printed or put into a message, so that a hostile or
 * careless file cannot move the cursor, clear the screen, fake a line of output or reorder
 * what the terminal shows. */
#ifndef SP_UTIL_ESCAPE_H
#define SP_UTIL_ESCAPE_H

#include <stddef.h>

/* Copies s into buf (cap >= 8 bytes, always NUL-terminated) with
 *   - control characters (U+0000-001F, U+007F) as C escapes: \n \r \t, others \xNN (ESC is
 *     \x1b), and C1 controls (U+0080-009F) as \u{NNNN};
 *   - the invisible characters that reorder or break lines (U+061C, U+200E/F, U+2028/9,
 *     U+202A-202E, U+2066-2069) as \u{NNNN};
 *   - bytes that are not well-formed UTF-8 as \xNN;
 * everything else (printable ASCII, backslash included, and other UTF-8) unchanged. Text that
 * does not fit ends in "..." (never cut inside a character or an escape). Returns buf. */
const char *sp__escape(const char *s, char *buf, size_t cap);

/* Like sp__escape for len bytes of s (which may hold NUL bytes, shown as \x00). */
const char *sp__escape_n(const char *s, size_t len, char *buf, size_t cap);

#endif
