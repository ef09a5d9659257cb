/*
 * fs_ops.c - the FUSE daemon of one tenant's encrypted store.
 *
 * Low-level libfuse API in the style of libfuse's passthrough_ll: every
 * inode the kernel knows is found by (st_dev, st_ino) in a hash table and
 * reaches its backing object through a file handle and a cached O_PATH
 * descriptor (ifd_get); every path is resolved with *at() calls relative
 * to a parent descriptor, never as a string.  Names are encrypted on the
 * way down and decrypted on the way up (long ones through a sidecar);
 * regular file contents go through fs_crypt.c a block at a time.
 *
 * Locking: fs->mutex protects the inode table and lookup counts,
 * fs->fd_mutex the descriptor cache.  Each inode's rwlock protects its
 * crypto context and serialises the read-modify-write of partial blocks:
 * reads share it, writes and truncates hold it exclusively.  Lock order:
 * inode->rw, then fs->mutex or fs->fd_mutex (never both).
 *
 * Not here (see the issue notes): xattrs outside the user namespace; the
 * writeback cache, on purpose (op_init).
 */
#define FUSE_USE_VERSION 312

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <fuse_lowlevel.h>
#include <sodium.h>

#include "fs_int.h"

/*
 * How long the kernel may keep names and attributes without asking
 * again.  The daemon is the only writer of a mounted store (a second
 * daemon is refused, offline tools refuse a served store), so every
 * change passes through the kernel, which updates or drops what it
 * cached: a long lifetime is as correct as a short one and saves a LOOKUP
 * or GETATTR round trip for nearly every stat, rename and unlink.
 */
#define FS_TTL 86400.0
/*
 * Names that do not exist are remembered for a second only: what a miss
 * saves is one LOOKUP of a name about to be created, while a miss
 * answered wrongly (a transient error taken for "no such name") must not
 * hide an existing file for a day.
 */
#define FS_NEG_TTL 1.0

#define HASH_BUCKETS 65536U
#define AUDIT_MAX 1000		/* integrity records per mount, at most */

struct fs_inode {
	struct fs_inode *next;		/* hash chain, protected by mutex */
	/* Protected by fs->fd_mutex (fd is constant when fh is NULL): */
	int fd;				/* O_PATH to the backing object, or -1 */
	unsigned pins;			/* users of fd right now */
	struct fs_inode *lru_prev, *lru_next;	/* unpinned open fds */
	struct file_handle *fh;		/* reopens fd; NULL: fd kept open */
	ino_t ino;
	dev_t dev;
	uint64_t nlookup;		/* protected by fs->mutex */
	pthread_rwlock_t rw;
	/* Protected by rw: */
	struct cf_fs_file_ctx *ctx;	/* regular files while open */
	unsigned opens;			/* open handles of this inode */
	unsigned char file_id[CF_KS_ID_BYTES];
	uint64_t gen;			/* the file's generation (0: none) */
	time_t gen_at;			/* monotonic s of the last raise */
	int gen_raised;			/* raised since the context was made */
	uint64_t gen_epoch;		/* fs_snap_epoch at the last raise */
	unsigned gen_flags;		/* CF_FS_GEN_DENSE: no holes */
	off_t psize_set;		/* with ctx: the size we last left */
	int have_diriv;			/* directories */
	unsigned char diriv[CF_FS_DIRIV_BYTES];
};

