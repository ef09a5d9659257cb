/*
 * bk_repo.c - a repository: init and open through the config object,
 * the in-memory index loaded from every index object, blob, tree and
 * snapshot loading and saving, and lock objects
 * (docs/format/repository.md: Config, Index, Snapshots, Locks).
 *
 * Reading trusts nothing: every object is checked against its storage
 * id ([BK-LAY-3]) and opened under the tenant's keys before use.  It
 * does not write packs (bk_writer.c) or walk trees (the CLI's job).
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "bk_int.h"

#define LOCK_STALE_SECONDS (30 * 60)

static int
chunker_from_cfg(struct cf_bk_repo *r)
{
	return cf_bk_chunker_new(&r->chunker, r->keys, r->cfg.min,
	    r->cfg.avg, r->cfg.max);
}

static int
repo_new(struct cf_bk_repo **out, struct cf_bk_store *store,
    const struct cf_bk_keys *keys)
{
	struct cf_bk_repo *r;
	int rc;

	*out = NULL;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	rc = cf_bk_index_new(&r->idx);
	if (rc < 0) {
		free(r);
		return rc;
	}
	r->store = store;
	r->keys = keys;
	*out = r;
	return 0;
}

static void window_free(struct bk_window *w);
static int store_remote(struct cf_bk_repo *r);
static void pcache_free(struct bk_pcache *pc);

/* Frees r but not its store (init/open failures hand it back). */
static void
repo_free_keep_store(struct cf_bk_repo *r)
{
	if (r == NULL)
		return;
	pcache_free(r->pc);
	cf_bk_chunker_free(r->chunker);
	cf_bk_index_free(r->idx);
	cf_ks_aead_free(r->cache_aead);
	window_free(r->win);
	cf_bk_keys_free(r->own_keys);
	bk_config_clear(&r->cfg);
	free(r);
}

void
cf_bk_repo_free(struct cf_bk_repo *r)
{
	if (r == NULL)
		return;
	cf_bk_store_free(r->store);
	repo_free_keep_store(r);
}

int
cf_bk_repo_init(struct cf_bk_repo **out, struct cf_bk_store *store,
    const struct cf_bk_keys *keys, const unsigned char tenant[CF_KS_ID_BYTES])
{
	struct cf_bk_repo *r = NULL;
	unsigned char *obj = NULL;
	char *json = NULL;
	size_t jlen = 0, olen;
	int rc;

	*out = NULL;
	rc = repo_new(&r, store, keys);
	if (rc < 0)
		return rc;
	randombytes_buf(r->cfg.repo_id, sizeof(r->cfg.repo_id));
	memcpy(r->cfg.tenant, tenant, CF_KS_ID_BYTES);
	r->cfg.created = (int64_t)cf_ks_now();
	r->cfg.min = CF_BK_CHUNK_MIN;
	r->cfg.avg = CF_BK_CHUNK_AVG;
	r->cfg.max = CF_BK_CHUNK_MAX;
	rc = bk_config_encode(&r->cfg, &json, &jlen);
	if (rc < 0)
		goto out;
	rc = cf_bk_object_seal(keys, CF_BK_KIND_CONFIG,
	    (const unsigned char *)json, jlen, &obj, &olen);
	if (rc < 0)
		goto out;
	rc = cf_bk_store_put(store, CF_BK_KIND_CONFIG, "config", obj, olen, 1);
	if (rc < 0)
		goto out;
	cf_bk_storage_id(obj, olen, r->config_id);
	r->cfg_version = bk_rd32(obj + 12);
	rc = chunker_from_cfg(r);
	if (rc < 0)
		goto out;
	*out = r;
	r = NULL;
out:
	bk_config_text_free(json, jlen);
	free(obj);
	repo_free_keep_store(r);
	return rc;
}

int
cf_bk_repo_open(struct cf_bk_repo **out, struct cf_bk_store *store,
    const struct cf_bk_keys *keys, const unsigned char tenant[CF_KS_ID_BYTES])
{
	struct cf_bk_repo *r = NULL;
	unsigned char *obj = NULL, *plain = NULL;
	size_t olen, plen;
	int rc;

	*out = NULL;
	rc = repo_new(&r, store, keys);
	if (rc < 0)
		return rc;
	rc = cf_bk_store_get(store, CF_BK_KIND_CONFIG, "config",
	    CF_BK_OBJECT_MAX, &obj, &olen);
	if (rc == -EFBIG)
		rc = -EPROTO;
	if (rc < 0)
		goto out;
	cf_bk_storage_id(obj, olen, r->config_id);
	rc = cf_bk_object_open(keys, CF_BK_KIND_CONFIG, obj, olen, &plain,
	    &plen);
	if (rc < 0)
		goto out;
	r->cfg_version = bk_rd32(obj + 12);	/* opened: a valid header */
	rc = bk_config_decode(&r->cfg, (const char *)plain, plen);
	if (rc < 0)
		goto out;
	rc = -EKEYREJECTED;
	if (sodium_memcmp(r->cfg.tenant, tenant, CF_KS_ID_BYTES) != 0)
		goto out;
	if (r->cfg.chunk != NULL) {
		/*
		 * [BK-CFG-2] A re-keyed config carries C, derived from an
		 * older version than its own: I, G and X come from it, not
		 * from the config version.  The keys are the caller's, made
		 * for this repository and not shared yet.
		 */
		rc = -EPROTO;
		if (r->cfg.chunk_version >= r->cfg_version)
			goto out;
		rc = bk_keys_set_chunk((struct cf_bk_keys *)(uintptr_t)keys,
		    r->cfg.chunk, r->cfg.chunk_version);
		if (rc < 0)
			goto out;
	}
	rc = chunker_from_cfg(r);
	if (rc < 0)
		goto out;
	*out = r;
	r = NULL;
out:
	free(obj);
	if (plain != NULL)
		sodium_memzero(plain, plen);
	free(plain);
	repo_free_keep_store(r);
	return rc;
}

int
bk_config_key_version(const unsigned char *obj, size_t len, uint32_t *version)
{
	*version = 0;
	/* Magic, version 1, kind config: [BK-OBJ-1..3, 5]. */
	if (len < 32 || memcmp(obj, BK_MAGIC, 8) != 0 ||
	    obj[8] != 1 || obj[9] != CF_BK_KIND_CONFIG ||
	    bk_rd32(obj + 12) == 0)
		return -EPROTO;
	*version = bk_rd32(obj + 12);
	return 0;
}

int
cf_bk_repo_key_version(const char *url, uint32_t *version)
{
	struct cf_bk_store *store = NULL;
	unsigned char *obj = NULL;
	size_t len = 0;
	int rc;

	*version = 0;
	rc = cf_bk_store_open_url(&store, url, 0);
	if (rc < 0)
		return rc;
	rc = cf_bk_store_get(store, CF_BK_KIND_CONFIG, "config",
	    CF_BK_OBJECT_MAX, &obj, &len);
	if (rc == -EFBIG)
		rc = -EPROTO;
	if (rc < 0)
		goto out;
	rc = bk_config_key_version(obj, len, version);
out:
	free(obj);
	cf_bk_store_free(store);
	return rc;
}

struct vnames {
	char **v;
	size_t n, cap;
};

static int
collect_named(void *arg, const char *name, uint64_t size)
{
	struct vnames *ns = arg;
	char **nv;

	if (size < CF_BK_HEADER_BYTES)
		return 0;
	if (ns->n == ns->cap) {
		ns->cap = ns->cap ? ns->cap * 2 : 64;
		nv = realloc(ns->v, ns->cap * sizeof(*nv));
		if (nv == NULL)
			return -ENOMEM;
		ns->v = nv;
	}
	ns->v[ns->n] = strdup(name);
	if (ns->v[ns->n] == NULL)
		return -ENOMEM;
	ns->n++;
	return 0;
}

