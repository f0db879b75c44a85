/* A fast, non-cryptographic 64-bit hash of byte streams, for checkpoint checksums and model and
 * dataset fingerprints (internal; the exact definition is in docs/formats-checkpoints.md).
 *
 * The stream is cut into 32-byte blocks of four little-endian 64-bit words; word i of a block
 * goes to lane i:  lane = (lane ^ w) * K;  lane ^= lane >> 29.  Both steps are bijections, so for
 * a fixed rest of the stream the final lane is a bijection of any one word: a change confined to
 * one aligned 8-byte word (any bit or byte flip) always changes the digest. The last partial
 * block is zero-padded; the finalisation mixes the byte length and the four lanes. Four
 * independent lanes keep the multiplier busy: several GB/s, so hashing a 124M-parameter model
 * costs about as much as reading it once. It detects corruption, not deliberate tampering. */
#ifndef SP_TRAIN_HASH64_H
#define SP_TRAIN_HASH64_H

#include <stddef.h>
#include <stdint.h>

typedef struct sp__h64 {
    uint64_t lane[4];
    uint64_t len; /* bytes absorbed */
    unsigned char buf[32];
    unsigned nbuf;
} sp__h64;

void sp__h64_init(sp__h64 *h);
void sp__h64_update(sp__h64 *h, const void *data, size_t n);
uint64_t sp__h64_final(const sp__h64 *h); /* does not modify h */

/* Canonical encodings: u64 as 8 little-endian bytes; i64 as its two's complement u64; f64 as
 * its IEEE-754 bits; a string as u64 byte length followed by the bytes (no NUL). */
void sp__h64_u64(sp__h64 *h, uint64_t v);
void sp__h64_i64(sp__h64 *h, int64_t v);
void sp__h64_f64(sp__h64 *h, double v);
void sp__h64_str(sp__h64 *h, const char *s);

/* 16 lowercase hex digits + NUL. */
void sp__h64_hex(uint64_t v, char out[17]);

#endif
