/*
 * test_bk_prune.c - retention and prune (docs/retention.md).
 *
 * Retention: two simulated years of daily snapshots under a GFS policy,
 * compared with a list computed independently (by hand, from calendar
 * grouping in tests/unit/backup/README-style comments below), keep-last,
 * keep-within, an empty policy, and reason strings.
 *
 * Prune: dead packs deleted, mostly-empty packs repacked, shared blobs
 * kept, and a crash injected at every mutating store call of a prune
 * (a fault store fails the Nth put or delete and every one after it),
 * after which the repository verifies clean, every kept snapshot still
 * reads, and a rerun finishes the job.  Locks: a backup's shared lock
 * keeps prune's exclusive lock out and the other way round.
 *
 * Re-encryption ([BK-REENC-1]): packs, indexes and snapshots under an
 * older root key version move to the newest, with the same crash at
 * every mutating store call.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bk_test.h"

static const unsigned char tenant_a[16] = { 0xa1, 0xa2, 0xa3 };

/* ---- retention ------------------------------------------------------------- */

static int64_t
day(const char *iso)
{
	time_t t;

	if (cf_ks_time_parse(iso, &t) < 0)
		return -1;
	return (int64_t)t;
}

/*
 * 2025-01-01 .. 2026-12-31 at 03:00, keep daily 7, weekly 5, monthly 12,
 * yearly 3.  Expected: the last 7 days; the newest day of each of the 5
 * newest ISO weeks (Sundays 12-06, 12-13, 12-20, 12-27 and the running
 * week's 12-31); the newest day of each of the 12 newest months; the
 * newest day of each year, and since only 2 of 3 years exist, the oldest
 * snapshot (restic's "oldest yearly").  Computed with Python's calendar
 * (isocalendar, grouping by key, max per group), not with this code.
 */
static const char *const gfs_expected[] = {
	"2025-01-01", "2025-12-31", "2026-01-31", "2026-02-28", "2026-03-31",
	"2026-04-30", "2026-05-31", "2026-06-30", "2026-07-31", "2026-08-31",
	"2026-09-30", "2026-10-31", "2026-11-30", "2026-12-06", "2026-12-13",
	"2026-12-20", "2026-12-25", "2026-12-26", "2026-12-27", "2026-12-28",
	"2026-12-29", "2026-12-30", "2026-12-31",
};

#define NDAYS 730
#define NS 1000000000LL

static void
retention_gfs_two_years(void)
{
	struct cf_bk_retention_policy p = { 0, 0, 7, 5, 12, 3, 0 };
	int64_t times[NDAYS], t0 = day("2025-01-01T03:00:00Z");
	unsigned keep[NDAYS], perm[NDAYS];
	char buf[128], reasons[128];
	size_t i, j, kept = 0;

	CHECK(t0 > 0);
	/* Shuffled order: the engine must not depend on input order. */
	for (i = 0; i < NDAYS; i++)
		perm[i] = (unsigned)i;
	for (i = NDAYS - 1; i > 0; i--) {
		j = (i * 7919 + 13) % (i + 1);
		unsigned x = perm[i];
		perm[i] = perm[j];
		perm[j] = x;
	}
	for (i = 0; i < NDAYS; i++)
		times[i] = (t0 + (int64_t)perm[i] * 86400) * NS;
	CHECK_RC(cf_bk_retention_plan(&p, times, NDAYS, keep), 0);
	for (i = 0; i < NDAYS; i++) {
		int want = 0;

		cf_ks_time_format((time_t)(times[i] / NS), buf, sizeof(buf));
		buf[10] = '\0';
		for (j = 0; j < sizeof(gfs_expected) / sizeof(*gfs_expected);
		    j++)
			if (strcmp(gfs_expected[j], buf) == 0)
				want = 1;
		if ((keep[i] != 0) != want)
			cf_test_fail(__FILE__, __LINE__, "%s: kept %u, want %d",
			    buf, keep[i], want);
		kept += keep[i] != 0;
		if (strcmp(buf, "2025-01-01") == 0) {
			cf_bk_retention_reasons(keep[i], reasons,
			    sizeof(reasons));
			CHECK(strcmp(reasons, "oldest yearly") == 0);
		}
		if (strcmp(buf, "2026-12-31") == 0) {
			cf_bk_retention_reasons(keep[i], reasons,
			    sizeof(reasons));
			CHECK(strcmp(reasons,
			    "daily, weekly, monthly, yearly") == 0);
		}
	}
	CHECK(kept == sizeof(gfs_expected) / sizeof(*gfs_expected));
}

