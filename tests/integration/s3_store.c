/*
 * s3_store.c - the S3 storage backend against a real server (Ceph RGW,
 * which verifies SigV4 and body hashes), driven by s3_rgw.sh: that
 * script starts the server, makes the bucket named by S3_BUCKET and
 * exports AWS_ENDPOINT_URL and the AWS_* credentials, plus
 * S3_TLS_ENDPOINT and S3_TLS_CA for the HTTPS cases.
 *
 * Cases: object round trips (put, get, ranges, stat, exclusive put,
 * delete, size limits), ListObjectsV2 pagination (> 1000 objects, put
 * from several threads over one store), refused credentials, a missing
 * bucket, the credentials file and its mode check, a whole repository
 * over S3 (init, writer, snapshot, reopen, verify) with a flipped byte
 * found by verify, TLS refused without the CA and accepted with it, a
 * multipart upload (16 MiB in 5 MiB parts, 4 at once), retries through
 * a proxy that injects 503s and cuts bodies short (S3_FAULT_ENDPOINT;
 * multipart uploads too), batch deletes in versioned buckets
 * (S3_VER_BUCKET, S3_LOCK_BUCKET), the resolve= option's checks, and
 * PUT/GET throughput of 16 MiB objects (printed as TAP comments).
 * With S3_STALE_PREFIX: cleanup of interrupted multipart uploads that
 * the script made with awscli (one listed per page), and of a local
 * store's temporaries.
 * Without S3_BUCKET every case is skipped (run it through s3_rgw.sh).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "bk_int.h"	/* bk_store_s3_set_uploads_page */
#include "cf_backup.h"
#include "cf_test.h"

static const unsigned char tenant[16] = { 0x53, 0x33 };

static const char *
bucket(void)
{
	return getenv("S3_BUCKET");
}

/* "s3://BUCKET/sub" (static buffer). */
static const char *
url_of(const char *sub)
{
	static char buf[1024];

	snprintf(buf, sizeof(buf), "s3://%s/%s", bucket(), sub);
	return buf;
}

/* A valid object name from a number. */
static void
name_of(unsigned n, char name[65])
{
	unsigned char h[32];

	crypto_hash_sha256(h, (const unsigned char *)&n, sizeof(n));
	sodium_bin2hex(name, 65, h, sizeof(h));
}

static unsigned char *
rnd(size_t n)
{
	unsigned char *b = malloc(n ? n : 1);

	if (b != NULL)
		randombytes_buf(b, n);
	return b;
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
count_cb(void *arg, const char *name, uint64_t size)
{
	(void)name;
	(void)size;
	(*(size_t *)arg)++;
	return 0;
}

static void
round_trip(void)
{
	struct cf_bk_store *s = NULL;
	unsigned char *data = rnd(1 << 20), *buf = NULL, part[5000];
	char name[65];
	size_t len;
	uint64_t size;

	CHECK(data != NULL);
	CHECK_RC(cf_bk_store_open_url(&s, url_of("rt"), 0), 0);
	CHECK(strcmp(cf_bk_store_ops(s)->name, "s3") == 0);
	name_of(1, name);
	CHECK_RC(cf_bk_store_stat(s, CF_BK_KIND_PACK, name, &size), -ENOENT);
	CHECK_RC(cf_bk_store_get(s, CF_BK_KIND_PACK, name, 1 << 20, &buf,
	    &len), -ENOENT);
	CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_PACK, name, data, 1 << 20, 0),
	    0);
	/* Replacing with the same bytes (a replayed put) is fine. */
	CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_PACK, name, data, 1 << 20, 0),
	    0);
	CHECK_RC(cf_bk_store_stat(s, CF_BK_KIND_PACK, name, &size), 0);
	CHECK(size == 1 << 20);
	CHECK_RC(cf_bk_store_get(s, CF_BK_KIND_PACK, name, 1 << 20, &buf,
	    &len), 0);
	CHECK(len == 1 << 20 && memcmp(buf, data, len) == 0);
	free(buf);
	buf = NULL;
	CHECK_RC(cf_bk_store_get(s, CF_BK_KIND_PACK, name, (1 << 20) - 1,
	    &buf, &len), -EFBIG);
	CHECK(buf == NULL);
	CHECK_RC(cf_bk_store_get_range(s, CF_BK_KIND_PACK, name, 123457,
	    sizeof(part), part), 0);
	CHECK(memcmp(part, data + 123457, sizeof(part)) == 0);
	CHECK_RC(cf_bk_store_get_range(s, CF_BK_KIND_PACK, name,
	    (1 << 20) - 10, 10, part), 0);
	CHECK(memcmp(part, data + (1 << 20) - 10, 10) == 0);
	/* Past the end, or running over it: short. */
	CHECK_RC(cf_bk_store_get_range(s, CF_BK_KIND_PACK, name,
	    (1 << 20) - 10, 20, part), -EPROTO);
	CHECK_RC(cf_bk_store_get_range(s, CF_BK_KIND_PACK, name, 1 << 21, 1,
	    part), -EPROTO);
	/* Empty objects, and the exclusive put of a config. */
	CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_CONFIG, "config", data, 0, 1),
	    0);
	CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_CONFIG, "config", data, 10, 1),
	    -EEXIST);
	CHECK_RC(cf_bk_store_get(s, CF_BK_KIND_CONFIG, "config", 100, &buf,
	    &len), 0);
	CHECK(len == 0);
	free(buf);
	CHECK_RC(cf_bk_store_del(s, CF_BK_KIND_PACK, name), 0);
	CHECK_RC(cf_bk_store_del(s, CF_BK_KIND_PACK, name), -ENOENT);
	CHECK_RC(cf_bk_store_stat(s, CF_BK_KIND_PACK, name, &size), -ENOENT);
	cf_bk_store_free(s);
	free(data);
}

struct putter {
	struct cf_bk_store *s;
	unsigned from, to;
	int rc;
};

static void *
put_many(void *arg)
{
	struct putter *p = arg;
	char name[65];
	unsigned i;

	for (i = p->from; i < p->to && p->rc == 0; i++) {
		name_of(i, name);
		p->rc = cf_bk_store_put(p->s, CF_BK_KIND_INDEX, name,
		    (const unsigned char *)name, 64, 0);
	}
	return NULL;
}

/* Puts index objects name_of(0..n-1) with 8 threads. */
static void
put_index_objects(struct cf_bk_store *s, unsigned n)
{
	enum { T = 8 };
	struct putter p[T];
	pthread_t th[T];
	unsigned i;

	for (i = 0; i < T; i++) {
		p[i] = (struct putter){ s, i * n / T, (i + 1) * n / T, 0 };
		CHECK(pthread_create(&th[i], NULL, put_many, &p[i]) == 0);
	}
	for (i = 0; i < T; i++)
		pthread_join(th[i], NULL);
	for (i = 0; i < T; i++)
		CHECK_RC(p[i].rc, 0);
}

static void
list_pages(void)	/* > 1000 keys: ListObjectsV2 continuation */
{
	enum { N = 1234 };
	struct cf_bk_store *s = NULL;
	unsigned char *data = rnd(100);
	char name[65];
	size_t n = 0;
	unsigned i;

	CHECK(data != NULL);
	CHECK_RC(cf_bk_store_open_url(&s, url_of("pages/deep"), 0), 0);
	put_index_objects(s, N);
	CHECK_RC(cf_bk_store_list(s, CF_BK_KIND_INDEX, count_cb, &n), 0);
	CHECK(n == N);
	/* Packs live under data/XX/: listed with their sizes. */
	for (i = 0; i < 3; i++) {
		name_of(100000 + i, name);
		CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_PACK, name, data,
		    100 - i, 0), 0);
	}
	n = 0;
	CHECK_RC(cf_bk_store_list(s, CF_BK_KIND_PACK, count_cb, &n), 0);
	CHECK(n == 3);
	n = 0;
	CHECK_RC(cf_bk_store_list(s, CF_BK_KIND_SNAPSHOT, count_cb, &n), 0);
	CHECK(n == 0);
	cf_bk_store_free(s);
	free(data);
}

