/*
 * test_tenant.c - the tenant registry and key hierarchy end to end through
 * the file KMS: create, reopen, unlock, isolation between tenants,
 * tampered and swapped wrapped keys, KEK rotation, crypto-shredding, and a
 * home assembled from the published vectors.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "cf_test.h"

#define PASS "tenant test passphrase"

static struct cf_ks_home *
open_home(void)
{
	struct cf_ks_home *h = NULL;
	const char *p = cf_test_home(PASS);

	if (cf_ks_home_open(&h, p, CF_KS_HOME_CREATE) != 0)
		return NULL;
	return h;
}

static struct cf_ks_home *
reopen(struct cf_ks_home *h)
{
	char path[4096];
	struct cf_ks_home *n = NULL;

	snprintf(path, sizeof(path), "%s", cf_ks_home_path(h));
	cf_ks_home_free(h);
	if (cf_ks_home_open(&n, path, 0) != 0)
		return NULL;
	return n;
}

static void
keyfile(struct cf_ks_home *h, const char *tenant, unsigned v, char *buf,
    size_t len)
{
	snprintf(buf, len, "%s/tenants/%s/keys/v%u.wk", cf_ks_home_path(h),
	    tenant, v);
}

static void
create_and_unlock(void)
{
	struct cf_ks_home *h = open_home();
	struct cf_ks_tenant *t, *t2;
	struct cf_secbuf *r1, *r2;
	char path[4200];
	struct stat st;

	CHECK(h != NULL);
	CHECK_RC(cf_ks_tenant_create(h, "acme", CF_KS_CIPHER_NONE, NULL,
	    "file:///srv/backup/acme", &t), 0);
	CHECK(cf_ks_tenant_cipher(t) == cf_ks_cipher_default());
	CHECK(strcmp(cf_ks_tenant_kms(t), "local") == 0);
	CHECK(strcmp(cf_ks_tenant_repo(t), "file:///srv/backup/acme") == 0);
	CHECK(cf_ks_tenant_key_version(t) == 1);
	CHECK(strlen(cf_ks_tenant_id_hex(t)) == 32);
	CHECK_RC(cf_ks_tenant_unlock(t, 0, &r1), 0);
	cf_ks_tenant_free(t);
	/* A new process (fresh home handle) unwraps the same root key. */
	h = reopen(h);
	CHECK(h != NULL);
	CHECK_RC(cf_ks_tenant_open(h, "acme", &t2), 0);
	CHECK_RC(cf_ks_tenant_unlock(t2, 1, &r2), 0);
	CHECK(sodium_memcmp(cf_secbuf_cdata(r1), cf_secbuf_cdata(r2), 32) == 0);
	/* [KS-HOME-1] key files 0600, tenant directories 0700. */
	keyfile(h, "acme", 1, path, sizeof(path));
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
	snprintf(path, sizeof(path), "%s/tenants/acme", cf_ks_home_path(h));
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0700);
	cf_secbuf_free(r2);
	CHECK_RC(cf_ks_tenant_unlock(t2, 2, &r2), -ENOENT);
	cf_secbuf_free(r1);
	cf_ks_tenant_free(t2);
	cf_ks_home_free(h);
}

