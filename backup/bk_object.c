/*
 * bk_object.c - the 32-byte object header every repository object starts
 * with, object keys, and sealed objects (index, snapshot, lock, config):
 * header || [sealed key] || nonce || AEAD(object key, nonce, header, body)
 * (docs/format/repository.md: Object header, Sealed objects, Write-only
 * objects).
 *
 * It does not know what the plaintexts mean; bk_index.c, bk_tree.c and
 * bk_repo.c decode them.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <zstd.h>

#include "bk_int.h"

void
bk_header_make(unsigned char hdr[CF_BK_HEADER_BYTES], enum cf_bk_kind kind,
    const struct cf_bk_keys *k, const unsigned char *kid)
{
	memcpy(hdr, BK_MAGIC, 8);
	hdr[8] = CF_BK_VERSION;
	hdr[9] = (unsigned char)kind;
	hdr[10] = (unsigned char)k->cipher;
	/*
	 * New objects are named by SHA-256 ([BK-LAY-3]); sid_blake2 writes
	 * the objects of before (the vectors of version 1).  Locks keep
	 * BLAKE2b names, so that an older coffer still sees and honours
	 * them (its prune must not run beside this one's backup).
	 */
	hdr[11] = k->sid_blake2 || kind == CF_BK_KIND_LOCK ? 0 :
	    BK_SID_SHA256;
	/* Full-key objects: the newest version held (docs/kms.md); the
	 * config names the version of I and G. */
	bk_le32(hdr + 12, kind == CF_BK_KIND_CONFIG ? k->version :
	    k->wversion);
	if (kid != NULL)
		memcpy(hdr + 16, kid, BK_KID_BYTES);
	else
		randombytes_buf(hdr + 16, BK_KID_BYTES);
}

void
bk_header_make_x(unsigned char hdr[CF_BK_HEADER_BYTES], enum cf_bk_kind kind,
    const struct cf_bk_keys *k, const unsigned char *kid)
{
	bk_header_make(hdr, kind, k, kid);
	hdr[8] = BK_VERSION_WO;
	hdr[11] |= BK_KEYING_INDEX;
	bk_le32(hdr + 12, k->version);	/* X is the config version's */
}

int
bk_header_make_sealed(unsigned char *hdr, enum cf_bk_kind kind,
    const struct cf_bk_keys *k, unsigned char key[CF_KS_KEY_BYTES])
{
	unsigned char *box = hdr + CF_BK_HEADER_BYTES;

	randombytes_buf(key, CF_KS_KEY_BYTES);
	if (crypto_box_seal(box, key, CF_KS_KEY_BYTES, k->boxpk) != 0) {
		sodium_memzero(key, CF_KS_KEY_BYTES);
		return -EINVAL;
	}
	bk_header_make(hdr, kind, k, NULL);
	hdr[8] = BK_VERSION_WO;
	hdr[11] |= BK_KEYING_SEALED;
	bk_le32(hdr + 12, k->version);	/* the box key pair's version */
	/* The key id commits to the sealed key: BLAKE2b-128 of it. */
	crypto_generichash(hdr + 16, BK_KID_BYTES, box, BK_BOX_BYTES, NULL, 0);
	return 0;
}

