/*
 * fs_snap.c - point-in-time snapshots of a mounted store, for backups.
 *
 * A backup asks the daemon over its control socket (store/cf.ctl) for a
 * snapshot.  The daemon builds a link farm of the store under
 * store/snap/ID (directories copied, every other object hard-linked: no
 * data is copied) and notes which inodes the farm shares with the live
 * tree, in two passes.  The live pass links the whole store while the
 * tenant's writers go on; every operation that changes a directory's
 * entries or metadata meanwhile marks that directory (fs_snap_touch).
 * Then every mutating operation is frozen while the frozen pass brings
 * data/ itself, links/ and the marked directories up to date, and thawed.
 * The writer pause is the frozen pass: it grows with the directories
 * changed during the live pass, not with the store.  (A file changed in
 * place during the live pass needs nothing: the farm links the same
 * inode, so it holds whatever the file holds at the freeze.)
 *
 * After the thaw, the first change to a shared inode (write, truncate,
 * fallocate, setattr, xattrs) first gives the farm a private copy of it:
 * the ciphertext is copied sparsely, metadata and xattrs too, and the copy
 * replaces every farm link of the inode with a rename.  A regular file of
 * 1 MiB or more gets a block delta instead (docs/format/ctl.md [CTL-7]):
 * an empty private file with its metadata, the live file linked in cow/,
 * and each later change saving the 64 KiB units it replaces first
 * (fs_snap_save), so a writer waits for what it changes, not for the
 * file.  So the farm keeps exactly the state at the freeze.  A reader
 * holding the old farm link open sees its ctime change (the link count
 * drops) and rereads the copy (cf_fs_rfile_check).  Each snapshot raises an epoch while writers are
 * frozen, so the daemon raises a file's generation before its first change
 * after it (incremental backups rely on that, docs/format/ctl.md [CTL-6]).
 * The farm is itself a store: cf_fs_reader_open()
 * reads it.  The snapshot ends when the client says RELEASE or closes the
 * socket; the farm is then removed.  docs/backup.md has the protocol.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
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

#include "fs_int.h"

#define SNAP_BUCKETS 16384U
#define SNAP_MARKS 1024U
#define SNAP_DIR "snap"
#define COW_DIR FS_COW_DIR		/* the farm's block deltas ([CTL-7]) */
#define COW_UNIT FS_COW_UNIT		/* bytes saved at a time */
#define COW_MIN (1 << 20)		/* smaller files are copied whole */
#define COW_HDR FS_COW_HDR		/* magic, unit size, reserved */
#define COW_MAGIC FS_COW_MAGIC

struct snap_ent {
	struct snap_ent *next;
	dev_t dev;
	ino_t ino;
	size_t npaths;
	char **paths;		/* farm paths, relative to the farm's data/ */
};

/* A live directory the farm mirrors, and where (control thread only). */
struct snap_dir {
	struct snap_dir *next;
	dev_t dev;
	ino_t ino;
	char *path;		/* relative to the farm's data/; "" is data/ */
};

/* An inode changed during the live pass (fs_snap_touch). */
struct snap_mark {
	struct snap_mark *next;
	dev_t dev;
	ino_t ino;
};

/*
 * A large shared file after its first change ([CTL-7]): the farm's name
 * for it is a private, empty, sparse file with its metadata; the live
 * file is linked at cow/INO and the bytes each change replaces are saved
 * first in cow/INO.d, a unit at a time.
 */
struct snap_delta {
	struct snap_delta *next;
	dev_t dev;
	ino_t ino;			/* the live file's */
	pthread_mutex_t mutex;		/* saved, and the files' contents */
	char dname[40];			/* INO.d in the farm's cow/ */
	off_t csize;			/* the backing size at the freeze */
	off_t area;			/* where unit 0 is saved in dfd */
	uint64_t nunits;
	unsigned char *saved;		/* the map, as written to dfd */
};

struct fs_snap {
	char *backing;
	int store_fd;
	int lfd;			/* listening control socket */
	int stop_pipe[2];
	pthread_t thread;
	int thread_started;
	int (*freeze)(void *arg, int on);
	void *arg;
	pthread_mutex_t mutex;		/* table, farm_fd, broken */
	atomic_int active;
	_Atomic uint64_t epoch;		/* snapshots taken; see fs_snap_epoch */
	int gens;			/* the daemon raises generations */
	struct snap_ent *table[SNAP_BUCKETS];
	int farm_fd;			/* the farm's data/ directory */
	char farm[PATH_MAX];		/* absolute path of the farm */
	int broken;			/* a copy-on-write failed */
	struct snap_dir *dirs[SNAP_BUCKETS];	/* control thread only */
	atomic_int tracking;		/* the live pass: mark changes */
	pthread_mutex_t mark_mutex;
	struct snap_mark *marks[SNAP_MARKS];	/* under mark_mutex */
	int marks_lost;				/* under mark_mutex */
	struct fs_rekey_host *rekey;	/* KEYS, REKEY; NULL: refused */
	atomic_int stopping;		/* unmount: a REKEY stops */
	int cow_fd;			/* the farm's cow/ (under mutex) */
	pthread_mutex_t delta_mutex;
	struct snap_delta *deltas[SNAP_MARKS];	/* under delta_mutex */
	atomic_int ndeltas;
};

static void deltas_clear(struct fs_snap *s);

static size_t
snap_bucket(dev_t dev, ino_t ino)
{
	return (size_t)((ino * 2654435761U) ^ dev) % SNAP_BUCKETS;
}

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000U + (uint64_t)ts.tv_nsec;
}

/* ---- the shared-inode table --------------------------------------------- */

static int
table_add(struct fs_snap *s, dev_t dev, ino_t ino, const char *path)
{
	size_t b = snap_bucket(dev, ino);
	struct snap_ent *e;
	char **np, *p;

	for (e = s->table[b]; e != NULL; e = e->next)
		if (e->dev == dev && e->ino == ino)
			break;
	if (e == NULL) {
		e = calloc(1, sizeof(*e));
		if (e == NULL)
			return -ENOMEM;
		e->dev = dev;
		e->ino = ino;
		e->next = s->table[b];
		s->table[b] = e;
	}
	p = strdup(path);
	np = realloc(e->paths, (e->npaths + 1) * sizeof(*np));
	if (p == NULL || np == NULL) {
		free(p);
		if (np != NULL)
			e->paths = np;
		return -ENOMEM;
	}
	e->paths = np;
	e->paths[e->npaths++] = p;
	return 0;
}

static void
ent_free(struct snap_ent *e)
{
	size_t i;

	for (i = 0; i < e->npaths; i++)
		free(e->paths[i]);
	free(e->paths);
	free(e);
}

static void
table_clear(struct fs_snap *s)
{
	size_t i;

	for (i = 0; i < SNAP_BUCKETS; i++) {
		struct snap_ent *e = s->table[i], *next;

		for (; e != NULL; e = next) {
			next = e->next;
			ent_free(e);
		}
		s->table[i] = NULL;
	}
}

/* Removes and returns the entry of (dev, ino), or NULL.  Holds mutex. */
static struct snap_ent *
table_take(struct fs_snap *s, dev_t dev, ino_t ino)
{
	struct snap_ent **p;

	for (p = &s->table[snap_bucket(dev, ino)]; *p != NULL;
	    p = &(*p)->next) {
		if ((*p)->dev == dev && (*p)->ino == ino) {
			struct snap_ent *e = *p;

			*p = e->next;
			return e;
		}
	}
	return NULL;
}

/* Forgets that the farm path names (dev, ino).  Holds mutex. */
static void
table_drop(struct fs_snap *s, dev_t dev, ino_t ino, const char *path)
{
	struct snap_ent **p, *e;
	size_t i;

	for (p = &s->table[snap_bucket(dev, ino)]; *p != NULL;
	    p = &(*p)->next)
		if ((*p)->dev == dev && (*p)->ino == ino)
			break;
	if ((e = *p) == NULL)
		return;
	for (i = 0; i < e->npaths; i++) {
		if (strcmp(e->paths[i], path) == 0) {
			free(e->paths[i]);
			e->paths[i] = e->paths[--e->npaths];
			break;
		}
	}
	if (e->npaths == 0) {
		*p = e->next;
		ent_free(e);
	}
}

/* ---- the live pass's directories and marks --------------------------------- */