static void
names_and_duplicates(void)
{
	static const char *const bad[] = { "", "../etc", "a/b", "Acme", ".x",
		"-x", "x y",
		/* 64 characters, one too many */
		"0123456789012345678901234567890123456789012345678901234567890123",
		"acme\n" };
	struct cf_ks_home *h = open_home();
	struct cf_ks_tenant *t;
	char **names;
	size_t n, i;

	CHECK(h != NULL);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK_RC(cf_ks_tenant_create(h, bad[i], CF_KS_CIPHER_NONE,
		    NULL, NULL, &t), -EINVAL);
		CHECK_RC(cf_ks_tenant_open(h, bad[i], &t), -EINVAL);
	}
	CHECK_RC(cf_ks_tenant_create(h, "zeta", CF_KS_CIPHER_NONE, NULL, NULL,
	    &t), 0);
	cf_ks_tenant_free(t);
	CHECK_RC(cf_ks_tenant_create(h, "alpha",
	    CF_KS_CIPHER_XCHACHA20POLY1305, NULL, NULL, &t), 0);
	CHECK(cf_ks_tenant_cipher(t) == CF_KS_CIPHER_XCHACHA20POLY1305);
	CHECK(cf_ks_tenant_repo(t) == NULL);
	cf_ks_tenant_free(t);
	CHECK_RC(cf_ks_tenant_create(h, "alpha", CF_KS_CIPHER_NONE, NULL,
	    NULL, &t), -EEXIST);
	CHECK_RC(cf_ks_tenant_create(h, "beta", CF_KS_CIPHER_NONE, "hsm",
	    NULL, &t), -ENOENT);
	CHECK(strstr(cf_ks_last_error(), "kms.hsm") != NULL);
	CHECK_RC(cf_ks_tenant_open(h, "gamma", &t), -ENOENT);
	CHECK_RC(cf_ks_tenant_list(h, &names, &n), 0);
	CHECK(n == 2 && strcmp(names[0], "alpha") == 0 &&
	    strcmp(names[1], "zeta") == 0);
	cf_ks_tenant_list_free(names, n);
	cf_ks_home_free(h);
}

/* [KS-ENV-6] a key file moved to another tenant does not unwrap there. */
static void
isolation_and_tamper(void)
{
	struct cf_ks_home *h = open_home();
	struct cf_ks_tenant *a, *b;
	struct cf_secbuf *r;
	char pa[4200], pb[4200];
	unsigned char *buf;
	size_t len;

	CHECK(h != NULL);
	CHECK_RC(cf_ks_tenant_create(h, "a", CF_KS_CIPHER_NONE, NULL, NULL,
	    &a), 0);
	CHECK_RC(cf_ks_tenant_create(h, "b", CF_KS_CIPHER_NONE, NULL, NULL,
	    &b), 0);
	keyfile(h, "a", 1, pa, sizeof(pa));
	keyfile(h, "b", 1, pb, sizeof(pb));
	buf = cf_test_read_file(pa, &len);
	CHECK(buf != NULL);
	/* Tenant a's key file given to tenant b: refused, not a's key. */
	CHECK_RC(cf_test_write_file(pb, buf, len), 0);
	CHECK_RC(cf_ks_tenant_unlock(b, 0, &r), -EBADMSG);
	CHECK(r == NULL);
	CHECK(strstr(cf_ks_last_error(), "another tenant") != NULL);
	/* Rewrite b's tenant id inside the copied header to defeat the
	 * explicit check: the AEAD still refuses it. */
	memcpy(buf + 16, cf_ks_tenant_id(b), 16);
	CHECK_RC(cf_test_write_file(pb, buf, len), 0);
	CHECK_RC(cf_ks_tenant_unlock(b, 0, &r), -EBADMSG);
	/* A flipped bit in the blob of a's own file. */
	buf[60] ^= 4;
	memcpy(buf + 16, cf_ks_tenant_id(a), 16);
	CHECK_RC(cf_test_write_file(pa, buf, len), 0);
	CHECK_RC(cf_ks_tenant_unlock(a, 0, &r), -EBADMSG);
	/* Truncated: malformed. */
	CHECK_RC(cf_test_write_file(pa, buf, len - 3), 0);
	CHECK_RC(cf_ks_tenant_unlock(a, 0, &r), -EPROTO);
	CHECK_RC(cf_ks_tenant_unlock(a, 0, &r), -EPROTO);
	/* Three failures in a row lock tenant a, even with a good file. */
	buf[60] ^= 4;
	CHECK_RC(cf_test_write_file(pa, buf, len), 0);
	CHECK_RC(cf_ks_tenant_unlock(a, 0, &r), -EACCES);
	CHECK(strstr(cf_ks_last_error(), "locked") != NULL);
	free(buf);
	cf_ks_tenant_free(a);
	cf_ks_tenant_free(b);
	cf_ks_home_free(h);
}

