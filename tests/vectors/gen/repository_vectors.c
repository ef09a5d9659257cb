/*
 * repository_vectors.c - generates tests/vectors/repository-v1.json from
 * raw libsodium and libzstd calls, independently of coffer's backup and
 * keystore code, following docs/format/repository.md byte by byte.  Not
 * built by meson: vectors are generated once and never silently
 * regenerated.
 *
 *   cc -o /tmp/rv repository_vectors.c \
 *       $(pkg-config --cflags --libs libsodium libzstd)
 *   /tmp/rv > ../repository-v1.json
 *
 * Key ids and nonces are fixed here (the library draws them from
 * randombytes_buf): that is what makes sealed bytes known answers.
 * Needs AES-NI + PCLMUL for the AES-256-GCM pack; refuses otherwise.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <zstd.h>

enum { GCM = 1, XCHACHA = 2 };

static void
seq(unsigned char *b, size_t n, unsigned start)
{
	size_t i;

	for (i = 0; i < n; i++)
		b[i] = (unsigned char)(start + i);
}

static void
le16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

static void
le32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
	p[2] = (unsigned char)(v >> 16);
	p[3] = (unsigned char)(v >> 24);
}

static void
le64(unsigned char *p, uint64_t v)
{
	le32(p, (uint32_t)v);
	le32(p + 4, (uint32_t)(v >> 32));
}

static uint64_t
rd64(const unsigned char *p)
{
	uint64_t v = 0;
	int i;

	for (i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void
hex(int ind, const char *key, const unsigned char *b, size_t n, int comma)
{
	char *h = malloc(2 * n + 1);

	sodium_bin2hex(h, 2 * n + 1, b, n);
	printf("%*s\"%s\": \"%s\"%s\n", ind, "", key, h, comma ? "," : "");
	free(h);
}

/* BLAKE2b-256(key; len(label) || label || id), as cf_ks_derive_id. */
static void
derive_id(unsigned char out[32], const unsigned char key[32],
    const char *label, const unsigned char *id, size_t idlen)
{
	crypto_generichash_state st;
	unsigned char ll = (unsigned char)strlen(label);

	crypto_generichash_init(&st, key, 32, 32);
	crypto_generichash_update(&st, &ll, 1);
	crypto_generichash_update(&st, (const unsigned char *)label, ll);
	crypto_generichash_update(&st, id, idlen);
	crypto_generichash_final(&st, out, 32);
}

static unsigned char root[32], D[32], C[32], I[32], G[32];
static uint64_t gear[256];

static void
keys(void)
{
	unsigned char g[2048], nonce[12] = { 0 };
	int i;

	seq(root, 32, 0);
	crypto_kdf_derive_from_key(D, 32, 1, "cf-bkdat", root);
	crypto_kdf_derive_from_key(C, 32, 1, "cf-bkcid", root);
	derive_id(I, C, "bk-chunk-id", NULL, 0);
	derive_id(G, C, "bk-gear", NULL, 0);
	crypto_stream_chacha20_ietf(g, sizeof(g), nonce, G);
	for (i = 0; i < 256; i++)
		gear[i] = rd64(g + 8 * i);
}

static size_t
cut(const unsigned char *buf, size_t n, size_t min, size_t avg, size_t max)
{
	unsigned bits = 0;
	uint64_t ms, ml, fp = 0;
	size_t i, normal;

	while (((size_t)1 << bits) < avg)
		bits++;
	ms = ~(uint64_t)0 << (64 - (bits + 2));
	ml = ~(uint64_t)0 << (64 - (bits - 2));
	if (n <= min)
		return n;
	if (n > max)
		n = max;
	normal = avg < n ? avg : n;
	for (i = min; i < normal; i++) {
		fp = (fp << 1) + gear[buf[i]];
		if (!(fp & ms))
			return i + 1;
	}
	for (; i < n; i++) {
		fp = (fp << 1) + gear[buf[i]];
		if (!(fp & ml))
			return i + 1;
	}
	return n;
}

static void
chunking(const char *name, size_t min, size_t avg, size_t max, int comma)
{
	static unsigned char *s;
	unsigned char nonce[12] = { 0 }, key[32];
	size_t n = 4U << 20, off = 0, k = 0;

	if (s == NULL) {
		s = malloc(n);
		seq(key, 32, 0);
		crypto_stream_chacha20_ietf(s, n, nonce, key);
	}
	printf("    \"%s\": {\"min\": %zu, \"avg\": %zu, \"max\": %zu, "
	    "\"cuts\": [", name, min, avg, max);
	while (off < n) {
		size_t l = cut(s + off, n - off, min, avg, max);

		printf("%s%zu", k++ ? ", " : "", l);
		off += l;
	}
	printf("]}%s\n", comma ? "," : "");
}

