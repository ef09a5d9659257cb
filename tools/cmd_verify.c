/*
 * cmd_verify.c - coffer verify NAME [--read-data | --read-data-subset PCT
 * | --read-data-due DAYS] [--repo URL] [--seed N]: checks a tenant's
 * backup repository with cf_bk_verify and says which snapshots and which
 * files could not be restored.
 *
 * --read-data-due DAYS reads the packs due so that every pack is read at
 * least once per DAYS when run daily (cf_bk_verify_coverage), keeping when
 * each pack was last read in the tenant directory's verify-coverage file
 * (docs/format/verify-coverage.md), written atomically.
 *
 * Exit 0 clean, 3 damage (or a repository the tenant's key does not
 * open), 1 operational failure, 4 locked out or denied.  Audits
 * "backup.verify" with counts only (never file names) and records
 * last_verify and last_verify_result in the tenant for `coffer status`.
 * It repairs nothing.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cf_backup.h"
#include "tl_int.h"

const struct tl_cmd tl_cmd_verify = {
	"verify", cmd_verify,
	"  coffer verify NAME [--read-data | --read-data-subset PCT |\n"
	"                --read-data-due DAYS] [--repo URL] [--seed N] [--json]\n"
	"    structural check of every snapshot, tree, index and pack;\n"
	"    --read-data reads and authenticates every pack,\n"
	"    --read-data-subset PCT a random PCT % of them (seed printed),\n"
	"    --read-data-due DAYS the packs due so that, run daily, every\n"
	"    pack is read once per DAYS (state: the tenant's verify-coverage)\n",
	"check a tenant's backups; name damaged snapshots and files",
};

static json_t *
damage_json(const struct cf_bk_verify_result *res)
{
	json_t *a = json_array();
	size_t i;

	for (i = 0; a != NULL && i < res->ndamage; i++)
		json_array_append_new(a, json_pack("{s:s, s:s, s:s}",
		    "snapshot", res->damage[i].snapshot,
		    "path", res->damage[i].path,
		    "why", res->damage[i].why));
	return a;
}

static json_t *
result_json(const char *name, const char *url, int read_data,
    unsigned pct, unsigned long long seed,
    const struct cf_bk_verify_result *res)
{
	json_t *j, *snaps = json_array(), *probs = json_array();
	size_t i;

	for (i = 0; snaps != NULL && i < res->ndamaged_snapshots; i++)
		json_array_append_new(snaps,
		    json_string(res->damaged_snapshots[i]));
	for (i = 0; probs != NULL && i < res->nproblems; i++)
		json_array_append_new(probs, json_string(res->problems[i]));
	j = json_pack("{s:s, s:s, s:s, s:b, s:i, s:I, "
	    "s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
	    "s:I, s:I, s:I, s:I}",
	    "tenant", name, "repo", url,
	    "result", cf_bk_verify_damaged(res) ? "damaged" : "ok",
	    "read_data", read_data, "read_data_pct", (int)pct,
	    "seed", (json_int_t)seed,
	    "snapshots", (json_int_t)res->snapshots,
	    "snapshots_damaged", (json_int_t)res->snapshots_bad,
	    "indexes", (json_int_t)res->indexes,
	    "indexes_damaged", (json_int_t)res->indexes_bad,
	    "trees", (json_int_t)res->trees,
	    "trees_damaged", (json_int_t)res->trees_bad,
	    "blobs", (json_int_t)res->blobs,
	    "blobs_missing", (json_int_t)res->blobs_missing,
	    "blobs_damaged", (json_int_t)res->blobs_bad,
	    "packs", (json_int_t)res->packs,
	    "packs_missing", (json_int_t)res->packs_missing,
	    "packs_damaged", (json_int_t)res->packs_bad,
	    "packs_orphan", (json_int_t)res->packs_orphan,
	    "packs_read", (json_int_t)res->packs_read,
	    "bytes_read", (json_int_t)res->bytes_read,
	    "files_damaged", (json_int_t)res->files_damaged);
	if (j == NULL)
		return NULL;
	json_object_set_new(j, "damaged_snapshots", snaps);
	json_object_set_new(j, "damaged_files", damage_json(res));
	json_object_set_new(j, "problems", probs);
	return j;
}

static void
print_human(const char *name, const struct cf_bk_verify_result *res)
{
	size_t i;

	for (i = 0; i < res->nproblems; i++)
		fprintf(stderr, "coffer: verify: %s\n", res->problems[i]);
	for (i = 0; i < res->ndamaged_snapshots; i++)
		printf("damaged snapshot %s\n", res->damaged_snapshots[i]);
	for (i = 0; i < res->ndamage; i++)
		printf("damaged file %.12s %s (%s)\n", res->damage[i].snapshot,
		    res->damage[i].path, res->damage[i].why);
	if (res->files_damaged > res->ndamage)
		printf("... and %llu more damaged files\n",
		    (unsigned long long)(res->files_damaged - res->ndamage));
	printf("%s: %llu snapshots (%llu damaged), %llu trees, %llu blobs "
	    "(%llu missing, %llu damaged), %llu packs (%llu missing, %llu "
	    "damaged, %llu orphan, %llu read), %llu indexes (%llu damaged), "
	    "%llu bytes read\n", name,
	    (unsigned long long)res->snapshots,
	    (unsigned long long)res->snapshots_bad,
	    (unsigned long long)res->trees,
	    (unsigned long long)res->blobs,
	    (unsigned long long)res->blobs_missing,
	    (unsigned long long)res->blobs_bad,
	    (unsigned long long)res->packs,
	    (unsigned long long)res->packs_missing,
	    (unsigned long long)res->packs_bad,
	    (unsigned long long)res->packs_orphan,
	    (unsigned long long)res->packs_read,
	    (unsigned long long)res->indexes,
	    (unsigned long long)res->indexes_bad,
	    (unsigned long long)res->bytes_read);
	if (res->packs_orphan > 0)
		printf("note: %llu packs are in no index (left by an "
		    "interrupted backup); not damage\n",
		    (unsigned long long)res->packs_orphan);
	printf("%s\n", cf_bk_verify_damaged(res) ? "verify: DAMAGED" :
	    "verify: ok");
}

static void
record(struct cf_ks_home *home, struct cf_ks_tenant *t, const char *result,
    const struct cf_bk_verify_result *res, int read_data, unsigned pct)
{
	char now[64];
	struct cf_ks_audit_field f[] = {
		{ "tenant", cf_ks_tenant_name(t), 0 },
		{ "result", result, 0 },
		{ "read_data_pct", NULL, read_data ? (long long)pct : 0 },
		{ "snapshots", NULL, res ? (long long)res->snapshots : 0 },
		{ "snapshots_damaged", NULL,
		    res ? (long long)res->snapshots_bad : 0 },
		{ "packs", NULL, res ? (long long)res->packs : 0 },
		{ "packs_read", NULL, res ? (long long)res->packs_read : 0 },
		{ "files_damaged", NULL,
		    res ? (long long)res->files_damaged : 0 },
	};

	(void)!cf_ks_audit_append(home, "backup.verify", f,
	    sizeof(f) / sizeof(f[0]));
	cf_ks_time_format(cf_ks_now(), now, sizeof(now));
	if (cf_ks_tenant_set(t, "last_verify", now) < 0 ||
	    cf_ks_tenant_set(t, "last_verify_result", result) < 0)
		fprintf(stderr, "coffer: could not record the verify time "
		    "in tenant %s: %s\n", cf_ks_tenant_name(t),
		    cf_ks_last_error());
}

#define COVERAGE_FILE_MAX (256U << 20)	/* > CF_BK_COVERAGE_MAX lines */