static void
damaged_tenant_json(void)
{
	struct cf_ks_home *h = open_home();
	struct cf_ks_tenant *t;
	char path[4200];

	CHECK(h != NULL);
	CHECK_RC(cf_ks_tenant_create(h, "acme", CF_KS_CIPHER_NONE, NULL, NULL,
	    &t), 0);
	cf_ks_tenant_free(t);
	snprintf(path, sizeof(path), "%s/tenants/acme/tenant.json",
	    cf_ks_home_path(h));
	CHECK_RC(cf_test_write_file(path, "{\"format\": 1, \"name\": \"acme\"}",
	    29), 0);
	CHECK_RC(cf_ks_tenant_open(h, "acme", &t), -EPROTO);
	CHECK_RC(cf_test_write_file(path, "{\"format\": 2}", 13), 0);
	CHECK_RC(cf_ks_tenant_open(h, "acme", &t), -EPROTO);
	CHECK_RC(cf_test_write_file(path, "[1,2", 4), 0);
	CHECK_RC(cf_ks_tenant_open(h, "acme", &t), -EPROTO);
	cf_ks_home_free(h);
}

static void
rotate_kek(void)
{
	struct cf_ks_home *h = open_home();
	struct cf_ks_tenant *t, *u;
	struct cf_secbuf *before, *after, *other;
	char k1[160], k2[160], k3[160], path[4200];
	struct stat st;

	CHECK(h != NULL);
	CHECK_RC(cf_ks_tenant_create(h, "acme", CF_KS_CIPHER_NONE, NULL, NULL,
	    &t), 0);
	CHECK_RC(cf_ks_tenant_create(h, "other", CF_KS_CIPHER_NONE, NULL,
	    NULL, &u), 0);
	CHECK_RC(cf_ks_tenant_unlock(t, 0, &before), 0);
	CHECK_RC(cf_ks_tenant_describe_kek(t, 0, k1, sizeof(k1)), 0);
	CHECK_RC(cf_ks_tenant_rotate_kek(t, NULL), 0);
	CHECK_RC(cf_ks_tenant_describe_kek(t, 0, k2, sizeof(k2)), 0);
	CHECK(strcmp(k1, k2) != 0);
	/* The root key, hence all data, is unchanged; a new process reads
	 * it through the new KEK. */
	cf_ks_tenant_free(t);
	cf_ks_tenant_free(u);
	h = reopen(h);
	CHECK(h != NULL);
	CHECK_RC(cf_ks_tenant_open(h, "acme", &t), 0);
	CHECK_RC(cf_ks_tenant_unlock(t, 0, &after), 0);
	CHECK(sodium_memcmp(cf_secbuf_cdata(before), cf_secbuf_cdata(after),
	    32) == 0);
	/* The other tenant still uses the old KEK, which must survive. */
	CHECK_RC(cf_ks_tenant_open(h, "other", &u), 0);
	CHECK_RC(cf_ks_tenant_describe_kek(u, 0, k3, sizeof(k3)), 0);
	CHECK(strcmp(k3, k1) == 0);
	CHECK_RC(cf_ks_tenant_unlock(u, 0, &other), 0);
	/* Rotating 'other' moves it onto the newest KEK without a third. */
	CHECK_RC(cf_ks_tenant_rotate_kek(u, NULL), 0);
	CHECK_RC(cf_ks_tenant_describe_kek(u, 0, k3, sizeof(k3)), 0);
	CHECK(strcmp(k3, k2) == 0);
	CHECK_RC(cf_ks_tenant_rotate_kek(u, "elsewhere"), -ENOENT);
	keyfile(h, "acme", 1, path, sizeof(path));
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
	cf_secbuf_free(before);
	cf_secbuf_free(after);
	cf_secbuf_free(other);
	cf_ks_tenant_free(t);
	cf_ks_tenant_free(u);
	cf_ks_home_free(h);
}

