/*
 * cf_keystore.h - the public interface of coffer's bottom layer.
 *
 * The keystore owns everything that touches key material: secure buffers,
 * the AEAD and KDF wrappers over libsodium, the per-tenant key hierarchy
 * (a random root key per tenant and key version, stored only wrapped by a
 * key-encryption key held in a KMS provider), the lockout counters, the
 * tenant registry under coffer's home, the configuration file and the
 * tamper-evident audit log.
 *
 * It deliberately does not know about file systems, backups or networks;
 * fs/ and backup/ ask it for purpose subkeys and never see a KEK.
 *
 * Conventions: functions returning int give 0 on success and -errno on
 * failure.  -EBADMSG means an authentication failure (wrong key, tampered
 * data), -EPROTO a malformed or unknown format, -EACCES a refusal (locked
 * out, wrong passphrase), -ENOENT a missing tenant or file.  After any
 * failure cf_ks_last_error() returns a sentence meant for an operator; it
 * never contains key material, passphrases or file contents.
 *
 * Thread safety: unless a comment says otherwise, an object may be used by
 * one thread at a time; distinct objects are independent.  struct
 * cf_ks_aead is safe to share between threads once created.
 */
#ifndef CF_KEYSTORE_H
#define CF_KEYSTORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define CF_MUST_CHECK __attribute__((warn_unused_result))

#define CF_KS_KEY_BYTES 32U
#define CF_KS_TAG_BYTES 16U
#define CF_KS_ID_BYTES 16U	/* tenant ids, KEK ids, file ids */
#define CF_KS_NAME_MAX 63U	/* longest tenant or KMS name */

/* Exit codes shared by every command (DESIGN.md). */
#define CF_EXIT_OK 0
#define CF_EXIT_FAIL 1
#define CF_EXIT_USAGE 2
#define CF_EXIT_INTEGRITY 3
#define CF_EXIT_DENIED 4

/* ---- errors ---------------------------------------------------------- */

/*
 * Returns the message recorded by the most recent failing keystore call in
 * this thread, or a generic text for the errno if none was recorded.  The
 * string is owned by the library and valid until the next call from this
 * thread.
 */
const char *cf_ks_last_error(void);

/* Maps a -errno from any coffer module to one of the CF_EXIT_* codes. */
int cf_ks_exit_code(int rc);

/* Aborts the process: a caller broke an API invariant (not bad input). */
void cf_misuse(const char *what) __attribute__((noreturn));

/* CLOCK_MONOTONIC in nanoseconds: for intervals, never for dates. */
int64_t cf_mono_ns(void);

/* ---- library ----------------------------------------------------------- */

/* Initialises libsodium; call once before anything else.  Thread-safe. */
CF_MUST_CHECK int cf_ks_init(void);

/*
 * Hardens a long-running process: no core dumps (RLIMIT_CORE=0), not
 * dumpable or ptrace-attachable by other users (PR_SET_DUMPABLE=0).
 */
CF_MUST_CHECK int cf_ks_harden_process(void);

/*
 * Keeps this process's pages out of swap (docs/crypto.md, "Secrets in
 * memory"): mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT), pages locked
 * as they are first touched, so the RSS is what it would be.  Only where
 * it cannot make a later allocation fail (CAP_IPC_LOCK, or no
 * RLIMIT_MEMLOCK): 1 locked, 0 not tried, -errno if mlockall failed.
 * Locks are not inherited by a fork's child.
 */
int cf_ks_lock_memory(void);

/*
 * Reads the whole regular file open as fd (at most max bytes) into *buf
 * (malloc'd, NUL-terminated, the caller frees it).  -EINVAL if it is not
 * a regular file, -EFBIG if larger than max.
 */
CF_MUST_CHECK int cf_ks_read_fd(int fd, size_t max, unsigned char **buf,
    size_t *len);
/*
 * Replaces the file at path with len bytes of buf, crash-safely: a
 * temporary file beside it, fsync, rename, fsync of the directory.
 */
