/* bench_stats.c - what ds-bench computes from its timings, and the sweep
 * lists it reads (bench.h says what each figure means). */
#include "config.h"
#include "bench.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

double ds_bench_percentile(const double *sorted, size_t n, double p)
{
	double rank;
	size_t k;

	if (n == 0)
		return NAN;
	if (p <= 0)
		return sorted[0];
	if (p >= 100)
		return sorted[n - 1];
	/* The product is rounded up; a tiny tolerance keeps 90% of 10 samples
	 * at rank 9 despite 0.9 * 10 not being exactly 9 in binary. */
	rank = ceil(p / 100.0 * (double)n - 1e-9);
	k = rank < 1 ? 0 : (size_t)rank - 1;
	return sorted[k < n ? k : n - 1];
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

int ds_bench_stats_compute(const double *samples, size_t n, ds_bench_stats *out, ds_error *err)
{
	double *sorted, sum = 0, sq = 0;

	memset(out, 0, sizeof *out);
	if (n == 0)
		return ds_error_set(err, DS_ERR_RUN, "no_samples", "no timings to summarise");
	sorted = ds_malloc(n * sizeof *sorted, err);
	if (!sorted)
		return DS_ERR_NOMEM;
	memcpy(sorted, samples, n * sizeof *sorted);
	qsort(sorted, n, sizeof *sorted, cmp_double);
	for (size_t i = 0; i < n; i++)
		sum += sorted[i];
	out->n = n;
	out->mean = sum / (double)n;
	/* Two passes: the sum of squared deviations does not cancel the way
	 * sum(x^2) - n mean^2 does for tightly clustered timings. */
	for (size_t i = 0; i < n; i++)
		sq += (sorted[i] - out->mean) * (sorted[i] - out->mean);
	out->sd = n > 1 ? sqrt(sq / (double)(n - 1)) : 0;
	out->cv = out->mean != 0 ? 100.0 * out->sd / fabs(out->mean) : 0;
	out->min = sorted[0];
	out->max = sorted[n - 1];
	out->p50 = ds_bench_percentile(sorted, n, 50);
	out->p90 = ds_bench_percentile(sorted, n, 90);
	out->p99 = ds_bench_percentile(sorted, n, 99);
	free(sorted);
	return 0;
}

/* ------------------------------------------------------------ lists */

static int parse_int(const char **p, int64_t *out)
{
	char *end;
	long long v;

	if (!isdigit((unsigned char)**p))
		return -1;
	errno = 0;
	v = strtoll(*p, &end, 10);
	if (errno == ERANGE)
		return -1;
	*p = end;
	*out = v;
	return 0;
}

static int push(int64_t **vals, size_t *n, size_t *cap, int64_t v, ds_error *err)
{
	if (*n == *cap) {
		int64_t *grown = ds_realloc(*vals, (*cap = *cap * 2 + 8) * sizeof *grown, err);

		if (!grown)
			return DS_ERR_NOMEM;
		*vals = grown;
	}
	(*vals)[(*n)++] = v;
	return 0;
}

#define MAX_SWEEP 4096   /* values in one list: a typo such as 1-1000000 stops here */

int ds_bench_parse_ints(const char *text, const char *what, int64_t min, int64_t max, int64_t **vals,
			size_t *n, ds_error *err)
{
	const char *p = text;
	size_t cap = 0;
	int rc = 0;

	*vals = NULL;
	*n = 0;
	if (!text || !*text) {
		rc = ds_error_set(err, DS_ERR_USAGE, "bad_value", "%s: an empty list", what);
		goto out;
	}
	for (;;) {
		int64_t first, last, step = 1;
		char op = '+';

		if (parse_int(&p, &first))
			goto bad;
		last = first;
		if (*p == '-') {
			p++;
			if (parse_int(&p, &last) || last < first)
				goto bad;
			if (*p == '+' || *p == '*') {
				op = *p++;
				if (parse_int(&p, &step) || step < (op == '*' ? 2 : 1) || step > (max > 2 ? max : 2))
					goto bad;
			}
		}
		if (first < min || last > max) {
			rc = ds_error_set(err, DS_ERR_USAGE, "bad_value", "%s: '%s': values must be %" PRId64 " to %" PRId64,
					  what, text, min, max);
			goto out;
		}
		/* first >= min >= 0 and last <= max keep the steps from overflowing. */
		for (int64_t v = first; v <= last; v = op == '*' ? v * step : v + step) {
			if (*n >= MAX_SWEEP) {
				rc = ds_error_set(err, DS_ERR_USAGE, "bad_value", "%s: '%s' has more than %d values",
						  what, text, MAX_SWEEP);
				goto out;
			}
			if ((rc = push(vals, n, &cap, v, err)))
				goto out;
			if (op == '*' && v == 0)
				break;
		}
		if (*p == '\0')
			break;
		if (*p++ != ',' || *p == '\0')
			goto bad;
	}
	return 0;
bad:
	rc = ds_error_set(err, DS_ERR_USAGE, "bad_value",
			  "%s: '%s' is not a list such as 1,8,64 or a range such as 1-64*2 or 1-8+1", what, text);
out:
	free(*vals);
	*vals = NULL;
	*n = 0;
	return rc;
}

int ds_bench_parse_warmup(const char *text, int64_t *runs, double *seconds, ds_error *err)
{
	char *end;
	double v;

	*runs = 0;
	*seconds = 0;
	if (!text || !*text || isspace((unsigned char)*text) || *text == '-' || *text == '+')
		goto bad;
	errno = 0;
	v = strtod(text, &end);
	if (end == text || errno == ERANGE || !isfinite(v))
		goto bad;
	if (*end == '\0') {
		/* A count: a whole number of runs. */
		if (v != floor(v) || v > 1e9)
			goto bad;
		*runs = (int64_t)v;
		return 0;
	}
	if (strcmp(end, "s") == 0)
		*seconds = v;
	else if (strcmp(end, "ms") == 0)
		*seconds = v / 1000.0;
	else
		goto bad;
	if (*seconds > 86400)
		goto bad;
	return 0;
bad:
	return ds_error_set(err, DS_ERR_USAGE, "bad_value",
			    "--warmup: '%s' is not a number of runs (3) or a time (2s, 500ms)", text ? text : "");
}

/* ------------------------------------------------------------ memory */

int ds_bench_peak_reset(void)
{
	FILE *f = fopen("/proc/self/clear_refs", "w");
	int ok;

	if (!f)
		return 0;
	/* "5" resets the peak resident set size (proc(5)). */
	ok = fputs("5", f) >= 0;
	ok = fclose(f) == 0 && ok;
	return ok;
}

uint64_t ds_bench_peak_rss(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	struct rusage ru;

	if (f) {
		unsigned long long kb;

		while (fgets(line, sizeof line, f)) {
			if (sscanf(line, "VmHWM: %llu kB", &kb) == 1) {
				fclose(f);
				return (uint64_t)kb * 1024;
			}
		}
		fclose(f);
	}
	if (getrusage(RUSAGE_SELF, &ru) == 0 && ru.ru_maxrss > 0)
		return (uint64_t)ru.ru_maxrss * 1024;   /* kilobytes on Linux */
	return 0;
}
