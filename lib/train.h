/* train.h - what the zoo, the loader and the trainer share inside libds: one
 * seeded random generator.
 *
 * Everything random in training is drawn from it so that a run is a function
 * of --seed alone: initial weights (zoo.c), the shuffle of each epoch and the
 * augmentation of each item (loader.c, counter-based so that the worker
 * thread and a resumed run draw the same numbers), dropout (the plan, from
 * the step number). */
#ifndef DS_TRAIN_H
#define DS_TRAIN_H

#include "internal.h"

/* xoshiro256** seeded through splitmix64: four words of state. */
typedef struct ds_rng {
	uint64_t s[4];
} ds_rng;

void ds_rng_seed(ds_rng *r, uint64_t seed);
uint64_t ds_rng_next(ds_rng *r);
/* Uniform in [0, 1) with 53 bits. */
double ds_rng_uniform(ds_rng *r);
/* Standard normal (Box-Muller, one value per call). */
double ds_rng_normal(ds_rng *r);
/* Uniform in [0, n), without modulo bias. */
uint64_t ds_rng_below(ds_rng *r, uint64_t n);
/* A stateless mix of a few words (splitmix64's finalizer over their sum),
 * for streams keyed by (seed, epoch, item). */
uint64_t ds_mix64(uint64_t a, uint64_t b, uint64_t c);

#endif
