/*
 * cmd_lifecycle.c - coffer lifecycle set|show|hold|release|purge|
 * verify-receipt (docs/retention.md, Lifecycle and Purge).
 *
 * The operator records a tenant's account state and since when
 * ("state", "state_at" in tenant.json); bk_lifecycle.c turns that, the
 * last use ("last_use", set by mount and unmount) and the periods of
 * coffer.conf's [lifecycle] section into the effective state and the
 * purge date.  A legal hold ("hold") blocks every purge and snapshot
 * removal until released.  Every change is audited.
 *
 * A purge destroys the tenant's keys first (crypto-shredding: every copy
 * of every backup is unreadable from then on), then deletes every object
 * of its repository and its live store, checks by listing that nothing
 * remains, writes a receipt under receipts/ whose BLAKE2b hash goes into
 * a "tenant.purge" audit record (so the audit chain's MAC vouches for
 * it), and removes the tenant's directory.  A rerun after a crash
 * continues where it stopped.  Data classes that survive a purge
 * (billing records) are first copied into a retained tenant of their
 * own, with its own root key, purged in turn when their period ends.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>

#include "cf_backup.h"
#include "tl_int.h"

const struct tl_cmd tl_cmd_lifecycle = {
	"lifecycle", cmd_lifecycle,
	"  coffer lifecycle set NAME STATE [--at DATE]\n"
	"      STATE: active, trial, trial-ended, cancelled, payment-failed,\n"
	"             closed, free, evaluation\n"
	"  coffer lifecycle show NAME [--now DATE]\n"
	"  coffer lifecycle hold NAME [--reason TEXT]\n"
	"  coffer lifecycle release NAME [--reason TEXT]\n"
	"  coffer lifecycle purge NAME --yes [--force]\n"
	"  coffer lifecycle verify-receipt FILE\n",
	"tenant account states, deletion schedules, legal hold, purge",
};

/* ---- configuration and evaluation ---------------------------------------- */

static int
period(const struct cf_ks_config *cfg, const char *key, int64_t *v)
{
	const char *s = cfg ? cf_ks_config_get(cfg, "lifecycle", key) : NULL;
	char *end;
	long d;

	if (s == NULL)
		return 0;
	errno = 0;
	d = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || d < 0 || d > 36500) {
		fprintf(stderr, "coffer: coffer.conf [lifecycle] %s: want a "
		    "number of days (0..36500), not '%s'\n", key, s);
		return -EINVAL;
	}
	*v = (int64_t)d * 86400;
	return 0;
}

int
tl_lifecycle_cfg(struct cf_ks_home *home, struct cf_bk_lifecycle_cfg *c)
{
	const struct cf_ks_config *cfg = cf_ks_home_config(home);
	int rc = 0;

	cf_bk_lifecycle_defaults(c);
	rc |= period(cfg, "trial_ended_purge_days", &c->trial_ended_purge);
	rc |= period(cfg, "cancelled_purge_days", &c->cancelled_purge);
	rc |= period(cfg, "payment_failed_suspend_days",
	    &c->payment_failed_suspend);
	rc |= period(cfg, "payment_failed_close_days",
	    &c->payment_failed_close);
	rc |= period(cfg, "closed_purge_days", &c->closed_purge);
	rc |= period(cfg, "free_idle_purge_days", &c->free_idle_purge);
	rc |= period(cfg, "evaluation_active_days", &c->evaluation_active);
	rc |= period(cfg, "evaluation_locked_days", &c->evaluation_locked);
	return rc ? -EINVAL : 0;
}

static int64_t
field_time(const struct cf_ks_tenant *t, const char *key, int64_t dflt)
{
	const char *s = cf_ks_tenant_get(t, key);
	time_t v;

	if (s == NULL || cf_ks_time_parse(s, &v) < 0)
		return dflt;
	return (int64_t)v;
}

int
tl_lifecycle_eval(struct cf_ks_home *home, const struct cf_ks_tenant *t,
    time_t now, struct cf_bk_lifecycle_eval *out)
{
	struct cf_bk_lifecycle_cfg c;
	const char *state = cf_ks_tenant_get(t, "state");
	int64_t use;
	int rc;

	rc = tl_lifecycle_cfg(home, &c);
	if (rc < 0)
		return rc;
	if (state == NULL)
		state = "active";
	if (strcmp(state, "retained") == 0) {
		/* A class kept after its tenant's purge, until its date. */
		cf_bk_lifecycle_eval_retained(field_time(t, "state_at", 0),
		    field_time(t, "retain_until", 0), (int64_t)now, out);
		return 0;
	}
	/* Use: the last mount or unmount, or backup that found changes. */
	use = field_time(t, "last_use", 0);
	if (field_time(t, "last_write", 0) > use)
		use = field_time(t, "last_write", 0);
	/* Older tools wrote states such as "locked" directly: keep them. */
	rc = cf_bk_lifecycle_eval(&c, state,
	    field_time(t, "state_at", (int64_t)cf_ks_tenant_created(t)),
	    use, (int64_t)now, out);
	if (rc == -EINVAL) {
		rc = cf_bk_lifecycle_eval(&c, "active", 0, 0, (int64_t)now,
		    out);
		out->effective = state;
		out->mount_refused = strcmp(state, "locked") == 0 ||
		    strcmp(state, "suspended") == 0 ||
		    strcmp(state, "closed") == 0;
	}
	return rc;
}

int
tl_tenant_held(const struct cf_ks_tenant *t)
{
	const char *h = cf_ks_tenant_get(t, "hold");

	return h != NULL && strcmp(h, "yes") == 0;
}

void
tl_tenant_touch(struct cf_ks_tenant *t)
{
	char when[32];

	cf_ks_time_format(cf_ks_now(), when, sizeof(when));
	(void)!cf_ks_tenant_set(t, "last_use", when);
}

/* ---- set, show, hold, release --------------------------------------------- */

static void
audit(struct cf_ks_home *home, const char *event, const char *tenant,
    const char *k2, const char *v2, const char *k3, const char *v3)
{
	struct cf_ks_audit_field f[] = {
		{ "tenant", tenant, 0 },
		{ k2, v2, 0 },
		{ k3, v3, 0 },
	};

	(void)!cf_ks_audit_append(home, event, f, k2 == NULL ? 1 :
	    k3 == NULL ? 2 : 3);
}

static int
get_now(const char *opt, time_t *now)
{
	if (opt == NULL) {
		*now = cf_ks_now();
		return 0;
	}
	return cf_ks_time_parse(opt, now);
}