/* Notes that the live directory (dev, ino) is mirrored at path. */
static int
dir_add(struct fs_snap *s, dev_t dev, ino_t ino, const char *path)
{
	size_t b = snap_bucket(dev, ino);
	struct snap_dir *d;
	char *p = strdup(path);

	if (p == NULL)
		return -ENOMEM;
	for (d = s->dirs[b]; d != NULL; d = d->next) {
		if (d->dev == dev && d->ino == ino) {
			free(d->path);
			d->path = p;
			return 0;
		}
	}
	d = malloc(sizeof(*d));
	if (d == NULL) {
		free(p);
		return -ENOMEM;
	}
	d->dev = dev;
	d->ino = ino;
	d->path = p;
	d->next = s->dirs[b];
	s->dirs[b] = d;
	return 0;
}

static const char *
dir_find(const struct fs_snap *s, dev_t dev, ino_t ino)
{
	const struct snap_dir *d;

	for (d = s->dirs[snap_bucket(dev, ino)]; d != NULL; d = d->next)
		if (d->dev == dev && d->ino == ino)
			return d->path;
	return NULL;
}

/* Forgets every directory mirrored at path or below it. */
static void
dir_drop_under(struct fs_snap *s, const char *path)
{
	size_t i, len = strlen(path);
	struct snap_dir **p, *d;

	for (i = 0; i < SNAP_BUCKETS; i++) {
		for (p = &s->dirs[i]; (d = *p) != NULL;) {
			if (strncmp(d->path, path, len) == 0 &&
			    (d->path[len] == '\0' || d->path[len] == '/')) {
				*p = d->next;
				free(d->path);
				free(d);
			} else {
				p = &d->next;
			}
		}
	}
}

static void
dirs_clear(struct fs_snap *s)
{
	size_t i;

	for (i = 0; i < SNAP_BUCKETS; i++) {
		struct snap_dir *d = s->dirs[i], *next;

		for (; d != NULL; d = next) {
			next = d->next;
			free(d->path);
			free(d);
		}
		s->dirs[i] = NULL;
	}
}

void
fs_snap_touch(struct fs_snap *s, dev_t dev, ino_t ino)
{
	struct snap_mark *m;
	size_t b;

	if (s == NULL || !atomic_load(&s->tracking))
		return;
	b = snap_bucket(dev, ino) % SNAP_MARKS;
	pthread_mutex_lock(&s->mark_mutex);
	for (m = s->marks[b]; m != NULL; m = m->next)
		if (m->dev == dev && m->ino == ino)
			break;
	if (m == NULL && (m = malloc(sizeof(*m))) != NULL) {
		m->dev = dev;
		m->ino = ino;
		m->next = s->marks[b];
		s->marks[b] = m;
	} else if (m == NULL) {
		/* No memory: the frozen pass must then look everywhere. */
		s->marks_lost = 1;
	}
	pthread_mutex_unlock(&s->mark_mutex);
}

/* Takes every mark as one list (the caller frees it). */
static struct snap_mark *
marks_take(struct fs_snap *s, int *lost)
{
	struct snap_mark *all = NULL, *m, *next;
	size_t i;

	pthread_mutex_lock(&s->mark_mutex);
	for (i = 0; i < SNAP_MARKS; i++) {
		for (m = s->marks[i]; m != NULL; m = next) {
			next = m->next;
			m->next = all;
			all = m;
		}
		s->marks[i] = NULL;
	}
	*lost = s->marks_lost;
	s->marks_lost = 0;
	pthread_mutex_unlock(&s->mark_mutex);
	return all;
}

static void
marks_free(struct snap_mark *m)
{
	struct snap_mark *next;

	for (; m != NULL; m = next) {
		next = m->next;
		free(m);
	}
}

/* ---- copying metadata ------------------------------------------------ */

/*
 * Copies every xattr of from to to: /proc/self/fd paths of a file or a
 * directory (followed; symlinks carry no user xattrs here).
 */
static int
copy_xattrs(const char *from, const char *to)
{
	char *names = NULL, *n;
	unsigned char *val = NULL;
	ssize_t len, vl;
	int rc = 0;

	len = listxattr(from, NULL, 0);
	if (len <= 0)
		return len < 0 && errno != ENOTSUP ? -errno : 0;
	names = malloc((size_t)len);
	val = malloc(65536);
	if (names == NULL || val == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	len = listxattr(from, names, (size_t)len);
	if (len < 0) {
		rc = -errno;
		goto out;
	}
	for (n = names; n < names + len; n += strlen(n) + 1) {
		vl = getxattr(from, n, val, 65536);
		if (vl < 0 || setxattr(to, n, val, (size_t)vl, 0) != 0) {
			rc = -errno;
			goto out;
		}
	}
out:
	free(names);
	free(val);
	return rc;
}

static void
fd_path(int fd, char *buf, size_t len)
{
	snprintf(buf, len, "/proc/self/fd/%d", fd);
}

/* Gives dst (an fd of a new object) the owner, mode and times of st. */
static int
copy_meta_fd(int dst, const struct stat *st)
{
	struct timespec tv[2];

	tv[0] = st->st_atim;
	tv[1] = st->st_mtim;
	if (fchown(dst, st->st_uid, st->st_gid) != 0 ||
	    fchmod(dst, st->st_mode & 07777) != 0 || futimens(dst, tv) != 0)
		return -errno;
	return 0;
}

/* ---- building the farm ----------------------------------------------------- */

/*
 * During the live pass the tenant changes the tree under the mirror: an
 * entry may go, come, or change kind between readdir and the call that
 * links or opens it.  Each such change marked the directory it happened
 * in (the daemon touches it), and the frozen pass redoes that directory,
 * so the live pass skips the entry.  Any other error stops the snapshot.
 */
static int
raced(int live, int err)
{
	return live && (err == ENOENT || err == EEXIST || err == ENOTDIR ||
	    err == ELOOP || err == ENODATA || err == ESTALE);
}

static int mirror(struct fs_snap *s, int src, int dst, const char *rel,
    int record, int live);

/*
 * Mirrors the entry name of directory src into dst: a directory is made
 * and filled recursively (and, with record, noted with its path), any
 * other object is hard-linked (and, with record, its inode noted as
 * shared).  type is the readdir d_type.  rel is dst's path relative to
 * the farm's data/ ("" at the top).
 */
static int
mirror_one(struct fs_snap *s, int src, int dst, const char *name,
    unsigned char type, const char *rel, int record, int live)
{
	char path[PATH_MAX], a[64], b[64];
	struct stat st;
	int rc = 0, sfd, dfd;

	if ((size_t)snprintf(path, sizeof(path), "%s%s%s", rel,
	    *rel ? "/" : "", name) >= sizeof(path))
		return -ENAMETOOLONG;
	if (type == DT_UNKNOWN) {
		if (fstatat(src, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
			return errno == ENOENT || raced(live, errno) ? 0 :
			    -errno;
		type = S_ISDIR(st.st_mode) ? DT_DIR : DT_REG;
	}
	if (type != DT_DIR) {
		if (linkat(src, name, dst, name, 0) != 0) {
			rc = errno;
			/* A directory now: linkat refuses it. */
			if (rc == EPERM && fstatat(src, name, &st,
			    AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
				rc = live ? 0 : EPERM;
			return raced(live, rc) ? 0 : -rc;
		}
		if (!record)
			return 0;
		/* The inode linked, not the one readdir saw. */
		if (fstatat(dst, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
			return -errno;
		return table_add(s, st.st_dev, st.st_ino, path);
	}
	sfd = openat(src, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC);
	if (sfd < 0)
		return raced(live, errno) ? 0 : -errno;
	if (fstat(sfd, &st) != 0 || mkdirat(dst, name, 0700) != 0) {
		rc = raced(live, errno) ? 0 : -errno;
		close(sfd);
		return rc;
	}
	dfd = openat(dst, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC);
	if (dfd < 0)
		rc = -errno;
	if (rc == 0)
		rc = mirror(s, sfd, dfd, path, record, live);
	if (rc == 0) {
		fd_path(sfd, a, sizeof(a));
		fd_path(dfd, b, sizeof(b));
		rc = copy_xattrs(a, b);
		if (raced(live, -rc))
			rc = 0;
	}
	/* Last: the entries made above changed dfd's times. */
	if (rc == 0)
		rc = copy_meta_fd(dfd, &st);
	if (rc == 0 && record)
		rc = dir_add(s, st.st_dev, st.st_ino, path);
	close(sfd);
	if (dfd >= 0)
		close(dfd);
	return rc;
}

/*
 * Mirrors directory src (an open fd) into dst, entry by entry.  live: the
 * live pass (changes may race with it).
 */
static int
mirror(struct fs_snap *s, int src, int dst, const char *rel, int record,
    int live)
{
	struct dirent *de;
	DIR *d;
	int fd, rc = 0;

	fd = dup(src);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return -errno;
	}
	while (rc == 0 && (de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		rc = mirror_one(s, src, dst, de->d_name, de->d_type, rel,
		    record, live);
	}
	closedir(d);
	return rc;
}

/* Removes the tree at name in dirfd (the farm's own files only). */
static void
remove_tree(int at, const char *name)
{
	struct dirent *de;
	DIR *d;
	int fd;

	if (unlinkat(at, name, 0) == 0 || errno == ENOENT)
		return;
	fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC);
	if (fd < 0)
		return;
	(void)fchmod(fd, 0700);		/* a copied 0151 directory */
	d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return;
	}
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 &&
		    strcmp(de->d_name, "..") != 0)
			remove_tree(dirfd(d), de->d_name);
	closedir(d);
	(void)unlinkat(at, name, AT_REMOVEDIR);
}

/* ---- the frozen pass ----------------------------------------------------- */

static int
dent_cmp(const void *a, const void *b)
{
	return strcmp(((const struct fs_dent *)a)->name,
	    ((const struct fs_dent *)b)->name);
}

void
fs_dir_list_free(struct fs_dent *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(v[i].name);
	free(v);
}

/* fs_int.h */
int
fs_dir_list(int fd, struct fs_dent **out, size_t *nout)
{
	struct fs_dent *v = NULL, *nv;
	struct dirent *de;
	size_t n = 0, cap = 0;
	DIR *d;
	int dfd, rc = 0;

	*out = NULL;
	*nout = 0;
	dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	d = fdopendir(dfd);
	if (d == NULL) {
		close(dfd);
		return -errno;
	}
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			nv = realloc(v, cap * sizeof(*v));
			if (nv == NULL) {
				rc = -ENOMEM;
				break;
			}
			v = nv;
		}
		v[n].name = strdup(de->d_name);
		if (v[n].name == NULL) {
			rc = -ENOMEM;
			break;
		}
		v[n].ino = de->d_ino;
		v[n].type = de->d_type;
		if (v[n].type == DT_UNKNOWN) {
			struct stat st;

			if (fstatat(dirfd(d), de->d_name, &st,
			    AT_SYMLINK_NOFOLLOW) != 0) {
				free(v[n].name);
				rc = -errno;
				break;
			}
			v[n].type = S_ISDIR(st.st_mode) ? DT_DIR : DT_REG;
		}
		n++;
	}
	closedir(d);
	if (rc < 0) {
		fs_dir_list_free(v, n);
		return rc;
	}
	if (n > 1)
		qsort(v, n, sizeof(*v), dent_cmp);
	*out = v;
	*nout = n;
	return 0;
}

/*
 * Forgets the shared inodes of every file below the farm directory fd.
 * A path left in the table would later get another object's copy.
 */
static int
forget_files(struct fs_snap *s, int fd, const char *rel)
{
	char path[PATH_MAX];
	struct fs_dent *v;
	struct stat st;
	size_t n, i;
	int sub, rc;

	rc = fs_dir_list(fd, &v, &n);
	for (i = 0; rc == 0 && i < n; i++) {
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", rel,
		    v[i].name) >= sizeof(path)) {
			rc = -ENAMETOOLONG;
			break;
		}
		if (v[i].type != DT_DIR) {
			if (fstatat(fd, v[i].name, &st,
			    AT_SYMLINK_NOFOLLOW) != 0)
				rc = -errno;
			else
				table_drop(s, st.st_dev, st.st_ino, path);
			continue;
		}
		sub = openat(fd, v[i].name, O_RDONLY | O_DIRECTORY |
		    O_NOFOLLOW | O_CLOEXEC);
		if (sub < 0) {
			rc = -errno;
			break;
		}
		rc = forget_files(s, sub, path);
		close(sub);
	}
	fs_dir_list_free(v, n);
	return rc;
}

