/*
 * fuzz_repo_snapshot.c - libFuzzer target for the snapshot JSON decoder
 * (docs/format/repository.md: Snapshots, [BK-SNAP-1]):
 * cf_bk_snapshot_decode.
 *
 * Invariants: 0 or -EPROTO (or -ENOMEM); a decoded snapshot encodes, and
 * that canonical encoding decodes and re-encodes to the same text.
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
	struct cf_bk_snapshot *s = NULL, *s2 = NULL;
	char *e1 = NULL, *e2 = NULL;
	size_t l1, l2;
	int rc;

	rc = cf_bk_snapshot_decode(&s, (const char *)data, size);
	if (rc != 0) {
		if ((rc != -EPROTO && rc != -ENOMEM) || s != NULL)
			abort();
		return 0;
	}
	if (cf_bk_snapshot_encode(s, &e1, &l1) != 0)
		abort();
	if (cf_bk_snapshot_decode(&s2, e1, l1) != 0)
		abort();
	if (cf_bk_snapshot_encode(s2, &e2, &l2) != 0)
		abort();
	if (l1 != l2 || memcmp(e1, e2, l1) != 0)
		abort();
	free(e1);
	free(e2);
	cf_bk_snapshot_free(s);
	cf_bk_snapshot_free(s2);
	return 0;
}
