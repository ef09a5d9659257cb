/*
 * tl_tarin.c - the entries of a tar archive as a tree of names
 * (backup --tar, docs/backup.md "Tar input"): which entries are taken,
 * which are left out, and what each name ends up as.  It reads headers
 * libarchive has parsed; contents go to the caller's content callback
 * (the backup's chunker, or a fuzz target's sink), so this part needs no
 * repository and is what tests/fuzz/fuzz_tar_entry.c exercises.  It does
 * not encode trees (cmd_backup.c's tar_tree) nor open the archive.
 *
 * The archive is read once, in order, with libarchive (every tar dialect
 * it reads: v7, ustar, pax, GNU, through any of its decompression
 * filters).  Contents go through the chunker as they arrive; names and
 * metadata build a tree in memory, encoded bottom-up at the end, because
 * a tar may name a directory's entries anywhere in the stream.
 *
 * An inode of the archive (struct tl_tino) holds the metadata and content;
 * the names of the tree (struct tl_tnode) point at one, and the names a
 * hard link adds share it.  A later entry of the same name replaces the
 * earlier one, as extracting the archive would.  Entries the tree cannot
 * hold safely are left out and named: ".." components, a name below
 * something that is not a directory (a symlink: never followed), a hard
 * link to a name not earlier in the archive, a file over a directory that
 * has entries.  A damaged or truncated archive (no end-of-archive block)
 * fails the backup: no snapshot is saved.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cf_backup.h"
#include "cf_fs.h"
#include "tl_int.h"

#define MAX_DEPTH TL_TREE_DEPTH	/* as cmd_backup.c: nesting followed */

/* Prints a name from the archive with control bytes escaped. */
static void
put_name(const char *s)
{
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			fprintf(stderr, "\\%03o", (unsigned char)*s);
		else
			fputc(*s, stderr);
	}
}

static void
tar_left_out(struct tl_tarin *ti, const char *path, const char *why)
{
	ti->left_out++;
	if (ti->quiet)
		return;
	if (ti->before_msg != NULL)
		ti->before_msg(ti);	/* e.g. clear a progress line */
	fputs("coffer: tar entry ", stderr);
	put_name(path);
	fprintf(stderr, ": %s; left out\n", why);
}

static void
tino_put(struct tl_tino *ino)
{
	size_t i;

	if (ino == NULL || --ino->refs > 0)
		return;
	free(ino->target);
	for (i = 0; i < ino->nxattrs; i++) {
		free((char *)(uintptr_t)ino->xattrs[i].name);
		free((unsigned char *)(uintptr_t)ino->xattrs[i].value);
	}
	free(ino->xattrs);
	free(ino->items);
	free(ino);
}

static struct tl_tino *
tino_new(struct tl_tarin *ti, uint8_t type)
{
	struct tl_tino *ino = calloc(1, sizeof(*ino));

	if (ino == NULL)
		return NULL;
	ino->type = type;
	ino->refs = 1;
	ino->group = ++ti->next_group;
	return ino;
}

static size_t
tnode_hash(const struct tl_tnode *parent, const char *name, size_t nhash)
{
	uint64_t h = 1469598103934665603ULL ^ (uint64_t)(uintptr_t)parent;

	for (; *name != '\0'; name++)
		h = (h ^ (unsigned char)*name) * 1099511628211ULL;
	return (size_t)(h ^ (h >> 32)) & (nhash - 1);
}

static struct tl_tnode *
tnode_find(struct tl_tarin *ti, const struct tl_tnode *parent, const char *name)
{
	struct tl_tnode *n;

	for (n = ti->hash[tnode_hash(parent, name, ti->nhash)]; n != NULL;
	    n = n->hnext)
		if (n->parent == parent && strcmp(n->name, name) == 0)
			return n;
	return NULL;
}