static void remove_tree(int at, const char *name);

/* Removes the farm entry name of dst (at rel/name) and what notes it. */
static int
drop_entry(struct fs_snap *s, int dst, const char *name, const char *rel)
{
	char path[PATH_MAX];
	struct stat st;
	int sub, rc;

	if ((size_t)snprintf(path, sizeof(path), "%s%s%s", rel,
	    *rel ? "/" : "", name) >= sizeof(path))
		return -ENAMETOOLONG;
	if (fstatat(dst, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(st.st_mode)) {
		table_drop(s, st.st_dev, st.st_ino, path);
		return unlinkat(dst, name, 0) == 0 ? 0 : -errno;
	}
	/* Scans every directory record: cheap next to the tree it drops. */
	dir_drop_under(s, path);
	sub = openat(dst, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC);
	if (sub < 0)
		return -errno;
	rc = forget_files(s, sub, path);
	close(sub);
	if (rc < 0)
		return rc;
	remove_tree(dst, name);
	return fstatat(dst, name, &st, AT_SYMLINK_NOFOLLOW) != 0 &&
	    errno == ENOENT ? 0 : -EIO;
}

/* Makes the xattrs of to exactly those of from (/proc/self/fd paths). */
static int
copy_xattrs_exact(const char *from, const char *to)
{
	char *have = NULL, *want = NULL, *n, *m;
	ssize_t hl, wl;
	int rc;

	rc = copy_xattrs(from, to);
	if (rc < 0)
		return rc;
	hl = listxattr(to, NULL, 0);
	if (hl <= 0)
		return hl < 0 && errno != ENOTSUP ? -errno : 0;
	wl = listxattr(from, NULL, 0);
	have = malloc((size_t)hl);
	want = malloc(wl > 0 ? (size_t)wl : 1);
	if (have == NULL || want == NULL || wl < 0) {
		rc = wl < 0 ? -errno : -ENOMEM;
		goto out;
	}
	hl = listxattr(to, have, (size_t)hl);
	wl = wl > 0 ? listxattr(from, want, (size_t)wl) : 0;
	if (hl < 0 || wl < 0) {
		rc = -errno;
		goto out;
	}
	for (n = have; n < have + hl; n += strlen(n) + 1) {
		for (m = want; m < want + wl; m += strlen(m) + 1)
			if (strcmp(n, m) == 0)
				break;
		/* Only the tenant's (user.) names: others are the system's. */
		if (m >= want + wl && strncmp(n, "user.", 5) == 0 &&
		    removexattr(to, n) != 0) {
			rc = -errno;
			goto out;
		}
	}
out:
	free(have);
	free(want);
	return rc;
}

/*
 * Makes the farm directory dst (at rel) hold what the live directory src
 * holds: a name missing from either side, or naming another object, is
 * removed from the farm and mirrored again (a directory whole); then the
 * directory's xattrs and metadata.  Entries that did not change are not
 * touched: readdir's inode numbers tell (a farm entry is a link to the
 * live inode; a farm directory is known by the live directory it was
 * mirrored from).  Under the freeze.
 */
static int
resync(struct fs_snap *s, int src, int dst, const char *rel, int record)
{
	struct fs_dent *lv = NULL, *fv = NULL;
	size_t ln = 0, fn = 0, i = 0, j = 0;
	char path[PATH_MAX], a[64], b[64];
	const char *at;
	struct stat st;
	int rc, c, keep;

	if (fstat(src, &st) != 0)
		return -errno;
	rc = fs_dir_list(src, &lv, &ln);
	if (rc == 0)
		rc = fs_dir_list(dst, &fv, &fn);
	while (rc == 0 && (i < ln || j < fn)) {
		c = i == ln ? 1 : j == fn ? -1 :
		    strcmp(lv[i].name, fv[j].name);
		if (c > 0) {		/* only in the farm */
			rc = drop_entry(s, dst, fv[j++].name, rel);
			continue;
		}
		keep = 0;
		if (c == 0 && (lv[i].type == DT_DIR) ==
		    (fv[j].type == DT_DIR)) {
			if (lv[i].type != DT_DIR) {
				keep = lv[i].ino == fv[j].ino;
			} else if ((size_t)snprintf(path, sizeof(path),
			    "%s%s%s", rel, *rel ? "/" : "", lv[i].name) <
			    sizeof(path)) {
				at = dir_find(s, st.st_dev, lv[i].ino);
				keep = record && at != NULL &&
				    strcmp(at, path) == 0;
			}
		}
		if (!keep && c == 0)
			rc = drop_entry(s, dst, fv[j].name, rel);
		if (!keep && rc == 0)
			rc = mirror_one(s, src, dst, lv[i].name, lv[i].type,
			    rel, record, 0);
		i++;
		if (c == 0)
			j++;
	}
	fs_dir_list_free(lv, ln);
	fs_dir_list_free(fv, fn);
	if (rc == 0) {
		fd_path(src, a, sizeof(a));
		fd_path(dst, b, sizeof(b));
		rc = copy_xattrs_exact(a, b);
	}
	if (rc == 0)
		rc = copy_meta_fd(dst, &st);
	return rc;
}

/* Opens the directory at path ("" itself) below dirfd, no symlinks. */
static int
open_path(int dirfd, const char *path)
{
	char part[NAME_MAX + 1];
	const char *p = path, *slash;
	size_t len;
	int fd, next;

	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	while (fd >= 0 && *p != '\0') {
		slash = strchr(p, '/');
		len = slash != NULL ? (size_t)(slash - p) : strlen(p);
		if (len == 0 || len > NAME_MAX) {
			close(fd);
			errno = ENOENT;
			return -1;
		}
		memcpy(part, p, len);
		part[len] = '\0';
		next = openat(fd, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
		    O_CLOEXEC);
		close(fd);
		fd = next;
		p += len + (slash != NULL);
	}
	return fd;
}

/*
 * The frozen pass: data/ itself, then every directory marked during the
 * live pass that is still where the farm mirrored it.  One that moved
 * was mirrored whole at its new place by its new parent's resync (that
 * parent was marked by the rename); one made during the live pass, by
 * its parent's.
 */
static int
catch_up(struct fs_snap *s, int src, int dst, struct snap_mark *marks)
{
	struct snap_mark *m;
	struct stat st;
	const char *at;
	char *path;
	int rc, lfd, ffd;

	rc = resync(s, src, dst, "", 1);
	for (m = marks; rc == 0 && m != NULL; m = m->next) {
		at = dir_find(s, m->dev, m->ino);
		if (at == NULL || *at == '\0')
			continue;	/* a file, new, gone, or data/ */
		path = strdup(at);
		if (path == NULL)
			return -ENOMEM;
		lfd = open_path(src, path);
		if (lfd < 0 && errno != ENOENT && errno != ENOTDIR &&
		    errno != ELOOP) {
			rc = -errno;
			free(path);
			break;
		}
		if (lfd < 0 || fstat(lfd, &st) != 0 || st.st_dev != m->dev ||
		    st.st_ino != m->ino) {
			/* Moved: another directory's resync mirrored it. */
			if (lfd >= 0)
				close(lfd);
			free(path);
			continue;
		}
		ffd = open_path(dst, path);
		rc = ffd < 0 ? -EIO : resync(s, lfd, ffd, path, 1);
		if (ffd >= 0)
			close(ffd);
		close(lfd);
		free(path);
	}
	return rc;
}

/* Removes every farm under store/snap (left by a crash, or released). */
static void
remove_farms(struct fs_snap *s)
{
	remove_tree(s->store_fd, SNAP_DIR);
}

/*
 * Test builds: with COFFER_TEST_SNAP_HOLD=DIR set and a file DIR/arm,
 * the daemon removes arm after the live pass, creates DIR/held and waits
 * (at most 60 s) until held is removed, so a test can change the tree
 * between the two passes.
 */
static void
test_hold(void)
{
#ifdef CF_TEST_CLOCK
	const char *d = getenv("COFFER_TEST_SNAP_HOLD");
	char arm[PATH_MAX], held[PATH_MAX];
	int fd, i;

	if (d == NULL || *d == '\0' ||
	    (size_t)snprintf(arm, sizeof(arm), "%s/arm", d) >= sizeof(arm) ||
	    (size_t)snprintf(held, sizeof(held), "%s/held", d) >=
	    sizeof(held) || unlink(arm) != 0)
		return;
	fd = open(held, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd >= 0)
		close(fd);
	for (i = 0; i < 6000 && access(held, F_OK) == 0; i++)
		usleep(10000);
#endif
}

/*
 * Takes a snapshot: the live pass, then the frozen pass (file comment).
 * *pause gets the time writers were frozen, in ns: the frozen pass, and
 * the moment tracking starts (it waits for the operations in flight).
 */
static int
snap_take(struct fs_snap *s, char *id, uint64_t *pause)
{
	struct snap_mark *marks = NULL;
	unsigned char rnd[8];
	int farm = -1, sub, rc, src = -1, lsrc = -1, ldst = -1, lost = 0;
	uint64_t t0;

	*pause = 0;
	randombytes_buf(rnd, sizeof(rnd));
	sodium_bin2hex(id, 17, rnd, sizeof(rnd));
	remove_farms(s);
	if (mkdirat(s->store_fd, SNAP_DIR, 0700) != 0)
		return -errno;
	sub = openat(s->store_fd, SNAP_DIR, O_RDONLY | O_DIRECTORY |
	    O_NOFOLLOW | O_CLOEXEC);
	if (sub < 0)
		return -errno;
	rc = mkdirat(sub, id, 0700) == 0 ? 0 : -errno;
	if (rc == 0) {
		farm = openat(sub, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
		    O_CLOEXEC);
		if (farm < 0)
			rc = -errno;
	}
	close(sub);
	if (rc < 0)
		return rc;
	/* The marker never changes: linked outside both passes. */
	if (linkat(s->store_fd, FS_STORE_MARKER, farm, FS_STORE_MARKER, 0) != 0 ||
	    mkdirat(farm, CF_FS_LINKS_DIR, 0700) != 0 ||
	    mkdirat(farm, FS_STORE_DATA, 0700) != 0 ||
	    mkdirat(farm, COW_DIR, 0700) != 0) {
		rc = -errno;
		close(farm);
		return rc;
	}
	/*
	 * Tracking starts while writers are frozen, so an operation either
	 * finished before it (and the live pass sees its change) or marks
	 * what it changes.  (Lock order, as copy-on-write's: the freeze,
	 * then mutex.)
	 */
	t0 = now_ns();
	s->freeze(s->arg, 1);
	atomic_store(&s->tracking, 1);
	s->freeze(s->arg, 0);
	*pause = now_ns() - t0;
	pthread_mutex_lock(&s->mutex);
	s->broken = 0;
	s->farm_fd = openat(farm, FS_STORE_DATA, O_RDONLY | O_DIRECTORY |
	    O_NOFOLLOW | O_CLOEXEC);
	src = openat(s->store_fd, FS_STORE_DATA, O_RDONLY | O_DIRECTORY |
	    O_NOFOLLOW | O_CLOEXEC);
	lsrc = openat(s->store_fd, CF_FS_LINKS_DIR, O_RDONLY | O_DIRECTORY |
	    O_NOFOLLOW | O_CLOEXEC);
	ldst = openat(farm, CF_FS_LINKS_DIR, O_RDONLY | O_DIRECTORY |
	    O_NOFOLLOW | O_CLOEXEC);
	s->cow_fd = openat(farm, COW_DIR, O_RDONLY | O_DIRECTORY |
	    O_NOFOLLOW | O_CLOEXEC);
	rc = s->farm_fd < 0 || src < 0 || ldst < 0 || s->cow_fd < 0 ? -EIO :
	    0;
	if (rc == 0)
		rc = mirror(s, src, s->farm_fd, "", 1, 1);
	if (rc == 0 && lsrc >= 0)
		rc = mirror(s, lsrc, ldst, "", 0, 1);
	pthread_mutex_unlock(&s->mutex);
	if (rc == 0)
		test_hold();
	t0 = now_ns();
	s->freeze(s->arg, 1);
	pthread_mutex_lock(&s->mutex);
	/*
	 * Under the freeze: every change after the thaw sees the new epoch
	 * and raises its file's generation first, so a file's generation in
	 * this farm differs from its generation after any later change.
	 */
	atomic_fetch_add(&s->epoch, 1);
	atomic_store(&s->tracking, 0);
	marks = marks_take(s, &lost);
	if (rc == 0 && lost)
		rc = -ENOMEM;	/* a change went unmarked */
	if (rc == 0)
		rc = catch_up(s, src, s->farm_fd, marks);
	if (rc == 0 && lsrc >= 0)
		rc = resync(s, lsrc, ldst, "", 0);
	if (rc == 0)
		atomic_store(&s->active, 1);
	else
		table_clear(s);
	dirs_clear(s);
	pthread_mutex_unlock(&s->mutex);
	s->freeze(s->arg, 0);
	*pause += now_ns() - t0;
	marks_free(marks);
	if (src >= 0)
		close(src);
	if (lsrc >= 0)
		close(lsrc);
	if (ldst >= 0)
		close(ldst);
	close(farm);
	if (rc < 0) {
		pthread_mutex_lock(&s->mutex);
		if (s->farm_fd >= 0)
			close(s->farm_fd);
		if (s->cow_fd >= 0)
			close(s->cow_fd);
		s->farm_fd = s->cow_fd = -1;
		pthread_mutex_unlock(&s->mutex);
		remove_farms(s);
	}
	return rc;
}

/*
 * Ends the snapshot: nothing is shared any more.  1 if it was broken.
 * The farm stays until remove_farms (snap_release, or serve after its
 * reply).
 */
static int
snap_end(struct fs_snap *s)
{
	int broken;

	/* The freeze waits for operations that may be copying. */
	s->freeze(s->arg, 1);
	pthread_mutex_lock(&s->mutex);
	atomic_store(&s->active, 0);
	table_clear(s);
	deltas_clear(s);	/* no operation is saving: frozen */
	if (s->farm_fd >= 0)
		close(s->farm_fd);
	if (s->cow_fd >= 0)
		close(s->cow_fd);
	s->farm_fd = s->cow_fd = -1;
	broken = s->broken;
	pthread_mutex_unlock(&s->mutex);
	s->freeze(s->arg, 0);
	return broken;
}

/* Ends the snapshot and removes the farm. */
static int
snap_release(struct fs_snap *s)
{
	int broken = snap_end(s);

	remove_farms(s);
	return broken;
}

/* ---- copy on write ------------------------------------------------------- */

/*
 * Copies the data of from (readable) in [a, b) to to at the same offsets
 * plus shift; from's holes are skipped, so they stay holes in to (or
 * whatever to held there).  In the kernel where it can (copy_file_range:
 * a clone on XFS and btrfs), else through a buffer.  A file cut under us
 * ends the copy where it ends.
 */
static int
copy_range(int from, int to, off_t a, off_t b, off_t shift)
{
	unsigned char *buf = NULL;
	loff_t in, out;
	off_t h;
	ssize_t n;
	int kernel = 1, rc = 0;

	while (rc == 0 && a < b) {
		a = lseek(from, a, SEEK_DATA);
		if (a < 0) {
			rc = errno == ENXIO ? 0 : -errno;
			break;		/* ENXIO: only holes to its end */
		}
		if (a >= b)
			break;
		h = lseek(from, a, SEEK_HOLE);
		if (h < 0 || h > b)
			h = b;
		while (rc == 0 && a < h) {
			size_t want = (size_t)(h - a);

			in = a;
			out = a + shift;
			n = kernel ? copy_file_range(from, &in, to, &out, want,
			    0) : -1;
			if (n > 0) {
				a += n;
				continue;
			}
			if (n == 0) {
				a = h;	/* cut meanwhile: seek again */
				break;
			}
			if (kernel && errno != EXDEV && errno != EINVAL &&
			    errno != ENOSYS && errno != EOPNOTSUPP) {
				rc = -errno;
				break;
			}
			kernel = 0;
			if (buf == NULL && (buf = malloc(1 << 20)) == NULL) {
				rc = -ENOMEM;
				break;
			}
			if (want > (1 << 20))
				want = 1 << 20;
			n = pread(from, buf, want, a);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				rc = n < 0 ? -errno : 0;
				a = h;
				break;
			}
			if (pwrite(to, buf, (size_t)n, a + shift) != n)
				rc = -EIO;
			else
				a += n;
		}
	}
	free(buf);
	return rc;
}

