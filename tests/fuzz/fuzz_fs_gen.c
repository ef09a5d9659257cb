/*
 * fuzz_fs_gen.c - libFuzzer target for the two decoders of file
 * generations (docs/format/fs.md, File generations): the backing xattr
 * value (cf_fs_gen_decode) and the generation log kept in coffer's home
 * (cf_fs_genlog_parse).
 *
 * The whole input is parsed as a log: 0 or -EPROTO only; on 0 the bytes
 * used are the header plus whole records, at most the input, and every
 * record reported re-encodes to the input's bytes.  Its first 64 bytes
 * (or fewer) are decoded as an xattr value under the vectors' root key
 * (00..1f): -EPROTO or -EBADMSG, or a generation of at least 1 with
 * known flags that (version 2) re-encodes to exactly those bytes.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cf_fs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct walk {
	const uint8_t *data;
	size_t off;
};

static int
check_record(void *arg, const unsigned char *id, uint64_t gen)
{
	struct walk *w = arg;
	unsigned char rec[CF_FS_GENLOG_RECORD];

	cf_fs_genlog_record(id, gen, rec);
	if (memcmp(rec, w->data + w->off, sizeof(rec)) != 0)
		abort();
	w->off += sizeof(rec);
	return 0;
}

static struct cf_fs_keys *
fixed_keys(void)
{
	struct cf_secbuf *sb = NULL;
	struct cf_fs_keys *k = NULL;
	size_t i;

	if (sodium_init() < 0 || cf_secbuf_new(&sb, 32) != 0)
		abort();
	for (i = 0; i < 32; i++)
		((unsigned char *)cf_secbuf_data(sb))[i] = (unsigned char)i;
	if (cf_fs_keys_new(&k, sb, CF_KS_CIPHER_XCHACHA20POLY1305, 1) != 0)
		abort();
	cf_secbuf_free(sb);
	return k;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cf_fs_keys *keys;
	unsigned char id[CF_KS_ID_BYTES], again[CF_FS_GEN_BYTES];
	struct walk w = { data, CF_FS_GENLOG_HEADER };
	size_t used = 0, vl;
	uint64_t gen = 0;
	unsigned flags = 0;
	int rc;

	if (keys == NULL)
		keys = fixed_keys();
	rc = cf_fs_genlog_parse(data, size, check_record, &w, &used);
	if (rc != 0 && rc != -EPROTO)
		abort();
	if (rc == 0 && (used > size || used < CF_FS_GENLOG_HEADER ||
	    (used - CF_FS_GENLOG_HEADER) % CF_FS_GENLOG_RECORD != 0 ||
	    w.off != used))
		abort();
	vl = size < CF_FS_GEN_BYTES ? size : CF_FS_GEN_BYTES;
	rc = cf_fs_gen_decode(keys, data, vl, id, &gen, &flags);
	if (rc != 0) {
		if ((rc != -EPROTO && rc != -EBADMSG) || gen != 0 ||
		    flags != 0)
			abort();
		return 0;
	}
	if (gen == 0 || (flags & ~CF_FS_GEN_DENSE) != 0)
		abort();
	/* Version 1 (no flags) is read, no longer written; a version-2
	 * value re-encodes to exactly its bytes. */
	if (data[0] == 1 ? flags != 0 : cf_fs_gen_encode(keys, id, gen,
	    flags, again) != 0 || memcmp(again, data, CF_FS_GEN_BYTES) != 0)
		abort();
	return 0;
}
