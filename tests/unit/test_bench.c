/* test_bench.c - ds-bench's statistics against figures worked out by hand,
 * its sweep lists, and the command-line rows it overrides. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "bench.h"
#include "ds.h"
#include "tap.h"

static void test_stats(void)
{
	/* 1..5 shuffled: mean 3; squared deviations 4+1+0+1+4 = 10, over
	 * n-1 = 4: sd = sqrt(2.5); cv = 100 sqrt(2.5) / 3.  Nearest rank:
	 * p50 = x[ceil(2.5)] = x3 = 3, p90 = x[ceil(4.5)] = 5, p99 = x[ceil(4.95)] = 5. */
	const double five[] = { 4, 1, 3, 2, 5 };
	double ten[10], hundred[100];
	ds_bench_stats s;
	ds_error err = { 0 };

	is_int(ds_bench_stats_compute(five, 5, &s, &err), 0, "stats of 5 samples");
	is_int(s.n, 5, "n");
	is_near(s.min, 1, 0, "min");
	is_near(s.max, 5, 0, "max");
	is_near(s.mean, 3, 1e-12, "mean");
	is_near(s.sd, 1.5811388300841898, 1e-12, "sample standard deviation (n - 1)");
	is_near(s.cv, 52.70462766947299, 1e-9, "cv in percent");
	is_near(s.p50, 3, 0, "p50 is the 3rd of 5");
	is_near(s.p90, 5, 0, "p90 is the 5th of 5");
	is_near(s.p99, 5, 0, "p99 is the 5th of 5");
	ok(five[0] == 4 && five[4] == 5, "the samples are not reordered");

	/* 10 samples: p90 = x[ceil(9)] = x9 exactly, though 0.9 * 10 is not 9 in binary. */
	for (int i = 0; i < 10; i++)
		ten[i] = 10 - i;
	is_int(ds_bench_stats_compute(ten, 10, &s, &err), 0, "stats of 10 samples");
	is_near(s.p50, 5, 0, "p50 of 1..10 is 5");
	is_near(s.p90, 9, 0, "p90 of 1..10 is 9");
	is_near(s.p99, 10, 0, "p99 of 1..10 is 10");
	is_near(s.mean, 5.5, 1e-12, "mean of 1..10");
	is_near(s.sd, 3.0276503540974917, 1e-12, "sd of 1..10 is sqrt(55/6)");

	for (int i = 0; i < 100; i++)
		hundred[i] = (double)((i * 37) % 100 + 1);   /* 1..100 in another order */
	is_int(ds_bench_stats_compute(hundred, 100, &s, &err), 0, "stats of 100 samples");
	is_near(s.p50, 50, 0, "p50 of 1..100 is 50");
	is_near(s.p90, 90, 0, "p90 of 1..100 is 90");
	is_near(s.p99, 99, 0, "p99 of 1..100 is 99");
	ok(s.min <= s.p50 && s.p50 <= s.p90 && s.p90 <= s.p99 && s.p99 <= s.max, "percentiles are ordered");

	is_int(ds_bench_stats_compute((const double[]){ 7 }, 1, &s, &err), 0, "one sample");
	ok(s.sd == 0 && s.cv == 0 && s.p50 == 7 && s.p99 == 7 && s.min == 7 && s.max == 7,
	   "one sample: sd and cv 0, every percentile the sample");
	is_int(ds_bench_stats_compute((const double[]){ 0, 0 }, 2, &s, &err), 0, "zeros");
	ok(s.cv == 0, "a zero mean gives cv 0, not NaN");

	is_int(ds_bench_stats_compute(five, 0, &s, &err), DS_ERR_RUN, "no samples is an error");
	is_str(err.code, "no_samples", "with its code");

	{
		const double sorted[] = { 1, 2, 3, 4 };

		is_near(ds_bench_percentile(sorted, 4, 0), 1, 0, "p0 is the minimum");
		is_near(ds_bench_percentile(sorted, 4, 100), 4, 0, "p100 is the maximum");
		is_near(ds_bench_percentile(sorted, 4, 25), 1, 0, "p25 of 4 is the 1st");
		is_near(ds_bench_percentile(sorted, 4, 26), 2, 0, "p26 of 4 is the 2nd");
		is_near(ds_bench_percentile(sorted, 4, 75), 3, 0, "p75 of 4 is the 3rd");
	}
}

static int list_is(const char *text, const int64_t *want, size_t n_want)
{
	ds_error err = { 0 };
	int64_t *vals;
	size_t n;
	int same;

	if (ds_bench_parse_ints(text, "--batch", 1, 1 << 24, &vals, &n, &err) != 0)
		return 0;
	same = n == n_want && memcmp(vals, want, n * sizeof *vals) == 0;
	free(vals);
	return same;
}

