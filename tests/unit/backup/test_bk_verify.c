/*
 * test_bk_verify.c - repository verification (cf_bk_verify): a repo
 * built with the library (writer, trees, a snapshot) verifies clean;
 * then each kind of damage is made on disk and must be found and named
 * down to the file: a flipped byte in a pack (read-data only), a
 * deleted pack (structural), a truncated index, a tampered snapshot, a
 * lost tree; and the read-data subset reads 0 % and 100 % of packs.
 * Read-data on several threads reports in the index's pack order.
 *
 * Layout of the test repo (one pack per flush):
 *   pack A: /a      pack B: /b      pack C: /sub/c
 *   pack T: the trees (root, sub); one index object per pack.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bk_test.h"

static const unsigned char tenant[16] = { 0xc1, 0xc2, 0xc3 };

struct fixture {
	char dir[4096];
	struct cf_bk_keys *k;
	struct cf_bk_repo *r;
	unsigned char a[32], b[32], c[32], root[32], sub[32], snap[32];
};

static int
repo_open_dir(struct fixture *f, int init)
{
	struct cf_bk_store *s = NULL;
	char url[4200];
	int rc;

	f->r = NULL;
	snprintf(url, sizeof(url), "file://%s", f->dir);
	rc = cf_bk_store_open_url(&s, url, init ? CF_BK_STORE_CREATE : 0);
	if (rc == 0)
		rc = init ? cf_bk_repo_init(&f->r, s, f->k, tenant) :
		    cf_bk_repo_open(&f->r, s, f->k, tenant);
	if (rc < 0 && f->r == NULL)
		cf_bk_store_free(s);
	if (rc == 0)
		rc = cf_bk_repo_index_load(f->r, NULL);
	return rc;
}

/* Adds len bytes of seed-random data as one blob and flushes (a pack). */
static int
add_flush(struct cf_bk_writer *w, unsigned seed, size_t len,
    unsigned char id[32])
{
	unsigned char *d = bkt_random(len, seed);
	int rc;

	if (d == NULL)
		return -ENOMEM;
	rc = cf_bk_writer_add(w, CF_BK_BLOB_DATA, d, len, id);
	free(d);
	if (rc == 0)
		rc = cf_bk_writer_flush(w);
	return rc;
}

static void
file_node(struct cf_bk_node *n, struct cf_bk_item *it, const char *name,
    const unsigned char id[32])
{
	memset(n, 0, sizeof(*n));
	memset(it, 0, sizeof(*it));
	memcpy(it->id, id, 32);
	n->type = CF_BK_NODE_FILE;
	n->name = name;
	n->mode = 0644;
	n->size = 3000;
	n->items = it;
	n->nitems = 1;
}

/* Saves a snapshot of the tree f->root into f->snap. */
static void
save_snapshot(struct fixture *f)
{
	struct cf_bk_snapshot s;
	char host[] = "h", path[] = "/", cons[] = "offline";
	char *paths[] = { path };

	memset(&s, 0, sizeof(s));
	s.time = 1;
	memcpy(s.tenant, tenant, 16);
	s.hostname = host;
	s.paths = paths;
	s.npaths = 1;
	memcpy(s.tree, f->root, 32);
	s.consistency = cons;
	CHECK_RC(cf_bk_repo_snapshot_save(f->r, &s, f->snap), 0);
}

/* blake2: names objects as before [BK-LAY-3]'s bit (an old writer). */
static void
build_named(struct fixture *f, const char *tag, int blake2)
{
	static unsigned counter;
	struct cf_bk_writer *w = NULL;
	struct cf_bk_node rn[3], sn[1];
	struct cf_bk_item ia, ib, ic;
	struct cf_bk_tree sub = { sn, 1, NULL }, root = { rn, 3, NULL };

	memset(f, 0, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "%s/%s-%u", cf_test_tmpdir(), tag,
	    counter++);
	f->k = bkt_keys_x(0x40);
	CHECK(f->k != NULL);
	f->k->sid_blake2 = blake2;
	CHECK_RC(repo_open_dir(f, 1), 0);
	CHECK_RC(cf_bk_writer_new(&w, f->r, 0), 0);
	CHECK_RC(add_flush(w, 1, 3000, f->a), 0);
	CHECK_RC(add_flush(w, 2, 3000, f->b), 0);
	CHECK_RC(add_flush(w, 3, 3000, f->c), 0);
	file_node(&sn[0], &ic, "c", f->c);
	CHECK_RC(cf_bk_writer_add_tree(w, &sub, f->sub), 0);
	file_node(&rn[0], &ia, "a", f->a);
	file_node(&rn[1], &ib, "b", f->b);
	memset(&rn[2], 0, sizeof(rn[2]));
	rn[2].type = CF_BK_NODE_DIR;
	rn[2].name = "sub";
	rn[2].mode = 0755;
	memcpy(rn[2].subtree, f->sub, 32);
	CHECK_RC(cf_bk_writer_add_tree(w, &root, f->root), 0);
	CHECK_RC(cf_bk_writer_flush(w), 0);
	cf_bk_writer_free(w);
	save_snapshot(f);
}

