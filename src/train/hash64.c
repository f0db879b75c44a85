/* The 64-bit stream hash of hash64.h. */
#include "train/hash64.h"

#include <string.h>

#define K_LANE 0x9E3779B97F4A7C15ull /* odd: multiplication is a bijection mod 2^64 */
#define K_MIX1 0xBF58476D1CE4E5B9ull /* splitmix64 finaliser constants */
#define K_MIX2 0x94D049BB133111EBull

static const uint64_t LANE_INIT[4] = {0x243F6A8885A308D3ull, 0x13198A2E03707344ull,
                                      0xA4093822299F31D0ull, 0x082EFA98EC4E6C89ull};

static inline uint64_t load_le64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline uint64_t absorb(uint64_t lane, uint64_t w) {
    lane = (lane ^ w) * K_LANE;
    return lane ^ (lane >> 29);
}

static inline uint64_t fmix(uint64_t x) {
    x ^= x >> 30;
    x *= K_MIX1;
    x ^= x >> 27;
    x *= K_MIX2;
    return x ^ (x >> 31);
}

/* Absorbs n whole 32-byte blocks. */
static void blocks(uint64_t lane[4], const unsigned char *p, size_t n) {
    uint64_t a = lane[0], b = lane[1], c = lane[2], d = lane[3];
    for (size_t i = 0; i < n; i++, p += 32) {
        a = absorb(a, load_le64(p));
        b = absorb(b, load_le64(p + 8));
        c = absorb(c, load_le64(p + 16));
        d = absorb(d, load_le64(p + 24));
    }
    lane[0] = a, lane[1] = b, lane[2] = c, lane[3] = d;
}

void sp__h64_init(sp__h64 *h) {
    memcpy(h->lane, LANE_INIT, sizeof h->lane);
    h->len = 0;
    h->nbuf = 0;
}

void sp__h64_update(sp__h64 *h, const void *data, size_t n) {
    const unsigned char *p = data;
    h->len += n;
    if (h->nbuf) {
        size_t take = 32 - h->nbuf < n ? 32 - h->nbuf : n;
        memcpy(h->buf + h->nbuf, p, take);
        h->nbuf += (unsigned)take, p += take, n -= take;
        if (h->nbuf < 32) return;
        blocks(h->lane, h->buf, 1);
        h->nbuf = 0;
    }
    blocks(h->lane, p, n / 32);
    p += n / 32 * 32, n %= 32;
    memcpy(h->buf, p, n);
    h->nbuf = (unsigned)n;
}

uint64_t sp__h64_final(const sp__h64 *h) {
    uint64_t lane[4];
    memcpy(lane, h->lane, sizeof lane);
    if (h->nbuf) {
        unsigned char last[32] = {0};
        memcpy(last, h->buf, h->nbuf);
        blocks(lane, last, 1);
    }
    uint64_t x = fmix(h->len ^ K_LANE);
    for (int i = 0; i < 4; i++) x = fmix(x ^ lane[i]);
    return x;
}

void sp__h64_u64(sp__h64 *h, uint64_t v) {
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
    sp__h64_update(h, b, 8);
}

void sp__h64_i64(sp__h64 *h, int64_t v) {
    sp__h64_u64(h, (uint64_t)v);
}

void sp__h64_f64(sp__h64 *h, double v) {
    uint64_t bits;
    memcpy(&bits, &v, 8);
    sp__h64_u64(h, bits);
}

void sp__h64_str(sp__h64 *h, const char *s) {
    size_t n = s ? strlen(s) : 0;
    sp__h64_u64(h, n);
    if (n) sp__h64_update(h, s, n);
}

void sp__h64_hex(uint64_t v, char out[17]) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--, v >>= 4) out[i] = digits[v & 15];
    out[16] = '\0';
}
