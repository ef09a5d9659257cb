/*
 * cmd_retention.c - coffer retention plan [NAME] [--now DATE] and coffer
 * retention apply [NAME] [--now DATE] [--dry-run] (docs/retention.md).
 *
 * The policy of a tenant is coffer.conf's [retention.PLAN] section for
 * the tenant's "plan" field, else [retention]; a tenant without any
 * keeps everything.  plan prints each snapshot's fate and the rules that
 * keep it; apply takes the repository's exclusive lock (a running backup
 * makes it give up, and it keeps backups out while it runs), decides
 * again under the lock, deletes the snapshots to remove and prunes
 * (backup/bk_prune.c).  A tenant on legal hold is left alone.  apply also
 * runs a purge whose date has passed (tenant lifecycle), unless held.
 * Data classes with a keep period leave the snapshots (by the snapshot's
 * age, or the file's own mtime) and the live store (tl_expire.c).
 *
 * Snapshots are grouped by their paths, as restic groups by host and
 * paths (the host is left out: one repository belongs to one tenant, and
 * a restore host may differ).  Snapshots newer than --now are not
 * considered ("future") and always kept.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cf_backup.h"
#include "tl_int.h"

const struct tl_cmd tl_cmd_retention = {
	"retention", cmd_retention,
	"  coffer retention plan [NAME] [--now DATE] [--json] [--files]\n"
	"  coffer retention apply [NAME] [--now DATE] [--dry-run] [--json] "
	"[--files]\n"
	"    policy: coffer.conf [retention.PLAN] (tenant field plan) or "
	"[retention]:\n"
	"    keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly,\n"
	"    keep_yearly (a count or 'all'), keep_within (e.g. 30d, 1y6m),\n"
	"    repack_pct (default 20)\n"
	"    data classes ([class.NAME] keep) also delete expired files from "
	"the\n"
	"    live store; --files names them (tenant data: only on request)\n",
	"snapshot retention (plan, apply + prune) and scheduled purges",
};

struct snap {
	unsigned char id[CF_BK_ID_BYTES];
	char hex[65];
	int64_t time;		/* ns */
	char *group;		/* paths joined by '\n' */
	unsigned keep;
	int future;
	char drops[160];	/* classes past their period, "logs, cache" */
	unsigned dropmask;	/* bit c: classes[c] is due */
};

struct policy {
	struct cf_bk_retention_policy p;
	unsigned repack_pct;
	char source[112];
};

static int
count_key(const struct cf_ks_config *cfg, const char *sec, const char *key,
    uint32_t *v)
{
	const char *s = cf_ks_config_get(cfg, sec, key);
	char *end;
	unsigned long n;

	if (s == NULL)
		return 0;
	if (strcmp(s, "all") == 0) {
		*v = CF_BK_KEEP_ALL;
		return 0;
	}
	errno = 0;
	n = strtoul(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || n > 1000000 ||
	    s[0] == '-') {
		fprintf(stderr, "coffer: coffer.conf [%s] %s: want a count or "
		    "'all', not '%s'\n", sec, key, s);
		return -EINVAL;
	}
	*v = (uint32_t)n;
	return 0;
}

static int
load_policy(struct cf_ks_home *home, const struct cf_ks_tenant *t,
    struct policy *pol)
{
	const struct cf_ks_config *cfg = cf_ks_home_config(home);
	const char *plan = cf_ks_tenant_get(t, "plan"), *s;
	char sec[96];
	int rc = 0;

	memset(pol, 0, sizeof(*pol));
	pol->repack_pct = 20;
	if (plan != NULL && plan[0] != '\0')
		snprintf(sec, sizeof(sec), "retention.%s", plan);
	else
		snprintf(sec, sizeof(sec), "retention");
	snprintf(pol->source, sizeof(pol->source), "[%s]", sec);
	if (cfg == NULL)
		return 0;
	if (plan != NULL && plan[0] != '\0' &&
	    cf_ks_config_get(cfg, sec, "keep_last") == NULL &&
	    cf_ks_config_get(cfg, sec, "keep_hourly") == NULL &&
	    cf_ks_config_get(cfg, sec, "keep_daily") == NULL &&
	    cf_ks_config_get(cfg, sec, "keep_weekly") == NULL &&
	    cf_ks_config_get(cfg, sec, "keep_monthly") == NULL &&
	    cf_ks_config_get(cfg, sec, "keep_yearly") == NULL &&
	    cf_ks_config_get(cfg, sec, "keep_within") == NULL) {
		fprintf(stderr, "coffer: tenant %s has plan '%s' but "
		    "coffer.conf has no [%s] rules\n", cf_ks_tenant_name(t),
		    plan, sec);
		return -EINVAL;
	}
	rc |= count_key(cfg, sec, "keep_last", &pol->p.last);
	rc |= count_key(cfg, sec, "keep_hourly", &pol->p.hourly);
	rc |= count_key(cfg, sec, "keep_daily", &pol->p.daily);
	rc |= count_key(cfg, sec, "keep_weekly", &pol->p.weekly);
	rc |= count_key(cfg, sec, "keep_monthly", &pol->p.monthly);
	rc |= count_key(cfg, sec, "keep_yearly", &pol->p.yearly);
	s = cf_ks_config_get(cfg, sec, "keep_within");
	if (s != NULL && cf_bk_duration_parse(s, &pol->p.within) < 0) {
		fprintf(stderr, "coffer: coffer.conf [%s] keep_within: bad "
		    "duration '%s' (e.g. 30d, 1y6m, 12h)\n", sec, s);
		rc = -EINVAL;
	}
	s = cf_ks_config_get(cfg, sec, "repack_pct");
	if (s != NULL) {
		uint32_t v = 0;

		if (count_key(cfg, sec, "repack_pct", &v) < 0 || v > 100) {
			fprintf(stderr, "coffer: coffer.conf [%s] repack_pct: "
			    "want 0..100\n", sec);
			rc = -EINVAL;
		}
		pol->repack_pct = v;
	}
	return rc ? -EINVAL : 0;
}

