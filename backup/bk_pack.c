/*
 * bk_pack.c - blobs and packs (docs/format/repository.md: Blobs and
 * packs): building a pack in memory (compress, seal in place, append),
 * sealing its trailer, parsing a pack and opening one blob.
 *
 * A pack is built whole in memory and handed to the store in one put:
 * that is what an object store wants, and it keeps a half-written pack
 * from ever being visible.  It does not decide which blobs go where:
 * the writer (bk_writer.c) does.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <zstd.h>

#include "bk_int.h"

void
bk_desc_encode(unsigned char out[CF_BK_DESC_BYTES], const struct cf_bk_desc *d)
{
	out[0] = d->type;
	out[1] = d->compression;
	bk_le16(out + 2, 0);
	bk_le32(out + 4, d->length);
	bk_le32(out + 8, d->ulen);
	memcpy(out + 12, d->id, CF_BK_ID_BYTES);
}

int
bk_desc_decode(struct cf_bk_desc *d, const unsigned char *in, size_t nl)
{
	size_t stored;

	memset(d, 0, sizeof(*d));
	if ((in[0] != CF_BK_BLOB_DATA && in[0] != CF_BK_BLOB_TREE) ||
	    in[1] > 1 || bk_rd16(in + 2) != 0)
		return -EPROTO;
	d->type = in[0];
	d->compression = in[1];
	d->length = bk_rd32(in + 4);
	d->ulen = bk_rd32(in + 8);
	memcpy(d->id, in + 12, CF_BK_ID_BYTES);
	if (d->length < nl + BK_TAG || d->ulen > CF_BK_BLOB_MAX)
		return -EPROTO;
	stored = d->length - nl - BK_TAG;
	if (d->compression == 0 ? stored != d->ulen : stored >= d->ulen)
		return -EPROTO;
	return 0;
}

uint64_t
bk_pack_size(const struct cf_bk_desc *d, size_t n, size_t nl)
{
	uint64_t total = CF_BK_HEADER_BYTES;
	size_t i;

	if (n == 0 || n > CF_BK_PACK_BLOBS_MAX)
		return 0;
	for (i = 0; i < n; i++)
		total += d[i].length;
	total += nl + 4 + (uint64_t)CF_BK_DESC_BYTES * n + BK_TAG + 4;
	return total > CF_BK_PACK_MAX ? 0 : total;
}

uint64_t
bk_pack_size_hdr(const unsigned char *hdr, const struct cf_bk_desc *d,
    size_t n)
{
	uint64_t total = bk_pack_size(d, n, bk_header_nl(hdr));

	if (total == 0)
		return 0;
	total += bk_header_extra(hdr);
	return total > CF_BK_PACK_MAX ? 0 : total;
}

/* AAD of a blob: the pack header, then its descriptor. */
static void
blob_ad(unsigned char ad[CF_BK_HEADER_BYTES + CF_BK_DESC_BYTES],
    const unsigned char *hdr, const struct cf_bk_desc *d)
{
	memcpy(ad, hdr, CF_BK_HEADER_BYTES);
	bk_desc_encode(ad + CF_BK_HEADER_BYTES, d);
}

/* ---- building -------------------------------------------------------------- */

struct bk_packer {
	const struct cf_bk_keys *keys;
	struct cf_ks_aead *aead;
	unsigned char hdr[CF_BK_PACK_HEADER_MAX];	/* with the sealed key */
	size_t pre;			/* header bytes: 32, or 112 sealed */
	size_t nl;
	unsigned char *buf;
	size_t len, cap;
	struct cf_bk_desc *descs;
	size_t n, dcap;
};

