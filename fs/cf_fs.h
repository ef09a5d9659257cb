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
/* Largest plaintext size: its backing size must fit an off_t. */
#define CF_FS_MAX_SIZE ((off_t)1 << 60)
#define CF_FS_DIRIV_BYTES 16U
#define CF_FS_DIRIV_NAME "cf.diriv"	/* per-directory IV file */
#define CF_FS_NAME_MAX 175U		/* longest name stored as itself */
#define CF_FS_LONG_NAME_MAX 255U	/* longest name (NAME_MAX) */
#define CF_FS_ENC_NAME_MAX 362U		/* encoding of a 255-byte name */
#define CF_FS_LINK_MAX 4095U		/* longest backing symlink target */
/* "cf.L." or "cf.T." + base64url(BLAKE2b-256) + NUL */
#define CF_FS_HASHED_BYTES 49U
#define CF_FS_LONG_PREFIX "cf.L."	/* entry of a long name */
#define CF_FS_LONG_SIDECAR ".n"		/* beside it: the encrypted name */
#define CF_FS_TARGET_PREFIX "cf.T."	/* symlink with a long target */
#define CF_FS_LINKS_DIR "links"		/* in the store: long targets */

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

/*
 * Root key rotation (docs/crypto.md, Root key versions in the store).
 * The version given to cf_fs_keys_new is the store's metadata version:
 * names, symlink targets, xattr values, the store marker and generation
 * tags are keyed by it, and so are the contents of files whose header
 * names it.  cf_fs_keys_add adds the content key of another version:
 * files whose header names that version become readable, and if it is
 * newer than every version so far, files created from now on use it.
 * root is only read.  -EEXIST if the version is present, -E2BIG past
 * CF_FS_KEYS_MAX versions, -EINVAL for version 0.
 */
#define CF_FS_KEYS_MAX 64U
CF_MUST_CHECK int cf_fs_keys_add(struct cf_fs_keys *k,
    const struct cf_secbuf *root, uint32_t key_version);
/* The version new files are written under (the newest added). */
uint32_t cf_fs_keys_version(const struct cf_fs_keys *k);
/* The store's metadata version (see above). */
uint32_t cf_fs_keys_meta_version(const struct cf_fs_keys *k);
/* 1 if the content of a file of key version v can be read. */
int cf_fs_keys_has(const struct cf_fs_keys *k, uint32_t v);

/* ---- file header and blocks ------------------------------------------ */

