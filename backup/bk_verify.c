/*
 * bk_verify.c - repository verification (cf_backup.h, verify): checks
 * that every snapshot can be restored, and names what cannot.
 *
 * Order: indexes (each object on its own, so a bad one is named), then
 * packs (listing, size, header and trailer length by range reads), then
 * with read_data the chosen packs whole (storage id, every blob opened
 * with the index's descriptors, then the trailer), and last every
 * snapshot and the trees under it, where a file whose blob is missing,
 * in a missing or truncated pack, or failed to open is named with its
 * path.  A subtree found clean once is not walked again.
 *
 * It never repairs, deletes or writes anything, and holds no lock: a
 * backup running meanwhile may leave packs that look orphaned.
 *
 * Read-data coverage (cf_bk_verify_coverage): a small record per pack of
 * when verify first saw it and last read it whole, kept by the caller in
 * a file (docs/format/verify-coverage.md), picks the packs due so that a
 * daily run reads every pack within a period without reading them all
 * every day.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "bk_int.h"

#define DAMAGE_KEEP 10000U
#define PROBLEMS_KEEP 10000U
#define DEPTH_MAX 512U

/* ---- a hash set of (tag, id) keys with a value -------------------------- */

struct ent {
	unsigned char key[1 + CF_BK_ID_BYTES];
	uint8_t used;
	uint64_t val;
};

struct idset {
	struct ent *v;
	size_t cap, n;		/* cap a power of two or 0 */
};

static size_t
set_slot(const struct idset *s, const unsigned char *key)
{
	size_t i = (size_t)bk_rd64(key + 1) & (s->cap - 1);

	while (s->v[i].used && memcmp(s->v[i].key, key, sizeof(s->v[i].key)))
		i = (i + 1) & (s->cap - 1);
	return i;
}

static struct ent *
set_find(const struct idset *s, unsigned tag, const unsigned char *id)
{
	unsigned char key[1 + CF_BK_ID_BYTES];
	size_t i;

	if (s->cap == 0)
		return NULL;
	key[0] = (unsigned char)tag;
	memcpy(key + 1, id, CF_BK_ID_BYTES);
	i = set_slot(s, key);
	return s->v[i].used ? &s->v[i] : NULL;
}

/* 1 if added, 0 if present, -ENOMEM. */
static int
set_add(struct idset *s, unsigned tag, const unsigned char *id, uint64_t val)
{
	unsigned char key[1 + CF_BK_ID_BYTES];
	size_t i;

	if ((s->n + 1) * 2 > s->cap) {
		struct idset ns;
		size_t j;

		ns.cap = s->cap ? s->cap * 2 : 256;
		ns.n = s->n;
		ns.v = calloc(ns.cap, sizeof(*ns.v));
		if (ns.v == NULL)
			return -ENOMEM;
		for (j = 0; j < s->cap; j++)
			if (s->v[j].used)
				ns.v[set_slot(&ns, s->v[j].key)] = s->v[j];
		free(s->v);
		*s = ns;
	}
	key[0] = (unsigned char)tag;
	memcpy(key + 1, id, CF_BK_ID_BYTES);
	i = set_slot(s, key);
	if (s->v[i].used)
		return 0;
	memcpy(s->v[i].key, key, sizeof(key));
	s->v[i].used = 1;
	s->v[i].val = val;
	s->n++;
	return 1;
}

/* ---- the run --------------------------------------------------------------- */

/* When verify first saw a pack, and last read it whole (0: never). */
struct cov_ent {
	unsigned char id[CF_BK_ID_BYTES];
	int64_t first_seen, last_read;
};


struct vrun {
	struct cf_bk_repo *r;
	struct cf_bk_verify_result *res;
	struct idset listed;	/* packs in the store: size */
	struct idset bad_packs;	/* missing or truncated: every blob lost */
	struct idset bad_blobs;	/* (type, id) failed to open */
	struct idset blobs;	/* data blobs seen */
	struct idset trees;	/* trees seen: val 1 clean, 2 damaged */
	struct cov_ent *cov_new;	/* coverage after the run, by id */
	size_t cov_n;
	char *path;
	size_t plen, pcap;
};

