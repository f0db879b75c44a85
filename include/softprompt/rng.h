/* Small, fast, reproducible random numbers (xoshiro256** seeded by splitmix64). The state is a
 * plain struct so it can be stored in checkpoints and restored bit for bit. */
#ifndef SOFTPROMPT_RNG_H
#define SOFTPROMPT_RNG_H

#include <stdint.h>

typedef struct sp_rng {
    uint64_t s[4];
} sp_rng;

void sp_rng_seed(sp_rng *r, uint64_t seed);
uint64_t sp_rng_next(sp_rng *r);
double sp_rng_uniform(sp_rng *r);             /* [0, 1) with 53 random bits */
double sp_rng_normal(sp_rng *r);              /* standard normal (Box-Muller, no cached pair) */
uint64_t sp_rng_below(sp_rng *r, uint64_t n); /* uniform in [0, n), unbiased */

#endif
