/*
 * test_kmip_ttlv.c - the KMIP TTLV codec (keystore/kmip_ttlv.c) against
 * tests/vectors/kmip-v1.json: the requests the kmip provider sends are
 * byte-identical to the documented ones, the responses PyKMIP sent parse
 * to the documented fields, and every malformation the spec lists is
 * refused with -EPROTO (docs/format/kmip.md).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cf_test.h"
#include "kmip_ttlv.h"

static json_t *vec;

static unsigned char *
vhex(const char *name, size_t *len)
{
	if (vec == NULL) {
		json_error_t e;

		vec = json_load_file(cf_test_vector_path("kmip-v1.json"), 0,
		    &e);
		if (vec == NULL)
			return NULL;
	}
	return cf_test_unhex(json_string_value(json_object_get(vec, name)),
	    len);
}

static int
same(const unsigned char *a, size_t alen, const unsigned char *b,
    size_t blen)
{
	return alen == blen && memcmp(a, b, alen) == 0;
}

/* [KMIP-REQ-1] [KMIP-REQ-2] [KMIP-TTLV-1] request bytes as documented. */
static void
requests_match_vectors(void)
{
	unsigned char buf[1024], *want, *key, *iv, *aad, *ct, *tag;
	size_t len, wl, kl, il, al, cl, tl;

	key = vhex("key", &kl);
	iv = vhex("iv", &il);
	aad = vhex("aad", &al);
	ct = vhex("ciphertext", &cl);
	tag = vhex("tag", &tl);
	CHECK(key != NULL && kl == 32 && iv != NULL && il == 12 &&
	    aad != NULL && al == 48 && ct != NULL && cl == 32 &&
	    tag != NULL && tl == 16);

	want = vhex("create_request", &wl);
	CHECK_RC(kmip_req_create(buf, sizeof(buf), &len), 0);
	CHECK(same(buf, len, want, wl));
	free(want);
	want = vhex("activate_request", &wl);
	CHECK_RC(kmip_req_activate(buf, sizeof(buf), "1", &len), 0);
	CHECK(same(buf, len, want, wl));
	free(want);
	want = vhex("encrypt_request", &wl);
	CHECK_RC(kmip_req_encrypt(buf, sizeof(buf), "1", key, iv, aad, al,
	    &len), 0);
	CHECK(len == 296 && same(buf, len, want, wl));
	free(want);
	want = vhex("decrypt_request", &wl);
	CHECK_RC(kmip_req_decrypt(buf, sizeof(buf), "1", ct, iv, aad, al, tag,
	    &len), 0);
	CHECK(len == 320 && same(buf, len, want, wl));
	/* Every request decodes with our own decoder. */
	{
		static struct kmip_msg m;

		CHECK_RC(kmip_decode(buf, len, &m), 0);
		CHECK(m.item[0].tag == KMIP_TAG_REQUEST_MESSAGE);
	}
	free(want);
	free(key);
	free(iv);
	free(aad);
	free(ct);
	free(tag);
}

/* [KMIP-TTLV-1] a buffer one byte short of any request is -ENOSPC. */
static void
encoder_bounds(void)
{
	unsigned char buf[512], key[32] = { 0 }, iv[12] = { 0 }, tag[16] = { 0 };
	struct kmip_enc e;
	size_t len, full, cap;

	CHECK_RC(kmip_req_decrypt(buf, sizeof(buf), "1", key, iv, key, 32, tag,
	    &full), 0);
	for (cap = 0; cap < full; cap++) {
		len = 1;
		CHECK_RC(kmip_req_decrypt(buf, cap, "1", key, iv, key, 32, tag,
		    &len), -ENOSPC);
		CHECK(len == 0);
	}
	kmip_enc_init(&e, buf, sizeof(buf));
	kmip_enc_begin(&e, KMIP_TAG_REQUEST_MESSAGE);
	CHECK_RC(kmip_enc_finish(&e, &len), -EINVAL);	/* left open */
	kmip_enc_init(&e, buf, sizeof(buf));
	kmip_enc_end(&e);
	CHECK_RC(kmip_enc_finish(&e, &len), -EINVAL);	/* closed twice */
	kmip_enc_init(&e, buf, sizeof(buf));
	for (cap = 0; cap <= KMIP_DEPTH_MAX; cap++)
		kmip_enc_begin(&e, KMIP_TAG_ATTRIBUTE);
	CHECK_RC(kmip_enc_finish(&e, &len), -EINVAL);	/* too deep */
}

