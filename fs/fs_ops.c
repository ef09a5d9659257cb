/*
 * fs_ops.c - the FUSE daemon of one tenant's encrypted store.
 *
 * Low-level libfuse API in the style of libfuse's passthrough_ll: every
 * inode the kernel knows is an O_PATH descriptor of its backing object,
 * found by (st_dev, st_ino) in a hash table; every path is resolved with
 * *at() calls relative to a parent descriptor, never as a string.  Names
 * are encrypted on the way down and decrypted on the way up; regular file
 * contents go through fs_crypt.c a block at a time.
 *
 * Locking: fs->mutex protects the inode table and lookup counts.  Each
 * inode's rwlock protects its crypto context and serialises the
 * read-modify-write of partial blocks: reads share it, writes and
 * truncates hold it exclusively.  Lock order: inode->rw, then fs->mutex.
 *
 * Not yet here (see the issue notes): names longer than CF_FS_NAME_MAX,
 * xattrs outside the user namespace, fallocate, writeback cache, parallel crypto within a request.
 */
#define FUSE_USE_VERSION 312

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <fuse_lowlevel.h>
#include <sodium.h>

#include "fs_int.h"

#define HASH_BUCKETS 65536U
#define AUDIT_MAX 1000		/* integrity records per mount, at most */

struct fs_inode {
	struct fs_inode *next;		/* hash chain, protected by mutex */
	int fd;				/* O_PATH to the backing object */
	ino_t ino;
	dev_t dev;
	uint64_t nlookup;		/* protected by fs->mutex */
	pthread_rwlock_t rw;
	/* Protected by rw: */
	struct cf_fs_file_ctx *ctx;	/* regular files while open */
	unsigned opens;			/* open handles of this inode */
	unsigned char file_id[CF_KS_ID_BYTES];
	int have_diriv;			/* directories */
	unsigned char diriv[CF_FS_DIRIV_BYTES];
};

struct fs {
	pthread_mutex_t mutex;
	struct fs_inode root;
	struct fs_inode *table[HASH_BUCKETS];
	const struct cf_fs_keys *keys;
	const struct cf_fs_mount_opts *opts;
	pthread_mutex_t audit_mutex;
	int audits;
	off_t cb;			/* ciphertext bytes per full block */
	size_t ovh;			/* nonce + tag */
};

static struct fs *
fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct fs_inode *
inode_of(fuse_req_t req, fuse_ino_t ino)
{
	if (ino == FUSE_ROOT_ID)
		return &fs_of(req)->root;
	return (struct fs_inode *)(uintptr_t)ino;
}

static size_t
bucket(ino_t ino, dev_t dev)
{
	return (size_t)((ino * 2654435761U) ^ dev) % HASH_BUCKETS;
}

static void
audit(struct fs *fs, const char *event, const struct fs_inode *in,
    long long blk)
{
	char id[CF_KS_ID_BYTES * 2 + 1];

	if (fs->opts->home == NULL)
		return;
	sodium_bin2hex(id, sizeof(id), in->file_id, CF_KS_ID_BYTES);
	pthread_mutex_lock(&fs->audit_mutex);
	if (fs->audits < AUDIT_MAX) {
		struct cf_ks_audit_field f[] = {
			{ "tenant", fs->opts->tenant, 0 },
			{ "file_id", id, 0 },
			{ "block", NULL, blk },
		};

		fs->audits++;
		(void)!cf_ks_audit_append(fs->opts->home, event, f, 3);
	}
	pthread_mutex_unlock(&fs->audit_mutex);
}

/* ---- attributes --------------------------------------------------------- */

/* Converts backing attributes to what the tenant sees. */
static void
plain_attr(struct fs *fs, int fd, struct stat *st)
{
	if (S_ISREG(st->st_mode)) {
		st->st_size = cf_fs_plain_size(fs->keys->cipher, st->st_size);
	} else if (S_ISLNK(st->st_mode)) {
		/* base64 without padding: 4 chars per 3 bytes. */
		off_t raw = st->st_size * 3 / 4;

		st->st_size = raw > 40 ? raw - 40 : 0;
	}
	(void)fd;
}

