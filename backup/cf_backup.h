/*
 * cf_backup.h - the public interface of coffer's backup repository
 * library: the on-disk (or in-bucket) format of docs/format/repository.md
 * and the machinery that writes and reads it.
 *
 * Layers, bottom up:
 *   keys      the tenant's backup keys (data key, blob-id key, gear table)
 *   chunker   FastCDC with a per-tenant gear table
 *   codecs    sealed objects, blobs and packs, index, trees, snapshots
 *   store     the storage backend interface (a const ops table) and the
 *             local directory backend for file:///path URLs
 *   repo      a repository: config, in-memory index, blob and snapshot
 *             load/save, locks
 *   writer    the pack writer the backup command uses: dedup, chunk ->
 *             hash -> compress -> encrypt -> pack -> put, on worker threads
 *
 * It deliberately does not read tenant stores (fs/'s reader API does),
 * walk directories, restore files or talk to a KMS: callers hand it a
 * root key they unwrapped and plaintext they read.
 *
 * Conventions as in cf_keystore.h: int functions return 0 or -errno;
 * -EBADMSG is an authentication failure (wrong key, tampered object),
 * -EPROTO a malformed object or unknown format version, -ENOENT a
 * missing object or blob, -EINVAL a caller error.  Out-params are reset
 * on entry.  Unless a comment says otherwise an object is used by one
 * thread at a time; the codecs and keys are safe to share read-only.
 */
#ifndef CF_BACKUP_H
#define CF_BACKUP_H

#include <stddef.h>
#include <stdint.h>

#include "cf_keystore.h"

#define CF_BK_ID_BYTES 32U		/* blob ids and storage ids */
#define CF_BK_FILE_ID_BYTES 16U	/* a store file id (tree nodes) */
#define CF_BK_HEADER_BYTES 32U		/* object header */
#define CF_BK_DESC_BYTES 44U		/* blob descriptor */
#define CF_BK_VERSION 1U		/* format version written */
#define CF_BK_BLOB_MAX (32U << 20)	/* blob plaintext limit */
#define CF_BK_PACK_MAX (256U << 20)	/* pack size limit */
#define CF_BK_PACK_BLOBS_MAX 65536U	/* blobs per pack */
#define CF_BK_PACK_TARGET (16U << 20)	/* writers close packs here */
#define CF_BK_OBJECT_MAX (64U << 20)	/* sealed object and plaintext */
#define CF_BK_CHUNK_MIN (512U << 10)	/* default chunker parameters */
#define CF_BK_CHUNK_AVG (1U << 20)
#define CF_BK_CHUNK_MAX (8U << 20)
#define CF_BK_SEALED_KEY_BYTES 80U	/* crypto_box_seal of a 32-byte key */
/* A pack's header plus, for a sealed (version 2) pack, its sealed key. */
#define CF_BK_PACK_HEADER_MAX (CF_BK_HEADER_BYTES + CF_BK_SEALED_KEY_BYTES)
#define CF_BK_WCRED_BYTES 240U		/* writer credential file */

/* Object kinds (header byte 9); also the storage backends' object types. */
enum cf_bk_kind {
	CF_BK_KIND_PACK = 1,		/* data/XX/<id> */
	CF_BK_KIND_INDEX = 2,		/* index/<id> */
	CF_BK_KIND_SNAPSHOT = 3,	/* snapshots/<id> */
	CF_BK_KIND_LOCK = 4,		/* locks/<id> */
	CF_BK_KIND_CONFIG = 5,		/* config */
};

enum cf_bk_blob_type {
	CF_BK_BLOB_DATA = 1,
	CF_BK_BLOB_TREE = 2,
};

/* ---- ids ------------------------------------------------------------------ */

/*
 * Storage id of an object ([BK-LAY-3]): SHA-256 of its bytes if its
 * header says so (cf_bk_named_sha256), else unkeyed BLAKE2b-256.
 */
void cf_bk_storage_id(const unsigned char *buf, size_t len,
    unsigned char id[CF_BK_ID_BYTES]);
/* 1 if buf is an object named by SHA-256 of its bytes, else 0. */
int cf_bk_named_sha256(const unsigned char *buf, size_t len);
/* SHA-256 of buf (OpenSSL, or libsodium where OpenSSL cannot). */
void cf_bk_sha256(const void *buf, size_t len, unsigned char out[32]);
/* 64 lowercase hex digits and a NUL into out (65 bytes). */
void cf_bk_id_hex(const unsigned char id[CF_BK_ID_BYTES], char out[65]);
/* Parses exactly 64 lowercase hex digits; -EINVAL otherwise. */
CF_MUST_CHECK int cf_bk_id_parse(const char *hex,
    unsigned char id[CF_BK_ID_BYTES]);

/* ---- keys ----------------------------------------------------------------- */

struct cf_bk_keys;

/*
 * The backup keys of one tenant: data key D, blob-id key I and gear
 * table, derived from a root key of version key_version
 * (docs/format/repository.md, Keys).  Objects are sealed with cipher.
 * The root key is not kept.  -ENOTSUP if the cipher cannot run here,
 * -EINVAL for key version 0 or an unknown cipher.  On success *out is
 * owned by the caller; free with cf_bk_keys_free().  Safe to share
 * between threads once made.
 */
CF_MUST_CHECK int cf_bk_keys_new(struct cf_bk_keys **out,
    const struct cf_secbuf *root, uint32_t key_version,
    enum cf_ks_cipher cipher);
void cf_bk_keys_free(struct cf_bk_keys *k);
enum cf_ks_cipher cf_bk_keys_cipher(const struct cf_bk_keys *k);
uint32_t cf_bk_keys_version(const struct cf_bk_keys *k);
/*
 * Root key rotation (docs/kms.md): adds D of another root key version, so
 * objects written under it open; if it is newer than every version held,
 * full-key objects (packs, snapshots, indexes) are written under it from
 * now on.  The id, gear and index keys and the backup key pair stay the
 * config version's (cf_bk_keys_version), so dedup goes on across a
 * rotation.  root is only read.  -EEXIST if held, -E2BIG past 64
 * versions, -EINVAL for write-only keys or version 0.  Not while other
 * threads use k.
 */
#define CF_BK_KEYS_MAX 64U
CF_MUST_CHECK int cf_bk_keys_add(struct cf_bk_keys *k,
    const struct cf_secbuf *root, uint32_t key_version);
/* The version full-key objects are written under. */
uint32_t cf_bk_keys_write_version(const struct cf_bk_keys *k);

/* Blob id of plaintext: BLAKE2b-256 keyed with I ([BK-KEY-2]). */
void cf_bk_blob_id(const struct cf_bk_keys *k, const void *buf, size_t len,
    unsigned char id[CF_BK_ID_BYTES]);

/* ---- chunker -------------------------------------------------------------- */

struct cf_bk_chunker;

/*
 * A FastCDC chunker over the tenant's gear table.  min, avg and max are
 * powers of two, 64 <= min <= avg <= max <= 8 MiB (-EINVAL otherwise).
 * The chunker copies the gear table from k into locked memory.
 */
CF_MUST_CHECK int cf_bk_chunker_new(struct cf_bk_chunker **out,
    const struct cf_bk_keys *k, size_t min, size_t avg, size_t max);
void cf_bk_chunker_free(struct cf_bk_chunker *c);
size_t cf_bk_chunker_max(const struct cf_bk_chunker *c);
/*
 * Length of the first chunk of the n bytes at buf (1..n, or 0 for n 0).
 * The caller passes at least max bytes unless the stream ends within
 * them.  Pure: the same bytes always give the same cut.
 */
size_t cf_bk_chunker_cut(const struct cf_bk_chunker *c,
    const unsigned char *buf, size_t n);

/* ---- sealed objects (index, snapshot, lock, config) ----------------------- */

/*
 * Seals plaintext as an object of the given kind (not a pack) under a
 * fresh key id and nonce, zstd-compressed if that is shorter.  On success
 * *out (*outlen bytes) is malloc'd and owned by the caller.
 */
CF_MUST_CHECK int cf_bk_object_seal(const struct cf_bk_keys *k,
    enum cf_bk_kind kind, const unsigned char *plain, size_t len,
    unsigned char **out, size_t *outlen);
/*
 * Opens an object of the expected kind.  On success *plain (*plen bytes,
 * plus a NUL after them) is malloc'd and owned by the caller.  -EPROTO
 * malformed or wrong kind/version, -EBADMSG authentication, -ENOKEY key
 * version other than k's, -ENOTSUP cipher unavailable.
 */
CF_MUST_CHECK int cf_bk_object_open(const struct cf_bk_keys *k,
    enum cf_bk_kind kind, const unsigned char *obj, size_t len,
    unsigned char **plain, size_t *plen);

/* ---- blobs and packs ------------------------------------------------------ */

/* A blob descriptor ([BK-PACK-2]). */
struct cf_bk_desc {
	uint8_t type;			/* enum cf_bk_blob_type */
	uint8_t compression;		/* 0 raw, 1 zstd */
	uint32_t length;		/* sealed length in the pack */
	uint32_t ulen;			/* plaintext length */
	unsigned char id[CF_BK_ID_BYTES];
};

