/*
 * test_fs_reader.c - the store reader (fs/fs_reader.c, "Reading a store
 * without FUSE" in docs/format/fs.md) against stores built here with the
 * public codecs, the way the daemon lays them out: cf_fs_store_init, a
 * cf.diriv per directory, encrypted names, headers and sealed blocks,
 * backing holes, encrypted symlinks and xattrs, long names (cf.L.*) and
 * long symlink targets (links/).
 *
 * It does not mount: what the daemon writes through a real mount is
 * covered by tests/integration/fs_mount.py and, for the reader,
 * tests/integration/fs_reader_mount.py.  Long names and targets are made
 * with an independent hash (raw libsodium), not cf_fs_long_name().
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "cf_fs.h"
#include "fs_int.h"	/* the meta key, to seal xattr values as the daemon does */
#include "cf_test.h"

#define B64URL sodium_base64_VARIANT_URLSAFE_NO_PADDING
#define MIB (1024 * 1024)

/* ---- building a store ------------------------------------------------------ */

static struct cf_fs_keys *
keys_seq(unsigned start, enum cf_ks_cipher c)
{
	unsigned char root[32];
	struct cf_secbuf *sb = NULL;
	struct cf_fs_keys *k = NULL;
	size_t i;

	for (i = 0; i < sizeof(root); i++)
		root[i] = (unsigned char)(start + i);
	if (cf_secbuf_new(&sb, 32) != 0)
		return NULL;
	memcpy(cf_secbuf_data(sb), root, 32);
	if (cf_fs_keys_new(&k, sb, c, 1) != 0)
		k = NULL;
	cf_secbuf_free(sb);
	return k;
}

struct store {
	struct cf_fs_keys *k;
	char path[1024];
	int fd;		/* the store directory */
	int root;	/* data/ */
};

static int
store_new(struct store *s, enum cf_ks_cipher c)
{
	memset(s, 0, sizeof(*s));
	s->fd = s->root = -1;
	s->k = keys_seq(0, c);
	if (s->k == NULL)
		return -ENOMEM;
	snprintf(s->path, sizeof(s->path), "%s/store", cf_test_tmpdir());
	if (cf_fs_store_init(s->k, s->path) != 0)
		return -EIO;
	s->fd = open(s->path, O_RDONLY | O_DIRECTORY);
	s->root = openat(s->fd, "data", O_RDONLY | O_DIRECTORY);
	return s->fd >= 0 && s->root >= 0 ? 0 : -errno;
}

static void
store_free(struct store *s)
{
	if (s->root >= 0)
		close(s->root);
	if (s->fd >= 0)
		close(s->fd);
	cf_fs_keys_free(s->k);
}

static int
diriv_of(int dfd, unsigned char iv[CF_FS_DIRIV_BYTES])
{
	int fd = openat(dfd, CF_FS_DIRIV_NAME, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, iv, CF_FS_DIRIV_BYTES);
	close(fd);
	return n == CF_FS_DIRIV_BYTES ? 0 : -EIO;
}

/* prefix + base64url(BLAKE2b-256(s)), from raw libsodium. */
static void
hashed(const char *prefix, const char *s, size_t len, char out[49])
{
	unsigned char h[32];

	crypto_generichash(h, sizeof(h), (const unsigned char *)s, len, NULL, 0);
	memcpy(out, prefix, 5);
	sodium_bin2base64(out + 5, 44, h, sizeof(h), B64URL);
}

static int
put_file(int dfd, const char *name, const void *buf, size_t len)
{
	int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	int rc = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, buf, len) != (ssize_t)len)
		rc = -EIO;
	close(fd);
	return rc;
}

/*
 * The backing name of name in dfd into out (NAME_MAX + 1); for a long
 * name also writes its sidecar.
 */
static int
bname(struct store *s, int dfd, const char *name, char *out)
{
	unsigned char iv[CF_FS_DIRIV_BYTES];
	char enc[512], side[64];
	int rc;

	rc = diriv_of(dfd, iv);
	if (rc < 0)
		return rc;
	if (strlen(name) <= CF_FS_NAME_MAX)
		return cf_fs_name_encrypt(s->k, iv, name, out, NAME_MAX + 1);
	rc = cf_fs_name_encrypt_any(s->k, iv, name, enc, sizeof(enc));
	if (rc < 0)
		return rc;
	hashed("cf.L.", enc, strlen(enc), out);
	snprintf(side, sizeof(side), "%s.n", out);
	return put_file(dfd, side, enc, strlen(enc));
}

/* Makes directory name in dfd with its IV; returns its fd or -errno. */
static int
mk_dir(struct store *s, int dfd, const char *name)
{
	unsigned char iv[CF_FS_DIRIV_BYTES];
	char b[NAME_MAX + 1];
	int fd, rc;

	rc = bname(s, dfd, name, b);
	if (rc < 0)
		return rc;
	if (mkdirat(dfd, b, 0755) != 0)
		return -errno;
	fd = openat(dfd, b, O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		return -errno;
	randombytes_buf(iv, sizeof(iv));
	rc = put_file(fd, CF_FS_DIRIV_NAME, iv, sizeof(iv));
	if (rc < 0) {
		close(fd);
		return rc;
	}
	return fd;
}

/*
 * Writes a regular file of len plaintext bytes; block i is left a backing
 * hole if bit i of holes is set (len 0 with hdr 0: an empty backing file).
 */
static int
mk_file(struct store *s, int dfd, const char *name, const unsigned char *p,
    size_t len, unsigned long holes, int hdr)
{
	unsigned char h[CF_FS_HEADER_BYTES], cbuf[CF_FS_BLOCK + 64];
	struct cf_fs_file_ctx *ctx = NULL;
	struct cf_fs_header fh;
	char b[NAME_MAX + 1];
	size_t ovh = cf_fs_block_overhead(s->k->cipher), off, n;
	uint64_t blk;
	int fd, rc;

	rc = bname(s, dfd, name, b);
	if (rc < 0)
		return rc;
	fd = openat(dfd, b, O_WRONLY | O_CREAT | O_EXCL, 0644);
	if (fd < 0)
		return -errno;
	if (!hdr)
		goto out;
	memset(&fh, 0, sizeof(fh));
	fh.cipher = s->k->cipher;
	fh.key_version = 1;
	/* A file whose last block is a hole can only be version 1: version
	 * 2 seals its last block always ([FS-BLK-10]). */
	if (len > 0 && (len - 1) / CF_FS_BLOCK < 64 &&
	    (holes >> ((len - 1) / CF_FS_BLOCK)) & 1)
		fh.version = 1;
	randombytes_buf(fh.file_id, sizeof(fh.file_id));
	cf_fs_header_encode(&fh, h);
	rc = cf_fs_file_ctx_new(&ctx, s->k, &fh);
	if (rc < 0)
		goto out;
	if (pwrite(fd, h, sizeof(h), 0) != (ssize_t)sizeof(h) ||
	    ftruncate(fd, cf_fs_cipher_size(s->k->cipher, (off_t)len)) != 0) {
		rc = -EIO;
		goto out;
	}
	for (blk = 0, off = 0; off < len; blk++, off += CF_FS_BLOCK) {
		n = len - off < CF_FS_BLOCK ? len - off : CF_FS_BLOCK;
		if (blk < 64 && (holes >> blk) & 1)
			continue;
		rc = cf_fs_block_seal(ctx, blk, off + n >= len, p + off, n,
		    cbuf);
		if (rc < 0)
			goto out;
		if (pwrite(fd, cbuf, n + ovh, (off_t)(CF_FS_HEADER_BYTES +
		    blk * (CF_FS_BLOCK + ovh))) != (ssize_t)(n + ovh)) {
			rc = -EIO;
			goto out;
		}
	}
out:
	cf_fs_file_ctx_free(ctx);
	close(fd);
	return rc;
}

static int
mk_symlink(struct store *s, int dfd, const char *name, const char *target)
{
	char b[NAME_MAX + 1], *enc, h[49];
	int rc, lfd;

	rc = bname(s, dfd, name, b);
	if (rc < 0)
		return rc;
	enc = malloc(8192);
	if (enc == NULL)
		return -ENOMEM;
	rc = cf_fs_link_encrypt(s->k, target, enc, 8192);
	if (rc == 0 && strlen(enc) > 4095) {
		/* The long form: links/<hash> holds the encoding. */
		hashed("cf.T.", enc, strlen(enc), h);
		(void)mkdirat(s->fd, "links", 0700);
		lfd = openat(s->fd, "links", O_RDONLY | O_DIRECTORY);
		rc = lfd < 0 ? -errno : put_file(lfd, h + 5, enc, strlen(enc));
		if (lfd >= 0)
			close(lfd);
		memcpy(enc, h, sizeof(h));
	}
	if (rc == 0 && symlinkat(enc, dfd, b) != 0)
		rc = -errno;
	free(enc);
	return rc;
}

/* Sets user.xname on name in dfd (or on dfd itself) as the daemon does. */
static int
mk_xattr(struct store *s, int dfd, const char *name, const char *xname,
    const void *val, size_t len)
{
	static const unsigned char xiv[16] = "coffer-xattr-iv";
	char b[NAME_MAX + 1], enc[300], sname[320], path[64];
	unsigned char *blob;
	int fd, rc;

	if (name != NULL) {
		rc = bname(s, dfd, name, b);
		if (rc < 0)
			return rc;
	}
	rc = cf_fs_name_encrypt(s->k, xiv, xname, enc, sizeof(enc));
	if (rc < 0)
		return rc;
	snprintf(sname, sizeof(sname), "user.cf.%s", enc);
	blob = malloc(len + 40);
	if (blob == NULL)
		return -ENOMEM;
	randombytes_buf(blob, 24);
	rc = cf_ks_aead_seal(s->k->meta, blob + 24, val, len,
	    (const unsigned char *)sname, strlen(sname), blob);
	fd = openat(dfd, name != NULL ? b : ".", O_PATH | O_NOFOLLOW);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if (rc == 0 && (fd < 0 || setxattr(path, sname, blob, len + 40, 0)))
		rc = -errno;
	if (fd >= 0)
		close(fd);
	free(blob);
	return rc;
}

static unsigned char *
pattern(size_t len, unsigned seed)
{
	unsigned char *p = malloc(len + 1);
	size_t i;

	for (i = 0; p != NULL && i < len; i++)
		p[i] = (unsigned char)((i * 131 + seed * 7 + i / 4096) & 0xff);
	return p;
}

/* Files changed less than a clock tick ago read as racy (-EAGAIN). */
static void
settle(void)
{
	struct timespec ts = { 0, 80 * 1000 * 1000 };

	nanosleep(&ts, NULL);
}

/*
 * Reads a whole file through the reader into a malloc'd buffer; -errno of
 * the first failure in *err, and *bad its range.
 */
static unsigned char *
slurp(const struct cf_fs_rdir *d, const char *name, size_t *len, int *err)
{
	struct cf_fs_rfile *f = NULL;
	struct cf_fs_rrange bad;
	struct stat st;
	unsigned char *buf;
	size_t done = 0;
	ssize_t n;

	*len = 0;
	*err = cf_fs_rfile_open(&f, d, name);
	if (*err < 0)
		return NULL;
	cf_fs_rfile_stat(f, &st);
	buf = malloc((size_t)st.st_size + 1);
	while (buf != NULL && done < (size_t)st.st_size) {
		n = cf_fs_rfile_pread(f, buf + done, (size_t)st.st_size - done,
		    (off_t)done, &bad);
		if (n <= 0) {
			*err = n == 0 ? -EIO : (int)n;
			break;
		}
		done += (size_t)n;
	}
	if (*err == 0)
		*err = cf_fs_rfile_check(f);
	cf_fs_rfile_free(f);
	*len = done;
	return buf;
}

/* ---- cases ------------------------------------------------------------------- */

static const size_t sizes[] = { 0, 1, 4095, 4096, 4097, 8192, MIB, MIB + 17 };

/* Files of every size around block edges read back exactly, both ciphers
 * ([FS-READ-4], [FS-READ-5]). */
static void
tree_roundtrip(enum cf_ks_cipher c)
{
	struct store s;
	struct cf_fs_reader *r = NULL;
	struct cf_fs_rdir *root = NULL, *sub = NULL, *deep = NULL;
	const struct cf_fs_rentry *e;
	unsigned char *p, *got;
	char name[32];
	size_t i, len, seen = 0;
	int sfd, dfd, err, rc;

	CHECK_RC(store_new(&s, c), 0);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		p = pattern(sizes[i], (unsigned)i);
		CHECK(p != NULL);
		snprintf(name, sizeof(name), "f%zu.bin", sizes[i]);
		rc = mk_file(&s, s.root, name, p, sizes[i], 0, 1);
		free(p);
		CHECK_RC(rc, 0);
	}
	CHECK_RC(mk_file(&s, s.root, "never-written", NULL, 0, 0, 0), 0);
	sfd = mk_dir(&s, s.root, "sub");
	CHECK(sfd >= 0);
	dfd = mk_dir(&s, sfd, "deep");
	CHECK(dfd >= 0);
	CHECK_RC(mk_file(&s, dfd, "leaf", (const unsigned char *)"leaf!", 5,
	    0, 1), 0);
	close(dfd);
	close(sfd);
	settle();

	CHECK_RC(cf_fs_reader_open(&r, s.k, s.path), 0);
	CHECK_RC(cf_fs_rdir_open_root(&root, r), 0);
	while ((rc = cf_fs_rdir_next(root, &e)) == 1) {
		CHECK_RC(e->err, 0);
		CHECK(e->name != NULL && strncmp(e->name, "cf.", 3) != 0);
		CHECK(strcmp(e->stored, CF_FS_DIRIV_NAME) != 0);
		seen++;
		if (strcmp(e->name, "sub") == 0) {
			CHECK(S_ISDIR(e->st.st_mode));
			continue;
		}
		CHECK(S_ISREG(e->st.st_mode));
		if (strcmp(e->name, "never-written") == 0) {
			CHECK(e->st.st_size == 0);
			continue;
		}
		CHECK(sscanf(e->name, "f%zu.bin", &len) == 1);
		CHECK(e->st.st_size == (off_t)len);
	}
	CHECK_RC(rc, 0);
	CHECK(seen == sizeof(sizes) / sizeof(sizes[0]) + 2);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		snprintf(name, sizeof(name), "f%zu.bin", sizes[i]);
		got = slurp(root, name, &len, &err);
		CHECK_RC(err, 0);
		p = pattern(sizes[i], (unsigned)i);
		CHECK(got != NULL && p != NULL && len == sizes[i]);
		CHECK(memcmp(got, p, len) == 0);
		free(got);
		free(p);
	}
	got = slurp(root, "never-written", &len, &err);
	CHECK_RC(err, 0);
	CHECK(len == 0);
	free(got);
	/* Nested directories by plaintext name. */
	CHECK_RC(cf_fs_rdir_open(&sub, root, "sub"), 0);
	CHECK_RC(cf_fs_rdir_open(&deep, sub, "deep"), 0);
	cf_fs_rdir_free(sub);	/* a child outlives its parent */
	got = slurp(deep, "leaf", &len, &err);
	CHECK_RC(err, 0);
	CHECK(len == 5 && memcmp(got, "leaf!", 5) == 0);
	free(got);
	CHECK_RC(cf_fs_rdir_next(deep, &e), 1);
	CHECK(strcmp(e->name, "leaf") == 0 && e->st.st_size == 5);
	CHECK_RC(cf_fs_rdir_next(deep, &e), 0);
	cf_fs_rdir_rewind(deep);
	CHECK_RC(cf_fs_rdir_next(deep, &e), 1);
	CHECK_RC(cf_fs_rdir_open(&sub, root, "nope"), -ENOENT);
	CHECK_RC(cf_fs_rdir_open(&sub, root, "f1.bin"), -ENOTDIR);
	cf_fs_rdir_free(deep);
	cf_fs_rdir_free(root);
	cf_fs_reader_free(r);
	store_free(&s);
}