CF_MUST_CHECK int cf_ks_write_atomic(const char *path, const void *buf,
    size_t len, mode_t mode);

/* ---- secure buffers ---------------------------------------------------- */

/*
 * Key material lives only in a struct cf_secbuf: sodium_malloc'd (guard
 * pages, mlocked, excluded from core dumps) and wiped on free.
 */
struct cf_secbuf;

/* On success *out is owned by the caller; free with cf_secbuf_free(). */
CF_MUST_CHECK int cf_secbuf_new(struct cf_secbuf **out, size_t len);
/* Allocates and fills with random bytes. */
CF_MUST_CHECK int cf_secbuf_random(struct cf_secbuf **out, size_t len);
/* Wipes and frees; accepts NULL. */
void cf_secbuf_free(struct cf_secbuf *sb);
/* Raw access for the crypto calls.  Never print what this points to. */
unsigned char *cf_secbuf_data(struct cf_secbuf *sb);
const unsigned char *cf_secbuf_cdata(const struct cf_secbuf *sb);
size_t cf_secbuf_len(const struct cf_secbuf *sb);
/* Page protection while idle: read-only or no access at all. */
void cf_secbuf_readonly(struct cf_secbuf *sb);
void cf_secbuf_noaccess(struct cf_secbuf *sb);
void cf_secbuf_readwrite(struct cf_secbuf *sb);

/* ---- AEAD -------------------------------------------------------------- */

enum cf_ks_cipher {
	CF_KS_CIPHER_NONE = 0,
	CF_KS_CIPHER_AES256GCM = 1,		/* 12-byte nonce */
	CF_KS_CIPHER_XCHACHA20POLY1305 = 2,	/* 24-byte nonce */
};

/* "aes-256-gcm", "xchacha20-poly1305", or NULL for an unknown value. */
const char *cf_ks_cipher_name(enum cf_ks_cipher c);
/* Parses a name; -EINVAL if unknown. */
CF_MUST_CHECK int cf_ks_cipher_parse(const char *name, enum cf_ks_cipher *out);
/* 1 if this CPU can run the cipher (AES-GCM needs AES-NI + PCLMUL). */
int cf_ks_cipher_available(enum cf_ks_cipher c);
/* AES-256-GCM where available, else XChaCha20-Poly1305. */
enum cf_ks_cipher cf_ks_cipher_default(void);
/* Nonce length of the cipher, 0 for an unknown cipher. */
size_t cf_ks_cipher_nonce_bytes(enum cf_ks_cipher c);

/*
 * A keyed AEAD context.  For AES-256-GCM the key is expanded once per
 * OpenSSL cipher context (up to 8 kept, made as threads need them), or
 * once here where OpenSSL has no AES-256-GCM and libsodium computes it.
 * The context copies the key into locked memory (one allocation).  Safe
 * to use from many threads at once after creation.
 */
struct cf_ks_aead;

/* -ENOTSUP if the cipher is not available on this CPU. */
CF_MUST_CHECK int cf_ks_aead_new(struct cf_ks_aead **out, enum cf_ks_cipher c,
    const unsigned char key[CF_KS_KEY_BYTES]);
void cf_ks_aead_free(struct cf_ks_aead *a);
/*
 * Gives a context a new key of the same cipher, in place: no new locked
 * allocation (cf_ks_aead_new maps, locks and protects pages; a reader
 * that opens thousands of files would pay that per file).  The old key
 * is overwritten.  From the first rekey on the key memory stays writable
 * (no protection change per key).  Not while another thread uses the
 * context.
 */
void cf_ks_aead_rekey(struct cf_ks_aead *a,
    const unsigned char key[CF_KS_KEY_BYTES]);
enum cf_ks_cipher cf_ks_aead_cipher(const struct cf_ks_aead *a);

