/*
 * test_envelope.c - the wrapped-key file decoder and encoder: the vector
 * decodes to the documented fields, round-trips byte for byte, and every
 * malformation (truncation at each length, trailing bytes, bad magic,
 * version, algorithm, reserved byte, lengths) is refused with -EPROTO.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cf_test.h"

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
	MUTATE(10, 3);
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

static const struct cf_test_case cases[] = {
	CF_TEST(decode_vector),
	CF_TEST(reject_malformed),
};

CF_TEST_MAIN(cases)
