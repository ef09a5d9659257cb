/*
 * fs_metakey.c - moves a store's metadata to another root key version
 * (docs/format/fs.md, Re-keying the metadata): every name (and long-name
 * sidecar), symlink target (and its file in links/), xattr and
 * generation value is re-encrypted under the new version's keys, then
 * the marker is rewritten to name that version.  Afterwards no
 * metadata needs the old version, so it can be retired once the
 * contents are off it too (cf_fs_rekey, fs_rekey.c).
 *
 * Crash safety: the journal store/cf.metakey exists from the first
 * change to the last, and while it does every mount, reader and hold
 * refuses the store ([FS-MKEY-4]).  Each step is atomic (a rename, a
 * symlink replaced by a rename, an xattr set before the old one goes)
 * and is found again by trying every version: names, targets and values
 * authenticate, so exactly one version opens each.  A rerun therefore
 * needs nothing from the journal but its existence.
 *
 * Not here: file contents (fs_rekey.c); a mounted store (the run needs
 * the store to itself); directory IVs, which are random, not keyed, and
 * stay.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <sodium.h>

#include "fs_int.h"

#define MK_TMP "cf.mk.tmp"		/* in a directory: a new symlink */
#define MK_JOURNAL_TMP "cf.metakey.tmp"	/* in the store: journal, marker */
#define MK_LOCK "cf.rekey.lock"		/* fs_rekey.c's store lock */
#define MK_DEPTH_MAX 4096		/* deeper trees are refused */
#define XATTR_STORED "user.cf."
#define MK_XLIST_MAX 65536U
#define MK_XVALUE_MAX 65536U
#define LINK_CAP 8192U			/* an encrypted target, NUL */
#define META_NONCE 24U

/* The xattr names' IV ([FS-XATTR-1]), as fs_ops.c and fs_reader.c. */
static const unsigned char xattr_iv[CF_FS_DIRIV_BYTES] = "coffer-xattr-iv";

/* A symlink with more than one link, already replaced (hard links). */
struct mk_sym {
	dev_t dev;
	ino_t ino;		/* the old inode */
	int fd;			/* O_PATH: the new symlink */
};

struct mk {
	struct cf_fs_keys *const *keys;	/* [0] the new version */
	size_t n;
	int sfd;			/* the store directory */
	struct cf_fs_metakey_stats *st;
	void (*progress)(void *arg, const struct cf_fs_metakey_stats *st);
	void *arg;
	struct mk_sym *sym;
	size_t nsym, capsym;
	char *enc, *enc2;		/* LINK_CAP each */
	char *plain;			/* PATH_MAX + 1 (sodium_malloc) */
	unsigned char *val, *val2;	/* MK_XVALUE_MAX each */
	char *xlist;			/* MK_XLIST_MAX: one listxattr */
};

/*
 * Test builds: COFFER_TEST_METAKEY_KILL_AT=N kills after the N-th change
 * (a rename, a symlink, an xattr or generation value), =marker right
 * after the marker was rewritten, before the journal goes.
 */
static void
crash_point(const char *what)
{
#ifdef CF_TEST_CLOCK
	static long changes;
	const char *v = getenv("COFFER_TEST_METAKEY_KILL_AT");

	if (v == NULL)
		return;
	if (what != NULL ? strcmp(v, what) == 0 :
	    ++changes == strtol(v, NULL, 10))
		raise(SIGKILL);
#else
	(void)what;
#endif
}

int
fs_metakey_pending(int storefd)
{
	return faccessat(storefd, CF_FS_METAKEY_JOURNAL, F_OK,
	    AT_SYMLINK_NOFOLLOW) == 0;
}

/* Reads a small regular file (at most cap bytes, one more is refused). */
static int
read_small(int dirfd, const char *name, void *buf, size_t cap, size_t *got)
{
	struct stat st;
	ssize_t n;
	int fd, rc = 0;

	*got = 0;
	fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK |
	    O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EPROTO;
	}
	n = read(fd, buf, cap);
	if (n < 0)
		rc = -errno;
	else if (st.st_size > (off_t)cap)
		rc = -EFBIG;
	else
		*got = (size_t)n;
	close(fd);
	return rc;
}

/*
 * Writes len bytes as dirfd/name, atomically: a temporary file, fsync,
 * rename over name.
 */
