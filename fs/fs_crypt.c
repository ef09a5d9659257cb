/*
 * fs_crypt.c - the store's codecs: file headers, sealed blocks, encrypted
 * names and symlink targets (docs/format/fs.md).
 *
 * Blocks: each 4 KiB plaintext block is sealed on its own with a per-file
 * key (derived from the content key and the file's random id, so a GCM
 * key never sees more random nonces than one file's block writes) under a
 * fresh random nonce; the AAD binds file id, block number and key version,
 * so blocks cannot be moved, swapped or spliced between files.
 *
 * Names: a deterministic authenticated encryption built from libsodium
 * primitives in the SIV pattern: tag = BLAKE2b-128(mac key; diriv || name),
 * ciphertext = XChaCha20(enc key, nonce = tag || 0^8) XOR name, encoded
 * as unpadded base64url of tag || ciphertext.  No primitive is written
 * here; only their composition.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "fs_int.h"

#define HDR_MAGIC "\x89" "CFFS\r\n\x1a"
#define HDR_VERSION 2		/* written; 1 is still read */
#define NAME_TAG 16U
#define LINK_NONCE 24U
#define LINK_AD "coffer-symlink-v1"

static void
put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
	p[2] = (unsigned char)(v >> 16);
	p[3] = (unsigned char)(v >> 24);
}

static uint32_t
get32(const unsigned char *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	    ((uint32_t)p[3] << 24);
}

int
cf_fs_keys_new(struct cf_fs_keys **out, const struct cf_secbuf *root,
    enum cf_ks_cipher cipher, uint32_t key_version)
{
	struct cf_fs_keys *k;
	struct cf_secbuf *names = NULL, *meta = NULL;
	unsigned char tmp[CF_KS_KEY_BYTES];
	int rc;

	*out = NULL;
	/* Keys for a header no reader accepts are a caller bug. */
	if ((cipher != CF_KS_CIPHER_AES256GCM &&
	    cipher != CF_KS_CIPHER_XCHACHA20POLY1305) || key_version == 0)
		return -EINVAL;
	k = calloc(1, sizeof(*k));
	if (k == NULL)
		return -ENOMEM;
	k->cipher = cipher;
	k->key_version = key_version;
	k->meta_version = key_version;
	rc = cf_ks_derive(&k->content, root, CF_KS_PURPOSE_FS_CONTENT);
	if (rc < 0)
		goto out;
	cf_secbuf_readonly(k->content);
	rc = cf_ks_derive(&names, root, CF_KS_PURPOSE_FS_NAMES);
	if (rc < 0)
		goto out;
	rc = cf_secbuf_new(&k->name_mac, CF_KS_KEY_BYTES);
	if (rc < 0)
		goto out;
	rc = cf_secbuf_new(&k->name_enc, CF_KS_KEY_BYTES);
	if (rc < 0)
		goto out;
	rc = cf_ks_derive_id(cf_secbuf_data(k->name_mac), names, "name-mac",
	    NULL, 0);
	if (rc < 0)
		goto out;
	rc = cf_ks_derive_id(cf_secbuf_data(k->name_enc), names, "name-enc",
	    NULL, 0);
	if (rc < 0)
		goto out;
	cf_secbuf_readonly(k->name_mac);
	cf_secbuf_readonly(k->name_enc);
	rc = cf_ks_derive(&meta, root, CF_KS_PURPOSE_FS_META);
	if (rc < 0)
		goto out;
	memcpy(tmp, cf_secbuf_cdata(meta), sizeof(tmp));
	rc = cf_ks_aead_new(&k->meta, CF_KS_CIPHER_XCHACHA20POLY1305, tmp);
	if (rc < 0)
		goto out;
	*out = k;
	k = NULL;
out:
	sodium_memzero(tmp, sizeof(tmp));
	cf_secbuf_free(names);
	cf_secbuf_free(meta);
	cf_fs_keys_free(k);
	return rc;
}

