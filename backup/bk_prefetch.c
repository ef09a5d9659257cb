/*
 * bk_prefetch.c - fetching a repository's objects while the tenant's key
 * is being unlocked (docs/s3.md, Overlapping the unlock).
 *
 * Unlocking a tenant's root key in the file KMS runs Argon2id (0.6-0.7 s
 * of CPU) before any key exists; opening the repository then read its
 * config, index and snapshot objects one request after another, and a
 * restore its packs after that.  None of these reads needs a key, only
 * the opening of what is read.  One thread started here opens the store
 * (never creating a bucket or directory: a wrong passphrase must not
 * leave anything behind), reads the config (its header names the key
 * version to unlock), lists the index and snapshot objects and fetches
 * them PF_GETS at a time, and for a restore of a small remote
 * repository every pack on conns connections.  What arrives is held by
 * the store (bk_store_hold) and handed out once to the reads of the open
 * that follows; nothing is interpreted here beyond the config's version
 * field, and every object is still checked and opened under the keys
 * when it is used.
 *
 * What it deliberately does not do: report errors (a failed fetch is
 * simply not held; the open reads it again and reports as it always
 * did), take locks, write anything, or fetch more than its budgets.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bk_int.h"

#define PF_GETS 8			/* index and snapshot GETs at once */
#define PF_META_MAX (256ULL << 20)	/* index and snapshot bytes held */
#define PF_PACK_MAX (64ULL << 20)	/* larger packs are read by range */

struct cf_bk_prefetch {
	char *url;
	int flags;
	unsigned conns;
	uint64_t pack_budget;
	pthread_t tid;
	int joined;
	/*
	 * The thread's store: written by the thread, read by others only
	 * after joining it.
	 */
	struct cf_bk_store *store;
	pthread_mutex_t mu;
	pthread_cond_t cv;	/* cfg_done set */
	/* protected by mu */
	int cfg_done, cfg_rc, stop;
	uint32_t version;
};

struct pf_item {
	enum cf_bk_kind kind;
	char name[65];
	uint64_t size;
};

/* A batch of GETs shared by several threads. */
struct pf_job {
	struct cf_bk_prefetch *pf;
	struct cf_bk_store *st;
	struct pf_item *items;
	size_t n;
	size_t next;		/* protected by pf->mu */
};

static int
pf_stopped(struct cf_bk_prefetch *pf)
{
	int stop;

	pthread_mutex_lock(&pf->mu);
	stop = pf->stop;
	pthread_mutex_unlock(&pf->mu);
	return stop;
}

static void *
pf_getter(void *arg)
{
	struct pf_job *j = arg;
	struct pf_item *it;
	unsigned char *buf;
	size_t len, i;

	for (;;) {
		pthread_mutex_lock(&j->pf->mu);
		i = j->pf->stop || j->next >= j->n ? j->n : j->next++;
		pthread_mutex_unlock(&j->pf->mu);
		if (i == j->n)
			return NULL;
		it = &j->items[i];
		if (cf_bk_store_get(j->st, it->kind, it->name, CF_BK_OBJECT_MAX,
		    &buf, &len) == 0)
			(void)!bk_store_hold(j->st, it->kind, it->name, buf,
			    len);
	}
}

/* Runs the job's GETs on up to nt threads (this one if none starts). */
static void
pf_run(struct pf_job *j, unsigned nt)
{
	pthread_t t[16];
	unsigned i, started = 0;

	if (nt > 16)
		nt = 16;
	for (i = 0; i < nt && i < j->n; i++) {
		if (pthread_create(&t[started], NULL, pf_getter, j) != 0)
			break;
		started++;
	}
	if (started == 0)
		(void)pf_getter(j);
	for (i = 0; i < started; i++)
		pthread_join(t[i], NULL);
}

struct pf_list {
	enum cf_bk_kind kind;
	struct pf_item *items;
	size_t n, cap;
};

