/*
 * test_aead.c - the AEAD wrapper: known answers from tests/vectors, round
 * trips, and every kind of tampering failing with -EBADMSG.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "cf_test.h"
#include "ks_int.h"

static json_t *
vectors(void)
{
	json_error_t e;

	return json_load_file(cf_test_vector_path("keystore-v1.json"), 0, &e);
}

static unsigned char *
vhex(json_t *o, const char *k, size_t *len)
{
	return cf_test_unhex(json_string_value(json_object_get(o, k)), len);
}

/* [KS-AEAD-1] both ciphers match libsodium's output byte for byte. */
static void
known_answers(void)
{
	json_t *v = vectors(), *arr, *o;
	size_t i, checked = 0;

	CHECK(v != NULL);
	arr = json_object_get(v, "aead");
	json_array_foreach(arr, i, o) {
		enum cf_ks_cipher c;
		struct cf_ks_aead *a;
		unsigned char *key, *nonce, *ad, *pt, *ct, out[256];
		size_t kl, nl, al, pl, cl;

		CHECK_RC(cf_ks_cipher_parse(json_string_value(
		    json_object_get(o, "cipher")), &c), 0);
		if (!cf_ks_cipher_available(c))
			continue;
		key = vhex(o, "key", &kl);
		nonce = vhex(o, "nonce", &nl);
		ad = vhex(o, "ad", &al);
		pt = vhex(o, "plaintext", &pl);
		ct = vhex(o, "ciphertext", &cl);
		CHECK(kl == 32 && nl == cf_ks_cipher_nonce_bytes(c));
		CHECK_RC(cf_ks_aead_new(&a, c, key), 0);
		CHECK_RC(cf_ks_aead_seal(a, out, pt, pl, ad, al, nonce), 0);
		CHECK(cl == pl + CF_KS_TAG_BYTES);
		CHECK(memcmp(out, ct, cl) == 0);
		CHECK_RC(cf_ks_aead_open(a, out, ct, cl, ad, al, nonce), 0);
		CHECK(memcmp(out, pt, pl) == 0);
		cf_ks_aead_free(a);
		free(key), free(nonce), free(ad), free(pt), free(ct);
		checked++;
	}
	CHECK(checked >= 1);
	json_decref(v);
}

static void
tamper_one(enum cf_ks_cipher c)
{
	unsigned char key[32], nonce[24], m[100], ct[116], out[100], bad[116];
	const unsigned char ad[] = "file-id||block";
	struct cf_ks_aead *a;
	size_t i;

	randombytes_buf(key, sizeof(key));
	randombytes_buf(nonce, sizeof(nonce));
	randombytes_buf(m, sizeof(m));
	CHECK_RC(cf_ks_aead_new(&a, c, key), 0);
	CHECK_RC(cf_ks_aead_seal(a, ct, m, sizeof(m), ad, sizeof(ad), nonce),
	    0);
	/* [KS-AEAD-2] any flipped ciphertext or tag bit is rejected. */
	for (i = 0; i < sizeof(ct); i += 7) {
		memcpy(bad, ct, sizeof(ct));
		bad[i] ^= 0x01;
		memset(out, 0xaa, sizeof(out));
		CHECK_RC(cf_ks_aead_open(a, out, bad, sizeof(bad), ad,
		    sizeof(ad), nonce), -EBADMSG);
		/* Nothing of a forged message is released. */
		CHECK(sodium_is_zero(out, sizeof(out)));
	}
	/* [KS-AEAD-3] wrong AAD (block moved), wrong nonce, truncation. */
	CHECK_RC(cf_ks_aead_open(a, out, ct, sizeof(ct), ad, sizeof(ad) - 1,
	    nonce), -EBADMSG);
	nonce[0] ^= 1;
	CHECK_RC(cf_ks_aead_open(a, out, ct, sizeof(ct), ad, sizeof(ad),
	    nonce), -EBADMSG);
	nonce[0] ^= 1;
	CHECK_RC(cf_ks_aead_open(a, out, ct, sizeof(ct) - 1, ad, sizeof(ad),
	    nonce), -EBADMSG);
	CHECK_RC(cf_ks_aead_open(a, out, ct, 15, ad, sizeof(ad), nonce),
	    -EINVAL);
	CHECK_RC(cf_ks_aead_open(a, out, ct, sizeof(ct), ad, sizeof(ad),
	    nonce), 0);
	CHECK(memcmp(out, m, sizeof(m)) == 0);
	cf_ks_aead_free(a);
	/* [KS-AEAD-4] another key (another tenant) cannot open it. */
	key[5] ^= 0x80;
	CHECK_RC(cf_ks_aead_new(&a, c, key), 0);
	CHECK_RC(cf_ks_aead_open(a, out, ct, sizeof(ct), ad, sizeof(ad),
	    nonce), -EBADMSG);
	cf_ks_aead_free(a);
}

