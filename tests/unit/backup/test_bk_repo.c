/*
 * test_bk_repo.c - the local storage backend, repositories and the pack
 * writer, on real directories (docs/format/repository.md): atomic puts
 * and listings, config checks, blob round trips through packs and
 * indexes with and without worker threads, dedup, two writers at once,
 * a crash between pack and index (via a fault-injecting store), damaged
 * objects, and locks.  Each case cites the requirements it checks.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bk_test.h"

static const unsigned char tenant_a[16] = { 0xa1, 0xa2, 0xa3 };

static char snap_host[] = "h", snap_path[] = "/";
static char *snap_paths[] = { snap_path };

/* A minimal snapshot of tree (NULL: none) made at time t, of tenant_a. */
static void
snap_min(struct cf_bk_snapshot *snap, int64_t t, const unsigned char *tree,
    char *cons)
{
	memset(snap, 0, sizeof(*snap));
	snap->time = t;
	memcpy(snap->tenant, tenant_a, 16);
	snap->hostname = snap_host;
	snap->paths = snap_paths;
	snap->npaths = 1;
	if (tree != NULL)
		memcpy(snap->tree, tree, 32);
	snap->consistency = cons;
}
static const unsigned char tenant_b[16] = { 0xb1, 0xb2, 0xb3 };

static const char *
repo_url(char *buf, size_t cap)
{
	snprintf(buf, cap, "file://%s/repo", cf_test_tmpdir());
	return buf;
}

static const char *
repo_path(const char *rel)
{
	static char buf[4096];

	snprintf(buf, sizeof(buf), "%s/repo/%s", cf_test_tmpdir(), rel);
	return buf;
}

static int
count_cb(void *arg, const char *name, uint64_t size)
{
	(void)name;
	(void)size;
	(*(size_t *)arg)++;
	return 0;
}

/* Copies the first name listed and stops the listing (returns 1). */
static int
first_name(void *arg, const char *name, uint64_t size)
{
	(void)size;
	memcpy(arg, name, 65);
	return 1;
}

static size_t
count(struct cf_bk_store *s, enum cf_bk_kind kind)
{
	size_t n = 0;

	if (cf_bk_store_list(s, kind, count_cb, &n) != 0)
		return (size_t)-1;
	return n;
}

/* ---- store [BK-LAY-1..2] -------------------------------------------------- */

static void
store_put_get_list(void)	/* [BK-LAY-1] [BK-LAY-2] */
{
	struct cf_bk_store *s = NULL;
	unsigned char id[32], *buf, part[5];
	char url[4096], name[65];
	size_t len;
	uint64_t size;
	struct stat st;

	CHECK_RC(cf_bk_store_open_url(&s, repo_url(url, sizeof(url)), 0),
	    -ENOENT);
	CHECK_RC(cf_bk_store_open_url(&s, url, CF_BK_STORE_CREATE), 0);
	cf_bk_storage_id((const unsigned char *)"hello world", 11, id);
	bk_name(id, name);
	CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_PACK, name,
	    (const unsigned char *)"hello world", 11, 0), 0);
	CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_INDEX, name,
	    (const unsigned char *)"hello world", 11, 0), 0);
	CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_PACK, "config",
	    (const unsigned char *)"x", 1, 0), -EINVAL);
	CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_INDEX, "../../etc/passwd",
	    (const unsigned char *)"x", 1, 0), -EINVAL);
	CHECK(count(s, CF_BK_KIND_PACK) == 1);
	CHECK(count(s, CF_BK_KIND_INDEX) == 1);
	CHECK(count(s, CF_BK_KIND_SNAPSHOT) == 0);
	CHECK_RC(cf_bk_store_get(s, CF_BK_KIND_PACK, name, 100, &buf, &len), 0);
	CHECK(len == 11 && memcmp(buf, "hello world", 11) == 0);
	free(buf);
	CHECK_RC(cf_bk_store_get(s, CF_BK_KIND_PACK, name, 10, &buf, &len),
	    -EFBIG);
	CHECK_RC(cf_bk_store_get_range(s, CF_BK_KIND_PACK, name, 6, 5, part),
	    0);
	CHECK(memcmp(part, "world", 5) == 0);
	CHECK_RC(cf_bk_store_get_range(s, CF_BK_KIND_PACK, name, 7, 5, part),
	    -EPROTO);
	CHECK_RC(cf_bk_store_stat(s, CF_BK_KIND_PACK, name, &size), 0);
	CHECK(size == 11);
	/* Layout: data/XX/<id>, mode 0600. */
	{
		char rel[128];

		snprintf(rel, sizeof(rel), "data/%.2s/%s", name, name);
		CHECK(stat(repo_path(rel), &st) == 0);
		CHECK((st.st_mode & 0777) == 0600);
	}
	CHECK_RC(cf_bk_store_del(s, CF_BK_KIND_PACK, name), 0);
	CHECK_RC(cf_bk_store_del(s, CF_BK_KIND_PACK, name), -ENOENT);
	CHECK_RC(cf_bk_store_get(s, CF_BK_KIND_PACK, name, 100, &buf, &len),
	    -ENOENT);
	CHECK(count(s, CF_BK_KIND_PACK) == 0);
	/* Exclusive put (the config): the second one fails. */
	CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_CONFIG, "config",
	    (const unsigned char *)"one", 3, 1), 0);
	CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_CONFIG, "config",
	    (const unsigned char *)"two", 3, 1), -EEXIST);
	CHECK_RC(cf_bk_store_get(s, CF_BK_KIND_CONFIG, "config", 100, &buf,
	    &len), 0);
	CHECK(len == 3 && memcmp(buf, "one", 3) == 0);
	free(buf);
	cf_bk_store_free(s);
}

static void
store_temp_not_listed(void)	/* [BK-LAY-1]: crash leftovers are invisible */
{
	struct cf_bk_store *s = NULL;
	char url[4096];

	CHECK_RC(cf_bk_store_open_url(&s, repo_url(url, sizeof(url)),
	    CF_BK_STORE_CREATE), 0);
	/* What a crash between write and rename leaves. */
	CHECK_RC(cf_test_write_file(repo_path("index/.tmp-0123456789abcdef"),
	    "partial", 7), 0);
	CHECK_RC(cf_test_write_file(repo_path("snapshots/notanid"), "x", 1),
	    0);
	CHECK_RC(cf_test_write_file(repo_path("snapshots/"
	    "ABCDEF0000000000000000000000000000000000000000000000000000000000"),
	    "x", 1), 0);
	CHECK(mkdir(repo_path("data/00"), 0700) == 0);
	CHECK_RC(cf_test_write_file(repo_path("data/00/.tmp-aaaa"), "x", 1), 0);
	CHECK(count(s, CF_BK_KIND_INDEX) == 0);
	CHECK(count(s, CF_BK_KIND_SNAPSHOT) == 0);
	CHECK(count(s, CF_BK_KIND_PACK) == 0);
	cf_bk_store_free(s);
}

static void
store_urls(void)
{
	struct cf_bk_store *s = NULL;

	/* s3:// is the S3 backend (tested against Ceph RGW in
	 * tests/integration/s3_rgw.sh); without credentials it refuses to
	 * start rather than send unsigned requests. */
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	unsetenv("COFFER_S3_CREDENTIALS_FILE");
	CHECK_RC(cf_bk_store_open_url(&s, "s3://bucket/prefix", 0), -ENOKEY);
	CHECK_RC(cf_bk_store_open_url(&s, "file://relative/x", 0), -EINVAL);
	CHECK_RC(cf_bk_store_open_url(&s, "/abs/path", 0), -EINVAL);
	CHECK_RC(cf_bk_store_open_url(&s, "http://x/", 0), -EINVAL);
	CHECK_RC(cf_bk_store_open_url(&s, "file:///a/../b", 0), -EINVAL);
	CHECK(s == NULL);
}

/* ---- repository [BK-CFG-1] -------------------------------------------------- */

static struct cf_bk_repo *
open_repo(const struct cf_bk_keys *k, const unsigned char *tenant, int init,
    int *rcp)
{
	struct cf_bk_store *s = NULL;
	struct cf_bk_repo *r = NULL;
	char url[4096];
	int rc;

	rc = cf_bk_store_open_url(&s, repo_url(url, sizeof(url)),
	    init ? CF_BK_STORE_CREATE : 0);
	if (rc == 0)
		rc = init ? cf_bk_repo_init(&r, s, k, tenant) :
		    cf_bk_repo_open(&r, s, k, tenant);
	if (rc == 0)
		rc = cf_bk_repo_index_load(r, NULL);
	if (rc < 0) {
		if (r != NULL)
			cf_bk_repo_free(r);
		else
			cf_bk_store_free(s);
		r = NULL;
	}
	if (rcp != NULL)
		*rcp = rc;
	return r;
}

static void
repo_init_open(void)	/* [BK-CFG-1] */
{
	struct cf_bk_keys *k = bkt_keys_x(0), *other = bkt_keys_x(40);
	struct cf_bk_repo *r;
	unsigned char *cfg;
	size_t len;
	int rc;

	CHECK(k != NULL && other != NULL);
	r = open_repo(k, tenant_a, 0, &rc);
	CHECK(r == NULL && rc == -ENOENT);
	r = open_repo(k, tenant_a, 1, &rc);
	CHECK(r != NULL);
	cf_bk_repo_free(r);
	r = open_repo(k, tenant_a, 1, &rc);
	CHECK(r == NULL && rc == -EEXIST);
	r = open_repo(k, tenant_a, 0, &rc);
	CHECK(r != NULL);
	cf_bk_repo_free(r);
	/* The same keys under another tenant id: refused. */
	r = open_repo(k, tenant_b, 0, &rc);
	CHECK(r == NULL && rc == -EKEYREJECTED);
	/* Another tenant's keys: the config does not open. */
	r = open_repo(other, tenant_a, 0, &rc);
	CHECK(r == NULL && rc == -EBADMSG);
	/* An unknown version. */
	cfg = cf_test_read_file(repo_path("config"), &len);
	CHECK(cfg != NULL);
	cfg[8] = 2;
	CHECK(unlink(repo_path("config")) == 0);
	CHECK_RC(cf_test_write_file(repo_path("config"), cfg, len), 0);
	r = open_repo(k, tenant_a, 0, &rc);
	CHECK(r == NULL && rc == -EPROTO);
	free(cfg);
	cf_bk_keys_free(k);
	cf_bk_keys_free(other);
}

static void
repo_open_url(void)
{
	struct cf_secbuf *root = NULL;
	struct cf_bk_repo *r = NULL;
	char url[4096];

	CHECK_RC(cf_secbuf_random(&root, 32), 0);
	repo_url(url, sizeof(url));
	CHECK_RC(cf_bk_repo_open_url(&r, url, root, 1,
	    CF_KS_CIPHER_XCHACHA20POLY1305, tenant_a, 0), -ENOENT);
	CHECK_RC(cf_bk_repo_open_url(&r, url, root, 1,
	    CF_KS_CIPHER_XCHACHA20POLY1305, tenant_a, CF_BK_REPO_CREATE), 0);
	CHECK(cf_bk_index_packs(cf_bk_repo_index(r)) == 0);
	cf_bk_repo_free(r);
	CHECK_RC(cf_bk_repo_open_url(&r, url, root, 1,
	    CF_KS_CIPHER_XCHACHA20POLY1305, tenant_a, 0), 0);
	cf_bk_repo_free(r);
	cf_secbuf_free(root);
}

/* ---- writer ---------------------------------------------------------------- */

struct stream {
	const unsigned char *b;
	size_t len, off;
};

