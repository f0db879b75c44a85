#include "softprompt/dtype.h"

#include <math.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
    int is_float;
} DTYPES[SP_DTYPE_COUNT] = {
    [SP_DTYPE_F64] = {"F64", 8, 1}, [SP_DTYPE_F32] = {"F32", 4, 1},
    [SP_DTYPE_F16] = {"F16", 2, 1}, [SP_DTYPE_BF16] = {"BF16", 2, 1},
    [SP_DTYPE_I64] = {"I64", 8, 0}, [SP_DTYPE_I32] = {"I32", 4, 0},
    [SP_DTYPE_I16] = {"I16", 2, 0}, [SP_DTYPE_I8] = {"I8", 1, 0},
    [SP_DTYPE_U8] = {"U8", 1, 0},   [SP_DTYPE_BOOL] = {"BOOL", 1, 0},
};

int sp_dtype_from_name(const char *name, sp_dtype *out) {
    for (int i = 0; i < SP_DTYPE_COUNT; i++) {
        if (strcmp(name, DTYPES[i].name) == 0) {
            *out = (sp_dtype)i;
            return 0;
        }
    }
    return -1;
}

const char *sp_dtype_name(sp_dtype dt) {
    return DTYPES[dt].name;
}
size_t sp_dtype_size(sp_dtype dt) {
    return DTYPES[dt].size;
}
int sp_dtype_is_float(sp_dtype dt) {
    return DTYPES[dt].is_float;
}

static float bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

float sp_bf16_to_f32(uint16_t b) {
    return bits_to_f32((uint32_t)b << 16);
}

float sp_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0x1f) return bits_to_f32(sign | 0x7f800000u | (mant << 13)); /* inf / nan */
    if (exp == 0) {
        /* zero or subnormal: value = mant * 2^-24, exact in float32 */
        float v = ldexpf((float)mant, -24);
        return sign ? -v : v;
    }
    return bits_to_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t sp_f32_to_bf16(float f) {
    uint32_t u = f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet nan */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

uint16_t sp_f32_to_f16(float f) {
    uint32_t u = f32_to_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    float a = fabsf(f);
    if (isnan(f)) return sign | 0x7e00;
    if (a >= 65520.0f) return sign | 0x7c00; /* rounds to infinity */
    if (a < 6.103515625e-05f) {
        /* subnormal half: multiples of 2^-24; rintf rounds half to even */
        return sign | (uint16_t)rintf(a * 16777216.0f);
    }
    uint32_t bits = f32_to_bits(a);
    uint32_t mant = bits & 0x7fffffu;
    uint32_t exp = (bits >> 23) - 112;
    uint32_t half = (exp << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) half++; /* carries into exp correctly */
    return sign | (uint16_t)half;
}

void sp_convert_to_f32(sp_dtype dt, const void *src, float *dst, size_t n) {
    const unsigned char *p = src;
    for (size_t i = 0; i < n; i++) {
        switch (dt) {
        case SP_DTYPE_F32:
            memcpy(&dst[i], p + 4 * i, 4);
            break;
        case SP_DTYPE_F64: {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
            break;
        }
        case SP_DTYPE_F16:
        case SP_DTYPE_BF16: {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = dt == SP_DTYPE_F16 ? sp_f16_to_f32(h) : sp_bf16_to_f32(h);
            break;
        }
        default:
            dst[i] = 0.0f;
            break; /* callers only pass floating dtypes */
        }
    }
}