static int
problem(struct cf_bk_verify_result *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
problem(struct cf_bk_verify_result *res, const char *fmt, ...)
{
	char buf[512], **nv;
	va_list ap;

	if (res->nproblems >= PROBLEMS_KEEP)
		return 0;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	nv = realloc(res->problems, (res->nproblems + 1) * sizeof(*nv));
	if (nv == NULL)
		return -ENOMEM;
	res->problems = nv;
	nv[res->nproblems] = strdup(buf);
	if (nv[res->nproblems] == NULL)
		return -ENOMEM;
	res->nproblems++;
	return 0;
}

static int
damage(struct vrun *v, const char *snap, const char *why)
{
	struct cf_bk_verify_result *res = v->res;
	struct cf_bk_verify_damage *nd, *d;

	res->files_damaged++;
	if (res->ndamage >= DAMAGE_KEEP)
		return 0;
	nd = realloc(res->damage, (res->ndamage + 1) * sizeof(*nd));
	if (nd == NULL)
		return -ENOMEM;
	res->damage = nd;
	d = &nd[res->ndamage];
	memcpy(d->snapshot, snap, 65);
	d->path = strdup(v->plen ? v->path : "/");
	d->why = strdup(why);
	if (d->path == NULL || d->why == NULL) {
		free(d->path);
		free(d->why);
		return -ENOMEM;
	}
	res->ndamage++;
	return 0;
}

static const char *
short_id(const unsigned char id[CF_BK_ID_BYTES], char out[17])
{
	char hex[65];

	cf_bk_id_hex(id, hex);
	memcpy(out, hex, 16);
	out[16] = '\0';
	return out;
}

/* ---- indexes -------------------------------------------------------------- */

struct names {
	char (*v)[65];
	size_t n, cap;
	uint64_t *size;
};

static int
collect(void *arg, const char *name, uint64_t size)
{
	struct names *ns = arg;

	if (ns->n == ns->cap) {
		size_t nc = ns->cap ? ns->cap * 2 : 64;
		char (*nv)[65] = realloc(ns->v, nc * sizeof(*nv));
		uint64_t *nsz;

		if (nv == NULL)
			return -ENOMEM;
		ns->v = nv;
		nsz = realloc(ns->size, nc * sizeof(*nsz));
		if (nsz == NULL)
			return -ENOMEM;
		ns->size = nsz;
		ns->cap = nc;
	}
	memcpy(ns->v[ns->n], name, 65);
	ns->size[ns->n++] = size;
	return 0;
}

static void
names_free(struct names *ns)
{
	free(ns->v);
	free(ns->size);
	memset(ns, 0, sizeof(*ns));
}

/* Gets, checks the storage id of and opens one object. */
static int
get_object(struct vrun *v, enum cf_bk_kind kind, const char *name,
    unsigned char **plain, size_t *plen)
{
	unsigned char *obj = NULL, id[CF_BK_ID_BYTES], want[CF_BK_ID_BYTES];
	size_t olen;
	int rc;

	*plain = NULL;
	*plen = 0;
	rc = cf_bk_id_parse(name, want);
	if (rc < 0)
		return rc;
	rc = cf_bk_store_get(cf_bk_repo_store(v->r), kind, name,
	    CF_BK_OBJECT_MAX, &obj, &olen);
	if (rc == -EFBIG)
		rc = -EPROTO;
	if (rc < 0)
		return rc;
	cf_bk_storage_id(obj, olen, id);
	if (sodium_memcmp(id, want, CF_BK_ID_BYTES) != 0)
		rc = -EBADMSG;
	else
		rc = cf_bk_object_open(cf_bk_repo_keys(v->r), kind, obj, olen,
		    plain, plen);
	free(obj);
	return rc;
}

static const char *
why_text(int rc)
{
	switch (rc) {
	case -ENOENT:
		return "missing";
	case -EBADMSG:
		return "fails authentication or its storage id";
	case -EPROTO:
		return "malformed";
	case -ENOKEY:
		return "sealed with another key version";
	default:
		return strerror(-rc);
	}
}

static int
check_indexes(struct vrun *v)
{
	struct cf_bk_index *scratch = NULL;
	struct names ns = { NULL, 0, 0, NULL };
	unsigned char *plain;
	size_t plen, i;
	int rc;

	rc = cf_bk_store_list(cf_bk_repo_store(v->r), CF_BK_KIND_INDEX,
	    collect, &ns);
	if (rc < 0)
		goto out;
	for (i = 0; i < ns.n; i++) {
		v->res->indexes++;
		rc = get_object(v, CF_BK_KIND_INDEX, ns.v[i], &plain, &plen);
		if (rc == 0) {
			rc = cf_bk_index_new(&scratch);
			if (rc == 0)
				rc = cf_bk_index_decode(scratch, plain, plen);
			cf_bk_index_free(scratch);
			scratch = NULL;
			free(plain);
		}
		if (rc == -ENOMEM)
			goto out;
		if (rc < 0) {
			v->res->indexes_bad++;
			rc = problem(v->res, "index %s: %s", ns.v[i],
			    why_text(rc));
			if (rc < 0)
				goto out;
		}
	}
	rc = cf_bk_repo_index_load(v->r, NULL);
out:
	names_free(&ns);
	return rc;
}

/* ---- packs ------------------------------------------------------------------ */

static int
check_packs(struct vrun *v)
{
	const struct cf_bk_index *idx = cf_bk_repo_index(v->r);
	struct cf_bk_store *st = cf_bk_repo_store(v->r);
	struct names ns = { NULL, 0, 0, NULL };
	const struct cf_bk_desc *descs;
	const unsigned char *hdr;
	const uint32_t *offs;
	unsigned char id[CF_BK_ID_BYTES], buf[CF_BK_HEADER_BYTES];
	struct ent *e;
	char name[65];
	size_t i, n, nl;
	uint64_t size;
	int rc;

	rc = cf_bk_store_list(st, CF_BK_KIND_PACK, collect, &ns);
	if (rc < 0)
		goto out;
	for (i = 0; i < ns.n; i++) {
		if (cf_bk_id_parse(ns.v[i], id) < 0)
			continue;
		rc = set_add(&v->listed, 0, id, ns.size[i]);
		if (rc < 0)
			goto out;
	}
	for (i = 0; i < cf_bk_index_packs(idx); i++) {
		const unsigned char *pid = cf_bk_index_pack_id(idx, i);

		v->res->packs++;
		bk_name(pid, name);
		bk_index_pack_info(idx, i, &hdr, &descs, &offs, &n, &size);
		e = set_find(&v->listed, 0, pid);
		if (e == NULL) {
			v->res->packs_missing++;
			rc = set_add(&v->bad_packs, 0, pid, 0);
			if (rc >= 0)
				rc = problem(v->res, "pack %s: missing", name);
			if (rc < 0)
				goto out;
			continue;
		}
		e->val |= (uint64_t)1 << 63;	/* indexed */
		if ((e->val & ~((uint64_t)1 << 63)) != size) {
			v->res->packs_bad++;
			rc = set_add(&v->bad_packs, 0, pid, 0);
			if (rc >= 0)
				rc = problem(v->res, "pack %s: %llu bytes, the "
				    "index says %llu", name, (unsigned long long)
				    (e->val & ~((uint64_t)1 << 63)),
				    (unsigned long long)size);
			if (rc < 0)
				goto out;
			continue;
		}
		/* Header and trailer length, without reading the blobs. */
		nl = bk_header_nl(hdr);
		rc = cf_bk_store_get_range(st, CF_BK_KIND_PACK, name, 0,
		    CF_BK_HEADER_BYTES, buf);
		if (rc == 0 && sodium_memcmp(buf, hdr, CF_BK_HEADER_BYTES) != 0)
			rc = -EBADMSG;
		if (rc == 0)
			rc = cf_bk_store_get_range(st, CF_BK_KIND_PACK, name,
			    size - 4, 4, buf);
		if (rc == 0 && bk_rd32(buf) != nl + 4 + 44 * n + 16)
			rc = -EPROTO;
		if (rc == -ENOMEM)
			goto out;
		v->res->bytes_read += CF_BK_HEADER_BYTES + 4;
		if (rc < 0) {
			/* The index still locates every blob: not lost. */
			v->res->packs_bad++;
			rc = problem(v->res, "pack %s: header or trailer "
			    "length disagrees with the index (%s)", name,
			    why_text(rc));
			if (rc < 0)
				goto out;
		}
	}
	for (i = 0; i < v->listed.cap; i++) {
		e = &v->listed.v[i];
		if (e->used && !(e->val >> 63))
			v->res->packs_orphan++;
	}
	rc = 0;
out:
	names_free(&ns);
	return rc;
}

static uint64_t
splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/*
 * Reading packs whole (read-data) runs on up to VERIFY_THREADS threads:
 * each takes the next pack of the list, downloads it and opens every
 * blob the index lists in it, and keeps what it found in the pack's
 * struct rp_out; the run's counters and reports are then filled from
 * these in the list's order, so the output does not depend on which
 * thread finished first.  Nothing shared is written while they run
 * (the store's gets, the index and the keys are safe to share).
 */
#define VERIFY_THREADS 4U

struct rp_bad {
	unsigned char type;
	unsigned char id[CF_BK_ID_BYTES];
	int rc;
};

struct rp_out {
	int rc;			/* -ENOMEM: the run stops */
	int get_rc;		/* < 0: the pack could not be read */
	int sid_bad;		/* content does not hash to its name */
	int trailer_rc;		/* < 0: the trailer does not parse */
	uint64_t len;
	struct rp_bad *bad;	/* blobs that failed to open */
	size_t nbad;
};

struct rp_pool {
	struct cf_bk_repo *r;
	const size_t *packs;	/* positions in the index */
	struct rp_out *out;	/* one per entry of packs */
	size_t n;
	size_t next;		/* the next entry to take, under mu */
	int stop;		/* under mu: a thread ran out of memory */
	pthread_mutex_t mu;
};

static int
rp_bad_add(struct rp_out *o, const struct cf_bk_desc *d, int rc)
{
	struct rp_bad *nb;

	nb = realloc(o->bad, (o->nbad + 1) * sizeof(*nb));
	if (nb == NULL)
		return -ENOMEM;
	o->bad = nb;
	nb[o->nbad].type = d->type;
	memcpy(nb[o->nbad].id, d->id, CF_BK_ID_BYTES);
	nb[o->nbad].rc = rc;
	o->nbad++;
	return 0;
}

/* Downloads pack i and opens every blob the index lists in it. */
static void
read_one(struct cf_bk_repo *r, size_t i, struct rp_out *o)
{
	const struct cf_bk_index *idx = cf_bk_repo_index(r);
	const struct cf_bk_keys *k = cf_bk_repo_keys(r);
	const unsigned char *pid = cf_bk_index_pack_id(idx, i);
	const struct cf_bk_desc *descs;
	const unsigned char *hdr;
	const uint32_t *offs;
	unsigned char *buf = NULL, *plain, sid[CF_BK_ID_BYTES];
	unsigned char phdr[CF_BK_HEADER_BYTES];
	struct cf_bk_desc *pd = NULL;
	struct cf_ks_aead *a = NULL;
	char name[65];
	size_t len, n, j, pn, plen;
	uint64_t size;
	int rc, krc;

	bk_name(pid, name);
	bk_index_pack_info(idx, i, &hdr, &descs, &offs, &n, &size);
	rc = cf_bk_store_get(cf_bk_repo_store(r), CF_BK_KIND_PACK, name,
	    CF_BK_PACK_MAX, &buf, &len);
	if (rc == -ENOMEM) {
		o->rc = rc;
		return;
	}
	if (rc < 0) {
		o->get_rc = rc;
		return;
	}
	o->len = len;
	cf_bk_storage_id(buf, len, sid);
	o->sid_bad = sodium_memcmp(sid, pid, CF_BK_ID_BYTES) != 0;
	/* One AEAD context for the pack's blobs (they share its header). */
	krc = bk_header_check(hdr, CF_BK_KIND_PACK, k);
	if (krc == 0)
		krc = bk_object_aead(k, hdr, &a);
	if (krc == -ENOMEM) {
		rc = krc;
		goto out;
	}
	for (j = 0; j < n; j++) {
		if ((uint64_t)offs[j] + descs[j].length > len)
			rc = -EPROTO;
		else if (krc < 0)
			rc = krc;
		else
			rc = bk_blob_open_aead(k, a, hdr, &descs[j],
			    buf + offs[j], descs[j].length, &plain, &plen);
		if (rc == 0) {
			free(plain);
			continue;
		}
		if (rc == -ENOMEM || (rc = rp_bad_add(o, &descs[j], rc)) < 0)
			goto out;
	}
	rc = cf_bk_pack_parse(k, buf, len, phdr, &pd, &pn);
	if (rc == -ENOMEM)
		goto out;
	o->trailer_rc = rc < 0 ? rc : 0;
	rc = 0;
out:
	o->rc = rc == -ENOMEM ? rc : 0;
	cf_ks_aead_free(a);
	free(pd);
	free(buf);
}

static void *
rp_thread(void *arg)
{
	struct rp_pool *p = arg;
	size_t k;

	for (;;) {
		pthread_mutex_lock(&p->mu);
		k = p->stop ? p->n : p->next;
		if (k < p->n)
			p->next++;
		pthread_mutex_unlock(&p->mu);
		if (k >= p->n)
			return NULL;
		read_one(p->r, p->packs[k], &p->out[k]);
		if (p->out[k].rc < 0) {
			pthread_mutex_lock(&p->mu);
			p->stop = 1;
			pthread_mutex_unlock(&p->mu);
		}
	}
}

/* Threads for read-data: the cores, or the S3 connections if more. */
static unsigned
rp_threads(struct cf_bk_repo *r, size_t n)
{
	long c = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned t = c > 0 ? (unsigned)c : 1, s;

	s = cf_bk_store_parallel_puts(cf_bk_repo_store(r));
	if (s > t)
		t = s;
	if (t > VERIFY_THREADS)
		t = VERIFY_THREADS;
	return n < t ? (unsigned)n : t;
}

/* Counts and reports what reading one pack found. *clean: read, no fault. */
static int
rp_apply(struct vrun *v, size_t i, const struct rp_out *o, int *clean)
{
	const unsigned char *pid = cf_bk_index_pack_id(cf_bk_repo_index(v->r),
	    i);
	char name[65], sh[17];
	int rc = 0, bad = 0;
	size_t j;

	*clean = 0;
	bk_name(pid, name);
	if (o->get_rc < 0)
		return problem(v->res, "pack %s: cannot be read (%s)", name,
		    why_text(o->get_rc));
	v->res->packs_read++;
	v->res->bytes_read += o->len;
	if (o->sid_bad) {
		bad = 1;
		rc = problem(v->res, "pack %s: content does not match its "
		    "storage id", name);
	}
	for (j = 0; j < o->nbad && rc >= 0; j++) {
		const struct rp_bad *b = &o->bad[j];

		bad = 1;
		if (b->type == CF_BK_BLOB_DATA)
			v->res->blobs_bad++;
		rc = set_add(&v->bad_blobs, b->type, b->id, 0);
		if (rc >= 0)
			rc = problem(v->res, "pack %s: %s blob %s %s", name,
			    b->type == CF_BK_BLOB_TREE ? "tree" : "data",
			    short_id(b->id, sh), why_text(b->rc));
	}
	if (o->trailer_rc < 0 && rc >= 0) {
		bad = 1;
		rc = problem(v->res, "pack %s: trailer %s", name,
		    why_text(o->trailer_rc));
	}
	if (bad)
		v->res->packs_bad++;
	*clean = !bad;
	return rc < 0 ? rc : 0;
}

/*
 * Reads packs[0..n) whole (positions in the index) and reports in that
 * order.  clean, if not NULL, receives per entry whether the pack was
 * read and found sound.
 */
static int
read_list(struct vrun *v, const size_t *packs, size_t n, unsigned char *clean)
{
	struct rp_pool p;
	pthread_t tid[VERIFY_THREADS];
	unsigned t, started = 0, u;
	size_t k;
	int rc = 0, ok;

	if (n == 0)
		return 0;
	memset(&p, 0, sizeof(p));
	p.r = v->r;
	p.packs = packs;
	p.n = n;
	p.out = calloc(n, sizeof(*p.out));
	if (p.out == NULL)
		return -ENOMEM;
	pthread_mutex_init(&p.mu, NULL);
	/* This thread reads too; too few threads only slow it down. */
	t = rp_threads(v->r, n);
	for (u = 1; u < t; u++) {
		if (pthread_create(&tid[started], NULL, rp_thread, &p) != 0)
			break;
		started++;
	}
	rp_thread(&p);
	for (u = 0; u < started; u++)
		pthread_join(tid[u], NULL);
	pthread_mutex_destroy(&p.mu);
	for (k = 0; k < n && rc == 0; k++) {
		rc = p.out[k].rc;
		if (rc == 0)
			rc = rp_apply(v, packs[k], &p.out[k], &ok);
		if (clean != NULL)
			clean[k] = rc == 0 && ok;
	}
	for (k = 0; k < n; k++)
		free(p.out[k].bad);
	free(p.out);
	return rc;
}

static int
read_packs(struct vrun *v, const struct cf_bk_verify_opts *o)
{
	const struct cf_bk_index *idx = cf_bk_repo_index(v->r);
	size_t np = cf_bk_index_packs(idx), want, i, j, *order = NULL;
	uint64_t seed = o->seed;
	int rc = 0;

	want = (size_t)(((uint64_t)np * o->subset_pct + 99) / 100);
	if (want == 0)
		return 0;
	order = malloc(np * sizeof(*order));
	if (order == NULL)
		return -ENOMEM;
	for (i = 0; i < np; i++)
		order[i] = i;
	/* A partial Fisher-Yates shuffle: the first want are the subset. */
	for (i = 0; i < want && want < np; i++) {
		size_t t;

		j = i + (size_t)(splitmix64(&seed) % (np - i));
		t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	/* Missing or truncated packs are reported already: left out. */
	for (i = j = 0; i < want; i++)
		if (set_find(&v->bad_packs, 0,
		    cf_bk_index_pack_id(idx, order[i])) == NULL)
			order[j++] = order[i];
	rc = read_list(v, order, j, NULL);
	free(order);
	return rc;
}

/* ---- read-data coverage -------------------------------------------------- */

struct cf_bk_coverage {
	struct cov_ent *v;	/* sorted by id, no duplicates */
	size_t n;
};

#define COV_MAGIC "coffer-verify-coverage 1\n"
#define COV_TIME_MAX ((int64_t)1 << 62)

static int
cov_cmp(const void *a, const void *b)
{
	return memcmp(((const struct cov_ent *)a)->id,
	    ((const struct cov_ent *)b)->id, CF_BK_ID_BYTES);
}

int
cf_bk_coverage_new(struct cf_bk_coverage **out)
{
	*out = calloc(1, sizeof(**out));
	return *out == NULL ? -ENOMEM : 0;
}

void
cf_bk_coverage_free(struct cf_bk_coverage *c)
{
	if (c == NULL)
		return;
	free(c->v);
	free(c);
}

size_t
cf_bk_coverage_count(const struct cf_bk_coverage *c)
{
	return c->n;
}

void
cf_bk_coverage_get(const struct cf_bk_coverage *c, size_t i,
    unsigned char id[CF_BK_ID_BYTES], int64_t *first_seen,
    int64_t *last_read)
{
	if (i >= c->n)
		cf_misuse("cf_bk_coverage_get: index out of range");
	memcpy(id, c->v[i].id, CF_BK_ID_BYTES);
	*first_seen = c->v[i].first_seen;
	*last_read = c->v[i].last_read;
}

/* A decimal time: 1..19 digits, no sign, no leading zero but "0". */
static int
cov_num(const char **pp, const char *end, char stop, int64_t *out)
{
	const char *p = *pp;
	uint64_t v = 0;
	size_t nd = 0;

	while (p < end && *p >= '0' && *p <= '9') {
		if (nd == 19)
			return -EPROTO;
		v = v * 10 + (uint64_t)(*p - '0');
		nd++;
		p++;
	}
	if (nd == 0 || (nd > 1 && (*pp)[0] == '0') || p == end ||
	    *p != stop || v > (uint64_t)COV_TIME_MAX)
		return -EPROTO;
	*out = (int64_t)v;
	*pp = p + 1;
	return 0;
}

int
cf_bk_coverage_parse(const char *buf, size_t len, struct cf_bk_coverage **out)
{
	struct cf_bk_coverage *c = NULL;
	const char *p = buf, *end = buf + len;
	char hex[65];
	size_t cap = 0, i;
	int rc;

	*out = NULL;
	if (len < sizeof(COV_MAGIC) - 1 ||
	    memcmp(buf, COV_MAGIC, sizeof(COV_MAGIC) - 1) != 0)
		return -EPROTO;
	p += sizeof(COV_MAGIC) - 1;
	rc = cf_bk_coverage_new(&c);
	if (rc < 0)
		return rc;
	while (p < end) {
		struct cov_ent *e;

		if (c->n == CF_BK_COVERAGE_MAX) {
			rc = -E2BIG;
			goto out;
		}
		if (c->n == cap) {
			size_t nc = cap ? cap * 2 : 64;
			struct cov_ent *nv = realloc(c->v, nc * sizeof(*nv));

			if (nv == NULL) {
				rc = -ENOMEM;
				goto out;
			}
			c->v = nv;
			cap = nc;
		}
		e = &c->v[c->n];
		if ((size_t)(end - p) < 65 || p[64] != ' ') {
			rc = -EPROTO;
			goto out;
		}
		memcpy(hex, p, 64);
		hex[64] = '\0';
		rc = cf_bk_id_parse(hex, e->id);
		if (rc < 0) {
			rc = -EPROTO;
			goto out;
		}
		p += 65;
		rc = cov_num(&p, end, ' ', &e->first_seen);
		if (rc == 0)
			rc = cov_num(&p, end, '\n', &e->last_read);
		if (rc < 0)
			goto out;
		c->n++;
	}
	if (c->n > 1)
		qsort(c->v, c->n, sizeof(*c->v), cov_cmp);
	for (i = 1; i < c->n; i++) {
		if (memcmp(c->v[i - 1].id, c->v[i].id, CF_BK_ID_BYTES) == 0) {
			rc = -EPROTO;	/* a pack listed twice */
			goto out;
		}
	}
	*out = c;
	c = NULL;
	rc = 0;
out:
	cf_bk_coverage_free(c);
	return rc;
}

int
cf_bk_coverage_format(const struct cf_bk_coverage *c, char **out,
    size_t *outlen)
{
	size_t cap = sizeof(COV_MAGIC) + c->n * (65 + 2 * 21), len, i;
	char *buf, hex[65];
	int w;

	*out = NULL;
	*outlen = 0;
	buf = malloc(cap);
	if (buf == NULL)
		return -ENOMEM;
	memcpy(buf, COV_MAGIC, sizeof(COV_MAGIC) - 1);
	len = sizeof(COV_MAGIC) - 1;
	for (i = 0; i < c->n; i++) {
		cf_bk_id_hex(c->v[i].id, hex);
		w = snprintf(buf + len, cap - len, "%s %" PRId64 " %" PRId64
		    "\n", hex, c->v[i].first_seen, c->v[i].last_read);
		if (w < 0 || (size_t)w >= cap - len) {
			free(buf);
			return -EIO;	/* cannot happen: cap is exact */
		}
		len += (size_t)w;
	}
	buf[len] = '\0';
	*out = buf;
	*outlen = len;
	return 0;
}

static struct cov_ent *
cov_find(const struct cf_bk_coverage *c, const unsigned char *id)
{
	struct cov_ent key;

	if (c->n == 0)
		return NULL;
	memcpy(key.id, id, CF_BK_ID_BYTES);
	return bsearch(&key, c->v, c->n, sizeof(*c->v), cov_cmp);
}

struct due {
	size_t pack;		/* index position */
	struct cov_ent e;
	int pick;
};

/* Never-read first (oldest sighting first), then oldest read first. */
static int
due_cmp(const void *a, const void *b)
{
	const struct due *x = a, *y = b;
	int64_t kx = x->e.last_read ? x->e.last_read : x->e.first_seen;
	int64_t ky = y->e.last_read ? y->e.last_read : y->e.first_seen;

	if ((x->e.last_read == 0) != (y->e.last_read == 0))
		return x->e.last_read == 0 ? -1 : 1;
	if (kx != ky)
		return kx < ky ? -1 : 1;
	return memcmp(x->e.id, y->e.id, CF_BK_ID_BYTES);
}

/*
 * Chooses and reads the packs due; the coverage after the run goes to
 * v->cov_new (the caller commits it once the whole verify succeeded).
 */
static int
read_due(struct vrun *v, const struct cf_bk_coverage *cov, int64_t now,
    unsigned days)
{
	const struct cf_bk_index *idx = cf_bk_repo_index(v->r);
	size_t np = cf_bk_index_packs(idx), i, picked = 0, quota;
	int64_t period = (int64_t)days * 86400, ref;
	struct cov_ent *nv = NULL, *old;
	struct due *d = NULL;
	size_t *list = NULL, *pos = NULL, n;
	unsigned char *clean = NULL;
	int rc = 0;

	d = calloc(np ? np : 1, sizeof(*d));
	nv = calloc(np ? np : 1, sizeof(*nv));
	list = calloc(np ? np : 1, sizeof(*list));
	pos = calloc(np ? np : 1, sizeof(*pos));
	clean = calloc(np ? np : 1, 1);
	if (d == NULL || nv == NULL || list == NULL || pos == NULL ||
	    clean == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < np; i++) {
		const unsigned char *pid = cf_bk_index_pack_id(idx, i);

		d[i].pack = i;
		memcpy(d[i].e.id, pid, CF_BK_ID_BYTES);
		old = cov_find(cov, pid);
		if (old != NULL) {
			d[i].e.first_seen = old->first_seen;
			d[i].e.last_read = old->last_read;
		} else {
			d[i].e.first_seen = now;
		}
	}
	if (np > 1)
		qsort(d, np, sizeof(*d), due_cmp);
	/*
	 * Due before the next daily run: read now.  Then the steady share,
	 * so that the whole repository turns over within the period even
	 * when nothing is overdue yet.
	 */
	for (i = 0; i < np; i++) {
		ref = d[i].e.last_read ? d[i].e.last_read : d[i].e.first_seen;
		if (ref + period - 86400 <= now) {
			d[i].pick = 1;
			picked++;
		}
	}
	quota = (np + days - 1) / days;
	for (i = 0; i < np && picked < quota; i++) {
		if (!d[i].pick) {
			d[i].pick = 1;
			picked++;
		}
	}
	v->res->packs_due = picked;
	/* Missing or truncated packs are reported already: left out. */
	for (i = n = 0; i < np; i++)
		if (d[i].pick && set_find(&v->bad_packs, 0, d[i].e.id) == NULL)
			list[n++] = i;
	for (i = 0; i < n; i++)
		pos[i] = d[list[i]].pack;
	rc = read_list(v, pos, n, clean);
	if (rc < 0)
		goto out;
	/* A damaged or unreadable pack stays due: read again next time. */
	for (i = 0; i < n; i++)
		if (clean[i])
			d[list[i]].e.last_read = now;
	v->res->oldest_read = 0;
	for (i = 0; i < np; i++) {
		nv[i] = d[i].e;
		if (nv[i].last_read == 0)
			v->res->packs_never_read++;
		else if (v->res->oldest_read == 0 ||
		    nv[i].last_read < v->res->oldest_read)
			v->res->oldest_read = nv[i].last_read;
	}
	if (np > 1)
		qsort(nv, np, sizeof(*nv), cov_cmp);
	v->cov_new = nv;
	v->cov_n = np;
	nv = NULL;
	rc = 0;
out:
	free(clean);
	free(pos);
	free(list);
	free(nv);
	free(d);
	return rc;
}

/* ---- snapshots and trees ------------------------------------------------- */

static int
path_push(struct vrun *v, const char *name, int dir)
{
	size_t l = strlen(name), need = v->plen + 1 + l + 2;

	if (need > v->pcap) {
		size_t nc = need * 2;
		char *np = realloc(v->path, nc);

		if (np == NULL)
			return -ENOMEM;
		v->path = np;
		v->pcap = nc;
	}
	v->path[v->plen++] = '/';
	memcpy(v->path + v->plen, name, l);
	v->plen += l;
	if (dir)
		v->path[v->plen] = '/';
	v->path[v->plen + (dir ? 1 : 0)] = '\0';
	return 0;
}

/* Why a data blob cannot be restored, or NULL if it can. */
static const char *
blob_problem(struct vrun *v, const unsigned char id[CF_BK_ID_BYTES],
    int *rc)
{
	struct cf_bk_blob_loc loc;
	int fresh, lr;

	*rc = 0;
	lr = cf_bk_index_lookup(cf_bk_repo_index(v->r), CF_BK_BLOB_DATA, id,
	    &loc);
	fresh = set_add(&v->blobs, CF_BK_BLOB_DATA, id, 0);
	if (fresh < 0) {
		*rc = fresh;
		return NULL;
	}
	if (fresh)
		v->res->blobs++;
	if (lr < 0) {
		if (fresh)
			v->res->blobs_missing++;
		return "data blob missing from the index";
	}
	if (set_find(&v->bad_packs, 0, loc.pack) != NULL)
		return "data blob in a missing or truncated pack";
	if (set_find(&v->bad_blobs, CF_BK_BLOB_DATA, id) != NULL)
		return "data blob damaged";
	return NULL;
}

/* Walks the tree id at v->path; *found counts damage below. */
static int
walk(struct vrun *v, const char *snap, const unsigned char id[CF_BK_ID_BYTES],
    unsigned depth, uint64_t *found)
{
	struct cf_bk_tree *t = NULL;
	struct ent *e;
	char why[128];
	const char *bp;
	size_t i, j, save = v->plen;
	uint64_t below = 0;
	int rc;

	e = set_find(&v->trees, CF_BK_BLOB_TREE, id);
	if (e != NULL && e->val == 1)
		return 0;	/* clean, checked already */
	if (e == NULL) {
		rc = set_add(&v->trees, CF_BK_BLOB_TREE, id, 1);
		if (rc < 0)
			return rc;
		v->res->trees++;
	}
	if (depth > DEPTH_MAX)
		rc = -ELOOP;
	else
		rc = cf_bk_repo_tree_load(v->r, id, &t);
	if (rc == -ENOMEM)
		return rc;
	if (rc == 0 && set_find(&v->bad_blobs, CF_BK_BLOB_TREE, id) != NULL)
		rc = -EBADMSG;	/* read-data found its copy damaged */
	if (rc < 0) {
		if (e == NULL)
			v->res->trees_bad++;
		snprintf(why, sizeof(why), "directory unreadable: tree %s",
		    rc == -ENOENT ? "missing" : why_text(rc));
		below++;
		rc = damage(v, snap, why);
		goto out;
	}
	for (i = 0; i < t->count; i++) {
		const struct cf_bk_node *nd = &t->nodes[i];

		if (nd->type == CF_BK_NODE_DIR) {
			rc = path_push(v, nd->name, 1);
			if (rc == 0)
				rc = walk(v, snap, nd->subtree, depth + 1,
				    &below);
			v->plen = save;
			if (rc < 0)
				goto out;
			continue;
		}
		if (nd->type != CF_BK_NODE_FILE)
			continue;
		bp = NULL;
		for (j = 0; j < nd->nitems && bp == NULL; j++) {
			if (nd->items[j].hole > 0)
				continue;
			bp = blob_problem(v, nd->items[j].id, &rc);
			if (rc < 0)
				goto out;
		}
		if (bp == NULL)
			continue;
		below++;
		rc = path_push(v, nd->name, 0);
		if (rc == 0)
			rc = damage(v, snap, bp);
		v->plen = save;
		if (rc < 0)
			goto out;
	}
	rc = 0;
out:
	if (v->path != NULL)
		v->path[save] = '\0';
	v->plen = save;
	*found += below;
	if (below > 0 || rc < 0) {
		e = set_find(&v->trees, CF_BK_BLOB_TREE, id);
		if (e != NULL)
			e->val = 2;
	}
	cf_bk_tree_free(t);
	return rc;
}

static int
check_snapshots(struct vrun *v)
{
	struct cf_bk_verify_result *res = v->res;
	unsigned char (*ids)[CF_BK_ID_BYTES] = NULL;
	struct cf_bk_snapshot *s = NULL;
	char name[65];
	size_t n = 0, i;
	uint64_t found;
	int rc;

	rc = cf_bk_repo_snapshot_list(v->r, &ids, &n);
	if (rc < 0)
		return rc;
	res->damaged_snapshots = calloc(n ? n : 1,
	    sizeof(*res->damaged_snapshots));
	if (res->damaged_snapshots == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < n; i++) {
		res->snapshots++;
		bk_name(ids[i], name);
		found = 0;
		rc = cf_bk_repo_snapshot_load(v->r, ids[i], &s);
		if (rc == -ENOMEM)
			goto out;
		if (rc < 0) {
			found = 1;
			rc = problem(res, "snapshot %s: %s", name,
			    why_text(rc));
		} else {
			v->plen = 0;
			rc = walk(v, name, s->tree, 0, &found);
		}
		cf_bk_snapshot_free(s);
		s = NULL;
		if (rc < 0)
			goto out;
		if (found > 0) {
			res->snapshots_bad++;
			memcpy(res->damaged_snapshots[res->ndamaged_snapshots++],
			    name, 65);
		}
	}
	rc = 0;
out:
	free(ids);
	return rc;
}

/* ---- entry points ----------------------------------------------------------- */

static int
verify_run(struct cf_bk_repo *r, const struct cf_bk_verify_opts *o,
    struct cf_bk_coverage *cov, int64_t now, unsigned days,
    struct cf_bk_verify_result **out)
{
	struct vrun v;
	int rc;

	memset(&v, 0, sizeof(v));
	v.r = r;
	v.res = calloc(1, sizeof(*v.res));
	if (v.res == NULL)
		return -ENOMEM;
	rc = check_indexes(&v);
	if (rc < 0)
		goto out;
	rc = check_packs(&v);
	if (rc < 0)
		goto out;
	if (cov != NULL)
		rc = read_due(&v, cov, now, days);
	else if (o->read_data)
		rc = read_packs(&v, o);
	if (rc < 0)
		goto out;
	rc = check_snapshots(&v);
	if (rc < 0)
		goto out;
	*out = v.res;
	v.res = NULL;
	if (cov != NULL) {
		free(cov->v);
		cov->v = v.cov_new;
		cov->n = v.cov_n;
		v.cov_new = NULL;
	}
	rc = 0;
out:
	free(v.cov_new);
	cf_bk_verify_result_free(v.res);
	free(v.listed.v);
	free(v.bad_packs.v);
	free(v.bad_blobs.v);
	free(v.blobs.v);
	free(v.trees.v);
	free(v.path);
	return rc;
}

int
cf_bk_verify(struct cf_bk_repo *r, const struct cf_bk_verify_opts *o,
    struct cf_bk_verify_result **out)
{
	*out = NULL;
	if (o->subset_pct > 100)
		return -EINVAL;
	return verify_run(r, o, NULL, 0, 0, out);
}

int
cf_bk_verify_coverage(struct cf_bk_repo *r, struct cf_bk_coverage *cov,
    int64_t now, unsigned period_days, struct cf_bk_verify_result **out)
{
	struct cf_bk_verify_opts o;

	*out = NULL;
	if (period_days == 0 || period_days > 36500 || now < 0 ||
	    now > COV_TIME_MAX)
		return -EINVAL;
	memset(&o, 0, sizeof(o));
	o.read_data = 1;
	return verify_run(r, &o, cov, now, period_days, out);
}

int
cf_bk_verify_damaged(const struct cf_bk_verify_result *res)
{
	return res->indexes_bad > 0 || res->snapshots_bad > 0 ||
	    res->trees_bad > 0 || res->blobs_missing > 0 ||
	    res->blobs_bad > 0 || res->packs_missing > 0 ||
	    res->packs_bad > 0 || res->files_damaged > 0;
}

void
cf_bk_verify_result_free(struct cf_bk_verify_result *res)
{
	size_t i;

	if (res == NULL)
		return;
	for (i = 0; i < res->ndamage; i++) {
		free(res->damage[i].path);
		free(res->damage[i].why);
	}
	for (i = 0; i < res->nproblems; i++)
		free(res->problems[i]);
	free(res->damage);
	free(res->problems);
	free(res->damaged_snapshots);
	free(res);
}
