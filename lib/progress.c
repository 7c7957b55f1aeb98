/* progress.c - one line on a terminal's stderr for long work:
 * "train 45% 4500/10000 items 1234/s ETA 0:04".  Nothing is drawn when stderr
 * is a file or a pipe (logs stay clean), under -q, or with DS_LOG=json. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Redraws cost a write each; ten a second look smooth. */
#define REDRAW_NS 100000000LL

struct ds_progress {
	char what[64];
	char unit[32];
	uint64_t total, done;
	int64_t start_ns, last_ns;
	int active;             /* drawing at all */
	int width;              /* length of the line on screen, 0 when none */
};

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

double ds_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

ds_progress *ds_progress_start(const ds_cli *cli, const char *what, uint64_t total, const char *unit)
{
	ds_progress *p = calloc(1, sizeof *p);
	const char *log = getenv("DS_LOG");

	if (!p)
		return NULL;
	snprintf(p->what, sizeof p->what, "%s", what ? what : "");
	snprintf(p->unit, sizeof p->unit, "%s", unit ? unit : "items");
	p->total = total;
	p->start_ns = p->last_ns = now_ns();
	p->active = isatty(STDERR_FILENO) && ds_cli_verbosity(cli) >= 0 &&
		    !(log && strcmp(log, "json") == 0);
	return p;
}

static void format_eta(char *buf, size_t len, double seconds)
{
	long s = (long)(seconds + 0.5);

	if (s >= 3600)
		snprintf(buf, len, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
	else
		snprintf(buf, len, "%ld:%02ld", s / 60, s % 60);
}

static void draw(ds_progress *p, int64_t now)
{
	char line[256], eta[32];
	double elapsed = (double)(now - p->start_ns) / 1e9;
	double rate = elapsed > 0 ? (double)p->done / elapsed : 0;
	int n;

	if (p->total) {
		int pct = (int)(p->done >= p->total ? 100 : p->done * 100 / p->total);

		if (p->done >= p->total)
			format_eta(eta, sizeof eta, 0);
		else if (rate > 0)
			format_eta(eta, sizeof eta, (double)(p->total - p->done) / rate);
		else
			snprintf(eta, sizeof eta, "-:--");
		n = snprintf(line, sizeof line, "%s %3d%% %llu/%llu %s %.*f/s ETA %s", p->what, pct,
			     (unsigned long long)p->done, (unsigned long long)p->total, p->unit,
			     rate < 10 ? 1 : 0, rate, eta);
	} else {
		n = snprintf(line, sizeof line, "%s %llu %s %.*f/s", p->what, (unsigned long long)p->done,
			     p->unit, rate < 10 ? 1 : 0, rate);
	}
	if (n < 0)
		return;
	if (n >= (int)sizeof line)
		n = (int)sizeof line - 1;
	/* Blanks over what a longer previous line left behind. */
	fprintf(stderr, "\r%s%*s", line, p->width > n ? p->width - n : 0, "");
	fflush(stderr);
	p->width = n;
	p->last_ns = now;
}

void ds_progress_update(ds_progress *p, uint64_t done)
{
	int64_t now;

	if (!p)
		return;
	p->done = done;
	if (!p->active)
		return;
	now = now_ns();
	if (now - p->last_ns < REDRAW_NS && !(p->total && done >= p->total))
		return;
	draw(p, now);
}

void ds_progress_end(ds_progress *p)
{
	if (!p)
		return;
	if (p->active && p->width) {
		fprintf(stderr, "\r%*s\r", p->width, "");
		fflush(stderr);
	}
	free(p);
}
