/*
 * cmd_drill.c - coffer drill NAME [--scratch DIR] [--keep] [--json]: a
 * restore test of a tenant's latest snapshot (docs/operations.md, Drills).
 *
 * It restores the snapshot with coffer restore's own code (cmd_restore,
 * so the drill measures exactly what an operator would run at 3 a.m.)
 * into a fresh directory, then walks the snapshot's trees again and
 * compares every restored file with what the trees record: its size, and
 * the keyed blob id of each of its chunks re-hashed from the restored
 * bytes (cf_bk_blob_id; the chunk boundaries come from the blob lengths in
 * the index, so no re-chunking is needed).  Symlink targets and entry
 * types are compared too; owners, modes and times are not (restore as
 * non-root cannot set owners).  Like restore it works relative to
 * directory descriptors (compare, store size, removing the scratch tree),
 * so every tree restore restores is drilled: TL_TREE_DEPTH levels of
 * 255-byte names, paths of 64 KiB (docs/backup.md, Deep trees).
 *
 * From the restore's wall time it derives bytes/s and files/s and projects
 * the time a full restore of the tenant's current size would take (the
 * snapshot, or the live store if that is larger), linearly; the fixed
 * cost of unwrapping the key is included, so small drills overestimate.
 * The projection is compared with the RTO ([operations] rto_hours, 8 h
 * by default).
 *
 * Exit 0 passed and within the RTO; 3 restored content differs from the
 * snapshot or the repository is damaged; 1 projected over the RTO, or the
 * drill could not run; 4 locked out.  Records last_drill,
 * last_drill_result (ok, over-rto, damaged, failed) and projected_rto_s
 * in the tenant and audits "backup.drill".  It does not repair anything
 * and never writes into the tenant's store.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cf_backup.h"
#include "tl_int.h"

const struct tl_cmd tl_cmd_drill = {
	"drill", cmd_drill,
	"  coffer drill NAME [--scratch DIR] [--keep] [--json]\n"
	"    restores the latest snapshot into a fresh directory under DIR\n"
	"    (default $COFFER_HOME/drills), compares it with the snapshot,\n"
	"    and projects the full-restore time against the RTO\n"
	"    ([operations] rto_hours, default 8); exit 0 pass, 3 mismatch,\n"
	"    1 over the RTO or failure\n",
	"restore-test the latest snapshot and report the RTO",
};

#define DRILL_SHOW 20		/* mismatches named on stderr */

struct cmp {
	struct cf_bk_repo *repo;
	const struct cf_bk_keys *keys;
	unsigned char *buf;
	size_t cap;
	uint64_t files, dirs, bytes, checked_blobs;
	uint64_t mismatched, damaged;
	char target[PATH_MAX + 1];	/* a symlink's, read back */
};

static double
mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
mismatch(struct cmp *c, const char *path, const char *why)
{
	if (c->mismatched + c->damaged < DRILL_SHOW)
		fprintf(stderr, "coffer: drill: %s: %s\n", path, why);
	c->mismatched++;
}

/* Reads exactly len bytes at off; -EPROTO if the file is shorter. */
static int
read_at(int fd, unsigned char *buf, size_t len, uint64_t off)
{
	size_t k;
	ssize_t r;

	for (k = 0; k < len; k += (size_t)r) {
		r = pread(fd, buf + k, len - k, (off_t)(off + k));
		if (r < 0 && errno == EINTR) {
			r = 0;
			continue;
		}
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EPROTO;
	}
	return 0;
}

static void
cmp_file(struct cmp *c, int dirfd, const struct cf_bk_node *n,
    const char *path)
{
	struct cf_bk_blob_loc loc;
	unsigned char id[CF_BK_ID_BYTES], *nb;
	struct stat st;
	uint64_t off = 0;
	size_t i, ulen;
	int fd, rc;

	c->files++;
	fd = openat(dirfd, n->name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		mismatch(c, path, "not restored");
		return;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		mismatch(c, path, "not a regular file");
		goto out;
	}
	if ((uint64_t)st.st_size != n->size) {
		mismatch(c, path, "size differs from the snapshot");
		goto out;
	}
	for (i = 0; i < n->nitems; i++) {
		if (n->items[i].hole > 0) {
			off += n->items[i].hole;
			continue;
		}
		rc = cf_bk_index_lookup(cf_bk_repo_index(c->repo),
		    CF_BK_BLOB_DATA, n->items[i].id, &loc);
		if (rc < 0) {
			if (c->mismatched + c->damaged < DRILL_SHOW)
				fprintf(stderr, "coffer: drill: %s: a blob of "
				    "the snapshot is missing from the "
				    "repository\n", path);
			c->damaged++;
			goto out;
		}
		ulen = loc.desc.ulen;
		if (ulen > c->cap) {
			nb = realloc(c->buf, ulen);
			if (nb == NULL) {
				mismatch(c, path, "out of memory");
				goto out;
			}
			c->buf = nb;
			c->cap = ulen;
		}
		if (off + ulen > n->size ||
		    read_at(fd, c->buf, ulen, off) < 0) {
			mismatch(c, path, "shorter than the snapshot's "
			    "chunks");
			goto out;
		}
		cf_bk_blob_id(c->keys, c->buf, ulen, id);
		c->checked_blobs++;
		if (memcmp(id, n->items[i].id, CF_BK_ID_BYTES) != 0) {
			mismatch(c, path, "content differs from the "
			    "snapshot");
			goto out;
		}
		off += ulen;
	}
	if (off != n->size)
		mismatch(c, path, "chunks do not add up to the size");
	c->bytes += n->size;
out:
	close(fd);
}

