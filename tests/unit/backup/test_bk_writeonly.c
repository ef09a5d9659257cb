/*
 * test_bk_writeonly.c - write-only backups (docs/write-only.md,
 * docs/format/repository.md: Write-only objects): an agent holding only
 * the writer credential adds snapshots that the full keys restore and
 * verify, deduplicates against what is stored, and can open nothing:
 * every object of the repository is tried with everything the
 * credential holds.  Tampered sealed keys and another tenant's
 * credential are refused.  Each case cites the requirements it checks.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "bk_test.h"

static const unsigned char tenant_a[16] = { 0xa1, 0xa2, 0xa3 };
static const unsigned char tenant_b[16] = { 0xb1, 0xb2, 0xb3 };

static const char *
url_of(const char *name)
{
	static char buf[4096];

	snprintf(buf, sizeof(buf), "file://%s/%s", cf_test_tmpdir(), name);
	return buf;
}

/* A full-key repo of the tenant whose root key is start..start+31. */
static struct cf_bk_repo *
full_repo(const char *name, unsigned start, const unsigned char *tenant)
{
	struct cf_secbuf *root = NULL;
	struct cf_bk_repo *r = NULL;
	size_t i;

	if (cf_secbuf_new(&root, 32) != 0)
		return NULL;
	for (i = 0; i < 32; i++)
		cf_secbuf_data(root)[i] = (unsigned char)(start + i);
	if (cf_bk_repo_open_url(&r, url_of(name), root, 1,
	    CF_KS_CIPHER_XCHACHA20POLY1305, tenant, CF_BK_REPO_CREATE) != 0)
		r = NULL;
	cf_secbuf_free(root);
	return r;
}

struct stream {
	const unsigned char *b;
	size_t len, off;
};

static int
stream_rd(void *arg, unsigned char *buf, size_t cap, size_t *got)
{
	struct stream *s = arg;
	size_t n = s->len - s->off;

	if (n > cap)
		n = cap;
	memcpy(buf, s->b + s->off, n);
	s->off += n;
	*got = n;
	return 0;
}

/* Backs up data as one file "f" and saves a snapshot; 0 or -errno. */
static int
backup(struct cf_bk_repo *r, const unsigned char *tenant,
    const unsigned char *data, size_t len, unsigned char sid[32],
    struct cf_bk_writer_stats *st)
{
	struct cf_bk_writer *w = NULL;
	struct cf_bk_item *it = NULL;
	struct cf_bk_node node;
	struct cf_bk_tree tree = { &node, 1, NULL };
	struct cf_bk_snapshot snap;
	struct stream s = { data, len, 0 };
	char host[] = "h", path[] = "/", cons[] = "stream";
	char *paths[] = { path };
	unsigned char tid[32];
	uint64_t size;
	size_t n;
	int rc;

	rc = cf_bk_writer_new(&w, r, 2);
	if (rc == 0)
		rc = cf_bk_writer_add_stream(w, stream_rd, &s, &it, &n, &size);
	if (rc == 0) {
		memset(&node, 0, sizeof(node));
		node.type = CF_BK_NODE_FILE;
		node.name = "f";
		node.mode = 0600;
		node.size = size;
		node.items = it;
		node.nitems = n;
		rc = cf_bk_writer_add_tree(w, &tree, tid);
	}
	if (rc == 0)
		rc = cf_bk_writer_flush(w);
	if (rc == 0 && st != NULL)
		cf_bk_writer_stats(w, st);
	cf_bk_writer_free(w);
	free(it);
	if (rc < 0)
		return rc;
	memset(&snap, 0, sizeof(snap));
	snap.time = 1767225600000000000LL;
	memcpy(snap.tenant, tenant, 16);
	snap.hostname = host;
	snap.paths = paths;
	snap.npaths = 1;
	memcpy(snap.tree, tid, 32);
	snap.consistency = cons;
	snap.stats.files = 1;
	return cf_bk_repo_snapshot_save(r, &snap, sid);
}

/* Restores snapshot sid's file with r and compares it with want. */
static int
restore_eq(struct cf_bk_repo *r, const unsigned char sid[32],
    const unsigned char *want, size_t wlen)
{
	struct cf_bk_snapshot *s = NULL;
	struct cf_bk_tree *t = NULL;
	unsigned char *buf;
	size_t i, off = 0, len;
	int rc;

	rc = cf_bk_repo_snapshot_load(r, sid, &s);
	if (rc == 0)
		rc = cf_bk_repo_tree_load(r, s->tree, &t);
	if (rc == 0 && (t->count != 1 || t->nodes[0].size != wlen))
		rc = -EPROTO;
	for (i = 0; rc == 0 && i < t->nodes[0].nitems; i++) {
		rc = cf_bk_repo_blob_load(r, CF_BK_BLOB_DATA,
		    t->nodes[0].items[i].id, &buf, &len);
		if (rc < 0)
			break;
		if (off + len > wlen || memcmp(buf, want + off, len) != 0)
			rc = -EBADMSG;
		off += len;
		free(buf);
	}
	if (rc == 0 && off != wlen)
		rc = -EPROTO;
	cf_bk_tree_free(t);
	cf_bk_snapshot_free(s);
	return rc;
}