/* Copies the regular file open as from into to, sparsely, size long. */
static int
copy_sparse(int from, int to, off_t size)
{
	int rc = copy_range(from, to, 0, size, 0);

	if (rc == 0 && ftruncate(to, size) != 0)
		rc = -errno;
	return rc;
}

/* Splits a farm path into its directory (opened) and last component. */
static int
open_parent(int farm, const char *path, const char **last)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');

	if (slash == NULL) {
		int fd = fcntl(farm, F_DUPFD_CLOEXEC, 0);

		*last = path;
		return fd < 0 ? -errno : fd;
	}
	if ((size_t)(slash - path) >= sizeof(dir))
		return -ENAMETOOLONG;
	memcpy(dir, path, (size_t)(slash - path));
	dir[slash - path] = '\0';
	*last = slash + 1;
	return openat(farm, dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC);
}

/*
 * A copy in a farm directory changes its times, which are the tenant's
 * times at the freeze: dir_keep(fd, 0, t) notes them in t,
 * dir_keep(fd, 1, t) puts them back.
 */
static void
dir_keep(int fd, int restore, struct timespec saved[2])
{
	struct stat st;

	if (!restore) {
		if (fstat(fd, &st) == 0) {
			saved[0] = st.st_atim;
			saved[1] = st.st_mtim;
		}
		return;
	}
	(void)futimens(fd, saved);
}

