/*
 * fuzz_kmip.c - libFuzzer target for the KMIP TTLV decoder and the
 * response reader of the kmip KMS provider (keystore/kmip_ttlv.c,
 * docs/format/kmip.md).
 *
 * Any input must be rejected cleanly with -EPROTO or decoded.  A decoded
 * message must respect the documented limits (items, parents before
 * children, values inside the input), and re-encoding its items with the
 * encoder must give back exactly the input: TTLV as we accept it has one
 * encoding per message (zero padding, exact lengths).  The result reader
 * and the typed getters run on every decoded item.  No network, no keys.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kmip_ttlv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct kmip_msg m;
static unsigned char out[KMIP_MSG_MAX + 64];

/* Re-encodes item i and its children; returns the next item index. */
static size_t
reencode(struct kmip_enc *e, size_t i)
{
	const struct kmip_item *it = &m.item[i];
	size_t j;

	if (it->type != KMIP_T_STRUCT) {
		/* Raw item: header, value, zero padding, like the encoder. */
		size_t pad = ((size_t)it->len + 7) & ~(size_t)7;

		if (e->err != 0 || e->cap - e->len < 8 + pad) {
			e->err = -ENOSPC;
			return i + 1;
		}
		e->buf[e->len] = (unsigned char)(it->tag >> 16);
		e->buf[e->len + 1] = (unsigned char)(it->tag >> 8);
		e->buf[e->len + 2] = (unsigned char)it->tag;
		e->buf[e->len + 3] = it->type;
		e->buf[e->len + 4] = (unsigned char)(it->len >> 24);
		e->buf[e->len + 5] = (unsigned char)(it->len >> 16);
		e->buf[e->len + 6] = (unsigned char)(it->len >> 8);
		e->buf[e->len + 7] = (unsigned char)it->len;
		memcpy(e->buf + e->len + 8, it->val, it->len);
		memset(e->buf + e->len + 8 + it->len, 0, pad - it->len);
		e->len += 8 + pad;
		return i + 1;
	}
	kmip_enc_begin(e, it->tag);
	for (j = i + 1; j < m.n && m.item[j].parent == (int)i;)
		j = reencode(e, j);
	kmip_enc_end(e);
	return j;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kmip_result r;
	struct kmip_enc e;
	const unsigned char *p;
	size_t i, len, total;
	uint32_t v;
	int rc;

	if (size >= 8)
		(void)!kmip_frame_len(data, &total);
	rc = kmip_decode(data, size, &m);
	if (rc != 0 && rc != -EPROTO)
		abort();
	if (rc < 0)
		return 0;
	if (m.n == 0 || m.n > KMIP_ITEMS_MAX || m.item[0].parent != -1)
		abort();
	for (i = 0; i < m.n; i++) {
		const struct kmip_item *it = &m.item[i];

		if (it->val < data || it->val + it->len > data + size)
			abort();
		if (i > 0 && (it->parent < 0 || (size_t)it->parent >= i ||
		    m.item[it->parent].type != KMIP_T_STRUCT))
			abort();
		(void)!kmip_get_u32(&m, (int)i, it->type, &v);
		(void)!kmip_get_bytes(&m, (int)i, it->type, &p, &len);
	}
	kmip_enc_init(&e, out, sizeof(out));
	if (reencode(&e, 0) != m.n)
		abort();
	if (kmip_enc_finish(&e, &len) != 0 || len != size ||
	    memcmp(out, data, size) != 0)
		abort();
	(void)!kmip_result_get(&m, KMIP_OP_ENCRYPT, &r);
	(void)!kmip_result_get(&m, KMIP_OP_DECRYPT, &r);
	return 0;
}