/* The credential of a full-key repo, as bytes (malloc'd). */
static unsigned char *
cred_of(struct cf_bk_repo *r)
{
	struct cf_secbuf *sb = NULL;
	unsigned char *c;

	if (cf_bk_wcred_export(r, &sb) != 0)
		return NULL;
	c = malloc(CF_BK_WCRED_BYTES);
	if (c != NULL)
		memcpy(c, cf_secbuf_cdata(sb), CF_BK_WCRED_BYTES);
	cf_secbuf_free(sb);
	return c;
}

/* ---- every object, with everything the writer holds ----------------------- */

struct obj {
	enum cf_bk_kind kind;
	char name[65];
	unsigned char *buf;
	size_t len;
};

struct objs {
	struct cf_bk_store *st;
	enum cf_bk_kind kind;
	struct obj *v;
	size_t n;
	uint64_t bytes;
};

static int
obj_cb(void *arg, const char *name, uint64_t size)
{
	struct objs *o = arg;
	struct obj *nv = realloc(o->v, (o->n + 1) * sizeof(*nv));

	if (nv == NULL)
		return -ENOMEM;
	o->v = nv;
	nv[o->n].kind = o->kind;
	snprintf(nv[o->n].name, 65, "%s", name);
	o->bytes += size;
	if (cf_bk_store_get(o->st, o->kind, name, CF_BK_PACK_MAX,
	    &nv[o->n].buf, &nv[o->n].len) != 0)
		return -EIO;
	o->n++;
	return 0;
}

/* Reads every object of the store (config included). */
static int
all_objects(struct cf_bk_store *st, struct objs *o)
{
	static const enum cf_bk_kind kinds[] = { CF_BK_KIND_PACK,
	    CF_BK_KIND_INDEX, CF_BK_KIND_SNAPSHOT, CF_BK_KIND_LOCK };
	size_t i;
	int rc;

	memset(o, 0, sizeof(*o));
	o->st = st;
	for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		o->kind = kinds[i];
		rc = cf_bk_store_list(st, kinds[i], obj_cb, o);
		if (rc < 0)
			return rc;
	}
	o->kind = CF_BK_KIND_CONFIG;
	return obj_cb(o, "config", 0);
}

static void
objs_free(struct objs *o)
{
	size_t i;

	for (i = 0; i < o->n; i++)
		free(o->v[i].buf);
	free(o->v);
}

/* Total size of the repository's objects. */
static uint64_t
repo_bytes(struct cf_bk_store *st)
{
	struct objs o;
	uint64_t b;

	if (all_objects(st, &o) != 0)
		return UINT64_MAX;	/* fails every size check */
	b = o.bytes;
	objs_free(&o);
	return b;
}

/*
 * 1 if key (32 bytes) opens the first AEAD of obj under either cipher:
 * a sealed object's body or a pack's trailer, at the offsets of a
 * version 1 and of a sealed header.
 */
static int
key_opens(const unsigned char *key, const struct obj *o)
{
	static const enum cf_ks_cipher ciphers[] = { CF_KS_CIPHER_AES256GCM,
	    CF_KS_CIPHER_XCHACHA20POLY1305 };
	static const size_t pres[] = { 32, 112 };
	unsigned char *m;
	size_t c, p, nl, at, clen;
	int opened = 0;

	m = malloc(o->len + 1);
	if (m == NULL)
		return 1;	/* counted as opened: fails the test */
	for (c = 0; c < 2; c++) {
		struct cf_ks_aead *a = NULL;

		if (!cf_ks_cipher_available(ciphers[c]))
			continue;
		if (cf_ks_aead_new(&a, ciphers[c], key) != 0) {
			free(m);
			return 1;
		}
		nl = cf_ks_cipher_nonce_bytes(ciphers[c]);
		for (p = 0; p < 2; p++) {
			if (o->kind == CF_BK_KIND_PACK) {
				size_t tl = bk_rd32(o->buf + o->len - 4);

				if (tl + 4 > o->len || tl < nl + 16)
					continue;
				at = o->len - 4 - tl;
				clen = tl - nl;
			} else {
				if (o->len < pres[p] + nl + 16)
					continue;
				at = pres[p];
				clen = o->len - pres[p] - nl;
			}
			if (cf_ks_aead_open(a, m, o->buf + at + nl, clen,
			    o->buf, 32, o->buf + at) == 0)
				opened = 1;
		}
		cf_ks_aead_free(a);
	}
	free(m);
	return opened;
}

/*
 * Tries to open o with every secret of the credential: the writer's
 * keys through the library, each secret as an object key, as the
 * parent of object keys, and as a box secret key for the sealed key.
 * Returns the number of successful opens (0 expected).
 */
