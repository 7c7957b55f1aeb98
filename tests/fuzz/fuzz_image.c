/* fuzz_image.c - libFuzzer target for the image decoders: any bytes either
 * probe and decode, or fail with status 3, 4 or a clear code; never crash. */
#include "config.h"
#include "ds.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ds_error err = { 0 };
	ds_image_info info;
	ds_image img = { 0 };
	uint8_t small[8 * 8 * 3];

	if (ds_image_probe(data, size, &info, &err) != 0) {
		if (err.status != DS_ERR_DATA && err.status != DS_ERR_NOMEM)
			abort();
		return 0;
	}
	ds_error_clear(&err);
	/* Full size, then the DCT-scaled path a small output takes. */
	if (ds_image_decode(data, size, 0, 0, 0, &img, NULL, &err) == 0) {
		if (img.width != info.width || img.height != info.height)
			abort();
		ds_image_resize(&img, 8, 8, 3, DS_RESIZE_FIT, small, &err);
		ds_image_phash(&img);
	}
	ds_image_free(&img);
	ds_error_clear(&err);
	if (ds_image_decode(data, size, 1, 8, 8, &img, NULL, &err) == 0)
		ds_image_free(&img);
	return 0;
}
