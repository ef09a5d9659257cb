/*
 * bk_store.c - the storage backend interface and the local directory
 * backend (docs/format/repository.md: Repository layout, [BK-LAY-1..2]).
 *
 * The local backend lays objects out as restic does: config,
 * data/XX/<id>, index/<id>, snapshots/<id>, locks/<id>.  A put writes a
 * temporary ".tmp-<random>" beside the target, fsyncs it, renames (or,
 * for an exclusive put, links) it into place and fsyncs the directory,
 * so an object is either whole or absent after a crash (the temporary
 * of a killed put is removed by cleanup, from prune, once it is a day
 * old).  Every path is resolved relative to the repository's directory
 * fd.  It keeps no state but that fd, so its ops may run on many
 * threads at once.
 *
 * The generic layer also holds what bk_prefetch.c fetched ahead (whole
 * objects and listings read while the tenant's key was being unlocked):
 * each is handed out once, by the get, get_range or list that asks for
 * it, and dropped when its object is deleted or, for a listing, when an
 * object of its kind is put.
 *
 * What it deliberately does not do: locking (bk_repo.c's lock objects),
 * caching beyond that one hand-out, or any interpretation of object
 * bytes.
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
#include <unistd.h>

#include <sodium.h>

#include "bk_int.h"

/* An object fetched ahead (bk_store_hold). */
struct held_obj {
	enum cf_bk_kind kind;
	char name[65];
	unsigned char *buf;
	size_t len;
};

/* A kind's listing fetched ahead (bk_store_hold_list). */
struct held_list {
	int valid;
	char (*names)[65];
	uint64_t *sizes;
	size_t n;
};

struct cf_bk_store {
	const struct cf_bk_store_ops *ops;
	void *ctx;
	/* Fetched ahead (bk_prefetch.c); protected by held_mu. */
	pthread_mutex_t held_mu;
	struct held_obj *held;
	size_t nheld, capheld;
	struct held_list lists[CF_BK_KIND_LOCK + 1];
};

static void
held_list_clear(struct held_list *l)
{
	free(l->names);
	free(l->sizes);
	memset(l, 0, sizeof(*l));
}

/* The held object kind/name, or NULL; held_mu held. */
static struct held_obj *
held_find(struct cf_bk_store *s, enum cf_bk_kind kind, const char *name)
{
	size_t i;

	for (i = 0; i < s->nheld; i++)
		if (s->held[i].kind == kind &&
		    strcmp(s->held[i].name, name) == 0)
			return &s->held[i];
	return NULL;
}

/* Forgets held object h; held_mu held. */
static void
held_drop(struct cf_bk_store *s, struct held_obj *h)
{
	free(h->buf);
	*h = s->held[--s->nheld];
}

int
bk_store_hold(struct cf_bk_store *s, enum cf_bk_kind kind, const char *name,
    unsigned char *buf, size_t len)
{
	struct held_obj *h;
	size_t nc;
	int rc = 0;

	pthread_mutex_lock(&s->held_mu);
	if (held_find(s, kind, name) != NULL) {
		free(buf);	/* one copy is enough: names are contents */
		goto out;
	}
	if (s->nheld == s->capheld) {
		nc = s->capheld ? s->capheld * 2 : 64;
		h = realloc(s->held, nc * sizeof(*h));
		if (h == NULL) {
			free(buf);
			rc = -ENOMEM;
			goto out;
		}
		s->held = h;
		s->capheld = nc;
	}
	h = &s->held[s->nheld++];
	h->kind = kind;
	snprintf(h->name, sizeof(h->name), "%s", name);
	h->buf = buf;
	h->len = len;
out:
	pthread_mutex_unlock(&s->held_mu);
	return rc;
}

int
bk_store_hold_list(struct cf_bk_store *s, enum cf_bk_kind kind,
    char (*names)[65], uint64_t *sizes, size_t n)
{
	struct held_list *l;

	if (kind < CF_BK_KIND_PACK || kind > CF_BK_KIND_LOCK) {
		free(names);
		free(sizes);
		return -EINVAL;
	}
	pthread_mutex_lock(&s->held_mu);
	l = &s->lists[kind];
	held_list_clear(l);
	l->valid = 1;
	l->names = names;
	l->sizes = sizes;
	l->n = n;
	pthread_mutex_unlock(&s->held_mu);
	return 0;
}