static int
writer_opens(const struct cf_bk_keys *wk, const unsigned char *cred,
    const struct obj *o)
{
	static const size_t secrets[] = { 80, 112, 144, 176 };
	unsigned char *plain = NULL, key[32], hdr[32];
	struct cf_bk_desc *d = NULL;
	size_t plen, n, i, j;
	int opened = 0, rc;

	if (o->kind == CF_BK_KIND_PACK) {
		rc = cf_bk_pack_parse(wk, o->buf, o->len, hdr, &d, &n);
		if (rc == 0)
			opened++;
		free(d);
	} else {
		rc = cf_bk_object_open(wk, o->kind, o->buf, o->len, &plain,
		    &plen);
		if (rc == 0)
			opened++;
		free(plain);
	}
	if (rc == 0)
		return opened;
	for (i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
		struct cf_secbuf *sb = NULL;

		if (cf_secbuf_new(&sb, 32) != 0)
			return opened + 1;
		memcpy(cf_secbuf_data(sb), cred + secrets[i], 32);
		opened += key_opens(cred + secrets[i], o);
		if (cf_ks_derive_id(key, sb, "bk-object", o->buf + 16,
		    16) != 0)
			opened++;
		else
			opened += key_opens(key, o);
		if (o->len >= 112 && o->buf[8] == 2 &&
		    (o->buf[11] & 0x7f) == 1) {
			unsigned char pk[32];

			/* The secret as a box secret key, with its own pk. */
			crypto_scalarmult_base(pk, cred + secrets[i]);
			for (j = 0; j < 2; j++)
				if (crypto_box_seal_open(key, o->buf + 32, 80,
				    j ? pk : cred + 80, cred + secrets[i]) == 0)
					opened++;
		}
		cf_secbuf_free(sb);
	}
	return opened;
}

/* The writer opens no object but the index and lock objects. */
static void
nothing_opens(struct cf_bk_store *st, const unsigned char *cred,
    const unsigned char *secret, size_t slen, size_t *npacks, size_t *nsnaps)
{
	struct cf_bk_wcred_info info;
	struct cf_bk_keys *wk = NULL;
	struct objs o;
	unsigned char *plain, hdr[32];
	struct cf_bk_desc *d;
	size_t i, plen, n;

	*npacks = *nsnaps = 0;
	CHECK_RC(cf_bk_wcred_parse(cred, CF_BK_WCRED_BYTES, &info, &wk), 0);
	CHECK(cf_bk_keys_writeonly(wk));
	CHECK_RC(all_objects(st, &o), 0);
	for (i = 0; i < o.n; i++) {
		struct obj *ob = &o.v[i];

		if (ob->kind == CF_BK_KIND_INDEX) {
			/* Opens by design: ids, sizes, pack names only. */
			CHECK_RC(cf_bk_object_open(wk, ob->kind, ob->buf,
			    ob->len, &plain, &plen), 0);
			CHECK(memmem(plain, plen, secret, slen) == NULL);
			free(plain);
			continue;
		}
		CHECK(ob->kind != CF_BK_KIND_LOCK);	/* all released */
		if (ob->kind == CF_BK_KIND_PACK) {
			(*npacks)++;
			CHECK_RC(cf_bk_pack_parse(wk, ob->buf, ob->len, hdr,
			    &d, &n), -ENOKEY);
		}
		if (ob->kind == CF_BK_KIND_SNAPSHOT) {
			(*nsnaps)++;
			CHECK_RC(cf_bk_object_open(wk, ob->kind, ob->buf,
			    ob->len, &plain, &plen), -ENOKEY);
		}
		CHECK(writer_opens(wk, cred, ob) == 0);
		/* And the plaintext is nowhere in the bytes. */
		CHECK(memmem(ob->buf, ob->len, secret, slen) == NULL);
	}
	objs_free(&o);
	cf_bk_keys_free(wk);
}

/* ---- cases ----------------------------------------------------------------- */

static void
writer_cannot_read(void)	/* [BK-WO-2] [BK-WO-4] [BK-WO-5] */
{
	struct cf_bk_repo *full, *wr = NULL, *full2;
	unsigned char *cred, *a, *b, sa[32], sb[32], *buf;
	struct cf_bk_snapshot *s = NULL;
	struct cf_bk_verify_opts vo = { 1, 100, 7 };
	struct cf_bk_verify_result *vr = NULL;
	unsigned char (*ids)[32] = NULL;
	size_t la = 3U << 20, lb = 5U << 20, npacks, nsnaps, len, ns;

	a = bkt_random(la, 11);
	b = bkt_text(lb);
	CHECK(a != NULL && b != NULL);
	b[lb / 2] ^= 0x5a;
	full = full_repo("r1", 0, tenant_a);
	CHECK(full != NULL);
	/* A full-key backup first, then the credential, then a writer's. */
	CHECK_RC(backup(full, tenant_a, a, la, sa, NULL), 0);
	cred = cred_of(full);
	CHECK(cred != NULL);
	CHECK_RC(cf_bk_repo_open_writer(&wr, url_of("r1"), cred,
	    CF_BK_WCRED_BYTES), 0);
	CHECK(cf_bk_keys_writeonly(cf_bk_repo_keys(wr)));
	CHECK_RC(backup(wr, tenant_a, b, lb, sb, NULL), 0);

	/* The writer's own repo handle reads nothing back. */
	CHECK_RC(cf_bk_repo_snapshot_load(wr, sa, &s), -ENOKEY);
	CHECK_RC(cf_bk_repo_snapshot_load(wr, sb, &s), -ENOKEY);
	CHECK_RC(cf_bk_repo_snapshot_list(wr, &ids, &ns), 0);
	CHECK(ns == 2);
	free(ids);

	/* Every object, with everything the credential holds. */
	nothing_opens(cf_bk_repo_store(wr), cred, b + 4096, 64, &npacks,
	    &nsnaps);
	CHECK(npacks >= 2 && nsnaps == 2);
	nothing_opens(cf_bk_repo_store(wr), cred, a + 4096, 64, &npacks,
	    &nsnaps);

	/* Full keys: both snapshots restore, verify --read-data is clean. */
	full2 = full_repo("r1", 0, tenant_a);
	CHECK(full2 != NULL);
	CHECK_RC(restore_eq(full2, sa, a, la), 0);
	CHECK_RC(restore_eq(full2, sb, b, lb), 0);
	CHECK_RC(cf_bk_verify(full2, &vo, &vr), 0);
	CHECK(!cf_bk_verify_damaged(vr));
	CHECK(vr->snapshots == 2 && vr->packs_read == vr->packs &&
	    vr->packs >= 2 && vr->packs_orphan == 0);
	cf_bk_verify_result_free(vr);
	/* The writer's blobs load in the writer repo's index: no keys. */
	CHECK_RC(cf_bk_repo_snapshot_load(full2, sb, &s), 0);
	CHECK_RC(cf_bk_repo_blob_load(wr, CF_BK_BLOB_TREE, s->tree, &buf,
	    &len), -ENOKEY);
	cf_bk_snapshot_free(s);

	cf_bk_repo_free(full2);
	cf_bk_repo_free(wr);
	cf_bk_repo_free(full);
	free(cred);
	free(a);
	free(b);
}

