/* sp__escape: strings from files are shown with their control, invisible-reordering and
 * non-UTF-8 characters escaped, and cut with "..." only between characters. */
#include <string.h>

#include "testutil.h"
#include "util/escape.h"

static void expect(const char *in, size_t len, const char *want) {
    char buf[128];
    ck_assert_str_eq(sp__escape_n(in, len, buf, sizeof buf), want);
}

#define EXPECT(lit, want) expect(lit, sizeof(lit) - 1, want)

START_TEST(escapes_what_a_terminal_would_act_on) {
    EXPECT("positive", "positive");
    EXPECT("caf\xC3\xA9 \xE2\x9C\x93 a\\b \"q\"", "caf\xC3\xA9 \xE2\x9C\x93 a\\b \"q\"");
    EXPECT("two\nlines\r\tx", "two\\nlines\\r\\tx");
    EXPECT("\x1b[2J\x1b]0;title\x07", "\\x1b[2J\\x1b]0;title\\x07");
    EXPECT("nul\0byte\x7f", "nul\\x00byte\\x7f");
    EXPECT("c1\xC2\x85"
           "x\xC2\x9B",
           "c1\\u{0085}x\\u{009b}");
    EXPECT("abc\xE2\x80\xAE"
           "fdp.exe",
           "abc\\u{202e}fdp.exe"); /* right-to-left override */
    EXPECT("\xE2\x80\xA8\xE2\x81\xA6\xD8\x9C", "\\u{2028}\\u{2066}\\u{061c}");
    EXPECT("bad\xFF\xC3(\xED\xA0\x80", "bad\\xff\\xc3(\\xed\\xa0\\x80"); /* not UTF-8 */
    char buf[16];
    ck_assert_str_eq(sp__escape(NULL, buf, sizeof buf), "");
}
END_TEST

START_TEST(long_text_is_cut_between_characters) {
    char buf[12];
    ck_assert_str_eq(sp__escape("abcdefghijklmnop", buf, sizeof buf), "abcdefgh...");
    ck_assert_str_eq(sp__escape("abcdefghijk", buf, sizeof buf), "abcdefghijk");
    ck_assert_str_eq(sp__escape("abcdef\n\nxyz", buf, sizeof buf), "abcdef\\n...");
    ck_assert_str_eq(sp__escape("abcd\xE2\x9C\x93\xE2\x9C\x93\xE2\x9C\x93", buf, sizeof buf),
                     "abcd\xE2\x9C\x93...");
    ck_assert_str_eq(sp__escape("abcde\xE2\x9C\x93\xE2\x9C\x93", buf, sizeof buf),
                     "abcde\xE2\x9C\x93\xE2\x9C\x93");
}
END_TEST

int main(void) {
    const TTest *tests[] = {escapes_what_a_terminal_would_act_on,
                            long_text_is_cut_between_characters, NULL};
    return tu_main("escape", tests, NULL, NULL);
}