static int
stat_fd(int fd, struct stat *st)
{
	if (fstatat(fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0)
		return -errno;
	return 0;
}

/* ---- directory IVs ------------------------------------------------------ */

static int
load_diriv(struct fs_inode *in)
{
	int fd, rc = 0;
	ssize_t n;

	pthread_rwlock_rdlock(&in->rw);
	if (in->have_diriv) {
		pthread_rwlock_unlock(&in->rw);
		return 0;
	}
	pthread_rwlock_unlock(&in->rw);
	pthread_rwlock_wrlock(&in->rw);
	if (!in->have_diriv) {
		fd = openat(in->fd, CF_FS_DIRIV_NAME, O_RDONLY | O_CLOEXEC |
		    O_NOFOLLOW);
		if (fd < 0) {
			rc = -EIO;	/* a directory without IV: damage */
		} else {
			n = pread(fd, in->diriv, CF_FS_DIRIV_BYTES, 0);
			if (n != CF_FS_DIRIV_BYTES)
				rc = -EIO;
			else
				in->have_diriv = 1;
			close(fd);
		}
	}
	pthread_rwlock_unlock(&in->rw);
	return rc;
}

static int
write_diriv(int dirfd)
{
	unsigned char iv[CF_FS_DIRIV_BYTES];
	int fd, rc = 0;

	randombytes_buf(iv, sizeof(iv));
	fd = openat(dirfd, CF_FS_DIRIV_NAME, O_WRONLY | O_CREAT | O_EXCL |
	    O_CLOEXEC | O_NOFOLLOW, 0400);
	if (fd < 0)
		return -errno;
	if (write(fd, iv, sizeof(iv)) != (ssize_t)sizeof(iv) || fsync(fd) != 0)
		rc = -EIO;
	close(fd);
	return rc;
}

/* Encrypts name for directory parent into enc. */
static int
enc_name(struct fs *fs, struct fs_inode *parent, const char *name, char *enc,
    size_t cap)
{
	int rc = load_diriv(parent);

	if (rc < 0)
		return rc;
	return cf_fs_name_encrypt(fs->keys, parent->diriv, name, enc, cap);
}

/* ---- inode table ---------------------------------------------------------- */

static void
inode_free(struct fs_inode *in)
{
	close(in->fd);
	cf_fs_file_ctx_free(in->ctx);
	pthread_rwlock_destroy(&in->rw);
	free(in);
}

/* Looks up parent/enc and returns a fuse entry with a referenced inode. */
static int
do_lookup(struct fs *fs, struct fs_inode *parent, const char *enc,
    struct fuse_entry_param *e)
{
	struct fs_inode *in, **slot;
	int fd, rc;

	memset(e, 0, sizeof(*e));
	e->attr_timeout = 1.0;
	e->entry_timeout = 1.0;
	fd = openat(parent->fd, enc, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	rc = stat_fd(fd, &e->attr);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	pthread_mutex_lock(&fs->mutex);
	slot = &fs->table[bucket(e->attr.st_ino, e->attr.st_dev)];
	for (in = *slot; in != NULL; in = in->next)
		if (in->ino == e->attr.st_ino && in->dev == e->attr.st_dev)
			break;
	if (in != NULL) {
		in->nlookup++;
		close(fd);
	} else {
		in = calloc(1, sizeof(*in));
		if (in == NULL) {
			pthread_mutex_unlock(&fs->mutex);
			close(fd);
			return -ENOMEM;
		}
		in->fd = fd;
		in->ino = e->attr.st_ino;
		in->dev = e->attr.st_dev;
		in->nlookup = 1;
		pthread_rwlock_init(&in->rw, NULL);
		in->next = *slot;
		*slot = in;
	}
	pthread_mutex_unlock(&fs->mutex);
	plain_attr(fs, in->fd, &e->attr);
	e->ino = (uintptr_t)in;
	return 0;
}

static void
unref(struct fs *fs, struct fs_inode *in, uint64_t n)
{
	struct fs_inode **p;

	if (in == &fs->root)
		return;
	pthread_mutex_lock(&fs->mutex);
	if (n > in->nlookup)
		n = in->nlookup;	/* kernel bug guard */
	in->nlookup -= n;
	if (in->nlookup == 0) {
		for (p = &fs->table[bucket(in->ino, in->dev)]; *p != NULL;
		    p = &(*p)->next) {
			if (*p == in) {
				*p = in->next;
				break;
			}
		}
		pthread_mutex_unlock(&fs->mutex);
		inode_free(in);
		return;
	}
	pthread_mutex_unlock(&fs->mutex);
}

static void
op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;
	char enc[260];
	int rc;

	rc = enc_name(fs, inode_of(req, parent), name, enc, sizeof(enc));
	if (rc == 0)
		rc = do_lookup(fs, inode_of(req, parent), enc, &e);
	if (rc == -ENOENT) {
		/* Negative entry, cached like a positive one. */
		memset(&e, 0, sizeof(e));
		e.entry_timeout = 1.0;
		fuse_reply_entry(req, &e);
		return;
	}
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_entry(req, &e);
}

static void
op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t n)
{
	unref(fs_of(req), inode_of(req, ino), n);
	fuse_reply_none(req);
}

static void
op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *f)
{
	size_t i;

	for (i = 0; i < count; i++)
		unref(fs_of(req), inode_of(req, f[i].ino), f[i].nlookup);
	fuse_reply_none(req);
}

static void
op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_inode *in = inode_of(req, ino);
	struct stat st;
	int rc;

	(void)fi;
	rc = stat_fd(in->fd, &st);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	plain_attr(fs_of(req), in->fd, &st);
	fuse_reply_attr(req, &st, 1.0);
}

/* ---- file contents --------------------------------------------------------- */

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