static void
refused(void)		/* wrong secret, missing bucket, credentials file */
{
	struct cf_bk_store *s = NULL;
	char *ak = strdup(getenv("AWS_ACCESS_KEY_ID"));
	char *sk = strdup(getenv("AWS_SECRET_ACCESS_KEY"));
	char path[1024], body[512], u[4096];
	uint64_t size;

	CHECK(ak != NULL && sk != NULL);
	/* s3rver (S3_ANY_SECRET) checks the access key id, not the secret. */
	if (getenv("S3_ANY_SECRET") != NULL)
		CHECK(setenv("AWS_ACCESS_KEY_ID", "COFFERNOSUCHKEY", 1) == 0);
	else
		CHECK(setenv("AWS_SECRET_ACCESS_KEY",
		    "wrong-secret-wrong-secret", 1) == 0);
	CHECK_RC(cf_bk_store_open_url(&s, url_of("rt"), 0), -EACCES);
	CHECK(s == NULL);
	CHECK(setenv("AWS_ACCESS_KEY_ID", ak, 1) == 0);
	CHECK(setenv("AWS_SECRET_ACCESS_KEY", sk, 1) == 0);
	CHECK_RC(cf_bk_store_open_url(&s, "s3://coffer-no-such-bucket/x", 0),
	    -ENOENT);
	CHECK_RC(cf_bk_store_open_url(&s, "s3://coffer-made-bucket/x",
	    CF_BK_STORE_CREATE), 0);
	cf_bk_store_free(s);
	s = NULL;
	CHECK_RC(cf_bk_store_open_url(&s, "s3://ab/x", 0), -EINVAL);
	CHECK_RC(cf_bk_store_open_url(&s, url_of("a//b"), 0), -EINVAL);
	CHECK_RC(cf_bk_store_open_url(&s, url_of("a/../b"), 0), -EINVAL);
	CHECK_RC(cf_bk_store_open_url(&s, url_of("x?nosuch=1"), 0), -EINVAL);
	/* Bandwidth limits: digits and K/M/G, at least 1 KiB/s. */
	CHECK_RC(cf_bk_store_open_url(&s, url_of("x?max_up=fast"), 0),
	    -EINVAL);
	CHECK_RC(cf_bk_store_open_url(&s, url_of("x?max_down=1000"), 0),
	    -EINVAL);
	CHECK_RC(cf_bk_store_open_url(&s, url_of("x?max_down=2X"), 0),
	    -EINVAL);
	CHECK(setenv("COFFER_S3_MAX_UP", "-5", 1) == 0);
	CHECK_RC(cf_bk_store_open_url(&s, url_of("x"), 0), -EINVAL);
	CHECK(unsetenv("COFFER_S3_MAX_UP") == 0);
	/* resolve=HOST:PORT:ADDR[,...]; a good one just works. */
	CHECK_RC(cf_bk_store_open_url(&s, url_of("x?resolve=h:80"), 0),
	    -EINVAL);
	CHECK_RC(cf_bk_store_open_url(&s, url_of("x?resolve=h:0:127.0.0.1"),
	    0), -EINVAL);
	CHECK_RC(cf_bk_store_open_url(&s,
	    url_of("x?resolve=h%2Fx:80:127.0.0.1"), 0), -EINVAL);
	CHECK_RC(cf_bk_store_open_url(&s,
	    url_of("x?resolve=h:80:127.0.0.1,"), 0), -EINVAL);
	CHECK_RC(cf_bk_store_open_url(&s, url_of("x?resolve=h:80:[::1"), 0),
	    -EINVAL);
	CHECK(setenv("COFFER_S3_RESOLVE", "h:80:local", 1) == 0);
	CHECK_RC(cf_bk_store_open_url(&s, url_of("x"), 0), -EINVAL);
	CHECK(setenv("COFFER_S3_RESOLVE", "a.b:80:127.0.0.1,c:1:[::1]", 1) ==
	    0);
	CHECK_RC(cf_bk_store_open_url(&s, url_of("x"), 0), 0);
	cf_bk_store_free(s);
	s = NULL;
	CHECK(unsetenv("COFFER_S3_RESOLVE") == 0);

	/* The credentials file: used only when it is private. */
	snprintf(path, sizeof(path), "%s/creds", cf_test_tmpdir());
	snprintf(body, sizeof(body), "# test\n[other]\naws_access_key_id = X\n"
	    "aws_secret_access_key = Y\n[coffer]\naws_access_key_id = %s\n"
	    "aws_secret_access_key=%s\n", ak, sk);
	CHECK_RC(cf_test_write_file(path, body, strlen(body)), 0);
	CHECK(chmod(path, 0644) == 0);
	CHECK(unsetenv("AWS_ACCESS_KEY_ID") == 0);
	CHECK(unsetenv("AWS_SECRET_ACCESS_KEY") == 0);
	CHECK_RC(cf_bk_store_open_url(&s, url_of("rt"), 0), -ENOKEY);
	snprintf(u, sizeof(u), "%s?credentials=%s&profile=coffer",
	    url_of("rt"), path);
	CHECK_RC(cf_bk_store_open_url(&s, u, 0), -EPERM);
	CHECK(chmod(path, 0600) == 0);
	CHECK_RC(cf_bk_store_open_url(&s, u, 0), 0);
	CHECK_RC(cf_bk_store_stat(s, CF_BK_KIND_CONFIG, "config", &size), 0);
	cf_bk_store_free(s);
	s = NULL;
	snprintf(u, sizeof(u), "%s?credentials=%s&profile=other",
	    url_of("rt"), path);
	CHECK_RC(cf_bk_store_open_url(&s, u, 0), -EACCES);
	CHECK(setenv("AWS_ACCESS_KEY_ID", ak, 1) == 0);
	CHECK(setenv("AWS_SECRET_ACCESS_KEY", sk, 1) == 0);
	sodium_memzero(body, sizeof(body));
	free(ak);
	free(sk);
}

static struct cf_bk_keys *
test_keys(void)
{
	struct cf_secbuf *sb = NULL;
	struct cf_bk_keys *k = NULL;

	if (getenv("S3_KILL_PHASE") != NULL) {
		/* Both phases (two processes) must open the same repo. */
		if (cf_secbuf_new(&sb, 32) != 0)
			return NULL;
		memset(cf_secbuf_data(sb), 0x5a, 32);
	} else if (cf_secbuf_random(&sb, 32) != 0) {
		return NULL;
	}
	if (cf_bk_keys_new(&k, sb, 1, CF_KS_CIPHER_XCHACHA20POLY1305) != 0)
		k = NULL;
	cf_secbuf_free(sb);
	return k;
}

static int
first_name(void *arg, const char *name, uint64_t size)
{
	(void)size;
	memcpy(arg, name, 65);
	return 1;
}