int
cf_fs_keys_add(struct cf_fs_keys *k, const struct cf_secbuf *root,
    uint32_t key_version)
{
	struct cf_secbuf *c = NULL;
	int rc;

	if (key_version == 0)
		return -EINVAL;
	if (cf_fs_keys_has(k, key_version))
		return -EEXIST;
	if (k->nmore == CF_FS_KEYS_MAX)
		return -E2BIG;
	rc = cf_ks_derive(&c, root, CF_KS_PURPOSE_FS_CONTENT);
	if (rc < 0)
		return rc;
	cf_secbuf_readonly(c);
	/*
	 * A mounted daemon adds versions while its threads read the keys
	 * (fs_rekey.c, KEYS): the entry is complete before the count that
	 * shows it is published, and the version for new files changes
	 * last.  One adder at a time (the control thread).
	 */
	k->more[k->nmore].version = key_version;
	k->more[k->nmore].key = c;
	__atomic_store_n(&k->nmore, k->nmore + 1, __ATOMIC_RELEASE);
	if (key_version > k->key_version)
		__atomic_store_n(&k->key_version, key_version,
		    __ATOMIC_RELEASE);
	return 0;
}

uint32_t
cf_fs_keys_version(const struct cf_fs_keys *k)
{
	return __atomic_load_n(&k->key_version, __ATOMIC_ACQUIRE);
}

uint32_t
cf_fs_keys_meta_version(const struct cf_fs_keys *k)
{
	return k->meta_version;
}

/* The content key of version v, or NULL. */
static const struct cf_secbuf *
content_key(const struct cf_fs_keys *k, uint32_t v)
{
	size_t i, n = __atomic_load_n(&k->nmore, __ATOMIC_ACQUIRE);

	if (v == k->meta_version)
		return k->content;
	for (i = 0; i < n; i++)
		if (k->more[i].version == v)
			return k->more[i].key;
	return NULL;
}

int
cf_fs_keys_has(const struct cf_fs_keys *k, uint32_t v)
{
	return content_key(k, v) != NULL;
}

void
cf_fs_keys_free(struct cf_fs_keys *k)
{
	size_t i;

	if (k == NULL)
		return;
	for (i = 0; i < k->nmore; i++)
		cf_secbuf_free(k->more[i].key);
	cf_secbuf_free(k->content);
	cf_secbuf_free(k->name_mac);
	cf_secbuf_free(k->name_enc);
	cf_ks_aead_free(k->meta);
	free(k);
}

/* ---- header and blocks ------------------------------------------------- */

void
cf_fs_header_encode(const struct cf_fs_header *h,
    unsigned char buf[CF_FS_HEADER_BYTES])
{
	memcpy(buf, HDR_MAGIC, 8);
	buf[8] = h->version == 1 ? 1 : HDR_VERSION;
	buf[9] = 0;
	buf[10] = (unsigned char)h->cipher;
	buf[11] = 0;
	put32(buf + 12, h->key_version);
	memcpy(buf + 16, h->file_id, CF_KS_ID_BYTES);
}

int
cf_fs_header_decode(struct cf_fs_header *h, const unsigned char *buf,
    size_t len)
{
	memset(h, 0, sizeof(*h));
	if (len < CF_FS_HEADER_BYTES)
		return -EPROTO;
	if (memcmp(buf, HDR_MAGIC, 8) != 0)	/* checksrc:allow public magic */
		return -EPROTO;
	if ((buf[8] != 1 && buf[8] != HDR_VERSION) || buf[9] != 0)
		return -EPROTO;
	h->version = buf[8];
	if (buf[10] != CF_KS_CIPHER_AES256GCM &&
	    buf[10] != CF_KS_CIPHER_XCHACHA20POLY1305)
		return -EPROTO;
	if (buf[11] != 0)
		return -EPROTO;
	h->cipher = (enum cf_ks_cipher)buf[10];
	h->key_version = get32(buf + 12);
	if (h->key_version == 0)
		return -EPROTO;
	memcpy(h->file_id, buf + 16, CF_KS_ID_BYTES);
	return 0;
}

size_t
cf_fs_block_overhead(enum cf_ks_cipher c)
{
	return cf_ks_cipher_nonce_bytes(c) + CF_KS_TAG_BYTES;
}

