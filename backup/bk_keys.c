/*
 * bk_keys.c - the tenant's backup keys, blob and storage ids, and the
 * FastCDC chunker over the tenant's gear table
 * (docs/format/repository.md: Keys, Content-defined chunking).
 *
 * Every key is derived with the keystore's KDF helpers and kept in
 * cf_secbufs; nothing here implements a primitive.  The gear table is
 * secret too (it reveals chunk boundaries), so it lives in locked memory.
 *
 * Also the write-only side (docs/write-only.md): the backup key pair
 * (crypto_box, sealed boxes), the index key X, the object keys of sealed
 * packs learnt from their sealed keys, and the writer credential
 * (docs/format/writer-key.md).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/params.h>
#include <sodium.h>

#include "bk_int.h"

/*
 * SHA-256 by OpenSSL's EVP digest: SHA-NI or AVX2 code, 1.5-1.6 GB/s on
 * the machines measured, against libsodium's portable 0.38 GB/s (and
 * BLAKE2b's 0.6); libsodium computes it where OpenSSL cannot.
 */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void
sha256_fetch(void)
{
	sha256_md = EVP_MD_fetch(NULL, "SHA2-256", NULL);
}

void
cf_bk_sha256(const void *buf, size_t len, unsigned char out[32])
{
	unsigned int n = 0;

	(void)pthread_once(&sha256_once, sha256_fetch);
	if (sha256_md != NULL &&
	    EVP_Digest(buf, len, out, &n, sha256_md, NULL) == 1 && n == 32)
		return;
	crypto_hash_sha256(out, buf, len);
}

int
cf_bk_named_sha256(const unsigned char *buf, size_t len)
{
	return len >= CF_BK_HEADER_BYTES && memcmp(buf, BK_MAGIC, 8) == 0 &&
	    (buf[11] & BK_SID_SHA256) != 0;
}

/*
 * [BK-LAY-3] An object whose header has bit 7 of byte 11 set is named by
 * SHA-256 of its bytes (every object written since 2026-11-25); any
 * other bytes by BLAKE2b-256, as before.  The bit is bound by every
 * AEAD of the object, so flipping it fails both the name and the seals.
 */
void
cf_bk_storage_id(const unsigned char *buf, size_t len,
    unsigned char id[CF_BK_ID_BYTES])
{
	if (cf_bk_named_sha256(buf, len))
		cf_bk_sha256(buf, len, id);
	else
		crypto_generichash(id, CF_BK_ID_BYTES, buf, len, NULL, 0);
}

void
cf_bk_id_hex(const unsigned char id[CF_BK_ID_BYTES], char out[65])
{
	sodium_bin2hex(out, 65, id, CF_BK_ID_BYTES);
}