/*
 * Encrypts mlen bytes of m into c, which receives mlen + CF_KS_TAG_BYTES
 * bytes (ciphertext then tag).  m and c may be the same buffer.  The nonce
 * has cf_ks_cipher_nonce_bytes() bytes and MUST never repeat for one key.
 * 0; -ENOMEM if no cipher context can be made; -EINVAL if the library
 * fails (c may then hold part of a result).
 */
CF_MUST_CHECK int cf_ks_aead_seal(const struct cf_ks_aead *a, unsigned char *c,
    const unsigned char *m, size_t mlen, const unsigned char *ad, size_t adlen,
    const unsigned char *nonce);

/*
 * Decrypts and authenticates clen bytes of c into m (clen - 16 bytes).
 * -EBADMSG if the tag does not verify (m is then zeroed); -EINVAL if clen
 * is shorter than a tag or the library fails before writing into m;
 * -ENOMEM if no cipher context can be made.
 */
CF_MUST_CHECK int cf_ks_aead_open(const struct cf_ks_aead *a, unsigned char *m,
    const unsigned char *c, size_t clen, const unsigned char *ad, size_t adlen,
    const unsigned char *nonce);

/* ---- key derivation ---------------------------------------------------- */

/* Purposes of subkeys derived from a tenant root key (docs/crypto.md). */
enum cf_ks_purpose {
	CF_KS_PURPOSE_FS_CONTENT = 1,	/* file block encryption */
	CF_KS_PURPOSE_FS_NAMES = 2,	/* file name encryption */
	CF_KS_PURPOSE_BK_DATA = 3,	/* backup object encryption */
	CF_KS_PURPOSE_BK_CHUNKID = 4,	/* backup chunk id MAC */
	CF_KS_PURPOSE_AUDIT = 5,	/* per-tenant audit MACs */
	CF_KS_PURPOSE_FS_META = 6,	/* xattrs, symlink targets */
};

/*
 * Derives the 32-byte subkey for a purpose from a root key.  On success
 * *out is owned by the caller.  -EINVAL for an unknown purpose.
 */
CF_MUST_CHECK int cf_ks_derive(struct cf_secbuf **out,
    const struct cf_secbuf *root, enum cf_ks_purpose purpose);

/*
 * Derives a 32-byte key bound to an identifier (e.g. a per-file key from a
 * content key and a 16-byte file id): keyed BLAKE2b-256 of a label and the
 * id.  out must be 32 bytes; the caller wipes it.
 */
CF_MUST_CHECK int cf_ks_derive_id(unsigned char out[CF_KS_KEY_BYTES],
    const struct cf_secbuf *key, const char *label, const unsigned char *id,
    size_t idlen);

/* ---- clock --------------------------------------------------------------- */

/*
 * The current time.  In builds configured with -Dtest_clock=true only,
 * COFFER_NOW (ISO 8601) replaces the system clock so tests can simulate
 * lockout expiry and schedules; production builds ignore it.
 */
time_t cf_ks_now(void);
/* Parses "2026-01-31" or "2026-01-31T12:00:00Z" (UTC); -EINVAL otherwise. */
CF_MUST_CHECK int cf_ks_time_parse(const char *s, time_t *out);
/* Formats t as "2026-01-31T12:00:00Z" into buf (at least 21 bytes). */
void cf_ks_time_format(time_t t, char *buf, size_t len);

/* ---- configuration ----------------------------------------------------- */

/*
 * coffer.conf: INI (inih).  Sections are looked up by name ("kms.hsm",
 * "audit", "defaults"); keys are case-sensitive.
 */
struct cf_ks_config;

/* Parses INI text held in memory (len bytes, need not be NUL-terminated). */
CF_MUST_CHECK int cf_ks_config_parse(struct cf_ks_config **out,
    const char *text, size_t len);
/* Reads and parses a file; a missing file yields an empty configuration. */
CF_MUST_CHECK int cf_ks_config_load(struct cf_ks_config **out,
    const char *path);