static void
retention_last_within_none(void)
{
	struct cf_bk_retention_policy p;
	int64_t times[NDAYS], t0 = day("2025-01-01T03:00:00Z"), w;
	unsigned keep[NDAYS];
	size_t i, kept;

	for (i = 0; i < NDAYS; i++)
		times[i] = (t0 + (int64_t)i * 86400) * NS;
	/* keep_last 3: the three newest. */
	memset(&p, 0, sizeof(p));
	p.last = 3;
	CHECK_RC(cf_bk_retention_plan(&p, times, NDAYS, keep), 0);
	for (i = 0, kept = 0; i < NDAYS; i++)
		kept += keep[i] != 0;
	CHECK(kept == 3 && keep[NDAYS - 1] == CF_BK_KEEP_LAST &&
	    keep[NDAYS - 3] != 0 && keep[NDAYS - 4] == 0);
	/* within 30d of the newest (not of now): 12-02 .. 12-31. */
	memset(&p, 0, sizeof(p));
	CHECK_RC(cf_bk_duration_parse("30d", &w), 0);
	p.within = w;
	CHECK_RC(cf_bk_retention_plan(&p, times, NDAYS, keep), 0);
	for (i = 0, kept = 0; i < NDAYS; i++)
		kept += keep[i] != 0;
	CHECK(kept == 30);
	CHECK(keep[NDAYS - 30] == CF_BK_KEEP_WITHIN && keep[NDAYS - 31] == 0);
	/* No rule: everything stays. */
	memset(&p, 0, sizeof(p));
	CHECK_RC(cf_bk_retention_plan(&p, times, NDAYS, keep), 0);
	for (i = 0; i < NDAYS; i++)
		CHECK(keep[i] == CF_BK_KEEP_NOPOLICY);
	/* KEEP_ALL daily keeps one per day: all of them here. */
	p.daily = CF_BK_KEEP_ALL;
	CHECK_RC(cf_bk_retention_plan(&p, times, NDAYS, keep), 0);
	for (i = 0; i < NDAYS; i++)
		CHECK(keep[i] == CF_BK_KEEP_DAILY);
	/* Two a day, daily 2: the newer one of each of the last two days. */
	for (i = 0; i < 6; i++)
		times[i] = (t0 + (int64_t)(i / 2) * 86400 + (int64_t)(i % 2) *
		    3600) * NS;
	memset(&p, 0, sizeof(p));
	p.daily = 2;
	CHECK_RC(cf_bk_retention_plan(&p, times, 6, keep), 0);
	CHECK(keep[5] && !keep[4] && keep[3] && !keep[2] && !keep[1] &&
	    !keep[0]);
	/* Durations. */
	CHECK_RC(cf_bk_duration_parse("1y2m3w4d5h", &w), 0);
	CHECK(w == 365 * 86400 + 60 * 86400 + 21 * 86400 + 4 * 86400 +
	    5 * 3600);
	CHECK_RC(cf_bk_duration_parse("", &w), -EINVAL);
	CHECK_RC(cf_bk_duration_parse("5", &w), -EINVAL);
	CHECK_RC(cf_bk_duration_parse("5x", &w), -EINVAL);
	CHECK_RC(cf_bk_duration_parse("d", &w), -EINVAL);
}

/* ---- a repository with snapshots ------------------------------------------- */

struct fix {
	char url[4096];
	struct cf_bk_keys *k;
	unsigned char snap[8][32];	/* storage ids */
	unsigned char uniq[8][32];	/* each snapshot's own blob */
	unsigned char shared[32];	/* in every snapshot */
	int nsnaps;
};

static struct cf_bk_repo *
fix_open(struct fix *f, int create)
{
	struct cf_bk_store *s = NULL;
	struct cf_bk_repo *r = NULL;

	if (cf_bk_store_open_url(&s, f->url, create ? CF_BK_STORE_CREATE :
	    0) < 0)
		return NULL;
	if ((create ? cf_bk_repo_init(&r, s, f->k, tenant_a) :
	    cf_bk_repo_open(&r, s, f->k, tenant_a)) < 0) {
		cf_bk_store_free(s);
		return NULL;
	}
	if (cf_bk_repo_index_load(r, NULL) < 0) {
		cf_bk_repo_free(r);
		return NULL;
	}
	return r;
}