/* [KMIP-RSP-1] [KMIP-RSP-2] the PyKMIP responses parse as documented. */
static void
responses_parse(void)
{
	static struct kmip_msg m;
	struct kmip_result r;
	const unsigned char *p;
	unsigned char *buf, *ct, *tag, *key;
	size_t len, n, cl, tl, kl;
	int idx;

	ct = vhex("ciphertext", &cl);
	tag = vhex("tag", &tl);
	key = vhex("key", &kl);
	CHECK(ct != NULL && tag != NULL && key != NULL);

	buf = vhex("encrypt_response", &len);
	CHECK(buf != NULL);
	CHECK_RC(kmip_frame_len(buf, &n), 0);
	CHECK(n == len);
	CHECK_RC(kmip_decode(buf, len, &m), 0);
	CHECK_RC(kmip_result_get(&m, KMIP_OP_ENCRYPT, &r), 0);
	CHECK(r.status == KMIP_STATUS_SUCCESS && r.payload > 0);
	idx = kmip_child(&m, r.payload, KMIP_TAG_UNIQUE_IDENTIFIER, -1);
	CHECK_RC(kmip_get_bytes(&m, idx, KMIP_T_TEXT, &p, &n), 0);
	CHECK(n == 1 && p[0] == '1');
	idx = kmip_child(&m, r.payload, KMIP_TAG_DATA, -1);
	CHECK_RC(kmip_get_bytes(&m, idx, KMIP_T_BYTES, &p, &n), 0);
	CHECK(same(p, n, ct, cl));
	idx = kmip_child(&m, r.payload, KMIP_TAG_AUTH_TAG, -1);
	CHECK_RC(kmip_get_bytes(&m, idx, KMIP_T_BYTES, &p, &n), 0);
	CHECK(same(p, n, tag, tl));
	/* Wrong type asked for: refused, not reinterpreted. */
	CHECK_RC(kmip_get_bytes(&m, idx, KMIP_T_TEXT, &p, &n), -EPROTO);
	/* A response to Encrypt is not a response to Decrypt. */
	CHECK_RC(kmip_result_get(&m, KMIP_OP_DECRYPT, &r), -EPROTO);
	free(buf);

	buf = vhex("decrypt_response", &len);
	CHECK(buf != NULL);
	CHECK_RC(kmip_decode(buf, len, &m), 0);
	CHECK_RC(kmip_result_get(&m, KMIP_OP_DECRYPT, &r), 0);
	idx = kmip_child(&m, r.payload, KMIP_TAG_DATA, -1);
	CHECK_RC(kmip_get_bytes(&m, idx, KMIP_T_BYTES, &p, &n), 0);
	CHECK(same(p, n, key, kl));
	free(buf);

	buf = vhex("decrypt_failure_response", &len);
	CHECK(buf != NULL);
	CHECK_RC(kmip_decode(buf, len, &m), 0);
	CHECK_RC(kmip_result_get(&m, KMIP_OP_DECRYPT, &r), 0);
	CHECK(r.status == KMIP_STATUS_FAILED && r.reason == 0x100 &&
	    r.payload < 0);
	CHECK(strcmp(r.message, json_string_value(json_object_get(vec,
	    "failure_message"))) == 0);
	free(buf);
	free(ct);
	free(tag);
	free(key);
}