static void
repository(void)	/* a repository over S3; a flipped byte is found */
{
	enum { NB = 40, BL = 100000 };
	struct cf_bk_keys *k = test_keys();
	struct cf_bk_store *s = NULL;
	struct cf_bk_repo *r = NULL;
	struct cf_bk_writer *w = NULL;
	struct cf_bk_node node;
	struct cf_bk_item items[NB];
	struct cf_bk_tree tree = { &node, 1, NULL };
	struct cf_bk_snapshot snap, *sb = NULL;
	struct cf_bk_verify_opts vo = { 1, 100, 1 };
	struct cf_bk_verify_result *res = NULL;
	unsigned char *data = rnd((size_t)NB * BL), *buf = NULL;
	unsigned char ids[NB][32], tid[32], sid[32], (*sids)[32] = NULL;
	char host[] = "h", path[] = "/", cons[] = "offline", pack[65] = "";
	char *paths[] = { path };
	size_t i, len, nsnap;
	double t0;

	CHECK(k != NULL && data != NULL);
	CHECK_RC(cf_bk_store_open_url(&s, url_of("repo"), 0), 0);
	CHECK_RC(cf_bk_repo_init(&r, s, k, tenant), 0);
	s = NULL;
	CHECK_RC(cf_bk_writer_new(&w, r, 2), 0);
	for (i = 0; i < NB; i++) {
		CHECK_RC(cf_bk_writer_add(w, CF_BK_BLOB_DATA, data + i * BL,
		    BL, ids[i]), 0);
		memset(&items[i], 0, sizeof(items[i]));
		memcpy(items[i].id, ids[i], 32);
	}
	memset(&node, 0, sizeof(node));
	node.type = CF_BK_NODE_FILE;
	node.name = "file";
	node.mode = 0640;
	node.size = (uint64_t)NB * BL;
	node.items = items;
	node.nitems = NB;
	CHECK_RC(cf_bk_writer_add_tree(w, &tree, tid), 0);
	CHECK_RC(cf_bk_writer_flush(w), 0);
	cf_bk_writer_free(w);
	w = NULL;
	memset(&snap, 0, sizeof(snap));
	snap.time = 1;
	memcpy(snap.tenant, tenant, 16);
	snap.hostname = host;
	snap.paths = paths;
	snap.npaths = 1;
	memcpy(snap.tree, tid, 32);
	snap.consistency = cons;
	snap.stats.files = 1;
	CHECK_RC(cf_bk_repo_snapshot_save(r, &snap, sid), 0);
	cf_bk_repo_free(r);
	r = NULL;

	/* A new store and repo see everything from S3 alone. */
	CHECK_RC(cf_bk_store_open_url(&s, url_of("repo"), 0), 0);
	CHECK_RC(cf_bk_repo_open(&r, s, k, tenant), 0);
	s = NULL;
	CHECK_RC(cf_bk_repo_index_load(r, NULL), 0);
	CHECK_RC(cf_bk_repo_snapshot_list(r, &sids, &nsnap), 0);
	CHECK(nsnap == 1 && memcmp(sids[0], sid, 32) == 0);
	free(sids);
	CHECK_RC(cf_bk_repo_snapshot_load(r, sid, &sb), 0);
	CHECK(memcmp(sb->tree, tid, 32) == 0);
	cf_bk_snapshot_free(sb);
	for (i = 0; i < NB; i += 7) {
		CHECK_RC(cf_bk_repo_blob_load(r, CF_BK_BLOB_DATA, ids[i], &buf,
		    &len), 0);
		CHECK(len == BL && memcmp(buf, data + i * BL, BL) == 0);
		free(buf);
	}
	CHECK_RC(cf_bk_verify(r, &vo, &res), 0);
	CHECK(!cf_bk_verify_damaged(res) && res->packs >= 1 &&
	    res->packs_read == res->packs);
	cf_bk_verify_result_free(res);
	res = NULL;

	/* Flip one byte of a stored pack (as a bad disk would). */
	s = cf_bk_repo_store(r);
	CHECK_RC(cf_bk_store_list(s, CF_BK_KIND_PACK, first_name, pack), 1);
	CHECK_RC(cf_bk_store_get(s, CF_BK_KIND_PACK, pack, 64 << 20, &buf,
	    &len), 0);
	buf[len / 2] ^= 0x01;
	/*
	 * The pack is named by the SHA-256 of its bytes, which the backend
	 * sends as the body's hash ([BK-LAY-3]): the server refuses other
	 * bytes under that name, at once (not retried).
	 */
	CHECK(cf_bk_named_sha256(buf, len));
	if (getenv("S3_ANY_SECRET") == NULL) {	/* s3rver checks no hash */
		t0 = now_s();
		CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_PACK, pack, buf, len,
		    0), -EINVAL);
		CHECK(now_s() - t0 < 5.0);
	}
	/* What a bad disk on the server leaves, which coffer cannot see. */
	buf[11] &= 0x7f;
	CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_PACK, pack, buf, len, 0), 0);
	free(buf);
	s = NULL;
	CHECK_RC(cf_bk_verify(r, &vo, &res), 0);
	CHECK(cf_bk_verify_damaged(res) && res->packs_bad >= 1);
	cf_bk_verify_result_free(res);
	cf_bk_repo_free(r);
	cf_bk_keys_free(k);
	free(data);
}