static int
pf_collect(void *arg, const char *name, uint64_t size)
{
	struct pf_list *l = arg;
	struct pf_item *v;
	size_t nc;

	if (l->n == l->cap) {
		nc = l->cap ? l->cap * 2 : 64;
		v = realloc(l->items, nc * sizeof(*v));
		if (v == NULL)
			return -ENOMEM;
		l->items = v;
		l->cap = nc;
	}
	l->items[l->n].kind = l->kind;
	snprintf(l->items[l->n].name, sizeof(l->items[0].name), "%s", name);
	l->items[l->n].size = size;
	l->n++;
	return 0;
}

/*
 * Lists kind into l and, if hold, has the store hold a copy of the
 * listing for the open's own list.  0 or the listing's error.
 */
static int
pf_list(struct cf_bk_store *st, enum cf_bk_kind kind, struct pf_list *l,
    int hold)
{
	char (*names)[65];
	uint64_t *sizes;
	size_t i;
	int rc;

	memset(l, 0, sizeof(*l));
	l->kind = kind;
	rc = cf_bk_store_list(st, kind, pf_collect, l);
	if (rc < 0 || !hold)
		return rc;
	names = malloc((l->n + 1) * sizeof(*names));
	sizes = malloc((l->n + 1) * sizeof(*sizes));
	if (names == NULL || sizes == NULL) {
		free(names);
		free(sizes);
		return 0;	/* not held: the open lists again */
	}
	for (i = 0; i < l->n; i++) {
		memcpy(names[i], l->items[i].name, sizeof(names[0]));
		sizes[i] = l->items[i].size;
	}
	return bk_store_hold_list(st, kind, names, sizes, l->n);
}

/* 1 if the store is remote: each read a request (see bk_repo.c). */
static int
pf_remote(struct cf_bk_store *st)
{
	const struct cf_bk_store_ops *ops = cf_bk_store_ops(st);

	return ops != NULL && ops->name != NULL && strcmp(ops->name, "s3") == 0;
}

/* Index and snapshot objects, index first, within PF_META_MAX. */
static void
pf_meta(struct cf_bk_prefetch *pf, struct cf_bk_store *st)
{
	struct pf_list idx, snap;
	struct pf_job j;
	uint64_t total = 0;
	size_t i, k;

	memset(&j, 0, sizeof(j));
	memset(&snap, 0, sizeof(snap));
	if (pf_list(st, CF_BK_KIND_INDEX, &idx, 1) < 0 || pf_stopped(pf) ||
	    pf_list(st, CF_BK_KIND_SNAPSHOT, &snap, 1) < 0 || pf_stopped(pf))
		goto out;
	j.items = calloc(idx.n + snap.n + 1, sizeof(*j.items));
	if (j.items == NULL)
		goto out;
	for (k = 0; k < 2; k++) {
		struct pf_list *l = k == 0 ? &idx : &snap;

		for (i = 0; i < l->n && total + l->items[i].size <=
		    PF_META_MAX; i++) {
			total += l->items[i].size;
			j.items[j.n++] = l->items[i];
		}
	}
	j.pf = pf;
	j.st = st;
	pf_run(&j, pf_remote(st) ? PF_GETS : 1);
out:
	free(j.items);
	free(idx.items);
	free(snap.items);
}

/*
 * Every pack of a remote repository, when they total at most the
 * budget: a restore of such a repository reads most of them, and the
 * pack cache would fetch them only after the unlock.
 */
static void
pf_packs(struct cf_bk_prefetch *pf, struct cf_bk_store *st)
{
	struct pf_list l;
	struct pf_job j;
	uint64_t total = 0;
	size_t i;

	if (!(pf->flags & CF_BK_PREFETCH_PACKS) || !pf_remote(st) ||
	    pf->pack_budget == 0)
		return;
	if (pf_list(st, CF_BK_KIND_PACK, &l, 0) < 0)
		goto out;
	for (i = 0; i < l.n; i++) {
		if (l.items[i].size > PF_PACK_MAX)
			goto out;
		total += l.items[i].size;
	}
	if (total > pf->pack_budget)
		goto out;
	memset(&j, 0, sizeof(j));
	j.pf = pf;
	j.st = st;
	j.items = l.items;
	j.n = l.n;
	pf_run(&j, pf->conns);
out:
	free(l.items);
}