static void
build(struct fixture *f, const char *tag)
{
	build_named(f, tag, 0);
}

static void
fixture_free(struct fixture *f)
{
	cf_bk_repo_free(f->r);
	cf_bk_keys_free(f->k);
}

/* Path of the pack holding a data blob, and the blob's offset. */
static void
pack_of(struct fixture *f, const unsigned char id[32], int type,
    char *out, size_t cap, uint64_t *off, uint32_t *len)
{
	struct cf_bk_blob_loc loc;
	char hex[65];

	CHECK_RC(cf_bk_index_lookup(cf_bk_repo_index(f->r), type, id, &loc),
	    0);
	cf_bk_id_hex(loc.pack, hex);
	snprintf(out, cap, "%s/data/%.2s/%s", f->dir, hex, hex);
	if (off != NULL)
		*off = loc.offset;
	if (len != NULL)
		*len = loc.desc.length;
}

static void
run(struct fixture *f, int read_data, unsigned pct,
    struct cf_bk_verify_result **res)
{
	struct cf_bk_verify_opts o = { read_data, pct, 12345 };

	CHECK_RC(cf_bk_verify(f->r, &o, res), 0);
}

/* 1 if res names path in the snapshot. */
static int
names_file(const struct cf_bk_verify_result *res, const char *path)
{
	size_t i;

	for (i = 0; i < res->ndamage; i++)
		if (strcmp(res->damage[i].path, path) == 0)
			return 1;
	return 0;
}

static void
flip_byte(const char *path, uint64_t off)
{
	unsigned char c;
	int fd = open(path, O_RDWR);

	CHECK(fd >= 0);
	CHECK(pread(fd, &c, 1, (off_t)off) == 1);
	c ^= 0x20;
	CHECK(pwrite(fd, &c, 1, (off_t)off) == 1);
	close(fd);
}

static void
clean_repo(void)
{
	struct fixture f;
	struct cf_bk_verify_result *res;

	build(&f, "clean");
	run(&f, 0, 0, &res);
	CHECK(res != NULL);
	CHECK(!cf_bk_verify_damaged(res));
	CHECK(res->snapshots == 1 && res->trees == 2 && res->blobs == 3);
	CHECK(res->packs == 4 && res->packs_orphan == 0);
	CHECK(res->indexes == 4 && res->packs_read == 0);
	CHECK(res->ndamage == 0 && res->nproblems == 0);
	cf_bk_verify_result_free(res);
	run(&f, 1, 100, &res);
	CHECK(res != NULL);
	CHECK(!cf_bk_verify_damaged(res));
	CHECK(res->packs_read == 4 && res->bytes_read > 3 * 3000);
	cf_bk_verify_result_free(res);
	fixture_free(&f);
}

static void
subset(void)
{
	struct fixture f;
	struct cf_bk_verify_result *res;

	build(&f, "subset");
	run(&f, 1, 0, &res);
	CHECK(res != NULL);
	CHECK(res->packs_read == 0);
	cf_bk_verify_result_free(res);
	run(&f, 1, 50, &res);
	CHECK(res != NULL);
	CHECK(res->packs_read == 2);
	cf_bk_verify_result_free(res);
	run(&f, 1, 100, &res);
	CHECK(res != NULL);
	CHECK(res->packs_read == 4);
	cf_bk_verify_result_free(res);
	{
		struct cf_bk_verify_opts o = { 1, 101, 0 };

		CHECK_RC(cf_bk_verify(f.r, &o, &res), -EINVAL);
		CHECK(res == NULL);
	}
	fixture_free(&f);
}