struct fs {
	pthread_mutex_t mutex;
	struct fs_inode root;
	struct fs_inode *table[HASH_BUCKETS];
	struct cf_fs_keys *keys;	/* versions added by fs_rekey.c */
	const struct cf_fs_mount_opts *opts;
	struct fs_rekey_host rekey;	/* control socket: KEYS, REKEY */
	pthread_mutex_t audit_mutex;
	int audits;
	int links_fd;			/* the store's links/ directory */
	pthread_mutex_t fd_mutex;	/* fds of inodes with handles */
	struct fs_inode lru;		/* list head: most recent first */
	unsigned long nfds, fd_cap;	/* open fds of such inodes, limit */
	int handles;			/* name_to_handle_at works here */
	int mount_fd;			/* for open_by_handle_at (not O_PATH) */
	pthread_rwlock_t snap_rw;	/* mutations read-lock, snapshots write */
	struct fs_snap *snap;		/* NULL: no snapshots for this mount */
	off_t cb;			/* ciphertext bytes per full block */
	struct cf_fs_par *par;		/* second core for large requests */
	const char *mnt_path;		/* absolute mount point, or NULL */
	atomic_int ra_done;		/* raise_readahead was tried */
	struct fs_gen *gen;		/* generation log; NULL: not kept */
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

/* ---- inode descriptors --------------------------------------------------- */

/*
 * A tree can hold more inodes than a process may have descriptors (here
 * the hard RLIMIT_NOFILE is 20000).  So each inode keeps a file handle
 * (name_to_handle_at) and its O_PATH descriptor is only a cache: at most
 * fd_cap of them stay open, the least recently used unpinned one is
 * closed first, and a closed one is reopened with open_by_handle_at, as
 * virtiofsd does.  Where handles do not work (no CAP_DAC_READ_SEARCH, or
 * a backing filesystem without export support) every inode keeps its
 * descriptor for its whole life, as before.
 */
static void
lru_unlink(struct fs_inode *in)
{
	in->lru_prev->lru_next = in->lru_next;
	in->lru_next->lru_prev = in->lru_prev;
	in->lru_prev = in->lru_next = NULL;
}

/* Closes least recently used descriptors over the cap.  Holds fd_mutex. */
static void
evict(struct fs *fs)
{
	while (fs->nfds > fs->fd_cap && fs->lru.lru_prev != &fs->lru) {
		struct fs_inode *old = fs->lru.lru_prev;

		lru_unlink(old);
		close(old->fd);
		old->fd = -1;
		fs->nfds--;
	}
}

/* Returns the inode's O_PATH descriptor, pinned until ifd_put. */
static int
ifd_get(struct fs *fs, struct fs_inode *in)
{
	int fd;

	if (in->fh == NULL)
		return in->fd;
	pthread_mutex_lock(&fs->fd_mutex);
	if (in->fd >= 0) {
		if (in->pins++ == 0 && in->lru_next != NULL)
			lru_unlink(in);
		fd = in->fd;
		pthread_mutex_unlock(&fs->fd_mutex);
		return fd;
	}
	pthread_mutex_unlock(&fs->fd_mutex);
	fd = open_by_handle_at(fs->mount_fd, in->fh, O_PATH | O_CLOEXEC);
	if (fd < 0)
		return errno == ESTALE ? -ENOENT : -errno;
	pthread_mutex_lock(&fs->fd_mutex);
	if (in->fd >= 0) {
		close(fd);		/* another thread reopened it first */
		if (in->pins == 0 && in->lru_next != NULL)
			lru_unlink(in);
	} else {
		in->fd = fd;
		fs->nfds++;
	}
	in->pins++;
	evict(fs);
	fd = in->fd;
	pthread_mutex_unlock(&fs->fd_mutex);
	return fd;
}

static void
ifd_put(struct fs *fs, struct fs_inode *in)
{
	if (in->fh == NULL)
		return;
	pthread_mutex_lock(&fs->fd_mutex);
	if (in->pins > 0 && --in->pins == 0 && in->fd >= 0) {
		in->lru_next = fs->lru.lru_next;
		in->lru_prev = &fs->lru;
		in->lru_next->lru_prev = in;
		fs->lru.lru_next = in;
		evict(fs);
	}
	pthread_mutex_unlock(&fs->fd_mutex);
}

/* Makes a handle for the object open as fd; NULL if handles are off. */
static struct file_handle *
make_handle(struct fs *fs, int fd)
{
	struct file_handle *fh, *small;
	int mnt;

	if (!fs->handles)
		return NULL;
	fh = malloc(sizeof(*fh) + MAX_HANDLE_SZ);
	if (fh == NULL)
		return NULL;
	fh->handle_bytes = MAX_HANDLE_SZ;
	if (name_to_handle_at(fd, "", fh, &mnt, AT_EMPTY_PATH) != 0) {
		free(fh);
		return NULL;
	}
	small = realloc(fh, sizeof(*fh) + fh->handle_bytes);
	return small != NULL ? small : fh;
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

/* ---- snapshots -------------------------------------------------------- */

/*
 * Every operation that changes the tree holds snap_rw's read side, so a
 * snapshot (fs_snap.c) can stop them all while it links the store.
 * Writers prefer: a waiting snapshot is not starved by a stream of writes.
 */
static void
snap_enter(struct fs *fs)
{
	pthread_rwlock_rdlock(&fs->snap_rw);
}

static void
snap_leave(struct fs *fs)
{
	pthread_rwlock_unlock(&fs->snap_rw);
}

static int
snap_freeze(void *arg, int on)
{
	struct fs *fs = arg;

	if (on)
		pthread_rwlock_wrlock(&fs->snap_rw);
	else
		pthread_rwlock_unlock(&fs->snap_rw);
	return 0;
}

static int ifd_get(struct fs *fs, struct fs_inode *in);
static void ifd_put(struct fs *fs, struct fs_inode *in);

/*
 * Before in changes: a snapshot's live pass notes it (a directory's
 * metadata is copied, not shared), and a snapshot sharing it gets its own
 * copy first.
 */
static void
cow(struct fs *fs, struct fs_inode *in)
{
	int fd;

	if (in == &fs->root)
		return;		/* the frozen pass always redoes data/ */
	fs_snap_touch(fs->snap, in->dev, in->ino);
	if (!fs_snap_active(fs->snap))
		return;
	fd = ifd_get(fs, in);
	if (fd < 0)
		return;
	(void)fs_snap_cow(fs->snap, in->dev, in->ino, fd);
	ifd_put(fs, in);
}

/* ---- generations (rollback detection) ------------------------------------ */

/* A file changed again this long after its last raise is raised again. */
#define GEN_INTERVAL 1

/*
 * Checks the generation of the file open as fd (in->file_id set) against
 * the log: an older one, or none where the log knows one, is a rollback
 * (EIO, audited); a newer one is progress the log had not seen (a crash,
 * or a log started anew by -o accept_rollback), and is recorded.
 */
static int
gen_check(struct fs *fs, struct fs_inode *in, int fd)
{
	unsigned char buf[CF_FS_GEN_BYTES + 1], id[CF_KS_ID_BYTES];
	uint64_t gen = 0, known;
	unsigned flags = 0;
	ssize_t n;
	int rc = 0;

	if (fs->gen == NULL)
		return 0;
	known = fs_gen_get(fs->gen, in->file_id);
	n = fgetxattr(fd, CF_FS_GEN_XATTR, buf, sizeof(buf));
	if (n < 0 && errno != ENODATA && errno != ERANGE)
		return -errno;
	if (n >= 0 || errno == ERANGE) {
		rc = n < 0 ? -EPROTO : cf_fs_gen_decode(fs->keys, buf,
		    (size_t)n, id, &gen, &flags);
		if (rc == 0 && sodium_memcmp(id, in->file_id,
		    CF_KS_ID_BYTES) != 0)
			rc = -EBADMSG;	/* another file's generation */
		if (rc < 0) {
			audit(fs, "fs.integrity", in, -1);
			return -EIO;
		}
	}
	if (gen < known) {
		audit(fs, "fs.rollback", in, -1);
		return -EIO;
	}
	if (gen > known)
		rc = fs_gen_set(fs->gen, in->file_id, gen);
	if (rc < 0)
		return rc;
	in->gen = gen;
	/* No value: written before generations; it may have holes. */
	in->gen_flags = flags;
	if (in->ctx != NULL)
		cf_fs_file_ctx_set_dense(in->ctx, flags & CF_FS_GEN_DENSE);
	return 0;
}

/*
 * Before a change to the file open as fd: the first change since its
 * context was made, or GEN_INTERVAL after the last raise, raises its
 * generation, in the xattr first and then in the log (so a crash between
 * the two leaves the file ahead of the log, which is accepted).  Caller
 * holds in->rw exclusively and in->ctx is set.
 */
static int
gen_raise(struct fs *fs, struct fs_inode *in, int fd)
{
	unsigned char val[CF_FS_GEN_BYTES];
	struct timespec ts;
	uint64_t epoch;
	int rc;

	if (fs->gen == NULL || in->ctx == NULL)
		return 0;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	/*
	 * Not within GEN_INTERVAL across a snapshot: the first change after
	 * one always raises (we hold snap_rw shared, so the epoch is
	 * stable), and an incremental backup may take an equal generation
	 * for unchanged content since its parent's farm (docs/backup.md).
	 */
	epoch = fs_snap_epoch(fs->snap);
	if (in->gen_raised && ts.tv_sec - in->gen_at < GEN_INTERVAL &&
	    in->gen_epoch == epoch)
		return 0;
	rc = cf_fs_gen_encode(fs->keys, in->file_id, in->gen + 1,
	    in->gen_flags, val);
	if (rc == 0 && fsetxattr(fd, CF_FS_GEN_XATTR, val, sizeof(val), 0) !=
	    0)
		rc = -errno;
	if (rc == 0)
		rc = fs_gen_set(fs->gen, in->file_id, in->gen + 1);
	if (rc < 0)
		return rc;
	in->gen++;
	in->gen_at = ts.tv_sec;
	in->gen_epoch = epoch;
	in->gen_raised = 1;
	return 0;
}

/*
 * Before a hole is made in the file (truncate-up or a write past its end
 * over a whole block, a punched range): a file whose generation says it
 * has none loses that for good, in its generation value first, so a
 * crash in between leaves a file that may have holes and has none.
 * Caller holds in->rw exclusively and in->ctx is set.
 */
static int
mark_sparse(struct fs *fs, struct fs_inode *in, int fd)
{
	if (!(in->gen_flags & CF_FS_GEN_DENSE))
		return 0;
	in->gen_flags &= ~CF_FS_GEN_DENSE;
	cf_fs_file_ctx_set_dense(in->ctx, 0);
	in->gen_raised = 0;	/* written now, whatever the interval */
	return gen_raise(fs, in, fd);
}

/* ---- attributes --------------------------------------------------------- */

/* Length of the target of a symlink whose encoding is elen long. */
static off_t
link_size(off_t elen)
{
	/* base64 without padding: 4 chars per 3 bytes; 24 + 16 overhead. */
	off_t raw = elen * 3 / 4;

	return raw > 40 ? raw - 40 : 0;
}

/*
 * Converts backing attributes to what the tenant sees.  fd (O_PATH, or
 * -1 if unknown) is the object: a symlink with a long target needs it.
 */
static void
plain_attr(struct fs *fs, int fd, struct stat *st)
{
	if (S_ISREG(st->st_mode)) {
		st->st_size = cf_fs_plain_size(fs->keys->cipher, st->st_size);
	} else if (S_ISLNK(st->st_mode)) {
		char t[CF_FS_HASHED_BYTES];
		struct stat ls;

		if (st->st_size == CF_FS_HASHED_BYTES - 1 && fd >= 0 &&
		    readlinkat(fd, "", t, sizeof(t)) == st->st_size &&
		    strncmp(t, CF_FS_TARGET_PREFIX, 5) == 0) {
			t[CF_FS_HASHED_BYTES - 1] = '\0';
			if (fstatat(fs->links_fd, t + 5, &ls,
			    AT_SYMLINK_NOFOLLOW) == 0)
				st->st_size = ls.st_size;
		}
		st->st_size = link_size(st->st_size);
	}
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
load_diriv(struct fs *fs, struct fs_inode *in)
{
	int fd, pfd, rc = 0;
	ssize_t n;

	pthread_rwlock_rdlock(&in->rw);
	if (in->have_diriv) {
		pthread_rwlock_unlock(&in->rw);
		return 0;
	}
	pthread_rwlock_unlock(&in->rw);
	pthread_rwlock_wrlock(&in->rw);
	if (!in->have_diriv) {
		pfd = ifd_get(fs, in);
		fd = pfd < 0 ? pfd : openat(pfd, CF_FS_DIRIV_NAME, O_RDONLY |
		    O_CLOEXEC | O_NOFOLLOW);
		if (pfd >= 0)
			ifd_put(fs, in);
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
	ssize_t n;
	int fd, rc = 0;

	randombytes_buf(iv, sizeof(iv));
	fd = openat(dirfd, CF_FS_DIRIV_NAME, O_WRONLY | O_CREAT | O_EXCL |
	    O_CLOEXEC | O_NOFOLLOW, 0400);
	if (fd < 0)
		return -errno;
	n = write(fd, iv, sizeof(iv));
	if (n != (ssize_t)sizeof(iv))
		rc = n < 0 ? -errno : -ENOSPC;
	else if (fsync(fd) != 0)
		rc = -errno;
	close(fd);
	/* No half-written IV: the directory could never be read. */
	if (rc < 0)
		(void)unlinkat(dirfd, CF_FS_DIRIV_NAME, 0);
	return rc;
}

/* A tenant's name as stored in a backing directory. */
struct ename {
	char enc[CF_FS_ENC_NAME_MAX + 1];	/* the encrypted name */
	char hashed[CF_FS_HASHED_BYTES];	/* its entry name when long */
	const char *b;				/* the backing name */
	int is_long;
};

/* Encrypts name for directory parent into en. */
static int
enc_name(struct fs *fs, struct fs_inode *parent, const char *name,
    struct ename *en)
{
	int rc = load_diriv(fs, parent);

	if (rc < 0)
		return rc;
	rc = cf_fs_name_encrypt_any(fs->keys, parent->diriv, name, en->enc,
	    sizeof(en->enc));
	if (rc < 0)
		return rc;
	en->is_long = strlen(name) > CF_FS_NAME_MAX;
	if (en->is_long) {
		cf_fs_long_name(en->enc, en->hashed);
		en->b = en->hashed;
	} else {
		en->b = en->enc;
	}
	return 0;
}

/* Writes the sidecar that names a long entry (before the entry). */
static int
sidecar_write(int dirfd, const struct ename *en)
{
	char side[CF_FS_HASHED_BYTES + sizeof(CF_FS_LONG_SIDECAR)];
	size_t len = strlen(en->enc);
	int fd, rc = 0;

	if (!en->is_long)
		return 0;
	snprintf(side, sizeof(side), "%s%s", en->hashed, CF_FS_LONG_SIDECAR);
	/* Never rewritten in place (a snapshot may share it): its content
	 * follows from its name, so one of the right size is kept. */
	fd = openat(dirfd, side, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
	    O_CLOEXEC, 0600);
	if (fd < 0 && errno == EEXIST) {
		struct stat st;

		if (fstatat(dirfd, side, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISREG(st.st_mode) && st.st_size == (off_t)len)
			return 0;
		(void)unlinkat(dirfd, side, 0);
		fd = openat(dirfd, side, O_WRONLY | O_CREAT | O_EXCL |
		    O_NOFOLLOW | O_CLOEXEC, 0600);
	}
	if (fd < 0)
		return -errno;
	if (write(fd, en->enc, len) != (ssize_t)len)
		rc = -EIO;
	close(fd);
	return rc;
}

static void
sidecar_unlink(int dirfd, const struct ename *en)
{
	if (en->is_long)
		fs_sidecar_unlink(dirfd, en->b);
}

/* 1 if a backing name is a long-name sidecar. */
static int
is_sidecar(const char *n)
{
	size_t len = strlen(n);

	return len == CF_FS_HASHED_BYTES - 1 + strlen(CF_FS_LONG_SIDECAR) &&
	    strncmp(n, CF_FS_LONG_PREFIX, strlen(CF_FS_LONG_PREFIX)) == 0 &&
	    strcmp(n + CF_FS_HASHED_BYTES - 1, CF_FS_LONG_SIDECAR) == 0;
}

/*
 * Reads the long name behind entry n of directory dirfd into out: the
 * sidecar must hash to the entry's name and decrypt for this directory.
 */
static int
long_name_read(struct fs *fs, struct fs_inode *dir, int dirfd, const char *n,
    char *out, size_t cap)
{
	char side[CF_FS_HASHED_BYTES + sizeof(CF_FS_LONG_SIDECAR)];
	char enc[CF_FS_ENC_NAME_MAX + 2], check[CF_FS_HASHED_BYTES];
	ssize_t got;
	int fd;

	if (strlen(n) != CF_FS_HASHED_BYTES - 1)
		return -EPROTO;
	snprintf(side, sizeof(side), "%s%s", n, CF_FS_LONG_SIDECAR);
	fd = openat(dirfd, side, O_RDONLY | O_NOFOLLOW | O_NONBLOCK |
	    O_CLOEXEC);
	if (fd < 0)
		return -EPROTO;
	got = read(fd, enc, sizeof(enc) - 1);
	close(fd);
	if (got <= 0 || got > (ssize_t)CF_FS_ENC_NAME_MAX)
		return -EPROTO;
	enc[got] = '\0';
	cf_fs_long_name(enc, check);
	if (strcmp(check, n) != 0)
		return -EPROTO;
	return cf_fs_name_decrypt_long(fs->keys, dir->diriv, enc, out, cap);
}

/* ---- inode table ---------------------------------------------------------- */

static void
inode_free(struct fs *fs, struct fs_inode *in)
{
	if (in->fh != NULL) {
		pthread_mutex_lock(&fs->fd_mutex);
		if (in->lru_next != NULL)
			lru_unlink(in);
		if (in->fd >= 0)
			fs->nfds--;
		pthread_mutex_unlock(&fs->fd_mutex);
		free(in->fh);
	}
	if (in->fd >= 0)
		close(in->fd);
	cf_fs_file_ctx_free(in->ctx);
	pthread_rwlock_destroy(&in->rw);
	free(in);
}

static int
same_handle(const struct file_handle *a, const struct file_handle *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return a->handle_type == b->handle_type &&
	    a->handle_bytes == b->handle_bytes &&
	    memcmp(a->f_handle, b->f_handle, a->handle_bytes) == 0;
}

/*
 * The inode of (ino, dev) with one more lookup, or NULL.  Holds mutex.
 * An inode number freed and reused by a new file while the kernel still
 * remembers the old one is another file.  That can only happen while the
 * old inode's descriptor is closed (an open one keeps it alive): then the
 * handles (with their generation) must match, and fh is needed; if it is
 * NULL, *need is set and NULL returned, for the caller to make it.
 */
static struct fs_inode *
find_ref(struct fs *fs, ino_t ino, dev_t dev, const struct file_handle *fh,
    int *need)
{
	struct fs_inode *in;
	int open;

	*need = 0;
	for (in = fs->table[bucket(ino, dev)]; in != NULL; in = in->next) {
		if (in->ino != ino || in->dev != dev)
			continue;
		pthread_mutex_lock(&fs->fd_mutex);
		open = in->fh == NULL || in->fd >= 0;
		pthread_mutex_unlock(&fs->fd_mutex);
		if (!open && fh == NULL) {
			*need = 1;
			continue;
		}
		if (open || same_handle(in->fh, fh)) {
			in->nlookup++;
			return in;
		}
	}
	return NULL;
}

static int lookup_fd(struct fs *fs, int fd, struct fuse_entry_param *e);

/* Looks up parent/enc and returns a fuse entry with a referenced inode. */
static int
do_lookup(struct fs *fs, struct fs_inode *parent, const char *enc,
    struct fuse_entry_param *e)
{
	int fd, pfd;

	memset(e, 0, sizeof(*e));
	pfd = ifd_get(fs, parent);
	if (pfd < 0)
		return pfd;
	fd = openat(pfd, enc, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	ifd_put(fs, parent);
	if (fd < 0)
		return -errno;
	return lookup_fd(fs, fd, e);
}

/* The inode of the object open as fd (O_PATH, taken over), referenced. */
static int
lookup_fd(struct fs *fs, int fd, struct fuse_entry_param *e)
{
	struct fs_inode *in, *fresh, **slot;
	struct file_handle *fh;
	int rc, need;

	memset(e, 0, sizeof(*e));
	e->attr_timeout = FS_TTL;
	e->entry_timeout = FS_TTL;
	rc = stat_fd(fd, &e->attr);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	plain_attr(fs, fd, &e->attr);
	pthread_mutex_lock(&fs->mutex);
	in = find_ref(fs, e->attr.st_ino, e->attr.st_dev, NULL, &need);
	pthread_mutex_unlock(&fs->mutex);
	fh = in == NULL ? make_handle(fs, fd) : NULL;
	if (in == NULL && need) {
		pthread_mutex_lock(&fs->mutex);
		in = find_ref(fs, e->attr.st_ino, e->attr.st_dev, fh, &need);
		pthread_mutex_unlock(&fs->mutex);
	}
	if (in != NULL) {
		close(fd);
		free(fh);
		goto found;
	}
	/* New to the kernel: insert unless another thread was quicker. */
	fresh = calloc(1, sizeof(*fresh));
	if (fresh == NULL) {
		close(fd);
		free(fh);
		return -ENOMEM;
	}
	fresh->fd = fd;
	fresh->fh = fh;
	fresh->ino = e->attr.st_ino;
	fresh->dev = e->attr.st_dev;
	fresh->nlookup = 1;
	pthread_rwlock_init(&fresh->rw, NULL);
	if (fresh->fh != NULL) {
		pthread_mutex_lock(&fs->fd_mutex);
		fs->nfds++;
		fresh->pins = 1;
		pthread_mutex_unlock(&fs->fd_mutex);
	}
	pthread_mutex_lock(&fs->mutex);
	in = find_ref(fs, e->attr.st_ino, e->attr.st_dev, fresh->fh, &need);
	if (in == NULL) {
		slot = &fs->table[bucket(e->attr.st_ino, e->attr.st_dev)];
		fresh->next = *slot;
		*slot = fresh;
		in = fresh;
		fresh = NULL;
	}
	pthread_mutex_unlock(&fs->mutex);
	if (fresh != NULL)
		inode_free(fs, fresh);
	else
		ifd_put(fs, in);	/* into the cache, unpinned */
found:
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
		inode_free(fs, in);
		return;
	}
	pthread_mutex_unlock(&fs->mutex);
}

static void
op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;
	struct ename en;
	int rc;

	rc = enc_name(fs, inode_of(req, parent), name, &en);
	if (rc == 0)
		rc = do_lookup(fs, inode_of(req, parent), en.b, &e);
	if (rc == -ENOENT) {
		/* Negative entry, cached like a positive one. */
		memset(&e, 0, sizeof(e));
		e.entry_timeout = FS_NEG_TTL;
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

	if (fi != NULL) {
		rc = fstat((int)fi->fh, &st) == 0 ? 0 : -errno;
		if (rc == 0)
			plain_attr(fs_of(req), -1, &st);
	} else {
		int fd = ifd_get(fs_of(req), in);

		rc = fd < 0 ? fd : stat_fd(fd, &st);
		if (rc == 0)
			plain_attr(fs_of(req), fd, &st);
		if (fd >= 0)
			ifd_put(fs_of(req), in);
	}
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	fuse_reply_attr(req, &st, FS_TTL);
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
 * Writes backing bytes of in: a snapshot keeping a delta of the file
 * saves what they replace first ([CTL-7]).
 */
static int
bwrite(struct fs *fs, struct fs_inode *in, int fd, const void *buf,
    size_t len, off_t off)
{
	fs_snap_save(fs->snap, in->dev, in->ino, fd, off, (off_t)len);
	return write_full(fd, buf, len, off);
}

/* Cuts in's backing file to csize, the same way. */
static int
bcut(struct fs *fs, struct fs_inode *in, int fd, off_t csize)
{
	fs_snap_save(fs->snap, in->dev, in->ino, fd, csize, -1);
	return ftruncate(fd, csize) == 0 ? 0 : -errno;
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
	in->gen = 0;
	in->gen_raised = 0;
	in->gen_flags = 0;
	if (got == 0) {
		if (!create)
			return 0;	/* empty file, no header yet */
		memset(&h, 0, sizeof(h));	/* version 0: the current */
		h.cipher = fs->keys->cipher;
		h.key_version = cf_fs_keys_version(fs->keys);
		randombytes_buf(h.file_id, sizeof(h.file_id));
		cf_fs_header_encode(&h, buf);
		rc = bwrite(fs, in, fd, buf, sizeof(buf), 0);
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
	if (got != 0) {
		rc = gen_check(fs, in, fd);
		if (rc < 0)
			return rc;
	}
	rc = cf_fs_file_ctx_new(&in->ctx, fs->keys, &h);
	if (rc == 0) {
		struct stat st;

		/* What a read may expect (op_read); 0 if unknown. */
		in->psize_set = got != 0 && fstat(fd, &st) == 0 ?
		    cf_fs_plain_size(fs->keys->cipher, st.st_size) : 0;
	}
	if (rc == 0 && got == 0)
		in->gen_flags = CF_FS_GEN_DENSE;	/* nothing in it yet */
	if (rc == 0)
		cf_fs_file_ctx_set_dense(in->ctx, in->gen_flags &
		    CF_FS_GEN_DENSE);
	if (rc == 0 && got == 0)
		rc = gen_raise(fs, in, fd);	/* a new file: generation 1 */
	return rc;
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

/* 1 if blk is the last block of a file of psize bytes. */
static int
is_final(off_t psize, uint64_t blk)
{
	return psize > 0 && blk == (uint64_t)((psize - 1) / CF_FS_BLOCK);
}

/* Seals block blk of len bytes from pbuf and writes it in place. */
static int
put_block(struct fs *fs, struct fs_inode *in, int fd, uint64_t blk,
    int final, const unsigned char *pbuf, size_t len)
{
	unsigned char cbuf[CF_FS_BLOCK + 64];
	int rc;

	rc = cf_fs_block_seal(in->ctx, blk, final, pbuf, len, cbuf);
	if (rc == 0)
		rc = bwrite(fs, in, fd, cbuf, len + fs->ovh, CF_FS_HEADER_BYTES +
		    (off_t)blk * fs->cb);
	return rc;
}

/*
 * Reads and opens block blk of a file of psize bytes into out (4096
 * bytes); *len gets its size.
 */
static int
read_block(struct fs *fs, struct fs_inode *in, int fd, uint64_t blk,
    off_t psize, unsigned char *out, size_t *len)
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
	rc = cf_fs_block_open(in->ctx, blk, is_final(psize, blk), cbuf, got,
	    out);
	/* Only bytes that fail to authenticate are damage (audited). */
	if (rc < 0 && rc != -EBADMSG)
		return rc == -ENOMEM ? -ENOMEM : -EIO;
	if (rc < 0 || got <= fs->ovh) {
		audit(fs, "fs.integrity", in, (long long)blk);
		return -EIO;
	}
	*len = got - fs->ovh;
	return 0;
}

/*
 * Puts a file that a failed write was extending back to psize bytes, last
 * its last block's plaintext (len bytes): everything from that block on
 * is cut, then the block is sealed again as the final one.  Without this
 * a full disk left a file longer than any write that succeeded, ending in
 * a torn or unsealed block: EIO, and an integrity alarm, for its tail.
 */
static void
write_undo(struct fs *fs, struct fs_inode *in, int fd, off_t psize,
    const unsigned char *last, size_t len)
{
	uint64_t ol = psize > 0 ? (uint64_t)((psize - 1) / CF_FS_BLOCK) : 0;
	int rc;

	rc = bcut(fs, in, fd, CF_FS_HEADER_BYTES + (off_t)ol * fs->cb);
	if (rc == 0 && psize > 0)
		rc = put_block(fs, in, fd, ol, 1, last, len);
	if (rc == 0)
		in->psize_set = psize;
	else
		fprintf(stderr, "coffer: cannot undo a failed write (%s): the "
		    "file's tail reads as an error\n", strerror(-rc));
}

/*
 * Truncates to newsize; caller holds in->rw exclusively.  The new last
 * block is always sealed (final), never a hole ([FS-BLK-10]).
 */
static int
do_truncate(struct fs *fs, struct fs_inode *in, int fd, off_t newsize)
{
	unsigned char pbuf[CF_FS_BLOCK], last[CF_FS_BLOCK];
	off_t csize = 0, psize;
	uint64_t ol, nl;
	size_t len, keep, lastlen = 0;
	int rc, undo = 0;

	if (newsize < 0 || newsize > CF_FS_MAX_SIZE)
		return newsize < 0 ? -EINVAL : -EFBIG;
	rc = backing_size(fd, &csize);
	if (rc < 0)
		return rc;
	psize = cf_fs_plain_size(fs->keys->cipher, csize);
	if (newsize == psize && csize != 0) {
		in->psize_set = psize;
		return 0;
	}
	if (newsize == 0) {
		/* A damaged file may still be emptied: no context needed. */
		if (csize >= (off_t)CF_FS_HEADER_BYTES &&
		    ensure_ctx(fs, in, fd, 0) == 0) {
			rc = gen_raise(fs, in, fd);
			if (rc < 0)
				return rc;
		}
		rc = bcut(fs, in, fd, csize >= CF_FS_HEADER_BYTES ?
		    CF_FS_HEADER_BYTES : 0);
		if (rc < 0)
			return rc;
		in->psize_set = 0;
		return 0;
	}
	rc = ensure_ctx(fs, in, fd, 1);
	if (rc == 0)
		rc = gen_raise(fs, in, fd);
	if (rc < 0)
		return rc;
	nl = (uint64_t)((newsize - 1) / CF_FS_BLOCK);
	keep = (size_t)(newsize - (off_t)nl * CF_FS_BLOCK);
	if (newsize < psize) {
		/* The block that becomes the last, resealed as final. */
		rc = read_block(fs, in, fd, nl, psize, pbuf, &len);
		if (rc == 0)
			rc = put_block(fs, in, fd, nl, 1, pbuf, keep);
	} else {
		if (psize > 0) {
			/* The old last block grows (zeros) and, unless it is
			 * still the last, loses its final mark. */
			ol = (uint64_t)((psize - 1) / CF_FS_BLOCK);
			rc = read_block(fs, in, fd, ol, psize, last, &lastlen);
			if (rc == 0) {
				size_t nlen = nl == ol ? keep : CF_FS_BLOCK;

				undo = 1;
				memcpy(pbuf, last, lastlen);
				memset(pbuf + lastlen, 0, nlen - lastlen);
				rc = put_block(fs, in, fd, ol, nl == ol, pbuf,
				    nlen);
			}
		} else {
			undo = 1;
		}
		if (rc == 0 && (psize == 0 ? nl > 0 : nl > (uint64_t)((psize -
		    1) / CF_FS_BLOCK) + 1))
			rc = mark_sparse(fs, in, fd);	/* blocks between */
		if (rc == 0 && (psize == 0 || nl > (uint64_t)((psize - 1) /
		    CF_FS_BLOCK))) {
			/* Blocks between are holes; the last is sealed. */
			memset(pbuf, 0, keep);
			rc = put_block(fs, in, fd, nl, 1, pbuf, keep);
		}
	}
	sodium_memzero(pbuf, sizeof(pbuf));
	if (rc == 0)
		rc = bcut(fs, in, fd, cf_fs_cipher_size(fs->keys->cipher,
		    newsize));
	if (rc == 0)
		in->psize_set = newsize;
	else if (undo)		/* growing failed (a full disk): as it was */
		write_undo(fs, in, fd, psize, last, lastlen);
	sodium_memzero(last, lastlen);
	return rc;
}

/* The blocks of one read request, opened by open_blocks in two halves. */
struct rjob {
	struct fs *fs;
	struct fs_inode *in;
	const unsigned char *cbuf;	/* ciphertext of blocks fb.. */
	unsigned char *pbuf;		/* their plaintext */
	size_t got;			/* ciphertext bytes read */
	uint64_t fb;
	off_t psize;
	int mapped;			/* cbuf is a mapping of the file */
	atomic_llong bad;		/* damaged block, -1 cut, -2 none */
};

/*
 * Large reads open the ciphertext where it lies in the backing file's
 * page cache (a read-only mapping) instead of copying it out with pread
 * first: that copy was 45 % of the daemon's CPU in a sequential read.
 * The daemon is the store's only writer and holds the inode's lock, so
 * the file does not shrink under the mapping; should something else cut
 * it anyway, touching the lost pages raises SIGBUS, which the thread
 * opening the blocks turns into EIO (bus_jmp) instead of dying.
 */
#define FS_MAP_MIN (128U << 10)
/*
 * ThreadSanitizer does not follow a siglongjmp out of a synchronous
 * signal's handler (the mount's connection was lost in fs_mount's cut
 * test): its builds read with pread, as reads under FS_MAP_MIN do.
 */
#ifdef __SANITIZE_THREAD__
#define FS_MAP_ON 0
#else
#define FS_MAP_ON 1
#endif

static _Thread_local sigjmp_buf *bus_jmp;

static void
on_sigbus(int sig, siginfo_t *si, void *uc)
{
	struct sigaction sa;

	(void)si;
	(void)uc;
	if (bus_jmp != NULL)
		siglongjmp(*bus_jmp, 1);
	/* Not a mapped read: the default action, on return. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	(void)sigaction(sig, &sa, NULL);
}

static void
sigbus_init(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	(void)sigaction(SIGBUS, &sa, NULL);
}

/*
 * Maps len bytes of fd from off (0 < len, off + len within the file):
 * *base and *maplen to unmap, the bytes at *at.  -errno if it cannot.
 */
static int
map_range(int fd, off_t off, size_t len, void **base, size_t *maplen,
    const unsigned char **at)
{
	long pg = sysconf(_SC_PAGESIZE);
	off_t moff = off - off % (off_t)pg;
	size_t delta = (size_t)(off - moff);
	void *p;

	p = mmap(NULL, delta + len, PROT_READ, MAP_SHARED | MAP_POPULATE, fd,
	    moff);
	if (p == MAP_FAILED)
		return -errno;
	(void)madvise(p, delta + len, MADV_SEQUENTIAL);
	*base = p;
	*maplen = delta + len;
	*at = (const unsigned char *)p + delta;
	return 0;
}

static int
open_blocks(void *arg, size_t lo, size_t hi)
{
	struct rjob *j = arg;
	size_t cb = (size_t)j->fs->cb, i, at, clen;
	long long none = -2;
	sigjmp_buf jb;
	int rc = 0;

	if (j->mapped) {
		if (sigsetjmp(jb, 0) != 0) {
			/* The backing file was cut under the mapping. */
			bus_jmp = NULL;
			none = -2;
			atomic_compare_exchange_strong(&j->bad, &none, -1);
			return -EIO;
		}
		bus_jmp = &jb;
	}
	for (i = lo; i < hi; i++) {
		at = i * cb;
		if (j->got <= at) {
			/* Shorter than its size says. */
			atomic_compare_exchange_strong(&j->bad, &none, -1);
			rc = -EIO;
			break;
		}
		clen = j->got - at < cb ? j->got - at : cb;
		rc = cf_fs_block_open(j->in->ctx, j->fb + i, is_final(j->psize,
		    j->fb + i), j->cbuf + at, clen, j->pbuf + i * CF_FS_BLOCK);
		if (rc < 0) {
			/* Only a block that fails to authenticate is damage
			 * (audited); no memory is just an error. */
			if (rc == -EBADMSG)
				atomic_compare_exchange_strong(&j->bad, &none,
				    (long long)(j->fb + i));
			rc = -EIO;
			break;
		}
	}
	bus_jmp = NULL;
	return rc;
}

static void
op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
    struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *in = inode_of(req, ino);
	int fd = (int)fi->fh, rc;
	unsigned char *cbuf = NULL, *pbuf = NULL;
	const unsigned char *cdata;
	void *map = NULL;
	size_t maplen = 0;
	struct rjob rj;
	off_t psize, end, start, csize;
	uint64_t fb, lb;
	size_t got, ctot;

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
	if (in->ctx != NULL && psize < in->psize_set && size > 0 &&
	    off + (off_t)size > psize) {
		/*
		 * The backing file is shorter than the daemon, its only
		 * writer, left it: cut behind our back.  A read past the cut
		 * is damage, not the end of the file (the kernel, which
		 * caches the size, would take a short reply as the new end).
		 */
		audit(fs, "fs.integrity", in, (long long)((off > psize ? off :
		    psize) / CF_FS_BLOCK));
		rc = -EIO;
		goto out;
	}
	if (off >= psize || size == 0 || in->ctx == NULL) {
		rc = 0;
		fuse_reply_buf(req, NULL, 0);
		goto out_replied;
	}
	end = off + (off_t)size > psize ? psize : off + (off_t)size;
	fb = (uint64_t)(off / CF_FS_BLOCK);
	lb = (uint64_t)((end - 1) / CF_FS_BLOCK);
	ctot = (size_t)(lb - fb + 1) * (size_t)fs->cb;
	start = CF_FS_HEADER_BYTES + (off_t)fb * fs->cb;
	pbuf = malloc((size_t)(lb - fb + 1) * CF_FS_BLOCK);
	if (pbuf == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	/* Large reads: the ciphertext where it lies (FS_MAP_MIN). */
	if (FS_MAP_ON && ctot >= FS_MAP_MIN &&
	    backing_size(fd, &csize) == 0 && csize > start) {
		got = (size_t)(csize - start) < ctot ? (size_t)(csize - start) :
		    ctot;
		if (map_range(fd, start, got, &map, &maplen, &cdata) < 0)
			map = NULL;
	}
	if (map == NULL) {
		cbuf = malloc(ctot);
		if (cbuf == NULL) {
			rc = -ENOMEM;
			goto out;
		}
		rc = read_full(fd, cbuf, ctot, start, &got);
		if (rc < 0)
			goto out;
		cdata = cbuf;
	}
	rj.fs = fs;
	rj.in = in;
	rj.cbuf = cdata;
	rj.mapped = map != NULL;
	rj.pbuf = pbuf;
	rj.got = got;
	rj.fb = fb;
	rj.psize = psize;
	atomic_init(&rj.bad, -2);
	rc = cf_fs_par_run(fs->par, open_blocks, &rj, (size_t)(lb - fb + 1));
	if (rc < 0) {
		long long bad = atomic_load(&rj.bad);

		if (bad >= 0)
			audit(fs, "fs.integrity", in, bad);
		rc = -EIO;
		goto out;
	}
	fuse_reply_buf(req, (const char *)pbuf + (off - (off_t)fb *
	    CF_FS_BLOCK), (size_t)(end - off));
	goto out_replied;
out:
	fuse_reply_err(req, -rc);
out_replied:
	pthread_rwlock_unlock(&in->rw);
	if (map != NULL)
		(void)munmap(map, maplen);
	free(cbuf);
	free(pbuf);
}

/*
 * The blocks of one write request.  seal_blocks seals a run of them and
 * writes it to the backing file at once, on both cores: one thread copies
 * a run into the page cache while the other seals the next, where sealing
 * everything first and writing it in one call left a core idle for the
 * copy (the larger cost of the two on a fast disk).
 */
struct wjob {
	struct fs *fs;
	struct fs_inode *in;
	int fd;
	const char *data;
	off_t off, end, psize;
	uint64_t fb, nl;		/* first block, the file's new last */
	uint64_t lb;			/* last block of the range */
	size_t lastlen;			/* ciphertext bytes of block lb */
	unsigned char *cbuf;		/* ciphertext of blocks fb.. */
	const unsigned char *old;	/* block ob's plaintext, or NULL */
	size_t oldlen;
	uint64_t ob;
};

/* Bytes of block b after a write of [off, end) into a file of psize. */
static size_t
new_len(off_t off, off_t end, off_t psize, uint64_t b, size_t *oldlen,
    off_t *ws, off_t *we)
{
	off_t bs = (off_t)b * CF_FS_BLOCK;

	*ws = off > bs ? off : bs;
	*we = end < bs + CF_FS_BLOCK ? end : bs + CF_FS_BLOCK;
	*oldlen = bs < psize ? (size_t)((psize - bs) > CF_FS_BLOCK ?
	    CF_FS_BLOCK : psize - bs) : 0;
	return (size_t)(*we - bs) > *oldlen ? (size_t)(*we - bs) : *oldlen;
}

/* Nonces drawn at once: one getrandom per this many blocks. */
#define SEAL_DRAW 32
/* Blocks sealed before they are written: 64 KiB, a helper's share. */
#define SEAL_RUN 16

static int
seal_blocks(void *arg, size_t lo, size_t hi)
{
	struct wjob *j = arg;
	struct fs *fs = j->fs;
	unsigned char pbuf[CF_FS_BLOCK], nonces[SEAL_DRAW * 24];
	const unsigned char *src;
	size_t i, k, len, oldlen, newlen, nb = cf_fs_nonce_bytes(j->in->ctx);
	off_t bs, ws, we;
	uint64_t b;
	int rc = 0;

	if (nb > 24)
		cf_misuse("seal_blocks: nonce too long");
	for (i = lo; i < hi && rc == 0; i++) {
		k = (i - lo) % SEAL_DRAW;
		if (k == 0)
			randombytes_buf(nonces, nb * (hi - i < SEAL_DRAW ?
			    hi - i : SEAL_DRAW));
		b = j->fb + i;
		bs = (off_t)b * CF_FS_BLOCK;
		newlen = new_len(j->off, j->end, j->psize, b, &oldlen, &ws,
		    &we);
		if (ws == bs && newlen == (size_t)(we - bs)) {
			/* Whole new content: seal it where it lies. */
			src = (const unsigned char *)j->data + (ws - j->off);
		} else {
			if (ws > bs || (size_t)(we - bs) < oldlen) {
				/* Partial block: merge with what is there
				 * (the old last block: read already). */
				if (j->old != NULL && b == j->ob) {
					memcpy(pbuf, j->old, j->oldlen);
					len = j->oldlen;
				} else {
					rc = read_block(fs, j->in, j->fd, b,
					    j->psize, pbuf, &len);
				}
				if (rc < 0)
					break;
				if (len < oldlen)
					memset(pbuf + len, 0, oldlen - len);
			}
			memcpy(pbuf + (ws - bs), j->data + (ws - j->off),
			    (size_t)(we - ws));
			src = pbuf;
		}
		memcpy(j->cbuf + i * (size_t)fs->cb, nonces + k * nb, nb);
		rc = cf_fs_block_seal_drawn(j->in->ctx, b, b == j->nl, src,
		    newlen, j->cbuf + i * (size_t)fs->cb);
		if (rc == 0 && (i + 1 == hi || (i + 1 - lo) % SEAL_RUN == 0)) {
			/* A run is sealed: into the backing file with it. */
			size_t first = i + 1 - ((i - lo) % SEAL_RUN + 1);
			size_t n = (i - first) * (size_t)fs->cb +
			    (b == j->lb ? j->lastlen : (size_t)fs->cb);

			rc = write_full(j->fd, j->cbuf + first * (size_t)fs->cb,
			    n, CF_FS_HEADER_BYTES + (off_t)(j->fb + first) *
			    fs->cb);
		}
	}
	sodium_memzero(pbuf, sizeof(pbuf));
	return rc;
}

/*
 * Writes size bytes at off to the open file fd: whole blocks are sealed
 * from data, partial ones merged with what is there, a large range on
 * two cores.  A write that would make the file longer and fails (a full
 * disk) leaves it as it was, like a local file system's; one inside the
 * file may leave each block it covers old or new.  Caller holds in->rw
 * exclusively.
 */
static int
do_write(struct fs *fs, struct fs_inode *in, int fd, const char *data,
    size_t size, off_t off)
{
	unsigned char pbuf[CF_FS_BLOCK], last[CF_FS_BLOCK];
	struct wjob j;
	off_t psize, psize0, end = off + (off_t)size, ws, we;
	uint64_t lb;
	size_t ctot, oldlen, lastlen = 0;
	int rc;

	if (size == 0)
		return 0;
	if (off < 0 || off > CF_FS_MAX_SIZE - (off_t)size)
		return -EFBIG;
	rc = ensure_ctx(fs, in, fd, 1);
	if (rc == 0)
		rc = gen_raise(fs, in, fd);
	if (rc < 0)
		return rc;
	rc = plain_size(fs, in, fd, &psize);
	if (rc < 0)
		return rc;
	psize0 = psize;
	if (end > psize0 && psize0 > 0) {
		/* Growing: the last block, to undo a failure with. */
		rc = read_block(fs, in, fd, (uint64_t)((psize0 - 1) /
		    CF_FS_BLOCK), psize0, last, &lastlen);
		if (rc < 0)
			return rc;
	}
	if (off > psize) {
		rc = do_truncate(fs, in, fd, off);
		if (rc < 0)
			goto out;
		psize = off;
	}
	j.fs = fs;
	j.in = in;
	j.fd = fd;
	j.data = data;
	j.off = off;
	j.end = end;
	j.psize = psize;
	j.fb = (uint64_t)(off / CF_FS_BLOCK);
	lb = (uint64_t)((end - 1) / CF_FS_BLOCK);
	j.nl = (uint64_t)(((end > psize ? end : psize) - 1) / CF_FS_BLOCK);
	/* Every block but the last of the range is whole. */
	ctot = (size_t)(lb - j.fb) * (size_t)fs->cb + new_len(off, end, psize,
	    lb, &oldlen, &ws, &we) + fs->ovh;
	j.lb = lb;
	j.lastlen = ctot - (size_t)(lb - j.fb) * (size_t)fs->cb;
	j.old = psize == psize0 && lastlen > 0 ? last : NULL;
	j.oldlen = lastlen;
	j.ob = psize0 > 0 ? (uint64_t)((psize0 - 1) / CF_FS_BLOCK) : 0;
	j.cbuf = malloc((size_t)(lb - j.fb + 1) * (size_t)fs->cb);
	if (j.cbuf == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	/* What the range replaces goes to a snapshot's delta first. */
	fs_snap_save(fs->snap, in->dev, in->ino, fd, CF_FS_HEADER_BYTES +
	    (off_t)j.fb * fs->cb, (off_t)ctot);
	rc = cf_fs_par_run(fs->par, seal_blocks, &j, (size_t)(lb - j.fb + 1));
	free(j.cbuf);
	if (rc == 0 && psize > 0 &&
	    (uint64_t)((psize - 1) / CF_FS_BLOCK) < j.fb) {
		/* The old last block is no longer the last. */
		uint64_t ol = (uint64_t)((psize - 1) / CF_FS_BLOCK);
		size_t len;

		if (psize == psize0) {
			memcpy(pbuf, last, lastlen);	/* read above */
			len = lastlen;
		} else {
			rc = read_block(fs, in, fd, ol, psize, pbuf, &len);
		}
		if (rc == 0)
			rc = put_block(fs, in, fd, ol, 0, pbuf, len);
		sodium_memzero(pbuf, sizeof(pbuf));
	}
	if (rc == 0)
		in->psize_set = end > psize ? end : psize;
out:
	if (rc < 0 && end > psize0)
		write_undo(fs, in, fd, psize0, last, lastlen);
	sodium_memzero(last, lastlen);
	return rc;
}

static void
op_write(fuse_req_t req, fuse_ino_t ino, const char *data, size_t size,
    off_t off, struct fuse_file_info *fi)
{
	struct fs_inode *in = inode_of(req, ino);
	int rc;

	snap_enter(fs_of(req));
	pthread_rwlock_wrlock(&in->rw);
	cow(fs_of(req), in);
	rc = do_write(fs_of(req), in, (int)fi->fh, data, size, off);
	pthread_rwlock_unlock(&in->rw);
	snap_leave(fs_of(req));
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_write(req, size);
}

/* Writes zeros over [off, end), which lies inside the file. */
static int
write_zeros(struct fs *fs, struct fs_inode *in, int fd, off_t off, off_t end)
{
	static const char zeros[CF_FS_BLOCK * 16];
	int rc = 0;

	while (rc == 0 && off < end) {
		size_t n = end - off > (off_t)sizeof(zeros) ? sizeof(zeros) :
		    (size_t)(end - off);

		rc = do_write(fs, in, fd, zeros, n, off);
		off += (off_t)n;
	}
	return rc;
}

/*
 * Makes [off, end) of the file read as zeros: edge blocks are rewritten,
 * whole blocks become holes in the backing file (an all-zero ciphertext
 * block is a hole, docs/format/fs.md).  end <= the plaintext size.
 */
static int
zero_range(struct fs *fs, struct fs_inode *in, int fd, off_t off, off_t end)
{
	off_t first = (off + CF_FS_BLOCK - 1) / CF_FS_BLOCK * CF_FS_BLOCK;
	off_t last = end / CF_FS_BLOCK * CF_FS_BLOCK;
	off_t psize;
	int rc;

	if (off >= end)
		return 0;
	/* The file's last block stays sealed: it is rewritten, not punched. */
	rc = plain_size(fs, in, fd, &psize);
	if (rc < 0)
		return rc;
	if (psize > 0 && last > (psize - 1) / CF_FS_BLOCK * CF_FS_BLOCK)
		last = (psize - 1) / CF_FS_BLOCK * CF_FS_BLOCK;
	if (last < first)
		last = first;
	if (first >= last)	/* no whole block inside */
		return write_zeros(fs, in, fd, off, end);
	rc = write_zeros(fs, in, fd, off, first);
	if (rc == 0)
		rc = write_zeros(fs, in, fd, last, end);
	if (rc == 0)
		rc = mark_sparse(fs, in, fd);
	if (rc < 0)
		return rc;
	fs_snap_save(fs->snap, in->dev, in->ino, fd, CF_FS_HEADER_BYTES +
	    first / CF_FS_BLOCK * fs->cb, (last - first) / CF_FS_BLOCK *
	    fs->cb);
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
	    CF_FS_HEADER_BYTES + first / CF_FS_BLOCK * fs->cb,
	    (last - first) / CF_FS_BLOCK * fs->cb) == 0)
		return 0;
	if (errno != EOPNOTSUPP)
		return -errno;
	return write_zeros(fs, in, fd, first, last);
}

static void
op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off,
    off_t len, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *in = inode_of(req, ino);
	int fd = (int)fi->fh, rc;
	off_t psize, end;

	if ((mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE |
	    FALLOC_FL_ZERO_RANGE)) != 0) {
		fuse_reply_err(req, EOPNOTSUPP);	/* collapse, insert */
		return;
	}
	if (off < 0 || len <= 0 || off > CF_FS_MAX_SIZE - len) {
		fuse_reply_err(req, off < 0 || len <= 0 ? EINVAL : EFBIG);
		return;
	}
	end = off + len;
	snap_enter(fs);
	pthread_rwlock_wrlock(&in->rw);
	cow(fs, in);
	rc = ensure_ctx(fs, in, fd, 1);
	if (rc == 0)
		rc = gen_raise(fs, in, fd);
	if (rc == 0)
		rc = plain_size(fs, in, fd, &psize);
	if (rc < 0)
		goto out;
	if (!(mode & FALLOC_FL_KEEP_SIZE) && end > psize) {
		rc = do_truncate(fs, in, fd, end);
		if (rc < 0)
			goto out;
		psize = end;
	}
	if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
		rc = zero_range(fs, in, fd, off, end < psize ? end : psize);
	} else {
		/* Reserve the backing space; what it reserves reads as holes,
		 * so as zeros. */
		off_t cs = CF_FS_HEADER_BYTES + off / CF_FS_BLOCK * fs->cb;

		if (fallocate(fd, FALLOC_FL_KEEP_SIZE, cs,
		    cf_fs_cipher_size(fs->keys->cipher, end) - cs) != 0 &&
		    errno != EOPNOTSUPP)
			rc = -errno;
	}
out:
	pthread_rwlock_unlock(&in->rw);
	snap_leave(fs);
	fuse_reply_err(req, -rc);
}

/*
 * The kernel may keep an inode (and so its file context) across opens;
 * check on every open that the header on disk is still the one the
 * context was made from, and that the file's generation is not older
 * than the log's, so a replaced header or an older copy is noticed.
 * Caller holds in->rw exclusively.
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
	/* The context outlives this open while another handle (or a release
	 * the kernel has not sent yet) keeps it: an older copy put back
	 * meanwhile keeps the header, so its generation is checked here too,
	 * not only when a context is made. */
	return gen_check(fs, in, fd);
}

/* Opens the backing file read-write (reads are needed for partial writes). */
static int
open_backing(struct fs *fs, struct fs_inode *in, int flags)
{
	char path[64];
	int fd, pfd;

	flags &= ~(O_APPEND | O_TRUNC | O_CREAT | O_EXCL | O_NOFOLLOW |
	    O_ACCMODE | O_DIRECT);
	if (in->fh != NULL) {
		/* Straight from the handle: no path walk through /proc. */
		fd = open_by_handle_at(fs->mount_fd, in->fh, flags | O_RDWR |
		    O_CLOEXEC);
		if (fd < 0 && (errno == EROFS || errno == EACCES))
			fd = open_by_handle_at(fs->mount_fd, in->fh, flags |
			    O_RDONLY | O_CLOEXEC);
		if (fd >= 0 || errno != ESTALE)
			return fd < 0 ? -errno : fd;
		return -ENOENT;
	}
	pfd = ifd_get(fs, in);
	if (pfd < 0)
		return pfd;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", pfd);
	fd = open(path, flags | O_RDWR | O_CLOEXEC);
	if (fd < 0 && (errno == EROFS || errno == EACCES))
		fd = open(path, flags | O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		fd = -errno;
	ifd_put(fs, in);
	return fd;
}

/*
 * A sequential reader gets 128 KiB requests by default (the kernel's
 * readahead window for a FUSE mount, which INIT can only lower); 1 MiB
 * requests make reads about 30 % faster here (fewer round trips, both
 * cores on each request).  A 4 MiB window keeps up to four of them in
 * flight instead of one or two, so the daemon is less often idle
 * waiting for the next request (docs/mount.md).  The window is the
 * mount's bdi setting in sysfs, found by the mount's device in
 * /proc/self/mountinfo, and must be raised after INIT's reply (the first
 * open does it); where either is not writable (no root, a container) the
 * default stays.
 */
#define FS_READAHEAD_KB "4096"

static void
unescape_mountinfo(char *s)
{
	char *w = s;

	for (; *s != '\0'; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' &&
		    s[2] >= '0' && s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*w++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 +
			    (s[3] - '0'));
			s += 3;
		} else {
			*w++ = *s;
		}
	}
	*w = '\0';
}

static void
raise_readahead(const char *mnt)
{
	char line[PATH_MAX * 2 + 512], path[96], *f[5], *save, *p;
	unsigned maj = 0, min = 0, found = 0;
	FILE *mi;
	int fd, i;

	mi = fopen("/proc/self/mountinfo", "re");
	if (mi == NULL)
		return;
	while (fgets(line, sizeof(line), mi) != NULL) {
		p = line;
		for (i = 0; i < 5; i++, p = NULL)
			if ((f[i] = strtok_r(p, " ", &save)) == NULL)
				break;
		if (i < 5)
			continue;
		unescape_mountinfo(f[4]);
		/* The last match wins: ours is mounted over what was there. */
		if (strcmp(f[4], mnt) == 0 &&
		    sscanf(f[2], "%u:%u", &maj, &min) == 2)
			found = 1;
	}
	fclose(mi);
	if (!found)
		return;
	snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb",
	    maj, min);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	(void)!write(fd, FS_READAHEAD_KB, strlen(FS_READAHEAD_KB));
	close(fd);
}

static void
op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *in = inode_of(req, ino);
	int fd, rc;

