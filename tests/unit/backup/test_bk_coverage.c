/*
 * test_bk_coverage.c - read-data coverage (cf_bk_verify_coverage and the
 * verify-coverage file, docs/format/verify-coverage.md) on a repository of
 * 10 packs built with the library: a 5-day period reads 2 packs a day,
 * never-read first, and on day 4 whatever would turn 5 days old, so all
 * 10 are read within 5 daily runs, and then each again before it is 5
 * days old; after a 20-day gap every pack is due at
 * once; a damaged pack stays due; the file's syntax rules (COV-1..COV-4)
 * and its encoding round trip.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bk_test.h"

#define NPACKS 10
#define DAY 86400
#define T0 1930132800		/* 2031-03-01T12:00:00Z */

static const unsigned char tenant[16] = { 0xd1, 0xd2, 0xd3 };

struct fixture {
	char dir[4096];
	struct cf_bk_keys *k;
	struct cf_bk_repo *r;
	unsigned char blob[NPACKS][32];
};

static int
build(struct fixture *f, const char *tag)
{
	struct cf_bk_store *s = NULL;
	struct cf_bk_writer *w = NULL;
	unsigned char *d;
	char url[4200];
	unsigned i;
	int rc;

	memset(f, 0, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "%s/%s", cf_test_tmpdir(), tag);
	f->k = bkt_keys_x(0x50);
	if (f->k == NULL)
		return -ENOMEM;
	snprintf(url, sizeof(url), "file://%s", f->dir);
	rc = cf_bk_store_open_url(&s, url, CF_BK_STORE_CREATE);
	if (rc == 0)
		rc = cf_bk_repo_init(&f->r, s, f->k, tenant);
	if (rc < 0 && f->r == NULL)
		cf_bk_store_free(s);
	if (rc == 0)
		rc = cf_bk_writer_new(&w, f->r, 0);
	/* One blob per flush: one pack each. */
	for (i = 0; rc == 0 && i < NPACKS; i++) {
		d = bkt_random(2000, 100 + i);
		if (d == NULL)
			rc = -ENOMEM;
		if (rc == 0)
			rc = cf_bk_writer_add(w, CF_BK_BLOB_DATA, d, 2000,
			    f->blob[i]);
		free(d);
		if (rc == 0)
			rc = cf_bk_writer_flush(w);
	}
	cf_bk_writer_free(w);
	return rc;
}

static void
fixture_free(struct fixture *f)
{
	cf_bk_repo_free(f->r);
	cf_bk_keys_free(f->k);
}

/* Packs in cov never read, and read exactly at t. */
static void
tally(const struct cf_bk_coverage *cov, int64_t t, size_t *never,
    size_t *at)
{
	unsigned char id[32];
	int64_t first, last;
	size_t i;

	*never = *at = 0;
	for (i = 0; i < cf_bk_coverage_count(cov); i++) {
		cf_bk_coverage_get(cov, i, id, &first, &last);
		if (last == 0)
			(*never)++;
		if (last == t)
			(*at)++;
	}
}

static void
daily_rotation(void)
{
	struct fixture f;
	struct cf_bk_coverage *cov = NULL;
	struct cf_bk_verify_result *res = NULL;
	unsigned char id[32];
	int64_t first, last, oldest;
	size_t never, at, i;
	int day;

	CHECK_RC(build(&f, "rot"), 0);
	CHECK_RC(cf_bk_coverage_new(&cov), 0);
	CHECK_RC(cf_bk_verify_coverage(f.r, cov, T0, 0, &res), -EINVAL);
	/* Days 0..3: 2 a day (ceil(10 / 5)), never-read first. */
	for (day = 0; day < 4; day++) {
		CHECK_RC(cf_bk_verify_coverage(f.r, cov, T0 + day * DAY, 5,
		    &res), 0);
		CHECK(!cf_bk_verify_damaged(res));
		CHECK(res->packs == NPACKS && res->packs_due == 2 &&
		    res->packs_read == 2);
		CHECK(res->packs_never_read == (uint64_t)(8 - 2 * day));
		cf_bk_verify_result_free(res);
		res = NULL;
		tally(cov, T0 + day * DAY, &never, &at);
		CHECK(at == 2 && never == (size_t)(8 - 2 * day));
	}
	/*
	 * Day 4: the packs read on day 0 and the 2 first seen then and never
	 * read would be 5 days old before the next run: all 4 are read.
	 */
	CHECK_RC(cf_bk_verify_coverage(f.r, cov, T0 + 4 * DAY, 5, &res), 0);
	CHECK(res->packs_due == 4 && res->packs_read == 4 &&
	    res->packs_never_read == 0 && res->oldest_read == T0 + DAY);
	cf_bk_verify_result_free(res);
	res = NULL;
	CHECK(cf_bk_coverage_count(cov) == NPACKS);
	/* Days 5..14: every pack is read again before it is 5 days old. */
	for (day = 5; day < 15; day++) {
		CHECK_RC(cf_bk_verify_coverage(f.r, cov, T0 + day * DAY, 5,
		    &res), 0);
		CHECK(res->packs_read >= 2 && res->packs_read < NPACKS);
		oldest = res->oldest_read;
		cf_bk_verify_result_free(res);
		res = NULL;
		for (i = 0; i < NPACKS; i++) {
			cf_bk_coverage_get(cov, i, id, &first, &last);
			CHECK(first == T0 && last > 0);
			CHECK(T0 + day * DAY - last < 5 * DAY);
			CHECK(last >= oldest);
		}
	}
	/* A 20-day gap: everything is overdue, all read at once. */
	CHECK_RC(cf_bk_verify_coverage(f.r, cov, T0 + 35 * DAY, 5, &res), 0);
	CHECK(res->packs_due == NPACKS && res->packs_read == NPACKS);
	CHECK(res->oldest_read == T0 + 35 * DAY);
	cf_bk_verify_result_free(res);
	cf_bk_coverage_free(cov);
	fixture_free(&f);
}

