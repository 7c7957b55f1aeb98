/* threads.c - one thread count for OpenMP and OpenBLAS. */
#include "internal.h"

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

void ds_threads_set(int n)
{
	if (n <= 0)
		return;
#ifdef _OPENMP
	omp_set_num_threads(n);
#endif
	openblas_set_num_threads(n);
}

int ds_threads_get(void)
{
#ifdef _OPENMP
	return omp_get_max_threads();
#else
	return openblas_get_num_threads();
#endif
}
