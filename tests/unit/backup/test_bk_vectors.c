/*
 * test_bk_vectors.c - coffer's backup code against
 * tests/vectors/repository-v1.json, which
 * tests/vectors/gen/repository_vectors.c made from raw libsodium and
 * libzstd calls (docs/format/repository.md, Test vectors): keys, gear
 * table, chunk cuts, blob ids, packs, sealed objects and a tree.
 *
 * Decoding is checked everywhere.  Encoding is checked byte for byte
 * where no compression is involved, and for compressed parts only when
 * this libzstd is the generator's version (zstd's output may change
 * between versions; the format does not depend on it).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <zstd.h>

#include "bk_test.h"

static json_t *
vectors(void)
{
	json_error_t e;

	return json_load_file(cf_test_vector_path("repository-v1.json"), 0,
	    &e);
}

static unsigned char *
vhex(json_t *o, const char *k, size_t *len)
{
	const char *s = json_string_value(json_object_get(o, k));

	*len = 0;
	return s != NULL ? cf_test_unhex(s, len) : NULL;
}

/* 1 if this libzstd made the vectors (compressed bytes comparable). */
static int
same_zstd(json_t *v)
{
	const char *g = json_string_value(json_object_get(v, "generator"));
	char want[64];

	snprintf(want, sizeof(want), "libzstd %s)", ZSTD_versionString());
	return g != NULL && strstr(g, want) != NULL;
}

static void
keys(void)	/* [BK-KEY-1] */
{
	json_t *v = vectors(), *kv;
	struct cf_bk_keys *k = bkt_keys_x(0);
	struct cf_secbuf *root = NULL, *c = NULL;
	unsigned char *want, got[32], kid[16];
	const uint64_t *gear;
	size_t len, i;

	CHECK(v != NULL && k != NULL);
	kv = json_object_get(v, "keys");
	want = vhex(kv, "data", &len);
	CHECK(want != NULL && len == 32);
	CHECK(memcmp(cf_secbuf_cdata(k->data), want, 32) == 0);
	free(want);
	want = vhex(kv, "id", &len);
	CHECK(want != NULL && memcmp(cf_secbuf_cdata(k->idkey), want, 32) == 0);
	free(want);
	CHECK_RC(cf_secbuf_new(&root, 32), 0);
	for (i = 0; i < 32; i++)
		cf_secbuf_data(root)[i] = (unsigned char)i;
	CHECK_RC(cf_ks_derive(&c, root, CF_KS_PURPOSE_BK_CHUNKID), 0);
	want = vhex(kv, "chunk", &len);
	CHECK(want != NULL && memcmp(cf_secbuf_cdata(c), want, 32) == 0);
	free(want);
	CHECK_RC(cf_ks_derive_id(got, c, "bk-gear", NULL, 0), 0);
	want = vhex(kv, "gear", &len);
	CHECK(want != NULL && memcmp(got, want, 32) == 0);
	free(want);
	for (i = 0; i < 16; i++)
		kid[i] = (unsigned char)(0xa0 + i);
	CHECK_RC(cf_ks_derive_id(got, k->data, "bk-object", kid, 16), 0);
	want = vhex(kv, "object_key_a0", &len);
	CHECK(want != NULL && memcmp(got, want, 32) == 0);
	free(want);
	/* [BK-CDC-2] gear entries. */
	gear = (const uint64_t *)(const void *)cf_secbuf_cdata(k->gear);
	{
		const char *idx[] = { "0", "1", "255" };
		unsigned n[] = { 0, 1, 255 };
		char buf[17];

		for (i = 0; i < 3; i++) {
			snprintf(buf, sizeof(buf), "%016llx",
			    (unsigned long long)gear[n[i]]);
			CHECK(strcmp(buf, json_string_value(json_object_get(
			    json_object_get(v, "gear"), idx[i]))) == 0);
		}
	}
	cf_secbuf_free(c);
	cf_secbuf_free(root);
	cf_bk_keys_free(k);
	json_decref(v);
}

