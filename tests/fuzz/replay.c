/* replay.c - run a fuzz target's entry point over files, without libFuzzer,
 * so that `make check` (and the sanitizer build) replays the seed corpus and
 * every input that once crashed (tests/fuzz/regressions/<target>/). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		uint8_t *buf = NULL;
		size_t len = 0, cap = 0, n;

		if (!f) {
			perror(argv[i]);
			return 1;
		}
		do {
			if (len == cap) {
				uint8_t *grown = realloc(buf, cap = cap ? 2 * cap : 65536);

				if (!grown) {
					fprintf(stderr, "%s: out of memory\n", argv[i]);
					return 1;
				}
				buf = grown;
			}
			n = fread(buf + len, 1, cap - len, f);
			len += n;
		} while (n > 0);
		fclose(f);
		LLVMFuzzerTestOneInput(buf, len);
		free(buf);
	}
	return 0;
}