/* A new entry named name in the directory parent (no ino yet). */
static struct tl_tnode *
tnode_add(struct tl_tarin *ti, struct tl_tnode *parent, const char *name)
{
	struct tl_tnode *n, **nh, *m, *next;
	size_t i, h;

	if (ti->nnodes >= ti->nhash) {
		nh = calloc(ti->nhash * 2, sizeof(*nh));
		if (nh == NULL)
			return NULL;
		for (i = 0; i < ti->nhash; i++) {
			for (m = ti->hash[i]; m != NULL; m = next) {
				next = m->hnext;
				h = tnode_hash(m->parent, m->name,
				    ti->nhash * 2);
				m->hnext = nh[h];
				nh[h] = m;
			}
		}
		free(ti->hash);
		ti->hash = nh;
		ti->nhash *= 2;
	}
	n = calloc(1, sizeof(*n));
	if (n == NULL)
		return NULL;
	n->name = strdup(name);
	if (n->name == NULL) {
		free(n);
		return NULL;
	}
	n->parent = parent;
	if (parent->last != NULL)
		parent->last->sibling = n;
	else
		parent->child = n;
	parent->last = n;
	parent->nchild++;
	h = tnode_hash(parent, name, ti->nhash);
	n->hnext = ti->hash[h];
	ti->hash[h] = n;
	n->all = ti->all;
	ti->all = n;
	ti->nnodes++;
	return n;
}

static int
is_tdir(const struct tl_tnode *n)
{
	return n->ino != NULL && n->ino->type == CF_BK_NODE_DIR;
}

/*
 * Splits an archive path into its components in place: leading '/'
 * removed (as tar does), empty and "." components skipped.  -EINVAL for
 * "..", a component over 255 bytes or more than MAX_DEPTH + 1 of them
 * (MAX_DEPTH directories and a name in the deepest, as a --dir walk
 * takes).
 */
static int
tar_split(struct tl_tarin *ti, char *p, char **comp, size_t *ncomp)
{
	char *s, *save = NULL;

	*ncomp = 0;
	if (p[0] == '/' && !ti->stripped && !ti->quiet) {
		if (ti->before_msg != NULL)
			ti->before_msg(ti);
		fprintf(stderr, "coffer: removing leading '/' from tar member "
		    "names\n");
		ti->stripped = 1;
	}
	for (s = strtok_r(p, "/", &save); s != NULL;
	    s = strtok_r(NULL, "/", &save)) {
		if (strcmp(s, ".") == 0)
			continue;
		if (strcmp(s, "..") == 0 || strlen(s) > 255 ||
		    *ncomp == MAX_DEPTH + 1)
			return -EINVAL;
		comp[(*ncomp)++] = s;
	}
	return 0;
}

/*
 * The directory holding comp[0..n-1] into *dp, made (as implicit
 * directories: 0755, the caller's owner, the backup's start time) where
 * missing if make, else -ENOENT.  -ENOTDIR if a component is not a
 * directory.
 */
static int
tar_dir(struct tl_tarin *ti, char **comp, size_t n, int make,
    struct tl_tnode **dp)
{
	struct tl_tnode *d = &ti->root, *c;
	size_t i;

	*dp = NULL;
	for (i = 0; i < n; i++) {
		c = tnode_find(ti, d, comp[i]);
		if (c == NULL) {
			if (!make)
				return -ENOENT;
			c = tnode_add(ti, d, comp[i]);
			if (c == NULL || (c->ino = tino_new(ti,
			    CF_BK_NODE_DIR)) == NULL)
				return -ENOMEM;
			c->ino->mode = 0755;
			c->ino->uid = getuid();
			c->ino->gid = getgid();
			c->ino->atime = c->ino->mtime = c->ino->ctime = ti->t0;
		} else if (!is_tdir(c)) {
			return -ENOTDIR;
		}
		d = c;
	}
	*dp = d;
	return 0;
}

static int64_t
tar_ns(int set, time_t s, long ns, int64_t dflt)
{
	if (!set)
		return dflt;
	if (s > INT64_MAX / 1000000000 - 1 || s < INT64_MIN / 1000000000 + 1)
		return dflt;
	return (int64_t)s * 1000000000 + ns;
}