void cf_ks_config_free(struct cf_ks_config *cfg);
/* The value, or NULL if absent.  Owned by cfg. */
const char *cf_ks_config_get(const struct cf_ks_config *cfg,
    const char *section, const char *key);

/* ---- home, passphrases ----------------------------------------------- */

/*
 * coffer's home directory: configuration, KMS state, tenants, lockout
 * state, audit log.  Layout in docs/format/home.md.
 */
struct cf_ks_home;

/*
 * Supplies a passphrase for a KMS.  Writes at most cap bytes into buf and
 * the length into *len; confirm is 1 when a new passphrase is being set
 * (ask twice).  Returns 0 or -errno.  Called only when the configuration
 * names no passphrase file.
 */
typedef int (*cf_ks_passphrase_cb)(void *arg, const char *kms_name,
    int confirm, char *buf, size_t cap, size_t *len);

#define CF_KS_HOME_CREATE 0x1	/* create the home if missing */

/* Opens (or creates) the home; on success *out is owned by the caller. */
CF_MUST_CHECK int cf_ks_home_open(struct cf_ks_home **out, const char *path,
    int flags);
void cf_ks_home_free(struct cf_ks_home *home);
const char *cf_ks_home_path(const struct cf_ks_home *home);
const struct cf_ks_config *cf_ks_home_config(const struct cf_ks_home *home);
void cf_ks_home_set_passphrase_cb(struct cf_ks_home *home,
    cf_ks_passphrase_cb cb, void *arg);
/* Who is acting, recorded in audit records (e.g. "root(0)"); copied. */
void cf_ks_home_set_actor(struct cf_ks_home *home, const char *actor);

/* ---- tenants ------------------------------------------------------------- */

struct cf_ks_tenant;

/* 1 if name is a valid tenant or KMS name: [a-z0-9][a-z0-9._-]{0,62}. */
int cf_ks_name_valid(const char *name);

/*
 * Creates a tenant: random id, random root key version 1 wrapped by the
 * named KMS provider (NULL: "local"), cipher (CF_KS_CIPHER_NONE: the
 * default), repository URL (NULL: none yet).  -EEXIST if it exists,
 * -ENOTSUP if the cipher is unavailable here.  Audited.
 */
CF_MUST_CHECK int cf_ks_tenant_create(struct cf_ks_home *home,
    const char *name, enum cf_ks_cipher cipher, const char *kms,
    const char *repo, struct cf_ks_tenant **out);
/* Opens an existing tenant (no key is unwrapped).  -ENOENT if unknown. */
CF_MUST_CHECK int cf_ks_tenant_open(struct cf_ks_home *home,
    const char *name, struct cf_ks_tenant **out);
void cf_ks_tenant_free(struct cf_ks_tenant *t);

/*
 * Lists tenant names, sorted.  On success *names is an array of *count
 * strings owned by the caller; free with cf_ks_tenant_list_free().
 */
CF_MUST_CHECK int cf_ks_tenant_list(struct cf_ks_home *home, char ***names,
    size_t *count);
void cf_ks_tenant_list_free(char **names, size_t count);

const char *cf_ks_tenant_name(const struct cf_ks_tenant *t);
const unsigned char *cf_ks_tenant_id(const struct cf_ks_tenant *t);
/* The id as 32 lowercase hex characters. */
const char *cf_ks_tenant_id_hex(const struct cf_ks_tenant *t);
enum cf_ks_cipher cf_ks_tenant_cipher(const struct cf_ks_tenant *t);
const char *cf_ks_tenant_kms(const struct cf_ks_tenant *t);
const char *cf_ks_tenant_repo(const struct cf_ks_tenant *t);
time_t cf_ks_tenant_created(const struct cf_ks_tenant *t);
/* Newest root key version (new data uses it). */
uint32_t cf_ks_tenant_key_version(const struct cf_ks_tenant *t);
/* 1 if the tenant's keys were destroyed (crypto-shredded). */
int cf_ks_tenant_shredded(const struct cf_ks_tenant *t);
/* The tenant's directory under the home (config and wrapped keys). */
const char *cf_ks_tenant_dir(const struct cf_ks_tenant *t);