/*
 * Parses a whole pack: checks the header, sizes and the sealed trailer.
 * On success header receives the pack's 32-byte header and *descs
 * (*n entries, malloc'd, owned by the caller) its blobs in order; blob i
 * starts at 32 + the lengths before it (112 + for a sealed pack, whose
 * key is then learnt by k so that cf_bk_blob_open finds it).  Blobs are
 * not opened.
 */
CF_MUST_CHECK int cf_bk_pack_parse(const struct cf_bk_keys *k,
    const unsigned char *pack, size_t len,
    unsigned char header[CF_BK_HEADER_BYTES], struct cf_bk_desc **descs,
    size_t *n);

/*
 * Opens one sealed blob (d->length bytes at sblob) of a pack with the
 * given header: authenticates, decompresses, checks the id
 * ([BK-PACK-3]).  On success *plain (*plen == d->ulen bytes; malloc'd,
 * at least 1 byte) is owned by the caller.
 */
CF_MUST_CHECK int cf_bk_blob_open(const struct cf_bk_keys *k,
    const unsigned char header[CF_BK_HEADER_BYTES],
    const struct cf_bk_desc *d, const unsigned char *sblob, size_t len,
    unsigned char **plain, size_t *plen);

/* ---- index ---------------------------------------------------------------- */

/* Where a blob is: what cf_bk_index_lookup returns. */
struct cf_bk_blob_loc {
	unsigned char pack[CF_BK_ID_BYTES];	/* storage id of the pack */
	/* the pack's header, then its sealed key if it is a sealed pack */
	unsigned char header[CF_BK_PACK_HEADER_MAX];
	struct cf_bk_desc desc;
	uint64_t offset;			/* of the sealed blob */
	uint64_t pack_size;			/* whole pack ([BK-PACK-1]) */
};

/* An in-memory index: packs and a hash table of their blobs. */
struct cf_bk_index;

CF_MUST_CHECK int cf_bk_index_new(struct cf_bk_index **out);
void cf_bk_index_free(struct cf_bk_index *idx);
/*
 * Decodes an index plaintext ([BK-IDX-1]) and adds its packs.  On
 * -EPROTO idx is unchanged (the whole plaintext is checked first); on
 * -ENOMEM some packs may have been added.
 */
CF_MUST_CHECK int cf_bk_index_decode(struct cf_bk_index *idx,
    const unsigned char *buf, size_t len);
/*
 * Encodes every pack of idx as one index plaintext (*out malloc'd, owned
 * by the caller).  -EINVAL if idx has no packs or more than 65536.
 */
CF_MUST_CHECK int cf_bk_index_encode(const struct cf_bk_index *idx,
    unsigned char **out, size_t *len);
/*
 * Adds one pack (storage id, header, descriptors in order).  A pack
 * already present is ignored.  -EPROTO if the record breaks [BK-IDX-1].
 */
/*
 * header: the pack's 32-byte header; for a sealed (version 2) pack, the
 * header followed by its sealed key (CF_BK_PACK_HEADER_MAX bytes), as
 * bk_index_pack_info and bk_packer_finish give it.
 */
CF_MUST_CHECK int cf_bk_index_add_pack(struct cf_bk_index *idx,
    const unsigned char pack[CF_BK_ID_BYTES],
    const unsigned char *header,
    const struct cf_bk_desc *descs, size_t n);
/* 0 and *loc filled, or -ENOENT. */
CF_MUST_CHECK int cf_bk_index_lookup(const struct cf_bk_index *idx,
    enum cf_bk_blob_type type, const unsigned char id[CF_BK_ID_BYTES],
    struct cf_bk_blob_loc *loc);
size_t cf_bk_index_packs(const struct cf_bk_index *idx);
size_t cf_bk_index_blobs(const struct cf_bk_index *idx);
/* Storage id of pack i (i < cf_bk_index_packs()). */
const unsigned char *cf_bk_index_pack_id(const struct cf_bk_index *idx,
    size_t i);

/* ---- trees ---------------------------------------------------------------- */

enum cf_bk_node_type {
	CF_BK_NODE_FILE = 1,
	CF_BK_NODE_DIR = 2,
	CF_BK_NODE_SYMLINK = 3,
	CF_BK_NODE_FIFO = 4,
	CF_BK_NODE_SOCKET = 5,
	CF_BK_NODE_CHR = 6,
	CF_BK_NODE_BLK = 7,
};

struct cf_bk_xattr {
	const char *name;		/* NUL-terminated, 1..255 bytes */
	const unsigned char *value;
	size_t value_len;		/* 0..65536 */
};

/* One content item of a file: a data blob, or a hole if hole > 0. */
struct cf_bk_item {
	unsigned char id[CF_BK_ID_BYTES];
	uint64_t hole;
};

struct cf_bk_node {
	uint8_t type;			/* enum cf_bk_node_type */
	uint32_t mode;			/* permission bits, <= 07777 */
	uint32_t uid, gid;
	int64_t atime, mtime, ctime;	/* ns since the epoch */
	uint64_t size;			/* files only */
	uint64_t rdev;			/* devices only */
	uint64_t link_group;		/* 0 or shared by hard links */
	const char *name;		/* NUL-terminated; no '/', not . or .. */
	const char *target;		/* symlinks: NUL-terminated */
	unsigned char subtree[CF_BK_ID_BYTES];	/* dirs */
	const struct cf_bk_item *items;	/* files */
	size_t nitems;
	const struct cf_bk_xattr *xattrs;	/* any order on encode */
	size_t nxattrs;
	/*
	 * Files: the store's identity of the content (docs/format/fs.md,
	 * File generations, and the backing inode number) for the next
	 * backup's change detection, or gen 0 (none recorded; file_id and
	 * ino then ignored).
	 */
	uint64_t gen;
	unsigned char file_id[CF_BK_FILE_ID_BYTES];
	uint64_t ino;
};

struct cf_bk_tree {
	struct cf_bk_node *nodes;	/* sorted by name after decode */
	size_t count;
	void *mem_;			/* decoder's storage; do not touch */
};

/*
 * Encodes a tree canonically ([BK-TREE-2]): nodes and xattrs are sorted
 * here, the caller's arrays are not modified.  -EINVAL if the tree
 * breaks a rule of [BK-TREE-1] (duplicate names, bad name, limits).  On
 * success *out is malloc'd and owned by the caller.
 */
CF_MUST_CHECK int cf_bk_tree_encode(const struct cf_bk_tree *t,
    unsigned char **out, size_t *len);
/*
 * Decodes a tree blob's plaintext.  On success *out is owned by the
 * caller; free with cf_bk_tree_free().  -EPROTO on any malformation.
 */
CF_MUST_CHECK int cf_bk_tree_decode(struct cf_bk_tree **out,
    const unsigned char *buf, size_t len);
/* Frees a tree made by cf_bk_tree_decode; accepts NULL. */
void cf_bk_tree_free(struct cf_bk_tree *t);

/* ---- snapshots ------------------------------------------------------------ */

struct cf_bk_snapshot_stats {
	uint64_t files, dirs, bytes;		/* what the snapshot holds */
	uint64_t new_blobs, new_bytes;		/* plaintext added */
	uint64_t stored_bytes;			/* pack bytes added */
	uint64_t duration_ns, pause_ns;		/* backup time, writer pause */
};

/* At most this many versions in a snapshot's key_versions. */
#define CF_BK_SNAP_KEY_VERSIONS_MAX 64U

struct cf_bk_snapshot {
	int64_t time;				/* ns since the epoch */
	unsigned char tenant[CF_KS_ID_BYTES];
	char *hostname;
	char **tags;
	size_t ntags;
	char **paths;
	size_t npaths;
	unsigned char tree[CF_BK_ID_BYTES];
	int has_parent;
	unsigned char parent[CF_BK_ID_BYTES];
	char *consistency;	/* offline, freeze, cow, stream, none */
	struct cf_bk_snapshot_stats stats;
	/*
	 * [BK-SNAP-2] The root key versions a restore of it needs, sorted
	 * and distinct (key_versions); has_key_versions 0: not recorded (a
	 * snapshot of an older writer, or one whose record would be
	 * incomplete), so nothing is known.
	 */
	int has_key_versions;
	size_t nkey_versions;
	uint32_t key_versions[CF_BK_SNAP_KEY_VERSIONS_MAX];
};

/*
 * Adds versions (any order, duplicates allowed) to s's record, keeping
 * it sorted and distinct.  A snapshot without a record keeps none
 * (unknown stays unknown).  Returns 0, or -E2BIG if the record would
 * exceed CF_BK_SNAP_KEY_VERSIONS_MAX: the record is then dropped
 * (has_key_versions 0), which is the conservative answer.
 */
CF_MUST_CHECK int cf_bk_snapshot_add_key_versions(struct cf_bk_snapshot *s,
    const uint32_t *versions, size_t n);
/* 1 if s records that it needs root key version v, else 0. */
int cf_bk_snapshot_needs_version(const struct cf_bk_snapshot *s, uint32_t v);

/*
 * Encodes a snapshot as its canonical JSON ([BK-SNAP-1]); -EINVAL if a
 * field breaks a limit.  *out (NUL-terminated, *len without the NUL) is
 * malloc'd and owned by the caller.
 */