/*
 * An index or lock object under the index key X (version 2, keying 2):
 * X derives from C, not from the header's version, which names the
 * config version of its time.  It needs that version only as long as
 * the config derives C from it, which the config check covers
 * ([BK-CFG-2]).
 */
static int
x_keyed(const unsigned char *hdr)
{
	return hdr[8] == BK_VERSION_WO && bk_keying(hdr) == BK_KEYING_INDEX;
}

/* Counts the objects of store under version by their headers. */
static int
count_version_store(struct cf_bk_store *store, uint32_t version,
    uint64_t n[4])
{
	static const enum cf_bk_kind kinds[] = { CF_BK_KIND_PACK,
		CF_BK_KIND_INDEX, CF_BK_KIND_SNAPSHOT, CF_BK_KIND_LOCK };
	struct vnames ns = { NULL, 0, 0 };
	unsigned char hdr[CF_BK_HEADER_BYTES];
	size_t k, i;
	int rc = 0;

	memset(n, 0, 4 * sizeof(n[0]));
	for (k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		rc = cf_bk_store_list(store, kinds[k], collect_named, &ns);
		for (i = 0; rc == 0 && i < ns.n; i++) {
			rc = cf_bk_store_get_range(store, kinds[k], ns.v[i], 0,
			    sizeof(hdr), hdr);
			if (rc == -ENOENT) {
				rc = 0;		/* deleted meanwhile */
				continue;
			}
			if (rc == 0 && memcmp(hdr, BK_MAGIC, 8) == 0 &&
			    bk_rd32(hdr + 12) == version && !x_keyed(hdr))
				n[k]++;
		}
		for (i = 0; i < ns.n; i++)
			free(ns.v[i]);
		ns.n = 0;
		if (rc < 0)
			break;
	}
	free(ns.v);
	return rc;
}

int
cf_bk_repo_count_version(const char *url, uint32_t version, uint64_t n[4])
{
	struct cf_bk_store *store = NULL;
	int rc;

	memset(n, 0, 4 * sizeof(n[0]));
	rc = cf_bk_store_open_url(&store, url, 0);
	if (rc < 0)
		return rc;
	rc = count_version_store(store, version, n);
	cf_bk_store_free(store);
	return rc;
}

/*
 * [BK-SNAP-3] 1 if snapshot id's record may name v only for the config
 * it was written under: the config carries C derived from an older
 * version than v ([BK-CFG-2]), so v was at most a config version, and
 * the snapshot object itself is not under v.  Its packs answer through
 * the index check, which retire-key always makes.  0 otherwise.
 */
static int
config_reason_only(struct cf_bk_repo *r, const unsigned char *id, uint32_t v)
{
	unsigned char hdr[CF_BK_HEADER_BYTES];
	char hex[65];
	int rc;

	if (r->cfg.chunk == NULL || v < r->cfg.chunk_version ||
	    v >= r->cfg_version)
		return 0;
	cf_bk_id_hex(id, hex);
	rc = cf_bk_store_get_range(r->store, CF_BK_KIND_SNAPSHOT, hex, 0,
	    sizeof(hdr), hdr);
	if (rc < 0)
		return rc;
	return bk_rd32(hdr + 12) != v;
}

int
cf_bk_repo_version_use(struct cf_bk_repo *r, uint32_t v,
    struct cf_bk_version_use *u)
{
	unsigned char (*ids)[CF_BK_ID_BYTES] = NULL;
	struct cf_bk_snapshot *s = NULL;
	size_t n = 0, i;
	int rc;

	memset(u, 0, sizeof(*u));
	rc = cf_bk_repo_snapshot_list(r, &ids, &n);
	if (rc < 0)
		return rc;
	u->snapshots = n;
	for (i = 0; i < n; i++) {
		rc = cf_bk_repo_snapshot_load(r, ids[i], &s);
		if (rc < 0) {
			/* What it needs is unknown: the caller must refuse. */
			memcpy(u->bad_id, ids[i], CF_BK_ID_BYTES);
			goto out;
		}
		if (!s->has_key_versions) {
			u->unknown++;
		} else if (cf_bk_snapshot_needs_version(s, v)) {
			rc = config_reason_only(r, ids[i], v);
			if (rc < 0)
				goto out;
			if (rc == 1) {
				u->discounted++;
				cf_bk_snapshot_free(s);
				s = NULL;
				continue;
			}
			if (u->needs < CF_BK_VERSION_NAMED) {
				memcpy(u->need_id[u->needs], ids[i],
				    CF_BK_ID_BYTES);
				u->need_time[u->needs] = s->time;
			}
			u->needs++;
		}
		cf_bk_snapshot_free(s);
		s = NULL;
	}
	/* Snapshots without a record: only every header can tell. */
	if (u->unknown > 0) {
		rc = count_version_store(r->store, v, u->scan);
		if (rc < 0)
			goto out;
	}
	rc = cf_bk_repo_indexed_version(r, v, u->indexed);
out:
	cf_bk_snapshot_free(s);
	free(ids);
	return rc;
}

uint32_t
cf_bk_repo_config_version(const struct cf_bk_repo *r)
{
	return r->cfg_version;
}

int
cf_bk_repo_indexed_version(struct cf_bk_repo *r, uint32_t v, uint64_t n[2])
{
	struct vnames ns = { NULL, 0, 0 };
	unsigned char hdr[CF_BK_HEADER_BYTES];
	const unsigned char *ph;
	const struct cf_bk_desc *d;
	const uint32_t *off;
	uint64_t size;
	size_t i, nb;
	int rc;

	n[0] = n[1] = 0;
	for (i = 0; i < cf_bk_index_packs(r->idx); i++) {
		bk_index_pack_info(r->idx, i, &ph, &d, &off, &nb, &size);
		if (bk_rd32(ph + 12) == v)
			n[0]++;
	}
	/*
	 * An index object under v (one written before [BK-WO-4] sealed
	 * them all under the config version) would be unreadable without
	 * v, and its packs orphans that a prune deletes.
	 */
	rc = cf_bk_store_list(r->store, CF_BK_KIND_INDEX, collect_named, &ns);
	for (i = 0; rc == 0 && i < ns.n; i++) {
		rc = cf_bk_store_get_range(r->store, CF_BK_KIND_INDEX, ns.v[i],
		    0, sizeof(hdr), hdr);
		if (rc == -ENOENT) {
			rc = 0;		/* deleted meanwhile (a prune) */
			continue;
		}
		if (rc == 0 && memcmp(hdr, BK_MAGIC, 8) == 0 &&
		    bk_rd32(hdr + 12) == v && !x_keyed(hdr))
			n[1]++;
	}
	for (i = 0; i < ns.n; i++)
		free(ns.v[i]);
	free(ns.v);
	return rc;
}

int
cf_bk_repo_open_url(struct cf_bk_repo **out, const char *url,
    const struct cf_secbuf *root, uint32_t key_version,
    enum cf_ks_cipher cipher, const unsigned char tenant[CF_KS_ID_BYTES],
    int flags)
{
	struct cf_bk_keys *keys = NULL;
	int rc;

	*out = NULL;
	rc = cf_bk_keys_new(&keys, root, key_version, cipher);
	if (rc < 0)
		return rc;
	return cf_bk_repo_open_url_keys(out, url, keys, tenant, flags);
}

/*
 * Opens the repository in store (taken over, also on failure), or in a
 * store opened for url if store is NULL.
 */
static int
open_store_keys(struct cf_bk_repo **out, struct cf_bk_store *store,
    const char *url, struct cf_bk_keys *keys,
    const unsigned char tenant[CF_KS_ID_BYTES], int flags)
{
	struct cf_bk_repo *r = NULL;
	int rc;

	*out = NULL;
	rc = 0;
	if (store == NULL)
		rc = cf_bk_store_open_url(&store, url,
		    (flags & CF_BK_REPO_CREATE) ? CF_BK_STORE_CREATE : 0);
	if (rc < 0)
		goto out;
	rc = cf_bk_repo_open(&r, store, keys, tenant);
	if (rc == -ENOENT && (flags & CF_BK_REPO_CREATE))
		rc = cf_bk_repo_init(&r, store, keys, tenant);
	if (rc < 0)
		goto out;
	store = NULL;
	r->own_keys = keys;
	keys = NULL;
	rc = cf_bk_repo_index_load(r, NULL);
	if (rc < 0)
		goto out;
	*out = r;
	r = NULL;
out:
	cf_bk_repo_free(r);
	cf_bk_store_free(store);
	cf_bk_keys_free(keys);
	return rc;
}

