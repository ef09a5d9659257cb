/*
 * bk_writer.c - the pack writer: dedup, then compress, seal and pack on
 * worker threads, put full packs on an uploader thread, then index them
 * (docs/format/repository.md: [BK-CRASH-1..2]).
 *
 * The caller's thread reads and chunks.  The chunks of a file
 * (cf_bk_writer_file_add) go through a bounded queue to nthreads workers,
 * which compute each blob id (keyed hash), write it into the file's item
 * list and do the dedup check; the caller collects the list with
 * cf_bk_writer_file_take, typically once per directory, so the walk never
 * waits for a hash (docs/backup.md, Pipeline and memory).  Two workers
 * with the same new blob at once: the pending set, checked and filled
 * under the lock, lets only the first store it.  Blobs added by
 * cf_bk_writer_add (trees) and streams of cf_bk_writer_add_stream (tar
 * entries) are hashed on the caller's thread, which needs the ids
 * at once.  Each worker owns a pack and a zstd context and fills the
 * pack up to CF_BK_PACK_TARGET (a blob that would take it past the
 * target closes it first); trees go into a pack of their own.  A full
 * pack goes to a bounded queue of the uploader threads (one for a local
 * store, which writes and fsyncs it there with O_DIRECT; one per S3
 * connection, up to UP_MAX, so packs go up at once), which put it, then
 * record it in the index, so compressing never waits for the disk or
 * the network.  Packs are indexed only after they are put; an index
 * object is written every 256 packs, 30 s after the last one (so a
 * backup interrupted after hours has indexed nearly everything it put,
 * and its rerun stores only what is missing), and at flush, after every
 * pack it names was put.
 *
 * Memory is bounded: at most QBYTES_MAX of queued blob copies (and at
 * least one blob), two pack buffers per worker (the tree one small),
 * UPQ_MAX packs waiting for an uploader and one in each uploader's put.
 * Put packs' buffers are kept in a small pool and reused by the next
 * packs (no fresh 17 MiB allocation and page faults
 * per pack).  The stream buffer the chunker cuts from is allocated once
 * per writer.
 *
 * The writer also notes the root key version of every pack it found a
 * known blob in, for the snapshot's key_versions ([BK-SNAP-2]).
 *
 * Locking: w->mu protects the queues, the pending set, the stats, the
 * buffer pool, the unindexed-pack index, w->err, the item arrays and
 * pending counts of files in flight (struct cf_bk_wfile), and the repo's
 * in-memory index while the writer lives.  Workers and the uploader
 * never hold it while compressing, sealing or putting.  Only one lock:
 * no lock order to keep.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include "bk_int.h"

#define INDEX_EVERY_PACKS 256U
#define INDEX_EVERY_NS (30 * (int64_t)1000000000)
#define KEYLEN (1 + CF_BK_ID_BYTES)
#define QBYTES_MAX (16U << 20)	/* blob copies waiting for a worker */
#define UPQ_MAX 1U		/* full packs waiting for an uploader */
#define UP_MAX 4U		/* uploader threads (a remote store's puts) */
#define POOL_MAX 4U		/* spare pack buffers kept */

struct job {
	enum cf_bk_blob_type type;
	unsigned char id[CF_BK_ID_BYTES];	/* unless wf: computed there */
	unsigned char *data;
	size_t len;
	struct cf_bk_wfile *wf;		/* a file's chunk: id goes to */
	size_t idx;			/* wf->items[idx] */
};

/*
 * A file in flight: its items in order; the ids of data items are
 * written by the workers.  items, n (when growing) and pending are
 * protected by w->mu while pending > 0; the caller's thread alone
 * appends.
 */
struct cf_bk_wfile {
	struct cf_bk_item *items;
	size_t n, cap;
	size_t pending;			/* chunks without an id yet */
};

/* A finished pack on its way to the store. */
struct upl {
	unsigned char *buf;
	size_t len, cap;
	unsigned char id[CF_BK_ID_BYTES];
	unsigned char hdr[CF_BK_PACK_HEADER_MAX];	/* with a sealed key */
	struct cf_bk_desc *descs;
	size_t n;
};

struct spare {
	unsigned char *buf;
	size_t cap;
};

/*
 * Each worker fills two packs: data blobs and tree blobs apart, so that
 * reading a snapshot's trees (restore, verify, an incremental's parent)
 * touches the few small tree packs and not a window of every data pack
 * (restic keeps them apart for the same reason).
 */
#define PK_DATA 0
#define PK_TREE 1

struct wstate {
	struct cf_bk_writer *w;
	struct bk_packer *packer[2];	/* PK_DATA, PK_TREE; this worker's */
	ZSTD_CCtx *cctx;
	pthread_t tid;
	int started;
};

struct cf_bk_writer {
	struct cf_bk_repo *r;
	unsigned nthreads;
	struct wstate *ws;		/* nthreads, or 1 when synchronous */
	size_t nws;

	pthread_mutex_t mu;
	pthread_cond_t cv_work, cv_space, cv_idle, cv_up, cv_upspace, cv_ids;
	struct job *q;			/* ring of qcap jobs */
	size_t qcap, qhead, qlen, qbytes, busy;
	size_t idwait;			/* callers waiting on cv_ids */
	int stop, err;