static void
damaged_stays_due(void)
{
	struct fixture f;
	struct cf_bk_coverage *cov = NULL;
	struct cf_bk_verify_result *res = NULL;
	struct cf_bk_blob_loc loc;
	unsigned char id[32], c;
	int64_t first, last;
	char hex[65], path[4400];
	size_t i, found = 0;
	int fd;

	CHECK_RC(build(&f, "dmg"), 0);
	CHECK_RC(cf_bk_coverage_new(&cov), 0);
	/* Period 1 day: every pack is due every day. */
	CHECK_RC(cf_bk_verify_coverage(f.r, cov, T0, 1, &res), 0);
	CHECK(res->packs_read == NPACKS && res->packs_never_read == 0);
	cf_bk_verify_result_free(res);
	res = NULL;
	CHECK_RC(cf_bk_index_lookup(cf_bk_repo_index(f.r), CF_BK_BLOB_DATA,
	    f.blob[3], &loc), 0);
	cf_bk_id_hex(loc.pack, hex);
	snprintf(path, sizeof(path), "%s/data/%.2s/%s", f.dir, hex, hex);
	fd = open(path, O_RDWR);
	CHECK(fd >= 0);
	CHECK(pread(fd, &c, 1, (off_t)loc.offset + 10) == 1);
	c ^= 0x01;
	CHECK(pwrite(fd, &c, 1, (off_t)loc.offset + 10) == 1);
	close(fd);
	CHECK_RC(cf_bk_verify_coverage(f.r, cov, T0 + DAY, 1, &res), 0);
	CHECK(cf_bk_verify_damaged(res) && res->packs_bad == 1);
	cf_bk_verify_result_free(res);
	for (i = 0; i < cf_bk_coverage_count(cov); i++) {
		cf_bk_coverage_get(cov, i, id, &first, &last);
		if (memcmp(id, loc.pack, 32) == 0) {
			found = 1;
			CHECK(last == T0);	/* not marked read */
		} else {
			CHECK(last == T0 + DAY);
		}
	}
	CHECK(found == 1);
	cf_bk_coverage_free(cov);
	fixture_free(&f);
}

/* [COV-1] [COV-2] [COV-3]: what the decoder accepts and rejects. */
static void
file_syntax(void)
{
	static const char *const bad[] = {
		"",
		"coffer-verify-coverage 2\n",
		"coffer-verify-coverage 1",
		"coffer-verify-coverage 1\n"
		"ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB"
		" 1 1\n",
		"coffer-verify-coverage 1\n"
		"abababababababababababababababababababababababababababababababab"
		" 01 1\n",
		"coffer-verify-coverage 1\n"
		"abababababababababababababababababababababababababababababababab"
		" -1 1\n",
		"coffer-verify-coverage 1\n"
		"abababababababababababababababababababababababababababababababab"
		" 1  1\n",
		"coffer-verify-coverage 1\n"
		"abababababababababababababababababababababababababababababababab"
		" 1 1",
		"coffer-verify-coverage 1\n"
		"abababababababababababababababababababababababababababababababab"
		" 4611686018427387905 1\n",
		"coffer-verify-coverage 1\n"
		"abababababababababababababababababababababababababababababababab"
		" 1 1\n"
		"abababababababababababababababababababababababababababababababab"
		" 2 2\n",
	};
	static const char good[] = "coffer-verify-coverage 1\n"
	    "abababababababababababababababababababababababababababababababab"
	    " 1930132800 0\n"
	    "0101010101010101010101010101010101010101010101010101010101010101"
	    " 1930132800 1932724800\n";
	static const char sorted[] = "coffer-verify-coverage 1\n"
	    "0101010101010101010101010101010101010101010101010101010101010101"
	    " 1930132800 1932724800\n"
	    "abababababababababababababababababababababababababababababababab"
	    " 1930132800 0\n";
	struct cf_bk_coverage *c = NULL;
	unsigned char id[32];
	int64_t first, last;
	char *text = NULL;
	size_t i, len;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK_RC(cf_bk_coverage_parse(bad[i], strlen(bad[i]), &c),
		    -EPROTO);
		CHECK(c == NULL);
	}
	CHECK_RC(cf_bk_coverage_parse(good, strlen(good), &c), 0);
	CHECK(cf_bk_coverage_count(c) == 2);
	cf_bk_coverage_get(c, 0, id, &first, &last);
	CHECK(id[0] == 0x01 && first == 1930132800 && last == 1932724800);
	cf_bk_coverage_get(c, 1, id, &first, &last);
	CHECK(id[0] == 0xab && first == 1930132800 && last == 0);
	/* The writer sorts by pack id: this is the spec's example. */
	CHECK_RC(cf_bk_coverage_format(c, &text, &len), 0);
	CHECK(len == 190 && len == strlen(sorted) &&
	    memcmp(text, sorted, len) == 0);
	free(text);
	cf_bk_coverage_free(c);
}

static const struct cf_test_case cases[] = {
	CF_TEST(daily_rotation),
	CF_TEST(damaged_stays_due),
	CF_TEST(file_syntax),
};

CF_TEST_MAIN(cases)
