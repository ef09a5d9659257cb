/*
 * ks_error.c - operator-facing error messages and exit-code mapping.
 *
 * Library calls return -errno; the sentence that explains a failure is
 * kept per thread so the CLI can print it.  Messages never carry secrets:
 * callers pass tenant names, paths and counts, never key bytes.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "ks_int.h"

static _Thread_local char errbuf[512];
static _Thread_local int errcode;

int
ks_err(int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(errbuf, sizeof(errbuf), fmt, ap);
	va_end(ap);
	errcode = rc;
	return rc;
}

void
ks_err_clear(void)
{
	errbuf[0] = '\0';
	errcode = 0;
}

const char *
cf_ks_last_error(void)
{
	if (errbuf[0] != '\0')
		return errbuf;
	if (errcode != 0)
		return strerror(-errcode);
	return "unknown error";
}

int
cf_ks_exit_code(int rc)
{
	if (rc >= 0)
		return CF_EXIT_OK;
	switch (-rc) {
	case EBADMSG:
	case EPROTO:
		return CF_EXIT_INTEGRITY;
	case EACCES:
	case EPERM:
	case EKEYREJECTED:
		return CF_EXIT_DENIED;
	default:
		return CF_EXIT_FAIL;
	}
}

void
cf_misuse(const char *what)
{
	fprintf(stderr, "coffer: internal API misuse: %s\n", what);
	abort();
}

int64_t
cf_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
