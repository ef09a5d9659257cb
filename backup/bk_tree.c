/*
 * bk_tree.c - the tree blob codec (docs/format/repository.md: Trees):
 * one directory's nodes with their metadata, xattrs and content, in a
 * canonical binary encoding.
 *
 * The decoder is strict ([BK-TREE-1]): a name that could lead a restore
 * out of its target (".", "..", "/", NUL) is malformed here, before any
 * restore code sees it.  It runs twice over the input: once to check and
 * count, once to fill one allocation, so a hostile tree cannot make it
 * allocate more than a small multiple of its own size.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bk_int.h"

#define NODE_FIXED 72U
#define MAX_NODES 1048576U
#define MAX_XATTRS 1024U
#define MAX_NAME 255U
#define MAX_VALUE 65536U
#define MAX_TARGET 4095U
#define ITEM_BLOB 1
#define ITEM_HOLE 2
#define FLAG_STORE_ID 0x01	/* a file: file id, gen, ino follow its items */
#define STORE_ID_BYTES (CF_BK_FILE_ID_BYTES + 16U)

/* Bytewise order, a proper prefix first. */
static int
name_cmp(const unsigned char *a, size_t al, const unsigned char *b,
    size_t bl)
{
	int c = memcmp(a, b, al < bl ? al : bl);

	if (c != 0)
		return c;
	return al < bl ? -1 : al > bl;
}

static int
node_name_ok(const unsigned char *n, size_t len)
{
	if (len == 0 || len > MAX_NAME)
		return 0;
	if ((len == 1 && n[0] == '.') || (len == 2 && n[0] == '.' &&
	    n[1] == '.'))
		return 0;
	return memchr(n, '/', len) == NULL && memchr(n, '\0', len) == NULL;
}

/* ---- decoding ---------------------------------------------------------------- */

struct counts {
	size_t nodes, items, xattrs, bytes;
};

struct fill {
	struct cf_bk_node *nodes;
	struct cf_bk_item *items;
	struct cf_bk_xattr *xattrs;
	char *bytes;
};

/* Copies n bytes plus a NUL into the string area. */
static const char *
put_str(struct fill *f, const unsigned char *s, size_t n)
{
	char *at = f->bytes;

	memcpy(at, s, n);
	at[n] = '\0';
	f->bytes += n + 1;
	return at;
}

/*
 * One pass: checks everything; with f == NULL counts what the fill pass
 * will need, otherwise fills.
 */