int
cf_bk_repo_open_url_keys(struct cf_bk_repo **out, const char *url,
    struct cf_bk_keys *keys, const unsigned char tenant[CF_KS_ID_BYTES],
    int flags)
{
	return open_store_keys(out, NULL, url, keys, tenant, flags);
}

int
cf_bk_repo_open_prefetched(struct cf_bk_repo **out, struct cf_bk_prefetch *pf,
    struct cf_bk_keys *keys, const unsigned char tenant[CF_KS_ID_BYTES],
    int flags)
{
	struct cf_bk_store *st;
	int rc;

	/*
	 * The prefetching store was opened without CF_BK_STORE_CREATE:
	 * where it found no bucket, directory or config, this opens its
	 * own.
	 */
	st = bk_prefetch_take_store(pf, flags);
	rc = open_store_keys(out, st, bk_prefetch_url(pf), keys, tenant,
	    flags);
	if (rc == 0 && st != NULL)
		(*out)->prefetched = 1;
	return rc;
}

/* ---- write-only ---------------------------------------------------------------- */

int
cf_bk_wcred_export(const struct cf_bk_repo *r, struct cf_secbuf **out)
{
	struct cf_bk_wcred_info in;

	*out = NULL;
	if (r->keys->writer)
		return -EINVAL;
	memset(&in, 0, sizeof(in));
	memcpy(in.tenant, r->cfg.tenant, CF_KS_ID_BYTES);
	memcpy(in.config_id, r->config_id, CF_BK_ID_BYTES);
	in.min = (uint32_t)r->cfg.min;
	in.avg = (uint32_t)r->cfg.avg;
	in.max = (uint32_t)r->cfg.max;
	return bk_wcred_encode(r->keys, &in, out);
}

int
cf_bk_repo_open_writer(struct cf_bk_repo **out, const char *url,
    const unsigned char *cred, size_t len)
{
	struct cf_bk_wcred_info info;
	struct cf_bk_keys *keys = NULL;
	struct cf_bk_store *store = NULL;
	struct cf_bk_repo *r = NULL;
	unsigned char *obj = NULL, id[CF_BK_ID_BYTES];
	size_t olen;
	int rc;

	*out = NULL;
	rc = cf_bk_wcred_parse(cred, len, &info, &keys);
	if (rc < 0)
		return rc;
	rc = cf_bk_store_open_url(&store, url, 0);
	if (rc < 0)
		goto out;
	rc = repo_new(&r, store, keys);
	if (rc < 0)
		goto out;
	store = NULL;	/* r owns it */
	r->own_keys = keys;
	keys = NULL;
	rc = cf_bk_store_get(r->store, CF_BK_KIND_CONFIG, "config",
	    CF_BK_OBJECT_MAX, &obj, &olen);
	if (rc == -EFBIG)
		rc = -EPROTO;
	if (rc < 0)
		goto out;
	/*
	 * [BK-WO-5] The config is not decrypted: its bytes must be those
	 * the credential was made from (a full-key holder opened them).
	 */
	cf_bk_storage_id(obj, olen, id);
	rc = -EKEYREJECTED;
	if (sodium_memcmp(id, info.config_id, CF_BK_ID_BYTES) != 0)
		goto out;
	memcpy(r->config_id, id, CF_BK_ID_BYTES);
	/* The credential's keys are the config version's ([BK-WO-5]). */
	r->cfg_version = cf_bk_keys_version(r->keys);
	memcpy(r->cfg.tenant, info.tenant, CF_KS_ID_BYTES);
	r->cfg.min = info.min;
	r->cfg.avg = info.avg;
	r->cfg.max = info.max;
	rc = chunker_from_cfg(r);
	if (rc < 0)
		goto out;
	rc = cf_bk_repo_index_load(r, NULL);
	if (rc < 0)
		goto out;
	*out = r;
	r = NULL;
out:
	free(obj);
	cf_bk_repo_free(r);
	cf_bk_store_free(store);
	cf_bk_keys_free(keys);
	return rc;
}

struct cf_bk_store *
cf_bk_repo_store(struct cf_bk_repo *r)
{
	return r->store;
}

const struct cf_bk_keys *
cf_bk_repo_keys(const struct cf_bk_repo *r)
{
	return r->keys;
}

const struct cf_bk_chunker *
cf_bk_repo_chunker(const struct cf_bk_repo *r)
{
	return r->chunker;
}

const struct cf_bk_index *
cf_bk_repo_index(const struct cf_bk_repo *r)
{
	return r->idx;
}

const unsigned char *
cf_bk_repo_id(const struct cf_bk_repo *r)
{
	return r->cfg.repo_id;
}

/* ---- sealed objects by storage id ----------------------------------------- */

int
bk_repo_put_object(struct cf_bk_repo *r, enum cf_bk_kind kind,
    const unsigned char *plain, size_t len, unsigned char id[CF_BK_ID_BYTES])
{
	unsigned char *obj = NULL;
	char name[65];
	size_t olen;
	int rc;

	/*
	 * [BK-WO-4] Index and lock objects are sealed with the index key,
	 * by every writer: a write-only agent reads them (dedup, locks).
	 */
	if (kind == CF_BK_KIND_INDEX || kind == CF_BK_KIND_LOCK)
		rc = bk_object_seal_x(r->keys, kind, plain, len, NULL, NULL,
		    1, &obj, &olen);
	else
		rc = cf_bk_object_seal(r->keys, kind, plain, len, &obj, &olen);
	if (rc < 0)
		return rc;
	cf_bk_storage_id(obj, olen, id);
	bk_name(id, name);
	rc = cf_bk_store_put(r->store, kind, name, obj, olen, 0);
	free(obj);
	return rc;
}

/* Checks the storage id of, and opens, the object obj read as name. */
static int
open_object(struct cf_bk_repo *r, enum cf_bk_kind kind, const char *name,
    unsigned char *obj, size_t olen, unsigned char **plain, size_t *plen)
{
	unsigned char id[CF_BK_ID_BYTES], want[CF_BK_ID_BYTES];
	int rc;

	*plain = NULL;
	*plen = 0;
	rc = cf_bk_id_parse(name, want);
	if (rc < 0)
		return rc;
	cf_bk_storage_id(obj, olen, id);
	if (sodium_memcmp(id, want, CF_BK_ID_BYTES) != 0)
		return -EBADMSG;	/* [BK-LAY-3] */
	return cf_bk_object_open(r->keys, kind, obj, olen, plain, plen);
}

/* Gets, checks the storage id of, and opens one object. */
static int
get_object(struct cf_bk_repo *r, enum cf_bk_kind kind, const char *name,
    unsigned char **plain, size_t *plen)
{
	unsigned char *obj = NULL, want[CF_BK_ID_BYTES];
	size_t olen;
	int rc;

	*plain = NULL;
	*plen = 0;
	rc = cf_bk_id_parse(name, want);
	if (rc < 0)
		return rc;
	rc = cf_bk_store_get(r->store, kind, name, CF_BK_OBJECT_MAX, &obj,
	    &olen);
	if (rc == -EFBIG)
		rc = -EPROTO;
	if (rc < 0)
		return rc;
	rc = open_object(r, kind, name, obj, olen, plain, plen);
	free(obj);
	return rc;
}

/* ---- index ------------------------------------------------------------------ */

struct names {
	char (*v)[65];
	size_t n, cap;
};