/* Snapshot i: file "u" (100 kB of its own) and "s" (5 kB shared). */
static int
add_snap(struct fix *f, struct cf_bk_repo *r, int i)
{
	struct cf_bk_writer *w = NULL;
	struct cf_bk_node nodes[2];
	struct cf_bk_item iu, is;
	struct cf_bk_tree t = { nodes, 2, NULL };
	struct cf_bk_snapshot s;
	unsigned char *u = bkt_random(100000, 100 + (unsigned)i);
	unsigned char *sh = bkt_random(5000, 7), tree[32];
	char host[] = "h", path[] = "/", cons[] = "offline";
	char *paths[] = { path };
	int rc;

	rc = cf_bk_writer_new(&w, r, 0);
	if (rc < 0 || u == NULL || sh == NULL)
		goto out;
	rc = cf_bk_writer_add(w, CF_BK_BLOB_DATA, u, 100000, f->uniq[i]);
	if (rc == 0)
		rc = cf_bk_writer_add(w, CF_BK_BLOB_DATA, sh, 5000, f->shared);
	if (rc < 0)
		goto out;
	memset(nodes, 0, sizeof(nodes));
	memset(&iu, 0, sizeof(iu));
	memset(&is, 0, sizeof(is));
	memcpy(iu.id, f->uniq[i], 32);
	memcpy(is.id, f->shared, 32);
	nodes[0].type = nodes[1].type = CF_BK_NODE_FILE;
	nodes[0].mode = nodes[1].mode = 0644;
	nodes[0].name = "u";
	nodes[0].size = 100000;
	nodes[0].items = &iu;
	nodes[0].nitems = 1;
	nodes[1].name = "s";
	nodes[1].size = 5000;
	nodes[1].items = &is;
	nodes[1].nitems = 1;
	rc = cf_bk_writer_add_tree(w, &t, tree);
	if (rc == 0)
		rc = cf_bk_writer_flush(w);
	if (rc < 0)
		goto out;
	memset(&s, 0, sizeof(s));
	s.time = (int64_t)(1000 + i) * 1000000000;
	memcpy(s.tenant, tenant_a, 16);
	s.hostname = host;
	s.paths = paths;
	s.npaths = 1;
	s.consistency = cons;
	memcpy(s.tree, tree, 32);
	rc = cf_bk_repo_snapshot_save(r, &s, f->snap[i]);
out:
	cf_bk_writer_free(w);
	free(u);
	free(sh);
	return rc;
}

static int
fix_build(struct fix *f, const char *tag, int n)
{
	struct cf_bk_repo *r;
	int i, rc = 0;

	memset(f, 0, sizeof(*f));
	snprintf(f->url, sizeof(f->url), "file://%s/%s", cf_test_tmpdir(),
	    tag);
	f->k = bkt_keys_x(0x30);
	if (f->k == NULL)
		return -ENOMEM;
	r = fix_open(f, 1);
	if (r == NULL)
		return -EIO;
	for (i = 0; i < n && rc == 0; i++)
		rc = add_snap(f, r, i);
	f->nsnaps = n;
	cf_bk_repo_free(r);
	return rc;
}

static int
count_cb(void *arg, const char *name, uint64_t size)
{
	(void)name;
	(void)size;
	(*(size_t *)arg)++;
	return 0;
}

static size_t
count(struct cf_bk_repo *r, enum cf_bk_kind kind)
{
	size_t n = 0;

	if (cf_bk_store_list(cf_bk_repo_store(r), kind, count_cb, &n) != 0)
		return (size_t)-1;
	return n;
}

/* 0 if verify finds no damage and no orphan, and snapshot i reads. */
static int
check_repo(struct fix *f, struct cf_bk_repo *r, const int *alive,
    int orphans_ok)
{
	struct cf_bk_verify_opts vo = { 1, 100, 1 };
	struct cf_bk_verify_result *res = NULL;
	unsigned char *buf;
	size_t len;
	int i, rc;

	rc = cf_bk_verify(r, &vo, &res);
	if (rc < 0)
		return rc;
	if (cf_bk_verify_damaged(res) ||
	    (!orphans_ok && res->packs_orphan != 0)) {
		fprintf(stderr, "# damaged %d orphans %llu\n",
		    cf_bk_verify_damaged(res),
		    (unsigned long long)res->packs_orphan);
		cf_bk_verify_result_free(res);
		return -EBADMSG;
	}
	cf_bk_verify_result_free(res);
	rc = cf_bk_repo_index_load(r, NULL);
	if (rc < 0)
		return rc;
	for (i = 0; i < f->nsnaps; i++) {
		if (!alive[i])
			continue;
		rc = cf_bk_repo_blob_load(r, CF_BK_BLOB_DATA, f->uniq[i], &buf,
		    &len);
		if (rc < 0)
			return rc;
		free(buf);
	}
	return cf_bk_repo_blob_load(r, CF_BK_BLOB_DATA, f->shared, &buf,
	    &len) < 0 ? -ENOENT : (free(buf), 0);
}

