/*
 * cmd_backup.c - coffer backup, coffer snapshots and coffer restore
 * (docs/backup.md).
 *
 * backup reads the tenant's encrypted store directly through fs's reader
 * API (no FUSE round trip) and feeds the plaintext to backup/'s pack
 * writer; trees are built bottom-up, one per directory.  An unmounted
 * tenant gives an "offline" snapshot.  A mounted one is read from the
 * point-in-time farm its daemon makes (cf_fs_snapshot_take, "freeze"), or,
 * if the daemon cannot make one, live: every file is checked after reading
 * (cf_fs_rfile_check) and read again if it changed, so each file is one
 * version of itself, but the whole is not point-in-time ("none").  The
 * checks run on the farm too.  restore recreates a snapshot
 * under a directory with openat()-family calls relative to directory fds,
 * never following a symlink in the target, or writes it as a pax tar.
 *
 * It does not write verify (cmd_verify.c); the writer pause is the
 * daemon's (fs/fs_snap.c).
 */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <linux/openat2.h>

#include "cf_backup.h"
#include "cf_fs.h"
#include "tl_int.h"

const struct tl_cmd tl_cmd_backup = {
	"backup", cmd_backup,
	"  coffer backup NAME [--repo URL] [--tag TAG]... [--force] [--json]\n"
	"  coffer backup NAME --stdin --name FILENAME [--repo URL] "
	"[--tag TAG]... [--json]\n"
	"  coffer backup NAME (--tar FILE|- | --dir DIR) [--repo URL] "
	"[--tag TAG]... [--json]\n"
	"  coffer backup NAME --writer-key FILE --repo URL\n"
	"                (--stdin --name FILENAME | --tar FILE|- | --dir DIR)\n"
	"                [--tag TAG]... [--json]\n",
	"back up a tenant's store (or stdin, a tar, a directory) into its "
	"repository",
};

const struct tl_cmd tl_cmd_snapshots = {
	"snapshots", cmd_snapshots,
	"  coffer snapshots NAME [--repo URL] [--json]\n",
	"list a tenant's snapshots",
};

const struct tl_cmd tl_cmd_restore = {
	"restore", cmd_restore,
	"  coffer restore NAME [SNAPSHOT|latest] (--target DIR | --to-tar "
	"FILE|-)\n"
	"                 [--path P] [--repo URL] [--json]\n",
	"restore a snapshot into a directory or a tar",
};

#define RETRIES 5		/* reads of a file that keeps changing */
/*
 * A generation read outside a farm is recorded only for a file last
 * changed this long before it was opened: the daemon may change a file
 * without raising its generation within one second of a raise (in the
 * same snapshot epoch), never later (docs/backup.md, Incremental).
 */
#define GEN_SETTLED_NS 2000000000LL
#define MAX_DEPTH TL_TREE_DEPTH	/* directory nesting we follow */
/* The longest path a restore builds (tl_int.h; drill shares it). */
#define RS_PATH_CAP TL_PATH_CAP

static int64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t
ts_ns(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec;
}

static void
iso_time(int64_t ns, char *buf, size_t cap)
{
	time_t s = (time_t)(ns / 1000000000);
	struct tm tm;

	gmtime_r(&s, &tm);
	strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---- the tenant and its repository ------------------------------------ */

struct session {
	struct tl_ctx *ctx;
	struct cf_ks_home *home;
	struct cf_ks_tenant *t;
	struct cf_secbuf *root;
	struct cf_bk_repo *repo;
	struct cf_bk_lock *lock;
	char url[PATH_MAX + 16];
};

static void
session_close(struct session *s)
{
	(void)!cf_bk_lock_release(s->lock);
	s->lock = NULL;
	cf_bk_repo_free(s->repo);
	s->repo = NULL;
	cf_secbuf_free(s->root);
	s->root = NULL;
	cf_ks_tenant_free(s->t);
	s->t = NULL;
}

/*
 * Opens the tenant, unlocks its root key and opens the repository (creating
 * it if create).  Returns an exit code; CF_EXIT_OK on success.
 */
/*
 * The URL to open: an S3 URL gets lock_until= set to the tenant's purge
 * date when it has one and the URL sets none, so Object Lock retention
 * never outlives the purge (docs/retention.md).  url itself is what is
 * recorded and shown.
 */
static void
open_url(struct session *s, char *out, size_t cap)
{
	struct cf_bk_lifecycle_eval le;

	snprintf(out, cap, "%s", s->url);
	if (strncmp(s->url, "s3://", 5) != 0 ||
	    strstr(s->url, "lock_until=") != NULL ||
	    tl_lifecycle_eval(s->home, s->t, cf_ks_now(), &le) < 0 ||
	    le.purge_at <= 0)
		return;
	if ((size_t)snprintf(out, cap, "%s%clock_until=%lld", s->url,
	    strchr(s->url, '?') != NULL ? '&' : '?', (long long)le.purge_at) >=
	    cap)
		snprintf(out, cap, "%s", s->url);
}

/*
 * Takes the repository's shared lock for a backup; an exit code, with
 * the reason on stderr.
 */
static int
lock_for_backup(struct cf_bk_repo *r, const char *url, struct cf_bk_lock **l)
{
	int rc = cf_bk_repo_lock(r, 0, NULL, l);

	if (rc == -EBUSY) {
		fprintf(stderr, "coffer: repository %s is locked exclusively "
		    "(a prune or another operation); try again later\n", url);
		return CF_EXIT_FAIL;
	}
	if (rc < 0) {
		fprintf(stderr, "coffer: locking %s: %s\n", url,
		    strerror(-rc));
		return cf_ks_exit_code(rc);
	}
	return CF_EXIT_OK;
}

/*
 * A snapshot's time: the schedules' clock (cf_ks_now: COFFER_NOW in a
 * -Dtest_clock build, so tests can simulate days of backups), in ns.  A
 * build without the test clock, or with COFFER_NOW unset, gives the
 * system clock with its nanoseconds: cf_ks_now is then time(NULL), never
 * more than a second from it.  Two snapshots of one COFFER_NOW tie and
 * are ordered by id.
 */
static int64_t
snap_time_ns(void)
{
	time_t now = cf_ks_now();
	int64_t real = now_ns(), rs = real / 1000000000;

	if ((int64_t)now >= rs - 1 && (int64_t)now <= rs + 1)
		return real;
	return (int64_t)now * 1000000000;
}

/*
 * The fields every new snapshot of a backup shares: time (when), tenant,
 * host (into host), tags, its one path, tree and the writer's counts;
 * the duration since t0 on the system clock.
 */
static void
snap_fill(struct cf_bk_snapshot *snap, int64_t when, int64_t t0,
    const unsigned char tenant[CF_KS_ID_BYTES], char *host, size_t hostcap,
    char **tags, size_t ntags, char **paths,
    const unsigned char tree[CF_BK_ID_BYTES],
    const struct cf_bk_writer_stats *ws)
{
	memset(snap, 0, sizeof(*snap));
	snap->time = when;
	memcpy(snap->tenant, tenant, CF_KS_ID_BYTES);
	if (gethostname(host, hostcap) < 0 || host[0] == '\0')
		snprintf(host, hostcap, "localhost");
	host[hostcap - 1] = '\0';
	snap->hostname = host;
	snap->tags = tags;
	snap->ntags = ntags;
	snap->paths = paths;
	snap->npaths = 1;
	memcpy(snap->tree, tree, CF_BK_ID_BYTES);
	snap->stats.new_blobs = ws->new_blobs;
	snap->stats.new_bytes = ws->new_bytes;
	snap->stats.stored_bytes = ws->stored_bytes;
	snap->stats.duration_ns = (uint64_t)(now_ns() - t0);
	/* [BK-SNAP-2] the root key versions a restore needs. */
	snap->has_key_versions = ws->has_key_versions;
	snap->nkey_versions = ws->nkey_versions;
	memcpy(snap->key_versions, ws->key_versions,
	    sizeof(snap->key_versions));
}

static unsigned s3_conns(void);

/*
 * pf_flags: CF_BK_PREFETCH_PACKS for a restore (its packs are fetched
 * during the unlock when they fit twice COFFER_S3_CONNECTIONS packs of
 * 16 MiB, what its pack cache holds anyway).
 */
static int
session_open_pf(struct session *s, struct tl_ctx *ctx, const char *name,
    const char *repo_opt, int create, int pf_flags, struct cf_ks_tenant *t)
{
	struct cf_bk_prefetch *pf = NULL;
	uint32_t kv = 0;
	unsigned conns;
	char ourl[sizeof(s->url) + 32];
	const char *stored;
	int rc;

	memset(s, 0, sizeof(*s));
	s->ctx = ctx;
	s->home = tl_home(ctx, 0);
	/* t: opened already (with keys its daemon lent), now s's. */
	s->t = t;
	rc = t != NULL ? 0 : cf_ks_tenant_open(s->home, name, &s->t);
	if (rc < 0)
		return tl_fail(rc, NULL);
	if (cf_ks_tenant_shredded(s->t)) {
		fprintf(stderr, "coffer: tenant %s was crypto-shredded: its "
		    "store and backups can no longer be read\n", name);
		return CF_EXIT_DENIED;
	}
	stored = cf_ks_tenant_get(s->t, "repo");
	tl_repo_url(s->home, s->t, repo_opt, s->url, sizeof(s->url));
	if (strncmp(s->url, "file:///", 8) != 0 &&
	    strncmp(s->url, "s3://", 5) != 0) {
		fprintf(stderr, "coffer: repository URL must be file:///PATH "
		    "or s3://BUCKET/PREFIX\n");
		return CF_EXIT_USAGE;
	}
	open_url(s, ourl, sizeof(ourl));
	/*
	 * The repository's objects are fetched while the key is unlocked
	 * (docs/s3.md, Overlapping the unlock); pf is freed before any
	 * message, so nothing fetched outlives a failed unlock.
	 */
	/* Read (and complained about) only where it matters. */
	conns = strncmp(s->url, "s3://", 5) == 0 ? s3_conns() : 4;
	/*
	 * Packs fetched during the unlock are held beside the Argon2id
	 * area (192 MiB by default): 32 MiB of them keeps the command
	 * under the 256 MiB a backup or restore may use.
	 */
	pf = tl_repo_prefetch(ourl, pf_flags, conns, (uint64_t)32 << 20);
	rc = tl_repo_unlock_pf(s->t, ourl, pf, &s->root, &kv);
	if (rc < 0) {
		cf_bk_prefetch_free(pf);
		return tl_fail(rc, name);
	}
	rc = tl_repo_open_pf(s->t, &s->repo, ourl, s->root, kv,
	    create ? CF_BK_REPO_CREATE : 0, pf);
	cf_bk_prefetch_free(pf);
	if (rc == -EBADMSG) {
		fprintf(stderr, "coffer: repository %s cannot be opened with "
		    "tenant %s's key: it belongs to another tenant, or its "
		    "config is damaged\n", s->url, name);
		return CF_EXIT_INTEGRITY;
	}
	if (rc == -EKEYREJECTED) {
		fprintf(stderr, "coffer: repository %s belongs to another "
		    "tenant than %s\n", s->url, name);
		return CF_EXIT_DENIED;
	}
	if (rc == -ENOENT) {
		fprintf(stderr, "coffer: no repository at %s (run coffer "
		    "backup %s first)\n", s->url, name);
		return CF_EXIT_FAIL;
	}
	if (rc < 0) {
		fprintf(stderr, "coffer: repository %s: %s\n", s->url,
		    tl_repo_strerror(s->url, rc));
		return cf_ks_exit_code(rc);
	}
	if (repo_opt == NULL && (stored == NULL || stored[0] == '\0')) {
		rc = cf_ks_tenant_set(s->t, "repo", s->url);
		if (rc < 0)
			return tl_fail(rc, "saving the repository URL");
	}
	return lock_for_backup(s->repo, s->url, &s->lock);
}

static int
session_open(struct session *s, struct tl_ctx *ctx, const char *name,
    const char *repo_opt, int create)
{
	return session_open_pf(s, ctx, name, repo_opt, create, 0, NULL);
}

static void
audit(struct session *s, const char *event, const char *snap,
    uint64_t files, uint64_t bytes, uint64_t damaged)
{
	struct cf_ks_audit_field f[] = {
		{ "tenant", cf_ks_tenant_name(s->t), 0 },
		{ "snapshot", snap, 0 },
		{ "files", NULL, (long long)files },
		{ "bytes", NULL, (long long)bytes },
		{ "damaged", NULL, (long long)damaged },
	};

	(void)!cf_ks_audit_append(s->home, event, f, 5);
}

/* ---- backup ----------------------------------------------------------- */

static int latest_parent(struct session *s, const char *path,
    unsigned char id[CF_BK_ID_BYTES], struct cf_bk_snapshot **snap);

/*
 * A mounted store's daemon, asked first for the tenant's root keys
 * ([CTL-8] in docs/format/ctl.md: it holds the KMS's unlock already, so
 * the backup need not run it again) and then, on the same connection,
 * for a point-in-time snapshot: the daemon's live pass (linking the
 * store, seconds for millions of files) runs on the other core while the
 * repository is opened (or, when no keys were lent, while the key is
 * unlocked; a failed unlock just drops the snapshot).
 */
struct early_snap {
	char store[PATH_MAX];
	struct cf_ks_tenant *t;		/* with the lent keys; for session */
	struct cf_fs_snapshot *h;
	char *farm;
	uint64_t pause_ns;
	int rc;
	pthread_t tid;
	int started;
};

static void *
early_snap_main(void *arg)
{
	struct early_snap *e = arg;

	e->rc = cf_fs_snapshot_take_on(e->h, &e->farm, &e->pause_ns);
	if (e->rc < 0) {
		cf_fs_ctl_close(e->h);
		e->h = NULL;
	}
	return NULL;
}

/*
 * Borrows tenant name's keys from its daemon, if its store has one, and
 * starts asking it for a snapshot (not before the unlock if that may
 * prompt for a passphrase).  e->t is the tenant for session_open_pf.
 * Only a backup of the store asks: it needs the daemon's snapshot and
 * waits for the daemon anyway (one client at a time: a backup or an
 * online re-encryption may hold it), a --stdin, --tar or --dir one does
 * not and would wait for nothing.
 */
static void
early_snap_start(struct early_snap *e, struct tl_ctx *ctx, const char *name,
    int may_prompt)
{
	struct cf_ks_home *home = tl_home(ctx, 0);
	int rc;

	memset(e, 0, sizeof(*e));
	e->rc = -ENOTCONN;
	if (home == NULL || cf_ks_tenant_open(home, name, &e->t) < 0)
		return;		/* session_open says why */
	tl_store_path(home, e->t, e->store, sizeof(e->store));
	if (cf_fs_ctl_open(e->store, &e->h) < 0)
		return;		/* not mounted: read it directly */
	/*
	 * Refused or failed: the KMS is asked as for an unmounted store.
	 * The snapshot goes on this connection only if it is in step (0
	 * or an ERR line read whole) and no passphrase prompt must come
	 * first; else on a connection of its own after the unlock.
	 */
	rc = cf_fs_ctl_borrow(e->h, e->t);
	if (rc != 0 && (rc != -EACCES || may_prompt)) {
		cf_fs_ctl_close(e->h);
		e->h = NULL;
		return;
	}
	e->started = pthread_create(&e->tid, NULL, early_snap_main, e) == 0;
	if (!e->started) {
		cf_fs_ctl_close(e->h);
		e->h = NULL;
	}
}

/*
 * 1 if unlocking may ask for a passphrase on the terminal: the snapshot
 * then waits until after the unlock, so that a prompt left unanswered
 * holds no farm (and no copy-on-write) and the snapshot's instant is not
 * before it.  No terminal, or COFFER_PASSPHRASE_FILE: no prompt.
 */
static int
unlock_may_prompt(void)
{
	const char *env = getenv("COFFER_PASSPHRASE_FILE");
	int fd;

	if (env != NULL && env[0] != '\0')
		return 0;
	fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return 0;
	close(fd);
	return 1;
}

/* Waits for the answer; the snapshot is then the caller's. */
static void
early_snap_join(struct early_snap *e)
{
	if (e->started)
		pthread_join(e->tid, NULL);
	e->started = 0;
}

/* A hard-linked inode seen in the store: its backing identity (group 0:
 * a free slot of the table). */
struct hlink {
	dev_t dev;
	ino_t ino;
	uint64_t group;
};

struct bk {
	struct cf_bk_writer *w;
	struct hlink *links;
	size_t nlinks, caplinks;
	uint64_t next_group;
	int live;
	/*
	 * The progress line (tl_progress): files and bytes so far; inflight
	 * is what the file being read (or the whole tar, whose files are
	 * counted at its end: pfiles) has passed to the chunker.  Totals
	 * come from the scanner (store, --dir) or the tar's input position
	 * against its size.
	 */
	struct tl_progress prog;
	uint64_t inflight, pfiles;
	struct scan *scan;
	struct archive *tar_in;
	uint64_t tar_size;
	/*
	 * The farm's daemon raises generations after each snapshot
	 * (cf_fs_snapshot_gens): every file's generation in the farm can be
	 * recorded.  Else only those of files settled for GEN_SETTLED_NS.
	 */
	int farm_gens;
	int64_t parent_time;	/* start of the parent snapshot's backup */
	uint64_t reused;	/* files whose parent blob list was reused */
	uint64_t reused_gen;	/* of those, found unchanged by generation */
	uint64_t read_files;	/* regular files read from the store */
	uint64_t read_bytes;	/* plaintext bytes read (retries included) */
	uint64_t files, dirs, bytes, retries;
	uint64_t changed, damaged, failed;
};

/* A regular file whose blob ids the writer's workers are computing. */
struct dir_pend {
	size_t node;			/* index in dir_nodes.n */
	struct cf_bk_wfile *wf;
};

/*
 * What a directory's nodes own until its tree is encoded.  The items of
 * files read are taken from the writer (dir_settle) only before the
 * tree is encoded, so the walk reads on while the workers hash.
 */
struct dir_nodes {
	struct cf_bk_node *n;
	size_t count, cap;
	void **mem;
	size_t nmem, capmem;
	struct cf_bk_writer *w;		/* of the pending files */
	struct dir_pend *pend;
	size_t npend, cappend;
};

static int
keep(struct dir_nodes *dn, void *p)
{
	void **m;

	if (p == NULL)
		return -ENOMEM;
	if (dn->nmem == dn->capmem) {
		m = realloc(dn->mem, (dn->capmem * 2 + 16) * sizeof(*m));
		if (m == NULL) {
			free(p);
			return -ENOMEM;
		}
		dn->mem = m;
		dn->capmem = dn->capmem * 2 + 16;
	}
	dn->mem[dn->nmem++] = p;
	return 0;
}

static void
dir_nodes_free(struct dir_nodes *dn)
{
	size_t i;

	for (i = 0; i < dn->npend; i++)
		cf_bk_writer_file_free(dn->w, dn->pend[i].wf);
	free(dn->pend);
	for (i = 0; i < dn->nmem; i++)
		free(dn->mem[i]);
	free(dn->mem);
	free(dn->n);
	memset(dn, 0, sizeof(*dn));
}

/*
 * Notes that node (the next one counted) gets its items from wf, which
 * is dn's from now on (freed on failure).
 */
static int
dir_pend_add(struct dir_nodes *dn, size_t node, struct cf_bk_wfile *wf)
{
	struct dir_pend *p;

	if (dn->npend == dn->cappend) {
		p = realloc(dn->pend, (dn->cappend * 2 + 16) * sizeof(*p));
		if (p == NULL) {
			cf_bk_writer_file_free(dn->w, wf);
			return -ENOMEM;
		}
		dn->pend = p;
		dn->cappend = dn->cappend * 2 + 16;
	}
	dn->pend[dn->npend].node = node;
	dn->pend[dn->npend].wf = wf;
	dn->npend++;
	return 0;
}

/* Takes every pending file's items into its node, before the tree. */
static int
dir_settle(struct dir_nodes *dn)
{
	struct cf_bk_item *items;
	struct cf_bk_node *n;
	size_t i, nitems;
	int rc = 0;

	for (i = 0; i < dn->npend; i++) {
		n = &dn->n[dn->pend[i].node];
		rc = cf_bk_writer_file_take(dn->w, dn->pend[i].wf, &items,
		    &nitems);
		dn->pend[i].wf = NULL;
		if (rc == 0 && items != NULL)
			rc = keep(dn, items);
		if (rc < 0)
			break;
		n->items = items;
		n->nitems = nitems;
	}
	for (i++; i < dn->npend; i++)
		cf_bk_writer_file_free(dn->w, dn->pend[i].wf);
	dn->npend = 0;
	return rc;
}

static struct cf_bk_node *
new_node(struct dir_nodes *dn)
{
	struct cf_bk_node *n;

	if (dn->count == dn->cap) {
		n = realloc(dn->n, (dn->cap * 2 + 16) * sizeof(*n));
		if (n == NULL)
			return NULL;
		dn->n = n;
		dn->cap = dn->cap * 2 + 16;
	}
	n = &dn->n[dn->count];
	memset(n, 0, sizeof(*n));
	return n;
}

static void
fill_meta(struct cf_bk_node *n, const struct stat *st)
{
	n->mode = st->st_mode & 07777;
	n->uid = st->st_uid;
	n->gid = st->st_gid;
	n->atime = ts_ns(&st->st_atim);
	n->mtime = ts_ns(&st->st_mtim);
	n->ctime = ts_ns(&st->st_ctim);
}

/*
 * In a daemon's farm every object's ctime is the farm's doing: a file or
 * symlink is a new hard link of the live one (made at each snapshot, and
 * its removal at release changes the live one's ctime again), a
 * directory a fresh copy.  Recorded as read, it would differ in every
 * backup, so every tree would be new each time (a mounted tenant of
 * 16 000 unchanged files wrote 2.2 MiB of trees per backup) although
 * nothing changed.  A directory, symlink, special or empty file whose
 * type, mode, owner and mtime equal the parent's node keeps the parent's
 * ctime; a regular file with content keeps it when reused by its
 * generation (reuse_file).
 * Only the reuse rule reads ctimes, and only a live file's: the live
 * inode's own ctime moves at every farm link, so it never equals one
 * carried over.
 */
static void
farm_ctime(const struct bk *b, struct cf_bk_node *n,
    const struct cf_bk_node *pn)
{
	if (b->live == 2 && pn != NULL && pn->type == n->type &&
	    (n->type != CF_BK_NODE_FILE || (n->size == 0 && pn->size == 0 &&
	    pn->nitems == 0)) && pn->mode == n->mode &&
	    pn->uid == n->uid && pn->gid == n->gid && pn->mtime == n->mtime)
		n->ctime = pn->ctime;
}

/* The slot of (dev, ino) in the open-addressed table b->links. */
static size_t
link_slot(const struct hlink *t, size_t cap, dev_t dev, ino_t ino)
{
	uint64_t h = ((uint64_t)ino ^ ((uint64_t)dev << 32)) *
	    UINT64_C(0x9e3779b97f4a7c15);
	size_t i = (size_t)(h >> 32) & (cap - 1);

	while (t[i].group != 0 && (t[i].ino != ino || t[i].dev != dev))
		i = (i + 1) & (cap - 1);
	return i;
}

/*
 * The hard-link group of a file with more than one link (0: none): files
 * of one inode share it.  A hash table, so a tree of many hard links
 * costs no quadratic search.
 */
static uint64_t
link_group(struct bk *b, const struct stat *st)
{
	struct hlink *t;
	size_t i, cap;

	if (st->st_nlink < 2)
		return 0;
	if ((b->nlinks + 1) * 2 > b->caplinks) {
		cap = b->caplinks ? b->caplinks * 2 : 256;
		t = calloc(cap, sizeof(*t));
		if (t == NULL)
			return 0;	/* stored as separate files */
		for (i = 0; i < b->caplinks; i++)
			if (b->links[i].group != 0)
				t[link_slot(t, cap, b->links[i].dev,
				    b->links[i].ino)] = b->links[i];
		free(b->links);
		b->links = t;
		b->caplinks = cap;
	}
	i = link_slot(b->links, b->caplinks, st->st_dev, st->st_ino);
	if (b->links[i].group == 0) {
		b->links[i].dev = st->st_dev;
		b->links[i].ino = st->st_ino;
		b->links[i].group = ++b->next_group;
		b->nlinks++;
	}
	return b->links[i].group;
}

/* A FIFO, socket or device node gets its type (and rdev): 1, else 0. */
static int
special_type(struct cf_bk_node *n, const struct stat *st)
{
	if (S_ISFIFO(st->st_mode))
		n->type = CF_BK_NODE_FIFO;
	else if (S_ISSOCK(st->st_mode))
		n->type = CF_BK_NODE_SOCKET;
	else if (S_ISCHR(st->st_mode))
		n->type = CF_BK_NODE_CHR;
	else if (S_ISBLK(st->st_mode))
		n->type = CF_BK_NODE_BLK;
	else
		return 0;
	if (S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode))
		n->rdev = st->st_rdev;
	return 1;
}

