/*
 * bk_retention.c - which snapshots a retention policy keeps.
 *
 * A pure function over snapshot times and a policy: no clock, no I/O, no
 * repository, so the rules can be checked against an independently
 * computed list over years of simulated snapshots in milliseconds.  It
 * follows restic's `forget` (internal/restic/snapshot_policy.go): newest
 * first, one counter and one "last bucket seen" per rule, and a rule with
 * count left also keeps the oldest snapshot.  Differences from restic
 * (UTC buckets, keep_within in fixed-length units, an empty policy keeps
 * everything, no tag rules) are listed in docs/retention.md.
 *
 * It does not group snapshots (the caller runs it once per group) and
 * does not delete anything (cf_bk_repo_snapshot_delete, cf_bk_prune).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cf_backup.h"

int
cf_bk_retention_policy_set(const struct cf_bk_retention_policy *p)
{
	return p->last || p->hourly || p->daily || p->weekly || p->monthly ||
	    p->yearly || p->within > 0;
}

struct order {
	int64_t t;
	size_t i;
};

/* Newest first; equal times: the higher index is newer. */
static int
order_cmp(const void *a, const void *b)
{
	const struct order *x = a, *y = b;

	if (x->t != y->t)
		return x->t > y->t ? -1 : 1;
	return x->i > y->i ? -1 : (x->i < y->i);
}

/* The bucket of time t (ns) for rule r (0 last .. 5 yearly); nr for last. */
static int64_t
bucket(int r, int64_t t, size_t nr)
{
	time_t tt = (time_t)(t / 1000000000);
	struct tm tm;
	char wk[16];

	if (r == 0)
		return (int64_t)nr;
	if (gmtime_r(&tt, &tm) == NULL)
		return (int64_t)nr;
	switch (r) {
	case 1:
		return ((int64_t)(tm.tm_year + 1900) * 1000000) +
		    (tm.tm_mon + 1) * 10000 + tm.tm_mday * 100 + tm.tm_hour;
	case 2:
		return ((int64_t)(tm.tm_year + 1900) * 10000) +
		    (tm.tm_mon + 1) * 100 + tm.tm_mday;
	case 3:
		/* ISO 8601 year and week, as Go's ISOWeek. */
		strftime(wk, sizeof(wk), "%G%V", &tm);
		return strtoll(wk, NULL, 10);
	case 4:
		return ((int64_t)(tm.tm_year + 1900) * 100) + tm.tm_mon + 1;
	default:
		return tm.tm_year + 1900;
	}
}

int
cf_bk_retention_plan(const struct cf_bk_retention_policy *p,
    const int64_t *times, size_t n, unsigned *keep)
{
	static const unsigned bits[6] = { CF_BK_KEEP_LAST, CF_BK_KEEP_HOURLY,
	    CF_BK_KEEP_DAILY, CF_BK_KEEP_WEEKLY, CF_BK_KEEP_MONTHLY,
	    CF_BK_KEEP_YEARLY };
	uint32_t count[6];
	int64_t last[6];
	int seen[6] = { 0 };
	struct order *o;
	uint64_t within_ns = 0;
	size_t k;
	int r;

	if (n == 0)
		return 0;
	memset(keep, 0, n * sizeof(*keep));
	if (!cf_bk_retention_policy_set(p)) {
		for (k = 0; k < n; k++)
			keep[k] = CF_BK_KEEP_NOPOLICY;
		return 0;
	}
	o = malloc(n * sizeof(*o));
	if (o == NULL)
		return -ENOMEM;
	for (k = 0; k < n; k++) {
		o[k].t = times[k];
		o[k].i = k;
	}
	qsort(o, n, sizeof(*o), order_cmp);
	within_ns = p->within >= INT64_MAX / 1000000000 ? UINT64_MAX :
	    (uint64_t)p->within * 1000000000U;
	count[0] = p->last;
	count[1] = p->hourly;
	count[2] = p->daily;
	count[3] = p->weekly;
	count[4] = p->monthly;
	count[5] = p->yearly;
	for (k = 0; k < n; k++) {
		unsigned why = 0;

		for (r = 0; r < 6; r++) {
			int64_t b;

			if (count[r] == 0)
				continue;
			b = bucket(r, o[k].t, k);
			if (!seen[r] || b != last[r] || k == n - 1) {
				/* restic: the oldest is kept while counts remain */
				if (seen[r] && b == last[r])
					why |= CF_BK_KEEP_OLDEST(bits[r]);
				else
					why |= bits[r];
				seen[r] = 1;
				last[r] = b;
				if (count[r] != CF_BK_KEEP_ALL)
					count[r]--;
			}
		}
		/* Age below the newest as unsigned: no overflow at extremes. */
		if (p->within > 0 && (uint64_t)o[0].t - (uint64_t)o[k].t <
		    within_ns)
			why |= CF_BK_KEEP_WITHIN;
		keep[o[k].i] = why;
	}
	free(o);
	return 0;
}

void
cf_bk_retention_reasons(unsigned keep, char *buf, size_t cap)
{
	static const char *const words[] = { "last", "hourly", "daily",
	    "weekly", "monthly", "yearly", "within" };
	size_t i, used = 0;
	int w;

	if (cap == 0)
		return;
	buf[0] = '\0';
	if (keep & CF_BK_KEEP_NOPOLICY) {
		snprintf(buf, cap, "no policy");
		return;
	}
	for (i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		if (!(keep & ((1U << i) | CF_BK_KEEP_OLDEST(1U << i))))
			continue;
		w = snprintf(buf + used, cap - used, "%s%s%s",
		    used ? ", " : "",
		    (keep & CF_BK_KEEP_OLDEST(1U << i)) ? "oldest " : "",
		    words[i]);
		if (w < 0 || (size_t)w >= cap - used)
			return;
		used += (size_t)w;
	}
}

int
cf_bk_duration_parse(const char *s, int64_t *out)
{
	int64_t total = 0, v;
	const char *p = s;

	*out = 0;
	if (*p == '\0')
		return -EINVAL;
	while (*p != '\0') {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		v = 0;
		while (*p >= '0' && *p <= '9') {
			v = v * 10 + (*p - '0');
			if (v > 100000)
				return -EINVAL;
			p++;
		}
		switch (*p) {
		case 'y':
			v *= 365 * 86400;
			break;
		case 'm':
			v *= 30 * 86400;
			break;
		case 'w':
			v *= 7 * 86400;
			break;
		case 'd':
			v *= 86400;
			break;
		case 'h':
			v *= 3600;
			break;
		default:
			return -EINVAL;
		}
		p++;
		total += v;
		if (total > (int64_t)1000 * 365 * 86400)
			return -EINVAL;	/* over 1000 years: a typo */
	}
	*out = total;
	return 0;
}