static void
prune_basic(void)
{
	struct fix f;
	struct cf_bk_repo *r;
	struct cf_bk_lock *l = NULL;
	struct cf_bk_prune_opts o = { 1, 0 };
	struct cf_bk_prune_stats st;
	int alive[4] = { 0, 1, 0, 1 };
	unsigned char *buf;
	size_t len;

	CHECK_RC(fix_build(&f, "basic", 4), 0);
	r = fix_open(&f, 0);
	CHECK(r != NULL);
	/* Per snapshot a data pack and a tree pack (trees kept apart). */
	CHECK(count(r, CF_BK_KIND_PACK) == 8);
	CHECK_RC(cf_bk_repo_lock(r, 1, NULL, &l), 0);
	CHECK_RC(cf_bk_repo_snapshot_delete(r, f.snap[0]), 0);
	CHECK_RC(cf_bk_repo_snapshot_delete(r, f.snap[2]), 0);
	/* Dry run: counts, changes nothing. */
	CHECK_RC(cf_bk_prune(r, l, &o, &st), 0);
	/* Dead whole: snapshot 2's data pack, 0's and 2's tree packs. */
	CHECK(st.snapshots == 2 && st.packs == 8 && st.packs_deleted == 3);
	CHECK(st.blobs_dead == 4 && st.blobs_live == 5);
	CHECK(count(r, CF_BK_KIND_PACK) == 8);
	/*
	 * Snapshot 0's pack holds the shared blob: kept without repack,
	 * repacked (its live bytes are ~5 %) with repack_pct 50.
	 */
	o.dry_run = 0;
	CHECK_RC(cf_bk_prune(r, l, &o, &st), 0);
	CHECK(st.packs_deleted == 3 && st.packs_repacked == 0);
	CHECK(count(r, CF_BK_KIND_PACK) == 5);
	CHECK(count(r, CF_BK_KIND_INDEX) == 1);
	CHECK_RC(cf_bk_repo_blob_load(r, CF_BK_BLOB_DATA, f.uniq[2], &buf,
	    &len), -ENOENT);
	CHECK_RC(check_repo(&f, r, alive, 0), 0);
	o.repack_pct = 50;
	CHECK_RC(cf_bk_prune(r, l, &o, &st), 0);
	CHECK(st.packs_repacked == 1 && st.packs_written == 1);
	CHECK(count(r, CF_BK_KIND_PACK) == 5);
	CHECK_RC(check_repo(&f, r, alive, 0), 0);
	CHECK_RC(cf_bk_repo_blob_load(r, CF_BK_BLOB_DATA, f.uniq[0], &buf,
	    &len), -ENOENT);
	/* Idempotent. */
	CHECK_RC(cf_bk_prune(r, l, &o, &st), 0);
	CHECK(st.packs_deleted == 0 && st.packs_repacked == 0);
	CHECK_RC(cf_bk_lock_release(l), 0);
	cf_bk_repo_free(r);
	cf_bk_keys_free(f.k);
}

/* ---- crash injection --------------------------------------------------------- */

struct fault {
	struct cf_bk_store *inner;
	int countdown;		/* mutations left before failing; <0 never */
	int hit;
};

static int
f_mut(struct fault *f, enum cf_bk_kind kind)
{
	if (kind == CF_BK_KIND_LOCK || f->countdown < 0)
		return 0;	/* the lock is not a prune step */
	if (f->countdown == 0) {
		f->hit = 1;
		return -EIO;	/* and every mutation after it: a crash */
	}
	f->countdown--;
	return 0;
}

static int
f_put(void *ctx, enum cf_bk_kind kind, const char *name,
    const unsigned char *buf, size_t len, int excl)
{
	struct fault *f = ctx;
	int rc = f_mut(f, kind);

	return rc < 0 ? rc : cf_bk_store_put(f->inner, kind, name, buf, len,
	    excl);
}

static int
f_get(void *ctx, enum cf_bk_kind kind, const char *name, size_t max,
    unsigned char **buf, size_t *len)
{
	return cf_bk_store_get(((struct fault *)ctx)->inner, kind, name, max,
	    buf, len);
}

static int
f_range(void *ctx, enum cf_bk_kind kind, const char *name, uint64_t off,
    size_t len, unsigned char *buf)
{
	return cf_bk_store_get_range(((struct fault *)ctx)->inner, kind, name,
	    off, len, buf);
}

static int
f_stat(void *ctx, enum cf_bk_kind kind, const char *name, uint64_t *size)
{
	return cf_bk_store_stat(((struct fault *)ctx)->inner, kind, name,
	    size);
}

