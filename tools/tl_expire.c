/*
 * tl_expire.c - deletes from a tenant's live store the files of a data
 * class whose keep period has passed (docs/retention.md, "Live store"),
 * for coffer retention plan/apply.
 *
 * A non-directory entry expires when its path (relative to the store's
 * root) matches a class with a keep period and now >= its mtime + keep
 * (seconds): the last write, as the tenant sees it.  Directories are
 * walked (only those a class with keep may reach below), never deleted,
 * and never followed through symlinks.
 *
 * Where the store is served by its daemon (its control socket answers)
 * the files are deleted through the tenant's mount point, found in
 * /proc/self/mountinfo: the daemon does its own bookkeeping (generation
 * log, sidecars, snapshot copy-on-write) and the kernel's caches stay
 * right.  Otherwise the store is read with the tenant's keys and changed
 * under a hold (fs/cf_fs.h, cf_fs_hold_take): a daemon starting to mount
 * the store meanwhile is refused.  Either way an entry is deleted only if
 * it is still the object that was judged, with the same mtime and ctime.
 *
 * It prints (it is part of the tool) but never a file name unless asked
 * (list): names are tenant data.
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
#include <time.h>
#include <unistd.h>

#include "cf_backup.h"
#include "cf_fs.h"
#include "tl_int.h"

_Static_assert(CF_BK_CLASSES_MAX == 16, "struct tl_expire counts 16 classes");

/*
 * Nesting followed and the longest relative path: those of the trees
 * backup and restore handle (tl_int.h), 64 KiB; the walk itself works
 * relative to directory descriptors, the path is only matched and listed.
 */
#define MAX_DEPTH TL_TREE_DEPTH
#define PATH_CAP TL_PATH_CAP

/* One directory being walked: a reader handle, or a descriptor in the mount. */
struct wdir {
	struct cf_fs_rdir *rd;
	int fd;
	DIR *dp;
};

static void
wdir_close(struct wdir *d)
{
	cf_fs_rdir_free(d->rd);
	if (d->dp != NULL)
		closedir(d->dp);
	else if (d->fd >= 0)
		close(d->fd);
	d->rd = NULL;
	d->dp = NULL;
	d->fd = -1;
}

/*
 * The next entry of d: 1 with *name and *st (the tenant's view), 0 at the
 * end, -errno if the directory cannot be read on.  Entries whose name
 * cannot be read (damaged) are skipped and counted.
 */
static int
wdir_next(struct tl_expire *x, struct wdir *d, const char **name,
    struct stat *st)
{
	const struct cf_fs_rentry *e;
	struct dirent *de;
	int rc;

	for (;;) {
		if (d->rd != NULL) {
			rc = cf_fs_rdir_next(d->rd, &e);
			if (rc <= 0)
				return rc;
			if (e->err != 0) {
				x->unreadable++;
				continue;
			}
			*name = e->name;
			*st = e->st;
			return 1;
		}
		errno = 0;
		de = readdir(d->dp);
		if (de == NULL)
			return errno != 0 ? -errno : 0;
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if (fstatat(dirfd(d->dp), de->d_name, st,
		    AT_SYMLINK_NOFOLLOW) != 0) {
			if (errno != ENOENT)
				x->unreadable++;
			continue;
		}
		*name = de->d_name;
		return 1;
	}
}

/* Opens the subdirectory name of d (no symlink, same file system). */
static int
wdir_open(struct tl_expire *x, const struct wdir *d, const char *name,
    struct wdir *sub)
{
	struct stat st;
	int fd, rc;

	sub->rd = NULL;
	sub->dp = NULL;
	sub->fd = -1;
	if (d->rd != NULL)
		return cf_fs_rdir_open(&sub->rd, d->rd, name);
	fd = openat(dirfd(d->dp), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) != 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	if (st.st_dev != x->dev) {
		close(fd);
		return -EXDEV;	/* something mounted over it */
	}
	sub->fd = fd;
	sub->dp = fdopendir(fd);
	if (sub->dp == NULL) {
		close(fd);
		sub->fd = -1;
		return -ENOMEM;
	}
	return 0;
}

/* Deletes name of d if it is still the object *st: 0, -ESTALE, -errno. */
static int
wdir_unlink(struct tl_expire *x, struct wdir *d, const char *name,
    const struct stat *st)
{
	struct stat now;

	if (d->rd != NULL)
		return cf_fs_hold_unlink(x->hold, d->rd, name, st);
	if (fstatat(dirfd(d->dp), name, &now, AT_SYMLINK_NOFOLLOW) != 0)
		return -errno;
	if (S_ISDIR(now.st_mode))
		return -EISDIR;
	if (!cf_fs_same_object(&now, st))
		return -ESTALE;
	return unlinkat(dirfd(d->dp), name, 0) == 0 ? 0 : -errno;
}

/* 1 if something of a class with keep may be at or below directory path. */
static int
may_hold(const struct tl_expire *x, const char *path)
{
	size_t c;

	for (c = 0; c < x->ncl; c++)
		if (x->cl[c].keep > 0 &&
		    cf_bk_class_may_contain(&x->cl[c], path))
			return 1;
	return 0;
}

