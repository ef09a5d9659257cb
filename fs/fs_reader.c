/*
 * fs_reader.c - reading a tenant's store without FUSE, for backups.
 *
 * The same view the daemon gives, read-only and straight from the backing
 * directory: names decrypted per directory, regular files decrypted a
 * request at a time (one pread per request, not per block), symlink
 * targets and user.* xattrs decrypted, long names (cf.L.*) and long
 * symlink targets (cf.T.*, kept in links/) followed.  Every object is
 * reached with openat()/fstatat() and O_NOFOLLOW relative to a directory
 * descriptor, one checked name at a time.
 *
 * It deliberately does not write anything (not even the store directory's
 * mode, which cf_fs_store_init resets), does not audit (the caller knows
 * what it is reading for and reports damage itself), and does not
 * coordinate with a running daemon: it only notices that a file changed
 * under it (-EAGAIN).  Consistent snapshots of a live mount are the
 * daemon's part.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "fs_int.h"

/*
 * Format constants that fs_ops.c and fs_crypt.c also define (statically);
 * docs/format/fs.md is their source.
 */
#define XATTR_PREFIX "user."
#define XATTR_STORED "user.cf."
#define XATTR_NONCE 24U
#define XATTR_OVH (XATTR_NONCE + CF_KS_TAG_BYTES)
#define XATTR_MAX 65536U		/* stored value, Linux's limit */
#define XATTR_LIST_FIRST 1024U		/* a first listxattr buffer */
#define HASH_B64 43U			/* base64url of 32 bytes */
#define ENC_NAME_CAP (CF_FS_ENC_NAME_MAX + 1)
#define ENC_LINK_CAP 8192U		/* an encoded target (<= 5514 chars) */
#define RACY_NS 50000000L		/* 50 ms: coarse file time ticks */
#define B64URL sodium_base64_VARIANT_URLSAFE_NO_PADDING

static const unsigned char xattr_iv[CF_FS_DIRIV_BYTES] = "coffer-xattr-iv";

struct cf_fs_reader {
	const struct cf_fs_keys *keys;	/* borrowed, outlives the reader */
	int storefd;			/* the store directory */
	int cowfd;			/* a farm's cow/ ([CTL-7]), or -1 */
	int xattrat;			/* getxattrat and listxattrat work */
	int datafd;			/* data/, the tenant's root */
	size_t ovh;			/* nonce + tag of a block */
	off_t cb;			/* sealed bytes of a full block */
	struct fs_gen *gens;		/* the home's log, if checked */
	/*
	 * The context of the last file freed, reused by the next open
	 * (cf_fs_file_ctx_reset): a new one maps and locks key memory,
	 * about a third of the open-read-close of a small file.  Taken
	 * and given back with atomic exchanges (files of one reader may
	 * be opened on several threads).  It holds that file's key until
	 * the next open or the reader's free.
	 */
	struct cf_fs_file_ctx *spare;
};

/*
 * The entry xattr_ref looked up last (its O_PATH descriptor, or its
 * stored name for the *xattrat calls), and of which entry: the
 * generation, the xattr list and each value of one entry are read
 * through one open.  Dropped by cf_fs_rdir_next (the next entry) and
 * when another entry is asked for.  Behind a pointer: the calls that
 * fill it take a const handle.
 */
struct rdir_pfd {
	int fd;				/* -1: none */
	int self;			/* of the directory itself */
	int at;				/* enc is set: the *xattrat calls */
	char name[CF_FS_RNAME_MAX + 1];
	char enc[NAME_MAX + 1];		/* name as stored, with at */
};

/*
 * Where an object's xattrs are read: (dirfd, rel) with getxattrat and
 * listxattrat (Linux 6.13; no open, no /proc path walk: a third of the
 * system calls of an unchanged file in a mounted incremental backup),
 * else an open fd, else path (/proc/self/fd/N of an O_PATH open).
 */
struct xref {
	int dirfd;
	const char *rel;		/* NULL: fd or path */
	int fd;
	char path[64];
};

struct cf_fs_rdir {
	struct cf_fs_reader *r;
	int fd;				/* O_RDONLY | O_DIRECTORY */
	unsigned char diriv[CF_FS_DIRIV_BYTES];
	DIR *dp;			/* for cf_fs_rdir_next, lazily */
	struct cf_fs_rentry ent;
	char name[CF_FS_RNAME_MAX + 1];
	char stored[NAME_MAX + 1];
	struct rdir_pfd *pfd;
};

struct cf_fs_rfile {
	struct cf_fs_reader *r;
	int fd;
	/*
	 * A farm's delta ([CTL-7]): fd holds only the metadata; the bytes
	 * are base's (the live file) where the map of dfd says 0, dfd's at
	 * area + offset where it says 1.  base -1: fd holds them.
	 */
	int base, dfd;
	off_t area;
	uint32_t unit;
	struct stat st0;		/* backing lstat at open */
	int racy;			/* changed too recently to trust times */
	off_t csize, psize;
	uint64_t nblocks;
	struct cf_fs_file_ctx *ctx;	/* NULL for a file without header */
	unsigned char file_id[CF_KS_ID_BYTES];	/* the header's, if ctx */
	unsigned char *cbuf;		/* sealed bytes of one request */
	size_t cbufcap;
	int dense;			/* its generation says: no holes */
	int gen_rc;			/* file_gen at the open, if ctx */
	uint64_t gen;
};

/* ---- small helpers ------------------------------------------------------- */

static int
read_full(int fd, void *buf, size_t len, off_t off, size_t *got)
{
	ssize_t n;

	*got = 0;
	while (*got < len) {
		n = pread(fd, (char *)buf + *got, len - *got, off + (off_t)*got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		*got += (size_t)n;
	}
	return 0;
}

/*
 * Opens dirfd/name for reading only if it is a regular file: checked
 * before the open, since opening a device node or FIFO planted in the
 * store may have effects, and again after it, against a swap in between.
 * -EINVAL if it is something else (-ELOOP for a symlink); *st gets its
 * fstat.  flags are added to O_RDONLY | O_NOFOLLOW | O_NONBLOCK.
 */
/* ---- xattrs at a directory's entry ---------------------------------------- */

#if defined(__x86_64__) || defined(__aarch64__)
#define SYS_GETXATTRAT 464		/* one number on every architecture */
#define SYS_LISTXATTRAT 465
#endif

struct xattr_args_v0 {			/* the kernel's struct xattr_args */
	uint64_t value;
	uint32_t size;
	uint32_t flags;
};

static ssize_t
xr_get(const struct xref *x, const char *name, void *buf, size_t size)
{
#ifdef SYS_GETXATTRAT
	if (x->rel != NULL) {
		struct xattr_args_v0 a;

		if (size > UINT32_MAX)
			size = UINT32_MAX;
		a.value = (uint64_t)(uintptr_t)buf;
		a.size = (uint32_t)size;
		a.flags = 0;
		return (ssize_t)syscall(SYS_GETXATTRAT, x->dirfd, x->rel,
		    AT_SYMLINK_NOFOLLOW, name, &a, sizeof(a));
	}
#endif
	if (x->fd >= 0 && x->path[0] == '\0')
		return fgetxattr(x->fd, name, buf, size);
	return getxattr(x->path, name, buf, size);
}

static ssize_t
xr_list(const struct xref *x, char *buf, size_t size)
{
#ifdef SYS_LISTXATTRAT
	if (x->rel != NULL)
		return (ssize_t)syscall(SYS_LISTXATTRAT, x->dirfd, x->rel,
		    AT_SYMLINK_NOFOLLOW, buf, size);
#endif
	if (x->fd >= 0 && x->path[0] == '\0')
		return flistxattr(x->fd, buf, size);
	return listxattr(x->path, buf, size);
}

/* 1 if this kernel has getxattrat and listxattrat (tried on dirfd). */
static int
xattrat_works(int dirfd)
{
#ifdef SYS_LISTXATTRAT
#ifdef CF_TEST_CLOCK
	if (getenv("COFFER_TEST_NO_XATTRAT") != NULL)
		return 0;	/* coffer(1): the older kernels' way */
#endif
	return syscall(SYS_LISTXATTRAT, dirfd, ".", AT_SYMLINK_NOFOLLOW, NULL,
	    (size_t)0) >= 0;
#else
	(void)dirfd;
	return 0;
#endif
}

static int
open_regular(int dirfd, const char *name, int flags, struct stat *st)
{
	struct stat pre;
	int fd, rc;

	if (fstatat(dirfd, name, &pre, AT_SYMLINK_NOFOLLOW) != 0)
		return -errno;
	if (S_ISLNK(pre.st_mode))
		return -ELOOP;
	if (!S_ISREG(pre.st_mode))
		return S_ISDIR(pre.st_mode) ? -EISDIR : -EINVAL;
	fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK |
	    O_CLOEXEC | flags);
	if (fd < 0 && errno == EPERM && (flags & O_NOATIME) != 0)
		fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK |
		    O_CLOEXEC | (flags & ~O_NOATIME));
	if (fd < 0)
		return -errno;
	if (fstat(fd, st) != 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	if (!S_ISREG(st->st_mode) || st->st_ino != pre.st_ino ||
	    st->st_dev != pre.st_dev) {
		close(fd);
		return -EAGAIN;		/* replaced under us */
	}
	return fd;
}