	/* Once INIT is done (it would undo it): see raise_readahead. */
	if (!atomic_load(&fs->ra_done) && !atomic_exchange(&fs->ra_done, 1) &&
	    fs->mnt_path != NULL)
		raise_readahead(fs->mnt_path);
	fd = open_backing(fs, in, fi->flags);
	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	/* An open file keeps its inode descriptor: fchmod and the like on
	 * an unlinked file must not depend on reopening a handle. */
	rc = ifd_get(fs, in);
	if (rc >= 0) {
		if (fi->flags & O_TRUNC)
			snap_enter(fs);
		pthread_rwlock_wrlock(&in->rw);
		rc = recheck_header(fs, in, fd);
		if (rc == 0 && (fi->flags & O_TRUNC) != 0) {
			cow(fs, in);
			rc = do_truncate(fs, in, fd, 0);
		}
		if (rc == 0)
			in->opens++;
		pthread_rwlock_unlock(&in->rw);
		if (fi->flags & O_TRUNC)
			snap_leave(fs);
		if (rc < 0)
			ifd_put(fs, in);
	}
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
	ifd_put(fs_of(req), in);
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
own(fuse_req_t req, int dirfd, const char *b)
{
	const struct fuse_ctx *c = fuse_req_ctx(req);

	/* The daemon runs as root; new objects belong to the caller.  A
	 * root caller owns them already. */
	if (c->uid != 0 || c->gid != 0)
		(void)!fchownat(dirfd, b, c->uid, c->gid, AT_SYMLINK_NOFOLLOW);
}

/* Ends a create-type op: the error, or the new entry owned by the caller. */
static void
reply_created(fuse_req_t req, struct fs_inode *parent, int pfd,
    const struct ename *en, int rc)
{
	struct fuse_entry_param e;

	if (rc == 0) {
		own(req, pfd, en->b);
		rc = do_lookup(fs_of(req), parent, en->b, &e);
	}
	ifd_put(fs_of(req), parent);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_entry(req, &e);
}

/*
 * Starts an op on name in directory p: encrypts the name and pins the
 * directory's descriptor (*pfd); ifd_put(p) when done if it returns 0.
 */
static int
begin(fuse_req_t req, struct fs_inode *p, const char *name, struct ename *en,
    int *pfd)
{
	int rc = enc_name(fs_of(req), p, name, en);

	if (rc < 0)
		return rc;
	*pfd = ifd_get(fs_of(req), p);
	return *pfd < 0 ? *pfd : 0;
}

static void
op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct fs_inode *p = inode_of(req, parent);
	struct ename en;
	int rc, dfd, pfd;

