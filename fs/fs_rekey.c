/*
 * fs_rekey.c - re-encrypts a store's files under the newest root key
 * version after a root key rotation (docs/format/fs.md, Re-encryption),
 * counts the files of a version, and serves the control socket's KEYS
 * and REKEY requests (docs/format/ctl.md) with their client side.
 *
 * Each file is rewritten in place (same inode, so hard links, xattrs,
 * owner and mode stay; the ciphertext size does not change), through a
 * redo journal in the store: the new ciphertext goes to cf.rekey.new,
 * then the symlink cf.rekey names the file (the commit point), then the
 * new bytes are copied over the file, and both go.  A crash before the
 * commit leaves the old file, after it a rerun (or the next mount)
 * finishes the copy: old or new, never neither.  The file keeps its file
 * id (its generation tag and the generation log stay valid); its mtime
 * and atime are put back.
 *
 * Offline (cf_fs_rekey) the store lock keeps mounts and backups out.  In
 * a daemon (REKEY) each file is rewritten inside fs_ops.c's exclusive
 * hook, which holds that file's readers and writers off.
 *
 * Not here: names, symlink targets and xattr values, which stay under
 * the store's metadata version (docs/crypto.md).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <linux/openat2.h>
#include <sodium.h>

#include "fs_int.h"

#define REKEY_JOURNAL "cf.rekey"	/* symlink: the file being copied */
#define REKEY_NEW "cf.rekey.new"	/* its new ciphertext */
#define REKEY_TMP "cf.rekey.tmp"	/* the journal before its rename */
#define REKEY_LOCK "cf.rekey.lock"	/* flock: mounts share, offline own */
#define WALK_DEPTH_MAX 4096		/* deeper trees are refused */

static int
read_full(int fd, void *buf, size_t len, off_t off, size_t *got)
{
	size_t done = 0;
	ssize_t n;

	while (done < len) {
		n = pread(fd, (char *)buf + done, len - done, off + done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	*got = done;
	return 0;
}

static int
write_full(int fd, const void *buf, size_t len, off_t off)
{
	size_t done = 0;
	ssize_t n;

	while (done < len) {
		n = pwrite(fd, (const char *)buf + done, len - done,
		    off + done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (size_t)n;
	}
	return 0;
}

/* 1 if a backing entry of a directory is a regular file's content. */
static int
content_name(const char *name)
{
	size_t len = strlen(name);

	if (strncmp(name, "cf.", 3) != 0)
		return 1;
	/* Long names: the entry is cf.L.<hash>, its sidecar cf.L.<hash>.n */
	return strncmp(name, CF_FS_LONG_PREFIX, 5) == 0 &&
	    len == CF_FS_HASHED_BYTES - 1;
}

typedef int (*walk_fn)(void *arg, int dirfd, const char *name,
    const char *rel);

/* Calls fn for every content file under dirfd (rel: its path). */
static int
walk(int dirfd, const char *rel, int depth, walk_fn fn, void *arg)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d;
	int fd, rc = 0;

	if (depth > WALK_DEPTH_MAX)
		return -ELOOP;
	fd = dup(dirfd);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return -errno;
	}
	rewinddir(d);
	while ((de = readdir(d)) != NULL) {
		struct stat st;

		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", rel,
		    de->d_name) >= sizeof(path)) {
			rc = -ENAMETOOLONG;
			break;
		}
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
			if (errno == ENOENT)
				continue;
			rc = -errno;
			break;
		}
		if (S_ISDIR(st.st_mode)) {
			int sub = openat(dirfd, de->d_name, O_RDONLY |
			    O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

			if (sub < 0) {
				rc = -errno;
				break;
			}
			rc = walk(sub, path, depth + 1, fn, arg);
			close(sub);
		} else if (S_ISREG(st.st_mode) && content_name(de->d_name)) {
			rc = fn(arg, dirfd, de->d_name, path);
		}
		if (rc < 0)
			break;
	}
	closedir(d);
	return rc;
}

