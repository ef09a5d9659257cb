/*
 * fuzz_fs_name.c - libFuzzer target for the two text decoders of the
 * encrypted store (docs/format/fs.md): encrypted names
 * (cf_fs_name_decrypt) and encrypted symlink targets
 * (cf_fs_link_decrypt).  Every input goes through both.
 *
 * The keys are those of the test vectors' root key (bytes 00..1f), and
 * names are decrypted for the vectors' directory IV (d0..df) and for the
 * fixed xattr IV, so the seeds cut from tests/vectors/fs-v1.json
 * authenticate.  The decoders take C strings, so the input is copied into
 * a buffer one byte longer and NUL-terminated: what follows an embedded
 * NUL is not part of the string, as it could not be in a directory entry
 * or a symlink either.
 *
 * Checks: only 0, -EPROTO and -EBADMSG are returned.  A name that
 * decrypts is 1..175 bytes without '/' and is not "." or "..", and
 * encrypting it again gives exactly the input: one encoding per name
 * (canonical base64url, deterministic SIV), so no two directory entries
 * can stand for the same name.  A target that decrypts is as long as its
 * encoding says, and survives an encrypt/decrypt round trip.  Nothing
 * outside the base64url alphabet ever decodes: libsodium 1.0.18 reads
 * bytes 0x80-0xff as '_', so this is fs_crypt.c's own check (the seed
 * regress-b64-high-byte-alias is the input that found it).
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cf_fs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* 1 if s holds a byte outside the base64url alphabet. */
static int
off_alphabet(const char *s)
{
	return s[strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789-_")] != '\0';
}

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

static void
check_name(const struct cf_fs_keys *k, const unsigned char *diriv,
    const char *s)
{
	char out[CF_FS_NAME_MAX + 1], enc[256];
	size_t len;
	int rc;

	rc = cf_fs_name_decrypt(k, diriv, s, out, sizeof(out));
	if (rc == -EPROTO || rc == -EBADMSG)
		return;
	if (rc != 0)
		abort();
	len = strlen(out);
	if (len == 0 || len > CF_FS_NAME_MAX || strchr(out, '/') != NULL ||
	    strcmp(out, ".") == 0 || strcmp(out, "..") == 0)
		abort();
	if (off_alphabet(s))
		abort();
	if (cf_fs_name_encrypt(k, diriv, out, enc, sizeof(enc)) != 0 ||
	    strcmp(enc, s) != 0)
		abort();
}

static void
check_link(const struct cf_fs_keys *k, const char *s)
{
	static char out[PATH_MAX], enc[PATH_MAX], again[PATH_MAX];
	size_t len;
	int rc;

	rc = cf_fs_link_decrypt(k, s, out, sizeof(out));
	if (rc == -EPROTO || rc == -EBADMSG || rc == -ENOMEM)
		return;
	if (rc != 0)
		abort();
	if (off_alphabet(s))
		abort();
	len = strlen(out);
	/* Canonical base64url: 4 characters per 3 bytes, nonce and tag. */
	if (len == 0 || len != strlen(s) * 3 / 4 - 40)
		abort();
	rc = cf_fs_link_encrypt(k, out, enc, sizeof(enc));
	if (rc == -ENOMEM)
		return;
	if (rc != 0 || strlen(enc) != strlen(s) || off_alphabet(enc))
		abort();
	if (cf_fs_link_decrypt(k, enc, again, sizeof(again)) != 0 ||
	    strcmp(again, out) != 0)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cf_fs_keys *keys;
	static unsigned char diriv[CF_FS_DIRIV_BYTES];
	static const unsigned char xattr_iv[CF_FS_DIRIV_BYTES] =
	    "coffer-xattr-iv";
	char *s;
	size_t i;

	if (keys == NULL) {
		keys = fixed_keys();
		for (i = 0; i < sizeof(diriv); i++)
			diriv[i] = (unsigned char)(0xd0 + i);
	}
	s = malloc(size + 1);
	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	check_name(keys, diriv, s);
	check_name(keys, xattr_iv, s);
	check_link(keys, s);
	free(s);
	return 0;
}
