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
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <sodium.h>

#include "ks_int.h"

/*
 * AES-256-GCM is computed by OpenSSL where it can (docs/crypto.md, "Which
 * library computes what"): the same GCM with 12-byte nonces and 16-byte
 * tags as libsodium's, byte for byte, about twice as fast on CPUs with
 * VAES (4 KiB blocks: 3.6 against 1.9 GB/s here).  An EVP context is
 * stateful, so each cf_ks_aead keeps a small pool of keyed contexts; a
 * thread takes one for one seal or open.  libsodium computes AES only
 * where OpenSSL has no AES-256-GCM when the cf_ks_aead is made: its key
 * state is built then instead of the pool, never beside it, as it is one
 * more mapped, locked and guarded allocation and fs/ makes a cf_ks_aead
 * per file open.  With the pool, an EVP context that cannot be made is
 * -ENOMEM, not a fallback.
 */
#define KS_EVP_POOL 8
#define KS_EVP_PIECE ((size_t)1 << 30)

struct ks_evp_pool {
	pthread_mutex_t mu;
	EVP_CIPHER_CTX *ctx[KS_EVP_POOL];
	size_t n;
};

struct cf_ks_aead {
	enum cf_ks_cipher cipher;
	/*
	 * AES by libsodium (no OpenSSL cipher): expanded key state, 16-byte
	 * aligned, sodium_malloc'd.  NULL with a pool.
	 */
	crypto_aead_aes256gcm_state *aes;
	/* The raw key: XChaCha's, and AES's for keying OpenSSL contexts. */
	struct cf_secbuf *key;
	/* AES through OpenSSL; NULL: XChaCha, or AES by libsodium. */
	struct ks_evp_pool *pool;
	/* Rekeyed once: left writable from then on (cf_ks_aead_rekey). */
	int writable;
};

static EVP_CIPHER *evp_gcm;
static pthread_once_t evp_once = PTHREAD_ONCE_INIT;

static void
evp_fetch(void)
{
	evp_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
}

/* A context keyed with the aead's key, from the pool or new; NULL: none. */
static EVP_CIPHER_CTX *
evp_take(const struct cf_ks_aead *a)
{
	EVP_CIPHER_CTX *x = NULL;

	pthread_mutex_lock(&a->pool->mu);
	if (a->pool->n > 0)
		x = a->pool->ctx[--a->pool->n];
	pthread_mutex_unlock(&a->pool->mu);
	if (x != NULL)
		return x;
	if ((x = EVP_CIPHER_CTX_new()) == NULL)
		return NULL;
	if (EVP_CipherInit_ex(x, evp_gcm, NULL, cf_secbuf_cdata(a->key), NULL,
	    1) != 1) {
		EVP_CIPHER_CTX_free(x);
		return NULL;
	}
	return x;
}

/* Back into the pool, or freed (OpenSSL wipes the key schedule). */
static void
evp_give(const struct cf_ks_aead *a, EVP_CIPHER_CTX *x)
{
	pthread_mutex_lock(&a->pool->mu);
	if (a->pool->n < KS_EVP_POOL) {
		a->pool->ctx[a->pool->n++] = x;
		x = NULL;
	}
	pthread_mutex_unlock(&a->pool->mu);
	EVP_CIPHER_CTX_free(x);
}

static void
evp_pool_free(struct ks_evp_pool *p)
{
	size_t i;

	if (p == NULL)
		return;
	for (i = 0; i < p->n; i++)
		EVP_CIPHER_CTX_free(p->ctx[i]);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

/*
 * EVP_CipherUpdate over any length (it takes an int): in pieces of 1 GiB,
 * a multiple of the block, as libsodium would take it whole.  out NULL:
 * associated data.  0, or -1.
 */
static int
evp_update(EVP_CIPHER_CTX *x, unsigned char *out, const unsigned char *in,
    size_t len)
{
	size_t n;
	int l;

	while (len > 0) {
		n = len < KS_EVP_PIECE ? len : KS_EVP_PIECE;
		if (EVP_CipherUpdate(x, out, &l, in, (int)n) != 1)
			return -1;
		if (out != NULL)
			out += n;
		in += n;
		len -= n;
	}
	return 0;
}

/*
 * 0; -1 if OpenSSL failed before writing anything; -2 if it failed after
 * writing into c (c may then hold part of a result).  Either way there is
 * no other library to try: the caller returns -EINVAL.
 */
static int
evp_seal(EVP_CIPHER_CTX *x, unsigned char *c, const unsigned char *m,
    size_t mlen, const unsigned char *ad, size_t adlen,
    const unsigned char *nonce)
{
	int l;

	if (EVP_CipherInit_ex(x, NULL, NULL, NULL, nonce, 1) != 1 ||
	    evp_update(x, NULL, ad, adlen) != 0)
		return -1;
	if (evp_update(x, c, m, mlen) != 0 ||
	    EVP_CipherFinal_ex(x, c + mlen, &l) != 1 ||
	    EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_GET_TAG, CF_KS_TAG_BYTES,
	    c + mlen) != 1)
		return -2;
	return 0;
}

