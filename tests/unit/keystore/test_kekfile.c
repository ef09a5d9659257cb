/*
 * test_kekfile.c - the file KMS's sealed KEK: the vector opens with its
 * passphrase, wrong passphrases and altered bytes fail with -EBADMSG,
 * malformed or extravagant parameters with -EPROTO before any hashing.
 */
#include <sys/resource.h>
#include <sys/wait.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "cf_test.h"
#include "ks_int.h"

struct kv {
	json_t *root;
	unsigned char *file, *kek, *id;
	size_t flen;
	const char *pass;
};

static int
load(struct kv *kv)
{
	json_error_t e;
	json_t *k;
	size_t l1, l2;

	kv->root = json_load_file(cf_test_vector_path("keystore-v1.json"), 0,
	    &e);
	if (kv->root == NULL)
		return -1;
	k = json_object_get(kv->root, "kek_file");
	kv->pass = json_string_value(json_object_get(k, "passphrase"));
	kv->file = cf_test_unhex(json_string_value(json_object_get(k, "file")),
	    &kv->flen);
	kv->kek = cf_test_unhex(json_string_value(json_object_get(k, "kek")),
	    &l1);
	kv->id = cf_test_unhex(json_string_value(json_object_get(k, "kek_id")),
	    &l2);
	return kv->file && kv->kek && kv->id && l1 == 32 && l2 == 16 ? 0 : -1;
}

static void
unload(struct kv *kv)
{
	free(kv->file), free(kv->kek), free(kv->id);
	json_decref(kv->root);
}

/* [KS-KEK-1] Argon2id + XChaCha20-Poly1305 exactly as specified. */
static void
open_vector(void)
{
	struct kv kv;
	struct cf_secbuf *kek;
	unsigned char id[16];

	CHECK_RC(load(&kv), 0);
	CHECK(kv.flen == KS_KK_BYTES);
	CHECK_RC(cf_ks_kekfile_open(kv.file, kv.flen, kv.pass,
	    strlen(kv.pass), id, &kek), 0);
	CHECK(memcmp(cf_secbuf_cdata(kek), kv.kek, 32) == 0);
	CHECK(memcmp(id, kv.id, 16) == 0);
	cf_secbuf_free(kek);
	/* [KS-KEK-2] a wrong passphrase is an authentication failure. */
	CHECK_RC(cf_ks_kekfile_open(kv.file, kv.flen, "Correct horse battery "
	    "staple", 28, id, &kek), -EBADMSG);
	CHECK(kek == NULL);
	unload(&kv);
}

static void
tampered(void)
{
	struct kv kv;
	struct cf_secbuf *kek;
	unsigned char bad[KS_KK_BYTES], id[16];
	size_t i;

	CHECK_RC(load(&kv), 0);
	/* [KS-KEK-3] salt, id, nonce, ciphertext and tag are authenticated. */
	for (i = 24; i < KS_KK_BYTES; i += 5) {
		memcpy(bad, kv.file, KS_KK_BYTES);
		bad[i] ^= 0x10;
		CHECK_RC(cf_ks_kekfile_open(bad, KS_KK_BYTES, kv.pass,
		    strlen(kv.pass), id, &kek), -EBADMSG);
	}
	for (i = 0; i < KS_KK_BYTES; i += 9)
		CHECK_RC(cf_ks_kekfile_open(kv.file, i, kv.pass,
		    strlen(kv.pass), id, &kek), -EPROTO);
	unload(&kv);
}

