/*
 * fuzz_tar_entry.c - libFuzzer target for backup --tar's entry handling
 * (tools/tl_tarin.c, docs/backup.md "Tar input").  The input is read as a
 * tar archive by libarchive (every tar format it reads; no decompression
 * filters: they test libarchive, not coffer) and every header goes
 * through tl_tarin_entry, the code backup --tar runs, with a content sink
 * that reads the entry's data blocks and discards them.
 *
 * Invariants, checked against this file's own reading of each name (not
 * tl_tarin.c's):
 * - a taken entry's name, with a leading '/' and empty and "." components
 *   dropped, has no ".." component, 1..257 components of 1..255 bytes
 *   (256 directories and a name), a directory at most 256;
 * - every directory above a taken name is a directory in the tree (no
 *   name below a symlink or a file), and the name is in the tree with the
 *   entry's type (a hard link: the very inode of its target);
 * - a taken hard link names an entry taken earlier, not a directory;
 * - a taken entry's owner ids are within 0..2^32-1, a symlink's target
 *   is 1..4095 bytes;
 * - at the end every node has an inode, only directories have entries,
 *   each inode's reference count is the number of names pointing at it,
 *   and every directory's nodes encode as a tree blob
 *   (cf_bk_tree_encode: the format's name and duplicate rules), as
 *   tar_tree will encode them.
 * A breach aborts.  ASan catches leaks and use after free of the inodes
 * that replaced names and hard links share.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cf_backup.h"
#include "tl_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ENTRIES 1024	/* per input: keeps each run short */
#define MAX_TAKEN 1024

struct seen {
	char *name[MAX_TAKEN];	/* normalised names of taken entries */
	size_t n;
};

/* The content sink: reads every data block, keeps nothing. */
static int
sink(struct tl_tarin *ti, struct archive_entry *e, struct tl_tino *ino)
{
	const void *p;
	size_t len;
	la_int64_t off;
	uint64_t end = 0;
	int rc;

	for (;;) {
		rc = archive_read_data_block(ti->a, &p, &len, &off);
		if (rc == ARCHIVE_EOF)
			break;
		if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN)
			return -EIO;
		if (off >= 0 && (uint64_t)off + len > end)
			end = (uint64_t)off + len;
	}
	if (archive_entry_size_is_set(e) && archive_entry_size(e) >= 0 &&
	    (uint64_t)archive_entry_size(e) > end)
		end = (uint64_t)archive_entry_size(e);
	free(ino->items);
	ino->items = NULL;
	ino->nitems = 0;
	ino->size = end;
	return 0;
}

/*
 * "a//./b/" -> "a/b" into out (cap bytes); the number of components,
 * or -1 if a component is "..", over 255 bytes, or there are over 257.
 */
static int
normalise(const char *raw, char *out, size_t cap)
{
	const char *s = raw, *c;
	size_t len, o = 0;
	int n = 0;

	out[0] = '\0';
	for (;;) {
		while (*s == '/')
			s++;
		if (*s == '\0')
			break;
		c = strchr(s, '/');
		len = c != NULL ? (size_t)(c - s) : strlen(s);
		if (!(len == 1 && s[0] == '.')) {
			if (len == 2 && s[0] == '.' && s[1] == '.')
				return -1;
			if (len > 255 || n == 257 || o + len + 2 > cap)
				return -1;
			if (o > 0)
				out[o++] = '/';
			memcpy(out + o, s, len);
			o += len;
			out[o] = '\0';
			n++;
		}
		s += len;
	}
	return n;
}

static struct tl_tnode *
child(const struct tl_tnode *d, const char *name, size_t len)
{
	struct tl_tnode *c;

	for (c = d->child; c != NULL; c = c->sibling)
		if (strlen(c->name) == len && memcmp(c->name, name, len) == 0)
			return c;
	return NULL;
}