static void
chunking(void)	/* [BK-CDC-1] [BK-CDC-2] */
{
	json_t *v = vectors(), *ch;
	struct cf_bk_keys *k = bkt_keys_x(0);
	const char *sets[] = { "small", "default" };
	size_t n = 4U << 20, i, j, off;
	unsigned char *s = bkt_random(n, 0);

	CHECK(v != NULL && k != NULL && s != NULL);
	ch = json_object_get(v, "chunking");
	for (i = 0; i < 2; i++) {
		json_t *set = json_object_get(ch, sets[i]);
		json_t *cuts = json_object_get(set, "cuts");
		struct cf_bk_chunker *c = NULL;

		CHECK_RC(cf_bk_chunker_new(&c, k,
		    (size_t)json_integer_value(json_object_get(set, "min")),
		    (size_t)json_integer_value(json_object_get(set, "avg")),
		    (size_t)json_integer_value(json_object_get(set, "max"))),
		    0);
		for (j = 0, off = 0; off < n; j++) {
			size_t l = cf_bk_chunker_cut(c, s + off, n - off);

			CHECK(j < json_array_size(cuts));
			CHECK_RC(l, json_integer_value(json_array_get(cuts,
			    j)));
			off += l;
		}
		CHECK(j == json_array_size(cuts));
		cf_bk_chunker_free(c);
	}
	free(s);
	cf_bk_keys_free(k);
	json_decref(v);
}

static void
blob_ids(void)	/* [BK-KEY-2] */
{
	json_t *v = vectors(), *a, *e;
	struct cf_bk_keys *k = bkt_keys_x(0);
	unsigned char *p, *want, got[32];
	size_t i, pl, wl;

	CHECK(v != NULL && k != NULL);
	a = json_object_get(v, "blob_ids");
	CHECK(json_array_size(a) == 3);
	json_array_foreach(a, i, e) {
		p = vhex(e, "plaintext", &pl);
		want = vhex(e, "id", &wl);
		CHECK(p != NULL && want != NULL);
		cf_bk_blob_id(k, p, pl, got);
		CHECK(memcmp(got, want, 32) == 0);
		free(p);
		free(want);
	}
	cf_bk_keys_free(k);
	json_decref(v);
}

/*
 * The packs of array a: decoded, storage id checked, re-encoded byte for
 * byte.  sha256: the vectors' headers name them by SHA-256 ([BK-LAY-3]);
 * otherwise the writer is told to name them as before (sid_blake2).
 */
static void
packs_in(json_t *a, size_t want, int zsame, int sha256)
{
	json_t *pv;
	size_t i;

	CHECK(json_array_size(a) == want);
	json_array_foreach(a, i, pv) {
		enum cf_ks_cipher cipher;
		struct cf_bk_keys *k;
		struct cf_bk_desc *d = NULL;
		struct bk_packer *pk = NULL;
		json_t *blobs = json_object_get(pv, "blobs"), *b;
		unsigned char hdr[32], *pack, *sid, *kid, *tn, *plain, *buf;
		unsigned char id[32], h2[32];
		struct cf_bk_desc *d2;
		size_t plen, sl, kl, tl, n, j, off = 32, blen, len2, n2;
		int raw = strcmp(json_string_value(json_object_get(pv, "name")),
		    "raw") == 0;

		CHECK_RC(cf_ks_cipher_parse(json_string_value(
		    json_object_get(pv, "cipher")), &cipher), 0);
		if (!cf_ks_cipher_available(cipher)) {
			printf("# %s not available here: skipped\n",
			    cf_ks_cipher_name(cipher));
			continue;
		}
		k = bkt_keys(0, cipher);
		pack = vhex(pv, "pack", &plen);
		sid = vhex(pv, "storage_id", &sl);
		kid = vhex(pv, "key_id", &kl);
		tn = vhex(pv, "trailer_nonce", &tl);
		CHECK(k != NULL && pack != NULL && sid != NULL && kid != NULL);
		k->sid_blake2 = !sha256;
		CHECK(cf_bk_named_sha256(pack, plen) == sha256);
		cf_bk_storage_id(pack, plen, id);
		CHECK(memcmp(id, sid, 32) == 0);
		/* The name is the one hash and not the other. */
		if (sha256)
			crypto_generichash(h2, 32, pack, plen, NULL, 0);
		else
			crypto_hash_sha256(h2, pack, plen);
		CHECK(memcmp(h2, sid, 32) != 0);
		CHECK_RC(cf_bk_pack_parse(k, pack, plen, hdr, &d, &n), 0);
		CHECK(n == json_array_size(blobs));
		CHECK_RC(bk_packer_new(&pk, k, kid), 0);
		json_array_foreach(blobs, j, b) {
			unsigned char *desc, *pt, *nonce, enc[44];
			size_t dl, ptl, nl;

			desc = vhex(b, "descriptor", &dl);
			pt = vhex(b, "plaintext", &ptl);
			nonce = vhex(b, "nonce", &nl);
			CHECK(desc != NULL && pt != NULL && nonce != NULL);
			bk_desc_encode(enc, &d[j]);
			CHECK(memcmp(enc, desc, 44) == 0);
			CHECK_RC(cf_bk_blob_open(k, hdr, &d[j], pack + off,
			    d[j].length, &plain, &blen), 0);
			CHECK(blen == ptl && memcmp(plain, pt, ptl) == 0);
			free(plain);
			off += d[j].length;
			CHECK_RC(bk_packer_add(pk, d[j].type, d[j].id, pt, ptl,
			    !raw, NULL, nonce), 0);
			free(desc);
			free(pt);
			free(nonce);
		}
		/* Re-encoding with the vectors' key id and nonces. */
		CHECK_RC(bk_packer_finish(pk, tn, &buf, &len2, id, h2, &d2,
		    &n2), 0);
		if (raw || zsame) {
			CHECK(len2 == plen && memcmp(buf, pack, plen) == 0);
			CHECK(memcmp(id, sid, 32) == 0);	/* the writer's */
		}
		else
			printf("# libzstd differs from the generator's: "
			    "compressed pack not compared byte for byte\n");
		free(buf);
		free(d2);
		bk_packer_free(pk);
		free(d);
		free(pack);
		free(sid);
		free(kid);
		free(tn);
		cf_bk_keys_free(k);
	}
}