static int
name_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* A hash of the set of names (sorted in place). */
static void
names_hash(struct names *ns, unsigned char h[CF_BK_ID_BYTES])
{
	if (ns->n > 1)
		qsort(ns->v, ns->n, sizeof(ns->v[0]), name_cmp);
	crypto_generichash(h, CF_BK_ID_BYTES, ns->n > 0 ?
	    (const unsigned char *)ns->v : (const unsigned char *)"",
	    ns->n * sizeof(ns->v[0]), NULL, 0);
}

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

/*
 * Index objects fetched at once from a remote store: one GET each, and
 * a repository has one index per backup, so a year of daily backups
 * read one after the other is 365 round trips before a restore starts.
 * Fetched IDX_GETS at a time, in batches of IDX_BATCH (their bytes are
 * held until decoded, in order, on the calling thread).
 */
#define IDX_GETS 8
#define IDX_BATCH 64

struct idx_fetch {
	struct cf_bk_repo *r;
	char (*names)[65];	/* this batch */
	unsigned char **obj;
	size_t *olen;
	int *rc;
	size_t n, next;		/* next under m */
	pthread_mutex_t m;
};

static void *
idx_fetcher(void *arg)
{
	struct idx_fetch *f = arg;
	size_t i;
	int rc;

	for (;;) {
		pthread_mutex_lock(&f->m);
		i = f->next < f->n ? f->next++ : f->n;
		pthread_mutex_unlock(&f->m);
		if (i == f->n)
			return NULL;
		rc = cf_bk_store_get(f->r->store, CF_BK_KIND_INDEX,
		    f->names[i], CF_BK_OBJECT_MAX, &f->obj[i], &f->olen[i]);
		f->rc[i] = rc == -EFBIG ? -EPROTO : rc;
	}
}

/*
 * Fetches names[0..n) into obj/olen/rc on up to IDX_GETS threads (on
 * this thread alone if none starts).
 */
static void
idx_fetch_batch(struct idx_fetch *f)
{
	pthread_t t[IDX_GETS];
	size_t i, nt = 0;

	f->next = 0;
	for (i = 0; i < IDX_GETS && i < f->n; i++) {
		if (pthread_create(&t[nt], NULL, idx_fetcher, f) != 0)
			break;
		nt++;
	}
	if (nt == 0)
		(void)idx_fetcher(f);
	for (i = 0; i < nt; i++)
		pthread_join(t[i], NULL);
}

int
cf_bk_repo_index_load(struct cf_bk_repo *r, size_t *bad)
{
	struct cf_bk_index *idx = NULL;
	struct names ns = { NULL, 0, 0 };
	struct idx_fetch f;
	unsigned char *plain, *obj[IDX_BATCH];
	size_t plen, i, k, nbad = 0, olen[IDX_BATCH];
	int rc, orc[IDX_BATCH];

	if (bad != NULL)
		*bad = 0;
	memset(&f, 0, sizeof(f));
	memset(obj, 0, sizeof(obj));
	f.r = r;
	f.obj = obj;
	f.olen = olen;
	f.rc = orc;
	pthread_mutex_init(&f.m, NULL);
	rc = cf_bk_index_new(&idx);
	if (rc < 0)
		goto out;
	rc = cf_bk_store_list(r->store, CF_BK_KIND_INDEX, collect, &ns);
	if (rc < 0)
		goto out;
	for (i = 0; i < ns.n; i++) {
		k = i % IDX_BATCH;
		if (k == 0 && store_remote(r) && ns.n > 1) {
			f.names = ns.v + i;
			f.n = ns.n - i < IDX_BATCH ? ns.n - i : IDX_BATCH;
			idx_fetch_batch(&f);
		}
		if (f.names != NULL) {
			rc = orc[k];
			if (rc == 0)
				rc = open_object(r, CF_BK_KIND_INDEX, ns.v[i],
				    obj[k], olen[k], &plain, &plen);
			free(obj[k]);
			obj[k] = NULL;
		} else {
			rc = get_object(r, CF_BK_KIND_INDEX, ns.v[i], &plain,
			    &plen);
		}
		if (rc == 0) {
			rc = cf_bk_index_decode(idx, plain, plen);
			free(plain);
		}
		if (rc == -ENOMEM)
			goto out;
		if (rc < 0)
			nbad++;	/* verify names it; the rest still loads */
	}
	cf_bk_index_free(r->idx);
	r->idx = idx;
	idx = NULL;
	names_hash(&ns, r->idx_names);
	if (bad != NULL)
		*bad = nbad;
	/*
	 * Full keys learn the object key of every sealed pack now, so
	 * that cf_bk_blob_open (verify) opens its blobs by header alone.
	 * A key that does not open is found again by the blob's load.
	 */
	for (i = 0; !r->keys->writer && i < cf_bk_index_packs(r->idx); i++) {
		const unsigned char *hdr;
		const struct cf_bk_desc *d;
		const uint32_t *offs;
		uint64_t size;
		size_t n;

		bk_index_pack_info(r->idx, i, &hdr, &d, &offs, &n, &size);
		if (bk_header_extra(hdr) > 0 &&
		    bk_keys_learn(r->keys, hdr, hdr + CF_BK_HEADER_BYTES) ==
		    -ENOMEM) {
			rc = -ENOMEM;
			goto out;
		}
	}
	rc = 0;
out:
	for (k = 0; k < IDX_BATCH; k++)
		free(obj[k]);
	pthread_mutex_destroy(&f.m);
	cf_bk_index_free(idx);
	free(ns.v);
	return rc;
}

int
cf_bk_repo_has_blob(struct cf_bk_repo *r, enum cf_bk_blob_type type,
    const unsigned char id[CF_BK_ID_BYTES])
{
	struct cf_bk_blob_loc loc;

	return cf_bk_index_lookup(r->idx, type, id, &loc) == 0;
}

/*
 * Reads and opens the blob at loc with the AEAD cache cache_hdr, aead (the
 * pack read last: restores read pack by pack).  Touches no index.
 */
static void
window_free(struct bk_window *w)
{
	size_t i;

	if (w == NULL)
		return;
	for (i = 0; i < BK_WINDOWS; i++)
		free(w->w[i].buf);
	free(w);
}

/* 1 if r's store is remote (each read a request), 0 if local. */
static int
store_remote(struct cf_bk_repo *r)
{
	const struct cf_bk_store_ops *ops = cf_bk_store_ops(r->store);

	return ops != NULL && ops->name != NULL && strcmp(ops->name, "s3") == 0;
}

/*
 * The window for r's store, made on first use: NULL for local stores,
 * which read exactly what is asked (the page cache is their window).
 */
static struct bk_window *
window_for(struct cf_bk_repo *r, struct bk_window **slot)
{
	if (*slot != NULL)
		return *slot;
	if (!store_remote(r))
		return NULL;
	*slot = calloc(1, sizeof(**slot));
	return *slot;
}

/* ---- the pack cache (restores from remote stores) ------------------------ */

#define PC_PACK_MAX (64U << 20)	/* larger packs: ranged reads */

enum pc_state { PC_EMPTY, PC_QUEUED, PC_LOADING, PC_READY, PC_FAILED };

struct pc_slot {
	unsigned char pack[CF_BK_ID_BYTES];
	uint64_t size;
	unsigned char *buf;
	size_t cap;
	enum pc_state state;
	int rc;			/* PC_FAILED: why */
	size_t refs;		/* readers copying out of buf */
	unsigned long used;	/* least recently used goes first */
	unsigned long seq;	/* PC_QUEUED: order asked */
};

/*
 * A pack that files queued for restore still need: one count per blob
 * hinted (cf_bk_repo_prefetch) and not read yet.  A slot whose pack is
 * needed is not reused while another will do, and a needed pack that
 * has no slot yet is loaded as soon as one is free, in the order first
 * asked: before, hints found every slot taken were dropped and the
 * workers fetched those packs themselves, and packs still needed were
 * evicted and fetched again (a 500 MiB restore: 43 GETs of 16 MiB for
 * 23 packs).
 */