static void
cmp_tree(struct cmp *c, int dirfd, const unsigned char id[CF_BK_ID_BYTES],
    char *path, size_t plen, int depth)
{
	struct cf_bk_tree *t = NULL;
	struct stat st;
	size_t i, nlen;
	ssize_t tl;
	int fd, rc;

	rc = cf_bk_repo_tree_load(c->repo, id, &t);
	if (rc < 0) {
		if (c->mismatched + c->damaged < DRILL_SHOW)
			fprintf(stderr, "coffer: drill: %s/: directory "
			    "unreadable in the repository (%s)\n", path,
			    strerror(-rc));
		c->damaged++;
		return;
	}
	for (i = 0; i < t->count; i++) {
		const struct cf_bk_node *n = &t->nodes[i];

		nlen = strlen(n->name);
		if (plen + 1 + nlen + 1 > TL_PATH_CAP) {
			/* Unreachable: depth and names are bounded. */
			mismatch(c, path, "path too long");
			continue;
		}
		path[plen] = '/';
		memcpy(path + plen + 1, n->name, nlen + 1);
		switch (n->type) {
		case CF_BK_NODE_FILE:
			cmp_file(c, dirfd, n, path);
			break;
		case CF_BK_NODE_DIR:
			c->dirs++;
			if (depth >= TL_TREE_DEPTH) {
				mismatch(c, path, "too deep");
				break;
			}
			fd = openat(dirfd, n->name, O_RDONLY | O_DIRECTORY |
			    O_NOFOLLOW | O_CLOEXEC);
			if (fd < 0) {
				mismatch(c, path, "directory not restored");
				break;
			}
			cmp_tree(c, fd, n->subtree, path, plen + 1 + nlen,
			    depth + 1);
			close(fd);
			break;
		case CF_BK_NODE_SYMLINK:
			c->files++;
			tl = readlinkat(dirfd, n->name, c->target,
			    sizeof(c->target) - 1);
			if (tl < 0) {
				mismatch(c, path, "symlink not restored");
				break;
			}
			c->target[tl] = '\0';
			if (strcmp(c->target, n->target) != 0)
				mismatch(c, path, "symlink target differs");
			break;
		default:
			c->files++;
			if (fstatat(dirfd, n->name, &st,
			    AT_SYMLINK_NOFOLLOW) < 0)
				mismatch(c, path, "not restored");
			break;
		}
		path[plen] = '\0';
	}
	cf_bk_tree_free(t);
}

/* Size and file count of the live store (ciphertext: a slight excess). */
struct live {
	uint64_t bytes, files;
};

static int
live_fn(void *arg, int dfd, const char *name, const struct stat *st,
    int post)
{
	struct live *l = arg;

	(void)dfd;
	(void)name;
	(void)post;
	if (S_ISREG(st->st_mode)) {
		l->bytes += (uint64_t)st->st_size;
		l->files++;
	}
	return 0;
}

/*
 * Walks the backing store through directory descriptors: a store as deep
 * as the trees restore makes has paths far over PATH_MAX.  A store that
 * cannot be read counts what was seen (the snapshot's size still counts).
 */
