/*
 * test_bk_lifecycle.c - every deletion schedule of REQUIREMENTS.md at,
 * one second before and one day after each boundary (table-driven), the
 * free tier's idle clock, configured periods, the mount refusals, and
 * the schedule of a class retained after a purge.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "bk_test.h"

#define DAY 86400

struct boundary {
	const char *state;
	int64_t days;		/* after since */
	const char *before;	/* effective one second earlier */
	const char *after;	/* effective at the instant and a day later */
};

static const struct boundary table[] = {
	{ "trial-ended", 12, "trial-ended", "purge-due" },
	{ "cancelled", 90, "cancelled", "purge-due" },
	{ "payment-failed", 15, "payment-failed", "suspended" },
	{ "payment-failed", 90, "suspended", "closed" },
	{ "payment-failed", 97, "closed", "purge-due" },
	{ "closed", 7, "closed", "purge-due" },
	{ "free", 60, "free", "purge-due" },
	{ "evaluation", 60, "evaluation", "locked" },
	{ "evaluation", 76, "locked", "purge-due" },
};

static const char *
nz(const char *s)
{
	return s != NULL ? s : "(null)";
}

static int
refused(const char *s)
{
	return strcmp(s, "locked") == 0 || strcmp(s, "suspended") == 0 ||
	    strcmp(s, "closed") == 0 || strcmp(s, "purge-due") == 0;
}

static void
lifecycle_boundaries(void)
{
	struct cf_bk_lifecycle_cfg c;
	struct cf_bk_lifecycle_eval e;
	const int64_t since = 1767225600;	/* 2026-01-01 */
	size_t i;

	cf_bk_lifecycle_defaults(&c);
	for (i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		const struct boundary *b = &table[i];
		int64_t at = since + b->days * DAY;
		int64_t probes[3] = { at - 1, at, at + DAY };
		size_t k;

		for (k = 0; k < 3; k++) {
			const char *want = k == 0 ? b->before : b->after;

			CHECK_RC(cf_bk_lifecycle_eval(&c, b->state, since, 0,
			    probes[k], &e), 0);
			CHECK(e.effective != NULL && want != NULL);
			if (strcmp(e.effective, want) != 0) {
				char msg[160];

				snprintf(msg, sizeof(msg), "%s +%lldd %+lld s: "
				    "%.20s, want %.20s", b->state,
				    (long long)b->days,
				    (long long)(probes[k] - at),
				    nz(e.effective), nz(want));
				cf_test_fail(__FILE__, __LINE__, "%s", msg);
			}
			CHECK(e.mount_refused == refused(want));
			CHECK(e.purge_due == (strcmp(want, "purge-due") == 0));
		}
	}
	/* Purge dates. */
	CHECK_RC(cf_bk_lifecycle_eval(&c, "evaluation", since, 0, since, &e),
	    0);
	CHECK(e.purge_at == since + 76 * DAY && e.nsteps == 3);
	CHECK(strcmp(e.effective, "evaluation") == 0 && !e.mount_refused);
	CHECK_RC(cf_bk_lifecycle_eval(&c, "payment-failed", since, 0, since,
	    &e), 0);
	CHECK(e.purge_at == since + 97 * DAY && e.nsteps == 4);
	/* No schedule for active, trial. */
	CHECK_RC(cf_bk_lifecycle_eval(&c, "active", since, 0,
	    since + 3650 * DAY, &e), 0);
	CHECK(strcmp(e.effective, "active") == 0 && e.purge_at == 0);
	CHECK_RC(cf_bk_lifecycle_eval(&c, "trial", since, 0,
	    since + 3650 * DAY, &e), 0);
	CHECK(strcmp(e.effective, "trial") == 0 && e.purge_at == 0);
	CHECK_RC(cf_bk_lifecycle_eval(&c, "purged", since, 0, since, &e), 0);
	CHECK(e.mount_refused);
	CHECK_RC(cf_bk_lifecycle_eval(&c, "bogus", since, 0, since, &e),
	    -EINVAL);
	CHECK(!cf_bk_lifecycle_state_valid("purged"));
	CHECK(!cf_bk_lifecycle_state_valid("locked"));
	CHECK(cf_bk_lifecycle_state_valid("evaluation"));
}

static void
lifecycle_free_idle_and_config(void)
{
	struct cf_bk_lifecycle_cfg c;
	struct cf_bk_lifecycle_eval e;
	const int64_t since = 1767225600;
	int64_t use = since + 40 * DAY;

	cf_bk_lifecycle_defaults(&c);
	/* A use on day 40 moves the purge to day 100. */
	CHECK_RC(cf_bk_lifecycle_eval(&c, "free", since, use,
	    since + 60 * DAY, &e), 0);
	CHECK(strcmp(e.effective, "free") == 0);
	CHECK(e.purge_at == use + 60 * DAY);
	CHECK_RC(cf_bk_lifecycle_eval(&c, "free", since, use,
	    use + 60 * DAY - 1, &e), 0);
	CHECK(!e.purge_due);
	CHECK_RC(cf_bk_lifecycle_eval(&c, "free", since, use, use + 60 * DAY,
	    &e), 0);
	CHECK(e.purge_due);
	/* A use older than since does not count. */
	CHECK_RC(cf_bk_lifecycle_eval(&c, "free", since, since - 99 * DAY,
	    since + 60 * DAY, &e), 0);
	CHECK(e.purge_due);
	/* Configured periods. */
	c.evaluation_active = 30 * DAY;
	c.evaluation_locked = 5 * DAY;
	CHECK_RC(cf_bk_lifecycle_eval(&c, "evaluation", since, 0,
	    since + 30 * DAY, &e), 0);
	CHECK(strcmp(e.effective, "locked") == 0 &&
	    e.purge_at == since + 35 * DAY);
}

/* A retained class: retained until its date, then purge-due; never mounted. */
static void
lifecycle_retained(void)
{
	struct cf_bk_lifecycle_eval e;
	int64_t since = 1700000000, until = since + (int64_t)7 * 365 * DAY;

	cf_bk_lifecycle_eval_retained(since, until, until - 1, &e);
	CHECK(strcmp(nz(e.effective), "retained") == 0 && !e.purge_due);
	CHECK(e.mount_refused && e.purge_at == until && e.nsteps == 2);
	cf_bk_lifecycle_eval_retained(since, until, until, &e);
	CHECK(strcmp(nz(e.effective), "purge-due") == 0 && e.purge_due);
	cf_bk_lifecycle_eval_retained(since, until, until + DAY, &e);
	CHECK(strcmp(nz(e.effective), "purge-due") == 0 && e.mount_refused);
	/* Not a state an operator can set. */
	CHECK(!cf_bk_lifecycle_state_valid("retained"));
}

static const struct cf_test_case cases[] = {
	CF_TEST(lifecycle_boundaries),
	CF_TEST(lifecycle_free_idle_and_config),
	CF_TEST(lifecycle_retained),
};

CF_TEST_MAIN(cases)