/*
 * Loads the tenant's coverage file at path into *out (empty if absent).
 * A malformed file is moved aside to PATH.bad with a message and a fresh
 * coverage starts: losing it costs extra reads, never a missed pack.
 */
static int
coverage_load(const char *path, struct cf_bk_coverage **out)
{
	unsigned char *buf = NULL;
	char bad[PATH_MAX + 8];
	size_t got = 0;
	int fd, rc;

	*out = NULL;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		return cf_bk_coverage_new(out);
	if (fd < 0)
		return -errno;
	rc = cf_ks_read_fd(fd, COVERAGE_FILE_MAX, &buf, &got);
	if (rc == -EINVAL || rc == -EFBIG)
		rc = -EPROTO;	/* not a regular file, or too large */
	if (rc == 0)
		rc = cf_bk_coverage_parse((const char *)buf, got, out);
	if (rc == -EPROTO || rc == -E2BIG) {
		snprintf(bad, sizeof(bad), "%s.bad", path);
		fprintf(stderr, "coffer: %s is malformed; moved to %s, "
		    "coverage starts afresh\n", path, bad);
		if (rename(path, bad) < 0) {
			rc = -errno;
			goto out;
		}
		rc = cf_bk_coverage_new(out);
	}
out:
	free(buf);
	close(fd);
	return rc;
}

/* Writes c to path atomically: temporary, fsync, rename, fsync dir. */
static int
coverage_save(const char *path, const struct cf_bk_coverage *c)
{
	char *text = NULL;
	size_t len;
	int rc;

	rc = cf_bk_coverage_format(c, &text, &len);
	if (rc == 0)
		rc = cf_ks_write_atomic(path, text, len, 0600);
	free(text);
	return rc;
}