/* A non-directory node's metadata and hard-link group; one more file. */
static void
count_node(struct bk *b, struct cf_bk_node *n, const struct stat *st)
{
	fill_meta(n, st);
	n->link_group = link_group(b, st);
	b->files++;
}

/*
 * The user.* xattrs of the store entry name of d (path, for messages)
 * into n.  One that does not authenticate (name or value) is left out,
 * counted in b->damaged and named: on a line of its own, as every message
 * of the walk (the progress line is cleared first).  0 or -errno.
 */
static int
add_xattrs(struct bk *b, struct dir_nodes *dn, struct cf_bk_node *n,
    const struct cf_fs_rdir *d, const char *name, const char *path)
{
	struct cf_bk_xattr *xa = NULL;
	char *list = NULL;
	size_t len = 0, bad = 0, cnt = 0, i, off;
	unsigned char *val;
	size_t vlen;
	int rc;

	rc = cf_fs_rdir_xattr_list(d, name, &list, &len, &bad);
	if (rc < 0)
		return rc == -ENOTSUP ? 0 : rc;
	if (list == NULL)
		goto done;
	rc = keep(dn, list);
	if (rc < 0)
		return rc;
	for (off = 0; off < len; off += strlen(list + off) + 1)
		cnt++;
	xa = calloc(cnt, sizeof(*xa));
	rc = keep(dn, xa);
	if (rc < 0)
		return rc;
	for (off = 0, i = 0; off < len; off += strlen(list + off) + 1) {
		rc = cf_fs_rdir_xattr_get(d, name, list + off, &val, &vlen);
		if (rc == -ENODATA)
			continue;	/* removed meanwhile */
		if (rc == -EBADMSG || rc == -EPROTO) {
			bad++;
			continue;
		}
		if (rc < 0)
			return rc;
		rc = keep(dn, val);
		if (rc < 0)
			return rc;
		xa[i].name = list + off;
		xa[i].value = val;
		xa[i].value_len = vlen;
		i++;
	}
	n->xattrs = xa;
	n->nxattrs = i;
done:
	if (bad > 0) {
		tl_progress_end(&b->prog);
		fprintf(stderr, "coffer: %s: %zu extended attribute%s damaged "
		    "in the store; left out of the snapshot\n", path, bad,
		    bad == 1 ? "" : "s");
		b->damaged += bad;
	}
	return 0;
}

/*
 * add_stream's reader over [pos, end) of a store file (f) or of a plain
 * file (fd, with f NULL).
 */
struct src_rd {
	struct cf_fs_rfile *f;
	int fd;
	off_t pos, end;
	int err;
	struct bk *b;		/* read_bytes, inflight, progress */
};

static void progress(struct bk *b);

static int
src_read(void *arg, unsigned char *buf, size_t cap, size_t *got)
{
	struct src_rd *r = arg;
	struct cf_fs_rrange bad;
	ssize_t n;

	*got = 0;
	if (r->pos >= r->end)
		return 0;
	if ((off_t)cap > r->end - r->pos)
		cap = (size_t)(r->end - r->pos);
	if (r->f != NULL) {
		n = cf_fs_rfile_pread(r->f, buf, cap, r->pos, &bad);
	} else {
		do {
			n = pread(r->fd, buf, cap, r->pos);
		} while (n < 0 && errno == EINTR);
		if (n < 0)
			n = -errno;
	}
	if (n == 0)
		n = -EAGAIN;	/* shorter than when we looked: changed */
	if (n < 0) {
		r->err = (int)n;
		return (int)n;
	}
	r->pos += n;
	r->b->read_bytes += (uint64_t)n;
	r->b->inflight += (uint64_t)n;
	progress(r->b);
	*got = (size_t)n;
	return 0;
}

/* The next data range [*doff, *dend) at or after off, cut at size. */
static int
src_next_data(const struct src_rd *r, off_t off, off_t size, off_t *doff,
    off_t *dend)
{
	int rc;

	if (r->f != NULL) {
		rc = cf_fs_rfile_next_data(r->f, off, doff, dend);
		if (rc == -ENXIO)
			*doff = *dend = size;	/* a hole to the end */
		else if (rc < 0)
			return rc;
	} else {
		*doff = lseek(r->fd, off, SEEK_DATA);
		if (*doff < 0 && errno == ENXIO) {
			*doff = *dend = size;	/* a hole to the end */
		} else if (*doff < 0) {
			*doff = off;	/* no SEEK_DATA here: all data */
			*dend = size;
		} else {
			*dend = *doff < size ? lseek(r->fd, *doff, SEEK_HOLE) :
			    size;
			if (*dend < 0)
				*dend = size;
		}
	}
	if (*doff > size)
		*doff = size;
	if (*dend > size)
		*dend = size;
	return 0;
}

static int
push_items(struct cf_bk_item **items, size_t *n, size_t *cap,
    const struct cf_bk_item *add, size_t nadd)
{
	struct cf_bk_item *p;

	if (*n + nadd > *cap) {
		p = realloc(*items, (*n + nadd + 16) * sizeof(*p));
		if (p == NULL)
			return -ENOMEM;
		*items = p;
		*cap = *n + nadd + 16;
	}
	memcpy(*items + *n, add, nadd * sizeof(*add));
	*n += nadd;
	return 0;
}

static int
push_hole(struct cf_bk_item **items, size_t *n, size_t *cap, uint64_t len)
{
	struct cf_bk_item h;

	if (len == 0)
		return 0;
	if (*n > 0 && (*items)[*n - 1].hole > 0) {
		(*items)[*n - 1].hole += len;
		return 0;
	}
	memset(&h, 0, sizeof(h));
	h.hole = len;
	return push_items(items, n, cap, &h, 1);
}

/*
 * Reads one open file, of the store (f) or plain (fd, f NULL), into
 * content items: data ranges through the chunker, holes as hole items.
 * On success *wfp holds them (ids still being computed: take with
 * cf_bk_writer_file_take, or free).  -EAGAIN if it changed while read.
 */
static int
read_file(struct bk *b, struct cf_fs_rfile *f, int fd, off_t size,
    struct cf_bk_wfile **wfp)
{
	struct cf_bk_wfile *wf = NULL;
	struct src_rd rd = { f, fd, 0, 0, 0, b };
	off_t off = 0, doff, dend;
	uint64_t got;
	int rc;

	*wfp = NULL;
	b->inflight = 0;	/* a read again starts over */
	rc = cf_bk_writer_file_new(b->w, &wf);
	if (rc < 0)
		return rc;
	while (off < size) {
		rc = src_next_data(&rd, off, size, &doff, &dend);
		if (rc < 0)
			goto out;
		rc = cf_bk_writer_file_hole(b->w, wf, (uint64_t)(doff - off));
		if (rc < 0)
			goto out;
		off = doff;
		if (dend <= doff)
			continue;
		rd.pos = doff;
		rd.end = dend;
		rd.err = 0;
		rc = cf_bk_writer_file_add(b->w, wf, src_read, &rd, &got);
		if (rc < 0) {
			if (rd.err < 0)
				rc = rd.err;
			goto out;
		}
		if ((off_t)got != dend - doff) {
			rc = -EAGAIN;
			goto out;
		}
		off = dend;
	}
	*wfp = wf;
	wf = NULL;
	rc = 0;
out:
	cf_bk_writer_file_free(b->w, wf);
	return rc;
}

/*
 * The progress line's totals for a store or --dir backup: a thread walks
 * the same tree while the backup reads it (restic runs such a scanner
 * too), counting what the backup will count: non-directories, and the
 * sizes of regular files.  It only lists and stats, so it finishes long
 * before the backup on any tree whose files hold data (10 000 files:
 * docs/backup.md, Progress).  Only when the progress line is on.  The
 * counts are the thread's until done is set (release; read with
 * acquire); stop asks it to end early.
 */
struct scan {
	pthread_t tid;
	int dirfd;			/* --dir: its own descriptor */
	struct cf_fs_reader *rd;	/* the store: shared (thread-safe) */
	uint64_t files, bytes;
	int done, stop;			/* __atomic */
};

static int
scan_stopped(struct scan *sc)
{
	return __atomic_load_n(&sc->stop, __ATOMIC_RELAXED);
}

/* Counts below dfd (closed here). */
static void
scan_plain(struct scan *sc, int dfd, int depth)
{
	struct dirent *de;
	struct stat st;
	DIR *d;
	int fd;

	d = fdopendir(dfd);
	if (d == NULL) {
		close(dfd);
		return;
	}
	while (!scan_stopped(sc) && (de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (!S_ISDIR(st.st_mode)) {
			sc->files++;
			if (S_ISREG(st.st_mode))
				sc->bytes += (uint64_t)st.st_size;
			continue;
		}
		if (depth >= MAX_DEPTH)
			continue;
		fd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY |
		    O_NOFOLLOW | O_CLOEXEC);
		if (fd >= 0)
			scan_plain(sc, fd, depth + 1);
	}
	closedir(d);
}

static void
scan_store(struct scan *sc, struct cf_fs_rdir *d, int depth)
{
	const struct cf_fs_rentry *e;
	struct cf_fs_rdir *sub;

	while (!scan_stopped(sc) && cf_fs_rdir_next(d, &e) > 0) {
		if (e->err != 0)
			continue;
		if (!S_ISDIR(e->st.st_mode)) {
			sc->files++;
			if (S_ISREG(e->st.st_mode))
				sc->bytes += (uint64_t)e->st.st_size;
			continue;
		}
		if (depth >= MAX_DEPTH || cf_fs_rdir_open(&sub, d, e->name) < 0)
			continue;
		scan_store(sc, sub, depth + 1);
		cf_fs_rdir_free(sub);
	}
}