static int
stream_rd(void *arg, unsigned char *buf, size_t cap, size_t *got)
{
	struct stream *s = arg;
	size_t n = s->len - s->off;

	/* Odd read sizes, to exercise the chunker's refill. */
	if (n > cap)
		n = cap;
	if (n > 777777)
		n = 777777;
	memcpy(buf, s->b + s->off, n);
	s->off += n;
	*got = n;
	return 0;
}

/* A 6 MiB stream: text, random, text. */
static unsigned char *
mixed(size_t *len, unsigned seed)
{
	size_t n = 6U << 20;
	unsigned char *b = malloc(n), *t = bkt_text(2U << 20),
	    *r = bkt_random(2U << 20, seed);

	if (b != NULL && t != NULL && r != NULL) {
		memcpy(b, t, 2U << 20);
		memcpy(b + (2U << 20), r, 2U << 20);
		memcpy(b + (4U << 20), t, 2U << 20);
		b[5U << 20] ^= (unsigned char)seed;
	}
	free(t);
	free(r);
	*len = n;
	return b;
}

/* Loads every item and compares with the stream. */
static int
check_items(struct cf_bk_repo *r, const struct cf_bk_item *it, size_t n,
    const unsigned char *want, size_t wlen)
{
	size_t i, off = 0, len;
	unsigned char *buf;

	for (i = 0; i < n; i++) {
		if (cf_bk_repo_blob_load(r, CF_BK_BLOB_DATA, it[i].id, &buf,
		    &len) != 0)
			return -1;
		if (off + len > wlen || memcmp(buf, want + off, len) != 0) {
			free(buf);
			return -1;
		}
		off += len;
		free(buf);
	}
	return off == wlen ? 0 : -1;
}

static void
writer_round_trip_n(unsigned nthreads)
{
	struct cf_bk_keys *k = bkt_keys_x(0);
	struct cf_bk_repo *r, *r2;
	struct cf_bk_writer *w = NULL;
	struct cf_bk_writer_stats st;
	struct cf_bk_item *it = NULL, *it2 = NULL;
	struct cf_bk_node node;
	struct cf_bk_tree tree = { &node, 1, NULL }, *tb = NULL;
	struct cf_bk_snapshot snap, *sb = NULL;
	struct stream s;
	unsigned char *data, tid[32], sid[32], (*ids)[32] = NULL;
	char cons[] = "offline";
	size_t len, n, n2, nsnap;
	uint64_t size;

	CHECK(k != NULL);
	data = mixed(&len, 1);
	CHECK(data != NULL);
	r = open_repo(k, tenant_a, 1, NULL);
	CHECK(r != NULL);
	CHECK_RC(cf_bk_writer_new(&w, r, nthreads), 0);
	s = (struct stream){ data, len, 0 };
	CHECK_RC(cf_bk_writer_add_stream(w, stream_rd, &s, &it, &n, &size), 0);
	CHECK(size == len && n >= 3);
	memset(&node, 0, sizeof(node));
	node.type = CF_BK_NODE_FILE;
	node.name = "file";
	node.mode = 0640;
	node.size = size;
	node.items = it;
	node.nitems = n;
	CHECK_RC(cf_bk_writer_add_tree(w, &tree, tid), 0);
	CHECK_RC(cf_bk_writer_flush(w), 0);
	cf_bk_writer_stats(w, &st);
	CHECK(st.packs >= 1 && st.indexes == 1);
	CHECK(st.new_blobs == n + 1 - (st.blobs - st.new_blobs));
	/* Compression: the two text parts dedup or shrink. */
	CHECK(st.stored_bytes < len);
	cf_bk_writer_free(w);
	w = NULL;
	snap_min(&snap, 1, tid, cons);
	snap.stats.files = 1;
	CHECK_RC(cf_bk_repo_snapshot_save(r, &snap, sid), 0);

	/* A second handle sees it all from the store alone. */
	r2 = open_repo(k, tenant_a, 0, NULL);
	CHECK(r2 != NULL);
	CHECK_RC(cf_bk_repo_snapshot_list(r2, &ids, &nsnap), 0);
	CHECK(nsnap == 1 && memcmp(ids[0], sid, 32) == 0);
	free(ids);
	CHECK_RC(cf_bk_repo_snapshot_load(r2, sid, &sb), 0);
	CHECK(memcmp(sb->tree, tid, 32) == 0);
	CHECK_RC(cf_bk_repo_tree_load(r2, sb->tree, &tb), 0);
	CHECK(tb->count == 1 && tb->nodes[0].nitems == n);
	CHECK(check_items(r2, tb->nodes[0].items, n, data, len) == 0);
	cf_bk_tree_free(tb);
	cf_bk_snapshot_free(sb);

	/* Dedup: the same stream again stores nothing new. */
	CHECK_RC(cf_bk_writer_new(&w, r2, nthreads), 0);
	s.off = 0;
	CHECK_RC(cf_bk_writer_add_stream(w, stream_rd, &s, &it2, &n2, &size),
	    0);
	CHECK(n2 == n && memcmp(it, it2, n * sizeof(*it)) == 0);
	CHECK_RC(cf_bk_writer_flush(w), 0);
	cf_bk_writer_stats(w, &st);
	CHECK(st.new_blobs == 0 && st.packs == 0 && st.indexes == 0);
	cf_bk_writer_free(w);
	cf_bk_repo_free(r2);
	cf_bk_repo_free(r);
	free(it);
	free(it2);
	free(data);
	cf_bk_keys_free(k);
}

static void
writer_round_trip_sync(void)	/* [BK-CRASH-1] order, [BK-PACK-3] */
{
	writer_round_trip_n(0);
}

static void
writer_round_trip_threads(void)
{
	writer_round_trip_n(2);
}

static void
writer_small_blobs(void)	/* many blobs: several packs and indexes */
{
	struct cf_bk_keys *k = bkt_keys_x(0);
	struct cf_bk_repo *r, *r2;
	struct cf_bk_writer *w = NULL;
	struct cf_bk_writer_stats st;
	unsigned char id[32], *buf;
	size_t i, len;
	uint32_t v[64];

	CHECK(k != NULL);
	r = open_repo(k, tenant_a, 1, NULL);
	CHECK(r != NULL);
	CHECK_RC(cf_bk_writer_new(&w, r, 2), 0);
	for (i = 0; i < 20000; i++) {
		memset(v, 0, sizeof(v));
		v[0] = (uint32_t)i;
		CHECK_RC(cf_bk_writer_add(w, CF_BK_BLOB_DATA, v,
		    sizeof(v) - (i % 64), id), 0);
	}
	CHECK_RC(cf_bk_writer_flush(w), 0);
	cf_bk_writer_stats(w, &st);
	CHECK(st.new_blobs == 20000);
	cf_bk_writer_free(w);
	r2 = open_repo(k, tenant_a, 0, NULL);
	CHECK(r2 != NULL);
	CHECK(cf_bk_index_blobs(cf_bk_repo_index(r2)) == 20000);
	for (i = 0; i < 20000; i += 997) {
		memset(v, 0, sizeof(v));
		v[0] = (uint32_t)i;
		cf_bk_blob_id(k, v, sizeof(v) - (i % 64), id);
		CHECK_RC(cf_bk_repo_blob_load(r2, CF_BK_BLOB_DATA, id, &buf,
		    &len), 0);
		CHECK(len == sizeof(v) - (i % 64) && memcmp(buf, v, len) == 0);
		free(buf);
	}
	cf_bk_repo_free(r2);
	cf_bk_repo_free(r);
	cf_bk_keys_free(k);
}

/* ---- files hashed by the workers (cf_bk_writer_file_*) ------------------- */

/*
 * The contents of file i of files_add: many small files of three
 * contents (one chunk each: the same new blob reaches both workers at
 * once), a mixed 6 MiB stream now and then, holes.
 */
#define NFILES 300

static const unsigned char *
file_data(unsigned i, unsigned char *const small[3], const unsigned char *big,
    size_t *len)
{
	if (i % 50 == 7) {
		*len = 6U << 20;
		return big;
	}
	*len = 20000 + 1000 * (i % 3);
	return small[i % 3];
}

/*
 * Adds NFILES files to w, taking none until all are in (as a directory's
 * walk does); leading and trailing holes on every fifth.  it[i], n[i]:
 * file i's items.
 */
static int
files_add(struct cf_bk_writer *w, unsigned char *const small[3],
    const unsigned char *big, struct cf_bk_item **it, size_t *n)
{
	struct cf_bk_wfile **wf = calloc(NFILES, sizeof(*wf));
	struct stream s;
	uint64_t size;
	size_t len;
	unsigned i;
	int rc = 0;

	if (wf == NULL)
		return -ENOMEM;
	for (i = 0; i < NFILES && rc == 0; i++) {
		s.b = file_data(i, small, big, &len);
		s.len = len;
		s.off = 0;
		rc = cf_bk_writer_file_new(w, &wf[i]);
		if (rc == 0 && i % 5 == 0)
			rc = cf_bk_writer_file_hole(w, wf[i], 4096);
		if (rc == 0)
			rc = cf_bk_writer_file_add(w, wf[i], stream_rd, &s,
			    &size);
		if (rc == 0 && size != len)
			rc = -EIO;
		if (rc == 0 && i % 5 == 0)
			rc = cf_bk_writer_file_hole(w, wf[i], 8192);
	}
	for (i = 0; i < NFILES; i++) {
		if (rc == 0 && wf[i] != NULL)
			rc = cf_bk_writer_file_take(w, wf[i], &it[i], &n[i]);
		else
			cf_bk_writer_file_free(w, wf[i]);
	}
	free(wf);
	return rc;
}

static void
files_free(struct cf_bk_item **it)
{
	unsigned i;

	for (i = 0; i < NFILES; i++)
		free(it[i]);
}

/*
 * Two workers, the same new chunk in many files queued at once: each
 * distinct blob is stored once (the repository's blob count), every
 * file's items name it, and the items and the tree are those of a
 * writer without threads and of one file at a time (add_stream): the
 * pipeline changes no id, no order, no hole.
 */