static void
writer_dedup(void)	/* [BK-KEY-2] dedup with the id key alone */
{
	struct cf_bk_repo *full, *wr = NULL;
	struct cf_bk_writer_stats st;
	unsigned char *cred, *d, s1[32], s2[32], s3[32];
	size_t len = 6U << 20;
	uint64_t b0, b1, b2;

	d = bkt_random(len, 21);
	CHECK(d != NULL);
	full = full_repo("r2", 0, tenant_a);
	CHECK(full != NULL);
	cred = cred_of(full);
	CHECK(cred != NULL);
	b0 = repo_bytes(cf_bk_repo_store(full));
	CHECK_RC(cf_bk_repo_open_writer(&wr, url_of("r2"), cred,
	    CF_BK_WCRED_BYTES), 0);
	CHECK_RC(backup(wr, tenant_a, d, len, s1, &st), 0);
	cf_bk_repo_free(wr);
	b1 = repo_bytes(cf_bk_repo_store(full));
	CHECK(b1 - b0 > len && st.new_blobs == st.blobs);
	/* A second agent run (a fresh handle: only what the store says). */
	CHECK_RC(cf_bk_repo_open_writer(&wr, url_of("r2"), cred,
	    CF_BK_WCRED_BYTES), 0);
	CHECK_RC(backup(wr, tenant_a, d, len, s2, &st), 0);
	b2 = repo_bytes(cf_bk_repo_store(full));
	CHECK(st.new_blobs == 0 && st.packs == 0 && st.indexes == 0);
	/* Only the snapshot object: well under 1 KiB for 6 MiB. */
	CHECK(b2 - b1 < 1024);
	cf_bk_repo_free(wr);
	/* A full-key backup of the same data dedups against the writer. */
	CHECK_RC(cf_bk_repo_index_load(full, NULL), 0);
	CHECK_RC(backup(full, tenant_a, d, len, s3, &st), 0);
	CHECK(st.new_blobs == 0);
	CHECK_RC(restore_eq(full, s1, d, len), 0);
	CHECK_RC(restore_eq(full, s2, d, len), 0);
	cf_bk_repo_free(full);
	free(cred);
	free(d);
}

/* Copies obj and changes byte at. */
static unsigned char *
tampered(const unsigned char *obj, size_t len, size_t at)
{
	unsigned char *t = malloc(len);

	if (t == NULL)
		abort();
	memcpy(t, obj, len);
	t[at] ^= 0x01;
	return t;
}