static int
do_set(struct tl_ctx *ctx, const char *name, const char *state,
    const char *at)
{
	struct cf_ks_tenant *t = NULL;
	char when[32];
	time_t ts;
	int rc, ret = CF_EXIT_FAIL;

	if (!cf_bk_lifecycle_state_valid(state))
		return tl_usage(&tl_cmd_lifecycle, "lifecycle: unknown state "
		    "'%s'", state);
	if (get_now(at, &ts) < 0)
		return tl_usage(&tl_cmd_lifecycle, "lifecycle: bad --at "
		    "date '%s'", at);
	rc = cf_ks_tenant_open(tl_home(ctx, 0), name, &t);
	if (rc < 0)
		return tl_fail(rc, NULL);
	if (cf_ks_tenant_shredded(t)) {
		fprintf(stderr, "coffer: tenant %s was purged\n", name);
		goto out;
	}
	if (cf_ks_tenant_get(t, "state") != NULL &&
	    strcmp(cf_ks_tenant_get(t, "state"), "retained") == 0) {
		fprintf(stderr, "coffer: %s holds a retained data class until "
		    "%s: its schedule cannot be changed\n", name,
		    cf_ks_tenant_get(t, "retain_until"));
		ret = CF_EXIT_DENIED;
		goto out;
	}
	cf_ks_time_format(ts, when, sizeof(when));
	rc = cf_ks_tenant_set(t, "state", state);
	if (rc == 0)
		rc = cf_ks_tenant_set(t, "state_at", when);
	if (rc < 0) {
		ret = tl_fail(rc, name);
		goto out;
	}
	audit(ctx->home, "lifecycle.set", name, "state", state, "at", when);
	ret = CF_EXIT_OK;
out:
	cf_ks_tenant_free(t);
	return ret;
}

/* Prints what a receipt says for a purged tenant; CF_EXIT_FAIL if none. */
static int
show_purged(struct tl_ctx *ctx, const char *name)
{
	char dir[PATH_MAX], path[PATH_MAX + 300];
	struct dirent *de;
	json_t *j = NULL;
	DIR *d;
	size_t nl = strlen(name);

	snprintf(dir, sizeof(dir), "%s/receipts", cf_ks_home_path(ctx->home));
	d = opendir(dir);
	if (d == NULL)
		return CF_EXIT_FAIL;
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, name, nl) == 0 &&
		    de->d_name[nl] == '-' && strlen(de->d_name) == nl + 38) {
			snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
			j = json_load_file(path, 0, NULL);
			break;
		}
	}
	closedir(d);
	if (j == NULL)
		return CF_EXIT_FAIL;
	if (ctx->json) {
		json_object_set_new(j, "effective_state", json_string("purged"));
		json_object_set_new(j, "receipt_file", json_string(path));
		tl_print_json(j);
		return CF_EXIT_OK;
	}
	printf("tenant %s: purged at %s\nreceipt: %s\n", name,
	    json_string_value(json_object_get(j, "purged_at")), path);
	{
		json_t *e;
		size_t i;

		json_array_foreach(json_object_get(j, "retained"), i, e)
			printf("  retained class %s as tenant %s until %s\n",
			    json_string_value(json_object_get(e, "class")),
			    json_string_value(json_object_get(e,
			    "retained_as")),
			    json_string_value(json_object_get(e,
			    "delete_after")));
	}
	json_decref(j);
	return CF_EXIT_OK;
}

static int
do_show(struct tl_ctx *ctx, const char *name, const char *now_opt)
{
	struct cf_bk_lifecycle_eval e;
	struct cf_ks_tenant *t = NULL;
	const char *state, *since, *use, *lw;
	char when[32], nowb[32];
	json_t *j, *steps;
	time_t now;
	size_t i;
	int rc, ret = CF_EXIT_FAIL;

	if (get_now(now_opt, &now) < 0)
		return tl_usage(&tl_cmd_lifecycle, "lifecycle: bad --now "
		    "date '%s'", now_opt);
	rc = cf_ks_tenant_open(tl_home(ctx, 0), name, &t);
	if (rc == -ENOENT && show_purged(ctx, name) == CF_EXIT_OK)
		return CF_EXIT_OK;
	if (rc < 0)
		return tl_fail(rc, NULL);
	rc = tl_lifecycle_eval(ctx->home, t, now, &e);
	if (rc < 0)
		goto out;
	state = cf_ks_tenant_get(t, "state");
	since = cf_ks_tenant_get(t, "state_at");
	use = cf_ks_tenant_get(t, "last_use");
	lw = cf_ks_tenant_get(t, "last_write");
	cf_ks_time_format(now, nowb, sizeof(nowb));
	if (ctx->json) {
		steps = json_array();
		for (i = 0; i < e.nsteps; i++) {
			cf_ks_time_format((time_t)e.steps[i].at, when,
			    sizeof(when));
			json_array_append_new(steps, json_pack("{s:s, s:s, s:b}",
			    "state", e.steps[i].state, "at", when,
			    "upcoming", e.steps[i].at > (int64_t)now));
		}
		cf_ks_time_format((time_t)e.purge_at, when, sizeof(when));
		j = json_pack("{s:s, s:s, s:s?, s:s?, s:s, s:b, s:b, s:b, "
		    "s:s?, s:s?, s:o}", "tenant", name, "now", nowb,
		    "state", state ? state : "active", "since", since,
		    "effective_state", e.effective,
		    "mount_refused", e.mount_refused,
		    "purge_due", e.purge_due, "hold", tl_tenant_held(t),
		    "purge_at", e.purge_at ? when : NULL, "last_use", use,
		    "schedule", steps);
		if (j != NULL && lw != NULL)
			json_object_set_new(j, "last_write", json_string(lw));
		tl_print_json(j);
		ret = CF_EXIT_OK;
		goto out;
	}
	printf("tenant %s (as of %s)\n", name, nowb);
	printf("  state      %s%s%s\n", state ? state : "active",
	    since ? " since " : "", since ? since : "");
	printf("  effective  %s%s\n", e.effective,
	    e.mount_refused ? " (mount refused)" : "");
	printf("  legal hold %s\n", tl_tenant_held(t) ? "yes (no purge, no "
	    "snapshot removal)" : "no");
	if (use != NULL)
		printf("  last use   %s (mount)\n", use);
	if (lw != NULL)
		printf("  last write %s (a backup that found changes)\n", lw);
	for (i = 1; i < e.nsteps; i++) {
		cf_ks_time_format((time_t)e.steps[i].at, when, sizeof(when));
		printf("  %-10s %s %s\n", e.steps[i].at > (int64_t)now ?
		    "upcoming" : "since", when, e.steps[i].state);
	}
	if (e.purge_due)
		printf("  purge is due%s\n", tl_tenant_held(t) ?
		    ", but blocked by the legal hold" :
		    ": coffer retention apply runs it");
	ret = CF_EXIT_OK;
out:
	if (rc < 0)
		ret = tl_fail(rc, name);
	cf_ks_tenant_free(t);
	return ret;
}

static int
do_hold(struct tl_ctx *ctx, const char *name, int hold, const char *reason)
{
	struct cf_ks_tenant *t = NULL;
	char when[32];
	int rc;

	rc = cf_ks_tenant_open(tl_home(ctx, 0), name, &t);
	if (rc < 0)
		return tl_fail(rc, NULL);
	cf_ks_time_format(cf_ks_now(), when, sizeof(when));
	rc = cf_ks_tenant_set(t, "hold", hold ? "yes" : NULL);
	if (rc == 0)
		rc = cf_ks_tenant_set(t, "hold_at", hold ? when : NULL);
	cf_ks_tenant_free(t);
	if (rc < 0)
		return tl_fail(rc, name);
	audit(ctx->home, hold ? "lifecycle.hold" : "lifecycle.release", name,
	    reason ? "reason" : NULL, reason, NULL, NULL);
	return CF_EXIT_OK;
}