/* The node of a normalised name; every node above it must be a dir. */
static struct tl_tnode *
lookup(struct tl_tarin *ti, const char *norm)
{
	struct tl_tnode *d = &ti->root;
	const char *s = norm, *c;
	size_t len;

	for (;;) {
		c = strchr(s, '/');
		len = c != NULL ? (size_t)(c - s) : strlen(s);
		d = child(d, s, len);
		if (d == NULL)
			return NULL;
		if (c == NULL)
			return d;
		if (d->ino == NULL || d->ino->type != CF_BK_NODE_DIR)
			abort();	/* a name below a non-directory */
		s = c + 1;
	}
}

static int
seen_has(const struct seen *sn, const char *norm)
{
	size_t i;

	for (i = 0; i < sn->n; i++)
		if (strcmp(sn->name[i], norm) == 0)
			return 1;
	return 0;
}

static uint8_t
node_type(mode_t ft)
{
	switch (ft) {
	case AE_IFREG: return CF_BK_NODE_FILE;
	case AE_IFDIR: return CF_BK_NODE_DIR;
	case AE_IFLNK: return CF_BK_NODE_SYMLINK;
	case AE_IFIFO: return CF_BK_NODE_FIFO;
	case AE_IFSOCK: return CF_BK_NODE_SOCKET;
	case AE_IFCHR: return CF_BK_NODE_CHR;
	case AE_IFBLK: return CF_BK_NODE_BLK;
	default: return 0xff;
	}
}

/* What one taken entry must satisfy right after tl_tarin_entry. */
static void
check_taken(struct tl_tarin *ti, struct archive_entry *e, struct seen *sn,
    char *norm, char *lnorm, size_t cap)
{
	const char *raw = archive_entry_pathname(e), *hl, *tg;
	struct tl_tnode *n, *ln;
	la_int64_t uid = archive_entry_uid(e), gid = archive_entry_gid(e);
	int nc;

	if (raw == NULL)
		raw = archive_entry_pathname_utf8(e);
	if (raw == NULL)
		abort();	/* taken without a name */
	nc = normalise(raw, norm, cap);
	if (nc < 0)
		abort();	/* "..", a long component or too deep */
	if (nc == 0)
		return;		/* the root's own entry: no change */
	if (nc == 257 && archive_entry_hardlink(e) == NULL &&
	    archive_entry_filetype(e) == AE_IFDIR)
		abort();	/* a directory deeper than restore goes */
	n = lookup(ti, norm);
	if (n == NULL || n->ino == NULL)
		abort();
	hl = archive_entry_hardlink(e);
	if (hl != NULL) {
		if (normalise(hl, lnorm, cap) <= 0 || !seen_has(sn, lnorm))
			abort();	/* a link to a name not taken before */
		ln = lookup(ti, lnorm);
		if (ln == NULL || ln->ino != n->ino ||
		    n->ino->type == CF_BK_NODE_DIR)
			abort();
	} else {
		if (uid < 0 || uid > UINT32_MAX || gid < 0 ||
		    gid > UINT32_MAX)
			abort();
		if (n->ino->type != node_type(archive_entry_filetype(e)))
			abort();
		if (n->ino->type == CF_BK_NODE_SYMLINK) {
			tg = n->ino->target;
			if (tg == NULL || tg[0] == '\0' || strlen(tg) > 4095)
				abort();
		}
	}
	if (!seen_has(sn, norm) && sn->n < MAX_TAKEN) {
		sn->name[sn->n] = strdup(norm);
		if (sn->name[sn->n] != NULL)
			sn->n++;
	}
}

/* Counts names per inode into the inodes' own field, then compares. */
struct icount {
	const struct tl_tino *ino;
	size_t names;
};

static void
count_names(const struct tl_tnode *d, struct icount *ic, size_t *nic,
    size_t cap)
{
	const struct tl_tnode *c;
	size_t i;

	for (c = d->child; c != NULL; c = c->sibling) {
		for (i = 0; i < *nic; i++)
			if (ic[i].ino == c->ino)
				break;
		if (i == *nic) {
			if (*nic == cap)
				abort();
			ic[(*nic)++].ino = c->ino;
			ic[i].names = 0;
		}
		ic[i].names++;
		if (c->ino->type == CF_BK_NODE_DIR)
			count_names(c, ic, nic, cap);
	}
}