static void
writer_files_dedup(void)
{
	struct cf_bk_keys *k = bkt_keys_x(0);
	struct cf_bk_repo *r, *r2;
	struct cf_bk_writer *w = NULL;
	struct cf_bk_writer_stats st;
	struct cf_bk_item *it[NFILES], *it0[NFILES], *one;
	struct cf_bk_node *nodes;
	struct cf_bk_tree tree;
	unsigned char *small[3], *big, tid[32], tid0[32];
	size_t n[NFILES], n0[NFILES], len, n1, nbig = 0, i;
	struct stream s;
	uint64_t size;
	char names[NFILES][8];

	CHECK(k != NULL);
	for (i = 0; i < 3; i++) {
		small[i] = bkt_random(23000, (unsigned)(40 + i));
		CHECK(small[i] != NULL);
	}
	big = mixed(&len, 9);
	CHECK(big != NULL);
	r = open_repo(k, tenant_a, 1, NULL);
	CHECK(r != NULL);
	memset(it, 0, sizeof(it));
	memset(it0, 0, sizeof(it0));
	CHECK_RC(cf_bk_writer_new(&w, r, 2), 0);
	CHECK_RC(files_add(w, small, big, it, n), 0);
	nodes = calloc(NFILES, sizeof(*nodes));
	CHECK(nodes != NULL);
	for (i = 0; i < NFILES; i++) {
		snprintf(names[i], sizeof(names[i]), "f%03zu", i);
		nodes[i].type = CF_BK_NODE_FILE;
		nodes[i].name = names[i];
		nodes[i].mode = 0600;
		nodes[i].items = it[i];
		nodes[i].nitems = n[i];
		file_data((unsigned)i, small, big, &len);
		nodes[i].size = len + (i % 5 == 0 ? 4096 + 8192 : 0);
	}
	tree = (struct cf_bk_tree){ nodes, NFILES, NULL };
	CHECK_RC(cf_bk_writer_add_tree(w, &tree, tid), 0);
	CHECK_RC(cf_bk_writer_flush(w), 0);
	cf_bk_writer_stats(w, &st);
	cf_bk_writer_free(w);
	w = NULL;
	/* Blobs: 3 small, the big stream's chunks, the tree. */
	for (i = 0; i < NFILES; i++)
		if (i % 50 == 7)
			nbig = n[i];
	CHECK(nbig >= 3);
	CHECK(st.new_blobs == 3 + nbig + 1);
	CHECK(st.blobs == 1 + (NFILES - NFILES / 50) + (NFILES / 50) * nbig);
	r2 = open_repo(k, tenant_a, 0, NULL);
	CHECK(r2 != NULL);
	CHECK(cf_bk_index_blobs(cf_bk_repo_index(r2)) == 3 + nbig + 1);
	for (i = 0; i < NFILES; i++) {
		file_data((unsigned)i, small, big, &len);
		if (i % 5 == 0) {
			CHECK(n[i] >= 3 && it[i][0].hole == 4096 &&
			    it[i][n[i] - 1].hole == 8192);
			CHECK(check_items(r2, it[i] + 1, n[i] - 2,
			    file_data((unsigned)i, small, big, &len), len) ==
			    0);
		} else {
			CHECK(check_items(r2, it[i], n[i],
			    file_data((unsigned)i, small, big, &len), len) ==
			    0);
		}
	}
	cf_bk_repo_free(r2);

	/* No threads: the same items, the same tree id. */
	CHECK_RC(cf_bk_writer_new(&w, r, 0), 0);
	CHECK_RC(files_add(w, small, big, it0, n0), 0);
	for (i = 0; i < NFILES; i++) {
		CHECK(n0[i] == n[i]);
		CHECK(memcmp(it0[i], it[i], n[i] * sizeof(*it[i])) == 0);
		nodes[i].items = it0[i];
	}
	CHECK_RC(cf_bk_writer_add_tree(w, &tree, tid0), 0);
	CHECK(memcmp(tid, tid0, 32) == 0);
	/* One file at a time through add_stream: the same ids. */
	for (i = 0; i < NFILES; i += 7) {
		s.b = file_data((unsigned)i, small, big, &len);
		s.len = len;
		s.off = 0;
		CHECK_RC(cf_bk_writer_add_stream(w, stream_rd, &s, &one, &n1,
		    &size), 0);
		CHECK(n1 == n[i] - (i % 5 == 0 ? 2 : 0));
		CHECK(memcmp(one, it[i] + (i % 5 == 0 ? 1 : 0),
		    n1 * sizeof(*one)) == 0);
		free(one);
	}
	CHECK_RC(cf_bk_writer_flush(w), 0);
	cf_bk_writer_stats(w, &st);
	CHECK(st.new_blobs == 0 && st.packs == 0);
	cf_bk_writer_free(w);
	cf_bk_repo_free(r);
	free(nodes);
	files_free(it);
	files_free(it0);
	for (i = 0; i < 3; i++)
		free(small[i]);
	free(big);
	cf_bk_keys_free(k);
}

/* ---- two writers at once [BK-CRASH-2] -------------------------------------- */

struct conc {
	const struct cf_bk_keys *k;
	unsigned seed;
	struct cf_bk_item *it;
	size_t n;
	unsigned char *data;
	size_t len;
	int rc;
};

static void *
conc_run(void *arg)
{
	struct conc *c = arg;
	struct cf_bk_repo *r;
	struct cf_bk_writer *w = NULL;
	struct stream s;
	uint64_t size;
	int rc;

	r = open_repo(c->k, tenant_a, 0, &rc);
	if (r == NULL) {
		c->rc = rc;
		return NULL;
	}
	s = (struct stream){ c->data, c->len, 0 };
	rc = cf_bk_writer_new(&w, r, 2);
	if (rc == 0)
		rc = cf_bk_writer_add_stream(w, stream_rd, &s, &c->it, &c->n,
		    &size);
	if (rc == 0)
		rc = cf_bk_writer_flush(w);
	cf_bk_writer_free(w);
	cf_bk_repo_free(r);
	c->rc = rc;
	return NULL;
}

