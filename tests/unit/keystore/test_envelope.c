/*
 * test_envelope.c - the wrapped-key file decoder and encoder: the vector
 * decodes to the documented fields, round-trips byte for byte, and every
 * malformation (truncation at each length, trailing bytes, bad magic,
 * version, algorithm, reserved byte, lengths) is refused with -EPROTO.
 * The alg-3 vector (PKCS#11 key wrap) decodes, and its header MAC is
 * the vector's and catches every changed byte.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <sodium.h>

#include "cf_test.h"
#include "ks_int.h"

static unsigned char *
vector_file(size_t *len, json_t **root)
{
	json_error_t e;
	json_t *v = json_load_file(cf_test_vector_path("keystore-v1.json"), 0,
	    &e);

	*root = v;
	if (v == NULL)
		return NULL;
	return cf_test_unhex(json_string_value(json_object_get(
	    json_object_get(v, "wrapped_key"), "file")), len);
}

/* [KS-ENV-1] field offsets as in docs/format/keystore.md. */
static void
decode_vector(void)
{
	struct cf_ks_envelope env;
	unsigned char *buf, *tid, *kid, out[2048];
	json_t *v, *w;
	size_t len, tl, kl, ol;

	buf = vector_file(&len, &v);
	CHECK(buf != NULL && len == 50 + 72);
	w = json_object_get(v, "wrapped_key");
	tid = cf_test_unhex(json_string_value(json_object_get(w, "tenant_id")),
	    &tl);
	kid = cf_test_unhex(json_string_value(json_object_get(w, "kek_id")),
	    &kl);
	CHECK_RC(cf_ks_envelope_decode(&env, buf, len), 0);
	CHECK(env.alg == CF_KS_WRAP_XCHACHA20POLY1305);
	CHECK(env.key_version == 1);
	CHECK(memcmp(env.tenant_id, tid, 16) == 0);
	CHECK(memcmp(env.kek_id, kid, 16) == 0);
	CHECK(env.blob_len == 72);
	CHECK(memcmp(env.header, buf, 48) == 0);
	/* [KS-ENV-2] encode(decode(x)) == x. */
	CHECK_RC(cf_ks_envelope_encode(&env, out, sizeof(out), &ol), 0);
	CHECK(ol == len && memcmp(out, buf, len) == 0);
	CHECK_RC(cf_ks_envelope_encode(&env, out, len - 1, &ol), -ENOSPC);
	free(buf), free(tid), free(kid);
	json_decref(v);
}

static void
reject_malformed(void)
{
	struct cf_ks_envelope env;
	unsigned char *buf, bad[256];
	json_t *v;
	size_t len, i;

	buf = vector_file(&len, &v);
	CHECK(buf != NULL);
	/* [KS-ENV-3] every truncation is refused. */
	for (i = 0; i < len; i++)
		CHECK_RC(cf_ks_envelope_decode(&env, buf, i), -EPROTO);
	memcpy(bad, buf, len);
	bad[len] = 0;
	CHECK_RC(cf_ks_envelope_decode(&env, bad, len + 1), -EPROTO);
	CHECK(strstr(cf_ks_last_error(), "trailing") != NULL);
#define MUTATE(off, val)						\
	do {								\
		memcpy(bad, buf, len);					\
		bad[off] = (unsigned char)(val);			\
		CHECK_RC(cf_ks_envelope_decode(&env, bad, len), -EPROTO); \
	} while (0)
	MUTATE(0, 0x88);	/* magic */
	MUTATE(7, 0x00);	/* magic */
	MUTATE(8, 2);		/* [KS-ENV-4] unknown version */
	MUTATE(9, 1);		/* version 257 */
	MUTATE(10, 0);		/* algorithm */
	MUTATE(10, 4);		/* [KS-ENV-7] 1, 2 and 3 only */
	MUTATE(10, 255);
	MUTATE(11, 1);		/* [KS-ENV-5] reserved byte */
	MUTATE(48, 73);		/* blob length says more than present */
	MUTATE(48, 0);		/* zero-length blob */
	memcpy(bad, buf, len);
	bad[12] = bad[13] = bad[14] = bad[15] = 0;	/* key version 0 */
	CHECK_RC(cf_ks_envelope_decode(&env, bad, len), -EPROTO);
	memcpy(bad, buf, len);
	bad[48] = 0x01;
	bad[49] = 0x04;		/* 1025 > CF_KS_ENVELOPE_BLOB_MAX */
	CHECK_RC(cf_ks_envelope_decode(&env, bad, len), -EPROTO);
#undef MUTATE
	/* A flipped tenant id still decodes: authentication catches it
	 * at unwrap time (test_tenant.c). */
	memcpy(bad, buf, len);
	bad[20] ^= 1;
	CHECK_RC(cf_ks_envelope_decode(&env, bad, len), 0);
	free(buf);
	json_decref(v);
}