int
bk_packer_new(struct bk_packer **out, const struct cf_bk_keys *k,
    const unsigned char *kid)
{
	struct bk_packer *p;
	int rc;

	*out = NULL;
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return -ENOMEM;
	p->keys = k;
	p->nl = cf_ks_cipher_nonce_bytes(k->cipher);
	p->pre = CF_BK_HEADER_BYTES;
	if (k->writer) {
		unsigned char key[CF_KS_KEY_BYTES];

		/* [BK-WO-2] a fresh key only the secret key unseals. */
		rc = kid != NULL ? -EINVAL :
		    bk_header_make_sealed(p->hdr, CF_BK_KIND_PACK, k, key);
		if (rc == 0)
			rc = cf_ks_aead_new(&p->aead, k->cipher, key);
		sodium_memzero(key, sizeof(key));
		p->pre += BK_BOX_BYTES;
	} else {
		bk_header_make(p->hdr, CF_BK_KIND_PACK, k, kid);
		rc = bk_object_aead(k, p->hdr, &p->aead);
	}
	if (rc < 0) {
		free(p);
		return rc;
	}
	*out = p;
	return 0;
}

void
bk_packer_free(struct bk_packer *p)
{
	if (p == NULL)
		return;
	cf_ks_aead_free(p->aead);
	free(p->buf);
	free(p->descs);
	free(p);
}

void
bk_packer_adopt(struct bk_packer *p, unsigned char *buf, size_t cap)
{
	if (p->buf != NULL || p->len != 0)
		cf_misuse("bk_packer_adopt: packer not empty");
	p->buf = buf;
	p->cap = cap;
}

size_t
bk_packer_count(const struct bk_packer *p)
{
	return p->n;
}

size_t
bk_packer_cap(const struct bk_packer *p)
{
	return p->cap;
}

size_t
bk_packer_bytes(const struct bk_packer *p)
{
	return p->len;
}

static int
reserve(struct bk_packer *p, size_t more)
{
	size_t want = p->len + more, cap;
	unsigned char *nb;

	if (want <= p->cap)
		return 0;
	/*
	 * Grow to what is needed plus a margin, never by doubling: the
	 * writer closes a pack before a blob would take it past
	 * CF_BK_PACK_TARGET, so a pack's buffer stays near that size and
	 * can be reused for the next pack (bk_packer_adopt).
	 */
	cap = p->cap ? p->cap : (CF_BK_PACK_TARGET + (1U << 20));
	if (cap < want)
		cap = want + (1U << 20);
	if (p->buf == NULL) {
		void *al;

		/* Page-aligned: the local store writes it with O_DIRECT. */
		if (posix_memalign(&al, 4096, cap) != 0)
			return -ENOMEM;
		nb = al;
	} else {
		nb = realloc(p->buf, cap);
		if (nb == NULL)
			return -ENOMEM;
	}
	p->buf = nb;
	p->cap = cap;
	return 0;
}

int
bk_packer_add(struct bk_packer *p, enum cf_bk_blob_type type,
    const unsigned char id[CF_BK_ID_BYTES], const unsigned char *plain,
    size_t len, int compress, void *cctx, const unsigned char *nonce)
{
	unsigned char ad[CF_BK_HEADER_BYTES + CF_BK_DESC_BYTES];
	struct cf_bk_desc *d;
	unsigned char *at;
	size_t stored = len;
	int comp = 0, rc;

	if (len > CF_BK_BLOB_MAX || p->n >= CF_BK_PACK_BLOBS_MAX)
		return -EINVAL;
	if (p->n == p->dcap) {
		size_t nc = p->dcap ? p->dcap * 2 : 256;
		struct cf_bk_desc *nd = realloc(p->descs, nc * sizeof(*nd));

		if (nd == NULL)
			return -ENOMEM;
		p->descs = nd;
		p->dcap = nc;
	}
	if (p->len == 0) {
		rc = reserve(p, p->pre);
		if (rc < 0)
			return rc;
		memcpy(p->buf, p->hdr, p->pre);
		p->len = p->pre;
	}
	rc = reserve(p, p->nl + len + BK_TAG);
	if (rc < 0)
		return rc;
	at = p->buf + p->len;
	if (nonce != NULL)
		memcpy(at, nonce, p->nl);
	else
		randombytes_buf(at, p->nl);
	if (compress && len > 1) {
		/* Straight into the pack, only if strictly shorter. */
		size_t r = cctx != NULL ?
		    ZSTD_compressCCtx(cctx, at + p->nl, len - 1, plain, len,
		    BK_ZSTD_LEVEL) :
		    ZSTD_compress(at + p->nl, len - 1, plain, len,
		    BK_ZSTD_LEVEL);

		if (!ZSTD_isError(r)) {
			comp = 1;
			stored = r;
		}
	}
	if (!comp && len > 0)
		memcpy(at + p->nl, plain, len);
	d = &p->descs[p->n];
	d->type = (uint8_t)type;
	d->compression = (uint8_t)comp;
	d->length = (uint32_t)(p->nl + stored + BK_TAG);
	d->ulen = (uint32_t)len;
	memcpy(d->id, id, CF_BK_ID_BYTES);
	blob_ad(ad, p->hdr, d);
	rc = cf_ks_aead_seal(p->aead, at + p->nl, at + p->nl, stored, ad,
	    sizeof(ad), at);
	if (rc < 0)
		return rc;
	p->len += d->length;
	p->n++;
	return 0;
}

