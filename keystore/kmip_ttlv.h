/*
 * kmip_ttlv.h - the KMIP TTLV subset that the kmip KMS provider speaks
 * (docs/format/kmip.md).  Private to keystore/: the provider
 * (ks_kms_kmip.c), its unit test and its fuzz target include it.
 *
 * The encoder writes into a caller buffer and latches its first error;
 * the decoder parses a whole message into a fixed table of items that
 * point into the input (no allocation).  Neither knows about sockets.
 */
#ifndef KMIP_TTLV_H
#define KMIP_TTLV_H

#include <stddef.h>
#include <stdint.h>

/* Decoder limits ([KMIP-TTLV-6]). */
#define KMIP_MSG_MAX 16384U	/* whole message, header included */
#define KMIP_DEPTH_MAX 8U	/* structures nested in the message */
#define KMIP_ITEMS_MAX 256U	/* items in one message */
#define KMIP_UID_MAX 128U	/* unique identifier we accept or store */
#define KMIP_GCM_IV_BYTES 12U
#define KMIP_GCM_TAG_BYTES 16U

/* Item types. */
enum kmip_type {
	KMIP_T_STRUCT = 0x01,
	KMIP_T_INT = 0x02,
	KMIP_T_LONG = 0x03,
	KMIP_T_BIGINT = 0x04,
	KMIP_T_ENUM = 0x05,
	KMIP_T_BOOL = 0x06,
	KMIP_T_TEXT = 0x07,
	KMIP_T_BYTES = 0x08,
	KMIP_T_DATETIME = 0x09,
	KMIP_T_INTERVAL = 0x0a,
};

/* Tags (KMIP 1.4 section 9.1.3.1). */
enum kmip_tag {
	KMIP_TAG_ATTRIBUTE = 0x420008,
	KMIP_TAG_ATTRIBUTE_NAME = 0x42000a,
	KMIP_TAG_ATTRIBUTE_VALUE = 0x42000b,
	KMIP_TAG_BATCH_COUNT = 0x42000d,
	KMIP_TAG_BATCH_ITEM = 0x42000f,
	KMIP_TAG_BLOCK_CIPHER_MODE = 0x420011,
	KMIP_TAG_CRYPTO_ALGORITHM = 0x420028,
	KMIP_TAG_CRYPTO_PARAMETERS = 0x42002b,
	KMIP_TAG_IV_COUNTER_NONCE = 0x42003d,
	KMIP_TAG_OBJECT_TYPE = 0x420057,
	KMIP_TAG_OPERATION = 0x42005c,
	KMIP_TAG_PROTOCOL_VERSION = 0x420069,
	KMIP_TAG_PROTOCOL_MAJOR = 0x42006a,
	KMIP_TAG_PROTOCOL_MINOR = 0x42006b,
	KMIP_TAG_REQUEST_HEADER = 0x420077,
	KMIP_TAG_REQUEST_MESSAGE = 0x420078,
	KMIP_TAG_REQUEST_PAYLOAD = 0x420079,
	KMIP_TAG_RESPONSE_HEADER = 0x42007a,
	KMIP_TAG_RESPONSE_MESSAGE = 0x42007b,
	KMIP_TAG_RESPONSE_PAYLOAD = 0x42007c,
	KMIP_TAG_RESULT_MESSAGE = 0x42007d,
	KMIP_TAG_RESULT_REASON = 0x42007e,
	KMIP_TAG_RESULT_STATUS = 0x42007f,
	KMIP_TAG_TEMPLATE_ATTRIBUTE = 0x420091,
	KMIP_TAG_TIME_STAMP = 0x420092,
	KMIP_TAG_UNIQUE_IDENTIFIER = 0x420094,
	KMIP_TAG_DATA = 0x4200c2,
	KMIP_TAG_TAG_LENGTH = 0x4200ce,
	KMIP_TAG_AAD = 0x4200fe,
	KMIP_TAG_AUTH_TAG = 0x4200ff,
};

/* Enumerations used. */
#define KMIP_OP_CREATE 0x01
#define KMIP_OP_ACTIVATE 0x12
#define KMIP_OP_ENCRYPT 0x1f
#define KMIP_OP_DECRYPT 0x20
#define KMIP_OBJ_SYMMETRIC_KEY 0x02
#define KMIP_ALG_AES 0x03
#define KMIP_MODE_GCM 0x09
#define KMIP_USAGE_ENCRYPT 0x04
#define KMIP_USAGE_DECRYPT 0x08
#define KMIP_STATUS_SUCCESS 0x00
#define KMIP_STATUS_FAILED 0x01
#define KMIP_REASON_ITEM_NOT_FOUND 0x01
#define KMIP_REASON_AUTH_NOT_SUCCESSFUL 0x03
#define KMIP_REASON_CRYPTO_FAILURE 0x0a
#define KMIP_REASON_PERMISSION_DENIED 0x0c
#define KMIP_REASON_WRONG_KEY_LIFECYCLE 0x12

