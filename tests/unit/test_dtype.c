/* dtype names and the float16 / bfloat16 <-> float32 conversions, against known bit patterns. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "softprompt/dtype.h"
#include "testutil.h"

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

START_TEST(names_and_sizes) {
    sp_dtype dt;
    ck_assert_int_eq(sp_dtype_from_name("F32", &dt), 0);
    ck_assert_int_eq(dt, SP_DTYPE_F32);
    ck_assert_int_eq(sp_dtype_from_name("BF16", &dt), 0);
    ck_assert_int_eq(dt, SP_DTYPE_BF16);
    ck_assert_int_eq(sp_dtype_from_name("BOOL", &dt), 0);
    ck_assert_int_eq(dt, SP_DTYPE_BOOL);
    ck_assert_int_eq(sp_dtype_from_name("f32", &dt), -1); /* names are case-sensitive */
    ck_assert_int_eq(sp_dtype_from_name("F8_E4M3", &dt), -1);
    ck_assert_str_eq(sp_dtype_name(SP_DTYPE_F16), "F16");
    ck_assert_uint_eq(sp_dtype_size(SP_DTYPE_F64), 8);
    ck_assert_uint_eq(sp_dtype_size(SP_DTYPE_BF16), 2);
    ck_assert_uint_eq(sp_dtype_size(SP_DTYPE_U8), 1);
    ck_assert(sp_dtype_is_float(SP_DTYPE_BF16));
    ck_assert(!sp_dtype_is_float(SP_DTYPE_I32));
}
END_TEST

START_TEST(f16_known_values) {
    ck_assert_uint_eq(sp_f32_to_f16(1.0f), 0x3c00);
    ck_assert_uint_eq(sp_f32_to_f16(-2.0f), 0xc000);
    ck_assert_uint_eq(sp_f32_to_f16(65504.0f), 0x7bff);
    ck_assert_uint_eq(sp_f32_to_f16(0.0f), 0x0000);
    ck_assert_uint_eq(sp_f32_to_f16(-0.0f), 0x8000);
    ck_assert_uint_eq(sp_f32_to_f16(ldexpf(1, -24)), 0x0001); /* smallest subnormal */
    ck_assert_uint_eq(sp_f32_to_f16(ldexpf(1, -14)), 0x0400); /* smallest normal */
    ck_assert_uint_eq(sp_f32_to_f16(INFINITY), 0x7c00);
    ck_assert_uint_eq(sp_f32_to_f16(-INFINITY), 0xfc00);
    ck_assert_uint_eq(sp_f32_to_f16(65520.0f), 0x7c00); /* overflows to inf */
    ck_assert_uint_eq(sp_f32_to_f16(65519.0f), 0x7bff);
    uint16_t nan = sp_f32_to_f16(NAN);
    ck_assert_uint_eq(nan & 0x7c00, 0x7c00);
    ck_assert_uint_ne(nan & 0x03ff, 0);

    ck_assert(sp_f16_to_f32(0x3c00) == 1.0f);
    ck_assert(sp_f16_to_f32(0xc000) == -2.0f);
    ck_assert(sp_f16_to_f32(0x7bff) == 65504.0f);
    ck_assert(sp_f16_to_f32(0x0001) == ldexpf(1, -24));
    ck_assert(sp_f16_to_f32(0x03ff) == ldexpf(1023, -24)); /* largest subnormal */
    ck_assert_uint_eq(bits(sp_f16_to_f32(0x8000)), 0x80000000u);
    ck_assert(isinf(sp_f16_to_f32(0x7c00)) && sp_f16_to_f32(0x7c00) > 0);
    ck_assert(isinf(sp_f16_to_f32(0xfc00)) && sp_f16_to_f32(0xfc00) < 0);
    ck_assert(isnan(sp_f16_to_f32(0x7e00)));
}
END_TEST

START_TEST(f16_rounds_ties_to_even) {
    /* 1 + 2^-11 lies halfway between 0x3c00 and 0x3c01: the even one wins. */
    ck_assert_uint_eq(sp_f32_to_f16(1.0f + ldexpf(1, -11)), 0x3c00);
    ck_assert_uint_eq(sp_f32_to_f16(1.0f + 3 * ldexpf(1, -11)), 0x3c02);
    ck_assert_uint_eq(sp_f32_to_f16(1.0f + ldexpf(1, -11) + ldexpf(1, -20)), 0x3c01);
    ck_assert_uint_eq(sp_f32_to_f16(-(1.0f + 3 * ldexpf(1, -11))), 0xbc02);
    /* Subnormal ties: 2^-25 is halfway between 0 and 2^-24; 3 * 2^-25 between 1 and 2 ulps. */
    ck_assert_uint_eq(sp_f32_to_f16(ldexpf(1, -25)), 0x0000);
    ck_assert_uint_eq(sp_f32_to_f16(3 * ldexpf(1, -25)), 0x0002);
    ck_assert_uint_eq(sp_f32_to_f16(ldexpf(1, -26)), 0x0000);
    /* Mantissa carry into the exponent: just below 2.0 rounds up to exactly 2.0. */
    ck_assert_uint_eq(sp_f32_to_f16(2.0f - ldexpf(1, -12)), 0x4000);
}
END_TEST

