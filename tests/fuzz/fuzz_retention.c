/*
 * fuzz_retention.c - libFuzzer target for the retention engine's inputs
 * (docs/retention.md): cf_bk_duration_parse on the text before the first
 * NUL, then cf_bk_retention_plan over the rest as a policy (7 bytes of
 * counts) and snapshot times (8 bytes each, any values).
 *
 * Invariants: the parser gives 0 or -EINVAL and a non-negative value;
 * the plan never fails for lack of input sanity; with any rule the
 * newest snapshot is kept, and without one every snapshot is kept.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cf_backup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cf_bk_retention_policy p;
	const uint8_t *nul = memchr(data, 0, size);
	size_t tlen = nul ? (size_t)(nul - data) : size, n, i, newest = 0;
	int64_t *times, w = 0;
	unsigned *keep;
	char *text, reasons[128];
	int rc;

	text = malloc(tlen + 1);
	if (text == NULL)
		return 0;
	memcpy(text, data, tlen);
	text[tlen] = '\0';
	rc = cf_bk_duration_parse(text, &w);
	free(text);
	if ((rc != 0 && rc != -EINVAL) || w < 0 || (rc != 0 && w != 0))
		abort();
	if (nul == NULL || size - tlen - 1 < 7)
		return 0;
	data = nul + 1;
	size -= tlen + 1;
	memset(&p, 0, sizeof(p));
	p.last = data[0] % 8;
	p.hourly = data[1] % 8;
	p.daily = data[2] % 8;
	p.weekly = data[3] % 8;
	p.monthly = data[4] % 8;
	p.yearly = data[5] == 0xff ? CF_BK_KEEP_ALL : data[5] % 8;
	p.within = data[6] & 1 ? w : 0;
	data += 7;
	size -= 7;
	n = size / 8;
	if (n == 0)
		return 0;
	times = calloc(n, sizeof(*times));
	keep = calloc(n, sizeof(*keep));
	if (times == NULL || keep == NULL)
		abort();
	for (i = 0; i < n; i++) {
		memcpy(&times[i], data + 8 * i, 8);
		if (times[i] > times[newest] || (times[i] == times[newest] &&
		    i > newest))
			newest = i;
	}
	if (cf_bk_retention_plan(&p, times, n, keep) != 0)
		abort();
	if (!cf_bk_retention_policy_set(&p)) {
		for (i = 0; i < n; i++)
			if (keep[i] != CF_BK_KEEP_NOPOLICY)
				abort();
	} else if (keep[newest] == 0 && (p.last || p.hourly || p.daily ||
	    p.weekly || p.monthly || p.yearly || p.within > 0)) {
		abort();
	}
	for (i = 0; i < n; i++)
		cf_bk_retention_reasons(keep[i], reasons, sizeof(reasons));
	free(times);
	free(keep);
	return 0;
}