struct cf_fs_header {
	unsigned version;		/* 1 or 2; 0 encodes the current (2) */
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
/*
 * Backing size for a plaintext size, header included (0 gives 32); psize
 * must be at most CF_FS_MAX_SIZE.
 */
off_t cf_fs_cipher_size(enum cf_ks_cipher c, off_t psize);

/* A per-file sealing context: the file key derived from the file id. */
struct cf_fs_file_ctx;

/*
 * Makes the context of the file with header h, from the content key of
 * h->key_version: -ENOKEY if k has no key of that version (not unlocked,
 * or retired).  On success *out is owned by the caller.
 */
CF_MUST_CHECK int cf_fs_file_ctx_new(struct cf_fs_file_ctx **out,
    const struct cf_fs_keys *k, const struct cf_fs_header *h);
void cf_fs_file_ctx_free(struct cf_fs_file_ctx *f);
/*
 * Makes f the context of the file with header h, reusing its locked key
 * memory (cf_ks_aead_rekey), as cf_fs_file_ctx_new would; -ENOKEY as
 * there, -EPROTO if h's cipher is not f's.  On failure f is unchanged.
 */
CF_MUST_CHECK int cf_fs_file_ctx_reset(struct cf_fs_file_ctx *f,
    const struct cf_fs_keys *k, const struct cf_fs_header *h);

/*
 * Seals plaintext block number blk (len <= CF_FS_BLOCK bytes) into out
 * (len + overhead bytes).  final is 1 for the file's last block: in a
 * version-2 file it is authenticated, so the last block of a file cut at
 * a block boundary does not open.  Version-1 files ignore it.
 */
CF_MUST_CHECK int cf_fs_block_seal(const struct cf_fs_file_ctx *f,
    uint64_t blk, int final, const unsigned char *in, size_t len,
    unsigned char *out);
/*
 * As cf_fs_block_seal, with the nonce already in out's first
 * cf_fs_nonce_bytes(f) bytes: the caller draws the nonces of many blocks
 * with one randombytes_buf (a getrandom system call per 4 KiB block was
 * 4 % of a sequential write).  Each must be freshly drawn for this seal.
 */
CF_MUST_CHECK int cf_fs_block_seal_drawn(const struct cf_fs_file_ctx *f,
    uint64_t blk, int final, const unsigned char *in, size_t len,
    unsigned char *out);
size_t cf_fs_nonce_bytes(const struct cf_fs_file_ctx *f);
/*
 * Opens ciphertext block blk (clen bytes) into out (clen - overhead
 * bytes); final as for cf_fs_block_seal, from the file's size.  An
 * all-zero ciphertext block is a hole and opens to zeros, unless it is
 * the final block of a version-2 file.  -EBADMSG if it does not
 * authenticate (tampered, moved, swapped, cut).
 */
CF_MUST_CHECK int cf_fs_block_open(const struct cf_fs_file_ctx *f,
    uint64_t blk, int final, const unsigned char *in, size_t clen,
    unsigned char *out);
/*
 * dense 1: the file has no holes (its generation says so,
 * CF_FS_GEN_DENSE), so cf_fs_block_open refuses an all-zero block with
 * -EBADMSG instead of opening it to zeros.  0 (the default): holes read
 * as zeros.
 */
void cf_fs_file_ctx_set_dense(struct cf_fs_file_ctx *f, int dense);

/* ---- file generations (rollback detection) ------------------------------ */

/*
 * Every regular file carries its generation, a counter raised when it is
 * changed, in the backing xattr CF_FS_GEN_XATTR; coffer's home keeps the
 * newest generation of each file (fs_gen.c), so an older copy of a file is
 * noticed (docs/format/fs.md, File generations).
 */
#define CF_FS_GEN_XATTR "user.cf.gen"
#define CF_FS_GEN_BYTES 64U
#define CF_FS_GEN_VERSION 2U	/* written; version 1 is still read */
/*
 * Flag of version 2: the file has no holes, so an all-zero block inside
 * it is damage (EIO), not zeros.  A file gets it when it is created and
 * loses it for good when a hole is made in it; a version-1 value, or no
 * value, means it may have holes.
 */
#define CF_FS_GEN_DENSE 0x01U

/* The xattr value of generation gen (at least 1) of file file_id. */
CF_MUST_CHECK int cf_fs_gen_encode(const struct cf_fs_keys *k,
    const unsigned char file_id[CF_KS_ID_BYTES], uint64_t gen,
    unsigned flags, unsigned char out[CF_FS_GEN_BYTES]);
/*
 * Decodes and authenticates an xattr value: -EPROTO if malformed (or an
 * unknown flag), -EBADMSG if its tag is wrong (forged, another tenant's);
 * else the file id, gen and flags (0 for version 1; flags may be NULL).
 */
CF_MUST_CHECK int cf_fs_gen_decode(const struct cf_fs_keys *k,
    const unsigned char *buf, size_t len,
    unsigned char file_id[CF_KS_ID_BYTES], uint64_t *gen, unsigned *flags);

/*
 * The generation log in coffer's home (docs/format/fs.md, The generation
 * log): a 16-byte header and 32-byte records (file id, gen; gen 0 forgets
 * the file).  cf_fs_genlog_parse calls fn for every record in order and
 * sets *used to the bytes that hold whole valid records; a torn last
 * record (short, or failing its check) is left out.  -EPROTO: not a log,
 * or a damaged record before the last.  fn may stop it with a negative
 * return, which is passed on.
 */
#define CF_FS_GENLOG_HEADER 16U
#define CF_FS_GENLOG_RECORD 32U
CF_MUST_CHECK int cf_fs_genlog_parse(const unsigned char *buf, size_t len,
    int (*fn)(void *arg, const unsigned char id[CF_KS_ID_BYTES],
    uint64_t gen), void *arg, size_t *used);
void cf_fs_genlog_header(unsigned char out[CF_FS_GENLOG_HEADER]);
void cf_fs_genlog_record(const unsigned char id[CF_KS_ID_BYTES], uint64_t gen,
    unsigned char out[CF_FS_GENLOG_RECORD]);

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
 * Long names (CF_FS_NAME_MAX+1 .. CF_FS_LONG_NAME_MAX bytes).  The same
 * construction, but the encoding (up to CF_FS_ENC_NAME_MAX characters) is
 * too long for a backing name: the entry is named cf_fs_long_name(enc) and
 * a sidecar file of that name plus CF_FS_LONG_SIDECAR holds enc.
 * cf_fs_name_encrypt_any takes names of any length up to 255;
 * cf_fs_name_decrypt_long accepts only long ones (one spelling per name).
 */
CF_MUST_CHECK int cf_fs_name_encrypt_any(const struct cf_fs_keys *k,
    const unsigned char diriv[CF_FS_DIRIV_BYTES], const char *name,
    char *out, size_t cap);
CF_MUST_CHECK int cf_fs_name_decrypt_long(const struct cf_fs_keys *k,
    const unsigned char diriv[CF_FS_DIRIV_BYTES], const char *enc,
    char *out, size_t cap);
void cf_fs_long_name(const char *enc, char out[CF_FS_HASHED_BYTES]);

/*
 * A symlink whose encrypted target is longer than CF_FS_LINK_MAX points
 * to cf_fs_long_target(etarget) instead; the store's CF_FS_LINKS_DIR
 * holds etarget in a file named by that value without its prefix.
 */
void cf_fs_long_target(const char *etarget, char out[CF_FS_HASHED_BYTES]);

/*
 * Symlink targets: sealed with the metadata key under a random nonce and
 * base64url-encoded.  out receives at most cap bytes including the NUL.
 */
CF_MUST_CHECK int cf_fs_link_encrypt(const struct cf_fs_keys *k,
    const char *target, char *out, size_t cap);
CF_MUST_CHECK int cf_fs_link_decrypt(const struct cf_fs_keys *k,
    const char *enc, char *out, size_t cap);

/* ---- re-encryption after a root key rotation ---------------------------- */

struct cf_fs_rekey_stats {
	uint64_t files;		/* regular files seen */
	uint64_t rewritten;	/* re-encrypted by this run */
	uint64_t old;		/* left on an older version */
	uint64_t failed;	/* of those: damaged, or no key */
	uint64_t bytes;		/* ciphertext bytes rewritten */
};

/*
 * Re-encrypts every regular file of the store at backing whose header
 * names another key version than cf_fs_keys_version(keys) under that
 * version (docs/format/fs.md, Re-encryption).  The store must not be
 * mounted.  Crash-safe and resumable: a file is old or new, never
 * neither, and a rerun first finishes the file a crash interrupted.  A
 * file whose blocks do not open, or of a version keys lack, is left as
 * it was and counted in failed and old.  progress (may be NULL) is called
 * after each file with its backing path.  -EPROTO for a damaged journal.
 */
/*
 * -EBUSY if a daemon serves the store or a backup reads it (see
 * cf_fs_store_lock_shared).
 */
CF_MUST_CHECK int cf_fs_rekey(const struct cf_fs_keys *keys,
    const char *backing,
    void (*progress)(void *arg, const struct cf_fs_rekey_stats *st,
    const char *rel), void *arg, struct cf_fs_rekey_stats *st);

/*
 * Takes the store's lock shared (store/cf.rekey.lock, flock): every
 * daemon holds it for as long as it serves the store, and so does a
 * backup reading an unmounted store; cf_fs_rekey holds it exclusively,
 * so an offline re-encryption never overlaps either.  With wait it waits
 * for a re-encryption to end, else it returns -EBUSY while one runs.
 * Returns the descriptor that holds it (keep it open, also across fork)
 * or -errno.
 */
CF_MUST_CHECK int cf_fs_store_lock_shared(const char *backing, int wait);

/*
 * Finishes the file a crashed re-encryption was copying, if any (no key
 * needed); coffer mount calls it before serving the store.  -EPROTO for a
 * damaged journal.
 */
CF_MUST_CHECK int cf_fs_rekey_recover(const char *backing);

/*
 * The same on a mounted store, done by its daemon (docs/format/ctl.md,
 * REKEY): the daemon first unlocks every live root key version it lacks
 * (new files use the newest from then on), then rewrites each file under
 * that file's lock, so readers and writers go on and never see a half
 * rewritten file.  progress gets st->rewritten and st->bytes (rel NULL).
 * *version is the version files were re-encrypted to.  -ENOTCONN if no
 * daemon serves the store; another error with err (cap bytes) saying why
 * (the daemon's reply).  Stopping the client stops the daemon's run; a
 * rerun goes on.
 */
CF_MUST_CHECK int cf_fs_rekey_mounted(const char *backing,
    void (*progress)(void *arg, const struct cf_fs_rekey_stats *st,
    const char *rel), void *arg, struct cf_fs_rekey_stats *st,
    uint32_t *version, char *err, size_t cap);

/*
 * Asks the daemon serving the store at backing to unlock the tenant's
 * root key versions it lacks (KEYS): new files use the newest at once.
 * *version is the daemon's newest.  -ENOTCONN if none serves it; else as
 * cf_fs_rekey_mounted.
 */
CF_MUST_CHECK int cf_fs_keys_reload(const char *backing, uint32_t *version,
    char *err, size_t cap);

/*
 * Counts the regular files of the store at backing whose header names
 * key version `version` (headers only: no key needed).
 */
CF_MUST_CHECK int cf_fs_store_count_version(const char *backing,
    uint32_t version, uint64_t *n);

/* ---- the store's metadata version ---------------------------------------- */

/*
 * The store marker (docs/format/fs.md, The store marker) names the
 * store's metadata version M: a 56-byte marker is version 1's, a 60-byte
 * one states M (at least 2) in clear, authenticated by the marker's tag
 * under M's meta key.  cf_fs_marker_version reads M from a marker's
 * bytes without a key (-EPROTO: no marker of either form);
 * cf_fs_store_meta_version from the store at backing: 0 and *m = 0 if
 * the store has no marker (a new store: the caller picks M, the newest
 * version), -EPROTO for a marker of neither form, -errno.
 */
#define CF_FS_MARKER1_BYTES 56U
#define CF_FS_MARKER2_BYTES 60U
CF_MUST_CHECK int cf_fs_marker_version(const unsigned char *buf, size_t len,
    uint32_t *m);
CF_MUST_CHECK int cf_fs_store_meta_version(const char *backing, uint32_t *m);

/*
 * Re-keying the store's metadata (docs/format/fs.md, Re-keying the
 * metadata): the journal store/cf.metakey is 32 bytes, the versions the
 * run moves from and to and a check.  decode: -EPROTO if it is not such
 * a journal (any damage); from and to are then 0.
 */
#define CF_FS_METAKEY_JOURNAL "cf.metakey"
#define CF_FS_METAKEY_JOURNAL_BYTES 32U
void cf_fs_metakey_journal_encode(uint32_t from, uint32_t to,
    unsigned char out[CF_FS_METAKEY_JOURNAL_BYTES]);
CF_MUST_CHECK int cf_fs_metakey_journal_decode(const unsigned char *buf,
    size_t len, uint32_t *from, uint32_t *to);
/*
 * Reads the journal of the store at backing: 0 and its versions, -ENOENT
 * if there is none (no run pending), -EPROTO if it is damaged.
 */
CF_MUST_CHECK int cf_fs_metakey_journal_read(const char *backing,
    uint32_t *from, uint32_t *to);

/*
 * The xattr stash (docs/format/fs.md, [FS-MKEY-6]): where a file system
 * has no room for an xattr's new copy beside the old one, the old one is
 * kept in the file cf.mk.x of the entry's directory while it is
 * replaced.  encode: -EINVAL for names of 0 or over 255 bytes or a value
 * over CF_FS_METAKEY_STASH_VALUE_MAX, -ERANGE if cap is too small.
 * decode: -EPROTO for any damage; on success s->value points into buf.
 */
#define CF_FS_METAKEY_STASH "cf.mk.x"
#define CF_FS_METAKEY_STASH_VALUE_MAX 65536U
#define CF_FS_METAKEY_STASH_MAX (14U + 255U + 255U + \
	CF_FS_METAKEY_STASH_VALUE_MAX + 8U)
