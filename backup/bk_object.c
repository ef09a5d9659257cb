/*
 * bk_object.c - the 32-byte object header every repository object starts
 * with, object keys, and sealed objects (index, snapshot, lock, config):
 * header || nonce || AEAD(object key, nonce, header, body)
 * (docs/format/repository.md: Object header, Sealed objects).
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
	hdr[11] = 0;
	bk_le32(hdr + 12, k->version);
	if (kid != NULL)
		memcpy(hdr + 16, kid, BK_KID_BYTES);
	else
		randombytes_buf(hdr + 16, BK_KID_BYTES);
}

int
bk_header_check(const unsigned char *hdr, enum cf_bk_kind kind,
    const struct cf_bk_keys *k)
{
	/* Magics are public: memcmp is fine (checksrc bans it in keystore/). */
	if (memcmp(hdr, BK_MAGIC, 8) != 0)
		return -EPROTO;
	if (hdr[8] != CF_BK_VERSION || hdr[9] != (unsigned char)kind ||
	    hdr[11] != 0)
		return -EPROTO;
	if (hdr[10] != CF_KS_CIPHER_AES256GCM &&
	    hdr[10] != CF_KS_CIPHER_XCHACHA20POLY1305)
		return -EPROTO;
	if (bk_rd32(hdr + 12) == 0)
		return -EPROTO;
	if (k != NULL && bk_rd32(hdr + 12) != k->version)
		return -ENOKEY;
	return 0;
}

size_t
bk_header_nl(const unsigned char *hdr)
{
	return cf_ks_cipher_nonce_bytes((enum cf_ks_cipher)hdr[10]);
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
	rc = cf_ks_derive_id(key, k->data, "bk-object", hdr + 16,
	    BK_KID_BYTES);
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

int
bk_object_seal_ex(const struct cf_bk_keys *k, enum cf_bk_kind kind,
    const unsigned char *plain, size_t len, const unsigned char *kid,
    const unsigned char *nonce, int compress, unsigned char **out,
    size_t *outlen)
{
	struct cf_ks_aead *a = NULL;
	unsigned char *buf = NULL, *body;
	size_t nl = cf_ks_cipher_nonce_bytes(k->cipher), cap, stored = len;
	int comp = 0, rc = -ENOMEM;

	*out = NULL;
	*outlen = 0;
	if (kind == CF_BK_KIND_PACK || len > CF_BK_OBJECT_MAX)
		return -EINVAL;
	cap = CF_BK_HEADER_BYTES + nl + BK_BODY_HDR + len + BK_TAG;
	buf = malloc(cap);
	if (buf == NULL)
		goto out;
	bk_header_make(buf, kind, k, kid);
	if (nonce != NULL)
		memcpy(buf + CF_BK_HEADER_BYTES, nonce, nl);
	else
		randombytes_buf(buf + CF_BK_HEADER_BYTES, nl);
	body = buf + CF_BK_HEADER_BYTES + nl;
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
	if (CF_BK_HEADER_BYTES + nl + BK_BODY_HDR + stored + BK_TAG >
	    CF_BK_OBJECT_MAX) {
		rc = -EINVAL;
		goto out;
	}
	rc = bk_object_aead(k, buf, &a);
	if (rc < 0)
		goto out;
	rc = cf_ks_aead_seal(a, body, body, BK_BODY_HDR + stored, buf,
	    CF_BK_HEADER_BYTES, buf + CF_BK_HEADER_BYTES);
	if (rc < 0)
		goto out;
	*out = buf;
	*outlen = CF_BK_HEADER_BYTES + nl + BK_BODY_HDR + stored + BK_TAG;
	buf = NULL;
	rc = 0;
out:
	cf_ks_aead_free(a);
	free(buf);
	return rc;
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
	size_t nl, blen, stored;
	uint32_t ulen;
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
	if (len < CF_BK_HEADER_BYTES + nl + BK_BODY_HDR + BK_TAG)
		return -EPROTO;
	blen = len - CF_BK_HEADER_BYTES - nl - BK_TAG;
	body = malloc(blen);
	if (body == NULL)
		return -ENOMEM;
	rc = bk_object_aead(k, obj, &a);
	if (rc < 0)
		goto out;
	rc = cf_ks_aead_open(a, body, obj + CF_BK_HEADER_BYTES + nl,
	    blen + BK_TAG, obj, CF_BK_HEADER_BYTES, obj + CF_BK_HEADER_BYTES);
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
	free(body);
	free(res);
	return rc;
}