static void *
scan_main(void *arg)
{
	struct scan *sc = arg;
	struct cf_fs_rdir *root;

	/* Second to the backup itself on a busy machine (Linux: per thread). */
	(void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
	if (sc->rd != NULL) {
		if (cf_fs_rdir_open_root(&root, sc->rd) == 0) {
			scan_store(sc, root, 0);
			cf_fs_rdir_free(root);
		}
	} else {
		scan_plain(sc, sc->dirfd, 0);	/* closes it */
		sc->dirfd = -1;
	}
	__atomic_store_n(&sc->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/*
 * Starts the scanner of the store read through rd, or of the directory
 * dfd (duplicated), when the progress line is on.  Without it (or if the
 * thread cannot start) the line has no totals.
 */
static void
scan_start(struct bk *b, struct cf_fs_reader *rd, int dfd)
{
	struct scan *sc;

	if (!b->prog.on)
		return;
	sc = calloc(1, sizeof(*sc));
	if (sc == NULL)
		return;
	sc->rd = rd;
	sc->dirfd = -1;
	if (rd == NULL) {
		/* Its own open file: a directory stream has an offset. */
		sc->dirfd = openat(dfd, ".", O_RDONLY | O_DIRECTORY |
		    O_CLOEXEC);
		if (sc->dirfd < 0) {
			free(sc);
			return;
		}
	}
	if (pthread_create(&sc->tid, NULL, scan_main, sc) != 0) {
		if (sc->dirfd >= 0)
			close(sc->dirfd);
		free(sc);
		return;
	}
	b->scan = sc;
}

/* Stops and joins the scanner (before the reader it uses is freed). */
static void
scan_stop(struct bk *b)
{
	if (b->scan == NULL)
		return;
	__atomic_store_n(&b->scan->stop, 1, __ATOMIC_RELAXED);
	pthread_join(b->scan->tid, NULL);
	free(b->scan);
	b->scan = NULL;
}

/* 1 and the totals once the scanner has finished, else 0. */
static int
scan_totals(struct scan *sc, uint64_t *files, uint64_t *bytes)
{
	if (!__atomic_load_n(&sc->done, __ATOMIC_ACQUIRE))
		return 0;
	*files = sc->files;
	*bytes = sc->bytes;
	return 1;
}

/*
 * The backup's progress line (tl_progress; shared with restore's).  With
 * the scanner's totals (once it has finished) the share of bytes done
 * and the time left; with a tar file, the input read against its size.
 */
static void
progress(struct bk *b)
{
	uint64_t files, bytes, tf = 0, tb = 0, done, total = 0;

	if (!tl_progress_due(&b->prog))
		return;
	files = b->files + b->pfiles;
	bytes = b->bytes + b->inflight;
	if (b->scan != NULL && scan_totals(b->scan, &tf, &tb)) {
		/* Grown since it counted: the counts so far are the floor. */
		if (tf < files)
			tf = files;
		if (tb < bytes)
			tb = bytes;
		total = tb;
	}
	done = bytes;
	if (b->tar_in != NULL && b->tar_size > 0) {
		done = (uint64_t)archive_filter_bytes(b->tar_in, -1);
		total = b->tar_size;
	}
	tl_progress_show(&b->prog, files, tf, bytes, tb, done, total);
}

/*
 * One regular file: read, check, retry while it changes.  1 if the node
 * was filled (its items come from *wfp: dir_pend_add), 0 if the file is
 * left out (vanished, damaged, kept changing; counted), -errno on a
 * failure that ends the backup.
 */
static int
backup_file(struct bk *b, struct cf_bk_node *n, const struct cf_fs_rdir *d,
    const char *name, const char *path, struct cf_bk_wfile **wfp)
{
	struct cf_fs_rfile *f = NULL;
	struct cf_bk_wfile *wf = NULL;
	unsigned char fid[CF_KS_ID_BYTES];
	struct stat st;
	uint64_t gen = 0;
	int64_t t_open;
	int rc, attempt;

	for (attempt = 0;; attempt++) {
		t_open = now_ns();
		rc = cf_fs_rfile_open(&f, d, name);
		if (rc == -ENOENT)
			return 0;	/* removed while we walked */
		if (rc < 0)
			break;
		cf_fs_rfile_stat(f, &st);
		/*
		 * The generation before the content, so the check after the
		 * read covers both (raising it changes the ctime).  Recorded
		 * for the next backup's change detection only where it
		 * names this content and no other (reuse_file): in a farm
		 * whose daemon raises after each snapshot, or for a file
		 * settled for GEN_SETTLED_NS.  Never in another farm: its
		 * ctime is the link's, not the file's last change.
		 */
		if (cf_fs_rfile_gen(f, fid, &gen) < 0 || (!b->farm_gens &&
		    (b->live == 2 ||
		    t_open - ts_ns(&st.st_ctim) < GEN_SETTLED_NS)))
			gen = 0;
		rc = read_file(b, f, -1, st.st_size, &wf);
		if (rc == 0)
			rc = cf_fs_rfile_check(f);
		cf_fs_rfile_free(f);
		f = NULL;
		if (rc != -EAGAIN)
			break;
		cf_bk_writer_file_free(b->w, wf);
		wf = NULL;
		if (attempt + 1 >= RETRIES) {
			tl_progress_end(&b->prog);
			fprintf(stderr, "coffer: %s kept changing while it "
			    "was read (%d tries); left out of the snapshot\n",
			    path, RETRIES);
			b->changed++;
			return 0;
		}
		b->retries++;
		/*
		 * The reader calls a file changed within 50 ms of the open
		 * "racy" (its times cannot be trusted yet): back off past
		 * that, 25, 50, 100, 200 ms.
		 */
		usleep(25000U << attempt);
	}
	if (rc == -EBADMSG || rc == -EPROTO || rc == -EIO) {
		tl_progress_end(&b->prog);
		fprintf(stderr, "coffer: %s: damaged in the store (%s); left "
		    "out of the snapshot\n", path, strerror(-rc));
		cf_bk_writer_file_free(b->w, wf);
		b->damaged++;
		return 0;
	}
	if (rc < 0) {
		cf_bk_writer_file_free(b->w, wf);
		return rc;
	}
	*wfp = wf;
	n->type = CF_BK_NODE_FILE;
	fill_meta(n, &st);
	n->size = (uint64_t)st.st_size;
	n->link_group = link_group(b, &st);
	n->gen = gen;
	if (gen != 0) {
		memcpy(n->file_id, fid, CF_BK_FILE_ID_BYTES);
		n->ino = (uint64_t)st.st_ino;
	}
	b->files++;
	b->read_files++;
	b->bytes += n->size;
	b->inflight = 0;
	progress(b);
	return 1;
}

/*
 * Change detection against the parent snapshot (docs/backup.md,
 * Incremental backups): the node of the same name in the parent's tree
 * of this directory, or NULL.  The parent's nodes are sorted by name
 * (bytewise, shorter first on a tie), as the tree decoder leaves them.
 */
static const struct cf_bk_node *
parent_node(const struct cf_bk_tree *pt, const char *name)
{
	size_t lo = 0, hi, mid, nl = strlen(name), ml;
	int c;

	if (pt == NULL)
		return NULL;
	hi = pt->count;
	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		ml = strlen(pt->nodes[mid].name);
		c = memcmp(name, pt->nodes[mid].name, nl < ml ? nl : ml);
		if (c == 0)
			c = nl < ml ? -1 : nl > ml;
		if (c == 0)
			return &pt->nodes[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

/*
 * Reuses the parent's content of a regular file without reading it
 * (docs/backup.md, Incremental backups) when its size (plaintext) and
 * mtime (ns) equal the parent node's, every blob of the parent's list is
 * still in the index with lengths adding up to the size, and either
 *
 *  - ctime: the backing file's ctime (ns) equals the parent's and the
 *    parent saw it settled (before the parent backup started).  ctime
 *    cannot be set by any user and changes on every write, truncate,
 *    rename, link, chmod and xattr change of the backing file.  A farm's
 *    links change it, so this holds only between backups of an unmounted
 *    store; or
 *  - generation: the parent recorded the file's store identity (file id
 *    and generation, [FS-GEN-1], and the backing inode number) and the
 *    store's backing file (the farm's, for a mounted tenant) has the same
 *    one now, the generation authenticated under the tenant's keys.  The daemon raises the generation before every change
 *    that is not within a second of the previous raise in the same
 *    snapshot epoch, and a recorded generation is one no later change
 *    shared (backup_file), so an equal generation of the same file id is
 *    the content the parent read.  A file renamed over the name, or
 *    another inode linked there, has another file id; a copy of the
 *    store put back (cp, rsync, tar, a restore) has other inodes.
 *
 * 1 if n was filled, 2 if so by ctime (its xattrs are then the parent's
 * too: a change of the store's xattrs changes the backing file's ctime,
 * as they are the backing file's own, [FS-XATTR-1]), 0 to read the
 * file, -errno.
 */
static int
reuse_file(struct bk *b, struct dir_nodes *dn, struct cf_bk_node *n,
    const struct cf_bk_node *pn, const struct stat *st,
    const struct cf_fs_rdir *d, const char *name)
{
	struct cf_bk_item *items = NULL;
	unsigned char fid[CF_KS_ID_BYTES];
	uint64_t total = 0, ulen, blobs = 0, gen = 0;
	int by_ctime, rc;
	size_t i;

	if (pn == NULL || pn->type != CF_BK_NODE_FILE ||
	    pn->size != (uint64_t)st->st_size ||
	    pn->mtime != ts_ns(&st->st_mtim))
		return 0;
	by_ctime = pn->ctime == ts_ns(&st->st_ctim) &&
	    pn->ctime < b->parent_time;
	if (!by_ctime && pn->gen == 0)
		return 0;
	for (i = 0; i < pn->nitems; i++) {
		if (pn->items[i].hole > 0) {
			total += pn->items[i].hole;
			continue;
		}
		if (!cf_bk_writer_data_blob(b->w, pn->items[i].id, &ulen))
			return 0;	/* gone or damaged: read it again */
		total += ulen;
		blobs++;
	}
	if (total != pn->size)
		return 0;
	if (!by_ctime) {
		/* Any error (none, forged, unreadable): read the file. */
		if (pn->ino != (uint64_t)st->st_ino ||
		    cf_fs_rdir_gen(d, name, fid, &gen) < 0 || gen != pn->gen ||
		    memcmp(fid, pn->file_id, CF_BK_FILE_ID_BYTES) != 0)
			return 0;
		b->reused_gen++;
	}
	if (pn->nitems > 0) {
		items = malloc(pn->nitems * sizeof(*items));
		rc = keep(dn, items);
		if (rc < 0)
			return rc;
		memcpy(items, pn->items, pn->nitems * sizeof(*items));
	}
	n->type = CF_BK_NODE_FILE;
	fill_meta(n, st);
	n->size = pn->size;
	n->items = items;
	n->nitems = pn->nitems;
	n->link_group = link_group(b, st);
	/* A farm's ctime is its link's (farm_ctime): the parent's stays. */
	if (!by_ctime && b->live == 2)
		n->ctime = pn->ctime;
	/* Unchanged since the parent: its identity still names this content. */
	n->gen = pn->gen;
	memcpy(n->file_id, pn->file_id, CF_BK_FILE_ID_BYTES);
	n->ino = (uint64_t)st->st_ino;
	cf_bk_writer_count_reused(b->w, blobs, pn->size);
	b->files++;
	b->bytes += n->size;
	b->reused++;
	progress(b);
	return by_ctime ? 2 : 1;
}

/* The parent node's xattrs into n (kept in dn).  0 or -ENOMEM. */
static int
parent_xattrs(struct dir_nodes *dn, struct cf_bk_node *n,
    const struct cf_bk_node *pn)
{
	struct cf_bk_xattr *xa;
	unsigned char *val;
	char *name;
	size_t i;
	int rc;

	if (pn->nxattrs == 0)
		return 0;
	xa = calloc(pn->nxattrs, sizeof(*xa));
	rc = keep(dn, xa);
	if (rc < 0)
		return rc;
	for (i = 0; i < pn->nxattrs; i++) {
		name = strdup(pn->xattrs[i].name);
		rc = keep(dn, name);
		if (rc < 0)
			return rc;
		val = malloc(pn->xattrs[i].value_len ?
		    pn->xattrs[i].value_len : 1);
		rc = keep(dn, val);
		if (rc < 0)
			return rc;
		memcpy(val, pn->xattrs[i].value, pn->xattrs[i].value_len);
		xa[i].name = name;
		xa[i].value = val;
		xa[i].value_len = pn->xattrs[i].value_len;
	}
	n->xattrs = xa;
	n->nxattrs = pn->nxattrs;
	return 0;
}

static int backup_dir(struct bk *b, struct cf_fs_rdir *d, const char *path,
    int depth, const unsigned char *parent, unsigned char id[CF_BK_ID_BYTES]);

static int
backup_entry(struct bk *b, struct dir_nodes *dn, struct cf_fs_rdir *d,
    const struct cf_fs_rentry *e, const char *path, int depth,
    const struct cf_bk_tree *pt)
{
	const struct cf_bk_node *pn = parent_node(pt, e->name);
	struct cf_bk_node *n;
	struct cf_bk_wfile *wf = NULL;
	struct cf_fs_rdir *sub = NULL;
	struct stat st;
	char *name, *target;
	int rc;

	n = new_node(dn);
	if (n == NULL)
		return -ENOMEM;
	name = strdup(e->name);
	rc = keep(dn, name);
	if (rc < 0)
		return rc;
	n->name = name;
	st = e->st;
	if (S_ISREG(st.st_mode)) {
		rc = reuse_file(b, dn, n, pn, &st, d, name);
		if (rc == 2) {
			/* Unchanged by ctime: no need to open it at all. */
			rc = parent_xattrs(dn, n, pn);
			if (rc < 0)
				return rc;
			dn->count++;
			return 0;
		}
		if (rc == 0)
			rc = backup_file(b, n, d, name, path, &wf);
		if (rc <= 0)
			return rc;
	} else if (S_ISDIR(st.st_mode)) {
		if (depth >= MAX_DEPTH) {
			tl_progress_end(&b->prog);
			fprintf(stderr, "coffer: %s: nested too deep; left "
			    "out\n", path);
			b->failed++;
			return 0;
		}
		rc = cf_fs_rdir_open(&sub, d, name);
		if (rc == -ENOENT)
			return 0;
		if (rc < 0) {
			tl_progress_end(&b->prog);
			fprintf(stderr, "coffer: %s: %s; left out\n", path,
			    strerror(-rc));
			b->damaged++;
			return 0;
		}
		rc = cf_fs_rdir_stat(sub, NULL, &st);
		if (rc == 0)
			rc = backup_dir(b, sub, path, depth + 1,
			    pn != NULL && pn->type == CF_BK_NODE_DIR ?
			    pn->subtree : NULL, n->subtree);
		cf_fs_rdir_free(sub);
		if (rc < 0)
			return rc;
		n->type = CF_BK_NODE_DIR;
		fill_meta(n, &st);
		b->dirs++;
	} else if (S_ISLNK(st.st_mode)) {
		target = malloc(CF_FS_RLINK_MAX + 1);
		rc = keep(dn, target);
		if (rc < 0)
			return rc;
		rc = cf_fs_rdir_readlink(d, name, target, CF_FS_RLINK_MAX + 1);
		if (rc == -ENOENT || rc == -EINVAL)
			return 0;
		if (rc < 0) {
			tl_progress_end(&b->prog);
			fprintf(stderr, "coffer: %s: damaged symlink (%s); "
			    "left out\n", path, strerror(-rc));
			b->damaged++;
			return 0;
		}
		if (target[0] == '\0')
			return 0;
		n->type = CF_BK_NODE_SYMLINK;
		n->target = target;
		count_node(b, n, &st);
	} else {
		if (!special_type(n, &st))
			return 0;
		count_node(b, n, &st);
	}
	rc = add_xattrs(b, dn, n, d, name, path);
	if (rc < 0 && rc != -ENOENT) {
		cf_bk_writer_file_free(b->w, wf);
		return rc;
	}
	if (wf != NULL) {
		rc = dir_pend_add(dn, dn->count, wf);
		if (rc < 0)
			return rc;
	}
	farm_ctime(b, n, pn);
	dn->count++;
	return 0;
}

static int
backup_dir(struct bk *b, struct cf_fs_rdir *d, const char *path, int depth,
    const unsigned char *parent, unsigned char id[CF_BK_ID_BYTES])
{
	struct cf_bk_tree *pt = NULL;
	struct dir_nodes dn;
	struct cf_bk_tree tree;
	const struct cf_fs_rentry *e;
	char *sub;
	size_t subcap;
	int rc;

	memset(&dn, 0, sizeof(dn));
	dn.w = b->w;
	/*
	 * The parent snapshot's tree of this directory, loaded as the walk
	 * reaches it (one directory at a time).  Unreadable: every file is
	 * read, nothing else changes.
	 */
	if (parent != NULL && cf_bk_writer_tree_load(b->w, parent, &pt) < 0)
		pt = NULL;
	subcap = strlen(path) + NAME_MAX + 2;	/* names: <= 255 bytes */
	sub = malloc(subcap);
	if (sub == NULL) {
		cf_bk_tree_free(pt);
		return -ENOMEM;
	}
	for (;;) {
		rc = cf_fs_rdir_next(d, &e);
		if (rc <= 0)
			break;
		if (e->err != 0) {
			if (e->err == -ENOENT)
				continue;
			tl_progress_end(&b->prog);
			fprintf(stderr, "coffer: %s/%s: damaged entry (%s); "
			    "left out\n", path, e->stored, strerror(-e->err));
			b->damaged++;
			continue;
		}
		snprintf(sub, subcap, "%s/%s", path, e->name);
		rc = backup_entry(b, &dn, d, e, sub, depth, pt);
		if (rc < 0)
			break;
	}
	if (rc == 0)
		rc = dir_settle(&dn);
	if (rc < 0) {
		tl_progress_end(&b->prog);
		fprintf(stderr, "coffer: %s: %s\n", path[0] ? path : "/",
		    strerror(-rc));
		goto out;
	}
	tree.nodes = dn.n;
	tree.count = dn.count;
	tree.mem_ = NULL;
	rc = cf_bk_writer_add_tree(b->w, &tree, id);
	if (rc < 0) {
		tl_progress_end(&b->prog);
		fprintf(stderr, "coffer: %s: storing its tree: %s\n",
		    path[0] ? path : "/", strerror(-rc));
	}
out:
	free(sub);
	dir_nodes_free(&dn);
	cf_bk_tree_free(pt);
	return rc;
}

/* add_stream's reader over a file descriptor. */
struct fd_rd {
	int fd;
	struct bk *b;		/* inflight, progress */
};

static int
fd_read(void *arg, unsigned char *buf, size_t cap, size_t *got)
{
	struct fd_rd *r = arg;
	ssize_t n;

	*got = 0;
	for (;;) {
		n = read(r->fd, buf, cap);
		if (n >= 0)
			break;
		if (errno != EINTR)
			return -errno;
	}
	*got = (size_t)n;
	r->b->inflight += (uint64_t)n;
	progress(r->b);
	return 0;
}

static int
backup_stdin(struct bk *b, const char *fname, unsigned char id[CF_BK_ID_BYTES])
{
	struct cf_bk_node n;
	struct cf_bk_tree tree;
	struct cf_bk_item *items = NULL;
	size_t nitems = 0;
	uint64_t size = 0;
	struct fd_rd rd = { 0, b };
	struct cf_bk_wfile *wf = NULL;
	int rc;
	int64_t t = now_ns();

	/* As a store file: the workers hash, this thread reads and cuts. */
	rc = cf_bk_writer_file_new(b->w, &wf);
	if (rc == 0)
		rc = cf_bk_writer_file_add(b->w, wf, fd_read, &rd, &size);
	tl_progress_end(&b->prog);
	if (rc < 0) {
		cf_bk_writer_file_free(b->w, wf);
		fprintf(stderr, "coffer: reading stdin: %s\n", strerror(-rc));
		return rc;
	}
	rc = cf_bk_writer_file_take(b->w, wf, &items, &nitems);
	if (rc < 0) {
		fprintf(stderr, "coffer: backup writer: %s\n", strerror(-rc));
		return rc;
	}
	memset(&n, 0, sizeof(n));
	n.type = CF_BK_NODE_FILE;
	n.mode = 0600;
	n.uid = getuid();
	n.gid = getgid();
	n.atime = n.mtime = n.ctime = t;
	n.size = size;
	n.name = fname;
	n.items = items;
	n.nitems = nitems;
	tree.nodes = &n;
	tree.count = 1;
	tree.mem_ = NULL;
	rc = cf_bk_writer_add_tree(b->w, &tree, id);
	free(items);
	b->files = 1;
	b->bytes = size;
	return rc;
}

/* ---- tar input: backup --tar FILE|- (docs/backup.md) ------------------ */

/*
 * Which entries become which names is tl_tarin.c's (no repository, so a
 * fuzz target runs it); here: contents through the chunker as they
 * arrive, the tree encoded bottom-up at the end (a tar may name a
 * directory's entries anywhere in the stream), and the archive opened
 * and checked for damage or truncation.
 */

static struct bk *
tar_bk(const struct tl_tarin *ti)
{
	return ti->arg;
}

/* tl_tarin's taken: the progress line counts files as they come. */
static void
tar_taken(struct tl_tarin *ti, const struct tl_tino *ino)
{
	if (ino->type != CF_BK_NODE_DIR)
		tar_bk(ti)->pfiles++;
	progress(tar_bk(ti));
}

/* tl_tarin's before_msg: a left-out entry's name on its own line. */
static void
tar_before_msg(struct tl_tarin *ti)
{
	tl_progress_end(&tar_bk(ti)->prog);
}

/* add_stream's reader over an entry's data blocks, one region at a time. */
struct tar_rd {
	struct archive *a;
	const unsigned char *buf;	/* the pending block */
	size_t len;
	int64_t off;			/* its offset in the file */
	int pending, eof, err;
	int64_t pos;			/* bytes of the file consumed */
	struct bk *b;			/* inflight, progress */
};

static int
tar_read(void *arg, unsigned char *buf, size_t cap, size_t *got)
{
	struct tar_rd *r = arg;
	const void *p;
	size_t len;
	la_int64_t off;
	int rc;

	*got = 0;
	for (;;) {
		if (r->pending) {
			if (r->off != r->pos)
				return 0;	/* a hole first: region ends */
			if (r->len == 0) {
				r->pending = 0;
				continue;
			}
			len = r->len < cap ? r->len : cap;
			memcpy(buf, r->buf, len);
			r->buf += len;
			r->len -= len;
			r->off += (int64_t)len;
			r->pos += (int64_t)len;
			*got = len;
			r->b->inflight += len;
			progress(r->b);
			return 0;
		}
		if (r->eof)
			return 0;
		rc = archive_read_data_block(r->a, &p, &len, &off);
		if (rc == ARCHIVE_EOF) {
			r->eof = 1;
			return 0;
		}
		if ((rc != ARCHIVE_OK && rc != ARCHIVE_WARN) || off < r->pos) {
			r->err = rc != ARCHIVE_OK && rc != ARCHIVE_WARN ? -EIO :
			    -EPROTO;
			return r->err;
		}
		r->buf = p;
		r->len = len;
		r->off = off;
		r->pending = 1;
	}
}

/*
 * Reads the current entry's data into content items: data regions
 * through the chunker, the gaps libarchive reports between them (sparse
 * entries) as holes, and a hole up to the entry's size.
 */
static int
tar_content(struct tl_tarin *ti, struct archive_entry *e,
    struct tl_tino *ino)
{
	struct cf_bk_item *items = NULL, *part;
	size_t n = 0, cap = 0, npart;
	struct tar_rd r;
	uint64_t got, size;
	int rc;

	memset(&r, 0, sizeof(r));
	r.a = ti->a;
	r.b = tar_bk(ti);
	for (;;) {
		rc = cf_bk_writer_add_stream(tar_bk(ti)->w, tar_read, &r, &part,
		    &npart, &got);
		if (rc < 0) {
			if (r.err < 0)
				rc = r.err;
			goto fail;
		}
		rc = push_items(&items, &n, &cap, part, npart);
		free(part);
		if (rc < 0)
			goto fail;
		if (r.eof && !r.pending)
			break;
		if (r.pending && r.off > r.pos) {
			rc = push_hole(&items, &n, &cap,
			    (uint64_t)(r.off - r.pos));
			if (rc < 0)
				goto fail;
			r.pos = r.off;
		}
	}
	size = (uint64_t)r.pos;
	if (archive_entry_size_is_set(e) && archive_entry_size(e) > r.pos) {
		rc = push_hole(&items, &n, &cap,
		    (uint64_t)(archive_entry_size(e) - r.pos));
		if (rc < 0)
			goto fail;
		size = (uint64_t)archive_entry_size(e);
	}
	/*
	 * Kept until the end of the archive: trim push_items' spare room
	 * (16 items, 640 bytes, per file otherwise).
	 */
	if (n > 0 && n < cap && (part = realloc(items, n * sizeof(*items))) !=
	    NULL)
		items = part;
	free(ino->items);
	ino->items = items;
	ino->nitems = n;
	ino->size = size;
	return 0;
fail:
	free(items);
	if (rc == -EIO || rc == -EPROTO)
		tl_progress_end(&tar_bk(ti)->prog);
	if (rc == -EIO)
		fprintf(stderr, "coffer: reading the tar: %s\n",
		    archive_error_string(ti->a));
	else if (rc == -EPROTO)
		fprintf(stderr, "coffer: reading the tar: overlapping data "
		    "blocks in an entry (damaged archive)\n");
	return rc;
}

/* Encodes the directory d's tree, its subdirectories' first. */
static int
tar_tree(struct tl_tarin *ti, struct tl_tnode *d,
    unsigned char id[CF_BK_ID_BYTES])
{
	struct cf_bk_node *nodes;
	struct cf_bk_tree tree;
	struct tl_tnode *c;
	struct tl_tino *ino;
	size_t i = 0;
	int rc = 0;

	nodes = calloc(d->nchild + 1, sizeof(*nodes));
	if (nodes == NULL)
		return -ENOMEM;
	for (c = d->child; c != NULL; c = c->sibling, i++) {
		ino = c->ino;
		nodes[i].type = ino->type;
		nodes[i].name = c->name;
		nodes[i].mode = ino->mode;
		nodes[i].uid = ino->uid;
		nodes[i].gid = ino->gid;
		nodes[i].atime = ino->atime;
		nodes[i].mtime = ino->mtime;
		nodes[i].ctime = ino->ctime;
		nodes[i].xattrs = ino->xattrs;
		nodes[i].nxattrs = ino->nxattrs;
		if (ino->type == CF_BK_NODE_DIR) {
			rc = tar_tree(ti, c, nodes[i].subtree);
			if (rc < 0)
				goto out;
			tar_bk(ti)->dirs++;
			continue;
		}
		nodes[i].link_group = ino->refs > 1 ? ino->group : 0;
		if (ino->type == CF_BK_NODE_FILE) {
			nodes[i].size = ino->size;
			nodes[i].items = ino->items;
			nodes[i].nitems = ino->nitems;
			tar_bk(ti)->bytes += ino->size;
		}
		nodes[i].target = ino->target;
		nodes[i].rdev = ino->rdev;
		tar_bk(ti)->files++;
	}
	tree.nodes = nodes;
	tree.count = d->nchild;
	tree.mem_ = NULL;
	rc = cf_bk_writer_add_tree(tar_bk(ti)->w, &tree, id);
out:
	free(nodes);
	return rc;
}

/*
 * backup --tar FILE|-: the archive's entries become the snapshot's tree.
 * A damaged or truncated archive is an error (nothing is saved);
 * entries left out are counted in b->failed and named.
 */
static int
backup_tar(struct bk *b, const char *file, int64_t t0,
    unsigned char id[CF_BK_ID_BYTES])
{
	struct tl_tarin ti;
	struct archive_entry *e;
	struct stat st;
	la_int64_t end;
	int rc, ar;

	rc = tl_tarin_init(&ti, t0);
	ti.arg = b;
	ti.content = tar_content;
	ti.taken = tar_taken;
	ti.before_msg = tar_before_msg;
	ti.a = archive_read_new();
	if (rc < 0 || ti.a == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	archive_read_support_filter_all(ti.a);
	archive_read_support_format_tar(ti.a);
	if (strcmp(file, "-") == 0)
		ar = archive_read_open_fd(ti.a, 0, 1 << 16);
	else
		ar = archive_read_open_filename(ti.a, file, 1 << 16);
	/* The progress line's total: a regular file's size (not a pipe). */
	if (ar == ARCHIVE_OK && (strcmp(file, "-") == 0 ? fstat(0, &st) :
	    stat(file, &st)) == 0 && S_ISREG(st.st_mode)) {
		b->tar_in = ti.a;
		b->tar_size = (uint64_t)st.st_size;
	}
	if (ar != ARCHIVE_OK) {
		fprintf(stderr, "coffer: %s: %s\n", strcmp(file, "-") == 0 ?
		    "standard input" : file, archive_error_string(ti.a));
		rc = -EPROTO;
		goto out;
	}
	for (;;) {
		ar = archive_read_next_header(ti.a, &e);
		if (ar == ARCHIVE_EOF)
			break;
		if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN) {
			/* ARCHIVE_RETRY too: a damaged header. */
			tl_progress_end(&b->prog);
			fprintf(stderr, "coffer: reading the tar: %s\n",
			    archive_error_string(ti.a));
			rc = -EPROTO;
			goto out;
		}
		rc = tl_tarin_entry(&ti, e);
		if (rc < 0)
			goto out;
	}
	/*
	 * libarchive ends quietly when the stream stops between two
	 * entries; a complete tar ends with a zero block after the last
	 * one, so its absence means a truncated archive.
	 */
	end = archive_read_header_position(ti.a);
	if (archive_filter_bytes(ti.a, 0) - end < 512) {
		tl_progress_end(&b->prog);
		fprintf(stderr, "coffer: the tar has no end-of-archive block: "
		    "it is truncated\n");
		rc = -EPROTO;
		goto out;
	}
	b->pfiles = b->inflight = 0;	/* tar_tree counts them */
	rc = tar_tree(&ti, &ti.root, id);
	tl_progress_end(&b->prog);
	if (rc < 0)
		fprintf(stderr, "coffer: storing the tree: %s\n",
		    strerror(-rc));
	if (ti.dropped_xattrs > 0)
		fprintf(stderr, "coffer: %llu extended attributes outside "
		    "user.* (or over the limits) were not kept\n",
		    (unsigned long long)ti.dropped_xattrs);
out:
	b->failed += ti.left_out;	/* named; exit 1 */
	b->tar_in = NULL;
	tl_progress_end(&b->prog);
	tl_tarin_free(&ti);
	return rc;
}

/* ---- a plain directory: backup --dir DIR (docs/write-only.md) --------- */

/*
 * A write-only agent has no store keys: it backs up plaintext files it
 * can read, e.g. a database dump directory.  The walk works relative to
 * directory descriptors and never follows a symlink below DIR: symlinks
 * are recorded as symlinks, every open is O_NOFOLLOW and checked against
 * the lstat that chose it, so a file swapped for a symlink meanwhile is
 * left out, not followed out of DIR.  Each regular file is read and then
 * checked (size, mtime, ctime) and read again if it changed, as the
 * live store backup does: consistency "none".
 */

static int
same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino &&
	    (a->st_mode & S_IFMT) == (b->st_mode & S_IFMT);
}

static int
unchanged(const struct stat *a, const struct stat *b)
{
	return same_file(a, b) && a->st_size == b->st_size &&
	    ts_ns(&a->st_mtim) == ts_ns(&b->st_mtim) &&
	    ts_ns(&a->st_ctim) == ts_ns(&b->st_ctim);
}

/*
 * user.* xattrs of an open file or directory (fd >= 0), else of the
 * entry name in dfd without following it (through /proc/self/fd).
 */
static int
plain_xattrs(struct dir_nodes *dn, struct cf_bk_node *n, int fd, int dfd,
    const char *name)
{
	char proc[PATH_MAX + 64], *list;
	struct cf_bk_xattr *xa;
	unsigned char *val;
	ssize_t len, vlen;
	size_t off, cnt = 0, i = 0;
	int rc;

	if (fd < 0)
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d/%s", dfd, name);
	len = fd >= 0 ? flistxattr(fd, NULL, 0) : llistxattr(proc, NULL, 0);
	if (len <= 0)
		return 0;	/* none, or not supported here */
	list = malloc((size_t)len + 1);
	rc = keep(dn, list);
	if (rc < 0)
		return rc;
	len = fd >= 0 ? flistxattr(fd, list, (size_t)len) :
	    llistxattr(proc, list, (size_t)len);
	if (len <= 0)
		return 0;	/* changed meanwhile: taken as none */
	list[len] = '\0';
	for (off = 0; off < (size_t)len; off += strlen(list + off) + 1)
		cnt++;
	xa = calloc(cnt, sizeof(*xa));
	rc = keep(dn, xa);
	if (rc < 0)
		return rc;
	for (off = 0; off < (size_t)len; off += strlen(list + off) + 1) {
		if (strncmp(list + off, "user.", 5) != 0 || i == 1024)
			continue;
		val = malloc(65536 + 1);
		rc = keep(dn, val);
		if (rc < 0)
			return rc;
		vlen = fd >= 0 ? fgetxattr(fd, list + off, val, 65536) :
		    lgetxattr(proc, list + off, val, 65536);
		if (vlen < 0)
			continue;	/* removed meanwhile, or too large */
		xa[i].name = list + off;
		xa[i].value = val;
		xa[i].value_len = (size_t)vlen;
		i++;
	}
	n->xattrs = xa;
	n->nxattrs = i;
	return 0;
}

static int plain_dir(struct bk *b, int dfd, const char *path, int depth,
    unsigned char id[CF_BK_ID_BYTES]);

/*
 * One entry of a plain directory.  0 (also when left out: counted in
 * b->failed or b->changed and named), -errno to stop the backup.
 */
static int
plain_entry(struct bk *b, struct dir_nodes *dn, int dfd, const char *name,
    const char *path, int depth)
{
	struct cf_bk_node *n;
	struct cf_bk_wfile *wf = NULL;
	struct stat st, fst;
	char *nm, *target;
	ssize_t tl;
	int fd = -1, rc, attempt;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0;	/* removed while we walked */
		tl_progress_end(&b->prog);
		fprintf(stderr, "coffer: %s: %s; left out\n", path,
		    strerror(errno));
		b->failed++;
		return 0;
	}
	n = new_node(dn);
	if (n == NULL)
		return -ENOMEM;
	nm = strdup(name);
	rc = keep(dn, nm);
	if (rc < 0)
		return rc;
	n->name = nm;
	if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) {
		if (S_ISDIR(st.st_mode) && depth >= MAX_DEPTH) {
			tl_progress_end(&b->prog);
			fprintf(stderr, "coffer: %s: nested too deep; left "
			    "out\n", path);
			b->failed++;
			return 0;
		}
		fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NOCTTY |
		    O_CLOEXEC | O_NONBLOCK |
		    (S_ISDIR(st.st_mode) ? O_DIRECTORY : 0));
		if (fd < 0 || fstat(fd, &fst) < 0 || !same_file(&st, &fst)) {
			rc = fd < 0 ? errno : 0;
			if (fd >= 0)
				close(fd);
			if (rc == ENOENT)
				return 0;	/* removed meanwhile */
			tl_progress_end(&b->prog);
			fprintf(stderr, "coffer: %s: %s; left out\n", path,
			    rc != 0 ? strerror(rc) : "replaced while read "
			    "(never followed)");
			b->failed++;
			return 0;
		}
	}
	if (S_ISDIR(st.st_mode)) {
		rc = plain_dir(b, fd, path, depth + 1, n->subtree);
		if (rc == 0)
			rc = plain_xattrs(dn, n, fd, dfd, name);
		if (rc == 0 && fstat(fd, &st) < 0)
			rc = -errno;
		if (rc < 0) {
			close(fd);
			return rc;
		}
		n->type = CF_BK_NODE_DIR;
		fill_meta(n, &st);
		b->dirs++;
	} else if (S_ISREG(st.st_mode)) {
		for (attempt = 0;; attempt++) {
			rc = read_file(b, NULL, fd, fst.st_size, &wf);
			if (rc == 0 && fstat(fd, &st) < 0)
				rc = -errno;
			if (rc == 0 && !unchanged(&fst, &st))
				rc = -EAGAIN;
			if (rc != -EAGAIN)
				break;
			cf_bk_writer_file_free(b->w, wf);
			wf = NULL;
			if (attempt + 1 >= RETRIES) {
				tl_progress_end(&b->prog);
				fprintf(stderr, "coffer: %s kept changing "
				    "while it was read (%d tries); left out\n",
				    path, RETRIES);
				b->changed++;
				close(fd);
				return 0;
			}
			b->retries++;
			usleep(25000U << attempt);
			fst = st;
		}
		if (rc == -EIO || rc == -EACCES) {
			tl_progress_end(&b->prog);
			fprintf(stderr, "coffer: %s: %s; left out\n", path,
			    strerror(-rc));
			b->failed++;
			cf_bk_writer_file_free(b->w, wf);
			close(fd);
			return 0;
		}
		if (rc == 0)
			rc = plain_xattrs(dn, n, fd, dfd, name);
		if (rc == 0) {
			rc = dir_pend_add(dn, dn->count, wf);
			wf = NULL;
		}
		if (rc < 0) {
			cf_bk_writer_file_free(b->w, wf);
			close(fd);
			return rc;
		}
		n->type = CF_BK_NODE_FILE;
		fill_meta(n, &st);
		n->size = (uint64_t)st.st_size;
		n->link_group = link_group(b, &st);
		b->files++;
		b->bytes += n->size;
		b->inflight = 0;
		progress(b);
	} else if (S_ISLNK(st.st_mode)) {
		target = malloc(CF_FS_RLINK_MAX + 1);
		rc = keep(dn, target);
		if (rc < 0)
			return rc;
		tl = readlinkat(dfd, name, target, CF_FS_RLINK_MAX + 1);
		if (tl < 0 && errno == ENOENT)
			return 0;
		if (tl <= 0 || tl > CF_FS_RLINK_MAX) {
			tl_progress_end(&b->prog);
			fprintf(stderr, "coffer: %s: %s; left out\n", path,
			    tl < 0 ? strerror(errno) : "symlink target empty "
			    "or too long");
			b->failed++;
			return 0;
		}
		target[tl] = '\0';
		n->type = CF_BK_NODE_SYMLINK;
		n->target = target;
		count_node(b, n, &st);
	} else {
		if (!special_type(n, &st))
			return 0;
		count_node(b, n, &st);
	}
	if (fd < 0) {
		rc = plain_xattrs(dn, n, -1, dfd, name);
		if (rc < 0)
			return rc;
	}
	if (fd >= 0)
		close(fd);
	dn->count++;
	return 0;
}

static int
plain_dir(struct bk *b, int dfd, const char *path, int depth,
    unsigned char id[CF_BK_ID_BYTES])
{
	struct dir_nodes dn;
	struct cf_bk_tree tree;
	struct dirent *de;
	DIR *d;
	char *sub;
	size_t subcap;
	int fd, rc = 0;

	memset(&dn, 0, sizeof(dn));
	dn.w = b->w;
	fd = dup(dfd);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (d == NULL) {
		rc = -errno;
		close(fd);
		return rc;
	}
	rewinddir(d);
	subcap = strlen(path) + NAME_MAX + 2;	/* d_name: <= 255 */
	sub = malloc(subcap);
	if (sub == NULL) {
		closedir(d);
		return -ENOMEM;
	}
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (de == NULL) {
			rc = -errno;
			break;
		}
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(sub, subcap, "%s/%s", path, de->d_name);
		rc = plain_entry(b, &dn, dfd, de->d_name, sub, depth);
		if (rc < 0)
			break;
	}
	if (rc == 0)
		rc = dir_settle(&dn);
	if (rc < 0) {
		tl_progress_end(&b->prog);
		fprintf(stderr, "coffer: %s: %s\n", path, strerror(-rc));
		goto out;
	}
	tree.nodes = dn.n;
	tree.count = dn.count;
	tree.mem_ = NULL;
	rc = cf_bk_writer_add_tree(b->w, &tree, id);
	if (rc < 0) {
		tl_progress_end(&b->prog);
		fprintf(stderr, "coffer: %s: storing its tree: %s\n", path,
		    strerror(-rc));
	}
out:
	free(sub);
	closedir(d);
	dir_nodes_free(&dn);
	return rc;
}

