/*
 * fuzz_fs_ctl_keys.c - libFuzzer target for the reply to ROOTKEYS on a
 * mounted store's control socket (docs/format/ctl.md [CTL-8]): the line
 * "OK <n>\n", then n records of a 4-byte little-endian version and a
 * 32-byte key, parsed by the backup (fs_ctl_keys_head, fs_ctl_keys_check)
 * before any key is used.
 *
 * The input is the reply: its first line (to the first newline, at most
 * 16 bytes) goes to fs_ctl_keys_head, what follows to fs_ctl_keys_check
 * against the live versions 1, 2, 3 and 7.  Both are compared with an
 * independent reading of the spec.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fs_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint32_t live[] = { 1, 2, 3, 7 };

/* "OK " [1-9][0-9]* "\n" with a value 1..64. */
static int
ref_head(const char *s, size_t n, size_t *count)
{
	unsigned long v;
	char buf[16], *end;

	if (n < 5 || n > sizeof(buf) - 1 || strncmp(s, "OK ", 3) != 0 ||
	    s[n - 1] != '\n' || s[3] < '1' || s[3] > '9')
		return 0;
	memcpy(buf, s + 3, n - 4);
	buf[n - 4] = '\0';
	if (strspn(buf, "0123456789") != n - 4)
		return 0;
	v = strtoul(buf, &end, 10);
	if (*end != '\0' || v < 1 || v > 64)
		return 0;
	*count = v;
	return 1;
}

static int
ref_check(const uint8_t *rec, size_t n)
{
	uint32_t seen[64];
	size_t i, j, k;

	for (i = 0; i < n; i++) {
		uint32_t v = 0;

		for (k = 4; k-- > 0;)
			v = v << 8 | rec[i * 36 + k];
		for (j = 0; j < 4 && live[j] != v; j++)
			;
		if (j == 4)
			return 0;
		for (j = 0; j < i; j++)
			if (seen[j] == v)
				return 0;
		seen[i] = v;
	}
	return 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t len, n = 0, want = 0;
	const uint8_t *nl;
	int rc, ok;

	nl = memchr(data, '\n', size < 16 ? size : 16);
	len = nl != NULL ? (size_t)(nl - data) + 1 : (size < 16 ? size : 16);
	rc = fs_ctl_keys_head((const char *)data, len, &n);
	if (rc != 0 && rc != -EACCES && rc != -EPROTO)
		abort();
	ok = ref_head((const char *)data, len, &want);
	if ((rc == 0) != ok || (ok && n != want))
		abort();
	if ((rc == -EACCES) != (len >= 4 && memcmp(data, "ERR ", 4) == 0))
		abort();
	if (rc != 0 || size - len < n * FS_CTL_KEY_REC)
		return 0;
	rc = fs_ctl_keys_check(data + len, n, live, 4);
	if (rc != 0 && rc != -EPROTO)
		abort();
	if ((rc == 0) != ref_check(data + len, n))
		abort();
	return 0;
}