/*
 * Reads a small regular file at dirfd/name into buf (max + 1 bytes),
 * NUL-terminated, refusing anything but a regular file of 1 to max bytes
 * (-EPROTO).  A missing or unreadable one is -EIO.
 */
static int
read_small(int dirfd, const char *name, char *buf, size_t max, size_t *len)
{
	struct stat st;
	size_t got;
	int fd, rc;

	*len = 0;
	fd = open_regular(dirfd, name, 0, &st);
	if (fd < 0)
		return fd == -ENOENT || fd == -EACCES || fd == -EIO ? -EIO :
		    -EPROTO;
	if (st.st_size < 1 || (uintmax_t)st.st_size > max) {
		rc = -EPROTO;
		goto out;
	}
	/* One byte more than it should have: a file that grew is seen. */
	rc = read_full(fd, buf, (size_t)st.st_size + 1, 0, &got);
	if (rc < 0) {
		rc = -EIO;
		goto out;
	}
	if (got != (size_t)st.st_size) {
		rc = -EPROTO;
		goto out;
	}
	buf[got] = '\0';
	*len = got;
	rc = 0;
out:
	close(fd);
	return rc;
}

/* 1 if s[0..len) holds only the base64url alphabet. */
static int
b64url_only(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return 0;
	}
	return 1;
}

/* 1 if s is prefix (5 characters) and 43 base64url characters, no more. */
static int
is_hashed(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0 &&
	    strlen(s) == CF_FS_HASHED_BYTES - 1 &&
	    b64url_only(s + strlen(prefix), HASH_B64);
}

/* A plaintext name a caller may ask for: one component, no traversal. */
static int
check_name(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || strchr(name, '/') != NULL || strcmp(name, ".") == 0 ||
	    strcmp(name, "..") == 0)
		return -EINVAL;
	if (len > CF_FS_RNAME_MAX)
		return -ENAMETOOLONG;
	return 0;
}

/*
 * The backing name of plaintext name in d: its encrypted name, or for a
 * name over CF_FS_NAME_MAX bytes cf_fs_long_name() of that.  out has
 * NAME_MAX + 1 bytes.
 */
static int
stored_name(const struct cf_fs_rdir *d, const char *name, char *out)
{
	char enc[ENC_NAME_CAP];
	int rc;

	rc = check_name(name);
	if (rc < 0)
		return rc;
	rc = cf_fs_name_encrypt_any(d->r->keys, d->diriv, name, enc,
	    sizeof(enc));
	if (rc < 0)
		return rc;
	if (strlen(name) <= CF_FS_NAME_MAX) {
		if (strlen(enc) > NAME_MAX)
			return -ENAMETOOLONG;
		memcpy(out, enc, strlen(enc) + 1);
		return 0;
	}
	cf_fs_long_name(enc, out);
	return 0;
}

/*
 * Decrypts the backing name stored of d into out (CF_FS_RNAME_MAX + 1
 * bytes).  1 if it is one of the store's own names, to be skipped.
 */
static int
plain_name(const struct cf_fs_rdir *d, const char *stored, char *out)
{
	char enc[ENC_NAME_CAP], side[NAME_MAX + 1], check[CF_FS_HASHED_BYTES];
	size_t elen;
	int rc;

	if (strncmp(stored, "cf.", 3) != 0)
		return cf_fs_name_decrypt(d->r->keys, d->diriv, stored, out,
		    CF_FS_RNAME_MAX + 1);
	if (!is_hashed(stored, CF_FS_LONG_PREFIX))
		return 1;	/* cf.diriv, sidecars, later reserved names */
	snprintf(side, sizeof(side), "%s%s", stored, CF_FS_LONG_SIDECAR);
	rc = read_small(d->fd, side, enc, CF_FS_ENC_NAME_MAX, &elen);
	if (rc < 0)
		return rc;
	cf_fs_long_name(enc, check);
	if (strcmp(check, stored) != 0)
		return -EBADMSG;
	/* Only a long name: a short one has one stored form, its own. */
	return cf_fs_name_decrypt_long(d->r->keys, d->diriv, enc, out,
	    CF_FS_RNAME_MAX + 1);
}

/*
 * The stored target of symlink enc in dirfd (a short one, or the contents
 * of links/<hash> for a long one) into buf (ENC_LINK_CAP bytes).
 */
static int
stored_target(const struct cf_fs_reader *r, int dirfd, const char *enc,
    char *buf)
{
	char lnk[PATH_MAX + 1], check[CF_FS_HASHED_BYTES];
	size_t len;
	ssize_t n;
	int lfd, rc;

	n = readlinkat(dirfd, enc, lnk, sizeof(lnk) - 1);
	if (n < 0)
		return -errno;	/* -EINVAL: not a symlink */
	lnk[n] = '\0';
	if (strncmp(lnk, CF_FS_TARGET_PREFIX, strlen(CF_FS_TARGET_PREFIX)) !=
	    0) {
		memcpy(buf, lnk, (size_t)n + 1);
		return 0;
	}
	/* base64url has no '.': no short stored target starts so. */
	if (!is_hashed(lnk, CF_FS_TARGET_PREFIX))
		return -EPROTO;
	lfd = openat(r->storefd, CF_FS_LINKS_DIR, O_RDONLY | O_DIRECTORY |
	    O_NOFOLLOW | O_CLOEXEC);
	if (lfd < 0)
		return -EIO;
	rc = read_small(lfd, lnk + strlen(CF_FS_TARGET_PREFIX), buf,
	    ENC_LINK_CAP - 1, &len);
	close(lfd);
	if (rc < 0)
		return rc;
	cf_fs_long_target(buf, check);
	if (strcmp(check, lnk) != 0)
		return -EBADMSG;
	return 0;
}

/* Plaintext length of a target from its stored length ([FS-LINK-5]). */
static off_t
target_len(size_t stored)
{
	off_t raw = (off_t)stored * 3 / 4;

	return raw > 40 ? raw - 40 : 0;
}