static void
tree_xchacha(void)
{
	tree_roundtrip(CF_KS_CIPHER_XCHACHA20POLY1305);
}

static void
tree_gcm(void)
{
	if (!cf_ks_cipher_available(CF_KS_CIPHER_AES256GCM)) {
		printf("# AES-256-GCM not available on this CPU: skipped\n");
		return;
	}
	tree_roundtrip(CF_KS_CIPHER_AES256GCM);
}

/* Symlinks, hard links, xattrs, FIFOs; stat by name and of the directory
 * ([FS-READ-2], [FS-READ-4]). */
static void
links_and_xattrs(void)
{
	struct store s;
	struct cf_fs_reader *r = NULL;
	struct cf_fs_rdir *root = NULL;
	const struct cf_fs_rentry *e;
	struct stat a, b;
	char target[CF_FS_RLINK_MAX + 1], bn1[NAME_MAX + 1], bn2[NAME_MAX + 1];
	char *list = NULL;
	unsigned char *val = NULL;
	size_t len, dmg;
	int n_a = 0;

	CHECK_RC(store_new(&s, CF_KS_CIPHER_XCHACHA20POLY1305), 0);
	CHECK_RC(mk_file(&s, s.root, "a", (const unsigned char *)"hello", 5,
	    0, 1), 0);
	CHECK_RC(bname(&s, s.root, "a", bn1), 0);
	CHECK_RC(bname(&s, s.root, "a-link", bn2), 0);
	CHECK(linkat(s.root, bn1, s.root, bn2, 0) == 0);
	CHECK_RC(mk_symlink(&s, s.root, "ln", "../shared/report 2024.pdf"), 0);
	CHECK_RC(mk_xattr(&s, s.root, "a", "comment", "hi there", 8), 0);
	CHECK_RC(mk_xattr(&s, s.root, "a", "empty", "", 0), 0);
	CHECK_RC(mk_xattr(&s, s.root, NULL, "dirattr", "D", 1), 0);
	/* Special files are stored as themselves. */
	{
		char bf[NAME_MAX + 1];

		CHECK_RC(bname(&s, s.root, "fifo", bf), 0);
		CHECK(mkfifoat(s.root, bf, 0600) == 0);
	}
	settle();

	CHECK_RC(cf_fs_reader_open(&r, s.k, s.path), 0);
	CHECK_RC(cf_fs_rdir_open_root(&root, r), 0);
	CHECK_RC(cf_fs_rdir_stat(root, "a", &a), 0);
	CHECK_RC(cf_fs_rdir_stat(root, "a-link", &b), 0);
	CHECK(a.st_ino == b.st_ino && a.st_dev == b.st_dev && a.st_nlink == 2);
	CHECK(a.st_size == 5);
	CHECK_RC(cf_fs_rdir_stat(root, NULL, &a), 0);
	CHECK(S_ISDIR(a.st_mode));
	while (cf_fs_rdir_next(root, &e) == 1) {
		CHECK_RC(e->err, 0);
		if (strcmp(e->name, "ln") == 0) {
			CHECK(S_ISLNK(e->st.st_mode));
			CHECK(e->st.st_size == 25);
		} else if (strcmp(e->name, "fifo") == 0) {
			CHECK(S_ISFIFO(e->st.st_mode));
		} else {
			CHECK(S_ISREG(e->st.st_mode) && e->st.st_nlink == 2);
			n_a++;
		}
	}
	CHECK(n_a == 2);
	CHECK_RC(cf_fs_rdir_readlink(root, "ln", target, sizeof(target)), 0);
	CHECK(strcmp(target, "../shared/report 2024.pdf") == 0);
	CHECK_RC(cf_fs_rdir_readlink(root, "ln", target, 10), -ERANGE);
	CHECK_RC(cf_fs_rdir_readlink(root, "a", target, sizeof(target)),
	    -EINVAL);
	/* A file open refuses the symlink rather than following it. */
	{
		struct cf_fs_rfile *f = NULL;

		CHECK_RC(cf_fs_rfile_open(&f, root, "ln"), -ELOOP);
		/* Never opened, so never blocks or wakes a writer. */
		CHECK_RC(cf_fs_rfile_open(&f, root, "fifo"), -EINVAL);
		CHECK_RC(cf_fs_rfile_open(&f, root, "."), -EINVAL);
		CHECK(f == NULL);
	}
	CHECK_RC(cf_fs_rdir_xattr_list(root, "a", &list, &len, &dmg), 0);
	CHECK(dmg == 0 && list != NULL);
	CHECK(len == sizeof("user.comment") + sizeof("user.empty"));
	CHECK((strcmp(list, "user.comment") == 0 &&
	    strcmp(list + sizeof("user.comment"), "user.empty") == 0) ||
	    (strcmp(list, "user.empty") == 0 &&
	    strcmp(list + sizeof("user.empty"), "user.comment") == 0));
	free(list);
	CHECK_RC(cf_fs_rdir_xattr_get(root, "a", "user.comment", &val, &len),
	    0);
	CHECK(len == 8 && memcmp(val, "hi there", 8) == 0);
	free(val);
	CHECK_RC(cf_fs_rdir_xattr_get(root, "a", "user.empty", &val, &len), 0);
	CHECK(len == 0 && val != NULL);
	free(val);
	CHECK_RC(cf_fs_rdir_xattr_get(root, "a", "user.nope", &val, &len),
	    -ENODATA);
	CHECK_RC(cf_fs_rdir_xattr_get(root, "a", "trusted.x", &val, &len),
	    -ENODATA);
	CHECK_RC(cf_fs_rdir_xattr_get(root, NULL, "user.dirattr", &val, &len),
	    0);
	CHECK(len == 1 && val[0] == 'D');
	free(val);
	CHECK_RC(cf_fs_rdir_xattr_list(root, "ln", &list, &len, &dmg), 0);
	CHECK(list == NULL && len == 0);
	/* A foreign xattr is skipped; a planted user.cf.* one is counted. */
	{
		char path[64];
		int fd = openat(s.root, bn1, O_RDONLY);

		CHECK(fd >= 0);
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		CHECK(setxattr(path, "user.other", "x", 1, 0) == 0);
		CHECK(setxattr(path, "user.cf.AAAAAAAAAAAAAAAAAAAAAAAAAAAA", "x",
		    1, 0) == 0);
		close(fd);
	}
	CHECK_RC(cf_fs_rdir_xattr_list(root, "a", &list, &len, &dmg), 0);
	CHECK(dmg == 1 && len == sizeof("user.comment") + sizeof("user.empty"));
	free(list);
	cf_fs_rdir_free(root);
	cf_fs_reader_free(r);
	store_free(&s);
}