static void
blob_id(unsigned char id[32], const unsigned char *p, size_t n)
{
	crypto_generichash(id, 32, p, n, I, 32);
}

/* ---- objects ---------------------------------------------------------------- */

/* Byte 11: 0x80 names objects by SHA-256 ([BK-LAY-3], 2026-11-25). */
static unsigned char hflags;

/* The storage id ([BK-LAY-3]) of an object made with hflags. */
static void
storage_id(unsigned char sid[32], const unsigned char *o, size_t len)
{
	if (hflags & 0x80)
		crypto_hash_sha256(sid, o, len);
	else
		crypto_generichash(sid, 32, o, len, NULL, 0);
}

static void
header(unsigned char h[32], int kind, int cipher, unsigned kid_start)
{
	memcpy(h, "\x89" "CFBK\r\n\x1a", 8);
	h[8] = 1;
	h[9] = (unsigned char)kind;
	h[10] = (unsigned char)cipher;
	h[11] = hflags;
	le32(h + 12, 1);
	seq(h + 16, 16, kid_start);
}

static void
aead(int cipher, unsigned char *c, const unsigned char *m, size_t mlen,
    const unsigned char *ad, size_t adlen, const unsigned char *nonce,
    const unsigned char *key)
{
	unsigned long long clen;

	if (cipher == GCM)
		crypto_aead_aes256gcm_encrypt(c, &clen, m, mlen, ad, adlen,
		    NULL, nonce, key);
	else
		crypto_aead_xchacha20poly1305_ietf_encrypt(c, &clen, m, mlen,
		    ad, adlen, NULL, nonce, key);
}

struct blob {
	int type;
	const unsigned char *p;
	size_t n;
	int compress;
};

/* Builds a pack; returns its length in out; descs (44 each) in d. */
static size_t
pack(int cipher, const struct blob *b, size_t nb, unsigned char *out,
    unsigned char *d)
{
	unsigned char key[32], ad[76], *stored;
	size_t nl = cipher == GCM ? 12 : 24, off = 32, i, sl;

	header(out, 1, cipher, 0xa0);
	derive_id(key, D, "bk-object", out + 16, 16);
	for (i = 0; i < nb; i++) {
		unsigned char *desc = d + 44 * i;
		int comp = 0;

		stored = malloc(b[i].n + 64);
		sl = b[i].n;
		if (b[i].compress && b[i].n > 1) {
			size_t r = ZSTD_compress(stored, b[i].n - 1, b[i].p,
			    b[i].n, 3);

			if (!ZSTD_isError(r)) {
				comp = 1;
				sl = r;
			}
		}
		if (!comp)
			memcpy(stored, b[i].p, b[i].n);
		desc[0] = (unsigned char)b[i].type;
		desc[1] = (unsigned char)comp;
		le16(desc + 2, 0);
		le32(desc + 4, (uint32_t)(nl + sl + 16));
		le32(desc + 8, (uint32_t)b[i].n);
		blob_id(desc + 12, b[i].p, b[i].n);
		seq(out + off, nl, 0x10 * (unsigned)(i + 1));
		memcpy(ad, out, 32);
		memcpy(ad + 32, desc, 44);
		aead(cipher, out + off + nl, stored, sl, ad, 76, out + off, key);
		off += nl + sl + 16;
		free(stored);
	}
	{
		size_t tl = 4 + 44 * nb;
		unsigned char *t = malloc(tl);

		le32(t, (uint32_t)nb);
		memcpy(t + 4, d, 44 * nb);
		seq(out + off, nl, 0xe0);
		aead(cipher, out + off + nl, t, tl, out, 32, out + off, key);
		off += nl + tl + 16;
		le32(out + off, (uint32_t)(nl + tl + 16));
		off += 4;
		free(t);
	}
	return off;
}