	rc = begin(req, p, name, &en, &pfd);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	rc = sidecar_write(pfd, &en);
	if (rc == 0 && mkdirat(pfd, en.b, 0700) != 0)
		rc = -errno;
	if (rc < 0)
		goto out;
	dfd = openat(pfd, en.b, O_RDONLY | O_DIRECTORY | O_CLOEXEC |
	    O_NOFOLLOW);
	/*
	 * A snapshot's live pass may copy the directory before its IV, mode
	 * and owner are set (and its inode number may be a removed
	 * directory's): the new directory itself is marked for the frozen
	 * pass too, not only its parent.
	 */
	if (dfd >= 0) {
		struct stat dst;

		if (fstat(dfd, &dst) == 0)
			fs_snap_touch(fs_of(req)->snap, dst.st_dev,
			    dst.st_ino);
	}
	rc = dfd < 0 ? -errno : write_diriv(dfd);
	/* The IV exists before the directory gets its requested mode, so
	 * even a mode without owner write (0151) is reported exactly. */
	if (rc == 0 && fchmod(dfd, mode & 07777) != 0)
		rc = -errno;
	if (dfd >= 0)
		close(dfd);
	if (rc < 0)
		unlinkat(pfd, en.b, AT_REMOVEDIR);
out:
	reply_created(req, p, pfd, &en, rc);
}