/* backup --dir DIR: DIR itself may be a symlink; nothing below it is. */
static int
backup_plain(struct bk *b, const char *dir, unsigned char id[CF_BK_ID_BYTES])
{
	int fd, rc;

	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		fprintf(stderr, "coffer: %s: %s\n", dir, strerror(errno));
		return rc;
	}
	scan_start(b, NULL, fd);
	rc = plain_dir(b, fd, dir, 0, id);
	scan_stop(b);
	tl_progress_end(&b->prog);
	close(fd);
	return rc;
}

/* ---- write-only agents (docs/write-only.md) -------------------------- */

/*
 * Reads a writer credential file into locked memory.  Refuses a file
 * others may read (like ssh with private keys).  Messages name the
 * path only, never the contents.  Returns an exit code.
 */
static int
read_cred(const char *path, struct cf_secbuf **out)
{
	struct cf_secbuf *sb = NULL;
	struct stat st;
	ssize_t n;
	size_t got = 0;
	int fd, rc;

	*out = NULL;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "coffer: writer credential %s: %s\n", path,
		    strerror(errno));
		return CF_EXIT_FAIL;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		fprintf(stderr, "coffer: writer credential %s is not a "
		    "regular file\n", path);
		close(fd);
		return CF_EXIT_FAIL;
	}
	if ((st.st_mode & 077) != 0) {
		fprintf(stderr, "coffer: writer credential %s may be read by "
		    "others (mode %04o): chmod 600 it\n", path,
		    (unsigned)(st.st_mode & 07777));
		close(fd);
		return CF_EXIT_DENIED;
	}
	rc = cf_secbuf_new(&sb, CF_BK_WCRED_BYTES + 1);
	if (rc < 0) {
		close(fd);
		return tl_fail(rc, NULL);
	}
	while (got < CF_BK_WCRED_BYTES + 1) {
		n = read(fd, cf_secbuf_data(sb) + got,
		    CF_BK_WCRED_BYTES + 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	if (got != CF_BK_WCRED_BYTES) {
		fprintf(stderr, "coffer: %s is not a writer credential (%s)\n",
		    path, got > CF_BK_WCRED_BYTES ? "too long" : "too short");
		cf_secbuf_free(sb);
		return CF_EXIT_INTEGRITY;
	}
	*out = sb;
	return CF_EXIT_OK;
}

/*
 * The snapshot's one path for a stream: the --name of stdin, or
 * "tar:FILE" ("tar:-" for standard input), or "dir:" and the absolute
 * path of a --dir.  Never "/": a store backup
 * must not take a tar's snapshot as the parent whose unchanged files it
 * reuses (a tar sets any times it likes).
 */
static char *
source_path(const char *fname, const char *tarf, const char *dir, char *buf,
    size_t cap)
{
	char *rp;

	if (dir != NULL) {
		rp = realpath(dir, NULL);
		snprintf(buf, cap, "dir:%s", rp != NULL ? rp : dir);
		free(rp);
		return buf;
	}
	if (tarf == NULL)
		return (char *)(uintptr_t)fname;
	snprintf(buf, cap, "tar:%s", tarf);
	return buf;
}

/*
 * coffer backup NAME --writer-key FILE --repo URL --stdin --name F: no
 * home, no keystore, no KMS; the credential seals, it opens nothing.
 */
static int
backup_writeonly(struct tl_ctx *ctx, const char *name, const char *keyfile,
    const char *url, const char *fname, const char *tarf, const char *dir,
    char **tags, size_t ntags)
{
	struct cf_secbuf *cred = NULL;
	struct cf_bk_wcred_info info;
	struct cf_bk_repo *repo = NULL;
	struct cf_bk_lock *lock = NULL;
	struct cf_bk_snapshot snap;
	struct cf_bk_writer_stats ws;
	struct bk b;
	unsigned char tree[CF_BK_ID_BYTES], sid[CF_BK_ID_BYTES];
	char host[256], hex[65], *paths[1], tpath[PATH_MAX + 8];
	int64_t t0 = now_ns(), when = snap_time_ns();
	int ret, rc;
	json_t *j;

	memset(&b, 0, sizeof(b));
	tl_progress_start(&b.prog, isatty(2) && ctx->verbose >= 0 &&
	    !ctx->json);
	ret = read_cred(keyfile, &cred);
	if (ret != CF_EXIT_OK)
		return ret;
	ret = CF_EXIT_FAIL;
	rc = cf_bk_wcred_parse(cf_secbuf_cdata(cred), CF_BK_WCRED_BYTES,
	    &info, NULL);
	if (rc == -EPROTO) {
		fprintf(stderr, "coffer: %s is not a writer credential, or it "
		    "is damaged\n", keyfile);
		ret = CF_EXIT_INTEGRITY;
		goto out;
	}
	(void)cf_ks_lock_memory();	/* as tl_repo_open_pf */
	rc = cf_bk_repo_open_writer(&repo, url, cf_secbuf_cdata(cred),
	    CF_BK_WCRED_BYTES);
	if (rc == -EKEYREJECTED) {
		fprintf(stderr, "coffer: the writer credential %s was made for "
		    "another repository or tenant than %s (or the repository "
		    "was recreated): export a new one with coffer tenant "
		    "writer-key\n", keyfile, url);
		ret = CF_EXIT_DENIED;
		goto out;
	}
	if (rc == -ENOENT) {
		fprintf(stderr, "coffer: no repository at %s (coffer tenant "
		    "writer-key creates it)\n", url);
		goto out;
	}
	if (rc < 0) {
		fprintf(stderr, "coffer: repository %s: %s\n", url,
		    tl_repo_strerror(url, rc));
		ret = cf_ks_exit_code(rc);
		goto out;
	}
	ret = lock_for_backup(repo, url, &lock);
	if (ret != CF_EXIT_OK)
		goto out;
	ret = CF_EXIT_FAIL;
	tl_malloc_tune();
	rc = cf_bk_writer_new(&b.w, repo, 2);
	if (rc == 0 && (tarf != NULL || dir != NULL)) {
		rc = tarf != NULL ? backup_tar(&b, tarf, t0, tree) :
		    backup_plain(&b, dir, tree);
		if (rc < 0)
			goto out;	/* named; nothing saved */
	} else if (rc == 0) {
		rc = backup_stdin(&b, fname, tree);
	}
	if (rc == 0)
		rc = cf_bk_writer_flush(b.w);
	if (rc < 0) {
		fprintf(stderr, "coffer: writing to %s: %s\n", url,
		    tl_repo_strerror(url, rc));
		goto out;
	}
	cf_bk_writer_stats(b.w, &ws);
	paths[0] = source_path(fname, tarf, dir, tpath, sizeof(tpath));
	snap_fill(&snap, when, t0, info.tenant, host, sizeof(host), tags,
	    ntags, paths, tree, &ws);
	snap.consistency = (char *)(uintptr_t)(dir != NULL ? "none" :
	    "stream");
	snap.stats.files = b.files;
	snap.stats.dirs = b.dirs;
	snap.stats.bytes = b.bytes;
	rc = cf_bk_repo_snapshot_save(repo, &snap, sid);
	if (rc < 0) {
		fprintf(stderr, "coffer: saving the snapshot: %s\n",
		    strerror(-rc));
		goto out;
	}
	cf_bk_id_hex(sid, hex);
	if (ctx->json) {
		j = json_pack("{s:s, s:s, s:s, s:s, s:b, s:I, s:I, s:I, s:I, "
		    "s:I, s:I, s:I, s:f}", "snapshot", hex, "tenant", name,
		    "repo", url, "consistency", snap.consistency,
		    "write_only", 1,
		    "files", (json_int_t)b.files, "dirs", (json_int_t)b.dirs,
		    "bytes", (json_int_t)b.bytes,
		    "left_out", (json_int_t)b.failed,
		    "new_blobs", (json_int_t)ws.new_blobs,
		    "new_bytes", (json_int_t)ws.new_bytes,
		    "stored_bytes", (json_int_t)ws.stored_bytes,
		    "duration_s", (double)snap.stats.duration_ns / 1e9);
		if (j != NULL)
			tl_print_json(j);
	} else if (ctx->verbose >= 0) {
		printf("snapshot %.8s saved (%s, write-only): %.1f MiB, "
		    "%.1f MiB new, %.2f s\n", hex, snap.consistency,
		    (double)b.bytes / (1 << 20),
		    (double)ws.new_bytes / (1 << 20),
		    (double)snap.stats.duration_ns / 1e9);
	}
	ret = CF_EXIT_OK;
	if (b.failed + b.changed > 0) {
		fprintf(stderr, "coffer: %llu entries were left out (named "
		    "above)\n", (unsigned long long)(b.failed + b.changed));
		ret = CF_EXIT_FAIL;
	}
out:
	cf_bk_writer_free(b.w);
	free(b.links);
	(void)!cf_bk_lock_release(lock);
	cf_bk_repo_free(repo);
	cf_secbuf_free(cred);
	return ret;
}

/* coffer tenant writer-key NAME --out FILE [--repo URL] (cmd_tenant.c). */
int tl_backup_writer_key(struct tl_ctx *ctx, int argc, char **argv);

int
tl_backup_writer_key(struct tl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "out", required_argument, NULL, 'o' },
		{ "repo", required_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 },
	};
	struct session s;
	struct cf_secbuf *cred = NULL;
	const char *out = NULL, *repo = NULL;
	char hex[65];
	size_t off = 0;
	ssize_t n;
	int c, fd = -1, ret, rc;
	json_t *j;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'o':
			out = optarg;
			break;
		case 'r':
			repo = optarg;
			break;
		default:
			return tl_usage(&tl_cmd_tenant, "tenant writer-key: bad "
			    "option");
		}
	}
	if (optind != argc - 1 || out == NULL || out[0] == '\0' ||
	    strcmp(out, "-") == 0)
		return tl_usage(&tl_cmd_tenant, "tenant writer-key: give one "
		    "NAME and --out FILE");
	ret = session_open(&s, ctx, argv[optind], repo, 1);
	if (ret != CF_EXIT_OK)
		goto out;
	ret = CF_EXIT_FAIL;
	rc = cf_bk_wcred_export(s.repo, &cred);
	if (rc < 0) {
		ret = tl_fail(rc, "making the writer credential");
		goto out;
	}
	fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	if (fd < 0) {
		fprintf(stderr, "coffer: %s: %s%s\n", out, strerror(errno),
		    errno == EEXIST ? " (not overwritten)" : "");
		goto out;
	}
	while (off < CF_BK_WCRED_BYTES) {
		n = write(fd, cf_secbuf_cdata(cred) + off,
		    CF_BK_WCRED_BYTES - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	if (off != CF_BK_WCRED_BYTES || fsync(fd) < 0) {
		fprintf(stderr, "coffer: writing %s: %s\n", out,
		    strerror(errno ? errno : EIO));
		(void)unlink(out);
		goto out;
	}
	cf_bk_id_hex(cf_bk_repo_id(s.repo), hex);
	hex[32] = '\0';	/* the repo id is 16 bytes */
	audit(&s, "backup.writer_key", hex, 0, 0, 0);
	if (ctx->json) {
		j = json_pack("{s:s, s:s, s:s, s:s}", "tenant", argv[optind],
		    "repo", s.url, "repo_id", hex, "file", out);
		if (j != NULL)
			tl_print_json(j);
	} else if (ctx->verbose >= 0) {
		printf("writer credential of tenant %s for %s written to %s "
		    "(mode 0600): it adds snapshots and opens none\n",
		    argv[optind], s.url, out);
	}
	ret = CF_EXIT_OK;
out:
	if (fd >= 0)
		close(fd);
	cf_secbuf_free(cred);
	session_close(&s);
	return ret;
}

int
cmd_backup(struct tl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "repo", required_argument, NULL, 'r' },
		{ "tag", required_argument, NULL, 't' },
		{ "stdin", no_argument, NULL, 's' },
		{ "name", required_argument, NULL, 'n' },
		{ "json", no_argument, NULL, 'j' },
		{ "writer-key", required_argument, NULL, 'w' },
		{ "tar", required_argument, NULL, 'T' },
		{ "dir", required_argument, NULL, 'D' },
		{ "force", no_argument, NULL, 'f' },
		{ NULL, 0, NULL, 0 },
	};
	struct session s;
	struct bk b;
	struct cf_fs_keys *fkeys = NULL;
	struct cf_fs_reader *rd = NULL;
	struct cf_fs_rdir *rootd = NULL;
	struct cf_fs_snapshot *fsnap = NULL;
	struct early_snap es = { .started = 0 };
	char *farm = NULL;
	uint64_t pause_ns = 0;
	int storelock = -1;
	struct cf_bk_snapshot snap, *psnap = NULL;
	struct cf_bk_writer_stats ws;
	unsigned char tree[CF_BK_ID_BYTES], sid[CF_BK_ID_BYTES];
	unsigned char pid[CF_BK_ID_BYTES];
	int has_parent = 0;
	char *tags[256], *paths[1], host[256], store[PATH_MAX], hex[65];
	char tpath[PATH_MAX + 8];
	const char *repo = NULL, *fname = NULL, *name, *wkey = NULL;
	const char *tarf = NULL, *dir = NULL;
	int c, use_stdin = 0, force = 0, ret, rc;
	size_t ntags = 0;
	int64_t t0, when;
	json_t *j;

	memset(&b, 0, sizeof(b));
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			repo = optarg;
			break;
		case 't':
			if (ntags == 256 || optarg[0] == '\0' ||
			    strlen(optarg) > 255)
				return tl_usage(&tl_cmd_backup, "backup: at "
				    "most 256 tags of 1..255 bytes");
			tags[ntags++] = optarg;
			break;
		case 's':
			use_stdin = 1;
			break;
		case 'n':
			fname = optarg;
			break;
		case 'j':
			ctx->json = 1;
			break;
		case 'w':
			wkey = optarg;
			break;
		case 'T':
			tarf = optarg;
			break;
		case 'D':
			dir = optarg;
			break;
		case 'f':
			force = 1;
			break;
		default:
			return tl_usage(&tl_cmd_backup, "backup: bad option");
		}
	}
	if (optind != argc - 1)
		return tl_usage(&tl_cmd_backup, "backup: give one tenant NAME");
	name = argv[optind];
	if (use_stdin != (fname != NULL))
		return tl_usage(&tl_cmd_backup, "backup: --stdin and --name "
		    "go together");
	if (fname != NULL && (fname[0] == '\0' || strchr(fname, '/') ||
	    strcmp(fname, ".") == 0 || strcmp(fname, "..") == 0 ||
	    strlen(fname) > 255))
		return tl_usage(&tl_cmd_backup, "backup: --name must be one "
		    "file name component");
	if (use_stdin + (tarf != NULL) + (dir != NULL) > 1 ||
	    (tarf != NULL && tarf[0] == '\0') ||
	    (dir != NULL && dir[0] == '\0'))
		return tl_usage(&tl_cmd_backup, "backup: give one source: "
		    "--stdin --name FILE, --tar FILE|- or --dir DIR");
	if (tarf != NULL && strcmp(tarf, "-") == 0 && isatty(0))
		return tl_usage(&tl_cmd_backup, "backup: not reading a tar "
		    "from a terminal");
	if (wkey != NULL) {
		if (repo == NULL || (!use_stdin && tarf == NULL && dir == NULL))
			return tl_usage(&tl_cmd_backup, "backup: --writer-key "
			    "needs --repo URL and a source: --stdin --name "
			    "FILE, --tar FILE|- or --dir DIR (a write-only "
			    "agent cannot read the tenant's store)");
		return backup_writeonly(ctx, name, wkey, repo, fname, tarf,
		    dir, tags, ntags);
	}
	t0 = now_ns();
	when = snap_time_ns();
	if (!use_stdin && tarf == NULL && dir == NULL)
		early_snap_start(&es, ctx, name, unlock_may_prompt());
	ret = session_open_pf(&s, ctx, name, repo, 1, 0, es.t);
	es.t = NULL;		/* s's now */
	if (ret != CF_EXIT_OK)
		goto out;
	ret = CF_EXIT_FAIL;
	tl_progress_start(&b.prog, isatty(2) && ctx->verbose >= 0 &&
	    !ctx->json);
	/* The parent: the newest snapshot of the same path. */
	paths[0] = use_stdin || tarf != NULL || dir != NULL ?
	    source_path(fname, tarf, dir, tpath, sizeof(tpath)) : (char *)"/";
	has_parent = latest_parent(&s, paths[0], pid, &psnap);
	/*
	 * Files whose ctime is before the parent's start were settled when
	 * it read them.  A parent stamped by an injected clock later than
	 * now (COFFER_NOW, test builds) says nothing about when it really
	 * read them: reuse nothing.
	 */
	if (has_parent)
		b.parent_time = psnap->time <= now_ns() ? psnap->time :
		    INT64_MIN;
	tl_malloc_tune();
	rc = cf_bk_writer_new(&b.w, s.repo, 2);
	if (rc < 0) {
		fprintf(stderr, "coffer: backup writer: %s\n", strerror(-rc));
		goto out;
	}
	if (use_stdin) {
		rc = backup_stdin(&b, fname, tree);
		if (rc < 0)
			goto out;
	} else if (tarf != NULL) {
		rc = backup_tar(&b, tarf, t0, tree);
		if (rc < 0)
			goto out;	/* named; no snapshot */
	} else if (dir != NULL) {
		rc = backup_plain(&b, dir, tree);
		if (rc < 0)
			goto out;	/* named; no snapshot */
	} else {
		tl_store_path(s.home, s.t, store, sizeof(store));
		/*
		 * A mounted store: ask its daemon for a point-in-time farm
		 * (a brief write freeze, then copy-on-write) and read that.
		 * No daemon answering on the store's control socket
		 * (-ENOTCONN) means it is not mounted: read it directly,
		 * "offline".  If a daemon answers but cannot give a
		 * snapshot, read the store live with per-file checks
		 * ("none").
		 */
		if (strcmp(es.store, store) == 0 && es.started) {
			early_snap_join(&es);
			rc = es.rc;
			fsnap = es.h;
			farm = es.farm;
			pause_ns = es.pause_ns;
			es.h = NULL;
			es.farm = NULL;
		} else {
			rc = cf_fs_snapshot_take(store, &fsnap, &farm,
			    &pause_ns);
		}
		if (rc == 0) {
			b.live = 2;
			b.farm_gens = cf_fs_snapshot_gens(fsnap);
		} else if (rc != -ENOTCONN) {
			fprintf(stderr, "coffer: no point-in-time snapshot of "
			    "the mounted store (%s); reading it live, file by "
			    "file\n", strerror(-rc));
			b.live = 1;
		} else {
			/* Offline: wait out an offline re-encryption, and
			 * keep one from starting while we read. */
			storelock = cf_fs_store_lock_shared(store, 1);
		}
		/* After the lock: a re-keying of the metadata that ran
		 * meanwhile changed the version the marker names. */
		rc = tl_fs_keys(s.home, s.t, &fkeys);
		if (rc < 0) {
			ret = tl_fail(rc, "deriving store keys");
			goto out;
		}
		rc = cf_fs_reader_open(&rd, fkeys, farm != NULL ? farm :
		    store);
		if (rc == -EINPROGRESS) {
			fprintf(stderr, "coffer: the metadata of %s's store is "
			    "being re-keyed (journal %s): run 'coffer tenant "
			    "reencrypt %s --metadata' to finish it first\n",
			    name, CF_FS_METAKEY_JOURNAL, name);
			goto out;
		}
		if (rc == -EBADMSG) {
			fprintf(stderr, "coffer: the store at %s does not "
			    "belong to tenant %s (or its marker was "
			    "altered)\n", store, name);
			ret = CF_EXIT_INTEGRITY;
			goto out;
		}
		if (rc == -ENOENT) {
			fprintf(stderr, "coffer: tenant %s has no store yet "
			    "(mount it once)\n", name);
			goto out;
		}
		if (rc < 0) {
			fprintf(stderr, "coffer: store %s: %s\n", store,
			    strerror(-rc));
			goto out;
		}
		if (farm == NULL) {
			/*
			 * Not a daemon's farm (which is older than the log):
			 * a file older than the home's generation log says is
			 * an older copy put back, damage as through the mount
			 * ([FS-READ-11]).  A damaged log is said, not fatal:
			 * the backup still runs, without that check.
			 */
			char genlog[PATH_MAX];

			snprintf(genlog, sizeof(genlog), "%s/%s/fsgen",
			    cf_ks_home_path(s.home), cf_ks_tenant_dir(s.t));
			rc = cf_fs_reader_check_gens(rd, genlog);
			if (rc < 0)
				fprintf(stderr, "coffer: the generation log %s "
				    "cannot be read (%s): older copies of files "
				    "are not told apart in this backup\n", genlog,
				    strerror(-rc));
		}
		rc = cf_fs_rdir_open_root(&rootd, rd);
		if (rc < 0) {
			fprintf(stderr, "coffer: store root: %s\n",
			    strerror(-rc));
			ret = cf_ks_exit_code(rc);
			goto out;
		}
		scan_start(&b, rd, -1);
		/* --force: the parent is recorded, nothing is reused. */
		rc = backup_dir(&b, rootd, "", 0, has_parent && !force ?
		    psnap->tree : NULL, tree);
		scan_stop(&b);
		tl_progress_end(&b.prog);
		if (rc < 0)
			goto out;
	}
	rc = cf_bk_writer_flush(b.w);
	if (rc < 0) {
		fprintf(stderr, "coffer: writing to %s: %s\n", s.url,
		    tl_repo_strerror(s.url, rc));
		goto out;
	}
	if (fsnap != NULL) {
		cf_fs_rdir_free(rootd);
		rootd = NULL;
		cf_fs_reader_free(rd);
		rd = NULL;
		rc = cf_fs_snapshot_release(fsnap);
		fsnap = NULL;
		if (rc == -ESTALE) {
			fprintf(stderr, "coffer: the mount could not keep the "
			    "snapshot point-in-time (a copy-on-write failed); "
			    "no snapshot saved: run the backup again\n");
			goto out;
		}
		if (rc < 0)
			fprintf(stderr, "coffer: releasing the store snapshot: "
			    "%s\n", strerror(-rc));
	}
	cf_bk_writer_stats(b.w, &ws);
	snap_fill(&snap, when, t0, cf_ks_tenant_id(s.t), host, sizeof(host),
	    tags, ntags, paths, tree, &ws);
	snap.has_parent = has_parent;
	if (has_parent)
		memcpy(snap.parent, pid, CF_BK_ID_BYTES);
	snap.consistency = (char *)(uintptr_t)(use_stdin || tarf != NULL ?
	    "stream" : dir != NULL ? "none" :
	    b.live == 2 ? "freeze" : b.live ? "none" : "offline");
	snap.stats.files = b.files;
	snap.stats.dirs = b.dirs;
	snap.stats.bytes = b.bytes;
	snap.stats.pause_ns = pause_ns;
	rc = cf_bk_repo_snapshot_save(s.repo, &snap, sid);
	if (rc < 0) {
		fprintf(stderr, "coffer: saving the snapshot: %s\n",
		    strerror(-rc));
		goto out;
	}
	cf_bk_id_hex(sid, hex);
	audit(&s, "backup.create", hex, b.files, b.bytes,
	    b.damaged + b.changed);
	tl_ops_record_backup(s.home, name, hex, snap.time, b.bytes, b.files);
	if (ctx->json) {
		j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, "
		    "s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
		    "s:f}",
		    "snapshot", hex, "tenant", name, "repo", s.url,
		    "consistency", snap.consistency,
		    "keys", cf_ks_tenant_lent(s.t) > 0 ? "lent" : "kms",
		    "files", (json_int_t)b.files, "dirs", (json_int_t)b.dirs,
		    "bytes", (json_int_t)b.bytes,
		    "new_blobs", (json_int_t)ws.new_blobs,
		    "new_bytes", (json_int_t)ws.new_bytes,
		    "stored_bytes", (json_int_t)ws.stored_bytes,
		    "retries", (json_int_t)b.retries,
		    "pause_ns", (json_int_t)pause_ns,
		    "changed", (json_int_t)b.changed,
		    "damaged", (json_int_t)b.damaged,
		    "left_out", (json_int_t)b.failed,
		    "reused", (json_int_t)b.reused,
		    "reused_by_gen", (json_int_t)b.reused_gen,
		    "read_files", (json_int_t)b.read_files,
		    "read_bytes", (json_int_t)b.read_bytes,
		    "duration_s", (double)snap.stats.duration_ns / 1e9);
		if (j != NULL)
			tl_print_json(j);
	} else if (ctx->verbose >= 0) {
		printf("snapshot %.8s saved (%s): %llu files, %llu dirs, "
		    "%.1f MiB, %.1f MiB new, %.2f s\n", hex, snap.consistency,
		    (unsigned long long)b.files, (unsigned long long)b.dirs,
		    (double)b.bytes / (1 << 20),
		    (double)ws.new_bytes / (1 << 20),
		    (double)snap.stats.duration_ns / 1e9);
	}
	if (b.damaged > 0) {
		fprintf(stderr, "coffer: %llu damaged entries were left out\n",
		    (unsigned long long)b.damaged);
		ret = CF_EXIT_INTEGRITY;
	} else if (b.changed > 0 || b.failed > 0) {
		fprintf(stderr, "coffer: %llu %s left out (named above)\n",
		    (unsigned long long)(b.changed + b.failed),
		    tarf != NULL || dir != NULL ? "entries were" :
		    "files were");
		ret = CF_EXIT_FAIL;
	} else {
		ret = CF_EXIT_OK;
	}