/* A value that does not authenticate is -EBADMSG, also one moved to
 * another attribute name (its AAD). */
static void
xattr_tampered(void)
{
	struct store s;
	struct cf_fs_reader *r = NULL;
	struct cf_fs_rdir *root = NULL;
	unsigned char blob[128], *val = NULL;
	char bn[NAME_MAX + 1], path[64], names[1024], *p, *first = NULL;
	size_t len;
	ssize_t n;
	int fd;

	CHECK_RC(store_new(&s, CF_KS_CIPHER_XCHACHA20POLY1305), 0);
	CHECK_RC(mk_file(&s, s.root, "a", (const unsigned char *)"x", 1, 0, 1),
	    0);
	CHECK_RC(mk_xattr(&s, s.root, "a", "one", "111", 3), 0);
	CHECK_RC(mk_xattr(&s, s.root, "a", "two", "222", 3), 0);
	CHECK_RC(bname(&s, s.root, "a", bn), 0);
	fd = openat(s.root, bn, O_RDONLY);
	CHECK(fd >= 0);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = listxattr(path, names, sizeof(names));
	CHECK(n > 0);
	/* Copy the first value over the second: wrong AAD. */
	for (p = names; p < names + n; p += strlen(p) + 1) {
		if (first == NULL) {
			first = p;
			continue;
		}
		n = getxattr(path, first, blob, sizeof(blob));
		CHECK(n > 0);
		CHECK(setxattr(path, p, blob, (size_t)n, 0) == 0);
		break;
	}
	close(fd);
	CHECK_RC(cf_fs_reader_open(&r, s.k, s.path), 0);
	CHECK_RC(cf_fs_rdir_open_root(&root, r), 0);
	{
		int r1, r2;

		r1 = cf_fs_rdir_xattr_get(root, "a", "user.one", &val, &len);
		free(val);
		r2 = cf_fs_rdir_xattr_get(root, "a", "user.two", &val, &len);
		free(val);
		/* listxattr's order decides which one was overwritten. */
		CHECK((r1 == 0 && r2 == -EBADMSG) || (r1 == -EBADMSG &&
		    r2 == 0));
	}
	cf_fs_rdir_free(root);
	cf_fs_reader_free(r);
	store_free(&s);
}

/* Holes: backing holes and all-zero sealed blocks; next_data finds data
 * ([FS-READ-6], [FS-READ-7]). */
static void
sparse(void)
{
	struct store s;
	struct cf_fs_reader *r = NULL;
	struct cf_fs_rdir *root = NULL;
	struct cf_fs_rfile *f = NULL;
	unsigned char *p, *buf, zero[CF_FS_BLOCK] = { 0 };
	size_t len = 64 * CF_FS_BLOCK + 100, ovh;
	off_t doff, dend;
	char bn[NAME_MAX + 1];
	ssize_t n;
	int fd;

	CHECK_RC(store_new(&s, CF_KS_CIPHER_XCHACHA20POLY1305), 0);
	ovh = cf_fs_block_overhead(s.k->cipher);
	p = pattern(len, 3);
	CHECK(p != NULL);
	/* Blocks 2..40 are holes; 41 is written below as explicit zeros. */
	memset(p + 2 * CF_FS_BLOCK, 0, 40 * CF_FS_BLOCK);
	CHECK_RC(mk_file(&s, s.root, "sparse", p, len, 0x1fffffffffcUL, 1), 0);
	CHECK_RC(bname(&s, s.root, "sparse", bn), 0);
	fd = openat(s.root, bn, O_WRONLY);
	CHECK(fd >= 0);
	{
		unsigned char zc[CF_FS_BLOCK + 64] = { 0 };

		CHECK(pwrite(fd, zc, CF_FS_BLOCK + ovh, (off_t)(32 + 41 *
		    (CF_FS_BLOCK + ovh))) == (ssize_t)(CF_FS_BLOCK + ovh));
		memset(p + 41 * CF_FS_BLOCK, 0, CF_FS_BLOCK);
	}
	close(fd);
	settle();
	CHECK_RC(cf_fs_reader_open(&r, s.k, s.path), 0);
	CHECK_RC(cf_fs_rdir_open_root(&root, r), 0);
	CHECK_RC(cf_fs_rfile_open(&f, root, "sparse"), 0);
	CHECK_RC(cf_fs_rfile_next_data(f, 0, &doff, &dend), 0);
	CHECK(doff == 0);
	/* Block 2 shares a file system block with block 1: read, zero. */
	CHECK(dend == 2 * CF_FS_BLOCK);
	CHECK_RC(cf_fs_rfile_next_data(f, dend, &doff, &dend), 0);
	/* Block 41 is allocated zeros: a hole, since it is read and zero. */
	CHECK(doff >= 41 * CF_FS_BLOCK && doff <= 42 * CF_FS_BLOCK);
	CHECK(dend == (off_t)len);
	CHECK_RC(cf_fs_rfile_next_data(f, 100, &doff, &dend), 0);
	CHECK(doff == 100);
	CHECK_RC(cf_fs_rfile_next_data(f, (off_t)len, &doff, &dend), -ENXIO);
	/* Holes read as zeros; the whole file reads back. */
	buf = malloc(len);
	CHECK(buf != NULL);
	n = cf_fs_rfile_pread(f, buf, CF_FS_BLOCK, 10 * CF_FS_BLOCK, NULL);
	CHECK(n == CF_FS_BLOCK && memcmp(buf, zero, CF_FS_BLOCK) == 0);
	n = cf_fs_rfile_pread(f, buf, len, 0, NULL);
	CHECK(n == (ssize_t)len);
	CHECK(memcmp(buf, p, len) == 0);
	CHECK_RC(cf_fs_rfile_check(f), 0);
	cf_fs_rfile_free(f);
	/* Its generation says it has no holes (zeros written over blocks
	 * of a file that had none): no hole is skipped, and an all-zero
	 * block does not read. */
	{
		unsigned char hb[CF_FS_HEADER_BYTES], val[CF_FS_GEN_BYTES];
		struct cf_fs_header fh;

		fd = openat(s.root, bn, O_RDWR);
		CHECK(fd >= 0 && pread(fd, hb, sizeof(hb), 0) ==
		    (ssize_t)sizeof(hb));
		CHECK_RC(cf_fs_header_decode(&fh, hb, sizeof(hb)), 0);
		CHECK_RC(cf_fs_gen_encode(s.k, fh.file_id, 3, CF_FS_GEN_DENSE,
		    val), 0);
		CHECK(fsetxattr(fd, CF_FS_GEN_XATTR, val, sizeof(val), 0) ==
		    0);
		CHECK_RC(cf_fs_rfile_open(&f, root, "sparse"), 0);
		CHECK_RC(cf_fs_rfile_next_data(f, 100, &doff, &dend), 0);
		CHECK(doff == 100 && dend == (off_t)len);
		n = cf_fs_rfile_pread(f, buf, CF_FS_BLOCK, 10 * CF_FS_BLOCK,
		    NULL);
		CHECK(n < 0);
		n = cf_fs_rfile_pread(f, buf, CF_FS_BLOCK, 0, NULL);
		CHECK(n == CF_FS_BLOCK && memcmp(buf, p, CF_FS_BLOCK) == 0);
		cf_fs_rfile_free(f);
		/* The same without the flag: holes again. */
		CHECK_RC(cf_fs_gen_encode(s.k, fh.file_id, 4, 0, val), 0);
		CHECK(fsetxattr(fd, CF_FS_GEN_XATTR, val, sizeof(val), 0) ==
		    0);
		close(fd);
		CHECK_RC(cf_fs_rfile_open(&f, root, "sparse"), 0);
		n = cf_fs_rfile_pread(f, buf, CF_FS_BLOCK, 10 * CF_FS_BLOCK,
		    NULL);
		CHECK(n == CF_FS_BLOCK && memcmp(buf, zero, CF_FS_BLOCK) == 0);
		cf_fs_rfile_free(f);
	}
	free(buf);
	free(p);
	/* A file of holes only has no data. */
	CHECK_RC(mk_file(&s, s.root, "allholes", NULL, 3 * CF_FS_BLOCK, 7, 1),
	    0);
	settle();
	CHECK_RC(cf_fs_rfile_open(&f, root, "allholes"), 0);
	CHECK_RC(cf_fs_rfile_next_data(f, 0, &doff, &dend), -ENXIO);
	cf_fs_rfile_free(f);
	cf_fs_rdir_free(root);
	cf_fs_reader_free(r);
	store_free(&s);
}

/*
 * A large read is opened on two threads, the second half by the reader's
 * helper: the bytes come back in order, and the first damaged block
 * decides the short read whichever half holds it.
 */