/* Appends a second file KMS "two" to the test home's coffer.conf. */
static void
add_kms_two(struct cf_ks_home *h)
{
	char path[4200], text[4400];
	FILE *f;

	snprintf(path, sizeof(path), "%s/coffer.conf", cf_ks_home_path(h));
	snprintf(text, sizeof(text), "[kms.two]\ntype = file\n"
	    "passphrase_file = %s/pass\nargon2_ops = 1\nargon2_mem_kib = 8\n",
	    cf_test_tmpdir());
	f = fopen(path, "a");
	CHECK(f != NULL);
	if (f == NULL)
		return;
	fputs(text, f);
	fclose(f);
}

/* Sets "kms_next" in tenant.json by hand: a move interrupted at step 1. */
static void
set_kms_next(struct cf_ks_home *h, const char *tenant, const char *next)
{
	char path[4200];
	json_t *j;

	snprintf(path, sizeof(path), "%s/tenants/%s/tenant.json",
	    cf_ks_home_path(h), tenant);
	j = json_load_file(path, 0, NULL);
	CHECK(j != NULL);
	if (j == NULL)
		return;
	json_object_set_new(j, "kms_next", json_string(next));
	CHECK(json_dump_file(j, path, 0) == 0);
	json_decref(j);
}

/* rotate-kek --to: a two-phase move between providers (docs/kms.md). */
static void
move_kms(void)
{
	struct cf_ks_home *h = open_home();
	struct cf_ks_tenant *t;
	struct cf_secbuf *before, *mid, *after;

	CHECK(h != NULL);
	add_kms_two(h);
	h = reopen(h);
	CHECK(h != NULL);
	CHECK_RC(cf_ks_tenant_create(h, "mover", CF_KS_CIPHER_NONE, NULL,
	    NULL, &t), 0);
	CHECK_RC(cf_ks_tenant_unlock(t, 0, &before), 0);
	cf_ks_tenant_free(t);
	/* Interrupted after kms_next was recorded: still unlocks. */
	set_kms_next(h, "mover", "two");
	CHECK_RC(cf_ks_tenant_open(h, "mover", &t), 0);
	CHECK_RC(cf_ks_tenant_unlock(t, 0, &mid), 0);
	CHECK(sodium_memcmp(cf_secbuf_cdata(before), cf_secbuf_cdata(mid),
	    32) == 0);
	/* Another destination must wait for the move to finish. */
	CHECK_RC(cf_ks_tenant_rotate_kek(t, "three"), -EBUSY);
	/* A plain rotate-kek finishes the move. */
	CHECK_RC(cf_ks_tenant_rotate_kek(t, NULL), 0);
	CHECK(strcmp(cf_ks_tenant_kms(t), "two") == 0);
	CHECK(cf_ks_tenant_get(t, "kms_next") == NULL);
	cf_ks_tenant_free(t);
	h = reopen(h);
	CHECK(h != NULL);
	CHECK_RC(cf_ks_tenant_open(h, "mover", &t), 0);
	CHECK(strcmp(cf_ks_tenant_kms(t), "two") == 0);
	CHECK_RC(cf_ks_tenant_unlock(t, 0, &after), 0);
	CHECK(sodium_memcmp(cf_secbuf_cdata(before), cf_secbuf_cdata(after),
	    32) == 0);
	/* And back, in one step. */
	CHECK_RC(cf_ks_tenant_rotate_kek(t, "local"), 0);
	CHECK(strcmp(cf_ks_tenant_kms(t), "local") == 0);
	cf_secbuf_free(before);
	cf_secbuf_free(mid);
	cf_secbuf_free(after);
	cf_ks_tenant_free(t);
	cf_ks_home_free(h);
}