/* ---- purge ------------------------------------------------------------------ */

struct purge_counts {
	uint64_t objects, bytes;
	uint64_t kind_objects[6];
	uint64_t files, file_bytes;
	uint64_t locked;		/* S3 Object Lock refused */
	int64_t locked_until;
};

#define PURGE_DEL_BATCH 1000	/* objects per cf_bk_store_del_many call */

struct del_ctx {
	struct cf_bk_store *s;
	enum cf_bk_kind kind;
	struct purge_counts *pc;
	char (*names)[65];
	size_t n, cap;
};

static int
del_collect(void *arg, const char *name, uint64_t size)
{
	struct del_ctx *d = arg;

	if (d->n == d->cap) {
		size_t nc = d->cap ? d->cap * 2 : 256;
		char (*nv)[65] = realloc(d->names, nc * sizeof(*nv));

		if (nv == NULL)
			return -ENOMEM;
		d->names = nv;
		d->cap = nc;
	}
	snprintf(d->names[d->n++], 65, "%s", name);
	d->pc->bytes += size;
	return 0;
}

static int
count_left(void *arg, const char *name, uint64_t size)
{
	(void)name;
	(void)size;
	(*(uint64_t *)arg)++;
	return 0;
}

/* Object Lock refused a deletion: count it and keep its date. */
static void
purge_locked(struct cf_bk_store *s, enum cf_bk_kind kind, const char *name,
    struct purge_counts *pc)
{
	int64_t until = 0;

	pc->locked++;
	if (cf_bk_store_lock_until(s, kind, name, &until) == 0 &&
	    until > pc->locked_until)
		pc->locked_until = until;
}

/*
 * Deletes every object of the repository; the config last (kept while
 * any object is locked, so a rerun can still prove the repository is
 * the tenant's).
 */
static int
purge_repo(const char *url, struct purge_counts *pc, uint64_t *left)
{
	static const enum cf_bk_kind kinds[] = { CF_BK_KIND_SNAPSHOT,
	    CF_BK_KIND_INDEX, CF_BK_KIND_PACK, CF_BK_KIND_LOCK };
	struct cf_bk_store *s = NULL;
	struct del_ctx d;
	uint64_t size;
	size_t k, i;
	int rc;

	*left = 0;
	rc = cf_bk_store_open_url(&s, url, 0);
	if (rc == -ENOENT)
		return 0;	/* nothing was ever backed up */
	if (rc < 0)
		return rc;
	for (k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		memset(&d, 0, sizeof(d));
		d.s = s;
		d.kind = kinds[k];
		d.pc = pc;
		rc = cf_bk_store_list(s, kinds[k], del_collect, &d);
		/* 1000 a request on S3 (DeleteObjects), one by one elsewhere. */
		for (i = 0; rc >= 0 && i < d.n; i += PURGE_DEL_BATCH) {
			const char *batch[PURGE_DEL_BATCH];
			int rcs[PURGE_DEL_BATCH];
			size_t nb = d.n - i < PURGE_DEL_BATCH ? d.n - i :
			    PURGE_DEL_BATCH, j;

			for (j = 0; j < nb; j++)
				batch[j] = d.names[i + j];
			rc = cf_bk_store_del_many(s, kinds[k], batch, nb, rcs);
			for (j = 0; rc >= 0 && j < nb; j++) {
				if (rcs[j] == -EROFS) {
					purge_locked(s, kinds[k], batch[j], pc);
					continue;
				}
				if (rcs[j] < 0) {
					rc = rcs[j];
					break;
				}
				pc->objects++;
				pc->kind_objects[kinds[k]]++;
			}
		}
		free(d.names);
		if (rc < 0)
			goto out;
	}
	if (pc->locked == 0 &&
	    cf_bk_store_stat(s, CF_BK_KIND_CONFIG, "config", &size) == 0) {
		rc = cf_bk_store_del(s, CF_BK_KIND_CONFIG, "config");
		if (rc == -EROFS) {
			purge_locked(s, CF_BK_KIND_CONFIG, "config", pc);
			rc = 0;
		} else if (rc < 0) {
			goto out;
		} else {
			pc->objects++;
		}
		pc->bytes += size;
		pc->kind_objects[CF_BK_KIND_CONFIG]++;
	}
	/*
	 * What killed writers left (S3 multipart uploads, local temporary
	 * files), whatever its age: no backup holds the repository (checked
	 * before), and with the tenant's keys gone nothing could finish it.
	 * A failure is said, not fatal: the objects themselves are gone.
	 */
	{
		uint64_t nc = 0;
		int crc = cf_bk_store_cleanup(s, INT64_MAX, &nc);

		if (crc < 0)
			fprintf(stderr, "coffer: %s: interrupted uploads "
			    "could not be removed (%s); a bucket lifecycle "
			    "rule must remove them\n", url, strerror(-crc));
	}
	/* Verify by listing: nothing of any kind remains. */
	for (k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		rc = cf_bk_store_list(s, kinds[k], count_left, left);
		if (rc < 0)
			goto out;
	}
	if (cf_bk_store_stat(s, CF_BK_KIND_CONFIG, "config", &size) == 0)
		(*left)++;
	rc = 0;
out:
	cf_bk_store_free(s);
	return rc;
}

/*
 * Removes a directory tree (no symlink followed); 0 if it is gone.  Through
 * directory descriptors (tl_tree_remove): a store holds the trees backup
 * and restore handle, whose paths are far longer than PATH_MAX (nftw(3)
 * stops there).
 */
static int
rm_tree(const char *dir, struct purge_counts *pc)
{
	return tl_tree_remove(dir, &pc->files, &pc->file_bytes);
}

/*
 * A store path comes from tenant.json and may be wrong: delete only a
 * directory that is missing, empty, or carries fs's cf.store marker.
 */
static int
store_check(const char *dir)
{
	char marker[PATH_MAX + 16];
	struct dirent *de;
	struct stat st;
	DIR *d;
	int entries = 0;

	if (lstat(dir, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	snprintf(marker, sizeof(marker), "%s/cf.store", dir);
	if (lstat(marker, &st) == 0 && S_ISREG(st.st_mode))
		return 0;
	d = opendir(dir);
	if (d == NULL)
		return -errno;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			entries++;
	closedir(d);
	return entries == 0 ? 0 : -ENOTEMPTY;
}

/* Removes the empty directories a local repository leaves (never files). */
static void
rm_empty_dirs(const char *dir)
{
	char sub[PATH_MAX];
	struct dirent *de;
	DIR *d = opendir(dir);

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") ==
		    0 || de->d_type != DT_DIR)
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name);
		rm_empty_dirs(sub);
	}
	closedir(d);
	(void)rmdir(dir);
}

