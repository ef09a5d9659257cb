/*
 * fuzz_fs_header.c - libFuzzer target for one backing file of the
 * encrypted store (docs/format/fs.md): the 32-byte header
 * (cf_fs_header_decode) and the sealed blocks after it
 * (cf_fs_block_open), under the store keys of the test vectors' root key
 * (bytes 00..1f), so that seeds cut from tests/vectors/fs-v1.json
 * authenticate and reach the paths behind the tag check.
 *
 * The input is the whole backing file.  A header must decode or give
 * -EPROTO; one that decodes has a known cipher and a key version of at
 * least 1 and re-encodes to exactly the input's first 32 bytes (one
 * encoding per header).  The body is then cut into blocks as the daemon
 * cuts it (4096 bytes plus overhead each, the last one shorter) and at
 * most 8 are opened, each with its own block number: only 0 and -EBADMSG
 * are allowed, and a last block of 1..overhead bytes (damage) must be
 * -EBADMSG even when it is all zeros.  An all-zero block of a valid
 * length is a hole and must open to zeros; any other block that opens
 * must survive a seal/open round trip.  When every block opened, the
 * opened lengths must add up to cf_fs_plain_size().
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cf_fs.h"

#define MAX_BLOCKS 8U

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct cf_fs_keys *
fixed_keys(void)
{
	unsigned char root[32];
	struct cf_secbuf *sb = NULL;
	struct cf_fs_keys *k = NULL;
	size_t i;

	if (sodium_init() < 0)
		abort();
	for (i = 0; i < sizeof(root); i++)
		root[i] = (unsigned char)i;
	if (cf_secbuf_new(&sb, sizeof(root)) != 0)
		abort();
	memcpy(cf_secbuf_data(sb), root, sizeof(root));
	if (cf_fs_keys_new(&k, sb, CF_KS_CIPHER_XCHACHA20POLY1305, 1) != 0)
		abort();
	cf_secbuf_free(sb);
	return k;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cf_fs_keys *keys;
	static unsigned char out[CF_FS_BLOCK + 64], again[CF_FS_BLOCK + 64];
	static unsigned char sealed[CF_FS_BLOCK + 64];
	unsigned char enc[CF_FS_HEADER_BYTES];
	struct cf_fs_file_ctx *ctx = NULL;
	struct cf_fs_header h = { 0 };
	const unsigned char *body;
	size_t blen, off, clen, ovh, cb, plen, total = 0;
	uint64_t b;
	int rc, all_opened = 1;

	if (keys == NULL)
		keys = fixed_keys();
	rc = cf_fs_header_decode(&h, data, size);
	if (rc != 0) {
		if (rc != -EPROTO)
			abort();
		return 0;
	}
	if ((h.cipher != CF_KS_CIPHER_AES256GCM &&
	    h.cipher != CF_KS_CIPHER_XCHACHA20POLY1305) || h.key_version == 0)
		abort();
	cf_fs_header_encode(&h, enc);
	if (memcmp(enc, data, CF_FS_HEADER_BYTES) != 0)
		abort();
	if (!cf_ks_cipher_available(h.cipher))
		return 0;
	rc = cf_fs_file_ctx_new(&ctx, keys, &h);
	if (rc == -ENOKEY) {
		/* The keys hold version 1 only: any other has no key. */
		if (h.key_version == 1)
			abort();
		h.key_version = 1;
		rc = cf_fs_file_ctx_new(&ctx, keys, &h);
	}
	if (rc == -ENOMEM)
		return 0;
	if (rc != 0)
		abort();
	ovh = cf_fs_block_overhead(h.cipher);
	cb = CF_FS_BLOCK + ovh;
	body = data + CF_FS_HEADER_BYTES;
	blen = size - CF_FS_HEADER_BYTES;
	for (b = 0, off = 0; off < blen && b < MAX_BLOCKS; b++, off += cb) {
		clen = blen - off < cb ? blen - off : cb;
		memset(out, 0xa5, sizeof(out));
		rc = cf_fs_block_open(ctx, b, 0, body + off, clen, out);
		if (rc != 0 && rc != -EBADMSG)
			abort();
		if (clen <= ovh && rc != -EBADMSG)
			abort();	/* [FS-BLK-6] */
		if (rc != 0) {
			all_opened = 0;
			continue;
		}
		plen = clen - ovh;
		if (sodium_is_zero(body + off, clen)) {
			/* A hole reads as zeros and writes nothing more. */
			if (!sodium_is_zero(out, plen) || out[plen] != 0xa5)
				abort();
		} else {
			if (cf_fs_block_seal(ctx, b, 0, out, plen, sealed) != 0)
				abort();
			if (cf_fs_block_open(ctx, b, 0, sealed, clen, again) != 0 ||
			    memcmp(again, out, plen) != 0)
				abort();
		}
		total += plen;
	}
	/* Damaged sizes never get here: their last block is refused. */
	if (all_opened && off >= blen &&
	    cf_fs_plain_size(h.cipher, (off_t)size) != (off_t)total)
		abort();
	cf_fs_file_ctx_free(ctx);
	return 0;
}