static void
print_pack(const char *name, int cipher, const struct blob *b, size_t nb,
    int comma)
{
	static unsigned char out[1 << 20], d[44 * 8];
	unsigned char sid[32];
	size_t len = pack(cipher, b, nb, out, d), i;

	storage_id(sid, out, len);
	printf("    {\n      \"name\": \"%s\",\n", name);
	printf("      \"cipher\": \"%s\",\n",
	    cipher == GCM ? "aes-256-gcm" : "xchacha20-poly1305");
	hex(6, "key_id", out + 16, 16, 1);
	hex(6, "header", out, 32, 1);
	printf("      \"blobs\": [\n");
	for (i = 0; i < nb; i++) {
		unsigned char nonce[24];

		seq(nonce, cipher == GCM ? 12 : 24, 0x10 * (unsigned)(i + 1));
		printf("        {\n");
		printf("          \"type\": %d,\n", b[i].type);
		hex(10, "nonce", nonce, cipher == GCM ? 12 : 24, 1);
		hex(10, "descriptor", d + 44 * i, 44, 1);
		hex(10, "plaintext", b[i].p, b[i].n, 0);
		printf("        }%s\n", i + 1 < nb ? "," : "");
	}
	printf("      ],\n");
	{
		unsigned char tn[24];

		seq(tn, cipher == GCM ? 12 : 24, 0xe0);
		hex(6, "trailer_nonce", tn, cipher == GCM ? 12 : 24, 1);
	}
	hex(6, "pack", out, len, 1);
	hex(6, "storage_id", sid, 32, 0);
	printf("    }%s\n", comma ? "," : "");
	/* Keep the last xchacha "mixed" pack for the index vector. */
}

/* Seals a non-pack object with key id b0.. and a fixed nonce. */
static int last_comp;

static size_t
object(int kind, const unsigned char *p, size_t n, int compress,
    unsigned char *out)
{
	unsigned char key[32], *body = malloc(n + 8);
	size_t sl = n;
	int comp = 0;

	header(out, kind, XCHACHA, 0xb0);
	derive_id(key, D, "bk-object", out + 16, 16);
	seq(out + 32, 24, 0x40);
	if (compress) {
		size_t r = ZSTD_compress(body + 8, n - 1, p, n, 3);

		if (!ZSTD_isError(r)) {
			comp = 1;
			sl = r;
		}
	}
	if (!comp)
		memcpy(body + 8, p, n);
	last_comp = comp;
	body[0] = (unsigned char)comp;
	body[1] = body[2] = body[3] = 0;
	le32(body + 4, (uint32_t)n);
	aead(XCHACHA, out + 56, body, 8 + sl, out, 32, out + 32, key);
	free(body);
	return 56 + 8 + sl + 16;
}

static void
print_object(const char *name, int kind, const unsigned char *p, size_t n,
    int compress, int comma)
{
	static unsigned char out[1 << 16];
	unsigned char sid[32];
	size_t len = object(kind, p, n, compress, out);

	storage_id(sid, out, len);
	printf("    {\n      \"name\": \"%s\",\n      \"kind\": %d,\n", name,
	    kind);
	printf("      \"compressed\": %s,\n", last_comp ? "true" : "false");
	hex(6, "key_id", out + 16, 16, 1);
	hex(6, "nonce", out + 32, 24, 1);
	hex(6, "plaintext", p, n, 1);
	hex(6, "object", out, len, 1);
	hex(6, "storage_id", sid, 32, 0);
	printf("    }%s\n", comma ? "," : "");
}

/* ---- tree ---------------------------------------------------------------------- */

static size_t
node(unsigned char *o, int type, uint32_t mode, const char *name,
    uint64_t size, uint64_t rdev, uint64_t group, uint16_t nx, uint32_t ni)
{
	size_t nl = strlen(name);

	memset(o, 0, 72);
	o[0] = (unsigned char)type;
	le16(o + 2, (uint16_t)nl);
	le32(o + 4, mode);
	le32(o + 8, 1000);
	le32(o + 12, 100);
	le64(o + 16, 1767225600000000001ULL);
	le64(o + 24, 1767225600000000002ULL);
	le64(o + 32, 1767225600000000003ULL);
	le64(o + 40, size);
	le64(o + 48, rdev);
	le64(o + 56, group);
	le16(o + 64, nx);
	le32(o + 68, ni);
	memcpy(o + 72, name, nl);
	return 72 + nl;
}

