/* test_crc32c.c - CRC-32C against published vectors, the SSE4.2 variant
 * against the table, and piecewise updates against one pass. */
#include "config.h"
#include "ds.h"
#include "cpu/kernels.h"
#include "tap.h"

#include <stdint.h>

static uint32_t bitwise(const unsigned char *p, size_t len)
{
	uint32_t c = 0xffffffffu;

	while (len--) {
		c ^= *p++;
		for (int i = 0; i < 8; i++)
			c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1)));
	}
	return ~c;
}

int main(void)
{
	static unsigned char buf[70000];
	unsigned char zeros[32] = { 0 }, ones[32], inc[32];
	uint64_t seed = 42;
	int hw = ds_crc32c_hw_available(), fails = 0;

	for (int i = 0; i < 32; i++) {
		ones[i] = 0xff;
		inc[i] = (unsigned char)i;
	}
	/* RFC 3720 B.4 and the usual check value. */
	is_int(ds_crc32c(0, "123456789", 9), 0xe3069283u, "check value of \"123456789\"");
	is_int(ds_crc32c_table(0, "123456789", 9), 0xe3069283u, "table: check value");
	is_int(ds_crc32c(0, zeros, 32), 0x8a9136aau, "32 zero bytes");
	is_int(ds_crc32c(0, ones, 32), 0x62a8ab43u, "32 0xff bytes");
	is_int(ds_crc32c(0, inc, 32), 0x46dd794eu, "32 incrementing bytes");
	is_int(ds_crc32c(0, "", 0), 0, "empty input");
	is_int(ds_crc32c(0x1234, "", 0), 0x1234, "empty update keeps the value");

	for (size_t i = 0; i < sizeof buf; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		buf[i] = (unsigned char)(seed >> 56);
	}
	is_int(ds_crc32c_table(0, buf, 1000), bitwise(buf, 1000), "table agrees with the bitwise reference");

	diag("sse4.2 %s", hw ? "available" : "not available");
	for (int k = 0; k < 2000; k++) {
		size_t off, len;

		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		off = (size_t)(seed >> 40) % 64;
		len = (size_t)(seed >> 8) % (k < 1000 ? 80 : sizeof buf - 64);
		if (ds_crc32c_table(0, buf + off, len) != bitwise(buf + off, len) ||
		    (hw && ds_crc32c_hw(0, buf + off, len) != ds_crc32c_table(0, buf + off, len)))
			fails++;
	}
	is_int(fails, 0, "hw, table and bitwise agree on 2000 random lengths and alignments");

	{
		uint32_t whole = ds_crc32c(0, buf, sizeof buf), c = 0;
		size_t at = 0, step = 1;

		while (at < sizeof buf) {
			size_t n = step < sizeof buf - at ? step : sizeof buf - at;

			c = ds_crc32c(c, buf + at, n);
			at += n;
			step = step * 3 + 1;
		}
		is_int(c, whole, "piecewise updates equal one pass");
		is_int(ds_crc32c_table(ds_crc32c_table(0, buf, 13), buf + 13, 1000),
		       ds_crc32c_table(0, buf, 1013), "table: piecewise");
		if (hw)
			is_int(ds_crc32c_hw(ds_crc32c_hw(0, buf, 7), buf + 7, 999), ds_crc32c_hw(0, buf, 1006),
			       "hw: piecewise");
	}
	return done_testing();
}