off_t
cf_fs_plain_size(enum cf_ks_cipher c, off_t csize)
{
	off_t ovh = (off_t)cf_fs_block_overhead(c), cb = CF_FS_BLOCK + ovh;
	off_t body, full, rem;

	if (csize <= (off_t)CF_FS_HEADER_BYTES)
		return 0;
	body = csize - CF_FS_HEADER_BYTES;
	full = body / cb;
	rem = body % cb;
	/* A partial block shorter than its overhead is damage: it reads as
	 * EIO; the size counts it as empty. */
	return full * CF_FS_BLOCK + (rem > ovh ? rem - ovh : 0);
}

off_t
cf_fs_cipher_size(enum cf_ks_cipher c, off_t psize)
{
	off_t ovh = (off_t)cf_fs_block_overhead(c);
	off_t full = psize / CF_FS_BLOCK, rem = psize % CF_FS_BLOCK;

	if (psize == 0)
		return CF_FS_HEADER_BYTES;
	return CF_FS_HEADER_BYTES + full * (CF_FS_BLOCK + ovh) +
	    (rem > 0 ? rem + ovh : 0);
}

struct cf_fs_file_ctx {
	struct cf_ks_aead *aead;
	size_t nonce;
	unsigned char file_id[CF_KS_ID_BYTES];
	uint32_t key_version;
	unsigned version;		/* the header's: 1 has no final flag */
	int dense;			/* no holes: a zero block is damage */
};

void
cf_fs_file_ctx_set_dense(struct cf_fs_file_ctx *f, int dense)
{
	f->dense = dense != 0;
}

int
cf_fs_file_ctx_new(struct cf_fs_file_ctx **out, const struct cf_fs_keys *k,
    const struct cf_fs_header *h)
{
	unsigned char fk[CF_KS_KEY_BYTES];
	const struct cf_secbuf *ck = content_key(k, h->key_version);
	struct cf_fs_file_ctx *f;
	int rc;

	*out = NULL;
	if (ck == NULL)
		return -ENOKEY;
	f = calloc(1, sizeof(*f));
	if (f == NULL)
		return -ENOMEM;
	rc = cf_ks_derive_id(fk, ck, "fs-file", h->file_id,
	    CF_KS_ID_BYTES);
	if (rc == 0)
		rc = cf_ks_aead_new(&f->aead, h->cipher, fk);
	sodium_memzero(fk, sizeof(fk));
	if (rc < 0) {
		free(f);
		return rc;
	}
	f->nonce = cf_ks_cipher_nonce_bytes(h->cipher);
	memcpy(f->file_id, h->file_id, CF_KS_ID_BYTES);
	f->key_version = h->key_version;
	f->version = h->version == 1 ? 1 : HDR_VERSION;
	*out = f;
	return 0;
}

int
cf_fs_file_ctx_reset(struct cf_fs_file_ctx *f, const struct cf_fs_keys *k,
    const struct cf_fs_header *h)
{
	unsigned char fk[CF_KS_KEY_BYTES];
	const struct cf_secbuf *ck = content_key(k, h->key_version);
	int rc;

	if (ck == NULL)
		return -ENOKEY;
	if (h->cipher != cf_ks_aead_cipher(f->aead))
		return -EPROTO;
	rc = cf_ks_derive_id(fk, ck, "fs-file", h->file_id, CF_KS_ID_BYTES);
	if (rc == 0)
		cf_ks_aead_rekey(f->aead, fk);
	sodium_memzero(fk, sizeof(fk));
	if (rc < 0)
		return rc;
	f->dense = 0;
	memcpy(f->file_id, h->file_id, CF_KS_ID_BYTES);
	f->key_version = h->key_version;
	f->version = h->version == 1 ? 1 : HDR_VERSION;
	return 0;
}

void
cf_fs_file_ctx_free(struct cf_fs_file_ctx *f)
{
	if (f == NULL)
		return;
	cf_ks_aead_free(f->aead);
	free(f);
}

/*
 * AAD = file id (16) || block number (8, LE) || key version (4, LE), and
 * in version 2 || final (1: 1 for the file's last block, else 0).  Returns
 * its length.
 */
