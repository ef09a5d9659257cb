/*
 * ks_aead.c - the two AEADs coffer offers, and its subkey derivation.
 *
 * AES-256-GCM (12-byte nonces; only on CPUs with AES-NI and PCLMUL, as
 * libsodium requires) and XChaCha20-Poly1305 (24-byte nonces, everywhere).
 * Callers choose nonces; docs/crypto.md says how each user keeps them
 * unique.  Subkeys come from crypto_kdf (BLAKE2b) with one context per
 * purpose.  No primitive is implemented here: this is only glue.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "ks_int.h"

struct cf_ks_aead {
	enum cf_ks_cipher cipher;
	/* AES: expanded key state (16-byte aligned, sodium_malloc'd). */
	crypto_aead_aes256gcm_state *aes;
	/* XChaCha: the raw key. */
	struct cf_secbuf *key;
	/* Rekeyed once: left writable from then on (cf_ks_aead_rekey). */
	int writable;
};

int
cf_ks_init(void)
{
	if (sodium_init() < 0)
		return ks_err(-EIO, "libsodium failed to initialise");
	return 0;
}

const char *
cf_ks_cipher_name(enum cf_ks_cipher c)
{
	switch (c) {
	case CF_KS_CIPHER_AES256GCM:
		return "aes-256-gcm";
	case CF_KS_CIPHER_XCHACHA20POLY1305:
		return "xchacha20-poly1305";
	case CF_KS_CIPHER_NONE:
		break;
	}
	return NULL;
}

int
cf_ks_cipher_parse(const char *name, enum cf_ks_cipher *out)
{
	*out = CF_KS_CIPHER_NONE;
	if (strcmp(name, "aes-256-gcm") == 0)
		*out = CF_KS_CIPHER_AES256GCM;
	else if (strcmp(name, "xchacha20-poly1305") == 0)
		*out = CF_KS_CIPHER_XCHACHA20POLY1305;
	else
		return ks_err(-EINVAL, "unknown cipher '%.64s' (use "
		    "aes-256-gcm or xchacha20-poly1305)", name);
	return 0;
}

int
cf_ks_cipher_available(enum cf_ks_cipher c)
{
	switch (c) {
	case CF_KS_CIPHER_AES256GCM:
		return crypto_aead_aes256gcm_is_available();
	case CF_KS_CIPHER_XCHACHA20POLY1305:
		return 1;
	case CF_KS_CIPHER_NONE:
		break;
	}
	return 0;
}

enum cf_ks_cipher
cf_ks_cipher_default(void)
{
	if (crypto_aead_aes256gcm_is_available())
		return CF_KS_CIPHER_AES256GCM;
	return CF_KS_CIPHER_XCHACHA20POLY1305;
}

size_t
cf_ks_cipher_nonce_bytes(enum cf_ks_cipher c)
{
	switch (c) {
	case CF_KS_CIPHER_AES256GCM:
		return crypto_aead_aes256gcm_NPUBBYTES;
	case CF_KS_CIPHER_XCHACHA20POLY1305:
		return crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
	case CF_KS_CIPHER_NONE:
		break;
	}
	return 0;
}

int
cf_ks_aead_new(struct cf_ks_aead **out, enum cf_ks_cipher c,
    const unsigned char key[CF_KS_KEY_BYTES])
{
	struct cf_ks_aead *a = NULL;
	int rc = -ENOMEM;

	*out = NULL;
	if (!cf_ks_cipher_available(c))
		return ks_err(-ENOTSUP, "cipher %s is not available on this "
		    "CPU", cf_ks_cipher_name(c) ? cf_ks_cipher_name(c) : "?");
	a = calloc(1, sizeof(*a));
	if (a == NULL)
		goto out;
	a->cipher = c;
	if (c == CF_KS_CIPHER_AES256GCM) {
		/* The state size is a multiple of 16, so this is aligned. */
		a->aes = sodium_malloc(sizeof(*a->aes));
		if (a->aes == NULL)
			goto out;
		crypto_aead_aes256gcm_beforenm(a->aes, key);
		sodium_mprotect_readonly(a->aes);
	} else {
		rc = cf_secbuf_new(&a->key, CF_KS_KEY_BYTES);
		if (rc < 0)
			goto out;
		memcpy(cf_secbuf_data(a->key), key, CF_KS_KEY_BYTES);
		cf_secbuf_readonly(a->key);
	}
	*out = a;
	a = NULL;
	rc = 0;
out:
	cf_ks_aead_free(a);
	return rc;
}

void
cf_ks_aead_rekey(struct cf_ks_aead *a, const unsigned char key[CF_KS_KEY_BYTES])
{
	/*
	 * The pages stay locked, guarded and out of core dumps, but are
	 * left writable after the first rekey: a protection change costs a
	 * TLB shootdown on every core the process's threads run on, and a
	 * backup rekeys once per file (two changes per file were 3-4 % of a
	 * full backup's CPU, docs/backup.md).  Read access was never taken
	 * away: the protection only guarded against stray writes.
	 */
	if (a->cipher == CF_KS_CIPHER_AES256GCM) {
		if (!a->writable)
			sodium_mprotect_readwrite(a->aes);
		crypto_aead_aes256gcm_beforenm(a->aes, key);
	} else {
		if (!a->writable)
			cf_secbuf_readwrite(a->key);
		memcpy(cf_secbuf_data(a->key), key, CF_KS_KEY_BYTES);
	}
	a->writable = 1;
}