CF_MUST_CHECK int cf_bk_snapshot_encode(const struct cf_bk_snapshot *s,
    char **out, size_t *len);
/* Decodes; on success *out is owned by the caller (cf_bk_snapshot_free). */
CF_MUST_CHECK int cf_bk_snapshot_decode(struct cf_bk_snapshot **out,
    const char *buf, size_t len);
/* Frees a decoded snapshot (every pointer in it); accepts NULL. */
void cf_bk_snapshot_free(struct cf_bk_snapshot *s);

/* ---- storage backends ----------------------------------------------------- */

/*
 * A storage backend: an object store holding named, immutable objects
 * by kind.  Names are 64 lowercase hex digits, or "config" for
 * CF_BK_KIND_CONFIG.  Every op may be called from several threads at
 * once.  No op exposes renames: put is atomic by contract.
 */
struct cf_bk_store_ops {
	const char *name;	/* "local", "s3", "fault", ... */
	/*
	 * Stores len bytes atomically: afterwards the object exists whole,
	 * or (on failure or crash) not at all.  excl: fail with -EEXIST if
	 * the object exists (used for the config); otherwise an existing
	 * object of that name is replaced (same content, by naming).
	 */
	int (*put)(void *ctx, enum cf_bk_kind kind, const char *name,
	    const unsigned char *buf, size_t len, int excl);
	/*
	 * Reads a whole object of at most max bytes into *buf (malloc'd,
	 * owned by the caller).  -ENOENT missing, -EFBIG over max.
	 */
	int (*get)(void *ctx, enum cf_bk_kind kind, const char *name,
	    size_t max, unsigned char **buf, size_t *len);
	/* Reads exactly len bytes at off into buf; -EPROTO if shorter. */
	int (*get_range)(void *ctx, enum cf_bk_kind kind, const char *name,
	    uint64_t off, size_t len, unsigned char *buf);
	/* Size of an object; -ENOENT missing. */
	int (*stat)(void *ctx, enum cf_bk_kind kind, const char *name,
	    uint64_t *size);
	/*
	 * Calls fn for every object of a kind whose name is valid
	 * ([BK-LAY-1]), in no particular order; stops with fn's value if
	 * non-zero.
	 */
	int (*list)(void *ctx, enum cf_bk_kind kind,
	    int (*fn)(void *arg, const char *name, uint64_t size), void *arg);
	/* Deletes an object; -ENOENT missing. */
	int (*del)(void *ctx, enum cf_bk_kind kind, const char *name);
	/* Frees ctx. */
	void (*close)(void *ctx);
	/*
	 * Optional (NULL: del one by one): deletes n objects of a kind,
	 * rcs[i] as del's result for names[i] (0 also for a missing one);
	 * returns < 0 only if a request as a whole failed (rcs undefined).
	 */
	int (*del_many)(void *ctx, enum cf_bk_kind kind,
	    const char *const *names, size_t n, int *rcs);
	/*
	 * Optional (NULL: nothing to clean): removes what a writer killed
	 * in the middle of a put left behind (S3: incomplete multipart
	 * uploads of repository keys under the prefix; local: temporary
	 * files), but only what was started before `before` (seconds since
	 * the epoch), so a running writer's upload is never touched.
	 * *n counts what was removed.
	 */
	int (*cleanup)(void *ctx, int64_t before, uint64_t *n);
	/*
	 * Optional (NULL: 1): how many puts the backend takes at once to
	 * good effect (S3: its connections, COFFER_S3_CONNECTIONS).
	 */
	unsigned (*parallel_puts)(void *ctx);
};

struct cf_bk_store;

#define CF_BK_STORE_CREATE 0x1	/* create the directory if missing */

/*
 * Opens a backend by URL: "file:///absolute/path" (local directory;
 * CF_BK_STORE_CREATE makes it and its subdirectories) or
 * "s3://bucket[/prefix][?endpoint=..&region=..&style=path|virtual&ca=..
 * &credentials=..&profile=..]" (S3; options, environment and credentials
 * in docs/s3.md; CF_BK_STORE_CREATE creates a missing bucket).  Anything
 * else -EINVAL.  S3 errors: -EACCES credentials refused, -EPERM the
 * server's TLS certificate does not verify, -ENOKEY no credentials,
 * -ENOENT no such bucket, -EIO and friends after the retries ran out.
 * On success *out is owned by the caller (cf_bk_store_free).
 */
CF_MUST_CHECK int cf_bk_store_open_url(struct cf_bk_store **out,
    const char *url, int flags);
/* Wraps any ops table (tests: a fault-injecting store).  Takes ctx. */
CF_MUST_CHECK int cf_bk_store_new(struct cf_bk_store **out,
    const struct cf_bk_store_ops *ops, void *ctx);
/* Calls close; accepts NULL. */
void cf_bk_store_free(struct cf_bk_store *s);
/* The ops and ctx (to wrap a store in another, e.g. fault injection). */
const struct cf_bk_store_ops *cf_bk_store_ops(const struct cf_bk_store *s);
void *cf_bk_store_ctx(const struct cf_bk_store *s);
/* The ops' parallel_puts: 1 for a local directory, S3's connections. */
unsigned cf_bk_store_parallel_puts(const struct cf_bk_store *s);
/* The local backend's ops, for wrapping. */
extern const struct cf_bk_store_ops cf_bk_store_local_ops;
/* The S3 backend's ops, for wrapping (ctx from cf_bk_store_open_url). */
extern const struct cf_bk_store_ops cf_bk_store_s3_ops;

CF_MUST_CHECK int cf_bk_store_put(struct cf_bk_store *s, enum cf_bk_kind kind,
    const char *name, const unsigned char *buf, size_t len, int excl);
CF_MUST_CHECK int cf_bk_store_get(struct cf_bk_store *s, enum cf_bk_kind kind,
    const char *name, size_t max, unsigned char **buf, size_t *len);
CF_MUST_CHECK int cf_bk_store_get_range(struct cf_bk_store *s,
    enum cf_bk_kind kind, const char *name, uint64_t off, size_t len,
    unsigned char *buf);
CF_MUST_CHECK int cf_bk_store_stat(struct cf_bk_store *s, enum cf_bk_kind kind,
    const char *name, uint64_t *size);
CF_MUST_CHECK int cf_bk_store_list(struct cf_bk_store *s, enum cf_bk_kind kind,
    int (*fn)(void *arg, const char *name, uint64_t size), void *arg);
CF_MUST_CHECK int cf_bk_store_del(struct cf_bk_store *s, enum cf_bk_kind kind,
    const char *name);
/*
 * Deletes n objects of one kind, rcs[i] as cf_bk_store_del's result for
 * names[i] except that a missing object is 0.  One request per 1000
 * objects on an S3 bucket without versions; one by one elsewhere.
 * Returns < 0 if a request as a whole failed (rcs then undefined).
 */
CF_MUST_CHECK int cf_bk_store_del_many(struct cf_bk_store *s,
    enum cf_bk_kind kind, const char *const *names, size_t n, int *rcs);
/*
 * S3 Object Lock (docs/s3.md): cf_bk_store_del fails with -EROFS for an
 * object whose retention has not expired.  This gives its retain-until
 * date in seconds since the epoch (0: not locked, or not an S3 store).
 */
CF_MUST_CHECK int cf_bk_store_lock_until(struct cf_bk_store *s,
    enum cf_bk_kind kind, const char *name, int64_t *until);

/*
 * How old an interrupted upload (S3 multipart upload, local temporary
 * file) must be before prune removes it: 24 hours.  No writer takes that
 * long over one object, and a write-only agent or another host's backup
 * may be writing while prune runs (docs/s3.md, Incomplete uploads).
 */
#define CF_BK_STALE_SECONDS (24 * 3600)
/*
 * Removes what writers killed in the middle of a put left behind and
 * started before `before` (seconds since the epoch; the ops' cleanup).
 * *n (reset on entry) counts what was removed, also on failure.  The
 * caller should hold the exclusive lock (prune does).  A store without
 * a cleanup op: 0.  S3 errors as for the other ops (-EACCES if the
 * credentials may not list or abort uploads).
 */
CF_MUST_CHECK int cf_bk_store_cleanup(struct cf_bk_store *s, int64_t before,
    uint64_t *n);

/* ---- repository ----------------------------------------------------------- */

struct cf_bk_repo;

/*
 * Creates a repository in an empty store: writes the config ([BK-CFG-1])
 * with a random repo id, the tenant id and the default chunker.
 * -EEXIST if a config exists.  On success the repo owns store and
 * borrows keys (keep them alive until cf_bk_repo_free); on failure the
 * caller keeps store.
 */
CF_MUST_CHECK int cf_bk_repo_init(struct cf_bk_repo **out,
    struct cf_bk_store *store, const struct cf_bk_keys *keys,
    const unsigned char tenant[CF_KS_ID_BYTES]);
/*
 * Opens a repository: reads and checks the config.  -ENOENT no config,
 * -EBADMSG wrong key (another tenant's repository or a damaged config),
 * -EKEYREJECTED config of another tenant, -EPROTO unknown version or
 * malformed.  Ownership as cf_bk_repo_init.  The index is not loaded.
 */
