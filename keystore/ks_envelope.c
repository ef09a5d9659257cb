/*
 * ks_envelope.c - encoders and decoders for the keystore's two binary
 * formats (docs/format/keystore.md):
 *
 *   - the wrapped-key file: one tenant root key version wrapped by a KEK,
 *     its 48-byte header bound as AAD, or for alg 3 (RFC 5649 key wrap in
 *     a PKCS#11 token, which has no AAD) by a MAC computed here;
 *   - the file-KMS KEK file: a KEK sealed under a passphrase with Argon2id
 *     and XChaCha20-Poly1305.
 *
 * Decoders check every field against the spec's limits before use and
 * reject reserved bits, unknown versions and trailing bytes with -EPROTO.
 * They are fuzzed (tests/fuzz/fuzz_envelope.c, fuzz_kekfile.c).
 */
#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "ks_int.h"

static void
put16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

static void
put32(unsigned char *p, uint32_t v)
{
	put16(p, (uint16_t)v);
	put16(p + 2, (uint16_t)(v >> 16));
}

static void
put64(unsigned char *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

static uint16_t
get16(const unsigned char *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t
get32(const unsigned char *p)
{
	return (uint32_t)get16(p) | ((uint32_t)get16(p + 2) << 16);
}

static uint64_t
get64(const unsigned char *p)
{
	return (uint64_t)get32(p) | ((uint64_t)get32(p + 4) << 32);
}

/* [KS-ENV-7] the wrap algorithms a wrapped-key file may name. */
static int
alg_known(uint8_t alg)
{
	return alg == CF_KS_WRAP_XCHACHA20POLY1305 ||
	    alg == CF_KS_WRAP_AES256GCM || alg == CF_KS_WRAP_AES256KWP;
}

void
cf_ks_envelope_header(struct cf_ks_envelope *env)
{
	unsigned char *h = env->header;

	memcpy(h, KS_WK_MAGIC, 8);
	put16(h + 8, KS_WK_VERSION);
	h[10] = env->alg;
	h[11] = 0;
	put32(h + 12, env->key_version);
	memcpy(h + 16, env->tenant_id, CF_KS_ID_BYTES);
	memcpy(h + 32, env->kek_id, CF_KS_ID_BYTES);
}

int
cf_ks_envelope_encode(const struct cf_ks_envelope *env, unsigned char *buf,
    size_t cap, size_t *len)
{
	struct cf_ks_envelope tmp;
	size_t need;

	*len = 0;
	/* Only what the decoder accepts: every encoding must decode. */
	if (env->blob_len == 0 || env->blob_len > CF_KS_ENVELOPE_BLOB_MAX ||
	    env->key_version == 0 ||
	    !alg_known(env->alg))
		return -EINVAL;
	need = KS_WK_FIXED + env->blob_len;
	if (cap < need)
		return -ENOSPC;
	memcpy(&tmp, env, sizeof(tmp));
	cf_ks_envelope_header(&tmp);
	memcpy(buf, tmp.header, CF_KS_ENVELOPE_HEADER_BYTES);
	put16(buf + 48, (uint16_t)env->blob_len);
	memcpy(buf + KS_WK_FIXED, env->blob, env->blob_len);
	*len = need;
	sodium_memzero(&tmp, sizeof(tmp));
	return 0;
}

int
cf_ks_envelope_decode(struct cf_ks_envelope *env, const unsigned char *buf,
    size_t len)
{
	size_t blen;

	memset(env, 0, sizeof(*env));
	if (len < KS_WK_FIXED)
		return ks_err(-EPROTO, "wrapped key: truncated (%zu bytes)",
		    len);
	if (memcmp(buf, KS_WK_MAGIC, 8) != 0)	/* checksrc:allow public magic */
		return ks_err(-EPROTO, "wrapped key: bad magic (not a coffer "
		    "wrapped-key file)");
	if (get16(buf + 8) != KS_WK_VERSION)
		return ks_err(-EPROTO, "wrapped key: unknown format version "
		    "%u", get16(buf + 8));
	env->alg = buf[10];
	if (!alg_known(env->alg))
		return ks_err(-EPROTO, "wrapped key: unknown algorithm %u",
		    env->alg);
	if (buf[11] != 0)
		return ks_err(-EPROTO, "wrapped key: reserved byte is not 0");
	env->key_version = get32(buf + 12);
	if (env->key_version == 0)
		return ks_err(-EPROTO, "wrapped key: key version 0");
	memcpy(env->tenant_id, buf + 16, CF_KS_ID_BYTES);
	memcpy(env->kek_id, buf + 32, CF_KS_ID_BYTES);
	blen = get16(buf + 48);
	if (blen == 0 || blen > CF_KS_ENVELOPE_BLOB_MAX)
		return ks_err(-EPROTO, "wrapped key: blob length %zu out of "
		    "range", blen);
	if (len != KS_WK_FIXED + blen)
		return ks_err(-EPROTO, "wrapped key: %s (%zu bytes, header "
		    "says %zu)", len < KS_WK_FIXED + blen ? "truncated" :
		    "trailing bytes", len, KS_WK_FIXED + blen);
	env->blob_len = blen;
	memcpy(env->blob, buf + KS_WK_FIXED, blen);
	memcpy(env->header, buf, CF_KS_ENVELOPE_HEADER_BYTES);
	return 0;
}

/* ---- alg 3: the header MAC of a key-wrap blob ---------------------- */

/*
 * Key wrap (RFC 5649) authenticates only the key it wraps, not the
 * envelope header, so alg 3 adds a MAC over the header and the wrapped
 * bytes, keyed by a subkey of the unwrapped root key itself: only a
 * holder of that root key (or of the KEK) can make one, and a root key
 * moved under another header does not verify there ([KS-KWP-2]).
 */
void
ks_kwp_mac(const unsigned char root[CF_KS_KEY_BYTES],
    const unsigned char header[CF_KS_ENVELOPE_HEADER_BYTES],
    const unsigned char wrapped[KS_KWP_WRAPPED_BYTES],
    unsigned char mac[KS_KWP_MAC_BYTES])
{
	unsigned char mk[KS_KWP_MAC_BYTES];
	crypto_generichash_state st;

	crypto_kdf_derive_from_key(mk, sizeof(mk), KS_KWP_MAC_SUBKEY,
	    KS_KWP_MAC_CONTEXT, root);
	crypto_generichash_init(&st, mk, sizeof(mk), KS_KWP_MAC_BYTES);
	crypto_generichash_update(&st, header, CF_KS_ENVELOPE_HEADER_BYTES);
	crypto_generichash_update(&st, wrapped, KS_KWP_WRAPPED_BYTES);
	crypto_generichash_final(&st, mac, KS_KWP_MAC_BYTES);
	sodium_memzero(mk, sizeof(mk));
	sodium_memzero(&st, sizeof(st));
}

int
ks_kwp_verify(const unsigned char root[CF_KS_KEY_BYTES],
    const unsigned char header[CF_KS_ENVELOPE_HEADER_BYTES],
    const unsigned char blob[KS_KWP_BLOB_BYTES])
{
	unsigned char mac[KS_KWP_MAC_BYTES];
	int rc;

	ks_kwp_mac(root, header, blob, mac);
	rc = crypto_verify_32(mac, blob + KS_KWP_WRAPPED_BYTES) == 0 ? 0 :
	    -EBADMSG;
	sodium_memzero(mac, sizeof(mac));
	return rc;
}

/* ---- KEK file ---------------------------------------------------------- */

int
ks_kekfile_seal(unsigned char out[KS_KK_BYTES], const char *pass,
    size_t passlen, uint32_t ops, uint64_t mem,
    const unsigned char kek_id[CF_KS_ID_BYTES], const struct cf_secbuf *kek)
{
	struct cf_secbuf *pwkey = NULL;
	unsigned long long clen;
	int rc;

	if (ops < KS_KK_OPS_MIN || ops > KS_KK_OPS_MAX || mem < KS_KK_MEM_MIN ||
	    mem > KS_KK_MEM_MAX || mem % 1024 != 0)
		return ks_err(-EINVAL, "KEK file: Argon2id parameters out of "
		    "range (ops %u, mem %llu)", ops, (unsigned long long)mem);
	memcpy(out, KS_KK_MAGIC, 8);
	put16(out + 8, KS_KK_VERSION);
	out[10] = KS_KK_KDF_ARGON2ID13;
	out[11] = KS_KK_AEAD_XCHACHA;
	put32(out + 12, ops);
	put64(out + 16, mem);
	randombytes_buf(out + 24, 16);		/* salt */
	memcpy(out + 40, kek_id, CF_KS_ID_BYTES);
	randombytes_buf(out + 56, 24);		/* nonce */
	rc = cf_secbuf_new(&pwkey, CF_KS_KEY_BYTES);
	if (rc < 0)
		return rc;
	if (crypto_pwhash(cf_secbuf_data(pwkey), CF_KS_KEY_BYTES, pass, passlen,
	    out + 24, ops, (size_t)mem, crypto_pwhash_ALG_ARGON2ID13) != 0) {
		rc = ks_err(-ENOMEM, "Argon2id failed (out of memory?)");
		goto out;
	}
	crypto_aead_xchacha20poly1305_ietf_encrypt(out + KS_KK_AAD_BYTES,
	    &clen, cf_secbuf_cdata(kek), CF_KS_KEY_BYTES, out, KS_KK_AAD_BYTES,
	    NULL, out + 56, cf_secbuf_cdata(pwkey));
	rc = 0;
out:
	cf_secbuf_free(pwkey);
	return rc;
}

int
cf_ks_kekfile_open(const unsigned char *buf, size_t len, const char *pass,
    size_t passlen, unsigned char kek_id[CF_KS_ID_BYTES],
    struct cf_secbuf **kek)
{
	struct cf_secbuf *pwkey = NULL, *k = NULL;
	unsigned long long mlen;
	uint32_t ops;
	uint64_t mem;
	int rc;

	*kek = NULL;
	memset(kek_id, 0, CF_KS_ID_BYTES);
	if (len != KS_KK_BYTES)
		return ks_err(-EPROTO, "KEK file: wrong size %zu (want %u)",
		    len, KS_KK_BYTES);
	if (memcmp(buf, KS_KK_MAGIC, 8) != 0)	/* checksrc:allow public magic */
		return ks_err(-EPROTO, "KEK file: bad magic");
	if (get16(buf + 8) != KS_KK_VERSION)
		return ks_err(-EPROTO, "KEK file: unknown format version %u",
		    get16(buf + 8));
	if (buf[10] != KS_KK_KDF_ARGON2ID13 || buf[11] != KS_KK_AEAD_XCHACHA)
		return ks_err(-EPROTO, "KEK file: unknown KDF or cipher");
	ops = get32(buf + 12);
	mem = get64(buf + 16);
	/* Checked before hashing: a hostile file must not make us spin. */
	if (ops < KS_KK_OPS_MIN || ops > KS_KK_OPS_MAX || mem < KS_KK_MEM_MIN ||
	    mem > KS_KK_MEM_MAX || mem % 1024 != 0)
		return ks_err(-EPROTO, "KEK file: Argon2id parameters out of "
		    "range");
	rc = cf_secbuf_new(&pwkey, CF_KS_KEY_BYTES);
	if (rc < 0)
		goto out;
	rc = cf_secbuf_new(&k, CF_KS_KEY_BYTES);
	if (rc < 0)
		goto out;
	if (crypto_pwhash(cf_secbuf_data(pwkey), CF_KS_KEY_BYTES, pass, passlen,
	    buf + 24, ops, (size_t)mem, crypto_pwhash_ALG_ARGON2ID13) != 0) {
		rc = ks_err(-ENOMEM, "Argon2id failed (out of memory?)");
		goto out;
	}
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(cf_secbuf_data(k), &mlen,
	    NULL, buf + KS_KK_AAD_BYTES, CF_KS_KEY_BYTES + CF_KS_TAG_BYTES,
	    buf, KS_KK_AAD_BYTES, buf + 56, cf_secbuf_cdata(pwkey)) != 0) {
		rc = ks_err(-EBADMSG, "KEK file: wrong passphrase or the file "
		    "was altered");
		goto out;
	}
	memcpy(kek_id, buf + 40, CF_KS_ID_BYTES);
	*kek = k;
	k = NULL;
	rc = 0;
out:
	cf_secbuf_free(pwkey);
	cf_secbuf_free(k);
	return rc;
}