int
bk_header_check(const unsigned char *hdr, enum cf_bk_kind kind,
    const struct cf_bk_keys *k)
{
	/* Magics are public: memcmp is fine (checksrc bans it in keystore/). */
	if (memcmp(hdr, BK_MAGIC, 8) != 0)
		return -EPROTO;
	if (hdr[9] != (unsigned char)kind)
		return -EPROTO;
	if (hdr[8] == CF_BK_VERSION) {
		if (bk_keying(hdr) != 0)
			return -EPROTO;
	} else if (hdr[8] == BK_VERSION_WO) {
		/* [BK-WO-1] packs and snapshots sealed, the rest X. */
		if (kind == CF_BK_KIND_PACK || kind == CF_BK_KIND_SNAPSHOT) {
			if (bk_keying(hdr) != BK_KEYING_SEALED)
				return -EPROTO;
		} else if (kind == CF_BK_KIND_INDEX || kind == CF_BK_KIND_LOCK) {
			if (bk_keying(hdr) != BK_KEYING_INDEX)
				return -EPROTO;
		} else {
			return -EPROTO;
		}
	} else {
		return -EPROTO;
	}
	if (hdr[10] != CF_KS_CIPHER_AES256GCM &&
	    hdr[10] != CF_KS_CIPHER_XCHACHA20POLY1305)
		return -EPROTO;
	if (bk_rd32(hdr + 12) == 0)
		return -EPROTO;
	/*
	 * [BK-OBJ-5] a full-key object of a version k holds (any, since
	 * root key rotation); a sealed one (keying 1) of a version whose
	 * box pair k holds; an index-key one (keying 2) of the config's
	 * version or an older one: X is the same after a config re-key
	 * ([BK-CFG-2]), and objects written before it name the config
	 * version of their time.
	 */
	if (k != NULL && bk_rd32(hdr + 12) != k->version) {
		if (hdr[8] == BK_VERSION_WO && bk_keying(hdr) == BK_KEYING_INDEX) {
			if (bk_rd32(hdr + 12) > k->version)
				return -ENOKEY;
		} else if (k->writer ||
		    bk_keys_data(k, bk_rd32(hdr + 12)) == NULL) {
			return -ENOKEY;
		}
	}
	return 0;
}

size_t
bk_header_nl(const unsigned char *hdr)
{
	return cf_ks_cipher_nonce_bytes((enum cf_ks_cipher)hdr[10]);
}

size_t
bk_header_extra(const unsigned char *hdr)
{
	return hdr[8] == BK_VERSION_WO && bk_keying(hdr) == BK_KEYING_SEALED ?
	    BK_BOX_BYTES : 0;
}

int
bk_object_aead(const struct cf_bk_keys *k, const unsigned char *hdr,
    struct cf_ks_aead **out)
{
	unsigned char key[CF_KS_KEY_BYTES];
	enum cf_ks_cipher c = (enum cf_ks_cipher)hdr[10];
	int rc;

	*out = NULL;
	if (!cf_ks_cipher_available(c))
		return -ENOTSUP;
	if (hdr[8] == BK_VERSION_WO && bk_keying(hdr) == BK_KEYING_INDEX)
		rc = cf_ks_derive_id(key, k->xkey, "bk-object", hdr + 16,
		    BK_KID_BYTES);
	else if (hdr[8] == BK_VERSION_WO)
		rc = bk_keys_learnt(k, hdr, key);
	else if (k->data == NULL)
		rc = -ENOKEY;	/* write-only keys: no D */
	else if (bk_keys_data(k, bk_rd32(hdr + 12)) == NULL)
		rc = -ENOKEY;	/* a root key version k does not hold */
	else
		rc = cf_ks_derive_id(key, bk_keys_data(k, bk_rd32(hdr + 12)),
		    "bk-object", hdr + 16, BK_KID_BYTES);
	if (rc == 0)
		rc = cf_ks_aead_new(out, c, key);
	sodium_memzero(key, sizeof(key));
	return rc;
}

int
bk_unzstd(const unsigned char *c, size_t clen, unsigned char *out,
    size_t ulen)
{
	unsigned long long fcs;
	size_t r;

	fcs = ZSTD_getFrameContentSize(c, clen);
	if (fcs == ZSTD_CONTENTSIZE_ERROR || fcs == ZSTD_CONTENTSIZE_UNKNOWN ||
	    fcs != ulen)
		return -EPROTO;
	/* Exactly one frame: no trailing frames or bytes. */
	r = ZSTD_findFrameCompressedSize(c, clen);
	if (ZSTD_isError(r) || r != clen)
		return -EPROTO;
	r = ZSTD_decompress(out, ulen, c, clen);
	if (ZSTD_isError(r) || r != ulen)
		return -EPROTO;
	return 0;
}

/* How an object is keyed when sealed. */
enum seal_mode {
	SEAL_V1 = 1,		/* version 1: object key from D */
	SEAL_BOX,		/* version 2: random key sealed to the pair */
	SEAL_X,			/* version 2: object key from X */
};

