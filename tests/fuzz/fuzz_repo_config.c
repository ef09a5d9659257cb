/*
 * fuzz_repo_config.c - libFuzzer target for the repository config's
 * JSON decoder (docs/format/repository.md: Config, [BK-CFG-1],
 * [BK-CFG-2]): bk_config_decode, including the chunk key of a re-keyed
 * config.
 *
 * Invariants: 0 or -EPROTO (or -ENOMEM); a failed decode keeps no chunk
 * key; a decoded config has valid chunker parameters, a chunk key of 32
 * bytes exactly when its version is set (never 0), encodes, and that
 * canonical encoding decodes and re-encodes to the same text.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "bk_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct bk_config c, c2;
	char *e1 = NULL, *e2 = NULL;
	size_t l1, l2;
	int rc;

	if (sodium_init() < 0)
		abort();
	rc = bk_config_decode(&c, (const char *)data, size);
	if (rc != 0) {
		if ((rc != -EPROTO && rc != -ENOMEM) || c.chunk != NULL ||
		    c.chunk_version != 0)
			abort();
		return 0;
	}
	if ((c.chunk == NULL) != (c.chunk_version == 0))
		abort();
	if (c.chunk != NULL && cf_secbuf_len(c.chunk) != CF_KS_KEY_BYTES)
		abort();
	if (!bk_chunker_params_ok(c.min, c.avg, c.max))
		abort();
	if (bk_config_encode(&c, &e1, &l1) != 0)
		abort();
	if (bk_config_decode(&c2, e1, l1) != 0)
		abort();
	if (bk_config_encode(&c2, &e2, &l2) != 0)
		abort();
	if (l1 != l2 || memcmp(e1, e2, l1) != 0)
		abort();
	bk_config_text_free(e1, l1);
	bk_config_text_free(e2, l2);
	bk_config_clear(&c);
	bk_config_clear(&c2);
	return 0;
}
