/*
 * bk_prune.c - removes from a repository what no snapshot references,
 * in an order that a crash at any point leaves readable and a rerun
 * finishes (docs/retention.md, Prune; docs/format/repository.md,
 * [BK-CRASH-1]).
 *
 * The order is the whole design: the live set is computed before
 * anything changes; packs holding live blobs that move (repack) are
 * written before any index names them; new index objects naming only
 * kept packs are written before the old index objects are deleted; and
 * packs are deleted last, only when no index object names them any more.
 * So after a crash every index object names only existing packs, and
 * every live blob is named by some index object.  Orphans (packs no
 * index names) are harmless to readers and deleted by the next run.
 * Last, the store removes uploads that killed writers left behind and
 * that are older than a day (cf_bk_store_cleanup).
 *
 * It relies on the caller's exclusive lock for exclusion from backups
 * (a backup writing while we mark could reference a pack we delete).
 * It does not delete snapshots by policy (the caller decides with
 * cf_bk_retention_plan) and keeps memory to a hash set of blob ids plus
 * one pack being repacked.
 *
 * cf_bk_repo_reencrypt runs the same steps with every indexed blob
 * counted live and every pack under an older root key version than the
 * write version repacked, then re-seals the snapshots under older
 * versions ([BK-REENC-1]): the repository's objects move to the newest
 * version without any blob id, tree or index entry changing.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bk_int.h"

#define REFRESH_SECONDS 240	/* refresh the lock well before 30 min */
#define INDEX_PACKS 60000U	/* packs per new index object (< 65536) */

enum { ACT_KEEP = 1, ACT_DELETE, ACT_REPACK };

/* ---- a set of (type, id) ------------------------------------------------- */

struct idset {
	unsigned char (*v)[CF_BK_ID_BYTES + 1];	/* byte 0: type, 0 empty */
	size_t cap, n;
};

static size_t
idset_slot(const struct idset *s, unsigned type, const unsigned char *id)
{
	uint64_t h;
	size_t i;

	memcpy(&h, id, sizeof(h));	/* ids are hashes: already uniform */
	i = (size_t)(h ^ type) & (s->cap - 1);
	while (s->v[i][0] != 0 && (s->v[i][0] != type ||
	    memcmp(s->v[i] + 1, id, CF_BK_ID_BYTES) != 0))
		i = (i + 1) & (s->cap - 1);
	return i;
}

static int
idset_has(const struct idset *s, unsigned type, const unsigned char *id)
{
	if (s->cap == 0)
		return 0;
	return s->v[idset_slot(s, type, id)][0] != 0;
}

/* 1 if added, 0 if present, -ENOMEM. */
static int
idset_add(struct idset *s, unsigned type, const unsigned char *id)
{
	size_t i;

	if ((s->n + 1) * 4 > s->cap * 3) {
		struct idset ns;
		size_t j;

		ns.cap = s->cap ? s->cap * 2 : 1024;
		ns.n = s->n;
		ns.v = calloc(ns.cap, sizeof(*ns.v));
		if (ns.v == NULL)
			return -ENOMEM;
		for (j = 0; j < s->cap; j++) {
			if (s->v[j][0] == 0)
				continue;
			i = idset_slot(&ns, s->v[j][0], s->v[j] + 1);
			memcpy(ns.v[i], s->v[j], sizeof(ns.v[i]));
		}
		free(s->v);
		*s = ns;
	}
	i = idset_slot(s, type, id);
	if (s->v[i][0] != 0)
		return 0;
	s->v[i][0] = (unsigned char)type;
	memcpy(s->v[i] + 1, id, CF_BK_ID_BYTES);
	s->n++;
	return 1;
}

static void
idset_free(struct idset *s)
{
	free(s->v);
	s->v = NULL;
	s->cap = s->n = 0;
}

/* ---- names listed from the store ---------------------------------------- */

#define PRUNE_DEL_BATCH 256	/* packs deleted between lock refreshes */

struct names {
	char (*v)[65];
	size_t n, cap;
};