/* ver: the header's key_version for SEAL_V1 (0: bk_header_make's). */
static int
seal_mode(const struct cf_bk_keys *k, enum cf_bk_kind kind,
    enum seal_mode mode, uint32_t ver, const unsigned char *plain,
    size_t len, const unsigned char *kid, const unsigned char *nonce,
    int compress, unsigned char **out, size_t *outlen)
{
	struct cf_ks_aead *a = NULL;
	unsigned char *buf = NULL, *body, key[CF_KS_KEY_BYTES];
	size_t nl = cf_ks_cipher_nonce_bytes(k->cipher), cap, stored = len;
	size_t extra = mode == SEAL_BOX ? BK_BOX_BYTES : 0, pre;
	int comp = 0, rc = -ENOMEM;

	*out = NULL;
	*outlen = 0;
	if (kind == CF_BK_KIND_PACK || len > CF_BK_OBJECT_MAX)
		return -EINVAL;
	if ((mode == SEAL_V1 && k->data == NULL) ||
	    (mode == SEAL_BOX && kid != NULL))
		return -EINVAL;
	pre = CF_BK_HEADER_BYTES + extra;
	cap = pre + nl + BK_BODY_HDR + len + BK_TAG;
	buf = malloc(cap);
	if (buf == NULL)
		goto out;
	if (mode == SEAL_BOX) {
		rc = bk_header_make_sealed(buf, kind, k, key);
		if (rc == 0)
			rc = cf_ks_aead_new(&a, k->cipher, key);
		sodium_memzero(key, sizeof(key));
		if (rc < 0)
			goto out;
	} else if (mode == SEAL_X) {
		bk_header_make_x(buf, kind, k, kid);
	} else {
		bk_header_make(buf, kind, k, kid);
		if (ver != 0)
			bk_le32(buf + 12, ver);
	}
	if (nonce != NULL)
		memcpy(buf + pre, nonce, nl);
	else
		randombytes_buf(buf + pre, nl);
	body = buf + pre + nl;
	if (compress && len > 1) {
		/* Only a strictly shorter frame is kept ([BK-SOB-2]). */
		size_t r = ZSTD_compress(body + BK_BODY_HDR, len - 1, plain,
		    len, BK_ZSTD_LEVEL);

		if (!ZSTD_isError(r)) {
			comp = 1;
			stored = r;
		}
	}
	if (!comp && len > 0)
		memcpy(body + BK_BODY_HDR, plain, len);
	body[0] = (unsigned char)comp;
	body[1] = body[2] = body[3] = 0;
	bk_le32(body + 4, (uint32_t)len);
	if (pre + nl + BK_BODY_HDR + stored + BK_TAG > CF_BK_OBJECT_MAX) {
		rc = -EINVAL;
		goto out;
	}
	if (a == NULL) {
		rc = bk_object_aead(k, buf, &a);
		if (rc < 0)
			goto out;
	}
	rc = cf_ks_aead_seal(a, body, body, BK_BODY_HDR + stored, buf,
	    CF_BK_HEADER_BYTES, buf + pre);
	if (rc < 0)
		goto out;
	*out = buf;
	*outlen = pre + nl + BK_BODY_HDR + stored + BK_TAG;
	buf = NULL;
	rc = 0;
out:
	cf_ks_aead_free(a);
	free(buf);
	return rc;
}

int
bk_object_seal_ex(const struct cf_bk_keys *k, enum cf_bk_kind kind,
    const unsigned char *plain, size_t len, const unsigned char *kid,
    const unsigned char *nonce, int compress, unsigned char **out,
    size_t *outlen)
{
	enum seal_mode m = SEAL_V1;

	if (k->writer)
		m = kind == CF_BK_KIND_INDEX || kind == CF_BK_KIND_LOCK ?
		    SEAL_X : SEAL_BOX;
	return seal_mode(k, kind, m, 0, plain, len, kid, nonce, compress,
	    out, outlen);
}

