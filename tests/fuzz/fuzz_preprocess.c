/* fuzz_preprocess.c - libFuzzer target for a model's ds.preprocess: any
 * JSON either makes a preprocess for an image input and for a token input,
 * which then turns pixels and text into rows without reading or writing out
 * of bounds, or fails with a status and a message; never a crash. */
#include "config.h"
#include "ds.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_failure(int rc, const ds_error *err)
{
	if (rc != 0 && (err->status != rc || !err->message[0]))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const ds_shape inputs[] = {
		{ DS_F32, 4, { 1, 3, 6, 5 } },
		{ DS_F32, 4, { 1, 1, 28, 28 } },
		{ DS_I32, 2, { 1, 16 } },
	};
	static const char text[] = "Der Hund lief \xc3\xbc" "ber die Stra\xc3\x9f" "e, the cat sat.";
	uint8_t pixels[7 * 9 * 3];
	json_t *spec = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);

	if (!spec)
		return 0;
	for (size_t i = 0; i < sizeof pixels; i++)
		pixels[i] = (uint8_t)(i * 37);
	for (size_t k = 0; k < sizeof inputs / sizeof inputs[0]; k++) {
		ds_error err = { 0 };
		ds_preprocess *pp = NULL;
		int rc = ds_preprocess_new(spec, &inputs[k], &pp, &err);
		void *row;

		check_failure(rc, &err);
		if (rc)
			continue;
		if (ds_preprocess_item_elems(pp) < 1 || ds_preprocess_item_elems(pp) > (1 << 24))
			abort();
		/* A row of exactly the size the preprocess says: ASan catches any
		 * write past it. */
		row = malloc((size_t)ds_preprocess_item_elems(pp) * 4);
		if (!row)
			abort();
		if (ds_preprocess_kind_of(pp) == DS_PREPROCESS_IMAGE) {
			ds_image img = { 9, 7, 3, pixels };

			memset(&err, 0, sizeof err);
			check_failure(ds_preprocess_pixels(pp, &img, row, &err), &err);
			img.channels = 1;
			img.width = 21;
			memset(&err, 0, sizeof err);
			check_failure(ds_preprocess_pixels(pp, &img, row, &err), &err);
		} else {
			int32_t ids[5] = { 3, 1, 4, 1, 5 };

			ds_preprocess_tokens(pp, ids, 5, row);
			if (ds_preprocess_has_tokenizer(pp)) {
				memset(&err, 0, sizeof err);
				check_failure(ds_preprocess_text(pp, text, sizeof text - 1, row, &err), &err);
			}
		}
		free(row);
		ds_preprocess_free(pp);
	}
	json_decref(spec);
	return 0;
}