/* Turns the backing lstat of dirfd/enc into the tenant's view. */
static void
plain_stat(const struct cf_fs_reader *r, int dirfd, const char *enc,
    struct stat *st)
{
	char *buf;

	if (S_ISREG(st->st_mode)) {
		st->st_size = cf_fs_plain_size(r->keys->cipher, st->st_size);
	} else if (S_ISLNK(st->st_mode)) {
		/* A long target is only known from its file in links/. */
		buf = st->st_size == CF_FS_HASHED_BYTES - 1 && enc != NULL ?
		    malloc(ENC_LINK_CAP) : NULL;
		if (buf != NULL && stored_target(r, dirfd, enc, buf) == 0)
			st->st_size = (off_t)strlen(buf);
		free(buf);
		st->st_size = target_len((size_t)st->st_size);
	}
}

/* ---- the store ------------------------------------------------------------- */

/* The marker check of [FS-STORE-4], as cf_fs_store_init makes it. */
static int
check_marker(const struct cf_fs_keys *keys, int storefd)
{
	unsigned char blob[CF_FS_MARKER2_BYTES + 1];
	struct stat st;
	size_t got;
	int fd, rc;

	/* A re-keying of the names is pending ([FS-MKEY-4]). */
	if (fs_metakey_pending(storefd))
		return -EINPROGRESS;
	fd = open_regular(storefd, FS_STORE_MARKER, 0, &st);
	if (fd == -ENOENT) {
		/* Data without a marker is refused, not adopted. */
		if (faccessat(storefd, FS_STORE_DATA, F_OK,
		    AT_SYMLINK_NOFOLLOW) == 0)
			return -EBADMSG;
		return -ENOENT;
	}
	/* A symlink, FIFO or device in its place is no marker. */
	if (fd == -ELOOP || fd == -EINVAL || fd == -EISDIR)
		return -EBADMSG;
	if (fd < 0)
		return fd;
	/* One byte more than a marker has: trailing bytes are refused. */
	rc = read_full(fd, blob, sizeof(blob), 0, &got);
	close(fd);
	if (rc < 0)
		return rc;
	if (fs_marker_open(keys, blob, got) != 0)
		return -EBADMSG;
	return 0;
}