struct cf_fs_metakey_stash {
	char entry[256];		/* backing name in the directory */
	char xname[256];		/* stored xattr name */
	const unsigned char *value;
	size_t vlen;
};
CF_MUST_CHECK int cf_fs_metakey_stash_encode(const char *entry,
    const char *xname, const unsigned char *val, size_t vlen,
    unsigned char *out, size_t cap, size_t *len);
CF_MUST_CHECK int cf_fs_metakey_stash_decode(const unsigned char *buf,
    size_t len, struct cf_fs_metakey_stash *s);

struct cf_fs_metakey_stats {
	uint64_t entries;	/* names seen */
	uint64_t renamed;	/* names moved to the new version */
	uint64_t links;		/* symlink targets rewritten */
	uint64_t xattrs;	/* xattrs rewritten */
	uint64_t gens;		/* generation values rewritten */
	uint64_t damaged;	/* names, targets, values no key opens */
};

/*
 * Moves the metadata of the unmounted store at backing (names, long-name
 * sidecars, symlink targets and links/, xattrs, generation values, then
 * the marker) to keys[0]'s metadata version; keys[1..n) are the other
 * live versions, each made by cf_fs_keys_new with its own version.
 * Crash-safe: it writes the journal first and removes it last, and a
 * rerun finishes a crashed run (each item is tried under every version
 * given: names, targets and values authenticate, so exactly one opens).
 * Items no key opens are counted in damaged and left (they did not read
 * before either).  progress (may be NULL) is called after each name.
 * Holds the store lock exclusively and the control socket (as a hold)
 * for the run: -EBUSY if a daemon, a backup or a hold uses the store;
 * -EBADMSG if no key opens the marker (another tenant's store); -EPROTO
 * for a damaged journal (nothing is changed: see the format); -ENOENT if
 * the store has no data/.
 */
