/*
 * kmip_ttlv.c - a small, strictly bounded KMIP TTLV encoder and decoder
 * (docs/format/kmip.md).
 *
 * Only what the kmip provider needs: structures, 32-bit integers and
 * enumerations, text and byte strings on the way out; every KMIP type on
 * the way in, so a server that adds fields we ignore still parses.  The
 * decoder checks each length against its container before looking at the
 * value, keeps no more than KMIP_ITEMS_MAX items and KMIP_DEPTH_MAX
 * levels, never allocates and never recurses; anything else is -EPROTO.
 * It does not interpret messages: the provider picks fields out with
 * kmip_child() and checks their types.
 */
#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "kmip_ttlv.h"

static void
put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint32_t
get_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

void
kmip_enc_init(struct kmip_enc *e, unsigned char *buf, size_t cap)
{
	memset(e, 0, sizeof(*e));
	e->buf = buf;
	e->cap = cap;
}

/* Writes an item header and value, zero-padded to 8 bytes. */
static void
enc_item(struct kmip_enc *e, uint32_t tag, uint8_t type, const void *val,
    size_t len, size_t vlen_field)
{
	size_t padded = (len + 7) & ~(size_t)7;

	if (e->err != 0)
		return;
	if (len > KMIP_MSG_MAX || e->cap - e->len < 8 + padded) {
		e->err = -ENOSPC;
		return;
	}
	e->buf[e->len] = (unsigned char)(tag >> 16);
	e->buf[e->len + 1] = (unsigned char)(tag >> 8);
	e->buf[e->len + 2] = (unsigned char)tag;
	e->buf[e->len + 3] = type;
	put_be32(e->buf + e->len + 4, (uint32_t)vlen_field);
	e->len += 8;
	if (len > 0)
		memcpy(e->buf + e->len, val, len);
	memset(e->buf + e->len + len, 0, padded - len);
	e->len += padded;
}

void
kmip_enc_begin(struct kmip_enc *e, uint32_t tag)
{
	if (e->err != 0)
		return;
	if (e->depth == KMIP_DEPTH_MAX) {
		e->err = -EINVAL;
		return;
	}
	e->open[e->depth] = e->len;
	enc_item(e, tag, KMIP_T_STRUCT, NULL, 0, 0);
	if (e->err == 0)
		e->depth++;
}

void
kmip_enc_end(struct kmip_enc *e)
{
	size_t off;

	if (e->err != 0)
		return;
	if (e->depth == 0) {
		e->err = -EINVAL;
		return;
	}
	off = e->open[--e->depth];
	put_be32(e->buf + off + 4, (uint32_t)(e->len - off - 8));
}

void
kmip_enc_int(struct kmip_enc *e, uint32_t tag, int32_t v)
{
	unsigned char b[4];

	put_be32(b, (uint32_t)v);
	enc_item(e, tag, KMIP_T_INT, b, 4, 4);
}

void
kmip_enc_enum(struct kmip_enc *e, uint32_t tag, uint32_t v)
{
	unsigned char b[4];

	put_be32(b, v);
	enc_item(e, tag, KMIP_T_ENUM, b, 4, 4);
}

void
kmip_enc_text(struct kmip_enc *e, uint32_t tag, const char *s)
{
	size_t n = strlen(s);

	enc_item(e, tag, KMIP_T_TEXT, s, n, n);
}

void
kmip_enc_bytes(struct kmip_enc *e, uint32_t tag, const void *p, size_t len)
{
	enc_item(e, tag, KMIP_T_BYTES, p, len, len);
}

int
kmip_enc_finish(struct kmip_enc *e, size_t *len)
{
	*len = 0;
	if (e->err == 0 && e->depth != 0)
		e->err = -EINVAL;
	if (e->err == 0 && e->len > KMIP_MSG_MAX)
		e->err = -ENOSPC;
	if (e->err != 0)
		return e->err;
	*len = e->len;
	return 0;
}

/* The value length a type requires: 0 for variable-length types. */
static uint32_t
fixed_len(uint8_t type)
{
	switch (type) {
	case KMIP_T_INT:
	case KMIP_T_ENUM:
	case KMIP_T_INTERVAL:
		return 4;
	case KMIP_T_LONG:
	case KMIP_T_BOOL:
	case KMIP_T_DATETIME:
		return 8;
	default:
		return 0;
	}
}

