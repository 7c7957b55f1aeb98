// runtime.cu - device discovery, memory and copies through the CUDA runtime.
#include <cuda_runtime.h>
#include <stdio.h>

#include "cuda/cuda.h"

static int report(cudaError_t rc, const char *what, char *msg, size_t msg_len)
{
	if (rc == cudaSuccess)
		return DS_CUDA_OK;
	if (msg && msg_len)
		snprintf(msg, msg_len, "%s: %s", what, cudaGetErrorString(rc));
	cudaGetLastError();  // clear the sticky error so the next call starts clean
	return rc == cudaErrorMemoryAllocation ? DS_CUDA_NOMEM : DS_CUDA_FAIL;
}

extern "C" int dsk_cuda_device_count(void)
{
	int n = 0;

	if (cudaGetDeviceCount(&n) != cudaSuccess) {
		cudaGetLastError();
		return 0;
	}
	return n;
}

extern "C" int dsk_cuda_device_info(int device, char *name, size_t name_len, size_t *free_bytes,
				    size_t *total_bytes)
{
	cudaDeviceProp prop;
	int rc;

	if ((rc = report(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties", NULL, 0)))
		return rc;
	if (name && name_len)
		snprintf(name, name_len, "%s", prop.name);
	if ((rc = report(cudaSetDevice(device), "cudaSetDevice", NULL, 0)))
		return rc;
	return report(cudaMemGetInfo(free_bytes, total_bytes), "cudaMemGetInfo", NULL, 0);
}

extern "C" int dsk_cuda_malloc(int device, size_t bytes, void **out, char *msg, size_t msg_len)
{
	int rc = report(cudaSetDevice(device), "cudaSetDevice", msg, msg_len);

	if (rc)
		return rc;
	return report(cudaMalloc(out, bytes ? bytes : 1), "cudaMalloc", msg, msg_len);
}

extern "C" void dsk_cuda_free(void *ptr)
{
	if (ptr)
		cudaFree(ptr);
}

extern "C" int dsk_cuda_memcpy(void *dst, int dst_device, const void *src, int src_device, size_t bytes,
			       char *msg, size_t msg_len)
{
	cudaMemcpyKind kind = cudaMemcpyDefault;  // unified addressing tells the direction

	(void)dst_device;
	(void)src_device;
	if (!bytes)
		return DS_CUDA_OK;
	return report(cudaMemcpy(dst, src, bytes, kind), "cudaMemcpy", msg, msg_len);
}
