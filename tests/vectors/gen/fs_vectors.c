/*
 * fs_vectors.c - generates tests/vectors/fs-v1.json and fs-v2.json from raw libsodium
 * calls, independently of coffer's fs and keystore code, following
 * docs/format/fs.md byte by byte.  Not built by meson: vectors are
 * generated once and never silently regenerated.
 *
 *   cc -o /tmp/fv fs_vectors.c $(pkg-config --cflags --libs libsodium)
 *   /tmp/fv > ../fs-v1.json; /tmp/fv v2 > ../fs-v2.json
 *   /tmp/fv gen > ../fs-gen-v1.json; /tmp/fv gen2 > ../fs-gen-v2.json
 *   /tmp/fv meta > ../fs-meta-v1.json
 *
 * Every nonce here is fixed, which the store itself never does (it draws
 * them from randombytes_buf): that is what makes the sealed bytes known
 * answers.  Needs a CPU with AES-NI and PCLMUL, since the vectors must
 * cover both ciphers; it refuses to write a partial file otherwise.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#define BLOCK 4096U

static void
seq(unsigned char *b, size_t n, unsigned start)
{
	size_t i;

	for (i = 0; i < n; i++)
		b[i] = (unsigned char)(start + i);
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

static char g_hexbuf[65];

/* Prints `ind"key": "hex"` and an optional comma. */
static void
hex(int ind, const char *key, const unsigned char *b, size_t n, int comma)
{
	static char h[2 * (BLOCK + 64) + 1];

	sodium_bin2hex(h, sizeof(h), b, n);
	printf("%*s\"%s\": \"%s\"%s\n", ind, "", key, h, comma ? "," : "");
}

/* A JSON string of printable ASCII or raw UTF-8 (no quote, backslash). */
static void
str(int ind, const char *key, const char *s, int comma)
{
	printf("%*s\"%s\": \"%s\"%s\n", ind, "", key, s, comma ? "," : "");
}

