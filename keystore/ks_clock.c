/*
 * ks_clock.c - the one clock every schedule reads, and ISO 8601 dates.
 *
 * COFFER_NOW is a test-only override (docs/format/home.md), compiled in
 * only with -Dtest_clock=true: it lets tests simulate lockout expiry and
 * years of schedules in seconds.  A production build ignores it, since
 * whoever runs coffer could otherwise wind the clock past a lockout.
 * Only the two forms DESIGN.md names are accepted; anything else is an
 * error rather than a guess.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ks_int.h"

static int
digits(const char *s, size_t n, int *out)
{
	int v = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return 0;
}

int
cf_ks_time_parse(const char *s, time_t *out)
{
	struct tm tm;
	size_t len = strlen(s);
	int y, mo, d, h = 0, mi = 0, se = 0;
	time_t t;

	*out = 0;
	if (len != 10 && len != 20)
		goto bad;
	if (digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) ||
	    s[7] != '-' || digits(s + 8, 2, &d))
		goto bad;
	if (len == 20 && (s[10] != 'T' || digits(s + 11, 2, &h) ||
	    s[13] != ':' || digits(s + 14, 2, &mi) || s[16] != ':' ||
	    digits(s + 17, 2, &se) || s[19] != 'Z'))
		goto bad;
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 ||
	    mi > 59 || se > 60)
		goto bad;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = se;
	t = timegm(&tm);
	/* timegm normalises 2026-02-31 to March: reject such dates. */
	if (t == (time_t)-1 || tm.tm_mday != d || tm.tm_mon != mo - 1)
		goto bad;
	*out = t;
	return 0;
bad:
	return ks_err(-EINVAL, "bad date '%.40s' (want 2026-01-31 or "
	    "2026-01-31T12:00:00Z)", s);
}

void
cf_ks_time_format(time_t t, char *buf, size_t len)
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
		if (len > 0)
			snprintf(buf, len, "%lld", (long long)t);
	}
}

time_t
cf_ks_now(void)
{
#ifdef CF_TEST_CLOCK
	const char *e = getenv("COFFER_NOW");
	time_t t;

	if (e != NULL && e[0] != '\0' && cf_ks_time_parse(e, &t) == 0)
		return t;
#endif
	return time(NULL);
}