CF_MUST_CHECK int cf_fs_metakey(struct cf_fs_keys *const *keys, size_t n,
    const char *backing,
    void (*progress)(void *arg, const struct cf_fs_metakey_stats *st),
    void *arg, struct cf_fs_metakey_stats *st);

/* ---- mounting ------------------------------------------------------------ */

struct cf_fs_mount_opts {
	const char *backing;		/* the tenant's ciphertext directory */
	const char *mountpoint;
	int foreground;			/* else daemonize after mounting */
	const char *fuse_opts;		/* -o list, or NULL */
	struct cf_ks_home *home;	/* for audit records */
	const char *tenant;		/* tenant name, for audit records */
	/* The generation log, outside the store (NULL: no rollback checks). */
	const char *gen_log;
	int accept_rollback;		/* start the log anew: the store as is */
	int nolend;			/* refuse ROOTKEYS ([CTL-8]) */
};

/*
 * Mounts the store and serves requests until it is unmounted or receives
 * SIGTERM/SIGINT; returns 0 after a clean unmount.  keys must live until
 * it returns; the daemon adds root key versions to it when asked (after
 * a rotation, cf_fs_keys_reload).
 */
CF_MUST_CHECK int cf_fs_mount(struct cf_fs_keys *keys,
    const struct cf_fs_mount_opts *o);

