/* kernels.h - CPU compute kernels.  Each kernel has a portable reference and,
 * where it pays, a fast variant picked at run time; both are declared here so
 * the unit tests can compare them. */
#ifndef DS_KERNELS_CPU_H
#define DS_KERNELS_CPU_H

#include <stddef.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ----------------------------------------------------------------- crc32c */

/* CRC-32C (Castagnoli).  crc is the value returned for the bytes before
 * data (0 to start), so a checksum can be computed piece by piece.
 * ds_crc32c (ds.h) picks the SSE4.2 variant when the CPU has it. */
uint32_t ds_crc32c_table(uint32_t crc, const void *data, size_t len);
/* The SSE4.2 crc32 instruction; only call when ds_crc32c_hw_available(). */
uint32_t ds_crc32c_hw(uint32_t crc, const void *data, size_t len);
int ds_crc32c_hw_available(void);

/* --------------------------------------------------------------- threads */

/* Inside a parallel region: the calling thread's share [*begin, *end) of n
 * floats, in whole 64-byte lines so that no two threads write one line. */
static inline void ds_cpu_line_share(int64_t n, int64_t *begin, int64_t *end)
{
	int64_t t = 0, nt = 1, lines = (n + 15) / 16;

#ifdef _OPENMP
	t = omp_get_thread_num();
	nt = omp_get_num_threads();
#endif
	*begin = lines * t / nt * 16;
	*end = lines * (t + 1) / nt * 16;
	if (*end > n)
		*end = n;
}

#endif