/* Every directory's nodes, as tar_tree gives them, must encode. */
static void
check_dir(const struct tl_tnode *d, int depth)
{
	struct cf_bk_node *nodes;
	struct cf_bk_tree tree;
	const struct tl_tnode *c;
	unsigned char *buf = NULL;
	size_t i = 0, len, count = 0;
	int rc;

	if (depth > 257)
		abort();
	for (c = d->child; c != NULL; c = c->sibling)
		count++;
	if (count != d->nchild)
		abort();
	nodes = calloc(count + 1, sizeof(*nodes));
	if (nodes == NULL)
		return;
	for (c = d->child; c != NULL; c = c->sibling, i++) {
		if (c->ino == NULL)
			abort();
		if (c->ino->type != CF_BK_NODE_DIR && c->child != NULL)
			abort();	/* entries below a non-directory */
		nodes[i].type = c->ino->type;
		nodes[i].name = c->name;
		nodes[i].mode = c->ino->mode;
		nodes[i].uid = c->ino->uid;
		nodes[i].gid = c->ino->gid;
		nodes[i].xattrs = c->ino->xattrs;
		nodes[i].nxattrs = c->ino->nxattrs;
		if (c->ino->type == CF_BK_NODE_DIR) {
			check_dir(c, depth + 1);
			continue;
		}
		nodes[i].link_group = c->ino->refs > 1 ? c->ino->group : 0;
		if (c->ino->type == CF_BK_NODE_FILE)
			nodes[i].size = c->ino->size;
		nodes[i].target = c->ino->target;
		nodes[i].rdev = c->ino->rdev;
	}
	tree.nodes = nodes;
	tree.count = count;
	tree.mem_ = NULL;
	rc = cf_bk_tree_encode(&tree, &buf, &len);
	if (rc != 0 && rc != -ENOMEM)
		abort();	/* backup --tar would fail at the end */
	free(buf);
	free(nodes);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char norm[1 << 17], lnorm[1 << 17];
	struct tl_tarin ti;
	struct archive_entry *e;
	struct seen *sn;
	struct icount *ic = NULL;
	size_t i, nic = 0, nent = 0;
	uint64_t before;
	int rc, ar;

	sn = calloc(1, sizeof(*sn));
	if (sn == NULL)
		return 0;
	if (tl_tarin_init(&ti, 1) < 0)
		goto out;
	ti.quiet = 1;
	ti.content = sink;
	ti.a = archive_read_new();
	if (ti.a == NULL)
		goto out;
	archive_read_support_format_tar(ti.a);
	if (archive_read_open_memory(ti.a, data, size) != ARCHIVE_OK)
		goto out;
	while (nent++ < MAX_ENTRIES) {
		ar = archive_read_next_header(ti.a, &e);
		if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN)
			break;		/* the end, or damage: stop */
		before = ti.left_out;
		rc = tl_tarin_entry(&ti, e);
		if (rc < 0) {
			if (rc != -EIO && rc != -ENOMEM)
				abort();
			break;
		}
		if (rc > 0 || ti.left_out > before + 1)
			abort();
		if (ti.left_out == before)
			check_taken(&ti, e, sn, norm, lnorm, sizeof(norm));
	}
	/* Each inode's count is the names that point at it. */
	ic = calloc(ti.nnodes + 1, sizeof(*ic));
	if (ic == NULL)
		goto out;
	count_names(&ti.root, ic, &nic, ti.nnodes + 1);
	for (i = 0; i < nic; i++)
		if (ic[i].ino == NULL || ic[i].ino->refs != ic[i].names)
			abort();
	check_dir(&ti.root, 0);
out:
	free(ic);
	tl_tarin_free(&ti);
	for (i = 0; i < sn->n; i++)
		free(sn->name[i]);
	free(sn);
	return 0;
}