#define PC_NEED_BUCKETS 256U

struct pc_need {
	struct pc_need *next;
	unsigned char pack[CF_BK_ID_BYTES];
	uint64_t size;
	unsigned long n;	/* blobs hinted (planned), not read yet */
	unsigned long seq;	/* first asked */
};

/*
 * Every field of the slots, the needs, the plan, clock, seq and stop is
 * protected by mu.
 * A slot's buf is written only by the one thread that moved it to
 * PC_LOADING, and read only while refs > 0 in PC_READY; a slot is
 * reused only with refs == 0.
 */
struct bk_pcache {
	struct cf_bk_repo *r;
	pthread_mutex_t mu;
	pthread_cond_t cv;	/* a slot changed state or refs */
	pthread_cond_t cv_work;	/* a pack was queued, or stop */
	struct pc_slot *s;
	unsigned nslots;
	pthread_t *tid;
	unsigned nthreads;
	unsigned long clock, seq;
	uint64_t fetched, fetched_bytes;	/* whole packs read */
	uint64_t ranged, ranged_bytes;	/* blobs read alone (slots needed) */
	int stop;
	struct pc_need *need[PC_NEED_BUCKETS];
	/*
	 * The same counts for the packs a restore will read later
	 * (cf_bk_repo_pack_cache_plan): one per data blob of every file
	 * it will write, counted before it starts and down as blobs are
	 * read.  A slot whose pack has planned reads left is reused after
	 * every slot with none (pc_victim).
	 */
	struct pc_need *plan[PC_NEED_BUCKETS];
};

/* The count of pack in table t (pc->need or pc->plan). */
static struct pc_need **
count_at(struct pc_need **t, const unsigned char pack[CF_BK_ID_BYTES])
{
	struct pc_need **p = &t[pack[0] % PC_NEED_BUCKETS];

	while (*p != NULL && memcmp((*p)->pack, pack, CF_BK_ID_BYTES) != 0)
		p = &(*p)->next;
	return p;
}

static unsigned long
count_of(struct pc_need **t, const unsigned char pack[CF_BK_ID_BYTES])
{
	struct pc_need *n = *count_at(t, pack);

	return n != NULL ? n->n : 0;
}

/* One blob fewer of pack in table t; the entry goes at 0. */
static void
count_down(struct pc_need **t, const unsigned char pack[CF_BK_ID_BYTES])
{
	struct pc_need **np = count_at(t, pack), *n = *np;

	if (n != NULL && --n->n == 0) {
		*np = n->next;
		free(n);
	}
}

/* One blob more of pack (size) in table t; a new entry gets seq. */
static struct pc_need *
count_up(struct pc_need **t, const unsigned char pack[CF_BK_ID_BYTES],
    uint64_t size, unsigned long *seq)
{
	struct pc_need **np = count_at(t, pack);

	if (*np == NULL && (*np = calloc(1, sizeof(**np))) != NULL) {
		memcpy((*np)->pack, pack, CF_BK_ID_BYTES);
		(*np)->size = size;
		(*np)->seq = ++*seq;
	}
	if (*np != NULL)
		(*np)->n++;
	return *np;
}

static struct pc_slot *
pc_find(struct bk_pcache *pc, const unsigned char pack[CF_BK_ID_BYTES])
{
	unsigned i;

	for (i = 0; i < pc->nslots; i++)
		if (pc->s[i].state != PC_EMPTY &&
		    memcmp(pc->s[i].pack, pack, CF_BK_ID_BYTES) == 0)
			return &pc->s[i];
	return NULL;
}

/*
 * A slot to reuse: empty, else the least recently used one nobody reads
 * or loads whose pack no queued file needs, one the restore's plan reads
 * again later only if there is no other.  A thread that needs a pack
 * now (demand) takes, failing that, a slot that holds no bytes yet
 * (queued, or its load failed), the one needed last; a slot that holds a
 * needed pack is never taken (it would be fetched again: pc_read reads
 * the one blob by range instead).
 */
static struct pc_slot *
pc_victim(struct bk_pcache *pc, int demand)
{
	struct pc_slot *best = NULL, *late = NULL, *s;
	unsigned long late_seq = 0, q;
	unsigned i;
	int later, best_later = 0;

	for (i = 0; i < pc->nslots; i++) {
		s = &pc->s[i];
		if (s->state == PC_EMPTY)
			return s;
		if (s->refs > 0 || s->state == PC_LOADING)
			continue;
		if (s->state != PC_QUEUED && count_of(pc->need, s->pack) == 0) {
			later = count_of(pc->plan, s->pack) > 0;
			if (best == NULL || later < best_later ||
			    (later == best_later && s->used < best->used)) {
				best = s;
				best_later = later;
			}
			continue;
		}
		if (s->state == PC_READY)
			continue;
		q = s->state == PC_QUEUED ? s->seq :
		    (*count_at(pc->need, s->pack))->seq;
		if (late == NULL || q > late_seq) {
			late = s;
			late_seq = q;
		}
	}
	return best != NULL || !demand ? best : late;
}

/* The needed pack asked for first that has no slot, or NULL. */
static struct pc_need *
need_next(struct bk_pcache *pc)
{
	struct pc_need *best = NULL, *n;
	unsigned i;

	for (i = 0; i < PC_NEED_BUCKETS; i++)
		for (n = pc->need[i]; n != NULL; n = n->next)
			if ((best == NULL || n->seq < best->seq) &&
			    pc_find(pc, n->pack) == NULL)
				best = n;
	return best;
}

/* Reads a whole pack into slot s (PC_LOADING, owned by the caller). */
static int
pc_load(struct bk_pcache *pc, struct pc_slot *s)
{
	unsigned char *b;
	char name[65];

	if (s->cap < s->size) {
		b = realloc(s->buf, (size_t)s->size);
		if (b == NULL)
			return -ENOMEM;
		s->buf = b;
		s->cap = (size_t)s->size;
	}
	bk_name(s->pack, name);
	return cf_bk_store_get_range(pc->r->store, CF_BK_KIND_PACK, name, 0,
	    (size_t)s->size, s->buf);
}

/* Loads s outside the lock (held on entry and return); wakes waiters. */
static void
pc_load_unlocked(struct bk_pcache *pc, struct pc_slot *s)
{
	int rc;

	s->state = PC_LOADING;
	pthread_mutex_unlock(&pc->mu);
	rc = pc_load(pc, s);
	pthread_mutex_lock(&pc->mu);
	s->state = rc == 0 ? PC_READY : PC_FAILED;
	s->rc = rc;
	if (rc == 0) {
		pc->fetched++;
		pc->fetched_bytes += s->size;
	}
	pthread_cond_broadcast(&pc->cv);
}

static void *
pc_loader(void *arg)
{
	struct bk_pcache *pc = arg;
	struct pc_slot *s;
	unsigned i;

	pthread_mutex_lock(&pc->mu);
	while (!pc->stop) {
		s = NULL;
		for (i = 0; i < pc->nslots; i++)
			if (pc->s[i].state == PC_QUEUED && (s == NULL ||
			    pc->s[i].seq < s->seq))
				s = &pc->s[i];
		if (s == NULL) {
			struct pc_need *n = need_next(pc);

			if (n != NULL && (s = pc_victim(pc, 0)) != NULL) {
				memcpy(s->pack, n->pack, CF_BK_ID_BYTES);
				s->size = n->size;
				s->seq = n->seq;
			}
		}
		if (s == NULL) {
			pthread_cond_wait(&pc->cv_work, &pc->mu);
			continue;
		}
		pc_load_unlocked(pc, s);
	}
	pthread_mutex_unlock(&pc->mu);
	return NULL;
}

