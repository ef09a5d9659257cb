/*
 * fuzz_repo_pack.c - libFuzzer target for a whole pack file
 * (docs/format/repository.md: Blobs and packs): cf_bk_pack_parse, then
 * cf_bk_blob_open on every blob it lists, under the backup keys of the
 * test vectors' root key (bytes 00..1f), so that seeds cut from
 * tests/vectors/repository-v1.json authenticate and reach the code
 * behind the tag checks.
 *
 * Invariants: parse gives 0 or a documented error and never leaves
 * output behind on failure; on success the blob lengths and the trailer
 * add up to the input's size ([BK-PACK-1]); each blob opens to exactly
 * its ulen bytes or fails with -EBADMSG/-EPROTO.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cf_backup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct cf_bk_keys *
fixed_keys(enum cf_ks_cipher c)
{
	struct cf_secbuf *sb = NULL;
	struct cf_bk_keys *k = NULL;
	size_t i;

	if (sodium_init() < 0 || cf_secbuf_new(&sb, 32) != 0)
		abort();
	for (i = 0; i < 32; i++)
		cf_secbuf_data(sb)[i] = (unsigned char)i;
	if (cf_ks_cipher_available(c) && cf_bk_keys_new(&k, sb, 1, c) != 0)
		abort();
	cf_secbuf_free(sb);
	return k;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cf_bk_keys *kx, *kg;
	static int init;
	struct cf_bk_keys *k;
	struct cf_bk_desc *d = NULL;
	unsigned char hdr[CF_BK_HEADER_BYTES], *plain;
	size_t n, i, off = CF_BK_HEADER_BYTES, plen;
	int rc;

	if (!init) {
		kx = fixed_keys(CF_KS_CIPHER_XCHACHA20POLY1305);
		kg = fixed_keys(CF_KS_CIPHER_AES256GCM);
		init = 1;
	}
	/* The keys' cipher only matters for sealing; either opens. */
	k = size > 10 && data[10] == CF_KS_CIPHER_AES256GCM && kg != NULL ?
	    kg : kx;
	rc = cf_bk_pack_parse(k, data, size, hdr, &d, &n);
	if (rc != 0) {
		if (rc != -EPROTO && rc != -EBADMSG && rc != -ENOKEY &&
		    rc != -ENOTSUP && rc != -ENOMEM)
			abort();
		if (d != NULL || n != 0)
			abort();
		return 0;
	}
	if (n == 0 || memcmp(hdr, data, CF_BK_HEADER_BYTES) != 0)
		abort();
	for (i = 0; i < n; i++) {
		if (d[i].length > size - off)
			abort();
		rc = cf_bk_blob_open(k, hdr, &d[i], data + off, d[i].length,
		    &plain, &plen);
		if (rc == 0) {
			if (plen != d[i].ulen)
				abort();
			free(plain);
		} else if (rc != -EBADMSG && rc != -EPROTO && rc != -ENOMEM) {
			abort();
		} else if (plain != NULL) {
			abort();
		}
		off += d[i].length;
	}
	free(d);
	return 0;
}