static int
f_list(void *ctx, enum cf_bk_kind kind,
    int (*fn)(void *arg, const char *name, uint64_t size), void *arg)
{
	return cf_bk_store_list(((struct fault *)ctx)->inner, kind, fn, arg);
}

static int
f_del(void *ctx, enum cf_bk_kind kind, const char *name)
{
	struct fault *f = ctx;
	int rc = f_mut(f, kind);

	return rc < 0 ? rc : cf_bk_store_del(f->inner, kind, name);
}

static void
f_close(void *ctx)
{
	struct fault *f = ctx;

	cf_bk_store_free(f->inner);
	free(f);
}

static const struct cf_bk_store_ops fault_ops = {
	"fault", f_put, f_get, f_range, f_stat, f_list, f_del, f_close, NULL, NULL,
	NULL,
};

static void
prune_crash_each_step(void)
{
	struct cf_bk_prune_opts o = { 0, 50 };
	struct cf_bk_prune_stats st;
	int alive[5] = { 0, 1, 0, 0, 1 }, n, done = 0;

	for (n = 0; n < 64 && !done; n++) {
		struct fix f;
		struct cf_bk_store *inner = NULL, *s = NULL;
		struct cf_bk_repo *r = NULL;
		struct cf_bk_lock *l = NULL;
		struct fault *fs;
		char tag[32];
		int rc;

		snprintf(tag, sizeof(tag), "crash%d", n);
		CHECK_RC(fix_build(&f, tag, 5), 0);
		/* Forget 0, 2, 3 (no fault), then prune with one. */
		r = fix_open(&f, 0);
		CHECK(r != NULL);
		CHECK_RC(cf_bk_repo_snapshot_delete(r, f.snap[0]), 0);
		CHECK_RC(cf_bk_repo_snapshot_delete(r, f.snap[2]), 0);
		CHECK_RC(cf_bk_repo_snapshot_delete(r, f.snap[3]), 0);
		cf_bk_repo_free(r);
		CHECK_RC(cf_bk_store_open_url(&inner, f.url, 0), 0);
		fs = calloc(1, sizeof(*fs));
		CHECK(fs != NULL);
		fs->inner = inner;
		fs->countdown = n;
		CHECK_RC(cf_bk_store_new(&s, &fault_ops, fs), 0);
		CHECK_RC(cf_bk_repo_open(&r, s, f.k, tenant_a), 0);
		CHECK_RC(cf_bk_repo_lock(r, 1, NULL, &l), 0);
		rc = cf_bk_prune(r, l, &o, &st);
		if (!fs->hit) {
			CHECK_RC(rc, 0);
			done = 1;
		} else {
			CHECK_RC(rc, -EIO);
		}
		CHECK_RC(cf_bk_lock_release(l), 0);
		cf_bk_repo_free(r);
		/* After the crash: readable, no damage (orphans allowed). */
		r = fix_open(&f, 0);
		CHECK(r != NULL);
		CHECK_RC(check_repo(&f, r, alive, 1), 0);
		/* A rerun finishes: nothing dead or orphaned remains. */
		l = NULL;
		CHECK_RC(cf_bk_repo_lock(r, 1, NULL, &l), 0);
		CHECK_RC(cf_bk_prune(r, l, &o, &st), 0);
		CHECK_RC(cf_bk_lock_release(l), 0);
		CHECK_RC(check_repo(&f, r, alive, 0), 0);
		CHECK(count(r, CF_BK_KIND_INDEX) == 1);
		/* Snapshots 1 and 4: data and tree packs; the shared blob. */
		if (count(r, CF_BK_KIND_PACK) != 5)
			fprintf(stderr, "# n %d: %zu packs, rerun %llu deleted"
			    " %llu repacked %llu orphans\n", n,
			    count(r, CF_BK_KIND_PACK),
			    (unsigned long long)st.packs_deleted,
			    (unsigned long long)st.packs_repacked,
			    (unsigned long long)st.packs_orphan);
		CHECK(count(r, CF_BK_KIND_PACK) == 5);
		cf_bk_repo_free(r);
		cf_bk_keys_free(f.k);
	}
	CHECK(done);
	/* Several steps were exercised: puts and deletes of each kind. */
	CHECK(n >= 5);
}

/* ---- re-encryption [BK-REENC-1] --------------------------------------------- */

/* Adds root key start..start+31 as version v to k. */
static int
add_version(struct cf_bk_keys *k, unsigned start, uint32_t v)
{
	struct cf_secbuf *sb = NULL;
	size_t i;
	int rc;

	rc = cf_secbuf_new(&sb, 32);
	if (rc < 0)
		return rc;
	for (i = 0; i < 32; i++)
		cf_secbuf_data(sb)[i] = (unsigned char)(start + i);
	rc = cf_bk_keys_add(k, sb, v);
	cf_secbuf_free(sb);
	return rc;
}