/*
 * Copies the sealed blob at loc out of its cached pack, loading the
 * pack on this thread when no loader has it yet.  A failed load is
 * tried again once by the next thread that needs the pack.  When every
 * slot holds a pack queued files still need (or is being read or
 * loaded), the blob alone is read by range: taking such a slot would
 * fetch its pack a second time (the 500 MiB bench from RGW: 551-710
 * MiB downloaded for a 310 MiB repository so, 437-473 MiB now).
 */
static int
pc_read(struct bk_pcache *pc, const struct cf_bk_blob_loc *loc,
    unsigned char *sblob)
{
	struct pc_slot *s;
	char name[65];
	int rc = 0, tried = 0;

	pthread_mutex_lock(&pc->mu);
	for (;;) {
		s = pc_find(pc, loc->pack);
		if (s != NULL && s->state == PC_READY)
			break;
		if (s != NULL && s->state == PC_FAILED && tried) {
			rc = s->rc;
			pthread_mutex_unlock(&pc->mu);
			return rc;
		}
		if (s != NULL && s->state == PC_LOADING) {
			pthread_cond_wait(&pc->cv, &pc->mu);
			continue;
		}
		if (s == NULL) {
			s = pc_victim(pc, 1);
			if (s == NULL)
				break;
			memcpy(s->pack, loc->pack, CF_BK_ID_BYTES);
			s->size = loc->pack_size;
		}
		/* Queued, failed or new: load it here, now. */
		tried = 1;
		pc_load_unlocked(pc, s);
	}
	if (s == NULL) {
		pthread_mutex_unlock(&pc->mu);
		bk_name(loc->pack, name);
		rc = cf_bk_store_get_range(pc->r->store, CF_BK_KIND_PACK, name,
		    loc->offset, loc->desc.length, sblob);
		pthread_mutex_lock(&pc->mu);
		if (rc == 0) {
			pc->ranged++;
			pc->ranged_bytes += loc->desc.length;
		}
	} else if (loc->offset + loc->desc.length > s->size) {
		/* Two indexes disagree on the pack's size. */
		pthread_mutex_unlock(&pc->mu);
		return -EPROTO;
	} else {
		s->refs++;
		s->used = ++pc->clock;
		pthread_mutex_unlock(&pc->mu);
		memcpy(sblob, s->buf + loc->offset, loc->desc.length);
		pthread_mutex_lock(&pc->mu);
		s->refs--;
	}
	if (loc->desc.type == CF_BK_BLOB_DATA) {	/* what hints count */
		count_down(pc->need, loc->pack);
		count_down(pc->plan, loc->pack);
	}
	/* The slot may go to the next needed pack now. */
	pthread_cond_signal(&pc->cv_work);
	pthread_cond_broadcast(&pc->cv);
	pthread_mutex_unlock(&pc->mu);
	return rc;
}

static void
pcache_free(struct bk_pcache *pc)
{
	unsigned i;

	if (pc == NULL)
		return;
	pthread_mutex_lock(&pc->mu);
	pc->stop = 1;
	pthread_cond_broadcast(&pc->cv_work);
	pthread_mutex_unlock(&pc->mu);
	for (i = 0; i < pc->nthreads; i++)
		pthread_join(pc->tid[i], NULL);
	for (i = 0; i < pc->nslots; i++)
		free(pc->s[i].buf);
	for (i = 0; i < PC_NEED_BUCKETS; i++) {
		struct pc_need *n = pc->need[i], *next;

		for (; n != NULL; n = next) {
			next = n->next;
			free(n);
		}
		for (n = pc->plan[i]; n != NULL; n = next) {
			next = n->next;
			free(n);
		}
	}
	pthread_cond_destroy(&pc->cv);
	pthread_cond_destroy(&pc->cv_work);
	pthread_mutex_destroy(&pc->mu);
	free(pc->s);
	free(pc->tid);
	free(pc);
}

int
cf_bk_repo_pack_cache_start(struct cf_bk_repo *r, unsigned conns,
    unsigned slots)
{
	struct bk_pcache *pc;
	int rc = -ENOMEM;

	if (conns == 0 || slots < conns)
		return -EINVAL;
	if (r->pc != NULL || !store_remote(r))
		return 0;		/* local: the page cache does it */
	pc = calloc(1, sizeof(*pc));
	if (pc == NULL)
		return -ENOMEM;
	pc->r = r;
	pthread_mutex_init(&pc->mu, NULL);
	pthread_cond_init(&pc->cv, NULL);
	pthread_cond_init(&pc->cv_work, NULL);
	pc->s = calloc(slots, sizeof(*pc->s));
	pc->tid = calloc(conns, sizeof(*pc->tid));
	if (pc->s == NULL || pc->tid == NULL)
		goto out;
	pc->nslots = slots;
	for (pc->nthreads = 0; pc->nthreads < conns; pc->nthreads++) {
		if (pthread_create(&pc->tid[pc->nthreads], NULL, pc_loader,
		    pc) != 0) {
			rc = -EAGAIN;
			goto out;
		}
	}
	r->pc = pc;
	pc = NULL;
	rc = 0;
out:
	pcache_free(pc);
	return rc;
}

void
cf_bk_repo_pack_cache_stop(struct cf_bk_repo *r)
{
	pcache_free(r->pc);
	r->pc = NULL;
}

void
cf_bk_repo_pack_cache_stats(struct cf_bk_repo *r, struct cf_bk_pc_stats *st)
{
	struct bk_pcache *pc = r->pc;

	memset(st, 0, sizeof(*st));
	if (pc == NULL)
		return;
	pthread_mutex_lock(&pc->mu);
	st->packs = pc->fetched;
	st->pack_bytes = pc->fetched_bytes;
	st->blobs = pc->ranged;
	st->blob_bytes = pc->ranged_bytes;
	pthread_mutex_unlock(&pc->mu);
}

void
cf_bk_repo_pack_cache_plan(struct cf_bk_repo *r,
    const unsigned char id[CF_BK_ID_BYTES])
{
	struct bk_pcache *pc = r->pc;
	struct cf_bk_blob_loc loc;

	if (pc == NULL || cf_bk_index_lookup(r->idx, CF_BK_BLOB_DATA, id,
	    &loc) < 0 || loc.pack_size > PC_PACK_MAX)
		return;
	pthread_mutex_lock(&pc->mu);
	(void)count_up(pc->plan, loc.pack, loc.pack_size, &pc->seq);
	pthread_mutex_unlock(&pc->mu);
}

void
cf_bk_repo_prefetch(struct cf_bk_repo *r, enum cf_bk_blob_type type,
    const unsigned char id[CF_BK_ID_BYTES])
{
	struct bk_pcache *pc = r->pc;
	struct cf_bk_blob_loc loc;
	struct pc_need *n;
	struct pc_slot *s;

	if (pc == NULL || cf_bk_index_lookup(r->idx, type, id, &loc) < 0 ||
	    loc.pack_size > PC_PACK_MAX)
		return;
	pthread_mutex_lock(&pc->mu);
	n = count_up(pc->need, loc.pack, loc.pack_size, &pc->seq);
	if (pc_find(pc, loc.pack) == NULL && n != NULL) {
		s = pc_victim(pc, 0);
		if (s != NULL) {
			memcpy(s->pack, loc.pack, CF_BK_ID_BYTES);
			s->size = loc.pack_size;
			s->state = PC_QUEUED;
			s->seq = n->seq;
			pthread_cond_signal(&pc->cv_work);
		}
	}
	pthread_mutex_unlock(&pc->mu);
}

/* Reads the sealed blob at loc into sblob: from the pack cache, through
 * the window, or directly. */
