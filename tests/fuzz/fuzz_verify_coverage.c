/*
 * fuzz_verify_coverage.c - libFuzzer target for the read-data coverage
 * file (docs/format/verify-coverage.md): cf_bk_coverage_parse on any
 * bytes.
 *
 * Invariants: the parser gives 0, -EPROTO, -E2BIG or -ENOMEM and never
 * reads past the input; what it accepts encodes to text that parses to
 * the same entries and encodes to the same bytes again.
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
	struct cf_bk_coverage *c = NULL, *c2 = NULL;
	unsigned char id[CF_BK_ID_BYTES], id2[CF_BK_ID_BYTES];
	int64_t f, l, f2, l2;
	char *text = NULL, *text2 = NULL, *copy;
	size_t len, len2, i;
	int rc;

	/* An exact-size copy, so ASan sees any read past the input. */
	copy = malloc(size ? size : 1);
	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);
	rc = cf_bk_coverage_parse(copy, size, &c);
	free(copy);
	if (rc == -EPROTO || rc == -E2BIG || rc == -ENOMEM)
		return 0;
	if (rc != 0 || c == NULL)
		abort();
	if (cf_bk_coverage_format(c, &text, &len) != 0)
		goto out;
	if (strlen(text) != len)
		abort();
	if (cf_bk_coverage_parse(text, len, &c2) != 0)
		abort();
	if (cf_bk_coverage_count(c2) != cf_bk_coverage_count(c))
		abort();
	for (i = 0; i < cf_bk_coverage_count(c); i++) {
		cf_bk_coverage_get(c, i, id, &f, &l);
		cf_bk_coverage_get(c2, i, id2, &f2, &l2);
		if (memcmp(id, id2, sizeof(id)) != 0 || f != f2 || l != l2 ||
		    f < 0 || l < 0)
			abort();
	}
	if (cf_bk_coverage_format(c2, &text2, &len2) != 0)
		goto out;
	if (len2 != len || memcmp(text, text2, len) != 0)
		abort();
out:
	free(text);
	free(text2);
	cf_bk_coverage_free(c);
	cf_bk_coverage_free(c2);
	return 0;
}