/* Metadata and user.* xattrs of the entry into ino.  -EINVAL: bad ids. */
static int
tar_meta(struct tl_tarin *ti, struct archive_entry *e, struct tl_tino *ino)
{
	const char *xn;
	const void *xv;
	size_t xl, i;
	struct cf_bk_xattr *xa;
	la_int64_t uid = archive_entry_uid(e), gid = archive_entry_gid(e);

	if (uid < 0 || uid > UINT32_MAX || gid < 0 || gid > UINT32_MAX)
		return -EINVAL;
	ino->mode = archive_entry_perm(e) & 07777;
	ino->uid = (uint32_t)uid;
	ino->gid = (uint32_t)gid;
	ino->mtime = tar_ns(archive_entry_mtime_is_set(e),
	    archive_entry_mtime(e), archive_entry_mtime_nsec(e), 0);
	ino->atime = tar_ns(archive_entry_atime_is_set(e),
	    archive_entry_atime(e), archive_entry_atime_nsec(e), ino->mtime);
	ino->ctime = tar_ns(archive_entry_ctime_is_set(e),
	    archive_entry_ctime(e), archive_entry_ctime_nsec(e), ino->mtime);
	for (i = 0; i < ino->nxattrs; i++) {
		free((char *)(uintptr_t)ino->xattrs[i].name);
		free((unsigned char *)(uintptr_t)ino->xattrs[i].value);
	}
	ino->nxattrs = 0;
	if (archive_entry_xattr_reset(e) == 0)
		return 0;
	while (archive_entry_xattr_next(e, &xn, &xv, &xl) == ARCHIVE_OK) {
		/*
		 * user.* only, as a store backup records: a tar must not
		 * give restore security.* or trusted.* attributes to set.
		 */
		if (strncmp(xn, "user.", 5) != 0 || strlen(xn) > 255 ||
		    xl > 65536 || ino->nxattrs == 1024) {
			ti->dropped_xattrs++;
			continue;
		}
		for (i = 0; i < ino->nxattrs; i++)
			if (strcmp(ino->xattrs[i].name, xn) == 0)
				break;
		if (i < ino->nxattrs)
			continue;	/* named twice: the first is kept */
		xa = realloc(ino->xattrs, (ino->nxattrs + 1) * sizeof(*xa));
		if (xa == NULL)
			return -ENOMEM;
		ino->xattrs = xa;
		xa[ino->nxattrs].name = strdup(xn);
		xa[ino->nxattrs].value = malloc(xl > 0 ? xl : 1);
		xa[ino->nxattrs].value_len = xl;
		if (xa[ino->nxattrs].name == NULL ||
		    xa[ino->nxattrs].value == NULL) {
			free((char *)(uintptr_t)xa[ino->nxattrs].name);
			free((unsigned char *)(uintptr_t)
			    xa[ino->nxattrs].value);
			return -ENOMEM;
		}
		memcpy((unsigned char *)(uintptr_t)xa[ino->nxattrs].value, xv,
		    xl);
		ino->nxattrs++;
	}
	return 0;
}

/*
 * One archive entry into the tree.  0 (also when it is left out and
 * named), or -errno to stop: the archive is damaged or truncated, or a
 * write failed.
 */
