/*
 * fuzz_repo_index.c - libFuzzer target for the index plaintext decoder
 * (docs/format/repository.md: Index, [BK-IDX-1]): cf_bk_index_decode.
 *
 * Invariants: 0 or -EPROTO (or -ENOMEM); a failed decode leaves the index
 * empty; a successful one encodes, and the encoding decodes and encodes
 * again to the same bytes; every listed blob is found by lookup.
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
	struct cf_bk_index *a = NULL, *b = NULL;
	unsigned char *e1 = NULL, *e2 = NULL;
	size_t l1, l2;
	int rc;

	if (cf_bk_index_new(&a) != 0 || cf_bk_index_new(&b) != 0)
		abort();
	rc = cf_bk_index_decode(a, data, size);
	if (rc != 0) {
		if (rc != -EPROTO && rc != -ENOMEM)
			abort();
		if (cf_bk_index_packs(a) != 0 || cf_bk_index_blobs(a) != 0)
			abort();
		goto out;
	}
	if (cf_bk_index_packs(a) == 0)
		abort();
	if (cf_bk_index_encode(a, &e1, &l1) != 0)
		abort();
	if (cf_bk_index_decode(b, e1, l1) != 0)
		abort();
	if (cf_bk_index_encode(b, &e2, &l2) != 0)
		abort();
	if (l1 != l2 || memcmp(e1, e2, l1) != 0)
		abort();
	if (cf_bk_index_blobs(a) != cf_bk_index_blobs(b))
		abort();
out:
	free(e1);
	free(e2);
	cf_bk_index_free(a);
	cf_bk_index_free(b);
	return 0;
}