	struct upl upq[UPQ_MAX];	/* ring of full packs */
	size_t uphead, uplen, upbusy;
	pthread_t uptid[UP_MAX];
	unsigned upstarted;		/* uploader threads running */
	struct spare pool[POOL_MAX];	/* buffers of put packs */
	size_t npool;

	unsigned char *sbuf;		/* add_stream's buffer */
	size_t scap;

	unsigned char (*pend)[KEYLEN];	/* set of type||id added */
	size_t pcap, npend;

	struct cf_bk_index *unindexed;	/* put but not yet indexed */
	int64_t index_ns;		/* an index this long after the last */
	int64_t last_index;		/* CLOCK_MONOTONIC ns of the last */
	struct cf_bk_writer_stats st;	/* key_versions: see kv_note */
};

void
bk_writer_index_every(struct cf_bk_writer *w, int64_t ns)
{
	pthread_mutex_lock(&w->mu);
	w->index_ns = ns;
	pthread_mutex_unlock(&w->mu);
}

/* ---- key versions ([BK-SNAP-2]) ------------------------------------------ */

/*
 * Notes the root key version of the pack a known blob was found in
 * (dedup, a parent's tree or data blob), so the snapshot can record
 * every version it needs.  New blobs go into packs of the write version,
 * which cf_bk_writer_stats adds.  More versions than a snapshot can
 * record: the record is dropped, never cut short.  With mu.
 */
static void
kv_note(struct cf_bk_writer *w, const struct cf_bk_blob_loc *loc)
{
	uint32_t v = bk_rd32(loc->header + 12);
	size_t i;

	if (!w->st.has_key_versions)
		return;
	for (i = 0; i < w->st.nkey_versions; i++)
		if (w->st.key_versions[i] == v)
			return;
	if (w->st.nkey_versions == CF_BK_SNAP_KEY_VERSIONS_MAX) {
		w->st.has_key_versions = 0;
		w->st.nkey_versions = 0;
		return;
	}
	w->st.key_versions[w->st.nkey_versions++] = v;
}

/* ---- pending set ------------------------------------------------------------ */

static int
pend_grow(struct cf_bk_writer *w)
{
	unsigned char (*old)[KEYLEN] = w->pend, (*nv)[KEYLEN];
	size_t oldcap = w->pcap, cap = oldcap ? oldcap * 2 : 4096, i, j;

	nv = calloc(cap, KEYLEN);
	if (nv == NULL)
		return -ENOMEM;
	for (i = 0; i < oldcap; i++) {
		if (old[i][0] == 0)
			continue;
		j = (size_t)bk_rd64(old[i] + 1) & (cap - 1);
		while (nv[j][0] != 0)
			j = (j + 1) & (cap - 1);
		memcpy(nv[j], old[i], KEYLEN);
	}
	free(old);
	w->pend = nv;
	w->pcap = cap;
	return 0;
}

/* 1 if present; otherwise inserts when add and returns 0. */
static int
pend_check(struct cf_bk_writer *w, enum cf_bk_blob_type type,
    const unsigned char *id, int add, int *rc)
{
	size_t j;

	*rc = 0;
	if (add && (w->npend + 1) * 2 > w->pcap) {
		*rc = pend_grow(w);
		if (*rc < 0)
			return 0;
	}
	if (w->pcap == 0)
		return 0;
	j = (size_t)bk_rd64(id) & (w->pcap - 1);
	while (w->pend[j][0] != 0) {
		if (w->pend[j][0] == (unsigned char)type &&
		    memcmp(w->pend[j] + 1, id, CF_BK_ID_BYTES) == 0)
			return 1;
		j = (j + 1) & (w->pcap - 1);
	}
	if (add) {
		w->pend[j][0] = (unsigned char)type;
		memcpy(w->pend[j] + 1, id, CF_BK_ID_BYTES);
		w->npend++;
	}
	return 0;
}

/* ---- packs and indexes ------------------------------------------------------- */

/* Puts the index of every put-but-unindexed pack.  Called without mu. */
static int
write_index(struct cf_bk_writer *w)
{
	struct cf_bk_index *old = NULL, *fresh = NULL;
	unsigned char *buf = NULL, id[CF_BK_ID_BYTES];
	size_t len;
	int rc;

	rc = cf_bk_index_new(&fresh);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&w->mu);
	if (cf_bk_index_packs(w->unindexed) == 0) {
		pthread_mutex_unlock(&w->mu);
		cf_bk_index_free(fresh);
		return 0;
	}
	old = w->unindexed;
	w->unindexed = fresh;
	pthread_mutex_unlock(&w->mu);
	rc = cf_bk_index_encode(old, &buf, &len);
	if (rc == 0)
		rc = bk_repo_put_object(w->r, CF_BK_KIND_INDEX, buf, len, id);
	free(buf);
	cf_bk_index_free(old);
	pthread_mutex_lock(&w->mu);
	if (rc == 0) {
		w->st.indexes++;
		w->last_index = cf_mono_ns();
	} else if (w->err == 0)
		w->err = rc;	/* those packs are orphans now: fail */
	pthread_mutex_unlock(&w->mu);
	return rc;
}