static void
object_lock(void)	/* S3_LOCK_BUCKET has Object Lock enabled */
{
	struct cf_bk_keys *k = test_keys();
	struct cf_bk_store *s = NULL;
	struct cf_bk_repo *r = NULL;
	struct cf_bk_writer *w = NULL;
	unsigned char *data = rnd(50000), id[32], *buf = NULL;
	char url[1024], pack[65] = "", name[65];
	const char *lb = getenv("S3_LOCK_BUCKET");
	int64_t until = 0, now = (int64_t)time(NULL);
	struct cf_bk_snapshot snap;
	struct cf_bk_lock *l = NULL;
	struct cf_bk_prune_opts po;
	struct cf_bk_prune_stats st;
	char host[] = "h", path[] = "/", cons[] = "offline";
	char *paths[] = { path };
	unsigned char sid[32], tid[32];
	struct cf_bk_node node;
	struct cf_bk_tree tree = { &node, 1, NULL };
	uint64_t size;
	size_t len;
	unsigned i;

	CHECK(k != NULL && data != NULL);
	if (lb == NULL) {
		printf("# S3_LOCK_BUCKET unset: Object Lock not tested\n");
		goto done;
	}
	/* Asking for a lock on a bucket without one; bad options. */
	CHECK_RC(cf_bk_store_open_url(&s,
	    "s3://coffer-test/x?lock=governance&lock_days=1", 0), -EOPNOTSUPP);
	snprintf(url, sizeof(url), "s3://%s/x?lock=forever&lock_days=1", lb);
	CHECK_RC(cf_bk_store_open_url(&s, url, 0), -EINVAL);
	snprintf(url, sizeof(url), "s3://%s/x?lock=governance", lb);
	CHECK_RC(cf_bk_store_open_url(&s, url, 0), -EINVAL);
	snprintf(url, sizeof(url), "s3://%s/x?lock_days=3", lb);
	CHECK_RC(cf_bk_store_open_url(&s, url, 0), -EINVAL);

	/* A repository whose every object is locked for a day. */
	snprintf(url, sizeof(url), "s3://%s/lrepo?lock=governance&lock_days=1",
	    lb);
	CHECK_RC(cf_bk_store_open_url(&s, url, 0), 0);
	CHECK_RC(cf_bk_repo_init(&r, s, k, tenant), 0);
	s = NULL;
	CHECK_RC(cf_bk_writer_new(&w, r, 2), 0);
	for (i = 0; i < 5; i++)
		CHECK_RC(cf_bk_writer_add(w, CF_BK_BLOB_DATA, data + i * 10000,
		    10000, id), 0);
	memset(&node, 0, sizeof(node));
	node.type = CF_BK_NODE_FILE;
	node.name = "file";
	node.mode = 0640;
	CHECK_RC(cf_bk_writer_add_tree(w, &tree, tid), 0);
	CHECK_RC(cf_bk_writer_flush(w), 0);
	cf_bk_writer_free(w);
	w = NULL;
	s = cf_bk_repo_store(r);
	CHECK_RC(cf_bk_store_list(s, CF_BK_KIND_PACK, first_name, pack), 1);
	CHECK_RC(cf_bk_store_lock_until(s, CF_BK_KIND_PACK, pack, &until), 0);
	printf("# pack locked until %lld (now %lld)\n", (long long)until,
	    (long long)now);
	CHECK(until >= now + 86400 - 300 && until <= now + 86400 + 300);
	/* Deleting it is refused before the server is even asked. */
	CHECK_RC(cf_bk_store_del(s, CF_BK_KIND_PACK, pack), -EROFS);
	CHECK_RC(cf_bk_store_stat(s, CF_BK_KIND_PACK, pack, &size), 0);
	s = NULL;
	/* A snapshot cannot be forgotten yet; prune reports, not fails. */
	memset(&snap, 0, sizeof(snap));
	snap.time = 1;
	memcpy(snap.tenant, tenant, 16);
	snap.hostname = host;
	snap.paths = paths;
	snap.npaths = 1;
	snap.consistency = cons;
	memcpy(snap.tree, tid, 32);
	CHECK_RC(cf_bk_repo_snapshot_save(r, &snap, sid), 0);
	CHECK_RC(cf_bk_repo_snapshot_delete(r, sid), -EROFS);
	CHECK_RC(cf_bk_repo_lock(r, 1, NULL, &l), 0);	/* locks: no lock */
	memset(&po, 0, sizeof(po));
	CHECK_RC(cf_bk_prune(r, l, &po, &st), 0);
	printf("# prune: %llu objects locked until %lld\n",
	    (unsigned long long)st.objects_locked, (long long)st.locked_until);
	CHECK(st.objects_locked >= 1 && st.indexes_deleted == 0 &&
	    st.locked_until >= now + 86400 - 300);
	CHECK_RC(cf_bk_lock_release(l), 0);
	l = NULL;
	CHECK_RC(cf_bk_store_stat(cf_bk_repo_store(r), CF_BK_KIND_PACK, pack,
	    &size), 0);
	cf_bk_repo_free(r);
	r = NULL;

	/* lock_until caps the date (the tenant's purge date). */
	snprintf(url, sizeof(url),
	    "s3://%s/cap?lock=compliance&lock_days=30&lock_until=%lld", lb,
	    (long long)now + 3600);
	CHECK_RC(cf_bk_store_open_url(&s, url, 0), 0);
	name_of(4242, name);
	CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_PACK, name, data, 1000, 0), 0);
	CHECK_RC(cf_bk_store_lock_until(s, CF_BK_KIND_PACK, name, &until), 0);
	CHECK(until >= now + 3600 - 5 && until <= now + 3600 + 5);
	CHECK_RC(cf_bk_store_del(s, CF_BK_KIND_PACK, name), -EROFS);
	{
		/* In a batch too: the locked one -EROFS, a missing one 0. */
		char other[65];
		const char *v[2] = { name, other };
		int rcs[2] = { 99, 99 };

		name_of(4244, other);
		CHECK_RC(cf_bk_store_del_many(s, CF_BK_KIND_PACK, v, 2, rcs),
		    0);
		CHECK(rcs[0] == -EROFS && rcs[1] == 0);
		CHECK_RC(cf_bk_store_stat(s, CF_BK_KIND_PACK, name, &size), 0);
	}
	cf_bk_store_free(s);
	s = NULL;

	/*
	 * lock=none in the lock bucket (versioned): delete removes every
	 * version, the object is gone, not hidden behind a marker.
	 */
	snprintf(url, sizeof(url), "s3://%s/free?lock=none", lb);
	CHECK_RC(cf_bk_store_open_url(&s, url, 0), 0);
	name_of(4343, name);
	CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_PACK, name, data, 1000, 0), 0);
	CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_PACK, name, data, 1000, 0), 0);
	CHECK_RC(cf_bk_store_lock_until(s, CF_BK_KIND_PACK, name, &until), 0);
	CHECK(until == 0);
	CHECK_RC(cf_bk_store_del(s, CF_BK_KIND_PACK, name), 0);
	CHECK_RC(cf_bk_store_get(s, CF_BK_KIND_PACK, name, 1 << 20, &buf,
	    &len), -ENOENT);
	CHECK_RC(cf_bk_store_del(s, CF_BK_KIND_PACK, name), -ENOENT);
	{
		/* A batch in a versioned bucket removes every version. */
		const char *v[1] = { name };
		int rcs[1] = { 99 };

		CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_PACK, name, data, 1000,
		    0), 0);
		CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_PACK, name, data, 1000,
		    0), 0);
		CHECK_RC(cf_bk_store_del_many(s, CF_BK_KIND_PACK, v, 1, rcs),
		    0);
		CHECK(rcs[0] == 0);
		CHECK_RC(cf_bk_store_del(s, CF_BK_KIND_PACK, name), -ENOENT);
	}
done:
	free(buf);
	cf_bk_store_free(s);
	cf_bk_writer_free(w);
	cf_bk_repo_free(r);
	cf_bk_keys_free(k);
	free(data);
}

static void
tls(void)		/* HTTPS: refused unless the CA is given */
{
	const char *ep = getenv("S3_TLS_ENDPOINT"), *ca = getenv("S3_TLS_CA");
	struct cf_bk_store *s = NULL;
	unsigned char *buf = NULL;
	char u[2048], name[65];
	size_t len;

	if (ep == NULL || ca == NULL) {
		printf("# S3_TLS_ENDPOINT or S3_TLS_CA unset: TLS not tested\n");
		CHECK(getenv("CI") == NULL);
		return;
	}
	snprintf(u, sizeof(u), "%s?endpoint=%s", url_of("tls"), ep);
	CHECK_RC(cf_bk_store_open_url(&s, u, 0), -EPERM);
	snprintf(u, sizeof(u), "%s?endpoint=%s&ca=%s", url_of("tls"), ep, ca);
	CHECK_RC(cf_bk_store_open_url(&s, u, 0), 0);
	name_of(7, name);
	CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_SNAPSHOT, name,
	    (const unsigned char *)"over tls", 8, 0), 0);
	CHECK_RC(cf_bk_store_get(s, CF_BK_KIND_SNAPSHOT, name, 8, &buf, &len),
	    0);
	CHECK(len == 8 && memcmp(buf, "over tls", 8) == 0);
	free(buf);
	cf_bk_store_free(s);
	/* The environment variable does the same as ca=. */
	snprintf(u, sizeof(u), "%s?endpoint=%s", url_of("tls"), ep);
	CHECK(setenv("COFFER_S3_CA_FILE", ca, 1) == 0);
	CHECK_RC(cf_bk_store_open_url(&s, u, 0), 0);
	cf_bk_store_free(s);
	CHECK(unsetenv("COFFER_S3_CA_FILE") == 0);
}

static void
throughput(void)	/* PUT/GET of 16 MiB objects, one stream */
{
	enum { N = 4, SZ = 16 << 20 };
	struct cf_bk_store *s = NULL;
	unsigned char *data = rnd(SZ), *buf = NULL;
	char name[65];
	double t0, tput, tget;
	size_t len;
	unsigned i;

	CHECK(data != NULL);
	CHECK_RC(cf_bk_store_open_url(&s, url_of("speed"), 0), 0);
	t0 = now_s();
	for (i = 0; i < N; i++) {
		name_of(500 + i, name);
		data[0] = (unsigned char)i;
		CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_PACK, name, data, SZ,
		    0), 0);
	}
	tput = now_s() - t0;
	t0 = now_s();
	for (i = 0; i < N; i++) {
		name_of(500 + i, name);
		CHECK_RC(cf_bk_store_get(s, CF_BK_KIND_PACK, name, SZ, &buf,
		    &len), 0);
		CHECK(len == SZ && buf[0] == (unsigned char)i);
		free(buf);
	}
	tget = now_s() - t0;
	printf("# coffer s3 16 MiB x %d: PUT %.1f MB/s, GET %.1f MB/s\n", N,
	    N * (double)SZ / 1e6 / tput, N * (double)SZ / 1e6 / tget);
	cf_bk_store_free(s);
	free(data);
}