/*
 * Point-in-time snapshots of a mounted store, for backups.  Asks the
 * daemon serving the store at backing for a snapshot: writers are frozen
 * while it links the store into a farm (*pause_ns), then resume, and the
 * first change to an object the farm shares copies it there first.  *dir
 * (the caller frees it) is a store cf_fs_reader_open() reads with the same
 * keys.  -ENOTCONN if no daemon serves the store (read it directly),
 * -EBUSY if another snapshot is held.  cf_fs_snapshot_release ends it and
 * removes the farm; -ESTALE if a copy failed so the snapshot was not
 * point-in-time after all (retry the backup).
 */
struct cf_fs_snapshot;
CF_MUST_CHECK int cf_fs_snapshot_take(const char *backing,
    struct cf_fs_snapshot **out, char **dir, uint64_t *pause_ns);
CF_MUST_CHECK int cf_fs_snapshot_release(struct cf_fs_snapshot *h);

/*
 * The same in steps, on one connection (the daemon serves one client at
 * a time): cf_fs_ctl_open connects (-ENOTCONN: no daemon serves the
 * store); cf_fs_ctl_borrow asks for the tenant's root keys ([CTL-8] in
 * docs/format/ctl.md) and lends each to t (cf_ks_tenant_lend): -EPERM if
 * the daemon is neither root nor this process's user (nothing is asked),
 * -EACCES if it refused (-o nolend, the KMS refused, the tenant is locked
 * out or shredded), -EPROTO for a reply that breaks the format or names a
 * version t does not have as live (nothing is lent then).  After 0 or
 * -EACCES the connection is in step (a request may follow); after any
 * other error the caller closes it.  cf_fs_snapshot_take_on asks for a
 * snapshot on it.
 * cf_fs_snapshot_release releases a held snapshot and closes;
 * cf_fs_ctl_close closes (a held snapshot is released by the daemon).
 */
CF_MUST_CHECK int cf_fs_ctl_open(const char *backing,
    struct cf_fs_snapshot **out);
CF_MUST_CHECK int cf_fs_ctl_borrow(struct cf_fs_snapshot *h,
    struct cf_ks_tenant *t);
CF_MUST_CHECK int cf_fs_snapshot_take_on(struct cf_fs_snapshot *h,
    char **dir, uint64_t *pause_ns);
void cf_fs_ctl_close(struct cf_fs_snapshot *h);
/*
 * 1 if the daemon that made h raises a file's generation before its first
 * change after the snapshot ([CTL-6] in docs/format/ctl.md), so a file of
 * the farm and a later copy of it with the same generation have the same
 * content; 0 for a daemon without a generation log or of an older build.
 */
int cf_fs_snapshot_gens(const struct cf_fs_snapshot *h);

/*
 * Creates the backing directory (mode 0700) with its root directory IV if
 * missing, and checks it belongs to these keys (a store of another tenant
 * is refused with -EBADMSG).
 */
CF_MUST_CHECK int cf_fs_store_init(const struct cf_fs_keys *keys,
    const char *backing);

/* ---- reading a store without FUSE -------------------------------------- */