/*
 * Mountpoints of the tenant's store (fsname coffer:NAME).  Another home
 * may mount a tenant of the same name, so the fsname alone proves
 * nothing: a live mount is this store's only while a daemon serves the
 * store (its control socket answers) and the mount's root reports the
 * store's data/ inode.  A dead mount (its daemon gone, ENOTCONN) cannot
 * tell, and counts only while nothing serves this store.  Without a
 * data/ directory nothing of this home was ever mounted: no mount is
 * touched.
 */
static int
unmount_tenant(const char *name, const char *store, int served, int force)
{
	char line[8192], want[CF_KS_NAME_MAX + 16], mp[PATH_MAX];
	char data[PATH_MAX + 8];
	FILE *f;
	struct stat st;
	ino_t root_ino;
	int rc = 0;

	snprintf(data, sizeof(data), "%s/data", store);
	if (stat(data, &st) != 0)
		return 0;
	root_ino = st.st_ino;
	f = fopen("/proc/self/mountinfo", "re");
	if (f == NULL)
		return 0;
	snprintf(want, sizeof(want), " coffer:%s ", name);
	while (fgets(line, sizeof(line), f) != NULL) {
		char *sep = strstr(line, " - ");

		if (sep == NULL || strstr(sep, want) == NULL)
			continue;
		if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) != 1)
			continue;
		if (stat(mp, &st) == 0 ?
		    !served || st.st_ino != root_ino :
		    errno != ENOTCONN || served)
			continue;	/* another home's tenant of this name */
		if (!force) {
			fprintf(stderr, "coffer: tenant %s is mounted on %s: "
			    "unmount it first, or purge with --force\n", name,
			    mp);
			rc = -EBUSY;
		} else if (umount2(mp, MNT_DETACH) < 0) {
			fprintf(stderr, "coffer: unmounting %s: %s\n", mp,
			    strerror(errno));
			rc = -errno;
		}
	}
	fclose(f);
	return rc;
}

/* Key ids from the wrapped-key files (no KMS involved). */
static json_t *
key_ids(struct cf_ks_home *home, struct cf_ks_tenant *t)
{
	uint32_t v[64];
	size_t n = cf_ks_tenant_versions(t, v, 64), i;
	json_t *a = json_array();

	for (i = 0; a != NULL && i < n && i < 64; i++) {
		struct cf_ks_envelope env;
		char path[PATH_MAX], kek[33];
		unsigned char buf[2048];
		ssize_t len;
		int fd;

		snprintf(path, sizeof(path), "%s/%s/keys/v%u.wk",
		    cf_ks_home_path(home), cf_ks_tenant_dir(t), v[i]);
		fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			continue;
		len = read(fd, buf, sizeof(buf));
		close(fd);
		if (len <= 0 || cf_ks_envelope_decode(&env, buf,
		    (size_t)len) < 0)
			continue;
		sodium_bin2hex(kek, sizeof(kek), env.kek_id, CF_KS_ID_BYTES);
		json_array_append_new(a, json_pack("{s:I, s:s, s:s}",
		    "key_version", (json_int_t)env.key_version, "kek_id", kek,
		    "kms", cf_ks_tenant_kms(t)));
	}
	return a;
}

static int
write_receipt(const char *path, const char *text, size_t len)
{
	char tmp[PATH_MAX + 160];
	int fd, rc = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	if (fd < 0)
		return -errno;
	if (write(fd, text, len) != (ssize_t)len || fsync(fd) < 0)
		rc = -EIO;
	if (close(fd) < 0 && rc == 0)
		rc = -EIO;
	if (rc == 0 && rename(tmp, path) < 0)
		rc = -errno;
	if (rc < 0)
		(void)unlink(tmp);
	return rc;
}

/*
 * 0 if url holds no repository or this tenant's; recorded in tenant.json
 * ("purge_repo").  After the keys are gone only that record, or the
 * default location, or --force vouch for it.
 */
static int
repo_owned(struct cf_ks_home *home, struct cf_ks_tenant *t, const char *url,
    int force)
{
	uint32_t kv = 0;
	const char *rec = cf_ks_tenant_get(t, "purge_repo");
	struct cf_secbuf *root = NULL;
	struct cf_bk_repo *r = NULL;
	char dflt[PATH_MAX + 16];
	int rc;

	if (rec != NULL && strcmp(rec, url) == 0)
		return 0;
	snprintf(dflt, sizeof(dflt), "file://%s/repos/%s",
	    cf_ks_home_path(home), cf_ks_tenant_name(t));
	if (cf_ks_tenant_shredded(t)) {
		if (strcmp(url, dflt) == 0 || force)
			return 0;
		fprintf(stderr, "coffer: the keys of %s are already destroyed, "
		    "so coffer cannot check that %s is its repository; purge "
		    "with --force to delete it anyway\n",
		    cf_ks_tenant_name(t), url);
		return -EPERM;
	}
	rc = tl_repo_unlock(t, url, &root, &kv);
	if (rc < 0) {
		fprintf(stderr, "coffer: %s: cannot unlock the tenant's key to "
		    "check its repository before destroying the key: %s\n",
		    cf_ks_tenant_name(t), cf_ks_last_error());
		return rc;
	}
	rc = tl_repo_open(t, &r, url, root, kv, 0);
	cf_secbuf_free(root);
	cf_bk_repo_free(r);
	if (rc == -ENOENT)
		rc = 0;	/* no repository (or not yet): nothing to delete */
	if (rc < 0) {
		fprintf(stderr, "coffer: %s does not open with %s's key (%s): "
		    "not its repository, not deleting it\n", url,
		    cf_ks_tenant_name(t), strerror(-rc));
		return rc;
	}
	return cf_ks_tenant_set(t, "purge_repo", url);
}

/* ---- retained data classes ------------------------------------------------ */

/*
 * The repository of a retained class: next to the tenant's ("file://
 * HOME/repos/NAME.retained-CLASS", or the tenant's S3 prefix with that
 * suffix).
 */
static void
retained_url(struct cf_ks_home *home, const char *url, const char *rname,
    const char *cls, char *out, size_t cap)
{
	if (strncmp(url, "file://", 7) == 0)
		snprintf(out, cap, "file://%s/repos/%s", cf_ks_home_path(home),
		    rname);
	else
		snprintf(out, cap, "%s.retained-%.63s", url, cls);
}

/* Opens (a rerun) or creates the retained tenant of class c. */
static int
retained_tenant(struct cf_ks_home *home, struct cf_ks_tenant *t,
    const char *url, const struct cf_bk_class *c, time_t now,
    struct cf_ks_tenant **out)
{
	struct cf_ks_tenant *rt = NULL;
	char rname[CF_KS_NAME_MAX + 2], rurl[PATH_MAX + 96], when[32];
	const char *of;
	int n, rc;