/*
 * Puts the object at from (a name of dir) at to, which must stay a name
 * throughout (a backup reads the farm meanwhile), and drops what to
 * named.  An exchange, not a rename over to: ext4 writes out a renamed
 * file's delayed blocks when it replaces another (auto_da_alloc), which
 * kept the writer waiting 40-80 ms for a 4 MiB copy.
 */
static int
swap_in(int dir, const char *from, const char *to)
{
	if (renameat2(dir, from, dir, to, RENAME_EXCHANGE) == 0)
		return unlinkat(dir, from, 0) == 0 ? 0 : -errno;
	if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP &&
	    errno != ENOENT)
		return -errno;
	return renameat(dir, from, dir, to) == 0 ? 0 : -errno;
}

/* ---- block deltas ([CTL-7]) --------------------------------------------- */

/* Where unit 0 is saved in cow/INO.d: after the header and the map. */
static off_t
cow_area(uint64_t nunits)
{
	return (off_t)((COW_HDR + nunits + 4095) / 4096 * 4096);
}

static void
delta_free(struct snap_delta *d)
{
	pthread_mutex_destroy(&d->mutex);
	free(d->saved);
	free(d);
}

/* Forgets every delta.  Only where no operation can be saving. */
static void
deltas_clear(struct fs_snap *s)
{
	struct snap_delta *d, *next;
	size_t i;

	pthread_mutex_lock(&s->delta_mutex);
	for (i = 0; i < SNAP_MARKS; i++) {
		for (d = s->deltas[i]; d != NULL; d = next) {
			next = d->next;
			delta_free(d);
		}
		s->deltas[i] = NULL;
	}
	atomic_store(&s->ndeltas, 0);
	pthread_mutex_unlock(&s->delta_mutex);
}

static struct snap_delta *
delta_find(struct fs_snap *s, dev_t dev, ino_t ino)
{
	struct snap_delta *d;

	pthread_mutex_lock(&s->delta_mutex);
	for (d = s->deltas[snap_bucket(dev, ino) % SNAP_MARKS]; d != NULL;
	    d = d->next)
		if (d->dev == dev && d->ino == ino)
			break;
	pthread_mutex_unlock(&s->delta_mutex);
	return d;
}

