/* blas.c - make OpenBLAS use the kernels this CPU is best at.
 *
 * Debian's OpenBLAS 0.3.21 picks its kernels when it is loaded, and takes
 * AMD Zen 5 for Haswell: AVX2 kernels, about 107 GFLOP/s per core on SGEMM
 * 2048^3 here, against 204 with its SkylakeX (AVX-512) kernels.  The choice
 * can only be changed by OPENBLAS_CORETYPE in the environment before the
 * library loads, so a program on an AVX-512 CPU sets it and executes itself
 * again, once, before it has read or written anything.  A setting that names
 * an older core (machines have been seen exporting OPENBLAS_CORETYPE=Haswell
 * for everything) is replaced too; DS_BLAS_KEEP=1 keeps whatever is set. */
#include "internal.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int is_avx512_core(const char *core)
{
	return core && (strcasestr(core, "skylakex") || strcasestr(core, "cooperlake") ||
			strcasestr(core, "sapphirerapids"));
}

/* OpenBLAS starts its own threads when it loads, and they spin (sched_yield)
 * for a while before sleeping, although libds calls it single-threaded
 * (lib/threads.c): 8% of a short ds-clean run.  OPENBLAS_NUM_THREADS=1 in
 * the environment keeps them from starting. */
static int want_avx512(const char *core)
{
	__builtin_cpu_init();
	if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
	    !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512dq"))
		return 0;
	/* Already on AVX-512 kernels (an Intel CPU OpenBLAS knows): nothing to do. */
	return !is_avx512_core(core) && !is_avx512_core(getenv("OPENBLAS_CORETYPE"));
}

void ds_blas_prefer_avx512(char **argv)
{
	const char *keep = getenv("DS_BLAS_KEEP");
	int avx512 = 0, threads = 0;

	if (keep && *keep && strcmp(keep, "0"))
		return;
	avx512 = want_avx512(openblas_get_corename());
	threads = getenv("OPENBLAS_NUM_THREADS") == NULL;
	if (!avx512 && !threads)
		return;
	if (avx512 && setenv("OPENBLAS_CORETYPE", "SkylakeX", 1) != 0)
		return;
	if (threads && setenv("OPENBLAS_NUM_THREADS", "1", 1) != 0)
		return;
	execv("/proc/self/exe", argv);
	/* The exec failed (no /proc): go on with what OpenBLAS chose. */
}

const char *ds_blas_core(void)
{
	const char *core = openblas_get_corename();

	return core ? core : "unknown";
}