static void
tampered_large(void)
{
	struct store s;
	struct cf_fs_reader *r = NULL;
	struct cf_fs_rdir *root = NULL;
	struct cf_fs_rfile *f = NULL;
	struct cf_fs_rrange bad;
	const size_t len = 256 * CF_FS_BLOCK + 100;	/* 257 blocks */
	unsigned char *p, *buf, c;
	char bn[NAME_MAX + 1];
	uint64_t par0;
	size_t ovh, i;
	ssize_t n;
	int fd, round;

	CHECK_RC(store_new(&s, CF_KS_CIPHER_AES256GCM), 0);
	ovh = cf_fs_block_overhead(s.k->cipher);
	p = pattern(len, 9);
	buf = malloc(CF_FS_RREAD_MAX);
	CHECK(p != NULL && buf != NULL);
	CHECK_RC(mk_file(&s, s.root, "big", p, len, 0, 1), 0);
	settle();
	CHECK_RC(cf_fs_reader_open(&r, s.k, s.path), 0);
	CHECK_RC(cf_fs_rdir_open_root(&root, r), 0);
	CHECK_RC(cf_fs_rfile_open(&f, root, "big"), 0);
	/* Many rounds: the helper and the caller meet in every order. */
	par0 = cf_fs_rfile_parallel_reads();
	for (round = 0; round < 20; round++) {
		memset(buf, 0, CF_FS_RREAD_MAX);
		n = cf_fs_rfile_pread(f, buf, CF_FS_RREAD_MAX, 10, &bad);
		CHECK(n == (ssize_t)CF_FS_RREAD_MAX);
		CHECK(memcmp(buf, p + 10, CF_FS_RREAD_MAX) == 0);
	}
	/* Nobody else reads here: the helper took every one of them. */
	CHECK(cf_fs_rfile_parallel_reads() - par0 == 20);
	n = cf_fs_rfile_pread(f, buf, CF_FS_RREAD_MAX, 21 * CF_FS_BLOCK + 7,
	    &bad);
	CHECK(n == (ssize_t)(len - 21 * CF_FS_BLOCK - 7));
	CHECK(memcmp(buf, p + 21 * CF_FS_BLOCK + 7, (size_t)n) == 0);
	cf_fs_rfile_free(f);
	f = NULL;
	CHECK_RC(bname(&s, s.root, "big", bn), 0);
	/* Damage in block 200 (the helper's half), then also in 20. */
	for (i = 0; i < 2; i++) {
		off_t at = (off_t)(32 + (i == 0 ? 200 : 20) *
		    (CF_FS_BLOCK + ovh) + 50);

		fd = openat(s.root, bn, O_RDWR);
		CHECK(fd >= 0);
		CHECK(pread(fd, &c, 1, at) == 1);
		c ^= 0x40;
		CHECK(pwrite(fd, &c, 1, at) == 1);
		close(fd);
		settle();
		CHECK_RC(cf_fs_rfile_open(&f, root, "big"), 0);
		n = cf_fs_rfile_pread(f, buf, CF_FS_RREAD_MAX, 10, &bad);
		CHECK(n == (ssize_t)((i == 0 ? 200 : 20) * CF_FS_BLOCK - 10));
		CHECK(n > 0 && memcmp(buf, p + 10, (size_t)n) == 0);
		n = cf_fs_rfile_pread(f, buf, CF_FS_RREAD_MAX,
		    (i == 0 ? 200 : 20) * CF_FS_BLOCK, &bad);
		CHECK(n == -EBADMSG);
		CHECK(bad.off == (off_t)(i == 0 ? 200 : 20) * CF_FS_BLOCK &&
		    bad.len == CF_FS_BLOCK);
		cf_fs_rfile_free(f);
		f = NULL;
	}
	/* Between the two: 21..199 read whole, then a short read. */
	CHECK_RC(cf_fs_rfile_open(&f, root, "big"), 0);
	n = cf_fs_rfile_pread(f, buf, CF_FS_RREAD_MAX, 21 * CF_FS_BLOCK, &bad);
	CHECK(n == (ssize_t)(179 * CF_FS_BLOCK));
	CHECK(n > 0 && memcmp(buf, p + 21 * CF_FS_BLOCK, (size_t)n) == 0);
	cf_fs_rfile_free(f);
	free(buf);
	free(p);
	cf_fs_rdir_free(root);
	cf_fs_reader_free(r);
	store_free(&s);
}

/* A tampered block fails for its own range only; damaged files
 * ([FS-READ-5], [FS-READ-6]). */
static void
tampered(void)
{
	struct store s;
	struct cf_fs_reader *r = NULL;
	struct cf_fs_rdir *root = NULL;
	struct cf_fs_rfile *f = NULL;
	struct cf_fs_rrange bad;
	unsigned char *p, buf[3 * CF_FS_BLOCK], c;
	char bn[NAME_MAX + 1];
	size_t ovh;
	ssize_t n;
	int fd;

	CHECK_RC(store_new(&s, CF_KS_CIPHER_XCHACHA20POLY1305), 0);
	ovh = cf_fs_block_overhead(s.k->cipher);
	p = pattern(3 * CF_FS_BLOCK - 10, 5);
	CHECK(p != NULL);
	CHECK_RC(mk_file(&s, s.root, "t", p, 3 * CF_FS_BLOCK - 10, 0, 1), 0);
	CHECK_RC(bname(&s, s.root, "t", bn), 0);
	fd = openat(s.root, bn, O_RDWR);
	CHECK(fd >= 0);
	CHECK(pread(fd, &c, 1, (off_t)(32 + (CF_FS_BLOCK + ovh) + 100)) == 1);
	c ^= 1;
	CHECK(pwrite(fd, &c, 1, (off_t)(32 + (CF_FS_BLOCK + ovh) + 100)) == 1);
	close(fd);
	/* Stub headers, a cut inside a tag, a bad header, the other cipher. */
	CHECK_RC(mk_file(&s, s.root, "stub", NULL, 0, 0, 0), 0);
	CHECK_RC(bname(&s, s.root, "stub", bn), 0);
	fd = openat(s.root, bn, O_WRONLY);
	CHECK(fd >= 0 && write(fd, "\x89" "CF", 3) == 3);
	close(fd);
	CHECK_RC(mk_file(&s, s.root, "cut", p, 100, 0, 1), 0);
	CHECK_RC(bname(&s, s.root, "cut", bn), 0);
	fd = openat(s.root, bn, O_WRONLY);
	CHECK(fd >= 0 && ftruncate(fd, 32 + 10) == 0);
	close(fd);
	CHECK_RC(mk_file(&s, s.root, "badhdr", p, 100, 0, 1), 0);
	CHECK_RC(bname(&s, s.root, "badhdr", bn), 0);
	fd = openat(s.root, bn, O_WRONLY);
	CHECK(fd >= 0 && pwrite(fd, "\x03", 1, 8) == 1);
	close(fd);
	settle();

	CHECK_RC(cf_fs_reader_open(&r, s.k, s.path), 0);
	CHECK_RC(cf_fs_rdir_open_root(&root, r), 0);
	CHECK_RC(cf_fs_rfile_open(&f, root, "t"), 0);
	/* Bytes before the damaged block come back as a short read. */
	n = cf_fs_rfile_pread(f, buf, sizeof(buf), 0, &bad);
	CHECK(n == CF_FS_BLOCK);
	CHECK(memcmp(buf, p, CF_FS_BLOCK) == 0);
	n = cf_fs_rfile_pread(f, buf, sizeof(buf), CF_FS_BLOCK, &bad);
	CHECK(n == -EBADMSG);
	CHECK(bad.off == CF_FS_BLOCK && bad.len == CF_FS_BLOCK);
	n = cf_fs_rfile_pread(f, buf, 10, CF_FS_BLOCK + 5, &bad);
	CHECK(n == -EBADMSG && bad.off == CF_FS_BLOCK);
	/* The rest of the file is fine. */
	n = cf_fs_rfile_pread(f, buf, sizeof(buf), bad.off + bad.len, &bad);
	CHECK(n == CF_FS_BLOCK - 10);
	CHECK(memcmp(buf, p + 2 * CF_FS_BLOCK, CF_FS_BLOCK - 10) == 0);
	CHECK_RC(cf_fs_rfile_check(f), 0);
	cf_fs_rfile_free(f);
	f = NULL;
	CHECK_RC(cf_fs_rfile_open(&f, root, "stub"), -EIO);
	CHECK_RC(cf_fs_rfile_open(&f, root, "cut"), -EIO);
	CHECK_RC(cf_fs_rfile_open(&f, root, "badhdr"), -EPROTO);
	CHECK(f == NULL);
	free(p);
	cf_fs_rdir_free(root);
	cf_fs_reader_free(r);
	store_free(&s);
}

/* The marker decides: another tenant's keys, no marker, no store
 * ([FS-READ-1]). */
static void
wrong_tenant(void)
{
	struct store s;
	struct cf_fs_keys *other = keys_seq(0x20,
	    CF_KS_CIPHER_XCHACHA20POLY1305);
	struct cf_fs_reader *r = NULL;
	char path[1100];
	struct stat st;

	CHECK(other != NULL);
	CHECK_RC(store_new(&s, CF_KS_CIPHER_XCHACHA20POLY1305), 0);
	CHECK_RC(cf_fs_reader_open(&r, other, s.path), -EBADMSG);
	CHECK(r == NULL);
	/* Read-only: the store's mode is not reset as store_init does. */
	CHECK(chmod(s.path, 0750) == 0);
	CHECK_RC(cf_fs_reader_open(&r, s.k, s.path), 0);
	cf_fs_reader_free(r);
	r = NULL;
	CHECK(stat(s.path, &st) == 0 && (st.st_mode & 07777) == 0750);
	/* Trailing bytes on the marker. */
	snprintf(path, sizeof(path), "%s/cf.store", s.path);
	CHECK(chmod(path, 0600) == 0);
	{
		int fd = open(path, O_WRONLY | O_APPEND);

		CHECK(fd >= 0 && write(fd, "x", 1) == 1);
		close(fd);
	}
	CHECK_RC(cf_fs_reader_open(&r, s.k, s.path), -EBADMSG);
	/* A FIFO in its place is refused without being opened. */
	CHECK(unlink(path) == 0);
	CHECK(mkfifo(path, 0600) == 0);
	CHECK_RC(cf_fs_reader_open(&r, s.k, s.path), -EBADMSG);
	/* Data without a marker is refused, and nothing is written. */
	CHECK(unlink(path) == 0);
	CHECK_RC(cf_fs_reader_open(&r, s.k, s.path), -EBADMSG);
	CHECK(access(path, F_OK) != 0);
	snprintf(path, sizeof(path), "%s/nostore", cf_test_tmpdir());
	CHECK(mkdir(path, 0700) == 0);
	CHECK_RC(cf_fs_reader_open(&r, s.k, path), -ENOENT);
	CHECK(access(path, F_OK) == 0);
	snprintf(path, sizeof(path), "%s/absent", cf_test_tmpdir());
	CHECK_RC(cf_fs_reader_open(&r, s.k, path), -ENOENT);
	CHECK(access(path, F_OK) != 0);
	cf_fs_keys_free(other);
	store_free(&s);
}

/* Names that do not decrypt are reported one by one; the walk goes on
 * ([FS-READ-3]). */