static void
concurrent_writers(void)	/* [BK-CRASH-2] */
{
	struct cf_bk_keys *k = bkt_keys_x(0);
	struct cf_bk_repo *r;
	struct conc c[2];
	pthread_t t[2];
	size_t bad = 9, i;

	CHECK(k != NULL);
	r = open_repo(k, tenant_a, 1, NULL);
	CHECK(r != NULL);
	cf_bk_repo_free(r);
	for (i = 0; i < 2; i++) {
		memset(&c[i], 0, sizeof(c[i]));
		c[i].k = k;
		/* Shared text parts, distinct random parts. */
		c[i].data = mixed(&c[i].len, (unsigned)(i + 3));
		CHECK(pthread_create(&t[i], NULL, conc_run, &c[i]) == 0);
	}
	for (i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	CHECK_RC(c[0].rc, 0);
	CHECK_RC(c[1].rc, 0);
	r = open_repo(k, tenant_a, 0, NULL);
	CHECK(r != NULL);
	CHECK_RC(cf_bk_repo_index_load(r, &bad), 0);
	CHECK(bad == 0);
	CHECK(count(cf_bk_repo_store(r), CF_BK_KIND_INDEX) == 2);
	for (i = 0; i < 2; i++)
		CHECK(check_items(r, c[i].it, c[i].n, c[i].data, c[i].len) ==
		    0);
	cf_bk_repo_free(r);
	for (i = 0; i < 2; i++) {
		free(c[i].it);
		free(c[i].data);
	}
	cf_bk_keys_free(k);
}

/* ---- fault store: a crash between packs and index [BK-CRASH-1] ------------- */

struct fault {
	struct cf_bk_store *inner;
	enum cf_bk_kind fail_kind;	/* puts of this kind fail */
};

static int
f_put(void *ctx, enum cf_bk_kind kind, const char *name,
    const unsigned char *buf, size_t len, int excl)
{
	struct fault *f = ctx;

	if (kind == f->fail_kind)
		return -EIO;
	return cf_bk_store_put(f->inner, kind, name, buf, len, excl);
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
	return cf_bk_store_del(((struct fault *)ctx)->inner, kind, name);
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

/*
 * A new repository, opened again through a store whose puts of kind
 * fail_kind can be made to fail (*fp); NULL if it cannot be set up.
 */
static struct cf_bk_repo *
fault_repo(struct cf_bk_keys *k, enum cf_bk_kind fail_kind, struct fault **fp)
{
	struct cf_bk_store *inner = NULL, *s = NULL;
	struct cf_bk_repo *r;
	struct fault *f;
	char url[4096];

	r = open_repo(k, tenant_a, 1, NULL);
	if (r == NULL)
		return NULL;
	cf_bk_repo_free(r);
	if (cf_bk_store_open_url(&inner, repo_url(url, sizeof(url)), 0) < 0)
		return NULL;
	f = calloc(1, sizeof(*f));
	if (f == NULL) {
		cf_bk_store_free(inner);
		return NULL;
	}
	f->inner = inner;
	f->fail_kind = fail_kind;
	if (cf_bk_store_new(&s, &fault_ops, f) < 0) {
		f_close(f);
		return NULL;
	}
	if (cf_bk_repo_open(&r, s, k, tenant_a) < 0) {
		cf_bk_store_free(s);
		return NULL;
	}
	*fp = f;
	return r;
}

/*
 * A worker's failure (every pack put fails) while files are in flight:
 * adding or taking fails with it, files not taken are freed without a
 * hang, flush fails, and nothing is stored: no pack, no index (so the
 * backup command saves no snapshot: it saves one only after flush).
 */
static void
writer_files_store_fails(void)	/* [BK-CRASH-1] */
{
	struct cf_bk_keys *k = bkt_keys_x(0);
	struct cf_bk_repo *r = NULL, *r2;
	struct cf_bk_writer *w = NULL;
	struct cf_bk_wfile *wf[40];
	struct cf_bk_item *it;
	struct fault *f;
	struct stream st;
	unsigned char *data, id[32];
	uint64_t size;
	size_t i, n, taken = 0;
	int rc = 0, rc2;

	CHECK(k != NULL);
	r = fault_repo(k, CF_BK_KIND_PACK, &f);
	CHECK(r != NULL);
	CHECK_RC(cf_bk_writer_new(&w, r, 2), 0);
	/* 40 MiB of new data: packs fill (and fail) while files go in. */
	data = bkt_random(41U << 20, 5);
	CHECK(data != NULL);
	memset(wf, 0, sizeof(wf));
	for (i = 0; i < 40 && rc == 0; i++) {
		st = (struct stream){ data + (i << 20), 1U << 20, 0 };
		rc = cf_bk_writer_file_new(w, &wf[i]);
		if (rc == 0)
			rc = cf_bk_writer_file_add(w, wf[i], stream_rd, &st,
			    &size);
		/* Take every other file at once, the rest at the end. */
		if (rc == 0 && i % 2 == 0) {
			rc = cf_bk_writer_file_take(w, wf[i], &it, &n);
			wf[i] = NULL;
			free(it);
			taken++;
		}
	}
	CHECK(rc == 0 || rc == -EIO);
	for (i = 0; i < 40; i++) {
		if (wf[i] == NULL)
			continue;
		if (i % 4 == 1) {
			cf_bk_writer_file_free(w, wf[i]);
			continue;
		}
		/*
		 * -EIO once the failed put is known; a file whose ids were
		 * all computed before that may still be taken (flush fails
		 * below, so no snapshot could name it).
		 */
		rc2 = cf_bk_writer_file_take(w, wf[i], &it, &n);
		CHECK((rc2 == -EIO && it == NULL && n == 0) ||
		    (rc2 == 0 && it != NULL && n > 0));
		free(it);
	}
	CHECK_RC(cf_bk_writer_flush(w), -EIO);
	CHECK_RC(cf_bk_writer_add(w, CF_BK_BLOB_DATA, data, 10, id), -EIO);
	CHECK(taken > 0);
	cf_bk_writer_free(w);
	cf_bk_repo_free(r);
	r2 = open_repo(k, tenant_a, 0, NULL);
	CHECK(r2 != NULL);
	CHECK(count(cf_bk_repo_store(r2), CF_BK_KIND_PACK) == 0);
	CHECK(count(cf_bk_repo_store(r2), CF_BK_KIND_INDEX) == 0);
	cf_bk_repo_free(r2);
	free(data);
	cf_bk_keys_free(k);
}

static void
crash_orphans(void)	/* [BK-CRASH-1] */
{
	struct cf_bk_keys *k = bkt_keys_x(0);
	struct cf_bk_repo *r = NULL, *r2;
	struct cf_bk_writer *w = NULL;
	struct fault *f;
	unsigned char *data, id[32], *buf;
	size_t blen;

	CHECK(k != NULL);
	r = fault_repo(k, CF_BK_KIND_INDEX, &f);
	CHECK(r != NULL);
	CHECK_RC(cf_bk_writer_new(&w, r, 2), 0);
	data = bkt_random(100000, 11);
	CHECK(data != NULL);
	CHECK_RC(cf_bk_writer_add(w, CF_BK_BLOB_DATA, data, 100000, id), 0);
	CHECK_RC(cf_bk_writer_flush(w), -EIO);
	/* Sticky: the writer refuses more work. */
	CHECK_RC(cf_bk_writer_add(w, CF_BK_BLOB_DATA, data, 10, id), -EIO);
	cf_bk_writer_free(w);
	cf_bk_repo_free(r);
	/* The pack is there, unindexed: readers do not see the blob. */
	r2 = open_repo(k, tenant_a, 0, NULL);
	CHECK(r2 != NULL);
	CHECK(count(cf_bk_repo_store(r2), CF_BK_KIND_PACK) == 1);
	CHECK(count(cf_bk_repo_store(r2), CF_BK_KIND_INDEX) == 0);
	CHECK_RC(cf_bk_repo_blob_load(r2, CF_BK_BLOB_DATA, id, &buf, &blen),
	    -ENOENT);
	/* A later run stores it again and indexes it. */
	w = NULL;
	CHECK_RC(cf_bk_writer_new(&w, r2, 0), 0);
	CHECK_RC(cf_bk_writer_add(w, CF_BK_BLOB_DATA, data, 100000, id), 0);
	CHECK_RC(cf_bk_writer_flush(w), 0);
	cf_bk_writer_free(w);
	cf_bk_repo_free(r2);
	r2 = open_repo(k, tenant_a, 0, NULL);
	CHECK(r2 != NULL);
	CHECK_RC(cf_bk_repo_blob_load(r2, CF_BK_BLOB_DATA, id, &buf, &blen), 0);
	CHECK(blen == 100000 && memcmp(buf, data, blen) == 0);
	free(buf);
	cf_bk_repo_free(r2);
	free(data);
	cf_bk_keys_free(k);
}

/*
 * A backup killed after some packs ([BK-CRASH-1], docs/s3.md): the
 * writer puts an index at most 30 s after the last one, so a rerun
 * stores only the blobs of packs put since.  Here a child adds 48 blobs
 * of 1 MiB (two writer threads, each filling its own pack of 16 MiB,
 * 15 blobs), waits until two packs (every: 0, their indexes) are stored
 * and dies without a flush; the rerun adds the same blobs.  48, not 40:
 * the threads take blobs as they come, and a split of 25 and 15 blobs
 * makes one full pack of 40, never two (seen under load: the child
 * waited to its deadline); any split of 48 fills at least two.
 */
enum { RS_N = 48, RS_LEN = 1 << 20 };

static void
resume_run(int64_t every, size_t *found, uint64_t *stored)
{
	struct cf_bk_keys *k = bkt_keys_x(0);
	struct cf_bk_repo *r;
	struct cf_bk_writer *w = NULL;
	struct cf_bk_writer_stats st;
	unsigned char id[32], *d, *buf;
	size_t blen;
	unsigned i;
	int status = -1;
	pid_t pid;

	*found = 0;
	*stored = 0;
	CHECK(k != NULL);
	r = open_repo(k, tenant_a, 1, NULL);
	CHECK(r != NULL);
	cf_bk_repo_free(r);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		r = open_repo(k, tenant_a, 0, NULL);
		if (r == NULL || cf_bk_writer_new(&w, r, 2) != 0)
			_exit(1);
		bk_writer_index_every(w, every);
		for (i = 0; i < RS_N; i++) {
			d = bkt_random(RS_LEN, 500 + i);
			if (d == NULL || cf_bk_writer_add(w, CF_BK_BLOB_DATA,
			    d, RS_LEN, id) != 0)
				_exit(1);
			free(d);
		}
		/* A guard only: two packs come in seconds, but a
		 * sanitizer build beside other tests on two cores is
		 * slow. */
		for (i = 0; i < 30000; i++) {
			if (count(cf_bk_repo_store(r), every == 0 ?
			    CF_BK_KIND_INDEX : CF_BK_KIND_PACK) >= 2)
				_exit(0);	/* killed: no flush */
			usleep(10000);
		}
		_exit(2);
	}
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	r = open_repo(k, tenant_a, 0, NULL);
	CHECK(r != NULL);
	for (i = 0; i < RS_N; i++) {
		d = bkt_random(RS_LEN, 500 + i);
		CHECK(d != NULL);
		cf_bk_blob_id(k, d, RS_LEN, id);
		if (cf_bk_repo_blob_load(r, CF_BK_BLOB_DATA, id, &buf,
		    &blen) == 0) {
			CHECK(blen == RS_LEN && memcmp(buf, d, blen) == 0);
			free(buf);
			(*found)++;
		}
		free(d);
	}
	CHECK_RC(cf_bk_writer_new(&w, r, 2), 0);
	for (i = 0; i < RS_N; i++) {
		d = bkt_random(RS_LEN, 500 + i);
		CHECK(d != NULL);
		CHECK_RC(cf_bk_writer_add(w, CF_BK_BLOB_DATA, d, RS_LEN, id), 0);
		free(d);
	}
	CHECK_RC(cf_bk_writer_flush(w), 0);
	cf_bk_writer_stats(w, &st);
	*stored = st.new_blobs;
	cf_bk_writer_free(w);
	cf_bk_repo_free(r);
	cf_bk_keys_free(k);
}

static void
resume_indexed(void)	/* [BK-CRASH-4] */
{
	size_t found;
	uint64_t stored;

	resume_run(0, &found, &stored);
	printf("# killed with an index per pack: %zu of %d blobs indexed, "
	    "%llu stored again\n", found, RS_N, (unsigned long long)stored);
	/* Two full packs of 1 MiB blobs: 15 each. */
	CHECK(found >= 2 * 14);
	CHECK(stored == RS_N - found);
}

static void
resume_control(void)	/* [BK-CRASH-4]: what the interval changes */
{
	size_t found;
	uint64_t stored;

	resume_run(INT64_MAX, &found, &stored);
	CHECK(found == 0);
	CHECK(stored == RS_N);
}

/* ---- damage ------------------------------------------------------------------ */

static void
damaged_objects(void)	/* [BK-LAY-3] [BK-PACK-3] */
{
	struct cf_bk_keys *k = bkt_keys_x(0);
	struct cf_bk_repo *r;
	struct cf_bk_writer *w = NULL;
	struct cf_bk_snapshot snap, *sb = NULL;
	struct cf_bk_blob_loc loc;
	unsigned char id[32], sid[32], *data, *buf, (*ids)[32] = NULL;
	char cons[] = "none", name[65], rel[256];
	size_t len, n, bad = 0;
	int rc;

	CHECK(k != NULL);
	r = open_repo(k, tenant_a, 1, NULL);
	CHECK(r != NULL);
	CHECK_RC(cf_bk_writer_new(&w, r, 0), 0);
	data = bkt_random(5000, 2);
	CHECK(data != NULL);
	CHECK_RC(cf_bk_writer_add(w, CF_BK_BLOB_DATA, data, 5000, id), 0);
	CHECK_RC(cf_bk_writer_flush(w), 0);
	cf_bk_writer_free(w);
	snap_min(&snap, 0, NULL, cons);
	memset(snap.tenant, 0, sizeof(snap.tenant));
	CHECK_RC(cf_bk_repo_snapshot_save(r, &snap, sid), 0);
	/* Flip a byte of the blob in its pack: -EBADMSG, never data. */
	CHECK_RC(cf_bk_index_lookup(cf_bk_repo_index(r), CF_BK_BLOB_DATA, id,
	    &loc), 0);
	bk_name(loc.pack, name);
	snprintf(rel, sizeof(rel), "data/%.2s/%s", name, name);
	buf = cf_test_read_file(repo_path(rel), &len);
	CHECK(buf != NULL && len == loc.pack_size);
	buf[loc.offset + 100] ^= 1;
	CHECK(unlink(repo_path(rel)) == 0);
	CHECK_RC(cf_test_write_file(repo_path(rel), buf, len), 0);
	free(buf);
	rc = cf_bk_repo_blob_load(r, CF_BK_BLOB_DATA, id, &buf, &len);
	CHECK(rc == -EBADMSG && buf == NULL);
	/* A truncated pack: the range read fails. */
	CHECK(truncate(repo_path(rel), (off_t)(loc.offset + 10)) == 0);
	CHECK_RC(cf_bk_repo_blob_load(r, CF_BK_BLOB_DATA, id, &buf, &len),
	    -EPROTO);
	/* A snapshot with a flipped byte, or renamed: -EBADMSG. */
	bk_name(sid, name);
	snprintf(rel, sizeof(rel), "snapshots/%s", name);
	buf = cf_test_read_file(repo_path(rel), &len);
	CHECK(buf != NULL);
	buf[len - 1] ^= 1;
	CHECK(unlink(repo_path(rel)) == 0);
	CHECK_RC(cf_test_write_file(repo_path(rel), buf, len), 0);
	free(buf);
	CHECK_RC(cf_bk_repo_snapshot_load(r, sid, &sb), -EBADMSG);
	CHECK_RC(cf_bk_repo_snapshot_list(r, &ids, &n), 0);
	CHECK(n == 1);
	free(ids);
	/* A truncated index is skipped and counted, not fatal. */
	CHECK_RC(cf_bk_repo_index_load(r, &bad), 0);
	CHECK(bad == 0 && cf_bk_index_blobs(cf_bk_repo_index(r)) == 1);
	{
		struct cf_bk_store *s = cf_bk_repo_store(r);
		char iname[65];

		iname[0] = '\0';
		CHECK_RC(cf_bk_store_list(s, CF_BK_KIND_INDEX, first_name,
		    iname), 1);
		snprintf(rel, sizeof(rel), "index/%s", iname);
		CHECK(truncate(repo_path(rel), 50) == 0);
	}
	CHECK_RC(cf_bk_repo_index_load(r, &bad), 0);
	CHECK(bad == 1 && cf_bk_index_blobs(cf_bk_repo_index(r)) == 0);
	cf_bk_repo_free(r);
	free(data);
	cf_bk_keys_free(k);
}

/* ---- locks [BK-LOCK-1] --------------------------------------------------------- */

static void
locks(void)	/* [BK-LOCK-1] */
{
	struct cf_bk_keys *k = bkt_keys_x(0);
	struct cf_bk_repo *r;
	struct cf_bk_lock *a = NULL, *b = NULL, *x = NULL;

	CHECK(k != NULL);
	unsetenv("COFFER_NOW");
	r = open_repo(k, tenant_a, 1, NULL);
	CHECK(r != NULL);
	CHECK_RC(cf_bk_repo_lock(r, 0, "h1", &a), 0);
	CHECK_RC(cf_bk_repo_lock(r, 0, "h2", &b), 0);
	CHECK(count(cf_bk_repo_store(r), CF_BK_KIND_LOCK) == 2);
	CHECK_RC(cf_bk_repo_lock(r, 1, "h3", &x), -EBUSY);
	CHECK(x == NULL);
	CHECK(count(cf_bk_repo_store(r), CF_BK_KIND_LOCK) == 2);
	CHECK_RC(cf_bk_lock_refresh(a), 0);
	CHECK(count(cf_bk_repo_store(r), CF_BK_KIND_LOCK) == 2);
	CHECK_RC(cf_bk_lock_release(a), 0);
	CHECK_RC(cf_bk_lock_release(b), 0);
	CHECK(count(cf_bk_repo_store(r), CF_BK_KIND_LOCK) == 0);
	CHECK_RC(cf_bk_repo_lock(r, 1, "h3", &x), 0);
	CHECK_RC(cf_bk_repo_lock(r, 0, "h1", &a), -EBUSY);
	/* A stale exclusive lock (an hour later) does not block. */
	setenv("COFFER_NOW", "2099-01-01T00:00:00Z", 1);
	CHECK_RC(cf_bk_repo_lock(r, 0, "h1", &a), 0);
	unsetenv("COFFER_NOW");
	CHECK_RC(cf_bk_lock_release(a), 0);
	CHECK_RC(cf_bk_lock_release(x), 0);
	CHECK_RC(cf_bk_lock_release(NULL), 0);
	cf_bk_repo_free(r);
	cf_bk_keys_free(k);
}

/*
 * A lock left by a process of this host that is gone (killed at a job
 * time limit) does not block; one of a live process does.  [BK-LOCK-1]
 */
static void
locks_dead_holder(void)
{
	struct cf_bk_keys *k = bkt_keys_x(0);
	struct cf_bk_repo *r;
	struct cf_bk_lock *x = NULL;
	int p[2], status;
	pid_t pid;
	char c;

	CHECK(k != NULL);
	unsetenv("COFFER_NOW");
	r = open_repo(k, tenant_a, 1, NULL);
	CHECK(r != NULL && pipe(p) == 0);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		struct cf_bk_lock *cl;

		close(p[0]);
		if (cf_bk_repo_lock(r, 0, "this-host", &cl) != 0)
			_exit(1);
		(void)!write(p[1], "L", 1);
		pause();	/* holds it until killed, never releases */
		_exit(0);
	}
	close(p[1]);
	CHECK(read(p[0], &c, 1) == 1);
	close(p[0]);
	/* Alive: the exclusive lock must wait, on this host or another. */
	CHECK_RC(cf_bk_repo_lock(r, 1, "this-host", &x), -EBUSY);
	CHECK_RC(cf_bk_repo_lock(r, 1, "other-host", &x), -EBUSY);
	CHECK(count(cf_bk_repo_store(r), CF_BK_KIND_LOCK) == 1);
	CHECK(kill(pid, SIGKILL) == 0 && waitpid(pid, &status, 0) == pid);
	/* Gone: another host cannot tell, so it still waits ... */
	CHECK_RC(cf_bk_repo_lock(r, 1, "other-host", &x), -EBUSY);
	/* ... this host can: the dead holder's lock is removed. */
	CHECK_RC(cf_bk_repo_lock(r, 1, "this-host", &x), 0);
	CHECK(count(cf_bk_repo_store(r), CF_BK_KIND_LOCK) == 1);
	CHECK_RC(cf_bk_lock_release(x), 0);
	CHECK(count(cf_bk_repo_store(r), CF_BK_KIND_LOCK) == 0);
	cf_bk_repo_free(r);
	cf_bk_keys_free(k);
}

