/*
 * test_kdf.c - purpose subkeys and id-bound keys: known answers, and
 * distinct purposes, ids and roots giving distinct keys.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "cf_test.h"

static struct cf_secbuf *
secbuf_from(const unsigned char *b, size_t n)
{
	struct cf_secbuf *sb = NULL;

	if (cf_secbuf_new(&sb, n) == 0)
		memcpy(cf_secbuf_data(sb), b, n);
	return sb;
}

/* [KS-KDF-1] one context per purpose; values fixed by the vectors. */
static void
known_answers(void)
{
	json_error_t e;
	json_t *v = json_load_file(cf_test_vector_path("keystore-v1.json"), 0,
	    &e), *k, *d;
	unsigned char *root, *want, out[32];
	struct cf_secbuf *rsb, *sub;
	size_t len, wl;
	int p;

	CHECK(v != NULL);
	k = json_object_get(v, "kdf");
	root = cf_test_unhex(json_string_value(json_object_get(k, "root")),
	    &len);
	CHECK(root != NULL && len == 32);
	rsb = secbuf_from(root, 32);
	for (p = CF_KS_PURPOSE_FS_CONTENT; p <= CF_KS_PURPOSE_FS_META; p++) {
		char name[16];

		snprintf(name, sizeof(name), "purpose_%d", p);
		want = cf_test_unhex(json_string_value(json_object_get(k,
		    name)), &wl);
		CHECK(want != NULL && wl == 32);
		CHECK_RC(cf_ks_derive(&sub, rsb, (enum cf_ks_purpose)p), 0);
		CHECK(memcmp(cf_secbuf_cdata(sub), want, 32) == 0);
		cf_secbuf_free(sub);
		free(want);
	}
	d = json_object_get(v, "derive_id");
	{
		unsigned char *key, *id;
		size_t kl, il;
		struct cf_secbuf *ksb;

		key = cf_test_unhex(json_string_value(json_object_get(d,
		    "key")), &kl);
		id = cf_test_unhex(json_string_value(json_object_get(d, "id")),
		    &il);
		want = cf_test_unhex(json_string_value(json_object_get(d,
		    "out")), &wl);
		ksb = secbuf_from(key, kl);
		CHECK_RC(cf_ks_derive_id(out, ksb, json_string_value(
		    json_object_get(d, "label")), id, il), 0);
		CHECK(memcmp(out, want, 32) == 0);
		cf_secbuf_free(ksb);
		free(key), free(id), free(want);
	}
	cf_secbuf_free(rsb);
	free(root);
	json_decref(v);
}

static void
distinct(void)
{
	struct cf_secbuf *root, *a, *b, *root2, *c;
	unsigned char id1[16] = { 1 }, id2[16] = { 2 }, k1[32], k2[32];

	CHECK_RC(cf_secbuf_random(&root, 32), 0);
	CHECK_RC(cf_secbuf_random(&root2, 32), 0);
	CHECK_RC(cf_ks_derive(&a, root, CF_KS_PURPOSE_FS_CONTENT), 0);
	CHECK_RC(cf_ks_derive(&b, root, CF_KS_PURPOSE_BK_DATA), 0);
	CHECK_RC(cf_ks_derive(&c, root2, CF_KS_PURPOSE_FS_CONTENT), 0);
	CHECK(sodium_memcmp(cf_secbuf_cdata(a), cf_secbuf_cdata(b), 32) != 0);
	/* [KS-KDF-2] tenants' subkeys differ: no shared content key. */
	CHECK(sodium_memcmp(cf_secbuf_cdata(a), cf_secbuf_cdata(c), 32) != 0);
	CHECK_RC(cf_ks_derive_id(k1, a, "fs-file", id1, 16), 0);
	CHECK_RC(cf_ks_derive_id(k2, a, "fs-file", id2, 16), 0);
	CHECK(sodium_memcmp(k1, k2, 32) != 0);
	CHECK_RC(cf_ks_derive_id(k2, a, "fs-filf", id1, 16), 0);
	CHECK(sodium_memcmp(k1, k2, 32) != 0);
	cf_secbuf_free(b);
	CHECK_RC(cf_ks_derive(&b, root, (enum cf_ks_purpose)99), -EINVAL);
	CHECK(b == NULL);
	cf_secbuf_free(a);
	cf_secbuf_free(c);
	cf_secbuf_free(root);
	cf_secbuf_free(root2);
}

static void
clock_parse(void)
{
	time_t t;
	char buf[32];

	CHECK_RC(cf_ks_time_parse("2026-01-31", &t), 0);
	CHECK(t == 1769817600);
	CHECK_RC(cf_ks_time_parse("2026-01-31T12:00:00Z", &t), 0);
	CHECK(t == 1769817600 + 43200);
	cf_ks_time_format(t, buf, sizeof(buf));
	CHECK(strcmp(buf, "2026-01-31T12:00:00Z") == 0);
	CHECK_RC(cf_ks_time_parse("2026-02-30", &t), -EINVAL);
	CHECK_RC(cf_ks_time_parse("2026-1-31", &t), -EINVAL);
	CHECK_RC(cf_ks_time_parse("2026-01-31T12:00:00", &t), -EINVAL);
	CHECK_RC(cf_ks_time_parse("2026-01-31T25:00:00Z", &t), -EINVAL);
	CHECK_RC(cf_ks_time_parse("", &t), -EINVAL);
	setenv("COFFER_NOW", "2030-06-01T00:00:00Z", 1);
	CHECK(cf_ks_now() == 1906502400);
	unsetenv("COFFER_NOW");
	CHECK(cf_ks_now() > 1700000000);
}

static const struct cf_test_case cases[] = {
	CF_TEST(known_answers),
	CF_TEST(distinct),
	CF_TEST(clock_parse),
};

CF_TEST_MAIN(cases)