static int
walk(const unsigned char *buf, size_t len, struct counts *c, struct fill *f)
{
	const unsigned char *prev = NULL;
	size_t prevlen = 0, off = 4, count, i, j;

	if (len < 4)
		return -EPROTO;
	count = bk_rd32(buf);
	if (count > MAX_NODES || count > (len - 4) / NODE_FIXED)
		return -EPROTO;
	c->nodes = count;
	for (i = 0; i < count; i++) {
		const unsigned char *p = buf + off, *name, *xprev = NULL;
		size_t nlen, nx, nitems, xprevlen = 0;
		uint8_t type;
		uint64_t size, rdev, group, holes = 0;
		struct cf_bk_node *nd = f != NULL ? &f->nodes[i] : NULL;

		if (len - off < NODE_FIXED)
			return -EPROTO;
		type = p[0];
		nlen = bk_rd16(p + 2);
		size = bk_rd64(p + 40);
		rdev = bk_rd64(p + 48);
		group = bk_rd64(p + 56);
		nx = bk_rd16(p + 64);
		nitems = bk_rd32(p + 68);
		if (type < CF_BK_NODE_FILE || type > CF_BK_NODE_BLK ||
		    (p[1] & ~FLAG_STORE_ID) != 0 ||
		    (p[1] != 0 && type != CF_BK_NODE_FILE) ||
		    bk_rd16(p + 66) != 0 ||
		    bk_rd32(p + 4) > 07777 || nx > MAX_XATTRS)
			return -EPROTO;
		if (type != CF_BK_NODE_FILE && size != 0)
			return -EPROTO;
		if (type != CF_BK_NODE_CHR && type != CF_BK_NODE_BLK &&
		    rdev != 0)
			return -EPROTO;
		if (type == CF_BK_NODE_DIR && group != 0)
			return -EPROTO;
		off += NODE_FIXED;
		if (len - off < nlen)
			return -EPROTO;
		name = buf + off;
		if (!node_name_ok(name, nlen))
			return -EPROTO;
		if (prev != NULL && name_cmp(prev, prevlen, name, nlen) >= 0)
			return -EPROTO;
		prev = name;
		prevlen = nlen;
		off += nlen;
		c->bytes += nlen + 1;
		if (nd != NULL) {
			nd->type = type;
			nd->mode = bk_rd32(p + 4);
			nd->uid = bk_rd32(p + 8);
			nd->gid = bk_rd32(p + 12);
			nd->atime = (int64_t)bk_rd64(p + 16);
			nd->mtime = (int64_t)bk_rd64(p + 24);
			nd->ctime = (int64_t)bk_rd64(p + 32);
			nd->size = size;
			nd->rdev = rdev;
			nd->link_group = group;
			nd->name = put_str(f, name, nlen);
			nd->xattrs = nx ? f->xattrs : NULL;
			nd->nxattrs = nx;
		}
		for (j = 0; j < nx; j++) {
			const unsigned char *xn;
			size_t xl, vl;

			if (len - off < 1)
				return -EPROTO;
			xl = buf[off];
			if (xl == 0 || len - off - 1 < xl + 4)
				return -EPROTO;
			xn = buf + off + 1;
			if (memchr(xn, '\0', xl) != NULL)
				return -EPROTO;
			if (xprev != NULL &&
			    name_cmp(xprev, xprevlen, xn, xl) >= 0)
				return -EPROTO;
			xprev = xn;
			xprevlen = xl;
			vl = bk_rd32(xn + xl);
			off += 1 + xl + 4;
			if (vl > MAX_VALUE || len - off < vl)
				return -EPROTO;
			if (f != NULL) {
				struct cf_bk_xattr *x = f->xattrs++;

				x->name = put_str(f, xn, xl);
				x->value = (const unsigned char *)
				    put_str(f, buf + off, vl);
				x->value_len = vl;
			}
			c->bytes += xl + 1 + vl + 1;
			off += vl;
		}
		c->xattrs += nx;
		switch (type) {
		case CF_BK_NODE_FILE:
			if (nitems > (len - off))
				return -EPROTO;
			if (nd != NULL) {
				nd->items = nitems ? f->items : NULL;
				nd->nitems = nitems;
			}
			for (j = 0; j < nitems; j++) {
				if (len - off < 1)
					return -EPROTO;
				if (buf[off] == ITEM_BLOB) {
					if (len - off - 1 < CF_BK_ID_BYTES)
						return -EPROTO;
					if (f != NULL) {
						memcpy(f->items->id,
						    buf + off + 1,
						    CF_BK_ID_BYTES);
						f->items->hole = 0;
						f->items++;
					}
					off += 1 + CF_BK_ID_BYTES;
				} else if (buf[off] == ITEM_HOLE) {
					uint64_t h;

					if (len - off - 1 < 8)
						return -EPROTO;
					h = bk_rd64(buf + off + 1);
					if (h == 0 || h > size - holes)
						return -EPROTO;
					holes += h;
					if (f != NULL) {
						memset(f->items->id, 0,
						    CF_BK_ID_BYTES);
						f->items->hole = h;
						f->items++;
					}
					off += 9;
				} else {
					return -EPROTO;
				}
			}
			c->items += nitems;
			if (p[1] & FLAG_STORE_ID) {
				uint64_t g;

				if (len - off < STORE_ID_BYTES)
					return -EPROTO;
				g = bk_rd64(buf + off + CF_BK_FILE_ID_BYTES);
				if (g == 0)
					return -EPROTO;
				if (nd != NULL) {
					memcpy(nd->file_id, buf + off,
					    CF_BK_FILE_ID_BYTES);
					nd->gen = g;
					nd->ino = bk_rd64(buf + off +
					    CF_BK_FILE_ID_BYTES + 8);
				}
				off += STORE_ID_BYTES;
			}
			break;
		case CF_BK_NODE_DIR:
			if (nitems != 1 || len - off < CF_BK_ID_BYTES)
				return -EPROTO;
			if (nd != NULL)
				memcpy(nd->subtree, buf + off, CF_BK_ID_BYTES);
			off += CF_BK_ID_BYTES;
			break;
		case CF_BK_NODE_SYMLINK:
			if (nitems == 0 || nitems > MAX_TARGET ||
			    len - off < nitems ||
			    memchr(buf + off, '\0', nitems) != NULL)
				return -EPROTO;
			if (nd != NULL)
				nd->target = put_str(f, buf + off, nitems);
			c->bytes += nitems + 1;
			off += nitems;
			break;
		default:
			if (nitems != 0)
				return -EPROTO;
			break;
		}
	}
	return off == len ? 0 : -EPROTO;
}

/* Adjacent holes: checked on the filled nodes (simpler than in walk). */
static int
holes_ok(const struct cf_bk_tree *t)
{
	size_t i, j;

	for (i = 0; i < t->count; i++) {
		const struct cf_bk_node *n = &t->nodes[i];

		for (j = 1; j < n->nitems; j++)
			if (n->items[j].hole != 0 && n->items[j - 1].hole != 0)
				return 0;
	}
	return 1;
}