/* ---- the pack cache of remote restores ------------------------------------ */

/*
 * A local store that says it is "s3" (so the repository uses its pack
 * cache), counts range reads, whole-pack ones apart, and fails the
 * next `fail` range reads with -EIO.
 */
struct remote {
	struct cf_bk_store *inner;
	pthread_mutex_t m;
	unsigned ranges, whole, fail;
	uint64_t part_bytes;	/* bytes of the reads that were not whole */
};

static int
rm_range(void *ctx, enum cf_bk_kind kind, const char *name, uint64_t off,
    size_t len, unsigned char *buf)
{
	struct remote *m = ctx;
	uint64_t size = 0;
	int fail;

	(void)!cf_bk_store_stat(m->inner, kind, name, &size);
	pthread_mutex_lock(&m->m);
	m->ranges++;
	if (off == 0 && len == size)
		m->whole++;
	else
		m->part_bytes += len;
	fail = m->fail > 0;
	if (fail)
		m->fail--;
	pthread_mutex_unlock(&m->m);
	if (fail)
		return -EIO;
	return cf_bk_store_get_range(m->inner, kind, name, off, len, buf);
}

/*
 * The counters under the lock: the cache's loader threads may still be
 * reading (a prefetch) while the test looks.
 */
static void
rm_counts(struct remote *m, unsigned *ranges, unsigned *whole)
{
	pthread_mutex_lock(&m->m);
	*ranges = m->ranges;
	*whole = m->whole;
	pthread_mutex_unlock(&m->m);
}

/* Zeroes the counters and makes the next FAIL reads fail. */
static void
rm_reset(struct remote *m, unsigned fail)
{
	pthread_mutex_lock(&m->m);
	m->ranges = m->whole = 0;
	m->part_bytes = 0;
	m->fail = fail;
	pthread_mutex_unlock(&m->m);
}

static void
rm_close(void *ctx)
{
	struct remote *m = ctx;

	cf_bk_store_free(m->inner);
	pthread_mutex_destroy(&m->m);
	free(m);
}

/* Puts at once as S3's default connections: the writer runs 4 uploaders. */
static unsigned
rm_parallel_puts(void *ctx)
{
	(void)ctx;
	return 4;
}

static const struct cf_bk_store_ops remote_ops = {
	"s3", f_put, f_get, rm_range, f_stat, f_list, f_del, rm_close, NULL, NULL,
	rm_parallel_puts,
};

/*
 * The repository at repo_url() opened over a remote wrapper (*mp), its
 * index loaded; NULL on failure.
 */
static struct cf_bk_repo *
remote_repo(const struct cf_bk_keys *k, struct remote **mp)
{
	struct cf_bk_store *inner = NULL, *s = NULL;
	struct cf_bk_repo *r = NULL;
	struct remote *m;
	char url[4096];

	*mp = NULL;
	if (cf_bk_store_open_url(&inner, repo_url(url, sizeof(url)), 0) != 0)
		return NULL;
	m = calloc(1, sizeof(*m));
	if (m == NULL) {
		cf_bk_store_free(inner);
		return NULL;
	}
	m->inner = inner;
	pthread_mutex_init(&m->m, NULL);
	if (cf_bk_store_new(&s, &remote_ops, m) != 0) {
		rm_close(m);
		return NULL;
	}
	if (cf_bk_repo_open(&r, s, k, tenant_a) != 0) {
		cf_bk_store_free(s);	/* closes m and inner */
		return NULL;
	}
	if (cf_bk_repo_index_load(r, NULL) != 0) {
		cf_bk_repo_free(r);
		return NULL;
	}
	*mp = m;
	return r;
}

#define PC_BLOBS 6
#define PC_LEN 70000

struct pc_job {
	struct cf_bk_repo *r;
	unsigned char (*ids)[32];
	unsigned char **data;
	int bad;
};

static void *
pc_thread(void *arg)
{
	struct pc_job *j = arg;
	struct cf_bk_blob_reader *br = NULL;
	unsigned char *buf;
	size_t len;
	int i, round;

	if (cf_bk_blob_reader_new(&br, j->r) < 0) {
		j->bad++;
		return NULL;
	}
	for (round = 0; round < 3; round++) {
		for (i = 0; i < PC_BLOBS; i++) {
			cf_bk_repo_prefetch(j->r, CF_BK_BLOB_DATA,
			    j->ids[(i + 1) % PC_BLOBS]);
			if (cf_bk_blob_reader_load(br, CF_BK_BLOB_DATA,
			    j->ids[i], &buf, &len) < 0) {
				j->bad++;
				continue;
			}
			if (len != PC_LEN || memcmp(buf, j->data[i], len) != 0)
				j->bad++;
			free(buf);
		}
	}
	cf_bk_blob_reader_free(br);
	return NULL;
}

/* Loads blobs 0, 1, 2 and 0 again; 0 if each is the data it should be. */
static int
load_0120(struct cf_bk_repo *r, unsigned char ids[][32],
    unsigned char **data)
{
	static const int order[4] = { 0, 1, 2, 0 };
	unsigned char *buf;
	size_t len;
	int i, bad = 0;

	for (i = 0; i < 4; i++) {
		if (cf_bk_repo_blob_load(r, CF_BK_BLOB_DATA, ids[order[i]],
		    &buf, &len) != 0)
			return -1;
		bad |= len != PC_LEN || memcmp(buf, data[order[i]], len) != 0;
		free(buf);
	}
	return bad ? -1 : 0;
}