static void
del_batches(void)	/* DeleteObjects, 1000 keys a request */
{
	enum { N = 1100, MISSING = 3 };
	struct cf_bk_store *s = NULL;
	char (*names)[65] = calloc(N + MISSING, 65);
	const char **v = calloc(N + MISSING, sizeof(*v));
	int *rcs = calloc(N + MISSING, sizeof(*rcs));
	double t0;
	size_t n = 0;
	unsigned i;

	CHECK(names != NULL && v != NULL && rcs != NULL);
	CHECK_RC(cf_bk_store_open_url(&s, url_of("batch"), 0), 0);
	put_index_objects(s, N);
	/* Every object put, and a few that never were. */
	for (i = 0; i < N + MISSING; i++) {
		name_of(i < N ? i : 900000 + i, names[i]);
		v[i] = names[i];
		rcs[i] = 99;
	}
	t0 = now_s();
	CHECK_RC(cf_bk_store_del_many(s, CF_BK_KIND_INDEX, v, N + MISSING,
	    rcs), 0);
	printf("# %d objects deleted in %.2f s\n", N, now_s() - t0);
	for (i = 0; i < N + MISSING; i++)
		CHECK_RC(rcs[i], 0);
	CHECK_RC(cf_bk_store_list(s, CF_BK_KIND_INDEX, count_cb, &n), 0);
	CHECK(n == 0);
	/* A name that is not an object name is refused before any request. */
	v[0] = "../config";
	CHECK_RC(cf_bk_store_del_many(s, CF_BK_KIND_INDEX, v, 1, rcs),
	    -EINVAL);
	cf_bk_store_free(s);
	free(names);
	free(v);
	free(rcs);
}

/*
 * Deletes in versioned buckets (S3_VER_BUCKET: versioning on, no Object
 * Lock; S3_LOCK_BUCKET: Object Lock).  Every version of every key goes,
 * by ListObjectVersions and DeleteObjects with version ids; a version
 * under retention is never tried and its key is -EROFS.  s3_rgw.sh
 * checks with awscli's list-object-versions what is left.  One key at a
 * time (cf_bk_store_del: a listing and a delete per key) is timed beside
 * it.
 */
static void
del_versioned(void)
{
	enum { N = 1100, TWICE = 100, MISSING = 3, OLD = 100, L = 30 };
	const char *vb = getenv("S3_VER_BUCKET"), *lb = getenv("S3_LOCK_BUCKET");
	struct cf_bk_store *s = NULL, *ls = NULL;
	char (*names)[65] = calloc(N + MISSING, 65), url[1024];
	const char **v = calloc(N + MISSING, sizeof(*v));
	int *rcs = calloc(N + MISSING, sizeof(*rcs));
	unsigned char *data = rnd(1000);
	double t0, tnew, told;
	uint64_t size;
	size_t n = 0;
	unsigned i;

	CHECK(names != NULL && v != NULL && rcs != NULL && data != NULL);
	if (vb == NULL || lb == NULL) {
		printf("# S3_VER_BUCKET or S3_LOCK_BUCKET unset: not tested\n");
		goto done;
	}
	snprintf(url, sizeof(url), "s3://%s/vbatch", vb);
	CHECK_RC(cf_bk_store_open_url(&s, url, 0), 0);
	put_index_objects(s, N);
	/* A second version of some. */
	for (i = 0; i < TWICE; i++) {
		name_of(i * 7, names[0]);
		CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_INDEX, names[0], data,
		    100, 0), 0);
	}
	for (i = 0; i < N + MISSING; i++) {
		name_of(i < N ? i : 900000 + i, names[i]);
		v[i] = names[i];
		rcs[i] = 99;
	}
	/* The old way for the first OLD keys, for comparison. */
	t0 = now_s();
	for (i = 0; i < OLD; i++)
		CHECK_RC(cf_bk_store_del(s, CF_BK_KIND_INDEX, v[i]), 0);
	told = now_s() - t0;
	t0 = now_s();
	CHECK_RC(cf_bk_store_del_many(s, CF_BK_KIND_INDEX, v + OLD,
	    N + MISSING - OLD, rcs + OLD), 0);
	tnew = now_s() - t0;
	printf("# versioned bucket: %d keys (%d with 2 versions) deleted in "
	    "%.2f s by batches; one by one %d keys took %.2f s (%.1f s for "
	    "%d)\n", N - OLD, TWICE, tnew, OLD, told, told * (N - OLD) / OLD,
	    N - OLD);
	for (i = OLD; i < N + MISSING; i++)
		CHECK_RC(rcs[i], 0);
	CHECK_RC(cf_bk_store_list(s, CF_BK_KIND_INDEX, count_cb, &n), 0);
	CHECK(n == 0);
	cf_bk_store_free(s);
	s = NULL;

	/*
	 * Object Lock: L keys, and one more whose older version is locked
	 * for a day under a newer unlocked one.  The lock is found by a
	 * HEAD of each version, the key is -EROFS, the unlocked versions
	 * go, and the locked one is still there (now the current one).
	 */
	snprintf(url, sizeof(url), "s3://%s/vlbatch?lock=governance&lock_days=1",
	    lb);
	CHECK_RC(cf_bk_store_open_url(&ls, url, 0), 0);
	snprintf(url, sizeof(url), "s3://%s/vlbatch?lock=none", lb);
	CHECK_RC(cf_bk_store_open_url(&s, url, 0), 0);
	for (i = 0; i < L + 1; i++) {
		name_of(5000 + i, names[i]);
		v[i] = names[i];
		rcs[i] = 99;
		if (i < L)
			CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_PACK, v[i], data,
			    1000, 0), 0);
	}
	CHECK_RC(cf_bk_store_put(ls, CF_BK_KIND_PACK, v[L], data, 1000, 0), 0);
	CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_PACK, v[L], data, 1000, 0), 0);
	name_of(6000, names[L + 1]);	/* missing */
	v[L + 1] = names[L + 1];
	CHECK_RC(cf_bk_store_del_many(s, CF_BK_KIND_PACK, v, L + 2, rcs), 0);
	for (i = 0; i < L; i++)
		CHECK_RC(rcs[i], 0);
	CHECK_RC(rcs[L], -EROFS);
	CHECK_RC(rcs[L + 1], 0);
	CHECK_RC(cf_bk_store_stat(s, CF_BK_KIND_PACK, v[L], &size), 0);
	n = 0;
	CHECK_RC(cf_bk_store_list(s, CF_BK_KIND_PACK, count_cb, &n), 0);
	CHECK(n == 1);
done:
	cf_bk_store_free(s);
	cf_bk_store_free(ls);
	free(names);
	free(v);
	free(rcs);
	free(data);
}

static void
rate_limit(void)	/* max_up / max_down hold all transfers together */
{
	enum { SZ = 6 << 20 };
	struct cf_bk_store *s = NULL;
	unsigned char *data = rnd(SZ), *buf = NULL;
	char name[65];
	double t0, tput, tget;
	size_t len;

	CHECK(data != NULL);
	/* 2 MiB/s each way, 1 s of budget saved up: 6 MiB take >= 2 s. */
	CHECK_RC(cf_bk_store_open_url(&s,
	    url_of("rate?max_up=2M&max_down=2048K"), 0), 0);
	name_of(600, name);
	t0 = now_s();
	CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_PACK, name, data, SZ, 0), 0);
	tput = now_s() - t0;
	t0 = now_s();
	CHECK_RC(cf_bk_store_get(s, CF_BK_KIND_PACK, name, SZ, &buf, &len),
	    0);
	tget = now_s() - t0;
	CHECK(len == SZ && memcmp(buf, data, SZ) == 0);
	printf("# 6 MiB at 2 MiB/s: PUT %.2f s, GET %.2f s\n", tput, tget);
	CHECK(tput >= 1.9 && tget >= 1.9);
	cf_bk_store_free(s);
	free(buf);
	/* The environment sets the same limit when the URL does not. */
	CHECK(setenv("COFFER_S3_MAX_DOWN", "2M", 1) == 0);
	CHECK_RC(cf_bk_store_open_url(&s, url_of("rate"), 0), 0);
	CHECK(unsetenv("COFFER_S3_MAX_DOWN") == 0);
	t0 = now_s();
	CHECK_RC(cf_bk_store_get(s, CF_BK_KIND_PACK, name, SZ, &buf, &len),
	    0);
	tget = now_s() - t0;
	CHECK(len == SZ && tget >= 1.9);
	cf_bk_store_free(s);
	free(buf);
	free(data);
}