int
bk_packer_finish(struct bk_packer *p, const unsigned char *nonce,
    unsigned char **buf, size_t *len, unsigned char id[CF_BK_ID_BYTES],
    unsigned char hdr[CF_BK_HEADER_BYTES], struct cf_bk_desc **descs,
    size_t *n)
{
	size_t tlen, i;
	unsigned char *at;
	int rc;

	*buf = NULL;
	*len = 0;
	*descs = NULL;
	*n = 0;
	if (p->n == 0)
		return -EINVAL;
	tlen = p->nl + 4 + CF_BK_DESC_BYTES * p->n + BK_TAG;
	rc = reserve(p, tlen + 4);
	if (rc < 0)
		return rc;
	at = p->buf + p->len;
	if (nonce != NULL)
		memcpy(at, nonce, p->nl);
	else
		randombytes_buf(at, p->nl);
	bk_le32(at + p->nl, (uint32_t)p->n);
	for (i = 0; i < p->n; i++)
		bk_desc_encode(at + p->nl + 4 + CF_BK_DESC_BYTES * i,
		    &p->descs[i]);
	rc = cf_ks_aead_seal(p->aead, at + p->nl, at + p->nl,
	    4 + CF_BK_DESC_BYTES * p->n, p->hdr, CF_BK_HEADER_BYTES, at);
	if (rc < 0)
		return rc;
	bk_le32(at + tlen, (uint32_t)tlen);
	p->len += tlen + 4;
	cf_bk_storage_id(p->buf, p->len, id);
	memcpy(hdr, p->hdr, p->pre);
	*buf = p->buf;
	*len = p->len;
	*descs = p->descs;
	*n = p->n;
	p->buf = NULL;
	p->descs = NULL;
	p->len = p->cap = p->n = p->dcap = 0;
	return 0;
}

/* ---- reading ---------------------------------------------------------------- */

int
cf_bk_pack_parse(const struct cf_bk_keys *k, const unsigned char *pack,
    size_t len, unsigned char header[CF_BK_HEADER_BYTES],
    struct cf_bk_desc **descs, size_t *n)
{
	struct cf_ks_aead *a = NULL;
	struct cf_bk_desc *d = NULL;
	unsigned char *plain = NULL;
	size_t nl, tlen, cnt, i, pre;
	int rc;