static void
op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
    dev_t rdev)
{
	struct fs_inode *p = inode_of(req, parent);
	struct ename en;
	int rc, pfd;

	rc = begin(req, p, name, &en, &pfd);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	rc = sidecar_write(pfd, &en);
	if (rc == 0 && mknodat(pfd, en.b, mode, rdev) != 0)
		rc = -errno;
	reply_created(req, p, pfd, &en, rc);
}

static void
op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
    struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *p = inode_of(req, parent), *in;
	struct fuse_entry_param e;
	struct ename en;
	int fd = -1, rc, pfd;

	rc = begin(req, p, name, &en, &pfd);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	rc = sidecar_write(pfd, &en);
	if (rc < 0)
		goto fail;
	fd = openat(pfd, en.b, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC |
	    O_NOFOLLOW, mode & 07777);
	if (fd < 0) {
		rc = -errno;
		goto fail;
	}
	own(req, pfd, en.b);
	rc = do_lookup(fs, p, en.b, &e);
	if (rc < 0)
		goto fail;
	ifd_put(fs, p);
	/* The header is written by the first write, as for an empty file
	 * made by mknod: creating many empty files costs no data write. */
	e.attr.st_size = 0;
	in = (struct fs_inode *)(uintptr_t)e.ino;
	if (ifd_get(fs, in) < 0) {
		/* Cannot happen for a fresh inode, whose fd is cached; but an
		 * open file must hold its descriptor (see op_open). */
		close(fd);
		unref(fs, in, 1);
		fuse_reply_err(req, EIO);
		return;
	}
	pthread_rwlock_wrlock(&in->rw);
	in->opens++;
	pthread_rwlock_unlock(&in->rw);
	fi->fh = (uint64_t)fd;
	if (fuse_reply_create(req, &e, fi) == -ENOENT)
		close(fd);
	return;