CF_MUST_CHECK int cf_bk_repo_open(struct cf_bk_repo **out,
    struct cf_bk_store *store, const struct cf_bk_keys *keys,
    const unsigned char tenant[CF_KS_ID_BYTES]);

#define CF_BK_REPO_CREATE 0x1	/* init the repository if it has no config */

/*
 * The root key version a repository is keyed by: the key_version of its
 * config object's header ([BK-OBJ-5]; the header is not secret, so no key
 * is needed).  After a root key rotation the repository keeps its
 * version: open it with that version's root key.  -ENOENT if url holds
 * no repository, -EPROTO if the config is not a config object.
 */
CF_MUST_CHECK int cf_bk_repo_key_version(const char *url, uint32_t *version);

/*
 * Counts the objects of the repository at url whose header names root
 * key version `version`, reading 32 bytes of each (no key needed):
 * n[0] packs, n[1] indexes, n[2] snapshots, n[3] locks (the config
 * apart).  Until prune deletes them, the objects of a forgotten snapshot
 * count too.
 */
CF_MUST_CHECK int cf_bk_repo_count_version(const char *url, uint32_t version,
    uint64_t n[4]);

/*
 * The root key version of an opened repository's config, which every
 * snapshot needs (and that of its id and chunker keys, unless the config
 * was re-keyed: cf_bk_repo_chunk_version).
 */
uint32_t cf_bk_repo_config_version(const struct cf_bk_repo *r);
/*
 * 1 if the config of r carries the chunk key C ([BK-CFG-2]: it was
 * re-keyed), with *from the root key version C derives from; else 0 and
 * *from 0.
 */
int cf_bk_repo_chunk_version(const struct cf_bk_repo *r, uint32_t *from);
/*
 * Re-keys the config of r (bk_rekey.c, [BK-CFG-2]): seals it anew under
 * root key version `version`, which r's keys must hold (cf_bk_keys_add),
 * carrying C and the version C derives from, and replaces the stored
 * config with it in one put.  Blob ids, chunking and the index key do
 * not change.  The caller holds the exclusive lock (cf_bk_repo_lock).
 * On success r's config version is `version`; r should then only be
 * read, and closed (its keys' primary version is the old one).
 * -EALREADY if the config is already under `version` or newer, -ENOKEY
 * if the keys lack it, -EINVAL for write-only keys, -EIO if the config
 * read back is not the one written (another re-key raced this one),
 * else the store's error (the old config is then still in place, or
 * the new one: both open).  Not thread safe.
 */
CF_MUST_CHECK int cf_bk_repo_config_rekey(struct cf_bk_repo *r,
    uint32_t version);
/*
 * Counts what of an opened repository is under root key version v
 * without reading packs: n[0] the packs its loaded index names (their
 * headers are in the index), n[1] the index objects keyed from D of v
 * (one 32-byte range read each; those under the index key X name the
 * config version of their time but need only C, [BK-CFG-2], and are not
 * counted).  Orphan packs (no index names them) are not counted.
 */
CF_MUST_CHECK int cf_bk_repo_indexed_version(struct cf_bk_repo *r,
    uint32_t v, uint64_t n[2]);

/*
 * [BK-SNAP-3] What of an opened repository needs root key version v
 * (docs/format/repository.md): the snapshots whose key_versions hold v
 * (the first CF_BK_VERSION_NAMED named, with their times), the
 * snapshots without a record and, only if there are any, the header
 * scan of every object (as cf_bk_repo_count_version), and whatever the
 * records say the indexed packs and index objects under v
 * (cf_bk_repo_indexed_version).  v is needed unless needs, scan and
 * indexed are all 0.  Call it under the exclusive lock, after
 * cf_bk_repo_index_load.  A snapshot that cannot be loaded stops it:
 * its error is returned and bad_id names it.
 */
#define CF_BK_VERSION_NAMED 10U
struct cf_bk_version_use {
	size_t snapshots;			/* listed */
	size_t needs;				/* records holding v */
	unsigned char need_id[CF_BK_VERSION_NAMED][CF_BK_ID_BYTES];
	int64_t need_time[CF_BK_VERSION_NAMED];	/* ns since the epoch */
	size_t unknown;				/* without a record */
	/*
	 * Records holding v that do not count: v was only a former config
	 * version for them and their own object is not under v
	 * ([BK-CFG-2]); their packs count in indexed.
	 */
	size_t discounted;
	uint64_t scan[4];	/* if unknown: packs, indexes, snapshots, locks */
	uint64_t indexed[2];	/* indexed packs, index objects */
	unsigned char bad_id[CF_BK_ID_BYTES];	/* an unreadable snapshot */
};
CF_MUST_CHECK int cf_bk_repo_version_use(struct cf_bk_repo *r, uint32_t v,
    struct cf_bk_version_use *u);

/*
 * The CLI's entry point: opens the store for url, derives the keys from
 * a tenant root key, and opens (or with CF_BK_REPO_CREATE creates) the
 * repository, with its index loaded.  The root key is not kept.
 */
CF_MUST_CHECK int cf_bk_repo_open_url(struct cf_bk_repo **out,
    const char *url, const struct cf_secbuf *root, uint32_t key_version,
    enum cf_ks_cipher cipher, const unsigned char tenant[CF_KS_ID_BYTES],
    int flags);
/*
 * The same with keys made by the caller (e.g. holding several root key
 * versions, cf_bk_keys_add), which the repository takes over, also on
 * failure.
 */
CF_MUST_CHECK int cf_bk_repo_open_url_keys(struct cf_bk_repo **out,
    const char *url, struct cf_bk_keys *keys,
    const unsigned char tenant[CF_KS_ID_BYTES], int flags);
/* Frees the repo, its store and (if opened by url) its keys; NULL ok. */
void cf_bk_repo_free(struct cf_bk_repo *r);

/*
 * Fetching ahead (bk_prefetch.c).  Opening a repository reads objects
 * that need no key to be fetched, only to be opened: the config, the
 * index and snapshot listings and objects.  cf_bk_prefetch_start starts
 * a thread that opens the store for url (never creating anything) and
 * fetches them, so a caller can unlock the tenant's key (Argon2id in the
 * file KMS: 0.6 s) meanwhile; cf_bk_repo_open_prefetched then opens the
 * repository from what arrived.  With CF_BK_PREFETCH_PACKS (restore) it
 * also fetches every pack of a remote repository whose packs total at
 * most pack_budget bytes (a restore of such a repository reads most of
 * them; a larger one is left to the restore's own pack cache), on up to
 * conns connections (1..16).
 *
 * Nothing fetched is trusted or shown: every object is still checked and
 * opened under the keys when used, and a fetch that failed is only
 * tried again by the open (which reports errors as without prefetching).
 * Fetched objects are handed out once (docs/s3.md, Overlapping the
 * unlock); the listings were read before the repository's lock, so
 * cf_bk_repo_lock on a repository so opened drops them and reloads the
 * index if its objects changed meanwhile.
 *
 * cf_bk_prefetch_start: 0, or -ENOMEM/-EAGAIN (no thread: the caller
 * opens without).  On success *out is the caller's (cf_bk_prefetch_free).
 * cf_bk_prefetch_key_version waits for the config: 0 and the key version
 * it is sealed under, or the error reading it (-ENOENT: no repository).
 * cf_bk_prefetch_free stops the fetching (a request under way ends
 * first), waits for the thread and frees what was fetched; NULL ok.
 * One thread may use a cf_bk_prefetch at a time.
 */
struct cf_bk_prefetch;
#define CF_BK_PREFETCH_PACKS 0x1
CF_MUST_CHECK int cf_bk_prefetch_start(struct cf_bk_prefetch **out,
    const char *url, int flags, unsigned conns, uint64_t pack_budget);
CF_MUST_CHECK int cf_bk_prefetch_key_version(struct cf_bk_prefetch *pf,
    uint32_t *version);
void cf_bk_prefetch_free(struct cf_bk_prefetch *pf);
/*
 * As cf_bk_repo_open_url_keys for pf's URL, from what pf fetched (it
 * waits for pf's thread to end); the store pf opened becomes the
 * repository's, or, if pf could not open one, a store is opened as
 * cf_bk_repo_open_url_keys does.  Takes keys over, also on failure.
 * pf is still the caller's (to free) and is of no further use.
 */
CF_MUST_CHECK int cf_bk_repo_open_prefetched(struct cf_bk_repo **out,
    struct cf_bk_prefetch *pf, struct cf_bk_keys *keys,
    const unsigned char tenant[CF_KS_ID_BYTES], int flags);

struct cf_bk_store *cf_bk_repo_store(struct cf_bk_repo *r);
const struct cf_bk_keys *cf_bk_repo_keys(const struct cf_bk_repo *r);
const struct cf_bk_chunker *cf_bk_repo_chunker(const struct cf_bk_repo *r);
/* The in-memory index (valid until the next load or cf_bk_repo_free). */
const struct cf_bk_index *cf_bk_repo_index(const struct cf_bk_repo *r);
/* The repo id from the config (16 bytes). */
const unsigned char *cf_bk_repo_id(const struct cf_bk_repo *r);

/*
 * (Re)loads every index object.  An index that fails its storage id,
 * authentication or decoding is skipped and counted in *bad (may be
 * NULL) rather than failing the load: a reader still finds the blobs of
 * the good ones, and verify reports the bad one.
 */