	memset(header, 0, CF_BK_HEADER_BYTES);
	*descs = NULL;
	*n = 0;
	if (len < CF_BK_HEADER_BYTES + 4 || len > CF_BK_PACK_MAX)
		return -EPROTO;
	rc = bk_header_check(pack, CF_BK_KIND_PACK, k);
	if (rc < 0)
		return rc;
	nl = bk_header_nl(pack);
	pre = CF_BK_HEADER_BYTES + bk_header_extra(pack);
	if (len < pre + 4)
		return -EPROTO;
	tlen = bk_rd32(pack + len - 4);
	if (tlen < nl + 4 + CF_BK_DESC_BYTES + BK_TAG ||
	    tlen > len - pre - 4 ||
	    (tlen - nl - 4 - BK_TAG) % CF_BK_DESC_BYTES != 0)
		return -EPROTO;
	cnt = (tlen - nl - 4 - BK_TAG) / CF_BK_DESC_BYTES;
	if (cnt > CF_BK_PACK_BLOBS_MAX)
		return -EPROTO;
	plain = malloc(tlen - nl - BK_TAG);
	d = calloc(cnt, sizeof(*d));
	if (plain == NULL || d == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	if (pre > CF_BK_HEADER_BYTES) {
		/* [BK-WO-2]; blobs of this pack then open by key id. */
		rc = bk_keys_learn(k, pack, pack + CF_BK_HEADER_BYTES);
		if (rc < 0)
			goto out;
	}
	rc = bk_object_aead(k, pack, &a);
	if (rc < 0)
		goto out;
	rc = cf_ks_aead_open(a, plain, pack + len - 4 - tlen + nl,
	    tlen - nl, pack, CF_BK_HEADER_BYTES, pack + len - 4 - tlen);
	if (rc < 0)
		goto out;
	rc = -EPROTO;
	if (bk_rd32(plain) != cnt)
		goto out;
	for (i = 0; i < cnt; i++) {
		rc = bk_desc_decode(&d[i], plain + 4 + CF_BK_DESC_BYTES * i,
		    nl);
		if (rc < 0)
			goto out;
	}
	rc = -EPROTO;
	if (bk_pack_size_hdr(pack, d, cnt) != len)
		goto out;
	memcpy(header, pack, CF_BK_HEADER_BYTES);
	*descs = d;
	*n = cnt;
	d = NULL;
	rc = 0;
out:
	cf_ks_aead_free(a);
	free(plain);
	free(d);
	return rc;
}

int
bk_blob_open_aead(const struct cf_bk_keys *k, const struct cf_ks_aead *a,
    const unsigned char *hdr, const struct cf_bk_desc *d,
    const unsigned char *sblob, size_t len, unsigned char **plain,
    size_t *plen)
{
	unsigned char ad[CF_BK_HEADER_BYTES + CF_BK_DESC_BYTES];
	unsigned char id[CF_BK_ID_BYTES];
	unsigned char *stored = NULL, *res = NULL;
	size_t nl = bk_header_nl(hdr), slen;
	int rc = -EPROTO;

	*plain = NULL;
	*plen = 0;
	if (len != d->length || len < nl + BK_TAG || d->ulen > CF_BK_BLOB_MAX)
		return -EPROTO;
	slen = len - nl - BK_TAG;
	if (d->compression == 0 ? slen != d->ulen : slen >= d->ulen)
		return -EPROTO;
	res = malloc(d->ulen > 0 ? d->ulen : 1);
	if (res == NULL)
		return -ENOMEM;
	if (d->compression == 1) {
		stored = malloc(slen > 0 ? slen : 1);
		if (stored == NULL) {
			rc = -ENOMEM;
			goto out;
		}
	}
	blob_ad(ad, hdr, d);
	rc = cf_ks_aead_open(a, d->compression ? stored : res, sblob + nl,
	    len - nl, ad, sizeof(ad), sblob);
	if (rc < 0)
		goto out;
	if (d->compression) {
		rc = bk_unzstd(stored, slen, res, d->ulen);
		if (rc < 0)
			goto out;
	}
	cf_bk_blob_id(k, res, d->ulen, id);
	if (sodium_memcmp(id, d->id, CF_BK_ID_BYTES) != 0) {
		rc = -EBADMSG;
		goto out;
	}
	*plain = res;
	*plen = d->ulen;
	res = NULL;
	rc = 0;
out:
	free(stored);
	if (res != NULL)
		sodium_memzero(res, d->ulen);
	free(res);
	return rc;
}

int
cf_bk_blob_open(const struct cf_bk_keys *k,
    const unsigned char header[CF_BK_HEADER_BYTES],
    const struct cf_bk_desc *d, const unsigned char *sblob, size_t len,
    unsigned char **plain, size_t *plen)
{
	struct cf_ks_aead *a = NULL;
	int rc;

	*plain = NULL;
	*plen = 0;
	rc = bk_header_check(header, CF_BK_KIND_PACK, k);
	if (rc < 0)
		return rc;
	rc = bk_object_aead(k, header, &a);
	if (rc < 0)
		return rc;
	rc = bk_blob_open_aead(k, a, header, d, sblob, len, plain, plen);
	cf_ks_aead_free(a);
	return rc;
}
