/*
 * cf_test.c - the unit-test harness (see cf_test.h).  Each case runs in
 * the same process, in order; the harness owns one scratch directory per
 * case and removes it afterwards.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "cf_test.h"

static int failed;
static char tmpdir[4096];

void
cf_test_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	failed = 1;
	fprintf(stdout, "# FAIL %s:%d: ", file, line);
	va_start(ap, fmt);
	vfprintf(stdout, fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	if (remove(path) != 0 && errno != ENOENT)
		fprintf(stdout, "# cannot remove %s: %s\n", path,
		    strerror(errno));
	return 0;
}

const char *
cf_test_tmpdir(void)
{
	const char *base;

	if (tmpdir[0] != '\0')
		return tmpdir;
	base = getenv("TMPDIR");
	if (base == NULL || base[0] == '\0')
		base = "/tmp";
	snprintf(tmpdir, sizeof(tmpdir), "%s/cf_test.XXXXXX", base);
	if (mkdtemp(tmpdir) == NULL) {
		fprintf(stdout, "Bail out! mkdtemp: %s\n", strerror(errno));
		exit(99);
	}
	return tmpdir;
}

static void
tmpdir_cleanup(void)
{
	if (tmpdir[0] == '\0')
		return;
	nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	tmpdir[0] = '\0';
}

const char *
cf_test_vector_path(const char *name)
{
	static char path[4096];
	const char *dir = getenv("CF_VECTORS_DIR");

	if (dir == NULL)
		dir = "tests/vectors";
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return path;
}

unsigned char *
cf_test_read_file(const char *path, size_t *len)
{
	FILE *f;
	unsigned char *buf = NULL;
	long sz;

	*len = 0;
	f = fopen(path, "rb");
	if (f == NULL)
		return NULL;
	if (fseek(f, 0, SEEK_END) != 0 || (sz = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) != 0)
		goto out;
	buf = malloc((size_t)sz + 1);
	if (buf == NULL)
		goto out;
	if (fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
		free(buf);
		buf = NULL;
		goto out;
	}
	buf[sz] = '\0';
	*len = (size_t)sz;
out:
	fclose(f);
	return buf;
}

int
cf_test_write_file(const char *path, const void *buf, size_t len)
{
	FILE *f = fopen(path, "wb");
	int rc = 0;

	if (f == NULL)
		return -errno;
	if (fwrite(buf, 1, len, f) != len)
		rc = -EIO;
	if (fclose(f) != 0 && rc == 0)
		rc = -errno;
	return rc;
}

unsigned char *
cf_test_unhex(const char *hex, size_t *len)
{
	size_t hl = strlen(hex);
	unsigned char *bin = malloc(hl / 2 + 1);
	size_t got = 0;

	*len = 0;
	if (bin == NULL)
		return NULL;
	if (hl % 2 != 0 || sodium_hex2bin(bin, hl / 2 + 1, hex, hl, NULL,
	    &got, NULL) != 0 || got != hl / 2) {
		free(bin);
		return NULL;
	}
	*len = got;
	return bin;
}

int
cf_test_run(const struct cf_test_case *cases, size_t n, int argc, char **argv)
{
	size_t i, run = 0, bad = 0;
	int j, want;

	if (sodium_init() < 0) {
		printf("Bail out! sodium_init failed\n");
		return 99;
	}
	printf("TAP version 13\n");
	for (i = 0; i < n; i++) {
		want = argc <= 1;
		for (j = 1; j < argc; j++)
			if (strcmp(argv[j], cases[i].name) == 0)
				want = 1;
		if (!want)
			continue;
		failed = 0;
		cases[i].fn();
		tmpdir_cleanup();
		run++;
		if (failed)
			bad++;
		printf("%s %zu - %s\n", failed ? "not ok" : "ok", run,
		    cases[i].name);
		fflush(stdout);
	}
	printf("1..%zu\n", run);
	return bad == 0 ? 0 : 1;
}