static int
write_full(int fd, const void *buf, size_t len, off_t off)
{
	ssize_t n;
	size_t done = 0;

	while (done < len) {
		n = pwrite(fd, (const char *)buf + done, len - done,
		    off + (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		done += (size_t)n;
	}
	return 0;
}

/*
 * Makes sure in->ctx is set for the file open as fd: reads the header, or
 * writes a new one if the backing file is empty and create is set.
 * Caller holds in->rw exclusively (or shared when create is 0 and ctx is
 * already set).
 */
static int
ensure_ctx(struct fs *fs, struct fs_inode *in, int fd, int create)
{
	unsigned char buf[CF_FS_HEADER_BYTES];
	struct cf_fs_header h;
	size_t got;
	int rc;

	if (in->ctx != NULL)
		return 0;
	rc = read_full(fd, buf, sizeof(buf), 0, &got);
	if (rc < 0)
		return rc;
	if (got == 0) {
		if (!create)
			return 0;	/* empty file, no header yet */
		h.cipher = fs->keys->cipher;
		h.key_version = fs->keys->key_version;
		randombytes_buf(h.file_id, sizeof(h.file_id));
		cf_fs_header_encode(&h, buf);
		rc = write_full(fd, buf, sizeof(buf), 0);
		if (rc < 0)
			return rc;
	} else if (got < sizeof(buf) ||
	    cf_fs_header_decode(&h, buf, got) < 0) {
		memset(in->file_id, 0, sizeof(in->file_id));
		audit(fs, "fs.integrity", in, -1);
		return -EIO;
	}
	memcpy(in->file_id, h.file_id, sizeof(in->file_id));
	if (h.cipher != fs->keys->cipher) {
		audit(fs, "fs.integrity", in, -1);
		return -EIO;
	}
	return cf_fs_file_ctx_new(&in->ctx, fs->keys, &h);
}

static int
backing_size(int fd, off_t *csize)
{
	struct stat st;

	*csize = 0;
	if (fstat(fd, &st) != 0)
		return -errno;
	*csize = st.st_size;
	return 0;
}

/*
 * A backing size no encoder produces (a stub header, or a last block no
 * longer than its own nonce and tag) means the file was cut: damage.
 */
static int
size_damaged(const struct fs *fs, off_t csize)
{
	off_t rem;

	if (csize == 0)
		return 0;
	if (csize < (off_t)CF_FS_HEADER_BYTES)
		return 1;
	rem = (csize - CF_FS_HEADER_BYTES) % fs->cb;
	return rem > 0 && rem <= (off_t)fs->ovh;
}

/* The plaintext size of the open file fd; -EIO (audited) if damaged. */
static int
plain_size(struct fs *fs, struct fs_inode *in, int fd, off_t *psize)
{
	off_t csize;
	int rc;

	*psize = 0;
	rc = backing_size(fd, &csize);
	if (rc < 0)
		return rc;
	if (size_damaged(fs, csize)) {
		audit(fs, "fs.integrity", in, -1);
		return -EIO;
	}
	*psize = cf_fs_plain_size(fs->keys->cipher, csize);
	return 0;
}

/* Reads and opens block blk into out (4096 bytes); *len gets its size. */
static int
read_block(struct fs *fs, struct fs_inode *in, int fd, uint64_t blk,
    unsigned char *out, size_t *len)
{
	unsigned char cbuf[CF_FS_BLOCK + 64];
	size_t got;
	int rc;

	*len = 0;
	rc = read_full(fd, cbuf, (size_t)fs->cb, CF_FS_HEADER_BYTES +
	    (off_t)blk * fs->cb, &got);
	if (rc < 0)
		return rc;
	if (got == 0)
		return 0;
	rc = cf_fs_block_open(in->ctx, blk, cbuf, got, out);
	if (rc < 0 || got <= fs->ovh) {
		audit(fs, "fs.integrity", in, (long long)blk);
		return -EIO;
	}
	*len = got - fs->ovh;
	return 0;
}

/* Truncates to psize; caller holds in->rw exclusively. */
static int
do_truncate(struct fs *fs, struct fs_inode *in, int fd, off_t newsize)
{
	unsigned char pbuf[CF_FS_BLOCK], cbuf[CF_FS_BLOCK + 64];
	off_t csize = 0, psize;
	uint64_t blk;
	size_t len, keep;
	int rc;

	rc = backing_size(fd, &csize);
	if (rc < 0)
		return rc;
	psize = cf_fs_plain_size(fs->keys->cipher, csize);
	if (newsize == psize && csize != 0)
		return 0;
	if (newsize == 0) {
		if (ftruncate(fd, csize >= CF_FS_HEADER_BYTES ?
		    CF_FS_HEADER_BYTES : 0) != 0)
			return -errno;
		return 0;
	}
	rc = ensure_ctx(fs, in, fd, 1);
	if (rc < 0)
		return rc;
	if (newsize < psize) {
		blk = (uint64_t)(newsize / CF_FS_BLOCK);
		keep = (size_t)(newsize % CF_FS_BLOCK);
		if (keep > 0) {
			rc = read_block(fs, in, fd, blk, pbuf, &len);
			if (rc < 0)
				return rc;
			rc = cf_fs_block_seal(in->ctx, blk, pbuf, keep, cbuf);
			if (rc < 0)
				return rc;
			rc = write_full(fd, cbuf, keep + fs->ovh,
			    CF_FS_HEADER_BYTES + (off_t)blk * fs->cb);
			if (rc < 0)
				return rc;
		}
	} else if (psize % CF_FS_BLOCK != 0) {
		/* Grow the old last block to its new length with zeros;
		 * blocks after it become holes. */
		blk = (uint64_t)(psize / CF_FS_BLOCK);
		rc = read_block(fs, in, fd, blk, pbuf, &len);
		if (rc < 0)
			return rc;
		keep = newsize - (off_t)blk * CF_FS_BLOCK >= CF_FS_BLOCK ?
		    CF_FS_BLOCK : (size_t)(newsize - (off_t)blk * CF_FS_BLOCK);
		memset(pbuf + len, 0, keep - len);
		rc = cf_fs_block_seal(in->ctx, blk, pbuf, keep, cbuf);
		if (rc < 0)
			return rc;
		rc = write_full(fd, cbuf, keep + fs->ovh, CF_FS_HEADER_BYTES +
		    (off_t)blk * fs->cb);
		if (rc < 0)
			return rc;
	}
	if (ftruncate(fd, cf_fs_cipher_size(fs->keys->cipher, newsize)) != 0)
		return -errno;
	return 0;
}

static void
op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
    struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *in = inode_of(req, ino);
	int fd = (int)fi->fh, rc;
	unsigned char *cbuf = NULL, *pbuf = NULL;
	off_t psize, end;
	uint64_t fb, lb, b;
	size_t got, clen, ctot;

	/* Reads share the lock; only the first one sets up the context. */
	pthread_rwlock_rdlock(&in->rw);
	if (in->ctx == NULL) {
		pthread_rwlock_unlock(&in->rw);
		pthread_rwlock_wrlock(&in->rw);
		rc = ensure_ctx(fs, in, fd, 0);
		pthread_rwlock_unlock(&in->rw);
		pthread_rwlock_rdlock(&in->rw);
		if (rc < 0)
			goto out;
	}
	rc = plain_size(fs, in, fd, &psize);
	if (rc < 0)
		goto out;
	if (off >= psize || size == 0 || in->ctx == NULL) {
		rc = 0;
		fuse_reply_buf(req, NULL, 0);
		goto out_replied;
	}
	end = off + (off_t)size > psize ? psize : off + (off_t)size;
	fb = (uint64_t)(off / CF_FS_BLOCK);
	lb = (uint64_t)((end - 1) / CF_FS_BLOCK);
	ctot = (size_t)(lb - fb + 1) * (size_t)fs->cb;
	cbuf = malloc(ctot);
	pbuf = malloc((size_t)(lb - fb + 1) * CF_FS_BLOCK);
	if (cbuf == NULL || pbuf == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	rc = read_full(fd, cbuf, ctot, CF_FS_HEADER_BYTES +
	    (off_t)fb * fs->cb, &got);
	if (rc < 0)
		goto out;
	for (b = fb; b <= lb; b++) {
		size_t at = (size_t)(b - fb) * (size_t)fs->cb;

		if (got <= at) {
			rc = -EIO;	/* shorter than its size says */
			goto out;
		}
		clen = got - at < (size_t)fs->cb ? got - at : (size_t)fs->cb;
		rc = cf_fs_block_open(in->ctx, b, cbuf + at, clen,
		    pbuf + (size_t)(b - fb) * CF_FS_BLOCK);
		if (rc < 0) {
			audit(fs, "fs.integrity", in, (long long)b);
			rc = -EIO;
			goto out;
		}
	}
	fuse_reply_buf(req, (const char *)pbuf + (off - (off_t)fb *
	    CF_FS_BLOCK), (size_t)(end - off));
	goto out_replied;
out:
	fuse_reply_err(req, -rc);
out_replied:
	pthread_rwlock_unlock(&in->rw);
	free(cbuf);
	free(pbuf);
}

static void
op_write(fuse_req_t req, fuse_ino_t ino, const char *data, size_t size,
    off_t off, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *in = inode_of(req, ino);
	int fd = (int)fi->fh, rc;
	unsigned char *cbuf = NULL, pbuf[CF_FS_BLOCK];
	off_t psize, end = off + (off_t)size;
	uint64_t fb, lb, b;
	size_t ctot = 0;

	if (size == 0) {
		fuse_reply_write(req, 0);
		return;
	}
	pthread_rwlock_wrlock(&in->rw);
	rc = ensure_ctx(fs, in, fd, 1);
	if (rc < 0)
		goto out;
	rc = plain_size(fs, in, fd, &psize);
	if (rc < 0)
		goto out;
	if (off > psize) {
		rc = do_truncate(fs, in, fd, off);
		if (rc < 0)
			goto out;
		psize = off;
	}
	fb = (uint64_t)(off / CF_FS_BLOCK);
	lb = (uint64_t)((end - 1) / CF_FS_BLOCK);
	cbuf = malloc((size_t)(lb - fb + 1) * (size_t)fs->cb);
	if (cbuf == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (b = fb; b <= lb; b++) {
		off_t bs = (off_t)b * CF_FS_BLOCK;
		off_t ws = off > bs ? off : bs;
		off_t we = end < bs + CF_FS_BLOCK ? end : bs + CF_FS_BLOCK;
		size_t oldlen = bs < psize ? (size_t)((psize - bs) >
		    CF_FS_BLOCK ? CF_FS_BLOCK : psize - bs) : 0;
		size_t newlen = (size_t)(we - bs) > oldlen ?
		    (size_t)(we - bs) : oldlen;
		size_t len;

		if (ws > bs || (size_t)(we - bs) < oldlen) {
			/* Partial block: merge with what is there. */
			rc = read_block(fs, in, fd, b, pbuf, &len);
			if (rc < 0)
				goto out;
			if (len < oldlen)
				memset(pbuf + len, 0, oldlen - len);
		}
		memcpy(pbuf + (ws - bs), data + (ws - off), (size_t)(we - ws));
		rc = cf_fs_block_seal(in->ctx, b, pbuf, newlen, cbuf + ctot);
		if (rc < 0)
			goto out;
		ctot += newlen + fs->ovh;
	}
	rc = write_full(fd, cbuf, ctot, CF_FS_HEADER_BYTES + (off_t)fb * fs->cb);
	if (rc < 0)
		goto out;
	fuse_reply_write(req, size);
	goto done;
out:
	fuse_reply_err(req, -rc);
done:
	pthread_rwlock_unlock(&in->rw);
	sodium_memzero(pbuf, sizeof(pbuf));
	free(cbuf);
}

/*
 * The kernel may keep an inode (and so its file context) across opens;
 * check on every open that the header on disk is still the one the
 * context was made from, so a replaced header is noticed.  Caller holds
 * in->rw exclusively.
 */
static int
recheck_header(struct fs *fs, struct fs_inode *in, int fd)
{
	unsigned char buf[CF_FS_HEADER_BYTES];
	struct cf_fs_header h;
	size_t got;
	int rc;

	if (in->ctx == NULL)
		return 0;
	rc = read_full(fd, buf, sizeof(buf), 0, &got);
	if (rc < 0)
		return rc;
	if (got == 0) {
		/* Emptied behind our back: the next write makes a header. */
		cf_fs_file_ctx_free(in->ctx);
		in->ctx = NULL;
		return 0;
	}
	if (got < sizeof(buf) || cf_fs_header_decode(&h, buf, got) < 0 ||
	    sodium_memcmp(h.file_id, in->file_id, CF_KS_ID_BYTES) != 0) {
		audit(fs, "fs.integrity", in, -1);
		return -EIO;
	}
	return 0;
}

/* Opens the backing file read-write (reads are needed for partial writes). */
static int
open_backing(struct fs_inode *in, int flags)
{
	char path[64];
	int fd;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", in->fd);
	flags &= ~(O_APPEND | O_TRUNC | O_CREAT | O_EXCL | O_NOFOLLOW |
	    O_ACCMODE | O_DIRECT);
	fd = open(path, flags | O_RDWR | O_CLOEXEC);
	if (fd < 0 && (errno == EROFS || errno == EACCES))
		fd = open(path, flags | O_RDONLY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

static void
op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *in = inode_of(req, ino);
	int fd, rc;

	fd = open_backing(in, fi->flags);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	pthread_rwlock_wrlock(&in->rw);
	rc = recheck_header(fs, in, fd);
	if (rc == 0 && (fi->flags & O_TRUNC) != 0)
		rc = do_truncate(fs, in, fd, 0);
	if (rc == 0)
		in->opens++;
	pthread_rwlock_unlock(&in->rw);
	if (rc < 0) {
		close(fd);
		fuse_reply_err(req, -rc);
		return;
	}
	fi->fh = (uint64_t)fd;
	if (fuse_reply_open(req, fi) == -ENOENT)
		close(fd);
}

static void
op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_inode *in = inode_of(req, ino);

	close((int)fi->fh);
	/* A file key lives in locked pages: keep it only while the file is
	 * open, or a tree of many files would pin pages per file. */
	pthread_rwlock_wrlock(&in->rw);
	if (in->opens > 0 && --in->opens == 0) {
		cf_fs_file_ctx_free(in->ctx);
		in->ctx = NULL;
	}
	pthread_rwlock_unlock(&in->rw);
	fuse_reply_err(req, 0);
}

static void
op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void
op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
    struct fuse_file_info *fi)
{
	int rc;

	(void)ino;
	rc = datasync ? fdatasync((int)fi->fh) : fsync((int)fi->fh);
	fuse_reply_err(req, rc == 0 ? 0 : errno);
}

/* ---- creating and removing names ------------------------------------------ */

static void
own(fuse_req_t req, int dirfd, const char *enc)
{
	const struct fuse_ctx *c = fuse_req_ctx(req);

	/* The daemon runs as root; new objects belong to the caller. */
	(void)!fchownat(dirfd, enc, c->uid, c->gid, AT_SYMLINK_NOFOLLOW);
}

static void
reply_new_entry(fuse_req_t req, struct fs_inode *parent, const char *enc)
{
	struct fuse_entry_param e;
	int rc = do_lookup(fs_of(req), parent, enc, &e);

	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_entry(req, &e);
}

/* Ends a create-type op: the error, or the new entry owned by the caller. */
static void
reply_created(fuse_req_t req, struct fs_inode *parent, const char *enc, int rc)
{
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	own(req, parent->fd, enc);
	reply_new_entry(req, parent, enc);
}

static void
op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct fs_inode *p = inode_of(req, parent);
	char enc[260];
	int rc, dfd;

	rc = enc_name(fs_of(req), p, name, enc, sizeof(enc));
	if (rc < 0)
		goto fail;
	if (mkdirat(p->fd, enc, 0700) != 0) {
		rc = -errno;
		goto fail;
	}
	dfd = openat(p->fd, enc, O_RDONLY | O_DIRECTORY | O_CLOEXEC |
	    O_NOFOLLOW);
	rc = dfd < 0 ? -errno : write_diriv(dfd);
	/* The IV exists before the directory gets its requested mode, so
	 * even a mode without owner write (0151) is reported exactly. */
	if (rc == 0 && fchmod(dfd, mode & 07777) != 0)
		rc = -errno;
	if (dfd >= 0)
		close(dfd);
	if (rc < 0) {
		unlinkat(p->fd, enc, AT_REMOVEDIR);
		goto fail;
	}
	own(req, p->fd, enc);
	reply_new_entry(req, p, enc);
	return;
fail:
	fuse_reply_err(req, -rc);
}

static void
op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
    dev_t rdev)
{
	struct fs_inode *p = inode_of(req, parent);
	char enc[260];
	int rc;

	rc = enc_name(fs_of(req), p, name, enc, sizeof(enc));
	if (rc == 0 && mknodat(p->fd, enc, mode, rdev) != 0)
		rc = -errno;
	reply_created(req, p, enc, rc);
}