static void *
pf_main(void *arg)
{
	struct cf_bk_prefetch *pf = arg;
	struct cf_bk_store *st = NULL;
	unsigned char *obj = NULL;
	uint32_t v = 0;
	size_t len = 0;
	int rc;

	rc = cf_bk_store_open_url(&st, pf->url, 0);
	if (rc == 0) {
		rc = cf_bk_store_get(st, CF_BK_KIND_CONFIG, "config",
		    CF_BK_OBJECT_MAX, &obj, &len);
		if (rc == -EFBIG)
			rc = -EPROTO;
	}
	if (rc == 0) {
		rc = bk_config_key_version(obj, len, &v);
		/* The open reads it (and fails on it) as before. */
		if (bk_store_hold(st, CF_BK_KIND_CONFIG, "config", obj,
		    len) < 0 && rc == 0)
			rc = -ENOMEM;
		obj = NULL;
	}
	pthread_mutex_lock(&pf->mu);
	pf->cfg_done = 1;
	pf->cfg_rc = rc;
	pf->version = rc == 0 ? v : 0;
	pthread_cond_broadcast(&pf->cv);
	pthread_mutex_unlock(&pf->mu);
	/* No repository (or no store): nothing more to fetch. */
	if (rc == 0 && !pf_stopped(pf))
		pf_meta(pf, st);
	if (rc == 0 && !pf_stopped(pf))
		pf_packs(pf, st);
	pf->store = st;
	return NULL;
}

int
cf_bk_prefetch_start(struct cf_bk_prefetch **out, const char *url, int flags,
    unsigned conns, uint64_t pack_budget)
{
	struct cf_bk_prefetch *pf;

	*out = NULL;
	if (url == NULL || conns == 0 || conns > 16)
		return -EINVAL;
	pf = calloc(1, sizeof(*pf));
	if (pf == NULL)
		return -ENOMEM;
	pf->url = strdup(url);
	if (pf->url == NULL) {
		free(pf);
		return -ENOMEM;
	}
	pf->flags = flags;
	pf->conns = conns;
	pf->pack_budget = pack_budget;
	pthread_mutex_init(&pf->mu, NULL);
	pthread_cond_init(&pf->cv, NULL);
	if (pthread_create(&pf->tid, NULL, pf_main, pf) != 0) {
		pf->joined = 1;
		cf_bk_prefetch_free(pf);
		return -EAGAIN;
	}
	*out = pf;
	return 0;
}

int
cf_bk_prefetch_key_version(struct cf_bk_prefetch *pf, uint32_t *version)
{
	int rc;

	*version = 0;
	pthread_mutex_lock(&pf->mu);
	while (!pf->cfg_done)
		pthread_cond_wait(&pf->cv, &pf->mu);
	rc = pf->cfg_rc;
	if (rc == 0)
		*version = pf->version;
	pthread_mutex_unlock(&pf->mu);
	return rc;
}

static void
pf_join(struct cf_bk_prefetch *pf)
{
	if (!pf->joined) {
		pthread_join(pf->tid, NULL);
		pf->joined = 1;
	}
}

struct cf_bk_store *
bk_prefetch_take_store(struct cf_bk_prefetch *pf, int flags)
{
	struct cf_bk_store *st;

	pf_join(pf);
	st = pf->store;
	pf->store = NULL;
	/*
	 * A repository about to be created needs a store opened to create
	 * (a local one's subdirectories, an S3 bucket): not this one.
	 */
	if ((flags & CF_BK_REPO_CREATE) && pf->cfg_rc != 0) {
		cf_bk_store_free(st);
		st = NULL;
	}
	return st;
}

const char *
bk_prefetch_url(const struct cf_bk_prefetch *pf)
{
	return pf->url;
}

void
cf_bk_prefetch_free(struct cf_bk_prefetch *pf)
{
	if (pf == NULL)
		return;
	pthread_mutex_lock(&pf->mu);
	pf->stop = 1;
	pthread_mutex_unlock(&pf->mu);
	pf_join(pf);
	cf_bk_store_free(pf->store);
	pthread_cond_destroy(&pf->cv);
	pthread_mutex_destroy(&pf->mu);
	free(pf->url);
	free(pf);
}