static void
snaps_free(struct snap *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(v[i].group);
	free(v);
}

static char *
group_of(const struct cf_bk_snapshot *s)
{
	size_t i, len = 1, off = 0, l;
	char *g;

	for (i = 0; i < s->npaths; i++)
		len += strlen(s->paths[i]) + 1;
	g = calloc(1, len);
	for (i = 0; g != NULL && i < s->npaths; i++) {
		l = strlen(s->paths[i]);
		memcpy(g + off, s->paths[i], l);
		g[off + l] = '\n';
		off += l + 1;
	}
	return g;
}

/* ---- data classes -------------------------------------------------------- */

static int
class_bool(const char *s, int *v)
{
	if (strcmp(s, "true") == 0 || strcmp(s, "yes") == 0 ||
	    strcmp(s, "1") == 0)
		*v = 1;
	else if (strcmp(s, "false") == 0 || strcmp(s, "no") == 0 ||
	    strcmp(s, "0") == 0)
		*v = 0;
	else
		return -EINVAL;
	return 0;
}

/*
 * The tenant's data classes: tenant.json "classes", else the "classes"
 * key of its retention section; each name a [class.NAME] section with
 * paths, keep and survives_purge.
 */
int
tl_classes_load(struct cf_ks_home *home, const struct cf_ks_tenant *t,
    struct cf_bk_class *out, size_t *n)
{
	const struct cf_ks_config *cfg = cf_ks_home_config(home);
	const char *plan = cf_ks_tenant_get(t, "plan");
	const char *list = cf_ks_tenant_get(t, "classes"), *p, *e, *s;
	char sec[96], name[64];
	size_t len;

	*n = 0;
	if (list == NULL && cfg != NULL) {
		if (plan != NULL && plan[0] != '\0')
			snprintf(sec, sizeof(sec), "retention.%s", plan);
		else
			snprintf(sec, sizeof(sec), "retention");
		list = cf_ks_config_get(cfg, sec, "classes");
	}
	for (p = list; p != NULL && *p != '\0'; p = e) {
		struct cf_bk_class *c = &out[*n];

		while (*p == ' ' || *p == ',')
			p++;
		for (e = p; *e != '\0' && *e != ',' && *e != ' '; e++)
			;
		len = (size_t)(e - p);
		if (len == 0)
			continue;
		if (len >= sizeof(name) || *n == CF_BK_CLASSES_MAX) {
			fprintf(stderr, "coffer: tenant %s: too many data "
			    "classes or a name too long\n",
			    cf_ks_tenant_name(t));
			return -EINVAL;
		}
		memcpy(name, p, len);
		name[len] = '\0';
		memset(c, 0, sizeof(*c));
		snprintf(c->name, sizeof(c->name), "%s", name);
		snprintf(sec, sizeof(sec), "class.%s", name);
		s = cfg ? cf_ks_config_get(cfg, sec, "paths") : NULL;
		if (s == NULL || cf_bk_class_paths(c, s) < 0) {
			fprintf(stderr, "coffer: coffer.conf [%s] paths: %s "
			    "(want patterns such as logs/%s, separated by "
			    "commas)\n", sec, s ? "bad pattern list" :
			    "missing", "**");
			return -EINVAL;
		}
		s = cf_ks_config_get(cfg, sec, "keep");
		if (s != NULL && cf_bk_duration_parse(s, &c->keep) < 0) {
			fprintf(stderr, "coffer: coffer.conf [%s] keep: bad "
			    "duration '%s' (e.g. 30d, 7y)\n", sec, s);
			return -EINVAL;
		}
		s = cf_ks_config_get(cfg, sec, "survives_purge");
		if (s != NULL && class_bool(s, &c->survives_purge) < 0) {
			fprintf(stderr, "coffer: coffer.conf [%s] "
			    "survives_purge: want true or false\n", sec);
			return -EINVAL;
		}
		if (c->survives_purge && c->keep == 0) {
			fprintf(stderr, "coffer: coffer.conf [%s]: "
			    "survives_purge needs a keep period\n", sec);
			return -EINVAL;
		}
		(*n)++;
	}
	return 0;
}

/* The classes past their period in a snapshot taken at t (ns). */
static void
classes_due(const struct cf_bk_class *cl, size_t ncl, int64_t t, time_t now,
    struct snap *v)
{
	int64_t sec = t / 1000000000;
	size_t c, used = 0;

	v->dropmask = 0;
	v->drops[0] = '\0';
	for (c = 0; c < ncl; c++) {
		if (cl[c].keep == 0 || (int64_t)now < sec + cl[c].keep)
			continue;
		v->dropmask |= 1U << c;
		used += (size_t)snprintf(v->drops + used,
		    used < sizeof(v->drops) ? sizeof(v->drops) - used : 0,
		    "%s%s", used ? ", " : "", cl[c].name);
		if (used >= sizeof(v->drops))
			used = sizeof(v->drops) - 1;
	}
}

struct drop_arg {
	const struct cf_bk_class *cl;
	size_t ncl;
	unsigned mask;		/* classes due by the snapshot's age */
	time_t now;
	unsigned hit_age;	/* classes that lost entries by age */
	unsigned hit_file;	/* ... by the file's own mtime */
};

/*
 * What leaves a snapshot (docs/retention.md, Snapshot retention per
 * class): everything of a class due by the snapshot's age, and every
 * non-directory of a class with keep whose own mtime is keep or longer
 * ago (the rule of the live store).  Directories nothing of a class with
 * keep can be below are not searched.
 */
