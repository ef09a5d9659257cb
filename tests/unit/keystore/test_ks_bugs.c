/*
 * test_ks_bugs.c - regression tests for review findings in the keystore,
 * one case per finding, each named bug_<what went wrong>.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cf_test.h"
#include "ks_int.h"

#define PASS "bug test passphrase"

static struct cf_ks_home *
open_home(void)
{
	struct cf_ks_home *h = NULL;
	const char *p = cf_test_home(PASS);

	if (cf_ks_home_open(&h, p, CF_KS_HOME_CREATE) != 0)
		return NULL;
	return h;
}

/*
 * cf_ks_tenant_set had no size limit and swapped the in-memory document
 * before the save: a failed save left memory and disk disagreeing.
 */
static void
bug_tenant_set_unbounded_and_swapped_early(void)
{
	struct cf_ks_home *h = open_home();
	struct cf_ks_tenant *t = NULL;
	char key[CF_KS_TENANT_KEY_MAX + 2], path[4200];
	char *big;
	int i;

	CHECK(h != NULL);
	CHECK_RC(cf_ks_tenant_create(h, "acme", CF_KS_CIPHER_NONE, NULL, NULL,
	    &t), 0);
	CHECK_RC(cf_ks_tenant_set(t, "state", "active"), 0);
	big = malloc(CF_KS_TENANT_VALUE_MAX + 2);
	CHECK(big != NULL);
	memset(big, 'x', CF_KS_TENANT_VALUE_MAX + 1);
	big[CF_KS_TENANT_VALUE_MAX + 1] = '\0';
	CHECK_RC(cf_ks_tenant_set(t, "state", big), -E2BIG);
	big[CF_KS_TENANT_VALUE_MAX] = '\0';
	CHECK_RC(cf_ks_tenant_set(t, "big", big), 0);
	memset(key, 'k', sizeof(key) - 1);
	key[sizeof(key) - 1] = '\0';
	CHECK_RC(cf_ks_tenant_set(t, key, "v"), -E2BIG);
	CHECK_RC(cf_ks_tenant_set(t, "", "v"), -EINVAL);
	/* Many maximal values must not outgrow what open accepts. */
	for (i = 0; i < 100; i++) {
		char k[16];
		int rc;

		snprintf(k, sizeof(k), "k%d", i);
		rc = cf_ks_tenant_set(t, k, big);
		if (rc == -E2BIG)
			break;
		CHECK_RC(rc, 0);
	}
	CHECK(i < 100);
	free(big);
	cf_ks_tenant_free(t);
	t = NULL;
	CHECK_RC(cf_ks_tenant_open(h, "acme", &t), 0);
	CHECK(strcmp(cf_ks_tenant_get(t, "state"), "active") == 0);
	/* A save that fails (a directory in the way) changes nothing. */
	snprintf(path, sizeof(path), "%s/tenants/acme/tenant.json",
	    cf_ks_home_path(h));
	{
		char moved[4300];

		snprintf(moved, sizeof(moved), "%s.away", path);
		CHECK(rename(path, moved) == 0);
		CHECK(mkdir(path, 0700) == 0);
		CHECK(cf_ks_tenant_set(t, "state", "closed") < 0);
		CHECK(strcmp(cf_ks_tenant_get(t, "state"), "active") == 0);
		CHECK(rmdir(path) == 0);
		CHECK(rename(moved, path) == 0);
	}
	cf_ks_tenant_free(t);
	cf_ks_home_free(h);
}

/* Unlocks tenant acme through a fresh home handle. */
static int
try_unlock(const char *home)
{
	struct cf_ks_home *h = NULL;
	struct cf_ks_tenant *t;
	struct cf_secbuf *r = NULL;
	int rc;

	rc = cf_ks_home_open(&h, home, 0);
	if (rc < 0)
		return rc;
	rc = cf_ks_tenant_open(h, "acme", &t);
	if (rc == 0) {
		rc = cf_ks_tenant_unlock(t, 0, &r);
		cf_secbuf_free(r);
		cf_ks_tenant_free(t);
	}
	cf_ks_home_free(h);
	return rc;
}