static void
tamper_xchacha(void)
{
	tamper_one(CF_KS_CIPHER_XCHACHA20POLY1305);
}

static void
tamper_aes(void)
{
	if (!cf_ks_cipher_available(CF_KS_CIPHER_AES256GCM))
		return;
	tamper_one(CF_KS_CIPHER_AES256GCM);
}

static void
in_place_and_empty(void)
{
	unsigned char key[32] = { 1 }, nonce[24] = { 2 }, buf[64 + 16];
	unsigned char copy[64], tag[16];
	struct cf_ks_aead *a;

	randombytes_buf(buf, 64);
	memcpy(copy, buf, 64);
	CHECK_RC(cf_ks_aead_new(&a, CF_KS_CIPHER_XCHACHA20POLY1305, key), 0);
	CHECK_RC(cf_ks_aead_seal(a, buf, buf, 64, NULL, 0, nonce), 0);
	CHECK(memcmp(buf, copy, 64) != 0);
	CHECK_RC(cf_ks_aead_open(a, buf, buf, 80, NULL, 0, nonce), 0);
	CHECK(memcmp(buf, copy, 64) == 0);
	/* An empty message still carries an authenticating tag. */
	CHECK_RC(cf_ks_aead_seal(a, tag, NULL, 0, NULL, 0, nonce), 0);
	CHECK_RC(cf_ks_aead_open(a, buf, tag, 16, NULL, 0, nonce), 0);
	tag[15] ^= 1;
	CHECK_RC(cf_ks_aead_open(a, buf, tag, 16, NULL, 0, nonce), -EBADMSG);
	cf_ks_aead_free(a);
}

static void
cipher_names(void)
{
	enum cf_ks_cipher c;

	CHECK_RC(cf_ks_cipher_parse("aes-256-gcm", &c), 0);
	CHECK(c == CF_KS_CIPHER_AES256GCM);
	CHECK_RC(cf_ks_cipher_parse("xchacha20-poly1305", &c), 0);
	CHECK(c == CF_KS_CIPHER_XCHACHA20POLY1305);
	CHECK_RC(cf_ks_cipher_parse("AES-256-GCM", &c), -EINVAL);
	CHECK_RC(cf_ks_cipher_parse("rot13", &c), -EINVAL);
	CHECK(strstr(cf_ks_last_error(), "rot13") != NULL);
	CHECK(cf_ks_cipher_name(CF_KS_CIPHER_NONE) == NULL);
	CHECK(cf_ks_cipher_nonce_bytes(CF_KS_CIPHER_AES256GCM) == 12);
	CHECK(cf_ks_cipher_nonce_bytes(CF_KS_CIPHER_XCHACHA20POLY1305) == 24);
	CHECK(cf_ks_cipher_available(cf_ks_cipher_default()));
}

/*
 * cf_ks_aead_rekey: the context then seals and opens exactly as a new
 * one of the new key (the known answers through a context first keyed
 * otherwise), and the old key's ciphertext no longer opens.  AES both
 * ways: OpenSSL's pool (no libsodium state) and libsodium's state (as
 * without OpenSSL's cipher).
 */
static void
rekey(void)
{
	json_t *v = vectors(), *arr, *o;
	size_t i, checked = 0;
	int evp;

	CHECK(v != NULL);
	arr = json_object_get(v, "aead");
	json_array_foreach(arr, i, o) {
		enum cf_ks_cipher c;
		struct cf_ks_aead *a;
		unsigned char *key, *nonce, *ad, *pt, *ct, out[256], old[32];
		unsigned char oct[256];
		size_t kl, nl, al, pl, cl;

		CHECK_RC(cf_ks_cipher_parse(json_string_value(
		    json_object_get(o, "cipher")), &c), 0);
		if (!cf_ks_cipher_available(c))
			continue;
		key = vhex(o, "key", &kl);
		nonce = vhex(o, "nonce", &nl);
		ad = vhex(o, "ad", &al);
		pt = vhex(o, "plaintext", &pl);
		ct = vhex(o, "ciphertext", &cl);
		CHECK(kl == 32 && cl <= sizeof(out));
		memset(old, 0x5a, sizeof(old));
		for (evp = 1; evp >= 0; evp--) {
			CHECK_RC(ks_aead_new(&a, c, old, evp), 0);
			CHECK_RC(cf_ks_aead_seal(a, oct, pt, pl, ad, al,
			    nonce), 0);
			cf_ks_aead_rekey(a, key);
			CHECK_RC(cf_ks_aead_seal(a, out, pt, pl, ad, al,
			    nonce), 0);
			CHECK(memcmp(out, ct, cl) == 0);
			CHECK_RC(cf_ks_aead_open(a, out, ct, cl, ad, al,
			    nonce), 0);
			CHECK(memcmp(out, pt, pl) == 0);
			CHECK_RC(cf_ks_aead_open(a, out, oct, cl, ad, al,
			    nonce), -EBADMSG);
			/* Twice: from the second on, the memory is writable. */
			cf_ks_aead_rekey(a, old);
			CHECK_RC(cf_ks_aead_open(a, out, oct, cl, ad, al,
			    nonce), 0);
			cf_ks_aead_free(a);
			checked++;
		}
		free(key), free(nonce), free(ad), free(pt), free(ct);
	}
	CHECK(checked > 0);
	json_decref(v);
}

