/*
 * bk_class.c - data classes inside a tenant (docs/retention.md, Data
 * classes): path patterns that say which files are "billing" or "logs",
 * the rewrite of a snapshot's tree without a class's files (so files
 * past their class's period cannot be restored from old snapshots), and
 * the comparison of two trees that tells a backup that found changes
 * (write activity) from one that found none.
 *
 * Patterns are relative to the snapshot's root, '/'-separated; a
 * segment "**" matches any number of segments (none too), any other
 * segment is an fnmatch(3) pattern without FNM_PATHNAME (it never sees a
 * '/').  A pattern that matches a directory takes everything below it.
 *
 * It reads no configuration and no clock: tools/cmd_retention.c parses
 * coffer.conf and decides which classes are due.  It deletes nothing: the
 * old snapshot is removed by the caller, the blobs by cf_bk_prune.
 */
#include <errno.h>
#include <fnmatch.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cf_backup.h"

#define MAX_DEPTH 256		/* directory nesting followed */

/*
 * Collapses "**" segments that follow each other (same meaning) and
 * returns how many are left: each one multiplies the work of a match by
 * the path's depth.
 */
static int
globstars(char *pat)
{
	char *seg = pat, *next;
	int n = 0, prev = 0;

	while (seg != NULL) {
		next = strchr(seg, '/');
		if ((next ? next - seg : (ptrdiff_t)strlen(seg)) == 2 &&
		    seg[0] == '*' && seg[1] == '*') {
			if (prev && next != NULL) {
				/* drop this "**" and its '/' */
				memmove(seg, next + 1, strlen(next + 1) + 1);
				continue;
			}
			if (prev) {
				/* a trailing "**" after "**": drop it */
				seg[-1] = '\0';
				break;
			}
			prev = 1;
			n++;
		} else {
			prev = 0;
		}
		seg = next ? next + 1 : NULL;
	}
	return n;
}

int
cf_bk_class_paths(struct cf_bk_class *c, const char *list)
{
	const char *p = list, *e;
	size_t len;

	c->npatterns = 0;
	while (*p != '\0') {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '\0')
			break;
		e = p;
		while (*e != '\0' && *e != ',')
			e++;
		len = (size_t)(e - p);
		while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
			len--;
		while (len > 1 && p[0] == '/') {	/* "/x" is "x" */
			p++;
			len--;
		}
		if (len == 0 || p[0] == '/' || len >= CF_BK_CLASS_PATTERN_MAX ||
		    c->npatterns == CF_BK_CLASS_PATTERNS)
			return -EINVAL;
		memcpy(c->patterns[c->npatterns], p, len);
		c->patterns[c->npatterns][len] = '\0';
		if (globstars(c->patterns[c->npatterns]) > 4)
			return -EINVAL;	/* matching would be too slow */
		c->npatterns++;
		p = e;
	}
	return c->npatterns == 0 ? -EINVAL : 0;
}

/*
 * 1 if the segments of pattern pat match a prefix of path made of whole
 * segments (so a matched directory takes its subtree), else 0.
 */
static int
match_segs(const char *pat, const char *path, int depth)
{
	char seg[CF_BK_CLASS_PATTERN_MAX], name[256];
	const char *pe, *ne;
	size_t pl, nl;

	if (depth > 64)
		return 0;
	if (*pat == '\0')
		return 1;	/* pattern used up: path is at or below it */
	pe = strchr(pat, '/');
	pl = pe ? (size_t)(pe - pat) : strlen(pat);
	if (pl == 2 && pat[0] == '*' && pat[1] == '*') {
		const char *rest = pe ? pe + 1 : "";

		/* ** takes zero segments, or one and tries again. */
		if (match_segs(rest, path, depth + 1))
			return 1;
		if (*path == '\0')
			return 0;
		ne = strchr(path, '/');
		/* ** took the last segment: only an empty rest matches. */
		return ne != NULL ? match_segs(pat, ne + 1, depth + 1) :
		    *rest == '\0';
	}
	if (*path == '\0' || pl >= sizeof(seg))
		return 0;
	ne = strchr(path, '/');
	nl = ne ? (size_t)(ne - path) : strlen(path);
	if (nl >= sizeof(name))
		return 0;
	memcpy(seg, pat, pl);
	seg[pl] = '\0';
	memcpy(name, path, nl);
	name[nl] = '\0';
	if (fnmatch(seg, name, 0) != 0)
		return 0;
	return match_segs(pe ? pe + 1 : "", ne ? ne + 1 : "", depth + 1);
}