static void
tampered_sealed_key(void)	/* [BK-WO-2] [BK-WO-3] */
{
	struct cf_bk_repo *full, *wr = NULL;
	unsigned char *cred, *d, sid[32], *plain, *t, hdr[32];
	struct cf_bk_keys *k = bkt_keys_x(0), *other = bkt_keys_x(100);
	struct cf_bk_desc *descs;
	struct objs o;
	size_t len = 1U << 20, plen, i, n;
	int packs = 0, snaps = 0;

	CHECK(k != NULL && other != NULL);
	d = bkt_random(len, 31);
	full = full_repo("r3", 0, tenant_a);
	CHECK(full != NULL && d != NULL);
	cred = cred_of(full);
	CHECK_RC(cf_bk_repo_open_writer(&wr, url_of("r3"), cred,
	    CF_BK_WCRED_BYTES), 0);
	CHECK_RC(backup(wr, tenant_a, d, len, sid, NULL), 0);
	CHECK_RC(all_objects(cf_bk_repo_store(wr), &o), 0);
	for (i = 0; i < o.n; i++) {
		struct obj *ob = &o.v[i];
		size_t at;

		if (ob->kind == CF_BK_KIND_SNAPSHOT) {
			snaps++;
			CHECK_RC(cf_bk_object_open(k, ob->kind, ob->buf,
			    ob->len, &plain, &plen), 0);
			free(plain);
			/* Another tenant's full keys: the box stays shut. */
			CHECK_RC(cf_bk_object_open(other, ob->kind, ob->buf,
			    ob->len, &plain, &plen), -EBADMSG);
			for (at = 32; at < 112; at += 13) {
				t = tampered(ob->buf, ob->len, at);
				CHECK_RC(cf_bk_object_open(k, ob->kind, t,
				    ob->len, &plain, &plen), -EBADMSG);
				CHECK(plain == NULL);
				/* Key id recomputed: the box fails itself. */
				crypto_generichash(t + 16, 16, t + 32, 80,
				    NULL, 0);
				CHECK_RC(cf_bk_object_open(k, ob->kind, t,
				    ob->len, &plain, &plen), -EBADMSG);
				free(t);
			}
		} else if (ob->kind == CF_BK_KIND_PACK) {
			struct cf_bk_keys *fresh = bkt_keys_x(0);

			packs++;
			t = tampered(ob->buf, ob->len, 40);
			crypto_generichash(t + 16, 16, t + 32, 80, NULL, 0);
			CHECK_RC(cf_bk_pack_parse(fresh, t, ob->len, hdr,
			    &descs, &n), -EBADMSG);
			free(t);
			t = tampered(ob->buf, ob->len, 100);
			CHECK_RC(cf_bk_pack_parse(fresh, t, ob->len, hdr,
			    &descs, &n), -EBADMSG);
			free(t);
			CHECK_RC(cf_bk_pack_parse(other, ob->buf, ob->len,
			    hdr, &descs, &n), -EBADMSG);
			CHECK_RC(cf_bk_pack_parse(fresh, ob->buf, ob->len, hdr,
			    &descs, &n), 0);
			CHECK(n >= 1);
			free(descs);
			cf_bk_keys_free(fresh);
		}
	}
	CHECK(packs >= 1 && snaps == 1);
	objs_free(&o);
	cf_bk_repo_free(wr);
	cf_bk_repo_free(full);
	cf_bk_keys_free(k);
	cf_bk_keys_free(other);
	free(cred);
	free(d);
}

static void
credential_checks(void)	/* [BK-WCRED-1] [BK-WO-5] */
{
	struct cf_bk_repo *ra, *rb, *wr = NULL;
	struct cf_bk_wcred_info info;
	struct cf_bk_keys *wk = NULL;
	unsigned char *ca, *cb, *t, sid[32];
	size_t i;

	ra = full_repo("ra", 0, tenant_a);
	rb = full_repo("rb", 50, tenant_b);
	CHECK(ra != NULL && rb != NULL);
	ca = cred_of(ra);
	cb = cred_of(rb);
	CHECK(ca != NULL && cb != NULL);
	CHECK_RC(cf_bk_wcred_parse(ca, CF_BK_WCRED_BYTES, &info, NULL), 0);
	CHECK(memcmp(info.tenant, tenant_a, 16) == 0 && info.key_version == 1);
	CHECK(info.min == CF_BK_CHUNK_MIN && info.max == CF_BK_CHUNK_MAX);
	/* Another tenant's credential on this repository: refused. */
	CHECK_RC(cf_bk_repo_open_writer(&wr, url_of("ra"), cb,
	    CF_BK_WCRED_BYTES), -EKEYREJECTED);
	CHECK(wr == NULL);
	CHECK_RC(cf_bk_repo_open_writer(&wr, url_of("none"), ca,
	    CF_BK_WCRED_BYTES), -ENOENT);
	/* Any changed byte or length is refused as damaged. */
	for (i = 0; i < CF_BK_WCRED_BYTES; i++) {
		t = tampered(ca, CF_BK_WCRED_BYTES, i);
		CHECK_RC(cf_bk_wcred_parse(t, CF_BK_WCRED_BYTES, &info, &wk),
		    -EPROTO);
		CHECK(wk == NULL);
		free(t);
	}
	CHECK_RC(cf_bk_wcred_parse(ca, CF_BK_WCRED_BYTES - 1, &info, &wk),
	    -EPROTO);
	/* The two tenants' credentials share no secret. */
	for (i = 80; i < 208; i += 32)
		CHECK(memcmp(ca + i, cb + i, 32) != 0);
	/* A writer of tenant b cannot write into a's repository ... */
	CHECK_RC(cf_bk_repo_open_writer(&wr, url_of("rb"), cb,
	    CF_BK_WCRED_BYTES), 0);
	CHECK_RC(backup(wr, tenant_b, ca, CF_BK_WCRED_BYTES, sid, NULL), 0);
	cf_bk_repo_free(wr);
	/* ... and a's full keys cannot read b's writer snapshot. */
	{
		struct cf_bk_repo *cross = NULL;
		struct cf_bk_keys *ka = bkt_keys_x(0);
		struct cf_bk_store *st = NULL;
		struct cf_bk_snapshot *s = NULL;

		CHECK_RC(cf_bk_store_open_url(&st, url_of("rb"), 0), 0);
		CHECK_RC(cf_bk_repo_open(&cross, st, ka, tenant_a), -EBADMSG);
		cf_bk_store_free(st);
		CHECK_RC(cf_bk_repo_snapshot_load(rb, sid, &s), 0);
		cf_bk_snapshot_free(s);
		cf_bk_keys_free(ka);
	}
	/* Full keys refuse to export from a writer's handle. */
	CHECK_RC(cf_bk_repo_open_writer(&wr, url_of("ra"), ca,
	    CF_BK_WCRED_BYTES), 0);
	{
		struct cf_secbuf *sb = NULL;

		CHECK_RC(cf_bk_wcred_export(wr, &sb), -EINVAL);
	}
	cf_bk_repo_free(wr);
	cf_bk_repo_free(ra);
	cf_bk_repo_free(rb);
	free(ca);
	free(cb);
}