void
bk_store_drop_lists(struct cf_bk_store *s)
{
	size_t i;

	pthread_mutex_lock(&s->held_mu);
	for (i = 0; i <= CF_BK_KIND_LOCK; i++)
		held_list_clear(&s->lists[i]);
	pthread_mutex_unlock(&s->held_mu);
}

int
cf_bk_store_new(struct cf_bk_store **out, const struct cf_bk_store_ops *ops,
    void *ctx)
{
	struct cf_bk_store *s;

	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return -ENOMEM;
	s->ops = ops;
	s->ctx = ctx;
	pthread_mutex_init(&s->held_mu, NULL);
	*out = s;
	return 0;
}

void
cf_bk_store_free(struct cf_bk_store *s)
{
	size_t i;

	if (s == NULL)
		return;
	if (s->ops->close != NULL)
		s->ops->close(s->ctx);
	for (i = 0; i < s->nheld; i++)
		free(s->held[i].buf);
	free(s->held);
	for (i = 0; i <= CF_BK_KIND_LOCK; i++)
		held_list_clear(&s->lists[i]);
	pthread_mutex_destroy(&s->held_mu);
	free(s);
}

const struct cf_bk_store_ops *
cf_bk_store_ops(const struct cf_bk_store *s)
{
	return s->ops;
}

void *
cf_bk_store_ctx(const struct cf_bk_store *s)
{
	return s->ctx;
}

unsigned
cf_bk_store_parallel_puts(const struct cf_bk_store *s)
{
	return s->ops->parallel_puts != NULL ?
	    s->ops->parallel_puts(s->ctx) : 1;
}

/* A name is "config" for the config, 64 lowercase hex otherwise. */
static int
name_ok(enum cf_bk_kind kind, const char *name)
{
	if (kind == CF_BK_KIND_CONFIG)
		return strcmp(name, "config") == 0;
	if (kind < CF_BK_KIND_PACK || kind > CF_BK_KIND_LOCK)
		return 0;
	return bk_name_valid(name);
}

/* Drops what is held of objects about to be deleted. */
static void
held_forget(struct cf_bk_store *s, enum cf_bk_kind kind,
    const char *const *names, size_t n)
{
	struct held_obj *h;
	size_t i;

	pthread_mutex_lock(&s->held_mu);
	for (i = 0; s->nheld > 0 && i < n; i++) {
		h = held_find(s, kind, names[i]);
		if (h != NULL)
			held_drop(s, h);
	}
	if (kind != CF_BK_KIND_CONFIG)	/* the config has no listing */
		held_list_clear(&s->lists[kind]);
	pthread_mutex_unlock(&s->held_mu);
}

int
cf_bk_store_put(struct cf_bk_store *s, enum cf_bk_kind kind, const char *name,
    const unsigned char *buf, size_t len, int excl)
{
	if (!name_ok(kind, name))
		return -EINVAL;
	if (kind != CF_BK_KIND_CONFIG) {
		/* A held listing of the kind would miss the new object. */
		pthread_mutex_lock(&s->held_mu);
		held_list_clear(&s->lists[kind]);
		pthread_mutex_unlock(&s->held_mu);
	}
	return s->ops->put(s->ctx, kind, name, buf, len, excl);
}

int
cf_bk_store_get(struct cf_bk_store *s, enum cf_bk_kind kind, const char *name,
    size_t max, unsigned char **buf, size_t *len)
{
	struct held_obj *h;
	int rc = 1;

	*buf = NULL;
	*len = 0;
	if (!name_ok(kind, name))
		return -EINVAL;
	pthread_mutex_lock(&s->held_mu);
	h = s->nheld > 0 ? held_find(s, kind, name) : NULL;
	if (h != NULL && h->len > max) {
		rc = -EFBIG;
	} else if (h != NULL) {
		*buf = h->buf;		/* handed over: held once */
		*len = h->len;
		h->buf = NULL;
		held_drop(s, h);
		rc = 0;
	}
	pthread_mutex_unlock(&s->held_mu);
	if (rc <= 0)
		return rc;
	return s->ops->get(s->ctx, kind, name, max, buf, len);
}