/*
 * A FIFO planted in locks/ (or as the audit log) hung every unlock in
 * open(2); symlinks above the last component were followed.
 */
static void
bug_fifo_and_symlink_in_home(void)
{
	struct cf_ks_home *h = open_home();
	struct cf_ks_tenant *t = NULL;
	char home[4096], p[4300], q[4300];

	CHECK(h != NULL);
	snprintf(home, sizeof(home), "%s", cf_ks_home_path(h));
	CHECK_RC(cf_ks_tenant_create(h, "acme", CF_KS_CIPHER_NONE, NULL, NULL,
	    &t), 0);
	cf_ks_tenant_free(t);
	cf_ks_home_free(h);
	CHECK_RC(try_unlock(home), 0);
	/* A hang fails the case (SIGALRM) instead of the whole suite. */
	alarm(20);
	snprintf(p, sizeof(p), "%s/locks/tenant.acme.json", home);
	CHECK(mkfifo(p, 0600) == 0);
	CHECK_RC(try_unlock(home), -EINVAL);
	CHECK(strstr(cf_ks_last_error(), "not a regular file") != NULL);
	CHECK(unlink(p) == 0);
	/* A FIFO as the wrapped key. */
	snprintf(p, sizeof(p), "%s/tenants/acme/keys/v1.wk", home);
	snprintf(q, sizeof(q), "%s/tenants/acme/v1.wk.real", home);
	CHECK(rename(p, q) == 0);
	CHECK(mkfifo(p, 0600) == 0);
	CHECK_RC(try_unlock(home), -EINVAL);
	CHECK(unlink(p) == 0);
	CHECK(rename(q, p) == 0);
	CHECK_RC(try_unlock(home), 0);
	/* A FIFO as the audit log. */
	snprintf(p, sizeof(p), "%s/audit/audit.log", home);
	snprintf(q, sizeof(q), "%s/audit/audit.log.real", home);
	CHECK(rename(p, q) == 0);
	CHECK(mkfifo(p, 0600) == 0);
	CHECK_RC(cf_ks_home_open(&h, home, 0), 0);
	CHECK_RC(cf_ks_audit_append(h, "test.event", NULL, 0), -EINVAL);
	cf_ks_home_free(h);
	CHECK(unlink(p) == 0);
	CHECK(rename(q, p) == 0);
	/* An intermediate symlink: keys/ points somewhere else. */
	snprintf(p, sizeof(p), "%s/tenants/acme/keys", home);
	snprintf(q, sizeof(q), "%s/tenants/acme/keys.real", home);
	CHECK(rename(p, q) == 0);
	CHECK(symlink("keys.real", p) == 0);
	CHECK_RC(try_unlock(home), -ELOOP);
	CHECK(unlink(p) == 0);
	CHECK(rename(q, p) == 0);
	/* locks/ itself a symlink. */
	snprintf(p, sizeof(p), "%s/locks", home);
	snprintf(q, sizeof(q), "%s/locks.real", home);
	CHECK(rename(p, q) == 0);
	CHECK(symlink("locks.real", p) == 0);
	CHECK(try_unlock(home) < 0);
	CHECK(unlink(p) == 0);
	CHECK(rename(q, p) == 0);
	CHECK_RC(try_unlock(home), 0);
	alarm(0);
}

/*
 * A damaged lock file read as a fresh 30-minute lock at every read, so it
 * locked the subject forever without saying why.  [KS-LOCKFILE-2]
 */
static void
bug_damaged_lock_file_locks_forever(void)
{
	struct cf_ks_home *h = open_home();
	struct cf_ks_tenant *t = NULL;
	char home[4096], p[4300];
	unsigned failures;
	time_t until;

	CHECK(h != NULL);
	snprintf(home, sizeof(home), "%s", cf_ks_home_path(h));
	CHECK_RC(cf_ks_tenant_create(h, "acme", CF_KS_CIPHER_NONE, NULL, NULL,
	    &t), 0);
	cf_ks_tenant_free(t);
	snprintf(p, sizeof(p), "%s/locks/tenant.acme.json", home);
	CHECK_RC(cf_test_write_file(p, "{\"failures\": \"x\"}\n", 18), 0);
	CHECK_RC(cf_ks_lockout_state(h, "tenant.acme", &failures, &until),
	    -EPROTO);
	CHECK(strstr(cf_ks_last_error(), "locks/tenant.acme.json") != NULL);
	CHECK(strstr(cf_ks_last_error(), "rm ") != NULL);
	CHECK_RC(try_unlock(home), -EPROTO);
	CHECK_RC(cf_test_write_file(p, "not json", 8), 0);
	CHECK_RC(try_unlock(home), -EPROTO);
	/* The documented way out works. */
	CHECK(unlink(p) == 0);
	CHECK_RC(try_unlock(home), 0);
	cf_ks_home_free(h);
}