static int
drop_path(void *arg, const char *path, const struct cf_bk_node *n)
{
	struct drop_arg *d = arg;
	size_t c;
	int may = 0;

	for (c = 0; c < d->ncl; c++) {
		if (d->cl[c].keep == 0)
			continue;
		if ((d->mask & (1U << c)) &&
		    cf_bk_class_match(&d->cl[c], path)) {
			d->hit_age |= 1U << c;
			return 1;
		}
	}
	for (c = 0; c < d->ncl; c++) {
		if (d->cl[c].keep == 0)
			continue;
		if (n->type != CF_BK_NODE_DIR && (int64_t)d->now >=
		    n->mtime / 1000000000 + d->cl[c].keep &&
		    cf_bk_class_match(&d->cl[c], path)) {
			d->hit_file |= 1U << c;
			return 1;
		}
		if (n->type == CF_BK_NODE_DIR && !may)
			may = cf_bk_class_may_contain(&d->cl[c], path);
	}
	return n->type == CF_BK_NODE_DIR && !may ? 2 : 0;
}

/* Keeps the exclusive lock fresh (it goes stale after 30 minutes). */
static int
lock_keep(struct cf_bk_lock *lock, time_t *refreshed)
{
	time_t now = time(NULL);

	if (lock == NULL || now - *refreshed < 240)
		return 0;
	*refreshed = now;
	return cf_bk_lock_refresh(lock);
}

/*
 * Rewrites each kept snapshot that holds files of a class past its
 * period (the snapshot's age, or the file's own mtime): new trees
 * without them, a new snapshot object (same time, paths, parent; tag
 * "dropped:CLASS" for a class dropped by age, "expired:CLASS" for files
 * dropped by their mtime), then the old object deleted.  A crash leaves
 * at worst both objects, and a rerun makes the same new one (same
 * content, same storage id) and deletes the old.
 */
static int
rewrite_classes(struct cf_bk_repo *r, struct cf_bk_lock *lock,
    const struct cf_bk_class *cl, size_t ncl, time_t now, struct snap *v,
    size_t n, uint64_t *rewritten, uint64_t *files, uint64_t *bytes)
{
	time_t refreshed = time(NULL);
	struct cf_bk_writer *w = NULL;
	struct cf_bk_snapshot *s = NULL;
	struct cf_bk_filter_stats fs;
	struct cf_bk_writer_stats wst;
	struct drop_arg da = { cl, ncl, 0, now, 0, 0 };
	unsigned char (*nt)[CF_BK_ID_BYTES] = NULL;
	unsigned char nid[CF_BK_ID_BYTES];
	unsigned *hits = NULL;	/* per snapshot: age bits, file bits << 16 */
	char **tags = NULL;
	size_t i, c, k;
	int rc, any = 0;

	*rewritten = *files = *bytes = 0;
	for (c = 0; c < ncl; c++)
		any |= cl[c].keep > 0;
	if (!any)
		return 0;
	any = 0;
	for (i = 0; i < n; i++)
		any |= v[i].keep != 0 && !v[i].future;
	if (!any)
		return 0;
	nt = calloc(n, sizeof(*nt));
	hits = calloc(n, sizeof(*hits));
	if (nt == NULL || hits == NULL) {
		free(nt);
		free(hits);
		return -ENOMEM;
	}
	rc = cf_bk_repo_index_load(r, NULL);
	if (rc == 0)
		rc = cf_bk_writer_new(&w, r, 0);
	/* 1: the new trees, for every snapshot that loses something. */
	for (i = 0; rc == 0 && i < n; i++) {
		if (v[i].keep == 0 || v[i].future)
			continue;
		rc = lock_keep(lock, &refreshed);
		if (rc == 0)
			rc = cf_bk_repo_snapshot_load(r, v[i].id, &s);
		if (rc < 0)
			break;
		da.mask = v[i].dropmask;
		da.hit_age = da.hit_file = 0;
		rc = cf_bk_tree_filter(w, s->tree, drop_path, &da, nt[i], &fs);
		if (rc == 0 && memcmp(nt[i], s->tree, CF_BK_ID_BYTES) == 0)
			hits[i] = 0;	/* nothing of them in it */
		else
			hits[i] = da.hit_age | (da.hit_file << 16);
		*files += fs.files;
		*bytes += fs.bytes;
		cf_bk_snapshot_free(s);
		s = NULL;
	}
	if (rc == 0)
		rc = cf_bk_writer_flush(w);
	/* 2: the snapshots naming them, then the old ones go. */
	for (i = 0; rc == 0 && i < n; i++) {
		if (v[i].keep == 0 || v[i].future || hits[i] == 0)
			continue;
		rc = cf_bk_repo_snapshot_load(r, v[i].id, &s);
		if (rc < 0)
			break;
		tags = calloc(s->ntags + 2 * ncl, sizeof(*tags));
		if (tags == NULL) {
			rc = -ENOMEM;
			break;
		}
		for (k = 0; k < s->ntags; k++)
			tags[k] = s->tags[k];
		for (c = 0; c < 2 * ncl; c++) {
			char tag[80];
			size_t j, dup = 0;

			/* c < ncl: by age; then by file mtime. */
			if (!(hits[i] & (1U << (c < ncl ? c : c - ncl + 16))))
				continue;
			snprintf(tag, sizeof(tag), "%s:%.63s", c < ncl ?
			    "dropped" : "expired", cl[c % ncl].name);
			for (j = 0; j < k; j++)
				dup |= strcmp(tags[j], tag) == 0;
			if (!dup && (tags[k] = strdup(tag)) != NULL)
				k++;
		}
		{
			char **old = s->tags;
			size_t oldn = s->ntags;

			s->tags = tags;
			s->ntags = k;
			memcpy(s->tree, nt[i], CF_BK_ID_BYTES);
			/*
			 * [BK-SNAP-2] The kept blobs need what the old
			 * record says, the new trees what the writer saw.
			 */
			cf_bk_writer_stats(w, &wst);
			if (!wst.has_key_versions ||
			    cf_bk_snapshot_add_key_versions(s,
			    wst.key_versions, wst.nkey_versions) < 0)
				s->has_key_versions = 0;
			rc = cf_bk_repo_snapshot_save(r, s, nid);
			s->tags = old;
			s->ntags = oldn;
			for (c = oldn; c < k; c++)
				free(tags[c]);
			free(tags);
			tags = NULL;
		}
		cf_bk_snapshot_free(s);
		s = NULL;
		if (rc < 0)
			break;
		if (memcmp(nid, v[i].id, CF_BK_ID_BYTES) != 0) {
			rc = cf_bk_repo_snapshot_delete(r, v[i].id);
			if (rc == -ENOENT)
				rc = 0;
		}
		if (rc == -EROFS) {
			/* S3 Object Lock: the old one goes on a later run. */
			rc = 0;
		}
		memcpy(v[i].id, nid, CF_BK_ID_BYTES);
		cf_bk_id_hex(nid, v[i].hex);
		(*rewritten)++;
	}
	cf_bk_snapshot_free(s);
	cf_bk_writer_free(w);
	free(nt);
	free(hits);
	return rc;
}

