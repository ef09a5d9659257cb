/*
 * bk_int.h - backup/'s private header: the structures behind the opaque
 * types that more than one file needs, and module-private helpers.
 * Tests include it to inject fixed key ids and nonces (known answers);
 * nothing outside backup/ and tests/ may.
 */
#ifndef BK_INT_H
#define BK_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "cf_backup.h"

#define BK_MAGIC "\x89" "CFBK\r\n\x1a"
#define BK_KID_BYTES 16U
#define BK_NONCE_MAX 24U
#define BK_TAG 16U
#define BK_BODY_HDR 8U		/* compression, reserved, ulen */
#define BK_ZSTD_LEVEL 3

/*
 * Version 2 headers (docs/format/repository.md, Write-only objects):
 * byte 11 says how the object key is found.
 */
#define BK_VERSION_WO 2U
#define BK_KEYING_SEALED 1U	/* a sealed key follows the header */
#define BK_KEYING_INDEX 2U	/* object key from the index key X */
/*
 * Bit 7 of byte 11, in either version: the object is named by SHA-256 of
 * its bytes, not BLAKE2b-256 ([BK-LAY-3], added 2026-11-25).  The low
 * bits are the keying (version 2) or 0 (version 1).
 */
#define BK_SID_SHA256 0x80U

static inline unsigned
bk_keying(const unsigned char *hdr)
{
	return hdr[11] & 0x7fU;
}
#define BK_BOX_BYTES CF_BK_SEALED_KEY_BYTES

/* Object keys of sealed packs learnt from their sealed keys. */
struct bk_keytab;


struct cf_bk_keys {
	enum cf_ks_cipher cipher;
	uint32_t version;		/* the config's: I, G, X, box, D */
	uint32_t wversion;		/* of new full-key objects */
	/* D of the other root key versions (cf_bk_keys_add). */
	struct {
		uint32_t version;
		struct cf_secbuf *data;
		struct cf_secbuf *boxsk;	/* that version's box pair */
		unsigned char boxpk[32];
	} more[CF_BK_KEYS_MAX];
	size_t nmore;
	int writer;			/* write-only keys: no D, no box secret */
	struct cf_secbuf *data;		/* D: parent of object keys; NULL writer */
	struct cf_secbuf *idkey;	/* I: blob ids */
	struct cf_secbuf *gear;		/* 256 u64 (host order) */
	struct cf_secbuf *gkey;		/* G: the gear table's key */
	struct cf_secbuf *xkey;		/* X: index and lock objects */
	struct cf_secbuf *ckey;		/* C: parent of I, G, X; NULL writer */
	uint32_t cversion;		/* the version C derives from */
	struct cf_secbuf *boxsk;	/* backup secret key; NULL writer */
	unsigned char boxpk[32];	/* backup public key */
	struct bk_keytab *tab;		/* full keys: learnt object keys */
	int sid_blake2;			/* name new objects by BLAKE2b-256 */
};

/* D of root key version `version`, or NULL if k lacks it. */
const struct cf_secbuf *bk_keys_data(const struct cf_bk_keys *k,
    uint32_t version);

/*
 * Extra header bytes of an object: BK_BOX_BYTES for a version 2 sealed
 * header, else 0.  hdr must have passed bk_header_check.
 */
size_t bk_header_extra(const unsigned char *hdr);
/*
 * Makes a sealed-key header (version 2, keying 1) of kind for writer
 * or full keys: a fresh random object key sealed to the backup public
 * key.  hdr receives the header followed by the sealed key
 * (CF_BK_HEADER_BYTES + BK_BOX_BYTES), key the object key (the caller
 * wipes it).
 */
int bk_header_make_sealed(unsigned char *hdr, enum cf_bk_kind kind,
    const struct cf_bk_keys *k, unsigned char key[CF_KS_KEY_BYTES]);