static void
prune_and_locks(void)	/* [BK-WO-3] [BK-WO-4] [BK-CRASH-3] [BK-LOCK-1] */
{
	struct cf_bk_repo *full, *wr = NULL;
	struct cf_bk_lock *lw = NULL, *lx = NULL;
	struct cf_bk_prune_opts po = { 0, 100 };
	struct cf_bk_prune_stats ps;
	struct cf_bk_verify_opts vo = { 1, 100, 3 };
	struct cf_bk_verify_result *vr = NULL;
	struct cf_bk_writer_stats st;
	unsigned char *cred, *x, *y, sx[32], sy[32], sy2[32];
	size_t lx_len = 2U << 20, ly = 3U << 20;

	x = bkt_random(lx_len, 41);
	y = bkt_random(ly, 42);
	full = full_repo("r4", 0, tenant_a);
	CHECK(full != NULL && x != NULL && y != NULL);
	cred = cred_of(full);
	CHECK_RC(cf_bk_repo_open_writer(&wr, url_of("r4"), cred,
	    CF_BK_WCRED_BYTES), 0);
	/* Locks: the agent's lock stops a prune, a prune's the agent. */
	CHECK_RC(cf_bk_repo_lock(wr, 0, "agent", &lw), 0);
	CHECK_RC(cf_bk_repo_lock(full, 1, "prune", &lx), -EBUSY);
	CHECK_RC(cf_bk_lock_release(lw), 0);
	CHECK_RC(cf_bk_repo_lock(full, 1, "prune", &lx), 0);
	CHECK_RC(cf_bk_repo_lock(wr, 0, "agent", &lw), -EBUSY);
	CHECK_RC(cf_bk_lock_release(lx), 0);
	lx = NULL;
	/* Two agent snapshots; the full keys forget the first and prune. */
	CHECK_RC(backup(wr, tenant_a, x, lx_len, sx, NULL), 0);
	CHECK_RC(backup(wr, tenant_a, y, ly, sy, NULL), 0);
	cf_bk_repo_free(wr);
	wr = NULL;
	CHECK_RC(cf_bk_repo_index_load(full, NULL), 0);
	CHECK_RC(cf_bk_repo_lock(full, 1, "prune", &lx), 0);
	CHECK_RC(cf_bk_repo_snapshot_delete(full, sx), 0);
	CHECK_RC(cf_bk_prune(full, lx, &po, &ps), 0);
	CHECK_RC(cf_bk_lock_release(lx), 0);
	CHECK(ps.blobs_dead >= 2 && ps.indexes_written >= 1);
	CHECK_RC(cf_bk_verify(full, &vo, &vr), 0);
	CHECK(!cf_bk_verify_damaged(vr) && vr->snapshots == 1);
	cf_bk_verify_result_free(vr);
	CHECK_RC(restore_eq(full, sy, y, ly), 0);
	/* The pruned index is under X: the agent still dedups. */
	CHECK_RC(cf_bk_repo_open_writer(&wr, url_of("r4"), cred,
	    CF_BK_WCRED_BYTES), 0);
	CHECK(cf_bk_index_blobs(cf_bk_repo_index(wr)) >= 3);
	CHECK_RC(backup(wr, tenant_a, y, ly, sy2, &st), 0);
	CHECK(st.new_blobs == 0);
	cf_bk_repo_free(wr);
	cf_bk_repo_free(full);
	free(cred);
	free(x);
	free(y);
}

/* ---- vectors (tests/vectors/repository-wo-v2.json) ------------------------- */

static unsigned char *
vhex(json_t *o, const char *k, size_t *len)
{
	const char *s = json_string_value(json_object_get(o, k));

	*len = 0;
	return s != NULL ? cf_test_unhex(s, len) : NULL;
}