/* Nodes sorted by name: "dir", "file", "link", "pipe". */
static size_t
tree(unsigned char *o, const unsigned char abc_id[32])
{
	size_t off = 4;

	le32(o, 4);
	off += node(o + off, 2, 0755, "dir", 0, 0, 0, 0, 1);
	memset(o + off, 0x11, 32);
	off += 32;
	off += node(o + off, 1, 0644, "file", 3 + 4096, 0, 5, 1, 2);
	o[off] = 6;
	memcpy(o + off + 1, "user.k", 6);
	le32(o + off + 7, 1);
	o[off + 11] = 'v';
	off += 12;
	o[off] = 1;
	memcpy(o + off + 1, abc_id, 32);
	off += 33;
	o[off] = 2;
	le64(o + off + 1, 4096);
	off += 9;
	off += node(o + off, 3, 0777, "link", 0, 0, 0, 0, 4);
	memcpy(o + off, "file", 4);
	off += 4;
	off += node(o + off, 4, 0600, "pipe", 0, 0, 0, 0, 0);
	return off;
}

/*
 * A file node with the store identity (flag 0x01 at offset 1): "f", size
 * 3, items: blob abc; file id a0..af, gen 0x0807060504030201, ino
 * 0x1817161514131211.
 */
static size_t
tree_store_id(unsigned char *o, const unsigned char abc_id[32])
{
	size_t off = 4;

	le32(o, 1);
	off += node(o + off, 1, 0600, "f", 3, 0, 0, 0, 1);
	o[4 + 1] = 0x01;
	o[off] = 1;
	memcpy(o + off + 1, abc_id, 32);
	off += 33;
	seq(o + off, 16, 0xa0);
	le64(o + off + 16, 0x0807060504030201ULL);
	le64(o + off + 24, 0x1817161514131211ULL);
	off += 32;
	return off;
}

/*
 * Added 2026-11-24 ([BK-CFG-2]); nothing above changed.  A config
 * re-keyed to root key version 2 (root 20..3f): it carries C of version 1
 * (root 00..1f) and is sealed under D of version 2.
 */
static void
config_rekeyed(void)
{
	static const char *plain_v1 = "{\"chunker\":{\"avg\":1048576,"
	    "\"max\":8388608,\"min\":524288},\"created\":1767225600,"
	    "\"repo_id\":\"c0c1c2c3c4c5c6c7c8c9cacbcccdcecf\","
	    "\"tenant\":\"a1a2a3a4a5a6a7a8a9aaabacadaeafb0\"}";
	unsigned char root2[32], D2[32], X[32], key[32], sid[32];
	unsigned char out[1024], body[1024];
	char plain[1024], ch[65];
	size_t n, sl;
	int comp = 0;

	seq(root2, 32, 0x20);
	crypto_kdf_derive_from_key(D2, 32, 1, "cf-bkdat", root2);
	derive_id(X, C, "bk-index-key", NULL, 0);
	sodium_bin2hex(ch, sizeof(ch), C, 32);
	n = (size_t)snprintf(plain, sizeof(plain), "{\"chunk_key\":\"%s\","
	    "\"chunk_version\":1,%s", ch, plain_v1 + 1);
	/* The header: version 1, kind 5 (config), key_version 2. */
	memcpy(out, "\x89" "CFBK\r\n\x1a", 8);
	out[8] = 1;
	out[9] = 5;
	out[10] = XCHACHA;
	out[11] = 0;
	le32(out + 12, 2);
	seq(out + 16, 16, 0xc0);
	derive_id(key, D2, "bk-object", out + 16, 16);
	seq(out + 32, 24, 0x60);
	sl = n;
	{
		/* [BK-SOB-2]: zstd level 3 if strictly shorter. */
		size_t r = ZSTD_compress(body + 8, n - 1, plain, n, 3);

		if (!ZSTD_isError(r)) {
			comp = 1;
			sl = r;
		}
	}
	if (!comp)
		memcpy(body + 8, plain, n);
	body[0] = (unsigned char)comp;
	body[1] = body[2] = body[3] = 0;
	le32(body + 4, (uint32_t)n);
	aead(XCHACHA, out + 56, body, 8 + sl, out, 32, out + 32, key);
	n = 56 + 8 + sl + 16;
	crypto_generichash(sid, 32, out, n, NULL, 0);
	printf("  \"config_rekeyed\": {\n");
	printf("    \"note\": \"chunk key C of version 1 (root 00..1f) "
	    "carried by a config sealed under version 2 (root2)\",\n");
	hex(4, "root2", root2, 32, 1);
	hex(4, "data2", D2, 32, 1);
	hex(4, "chunk", C, 32, 1);
	hex(4, "id", I, 32, 1);
	hex(4, "gear", G, 32, 1);
	hex(4, "index", X, 32, 1);
	hex(4, "plaintext_plain", (const unsigned char *)plain_v1,
	    strlen(plain_v1), 1);
	hex(4, "plaintext", (const unsigned char *)plain, strlen(plain), 1);
	printf("    \"compressed\": %s,\n", comp ? "true" : "false");
	hex(4, "key_id", out + 16, 16, 1);
	hex(4, "nonce", out + 32, 24, 1);
	hex(4, "object", out, n, 1);
	hex(4, "storage_id", sid, 32, 0);
	printf("  },\n");
}

