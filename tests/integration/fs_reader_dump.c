/*
 * fs_reader_dump.c - prints a tenant's tree as the store reader
 * (fs/fs_reader.c) sees it, for tests/integration/fs_reader_mount.py,
 * which compares it with the same tree seen through a real mount.
 *
 * Usage: fs_reader_dump HOME TENANT   (passphrase: COFFER_PASSPHRASE_FILE;
 * FS_READER_STORE reads that store instead of the tenant's, e.g. a
 * snapshot's farm, with the tenant's keys)
 *
 * One line per entry, tab-separated, names and targets in hex so any byte
 * survives:
 *   E  path  type  mode  uid  gid  size  nlink  ino  mtime_ns  content  xattrs  data
 * content is the SHA-256 of a regular file, the target of a symlink, "-"
 * otherwise; xattrs "name=value" pairs (hex) sorted, joined by ","; data
 * the data ranges of a regular file "off-end" joined by ",".  An entry the
 * reader reports as damaged is "X  dirpath  stored  errno".  A test
 * helper, not a tool: it exits 1 on any failure to walk.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "cf_fs.h"
#include "cf_keystore.h"

static void
hex(const void *p, size_t len, char *out)
{
	sodium_bin2hex(out, len * 2 + 1, p, len);
}

static int
xattrs(const struct cf_fs_rdir *d, const char *name, char **out)
{
	char *list = NULL, *p, **names = NULL, *s;
	size_t len, n = 0, i, j, cap = 1, vlen;
	unsigned char *val;
	int rc;

	*out = NULL;
	rc = cf_fs_rdir_xattr_list(d, name, &list, &len, NULL);
	if (rc < 0)
		return rc;
	for (p = list; p != NULL && p < list + len; p += strlen(p) + 1)
		n++;
	names = calloc(n + 1, sizeof(*names));
	for (i = 0, p = list; p != NULL && p < list + len; p += strlen(p) + 1)
		names[i++] = p;
	/* Sorted, so both sides print the same line. */
	for (i = 1; i < n; i++)
		for (j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
			s = names[j];
			names[j] = names[j - 1];
			names[j - 1] = s;
		}
	s = malloc(cap);
	s[0] = '\0';
	for (i = 0; i < n; i++) {
		rc = cf_fs_rdir_xattr_get(d, name, names[i], &val, &vlen);
		if (rc < 0)
			break;
		cap += strlen(names[i]) * 2 + vlen * 2 + 3;
		s = realloc(s, cap);
		if (s[0] != '\0')
			memcpy(s + strlen(s), ",", 2);
		hex(names[i], strlen(names[i]), s + strlen(s));
		memcpy(s + strlen(s), "=", 2);
		hex(val, vlen, s + strlen(s));
		free(val);
	}
	free(names);
	free(list);
	*out = s;
	return rc < 0 ? rc : 0;
}

/* SHA-256 and data ranges of a regular file; -EAGAIN to retry. */
static int
content(const struct cf_fs_rdir *d, const char *name, char *sum,
    char **ranges)
{
	struct cf_fs_rfile *f = NULL;
	crypto_hash_sha256_state st;
	unsigned char h[32], *buf = malloc(CF_FS_RREAD_MAX);
	struct stat fst;
	off_t off = 0, doff, dend;
	ssize_t n;
	size_t cap = 1;
	char *r = malloc(1);
	int rc;

	r[0] = '\0';
	*ranges = NULL;
	rc = cf_fs_rfile_open(&f, d, name);
	if (rc < 0)
		goto out;
	cf_fs_rfile_stat(f, &fst);
	crypto_hash_sha256_init(&st);
	while (off < fst.st_size) {
		n = cf_fs_rfile_pread(f, buf, CF_FS_RREAD_MAX, off, NULL);
		if (n <= 0) {
			rc = n == 0 ? -EIO : (int)n;
			goto out;
		}
		crypto_hash_sha256_update(&st, buf, (size_t)n);
		off += n;
	}
	crypto_hash_sha256_final(&st, h);
	hex(h, sizeof(h), sum);
	off = 0;
	while (cf_fs_rfile_next_data(f, off, &doff, &dend) == 0) {
		cap += 48;
		r = realloc(r, cap);
		snprintf(r + strlen(r), 48, "%s%lld-%lld", r[0] ? "," : "",
		    (long long)doff, (long long)dend);
		off = dend;
	}
	rc = cf_fs_rfile_check(f);
out:
	cf_fs_rfile_free(f);
	free(buf);
	if (rc == 0)
		*ranges = r;
	else
		free(r);
	return rc;
}