static void
op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
    struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *p = inode_of(req, parent);
	struct fuse_entry_param e;
	char enc[260];
	int fd = -1, rc;

	rc = enc_name(fs, p, name, enc, sizeof(enc));
	if (rc < 0)
		goto fail;
	fd = openat(p->fd, enc, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC |
	    O_NOFOLLOW, mode & 07777);
	if (fd < 0) {
		rc = -errno;
		goto fail;
	}
	own(req, p->fd, enc);
	rc = do_lookup(fs, p, enc, &e);
	if (rc < 0)
		goto fail;
	/* The header is written by the first write, as for an empty file
	 * made by mknod: creating many empty files costs no data write. */
	e.attr.st_size = 0;
	{
		struct fs_inode *in = (struct fs_inode *)(uintptr_t)e.ino;

		pthread_rwlock_wrlock(&in->rw);
		in->opens++;
		pthread_rwlock_unlock(&in->rw);
	}
	fi->fh = (uint64_t)fd;
	if (fuse_reply_create(req, &e, fi) == -ENOENT)
		close(fd);
	return;
fail:
	if (fd >= 0) {
		close(fd);
		unlinkat(p->fd, enc, 0);
	}
	fuse_reply_err(req, -rc);
}

static void
op_symlink(fuse_req_t req, const char *target, fuse_ino_t parent,
    const char *name)
{
	struct fs_inode *p = inode_of(req, parent);
	char enc[260], *etarget;
	size_t cap = PATH_MAX;
	int rc;

	etarget = malloc(cap);
	if (etarget == NULL) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	rc = enc_name(fs_of(req), p, name, enc, sizeof(enc));
	if (rc == 0)
		rc = cf_fs_link_encrypt(fs_of(req)->keys, target, etarget, cap);
	if (rc == 0 && symlinkat(etarget, p->fd, enc) != 0)
		rc = -errno;
	free(etarget);
	reply_created(req, p, enc, rc);
}