/* Frees a pack's buffer, or keeps it for a later pack.  With mu. */
static void
pool_put(struct cf_bk_writer *w, unsigned char *buf, size_t cap)
{
	if (buf == NULL)
		return;
	if (w->npool < POOL_MAX && cap >= CF_BK_PACK_TARGET) {
		w->pool[w->npool].buf = buf;
		w->pool[w->npool].cap = cap;
		w->npool++;
		return;
	}
	free(buf);
}

/*
 * Puts one finished pack, then records it in the repo's index and the
 * unindexed set; writes an index object every INDEX_EVERY_PACKS packs.
 * Called without mu (uploader thread, or the caller when synchronous).
 * Frees the descriptors and returns the buffer to the pool.
 */
static int
upload(struct cf_bk_writer *w, struct upl *u)
{
	char name[65];
	uint64_t stored = 0;
	size_t i;
	int rc, need_index = 0;

	bk_name(u->id, name);
	rc = cf_bk_store_put(w->r->store, CF_BK_KIND_PACK, name, u->buf,
	    u->len, 0);
	for (i = 0; i < u->n; i++)
		stored += u->descs[i].length;
	pthread_mutex_lock(&w->mu);
	if (rc == 0)
		rc = cf_bk_index_add_pack(w->r->idx, u->id, u->hdr, u->descs,
		    u->n);
	if (rc == 0)
		rc = cf_bk_index_add_pack(w->unindexed, u->id, u->hdr,
		    u->descs, u->n);
	if (rc == 0) {
		w->st.packs++;
		w->st.stored_bytes += stored;
		need_index = cf_bk_index_packs(w->unindexed) >=
		    INDEX_EVERY_PACKS ||
		    cf_mono_ns() - w->last_index >= w->index_ns;
	}
	pool_put(w, u->buf, u->cap);
	pthread_mutex_unlock(&w->mu);
	free(u->descs);
	memset(u, 0, sizeof(*u));
	if (rc == 0 && need_index)
		rc = write_index(w);
	return rc;
}