int
cf_fs_reader_open(struct cf_fs_reader **out, const struct cf_fs_keys *keys,
    const char *backing)
{
	struct cf_fs_reader *r;
	int rc;

	*out = NULL;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	r->storefd = r->datafd = r->cowfd = -1;
	r->keys = keys;
	r->ovh = cf_fs_block_overhead(keys->cipher);
	r->cb = CF_FS_BLOCK + (off_t)r->ovh;
	r->storefd = open(backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (r->storefd < 0) {
		rc = -errno;
		goto out;
	}
	rc = check_marker(keys, r->storefd);
	if (rc < 0)
		goto out;
	r->datafd = openat(r->storefd, FS_STORE_DATA, O_RDONLY | O_DIRECTORY |
	    O_NOFOLLOW | O_CLOEXEC);
	if (r->datafd < 0) {
		rc = errno == ENOENT ? -EIO : -errno;
		goto out;
	}
	r->xattrat = xattrat_works(r->datafd);
	/* Only a snapshot's farm has one ([CTL-7]). */
	r->cowfd = openat(r->storefd, FS_COW_DIR, O_RDONLY | O_DIRECTORY |
	    O_NOFOLLOW | O_CLOEXEC);
	if (r->cowfd < 0 && errno != ENOENT) {
		rc = -errno;
		goto out;
	}
	*out = r;
	r = NULL;
	rc = 0;
out:
	cf_fs_reader_free(r);
	return rc;
}

void
cf_fs_reader_free(struct cf_fs_reader *r)
{
	if (r == NULL)
		return;
	if (r->datafd >= 0)
		close(r->datafd);
	if (r->cowfd >= 0)
		close(r->cowfd);
	if (r->storefd >= 0)
		close(r->storefd);
	fs_gen_close(r->gens);
	cf_fs_file_ctx_free(r->spare);
	free(r);
}

int
cf_fs_reader_check_gens(struct cf_fs_reader *r, const char *gen_log)
{
	struct fs_gen *g = NULL;
	int rc;

	rc = fs_gen_read(&g, gen_log);
	if (rc < 0)
		return rc;
	fs_gen_close(r->gens);
	r->gens = g;
	return 0;
}

/* ---- directories ---------------------------------------------------------- */

int
fs_rdir_fd(const struct cf_fs_rdir *d)
{
	return d->fd;
}

int
fs_rdir_store_fd(const struct cf_fs_rdir *d)
{
	return d->r->storefd;
}

int
fs_rdir_backing_name(const struct cf_fs_rdir *d, const char *name, char *out)
{
	return stored_name(d, name, out);
}

static void
pfd_drop(struct rdir_pfd *p)
{
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
	p->at = 0;
	sodium_memzero(p->name, sizeof(p->name));
	sodium_memzero(p->enc, sizeof(p->enc));
}

/* Makes a handle of directory fd (taken over, closed on failure). */
static int
rdir_new(struct cf_fs_rdir **out, struct cf_fs_reader *r, int fd)
{
	struct cf_fs_rdir *d;
	struct stat st;
	ssize_t n = -1;
	int ivfd, rc;

	*out = NULL;
	d = calloc(1, sizeof(*d));
	if (d == NULL) {
		close(fd);
		return -ENOMEM;
	}
	d->r = r;
	d->fd = fd;
	d->pfd = calloc(1, sizeof(*d->pfd));
	if (d->pfd == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	d->pfd->fd = -1;
	/* [FS-STORE-5]: without 16 bytes of IV no entry can be named.  Like
	 * the daemon, bytes after the 16th are not looked at. */
	ivfd = open_regular(fd, CF_FS_DIRIV_NAME, 0, &st);
	if (ivfd >= 0) {
		n = pread(ivfd, d->diriv, sizeof(d->diriv), 0);
		close(ivfd);
	}
	if (n != (ssize_t)sizeof(d->diriv)) {
		rc = -EIO;
		goto out;
	}
	*out = d;
	d = NULL;
	rc = 0;
out:
	cf_fs_rdir_free(d);
	return rc;
}

int
cf_fs_rdir_open_root(struct cf_fs_rdir **out, struct cf_fs_reader *r)
{
	int fd;

	*out = NULL;
	fd = openat(r->datafd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	return rdir_new(out, r, fd);
}

int
cf_fs_rdir_open(struct cf_fs_rdir **out, const struct cf_fs_rdir *parent,
    const char *name)
{
	char enc[NAME_MAX + 1];
	int fd, rc;

	*out = NULL;
	rc = stored_name(parent, name, enc);
	if (rc < 0)
		return rc;
	fd = openat(parent->fd, enc, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC);
	if (fd < 0)
		return -errno;
	return rdir_new(out, parent->r, fd);
}

void
cf_fs_rdir_free(struct cf_fs_rdir *d)
{
	if (d == NULL)
		return;
	if (d->dp != NULL)
		closedir(d->dp);
	close(d->fd);
	if (d->pfd != NULL) {
		pfd_drop(d->pfd);
		free(d->pfd);
	}
	sodium_memzero(d->name, sizeof(d->name));
	free(d);
}

void
cf_fs_rdir_rewind(struct cf_fs_rdir *d)
{
	if (d->dp != NULL)
		rewinddir(d->dp);
}

int
cf_fs_rdir_next(struct cf_fs_rdir *d, const struct cf_fs_rentry **ep)
{
	struct cf_fs_rentry *e = &d->ent;
	struct dirent *de;
	int fd, rc;

	pfd_drop(d->pfd);

	*ep = NULL;
	if (d->dp == NULL) {
		/* Its own descriptor: the stream's offset is not ours. */
		fd = openat(d->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		d->dp = fdopendir(fd);
		if (d->dp == NULL) {
			rc = -errno;
			close(fd);
			return rc;
		}
	}
	for (;;) {
		errno = 0;
		de = readdir(d->dp);
		if (de == NULL)
			return errno != 0 ? -errno : 0;
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		memset(e, 0, sizeof(*e));
		rc = plain_name(d, de->d_name, d->name);
		if (rc == 1)
			continue;	/* the store's own */
		snprintf(d->stored, sizeof(d->stored), "%s", de->d_name);
		e->stored = d->stored;
		if (rc == 0 && fstatat(d->fd, d->stored, &e->st,
		    AT_SYMLINK_NOFOLLOW) != 0)
			rc = -errno;
		if (rc < 0) {
			memset(&e->st, 0, sizeof(e->st));
			e->err = rc;
		} else {
			plain_stat(d->r, d->fd, d->stored, &e->st);
			e->name = d->name;
		}
		*ep = e;
		return 1;
	}
}

/*
 * The backing name of name in d (or "" for d itself, name NULL) into enc.
 */
static int
target_of(const struct cf_fs_rdir *d, const char *name, char *enc)
{
	if (name == NULL) {
		enc[0] = '\0';
		return 0;
	}
	return stored_name(d, name, enc);
}

int
cf_fs_rdir_stat(const struct cf_fs_rdir *d, const char *name, struct stat *st)
{
	char enc[NAME_MAX + 1];
	int rc;

	memset(st, 0, sizeof(*st));
	rc = target_of(d, name, enc);
	if (rc < 0)
		return rc;
	if (fstatat(d->fd, enc, st, AT_SYMLINK_NOFOLLOW | (name == NULL ?
	    AT_EMPTY_PATH : 0)) != 0) {
		rc = -errno;
		memset(st, 0, sizeof(*st));
		return rc;
	}
	plain_stat(d->r, d->fd, name == NULL ? NULL : enc, st);
	return 0;
}

int
cf_fs_rdir_readlink(const struct cf_fs_rdir *d, const char *name, char *out,
    size_t cap)
{
	char enc[NAME_MAX + 1], *buf = NULL, *plain = NULL;
	int rc;

	if (cap > 0)
		out[0] = '\0';
	rc = stored_name(d, name, enc);
	if (rc < 0)
		return rc;
	buf = malloc(ENC_LINK_CAP);
	plain = malloc(CF_FS_RLINK_MAX + 1);
	if (buf == NULL || plain == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	rc = stored_target(d->r, d->fd, enc, buf);
	if (rc < 0)
		goto out;
	rc = cf_fs_link_decrypt(d->r->keys, buf, plain, CF_FS_RLINK_MAX + 1);
	if (rc < 0)
		goto out;
	if (strlen(plain) + 1 > cap) {
		rc = -ERANGE;
		goto out;
	}
	memcpy(out, plain, strlen(plain) + 1);
	rc = 0;
out:
	if (plain != NULL)
		sodium_memzero(plain, CF_FS_RLINK_MAX + 1);
	free(plain);
	free(buf);
	return rc;
}

/* ---- extended attributes ---------------------------------------------------- */

/*
 * An O_PATH descriptor of name in d (or of d) and its /proc path: the
 * *xattr() calls have no *at() form, and the magic link reaches the
 * object itself, never through a symlink in the store.  The descriptor
 * is d's (struct rdir_pfd): the caller does not close it.
 */
static int
xattr_ref(const struct cf_fs_rdir *d, const char *name, struct xref *x)
{
	struct rdir_pfd *p = d->pfd;
	char enc[NAME_MAX + 1];
	int nfd, rc;

	x->dirfd = x->fd = -1;
	x->rel = NULL;
	x->path[0] = '\0';
	if (name != NULL && p->at && strcmp(p->name, name) == 0) {
		x->dirfd = d->fd;
		x->rel = p->enc;
		return 0;
	}
	if (p->fd >= 0 && (name == NULL ? p->self :
	    !p->self && strcmp(p->name, name) == 0)) {
		x->fd = p->fd;
		snprintf(x->path, sizeof(x->path), "/proc/self/fd/%d", x->fd);
		return 0;
	}
	if (name != NULL && strlen(name) >= sizeof(p->name))
		return -ENAMETOOLONG;	/* no entry has such a name */
	rc = target_of(d, name, enc);
	if (rc < 0)
		return rc;
	if (name != NULL && d->r->xattrat) {
		pfd_drop(p);
		p->at = 1;
		memcpy(p->name, name, strlen(name) + 1);
		memcpy(p->enc, enc, strlen(enc) + 1);
		x->dirfd = d->fd;
		x->rel = p->enc;
		return 0;
	}
	nfd = openat(d->fd, name == NULL ? "." : enc, O_PATH | O_NOFOLLOW |
	    O_CLOEXEC);
	if (nfd < 0)
		return -errno;
	pfd_drop(p);
	p->fd = nfd;
	p->self = name == NULL;
	if (name != NULL)
		memcpy(p->name, name, strlen(name) + 1);
	x->fd = nfd;
	snprintf(x->path, sizeof(x->path), "/proc/self/fd/%d", x->fd);
	return 0;
}

int
cf_fs_rdir_xattr_list(const struct cf_fs_rdir *d, const char *name,
    char **list, size_t *len, size_t *damaged)
{
	char *raw = NULL, *res = NULL, *p, plain[CF_FS_RNAME_MAX + 1];
	size_t used = 0, bad = 0, plen;
	struct xref x;
	ssize_t n;
	int rc;

	*list = NULL;
	*len = 0;
	if (damaged != NULL)
		*damaged = 0;
	rc = xattr_ref(d, name, &x);
	if (rc < 0)
		goto out;
	/*
	 * Most lists (the generation and a few names) fit 1 KiB: one call.
	 * Else ask the size; the list may grow between the two calls: try
	 * again then.
	 */
	raw = malloc(XATTR_LIST_FIRST + 1);
	if (raw == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	n = xr_list(&x, raw, XATTR_LIST_FIRST);
	if (n < 0 && errno != ERANGE) {
		rc = errno == ENOTSUP ? 0 : -errno;
		goto out;
	}
	while (n < 0) {
		n = xr_list(&x, NULL, 0);
		if (n < 0) {
			rc = errno == ENOTSUP ? 0 : -errno;
			goto out;
		}
		free(raw);
		raw = malloc((size_t)n + 1);
		if (raw == NULL) {
			rc = -ENOMEM;
			goto out;
		}
		n = xr_list(&x, raw, (size_t)n);
		if (n < 0 && errno != ERANGE) {
			rc = -errno;
			goto out;
		}
	}
	raw[n] = '\0';
	/* A decrypted name is never longer than its stored form. */
	res = malloc((size_t)n + 1);
	if (res == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (p = raw; p < raw + n; p += strlen(p) + 1) {
		if (strncmp(p, XATTR_STORED, strlen(XATTR_STORED)) != 0 ||
		    strcmp(p, CF_FS_GEN_XATTR) == 0)
			continue;	/* not the store's, or not the tenant's */
		if (cf_fs_name_decrypt(d->r->keys, xattr_iv,
		    p + strlen(XATTR_STORED), plain, sizeof(plain)) < 0) {
			bad++;
			continue;
		}
		plen = strlen(plain);
		memcpy(res + used, XATTR_PREFIX, strlen(XATTR_PREFIX));
		memcpy(res + used + strlen(XATTR_PREFIX), plain, plen + 1);
		used += strlen(XATTR_PREFIX) + plen + 1;
	}
	if (used > 0) {
		*list = res;
		*len = used;
		res = NULL;
	}
	if (damaged != NULL)
		*damaged = bad;
	rc = 0;
out:
	free(raw);
	free(res);
	return rc;
}

int
cf_fs_rdir_xattr_get(const struct cf_fs_rdir *d, const char *name,
    const char *xname, unsigned char **val, size_t *len)
{
	char sname[300], enc[ENC_NAME_CAP];
	unsigned char *blob = NULL, *plain = NULL;
	struct xref x;
	ssize_t n;
	int rc;

	*val = NULL;
	*len = 0;
	if (strncmp(xname, XATTR_PREFIX, strlen(XATTR_PREFIX)) != 0)
		return -ENODATA;
	rc = cf_fs_name_encrypt(d->r->keys, xattr_iv,
	    xname + strlen(XATTR_PREFIX), enc, sizeof(enc));
	if (rc < 0)
		return rc == -EINVAL ? -EINVAL : -ENODATA;
	if ((size_t)snprintf(sname, sizeof(sname), "%s%s", XATTR_STORED, enc) >=
	    sizeof(sname) || strlen(sname) > XATTR_NAME_MAX)
		return -ENODATA;	/* no such name can be stored */
	rc = xattr_ref(d, name, &x);
	if (rc < 0)
		goto out;
	blob = malloc(XATTR_MAX);
	if (blob == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	n = xr_get(&x, sname, blob, XATTR_MAX);
	if (n < 0) {
		rc = errno == ENOTSUP ? -ENODATA : -errno;
		goto out;
	}
	if ((size_t)n < XATTR_OVH) {
		rc = -EPROTO;
		goto out;
	}
	/* One byte more, so an empty value still has a buffer. */
	plain = malloc((size_t)n - XATTR_OVH + 1);
	if (plain == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	rc = cf_ks_aead_open(d->r->keys->meta, plain, blob + XATTR_NONCE,
	    (size_t)n - XATTR_NONCE, (const unsigned char *)sname,
	    strlen(sname), blob);
	if (rc < 0) {
		rc = -EBADMSG;
		goto out;
	}
	*val = plain;
	*len = (size_t)n - XATTR_OVH;
	plain = NULL;
	rc = 0;
out:
	free(blob);
	free(plain);
	return rc;
}

/* ---- regular files ------------------------------------------------------------ */

static int
same_version(const struct stat *a, const struct stat *b)
{
	return a->st_size == b->st_size &&
	    a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
	    a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	    a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
	    a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* A backing size no writer makes ([FS-BLK-9]). */
static int
size_damaged(const struct cf_fs_reader *r, off_t csize)
{
	off_t rem;

	if (csize == 0)
		return 0;
	if (csize < (off_t)CF_FS_HEADER_BYTES)
		return 1;
	rem = (csize - CF_FS_HEADER_BYTES) % r->cb;
	return rem > 0 && rem <= (off_t)r->ovh;
}

static int gen_of(const struct cf_fs_reader *r, const struct xref *x,
    unsigned char file_id[CF_KS_ID_BYTES], uint64_t *gen, unsigned *flags);

/*
 * The file's generation value, read once at open: 0 with *gen and
 * *flags, -ENODATA if it has none, -EBADMSG if it is another file's or
 * forged, -EPROTO if malformed (*gen and *flags 0 on failure).
 */
static int
file_gen(const struct cf_fs_rfile *f, uint64_t *gen, unsigned *flags)
{
	unsigned char id[CF_KS_ID_BYTES];
	struct xref x = { -1, NULL, f->fd, "" };
	int rc;

	rc = gen_of(f->r, &x, id, gen, flags);
	if (rc == 0 && sodium_memcmp(id, f->file_id, CF_KS_ID_BYTES) != 0)
		rc = -EBADMSG;
	if (rc < 0) {
		*gen = 0;
		*flags = 0;
	}
	return rc;
}

/* ---- a farm's deltas ([CTL-7]) ------------------------------------------ */

int
fs_cow_header_decode(const unsigned char *buf, size_t len, uint32_t *unit)
{
	uint32_t u;
	size_t i;

	*unit = 0;
	if (len < FS_COW_HDR || memcmp(buf, FS_COW_MAGIC, 8) != 0)
		return -EPROTO;
	u = (uint32_t)buf[8] | (uint32_t)buf[9] << 8 |
	    (uint32_t)buf[10] << 16 | (uint32_t)buf[11] << 24;
	/* A power of two from 4 KiB to 16 MiB; the rest reserved, zero. */
	if (u < 4096 || u > (1U << 24) || (u & (u - 1)) != 0)
		return -EPROTO;
	for (i = 12; i < FS_COW_HDR; i++)
		if (buf[i] != 0)
			return -EPROTO;
	*unit = u;
	return 0;
}

/* Opens f's delta, if the farm keeps one for it: 0, or -errno. */
static int
delta_open(struct cf_fs_rfile *f)
{
	unsigned char hdr[FS_COW_HDR];
	char name[32], dname[40];
	uint64_t nunits;
	size_t got;
	int rc;

	if (f->r->cowfd < 0)
		return 0;
	snprintf(name, sizeof(name), "%ju", (uintmax_t)f->st0.st_ino);
	/* The tenant's live file: its atime must not move either. */
	f->base = openat(f->r->cowfd, name, O_RDONLY | O_NOFOLLOW |
	    O_NOATIME | O_CLOEXEC);
	if (f->base < 0 && errno == EPERM)
		f->base = openat(f->r->cowfd, name, O_RDONLY | O_NOFOLLOW |
		    O_CLOEXEC);
	if (f->base < 0)
		return errno == ENOENT ? 0 : -errno;
	snprintf(dname, sizeof(dname), "%s.d", name);
	f->dfd = openat(f->r->cowfd, dname, O_RDONLY | O_NOFOLLOW |
	    O_CLOEXEC);
	if (f->dfd < 0)
		return errno == ENOENT ? -EIO : -errno;
	rc = read_full(f->dfd, hdr, sizeof(hdr), 0, &got);
	if (rc < 0)
		return rc;
	if (fs_cow_header_decode(hdr, got, &f->unit) < 0)
		return -EIO;
	nunits = ((uint64_t)f->csize + f->unit - 1) / f->unit;
	f->area = (off_t)((FS_COW_HDR + nunits + 4095) / 4096 * 4096);
	return 0;
}

/*
 * Reads map bytes of units k.. into m (n of them): a byte not yet
 * written reads 0.  0, -EIO (a byte neither 0 nor 1), or -errno.
 */
static int
map_read(struct cf_fs_rfile *f, uint64_t k, unsigned char *m, size_t n)
{
	size_t got, i;
	int rc;

	rc = read_full(f->dfd, m, n, FS_COW_HDR + (off_t)k, &got);
	if (rc < 0)
		return rc;
	memset(m + got, 0, n - got);
	for (i = 0; i < n; i++)
		if (m[i] > 1)
			return -EIO;
	return 0;
}

/*
 * pread of the farm file's bytes: read_full, or for a delta the live
 * file's bytes first, then the map, then the saved units over them.  The
 * daemon saves a unit and marks it before it changes the live file, so
 * a unit read changed is always found marked.
 */
static int
rf_read(struct cf_fs_rfile *f, void *buf, size_t len, off_t off,
    size_t *got)
{
	unsigned char m[256], *p = buf;
	uint64_t k, k1, j;
	size_t n, live, g;
	off_t a, b;
	int rc, whole = 1;

	if (f->base < 0)
		return read_full(f->fd, buf, len, off, got);
	*got = 0;
	if (off >= f->csize || len == 0)
		return 0;
	if ((off_t)len > f->csize - off)
		len = (size_t)(f->csize - off);
	rc = read_full(f->base, buf, len, off, &live);
	if (rc < 0)
		return rc;
	k1 = (uint64_t)(off + (off_t)len - 1) / f->unit;
	for (k = (uint64_t)off / f->unit; k <= k1; k += n) {
		n = k1 - k + 1 > sizeof(m) ? sizeof(m) : (size_t)(k1 - k + 1);
		rc = map_read(f, k, m, n);
		if (rc < 0)
			return rc;
		for (j = 0; j < n; j++) {
			a = (off_t)(k + j) * f->unit;
			b = a + f->unit;
			if (a < off)
				a = off;
			if (b > off + (off_t)len)
				b = off + (off_t)len;
			if (m[j] == 0) {
				/* Not saved: the live file must hold it. */
				if (b > off + (off_t)live)
					whole = 0;
				continue;
			}
			rc = read_full(f->dfd, p + (a - off), (size_t)(b - a),
			    f->area + a, &g);
			if (rc < 0)
				return rc;
			if (g != (size_t)(b - a))
				return -EIO;	/* a saved unit is whole */
		}
	}
	*got = whole ? len : live;
	return 0;
}

/* 1 and *ks if a unit in [k0, k1] of f's delta is saved, 0 if none. */
static int
first_saved(struct cf_fs_rfile *f, uint64_t k0, uint64_t k1, uint64_t *ks)
{
	unsigned char m[4096];
	uint64_t k;
	size_t n, j;
	int rc;

	for (k = k0; k <= k1; k += n) {
		n = k1 - k + 1 > sizeof(m) ? sizeof(m) : (size_t)(k1 - k + 1);
		rc = map_read(f, k, m, n);
		if (rc < 0)
			return rc;
		for (j = 0; j < n; j++) {
			if (m[j]) {
				*ks = k + j;
				return 1;
			}
		}
	}
	return 0;
}

/*
 * lseek(SEEK_DATA or SEEK_HOLE) over the farm file's bytes: for a delta,
 * the live file's where no unit is saved, cow/INO.d's (which keeps the
 * holes it saved) in a saved unit.  -1 with errno, as lseek.
 */
static off_t
rf_seek(struct cf_fs_rfile *f, off_t pos, int whence)
{
	uint64_t ks, kend;
	off_t x, y, us, ue;
	int rc;

	if (f->base < 0)
		return lseek(f->fd, pos, whence);
	for (;;) {
		if (pos >= f->csize) {
			if (whence == SEEK_HOLE)
				return f->csize;
			errno = ENXIO;
			return -1;
		}
		x = lseek(f->base, pos, whence);
		if (x < 0 && errno != ENXIO)
			return -1;
		if (x < 0)	/* at or past the live file's end */
			x = whence == SEEK_DATA ? f->csize : pos;
		if (x > f->csize)
			x = f->csize;
		kend = (uint64_t)(x < f->csize ? x : f->csize - 1) / f->unit;
		rc = first_saved(f, (uint64_t)pos / f->unit, kend, &ks);
		if (rc < 0) {
			errno = -rc;
			return -1;
		}
		if (rc == 0) {
			/* The live file holds everything before x. */
			if (whence == SEEK_DATA && x >= f->csize) {
				errno = ENXIO;
				return -1;
			}
			return x;
		}
		/* Before unit ks the live file had no match: look in it. */
		us = (off_t)ks * f->unit;
		if (us < pos)
			us = pos;
		ue = ((off_t)ks + 1) * f->unit;
		if (ue > f->csize)
			ue = f->csize;
		y = lseek(f->dfd, f->area + us, whence);
		if (y < 0 && errno != ENXIO)
			return -1;
		y = y < 0 ? ue : y - f->area;
		if (y < ue)
			return y;
		pos = ue;
	}
}

int
cf_fs_rfile_open(struct cf_fs_rfile **out, const struct cf_fs_rdir *d,
    const char *name)
{
	unsigned char hbuf[CF_FS_HEADER_BYTES];
	char enc[NAME_MAX + 1];
	struct cf_fs_rfile *f;
	struct cf_fs_header h;
	struct timespec now;
	size_t got;
	uint64_t gen;
	unsigned flags;
	int rc;

	*out = NULL;
	rc = stored_name(d, name, enc);
	if (rc < 0)
		return rc;
	f = calloc(1, sizeof(*f));
	if (f == NULL)
		return -ENOMEM;
	f->r = d->r;
	f->base = f->dfd = -1;
	/* The clock before the stat: errs towards calling a file racy. */
	clock_gettime(CLOCK_REALTIME, &now);
	/* Backups should not touch atimes; O_NOATIME needs ownership. */
	f->fd = open_regular(d->fd, enc, O_NOATIME, &f->st0);
	if (f->fd < 0) {
		rc = f->fd;
		goto out;
	}
	/*
	 * A change within one tick of the file system's clock after this
	 * stat may keep mtime and ctime as they are: only a file last
	 * changed at least a tick ago can be checked by its times.
	 */
	f->racy = (long long)(now.tv_sec - f->st0.st_ctim.tv_sec) *
	    1000000000LL + (now.tv_nsec - f->st0.st_ctim.tv_nsec) < RACY_NS;
	f->csize = f->st0.st_size;
	rc = delta_open(f);
	if (rc < 0)
		goto out;
	/*
	 * A delta's farm file got its times and xattrs before the daemon
	 * linked it into the farm and never changes after; its bytes are
	 * merged in an order that needs no times.  Fresh times are no
	 * reason to read it again (a large file changed during a backup
	 * would otherwise be read twice or three times).
	 */
	if (f->base >= 0)
		f->racy = 0;
	if (size_damaged(f->r, f->csize)) {
		rc = -EIO;
		goto out;
	}
	f->psize = cf_fs_plain_size(f->r->keys->cipher, f->csize);
	f->nblocks = ((uint64_t)f->psize + CF_FS_BLOCK - 1) / CF_FS_BLOCK;
	if (f->csize > 0) {
		rc = rf_read(f, hbuf, sizeof(hbuf), 0, &got);
		if (rc < 0)
			goto out;
		if (got != sizeof(hbuf)) {
			rc = -EAGAIN;	/* shrank since the stat */
			goto out;
		}
		rc = cf_fs_header_decode(&h, hbuf, got);
		if (rc < 0)
			goto out;
		/* [FS-HDR-5]: one cipher per store in v1. */
		if (h.cipher != f->r->keys->cipher) {
			rc = -EPROTO;
			goto out;
		}
		f->ctx = __atomic_exchange_n(&f->r->spare, NULL,
		    __ATOMIC_ACQ_REL);
		if (f->ctx != NULL &&
		    cf_fs_file_ctx_reset(f->ctx, f->r->keys, &h) < 0) {
			cf_fs_file_ctx_free(f->ctx);
			f->ctx = NULL;
		}
		if (f->ctx == NULL) {
			rc = cf_fs_file_ctx_new(&f->ctx, f->r->keys, &h);
			if (rc < 0)
				goto out;
		}
		memcpy(f->file_id, h.file_id, sizeof(f->file_id));
		/* [FS-GEN-9] a dense file has no holes; without a value (or
		 * with a bad one) it may have some.  [FS-READ-11] with the
		 * log: an older copy, or a forged value, is damage. */
		rc = file_gen(f, &gen, &flags);
		f->gen_rc = rc;		/* cf_fs_rfile_gen: not read twice */
		f->gen = gen;
		if (f->r->gens != NULL && ((rc < 0 && rc != -ENODATA) ||
		    gen < fs_gen_get(f->r->gens, f->file_id))) {
			rc = -EIO;
			goto out;
		}
		f->dense = rc == 0 && (flags & CF_FS_GEN_DENSE) != 0;
		cf_fs_file_ctx_set_dense(f->ctx, f->dense);
	}
	*out = f;
	f = NULL;
	rc = 0;
out:
	cf_fs_rfile_free(f);
	return rc;
}

void
cf_fs_rfile_free(struct cf_fs_rfile *f)
{
	if (f == NULL)
		return;
	if (f->fd >= 0)
		close(f->fd);
	if (f->base >= 0)
		close(f->base);
	if (f->dfd >= 0)
		close(f->dfd);
	/* Kept for the next open; the one it replaces is freed. */
	if (f->ctx != NULL)
		cf_fs_file_ctx_free(__atomic_exchange_n(&f->r->spare, f->ctx,
		    __ATOMIC_ACQ_REL));
	free(f->cbuf);
	free(f);
}

void
cf_fs_rfile_stat(const struct cf_fs_rfile *f, struct stat *st)
{
	*st = f->st0;
	st->st_size = f->psize;
}

int
cf_fs_rfile_check(struct cf_fs_rfile *f)
{
	struct stat st;

	if (fstat(f->fd, &st) != 0)
		return -errno;
	if (!same_version(&f->st0, &st) || f->racy)
		return -EAGAIN;
	return 0;
}

/* Reads and checks the generation xattr of the object at path. */
static int
gen_of(const struct cf_fs_reader *r, const struct xref *x,
    unsigned char file_id[CF_KS_ID_BYTES], uint64_t *gen, unsigned *flags)
{
	unsigned char buf[CF_FS_GEN_BYTES + 1];
	ssize_t n;

	n = xr_get(x, CF_FS_GEN_XATTR, buf, sizeof(buf));
	if (n < 0)
		return errno == ERANGE ? -EPROTO : errno == ENOTSUP ?
		    -ENODATA : -errno;
	return cf_fs_gen_decode(r->keys, buf, (size_t)n, file_id, gen, flags);
}

int
cf_fs_rfile_gen(const struct cf_fs_rfile *f,
    unsigned char file_id[CF_KS_ID_BYTES], uint64_t *gen)
{
	*gen = 0;
	if (f->ctx == NULL)
		return -ENODATA;	/* no header: nothing to identify */
	/*
	 * Read at the open (file_gen: authenticated, and checked against
	 * the header's file id), which is before any content is read.
	 */
	if (f->gen_rc < 0)
		return f->gen_rc;
	memcpy(file_id, f->file_id, CF_KS_ID_BYTES);
	*gen = f->gen;
	return 0;
}

int
cf_fs_rdir_gen(const struct cf_fs_rdir *d, const char *name,
    unsigned char file_id[CF_KS_ID_BYTES], uint64_t *gen)
{
	struct xref x;
	int rc;

	*gen = 0;
	if (name == NULL)
		return -EINVAL;
	rc = xattr_ref(d, name, &x);
	if (rc == 0)
		rc = gen_of(d->r, &x, file_id, gen, NULL);
	/* [FS-READ-11] older than the log: not this file's current state. */
	if (rc == 0 && d->r->gens != NULL &&
	    *gen < fs_gen_get(d->r->gens, file_id))
		rc = -ESTALE;
	if (rc < 0)
		*gen = 0;
	return rc;
}

/* A damaged block: -EAGAIN instead if the file is changing. */
static int
block_failed(struct cf_fs_rfile *f, int rc)
{
	struct stat st;

	if (fstat(f->fd, &st) == 0 && (!same_version(&f->st0, &st) || f->racy))
		return -EAGAIN;
	return rc;
}

static int
cbuf_reserve(struct cf_fs_rfile *f, size_t len)
{
	unsigned char *p;

	if (f->cbufcap >= len)
		return 0;
	p = realloc(f->cbuf, len);
	if (p == NULL)
		return -ENOMEM;
	f->cbuf = p;
	f->cbufcap = len;
	return 0;
}

/* Backing offsets of sealed block blk: [*cs, *ce). */
static void
block_span(const struct cf_fs_rfile *f, uint64_t blk, off_t *cs, off_t *ce)
{
	*cs = CF_FS_HEADER_BYTES + (off_t)blk * f->r->cb;
	*ce = *cs + f->r->cb;
	if (*ce > f->csize)
		*ce = f->csize;
}

static void
set_bad(const struct cf_fs_rfile *f, struct cf_fs_rrange *bad, uint64_t blk)
{
	off_t end = ((off_t)blk + 1) * CF_FS_BLOCK;

	if (bad == NULL)
		return;
	bad->off = (off_t)blk * CF_FS_BLOCK;
	bad->len = (end > f->psize ? f->psize : end) - bad->off;
}

/*
 * Opens the sealed blocks [ba, bz) of a read of [off, end) (the whole
 * request's ciphertext in f->cbuf from backing offset cs0) into buf.
 * *fail gets the first block that does not open (UINT64_MAX: none), *frc
 * its error.  Threads may run disjoint ranges of one read at once: the
 * context is shared (cf_ks_aead is), cbuf only read.
 */
struct prange {
	struct cf_fs_rfile *f;
	unsigned char *buf;
	uint64_t b0, ba, bz, fail;
	off_t off, end, cs0;
	int frc;
};

static void
open_range(struct prange *p)
{
	struct cf_fs_rfile *f = p->f;
	unsigned char tmp[CF_FS_BLOCK], *dst;
	uint64_t b;
	off_t cs, ce, bstart;
	size_t skip, n, at;
	int rc;

	p->fail = UINT64_MAX;
	p->frc = 0;
	for (b = p->ba; b < p->bz; b++) {
		block_span(f, b, &cs, &ce);
		bstart = (off_t)b * CF_FS_BLOCK;
		skip = b == p->b0 ? (size_t)(p->off - bstart) : 0;
		at = b == p->b0 ? 0 : (size_t)(bstart - p->off);
		n = (size_t)(ce - cs) - f->r->ovh - skip;
		if (bstart + (off_t)skip + (off_t)n > p->end)
			n = (size_t)(p->end - bstart) - skip;
		/* Whole blocks decrypt in place in the caller's buffer. */
		dst = skip == 0 && n == (size_t)(ce - cs) - f->r->ovh ?
		    p->buf + at : tmp;
		rc = cf_fs_block_open(f->ctx, b, b == (uint64_t)(f->psize - 1) /
		    CF_FS_BLOCK, f->cbuf + (cs - p->cs0), (size_t)(ce - cs),
		    dst);
		if (rc < 0) {
			p->fail = b;
			p->frc = rc;
			break;
		}
		if (dst == tmp)
			memcpy(p->buf + at, tmp + skip, n);
	}
	sodium_memzero(tmp, sizeof(tmp));
}

/*
 * One helper thread for the process opens the second half of large
 * reads while the caller opens the first: a backup's walking thread
 * reads, decrypts and cuts every changed file alone, and on an
 * incremental backup the workers, which only hash known chunks, leave
 * the other core mostly idle (docs/backup.md, "Sixteenth session").
 * Whoever finds the helper busy (another reader) or unavailable opens
 * everything itself.
 */
#define PAR_MIN_BLOCKS 64U	/* 256 KiB: below, a handoff costs more */

static struct {
	pthread_mutex_t mu;
	pthread_cond_t go, done;
	struct prange *job;	/* set by the owner, cleared when done */
	int owned, ok;
} helper = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
    PTHREAD_COND_INITIALIZER, NULL, 0, 0 };
static pthread_once_t helper_once = PTHREAD_ONCE_INIT;
static uint64_t helper_reads;	/* __atomic */

uint64_t
cf_fs_rfile_parallel_reads(void)
{
	return __atomic_load_n(&helper_reads, __ATOMIC_RELAXED);
}

static void *
helper_main(void *arg)
{
	struct prange *p;

	(void)arg;
	pthread_mutex_lock(&helper.mu);
	for (;;) {
		while (helper.job == NULL)
			pthread_cond_wait(&helper.go, &helper.mu);
		p = helper.job;
		pthread_mutex_unlock(&helper.mu);
		open_range(p);
		pthread_mutex_lock(&helper.mu);
		helper.job = NULL;
		pthread_cond_signal(&helper.done);
	}
	return NULL;
}

/* A fork's child has no helper thread: it opens everything itself. */
static void
helper_child(void)
{
	helper.ok = 0;
}

static void
helper_start(void)
{
	pthread_attr_t a;
	pthread_t t;

	if (pthread_atfork(NULL, NULL, helper_child) != 0 ||
	    pthread_attr_init(&a) != 0)
		return;
	(void)pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	helper.ok = pthread_create(&t, &a, helper_main, NULL) == 0;
	pthread_attr_destroy(&a);
}

/* 1 if the caller now owns the helper (release with helper_wait). */
static int
helper_take(void)
{
	int got = 0;

	(void)pthread_once(&helper_once, helper_start);
	if (!helper.ok)
		return 0;
	pthread_mutex_lock(&helper.mu);	/* held only for moments */
	if (!helper.owned)
		helper.owned = got = 1;
	pthread_mutex_unlock(&helper.mu);
	return got;
}

static void
helper_wait(struct prange *p)
{
	pthread_mutex_lock(&helper.mu);
	while (helper.job == p)
		pthread_cond_wait(&helper.done, &helper.mu);
	helper.owned = 0;
	pthread_mutex_unlock(&helper.mu);
}

ssize_t
cf_fs_rfile_pread(struct cf_fs_rfile *f, void *buf, size_t len, off_t off,
    struct cf_fs_rrange *bad)
{
	struct prange a, h;
	uint64_t b0, b1, mid, fail;
	off_t end, cs0, ce1, cs, ce;
	size_t got, done;
	int rc, par = 0;

	if (bad != NULL)
		bad->off = bad->len = 0;
	if (off < 0)
		return -EINVAL;
	if (off >= f->psize || len == 0)
		return 0;
	if (len > CF_FS_RREAD_MAX)
		len = CF_FS_RREAD_MAX;
	end = f->psize - off < (off_t)len ? f->psize : off + (off_t)len;
	b0 = (uint64_t)off / CF_FS_BLOCK;
	b1 = (uint64_t)(end - 1) / CF_FS_BLOCK;
	block_span(f, b0, &cs0, &ce);
	block_span(f, b1, &cs, &ce1);
	rc = cbuf_reserve(f, (size_t)(ce1 - cs0));
	if (rc < 0)
		return rc;
	/* One read for the whole request, not one per block. */
	rc = rf_read(f, f->cbuf, (size_t)(ce1 - cs0), cs0, &got);
	if (rc < 0) {
		set_bad(f, bad, b0);
		return -EIO;
	}
	if (got != (size_t)(ce1 - cs0))
		return -EAGAIN;		/* shorter than at open */
	a = (struct prange){ f, buf, b0, b0, b1 + 1, 0, off, end, cs0, 0 };
	if (b1 - b0 + 1 >= PAR_MIN_BLOCKS && helper_take()) {
		/* The helper takes the second half; both write apart. */
		mid = b0 + (b1 - b0 + 1) / 2;
		h = a;
		h.ba = mid;
		a.bz = mid;
		pthread_mutex_lock(&helper.mu);
		helper.job = &h;
		pthread_cond_signal(&helper.go);
		pthread_mutex_unlock(&helper.mu);
		par = 1;
		__atomic_add_fetch(&helper_reads, 1, __ATOMIC_RELAXED);
	}
	open_range(&a);
	if (par) {
		helper_wait(&h);
		fail = a.fail != UINT64_MAX ? a.fail : h.fail;
		rc = a.fail != UINT64_MAX ? a.frc : h.frc;
	} else {
		fail = a.fail;
		rc = a.frc;
	}
	if (fail == UINT64_MAX)
		return (ssize_t)(end - off);
	/* What opened before the first block that did not. */
	done = fail == b0 ? 0 : (size_t)((off_t)fail * CF_FS_BLOCK - off);
	if (done > 0)
		return (ssize_t)done;
	/* No memory, or a library failure: not damage. */
	if (rc != -EBADMSG)
		return rc == -ENOMEM ? -ENOMEM : -EIO;
	set_bad(f, bad, fail);
	return block_failed(f, -EBADMSG);
}

/* Block holding backing offset pos (pos >= the header). */
static uint64_t
block_at(const struct cf_fs_rfile *f, off_t pos)
{
	return (uint64_t)((pos - CF_FS_HEADER_BYTES) / f->r->cb);
}

/*
 * 1 if sealed block blk is certainly a hole: no allocated backing byte,
 * or (read_it) all its bytes zero.  *next_data gets the first allocated
 * backing offset at or after the block (f->csize if none).
 */
static int
block_is_hole(struct cf_fs_rfile *f, uint64_t blk, int read_it,
    off_t *next_data)
{
	off_t cs, ce, d;
	size_t got;

	block_span(f, blk, &cs, &ce);
	d = rf_seek(f, cs, SEEK_DATA);
	if (d < 0)
		d = errno == ENXIO ? f->csize : cs;	/* unknown: data */
	*next_data = d;
	if (d >= ce)
		return 1;
	if (!read_it || cbuf_reserve(f, (size_t)f->r->cb) < 0 ||
	    rf_read(f, f->cbuf, (size_t)(ce - cs), cs, &got) < 0 ||
	    got != (size_t)(ce - cs))
		return 0;
	return sodium_is_zero(f->cbuf, got);
}

int
cf_fs_rfile_next_data(struct cf_fs_rfile *f, off_t off, off_t *data_off,
    off_t *data_end)
{
	uint64_t b, k;
	off_t d, h, cs, ce;

	*data_off = *data_end = 0;
	if (off < 0)
		return -EINVAL;
	if (off >= f->psize)
		return -ENXIO;
	if (f->dense) {
		/* No holes: an all-zero block is damage, found when read. */
		*data_off = off;
		*data_end = f->psize;
		return 0;
	}
	/* The first block with data: skip unallocated runs in one step. */
	for (b = (uint64_t)off / CF_FS_BLOCK; b < f->nblocks; b++) {
		if (!block_is_hole(f, b, 1, &d))
			break;
		if (d >= f->csize)
			return -ENXIO;
		block_span(f, b, &cs, &ce);
		if (d >= ce)
			b = block_at(f, d) - 1;	/* b++ lands on d's block */
	}
	if (b >= f->nblocks)
		return -ENXIO;
	*data_off = (off_t)b * CF_FS_BLOCK > off ? (off_t)b * CF_FS_BLOCK : off;
	/*
	 * Its end: the first later block that is a hole.  Only blocks where
	 * a backing hole begins are looked at (one read at most per hole):
	 * allocated all-zero blocks elsewhere stay in the range.
	 */
	for (k = b + 1; k < f->nblocks; k++) {
		block_span(f, k, &cs, &ce);
		h = rf_seek(f, cs, SEEK_HOLE);
		if (h < 0 || h >= f->csize)
			break;
		k = block_at(f, h);
		if (k >= f->nblocks)
			break;
		if (block_is_hole(f, k, 1, &d)) {
			*data_end = (off_t)k * CF_FS_BLOCK;
			return 0;
		}
	}
	*data_end = f->psize;
	return 0;
}