/* The first class of path past its keep at x->now, or -1. */
static int
due(const struct tl_expire *x, const char *path, const struct stat *st)
{
	size_t c;

	for (c = 0; c < x->ncl; c++)
		if (x->cl[c].keep > 0 && (int64_t)x->now >=
		    (int64_t)st->st_mtim.tv_sec + x->cl[c].keep &&
		    cf_bk_class_match(&x->cl[c], path))
			return (int)c;
	return -1;
}

static void
walk(struct tl_expire *x, struct wdir *d, char *path, size_t plen, int depth)
{
	const char *name = NULL;
	struct wdir sub;
	struct stat st;
	char when[32];
	size_t nl;
	int rc = 0, c;

	if (x->tick != NULL && x->err == 0) {
		rc = x->tick(x->tick_arg);
		if (rc < 0)
			x->err = rc;
	}
	while (x->err == 0 && (rc = wdir_next(x, d, &name, &st)) == 1) {
		nl = strlen(name);
		if (nl == 0 || strchr(name, '/') != NULL ||
		    strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
			continue;	/* never a path outside this one */
		if (plen + nl + 2 > PATH_CAP) {
			x->failed++;
			continue;
		}
		if (plen > 0)
			path[plen] = '/';
		memcpy(path + plen + (plen > 0), name, nl + 1);
		if (S_ISDIR(st.st_mode)) {
			if (!may_hold(x, path)) {
				/* nothing of a class below: not walked */
			} else if (depth >= MAX_DEPTH) {
				x->failed++;
			} else if ((rc = wdir_open(x, d, name, &sub)) == 0) {
				walk(x, &sub, path, plen + (plen > 0) + nl,
				    depth + 1);
				if (x->apply && sub.rd != NULL && x->err == 0 &&
				    cf_fs_hold_sweep(x->hold, sub.rd) < 0)
					x->failed++;
				wdir_close(&sub);
			} else if (rc == -EXDEV) {
				x->foreign++;
			} else if (rc != -ENOENT) {
				x->failed++;
			}
			path[plen] = '\0';
			continue;
		}
		if (d->rd == NULL && st.st_dev != x->dev) {
			x->foreign++;	/* something mounted over it */
			path[plen] = '\0';
			continue;
		}
		c = due(x, path, &st);
		if (c >= 0 && x->apply) {
			rc = wdir_unlink(x, d, name, &st);
			if (rc == -ESTALE)
				x->changed++;
			else if (rc == -EBUSY)
				x->err = rc;	/* the hold was lost */
			else if (rc < 0 && rc != -ENOENT)
				x->failed++;
			if (rc < 0)
				c = -1;
		}
		if (c >= 0) {
			x->files[c]++;
			x->bytes[c] += S_ISREG(st.st_mode) ?
			    (uint64_t)st.st_size : 0;
			if (x->list && x->listed++ == 0)
				printf("tenant %s: live store, files past their "
				    "class's keep:\n", x->tenant);
			if (x->list) {
				cf_ks_time_format(st.st_mtim.tv_sec, when,
				    sizeof(when));
				printf("  %s %s (class %s, modified %s)\n",
				    x->apply ? "deleted" : "expired", path,
				    x->cl[c].name, when);
			}
		}
		path[plen] = '\0';
	}
	if (rc < 0 && x->err == 0)
		x->failed++;
}

/* Decodes mountinfo's octal escapes (\040 for a space) in place. */
static void
unescape(char *s)
{
	char *o = s;

	while (*s != '\0') {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' &&
		    s[2] >= '0' && s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 +
			    (s[3] - '0'));
			s += 4;
		} else {
			*o++ = *s++;
		}
	}
	*o = '\0';
}

int
tl_tenant_mountpoint(const char *name, ino_t root_ino, char *mp, size_t cap)
{
	struct stat st;
	char line[8192], root[PATH_MAX], point[PATH_MAX], type[64];
	char src[300], want[CF_KS_NAME_MAX + 16];
	FILE *f = fopen("/proc/self/mountinfo", "re");
	int found = 0;

	mp[0] = '\0';
	if (f == NULL)
		return 0;
	snprintf(want, sizeof(want), "coffer:%s", name);
	while (!found && fgets(line, sizeof(line), f) != NULL) {
		char *sep = strstr(line, " - ");

		if (sep == NULL || sscanf(sep + 3, "%63s %299s", type,
		    src) != 2 || strcmp(type, "fuse.coffer") != 0 ||
		    strcmp(src, want) != 0)
			continue;
		if (sscanf(line, "%*s %*s %*s %4095s %4095s", root,
		    point) != 2 || strcmp(root, "/") != 0)
			continue;	/* a bind mount of a subdirectory */
		unescape(point);
		/*
		 * Another home may mount a tenant of the same name: the
		 * mount's root reports its backing directory's inode.
		 */
		if (root_ino != 0 && (stat(point, &st) != 0 ||
		    st.st_ino != root_ino))
			continue;
		if (strlen(point) < cap) {
			memcpy(mp, point, strlen(point) + 1);
			found = 1;
		}
	}
	fclose(f);
	return found;
}

