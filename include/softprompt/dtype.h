/* Element types of safetensors tensors and conversions between the floating ones. */
#ifndef SOFTPROMPT_DTYPE_H
#define SOFTPROMPT_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum sp_dtype {
    SP_DTYPE_F64,
    SP_DTYPE_F32,
    SP_DTYPE_F16,
    SP_DTYPE_BF16,
    SP_DTYPE_I64,
    SP_DTYPE_I32,
    SP_DTYPE_I16,
    SP_DTYPE_I8,
    SP_DTYPE_U8,
    SP_DTYPE_BOOL,
    SP_DTYPE_COUNT
} sp_dtype;

/* "F32" etc. as written in safetensors headers; returns -1 for an unknown name. */
int sp_dtype_from_name(const char *name, sp_dtype *out);
const char *sp_dtype_name(sp_dtype dt);
size_t sp_dtype_size(sp_dtype dt);
int sp_dtype_is_float(sp_dtype dt);

float sp_f16_to_f32(uint16_t h);
float sp_bf16_to_f32(uint16_t b);
/* Round-to-nearest-even, as PyTorch's .half() / .bfloat16() do. */
uint16_t sp_f32_to_f16(float f);
uint16_t sp_f32_to_bf16(float f);

/* Converts n elements of a floating dtype (F64/F32/F16/BF16) at src to float32 at dst.
 * src may be unaligned. */
void sp_convert_to_f32(sp_dtype dt, const void *src, float *dst, size_t n);

#endif