/*
 * A read-only view of one tenant's store, for backups: it decrypts names,
 * file contents, symlink targets and user.* xattrs with the tenant's keys
 * straight from the backing directory, with no mount and no FUSE round
 * trip (docs/format/fs.md, "Reading a store without FUSE").  It never
 * creates, changes or deletes anything in the store.
 *
 * Every object is reached through a directory handle with openat() and
 * O_NOFOLLOW, one plaintext name at a time; a name is 1 to
 * CF_FS_RNAME_MAX bytes, never "." or "..", and holds no '/' (else
 * -EINVAL, -ENAMETOOLONG).  Names of more than 175 bytes are stored in the
 * long-name form (cf.L.*), symlink targets too long for a backing symlink
 * in links/ (cf.T.*); the reader follows both.
 *
 * Consistency: the reader does not stop the daemon.  A file that changed
 * while it was read is reported with -EAGAIN (cf_fs_rfile_check); a
 * point-in-time copy of a live mount needs the daemon's cooperation, which
 * is not part of this API.
 *
 * Threads: a reader may be shared by many threads; each directory or file
 * handle is used by one thread at a time.  The keys passed to
 * cf_fs_reader_open() must outlive the reader, and the reader every handle
 * made from it.
 */
#include <sys/stat.h>

#define CF_FS_RNAME_MAX CF_FS_LONG_NAME_MAX /* longest plaintext name */
#define CF_FS_RLINK_MAX 4095U		/* longest plaintext symlink target */
#define CF_FS_RXATTR_MAX 65496U		/* longest plaintext xattr value */
#define CF_FS_RREAD_MAX (256U * CF_FS_BLOCK) /* most bytes one pread gives */

struct cf_fs_reader;	/* an open store */
struct cf_fs_rdir;	/* a directory of the tenant's tree */
struct cf_fs_rfile;	/* a regular file open for reading */

/*
 * Opens the store in the backing directory backing for reading.  Its
 * marker must open under keys (the check cf_fs_store_init() makes, but
 * nothing is ever created): -EBADMSG for another tenant's store, an
 * altered marker, or a store with data/ but no marker; -ENOENT if there is
 * no store at all.  On success *out is owned by the caller; free with
 * cf_fs_reader_free().  keys must outlive it.
 */
CF_MUST_CHECK int cf_fs_reader_open(struct cf_fs_reader **out,
    const struct cf_fs_keys *keys, const char *backing);
void cf_fs_reader_free(struct cf_fs_reader *r);
/*
 * Checks generations as the daemon does ([FS-READ-11]): from now on
 * cf_fs_rfile_open refuses with -EIO a file whose generation is older
 * than the one the generation log at gen_log records (an older copy put
 * back), or whose generation value is forged or another file's.  Only for
 * a store no daemon serves (a daemon's farm is older than its log).  An
 * absent log checks nothing; -EPROTO if it is damaged.
 */
CF_MUST_CHECK int cf_fs_reader_check_gens(struct cf_fs_reader *r,
    const char *gen_log);

/*
 * Opens the tenant's root directory (data/ in the store), or the
 * subdirectory name of parent (a symlink is refused, -ELOOP or -ENOTDIR).
 * -EIO if the directory's IV (cf.diriv) is missing or short: none of its
 * entries can be named.  On success *out is owned by the caller; free with
 * cf_fs_rdir_free().  parent may be freed before the child.
 */
CF_MUST_CHECK int cf_fs_rdir_open_root(struct cf_fs_rdir **out,
    struct cf_fs_reader *r);
CF_MUST_CHECK int cf_fs_rdir_open(struct cf_fs_rdir **out,
    const struct cf_fs_rdir *parent, const char *name);
void cf_fs_rdir_free(struct cf_fs_rdir *d);

/*
 * One directory entry.  name is the plaintext name; stored the backing
 * name (for messages; it reveals nothing the backing store does not).  st
 * is the backing object's lstat, so st_ino, st_dev and st_nlink find hard
 * links, except that st_size is the plaintext size for a regular file and
 * the plaintext target length for a symlink.
 *
 * err is 0, or why this one entry cannot be read, while the walk goes on:
 * -EBADMSG a name that does not authenticate (planted, altered, another
 * directory's or tenant's) or a long-name sidecar whose hash does not
 * match; -EPROTO a name that is not an encoded name, a malformed sidecar;
 * -EIO a missing sidecar; or -errno from lstat (the entry vanished:
 * -ENOENT).  Then name is NULL and st is zeroed.
 */
struct cf_fs_rentry {
	const char *name;
	const char *stored;
	int err;
	struct stat st;
};

/*
 * Gives the next entry of d in *ep: 1 and an entry, 0 at the end, or
 * -errno if the directory itself cannot be read further.  The store's own
 * names (cf.diriv, long-name sidecars and every other reserved cf.* name)
 * are skipped.  *ep points into d and is valid until the next call on d.
 * Order is the backing file system's.  cf_fs_rdir_rewind() starts over.
 */
CF_MUST_CHECK int cf_fs_rdir_next(struct cf_fs_rdir *d,
    const struct cf_fs_rentry **ep);
