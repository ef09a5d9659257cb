/*
 * repository_wo_vectors.c - generates tests/vectors/repository-wo-v2.json
 * (docs/format/repository.md, Write-only objects; docs/format/
 * writer-key.md) from raw libsodium calls, independently of coffer's
 * backup and keystore code.  Not built by meson: vectors are generated
 * once and never silently regenerated.
 *
 *   cc -o /tmp/rwv repository_wo_vectors.c \
 *       $(pkg-config --cflags --libs libsodium)
 *   /tmp/rwv > ../repository-wo-v2.json
 *
 * crypto_box_seal draws a fresh ephemeral key pair; here it is fixed and
 * the sealed box is built as libsodium builds it (ephemeral public key
 * || crypto_box_easy under the nonce BLAKE2b-192(epk || pk)), so that
 * sealed keys are known answers.  Object keys, key ids (of index
 * objects) and nonces are fixed too.  XChaCha20-Poly1305 only, so any
 * CPU can check them.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

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

static unsigned char root[32], D[32], C[32], I[32], G[32], X[32];
static unsigned char bpk[32], bsk[32];

static void
keys(void)
{
	unsigned char seed[32];

	seq(root, 32, 0);
	crypto_kdf_derive_from_key(D, 32, 1, "cf-bkdat", root);
	crypto_kdf_derive_from_key(C, 32, 1, "cf-bkcid", root);
	derive_id(I, C, "bk-chunk-id", NULL, 0);
	derive_id(G, C, "bk-gear", NULL, 0);
	derive_id(X, C, "bk-index-key", NULL, 0);
	derive_id(seed, D, "bk-box", NULL, 0);
	crypto_box_seed_keypair(bpk, bsk, seed);
}

/* crypto_box_seal(m = key, bpk) with the ephemeral secret key esk. */
static void
seal_key(unsigned char box[80], const unsigned char key[32],
    const unsigned char esk[32])
{
	unsigned char epk[32], nonce[24];
	crypto_generichash_state st;

	crypto_scalarmult_base(epk, esk);
	crypto_generichash_init(&st, NULL, 0, 24);
	crypto_generichash_update(&st, epk, 32);
	crypto_generichash_update(&st, bpk, 32);
	crypto_generichash_final(&st, nonce, 24);
	memcpy(box, epk, 32);
	if (crypto_box_easy(box + 32, key, 32, nonce, bpk, esk) != 0)
		abort();
}

/* A version 2 header; kid NULL: BLAKE2b-128 of box (keying 1). */
static void
header(unsigned char h[32], unsigned kind, unsigned keying,
    const unsigned char *kid, const unsigned char *box)
{
	memcpy(h, "\x89" "CFBK\r\n\x1a", 8);
	h[8] = 2;
	h[9] = (unsigned char)kind;
	h[10] = 2;		/* XChaCha20-Poly1305 */
	h[11] = (unsigned char)keying;
	le32(h + 12, 1);
	if (kid != NULL)
		memcpy(h + 16, kid, 16);
	else
		crypto_generichash(h + 16, 16, box, 80, NULL, 0);
}

static size_t
aead(unsigned char *c, const unsigned char *m, size_t mlen,
    const unsigned char *ad, size_t adlen, const unsigned char *nonce,
    const unsigned char key[32])
{
	unsigned long long cl;

	crypto_aead_xchacha20poly1305_ietf_encrypt(c, &cl, m, mlen, ad, adlen,
	    NULL, nonce, key);
	return (size_t)cl;
}

/* A sealed object body: u8 0 || 0^3 || u32le ulen || plaintext. */
static size_t
body(unsigned char *b, const unsigned char *p, size_t len)
{
	memset(b, 0, 8);
	le32(b + 4, (uint32_t)len);
	memcpy(b + 8, p, len);
	return 8 + len;
}

static void
object(int comma, unsigned kind, const unsigned char *obj, size_t len,
    const unsigned char *plain, size_t plen)
{
	unsigned char sid[32];

	crypto_generichash(sid, 32, obj, len, NULL, 0);
	printf("    {\n      \"kind\": %u,\n", kind);
	hex(6, "object", obj, len, 1);
	hex(6, "storage_id", sid, 32, 1);
	hex(6, "plaintext", plain, plen, 0);
	printf("    }%s\n", comma ? "," : "");
}