static void
hostile_parameters(void)
{
	struct kv kv;
	struct cf_secbuf *kek;
	unsigned char bad[KS_KK_BYTES], id[16];

	CHECK_RC(load(&kv), 0);
	/* [KS-KEK-4] costs outside the documented bounds are refused
	 * before Argon2id runs: 17 passes, 4 GiB + 1 KiB, unaligned. */
	memcpy(bad, kv.file, KS_KK_BYTES);
	bad[12] = 17;
	CHECK_RC(cf_ks_kekfile_open(bad, KS_KK_BYTES, kv.pass,
	    strlen(kv.pass), id, &kek), -EPROTO);
	memcpy(bad, kv.file, KS_KK_BYTES);
	bad[12] = 0;
	CHECK_RC(cf_ks_kekfile_open(bad, KS_KK_BYTES, kv.pass,
	    strlen(kv.pass), id, &kek), -EPROTO);
	memcpy(bad, kv.file, KS_KK_BYTES);
	memset(bad + 16, 0, 8);
	bad[17] = 0x04;
	bad[20] = 0x01;		/* 2^32 + 1024 */
	CHECK_RC(cf_ks_kekfile_open(bad, KS_KK_BYTES, kv.pass,
	    strlen(kv.pass), id, &kek), -EPROTO);
	memcpy(bad, kv.file, KS_KK_BYTES);
	bad[16] = 0x01;		/* 8193 bytes */
	CHECK_RC(cf_ks_kekfile_open(bad, KS_KK_BYTES, kv.pass,
	    strlen(kv.pass), id, &kek), -EPROTO);
	memcpy(bad, kv.file, KS_KK_BYTES);
	bad[8] = 2;
	CHECK_RC(cf_ks_kekfile_open(bad, KS_KK_BYTES, kv.pass,
	    strlen(kv.pass), id, &kek), -EPROTO);
	memcpy(bad, kv.file, KS_KK_BYTES);
	bad[10] = 2;
	CHECK_RC(cf_ks_kekfile_open(bad, KS_KK_BYTES, kv.pass,
	    strlen(kv.pass), id, &kek), -EPROTO);
	unload(&kv);
}

static void
seal_round_trip(void)
{
	struct cf_secbuf *kek, *back;
	unsigned char img[KS_KK_BYTES], img2[KS_KK_BYTES], id[16], gid[16];

	randombytes_buf(id, sizeof(id));
	CHECK_RC(cf_secbuf_random(&kek, 32), 0);
	CHECK_RC(ks_kekfile_seal(img, "pw", 2, 1, 8192, id, kek), 0);
	CHECK_RC(ks_kekfile_seal(img2, "pw", 2, 1, 8192, id, kek), 0);
	/* Fresh salt and nonce every time. */
	CHECK(memcmp(img + 24, img2 + 24, 16) != 0);
	CHECK(memcmp(img + 56, img2 + 56, 24) != 0);
	CHECK_RC(cf_ks_kekfile_open(img, sizeof(img), "pw", 2, gid, &back), 0);
	CHECK(sodium_memcmp(cf_secbuf_cdata(back), cf_secbuf_cdata(kek), 32)
	    == 0);
	CHECK(memcmp(gid, id, 16) == 0);
	CHECK_RC(ks_kekfile_seal(img, "pw", 2, 0, 8192, id, kek), -EINVAL);
	cf_secbuf_free(back);
	cf_secbuf_free(kek);
}

/*
 * The default parameters: a KEK file sealed with them records them, and
 * the process that seals and opens it stays under the 256 MiB a backup
 * may use (the Argon2id memory is the peak of every command).  Measured
 * in a child so the test's own allocations do not count; sanitizer
 * builds map shadow memory for the Argon2id area and skip the bound.
 */
static void
default_budget(void)
{
	struct cf_secbuf *kek = NULL, *back = NULL;
	struct rusage ru;
	unsigned char img[KS_KK_BYTES], id[16], gid[16];
	uint64_t mem;
	uint32_t ops;
	pid_t pid;
	int st, ok;

	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		randombytes_buf(id, sizeof(id));
		ok = cf_secbuf_random(&kek, 32) == 0 &&
		    ks_kekfile_seal(img, "pw", 2, KS_KK_OPS_DEFAULT,
		    KS_KK_MEM_DEFAULT, id, kek) == 0 &&
		    cf_ks_kekfile_open(img, sizeof(img), "pw", 2, gid,
		    &back) == 0;
		/* ops at offset 12 (u32le), mem at 16 (u64le). */
		ops = (uint32_t)img[12] | (uint32_t)img[13] << 8 |
		    (uint32_t)img[14] << 16 | (uint32_t)img[15] << 24;
		mem = 0;
		for (st = 7; st >= 0; st--)
			mem = mem << 8 | img[16 + st];
		ok = ok && ops == 4 && mem == 192ULL << 20;
		ok = ok && getrusage(RUSAGE_SELF, &ru) == 0;
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
		ok = ok && ru.ru_maxrss < 256L * 1024;	/* KiB */
#endif
		_exit(ok ? 0 : 1);
	}
	CHECK(waitpid(pid, &st, 0) == pid);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static const struct cf_test_case cases[] = {
	CF_TEST(open_vector),
	CF_TEST(tampered),
	CF_TEST(hostile_parameters),
	CF_TEST(seal_round_trip),
	CF_TEST(default_budget),
};

CF_TEST_MAIN(cases)