static int
walk(struct cf_fs_rdir *d, const char *path)
{
	const struct cf_fs_rentry *e;
	struct cf_fs_rdir *sub;
	char *p, *hx, sum[65], *target, *xa, *ranges;
	struct timespec ts = { 0, 100 * 1000 * 1000 };
	int rc, tries;

	while ((rc = cf_fs_rdir_next(d, &e)) == 1) {
		if (e->err != 0) {
			printf("X\t%s\t%s\t%d\n", path, e->stored, -e->err);
			continue;
		}
		p = malloc(strlen(path) + strlen(e->name) + 2);
		snprintf(p, strlen(path) + strlen(e->name) + 2, "%s/%s", path,
		    e->name);
		hx = malloc(strlen(p) * 2 + 1);
		hex(p, strlen(p), hx);
		target = malloc(CF_FS_RLINK_MAX * 2 + 2);
		ranges = NULL;
		memcpy(target, "-", 2);
		if (S_ISREG(e->st.st_mode)) {
			for (tries = 0; tries < 50; tries++) {
				rc = content(d, e->name, sum, &ranges);
				if (rc != -EAGAIN)
					break;
				nanosleep(&ts, NULL);
			}
			if (rc < 0) {
				fprintf(stderr, "%s: %s\n", p, strerror(-rc));
				return rc;
			}
			memcpy(target, sum, sizeof(sum));
		} else if (S_ISLNK(e->st.st_mode)) {
			char t[CF_FS_RLINK_MAX + 1];

			rc = cf_fs_rdir_readlink(d, e->name, t, sizeof(t));
			if (rc < 0)
				return rc;
			hex(t, strlen(t), target);
		}
		xa = NULL;
		if (!S_ISLNK(e->st.st_mode)) {
			rc = xattrs(d, e->name, &xa);
			if (rc < 0)
				return rc;
		}
		printf("E\t%s\t%o\t%o\t%u\t%u\t%lld\t%lu\t%llu\t%lld\t%s\t%s\t%s\n",
		    hx, (unsigned)(e->st.st_mode & S_IFMT) >> 12,
		    (unsigned)(e->st.st_mode & 07777), (unsigned)e->st.st_uid,
		    (unsigned)e->st.st_gid, (long long)e->st.st_size,
		    (unsigned long)e->st.st_nlink,
		    (unsigned long long)e->st.st_ino,
		    (long long)e->st.st_mtim.tv_sec * 1000000000LL +
		    e->st.st_mtim.tv_nsec, target, xa != NULL ? xa : "",
		    ranges != NULL ? ranges : "");
		free(xa);
		free(ranges);
		free(target);
		free(hx);
		if (S_ISDIR(e->st.st_mode)) {
			rc = cf_fs_rdir_open(&sub, d, e->name);
			if (rc < 0)
				return rc;
			rc = walk(sub, p);
			cf_fs_rdir_free(sub);
			if (rc < 0)
				return rc;
		}
		free(p);
	}
	return rc;
}

int
main(int argc, char **argv)
{
	struct cf_ks_home *home = NULL;
	struct cf_ks_tenant *t = NULL;
	struct cf_secbuf *root = NULL;
	struct cf_fs_keys *keys = NULL;
	struct cf_fs_reader *r = NULL;
	struct cf_fs_rdir *d = NULL;
	char store[4096];
	uint32_t m = 0, v[64];
	size_t n, i;
	int rc;

	if (argc != 3) {
		fprintf(stderr, "usage: fs_reader_dump HOME TENANT\n");
		return 2;
	}
	rc = cf_ks_init();
	if (rc == 0)
		rc = cf_ks_home_open(&home, argv[1], 0);
	if (rc == 0)
		rc = cf_ks_tenant_open(home, argv[2], &t);
	if (rc < 0) {
		fprintf(stderr, "fs_reader_dump: tenant: %s\n", strerror(-rc));
		return 1;
	}
	if (getenv("FS_READER_STORE") != NULL)	/* a snapshot's farm */
		snprintf(store, sizeof(store), "%s", getenv("FS_READER_STORE"));
	else if (cf_ks_tenant_get(t, "store") != NULL)
		snprintf(store, sizeof(store), "%s", cf_ks_tenant_get(t,
		    "store"));
	else
		snprintf(store, sizeof(store), "%s/%s/store",
		    cf_ks_home_path(home), cf_ks_tenant_dir(t));
	/* Names under the store's metadata version, contents under all. */
	rc = cf_fs_store_meta_version(store, &m);
	if (rc == 0 && m == 0)
		m = cf_ks_tenant_key_version(t);
	if (rc == 0)
		rc = cf_ks_tenant_unlock(t, m, &root);
	if (rc == 0)
		rc = cf_fs_keys_new(&keys, root, cf_ks_tenant_cipher(t), m);
	n = cf_ks_tenant_versions(t, v, 64);
	for (i = 0; rc == 0 && i < n && i < 64; i++) {
		if (v[i] == m)
			continue;
		cf_secbuf_free(root);
		root = NULL;
		rc = cf_ks_tenant_unlock(t, v[i], &root);
		if (rc == 0)
			rc = cf_fs_keys_add(keys, root, v[i]);
	}
	if (rc < 0) {
		fprintf(stderr, "fs_reader_dump: keys: %s\n", strerror(-rc));
		return 1;
	}
	rc = cf_fs_reader_open(&r, keys, store);
	if (rc == 0)
		rc = cf_fs_rdir_open_root(&d, r);
	if (rc == 0)
		rc = walk(d, "");
	if (rc < 0)
		fprintf(stderr, "fs_reader_dump: %s\n", strerror(-rc));
	cf_fs_rdir_free(d);
	cf_fs_reader_free(r);
	cf_fs_keys_free(keys);
	cf_secbuf_free(root);
	cf_ks_tenant_free(t);
	cf_ks_home_free(home);
	return rc < 0 ? 1 : 0;
}