CF_MUST_CHECK int cf_bk_repo_index_load(struct cf_bk_repo *r, size_t *bad);

/* 1 if the index holds the blob, else 0. */
int cf_bk_repo_has_blob(struct cf_bk_repo *r, enum cf_bk_blob_type type,
    const unsigned char id[CF_BK_ID_BYTES]);
/*
 * Loads one blob: finds it in the index, reads its range of the pack,
 * authenticates, decompresses, checks the id.  On success *buf (*len
 * bytes, malloc'd) is owned by the caller.  -ENOENT if not indexed.
 */
CF_MUST_CHECK int cf_bk_repo_blob_load(struct cf_bk_repo *r,
    enum cf_bk_blob_type type, const unsigned char id[CF_BK_ID_BYTES],
    unsigned char **buf, size_t *len);
/*
 * A blob reader: cf_bk_repo_blob_load with its own key cache, so that
 * several threads (one reader each) can load blobs of one repo at once,
 * as long as nothing changes the repo's index meanwhile (no writer, no
 * index load).  The reader borrows r.  On success *out is owned by the
 * caller; free with cf_bk_blob_reader_free() (accepts NULL).
 */
struct cf_bk_blob_reader;
CF_MUST_CHECK int cf_bk_blob_reader_new(struct cf_bk_blob_reader **out,
    struct cf_bk_repo *r);
void cf_bk_blob_reader_free(struct cf_bk_blob_reader *br);
/* As cf_bk_repo_blob_load. */
CF_MUST_CHECK int cf_bk_blob_reader_load(struct cf_bk_blob_reader *br,
    enum cf_bk_blob_type type, const unsigned char id[CF_BK_ID_BYTES],
    unsigned char **buf, size_t *len);
/*
 * A cache of whole packs for a restore from a remote store (S3), shared
 * by every blob load of r: a pack is read by one GET of the whole pack
 * (instead of a ranged GET per few blobs on each thread), by `conns`
 * loader threads, in the order cf_bk_repo_prefetch() asks for them, and
 * kept in one of `slots` buffers (a pack each, 16 MiB typically) until
 * room is needed and no queued file needs it any more.  A blob whose
 * pack is not there yet is loaded by the thread that needs it: the whole
 * pack into a slot no queued file needs, else the blob alone by range
 * (a pack still needed is never evicted and fetched again).  Local stores are left as they are (the
 * page cache is their cache): returns 0 and starts nothing.  Packs over
 * 64 MiB are read by ranges as before.  Call before any reader loads,
 * with nothing changing the index while it runs; -ENOMEM, -EAGAIN
 * (threads), -EINVAL for 0 conns or slots < conns.
 */
CF_MUST_CHECK int cf_bk_repo_pack_cache_start(struct cf_bk_repo *r,
    unsigned conns, unsigned slots);
/* Stops the loaders and frees the cache (no-op without one). */
void cf_bk_repo_pack_cache_stop(struct cf_bk_repo *r);
/*
 * What the pack cache downloaded so far: whole packs (count, bytes) and
 * blobs read alone by range because every slot held a pack queued files
 * still needed.  Zeros without a cache.  Thread-safe.
 */
struct cf_bk_pc_stats {
	uint64_t packs, pack_bytes;
	uint64_t blobs, blob_bytes;
};
void cf_bk_repo_pack_cache_stats(struct cf_bk_repo *r,
    struct cf_bk_pc_stats *st);
/*
 * Tells the pack cache, before a restore starts, that data blob id will
 * be read (once per call): a pack with planned reads left is evicted only
 * when every other slot has some too, so a pack that later files need
 * again is not dropped and fetched a second time.  Unknown blobs and
 * calls without a cache are ignored; a planned read that never comes
 * only makes its pack stay longer.  Thread-safe.
 */
void cf_bk_repo_pack_cache_plan(struct cf_bk_repo *r,
    const unsigned char id[CF_BK_ID_BYTES]);
/*
 * Asks the loaders for the pack holding blob id, soon needed.  Never
 * blocks on a load; does nothing without a cache, for a blob the index
 * does not list, or a pack already cached or asked for.  A hint for
 * which no slot is free is kept and loaded, in order, as slots free.
 * Thread-safe.
 */
void cf_bk_repo_prefetch(struct cf_bk_repo *r, enum cf_bk_blob_type type,
    const unsigned char id[CF_BK_ID_BYTES]);
/* Loads and decodes a tree blob; free with cf_bk_tree_free(). */
CF_MUST_CHECK int cf_bk_repo_tree_load(struct cf_bk_repo *r,
    const unsigned char id[CF_BK_ID_BYTES], struct cf_bk_tree **out);

/*
 * Seals and puts a snapshot; id receives its storage id.  A snapshot
 * with a key_versions record is saved with the version it is sealed
 * under and the repository's creation version added to it
 * ([BK-SNAP-2]); s itself is not changed.
 */
CF_MUST_CHECK int cf_bk_repo_snapshot_save(struct cf_bk_repo *r,
    const struct cf_bk_snapshot *s, unsigned char id[CF_BK_ID_BYTES]);
/*
 * Lists snapshot storage ids (unsorted; load each for its time).  *ids
 * (*n entries, malloc'd, NULL if none) is owned by the caller.
 */
CF_MUST_CHECK int cf_bk_repo_snapshot_list(struct cf_bk_repo *r,
    unsigned char (**ids)[CF_BK_ID_BYTES], size_t *n);
/* Loads one snapshot ([BK-LAY-3] storage id checked). */
CF_MUST_CHECK int cf_bk_repo_snapshot_load(struct cf_bk_repo *r,
    const unsigned char id[CF_BK_ID_BYTES], struct cf_bk_snapshot **out);

/*
 * Locks ([BK-LOCK-1]): writes a lock object, then checks the others.
 * -EBUSY if a conflicting fresh lock exists (ours is removed again).
 * hostname may be NULL (gethostname).  Release deletes it and frees.
 * A repository opened by cf_bk_repo_open_prefetched is then brought up
 * to date (listings read again, the index reloaded if changed; its
 * errors are returned, the lock removed again).
 */
struct cf_bk_lock;
CF_MUST_CHECK int cf_bk_repo_lock(struct cf_bk_repo *r, int exclusive,
    const char *hostname, struct cf_bk_lock **out);
/* Rewrites the lock with a fresh time (every 5 minutes while held). */
CF_MUST_CHECK int cf_bk_lock_refresh(struct cf_bk_lock *l);
/* Deletes the lock object and frees l; accepts NULL (returns 0). */
CF_MUST_CHECK int cf_bk_lock_release(struct cf_bk_lock *l);

/* ---- write-only backups (docs/write-only.md) ------------------------------ */

/*
 * The writer credential of a repository (docs/format/writer-key.md):
 * what a backup agent needs to add snapshots, nothing that opens them.
 * Made from a repo opened with the full keys; *out (CF_BK_WCRED_BYTES)
 * is owned by the caller (a secret: write it to a 0600 file only).
 */
CF_MUST_CHECK int cf_bk_wcred_export(const struct cf_bk_repo *r,
    struct cf_secbuf **out);

/* What a credential says (its public part). */
struct cf_bk_wcred_info {
	uint32_t key_version;
	enum cf_ks_cipher cipher;
	unsigned char tenant[CF_KS_ID_BYTES];
	unsigned char config_id[CF_BK_ID_BYTES];	/* storage id */
	uint32_t min, avg, max;				/* chunker */
};

/*
 * Parses a credential and makes the write-only keys it holds.  -EPROTO
 * malformed or damaged (its checksum), -ENOTSUP cipher unavailable.
 * keys may be NULL (parse only).  On success *keys is owned by the
 * caller (cf_bk_keys_free).
 */
CF_MUST_CHECK int cf_bk_wcred_parse(const unsigned char *buf, size_t len,
    struct cf_bk_wcred_info *info, struct cf_bk_keys **keys);

/* 1 if k are write-only keys (they seal, they never open). */
int cf_bk_keys_writeonly(const struct cf_bk_keys *k);

/*
 * Opens the repository at url with a writer credential: no root key.
 * The config is not decrypted; its storage id must be the one the
 * credential names (-EKEYREJECTED otherwise: another repository or tenant;
 * -ENOENT no config).  Loads the index objects these keys open (those
 * sealed with the index key), so that blobs stored before are not
 * stored again.  The repo can add packs, indexes, snapshots and locks;
 * every load of a blob, tree or snapshot fails with -ENOKEY.
 */
CF_MUST_CHECK int cf_bk_repo_open_writer(struct cf_bk_repo **out,
    const char *url, const unsigned char *cred, size_t len);

/* ---- pack writer ---------------------------------------------------------- */

/*
 * The writer a backup uses.  Files go in chunk by chunk
 * (cf_bk_writer_file_add); the nthreads worker threads (0: the caller's
 * thread) compute each chunk's id, check it against the index and the
 * blobs added so far (dedup), then compress, seal and pack the new ones,
 * each filling its own pack to CF_BK_PACK_TARGET.  Single blobs (trees)
 * and streams whose items are wanted at once (cf_bk_writer_add,
 * cf_bk_writer_add_stream) are hashed and checked on the caller's
 * thread.  Full packs
 * are put, then indexed ([BK-CRASH-1]).  The writer adds what it stored
 * to the repo's in-memory index.  One writer per repo at a time; the
 * caller must not use the repo's index from another thread meanwhile.
 */