int
cf_bk_tree_decode(struct cf_bk_tree **out, const unsigned char *buf,
    size_t len)
{
	struct counts c = { 0, 0, 0, 0 };
	struct fill f;
	struct cf_bk_tree *t = NULL;
	size_t total;
	char *mem;
	int rc;

	*out = NULL;
	if (len > CF_BK_BLOB_MAX)
		return -EPROTO;
	rc = walk(buf, len, &c, NULL);
	if (rc < 0)
		return rc;
	total = c.nodes * sizeof(struct cf_bk_node) +
	    c.items * sizeof(struct cf_bk_item) +
	    c.xattrs * sizeof(struct cf_bk_xattr) + c.bytes + 1;
	t = calloc(1, sizeof(*t));
	mem = calloc(1, total);
	if (t == NULL || mem == NULL) {
		free(t);
		free(mem);
		return -ENOMEM;
	}
	t->mem_ = mem;
	t->count = c.nodes;
	f.nodes = t->nodes = (struct cf_bk_node *)(void *)mem;
	f.items = (struct cf_bk_item *)(void *)(f.nodes + c.nodes);
	f.xattrs = (struct cf_bk_xattr *)(void *)(f.items + c.items);
	f.bytes = (char *)(f.xattrs + c.xattrs);
	memset(&c, 0, sizeof(c));
	rc = walk(buf, len, &c, &f);
	if (rc == 0 && !holes_ok(t))
		rc = -EPROTO;
	if (rc < 0) {
		cf_bk_tree_free(t);
		return rc;
	}
	*out = t;
	return 0;
}

void
cf_bk_tree_free(struct cf_bk_tree *t)
{
	if (t == NULL)
		return;
	free(t->mem_);
	free(t);
}

/* ---- encoding ---------------------------------------------------------------- */

static int
node_cmp(const void *a, const void *b)
{
	const struct cf_bk_node *x = *(const struct cf_bk_node *const *)a;
	const struct cf_bk_node *y = *(const struct cf_bk_node *const *)b;

	return name_cmp((const unsigned char *)x->name, strlen(x->name),
	    (const unsigned char *)y->name, strlen(y->name));
}

static int
xattr_cmp(const void *a, const void *b)
{
	const struct cf_bk_xattr *x = *(const struct cf_bk_xattr *const *)a;
	const struct cf_bk_xattr *y = *(const struct cf_bk_xattr *const *)b;

	return name_cmp((const unsigned char *)x->name, strlen(x->name),
	    (const unsigned char *)y->name, strlen(y->name));
}

/* Size of one node's encoding, or 0 if it breaks a rule. */
static size_t
node_size(const struct cf_bk_node *n)
{
	size_t total, nl = strlen(n->name), i;
	uint64_t holes = 0;

	if (!node_name_ok((const unsigned char *)n->name, nl) ||
	    n->type < CF_BK_NODE_FILE || n->type > CF_BK_NODE_BLK ||
	    n->mode > 07777 || n->nxattrs > MAX_XATTRS)
		return 0;
	if ((n->type != CF_BK_NODE_FILE && (n->size != 0 || n->nitems ||
	    n->gen != 0)) ||
	    (n->type != CF_BK_NODE_CHR && n->type != CF_BK_NODE_BLK &&
	    n->rdev != 0) || (n->type == CF_BK_NODE_DIR && n->link_group))
		return 0;
	total = NODE_FIXED + nl;
	for (i = 0; i < n->nxattrs; i++) {
		size_t xl = strlen(n->xattrs[i].name);

		if (xl == 0 || xl > MAX_NAME ||
		    n->xattrs[i].value_len > MAX_VALUE)
			return 0;
		total += 1 + xl + 4 + n->xattrs[i].value_len;
	}
	switch (n->type) {
	case CF_BK_NODE_FILE:
		for (i = 0; i < n->nitems; i++) {
			if (n->items[i].hole) {
				if (i > 0 && n->items[i - 1].hole)
					return 0;
				if (n->items[i].hole > n->size - holes)
					return 0;
				holes += n->items[i].hole;
				total += 9;
			} else {
				total += 1 + CF_BK_ID_BYTES;
			}
		}
		if (n->gen != 0)
			total += STORE_ID_BYTES;
		break;
	case CF_BK_NODE_DIR:
		total += CF_BK_ID_BYTES;
		break;
	case CF_BK_NODE_SYMLINK:
		if (n->target == NULL || n->target[0] == '\0' ||
		    strlen(n->target) > MAX_TARGET)
			return 0;
		total += strlen(n->target);
		break;
	default:
		break;
	}
	return total;
}