static int
collect(void *arg, const char *name, uint64_t size)
{
	struct names *ns = arg;

	(void)size;
	if (ns->n == ns->cap) {
		size_t nc = ns->cap ? ns->cap * 2 : 64;
		char (*nv)[65] = realloc(ns->v, nc * sizeof(*nv));

		if (nv == NULL)
			return -ENOMEM;
		ns->v = nv;
		ns->cap = nc;
	}
	memcpy(ns->v[ns->n++], name, 65);
	return 0;
}

/* ---- the prune state ------------------------------------------------------ */

struct prune {
	struct cf_bk_repo *r;
	struct cf_bk_lock *lock;
	int64_t refreshed;
	struct idset live;		/* (type, blob id) reachable */
	struct idset keep_packs;	/* (1, pack id) in the new index */
	struct cf_bk_prune_stats *st;
	/*
	 * Re-encryption (cf_bk_repo_reencrypt): 0 for a prune, else the
	 * write version; packs under an older one move, and all their
	 * blobs are live.
	 */
	uint32_t rekey;
	cf_bk_reenc_fn *fn;
	void *arg;
	struct cf_bk_reenc_stats *rst;
};

static void
step_ids(struct prune *p, enum cf_bk_reenc_step s, uint64_t done,
    uint64_t total, const unsigned char *old_id, const unsigned char *new_id)
{
	if (p->fn != NULL)
		p->fn(p->arg, s, done, total, old_id, new_id);
}

static void
step(struct prune *p, enum cf_bk_reenc_step s, uint64_t done,
    uint64_t total)
{
	step_ids(p, s, done, total, NULL, NULL);
}

static int
refresh(struct prune *p)
{
	int64_t now = (int64_t)cf_ks_now();
	int rc;

	if (p->lock == NULL || now - p->refreshed < REFRESH_SECONDS)
		return 0;
	rc = cf_bk_lock_refresh(p->lock);
	if (rc == 0)
		p->refreshed = now;
	return rc;
}

static int
mark_tree(struct prune *p, const unsigned char id[CF_BK_ID_BYTES],
    int depth)
{
	struct cf_bk_tree *t = NULL;
	size_t i, j;
	int rc;

	if (depth > 512)
		return -EPROTO;
	rc = idset_add(&p->live, CF_BK_BLOB_TREE, id);
	if (rc <= 0)
		return rc;	/* seen (0): its subtree is marked already */
	rc = cf_bk_repo_tree_load(p->r, id, &t);
	if (rc < 0)
		return rc;	/* -ENOENT unindexed, -EBADMSG damaged */
	for (i = 0; i < t->count; i++) {
		const struct cf_bk_node *n = &t->nodes[i];

		if (n->type == CF_BK_NODE_DIR) {
			rc = mark_tree(p, n->subtree, depth + 1);
			if (rc < 0)
				goto out;
			continue;
		}
		for (j = 0; j < n->nitems; j++) {
			if (n->items[j].hole > 0)
				continue;
			if (!cf_bk_repo_has_blob(p->r, CF_BK_BLOB_DATA,
			    n->items[j].id)) {
				rc = -ENOENT;
				goto out;
			}
			rc = idset_add(&p->live, CF_BK_BLOB_DATA,
			    n->items[j].id);
			if (rc < 0)
				goto out;
		}
	}
	rc = 0;
out:
	cf_bk_tree_free(t);
	return rc;
}

/* Step 2: every blob reachable from every snapshot. */
static int
mark(struct prune *p)
{
	unsigned char (*ids)[CF_BK_ID_BYTES] = NULL;
	struct cf_bk_snapshot *s;
	size_t n = 0, i;
	int rc;

	rc = cf_bk_repo_snapshot_list(p->r, &ids, &n);
	if (rc < 0)
		return rc;
	p->st->snapshots = n;
	for (i = 0; i < n; i++) {
		rc = cf_bk_repo_snapshot_load(p->r, ids[i], &s);
		if (rc < 0)
			goto out;
		rc = mark_tree(p, s->tree, 0);
		cf_bk_snapshot_free(s);
		if (rc < 0)
			goto out;
		rc = refresh(p);
		if (rc < 0)
			goto out;
	}
	rc = 0;
out:
	free(ids);
	return rc;
}