static void
bad_names(void)
{
	struct store s;
	struct cf_fs_reader *r = NULL;
	struct cf_fs_rdir *root = NULL, *d = NULL;
	const struct cf_fs_rentry *e;
	char bn[NAME_MAX + 1];
	int sfd, good = 0, badmsg = 0, proto = 0, rc;

	CHECK_RC(store_new(&s, CF_KS_CIPHER_XCHACHA20POLY1305), 0);
	CHECK_RC(mk_file(&s, s.root, "good1", (const unsigned char *)"1", 1, 0,
	    1), 0);
	CHECK_RC(mk_file(&s, s.root, "good2", (const unsigned char *)"2", 1, 0,
	    1), 0);
	/* Another directory's name for "x" (another IV): -EBADMSG. */
	sfd = mk_dir(&s, s.root, "other");
	CHECK(sfd >= 0);
	CHECK_RC(bname(&s, sfd, "x", bn), 0);
	CHECK_RC(put_file(s.root, bn, "", 0), 0);
	close(sfd);
	/* Not an encoded name at all: -EPROTO.  Reserved names: skipped. */
	CHECK_RC(put_file(s.root, "planted.txt", "", 0), 0);
	CHECK_RC(put_file(s.root, "cf.something", "", 0), 0);
	CHECK_RC(put_file(s.root, "cf.L.short.n", "", 0), 0);
	settle();

	CHECK_RC(cf_fs_reader_open(&r, s.k, s.path), 0);
	CHECK_RC(cf_fs_rdir_open_root(&root, r), 0);
	while ((rc = cf_fs_rdir_next(root, &e)) == 1) {
		CHECK(e->stored != NULL);
		CHECK(strncmp(e->stored, "cf.", 3) != 0);
		if (e->err == 0) {
			CHECK(e->name != NULL);
			good++;
		} else {
			CHECK(e->name == NULL && e->st.st_mode == 0);
			if (e->err == -EBADMSG)
				badmsg++;
			else if (e->err == -EPROTO &&
			    strcmp(e->stored, "planted.txt") == 0)
				proto++;
		}
	}
	CHECK_RC(rc, 0);
	CHECK(good == 3 && badmsg == 1 && proto == 1);
	/* A directory whose IV is gone cannot be opened. */
	CHECK_RC(bname(&s, s.root, "other", bn), 0);
	sfd = openat(s.root, bn, O_RDONLY | O_DIRECTORY);
	CHECK(sfd >= 0 && unlinkat(sfd, CF_FS_DIRIV_NAME, 0) == 0);
	close(sfd);
	CHECK_RC(cf_fs_rdir_open(&d, root, "other"), -EIO);
	cf_fs_rdir_free(root);
	cf_fs_reader_free(r);
	store_free(&s);
}

/* Names from the caller are single components: no way out of the tree
 * ([FS-READ-2]). */
static void
traversal(void)
{
	static const char *const refused[] = { "", ".", "..", "a/b", "/etc",
	    "../data", "x/" };
	struct store s;
	struct cf_fs_reader *r = NULL;
	struct cf_fs_rdir *root = NULL, *d = NULL;
	struct cf_fs_rfile *f = NULL;
	struct stat st;
	char buf[64], *list;
	unsigned char *val;
	size_t i, len;
	char longname[300];
	int sfd;

	CHECK_RC(store_new(&s, CF_KS_CIPHER_XCHACHA20POLY1305), 0);
	sfd = mk_dir(&s, s.root, "dir");
	CHECK(sfd >= 0);
	close(sfd);
	CHECK_RC(mk_symlink(&s, s.root, "dirlink", "dir"), 0);
	{
		/* A backing symlink named as "dirlink-raw" that points at a
		 * real directory: opening it as a directory must not follow. */
		char bn[NAME_MAX + 1], target[NAME_MAX + 1];

		CHECK_RC(bname(&s, s.root, "raw", bn), 0);
		CHECK_RC(bname(&s, s.root, "dir", target), 0);
		CHECK(symlinkat(target, s.root, bn) == 0);
	}
	CHECK_RC(cf_fs_reader_open(&r, s.k, s.path), 0);
	CHECK_RC(cf_fs_rdir_open_root(&root, r), 0);
	for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		CHECK_RC(cf_fs_rdir_open(&d, root, refused[i]), -EINVAL);
		CHECK_RC(cf_fs_rfile_open(&f, root, refused[i]), -EINVAL);
		CHECK_RC(cf_fs_rdir_stat(root, refused[i], &st), -EINVAL);
		CHECK_RC(cf_fs_rdir_readlink(root, refused[i], buf,
		    sizeof(buf)), -EINVAL);
		CHECK_RC(cf_fs_rdir_xattr_list(root, refused[i], &list, &len,
		    NULL), -EINVAL);
		CHECK_RC(cf_fs_rdir_xattr_get(root, refused[i], "user.a", &val,
		    &len), -EINVAL);
	}
	memset(longname, 'n', 256);
	longname[256] = '\0';
	CHECK_RC(cf_fs_rdir_open(&d, root, longname), -ENAMETOOLONG);
	CHECK_RC(cf_fs_rdir_open(&d, root, "raw"), -ENOTDIR);
	CHECK_RC(cf_fs_rdir_open(&d, root, "dirlink"), -ENOTDIR);
	CHECK(d == NULL);
	CHECK_RC(cf_fs_rdir_open(&d, root, "dir"), 0);
	cf_fs_rdir_free(d);
	cf_fs_rdir_free(root);
	cf_fs_reader_free(r);
	store_free(&s);
}

/* Long symlink targets live in links/, named by their hash ([FS-READ-8]). */
static void
long_targets(void)
{
	struct store s;
	struct cf_fs_reader *r = NULL;
	struct cf_fs_rdir *root = NULL;
	const struct cf_fs_rentry *e;
	char target[CF_FS_RLINK_MAX + 1], got[CF_FS_RLINK_MAX + 1], bn[NAME_MAX + 1];
	char lnk[64];
	ssize_t n;
	int lfd, fd;

	memset(target, 'T', CF_FS_RLINK_MAX);
	target[CF_FS_RLINK_MAX] = '\0';
	target[0] = '/';
	CHECK_RC(store_new(&s, CF_KS_CIPHER_XCHACHA20POLY1305), 0);
	CHECK_RC(mk_symlink(&s, s.root, "long", target), 0);
	target[3500] = '\0';
	CHECK_RC(mk_symlink(&s, s.root, "mid", target), 0);
	target[3500] = 'T';
	CHECK_RC(cf_fs_reader_open(&r, s.k, s.path), 0);
	CHECK_RC(cf_fs_rdir_open_root(&root, r), 0);
	CHECK_RC(cf_fs_rdir_readlink(root, "long", got, sizeof(got)), 0);
	CHECK(strcmp(got, target) == 0);
	CHECK_RC(cf_fs_rdir_readlink(root, "mid", got, sizeof(got)), 0);
	CHECK(strlen(got) == 3500 && strncmp(got, target, 3500) == 0);
	while (cf_fs_rdir_next(root, &e) == 1) {
		CHECK_RC(e->err, 0);
		CHECK(S_ISLNK(e->st.st_mode));
		CHECK(e->st.st_size == (strcmp(e->name, "long") == 0 ?
		    CF_FS_RLINK_MAX : 3500));
	}
	/* Tampered, then missing: damaged, never followed elsewhere. */
	CHECK_RC(bname(&s, s.root, "long", bn), 0);
	n = readlinkat(s.root, bn, lnk, sizeof(lnk) - 1);
	CHECK(n == 48 && strncmp(lnk, "cf.T.", 5) == 0);
	lnk[n] = '\0';
	lfd = openat(s.fd, "links", O_RDONLY | O_DIRECTORY);
	CHECK(lfd >= 0);
	fd = openat(lfd, lnk + 5, O_RDWR);
	{
		char c = 0;

		CHECK(fd >= 0 && pread(fd, &c, 1, 10) == 1);
		c = c == 'Q' ? 'R' : 'Q';	/* always a change */
		CHECK(pwrite(fd, &c, 1, 10) == 1);
	}
	close(fd);
	CHECK_RC(cf_fs_rdir_readlink(root, "long", got, sizeof(got)),
	    -EBADMSG);
	CHECK(unlinkat(lfd, lnk + 5, 0) == 0);
	CHECK(symlinkat("/etc/passwd", lfd, lnk + 5) == 0);
	CHECK_RC(cf_fs_rdir_readlink(root, "long", got, sizeof(got)),
	    -EPROTO);
	CHECK(unlinkat(lfd, lnk + 5, 0) == 0);
	CHECK_RC(cf_fs_rdir_readlink(root, "long", got, sizeof(got)), -EIO);
	close(lfd);
	cf_fs_rdir_free(root);
	cf_fs_reader_free(r);
	store_free(&s);
}

/* Long names: cf.L.<hash> entries with their .n sidecars ([FS-READ-3],
 * [FS-READ-8]). */
