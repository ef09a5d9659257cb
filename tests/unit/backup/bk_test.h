/*
 * bk_test.h - helpers shared by the backup unit tests: keys from a
 * chosen root key, deterministic pseudo-random bytes, a test tree.
 * Header-only (static functions) so each test stays one program.
 */
#ifndef BK_TEST_H
#define BK_TEST_H

#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "bk_int.h"
#include "cf_backup.h"
#include "cf_test.h"

/* Backup keys for root bytes start..start+31 (00..1f: the vectors'). */
static inline struct cf_bk_keys *
bkt_keys(unsigned start, enum cf_ks_cipher c)
{
	struct cf_secbuf *sb = NULL;
	struct cf_bk_keys *k = NULL;
	size_t i;

	if (cf_secbuf_new(&sb, 32) != 0)
		return NULL;
	for (i = 0; i < 32; i++)
		cf_secbuf_data(sb)[i] = (unsigned char)(start + i);
	if (cf_bk_keys_new(&k, sb, 1, c) != 0)
		k = NULL;
	cf_secbuf_free(sb);
	return k;
}

static inline struct cf_bk_keys *
bkt_keys_x(unsigned start)
{
	return bkt_keys(start, CF_KS_CIPHER_XCHACHA20POLY1305);
}

/* n pseudo-random bytes: ChaCha20 keystream, key seed..seed+31. */
static inline unsigned char *
bkt_random(size_t n, unsigned seed)
{
	unsigned char key[32], nonce[12] = { 0 };
	unsigned char *b = malloc(n ? n : 1);
	size_t i;

	for (i = 0; i < 32; i++)
		key[i] = (unsigned char)(seed + i);
	if (b != NULL)
		crypto_stream_chacha20_ietf(b, n, nonce, key);
	return b;
}

/* Compressible bytes: words from a small alphabet. */
static inline unsigned char *
bkt_text(size_t n)
{
	static const char *const w[] = { "coffer ", "backup ", "tenant ",
	    "pack ", "index ", "tree\n" };
	unsigned char *b = malloc(n ? n : 1);
	size_t i = 0, k = 0;

	while (b != NULL && i < n) {
		const char *s = w[(k * 7 + k / 3) % 6];
		size_t l = strlen(s);

		if (l > n - i)
			l = n - i;
		memcpy(b + i, s, l);
		i += l;
		k++;
	}
	return b;
}

#endif /* BK_TEST_H */
