/*
 * ks_int.h - private declarations shared by the keystore's source files.
 * Nothing outside keystore/ (tests excepted) includes this header.
 */
#ifndef KS_INT_H
#define KS_INT_H

#include <stdarg.h>
#include <sys/types.h>

#include <jansson.h>

#include "cf_keystore.h"

/* ---- errors (ks_error.c) ---------------------------------------------- */

/*
 * Records an operator-facing message for cf_ks_last_error() and returns rc
 * unchanged, so callers can write: return ks_err(-EPROTO, "...", ...).
 */
int ks_err(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ks_err_clear(void);

/* ---- files (ks_util.c) ------------------------------------------------ */

/*
 * Opens path relative to dirfd following no symlink in any component and
 * not climbing out with ".." (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS,
 * else one O_NOFOLLOW openat per component); an absolute path or AT_FDCWD
 * only refuses a symlink as the last component.  Never blocks on a FIFO:
 * anything but a regular file (a directory with O_DIRECTORY) is -EINVAL,
 * a symlink -ELOOP, both with a message.  Adds O_CLOEXEC.  Returns the fd
 * (blocking mode) or -errno.
 */
int ks_openat(int dirfd, const char *path, int flags, mode_t mode);

/*
 * Reads a whole file relative to dirfd (opened with ks_openat), refusing
 * anything larger than max bytes (-EFBIG).  On success *buf
 * (NUL-terminated, len excludes the NUL) is owned by the caller; free
 * with free().
 */
int ks_read_file(int dirfd, const char *path, size_t max, unsigned char **buf,
    size_t *len);
/* coffer.conf from dirfd/name (shown: its path in messages); absent: empty. */
CF_MUST_CHECK int ks_config_load_at(struct cf_ks_config **out, int dirfd,
    const char *name, const char *shown);
/*
 * Reads a small secret file (passphrase, PIN, key) straight into sb,
 * which the caller owns: at most max (<= cf_secbuf_len(sb)) bytes, -EFBIG
 * if the file holds more.  Opened with ks_openat (no FIFO hang, regular
 * files only); -EACCES unless the mode has no group or other bits and the
 * owner is the effective uid or root.  Errors carry a message that starts
 * with what ("passphrase file").  On success *len is the byte count; on
 * failure sb may hold part of the file (the caller wipes it).
 */
int ks_read_secret(int dirfd, const char *path, const char *what,
    struct cf_secbuf *sb, size_t max, size_t *len);
/*
 * Replaces path relative to dirfd atomically: writes a temporary file
 * with the given mode, fsyncs it, renames it over path and fsyncs the
 * directory.  A crash leaves either the old or the new content.
 */
int ks_write_file_atomic(int dirfd, const char *path, const void *buf,
    size_t len, mode_t mode);
/* Creates every missing directory of path (relative to dirfd) with mode. */
int ks_mkdirs(int dirfd, const char *path, mode_t mode);
/* Overwrites a file's bytes, fsyncs, unlinks it and fsyncs its directory. */
int ks_shred_file(int dirfd, const char *path);
/* fsyncs the directory that contains path (relative to dirfd). */
int ks_fsync_parent(int dirfd, const char *path);
/* Lowercase hex of bin into hex (2 * len + 1 bytes). */
void ks_hex(char *hex, const unsigned char *bin, size_t len);
/* Decodes exactly len bytes of hex; -EPROTO unless hex is 2 * len digits. */
int ks_unhex(unsigned char *bin, size_t len, const char *hex);
/* Loads a JSON object from a file (max bytes); -EPROTO if not an object. */
int ks_json_load(int dirfd, const char *path, size_t max, json_t **out);
/* Saves a JSON object atomically with mode. */
int ks_json_save(int dirfd, const char *path, const json_t *obj, mode_t mode);

/* ---- AEAD (ks_aead.c) ------------------------------------------------- */

/*
 * cf_ks_aead_new, with use_evp 0 meaning: AES-256-GCM by libsodium's
 * precomputed state, as when OpenSSL has no AES-256-GCM (cf_ks_aead_new
 * passes 1).  Lets the tests compare both libraries through one API.
 */
CF_MUST_CHECK int ks_aead_new(struct cf_ks_aead **out, enum cf_ks_cipher c,
    const unsigned char key[CF_KS_KEY_BYTES], int use_evp);

/* ---- home (ks_home.c) ------------------------------------------------- */

struct ks_kms;

#define KS_HOME_MAX_KMS 16

struct cf_ks_home {
	char *path;
	int dirfd;			/* O_PATH|O_DIRECTORY on the home */
	struct cf_ks_config *cfg;
	cf_ks_passphrase_cb pass_cb;
	void *pass_arg;
	char actor[96];
	struct cf_secbuf *audit_key;	/* loaded on first append/verify */
	struct ks_kms *kms[KS_HOME_MAX_KMS]; /* opened providers, by name */
	size_t nkms;
};

/*
 * Reads a passphrase for KMS kms_name: from the file named by the
 * provider's pass_file/passphrase_file key, else through the callback.
 * On success *out holds the passphrase bytes (no NUL counted).
 */
int ks_home_passphrase(struct cf_ks_home *home, const char *kms_name,
    const char *pass_file, int confirm, struct cf_secbuf **out, size_t *len);

/* ---- KMS providers (ks_kms.c, ks_kms_<type>.c) ------------------------ */

/*
 * A KMS provider is a const ops table, selected by the "type" key of its
 * [kms.NAME] section.  Providers never hand a KEK to their callers: they
 * wrap and unwrap 32-byte root keys.  aad binds the tenant id and key
 * version (the wrapped-key header) and MUST be authenticated by wrap.
 */
struct ks_kms_ops {
	const char *type;
	/* Sets up kms->priv from the configuration; no secret is read yet. */
	int (*open)(struct ks_kms *kms);
	/*
	 * Names the KEK that wraps new keys and the CF_KS_WRAP_* algorithm
	 * it uses, creating the provider's first KEK if it has none.
	 */
	int (*current)(struct ks_kms *kms, unsigned char kek_id[CF_KS_ID_BYTES],
	    uint8_t *alg);
	/*
	 * Wraps key under KEK kek_id (as named by current) with alg; writes
	 * at most CF_KS_ENVELOPE_BLOB_MAX bytes to blob.
	 */
	int (*wrap)(struct ks_kms *kms, const unsigned char *kek_id, uint8_t alg,
	    const unsigned char *aad, size_t aadlen, const struct cf_secbuf *key,
	    unsigned char *blob, size_t *bloblen);
	/* Unwraps with the KEK kek_id.  -EBADMSG if authentication fails. */
	int (*unwrap)(struct ks_kms *kms, const unsigned char *kek_id,
	    uint8_t alg, const unsigned char *aad, size_t aadlen,
	    const unsigned char *blob, size_t bloblen, struct cf_secbuf **key);
	/* Makes a new KEK the current one. */
	int (*rotate)(struct ks_kms *kms);
	/* A one-line, secret-free description of a KEK. */
	int (*describe)(struct ks_kms *kms, const unsigned char *kek_id,
	    char *buf, size_t len);
	/* Destroys a KEK (irreversible). */
	int (*destroy)(struct ks_kms *kms, const unsigned char *kek_id);
	/* Frees kms->priv (wiping secrets). */
	void (*close)(struct ks_kms *kms);
};

struct ks_kms {
	const struct ks_kms_ops *ops;
	struct cf_ks_home *home;
	char name[CF_KS_NAME_MAX + 1];
	char section[CF_KS_NAME_MAX + 8];	/* "kms.NAME" */
	void *priv;
};

extern const struct ks_kms_ops ks_kms_file_ops;
extern const struct ks_kms_ops ks_kms_pkcs11_ops;
extern const struct ks_kms_ops ks_kms_kmip_ops;

/* Opens (or returns the cached) provider called name.  Owned by home. */
int ks_kms_get(struct cf_ks_home *home, const char *name, struct ks_kms **out);
/* Closes every cached provider of home. */
void ks_kms_close_all(struct cf_ks_home *home);
/* A configuration value of the provider's section, or NULL. */
const char *ks_kms_conf(const struct ks_kms *kms, const char *key);

/* ---- lockout (ks_lockout.c) ---------------------------------------- */

/* 0 if subject may try; -EACCES (message says until when) if locked. */
int ks_lockout_check(struct cf_ks_home *home, const char *subject);
/*
 * Counts an attempt as a failure before it is checked (under flock, so
 * parallel attempts count); -EACCES if the subject is locked.  Locks once
 * CF_KS_LOCKOUT_FAILURES are reached.  Undo with ks_lockout_reset().
 */
int ks_lockout_attempt(struct cf_ks_home *home, const char *subject);
/* Reports (and audits) a failed attempt; always returns -EACCES. */
int ks_lockout_fail(struct cf_ks_home *home, const char *subject);
/* Clears the failure count after a success. */
int ks_lockout_reset(struct cf_ks_home *home, const char *subject);

/* ---- audit (ks_audit.c) ----------------------------------------------- */

/* Frees the cached audit key. */
void ks_audit_close(struct cf_ks_home *home);

/* ---- binary formats (ks_envelope.c; docs/format/keystore.md) ------ */

/* Wrapped-key file: "\x89CFWK\r\n\x1a", as PNG does, to catch mangling. */
#define KS_WK_MAGIC "\x89" "CFWK\r\n\x1a"
#define KS_WK_VERSION 1
#define KS_WK_FIXED 50U		/* header (48) + blob length (2) */

/*
 * alg 3 (CF_KS_WRAP_AES256KWP), docs/format/keystore.md: blob = the RFC
 * 5649 wrap of the root key (40 bytes) || a 32-byte MAC,
 * mac = BLAKE2b-256(key = crypto_kdf(root, subkey 1, "cf-kwmac"),
 *                   header || wrapped).
 */
#define KS_KWP_WRAPPED_BYTES 40U
#define KS_KWP_MAC_BYTES 32U
#define KS_KWP_BLOB_BYTES (KS_KWP_WRAPPED_BYTES + KS_KWP_MAC_BYTES)
#define KS_KWP_MAC_CONTEXT "cf-kwmac"
#define KS_KWP_MAC_SUBKEY 1

/* Computes the MAC of an alg-3 blob.  Wipes its temporaries. */
void ks_kwp_mac(const unsigned char root[CF_KS_KEY_BYTES],
    const unsigned char header[CF_KS_ENVELOPE_HEADER_BYTES],
    const unsigned char wrapped[KS_KWP_WRAPPED_BYTES],
    unsigned char mac[KS_KWP_MAC_BYTES]);
/*
 * Checks blob[40..72) against the MAC of header || blob[0..40) under root,
 * in constant time: 0, or -EBADMSG (no message set: the caller says
 * which KMS failed).
 */
CF_MUST_CHECK int ks_kwp_verify(const unsigned char root[CF_KS_KEY_BYTES],
    const unsigned char header[CF_KS_ENVELOPE_HEADER_BYTES],
    const unsigned char blob[KS_KWP_BLOB_BYTES]);

/* File-KMS KEK file. */
#define KS_KK_MAGIC "\x89" "CFKK\r\n\x1a"
#define KS_KK_VERSION 1
#define KS_KK_KDF_ARGON2ID13 1
#define KS_KK_AEAD_XCHACHA 1
#define KS_KK_AAD_BYTES 80U
#define KS_KK_BYTES 128U
#define KS_KK_OPS_MIN 1U
#define KS_KK_OPS_MAX 16U
#define KS_KK_MEM_MIN 8192ULL
#define KS_KK_MEM_MAX (4ULL << 30)
/*
 * Defaults: 4 passes over 192 MiB.  The same unlock time as libsodium's
 * MODERATE (3 x 256 MiB) and well above RFC 9106's second recommended
 * option (3 x 64 MiB), while the unlocking process stays inside the
 * 256 MiB a backup may use (docs/format/keystore.md).
 */
#define KS_KK_OPS_DEFAULT 4U
#define KS_KK_MEM_DEFAULT (192ULL << 20)

int ks_kekfile_seal(unsigned char out[KS_KK_BYTES], const char *pass,
    size_t passlen, uint32_t ops, uint64_t mem,
    const unsigned char kek_id[CF_KS_ID_BYTES], const struct cf_secbuf *kek);

#endif /* KS_INT_H */