static void
flipped_byte(void)
{
	struct fixture f;
	struct cf_bk_verify_result *res;
	char path[4300];
	uint64_t off;
	uint32_t len;

	build(&f, "flip");
	pack_of(&f, f.b, CF_BK_BLOB_DATA, path, sizeof(path), &off, &len);
	flip_byte(path, off + len / 2);
	/* Structural: sizes, headers and trailers still agree. */
	run(&f, 0, 0, &res);
	CHECK(res != NULL);
	CHECK(!cf_bk_verify_damaged(res));
	cf_bk_verify_result_free(res);
	run(&f, 1, 100, &res);
	CHECK(res != NULL);
	CHECK(cf_bk_verify_damaged(res));
	CHECK(res->blobs_bad == 1 && res->packs_bad == 1);
	CHECK(res->snapshots_bad == 1 && res->ndamaged_snapshots == 1);
	CHECK(res->ndamage == 1 && names_file(res, "/b"));
	CHECK(!names_file(res, "/a") && !names_file(res, "/sub/c"));
	cf_bk_verify_result_free(res);
	fixture_free(&f);
}

static void
deleted_pack(void)
{
	struct fixture f;
	struct cf_bk_verify_result *res;
	char path[4300], hex[65];

	build(&f, "delpack");
	pack_of(&f, f.c, CF_BK_BLOB_DATA, path, sizeof(path), NULL, NULL);
	CHECK(unlink(path) == 0);
	run(&f, 0, 0, &res);
	CHECK(res != NULL);
	CHECK(cf_bk_verify_damaged(res));
	CHECK(res->packs_missing == 1 && res->snapshots_bad == 1);
	cf_bk_id_hex(f.snap, hex);
	CHECK(res->ndamaged_snapshots == 1 &&
	    strcmp(res->damaged_snapshots[0], hex) == 0);
	CHECK(res->ndamage == 1 && names_file(res, "/sub/c"));
	CHECK(strcmp(res->damage[0].snapshot, hex) == 0);
	cf_bk_verify_result_free(res);
	/* Read-data skips the missing pack and finds nothing more. */
	run(&f, 1, 100, &res);
	CHECK(res != NULL);
	CHECK(res->packs_read == 3 && res->ndamage == 1);
	cf_bk_verify_result_free(res);
	fixture_free(&f);
}

static void
lost_tree(void)
{
	struct fixture f;
	struct cf_bk_verify_result *res;
	char path[4300];

	build(&f, "tree");
	pack_of(&f, f.root, CF_BK_BLOB_TREE, path, sizeof(path), NULL, NULL);
	CHECK(truncate(path, 100) == 0);
	run(&f, 0, 0, &res);
	CHECK(res != NULL);
	CHECK(cf_bk_verify_damaged(res));
	CHECK(res->packs_bad == 1 && res->trees_bad == 1);
	CHECK(res->ndamage == 1 && names_file(res, "/"));
	CHECK(strstr(res->damage[0].why, "directory") != NULL);
	cf_bk_verify_result_free(res);
	fixture_free(&f);
}

struct names {
	char v[8][65];
	size_t n;
};

static int
collect(void *arg, const char *name, uint64_t size)
{
	struct names *ns = arg;

	(void)size;
	if (ns->n < 8)
		memcpy(ns->v[ns->n++], name, 65);
	return 0;
}

static void
truncated_index(void)
{
	struct fixture f;
	struct cf_bk_verify_result *res;
	struct cf_bk_blob_loc loc;
	struct cf_bk_index *one = NULL;
	struct names ns;
	char path[4300];
	unsigned char *buf, *plain;
	size_t len, plen, i, hit = 8;

	build(&f, "index");
	memset(&ns, 0, sizeof(ns));
	CHECK_RC(cf_bk_store_list(cf_bk_repo_store(f.r), CF_BK_KIND_INDEX,
	    collect, &ns), 0);
	CHECK(ns.n == 4);
	/* The index object that lists pack B (file /b). */
	for (i = 0; i < ns.n; i++) {
		snprintf(path, sizeof(path), "%s/index/%s", f.dir, ns.v[i]);
		buf = cf_test_read_file(path, &len);
		CHECK(buf != NULL);
		CHECK_RC(cf_bk_object_open(f.k, CF_BK_KIND_INDEX, buf, len,
		    &plain, &plen), 0);
		CHECK_RC(cf_bk_index_new(&one), 0);
		CHECK_RC(cf_bk_index_decode(one, plain, plen), 0);
		if (cf_bk_index_lookup(one, CF_BK_BLOB_DATA, f.b, &loc) == 0)
			hit = i;
		cf_bk_index_free(one);
		free(plain);
		free(buf);
	}
	CHECK(hit < ns.n);
	snprintf(path, sizeof(path), "%s/index/%s", f.dir, ns.v[hit]);
	CHECK(truncate(path, 40) == 0);
	run(&f, 0, 0, &res);
	CHECK(res != NULL);
	CHECK(cf_bk_verify_damaged(res));
	CHECK(res->indexes == 4 && res->indexes_bad == 1);
	CHECK(res->blobs_missing == 1 && res->packs_orphan == 1);
	CHECK(res->snapshots_bad == 1);
	CHECK(res->ndamage == 1 && names_file(res, "/b"));
	CHECK(res->nproblems >= 1 && strstr(res->problems[0], ns.v[hit]));
	cf_bk_verify_result_free(res);
	fixture_free(&f);
}