static int
walk_store(const char *backing, walk_fn fn, void *arg)
{
	int sfd, dfd, rc;

	sfd = open(backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sfd < 0)
		return -errno;
	dfd = openat(sfd, FS_STORE_DATA, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC);
	if (dfd < 0) {
		rc = errno == ENOENT ? 0 : -errno;	/* an empty store */
		close(sfd);
		return rc;
	}
	rc = walk(dfd, FS_STORE_DATA, 0, fn, arg);
	close(dfd);
	close(sfd);
	return rc;
}

/* ---- counting --------------------------------------------------------- */

struct count {
	uint32_t version;
	uint64_t n;
};

static int
count_one(void *arg, int dirfd, const char *name, const char *rel)
{
	struct count *c = arg;
	unsigned char buf[CF_FS_HEADER_BYTES];
	struct cf_fs_header h;
	size_t got = 0;
	int fd, rc;

	(void)rel;
	fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	rc = read_full(fd, buf, sizeof(buf), 0, &got);
	close(fd);
	if (rc < 0)
		return rc;
	/* An empty file has no header yet: it needs no key. */
	if (got == 0 || cf_fs_header_decode(&h, buf, got) < 0)
		return 0;
	if (h.key_version == c->version)
		c->n++;
	return 0;
}

int
cf_fs_store_count_version(const char *backing, uint32_t version,
    uint64_t *n)
{
	struct count c = { version, 0 };
	int rc;

	*n = 0;
	rc = walk_store(backing, count_one, &c);
	if (rc == 0)
		*n = c.n;
	return rc;
}

/* ---- re-encryption ------------------------------------------------------ */

struct rekey {
	const struct cf_fs_keys *keys;
	struct fs_rekey_host *host;	/* NULL: offline */
	int client;			/* online: progress goes here */
	const atomic_int *stop;	/* online: the daemon unmounts */
	int cancelled;			/* online: the client went away */
	int sfd;			/* the store's directory */
	struct cf_fs_rekey_stats *st;
	void (*progress)(void *arg, const struct cf_fs_rekey_stats *st,
	    const char *rel);
	void *arg;
	unsigned char *in, *out;	/* one sealed block each */
	unsigned char *plain;		/* one plaintext block */
};

int
fs_rekey_path_ok(const char *buf, size_t len)
{
	size_t i, start;

	/* [FS-REKEY-1] data/ then components, none empty, "." or "..". */
	if (len < sizeof(FS_STORE_DATA) + 1 || len >= PATH_MAX ||
	    memcmp(buf, FS_STORE_DATA "/", sizeof(FS_STORE_DATA)) != 0 ||
	    memchr(buf, '\0', len) != NULL)
		return -EPROTO;
	for (start = i = sizeof(FS_STORE_DATA); i <= len; i++) {
		if (i < len && buf[i] != '/')
			continue;
		if (i == start || (i - start == 1 && buf[start] == '.') ||
		    (i - start == 2 && buf[start] == '.' &&
		    buf[start + 1] == '.'))
			return -EPROTO;
		start = i + 1;
	}
	return 0;
}

/*
 * Opens rel (read-write) under the store without following any symlink
 * on the way: a store written by someone else must not make a rerun
 * copy over a file outside it.
 */
static int
open_beneath(int sfd, const char *rel)
{
	struct open_how how;
	long fd;

	memset(&how, 0, sizeof(how));
	how.flags = O_RDWR | O_NOFOLLOW | O_CLOEXEC;
	how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
	    RESOLVE_NO_MAGICLINKS;
	fd = syscall(SYS_openat2, sfd, rel, &how, sizeof(how));
	if (fd < 0) {
		if (errno == ELOOP || errno == EXDEV)
			errno = ENOENT;	/* not a file of the store */
		return -1;
	}
	return (int)fd;
}

/*
 * Copies the journal's new ciphertext over its file (open as tfd, or
 * found by the journal's path if tfd is -1); removes both.
 */
