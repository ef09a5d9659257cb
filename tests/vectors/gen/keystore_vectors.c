/*
 * keystore_vectors.c - generates tests/vectors/keystore-v1.json from raw
 * libsodium calls, independently of coffer's keystore code, following
 * docs/format/keystore.md and docs/crypto.md byte by byte.  Not built by
 * meson: vectors are generated once and never silently regenerated.
 *
 *   cc -o /tmp/kv keystore_vectors.c $(pkg-config --cflags --libs libsodium)
 *   /tmp/kv > ../keystore-v1.json
 */
#include <stdio.h>
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
hex(const char *key, const unsigned char *b, size_t n, int comma)
{
	char h[4096];

	sodium_bin2hex(h, sizeof(h), b, n);
	printf("    \"%s\": \"%s\"%s\n", key, h, comma ? "," : "");
}

static void
le16(unsigned char *p, unsigned v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

static void
le32(unsigned char *p, unsigned long v)
{
	le16(p, (unsigned)(v & 0xffff));
	le16(p + 2, (unsigned)(v >> 16));
}

int
main(void)
{
	static const char *ctx[] = { "cf-fsdat", "cf-fsnam", "cf-bkdat",
		"cf-bkcid", "cf-audit", "cf-fsmet" };
	unsigned char key[32], nonce[24], ad[6] = "coffer", pt[43], ct[64];
	unsigned char sub[32], id[16], hdr[48], file[50 + 72], kk[128];
	unsigned char pw[32], kek[32], root[32], salt[16];
	const char *label = "fs-file", *pass = "correct horse battery staple";
	unsigned long long clen;
	crypto_generichash_state st;
	unsigned char ll;
	size_t i;

	if (sodium_init() < 0)
		return 1;
	memcpy(pt, "The quick brown fox jumps over the lazy dog", 43);
	seq(key, 32, 0);
	seq(nonce, 24, 0x40);
	printf("{\n  \"aead\": [\n");
	if (crypto_aead_aes256gcm_is_available()) {
		crypto_aead_aes256gcm_encrypt(ct, &clen, pt, 43, ad, 6, NULL,
		    nonce, key);
		printf("  {\n    \"cipher\": \"aes-256-gcm\",\n");
		hex("key", key, 32, 1);
		hex("nonce", nonce, 12, 1);
		hex("ad", ad, 6, 1);
		hex("plaintext", pt, 43, 1);
		hex("ciphertext", ct, (size_t)clen, 0);
		printf("  },\n");
	}
	crypto_aead_xchacha20poly1305_ietf_encrypt(ct, &clen, pt, 43, ad, 6,
	    NULL, nonce, key);
	printf("  {\n    \"cipher\": \"xchacha20-poly1305\",\n");
	hex("key", key, 32, 1);
	hex("nonce", nonce, 24, 1);
	hex("ad", ad, 6, 1);
	hex("plaintext", pt, 43, 1);
	hex("ciphertext", ct, (size_t)clen, 0);
	printf("  }\n  ],\n  \"kdf\": {\n");
	hex("root", key, 32, 1);
	for (i = 0; i < 6; i++) {
		char name[16];

		crypto_kdf_derive_from_key(sub, 32, 1, ctx[i], key);
		snprintf(name, sizeof(name), "purpose_%zu", i + 1);
		hex(name, sub, 32, i + 1 < 6);
	}
	printf("  },\n  \"derive_id\": {\n");
	seq(id, 16, 0x10);
	ll = (unsigned char)strlen(label);
	crypto_generichash_init(&st, key, 32, 32);
	crypto_generichash_update(&st, &ll, 1);
	crypto_generichash_update(&st, (const unsigned char *)label, ll);
	crypto_generichash_update(&st, id, 16);
	crypto_generichash_final(&st, sub, 32);
	hex("key", key, 32, 1);
	printf("    \"label\": \"%s\",\n", label);
	hex("id", id, 16, 1);
	hex("out", sub, 32, 0);

	/* Wrapped-key file, file KMS (alg 1), version 1. */
	seq(root, 32, 0x40);
	seq(kek, 32, 0x60);
	memcpy(hdr, "\x89" "CFWK\r\n\x1a", 8);
	le16(hdr + 8, 1);
	hdr[10] = 1;
	hdr[11] = 0;
	le32(hdr + 12, 1);
	seq(hdr + 16, 16, 0xa0);
	seq(hdr + 32, 16, 0xf0);	/* the KEK of kek_file below */
	memcpy(file, hdr, 48);
	le16(file + 48, 72);
	seq(file + 50, 24, 0xc0);
	crypto_aead_xchacha20poly1305_ietf_encrypt(file + 74, &clen, root, 32,
	    hdr, 48, NULL, file + 50, kek);
	printf("  },\n  \"wrapped_key\": {\n");
	hex("kek", kek, 32, 1);
	hex("root", root, 32, 1);
	hex("tenant_id", hdr + 16, 16, 1);
	hex("kek_id", hdr + 32, 16, 1);
	printf("    \"key_version\": 1,\n");
	hex("file", file, sizeof(file), 0);

	/* KEK file: Argon2id ops 1, mem 8192 bytes. */
	memcpy(kk, "\x89" "CFKK\r\n\x1a", 8);
	le16(kk + 8, 1);
	kk[10] = 1;
	kk[11] = 1;
	le32(kk + 12, 1);
	le32(kk + 16, 8192);
	le32(kk + 20, 0);
	seq(salt, 16, 0xe0);
	memcpy(kk + 24, salt, 16);
	seq(kk + 40, 16, 0xf0);
	seq(kk + 56, 24, 0x80);
	if (crypto_pwhash(pw, 32, pass, strlen(pass), salt, 1, 8192,
	    crypto_pwhash_ALG_ARGON2ID13) != 0)
		return 1;
	crypto_aead_xchacha20poly1305_ietf_encrypt(kk + 80, &clen, kek, 32, kk,
	    80, NULL, kk + 56, pw);
	printf("  },\n  \"kek_file\": {\n");
	printf("    \"passphrase\": \"%s\",\n", pass);
	hex("kek", kek, 32, 1);
	hex("kek_id", kk + 40, 16, 1);
	hex("file", kk, sizeof(kk), 0);
	printf("  }\n}\n");
	return 0;
}