static void
shred(void)
{
	struct cf_ks_home *h = open_home();
	struct cf_ks_tenant *t;
	struct cf_secbuf *r;
	char path[4200];
	unsigned char *copy;
	size_t len;

	CHECK(h != NULL);
	CHECK_RC(cf_ks_tenant_create(h, "acme", CF_KS_CIPHER_NONE, NULL, NULL,
	    &t), 0);
	keyfile(h, "acme", 1, path, sizeof(path));
	copy = cf_test_read_file(path, &len);
	CHECK(copy != NULL);
	{
		/* A temporary left by a crash and an odd spelling of a
		 * version hold the wrapped key too: both must go. */
		char stray[4300];

		snprintf(stray, sizeof(stray), "%s.tmp-0123456789abcdef", path);
		CHECK_RC(cf_test_write_file(stray, copy, len), 0);
		snprintf(stray, sizeof(stray), "%s/tenants/acme/keys/v01.wk",
		    cf_ks_home_path(h));
		CHECK_RC(cf_test_write_file(stray, copy, len), 0);
	}
	CHECK_RC(cf_ks_tenant_shred(t), 0);
	{
		char keys[4300];

		snprintf(keys, sizeof(keys), "%s/tenants/acme/keys",
		    cf_ks_home_path(h));
		/* [KS-SHRED-1] nothing at all is left in keys/. */
		CHECK(rmdir(keys) == 0);
	}
	CHECK(cf_ks_tenant_shredded(t));
	/* [KS-SHRED-1] no wrapped key remains under the home. */
	CHECK(access(path, F_OK) != 0);
	CHECK_RC(cf_ks_tenant_unlock(t, 0, &r), -EACCES);
	CHECK(strstr(cf_ks_last_error(), "shredded") != NULL);
	cf_ks_tenant_free(t);
	/* The state survives a restart and a second shred is harmless. */
	h = reopen(h);
	CHECK(h != NULL);
	CHECK_RC(cf_ks_tenant_open(h, "acme", &t), 0);
	CHECK(cf_ks_tenant_shredded(t));
	CHECK_RC(cf_ks_tenant_shred(t), 0);
	cf_ks_tenant_free(t);
	free(copy);
	cf_ks_home_free(h);
}

/* [KS-VEC-1] a home built only from the published vectors unlocks the
 * documented root key: the formats are what the spec says. */
static void
vector_home(void)
{
	json_error_t e;
	json_t *v = json_load_file(cf_test_vector_path("keystore-v1.json"), 0,
	    &e), *w, *k, *doc;
	unsigned char *wk, *kk, *root;
	size_t wl, kl, rl;
	char path[4200];
	const char *home;
	struct cf_ks_home *h;
	struct cf_ks_tenant *t;
	struct cf_secbuf *r;

	CHECK(v != NULL);
	w = json_object_get(v, "wrapped_key");
	k = json_object_get(v, "kek_file");
	home = cf_test_home(json_string_value(json_object_get(k,
	    "passphrase")));
	wk = cf_test_unhex(json_string_value(json_object_get(w, "file")), &wl);
	kk = cf_test_unhex(json_string_value(json_object_get(k, "file")), &kl);
	root = cf_test_unhex(json_string_value(json_object_get(w, "root")),
	    &rl);
	CHECK(wk && kk && root);
	snprintf(path, sizeof(path), "%s/kms", home);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/kms/local", home);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/kms/local/kek-%s.key", home,
	    json_string_value(json_object_get(k, "kek_id")));
	CHECK_RC(cf_test_write_file(path, kk, kl), 0);
	snprintf(path, sizeof(path), "%s/kms/local/current", home);
	CHECK_RC(cf_test_write_file(path, json_string_value(json_object_get(k,
	    "kek_id")), 32), 0);
	snprintf(path, sizeof(path), "%s/tenants", home);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/tenants/vec", home);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/tenants/vec/keys", home);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/tenants/vec/keys/v1.wk", home);
	CHECK_RC(cf_test_write_file(path, wk, wl), 0);
	doc = json_pack("{s:i, s:s, s:s, s:s, s:s, s:s, s:i}", "format", 1,
	    "name", "vec", "id", json_string_value(json_object_get(w,
	    "tenant_id")), "cipher", "xchacha20-poly1305", "kms", "local",
	    "created", "2026-01-31T00:00:00Z", "key_version", 1);
	snprintf(path, sizeof(path), "%s/tenants/vec/tenant.json", home);
	CHECK(json_dump_file(doc, path, 0) == 0);
	json_decref(doc);
	CHECK_RC(cf_ks_home_open(&h, home, 0), 0);
	CHECK_RC(cf_ks_tenant_open(h, "vec", &t), 0);
	CHECK_RC(cf_ks_tenant_unlock(t, 0, &r), 0);
	CHECK(memcmp(cf_secbuf_cdata(r), root, 32) == 0);
	cf_secbuf_free(r);
	cf_ks_tenant_free(t);
	cf_ks_home_free(h);
	free(wk), free(kk), free(root);
	json_decref(v);
}