void
fs_snap_save(struct fs_snap *s, dev_t dev, ino_t ino, int fd, off_t off,
    off_t len)
{
	struct snap_delta *d;
	uint64_t k, k1, r;
	off_t end;
	int rc = 0, dfd = -1;

	if (s == NULL || atomic_load(&s->ndeltas) == 0 || off < 0)
		return;
	d = delta_find(s, dev, ino);
	if (d == NULL || off >= d->csize)
		return;
	end = len < 0 || len > d->csize - off ? d->csize : off + len;
	if (end <= off)
		return;
	k1 = (uint64_t)(end - 1) / COW_UNIT;
	pthread_mutex_lock(&d->mutex);
	for (k = (uint64_t)off / COW_UNIT; rc == 0 && k <= k1; k = r) {
		off_t b;

		if (d->saved[k]) {
			r = k + 1;
			continue;
		}
		/* A run of unsaved units, at most 16 MiB at a time. */
		for (r = k; r <= k1 && !d->saved[r] && r - k < 256; r++)
			;
		b = (off_t)r * COW_UNIT;
		/*
		 * Opened here, not kept: a delta holds no descriptor (a
		 * backup may see thousands of large files change).  The
		 * farm's cow/ stays open until release, which waits for
		 * every saving operation (the freeze).
		 */
		if (dfd < 0 && (dfd = openat(s->cow_fd, d->dname, O_WRONLY |
		    O_NOFOLLOW | O_CLOEXEC)) < 0) {
			rc = -errno;
			break;
		}
		/* The live bytes [k, r) to their place in cow/INO.d, holes
		 * left holes (it is as long as the file from the start, so
		 * they read as zeros). */
		rc = copy_range(fd, dfd, (off_t)k * COW_UNIT, b < d->csize ?
		    b : d->csize, d->area);
		/* The bytes first, then the map: a reader that finds a unit
		 * changed in the live file finds it marked ([CTL-7]). */
		if (rc == 0) {
			memset(d->saved + k, 1, (size_t)(r - k));
			if (pwrite(dfd, d->saved + k, (size_t)(r - k),
			    COW_HDR + (off_t)k) != (ssize_t)(r - k))
				rc = -EIO;
		}
	}
	pthread_mutex_unlock(&d->mutex);
	if (dfd >= 0)
		close(dfd);
	if (rc < 0) {
		pthread_mutex_lock(&s->mutex);
		s->broken = 1;		/* the backup is told at RELEASE */
		pthread_mutex_unlock(&s->mutex);
	}
}

/*
 * Makes the delta of a large file: fd is its new farm file (empty, sized,
 * its metadata set), last in pfd a farm name that still links the live
 * file, live a path of the live file, st its stat.
 */
static int
delta_new(struct fs_snap *s, int pfd, const char *last, int fd,
    const struct stat *st)
{
	unsigned char hdr[COW_HDR] = { 0 };
	char name[32];
	struct snap_delta *d;
	struct stat ds;
	size_t b;
	int rc = 0, dfd;

	if (fstat(fd, &ds) != 0)
		return -errno;
	snprintf(name, sizeof(name), "%ju", (uintmax_t)ds.st_ino);
	d = calloc(1, sizeof(*d));
	if (d == NULL)
		return -ENOMEM;
	pthread_mutex_init(&d->mutex, NULL);
	snprintf(d->dname, sizeof(d->dname), "%s.d", name);
	d->dev = st->st_dev;
	d->ino = st->st_ino;
	d->csize = st->st_size;
	d->nunits = ((uint64_t)st->st_size + COW_UNIT - 1) / COW_UNIT;
	d->area = cow_area(d->nunits);
	d->saved = calloc(d->nunits + 1, 1);
	dfd = openat(s->cow_fd, d->dname, O_RDWR | O_CREAT | O_EXCL |
	    O_NOFOLLOW | O_CLOEXEC, 0600);
	if (d->saved == NULL)
		rc = -ENOMEM;
	else if (dfd < 0)
		rc = -errno;
	memcpy(hdr, COW_MAGIC, 8);
	hdr[8] = COW_UNIT & 0xff;
	hdr[9] = (COW_UNIT >> 8) & 0xff;
	hdr[10] = (COW_UNIT >> 16) & 0xff;
	hdr[11] = (COW_UNIT >> 24) & 0xff;
	if (rc == 0 && (pwrite(dfd, hdr, sizeof(hdr), 0) !=
	    (ssize_t)sizeof(hdr) || ftruncate(dfd, d->area + d->csize) != 0))
		rc = -EIO;
	if (dfd >= 0)
		close(dfd);
	if (rc == 0 && linkat(pfd, last, s->cow_fd, name, 0) != 0)
		rc = -errno;
	if (rc < 0) {
		if (dfd >= 0)
			(void)unlinkat(s->cow_fd, d->dname, 0);
		delta_free(d);
		return rc;
	}
	b = snap_bucket(d->dev, d->ino) % SNAP_MARKS;
	pthread_mutex_lock(&s->delta_mutex);
	d->next = s->deltas[b];
	s->deltas[b] = d;
	atomic_fetch_add(&s->ndeltas, 1);
	pthread_mutex_unlock(&s->delta_mutex);
	return 0;
}

/*
 * Undoes delta_new for (dev, ino), whose farm file fd did not reach the
 * farm: a reader must never find its INO names attached to a later farm
 * file that reuses the inode number.  Only the operation that made it
 * can be saving into it (it holds the inode's lock).
 */
static void
delta_drop(struct fs_snap *s, dev_t dev, ino_t ino, ino_t dino)
{
	struct snap_delta **p, *d = NULL;
	char name[32];

	pthread_mutex_lock(&s->delta_mutex);
	for (p = &s->deltas[snap_bucket(dev, ino) % SNAP_MARKS]; *p != NULL;
	    p = &(*p)->next) {
		if ((*p)->dev == dev && (*p)->ino == ino) {
			d = *p;
			*p = d->next;
			atomic_fetch_sub(&s->ndeltas, 1);
			break;
		}
	}
	pthread_mutex_unlock(&s->delta_mutex);
	if (d != NULL) {
		(void)unlinkat(s->cow_fd, d->dname, 0);
		delta_free(d);
	}
	snprintf(name, sizeof(name), "%ju", (uintmax_t)dino);
	(void)unlinkat(s->cow_fd, name, 0);
}