/*
 * 0, -EBADMSG (the tag did not verify, or OpenSSL failed after writing
 * into m), or -1 if it failed before writing anything.
 */
static int
evp_open(EVP_CIPHER_CTX *x, unsigned char *m, const unsigned char *c,
    size_t mlen, const unsigned char *ad, size_t adlen,
    const unsigned char *nonce)
{
	unsigned char tag[CF_KS_TAG_BYTES];
	int l;

	memcpy(tag, c + mlen, sizeof(tag));	/* m may overlap c */
	if (EVP_CipherInit_ex(x, NULL, NULL, NULL, nonce, 0) != 1 ||
	    evp_update(x, NULL, ad, adlen) != 0 ||
	    EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_SET_TAG, CF_KS_TAG_BYTES,
	    tag) != 1)
		return -1;
	if (evp_update(x, m, c, mlen) != 0 ||
	    EVP_CipherFinal_ex(x, m + mlen, &l) != 1)
		return -EBADMSG;
	return 0;
}

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
	return ks_aead_new(out, c, key, 1);
}

int
ks_aead_new(struct cf_ks_aead **out, enum cf_ks_cipher c,
    const unsigned char key[CF_KS_KEY_BYTES], int use_evp)
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
	rc = cf_secbuf_new(&a->key, CF_KS_KEY_BYTES);
	if (rc < 0)
		goto out;
	memcpy(cf_secbuf_data(a->key), key, CF_KS_KEY_BYTES);
	cf_secbuf_readonly(a->key);
	rc = -ENOMEM;
	if (c == CF_KS_CIPHER_AES256GCM) {
		(void)pthread_once(&evp_once, evp_fetch);
		if (use_evp && evp_gcm != NULL) {
			a->pool = calloc(1, sizeof(*a->pool));
			if (a->pool == NULL)
				goto out;
			if (pthread_mutex_init(&a->pool->mu, NULL) != 0) {
				free(a->pool);
				a->pool = NULL;
				goto out;
			}
		} else {
			/* The state size is a multiple of 16: aligned. */
			a->aes = sodium_malloc(sizeof(*a->aes));
			if (a->aes == NULL)
				goto out;
			crypto_aead_aes256gcm_beforenm(a->aes, key);
			sodium_mprotect_readonly(a->aes);
		}
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
	size_t i;

	if (!a->writable)
		cf_secbuf_readwrite(a->key);
	memcpy(cf_secbuf_data(a->key), key, CF_KS_KEY_BYTES);
	if (a->aes != NULL) {
		if (!a->writable)
			sodium_mprotect_readwrite(a->aes);
		crypto_aead_aes256gcm_beforenm(a->aes, key);
	}
	if (a->pool != NULL) {
		/*
		 * The pooled contexts take the new key, or go (evp_take keys
		 * new ones from a->key, already the new key).
		 */
		for (i = 0; i < a->pool->n; i++) {
			if (EVP_CipherInit_ex(a->pool->ctx[i], NULL, NULL, key,
			    NULL, 1) != 1) {
				EVP_CIPHER_CTX_free(a->pool->ctx[i]);
				a->pool->ctx[i--] = a->pool->ctx[--a->pool->n];
			}
		}
	}
	a->writable = 1;
}

void
cf_ks_aead_free(struct cf_ks_aead *a)
{
	if (a == NULL)
		return;
	evp_pool_free(a->pool);
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
	EVP_CIPHER_CTX *x;
	int r;

	if (a->pool != NULL) {
		x = evp_take(a);
		if (x == NULL)
			return -ENOMEM;
		r = evp_seal(x, c, m, mlen, ad, adlen, nonce);
		evp_give(a, x);
		/* -1 and -2: there is no other library to try. */
		return r == 0 ? 0 : -EINVAL;
	}
	if (a->aes != NULL) {
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
	EVP_CIPHER_CTX *x;
	int r = -1;

	if (clen < CF_KS_TAG_BYTES)
		return -EINVAL;
	if (a->pool != NULL) {
		x = evp_take(a);
		if (x == NULL)
			return -ENOMEM;
		r = evp_open(x, m, c, clen - CF_KS_TAG_BYTES, ad, adlen, nonce);
		evp_give(a, x);
		if (r == 0)
			return 0;
		if (r == -EBADMSG) {
			sodium_memzero(m, clen - CF_KS_TAG_BYTES);
			return -EBADMSG;
		}
		return -EINVAL;	/* nothing written into m */
	}
	if (a->aes != NULL)
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