	*out = NULL;
	n = snprintf(rname, sizeof(rname), "%s.retained-%.63s",
	    cf_ks_tenant_name(t), c->name);
	if (n < 0 || (size_t)n >= sizeof(rname) || !cf_ks_name_valid(rname)) {
		fprintf(stderr, "coffer: '%s.retained-%s' is not a valid tenant "
		    "name (at most %u characters): shorten the class name\n",
		    cf_ks_tenant_name(t), c->name, CF_KS_NAME_MAX);
		return -ENAMETOOLONG;
	}
	rc = cf_ks_tenant_open(home, rname, &rt);
	if (rc == 0) {
		of = cf_ks_tenant_get(rt, "retained_of_id");
		if (of == NULL || strcmp(of, cf_ks_tenant_id_hex(t)) != 0 ||
		    cf_ks_tenant_shredded(rt)) {
			fprintf(stderr, "coffer: tenant %s exists and does not "
			    "hold %s's retained data: not using it\n", rname,
			    cf_ks_tenant_name(t));
			cf_ks_tenant_free(rt);
			return -EEXIST;
		}
		*out = rt;
		return 0;
	}
	if (rc != -ENOENT)
		return rc;
	retained_url(home, url, rname, c->name, rurl, sizeof(rurl));
	rc = cf_ks_tenant_create(home, rname, cf_ks_tenant_cipher(t),
	    cf_ks_tenant_kms(t), rurl, &rt);
	if (rc < 0) {
		fprintf(stderr, "coffer: creating %s (a separate key for the "
		    "retained class %s): %s\n", rname, c->name,
		    cf_ks_last_error());
		return rc;
	}
	cf_ks_time_format(now, when, sizeof(when));
	rc = cf_ks_tenant_set(rt, "state", "retained");
	if (rc == 0)
		rc = cf_ks_tenant_set(rt, "state_at", when);
	cf_ks_time_format(now + (time_t)c->keep, when, sizeof(when));
	if (rc == 0)
		rc = cf_ks_tenant_set(rt, "retain_until", when);
	if (rc == 0)
		rc = cf_ks_tenant_set(rt, "retained_of", cf_ks_tenant_name(t));
	if (rc == 0)
		rc = cf_ks_tenant_set(rt, "retained_of_id",
		    cf_ks_tenant_id_hex(t));
	if (rc == 0)
		rc = cf_ks_tenant_set(rt, "class", c->name);
	/* Its own data is not split into classes again. */
	if (rc == 0)
		rc = cf_ks_tenant_set(rt, "classes", "");
	if (rc < 0) {
		cf_ks_tenant_free(rt);
		return rc;
	}
	*out = rt;
	return 0;
}

static json_t *key_ids(struct cf_ks_home *home, struct cf_ks_tenant *t);

/*
 * Copies the files of class c from every snapshot of src into the
 * repository of the retained tenant (its own root key), one snapshot
 * per source snapshot that holds any; *entry is the receipt's record.
 */
static int
retain_class(struct cf_ks_home *home, struct cf_ks_tenant *t,
    struct cf_bk_repo *src, const char *url, const struct cf_bk_class *c,
    time_t now, json_t **entry)
{
	uint32_t kv = 0;
	unsigned char (*ids)[CF_BK_ID_BYTES] = NULL, sid[CF_BK_ID_BYTES];
	struct cf_bk_snapshot **keep = NULL, *s = NULL;
	struct cf_ks_tenant *rt = NULL;
	struct cf_secbuf *root = NULL;
	struct cf_bk_repo *dst = NULL;
	struct cf_bk_writer *w = NULL;
	struct cf_bk_copy_memo *memo = NULL;
	struct cf_bk_filter_stats st;
	struct cf_bk_writer_stats wst;
	uint64_t files = 0, bytes = 0;
	int64_t newest = 0;
	size_t n = 0, i, nk = 0;
	char when[32], tag[80];
	const char *rurl;
	json_t *paths;
	int rc;

	*entry = NULL;
	rc = retained_tenant(home, t, url, c, now, &rt);
	if (rc < 0)
		return rc;
	rurl = cf_ks_tenant_get(rt, "repo");
	rc = tl_repo_unlock(rt, rurl, &root, &kv);
	if (rc == 0)
		rc = tl_repo_open(rt, &dst, rurl, root, kv,
		    CF_BK_REPO_CREATE);
	cf_secbuf_free(root);
	if (rc == 0)
		rc = cf_bk_writer_new(&w, dst, 0);
	if (rc == 0)
		rc = cf_bk_copy_memo_new(&memo);
	if (rc == 0)
		rc = cf_bk_repo_snapshot_list(src, &ids, &n);
	if (rc == 0 && n > 0 && (keep = calloc(n, sizeof(*keep))) == NULL)
		rc = -ENOMEM;
	for (i = 0; rc == 0 && i < n; i++) {
		rc = cf_bk_repo_snapshot_load(src, ids[i], &s);
		if (rc < 0)
			break;
		rc = cf_bk_tree_copy_class(src, w, s->tree, c, memo, s->tree,
		    &st);
		if (rc < 0 || st.files == 0) {
			cf_bk_snapshot_free(s);
			s = NULL;
			continue;
		}
		memcpy(s->tenant, cf_ks_tenant_id(rt), CF_KS_ID_BYTES);
		s->has_parent = 0;
		s->stats.files = st.files;
		s->stats.bytes = st.bytes;
		files += st.files;
		bytes += st.bytes;
		if (s->time > newest)
			newest = s->time;
		keep[nk++] = s;
		s = NULL;
	}
	if (rc == 0)
		rc = cf_bk_writer_flush(w);
	/*
	 * [BK-SNAP-2] The source's record names the source's versions: in
	 * dst the copies need what the writer stored or found there.
	 */
	if (rc == 0)
		cf_bk_writer_stats(w, &wst);
	for (i = 0; rc == 0 && i < nk; i++) {
		keep[i]->has_key_versions = wst.has_key_versions;
		keep[i]->nkey_versions = wst.nkey_versions;
		memcpy(keep[i]->key_versions, wst.key_versions,
		    sizeof(wst.key_versions));
	}
	snprintf(tag, sizeof(tag), "retained:%.63s", c->name);
	for (i = 0; rc == 0 && i < nk; i++) {
		char **tags = realloc(keep[i]->tags, (keep[i]->ntags + 1) *
		    sizeof(*tags));

		if (tags == NULL) {
			rc = -ENOMEM;
			break;
		}
		keep[i]->tags = tags;
		tags[keep[i]->ntags] = strdup(tag);
		if (tags[keep[i]->ntags] == NULL) {
			rc = -ENOMEM;
			break;
		}
		keep[i]->ntags++;
		rc = cf_bk_repo_snapshot_save(dst, keep[i], sid);
	}
	if (rc < 0) {
		fprintf(stderr, "coffer: copying class %s of %s into %s: %s "
		    "(nothing destroyed; rerun the purge)\n", c->name,
		    cf_ks_tenant_name(t), rurl ? rurl : "?", strerror(-rc));
		goto out;
	}
	paths = json_array();
	for (i = 0; paths != NULL && i < c->npatterns; i++)
		json_array_append_new(paths, json_string(c->patterns[i]));
	cf_ks_time_format((time_t)(newest / 1000000000), when, sizeof(when));
	*entry = json_pack("{s:s, s:o, s:s, s:s, s:s, s:I, s:I, s:I, s:s?, "
	    "s:s, s:o}", "class", c->name, "paths", paths,
	    "retained_as", cf_ks_tenant_name(rt),
	    "retained_tenant_id", cf_ks_tenant_id_hex(rt),
	    "repository", rurl, "snapshots", (json_int_t)nk,
	    "files", (json_int_t)files, "bytes", (json_int_t)bytes,
	    "newest_snapshot", nk ? when : NULL,
	    "delete_after", cf_ks_tenant_get(rt, "retain_until"),
	    "key", key_ids(home, rt));
	if (*entry == NULL)
		rc = -ENOMEM;
out:
	for (i = 0; i < nk; i++)
		cf_bk_snapshot_free(keep[i]);
	free(keep);
	free(ids);
	cf_bk_copy_memo_free(memo);
	cf_bk_writer_free(w);
	cf_bk_repo_free(dst);
	cf_ks_tenant_free(rt);
	return rc;
}

