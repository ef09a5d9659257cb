/*
 * fs_unlink.c - removing one name from a store, and the offline hold.
 *
 * What goes with a name besides the backing entry: a long name's sidecar
 * (cf.L.<hash>.n), the links/ file of a symlink whose target is long, and
 * the generation of a regular file whose last link it was (so the log
 * forgets it).  The daemon's unlink and rename (fs_ops.c) and the
 * offline unlink below share these steps, in the same order: the entry
 * first, then what it named, so a crash in between leaves only
 * unreferenced leftovers (a sidecar, a links/ file, a log record), never
 * an entry whose parts are missing.
 *
 * The hold (cf_fs_hold_*) lets a tool change an unmounted store: it
 * listens on the store's control socket, so a daemon that starts to
 * mount the store meanwhile finds it answered and refuses ([CTL-0]), and
 * it removes entries only through a reader's directory handle of that
 * store.  It deliberately offers nothing but removal: writing a store is
 * the daemon's job.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <sodium.h>

#include "fs_int.h"

/* 1 if s is "cf.L." + 43 base64url characters (a long name's entry). */
static int
is_long_entry(const char *s)
{
	return strlen(s) == CF_FS_HASHED_BYTES - 1 &&
	    strncmp(s, CF_FS_LONG_PREFIX, strlen(CF_FS_LONG_PREFIX)) == 0 &&
	    strchr(s + strlen(CF_FS_LONG_PREFIX), '.') == NULL;
}

void
fs_sidecar_unlink(int dirfd, const char *b)
{
	char side[CF_FS_HASHED_BYTES + sizeof(CF_FS_LONG_SIDECAR)];

	if (!is_long_entry(b))
		return;
	snprintf(side, sizeof(side), "%s%s", b, CF_FS_LONG_SIDECAR);
	(void)unlinkat(dirfd, side, 0);
}