/* Keys of version 2 alone (root 0x70..0x8f): version 1 retired. */
static struct cf_bk_keys *
keys2(void)
{
	struct cf_secbuf *sb = NULL;
	struct cf_bk_keys *k = NULL;
	size_t i;

	if (cf_secbuf_new(&sb, 32) != 0)
		return NULL;
	for (i = 0; i < 32; i++)
		cf_secbuf_data(sb)[i] = (unsigned char)(0x70 + i);
	if (cf_bk_keys_new(&k, sb, 2, CF_KS_CIPHER_XCHACHA20POLY1305) != 0)
		k = NULL;
	cf_secbuf_free(sb);
	return k;
}

/* Keys of versions 1 (the fixture's root) and 2: write version 2. */
static struct cf_bk_keys *
keys12(void)
{
	struct cf_bk_keys *k = bkt_keys_x(0x30);

	if (k != NULL && add_version(k, 0x70, 2) < 0) {
		cf_bk_keys_free(k);
		k = NULL;
	}
	return k;
}

/*
 * Snapshots 0..2 under version 1, then snapshot 3 under 2 (reusing the
 * shared blob of a version-1 pack; its parent is snapshot 2), and the
 * config re-keyed to 2: what reencrypt --repository leaves before
 * --objects.
 */
static int
fix_rotated(struct fix *f, const char *tag)
{
	struct cf_bk_repo *r;
	int rc;

	rc = fix_build(f, tag, 3);
	if (rc < 0)
		return rc;
	cf_bk_keys_free(f->k);
	f->k = keys12();
	if (f->k == NULL)
		return -ENOMEM;
	r = fix_open(f, 0);
	if (r == NULL)
		return -EIO;
	rc = add_snap(f, r, 3);
	if (rc == 0)
		rc = cf_bk_repo_config_rekey(r, 2);
	cf_bk_repo_free(r);
	f->nsnaps = 4;
	/* Fresh keys: the re-keyed config is read as a new open reads it. */
	cf_bk_keys_free(f->k);
	f->k = keys12();
	return f->k == NULL ? -ENOMEM : rc;
}

/* Header versions of the objects of kind (data: indexed packs only). */
static int
hdr_versions(struct cf_bk_repo *r, enum cf_bk_kind kind, uint32_t v,
    size_t *n)
{
	unsigned char (*ids)[32] = NULL, hdr[32];
	size_t m = 0, i;
	char name[65];
	int rc;

	*n = 0;
	rc = cf_bk_repo_snapshot_list(r, &ids, &m);
	for (i = 0; rc == 0 && i < m; i++) {
		cf_bk_id_hex(ids[i], name);
		rc = cf_bk_store_get_range(cf_bk_repo_store(r), kind, name, 0,
		    32, hdr);
		if (rc == 0 && bk_rd32(hdr + 12) == v)
			(*n)++;
	}
	free(ids);
	return rc;
}

/* Distinct snapshot times (a killed re-seal leaves two copies of one). */
static size_t
snap_times(struct cf_bk_repo *r, size_t *listed)
{
	unsigned char (*ids)[32] = NULL;
	int64_t t[16];
	size_t n = 0, i, j, d = 0;
	struct cf_bk_snapshot *s;

	*listed = 0;
	if (cf_bk_repo_snapshot_list(r, &ids, &n) < 0 || n > 16)
		return 0;
	for (i = 0; i < n; i++) {
		if (cf_bk_repo_snapshot_load(r, ids[i], &s) < 0) {
			free(ids);
			return 0;
		}
		t[i] = s->time;
		cf_bk_snapshot_free(s);
		for (j = 0; j < i && t[j] != t[i]; j++)
			continue;
		d += j == i;
	}
	free(ids);
	*listed = n;
	return d;
}

static void
on_step(void *arg, enum cf_bk_reenc_step step, uint64_t done,
    uint64_t total, const unsigned char *old_id, const unsigned char *new_id)
{
	unsigned *seen = arg;

	CHECK(done <= total);
	CHECK((old_id != NULL) == (step == CF_BK_REENC_SNAPSHOT) &&
	    (new_id != NULL) == (old_id != NULL));
	if (old_id != NULL)
		CHECK(memcmp(old_id, new_id, 32) != 0);
	seen[step]++;
}

/*
 * [BK-REENC-1] One run: the old packs (and the shared blob the version-2
 * snapshot reused) move to 2 without a blob id changing, the snapshots
 * under 1 are re-sealed with key_versions [2] and snapshot 3, already
 * under 2, keeps its id; nothing needs version 1 any more; a rerun does
 * nothing; the repository opens and reads with version 2 alone.
 */