int
tl_tarin_entry(struct tl_tarin *ti, struct archive_entry *e)
{
	char *path = NULL, *lpath = NULL, *comp[MAX_DEPTH + 1];
	char *lcomp[MAX_DEPTH + 1];
	const char *raw = archive_entry_pathname(e), *hl;
	struct tl_tnode *dir, *n, *ln;
	struct tl_tino *ino = NULL;
	size_t nc, nlc;
	mode_t ft = archive_entry_filetype(e);
	uint8_t type;
	int rc = 0, isdir;

	if (raw == NULL)
		raw = archive_entry_pathname_utf8(e);
	if (raw == NULL || raw[0] == '\0') {
		tar_left_out(ti, "(unreadable name)", "no usable name");
		return 0;
	}
	path = strdup(raw);
	if (path == NULL)
		return -ENOMEM;
	if (tar_split(ti, path, comp, &nc) < 0) {
		tar_left_out(ti, raw, "a '..' component, a name over 255 "
		    "bytes or too deep");
		goto out;
	}
	hl = archive_entry_hardlink(e);
	isdir = hl == NULL && ft == AE_IFDIR;
	if (nc == 0) {
		/* "./": the root's own metadata is not recorded. */
		if (!isdir)
			tar_left_out(ti, raw, "names the root");
		goto out;
	}
	if (nc == MAX_DEPTH + 1 && isdir) {
		/* A directory there could hold nothing: restore stops. */
		tar_left_out(ti, raw, "a directory nested deeper than 256");
		goto out;
	}
	rc = tar_dir(ti, comp, nc - 1, 1, &dir);
	if (rc == -ENOTDIR) {
		rc = 0;
		tar_left_out(ti, raw, "a directory above it is not a "
		    "directory in the archive (a symlink is never followed)");
		goto out;
	}
	if (rc < 0)
		goto out;
	n = tnode_find(ti, dir, comp[nc - 1]);
	if (n != NULL && is_tdir(n) && !isdir && n->nchild > 0) {
		tar_left_out(ti, raw, "a directory of that name has entries");
		goto out;
	}
	if (hl != NULL) {
		lpath = strdup(hl);
		if (lpath == NULL) {
			rc = -ENOMEM;
			goto out;
		}
		ln = NULL;
		if (tar_split(ti, lpath, lcomp, &nlc) == 0 && nlc > 0 &&
		    tar_dir(ti, lcomp, nlc - 1, 0, &ln) == 0)
			ln = tnode_find(ti, ln, lcomp[nlc - 1]);
		if (ln == NULL || is_tdir(ln)) {
			tar_left_out(ti, raw, ln == NULL ? "a hard link to a "
			    "name not earlier in the archive" : "a hard link "
			    "to a directory");
			goto out;
		}
		ino = ln->ino;
		ino->refs++;
		/*
		 * A hard link entry with a size carries the inode's new
		 * content (pax "hardlink with data"); without one it names
		 * the inode only.
		 */
		if (ino->type == CF_BK_NODE_FILE &&
		    archive_entry_size_is_set(e) && archive_entry_size(e) > 0) {
			rc = ti->content(ti, e, ino);
			if (rc < 0)
				goto out;
		}
		if (n == ln)
			goto out;	/* linked to itself: no change */
	} else {
		switch (ft) {
		case AE_IFREG: type = CF_BK_NODE_FILE; break;
		case AE_IFDIR: type = CF_BK_NODE_DIR; break;
		case AE_IFLNK: type = CF_BK_NODE_SYMLINK; break;
		case AE_IFIFO: type = CF_BK_NODE_FIFO; break;
		case AE_IFSOCK: type = CF_BK_NODE_SOCKET; break;
		case AE_IFCHR: type = CF_BK_NODE_CHR; break;
		case AE_IFBLK: type = CF_BK_NODE_BLK; break;
		default:
			tar_left_out(ti, raw, "an entry type the snapshot "
			    "cannot hold");
			goto out;
		}
		if (isdir && n != NULL && is_tdir(n)) {
			ino = n->ino;	/* a directory again: metadata */
			ino->refs++;
		} else {
			ino = tino_new(ti, type);
			if (ino == NULL) {
				rc = -ENOMEM;
				goto out;
			}
		}
		if (tar_meta(ti, e, ino) < 0) {
			tar_left_out(ti, raw, "owner ids out of range");
			goto out;
		}
		if (type == CF_BK_NODE_SYMLINK) {
			hl = archive_entry_symlink(e);
			if (hl == NULL)
				hl = archive_entry_symlink_utf8(e);
			if (hl == NULL || hl[0] == '\0' ||
			    strlen(hl) > CF_FS_RLINK_MAX) {
				tar_left_out(ti, raw, "an empty or too long "
				    "symlink target");
				goto out;
			}
			free(ino->target);
			ino->target = strdup(hl);
			if (ino->target == NULL) {
				rc = -ENOMEM;
				goto out;
			}
		}
		if (type == CF_BK_NODE_CHR || type == CF_BK_NODE_BLK)
			ino->rdev = archive_entry_rdev(e);
		if (type == CF_BK_NODE_FILE) {
			rc = ti->content(ti, e, ino);
			if (rc < 0)
				goto out;
		}
	}
	if (n == NULL) {
		n = tnode_add(ti, dir, comp[nc - 1]);
		if (n == NULL) {
			rc = -ENOMEM;
			goto out;
		}
	}
	/* A later entry of the same name replaces it, as tar -x would. */
	tino_put(n->ino);
	n->ino = ino;
	if (ti->taken != NULL)
		ti->taken(ti, ino);
	ino = NULL;
out:
	tino_put(ino);
	free(lpath);
	free(path);
	return rc;
}

void
tl_tarin_free(struct tl_tarin *ti)
{
	struct tl_tnode *n, *next;

	for (n = ti->all; n != NULL; n = next) {
		next = n->all;
		tino_put(n->ino);
		free(n->name);
		free(n);
	}
	free(ti->hash);
	if (ti->a != NULL)
		archive_read_free(ti->a);
}

int
tl_tarin_init(struct tl_tarin *ti, int64_t t0)
{
	memset(ti, 0, sizeof(*ti));
	ti->t0 = t0;
	ti->nhash = 1024;
	ti->hash = calloc(ti->nhash, sizeof(*ti->hash));
	if (ti->hash == NULL)
		return -ENOMEM;
	return 0;
}