static void
live_size(const char *store, struct live *l)
{
	int fd;

	l->bytes = l->files = 0;
	fd = open(store, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	(void)tl_walk_at(fd, live_fn, l);
	close(fd);
}

/* Picks the newest snapshot; -ENOENT if there is none. */
static int
latest_snapshot(struct cf_bk_repo *repo, unsigned char id[CF_BK_ID_BYTES],
    struct cf_bk_snapshot **out)
{
	unsigned char (*ids)[CF_BK_ID_BYTES] = NULL;
	struct cf_bk_snapshot *s;
	size_t n = 0, i;
	int rc;

	*out = NULL;
	rc = cf_bk_repo_snapshot_list(repo, &ids, &n);
	if (rc < 0)
		return rc;
	for (i = 0; i < n; i++) {
		rc = cf_bk_repo_snapshot_load(repo, ids[i], &s);
		if (rc < 0) {
			fprintf(stderr, "coffer: drill: a snapshot is "
			    "unreadable (%s); skipped\n", strerror(-rc));
			continue;
		}
		if (*out == NULL || s->time > (*out)->time) {
			cf_bk_snapshot_free(*out);
			*out = s;
			memcpy(id, ids[i], CF_BK_ID_BYTES);
		} else {
			cf_bk_snapshot_free(s);
		}
	}
	free(ids);
	return *out != NULL ? 0 : -ENOENT;
}

static void
record(struct cf_ks_home *home, const char *name, const char *result,
    const char *snap, uint64_t files, uint64_t bytes, double projected,
    double rto, double restore_s)
{
	struct cf_ks_tenant *t = NULL;
	char now[64], buf[32];
	struct cf_ks_audit_field f[] = {
		{ "tenant", name, 0 },
		{ "result", result, 0 },
		{ "snapshot", snap, 0 },
		{ "files", NULL, (long long)files },
		{ "bytes", NULL, (long long)bytes },
		{ "restore_ms", NULL, (long long)(restore_s * 1000) },
		{ "projected_rto_s", NULL, (long long)projected },
		{ "rto_s", NULL, (long long)rto },
	};

	(void)!cf_ks_audit_append(home, "backup.drill", f,
	    sizeof(f) / sizeof(f[0]));
	/*
	 * Reopened: restore saved the tenant through its own handle, and a
	 * stale document would undo what it (or a concurrent verify) wrote.
	 */
	if (cf_ks_tenant_open(home, name, &t) < 0)
		goto fail;
	cf_ks_time_format(cf_ks_now(), now, sizeof(now));
	if (cf_ks_tenant_set(t, "last_drill", now) < 0 ||
	    cf_ks_tenant_set(t, "last_drill_result", result) < 0)
		goto fail;
	if (projected >= 0) {
		snprintf(buf, sizeof(buf), "%.0f", projected);
		if (cf_ks_tenant_set(t, "projected_rto_s", buf) < 0)
			goto fail;
	}
	cf_ks_tenant_free(t);
	return;
fail:
	fprintf(stderr, "coffer: could not record the drill in tenant %s: "
	    "%s\n", name, cf_ks_last_error());
	cf_ks_tenant_free(t);
}

int
cmd_drill(struct tl_ctx *ctx, int argc, char **argv)
{
	struct cf_bk_prefetch *pf = NULL;
	uint32_t kv = 0;
	static const struct option opts[] = {
		{ "scratch", required_argument, NULL, 's' },
		{ "keep", no_argument, NULL, 'k' },
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 },
	};
	struct cf_ks_home *home;
	struct cf_ks_tenant *t = NULL;
	struct cf_secbuf *root = NULL;
	struct cf_bk_repo *repo = NULL;
	struct cf_bk_lock *lock = NULL;
	struct cf_bk_snapshot *snap = NULL;
	struct cmp c;
	struct live live;
	unsigned char sid[CF_BK_ID_BYTES];
	const char *scratch = NULL, *name, *result = "failed";
	char url[PATH_MAX + 16], parent[PATH_MAX], dir[PATH_MAX];
	char target[PATH_MAX + 16], store[PATH_MAX], hex[65] = "";
	char *pathbuf = NULL, *rargv[6];
	int ch, rc, ret = CF_EXIT_FAIL, keep = 0, made = 0, json, verbose;
	int dirfd = -1;
	double t0, restore_s = 0, bps = 0, fps = 0, scale, projected = -1;
	double rto;
	uint64_t tbytes, tfiles;
	json_t *j;

	memset(&c, 0, sizeof(c));
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 's':
			scratch = optarg;
			break;
		case 'k':
			keep = 1;
			break;
		case 'j':
			ctx->json = 1;
			break;
		default:
			return tl_usage(&tl_cmd_drill, "drill: bad option");
		}
	}
	if (optind != argc - 1)
		return tl_usage(&tl_cmd_drill, "drill: give NAME");
	name = argv[optind];
	home = tl_home(ctx, 0);
	rto = tl_ops_rto_s(home);
	if (rto < 0) {
		fprintf(stderr, "coffer: coffer.conf: [operations] rto_hours "
		    "must be a positive number of hours\n");
		return CF_EXIT_USAGE;
	}
	rc = cf_ks_tenant_open(home, name, &t);
	if (rc < 0)
		return tl_fail(rc, NULL);
	if (cf_ks_tenant_shredded(t)) {
		fprintf(stderr, "coffer: tenant %s was crypto-shredded: its "
		    "backups can no longer be read\n", name);
		ret = CF_EXIT_DENIED;
		goto out;
	}
	tl_repo_url(home, t, NULL, url, sizeof(url));
	if (cf_ks_tenant_get(t, "store") != NULL)
		snprintf(store, sizeof(store), "%s",
		    cf_ks_tenant_get(t, "store"));
	else
		snprintf(store, sizeof(store), "%s/%s/store",
		    cf_ks_home_path(home), cf_ks_tenant_dir(t));
	/* Fetched while the key is unlocked (docs/s3.md). */
	pf = tl_repo_prefetch(url, 0, 4, 0);
	rc = tl_repo_unlock_pf(t, url, pf, &root, &kv);
	if (rc < 0) {
		cf_bk_prefetch_free(pf);
		ret = tl_fail(rc, name);
		goto out;
	}
	rc = tl_repo_open_pf(t, &repo, url, root, kv, 0, pf);
	cf_bk_prefetch_free(pf);
	cf_secbuf_free(root);
	root = NULL;
	if (rc == -ENOENT) {
		fprintf(stderr, "coffer: no repository at %s (run coffer "
		    "backup %s first)\n", url, name);
		goto record;
	}
	if (rc < 0) {
		fprintf(stderr, "coffer: repository %s: %s\n", url,
		    tl_repo_strerror(url, rc));
		ret = rc == -EBADMSG || rc == -EPROTO ? CF_EXIT_INTEGRITY :
		    cf_ks_exit_code(rc);
		if (ret == CF_EXIT_INTEGRITY)
			result = "damaged";
		goto record;
	}
	rc = cf_bk_repo_lock(repo, 0, NULL, &lock);
	if (rc < 0) {
		fprintf(stderr, "coffer: locking %s: %s\n", url,
		    rc == -EBUSY ? "locked exclusively (a prune?); try again "
		    "later" : strerror(-rc));
		goto record;
	}
	rc = latest_snapshot(repo, sid, &snap);
	if (rc < 0) {
		fprintf(stderr, "coffer: drill: tenant %s has no readable "
		    "snapshot in %s\n", name, url);
		goto record;
	}
	cf_bk_id_hex(sid, hex);

	/* A fresh scratch directory, never one that exists already. */
	if (scratch != NULL)
		snprintf(parent, sizeof(parent), "%s", scratch);
	else
		snprintf(parent, sizeof(parent), "%s/drills",
		    cf_ks_home_path(home));
	if (mkdir(parent, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "coffer: drill: %s: %s\n", parent,
		    strerror(errno));
		goto record;
	}
	if ((size_t)snprintf(dir, sizeof(dir), "%s/drill-%s-XXXXXX", parent,
	    name) >= sizeof(dir) || mkdtemp(dir) == NULL) {
		fprintf(stderr, "coffer: drill: cannot make a directory in "
		    "%s: %s\n", parent, strerror(errno));
		goto record;
	}
	made = 1;
	snprintf(target, sizeof(target), "%s/restore", dir);

	/* The restore itself, timed, with coffer restore's own code. */
	rargv[0] = (char *)(uintptr_t)"restore";
	rargv[1] = (char *)(uintptr_t)name;
	rargv[2] = hex;
	rargv[3] = (char *)(uintptr_t)"--target";
	rargv[4] = target;
	rargv[5] = NULL;
	json = ctx->json;
	verbose = ctx->verbose;
	ctx->json = 0;
	ctx->verbose = -1;
	optind = 0;
	t0 = mono_s();
	rc = cmd_restore(ctx, 5, rargv);
	restore_s = mono_s() - t0;
	ctx->json = json;
	ctx->verbose = verbose;
	if (rc == CF_EXIT_INTEGRITY) {
		fprintf(stderr, "coffer: drill: the restore found damaged "
		    "data in the repository\n");
		result = "damaged";
		ret = CF_EXIT_INTEGRITY;
	} else if (rc != CF_EXIT_OK) {
		fprintf(stderr, "coffer: drill: the restore failed (exit "
		    "%d)\n", rc);
		ret = rc;
		goto record;
	}

	/* Compare what was restored with what the snapshot records. */
	c.repo = repo;
	c.keys = cf_bk_repo_keys(repo);
	pathbuf = calloc(1, TL_PATH_CAP);
	dirfd = open(target, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (pathbuf == NULL || dirfd < 0) {
		fprintf(stderr, "coffer: drill: %s: %s\n", target,
		    strerror(errno));
		goto record;
	}
	cmp_tree(&c, dirfd, snap->tree, pathbuf, 0, 0);
	if (c.mismatched + c.damaged > DRILL_SHOW)
		fprintf(stderr, "coffer: drill: ... %llu problems in all\n",
		    (unsigned long long)(c.mismatched + c.damaged));

	/* Throughput and the projection for the tenant's current size. */
	live_size(store, &live);
	tbytes = snap->stats.bytes > live.bytes ? snap->stats.bytes :
	    live.bytes;
	tfiles = snap->stats.files > live.files ? snap->stats.files :
	    live.files;
	if (restore_s < 1e-6)
		restore_s = 1e-6;
	bps = (double)c.bytes / restore_s;
	fps = (double)(c.files + c.dirs) / restore_s;
	scale = 1;
	if (c.bytes > 0 && (double)tbytes / (double)c.bytes > scale)
		scale = (double)tbytes / (double)c.bytes;
	if (c.files > 0 && (double)tfiles / (double)c.files > scale)
		scale = (double)tfiles / (double)c.files;
	projected = restore_s * scale;

	if (c.mismatched > 0 || c.damaged > 0 || ret == CF_EXIT_INTEGRITY) {
		result = "damaged";
		ret = CF_EXIT_INTEGRITY;
	} else if (projected > rto) {
		result = "over-rto";
		ret = CF_EXIT_FAIL;
	} else {
		result = "ok";
		ret = CF_EXIT_OK;
	}
	if (ctx->json) {
		j = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, "
		    "s:f, s:f, s:f, s:I, s:I, s:f, s:f, s:s?}",
		    "tenant", name, "snapshot", hex, "result", result,
		    "files", (json_int_t)c.files,
		    "dirs", (json_int_t)c.dirs,
		    "bytes", (json_int_t)c.bytes,
		    "blobs_checked", (json_int_t)c.checked_blobs,
		    "mismatched", (json_int_t)c.mismatched,
		    "damaged", (json_int_t)c.damaged,
		    "restore_s", restore_s, "bytes_per_s", bps,
		    "files_per_s", fps,
		    "target_bytes", (json_int_t)tbytes,
		    "target_files", (json_int_t)tfiles,
		    "projected_rto_s", projected, "rto_s", rto,
		    "scratch", keep ? target : NULL);
		if (j != NULL)
			tl_print_json(j);
	} else if (ctx->verbose >= 0) {
		printf("drill %s: snapshot %.8s: %llu files, %llu dirs, "
		    "%.1f MiB restored in %.2f s (%.1f MiB/s, %.0f files/s)\n",
		    name, hex, (unsigned long long)c.files,
		    (unsigned long long)c.dirs, (double)c.bytes / (1 << 20),
		    restore_s, bps / (1 << 20), fps);
		printf("content: %llu blobs re-hashed, %llu mismatched, %llu "
		    "damaged\n", (unsigned long long)c.checked_blobs,
		    (unsigned long long)c.mismatched,
		    (unsigned long long)c.damaged);
		printf("projected full restore of %.1f MiB, %llu files: "
		    "%.0f s (RTO %.0f s): %s\n", (double)tbytes / (1 << 20),
		    (unsigned long long)tfiles, projected, rto,
		    projected > rto ? "OVER THE RTO" : "within the RTO");
		if (keep)
			printf("restored tree kept in %s\n", target);
		printf("drill: %s\n", result);
	}
record:
	record(home, name, result, hex, c.files, c.bytes, projected, rto,
	    restore_s);
out:
	if (dirfd >= 0)
		close(dirfd);
	/* Through descriptors: the restored tree may be 64 KiB of path. */
	if (made && !keep) {
		rc = tl_tree_remove(dir, NULL, NULL);
		if (rc < 0)
			fprintf(stderr, "coffer: drill: could not remove %s: "
			    "%s\n", dir, strerror(-rc));
	}
	free(pathbuf);
	free(c.buf);
	cf_bk_snapshot_free(snap);
	(void)!cf_bk_lock_release(lock);
	cf_bk_repo_free(repo);
	cf_secbuf_free(root);
	cf_ks_tenant_free(t);
	return ret;
}