START_TEST(bf16_known_values) {
    ck_assert_uint_eq(sp_f32_to_bf16(1.0f), 0x3f80);
    ck_assert_uint_eq(sp_f32_to_bf16(-2.0f), 0xc000);
    ck_assert_uint_eq(sp_f32_to_bf16(INFINITY), 0x7f80);
    ck_assert_uint_eq(sp_f32_to_bf16(-INFINITY), 0xff80);
    ck_assert_uint_eq(sp_f32_to_bf16(ldexpf(1, -133)), 0x0001); /* smallest subnormal */
    uint16_t nan = sp_f32_to_bf16(NAN);
    ck_assert_uint_eq(nan & 0x7f80, 0x7f80);
    ck_assert_uint_ne(nan & 0x007f, 0);
    /* Ties to even: 1 + 2^-8 is halfway between 0x3f80 and 0x3f81. */
    ck_assert_uint_eq(sp_f32_to_bf16(1.0f + ldexpf(1, -8)), 0x3f80);
    ck_assert_uint_eq(sp_f32_to_bf16(1.0f + 3 * ldexpf(1, -8)), 0x3f82);
    ck_assert_uint_eq(sp_f32_to_bf16(1.0f + ldexpf(1, -8) + ldexpf(1, -20)), 0x3f81);
    ck_assert_uint_eq(sp_f32_to_bf16(FLT_MAX), 0x7f80); /* rounds up to inf, as PyTorch */

    ck_assert(sp_bf16_to_f32(0x3f80) == 1.0f);
    ck_assert(sp_bf16_to_f32(0xc000) == -2.0f);
    ck_assert(sp_bf16_to_f32(0x0001) == ldexpf(1, -133));
    ck_assert(isnan(sp_bf16_to_f32(0x7fc0)));
}
END_TEST

START_TEST(f16_round_trip_all_patterns) {
    for (uint32_t h = 0; h <= 0xffff; h++) {
        float f = sp_f16_to_f32((uint16_t)h);
        int is_nan = (h & 0x7c00) == 0x7c00 && (h & 0x03ff);
        if (is_nan) {
            ck_assert_msg(isnan(f), "0x%04x should decode to nan", h);
            continue;
        }
        ck_assert_msg(sp_f32_to_f16(f) == h, "0x%04x -> %a -> 0x%04x", h, (double)f,
                      sp_f32_to_f16(f));
    }
}
END_TEST

START_TEST(bf16_round_trip_all_patterns) {
    for (uint32_t b = 0; b <= 0xffff; b++) {
        float f = sp_bf16_to_f32((uint16_t)b);
        if (isnan(f)) continue;
        ck_assert_msg(sp_f32_to_bf16(f) == b, "0x%04x -> %a -> 0x%04x", b, (double)f,
                      sp_f32_to_bf16(f));
    }
}
END_TEST

START_TEST(convert_unaligned_sources) {
    unsigned char buf[1 + 3 * 8];
    float out[3];
    /* F16 at an odd address */
    uint16_t h[3] = {0x3c00, 0xc000, 0x0001};
    memcpy(buf + 1, h, sizeof h);
    sp_convert_to_f32(SP_DTYPE_F16, buf + 1, out, 3);
    ck_assert(out[0] == 1.0f && out[1] == -2.0f && out[2] == ldexpf(1, -24));
    uint16_t b[3] = {0x3f80, 0xc000, 0x4040};
    memcpy(buf + 1, b, sizeof b);
    sp_convert_to_f32(SP_DTYPE_BF16, buf + 1, out, 3);
    ck_assert(out[0] == 1.0f && out[1] == -2.0f && out[2] == 3.0f);
    float f[3] = {0.5f, -7.25f, 1e30f};
    memcpy(buf + 1, f, sizeof f);
    sp_convert_to_f32(SP_DTYPE_F32, buf + 1, out, 3);
    ck_assert(memcmp(out, f, sizeof f) == 0);
    double d[3] = {0.5, -7.25, 1e300};
    memcpy(buf + 1, d, sizeof d);
    sp_convert_to_f32(SP_DTYPE_F64, buf + 1, out, 3);
    ck_assert(out[0] == 0.5f && out[1] == -7.25f && isinf(out[2]));
}
END_TEST

int main(void) {
    const TTest *tests[] = {names_and_sizes,
                            f16_known_values,
                            f16_rounds_ties_to_even,
                            bf16_known_values,
                            f16_round_trip_all_patterns,
                            bf16_round_trip_all_patterns,
                            convert_unaligned_sources,
                            NULL};
    return tu_main("dtype", tests, NULL, NULL);
}