/* Makes the private copy of e from the live object obj (O_PATH). */
static int
cow_copy(struct fs_snap *s, struct snap_ent *e, int obj)
{
	static const char tmp[] = "cf.cow~";
	char p[64], target[PATH_MAX + 1];
	struct timespec pt[2];
	const char *last;
	struct stat st;
	int pfd, fd = -1, in = -1, rc = 0, delta = 0;
	struct stat ds;
	size_t i;
	ssize_t n;

	if (fstatat(obj, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0)
		return -errno;
	pfd = open_parent(s->farm_fd, e->paths[0], &last);
	if (pfd < 0)
		return pfd;
	dir_keep(pfd, 0, pt);
	(void)unlinkat(pfd, tmp, 0);
	if (S_ISREG(st.st_mode)) {
		/* A large file: a delta, saved as it changes ([CTL-7]). */
		int big = st.st_size >= COW_MIN && s->cow_fd >= 0;

		fd_path(obj, p, sizeof(p));
		if (!big)
			in = open(p, O_RDONLY | O_CLOEXEC);
		fd = openat(pfd, tmp, O_WRONLY | O_CREAT | O_EXCL |
		    O_NOFOLLOW | O_CLOEXEC, 0600);
		if ((!big && in < 0) || fd < 0)
			rc = -errno;
		/*
		 * Not synced: the farm lives only until release, and a
		 * daemon that starts removes any farm a crash left, so a
		 * writer need not wait for the disk here.
		 */
		if (rc == 0)
			rc = big ? (ftruncate(fd, st.st_size) == 0 ? 0 :
			    -errno) : copy_sparse(in, fd, st.st_size);
		if (rc == 0) {
			char q[64];

			fd_path(fd, q, sizeof(q));
			rc = copy_xattrs(p, q);
		}
		if (rc == 0)
			rc = copy_meta_fd(fd, &st);
		if (rc == 0 && big) {
			rc = fstat(fd, &ds) == 0 ? delta_new(s, pfd, last, fd,
			    &st) : -errno;
			delta = rc == 0;
		}
	} else if (S_ISLNK(st.st_mode)) {
		n = readlinkat(obj, "", target, sizeof(target) - 1);
		if (n < 0) {
			rc = -errno;
		} else {
			target[n] = '\0';
			if (symlinkat(target, pfd, tmp) != 0)
				rc = -errno;
		}
		if (rc == 0) {
			struct timespec tv[2] = { st.st_atim, st.st_mtim };

			if (fchownat(pfd, tmp, st.st_uid, st.st_gid,
			    AT_SYMLINK_NOFOLLOW) != 0 || utimensat(pfd, tmp,
			    tv, AT_SYMLINK_NOFOLLOW) != 0)
				rc = -errno;
		}
	} else {
		if (mknodat(pfd, tmp, st.st_mode, st.st_rdev) != 0) {
			rc = -errno;
		} else {
			struct timespec tv[2] = { st.st_atim, st.st_mtim };

			if (fchownat(pfd, tmp, st.st_uid, st.st_gid,
			    AT_SYMLINK_NOFOLLOW) != 0 ||
			    fchmodat(pfd, tmp, st.st_mode & 07777, 0) != 0 ||
			    utimensat(pfd, tmp, tv, AT_SYMLINK_NOFOLLOW) != 0)
				rc = -errno;
		}
	}
	if (in >= 0)
		close(in);
	if (fd >= 0)
		close(fd);
	/* Every farm name of the inode now gets the copy. */
	for (i = 1; rc == 0 && i < e->npaths; i++) {
		const char *l2;
		struct timespec t2[2];
		int p2 = open_parent(s->farm_fd, e->paths[i], &l2);

		if (p2 < 0) {
			rc = p2;
			break;
		}
		dir_keep(p2, 0, t2);
		(void)unlinkat(p2, "cf.cow2~", 0);
		rc = linkat(pfd, tmp, p2, "cf.cow2~", 0) == 0 ?
		    swap_in(p2, "cf.cow2~", l2) : -errno;
		dir_keep(p2, 1, t2);
		close(p2);
	}
	if (rc == 0)
		rc = swap_in(pfd, tmp, last);
	if (rc < 0)
		(void)unlinkat(pfd, tmp, 0);
	if (rc < 0 && delta)
		delta_drop(s, st.st_dev, st.st_ino, ds.st_ino);
	dir_keep(pfd, 1, pt);
	close(pfd);
	return rc;
}

int
fs_snap_active(const struct fs_snap *s)
{
	return s != NULL && atomic_load(&s->active);
}

void
fs_snap_set_gens(struct fs_snap *s, int on)
{
	if (s != NULL)
		s->gens = on;
}

uint64_t
fs_snap_epoch(const struct fs_snap *s)
{
	return s == NULL ? 0 : atomic_load(&s->epoch);
}

int
fs_snap_cow(struct fs_snap *s, dev_t dev, ino_t ino, int obj)
{
	struct snap_ent *e;
	int rc;

	if (s == NULL || !atomic_load(&s->active))
		return 0;
	pthread_mutex_lock(&s->mutex);
	e = table_take(s, dev, ino);
	if (e == NULL) {
		pthread_mutex_unlock(&s->mutex);
		return 0;
	}
	/* Copying under the mutex keeps the farm's directories stable; a
	 * second change to another shared inode waits for this one. */
	rc = cow_copy(s, e, obj);
	if (rc < 0)
		s->broken = 1;	/* the backup is told at RELEASE */
	pthread_mutex_unlock(&s->mutex);
	ent_free(e);
	return 0;		/* the tenant's write goes on regardless */
}

/* ---- the control socket ---------------------------------------------------- */

static void
reply(int fd, const char *msg)
{
	(void)!write(fd, msg, strlen(msg));
}

/* Serves one client until it releases its snapshot or goes away. */
static void
serve(struct fs_snap *s, int c)
{
	char line[64], out[PATH_MAX + 96], id[17];
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	uint64_t pause = 0;
	ssize_t n;
	int have = 0, rc;

	if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0 ||
	    (cred.uid != 0 && cred.uid != geteuid())) {
		reply(c, "ERR denied\n");
		return;
	}
	for (;;) {
		struct pollfd p[2] = {
			{ c, POLLIN, 0 }, { s->stop_pipe[0], POLLIN, 0 },
		};

		if (poll(p, 2, -1) < 0)
			continue;
		if (p[1].revents != 0)
			break;
		n = read(c, line, sizeof(line) - 1);
		if (n <= 0)
			break;
		line[n] = '\0';
		if (strncmp(line, "SNAPSHOT", 8) == 0 && !have) {
			rc = snap_take(s, id, &pause);
			if (rc < 0) {
				snprintf(out, sizeof(out), "ERR %s\n",
				    strerror(-rc));
			} else {
				have = 1;
				snprintf(out, sizeof(out), "OK %s/%s/%s %llu%s\n",
				    s->backing, SNAP_DIR, id,
				    (unsigned long long)pause,
				    s->gens ? " gen" : "");
			}
			reply(c, out);
		} else if (strcmp(line, "ROOTKEYS\n") == 0 &&
		    s->rekey != NULL) {
			fs_rekey_lend(s->rekey, c, cred.pid, cred.uid);
		} else if (!have && s->rekey != NULL &&
		    fs_rekey_ctl(s->rekey, s->backing, c, line,
		    &s->stopping)) {
			break;
		} else if (strncmp(line, "RELEASE", 7) == 0 && have) {
			have = 0;
			/*
			 * [CTL-2] The answer first: removing a farm of many
			 * files takes a while (16 000 links: about 0.1 s) that the
			 * backup need not wait for.  The next client is served
			 * once it is gone.
			 */
			reply(c, snap_end(s) ? "BROKEN\n" : "OK\n");
			remove_farms(s);
			break;
		} else {
			reply(c, "ERR bad request\n");
		}
	}
	if (have)
		(void)snap_release(s);
}

static void *
ctl_main(void *arg)
{
	struct fs_snap *s = arg;
	int c;

	for (;;) {
		struct pollfd p[2] = {
			{ s->lfd, POLLIN, 0 }, { s->stop_pipe[0], POLLIN, 0 },
		};

		if (poll(p, 2, -1) < 0)
			continue;
		if (p[1].revents != 0)
			break;
		c = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0)
			continue;
		serve(s, c);
		close(c);
	}
	return NULL;
}

int
fs_ctl_addr(const char *backing, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if ((size_t)snprintf(sa->sun_path, sizeof(sa->sun_path), "%s/%s",
	    backing, FS_STORE_CTL) >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	return 0;
}

int
fs_ctl_connect(const char *backing)
{
	struct sockaddr_un sa;
	int fd, rc;

	rc = fs_ctl_addr(backing, &sa);
	if (rc < 0)
		return rc;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		rc = errno == ENOENT || errno == ECONNREFUSED ? -ENOTCONN :
		    -errno;
		close(fd);
		return rc;
	}
	return fd;
}

int
cf_fs_store_served(const char *backing)
{
	int fd = fs_ctl_connect(backing);

	if (fd >= 0) {
		close(fd);
		return 1;
	}
	return fd == -ENAMETOOLONG ? fd : 0;
}

int
fs_snap_new(struct fs_snap **out, const char *backing,
    int (*freeze)(void *arg, int on), void *arg)
{
	struct sockaddr_un sa;
	struct fs_snap *s;
	int rc;

	*out = NULL;
	rc = fs_ctl_addr(backing, &sa);
	if (rc < 0)
		return rc;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->lfd = s->store_fd = s->farm_fd = s->cow_fd = -1;
	s->stop_pipe[0] = s->stop_pipe[1] = -1;
	s->freeze = freeze;
	s->arg = arg;
	pthread_mutex_init(&s->mutex, NULL);
	pthread_mutex_init(&s->mark_mutex, NULL);
	pthread_mutex_init(&s->delta_mutex, NULL);
	/* Absolute: the daemon runs in / after it forks, and clients are
	 * told the farm's path. */
	s->backing = realpath(backing, NULL);
	s->store_fd = open(backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->backing == NULL || s->store_fd < 0) {
		rc = s->backing == NULL ? -ENOMEM : -errno;
		goto fail;
	}
	/* A daemon that answers still serves this store: two would corrupt
	 * it.  A socket nobody answers is a crashed daemon's. */
	if (cf_fs_store_served(backing) == 1) {
		rc = -EBUSY;
		goto fail;
	}
	remove_farms(s);	/* a crashed daemon's */
	(void)unlinkat(s->store_fd, FS_STORE_CTL, 0);
	s->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&sa,
	    sizeof(sa)) != 0 || fchmodat(s->store_fd, FS_STORE_CTL, 0600,
	    0) != 0 || listen(s->lfd, 4) != 0 ||
	    pipe2(s->stop_pipe, O_CLOEXEC) != 0) {
		rc = -errno;
		goto fail;
	}
	*out = s;
	return 0;
fail:
	fs_snap_free(s);
	return rc;
}

void
fs_snap_set_rekey(struct fs_snap *s, struct fs_rekey_host *h)
{
	s->rekey = h;
}

int
fs_snap_start(struct fs_snap *s)
{
	int rc = pthread_create(&s->thread, NULL, ctl_main, s);

	if (rc != 0)
		return -rc;
	s->thread_started = 1;
	return 0;
}