static size_t
block_ad(const struct cf_fs_file_ctx *f, uint64_t blk, int final,
    unsigned char ad[29])
{
	memcpy(ad, f->file_id, CF_KS_ID_BYTES);
	put32(ad + 16, (uint32_t)blk);
	put32(ad + 20, (uint32_t)(blk >> 32));
	put32(ad + 24, f->key_version);
	if (f->version == 1)
		return 28;
	ad[28] = final ? 1 : 0;
	return 29;
}

int
cf_fs_block_seal(const struct cf_fs_file_ctx *f, uint64_t blk, int final,
    const unsigned char *in, size_t len, unsigned char *out)
{
	if (len > CF_FS_BLOCK)
		cf_misuse("cf_fs_block_seal: block too large");
	randombytes_buf(out, f->nonce);
	return cf_fs_block_seal_drawn(f, blk, final, in, len, out);
}

int
cf_fs_block_seal_drawn(const struct cf_fs_file_ctx *f, uint64_t blk,
    int final, const unsigned char *in, size_t len, unsigned char *out)
{
	unsigned char ad[29];
	size_t adl;

	if (len > CF_FS_BLOCK)
		cf_misuse("cf_fs_block_seal: block too large");
	adl = block_ad(f, blk, final, ad);
	return cf_ks_aead_seal(f->aead, out + f->nonce, in, len, ad, adl, out);
}

size_t
cf_fs_nonce_bytes(const struct cf_fs_file_ctx *f)
{
	return f->nonce;
}

int
cf_fs_block_open(const struct cf_fs_file_ctx *f, uint64_t blk, int final,
    const unsigned char *in, size_t clen, unsigned char *out)
{
	unsigned char ad[29];
	size_t ovh = f->nonce + CF_KS_TAG_BYTES, adl;

	/* [FS-BLK-6] no encoder writes such a length, zeros or not. */
	if (clen <= ovh || clen > CF_FS_BLOCK + ovh)
		return -EBADMSG;
	/* A sealed block starts with a random nonce, so only a block whose
	 * nonce is zero is worth scanning for a hole (public data, no need
	 * for a constant-time scan: it was 46% of read time). */
	if (in[0] == 0 && memcmp(in, in + 1, clen - 1) == 0) {
		/* A hole left by truncate-up or a sparse write; never the
		 * last block of a version-2 file, which is always sealed, so
		 * cutting a file at a block boundary is noticed, and never a
		 * block of a file whose generation says it has no holes
		 * (zeros written over a block). */
		if ((final && f->version != 1) || f->dense)
			return -EBADMSG;
		memset(out, 0, clen - ovh);
		return 0;
	}
	adl = block_ad(f, blk, final, ad);
	return cf_ks_aead_open(f->aead, out, in + f->nonce, clen - f->nonce, ad,
	    adl, in);
}

/* ---- names ------------------------------------------------------------- */

/*
 * 1 if s holds only the unpadded base64url alphabet.  Checked before
 * decoding because libsodium 1.0.18 decodes bytes 0x80-0xff as '_', which
 * would give one name a second spelling ([FS-NAME-6]).
 */
static int
b64url_only(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return 0;
	}
	return 1;
}

static void
name_tag(const struct cf_fs_keys *k, const unsigned char *diriv,
    const unsigned char *name, size_t len, unsigned char tag[NAME_TAG])
{
	crypto_generichash_state st;

	crypto_generichash_init(&st, cf_secbuf_cdata(k->name_mac),
	    CF_KS_KEY_BYTES, NAME_TAG);
	crypto_generichash_update(&st, diriv, CF_FS_DIRIV_BYTES);
	crypto_generichash_update(&st, name, len);
	crypto_generichash_final(&st, tag, NAME_TAG);
	sodium_memzero(&st, sizeof(st));
}

static void
name_xor(const struct cf_fs_keys *k, const unsigned char tag[NAME_TAG],
    unsigned char *buf, const unsigned char *in, size_t len)
{
	unsigned char nonce[crypto_stream_xchacha20_NONCEBYTES] = { 0 };

	memcpy(nonce, tag, NAME_TAG);
	crypto_stream_xchacha20_xor(buf, in, len, nonce,
	    cf_secbuf_cdata(k->name_enc));
}