int
bk_name_valid(const char *s)
{
	size_t i;

	for (i = 0; i < 64; i++) {
		if (!((s[i] >= '0' && s[i] <= '9') ||
		    (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	}
	return s[64] == '\0';
}

int
cf_bk_id_parse(const char *hex, unsigned char id[CF_BK_ID_BYTES])
{
	size_t n = 0;

	memset(id, 0, CF_BK_ID_BYTES);
	if (hex == NULL || !bk_name_valid(hex))
		return -EINVAL;
	if (sodium_hex2bin(id, CF_BK_ID_BYTES, hex, 64, NULL, &n, NULL) != 0 ||
	    n != CF_BK_ID_BYTES)
		return -EINVAL;
	return 0;
}

/* ---- keys ------------------------------------------------------------------ */

/* ID(parent, label, "") into a new secbuf. */
static int
derive_label(struct cf_secbuf **out, const struct cf_secbuf *parent,
    const char *label)
{
	struct cf_secbuf *sb = NULL;
	int rc;

	*out = NULL;
	rc = cf_secbuf_new(&sb, CF_KS_KEY_BYTES);
	if (rc < 0)
		return rc;
	rc = cf_ks_derive_id(cf_secbuf_data(sb), parent, label, NULL, 0);
	if (rc < 0) {
		cf_secbuf_free(sb);
		return rc;
	}
	*out = sb;
	return 0;
}

/* ---- learnt object keys of sealed packs ------------------------------------ */

#define TAB_ENT (BK_KID_BYTES + CF_KS_KEY_BYTES)

struct bk_keytab {
	pthread_mutex_t mu;
	struct cf_secbuf *v;		/* cap entries: key id || key */
	size_t cap, n;
};

static int
tab_new(struct bk_keytab **out)
{
	struct bk_keytab *t = calloc(1, sizeof(*t));

	*out = NULL;
	if (t == NULL)
		return -ENOMEM;
	pthread_mutex_init(&t->mu, NULL);
	*out = t;
	return 0;
}

static void
tab_free(struct bk_keytab *t)
{
	if (t == NULL)
		return;
	cf_secbuf_free(t->v);
	pthread_mutex_destroy(&t->mu);
	free(t);
}

/* The slot of kid: its entry, or the empty one to fill.  With mu. */
static unsigned char *
tab_slot(struct bk_keytab *t, const unsigned char *kid)
{
	static const unsigned char zero[BK_KID_BYTES];
	unsigned char *v = cf_secbuf_data(t->v), *e;
	size_t i = (size_t)bk_rd64(kid) & (t->cap - 1);

	for (;;) {
		e = v + i * TAB_ENT;
		if (memcmp(e, kid, BK_KID_BYTES) == 0 ||
		    memcmp(e, zero, BK_KID_BYTES) == 0)
			return e;
		i = (i + 1) & (t->cap - 1);
	}
}

/* Copies the key of kid into key; 0, or -ENOKEY. */
static int
tab_get(struct bk_keytab *t, const unsigned char *kid,
    unsigned char key[CF_KS_KEY_BYTES])
{
	unsigned char *e;
	int rc = -ENOKEY;

	pthread_mutex_lock(&t->mu);
	if (t->cap > 0) {
		e = tab_slot(t, kid);
		if (memcmp(e, kid, BK_KID_BYTES) == 0) {
			memcpy(key, e + BK_KID_BYTES, CF_KS_KEY_BYTES);
			rc = 0;
		}
	}
	pthread_mutex_unlock(&t->mu);
	return rc;
}

static int
tab_put(struct bk_keytab *t, const unsigned char *kid,
    const unsigned char key[CF_KS_KEY_BYTES])
{
	static const unsigned char zero[BK_KID_BYTES];
	struct cf_secbuf *old, *nv = NULL;
	unsigned char *e;
	size_t oldcap, i;
	int rc = 0;

	if (memcmp(kid, zero, BK_KID_BYTES) == 0)
		return -EBADMSG;	/* the empty marker: never a hash */
	pthread_mutex_lock(&t->mu);
	if ((t->n + 1) * 2 > t->cap) {
		old = t->v;
		oldcap = t->cap;
		rc = cf_secbuf_new(&nv, (oldcap ? oldcap * 2 : 64) * TAB_ENT);
		if (rc < 0)
			goto out;
		memset(cf_secbuf_data(nv), 0, cf_secbuf_len(nv));
		t->v = nv;
		t->cap = oldcap ? oldcap * 2 : 64;
		for (i = 0; i < oldcap; i++) {
			const unsigned char *oe = cf_secbuf_cdata(old) +
			    i * TAB_ENT;

			if (memcmp(oe, zero, BK_KID_BYTES) != 0)
				memcpy(tab_slot(t, oe), oe, TAB_ENT);
		}
		cf_secbuf_free(old);
	}
	e = tab_slot(t, kid);
	if (memcmp(e, kid, BK_KID_BYTES) != 0) {
		memcpy(e, kid, BK_KID_BYTES);
		memcpy(e + BK_KID_BYTES, key, CF_KS_KEY_BYTES);
		t->n++;
	}
out:
	pthread_mutex_unlock(&t->mu);
	return rc;
}

/* The key id of a sealed key: BLAKE2b-128 of the box. */
static void
box_kid(const unsigned char *box, unsigned char kid[BK_KID_BYTES])
{
	crypto_generichash(kid, BK_KID_BYTES, box, BK_BOX_BYTES, NULL, 0);
}

int
bk_keys_unseal(const struct cf_bk_keys *k, const unsigned char *hdr,
    const unsigned char *box, unsigned char key[CF_KS_KEY_BYTES])
{
	unsigned char kid[BK_KID_BYTES];

	const struct cf_secbuf *sk = k->boxsk;
	const unsigned char *pk = k->boxpk;
	uint32_t v = bk_rd32(hdr + 12);
	size_t i;

	box_kid(box, kid);
	if (sodium_memcmp(kid, hdr + 16, BK_KID_BYTES) != 0)
		return -EBADMSG;
	/* The box pair of the header's version ([BK-WO-2]). */
	if (v != k->version) {
		sk = NULL;
		for (i = 0; i < k->nmore; i++)
			if (k->more[i].version == v) {
				sk = k->more[i].boxsk;
				pk = k->more[i].boxpk;
			}
	}
	if (sk == NULL)
		return -ENOKEY;
	if (crypto_box_seal_open(key, box, BK_BOX_BYTES, pk,
	    cf_secbuf_cdata(sk)) != 0) {
		sodium_memzero(key, CF_KS_KEY_BYTES);
		return -EBADMSG;
	}
	return 0;
}

int
bk_keys_learn(const struct cf_bk_keys *k, const unsigned char *hdr,
    const unsigned char *box)
{
	unsigned char key[CF_KS_KEY_BYTES];
	int rc;

	if (k->tab == NULL)
		return -ENOKEY;
	if (tab_get(k->tab, hdr + 16, key) == 0) {
		sodium_memzero(key, sizeof(key));
		/* Known key id: only this box hashes to it. */
		box_kid(box, key);
		return sodium_memcmp(key, hdr + 16, BK_KID_BYTES) == 0 ? 0 :
		    -EBADMSG;
	}
	rc = bk_keys_unseal(k, hdr, box, key);
	if (rc == 0)
		rc = tab_put(k->tab, hdr + 16, key);
	sodium_memzero(key, sizeof(key));
	return rc;
}

/* The object key of a sealed header, learnt before; -ENOKEY if not. */
int
bk_keys_learnt(const struct cf_bk_keys *k, const unsigned char *hdr,
    unsigned char key[CF_KS_KEY_BYTES])
{
	if (k->tab == NULL)
		return -ENOKEY;
	return tab_get(k->tab, hdr + 16, key);
}

int
cf_bk_keys_writeonly(const struct cf_bk_keys *k)
{
	return k->writer;
}

/* A backup key pair from D: crypto_box_seed_keypair(ID(D, "bk-box")). */
static int
derive_box(const struct cf_secbuf *data, struct cf_secbuf **skp,
    unsigned char pk[32])
{
	unsigned char seed[CF_KS_KEY_BYTES];
	int rc;

	*skp = NULL;
	rc = cf_ks_derive_id(seed, data, "bk-box", NULL, 0);
	if (rc < 0)
		return rc;
	rc = cf_secbuf_new(skp, crypto_box_SECRETKEYBYTES);
	if (rc == 0 && crypto_box_seed_keypair(pk, cf_secbuf_data(*skp),
	    seed) != 0)
		rc = -EINVAL;
	sodium_memzero(seed, sizeof(seed));
	if (rc == 0)
		cf_secbuf_readonly(*skp);
	return rc;
}

/* The gear table from G into k->gear. */
static int
gear_make(struct cf_bk_keys *k)
{
	static const unsigned char zero_nonce[
	    crypto_stream_chacha20_ietf_NONCEBYTES];
	unsigned char *g;
	uint64_t *gear;
	size_t i;
	int rc;

	rc = cf_secbuf_new(&k->gear, 256 * sizeof(uint64_t));
	if (rc < 0)
		return rc;
	/* The keystream is the table's bytes; entries are read LE. */
	g = cf_secbuf_data(k->gear);
	crypto_stream_chacha20_ietf(g, 2048, zero_nonce,
	    cf_secbuf_cdata(k->gkey));
	gear = (uint64_t *)(void *)g;
	for (i = 0; i < 256; i++)
		gear[i] = bk_rd64(g + 8 * i);
	cf_secbuf_readonly(k->gear);
	return 0;
}

/*
 * I, G, X and the gear table from the chunk key C (derived from root key
 * version from); k keeps a copy of C for a config re-key ([BK-CFG-2]).
 */
static int
chunk_keys(struct cf_bk_keys *k, const struct cf_secbuf *chunk,
    uint32_t from)
{
	struct cf_secbuf *c = NULL;
	int rc;

	rc = cf_secbuf_new(&c, CF_KS_KEY_BYTES);
	if (rc < 0)
		return rc;
	memcpy(cf_secbuf_data(c), cf_secbuf_cdata(chunk), CF_KS_KEY_BYTES);
	cf_secbuf_readonly(c);
	cf_secbuf_free(k->ckey);
	k->ckey = c;
	k->cversion = from;
	rc = derive_label(&k->idkey, chunk, "bk-chunk-id");
	if (rc < 0)
		return rc;
	rc = derive_label(&k->gkey, chunk, "bk-gear");
	if (rc < 0)
		return rc;
	rc = derive_label(&k->xkey, chunk, "bk-index-key");
	if (rc < 0)
		return rc;
	cf_secbuf_readonly(k->idkey);
	cf_secbuf_readonly(k->gkey);
	cf_secbuf_readonly(k->xkey);
	return gear_make(k);
}

int
cf_bk_keys_new(struct cf_bk_keys **out, const struct cf_secbuf *root,
    uint32_t key_version, enum cf_ks_cipher cipher)
{
	struct cf_bk_keys *k = NULL;
	struct cf_secbuf *chunk = NULL;
	int rc = -EINVAL;

	*out = NULL;
	if (key_version == 0 || cf_ks_cipher_name(cipher) == NULL ||
	    cipher == CF_KS_CIPHER_NONE)
		return -EINVAL;
	if (!cf_ks_cipher_available(cipher))
		return -ENOTSUP;
	k = calloc(1, sizeof(*k));
	if (k == NULL)
		return -ENOMEM;
	k->cipher = cipher;
	k->version = key_version;
	k->wversion = key_version;
	rc = cf_ks_derive(&k->data, root, CF_KS_PURPOSE_BK_DATA);
	if (rc < 0)
		goto out;
	rc = cf_ks_derive(&chunk, root, CF_KS_PURPOSE_BK_CHUNKID);
	if (rc < 0)
		goto out;
	rc = chunk_keys(k, chunk, key_version);
	if (rc < 0)
		goto out;
	rc = derive_box(k->data, &k->boxsk, k->boxpk);
	if (rc < 0)
		goto out;
	rc = tab_new(&k->tab);
	if (rc < 0)
		goto out;
	cf_secbuf_readonly(k->data);
	*out = k;
	k = NULL;
	rc = 0;
out:
	cf_secbuf_free(chunk);
	cf_bk_keys_free(k);
	return rc;
}

int
bk_keys_set_chunk(struct cf_bk_keys *k, const struct cf_secbuf *c,
    uint32_t from)
{
	struct cf_secbuf *copy = NULL;
	int rc;

	if (k->writer || from == 0 || cf_secbuf_len(c) != CF_KS_KEY_BYTES)
		return -EINVAL;
	rc = cf_secbuf_new(&copy, CF_KS_KEY_BYTES);
	if (rc < 0)
		return rc;
	memcpy(cf_secbuf_data(copy), cf_secbuf_cdata(c), CF_KS_KEY_BYTES);
	cf_secbuf_free(k->idkey);
	cf_secbuf_free(k->gkey);
	cf_secbuf_free(k->xkey);
	cf_secbuf_free(k->gear);
	k->idkey = k->gkey = k->xkey = k->gear = NULL;
	rc = chunk_keys(k, copy, from);
	cf_secbuf_free(copy);
	return rc;
}

const struct cf_secbuf *
bk_keys_chunk(const struct cf_bk_keys *k, uint32_t *from)
{
	*from = k->cversion;
	return k->ckey;
}

int
cf_bk_keys_add(struct cf_bk_keys *k, const struct cf_secbuf *root,
    uint32_t key_version)
{
	struct cf_secbuf *d = NULL;
	int rc;

	if (k->writer || key_version == 0)
		return -EINVAL;
	if (bk_keys_data(k, key_version) != NULL)
		return -EEXIST;
	if (k->nmore == CF_BK_KEYS_MAX)
		return -E2BIG;
	rc = cf_ks_derive(&d, root, CF_KS_PURPOSE_BK_DATA);
	if (rc < 0)
		return rc;
	cf_secbuf_readonly(d);
	/* Sealed objects under this version open with its box pair. */
	rc = derive_box(d, &k->more[k->nmore].boxsk,
	    k->more[k->nmore].boxpk);
	if (rc < 0) {
		cf_secbuf_free(d);
		return rc;
	}
	k->more[k->nmore].version = key_version;
	k->more[k->nmore].data = d;
	k->nmore++;
	if (key_version > k->wversion)
		k->wversion = key_version;
	return 0;
}

const struct cf_secbuf *
bk_keys_data(const struct cf_bk_keys *k, uint32_t version)
{
	size_t i;

	if (version == k->version)
		return k->data;
	for (i = 0; i < k->nmore; i++)
		if (k->more[i].version == version)
			return k->more[i].data;
	return NULL;
}

uint32_t
cf_bk_keys_write_version(const struct cf_bk_keys *k)
{
	return k->wversion;
}

void
cf_bk_keys_free(struct cf_bk_keys *k)
{
	size_t i;

	if (k == NULL)
		return;
	for (i = 0; i < k->nmore; i++) {
		cf_secbuf_free(k->more[i].data);
		cf_secbuf_free(k->more[i].boxsk);
	}
	cf_secbuf_free(k->data);
	cf_secbuf_free(k->ckey);
	cf_secbuf_free(k->idkey);
	cf_secbuf_free(k->gear);
	cf_secbuf_free(k->gkey);
	cf_secbuf_free(k->xkey);
	cf_secbuf_free(k->boxsk);
	tab_free(k->tab);
	free(k);
}

enum cf_ks_cipher
cf_bk_keys_cipher(const struct cf_bk_keys *k)
{
	return k->cipher;
}

uint32_t
cf_bk_keys_version(const struct cf_bk_keys *k)
{
	return k->version;
}

/*
 * Blob ids are keyed BLAKE2b-256 (docs/format/repository.md, Keys).  The
 * same function is OpenSSL's BLAKE2BMAC with a 32-byte output: the same
 * bytes (RFC 7693 keyed mode; test_bk_codec compares the two on every
 * length around the 128-byte block), at about twice libsodium's speed on
 * the machines measured (docs/crypto.md, "Which library computes what").
 * Every byte of a backup and of a restore goes through here.  Where
 * OpenSSL cannot give it (a configuration without the default provider),
 * libsodium computes it as before.
 */
static EVP_MAC *blake2_mac;
static pthread_once_t blake2_once = PTHREAD_ONCE_INIT;

static void
blake2_fetch(void)
{
	blake2_mac = EVP_MAC_fetch(NULL, "BLAKE2BMAC", NULL);
}

/*
 * The key is copied into OpenSSL's context for the length of one hash
 * and wiped when the context is freed (as libsodium's state holds it on
 * the stack); no coffer process may dump core (cf_ks_harden_process).
 */
static int
blob_id_openssl(const unsigned char *key, const void *buf, size_t len,
    unsigned char id[CF_BK_ID_BYTES])
{
	size_t size = CF_BK_ID_BYTES, out = 0;
	OSSL_PARAM params[2];
	EVP_MAC_CTX *c;
	int ok;

	if ((c = EVP_MAC_CTX_new(blake2_mac)) == NULL)
		return -1;
	params[0] = OSSL_PARAM_construct_size_t("size", &size);
	params[1] = OSSL_PARAM_construct_end();
	ok = EVP_MAC_init(c, key, CF_KS_KEY_BYTES, params) == 1 &&
	    EVP_MAC_update(c, buf, len) == 1 &&
	    EVP_MAC_final(c, id, &out, CF_BK_ID_BYTES) == 1 &&
	    out == CF_BK_ID_BYTES;
	EVP_MAC_CTX_free(c);
	return ok ? 0 : -1;
}

void
cf_bk_blob_id(const struct cf_bk_keys *k, const void *buf, size_t len,
    unsigned char id[CF_BK_ID_BYTES])
{
	const unsigned char *key = cf_secbuf_cdata(k->idkey);

	(void)pthread_once(&blake2_once, blake2_fetch);
	if (blake2_mac != NULL && blob_id_openssl(key, buf, len, id) == 0)
		return;
	crypto_generichash(id, CF_BK_ID_BYTES, buf, len, key,
	    CF_KS_KEY_BYTES);
}

/* ---- writer credential (docs/format/writer-key.md) -------------------------- */

#define WC_MAGIC "\x89" "CFWK\r\n\x1a"
#define WC_VERSION 1U
#define WC_CHECK 208U		/* offset of the checksum */

int
bk_wcred_encode(const struct cf_bk_keys *k,
    const struct cf_bk_wcred_info *in, struct cf_secbuf **out)
{
	struct cf_secbuf *sb = NULL;
	unsigned char *b;
	int rc;

	*out = NULL;
	if (k->writer || k->xkey == NULL)
		return -EINVAL;
	rc = cf_secbuf_new(&sb, CF_BK_WCRED_BYTES);
	if (rc < 0)
		return rc;
	b = cf_secbuf_data(sb);
	memset(b, 0, CF_BK_WCRED_BYTES);
	memcpy(b, WC_MAGIC, 8);
	b[8] = WC_VERSION;
	b[9] = (unsigned char)k->cipher;
	bk_le32(b + 12, k->version);
	memcpy(b + 16, in->tenant, CF_KS_ID_BYTES);
	memcpy(b + 32, in->config_id, CF_BK_ID_BYTES);
	bk_le32(b + 64, in->min);
	bk_le32(b + 68, in->avg);
	bk_le32(b + 72, in->max);
	memcpy(b + 80, k->boxpk, 32);
	memcpy(b + 112, cf_secbuf_cdata(k->idkey), CF_KS_KEY_BYTES);
	memcpy(b + 144, cf_secbuf_cdata(k->gkey), CF_KS_KEY_BYTES);
	memcpy(b + 176, cf_secbuf_cdata(k->xkey), CF_KS_KEY_BYTES);
	crypto_generichash(b + WC_CHECK, 32, b, WC_CHECK, NULL, 0);
	*out = sb;
	return 0;
}

/* A secbuf holding a copy of 32 bytes. */
static int
secbuf_copy(struct cf_secbuf **out, const unsigned char *p)
{
	int rc = cf_secbuf_new(out, CF_KS_KEY_BYTES);

	if (rc == 0) {
		memcpy(cf_secbuf_data(*out), p, CF_KS_KEY_BYTES);
		cf_secbuf_readonly(*out);
	}
	return rc;
}

int
cf_bk_wcred_parse(const unsigned char *buf, size_t len,
    struct cf_bk_wcred_info *info, struct cf_bk_keys **keys)
{
	unsigned char check[32];
	struct cf_bk_keys *k = NULL;
	int rc;

	memset(info, 0, sizeof(*info));
	if (keys != NULL)
		*keys = NULL;
	if (len != CF_BK_WCRED_BYTES || memcmp(buf, WC_MAGIC, 8) != 0 ||
	    buf[8] != WC_VERSION || buf[10] != 0 || buf[11] != 0 ||
	    bk_rd32(buf + 76) != 0)
		return -EPROTO;
	crypto_generichash(check, sizeof(check), buf, WC_CHECK, NULL, 0);
	if (sodium_memcmp(check, buf + WC_CHECK, 32) != 0)
		return -EPROTO;
	if ((buf[9] != CF_KS_CIPHER_AES256GCM &&
	    buf[9] != CF_KS_CIPHER_XCHACHA20POLY1305) || bk_rd32(buf + 12) == 0)
		return -EPROTO;
	info->cipher = (enum cf_ks_cipher)buf[9];
	info->key_version = bk_rd32(buf + 12);
	memcpy(info->tenant, buf + 16, CF_KS_ID_BYTES);
	memcpy(info->config_id, buf + 32, CF_BK_ID_BYTES);
	info->min = bk_rd32(buf + 64);
	info->avg = bk_rd32(buf + 68);
	info->max = bk_rd32(buf + 72);
	if (!bk_chunker_params_ok(info->min, info->avg, info->max)) {
		memset(info, 0, sizeof(*info));
		return -EPROTO;
	}
	if (keys == NULL)
		return 0;
	if (!cf_ks_cipher_available(info->cipher))
		return -ENOTSUP;
	k = calloc(1, sizeof(*k));
	if (k == NULL)
		return -ENOMEM;
	k->writer = 1;
	k->cipher = info->cipher;
	k->version = info->key_version;
	k->wversion = info->key_version;
	memcpy(k->boxpk, buf + 80, 32);
	rc = secbuf_copy(&k->idkey, buf + 112);
	if (rc == 0)
		rc = secbuf_copy(&k->gkey, buf + 144);
	if (rc == 0)
		rc = secbuf_copy(&k->xkey, buf + 176);
	if (rc == 0)
		rc = gear_make(k);
	if (rc < 0) {
		cf_bk_keys_free(k);
		return rc;
	}
	*keys = k;
	return 0;
}

/* ---- chunker --------------------------------------------------------------- */

struct cf_bk_chunker {
	size_t min, avg, max;
	uint64_t mask_s, mask_l;
	struct cf_secbuf *gear;
};

static int
pow2(size_t v)
{
	return v != 0 && (v & (v - 1)) == 0;
}

int
bk_chunker_params_ok(size_t min, size_t avg, size_t max)
{
	return pow2(min) && pow2(avg) && pow2(max) && min >= 64 &&
	    min <= avg && avg <= max && max <= CF_BK_CHUNK_MAX;
}

int
cf_bk_chunker_new(struct cf_bk_chunker **out, const struct cf_bk_keys *k,
    size_t min, size_t avg, size_t max)
{
	struct cf_bk_chunker *c;
	unsigned bits = 0;
	int rc;

	*out = NULL;
	if (!bk_chunker_params_ok(min, avg, max))
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	rc = cf_secbuf_new(&c->gear, 256 * sizeof(uint64_t));
	if (rc < 0) {
		free(c);
		return rc;
	}
	memcpy(cf_secbuf_data(c->gear), cf_secbuf_cdata(k->gear),
	    256 * sizeof(uint64_t));
	cf_secbuf_readonly(c->gear);
	while (((size_t)1 << bits) < avg)
		bits++;
	c->min = min;
	c->avg = avg;
	c->max = max;
	/* The top bits depend on the last 64 bytes (the widest window). */
	c->mask_s = ~(uint64_t)0 << (64 - (bits + 2));
	c->mask_l = ~(uint64_t)0 << (64 - (bits - 2));
	*out = c;
	return 0;
}

void
cf_bk_chunker_free(struct cf_bk_chunker *c)
{
	if (c == NULL)
		return;
	cf_secbuf_free(c->gear);
	free(c);
}

size_t
cf_bk_chunker_max(const struct cf_bk_chunker *c)
{
	return c->max;
}

size_t
cf_bk_chunker_cut(const struct cf_bk_chunker *c, const unsigned char *buf,
    size_t n)
{
	const uint64_t *gear = (const uint64_t *)(const void *)
	    cf_secbuf_cdata(c->gear);
	uint64_t fp = 0;
	size_t i, normal;

	if (n <= c->min)
		return n;
	if (n > c->max)
		n = c->max;
	normal = c->avg < n ? c->avg : n;
	for (i = c->min; i < normal; i++) {
		fp = (fp << 1) + gear[buf[i]];
		if ((fp & c->mask_s) == 0)
			return i + 1;
	}
	for (; i < n; i++) {
		fp = (fp << 1) + gear[buf[i]];
		if ((fp & c->mask_l) == 0)
			return i + 1;
	}
	return n;
}