/* Puts the full packer as a pack and adds it to the new index. */
static int
put_pack(struct prune *p, struct bk_packer *pk, struct cf_bk_index *nidx)
{
	unsigned char *buf = NULL, id[CF_BK_ID_BYTES], hdr[CF_BK_HEADER_BYTES];
	struct cf_bk_desc *descs = NULL;
	char name[65];
	size_t len, n;
	int rc;

	if (bk_packer_count(pk) == 0)
		return 0;
	rc = bk_packer_finish(pk, NULL, &buf, &len, id, hdr, &descs, &n);
	if (rc < 0)
		return rc;
	bk_name(id, name);
	rc = cf_bk_store_put(p->r->store, CF_BK_KIND_PACK, name, buf, len, 0);
	if (rc < 0)
		goto out;
	rc = cf_bk_index_add_pack(nidx, id, hdr, descs, n);
	if (rc < 0)
		goto out;
	rc = idset_add(&p->keep_packs, 1, id);
	if (rc < 0)
		goto out;
	p->st->packs_written++;
	p->st->bytes_written += len;
	rc = 0;
out:
	free(buf);
	free(descs);
	return rc;
}

/*
 * Step 3: live blobs of pack i go into the packers (flushed when full):
 * pk[0] data, pk[1] trees, kept apart as the writer keeps them.
 */
static int
repack(struct prune *p, size_t i, struct bk_packer *pks[2],
    struct cf_bk_index *nidx, struct idset *moved)
{
	struct bk_packer **pk;
	const struct cf_bk_index *idx = cf_bk_repo_index(p->r);
	const unsigned char *hdr;
	const struct cf_bk_desc *d;
	const uint32_t *off;
	unsigned char *plain;
	size_t n, j, plen;
	uint64_t size;
	int rc;