int
cf_bk_class_match(const struct cf_bk_class *c, const char *path)
{
	size_t i;

	while (*path == '/')
		path++;
	if (*path == '\0')
		return 0;	/* the root itself is never a class's */
	for (i = 0; i < c->npatterns; i++)
		if (match_segs(c->patterns[i], path, 0))
			return 1;
	return 0;
}

/*
 * 1 if the segments of path (a directory) can be consumed by a prefix of
 * pattern pat, so that something below the directory may match: a "**"
 * reached, or the path used up first.  Errs towards 1.
 */
static int
prefix_segs(const char *pat, const char *path, int depth)
{
	char seg[CF_BK_CLASS_PATTERN_MAX], name[256];
	const char *pe, *ne;
	size_t pl, nl;

	if (depth > 64 || *path == '\0' || *pat == '\0')
		return 1;
	pe = strchr(pat, '/');
	pl = pe ? (size_t)(pe - pat) : strlen(pat);
	if (pl == 2 && pat[0] == '*' && pat[1] == '*')
		return 1;
	ne = strchr(path, '/');
	nl = ne ? (size_t)(ne - path) : strlen(path);
	if (pl >= sizeof(seg) || nl >= sizeof(name))
		return 1;
	memcpy(seg, pat, pl);
	seg[pl] = '\0';
	memcpy(name, path, nl);
	name[nl] = '\0';
	if (fnmatch(seg, name, 0) != 0)
		return 0;
	return prefix_segs(pe ? pe + 1 : "", ne ? ne + 1 : "", depth + 1);
}

int
cf_bk_class_may_contain(const struct cf_bk_class *c, const char *dir)
{
	size_t i;

	while (*dir == '/')
		dir++;
	for (i = 0; i < c->npatterns; i++)
		if (prefix_segs(c->patterns[i], dir, 0))
			return 1;
	return 0;
}

/* ---- tree rewrite -------------------------------------------------------- */

struct filter {
	struct cf_bk_writer *w;
	int (*drop)(void *arg, const char *path, const struct cf_bk_node *n);
	void *arg;
	struct cf_bk_filter_stats *st;
};

/* Counts the files and bytes of a dropped subtree. */
static int
count_tree(struct filter *f, const unsigned char id[CF_BK_ID_BYTES],
    int depth)
{
	struct cf_bk_tree *t = NULL;
	size_t i;
	int rc;

	if (depth > MAX_DEPTH)
		return -ELOOP;
	rc = cf_bk_writer_tree_load(f->w, id, &t);
	if (rc < 0)
		return rc;
	for (i = 0; rc == 0 && i < t->count; i++) {
		if (t->nodes[i].type == CF_BK_NODE_DIR)
			rc = count_tree(f, t->nodes[i].subtree, depth + 1);
		else if (t->nodes[i].type == CF_BK_NODE_FILE) {
			f->st->files++;
			f->st->bytes += t->nodes[i].size;
		}
	}
	cf_bk_tree_free(t);
	return rc;
}

