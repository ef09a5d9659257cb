/*
 * fuzz_writer_key.c - libFuzzer target for the writer credential parser
 * (docs/format/writer-key.md): cf_bk_wcred_parse.
 *
 * Invariants: 0 or -EPROTO (or -ENOTSUP, -ENOMEM); a failed parse leaves
 * no keys and a zeroed info; a successful one gives write-only keys
 * whose chunker parameters are valid, and parsing without keys agrees.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cf_backup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct cf_bk_wcred_info zero;
	struct cf_bk_wcred_info info, again;
	struct cf_bk_keys *k = NULL;
	struct cf_bk_chunker *ch = NULL;
	int rc;

	if (sodium_init() < 0)
		abort();
	rc = cf_bk_wcred_parse(data, size, &info, &k);
	if (rc != 0) {
		if (rc != -EPROTO && rc != -ENOTSUP && rc != -ENOMEM)
			abort();
		if (k != NULL)
			abort();
		if (rc == -EPROTO && memcmp(&info, &zero, sizeof(info)) != 0)
			abort();
		return 0;
	}
	if (k == NULL || !cf_bk_keys_writeonly(k) || size != CF_BK_WCRED_BYTES)
		abort();
	if (cf_bk_wcred_parse(data, size, &again, NULL) != 0 ||
	    memcmp(&info, &again, sizeof(info)) != 0)
		abort();
	if (cf_bk_chunker_new(&ch, k, info.min, info.avg, info.max) != 0)
		abort();
	cf_bk_chunker_free(ch);
	cf_bk_keys_free(k);
	return 0;
}