/* Longest setting name and value that cf_ks_tenant_set accepts. */
#define CF_KS_TENANT_KEY_MAX 64U
#define CF_KS_TENANT_VALUE_MAX 4096U

/*
 * Other modules' string settings in tenant.json (e.g. "state", "repo"):
 * get returns the value owned by t, or NULL; set (value NULL deletes)
 * saves tenant.json atomically.  Keys the keystore owns (format, name,
 * id, cipher, kms, kms_next, key_version, retired_versions, shredded,
 * created) may not be set.  set rereads the file first (another process
 * may have changed it) and returns -E2BIG for a key over
 * CF_KS_TENANT_KEY_MAX bytes, a value over CF_KS_TENANT_VALUE_MAX bytes
 * or a file that would outgrow 256 KiB, -EINVAL for an empty key or a
 * value that is not UTF-8.  The value get returns changes only once the
 * file is saved: on any failure t and the file both keep the old value.
 */
const char *cf_ks_tenant_get(const struct cf_ks_tenant *t, const char *key);
CF_MUST_CHECK int cf_ks_tenant_set(struct cf_ks_tenant *t, const char *key,
    const char *value);
/* n settings at once, kv = key, value, key, value...: one save, all or
 * none of them (a backup's four "last_backup" fields). */
CF_MUST_CHECK int cf_ks_tenant_set_many(struct cf_ks_tenant *t,
    const char *const *kv, size_t n);

/*
 * Unwraps root key version `version` (0: newest) through the tenant's KMS.
 * Checks and updates lockout state; audits success and failure.  On
 * success *root is owned by the caller.  -EACCES when locked out or the
 * KMS refuses, -EBADMSG when the wrapped key fails authentication.
 */
CF_MUST_CHECK int cf_ks_tenant_unlock(struct cf_ks_tenant *t, uint32_t version,
    struct cf_secbuf **root);

/*
 * Root keys lent by the tenant's mounted daemon (docs/format/ctl.md
 * [CTL-8]), which unlocked them through the KMS (lockout checked, audited)
 * moments before: from now on cf_ks_tenant_unlock of `version` on t
 * returns a copy of key without asking the KMS again.  Kept in a locked,
 * read-only buffer and wiped by cf_ks_tenant_free.  -EEXIST if version
 * was lent already, -E2BIG beyond CF_KS_LENT_MAX versions.
 * cf_ks_tenant_lent gives how many versions were lent to t.
 */
#define CF_KS_LENT_MAX 64U
CF_MUST_CHECK int cf_ks_tenant_lend(struct cf_ks_tenant *t, uint32_t version,
    const unsigned char key[CF_KS_KEY_BYTES]);
size_t cf_ks_tenant_lent(const struct cf_ks_tenant *t);

/*
 * Rewraps every root key version of the tenant under the KMS provider's
 * newest KEK, creating a new KEK first if the tenant already uses the
 * newest one (or moving to provider to_kms if not NULL).  Each wrapped key
 * file is replaced atomically.  A move is two-phase (docs/kms.md): while
 * tenant.json names the destination as "kms_next", unlock accepts either
 * provider, so a crash leaves the tenant usable and a rerun (to_kms NULL
 * or the same destination) finishes it; -EBUSY for another destination
 * meanwhile, -ENOENT for an unconfigured one.  Audited.
 */
CF_MUST_CHECK int cf_ks_tenant_rotate_kek(struct cf_ks_tenant *t,
    const char *to_kms);

/*
 * Crypto-shreds the tenant: overwrites and unlinks every wrapped root key
 * and marks the tenant shredded, so no data or backup of it can be
 * decrypted again.  Irreversible.  Audited.
 */