static void
op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct fs_inode *in = inode_of(req, ino);
	char enc[PATH_MAX + 1], plain[PATH_MAX];
	ssize_t n;
	int rc;

	n = readlinkat(in->fd, "", enc, sizeof(enc) - 1);
	if (n < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	enc[n] = '\0';
	rc = cf_fs_link_decrypt(fs_of(req)->keys, enc, plain, sizeof(plain));
	if (rc < 0) {
		audit(fs_of(req), "fs.integrity", in, -2);
		fuse_reply_err(req, EIO);
		return;
	}
	fuse_reply_readlink(req, plain);
}

static void
op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char *name)
{
	struct fs_inode *in = inode_of(req, ino), *p = inode_of(req, parent);
	char enc[260], path[64];
	int rc;

	rc = enc_name(fs_of(req), p, name, enc, sizeof(enc));
	snprintf(path, sizeof(path), "/proc/self/fd/%d", in->fd);
	if (rc == 0 && linkat(AT_FDCWD, path, p->fd, enc, AT_SYMLINK_FOLLOW))
		rc = -errno;
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	reply_new_entry(req, p, enc);
}

static void
op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs_inode *p = inode_of(req, parent);
	char enc[260];
	int rc;

	rc = enc_name(fs_of(req), p, name, enc, sizeof(enc));
	if (rc == 0 && unlinkat(p->fd, enc, 0) != 0)
		rc = -errno;
	fuse_reply_err(req, -rc);
}

/* 1 if the backing directory holds nothing but its IV. */
static int
dir_empty(int parentfd, const char *enc)
{
	struct dirent *de;
	DIR *d;
	int fd, empty = 1;

	fd = openat(parentfd, enc, O_RDONLY | O_DIRECTORY | O_CLOEXEC |
	    O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return -ENOMEM;
	}
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0 ||
		    strcmp(de->d_name, CF_FS_DIRIV_NAME) == 0)
			continue;
		empty = 0;
		break;
	}
	closedir(d);
	return empty;
}

static void
op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs_inode *p = inode_of(req, parent);
	char enc[260];
	int rc, fd;

	rc = enc_name(fs_of(req), p, name, enc, sizeof(enc));
	if (rc == 0)
		rc = dir_empty(p->fd, enc);
	if (rc == 0) {
		fuse_reply_err(req, ENOTEMPTY);
		return;
	}
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	/* The kernel holds the directory's lock: nothing is created in it
	 * between the emptiness check and here. */
	fd = openat(p->fd, enc, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		unlinkat(fd, CF_FS_DIRIV_NAME, 0);
		close(fd);
	}
	rc = unlinkat(p->fd, enc, AT_REMOVEDIR) == 0 ? 0 : errno;
	fuse_reply_err(req, rc);
}

static void
op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
    fuse_ino_t newparent, const char *newname, unsigned int flags)
{
	struct fs_inode *p = inode_of(req, parent), *np = inode_of(req,
	    newparent);
	char enc[260], nenc[260];
	int rc;

	rc = enc_name(fs_of(req), p, name, enc, sizeof(enc));
	if (rc == 0)
		rc = enc_name(fs_of(req), np, newname, nenc, sizeof(nenc));
	if (rc == 0 && renameat2(p->fd, enc, np->fd, nenc, flags) != 0)
		rc = -errno;
	fuse_reply_err(req, -rc);
}