static int
read_sealed(struct cf_bk_repo *r, struct bk_window *w,
    const struct cf_bk_blob_loc *loc, const char *name, unsigned char *sblob)
{
	uint64_t end = loc->offset + loc->desc.length;
	size_t n, i, pick = 0;
	int rc;

	if (r->pc != NULL && loc->pack_size <= PC_PACK_MAX &&
	    end <= loc->pack_size && end >= loc->offset)
		return pc_read(r->pc, loc, sblob);
	if (w == NULL || loc->desc.length > BK_WINDOW ||
	    loc->pack_size < end)
		return cf_bk_store_get_range(r->store, CF_BK_KIND_PACK, name,
		    loc->offset, loc->desc.length, sblob);
	for (i = 0; i < BK_WINDOWS; i++) {
		if (w->w[i].len > 0 && memcmp(w->w[i].pack, loc->pack,
		    CF_BK_ID_BYTES) == 0 && loc->offset >= w->w[i].off &&
		    end <= w->w[i].off + w->w[i].len)
			break;
		if (w->w[i].used < w->w[pick].used)
			pick = i;
	}
	if (i == BK_WINDOWS) {
		i = pick;
		if (w->w[i].buf == NULL && (w->w[i].buf = malloc(BK_WINDOW)) ==
		    NULL)
			return -ENOMEM;
		n = loc->pack_size - loc->offset > BK_WINDOW ? BK_WINDOW :
		    (size_t)(loc->pack_size - loc->offset);
		w->w[i].len = 0;
		rc = cf_bk_store_get_range(r->store, CF_BK_KIND_PACK, name,
		    loc->offset, n, w->w[i].buf);
		if (rc < 0)
			return rc;
		memcpy(w->w[i].pack, loc->pack, CF_BK_ID_BYTES);
		w->w[i].off = loc->offset;
		w->w[i].len = n;
	}
	w->w[i].used = ++w->clock;
	memcpy(sblob, w->w[i].buf + (loc->offset - w->w[i].off),
	    loc->desc.length);
	return 0;
}

static int
blob_load_at(struct cf_bk_repo *r, const struct cf_bk_blob_loc *loc,
    unsigned char cache_hdr[CF_BK_HEADER_BYTES], struct cf_ks_aead **aead,
    struct bk_window *win, unsigned char **buf, size_t *len)
{
	unsigned char *sblob = NULL;
	char name[65];
	int rc;

	rc = bk_header_check(loc->header, CF_BK_KIND_PACK, r->keys);
	if (rc < 0)
		return rc;
	if (bk_header_extra(loc->header) > 0) {
		/* -ENOKEY for write-only keys, -EBADMSG a damaged key. */
		rc = bk_keys_learn(r->keys, loc->header,
		    loc->header + CF_BK_HEADER_BYTES);
		if (rc < 0)
			return rc;
	}
	if (*aead == NULL ||
	    memcmp(cache_hdr, loc->header, CF_BK_HEADER_BYTES) != 0) {
		cf_ks_aead_free(*aead);
		*aead = NULL;
		rc = bk_object_aead(r->keys, loc->header, aead);
		if (rc < 0)
			return rc;
		memcpy(cache_hdr, loc->header, CF_BK_HEADER_BYTES);
	}
	sblob = malloc(loc->desc.length);
	if (sblob == NULL)
		return -ENOMEM;
	bk_name(loc->pack, name);
	rc = read_sealed(r, win, loc, name, sblob);
	if (rc == 0)
		rc = bk_blob_open_aead(r->keys, *aead, loc->header,
		    &loc->desc, sblob, loc->desc.length, buf, len);
	free(sblob);
	return rc;
}

int
bk_repo_blob_load_loc(struct cf_bk_repo *r, const struct cf_bk_blob_loc *loc,
    unsigned char **buf, size_t *len)
{
	*buf = NULL;
	*len = 0;
	return blob_load_at(r, loc, r->cache_hdr, &r->cache_aead,
	    window_for(r, &r->win), buf, len);
}

int
cf_bk_repo_blob_load(struct cf_bk_repo *r, enum cf_bk_blob_type type,
    const unsigned char id[CF_BK_ID_BYTES], unsigned char **buf, size_t *len)
{
	struct cf_bk_blob_loc loc;
	int rc;

	*buf = NULL;
	*len = 0;
	rc = cf_bk_index_lookup(r->idx, type, id, &loc);
	if (rc < 0)
		return rc;
	return blob_load_at(r, &loc, r->cache_hdr, &r->cache_aead,
	    window_for(r, &r->win), buf, len);
}

/* ---- blob readers (one per restore thread) --------------------------------- */

/*
 * Pack keys a reader keeps: a backup fills several packs at once (one
 * per writer thread), so consecutive files of a restore alternate
 * between packs, and one cached key was derived again (with a
 * sodium_malloc'd key schedule) at nearly every blob.
 */
#define BR_KEYS 8

struct cf_bk_blob_reader {
	struct cf_bk_repo *r;
	struct {
		unsigned char hdr[CF_BK_HEADER_BYTES];
		struct cf_ks_aead *aead;
		unsigned long used;
	} k[BR_KEYS];
	unsigned long clock;
	struct bk_window *win;
};

int
cf_bk_blob_reader_new(struct cf_bk_blob_reader **out, struct cf_bk_repo *r)
{
	struct cf_bk_blob_reader *br;

	*out = NULL;
	br = calloc(1, sizeof(*br));
	if (br == NULL)
		return -ENOMEM;
	br->r = r;
	*out = br;
	return 0;
}

void
cf_bk_blob_reader_free(struct cf_bk_blob_reader *br)
{
	size_t i;

	if (br == NULL)
		return;
	for (i = 0; i < BR_KEYS; i++)
		cf_ks_aead_free(br->k[i].aead);
	window_free(br->win);
	free(br);
}

int
cf_bk_blob_reader_load(struct cf_bk_blob_reader *br,
    enum cf_bk_blob_type type, const unsigned char id[CF_BK_ID_BYTES],
    unsigned char **buf, size_t *len)
{
	struct cf_bk_blob_loc loc;
	size_t i, pick = 0;
	int rc;

	*buf = NULL;
	*len = 0;
	rc = cf_bk_index_lookup(br->r->idx, type, id, &loc);
	if (rc < 0)
		return rc;
	/* The slot holding this pack's key, else the least recently used. */
	for (i = 0; i < BR_KEYS; i++) {
		if (br->k[i].aead != NULL && memcmp(br->k[i].hdr, loc.header,
		    CF_BK_HEADER_BYTES) == 0)
			break;
		if (br->k[i].used < br->k[pick].used)
			pick = i;
	}
	if (i == BR_KEYS)
		i = pick;
	br->k[i].used = ++br->clock;
	return blob_load_at(br->r, &loc, br->k[i].hdr, &br->k[i].aead,
	    window_for(br->r, &br->win), buf, len);
}

int
cf_bk_repo_tree_load(struct cf_bk_repo *r,
    const unsigned char id[CF_BK_ID_BYTES], struct cf_bk_tree **out)
{
	unsigned char *buf;
	size_t len;
	int rc;

	*out = NULL;
	rc = cf_bk_repo_blob_load(r, CF_BK_BLOB_TREE, id, &buf, &len);
	if (rc < 0)
		return rc;
	rc = cf_bk_tree_decode(out, buf, len);
	free(buf);
	return rc;
}

/* ---- snapshots --------------------------------------------------------------- */

int
cf_bk_repo_snapshot_save(struct cf_bk_repo *r, const struct cf_bk_snapshot *s,
    unsigned char id[CF_BK_ID_BYTES])
{
	struct cf_bk_snapshot c = *s;	/* shallow: only the record differs */
	uint32_t own[2];
	char *json = NULL;
	size_t len;
	int rc;

	memset(id, 0, CF_BK_ID_BYTES);
	/*
	 * [BK-SNAP-2] The snapshot object is sealed under the write version
	 * and every snapshot needs the creation version (id and chunker
	 * keys), whoever filled the record.
	 */
	own[0] = cf_bk_keys_write_version(r->keys);
	own[1] = r->cfg_version;
	if (c.has_key_versions)
		(void)!cf_bk_snapshot_add_key_versions(&c, own, 2);
	rc = cf_bk_snapshot_encode(&c, &json, &len);
	if (rc < 0)
		return rc;
	rc = bk_repo_put_object(r, CF_BK_KIND_SNAPSHOT,
	    (const unsigned char *)json, len, id);
	free(json);
	return rc;
}