static void
multipart(void)		/* over the part size: a multipart upload */
{
	enum { SZ = (16 << 20) + 3 };
	struct cf_bk_store *s = NULL;
	unsigned char *data = rnd(SZ), *buf = NULL;
	char name[65];
	size_t len;
	uint64_t size;

	CHECK(data != NULL);
	/* 4 parts, all at once (s3_rgw.sh checks RGW's log for it). */
	CHECK(setenv("COFFER_S3_PART_SIZE", "5242880", 1) == 0);
	CHECK(setenv("COFFER_S3_CONNECTIONS", "4", 1) == 0);
	CHECK_RC(cf_bk_store_open_url(&s, url_of("mp"), 0), 0);
	CHECK(unsetenv("COFFER_S3_PART_SIZE") == 0);
	CHECK(unsetenv("COFFER_S3_CONNECTIONS") == 0);
	name_of(900, name);
	CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_PACK, name, data, SZ, 0), 0);
	CHECK_RC(cf_bk_store_stat(s, CF_BK_KIND_PACK, name, &size), 0);
	CHECK(size == SZ);
	CHECK_RC(cf_bk_store_get(s, CF_BK_KIND_PACK, name, SZ, &buf, &len),
	    0);
	CHECK(len == SZ && memcmp(buf, data, SZ) == 0);
	free(buf);
	cf_bk_store_free(s);
	free(data);
}

static void
faults(void)		/* through a proxy injecting 503s and cut bodies */
{
	enum { MPSZ = (16 << 20) + 3 };
	const char *ep = getenv("S3_FAULT_ENDPOINT");
	struct cf_bk_keys *k = test_keys();
	struct cf_bk_store *s = NULL;
	struct cf_bk_repo *r = NULL;
	struct cf_bk_writer *w = NULL;
	struct cf_bk_verify_opts vo = { 1, 100, 1 };
	struct cf_bk_verify_result *res = NULL;
	unsigned char *data = rnd(1 << 20), *buf = NULL, part[777];
	unsigned char *big = rnd(MPSZ);
	unsigned char ids[20][32];
	char u[2048], name[65];
	size_t len, n = 0;
	unsigned i;

	CHECK(k != NULL && data != NULL && big != NULL);
	if (ep == NULL) {
		printf("# S3_FAULT_ENDPOINT unset: faults not tested\n");
		CHECK(getenv("CI") == NULL);
		goto done;
	}
	/* A multipart upload, 4 parts at once, through the faults. */
	snprintf(u, sizeof(u), "%s?endpoint=%s", url_of("mpfaults"), ep);
	CHECK(setenv("COFFER_S3_PART_SIZE", "5242880", 1) == 0);
	CHECK(setenv("COFFER_S3_CONNECTIONS", "4", 1) == 0);
	CHECK_RC(cf_bk_store_open_url(&s, u, 0), 0);
	CHECK(unsetenv("COFFER_S3_PART_SIZE") == 0);
	CHECK(unsetenv("COFFER_S3_CONNECTIONS") == 0);
	for (i = 0; i < 3; i++) {
		name_of(2100 + i, name);
		big[0] = (unsigned char)i;
		CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_PACK, name, big, MPSZ,
		    0), 0);
		CHECK_RC(cf_bk_store_get(s, CF_BK_KIND_PACK, name, MPSZ, &buf,
		    &len), 0);
		CHECK(len == MPSZ && memcmp(buf, big, MPSZ) == 0);
		free(buf);
		buf = NULL;
	}
	cf_bk_store_free(s);
	s = NULL;
	snprintf(u, sizeof(u), "%s?endpoint=%s", url_of("faults"), ep);
	CHECK_RC(cf_bk_store_open_url(&s, u, 0), 0);
	for (i = 0; i < 20; i++) {
		name_of(2000 + i, name);
		data[0] = (unsigned char)i;
		CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_PACK, name, data,
		    (1 << 20) - i, 0), 0);
	}
	for (i = 0; i < 20; i++) {
		name_of(2000 + i, name);
		data[0] = (unsigned char)i;
		CHECK_RC(cf_bk_store_get(s, CF_BK_KIND_PACK, name, 1 << 20,
		    &buf, &len), 0);
		CHECK(len == (1 << 20) - i && memcmp(buf, data, len) == 0);
		free(buf);
		CHECK_RC(cf_bk_store_get_range(s, CF_BK_KIND_PACK, name, 1000,
		    sizeof(part), part), 0);
		CHECK(memcmp(part, data + 1000, sizeof(part)) == 0);
	}
	CHECK_RC(cf_bk_store_list(s, CF_BK_KIND_PACK, count_cb, &n), 0);
	CHECK(n == 20);
	/* A whole repository, written and verified through the faults. */
	snprintf(u, sizeof(u), "%s?endpoint=%s", url_of("faults/repo"), ep);
	cf_bk_store_free(s);
	s = NULL;
	CHECK_RC(cf_bk_store_open_url(&s, u, 0), 0);
	CHECK_RC(cf_bk_repo_init(&r, s, k, tenant), 0);
	s = NULL;
	CHECK_RC(cf_bk_writer_new(&w, r, 2), 0);
	for (i = 0; i < 20; i++) {
		data[0] = (unsigned char)i;
		CHECK_RC(cf_bk_writer_add(w, CF_BK_BLOB_DATA, data, 50000,
		    ids[i]), 0);
	}
	CHECK_RC(cf_bk_writer_flush(w), 0);
	cf_bk_writer_free(w);
	cf_bk_repo_free(r);
	r = NULL;
	CHECK_RC(cf_bk_store_open_url(&s, u, 0), 0);
	CHECK_RC(cf_bk_repo_open(&r, s, k, tenant), 0);
	s = NULL;
	CHECK_RC(cf_bk_repo_index_load(r, NULL), 0);
	for (i = 0; i < 20; i++) {
		data[0] = (unsigned char)i;
		CHECK_RC(cf_bk_repo_blob_load(r, CF_BK_BLOB_DATA, ids[i], &buf,
		    &len), 0);
		CHECK(len == 50000 && memcmp(buf, data, len) == 0);
		free(buf);
	}
	CHECK_RC(cf_bk_verify(r, &vo, &res), 0);
	CHECK(!cf_bk_verify_damaged(res));
	cf_bk_verify_result_free(res);
	cf_bk_repo_free(r);
done:
	cf_bk_keys_free(k);
	free(data);
	free(big);
}

/*
 * The server killed in the middle of a backup (s3_rgw.sh kills radosgw
 * while phase 1 runs, restarts it, then runs phase 2).  Both phases back
 * up the same deterministic blobs into s3://BUCKET/killrepo.  Phase 1
 * may fail (the server is gone; COFFER_S3_RETRY_SECONDS is short) and
 * then must leave no snapshot; phase 2 completes, its snapshot is the
 * only one (S3_KILL_PHASE1_OK=1: phase 1 got through, two), and verify
 * reading every pack passes.  Phase 1 puts an index after every pack
 * (the default is 30 s after the last one, longer than this run) and the
 * script kills the server once one is there: phase 2 finds the blobs of
 * the indexed packs and stores only the others ([BK-CRASH-4]).
 */
enum { KB_N = 800, KB_LEN = 256 << 10 };

