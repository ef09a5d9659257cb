/*
 * fs_int.h - private declarations of the encrypted store.
 */
#ifndef FS_INT_H
#define FS_INT_H

#include <stdatomic.h>

#include "cf_fs.h"

struct cf_fs_keys {
	enum cf_ks_cipher cipher;	/* for new files */
	uint32_t key_version;		/* for new files: the newest */
	uint32_t meta_version;		/* of the three keys below */
	struct cf_secbuf *content;	/* per-file keys derive from this */
	/* Content keys of the other root key versions (cf_fs_keys_add). */
	struct {
		uint32_t version;
		struct cf_secbuf *key;
	} more[CF_FS_KEYS_MAX];
	size_t nmore;
	struct cf_secbuf *name_mac;	/* SIV tag key for names */
	struct cf_secbuf *name_enc;	/* stream key for names */
	struct cf_ks_aead *meta;	/* symlink targets, store marker */
};

#define FS_STORE_MARKER "cf.store"	/* proves which tenant owns a store */
#define FS_STORE_DATA "data"		/* the tenant's root directory */
#define FS_STORE_CTL "cf.ctl"		/* the daemon's control socket */

/*
 * The store marker (fs_crypt.c, [FS-STORE-3], [FS-STORE-8]) under k's
 * metadata version: seal writes it to out (CF_FS_MARKER2_BYTES) and its
 * length to *len; open is 0 if buf is the marker of k, else -EBADMSG.
 */
CF_MUST_CHECK int fs_marker_seal(const struct cf_fs_keys *k,
    unsigned char *out, size_t *len);
CF_MUST_CHECK int fs_marker_open(const struct cf_fs_keys *k,
    const unsigned char *buf, size_t len);
/* 1 if the store (its directory fd) has a metadata journal, 0 if not. */
int fs_metakey_pending(int storefd);

/*
 * The store's control socket (fs_snap.c): fs_ctl_addr fills sa with its
 * address (-ENAMETOOLONG if it does not fit); fs_ctl_connect connects to
 * it and returns the descriptor, -ENOTCONN if no daemon answers (no
 * socket, or a crashed daemon's), or -errno.
 */
struct sockaddr_un;
CF_MUST_CHECK int fs_ctl_addr(const char *backing, struct sockaddr_un *sa);
int fs_ctl_connect(const char *backing);

/*
 * Snapshots of a mounted store (fs_snap.c).  freeze(arg, 1) must block
 * every mutating operation until freeze(arg, 0).  fs_snap_cow is called
 * by every operation about to change the inode (dev, ino), open as obj
 * (O_PATH), while that operation holds the freeze's read side.
 */
struct fs_snap;
CF_MUST_CHECK int fs_snap_new(struct fs_snap **out, const char *backing,
    int (*freeze)(void *arg, int on), void *arg);
CF_MUST_CHECK int fs_snap_start(struct fs_snap *s);
void fs_snap_free(struct fs_snap *s);
int fs_snap_active(const struct fs_snap *s);
/*
 * The number of snapshots taken so far (0 for NULL).  It changes only
 * while writers are frozen, so a change made after a snapshot reads a
 * newer value than every change made before it: the generation of a file
 * is raised before its first change after each snapshot (fs_ops.c
 * gen_raise), which incremental backups rely on (docs/backup.md).
 */
uint64_t fs_snap_epoch(const struct fs_snap *s);
/* on: the daemon keeps generations (a log), so SNAPSHOT says "gen". */
void fs_snap_set_gens(struct fs_snap *s, int on);
int fs_snap_cow(struct fs_snap *s, dev_t dev, ino_t ino, int obj);
/*
 * Called before the daemon changes backing bytes [off, off + len) of the
 * regular file (dev, ino), open readable as fd (len < 0: to its end; a
 * cut to off is [off, end)), after fs_snap_cow, holding the freeze's
 * read side and the inode's lock: a snapshot keeping a delta of the
 * file ([CTL-7]) saves what the change replaces.  Cheap when no
 * snapshot keeps deltas.
 */