static int
journal_finish(int sfd, int tfd_in)
{
	char rel[PATH_MAX];
	unsigned char ha[CF_FS_HEADER_BYTES], hb[CF_FS_HEADER_BYTES];
	unsigned char buf[65536];
	struct cf_fs_header a, b;
	struct stat nst;
	size_t got;
	ssize_t n;
	off_t off;
	int nfd = -1, tfd = tfd_in, rc;

	n = readlinkat(sfd, REKEY_JOURNAL, rel, sizeof(rel));
	if (n < 0) {
		if (errno != ENOENT)
			return -errno;
		/* No commit: a new ciphertext left is garbage. */
		(void)unlinkat(sfd, REKEY_NEW, 0);
		(void)unlinkat(sfd, REKEY_TMP, 0);
		return 0;
	}
	if ((size_t)n >= sizeof(rel))
		return -EPROTO;
	rel[n] = '\0';
	/* Only a file under data/, never out of the store. */
	if (fs_rekey_path_ok(rel, (size_t)n) < 0)
		return -EPROTO;
	nfd = openat(sfd, REKEY_NEW, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (nfd < 0) {
		rc = -errno;
		goto out;
	}
	if (tfd < 0)
		tfd = open_beneath(sfd, rel);
	if (tfd < 0) {
		rc = errno == ENOENT ? 0 : -errno;	/* deleted since */
		goto done;
	}
	/* The journal's copy must be of this very file. */
	rc = read_full(nfd, hb, sizeof(hb), 0, &got);
	if (rc == 0 && (got != sizeof(hb) ||
	    cf_fs_header_decode(&b, hb, got) < 0))
		rc = -EPROTO;
	if (rc == 0)
		rc = read_full(tfd, ha, sizeof(ha), 0, &got);
	if (rc == 0 && (got != sizeof(ha) ||
	    cf_fs_header_decode(&a, ha, got) < 0 ||
	    memcmp(a.file_id, b.file_id, CF_KS_ID_BYTES) != 0))
		rc = -EPROTO;
	if (rc < 0)
		goto out;
	if (fstat(nfd, &nst) != 0) {
		rc = -errno;
		goto out;
	}
	for (off = 0; off < nst.st_size; off += (off_t)got) {
		rc = read_full(nfd, buf, sizeof(buf), off, &got);
		if (rc < 0)
			goto out;
		if (got == 0)
			break;
		rc = write_full(tfd, buf, got, off);
		if (rc < 0)
			goto out;
	}
	if (ftruncate(tfd, nst.st_size) != 0 || fsync(tfd) != 0) {
		rc = -errno;
		goto out;
	}
	/* The new copy carries the file's old times (rekey_file). */
	{
		struct timespec ts[2] = { nst.st_atim, nst.st_mtim };

		(void)futimens(tfd, ts);
	}
done:
	if (unlinkat(sfd, REKEY_JOURNAL, 0) != 0 ||
	    unlinkat(sfd, REKEY_NEW, 0) != 0 || fsync(sfd) != 0)
		rc = -errno;
out:
	if (nfd >= 0)
		close(nfd);
	if (tfd >= 0 && tfd != tfd_in)
		close(tfd);
	return rc;
}

/* Test builds: COFFER_TEST_REKEY_KILL_AT=N kills after N commits. */
static void
crash_after_commit(void)
{
#ifdef CF_TEST_CLOCK
	static long commits;
	const char *v = getenv("COFFER_TEST_REKEY_KILL_AT");

	if (v != NULL && ++commits == strtol(v, NULL, 10))
		raise(SIGKILL);
#endif
}

/*
 * Seals the file open as fd into a new cf.rekey.new under the newest
 * version; *damaged if a block does not open (the file is left alone).
 */
static int
rekey_copy(struct rekey *r, int fd, const struct stat *st,
    const struct cf_fs_header *oh, int *damaged)
{
	const struct cf_fs_keys *k = r->keys;
	struct cf_fs_file_ctx *oc = NULL, *nc = NULL;
	struct cf_fs_header nh = *oh;
	unsigned char hdr[CF_FS_HEADER_BYTES];
	size_t ovh = cf_fs_block_overhead(oh->cipher), cb = CF_FS_BLOCK + ovh;
	size_t got, clen;
	off_t off, body = st->st_size - CF_FS_HEADER_BYTES;
	uint64_t blk;
	int nfd = -1, rc;

	*damaged = 0;
	nh.version = 0;			/* the current format */
	nh.key_version = cf_fs_keys_version(k);
	rc = cf_fs_file_ctx_new(&oc, k, oh);
	if (rc == -ENOKEY) {
		*damaged = 1;		/* a version we have no key of */
		rc = 0;
		goto out;
	}
	if (rc < 0)
		goto out;
	rc = cf_fs_file_ctx_new(&nc, k, &nh);
	if (rc < 0)
		goto out;
	(void)unlinkat(r->sfd, REKEY_NEW, 0);
	nfd = openat(r->sfd, REKEY_NEW, O_RDWR | O_CREAT | O_EXCL |
	    O_NOFOLLOW | O_CLOEXEC, 0600);
	if (nfd < 0) {
		rc = -errno;
		goto out;
	}
	cf_fs_header_encode(&nh, hdr);
	rc = write_full(nfd, hdr, sizeof(hdr), 0);
	if (rc < 0)
		goto out;
	for (blk = 0, off = 0; off < body; blk++, off += (off_t)cb) {
		int final;

		clen = body - off < (off_t)cb ? (size_t)(body - off) : cb;
		final = off + (off_t)clen == body;
		rc = read_full(fd, r->in, clen, CF_FS_HEADER_BYTES + off,
		    &got);
		if (rc < 0)
			goto out;
		if (got != clen) {
			rc = -EAGAIN;	/* changed under us */
			goto out;
		}
		/* A hole stays a hole (all zeros, never the last block). */
		if (r->in[0] == 0 && memcmp(r->in, r->in + 1, clen - 1) == 0 &&
		    !final) {
			memset(r->out, 0, clen);
		} else {
			rc = cf_fs_block_open(oc, blk, final, r->in, clen,
			    r->plain);
			if (rc == -EBADMSG) {
				*damaged = 1;
				rc = 0;
				goto out;
			}
			if (rc < 0)
				goto out;
			rc = cf_fs_block_seal(nc, blk, final, r->plain,
			    clen - ovh, r->out);
			if (rc < 0)
				goto out;
		}
		rc = write_full(nfd, r->out, clen, CF_FS_HEADER_BYTES + off);
		if (rc < 0)
			goto out;
	}
	{
		struct timespec ts[2] = { st->st_atim, st->st_mtim };

		if (futimens(nfd, ts) != 0 || fsync(nfd) != 0) {
			rc = -errno;
			goto out;
		}
	}
	rc = 0;
out:
	if (nfd >= 0)
		close(nfd);
	if (rc < 0 || *damaged)
		(void)unlinkat(r->sfd, REKEY_NEW, 0);
	sodium_memzero(r->plain, CF_FS_BLOCK);
	cf_fs_file_ctx_free(oc);
	cf_fs_file_ctx_free(nc);
	return rc;
}

/* Re-encrypts the file open as fd (read-write), backing path rel. */
static int
rekey_fd(struct rekey *r, int fd, const char *rel)
{
	unsigned char buf[CF_FS_HEADER_BYTES];
	struct cf_fs_header h;
	struct stat st;
	size_t got = 0;
	int rc, damaged = 0;

	r->st->files++;
	rc = read_full(fd, buf, sizeof(buf), 0, &got);
	if (rc == 0 && fstat(fd, &st) != 0)
		rc = -errno;
	if (rc < 0)
		goto out;
	if (got == 0)
		goto out;		/* empty: no header, no key */
	if (cf_fs_header_decode(&h, buf, got) < 0 ||
	    h.cipher != r->keys->cipher) {
		r->st->failed++;
		r->st->old++;
		goto out;
	}
	if (h.key_version == cf_fs_keys_version(r->keys))
		goto out;
	rc = rekey_copy(r, fd, &st, &h, &damaged);
	if (rc < 0)
		goto out;
	if (damaged) {
		r->st->failed++;
		r->st->old++;
		goto out;
	}
	/* Commit: the journal names the file. */
	(void)unlinkat(r->sfd, REKEY_TMP, 0);
	if (symlinkat(rel, r->sfd, REKEY_TMP) != 0 ||
	    renameat(r->sfd, REKEY_TMP, r->sfd, REKEY_JOURNAL) != 0 ||
	    fsync(r->sfd) != 0) {
		rc = -errno;
		goto out;
	}
	crash_after_commit();
	rc = journal_finish(r->sfd, fd);
	if (rc < 0)
		goto out;
	r->st->rewritten++;
	r->st->bytes += (uint64_t)st.st_size;
	if (r->progress != NULL)
		r->progress(r->arg, r->st, rel);
out:
	return rc;
}

struct one {
	struct rekey *r;
	const char *rel;
};

static int
rekey_cb(void *arg, int fd)
{
	struct one *o = arg;

	return rekey_fd(o->r, fd, o->rel);
}

static int
rekey_one(void *arg, int dirfd, const char *name, const char *rel)
{
	struct rekey *r = arg;
	struct one o = { r, rel };
	int fd, rc;

	if (r->cancelled || (r->stop != NULL && atomic_load(r->stop)))
		return -ECANCELED;
	if (r->host != NULL) {
		/* The daemon holds the file's readers and writers off. */
		rc = r->host->exclusive(r->host->arg, dirfd, name, rekey_cb,
		    &o);
		return rc == -ENOENT ? 0 : rc;	/* gone meanwhile */
	}
	fd = openat(dirfd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	rc = rekey_fd(r, fd, rel);
	close(fd);
	return rc;
}

/*
 * Walks the store re-encrypting (r set up but for its buffers).  On a
 * mounted store a file renamed into a directory already walked is missed,
 * so the walk is repeated (at most 3 times) while files remain on older
 * versions that are not damaged.
 */
static int
rekey_run(struct rekey *r, const char *backing)
{
	struct cf_fs_rekey_stats total;
	int rc, pass;

	memset(&total, 0, sizeof(total));
	r->sfd = open(backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (r->sfd < 0)
		return -errno;
	if (r->host == NULL && fs_metakey_pending(r->sfd)) {
		close(r->sfd);
		return -EINPROGRESS;	/* finish the metadata first */
	}
	r->in = malloc(CF_FS_BLOCK + 64);
	r->out = malloc(CF_FS_BLOCK + 64);
	r->plain = sodium_malloc(CF_FS_BLOCK);
	if (r->in == NULL || r->out == NULL || r->plain == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	/* A run a crash interrupted: finish its last file first. */
	rc = journal_finish(r->sfd, -1);
	if (rc < 0)
		goto out;
	for (pass = 0; pass < (r->host != NULL ? 3 : 1); pass++) {
		uint64_t rewritten = total.rewritten, bytes = total.bytes;

		memset(r->st, 0, sizeof(*r->st));
		r->st->rewritten = rewritten;
		r->st->bytes = bytes;
		rc = walk_store(backing, rekey_one, r);
		total = *r->st;
		if (rc < 0 || r->st->old == r->st->failed)
			break;
	}
	*r->st = total;
out:
	free(r->in);
	free(r->out);
	if (r->plain != NULL)
		sodium_free(r->plain);
	close(r->sfd);
	return rc;
}

/* Opens the store's lock file and flocks it (op, maybe LOCK_NB). */
static int
store_lock(const char *backing, int op)
{
	char path[PATH_MAX];
	int fd;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", backing,
	    REKEY_LOCK) >= sizeof(path))
		return -ENAMETOOLONG;
	fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	while (flock(fd, op) != 0) {
		int e = errno;

		if (e == EINTR)
			continue;

		close(fd);
		return e == EWOULDBLOCK ? -EBUSY : -e;
	}
	return fd;
}

int
cf_fs_store_lock_shared(const char *backing, int wait)
{
	return store_lock(backing, wait ? LOCK_SH : LOCK_SH | LOCK_NB);
}

int
cf_fs_rekey(const struct cf_fs_keys *keys, const char *backing,
    void (*progress)(void *arg, const struct cf_fs_rekey_stats *st,
    const char *rel), void *arg, struct cf_fs_rekey_stats *st)
{
	struct rekey r;
	int lfd, rc;

	memset(st, 0, sizeof(*st));
	memset(&r, 0, sizeof(r));
	r.keys = keys;
	r.st = st;
	r.progress = progress;
	r.arg = arg;
	/* No daemon may serve the store meanwhile (each holds it shared). */
	lfd = store_lock(backing, LOCK_EX | LOCK_NB);
	if (lfd < 0)
		return lfd;
	rc = rekey_run(&r, backing);
	close(lfd);
	return rc;
}

int
fs_rekey_finish(int sfd)
{
	return journal_finish(sfd, -1);
}

int
cf_fs_rekey_recover(const char *backing)
{
	int sfd, rc;

	sfd = open(backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sfd < 0)
		return errno == ENOENT ? 0 : -errno;
	/* Checked under the store lock the caller holds: a pending re-keying
	 * of the metadata refuses a mount ([FS-MKEY-4]). */
	if (fs_metakey_pending(sfd)) {
		close(sfd);
		return -EINPROGRESS;
	}
	rc = journal_finish(sfd, -1);
	close(sfd);
	return rc;
}

/* ---- online: the daemon's side of KEYS and REKEY ------------------------ */

static void
send_line(int c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Sends one line: always exactly one, ending in its only newline (a long
 * text is cut, a newline or other control byte in it becomes a space),
 * so a client reading to the newline stays in step with the next reply.
 */
static void
send_line(int c, const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	size_t len, i;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n <= 0)
		return;
	len = (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1;
	for (i = 0; i + 1 < len; i++)
		if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
			buf[i] = ' ';
	buf[len - 1] = '\n';
	(void)!send(c, buf, len, MSG_NOSIGNAL);
}

/*
 * Unlocks, in the daemon, every live root key version of the tenant that
 * keys lacks and adds its content key: from then on new files use the
 * newest.  The KMS is reached as at mount (the file KMS's passphrase is
 * still held by this process).
 */
static int
keys_refresh(struct fs_rekey_host *h)
{
	struct cf_ks_tenant *t = NULL;
	struct cf_secbuf *root = NULL;
	uint32_t v[CF_FS_KEYS_MAX + 1];
	size_t n, i;
	int rc;

	if (h->opts->home == NULL || h->opts->tenant == NULL)
		return -ENOTSUP;
	rc = cf_ks_tenant_open(h->opts->home, h->opts->tenant, &t);
	if (rc < 0)
		return rc;
	n = cf_ks_tenant_versions(t, v, CF_FS_KEYS_MAX + 1);
	for (i = 0; i < n && i <= CF_FS_KEYS_MAX; i++) {
		if (cf_fs_keys_has(h->keys, v[i]))
			continue;
		rc = cf_ks_tenant_unlock(t, v[i], &root);
		if (rc < 0)
			goto out;
		rc = cf_fs_keys_add(h->keys, root, v[i]);
		cf_secbuf_free(root);
		root = NULL;
		if (rc < 0)
			goto out;
	}
	rc = cf_fs_keys_version(h->keys) == cf_ks_tenant_key_version(t) ?
	    0 : -ENOKEY;
out:
	cf_ks_tenant_free(t);
	return rc;
}

static void
online_progress(void *arg, const struct cf_fs_rekey_stats *st,
    const char *rel)
{
	struct rekey *r = arg;
	char buf[96];
	int n;

	(void)rel;
	n = snprintf(buf, sizeof(buf), "PROGRESS %llu %llu\n",
	    (unsigned long long)st->rewritten,
	    (unsigned long long)st->bytes);
	/* The client went away: stop (a rerun goes on from here). */
	if (send(r->client, buf, (size_t)n, MSG_NOSIGNAL) != n)
		r->cancelled = 1;
}

int
fs_rekey_ctl(struct fs_rekey_host *h, const char *backing, int c,
    const char *line, const atomic_int *stop)
{
	struct cf_fs_rekey_stats st;
	struct rekey r;
	int rc;

	if (strcmp(line, "KEYS\n") != 0 && strcmp(line, "REKEY\n") != 0)
		return 0;
	rc = keys_refresh(h);
	if (rc < 0) {
		send_line(c, "ERR cannot unlock the new key version: %s\n",
		    cf_ks_last_error());
		return 1;
	}
	if (line[0] == 'K') {
		send_line(c, "OK %u\n", cf_fs_keys_version(h->keys));
		return 1;
	}
	memset(&st, 0, sizeof(st));
	memset(&r, 0, sizeof(r));
	r.keys = h->keys;
	r.host = h;
	r.client = c;
	r.stop = stop;
	r.st = &st;
	r.progress = online_progress;
	r.arg = &r;
	rc = rekey_run(&r, backing);
	if (rc < 0)
		send_line(c, "ERR %s\n", strerror(-rc));
	else
		send_line(c, "DONE %u %llu %llu %llu %llu %llu\n",
		    cf_fs_keys_version(h->keys),
		    (unsigned long long)st.files,
		    (unsigned long long)st.rewritten,
		    (unsigned long long)st.old,
		    (unsigned long long)st.failed,
		    (unsigned long long)st.bytes);
	return 1;
}

/*
 * ROOTKEYS ([CTL-8] in docs/format/ctl.md): unlocks every live root key
 * version of the tenant through its KMS, as at mount (lockout checked,
 * each unwrap audited; a shredded tenant or a KMS that refuses gets ERR),
 * and sends them to the peer: "OK <n>\n", then n records of a 4-byte
 * little-endian version and the 32-byte key.  One fs.lend_keys audit
 * record names the peer.  The connection stays open.
 */
void
fs_rekey_lend(struct fs_rekey_host *h, int c, pid_t pid, uid_t uid)
{
	struct cf_ks_tenant *t = NULL;
	struct cf_secbuf *out = NULL, *root = NULL;
	uint32_t v[CF_KS_LENT_MAX + 1];
	unsigned char *p;
	size_t n, i, hl, len;
	char head[32];
	int rc;

	if (h->opts->nolend) {
		send_line(c, "ERR lending keys is off (-o nolend)\n");
		return;
	}
	if (h->opts->home == NULL || h->opts->tenant == NULL) {
		send_line(c, "ERR this daemon lends no keys\n");
		return;
	}
	rc = cf_ks_tenant_open(h->opts->home, h->opts->tenant, &t);
	if (rc < 0) {
		send_line(c, "ERR cannot open the tenant: %s\n",
		    cf_ks_last_error());
		return;
	}
	n = cf_ks_tenant_versions(t, v, CF_KS_LENT_MAX + 1);
	if (n == 0 || n > CF_KS_LENT_MAX) {
		send_line(c, "ERR %zu live key versions\n", n);
		goto out;
	}
	hl = (size_t)snprintf(head, sizeof(head), "OK %zu\n", n);
	len = hl + n * (4 + CF_KS_KEY_BYTES);
	if (cf_secbuf_new(&out, len) < 0) {
		send_line(c, "ERR out of locked memory\n");
		goto out;
	}
	p = cf_secbuf_data(out);
	memcpy(p, head, hl);
	p += hl;
	for (i = 0; i < n; i++) {
		rc = cf_ks_tenant_unlock(t, v[i], &root);
		if (rc < 0) {
			send_line(c, "ERR cannot unlock key version %u: %s\n",
			    v[i], cf_ks_last_error());
			goto out;
		}
		p[0] = (unsigned char)v[i];
		p[1] = (unsigned char)(v[i] >> 8);
		p[2] = (unsigned char)(v[i] >> 16);
		p[3] = (unsigned char)(v[i] >> 24);
		memcpy(p + 4, cf_secbuf_cdata(root), CF_KS_KEY_BYTES);
		p += 4 + CF_KS_KEY_BYTES;
		cf_secbuf_free(root);
		root = NULL;
	}
	{
		struct cf_ks_audit_field f[] = {
			{ "tenant", h->opts->tenant, 0 },
			{ "versions", NULL, (long long)n },
			{ "pid", NULL, (long long)pid },
			{ "uid", NULL, (long long)uid },
		};

		/* No record, no keys: every loan is on the record. */
		if (cf_ks_audit_append(h->opts->home, "fs.lend_keys", f,
		    4) < 0) {
			send_line(c, "ERR cannot write the audit record\n");
			goto out;
		}
	}
	(void)!send(c, cf_secbuf_cdata(out), len, MSG_NOSIGNAL);
out:
	cf_secbuf_free(out);
	cf_ks_tenant_free(t);
}

/* ---- online: the client side ------------------------------------------ */

/* Connects to the store's control socket and sends req. */
static int
ctl_request(const char *backing, const char *req)
{
	size_t len = strlen(req);
	int fd;

	fd = fs_ctl_connect(backing);
	if (fd < 0)
		return fd;
	if (send(fd, req, len, MSG_NOSIGNAL) != (ssize_t)len) {
		close(fd);
		return -EIO;
	}
	return fd;
}

/* Reads one reply line (at most cap - 1 bytes); -EPIPE at EOF. */
static int
read_line(int fd, char *buf, size_t cap)
{
	size_t got = 0;
	ssize_t n;

	while (got < cap - 1) {
		n = read(fd, buf + got, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EPIPE;
		if (buf[got++] == '\n')
			break;
	}
	buf[got] = '\0';
	return 0;
}

/* Copies an "ERR text" reply's text into err. */
static int
ctl_error(const char *line, char *err, size_t cap)
{
	size_t n;

	if (strncmp(line, "ERR ", 4) != 0) {
		snprintf(err, cap, "unexpected reply from the daemon");
		return -EPROTO;
	}
	snprintf(err, cap, "%s", line + 4);
	n = strlen(err);
	if (n > 0 && err[n - 1] == '\n')
		err[n - 1] = '\0';
	return -EIO;
}

int
cf_fs_keys_reload(const char *backing, uint32_t *version, char *err,
    size_t cap)
{
	char line[512];
	unsigned v = 0;
	int fd, rc;

	*version = 0;
	if (cap > 0)
		err[0] = '\0';
	fd = ctl_request(backing, "KEYS\n");
	if (fd < 0)
		return fd;
	rc = read_line(fd, line, sizeof(line));
	close(fd);
	if (rc < 0) {
		snprintf(err, cap, "the daemon went away");
		return rc;
	}
	if (sscanf(line, "OK %u", &v) != 1 || v == 0)
		return ctl_error(line, err, cap);
	*version = v;
	return 0;
}

int
cf_fs_rekey_mounted(const char *backing,
    void (*progress)(void *arg, const struct cf_fs_rekey_stats *st,
    const char *rel), void *arg, struct cf_fs_rekey_stats *st,
    uint32_t *version, char *err, size_t cap)
{
	unsigned long long a, b, c, d, e;
	char line[512];
	unsigned v;
	int fd, rc;

	memset(st, 0, sizeof(*st));
	*version = 0;
	if (cap > 0)
		err[0] = '\0';
	fd = ctl_request(backing, "REKEY\n");
	if (fd < 0)
		return fd;
	for (;;) {
		rc = read_line(fd, line, sizeof(line));
		if (rc < 0) {
			snprintf(err, cap, "the daemon went away (rerun to go "
			    "on)");
			break;
		}
		if (sscanf(line, "PROGRESS %llu %llu", &a, &b) == 2) {
			st->rewritten = a;
			st->bytes = b;
			if (progress != NULL)
				progress(arg, st, NULL);
			continue;
		}
		if (sscanf(line, "DONE %u %llu %llu %llu %llu %llu", &v, &a,
		    &b, &c, &d, &e) == 6) {
			st->files = a;
			st->rewritten = b;
			st->old = c;
			st->failed = d;
			st->bytes = e;
			*version = v;
			rc = 0;
			break;
		}
		rc = ctl_error(line, err, cap);
		break;
	}
	close(fd);
	return rc;
}