int
cmd_verify(struct tl_ctx *ctx, int argc, char **argv)
{
	struct cf_bk_prefetch *pf = NULL;
	uint32_t kv = 0;
	static const struct option opts[] = {
		{ "read-data", no_argument, NULL, 'd' },
		{ "read-data-subset", required_argument, NULL, 's' },
		{ "read-data-due", required_argument, NULL, 'D' },
		{ "repo", required_argument, NULL, 'r' },
		{ "seed", required_argument, NULL, 'S' },
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	struct cf_bk_verify_opts vo;
	struct cf_bk_verify_result *res = NULL;
	struct cf_ks_tenant *t = NULL;
	struct cf_secbuf *root = NULL;
	struct cf_bk_repo *repo = NULL;
	struct cf_bk_lock *lock = NULL;
	struct cf_bk_coverage *cov = NULL;
	struct cf_ks_home *home;
	const char *repo_opt = NULL, *name;
	char url[4200], *end, covpath[PATH_MAX], when[64];
	unsigned long long seed = 0;
	unsigned long v;
	int c, rc, ret = CF_EXIT_FAIL, have_seed = 0, subset = 0;
	int full = 0;
	unsigned due_days = 0;
	struct timespec ts;

	memset(&vo, 0, sizeof(vo));
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			full = 1;
			break;
		case 's':
			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno != 0 || end == optarg || (*end != '\0' &&
			    strcmp(end, "%") != 0) || v > 100)
				return tl_usage(&tl_cmd_verify, "verify: "
				    "--read-data-subset takes 0..100");
			subset = 1;
			vo.subset_pct = (unsigned)v;
			break;
		case 'D':
			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno != 0 || end == optarg || *end != '\0' ||
			    v < 1 || v > 36500)
				return tl_usage(&tl_cmd_verify, "verify: "
				    "--read-data-due takes 1..36500 days");
			due_days = (unsigned)v;
			break;
		case 'r':
			repo_opt = optarg;
			break;
		case 'S':
			errno = 0;
			seed = strtoull(optarg, &end, 10);
			if (errno != 0 || end == optarg || *end != '\0')
				return tl_usage(&tl_cmd_verify, "verify: "
				    "--seed takes a number");
			have_seed = 1;
			break;
		case 'j':
			ctx->json = 1;
			break;
		default:
			return tl_usage(&tl_cmd_verify, "verify: bad option");
		}
	}
	if (subset + full + (due_days > 0) > 1)
		return tl_usage(&tl_cmd_verify, "verify: give one of "
		    "--read-data, --read-data-subset, --read-data-due");
	if (due_days > 0 && repo_opt != NULL)
		return tl_usage(&tl_cmd_verify, "verify: --read-data-due keeps "
		    "the coverage of the tenant's own repository; not with "
		    "--repo");
	if (full)
		vo.subset_pct = 100;
	vo.read_data = full || subset || due_days > 0;
	if (optind != argc - 1)
		return tl_usage(&tl_cmd_verify, "verify: give NAME");
	name = argv[optind];
	if (!have_seed) {
		clock_gettime(CLOCK_REALTIME, &ts);
		seed = (unsigned long long)ts.tv_sec * 1000000000ULL +
		    (unsigned long long)ts.tv_nsec;
	}
	vo.seed = seed;

	home = tl_home(ctx, 0);
	rc = cf_ks_tenant_open(home, name, &t);
	if (rc < 0)
		return tl_fail(rc, NULL);
	if (cf_ks_tenant_shredded(t)) {
		fprintf(stderr, "coffer: tenant %s was crypto-shredded: its "
		    "backups can no longer be read\n", name);
		ret = CF_EXIT_DENIED;
		goto out;
	}
	tl_repo_url(home, t, repo_opt, url, sizeof(url));
	/* Fetched while the key is unlocked (docs/s3.md). */
	pf = tl_repo_prefetch(url, 0, 4, 0);
	rc = tl_repo_unlock_pf(t, url, pf, &root, &kv);
	if (rc < 0) {
		cf_bk_prefetch_free(pf);
		ret = tl_fail(rc, name);
		goto out;
	}
	rc = tl_repo_open_pf(t, &repo, url, root, kv, 0, pf);
	cf_bk_prefetch_free(pf);
	cf_secbuf_free(root);	/* the repo keeps only derived keys */
	root = NULL;
	if (rc == -EBADMSG) {
		fprintf(stderr, "coffer: repository %s does not open with "
		    "tenant %s's key: it belongs to another tenant, or its "
		    "config is damaged\n", url, name);
		record(home, t, "wrong-key", NULL, vo.read_data,
		    vo.subset_pct);
		ret = CF_EXIT_INTEGRITY;
		goto out;
	}
	if (rc == -EKEYREJECTED) {
		fprintf(stderr, "coffer: repository %s belongs to another "
		    "tenant than %s\n", url, name);
		ret = CF_EXIT_DENIED;
		goto out;
	}
	if (rc == -ENOENT) {
		fprintf(stderr, "coffer: no repository at %s (run coffer "
		    "backup %s first)\n", url, name);
		goto out;
	}
	if (rc < 0) {
		fprintf(stderr, "coffer: repository %s: %s\n", url,
		    tl_repo_strerror(url, rc));
		ret = rc == -EPROTO ? CF_EXIT_INTEGRITY : cf_ks_exit_code(rc);
		goto out;
	}
	rc = cf_bk_repo_lock(repo, 0, NULL, &lock);
	if (rc == -EBUSY) {
		fprintf(stderr, "coffer: repository %s is locked exclusively "
		    "(a prune is running?); try again later\n", url);
		goto out;
	}
	if (rc < 0) {
		fprintf(stderr, "coffer: locking %s: %s\n", url,
		    strerror(-rc));
		goto out;
	}
	if (subset && ctx->verbose >= 0)
		fprintf(stderr, "coffer: verify: reading %u %% of the packs, "
		    "seed %llu (--seed %llu repeats this choice)\n",
		    vo.subset_pct, seed, seed);
	if (due_days > 0) {
		snprintf(covpath, sizeof(covpath), "%s/%s/verify-coverage",
		    cf_ks_home_path(home), cf_ks_tenant_dir(t));
		rc = coverage_load(covpath, &cov);
		if (rc < 0) {
			fprintf(stderr, "coffer: %s: %s\n", covpath,
			    strerror(-rc));
			goto out;
		}
		rc = cf_bk_verify_coverage(repo, cov, (int64_t)cf_ks_now(),
		    due_days, &res);
	} else {
		tl_malloc_tune();
		rc = cf_bk_verify(repo, &vo, &res);
	}
	if (rc < 0) {
		fprintf(stderr, "coffer: verify %s: %s\n", url,
		    tl_repo_strerror(url, rc));
		record(home, t, "failed", NULL, vo.read_data, vo.subset_pct);
		goto out;
	}
	if (due_days > 0) {
		rc = coverage_save(covpath, cov);
		if (rc < 0) {
			fprintf(stderr, "coffer: saving %s: %s\n", covpath,
			    strerror(-rc));
			record(home, t, "failed", NULL, 1, 0);
			goto out;
		}
		vo.subset_pct = res->packs ? (unsigned)((res->packs_due * 100 +
		    res->packs - 1) / res->packs) : 0;
	}
	if (ctx->json) {
		json_t *j = result_json(name, url, vo.read_data,
		    vo.subset_pct, seed, res);

		if (j != NULL && due_days > 0) {
			cf_ks_time_format((time_t)res->oldest_read, when,
			    sizeof(when));
			json_object_set_new(j, "read_data_due_days",
			    json_integer(due_days));
			json_object_set_new(j, "packs_due",
			    json_integer((json_int_t)res->packs_due));
			json_object_set_new(j, "packs_never_read",
			    json_integer((json_int_t)res->packs_never_read));
			json_object_set_new(j, "oldest_read", res->oldest_read ?
			    json_string(when) : json_null());
		}
		tl_print_json(j);
	} else {
		print_human(name, res);
		if (due_days > 0) {
			cf_ks_time_format((time_t)res->oldest_read, when,
			    sizeof(when));
			printf("read-data coverage (%u days): %llu packs due, "
			    "%llu never read, oldest read %s\n", due_days,
			    (unsigned long long)res->packs_due,
			    (unsigned long long)res->packs_never_read,
			    res->oldest_read ? when : "-");
		}
	}
	if (cf_bk_verify_damaged(res)) {
		record(home, t, "damaged", res, vo.read_data, vo.subset_pct);
		fprintf(stderr, "coffer: verify: repository of %s is damaged: "
		    "%llu snapshots and %llu files affected\n", name,
		    (unsigned long long)res->snapshots_bad,
		    (unsigned long long)res->files_damaged);
		ret = CF_EXIT_INTEGRITY;
	} else {
		record(home, t, "ok", res, vo.read_data, vo.subset_pct);
		ret = CF_EXIT_OK;
	}
out:
	cf_bk_coverage_free(cov);
	cf_bk_verify_result_free(res);
	(void)!cf_bk_lock_release(lock);
	cf_bk_repo_free(repo);
	cf_secbuf_free(root);
	cf_ks_tenant_free(t);
	return ret;
}