/*
 * Root key rotation: a new random version becomes the newest, the old
 * one still unlocks, a stale handle does not undo it, a wrapped key left
 * beyond key_version by a crash is ignored and replaced; retirement
 * shreds one version, refuses the newest and twice, and survives a
 * reopen.
 */
static void
rotate_key(void)
{
	struct cf_ks_home *h = open_home();
	struct cf_ks_tenant *t, *stale;
	struct cf_secbuf *r1, *r2, *r1b, *r3;
	uint32_t v[8], nv = 0;
	char path[4200];
	FILE *f;

	CHECK(h != NULL);
	CHECK_RC(cf_ks_tenant_create(h, "acme", CF_KS_CIPHER_NONE, NULL, NULL,
	    &t), 0);
	CHECK_RC(cf_ks_tenant_open(h, "acme", &stale), 0);
	CHECK_RC(cf_ks_tenant_unlock(t, 0, &r1), 0);
	CHECK_RC(cf_ks_tenant_rotate_key(t, &nv), 0);
	CHECK(nv == 2 && cf_ks_tenant_key_version(t) == 2);
	CHECK(cf_ks_tenant_versions(t, v, 8) == 2 && v[0] == 1 && v[1] == 2);
	CHECK_RC(cf_ks_tenant_unlock(t, 0, &r2), 0);
	CHECK_RC(cf_ks_tenant_unlock(t, 1, &r1b), 0);
	CHECK(sodium_memcmp(cf_secbuf_cdata(r1), cf_secbuf_cdata(r1b),
	    32) == 0);
	CHECK(sodium_memcmp(cf_secbuf_cdata(r1), cf_secbuf_cdata(r2),
	    32) != 0);
	/* A handle opened before (a mounted daemon) setting a field must
	 * not move key_version back. */
	CHECK_RC(cf_ks_tenant_set(stale, "last_use", "x"), 0);
	CHECK(cf_ks_tenant_key_version(stale) == 2);
	cf_ks_tenant_free(t);
	CHECK_RC(cf_ks_tenant_open(h, "acme", &t), 0);
	CHECK(cf_ks_tenant_key_version(t) == 2);
	/* A crash's leftover v3.wk (not committed) is not a version ... */
	keyfile(h, "acme", 3, path, sizeof(path));
	f = fopen(path, "w");
	CHECK(f != NULL);
	fputs("garbage", f);
	fclose(f);
	cf_ks_tenant_free(t);
	CHECK_RC(cf_ks_tenant_open(h, "acme", &t), 0);
	CHECK(cf_ks_tenant_versions(t, v, 8) == 2);
	/* ... and the next rotation replaces it. */
	CHECK_RC(cf_ks_tenant_rotate_key(t, &nv), 0);
	CHECK(nv == 3);
	CHECK_RC(cf_ks_tenant_unlock(t, 3, &r3), 0);
	/* Retirement. */
	CHECK_RC(cf_ks_tenant_retire_key(t, 3), -EBUSY);
	CHECK_RC(cf_ks_tenant_retire_key(t, 4), -ENOENT);
	CHECK_RC(cf_ks_tenant_retire_key(t, 0), -ENOENT);
	CHECK(!cf_ks_tenant_retired(t, 2));
	CHECK_RC(cf_ks_tenant_retire_key(t, 2), 0);
	CHECK(cf_ks_tenant_retired(t, 2));
	keyfile(h, "acme", 2, path, sizeof(path));
	CHECK(access(path, F_OK) != 0);
	CHECK(cf_ks_tenant_versions(t, v, 8) == 2 && v[0] == 1 && v[1] == 3);
	CHECK_RC(cf_ks_tenant_retire_key(t, 2), -EALREADY);
	cf_secbuf_free(r2);
	CHECK_RC(cf_ks_tenant_unlock(t, 2, &r2), -ENOENT);
	CHECK(strstr(cf_ks_last_error(), "retired") != NULL);
	cf_ks_tenant_free(t);
	h = reopen(h);
	CHECK(h != NULL);
	CHECK_RC(cf_ks_tenant_open(h, "acme", &t), 0);
	CHECK(cf_ks_tenant_retired(t, 2) && !cf_ks_tenant_retired(t, 1));
	cf_secbuf_free(r1b);
	CHECK_RC(cf_ks_tenant_unlock(t, 1, &r1b), 0);
	cf_secbuf_free(r1);
	cf_secbuf_free(r1b);
	cf_secbuf_free(r3);
	cf_ks_tenant_free(t);
	cf_ks_tenant_free(stale);
	cf_ks_home_free(h);
}