/*
 * The passphrase file's owner was not checked, and a relative
 * passphrase_file in coffer.conf was taken relative to the working
 * directory.  [KS-PASS-1] [KS-PASS-2]
 */
static void
bug_pass_file_owner_and_relative_path(void)
{
	struct cf_ks_home *h = NULL;
	struct cf_ks_tenant *t = NULL;
	const char *home = cf_test_home(PASS);
	char pass[4200], conf[4200], text[8192];

	snprintf(pass, sizeof(pass), "%s/pass", cf_test_tmpdir());
	CHECK(chown(pass, 4242, 4242) == 0 || geteuid() != 0);
	if (geteuid() == 0) {
		CHECK_RC(cf_ks_home_open(&h, home, CF_KS_HOME_CREATE), 0);
		CHECK_RC(cf_ks_tenant_create(h, "acme", CF_KS_CIPHER_NONE,
		    NULL, NULL, &t), -EACCES);
		CHECK(strstr(cf_ks_last_error(), "owned by uid 4242") != NULL);
		cf_ks_home_free(h);
		h = NULL;
		CHECK(chown(pass, 0, 0) == 0);
	}
	snprintf(conf, sizeof(conf), "%s/coffer.conf", home);
	snprintf(text, sizeof(text), "[kms.local]\ntype = file\n"
	    "passphrase_file = pass\nargon2_ops = 1\nargon2_mem_kib = 8\n");
	CHECK_RC(cf_test_write_file(conf, text, strlen(text)), 0);
	CHECK_RC(cf_ks_home_open(&h, home, CF_KS_HOME_CREATE), 0);
	CHECK_RC(cf_ks_tenant_create(h, "acme", CF_KS_CIPHER_NONE, NULL, NULL,
	    &t), -EINVAL);
	CHECK(strstr(cf_ks_last_error(), "absolute") != NULL);
	cf_ks_home_free(h);
}

/*
 * The audit key and passphrase files had two readers with different
 * checks (the audit key's took any mode and owner).  Both now go through
 * ks_read_secret.
 */
static void
bug_secret_readers_duplicated(void)
{
	struct cf_ks_home *h = open_home();
	struct cf_secbuf *sb = NULL;
	char home[4096], p[4300], buf[40];
	size_t len;

	CHECK(h != NULL);
	snprintf(home, sizeof(home), "%s", cf_ks_home_path(h));
	CHECK_RC(cf_secbuf_new(&sb, 8), 0);
	snprintf(p, sizeof(p), "%s/secret", cf_test_tmpdir());
	CHECK_RC(cf_test_write_file(p, "12345678", 8), 0);
	CHECK(chmod(p, 0600) == 0);
	CHECK_RC(ks_read_secret(AT_FDCWD, p, "test file", sb, 8, &len), 0);
	CHECK(len == 8 && memcmp(cf_secbuf_data(sb), "12345678", 8) == 0);
	CHECK_RC(ks_read_secret(AT_FDCWD, p, "test file", sb, 7, &len),
	    -EFBIG);
	CHECK(chmod(p, 0640) == 0);
	CHECK_RC(ks_read_secret(AT_FDCWD, p, "test file", sb, 8, &len),
	    -EACCES);
	CHECK(strstr(cf_ks_last_error(), "test file") != NULL);
	CHECK(unlink(p) == 0);
	CHECK(mkfifo(p, 0600) == 0);
	alarm(20);
	CHECK_RC(ks_read_secret(AT_FDCWD, p, "test file", sb, 8, &len),
	    -EINVAL);
	alarm(0);
	cf_secbuf_free(sb);
	/* The audit key now gets the passphrase file's checks. */
	CHECK_RC(cf_ks_audit_append(h, "test.event", NULL, 0), 0);
	cf_ks_home_free(h);
	snprintf(p, sizeof(p), "%s/audit/audit.key", home);
	CHECK(chmod(p, 0644) == 0);
	CHECK_RC(cf_ks_home_open(&h, home, 0), 0);
	CHECK_RC(cf_ks_audit_append(h, "test.event", NULL, 0), -EACCES);
	cf_ks_home_free(h);
	CHECK(chmod(p, 0600) == 0);
	memset(buf, 'k', sizeof(buf));
	CHECK_RC(cf_test_write_file(p, buf, 33), 0);
	CHECK_RC(cf_ks_home_open(&h, home, 0), 0);
	CHECK_RC(cf_ks_audit_append(h, "test.event", NULL, 0), -EPROTO);
	cf_ks_home_free(h);
}

