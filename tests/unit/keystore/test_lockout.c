/*
 * test_lockout.c - three wrong passphrases lock the file KMS for thirty
 * minutes across processes; during the lock the right passphrase is
 * refused too; afterwards it works and the count starts again.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cf_test.h"

#define GOOD "the right passphrase"

static struct cf_ks_home *
fresh(const char *path)
{
	struct cf_ks_home *h = NULL;

	if (cf_ks_home_open(&h, path, 0) != 0)
		return NULL;
	return h;
}

/* Unlocks tenant acme in a fresh home handle (a new process). */
static int
try_unlock(const char *home)
{
	struct cf_ks_home *h = fresh(home);
	struct cf_ks_tenant *t;
	struct cf_secbuf *r = NULL;
	int rc;

	if (h == NULL)
		return -999;
	rc = cf_ks_tenant_open(h, "acme", &t);
	if (rc == 0) {
		rc = cf_ks_tenant_unlock(t, 0, &r);
		cf_secbuf_free(r);
		cf_ks_tenant_free(t);
	}
	cf_ks_home_free(h);
	return rc;
}

static void
three_strikes(void)
{
	const char *home = cf_test_home(GOOD);
	struct cf_ks_home *h;
	struct cf_ks_tenant *t;
	unsigned failures;
	time_t until;
	char msg[512];

	setenv("COFFER_NOW", "2026-03-01T10:00:00Z", 1);
	CHECK((h = fresh(home)) != NULL);
	CHECK_RC(cf_ks_tenant_create(h, "acme", CF_KS_CIPHER_NONE, NULL, NULL,
	    &t), 0);
	cf_ks_tenant_free(t);
	cf_ks_home_free(h);
	CHECK_RC(try_unlock(home), 0);

	cf_test_set_pass("wrong");
	CHECK_RC(try_unlock(home), -EACCES);
	CHECK(strstr(cf_ks_last_error(), "1 of 3") != NULL);
	CHECK_RC(try_unlock(home), -EACCES);
	CHECK(strstr(cf_ks_last_error(), "2 of 3") != NULL);
	CHECK_RC(try_unlock(home), -EACCES);
	snprintf(msg, sizeof(msg), "%s", cf_ks_last_error());
	CHECK(strstr(msg, "locked until 2026-03-01T10:30:00Z") != NULL);
	/* No secret in the message. */
	CHECK(strstr(msg, "wrong") == NULL || strstr(msg, "wrong pass") != NULL);

	/* [KS-LOCK-1] the right passphrase is refused during the lock. */
	cf_test_set_pass(GOOD);
	setenv("COFFER_NOW", "2026-03-01T10:29:00Z", 1);
	CHECK_RC(try_unlock(home), -EACCES);
	CHECK(strstr(cf_ks_last_error(), "1 minutes left") != NULL);
	CHECK((h = fresh(home)) != NULL);
	CHECK_RC(cf_ks_lockout_state(h, "kms.local", &failures, &until), 0);
	CHECK(failures == 3 && until == 1772361000);
	cf_ks_home_free(h);

	/* [KS-LOCK-2] after 30 minutes it opens and the count resets. */
	setenv("COFFER_NOW", "2026-03-01T10:30:01Z", 1);
	CHECK_RC(try_unlock(home), 0);
	CHECK((h = fresh(home)) != NULL);
	CHECK_RC(cf_ks_lockout_state(h, "kms.local", &failures, &until), 0);
	CHECK(failures == 0 && until == 0);
	cf_ks_home_free(h);

	/* [KS-LOCK-3] only consecutive failures count. */
	cf_test_set_pass("wrong");
	CHECK_RC(try_unlock(home), -EACCES);
	CHECK_RC(try_unlock(home), -EACCES);
	cf_test_set_pass(GOOD);
	CHECK_RC(try_unlock(home), 0);
	cf_test_set_pass("wrong");
	CHECK_RC(try_unlock(home), -EACCES);
	CHECK(strstr(cf_ks_last_error(), "1 of 3") != NULL);
	unsetenv("COFFER_NOW");
}

static void
audited(void)
{
	const char *home = cf_test_home(GOOD);
	struct cf_ks_home *h;
	struct cf_ks_tenant *t;
	struct cf_ks_audit_report rep;

	CHECK((h = fresh(home)) != NULL);
	CHECK_RC(cf_ks_tenant_create(h, "acme", CF_KS_CIPHER_NONE, NULL, NULL,
	    &t), 0);
	cf_ks_tenant_free(t);
	cf_ks_home_free(h);
	cf_test_set_pass("nope");
	CHECK_RC(try_unlock(home), -EACCES);
	CHECK_RC(try_unlock(home), -EACCES);
	CHECK_RC(try_unlock(home), -EACCES);
	CHECK_RC(try_unlock(home), -EACCES);
	CHECK((h = fresh(home)) != NULL);
	memset(&rep, 0, sizeof(rep));
	CHECK_RC(cf_ks_audit_verify(h, &rep), 0);
	/* kek_created, tenant.create, 2 x unlock.failed, lockout.locked,
	 * lockout.refused. */
	CHECK(rep.records == 6);
	cf_ks_home_free(h);
}

static const struct cf_test_case cases[] = {
	CF_TEST(three_strikes),
	CF_TEST(audited),
};

CF_TEST_MAIN(cases)