int
kmip_frame_len(const unsigned char hdr[8], size_t *total)
{
	uint32_t vlen = get_be32(hdr + 4);

	*total = 0;
	if (hdr[0] != 0x42 || hdr[3] != KMIP_T_STRUCT || vlen % 8 != 0 ||
	    vlen > KMIP_MSG_MAX - 8)
		return -EPROTO;
	*total = 8 + (size_t)vlen;
	return 0;
}

int
kmip_decode(const unsigned char *buf, size_t len, struct kmip_msg *m)
{
	size_t end[KMIP_DEPTH_MAX + 1];
	int parent[KMIP_DEPTH_MAX + 1];
	unsigned depth = 0;
	size_t pos = 0, i;

	m->n = 0;
	if (len < 8 || len > KMIP_MSG_MAX)
		return -EPROTO;
	end[0] = len;
	parent[0] = -1;
	while (pos < len) {
		struct kmip_item *it;
		uint32_t tag, vlen, flen;
		uint8_t type;
		size_t room, padded;

		/* Close every structure that ends here. */
		while (depth > 0 && pos == end[depth])
			depth--;
		if (pos == end[depth])
			break;		/* only the root ends at len */
		room = end[depth] - pos;
		if (room < 8)
			return -EPROTO;
		tag = (uint32_t)buf[pos] << 16 | (uint32_t)buf[pos + 1] << 8 |
		    buf[pos + 2];
		type = buf[pos + 3];
		vlen = get_be32(buf + pos + 4);
		if (buf[pos] != 0x42 && buf[pos] != 0x54)
			return -EPROTO;
		if (type < KMIP_T_STRUCT || type > KMIP_T_INTERVAL)
			return -EPROTO;
		if (vlen > room - 8)
			return -EPROTO;
		padded = ((size_t)vlen + 7) & ~(size_t)7;
		if (padded > room - 8)
			return -EPROTO;
		flen = fixed_len(type);
		if (flen != 0 && vlen != flen)
			return -EPROTO;
		if ((type == KMIP_T_STRUCT || type == KMIP_T_BIGINT) &&
		    vlen % 8 != 0)
			return -EPROTO;
		if (type == KMIP_T_BIGINT && vlen == 0)
			return -EPROTO;
		if (m->n == KMIP_ITEMS_MAX)
			return -EPROTO;
		/* The root is one structure that spans the whole message. */
		if (m->n == 0 && (type != KMIP_T_STRUCT || 8 + padded != len))
			return -EPROTO;
		it = &m->item[m->n];
		it->tag = tag;
		it->type = type;
		it->len = vlen;
		it->val = buf + pos + 8;
		it->parent = parent[depth];
		if (type == KMIP_T_STRUCT) {
			if (depth == KMIP_DEPTH_MAX)
				return -EPROTO;
			depth++;
			end[depth] = pos + 8 + vlen;
			parent[depth] = (int)m->n;
			m->n++;
			pos += 8;
			continue;
		}
		for (i = vlen; i < padded; i++)
			if (it->val[i] != 0)
				return -EPROTO;
		if (type == KMIP_T_BOOL) {
			for (i = 0; i < 7; i++)
				if (it->val[i] != 0)
					return -EPROTO;
			if (it->val[7] > 1)
				return -EPROTO;
		}
		m->n++;
		pos += 8 + padded;
	}
	if (m->n == 0 || pos != len) {
		m->n = 0;
		return -EPROTO;
	}
	return 0;
}

int
kmip_child(const struct kmip_msg *m, int parent, uint32_t tag, int after)
{
	size_t i;

	for (i = after < 0 ? 0 : (size_t)after + 1; i < m->n; i++)
		if (m->item[i].parent == parent && m->item[i].tag == tag)
			return (int)i;
	return -1;
}

int
kmip_get_u32(const struct kmip_msg *m, int idx, uint8_t type, uint32_t *v)
{
	*v = 0;
	if (idx < 0 || (size_t)idx >= m->n || m->item[idx].type != type ||
	    (type != KMIP_T_INT && type != KMIP_T_ENUM))
		return -EPROTO;
	*v = get_be32(m->item[idx].val);
	return 0;
}

int
kmip_get_bytes(const struct kmip_msg *m, int idx, uint8_t type,
    const unsigned char **p, size_t *len)
{
	*p = NULL;
	*len = 0;
	if (idx < 0 || (size_t)idx >= m->n || m->item[idx].type != type ||
	    (type != KMIP_T_TEXT && type != KMIP_T_BYTES))
		return -EPROTO;
	*p = m->item[idx].val;
	*len = m->item[idx].len;
	return 0;
}