static unsigned char *
kwp_member(json_t *v, const char *name, size_t want)
{
	size_t len = 0;
	unsigned char *b = cf_test_unhex(json_string_value(json_object_get(
	    json_object_get(v, "wrapped_key_kwp"), name)), &len);

	if (b != NULL && len != want) {
		free(b);
		b = NULL;
	}
	return b;
}

/*
 * [KS-KWP-1] the alg-3 file decodes to its fields and round-trips;
 * [KS-KWP-2] its MAC is the vector's (crypto_kdf context "cf-kwmac",
 * keyed BLAKE2b over header || wrapped), and any change to the header,
 * the wrapped bytes, the MAC or the root key fails to verify.
 */
static void
kwp_vector(void)
{
	struct cf_ks_envelope env;
	unsigned char *file, *root, *hdr, *wrapped, *mk, *mac, *tid;
	unsigned char got[32], out[256], blob[KS_KWP_BLOB_BYTES];
	json_t *v;
	json_error_t e;
	size_t len, ol, i;

	v = json_load_file(cf_test_vector_path("keystore-v1.json"), 0, &e);
	CHECK(v != NULL);
	file = cf_test_unhex(json_string_value(json_object_get(
	    json_object_get(v, "wrapped_key_kwp"), "file")), &len);
	CHECK(file != NULL && len == 122);
	root = kwp_member(v, "root", 32);
	hdr = kwp_member(v, "header", 48);
	wrapped = kwp_member(v, "wrapped", 40);
	mk = kwp_member(v, "mac_key", 32);
	mac = kwp_member(v, "mac", 32);
	tid = kwp_member(v, "tenant_id", 16);
	CHECK(root != NULL && hdr != NULL && wrapped != NULL && mk != NULL &&
	    mac != NULL && tid != NULL);
	CHECK_RC(cf_ks_envelope_decode(&env, file, len), 0);
	CHECK(env.alg == CF_KS_WRAP_AES256KWP && env.alg == 3);
	CHECK(env.key_version == 1 && env.blob_len == KS_KWP_BLOB_BYTES);
	CHECK(memcmp(env.tenant_id, tid, 16) == 0);
	CHECK(memcmp(env.header, hdr, 48) == 0);
	CHECK(memcmp(env.blob, wrapped, 40) == 0);
	CHECK(memcmp(env.blob + 40, mac, 32) == 0);
	CHECK_RC(cf_ks_envelope_encode(&env, out, sizeof(out), &ol), 0);
	CHECK(ol == len && memcmp(out, file, len) == 0);

	/* The MAC key's derivation, then the MAC itself. */
	CHECK(crypto_kdf_derive_from_key(got, 32, KS_KWP_MAC_SUBKEY,
	    KS_KWP_MAC_CONTEXT, root) == 0);
	CHECK(memcmp(got, mk, 32) == 0);
	ks_kwp_mac(root, hdr, wrapped, got);
	CHECK(memcmp(got, mac, 32) == 0);
	memcpy(blob, wrapped, 40);
	memcpy(blob + 40, mac, 32);
	CHECK_RC(ks_kwp_verify(root, hdr, blob), 0);

	/* Every header byte is bound: tenant id, key version, KEK id, alg. */
	for (i = 0; i < 48; i++) {
		hdr[i] ^= 0x01;
		CHECK_RC(ks_kwp_verify(root, hdr, blob), -EBADMSG);
		hdr[i] ^= 0x01;
	}
	for (i = 0; i < KS_KWP_BLOB_BYTES; i++) {
		blob[i] ^= 0x80;
		CHECK_RC(ks_kwp_verify(root, hdr, blob), -EBADMSG);
		blob[i] ^= 0x80;
	}
	/* Another root key (another tenant's, under the same header). */
	root[31] ^= 0x01;
	CHECK_RC(ks_kwp_verify(root, hdr, blob), -EBADMSG);
	root[31] ^= 0x01;
	CHECK_RC(ks_kwp_verify(root, hdr, blob), 0);

	/* [KS-ENV-3] an alg-3 file cut short or padded is still refused. */
	CHECK_RC(cf_ks_envelope_decode(&env, file, len - 1), -EPROTO);
	free(file), free(root), free(hdr), free(wrapped), free(mk), free(mac);
	free(tid);
	json_decref(v);
}

static const struct cf_test_case cases[] = {
	CF_TEST(decode_vector),
	CF_TEST(reject_malformed),
	CF_TEST(kwp_vector),
};

CF_TEST_MAIN(cases)