out:
	cf_bk_writer_free(b.w);
	cf_bk_snapshot_free(psnap);
	free(b.links);
	cf_fs_rdir_free(rootd);
	cf_fs_reader_free(rd);
	if (fsnap != NULL)
		(void)!cf_fs_snapshot_release(fsnap);
	free(farm);
	early_snap_join(&es);
	if (es.h != NULL)
		(void)!cf_fs_snapshot_release(es.h);
	free(es.farm);
	cf_ks_tenant_free(es.t);
	if (storelock >= 0)
		close(storelock);
	cf_fs_keys_free(fkeys);
	session_close(&s);
	return ret;
}

/* ---- snapshots -------------------------------------------------------- */

struct snap_ent {
	unsigned char id[CF_BK_ID_BYTES];
	struct cf_bk_snapshot *s;
};

static int
snap_cmp(const void *a, const void *b)
{
	const struct snap_ent *x = a, *y = b;

	if (x->s->time != y->s->time)
		return x->s->time < y->s->time ? -1 : 1;
	return memcmp(x->id, y->id, CF_BK_ID_BYTES);
}

static void
snaps_free(struct snap_ent *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		cf_bk_snapshot_free(v[i].s);
	free(v);
}

/* Loads every snapshot, oldest first.  Unreadable ones are named. */
static int
snaps_load(struct session *s, struct snap_ent **out, size_t *nout,
    size_t *bad)
{
	unsigned char (*ids)[CF_BK_ID_BYTES] = NULL;
	struct snap_ent *v = NULL;
	size_t n = 0, i, k = 0;
	char hex[65];
	int rc;

	*out = NULL;
	*nout = 0;
	*bad = 0;
	rc = cf_bk_repo_snapshot_list(s->repo, &ids, &n);
	if (rc < 0)
		return rc;
	v = calloc(n + 1, sizeof(*v));
	if (v == NULL) {
		free(ids);
		return -ENOMEM;
	}
	for (i = 0; i < n; i++) {
		rc = cf_bk_repo_snapshot_load(s->repo, ids[i], &v[k].s);
		if (rc < 0) {
			cf_bk_id_hex(ids[i], hex);
			fprintf(stderr, "coffer: snapshot %s: unreadable (%s)\n",
			    hex, strerror(-rc));
			(*bad)++;
			continue;
		}
		memcpy(v[k].id, ids[i], CF_BK_ID_BYTES);
		k++;
	}
	free(ids);
	qsort(v, k, sizeof(*v), snap_cmp);
	*out = v;
	*nout = k;
	return 0;
}

/*
 * 1, its id and (owned by the caller) the snapshot: the newest snapshot
 * of the same path (the parent); 0 if there is none.
 */
static int
latest_parent(struct session *s, const char *path,
    unsigned char id[CF_BK_ID_BYTES], struct cf_bk_snapshot **snap)
{
	struct snap_ent *v = NULL;
	size_t n = 0, bad = 0, i;
	int found = 0;

	*snap = NULL;
	if (snaps_load(s, &v, &n, &bad) < 0)
		return 0;
	for (i = n; i-- > 0;) {
		if (v[i].s->npaths == 1 && strcmp(v[i].s->paths[0], path) == 0) {
			memcpy(id, v[i].id, CF_BK_ID_BYTES);
			*snap = v[i].s;
			v[i].s = NULL;
			found = 1;
			break;
		}
	}
	snaps_free(v, n);
	return found;
}

int
cmd_snapshots(struct tl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "repo", required_argument, NULL, 'r' },
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	struct session s;
	struct snap_ent *v = NULL;
	size_t n = 0, i, k, bad = 0;
	const char *repo = NULL;
	char hex[65], when[32];
	json_t *arr, *o, *tags, *kv;
	int c, rc, ret;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'r')
			repo = optarg;
		else if (c == 'j')
			ctx->json = 1;
		else
			return tl_usage(&tl_cmd_snapshots, "snapshots: bad "
			    "option");
	}
	if (optind != argc - 1)
		return tl_usage(&tl_cmd_snapshots, "snapshots: give one "
		    "tenant NAME");
	ret = session_open(&s, ctx, argv[optind], repo, 0);
	if (ret != CF_EXIT_OK)
		goto out;
	rc = snaps_load(&s, &v, &n, &bad);
	if (rc < 0) {
		fprintf(stderr, "coffer: listing snapshots: %s\n",
		    strerror(-rc));
		ret = cf_ks_exit_code(rc);
		goto out;
	}
	if (ctx->json) {
		arr = json_array();
		for (i = 0; arr != NULL && i < n; i++) {
			cf_bk_id_hex(v[i].id, hex);
			iso_time(v[i].s->time, when, sizeof(when));
			tags = json_array();
			for (k = 0; tags != NULL && k < v[i].s->ntags; k++)
				json_array_append_new(tags,
				    json_string(v[i].s->tags[k]));
			kv = json_null();
			if (v[i].s->has_key_versions) {
				kv = json_array();
				for (k = 0; kv != NULL &&
				    k < v[i].s->nkey_versions; k++)
					json_array_append_new(kv, json_integer(
					    v[i].s->key_versions[k]));
			}
			o = json_pack("{s:s, s:s%, s:s, s:I, s:o, s:s, s:s, "
			    "s:I, s:I, s:I, s:I, s:f, s:o}",
			    "id", hex, "short_id", hex, (size_t)8,
			    "time", when, "time_ns", (json_int_t)v[i].s->time,
			    "tags", tags, "hostname", v[i].s->hostname,
			    "consistency", v[i].s->consistency,
			    "files", (json_int_t)v[i].s->stats.files,
			    "dirs", (json_int_t)v[i].s->stats.dirs,
			    "bytes", (json_int_t)v[i].s->stats.bytes,
			    "new_bytes", (json_int_t)v[i].s->stats.new_bytes,
			    "duration_s",
			    (double)v[i].s->stats.duration_ns / 1e9,
			    "key_versions", kv);
			json_array_append_new(arr, o);
		}
		if (arr != NULL)
			tl_print_json(arr);
	} else {
		printf("%-8s  %-20s  %-8s  %10s  %12s  %s\n", "ID", "TIME",
		    "MODE", "FILES", "SIZE", "TAGS");
		for (i = 0; i < n; i++) {
			cf_bk_id_hex(v[i].id, hex);
			iso_time(v[i].s->time, when, sizeof(when));
			printf("%.8s  %-20s  %-8s  %10llu  %12llu  ", hex,
			    when, v[i].s->consistency,
			    (unsigned long long)v[i].s->stats.files,
			    (unsigned long long)v[i].s->stats.bytes);
			for (k = 0; k < v[i].s->ntags; k++)
				printf("%s%s", k ? "," : "", v[i].s->tags[k]);
			putchar('\n');
		}
	}
	ret = bad > 0 ? CF_EXIT_INTEGRITY : CF_EXIT_OK;