/*
 * cf_ks_tenant_set_many: several settings in one save, all or none; a
 * NULL value deletes; another handle sees all of them after its reread.
 */
static void
set_many(void)
{
	struct cf_ks_home *h = open_home();
	struct cf_ks_tenant *t, *other;
	char key[CF_KS_TENANT_KEY_MAX + 2];
	const char *kv[] = { "last_backup", "2026-11-25T10:00:00Z",
		"last_backup_files", "16206", "state", "active" };
	const char *bad[] = { "last_backup", "2026-11-25T11:00:00Z", key,
		"v" };
	const char *del[] = { "state", NULL, "last_backup_files", "1" };

	CHECK(h != NULL);
	CHECK_RC(cf_ks_tenant_create(h, "acme", CF_KS_CIPHER_NONE, NULL, NULL,
	    &t), 0);
	CHECK_RC(cf_ks_tenant_open(h, "acme", &other), 0);
	CHECK_RC(cf_ks_tenant_set_many(t, kv, 3), 0);
	CHECK(strcmp(cf_ks_tenant_get(t, "last_backup_files"), "16206") == 0);
	memset(key, 'k', sizeof(key) - 1);
	key[sizeof(key) - 1] = '\0';
	/* One bad key: neither setting is made, in memory or on disk. */
	CHECK_RC(cf_ks_tenant_set_many(t, bad, 2), -E2BIG);
	CHECK(strcmp(cf_ks_tenant_get(t, "last_backup"),
	    "2026-11-25T10:00:00Z") == 0);
	CHECK_RC(cf_ks_tenant_set_many(t, del, 2), 0);
	CHECK(cf_ks_tenant_get(t, "state") == NULL);
	cf_ks_tenant_free(t);
	CHECK_RC(cf_ks_tenant_open(h, "acme", &t), 0);
	CHECK(strcmp(cf_ks_tenant_get(t, "last_backup"),
	    "2026-11-25T10:00:00Z") == 0);
	CHECK(strcmp(cf_ks_tenant_get(t, "last_backup_files"), "1") == 0);
	CHECK(cf_ks_tenant_get(t, "state") == NULL);
	/* A set through the older handle rereads first: nothing is lost. */
	CHECK_RC(cf_ks_tenant_set(other, "repo", "file:///r"), 0);
	CHECK(strcmp(cf_ks_tenant_get(other, "last_backup_files"), "1") == 0);
	cf_ks_tenant_free(t);
	cf_ks_tenant_free(other);
	cf_ks_home_free(h);
}

static const struct cf_test_case cases[] = {
	CF_TEST(create_and_unlock),
	CF_TEST(names_and_duplicates),
	CF_TEST(isolation_and_tamper),
	CF_TEST(damaged_tenant_json),
	CF_TEST(rotate_kek),
	CF_TEST(rotate_key),
	CF_TEST(move_kms),
	CF_TEST(shred),
	CF_TEST(vector_home),
	CF_TEST(set_many),
};

CF_TEST_MAIN(cases)