fail:
	if (fd >= 0) {
		close(fd);
		unlinkat(pfd, en.b, 0);
	}
	ifd_put(fs, p);
	fuse_reply_err(req, -rc);
}

/* Size of a buffer for an encrypted symlink target of PATH_MAX-1 bytes. */
#define ETARGET_CAP 8192U

/* Stores a long encrypted target in the store's links/ directory. */
static int
long_target_write(struct fs *fs, const char *etarget, char *hashed)
{
	size_t len = strlen(etarget);
	int fd, rc = 0;

	cf_fs_long_target(etarget, hashed);
	/* Named by its content's hash; each symlink has a fresh nonce, so an
	 * existing file of this name holds this content already. */
	fd = openat(fs->links_fd, hashed + 5, O_WRONLY | O_CREAT | O_EXCL |
	    O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 && errno == EEXIST)
		return 0;
	if (fd < 0)
		return -errno;
	if (write(fd, etarget, len) != (ssize_t)len || fsync(fd) != 0)
		rc = -EIO;
	close(fd);
	return rc;
}

static void
op_symlink(fuse_req_t req, const char *target, fuse_ino_t parent,
    const char *name)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *p = inode_of(req, parent);
	char *etarget, hashed[CF_FS_HASHED_BYTES];
	const char *stored;
	struct ename en;
	int rc, pfd;

	if (strlen(target) >= PATH_MAX) {
		fuse_reply_err(req, ENAMETOOLONG);
		return;
	}
	rc = begin(req, p, name, &en, &pfd);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	etarget = malloc(ETARGET_CAP);
	if (etarget == NULL) {
		reply_created(req, p, pfd, &en, -ENOMEM);
		return;
	}
	rc = cf_fs_link_encrypt(fs->keys, target, etarget, ETARGET_CAP);
	stored = etarget;
	if (rc == 0 && strlen(etarget) > CF_FS_LINK_MAX) {
		rc = long_target_write(fs, etarget, hashed);
		stored = hashed;
	}
	if (rc == 0)
		rc = sidecar_write(pfd, &en);
	if (rc == 0 && symlinkat(stored, pfd, en.b) != 0)
		rc = -errno;
	free(etarget);
	reply_created(req, p, pfd, &en, rc);
}

/* Reads the encrypted target of symlink fd into etarget (ETARGET_CAP). */
static int
read_etarget(struct fs *fs, int fd, char *etarget)
{
	char check[CF_FS_HASHED_BYTES];
	ssize_t n;
	int lfd;

	n = readlinkat(fd, "", etarget, CF_FS_LINK_MAX + 1);
	if (n < 0)
		return -errno;
	etarget[n] = '\0';
	if (n != CF_FS_HASHED_BYTES - 1 ||
	    strncmp(etarget, CF_FS_TARGET_PREFIX, 5) != 0)
		return 0;
	memcpy(check, etarget, sizeof(check));
	lfd = openat(fs->links_fd, check + 5, O_RDONLY | O_NOFOLLOW |
	    O_NONBLOCK | O_CLOEXEC);
	if (lfd < 0)
		return -EIO;
	n = read(lfd, etarget, ETARGET_CAP - 1);
	close(lfd);
	if (n <= 0 || n >= (ssize_t)ETARGET_CAP - 1)
		return -EIO;
	etarget[n] = '\0';
	{
		char again[CF_FS_HASHED_BYTES];

		cf_fs_long_target(etarget, again);
		if (strcmp(again, check) != 0)
			return -EIO;	/* not the file the link names */
	}
	return 0;
}

static void
op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *in = inode_of(req, ino);
	char *enc, plain[PATH_MAX];
	int rc, fd;

	enc = malloc(ETARGET_CAP);
	if (enc == NULL) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fd = ifd_get(fs, in);
	rc = fd < 0 ? fd : read_etarget(fs, fd, enc);
	if (fd >= 0)
		ifd_put(fs, in);
	if (rc == 0 && cf_fs_link_decrypt(fs->keys, enc, plain,
	    sizeof(plain)) < 0)
		rc = -EIO;
	free(enc);
	if (rc == -EIO)
		audit(fs, "fs.integrity", in, -2);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_readlink(req, plain);
}

static void
op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *in = inode_of(req, ino), *p = inode_of(req, parent);
	struct ename en;
	char path[64];
	int rc, pfd, fd;

	rc = begin(req, p, name, &en, &pfd);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	fd = ifd_get(fs, in);
	if (fd < 0) {
		reply_created(req, p, pfd, &en, fd);
		return;
	}
	rc = sidecar_write(pfd, &en);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	if (rc == 0 && linkat(AT_FDCWD, path, pfd, en.b, AT_SYMLINK_FOLLOW))
		rc = -errno;
	ifd_put(fs, in);
	/* A new name for an existing object: the caller does not own it. */
	if (rc == 0) {
		struct fuse_entry_param e;

		rc = do_lookup(fs, p, en.b, &e);
		ifd_put(fs, p);
		if (rc == 0)
			fuse_reply_entry(req, &e);
		else
			fuse_reply_err(req, -rc);
		return;
	}
	reply_created(req, p, pfd, &en, rc);
}

static void
op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *p = inode_of(req, parent);
	struct fs_unlink_plan up;
	struct ename en;
	int rc, pfd;

	rc = begin(req, p, name, &en, &pfd);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	fs_unlink_plan(fs->keys, pfd, en.b, fs->gen != NULL, &up);
	if (unlinkat(pfd, en.b, 0) != 0) {
		rc = -errno;
	} else {
		sidecar_unlink(pfd, &en);
		fs_unlink_after(fs->links_fd, fs->gen, &up);
	}
	ifd_put(fs, p);
	fuse_reply_err(req, -rc);
}