int
cf_bk_store_get_range(struct cf_bk_store *s, enum cf_bk_kind kind,
    const char *name, uint64_t off, size_t len, unsigned char *buf)
{
	struct held_obj *h;
	int rc = 1;

	if (!name_ok(kind, name))
		return -EINVAL;
	pthread_mutex_lock(&s->held_mu);
	h = s->nheld > 0 ? held_find(s, kind, name) : NULL;
	if (h != NULL && off <= h->len && len <= h->len - off) {
		memcpy(buf, h->buf + off, len);
		/* The pack cache reads whole packs: that is the one use. */
		if (off == 0 && len == h->len)
			held_drop(s, h);
		rc = 0;
	}
	pthread_mutex_unlock(&s->held_mu);
	if (rc <= 0)
		return rc;
	return s->ops->get_range(s->ctx, kind, name, off, len, buf);
}

int
cf_bk_store_stat(struct cf_bk_store *s, enum cf_bk_kind kind,
    const char *name, uint64_t *size)
{
	*size = 0;
	if (!name_ok(kind, name))
		return -EINVAL;
	return s->ops->stat(s->ctx, kind, name, size);
}

int
cf_bk_store_list(struct cf_bk_store *s, enum cf_bk_kind kind,
    int (*fn)(void *arg, const char *name, uint64_t size), void *arg)
{
	struct held_list l;
	size_t i;
	int rc = 0;

	if (kind < CF_BK_KIND_PACK || kind > CF_BK_KIND_LOCK)
		return -EINVAL;
	pthread_mutex_lock(&s->held_mu);
	l = s->lists[kind];
	memset(&s->lists[kind], 0, sizeof(l));
	pthread_mutex_unlock(&s->held_mu);
	if (!l.valid)
		return s->ops->list(s->ctx, kind, fn, arg);
	for (i = 0; i < l.n && rc == 0; i++)
		rc = fn(arg, l.names[i], l.sizes[i]);
	held_list_clear(&l);
	return rc;
}

int
cf_bk_store_del(struct cf_bk_store *s, enum cf_bk_kind kind, const char *name)
{
	if (!name_ok(kind, name))
		return -EINVAL;
	held_forget(s, kind, &name, 1);
	return s->ops->del(s->ctx, kind, name);
}

int
cf_bk_store_del_many(struct cf_bk_store *s, enum cf_bk_kind kind,
    const char *const *names, size_t n, int *rcs)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!name_ok(kind, names[i]))
			return -EINVAL;
	held_forget(s, kind, names, n);
	if (s->ops->del_many != NULL)
		return s->ops->del_many(s->ctx, kind, names, n, rcs);
	for (i = 0; i < n; i++) {
		rcs[i] = s->ops->del(s->ctx, kind, names[i]);
		if (rcs[i] == -ENOENT)
			rcs[i] = 0;
	}
	return 0;
}

int
cf_bk_store_lock_until(struct cf_bk_store *s, enum cf_bk_kind kind,
    const char *name, int64_t *until)
{
	*until = 0;
	if (!name_ok(kind, name))
		return -EINVAL;
	if (s->ops != &cf_bk_store_s3_ops)
		return 0;
	return bk_store_s3_lock_until(s->ctx, kind, name, until);
}

int
cf_bk_store_cleanup(struct cf_bk_store *s, int64_t before, uint64_t *n)
{
	*n = 0;
	if (s->ops->cleanup == NULL)
		return 0;
	return s->ops->cleanup(s->ctx, before, n);
}

/* ---- local directory backend ------------------------------------------------ */

struct local {
	int dirfd;
};

static const char *
kind_dir(enum cf_bk_kind kind)
{
	switch (kind) {
	case CF_BK_KIND_PACK:
		return "data";
	case CF_BK_KIND_INDEX:
		return "index";
	case CF_BK_KIND_SNAPSHOT:
		return "snapshots";
	case CF_BK_KIND_LOCK:
		return "locks";
	case CF_BK_KIND_CONFIG:
		return ".";
	}
	return NULL;
}

/* The directory (relative to the repo) of an object: "data/ab", "index". */
static void
obj_dir(enum cf_bk_kind kind, const char *name, char *dir, size_t cap)
{
	if (kind == CF_BK_KIND_PACK)
		snprintf(dir, cap, "data/%.2s", name);
	else
		snprintf(dir, cap, "%s", kind_dir(kind));
}