static void
pack_cache(void)
{
	struct cf_bk_keys *k = bkt_keys_x(0);
	struct cf_bk_repo *r;
	struct cf_bk_writer *w = NULL;
	struct cf_bk_blob_loc loc;
	struct remote *m;
	struct pc_job job[3];
	pthread_t t[3];
	unsigned char ids[PC_BLOBS][32], *data[PC_BLOBS], *buf;
	char name[65], rel[256];
	size_t len;
	unsigned nr, nw;
	int i;

	CHECK(k != NULL);
	/* Six packs: a flush after each blob. */
	r = open_repo(k, tenant_a, 1, NULL);
	CHECK(r != NULL);
	CHECK_RC(cf_bk_writer_new(&w, r, 0), 0);
	for (i = 0; i < PC_BLOBS; i++) {
		data[i] = bkt_random(PC_LEN, 40 + i);
		CHECK(data[i] != NULL);
		CHECK_RC(cf_bk_writer_add(w, CF_BK_BLOB_DATA, data[i], PC_LEN,
		    ids[i]), 0);
		CHECK_RC(cf_bk_writer_flush(w), 0);
	}
	cf_bk_writer_free(w);
	/* Local stores: no cache, nothing started. */
	CHECK_RC(cf_bk_repo_pack_cache_start(r, 0, 2), -EINVAL);
	CHECK_RC(cf_bk_repo_pack_cache_start(r, 2, 2), 0);
	cf_bk_repo_prefetch(r, CF_BK_BLOB_DATA, ids[0]);
	cf_bk_repo_pack_cache_stop(r);
	CHECK(count(cf_bk_repo_store(r), CF_BK_KIND_PACK) == PC_BLOBS);
	cf_bk_repo_free(r);

	r = remote_repo(k, &m);
	CHECK(r != NULL);
	CHECK_RC(cf_bk_repo_pack_cache_start(r, 2, 2), 0);
	/* One whole-pack read serves every later load of that pack. */
	rm_reset(m, 0);
	for (i = 0; i < 3; i++) {
		CHECK_RC(cf_bk_repo_blob_load(r, CF_BK_BLOB_DATA, ids[0], &buf,
		    &len), 0);
		CHECK(len == PC_LEN && memcmp(buf, data[0], len) == 0);
		free(buf);
	}
	rm_counts(m, &nr, &nw);
	CHECK(nr == 1 && nw == 1);
	/* A failed load is an error, and the next load tries again. */
	rm_reset(m, 1);
	CHECK_RC(cf_bk_repo_blob_load(r, CF_BK_BLOB_DATA, ids[1], &buf, &len),
	    -EIO);
	CHECK(buf == NULL);
	CHECK_RC(cf_bk_repo_blob_load(r, CF_BK_BLOB_DATA, ids[1], &buf, &len),
	    0);
	CHECK(len == PC_LEN && memcmp(buf, data[1], len) == 0);
	free(buf);
	/* Three threads, six packs, two slots: evictions under load. */
	for (i = 0; i < 3; i++) {
		job[i].r = r;
		job[i].ids = ids;
		job[i].data = data;
		job[i].bad = 0;
		CHECK(pthread_create(&t[i], NULL, pc_thread, &job[i]) == 0);
	}
	for (i = 0; i < 3; i++) {
		CHECK(pthread_join(t[i], NULL) == 0);
		CHECK(job[i].bad == 0);
	}
	/*
	 * A read that is not of a whole pack is of one blob (every slot
	 * held a needed pack): all six blobs seal to the same length.
	 */
	CHECK_RC(cf_bk_index_lookup(cf_bk_repo_index(r), CF_BK_BLOB_DATA,
	    ids[0], &loc), 0);
	rm_counts(m, &nr, &nw);
	pthread_mutex_lock(&m->m);
	CHECK(m->part_bytes == (uint64_t)(nr - nw) * loc.desc.length);
	pthread_mutex_unlock(&m->m);
	printf("# 3 threads, 6 packs, 2 slots: %u whole packs, %u blobs "
	    "alone\n", nw, nr - nw);
	/*
	 * Two slots; pack 0 is needed by two queued files, pack 2 is hinted
	 * when both slots hold needed packs.  Pack 1, read and needed no
	 * more, is what goes, and pack 2's hint is kept, not dropped: each
	 * pack is fetched once (was 4: pack 0 evicted as the least recently
	 * used, then fetched again).
	 */
	cf_bk_repo_pack_cache_stop(r);
	CHECK_RC(cf_bk_repo_pack_cache_start(r, 1, 2), 0);
	rm_reset(m, 0);
	cf_bk_repo_prefetch(r, CF_BK_BLOB_DATA, ids[0]);
	cf_bk_repo_prefetch(r, CF_BK_BLOB_DATA, ids[1]);
	cf_bk_repo_prefetch(r, CF_BK_BLOB_DATA, ids[0]);
	cf_bk_repo_prefetch(r, CF_BK_BLOB_DATA, ids[2]);
	CHECK(load_0120(r, ids, data) == 0);
	rm_counts(m, &nr, &nw);
	CHECK(nw == 3 && nr == 3);
	/*
	 * Both slots hold packs queued files still need (0 and 1, hinted
	 * and loaded) when a reader needs pack 2 now: it reads that one
	 * blob by range, and packs 0 and 1 stay (the policy before took
	 * the slot of the pack needed last, then fetched that pack again:
	 * 4 whole packs where 2 and a blob do).
	 */
	cf_bk_repo_pack_cache_stop(r);
	CHECK_RC(cf_bk_repo_pack_cache_start(r, 1, 2), 0);
	rm_reset(m, 0);
	cf_bk_repo_prefetch(r, CF_BK_BLOB_DATA, ids[0]);
	cf_bk_repo_prefetch(r, CF_BK_BLOB_DATA, ids[1]);
	for (i = 0; i < 3000; i++) {	/* the loader, up to 30 s */
		struct cf_bk_pc_stats ps;

		cf_bk_repo_pack_cache_stats(r, &ps);
		if (ps.packs == 2)
			break;
		usleep(10000);
	}
	cf_bk_repo_prefetch(r, CF_BK_BLOB_DATA, ids[2]);
	CHECK_RC(cf_bk_repo_blob_load(r, CF_BK_BLOB_DATA, ids[2], &buf,
	    &len), 0);
	CHECK(len == PC_LEN && memcmp(buf, data[2], len) == 0);
	free(buf);
	for (i = 0; i < 2; i++) {
		CHECK_RC(cf_bk_repo_blob_load(r, CF_BK_BLOB_DATA, ids[i], &buf,
		    &len), 0);
		CHECK(len == PC_LEN && memcmp(buf, data[i], len) == 0);
		free(buf);
	}
	rm_counts(m, &nr, &nw);
	CHECK(nw == 2 && nr == 3);
	{
		struct cf_bk_pc_stats ps;

		CHECK_RC(cf_bk_index_lookup(cf_bk_repo_index(r),
		    CF_BK_BLOB_DATA, ids[2], &loc), 0);
		cf_bk_repo_pack_cache_stats(r, &ps);
		CHECK(ps.packs == 2 && ps.blobs == 1 &&
		    ps.blob_bytes == loc.desc.length &&
		    ps.pack_bytes > 2 * (uint64_t)loc.desc.length);
	}
	/*
	 * The restore's plan: pack 0 is read twice (by the first file and
	 * by the last), packs 1 and 2 once; two slots, no hints.  When pack
	 * 2 needs a slot, pack 1 (read, planned no more) goes, not pack 0
	 * (the least recently used, but planned again): 3 whole packs,
	 * where the policy without a plan fetched pack 0 twice (4; tried).
	 */
	cf_bk_repo_pack_cache_stop(r);
	CHECK_RC(cf_bk_repo_pack_cache_start(r, 1, 2), 0);
	rm_reset(m, 0);
	cf_bk_repo_pack_cache_plan(r, ids[0]);
	cf_bk_repo_pack_cache_plan(r, ids[1]);
	cf_bk_repo_pack_cache_plan(r, ids[2]);
	cf_bk_repo_pack_cache_plan(r, ids[0]);
	CHECK(load_0120(r, ids, data) == 0);
	rm_counts(m, &nr, &nw);
	CHECK(nw == 3 && nr == 3);
	/* A flipped byte in a cached pack: -EBADMSG, never data. */
	CHECK_RC(cf_bk_index_lookup(cf_bk_repo_index(r), CF_BK_BLOB_DATA,
	    ids[2], &loc), 0);
	bk_name(loc.pack, name);
	snprintf(rel, sizeof(rel), "data/%.2s/%s", name, name);
	buf = cf_test_read_file(repo_path(rel), &len);
	CHECK(buf != NULL && len == loc.pack_size);
	buf[loc.offset + 100] ^= 1;
	CHECK(unlink(repo_path(rel)) == 0);
	CHECK_RC(cf_test_write_file(repo_path(rel), buf, len), 0);
	free(buf);
	cf_bk_repo_pack_cache_stop(r);	/* drops what it held */
	CHECK_RC(cf_bk_repo_pack_cache_start(r, 1, 1), 0);
	CHECK_RC(cf_bk_repo_blob_load(r, CF_BK_BLOB_DATA, ids[2], &buf, &len),
	    -EBADMSG);
	CHECK(buf == NULL);
	cf_bk_repo_free(r);	/* stops the cache too */
	for (i = 0; i < PC_BLOBS; i++)
		free(data[i]);
	cf_bk_keys_free(k);
}

/*
 * Tree blobs go into packs of their own (the writer's workers keep a
 * tree pack beside their data pack; prune does the same): reading every
 * tree of a snapshot from a remote store reads the small tree packs, not
 * a window of each data pack.  60 directories of two 300 kB files and a
 * tree each, two workers.
 */
enum { TA_DIRS = 60, TA_LEN = 300000 };

static int file_tree(struct cf_bk_writer *w, const unsigned char id[32],
    uint64_t len, unsigned char tid[32]);

static void
trees_apart(void)
{
	struct cf_bk_keys *k = bkt_keys_x(0);
	struct cf_bk_repo *r;
	struct cf_bk_writer *w = NULL;
	struct cf_bk_blob_loc loc;
	struct cf_bk_tree *t;
	struct remote *m;
	unsigned char (*tid)[32] = calloc(TA_DIRS, 32), id[32], *d;
	unsigned char tpack[2][32];
	size_t ntp = 0, i, j;
	unsigned nr, nw;

	CHECK(k != NULL && tid != NULL);
	r = open_repo(k, tenant_a, 1, NULL);
	CHECK(r != NULL);
	cf_bk_repo_free(r);
	/*
	 * Written and read over a store that says it is "s3" and counts
	 * range reads: the writer runs 4 uploaders (ThreadSanitizer builds
	 * check them here).
	 */
	r = remote_repo(k, &m);
	CHECK(r != NULL);
	CHECK(cf_bk_store_parallel_puts(cf_bk_repo_store(r)) == 4);
	CHECK_RC(cf_bk_writer_new(&w, r, 2), 0);
	for (i = 0; i < TA_DIRS; i++) {
		for (j = 0; j < 2; j++) {
			d = bkt_random(TA_LEN, 1000 + (unsigned)(2 * i + j));
			CHECK(d != NULL);
			CHECK_RC(cf_bk_writer_add(w, CF_BK_BLOB_DATA, d, TA_LEN,
			    id), 0);
			free(d);
		}
		CHECK_RC(file_tree(w, id, i, tid[i]), 0);	/* unique */
	}
	CHECK_RC(cf_bk_writer_flush(w), 0);
	cf_bk_writer_free(w);
	/* No pack holds both kinds; at most a tree pack per worker. */
	for (i = 0; i < TA_DIRS; i++) {
		CHECK_RC(cf_bk_index_lookup(cf_bk_repo_index(r),
		    CF_BK_BLOB_TREE, tid[i], &loc), 0);
		for (j = 0; j < ntp && memcmp(tpack[j], loc.pack, 32); j++)
			continue;
		if (j == ntp && ntp < 2)
			memcpy(tpack[ntp++], loc.pack, 32);
		CHECK(j < 2);
	}
	for (i = 0; i < 2 * TA_DIRS; i++) {
		d = bkt_random(TA_LEN, 1000 + (unsigned)i);
		CHECK(d != NULL);
		cf_bk_blob_id(k, d, TA_LEN, id);
		free(d);
		CHECK_RC(cf_bk_index_lookup(cf_bk_repo_index(r),
		    CF_BK_BLOB_DATA, id, &loc), 0);
		for (j = 0; j < ntp; j++)
			CHECK(memcmp(tpack[j], loc.pack, 32) != 0);
	}
	/* Every tree read: one window per tree pack. */
	rm_reset(m, 0);
	for (i = 0; i < TA_DIRS; i++) {
		CHECK_RC(cf_bk_repo_tree_load(r, tid[i], &t), 0);
		CHECK(t->count == 1 && t->nodes[0].size == i);
		cf_bk_tree_free(t);
	}
	rm_counts(m, &nr, &nw);
	printf("# %d trees in %zu tree packs, read with %u range reads\n",
	    TA_DIRS, ntp, nr);
	CHECK(nr <= ntp);
	cf_bk_repo_free(r);
	free(tid);
	cf_bk_keys_free(k);
}

/* ---- key versions [BK-SNAP-2] ------------------------------------------- */

/* Root key bytes start..start+31 as version v of k. */
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

/* 1 if st records exactly the n versions in want. */
static int
kv_is(const struct cf_bk_writer_stats *st, const uint32_t *want, size_t n)
{
	size_t i;

	if (!st->has_key_versions || st->nkey_versions != n)
		return 0;
	for (i = 0; i < n; i++)
		if (st->key_versions[i] != want[i])
			return 0;
	return 1;
}

/* A tree of one file "f" whose content is blob id (len bytes). */
static int
file_tree(struct cf_bk_writer *w, const unsigned char id[32], uint64_t len,
    unsigned char tid[32])
{
	struct cf_bk_item item;
	struct cf_bk_node node;
	struct cf_bk_tree tree = { &node, 1, NULL };

	memset(&item, 0, sizeof(item));
	memcpy(item.id, id, 32);
	memset(&node, 0, sizeof(node));
	node.type = CF_BK_NODE_FILE;
	node.name = "f";
	node.mode = 0600;
	node.size = len;
	node.items = &item;
	node.nitems = 1;
	return cf_bk_writer_add_tree(w, &tree, tid);
}

/*
 * The writer records every version a snapshot needs across rotations:
 * packs it writes (write version), known blobs found through dedup, a
 * parent's tree or a reused data blob (their packs' versions), and the
 * creation version even when every blob is new.
 */
