/*
 * bk_index.c - the in-memory index and the index plaintext codec
 * (docs/format/repository.md: Index): packs with their headers and
 * descriptors, and an open-addressing hash table from (type, blob id) to
 * (pack, blob).  Blob ids are keyed hashes, so their first bytes are
 * uniform and serve as the hash directly.
 *
 * It does no I/O and no cryptography (but for checking that a sealed
 * pack's key id is the hash of its sealed key); bk_repo.c loads and
 * seals index objects.  Not thread-safe: the writer serialises its updates.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "bk_int.h"

#define EMPTY UINT32_MAX
#define MAX_PACKS_PER_OBJECT 65536U

struct ipack {
	unsigned char id[CF_BK_ID_BYTES];
	/* The header, then the sealed key of a sealed pack (contiguous). */
	unsigned char hdr[CF_BK_PACK_HEADER_MAX];
	struct cf_bk_desc *descs;
	uint32_t *offsets;
	uint32_t n;
	uint64_t size;
};

struct slot {
	uint32_t pack, blob;
};

struct cf_bk_index {
	struct ipack *packs;
	size_t npacks, pcap;
	struct slot *blobs;		/* hash table of blobs */
	size_t bcap, nblobs;		/* bcap a power of two */
	uint32_t *ptab;			/* hash table of packs */
	size_t ptcap;
};

static uint64_t
h64(const unsigned char *id)
{
	return bk_rd64(id);
}

int
cf_bk_index_new(struct cf_bk_index **out)
{
	*out = calloc(1, sizeof(**out));
	return *out != NULL ? 0 : -ENOMEM;
}

void
cf_bk_index_free(struct cf_bk_index *idx)
{
	size_t i;

	if (idx == NULL)
		return;
	for (i = 0; i < idx->npacks; i++) {
		free(idx->packs[i].descs);
		free(idx->packs[i].offsets);
	}
	free(idx->packs);
	free(idx->blobs);
	free(idx->ptab);
	free(idx);
}

size_t
cf_bk_index_packs(const struct cf_bk_index *idx)
{
	return idx->npacks;
}

size_t
cf_bk_index_blobs(const struct cf_bk_index *idx)
{
	return idx->nblobs;
}

const unsigned char *
cf_bk_index_pack_id(const struct cf_bk_index *idx, size_t i)
{
	return idx->packs[i].id;
}

void
bk_index_pack_info(const struct cf_bk_index *idx, size_t i,
    const unsigned char **hdr, const struct cf_bk_desc **descs,
    const uint32_t **offsets, size_t *n, uint64_t *size)
{
	const struct ipack *p = &idx->packs[i];

	*hdr = p->hdr;
	*descs = p->descs;
	*offsets = p->offsets;
	*n = p->n;
	*size = p->size;
}

static const struct cf_bk_desc *
slot_desc(const struct cf_bk_index *idx, const struct slot *s)
{
	return &idx->packs[s->pack].descs[s->blob];
}

/* Finds a blob's slot: the matching one, or the empty one to fill. */
static struct slot *
blob_find(const struct cf_bk_index *idx, unsigned type,
    const unsigned char *id)
{
	size_t mask = idx->bcap - 1, i = (size_t)(h64(id) ^ type) & mask;

	for (;;) {
		struct slot *s = &idx->blobs[i];
		const struct cf_bk_desc *d;

		if (s->pack == EMPTY)
			return s;
		d = slot_desc(idx, s);
		if (d->type == type &&
		    memcmp(d->id, id, CF_BK_ID_BYTES) == 0)
			return s;
		i = (i + 1) & mask;
	}
}