/* ---- attributes ------------------------------------------------------------ */

static void
op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid,
    struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *in = inode_of(req, ino);
	char path[64];
	struct stat st;
	int rc = 0, fd;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", in->fd);
	if ((valid & FUSE_SET_ATTR_MODE) != 0 &&
	    fchmodat(AT_FDCWD, path, attr->st_mode & 07777, 0) != 0) {
		rc = -errno;
		goto out;
	}
	if ((valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) != 0 &&
	    fchownat(in->fd, "", (valid & FUSE_SET_ATTR_UID) ? attr->st_uid :
	    (uid_t)-1, (valid & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1,
	    AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
		rc = -errno;
		goto out;
	}
	if ((valid & FUSE_SET_ATTR_SIZE) != 0) {
		fd = fi != NULL ? (int)fi->fh : open_backing(in, 0);
		if (fd < 0) {
			rc = fd;
			goto out;
		}
		pthread_rwlock_wrlock(&in->rw);
		rc = do_truncate(fs, in, fd, attr->st_size);
		pthread_rwlock_unlock(&in->rw);
		if (fi == NULL)
			close(fd);
		if (rc < 0)
			goto out;
	}
	if ((valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) != 0) {
		struct timespec tv[2];

		tv[0].tv_sec = 0;
		tv[0].tv_nsec = UTIME_OMIT;
		tv[1] = tv[0];
		if (valid & FUSE_SET_ATTR_ATIME_NOW)
			tv[0].tv_nsec = UTIME_NOW;
		else if (valid & FUSE_SET_ATTR_ATIME)
			tv[0] = attr->st_atim;
		if (valid & FUSE_SET_ATTR_MTIME_NOW)
			tv[1].tv_nsec = UTIME_NOW;
		else if (valid & FUSE_SET_ATTR_MTIME)
			tv[1] = attr->st_mtim;
		if (fi != NULL)
			rc = futimens((int)fi->fh, tv);
		else
			rc = utimensat(AT_FDCWD, path, tv, 0);
		if (rc != 0) {
			rc = -errno;
			goto out;
		}
	}
	rc = stat_fd(in->fd, &st);
	if (rc < 0)
		goto out;
	plain_attr(fs, in->fd, &st);
	fuse_reply_attr(req, &st, 1.0);
	return;
out:
	fuse_reply_err(req, -rc);
}

static void
op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;
	int fd;

	(void)ino;
	fd = openat(fs_of(req)->root.fd, ".", O_RDONLY | O_DIRECTORY |
	    O_CLOEXEC);
	if (fd < 0 || fstatvfs(fd, &sv) != 0) {
		fuse_reply_err(req, errno);
		if (fd >= 0)
			close(fd);
		return;
	}
	close(fd);
	sv.f_namemax = CF_FS_NAME_MAX;
	fuse_reply_statfs(req, &sv);
}

/* ---- directories ------------------------------------------------------------ */

struct fs_dir {
	DIR *dp;
	struct dirent *entry;	/* read but not yet returned */
	off_t offset;
};

static void
op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_inode *in = inode_of(req, ino);
	struct fs_dir *d;
	int fd, rc;

	rc = load_diriv(in);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	d = calloc(1, sizeof(*d));
	fd = openat(in->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (d == NULL || fd < 0 || (d->dp = fdopendir(fd)) == NULL) {
		rc = d == NULL ? ENOMEM : errno;
		if (fd >= 0)
			close(fd);
		free(d);
		fuse_reply_err(req, rc);
		return;
	}
	fi->fh = (uintptr_t)d;
	fuse_reply_open(req, fi);
}

static void
op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
    struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *in = inode_of(req, ino);
	struct fs_dir *d = (struct fs_dir *)(uintptr_t)fi->fh;
	char *buf, name[CF_FS_NAME_MAX + 1];
	size_t used = 0;
	int rc = 0;

	buf = calloc(1, size);
	if (buf == NULL) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (off != d->offset) {
		seekdir(d->dp, off);
		d->entry = NULL;
		d->offset = off;
	}
	for (;;) {
		struct stat st;
		const char *shown;
		size_t n;

		if (d->entry == NULL) {
			errno = 0;
			d->entry = readdir(d->dp);
			if (d->entry == NULL) {
				rc = errno;
				break;
			}
		}
		shown = d->entry->d_name;
		if (strcmp(shown, ".") != 0 && strcmp(shown, "..") != 0) {
			if (strncmp(shown, "cf.", 3) == 0 ||
			    cf_fs_name_decrypt(fs->keys, in->diriv, shown,
			    name, sizeof(name)) < 0) {
				/* Our own files, or a name that is not ours
				 * (planted or damaged): not shown. */
				d->offset = d->entry->d_off;
				d->entry = NULL;
				continue;
			}
			shown = name;
		}
		memset(&st, 0, sizeof(st));
		st.st_ino = d->entry->d_ino;
		st.st_mode = (mode_t)d->entry->d_type << 12;
		n = fuse_add_direntry(req, buf + used, size - used, shown, &st,
		    d->entry->d_off);
		if (n > size - used)
			break;
		used += n;
		d->offset = d->entry->d_off;
		d->entry = NULL;
	}
	if (rc != 0 && used == 0)
		fuse_reply_err(req, rc);
	else
		fuse_reply_buf(req, buf, used);
	free(buf);
}

static void
op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_dir *d = (struct fs_dir *)(uintptr_t)fi->fh;

	(void)ino;
	closedir(d->dp);
	free(d);
	fuse_reply_err(req, 0);
}

static void
op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
    struct fuse_file_info *fi)
{
	struct fs_dir *d = (struct fs_dir *)(uintptr_t)fi->fh;
	int fd = dirfd(d->dp), rc;

	(void)ino;
	rc = datasync ? fdatasync(fd) : fsync(fd);
	fuse_reply_err(req, rc == 0 ? 0 : errno);
}

/* ---- extended attributes ----------------------------------------------- */

/*
 * Only the user namespace is offered.  A tenant's "user.NAME" is stored as
 * "user.cf.ENC" where ENC is NAME encrypted like a file name under a
 * fixed IV, and its value is sealed with the metadata key, the stored
 * name as AAD, so values cannot be moved between attributes.
 */
