/* threads.c - one thread count, and one thread pool: OpenMP's.
 *
 * libds parallelises with OpenMP and calls OpenBLAS from inside its own
 * parallel loops (convolution over the batch) or splits a large product into
 * single-threaded calls (kernels/cpu/gemm.c).  OpenBLAS's own threads would
 * then compete with OpenMP's for the same cores: its idle threads spin, and
 * mixing the two pools gave erratic 2x slowdowns on the reference CNN.  So
 * OpenBLAS always runs on the calling thread. */
#include "internal.h"

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

void ds_threads_set(int n)
{
	openblas_set_num_threads(1);
	if (n <= 0)
		return;
#ifdef _OPENMP
	omp_set_num_threads(n);
#endif
}

int ds_threads_get(void)
{
#ifdef _OPENMP
	return omp_get_max_threads();
#else
	return 1;
#endif
}