static int
blob_grow(struct cf_bk_index *idx, size_t want)
{
	struct slot *old = idx->blobs;
	size_t oldcap = idx->bcap, cap = oldcap ? oldcap : 1024, i;

	if (want * 2 <= cap && old != NULL)
		return 0;
	while (want * 2 > cap)
		cap *= 2;
	idx->blobs = malloc(cap * sizeof(*idx->blobs));
	if (idx->blobs == NULL) {
		idx->blobs = old;
		return -ENOMEM;
	}
	for (i = 0; i < cap; i++)
		idx->blobs[i].pack = EMPTY;
	idx->bcap = cap;
	for (i = 0; i < oldcap; i++) {
		if (old[i].pack != EMPTY) {
			const struct cf_bk_desc *d = slot_desc(idx, &old[i]);

			*blob_find(idx, d->type, d->id) = old[i];
		}
	}
	free(old);
	return 0;
}

static uint32_t *
pack_find(const struct cf_bk_index *idx, const unsigned char *id)
{
	size_t mask = idx->ptcap - 1, i = (size_t)h64(id) & mask;

	for (;;) {
		uint32_t *p = &idx->ptab[i];

		if (*p == EMPTY ||
		    memcmp(idx->packs[*p].id, id, CF_BK_ID_BYTES) == 0)
			return p;
		i = (i + 1) & mask;
	}
}

static int
pack_grow(struct cf_bk_index *idx, size_t want)
{
	uint32_t *old = idx->ptab;
	size_t oldcap = idx->ptcap, cap = oldcap ? oldcap : 256, i;

	if (want * 2 <= cap && old != NULL)
		return 0;
	while (want * 2 > cap)
		cap *= 2;
	idx->ptab = malloc(cap * sizeof(*idx->ptab));
	if (idx->ptab == NULL) {
		idx->ptab = old;
		return -ENOMEM;
	}
	for (i = 0; i < cap; i++)
		idx->ptab[i] = EMPTY;
	idx->ptcap = cap;
	for (i = 0; i < oldcap; i++)
		if (old[i] != EMPTY)
			*pack_find(idx, idx->packs[old[i]].id) = old[i];
	free(old);
	return 0;
}

/* Checks one pack record ([BK-IDX-1]); computes its size. */
static int
record_check(const unsigned char *hdr, const struct cf_bk_desc *d, size_t n,
    uint64_t *size)
{
	unsigned char kid[16];
	int rc = bk_header_check(hdr, CF_BK_KIND_PACK, NULL);

	if (rc < 0)
		return rc;
	if (bk_header_extra(hdr) > 0) {
		/* [BK-WO-3] the key id is the hash of the sealed key. */
		crypto_generichash(kid, sizeof(kid), hdr + CF_BK_HEADER_BYTES,
		    BK_BOX_BYTES, NULL, 0);
		if (memcmp(kid, hdr + 16, sizeof(kid)) != 0)
			return -EPROTO;
	}
	*size = bk_pack_size_hdr(hdr, d, n);
	return *size == 0 ? -EPROTO : 0;
}

/* Adds a checked record; takes descs on success. */
static int
add_record(struct cf_bk_index *idx, const unsigned char *id,
    const unsigned char *hdr, struct cf_bk_desc *descs, size_t n,
    uint64_t size, int *taken)
{
	struct ipack *p;
	uint32_t *offs, *pt, pi;
	uint32_t off = (uint32_t)(CF_BK_HEADER_BYTES + bk_header_extra(hdr));
	size_t i;
	int rc;

	*taken = 0;
	if (idx->ptcap == 0) {
		rc = pack_grow(idx, 1);
		if (rc < 0)
			return rc;
	}
	if (*pack_find(idx, id) != EMPTY)
		return 0;	/* listed by another index too */
	if (idx->npacks >= UINT32_MAX - 1)
		return -ENOMEM;
	rc = pack_grow(idx, idx->npacks + 1);
	if (rc == 0)
		rc = blob_grow(idx, idx->nblobs + n);
	if (rc < 0)
		return rc;
	if (idx->npacks == idx->pcap) {
		size_t nc = idx->pcap ? idx->pcap * 2 : 64;
		struct ipack *np = realloc(idx->packs, nc * sizeof(*np));

		if (np == NULL)
			return -ENOMEM;
		idx->packs = np;
		idx->pcap = nc;
	}
	offs = malloc(n * sizeof(*offs));
	if (offs == NULL)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		offs[i] = off;
		off += descs[i].length;
	}
	pi = (uint32_t)idx->npacks;
	p = &idx->packs[pi];
	memcpy(p->id, id, CF_BK_ID_BYTES);
	memset(p->hdr, 0, sizeof(p->hdr));
	memcpy(p->hdr, hdr, CF_BK_HEADER_BYTES + bk_header_extra(hdr));
	p->descs = descs;
	p->offsets = offs;
	p->n = (uint32_t)n;
	p->size = size;
	idx->npacks++;
	pt = pack_find(idx, id);
	*pt = pi;
	for (i = 0; i < n; i++) {
		struct slot *s = blob_find(idx, descs[i].type, descs[i].id);

		if (s->pack == EMPTY) {
			s->pack = pi;
			s->blob = (uint32_t)i;
			idx->nblobs++;
		}
	}
	*taken = 1;
	return 0;
}