#define XATTR_PREFIX "user."
#define XATTR_STORED "user.cf."
#define XATTR_NONCE 24U
#define XATTR_OVH (XATTR_NONCE + CF_KS_TAG_BYTES)
#define XATTR_MAX 65536U

static const unsigned char xattr_iv[CF_FS_DIRIV_BYTES] = "coffer-xattr-iv";

static int
xattr_name(struct fs *fs, const char *name, char *out, size_t cap)
{
	char enc[260];
	int rc;

	if (strncmp(name, XATTR_PREFIX, strlen(XATTR_PREFIX)) != 0)
		return -EOPNOTSUPP;
	rc = cf_fs_name_encrypt(fs->keys, xattr_iv, name + strlen(XATTR_PREFIX),
	    enc, sizeof(enc));
	if (rc == -EINVAL)
		return -EINVAL;
	if (rc < 0)
		return -ERANGE;
	if ((size_t)snprintf(out, cap, "%s%s", XATTR_STORED, enc) >= cap)
		return -ERANGE;
	return 0;
}

static void
proc_path(const struct fs_inode *in, char *buf, size_t len)
{
	snprintf(buf, len, "/proc/self/fd/%d", in->fd);
}

static void
op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
    const char *value, size_t size, int flags)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *in = inode_of(req, ino);
	char sname[300], path[64];
	unsigned char *blob;
	int rc;

	rc = xattr_name(fs, name, sname, sizeof(sname));
	if (rc == 0 && size > XATTR_MAX - XATTR_OVH)
		rc = -E2BIG;
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	blob = malloc(size + XATTR_OVH);
	if (blob == NULL) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	randombytes_buf(blob, XATTR_NONCE);
	rc = cf_ks_aead_seal(fs->keys->meta, blob + XATTR_NONCE,
	    (const unsigned char *)value, size, (const unsigned char *)sname,
	    strlen(sname), blob);
	proc_path(in, path, sizeof(path));
	if (rc == 0 && setxattr(path, sname, blob, size + XATTR_OVH, flags))
		rc = -errno;
	free(blob);
	fuse_reply_err(req, -rc);
}

static void
op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *in = inode_of(req, ino);
	char sname[300], path[64];
	unsigned char *blob = NULL, *plain = NULL;
	ssize_t n;
	int rc;

	rc = xattr_name(fs, name, sname, sizeof(sname));
	if (rc == -EOPNOTSUPP)
		rc = -ENODATA;
	if (rc < 0)
		goto out;
	proc_path(in, path, sizeof(path));
	blob = malloc(XATTR_MAX);
	plain = malloc(XATTR_MAX);
	if (blob == NULL || plain == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	n = getxattr(path, sname, blob, XATTR_MAX);
	if (n < 0) {
		rc = -errno;
		goto out;
	}
	if ((size_t)n < XATTR_OVH || cf_ks_aead_open(fs->keys->meta, plain,
	    blob + XATTR_NONCE, (size_t)n - XATTR_NONCE,
	    (const unsigned char *)sname, strlen(sname), blob) != 0) {
		audit(fs, "fs.integrity", in, -3);
		rc = -EIO;
		goto out;
	}
	n -= XATTR_OVH;
	if (size == 0)
		fuse_reply_xattr(req, (size_t)n);
	else if ((size_t)n > size)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, (const char *)plain, (size_t)n);
	free(blob);
	free(plain);
	return;
out:
	free(blob);
	free(plain);
	fuse_reply_err(req, -rc);
}

static void
op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *in = inode_of(req, ino);
	char path[64], *raw = NULL, *out = NULL, name[CF_FS_NAME_MAX + 1];
	size_t used = 0, len;
	ssize_t n;
	char *p;
	int rc = 0;

	proc_path(in, path, sizeof(path));
	n = listxattr(path, NULL, 0);
	if (n < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	raw = malloc((size_t)n + 1);
	out = malloc((size_t)n + 1);
	if (raw == NULL || out == NULL) {
		rc = ENOMEM;
		goto out;
	}
	n = listxattr(path, raw, (size_t)n);
	if (n < 0) {
		rc = errno;
		goto out;
	}
	for (p = raw; p < raw + n; p += strlen(p) + 1) {
		if (strncmp(p, XATTR_STORED, strlen(XATTR_STORED)) != 0 ||
		    cf_fs_name_decrypt(fs->keys, xattr_iv,
		    p + strlen(XATTR_STORED), name, sizeof(name)) < 0)
			continue;	/* not one of ours */
		/* A decrypted name is never longer than its stored form. */
		len = strlen(XATTR_PREFIX) + strlen(name) + 1;
		memcpy(out + used, XATTR_PREFIX, strlen(XATTR_PREFIX));
		memcpy(out + used + strlen(XATTR_PREFIX), name, strlen(name) + 1);
		used += len;
	}
	if (size == 0)
		fuse_reply_xattr(req, used);
	else if (used > size)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, out, used);
	free(raw);
	free(out);
	return;
out:
	free(raw);
	free(out);
	fuse_reply_err(req, rc);
}

static void
op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct fs *fs = fs_of(req);
	char sname[300], path[64];
	int rc;

	rc = xattr_name(fs, name, sname, sizeof(sname));
	if (rc == -EOPNOTSUPP)
		rc = -ENODATA;
	proc_path(inode_of(req, ino), path, sizeof(path));
	if (rc == 0 && removexattr(path, sname) != 0)
		rc = -errno;
	fuse_reply_err(req, -rc);
}

static void
op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	/* Directory operations on different names may run in parallel. */
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	/* Writeback caching would need size bookkeeping we do not do yet. */
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
}

static const struct fuse_lowlevel_ops fs_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readlink = op_readlink,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.release = op_release,
	.fsync = op_fsync,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_releasedir,
	.fsyncdir = op_fsyncdir,
	.statfs = op_statfs,
	.create = op_create,
	.setxattr = op_setxattr,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.removexattr = op_removexattr,
};

/* ---- mounting ------------------------------------------------------------- */