out:
	snaps_free(v, n);
	session_close(&s);
	return ret;
}

/* ---- restore ---------------------------------------------------------- */

struct rlink {
	uint64_t group;
	char *path;		/* the first name, relative to the target
				 * (or in the tar) */
};

/* Hard-link groups seen: an open-addressed table of rlink (group 0: free). */
struct rlinks {
	struct rlink *v;
	size_t n, cap;
};

/* A tree whose nodes queued file jobs still use. */
struct tref {
	struct cf_bk_tree *t;
	size_t refs;		/* under rs.mu */
};

/* One file's content to write: the fd is open, the node in tref. */
struct fjob {
	int fd;
	const struct cf_bk_node *n;
	struct tref *tr;
	char *path;
};

/*
 * File workers: 3 on 2 cores, since large files' direct writes wait for
 * the disk (faster than 2 in 6 of 6 alternating pairs, about 5 %; before
 * O_DIRECT, 3 or 4 were no faster: docs/backup.md, Restore).  Files are
 * created by the walk: created by the workers, the workers spun on the
 * directory's lock (rwsem_spin_on_owner, 11 % of the CPU) for no gain.
 */
#define RS_WORKERS 3
#define RS_QUEUE 64		/* file jobs waiting (each holds an fd) */

struct rs;

struct rsw {
	struct rs *r;
	struct cf_bk_blob_reader *br;	/* its own key cache */
	unsigned char *dio;		/* DIO_BUF, aligned; NULL: none */
	pthread_t tid;
	uint64_t damaged, failed;	/* added to rs at the end */
};

struct rs {
	struct cf_bk_repo *repo;
	struct archive *ar;	/* --to-tar */
	struct rlinks links;
	uint64_t files, dirs, bytes, damaged, refused, failed;
	uint64_t already;	/* in the target as restored before: skipped */
	int root_fd;		/* the --target directory, -1 for a tar */
	int remote;		/* an S3 repository */
	const char *url;
	int down;		/* why the repository cannot be read (-errno) */
	/*
	 * Hard links: the names the walk linked to a group's first name
	 * (main thread), and the inodes of groups whose content failed
	 * (workers, under mu).  A name linked before its content failed
	 * is removed at the end with the first one (rs_unlink_failed).
	 */
	struct lname {
		uint64_t group;
		char *path;
	} *lnames;
	size_t nlnames, lncap;
	struct fgroup {
		uint64_t group;
		dev_t dev;
		ino_t ino;
	} *fgroups;
	size_t nfg, fgcap;
	int stopped;		/* the walk said it stops (main thread only) */
	int is_root;
	struct tl_progress prog;
	uint64_t total_files, total_bytes;	/* 0: not known (--path) */
	/*
	 * --target: regular files' contents are loaded, written and given
	 * their metadata by RS_WORKERS threads, each with its own blob
	 * reader; the walk (trees, names, links, directories) stays on the
	 * main thread.  mu guards the queue, tree refs, wbytes and fatal
	 * while workers run.
	 */
	pthread_mutex_t mu;
	pthread_cond_t cv_job, cv_space;
	struct fjob q[RS_QUEUE];
	size_t qcap;		/* <= RS_QUEUE: set by RLIMIT_NOFILE */
	size_t qhead, qlen, busy;
	uint64_t wbytes;	/* written by workers */
	int stop, fatal;
	struct rsw w[RS_WORKERS];
	size_t nworkers;	/* started */
};

/* The slot of group in the open-addressed table t (0: free). */
static size_t
rlink_slot(const struct rlink *t, size_t cap, uint64_t group)
{
	size_t i = (size_t)((group * UINT64_C(0x9e3779b97f4a7c15)) >> 32) &
	    (cap - 1);

	while (t[i].group != 0 && t[i].group != group)
		i = (i + 1) & (cap - 1);
	return i;
}

static struct rlink *
rlink_find(const struct rlinks *t, uint64_t group)
{
	size_t i;

	if (t->cap == 0)
		return NULL;
	i = rlink_slot(t->v, t->cap, group);
	return t->v[i].group != 0 ? &t->v[i] : NULL;
}

/*
 * Remembers the first name of a hard-link group (a hash table, so many
 * hard links cost no quadratic search); pointers from rlink_find do not
 * survive it.  Names, not descriptors: a tree of 100 000 hard-linked
 * files must not need as many open files.
 */
static void
rlink_add(struct rlinks *t, uint64_t group, const char *path)
{
	struct rlink *nv;
	size_t i, cap;

	if ((t->n + 1) * 2 > t->cap) {
		cap = t->cap ? t->cap * 2 : 256;
		nv = calloc(cap, sizeof(*nv));
		if (nv == NULL)
			return;		/* later names become copies */
		for (i = 0; i < t->cap; i++)
			if (t->v[i].group != 0)
				nv[rlink_slot(nv, cap, t->v[i].group)] =
				    t->v[i];
		free(t->v);
		t->v = nv;
		t->cap = cap;
	}
	i = rlink_slot(t->v, t->cap, group);
	if (t->v[i].group != 0)
		return;		/* known already */
	t->v[i].path = strdup(path);
	if (t->v[i].path == NULL)
		return;
	t->v[i].group = group;
	t->n++;
}

static void
rlinks_free(struct rlinks *t)
{
	size_t i;

	for (i = 0; i < t->cap; i++)
		free(t->v[i].path);
	free(t->v);
}

/*
 * Opens path (relative to rootfd, no leading '/') with O_PATH, beneath
 * rootfd and without following any symlink.  openat2 takes at most
 * PATH_MAX bytes, so a longer path is resolved a piece at a time: each
 * piece up to a '/' is opened beneath the directory the last one gave
 * (names never hold "..": restore_node refuses them).  fd, or -errno.
 */
static int
open_beneath(int rootfd, const char *path)
{
	struct open_how how;
	const char *p = path;
	char *piece = NULL;
	size_t len, cut;
	int dfd = rootfd, fd = -1;

	memset(&how, 0, sizeof(how));
	how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
	    RESOLVE_NO_MAGICLINKS;
	for (;;) {
		len = strlen(p);
		if (len < PATH_MAX) {
			how.flags = O_PATH | O_NOFOLLOW | O_CLOEXEC;
			fd = (int)syscall(SYS_openat2, dfd, p, &how,
			    sizeof(how));
			if (fd < 0)
				fd = -errno;
			break;
		}
		for (cut = PATH_MAX - 1; cut > 0 && p[cut] != '/'; cut--)
			;
		if (cut == 0) {
			fd = -ENAMETOOLONG;	/* no name is this long */
			break;
		}
		if (piece == NULL) {
			piece = malloc(PATH_MAX);
			if (piece == NULL) {
				fd = -ENOMEM;
				break;
			}
		}
		memcpy(piece, p, cut);
		piece[cut] = '\0';
		how.flags = O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
		fd = (int)syscall(SYS_openat2, dfd, piece, &how, sizeof(how));
		if (fd < 0) {
			fd = -errno;
			break;
		}
		if (dfd != rootfd)
			close(dfd);
		dfd = fd;
		fd = -1;
		p += cut + 1;
	}
	if (dfd != rootfd)
		close(dfd);
	free(piece);
	return fd;
}

/*
 * Removes path while it is still the inode dev/ino; 1 if it did.  dirfd:
 * the file's directory, or -1 to open it beneath the target; path: the
 * file's path in the target, with its leading '/'.
 */