static void *
uploader(void *arg)
{
	struct cf_bk_writer *w = arg;
	struct upl u;
	int rc, failed;

	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (w->uplen == 0 && !w->stop)
			pthread_cond_wait(&w->cv_up, &w->mu);
		if (w->stop)
			break;
		u = w->upq[w->uphead];
		memset(&w->upq[w->uphead], 0, sizeof(u));
		w->uphead = (w->uphead + 1) % UPQ_MAX;
		w->uplen--;
		w->upbusy++;
		failed = w->err != 0;
		pthread_cond_broadcast(&w->cv_upspace);
		pthread_mutex_unlock(&w->mu);
		if (!failed) {
			rc = upload(w, &u);
		} else {
			rc = 0;
			free(u.buf);
			free(u.descs);
		}
		pthread_mutex_lock(&w->mu);
		if (rc < 0 && w->err == 0)
			w->err = rc;
		w->upbusy--;
		pthread_cond_broadcast(&w->cv_idle);
		pthread_cond_broadcast(&w->cv_upspace);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/*
 * Seals a worker's pack and hands it to the uploader (waiting while its
 * queue is full), or puts it here when there is no uploader.  Without
 * mu.
 */
static int
finish_pack(struct cf_bk_writer *w, struct wstate *s, int k)
{
	struct upl u;
	int rc;

	if (s->packer[k] == NULL || bk_packer_count(s->packer[k]) == 0)
		return 0;
	memset(&u, 0, sizeof(u));
	u.cap = bk_packer_cap(s->packer[k]);
	rc = bk_packer_finish(s->packer[k], NULL, &u.buf, &u.len, u.id,
	    u.hdr, &u.descs, &u.n);
	bk_packer_free(s->packer[k]);
	s->packer[k] = NULL;
	if (rc < 0)
		return rc;
	if (u.cap < u.len)
		u.cap = u.len;	/* finish grew it: reserve's new size unknown */
	if (!w->upstarted)
		return upload(w, &u);
	pthread_mutex_lock(&w->mu);
	while (w->uplen == UPQ_MAX && w->err == 0 && !w->stop)
		pthread_cond_wait(&w->cv_upspace, &w->mu);
	/* Stopping (freed without a flush): the pack is abandoned. */
	rc = w->err < 0 ? w->err : w->stop ? -ECANCELED : 0;
	if (rc < 0) {
		pthread_mutex_unlock(&w->mu);
		free(u.buf);
		free(u.descs);
		return rc;
	}
	w->upq[(w->uphead + w->uplen) % UPQ_MAX] = u;
	w->uplen++;
	pthread_cond_signal(&w->cv_up);
	pthread_mutex_unlock(&w->mu);
	return 0;
}

/* Compresses, seals and packs one job; closes the pack when full. */
static int
process(struct cf_bk_writer *w, struct wstate *s, struct job *j)
{
	struct spare sp = { NULL, 0 };
	size_t nl = cf_ks_cipher_nonce_bytes(w->r->keys->cipher);
	size_t need;
	int k = j->type == CF_BK_BLOB_TREE ? PK_TREE : PK_DATA, rc;
	struct bk_packer **pk = &s->packer[k];

	/*
	 * A sealed blob is at most nl + len + tag bytes (stored raw unless
	 * compression makes it shorter); with its descriptor and the
	 * trailer it must fit under the target, else the pack closes
	 * first.  Packs thus stay near CF_BK_PACK_TARGET and their buffers
	 * are reusable.
	 */
	if (*pk != NULL && bk_packer_count(*pk) > 0) {
		need = bk_packer_bytes(*pk) + nl + j->len + BK_TAG +
		    CF_BK_DESC_BYTES * (bk_packer_count(*pk) + 1) +
		    nl + 4 + BK_TAG + 4;
		if (need > CF_BK_PACK_TARGET) {
			rc = finish_pack(w, s, k);
			if (rc < 0)
				return rc;
		}
	}
	if (*pk == NULL) {
		rc = bk_packer_new(pk, w->r->keys, NULL);
		if (rc < 0)
			return rc;
		/* A spare 17 MiB buffer only for data: tree packs are small. */
		pthread_mutex_lock(&w->mu);
		if (k == PK_DATA && w->npool > 0)
			sp = w->pool[--w->npool];
		pthread_mutex_unlock(&w->mu);
		if (sp.buf != NULL)
			bk_packer_adopt(*pk, sp.buf, sp.cap);
	}
	rc = bk_packer_add(*pk, j->type, j->id, j->data, j->len, 1, s->cctx,
	    NULL);
	if (rc < 0)
		return rc;
	if (bk_packer_bytes(*pk) >= CF_BK_PACK_TARGET ||
	    bk_packer_count(*pk) >= CF_BK_PACK_BLOBS_MAX)
		rc = finish_pack(w, s, k);
	return rc;
}

/*
 * The first stage of a file's chunk (j->wf): its id, written into the
 * file's items, and the dedup check.  1 if the chunk is new and must be
 * stored (j->id set), 0 if known or when the writer failed (skip: only
 * the pending count drops), or -errno.  Without mu.
 */
static int
chunk_id(struct cf_bk_writer *w, struct job *j, int failed)
{
	struct cf_bk_blob_loc loc;
	int rc = 0, known = 1;

	if (!failed)
		cf_bk_blob_id(w->r->keys, j->data, j->len, j->id);
	pthread_mutex_lock(&w->mu);
	if (!failed && w->err == 0) {
		memcpy(j->wf->items[j->idx].id, j->id, CF_BK_ID_BYTES);
		w->st.blobs++;
		w->st.bytes += j->len;
		known = cf_bk_index_lookup(w->r->idx, CF_BK_BLOB_DATA, j->id,
		    &loc) == 0;
		if (known)
			kv_note(w, &loc);
		else
			known = pend_check(w, CF_BK_BLOB_DATA, j->id, 1, &rc);
		if (!known && rc == 0) {
			w->st.new_blobs++;
			w->st.new_bytes += j->len;
		}
	}
	assert(j->wf->pending > 0);
	if (--j->wf->pending == 0 && w->idwait > 0)
		pthread_cond_broadcast(&w->cv_ids);
	pthread_mutex_unlock(&w->mu);
	if (rc < 0)
		return rc;
	return !known;
}

static void *
worker(void *arg)
{
	struct wstate *s = arg;
	struct cf_bk_writer *w = s->w;
	struct job j;
	int rc, failed;

	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (w->qlen == 0 && !w->stop)
			pthread_cond_wait(&w->cv_work, &w->mu);
		if (w->stop)
			break;
		j = w->q[w->qhead];
		w->qhead = (w->qhead + 1) % w->qcap;
		w->qlen--;
		w->qbytes -= j.len;
		w->busy++;
		failed = w->err != 0;
		pthread_cond_signal(&w->cv_space);
		pthread_mutex_unlock(&w->mu);
		/* A failed writer only drains: nothing more is stored. */
		rc = j.wf != NULL ? chunk_id(w, &j, failed) : !failed;
		if (rc > 0)
			rc = process(w, s, &j);
		free(j.data);
		pthread_mutex_lock(&w->mu);
		if (rc < 0 && w->err == 0)
			w->err = rc;
		w->busy--;
		if (w->qlen == 0 && w->busy == 0)
			pthread_cond_broadcast(&w->cv_idle);
		if (rc < 0)
			pthread_cond_broadcast(&w->cv_space);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* ---- public ------------------------------------------------------------------ */

int
cf_bk_writer_new(struct cf_bk_writer **out, struct cf_bk_repo *r,
    unsigned nthreads)
{
	struct cf_bk_writer *w;
	size_t i;
	unsigned nup;
	int rc = -ENOMEM;

	*out = NULL;
	if (nthreads > 64)
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (w == NULL)
		return -ENOMEM;
	w->r = r;
	w->st.has_key_versions = 1;
	w->index_ns = INDEX_EVERY_NS;
	w->last_index = cf_mono_ns();
	w->nthreads = nthreads;
	w->nws = nthreads ? nthreads : 1;
	/*
	 * Many jobs (a small file is one chunk): the walker rarely waits
	 * for a slot; QBYTES_MAX bounds the memory.
	 */
	w->qcap = 64 * (size_t)nthreads + 2;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv_work, NULL);
	pthread_cond_init(&w->cv_space, NULL);
	pthread_cond_init(&w->cv_idle, NULL);
	pthread_cond_init(&w->cv_up, NULL);
	pthread_cond_init(&w->cv_upspace, NULL);
	pthread_cond_init(&w->cv_ids, NULL);
	w->ws = calloc(w->nws, sizeof(*w->ws));
	w->q = calloc(w->qcap, sizeof(*w->q));
	if (w->ws == NULL || w->q == NULL)
		goto fail;
	rc = cf_bk_index_new(&w->unindexed);
	if (rc < 0)
		goto fail;
	rc = -ENOMEM;
	for (i = 0; i < w->nws; i++) {
		w->ws[i].w = w;
		w->ws[i].cctx = ZSTD_createCCtx();
		if (w->ws[i].cctx == NULL)
			goto fail;
	}
	for (i = 0; i < nthreads; i++) {
		rc = -pthread_create(&w->ws[i].tid, NULL, worker, &w->ws[i]);
		if (rc < 0)
			goto fail;
		w->ws[i].started = 1;
	}
	/*
	 * One uploader for a local store (a disk takes one stream best);
	 * up to UP_MAX for S3, where each put waits on the network: packs
	 * go up COFFER_S3_CONNECTIONS at once.
	 */
	nup = cf_bk_store_parallel_puts(r->store);
	if (nup > UP_MAX)
		nup = UP_MAX;
	for (i = 0; nthreads > 0 && i < nup; i++) {
		rc = -pthread_create(&w->uptid[i], NULL, uploader, w);
		if (rc < 0)
			goto fail;
		w->upstarted++;
	}
	*out = w;
	return 0;
fail:
	cf_bk_writer_free(w);
	return rc;
}

void
cf_bk_writer_free(struct cf_bk_writer *w)
{
	size_t i;

	if (w == NULL)
		return;
	pthread_mutex_lock(&w->mu);
	w->stop = 1;
	pthread_cond_broadcast(&w->cv_work);
	pthread_cond_broadcast(&w->cv_up);
	pthread_cond_broadcast(&w->cv_upspace);
	pthread_cond_broadcast(&w->cv_space);
	pthread_mutex_unlock(&w->mu);
	for (i = 0; i < w->nws && w->ws != NULL; i++) {
		if (w->ws[i].started)
			pthread_join(w->ws[i].tid, NULL);
		bk_packer_free(w->ws[i].packer[PK_DATA]);
		bk_packer_free(w->ws[i].packer[PK_TREE]);
		ZSTD_freeCCtx(w->ws[i].cctx);
	}
	for (i = 0; i < w->upstarted; i++)
		pthread_join(w->uptid[i], NULL);
	for (i = 0; i < w->uplen; i++) {
		free(w->upq[(w->uphead + i) % UPQ_MAX].buf);
		free(w->upq[(w->uphead + i) % UPQ_MAX].descs);
	}
	for (i = 0; i < w->npool; i++)
		free(w->pool[i].buf);
	free(w->sbuf);
	for (i = 0; i < w->qlen; i++)
		free(w->q[(w->qhead + i) % w->qcap].data);
	free(w->ws);
	free(w->q);
	free(w->pend);
	cf_bk_index_free(w->unindexed);
	pthread_cond_destroy(&w->cv_work);
	pthread_cond_destroy(&w->cv_space);
	pthread_cond_destroy(&w->cv_idle);
	pthread_cond_destroy(&w->cv_up);
	pthread_cond_destroy(&w->cv_upspace);
	pthread_cond_destroy(&w->cv_ids);
	pthread_mutex_destroy(&w->mu);
	free(w);
}

/*
 * Queues a job whose data is the writer's (malloc'd; freed here on
 * failure), waiting while the queue is full; a file's chunk counts as
 * pending until a worker has its id.
 */
static int
enqueue(struct cf_bk_writer *w, struct job *j)
{
	int rc;

	pthread_mutex_lock(&w->mu);
	while ((w->qlen == w->qcap ||
	    (w->qlen > 0 && w->qbytes + j->len > QBYTES_MAX)) && w->err == 0)
		pthread_cond_wait(&w->cv_space, &w->mu);
	rc = w->err;
	if (rc < 0) {
		pthread_mutex_unlock(&w->mu);
		free(j->data);
		return rc;
	}
	if (j->wf != NULL)
		j->wf->pending++;
	w->q[(w->qhead + w->qlen) % w->qcap] = *j;
	w->qlen++;
	w->qbytes += j->len;
	pthread_cond_signal(&w->cv_work);
	pthread_mutex_unlock(&w->mu);
	return 0;
}

/* Records a worker's failure seen on the caller's thread. */
static void
set_err(struct cf_bk_writer *w, int rc)
{
	pthread_mutex_lock(&w->mu);
	if (w->err == 0)
		w->err = rc;
	pthread_mutex_unlock(&w->mu);
}

int
cf_bk_writer_add(struct cf_bk_writer *w, enum cf_bk_blob_type type,
    const void *data, size_t len, unsigned char id[CF_BK_ID_BYTES])
{
	struct cf_bk_blob_loc loc;
	struct job j;
	int rc, known;

	if ((type != CF_BK_BLOB_DATA && type != CF_BK_BLOB_TREE) ||
	    len > CF_BK_BLOB_MAX)
		return -EINVAL;
	cf_bk_blob_id(w->r->keys, data, len, id);
	pthread_mutex_lock(&w->mu);
	rc = w->err;
	if (rc < 0)
		goto unlock;
	w->st.blobs++;
	w->st.bytes += len;
	known = cf_bk_index_lookup(w->r->idx, type, id, &loc) == 0;
	if (known)
		kv_note(w, &loc);
	else
		known = pend_check(w, type, id, 1, &rc);
	if (known || rc < 0)
		goto unlock;
	w->st.new_blobs++;
	w->st.new_bytes += len;
	pthread_mutex_unlock(&w->mu);

	memset(&j, 0, sizeof(j));
	j.type = type;
	memcpy(j.id, id, CF_BK_ID_BYTES);
	j.len = len;
	if (w->nthreads == 0) {
		j.data = (unsigned char *)(uintptr_t)data;
		rc = process(w, &w->ws[0], &j);
		if (rc < 0)
			set_err(w, rc);
		return rc;
	}
	j.data = malloc(len ? len : 1);
	if (j.data == NULL)
		return -ENOMEM;
	memcpy(j.data, data, len);
	return enqueue(w, &j);
unlock:
	pthread_mutex_unlock(&w->mu);
	return rc;
}

/* ---- files: chunks hashed by the workers --------------------------------- */

int
cf_bk_writer_file_new(struct cf_bk_writer *w, struct cf_bk_wfile **out)
{
	(void)w;
	*out = calloc(1, sizeof(**out));
	return *out != NULL ? 0 : -ENOMEM;
}

/*
 * Room for one more item.  The workers write ids into wf->items while
 * chunks are pending, so the array moves only under mu.
 */
static int
file_grow(struct cf_bk_writer *w, struct cf_bk_wfile *wf)
{
	struct cf_bk_item *nv;
	size_t nc;

	if (wf->n < wf->cap)
		return 0;
	nc = wf->cap ? wf->cap * 2 : 16;
	pthread_mutex_lock(&w->mu);
	nv = realloc(wf->items, nc * sizeof(*nv));
	if (nv != NULL) {
		wf->items = nv;
		wf->cap = nc;
	}
	pthread_mutex_unlock(&w->mu);
	return nv != NULL ? 0 : -ENOMEM;
}

int
cf_bk_writer_file_hole(struct cf_bk_writer *w, struct cf_bk_wfile *wf,
    uint64_t len)
{
	int rc;

	if (len == 0)
		return 0;
	/* Only the caller writes hole lengths: no lock needed to read. */
	if (wf->n > 0 && wf->items[wf->n - 1].hole > 0) {
		wf->items[wf->n - 1].hole += len;
		return 0;
	}
	rc = file_grow(w, wf);
	if (rc < 0)
		return rc;
	memset(wf->items[wf->n].id, 0, CF_BK_ID_BYTES);
	wf->items[wf->n].hole = len;
	wf->n++;
	return 0;
}

/* One chunk of a file: queued for a worker, or stored here (0 threads). */
static int
file_chunk(struct cf_bk_writer *w, struct cf_bk_wfile *wf,
    const unsigned char *data, size_t len)
{
	struct job j;
	int rc;

	rc = file_grow(w, wf);
	if (rc < 0)
		return rc;
	memset(&wf->items[wf->n], 0, sizeof(wf->items[wf->n]));
	memset(&j, 0, sizeof(j));
	j.type = CF_BK_BLOB_DATA;
	j.len = len;
	j.wf = wf;
	j.idx = wf->n;
	if (w->nthreads == 0) {
		j.data = (unsigned char *)(uintptr_t)data;
		wf->pending++;
		wf->n++;
		rc = chunk_id(w, &j, 0);
		if (rc > 0)
			rc = process(w, &w->ws[0], &j);
		if (rc < 0)
			set_err(w, rc);
		return rc < 0 ? rc : 0;
	}
	j.data = malloc(len ? len : 1);
	if (j.data == NULL)
		return -ENOMEM;
	memcpy(j.data, data, len);
	rc = enqueue(w, &j);
	if (rc == 0)
		wf->n++;
	return rc;
}

/*
 * Reads a stream to its end through rd, cuts it with the repo's chunker
 * and passes every chunk to chunk(w, ctx, data, len); *size is the
 * stream's length.  The chunker wants max bytes in one piece ahead of a
 * cut, so the unconsumed tail (up to max) is moved to the front when the
 * buffer has less than max left; the buffer is 4 * max so that this
 * moves about a third of what is read (at 2 * max it moved nearly as
 * much as was read: 2.4 % of a full backup's CPU).
 */
static int
stream_cut(struct cf_bk_writer *w,
    int (*rd)(void *arg, unsigned char *buf, size_t cap, size_t *got),
    void *arg, int (*chunk)(struct cf_bk_writer *, void *,
    const unsigned char *, size_t), void *ctx, uint64_t *size)
{
	const struct cf_bk_chunker *ch = w->r->chunker;
	size_t max = cf_bk_chunker_max(ch), cap = 4 * max, start = 0, end = 0;
	size_t got, cut;
	unsigned char *buf;
	uint64_t total = 0;
	int eof = 0, rc = 0;

	*size = 0;
	if (w->sbuf == NULL) {
		/* Kept for the writer's life: one allocation, not per file. */
		w->sbuf = malloc(cap);
		if (w->sbuf == NULL)
			return -ENOMEM;
		w->scap = cap;
	}
	buf = w->sbuf;
	cap = w->scap;
	for (;;) {
		/* Keep at least max bytes ahead of start unless at the end. */
		while (!eof && end - start < max) {
			if (cap - end < max) {
				memmove(buf, buf + start, end - start);
				end -= start;
				start = 0;
			}
			rc = rd(arg, buf + end, cap - end, &got);
			if (rc < 0)
				return rc;
			if (got == 0)
				eof = 1;
			end += got;
			total += got;
		}
		if (end == start)
			break;
		cut = cf_bk_chunker_cut(ch, buf + start, end - start);
		rc = chunk(w, ctx, buf + start, cut);
		if (rc < 0)
			return rc;
		start += cut;
	}
	*size = total;
	return 0;
}

static int
wfile_chunk(struct cf_bk_writer *w, void *ctx, const unsigned char *data,
    size_t len)
{
	return file_chunk(w, ctx, data, len);
}

int
cf_bk_writer_file_add(struct cf_bk_writer *w, struct cf_bk_wfile *wf,
    int (*rd)(void *arg, unsigned char *buf, size_t cap, size_t *got),
    void *arg, uint64_t *size)
{
	return stream_cut(w, rd, arg, wfile_chunk, wf, size);
}

/* Waits until the workers have every id of wf.  With mu. */
static void
file_wait(struct cf_bk_writer *w, struct cf_bk_wfile *wf)
{
	w->idwait++;
	while (wf->pending > 0)
		pthread_cond_wait(&w->cv_ids, &w->mu);
	w->idwait--;
}

int
cf_bk_writer_file_take(struct cf_bk_writer *w, struct cf_bk_wfile *wf,
    struct cf_bk_item **items, size_t *nitems)
{
	int rc;

	*items = NULL;
	*nitems = 0;
	pthread_mutex_lock(&w->mu);
	file_wait(w, wf);
	rc = w->err;
	pthread_mutex_unlock(&w->mu);
	if (rc == 0 && wf->n > 0) {
		*items = wf->items;
		*nitems = wf->n;
		wf->items = NULL;
	}
	free(wf->items);
	free(wf);
	return rc;
}

void
cf_bk_writer_file_free(struct cf_bk_writer *w, struct cf_bk_wfile *wf)
{
	if (wf == NULL)
		return;
	pthread_mutex_lock(&w->mu);
	file_wait(w, wf);
	pthread_mutex_unlock(&w->mu);
	free(wf->items);
	free(wf);
}

/* A chunk of add_stream: hashed here, appended to the list in ctx. */
struct slist {
	struct cf_bk_item *v;
	size_t n, cap;
};

static int
slist_chunk(struct cf_bk_writer *w, void *ctx, const unsigned char *data,
    size_t len)
{
	struct slist *l = ctx;
	struct cf_bk_item *nv;
	size_t nc;
	int rc;

	if (l->n == l->cap) {
		nc = l->cap ? l->cap * 2 : 16;
		nv = realloc(l->v, nc * sizeof(*nv));
		if (nv == NULL)
			return -ENOMEM;
		l->v = nv;
		l->cap = nc;
	}
	l->v[l->n].hole = 0;
	rc = cf_bk_writer_add(w, CF_BK_BLOB_DATA, data, len, l->v[l->n].id);
	if (rc == 0)
		l->n++;
	return rc;
}

/*
 * One stream whose items are wanted at once (a tar entry, --stdin): the
 * ids are computed here, as the caller would otherwise wait for the
 * workers to reach its chunks behind everything queued.
 */
int
cf_bk_writer_add_stream(struct cf_bk_writer *w,
    int (*rd)(void *arg, unsigned char *buf, size_t cap, size_t *got),
    void *arg, struct cf_bk_item **items, size_t *nitems, uint64_t *size)
{
	struct slist l = { NULL, 0, 0 };
	int rc;

	*items = NULL;
	*nitems = 0;
	rc = stream_cut(w, rd, arg, slist_chunk, &l, size);
	if (rc < 0) {
		free(l.v);
		return rc;
	}
	*items = l.v;
	*nitems = l.n;
	return 0;
}

int
cf_bk_writer_add_tree(struct cf_bk_writer *w, const struct cf_bk_tree *t,
    unsigned char id[CF_BK_ID_BYTES])
{
	unsigned char *buf;
	size_t len;
	int rc;

	memset(id, 0, CF_BK_ID_BYTES);
	rc = cf_bk_tree_encode(t, &buf, &len);
	if (rc < 0)
		return rc;
	rc = cf_bk_writer_add(w, CF_BK_BLOB_TREE, buf, len, id);
	free(buf);
	return rc;
}

int
cf_bk_writer_tree_load(struct cf_bk_writer *w,
    const unsigned char id[CF_BK_ID_BYTES], struct cf_bk_tree **out)
{
	struct cf_bk_blob_loc loc;
	unsigned char *buf;
	size_t len;
	int rc;

	*out = NULL;
	pthread_mutex_lock(&w->mu);
	rc = cf_bk_index_lookup(w->r->idx, CF_BK_BLOB_TREE, id, &loc);
	if (rc == 0)
		kv_note(w, &loc);
	pthread_mutex_unlock(&w->mu);
	if (rc < 0)
		return rc;
	/* loc is a copy; the repo's AEAD cache is this thread's alone. */
	rc = bk_repo_blob_load_loc(w->r, &loc, &buf, &len);
	if (rc < 0)
		return rc;
	rc = cf_bk_tree_decode(out, buf, len);
	free(buf);
	return rc;
}

int
cf_bk_writer_data_blob(struct cf_bk_writer *w,
    const unsigned char id[CF_BK_ID_BYTES], uint64_t *ulen)
{
	struct cf_bk_blob_loc loc;
	int rc;

	*ulen = 0;
	pthread_mutex_lock(&w->mu);
	rc = cf_bk_index_lookup(w->r->idx, CF_BK_BLOB_DATA, id, &loc);
	if (rc == 0)
		kv_note(w, &loc);
	pthread_mutex_unlock(&w->mu);
	if (rc < 0)
		return 0;
	*ulen = loc.desc.ulen;
	return 1;
}

void
cf_bk_writer_count_reused(struct cf_bk_writer *w, uint64_t blobs,
    uint64_t bytes)
{
	pthread_mutex_lock(&w->mu);
	w->st.blobs += blobs;
	w->st.bytes += bytes;
	pthread_mutex_unlock(&w->mu);
}

int
cf_bk_writer_flush(struct cf_bk_writer *w)
{
	size_t i;
	int rc;

	pthread_mutex_lock(&w->mu);
	while ((w->qlen > 0 || w->busy > 0) && w->err == 0)
		pthread_cond_wait(&w->cv_idle, &w->mu);
	rc = w->err;
	pthread_mutex_unlock(&w->mu);
	if (rc < 0)
		return rc;
	/* Workers are idle: their packs may be finished from here. */
	for (i = 0; i < w->nws; i++) {
		rc = finish_pack(w, &w->ws[i], PK_DATA);
		if (rc == 0)
			rc = finish_pack(w, &w->ws[i], PK_TREE);
		if (rc < 0)
			goto out;
	}
	/* Every pack is put before the index that names them. */
	pthread_mutex_lock(&w->mu);
	while ((w->uplen > 0 || w->upbusy > 0) && w->err == 0)
		pthread_cond_wait(&w->cv_idle, &w->mu);
	rc = w->err;
	pthread_mutex_unlock(&w->mu);
	if (rc < 0)
		goto out;
	rc = write_index(w);
out:
	pthread_mutex_lock(&w->mu);
	if (rc < 0 && w->err == 0)
		w->err = rc;
	rc = w->err;
	pthread_mutex_unlock(&w->mu);
	return rc;
}

void
cf_bk_writer_stats(const struct cf_bk_writer *w, struct cf_bk_writer_stats *st)
{
	struct cf_bk_snapshot tmp;
	uint32_t own[2];

	pthread_mutex_lock((pthread_mutex_t *)(uintptr_t)&w->mu);
	*st = w->st;
	pthread_mutex_unlock((pthread_mutex_t *)(uintptr_t)&w->mu);
	/*
	 * The packs this writer puts (and the snapshot) are under the write
	 * version; the id and chunker keys under the creation version.
	 */
	own[0] = cf_bk_keys_write_version(w->r->keys);
	own[1] = w->r->cfg_version;
	memset(&tmp, 0, sizeof(tmp));
	tmp.has_key_versions = st->has_key_versions;
	tmp.nkey_versions = 0;
	if (st->has_key_versions &&
	    (cf_bk_snapshot_add_key_versions(&tmp, st->key_versions,
	    st->nkey_versions) < 0 ||
	    cf_bk_snapshot_add_key_versions(&tmp, own, 2) < 0))
		tmp.has_key_versions = 0;
	st->has_key_versions = tmp.has_key_versions;
	st->nkey_versions = tmp.has_key_versions ? tmp.nkey_versions : 0;
	memcpy(st->key_versions, tmp.key_versions, sizeof(st->key_versions));
}
