/* schedule.c - the learning rate at a step (counted from 0).
 *
 * Warmup: steps 0 .. warmup-1 ramp linearly, lr * (step + 1) / warmup, so
 * the first step already moves and step warmup-1 reaches lr.  After it:
 * - cosine: lr * (1 + cos(pi * t)) / 2 with t = (step - warmup) / (total -
 *   warmup), reaching 0 at step total and staying there;
 * - step: lr * gamma ^ floor((step - warmup) / step_size);
 * - constant (and any other kind, or NULL): lr.
 */
#include "config.h"
#include "internal.h"

#include <math.h>
#include <string.h>

double ds_schedule_lr(const ds_schedule *s, int64_t step)
{
	int64_t after;

	if (step < 0)
		step = 0;
	if (s->warmup > 0 && step < s->warmup)
		return s->lr * (double)(step + 1) / (double)s->warmup;
	after = step - (s->warmup > 0 ? s->warmup : 0);
	if (s->kind && strcmp(s->kind, "cosine") == 0) {
		int64_t span = s->total - (s->warmup > 0 ? s->warmup : 0);
		double t;

		if (span <= 0)
			return s->lr;
		t = after >= span ? 1.0 : (double)after / (double)span;
		return s->lr * 0.5 * (1.0 + cos(M_PI * t));
	}
	if (s->kind && strcmp(s->kind, "step") == 0 && s->step_size > 0)
		return s->lr * pow(s->gamma, (double)(after / s->step_size));
	return s->lr;
}