int
main(void)
{
	static unsigned char text[7000], rnd[64], tr[1024], rawpack[1 << 16];
	static unsigned char tg[256];
	static unsigned char d[44 * 8], idx[4096];
	unsigned char id[32], abc_id[32], nonce[12] = { 0 }, k64[32];
	const char *snap, *offline;
	size_t i, tlen, plen, ilen, tglen;
	struct blob mixed[3], raw[2];

	if (sodium_init() < 0 || !crypto_aead_aes256gcm_is_available()) {
		fprintf(stderr, "needs libsodium and AES-NI\n");
		return 1;
	}
	keys();
	for (i = 0; i < sizeof(text); i++)
		text[i] = (unsigned char)"coffer "[i % 7];
	seq(k64, 32, 0x80);
	crypto_stream_chacha20_ietf(rnd, sizeof(rnd), nonce, k64);
	blob_id(abc_id, (const unsigned char *)"abc", 3);
	tlen = tree(tr, abc_id);
	tglen = tree_store_id(tg, abc_id);

	printf("{\n");
	printf("  \"format\": \"coffer backup repository v1 "
	    "(docs/format/repository.md)\",\n");
	printf("  \"generator\": \"tests/vectors/gen/repository_vectors.c "
	    "(libsodium %s, libzstd %s)\",\n", sodium_version_string(),
	    ZSTD_versionString());
	hex(2, "root", root, 32, 1);
	printf("  \"key_version\": 1,\n");
	printf("  \"keys\": {\n");
	hex(4, "data", D, 32, 1);
	hex(4, "chunk", C, 32, 1);
	hex(4, "id", I, 32, 1);
	hex(4, "gear", G, 32, 1);
	{
		unsigned char kid[16], ok[32];

		seq(kid, 16, 0xa0);
		derive_id(ok, D, "bk-object", kid, 16);
		hex(4, "object_key_a0", ok, 32, 0);
	}
	printf("  },\n");
	printf("  \"gear\": {\"0\": \"%016llx\", \"1\": \"%016llx\", "
	    "\"255\": \"%016llx\"},\n", (unsigned long long)gear[0],
	    (unsigned long long)gear[1], (unsigned long long)gear[255]);
	printf("  \"chunking\": {\n");
	printf("    \"stream\": \"crypto_stream_chacha20_ietf(4 MiB, nonce "
	    "0^12, key 00..1f)\",\n");
	chunking("small", 4096, 16384, 65536, 1);
	chunking("default", 524288, 1048576, 8388608, 0);
	printf("  },\n");
	printf("  \"blob_ids\": [\n");
	{
		const char *p[] = { "", "abc", "coffer" };

		for (i = 0; i < 3; i++) {
			blob_id(id, (const unsigned char *)p[i], strlen(p[i]));
			printf("    {\n");
			hex(6, "plaintext", (const unsigned char *)p[i],
			    strlen(p[i]), 1);
			hex(6, "id", id, 32, 0);
			printf("    }%s\n", i < 2 ? "," : "");
		}
	}
	printf("  ],\n");
	mixed[0] = (struct blob){ 1, text, sizeof(text), 1 };
	mixed[1] = (struct blob){ 1, rnd, sizeof(rnd), 1 };
	mixed[2] = (struct blob){ 2, tr, tlen, 1 };
	raw[0] = (struct blob){ 1, (const unsigned char *)"abc", 3, 0 };
	raw[1] = (struct blob){ 2, tr, tlen, 0 };
	printf("  \"packs\": [\n");
	print_pack("mixed", GCM, mixed, 3, 1);
	print_pack("raw", GCM, raw, 2, 1);
	print_pack("mixed", XCHACHA, mixed, 3, 1);
	print_pack("raw", XCHACHA, raw, 2, 0);
	printf("  ],\n");

	/* The index of the xchacha "raw" pack. */
	plen = pack(XCHACHA, raw, 2, rawpack, d);
	crypto_generichash(id, 32, rawpack, plen, NULL, 0);
	le32(idx, 1);
	memcpy(idx + 4, id, 32);
	memcpy(idx + 36, rawpack, 32);
	le32(idx + 68, 2);
	memcpy(idx + 72, d, 88);
	ilen = 72 + 88;
	offline = "{\"consistency\":\"offline\",\"hostname\":\"host\","
	    "\"paths\":[\"/\"],\"stats\":{\"bytes\":4099,\"dirs\":1,"
	    "\"duration_ns\":0,\"files\":1,\"new_blobs\":2,\"new_bytes\":0,"
	    "\"pause_ns\":0,\"stored_bytes\":0},\"tags\":[\"tag\",\"tag\","
	    "\"tag\",\"tag\",\"tag\",\"tag\",\"tag\",\"tag\",\"tag\",\"tag\"],"
	    "\"tenant\":\"a1a2a3a4a5a6a7a8a9aaabacadaeafb0\","
	    "\"time\":1767225600000000000,\"tree\":"
	    "\"0000000000000000000000000000000000000000000000000000000000000000\"}";
	snap = offline;
	printf("  \"objects\": [\n");
	print_object("index", 2, idx, ilen, 0, 1);
	print_object("snapshot-raw", 3, (const unsigned char *)snap,
	    strlen(snap), 0, 1);
	print_object("snapshot-zstd", 3, (const unsigned char *)snap,
	    strlen(snap), 1, 0);
	printf("  ],\n");
	printf("  \"tree\": {\n");
	printf("    \"nodes\": \"dir (subtree 11..11), file (size 4099, "
	    "xattr user.k=v, link group 5, items: blob abc, hole 4096), "
	    "link -> file, pipe; uid 1000, gid 100, times "
	    "1767225600000000001/2/3\",\n");
	hex(4, "encoding", tr, tlen, 1);
	hex(4, "abc_id", abc_id, 32, 0);
	printf("  },\n");
	/* Added 2026-11-24 (store identity of a file); nothing above changed. */
	printf("  \"tree_store_id\": {\n");
	printf("    \"nodes\": \"f (mode 0600, size 3, items: blob abc, "
	    "file id a0..af, gen 0x0807060504030201, ino 0x1817161514131211); "
	    "uid 1000, gid 100, "
	    "times 1767225600000000001/2/3\",\n");
	hex(4, "encoding", tg, tglen, 0);
	printf("  },\n");
	/* Added 2026-11-24 ([BK-SNAP-2]); nothing above changed. */
	snap = "{\"consistency\":\"cow\",\"hostname\":\"host\","
	    "\"key_versions\":[1,2,7],\"parent\":"
	    "\"abababababababababababababababababababababababababababababababab\","
	    "\"paths\":[\"/\"],\"stats\":{\"bytes\":4099,\"dirs\":1,"
	    "\"duration_ns\":0,\"files\":1,\"new_blobs\":2,\"new_bytes\":0,"
	    "\"pause_ns\":0,\"stored_bytes\":0},\"tags\":[],"
	    "\"tenant\":\"a1a2a3a4a5a6a7a8a9aaabacadaeafb0\","
	    "\"time\":1767225600000000000,\"tree\":"
	    "\"0000000000000000000000000000000000000000000000000000000000000000\"}";
	printf("  \"snapshot_key_versions\": {\n");
	printf("    \"key_versions\": [1, 2, 7],\n");
	hex(4, "encoding", (const unsigned char *)snap, strlen(snap), 0);
	printf("  },\n");
	config_rekeyed();
	/*
	 * Added 2026-11-25 ([BK-LAY-3]): objects whose byte 11 has bit 7
	 * set, named by SHA-256; nothing above changed.
	 */
	hflags = 0x80;
	snap = offline;	/* the first snapshot's plaintext */
	printf("  \"sha256_named\": {\n");
	printf("  \"packs\": [\n");
	print_pack("raw", GCM, raw, 2, 1);
	print_pack("raw", XCHACHA, raw, 2, 0);
	printf("  ],\n");
	printf("  \"objects\": [\n");
	print_object("snapshot-raw", 3, (const unsigned char *)snap,
	    strlen(snap), 0, 0);
	printf("  ]\n");
	printf("  }\n");
	printf("}\n");
	return 0;
}
