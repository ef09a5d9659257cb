/*
 * cf_fs.h - the public interface of coffer's encrypted tenant store.
 *
 * A tenant's store is a backing directory holding ciphertext only: every
 * regular file is a header plus fixed-size AEAD-sealed blocks, every name
 * is encrypted under a per-directory IV, symlink targets are encrypted
 * (docs/format/fs.md).  cf_fs_mount() serves it through FUSE; the codec
 * functions below are public so backups and tests can read a store
 * without a FUSE round trip, and so the decoders can be fuzzed.
 *
 * Conventions as in cf_keystore.h: 0 or -errno; -EBADMSG for data that
 * fails authentication, -EPROTO for malformed data.
 */
#ifndef CF_FS_H
#define CF_FS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cf_keystore.h"

#define CF_FS_BLOCK 4096U		/* plaintext bytes per block */
#define CF_FS_HEADER_BYTES 32U
#define CF_FS_DIRIV_BYTES 16U
#define CF_FS_DIRIV_NAME "cf.diriv"	/* per-directory IV file */
#define CF_FS_NAME_MAX 175U		/* longest plaintext name */

/* The keys of one tenant's store, derived from its root key. */
struct cf_fs_keys;

/*
 * Derives the content, name and metadata keys from a root key.  On success
 * *out is owned by the caller; free with cf_fs_keys_free().
 */
CF_MUST_CHECK int cf_fs_keys_new(struct cf_fs_keys **out,
    const struct cf_secbuf *root, enum cf_ks_cipher cipher,
    uint32_t key_version);
void cf_fs_keys_free(struct cf_fs_keys *k);

/* ---- file header and blocks ------------------------------------------ */

struct cf_fs_header {
	enum cf_ks_cipher cipher;
	uint32_t key_version;
	unsigned char file_id[CF_KS_ID_BYTES];
};

/* Decodes a 32-byte header; -EPROTO if malformed or of unknown version. */
CF_MUST_CHECK int cf_fs_header_decode(struct cf_fs_header *h,
    const unsigned char *buf, size_t len);
void cf_fs_header_encode(const struct cf_fs_header *h,
    unsigned char buf[CF_FS_HEADER_BYTES]);

/* Ciphertext overhead of one block (nonce + tag) for a cipher. */
size_t cf_fs_block_overhead(enum cf_ks_cipher c);
/* Plaintext size of a file whose backing file has csize bytes. */
off_t cf_fs_plain_size(enum cf_ks_cipher c, off_t csize);
/* Backing size for a plaintext size, header included (0 gives 32). */
off_t cf_fs_cipher_size(enum cf_ks_cipher c, off_t psize);

/* A per-file sealing context: the file key derived from the file id. */
struct cf_fs_file_ctx;

CF_MUST_CHECK int cf_fs_file_ctx_new(struct cf_fs_file_ctx **out,
    const struct cf_fs_keys *k, const struct cf_fs_header *h);
void cf_fs_file_ctx_free(struct cf_fs_file_ctx *f);

/*
 * Seals plaintext block number blk (len <= CF_FS_BLOCK bytes) into out
 * (len + overhead bytes).
 */
CF_MUST_CHECK int cf_fs_block_seal(const struct cf_fs_file_ctx *f,
    uint64_t blk, const unsigned char *in, size_t len, unsigned char *out);
/*
 * Opens ciphertext block blk (clen bytes) into out (clen - overhead
 * bytes).  An all-zero ciphertext block is a hole and opens to zeros.
 * -EBADMSG if it does not authenticate (tampered, moved, swapped).
 */
CF_MUST_CHECK int cf_fs_block_open(const struct cf_fs_file_ctx *f,
    uint64_t blk, const unsigned char *in, size_t clen, unsigned char *out);

/* ---- names ------------------------------------------------------------- */

/*
 * Encrypts a name (not "." or "..", no '/', 1..CF_FS_NAME_MAX bytes) for
 * the directory whose IV is diriv into out (NUL-terminated, at most 256
 * bytes).  Deterministic: the same name in the same directory always
 * gives the same result.  -ENAMETOOLONG if the name is too long.
 */
CF_MUST_CHECK int cf_fs_name_encrypt(const struct cf_fs_keys *k,
    const unsigned char diriv[CF_FS_DIRIV_BYTES], const char *name,
    char *out, size_t cap);
/*
 * Decrypts an encrypted name into out (NUL-terminated).  -EPROTO if it is
 * not an encoded name, -EBADMSG if it does not authenticate for diriv.
 */
CF_MUST_CHECK int cf_fs_name_decrypt(const struct cf_fs_keys *k,
    const unsigned char diriv[CF_FS_DIRIV_BYTES], const char *enc,
    char *out, size_t cap);

/*
 * Symlink targets: sealed with the metadata key under a random nonce and
 * base64url-encoded.  out receives at most cap bytes including the NUL.
 */
CF_MUST_CHECK int cf_fs_link_encrypt(const struct cf_fs_keys *k,
    const char *target, char *out, size_t cap);
CF_MUST_CHECK int cf_fs_link_decrypt(const struct cf_fs_keys *k,
    const char *enc, char *out, size_t cap);

/* ---- mounting ------------------------------------------------------------ */

struct cf_fs_mount_opts {
	const char *backing;		/* the tenant's ciphertext directory */
	const char *mountpoint;
	int foreground;			/* else daemonize after mounting */
	const char *fuse_opts;		/* -o list, or NULL */
	struct cf_ks_home *home;	/* for audit records */
	const char *tenant;		/* tenant name, for audit records */
};

/*
 * Mounts the store and serves requests until it is unmounted or receives
 * SIGTERM/SIGINT; returns 0 after a clean unmount.  keys must live until
 * it returns.
 */
CF_MUST_CHECK int cf_fs_mount(const struct cf_fs_keys *keys,
    const struct cf_fs_mount_opts *o);

/*
 * Creates the backing directory (mode 0700) with its root directory IV if
 * missing, and checks it belongs to these keys (a store of another tenant
 * is refused with -EBADMSG).
 */
CF_MUST_CHECK int cf_fs_store_init(const struct cf_fs_keys *keys,
    const char *backing);

#endif /* CF_FS_H */