int
cf_bk_index_add_pack(struct cf_bk_index *idx,
    const unsigned char pack[CF_BK_ID_BYTES],
    const unsigned char *header, const struct cf_bk_desc *descs, size_t n)
{
	struct cf_bk_desc *copy;
	uint64_t size;
	int rc, taken;

	rc = record_check(header, descs, n, &size);
	if (rc < 0)
		return rc;
	copy = malloc(n * sizeof(*copy));
	if (copy == NULL)
		return -ENOMEM;
	memcpy(copy, descs, n * sizeof(*copy));
	rc = add_record(idx, pack, header, copy, n, size, &taken);
	if (!taken)
		free(copy);
	return rc;
}

int
cf_bk_index_lookup(const struct cf_bk_index *idx, enum cf_bk_blob_type type,
    const unsigned char id[CF_BK_ID_BYTES], struct cf_bk_blob_loc *loc)
{
	const struct slot *s;
	const struct ipack *p;

	memset(loc, 0, sizeof(*loc));
	if (idx->bcap == 0)
		return -ENOENT;
	s = blob_find(idx, (unsigned)type, id);
	if (s->pack == EMPTY)
		return -ENOENT;
	p = &idx->packs[s->pack];
	memcpy(loc->pack, p->id, CF_BK_ID_BYTES);
	memcpy(loc->header, p->hdr, sizeof(loc->header));
	loc->desc = p->descs[s->blob];
	loc->offset = p->offsets[s->blob];
	loc->pack_size = p->size;
	return 0;
}

/* ---- codec ------------------------------------------------------------------ */

struct rec {
	const unsigned char *id, *hdr;
	struct cf_bk_desc *descs;
	size_t n;
	uint64_t size;
};