int
cf_fs_store_init(const struct cf_fs_keys *keys, const char *backing)
{
	static const char marker[] = "coffer-store-v1";
	unsigned char blob[24 + sizeof(marker) + 16 + 1], out[sizeof(marker)];
	int dfd, fd, rc = 0;
	ssize_t n;

	if (mkdir(backing, 0700) != 0 && errno != EEXIST)
		return -errno;
	dfd = open(backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	if (fchmod(dfd, 0700) != 0) {
		rc = -errno;
		goto out;
	}
	fd = openat(dfd, FS_STORE_MARKER, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT &&
	    faccessat(dfd, FS_STORE_DATA, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
		/* Data without a marker: deleting the marker must not let
		 * another tenant's keys adopt the store ([FS-STORE-4]). */
		rc = -EBADMSG;
		goto out;
	}
	if (fd < 0 && errno == ENOENT) {
		/* A new store: its marker proves later mounts use our keys. */
		randombytes_buf(blob, 24);
		rc = cf_ks_aead_seal(keys->meta, blob + 24,
		    (const unsigned char *)marker, sizeof(marker), NULL, 0,
		    blob);
		if (rc < 0)
			goto out;
		fd = openat(dfd, FS_STORE_MARKER, O_WRONLY | O_CREAT | O_EXCL |
		    O_CLOEXEC, 0400);
		if (fd < 0 || write(fd, blob, sizeof(blob) - 1) !=
		    (ssize_t)sizeof(blob) - 1 || fsync(fd) != 0) {
			rc = -EIO;
			if (fd >= 0)
				close(fd);
			goto out;
		}
		close(fd);
		/* The tenant's root directory: its mode is the tenant's to
		 * set, while the store around it stays 0700. */
		if (mkdirat(dfd, FS_STORE_DATA, 0755) != 0 && errno != EEXIST) {
			rc = -errno;
			goto out;
		}
		fd = openat(dfd, FS_STORE_DATA, O_RDONLY | O_DIRECTORY |
		    O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0) {
			rc = -errno;
			goto out;
		}
		if (faccessat(fd, CF_FS_DIRIV_NAME, F_OK, 0) != 0)
			rc = write_diriv(fd);
		if (rc == 0 && (fsync(fd) != 0 || fsync(dfd) != 0))
			rc = -errno;
		close(fd);
		goto out;
	}
	if (fd < 0) {
		rc = -errno;
		goto out;
	}
	/* One byte more than a marker has: trailing bytes are refused. */
	n = read(fd, blob, sizeof(blob));
	close(fd);
	if (n != (ssize_t)sizeof(blob) - 1 || cf_ks_aead_open(keys->meta, out,
	    blob + 24, sizeof(blob) - 1 - 24, NULL, 0, blob) != 0 ||
	    memcmp(out, marker, sizeof(marker)) != 0) {	/* checksrc:allow public marker */
		rc = -EBADMSG;
		goto out;
	}
out:
	close(dfd);
	return rc;
}

int
cf_fs_mount(const struct cf_fs_keys *keys, const struct cf_fs_mount_opts *o)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_loop_config *lc = NULL;
	struct fuse_session *se = NULL;
	struct fs *fs;
	char opts[512];
	int rc = -EIO;

	fs = calloc(1, sizeof(*fs));
	if (fs == NULL)
		return -ENOMEM;
	pthread_mutex_init(&fs->mutex, NULL);
	pthread_mutex_init(&fs->audit_mutex, NULL);
	pthread_rwlock_init(&fs->root.rw, NULL);
	{
		/* One O_PATH descriptor per inode the kernel remembers: a
		 * tree of 100k files needs far more than the default 1024. */
		struct rlimit rl;

		rl.rlim_cur = rl.rlim_max = 1048576;	/* fs.nr_open default */
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0 &&
		    getrlimit(RLIMIT_NOFILE, &rl) == 0) {
			rl.rlim_cur = rl.rlim_max;	/* not root: soft = hard */
			(void)setrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	fs->keys = keys;
	fs->opts = o;
	fs->ovh = cf_fs_block_overhead(keys->cipher);
	fs->cb = CF_FS_BLOCK + (off_t)fs->ovh;
	fs->root.nlookup = 2;
	{
		char data[PATH_MAX];

		snprintf(data, sizeof(data), "%s/%s", o->backing,
		    FS_STORE_DATA);
		fs->root.fd = open(data, O_PATH | O_DIRECTORY | O_CLOEXEC |
		    O_NOFOLLOW);
	}
	if (fs->root.fd < 0) {
		rc = -errno;
		goto out;
	}
	snprintf(opts, sizeof(opts), "default_permissions,allow_other,"
	    "fsname=coffer:%s,subtype=coffer%s%s", o->tenant ? o->tenant :
	    "store", o->fuse_opts ? "," : "", o->fuse_opts ? o->fuse_opts : "");
	if (fuse_opt_add_arg(&args, "coffer") != 0 ||
	    fuse_opt_add_arg(&args, "-o") != 0 ||
	    fuse_opt_add_arg(&args, opts) != 0) {
		rc = -ENOMEM;
		goto out;
	}
	se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), fs);
	if (se == NULL) {
		rc = -EINVAL;
		goto out;
	}
	if (fuse_set_signal_handlers(se) != 0)
		goto out;
	if (fuse_session_mount(se, o->mountpoint) != 0) {
		rc = -EIO;
		goto out_handlers;
	}
	/* Modes arrive already masked by the caller's umask. */
	umask(0);
	if (fuse_daemonize(o->foreground) != 0)
		goto out_unmount;
	lc = fuse_loop_cfg_create();
	if (lc == NULL) {
		rc = -ENOMEM;
		goto out_unmount;
	}
	/* Two cores here: a few workers keep the pipe busy; more only
	 * cost memory (each holds a 1 MiB request buffer and an arena). */
	mallopt(M_ARENA_MAX, 2);
	fuse_loop_cfg_set_max_threads(lc, 8);
	fuse_loop_cfg_set_idle_threads(lc, 4);
	rc = fuse_session_loop_mt(se, lc) == 0 ? 0 : -EIO;
out_unmount:
	fuse_session_unmount(se);
out_handlers:
	fuse_remove_signal_handlers(se);
out:
	if (lc != NULL)
		fuse_loop_cfg_destroy(lc);
	if (se != NULL)
		fuse_session_destroy(se);
	fuse_opt_free_args(&args);
	for (size_t i = 0; i < HASH_BUCKETS; i++) {
		struct fs_inode *in = fs->table[i], *next;

		for (; in != NULL; in = next) {
			next = in->next;
			inode_free(in);
		}
	}
	if (fs->root.fd >= 0)
		close(fs->root.fd);
	pthread_rwlock_destroy(&fs->root.rw);
	free(fs);
	return rc;
}