static void
tampered_snapshot(void)
{
	struct fixture f;
	struct cf_bk_verify_result *res;
	char path[4300], hex[65];
	struct stat st;

	build(&f, "snap");
	cf_bk_id_hex(f.snap, hex);
	snprintf(path, sizeof(path), "%s/snapshots/%s", f.dir, hex);
	CHECK(stat(path, &st) == 0);
	flip_byte(path, (uint64_t)st.st_size / 2);
	run(&f, 1, 100, &res);
	CHECK(res != NULL);
	CHECK(cf_bk_verify_damaged(res));
	CHECK(res->snapshots == 1 && res->snapshots_bad == 1);
	CHECK(res->ndamaged_snapshots == 1 &&
	    strcmp(res->damaged_snapshots[0], hex) == 0);
	CHECK(res->nproblems == 1 && strstr(res->problems[0], hex));
	/* Its trees are unreachable now, but the packs are fine. */
	CHECK(res->packs_bad == 0 && res->packs_read == 4);
	cf_bk_verify_result_free(res);
	fixture_free(&f);
}

/*
 * Read-data runs on several threads (one per core, or per S3
 * connection): 40 packs, three of them with a flipped byte, must give
 * the same counts, files and problems in the index's pack order on
 * every run, whichever thread read which pack.
 */
#define NMANY 40

static void
many_packs(void)
{
	static const unsigned bad[] = { 3, 17, 31 };
	struct fixture f;
	struct cf_bk_writer *w = NULL;
	struct cf_bk_node nodes[NMANY];
	struct cf_bk_item items[NMANY];
	struct cf_bk_tree root = { nodes, NMANY, NULL };
	struct cf_bk_verify_result *res, *res2;
	const struct cf_bk_index *idx;
	unsigned char ids[NMANY][32];
	char names[NMANY][8], path[4300], hex[65];
	size_t i, j, np, last = 0;
	uint64_t off;
	uint32_t len;
	int run_no;

	memset(&f, 0, sizeof(f));
	snprintf(f.dir, sizeof(f.dir), "%s/many", cf_test_tmpdir());
	f.k = bkt_keys_x(0x41);
	CHECK(f.k != NULL);
	CHECK_RC(repo_open_dir(&f, 1), 0);
	CHECK_RC(cf_bk_writer_new(&w, f.r, 0), 0);
	for (i = 0; i < NMANY; i++) {
		CHECK_RC(add_flush(w, 100 + (unsigned)i, 20000 + i, ids[i]), 0);
		snprintf(names[i], sizeof(names[i]), "f%02zu", i);
		file_node(&nodes[i], &items[i], names[i], ids[i]);
	}
	CHECK_RC(cf_bk_writer_add_tree(w, &root, f.root), 0);
	CHECK_RC(cf_bk_writer_flush(w), 0);
	cf_bk_writer_free(w);
	save_snapshot(&f);
	for (i = 0; i < 3; i++) {
		pack_of(&f, ids[bad[i]], CF_BK_BLOB_DATA, path, sizeof(path),
		    &off, &len);
		flip_byte(path, off + len / 2);
	}
	run(&f, 1, 100, &res);
	CHECK(res != NULL);
	CHECK(cf_bk_verify_damaged(res));
	CHECK(res->packs_read == NMANY + 1);
	CHECK(res->blobs_bad == 3 && res->packs_bad == 3);
	/* Per pack: its storage id, then the blob. */
	CHECK(res->ndamage == 3 && res->nproblems == 6);
	for (i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "/%s", names[bad[i]]);
		CHECK(names_file(res, path));
	}
	/* Problems in the index's pack order, each pack's together. */
	idx = cf_bk_repo_index(f.r);
	np = cf_bk_index_packs(idx);
	for (i = 0; i < res->nproblems; i++) {
		for (j = 0; j < np; j++) {
			cf_bk_id_hex(cf_bk_index_pack_id(idx, j), hex);
			if (strstr(res->problems[i], hex) != NULL)
				break;
		}
		CHECK(j < np);
		CHECK(i == 0 || (i % 2 ? j == last : j > last));
		CHECK(strstr(res->problems[i], i % 2 ? "data blob" :
		    "storage id") != NULL);
		last = j;
	}
	/* The same report, line for line, on further runs. */
	for (run_no = 0; run_no < 5; run_no++) {
		run(&f, 1, 100, &res2);
		CHECK(res2 != NULL);
		CHECK(res2->nproblems == res->nproblems &&
		    res2->ndamage == res->ndamage);
		for (i = 0; i < res->nproblems && i < res2->nproblems; i++)
			CHECK(strcmp(res->problems[i], res2->problems[i]) == 0);
		for (i = 0; i < res->ndamage && i < res2->ndamage; i++)
			CHECK(strcmp(res->damage[i].path,
			    res2->damage[i].path) == 0);
		cf_bk_verify_result_free(res2);
	}
	cf_bk_verify_result_free(res);
	fixture_free(&f);
}