void
fs_unlink_plan(const struct cf_fs_keys *k, int dirfd, const char *b,
    int gen, struct fs_unlink_plan *p)
{
	unsigned char buf[CF_FS_GEN_BYTES];
	char path[64 + CF_FS_ENC_NAME_MAX], t[CF_FS_HASHED_BYTES];
	struct stat st;
	uint64_t g;
	ssize_t n;

	memset(p, 0, sizeof(*p));
	if (fstatat(dirfd, b, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
	    st.st_nlink != 1)
		return;		/* other links keep what it names */
	if (S_ISLNK(st.st_mode) && st.st_size == CF_FS_HASHED_BYTES - 1) {
		if (readlinkat(dirfd, b, t, sizeof(t)) != sizeof(t) - 1)
			return;
		t[sizeof(t) - 1] = '\0';
		if (strncmp(t, CF_FS_TARGET_PREFIX,
		    strlen(CF_FS_TARGET_PREFIX)) == 0 &&
		    strchr(t + strlen(CF_FS_TARGET_PREFIX), '/') == NULL)
			memcpy(p->gone, t, sizeof(t));
		return;
	}
	if (!gen || !S_ISREG(st.st_mode))
		return;
	snprintf(path, sizeof(path), "/proc/self/fd/%d/%s", dirfd, b);
	n = getxattr(path, CF_FS_GEN_XATTR, buf, sizeof(buf));
	p->last = n > 0 && cf_fs_gen_decode(k, buf, (size_t)n, p->id,
	    &g, NULL) == 0;
}

void
fs_unlink_after(int links_fd, struct fs_gen *g, const struct fs_unlink_plan *p)
{
	if (p->gone[0] != '\0' && links_fd >= 0)
		(void)unlinkat(links_fd, p->gone + strlen(CF_FS_TARGET_PREFIX),
		    0);
	if (p->last && g != NULL)
		(void)!fs_gen_set(g, p->id, 0);
}

/* ---- the offline hold ---------------------------------------------------- */

struct cf_fs_hold {
	const struct cf_fs_keys *keys;	/* borrowed */
	int store_fd;
	int links_fd;			/* store/links, or -1 if none */
	int lfd;			/* listening on store/cf.ctl */
	dev_t sock_dev;			/* the socket file we bound */
	ino_t sock_ino;
	dev_t store_dev;
	ino_t store_ino;
	struct fs_gen *gen;		/* NULL: no generation log */
};

int
cf_fs_hold_take(struct cf_fs_hold **out, const struct cf_fs_keys *keys,
    const char *backing, const char *gen_log)
{
	struct cf_fs_reader *r = NULL;
	struct sockaddr_un sa;
	struct cf_fs_hold *h;
	struct stat st;
	int rc;

	*out = NULL;
	rc = fs_ctl_addr(backing, &sa);
	if (rc < 0)
		return rc;
	/* Only a store of these keys (its marker checked) is changed. */
	rc = cf_fs_reader_open(&r, keys, backing);
	cf_fs_reader_free(r);
	if (rc < 0)
		return rc;
	h = calloc(1, sizeof(*h));
	if (h == NULL)
		return -ENOMEM;
	h->keys = keys;
	h->links_fd = h->lfd = -1;
	h->store_fd = open(backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (h->store_fd < 0 || fstat(h->store_fd, &st) != 0) {
		rc = -errno;
		goto fail;
	}
	h->store_dev = st.st_dev;
	h->store_ino = st.st_ino;
	/* A daemon that answers serves the store: hands off. */
	if (cf_fs_store_served(backing) == 1) {
		rc = -EBUSY;
		goto fail;
	}
	/* A socket nobody answers is a crashed daemon's (or hold's). */
	(void)unlinkat(h->store_fd, FS_STORE_CTL, 0);
	h->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (h->lfd < 0 || bind(h->lfd, (struct sockaddr *)&sa,
	    sizeof(sa)) != 0) {
		rc = errno == EADDRINUSE ? -EBUSY : -errno;
		if (h->lfd >= 0 && errno == EADDRINUSE) {
			close(h->lfd);
			h->lfd = -1;	/* not ours: never unlink it */
		}
		goto fail;
	}
	if (fchmodat(h->store_fd, FS_STORE_CTL, 0600, 0) != 0 ||
	    listen(h->lfd, 16) != 0 || fstatat(h->store_fd, FS_STORE_CTL,
	    &st, AT_SYMLINK_NOFOLLOW) != 0) {
		rc = -errno;
		goto fail;
	}
	h->sock_dev = st.st_dev;
	h->sock_ino = st.st_ino;
	h->links_fd = openat(h->store_fd, CF_FS_LINKS_DIR, O_RDONLY |
	    O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (h->links_fd < 0 && errno != ENOENT) {
		rc = -errno;
		goto fail;
	}
	if (gen_log != NULL) {
		rc = fs_gen_open(&h->gen, gen_log, 0);
		if (rc < 0)
			goto fail;
	}
	*out = h;
	return 0;
fail:
	cf_fs_hold_release(h);
	return rc;
}

void
cf_fs_hold_release(struct cf_fs_hold *h)
{
	struct stat st;

	if (h == NULL)
		return;
	fs_gen_close(h->gen);
	if (h->lfd >= 0) {
		/* Removes the socket file only while it is still ours. */
		if (fstatat(h->store_fd, FS_STORE_CTL, &st,
		    AT_SYMLINK_NOFOLLOW) == 0 && st.st_ino == h->sock_ino &&
		    st.st_dev == h->sock_dev)
			(void)unlinkat(h->store_fd, FS_STORE_CTL, 0);
		close(h->lfd);
	}
	if (h->links_fd >= 0)
		close(h->links_fd);
	if (h->store_fd >= 0)
		close(h->store_fd);
	free(h);
}

int
cf_fs_hold_check(const struct cf_fs_hold *h)
{
	struct stat st;

	if (fstatat(h->store_fd, FS_STORE_CTL, &st, AT_SYMLINK_NOFOLLOW) !=
	    0 || st.st_ino != h->sock_ino || st.st_dev != h->sock_dev)
		return -EBUSY;	/* a daemon took the store over */
	return 0;
}

/* 0 if d is a directory of the held store (its reader's). */
static int
same_store(const struct cf_fs_hold *h, const struct cf_fs_rdir *d)
{
	struct stat st;

	if (fstat(fs_rdir_store_fd(d), &st) != 0)
		return -errno;
	return st.st_dev == h->store_dev && st.st_ino == h->store_ino ? 0 :
	    -EINVAL;
}

int
cf_fs_same_object(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino &&
	    (a->st_mode & S_IFMT) == (b->st_mode & S_IFMT) &&
	    a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
	    a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	    a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
	    a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

int
cf_fs_hold_unlink(struct cf_fs_hold *h, const struct cf_fs_rdir *d,
    const char *name, const struct stat *expect)
{
	struct fs_unlink_plan p;
	char b[NAME_MAX + 1];
	struct stat st;
	int dfd = fs_rdir_fd(d), rc;

	rc = same_store(h, d);
	if (rc == 0)
		rc = cf_fs_hold_check(h);
	if (rc == 0)
		rc = fs_rdir_backing_name(d, name, b);
	if (rc < 0)
		return rc;
	if (fstatat(dfd, b, &st, AT_SYMLINK_NOFOLLOW) != 0)
		return -errno;
	if (S_ISDIR(st.st_mode))
		return -EISDIR;
	if (expect != NULL && !cf_fs_same_object(&st, expect))
		return -ESTALE;	/* changed since the caller looked */
	fs_unlink_plan(h->keys, dfd, b, h->gen != NULL, &p);
	if (unlinkat(dfd, b, 0) != 0)
		return -errno;
	fs_sidecar_unlink(dfd, b);
	fs_unlink_after(h->links_fd, h->gen, &p);
	return 0;
}

int
cf_fs_hold_sweep(struct cf_fs_hold *h, const struct cf_fs_rdir *d)
{
	char entry[CF_FS_HASHED_BYTES];
	struct dirent *de;
	struct stat st;
	DIR *dp;
	size_t len, sl = strlen(CF_FS_LONG_SIDECAR);
	int fd, rc, n = 0;

	rc = same_store(h, d);
	if (rc == 0)
		rc = cf_fs_hold_check(h);
	if (rc < 0)
		return rc;
	fd = openat(fs_rdir_fd(d), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	dp = fdopendir(fd);
	if (dp == NULL) {
		close(fd);
		return -ENOMEM;
	}
	while ((de = readdir(dp)) != NULL) {
		len = strlen(de->d_name);
		if (len != CF_FS_HASHED_BYTES - 1 + sl ||
		    strcmp(de->d_name + len - sl, CF_FS_LONG_SIDECAR) != 0)
			continue;
		memcpy(entry, de->d_name, len - sl);
		entry[len - sl] = '\0';
		if (!is_long_entry(entry) || fstatat(dirfd(dp), entry, &st,
		    AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT)
			continue;
		if (unlinkat(dirfd(dp), de->d_name, 0) == 0)
			n++;
	}
	closedir(dp);
	return n;
}