/* ---- write activity ------------------------------------------------------ */

struct act {
	int64_t time;
	unsigned char id[CF_BK_ID_BYTES], tree[CF_BK_ID_BYTES];
	unsigned char parent[CF_BK_ID_BYTES];
	int has_parent;
	char *group;
	char dropped[256];	/* "dropped:" tags, joined */
};

static int
act_cmp(const void *a, const void *b)
{
	const struct act *x = a, *y = b;

	return x->time > y->time ? -1 : x->time < y->time;
}

/*
 * The time (s) of the newest backup that found changes ("write
 * activity", docs/retention.md): a snapshot whose tree differs, other
 * than by access times, from its parent's (or, if the parent is gone,
 * the next older snapshot of the same paths).  The first snapshot of its
 * paths does not count (nothing to compare with), nor one compared with
 * a snapshot a data class was removed from.  Only snapshots after
 * `after` (s) are looked at; 0 if none.
 */
static int
last_write(struct cf_bk_repo *r, int64_t after, int64_t *out)
{
	unsigned char (*ids)[CF_BK_ID_BYTES] = NULL;
	struct cf_bk_snapshot *s;
	struct act *a = NULL;
	size_t n = 0, i, j, m = 0;
	int rc;

	*out = 0;
	rc = cf_bk_repo_snapshot_list(r, &ids, &n);
	if (rc < 0 || n == 0)
		goto out;
	a = calloc(n, sizeof(*a));
	if (a == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < n; i++) {
		rc = cf_bk_repo_snapshot_load(r, ids[i], &s);
		if (rc < 0)
			goto out;
		a[m].time = s->time;
		memcpy(a[m].id, ids[i], CF_BK_ID_BYTES);
		memcpy(a[m].tree, s->tree, CF_BK_ID_BYTES);
		memcpy(a[m].parent, s->parent, CF_BK_ID_BYTES);
		a[m].has_parent = s->has_parent;
		a[m].group = group_of(s);
		for (j = 0; j < s->ntags; j++)
			if (strncmp(s->tags[j], "dropped:", 8) == 0)
				snprintf(a[m].dropped + strlen(a[m].dropped),
				    sizeof(a[m].dropped) -
				    strlen(a[m].dropped), "%s,", s->tags[j]);
		cf_bk_snapshot_free(s);
		if (a[m++].group == NULL) {
			rc = -ENOMEM;
			goto out;
		}
	}
	qsort(a, m, sizeof(*a), act_cmp);
	for (i = 0; i < m && a[i].time / 1000000000 > after; i++) {
		const struct act *prev = NULL;

		for (j = 0; a[i].has_parent && j < m; j++)
			if (memcmp(a[j].id, a[i].parent, CF_BK_ID_BYTES) == 0)
				prev = &a[j];
		for (j = i + 1; prev == NULL && j < m; j++)
			if (strcmp(a[j].group, a[i].group) == 0)
				prev = &a[j];
		if (prev == NULL) {
			/* The first of its paths: nothing to compare with. */
			continue;
		} else if (strcmp(prev->dropped, a[i].dropped) != 0) {
			/* A class was removed from one of them: unknown. */
			continue;
		} else {
			rc = cf_bk_tree_changed(r, a[i].tree, prev->tree);
			if (rc < 0)
				goto out;
		}
		if (rc == 1) {
			*out = a[i].time / 1000000000;
			break;
		}
	}
	rc = 0;
out:
	for (i = 0; a != NULL && i < m; i++)
		free(a[i].group);
	free(a);
	free(ids);
	return rc;
}

/* Loads every snapshot and decides which to keep. */
static int
decide(struct cf_bk_repo *r, const struct policy *pol, time_t now,
    struct snap **out, size_t *nout)
{
	unsigned char (*ids)[CF_BK_ID_BYTES] = NULL;
	struct cf_bk_snapshot *s;
	struct snap *v = NULL;
	int64_t *times = NULL;
	unsigned *keep = NULL;
	size_t n = 0, i, j, m;
	int rc;