static int
fsync_dir_at(int dirfd, const char *dir)
{
	int fd = openat(dirfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

static int
mkdir_at(int dirfd, const char *dir)
{
	if (mkdirat(dirfd, dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int
write_all(int fd, const unsigned char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * Writes a large object whose buffer is page-aligned (the pack writer's
 * are) with O_DIRECT up to its last whole page, the rest through the
 * page cache: a pack goes to the disk without being copied into the
 * page cache first (that copy was about a tenth of a backup's CPU time,
 * docs/backup.md), and the put fsyncs it anyway.  Where the file system
 * refuses O_DIRECT, or a direct write fails, everything is written
 * through the page cache from the start.
 */
#define DIRECT_MIN (1U << 20)
#define DIRECT_ALIGN 4096U

static int
write_object(int fd, const unsigned char *buf, size_t len)
{
	size_t head = len & ~(size_t)(DIRECT_ALIGN - 1);
	int fl, rc;

	if (len < DIRECT_MIN || ((uintptr_t)buf & (DIRECT_ALIGN - 1)) != 0)
		return write_all(fd, buf, len);
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_DIRECT) < 0)
		return write_all(fd, buf, len);
	rc = write_all(fd, buf, head);
	if (fcntl(fd, F_SETFL, fl) < 0)
		return -errno;
	if (rc < 0) {
		if (ftruncate(fd, 0) < 0 || lseek(fd, 0, SEEK_SET) < 0)
			return -errno;
		return write_all(fd, buf, len);
	}
	return write_all(fd, buf + head, len - head);
}

static int
local_put(void *ctx, enum cf_bk_kind kind, const char *name,
    const unsigned char *buf, size_t len, int excl)
{
	struct local *l = ctx;
	unsigned char rnd[8];
	char dir[32], tmp[64], rhex[17], path[128], tpath[128];
	int fd = -1, rc, made = 0;

	obj_dir(kind, name, dir, sizeof(dir));
	randombytes_buf(rnd, sizeof(rnd));
	sodium_bin2hex(rhex, sizeof(rhex), rnd, sizeof(rnd));
	snprintf(tmp, sizeof(tmp), ".tmp-%s", rhex);
	snprintf(tpath, sizeof(tpath), "%s/%s", dir, tmp);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = openat(l->dirfd, tpath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
	    0600);
	if (fd < 0 && errno == ENOENT && kind == CF_BK_KIND_PACK) {
		/* data/XX appears on first use. */
		rc = mkdir_at(l->dirfd, dir);
		if (rc < 0)
			return rc;
		rc = fsync_dir_at(l->dirfd, "data");
		if (rc < 0)
			return rc;
		fd = openat(l->dirfd, tpath,
		    O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	}
	if (fd < 0)
		return -errno;
	made = 1;
	rc = write_object(fd, buf, len);
	if (rc == 0 && fsync(fd) < 0)
		rc = -errno;
	if (close(fd) < 0 && rc == 0)
		rc = -errno;
	if (rc < 0)
		goto out;
	if (excl) {
		/* link fails if the name exists: never replaces a config. */
		if (linkat(l->dirfd, tpath, l->dirfd, path, 0) < 0) {
			rc = -errno;
			goto out;
		}
		unlinkat(l->dirfd, tpath, 0);
		made = 0;
	} else {
		if (renameat(l->dirfd, tpath, l->dirfd, path) < 0) {
			rc = -errno;
			goto out;
		}
		made = 0;
	}
	rc = fsync_dir_at(l->dirfd, dir);
out:
	if (made)
		unlinkat(l->dirfd, tpath, 0);
	return rc;
}

static int
local_open(struct local *l, enum cf_bk_kind kind, const char *name)
{
	char dir[32], path[128];
	int fd;

	obj_dir(kind, name, dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = openat(l->dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW |
	    O_NONBLOCK);
	return fd < 0 ? -errno : fd;
}

static int
read_at(int fd, unsigned char *buf, size_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t n = pread(fd, buf, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EPROTO;	/* shorter than the index says */
		buf += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static int
local_get(void *ctx, enum cf_bk_kind kind, const char *name, size_t max,
    unsigned char **buf, size_t *len)
{
	struct stat st;
	unsigned char *b = NULL;
	int fd, rc;

	*buf = NULL;
	*len = 0;
	fd = local_open(ctx, kind, name);
	if (fd < 0)
		return fd;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	rc = -EPROTO;
	if (!S_ISREG(st.st_mode))
		goto out;
	rc = -EFBIG;
	if ((uint64_t)st.st_size > max)
		goto out;
	rc = -ENOMEM;
	b = malloc(st.st_size > 0 ? (size_t)st.st_size : 1);
	if (b == NULL)
		goto out;
	rc = read_at(fd, b, (size_t)st.st_size, 0);
	if (rc < 0)
		goto out;
	*buf = b;
	*len = (size_t)st.st_size;
	b = NULL;
out:
	free(b);
	close(fd);
	return rc;
}

static int
local_get_range(void *ctx, enum cf_bk_kind kind, const char *name,
    uint64_t off, size_t len, unsigned char *buf)
{
	int fd = local_open(ctx, kind, name), rc;

	if (fd < 0)
		return fd;
	rc = read_at(fd, buf, len, off);
	close(fd);
	return rc;
}

static int
local_stat(void *ctx, enum cf_bk_kind kind, const char *name, uint64_t *size)
{
	struct stat st;
	int fd = local_open(ctx, kind, name), rc = 0;

	*size = 0;
	if (fd < 0)
		return fd;
	if (fstat(fd, &st) < 0)
		rc = -errno;
	else
		*size = (uint64_t)st.st_size;
	close(fd);
	return rc;
}

/* Lists one directory's valid names. */
static int
list_dir(int dirfd, const char *dir,
    int (*fn)(void *arg, const char *name, uint64_t size), void *arg)
{
	struct dirent *de;
	struct stat st;
	DIR *d;
	int fd, rc = 0;

	fd = openat(dirfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	d = fdopendir(fd);
	if (d == NULL) {
		rc = -errno;
		close(fd);
		return rc;
	}
	while ((errno = 0, de = readdir(d)) != NULL) {
		if (!bk_name_valid(de->d_name))
			continue;	/* temporaries and strays */
		if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode))
			continue;
		rc = fn(arg, de->d_name, (uint64_t)st.st_size);
		if (rc != 0)
			break;
	}
	if (de == NULL && errno != 0 && rc == 0)
		rc = -errno;
	closedir(d);
	return rc;
}

static int
local_list(void *ctx, enum cf_bk_kind kind,
    int (*fn)(void *arg, const char *name, uint64_t size), void *arg)
{
	struct local *l = ctx;
	char dir[16];
	unsigned i;
	int rc;

	if (kind != CF_BK_KIND_PACK)
		return list_dir(l->dirfd, kind_dir(kind), fn, arg);
	for (i = 0; i < 256; i++) {
		snprintf(dir, sizeof(dir), "data/%02x", i);
		rc = list_dir(l->dirfd, dir, fn, arg);
		if (rc != 0)
			return rc;
	}
	return 0;
}

static int
local_del(void *ctx, enum cf_bk_kind kind, const char *name)
{
	struct local *l = ctx;
	char dir[32], path[128];

	obj_dir(kind, name, dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (unlinkat(l->dirfd, path, 0) < 0)
		return -errno;
	return fsync_dir_at(l->dirfd, dir);
}

/* 1 if name is one of local_put's temporaries: ".tmp-" and 16 hex. */
static int
tmp_name(const char *name)
{
	size_t i;

	if (strncmp(name, ".tmp-", 5) != 0 || strlen(name) != 5 + 16)
		return 0;
	for (i = 5; i < 5 + 16; i++)
		if (!((name[i] >= '0' && name[i] <= '9') ||
		    (name[i] >= 'a' && name[i] <= 'f')))
			return 0;
	return 1;
}

/* Removes the temporaries of dir last modified before `before`. */
static int
cleanup_dir(int dirfd, const char *dir, int64_t before, uint64_t *n)
{
	struct dirent *de;
	struct stat st;
	DIR *d;
	uint64_t removed = 0;
	int fd, rc = 0;

	fd = openat(dirfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	d = fdopendir(fd);
	if (d == NULL) {
		rc = -errno;
		close(fd);
		return rc;
	}
	while ((errno = 0, de = readdir(d)) != NULL) {
		if (!tmp_name(de->d_name))
			continue;
		if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue;	/* renamed into place meanwhile */
			rc = -errno;
			break;
		}
		/* A writer's temporary changes until it is renamed. */
		if (!S_ISREG(st.st_mode) || (int64_t)st.st_mtime >= before)
			continue;
		if (unlinkat(fd, de->d_name, 0) < 0) {
			if (errno == ENOENT)
				continue;
			rc = -errno;
			break;
		}
		removed++;
	}
	if (de == NULL && errno != 0 && rc == 0)
		rc = -errno;
	if (removed > 0 && fsync(fd) < 0 && rc == 0)
		rc = -errno;
	*n += removed;
	closedir(d);
	return rc;
}

/*
 * A put killed between creating its temporary and renaming it leaves
 * ".tmp-<random>" beside the target (the config's in the top
 * directory); list skips them, this removes the old ones.
 */
static int
local_cleanup(void *ctx, int64_t before, uint64_t *n)
{
	static const char *const dirs[] = { ".", "index", "snapshots",
	    "locks" };
	struct local *l = ctx;
	char dir[16];
	size_t i;
	int rc;

	for (i = 0; i < sizeof(dirs) / sizeof(*dirs); i++) {
		rc = cleanup_dir(l->dirfd, dirs[i], before, n);
		if (rc < 0)
			return rc;
	}
	for (i = 0; i < 256; i++) {
		snprintf(dir, sizeof(dir), "data/%02zx", i);
		rc = cleanup_dir(l->dirfd, dir, before, n);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static void
local_close(void *ctx)
{
	struct local *l = ctx;

	if (l == NULL)
		return;
	close(l->dirfd);
	free(l);
}

const struct cf_bk_store_ops cf_bk_store_local_ops = {
	.name = "local",
	.put = local_put,
	.get = local_get,
	.get_range = local_get_range,
	.stat = local_stat,
	.list = local_list,
	.del = local_del,
	.close = local_close,
	.cleanup = local_cleanup,
};

/* Makes path (and its parents) as directories, mode 0700. */
static int
mkdir_p(const char *path)
{
	char buf[PATH_MAX];
	size_t i, n = strlen(path);

	if (n == 0 || n >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (i = 1; i <= n; i++) {
		if (buf[i] == '/' || buf[i] == '\0') {
			char c = buf[i];

			buf[i] = '\0';
			if (mkdir(buf, 0700) < 0 && errno != EEXIST)
				return -errno;
			buf[i] = c;
		}
	}
	return 0;
}

static int
local_open_path(struct cf_bk_store **out, const char *path, int flags)
{
	static const char *const dirs[] = { "data", "index", "snapshots",
	    "locks" };
	struct local *l;
	size_t i;
	int fd, rc;

	if (flags & CF_BK_STORE_CREATE) {
		rc = mkdir_p(path);
		if (rc < 0)
			return rc;
	}
	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (flags & CF_BK_STORE_CREATE) {
		for (i = 0; i < sizeof(dirs) / sizeof(*dirs); i++) {
			rc = mkdir_at(fd, dirs[i]);
			if (rc < 0) {
				close(fd);
				return rc;
			}
		}
		if (fsync(fd) < 0) {
			rc = -errno;
			close(fd);
			return rc;
		}
	}
	l = calloc(1, sizeof(*l));
	if (l == NULL) {
		close(fd);
		return -ENOMEM;
	}
	l->dirfd = fd;
	rc = cf_bk_store_new(out, &cf_bk_store_local_ops, l);
	if (rc < 0)
		local_close(l);
	return rc;
}

int
cf_bk_store_open_url(struct cf_bk_store **out, const char *url, int flags)
{
	*out = NULL;
	if (url == NULL)
		return -EINVAL;
	if (strncmp(url, "file://", 7) == 0) {
		/* Only file:///absolute: no host part, no relative path. */
		if (url[7] != '/' || strstr(url, "/../") != NULL)
			return -EINVAL;
		return local_open_path(out, url + 7, flags);
	}
	if (strncmp(url, "s3://", 5) == 0)
		return bk_store_s3_open(out, url, flags);
	return -EINVAL;
}
