/* tap.h - the Test Anything Protocol for the C unit tests, as automake's TAP
 * driver reads it.  Each test file calls plan() or done_testing() once. */
#ifndef DS_TAP_H
#define DS_TAP_H

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tap_count, tap_failed;

/* A seeded xorshift stream for test data: the same values on every run and
 * machine.  Tests set tap_rng to start a stream over. */
static uint64_t tap_rng = 0x2545f4914f6cdd1dull;

static inline double tap_uniform(void)
{
	tap_rng ^= tap_rng << 13;
	tap_rng ^= tap_rng >> 7;
	tap_rng ^= tap_rng << 17;
	return (double)(tap_rng >> 11) / 9007199254740992.0;
}

static inline int tap_ok(int pass, const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static inline int tap_ok(int pass, const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	printf("%s %d - ", pass ? "ok" : "not ok", ++tap_count);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	if (!pass) {
		tap_failed++;
		printf("#   failed at %s:%d\n", file, line);
	}
	fflush(stdout);
	return pass;
}

#define ok(cond, ...) tap_ok(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define is_int(got, want, ...) \
	(ok((long long)(got) == (long long)(want), __VA_ARGS__) || \
	 (printf("#   got %lld, want %lld\n", (long long)(got), (long long)(want)), 0))
#define is_str(got, want, ...) \
	(ok((got) && (want) && strcmp((got), (want)) == 0, __VA_ARGS__) || \
	 (printf("#   got '%s', want '%s'\n", (got) ? (got) : "(null)", (want) ? (want) : "(null)"), 0))
#define is_near(got, want, tol, ...) \
	(ok(fabs((double)(got) - (double)(want)) <= (tol), __VA_ARGS__) || \
	 (printf("#   got %.9g, want %.9g\n", (double)(got), (double)(want)), 0))
#define diag(...) (printf("# "), printf(__VA_ARGS__), printf("\n"))

static inline int done_testing(void)
{
	printf("1..%d\n", tap_count);
	return tap_failed ? 1 : 0;
}

#endif