static int
kill_backup_run(struct cf_bk_repo *r, unsigned char sid[32], int64_t every,
    uint64_t *stored)
{
	static unsigned char ids[KB_N][32], tid[32];
	unsigned char seed[randombytes_SEEDBYTES] = { 0x4b };
	unsigned char *blob = malloc(KB_LEN);
	struct cf_bk_writer *w = NULL;
	struct cf_bk_node node;
	struct cf_bk_item *items = calloc(KB_N, sizeof(*items));
	struct cf_bk_tree tree = { &node, 1, NULL };
	struct cf_bk_snapshot snap;
	char host[] = "h", path[] = "/", cons[] = "offline";
	char *paths[] = { path };
	unsigned i;
	int rc = -ENOMEM;

	if (blob == NULL || items == NULL)
		goto out;
	rc = cf_bk_writer_new(&w, r, 4);
	if (rc == 0 && every >= 0)
		bk_writer_index_every(w, every);
	for (i = 0; rc == 0 && i < KB_N; i++) {
		memcpy(seed + 1, &i, sizeof(i));
		randombytes_buf_deterministic(blob, KB_LEN, seed);
		rc = cf_bk_writer_add(w, CF_BK_BLOB_DATA, blob, KB_LEN, ids[i]);
		memcpy(items[i].id, ids[i], 32);
	}
	memset(&node, 0, sizeof(node));
	node.type = CF_BK_NODE_FILE;
	node.name = "big";
	node.mode = 0600;
	node.size = (uint64_t)KB_N * KB_LEN;
	node.items = items;
	node.nitems = KB_N;
	if (rc == 0)
		rc = cf_bk_writer_add_tree(w, &tree, tid);
	if (rc == 0)
		rc = cf_bk_writer_flush(w);
	if (rc == 0 && stored != NULL) {
		struct cf_bk_writer_stats st;

		cf_bk_writer_stats(w, &st);
		*stored = st.new_blobs;
	}
	cf_bk_writer_free(w);
	memset(&snap, 0, sizeof(snap));
	snap.time = 2;
	memcpy(snap.tenant, tenant, 16);
	snap.hostname = host;
	snap.paths = paths;
	snap.npaths = 1;
	snap.consistency = cons;
	memcpy(snap.tree, tid, 32);
	if (rc == 0)
		rc = cf_bk_repo_snapshot_save(r, &snap, sid);
out:
	free(blob);
	free(items);
	return rc;
}

static void
kill_phase1(void)
{
	struct cf_bk_keys *k = test_keys();
	struct cf_bk_store *s = NULL;
	struct cf_bk_repo *r = NULL;
	unsigned char sid[32];
	int rc;

	CHECK(k != NULL);
	CHECK_RC(cf_bk_store_open_url(&s, url_of("killrepo"), 0), 0);
	CHECK_RC(cf_bk_repo_init(&r, s, k, tenant), 0);
	rc = kill_backup_run(r, sid, 0, NULL);
	printf("# phase 1 (server killed meanwhile): %s\n",
	    rc == 0 ? "completed" : strerror(-rc));
	cf_bk_repo_free(r);
	cf_bk_keys_free(k);
	if (rc == 0)
		exit(3);	/* tells the script: not interrupted */
}

static void
kill_phase2(void)
{
	struct cf_bk_keys *k = test_keys();
	struct cf_bk_store *s = NULL;
	struct cf_bk_repo *r = NULL;
	struct cf_bk_verify_opts vo = { 1, 100, 1 };
	struct cf_bk_verify_result *res = NULL;
	unsigned char sid[32], (*sids)[32] = NULL, *blob, *buf, id[32];
	unsigned char seed[randombytes_SEEDBYTES] = { 0x4b };
	const char *ok1 = getenv("S3_KILL_PHASE1_OK");
	size_t nsnap, want = ok1 != NULL && strcmp(ok1, "1") == 0 ? 1 : 0;
	size_t found = 0, blen;
	uint64_t stored = 0;
	unsigned i;

	CHECK(k != NULL);
	CHECK_RC(cf_bk_store_open_url(&s, url_of("killrepo"), 0), 0);
	CHECK_RC(cf_bk_repo_open(&r, s, k, tenant), 0);
	CHECK_RC(cf_bk_repo_index_load(r, NULL), 0);
	CHECK_RC(cf_bk_repo_snapshot_list(r, &sids, &nsnap), 0);
	free(sids);
	sids = NULL;
	printf("# before the rerun: %zu snapshots (want %zu)\n", nsnap, want);
	CHECK(nsnap == want);
	/* What the interrupted run indexed (the script waited for one). */
	blob = malloc(KB_LEN);
	CHECK(blob != NULL);
	for (i = 0; i < KB_N; i++) {
		memcpy(seed + 1, &i, sizeof(i));
		randombytes_buf_deterministic(blob, KB_LEN, seed);
		cf_bk_blob_id(k, blob, KB_LEN, id);
		if (cf_bk_repo_blob_load(r, CF_BK_BLOB_DATA, id, &buf,
		    &blen) == 0) {
			found++;
			free(buf);
		}
	}
	free(blob);
	CHECK_RC(kill_backup_run(r, sid, -1, &stored), 0);
	printf("# the rerun: %zu of %d blobs were indexed by the "
	    "interrupted run, %llu stored again\n", found, KB_N,
	    (unsigned long long)stored);
	CHECK(want == 1 || found > 0);
	/* The data blobs not found, and the tree unless phase 1 put it. */
	CHECK(stored == KB_N - found || stored == KB_N - found + 1);
	CHECK_RC(cf_bk_repo_snapshot_list(r, &sids, &nsnap), 0);
	free(sids);
	CHECK(nsnap == want + 1);
	CHECK_RC(cf_bk_verify(r, &vo, &res), 0);
	printf("# verify: %llu packs, %llu read, %llu orphan\n",
	    (unsigned long long)res->packs, (unsigned long long)res->packs_read,
	    (unsigned long long)res->packs_orphan);
	CHECK(!cf_bk_verify_damaged(res) && res->packs_read == res->packs &&
	    res->packs >= 2);
	cf_bk_verify_result_free(res);
	cf_bk_repo_free(r);
	cf_bk_keys_free(k);
}

/*
 * Run alone by s3_rgw.sh (S3_LOCKED_DELETE=1), which then checks in
 * RGW's log that this run sent no delete at all: versions under
 * retention are found by HEAD and never tried (a refused try would
 * also end as -EROFS, so only the log tells the difference).
 */
static void
locked_delete(void)
{
	const char *lb = getenv("S3_LOCK_BUCKET");
	struct cf_bk_store *s = NULL;
	unsigned char *data = rnd(1000);
	char url[1024], names[3][65];
	const char *v[3] = { names[0], names[1], names[2] };
	int rcs[3] = { 99, 99, 99 };
	uint64_t size;
	unsigned i;

	CHECK(lb != NULL && data != NULL);
	if (lb == NULL)
		goto done;
	snprintf(url, sizeof(url),
	    "s3://%s/vlocked?lock=governance&lock_days=1", lb);
	CHECK_RC(cf_bk_store_open_url(&s, url, 0), 0);
	for (i = 0; i < 3; i++)
		name_of(7000 + i, names[i]);
	CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_PACK, v[0], data, 1000, 0), 0);
	CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_PACK, v[1], data, 999, 0), 0);
	CHECK_RC(cf_bk_store_del_many(s, CF_BK_KIND_PACK, v, 3, rcs), 0);
	CHECK(rcs[0] == -EROFS && rcs[1] == -EROFS && rcs[2] == 0);
	CHECK_RC(cf_bk_store_del(s, CF_BK_KIND_PACK, v[0]), -EROFS);
	CHECK_RC(cf_bk_store_stat(s, CF_BK_KIND_PACK, v[1], &size), 0);
	CHECK(size == 999);
done:
	cf_bk_store_free(s);
	free(data);
}

/*
 * S3_STALE_PREFIX: s3_rgw.sh made 3 multipart uploads of repository
 * keys under it with awscli.  None was initiated before the epoch; all
 * were a second from now, and are aborted, found one per
 * ListMultipartUploads page (so 3 only if the pages are followed); a
 * second run finds none.
 */
