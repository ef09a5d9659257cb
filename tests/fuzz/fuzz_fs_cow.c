/*
 * fuzz_fs_cow.c - libFuzzer target for the header of a farm's block delta
 * (docs/format/ctl.md [CTL-7]): cow/INO.d starts with the magic
 * "CFCOWD1\0", a little-endian 32-bit unit size and 4 reserved bytes.
 *
 * The input is the file's first bytes.  fs_cow_header_decode gives 0 or
 * -EPROTO only, and 0 exactly when an independent reading of the table
 * accepts it: 16 bytes or more, the magic, a unit that is a power of two
 * from 4096 to 16 MiB, the reserved bytes zero; the unit it gives is the
 * one stored, and 0 on failure.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fs_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
reference(const uint8_t *d, size_t n, uint32_t *unit)
{
	static const uint8_t magic[8] = { 0x43, 0x46, 0x43, 0x4f, 0x57, 0x44,
	    0x31, 0x00 };
	uint32_t u = 0;
	unsigned bits = 0;
	int i;

	if (n < 16 || memcmp(d, magic, 8) != 0)
		return 0;
	for (i = 3; i >= 0; i--)
		u = u * 256 + d[8 + i];
	for (i = 0; i < 32; i++)
		bits += (u >> i) & 1;
	if (bits != 1 || u < 4096 || u > 16777216)
		return 0;
	for (i = 12; i < 16; i++)
		if (d[i] != 0)
			return 0;
	*unit = u;
	return 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint32_t unit = 12345, want = 0;
	int rc = fs_cow_header_decode(data, size, &unit);
	int ok = reference(data, size, &want);

	if (rc != 0 && rc != -EPROTO)
		abort();
	if ((rc == 0) != ok)
		abort();
	if (unit != (ok ? want : 0))
		abort();
	return 0;
}