static void test_lists(void)
{
	static const char *const bad[] = {
		"", "0", "1,", ",1", "1,,2", "4-1", "1-8*1", "1-8+0", "x", "1-", "-1", "1 ,2", " 1",
		"99999999999999999999", "1-2-3", "16777217", "1-100000", "2.5",
	};
	ds_error err = { 0 };
	int64_t *vals = NULL;
	size_t n = 0;

	ok(list_is("1,8,64", (const int64_t[]){ 1, 8, 64 }, 3), "a list");
	ok(list_is("64", (const int64_t[]){ 64 }, 1), "one value");
	ok(list_is("1-4", (const int64_t[]){ 1, 2, 3, 4 }, 4), "a range");
	ok(list_is("1-10+3", (const int64_t[]){ 1, 4, 7, 10 }, 4), "a range with a step");
	ok(list_is("1-11+3", (const int64_t[]){ 1, 4, 7, 10 }, 4), "a step that passes the end stops before it");
	ok(list_is("1-64*2", (const int64_t[]){ 1, 2, 4, 8, 16, 32, 64 }, 7), "a geometric range");
	ok(list_is("1-100*3", (const int64_t[]){ 1, 3, 9, 27, 81 }, 5), "a geometric range stops below the end");
	ok(list_is("2,1-2", (const int64_t[]){ 2, 1, 2 }, 3), "lists keep their order and repeats");
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		memset(&err, 0, sizeof err);
		ok(ds_bench_parse_ints(bad[i], "--batch", 1, 1 << 24, &vals, &n, &err) == DS_ERR_USAGE && !vals && !n,
		   "'%s' is a usage error", bad[i]);
		ok(strncmp(err.message, "--batch: ", 9) == 0, "naming the option: %s", err.message);
	}
	is_int(ds_bench_parse_ints("0,2", "--threads", 0, 64, &vals, &n, &err), 0, "0 where the minimum is 0");
	free(vals);
}

static void test_warmup(void)
{
	ds_error err = { 0 };
	int64_t runs;
	double secs;

	ok(ds_bench_parse_warmup("3", &runs, &secs, &err) == 0 && runs == 3 && secs == 0, "3 runs");
	ok(ds_bench_parse_warmup("0", &runs, &secs, &err) == 0 && runs == 0 && secs == 0, "no warm-up");
	ok(ds_bench_parse_warmup("2s", &runs, &secs, &err) == 0 && runs == 0 && secs == 2, "2 seconds");
	ok(ds_bench_parse_warmup("0.25s", &runs, &secs, &err) == 0 && secs == 0.25, "a quarter second");
	ok(ds_bench_parse_warmup("500ms", &runs, &secs, &err) == 0 && secs == 0.5, "500 ms");
	static const char *const bad[] = { "", "1.5", "2x", "-1", "s", "2 s", "inf", "nans", "1e12" };
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		ok(ds_bench_parse_warmup(bad[i], &runs, &secs, &err) == DS_ERR_USAGE, "--warmup '%s' is refused", bad[i]);
}

static void test_memory(void)
{
	size_t big = 64u << 20;
	uint64_t before, after;
	char *p;

	ds_bench_peak_reset();
	before = ds_bench_peak_rss();
	ok(before > 0, "the peak resident set is known (%llu bytes)", (unsigned long long)before);
	/* mmap rather than malloc: a sanitizer's allocator would keep freed
	 * memory resident, and the reset below would see no drop. */
	p = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p != MAP_FAILED) {
		/* volatile: a store the program never reads would be optimised away. */
		for (size_t i = 0; i < big; i += 4096)
			((volatile char *)p)[i] = 1;
		after = ds_bench_peak_rss();
		ok(after >= before + big / 2, "touching 64 MiB raises the peak");
		munmap(p, big);
		if (ds_bench_peak_reset())
			ok(ds_bench_peak_rss() < after, "a reset brings the peak back down");
	}
}

/* ds-bench's --threads and --device take lists: a program row of a shared
 * option's name replaces the shared row and its checks. */
static void test_cli_override(void)
{
	static const ds_option own[] = {
		{ "threads", 0, DS_OPT_STRING, "N,...", "sweep", "DS_THREADS", "0" },
		{ "device", 0, DS_OPT_STRING, "DEVICE,...", "sweep", "DS_DEVICE", "auto" },
		{ NULL, 0, 0, NULL, NULL, NULL, NULL },
	};
	static const ds_program with = { .name = "t-bench", .options = own, .max_args = -1 };
	static const ds_program without = { .name = "t-plain", .max_args = -1 };
	char *argv[] = { "t", "--threads", "1,2", "--device", "cpu,cuda:3", NULL };
	ds_error err = { 0 };
	ds_cli *cli = NULL;

	is_int(ds_cli_parse(&cli, &with, 5, argv, &err), 0, "lists parse where the program overrides the rows");
	is_str(ds_cli_get(cli, "threads"), "1,2", "--threads keeps its text");
	is_str(ds_cli_get(cli, "device"), "cpu,cuda:3", "--device keeps its text");
	ds_cli_free(cli);
	memset(&err, 0, sizeof err);
	is_int(ds_cli_parse(&cli, &without, 5, argv, &err), DS_ERR_USAGE, "the shared rows still refuse lists");
	ok(cli == NULL, "and give no cli");
}

int main(void)
{
	test_stats();
	test_lists();
	test_warmup();
	test_memory();
	test_cli_override();
	return done_testing();
}