static void
writer_key_versions(void)	/* [BK-SNAP-2] */
{
	static const uint32_t v1[] = { 1 }, v12[] = { 1, 2 },
	    v123[] = { 1, 2, 3 }, v13[] = { 1, 3 };
	struct cf_bk_keys *k = bkt_keys_x(0);
	struct cf_bk_repo *r;
	struct cf_bk_writer *w = NULL;
	struct cf_bk_writer_stats st;
	struct cf_bk_snapshot snap, *sb = NULL;
	struct cf_bk_tree *t = NULL;
	struct cf_bk_blob_loc loc;
	unsigned char *a, *b, *c, ida[32], idb[32], idc[32], ta[32], tb[32],
	    tc[32], sid[32];
	char cons[] = "none";
	uint64_t ulen;

	CHECK(k != NULL);
	a = bkt_random(5000, 1);
	b = bkt_random(5000, 2);
	c = bkt_random(5000, 3);
	CHECK(a != NULL && b != NULL && c != NULL);
	r = open_repo(k, tenant_a, 1, NULL);
	CHECK(r != NULL);
	CHECK(cf_bk_repo_config_version(r) == 1);

	/* Before any rotation: [1]. */
	CHECK_RC(cf_bk_writer_new(&w, r, 0), 0);
	CHECK_RC(cf_bk_writer_add(w, CF_BK_BLOB_DATA, a, 5000, ida), 0);
	CHECK_RC(file_tree(w, ida, 5000, ta), 0);
	CHECK_RC(cf_bk_writer_flush(w), 0);
	cf_bk_writer_stats(w, &st);
	CHECK(kv_is(&st, v1, 1));
	cf_bk_writer_free(w);

	/* Rotated to 2: a reused blob of a version-1 pack and a new one. */
	CHECK_RC(add_version(k, 0x40, 2), 0);
	CHECK_RC(cf_bk_writer_new(&w, r, 2), 0);
	CHECK_RC(cf_bk_writer_add(w, CF_BK_BLOB_DATA, a, 5000, ida), 0);
	CHECK_RC(cf_bk_writer_add(w, CF_BK_BLOB_DATA, b, 5000, idb), 0);
	CHECK_RC(file_tree(w, idb, 5000, tb), 0);
	CHECK_RC(cf_bk_writer_flush(w), 0);
	cf_bk_writer_stats(w, &st);
	CHECK(kv_is(&st, v12, 2));
	CHECK(st.new_blobs == 2);	/* a was reused, b and the tree new */
	cf_bk_writer_free(w);
	CHECK_RC(cf_bk_index_lookup(cf_bk_repo_index(r), CF_BK_BLOB_DATA, idb,
	    &loc), 0);
	CHECK(bk_rd32(loc.header + 12) == 2);	/* b: in a version 2 pack */

	/* Rotated to 3; every blob new: the creation version still. */
	CHECK_RC(add_version(k, 0x80, 3), 0);
	CHECK_RC(cf_bk_writer_new(&w, r, 0), 0);
	CHECK_RC(cf_bk_writer_add(w, CF_BK_BLOB_DATA, c, 5000, idc), 0);
	CHECK_RC(file_tree(w, idc, 5000, tc), 0);
	CHECK_RC(cf_bk_writer_flush(w), 0);
	cf_bk_writer_stats(w, &st);
	CHECK(kv_is(&st, v13, 2));
	cf_bk_writer_free(w);

	/* Each way of reusing a version-2 blob records 2. */
	CHECK_RC(cf_bk_writer_new(&w, r, 0), 0);	/* dedup */
	CHECK_RC(cf_bk_writer_add(w, CF_BK_BLOB_DATA, b, 5000, idb), 0);
	cf_bk_writer_stats(w, &st);
	CHECK(kv_is(&st, v123, 3));
	cf_bk_writer_free(w);
	CHECK_RC(cf_bk_writer_new(&w, r, 0), 0);	/* a reused data blob */
	CHECK(cf_bk_writer_data_blob(w, idb, &ulen) == 1 && ulen == 5000);
	cf_bk_writer_stats(w, &st);
	CHECK(kv_is(&st, v123, 3));
	cf_bk_writer_free(w);
	CHECK_RC(cf_bk_writer_new(&w, r, 0), 0);	/* a parent's tree */
	CHECK_RC(cf_bk_writer_tree_load(w, tb, &t), 0);
	cf_bk_tree_free(t);
	cf_bk_writer_stats(w, &st);
	CHECK(kv_is(&st, v123, 3));
	cf_bk_writer_free(w);
	w = NULL;

	/*
	 * Saving adds the sealing and creation versions to a record (as a
	 * retention rewrite needs) and leaves a snapshot without one alone.
	 */
	snap_min(&snap, 1, tb, cons);
	snap.has_key_versions = 1;
	snap.nkey_versions = 1;
	snap.key_versions[0] = 2;
	CHECK_RC(cf_bk_repo_snapshot_save(r, &snap, sid), 0);
	CHECK(snap.nkey_versions == 1);		/* the caller's: untouched */
	CHECK_RC(cf_bk_repo_snapshot_load(r, sid, &sb), 0);
	CHECK(sb->has_key_versions && sb->nkey_versions == 3 &&
	    sb->key_versions[0] == 1 && sb->key_versions[1] == 2 &&
	    sb->key_versions[2] == 3);
	cf_bk_snapshot_free(sb);
	snap.has_key_versions = 0;
	snap.nkey_versions = 0;
	snap.time = 2;
	CHECK_RC(cf_bk_repo_snapshot_save(r, &snap, sid), 0);
	CHECK_RC(cf_bk_repo_snapshot_load(r, sid, &sb), 0);
	CHECK(!sb->has_key_versions);
	cf_bk_snapshot_free(sb);

	cf_bk_repo_free(r);
	cf_bk_keys_free(k);
	free(a);
	free(b);
	free(c);
}

/* The index and the index objects tell which versions are in use. */
static void
indexed_version(void)	/* [BK-SNAP-3] */
{
	struct cf_bk_keys *k = bkt_keys_x(0);
	struct cf_bk_repo *r;
	struct cf_bk_writer *w = NULL;
	unsigned char *a, ida[32];
	uint64_t n[2];

	CHECK(k != NULL);
	a = bkt_random(3000, 4);
	CHECK(a != NULL);
	r = open_repo(k, tenant_a, 1, NULL);
	CHECK(r != NULL);
	CHECK_RC(add_version(k, 0x40, 2), 0);
	CHECK_RC(cf_bk_writer_new(&w, r, 0), 0);
	CHECK_RC(cf_bk_writer_add(w, CF_BK_BLOB_DATA, a, 3000, ida), 0);
	CHECK_RC(cf_bk_writer_flush(w), 0);
	cf_bk_writer_free(w);
	CHECK_RC(cf_bk_repo_indexed_version(r, 2, n), 0);
	CHECK(n[0] == 1 && n[1] == 0);	/* index objects: config's */
	CHECK_RC(cf_bk_repo_indexed_version(r, 1, n), 0);
	CHECK(n[0] == 0 && n[1] == 0);	/* under X, not D of 1: [BK-CFG-2] */
	CHECK_RC(cf_bk_repo_indexed_version(r, 3, n), 0);
	CHECK(n[0] == 0 && n[1] == 0);
	cf_bk_repo_free(r);
	cf_bk_keys_free(k);
	free(a);
}

/*
 * What needs a version: snapshots naming it in their record, the header
 * scan only while a snapshot has no record, and the index whatever the
 * records say; an unreadable snapshot stops it.
 */
static void
version_use(void)	/* [BK-SNAP-3] */
{
	struct cf_bk_keys *k = bkt_keys_x(0);
	struct cf_bk_repo *r;
	struct cf_bk_writer *w = NULL;
	struct cf_bk_writer_stats st;
	struct cf_bk_snapshot snap;
	struct cf_bk_version_use u;
	unsigned char *a, ida[32], tid[32], s1[32], s0[32];
	unsigned char junk[100], bad[32];
	char cons[] = "none", name[65];

	CHECK(k != NULL);
	a = bkt_random(3000, 5);
	CHECK(a != NULL);
	r = open_repo(k, tenant_a, 1, NULL);
	CHECK(r != NULL);
	CHECK_RC(add_version(k, 0x40, 2), 0);
	CHECK_RC(cf_bk_writer_new(&w, r, 0), 0);
	CHECK_RC(cf_bk_writer_add(w, CF_BK_BLOB_DATA, a, 3000, ida), 0);
	CHECK_RC(file_tree(w, ida, 3000, tid), 0);
	CHECK_RC(cf_bk_writer_flush(w), 0);
	cf_bk_writer_stats(w, &st);
	cf_bk_writer_free(w);
	snap_min(&snap, 1767225600000000000LL, tid, cons);
	snap.has_key_versions = st.has_key_versions;
	snap.nkey_versions = st.nkey_versions;
	memcpy(snap.key_versions, st.key_versions, sizeof(st.key_versions));
	CHECK_RC(cf_bk_repo_snapshot_save(r, &snap, s1), 0);
	snap.time++;
	snap.has_key_versions = 0;	/* as an older coffer wrote it */
	snap.nkey_versions = 0;
	CHECK_RC(cf_bk_repo_snapshot_save(r, &snap, s0), 0);

	CHECK_RC(cf_bk_repo_version_use(r, 2, &u), 0);
	CHECK(u.snapshots == 2 && u.needs == 1 && u.unknown == 1);
	CHECK(memcmp(u.need_id[0], s1, 32) == 0 &&
	    u.need_time[0] == 1767225600000000000LL);
	/* A data pack and a tree pack, 2 snapshots. */
	CHECK(u.scan[0] == 2 && u.scan[2] == 2);
	CHECK(u.indexed[0] == 2 && u.indexed[1] == 0);
	/* The recorded one gone: the one without a record still scans. */
	CHECK_RC(cf_bk_repo_snapshot_delete(r, s1), 0);
	CHECK_RC(cf_bk_repo_version_use(r, 2, &u), 0);
	CHECK(u.needs == 0 && u.unknown == 1 && u.scan[2] == 1 &&
	    u.scan[0] == 2);
	/* Only recorded snapshots left (none): no scan, the index tells. */
	CHECK_RC(cf_bk_repo_snapshot_delete(r, s0), 0);
	CHECK_RC(cf_bk_repo_version_use(r, 2, &u), 0);
	CHECK(u.snapshots == 0 && u.needs == 0 && u.unknown == 0);
	CHECK(u.scan[0] == 0 && u.scan[2] == 0);	/* not scanned */
	CHECK(u.indexed[0] == 2);	/* no prune yet: the packs are there */
	CHECK_RC(cf_bk_repo_version_use(r, 3, &u), 0);
	CHECK(u.needs == 0 && u.indexed[0] == 0 && u.indexed[1] == 0);
	/* A snapshot that cannot be read: named, and an error. */
	memset(junk, 0x5a, sizeof(junk));
	memset(bad, 0x77, sizeof(bad));
	bk_name(bad, name);
	CHECK_RC(cf_bk_store_put(cf_bk_repo_store(r), CF_BK_KIND_SNAPSHOT,
	    name, junk, sizeof(junk), 0), 0);
	CHECK(cf_bk_repo_version_use(r, 2, &u) < 0);
	CHECK(memcmp(u.bad_id, bad, 32) == 0);

	cf_bk_repo_free(r);
	cf_bk_keys_free(k);
	free(a);
}

/* Keys of root start..start+31 as version v (bkt_keys makes version 1). */
static struct cf_bk_keys *
keys_v(unsigned start, uint32_t v)
{
	struct cf_secbuf *sb = NULL;
	struct cf_bk_keys *k = NULL;
	size_t i;

	if (cf_secbuf_new(&sb, 32) != 0)
		return NULL;
	for (i = 0; i < 32; i++)
		cf_secbuf_data(sb)[i] = (unsigned char)(start + i);
	if (cf_bk_keys_new(&k, sb, v, CF_KS_CIPHER_XCHACHA20POLY1305) != 0)
		k = NULL;
	cf_secbuf_free(sb);
	return k;
}

/*
 * [BK-CFG-2] A repository created under version 1, backed up under 2,
 * its config re-keyed to 2: it opens with version 2 alone, with the
 * same I, G and X; old blobs read and dedup (a second backup of the same
 * data stores no data blob); a leftover temporary of an interrupted
 * replacement is ignored; retire-key's check discounts the snapshot
 * records that name 1 only as the config version of their time.
 */