	bk_index_pack_info(idx, i, &hdr, &d, &off, &n, &size);
	for (j = 0; j < n; j++) {
		if (p->rekey == 0 && !idset_has(&p->live, d[j].type, d[j].id))
			continue;
		rc = idset_add(moved, d[j].type, d[j].id);
		if (rc < 0)
			return rc;
		if (rc == 0)
			continue;	/* a duplicate, already moved */
		pk = &pks[d[j].type == CF_BK_BLOB_TREE];
		if (*pk == NULL) {
			rc = bk_packer_new(pk, p->r->keys, NULL);
			if (rc < 0)
				return rc;
		}
		rc = cf_bk_repo_blob_load(p->r, d[j].type, d[j].id, &plain,
		    &plen);
		if (rc < 0)
			return rc;
		if (p->rst != NULL) {
			p->rst->blobs_copied++;
			p->rst->bytes_old += d[j].length;
		}
		rc = bk_packer_add(*pk, d[j].type, d[j].id, plain, plen, 1,
		    NULL, NULL);
		free(plain);
		if (rc < 0)
			return rc;
		if (bk_packer_bytes(*pk) >= CF_BK_PACK_TARGET ||
		    bk_packer_count(*pk) >= CF_BK_PACK_BLOBS_MAX - 1) {
			rc = put_pack(p, *pk, nidx);
			bk_packer_free(*pk);
			*pk = NULL;
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

/* Step 4: puts nidx as index objects of at most INDEX_PACKS packs. */
static int
write_index(struct prune *p, const struct cf_bk_index *nidx)
{
	struct cf_bk_index *part = NULL;
	const unsigned char *hdr;
	const struct cf_bk_desc *d;
	const uint32_t *off;
	unsigned char *plain, id[CF_BK_ID_BYTES];
	size_t i, n, total = cf_bk_index_packs(nidx), plen;
	uint64_t size;
	int rc = 0;

	for (i = 0; i < total; i++) {
		if (part == NULL) {
			rc = cf_bk_index_new(&part);
			if (rc < 0)
				return rc;
		}
		bk_index_pack_info(nidx, i, &hdr, &d, &off, &n, &size);
		rc = cf_bk_index_add_pack(part, cf_bk_index_pack_id(nidx, i),
		    hdr, d, n);
		if (rc < 0)
			goto out;
		if (cf_bk_index_packs(part) < INDEX_PACKS && i + 1 < total)
			continue;
		rc = cf_bk_index_encode(part, &plain, &plen);
		if (rc < 0)
			goto out;
		rc = bk_repo_put_object(p->r, CF_BK_KIND_INDEX, plain, plen,
		    id);
		free(plain);
		if (rc < 0)
			goto out;
		p->st->indexes_written++;
		cf_bk_index_free(part);
		part = NULL;
		rc = refresh(p);
		if (rc < 0)
			goto out;
	}
	rc = 0;
out:
	cf_bk_index_free(part);
	return rc;
}

/* Counts an object whose deletion Object Lock refused, and its date. */
static void
locked(struct cf_bk_repo *r, struct cf_bk_prune_stats *st,
    enum cf_bk_kind kind, const char *name)
{
	int64_t until = 0;

	st->objects_locked++;
	if (cf_bk_store_lock_until(r->store, kind, name, &until) == 0 &&
	    until > st->locked_until)
		st->locked_until = until;
}

/*
 * The prune, or with rekey != 0 the pack and index part of a
 * re-encryption (p's fn, arg and rst set by the caller).
 */
static int
run(struct prune *p0, struct cf_bk_repo *r, struct cf_bk_lock *lock,
    const struct cf_bk_prune_opts *o, struct cf_bk_prune_stats *st)
{
	struct prune p = *p0;
	struct names old_idx = { NULL, 0, 0 }, packs = { NULL, 0, 0 };
	struct cf_bk_index *nidx = NULL;
	const struct cf_bk_index *idx;
	struct bk_packer *pk[2] = { NULL, NULL };
	struct idset moved = { NULL, 0, 0 }, indexed = { NULL, 0, 0 };
	unsigned char pid[CF_BK_ID_BYTES], *act = NULL;
	size_t i, j, bad = 0;
	int rc, index_locked = 0;

	memset(st, 0, sizeof(*st));
	p.r = r;
	p.lock = lock;
	p.st = st;
	p.refreshed = (int64_t)cf_ks_now();
	/* 1: the index objects this run replaces, then the index itself. */
	rc = cf_bk_store_list(r->store, CF_BK_KIND_INDEX, collect, &old_idx);
	if (rc < 0)
		goto out;
	rc = cf_bk_repo_index_load(r, &bad);
	if (rc < 0)
		goto out;
	if (bad > 0) {
		/*
		 * An index we cannot read may be the only one naming a live
		 * pack: deleting it, or packs it names, could lose data.
		 */
		rc = -EBADMSG;
		goto out;
	}
	idx = cf_bk_repo_index(r);
	/* 2: mark (a re-encryption moves every blob it finds). */
	if (p.rekey == 0) {
		rc = mark(&p);
		if (rc < 0)
			goto out;
	}
	/* Classify the indexed packs; count orphans. */
	rc = cf_bk_store_list(r->store, CF_BK_KIND_PACK, collect, &packs);
	if (rc < 0)
		goto out;
	st->packs = cf_bk_index_packs(idx);
	rc = cf_bk_index_new(&nidx);
	if (rc < 0)
		goto out;
	act = calloc(cf_bk_index_packs(idx) + 1, 1);
	if (act == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < cf_bk_index_packs(idx); i++) {
		const unsigned char *hdr;
		const struct cf_bk_desc *d;
		const uint32_t *off;
		uint64_t size, live_bytes = 0;
		size_t n, live = 0;

		bk_index_pack_info(idx, i, &hdr, &d, &off, &n, &size);
		rc = idset_add(&indexed, 1, cf_bk_index_pack_id(idx, i));
		if (rc < 0)
			goto out;
		for (j = 0; j < n; j++) {
			if (p.rekey != 0 ||
			    idset_has(&p.live, d[j].type, d[j].id)) {
				live++;
				live_bytes += d[j].length;
			}
		}
		st->blobs_live += live;
		st->blobs_dead += n - live;
		/* A re-encryption moves the packs under older versions. */
		if (p.rekey != 0)
			act[i] = bk_rd32(hdr + 12) < p.rekey ? ACT_REPACK :
			    ACT_KEEP;
		else if (live == 0)
			act[i] = ACT_DELETE;
		else if (live < n && o->repack_pct > 0 &&
		    live_bytes * 100 <= size * o->repack_pct)
			act[i] = ACT_REPACK;
		else
			act[i] = ACT_KEEP;
		if (act[i] == ACT_DELETE) {
			st->packs_deleted++;
			st->bytes_deleted += size;
		} else if (act[i] == ACT_REPACK) {
			st->packs_repacked++;
			st->bytes_deleted += size;
		} else {
			rc = cf_bk_index_add_pack(nidx,
			    cf_bk_index_pack_id(idx, i), hdr, d, n);
			if (rc == 0)
				rc = idset_add(&p.keep_packs, 1,
				    cf_bk_index_pack_id(idx, i));
			/* Blobs a kept pack holds are not copied again. */
			for (j = 0; rc >= 0 && j < n; j++)
				rc = idset_add(&moved, d[j].type, d[j].id);
			if (rc < 0)
				goto out;
		}
	}
	/* 3: the moved blobs' new packs are put before any index names them. */
	for (i = 0, j = 0; !o->dry_run && i < cf_bk_index_packs(idx); i++) {
		if (act[i] != ACT_REPACK)
			continue;
		rc = repack(&p, i, pk, nidx, &moved);
		if (rc < 0)
			goto out;
		step(&p, CF_BK_REENC_PACK, ++j, st->packs_repacked);
		rc = refresh(&p);
		if (rc < 0)
			goto out;
	}
	for (i = 0; i < packs.n; i++) {
		if (cf_bk_id_parse(packs.v[i], pid) == 0 &&
		    !idset_has(&indexed, 1, pid))
			st->packs_orphan++;
	}
	if (o->dry_run) {
		rc = 0;
		goto out;
	}
	for (i = 0; i < 2; i++) {
		if (pk[i] == NULL)
			continue;
		rc = put_pack(&p, pk[i], nidx);
		if (rc < 0)
			goto out;
	}
	/* 4: new index objects before 5: deleting the old ones. */
	rc = write_index(&p, nidx);
	if (rc < 0)
		goto out;
	step(&p, CF_BK_REENC_INDEX, st->indexes_written, st->indexes_written);
	for (i = 0; i < old_idx.n; i++) {
		rc = cf_bk_store_del(r->store, CF_BK_KIND_INDEX, old_idx.v[i]);
		if (rc == -EROFS) {
			/* Object Lock: a later prune deletes it. */
			locked(r, st, CF_BK_KIND_INDEX, old_idx.v[i]);
			index_locked = 1;
			continue;
		}
		if (rc < 0 && rc != -ENOENT)
			goto out;
		st->indexes_deleted++;
	}
	rc = refresh(&p);
	if (rc < 0)
		goto out;
	/* 6: packs no index names any more: dead, repacked, orphans; in
	 * batches (one request each on S3), the lock refreshed between. */
	for (i = 0; !index_locked && i < packs.n;) {
		const char *batch[PRUNE_DEL_BATCH];
		int rcs[PRUNE_DEL_BATCH];
		size_t nb = 0, k;

		for (; i < packs.n && nb < PRUNE_DEL_BATCH; i++)
			if (cf_bk_id_parse(packs.v[i], pid) == 0 &&
			    !idset_has(&p.keep_packs, 1, pid))
				batch[nb++] = packs.v[i];
		rc = cf_bk_store_del_many(r->store, CF_BK_KIND_PACK, batch, nb,
		    rcs);
		for (k = 0; rc == 0 && k < nb; k++) {
			if (rcs[k] == -EROFS)
				locked(r, st, CF_BK_KIND_PACK, batch[k]);
			else if (rcs[k] < 0 && rcs[k] != -ENOENT)
				rc = rcs[k];
			else if (rcs[k] == 0 && p.rst != NULL)
				p.rst->packs_deleted++;
		}
		if (rc == 0)
			rc = refresh(&p);
		if (rc < 0)
			goto out;
	}
	/*
	 * 7: uploads of writers killed in the middle (a multipart upload
	 * is invisible to list and costs storage until aborted).  Only old
	 * ones: the exclusive lock keeps backups and write-only agents out,
	 * but only while their locks are younger than 30 minutes; a writer
	 * whose host was suspended for longer, or whose clock is off, may
	 * still be uploading.  Not a reason to fail a prune that did its
	 * work: reported.  Not a re-encryption's business.
	 */
	if (p.rst != NULL)
		step(&p, CF_BK_REENC_DELETED, p.rst->packs_deleted,
		    p.rst->packs_deleted);
	if (p.rekey == 0)
		st->stale_rc = cf_bk_store_cleanup(r->store,
		    (int64_t)cf_ks_now() - CF_BK_STALE_SECONDS,
		    &st->stale_removed);
	rc = refresh(&p);
	if (rc < 0)
		goto out;
	rc = cf_bk_repo_index_load(r, NULL);
out:
	free(act);
	bk_packer_free(pk[0]);
	bk_packer_free(pk[1]);
	cf_bk_index_free(nidx);
	idset_free(&p.live);
	idset_free(&p.keep_packs);
	idset_free(&moved);
	idset_free(&indexed);
	free(old_idx.v);
	free(packs.v);
	return rc;
}

int
cf_bk_prune(struct cf_bk_repo *r, struct cf_bk_lock *lock,
    const struct cf_bk_prune_opts *o, struct cf_bk_prune_stats *st)
{
	struct prune p;

	memset(&p, 0, sizeof(p));
	return run(&p, r, lock, o, st);
}

/* ---- re-encryption --------------------------------------------------------- */

struct snap {
	unsigned char id[CF_BK_ID_BYTES];
	uint32_t version;		/* of the object's header */
	struct cf_bk_snapshot *s;
	unsigned char new_id[CF_BK_ID_BYTES];	/* once re-sealed */
	int moved;
};

static int
by_time(const void *a, const void *b)
{
	const struct snap *x = a, *y = b;

	if (x->s->time != y->s->time)
		return x->s->time < y->s->time ? -1 : 1;
	return memcmp(x->id, y->id, CF_BK_ID_BYTES);
}

/* s's canonical encoding without its record and parent. */
static int
bare(const struct cf_bk_snapshot *s, char **json, size_t *len)
{
	struct cf_bk_snapshot c = *s;	/* shallow */

	c.has_key_versions = 0;
	c.nkey_versions = 0;
	c.has_parent = 0;
	return cf_bk_snapshot_encode(&c, json, len);
}

/*
 * Sets *copy to a snapshot under w equal to v[k] in everything but
 * key_versions and parent: the copy a killed run put before it could
 * delete v[k] (or an identical snapshot: it restores the same), or
 * NULL.
 */
static int
copy_of(const struct snap *v, size_t n, size_t k, uint32_t w,
    const struct snap **copy)
{
	char *a = NULL, *b = NULL;
	size_t alen = 0, blen = 0, j;
	int rc = 0;

	*copy = NULL;
	for (j = 0; j < n && *copy == NULL; j++) {
		if (v[j].version < w || v[j].s->time != v[k].s->time)
			continue;
		if (a == NULL) {
			rc = bare(v[k].s, &a, &alen);
			if (rc < 0)
				break;
		}
		rc = bare(v[j].s, &b, &blen);
		if (rc < 0)
			break;
		if (blen == alen && memcmp(a, b, alen) == 0)
			*copy = &v[j];
		free(b);
		b = NULL;
	}
	free(a);
	return rc;
}

/*
 * Step 5 of cf_bk_repo_reencrypt: snapshots under versions below w, in
 * time order (a parent before its children, so a child names the
 * parent's new id).  The new object is put before the old one is
 * deleted: a crash leaves both, equal but for the record, and the rerun
 * takes the copy.
 */
static int
reseal(struct prune *p, uint32_t w)
{
	struct cf_bk_repo *r = p->r;
	struct cf_bk_reenc_stats *st = p->rst;
	unsigned char (*ids)[CF_BK_ID_BYTES] = NULL;
	unsigned char hdr[CF_BK_HEADER_BYTES];
	struct snap *v = NULL;
	uint32_t need[2];
	size_t n = 0, i, j, done = 0;
	char name[65];
	int rc;

	rc = cf_bk_repo_snapshot_list(r, &ids, &n);
	if (rc < 0)
		return rc;
	st->snapshots = n;
	if (n == 0)
		goto out;
	v = calloc(n, sizeof(*v));
	if (v == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < n; i++) {
		memcpy(v[i].id, ids[i], CF_BK_ID_BYTES);
		bk_name(ids[i], name);
		rc = cf_bk_store_get_range(r->store, CF_BK_KIND_SNAPSHOT, name,
		    0, sizeof(hdr), hdr);
		if (rc < 0)
			goto out;
		v[i].version = bk_rd32(hdr + 12);
		rc = cf_bk_repo_snapshot_load(r, ids[i], &v[i].s);
		if (rc < 0)
			goto out;
		if (v[i].version < w)
			st->snapshots_old++;
	}
	qsort(v, n, sizeof(*v), by_time);
	need[0] = w;
	need[1] = r->cfg_version;
	for (i = 0; i < n; i++) {
		const struct snap *c;
		struct cf_bk_snapshot s;

		if (v[i].version >= w)
			continue;
		rc = copy_of(v, n, i, w, &c);
		if (rc < 0)
			goto out;
		if (c != NULL) {
			memcpy(v[i].new_id, c->id, CF_BK_ID_BYTES);
		} else {
			s = *v[i].s;	/* shallow: the record and parent differ */
			s.has_key_versions = 1;
			s.nkey_versions = 0;
			(void)!cf_bk_snapshot_add_key_versions(&s, need, 2);
			for (j = 0; s.has_parent && j < n; j++) {
				if (v[j].moved && memcmp(v[j].id, s.parent,
				    CF_BK_ID_BYTES) == 0)
					memcpy(s.parent, v[j].new_id,
					    CF_BK_ID_BYTES);
			}
			rc = cf_bk_repo_snapshot_save(r, &s, v[i].new_id);
			if (rc < 0)
				goto out;
		}
		step_ids(p, CF_BK_REENC_SNAPSHOT, done + 1, st->snapshots_old,
		    v[i].id, v[i].new_id);
		v[i].moved = 1;
		st->snapshots_resealed++;
		done++;
		rc = cf_bk_repo_snapshot_delete(r, v[i].id);
		if (rc == -EROFS) {
			st->objects_locked++;
		} else if (rc < 0 && rc != -ENOENT) {
			goto out;
		}
		rc = refresh(p);
		if (rc < 0)
			goto out;
	}
	rc = 0;
out:
	for (i = 0; v != NULL && i < n; i++)
		cf_bk_snapshot_free(v[i].s);
	free(v);
	free(ids);
	return rc;
}

int
cf_bk_repo_reencrypt(struct cf_bk_repo *r, struct cf_bk_lock *lock,
    cf_bk_reenc_fn *fn, void *arg, struct cf_bk_reenc_stats *st)
{
	struct cf_bk_prune_opts o = { 0, 0 };
	struct cf_bk_prune_stats ps;
	struct prune p;
	int rc;

	memset(st, 0, sizeof(*st));
	if (r->keys->writer)
		return -EINVAL;
	memset(&p, 0, sizeof(p));
	p.rekey = cf_bk_keys_write_version(r->keys);
	p.fn = fn;
	p.arg = arg;
	p.rst = st;
	st->key_version = p.rekey;
	rc = run(&p, r, lock, &o, &ps);
	st->packs = ps.packs;
	st->packs_old = ps.packs_repacked;
	st->packs_written = ps.packs_written;
	st->bytes_written = ps.bytes_written;
	st->indexes_written = ps.indexes_written;
	st->indexes_deleted = ps.indexes_deleted;
	st->objects_locked = ps.objects_locked;
	st->locked_until = ps.locked_until;
	if (rc < 0)
		return rc;
	p.r = r;
	p.lock = lock;
	p.refreshed = (int64_t)cf_ks_now();
	return reseal(&p, p.rekey);
}

int
cf_bk_repo_snapshot_delete(struct cf_bk_repo *r,
    const unsigned char id[CF_BK_ID_BYTES])
{
	char name[65];

	bk_name(id, name);
	return cf_bk_store_del(r->store, CF_BK_KIND_SNAPSHOT, name);
}