void
fs_snap_free(struct fs_snap *s)
{
	int lost;

	if (s == NULL)
		return;
	if (s->thread_started) {
		atomic_store(&s->stopping, 1);
		(void)!write(s->stop_pipe[1], "x", 1);
		pthread_join(s->thread, NULL);
	}
	if (s->lfd >= 0) {
		close(s->lfd);
		(void)unlinkat(s->store_fd, FS_STORE_CTL, 0);
	}
	if (s->stop_pipe[0] >= 0)
		close(s->stop_pipe[0]);
	if (s->stop_pipe[1] >= 0)
		close(s->stop_pipe[1]);
	table_clear(s);
	deltas_clear(s);
	dirs_clear(s);
	marks_free(marks_take(s, &lost));
	if (s->farm_fd >= 0)
		close(s->farm_fd);
	if (s->cow_fd >= 0)
		close(s->cow_fd);
	if (s->store_fd >= 0) {
		remove_farms(s);
		close(s->store_fd);
	}
	pthread_mutex_destroy(&s->mutex);
	pthread_mutex_destroy(&s->mark_mutex);
	pthread_mutex_destroy(&s->delta_mutex);
	free(s->backing);
	free(s);
}

/* ---- the client side (cf_fs.h) -------------------------------------------- */

struct cf_fs_snapshot {
	int fd;
	int gens;		/* the reply said "gen" ([CTL-6]) */
	int held;		/* a snapshot is held on fd */
};

int
cf_fs_ctl_open(const char *backing, struct cf_fs_snapshot **out)
{
	struct cf_fs_snapshot *h;
	int fd;

	*out = NULL;
	fd = fs_ctl_connect(backing);
	if (fd < 0)
		return fd;
	h = calloc(1, sizeof(*h));
	if (h == NULL) {
		close(fd);
		return -ENOMEM;
	}
	h->fd = fd;
	*out = h;
	return 0;
}

void
cf_fs_ctl_close(struct cf_fs_snapshot *h)
{
	if (h == NULL)
		return;
	close(h->fd);
	free(h);
}

/* Reads exactly len bytes; -EPROTO at an early end. */
static int
read_full(int fd, unsigned char *buf, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = read(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n == 0 ? -EPROTO : -errno;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int
fs_ctl_keys_head(const char *line, size_t len, size_t *n)
{
	size_t i, v = 0;

	*n = 0;
	/* An ERR line's text may go on: the caller reads it to its end. */
	if (len >= 4 && memcmp(line, "ERR ", 4) == 0)
		return -EACCES;
	/* "OK <n>\n": n decimal, 1 to CF_KS_LENT_MAX, no leading zero. */
	if (len < 5 || len > 6 || memcmp(line, "OK ", 3) != 0 ||
	    line[len - 1] != '\n' || line[3] == '0')
		return -EPROTO;
	for (i = 3; i < len - 1; i++) {
		if (line[i] < '0' || line[i] > '9')
			return -EPROTO;
		v = v * 10 + (size_t)(line[i] - '0');
	}
	if (v == 0 || v > CF_KS_LENT_MAX)
		return -EPROTO;
	*n = v;
	return 0;
}

uint32_t
fs_ctl_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

int
fs_ctl_keys_check(const unsigned char *rec, size_t n, const uint32_t *live,
    size_t nlive)
{
	uint32_t v;
	size_t i, j;

	for (i = 0; i < n; i++) {
		v = fs_ctl_le32(rec + i * FS_CTL_KEY_REC);
		for (j = 0; j < nlive && live[j] != v; j++)
			;
		if (j == nlive)
			return -EPROTO;
		for (j = 0; j < i; j++)
			if (fs_ctl_le32(rec + j * FS_CTL_KEY_REC) == v)
				return -EPROTO;
	}
	return 0;
}

int
cf_fs_ctl_borrow(struct cf_fs_snapshot *h, struct cf_ks_tenant *t)
{
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	struct cf_secbuf *rec = NULL;
	unsigned char *p;
	char line[16];
	size_t got = 0, n, i, nlive;
	uint32_t live[CF_KS_LENT_MAX];
	int rc;

	nlive = cf_ks_tenant_versions(t, live, CF_KS_LENT_MAX);
	if (nlive > CF_KS_LENT_MAX)
		nlive = CF_KS_LENT_MAX;
	/* The daemon must be root or us ([CTL-8]): a socket bound by
	 * anyone else is not asked. */
	if (getsockopt(h->fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0)
		return -errno;
	if (cred.uid != 0 && cred.uid != geteuid())
		return -EPERM;
	/* Before asking: no failure may leave records unread. */
	rc = cf_secbuf_new(&rec, CF_KS_LENT_MAX * FS_CTL_KEY_REC);
	if (rc < 0)
		return rc;
	if (send(h->fd, "ROOTKEYS\n", 9, MSG_NOSIGNAL) != 9) {
		cf_secbuf_free(rec);
		return -EIO;
	}
	/* The line byte by byte: the binary records follow it.  An ERR
	 * line may be longer than line: its first bytes say enough. */
	while (got < sizeof(line)) {
		rc = read_full(h->fd, (unsigned char *)line + got, 1);
		if (rc < 0)
			goto out;
		if (line[got++] == '\n')
			break;
	}
	rc = fs_ctl_keys_head(line, got, &n);
	if (rc == -EACCES) {
		/* Read to its end: the next reply follows it. */
		for (i = 0; line[got - 1] != '\n' && i < 4096; i++) {
			rc = read_full(h->fd, (unsigned char *)line + got - 1,
			    1);
			if (rc < 0)
				goto out;
		}
		rc = line[got - 1] == '\n' ? -EACCES : -EPROTO;
		goto out;
	}
	if (rc < 0)
		goto out;
	p = cf_secbuf_data(rec);
	rc = read_full(h->fd, p, n * FS_CTL_KEY_REC);
	/* All checked before any is lent. */
	if (rc == 0)
		rc = fs_ctl_keys_check(p, n, live, nlive);
	for (i = 0; rc == 0 && i < n; i++)
		rc = cf_ks_tenant_lend(t, fs_ctl_le32(p + i * FS_CTL_KEY_REC),
		    p + i * FS_CTL_KEY_REC + 4);
out:
	cf_secbuf_free(rec);
	return rc;
}

int
cf_fs_snapshot_take_on(struct cf_fs_snapshot *h, char **dir,
    uint64_t *pause_ns)
{
	char buf[PATH_MAX + 96], path[PATH_MAX], flag[8] = "";
	unsigned long long pause;
	size_t got = 0;
	ssize_t n;

	*dir = NULL;
	if (h->held)
		return -EBUSY;
	if (send(h->fd, "SNAPSHOT\n", 9, MSG_NOSIGNAL) != 9)
		return -EIO;
	while (got < sizeof(buf) - 1) {
		n = read(h->fd, buf + got, sizeof(buf) - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
		if (buf[got - 1] == '\n')
			break;
	}
	buf[got] = '\0';
	if (strncmp(buf, "OK ", 3) != 0 ||
	    sscanf(buf + 3, "%4095s %llu %7s", path, &pause, flag) < 2)
		return strncmp(buf, "ERR ", 4) == 0 ? -EBUSY : -EPROTO;
	h->held = 1;
	*dir = strdup(path);
	if (*dir == NULL)
		return -ENOMEM;	/* held: released with h */
	h->gens = strcmp(flag, "gen") == 0;
	*pause_ns = pause;
	return 0;
}

int
cf_fs_snapshot_take(const char *backing, struct cf_fs_snapshot **out,
    char **dir, uint64_t *pause_ns)
{
	struct cf_fs_snapshot *h;
	int rc;

	*out = NULL;
	*dir = NULL;
	rc = cf_fs_ctl_open(backing, &h);
	if (rc < 0)
		return rc;
	rc = cf_fs_snapshot_take_on(h, dir, pause_ns);
	if (rc < 0) {
		cf_fs_ctl_close(h);	/* a held one is released so */
		return rc;
	}
	*out = h;
	return 0;
}

int
cf_fs_snapshot_gens(const struct cf_fs_snapshot *h)
{
	return h != NULL && h->gens;
}

int
cf_fs_snapshot_release(struct cf_fs_snapshot *h)
{
	char buf[16] = { 0 };
	ssize_t n;
	int rc = 0;

	if (h == NULL)
		return 0;
	if (!h->held) {
		cf_fs_ctl_close(h);
		return 0;
	}
	if (send(h->fd, "RELEASE\n", 8, MSG_NOSIGNAL) != 8)
		rc = -EIO;
	n = rc == 0 ? read(h->fd, buf, sizeof(buf) - 1) : -1;
	if (n <= 0)
		rc = -EIO;
	else if (strncmp(buf, "BROKEN", 6) == 0)
		rc = -ESTALE;	/* a copy-on-write failed: not point-in-time */
	close(h->fd);
	free(h);
	return rc;
}