static void
config_rekey(void)
{
	struct cf_bk_keys *k = bkt_keys_x(0), *k2;
	struct cf_bk_repo *r;
	struct cf_bk_writer *w = NULL;
	struct cf_bk_writer_stats st;
	struct cf_bk_snapshot snap;
	struct cf_bk_version_use u;
	unsigned char *a, *b = NULL, ida[32], idb[32], tid[32], s1[32];
	unsigned char ikey[32], gkey[32], xkey[32];
	char cons[] = "none";
	uint32_t from = 9;
	size_t blen = 0;
	uint64_t n[2];
	FILE *f;

	CHECK(k != NULL);
	a = bkt_random(3000, 6);
	CHECK(a != NULL);
	r = open_repo(k, tenant_a, 1, NULL);
	CHECK(r != NULL);
	memcpy(ikey, cf_secbuf_cdata(k->idkey), 32);
	memcpy(gkey, cf_secbuf_cdata(k->gkey), 32);
	memcpy(xkey, cf_secbuf_cdata(k->xkey), 32);
	CHECK(cf_bk_repo_chunk_version(r, &from) == 0 && from == 0);
	/* Not held yet: refused, nothing written. */
	CHECK_RC(cf_bk_repo_config_rekey(r, 2), -ENOKEY);
	CHECK_RC(add_version(k, 0x40, 2), 0);
	CHECK_RC(cf_bk_writer_new(&w, r, 0), 0);
	CHECK_RC(cf_bk_writer_add(w, CF_BK_BLOB_DATA, a, 3000, ida), 0);
	CHECK_RC(file_tree(w, ida, 3000, tid), 0);
	CHECK_RC(cf_bk_writer_flush(w), 0);
	cf_bk_writer_stats(w, &st);
	cf_bk_writer_free(w);
	w = NULL;
	snap_min(&snap, 1767225600000000000LL, tid, cons);
	snap.has_key_versions = st.has_key_versions;
	snap.nkey_versions = st.nkey_versions;
	memcpy(snap.key_versions, st.key_versions, sizeof(st.key_versions));
	CHECK(cf_bk_snapshot_needs_version(&snap, 1));	/* the config's */
	CHECK_RC(cf_bk_repo_snapshot_save(r, &snap, s1), 0);
	CHECK_RC(cf_bk_repo_config_rekey(r, 1), -EALREADY);
	CHECK_RC(cf_bk_repo_config_rekey(r, 2), 0);
	CHECK(cf_bk_repo_config_version(r) == 2);
	CHECK(cf_bk_repo_chunk_version(r, &from) == 1 && from == 1);
	CHECK_RC(cf_bk_repo_config_rekey(r, 2), -EALREADY);
	cf_bk_repo_free(r);
	cf_bk_keys_free(k);

	/* A put killed before its rename leaves a temporary: ignored. */
	f = fopen(repo_path(".tmp-0123456789abcdef"), "w");
	CHECK(f != NULL);
	fputs("half a config", f);
	fclose(f);

	/* Version 2 alone opens it: version 1 could be retired. */
	k2 = keys_v(0x40, 2);
	CHECK(k2 != NULL);
	CHECK(memcmp(cf_secbuf_cdata(k2->idkey), ikey, 32) != 0);
	r = open_repo(k2, tenant_a, 0, NULL);
	CHECK(r != NULL);
	CHECK(cf_bk_repo_config_version(r) == 2);
	CHECK(memcmp(cf_secbuf_cdata(k2->idkey), ikey, 32) == 0);
	CHECK(memcmp(cf_secbuf_cdata(k2->gkey), gkey, 32) == 0);
	CHECK(memcmp(cf_secbuf_cdata(k2->xkey), xkey, 32) == 0);
	CHECK(cf_bk_repo_has_blob(r, CF_BK_BLOB_DATA, ida));
	CHECK_RC(cf_bk_repo_blob_load(r, CF_BK_BLOB_DATA, ida, &b, &blen), 0);
	CHECK(blen == 3000 && memcmp(b, a, 3000) == 0);
	free(b);
	/* The same data again: no new data blob, the same id. */
	CHECK_RC(cf_bk_writer_new(&w, r, 0), 0);
	CHECK_RC(cf_bk_writer_add(w, CF_BK_BLOB_DATA, a, 3000, idb), 0);
	CHECK_RC(cf_bk_writer_flush(w), 0);
	cf_bk_writer_stats(w, &st);
	cf_bk_writer_free(w);
	CHECK(memcmp(ida, idb, 32) == 0);
	CHECK(st.blobs == 1 && st.new_blobs == 0 && st.packs == 0);
	/* Index objects under X name version 1: not a need of version 1. */
	CHECK_RC(cf_bk_repo_indexed_version(r, 1, n), 0);
	CHECK(n[0] == 0 && n[1] == 0);
	/* s1 records 1 (the config of its time) and its object is under 2. */
	CHECK_RC(cf_bk_repo_version_use(r, 1, &u), 0);
	CHECK(u.snapshots == 1 && u.needs == 0 && u.discounted == 1 &&
	    u.unknown == 0 && u.indexed[0] == 0 && u.indexed[1] == 0);
	CHECK_RC(cf_bk_repo_version_use(r, 2, &u), 0);
	CHECK(u.needs == 1 && u.discounted == 0);
	/* A second re-key, 2 -> 3: C still that of version 1. */
	CHECK_RC(add_version(k2, 0x80, 3), 0);
	CHECK_RC(cf_bk_repo_config_rekey(r, 3), 0);
	CHECK(cf_bk_repo_chunk_version(r, &from) == 1 && from == 1);
	cf_bk_repo_free(r);
	cf_bk_keys_free(k2);
	k2 = keys_v(0x80, 3);
	CHECK(k2 != NULL);
	r = open_repo(k2, tenant_a, 0, NULL);
	CHECK(r != NULL);
	CHECK(cf_bk_repo_config_version(r) == 3);
	CHECK(memcmp(cf_secbuf_cdata(k2->idkey), ikey, 32) == 0);
	CHECK(memcmp(cf_secbuf_cdata(k2->xkey), xkey, 32) == 0);
	CHECK(cf_bk_repo_has_blob(r, CF_BK_BLOB_DATA, ida));
	cf_bk_repo_free(r);
	cf_bk_keys_free(k2);
	/* An older keys holder: version 1 alone no longer opens it. */
	k = bkt_keys_x(0);
	CHECK(k != NULL);
	CHECK(open_repo(k, tenant_a, 0, NULL) == NULL);
	cf_bk_keys_free(k);
	free(a);
}

/*
 * Fetching ahead (bk_prefetch.c, docs/s3.md Overlapping the unlock): the
 * config's key version before the open; the open from what was fetched;
 * a repository changed by someone else (a prune) between the fetch and
 * the lock is seen as it is once the lock is taken (listings settled,
 * index reloaded); no repository; an empty directory created into.
 */
static void
prefetch(void)
{
	struct cf_bk_keys *k = bkt_keys_x(0);
	struct cf_bk_prefetch *pf = NULL;
	struct cf_bk_repo *r, *r2 = NULL;
	struct cf_bk_writer *w = NULL;
	struct cf_bk_lock *l = NULL;
	struct cf_bk_snapshot snap;
	struct cf_bk_blob_loc loc;
	unsigned char *a, *b, ida[32], idb[32], s1[32], s2[32];
	unsigned char (*ids)[CF_BK_ID_BYTES] = NULL;
	char url[4096], name[65], cons[] = "none";
	uint32_t v = 0;
	size_t n = 0;

	CHECK(k != NULL);
	a = bkt_random(5000, 1);
	b = bkt_random(5000, 2);
	CHECK(a != NULL && b != NULL);
	repo_url(url, sizeof(url));

	/* No repository: the config's error, then the open's. */
	CHECK_RC(cf_bk_prefetch_start(&pf, url, 0, 4, 0), 0);
	CHECK_RC(cf_bk_prefetch_key_version(pf, &v), -ENOENT);
	CHECK_RC(cf_bk_repo_open_prefetched(&r2, pf, bkt_keys_x(0), tenant_a,
	    0), -ENOENT);
	CHECK(r2 == NULL);
	cf_bk_prefetch_free(pf);
	/* An existing empty directory: created into (its subdirectories). */
	CHECK(mkdir(repo_path(""), 0700) == 0);
	CHECK_RC(cf_bk_prefetch_start(&pf, url, 0, 4, 0), 0);
	CHECK_RC(cf_bk_repo_open_prefetched(&r2, pf, bkt_keys_x(0), tenant_a,
	    CF_BK_REPO_CREATE), 0);
	cf_bk_prefetch_free(pf);
	CHECK(r2 != NULL);
	CHECK_RC(cf_bk_writer_new(&w, r2, 0), 0);
	CHECK_RC(cf_bk_writer_add(w, CF_BK_BLOB_DATA, a, 5000, ida), 0);
	CHECK_RC(cf_bk_writer_flush(w), 0);
	cf_bk_writer_free(w);
	snap_min(&snap, 1, NULL, cons);
	CHECK_RC(cf_bk_repo_snapshot_save(r2, &snap, s1), 0);

	/* Fetched ahead, then opened from what was fetched. */
	CHECK_RC(cf_bk_prefetch_start(&pf, url, 0, 4, 0), 0);
	CHECK_RC(cf_bk_prefetch_key_version(pf, &v), 0);
	CHECK(v == 1);
	CHECK_RC(cf_bk_repo_open_prefetched(&r, pf, bkt_keys_x(0), tenant_a,
	    0), 0);
	cf_bk_prefetch_free(pf);
	CHECK(r != NULL);
	CHECK(cf_bk_repo_has_blob(r, CF_BK_BLOB_DATA, ida));

	/* A prune (here r2) replaces the snapshot and adds an index. */
	CHECK_RC(cf_bk_writer_new(&w, r2, 0), 0);
	CHECK_RC(cf_bk_writer_add(w, CF_BK_BLOB_DATA, b, 5000, idb), 0);
	CHECK_RC(cf_bk_writer_flush(w), 0);
	cf_bk_writer_free(w);
	snap_min(&snap, 2, NULL, cons);
	CHECK_RC(cf_bk_repo_snapshot_save(r2, &snap, s2), 0);
	bk_name(s1, name);
	CHECK_RC(cf_bk_store_del(cf_bk_repo_store(r2), CF_BK_KIND_SNAPSHOT,
	    name), 0);

	/* Once locked, r sees the repository as it is now. */
	CHECK_RC(cf_bk_repo_lock(r, 0, NULL, &l), 0);
	CHECK_RC(cf_bk_index_lookup(cf_bk_repo_index(r), CF_BK_BLOB_DATA,
	    idb, &loc), 0);
	CHECK_RC(cf_bk_repo_snapshot_list(r, &ids, &n), 0);
	CHECK(n == 1 && ids != NULL && memcmp(ids[0], s2, 32) == 0);
	free(ids);
	CHECK_RC(cf_bk_lock_release(l), 0);

	cf_bk_repo_free(r);
	cf_bk_repo_free(r2);
	cf_bk_keys_free(k);
	free(a);
	free(b);
}

static const struct cf_test_case cases[] = {
	CF_TEST(store_put_get_list),
	CF_TEST(store_temp_not_listed),
	CF_TEST(store_urls),
	CF_TEST(repo_init_open),
	CF_TEST(repo_open_url),
	CF_TEST(writer_round_trip_sync),
	CF_TEST(writer_round_trip_threads),
	CF_TEST(writer_small_blobs),
	CF_TEST(writer_files_dedup),
	CF_TEST(concurrent_writers),
	CF_TEST(crash_orphans),
	CF_TEST(resume_indexed),
	CF_TEST(resume_control),
	CF_TEST(writer_files_store_fails),
	CF_TEST(damaged_objects),
	CF_TEST(locks),
	CF_TEST(locks_dead_holder),
	CF_TEST(pack_cache),
	CF_TEST(trees_apart),
	CF_TEST(writer_key_versions),
	CF_TEST(indexed_version),
	CF_TEST(version_use),
	CF_TEST(config_rekey),
	CF_TEST(prefetch),
};

CF_TEST_MAIN(cases)