	*out = NULL;
	*nout = 0;
	rc = cf_bk_repo_snapshot_list(r, &ids, &n);
	if (rc < 0 || n == 0)
		goto out;
	v = calloc(n, sizeof(*v));
	times = calloc(n, sizeof(*times));
	keep = calloc(n, sizeof(*keep));
	if (v == NULL || times == NULL || keep == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < n; i++) {
		cf_bk_id_hex(ids[i], v[i].hex);
		rc = cf_bk_repo_snapshot_load(r, ids[i], &s);
		if (rc < 0) {
			/* Deciding without it could keep too little. */
			fprintf(stderr, "coffer: snapshot %.12s... unreadable "
			    "(%s): run coffer verify\n", v[i].hex,
			    strerror(-rc));
			goto out;
		}
		memcpy(v[i].id, ids[i], CF_BK_ID_BYTES);
		cf_bk_id_hex(ids[i], v[i].hex);
		v[i].time = s->time;
		v[i].group = group_of(s);
		v[i].future = v[i].time / 1000000000 > (int64_t)now;
		cf_bk_snapshot_free(s);
		if (v[i].group == NULL) {
			rc = -ENOMEM;
			goto out;
		}
	}
	/* Per group: the plan over the group's snapshots up to now. */
	for (i = 0; i < n; i++) {
		size_t *idx;

		if (v[i].keep != 0 || v[i].future)
			continue;
		idx = calloc(n, sizeof(*idx));
		if (idx == NULL) {
			rc = -ENOMEM;
			goto out;
		}
		for (j = i, m = 0; j < n; j++) {
			if (!v[j].future && strcmp(v[j].group, v[i].group) ==
			    0) {
				idx[m] = j;
				times[m++] = v[j].time;
			}
		}
		rc = cf_bk_retention_plan(&pol->p, times, m, keep);
		for (j = 0; rc == 0 && j < m; j++)
			v[idx[j]].keep = keep[j] ? keep[j] : 0x80000000U;
		free(idx);
		if (rc < 0)
			goto out;
	}
	for (i = 0; i < n; i++)
		if (v[i].keep == 0x80000000U)
			v[i].keep = 0;
	*out = v;
	*nout = n;
	v = NULL;
	rc = 0;
out:
	if (v != NULL)
		snaps_free(v, n);
	free(ids);
	free(times);
	free(keep);
	return rc;
}

static int
snap_cmp(const void *a, const void *b)
{
	const struct snap *x = a, *y = b;

	return x->time < y->time ? -1 : x->time > y->time;
}

/* Prints the plan; with --json appends the tenant's object and returns it. */
static json_t *
print_plan(struct tl_ctx *ctx, const char *name, const struct policy *pol,
    int held, struct snap *v, size_t n, json_t *tenants)
{
	char when[32], why[320];
	json_t *a = NULL, *p;
	size_t i, nrm = 0;

	qsort(v, n, sizeof(*v), snap_cmp);
	if (ctx->json)
		a = json_array();
	else
		printf("tenant %s: policy %s%s\n", name, pol->source,
		    cf_bk_retention_policy_set(&pol->p) ? "" :
		    " (no rules: everything kept)");
	for (i = 0; i < n; i++) {
		int keep = v[i].keep != 0 || v[i].future || held;

		cf_ks_time_format((time_t)(v[i].time / 1000000000), when,
		    sizeof(when));
		if (held)
			snprintf(why, sizeof(why), "legal hold");
		else if (v[i].future)
			snprintf(why, sizeof(why), "after --now");
		else
			cf_bk_retention_reasons(v[i].keep, why, sizeof(why));
		if (keep && !held && v[i].drops[0] != '\0')
			snprintf(why + strlen(why), sizeof(why) - strlen(why),
			    "; without %s", v[i].drops);
		nrm += !keep;
		if (a != NULL)
			json_array_append_new(a, json_pack("{s:s, s:s, s:s, "
			    "s:s, s:s}", "id", v[i].hex, "time", when,
			    "paths", v[i].group, "action", keep ? "keep" :
			    "remove", "reason", keep ? why : "no rule keeps "
			    "it"));
		else
			printf("%-6s %s %.12s  %s\n", keep ? "keep" :
			    "remove", when, v[i].hex, keep ? why : "");
	}
	if (a == NULL) {
		printf("tenant %s: %zu snapshots, %zu to keep, %zu to "
		    "remove\n", name, n, n - nrm, nrm);
		return NULL;
	}
	p = json_pack("{s:s, s:s, s:b, s:I, s:I, s:o}", "tenant", name,
	    "policy", pol->source, "hold", held, "keep", (json_int_t)(n - nrm),
	    "remove", (json_int_t)nrm, "snapshots", a);
	json_array_append_new(tenants, p);
	return p;
}

/* Opens the tenant's repository; returns an exit code, OK with *out. */
static int
open_repo(struct tl_ctx *ctx, struct cf_ks_tenant *t, struct cf_bk_repo **out,
    char *url, size_t cap)
{
	uint32_t kv = 0;
	struct cf_secbuf *root = NULL;
	int rc;

	*out = NULL;
	tl_repo_url(ctx->home, t, NULL, url, cap);
	rc = tl_repo_unlock(t, url, &root, &kv);
	if (rc < 0)
		return tl_fail(rc, cf_ks_tenant_name(t));
	rc = tl_repo_open(t, out, url, root, kv, 0);
	cf_secbuf_free(root);
	if (rc == -ENOENT)
		return -1;	/* no repository: nothing to do */
	if (rc < 0) {
		fprintf(stderr, "coffer: repository %s of %s: %s\n", url,
		    cf_ks_tenant_name(t), tl_repo_strerror(url, rc));
		return rc == -EBADMSG ? CF_EXIT_INTEGRITY : cf_ks_exit_code(rc);
	}
	return CF_EXIT_OK;
}

void
tl_report_locked(const char *name, uint64_t n, int64_t until)
{
	char date[32] = "an unknown date";
	time_t t = (time_t)until;
	struct tm tm;

	if (until > 0 && gmtime_r(&t, &tm) != NULL)
		strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", &tm);
	printf("tenant %s: %llu objects locked (S3 Object Lock) until %s, "
	    "will be deleted later\n", name, (unsigned long long)n, date);
}

static void
audit_apply(struct cf_ks_home *home, const char *name, size_t removed,
    uint64_t rewritten, uint64_t class_files,
    const struct cf_bk_prune_stats *st)
{
	struct cf_ks_audit_field f[] = {
		{ "tenant", name, 0 },
		{ "snapshots_removed", NULL, (long long)removed },
		{ "snapshots_rewritten", NULL, (long long)rewritten },
		{ "class_files_dropped", NULL, (long long)class_files },
		{ "packs_deleted", NULL, (long long)st->packs_deleted },
		{ "packs_repacked", NULL, (long long)st->packs_repacked },
		{ "bytes_deleted", NULL, (long long)st->bytes_deleted },
	};

	(void)!cf_ks_audit_append(home, "retention.apply", f, 7);
}

