/*
 * fuzz_repo_tree.c - libFuzzer target for the tree blob decoder
 * (docs/format/repository.md: Trees, [BK-TREE-1..2]): cf_bk_tree_decode.
 *
 * Invariants: 0 or -EPROTO (or -ENOMEM); a decoded tree has no name a
 * restore could be steered by (".", "..", "/", empty); and, since the
 * encoding is canonical, re-encoding a decoded tree gives exactly the
 * input bytes.
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
	struct cf_bk_tree *t = NULL;
	unsigned char *enc = NULL;
	size_t len, i;
	int rc;

	rc = cf_bk_tree_decode(&t, data, size);
	if (rc != 0) {
		if ((rc != -EPROTO && rc != -ENOMEM) || t != NULL)
			abort();
		return 0;
	}
	for (i = 0; i < t->count; i++) {
		const char *n = t->nodes[i].name;

		if (n[0] == '\0' || strchr(n, '/') != NULL ||
		    strcmp(n, ".") == 0 || strcmp(n, "..") == 0)
			abort();
	}
	if (cf_bk_tree_encode(t, &enc, &len) != 0)
		abort();
	if (len != size || memcmp(enc, data, size) != 0)
		abort();
	free(enc);
	cf_bk_tree_free(t);
	return 0;
}
