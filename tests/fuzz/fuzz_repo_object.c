/*
 * fuzz_repo_object.c - libFuzzer target for sealed objects
 * (docs/format/repository.md: Object header, Sealed objects, Write-only
 * objects): cf_bk_object_open of the kind byte 9 names, under the full
 * backup keys of the test vectors' root key (bytes 00..1f), so that
 * seeds cut from tests/vectors/repository-v1.json and
 * repository-wo-v2.json authenticate and reach the code behind the tag
 * checks (version 1, sealed keys, index-key objects).
 *
 * Invariants: 0 or a documented error, nothing left behind on failure;
 * on success the plaintext is NUL-terminated.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cf_backup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct cf_bk_keys *
fixed_keys(void)
{
	struct cf_secbuf *sb = NULL;
	struct cf_bk_keys *k = NULL;
	size_t i;

	if (sodium_init() < 0 || cf_secbuf_new(&sb, 32) != 0)
		abort();
	for (i = 0; i < 32; i++)
		cf_secbuf_data(sb)[i] = (unsigned char)i;
	if (cf_bk_keys_new(&k, sb, 1, CF_KS_CIPHER_XCHACHA20POLY1305) != 0)
		abort();
	cf_secbuf_free(sb);
	return k;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cf_bk_keys *k;
	unsigned char *plain = NULL;
	size_t plen = 0;
	enum cf_bk_kind kind;
	int rc;

	if (k == NULL)
		k = fixed_keys();
	if (size < 10 || data[9] < CF_BK_KIND_INDEX ||
	    data[9] > CF_BK_KIND_CONFIG)
		kind = CF_BK_KIND_SNAPSHOT;
	else
		kind = (enum cf_bk_kind)data[9];
	rc = cf_bk_object_open(k, kind, data, size, &plain, &plen);
	if (rc != 0) {
		if (rc != -EPROTO && rc != -EBADMSG && rc != -ENOKEY &&
		    rc != -ENOTSUP && rc != -ENOMEM)
			abort();
		if (plain != NULL || plen != 0)
			abort();
		return 0;
	}
	if (plain == NULL || plain[plen] != '\0')
		abort();
	free(plain);
	return 0;
}