static void
reencrypt_basic(void)
{
	static const int alive[4] = { 1, 1, 1, 1 };
	struct fix f;
	struct cf_bk_repo *r;
	struct cf_bk_lock *l = NULL;
	struct cf_bk_reenc_stats st;
	struct cf_bk_version_use u;
	struct cf_bk_snapshot *s;
	unsigned char (*ids)[32] = NULL, *buf;
	unsigned seen[5] = { 0 };
	size_t n = 0, i, len, listed;
	uint64_t ix[2];

	CHECK_RC(fix_rotated(&f, "reenc"), 0);
	r = fix_open(&f, 0);
	CHECK(r != NULL);
	CHECK_RC(cf_bk_repo_indexed_version(r, 1, ix), 0);
	/* Snapshots 0-2: a data pack and a tree pack each, under 1. */
	CHECK(ix[0] == 6);
	CHECK_RC(cf_bk_repo_lock(r, 1, NULL, &l), 0);
	CHECK_RC(cf_bk_repo_reencrypt(r, l, on_step, seen, &st), 0);
	CHECK(st.key_version == 2 && st.packs == 8 && st.packs_old == 6);
	/* 3 own blobs, the shared one, 3 trees: each copied once, into
	 * one data pack and one tree pack. */
	CHECK(st.blobs_copied == 7 && st.packs_written == 2);
	CHECK(st.packs_deleted == 6 && st.indexes_deleted >= 1);
	CHECK(st.snapshots == 4 && st.snapshots_old == 3 &&
	    st.snapshots_resealed == 3 && st.objects_locked == 0);
	CHECK(seen[CF_BK_REENC_PACK] == 6 && seen[CF_BK_REENC_INDEX] == 1 &&
	    seen[CF_BK_REENC_DELETED] == 1 && seen[CF_BK_REENC_SNAPSHOT] == 3);
	/* Nothing needs 1: retire-key's whole check ([BK-SNAP-3]). */
	CHECK_RC(cf_bk_repo_version_use(r, 1, &u), 0);
	CHECK(u.snapshots == 4 && u.needs == 0 && u.indexed[0] == 0 &&
	    u.indexed[1] == 0);
	/* Snapshot 3 has no record: the header scan finds nothing under 1. */
	CHECK(u.unknown == 1 && u.scan[0] == 0 && u.scan[1] == 0 &&
	    u.scan[2] == 0 && u.scan[3] == 0);
	CHECK_RC(hdr_versions(r, CF_BK_KIND_SNAPSHOT, 1, &n), 0);
	CHECK(n == 0);
	CHECK(snap_times(r, &listed) == 4 && listed == 4);
	CHECK_RC(check_repo(&f, r, alive, 0), 0);
	/* Snapshot 3 kept its id; the others have new ones and [2]. */
	CHECK_RC(cf_bk_repo_snapshot_list(r, &ids, &n), 0);
	for (i = 0; i < n; i++) {
		int old = memcmp(ids[i], f.snap[3], 32) != 0;

		CHECK(memcmp(ids[i], f.snap[0], 32) != 0 &&
		    memcmp(ids[i], f.snap[1], 32) != 0 &&
		    memcmp(ids[i], f.snap[2], 32) != 0);
		CHECK_RC(cf_bk_repo_snapshot_load(r, ids[i], &s), 0);
		if (old)
			CHECK(s->has_key_versions && s->nkey_versions == 1 &&
			    s->key_versions[0] == 2);
		cf_bk_snapshot_free(s);
	}
	CHECK(n == 4);
	free(ids);
	/* A rerun: nothing to do. */
	CHECK_RC(cf_bk_repo_reencrypt(r, l, NULL, NULL, &st), 0);
	CHECK(st.packs_old == 0 && st.packs_written == 0 &&
	    st.snapshots_resealed == 0);
	CHECK_RC(cf_bk_lock_release(l), 0);
	cf_bk_repo_free(r);
	cf_bk_keys_free(f.k);
	/* Version 2 alone: every blob reads, the same ids. */
	f.k = keys2();
	CHECK(f.k != NULL);
	r = fix_open(&f, 0);
	CHECK(r != NULL);
	for (i = 0; i < 4; i++) {
		CHECK_RC(cf_bk_repo_blob_load(r, CF_BK_BLOB_DATA, f.uniq[i],
		    &buf, &len), 0);
		CHECK(len == 100000);
		free(buf);
	}
	CHECK_RC(check_repo(&f, r, alive, 0), 0);
	cf_bk_repo_free(r);
	cf_bk_keys_free(f.k);
}