int
kmip_result_get(const struct kmip_msg *m, uint32_t op, struct kmip_result *r)
{
	const unsigned char *s;
	size_t len, i;
	uint32_t v;
	int bi, idx;

	memset(r, 0, sizeof(*r));
	r->payload = -1;
	if (m->n == 0 || m->item[0].tag != KMIP_TAG_RESPONSE_MESSAGE ||
	    kmip_child(m, 0, KMIP_TAG_RESPONSE_HEADER, -1) < 0)
		return -EPROTO;
	bi = kmip_child(m, 0, KMIP_TAG_BATCH_ITEM, -1);
	if (bi < 0 || m->item[bi].type != KMIP_T_STRUCT ||
	    kmip_child(m, 0, KMIP_TAG_BATCH_ITEM, bi) >= 0)
		return -EPROTO;
	idx = kmip_child(m, bi, KMIP_TAG_OPERATION, -1);
	if (idx >= 0 && (kmip_get_u32(m, idx, KMIP_T_ENUM, &v) < 0 ||
	    v != op))
		return -EPROTO;
	idx = kmip_child(m, bi, KMIP_TAG_RESULT_STATUS, -1);
	if (kmip_get_u32(m, idx, KMIP_T_ENUM, &r->status) < 0)
		return -EPROTO;
	idx = kmip_child(m, bi, KMIP_TAG_RESULT_REASON, -1);
	if (idx >= 0 && kmip_get_u32(m, idx, KMIP_T_ENUM, &r->reason) < 0)
		return -EPROTO;
	idx = kmip_child(m, bi, KMIP_TAG_RESULT_MESSAGE, -1);
	if (idx >= 0) {
		if (kmip_get_bytes(m, idx, KMIP_T_TEXT, &s, &len) < 0)
			return -EPROTO;
		/* Server text goes into our messages: printable only. */
		if (len >= sizeof(r->message))
			len = sizeof(r->message) - 1;
		for (i = 0; i < len; i++)
			r->message[i] = s[i] >= 0x20 && s[i] < 0x7f ?
			    (char)s[i] : '?';
		r->message[len] = '\0';
	}
	idx = kmip_child(m, bi, KMIP_TAG_RESPONSE_PAYLOAD, -1);
	if (idx >= 0 && m->item[idx].type != KMIP_T_STRUCT)
		return -EPROTO;
	r->payload = idx;
	if (r->status == KMIP_STATUS_SUCCESS && idx < 0)
		return -EPROTO;
	return 0;
}

/* ---- requests --------------------------------------------------------- */

/* RequestMessage / RequestHeader / BatchItem / RequestPayload (open). */
static void
req_begin(struct kmip_enc *e, unsigned char *buf, size_t cap, uint32_t op)
{
	kmip_enc_init(e, buf, cap);
	kmip_enc_begin(e, KMIP_TAG_REQUEST_MESSAGE);
	kmip_enc_begin(e, KMIP_TAG_REQUEST_HEADER);
	kmip_enc_begin(e, KMIP_TAG_PROTOCOL_VERSION);
	kmip_enc_int(e, KMIP_TAG_PROTOCOL_MAJOR, 1);
	kmip_enc_int(e, KMIP_TAG_PROTOCOL_MINOR, 4);
	kmip_enc_end(e);
	kmip_enc_int(e, KMIP_TAG_BATCH_COUNT, 1);
	kmip_enc_end(e);
	kmip_enc_begin(e, KMIP_TAG_BATCH_ITEM);
	kmip_enc_enum(e, KMIP_TAG_OPERATION, op);
	kmip_enc_begin(e, KMIP_TAG_REQUEST_PAYLOAD);
}

static int
req_end(struct kmip_enc *e, size_t *len)
{
	kmip_enc_end(e);
	kmip_enc_end(e);
	kmip_enc_end(e);
	return kmip_enc_finish(e, len);
}

/* Cryptographic Parameters: GCM, AES, 16-byte tag. */
static void
enc_gcm_params(struct kmip_enc *e)
{
	kmip_enc_begin(e, KMIP_TAG_CRYPTO_PARAMETERS);
	kmip_enc_enum(e, KMIP_TAG_BLOCK_CIPHER_MODE, KMIP_MODE_GCM);
	kmip_enc_enum(e, KMIP_TAG_CRYPTO_ALGORITHM, KMIP_ALG_AES);
	kmip_enc_int(e, KMIP_TAG_TAG_LENGTH, KMIP_GCM_TAG_BYTES);
	kmip_enc_end(e);
}