CF_MUST_CHECK int cf_ks_tenant_shred(struct cf_ks_tenant *t);

/*
 * Describes the KEK that wraps key version `version` (0: newest), e.g.
 * "file:local kek 3f2a...".  Writes a NUL-terminated string.
 */
CF_MUST_CHECK int cf_ks_tenant_describe_kek(struct cf_ks_tenant *t,
    uint32_t version, char *buf, size_t len);

/*
 * Root key versions that can be unlocked (present, not retired, not newer
 * than key_version), ascending: writes up to cap versions, returns count.
 */
size_t cf_ks_tenant_versions(const struct cf_ks_tenant *t, uint32_t *out,
    size_t cap);

/*
 * Root key rotation (docs/kms.md, Root key rotation).  Adds root key
 * version key_version + 1 (32 random bytes wrapped by the tenant's KMS)
 * and makes it the newest: the wrapped key is written first, then
 * tenant.json's key_version moves (the commit point), so a crash leaves
 * the old newest version or the new one, never neither; a wrapped key
 * left beyond key_version by a crash is never used and is overwritten by
 * the next rotation.  On success *version (may be NULL) is the new
 * version.  -EBUSY while a KMS move is in progress, -EACCES for a
 * shredded tenant, -E2BIG past the limit of versions.  Audited
 * (tenant.rotate_key).  Data under older versions is not touched: the
 * caller re-encrypts it (coffer tenant reencrypt).
 */
CF_MUST_CHECK int cf_ks_tenant_rotate_key(struct cf_ks_tenant *t,
    uint32_t *version);

/*
 * Retires root key version `version`: records it in tenant.json's
 * "retired_versions", then overwrites and unlinks its wrapped key
 * (crypto-shredding that version only), so nothing encrypted under it
 * can be decrypted again.  The caller must first make sure nothing still
 * needs it (no file of the store, no snapshot): the keystore cannot
 * know.  -EBUSY for the newest version, -ENOENT for an unknown one,
 * -EALREADY if already retired.  A crash after the record leaves a
 * version that no longer unlocks; a rerun finishes the shredding.
 * Audited (tenant.retire_key).
 */
CF_MUST_CHECK int cf_ks_tenant_retire_key(struct cf_ks_tenant *t,
    uint32_t version);

/* 1 if root key version `version` was retired. */
int cf_ks_tenant_retired(const struct cf_ks_tenant *t, uint32_t version);

/* ---- lockout ------------------------------------------------------------- */

#define CF_KS_LOCKOUT_FAILURES 3	/* consecutive failures that lock */
#define CF_KS_LOCKOUT_SECONDS (30 * 60)	/* how long the lock lasts */

/*
 * Reports the lock state of a subject ("kms.local", "tenant.acme"):
 * *failures consecutive failures so far, *until the end of a lock in
 * force (0 if not locked).  -EPROTO (-EFBIG if oversized) when the
 * state file is damaged: the message names the file to remove.
 */
CF_MUST_CHECK int cf_ks_lockout_state(struct cf_ks_home *home,
    const char *subject, unsigned *failures, time_t *until);

/* ---- audit log ----------------------------------------------------------- */

/*
 * Append-only JSON lines, each MAC-chained to the previous one
 * (docs/format/audit.md).  Appends are serialised across processes with
 * flock(2) and made durable with fdatasync before returning.
 */

/* One field of a record; values are strings or integers. */
struct cf_ks_audit_field {
	const char *key;
	const char *str;	/* if NULL, num is used */
	long long num;
};

/*
 * Appends a record {seq, time, actor, event, fields..., prev, mac}.  Keys
 * must be [a-z_]+ and not one of the reserved keys; values must not hold
 * secrets.  -EBADMSG if the log is found truncated or damaged at its tail
 * (nothing is appended: run cf_ks_audit_verify).
 */