/*
 * [BK-REENC-1] A crash at every mutating store call of a re-encryption:
 * afterwards the repository verifies (orphans allowed), every snapshot
 * reads (a re-sealed snapshot may be there twice), and a rerun finishes
 * with no duplicate and nothing under version 1.
 */
static void
reencrypt_crash_each_step(void)
{
	static const int alive[4] = { 1, 1, 1, 1 };
	struct cf_bk_reenc_stats st;
	struct cf_bk_version_use u;
	size_t listed;
	int n, done = 0;

	for (n = 0; n < 64 && !done; n++) {
		struct fix f;
		struct cf_bk_store *inner = NULL, *s = NULL;
		struct cf_bk_repo *r = NULL;
		struct cf_bk_lock *l = NULL;
		struct fault *fs;
		char tag[32];
		int rc;

		snprintf(tag, sizeof(tag), "recrash%d", n);
		CHECK_RC(fix_rotated(&f, tag), 0);
		CHECK_RC(cf_bk_store_open_url(&inner, f.url, 0), 0);
		fs = calloc(1, sizeof(*fs));
		CHECK(fs != NULL);
		fs->inner = inner;
		fs->countdown = n;
		CHECK_RC(cf_bk_store_new(&s, &fault_ops, fs), 0);
		CHECK_RC(cf_bk_repo_open(&r, s, f.k, tenant_a), 0);
		CHECK_RC(cf_bk_repo_index_load(r, NULL), 0);
		CHECK_RC(cf_bk_repo_lock(r, 1, NULL, &l), 0);
		rc = cf_bk_repo_reencrypt(r, l, NULL, NULL, &st);
		if (!fs->hit) {
			CHECK_RC(rc, 0);
			done = 1;
		} else {
			CHECK_RC(rc, -EIO);
		}
		CHECK_RC(cf_bk_lock_release(l), 0);
		cf_bk_repo_free(r);
		r = fix_open(&f, 0);
		CHECK(r != NULL);
		CHECK_RC(check_repo(&f, r, alive, 1), 0);
		CHECK(snap_times(r, &listed) == 4);
		l = NULL;
		CHECK_RC(cf_bk_repo_lock(r, 1, NULL, &l), 0);
		CHECK_RC(cf_bk_repo_reencrypt(r, l, NULL, NULL, &st), 0);
		CHECK_RC(cf_bk_lock_release(l), 0);
		CHECK_RC(check_repo(&f, r, alive, 0), 0);
		CHECK(snap_times(r, &listed) == 4 && listed == 4);
		CHECK_RC(cf_bk_repo_version_use(r, 1, &u), 0);
		CHECK(u.needs == 0 && u.indexed[0] == 0 &&
		    u.indexed[1] == 0 && u.scan[0] == 0 && u.scan[1] == 0 &&
		    u.scan[2] == 0 && u.scan[3] == 0);
		cf_bk_repo_free(r);
		cf_bk_keys_free(f.k);
	}
	CHECK(done);
	/* Puts and deletes of packs, indexes and snapshots were hit. */
	CHECK(n >= 8);
}

static void
prune_locks(void)
{
	struct fix f;
	struct cf_bk_repo *r;
	struct cf_bk_lock *shared = NULL, *ex = NULL;

	CHECK_RC(fix_build(&f, "locks", 1), 0);
	r = fix_open(&f, 0);
	CHECK(r != NULL);
	/* A backup running: prune cannot start. */
	CHECK_RC(cf_bk_repo_lock(r, 0, NULL, &shared), 0);
	CHECK_RC(cf_bk_repo_lock(r, 1, NULL, &ex), -EBUSY);
	CHECK_RC(cf_bk_lock_release(shared), 0);
	/* A prune running: a backup cannot start. */
	CHECK_RC(cf_bk_repo_lock(r, 1, NULL, &ex), 0);
	shared = NULL;
	CHECK_RC(cf_bk_repo_lock(r, 0, NULL, &shared), -EBUSY);
	CHECK_RC(cf_bk_lock_release(ex), 0);
	CHECK(count(r, CF_BK_KIND_LOCK) == 0);
	cf_bk_repo_free(r);
	cf_bk_keys_free(f.k);
}

static const struct cf_test_case cases[] = {
	CF_TEST(retention_gfs_two_years),
	CF_TEST(retention_last_within_none),
	CF_TEST(prune_basic),
	CF_TEST(prune_crash_each_step),
	CF_TEST(prune_locks),
	CF_TEST(reencrypt_basic),
	CF_TEST(reencrypt_crash_each_step),
};

CF_TEST_MAIN(cases)