static void
long_names(void)
{
	struct store s;
	struct cf_fs_reader *r = NULL;
	struct cf_fs_rdir *root = NULL, *d = NULL;
	const struct cf_fs_rentry *e;
	char n1[256], n2[256], n3[256], bn[NAME_MAX + 1], side[NAME_MAX + 4];
	unsigned char *got;
	size_t len;
	int sfd, err, found = 0, damaged = 0, rc;

	memset(n1, 'a', 255);
	n1[255] = '\0';
	memset(n2, 'b', 176);
	n2[176] = '\0';
	memset(n3, 'c', 200);
	n3[200] = '\0';
	CHECK_RC(store_new(&s, CF_KS_CIPHER_XCHACHA20POLY1305), 0);
	CHECK_RC(mk_file(&s, s.root, n1, (const unsigned char *)"long1", 5, 0,
	    1), 0);
	sfd = mk_dir(&s, s.root, n2);
	CHECK(sfd >= 0);
	CHECK_RC(mk_file(&s, sfd, n1, (const unsigned char *)"nested", 6, 0,
	    1), 0);
	close(sfd);
	CHECK_RC(mk_file(&s, s.root, n3, (const unsigned char *)"c", 1, 0, 1),
	    0);
	settle();
	CHECK_RC(cf_fs_reader_open(&r, s.k, s.path), 0);
	CHECK_RC(cf_fs_rdir_open_root(&root, r), 0);
	while ((rc = cf_fs_rdir_next(root, &e)) == 1) {
		CHECK_RC(e->err, 0);
		CHECK(strncmp(e->stored, "cf.L.", 5) == 0 &&
		    strlen(e->stored) == 48);
		if (strcmp(e->name, n1) == 0 || strcmp(e->name, n2) == 0 ||
		    strcmp(e->name, n3) == 0)
			found++;
	}
	CHECK_RC(rc, 0);
	CHECK(found == 3);	/* and no sidecar listed */
	got = slurp(root, n1, &len, &err);
	CHECK_RC(err, 0);
	CHECK(len == 5 && memcmp(got, "long1", 5) == 0);
	free(got);
	CHECK_RC(cf_fs_rdir_open(&d, root, n2), 0);
	got = slurp(d, n1, &len, &err);
	CHECK_RC(err, 0);
	CHECK(len == 6 && memcmp(got, "nested", 6) == 0);
	free(got);
	cf_fs_rdir_free(d);
	/* Damage each sidecar differently: altered (hash), gone, a symlink,
	 * and one holding a short name's encoding (a second spelling). */
	CHECK_RC(bname(&s, s.root, n1, bn), 0);
	snprintf(side, sizeof(side), "%s.n", bn);
	{
		char enc[400];
		unsigned char iv[16];
		int fd = openat(s.root, side, O_RDWR);
		char c = 0;

		/* Another character than the one there (a fixed 'A' left the
		 * sidecar unchanged once in 64 runs). */
		CHECK(fd >= 0 && pread(fd, &c, 1, 30) == 1);
		c = c == 'A' ? 'B' : 'A';
		CHECK(pwrite(fd, &c, 1, 30) == 1);
		close(fd);
		CHECK_RC(bname(&s, s.root, n3, bn), 0);
		snprintf(side, sizeof(side), "%s.n", bn);
		CHECK(unlinkat(s.root, side, 0) == 0);
		CHECK(symlinkat("/etc/passwd", s.root, side) == 0);
		/* A short name hidden behind a cf.L. entry. */
		CHECK_RC(diriv_of(s.root, iv), 0);
		CHECK_RC(cf_fs_name_encrypt(s.k, iv, "short", enc,
		    sizeof(enc)), 0);
		hashed("cf.L.", enc, strlen(enc), bn);
		CHECK_RC(put_file(s.root, bn, "", 0), 0);
		snprintf(side, sizeof(side), "%s.n", bn);
		CHECK_RC(put_file(s.root, side, enc, strlen(enc)), 0);
	}
	CHECK_RC(bname(&s, s.root, n2, bn), 0);
	snprintf(side, sizeof(side), "%s.n", bn);
	CHECK(unlinkat(s.root, side, 0) == 0);
	cf_fs_rdir_rewind(root);
	found = 0;
	while ((rc = cf_fs_rdir_next(root, &e)) == 1) {
		if (e->err == 0)
			found++;
		else if (e->err == -EBADMSG || e->err == -EIO ||
		    e->err == -EPROTO)
			damaged++;
	}
	CHECK_RC(rc, 0);
	CHECK(found == 0 && damaged == 4);
	/* Lookup by name needs no sidecar: the hash names the entry. */
	CHECK_RC(cf_fs_rdir_open(&d, root, n2), 0);
	cf_fs_rdir_free(d);
	cf_fs_rdir_free(root);
	cf_fs_reader_free(r);
	store_free(&s);
}

/* A file that changes while it is read is -EAGAIN ([FS-READ-9]). */
static void
changed(void)
{
	struct store s;
	struct cf_fs_reader *r = NULL;
	struct cf_fs_rdir *root = NULL;
	struct cf_fs_rfile *f = NULL;
	unsigned char *p, buf[CF_FS_BLOCK];
	char bn[NAME_MAX + 1];
	int fd;

	CHECK_RC(store_new(&s, CF_KS_CIPHER_XCHACHA20POLY1305), 0);
	p = pattern(3 * CF_FS_BLOCK, 9);
	CHECK(p != NULL);
	CHECK_RC(mk_file(&s, s.root, "f", p, 3 * CF_FS_BLOCK, 0, 1), 0);
	CHECK_RC(cf_fs_reader_open(&r, s.k, s.path), 0);
	CHECK_RC(cf_fs_rdir_open_root(&root, r), 0);
	/* Just written: its times cannot vouch for it yet. */
	CHECK_RC(cf_fs_rfile_open(&f, root, "f"), 0);
	CHECK_RC(cf_fs_rfile_check(f), -EAGAIN);
	cf_fs_rfile_free(f);
	settle();
	CHECK_RC(cf_fs_rfile_open(&f, root, "f"), 0);
	CHECK(cf_fs_rfile_pread(f, buf, sizeof(buf), 0, NULL) == CF_FS_BLOCK);
	CHECK_RC(cf_fs_rfile_check(f), 0);
	/* A writer rewrites block 1 (here: garbage) meanwhile. */
	CHECK_RC(bname(&s, s.root, "f", bn), 0);
	fd = openat(s.root, bn, O_WRONLY);
	CHECK(fd >= 0 && pwrite(fd, "garbage", 7, 32 + CF_FS_BLOCK + 100) == 7);
	close(fd);
	CHECK(cf_fs_rfile_pread(f, buf, sizeof(buf), CF_FS_BLOCK, NULL) ==
	    -EAGAIN);
	CHECK_RC(cf_fs_rfile_check(f), -EAGAIN);
	cf_fs_rfile_free(f);
	/* Shrunk under the reader: a short backing read. */
	settle();
	CHECK_RC(cf_fs_rfile_open(&f, root, "f"), 0);
	fd = openat(s.root, bn, O_WRONLY);
	CHECK(fd >= 0 && ftruncate(fd, 32) == 0);
	close(fd);
	CHECK(cf_fs_rfile_pread(f, buf, sizeof(buf), 2 * CF_FS_BLOCK, NULL) ==
	    -EAGAIN);
	CHECK_RC(cf_fs_rfile_check(f), -EAGAIN);
	cf_fs_rfile_free(f);
	free(p);
	cf_fs_rdir_free(root);
	cf_fs_reader_free(r);
	store_free(&s);
}

/*
 * A file's store identity for incremental backups (cf_fs_rfile_gen,
 * cf_fs_rdir_gen): the generation xattr authenticated under the reader's
 * keys; none, forged, another file's or another tenant's value refused.
 */
static void
gens(void)
{
	struct store s;
	struct cf_fs_keys *ok;
	struct cf_fs_reader *r = NULL;
	struct cf_fs_rdir *root = NULL;
	struct cf_fs_rfile *f = NULL;
	struct cf_fs_header fh;
	unsigned char val[CF_FS_GEN_BYTES], hbuf[CF_FS_HEADER_BYTES];
	unsigned char id[CF_KS_ID_BYTES], other[CF_KS_ID_BYTES];
	char bn[NAME_MAX + 1];
	uint64_t gen = 99;
	int fd;

	CHECK_RC(store_new(&s, CF_KS_CIPHER_XCHACHA20POLY1305), 0);
	ok = keys_seq(0x20, CF_KS_CIPHER_XCHACHA20POLY1305);	/* another tenant */
	CHECK(ok != NULL);
	CHECK_RC(mk_file(&s, s.root, "f", (const unsigned char *)"x", 1, 0,
	    1), 0);
	CHECK_RC(mk_file(&s, s.root, "empty", (const unsigned char *)"", 0, 0,
	    0), 0);
	CHECK_RC(cf_fs_reader_open(&r, s.k, s.path), 0);
	CHECK_RC(cf_fs_rdir_open_root(&root, r), 0);
	/* None yet. */
	CHECK_RC(cf_fs_rdir_gen(root, "f", id, &gen), -ENODATA);
	CHECK(gen == 0);
	CHECK_RC(cf_fs_rfile_open(&f, root, "f"), 0);
	CHECK_RC(cf_fs_rfile_gen(f, id, &gen), -ENODATA);
	cf_fs_rfile_free(f);
	CHECK_RC(cf_fs_rfile_open(&f, root, "empty"), 0);
	CHECK_RC(cf_fs_rfile_gen(f, id, &gen), -ENODATA);	/* no header */
	cf_fs_rfile_free(f);
	CHECK_RC(cf_fs_rdir_gen(root, "missing", id, &gen), -ENOENT);
	/* Generation 7 of its own file id: both ways. */
	CHECK_RC(bname(&s, s.root, "f", bn), 0);
	fd = openat(s.root, bn, O_RDWR);
	CHECK(fd >= 0 && pread(fd, hbuf, sizeof(hbuf), 0) == sizeof(hbuf));
	CHECK_RC(cf_fs_header_decode(&fh, hbuf, sizeof(hbuf)), 0);
	CHECK_RC(cf_fs_gen_encode(s.k, fh.file_id, 7, 0, val), 0);
	CHECK(fsetxattr(fd, CF_FS_GEN_XATTR, val, sizeof(val), 0) == 0);
	CHECK_RC(cf_fs_rdir_gen(root, "f", id, &gen), 0);
	CHECK(gen == 7 && memcmp(id, fh.file_id, sizeof(id)) == 0);
	gen = 0;
	CHECK_RC(cf_fs_rfile_open(&f, root, "f"), 0);
	CHECK_RC(cf_fs_rfile_gen(f, id, &gen), 0);
	CHECK(gen == 7 && memcmp(id, fh.file_id, sizeof(id)) == 0);
	cf_fs_rfile_free(f);
	/* Another file's id (well tagged): the open file refuses it. */
	memset(other, 0x5a, sizeof(other));
	CHECK_RC(cf_fs_gen_encode(s.k, other, 7, 0, val), 0);
	CHECK(fsetxattr(fd, CF_FS_GEN_XATTR, val, sizeof(val), 0) == 0);
	CHECK_RC(cf_fs_rfile_open(&f, root, "f"), 0);
	CHECK_RC(cf_fs_rfile_gen(f, id, &gen), -EBADMSG);
	CHECK(gen == 0);
	cf_fs_rfile_free(f);
	/* Forged (a flipped bit) and another tenant's: refused. */
	CHECK_RC(cf_fs_gen_encode(s.k, fh.file_id, 8, 0, val), 0);
	val[9] ^= 1;
	CHECK(fsetxattr(fd, CF_FS_GEN_XATTR, val, sizeof(val), 0) == 0);
	CHECK_RC(cf_fs_rdir_gen(root, "f", id, &gen), -EBADMSG);
	CHECK_RC(cf_fs_gen_encode(ok, fh.file_id, 8, 0, val), 0);
	CHECK(fsetxattr(fd, CF_FS_GEN_XATTR, val, sizeof(val), 0) == 0);
	CHECK_RC(cf_fs_rdir_gen(root, "f", id, &gen), -EBADMSG);
	CHECK(fsetxattr(fd, CF_FS_GEN_XATTR, val, 10, 0) == 0);
	CHECK_RC(cf_fs_rdir_gen(root, "f", id, &gen), -EPROTO);
	CHECK(gen == 0);
	close(fd);
	cf_fs_rdir_free(root);
	cf_fs_reader_free(r);
	cf_fs_keys_free(ok);
	store_free(&s);
}