/* Makes a version 2 index-key header (keying 2); kid NULL: random. */
void bk_header_make_x(unsigned char hdr[CF_BK_HEADER_BYTES],
    enum cf_bk_kind kind, const struct cf_bk_keys *k,
    const unsigned char *kid);
/*
 * Learns the object key of a sealed header from its sealed key box
 * (BK_BOX_BYTES): -EBADMSG if the key id is not the box's hash or the
 * box does not open, -ENOKEY for write-only keys.  Idempotent.
 */
int bk_keys_learn(const struct cf_bk_keys *k, const unsigned char *hdr,
    const unsigned char *box);
/* Opens a sealed key box into key (-EBADMSG, -ENOKEY as above). */
int bk_keys_unseal(const struct cf_bk_keys *k, const unsigned char *hdr,
    const unsigned char *box, unsigned char key[CF_KS_KEY_BYTES]);
/* The object key of a sealed header learnt before; -ENOKEY if not. */
int bk_keys_learnt(const struct cf_bk_keys *k, const unsigned char *hdr,
    unsigned char key[CF_KS_KEY_BYTES]);
/* Encodes the writer credential of full keys k (bk_keys.c). */
int bk_wcred_encode(const struct cf_bk_keys *k,
    const struct cf_bk_wcred_info *in, struct cf_secbuf **out);
/* Seals plaintext as a version 2 object with keying 2 (index key X). */
int bk_object_seal_x(const struct cf_bk_keys *k, enum cf_bk_kind kind,
    const unsigned char *plain, size_t len, const unsigned char *kid,
    const unsigned char *nonce, int compress, unsigned char **out,
    size_t *outlen);

/* ---- little-endian helpers ------------------------------------------------ */

static inline void
bk_le16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

static inline void
bk_le32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
	p[2] = (unsigned char)(v >> 16);
	p[3] = (unsigned char)(v >> 24);
}

static inline void
bk_le64(unsigned char *p, uint64_t v)
{
	bk_le32(p, (uint32_t)v);
	bk_le32(p + 4, (uint32_t)(v >> 32));
}