/*
 * [KS-AEAD-1] AES-256-GCM goes through OpenSSL (ks_aead.c): its seal must
 * be libsodium's byte for byte, and each must open the other's, on every
 * length 0-300, across the 16-byte block and at 4 KiB and 1 MiB sizes,
 * with and without associated data, in place and not; a flipped bit in
 * either library's ciphertext must fail with the output zeroed.  Both
 * ways a context computes AES: OpenSSL's pool, and libsodium's state
 * (ks_aead_new without EVP, as where OpenSSL has no AES-256-GCM).
 */
static void
aes_libraries_with(int evp)
{
	static const size_t big[] = { 4095, 4096, 4097, 65541, 1048576 };
	size_t n, i, len, bad = 0, runs = 0;
	unsigned char key[32], nonce[12], ad[40], *m, *c1, *c2, *o;
	unsigned long long cl;
	struct cf_ks_aead *a;

	if (!cf_ks_cipher_available(CF_KS_CIPHER_AES256GCM))
		return;
	m = malloc(1048576 + 16);
	c1 = malloc(1048576 + 16);
	c2 = malloc(1048576 + 16);
	o = malloc(1048576 + 16);
	CHECK(m != NULL && c1 != NULL && c2 != NULL && o != NULL);
	randombytes_buf(key, sizeof(key));
	CHECK_RC(ks_aead_new(&a, CF_KS_CIPHER_AES256GCM, key, evp), 0);
	for (n = 0; n < 301 + sizeof(big) / sizeof(big[0]); n++) {
		size_t al = n % (sizeof(ad) + 1);

		len = n <= 300 ? n : big[n - 301];
		randombytes_buf(m, len);
		randombytes_buf(nonce, sizeof(nonce));
		randombytes_buf(ad, sizeof(ad));
		CHECK_RC(cf_ks_aead_seal(a, c1, m, len, ad, al, nonce), 0);
		crypto_aead_aes256gcm_encrypt(c2, &cl, m, len, ad, al, NULL,
		    nonce, key);
		bad += cl != len + 16 || memcmp(c1, c2, len + 16) != 0;
		/* each opens the other's */
		bad += crypto_aead_aes256gcm_decrypt(o, NULL, NULL, c1,
		    len + 16, ad, al, nonce, key) != 0 ||
		    memcmp(o, m, len) != 0;
		bad += cf_ks_aead_open(a, o, c2, len + 16, ad, al, nonce) != 0 ||
		    memcmp(o, m, len) != 0;
		/* in place */
		memcpy(o, m, len);
		CHECK_RC(cf_ks_aead_seal(a, o, o, len, ad, al, nonce), 0);
		bad += memcmp(o, c2, len + 16) != 0;
		bad += cf_ks_aead_open(a, o, o, len + 16, ad, al, nonce) != 0 ||
		    memcmp(o, m, len) != 0;
		/* a flipped bit: refused, nothing left in the output */
		if (len > 0) {
			c1[len / 2] ^= 0x10;
			memset(o, 0xee, len);
			bad += cf_ks_aead_open(a, o, c1, len + 16, ad, al,
			    nonce) != -EBADMSG;
			for (i = 0; i < len; i++)
				bad += o[i] != 0;
		}
		runs++;
	}
	CHECK(runs == 306);
	CHECK(bad == 0);
	cf_ks_aead_free(a);
	free(m), free(c1), free(c2), free(o);
}

static void
aes_libraries(void)
{
	aes_libraries_with(1);
	aes_libraries_with(0);
}