struct cf_bk_writer;

struct cf_bk_writer_stats {
	uint64_t blobs, bytes;			/* every blob added */
	uint64_t new_blobs, new_bytes;		/* those stored (plaintext) */
	uint64_t stored_bytes;			/* sealed blob bytes */
	uint64_t packs, indexes;		/* objects put */
	/*
	 * The root key versions of every blob added or looked up (the
	 * packs this writer put, the indexed packs of known blobs, parent
	 * trees and reused data blobs), with the write version and the
	 * repository's creation version: a snapshot of what was added needs
	 * these ([BK-SNAP-2]).  has_key_versions 0 if more than
	 * CF_BK_SNAP_KEY_VERSIONS_MAX were seen.
	 */
	int has_key_versions;
	size_t nkey_versions;
	uint32_t key_versions[CF_BK_SNAP_KEY_VERSIONS_MAX];
};

CF_MUST_CHECK int cf_bk_writer_new(struct cf_bk_writer **out,
    struct cf_bk_repo *r, unsigned nthreads);
/*
 * Adds a blob of len bytes (at most CF_BK_BLOB_MAX); id receives its
 * blob id.  Copies data if the blob is new.  May block while the
 * workers catch up.  A worker's failure is returned by the next add or
 * flush, and every later call then fails too.
 */
CF_MUST_CHECK int cf_bk_writer_add(struct cf_bk_writer *w,
    enum cf_bk_blob_type type, const void *data, size_t len,
    unsigned char id[CF_BK_ID_BYTES]);
/*
 * Reads a stream to its end through rd (returns 0 and *got bytes, 0 at
 * the end, or -errno), cuts it with the repo's chunker and adds every
 * chunk as a data blob.  On success *items (*nitems blob items in order,
 * malloc'd, NULL for an empty stream) is owned by the caller and *size
 * is the stream's length.  The ids are computed on the caller's thread,
 * which needs them at once (a file whose items can wait: the
 * cf_bk_writer_file_* calls below).
 */
CF_MUST_CHECK int cf_bk_writer_add_stream(struct cf_bk_writer *w,
    int (*rd)(void *arg, unsigned char *buf, size_t cap, size_t *got),
    void *arg, struct cf_bk_item **items, size_t *nitems, uint64_t *size);
/*
 * A file's content in flight: its items in order, whose data blob ids
 * the workers fill in while the caller reads on.  The caller creates it
 * (cf_bk_writer_file_new), appends data (cf_bk_writer_file_add, any
 * number of times) and holes (cf_bk_writer_file_hole), then either takes
 * the finished items (cf_bk_writer_file_take: waits for the ids) or
 * drops them (cf_bk_writer_file_free: waits for the workers to be done
 * with it; its new blobs are stored all the same).  Taking a file late,
 * e.g. all files of a directory before encoding its tree, keeps the
 * reading thread from waiting for each file's hashes.  Every file must
 * be taken or freed before cf_bk_writer_flush and cf_bk_writer_free.
 * Only the thread that created a file may use it.
 */
struct cf_bk_wfile;
/* *out owned by the caller until take or free; -ENOMEM. */
CF_MUST_CHECK int cf_bk_writer_file_new(struct cf_bk_writer *w,
    struct cf_bk_wfile **out);
/*
 * Reads a stream to its end through rd, as cf_bk_writer_add_stream, and
 * appends its chunks to wf; *size is the stream's length.  On failure
 * wf holds the chunks added so far: free it.
 */
CF_MUST_CHECK int cf_bk_writer_file_add(struct cf_bk_writer *w,
    struct cf_bk_wfile *wf,
    int (*rd)(void *arg, unsigned char *buf, size_t cap, size_t *got),
    void *arg, uint64_t *size);
/* Appends a hole of len bytes (merged with a hole just before). */
CF_MUST_CHECK int cf_bk_writer_file_hole(struct cf_bk_writer *w,
    struct cf_bk_wfile *wf, uint64_t len);
/*
 * Waits until every id of wf is known and frees wf.  On success *items
 * (*nitems items in order, malloc'd, NULL if none) is owned by the
 * caller.  Fails with the writer's error if a worker failed (the ids are
 * then not all known).
 */
CF_MUST_CHECK int cf_bk_writer_file_take(struct cf_bk_writer *w,
    struct cf_bk_wfile *wf, struct cf_bk_item **items, size_t *nitems);
/* Drops wf (accepts NULL), after the workers are done with it. */
void cf_bk_writer_file_free(struct cf_bk_writer *w, struct cf_bk_wfile *wf);
/*
 * For an incremental backup, while the writer owns the repo's index:
 * loads and decodes a tree blob (of the parent snapshot) as
 * cf_bk_repo_tree_load, looking it up under the writer's lock.  Call it
 * from the thread that adds blobs.  Free *out with cf_bk_tree_free().
 */
CF_MUST_CHECK int cf_bk_writer_tree_load(struct cf_bk_writer *w,
    const unsigned char id[CF_BK_ID_BYTES], struct cf_bk_tree **out);
/*
 * 1 if the data blob id is stored in the repository (indexed) and its
 * plaintext is *ulen bytes, else 0: a parent's blob list may be reused
 * only if every blob is still there.
 */
int cf_bk_writer_data_blob(struct cf_bk_writer *w,
    const unsigned char id[CF_BK_ID_BYTES], uint64_t *ulen);
/*
 * Counts a reused file's blobs (never read, known to be stored) in the
 * stats as cf_bk_writer_add would count known blobs.
 */
void cf_bk_writer_count_reused(struct cf_bk_writer *w, uint64_t blobs,
    uint64_t bytes);
/* Encodes a tree and adds it as a tree blob. */
CF_MUST_CHECK int cf_bk_writer_add_tree(struct cf_bk_writer *w,
    const struct cf_bk_tree *t, unsigned char id[CF_BK_ID_BYTES]);
/*
 * Waits for the workers, puts every open pack, then the index of all
 * packs not yet indexed.  Afterwards everything added is durable and a
 * snapshot may refer to it.
 */
CF_MUST_CHECK int cf_bk_writer_flush(struct cf_bk_writer *w);
void cf_bk_writer_stats(const struct cf_bk_writer *w,
    struct cf_bk_writer_stats *st);
/*
 * Stops the workers and frees the writer; accepts NULL.  Blobs added
 * since the last flush are abandoned (their packs, if put, are orphans).
 */
void cf_bk_writer_free(struct cf_bk_writer *w);

/* ---- verify (bk_verify.c) ------------------------------------------------- */

/*
 * Repository verification (issue 4, Verify).  Structural checks always
 * run: config (the repo opened), every index object (storage id,
 * authentication, decoding), every snapshot, every tree reachable from
 * a snapshot, every blob a tree references is indexed, every indexed
 * pack exists with its size and its header and trailer length agree
 * with the index (two small range reads, not the data).  With
 * read_data, the chosen packs are downloaded whole: storage id,
 * trailer, and every blob authenticated and decompressed.  Packs no
 * index lists are orphans: counted, not damage.
 */
struct cf_bk_verify_opts {
	int read_data;			/* 1: read packs */
	unsigned subset_pct;		/* with read_data: 0..100 % of packs */
	uint64_t seed;			/* picks the subset (any value) */
};

/* One damaged file or directory of a snapshot. */
struct cf_bk_verify_damage {
	char snapshot[65];		/* storage id of the snapshot, hex */
	char *path;			/* "/dir/file"; a dir ends with '/' */
	char *why;			/* "blob missing", "tree unreadable" */
};

struct cf_bk_verify_result {
	uint64_t indexes, indexes_bad;
	uint64_t snapshots, snapshots_bad;	/* bad: unreadable or damaged */
	uint64_t trees, trees_bad;		/* distinct trees */
	uint64_t blobs, blobs_missing, blobs_bad; /* distinct data blobs */
	uint64_t packs, packs_missing, packs_bad, packs_orphan, packs_read;
	uint64_t bytes_read;			/* pack bytes downloaded */
	uint64_t files_damaged;			/* damage entries, all */
	char (*damaged_snapshots)[65];		/* hex storage ids */
	size_t ndamaged_snapshots;
	struct cf_bk_verify_damage *damage;	/* first 10000 entries */
	size_t ndamage;
	char **problems;			/* object-level messages */
	size_t nproblems;
	/* cf_bk_verify_coverage only: */
	uint64_t packs_due;			/* chosen to read this run */
	uint64_t packs_never_read;		/* in the index, after the run */
	int64_t oldest_read;			/* oldest last read; 0: none */
};

/*
 * Verifies the repository r (opened, any index state; its index is
 * reloaded).  Damage is not an error: it is reported in *out, and
 * cf_bk_verify_damaged() says whether there was any.  Returns 0 with
 * *out owned by the caller (cf_bk_verify_result_free), or -errno for an
 * operational failure (listing the store failed, -ENOMEM, -EINVAL for
 * subset_pct > 100).
 */