static int
filter_tree(struct filter *f, const unsigned char id[CF_BK_ID_BYTES],
    const char *dir, int depth, unsigned char out[CF_BK_ID_BYTES])
{
	struct cf_bk_tree *t = NULL, nt;
	char *path = NULL;
	size_t i, dl = strlen(dir), cap = dl + 258;
	int rc, d, changed = 0;

	if (depth > MAX_DEPTH)
		return -ELOOP;
	memset(&nt, 0, sizeof(nt));
	rc = cf_bk_writer_tree_load(f->w, id, &t);
	if (rc < 0)
		return rc;
	nt.nodes = calloc(t->count ? t->count : 1, sizeof(*nt.nodes));
	path = malloc(cap);
	if (nt.nodes == NULL || path == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < t->count; i++) {
		struct cf_bk_node n = t->nodes[i];

		snprintf(path, cap, "%s%s%s", dir, dl ? "/" : "", n.name);
		d = f->drop(f->arg, path, &n);
		if (d == 1) {
			changed = 1;
			if (n.type == CF_BK_NODE_DIR)
				rc = count_tree(f, n.subtree, depth + 1);
			else if (n.type == CF_BK_NODE_FILE) {
				f->st->files++;
				f->st->bytes += n.size;
			}
			if (rc < 0)
				goto out;
			continue;
		}
		if (n.type == CF_BK_NODE_DIR && d == 0) {
			unsigned char sub[CF_BK_ID_BYTES];

			rc = filter_tree(f, n.subtree, path, depth + 1, sub);
			if (rc < 0)
				goto out;
			if (memcmp(sub, n.subtree, CF_BK_ID_BYTES) != 0) {
				memcpy(n.subtree, sub, CF_BK_ID_BYTES);
				changed = 1;
			}
		}
		nt.nodes[nt.count++] = n;
	}
	if (!changed) {
		memcpy(out, id, CF_BK_ID_BYTES);
		rc = 0;
		goto out;
	}
	/* The node strings point into t, which lives until encoded. */
	rc = cf_bk_writer_add_tree(f->w, &nt, out);
out:
	free(path);
	free(nt.nodes);
	cf_bk_tree_free(t);
	return rc;
}

int
cf_bk_tree_filter(struct cf_bk_writer *w,
    const unsigned char root[CF_BK_ID_BYTES],
    int (*drop)(void *arg, const char *path, const struct cf_bk_node *n),
    void *arg,
    unsigned char out[CF_BK_ID_BYTES], struct cf_bk_filter_stats *st)
{
	struct filter f = { w, drop, arg, st };

	memset(st, 0, sizeof(*st));
	return filter_tree(&f, root, "", 0, out);
}

/* ---- change detection ---------------------------------------------------- */

/* 1 if two nodes of the same name differ other than by access time. */
static int
node_differs(const struct cf_bk_node *a, const struct cf_bk_node *b)
{
	size_t i;

	if (a->type != b->type || a->mode != b->mode || a->uid != b->uid ||
	    a->gid != b->gid || a->mtime != b->mtime ||
	    a->ctime != b->ctime || a->size != b->size ||
	    a->nitems != b->nitems || a->nxattrs != b->nxattrs)
		return 1;
	if ((a->target != NULL) != (b->target != NULL) ||
	    (a->target != NULL && strcmp(a->target, b->target) != 0))
		return 1;
	for (i = 0; i < a->nitems; i++)
		if (a->items[i].hole != b->items[i].hole ||
		    memcmp(a->items[i].id, b->items[i].id, CF_BK_ID_BYTES) != 0)
			return 1;
	return 0;
}

static int
changed_tree(struct cf_bk_repo *r, const unsigned char a[CF_BK_ID_BYTES],
    const unsigned char b[CF_BK_ID_BYTES], int depth)
{
	struct cf_bk_tree *ta = NULL, *tb = NULL;
	size_t i;
	int rc;

	if (memcmp(a, b, CF_BK_ID_BYTES) == 0)
		return 0;
	if (depth > MAX_DEPTH)
		return -ELOOP;
	rc = cf_bk_repo_tree_load(r, a, &ta);
	if (rc == 0)
		rc = cf_bk_repo_tree_load(r, b, &tb);
	if (rc < 0)
		goto out;
	if (ta->count != tb->count) {
		rc = 1;
		goto out;
	}
	/* Both sorted by name after decode. */
	for (i = 0; rc == 0 && i < ta->count; i++) {
		const struct cf_bk_node *x = &ta->nodes[i], *y = &tb->nodes[i];

		if (strcmp(x->name, y->name) != 0 || node_differs(x, y))
			rc = 1;
		else if (x->type == CF_BK_NODE_DIR)
			rc = changed_tree(r, x->subtree, y->subtree,
			    depth + 1);
	}
out:
	cf_bk_tree_free(ta);
	cf_bk_tree_free(tb);
	return rc;
}