/*
 * 1 if the backing directory holds nothing but its IV and sidecars whose
 * entries are gone; with clean set, removes those (rmdir is about to).
 */
static int
dir_empty(int parentfd, const char *b, int clean)
{
	struct dirent *de;
	DIR *d;
	int fd, empty = 1;

	fd = openat(parentfd, b, O_RDONLY | O_DIRECTORY | O_CLOEXEC |
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
		    strcmp(de->d_name, "..") == 0)
			continue;
		if (clean && (strcmp(de->d_name, CF_FS_DIRIV_NAME) == 0 ||
		    is_sidecar(de->d_name))) {
			(void)unlinkat(dirfd(d), de->d_name, 0);
			continue;
		}
		if (strcmp(de->d_name, CF_FS_DIRIV_NAME) == 0 ||
		    is_sidecar(de->d_name))
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
	struct fs *fs = fs_of(req);
	struct fs_inode *p = inode_of(req, parent);
	struct ename en;
	int rc, pfd;

	rc = begin(req, p, name, &en, &pfd);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	rc = dir_empty(pfd, en.b, 0);
	if (rc == 0)
		rc = -ENOTEMPTY;
	/* The kernel holds the directory's lock: nothing is created in it
	 * between the emptiness check and here. */
	if (rc > 0)
		rc = dir_empty(pfd, en.b, 1);
	if (rc > 0) {
		rc = unlinkat(pfd, en.b, AT_REMOVEDIR) == 0 ? 0 : -errno;
		if (rc == 0)
			sidecar_unlink(pfd, &en);
	}
	ifd_put(fs, p);
	fuse_reply_err(req, -rc);
}