void fs_snap_save(struct fs_snap *s, dev_t dev, ino_t ino, int fd,
    off_t off, off_t len);
/*
 * A farm's block deltas (docs/format/ctl.md [CTL-7]): FS_COW_DIR in the
 * farm holds INO (the live file) and INO.d (header, map, saved units)
 * for each farm file INO that is a delta.  fs_cow_header_decode checks
 * the header of INO.d (len bytes) and gives its unit size: 0 or -EPROTO.
 */
#define FS_COW_DIR "cow"
#define FS_COW_HDR 16U
#define FS_COW_MAGIC "CFCOWD1"		/* 8 bytes with its NUL */
#define FS_COW_UNIT 65536U		/* what fs_snap.c writes */
CF_MUST_CHECK int fs_cow_header_decode(const unsigned char *buf, size_t len,
    uint32_t *unit);
/*
 * Called by every operation about to change the entries of directory
 * (dev, ino), or the metadata or xattrs of the object (dev, ino), while it
 * holds the freeze's read side: a snapshot's live pass redoes such
 * directories under the freeze (fs_snap.c).  Cheap when no pass runs.
 */
void fs_snap_touch(struct fs_snap *s, dev_t dev, ino_t ino);

/*
 * The entries of directory dirfd but . and .., sorted by name (strcmp),
 * with readdir's inode number and type (DT_UNKNOWN resolved to DT_DIR or
 * DT_REG by fstatat).  *out is NULL and *n 0 on failure.  fs_snap.c.
 */
struct fs_dent {
	char *name;
	ino_t ino;
	unsigned char type;
};
CF_MUST_CHECK int fs_dir_list(int dirfd, struct fs_dent **out, size_t *n);
void fs_dir_list_free(struct fs_dent *v, size_t n);

/*
 * Root key rotation on a mounted store (fs_rekey.c): what the daemon
 * (fs_ops.c) lends the control socket's KEYS and REKEY requests.
 * exclusive runs fn on the regular file name of dirfd, open read-write
 * as fd, with every reader and writer of that file held off and a
 * snapshot's copy made first, then remakes an open file's context from
 * its new header; 0 for an object that is not a regular file.
 */
struct fs_rekey_host {
	struct cf_fs_keys *keys;
	const struct cf_fs_mount_opts *opts;
	int (*exclusive)(void *arg, int dirfd, const char *name,
	    int (*fn)(void *fnarg, int fd), void *fnarg);
	void *arg;
};
void fs_snap_set_rekey(struct fs_snap *s, struct fs_rekey_host *h);
/*
 * Serves line if it is KEYS or REKEY (docs/format/ctl.md), replying on
 * c; returns 1 then (the connection is done), else 0.  Stops between
 * files once *stop is set (unmount).
 */
int fs_rekey_ctl(struct fs_rekey_host *h, const char *backing, int c,
    const char *line, const atomic_int *stop);
/*
 * ROOTKEYS's reply ([CTL-8] in docs/format/ctl.md), parsed by the client
 * (fs_snap.c): fs_ctl_keys_head takes the first line, len bytes with its
 * newline, and gives the record count (0; -EACCES for a line starting
 * "ERR ", whose end the caller reads; -EPROTO for anything else);
 * fs_ctl_keys_check takes the n records of FS_CTL_KEY_REC bytes and gives
 * 0 only if each version is one of live and none repeats, else -EPROTO.
 */
#define FS_CTL_KEY_REC (4U + CF_KS_KEY_BYTES)
int fs_ctl_keys_head(const char *line, size_t len, size_t *n);
int fs_ctl_keys_check(const unsigned char *rec, size_t n,
    const uint32_t *live, size_t nlive);
uint32_t fs_ctl_le32(const unsigned char *p);
/* Serves ROOTKEYS ([CTL-8]) to the peer pid/uid on c; c stays open. */
void fs_rekey_lend(struct fs_rekey_host *h, int c, pid_t pid, uid_t uid);