static inline uint16_t
bk_rd16(const unsigned char *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t
bk_rd32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

static inline uint64_t
bk_rd64(const unsigned char *p)
{
	return (uint64_t)bk_rd32(p) | (uint64_t)bk_rd32(p + 4) << 32;
}

/* ---- object headers and keys (bk_object.c) -------------------------------- */

/* Writes a header; kid NULL draws a random key id. */
void bk_header_make(unsigned char hdr[CF_BK_HEADER_BYTES],
    enum cf_bk_kind kind, const struct cf_bk_keys *k,
    const unsigned char *kid);
/*
 * Checks a header against [BK-OBJ-1..5] and [BK-WO-1]: -EPROTO
 * malformed or not of kind, -ENOKEY key version other than k's (k may
 * be NULL: no check).
 */
int bk_header_check(const unsigned char *hdr, enum cf_bk_kind kind,
    const struct cf_bk_keys *k);
/* Nonce length for the header's cipher (12 or 24). */
size_t bk_header_nl(const unsigned char *hdr);
/*
 * The AEAD context of the object with this header (its object key).
 * -ENOKEY when k cannot derive it: write-only keys and a version 1 or
 * sealed object, or a sealed pack whose key was not learnt.
 */
int bk_object_aead(const struct cf_bk_keys *k, const unsigned char *hdr,
    struct cf_ks_aead **out);
/*
 * cf_bk_object_seal with injectable key id and nonce (NULL: random) and
 * compress 0 (never) or 1 (when shorter).
 */
int bk_object_seal_ex(const struct cf_bk_keys *k, enum cf_bk_kind kind,
    const unsigned char *plain, size_t len, const unsigned char *kid,
    const unsigned char *nonce, int compress, unsigned char **out,
    size_t *outlen);

/*
 * Decompresses one zstd frame of clen bytes into exactly ulen bytes at
 * out; -EPROTO unless the frame declares ulen and yields exactly that.
 */
int bk_unzstd(const unsigned char *c, size_t clen, unsigned char *out,
    size_t ulen);

/* ---- blobs and packs (bk_pack.c) ------------------------------------------ */

void bk_desc_encode(unsigned char out[CF_BK_DESC_BYTES],
    const struct cf_bk_desc *d);
/* Decodes and checks one descriptor for cipher nonce length nl. */
int bk_desc_decode(struct cf_bk_desc *d, const unsigned char *in, size_t nl);
/* Size of a pack with these blobs ([BK-PACK-1]); 0 if over the limits. */
uint64_t bk_pack_size(const struct cf_bk_desc *d, size_t n, size_t nl);
/* The same for a checked pack header (a sealed pack: 80 bytes more). */
uint64_t bk_pack_size_hdr(const unsigned char *hdr,
    const struct cf_bk_desc *d, size_t n);
/* Opens a blob with a ready AEAD context (cf_bk_blob_open's body). */
int bk_blob_open_aead(const struct cf_bk_keys *k,
    const struct cf_ks_aead *a, const unsigned char *hdr,
    const struct cf_bk_desc *d, const unsigned char *sblob, size_t len,
    unsigned char **plain, size_t *plen);

/* A pack being built in memory. */
struct bk_packer;

/*
 * kid NULL: random key id.  With write-only keys the pack is a version 2
 * sealed pack (kid must be NULL) and bk_packer_finish's hdr receives
 * the header and the sealed key (CF_BK_PACK_HEADER_MAX bytes).
 */
int bk_packer_new(struct bk_packer **out, const struct cf_bk_keys *k,
    const unsigned char *kid);
void bk_packer_free(struct bk_packer *p);
/*
 * Compresses (if compress and shorter; cctx may be NULL), seals and
 * appends one blob whose id the caller computed.  nonce NULL: random.
 */
int bk_packer_add(struct bk_packer *p, enum cf_bk_blob_type type,
    const unsigned char id[CF_BK_ID_BYTES], const unsigned char *plain,
    size_t len, int compress, void *cctx, const unsigned char *nonce);
/*
 * Hands an empty packer a buffer of cap bytes (malloc'd; the packer owns
 * it from here) to build its pack in: the writer reuses the buffers of
 * packs it has put instead of allocating a fresh one per pack.
 */
void bk_packer_adopt(struct bk_packer *p, unsigned char *buf, size_t cap);
size_t bk_packer_count(const struct bk_packer *p);
size_t bk_packer_bytes(const struct bk_packer *p);
/* The capacity of the packer's buffer (before finish hands it over). */
size_t bk_packer_cap(const struct bk_packer *p);
/*
 * Seals the trailer (nonce NULL: random) and hands over the pack: *buf
 * (*len bytes, malloc'd), its storage id, header and descriptors (*descs
 * malloc'd, *n).  The packer is empty afterwards and may be freed.
 */
int bk_packer_finish(struct bk_packer *p, const unsigned char *nonce,
    unsigned char **buf, size_t *len, unsigned char id[CF_BK_ID_BYTES],
    unsigned char hdr[CF_BK_HEADER_BYTES], struct cf_bk_desc **descs,
    size_t *n);

/* ---- misc ------------------------------------------------------------------ */

/* Object name for a storage id (65 bytes with the NUL). */
static inline void
bk_name(const unsigned char id[CF_BK_ID_BYTES], char out[65])
{
	cf_bk_id_hex(id, out);
}

/* 1 if s is 64 lowercase hex digits. */
int bk_name_valid(const char *s);

/*
 * Opens the S3 backend for "s3://bucket/prefix[?options]" (bk_store_s3.c,
 * docs/s3.md).  CF_BK_STORE_CREATE creates a missing bucket.
 */
int bk_store_s3_open(struct cf_bk_store **out, const char *url, int flags);
/*
 * Objects and listings fetched ahead (bk_prefetch.c) for the store to
 * hand out once (bk_store.c).  bk_store_hold takes buf (freed on any
 * failure); bk_store_hold_list takes names and sizes (n entries, as the
 * kind's list would give them).  Thread-safe.
 */
int bk_store_hold(struct cf_bk_store *s, enum cf_bk_kind kind,
    const char *name, unsigned char *buf, size_t len);
int bk_store_hold_list(struct cf_bk_store *s, enum cf_bk_kind kind,
    char (*names)[65], uint64_t *sizes, size_t n);
/* Forgets every held listing (not the objects). */
void bk_store_drop_lists(struct cf_bk_store *s);
/*
 * Waits for pf's fetching to end and hands over its store: NULL if it
 * could not open one or, with CF_BK_REPO_CREATE in flags, read no
 * config (the caller then opens its own, creating).  Once.
 */
struct cf_bk_store *bk_prefetch_take_store(struct cf_bk_prefetch *pf,
    int flags);
/* The URL pf was started with. */
const char *bk_prefetch_url(const struct cf_bk_prefetch *pf);
/* The key version of a config object's header: 0, or -EPROTO. */
int bk_config_key_version(const unsigned char *obj, size_t len,
    uint32_t *version);
/*
 * The S3 XML reader (bk_store_s3.c) on one response body, for the fuzz
 * target: 0 or -EPROTO (not well-formed) or -ENOMEM; the counts of list
 * entries and of per-key DeleteObjects errors, the error code and the
 * versioning status it found (each "" if none).
 */
int bk_store_s3_xml_probe(const char *buf, size_t len, size_t *nents,
    size_t *nerrs, char code[64], char status[32]);
/*
 * Tests: the page size of the S3 store's ListMultipartUploads (ctx from
 * cf_bk_store_ctx; 1 to 1000, default 1000), to see its pagination with
 * a few uploads.  Not thread-safe: call before the store is shared.
 */
void bk_store_s3_set_uploads_page(void *ctx, unsigned n);
/* The Object Lock retain-until date of an object (0: none). */
int bk_store_s3_lock_until(void *ctx, enum cf_bk_kind kind, const char *name,
    int64_t *until);

/* Config JSON (bk_repo.c); exposed for the tests. */
struct bk_config {
	unsigned char repo_id[16];	/* zero when opened by a writer */
	unsigned char tenant[CF_KS_ID_BYTES];
	int64_t created;
	size_t min, avg, max;
	/*
	 * A re-keyed config ([BK-CFG-2]) carries the chunk key C and the
	 * root key version it was derived from; NULL and 0 otherwise.
	 */
	struct cf_secbuf *chunk;
	uint32_t chunk_version;
};
/*
 * Encodes c as the config's JSON plaintext.  *out is owned by the caller:
 * it holds C when c carries it, so wipe it (bk_config_text_free).
 */
int bk_config_encode(const struct bk_config *c, char **out, size_t *len);
/*
 * Decodes a config plaintext into c ([BK-CFG-1], [BK-CFG-2]); 0 or
 * -EPROTO (-ENOMEM).  c->chunk is owned by c: bk_config_clear frees it.
 * The caller wipes buf (it may hold C).
 */
int bk_config_decode(struct bk_config *c, const char *buf, size_t len);
void bk_config_clear(struct bk_config *c);
/*
 * Seals a config plaintext under root key version `version` (which full
 * keys k hold): the header names it and the object key derives from its
 * D ([BK-CFG-2]).  kid and nonce NULL: random.  *out as
 * cf_bk_object_seal.
 */
int bk_config_seal(const struct cf_bk_keys *k, uint32_t version,
    const unsigned char *plain, size_t len, const unsigned char *kid,
    const unsigned char *nonce, unsigned char **out, size_t *outlen);
/* Wipes and frees an encoded config text of len bytes; NULL ok. */
void bk_config_text_free(char *s, size_t len);
/*
 * Replaces the chunk key of full keys k with C (32 bytes), derived from
 * root key version from: I, G, X and the gear table are derived anew
 * ([BK-CFG-2]).  Not thread safe: before k is shared.  0 or -errno.
 */
int bk_keys_set_chunk(struct cf_bk_keys *k, const struct cf_secbuf *c,
    uint32_t from);
/* C of full keys (NULL for write-only keys) and, in *from, its version. */
const struct cf_secbuf *bk_keys_chunk(const struct cf_bk_keys *k,
    uint32_t *from);

/* 1 if the chunker parameters obey [BK-CDC-1]. */
int bk_chunker_params_ok(size_t min, size_t avg, size_t max);

/*
 * The writer puts an index object at the latest this long (ns) after its
 * last one (default 30 s; tests: 0, an index after every pack).
 */
struct cf_bk_writer;
void bk_writer_index_every(struct cf_bk_writer *w, int64_t ns);

/* ---- repository (bk_repo.c), shared with the writer (bk_writer.c) ------- */

struct cf_bk_repo {
	struct cf_bk_store *store;
	const struct cf_bk_keys *keys;
	struct cf_bk_keys *own_keys;	/* set when opened by URL */
	struct cf_bk_chunker *chunker;
	struct bk_config cfg;
	unsigned char config_id[CF_BK_ID_BYTES];	/* storage id of config */
	uint32_t cfg_version;		/* key_version of the config */
	struct cf_bk_index *idx;
	/* The AEAD of the pack read last (restores read pack by pack). */
	unsigned char cache_hdr[CF_BK_HEADER_BYTES];
	struct cf_ks_aead *cache_aead;
	struct bk_window *win;		/* remote stores: read-ahead window */
	struct bk_pcache *pc;		/* restores from remote stores */
	/* The names of the index objects loaded, sorted, hashed. */
	unsigned char idx_names[CF_BK_ID_BYTES];
	/*
	 * Opened from objects fetched before its lock was taken
	 * (bk_prefetch.c): cf_bk_repo_lock settles the listings.
	 */
	int prefetched;
};

/*
 * Windows of packs read ahead: on a remote store one ranged GET per blob
 * costs a round trip each (20 ms on RGW), so a blob is read with the next
 * BK_WINDOW bytes of its pack, and the blobs that follow (a restore reads
 * a file's blobs in order) come from memory.  Several windows, because a
 * backup's writer threads fill several packs at once, so consecutive
 * files alternate between packs.
 */
#define BK_WINDOW (4U << 20)
#define BK_WINDOWS 4		/* packs read at once: one per writer thread */
struct bk_window {
	struct {
		unsigned char pack[CF_BK_ID_BYTES];
		uint64_t off;
		size_t len;
		unsigned char *buf;	/* BK_WINDOW bytes */
		unsigned long used;	/* for least recently used */
	} w[BK_WINDOWS];
	unsigned long clock;
};

/*
 * Loads the blob at loc (found in an index by the caller) with the
 * repo's AEAD cache; as cf_bk_repo_blob_load otherwise.  The writer uses
 * it to read the parent snapshot's trees while it owns the index.
 */
int bk_repo_blob_load_loc(struct cf_bk_repo *r,
    const struct cf_bk_blob_loc *loc, unsigned char **buf, size_t *len);

/* Seals plaintext as an object of kind and puts it under its storage id. */
int bk_repo_put_object(struct cf_bk_repo *r, enum cf_bk_kind kind,
    const unsigned char *plain, size_t len, unsigned char id[CF_BK_ID_BYTES]);

/*
 * Pack i of an index (bk_index.c, for bk_verify.c): its header,
 * descriptors, blob offsets (of each sealed blob in the pack), count
 * and size.  The pointers are owned by idx.
 */
void bk_index_pack_info(const struct cf_bk_index *idx, size_t i,
    const unsigned char **hdr, const struct cf_bk_desc **descs,
    const uint32_t **offsets, size_t *n, uint64_t *size);

#endif /* BK_INT_H */