CF_MUST_CHECK int cf_ks_audit_append(struct cf_ks_home *home,
    const char *event, const struct cf_ks_audit_field *fields, size_t nfields);

/* Result of a verification: the first problem found, if any. */
struct cf_ks_audit_report {
	uint64_t records;	/* records that verified */
	uint64_t bad_seq;	/* seq (or line number) of the first bad record */
	char problem[256];	/* "" if the log verified */
};

/*
 * Verifies the whole chain and its anchor.  Returns 0 if intact, -EBADMSG
 * if damage was found (described in *rep), other -errno on I/O errors.
 */
CF_MUST_CHECK int cf_ks_audit_verify(struct cf_ks_home *home,
    struct cf_ks_audit_report *rep);

/*
 * Calls fn for each record line (NUL-terminated, without newline) whose
 * "tenant" field equals tenant (NULL: every record).  Stops and returns
 * fn's value if non-zero.
 */
CF_MUST_CHECK int cf_ks_audit_foreach(struct cf_ks_home *home,
    const char *tenant, int (*fn)(void *arg, const char *line), void *arg);

/*
 * Parses one audit line and checks its MAC with key (32 bytes): used by
 * the verifier and the fuzz target.  On success *seq, prev_mac (32 bytes)
 * and mac (32 bytes) are filled.  -EPROTO for a malformed line, -EBADMSG
 * for a MAC mismatch.
 */
CF_MUST_CHECK int cf_ks_audit_parse_line(const unsigned char *key,
    const char *line, size_t len, uint64_t *seq, unsigned char prev_mac[32],
    unsigned char mac[32]);

/* ---- wrapped-key envelope (docs/format/keystore.md) ------------------ */

#define CF_KS_ENVELOPE_HEADER_BYTES 48U
#define CF_KS_ENVELOPE_BLOB_MAX 1024U

/* The decoded, not yet unwrapped, form of a wrapped-key file. */
struct cf_ks_envelope {
	uint8_t alg;				/* CF_KS_WRAP_* */
	uint32_t key_version;
	unsigned char tenant_id[CF_KS_ID_BYTES];
	unsigned char kek_id[CF_KS_ID_BYTES];
	size_t blob_len;
	unsigned char blob[CF_KS_ENVELOPE_BLOB_MAX];
	unsigned char header[CF_KS_ENVELOPE_HEADER_BYTES]; /* the AAD */
};

#define CF_KS_WRAP_XCHACHA20POLY1305 1	/* file KMS */
#define CF_KS_WRAP_AES256GCM 2		/* file KMS, PKCS#11, KMIP */
/* AES-256 key wrap with padding (RFC 5649) + header MAC: PKCS#11. */
#define CF_KS_WRAP_AES256KWP 3

/* Decodes a wrapped-key file image.  -EPROTO on any malformation. */
CF_MUST_CHECK int cf_ks_envelope_decode(struct cf_ks_envelope *env,
    const unsigned char *buf, size_t len);
/*
 * Encodes into buf (cap bytes); *len receives the size.  -ENOSPC if small,
 * -EINVAL for an unknown alg, key_version 0 or blob_len outside 1..1024.
 */
CF_MUST_CHECK int cf_ks_envelope_encode(const struct cf_ks_envelope *env,
    unsigned char *buf, size_t cap, size_t *len);
/* Fills env->header (the AAD) from the other fields. */
void cf_ks_envelope_header(struct cf_ks_envelope *env);

/*
 * File KMS KEK file (docs/format/keystore.md): decodes and opens a sealed
 * KEK image with a passphrase.  Exposed for test vectors and fuzzing.
 * -EPROTO malformed, -EBADMSG wrong passphrase or tampered.
 */
CF_MUST_CHECK int cf_ks_kekfile_open(const unsigned char *buf, size_t len,
    const char *pass, size_t passlen, unsigned char kek_id[CF_KS_ID_BYTES],
    struct cf_secbuf **kek);

#endif /* CF_KEYSTORE_H */
