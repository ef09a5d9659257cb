/*
 * bk_keys.c - the tenant's backup keys, blob and storage ids, and the
 * FastCDC chunker over the tenant's gear table
 * (docs/format/repository.md: Keys, Content-defined chunking).
 *
 * Every key is derived with the keystore's KDF helpers and kept in
 * cf_secbufs; nothing here implements a primitive.  The gear table is
 * secret too (it reveals chunk boundaries), so it lives in locked memory.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "bk_int.h"

void
cf_bk_storage_id(const unsigned char *buf, size_t len,
    unsigned char id[CF_BK_ID_BYTES])
{
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

int
cf_bk_keys_new(struct cf_bk_keys **out, const struct cf_secbuf *root,
    uint32_t key_version, enum cf_ks_cipher cipher)
{
	static const unsigned char zero_nonce[
	    crypto_stream_chacha20_ietf_NONCEBYTES];
	struct cf_bk_keys *k = NULL;
	struct cf_secbuf *chunk = NULL, *gkey = NULL;
	unsigned char *g;
	uint64_t *gear;
	size_t i;
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
	rc = cf_ks_derive(&k->data, root, CF_KS_PURPOSE_BK_DATA);
	if (rc < 0)
		goto out;
	rc = cf_ks_derive(&chunk, root, CF_KS_PURPOSE_BK_CHUNKID);
	if (rc < 0)
		goto out;
	rc = derive_label(&k->idkey, chunk, "bk-chunk-id");
	if (rc < 0)
		goto out;
	rc = derive_label(&gkey, chunk, "bk-gear");
	if (rc < 0)
		goto out;
	rc = cf_secbuf_new(&k->gear, 256 * sizeof(uint64_t));
	if (rc < 0)
		goto out;
	/* The keystream is the table's bytes; entries are read LE. */
	g = cf_secbuf_data(k->gear);
	crypto_stream_chacha20_ietf(g, 2048, zero_nonce, cf_secbuf_cdata(gkey));
	gear = (uint64_t *)(void *)g;
	for (i = 0; i < 256; i++)
		gear[i] = bk_rd64(g + 8 * i);
	cf_secbuf_readonly(k->gear);
	cf_secbuf_readonly(k->data);
	cf_secbuf_readonly(k->idkey);
	*out = k;
	k = NULL;
	rc = 0;
out:
	cf_secbuf_free(chunk);
	cf_secbuf_free(gkey);
	cf_bk_keys_free(k);
	return rc;
}

void
cf_bk_keys_free(struct cf_bk_keys *k)
{
	if (k == NULL)
		return;
	cf_secbuf_free(k->data);
	cf_secbuf_free(k->idkey);
	cf_secbuf_free(k->gear);
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

void
cf_bk_blob_id(const struct cf_bk_keys *k, const void *buf, size_t len,
    unsigned char id[CF_BK_ID_BYTES])
{
	crypto_generichash(id, CF_BK_ID_BYTES, buf, len,
	    cf_secbuf_cdata(k->idkey), CF_KS_KEY_BYTES);
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