/* The envelope encoder wrote any alg, which the decoder then rejected. */
static void
bug_envelope_encoder_unknown_alg(void)
{
	static struct cf_ks_envelope env;
	unsigned char buf[CF_KS_ENVELOPE_BLOB_MAX + 64];
	size_t len;
	unsigned a;

	memset(&env, 0, sizeof(env));
	env.key_version = 1;
	env.blob_len = 72;
	for (a = 0; a < 256; a++) {
		env.alg = (uint8_t)a;
		if (a == CF_KS_WRAP_XCHACHA20POLY1305 ||
		    a == CF_KS_WRAP_AES256GCM || a == CF_KS_WRAP_AES256KWP) {
			CHECK_RC(cf_ks_envelope_encode(&env, buf, sizeof(buf),
			    &len), 0);
			CHECK(len == 122);
		} else {
			CHECK_RC(cf_ks_envelope_encode(&env, buf, sizeof(buf),
			    &len), -EINVAL);
			CHECK(len == 0);
		}
	}
}

/*
 * A line over inih's 199 bytes was a "syntax error" one line past the
 * long one.  [KS-CONF-2]
 */
static void
bug_config_long_line_wrong_line_number(void)
{
	struct cf_ks_config *cfg = NULL;
	char text[1024], v[256];

	/* "key = " (6) + 193 = 199 bytes: accepted. */
	memset(v, 'a', sizeof(v));
	v[193] = '\0';
	snprintf(text, sizeof(text), "[s]\nkey = %s\nx = 1\n", v);
	CHECK_RC(cf_ks_config_parse(&cfg, text, strlen(text)), 0);
	CHECK(strlen(cf_ks_config_get(cfg, "s", "key")) == 193);
	cf_ks_config_free(cfg);
	cfg = NULL;
	/* 200 bytes on line 3, then more lines. */
	v[193] = 'a';
	v[194] = '\0';
	snprintf(text, sizeof(text), "[s]\n# c\nkey = %s\nx = 1\n", v);
	CHECK_RC(cf_ks_config_parse(&cfg, text, strlen(text)), -EPROTO);
	CHECK(cfg == NULL);
	CHECK(strstr(cf_ks_last_error(), "line 3 is too long (200 bytes, "
	    "max 199)") != NULL);
	/* The same as the last line without a newline. */
	snprintf(text, sizeof(text), "[s]\nkey = %s", v);
	CHECK_RC(cf_ks_config_parse(&cfg, text, strlen(text)), -EPROTO);
	CHECK(strstr(cf_ks_last_error(), "line 2 is too long") != NULL);
}

static const struct cf_test_case cases[] = {
	CF_TEST(bug_tenant_set_unbounded_and_swapped_early),
	CF_TEST(bug_fifo_and_symlink_in_home),
	CF_TEST(bug_damaged_lock_file_locks_forever),
	CF_TEST(bug_pass_file_owner_and_relative_path),
	CF_TEST(bug_secret_readers_duplicated),
	CF_TEST(bug_envelope_encoder_unknown_alg),
	CF_TEST(bug_config_long_line_wrong_line_number),
};

CF_TEST_MAIN(cases)