/*
 * Before the keys are destroyed: every class of the tenant that
 * survives a purge is copied out (retain_class).  *out is the receipt's
 * "retained" array (empty if none).
 */
/*
 * A last snapshot of the store (unmounted by now) before the classes are
 * copied out, so retained files written since the last backup survive
 * too: `coffer backup NAME --tag final` as a child of this binary.  A
 * store that was never mounted has nothing to add.
 */
static int
final_backup(struct tl_ctx *ctx, const char *name, const char *store)
{
	char marker[PATH_MAX + 16];
	const char *home = cf_ks_home_path(ctx->home);
	pid_t pid;
	int status;

	snprintf(marker, sizeof(marker), "%s/cf.store", store);
	if (access(marker, F_OK) != 0)
		return 0;
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		execl("/proc/self/exe", "coffer", "--home", home, "-q",
		    "backup", name, "--tag", "final", (char *)NULL);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0)
		return -errno;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "coffer: the final backup of %s before its "
		    "purge failed (%s %d)\n", name, WIFEXITED(status) ?
		    "exit" : "signal", WIFEXITED(status) ?
		    WEXITSTATUS(status) : WTERMSIG(status));
		return -EIO;
	}
	return 0;
}

static int
retain_classes(struct tl_ctx *ctx, struct cf_ks_tenant *t, const char *url,
    const char *store, json_t **out)
{
	uint32_t kv = 0;
	struct cf_bk_class cl[CF_BK_CLASSES_MAX];
	struct cf_secbuf *root = NULL;
	struct cf_bk_repo *src = NULL;
	struct cf_bk_lock *lock = NULL;
	size_t ncl = 0, c;
	json_t *a, *e;
	int rc, any = 0;

	*out = a = json_array();
	if (a == NULL)
		return -ENOMEM;
	rc = tl_classes_load(ctx->home, t, cl, &ncl);
	if (rc < 0)
		return rc;
	for (c = 0; c < ncl; c++)
		any |= cl[c].survives_purge;
	if (!any)
		return 0;
	rc = final_backup(ctx, cf_ks_tenant_name(t), store);
	if (rc < 0)
		return rc;
	rc = tl_repo_unlock(t, url, &root, &kv);
	if (rc < 0)
		return rc;
	rc = tl_repo_open(t, &src, url, root, kv, 0);
	cf_secbuf_free(root);
	if (rc == -ENOENT)
		return 0;	/* never backed up: nothing to retain */
	if (rc < 0)
		return rc;
	/* No backup adds a snapshot while the classes are copied out. */
	rc = cf_bk_repo_lock(src, 1, NULL, &lock);
	if (rc == -EBUSY)
		fprintf(stderr, "coffer: repository %s is locked (a backup is "
		    "running); try again later\n", url);
	for (c = 0; rc == 0 && c < ncl; c++) {
		if (!cl[c].survives_purge)
			continue;
		rc = retain_class(ctx->home, t, src, url, &cl[c], cf_ks_now(),
		    &e);
		if (rc == 0)
			json_array_append_new(a, e);
	}
	if (lock != NULL && cf_bk_lock_release(lock) < 0 && rc == 0)
		rc = -EIO;
	cf_bk_repo_free(src);
	return rc;
}

/*
 * `lifecycle purge NAME` for a tenant already purged: purges the classes
 * it retained whose date has passed.  CF_EXIT_FAIL with *found 0 if it
 * retained none.
 */
static int
purge_retained_of(struct tl_ctx *ctx, const char *name, int *found)
{
	struct cf_bk_lifecycle_eval e;
	struct cf_ks_tenant *rt;
	char **names = NULL, prefix[CF_KS_NAME_MAX + 16];
	size_t count = 0, i, pl;
	int ret = CF_EXIT_OK, r1;

	*found = 0;
	pl = (size_t)snprintf(prefix, sizeof(prefix), "%s.retained-", name);
	if (cf_ks_tenant_list(ctx->home, &names, &count) < 0)
		return CF_EXIT_FAIL;
	for (i = 0; i < count; i++) {
		const char *of;

		if (strncmp(names[i], prefix, pl) != 0 ||
		    cf_ks_tenant_open(ctx->home, names[i], &rt) < 0)
			continue;
		of = cf_ks_tenant_get(rt, "retained_of");
		if (of == NULL || strcmp(of, name) != 0 ||
		    tl_lifecycle_eval(ctx->home, rt, cf_ks_now(), &e) < 0) {
			cf_ks_tenant_free(rt);
			continue;
		}
		(*found)++;
		if (!e.purge_due) {
			printf("tenant %s: retained class %s kept until %s\n",
			    names[i], cf_ks_tenant_get(rt, "class"),
			    cf_ks_tenant_get(rt, "retain_until"));
			cf_ks_tenant_free(rt);
			continue;
		}
		cf_ks_tenant_free(rt);
		r1 = tl_lifecycle_purge(ctx, names[i], "schedule: retained", 0);
		if (r1 != CF_EXIT_OK && ret == CF_EXIT_OK)
			ret = r1;
	}
	cf_ks_tenant_list_free(names, count);
	return *found ? ret : CF_EXIT_FAIL;
}