/* ---- encoder ---------------------------------------------------------- */

struct kmip_enc {
	unsigned char *buf;
	size_t cap, len;
	size_t open[KMIP_DEPTH_MAX];	/* offsets of open structures */
	unsigned depth;
	int err;			/* first error, latched */
};

void kmip_enc_init(struct kmip_enc *e, unsigned char *buf, size_t cap);
/* Opens a structure; its length is back-patched by kmip_enc_end. */
void kmip_enc_begin(struct kmip_enc *e, uint32_t tag);
void kmip_enc_end(struct kmip_enc *e);
void kmip_enc_int(struct kmip_enc *e, uint32_t tag, int32_t v);
void kmip_enc_enum(struct kmip_enc *e, uint32_t tag, uint32_t v);
void kmip_enc_text(struct kmip_enc *e, uint32_t tag, const char *s);
void kmip_enc_bytes(struct kmip_enc *e, uint32_t tag, const void *p,
    size_t len);
/*
 * Ends encoding: 0 and *len = bytes written, or -ENOSPC (buffer too
 * small) / -EINVAL (structures left open or closed twice, depth over
 * KMIP_DEPTH_MAX).
 */
int kmip_enc_finish(struct kmip_enc *e, size_t *len)
    __attribute__((warn_unused_result));

/* ---- decoder ---------------------------------------------------------- */

struct kmip_item {
	uint32_t tag;
	uint8_t type;
	uint32_t len;			/* value length, padding excluded */
	const unsigned char *val;	/* points into the decoded buffer */
	int parent;			/* index of the structure, -1: root */
};

struct kmip_msg {
	struct kmip_item item[KMIP_ITEMS_MAX];
	size_t n;
};

/*
 * Decodes one complete message (exactly len bytes) into m; item 0 is the
 * outermost structure.  The items point into buf, which must outlive m.
 * -EPROTO for anything that breaks docs/format/kmip.md [KMIP-TTLV-1..6].
 */
int kmip_decode(const unsigned char *buf, size_t len, struct kmip_msg *m)
    __attribute__((warn_unused_result));
/*
 * The length of the message whose first 8 bytes are hdr: -EPROTO unless
 * it is a structure whose total length fits KMIP_MSG_MAX.
 */
int kmip_frame_len(const unsigned char hdr[8], size_t *total)
    __attribute__((warn_unused_result));
/* Index of the first child of parent with tag after index after, or -1. */
int kmip_child(const struct kmip_msg *m, int parent, uint32_t tag,
    int after);
/* The value of an Integer or Enumeration item; -EPROTO on another type. */
int kmip_get_u32(const struct kmip_msg *m, int idx, uint8_t type,
    uint32_t *v) __attribute__((warn_unused_result));
/* The value of a Text String or Byte String item. */
int kmip_get_bytes(const struct kmip_msg *m, int idx, uint8_t type,
    const unsigned char **p, size_t *len) __attribute__((warn_unused_result));

/* What a response says about its single batch item. */
struct kmip_result {
	uint32_t status, reason;	/* reason 0 if absent */
	char message[160];		/* printable ASCII, "" if absent */
	int payload;			/* item index of the payload, or -1 */
};

/*
 * Checks that m is a ResponseMessage with a header and exactly one batch
 * item answering op, and fills r.  A successful result must have a
 * payload.  -EPROTO otherwise.
 */
int kmip_result_get(const struct kmip_msg *m, uint32_t op,
    struct kmip_result *r) __attribute__((warn_unused_result));

/* ---- requests (docs/format/kmip.md, "Requests") -------------------- */

/*
 * Each builds one complete request message into buf: 0 and *len, or
 * -ENOSPC.  Encrypt and Decrypt use AES-GCM with a 16-byte tag; the
 * buffer then holds key material, which the caller wipes.
 */
int kmip_req_create(unsigned char *buf, size_t cap, size_t *len)
    __attribute__((warn_unused_result));
int kmip_req_activate(unsigned char *buf, size_t cap, const char *uid,
    size_t *len) __attribute__((warn_unused_result));
int kmip_req_encrypt(unsigned char *buf, size_t cap, const char *uid,
    const unsigned char key[32], const unsigned char iv[KMIP_GCM_IV_BYTES],
    const unsigned char *aad, size_t aadlen, size_t *len)
    __attribute__((warn_unused_result));
int kmip_req_decrypt(unsigned char *buf, size_t cap, const char *uid,
    const unsigned char ct[32], const unsigned char iv[KMIP_GCM_IV_BYTES],
    const unsigned char *aad, size_t aadlen,
    const unsigned char tag[KMIP_GCM_TAG_BYTES], size_t *len)
    __attribute__((warn_unused_result));

/*
 * The 16-byte KEK id of the server key with unique identifier uid:
 * BLAKE2b with a 16-byte output of "coffer-kmip-kek-v1" || uid
 * ([KMIP-BLOB-3]).
 */
void kmip_kek_id(unsigned char id[16], const char *uid);

#endif /* KMIP_TTLV_H */