CF_MUST_CHECK int cf_bk_verify(struct cf_bk_repo *r,
    const struct cf_bk_verify_opts *o, struct cf_bk_verify_result **out);
/* 1 if the result records any damage (orphan packs are not damage). */
int cf_bk_verify_damaged(const struct cf_bk_verify_result *res);

/*
 * Read-data coverage (docs/format/verify-coverage.md): when verify first
 * saw and last read whole each pack of one repository, so that a daily
 * cf_bk_verify_coverage reads every pack at least once per period.
 */
struct cf_bk_coverage;

#define CF_BK_COVERAGE_MAX (1U << 22)	/* entries; the decoder's limit */

/* An empty coverage; 0 or -ENOMEM.  *out is the caller's (free below). */
CF_MUST_CHECK int cf_bk_coverage_new(struct cf_bk_coverage **out);
/*
 * Decodes the coverage file buf[0..len): 0 with *out the caller's,
 * -EPROTO for a malformed file or an unknown version, -E2BIG for more
 * than CF_BK_COVERAGE_MAX entries, -ENOMEM.  Never reads past len.
 */
CF_MUST_CHECK int cf_bk_coverage_parse(const char *buf, size_t len,
    struct cf_bk_coverage **out);
/*
 * Encodes c (entries sorted by pack id): 0 with *out (NUL-terminated,
 * *outlen bytes without the NUL) the caller's to free(), or -ENOMEM.
 */
CF_MUST_CHECK int cf_bk_coverage_format(const struct cf_bk_coverage *c,
    char **out, size_t *outlen);
/* Number of packs in c. */
size_t cf_bk_coverage_count(const struct cf_bk_coverage *c);
/*
 * Entry i (0 <= i < count, sorted by pack id): its id and times (unix
 * seconds; last_read 0 if never read whole).
 */
void cf_bk_coverage_get(const struct cf_bk_coverage *c, size_t i,
    unsigned char id[CF_BK_ID_BYTES], int64_t *first_seen,
    int64_t *last_read);
/* Frees c; accepts NULL. */
void cf_bk_coverage_free(struct cf_bk_coverage *c);

/*
 * Structural verify like cf_bk_verify, and reads the packs that are due
 * under cov at now (unix seconds) for a period of period_days (>= 1):
 * every pack whose last read (or, never read, its first sighting) will
 * be period_days old before the next daily run, and at least
 * ceil(packs / period_days) packs, never-read and oldest first.  cov is
 * then rewritten to the index's packs: new ones first seen at now, read
 * ones (and not found damaged) last read at now, vanished ones dropped.
 * res->packs_due says how many were chosen.  Returns as cf_bk_verify,
 * plus -EINVAL for period_days 0; cov is unchanged on failure.
 */
CF_MUST_CHECK int cf_bk_verify_coverage(struct cf_bk_repo *r,
    struct cf_bk_coverage *cov, int64_t now, unsigned period_days,
    struct cf_bk_verify_result **out);
/* Frees a result; accepts NULL. */
void cf_bk_verify_result_free(struct cf_bk_verify_result *res);

/* ---- retention (bk_retention.c) ------------------------------------------- */

/*
 * Snapshot retention, restic `forget` semantics (docs/retention.md): the
 * snapshots of one group are taken newest first; each bucket rule keeps
 * the newest snapshot of each of its N most recent buckets (hour, day,
 * ISO week, month, year, in UTC); keep_last keeps the N newest; a rule
 * whose count is not used up also keeps the oldest snapshot; keep_within
 * keeps every snapshot younger than the newest one minus within seconds.
 * A count of CF_BK_KEEP_ALL keeps every bucket.  A policy with no rule
 * keeps everything (restic refuses to run instead).
 */
#define CF_BK_KEEP_ALL 0xffffffffU

struct cf_bk_retention_policy {
	uint32_t last, hourly, daily, weekly, monthly, yearly;
	int64_t within;			/* seconds, 0: no rule */
};

/* Reasons a snapshot is kept (bits of cf_bk_retention_plan's out). */
#define CF_BK_KEEP_LAST 0x01U
#define CF_BK_KEEP_HOURLY 0x02U
#define CF_BK_KEEP_DAILY 0x04U
#define CF_BK_KEEP_WEEKLY 0x08U
#define CF_BK_KEEP_MONTHLY 0x10U
#define CF_BK_KEEP_YEARLY 0x20U
#define CF_BK_KEEP_WITHIN 0x40U
#define CF_BK_KEEP_NOPOLICY 0x100U	/* the policy has no rule */
/* Kept only as the oldest snapshot of a rule with count left. */
#define CF_BK_KEEP_OLDEST(rule) ((rule) << 9)

/* 1 if the policy has at least one rule. */
int cf_bk_retention_policy_set(const struct cf_bk_retention_policy *p);

/*
 * Decides which of n snapshots (times in nanoseconds since the epoch,
 * as in struct cf_bk_snapshot; any order) to keep: keep[i] receives 0 (remove) or the CF_BK_KEEP_* bits
 * of the rules that keep snapshot i.  Pure: no clock, no I/O.  Snapshots
 * with equal times are ordered by index (the higher index is newer).
 * -ENOMEM, or 0.
 */
CF_MUST_CHECK int cf_bk_retention_plan(const struct cf_bk_retention_policy *p,
    const int64_t *times, size_t n, unsigned *keep);

/*
 * The reasons in keep as words ("daily", "oldest monthly", "within",
 * "last", "no policy"), comma-separated, into buf (cap bytes, always
 * NUL-terminated); "" for 0.
 */
void cf_bk_retention_reasons(unsigned keep, char *buf, size_t cap);

/*
 * Parses a duration for keep_within: a sequence of NUMBER UNIT with
 * units y (365 days), m (30 days), w, d, h ("1y6m", "30d", "12h").
 * -EINVAL otherwise.
 */
CF_MUST_CHECK int cf_bk_duration_parse(const char *s, int64_t *out);

/* ---- prune (bk_prune.c) --------------------------------------------------- */

/*
 * Removes what no snapshot references (docs/retention.md, Prune).  The
 * caller holds lock, an exclusive lock on r (cf_bk_repo_lock), which
 * prune refreshes as it goes.  Steps, each safe to crash after:
 *   1. list the index objects and reload the index;
 *   2. mark every blob reachable from every snapshot (any unreadable
 *      snapshot or tree, or an unindexed blob, stops prune: -EBADMSG /
 *      -ENOENT, nothing deleted);
 *   3. repack the live blobs of packs with at most repack_pct % live
 *      bytes into new packs (put, not yet indexed: orphans until 4);
 *   4. put new index objects listing every kept and new pack;
 *   5. delete the index objects listed in 1;
 *   6. delete packs no new index lists (dead, repacked, orphans);
 *   7. remove interrupted uploads started more than CF_BK_STALE_SECONDS
 *      before cf_ks_now() (cf_bk_store_cleanup): a failure there is
 *      reported in st->stale_rc, not returned.
 * A rerun after a crash anywhere finishes the job; a live snapshot's
 * blob is never unreachable.  dry_run computes the statistics and
 * changes nothing.
 */
struct cf_bk_prune_opts {
	int dry_run;
	unsigned repack_pct;		/* 0: never repack */
};

struct cf_bk_prune_stats {
	uint64_t snapshots, blobs_live, blobs_dead;
	uint64_t packs, packs_deleted, packs_repacked, packs_orphan;
	uint64_t packs_written, bytes_deleted, bytes_written;
	uint64_t indexes_deleted, indexes_written;
	/*
	 * S3 Object Lock: objects whose deletion was refused (-EROFS) and
	 * left for a later prune, and the latest retain-until date among
	 * them (seconds since the epoch).  While an old index object is
	 * locked no pack is deleted (it may still name them).
	 */
	uint64_t objects_locked;
	int64_t locked_until;
	/*
	 * Step 7: interrupted uploads removed (S3 multipart uploads, local
	 * temporary files, older than CF_BK_STALE_SECONDS), and 0 or the
	 * -errno that stopped that step (prune itself still returns 0).
	 */
	uint64_t stale_removed;
	int stale_rc;
};

CF_MUST_CHECK int cf_bk_prune(struct cf_bk_repo *r, struct cf_bk_lock *lock,
    const struct cf_bk_prune_opts *o, struct cf_bk_prune_stats *st);

/*
 * Re-encrypts a repository under its keys' write version W (the newest
 * root key version they hold: cf_bk_keys_write_version), so that no
 * indexed pack, index object or snapshot needs an older version
 * (docs/kms.md, Root key rotation; docs/format/repository.md,
 * [BK-REENC-1]).  The caller holds lock, an exclusive lock on r, which
 * it refreshes.  Prune's crash-safe order (bk_prune.c), with every blob
 * counted live and nothing deleted by reachability:
 *   1. list the index objects, reload the index (an unreadable index
 *      object stops it: -EBADMSG, nothing changed);
 *   2. copy every blob of each indexed pack whose header names a
 *      version below W into new packs under W (put, not yet indexed),
 *      except blobs a pack under W already holds;
 *   3. put new index objects listing the kept and new packs, then
 *      delete the old index objects (an Object Lock refusal keeps the
 *      old packs too, as prune does);
 *   4. delete the packs no new index object names (the old ones, and
 *      orphans);
 *   5. re-seal each snapshot whose object is under a version below W:
 *      the same plaintext with key_versions {W, config version} (its
 *      packs are all under W now) and a parent re-sealed in this run
 *      renamed, put under its new storage id, then the old object
 *      deleted.  A snapshot under W equal to it but for key_versions
 *      and parent (the copy a killed run put) is taken instead of
 *      sealing another.
 * Blob ids, trees and index contents do not change; a re-sealed
 * snapshot's storage id does (it is the hash of its bytes).  fn, if not
 * NULL, is called after each step (and after each old pack and each
 * snapshot) with what is done out of what there is; for a snapshot,
 * with its old and its new storage id (NULL otherwise), once the new
 * object is durable and before the old one is deleted.  A rerun after a
 * crash anywhere finishes the job; every snapshot restores throughout.
 * -EINVAL for write-only keys.  Not thread safe.
 */