static void
b64(char *out, size_t cap, const unsigned char *b, size_t n)
{
	sodium_bin2base64(out, cap, b, n,
	    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
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

struct keys {
	unsigned char root[32], content[32], names[32], meta[32];
	unsigned char name_mac[32], name_enc[32];
};

static void
keys_derive(struct keys *k)
{
	crypto_kdf_derive_from_key(k->content, 32, 1, "cf-fsdat", k->root);
	crypto_kdf_derive_from_key(k->names, 32, 1, "cf-fsnam", k->root);
	crypto_kdf_derive_from_key(k->meta, 32, 1, "cf-fsmet", k->root);
	derive_id(k->name_mac, k->names, "name-mac", NULL, 0);
	derive_id(k->name_enc, k->names, "name-enc", NULL, 0);
}

/* SIV name encryption; returns the raw length (tag + name). */
static size_t
name_seal(const struct keys *k, const unsigned char diriv[16],
    const char *name, unsigned char raw[16 + 255])
{
	crypto_generichash_state st;
	unsigned char nonce[24] = { 0 };
	size_t len = strlen(name);

	crypto_generichash_init(&st, k->name_mac, 32, 16);
	crypto_generichash_update(&st, diriv, 16);
	crypto_generichash_update(&st, (const unsigned char *)name, len);
	crypto_generichash_final(&st, raw, 16);
	memcpy(nonce, raw, 16);
	crypto_stream_xchacha20_xor(raw + 16, (const unsigned char *)name,
	    len, nonce, k->name_enc);
	return 16 + len;
}

enum { GCM = 1, XCHACHA = 2 };

struct blockspec {
	uint64_t blk;
	size_t len;
	unsigned nonce_start;
};

/* The format version the vectors are made for: 1 (fs-v1.json) or 2. */
static int g_version = 1;

/*
 * Seals one block with a chosen nonce and prints its vector object.  In
 * version 2 the AAD ends with the final flag.
 */
static size_t
block(int cipher, const unsigned char fk[32], const unsigned char id[16],
    uint32_t kv, const struct blockspec *b, int final, unsigned char *out,
    int comma)
{
	static unsigned char pt[BLOCK];
	unsigned char ad[29];
	size_t nl = cipher == GCM ? 12 : 24, i, adl = g_version == 1 ? 28 : 29;
	unsigned long long clen;

	for (i = 0; i < b->len; i++)
		pt[i] = (unsigned char)((b->blk * 131 + i * 31 + 7) & 0xff);
	memcpy(ad, id, 16);
	le64(ad + 16, b->blk);
	le32(ad + 24, kv);
	ad[28] = (unsigned char)final;
	seq(out, nl, b->nonce_start);
	if (cipher == GCM)
		crypto_aead_aes256gcm_encrypt(out + nl, &clen, pt, b->len, ad,
		    adl, NULL, out, fk);
	else
		crypto_aead_xchacha20poly1305_ietf_encrypt(out + nl, &clen, pt,
		    b->len, ad, adl, NULL, out, fk);
	printf("        {\n");
	printf("          \"block\": %llu,\n", (unsigned long long)b->blk);
	if (g_version != 1)
		printf("          \"final\": %d,\n", final);
	hex(10, "nonce", out, nl, 1);
	hex(10, "aad", ad, adl, 1);
	hex(10, "plaintext", pt, b->len, 1);
	hex(10, "sealed", out, nl + (size_t)clen, 0);
	printf("        }%s\n", comma ? "," : "");
	return nl + (size_t)clen;
}

static void
file(const struct keys *k, int cipher, uint32_t kv, unsigned id_start,
    const struct blockspec *bs, size_t nb, size_t nfile, size_t psize,
    int comma)
{
	static unsigned char sealed[BLOCK + 64];
	unsigned char hdr[32], fk[32];
	size_t i, total = 32;

	memcpy(hdr, "\x89" "CFFS\r\n\x1a", 8);
	hdr[8] = (unsigned char)g_version;
	hdr[9] = 0;
	hdr[10] = (unsigned char)cipher;
	hdr[11] = 0;
	le32(hdr + 12, kv);
	seq(hdr + 16, 16, id_start);
	derive_id(fk, k->content, "fs-file", hdr + 16, 16);
	printf("    {\n");
	str(6, "cipher", cipher == GCM ? "aes-256-gcm" : "xchacha20-poly1305",
	    1);
	printf("      \"cipher_id\": %d,\n", cipher);
	printf("      \"key_version\": %lu,\n", (unsigned long)kv);
	hex(6, "file_id", hdr + 16, 16, 1);
	hex(6, "header", hdr, 32, 1);
	hex(6, "file_key", fk, 32, 1);
	printf("      \"blocks\": [\n");
	for (i = 0; i < nb; i++) {
		/* The file's last block is final; a block outside the file
		 * is sealed final too, to pin the flag's byte. */
		size_t n = block(cipher, fk, hdr + 16, kv, &bs[i],
		    i + 1 >= nfile, sealed, i + 1 < nb);

		if (i < nfile)
			total += n;
	}
	printf("      ],\n");
	/* The file made of the first nfile blocks (numbered 0..nfile-1). */
	printf("      \"file_blocks\": %zu,\n", nfile);
	printf("      \"plaintext_size\": %zu,\n", psize);
	printf("      \"backing_size\": %zu\n", total);
	printf("    }%s\n", comma ? "," : "");
}

static void
name(const struct keys *k, const unsigned char diriv[16], const char *n,
    const char *note, int comma)
{
	unsigned char raw[16 + 255];
	char enc[257];
	size_t rl;

	rl = name_seal(k, diriv, n, raw);
	b64(enc, sizeof(enc), raw, rl);
	printf("    {\n");
	str(6, "note", note, 1);
	hex(6, "diriv", diriv, 16, 1);
	hex(6, "name", (const unsigned char *)n, strlen(n), 1);
	hex(6, "tag", raw, 16, 1);
	str(6, "encoded", enc, 0);
	printf("    }%s\n", comma ? "," : "");
}

/*
 * fs-gen-v1.json: file generations.  The xattr value is version (1),
 * 7 zero bytes, u64le gen, file id, then tag = ID(content, "fs-gen",
 * the 32 bytes before it).  A log record is file id, u64le gen, and the
 * first 8 bytes of unkeyed BLAKE2b-128 of those 24 bytes.
 */
static void
gen_value(const struct keys *k, const unsigned char id[16], uint64_t gen,
    unsigned char out[64])
{
	memset(out, 0, 64);
	out[0] = 1;
	le64(out + 8, gen);
	memcpy(out + 16, id, 16);
	derive_id(out + 32, k->content, "fs-gen", out, 32);
}

/*
 * fs-gen-v2.json: value version 2, whose byte 1 holds flags (bit 0:
 * dense, the file has no holes); otherwise as version 1.
 */
static void
gen_value2(const struct keys *k, const unsigned char id[16], uint64_t gen,
    unsigned flags, unsigned char out[64])
{
	memset(out, 0, 64);
	out[0] = 2;
	out[1] = (unsigned char)flags;
	le64(out + 8, gen);
	memcpy(out + 16, id, 16);
	derive_id(out + 32, k->content, "fs-gen", out, 32);
}

static void
gen2_vectors(const struct keys *k, const struct keys *k2)
{
	static const struct {
		uint64_t gen;
		unsigned flags;
	} vs[] = { { 1, 1 }, { 1, 0 }, { 2, 1 }, { 0x0807060504030201ULL, 0 } };
	unsigned char id[16], v[64];
	size_t i;

	seq(id, 16, 0xa0);
	printf("{\n  \"format\": \"fs-gen\",\n  \"version\": 2,\n");
	hex(2, "root", k->root, 32, 1);
	hex(2, "content", k->content, 32, 1);
	printf("  \"values\": [\n");
	for (i = 0; i < sizeof(vs) / sizeof(vs[0]); i++) {
		gen_value2(k, id, vs[i].gen, vs[i].flags, v);
		printf("    {\n");
		hex(6, "file_id", id, 16, 1);
		printf("      \"gen\": \"%llu\",\n",
		    (unsigned long long)vs[i].gen);
		printf("      \"dense\": %s,\n", vs[i].flags ? "true" : "false");
		hex(6, "value", v, 64, 0);
		printf("    },\n");
	}
	/* Dense, generation 1, under another tenant's root key. */
	gen_value2(k2, id, 1, 1, v);
	printf("    {\n");
	hex(6, "other_root", k2->root, 32, 1);
	hex(6, "file_id", id, 16, 1);
	printf("      \"gen\": \"1\",\n");
	printf("      \"dense\": true,\n");
	hex(6, "value", v, 64, 0);
	printf("    }\n  ]\n}\n");
}

static void
gen_record(const unsigned char id[16], uint64_t gen, unsigned char out[32])
{
	unsigned char h[16];

	memcpy(out, id, 16);
	le64(out + 16, gen);
	crypto_generichash(h, 16, out, 24, NULL, 0);
	memcpy(out + 24, h, 8);
}

static void
gen_vectors(const struct keys *k, const struct keys *k2)
{
	static const uint64_t gens[] = { 1, 2, 0x0807060504030201ULL };
	static const uint64_t log_gens[] = { 1, 2, 0, 7 };
	unsigned char id[16], id2[16], v[64], rec[32];
	unsigned char file[16 + 4 * 32];
	size_t i;

	seq(id, 16, 0xa0);
	seq(id2, 16, 0xb0);
	printf("{\n  \"format\": \"fs-gen\",\n  \"version\": 1,\n");
	hex(2, "root", k->root, 32, 1);
	hex(2, "content", k->content, 32, 1);
	printf("  \"values\": [\n");
	for (i = 0; i < 3; i++) {
		gen_value(k, id, gens[i], v);
		printf("    {\n");
		hex(6, "file_id", id, 16, 1);
		printf("      \"gen\": \"%llu\",\n",
		    (unsigned long long)gens[i]);
		hex(6, "value", v, 64, 0);
		printf("    },\n");
	}
	/* The same file and generation under another tenant's root key. */
	gen_value(k2, id, 1, v);
	printf("    {\n");
	hex(6, "other_root", k2->root, 32, 1);
	hex(6, "file_id", id, 16, 1);
	printf("      \"gen\": \"1\",\n");
	hex(6, "value", v, 64, 0);
	printf("    }\n  ],\n");
	/* A log: header, then id gen 1, id gen 2, id forgotten, id2 gen 7. */
	memset(file, 0, sizeof(file));
	memcpy(file, "\x89" "CFGN\r\n\x1a", 8);
	file[8] = 1;
	printf("  \"log\": {\n");
	printf("    \"records\": [\n");
	for (i = 0; i < 4; i++) {
		gen_record(i == 3 ? id2 : id, log_gens[i], rec);
		memcpy(file + 16 + 32 * i, rec, 32);
		printf("      {\n");
		hex(8, "file_id", i == 3 ? id2 : id, 16, 1);
		printf("        \"gen\": \"%llu\",\n",
		    (unsigned long long)log_gens[i]);
		hex(8, "record", rec, 32, 0);
		printf("      }%s\n", i < 3 ? "," : "");
	}
	printf("    ],\n");
	hex(4, "file", file, sizeof(file), 0);
	printf("  }\n}\n");
}

/*
 * fs-meta-v1.json: markers of metadata versions 2 and 0x04030201
 * ([FS-STORE-8]), metadata journals ([FS-MKEY-2]) and an xattr stash
 * ([FS-MKEY-6]).
 */
static void
marker2(const struct keys *k, uint32_t m, unsigned nonce_start, int comma)
{
	static const char plain[16] = "coffer-store-v2";	/* NUL incl. */
	unsigned char b[4 + 24 + 16 + 16];
	unsigned long long clen;

	le32(b, m);
	seq(b + 4, 24, nonce_start);
	crypto_aead_xchacha20poly1305_ietf_encrypt(b + 28, &clen,
	    (const unsigned char *)plain, sizeof(plain), b, 4, NULL, b + 4,
	    k->meta);
	printf("    {\n");
	hex(6, "root", k->root, 32, 1);
	printf("      \"meta_version\": %u,\n", (unsigned)m);
	hex(6, "plaintext", (const unsigned char *)plain, sizeof(plain), 1);
	hex(6, "nonce", b + 4, 24, 1);
	hex(6, "bytes", b, 28 + (size_t)clen, 0);
	printf("    }%s\n", comma ? "," : "");
}

/* The first 8 bytes of BLAKE2b-128 (no key) of b[0..n) at b + n. */
static void
check8(unsigned char *b, size_t n)
{
	unsigned char h[16];

	crypto_generichash(h, 16, b, n, NULL, 0);
	memcpy(b + n, h, 8);
}

static void
journal(uint32_t from, uint32_t to, int comma)
{
	unsigned char b[32] = "\x89" "CFMK\r\n\x1a";

	memset(b + 8, 0, 24);
	b[8] = 1;
	le32(b + 16, from);
	le32(b + 20, to);
	check8(b, 24);
	printf("    { \"from\": %u, \"to\": %u, ", (unsigned)from,
	    (unsigned)to);
	sodium_bin2hex((char *)g_hexbuf, sizeof(g_hexbuf), b, 32);
	printf("\"bytes\": \"%s\" }%s\n", g_hexbuf, comma ? "," : "");
}

static void
meta_vectors(const struct keys *k, const struct keys *k2)
{
	static const char entry[] = "AAECAwQFBgcICQoLDA0ODxAR";
	static const char xname[] = "user.cf.abcdefghijklmnopqrstuv";
	static const unsigned char val[5] = { 1, 2, 3, 4, 5 };
	unsigned char b[14 + 64 + 64 + 5 + 8] = "\x89" "CFMX\r\n\x1a";
	size_t n = strlen(entry), x = strlen(xname), len;

	printf("{\n  \"format\": \"fs-meta\",\n  \"version\": 1,\n");
	printf("  \"markers\": [\n");
	marker2(k2, 2, 0xc0, 1);
	marker2(k, 0x04030201UL, 0xd0, 0);
	printf("  ],\n  \"journals\": [\n");
	journal(1, 2, 1);
	journal(3, 0x04030201UL, 0);
	printf("  ],\n  \"stash\": {\n");
	b[8] = (unsigned char)n;
	b[9] = (unsigned char)x;
	le32(b + 10, sizeof(val));
	memcpy(b + 14, entry, n);
	memcpy(b + 14 + n, xname, x);
	memcpy(b + 14 + n + x, val, sizeof(val));
	len = 14 + n + x + sizeof(val);
	check8(b, len);
	str(4, "entry", entry, 1);
	str(4, "xname", xname, 1);
	hex(4, "value", val, sizeof(val), 1);
	hex(4, "bytes", b, len + 8, 0);
	printf("  }\n}\n");
}

int
main(int argc, char **argv)
{
	static const struct blockspec gcm_blocks[] = {
		{ 0, BLOCK, 0x40 },
		{ 1, 1, 0x50 },
	};
	static const struct blockspec xch_blocks[] = {
		{ 0, BLOCK, 0x60 },
		{ 1, 1, 0x80 },
		/* Not part of the file above: a block number with high bits
		 * set, to pin the u64 LE block number in the AAD. */
		{ 0x100000002ULL, 13, 0xa0 },
	};
	static const char marker[16] = "coffer-store-v1";	/* NUL incl. */
	static const char *target = "../shared/report 2024.pdf";
	struct keys k, k2;
	unsigned char diriv[16], xattr_iv[16] = "coffer-xattr-iv";
	unsigned char raw[24 + 3100 + 16], mk[24 + 16 + 16];
	char longname[176], enc[4200];
	unsigned long long clen;
	size_t i, tl;

	if (sodium_init() < 0)
		return 1;
	if (!crypto_aead_aes256gcm_is_available()) {
		fprintf(stderr, "fs_vectors: AES-256-GCM is not available on "
		    "this CPU; the vectors need both ciphers\n");
		return 1;
	}
	seq(k.root, 32, 0x00);
	keys_derive(&k);
	seq(k2.root, 32, 0x20);
	keys_derive(&k2);

	if (argc > 1 && strcmp(argv[1], "meta") == 0) {
		meta_vectors(&k, &k2);
		return 0;
	}
	if (argc > 1 && strcmp(argv[1], "gen2") == 0) {
		gen2_vectors(&k, &k2);
		return 0;
	}
	if (argc > 1 && strcmp(argv[1], "gen") == 0) {
		gen_vectors(&k, &k2);
		return 0;
	}
	if (argc > 1 && strcmp(argv[1], "v2") == 0) {
		/* fs-v2.json: version-2 files, whose AAD has the final
		 * flag; everything else is as in version 1. */
		g_version = 2;
		printf("{\n");
		printf("  \"format\": \"fs\",\n  \"version\": 2,\n");
		hex(2, "root", k.root, 32, 1);
		printf("  \"files\": [\n");
		file(&k, GCM, 1, 0xa0, gcm_blocks, 2, 2, BLOCK + 1, 1);
		file(&k, XCHACHA, 0x04030201UL, 0xb0, xch_blocks, 3, 2,
		    BLOCK + 1, 0);
		printf("  ]\n}\n");
		return 0;
	}
	(void)argv;
	printf("{\n");
	printf("  \"format\": \"fs\",\n  \"version\": 1,\n");
	printf("  \"keys\": {\n");
	hex(4, "root", k.root, 32, 1);
	hex(4, "content", k.content, 32, 1);
	hex(4, "names", k.names, 32, 1);
	hex(4, "meta", k.meta, 32, 1);
	hex(4, "name_mac", k.name_mac, 32, 1);
	hex(4, "name_enc", k.name_enc, 32, 0);
	printf("  },\n");

	/* Files: header, file key, sealed blocks. */
	printf("  \"files\": [\n");
	file(&k, GCM, 1, 0xa0, gcm_blocks, 2, 2, BLOCK + 1, 1);
	/* key_version 0x04030201 pins its byte order in header and AAD;
	 * the file is blocks 0 and 1, the third block stands alone. */
	file(&k, XCHACHA, 0x04030201UL, 0xb0, xch_blocks, 3, 2, BLOCK + 1, 0);
	printf("  ],\n");

	/* Names. */
	seq(diriv, 16, 0xd0);
	for (i = 0; i < 175; i++) {
		/* Printable ASCII, every byte but '/'. */
		int c = '!' + (int)((i * 7) % 94);

		longname[i] = (char)(c == '/' ? 'Z' : c);
	}
	longname[175] = '\0';
	printf("  \"names\": [\n");
	name(&k, diriv, "a", "one byte", 1);
	name(&k, diriv, "hello.txt", "ordinary", 1);
	name(&k, diriv, "cf.diriv", "a tenant name that looks reserved", 1);
	name(&k, diriv, "r\xc3\xa9sum\xc3\xa9 \xe2\x9c\x93.pdf", "UTF-8", 1);
	name(&k, diriv, longname, "175 bytes, the longest", 1);
	name(&k, xattr_iv, "comment", "xattr name under the fixed xattr IV",
	    0);
	printf("  ],\n");

	/* The same name and diriv under another tenant's root. */
	printf("  \"other_tenant\": {\n");
	hex(4, "root", k2.root, 32, 1);
	hex(4, "diriv", diriv, 16, 1);
	hex(4, "name", (const unsigned char *)"hello.txt", 9, 1);
	{
		unsigned char r2[16 + 255];
		size_t rl = name_seal(&k2, diriv, "hello.txt", r2);

		b64(enc, sizeof(enc), r2, rl);
	}
	str(4, "encoded", enc, 0);
	printf("  },\n");

	/* Symlink target. */
	tl = strlen(target);
	seq(raw, 24, 0x80);
	crypto_aead_xchacha20poly1305_ietf_encrypt(raw + 24, &clen,
	    (const unsigned char *)target, tl,
	    (const unsigned char *)"coffer-symlink-v1", 17, NULL, raw, k.meta);
	b64(enc, sizeof(enc), raw, 24 + (size_t)clen);
	printf("  \"symlink\": {\n");
	hex(4, "target", (const unsigned char *)target, tl, 1);
	hex(4, "nonce", raw, 24, 1);
	hex(4, "aad", (const unsigned char *)"coffer-symlink-v1", 17, 1);
	str(4, "encoded", enc, 0);
	printf("  },\n");

	/* Long names: the entry is cf.L. + base64url(BLAKE2b-256(encoded)),
	 * a sidecar "<entry>.n" holds the encoded name. */
	printf("  \"long_names\": [\n");
	for (i = 0; i < 2; i++) {
		size_t n = i == 0 ? 176 : 255, j;
		unsigned char r[16 + 255], h[32];
		char ln[256], entry[64];

		for (j = 0; j < n; j++)
			ln[j] = (char)('a' + (int)((j * 5 + i) % 26));
		ln[n] = '\0';
		b64(enc, sizeof(enc), r, name_seal(&k, diriv, ln, r));
		crypto_generichash(h, 32, (const unsigned char *)enc,
		    strlen(enc), NULL, 0);
		memcpy(entry, "cf.L.", 5);
		b64(entry + 5, sizeof(entry) - 5, h, 32);
		printf("    {\n");
		hex(6, "diriv", diriv, 16, 1);
		hex(6, "name", (const unsigned char *)ln, n, 1);
		str(6, "encoded", enc, 1);
		str(6, "entry", entry, 0);
		printf("    }%s\n", i == 0 ? "," : "");
	}
	printf("  ],\n");

	/* A symlink target whose encoding exceeds 4095 bytes. */
	{
		static char lt[4096];
		unsigned char *lraw = malloc(24 + 4095 + 16), h[32];
		char *lenc = malloc(8192), entry[64];
		size_t j;

		if (lraw == NULL || lenc == NULL)
			return 1;
		for (j = 0; j < 4095; j++)
			lt[j] = (char)('A' + (int)(j % 26));
		seq(lraw, 24, 0x90);
		crypto_aead_xchacha20poly1305_ietf_encrypt(lraw + 24, &clen,
		    (const unsigned char *)lt, 4095,
		    (const unsigned char *)"coffer-symlink-v1", 17, NULL, lraw,
		    k.meta);
		b64(lenc, 8192, lraw, 24 + (size_t)clen);
		crypto_generichash(h, 32, (const unsigned char *)lenc,
		    strlen(lenc), NULL, 0);
		memcpy(entry, "cf.T.", 5);
		b64(entry + 5, sizeof(entry) - 5, h, 32);
		printf("  \"long_symlink\": {\n");
		printf("    \"target_len\": 4095,\n");
		str(4, "target_pattern", "A..Z repeated", 1);
		hex(4, "nonce", lraw, 24, 1);
		str(4, "encoded", lenc, 1);
		str(4, "link", entry, 0);
		printf("  },\n");
		free(lraw);
		free(lenc);
	}

	/* Store marker. */
	seq(mk, 24, 0xc0);
	crypto_aead_xchacha20poly1305_ietf_encrypt(mk + 24, &clen,
	    (const unsigned char *)marker, sizeof(marker), NULL, 0, NULL, mk,
	    k.meta);
	printf("  \"store_marker\": {\n");
	hex(4, "plaintext", (const unsigned char *)marker, sizeof(marker), 1);
	hex(4, "nonce", mk, 24, 1);
	hex(4, "bytes", mk, 24 + (size_t)clen, 0);
	printf("  }\n}\n");
	return 0;
}