int
cf_bk_tree_changed(struct cf_bk_repo *r, const unsigned char a[CF_BK_ID_BYTES],
    const unsigned char b[CF_BK_ID_BYTES])
{
	return changed_tree(r, a, b, 0);
}

/* ---- copy into another repository -------------------------------------- */

/* Subtrees already copied whole: source tree id -> copy, with counts. */
struct memo_ent {
	unsigned char src[CF_BK_ID_BYTES], dst[CF_BK_ID_BYTES];
	uint64_t files, bytes;
	int used;
};

struct cf_bk_copy_memo {
	struct memo_ent *e;
	size_t cap, n;			/* cap a power of two */
};

int
cf_bk_copy_memo_new(struct cf_bk_copy_memo **out)
{
	struct cf_bk_copy_memo *m = calloc(1, sizeof(*m));

	*out = NULL;
	if (m == NULL)
		return -ENOMEM;
	m->cap = 256;
	m->e = calloc(m->cap, sizeof(*m->e));
	if (m->e == NULL) {
		free(m);
		return -ENOMEM;
	}
	*out = m;
	return 0;
}

void
cf_bk_copy_memo_free(struct cf_bk_copy_memo *m)
{
	if (m == NULL)
		return;
	free(m->e);
	free(m);
}

static size_t
memo_slot(const struct cf_bk_copy_memo *m, const unsigned char *id)
{
	size_t h, i;

	memcpy(&h, id, sizeof(h));	/* ids are hashes: any bytes will do */
	for (i = h & (m->cap - 1); m->e[i].used &&
	    memcmp(m->e[i].src, id, CF_BK_ID_BYTES) != 0;
	    i = (i + 1) & (m->cap - 1))
		;
	return i;
}

static int
memo_put(struct cf_bk_copy_memo *m, const unsigned char *src,
    const unsigned char *dst, uint64_t files, uint64_t bytes)
{
	struct memo_ent *e;
	size_t i;

	if ((m->n + 1) * 2 > m->cap) {
		struct cf_bk_copy_memo big = { NULL, m->cap * 2, 0 };

		big.e = calloc(big.cap, sizeof(*big.e));
		if (big.e == NULL)
			return -ENOMEM;
		for (i = 0; i < m->cap; i++)
			if (m->e[i].used) {
				big.e[memo_slot(&big, m->e[i].src)] = m->e[i];
				big.n++;
			}
		free(m->e);
		*m = big;
	}
	e = &m->e[memo_slot(m, src)];
	if (!e->used)
		m->n++;
	memcpy(e->src, src, CF_BK_ID_BYTES);
	memcpy(e->dst, dst, CF_BK_ID_BYTES);
	e->files = files;
	e->bytes = bytes;
	e->used = 1;
	return 0;
}

struct copy {
	struct cf_bk_repo *src;
	struct cf_bk_writer *w;
	const struct cf_bk_class *c;
	struct cf_bk_copy_memo *memo;
	struct cf_bk_filter_stats *st;
};

/* Copies a file's data blobs: items (malloc'd) with the new blob ids. */
static int
copy_items(struct copy *k, const struct cf_bk_node *n,
    struct cf_bk_item **out)
{
	struct cf_bk_item *it;
	unsigned char *buf;
	size_t i, len;
	int rc = 0;