enum cf_bk_reenc_step {
	CF_BK_REENC_PACK = 1,		/* one old pack copied (done/total) */
	CF_BK_REENC_INDEX,		/* new index objects put */
	CF_BK_REENC_DELETED,		/* old index objects and packs gone */
	CF_BK_REENC_SNAPSHOT,		/* one snapshot re-sealed, old kept */
};
typedef void cf_bk_reenc_fn(void *arg, enum cf_bk_reenc_step step,
    uint64_t done, uint64_t total, const unsigned char *old_id,
    const unsigned char *new_id);
struct cf_bk_reenc_stats {
	uint32_t key_version;		/* W */
	uint64_t packs, packs_old;	/* indexed; of those under < W */
	uint64_t blobs_copied, bytes_old;	/* read from old packs */
	uint64_t packs_written, bytes_written;
	uint64_t indexes_written, indexes_deleted, packs_deleted;
	uint64_t snapshots, snapshots_old, snapshots_resealed;
	uint64_t objects_locked;	/* deletions Object Lock refused */
	int64_t locked_until;
};
CF_MUST_CHECK int cf_bk_repo_reencrypt(struct cf_bk_repo *r,
    struct cf_bk_lock *lock, cf_bk_reenc_fn *fn, void *arg,
    struct cf_bk_reenc_stats *st);

/* Deletes a snapshot object (the caller holds an exclusive lock). */
CF_MUST_CHECK int cf_bk_repo_snapshot_delete(struct cf_bk_repo *r,
    const unsigned char id[CF_BK_ID_BYTES]);

/* ---- tenant lifecycle (bk_lifecycle.c) ------------------------------------ */

/*
 * Deletion schedules of a tenant (docs/retention.md, Lifecycle): the
 * state an operator set, since when, and the configured periods give
 * the effective state at any time and the dates of the transitions.
 * Pure: no clock, no I/O.  Periods are in seconds.
 */
struct cf_bk_lifecycle_cfg {
	int64_t trial_ended_purge;	/* 12 days */
	int64_t cancelled_purge;	/* 90 days */
	int64_t payment_failed_suspend;	/* 15 days */
	int64_t payment_failed_close;	/* 90 days */
	int64_t closed_purge;		/* 7 days after closure */
	int64_t free_idle_purge;	/* 60 days without use */
	int64_t evaluation_active;	/* 60 days */
	int64_t evaluation_locked;	/* 16 days more */
};

/* The published defaults (REQUIREMENTS.md). */
void cf_bk_lifecycle_defaults(struct cf_bk_lifecycle_cfg *c);

/* 1 if state may be set by an operator (DESIGN.md's STATE list). */
int cf_bk_lifecycle_state_valid(const char *state);

struct cf_bk_lifecycle_step {
	const char *state;		/* static string */
	int64_t at;
};

struct cf_bk_lifecycle_eval {
	const char *effective;		/* static string */
	int64_t purge_at;		/* 0: no purge scheduled */
	int purge_due;			/* now >= purge_at */
	int mount_refused;		/* locked, suspended, closed, ... */
	struct cf_bk_lifecycle_step steps[4];	/* the whole schedule */
	size_t nsteps;
};

/*
 * Evaluates state (set at since; last_use is the last mount or write, 0
 * if unknown) at now.  A transition takes effect at its instant: at
 * since + period the new state holds, one second before the old one.
 * The effective state is "purge-due" from the purge date until the
 * purge runs.  -EINVAL for an unknown state.
 */
CF_MUST_CHECK int cf_bk_lifecycle_eval(const struct cf_bk_lifecycle_cfg *c,
    const char *state, int64_t since, int64_t last_use, int64_t now,
    struct cf_bk_lifecycle_eval *out);

/* ---- data classes (bk_class.c) -------------------------------------------- */

/*
 * A data class of a tenant (docs/retention.md, Data classes): the files
 * whose paths match its patterns, kept for keep seconds (0: as long as
 * snapshot retention keeps them), and, with survives_purge, copied into
 * a retained repository under a separate key when the tenant is purged.
 */
#define CF_BK_CLASS_PATTERNS 16U
#define CF_BK_CLASS_PATTERN_MAX 256U
#define CF_BK_CLASSES_MAX 16U

struct cf_bk_class {
	char name[64];
	char patterns[CF_BK_CLASS_PATTERNS][CF_BK_CLASS_PATTERN_MAX];
	size_t npatterns;
	int64_t keep;			/* seconds; 0: no period */
	int survives_purge;
};

/*
 * Parses a comma-separated pattern list (syntax: cf_bk_class_match) into
 * c->patterns; a leading '/' is dropped, empty entries are skipped,
 * consecutive "**" segments collapse into one.  -EINVAL for a list with
 * no pattern, more than CF_BK_CLASS_PATTERNS, one of 256 bytes or more,
 * or one with more than 4 "**" segments.
 */
CF_MUST_CHECK int cf_bk_class_paths(struct cf_bk_class *c, const char *list);

/*
 * 1 if path (relative to the snapshot root, '/'-separated, a leading '/'
 * ignored) or one of its parent directories matches a pattern of c: "**"
 * is any number of whole segments, other segments are fnmatch(3)
 * patterns.  The root itself never matches.
 */
int cf_bk_class_match(const struct cf_bk_class *c, const char *path);

struct cf_bk_filter_stats {
	uint64_t files, bytes;		/* regular files dropped, their size */
};

/*
 * 1 if something at or below the directory dir (relative, as for
 * cf_bk_class_match) may match a pattern of c; 0 only if nothing below it
 * can.  A "**" segment reached makes it 1.
 */
int cf_bk_class_may_contain(const struct cf_bk_class *c, const char *dir);

/*
 * Rewrites the tree root without every entry for which drop(arg, path,
 * node) returns 1 (a directory is dropped whole); 0 keeps the entry (a
 * directory is searched), 2 keeps a directory as it is without searching
 * it.  The new trees are added through w (flush w before a snapshot names
 * out).  Unchanged subtrees keep their ids; if nothing is dropped out
 * equals root and nothing is added.
 */
CF_MUST_CHECK int cf_bk_tree_filter(struct cf_bk_writer *w,
    const unsigned char root[CF_BK_ID_BYTES],
    int (*drop)(void *arg, const char *path, const struct cf_bk_node *n),
    void *arg,
    unsigned char out[CF_BK_ID_BYTES], struct cf_bk_filter_stats *st);

/*
 * The schedule of a retained class (docs/retention.md, Purge with data
 * classes): "retained" from since (the purge of the tenant it was part
 * of), "purge-due" from until; never mountable.
 */
void cf_bk_lifecycle_eval_retained(int64_t since, int64_t until, int64_t now,
    struct cf_bk_lifecycle_eval *out);

/*
 * Copies from src into the repository of w (its own keys, so every data
 * blob is read, and added again under its new id) the tree root with
 * only the files of class c: a directory that matches is copied whole,
 * one that does not is searched and left out if nothing below matches.
 * st counts the files copied.  out is the new root (an empty tree if
 * nothing matched: st->files is then 0).  Flush w before a snapshot
 * names out.  memo (NULL: none) remembers the subtrees copied whole, so
 * the snapshots of one repository that share them are copied once: use
 * one memo per (src, w) pair.
 */
struct cf_bk_copy_memo;
CF_MUST_CHECK int cf_bk_copy_memo_new(struct cf_bk_copy_memo **out);
void cf_bk_copy_memo_free(struct cf_bk_copy_memo *m);
CF_MUST_CHECK int cf_bk_tree_copy_class(struct cf_bk_repo *src,
    struct cf_bk_writer *w, const unsigned char root[CF_BK_ID_BYTES],
    const struct cf_bk_class *c, struct cf_bk_copy_memo *memo,
    unsigned char out[CF_BK_ID_BYTES], struct cf_bk_filter_stats *st);

/*
 * 1 if the trees a and b differ in anything but access times (names,
 * types, modes, owners, mtime, ctime, sizes, contents, link targets,
 * number of xattrs), 0 if not, -errno if a tree cannot be loaded.
 */
CF_MUST_CHECK int cf_bk_tree_changed(struct cf_bk_repo *r,
    const unsigned char a[CF_BK_ID_BYTES],
    const unsigned char b[CF_BK_ID_BYTES]);

#endif /* CF_BACKUP_H */
