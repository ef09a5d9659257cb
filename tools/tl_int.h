/*
 * tl_int.h - shared declarations of the coffer command-line tool.
 *
 * The tool is the only place that prints, exits, reads the environment
 * for the home directory and prompts on the terminal; the modules below it
 * return -errno and a message (cf_ks_last_error).
 */
#ifndef TL_INT_H
#define TL_INT_H

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include <jansson.h>

#include "cf_keystore.h"

struct tl_ctx {
	const char *home_path;
	struct cf_ks_home *home;	/* opened by tl_home() */
	int json;			/* --json */
	int verbose;			/* -v: 1, -q: -1 */
};

/* A subcommand: argv[0] is its name; returns an exit code. */
struct tl_cmd {
	const char *name;
	int (*run)(struct tl_ctx *ctx, int argc, char **argv);
	const char *usage;
	const char *summary;
};

/* Opens the home (creating it if create) or exits with a message. */
struct cf_ks_home *tl_home(struct tl_ctx *ctx, int create);

/* Prints "coffer: <last error>" and returns the exit code for rc. */
int tl_fail(int rc, const char *what);
/* Prints "tenant NAME: N objects locked ... until DATE, will be deleted later". */
void tl_report_locked(const char *name, uint64_t n, int64_t until);
/* Prints a usage error and returns CF_EXIT_USAGE. */
int tl_usage(const struct tl_cmd *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/*
 * Unlocks the root key version the tenant's repository at url is keyed
 * by (the config's key_version; the newest if there is no repository
 * yet): on success *root is the caller's and *version its version.
 * Errors as cf_ks_tenant_unlock.
 */
int tl_repo_unlock(struct cf_ks_tenant *t, const char *url,
    struct cf_secbuf **root, uint32_t *version);
/*
 * Opens the repository at url with root (of version, from
 * tl_repo_unlock) and every other live root key version of t (each
 * unlocked), so objects of every version open and new ones use the
 * newest.  As cf_bk_repo_open_url otherwise.
 */
struct cf_bk_repo;
int tl_repo_open(struct cf_ks_tenant *t, struct cf_bk_repo **out,
    const char *url, const struct cf_secbuf *root, uint32_t version,
    int flags);
/*
 * The same two steps overlapped (docs/s3.md, Overlapping the unlock):
 * tl_repo_prefetch starts fetching what opening url reads (and, with
 * CF_BK_PREFETCH_PACKS, the packs of a small remote repository) on a
 * thread of its own; NULL if it cannot (then the _pf calls behave as
 * the plain ones).  tl_repo_unlock_pf waits only for the config;
 * tl_repo_open_pf opens from what was fetched, for the same url.  The
 * caller frees pf (cf_bk_prefetch_free) after the open or on any error:
 * nothing fetched is shown, and errors are reported as without it.
 */
struct cf_bk_prefetch;
struct cf_bk_prefetch *tl_repo_prefetch(const char *url, int flags,
    unsigned conns, uint64_t pack_budget);
int tl_repo_unlock_pf(struct cf_ks_tenant *t, const char *url,
    struct cf_bk_prefetch *pf, struct cf_secbuf **root, uint32_t *version);
int tl_repo_open_pf(struct cf_ks_tenant *t, struct cf_bk_repo **out,
    const char *url, const struct cf_secbuf *root, uint32_t version,
    int flags, struct cf_bk_prefetch *pf);
/*
 * The store (tools with fs/, cmd_mount.c).  tl_fs_keys unlocks every live
 * root key version of t and derives the store's keys: names and metadata
 * under the store's metadata version (its marker's; the newest for a
 * store not made yet), each file's contents under its header's version,
 * new files under the newest (docs/crypto.md).  On success *out is the
 * caller's (cf_fs_keys_free).  tl_store_path gives the backing directory.
 */
/* coffer tenant reencrypt | retire-key (cmd_rekey.c) */
int tl_tenant_reencrypt(struct tl_ctx *ctx, int argc, char **argv);
int tl_tenant_retire_key(struct tl_ctx *ctx, int argc, char **argv);
/* After a rotation: a mounted store's daemon loads the new version. */
void tl_rotate_key_notify(struct tl_ctx *ctx, struct cf_ks_tenant *t);
struct cf_fs_keys;
int tl_fs_keys(struct cf_ks_home *home, struct cf_ks_tenant *t,
    struct cf_fs_keys **out);
void tl_store_path(struct cf_ks_home *home, const struct cf_ks_tenant *t,
    char *buf, size_t cap);
/* Prints a JSON value to stdout (compact or indented) and frees it. */
void tl_print_json(json_t *j);
/*
 * The tenant's repository URL: opt (a --repo option) if not NULL, else
 * the one recorded by its first backup, else file://HOME/repos/NAME.
 */
void tl_repo_url(struct cf_ks_home *home, const struct cf_ks_tenant *t,
    const char *opt, char *out, size_t cap);
/*
 * What went wrong opening the repository at url, for a person: the S3
 * store's errnos say more than strerror (an unverified certificate is
 * -EPERM there); others are strerror(-rc).
 */
const char *tl_repo_strerror(const char *url, int rc);
void tl_malloc_tune(void);
/* 1 if a daemon serves t's store (its control socket answers), else 0. */
int tl_store_served(struct cf_ks_home *home, const struct cf_ks_tenant *t);
/* Prompts on /dev/tty with echo off: the keystore's passphrase callback. */
int tl_prompt_passphrase(void *arg, const char *kms_name, int confirm,
    char *buf, size_t cap, size_t *len);

int cmd_tenant(struct tl_ctx *ctx, int argc, char **argv);
int cmd_audit(struct tl_ctx *ctx, int argc, char **argv);
int cmd_mount(struct tl_ctx *ctx, int argc, char **argv);
int cmd_umount(struct tl_ctx *ctx, int argc, char **argv);
int cmd_backup(struct tl_ctx *ctx, int argc, char **argv);
int cmd_snapshots(struct tl_ctx *ctx, int argc, char **argv);
int cmd_restore(struct tl_ctx *ctx, int argc, char **argv);

extern const struct tl_cmd tl_cmd_tenant;
extern const struct tl_cmd tl_cmd_audit;
extern const struct tl_cmd tl_cmd_mount;
extern const struct tl_cmd tl_cmd_umount;
extern const struct tl_cmd tl_cmd_backup;
extern const struct tl_cmd tl_cmd_snapshots;
extern const struct tl_cmd tl_cmd_restore;

/* verify (cmd_verify.c) */
int cmd_verify(struct tl_ctx *ctx, int argc, char **argv);
extern const struct tl_cmd tl_cmd_verify;

/* lifecycle (cmd_lifecycle.c) and retention (cmd_retention.c) */
struct cf_bk_lifecycle_cfg;
struct cf_bk_lifecycle_eval;
struct cf_bk_class;
struct cf_ks_tenant;
int cmd_lifecycle(struct tl_ctx *ctx, int argc, char **argv);
int cmd_retention(struct tl_ctx *ctx, int argc, char **argv);
extern const struct tl_cmd tl_cmd_lifecycle;
extern const struct tl_cmd tl_cmd_retention;
/* The periods of coffer.conf's [lifecycle] (defaults where absent). */
int tl_lifecycle_cfg(struct cf_ks_home *home, struct cf_bk_lifecycle_cfg *c);
/* The tenant's effective lifecycle state at now; 0 or -EINVAL (config). */
int tl_lifecycle_eval(struct cf_ks_home *home, const struct cf_ks_tenant *t,
    time_t now, struct cf_bk_lifecycle_eval *out);
/*
 * The tenant's data classes (docs/retention.md); *n of at most
 * CF_BK_CLASSES_MAX.  -EINVAL (reported) for a bad [class.NAME].
 */
int tl_classes_load(struct cf_ks_home *home, const struct cf_ks_tenant *t,
    struct cf_bk_class *out, size_t *n);
/* 1 if the tenant is on legal hold. */
int tl_tenant_held(const struct cf_ks_tenant *t);
/* Records now as the tenant's last use (mount, unmount). */
void tl_tenant_touch(struct cf_ks_tenant *t);
/* Purges a tenant (docs/retention.md, Purge); returns an exit code. */
int tl_lifecycle_purge(struct tl_ctx *ctx, const char *name,
    const char *reason, int force);

/*
 * Deleting expired data-class files from a tenant's live store
 * (tl_expire.c; docs/retention.md, "Live store").  The caller fills the
 * inputs; tl_expire_live fills the counts.
 */
struct cf_bk_class;
struct cf_fs_hold;
struct tl_expire {
	const struct cf_bk_class *cl;	/* the tenant's classes */
	size_t ncl;
	time_t now;
	int apply;			/* delete; else count what would go */
	int list;			/* print each path (tenant data) */
	int (*tick)(void *arg);		/* per directory (lock refresh), or NULL */
	void *tick_arg;
	/* results, per class */
	uint64_t files[16], bytes[16];
	uint64_t changed;		/* kept: changed since judged */
	uint64_t failed;		/* could not be read or deleted */
	uint64_t unreadable;		/* entries whose name is damaged */
	uint64_t foreign;		/* another file system mounted inside */
	int mounted;			/* 1: through the mount point mp */
	char mp[4096];
	/* private */
	const char *tenant;
	uint64_t listed;
	struct cf_fs_hold *hold;
	dev_t dev;
	int err;
};
/*
 * Walks the tenant's store, mounted (through its mount point) or not
 * (with its keys, under a hold), counting, and with apply deleting, every
 * non-directory whose class's keep has passed.  0 when walked (see
 * x->failed), 1 if there is nothing to do (no class with keep, no store),
 * -errno (printed) if the store could not be walked or a mount appeared.
 */
int tl_expire_live(struct cf_ks_home *home, struct cf_ks_tenant *t,
    struct tl_expire *x);
/*
 * 1 and its mount point if tenant name is mounted here (fuse.coffer,
 * source coffer:NAME, the whole store); with root_ino (not 0) only a
 * mount whose root has that inode, its store's data/ (another home may
 * mount a tenant of the same name).
 */
int tl_tenant_mountpoint(const char *name, ino_t root_ino, char *mp,
    size_t cap);

/* operations: drill (cmd_drill.c) and status (cmd_status.c) */
int cmd_drill(struct tl_ctx *ctx, int argc, char **argv);
int cmd_status(struct tl_ctx *ctx, int argc, char **argv);
extern const struct tl_cmd tl_cmd_drill;
extern const struct tl_cmd tl_cmd_status;
/* [operations] rto_hours in seconds (default 8 h); -1 if malformed. */
double tl_ops_rto_s(struct cf_ks_home *home);
/*
 * Caches a finished backup in the tenant (last_backup, _snapshot, _bytes,
 * _files) for coffer status; reopens the tenant, so a long backup's stale
 * handle does not undo fields written meanwhile.  Failures are printed.
 */
void tl_ops_record_backup(struct cf_ks_home *home, const char *name,
    const char *snapshot, int64_t time_ns, uint64_t bytes, uint64_t files);

/* daemon (cmd_daemon.c) and its state file (tl_daemon.c) */
int cmd_daemon(struct tl_ctx *ctx, int argc, char **argv);
extern const struct tl_cmd tl_cmd_daemon;
#define TL_DJOBS 4			/* backup, retention, verify, drill */
#define TL_DAEMON_STATE_MAX (64 << 20)	/* bytes of daemon.json */
#define TL_DAEMON_TIME_MAX ((long long)1 << 40)
extern const char *const tl_daemon_job_names[TL_DJOBS];
/* One job of one tenant (docs/format/daemon-state.md); times unix s. */
struct tl_daemon_job {
	long long last_ok, last_try, failed_since, next_try;
	long long started_ns, ended_ns;	/* wall clock of the last run */
	int failures, last_exit, hold;	/* hold: exit 2/3/4, needs a person */
};
struct tl_daemon_tenant {
	char *name;
	struct tl_daemon_job job[TL_DJOBS];
};
struct tl_daemon_state {
	long long updated;
	struct tl_daemon_tenant *t;
	size_t n, cap;
};
/* Parses daemon.json; 0 with *out the caller's, -EPROTO, -ENOMEM. */
int tl_daemon_state_parse(const char *buf, size_t len,
    struct tl_daemon_state **out);
/* Reads and parses path; -ENOENT if absent. */
int tl_daemon_state_load(const char *path, struct tl_daemon_state **out);
/* Writes st to path atomically (temporary, fsync, rename); 0 or -errno. */
int tl_daemon_state_save(const char *path, const struct tl_daemon_state *st);
/* The JSON text of st (malloc'ed) or NULL for -ENOMEM. */
char *tl_daemon_state_dump(const struct tl_daemon_state *st);
void tl_daemon_state_free(struct tl_daemon_state *st);
/* [daemon] state_file, else HOME/daemon.json. */
void tl_daemon_state_path(struct cf_ks_home *home, char *buf, size_t cap);
struct tl_daemon_tenant *tl_daemon_state_find(
    const struct tl_daemon_state *st, const char *name);
/* Finds or adds name; NULL for -ENOMEM. */
struct tl_daemon_tenant *tl_daemon_state_add(struct tl_daemon_state *st,
    const char *name);
/* Writes the tenant's failing jobs into why; 0 none, 1 WARN, 2 FAIL. */
int tl_daemon_judge(const struct tl_daemon_state *st, const char *name,
    char *why, size_t cap);
/* The coffer_daemon_* metrics of the tenants names[0..n). */
void tl_daemon_metrics(FILE *f, const struct tl_daemon_state *st,
    const char *const *names, size_t n);

/*
 * The progress line of backup and restore on standard error.  Only when
 * on (the caller passes isatty(2) and neither --json nor -q): redrawn at
 * most every 200 ms, within the terminal's width (TIOCGWINSZ, else 80
 * columns), and cleared by tl_progress_end before the summary.  It shows
 * counts, sizes, a rate and, with a total, the share done and the time
 * left: never names.  Not thread-safe: one thread draws.
 */
struct tl_progress {
	int on;
	int drawn;		/* a line is on the terminal */
	int64_t t0, last;	/* CLOCK_MONOTONIC ns: start, last draw */
};
/* Starts the clock; draws nothing unless on. */
void tl_progress_start(struct tl_progress *p, int on);
/*
 * Draws the line if on and 200 ms have passed since the last one (the
 * first call draws at once).  files and bytes so far, out of
 * total_files and total_bytes when those are not 0; done out of total
 * (any unit: bytes, input position) gives the percentage and the time
 * left when total is not 0.
 */
void tl_progress_show(struct tl_progress *p, uint64_t files,
    uint64_t total_files, uint64_t bytes, uint64_t total_bytes,
    uint64_t done, uint64_t total);
/* 1 if tl_progress_show would draw now (to skip gathering the counts). */
int tl_progress_due(const struct tl_progress *p);
/* Clears the line (if one was drawn), leaving the cursor at its start. */
void tl_progress_end(struct tl_progress *p);

/*
 * The deepest tree backup, restore and drill follow (docs/backup.md, Deep
 * trees): TL_TREE_DEPTH directories, each name at most NAME_MAX bytes.
 * TL_PATH_CAP holds the longest path such a tree has, every directory and
 * a name below the deepest with a '/' each (64 KiB, far over PATH_MAX:
 * the trees are walked relative to directory descriptors and these paths
 * serve messages, hard-link names and tar entries only).
 */
#define TL_TREE_DEPTH 256
#define TL_PATH_CAP ((TL_TREE_DEPTH + 2) * (NAME_MAX + 1))
/*
 * Levels tl_walk_at descends: a restored tree and the few directories
 * above it (a drill's scratch directory), or a store's backing tree.
 */
#define TL_WALK_DEPTH (TL_TREE_DEPTH + 8)

/*
 * Called by tl_walk_at for each entry: dfd is its directory, name its name
 * there, st its lstat.  A directory is passed twice, with post 0 before
 * its contents and post 1 after them.  Nonzero stops the walk.
 */
typedef int tl_walk_fn(void *arg, int dfd, const char *name,
    const struct stat *st, int post);
/*
 * Walks the tree below the directory fd dfd (not itself) without following
 * symlinks, through directory descriptors only, so a tree whose paths are
 * far longer than PATH_MAX is walked whole (nftw(3) is not: it builds
 * each path).  Holds one descriptor per level.  Entries may be removed by
 * fn (a directory in its post call).  0, fn's nonzero value, -ELOOP for a
 * tree deeper than TL_WALK_DEPTH, or -errno.  dfd stays open and its
 * offset is not used.
 */
int tl_walk_at(int dfd, tl_walk_fn *fn, void *arg);
/*
 * Removes path and, for a directory, everything below it (tl_walk_at, so
 * any depth), never following a symlink; regular files removed and
 * their bytes are added to *files and *bytes (either may be NULL).  0 if
 * path is gone (also if it was not there), or -errno (the first error;
 * the walk stops there).
 */
int tl_tree_remove(const char *path, uint64_t *files, uint64_t *bytes);

/*
 * Tar input (tools/tl_tarin.c; backup --tar, docs/backup.md): an inode of
 * the archive (tl_tino) holds metadata and content; the names of the
 * tree (tl_tnode) point at one, the names a hard link adds share it.
 */
struct archive;
struct archive_entry;
struct cf_bk_xattr;
struct cf_bk_item;

struct tl_tino {
	uint8_t type;
	uint32_t mode, uid, gid;
	int64_t atime, mtime, ctime;
	uint64_t rdev, size, group;
	char *target;
	struct cf_bk_xattr *xattrs;
	size_t nxattrs;
	struct cf_bk_item *items;
	size_t nitems;
	size_t refs;		/* names pointing at it */
};

struct tl_tnode {
	char *name;
	struct tl_tino *ino;
	struct tl_tnode *parent;
	/* A directory's entries. */
	struct tl_tnode *child, *last, *sibling;
	size_t nchild;
	struct tl_tnode *hnext;	/* hash chain of (parent, name) */
	struct tl_tnode *all;	/* every node, for freeing */
};

struct tl_tarin {
	struct archive *a;	/* the caller's; freed by tl_tarin_free */
	struct tl_tnode root;
	struct tl_tnode *all;
	struct tl_tnode **hash;
	size_t nhash, nnodes;
	uint64_t next_group;
	uint64_t dropped_xattrs;
	int64_t t0;		/* implicit directories' times */
	int stripped;		/* said "removing leading '/'" */
	uint64_t left_out;	/* entries left out (named unless quiet) */
	int quiet;		/* name nothing on stderr (fuzzing) */
	/*
	 * Reads the current entry's content into ino (items, nitems,
	 * size): 0 or -errno (stops the archive).  Required.
	 */
	int (*content)(struct tl_tarin *ti, struct archive_entry *e,
	    struct tl_tino *ino);
	/* An entry was taken as the name's new inode (optional). */
	void (*taken)(struct tl_tarin *ti, const struct tl_tino *ino);
	/* Before a message on stderr (optional). */
	void (*before_msg)(struct tl_tarin *ti);
	void *arg;		/* the caller's */
};
/* Empties ti (t0 for implicit directories); 0 or -ENOMEM. */
int tl_tarin_init(struct tl_tarin *ti, int64_t t0);
/*
 * One archive entry into the tree: taken (a later entry of a name
 * replaces it, as tar -x would) or left out, counted in left_out and
 * named: a ".." component, a component over 255 bytes or nesting over
 * 256, a name below a non-directory, a hard link to a name not earlier
 * in the archive or to a directory, a non-directory over a directory
 * with entries, ids over 2^32-1, an empty or too long symlink target,
 * a type the tree cannot hold.  0 (also when left out), or -errno from
 * content or -ENOMEM: stop.
 */
int tl_tarin_entry(struct tl_tarin *ti, struct archive_entry *e);
/* Frees the tree, its inodes and ti->a (if set); ti may be empty. */
void tl_tarin_free(struct tl_tarin *ti);

#endif /* TL_INT_H */