/* Counts the packs named by SHA-256 and by BLAKE2b-256 ([BK-LAY-3]). */
static void
count_names(struct fixture *f, int *sha, int *b2)
{
	struct cf_bk_store *s = cf_bk_repo_store(f->r);
	struct names ns;
	unsigned char *buf, id[32];
	char hex[65];
	size_t len, i;

	*sha = *b2 = 0;
	ns.n = 0;
	CHECK(cf_bk_store_list(s, CF_BK_KIND_PACK, collect, &ns) >= 0);
	for (i = 0; i < ns.n; i++) {
		CHECK_RC(cf_bk_store_get(s, CF_BK_KIND_PACK, ns.v[i], 1 << 24,
		    &buf, &len), 0);
		cf_bk_sha256(buf, len, id);
		cf_bk_id_hex(id, hex);
		if (strcmp(hex, ns.v[i]) == 0)
			(*sha)++;
		cf_bk_storage_id(buf, len, id);
		cf_bk_id_hex(id, hex);
		CHECK(strcmp(hex, ns.v[i]) == 0);
		if (!cf_bk_named_sha256(buf, len))
			(*b2)++;
		free(buf);
	}
}

/*
 * A repository written before objects were named by SHA-256 takes new
 * backups: both kinds of names side by side verify clean (read-data),
 * and every blob of either loads.  A flipped byte in a SHA-256-named
 * pack is found.
 */
static void
mixed_names(void)
{
	struct fixture f;
	struct cf_bk_verify_result *res;
	struct cf_bk_writer *w = NULL;
	unsigned char d[32], *buf;
	char path[4200];
	size_t len;
	uint64_t off;
	int sha, b2;

	build_named(&f, "mixed", 1);
	count_names(&f, &sha, &b2);
	CHECK(sha == 0 && b2 == 4);
	/* The same repository, opened by a writer of now. */
	cf_bk_repo_free(f.r);
	f.k->sid_blake2 = 0;
	CHECK_RC(repo_open_dir(&f, 0), 0);
	CHECK_RC(cf_bk_writer_new(&w, f.r, 0), 0);
	CHECK_RC(add_flush(w, 4, 3000, d), 0);
	cf_bk_writer_free(w);
	count_names(&f, &sha, &b2);
	CHECK(sha == 1 && b2 == 4);
	run(&f, 1, 100, &res);
	CHECK(res != NULL && !cf_bk_verify_damaged(res));
	CHECK(res->packs == 5 && res->packs_read == 5);
	cf_bk_verify_result_free(res);
	CHECK_RC(cf_bk_repo_blob_load(f.r, CF_BK_BLOB_DATA, f.a, &buf, &len),
	    0);
	free(buf);
	CHECK_RC(cf_bk_repo_blob_load(f.r, CF_BK_BLOB_DATA, d, &buf, &len), 0);
	CHECK(len == 3000);
	free(buf);
	/* Damage in the new pack is found. */
	pack_of(&f, d, CF_BK_BLOB_DATA, path, sizeof(path), &off, NULL);
	flip_byte(path, off + 20);
	run(&f, 1, 100, &res);
	CHECK(res != NULL && res->packs_bad == 1);
	cf_bk_verify_result_free(res);
	fixture_free(&f);
}

static const struct cf_test_case cases[] = {
	CF_TEST(clean_repo),
	CF_TEST(subset),
	CF_TEST(flipped_byte),
	CF_TEST(deleted_pack),
	CF_TEST(lost_tree),
	CF_TEST(truncated_index),
	CF_TEST(tampered_snapshot),
	CF_TEST(many_packs),
	CF_TEST(mixed_names),
};

CF_TEST_MAIN(cases)