int
cf_bk_repo_snapshot_list(struct cf_bk_repo *r,
    unsigned char (**ids)[CF_BK_ID_BYTES], size_t *n)
{
	struct names ns = { NULL, 0, 0 };
	unsigned char (*v)[CF_BK_ID_BYTES] = NULL;
	size_t i;
	int rc;

	*ids = NULL;
	*n = 0;
	rc = cf_bk_store_list(r->store, CF_BK_KIND_SNAPSHOT, collect, &ns);
	if (rc < 0)
		goto out;
	if (ns.n > 0) {
		v = malloc(ns.n * sizeof(*v));
		if (v == NULL) {
			rc = -ENOMEM;
			goto out;
		}
		for (i = 0; i < ns.n; i++) {
			rc = cf_bk_id_parse(ns.v[i], v[i]);
			if (rc < 0)
				goto out;
		}
	}
	*ids = v;
	*n = ns.n;
	v = NULL;
	rc = 0;
out:
	free(v);
	free(ns.v);
	return rc;
}

int
cf_bk_repo_snapshot_load(struct cf_bk_repo *r,
    const unsigned char id[CF_BK_ID_BYTES], struct cf_bk_snapshot **out)
{
	unsigned char *plain;
	char name[65];
	size_t plen;
	int rc;

	*out = NULL;
	bk_name(id, name);
	rc = get_object(r, CF_BK_KIND_SNAPSHOT, name, &plain, &plen);
	if (rc < 0)
		return rc;
	rc = cf_bk_snapshot_decode(out, (const char *)plain, plen);
	free(plain);
	return rc;
}

/* ---- locks -------------------------------------------------------------------- */

struct cf_bk_lock {
	struct cf_bk_repo *r;
	int exclusive;
	char hostname[256];
	unsigned char id[CF_BK_ID_BYTES];
};

static int
lock_put(struct cf_bk_lock *l)
{
	json_t *o;
	char *s;
	int rc = -ENOMEM;

	o = json_pack("{s:b, s:s, s:I, s:I}", "exclusive", l->exclusive,
	    "hostname", l->hostname, "pid", (json_int_t)getpid(), "time",
	    (json_int_t)cf_ks_now());
	if (o == NULL)
		return -ENOMEM;
	s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(o);
	if (s != NULL)
		rc = bk_repo_put_object(l->r, CF_BK_KIND_LOCK,
		    (const unsigned char *)s, strlen(s), l->id);
	free(s);
	return rc;
}

/*
 * 1 if lock o was taken on this host (same hostname) by a process that
 * no longer exists: a backup killed (a job time limit, kill -9, a crash)
 * need not block the repository for the 30 minutes a lock takes to go
 * stale.  A pid reused by another process keeps the lock (safe side).
 */
static int
lock_holder_gone(const struct cf_bk_lock *l, json_t *o)
{
	json_t *h = json_object_get(o, "hostname");
	json_t *p = json_object_get(o, "pid");
	json_int_t pid;

	if (!json_is_string(h) || !json_is_integer(p) ||
	    strcmp(json_string_value(h), l->hostname) != 0)
		return 0;
	pid = json_integer_value(p);
	if (pid <= 0 || pid > INT_MAX || pid == (json_int_t)getpid())
		return 0;
	return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* 1 if the lock object name conflicts with ours (fresh and clashing). */
static int
lock_conflicts(struct cf_bk_lock *l, const char *name)
{
	unsigned char *plain;
	size_t plen;
	json_error_t e;
	json_t *o, *ex, *t;
	int conflict = 0;

	if (get_object(l->r, CF_BK_KIND_LOCK, name, &plain, &plen) < 0)
		return 0;	/* vanished or damaged: not a holder */
	o = json_loadb((const char *)plain, plen, JSON_REJECT_DUPLICATES, &e);
	free(plain);
	if (o == NULL)
		return 0;
	ex = json_object_get(o, "exclusive");
	t = json_object_get(o, "time");
	if (json_is_boolean(ex) && json_is_integer(t) &&
	    (long long)cf_ks_now() - json_integer_value(t) <
	    LOCK_STALE_SECONDS)
		conflict = l->exclusive || json_is_true(ex);
	if (conflict && lock_holder_gone(l, o)) {
		conflict = 0;
		/* Best effort: if it stays, it goes stale in 30 minutes. */
		(void)!cf_bk_store_del(l->r->store, CF_BK_KIND_LOCK, name);
	}
	json_decref(o);
	return conflict;
}

/*
 * A repository opened from objects fetched before its lock (bk_prefetch.c)
 * read its listings up to an unlock's time before the lock was taken;
 * an exclusive holder (a prune) may have finished meanwhile.  Now that
 * no such holder can run: the snapshot listing is read again when asked
 * for (held objects stay: their names are their contents), and the
 * index is loaded again if its objects are not those loaded.
 */
static int
repo_settle(struct cf_bk_repo *r)
{
	struct names ns = { NULL, 0, 0 };
	unsigned char h[CF_BK_ID_BYTES];
	int rc;

	if (!r->prefetched)
		return 0;
	r->prefetched = 0;
	bk_store_drop_lists(r->store);
	rc = cf_bk_store_list(r->store, CF_BK_KIND_INDEX, collect, &ns);
	if (rc < 0)
		goto out;
	names_hash(&ns, h);
	if (sodium_memcmp(h, r->idx_names, CF_BK_ID_BYTES) != 0)
		rc = cf_bk_repo_index_load(r, NULL);
out:
	free(ns.v);
	return rc;
}

int
cf_bk_repo_lock(struct cf_bk_repo *r, int exclusive, const char *hostname,
    struct cf_bk_lock **out)
{
	struct names ns = { NULL, 0, 0 };
	struct cf_bk_lock *l;
	char mine[65];
	size_t i;
	int rc;

	*out = NULL;
	l = calloc(1, sizeof(*l));
	if (l == NULL)
		return -ENOMEM;
	l->r = r;
	l->exclusive = exclusive != 0;
	if (hostname != NULL)
		snprintf(l->hostname, sizeof(l->hostname), "%s", hostname);
	else if (gethostname(l->hostname, sizeof(l->hostname) - 1) < 0)
		snprintf(l->hostname, sizeof(l->hostname), "unknown");
	rc = lock_put(l);
	if (rc < 0)
		goto fail;
	bk_name(l->id, mine);
	rc = cf_bk_store_list(r->store, CF_BK_KIND_LOCK, collect, &ns);
	if (rc < 0)
		goto release;
	for (i = 0; i < ns.n; i++) {
		if (strcmp(ns.v[i], mine) != 0 && lock_conflicts(l, ns.v[i])) {
			rc = -EBUSY;
			goto release;
		}
	}
	rc = repo_settle(r);
	if (rc < 0)
		goto release;
	free(ns.v);
	*out = l;
	return 0;
release:
	free(ns.v);
	if (cf_bk_store_del(r->store, CF_BK_KIND_LOCK, mine) < 0) {
		/* Left behind, it goes stale in 30 minutes. */
	}
fail:
	free(l);
	return rc;
}

int
cf_bk_lock_refresh(struct cf_bk_lock *l)
{
	unsigned char old[CF_BK_ID_BYTES];
	char name[65];
	int rc;

	memcpy(old, l->id, sizeof(old));
	rc = lock_put(l);
	if (rc < 0)
		return rc;
	bk_name(old, name);
	rc = cf_bk_store_del(l->r->store, CF_BK_KIND_LOCK, name);
	return rc == -ENOENT ? 0 : rc;
}

int
cf_bk_lock_release(struct cf_bk_lock *l)
{
	char name[65];
	int rc;

	if (l == NULL)
		return 0;
	bk_name(l->id, name);
	rc = cf_bk_store_del(l->r->store, CF_BK_KIND_LOCK, name);
	free(l);
	return rc == -ENOENT ? 0 : rc;
}