	*out = NULL;
	if (n->nitems == 0)
		return 0;
	it = calloc(n->nitems, sizeof(*it));
	if (it == NULL)
		return -ENOMEM;
	for (i = 0; rc == 0 && i < n->nitems; i++) {
		it[i] = n->items[i];
		if (n->items[i].hole > 0)
			continue;
		rc = cf_bk_repo_blob_load(k->src, CF_BK_BLOB_DATA,
		    n->items[i].id, &buf, &len);
		if (rc < 0)
			break;
		rc = cf_bk_writer_add(k->w, CF_BK_BLOB_DATA, buf, len,
		    it[i].id);
		free(buf);
	}
	if (rc < 0) {
		free(it);
		return rc;
	}
	*out = it;
	return 0;
}

/*
 * Copies the tree id (at dir) into k->w: with all set, every entry;
 * otherwise only entries of the class (directories searched, dropped if
 * nothing of the class is below).  *count receives the entries kept.
 */
static int
copy_tree(struct copy *k, const unsigned char id[CF_BK_ID_BYTES],
    const char *dir, int all, int depth, unsigned char out[CF_BK_ID_BYTES],
    size_t *count)
{
	struct cf_bk_tree *t = NULL, nt;
	struct cf_bk_item **items = NULL;
	char *path = NULL;
	size_t i, dl = strlen(dir), cap = dl + 258, sub_n;
	uint64_t files0, bytes0;
	int rc;

	*count = 0;
	if (depth > MAX_DEPTH)
		return -ELOOP;
	if (all && k->memo != NULL) {
		const struct memo_ent *e = &k->memo->e[memo_slot(k->memo, id)];

		if (e->used) {
			/* Copied whole before (another snapshot). */
			memcpy(out, e->dst, CF_BK_ID_BYTES);
			k->st->files += e->files;
			k->st->bytes += e->bytes;
			*count = 1;
			return 0;
		}
	}
	files0 = k->st->files;
	bytes0 = k->st->bytes;
	memset(&nt, 0, sizeof(nt));
	rc = cf_bk_repo_tree_load(k->src, id, &t);
	if (rc < 0)
		return rc;
	nt.nodes = calloc(t->count ? t->count : 1, sizeof(*nt.nodes));
	items = calloc(t->count ? t->count : 1, sizeof(*items));
	path = malloc(cap);
	if (nt.nodes == NULL || items == NULL || path == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < t->count; i++) {
		struct cf_bk_node n = t->nodes[i];
		int in = all;

		snprintf(path, cap, "%s%s%s", dir, dl ? "/" : "", n.name);
		if (!in)
			in = cf_bk_class_match(k->c, path);
		if (n.type == CF_BK_NODE_DIR) {
			rc = copy_tree(k, n.subtree, path, in, depth + 1,
			    n.subtree, &sub_n);
			if (rc < 0)
				goto out;
			if (!in && sub_n == 0)
				continue;	/* nothing of the class below */
		} else if (!in) {
			continue;
		} else if (n.type == CF_BK_NODE_FILE) {
			rc = copy_items(k, &n, &items[nt.count]);
			if (rc < 0)
				goto out;
			n.items = items[nt.count];
			k->st->files++;
			k->st->bytes += n.size;
		}
		nt.nodes[nt.count++] = n;
	}
	*count = nt.count;
	rc = cf_bk_writer_add_tree(k->w, &nt, out);
	if (rc == 0 && all && k->memo != NULL)
		rc = memo_put(k->memo, id, out, k->st->files - files0,
		    k->st->bytes - bytes0);
out:
	for (i = 0; items != NULL && i < (t ? t->count : 0); i++)
		free(items[i]);
	free(items);
	free(path);
	free(nt.nodes);
	cf_bk_tree_free(t);
	return rc;
}

int
cf_bk_tree_copy_class(struct cf_bk_repo *src, struct cf_bk_writer *w,
    const unsigned char root[CF_BK_ID_BYTES], const struct cf_bk_class *c,
    struct cf_bk_copy_memo *memo, unsigned char out[CF_BK_ID_BYTES],
    struct cf_bk_filter_stats *st)
{
	struct copy k = { src, w, c, memo, st };
	size_t n;

	memset(st, 0, sizeof(*st));
	return copy_tree(&k, root, "", 0, 0, out, &n);
}