static void
vectors(void)	/* [BK-WO-1..4] [BK-WCRED-1] */
{
	json_error_t e;
	json_t *v = json_load_file(cf_test_vector_path("repository-wo-v2.json"),
	    0, &e), *a, *o;
	struct cf_bk_keys *k = bkt_keys_x(0), *wk = NULL;
	struct cf_bk_wcred_info info;
	struct cf_secbuf *sb = NULL;
	unsigned char *want, *obj, *pt, *plain, *cred, hdr[32], id[32];
	struct cf_bk_desc *d = NULL;
	size_t len, ol, pl, plen, n, i, j, off;

	CHECK(v != NULL && k != NULL);
	want = vhex(json_object_get(v, "keys"), "box_pk", &len);
	CHECK(want != NULL && len == 32 && memcmp(want, k->boxpk, 32) == 0);
	free(want);
	want = vhex(json_object_get(v, "keys"), "index_key", &len);
	CHECK(want != NULL && len == 32 &&
	    memcmp(want, cf_secbuf_cdata(k->xkey), 32) == 0);
	free(want);
	/* The credential: byte for byte, and it parses back. */
	cred = vhex(v, "credential", &len);
	CHECK(cred != NULL && len == CF_BK_WCRED_BYTES);
	CHECK_RC(cf_bk_wcred_parse(cred, len, &info, &wk), 0);
	{
		struct cf_bk_wcred_info in = info;

		CHECK_RC(bk_wcred_encode(k, &in, &sb), 0);
		CHECK(memcmp(cf_secbuf_cdata(sb), cred, len) == 0);
		cf_secbuf_free(sb);
	}
	a = json_object_get(v, "objects");
	CHECK(json_array_size(a) == 3);
	json_array_foreach(a, i, o) {
		enum cf_bk_kind kind = (enum cf_bk_kind)json_integer_value(
		    json_object_get(o, "kind"));

		obj = vhex(o, "object", &ol);
		pt = vhex(o, "plaintext", &pl);
		CHECK(obj != NULL && pt != NULL);
		want = vhex(o, "storage_id", &len);
		cf_bk_storage_id(obj, ol, id);
		CHECK(want != NULL && memcmp(id, want, 32) == 0);
		free(want);
		if (kind == CF_BK_KIND_PACK) {
			CHECK_RC(cf_bk_pack_parse(wk, obj, ol, hdr, &d, &n),
			    -ENOKEY);
			CHECK_RC(cf_bk_pack_parse(k, obj, ol, hdr, &d, &n), 0);
			off = 112;
			for (j = 0; j < n; j++) {
				CHECK_RC(cf_bk_blob_open(k, hdr, &d[j],
				    obj + off, d[j].length, &plain, &plen), 0);
				CHECK(n == 1 && plen == pl &&
				    memcmp(plain, pt, pl) == 0);
				free(plain);
				off += d[j].length;
			}
			free(d);
		} else {
			CHECK_RC(cf_bk_object_open(k, kind, obj, ol, &plain,
			    &plen), 0);
			CHECK(plen == pl && memcmp(plain, pt, pl) == 0);
			free(plain);
			/* Index: the writer opens it; snapshot: it cannot. */
			CHECK_RC(cf_bk_object_open(wk, kind, obj, ol, &plain,
			    &plen), kind == CF_BK_KIND_INDEX ? 0 : -ENOKEY);
			free(plain);
		}
		free(obj);
		free(pt);
	}
	cf_bk_keys_free(wk);
	cf_bk_keys_free(k);
	free(cred);
	json_decref(v);
}

/*
 * A repository of versions: primary first (root of start p), then the
 * others added; each version v has the root start 0x40 * (v - 1).
 */
static struct cf_bk_repo *
repo_versions(const char *name, uint32_t primary, uint32_t other)
{
	struct cf_secbuf *root = NULL;
	struct cf_bk_keys *k = NULL;
	struct cf_bk_repo *r = NULL;
	uint32_t v[2] = { primary, other };
	size_t i, j;
	int rc = 0;

	for (j = 0; rc == 0 && j < 2 && v[j] != 0; j++) {
		rc = cf_secbuf_new(&root, 32);
		for (i = 0; rc == 0 && i < 32; i++)
			cf_secbuf_data(root)[i] =
			    (unsigned char)(0x40 * (v[j] - 1) + i);
		if (rc == 0 && j == 0)
			rc = cf_bk_keys_new(&k, root, v[j],
			    CF_KS_CIPHER_XCHACHA20POLY1305);
		else if (rc == 0)
			rc = cf_bk_keys_add(k, root, v[j]);
		cf_secbuf_free(root);
		root = NULL;
	}
	if (rc == 0 && cf_bk_repo_open_url_keys(&r, url_of(name), k,
	    tenant_a, CF_BK_REPO_CREATE) != 0)
		r = NULL;
	else if (rc != 0)
		cf_bk_keys_free(k);
	return r;
}

/*
 * [BK-CFG-2] [BK-WO-2] [BK-WO-5] After a config re-key: the old
 * credential is refused (-EKEYREJECTED); objects an agent sealed under the
 * old version still open with that version's box pair; a new
 * credential (under the new version) dedups against blobs stored
 * before the re-key, reads index objects naming the old version, and
 * its sealed objects open with the new version alone.
 */