void cf_fs_rdir_rewind(struct cf_fs_rdir *d);

/*
 * lstat of the entry name of d, or of d itself if name is NULL, with the
 * sizes of struct cf_fs_rentry.
 */
CF_MUST_CHECK int cf_fs_rdir_stat(const struct cf_fs_rdir *d,
    const char *name, struct stat *st);

/*
 * Decrypts the target of symlink name in d into out (cap bytes, at least
 * CF_FS_RLINK_MAX + 1 for every target; NUL-terminated).  -EINVAL if it
 * is not a symlink, -EBADMSG/-EPROTO if the stored target is damaged
 * (also a long target's file in links/ whose hash does not match),
 * -ERANGE if cap is too small.
 */
CF_MUST_CHECK int cf_fs_rdir_readlink(const struct cf_fs_rdir *d,
    const char *name, char *out, size_t cap);

/*
 * Lists the user.* extended attributes of the entry name of d, or of d
 * itself if name is NULL (symlinks are not followed), as "user.NAME\0"
 * strings one after another, like listxattr(2).  Stored names that are
 * not the store's are skipped; ones that are but do not decrypt are
 * counted in *damaged (may be NULL) and skipped.  On success *list
 * (malloc'd, NULL if there are none) is owned by the caller, *len its
 * length; free with free().
 */
CF_MUST_CHECK int cf_fs_rdir_xattr_list(const struct cf_fs_rdir *d,
    const char *name, char **list, size_t *len, size_t *damaged);
/*
 * Decrypts the value of attribute xname ("user.NAME") of the entry name of
 * d, or of d itself if name is NULL.  -ENODATA if absent (any other
 * namespace too), -EBADMSG if the value does not authenticate, -EPROTO if
 * it is too short.  On success *val (malloc'd, at least one byte even if
 * *len is 0) is owned by the caller; free with free().
 */
CF_MUST_CHECK int cf_fs_rdir_xattr_get(const struct cf_fs_rdir *d,
    const char *name, const char *xname, unsigned char **val, size_t *len);

/*
 * Opens the regular file name of d for reading and reads its header
 * (-EINVAL if it is not a regular file, -ELOOP for a symlink; -EPROTO for
 * a malformed header or one naming the other cipher; -EIO for a backing
 * size no writer makes, [FS-BLK-9]).  On success *out is owned by the
 * caller; free with cf_fs_rfile_free().
 */
CF_MUST_CHECK int cf_fs_rfile_open(struct cf_fs_rfile **out,
    const struct cf_fs_rdir *d, const char *name);
void cf_fs_rfile_free(struct cf_fs_rfile *f);
/* lstat of the file as it was at open, st_size its plaintext size. */
void cf_fs_rfile_stat(const struct cf_fs_rfile *f, struct stat *st);

/*
 * A damaged byte range of a file's plaintext: [off, off + len).
 */
struct cf_fs_rrange {
	off_t off;
	off_t len;
};

/*
 * Reads up to len bytes of plaintext at off into buf, decrypting whole
 * blocks; holes read as zeros.  Returns the bytes read: fewer than asked
 * at the end of the file (0 at or past it), after CF_FS_RREAD_MAX bytes,
 * or before a damaged block.  A damaged block at off itself gives
 * -EBADMSG (it does not authenticate) or -EIO (the backing read failed),
 * and *bad (may be NULL) its plaintext range, so the caller can record it
 * and go on at bad->off + bad->len.  -EAGAIN if the file is seen to change
 * meanwhile (a short backing read; a failed block while the file changed):
 * start the file over.  -EINVAL for off < 0.
 */
CF_MUST_CHECK ssize_t cf_fs_rfile_pread(struct cf_fs_rfile *f, void *buf,
    size_t len, off_t off, struct cf_fs_rrange *bad);

/*
 * How many reads so far had their second half opened by the reader's
 * helper thread (reads of 64 blocks or more; process-wide).  For tests.
 */
uint64_t cf_fs_rfile_parallel_reads(void);

/*
 * Finds the first plaintext data at or after off: 0 and [*data_off,
 * *data_end), or -ENXIO if only holes follow (like SEEK_DATA).  Between
 * off and *data_off, and from *data_end to the next data, the file is a
 * hole (all-zero sealed blocks, [FS-BLK-7], or unallocated backing
 * ranges); a data range may still hold zeros (holes are found from the
 * backing file's SEEK_DATA/SEEK_HOLE and by reading the block where a
 * range starts).  Granularity is one block.
 */
CF_MUST_CHECK int cf_fs_rfile_next_data(struct cf_fs_rfile *f, off_t off,
    off_t *data_off, off_t *data_end);