/*
 * Records in tenant.json "last_write" the newest backup of a free tenant
 * that found changes, for its idle schedule (docs/retention.md, Last use).
 */
static void
refresh_activity(struct tl_ctx *ctx, struct cf_ks_tenant *t)
{
	struct cf_bk_repo *r = NULL;
	char url[PATH_MAX + 16], when[32];
	const char *s = cf_ks_tenant_get(t, "last_write");
	int64_t after = 0, lw = 0;
	time_t prev;
	int rc;

	if (s != NULL && cf_ks_time_parse(s, &prev) == 0)
		after = (int64_t)prev;
	if (open_repo(ctx, t, &r, url, sizeof(url)) != CF_EXIT_OK)
		return;
	rc = last_write(r, after, &lw);
	cf_bk_repo_free(r);
	if (rc < 0) {
		fprintf(stderr, "coffer: %s: cannot tell the last write "
		    "activity from its snapshots: %s\n", cf_ks_tenant_name(t),
		    strerror(-rc));
		return;
	}
	if (lw <= after)
		return;
	cf_ks_time_format((time_t)lw, when, sizeof(when));
	if (cf_ks_tenant_set(t, "last_write", when) < 0)
		fprintf(stderr, "coffer: %s: cannot record last_write\n",
		    cf_ks_tenant_name(t));
}

struct tick {
	struct cf_bk_lock *lock;
	time_t refreshed;
};

static int
tick_lock(void *arg)
{
	struct tick *k = arg;

	return lock_keep(k->lock, &k->refreshed);
}

/*
 * The live store's part of plan and apply (docs/retention.md, "Live
 * store"): counts, and with apply deletes, the files of classes past
 * their keep, prints a line per class, audits retention.expire per class
 * that lost files, and adds "live" to the tenant's JSON object jt.
 * Returns an exit code.
 */
static int
live_store(struct tl_ctx *ctx, struct cf_ks_tenant *t,
    const struct cf_bk_class *cl, size_t ncl, time_t now, int apply,
    int held, int list, json_t *jt, struct cf_bk_lock *lock)
{
#ifdef CF_HAVE_FS
	const char *name = cf_ks_tenant_name(t);
	struct tick tk = { lock, 0 };
	struct tl_expire x;
	char where[4200];
	json_t *ja = NULL;
	size_t c;
	int rc, any = 0;

	for (c = 0; c < ncl; c++)
		any |= cl[c].keep > 0;
	if (!any)
		return CF_EXIT_OK;
	if (held) {
		if (!ctx->json)
			printf("tenant %s: legal hold: nothing deleted from the "
			    "live store\n", name);
		if (jt != NULL)
			json_object_set_new(jt, "live", json_pack("{s:b}",
			    "hold", 1));
		return CF_EXIT_OK;
	}
	memset(&x, 0, sizeof(x));
	x.cl = cl;
	x.ncl = ncl;
	x.now = now;
	x.apply = apply;
	x.list = list && !ctx->json;
	tk.refreshed = time(NULL);
	x.tick = lock != NULL ? tick_lock : NULL;
	x.tick_arg = &tk;
	rc = tl_expire_live(ctx->home, t, &x);
	if (rc == 1)
		return CF_EXIT_OK;	/* no store */
	if (rc < 0)
		return CF_EXIT_FAIL;
	if (x.mounted)
		snprintf(where, sizeof(where), "mounted on %s", x.mp);
	else
		snprintf(where, sizeof(where), "not mounted");
	if (jt != NULL)
		ja = json_array();
	for (c = 0; c < ncl; c++) {
		if (cl[c].keep == 0)
			continue;
		if (!ctx->json)
			printf("tenant %s: live store (%s): class %s: %llu "
			    "files, %llu bytes %s\n", name, where, cl[c].name,
			    (unsigned long long)x.files[c],
			    (unsigned long long)x.bytes[c], apply ? "deleted" :
			    "past keep (to delete)");
		if (ja != NULL)
			json_array_append_new(ja, json_pack("{s:s, s:I, s:I}",
			    "class", cl[c].name, "files",
			    (json_int_t)x.files[c], "bytes",
			    (json_int_t)x.bytes[c]));
		if (apply && x.files[c] > 0) {
			struct cf_ks_audit_field f[] = {
				{ "tenant", name, 0 },
				{ "class", cl[c].name, 0 },
				{ "files", NULL, (long long)x.files[c] },
				{ "bytes", NULL, (long long)x.bytes[c] },
				{ "store", x.mounted ? "mounted" : "offline",
				    0 },
			};

			(void)!cf_ks_audit_append(ctx->home,
			    "retention.expire", f, 5);
		}
	}
	if (jt != NULL)
		json_object_set_new(jt, "live", json_pack("{s:s, s:b, s:o, "
		    "s:I, s:I}", "store", x.mounted ? "mounted" : "offline",
		    "deleted", apply, "classes", ja, "changed",
		    (json_int_t)x.changed, "failed", (json_int_t)x.failed));
	if (x.changed > 0 && !ctx->json)
		printf("tenant %s: live store: %llu files changed while "
		    "looked at: kept\n", name,
		    (unsigned long long)x.changed);
	if (x.foreign > 0)
		fprintf(stderr, "coffer: tenant %s: %llu entries of another "
		    "file system mounted inside the store left alone\n",
		    name, (unsigned long long)x.foreign);
	if (x.unreadable > 0)
		fprintf(stderr, "coffer: tenant %s: %llu entries of the live "
		    "store whose names cannot be read were left alone (run "
		    "coffer verify)\n", name,
		    (unsigned long long)x.unreadable);
	if (x.failed > 0) {
		fprintf(stderr, "coffer: tenant %s: %llu entries of the live "
		    "store could not be read or deleted; run apply again\n",
		    name, (unsigned long long)x.failed);
		return CF_EXIT_FAIL;
	}
	return CF_EXIT_OK;
#else
	(void)ctx; (void)t; (void)cl; (void)ncl; (void)now; (void)apply;
	(void)held; (void)list; (void)jt; (void)lock;
	return CF_EXIT_OK;
#endif
}