int
cf_bk_tree_encode(const struct cf_bk_tree *t, unsigned char **out,
    size_t *len)
{
	const struct cf_bk_node **order = NULL;
	const struct cf_bk_xattr **xo = NULL;
	unsigned char *buf = NULL, *p;
	size_t total = 4, i, j, ns;
	int rc = -EINVAL;

	*out = NULL;
	*len = 0;
	if (t->count > MAX_NODES)
		return -EINVAL;
	order = malloc((t->count ? t->count : 1) * sizeof(*order));
	xo = malloc(MAX_XATTRS * sizeof(*xo));
	if (order == NULL || xo == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < t->count; i++) {
		order[i] = &t->nodes[i];
		ns = node_size(&t->nodes[i]);
		if (ns == 0)
			goto out;
		total += ns;
		if (total > CF_BK_BLOB_MAX)
			goto out;
	}
	qsort(order, t->count, sizeof(*order), node_cmp);
	for (i = 1; i < t->count; i++)
		if (node_cmp(&order[i - 1], &order[i]) == 0)
			goto out;	/* duplicate name */
	buf = malloc(total);
	if (buf == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	bk_le32(buf, (uint32_t)t->count);
	p = buf + 4;
	for (i = 0; i < t->count; i++) {
		const struct cf_bk_node *n = order[i];
		size_t nl = strlen(n->name), nitems = 0;

		if (n->type == CF_BK_NODE_FILE)
			nitems = n->nitems;
		else if (n->type == CF_BK_NODE_DIR)
			nitems = 1;
		else if (n->type == CF_BK_NODE_SYMLINK)
			nitems = strlen(n->target);
		p[0] = n->type;
		p[1] = n->gen != 0 ? FLAG_STORE_ID : 0;
		bk_le16(p + 2, (uint16_t)nl);
		bk_le32(p + 4, n->mode);
		bk_le32(p + 8, n->uid);
		bk_le32(p + 12, n->gid);
		bk_le64(p + 16, (uint64_t)n->atime);
		bk_le64(p + 24, (uint64_t)n->mtime);
		bk_le64(p + 32, (uint64_t)n->ctime);
		bk_le64(p + 40, n->size);
		bk_le64(p + 48, n->rdev);
		bk_le64(p + 56, n->link_group);
		bk_le16(p + 64, (uint16_t)n->nxattrs);
		bk_le16(p + 66, 0);
		bk_le32(p + 68, (uint32_t)nitems);
		memcpy(p + NODE_FIXED, n->name, nl);
		p += NODE_FIXED + nl;
		for (j = 0; j < n->nxattrs; j++)
			xo[j] = &n->xattrs[j];
		qsort(xo, n->nxattrs, sizeof(*xo), xattr_cmp);
		for (j = 0; j < n->nxattrs; j++) {
			size_t xl = strlen(xo[j]->name);

			if (j > 0 && xattr_cmp(&xo[j - 1], &xo[j]) == 0)
				goto out;
			*p = (unsigned char)xl;
			memcpy(p + 1, xo[j]->name, xl);
			bk_le32(p + 1 + xl, (uint32_t)xo[j]->value_len);
			if (xo[j]->value_len)
				memcpy(p + 5 + xl, xo[j]->value,
				    xo[j]->value_len);
			p += 5 + xl + xo[j]->value_len;
		}
		if (n->type == CF_BK_NODE_FILE) {
			for (j = 0; j < n->nitems; j++) {
				if (n->items[j].hole) {
					*p = ITEM_HOLE;
					bk_le64(p + 1, n->items[j].hole);
					p += 9;
				} else {
					*p = ITEM_BLOB;
					memcpy(p + 1, n->items[j].id,
					    CF_BK_ID_BYTES);
					p += 1 + CF_BK_ID_BYTES;
				}
			}
			if (n->gen != 0) {
				memcpy(p, n->file_id, CF_BK_FILE_ID_BYTES);
				bk_le64(p + CF_BK_FILE_ID_BYTES, n->gen);
				bk_le64(p + CF_BK_FILE_ID_BYTES + 8, n->ino);
				p += STORE_ID_BYTES;
			}
		} else if (n->type == CF_BK_NODE_DIR) {
			memcpy(p, n->subtree, CF_BK_ID_BYTES);
			p += CF_BK_ID_BYTES;
		} else if (n->type == CF_BK_NODE_SYMLINK) {
			memcpy(p, n->target, nitems);
			p += nitems;
		}
	}
	*out = buf;
	*len = total;
	buf = NULL;
	rc = 0;
out:
	free(buf);
	free(order);
	free(xo);
	return rc;
}