static void
enc_attr_int(struct kmip_enc *e, const char *name, uint8_t type, uint32_t v)
{
	kmip_enc_begin(e, KMIP_TAG_ATTRIBUTE);
	kmip_enc_text(e, KMIP_TAG_ATTRIBUTE_NAME, name);
	if (type == KMIP_T_ENUM)
		kmip_enc_enum(e, KMIP_TAG_ATTRIBUTE_VALUE, v);
	else
		kmip_enc_int(e, KMIP_TAG_ATTRIBUTE_VALUE, (int32_t)v);
	kmip_enc_end(e);
}

int
kmip_req_create(unsigned char *buf, size_t cap, size_t *len)
{
	struct kmip_enc e;

	req_begin(&e, buf, cap, KMIP_OP_CREATE);
	kmip_enc_enum(&e, KMIP_TAG_OBJECT_TYPE, KMIP_OBJ_SYMMETRIC_KEY);
	kmip_enc_begin(&e, KMIP_TAG_TEMPLATE_ATTRIBUTE);
	enc_attr_int(&e, "Cryptographic Algorithm", KMIP_T_ENUM, KMIP_ALG_AES);
	enc_attr_int(&e, "Cryptographic Length", KMIP_T_INT, 256);
	enc_attr_int(&e, "Cryptographic Usage Mask", KMIP_T_INT,
	    KMIP_USAGE_ENCRYPT | KMIP_USAGE_DECRYPT);
	kmip_enc_end(&e);
	return req_end(&e, len);
}

int
kmip_req_activate(unsigned char *buf, size_t cap, const char *uid,
    size_t *len)
{
	struct kmip_enc e;

	req_begin(&e, buf, cap, KMIP_OP_ACTIVATE);
	kmip_enc_text(&e, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
	return req_end(&e, len);
}

int
kmip_req_encrypt(unsigned char *buf, size_t cap, const char *uid,
    const unsigned char key[32], const unsigned char iv[KMIP_GCM_IV_BYTES],
    const unsigned char *aad, size_t aadlen, size_t *len)
{
	struct kmip_enc e;

	req_begin(&e, buf, cap, KMIP_OP_ENCRYPT);
	kmip_enc_text(&e, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
	enc_gcm_params(&e);
	kmip_enc_bytes(&e, KMIP_TAG_DATA, key, 32);
	kmip_enc_bytes(&e, KMIP_TAG_IV_COUNTER_NONCE, iv, KMIP_GCM_IV_BYTES);
	kmip_enc_bytes(&e, KMIP_TAG_AAD, aad, aadlen);
	return req_end(&e, len);
}

int
kmip_req_decrypt(unsigned char *buf, size_t cap, const char *uid,
    const unsigned char ct[32], const unsigned char iv[KMIP_GCM_IV_BYTES],
    const unsigned char *aad, size_t aadlen,
    const unsigned char tag[KMIP_GCM_TAG_BYTES], size_t *len)
{
	struct kmip_enc e;

	req_begin(&e, buf, cap, KMIP_OP_DECRYPT);
	kmip_enc_text(&e, KMIP_TAG_UNIQUE_IDENTIFIER, uid);
	enc_gcm_params(&e);
	kmip_enc_bytes(&e, KMIP_TAG_DATA, ct, 32);
	kmip_enc_bytes(&e, KMIP_TAG_IV_COUNTER_NONCE, iv, KMIP_GCM_IV_BYTES);
	kmip_enc_bytes(&e, KMIP_TAG_AAD, aad, aadlen);
	kmip_enc_bytes(&e, KMIP_TAG_AUTH_TAG, tag, KMIP_GCM_TAG_BYTES);
	return req_end(&e, len);
}

/* ---- KEK ids ---------------------------------------------------------- */

void
kmip_kek_id(unsigned char id[16], const char *uid)
{
	static const char ctx[] = "coffer-kmip-kek-v1";
	crypto_generichash_state st;

	crypto_generichash_init(&st, NULL, 0, 16);
	crypto_generichash_update(&st, (const unsigned char *)ctx,
	    sizeof(ctx) - 1);
	crypto_generichash_update(&st, (const unsigned char *)uid,
	    strlen(uid));
	crypto_generichash_final(&st, id, 16);
}
