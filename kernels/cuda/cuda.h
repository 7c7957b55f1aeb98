/* cuda.h - the C face of the CUDA code in kernels/cuda.  Plain C types only:
 * libds turns these results into its own errors. */
#ifndef DS_KERNELS_CUDA_H
#define DS_KERNELS_CUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { DS_CUDA_OK = 0, DS_CUDA_NOMEM = 1, DS_CUDA_FAIL = 2 };

/* Devices present; 0 when there is no GPU or no driver. */
int dsk_cuda_device_count(void);
/* Name and memory of a device, for messages. */
int dsk_cuda_device_info(int device, char *name, size_t name_len, size_t *free_bytes, size_t *total_bytes);
int dsk_cuda_malloc(int device, size_t bytes, void **out, char *msg, size_t msg_len);
void dsk_cuda_free(void *ptr);
/* Copy bytes; a device of -1 is host memory. */
int dsk_cuda_memcpy(void *dst, int dst_device, const void *src, int src_device, size_t bytes,
		    char *msg, size_t msg_len);

#ifdef __cplusplus
}
#endif
#endif