static int
rs_unlink_ino(int rootfd, int dirfd, const char *path, dev_t dev, ino_t ino)
{
	const char *base = strrchr(path, '/');
	struct stat b;
	char *parent;
	int pfd = dirfd, done = 0;

	base = base != NULL ? base + 1 : path;
	if (pfd < 0 && base - path <= 1) {
		pfd = rootfd;
	} else if (pfd < 0) {
		parent = strndup(path + 1, (size_t)(base - path) - 2);
		if (parent == NULL)
			return 0;
		pfd = open_beneath(rootfd, parent);
		free(parent);
		if (pfd < 0)
			return 0;
	}
	if (fstatat(pfd, base, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
	    b.st_dev == dev && b.st_ino == ino)
		done = unlinkat(pfd, base, 0) == 0;
	if (pfd != dirfd && pfd != rootfd)
		close(pfd);
	return done;
}

/*
 * Removes a file whose content could not be written (a full disk, say):
 * a file of the right size with zeros where its data belongs must not
 * pass for a restored one.  Only while the name is still that file.
 */
static void
rs_discard(int rootfd, int dirfd, int fd, const char *path)
{
	struct stat a;

	if (fstat(fd, &a) == 0)
		(void)rs_unlink_ino(rootfd, dirfd, path, a.st_dev, a.st_ino);
}

/*
 * Makes name in dirfd another link of the group's first name: that name
 * is opened beneath the target without following any symlink (a symlink
 * planted in the target meanwhile is not followed) and linked through
 * its descriptor.  0, or -errno.
 */
static int
rlink_link(struct rs *r, const struct rlink *l, int dirfd, const char *name)
{
	char proc[64];
	int fd, rc = 0;

	fd = open_beneath(r->root_fd, l->path);
	if (fd < 0)
		return fd;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	if (linkat(AT_FDCWD, proc, dirfd, name, AT_SYMLINK_FOLLOW) != 0)
		rc = -errno;
	close(fd);
	return rc;
}

/*
 * The progress line on a terminal (never with --json or -q, never when
 * stderr is not a terminal): files and MiB written, and with the
 * snapshot's totals (a whole restore) the share done, the rate and the
 * time left.  Called on the main thread only; locked: the caller holds
 * r->mu (workers running).
 */
static void
rprogress_at(struct rs *r, int locked)
{
	uint64_t files, bytes;

	if (!tl_progress_due(&r->prog))
		return;
	if (r->nworkers > 0 && !locked)
		pthread_mutex_lock(&r->mu);
	files = r->files;
	bytes = r->bytes + r->wbytes;
	if (r->nworkers > 0 && !locked)
		pthread_mutex_unlock(&r->mu);
	tl_progress_show(&r->prog, files, r->total_files, bytes,
	    r->total_bytes, bytes, r->total_bytes);
}

static void
rprogress(struct rs *r)
{
	rprogress_at(r, 0);
}

/*
 * Large dense files are written with O_DIRECT through an aligned buffer
 * per worker: a buffered write costs this machine about 2 CPU seconds
 * per GiB in the kernel (page allocation, accounting, the copy; `dd`
 * here: 1.5 GiB buffered 2.95 s of system time, O_DIRECT 0.10 s), and
 * the final syncfs then has that much less to write out.  The last
 * partial block goes through the page cache (the descriptor leaves
 * O_DIRECT), as does everything where O_DIRECT is refused (tmpfs on
 * older kernels, some FUSE file systems): the bytes written are the same
 * either way.  Small files and files with holes are written as before.
 */
#define DIO_MIN (1U << 20)	/* files at least this large */
#define DIO_BUF (4U << 20)	/* the aligned buffer */
#define DIO_ALIGN 4096U

struct fout {
	int fd;
	unsigned char *dbuf;	/* the aligned buffer; NULL: page cache */
	size_t dlen;		/* bytes in dbuf */
	uint64_t doff;		/* file offset of dbuf[0] */
};

static int
pwrite_all(int fd, const unsigned char *p, size_t len, uint64_t off)
{
	ssize_t w;
	size_t k;

	for (k = 0; k < len; k += (size_t)w) {
		w = pwrite(fd, p + k, len - k, (off_t)(off + k));
		if (w < 0 && errno == EINTR) {
			w = 0;
			continue;
		}
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
	}
	return 0;
}

/* Leaves O_DIRECT: what the buffer holds goes through the page cache. */
static int
fout_buffered(struct fout *o)
{
	int fl = fcntl(o->fd, F_GETFL), rc = 0;

	if (fl < 0 || fcntl(o->fd, F_SETFL, fl & ~O_DIRECT) < 0)
		return -errno;
	if (o->dlen > 0)
		rc = pwrite_all(o->fd, o->dbuf, o->dlen, o->doff);
	o->doff += o->dlen;
	o->dlen = 0;
	o->dbuf = NULL;
	return rc;
}

/*
 * Writes the buffer's whole blocks with O_DIRECT and moves the rest to
 * its front; last: the rest too, through the page cache.
 */
static int
fout_flush(struct fout *o, int last)
{
	size_t whole = o->dlen & ~(size_t)(DIO_ALIGN - 1), k;
	ssize_t w;

	for (k = 0; k < whole; k += (size_t)w) {
		w = pwrite(o->fd, o->dbuf + k, whole - k, (off_t)(o->doff + k));
		if (w < 0 && errno == EINTR) {
			w = 0;
			continue;
		}
		if ((w < 0 && errno == EINVAL) ||
		    (w > 0 && (size_t)w % DIO_ALIGN != 0)) {
			/* Refused, or short mid-block: the page cache. */
			if (w > 0)
				k += (size_t)w;
			memmove(o->dbuf, o->dbuf + k, o->dlen - k);
			o->doff += k;
			o->dlen -= k;
			return fout_buffered(o);
		}
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
	}
	memmove(o->dbuf, o->dbuf + whole, o->dlen - whole);
	o->doff += whole;
	o->dlen -= whole;
	if (last && o->dlen > 0)
		return fout_buffered(o);
	return 0;
}

/* len bytes at off (in order: off is where the last write ended). */
static int
fout_write(struct fout *o, const unsigned char *p, size_t len, uint64_t off)
{
	size_t c;
	int rc;

	while (len > 0 && o->dbuf != NULL) {
		c = DIO_BUF - o->dlen;
		if (c > len)
			c = len;
		memcpy(o->dbuf + o->dlen, p, c);
		o->dlen += c;
		p += c;
		len -= c;
		off += c;
		if (o->dlen == DIO_BUF) {
			rc = fout_flush(o, 0);
			if (rc < 0)
				return rc;
		}
	}
	return len > 0 ? pwrite_all(o->fd, p, len, off) : 0;
}

/*
 * Writes a file's content: to fd (holes skipped, size set with
 * ftruncate) or to the tar (holes as zeros).  Damaged or missing blobs
 * are counted; the rest is written.  dio: an aligned DIO_BUF buffer for
 * large dense files, or NULL.  Returns 0, 1 if damaged, or -errno.
 */
/*
 * 1 if rc, a failed read of the repository, says that the repository
 * cannot be read now rather than that one object is damaged or missing:
 * its server is down or refuses us, or (S3) kept failing through every
 * retry; also no memory.  The restore stops then.  Going on would fail
 * every file that follows, each after a whole retry budget: a restore of
 * 16 000 files from a dead S3 server crawled on at 2 files a second,
 * calling each "damaged".  A local read error (EIO) is one pack's damage.
 */
static int
repo_down(const struct rs *r, int rc)
{
	switch (rc) {
	case -EBADMSG:	/* fails authentication */
	case -ENOENT:	/* not in the index, or its pack is gone */
	case -EPROTO:	/* malformed, or an unknown version */
	case -EFBIG:
	case -EINVAL:
	case -ENOKEY:	/* sealed under a key version not held */
		return 0;
	case -EIO:
		return r->remote;
	default:
		return 1;
	}
}

/* Marks the restore stopped because the repository cannot be read. */
static void
rs_set_down(struct rs *r, int rc)
{
	if (r->nworkers > 0)
		pthread_mutex_lock(&r->mu);
	if (r->down == 0)
		r->down = rc;
	r->fatal = 1;
	if (r->nworkers > 0)
		pthread_mutex_unlock(&r->mu);
}

/*
 * Writes n's content to fd (or the tar): 0, 1 if damaged data left the
 * file short (restored up to the damage), -errno if it could not be
 * written, -ECANCELED if the repository cannot be read (rs_set_down).
 */
static int
write_content(struct rs *r, struct cf_bk_blob_reader *br,
    const struct cf_bk_node *n, int fd, const char *path,
    unsigned char *dio)
{
	static const unsigned char zeros[65536];
	struct fout o = { fd, NULL, 0, 0 };
	unsigned char *buf;
	size_t len, i, k;
	uint64_t off = 0;
	ssize_t w;
	int rc, fl, damaged = 0;

	if (dio != NULL && r->ar == NULL && n->size >= DIO_MIN) {
		for (i = 0; i < n->nitems && n->items[i].hole == 0; i++)
			;
		fl = fcntl(fd, F_GETFL);
		if (i == n->nitems && fl >= 0 &&
		    fcntl(fd, F_SETFL, fl | O_DIRECT) == 0)
			o.dbuf = dio;
	}
	for (i = 0; i < n->nitems; i++) {
		if (n->items[i].hole > 0) {
			if (r->ar != NULL) {
				for (k = 0; k < n->items[i].hole; k += w) {
					len = n->items[i].hole - k;
					if (len > sizeof(zeros))
						len = sizeof(zeros);
					w = archive_write_data(r->ar, zeros,
					    len);
					if (w <= 0)
						return -EIO;
				}
			}
			off += n->items[i].hole;
			continue;
		}
		rc = br != NULL ? cf_bk_blob_reader_load(br, CF_BK_BLOB_DATA,
		    n->items[i].id, &buf, &len) :
		    cf_bk_repo_blob_load(r->repo, CF_BK_BLOB_DATA,
		    n->items[i].id, &buf, &len);
		if (rc < 0 && repo_down(r, rc)) {
			rs_set_down(r, rc);
			return -ECANCELED;
		}
		if (rc < 0) {
			if (!damaged)
				fprintf(stderr, "\ncoffer: %s: damaged or "
				    "missing data (%s)\n", path,
				    strerror(-rc));
			damaged = 1;
			/*
			 * The blob's length is unknown: what follows cannot
			 * be placed, so the file stops here.
			 */
			break;
		}
		if (r->ar != NULL) {
			w = archive_write_data(r->ar, buf, len);
			if (w < 0 || (size_t)w != len) {
				free(buf);
				return -EIO;
			}
		} else {
			rc = fout_write(&o, buf, len, off);
			if (rc < 0) {
				free(buf);
				return rc;
			}
		}
		free(buf);
		off += len;
	}
	if (o.dbuf != NULL) {
		rc = fout_flush(&o, 1);
		if (rc < 0)
			return rc;
	}
	if (r->ar != NULL && off < n->size) {
		/* A damaged file: pad so the archive stays well-formed. */
		for (k = off; k < n->size; k += w) {
			len = n->size - k;
			if (len > sizeof(zeros))
				len = sizeof(zeros);
			w = archive_write_data(r->ar, zeros, len);
			if (w <= 0)
				return -EIO;
		}
	}
	if (r->ar == NULL && ftruncate(fd, (off_t)n->size) < 0)
		return -errno;
	return damaged;
}

static void
set_xattrs_fd(int fd, const struct cf_bk_node *n, const char *path)
{
	size_t i;

	for (i = 0; i < n->nxattrs; i++)
		if (fsetxattr(fd, n->xattrs[i].name, n->xattrs[i].value,
		    n->xattrs[i].value_len, 0) < 0)
			fprintf(stderr, "coffer: %s: xattr %s: %s\n", path,
			    n->xattrs[i].name, strerror(errno));
}

static void
times_of(const struct cf_bk_node *n, struct timespec ts[2])
{
	ts[0].tv_sec = n->atime / 1000000000;
	ts[0].tv_nsec = n->atime % 1000000000;
	ts[1].tv_sec = n->mtime / 1000000000;
	ts[1].tv_nsec = n->mtime % 1000000000;
	if (ts[0].tv_nsec < 0) {
		ts[0].tv_nsec += 1000000000;
		ts[0].tv_sec--;
	}
	if (ts[1].tv_nsec < 0) {
		ts[1].tv_nsec += 1000000000;
		ts[1].tv_sec--;
	}
}

/* Owner, mode, times of an open file or directory (owner first: chown
 * clears set-id bits). */
static void
set_meta_fd(struct rs *r, int fd, const struct cf_bk_node *n,
    const char *path, int damaged)
{
	struct timespec ts[2];

	set_xattrs_fd(fd, n, path);
	if (r->is_root && fchown(fd, n->uid, n->gid) < 0)
		fprintf(stderr, "coffer: %s: chown: %s\n", path,
		    strerror(errno));
	if (fchmod(fd, n->mode) < 0)
		fprintf(stderr, "coffer: %s: chmod: %s\n", path,
		    strerror(errno));
	/*
	 * A file restored only up to damaged data keeps the time of the
	 * restore: with the snapshot's mtime and size it would pass for
	 * a whole one, also to a restore run again (rs_already).
	 */
	if (damaged)
		return;
	times_of(n, ts);
	if (futimens(fd, ts) < 0)
		fprintf(stderr, "coffer: %s: times: %s\n", path,
		    strerror(errno));
}

/* ---- restore workers -------------------------------------------------- */

static int
rs_fatal(struct rs *r)
{
	int f;

	if (r->nworkers == 0)
		return r->fatal;
	pthread_mutex_lock(&r->mu);
	f = r->fatal;
	pthread_mutex_unlock(&r->mu);
	return f;
}

/* Drops a reference to a tree; the last one frees it. */
static void
tref_put(struct rs *r, struct tref *tr)
{
	size_t left;

	if (r->nworkers > 0)
		pthread_mutex_lock(&r->mu);
	left = --tr->refs;
	if (r->nworkers > 0)
		pthread_mutex_unlock(&r->mu);
	if (left == 0) {
		cf_bk_tree_free(tr->t);
		free(tr);
	}
}

/*
 * Waits on cv (r->mu held), waking every 200 ms to keep the progress
 * line moving while the workers write large files.
 */
static void
rs_wait(struct rs *r, pthread_cond_t *cv)
{
	struct timespec ts;

	if (!r->prog.on) {
		pthread_cond_wait(cv, &r->mu);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += 200000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	(void)pthread_cond_timedwait(cv, &r->mu, &ts);
	rprogress_at(r, 1);
}

/*
 * Waits until the workers have written every queued file: each queued
 * job holds an open descriptor, so a restore under a low RLIMIT_NOFILE
 * that meets EMFILE drains the queue and tries again.  1 if there was
 * anything to wait for.
 */
static int
rs_drain(struct rs *r)
{
	int waited = 0;

	if (r->nworkers == 0)
		return 0;
	pthread_mutex_lock(&r->mu);
	while (r->qlen > 0 || r->busy > 0) {
		waited = 1;
		rs_wait(r, &r->cv_space);
	}
	pthread_mutex_unlock(&r->mu);
	return waited;
}

/* Queues a file's content for the workers; takes fd on success. */
static int
fjob_push(struct rs *r, int fd, const struct cf_bk_node *n, struct tref *tr,
    const char *path)
{
	struct fjob j;

	j.fd = fd;
	j.n = n;
	j.tr = tr;
	j.path = strdup(path);
	if (j.path == NULL)
		return -ENOMEM;
	pthread_mutex_lock(&r->mu);
	while (r->qlen >= r->qcap)
		rs_wait(r, &r->cv_space);
	tr->refs++;
	r->q[(r->qhead + r->qlen) % RS_QUEUE] = j;
	r->qlen++;
	pthread_cond_signal(&r->cv_job);
	pthread_mutex_unlock(&r->mu);
	return 0;
}

/*
 * A worker: loads a file's blobs with its own reader, writes them with
 * pwrite, sets the size, then the file's metadata, and closes it.  A
 * file write that fails with EIO, ENOSPC or EDQUOT stops the restore
 * (as on the main thread); other failures are counted.
 */
/* Notes that the content of a hard-link group failed (a worker). */
static void
rs_fgroup_add(struct rs *r, uint64_t group, int fd)
{
	struct fgroup *nv;
	struct stat st;

	if (fstat(fd, &st) < 0)
		return;
	pthread_mutex_lock(&r->mu);
	if (r->nfg == r->fgcap) {
		nv = realloc(r->fgroups, (r->fgcap ? 2 * r->fgcap : 8) *
		    sizeof(*nv));
		if (nv == NULL) {
			pthread_mutex_unlock(&r->mu);
			return;
		}
		r->fgroups = nv;
		r->fgcap = r->fgcap ? 2 * r->fgcap : 8;
	}
	r->fgroups[r->nfg].group = group;
	r->fgroups[r->nfg].dev = st.st_dev;
	r->fgroups[r->nfg].ino = st.st_ino;
	r->nfg++;
	pthread_mutex_unlock(&r->mu);
}

/*
 * After the workers: removes the names linked to a first name whose
 * content failed (still that inode), named, no longer counted as
 * restored.  Without this they stayed, empty or short, counted.
 */
static void
rs_unlink_failed(struct rs *r)
{
	size_t i, k;

	for (i = 0; i < r->nlnames && r->nfg > 0; i++) {
		for (k = 0; k < r->nfg; k++)
			if (r->fgroups[k].group == r->lnames[i].group)
				break;
		if (k == r->nfg || !rs_unlink_ino(r->root_fd, -1,
		    r->lnames[i].path, r->fgroups[k].dev, r->fgroups[k].ino))
			continue;
		fprintf(stderr, "\ncoffer: %s: not restored (a hard link of "
		    "a file not restored)\n", r->lnames[i].path);
		r->files--;
		r->failed++;
	}
	for (i = 0; i < r->nlnames; i++)
		free(r->lnames[i].path);
	free(r->lnames);
	free(r->fgroups);
	r->lnames = NULL;
	r->fgroups = NULL;
	r->nlnames = r->nfg = 0;
}

/* Remembers a name the walk linked (path with its leading '/'). */
static void
rs_lname_add(struct rs *r, uint64_t group, const char *path)
{
	struct lname *nv;
	char *p;

	if (r->nworkers == 0)
		return;		/* the content was written before the link */
	if (r->nlnames == r->lncap) {
		nv = realloc(r->lnames, (r->lncap ? 2 * r->lncap : 16) *
		    sizeof(*nv));
		if (nv == NULL)
			return;
		r->lnames = nv;
		r->lncap = r->lncap ? 2 * r->lncap : 16;
	}
	p = strdup(path);
	if (p == NULL)
		return;
	r->lnames[r->nlnames].group = group;
	r->lnames[r->nlnames].path = p;
	r->nlnames++;
}

static void *
rs_worker(void *arg)
{
	struct rsw *w = arg;
	struct rs *r = w->r;
	struct fjob j;
	int rc, stopped;

	pthread_mutex_lock(&r->mu);
	for (;;) {
		while (r->qlen == 0 && !r->stop)
			pthread_cond_wait(&r->cv_job, &r->mu);
		if (r->qlen == 0)
			break;		/* stop, and drained */
		j = r->q[r->qhead];
		r->qhead = (r->qhead + 1) % RS_QUEUE;
		r->qlen--;
		r->busy++;
		/*
		 * The repository cannot be read: what is queued is not
		 * started (each would wait out a retry budget).  After a
		 * failed write the rest is tried: a smaller file may fit.
		 */
		stopped = r->down != 0;
		pthread_cond_signal(&r->cv_space);
		pthread_mutex_unlock(&r->mu);
		rc = stopped ? -ECANCELED : write_content(r, w->br, j.n, j.fd,
		    j.path, w->dio);
		if (rc >= 0) {
			if (rc > 0)
				w->damaged++;
			set_meta_fd(r, j.fd, j.n, j.path, rc > 0);
		} else {
			if (rc == -ECANCELED)
				fprintf(stderr, "\ncoffer: %s: not restored "
				    "(the restore stopped)\n", j.path);
			else
				fprintf(stderr, "\ncoffer: %s: %s; not "
				    "restored\n", j.path, strerror(-rc));
			if (j.n->link_group != 0)
				rs_fgroup_add(r, j.n->link_group, j.fd);
			rs_discard(r->root_fd, -1, j.fd, j.path);
			w->failed++;
		}
		close(j.fd);
		free(j.path);
		pthread_mutex_lock(&r->mu);
		if (rc == -EIO || rc == -ENOSPC || rc == -EDQUOT)
			r->fatal = 1;
		if (rc >= 0)
			r->wbytes += j.n->size;
		r->busy--;
		pthread_cond_signal(&r->cv_space);	/* rs_finish's wait */
		pthread_mutex_unlock(&r->mu);
		tref_put(r, j.tr);
		pthread_mutex_lock(&r->mu);
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

/* Starts the workers; with none, restore writes on the main thread. */
static void
rs_start(struct rs *r)
{
	struct rlimit rl;
	size_t i;

	/*
	 * Each queued file holds a descriptor, and the workers open packs
	 * and the walk directories: under a low RLIMIT_NOFILE the queue is
	 * shorter (a quarter of what is left above 32), at least 1.
	 */
	r->qcap = RS_QUEUE;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
	    rl.rlim_cur != RLIM_INFINITY &&
	    rl.rlim_cur < 32 + 4 * RS_QUEUE)
		r->qcap = rl.rlim_cur > 36 ? (size_t)(rl.rlim_cur - 32) / 4 : 1;
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv_job, NULL);
	pthread_cond_init(&r->cv_space, NULL);
	for (i = 0; i < RS_WORKERS; i++) {
		r->w[i].r = r;
		if (cf_bk_blob_reader_new(&r->w[i].br, r->repo) < 0)
			break;
		if (posix_memalign((void **)&r->w[i].dio, DIO_ALIGN,
		    DIO_BUF) != 0)
			r->w[i].dio = NULL;	/* the page cache, then */
		if (pthread_create(&r->w[i].tid, NULL, rs_worker,
		    &r->w[i]) != 0) {
			cf_bk_blob_reader_free(r->w[i].br);
			r->w[i].br = NULL;
			free(r->w[i].dio);
			r->w[i].dio = NULL;
			break;
		}
		r->nworkers++;
	}
}

/* Lets the workers finish every queued file, joins them, adds counts. */
static void
rs_finish(struct rs *r)
{
	size_t i, n = r->nworkers;

	if (n == 0)
		return;
	pthread_mutex_lock(&r->mu);
	while (r->prog.on && (r->qlen > 0 || r->busy > 0))
		rs_wait(r, &r->cv_space);	/* signalled per job taken */
	r->stop = 1;
	pthread_cond_broadcast(&r->cv_job);
	pthread_mutex_unlock(&r->mu);
	for (i = 0; i < n; i++) {
		pthread_join(r->w[i].tid, NULL);
		cf_bk_blob_reader_free(r->w[i].br);
		free(r->w[i].dio);
		r->w[i].dio = NULL;
		r->damaged += r->w[i].damaged;
		r->failed += r->w[i].failed;
		r->files -= r->w[i].failed;	/* counted when queued */
	}
	r->bytes += r->wbytes;
	r->nworkers = 0;
	if (r->fatal && r->failed == 0)
		r->failed++;
	pthread_cond_destroy(&r->cv_job);
	pthread_cond_destroy(&r->cv_space);
	pthread_mutex_destroy(&r->mu);
}

static int restore_tree(struct rs *r, int dirfd,
    const unsigned char id[CF_BK_ID_BYTES], char *path, size_t plen,
    char **filter, int depth);

/* Why the repository cannot be read (-errno), or 0. */
static int
rs_down(struct rs *r)
{
	int down;

	if (r->nworkers > 0)
		pthread_mutex_lock(&r->mu);
	down = r->down;
	if (r->nworkers > 0)
		pthread_mutex_unlock(&r->mu);
	return down;
}

/* The walk's one message when it stops early (main thread). */
static void
rs_stop_msg(struct rs *r)
{
	int down = rs_down(r);

	if (r->stopped)
		return;
	r->stopped = 1;
	if (down == 0) {
		fprintf(stderr, "\ncoffer: stopping the restore\n");
		return;
	}
	if (down == -ENOMEM) {
		fprintf(stderr, "\ncoffer: out of memory; stopping the "
		    "restore\n");
		return;
	}
	fprintf(stderr, "\ncoffer: the repository cannot be read: %s; "
	    "stopping the restore\n", tl_repo_strerror(r->url, down));
	if (r->ar == NULL)
		fprintf(stderr, "coffer: the files restored so far are kept; "
		    "once the repository can be read again, the same restore "
		    "into the same target restores the rest\n");
}

/*
 * Tells a remote repository's pack cache which packs the file about to
 * be queued needs, so that they load while the workers write what is
 * ahead of it (no-op on local repositories).
 */
static void
rs_hint(struct rs *r, const struct cf_bk_node *n)
{
	size_t i;

	for (i = 0; i < n->nitems; i++)
		if (n->items[i].hole == 0)
			cf_bk_repo_prefetch(r->repo, CF_BK_BLOB_DATA,
			    n->items[i].id);
}

static int
refuse(struct rs *r, const char *path)
{
	fprintf(stderr, "coffer: %s exists in the target; not overwritten\n",
	    path);
	r->refused++;
	return 0;
}

/*
 * 1 if dirfd's entry n->name is n as a restore leaves it: the same type,
 * permissions, owner (as root) and, for a regular file, size and mtime
 * to the nanosecond (restore sets the mtime last, after the content); a
 * symlink's target; a device's number.  A restore run again after one
 * that stopped (the repository could not be read, the disk filled)
 * skips such entries instead of refusing them.
 */
static int
rs_already(const struct rs *r, int dirfd, const struct cf_bk_node *n)
{
	struct timespec ts[2];
	struct stat st;
	char *tgt;
	ssize_t k;
	size_t tl;
	int same;

	if (fstatat(dirfd, n->name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return 0;
	/*
	 * Made by this restore's user (as root: owned as in the
	 * snapshot): a file another user planted in a target they may
	 * write to is refused, whatever times they gave it.  A file of no
	 * link group has no other name.
	 */
	if (r->is_root ? st.st_uid != n->uid || st.st_gid != n->gid :
	    st.st_uid != geteuid())
		return 0;
	if (n->link_group == 0 && S_ISREG(st.st_mode) && st.st_nlink != 1)
		return 0;
	switch (n->type) {
	case CF_BK_NODE_FILE:
		times_of(n, ts);
		return S_ISREG(st.st_mode) && (uint64_t)st.st_size == n->size &&
		    (st.st_mode & 07777) == (n->mode & 07777) &&
		    st.st_mtim.tv_sec == ts[1].tv_sec &&
		    st.st_mtim.tv_nsec == ts[1].tv_nsec;
	case CF_BK_NODE_SYMLINK:
		tl = strlen(n->target);
		if (!S_ISLNK(st.st_mode) || (uint64_t)st.st_size != tl)
			return 0;
		tgt = malloc(tl + 1);
		if (tgt == NULL)
			return 0;
		k = readlinkat(dirfd, n->name, tgt, tl + 1);
		same = k == (ssize_t)tl && memcmp(tgt, n->target, tl) == 0;
		free(tgt);
		return same;
	case CF_BK_NODE_FIFO:
		return S_ISFIFO(st.st_mode) &&
		    (st.st_mode & 07777) == (n->mode & 07777);
	case CF_BK_NODE_SOCKET:
		return S_ISSOCK(st.st_mode) &&
		    (st.st_mode & 07777) == (n->mode & 07777);
	case CF_BK_NODE_CHR:
	case CF_BK_NODE_BLK:
		return (n->type == CF_BK_NODE_CHR ? S_ISCHR(st.st_mode) :
		    S_ISBLK(st.st_mode)) && st.st_rdev == (dev_t)n->rdev &&
		    (st.st_mode & 07777) == (n->mode & 07777);
	default:
		return 0;
	}
}

/* 1 if dirfd's name is the same inode as the group's first name. */
static int
rlink_same(struct rs *r, const struct rlink *l, int dirfd, const char *name)
{
	struct stat a, b;
	int fd, same;

	if (r->root_fd < 0)
		return 0;
	fd = open_beneath(r->root_fd, l->path);
	if (fd < 0)
		return 0;
	same = fstat(fd, &a) == 0 &&
	    fstatat(dirfd, name, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
	    a.st_dev == b.st_dev && a.st_ino == b.st_ino;
	close(fd);
	return same;
}

/*
 * An entry of that name exists: skipped if it is the snapshot's as a
 * restore leaves it (rs_already), else refused.
 */
static int
rs_exists(struct rs *r, int dirfd, const struct cf_bk_node *n,
    const char *path)
{
	const struct rlink *l = n->link_group != 0 ?
	    rlink_find(&r->links, n->link_group) : NULL;

	/* Another name of a group seen: also the same inode. */
	if (!rs_already(r, dirfd, n) ||
	    (l != NULL && !rlink_same(r, l, dirfd, n->name)))
		return refuse(r, path);
	r->already++;
	if (n->link_group != 0 && rlink_find(&r->links, n->link_group) == NULL)
		rlink_add(&r->links, n->link_group, path + 1);
	return 0;
}

static int
restore_special(struct rs *r, int dirfd, const struct cf_bk_node *n,
    const char *path)
{
	struct timespec ts[2];
	mode_t fmt;

	switch (n->type) {
	case CF_BK_NODE_FIFO:
		fmt = S_IFIFO;
		break;
	case CF_BK_NODE_SOCKET:
		fmt = S_IFSOCK;
		break;
	case CF_BK_NODE_CHR:
		fmt = S_IFCHR;
		break;
	default:
		fmt = S_IFBLK;
		break;
	}
	if (n->type == CF_BK_NODE_SYMLINK) {
		if (symlinkat(n->target, dirfd, n->name) < 0)
			return errno == EEXIST ? rs_exists(r, dirfd, n, path) :
			    -errno;
	} else if (mknodat(dirfd, n->name, fmt | (n->mode & 0777),
	    (dev_t)n->rdev) < 0) {
		return errno == EEXIST ? rs_exists(r, dirfd, n, path) : -errno;
	}
	if (r->is_root && fchownat(dirfd, n->name, n->uid, n->gid,
	    AT_SYMLINK_NOFOLLOW) < 0)
		fprintf(stderr, "coffer: %s: chown: %s\n", path,
		    strerror(errno));
	if (n->type != CF_BK_NODE_SYMLINK &&
	    fchmodat(dirfd, n->name, n->mode, 0) < 0)
		fprintf(stderr, "coffer: %s: chmod: %s\n", path,
		    strerror(errno));
	times_of(n, ts);
	if (utimensat(dirfd, n->name, ts, AT_SYMLINK_NOFOLLOW) < 0)
		fprintf(stderr, "coffer: %s: times: %s\n", path,
		    strerror(errno));
	r->files++;
	return 0;
}

static int
restore_node(struct rs *r, int dirfd, const struct cf_bk_node *n,
    struct tref *tr, char *path, size_t plen, char **filter, int depth)
{
	struct rlink *l;
	int fd, rc;

	if (n->name[0] == '\0' || strchr(n->name, '/') != NULL ||
	    strcmp(n->name, ".") == 0 || strcmp(n->name, "..") == 0) {
		fprintf(stderr, "coffer: refusing entry name in %s\n", path);
		r->damaged++;
		return 0;
	}
	if (n->type == CF_BK_NODE_DIR) {
		if (depth >= MAX_DEPTH)
			return -ELOOP;
		if (mkdirat(dirfd, n->name, 0700) < 0 && errno != EEXIST)
			return -errno;
		fd = openat(dirfd, n->name, O_RDONLY | O_DIRECTORY |
		    O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, "coffer: %s: %s; not restored\n", path,
			    strerror(errno));
			r->refused++;
			return 0;
		}
		rc = restore_tree(r, fd, n->subtree, path, plen, filter,
		    depth + 1);
		if (rc >= 0 && filter == NULL)
			set_meta_fd(r, fd, n, path, 0);
		close(fd);
		r->dirs++;
		return rc;
	}
	if (n->link_group != 0) {
		l = rlink_find(&r->links, n->link_group);
		if (l != NULL && r->root_fd >= 0) {
			rc = rlink_link(r, l, dirfd, n->name);
			if (rc == 0) {
				rs_lname_add(r, n->link_group, path);
				r->files++;
				return 0;
			}
			if (rc == -EEXIST)
				return rs_exists(r, dirfd, n, path);
			/* else: restore this name as its own copy */
		}
	}
	if (n->type != CF_BK_NODE_FILE) {
		rc = restore_special(r, dirfd, n, path);
		if (rc == 0 && n->link_group != 0 &&
		    rlink_find(&r->links, n->link_group) == NULL)
			rlink_add(&r->links, n->link_group, path + 1);
		return rc;
	}
	rs_hint(r, n);
	fd = openat(dirfd, n->name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
	    O_CLOEXEC, 0600);
	if (fd < 0 && errno == EMFILE && rs_drain(r))
		fd = openat(dirfd, n->name, O_WRONLY | O_CREAT | O_EXCL |
		    O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return errno == EEXIST ? rs_exists(r, dirfd, n, path) : -errno;
	if (r->nworkers > 0) {
		rc = fjob_push(r, fd, n, tr, path);
		if (rc < 0) {
			close(fd);
			return rc;
		}
	} else {
		rc = write_content(r, NULL, n, fd, path, NULL);
		if (rc < 0) {
			rs_discard(r->root_fd, dirfd, fd, path);
			close(fd);
			return rc;
		}
		r->bytes += n->size;
		if (rc > 0)
			r->damaged++;
		set_meta_fd(r, fd, n, path, rc > 0);
		close(fd);
	}
	r->files++;
	rprogress(r);
	if (n->link_group != 0 && rlink_find(&r->links, n->link_group) == NULL)
		rlink_add(&r->links, n->link_group, path + 1);
	return 0;
}

/*
 * Gives a file with holes a sparse map (pax GNU.sparse 1.0), so that
 * holes take no room in the tar: the data regions, as the blobs'
 * plaintext lengths in the index give them.  The pax writer then drops
 * the holes' zeros write_content passes it.  Regions are widened to
 * 512-byte boundaries (with the zeros around them): GNU tar reads each
 * region of a 1.0 map from whole archive blocks.  A blob the index does
 * not list leaves the file dense (its damage is reported when read).
 */
static void
tar_sparse(struct rs *r, struct archive_entry *e, const struct cf_bk_node *n)
{
	const struct cf_bk_index *idx = cf_bk_repo_index(r->repo);
	struct cf_bk_blob_loc loc;
	uint64_t off = 0, start = 0, end = 0, s, t;
	size_t i;
	int holes = 0, open = 0, any = 0;

	for (i = 0; i < n->nitems; i++)
		holes |= n->items[i].hole > 0;
	if (!holes)
		return;
	for (i = 0; i <= n->nitems; i++) {
		if (i < n->nitems && n->items[i].hole == 0) {
			if (cf_bk_index_lookup(idx, CF_BK_BLOB_DATA,
			    n->items[i].id, &loc) < 0)
				goto dense;
			if (!open)
				s = off;
			open = 1;
			off += loc.desc.ulen;
			continue;
		}
		if (open) {
			/* The region [s, off), block-aligned. */
			s &= ~(uint64_t)511;
			t = (off + 511) & ~(uint64_t)511;
			if (t > n->size)
				t = n->size;
			if (any && s <= end) {
				end = t;	/* overlaps the last: merge */
			} else {
				if (any)
					archive_entry_sparse_add_entry(e,
					    (la_int64_t)start,
					    (la_int64_t)(end - start));
				start = s;
				end = t;
				any = 1;
			}
			open = 0;
		}
		if (i < n->nitems)
			off += n->items[i].hole;
	}
	if (off != n->size)
		goto dense;	/* not as the tree says: leave it dense */
	if (any)
		archive_entry_sparse_add_entry(e, (la_int64_t)start,
		    (la_int64_t)(end - start));
	else
		archive_entry_sparse_add_entry(e, (la_int64_t)n->size, 0);
	return;
dense:
	archive_entry_sparse_clear(e);
}

static int
tar_node(struct rs *r, const struct cf_bk_node *n, char *path, size_t plen,
    char **filter, int depth)
{
	struct archive_entry *e;
	struct rlink *l;
	mode_t fmt;
	size_t i;
	int rc = 0;

	e = archive_entry_new();
	if (e == NULL)
		return -ENOMEM;
	archive_entry_set_pathname(e, path + 1);	/* no leading '/' */
	archive_entry_set_perm(e, n->mode);
	archive_entry_set_uid(e, n->uid);
	archive_entry_set_gid(e, n->gid);
	archive_entry_set_mtime(e, n->mtime / 1000000000,
	    n->mtime % 1000000000);
	archive_entry_set_atime(e, n->atime / 1000000000,
	    n->atime % 1000000000);
	for (i = 0; i < n->nxattrs; i++)
		archive_entry_xattr_add_entry(e, n->xattrs[i].name,
		    n->xattrs[i].value, n->xattrs[i].value_len);
	switch (n->type) {
	case CF_BK_NODE_DIR: fmt = AE_IFDIR; break;
	case CF_BK_NODE_SYMLINK: fmt = AE_IFLNK; break;
	case CF_BK_NODE_FIFO: fmt = AE_IFIFO; break;
	case CF_BK_NODE_SOCKET: fmt = AE_IFSOCK; break;
	case CF_BK_NODE_CHR: fmt = AE_IFCHR; break;
	case CF_BK_NODE_BLK: fmt = AE_IFBLK; break;
	default: fmt = AE_IFREG; break;
	}
	archive_entry_set_filetype(e, fmt);
	if (n->type == CF_BK_NODE_SYMLINK)
		archive_entry_set_symlink(e, n->target);
	if (n->type == CF_BK_NODE_CHR || n->type == CF_BK_NODE_BLK)
		archive_entry_set_rdev(e, (dev_t)n->rdev);
	l = n->link_group != 0 ? rlink_find(&r->links, n->link_group) : NULL;
	if (l != NULL && l->path != NULL) {
		archive_entry_set_hardlink(e, l->path);
		archive_entry_set_size(e, 0);
	} else if (n->type == CF_BK_NODE_FILE) {
		archive_entry_set_size(e, (la_int64_t)n->size);
		tar_sparse(r, e, n);
	}
	if (archive_write_header(r->ar, e) < ARCHIVE_WARN) {
		fprintf(stderr, "coffer: tar: %s\n",
		    archive_error_string(r->ar));
		archive_entry_free(e);
		return -EIO;
	}
	archive_entry_free(e);
	if (n->type == CF_BK_NODE_DIR) {
		r->dirs++;
		return restore_tree(r, -1, n->subtree, path, plen, filter,
		    depth + 1);
	}
	r->files++;
	if (l == NULL && n->link_group != 0)
		rlink_add(&r->links, n->link_group, path + 1);
	if (l == NULL && n->type == CF_BK_NODE_FILE) {
		rs_hint(r, n);
		rc = write_content(r, NULL, n, -1, path, NULL);
		if (rc >= 0)
			r->bytes += n->size;
		if (rc > 0) {
			r->damaged++;
			rc = 0;
		}
	}
	rprogress(r);
	return rc;
}

/*
 * Restores the tree id into dirfd (or the tar if dirfd < 0).  path holds
 * the directory's path ("" for the root) in an RS_PATH_CAP buffer; filter,
 * if not NULL, the remaining --path components.
 */
static int
restore_tree(struct rs *r, int dirfd, const unsigned char id[CF_BK_ID_BYTES],
    char *path, size_t plen, char **filter, int depth)
{
	struct cf_bk_tree *t = NULL;
	struct tref *tr;
	size_t i, nlen;
	int rc, matched = 0;

	rc = cf_bk_repo_tree_load(r->repo, id, &t);
	if (rc < 0 && repo_down(r, rc)) {
		rs_set_down(r, rc);
		rs_stop_msg(r);
		return rc;
	}
	if (rc < 0) {
		fprintf(stderr, "\ncoffer: %s/: directory damaged or missing "
		    "(%s); its contents are not restored\n", path,
		    strerror(-rc));
		r->damaged++;
		return 0;
	}
	tr = malloc(sizeof(*tr));
	if (tr == NULL) {
		cf_bk_tree_free(t);
		return -ENOMEM;
	}
	tr->t = t;
	tr->refs = 1;
	for (i = 0; i < t->count; i++) {
		const struct cf_bk_node *n = &t->nodes[i];

		if (filter != NULL && filter[0] != NULL &&
		    strcmp(filter[0], n->name) != 0)
			continue;
		matched = 1;
		nlen = strlen(n->name);
		if (plen + 1 + nlen + 1 > RS_PATH_CAP) {
			/* Unreachable: depth and names are bounded. */
			fprintf(stderr, "coffer: %s/%s: path too long\n", path,
			    n->name);
			r->failed++;
			continue;
		}
		path[plen] = '/';
		memcpy(path + plen + 1, n->name, nlen + 1);
		if (r->ar != NULL)
			rc = tar_node(r, n, path, plen + 1 + nlen,
			    filter != NULL && filter[1] != NULL ? filter + 1 :
			    NULL, depth);
		else
			rc = restore_node(r, dirfd, n, tr, path, plen + 1 + nlen,
			    filter != NULL && filter[1] != NULL ? filter + 1 :
			    NULL, depth);
		/* Named unless the stop below explains it. */
		if (rc < 0 && rc != -ECANCELED && !r->stopped) {
			fprintf(stderr, "\ncoffer: %s: %s; not restored\n",
			    path, strerror(-rc));
			if (rc == -EIO || rc == -ENOSPC || rc == -EDQUOT) {
				path[plen] = '\0';
				goto out;
			}
			r->failed++;
			rc = 0;
		}
		if (rs_fatal(r) || rc < 0) {
			/*
			 * A write failed (named), or the repository cannot be
			 * read: stop, and say so once.
			 */
			rs_stop_msg(r);
			path[plen] = '\0';
			if (rc >= 0)
				rc = rs_down(r) < 0 ? rs_down(r) : -EIO;
			goto out;
		}
		path[plen] = '\0';
	}
	if (filter != NULL && filter[0] != NULL && !matched) {
		fprintf(stderr, "coffer: %s/%s: not in the snapshot\n", path,
		    filter[0]);
		r->failed++;
	}
	rc = 0;
out:
	tref_put(r, tr);
	return rc;
}

/*
 * The restore's plan for a remote repository's pack cache: every data
 * blob the restore will read, told to the cache before it starts
 * (cf_bk_repo_pack_cache_plan), so that a pack files further on need
 * again is kept rather than dropped and fetched a second time (hints
 * reach only the files queued ahead).  Walks the trees as restore_tree
 * does: the same filter, one content per hard-link group.  A tree that
 * cannot be loaded is left for the restore to report.  The restore then
 * loads the trees again (from their own packs, which are small).
 */
static void
rs_plan(struct cf_bk_repo *repo, const unsigned char id[CF_BK_ID_BYTES],
    char **filter, int depth, struct rlinks *pl)
{
	struct cf_bk_tree *t = NULL;
	size_t i, k;

	if (depth > MAX_DEPTH || cf_bk_repo_tree_load(repo, id, &t) < 0)
		return;
	for (i = 0; i < t->count; i++) {
		const struct cf_bk_node *n = &t->nodes[i];

		if (filter != NULL && filter[0] != NULL &&
		    strcmp(filter[0], n->name) != 0)
			continue;
		if (n->type == CF_BK_NODE_DIR) {
			rs_plan(repo, n->subtree, filter != NULL &&
			    filter[1] != NULL ? filter + 1 : NULL, depth + 1,
			    pl);
			continue;
		}
		if (n->type != CF_BK_NODE_FILE)
			continue;
		/* One content per hard-link group (no memory for the table:
		 * later names are planned too, which only keeps packs). */
		if (n->link_group != 0) {
			if (rlink_find(pl, n->link_group) != NULL)
				continue;
			rlink_add(pl, n->link_group, "");
		}
		for (k = 0; k < n->nitems; k++)
			if (n->items[k].hole == 0)
				cf_bk_repo_pack_cache_plan(repo,
				    n->items[k].id);
	}
	cf_bk_tree_free(t);
}

/*
 * GETs a restore keeps in flight on a remote repository:
 * COFFER_S3_CONNECTIONS (1..16, default 4; docs/s3.md).
 */
static unsigned
s3_conns(void)
{
	const char *v = getenv("COFFER_S3_CONNECTIONS");
	char *end;
	long n;

	if (v == NULL || *v == '\0')
		return 4;
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno != 0 || *end != '\0' || n < 1 || n > 16) {
		fprintf(stderr, "coffer: COFFER_S3_CONNECTIONS=%s: not 1..16; "
		    "using 4\n", v);
		return 4;
	}
	return (unsigned)n;
}

/* Finds the snapshot by "latest", a full id or an id prefix (>= 4). */
static int
resolve_snapshot(struct session *s, const char *want, unsigned char id[32],
    struct cf_bk_snapshot **snap)
{
	struct snap_ent *v = NULL;
	size_t n = 0, i, bad, hits = 0, pick = 0;
	char hex[65];
	int rc;

	*snap = NULL;
	rc = snaps_load(s, &v, &n, &bad);
	if (rc < 0) {
		fprintf(stderr, "coffer: listing snapshots: %s\n",
		    strerror(-rc));
		return cf_ks_exit_code(rc);
	}
	if (strcmp(want, "latest") == 0) {
		hits = n > 0;
		pick = n - 1;
	} else if (strlen(want) >= 4) {
		for (i = 0; i < n; i++) {
			cf_bk_id_hex(v[i].id, hex);
			if (strncmp(hex, want, strlen(want)) == 0) {
				hits++;
				pick = i;
			}
		}
	}
	if (hits == 0 && bad > 0) {
		/* It may be one of those: damage, not a typo. */
		fprintf(stderr, "coffer: snapshot %s: not among the readable "
		    "snapshots; %zu could not be read (named above)\n", want,
		    bad);
		snaps_free(v, n);
		return CF_EXIT_INTEGRITY;
	}
	if (hits != 1) {
		fprintf(stderr, "coffer: snapshot %s: %s\n", want, hits == 0 ?
		    "not found (coffer snapshots NAME lists them)" :
		    "ambiguous; give more of its id");
		snaps_free(v, n);
		return CF_EXIT_FAIL;
	}
	memcpy(id, v[pick].id, CF_BK_ID_BYTES);
	*snap = v[pick].s;
	v[pick].s = NULL;
	snaps_free(v, n);
	return CF_EXIT_OK;
}

int
cmd_restore(struct tl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "repo", required_argument, NULL, 'r' },
		{ "target", required_argument, NULL, 'T' },
		{ "to-tar", required_argument, NULL, 'a' },
		{ "path", required_argument, NULL, 'p' },
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	struct session s;
	struct rs r;
	struct cf_bk_pc_stats pcs;
	struct cf_bk_snapshot *snap = NULL;
	unsigned char sid[CF_BK_ID_BYTES];
	const char *repo = NULL, *target = NULL, *tarf = NULL, *want = "latest";
	char *pathbuf = NULL, *pcopy = NULL, *filter[MAX_DEPTH + 2], *tok;
	char hex[65], *save = NULL;
	size_t nf = 0;
	int c, ret, rc, dirfd = -1;
	int64_t t0 = now_ns();
	json_t *j;

	memset(&r, 0, sizeof(r));
	memset(&pcs, 0, sizeof(pcs));
	r.root_fd = -1;
	memset(&s, 0, sizeof(s));
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			repo = optarg;
			break;
		case 'T':
			target = optarg;
			break;
		case 'a':
			tarf = optarg;
			break;
		case 'p':
			pcopy = optarg;
			break;
		case 'j':
			ctx->json = 1;
			break;
		default:
			return tl_usage(&tl_cmd_restore, "restore: bad option");
		}
	}
	if (optind == argc - 2)
		want = argv[optind + 1];
	else if (optind != argc - 1)
		return tl_usage(&tl_cmd_restore, "restore: give NAME and "
		    "optionally SNAPSHOT");
	if ((target == NULL) == (tarf == NULL))
		return tl_usage(&tl_cmd_restore, "restore: give one of "
		    "--target DIR and --to-tar FILE|-");
	if (pcopy != NULL) {
		pcopy = strdup(pcopy);
		if (pcopy == NULL)
			return CF_EXIT_FAIL;
		for (tok = strtok_r(pcopy, "/", &save); tok != NULL;
		    tok = strtok_r(NULL, "/", &save)) {
			if (strcmp(tok, ".") == 0)
				continue;
			if (strcmp(tok, "..") == 0) {
				free(pcopy);
				return tl_usage(&tl_cmd_restore, "restore: "
				    "--path may not hold '..'");
			}
			if (nf == MAX_DEPTH + 1) {
				/* 256 directories and a name: the deepest */
				free(pcopy);
				return tl_usage(&tl_cmd_restore, "restore: "
				    "--path is deeper than a snapshot can be");
			}
			filter[nf++] = tok;
		}
		filter[nf] = NULL;
	}
	ret = session_open_pf(&s, ctx, argv[optind], repo, 0,
	    CF_BK_PREFETCH_PACKS, NULL);
	if (ret != CF_EXIT_OK)
		goto out;
	ret = resolve_snapshot(&s, want, sid, &snap);
	if (ret != CF_EXIT_OK)
		goto out;
	ret = CF_EXIT_FAIL;
	cf_bk_id_hex(sid, hex);
	r.repo = s.repo;
	r.url = s.url;
	r.remote = strncmp(s.url, "s3://", 5) == 0;
	r.is_root = geteuid() == 0;
	tl_progress_start(&r.prog, isatty(2) && ctx->verbose >= 0 &&
	    !ctx->json);
	if (pcopy == NULL || nf == 0) {
		r.total_files = snap->stats.files;
		r.total_bytes = snap->stats.bytes;
	}
	pathbuf = calloc(1, RS_PATH_CAP);
	if (pathbuf == NULL)
		goto out;
	if (target != NULL) {
		if (mkdir(target, 0700) < 0 && errno != EEXIST) {
			fprintf(stderr, "coffer: target %s: %s\n", target,
			    strerror(errno));
			goto out;
		}
		dirfd = open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dirfd < 0) {
			fprintf(stderr, "coffer: target %s: %s\n", target,
			    strerror(errno));
			goto out;
		}
		r.root_fd = dirfd;
	} else {
		r.ar = archive_write_new();
		if (r.ar == NULL ||
		    archive_write_set_format_pax_restricted(r.ar) !=
		    ARCHIVE_OK) {
			fprintf(stderr, "coffer: tar writer unavailable\n");
			goto out;
		}
		if (strcmp(tarf, "-") == 0) {
			if (isatty(1)) {
				fprintf(stderr, "coffer: not writing a tar to a "
				    "terminal\n");
				ret = CF_EXIT_USAGE;
				goto out;
			}
			rc = archive_write_open_fd(r.ar, 1);
		} else {
			rc = archive_write_open_filename(r.ar, tarf);
		}
		if (rc != ARCHIVE_OK) {
			fprintf(stderr, "coffer: %s: %s\n", tarf,
			    archive_error_string(r.ar));
			goto out;
		}
	}
	tl_malloc_tune();
	rc = cf_bk_repo_pack_cache_start(s.repo, s3_conns(),
	    2 * s3_conns());
	if (rc < 0) {
		fprintf(stderr, "coffer: pack cache: %s\n", strerror(-rc));
		goto out;
	}
	if (strncmp(s.url, "s3://", 5) == 0) {
		struct rlinks pl = { NULL, 0, 0 };

		rs_plan(s.repo, snap->tree, pcopy != NULL && nf > 0 ?
		    filter : NULL, 0, &pl);
		rlinks_free(&pl);
	}
	if (r.ar == NULL)
		rs_start(&r);
	rc = restore_tree(&r, dirfd, snap->tree, pathbuf, 0,
	    pcopy != NULL && nf > 0 ? filter : NULL, 0);
	rs_finish(&r);
	rs_unlink_failed(&r);
	if (r.down < 0) {
		/* The workers met it after the walk had queued everything. */
		rs_stop_msg(&r);
		if (rc >= 0)
			rc = r.down;
	}
	cf_bk_repo_pack_cache_stats(s.repo, &pcs);
	cf_bk_repo_pack_cache_stop(s.repo);
	tl_progress_end(&r.prog);
	if (r.ar != NULL) {
		if (archive_write_close(r.ar) != ARCHIVE_OK && rc == 0) {
			fprintf(stderr, "coffer: tar: %s\n",
			    archive_error_string(r.ar));
			rc = -EIO;
		}
	} else if (syncfs(dirfd) < 0 && rc == 0) {
		/* Also after a stop: a restore run again keeps what is here. */
		rc = -errno;
		fprintf(stderr, "coffer: syncing %s: %s\n", target,
		    strerror(errno));
	}
	audit(&s, "backup.restore", hex, r.files, r.bytes, r.damaged);
	if (ctx->json) {
		j = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:f}",
		    "snapshot", hex, "tenant", argv[optind],
		    "files", (json_int_t)r.files, "dirs", (json_int_t)r.dirs,
		    "bytes", (json_int_t)r.bytes,
		    "damaged", (json_int_t)r.damaged,
		    "refused", (json_int_t)r.refused,
		    "failed", (json_int_t)r.failed,
		    "duration_s", (double)(now_ns() - t0) / 1e9);
		/* A remote store's restore: what its pack cache fetched. */
		if (j != NULL && r.down < 0)
			json_object_set_new(j, "stopped", json_string(
			    r.down == -ENOMEM ? "out of memory" :
			    tl_repo_strerror(r.url, r.down)));
		if (j != NULL && r.already > 0)
			json_object_set_new(j, "already",
			    json_integer((json_int_t)r.already));
		if (j != NULL && pcs.packs + pcs.blobs > 0) {
			json_object_set_new(j, "pack_gets",
			    json_integer((json_int_t)pcs.packs));
			json_object_set_new(j, "blob_gets",
			    json_integer((json_int_t)pcs.blobs));
			json_object_set_new(j, "fetched_bytes", json_integer(
			    (json_int_t)(pcs.pack_bytes + pcs.blob_bytes)));
		}
		if (j != NULL)
			tl_print_json(j);
	} else if (ctx->verbose >= 0 && tarf == NULL && (rc < 0 ||
	    r.failed > 0 || r.refused > 0)) {
		printf("restore of snapshot %.8s incomplete: %llu files, %llu "
		    "dirs, %.1f MiB restored", hex,
		    (unsigned long long)r.files, (unsigned long long)r.dirs,
		    (double)r.bytes / (1 << 20));
		if (r.already > 0)
			printf(", %llu already in the target",
			    (unsigned long long)r.already);
		if (r.down < 0)
			printf("; stopped: the repository cannot be read\n");
		else
			printf("; %llu failed, %llu refused (named above)\n",
			    (unsigned long long)r.failed,
			    (unsigned long long)r.refused);
	} else if (ctx->verbose >= 0 && tarf == NULL) {
		printf("restored snapshot %.8s: %llu files, %llu dirs, %.1f "
		    "MiB in %.2f s", hex, (unsigned long long)r.files,
		    (unsigned long long)r.dirs, (double)r.bytes / (1 << 20),
		    (double)(now_ns() - t0) / 1e9);
		if (r.already > 0)
			printf(" (%llu already in the target: skipped)",
			    (unsigned long long)r.already);
		printf("\n");
	}
	if (r.damaged > 0) {
		fprintf(stderr, "coffer: %llu damaged files or directories "
		    "(named above); %s\n", (unsigned long long)r.damaged,
		    rc < 0 ? "the restore stopped before the rest" :
		    "everything else was restored");
		ret = CF_EXIT_INTEGRITY;
	} else if (rc < 0 || r.refused > 0 || r.failed > 0) {
		ret = CF_EXIT_FAIL;
	} else {
		ret = CF_EXIT_OK;
	}
out:
	rlinks_free(&r.links);
	if (r.ar != NULL)
		archive_write_free(r.ar);
	if (dirfd >= 0)
		close(dirfd);
	free(pathbuf);
	free(pcopy);
	cf_bk_snapshot_free(snap);
	session_close(&s);
	return ret;
}
