/*
 * bk_lifecycle.c - a tenant's deletion schedule as a pure function of
 * the state an operator set, the date it was set, the last use and the
 * configured periods (REQUIREMENTS.md, Retention and deletion schedules;
 * docs/retention.md, Lifecycle).
 *
 * It stores nothing and reads no clock: the CLI keeps state, since and
 * last use in tenant.json and passes cf_ks_now(), so tests move through
 * every boundary with COFFER_NOW.  It does not purge (tools/ does).
 */
#include <errno.h>
#include <string.h>

#include "cf_backup.h"

#define DAY 86400

static const char *const settable[] = { "active", "trial", "trial-ended",
	"cancelled", "payment-failed", "closed", "free", "evaluation" };

/* Effective states in which the store may not be mounted. */
static const char *const refused[] = { "locked", "suspended", "closed",
	"purge-due", "purged" };

void
cf_bk_lifecycle_defaults(struct cf_bk_lifecycle_cfg *c)
{
	c->trial_ended_purge = 12 * DAY;
	c->cancelled_purge = 90 * DAY;
	c->payment_failed_suspend = 15 * DAY;
	c->payment_failed_close = 90 * DAY;
	c->closed_purge = 7 * DAY;
	c->free_idle_purge = 60 * DAY;
	c->evaluation_active = 60 * DAY;
	c->evaluation_locked = 16 * DAY;
}

int
cf_bk_lifecycle_state_valid(const char *state)
{
	size_t i;

	for (i = 0; i < sizeof(settable) / sizeof(settable[0]); i++)
		if (strcmp(state, settable[i]) == 0)
			return 1;
	return 0;
}

static void
step(struct cf_bk_lifecycle_eval *e, const char *state, int64_t at)
{
	e->steps[e->nsteps].state = state;
	e->steps[e->nsteps].at = at;
	e->nsteps++;
}

int
cf_bk_lifecycle_eval(const struct cf_bk_lifecycle_cfg *c, const char *state,
    int64_t since, int64_t last_use, int64_t now,
    struct cf_bk_lifecycle_eval *out)
{
	size_t i;

	memset(out, 0, sizeof(*out));
	if (strcmp(state, "purged") == 0) {
		step(out, "purged", since);
	} else if (!cf_bk_lifecycle_state_valid(state)) {
		return -EINVAL;
	} else if (strcmp(state, "trial-ended") == 0) {
		step(out, "trial-ended", since);
		step(out, "purge-due", since + c->trial_ended_purge);
	} else if (strcmp(state, "cancelled") == 0) {
		step(out, "cancelled", since);
		step(out, "purge-due", since + c->cancelled_purge);
	} else if (strcmp(state, "payment-failed") == 0) {
		step(out, "payment-failed", since);
		step(out, "suspended", since + c->payment_failed_suspend);
		step(out, "closed", since + c->payment_failed_close);
		step(out, "purge-due", since + c->payment_failed_close +
		    c->closed_purge);
	} else if (strcmp(state, "closed") == 0) {
		step(out, "closed", since);
		step(out, "purge-due", since + c->closed_purge);
	} else if (strcmp(state, "free") == 0) {
		/* Idle time counts from the later of the two. */
		step(out, "free", since);
		step(out, "purge-due", (last_use > since ? last_use : since) +
		    c->free_idle_purge);
	} else if (strcmp(state, "evaluation") == 0) {
		step(out, "evaluation", since);
		step(out, "locked", since + c->evaluation_active);
		step(out, "purge-due", since + c->evaluation_active +
		    c->evaluation_locked);
	} else {
		step(out, strcmp(state, "trial") == 0 ? "trial" : "active",
		    since);
	}
	out->effective = out->steps[0].state;
	for (i = 1; i < out->nsteps; i++)
		if (now >= out->steps[i].at)
			out->effective = out->steps[i].state;
	for (i = 0; i < out->nsteps; i++)
		if (strcmp(out->steps[i].state, "purge-due") == 0)
			out->purge_at = out->steps[i].at;
	out->purge_due = out->purge_at != 0 && now >= out->purge_at;
	for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		if (strcmp(out->effective, refused[i]) == 0)
			out->mount_refused = 1;
	return 0;
}

void
cf_bk_lifecycle_eval_retained(int64_t since, int64_t until, int64_t now,
    struct cf_bk_lifecycle_eval *out)
{
	memset(out, 0, sizeof(*out));
	step(out, "retained", since);
	step(out, "purge-due", until);
	out->effective = now >= until ? "purge-due" : "retained";
	out->purge_at = until;
	out->purge_due = now >= until;
	out->mount_refused = 1;		/* no live store, backups only */
}
