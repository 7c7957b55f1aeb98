/* bench.h - private to ds-bench: the statistics of a series of timings and
 * the parsing of sweep lists, kept apart from the runs so the unit tests can
 * check them against figures worked out by hand. */
#ifndef DS_BENCH_H
#define DS_BENCH_H

#include "internal.h"

/* Summary of n samples.  Percentiles are nearest-rank: the p-th percentile
 * is the smallest sample with at least p percent of the samples at or below
 * it, sorted[ceil(p / 100 * n) - 1] (sorted[0] for p = 0), so every
 * percentile is a sample that was measured and min <= p50 <= p90 <= p99 <=
 * max always holds.  sd is the sample standard deviation (divided by n - 1;
 * 0 for one sample); cv is sd / mean in percent (0 when the mean is 0). */
typedef struct ds_bench_stats {
	size_t n;
	double min, max, mean, sd, cv;
	double p50, p90, p99;
} ds_bench_stats;

/* The nearest-rank percentile p (0..100) of n >= 1 sorted samples. */
double ds_bench_percentile(const double *sorted, size_t n, double p);
/* Statistics of n >= 1 samples (not changed; a sorted copy is made). */
int ds_bench_stats_compute(const double *samples, size_t n, ds_bench_stats *out, ds_error *err);

/* A sweep list of integers, "1,8,64", with ranges as llama-bench writes
 * them: "1-4" (every integer), "1-10+3" (1, 4, 7, 10), "1-64*2" (1, 2, 4 ...
 * 64).  Every value must be in [min, max]; what names the option in messages
 * ("--batch").  Status 2 for anything else.  *vals is malloc'd. */
int ds_bench_parse_ints(const char *text, const char *what, int64_t min, int64_t max, int64_t **vals,
			size_t *n, ds_error *err);
/* --warmup: "N" runs, or "Ts" / "Tms" of time (*seconds set, *runs 0). */
int ds_bench_parse_warmup(const char *text, int64_t *runs, double *seconds, ds_error *err);

/* Reset the kernel's high-water mark of the process's resident set (Linux
 * 4.0 and later); 0 when it could not be reset, and ds_bench_peak_rss then
 * gives the peak since the process started. */
int ds_bench_peak_reset(void);
/* The process's peak resident set in bytes (0 when unknown). */
uint64_t ds_bench_peak_rss(void);

#endif