int
main(void)
{
	static const char blob[] = "write-only vector blob: sealed to the "
	    "tenant's backup public key";
	static const char snap[] = "{\"consistency\":\"stream\",\"hostname\":"
	    "\"agent\",\"paths\":[\"/db.sql\"],\"stats\":{\"bytes\":0,"
	    "\"dirs\":0,\"duration_ns\":0,\"files\":1,\"new_blobs\":0,"
	    "\"new_bytes\":0,\"pause_ns\":0,\"stored_bytes\":0},\"tags\":[],"
	    "\"tenant\":\"a1a2a300000000000000000000000000\",\"time\":"
	    "1767225600000000000,\"tree\":\"00000000000000000000000000000000"
	    "00000000000000000000000000000000\"}";
	unsigned char K[32], esk[32], box[80], h[32], desc[44], n1[24];
	unsigned char pack[1024], idx[1024], ip[1024], obj[2048], bb[1024];
	unsigned char kid[16], cred[240], pid[32];
	size_t bl = sizeof(blob) - 1, pl = 0, il = 0, ol, t, tl;

	if (sodium_init() < 0)
		return 1;
	keys();

	/* A sealed pack with one raw data blob. */
	seq(K, 32, 0x40);
	seq(esk, 32, 0x60);
	seal_key(box, K, esk);
	header(h, 1, 1, NULL, box);
	desc[0] = 1;
	desc[1] = 0;
	desc[2] = desc[3] = 0;
	le32(desc + 4, (uint32_t)(24 + bl + 16));
	le32(desc + 8, (uint32_t)bl);
	crypto_generichash(desc + 12, 32, (const unsigned char *)blob, bl, I,
	    32);
	memcpy(pack, h, 32);
	memcpy(pack + 32, box, 80);
	pl = 112;
	seq(n1, 24, 0xb0);
	memcpy(pack + pl, n1, 24);
	{
		unsigned char ad[76];

		memcpy(ad, h, 32);
		memcpy(ad + 32, desc, 44);
		pl += 24 + aead(pack + pl + 24, (const unsigned char *)blob,
		    bl, ad, sizeof(ad), n1, K);
	}
	seq(n1, 24, 0xc0);
	memcpy(pack + pl, n1, 24);
	{
		unsigned char tr[48];

		le32(tr, 1);
		memcpy(tr + 4, desc, 44);
		t = aead(pack + pl + 24, tr, sizeof(tr), h, 32, n1, K);
	}
	tl = 24 + t;
	pl += tl;
	le32(pack + pl, (uint32_t)tl);
	pl += 4;
	crypto_generichash(pid, 32, pack, pl, NULL, 0);

	/* The index listing it, sealed with X. */
	le32(ip, 1);
	memcpy(ip + 4, pid, 32);
	memcpy(ip + 36, h, 32);
	memcpy(ip + 68, box, 80);
	le32(ip + 148, 1);
	memcpy(ip + 152, desc, 44);
	il = 196;
	seq(kid, 16, 0xa0);
	header(idx, 2, 2, kid, NULL);
	{
		unsigned char ok[32];

		derive_id(ok, X, "bk-object", kid, 16);
		seq(n1, 24, 0xd0);
		memcpy(idx + 32, n1, 24);
		t = body(bb, ip, il);
		ol = 56 + aead(idx + 56, bb, t, idx, 32, n1, ok);
	}

	printf("{\n  \"generator\": \"tests/vectors/gen/repository_wo_vectors.c "
	    "(libsodium %s)\",\n", sodium_version_string());
	printf("  \"root_key\": \"000102030405060708090a0b0c0d0e0f101112131415"
	    "161718191a1b1c1d1e1f\",\n");
	printf("  \"keys\": {\n");
	hex(4, "index_key", X, 32, 1);
	hex(4, "box_pk", bpk, 32, 1);
	hex(4, "pack_object_key", K, 32, 1);
	hex(4, "pack_ephemeral_sk", esk, 32, 1);
	hex(4, "pack_sealed_key", box, 80, 0);
	printf("  },\n  \"objects\": [\n");
	object(1, 1, pack, pl, (const unsigned char *)blob, bl);
	object(1, 2, idx, ol, ip, il);

	/* A sealed snapshot. */
	seq(K, 32, 0x80);
	seq(esk, 32, 0xe0);
	seal_key(box, K, esk);
	header(obj, 3, 1, NULL, box);
	memcpy(obj + 32, box, 80);
	seq(n1, 24, 0xf0);
	memcpy(obj + 112, n1, 24);
	t = body(bb, (const unsigned char *)snap, sizeof(snap) - 1);
	ol = 136 + aead(obj + 136, bb, t, obj, 32, n1, K);
	object(0, 3, obj, ol, (const unsigned char *)snap, sizeof(snap) - 1);
	printf("  ],\n");

	/* The writer credential (docs/format/writer-key.md). */
	memset(cred, 0, sizeof(cred));
	memcpy(cred, "\x89" "CFWK\r\n\x1a", 8);
	cred[8] = 1;
	cred[9] = 2;
	le32(cred + 12, 1);
	cred[16] = 0xa1;
	cred[17] = 0xa2;
	cred[18] = 0xa3;
	seq(cred + 32, 32, 0xc0);	/* a config's storage id */
	le32(cred + 64, 512U << 10);
	le32(cred + 68, 1U << 20);
	le32(cred + 72, 8U << 20);
	memcpy(cred + 80, bpk, 32);
	memcpy(cred + 112, I, 32);
	memcpy(cred + 144, G, 32);
	memcpy(cred + 176, X, 32);
	crypto_generichash(cred + 208, 32, cred, 208, NULL, 0);
	hex(2, "credential", cred, sizeof(cred), 0);
	printf("}\n");
	return 0;
}