/*
 * One context shared by four threads (as fs/'s helper shares a file's):
 * each seal equals libsodium's under the same nonce, each open succeeds.
 * Run under ThreadSanitizer too (suite threads).
 */
struct share {
	struct cf_ks_aead *a;
	unsigned char key[32];
	int seed;
	size_t bad;
};

static void *
share_main(void *arg)
{
	struct share *sh = arg;
	unsigned char m[4096], c1[4096 + 16], c2[4096 + 16], o[4096];
	unsigned char nonce[12] = { 0 };
	unsigned long long cl;
	int i;

	for (i = 0; i < 2000; i++) {
		size_t len = (size_t)(i * 37 + sh->seed) % sizeof(m);

		memset(m, i + sh->seed, len);
		memcpy(nonce, &i, sizeof(i));
		nonce[8] = (unsigned char)sh->seed;
		if (cf_ks_aead_seal(sh->a, c1, m, len, nonce, 12, nonce) != 0)
			sh->bad++;
		crypto_aead_aes256gcm_encrypt(c2, &cl, m, len, nonce, 12, NULL,
		    nonce, sh->key);
		if (memcmp(c1, c2, len + 16) != 0)
			sh->bad++;
		if (cf_ks_aead_open(sh->a, o, c1, len + 16, nonce, 12,
		    nonce) != 0 || memcmp(o, m, len) != 0)
			sh->bad++;
	}
	return NULL;
}

static void
aes_shared(void)
{
	struct share sh[4];
	pthread_t th[4];
	struct cf_ks_aead *a;
	unsigned char key[32];
	int i;

	if (!cf_ks_cipher_available(CF_KS_CIPHER_AES256GCM))
		return;
	randombytes_buf(key, sizeof(key));
	CHECK_RC(cf_ks_aead_new(&a, CF_KS_CIPHER_AES256GCM, key), 0);
	for (i = 0; i < 4; i++) {
		sh[i].a = a;
		memcpy(sh[i].key, key, sizeof(key));
		sh[i].seed = i + 1;
		sh[i].bad = 0;
		CHECK(pthread_create(&th[i], NULL, share_main, &sh[i]) == 0);
	}
	for (i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	cf_ks_aead_free(a);
	for (i = 0; i < 4; i++)
		CHECK(sh[i].bad == 0);
}

/* VmLck of this process in kB, or -1. */
static long
locked_kb(void)
{
	char line[128];
	long kb = -1;
	FILE *f;

	f = fopen("/proc/self/status", "re");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "VmLck: %ld", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/*
 * With OpenSSL's cipher an AES context makes one locked allocation (its
 * key), not libsodium's state beside it (fs/ makes a context per file
 * open); libsodium's way makes two.  Counted in locked pages, where a
 * cf_secbuf locks any: ASan and TSan make mlock a no-op, and a low
 * RLIMIT_MEMLOCK makes it fail quietly.
 */
static void
aes_locked(void)
{
	struct cf_ks_aead *a[4];
	struct cf_secbuf *sb;
	unsigned char key[32] = { 7 };
	long base, one, evp, sodium;
	size_t i;

	if (!cf_ks_cipher_available(CF_KS_CIPHER_AES256GCM))
		return;
	base = locked_kb();
	CHECK_RC(cf_secbuf_new(&sb, 32), 0);
	one = locked_kb() - base;
	cf_secbuf_free(sb);
	if (base < 0 || one <= 0) {
		printf("# mlock has no effect here: skipped\n");
		return;
	}
	base = locked_kb();
	for (i = 0; i < 4; i++)
		CHECK_RC(cf_ks_aead_new(&a[i], CF_KS_CIPHER_AES256GCM, key), 0);
	evp = locked_kb() - base;
	for (i = 0; i < 4; i++)
		cf_ks_aead_free(a[i]);
	base = locked_kb();
	for (i = 0; i < 4; i++)
		CHECK_RC(ks_aead_new(&a[i], CF_KS_CIPHER_AES256GCM, key, 0), 0);
	sodium = locked_kb() - base;
	for (i = 0; i < 4; i++)
		cf_ks_aead_free(a[i]);
	CHECK(evp == 4 * one);
	CHECK(sodium == 8 * one);
}

static const struct cf_test_case cases[] = {
	CF_TEST(known_answers),
	CF_TEST(tamper_xchacha),
	CF_TEST(tamper_aes),
	CF_TEST(in_place_and_empty),
	CF_TEST(cipher_names),
	CF_TEST(rekey),
	CF_TEST(aes_libraries),
	CF_TEST(aes_shared),
	CF_TEST(aes_locked),
};

CF_TEST_MAIN(cases)