int
tl_expire_live(struct cf_ks_home *home, struct cf_ks_tenant *t,
    struct tl_expire *x)
{
	const char *name = cf_ks_tenant_name(t);
	struct cf_fs_keys *keys = NULL;
	struct cf_fs_reader *r = NULL;
	struct wdir top = { NULL, -1, NULL };
	char store[PATH_MAX], genlog[PATH_MAX], data[PATH_MAX + 8];
	char *path = NULL;
	struct stat st;
	size_t c;
	int rc, any = 0, is_served, has_mp;

	x->tenant = name;
	for (c = 0; c < x->ncl; c++)
		any |= x->cl[c].keep > 0;
	if (!any)
		return 1;
	if (cf_ks_tenant_get(t, "store") != NULL)
		snprintf(store, sizeof(store), "%s", cf_ks_tenant_get(t,
		    "store"));
	else
		snprintf(store, sizeof(store), "%s/%s/store",
		    cf_ks_home_path(home), cf_ks_tenant_dir(t));
	if (lstat(store, &st) != 0 && errno == ENOENT)
		return 1;	/* never mounted: no store */
	path = calloc(1, PATH_CAP);
	if (path == NULL)
		return -ENOMEM;
	is_served = cf_fs_store_served(store) == 1;
	snprintf(data, sizeof(data), "%s/data", store);
	has_mp = stat(data, &st) == 0 && tl_tenant_mountpoint(name,
	    st.st_ino, x->mp, sizeof(x->mp));
	if (is_served && !has_mp) {
		fprintf(stderr, "coffer: tenant %s is served by a coffer "
		    "daemon whose mount is not visible here; its live store "
		    "is left as is\n", name);
		rc = -EBUSY;
		goto out;
	}
	if (has_mp && !is_served) {
		fprintf(stderr, "coffer: tenant %s is mounted on %s but its "
		    "daemon does not answer; unmount it (fusermount3 -u) and "
		    "run apply again\n", name, x->mp);
		rc = -ENOTCONN;
		goto out;
	}
	if (has_mp) {
		x->mounted = 1;
		top.fd = open(x->mp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (top.fd < 0 || fstat(top.fd, &st) != 0) {
			rc = -errno;
			fprintf(stderr, "coffer: %s: %s\n", x->mp,
			    strerror(-rc));
			goto out;
		}
		x->dev = st.st_dev;
		top.dp = fdopendir(top.fd);
		if (top.dp == NULL) {
			rc = -ENOMEM;
			goto out;
		}
		walk(x, &top, path, 0, 0);
		rc = x->err;
		goto out;
	}
	x->mounted = 0;
	/* The store's metadata version, not the newest (its marker). */
	rc = tl_fs_keys(home, t, &keys);
	if (rc < 0) {
		tl_fail(rc, name);
		goto out;
	}
	if (x->apply) {
		snprintf(genlog, sizeof(genlog), "%s/%s/fsgen",
		    cf_ks_home_path(home), cf_ks_tenant_dir(t));
		rc = cf_fs_hold_take(&x->hold, keys, store, genlog);
		if (rc == -EBUSY) {
			fprintf(stderr, "coffer: tenant %s was mounted "
			    "meanwhile; its live store is left as is (run "
			    "apply again)\n", name);
			goto out;
		}
		if (rc == -EPROTO) {
			fprintf(stderr, "coffer: the generation log of %s is "
			    "damaged; mount it with -o accept_rollback first "
			    "(docs/mount.md)\n", name);
			goto out;
		}
	} else {
		rc = 0;
	}
	if (rc == 0)
		rc = cf_fs_reader_open(&r, keys, store);
	if (rc == 0)
		rc = cf_fs_rdir_open_root(&top.rd, r);
	if (rc == -ENOENT) {
		rc = 1;		/* no store yet */
		goto out;
	}
	if (rc < 0) {
		fprintf(stderr, "coffer: the store of %s at %s: %s\n", name,
		    store, rc == -EBADMSG ? "not this tenant's (or its "
		    "marker was altered)" : rc == -EINPROGRESS ? "its "
		    "metadata is being re-keyed (finish it with 'coffer "
		    "tenant reencrypt NAME --metadata')" : strerror(-rc));
		goto out;
	}
	walk(x, &top, path, 0, 0);
	if (x->apply && x->err == 0 && cf_fs_hold_sweep(x->hold, top.rd) < 0)
		x->failed++;
	rc = x->err;
	if (rc == -EBUSY)
		fprintf(stderr, "coffer: tenant %s was mounted while its "
		    "live store was cleaned; stopped (run apply again)\n",
		    name);
out:
	wdir_close(&top);
	cf_fs_reader_free(r);
	cf_fs_hold_release(x->hold);
	x->hold = NULL;
	cf_fs_keys_free(keys);
	free(path);
	return rc;
}