static void
op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
    fuse_ino_t newparent, const char *newname, unsigned int flags)
{
	struct fs *fs = fs_of(req);
	struct fs_inode *p = inode_of(req, parent), *np = inode_of(req,
	    newparent);
	struct fs_unlink_plan up;
	struct ename en, nen;
	int rc, pfd, npfd;

	if ((flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE)) != 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	rc = enc_name(fs, np, newname, &nen);
	if (rc == 0)
		rc = begin(req, p, name, &en, &pfd);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	npfd = ifd_get(fs, np);
	if (npfd < 0) {
		ifd_put(fs, p);
		fuse_reply_err(req, -npfd);
		return;
	}
	/* Names stay where they are in an exchange; otherwise the new name
	 * needs its sidecar first and the old one's goes after. */
	memset(&up, 0, sizeof(up));
	if (!(flags & RENAME_EXCHANGE)) {
		rc = sidecar_write(npfd, &nen);
		/* The object it replaces (a link to the source itself has
		 * more than one link: left alone). */
		if (!(flags & RENAME_NOREPLACE))
			fs_unlink_plan(fs->keys, npfd, nen.b, fs->gen != NULL,
			    &up);
	}
	if (rc == 0 && renameat2(pfd, en.b, npfd, nen.b, flags) != 0)
		rc = -errno;
	if (rc == 0 && !(flags & RENAME_EXCHANGE) &&
	    (pfd != npfd || strcmp(en.b, nen.b) != 0)) {
		sidecar_unlink(pfd, &en);
		fs_unlink_after(fs->links_fd, fs->gen, &up);
	}
	ifd_put(fs, np);
	ifd_put(fs, p);
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
	int rc = 0, fd, ifd;

	snap_enter(fs);
	ifd = ifd_get(fs, in);
	if (ifd < 0) {
		snap_leave(fs);
		fuse_reply_err(req, -ifd);
		return;
	}
	cow(fs, in);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", ifd);
	if ((valid & FUSE_SET_ATTR_MODE) != 0 &&
	    fchmodat(AT_FDCWD, path, attr->st_mode & 07777, 0) != 0) {
		rc = -errno;
		goto out;
	}
	if ((valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) != 0 &&
	    fchownat(ifd, "", (valid & FUSE_SET_ATTR_UID) ? attr->st_uid :
	    (uid_t)-1, (valid & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1,
	    AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
		rc = -errno;
		goto out;
	}
	if ((valid & FUSE_SET_ATTR_SIZE) != 0) {
		fd = fi != NULL ? (int)fi->fh : open_backing(fs, in, 0);
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
	rc = stat_fd(ifd, &st);
	if (rc < 0)
		goto out;
	plain_attr(fs, ifd, &st);
	ifd_put(fs, in);
	snap_leave(fs);
	fuse_reply_attr(req, &st, FS_TTL);
	return;
out:
	ifd_put(fs, in);
	snap_leave(fs);
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
	sv.f_namemax = CF_FS_LONG_NAME_MAX;
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

	rc = load_diriv(fs_of(req), in);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	d = calloc(1, sizeof(*d));
	rc = ifd_get(fs_of(req), in);
	fd = rc < 0 ? -1 : openat(rc, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rc >= 0)
		ifd_put(fs_of(req), in);
	else
		errno = -rc;
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
	char *buf, name[CF_FS_LONG_NAME_MAX + 1];
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
			int bad;

			if (strncmp(shown, CF_FS_LONG_PREFIX,
			    strlen(CF_FS_LONG_PREFIX)) == 0)
				bad = long_name_read(fs, in, dirfd(d->dp),
				    shown, name, sizeof(name)) < 0;
			else
				bad = strncmp(shown, "cf.", 3) == 0 ||
				    cf_fs_name_decrypt(fs->keys, in->diriv,
				    shown, name, sizeof(name)) < 0;
			if (bad) {
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

/* A path to the inode for the *xattr calls; ifd_put(in) when done. */
static int
proc_path(struct fs *fs, struct fs_inode *in, char *buf, size_t len)
{
	int fd = ifd_get(fs, in);

	if (fd < 0)
		return fd;
	snprintf(buf, len, "/proc/self/fd/%d", fd);
	return 0;
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
	snap_enter(fs);
	if (rc == 0)
		rc = proc_path(fs, in, path, sizeof(path));
	if (rc == 0) {
		cow(fs, in);
		if (setxattr(path, sname, blob, size + XATTR_OVH, flags))
			rc = -errno;
		ifd_put(fs, in);
	}
	snap_leave(fs);
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
	blob = malloc(XATTR_MAX);
	plain = malloc(XATTR_MAX);
	if (blob == NULL || plain == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	rc = proc_path(fs, in, path, sizeof(path));
	if (rc < 0)
		goto out;
	n = getxattr(path, sname, blob, XATTR_MAX);
	if (n < 0)
		rc = -errno;
	ifd_put(fs, in);
	if (rc < 0)
		goto out;
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

	rc = -proc_path(fs, in, path, sizeof(path));
	if (rc != 0) {
		fuse_reply_err(req, rc);
		return;
	}
	n = listxattr(path, NULL, 0);
	if (n < 0) {
		rc = errno;
		ifd_put(fs, in);
		fuse_reply_err(req, rc);
		return;
	}
	raw = malloc((size_t)n + 1);
	out = malloc((size_t)n + 1);
	if (raw == NULL || out == NULL) {
		ifd_put(fs, in);
		rc = ENOMEM;
		goto out;
	}
	n = listxattr(path, raw, (size_t)n);
	ifd_put(fs, in);
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
	snap_enter(fs);
	if (rc == 0)
		rc = proc_path(fs, inode_of(req, ino), path, sizeof(path));
	if (rc == 0) {
		cow(fs, inode_of(req, ino));
		if (removexattr(path, sname) != 0)
			rc = -errno;
		ifd_put(fs, inode_of(req, ino));
	}
	snap_leave(fs);
	fuse_reply_err(req, -rc);
}

static void
op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	/* Directory operations on different names may run in parallel. */
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	/* No writeback cache: a snapshot freezes our writers, not the
	 * kernel's dirty pages, so a write it had not sent yet could land
	 * half on each side of a snapshot (docs/mount.md). */
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
}

/* A snapshot's live pass notes directory p's entries are changing. */
static void
touch_dir(fuse_req_t req, fuse_ino_t p)
{
	struct fs_inode *in = inode_of(req, p);

	if (in != &fs_of(req)->root)	/* data/: always redone */
		fs_snap_touch(fs_of(req)->snap, in->dev, in->ino);
}

/*
 * Namespace changes wait while a snapshot's frozen pass runs, and mark
 * the directories they change during its live pass (rename: both).
 */
#define FROZEN(name, params, args, p2)					\
static void								\
frozen_##name params							\
{									\
	struct fs *fs_ = fs_of(req);					\
									\
	snap_enter(fs_);						\
	touch_dir(req, p);						\
	if ((p2) != 0 && (p2) != p)					\
		touch_dir(req, (p2));					\
	op_##name args;							\
	snap_leave(fs_);						\
}
FROZEN(mknod, (fuse_req_t req, fuse_ino_t p, const char *n, mode_t m,
    dev_t r), (req, p, n, m, r), 0)
FROZEN(mkdir, (fuse_req_t req, fuse_ino_t p, const char *n, mode_t m),
    (req, p, n, m), 0)
FROZEN(unlink, (fuse_req_t req, fuse_ino_t p, const char *n), (req, p, n), 0)
FROZEN(rmdir, (fuse_req_t req, fuse_ino_t p, const char *n), (req, p, n), 0)
FROZEN(symlink, (fuse_req_t req, const char *t, fuse_ino_t p,
    const char *n), (req, t, p, n), 0)
FROZEN(rename, (fuse_req_t req, fuse_ino_t p, const char *n, fuse_ino_t np,
    const char *nn, unsigned int f), (req, p, n, np, nn, f), np)
FROZEN(link, (fuse_req_t req, fuse_ino_t i, fuse_ino_t p, const char *n),
    (req, i, p, n), 0)
FROZEN(create, (fuse_req_t req, fuse_ino_t p, const char *n, mode_t m,
    struct fuse_file_info *fi), (req, p, n, m, fi), 0)

static const struct fuse_lowlevel_ops fs_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readlink = op_readlink,
	.mknod = frozen_mknod,
	.mkdir = frozen_mkdir,
	.unlink = frozen_unlink,
	.rmdir = frozen_rmdir,
	.symlink = frozen_symlink,
	.rename = frozen_rename,
	.link = frozen_link,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.release = op_release,
	.fsync = op_fsync,
	.fallocate = op_fallocate,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_releasedir,
	.fsyncdir = op_fsyncdir,
	.statfs = op_statfs,
	.create = frozen_create,
	.setxattr = op_setxattr,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.removexattr = op_removexattr,
};

/* ---- mounting ------------------------------------------------------------- */

/* ---- root key rotation ------------------------------------------------ */

/*
 * fs_rekey.c rewrites a file of the mounted store in place: fn runs on
 * the file name of dirfd (open read-write as fd) holding the inode's lock
 * exclusively, so no reader or writer of it sees a half-rewritten file,
 * after a snapshot that shares it got its copy; then an open file's
 * context is made again from the new header (same file id).
 */
static int
rekey_exclusive(void *arg, int dirfd, const char *name,
    int (*fn)(void *fnarg, int fd), void *fnarg)
{
	struct fs *fs = arg;
	struct fuse_entry_param e;
	struct fs_inode *in;
	int fd, rc;

	fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	snap_enter(fs);
	rc = lookup_fd(fs, fd, &e);
	if (rc < 0) {
		snap_leave(fs);
		return rc;
	}
	in = (struct fs_inode *)(uintptr_t)e.ino;
	if (!S_ISREG(e.attr.st_mode)) {
		rc = 0;
		goto out;
	}
	fd = open_backing(fs, in, 0);
	if (fd < 0) {
		rc = fd;
		goto out;
	}
	pthread_rwlock_wrlock(&in->rw);
	cow(fs, in);
	/* Rewritten in place, all of it: a delta saves it all first. */
	fs_snap_save(fs->snap, in->dev, in->ino, fd, 0, -1);
	rc = fn(fnarg, fd);
	if (rc == 0 && in->ctx != NULL) {
		unsigned char buf[CF_FS_HEADER_BYTES];
		struct cf_fs_header h;
		size_t got = 0;

		cf_fs_file_ctx_free(in->ctx);
		in->ctx = NULL;
		if (read_full(fd, buf, sizeof(buf), 0, &got) == 0 &&
		    got == sizeof(buf) && cf_fs_header_decode(&h, buf,
		    got) == 0)
			(void)!cf_fs_file_ctx_new(&in->ctx, fs->keys, &h);
	}
	pthread_rwlock_unlock(&in->rw);
	close(fd);
out:
	unref(fs, in, 1);
	snap_leave(fs);
	return rc;
}

int
cf_fs_store_init(const struct cf_fs_keys *keys, const char *backing)
{
	unsigned char blob[CF_FS_MARKER2_BYTES + 1];
	size_t len;
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
	/* Names are under two versions until a re-keying run ends. */
	if (fs_metakey_pending(dfd)) {
		rc = -EINPROGRESS;
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
		rc = fs_marker_seal(keys, blob, &len);
		if (rc < 0)
			goto out;
		fd = openat(dfd, FS_STORE_MARKER, O_WRONLY | O_CREAT | O_EXCL |
		    O_CLOEXEC, 0400);
		if (fd < 0 || write(fd, blob, len) != (ssize_t)len ||
		    fsync(fd) != 0) {
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
	if (n < 0 || fs_marker_open(keys, blob, (size_t)n) != 0) {
		rc = -EBADMSG;
		goto out;
	}
out:
	close(dfd);
	return rc;
}

/*
 * The daemon's pages stay in memory (docs/crypto.md, "Secrets in memory"):
 * the AES key schedules of open files live in OpenSSL's heap for as long
 * as the files are open, and must not reach the swap device.  Pages are
 * locked as they are first touched (MCL_ONFAULT), so the RSS is what it
 * would be.  Where locking could make a later allocation fail (no
 * CAP_IPC_LOCK and a finite RLIMIT_MEMLOCK), nothing is locked and the
 * daemon says so.
 */
static void
lock_pages(void)
{
	int rc = cf_ks_lock_memory();

	if (rc == 0)
		fprintf(stderr, "coffer: the daemon's memory is not locked "
		    "(no CAP_IPC_LOCK and RLIMIT_MEMLOCK is finite): key "
		    "schedules of open files could be swapped out\n");
	else if (rc < 0)
		fprintf(stderr, "coffer: cannot lock the daemon's memory: "
		    "%s\n", strerror(-rc));
}

int
cf_fs_mount(struct cf_fs_keys *keys, const struct cf_fs_mount_opts *o)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_loop_config *lc = NULL;
	struct fuse_session *se = NULL;
	struct fs *fs;
	char opts[512], *abs_backing = NULL, *abs_mnt = NULL;
	int rc = -EIO;

	fs = calloc(1, sizeof(*fs));
	if (fs == NULL)
		return -ENOMEM;
	pthread_mutex_init(&fs->mutex, NULL);
	pthread_mutex_init(&fs->audit_mutex, NULL);
	pthread_mutex_init(&fs->fd_mutex, NULL);
	{
		pthread_rwlockattr_t ra;

		pthread_rwlockattr_init(&ra);
		pthread_rwlockattr_setkind_np(&ra,
		    PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
		pthread_rwlock_init(&fs->snap_rw, &ra);
		pthread_rwlockattr_destroy(&ra);
	}
	pthread_rwlock_init(&fs->root.rw, NULL);
	fs->lru.lru_next = fs->lru.lru_prev = &fs->lru;
	fs->links_fd = -1;
	fs->mount_fd = -1;
	{
		/* Open files and cached inode descriptors: as many as we may
		 * have; half of them for the inode cache (see ifd_get). */
		struct rlimit rl;

		rl.rlim_cur = rl.rlim_max = 1048576;	/* fs.nr_open default */
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0 &&
		    getrlimit(RLIMIT_NOFILE, &rl) == 0) {
			rl.rlim_cur = rl.rlim_max;	/* not root: soft = hard */
			(void)setrlimit(RLIMIT_NOFILE, &rl);
		}
		if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
			rl.rlim_cur = 1024;
		fs->fd_cap = rl.rlim_cur / 2 > 32 ? (unsigned long)rl.rlim_cur /
		    2 : 32;
		if (getenv("COFFER_FS_FD_CAP") != NULL)	/* tests: force reuse */
			fs->fd_cap = strtoul(getenv("COFFER_FS_FD_CAP"), NULL,
			    10);
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
	{
		/* Long symlink targets live here (created for old stores). */
		char links[PATH_MAX];

		snprintf(links, sizeof(links), "%s/%s", o->backing,
		    CF_FS_LINKS_DIR);
		if (mkdir(links, 0700) != 0 && errno != EEXIST) {
			rc = -errno;
			goto out;
		}
		fs->links_fd = open(links, O_PATH | O_DIRECTORY | O_CLOEXEC |
		    O_NOFOLLOW);
		if (fs->links_fd < 0) {
			rc = -errno;
			goto out;
		}
	}
	{
		/* Handles work if one can be made and opened again here. */
		struct file_handle *h;
		int fd;

		fs->mount_fd = openat(fs->root.fd, ".", O_RDONLY |
		    O_DIRECTORY | O_CLOEXEC);
		fs->handles = fs->mount_fd >= 0;
		h = make_handle(fs, fs->root.fd);
		fd = h == NULL ? -1 : open_by_handle_at(fs->mount_fd, h, O_PATH |
		    O_CLOEXEC);
		fs->handles = fd >= 0;
		if (fd >= 0)
			close(fd);
		free(h);
	}
	if (o->gen_log != NULL) {
		/* Before daemonizing: the path may be relative.  Accepting
		 * rollbacks starts the log anew: what the store holds now is
		 * the newest state of every file. */
		rc = fs_gen_open(&fs->gen, o->gen_log, o->accept_rollback);
		if (rc == 0 && o->accept_rollback && o->home != NULL) {
			struct cf_ks_audit_field f[] = {
				{ "tenant", o->tenant, 0 },
			};

			(void)!cf_ks_audit_append(o->home,
			    "fs.generations_reset", f, 1);
		}
		if (rc == -EPROTO)
			fprintf(stderr, "coffer: the generation log %s is "
			    "damaged; mount with -o accept_rollback to start "
			    "a new one (docs/mount.md)\n", o->gen_log);
		if (rc < 0)
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
	/*
	 * The control socket listens before the mount appears, so a backup
	 * started as soon as the mount is visible queues on it instead of
	 * finding none and reading the store live; its thread starts in the
	 * daemon, after fuse_daemonize forks.  A store another daemon still
	 * serves is refused.
	 */
	abs_backing = realpath(o->backing, NULL);
	if (abs_backing != NULL) {
		rc = fs_snap_new(&fs->snap, abs_backing, snap_freeze, fs);
		fs->rekey.keys = keys;
		fs->rekey.opts = o;
		fs->rekey.exclusive = rekey_exclusive;
		fs->rekey.arg = fs;
		if (rc == 0)
			fs_snap_set_rekey(fs->snap, &fs->rekey);
		if (rc == -EBUSY) {
			fprintf(stderr, "coffer: %s is already served by another "
			    "coffer daemon (mounted elsewhere?)\n", o->backing);
			goto out;
		}
		if (rc < 0)
			fs->snap = NULL;
		fs_snap_set_gens(fs->snap, fs->gen != NULL);
	}
	/* Before mounting: resolving the mount point later would ask us. */
	abs_mnt = realpath(o->mountpoint, NULL);
	rc = -EIO;
	se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), fs);
	if (se == NULL) {
		rc = -EINVAL;
		goto out;
	}
	if (fuse_set_signal_handlers(se) != 0)
		goto out;
	sigbus_init();
	if (fuse_session_mount(se, o->mountpoint) != 0) {
		rc = -EIO;
		goto out_handlers;
	}
	fs->mnt_path = abs_mnt;	/* op_open raises the readahead */
	/* Modes arrive already masked by the caller's umask. */
	umask(0);
	if (fuse_daemonize(o->foreground) != 0)
		goto out_unmount;
	lock_pages();	/* after the fork: locks are not inherited */
	/* After daemonizing: the control thread must live in the daemon.
	 * Without it the mount works, but backups read it live. */
	if (fs->snap == NULL || fs_snap_start(fs->snap) != 0) {
		fs_snap_free(fs->snap);
		fs->snap = NULL;
		fprintf(stderr, "coffer: no snapshot control socket for %s; "
		    "backups of this mount are read live\n", o->backing);
	}
	/* The helper for large requests, also a thread of the daemon; without
	 * it every request runs on one core. */
	if (cf_fs_par_new(&fs->par) != 0)
		fs->par = NULL;
	lc = fuse_loop_cfg_create();
	if (lc == NULL) {
		rc = -ENOMEM;
		goto out_unmount;
	}
	/* Two cores here: a few workers keep the pipe busy; more only
	 * cost memory (each holds a 1 MiB request buffer and an arena). */
	mallopt(M_ARENA_MAX, 2);
	/*
	 * A request's buffers (up to 1 MiB of plaintext and of ciphertext)
	 * come from the heap and stay there once freed: glibc's default
	 * maps and unmaps such sizes, and clearing the fresh pages again
	 * for each request cost about a sixth of a sequential read's CPU
	 * (18 000 page faults per 256 MiB, 6 000 with this).
	 */
	mallopt(M_MMAP_THRESHOLD, 2 << 20);
	mallopt(M_TRIM_THRESHOLD, 8 << 20);
	fuse_loop_cfg_set_max_threads(lc, 8);
	fuse_loop_cfg_set_idle_threads(lc, 4);
	/* libfuse reports the signal that ended the loop: SIGTERM, SIGINT
	 * and SIGHUP are a clean unmount, not an error. */
	rc = fuse_session_loop_mt(se, lc);
	/* Why the session ended, for whoever reads the daemon's stderr: 0
	 * is an unmount from outside (coffer umount, fusermount -u). */
	if (rc > 0)
		fprintf(stderr, "coffer: %s: unmounting on signal %d (%s)\n",
		    o->tenant ? o->tenant : "store", rc, strsignal(rc));
	else if (rc < 0)
		fprintf(stderr, "coffer: %s: the FUSE session failed (%s); "
		    "unmounting\n", o->tenant ? o->tenant : "store",
		    strerror(-rc));
	rc = rc == 0 || rc == SIGTERM || rc == SIGINT || rc == SIGHUP ? 0 :
	    -EIO;
out_unmount:
	fs_snap_free(fs->snap);
	fs->snap = NULL;
	fuse_session_unmount(se);
out_handlers:
	fuse_remove_signal_handlers(se);
out:
	fs_snap_free(fs->snap);		/* a mount that never came up */
	if (lc != NULL)
		fuse_loop_cfg_destroy(lc);
	if (se != NULL)
		fuse_session_destroy(se);
	cf_fs_par_free(fs->par);
	fuse_opt_free_args(&args);
	for (size_t i = 0; i < HASH_BUCKETS; i++) {
		struct fs_inode *in = fs->table[i], *next;

		for (; in != NULL; in = next) {
			next = in->next;
			inode_free(fs, in);
		}
	}
	if (fs->root.fd >= 0)
		close(fs->root.fd);
	free(abs_backing);
	free(abs_mnt);
	if (fs->links_fd >= 0)
		close(fs->links_fd);
	if (fs->mount_fd >= 0)
		close(fs->mount_fd);
	fs_gen_close(fs->gen);
	pthread_rwlock_destroy(&fs->root.rw);
	free(fs);
	return rc;
}