/*
 * The generation log (fs_gen.c): opened at mount (reset: start empty, for
 * -o accept_rollback after a damaged log), -EPROTO if damaged.  get gives
 * 0 for an unknown file; set with gen 0 forgets one.  Thread-safe.
 */
struct fs_gen;
CF_MUST_CHECK int fs_gen_open(struct fs_gen **out, const char *path,
    int reset);
/* The log's table only, for reading (an absent log is empty); never
 * written, not compacted: set fails with -EBADF. */
CF_MUST_CHECK int fs_gen_read(struct fs_gen **out, const char *path);
void fs_gen_close(struct fs_gen *g);
uint64_t fs_gen_get(struct fs_gen *g, const unsigned char id[CF_KS_ID_BYTES]);
CF_MUST_CHECK int fs_gen_set(struct fs_gen *g,
    const unsigned char id[CF_KS_ID_BYTES], uint64_t gen);

/*
 * A helper thread for the blocks of one large request (fs_par.c).  run
 * calls fn(arg, lo, hi) on chunks covering [0, n), shared between the
 * caller and the helper (when it is free and n >= CF_FS_PAR_MIN), and
 * returns a negative result if any chunk had one; fn must be safe to run
 * on two chunks at once.  new gives NULL on a single-core machine; run
 * with NULL does it all inline.
 */
#define CF_FS_PAR_MIN 32		/* blocks: 128 KiB */
struct cf_fs_par;
typedef int cf_fs_par_fn(void *arg, size_t lo, size_t hi);
CF_MUST_CHECK int cf_fs_par_new(struct cf_fs_par **out);
void cf_fs_par_free(struct cf_fs_par *p);
int cf_fs_par_run(struct cf_fs_par *p, cf_fs_par_fn *fn, void *arg,
    size_t n);

/*
 * Removing one name of a store (fs_unlink.c), shared by the daemon's
 * unlink and rename and by cf_fs_hold_unlink.  fs_unlink_plan, before the
 * name b of dirfd goes, notes what goes with it if it is the object's
 * last link: the links/ file of a long symlink target, and (gen set) the
 * id of a regular file whose generation the log forgets.  After the
 * unlink: fs_sidecar_unlink removes a long name's sidecar, fs_unlink_after
 * the rest (g may be NULL, links_fd -1).
 */
struct fs_unlink_plan {
	char gone[CF_FS_HASHED_BYTES];	/* "cf.T.<hash>" or "" */
	unsigned char id[CF_KS_ID_BYTES];
	int last;			/* 1: forget id's generation */
};
void fs_unlink_plan(const struct cf_fs_keys *k, int dirfd, const char *b,
    int gen, struct fs_unlink_plan *p);
void fs_sidecar_unlink(int dirfd, const char *b);
void fs_unlink_after(int links_fd, struct fs_gen *g,
    const struct fs_unlink_plan *p);

/*
 * Reader internals for the hold (fs_reader.c): the directory's descriptor,
 * its store's descriptor, and the backing name of plaintext name in it
 * (out: NAME_MAX + 1 bytes; -EINVAL, -ENAMETOOLONG as the reader).
 */
int fs_rdir_fd(const struct cf_fs_rdir *d);
int fs_rdir_store_fd(const struct cf_fs_rdir *d);
CF_MUST_CHECK int fs_rdir_backing_name(const struct cf_fs_rdir *d,
    const char *name, char *out);

/*
 * The re-encryption journal's target (fs_rekey.c, [FS-REKEY-1]): 0 if the
 * len bytes at buf are "data/" and components, none empty, "." or "..",
 * with no NUL; else -EPROTO.
 */
CF_MUST_CHECK int fs_rekey_path_ok(const char *buf, size_t len);
/* Finishes a content re-encryption's journal in the store sfd (fs_rekey.c). */
CF_MUST_CHECK int fs_rekey_finish(int sfd);

#endif /* FS_INT_H */