/* An entry's stat as the reader lists it (name in d), or a zeroed one. */
static struct stat
listed(struct cf_fs_rdir *d, const char *name)
{
	const struct cf_fs_rentry *e;
	struct stat st;

	memset(&st, 0, sizeof(st));
	cf_fs_rdir_rewind(d);
	while (cf_fs_rdir_next(d, &e) == 1)
		if (e->name != NULL && strcmp(e->name, name) == 0)
			st = e->st;
	return st;
}

/* 1 if a client can connect to the store's control socket. */
static int
ctl_answers(const struct store *s)
{
	struct sockaddr_un sa;
	int fd, ok;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if ((size_t)snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/cf.ctl",
	    s->path) >= sizeof(sa.sun_path))
		return -1;
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

/*
 * The offline hold (fs_unlink.c): removing entries of an unmounted store
 * as the daemon's unlink does (sidecar, links/ file, generation), refusing
 * a changed entry, a directory, another store's handle, and stopping when
 * a daemon takes the store over.
 */
static void
hold_unlink(void)
{
	struct store s, o;
	struct cf_fs_reader *r = NULL, *ro = NULL;
	struct cf_fs_rdir *root = NULL, *oroot = NULL;
	struct cf_fs_hold *h = NULL, *h2 = NULL;
	struct fs_gen *g = NULL;
	struct cf_fs_header fh;
	unsigned char val[CF_FS_GEN_BYTES], hbuf[CF_FS_HEADER_BYTES];
	char longn[256], target[CF_FS_RLINK_MAX + 1], bn[NAME_MAX + 1], lnk[64];
	char side[NAME_MAX + 4];
	char glog[1200], path[1300];
	struct stat st, st2;
	struct timespec ts[2];
	int fd, lfd;

	memset(longn, 'L', 255);
	longn[255] = '\0';
	memset(target, 't', sizeof(target) - 1);
	target[sizeof(target) - 1] = '\0';
	CHECK_RC(store_new(&s, CF_KS_CIPHER_XCHACHA20POLY1305), 0);
	CHECK_RC(mk_file(&s, s.root, "old.log", (const unsigned char *)"x", 1,
	    0, 1), 0);
	CHECK_RC(mk_file(&s, s.root, "kept", (const unsigned char *)"k", 1, 0,
	    1), 0);
	CHECK_RC(mk_file(&s, s.root, longn, (const unsigned char *)"l", 1, 0,
	    1), 0);
	CHECK_RC(mk_symlink(&s, s.root, "ln", target), 0);
	fd = mk_dir(&s, s.root, "dir");
	CHECK(fd >= 0);
	close(fd);
	/* old.log carries generation 5, known to the log. */
	CHECK_RC(bname(&s, s.root, "old.log", bn), 0);
	fd = openat(s.root, bn, O_RDWR);
	CHECK(fd >= 0 && pread(fd, hbuf, sizeof(hbuf), 0) == sizeof(hbuf));
	CHECK_RC(cf_fs_header_decode(&fh, hbuf, sizeof(hbuf)), 0);
	CHECK_RC(cf_fs_gen_encode(s.k, fh.file_id, 5, 0, val), 0);
	CHECK(fsetxattr(fd, CF_FS_GEN_XATTR, val, sizeof(val), 0) == 0);
	close(fd);
	snprintf(glog, sizeof(glog), "%s/fsgen", cf_test_tmpdir());
	CHECK_RC(fs_gen_open(&g, glog, 0), 0);
	CHECK_RC(fs_gen_set(g, fh.file_id, 5), 0);
	fs_gen_close(g);
	g = NULL;

	CHECK(!ctl_answers(&s));
	CHECK_RC(cf_fs_hold_take(&h, s.k, s.path, glog), 0);
	/* A daemon starting now finds the socket answered ([CTL-0]). */
	CHECK(ctl_answers(&s));
	CHECK_RC(cf_fs_hold_take(&h2, s.k, s.path, NULL), -EBUSY);
	CHECK_RC(cf_fs_reader_open(&r, s.k, s.path), 0);
	CHECK_RC(cf_fs_rdir_open_root(&root, r), 0);

	/* A file changed after it was listed is kept. */
	st = listed(root, "old.log");
	CHECK(S_ISREG(st.st_mode));
	ts[0].tv_sec = ts[1].tv_sec = 1000000;
	ts[0].tv_nsec = ts[1].tv_nsec = 0;
	CHECK(utimensat(s.root, bn, ts, AT_SYMLINK_NOFOLLOW) == 0);
	CHECK_RC(cf_fs_hold_unlink(h, root, "old.log", &st), -ESTALE);
	CHECK(fstatat(s.root, bn, &st2, AT_SYMLINK_NOFOLLOW) == 0);
	/* As listed now: removed, and its generation forgotten. */
	st = listed(root, "old.log");
	CHECK_RC(cf_fs_hold_unlink(h, root, "old.log", &st), 0);
	CHECK(fstatat(s.root, bn, &st2, AT_SYMLINK_NOFOLLOW) != 0 &&
	    errno == ENOENT);
	CHECK_RC(cf_fs_hold_unlink(h, root, "old.log", NULL), -ENOENT);

	/* A long name: entry and sidecar. */
	CHECK_RC(bname(&s, s.root, longn, bn), 0);
	snprintf(side, sizeof(side), "%s.n", bn);
	CHECK(faccessat(s.root, side, F_OK, AT_SYMLINK_NOFOLLOW) == 0);
	st = listed(root, longn);
	CHECK_RC(cf_fs_hold_unlink(h, root, longn, &st), 0);
	CHECK(faccessat(s.root, bn, F_OK, AT_SYMLINK_NOFOLLOW) != 0);
	CHECK(faccessat(s.root, side, F_OK, AT_SYMLINK_NOFOLLOW) != 0);

	/* A long symlink target: its file in links/ goes too. */
	CHECK_RC(bname(&s, s.root, "ln", bn), 0);
	CHECK(readlinkat(s.root, bn, lnk, sizeof(lnk)) == 48);
	lnk[48] = '\0';
	lfd = openat(s.fd, "links", O_RDONLY | O_DIRECTORY);
	CHECK(lfd >= 0 && faccessat(lfd, lnk + 5, F_OK, 0) == 0);
	CHECK_RC(cf_fs_hold_unlink(h, root, "ln", NULL), 0);
	CHECK(faccessat(lfd, lnk + 5, F_OK, 0) != 0 && errno == ENOENT);
	close(lfd);

	CHECK_RC(cf_fs_hold_unlink(h, root, "dir", NULL), -EISDIR);
	CHECK_RC(cf_fs_hold_unlink(h, root, "..", NULL), -EINVAL);
	CHECK_RC(cf_fs_hold_unlink(h, root, "a/b", NULL), -EINVAL);

	/* A crash between an entry and its sidecar: the sweep finishes. */
	CHECK_RC(put_file(s.root, "cf.L.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.n",
	    "x", 1), 0);
	CHECK(cf_fs_hold_sweep(h, root) == 1);
	CHECK(cf_fs_hold_sweep(h, root) == 0);

	/* Another store's directory handle is refused. */
	memset(&o, 0, sizeof(o));
	o.k = keys_seq(0, CF_KS_CIPHER_XCHACHA20POLY1305);
	snprintf(o.path, sizeof(o.path), "%s/other", cf_test_tmpdir());
	CHECK(o.k != NULL && cf_fs_store_init(o.k, o.path) == 0);
	o.fd = o.root = -1;
	CHECK_RC(cf_fs_reader_open(&ro, o.k, o.path), 0);
	CHECK_RC(cf_fs_rdir_open_root(&oroot, ro), 0);
	CHECK_RC(cf_fs_hold_unlink(h, oroot, "kept", NULL), -EINVAL);

	/* A daemon that replaced the socket: the hold stops changing. */
	snprintf(path, sizeof(path), "%s/cf.ctl", s.path);
	CHECK(unlink(path) == 0);
	CHECK_RC(put_file(s.fd, "cf.ctl", "d", 1), 0);
	CHECK_RC(cf_fs_hold_check(h), -EBUSY);
	CHECK_RC(cf_fs_hold_unlink(h, root, "kept", NULL), -EBUSY);
	CHECK(faccessat(s.fd, "cf.ctl", F_OK, 0) == 0);
	cf_fs_hold_release(h);
	h = NULL;
	/* ... and release leaves a socket that is not its own. */
	CHECK(faccessat(s.fd, "cf.ctl", F_OK, 0) == 0);
	CHECK(unlink(path) == 0);
	/* A normal release removes its socket. */
	CHECK_RC(cf_fs_hold_take(&h, s.k, s.path, glog), 0);
	cf_fs_hold_release(h);
	h = NULL;
	CHECK(faccessat(s.fd, "cf.ctl", F_OK, 0) != 0);
	CHECK(!ctl_answers(&s));
	/* The generation log forgot old.log; kept is still readable. */
	CHECK_RC(fs_gen_open(&g, glog, 0), 0);
	CHECK(fs_gen_get(g, fh.file_id) == 0);
	fs_gen_close(g);
	st = listed(root, "kept");
	CHECK(S_ISREG(st.st_mode));
	/* Another tenant's keys never hold the store. */
	cf_fs_keys_free(o.k);
	o.k = keys_seq(32, CF_KS_CIPHER_XCHACHA20POLY1305);
	CHECK_RC(cf_fs_hold_take(&h, o.k, s.path, NULL), -EBADMSG);
	cf_fs_rdir_free(oroot);
	cf_fs_reader_free(ro);
	cf_fs_keys_free(o.k);
	cf_fs_rdir_free(root);
	cf_fs_reader_free(r);
	store_free(&s);
}

/*
 * A farm's block delta, made here by hand the way docs/format/ctl.md
 * [CTL-7] lays it out: the farm name is an empty file of the frozen size,
 * cow/INO links the live file, cow/INO.d holds the header, the map and
 * the saved units (holes kept).  Then the live file is changed where
 * units were saved (and cut), and must not show through.
 */
static void
put_delta_hdr(int dfd, uint32_t unit, unsigned char first)
{
	unsigned char h[FS_COW_HDR] = "CFCOWD1";

	h[0] = first;
	h[8] = unit & 0xff;
	h[9] = (unit >> 8) & 0xff;
	h[10] = (unit >> 16) & 0xff;
	h[11] = (unit >> 24) & 0xff;
	CHECK(pwrite(dfd, h, sizeof(h), 0) == (ssize_t)sizeof(h));
}