/*
 * 0 if the backing file is unchanged since cf_fs_rfile_open() (size, mtime
 * and ctime), so the bytes read are one version of the file; -EAGAIN if it
 * changed, or if it was changed so shortly before the open that a later
 * change could have kept its timestamps (the file system's clock
 * granularity): wait a little and read the file again.
 */
CF_MUST_CHECK int cf_fs_rfile_check(struct cf_fs_rfile *f);

/*
 * A regular file's identity and version for change detection: the file id
 * and generation of its backing xattr CF_FS_GEN_XATTR (docs/format/fs.md,
 * File generations), authenticated under the reader's keys.
 * cf_fs_rfile_gen gives the value cf_fs_rfile_open read from the open
 * file and checked against the file id of its header (before any content
 * is read: a change after the open fails cf_fs_rfile_check);
 * cf_fs_rdir_gen reads it from the entry name of d without opening it
 * (d's xattr calls for one entry share one O_PATH open of it until
 * cf_fs_rdir_next).  0 and *gen >= 1; -ENODATA if the file has
 * none (empty since its creation, written before generations, or by a
 * mount without a generation log); -EPROTO if malformed, -EBADMSG if the
 * tag or (rfile) the file id does not match; (rdir, after
 * cf_fs_reader_check_gens) -ESTALE if older than the log; -errno.
 */
CF_MUST_CHECK int cf_fs_rfile_gen(const struct cf_fs_rfile *f,
    unsigned char file_id[CF_KS_ID_BYTES], uint64_t *gen);
CF_MUST_CHECK int cf_fs_rdir_gen(const struct cf_fs_rdir *d,
    const char *name, unsigned char file_id[CF_KS_ID_BYTES], uint64_t *gen);

/* ---- removing entries of an unmounted store ------------------------------ */

/*
 * A hold on an unmounted store, for the one change coffer makes to a
 * store without its daemon: removing entries whose data class has expired
 * (docs/retention.md, "Live store").  The hold listens on the store's
 * control socket, so a daemon that starts to mount the store meanwhile
 * finds it answered and refuses ([CTL-0]); it checks the marker as
 * cf_fs_reader_open does, and opens the generation log gen_log (NULL:
 * none) so removed files are forgotten there, as the daemon's unlink does.
 *
 * cf_fs_hold_take: -EBUSY if a daemon serves the store (or took it over
 * while the hold was set up), -EBADMSG/-ENOENT as cf_fs_reader_open,
 * -EPROTO if the generation log is damaged.  On success *out is owned by
 * the caller; free with cf_fs_hold_release(), which stops listening.
 * keys must outlive the hold.  Not thread-safe.
 *
 * cf_fs_hold_check: 0 while the control socket is still the hold's;
 * -EBUSY if a daemon replaced it (stop changing the store).
 */
struct cf_fs_hold;
CF_MUST_CHECK int cf_fs_hold_take(struct cf_fs_hold **out,
    const struct cf_fs_keys *keys, const char *backing, const char *gen_log);
void cf_fs_hold_release(struct cf_fs_hold *h);
CF_MUST_CHECK int cf_fs_hold_check(const struct cf_fs_hold *h);

/*
 * Removes the entry name (anything but a directory) of d, a directory
 * handle of a reader opened on the held store, as the daemon's unlink
 * does: the backing entry first, then a long name's sidecar, a long
 * target's file in links/ and the file's generation, each only if this
 * was the object's last link.  expect (NULL: no check) is the entry's
 * stat as cf_fs_rdir_next gave it: if the entry is no longer that object
 * with those mtime and ctime, nothing is removed and -ESTALE is returned,
 * so a file changed after the caller decided is kept.  -EISDIR for a
 * directory, -ENOENT if gone, -EINVAL if d is another store's, -EBUSY
 * (cf_fs_hold_check) if the hold was lost.
 */
CF_MUST_CHECK int cf_fs_hold_unlink(struct cf_fs_hold *h,
    const struct cf_fs_rdir *d, const char *name, const struct stat *expect);

/*
 * 1 if a and b describe the same object (device, inode, type) with the
 * same mtime and ctime (to the ns): nothing was written to it between.
 */
int cf_fs_same_object(const struct stat *a, const struct stat *b);

/*
 * 1 if a daemon (a mount, or a hold) answers on the control socket of
 * the store in directory backing, 0 if none does, -ENAMETOOLONG if the
 * socket's path does not fit a socket address.
 */
int cf_fs_store_served(const char *backing);

/*
 * Removes the long-name sidecars of d whose entry is gone (a crash
 * between an unlink and its sidecar's); returns how many, or -errno.
 */
CF_MUST_CHECK int cf_fs_hold_sweep(struct cf_fs_hold *h,
    const struct cf_fs_rdir *d);

#endif /* CF_FS_H */