static void
packs(void)	/* [BK-PACK-1..3] */
{
	json_t *v = vectors();

	CHECK(v != NULL);
	packs_in(json_object_get(v, "packs"), 4, same_zstd(v), 0);
	json_decref(v);
}

/* The sealed objects of array a, as packs_in. */
static void
objects_in(json_t *a, size_t want, int zsame, int sha256)
{
	struct cf_bk_keys *k = bkt_keys_x(0);
	json_t *o;
	size_t i;

	CHECK(k != NULL);
	k->sid_blake2 = !sha256;
	CHECK(json_array_size(a) == want);
	json_array_foreach(a, i, o) {
		enum cf_bk_kind kind = (enum cf_bk_kind)json_integer_value(
		    json_object_get(o, "kind"));
		int comp = json_is_true(json_object_get(o, "compressed"));
		unsigned char *obj, *pt, *kid, *nonce, *plain, *again, id[32];
		unsigned char *sid;
		size_t ol, pl, kl, nl, plen, al, sl;

		obj = vhex(o, "object", &ol);
		pt = vhex(o, "plaintext", &pl);
		kid = vhex(o, "key_id", &kl);
		nonce = vhex(o, "nonce", &nl);
		sid = vhex(o, "storage_id", &sl);
		CHECK(obj != NULL && pt != NULL && kid != NULL && nonce != NULL);
		CHECK(cf_bk_named_sha256(obj, ol) == sha256);
		cf_bk_storage_id(obj, ol, id);
		CHECK(memcmp(id, sid, 32) == 0);
		CHECK_RC(cf_bk_object_open(k, kind, obj, ol, &plain, &plen), 0);
		CHECK(plen == pl && memcmp(plain, pt, pl) == 0);
		CHECK_RC(bk_object_seal_ex(k, kind, pt, pl, kid, nonce, comp,
		    &again, &al), 0);
		if (!comp || zsame)
			CHECK(al == ol && memcmp(again, obj, ol) == 0);
		free(again);
		if (kind == CF_BK_KIND_INDEX) {
			struct cf_bk_index *idx = NULL;
			struct cf_bk_blob_loc loc;
			unsigned char abc[32];

			CHECK_RC(cf_bk_index_new(&idx), 0);
			CHECK_RC(cf_bk_index_decode(idx, plain, plen), 0);
			cf_bk_blob_id(k, "abc", 3, abc);
			CHECK_RC(cf_bk_index_lookup(idx, CF_BK_BLOB_DATA, abc,
			    &loc), 0);
			CHECK(loc.offset == 32 && loc.desc.ulen == 3);
			CHECK(loc.pack_size == 648);
			cf_bk_index_free(idx);
		} else {
			struct cf_bk_snapshot *s = NULL;
			char *enc = NULL;
			size_t el;

			CHECK_RC(cf_bk_snapshot_decode(&s, (const char *)plain,
			    plen), 0);
			CHECK(s->ntags == 10 && s->time == 1767225600000000000LL);
			CHECK_RC(cf_bk_snapshot_encode(s, &enc, &el), 0);
			CHECK(el == plen && memcmp(enc, plain, el) == 0);
			free(enc);
			cf_bk_snapshot_free(s);
		}
		free(plain);
		free(obj);
		free(pt);
		free(kid);
		free(nonce);
		free(sid);
	}
	cf_bk_keys_free(k);
}