static int
one_tenant(struct tl_ctx *ctx, const char *name, int apply, int dry_run,
    int list, time_t now, json_t *tenants)
{
	struct cf_bk_lifecycle_eval e;
	struct cf_ks_tenant *t = NULL;
	struct cf_bk_repo *r = NULL;
	struct cf_bk_lock *lock = NULL;
	struct cf_bk_prune_opts po;
	struct cf_bk_prune_stats st;
	struct policy pol;
	struct snap *v = NULL;
	char url[PATH_MAX + 16];
	size_t n = 0, i, removed = 0;
	uint64_t snaps_locked = 0, rewritten = 0, cfiles = 0, cbytes = 0;
	int64_t snaps_until = 0;
	struct cf_bk_class cl[CF_BK_CLASSES_MAX];
	size_t ncl = 0;
	const char *st_name;
	json_t *jt = NULL;
	int rc, ret = CF_EXIT_FAIL, held;

	rc = cf_ks_tenant_open(ctx->home, name, &t);
	if (rc < 0)
		return tl_fail(rc, NULL);
	if (cf_ks_tenant_shredded(t)) {
		ret = CF_EXIT_OK;
		goto out;
	}
	held = tl_tenant_held(t);
	st_name = cf_ks_tenant_get(t, "state");
	if (apply && !dry_run && st_name != NULL && strcmp(st_name, "free") ==
	    0)
		refresh_activity(ctx, t);
	st_name = cf_ks_tenant_get(t, "state");	/* t was saved */
	rc = tl_lifecycle_eval(ctx->home, t, now, &e);
	if (rc < 0)
		goto out;
	if (apply && e.purge_due) {
		if (held) {
			printf("tenant %s: purge due but on legal hold: "
			    "skipped\n", name);
		} else if (dry_run) {
			printf("tenant %s: purge due (%s): would purge\n",
			    name, e.effective);
			ret = CF_EXIT_OK;
			goto out;
		} else {
			char reason[96];

			snprintf(reason, sizeof(reason), "schedule: %s",
			    cf_ks_tenant_get(t, "state") ?
			    cf_ks_tenant_get(t, "state") : "?");
			cf_ks_tenant_free(t);
			return tl_lifecycle_purge(ctx, name, reason, 1);
		}
	}
	if (st_name != NULL && strcmp(st_name, "retained") == 0) {
		/* Kept whole until its date: no snapshot removed. */
		if (!ctx->json)
			printf("tenant %s: retained class %s of %s, kept until "
			    "%s\n", name, cf_ks_tenant_get(t, "class"),
			    cf_ks_tenant_get(t, "retained_of"),
			    cf_ks_tenant_get(t, "retain_until"));
		ret = CF_EXIT_OK;
		goto out;
	}
	rc = load_policy(ctx->home, t, &pol);
	if (rc == 0)
		rc = tl_classes_load(ctx->home, t, cl, &ncl);
	if (rc < 0)
		goto out;
	ret = open_repo(ctx, t, &r, url, sizeof(url));
	if (ret == -1) {
		/* No backups yet: only the live store, if any. */
		if (!ctx->json)
			printf("tenant %s: no repository\n", name);
		if (tenants != NULL) {
			jt = json_pack("{s:s}", "tenant", name);
			json_array_append_new(tenants, jt);
		}
		ret = live_store(ctx, t, cl, ncl, now, apply && !dry_run, held,
		    list, jt, NULL);
		goto out;
	}
	if (ret != CF_EXIT_OK)
		goto out;
	ret = CF_EXIT_FAIL;
	if (apply && !dry_run && !held) {
		rc = cf_bk_repo_lock(r, 1, NULL, &lock);
		if (rc == -EBUSY) {
			fprintf(stderr, "coffer: repository %s is locked (a "
			    "backup is running); try again later\n", url);
			goto out;
		}
		if (rc < 0)
			goto out;
	}
	/* Decided under the lock: no backup adds a snapshot meanwhile. */
	rc = decide(r, &pol, now, &v, &n);
	if (rc < 0)
		goto out;
	for (i = 0; i < n; i++)
		classes_due(cl, ncl, v[i].time, now, &v[i]);
	jt = print_plan(ctx, name, &pol, held, v, n, tenants);
	if (!apply || held) {
		if (apply && held && !ctx->json)
			printf("tenant %s: legal hold: nothing removed\n",
			    name);
		ret = live_store(ctx, t, cl, ncl, now, 0, held, list, jt,
		    NULL);
		goto out;
	}
	if (dry_run) {
		ret = live_store(ctx, t, cl, ncl, now, 0, held, list, jt,
		    NULL);
		if (!ctx->json)
			printf("dry run: nothing removed\n");
		goto out;
	}
	for (i = 0; i < n; i++) {
		if (v[i].keep != 0 || v[i].future)
			continue;
		rc = cf_bk_repo_snapshot_delete(r, v[i].id);
		if (rc == -EROFS) {
			/* S3 Object Lock: not yet; a later apply removes it. */
			char hex[65];
			int64_t until = 0;

			cf_bk_id_hex(v[i].id, hex);
			if (cf_bk_store_lock_until(cf_bk_repo_store(r),
			    CF_BK_KIND_SNAPSHOT, hex, &until) == 0 &&
			    until > snaps_until)
				snaps_until = until;
			snaps_locked++;
			continue;
		}
		if (rc < 0 && rc != -ENOENT)
			goto out;
		removed++;
	}
	/* Files of a class past its period leave the older snapshots. */
	rc = rewrite_classes(r, lock, cl, ncl, now, v, n, &rewritten,
	    &cfiles, &cbytes);
	if (rc < 0) {
		fprintf(stderr, "coffer: removing expired data classes from "
		    "the snapshots of %s stopped: %s (run apply again)\n",
		    name, strerror(-rc));
		goto out;
	}

	memset(&po, 0, sizeof(po));
	po.repack_pct = pol.repack_pct;
	rc = cf_bk_prune(r, lock, &po, &st);
	if (rc < 0) {
		fprintf(stderr, "coffer: prune of %s stopped: %s (nothing a "
		    "kept snapshot needs was deleted; run apply again)\n",
		    url, strerror(-rc));
		goto out;
	}
	audit_apply(ctx->home, name, removed, rewritten, cfiles, &st);
	if (!ctx->json && rewritten > 0)
		printf("tenant %s: rewrote %llu snapshots without expired data "
		    "classes (%llu files, %llu bytes)\n", name,
		    (unsigned long long)rewritten, (unsigned long long)cfiles,
		    (unsigned long long)cbytes);
	if (!ctx->json)
		printf("tenant %s: removed %zu snapshots; prune: %llu packs "
		    "deleted, %llu repacked, %llu orphans, %llu bytes freed\n",
		    name, removed, (unsigned long long)st.packs_deleted,
		    (unsigned long long)st.packs_repacked,
		    (unsigned long long)st.packs_orphan,
		    (unsigned long long)st.bytes_deleted);
	if (!ctx->json && st.stale_removed > 0)
		printf("tenant %s: prune: %llu interrupted uploads older than "
		    "a day removed\n", name,
		    (unsigned long long)st.stale_removed);
	if (jt != NULL)
		json_object_set_new(jt, "stale_uploads_removed",
		    json_integer((json_int_t)st.stale_removed));
	/*
	 * A server without ListMultipartUploads (s3rver) says so at every
	 * prune: only -v repeats it; a bucket lifecycle rule must do it.
	 */
	if (st.stale_rc == -EOPNOTSUPP) {
		if (ctx->verbose > 0)
			fprintf(stderr, "coffer: %s: this server cannot list "
			    "interrupted uploads (NotImplemented); a bucket "
			    "lifecycle rule must remove them\n", url);
	} else if (st.stale_rc < 0) {
		fprintf(stderr, "coffer: %s: removing interrupted uploads "
		    "failed: %s (left for the next prune)\n", url,
		    strerror(-st.stale_rc));
	}
	if (!ctx->json && st.objects_locked + snaps_locked > 0)
		tl_report_locked(name, st.objects_locked + snaps_locked,
		    st.locked_until > snaps_until ? st.locked_until :
		    snaps_until);
	/* Still under the lock: no backup reads the store meanwhile. */
	ret = live_store(ctx, t, cl, ncl, now, 1, held, list, jt, lock);
out:
	if (ret == CF_EXIT_FAIL && rc < 0)
		fprintf(stderr, "coffer: retention %s: %s\n", name,
		    strerror(-rc));
	if (lock != NULL && cf_bk_lock_release(lock) < 0)
		fprintf(stderr, "coffer: releasing the lock of %s failed (it "
		    "goes stale in 30 minutes)\n", url);
	if (v != NULL)
		snaps_free(v, n);
	cf_bk_repo_free(r);
	cf_ks_tenant_free(t);
	return ret;
}