int
bk_object_seal_x(const struct cf_bk_keys *k, enum cf_bk_kind kind,
    const unsigned char *plain, size_t len, const unsigned char *kid,
    const unsigned char *nonce, int compress, unsigned char **out,
    size_t *outlen)
{
	if (kind != CF_BK_KIND_INDEX && kind != CF_BK_KIND_LOCK)
		return -EINVAL;
	return seal_mode(k, kind, SEAL_X, 0, plain, len, kid, nonce,
	    compress, out, outlen);
}

int
bk_config_seal(const struct cf_bk_keys *k, uint32_t version,
    const unsigned char *plain, size_t len, const unsigned char *kid,
    const unsigned char *nonce, unsigned char **out, size_t *outlen)
{
	*out = NULL;
	*outlen = 0;
	if (k->writer || version == 0 || bk_keys_data(k, version) == NULL)
		return -EINVAL;
	return seal_mode(k, CF_BK_KIND_CONFIG, SEAL_V1, version, plain, len,
	    kid, nonce, 1, out, outlen);
}

int
cf_bk_object_seal(const struct cf_bk_keys *k, enum cf_bk_kind kind,
    const unsigned char *plain, size_t len, unsigned char **out,
    size_t *outlen)
{
	return bk_object_seal_ex(k, kind, plain, len, NULL, NULL, 1, out,
	    outlen);
}

int
cf_bk_object_open(const struct cf_bk_keys *k, enum cf_bk_kind kind,
    const unsigned char *obj, size_t len, unsigned char **plain,
    size_t *plen)
{
	struct cf_ks_aead *a = NULL;
	unsigned char *body = NULL, *res = NULL;
	size_t nl, blen, stored, pre;
	uint32_t ulen = 0;
	int rc;

	*plain = NULL;
	*plen = 0;
	if (kind == CF_BK_KIND_PACK || len < CF_BK_HEADER_BYTES ||
	    len > CF_BK_OBJECT_MAX)
		return -EPROTO;
	rc = bk_header_check(obj, kind, k);
	if (rc < 0)
		return rc;
	nl = bk_header_nl(obj);
	pre = CF_BK_HEADER_BYTES + bk_header_extra(obj);
	if (len < pre + nl + BK_BODY_HDR + BK_TAG)
		return -EPROTO;
	blen = len - pre - nl - BK_TAG;
	body = malloc(blen);
	if (body == NULL)
		return -ENOMEM;
	if (pre > CF_BK_HEADER_BYTES) {
		unsigned char key[CF_KS_KEY_BYTES];

		/* [BK-WO-2] the sealed key opens only with the secret key. */
		rc = bk_keys_unseal(k, obj, obj + CF_BK_HEADER_BYTES, key);
		if (rc == 0)
			rc = cf_ks_aead_new(&a, (enum cf_ks_cipher)obj[10], key);
		sodium_memzero(key, sizeof(key));
	} else {
		rc = bk_object_aead(k, obj, &a);
	}
	if (rc < 0)
		goto out;
	rc = cf_ks_aead_open(a, body, obj + pre + nl, blen + BK_TAG, obj,
	    CF_BK_HEADER_BYTES, obj + pre);
	if (rc < 0)
		goto out;
	rc = -EPROTO;
	ulen = bk_rd32(body + 4);
	stored = blen - BK_BODY_HDR;
	if (body[0] > 1 || body[1] != 0 || body[2] != 0 || body[3] != 0 ||
	    ulen > CF_BK_OBJECT_MAX)
		goto out;
	if (body[0] == 0 ? stored != ulen : stored >= ulen)
		goto out;
	res = malloc((size_t)ulen + 1);
	if (res == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	if (body[0] == 0) {
		memcpy(res, body + BK_BODY_HDR, ulen);
	} else {
		rc = bk_unzstd(body + BK_BODY_HDR, stored, res, ulen);
		if (rc < 0)
			goto out;
	}
	res[ulen] = '\0';
	*plain = res;
	*plen = ulen;
	res = NULL;
	rc = 0;
out:
	cf_ks_aead_free(a);
	if (kind == CF_BK_KIND_CONFIG) {
		/* A re-keyed config's plaintext holds C ([BK-CFG-2]). */
		sodium_memzero(body, blen);
		if (res != NULL)
			sodium_memzero(res, (size_t)ulen + 1);
	}
	free(body);
	free(res);
	return rc;
}