int
cf_bk_index_decode(struct cf_bk_index *idx, const unsigned char *buf,
    size_t len)
{
	struct rec *recs = NULL;
	size_t npacks, off = 4, i, j, done = 0;
	int rc = -EPROTO, taken;

	if (len < 4 || len > CF_BK_OBJECT_MAX)
		return -EPROTO;
	npacks = bk_rd32(buf);
	if (npacks == 0 || npacks > MAX_PACKS_PER_OBJECT)
		return -EPROTO;
	recs = calloc(npacks, sizeof(*recs));
	if (recs == NULL)
		return -ENOMEM;
	for (i = 0; i < npacks; i++) {
		struct rec *r = &recs[i];
		size_t nl, hl;

		rc = -EPROTO;
		if (len - off < CF_BK_ID_BYTES + CF_BK_HEADER_BYTES + 4)
			goto out;
		r->id = buf + off;
		r->hdr = buf + off + CF_BK_ID_BYTES;
		rc = bk_header_check(r->hdr, CF_BK_KIND_PACK, NULL);
		if (rc < 0)
			goto out;
		rc = -EPROTO;
		nl = bk_header_nl(r->hdr);
		/* A sealed pack's record holds its sealed key too. */
		hl = CF_BK_HEADER_BYTES + bk_header_extra(r->hdr);
		if (len - off < CF_BK_ID_BYTES + hl + 4)
			goto out;
		r->n = bk_rd32(buf + off + CF_BK_ID_BYTES + hl);
		off += CF_BK_ID_BYTES + hl + 4;
		if (r->n == 0 || r->n > CF_BK_PACK_BLOBS_MAX ||
		    (len - off) / CF_BK_DESC_BYTES < r->n)
			goto out;
		r->descs = malloc(r->n * sizeof(*r->descs));
		if (r->descs == NULL) {
			rc = -ENOMEM;
			goto out;
		}
		for (j = 0; j < r->n; j++) {
			rc = bk_desc_decode(&r->descs[j], buf + off, nl);
			if (rc < 0)
				goto out;
			off += CF_BK_DESC_BYTES;
		}
		rc = record_check(r->hdr, r->descs, r->n, &r->size);
		if (rc < 0)
			goto out;
	}
	rc = -EPROTO;
	if (off != len)
		goto out;
	/*
	 * All or nothing: reserve room first, so the adds below can fail
	 * only before the first one lands.
	 */
	{
		size_t nb = 0;

		for (i = 0; i < npacks; i++)
			nb += recs[i].n;
		rc = pack_grow(idx, idx->npacks + npacks);
		if (rc == 0)
			rc = blob_grow(idx, idx->nblobs + nb);
		if (rc < 0)
			goto out;
		if (idx->pcap < idx->npacks + npacks) {
			struct ipack *np = realloc(idx->packs,
			    (idx->npacks + npacks) * sizeof(*np));

			rc = -ENOMEM;
			if (np == NULL)
				goto out;
			idx->packs = np;
			idx->pcap = idx->npacks + npacks;
		}
	}
	for (i = 0; i < npacks; i++) {
		rc = add_record(idx, recs[i].id, recs[i].hdr, recs[i].descs,
		    recs[i].n, recs[i].size, &taken);
		if (rc < 0)
			goto out;	/* only a malloc of offsets can fail */
		if (taken)
			recs[i].descs = NULL;
		done++;
	}
	rc = 0;
out:
	(void)done;
	for (i = 0; i < npacks; i++)
		free(recs[i].descs);
	free(recs);
	return rc;
}

int
cf_bk_index_encode(const struct cf_bk_index *idx, unsigned char **out,
    size_t *len)
{
	unsigned char *buf, *p;
	size_t total = 4, i, j;

	*out = NULL;
	*len = 0;
	if (idx->npacks == 0 || idx->npacks > MAX_PACKS_PER_OBJECT)
		return -EINVAL;
	for (i = 0; i < idx->npacks; i++)
		total += CF_BK_ID_BYTES + CF_BK_HEADER_BYTES +
		    bk_header_extra(idx->packs[i].hdr) + 4 +
		    (size_t)CF_BK_DESC_BYTES * idx->packs[i].n;
	if (total > CF_BK_OBJECT_MAX)
		return -EINVAL;
	buf = malloc(total);
	if (buf == NULL)
		return -ENOMEM;
	bk_le32(buf, (uint32_t)idx->npacks);
	p = buf + 4;
	for (i = 0; i < idx->npacks; i++) {
		const struct ipack *ip = &idx->packs[i];
		size_t hl = CF_BK_HEADER_BYTES + bk_header_extra(ip->hdr);

		memcpy(p, ip->id, CF_BK_ID_BYTES);
		memcpy(p + CF_BK_ID_BYTES, ip->hdr, hl);
		bk_le32(p + CF_BK_ID_BYTES + hl, ip->n);
		p += CF_BK_ID_BYTES + hl + 4;
		for (j = 0; j < ip->n; j++) {
			bk_desc_encode(p, &ip->descs[j]);
			p += CF_BK_DESC_BYTES;
		}
	}
	*out = buf;
	*len = total;
	return 0;
}