static int
write_atomic(int dirfd, const char *tmp, const char *name, const void *buf,
    size_t len, mode_t mode)
{
	int fd, rc = 0;

	(void)unlinkat(dirfd, tmp, 0);
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
	    O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	if (write(fd, buf, len) != (ssize_t)len || fsync(fd) != 0)
		rc = -EIO;
	close(fd);
	if (rc == 0 && renameat(dirfd, tmp, dirfd, name) != 0)
		rc = -errno;
	if (rc < 0)
		(void)unlinkat(dirfd, tmp, 0);
	return rc;
}

int
cf_fs_store_meta_version(const char *backing, uint32_t *m)
{
	unsigned char blob[CF_FS_MARKER2_BYTES + 1];
	size_t got;
	int dfd, rc;

	*m = 0;
	dfd = open(backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return errno == ENOENT ? 0 : -errno;
	rc = read_small(dfd, FS_STORE_MARKER, blob, sizeof(blob), &got);
	close(dfd);
	if (rc == -ENOENT)
		return 0;
	if (rc < 0)
		return rc == -EFBIG ? -EPROTO : rc;
	return cf_fs_marker_version(blob, got, m);
}

int
cf_fs_metakey_journal_read(const char *backing, uint32_t *from,
    uint32_t *to)
{
	unsigned char buf[CF_FS_METAKEY_JOURNAL_BYTES + 1];
	size_t got;
	int dfd, rc;

	*from = *to = 0;
	dfd = open(backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	rc = read_small(dfd, CF_FS_METAKEY_JOURNAL, buf, sizeof(buf), &got);
	close(dfd);
	if (rc == -EFBIG)
		return -EPROTO;
	if (rc < 0)
		return rc;
	return cf_fs_metakey_journal_decode(buf, got, from, to);
}

/* ---- one item under every version ---------------------------------------- */

/*
 * The index of the keys a name opens under (decrypted into m->plain), or
 * -EBADMSG if none; long: enc is a sidecar's long encoding.
 */
static int
name_which(struct mk *m, const unsigned char *diriv, const char *enc,
    int is_long)
{
	size_t i;
	int rc = -EBADMSG;

	for (i = 0; i < m->n; i++) {
		if (is_long)
			rc = cf_fs_name_decrypt_long(m->keys[i], diriv, enc,
			    m->plain, PATH_MAX + 1);
		else
			rc = cf_fs_name_decrypt(m->keys[i], diriv, enc,
			    m->plain, PATH_MAX + 1);
		if (rc == 0)
			return (int)i;
		if (rc != -EBADMSG)
			return rc;	/* not a name at all */
	}
	return -EBADMSG;
}

/*
 * No room for both copies of an xattr (ext4 keeps all of a file's in
 * one block): the old one goes to the directory's stash first, so a
 * crash between its removal and the new one's set loses nothing
 * ([FS-MKEY-6]).  m->val holds the old stored value, m->val2 the new.
 */
static int
xattr_swap(struct mk *m, int dirfd, const char *name, const char *path,
    const char *x, const char *nname, size_t vlen)
{
	unsigned char *buf;
	size_t len;
	int rc;

	buf = malloc(CF_FS_METAKEY_STASH_MAX);
	if (buf == NULL)
		return -ENOMEM;
	rc = cf_fs_metakey_stash_encode(name, x, m->val, vlen, buf,
	    CF_FS_METAKEY_STASH_MAX, &len);
	if (rc == 0)
		rc = write_atomic(dirfd, MK_TMP, CF_FS_METAKEY_STASH, buf, len,
		    0600);
	free(buf);
	if (rc == 0 && fsync(dirfd) != 0)
		rc = -errno;
	if (rc < 0)
		return rc;
	if (removexattr(path, x) != 0)
		return -errno;
	crash_point(NULL);
	if (setxattr(path, nname, m->val2, vlen, 0) != 0) {
		rc = -errno;
		/* Put the old one back: the run stops with the stash gone. */
		if (setxattr(path, x, m->val, vlen, 0) != 0)
			return rc;	/* the stash keeps it */
	}
	if (unlinkat(dirfd, CF_FS_METAKEY_STASH, 0) != 0 && rc == 0)
		rc = -errno;
	return rc;
}

/*
 * Finishes a swap a crash interrupted in the directory dirfd: if the
 * stashed xattr is gone from its entry and its new copy is not there, the
 * old one is put back (the walk re-keys it next).  -EPROTO for a damaged
 * stash (left as it is).
 */
static int
stash_recover(struct mk *m, int dirfd)
{
	struct cf_fs_metakey_stash s;
	char path[64], nname[256];
	unsigned char *buf;
	size_t got, i;
	int fd = -1, rc;

	buf = malloc(CF_FS_METAKEY_STASH_MAX);
	if (buf == NULL)
		return -ENOMEM;
	rc = read_small(dirfd, CF_FS_METAKEY_STASH, buf,
	    CF_FS_METAKEY_STASH_MAX, &got);
	if (rc == -ENOENT) {
		rc = 0;
		goto out;
	}
	if (rc == -EFBIG)
		rc = -EPROTO;
	if (rc == 0)
		rc = cf_fs_metakey_stash_decode(buf, got, &s);
	if (rc < 0)
		goto out;
	for (i = 0; i < m->n; i++)
		if (cf_fs_name_decrypt(m->keys[i], xattr_iv,
		    s.xname + strlen(XATTR_STORED), m->plain,
		    PATH_MAX + 1) == 0)
			break;
	if (i == m->n) {
		rc = -EPROTO;	/* not one of this store's xattrs */
		goto out;
	}
	memcpy(nname, XATTR_STORED, strlen(XATTR_STORED));
	rc = cf_fs_name_encrypt(m->keys[0], xattr_iv, m->plain,
	    nname + strlen(XATTR_STORED), sizeof(nname) - strlen(XATTR_STORED));
	if (rc < 0)
		goto out;
	fd = openat(dirfd, s.entry, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno != ENOENT) {
		rc = -errno;
		goto out;
	}
	if (fd >= 0) {
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		if (getxattr(path, s.xname, NULL, 0) < 0 &&
		    getxattr(path, nname, NULL, 0) < 0 &&
		    setxattr(path, s.xname, s.value, s.vlen, 0) != 0) {
			rc = -errno;
			goto out;
		}
	}
	if (unlinkat(dirfd, CF_FS_METAKEY_STASH, 0) != 0)
		rc = -errno;
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	return rc;
}

/*
 * Rewrites the user.cf.* xattrs and the generation value of the file or
 * directory name of dirfd.
 */
static int
xattrs_one(struct mk *m, int dirfd, const char *name, int reg)
{
	char path[64], *list = m->xlist, nname[256];
	const char *x;
	ssize_t len, vlen;
	int fd, rc = 0;

	fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	len = listxattr(path, list, MK_XLIST_MAX);
	if (len < 0) {
		rc = errno == ENOTSUP ? 0 : -errno;
		goto out;
	}
	for (x = list; x < list + len; x += strlen(x) + 1) {
		size_t i;

		if (strncmp(x, XATTR_STORED, strlen(XATTR_STORED)) != 0)
			continue;
		vlen = getxattr(path, x, m->val, MK_XVALUE_MAX);
		if (vlen < 0) {
			if (errno == ENODATA)
				continue;
			rc = -errno;
			goto out;
		}
		if (strcmp(x, CF_FS_GEN_XATTR) == 0) {
			unsigned char id[CF_KS_ID_BYTES], out[CF_FS_GEN_BYTES];
			uint64_t gen;
			unsigned flags;

			if (!reg)
				continue;
			for (i = 0; i < m->n; i++)
				if (cf_fs_gen_decode(m->keys[i], m->val,
				    (size_t)vlen, id, &gen, &flags) == 0)
					break;
			if (i == 0)
				continue;
			if (i == m->n) {
				m->st->damaged++;
				continue;
			}
			rc = cf_fs_gen_encode(m->keys[0], id, gen, flags, out);
			if (rc == 0 && setxattr(path, x, out, sizeof(out), 0) !=
			    0)
				rc = -errno;
			if (rc < 0)
				goto out;
			m->st->gens++;
			crash_point(NULL);
			continue;
		}
		for (i = 0; i < m->n; i++)
			if (cf_fs_name_decrypt(m->keys[i], xattr_iv,
			    x + strlen(XATTR_STORED), m->plain,
			    PATH_MAX + 1) == 0)
				break;
		if (i == 0)
			continue;
		/* Not one of the store's, or damaged: either way left. */
		if (i == m->n || (size_t)vlen < META_NONCE + CF_KS_TAG_BYTES ||
		    cf_ks_aead_open(m->keys[i]->meta, m->val2,
		    m->val + META_NONCE, (size_t)vlen - META_NONCE,
		    (const unsigned char *)x, strlen(x), m->val) != 0) {
			m->st->damaged++;
			continue;
		}
		memcpy(nname, XATTR_STORED, strlen(XATTR_STORED));
		rc = cf_fs_name_encrypt(m->keys[0], xattr_iv, m->plain,
		    nname + strlen(XATTR_STORED),
		    sizeof(nname) - strlen(XATTR_STORED));
		if (rc < 0)
			goto out;
		/* The old value opened, so vlen - overhead bytes of plain. */
		memmove(m->val2 + META_NONCE, m->val2, (size_t)vlen -
		    META_NONCE - CF_KS_TAG_BYTES);
		randombytes_buf(m->val2, META_NONCE);
		rc = cf_ks_aead_seal(m->keys[0]->meta, m->val2 + META_NONCE,
		    m->val2 + META_NONCE, (size_t)vlen - META_NONCE -
		    CF_KS_TAG_BYTES, (const unsigned char *)nname,
		    strlen(nname), m->val2);
		if (rc < 0)
			goto out;
		/* New first: a crash between leaves both, and a rerun
		 * finds the new one and drops the old. */
		if (setxattr(path, nname, m->val2, (size_t)vlen, 0) == 0) {
			if (removexattr(path, x) != 0) {
				rc = -errno;
				goto out;
			}
		} else if (errno == ENOSPC || errno == E2BIG) {
			rc = xattr_swap(m, dirfd, name, path, x, nname,
			    (size_t)vlen);
			if (rc < 0)
				goto out;
		} else {
			rc = -errno;
			goto out;
		}
		m->st->xattrs++;
		crash_point(NULL);
	}
out:
	sodium_memzero(m->val2, MK_XVALUE_MAX);
	close(fd);
	return rc;
}

/* The stored (encrypted) target of symlink name of dirfd into m->enc. */
static int
target_read(struct mk *m, int dirfd, const char *name, int *hashed)
{
	char check[CF_FS_HASHED_BYTES];
	size_t got;
	ssize_t n;
	int lfd, rc;

	*hashed = 0;
	n = readlinkat(dirfd, name, m->enc, LINK_CAP - 1);
	if (n < 0)
		return -errno;
	m->enc[n] = '\0';
	if (strncmp(m->enc, CF_FS_TARGET_PREFIX,
	    strlen(CF_FS_TARGET_PREFIX)) != 0)
		return 0;
	if ((size_t)n != CF_FS_HASHED_BYTES - 1)
		return -EBADMSG;
	*hashed = 1;
	memcpy(check, m->enc, sizeof(check));
	lfd = openat(m->sfd, CF_FS_LINKS_DIR, O_RDONLY | O_DIRECTORY |
	    O_NOFOLLOW | O_CLOEXEC);
	if (lfd < 0)
		return -EBADMSG;
	rc = read_small(lfd, check + strlen(CF_FS_TARGET_PREFIX), m->enc,
	    LINK_CAP - 1, &got);
	close(lfd);
	if (rc < 0)
		return -EBADMSG;
	m->enc[got] = '\0';
	cf_fs_long_target(m->enc, m->enc2);
	if (strcmp(m->enc2, check) != 0)
		return -EBADMSG;
	return 0;
}

/* Replaces symlink name of dirfd (stat st) by one to the new target. */
static int
symlink_one(struct mk *m, int dirfd, const char *name, const struct stat *st)
{
	char hashed[CF_FS_HASHED_BYTES], path[64];
	struct timespec ts[2];
	const char *stored;
	size_t i;
	int rc, is_hashed, lfd;

	rc = target_read(m, dirfd, name, &is_hashed);
	if (rc == -EBADMSG) {
		m->st->damaged++;
		return 0;
	}
	if (rc < 0)
		return rc;
	for (i = 0; i < m->n; i++)
		if (cf_fs_link_decrypt(m->keys[i], m->enc, m->plain,
		    PATH_MAX + 1) == 0)
			break;
	if (i == 0)
		return 0;
	if (i == m->n) {
		m->st->damaged++;
		return 0;
	}
	(void)unlinkat(dirfd, MK_TMP, 0);
	/* Another link of a symlink already replaced: link to that one. */
	for (i = 0; i < m->nsym; i++)
		if (m->sym[i].dev == st->st_dev && m->sym[i].ino == st->st_ino)
			break;
	if (i < m->nsym) {
		snprintf(path, sizeof(path), "/proc/self/fd/%d", m->sym[i].fd);
		if (linkat(AT_FDCWD, path, dirfd, MK_TMP, AT_SYMLINK_FOLLOW) !=
		    0)
			return -errno;
		goto replace;
	}
	rc = cf_fs_link_encrypt(m->keys[0], m->plain, m->enc2, LINK_CAP);
	if (rc < 0)
		return rc;
	stored = m->enc2;
	if (strlen(m->enc2) > CF_FS_LINK_MAX) {
		/* Its file in links/ first, named by its hash. */
		if (mkdirat(m->sfd, CF_FS_LINKS_DIR, 0700) != 0 &&
		    errno != EEXIST)
			return -errno;
		lfd = openat(m->sfd, CF_FS_LINKS_DIR, O_RDONLY | O_DIRECTORY |
		    O_NOFOLLOW | O_CLOEXEC);
		if (lfd < 0)
			return -errno;
		cf_fs_long_target(m->enc2, hashed);
		rc = write_atomic(lfd, MK_TMP, hashed +
		    strlen(CF_FS_TARGET_PREFIX), m->enc2, strlen(m->enc2),
		    0600);
		if (rc == 0 && fsync(lfd) != 0)
			rc = -errno;
		close(lfd);
		if (rc < 0)
			return rc;
		stored = hashed;
	}
	if (symlinkat(stored, dirfd, MK_TMP) != 0)
		return -errno;
	/* The tenant sees the symlink's owner and times: keep them. */
	ts[0] = st->st_atim;
	ts[1] = st->st_mtim;
	if (fchownat(dirfd, MK_TMP, st->st_uid, st->st_gid,
	    AT_SYMLINK_NOFOLLOW) != 0 ||
	    utimensat(dirfd, MK_TMP, ts, AT_SYMLINK_NOFOLLOW) != 0) {
		rc = -errno;
		(void)unlinkat(dirfd, MK_TMP, 0);
		return rc;
	}
	if (st->st_nlink > 1) {
		struct mk_sym *ns;
		int fd;

		if (m->nsym == m->capsym) {
			m->capsym = m->capsym ? m->capsym * 2 : 8;
			ns = realloc(m->sym, m->capsym * sizeof(*ns));
			if (ns == NULL)
				return -ENOMEM;
			m->sym = ns;
		}
		fd = openat(dirfd, MK_TMP, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		m->sym[m->nsym].dev = st->st_dev;
		m->sym[m->nsym].ino = st->st_ino;
		m->sym[m->nsym].fd = fd;
		m->nsym++;
	}
replace:
	if (renameat(dirfd, MK_TMP, dirfd, name) != 0)
		return -errno;
	m->st->links++;
	crash_point(NULL);
	return 0;
}

/* ---- the walk ------------------------------------------------------------- */

/* 1 if a backing name is a long entry's sidecar (cf.L.<43>.n). */
static int
is_sidecar(const char *b)
{
	size_t len = strlen(b);

	return strncmp(b, CF_FS_LONG_PREFIX, strlen(CF_FS_LONG_PREFIX)) == 0 &&
	    len == CF_FS_HASHED_BYTES - 1 + strlen(CF_FS_LONG_SIDECAR) &&
	    strcmp(b + CF_FS_HASHED_BYTES - 1, CF_FS_LONG_SIDECAR) == 0;
}

static int dir_run(struct mk *m, int dirfd, int depth);

/* One backing entry b of dirfd (IV diriv). */
static int
entry_one(struct mk *m, int dirfd, const unsigned char *diriv, const char *b,
    int depth)
{
	char side[CF_FS_HASHED_BYTES + sizeof(CF_FS_LONG_SIDECAR)];
	char nb[CF_FS_HASHED_BYTES + CF_FS_ENC_NAME_MAX];
	const char *cur = b;
	struct stat st;
	size_t got;
	int rc, k, is_long;

	is_long = strncmp(b, CF_FS_LONG_PREFIX,
	    strlen(CF_FS_LONG_PREFIX)) == 0;
	if (is_long) {
		snprintf(side, sizeof(side), "%s%s", b, CF_FS_LONG_SIDECAR);
		rc = read_small(dirfd, side, m->enc, CF_FS_ENC_NAME_MAX, &got);
		if (rc == -ENOENT || rc == -EFBIG || rc == -EPROTO ||
		    rc == -ELOOP) {
			m->st->damaged++;
			return 0;
		}
		if (rc < 0)
			return rc;
		m->enc[got] = '\0';
		k = name_which(m, diriv, m->enc, 1);
		if (k >= 0) {
			/* The sidecar must name this very entry. */
			cf_fs_long_name(m->enc, m->enc2);
			if (strcmp(m->enc2, b) != 0)
				k = -EBADMSG;
		}
	} else {
		k = name_which(m, diriv, b, 0);
	}
	m->st->entries++;
	if (k < 0) {
		m->st->damaged++;
		return 0;
	}
	if (k > 0) {
		rc = cf_fs_name_encrypt_any(m->keys[0], diriv, m->plain,
		    m->enc2, LINK_CAP);
		if (rc < 0)
			return rc;
		if (strlen(m->plain) > CF_FS_NAME_MAX) {
			char hashed[CF_FS_HASHED_BYTES];

			/* The new sidecar before the entry names it. */
			cf_fs_long_name(m->enc2, hashed);
			snprintf(nb, sizeof(nb), "%s%s", hashed,
			    CF_FS_LONG_SIDECAR);
			rc = write_atomic(dirfd, MK_TMP, nb, m->enc2,
			    strlen(m->enc2), 0600);
			if (rc < 0)
				return rc;
			snprintf(nb, sizeof(nb), "%s", hashed);
		} else {
			snprintf(nb, sizeof(nb), "%s", m->enc2);
		}
		if (renameat2(dirfd, b, dirfd, nb, RENAME_NOREPLACE) != 0)
			return -errno;
		if (is_long)
			(void)unlinkat(dirfd, side, 0);
		m->st->renamed++;
		crash_point(NULL);
		cur = nb;
	}
	if (fstatat(dirfd, cur, &st, AT_SYMLINK_NOFOLLOW) != 0)
		return -errno;
	if (S_ISLNK(st.st_mode)) {
		rc = symlink_one(m, dirfd, cur, &st);
	} else if (S_ISREG(st.st_mode)) {
		rc = xattrs_one(m, dirfd, cur, 1);
	} else if (S_ISDIR(st.st_mode)) {
		int sub;

		rc = xattrs_one(m, dirfd, cur, 0);
		if (rc < 0)
			return rc;
		sub = openat(dirfd, cur, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
		    O_CLOEXEC);
		if (sub < 0)
			return -errno;
		rc = dir_run(m, sub, depth + 1);
		close(sub);
	} else {
		rc = 0;		/* specials: a name only */
	}
	if (rc == 0 && m->progress != NULL)
		m->progress(m->arg, m->st);
	return rc;
}

/* Every entry of the directory dirfd, then its subdirectories' below. */
static int
dir_run(struct mk *m, int dirfd, int depth)
{
	unsigned char diriv[CF_FS_DIRIV_BYTES];
	struct fs_dent *names = NULL;
	struct timespec ts[2];
	struct stat st;
	size_t n = 0, i, got;
	int rc;

	if (depth > MK_DEPTH_MAX)
		return -ELOOP;
	rc = read_small(dirfd, CF_FS_DIRIV_NAME, diriv, sizeof(diriv), &got);
	if (rc == -ENOENT || rc == -EFBIG || rc == -EPROTO || rc == -ELOOP ||
	    (rc == 0 && got != sizeof(diriv))) {
		/* Its entries could not be named before either. */
		m->st->damaged++;
		return 0;
	}
	if (rc < 0)
		return rc;
	if (fstat(dirfd, &st) != 0)
		return -errno;
	(void)unlinkat(dirfd, MK_TMP, 0);
	rc = stash_recover(m, dirfd);
	if (rc < 0)
		return rc;
	rc = fs_dir_list(dirfd, &names, &n);
	if (rc < 0)
		return rc;
	for (i = 0; i < n && rc == 0; i++) {
		if (strncmp(names[i].name, "cf.", 3) == 0 &&
		    (strncmp(names[i].name, CF_FS_LONG_PREFIX,
		    strlen(CF_FS_LONG_PREFIX)) != 0 ||
		    strlen(names[i].name) != CF_FS_HASHED_BYTES - 1))
			continue;	/* reserved: diriv, sidecars */
		rc = entry_one(m, dirfd, diriv, names[i].name, depth);
	}
	/* Sidecars whose entry is gone (a crash between the two). */
	for (i = 0; i < n && rc == 0; i++) {
		char e[CF_FS_HASHED_BYTES];

		if (!is_sidecar(names[i].name))
			continue;
		memcpy(e, names[i].name, CF_FS_HASHED_BYTES - 1);
		e[CF_FS_HASHED_BYTES - 1] = '\0';
		if (faccessat(dirfd, e, F_OK, AT_SYMLINK_NOFOLLOW) != 0 &&
		    errno == ENOENT)
			(void)unlinkat(dirfd, names[i].name, 0);
	}
	fs_dir_list_free(names, n);
	if (rc < 0)
		return rc;
	/* Renames are no change of the tenant's: its times stay. */
	ts[0] = st.st_atim;
	ts[1] = st.st_mtim;
	if (futimens(dirfd, ts) != 0 || fsync(dirfd) != 0)
		return -errno;
	return 0;
}

/* Removes files of links/ that no key but an old one opens. */
static int
links_sweep(struct mk *m)
{
	struct fs_dent *names = NULL;
	size_t n = 0, i, got;
	int lfd, rc;

	lfd = openat(m->sfd, CF_FS_LINKS_DIR, O_RDONLY | O_DIRECTORY |
	    O_NOFOLLOW | O_CLOEXEC);
	if (lfd < 0)
		return errno == ENOENT ? 0 : -errno;
	rc = fs_dir_list(lfd, &names, &n);
	for (i = 0; i < n && rc == 0; i++) {
		size_t k;

		if (strncmp(names[i].name, "cf.", 3) == 0) {
			(void)unlinkat(lfd, names[i].name, 0);	/* a stray tmp */
			continue;
		}
		if (read_small(lfd, names[i].name, m->enc, LINK_CAP - 1, &got) != 0)
			continue;
		m->enc[got] = '\0';
		if (cf_fs_link_decrypt(m->keys[0], m->enc, m->plain,
		    PATH_MAX + 1) == 0)
			continue;
		/* Old: every symlink was replaced, so none names it. */
		for (k = 1; k < m->n; k++)
			if (cf_fs_link_decrypt(m->keys[k], m->enc, m->plain,
			    PATH_MAX + 1) == 0)
				break;
		if (k < m->n && unlinkat(lfd, names[i].name, 0) != 0)
			rc = -errno;
	}
	fs_dir_list_free(names, n);
	if (rc == 0 && fsync(lfd) != 0)
		rc = -errno;
	close(lfd);
	return rc;
}

/* ---- the run ---------------------------------------------------------------- */

/*
 * Listens on the store's control socket for the run, as a hold does
 * (fs_unlink.c): a mount or a hold starting meanwhile finds it answered
 * and refuses.  Returns the socket, or -EBUSY if something answers.
 */
static int
ctl_take(const char *backing, int sfd)
{
	struct sockaddr_un sa;
	int lfd, rc;

	rc = fs_ctl_addr(backing, &sa);
	if (rc < 0)
		return rc;
	if (cf_fs_store_served(backing) == 1)
		return -EBUSY;
	(void)unlinkat(sfd, FS_STORE_CTL, 0);	/* a crashed daemon's */
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		return -errno;
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		rc = errno == EADDRINUSE ? -EBUSY : -errno;
		close(lfd);
		return rc;
	}
	if (fchmodat(sfd, FS_STORE_CTL, 0600, 0) != 0 || listen(lfd, 16) != 0) {
		rc = -errno;
		(void)unlinkat(sfd, FS_STORE_CTL, 0);
		close(lfd);
		return rc;
	}
	return lfd;
}

static int
store_lock_ex(int sfd)
{
	int fd;

	fd = openat(sfd, MK_LOCK, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	if (fd < 0)
		return -errno;
	while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		int e = errno;

		if (e == EINTR)
			continue;
		close(fd);
		return e == EWOULDBLOCK ? -EBUSY : -e;
	}
	return fd;
}

/* The index of the keys the store's marker opens under, or -EBADMSG. */
static int
marker_which(struct mk *m)
{
	unsigned char blob[CF_FS_MARKER2_BYTES + 1];
	size_t got, i;
	int rc;

	rc = read_small(m->sfd, FS_STORE_MARKER, blob, sizeof(blob), &got);
	if (rc == -EFBIG || rc == -EPROTO)
		return -EBADMSG;
	if (rc < 0)
		return rc;
	for (i = 0; i < m->n; i++)
		if (fs_marker_open(m->keys[i], blob, got) == 0)
			return (int)i;
	return -EBADMSG;
}

static int
run(struct mk *m, const char *backing)
{
	unsigned char j[CF_FS_METAKEY_JOURNAL_BYTES], mk[CF_FS_MARKER2_BYTES];
	uint32_t from, to;
	size_t len;
	int dfd = -1, rc, cur;

	rc = cf_fs_metakey_journal_read(backing, &from, &to);
	if (rc < 0 && rc != -ENOENT)
		return rc;	/* damaged: touch nothing */
	cur = marker_which(m);
	if (cur < 0)
		return cur;
	if (cur == 0 && rc == -ENOENT)
		return 0;	/* already under the new version */
	/* A content re-encryption a crash left: its journal names a path,
	 * which the renames below would change. */
	rc = fs_rekey_finish(m->sfd);
	if (rc < 0)
		return rc;
	if (cur != 0) {
		cf_fs_metakey_journal_encode(m->keys[cur]->meta_version,
		    m->keys[0]->meta_version, j);
		rc = write_atomic(m->sfd, MK_JOURNAL_TMP,
		    CF_FS_METAKEY_JOURNAL, j, sizeof(j), 0600);
		if (rc == 0 && fsync(m->sfd) != 0)
			rc = -errno;
		if (rc < 0)
			return rc;
	}
	dfd = openat(m->sfd, FS_STORE_DATA, O_RDONLY | O_DIRECTORY |
	    O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	rc = stash_recover(m, m->sfd);
	if (rc == 0)
		rc = xattrs_one(m, m->sfd, FS_STORE_DATA, 0);
	if (rc == 0)
		rc = dir_run(m, dfd, 0);
	close(dfd);
	if (rc == 0 && m->st->damaged == 0)
		rc = links_sweep(m);
	if (rc < 0)
		return rc;
	/* The marker last: from now on the store opens under the new
	 * version only.  Then the journal goes. */
	if (cur != 0) {
		rc = fs_marker_seal(m->keys[0], mk, &len);
		if (rc == 0)
			rc = write_atomic(m->sfd, MK_JOURNAL_TMP,
			    FS_STORE_MARKER, mk, len, 0400);
		if (rc == 0 && fsync(m->sfd) != 0)
			rc = -errno;
		if (rc < 0)
			return rc;
		crash_point("marker");
	}
	if (unlinkat(m->sfd, CF_FS_METAKEY_JOURNAL, 0) != 0 && errno != ENOENT)
		return -errno;
	if (fsync(m->sfd) != 0)
		return -errno;
	return 0;
}

int
cf_fs_metakey(struct cf_fs_keys *const *keys, size_t n, const char *backing,
    void (*progress)(void *arg, const struct cf_fs_metakey_stats *st),
    void *arg, struct cf_fs_metakey_stats *st)
{
	struct mk m;
	size_t i;
	int lfd = -1, cfd = -1, rc;

	memset(st, 0, sizeof(*st));
	memset(&m, 0, sizeof(m));
	if (n == 0)
		return -EINVAL;
	m.keys = keys;
	m.n = n;
	m.st = st;
	m.progress = progress;
	m.arg = arg;
	m.sfd = open(backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (m.sfd < 0)
		return -errno;
	if (faccessat(m.sfd, FS_STORE_DATA, F_OK, AT_SYMLINK_NOFOLLOW) != 0) {
		rc = -ENOENT;
		goto out;
	}
	/* No daemon, backup or other offline run meanwhile ... */
	lfd = store_lock_ex(m.sfd);
	if (lfd < 0) {
		rc = lfd;
		goto out;
	}
	/* ... and no hold (offline retention) either. */
	cfd = ctl_take(backing, m.sfd);
	if (cfd < 0) {
		rc = cfd;
		goto out;
	}
	m.enc = malloc(LINK_CAP);
	m.enc2 = malloc(LINK_CAP);
	m.val = malloc(MK_XVALUE_MAX);
	m.val2 = sodium_malloc(MK_XVALUE_MAX);
	m.plain = sodium_malloc(PATH_MAX + 1);
	m.xlist = malloc(MK_XLIST_MAX);
	if (m.enc == NULL || m.enc2 == NULL || m.val == NULL ||
	    m.val2 == NULL || m.plain == NULL || m.xlist == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	rc = run(&m, backing);
out:
	for (i = 0; i < m.nsym; i++)
		close(m.sym[i].fd);
	free(m.sym);
	free(m.enc);
	free(m.enc2);
	free(m.val);
	free(m.xlist);
	if (m.val2 != NULL)
		sodium_free(m.val2);
	if (m.plain != NULL)
		sodium_free(m.plain);
	if (cfd >= 0) {
		(void)unlinkat(m.sfd, FS_STORE_CTL, 0);
		close(cfd);
	}
	if (lfd >= 0)
		close(lfd);
	close(m.sfd);
	return rc;
}