static int
name_encrypt(const struct cf_fs_keys *k,
    const unsigned char diriv[CF_FS_DIRIV_BYTES], const char *name,
    char *out, size_t cap, size_t max)
{
	unsigned char raw[NAME_TAG + CF_FS_LONG_NAME_MAX];
	size_t len = strlen(name);

	if (len == 0 || strchr(name, '/') != NULL || strcmp(name, ".") == 0 ||
	    strcmp(name, "..") == 0)
		return -EINVAL;
	if (len > max)
		return -ENAMETOOLONG;
	name_tag(k, diriv, (const unsigned char *)name, len, raw);
	name_xor(k, raw, raw + NAME_TAG, (const unsigned char *)name, len);
	if (cap < sodium_base64_ENCODED_LEN(NAME_TAG + len,
	    sodium_base64_VARIANT_URLSAFE_NO_PADDING))
		return -ENAMETOOLONG;
	sodium_bin2base64(out, cap, raw, NAME_TAG + len,
	    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	sodium_memzero(raw, sizeof(raw));
	return 0;
}

int
cf_fs_name_encrypt(const struct cf_fs_keys *k,
    const unsigned char diriv[CF_FS_DIRIV_BYTES], const char *name,
    char *out, size_t cap)
{
	return name_encrypt(k, diriv, name, out, cap, CF_FS_NAME_MAX);
}

int
cf_fs_name_encrypt_any(const struct cf_fs_keys *k,
    const unsigned char diriv[CF_FS_DIRIV_BYTES], const char *name,
    char *out, size_t cap)
{
	return name_encrypt(k, diriv, name, out, cap, CF_FS_LONG_NAME_MAX);
}

/* Decrypts a name of min..max bytes: one spelling per name and length. */
static int
name_decrypt(const struct cf_fs_keys *k,
    const unsigned char diriv[CF_FS_DIRIV_BYTES], const char *enc,
    char *out, size_t cap, size_t min, size_t max)
{
	unsigned char raw[NAME_TAG + CF_FS_LONG_NAME_MAX + 3], tag[NAME_TAG];
	size_t rlen = 0, len, elen = strlen(enc);
	const char *end;

	if (elen == 0 || elen > CF_FS_ENC_NAME_MAX || !b64url_only(enc, elen))
		return -EPROTO;
	if (sodium_base642bin(raw, sizeof(raw), enc, elen, NULL, &rlen, &end,
	    sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
	    (size_t)(end - enc) != elen || rlen <= NAME_TAG)
		return -EPROTO;
	len = rlen - NAME_TAG;
	if (len < min || len > max || cap < len + 1)
		return -EPROTO;
	name_xor(k, raw, (unsigned char *)out, raw + NAME_TAG, len);
	name_tag(k, diriv, (const unsigned char *)out, len, tag);
	if (crypto_verify_16(tag, raw) != 0) {
		sodium_memzero(out, len);
		return -EBADMSG;
	}
	out[len] = '\0';
	/* Authentic, but it must also be a name we could have written. */
	if (memchr(out, '\0', len) != NULL || memchr(out, '/', len) != NULL ||
	    strcmp(out, ".") == 0 || strcmp(out, "..") == 0)
		return -EPROTO;
	return 0;
}

int
cf_fs_name_decrypt(const struct cf_fs_keys *k,
    const unsigned char diriv[CF_FS_DIRIV_BYTES], const char *enc,
    char *out, size_t cap)
{
	return name_decrypt(k, diriv, enc, out, cap, 1, CF_FS_NAME_MAX);
}

int
cf_fs_name_decrypt_long(const struct cf_fs_keys *k,
    const unsigned char diriv[CF_FS_DIRIV_BYTES], const char *enc,
    char *out, size_t cap)
{
	return name_decrypt(k, diriv, enc, out, cap, CF_FS_NAME_MAX + 1,
	    CF_FS_LONG_NAME_MAX);
}

/* prefix + base64url(BLAKE2b-256(enc)): the backing name of enc. */
static void
hashed_name(const char *prefix, const char *enc, char out[CF_FS_HASHED_BYTES])
{
	unsigned char h[32];

	crypto_generichash(h, sizeof(h), (const unsigned char *)enc,
	    strlen(enc), NULL, 0);
	memcpy(out, prefix, 5);
	sodium_bin2base64(out + 5, CF_FS_HASHED_BYTES - 5, h, sizeof(h),
	    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

void
cf_fs_long_name(const char *enc, char out[CF_FS_HASHED_BYTES])
{
	hashed_name(CF_FS_LONG_PREFIX, enc, out);
}

void
cf_fs_long_target(const char *enc, char out[CF_FS_HASHED_BYTES])
{
	hashed_name(CF_FS_TARGET_PREFIX, enc, out);
}

/* ---- symlink targets ---------------------------------------------------- */

int
cf_fs_link_encrypt(const struct cf_fs_keys *k, const char *target, char *out,
    size_t cap)
{
	size_t len = strlen(target), rlen;
	unsigned char *raw;
	int rc;

	rlen = LINK_NONCE + len + CF_KS_TAG_BYTES;
	if (len == 0)
		return -ENOENT;
	if (cap < sodium_base64_ENCODED_LEN(rlen,
	    sodium_base64_VARIANT_URLSAFE_NO_PADDING))
		return -ENAMETOOLONG;
	raw = malloc(rlen);
	if (raw == NULL)
		return -ENOMEM;
	randombytes_buf(raw, LINK_NONCE);
	rc = cf_ks_aead_seal(k->meta, raw + LINK_NONCE,
	    (const unsigned char *)target, len, (const unsigned char *)LINK_AD,
	    sizeof(LINK_AD) - 1, raw);
	if (rc == 0)
		sodium_bin2base64(out, cap, raw, rlen,
		    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	free(raw);
	return rc;
}

int
cf_fs_link_decrypt(const struct cf_fs_keys *k, const char *enc, char *out,
    size_t cap)
{
	size_t elen = strlen(enc), rlen = 0, len;
	unsigned char *raw;
	const char *end;
	int rc = -EPROTO;

	if (!b64url_only(enc, elen))
		return -EPROTO;
	raw = malloc(elen + 1);
	if (raw == NULL)
		return -ENOMEM;
	if (sodium_base642bin(raw, elen + 1, enc, elen, NULL, &rlen, &end,
	    sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
	    (size_t)(end - enc) != elen || rlen <= LINK_NONCE + CF_KS_TAG_BYTES)
		goto out;
	len = rlen - LINK_NONCE - CF_KS_TAG_BYTES;
	if (len + 1 > cap)
		goto out;
	rc = cf_ks_aead_open(k->meta, (unsigned char *)out, raw + LINK_NONCE,
	    rlen - LINK_NONCE, (const unsigned char *)LINK_AD,
	    sizeof(LINK_AD) - 1, raw);
	if (rc == 0) {
		out[len] = '\0';
		if (memchr(out, '\0', len) != NULL)
			rc = -EPROTO;
	}
out:
	free(raw);
	return rc;
}

/* ---- file generations ---------------------------------------------------- */

static void
put64(unsigned char *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t
get64(const unsigned char *p)
{
	return (uint64_t)get32(p) | ((uint64_t)get32(p + 4) << 32);
}

/* tag = ID(content, "fs-gen", value[0..32)): version, gen, file id. */
static int
gen_tag(const struct cf_fs_keys *k, const unsigned char *body,
    unsigned char tag[CF_KS_KEY_BYTES])
{
	return cf_ks_derive_id(tag, k->content, "fs-gen", body,
	    CF_FS_GEN_BYTES - CF_KS_KEY_BYTES);
}

int
cf_fs_gen_encode(const struct cf_fs_keys *k,
    const unsigned char file_id[CF_KS_ID_BYTES], uint64_t gen,
    unsigned flags, unsigned char out[CF_FS_GEN_BYTES])
{
	if (gen == 0 || (flags & ~CF_FS_GEN_DENSE) != 0)
		return -EINVAL;
	memset(out, 0, CF_FS_GEN_BYTES);
	out[0] = CF_FS_GEN_VERSION;
	out[1] = (unsigned char)flags;
	put64(out + 8, gen);
	memcpy(out + 16, file_id, CF_KS_ID_BYTES);
	return gen_tag(k, out, out + 32);
}

int
cf_fs_gen_decode(const struct cf_fs_keys *k, const unsigned char *buf,
    size_t len, unsigned char file_id[CF_KS_ID_BYTES], uint64_t *gen,
    unsigned *flags)
{
	unsigned char tag[CF_KS_KEY_BYTES];
	int rc;

	*gen = 0;
	if (flags != NULL)
		*flags = 0;
	memset(file_id, 0, CF_KS_ID_BYTES);
	/* [FS-GEN-2] version 1 has 7 zero bytes, version 2 a flags byte
	 * (only CF_FS_GEN_DENSE known) and 6. */
	if (len != CF_FS_GEN_BYTES || (buf[0] != 1 && buf[0] != 2) ||
	    (buf[0] == 1 && buf[1] != 0) ||
	    (buf[1] & ~CF_FS_GEN_DENSE) != 0 ||
	    !sodium_is_zero(buf + 2, 6) || get64(buf + 8) == 0)
		return -EPROTO;
	rc = gen_tag(k, buf, tag);
	if (rc < 0)
		return rc;
	rc = sodium_memcmp(tag, buf + 32, sizeof(tag)) == 0 ? 0 : -EBADMSG;
	sodium_memzero(tag, sizeof(tag));
	if (rc < 0)
		return rc;
	*gen = get64(buf + 8);
	if (flags != NULL)
		*flags = buf[1];
	memcpy(file_id, buf + 16, CF_KS_ID_BYTES);
	return 0;
}

/* ---- the store marker and the metadata journal ---------------------------- */

#define MARKER1_PLAIN "coffer-store-v1"	/* with its NUL: 16 bytes */
#define MARKER2_PLAIN "coffer-store-v2"
#define MARKER_NONCE 24U

int
cf_fs_marker_version(const unsigned char *buf, size_t len, uint32_t *m)
{
	*m = 0;
	if (len == CF_FS_MARKER1_BYTES) {
		*m = 1;
		return 0;
	}
	if (len != CF_FS_MARKER2_BYTES || get32(buf) < 2)
		return -EPROTO;
	*m = get32(buf);
	return 0;
}

int
fs_marker_seal(const struct cf_fs_keys *k, unsigned char *out, size_t *len)
{
	unsigned char *p = out;
	const char *plain = MARKER1_PLAIN;
	size_t adlen = 0;

	/*
	 * Version 1 keeps the first marker's bytes, so a store whose
	 * metadata never moved reads as before; any other version is
	 * stated in clear and bound as the AAD ([FS-STORE-8]).
	 */
	*len = CF_FS_MARKER1_BYTES;
	if (k->meta_version != 1) {
		put32(out, k->meta_version);
		p = out + 4;
		adlen = 4;
		plain = MARKER2_PLAIN;
		*len = CF_FS_MARKER2_BYTES;
	}
	randombytes_buf(p, MARKER_NONCE);
	return cf_ks_aead_seal(k->meta, p + MARKER_NONCE,
	    (const unsigned char *)plain, sizeof(MARKER1_PLAIN),
	    adlen ? out : NULL, adlen, p);
}

int
fs_marker_open(const struct cf_fs_keys *k, const unsigned char *buf,
    size_t len)
{
	unsigned char out[sizeof(MARKER1_PLAIN)];
	const unsigned char *p = buf;
	const char *plain = MARKER1_PLAIN;
	uint32_t m;
	size_t adlen = 0;

	if (cf_fs_marker_version(buf, len, &m) < 0 || m != k->meta_version)
		return -EBADMSG;
	if (m != 1) {
		p = buf + 4;
		adlen = 4;
		plain = MARKER2_PLAIN;
	}
	if (cf_ks_aead_open(k->meta, out, p + MARKER_NONCE,
	    sizeof(out) + CF_KS_TAG_BYTES, adlen ? buf : NULL, adlen, p) != 0 ||
	    memcmp(out, plain, sizeof(out)) != 0)	/* checksrc:allow public marker */
		return -EBADMSG;
	return 0;
}

#define MKJ_MAGIC "\x89" "CFMK\r\n\x1a"

void
cf_fs_metakey_journal_encode(uint32_t from, uint32_t to,
    unsigned char out[CF_FS_METAKEY_JOURNAL_BYTES])
{
	unsigned char h[16];

	memset(out, 0, CF_FS_METAKEY_JOURNAL_BYTES);
	memcpy(out, MKJ_MAGIC, 8);
	out[8] = 1;
	put32(out + 16, from);
	put32(out + 20, to);
	crypto_generichash(h, sizeof(h), out, 24, NULL, 0);
	memcpy(out + 24, h, 8);
}

int
cf_fs_metakey_journal_decode(const unsigned char *buf, size_t len,
    uint32_t *from, uint32_t *to)
{
	unsigned char h[16];

	*from = *to = 0;
	if (len != CF_FS_METAKEY_JOURNAL_BYTES ||
	    memcmp(buf, MKJ_MAGIC, 8) != 0 || buf[8] != 1 ||
	    !sodium_is_zero(buf + 9, 7))
		return -EPROTO;
	crypto_generichash(h, sizeof(h), buf, 24, NULL, 0);
	if (sodium_memcmp(h, buf + 24, 8) != 0)
		return -EPROTO;
	if (get32(buf + 16) == 0 || get32(buf + 20) == 0 ||
	    get32(buf + 16) == get32(buf + 20))
		return -EPROTO;
	*from = get32(buf + 16);
	*to = get32(buf + 20);
	return 0;
}

#define MKX_MAGIC "\x89" "CFMX\r\n\x1a"

int
cf_fs_metakey_stash_encode(const char *entry, const char *xname,
    const unsigned char *val, size_t vlen, unsigned char *out, size_t cap,
    size_t *len)
{
	size_t n = strlen(entry), x = strlen(xname), total;
	unsigned char h[16];

	*len = 0;
	if (n == 0 || n > 255 || x == 0 || x > 255 ||
	    vlen > CF_FS_METAKEY_STASH_VALUE_MAX)
		return -EINVAL;
	total = 14 + n + x + vlen + 8;
	if (cap < total)
		return -ERANGE;
	memcpy(out, MKX_MAGIC, 8);
	out[8] = (unsigned char)n;
	out[9] = (unsigned char)x;
	put32(out + 10, (uint32_t)vlen);
	memcpy(out + 14, entry, n);
	memcpy(out + 14 + n, xname, x);
	if (vlen > 0)
		memcpy(out + 14 + n + x, val, vlen);
	crypto_generichash(h, sizeof(h), out, total - 8, NULL, 0);
	memcpy(out + total - 8, h, 8);
	*len = total;
	return 0;
}

int
cf_fs_metakey_stash_decode(const unsigned char *buf, size_t len,
    struct cf_fs_metakey_stash *s)
{
	unsigned char h[16];
	size_t n, x, v, i;

	memset(s, 0, sizeof(*s));
	if (len < 14 + 8 || memcmp(buf, MKX_MAGIC, 8) != 0)
		return -EPROTO;
	n = buf[8];
	x = buf[9];
	v = get32(buf + 10);
	if (n == 0 || x == 0 || v > CF_FS_METAKEY_STASH_VALUE_MAX ||
	    len != 14 + n + x + v + 8)
		return -EPROTO;
	crypto_generichash(h, sizeof(h), buf, len - 8, NULL, 0);
	if (sodium_memcmp(h, buf + len - 8, 8) != 0)
		return -EPROTO;
	/* A name of the directory (no '/', NUL, "." or ".."); an xattr
	 * name of the store's, no NUL. */
	for (i = 0; i < n; i++)
		if (buf[14 + i] == '/' || buf[14 + i] == '\0')
			return -EPROTO;
	if ((n == 1 && buf[14] == '.') || (n == 2 && buf[14] == '.' &&
	    buf[15] == '.'))
		return -EPROTO;
	for (i = 0; i < x; i++)
		if (buf[14 + n + i] == '\0')
			return -EPROTO;
	if (x <= 8 || memcmp(buf + 14 + n, "user.cf.", 8) != 0)
		return -EPROTO;
	memcpy(s->entry, buf + 14, n);
	s->entry[n] = '\0';
	memcpy(s->xname, buf + 14 + n, x);
	s->xname[x] = '\0';
	s->value = buf + 14 + n + x;
	s->vlen = v;
	return 0;
}