static void
rekeyed_writer(void)
{
	struct cf_bk_repo *r, *wr = NULL;
	struct cf_bk_writer_stats st;
	unsigned char *cred1, *cred2, *a, *b, sa[32], sb[32], sb2[32], sc[32];
	unsigned char *c, (*ids)[32] = NULL;
	size_t la = 1U << 20, lb = 2U << 20, lc = 70000, nids = 0, i, nb;
	struct cf_bk_reenc_stats rs;
	struct cf_bk_lock *lk = NULL;

	a = bkt_random(la, 21);
	b = bkt_random(lb, 22);
	c = bkt_random(lc, 23);
	CHECK(a != NULL && b != NULL && c != NULL);
	r = repo_versions("r6", 1, 2);
	CHECK(r != NULL);
	CHECK_RC(backup(r, tenant_a, a, la, sa, NULL), 0);
	cred1 = cred_of(r);
	CHECK(cred1 != NULL);
	CHECK_RC(cf_bk_repo_open_writer(&wr, url_of("r6"), cred1,
	    CF_BK_WCRED_BYTES), 0);
	CHECK_RC(backup(wr, tenant_a, b, lb, sb, NULL), 0);
	cf_bk_repo_free(wr);
	wr = NULL;
	CHECK_RC(cf_bk_repo_config_rekey(r, 2), 0);
	cf_bk_repo_free(r);

	/* The old credential names the old config. */
	CHECK_RC(cf_bk_repo_open_writer(&wr, url_of("r6"), cred1,
	    CF_BK_WCRED_BYTES), -EKEYREJECTED);
	/* Version 2 first, 1 held: both snapshots, the agent's too. */
	r = repo_versions("r6", 2, 1);
	CHECK(r != NULL);
	CHECK(cf_bk_repo_config_version(r) == 2);
	CHECK_RC(restore_eq(r, sa, a, la), 0);
	CHECK_RC(restore_eq(r, sb, b, lb), 0);
	cred2 = cred_of(r);
	CHECK(cred2 != NULL);
	CHECK_RC(cf_bk_repo_open_writer(&wr, url_of("r6"), cred2,
	    CF_BK_WCRED_BYTES), 0);
	CHECK_RC(backup(wr, tenant_a, b, lb, sb2, &st), 0);
	CHECK(st.new_blobs == 0 && st.packs == 0);	/* dedup across */
	CHECK_RC(backup(wr, tenant_a, c, lc, sc, &st), 0);
	CHECK(st.new_blobs >= 1);
	cf_bk_repo_free(wr);
	cf_bk_repo_free(r);
	/* Version 2 alone: the new agent's snapshot; not the old one's. */
	r = repo_versions("r6", 2, 0);
	CHECK(r != NULL);
	CHECK_RC(restore_eq(r, sc, c, lc), 0);
	CHECK_RC(restore_eq(r, sb, b, lb), -ENOKEY);
	cf_bk_repo_free(r);

	/*
	 * [BK-REENC-1] Re-encrypting (full keys holding 1 and 2): the
	 * agent's sealed pack and snapshot under 1 move to 2; the agent
	 * itself cannot (-EINVAL).  Then version 2 alone restores every
	 * snapshot.
	 */
	CHECK_RC(cf_bk_repo_open_writer(&wr, url_of("r6"), cred2,
	    CF_BK_WCRED_BYTES), 0);
	CHECK_RC(cf_bk_repo_reencrypt(wr, NULL, NULL, NULL, &rs), -EINVAL);
	cf_bk_repo_free(wr);
	r = repo_versions("r6", 2, 1);
	CHECK(r != NULL);
	CHECK_RC(cf_bk_repo_lock(r, 1, NULL, &lk), 0);
	CHECK_RC(cf_bk_repo_reencrypt(r, lk, NULL, NULL, &rs), 0);
	CHECK_RC(cf_bk_lock_release(lk), 0);
	CHECK(rs.key_version == 2 && rs.packs_old >= 1 &&
	    rs.snapshots_old == 1 && rs.snapshots_resealed == 1 &&
	    rs.objects_locked == 0);
	cf_bk_repo_free(r);
	r = repo_versions("r6", 2, 0);
	CHECK(r != NULL);
	CHECK_RC(cf_bk_repo_snapshot_list(r, &ids, &nids), 0);
	/*
	 * The helper's snapshots of b (sb under 1, sb2 under 2) are equal
	 * in every field but the record: sb2 is taken as sb's re-sealed
	 * copy, as a killed run's would be.
	 */
	CHECK(nids == 3);
	for (i = 0, nb = 0; i < nids; i++) {
		if (restore_eq(r, ids[i], b, lb) == 0)
			nb++;
		else
			CHECK(restore_eq(r, ids[i], a, la) == 0 ||
			    restore_eq(r, ids[i], c, lc) == 0);
	}
	CHECK(nb == 1);		/* sb2 */
	CHECK_RC(restore_eq(r, sb, b, lb), -ENOENT);
	free(ids);
	cf_bk_repo_free(r);
	free(cred1);
	free(cred2);
	free(a);
	free(b);
	free(c);
}

static const struct cf_test_case cases[] = {
	CF_TEST(writer_cannot_read),
	CF_TEST(writer_dedup),
	CF_TEST(tampered_sealed_key),
	CF_TEST(credential_checks),
	CF_TEST(prune_and_locks),
	CF_TEST(vectors),
	CF_TEST(rekeyed_writer),
};

CF_TEST_MAIN(cases)