static void
stale_uploads(void)
{
	const char *pfx = getenv("S3_STALE_PREFIX");
	struct cf_bk_store *s = NULL;
	uint64_t n = 99;

	CHECK(pfx != NULL);
	if (pfx == NULL)
		goto done;
	CHECK_RC(cf_bk_store_open_url(&s, url_of(pfx), 0), 0);
	if (s == NULL)
		goto done;
	bk_store_s3_set_uploads_page(cf_bk_store_ctx(s), 1);
	CHECK_RC(cf_bk_store_cleanup(s, 0, &n), 0);
	CHECK(n == 0);
	CHECK_RC(cf_bk_store_cleanup(s, (int64_t)time(NULL) + 1, &n), 0);
	printf("# aborted %llu uploads, one listed per page\n",
	    (unsigned long long)n);
	CHECK(n == 3);
	CHECK_RC(cf_bk_store_cleanup(s, (int64_t)time(NULL) + 1, &n), 0);
	CHECK(n == 0);
done:
	cf_bk_store_free(s);
}

/* Makes an empty file at dir/name with both times `age` seconds ago. */
static int
old_file(const char *dir, const char *name, time_t age)
{
	struct timespec ts[2];
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	ts[0].tv_sec = ts[1].tv_sec = time(NULL) - age;
	ts[0].tv_nsec = ts[1].tv_nsec = 0;
	if (futimens(fd, ts) < 0) {
		close(fd);
		return -errno;
	}
	return close(fd) < 0 ? -errno : 0;
}

/*
 * The local store's cleanup: the temporaries a killed put leaves
 * (".tmp-" and 16 hex digits, beside the target: the config's in the
 * top directory) go when last changed before the cutoff; a young one
 * (a running writer's), other names and objects stay.  Then prune on a
 * local repository removes a temporary two days old, not one an hour
 * old (step 7, CF_BK_STALE_SECONDS).
 */
static void
local_temporaries(void)
{
	struct cf_bk_keys *k = test_keys();
	struct cf_bk_repo *r = NULL;
	struct cf_bk_lock *l = NULL;
	struct cf_bk_prune_opts po;
	struct cf_bk_prune_stats st;
	struct cf_bk_store *s = NULL;
	char dir[] = "/tmp/cf-s3tmp.XXXXXX", sub[4096], name[65];
	unsigned char data[10] = { 1 };
	struct stat st2;
	uint64_t n = 99, size;
	static const char *const old[] = { ".", "index", "data/ab" };
	size_t i;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(sub, sizeof(sub), "file://%s", dir);
	CHECK_RC(cf_bk_store_open_url(&s, sub, CF_BK_STORE_CREATE), 0);
	if (s == NULL)
		goto done;
	name_of(1, name);
	CHECK_RC(cf_bk_store_put(s, CF_BK_KIND_INDEX, name, data, 10, 0), 0);
	snprintf(sub, sizeof(sub), "%s/data/ab", dir);
	CHECK(mkdir(sub, 0700) == 0);
	for (i = 0; i < 3; i++) {
		snprintf(sub, sizeof(sub), "%s/%s", dir, old[i]);
		CHECK_RC(old_file(sub, ".tmp-0123456789abcdef", 7200), 0);
	}
	snprintf(sub, sizeof(sub), "%s/snapshots", dir);
	CHECK_RC(old_file(sub, ".tmp-fedcba9876543210", 10), 0);
	CHECK_RC(old_file(sub, ".tmp-not-ours", 7200), 0);
	CHECK_RC(cf_bk_store_cleanup(s, (int64_t)time(NULL) - 3600, &n), 0);
	CHECK(n == 3);
	for (i = 0; i < 3; i++) {
		snprintf(sub, sizeof(sub), "%s/%s/.tmp-0123456789abcdef", dir,
		    old[i]);
		CHECK(stat(sub, &st2) < 0 && errno == ENOENT);
	}
	snprintf(sub, sizeof(sub), "%s/snapshots/.tmp-fedcba9876543210", dir);
	CHECK(stat(sub, &st2) == 0);
	snprintf(sub, sizeof(sub), "%s/snapshots/.tmp-not-ours", dir);
	CHECK(stat(sub, &st2) == 0);
	CHECK_RC(cf_bk_store_stat(s, CF_BK_KIND_INDEX, name, &size), 0);
	CHECK_RC(cf_bk_store_cleanup(s, (int64_t)time(NULL) - 3600, &n), 0);
	CHECK(n == 0);

	/* Prune: an empty repository, one old and one young temporary. */
	cf_bk_store_free(s);
	s = NULL;
	snprintf(sub, sizeof(sub), "rm -rf -- '%s'", dir);
	CHECK(system(sub) == 0);
	snprintf(sub, sizeof(sub), "file://%s", dir);
	CHECK_RC(cf_bk_store_open_url(&s, sub, CF_BK_STORE_CREATE), 0);
	CHECK(k != NULL);
	if (k == NULL || s == NULL)
		goto done;
	CHECK_RC(cf_bk_repo_init(&r, s, k, tenant), 0);
	s = NULL;
	if (r == NULL)
		goto done;
	snprintf(sub, sizeof(sub), "%s/index", dir);
	CHECK_RC(old_file(sub, ".tmp-00000000000000aa", 2 * 86400), 0);
	CHECK_RC(old_file(sub, ".tmp-00000000000000bb", 3600), 0);
	CHECK_RC(cf_bk_repo_lock(r, 1, NULL, &l), 0);
	memset(&po, 0, sizeof(po));
	CHECK_RC(cf_bk_prune(r, l, &po, &st), 0);
	CHECK(st.stale_removed == 1 && st.stale_rc == 0);
	snprintf(sub, sizeof(sub), "%s/index/.tmp-00000000000000aa", dir);
	CHECK(stat(sub, &st2) < 0 && errno == ENOENT);
	snprintf(sub, sizeof(sub), "%s/index/.tmp-00000000000000bb", dir);
	CHECK(stat(sub, &st2) == 0);
	if (l != NULL)
		CHECK_RC(cf_bk_lock_release(l), 0);
done:
	cf_bk_repo_free(r);
	cf_bk_keys_free(k);
	cf_bk_store_free(s);
	snprintf(sub, sizeof(sub), "rm -rf -- '%s'", dir);
	CHECK(system(sub) == 0);
}

static void
skip_all(void)
{
	printf("# S3_BUCKET unset: run through tests/integration/s3_rgw.sh\n");
}

static const struct cf_test_case cases[] = {
	CF_TEST(round_trip),
	CF_TEST(list_pages),
	CF_TEST(refused),
	CF_TEST(repository),
	CF_TEST(object_lock),
	CF_TEST(tls),
	CF_TEST(multipart),
	CF_TEST(faults),
	CF_TEST(throughput),
	CF_TEST(rate_limit),
	CF_TEST(del_batches),
	CF_TEST(del_versioned),
};

int
main(int argc, char **argv)
{
	static const struct cf_test_case none[] = { CF_TEST(skip_all) };

	if (sodium_init() < 0)
		return 99;
	static const struct cf_test_case k1[] = { CF_TEST(kill_phase1) };
	static const struct cf_test_case k2[] = { CF_TEST(kill_phase2) };
	static const struct cf_test_case ld[] = { CF_TEST(locked_delete) };
	static const struct cf_test_case su[] = { CF_TEST(stale_uploads),
	    CF_TEST(local_temporaries) };
	const char *phase = getenv("S3_KILL_PHASE");

	if (bucket() == NULL)
		return cf_test_run(none, 1, argc, argv);
	if (phase != NULL && strcmp(phase, "1") == 0)
		return cf_test_run(k1, 1, argc, argv);
	if (phase != NULL && strcmp(phase, "2") == 0)
		return cf_test_run(k2, 1, argc, argv);
	if (getenv("S3_LOCKED_DELETE") != NULL)
		return cf_test_run(ld, 1, argc, argv);
	if (getenv("S3_STALE_PREFIX") != NULL)
		return cf_test_run(su, 2, argc, argv);
	return cf_test_run(cases, sizeof(cases) / sizeof(cases[0]), argc,
	    argv);
}