int
tl_lifecycle_purge(struct tl_ctx *ctx, const char *name, const char *reason,
    int force)
{
	struct cf_ks_home *home = tl_home(ctx, 0);
	struct cf_ks_tenant *t = NULL;
	struct purge_counts pc;
	char url[PATH_MAX + 16], store[PATH_MAX], tdir[PATH_MAX];
	char rdir[PATH_MAX], rpath[PATH_MAX + 128], when[32], hex[65];
	char kind_key[16];
	unsigned char hash[32];
	const char *ks;
	json_t *keys = NULL, *j = NULL, *kinds, *retained = NULL;
	char *text = NULL;
	uint64_t left = 0;
	struct stat st;
	int rc, ret = CF_EXIT_FAIL, store_gone, k;

	memset(&pc, 0, sizeof(pc));
	rc = cf_ks_tenant_open(home, name, &t);
	if (rc == -ENOENT) {
		int found;

		/* Purged before: its retained classes, if their date came. */
		ret = purge_retained_of(ctx, name, &found);
		if (found)
			return ret;
	}
	if (rc < 0)
		return tl_fail(rc, NULL);
	if (tl_tenant_held(t)) {
		fprintf(stderr, "coffer: tenant %s is on legal hold: purge "
		    "refused until 'coffer lifecycle release %s'\n", name,
		    name);
		ret = CF_EXIT_DENIED;
		goto out;
	}
	ks = cf_ks_tenant_get(t, "state");
	if (ks != NULL && strcmp(ks, "retained") == 0 && !force) {
		struct cf_bk_lifecycle_eval e;

		if (tl_lifecycle_eval(home, t, cf_ks_now(), &e) == 0 &&
		    !e.purge_due) {
			fprintf(stderr, "coffer: %s holds the retained class %s "
			    "of %s until %s: purge refused (--force to delete "
			    "it earlier)\n", name, cf_ks_tenant_get(t, "class"),
			    cf_ks_tenant_get(t, "retained_of"),
			    cf_ks_tenant_get(t, "retain_until"));
			ret = CF_EXIT_DENIED;
			goto out;
		}
	}
	ks = cf_ks_tenant_get(t, "store");
	if (ks != NULL)
		snprintf(store, sizeof(store), "%s", ks);
	else
		snprintf(store, sizeof(store), "%s/%s/store",
		    cf_ks_home_path(home), cf_ks_tenant_dir(t));
	rc = unmount_tenant(name, store, tl_store_served(home, t) == 1, force);
	if (rc < 0)
		goto out;
	tl_repo_url(home, t, NULL, url, sizeof(url));
	snprintf(tdir, sizeof(tdir), "%s/%s", cf_ks_home_path(home),
	    cf_ks_tenant_dir(t));
	/*
	 * The repository URL comes from tenant.json too: prove it is this
	 * tenant's (its config opens with the tenant's key) while the key
	 * still exists, and record that for a rerun.
	 */
	rc = repo_owned(home, t, url, force);
	if (rc < 0)
		goto out;
	/*
	 * 0: classes that survive the purge are copied out under keys of
	 * their own, while the tenant's key can still read them.
	 */
	if (!cf_ks_tenant_shredded(t)) {
		char *ids;

		rc = retain_classes(ctx, t, url, store, &retained);
		ids = rc == 0 ? json_dumps(retained, JSON_COMPACT) : NULL;
		if (rc == 0)
			rc = ids ? cf_ks_tenant_set(t, "purge_retained", ids) :
			    -ENOMEM;
		free(ids);
		if (rc < 0) {
			fprintf(stderr, "coffer: purge %s: keeping its retained "
			    "data classes failed: %s; nothing destroyed\n",
			    name, strerror(-rc));
			rc = 0;
			goto out;
		}
	}
	json_decref(retained);
	retained = NULL;
	if (cf_ks_tenant_get(t, "purge_retained") != NULL)
		retained = json_loads(cf_ks_tenant_get(t, "purge_retained"), 0,
		    NULL);
	if (retained == NULL)
		retained = json_array();
	/* 1: keys first, so every copy anywhere is unreadable from now on. */
	if (!cf_ks_tenant_shredded(t)) {
		char *ids;

		/* Kept in tenant.json so a rerun's receipt still names them. */
		keys = key_ids(home, t);
		ids = keys ? json_dumps(keys, JSON_COMPACT) : NULL;
		rc = ids ? cf_ks_tenant_set(t, "purge_keys", ids) : -ENOMEM;
		free(ids);
		if (rc < 0) {
			ret = tl_fail(rc, name);
			goto out;
		}
		rc = cf_ks_tenant_shred(t);
		if (rc < 0) {
			ret = tl_fail(rc, "crypto-shredding");
			goto out;
		}
	}
	if (keys == NULL && cf_ks_tenant_get(t, "purge_keys") != NULL)
		keys = json_loads(cf_ks_tenant_get(t, "purge_keys"), 0, NULL);
	if (keys == NULL)
		keys = json_array();
	/* 2: every repository object, then 3: the live store. */
	rc = purge_repo(url, &pc, &left);
	if (rc < 0) {
		fprintf(stderr, "coffer: deleting repository %s: %s (the keys "
		    "are destroyed; rerun the purge to finish)\n", url,
		    strerror(-rc));
		goto out;
	}
	if (strncmp(url, "file://", 7) == 0)
		rm_empty_dirs(url + 7);
	/* Once started, the marker may already be gone: trust the record. */
	ks = cf_ks_tenant_get(t, "purge_store");
	rc = ks != NULL && strcmp(ks, store) == 0 ? 0 : store_check(store);
	if (rc < 0) {
		fprintf(stderr, "coffer: %s is not empty and has no cf.store "
		    "marker: not a coffer store, not deleting it (check the "
		    "tenant's \"store\" setting, then rerun the purge)\n",
		    store);
		goto out;
	}
	rc = cf_ks_tenant_set(t, "purge_store", store);
	if (rc < 0) {
		ret = tl_fail(rc, name);
		goto out;
	}
	rc = rm_tree(store, &pc);
	store_gone = rc == 0 && lstat(store, &st) < 0;
	if (pc.locked > 0 && !ctx->json)
		tl_report_locked(name, pc.locked, pc.locked_until);
	if (rc < 0 || left != 0) {
		fprintf(stderr, "coffer: purge of %s incomplete: %llu repository "
		    "objects left, store %s; rerun the purge\n", name,
		    (unsigned long long)left, store_gone ? "gone" : "left");
		goto out;
	}
	/* 4: the receipt, bound into the audit chain by its hash. */
	cf_ks_time_format(cf_ks_now(), when, sizeof(when));
	kinds = json_object();
	for (k = 1; k <= 5; k++) {
		static const char *const kn[] = { "", "packs", "indexes",
		    "snapshots", "locks", "config" };

		snprintf(kind_key, sizeof(kind_key), "%s", kn[k]);
		json_object_set_new(kinds, kind_key,
		    json_integer((json_int_t)pc.kind_objects[k]));
	}
	j = json_pack("{s:i, s:s, s:s, s:s, s:s, s:s, "
	    "s:{s:s, s:I, s:I, s:o, s:I}, s:{s:s, s:I, s:I, s:b}, "
	    "s:o, s:s, s:o}",
	    "format", 1, "tenant", name, "tenant_id", cf_ks_tenant_id_hex(t),
	    "purged_at", when, "reason", reason,
	    "actor", getenv("SUDO_USER") ? getenv("SUDO_USER") : "operator",
	    "repository", "url", url, "objects", (json_int_t)pc.objects,
	    "bytes", (json_int_t)pc.bytes, "by_kind", kinds,
	    "objects_remaining", (json_int_t)left,
	    "store", "path", store, "files", (json_int_t)pc.files,
	    "bytes", (json_int_t)pc.file_bytes, "verified_absent", store_gone,
	    "keys_destroyed", keys, "key_destruction", "crypto-shred: every "
	    "wrapped root key overwritten and unlinked",
	    "retained", retained);
	keys = NULL;
	retained = NULL;
	if (j == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
	if (text == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	snprintf(rdir, sizeof(rdir), "%s/receipts", cf_ks_home_path(home));
	if (mkdir(rdir, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		goto out;
	}
	snprintf(rpath, sizeof(rpath), "%s/%s-%s.json", rdir, name,
	    cf_ks_tenant_id_hex(t));
	rc = write_receipt(rpath, text, strlen(text));
	if (rc < 0)
		goto out;
	crypto_generichash(hash, sizeof(hash), (const unsigned char *)text,
	    strlen(text), NULL, 0);
	sodium_bin2hex(hex, sizeof(hex), hash, sizeof(hash));
	{
		struct cf_ks_audit_field f[] = {
			{ "tenant", name, 0 },
			{ "tenant_id", cf_ks_tenant_id_hex(t), 0 },
			{ "reason", reason, 0 },
			{ "repo_objects", NULL, (long long)pc.objects },
			{ "repo_bytes", NULL, (long long)pc.bytes },
			{ "store_files", NULL, (long long)pc.files },
			{ "store_bytes", NULL, (long long)pc.file_bytes },
			{ "receipt_hash", hex, 0 },
			{ "retained_classes", NULL, (long long)json_array_size(
			    json_object_get(j, "retained")) },
		};

		rc = cf_ks_audit_append(home, "tenant.purge", f, 9);
		if (rc < 0) {
			ret = tl_fail(rc, "auditing the purge");
			goto out;
		}
	}
	/* 5: the tenant's directory (tenant.json, emptied keys/). */
	rc = rm_tree(tdir, &pc);
	if (rc < 0) {
		fprintf(stderr, "coffer: removing %s: %s\n", tdir,
		    strerror(-rc));
		goto out;
	}
	if (ctx->json) {
		json_object_set_new(j, "receipt_file", json_string(rpath));
		json_object_set_new(j, "receipt_hash", json_string(hex));
		tl_print_json(j);
		j = NULL;
	} else if (ctx->verbose >= 0) {
		json_t *e;
		size_t ri;

		printf("purged %s: %llu repository objects (%llu bytes), %llu "
		    "store files, keys destroyed\nreceipt %s\n", name,
		    (unsigned long long)pc.objects,
		    (unsigned long long)pc.bytes,
		    (unsigned long long)pc.files, rpath);
		json_array_foreach(json_object_get(j, "retained"), ri, e)
			printf("retained class %s: %lld files in %lld snapshots "
			    "as tenant %s until %s\n",
			    json_string_value(json_object_get(e, "class")),
			    (long long)json_integer_value(json_object_get(e,
			    "files")),
			    (long long)json_integer_value(json_object_get(e,
			    "snapshots")),
			    json_string_value(json_object_get(e,
			    "retained_as")),
			    json_string_value(json_object_get(e,
			    "delete_after")));
	}
	ret = CF_EXIT_OK;
out:
	if (ret == CF_EXIT_FAIL && rc < 0 && rc != -EBUSY && rc != -EPERM)
		fprintf(stderr, "coffer: purge %s: %s\n", name, strerror(-rc));
	free(text);
	json_decref(j);
	json_decref(keys);
	json_decref(retained);
	cf_ks_tenant_free(t);
	return ret;
}

/* ---- verify-receipt --------------------------------------------------------- */

struct find_hash {
	char want[96];
	int found;
};

static int
find_hash(void *arg, const char *line)
{
	struct find_hash *f = arg;

	if (strstr(line, "\"event\":\"tenant.purge\"") != NULL &&
	    strstr(line, f->want) != NULL)
		f->found = 1;
	return 0;
}

static int
do_verify_receipt(struct tl_ctx *ctx, const char *file)
{
	struct cf_ks_audit_report rep;
	struct find_hash fh;
	unsigned char hash[32], *buf = NULL;
	char hex[65];
	size_t len = 0;
	FILE *f;
	int rc;

	f = fopen(file, "re");
	if (f == NULL) {
		fprintf(stderr, "coffer: %s: %s\n", file, strerror(errno));
		return CF_EXIT_FAIL;
	}
	buf = malloc(1 << 20);
	if (buf != NULL)
		len = fread(buf, 1, 1 << 20, f);
	fclose(f);
	if (buf == NULL)
		return CF_EXIT_FAIL;
	crypto_generichash(hash, sizeof(hash), buf, len, NULL, 0);
	free(buf);
	sodium_bin2hex(hex, sizeof(hex), hash, sizeof(hash));
	rc = cf_ks_audit_verify(tl_home(ctx, 0), &rep);
	if (rc < 0) {
		fprintf(stderr, "coffer: the audit log does not verify: %s\n",
		    rep.problem);
		return CF_EXIT_INTEGRITY;
	}
	memset(&fh, 0, sizeof(fh));
	snprintf(fh.want, sizeof(fh.want), "\"receipt_hash\":\"%s\"", hex);
	rc = cf_ks_audit_foreach(ctx->home, NULL, find_hash, &fh);
	if (rc < 0 || !fh.found) {
		fprintf(stderr, "coffer: no purge record in the audit log "
		    "vouches for %s (edited or foreign receipt)\n", file);
		return CF_EXIT_INTEGRITY;
	}
	printf("receipt %s verified: hash %s is in the MAC-chained audit "
	    "log\n", file, hex);
	return CF_EXIT_OK;
}

/* ---- dispatch ------------------------------------------------------------------ */

int
cmd_lifecycle(struct tl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "at", required_argument, NULL, 'a' },
		{ "now", required_argument, NULL, 'n' },
		{ "yes", no_argument, NULL, 'y' },
		{ "force", no_argument, NULL, 'f' },
		{ "reason", required_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 },
	};
	const char *at = NULL, *now = NULL, *reason = NULL, *sub;
	int c, yes = 0, force = 0, nargs;

	if (argc < 2)
		return tl_usage(&tl_cmd_lifecycle, "lifecycle: give a "
		    "subcommand");
	sub = argv[1];
	while ((c = getopt_long(argc - 1, argv + 1, "", opts, NULL)) != -1) {
		switch (c) {
		case 'a':
			at = optarg;
			break;
		case 'n':
			now = optarg;
			break;
		case 'y':
			yes = 1;
			break;
		case 'f':
			force = 1;
			break;
		case 'r':
			reason = optarg;
			break;
		default:
			return tl_usage(&tl_cmd_lifecycle, "lifecycle: bad "
			    "option");
		}
	}
	nargs = argc - 1 - optind;
	argv += 1 + optind;
	if (strcmp(sub, "set") == 0 && nargs == 2)
		return do_set(ctx, argv[0], argv[1], at);
	if (strcmp(sub, "show") == 0 && nargs == 1)
		return do_show(ctx, argv[0], now);
	if ((strcmp(sub, "hold") == 0 || strcmp(sub, "release") == 0) &&
	    nargs == 1)
		return do_hold(ctx, argv[0], sub[0] == 'h', reason);
	if (strcmp(sub, "verify-receipt") == 0 && nargs == 1)
		return do_verify_receipt(ctx, argv[0]);
	if (strcmp(sub, "purge") == 0 && nargs == 1) {
		if (!yes)
			return tl_usage(&tl_cmd_lifecycle, "lifecycle purge "
			    "destroys the tenant's data, backups and keys: "
			    "add --yes");
		return tl_lifecycle_purge(ctx, argv[0], "operator request",
		    force);
	}
	return tl_usage(&tl_cmd_lifecycle, "lifecycle: bad arguments");
}