static void
objects(void)	/* [BK-SOB-1..2] [BK-IDX-1] [BK-SNAP-1] */
{
	json_t *v = vectors();

	CHECK(v != NULL);
	objects_in(json_object_get(v, "objects"), 3, same_zstd(v), 0);
	json_decref(v);
}

/*
 * [BK-LAY-3] (added 2026-11-25): objects whose header has bit 7 of byte
 * 11 set are named by SHA-256 of their bytes; every writer sets it
 * (locks excepted).
 * The vectors decode, re-encode byte for byte with the default writer,
 * and flipping the bit breaks both the name and every seal.
 */
static void
sha256_named(void)
{
	json_t *v = vectors(), *t, *p;
	struct cf_bk_keys *k = bkt_keys(0, CF_KS_CIPHER_AES256GCM);
	struct cf_bk_desc *d = NULL;
	unsigned char *pack, *sid, id[32], hdr[32];
	size_t plen, sl, n = 0;

	CHECK(v != NULL && k != NULL);
	t = json_object_get(v, "sha256_named");
	packs_in(json_object_get(t, "packs"), 2, same_zstd(v), 1);
	objects_in(json_object_get(t, "objects"), 1, same_zstd(v), 1);
	/* A writer names new objects so unless told otherwise. */
	CHECK(k->sid_blake2 == 0);
	bk_header_make(hdr, CF_BK_KIND_PACK, k, NULL);
	CHECK(hdr[11] == 0x80);
	/* Locks keep BLAKE2b names: an older coffer must still honour them. */
	bk_header_make(hdr, CF_BK_KIND_LOCK, k, NULL);
	CHECK(hdr[11] == 0);
	bk_header_make_x(hdr, CF_BK_KIND_LOCK, k, NULL);
	CHECK(hdr[11] == BK_KEYING_INDEX);
	/* The bit flipped: another name, and no seal opens. */
	p = json_array_get(json_object_get(t, "packs"), 0);
	pack = vhex(p, "pack", &plen);
	sid = vhex(p, "storage_id", &sl);
	CHECK(pack != NULL && sid != NULL);
	if (cf_ks_cipher_available(CF_KS_CIPHER_AES256GCM)) {
		CHECK_RC(cf_bk_pack_parse(k, pack, plen, hdr, &d, &n), 0);
		free(d);
		d = NULL;
	}
	pack[11] ^= 0x80;
	cf_bk_storage_id(pack, plen, id);
	CHECK(memcmp(id, sid, 32) != 0);
	CHECK(cf_bk_pack_parse(k, pack, plen, hdr, &d, &n) < 0);
	free(d);
	/* Bits other than 7 stay reserved in version 1. */
	pack[11] ^= 0x81;
	CHECK_RC(bk_header_check(pack, CF_BK_KIND_PACK, NULL), -EPROTO);
	free(pack);
	free(sid);
	cf_bk_keys_free(k);
	json_decref(v);
}