/* [KMIP-TTLV-2..6] truncations, trailing bytes and bad fields: -EPROTO. */
static void
malformed_rejected(void)
{
	static struct kmip_msg m;
	static unsigned char b[KMIP_MSG_MAX + 16];
	unsigned char *buf;
	size_t len, i, n;

	buf = vhex("decrypt_response", &len);
	CHECK(buf != NULL && len == 192);
	/* Every truncation. */
	for (i = 0; i < len; i++)
		CHECK_RC(kmip_decode(buf, i, &m), -EPROTO);
	/* Trailing bytes, even zeros. */
	memcpy(b, buf, len);
	memset(b + len, 0, 8);
	CHECK_RC(kmip_decode(b, len + 8, &m), -EPROTO);
	/* Root length that disagrees with the message. */
	memcpy(b, buf, len);
	b[7] = (unsigned char)(b[7] + 8);
	CHECK_RC(kmip_decode(b, len, &m), -EPROTO);
	/* Non-zero padding after the 1-byte unique identifier "1". */
	memcpy(b, buf, len);
	for (i = 0; i + 9 < len; i++)
		if (memcmp(b + i, "\x42\x00\x94\x07\x00\x00\x00\x01", 8) == 0)
			break;
	CHECK(i + 9 < len);
	b[i + 9] = 1;
	CHECK_RC(kmip_decode(b, len, &m), -EPROTO);
	/* An Integer whose length is not 4. */
	memcpy(b, buf, len);
	CHECK(memcmp(b + 16, "\x42\x00\x69\x01", 4) == 0);
	b[24 + 7] = 8;	/* ProtocolVersionMajor: len 4 -> 8 */
	CHECK_RC(kmip_decode(b, len, &m), -EPROTO);
	/* An unknown type. */
	memcpy(b, buf, len);
	b[24 + 3] = 0x0b;
	CHECK_RC(kmip_decode(b, len, &m), -EPROTO);
	/* A tag outside 42xxxx / 54xxxx. */
	memcpy(b, buf, len);
	b[24] = 0x43;
	CHECK_RC(kmip_decode(b, len, &m), -EPROTO);
	/* A child longer than its structure. */
	memcpy(b, buf, len);
	b[16 + 7] = 0x28;	/* ProtocolVersion: 32 -> 40 */
	CHECK_RC(kmip_decode(b, len, &m), -EPROTO);
	/* A huge length does not overflow. */
	memcpy(b, buf, len);
	memset(b + 16 + 4, 0xff, 4);
	CHECK_RC(kmip_decode(b, len, &m), -EPROTO);
	free(buf);

	/* A Boolean other than 0 or 1. */
	memcpy(b, "\x42\x00\x01\x01\x00\x00\x00\x10"
	    "\x42\x00\x02\x06\x00\x00\x00\x08"
	    "\x00\x00\x00\x00\x00\x00\x00\x02", 24);
	CHECK_RC(kmip_decode(b, 24, &m), -EPROTO);
	b[23] = 1;
	CHECK_RC(kmip_decode(b, 24, &m), 0);
	/* Root must be a structure. */
	CHECK_RC(kmip_decode(b + 8, 16, &m), -EPROTO);

	/* [KMIP-TTLV-6] nesting deeper than KMIP_DEPTH_MAX. */
	n = KMIP_DEPTH_MAX + 1;
	for (i = 0; i < n; i++) {
		memcpy(b + 8 * i, "\x42\x00\x01\x01", 4);
		b[8 * i + 4] = 0;
		b[8 * i + 5] = 0;
		b[8 * i + 6] = 0;
		b[8 * i + 7] = (unsigned char)(8 * (n - 1 - i));
	}
	CHECK_RC(kmip_decode(b, 8 * n, &m), -EPROTO);
	CHECK_RC(kmip_decode(b + 8, 8 * (n - 1), &m), 0);

	/* More than KMIP_ITEMS_MAX items. */
	n = KMIP_ITEMS_MAX;	/* root + n children = one too many */
	memcpy(b, "\x42\x00\x01\x01", 4);
	b[4] = (unsigned char)((16 * n) >> 24);
	b[5] = (unsigned char)((16 * n) >> 16);
	b[6] = (unsigned char)((16 * n) >> 8);
	b[7] = (unsigned char)(16 * n);
	for (i = 0; i < n; i++)
		memcpy(b + 8 + 16 * i, "\x42\x00\x0d\x02\x00\x00\x00\x04"
		    "\x00\x00\x00\x01\x00\x00\x00\x00", 16);
	CHECK_RC(kmip_decode(b, 8 + 16 * n, &m), -EPROTO);
	b[7] = (unsigned char)(16 * (n - 1));
	b[6] = (unsigned char)((16 * (n - 1)) >> 8);
	CHECK_RC(kmip_decode(b, 8 + 16 * (n - 1), &m), 0);

	/* [KMIP-TTLV-5] framing: over the limit, or not a structure. */
	memcpy(b, "\x42\x00\x7b\x01\x00\x00\x40\x00", 8);
	CHECK_RC(kmip_frame_len(b, &n), -EPROTO);
	memcpy(b, "\x42\x00\x7b\x01\x00\x00\x3f\xf8", 8);
	CHECK_RC(kmip_frame_len(b, &n), 0);
	CHECK(n == KMIP_MSG_MAX);
	b[3] = KMIP_T_INT;
	CHECK_RC(kmip_frame_len(b, &n), -EPROTO);
	CHECK_RC(kmip_decode(b, KMIP_MSG_MAX + 8, &m), -EPROTO);
}

/* [KMIP-BLOB-3] KEK id of unique identifier "1"; [KMIP-BLOB-1] layout. */
static void
kek_id_and_blob(void)
{
	unsigned char id[16], *want, *blob, *iv, *ct, *tag;
	size_t wl, bl, il, cl, tl;

	want = vhex("kek_id", &wl);
	CHECK(want != NULL && wl == 16);
	kmip_kek_id(id, "1");
	CHECK(memcmp(id, want, 16) == 0);
	kmip_kek_id(id, "2");
	CHECK(memcmp(id, want, 16) != 0);
	blob = vhex("blob", &bl);
	iv = vhex("iv", &il);
	ct = vhex("ciphertext", &cl);
	tag = vhex("tag", &tl);
	CHECK(blob != NULL && bl == 62 && blob[0] == 1 && blob[1] == '1');
	CHECK(memcmp(blob + 2, iv, 12) == 0 && memcmp(blob + 14, ct, 32) == 0 &&
	    memcmp(blob + 46, tag, 16) == 0);
	free(want);
	free(blob);
	free(iv);
	free(ct);
	free(tag);
}

static const struct cf_test_case cases[] = {
	CF_TEST(requests_match_vectors),
	CF_TEST(encoder_bounds),
	CF_TEST(responses_parse),
	CF_TEST(malformed_rejected),
	CF_TEST(kek_id_and_blob),
};

CF_TEST_MAIN(cases)
