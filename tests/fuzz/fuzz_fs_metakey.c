/*
 * fuzz_fs_metakey.c - libFuzzer target for the files a re-keying of the
 * store's metadata leaves (docs/format/fs.md, Re-keying the metadata):
 * the journal store/cf.metakey ([FS-MKEY-2]), the xattr stash cf.mk.x
 * ([FS-MKEY-6]) and the marker's clear metadata version ([FS-STORE-8]).
 * All are read from a store an attacker may write.
 *
 * The first input byte picks the decoder; the rest is its input.  Each
 * gives 0 or -EPROTO only; what decodes re-encodes to the same bytes,
 * and a stash's names are a directory entry's and a user.cf. xattr's.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cf_fs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static unsigned char out[CF_FS_METAKEY_STASH_MAX];
	struct cf_fs_metakey_stash s;
	uint32_t from, to, m;
	size_t len;
	int rc;

	if (size == 0)
		return 0;
	switch (data[0] % 3) {
	case 0:
		rc = cf_fs_metakey_journal_decode(data + 1, size - 1, &from,
		    &to);
		if (rc != 0 && rc != -EPROTO)
			abort();
		if (rc == 0) {
			if (from == 0 || to == 0 || from == to)
				abort();
			cf_fs_metakey_journal_encode(from, to, out);
			if (memcmp(out, data + 1, CF_FS_METAKEY_JOURNAL_BYTES))
				abort();
		} else if (from != 0 || to != 0) {
			abort();
		}
		break;
	case 1:
		rc = cf_fs_metakey_stash_decode(data + 1, size - 1, &s);
		if (rc != 0 && rc != -EPROTO)
			abort();
		if (rc != 0)
			break;
		if (strchr(s.entry, '/') != NULL || strcmp(s.entry, ".") == 0 ||
		    strcmp(s.entry, "..") == 0 ||
		    strncmp(s.xname, "user.cf.", 8) != 0 ||
		    s.vlen > CF_FS_METAKEY_STASH_VALUE_MAX)
			abort();
		if (cf_fs_metakey_stash_encode(s.entry, s.xname, s.value,
		    s.vlen, out, sizeof(out), &len) != 0 ||
		    len != size - 1 || memcmp(out, data + 1, len) != 0)
			abort();
		break;
	default:
		rc = cf_fs_marker_version(data + 1, size - 1, &m);
		if (rc != 0 && rc != -EPROTO)
			abort();
		if (rc == 0 && (m == 0 || (m == 1) != (size - 1 ==
		    CF_FS_MARKER1_BYTES)))
			abort();
		break;
	}
	return 0;
}