static void
tree(void)	/* [BK-TREE-1..2] */
{
	json_t *v = vectors(), *t;
	struct cf_bk_keys *k = bkt_keys_x(0);
	struct cf_bk_tree *tr = NULL;
	unsigned char *enc, *abc, *again;
	size_t len, al, l2;

	CHECK(v != NULL && k != NULL);
	t = json_object_get(v, "tree");
	enc = vhex(t, "encoding", &len);
	abc = vhex(t, "abc_id", &al);
	CHECK(enc != NULL && abc != NULL);
	CHECK_RC(cf_bk_tree_decode(&tr, enc, len), 0);
	CHECK(tr->count == 4);
	CHECK(strcmp(tr->nodes[0].name, "dir") == 0 &&
	    tr->nodes[0].type == CF_BK_NODE_DIR &&
	    tr->nodes[0].subtree[0] == 0x11);
	CHECK(strcmp(tr->nodes[1].name, "file") == 0 &&
	    tr->nodes[1].size == 4099 && tr->nodes[1].link_group == 5 &&
	    tr->nodes[1].nitems == 2 && tr->nodes[1].items[1].hole == 4096 &&
	    memcmp(tr->nodes[1].items[0].id, abc, 32) == 0);
	CHECK(tr->nodes[1].nxattrs == 1 &&
	    strcmp(tr->nodes[1].xattrs[0].name, "user.k") == 0 &&
	    tr->nodes[1].xattrs[0].value_len == 1);
	CHECK(tr->nodes[1].uid == 1000 && tr->nodes[1].gid == 100 &&
	    tr->nodes[1].atime == 1767225600000000001LL &&
	    tr->nodes[1].ctime == 1767225600000000003LL);
	CHECK(strcmp(tr->nodes[2].target, "file") == 0);
	CHECK(tr->nodes[3].type == CF_BK_NODE_FIFO &&
	    tr->nodes[3].mode == 0600);
	CHECK_RC(cf_bk_tree_encode(tr, &again, &l2), 0);
	CHECK(l2 == len && memcmp(again, enc, len) == 0);
	free(again);
	cf_bk_tree_free(tr);
	free(enc);
	free(abc);
	cf_bk_keys_free(k);
	json_decref(v);
}

/* A file node with its store identity (flag 0x01).  [BK-TREE-1..2] */
static void
tree_store_id(void)
{
	json_t *v = vectors(), *t;
	struct cf_bk_tree *tr = NULL;
	unsigned char *enc, *again;
	size_t len, l2, i;
	int ok = 1;

	CHECK(v != NULL);
	t = json_object_get(v, "tree_store_id");
	enc = vhex(t, "encoding", &len);
	CHECK(enc != NULL);
	CHECK_RC(cf_bk_tree_decode(&tr, enc, len), 0);
	CHECK(tr->count == 1 && strcmp(tr->nodes[0].name, "f") == 0 &&
	    tr->nodes[0].size == 3 && tr->nodes[0].nitems == 1);
	CHECK(tr->nodes[0].gen == 0x0807060504030201ULL &&
	    tr->nodes[0].ino == 0x1817161514131211ULL);
	for (i = 0; i < CF_BK_FILE_ID_BYTES; i++)
		ok &= tr->nodes[0].file_id[i] == 0xa0 + i;
	CHECK(ok);
	CHECK_RC(cf_bk_tree_encode(tr, &again, &l2), 0);
	CHECK(l2 == len && memcmp(again, enc, len) == 0);
	free(again);
	cf_bk_tree_free(tr);
	free(enc);
	json_decref(v);
}

/* A snapshot recording its key versions.  [BK-SNAP-2] */
static void
snapshot_key_versions(void)
{
	json_t *v = vectors(), *t, *kv;
	struct cf_bk_snapshot *s = NULL;
	unsigned char *enc;
	char *again;
	size_t len, l2, i;

	CHECK(v != NULL);
	t = json_object_get(v, "snapshot_key_versions");
	enc = vhex(t, "encoding", &len);
	kv = json_object_get(t, "key_versions");
	CHECK(enc != NULL && json_is_array(kv));
	CHECK_RC(cf_bk_snapshot_decode(&s, (const char *)enc, len), 0);
	CHECK(s->has_key_versions && s->has_parent &&
	    s->nkey_versions == json_array_size(kv));
	for (i = 0; i < s->nkey_versions; i++)
		CHECK(s->key_versions[i] ==
		    json_integer_value(json_array_get(kv, i)));
	CHECK_RC(cf_bk_snapshot_encode(s, &again, &l2), 0);
	CHECK(l2 == len && memcmp(again, enc, len) == 0);
	free(again);
	cf_bk_snapshot_free(s);
	free(enc);
	json_decref(v);
}

/*
 * [BK-CFG-2] A config re-keyed to version 2 carries C of version 1: it
 * opens under version 2's D alone, decodes to C and version 1, encodes
 * back to the same text, seals to the same bytes with the vector's key
 * id and nonce, and gives the same I, G and X as version 1's C.
 */