/* Saves unit k of base into dfd as the daemon does: data pages only. */
static void
save_unit(int base, int dfd, off_t area, off_t csize, uint64_t k)
{
	unsigned char page[4096], one = 1;
	off_t a = (off_t)k * FS_COW_UNIT, b = a + FS_COW_UNIT, o;
	ssize_t n;

	if (b > csize)
		b = csize;
	for (o = a; o < b; o += (off_t)n) {
		size_t want = (size_t)(b - o) < sizeof(page) ?
		    (size_t)(b - o) : sizeof(page);

		n = pread(base, page, want, o);
		CHECK(n == (ssize_t)want);
		if (n <= 0)
			return;
		if (!sodium_is_zero(page, (size_t)n))
			CHECK(pwrite(dfd, page, (size_t)n, area + o) == n);
	}
	CHECK(pwrite(dfd, &one, 1, FS_COW_HDR + (off_t)k) == 1);
}

static void
farm_delta(void)
{
	struct store s;
	struct cf_fs_reader *r = NULL;
	struct cf_fs_rdir *root = NULL;
	struct cf_fs_rfile *f = NULL, *g = NULL;
	unsigned char *p, *buf, junk[FS_COW_UNIT], two = 2;
	size_t len = 200 * CF_FS_BLOCK + 77;
	off_t csize, area, doff, dend, goff, gend, at;
	uint64_t nunits, k;
	char bn[NAME_MAX + 1], ino[32], dn[40];
	struct stat st;
	int base, dfd, cow, fd;
	ssize_t n;

	CHECK_RC(store_new(&s, CF_KS_CIPHER_XCHACHA20POLY1305), 0);
	p = pattern(len, 9);
	buf = malloc(len);
	CHECK(p != NULL && buf != NULL);
	/* Blocks 20..29 are holes, in both the file and its twin. */
	memset(p + 20 * CF_FS_BLOCK, 0, 10 * CF_FS_BLOCK);
	CHECK_RC(mk_file(&s, s.root, "f", p, len, 0x3ff00000UL, 1), 0);
	CHECK_RC(mk_file(&s, s.root, "twin", p, len, 0x3ff00000UL, 1), 0);
	csize = cf_fs_cipher_size(s.k->cipher, (off_t)len);
	nunits = ((uint64_t)csize + FS_COW_UNIT - 1) / FS_COW_UNIT;
	area = (off_t)((FS_COW_HDR + nunits + 4095) / 4096 * 4096);
	CHECK(nunits == 13 && area == 4096);

	/* The farm: f's name gets an empty file; the live file is cow/INO. */
	CHECK(mkdirat(s.fd, FS_COW_DIR, 0700) == 0);
	cow = openat(s.fd, FS_COW_DIR, O_RDONLY | O_DIRECTORY);
	CHECK(cow >= 0);
	CHECK_RC(bname(&s, s.root, "f", bn), 0);
	CHECK(linkat(s.root, bn, cow, "live", 0) == 0);
	CHECK(unlinkat(s.root, bn, 0) == 0);
	fd = openat(s.root, bn, O_WRONLY | O_CREAT | O_EXCL, 0644);
	CHECK(fd >= 0 && ftruncate(fd, csize) == 0 && fstat(fd, &st) == 0);
	close(fd);
	snprintf(ino, sizeof(ino), "%ju", (uintmax_t)st.st_ino);
	snprintf(dn, sizeof(dn), "%s.d", ino);
	CHECK(renameat(cow, "live", cow, ino) == 0);
	base = openat(cow, ino, O_RDWR);
	dfd = openat(cow, dn, O_RDWR | O_CREAT | O_EXCL, 0600);
	CHECK(base >= 0 && dfd >= 0);
	put_delta_hdr(dfd, FS_COW_UNIT, 'C');
	CHECK(ftruncate(dfd, area + csize) == 0);

	/* Units 0 (the header), 1 (holes inside) and 8.. saved, then the
	 * live file scribbled over there and cut after unit 7. */
	memset(junk, 0xa5, sizeof(junk));
	save_unit(base, dfd, area, csize, 0);
	save_unit(base, dfd, area, csize, 1);
	for (k = 8; k < nunits; k++)
		save_unit(base, dfd, area, csize, k);
	CHECK(pwrite(base, junk, sizeof(junk), 0) == (ssize_t)sizeof(junk));
	CHECK(pwrite(base, junk, sizeof(junk), FS_COW_UNIT) ==
	    (ssize_t)sizeof(junk));
	CHECK(ftruncate(base, 8 * (off_t)FS_COW_UNIT + 5) == 0);
	settle();

	CHECK_RC(cf_fs_reader_open(&r, s.k, s.path), 0);
	CHECK_RC(cf_fs_rdir_open_root(&root, r), 0);
	CHECK_RC(cf_fs_rfile_open(&f, root, "f"), 0);
	CHECK_RC(cf_fs_rfile_open(&g, root, "twin"), 0);
	cf_fs_rfile_stat(f, &st);
	CHECK(st.st_size == (off_t)len);
	n = cf_fs_rfile_pread(f, buf, len, 0, NULL);
	CHECK(n == (ssize_t)len && memcmp(buf, p, len) == 0);
	/* Reads across a saved and an unsaved unit, at odd offsets. */
	n = cf_fs_rfile_pread(f, buf, 3 * CF_FS_BLOCK, 15 * CF_FS_BLOCK + 9,
	    NULL);
	CHECK(n == 3 * CF_FS_BLOCK && memcmp(buf, p + 15 * CF_FS_BLOCK + 9,
	    3 * CF_FS_BLOCK) == 0);
	/* Holes: the same ranges as the untouched twin (the saved unit 1
	 * kept its holes; the live file's there are filled with junk). */
	for (at = 0; at < (off_t)len; at = dend) {
		int rf = cf_fs_rfile_next_data(f, at, &doff, &dend);
		int rg = cf_fs_rfile_next_data(g, at, &goff, &gend);

		CHECK(rf == rg);
		if (rf != 0 || rg != 0)
			break;
		CHECK(doff == goff && dend == gend);
		if (doff != goff || dend != gend)
			break;
	}
	CHECK(at > 0);
	CHECK_RC(cf_fs_rfile_check(f), 0);
	cf_fs_rfile_free(f);
	f = NULL;
	cf_fs_rfile_free(g);
	g = NULL;

	/* Fresh times: a file is read again, a delta's farm file is not
	 * (it never changes once in the farm). */
	CHECK(utimensat(s.root, bn, NULL, 0) == 0);
	{
		char tb[NAME_MAX + 1];

		CHECK_RC(bname(&s, s.root, "twin", tb), 0);
		CHECK(utimensat(s.root, tb, NULL, 0) == 0);
	}
	CHECK_RC(cf_fs_rfile_open(&f, root, "f"), 0);
	CHECK_RC(cf_fs_rfile_open(&g, root, "twin"), 0);
	CHECK_RC(cf_fs_rfile_check(f), 0);
	CHECK_RC(cf_fs_rfile_check(g), -EAGAIN);
	cf_fs_rfile_free(f);
	f = NULL;
	cf_fs_rfile_free(g);
	g = NULL;
	settle();
	CHECK_RC(cf_fs_rfile_open(&g, root, "twin"), 0);

	/* A unit neither saved nor in the (cut) live file: a short read,
	 * which the reader calls a change. */
	CHECK(pwrite(dfd, "\0", 1, FS_COW_HDR + 9) == 1);
	CHECK_RC(cf_fs_rfile_open(&f, root, "f"), 0);
	n = cf_fs_rfile_pread(f, buf, CF_FS_BLOCK, 9 * FS_COW_UNIT, NULL);
	CHECK(n == -EAGAIN);
	cf_fs_rfile_free(f);
	f = NULL;
	/* A map byte that is neither 0 nor 1 is damage. */
	CHECK(pwrite(dfd, &two, 1, FS_COW_HDR + 9) == 1);
	CHECK_RC(cf_fs_rfile_open(&f, root, "f"), 0);
	n = cf_fs_rfile_pread(f, buf, CF_FS_BLOCK, 9 * FS_COW_UNIT, NULL);
	CHECK(n == -EIO);
	cf_fs_rfile_free(f);
	f = NULL;
	/* A bad header, or a unit size that is no power of two. */
	put_delta_hdr(dfd, FS_COW_UNIT, 'X');
	CHECK_RC(cf_fs_rfile_open(&f, root, "f"), -EIO);
	put_delta_hdr(dfd, FS_COW_UNIT + 4096, 'C');
	CHECK_RC(cf_fs_rfile_open(&f, root, "f"), -EIO);
	/* The base without its INO.d. */
	CHECK(unlinkat(cow, dn, 0) == 0);
	CHECK_RC(cf_fs_rfile_open(&f, root, "f"), -EIO);
	/* The twin, with no delta, reads as ever. */
	n = cf_fs_rfile_pread(g, buf, len, 0, NULL);
	CHECK(n == (ssize_t)len && memcmp(buf, p, len) == 0);
	cf_fs_rfile_free(g);
	close(base);
	close(dfd);
	close(cow);
	cf_fs_rdir_free(root);
	cf_fs_reader_free(r);
	free(buf);
	free(p);
	store_free(&s);
}

/*
 * The same trees read the way kernels before 6.13 need (an O_PATH open
 * per entry, its /proc path for the xattr calls): test builds only, else
 * both runs use getxattrat where the kernel has it.
 */
static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	if (ftw->level > 0)
		(void)remove(path);
	return 0;
}

/* Empties the case's scratch directory: the next case body starts anew. */
static void
scratch_empty(void)
{
	CHECK(nftw(cf_test_tmpdir(), rm_entry, 16, FTW_DEPTH | FTW_PHYS) ==
	    0);
}

static void
xattrs_no_xattrat(void)
{
	CHECK(setenv("COFFER_TEST_NO_XATTRAT", "1", 1) == 0);
	links_and_xattrs();
	scratch_empty();
	xattr_tampered();
	scratch_empty();
	gens();
	CHECK(unsetenv("COFFER_TEST_NO_XATTRAT") == 0);
}

static const struct cf_test_case cases[] = {
	CF_TEST(tree_xchacha),
	CF_TEST(tree_gcm),
	CF_TEST(links_and_xattrs),
	CF_TEST(xattr_tampered),
	CF_TEST(sparse),
	CF_TEST(tampered),
	CF_TEST(tampered_large),
	CF_TEST(wrong_tenant),
	CF_TEST(bad_names),
	CF_TEST(traversal),
	CF_TEST(long_targets),
	CF_TEST(long_names),
	CF_TEST(changed),
	CF_TEST(gens),
	CF_TEST(hold_unlink),
	CF_TEST(farm_delta),
	CF_TEST(xattrs_no_xattrat),
};

CF_TEST_MAIN(cases)