void
cf_ks_aead_free(struct cf_ks_aead *a)
{
	if (a == NULL)
		return;
	sodium_free(a->aes);
	cf_secbuf_free(a->key);
	free(a);
}

enum cf_ks_cipher
cf_ks_aead_cipher(const struct cf_ks_aead *a)
{
	return a->cipher;
}

int
cf_ks_aead_seal(const struct cf_ks_aead *a, unsigned char *c,
    const unsigned char *m, size_t mlen, const unsigned char *ad, size_t adlen,
    const unsigned char *nonce)
{
	unsigned long long clen;

	if (a->cipher == CF_KS_CIPHER_AES256GCM) {
		if (crypto_aead_aes256gcm_encrypt_afternm(c, &clen, m, mlen, ad,
		    adlen, NULL, nonce, a->aes) != 0)
			return -EINVAL;
	} else {
		if (crypto_aead_xchacha20poly1305_ietf_encrypt(c, &clen, m,
		    mlen, ad, adlen, NULL, nonce,
		    cf_secbuf_cdata(a->key)) != 0)
			return -EINVAL;
	}
	return 0;
}

int
cf_ks_aead_open(const struct cf_ks_aead *a, unsigned char *m,
    const unsigned char *c, size_t clen, const unsigned char *ad, size_t adlen,
    const unsigned char *nonce)
{
	unsigned long long mlen;
	int r;

	if (clen < CF_KS_TAG_BYTES)
		return -EINVAL;
	if (a->cipher == CF_KS_CIPHER_AES256GCM)
		r = crypto_aead_aes256gcm_decrypt_afternm(m, &mlen, NULL, c,
		    clen, ad, adlen, nonce, a->aes);
	else
		r = crypto_aead_xchacha20poly1305_ietf_decrypt(m, &mlen, NULL,
		    c, clen, ad, adlen, nonce, cf_secbuf_cdata(a->key));
	if (r != 0) {
		if (m != c)
			sodium_memzero(m, clen - CF_KS_TAG_BYTES);
		return -EBADMSG;
	}
	return 0;
}

/*
 * crypto_kdf contexts: 8 bytes each, one per purpose, so a subkey for one
 * purpose can never equal a subkey for another (docs/crypto.md [KS-KDF-1]).
 */
static const char *
purpose_context(enum cf_ks_purpose p)
{
	switch (p) {
	case CF_KS_PURPOSE_FS_CONTENT:
		return "cf-fsdat";
	case CF_KS_PURPOSE_FS_NAMES:
		return "cf-fsnam";
	case CF_KS_PURPOSE_BK_DATA:
		return "cf-bkdat";
	case CF_KS_PURPOSE_BK_CHUNKID:
		return "cf-bkcid";
	case CF_KS_PURPOSE_AUDIT:
		return "cf-audit";
	case CF_KS_PURPOSE_FS_META:
		return "cf-fsmet";
	}
	return NULL;
}

int
cf_ks_derive(struct cf_secbuf **out, const struct cf_secbuf *root,
    enum cf_ks_purpose purpose)
{
	const char *ctx = purpose_context(purpose);
	struct cf_secbuf *sk = NULL;
	int rc;

	*out = NULL;
	if (ctx == NULL)
		return ks_err(-EINVAL, "unknown key purpose %d", (int)purpose);
	if (cf_secbuf_len(root) != CF_KS_KEY_BYTES)
		cf_misuse("cf_ks_derive: root key is not 32 bytes");
	rc = cf_secbuf_new(&sk, CF_KS_KEY_BYTES);
	if (rc < 0)
		return rc;
	/* Subkey id 1: the id space is left for future per-purpose keys. */
	if (crypto_kdf_derive_from_key(cf_secbuf_data(sk), CF_KS_KEY_BYTES, 1,
	    ctx, cf_secbuf_cdata(root)) != 0) {
		cf_secbuf_free(sk);
		return -EINVAL;
	}
	*out = sk;
	return 0;
}

int
cf_ks_derive_id(unsigned char out[CF_KS_KEY_BYTES], const struct cf_secbuf *key,
    const char *label, const unsigned char *id, size_t idlen)
{
	crypto_generichash_state st;
	unsigned char lablen;
	size_t ll = strlen(label);

	if (ll > 255 || cf_secbuf_len(key) != CF_KS_KEY_BYTES)
		cf_misuse("cf_ks_derive_id: bad label or key");
	lablen = (unsigned char)ll;
	/* BLAKE2b-256(key; len(label) || label || id): unambiguous input. */
	if (crypto_generichash_init(&st, cf_secbuf_cdata(key), CF_KS_KEY_BYTES,
	    CF_KS_KEY_BYTES) != 0)
		return -EINVAL;
	crypto_generichash_update(&st, &lablen, 1);
	crypto_generichash_update(&st, (const unsigned char *)label, ll);
	crypto_generichash_update(&st, id, idlen);
	crypto_generichash_final(&st, out, CF_KS_KEY_BYTES);
	sodium_memzero(&st, sizeof(st));
	return 0;
}