static void
config_rekeyed(void)
{
	json_t *v = vectors(), *t;
	struct cf_bk_keys *k = NULL;
	struct cf_secbuf *root = NULL;
	struct bk_config c;
	unsigned char *r2, *obj, *plain, *pp, *chunk, *id, *gk, *x, *kid;
	unsigned char *nonce, *sid, *open = NULL, *again = NULL, h[32];
	char *enc = NULL;
	size_t l, ol, pl, ppl, openl, el, al;

	CHECK(v != NULL);
	t = json_object_get(v, "config_rekeyed");
	r2 = vhex(t, "root2", &l);
	obj = vhex(t, "object", &ol);
	plain = vhex(t, "plaintext", &pl);
	pp = vhex(t, "plaintext_plain", &ppl);
	chunk = vhex(t, "chunk", &l);
	id = vhex(t, "id", &l);
	gk = vhex(t, "gear", &l);
	x = vhex(t, "index", &l);
	kid = vhex(t, "key_id", &l);
	nonce = vhex(t, "nonce", &l);
	sid = vhex(t, "storage_id", &l);
	CHECK(r2 != NULL && obj != NULL && plain != NULL && pp != NULL &&
	    chunk != NULL && id != NULL && gk != NULL && x != NULL &&
	    kid != NULL && nonce != NULL && sid != NULL);
	CHECK_RC(cf_secbuf_new(&root, 32), 0);
	memcpy(cf_secbuf_data(root), r2, 32);
	CHECK_RC(cf_bk_keys_new(&k, root, 2, CF_KS_CIPHER_XCHACHA20POLY1305),
	    0);
	k->sid_blake2 = 1;	/* the vector was made before [BK-LAY-3]'s bit */
	cf_bk_storage_id(obj, ol, h);
	CHECK(memcmp(h, sid, 32) == 0);
	CHECK_RC(cf_bk_object_open(k, CF_BK_KIND_CONFIG, obj, ol, &open,
	    &openl), 0);
	CHECK(openl == pl && memcmp(open, plain, pl) == 0);
	CHECK(obj[12] == 2);
	CHECK_RC(bk_config_decode(&c, (const char *)open, openl), 0);
	CHECK(c.chunk != NULL && c.chunk_version == 1);
	CHECK(memcmp(cf_secbuf_cdata(c.chunk), chunk, 32) == 0);
	CHECK_RC(bk_config_encode(&c, &enc, &el), 0);
	CHECK(el == pl && memcmp(enc, plain, pl) == 0);
	CHECK_RC(bk_config_seal(k, 2, plain, pl, kid, nonce, &again, &al), 0);
	CHECK(al == ol && memcmp(again, obj, ol) == 0);
	/* Before: I of version 2's own C; after: version 1's. */
	CHECK(memcmp(cf_secbuf_cdata(k->idkey), id, 32) != 0);
	CHECK_RC(bk_keys_set_chunk(k, c.chunk, 1), 0);
	CHECK(memcmp(cf_secbuf_cdata(k->idkey), id, 32) == 0);
	CHECK(memcmp(cf_secbuf_cdata(k->gkey), gk, 32) == 0);
	CHECK(memcmp(cf_secbuf_cdata(k->xkey), x, 32) == 0);
	bk_config_clear(&c);
	bk_config_text_free(enc, el);
	/* The same config without C: as before the addition. */
	CHECK_RC(bk_config_decode(&c, (const char *)pp, ppl), 0);
	CHECK(c.chunk == NULL && c.chunk_version == 0);
	CHECK_RC(bk_config_encode(&c, &enc, &el), 0);
	CHECK(el == ppl && memcmp(enc, pp, ppl) == 0);
	bk_config_clear(&c);
	free(enc);
	free(open);
	free(again);
	cf_bk_keys_free(k);
	cf_secbuf_free(root);
	free(r2);
	free(obj);
	free(plain);
	free(pp);
	free(chunk);
	free(id);
	free(gk);
	free(x);
	free(kid);
	free(nonce);
	free(sid);
	json_decref(v);
}

static const struct cf_test_case cases[] = {
	CF_TEST(keys),
	CF_TEST(chunking),
	CF_TEST(blob_ids),
	CF_TEST(packs),
	CF_TEST(objects),
	CF_TEST(tree),
	CF_TEST(tree_store_id),
	CF_TEST(snapshot_key_versions),
	CF_TEST(config_rekeyed),
	CF_TEST(sha256_named),
};

CF_TEST_MAIN(cases)