int
cmd_retention(struct tl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "now", required_argument, NULL, 'n' },
		{ "dry-run", no_argument, NULL, 'd' },
		{ "json", no_argument, NULL, 'j' },
		{ "files", no_argument, NULL, 'f' },
		{ NULL, 0, NULL, 0 },
	};
	const char *now_opt = NULL, *sub;
	char **names = NULL;
	size_t count = 0, i;
	json_t *tenants = NULL;
	time_t now;
	int c, dry = 0, list = 0, apply, ret = CF_EXIT_OK, r1, nargs;

	if (argc < 2)
		return tl_usage(&tl_cmd_retention, "retention: plan or apply");
	sub = argv[1];
	while ((c = getopt_long(argc - 1, argv + 1, "", opts, NULL)) != -1) {
		if (c == 'n')
			now_opt = optarg;
		else if (c == 'd')
			dry = 1;
		else if (c == 'j')
			ctx->json = 1;
		else if (c == 'f')
			list = 1;
		else
			return tl_usage(&tl_cmd_retention, "retention: bad "
			    "option");
	}
	nargs = argc - 1 - optind;
	argv += 1 + optind;
	if (strcmp(sub, "plan") == 0)
		apply = 0;
	else if (strcmp(sub, "apply") == 0)
		apply = 1;
	else
		return tl_usage(&tl_cmd_retention, "retention: plan or apply");
	if (nargs > 1 || (dry && !apply))
		return tl_usage(&tl_cmd_retention, "retention: bad arguments");
	if (now_opt == NULL)
		now = cf_ks_now();
	else if (cf_ks_time_parse(now_opt, &now) < 0)
		return tl_usage(&tl_cmd_retention, "retention: bad --now date "
		    "'%s'", now_opt);
	tl_home(ctx, 0);
	if (ctx->json)
		tenants = json_array();
	if (nargs == 1) {
		ret = one_tenant(ctx, argv[0], apply, dry, list, now, tenants);
	} else {
		r1 = cf_ks_tenant_list(ctx->home, &names, &count);
		if (r1 < 0)
			return tl_fail(r1, NULL);
		for (i = 0; i < count; i++) {
			r1 = one_tenant(ctx, names[i], apply, dry, list, now,
			    tenants);
			if (r1 != CF_EXIT_OK && ret == CF_EXIT_OK)
				ret = r1;
		}
		cf_ks_tenant_list_free(names, count);
	}
	if (tenants != NULL)
		tl_print_json(json_pack("{s:o}", "tenants", tenants));
	return ret;
}
