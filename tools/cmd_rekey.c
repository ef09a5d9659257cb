/*
 * cmd_rekey.c - coffer tenant reencrypt|retire-key: the store's side of a
 * root key rotation (docs/kms.md, Root key rotation).
 *
 * reencrypt rewrites every file of the store still under an older root
 * key version with the newest (fs_rekey.c): itself on an unmounted store,
 * through the daemon's control socket on a mounted one; retire-key checks
 * that nothing still needs a version (the store's files and metadata, the
 * backup repository) before the keystore shreds it.  reencrypt --metadata
 * moves the store's names, targets, xattrs and generation values to the
 * newest version (fs_metakey.c), so that version 1 can go too;
 * reencrypt --repository re-keys the backup repository's config
 * (bk_rekey.c), so that the version it was created with can go.
 *
 * Not here: rotate-key itself (cmd_tenant.c, keystore only).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "cf_backup.h"
#include "cf_fs.h"
#include "tl_int.h"

struct progress {
	int tty;
	int verbose;
};

static void
on_progress(void *arg, const struct cf_fs_rekey_stats *st, const char *rel)
{
	struct progress *p = arg;

	(void)rel;
	if (p->verbose < 0)
		return;
	if (p->tty)
		fprintf(stderr, "\rre-encrypted %llu files (%llu MiB)",
		    (unsigned long long)st->rewritten,
		    (unsigned long long)(st->bytes >> 20));
	else if (st->rewritten % 1000 == 0)
		fprintf(stderr, "re-encrypted %llu files (%llu MiB)\n",
		    (unsigned long long)st->rewritten,
		    (unsigned long long)(st->bytes >> 20));
}

static void
on_meta_progress(void *arg, const struct cf_fs_metakey_stats *st)
{
	struct progress *p = arg;

	if (p->verbose < 0)
		return;
	if (p->tty && st->entries % 64 == 0)
		fprintf(stderr, "\rre-keyed %llu of %llu names",
		    (unsigned long long)st->renamed,
		    (unsigned long long)st->entries);
	else if (!p->tty && st->entries % 10000 == 0)
		fprintf(stderr, "re-keyed %llu of %llu names\n",
		    (unsigned long long)st->renamed,
		    (unsigned long long)st->entries);
}

/*
 * coffer tenant reencrypt NAME --metadata: the keys of every live
 * version, each as a metadata version, the newest first.
 */
static int
reencrypt_metadata(struct tl_ctx *ctx, struct cf_ks_home *home,
    struct cf_ks_tenant *t, const char *name)
{
	struct cf_fs_keys *keys[CF_FS_KEYS_MAX + 1];
	struct cf_fs_metakey_stats st;
	struct cf_secbuf *root = NULL;
	struct progress p;
	uint32_t v[CF_FS_KEYS_MAX + 1], newest, from = 0, to = 0;
	char store[4096];
	size_t n, i, nk = 0;
	int rc, ret = CF_EXIT_FAIL;

	memset(&st, 0, sizeof(st));
	tl_store_path(home, t, store, sizeof(store));
	p.tty = isatty(2);
	p.verbose = ctx->verbose;
	newest = cf_ks_tenant_key_version(t);
	rc = cf_fs_metakey_journal_read(store, &from, &to);
	if (rc == -EPROTO) {
		fprintf(stderr, "coffer: %s: the metadata journal %s/%s is "
		    "damaged; nothing was changed.  Every name is under one "
		    "of the live key versions, which a run tries in turn: "
		    "move the journal away and rerun 'coffer tenant "
		    "reencrypt %s --metadata' (do not mount before it "
		    "ends)\n", name, store, CF_FS_METAKEY_JOURNAL, name);
		return CF_EXIT_FAIL;
	}
	if (cf_fs_store_served(store) == 1) {
		fprintf(stderr, "coffer: %s: the store is mounted (or held by "
		    "retention); unmount it first: its metadata is re-keyed "
		    "offline only\n", name);
		return CF_EXIT_FAIL;
	}
	n = cf_ks_tenant_versions(t, v, CF_FS_KEYS_MAX + 1);
	if (n > CF_FS_KEYS_MAX || n == 0) {
		rc = -E2BIG;
		goto fail;
	}
	/* The newest first: it is the one the metadata moves to. */
	for (i = 0; i <= n; i++) {
		uint32_t ver = i == 0 ? newest : v[i - 1];

		if (i > 0 && ver == newest)
			continue;
		rc = cf_ks_tenant_unlock(t, ver, &root);
		if (rc < 0)
			goto fail;
		rc = cf_fs_keys_new(&keys[nk], root, cf_ks_tenant_cipher(t),
		    ver);
		cf_secbuf_free(root);
		root = NULL;
		if (rc < 0)
			goto fail;
		nk++;
	}
	rc = cf_fs_metakey(keys, nk, store, on_meta_progress, &p, &st);
	if (p.tty && p.verbose >= 0 && st.entries >= 64)
		fprintf(stderr, "\n");
	{
		struct cf_ks_audit_field f[] = {
			{ "tenant", cf_ks_tenant_name(t), 0 },
			{ "key_version", NULL, newest },
			{ "names", NULL, (long long)st.entries },
			{ "renamed", NULL, (long long)st.renamed },
			{ "damaged", NULL, (long long)st.damaged },
			{ "result", rc < 0 ? "error" : "complete", 0 },
		};

		(void)!cf_ks_audit_append(home, "tenant.reencrypt_metadata",
		    f, 6);
	}
	if (rc == -EBUSY) {
		fprintf(stderr, "coffer: the store of %s is in use (mounted, "
		    "a backup reading it, retention holding it, or another "
		    "re-encryption); retry when it is free\n", name);
		goto out;
	}
	if (rc == -EBADMSG) {
		fprintf(stderr, "coffer: the store at %s does not belong to "
		    "tenant %s (no live key version opens its marker)\n",
		    store, name);
		ret = CF_EXIT_INTEGRITY;
		goto out;
	}
	if (rc == -ENOENT) {
		fprintf(stderr, "coffer: tenant %s has no store yet: nothing "
		    "to re-key\n", name);
		ret = CF_EXIT_OK;
		goto out;
	}
	if (rc < 0) {
		fprintf(stderr, "coffer: re-keying the metadata of %s: %s "
		    "(rerun 'coffer tenant reencrypt %s --metadata' to go "
		    "on; nothing is lost)\n", name, strerror(-rc), name);
		goto out;
	}
	if (ctx->json)
		tl_print_json(json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, "
		    "s:I}", "tenant", cf_ks_tenant_name(t), "key_version",
		    (json_int_t)newest, "names", (json_int_t)st.entries,
		    "renamed", (json_int_t)st.renamed, "links",
		    (json_int_t)st.links, "xattrs", (json_int_t)st.xattrs,
		    "generations", (json_int_t)st.gens, "damaged",
		    (json_int_t)st.damaged));
	else if (ctx->verbose >= 0)
		printf("%s: metadata under key version %u: %llu names (%llu "
		    "renamed), %llu symlink targets, %llu xattrs, %llu "
		    "generation values re-keyed\n", name, newest,
		    (unsigned long long)st.entries,
		    (unsigned long long)st.renamed,
		    (unsigned long long)st.links,
		    (unsigned long long)st.xattrs,
		    (unsigned long long)st.gens);
	if (st.damaged > 0)
		fprintf(stderr, "coffer: %s: %llu names, targets or values "
		    "open under no live key version (damaged before this "
		    "run); they were left as they were\n", name,
		    (unsigned long long)st.damaged);
	ret = CF_EXIT_OK;
	goto out;
fail:
	ret = tl_fail(rc, name);
out:
	for (i = 0; i < nk; i++)
		cf_fs_keys_free(keys[i]);
	return ret;
}

/*
 * Test builds only: COFFER_TEST_KILL_AT=13 kills reencrypt --repository
 * after the lock is taken and before the config is replaced, 14 after
 * it is replaced and before the audit record (docs/kms.md; the
 * keystore's steps are 1..12).  With --objects: 15 after the first old
 * pack is copied (new packs not yet indexed), 16 after the new index
 * objects are put (old ones not deleted), 17 after the old packs are
 * deleted, 18 after the first snapshot is re-sealed (old one kept).
 */
static void
repo_crash_point(int step)
{
#ifdef CF_TEST_CLOCK
	const char *v = getenv("COFFER_TEST_KILL_AT");

	if (v != NULL && strtol(v, NULL, 10) == step)
		raise(SIGKILL);
#else
	(void)step;
#endif
}

struct reenc_progress {
	int tty;
	int verbose;
	int shown;
	struct cf_ks_home *home;
	const char *tenant, *url;
	json_t *ids;		/* [{"old": hex, "new": hex}], for --json */
};

static void
on_reenc(void *arg, enum cf_bk_reenc_step step, uint64_t done,
    uint64_t total, const unsigned char *old_id, const unsigned char *new_id)
{
	struct reenc_progress *p = arg;
	const char *what = NULL;
	char oh[65], nh[65];

	/*
	 * A re-sealed snapshot's id changes ([BK-REENC-1]): the audit
	 * trail keeps the mapping (written before the old object goes),
	 * so ids recorded by earlier events can still be followed.
	 */
	if (old_id != NULL) {
		struct cf_ks_audit_field f[] = {
			{ "tenant", p->tenant, 0 },
			{ "repo", p->url, 0 },
			{ "snapshot", oh, 0 },
			{ "new_id", nh, 0 },
		};

		cf_bk_id_hex(old_id, oh);
		cf_bk_id_hex(new_id, nh);
		(void)!cf_ks_audit_append(p->home, "tenant.reencrypt_snapshot",
		    f, 4);
		if (p->ids != NULL)
			(void)json_array_append_new(p->ids, json_pack(
			    "{s:s, s:s}", "old", oh, "new", nh));
		else if (p->verbose > 0)
			printf("snapshot %.8s is now %.8s\n", oh, nh);
	}

	if (done == 1 && step == CF_BK_REENC_PACK)
		repo_crash_point(15);
	else if (step == CF_BK_REENC_INDEX)
		repo_crash_point(16);
	else if (step == CF_BK_REENC_DELETED)
		repo_crash_point(17);
	else if (done == 1 && step == CF_BK_REENC_SNAPSHOT)
		repo_crash_point(18);
	if (step == CF_BK_REENC_PACK)
		what = "packs";
	else if (step == CF_BK_REENC_SNAPSHOT)
		what = "snapshots";
	if (what == NULL || p->verbose < 0 || !p->tty)
		return;
	fprintf(stderr, "\r\033[Kre-encrypting the repository: %llu of %llu "
	    "%s", (unsigned long long)done, (unsigned long long)total, what);
	p->shown = 1;
}

/*
 * Opens the tenant's repository at url under its config's key version
 * and takes its exclusive lock: 0, or -errno after saying why.
 */
static int
open_exclusive(struct cf_ks_tenant *t, const char *name, const char *url,
    struct cf_bk_repo **rp, struct cf_bk_lock **lockp)
{
	struct cf_secbuf *root = NULL;
	uint32_t kv = 0;
	int rc;

	rc = tl_repo_unlock(t, url, &root, &kv);
	if (rc == 0)
		rc = tl_repo_open(t, rp, url, root, kv, 0);
	cf_secbuf_free(root);
	if (rc < 0) {
		fprintf(stderr, "coffer: %s: cannot open the backup repository "
		    "%s: %s\n", name, url, strerror(-rc));
		return rc;
	}
	rc = cf_bk_repo_lock(*rp, 1, NULL, lockp);
	if (rc == -EBUSY)
		fprintf(stderr, "coffer: %s: repository %s is locked (a backup "
		    "or a prune is running); try again later\n", name, url);
	else if (rc < 0)
		fprintf(stderr, "coffer: %s: locking the repository %s: %s\n",
		    name, url, strerror(-rc));
	return rc;
}

/*
 * --objects: every pack, index object and snapshot under an older
 * version moves to the newest (cf_bk_repo_reencrypt, [BK-REENC-1]) on
 * a repository opened anew after the config re-key (the keys of the
 * one that re-keyed still take the old config version as primary).
 */
static int
reencrypt_objects(struct tl_ctx *ctx, struct cf_ks_home *home,
    struct cf_ks_tenant *t, const char *name, const char *url)
{
	struct cf_bk_repo *r = NULL;
	struct cf_bk_lock *lock = NULL;
	struct cf_bk_reenc_stats st;
	struct reenc_progress p;
	struct timespec t0, t1;
	double secs;
	int rc, ret = CF_EXIT_FAIL;

	memset(&st, 0, sizeof(st));
	memset(&p, 0, sizeof(p));
	if (open_exclusive(t, name, url, &r, &lock) < 0)
		goto out;
	p.tty = isatty(2);
	p.verbose = ctx->verbose;
	p.shown = 0;
	p.home = home;
	p.tenant = cf_ks_tenant_name(t);
	p.url = url;
	p.ids = ctx->json ? json_array() : NULL;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = cf_bk_repo_reencrypt(r, lock, on_reenc, &p, &st);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) +
	    (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	if (p.shown)
		fprintf(stderr, "\n");
	{
		struct cf_ks_audit_field f[] = {
			{ "tenant", cf_ks_tenant_name(t), 0 },
			{ "repo", url, 0 },
			{ "key_version", NULL, st.key_version },
			{ "objects", "yes", 0 },
			{ "packs_old", NULL, st.packs_old },
			{ "packs_written", NULL, st.packs_written },
			{ "bytes_written", NULL, st.bytes_written },
			{ "snapshots_resealed", NULL, st.snapshots_resealed },
			{ "objects_locked", NULL, st.objects_locked },
			{ "result", rc < 0 ? "error" : "reencrypted", 0 },
		};

		(void)!cf_ks_audit_append(home, "tenant.reencrypt_repository",
		    f, 10);
	}
	if (rc < 0) {
		fprintf(stderr, "coffer: %s: re-encrypting the objects of %s: "
		    "%s (every snapshot still restores; rerun to finish)\n",
		    name, url, strerror(-rc));
		goto out;
	}
	if (ctx->json)
		tl_print_json(json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, "
		    "s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:O}", "tenant", name,
		    "repo", url, "key_version", (json_int_t)st.key_version,
		    "packs", (json_int_t)st.packs,
		    "packs_old", (json_int_t)st.packs_old,
		    "blobs_copied", (json_int_t)st.blobs_copied,
		    "bytes_old", (json_int_t)st.bytes_old,
		    "packs_written", (json_int_t)st.packs_written,
		    "bytes_written", (json_int_t)st.bytes_written,
		    "packs_deleted", (json_int_t)st.packs_deleted,
		    "snapshots", (json_int_t)st.snapshots,
		    "snapshots_resealed", (json_int_t)st.snapshots_resealed,
		    "objects_locked", (json_int_t)st.objects_locked,
		    "seconds", secs, "resealed", p.ids));
	else if (ctx->verbose >= 0)
		printf("%s: objects of %s under key version %u: %llu of %llu "
		    "packs rewritten (%llu blobs, %.1f MiB read, %llu packs, "
		    "%.1f MiB written), %llu of %llu snapshots re-sealed (new "
		    "ids), %.1f s\n", name, url, st.key_version,
		    (unsigned long long)st.packs_old,
		    (unsigned long long)st.packs,
		    (unsigned long long)st.blobs_copied,
		    (double)st.bytes_old / 1048576.0,
		    (unsigned long long)st.packs_written,
		    (double)st.bytes_written / 1048576.0,
		    (unsigned long long)st.snapshots_resealed,
		    (unsigned long long)st.snapshots, secs);
	if (st.objects_locked > 0) {
		fprintf(stderr, "coffer: %s: %llu old objects are under Object "
		    "Lock and stay until it ends; rerun then\n", name,
		    (unsigned long long)st.objects_locked);
		goto out;
	}
	ret = CF_EXIT_OK;
out:
	json_decref(p.ids);
	(void)!cf_bk_lock_release(lock);
	cf_bk_repo_free(r);
	return ret;
}

/*
 * coffer tenant reencrypt NAME --repository [--repo URL]: re-keys the
 * backup repository's config to the newest root key version, carrying
 * the chunk key C ([BK-CFG-2]), so that the version the repository was
 * created with stops being needed by the config.  Under the exclusive
 * lock; audited as tenant.reencrypt_repository.
 */
static int
reencrypt_repository(struct tl_ctx *ctx, struct cf_ks_home *home,
    struct cf_ks_tenant *t, const char *name, const char *opt_url,
    int objects)
{
	struct cf_bk_repo *r = NULL;
	struct cf_bk_lock *lock = NULL;
	char url[4200];
	uint32_t rv = 0, kv = 0, newest, from = 0;
	int rc, ret = CF_EXIT_FAIL, changed = 0;

	tl_repo_url(home, t, opt_url, url, sizeof(url));
	newest = cf_ks_tenant_key_version(t);
	rc = cf_bk_repo_key_version(url, &rv);
	if (rc == -ENOENT) {
		if (ctx->verbose >= 0 && !ctx->json)
			printf("%s: no backup repository at %s: nothing to "
			    "re-key\n", name, url);
		if (ctx->json)
			tl_print_json(json_pack("{s:s, s:s, s:b}", "tenant",
			    name, "repo", url, "changed", 0));
		return CF_EXIT_OK;
	}
	if (rc == 0 && rv > newest)
		rc = -EPROTO;
	if (rc < 0) {
		fprintf(stderr, "coffer: %s: cannot open the backup repository "
		    "%s: %s\n", name, url, strerror(-rc));
		goto out;
	}
	if (open_exclusive(t, name, url, &r, &lock) < 0)
		goto out;
	repo_crash_point(13);
	rc = cf_bk_repo_config_rekey(r, newest);
	if (rc == -EALREADY) {
		rc = 0;		/* already under the newest version */
	} else if (rc == 0) {
		changed = 1;
		repo_crash_point(14);
	}
	(void)cf_bk_repo_chunk_version(r, &from);
	{
		struct cf_ks_audit_field f[] = {
			{ "tenant", cf_ks_tenant_name(t), 0 },
			{ "repo", url, 0 },
			{ "key_version", NULL, newest },
			{ "previous", NULL, rv },
			{ "chunk_version", NULL, from != 0 ? from : rv },
			{ "result", rc < 0 ? "error" : changed ? "rekeyed" :
			    "unchanged", 0 },
		};

		(void)!cf_ks_audit_append(home, "tenant.reencrypt_repository",
		    f, 6);
	}
	if (rc < 0) {
		fprintf(stderr, "coffer: %s: re-keying the config of %s: %s "
		    "(the old config or the new one is in place, both open; "
		    "rerun to finish)\n", name, url, strerror(-rc));
		goto out;
	}
	kv = cf_bk_repo_config_version(r);
	if (objects) {
		/* One JSON object: the objects' run prints it. */
		if (ctx->verbose >= 0 && !ctx->json && changed)
			printf("%s: the config of %s is under key version %u "
			    "now (was %u)\n", name, url, newest, rv);
		(void)!cf_bk_lock_release(lock);
		lock = NULL;
		cf_bk_repo_free(r);
		r = NULL;
		ret = reencrypt_objects(ctx, home, t, name, url);
		goto out;
	}
	if (ctx->json)
		tl_print_json(json_pack("{s:s, s:s, s:I, s:I, s:I, s:b}",
		    "tenant", name, "repo", url, "key_version",
		    (json_int_t)kv, "previous",
		    (json_int_t)rv, "chunk_version",
		    (json_int_t)(from != 0 ? from : rv), "changed", changed));
	else if (ctx->verbose >= 0 && changed)
		printf("%s: the config of %s is under key version %u now (was "
		    "%u); its id and chunking keys, of version %u, are kept "
		    "in it, so dedup goes on\n", name, url, newest, rv,
		    from);
	else if (ctx->verbose >= 0)
		printf("%s: the config of %s is already under key version "
		    "%u\n", name, url, kv);
	ret = CF_EXIT_OK;
out:
	(void)!cf_bk_lock_release(lock);
	cf_bk_repo_free(r);
	return ret;
}

int
tl_tenant_reencrypt(struct tl_ctx *ctx, int argc, char **argv)
{
	struct cf_ks_home *home;
	struct cf_ks_tenant *t = NULL;
	struct cf_fs_keys *keys = NULL;
	struct cf_fs_rekey_stats st;
	struct progress p;
	char store[4096], err[512];
	uint32_t version = 0;
	const char *repo_url = NULL;
	int c, metadata = 0, repository = 0, objects = 0, rc, mounted = 0;
	int ret = CF_EXIT_FAIL;
	static const struct option opts[] = {
		{ "metadata", no_argument, NULL, 'm' },
		{ "repository", no_argument, NULL, 'R' },
		{ "objects", no_argument, NULL, 'o' },
		{ "repo", required_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 },
	};

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'm')
			metadata = 1;
		else if (c == 'R')
			repository = 1;
		else if (c == 'o')
			objects = 1;
		else if (c == 'r')
			repo_url = optarg;
		else
			return tl_usage(&tl_cmd_tenant, "tenant reencrypt: bad "
			    "option");
	}
	if (optind != argc - 1)
		return tl_usage(&tl_cmd_tenant, "tenant reencrypt: give one "
		    "NAME");
	if (metadata + repository > 1 ||
	    ((repo_url != NULL || objects) && !repository))
		return tl_usage(&tl_cmd_tenant, "tenant reencrypt: "
		    "--metadata and --repository are separate runs; --repo "
		    "and --objects go with --repository");
	argv += optind - 1;
	home = tl_home(ctx, 0);
	rc = cf_ks_tenant_open(home, argv[1], &t);
	if (rc < 0)
		return tl_fail(rc, NULL);
	if (metadata) {
		ret = reencrypt_metadata(ctx, home, t, argv[1]);
		goto out;
	}
	if (repository) {
		ret = reencrypt_repository(ctx, home, t, argv[1], repo_url,
		    objects);
		goto out;
	}
	err[0] = '\0';
	tl_store_path(home, t, store, sizeof(store));
	p.tty = isatty(2);
	p.verbose = ctx->verbose;
	/* Mounted: the daemon does it under its file locks. */
	rc = cf_fs_rekey_mounted(store, on_progress, &p, &st, &version, err,
	    sizeof(err));
	if (rc != -ENOTCONN) {
		mounted = 1;
		goto done;
	}
	rc = tl_fs_keys(home, t, &keys);
	if (rc < 0) {
		ret = tl_fail(rc, argv[1]);
		goto out;
	}
	version = cf_fs_keys_version(keys);
	rc = cf_fs_rekey(keys, store, on_progress, &p, &st);
done:
	if (p.tty && p.verbose >= 0 && st.rewritten > 0)
		fprintf(stderr, "\n");
	{
		struct cf_ks_audit_field f[] = {
			{ "tenant", cf_ks_tenant_name(t), 0 },
			{ "key_version", NULL, version },
			{ "mounted", mounted ? "yes" : "no", 0 },
			{ "files", NULL, (long long)st.files },
			{ "rewritten", NULL, (long long)st.rewritten },
			{ "old", NULL, (long long)st.old },
			{ "result", rc < 0 ? "error" : st.old > 0 ?
			    "incomplete" : "complete", 0 },
		};

		(void)!cf_ks_audit_append(home, "tenant.reencrypt", f, 7);
	}
	if (rc == -EINPROGRESS) {
		fprintf(stderr, "coffer: the metadata of %s's store is being "
		    "re-keyed: run 'coffer tenant reencrypt %s --metadata' to "
		    "finish it first\n", argv[1], argv[1]);
		goto out;
	}
	if (rc == -EBUSY && !mounted) {
		fprintf(stderr, "coffer: the store of %s is in use (a backup "
		    "reading it, or a mount whose daemon does not answer on "
		    "its control socket); retry when it is free\n", argv[1]);
		goto out;
	}
	if (rc < 0) {
		fprintf(stderr, "coffer: re-encrypting the store of %s%s: %s "
		    "(rerun to go on; no file is lost)\n", argv[1],
		    mounted ? " (mounted)" : "", err[0] != '\0' ? err :
		    strerror(-rc));
		goto out;
	}
	if (ctx->json)
		tl_print_json(json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}",
		    "tenant", cf_ks_tenant_name(t), "key_version",
		    (json_int_t)version, "files",
		    (json_int_t)st.files, "rewritten", (json_int_t)st.rewritten,
		    "old", (json_int_t)st.old, "failed",
		    (json_int_t)st.failed));
	else if (ctx->verbose >= 0)
		printf("%s: %llu files re-encrypted to key version %u; %llu "
		    "files still on older versions\n", argv[1],
		    (unsigned long long)st.rewritten, version,
		    (unsigned long long)st.old);
	if (st.old > 0) {
		fprintf(stderr, "coffer: %llu files of %s could not be "
		    "re-encrypted (damaged, or of a version with no key); "
		    "they were left as they were\n",
		    (unsigned long long)st.failed, argv[1]);
		goto out;
	}
	ret = CF_EXIT_OK;
out:
	cf_fs_keys_free(keys);
	cf_ks_tenant_free(t);
	return ret;
}

/*
 * [BK-SNAP-3] Whether the backup repository at url still needs root key
 * version v, decided under the repository's exclusive lock, which
 * *lockp keeps (with *rp, the opened repository) for the shred that
 * follows.  Returns CF_EXIT_OK if nothing needs v (or there is no
 * repository), else prints why and returns CF_EXIT_FAIL.
 *
 * Snapshots that record their versions (key_versions) answer for
 * themselves and are named; for snapshots without a record only the
 * old scan of every object header can answer.  Whatever the records
 * say, an indexed pack or an index object under v refuses too: a prune
 * may have moved a snapshot's blobs into a pack of a version its record
 * does not list (docs/format/repository.md, [BK-SNAP-2]).
 */
static int
repo_check(struct cf_ks_tenant *t, const char *name, const char *url,
    uint32_t v, struct cf_bk_repo **rp, struct cf_bk_lock **lockp)
{
	struct cf_bk_version_use u;
	struct cf_secbuf *root = NULL;
	struct cf_bk_repo *r = NULL;
	uint32_t rv = 0, kv = 0;
	size_t i, bad = 0;
	char hex[65], when[32];
	time_t secs;
	struct tm tm;
	int rc, ret = CF_EXIT_FAIL;

	*rp = NULL;
	*lockp = NULL;
	rc = cf_bk_repo_key_version(url, &rv);
	if (rc == -ENOENT)
		return CF_EXIT_OK;	/* no repository: nothing needs v */
	if (rc < 0) {
		fprintf(stderr, "coffer: %s: cannot check which key version "
		    "the repository %s needs: %s\n", name, url,
		    strerror(-rc));
		return CF_EXIT_FAIL;
	}
	if (rv == v) {
		fprintf(stderr, "coffer: %s: the config of the backup "
		    "repository %s is under key version %u (and, unless "
		    "re-keyed before, its id and chunking keys derive from "
		    "it): run 'coffer tenant reencrypt %s --repository' to "
		    "move it to version %u first\n", name, url, v, name,
		    cf_ks_tenant_key_version(t));
		return CF_EXIT_FAIL;
	}
	rc = tl_repo_unlock(t, url, &root, &kv);
	if (rc == 0)
		rc = tl_repo_open(t, &r, url, root, kv, 0);
	cf_secbuf_free(root);
	if (rc < 0) {
		fprintf(stderr, "coffer: %s: cannot open the repository %s to "
		    "read which key versions its snapshots need: %s\n", name,
		    url, strerror(-rc));
		goto out;
	}
	rc = cf_bk_repo_lock(r, 1, NULL, lockp);
	if (rc == -EBUSY) {
		fprintf(stderr, "coffer: %s: repository %s is locked (a backup "
		    "or a prune is running, and may be writing under key "
		    "version %u); try again later\n", name, url, v);
		goto out;
	}
	if (rc < 0) {
		fprintf(stderr, "coffer: %s: locking the repository %s: %s\n",
		    name, url, strerror(-rc));
		goto out;
	}
	/* What was written before the lock was taken counts too. */
	rc = cf_bk_repo_index_load(r, &bad);
	if (rc == 0 && bad > 0)
		rc = -EBADMSG;
	if (rc < 0) {
		fprintf(stderr, "coffer: %s: cannot read the index of %s (%s); "
		    "run 'coffer verify %s'\n", name, url, strerror(-rc),
		    name);
		goto out;
	}
	rc = cf_bk_repo_version_use(r, v, &u);
	if (rc < 0 && !sodium_is_zero(u.bad_id, sizeof(u.bad_id))) {
		cf_bk_id_hex(u.bad_id, hex);
		fprintf(stderr, "coffer: %s: snapshot %.8s is unreadable (%s), "
		    "so what it needs is unknown; run 'coffer verify %s'\n",
		    name, hex, strerror(-rc), name);
		goto out;
	}
	if (rc < 0) {
		fprintf(stderr, "coffer: %s: cannot read the repository %s "
		    "(%s); run 'coffer verify %s'\n", name, url,
		    strerror(-rc), name);
		goto out;
	}
	if (u.needs > 0) {
		fprintf(stderr, "coffer: %s: key version %u is needed by "
		    "snapshots of %s:", name, v, url);
		for (i = 0; i < u.needs && i < CF_BK_VERSION_NAMED; i++) {
			cf_bk_id_hex(u.need_id[i], hex);
			secs = (time_t)(u.need_time[i] / 1000000000);
			gmtime_r(&secs, &tm);
			strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
			fprintf(stderr, "%s %.8s (%s)", i ? "," : "", hex, when);
		}
		if (u.needs > CF_BK_VERSION_NAMED)
			fprintf(stderr, " and %zu more",
			    u.needs - CF_BK_VERSION_NAMED);
		fprintf(stderr, "\ncoffer: %s: retention must remove them "
		    "first (coffer retention apply, which prunes); key "
		    "version %u is kept\n", name, v);
		goto out;
	}
	if (u.scan[0] + u.scan[1] + u.scan[2] + u.scan[3] > 0) {
		/* Snapshots of an older coffer: only the headers can tell. */
		fprintf(stderr, "coffer: %s: objects of the backup repository "
		    "%s are under key version %u (%llu snapshots, %llu "
		    "packs, %llu indexes, %llu locks) and %zu snapshots do "
		    "not record which versions they need: the snapshots that "
		    "need them must go first (coffer retention apply, which "
		    "prunes)\n", name, url, v, (unsigned long long)u.scan[2],
		    (unsigned long long)u.scan[0],
		    (unsigned long long)u.scan[1],
		    (unsigned long long)u.scan[3], u.unknown);
		goto out;
	}
	if (u.indexed[0] + u.indexed[1] > 0) {
		fprintf(stderr, "coffer: %s: %llu packs and %llu index objects "
		    "of %s are under key version %u, which no snapshot "
		    "records: either prune has not removed them yet, or a "
		    "snapshot reuses blobs moved there (a repack, or a "
		    "concurrent backup); run 'coffer retention apply %s' and "
		    "retry: if they stay, a live snapshot needs them\n", name,
		    (unsigned long long)u.indexed[0],
		    (unsigned long long)u.indexed[1], url, v, name);
		goto out;
	}
	ret = CF_EXIT_OK;
out:
	*rp = r;	/* freed by the caller, with the lock */
	return ret;
}

int
tl_tenant_retire_key(struct tl_ctx *ctx, int argc, char **argv)
{
	struct cf_ks_home *home;
	struct cf_ks_tenant *t = NULL;
	struct cf_bk_repo *repo = NULL;
	struct cf_bk_lock *lock = NULL;
	char store[4096], url[4200], *end;
	uint32_t m = 0, from, to;
	unsigned long v;
	uint64_t n = 0;
	int rc, ret = CF_EXIT_FAIL;

	if (argc != 3)
		return tl_usage(&tl_cmd_tenant, "tenant retire-key: give NAME "
		    "and VERSION");
	errno = 0;
	v = strtoul(argv[2], &end, 10);
	if (errno != 0 || *end != '\0' || v == 0 || v > UINT32_MAX)
		return tl_usage(&tl_cmd_tenant, "tenant retire-key: VERSION "
		    "must be a key version number");
	home = tl_home(ctx, 0);
	rc = cf_ks_tenant_open(home, argv[1], &t);
	if (rc < 0)
		return tl_fail(rc, NULL);
	if (v >= cf_ks_tenant_key_version(t) ||
	    cf_ks_tenant_retired(t, (uint32_t)v))
		goto retire;	/* the keystore refuses it and says why */
	tl_store_path(home, t, store, sizeof(store));
	/* The store's metadata version (its marker; a store not made
	 * yet needs none), and a re-keying a crash left half done. */
	rc = cf_fs_metakey_journal_read(store, &from, &to);
	if (rc != -ENOENT && rc != -ENOTDIR) {
		fprintf(stderr, "coffer: %s: a re-keying of the store's "
		    "metadata is pending (journal %s/%s%s): run 'coffer "
		    "tenant reencrypt %s --metadata' to finish it first\n",
		    argv[1], store, CF_FS_METAKEY_JOURNAL, rc == -EPROTO ?
		    ", damaged" : "", argv[1]);
		goto out;
	}
	rc = cf_fs_store_meta_version(store, &m);
	if (rc < 0) {
		fprintf(stderr, "coffer: %s: cannot read the marker of the "
		    "store %s: %s\n", argv[1], store, strerror(-rc));
		goto out;
	}
	if (m == v) {
		fprintf(stderr, "coffer: %s: key version %lu keys the names, "
		    "symlink targets, xattrs and generation values of the "
		    "store: run 'coffer tenant reencrypt %s --metadata' "
		    "(store unmounted) to move them to version %u first\n",
		    argv[1], v, argv[1], cf_ks_tenant_key_version(t));
		goto out;
	}
	rc = cf_fs_store_count_version(store, (uint32_t)v, &n);
	if (rc < 0 && rc != -ENOENT) {
		fprintf(stderr, "coffer: %s: cannot check the store %s: %s\n",
		    argv[1], store, strerror(-rc));
		goto out;
	}
	if (n > 0) {
		fprintf(stderr, "coffer: %s: %llu files of the store still use "
		    "key version %lu: run 'coffer tenant reencrypt %s' "
		    "first\n", argv[1], (unsigned long long)n, v, argv[1]);
		goto out;
	}
	tl_repo_url(home, t, NULL, url, sizeof(url));
	if (repo_check(t, argv[1], url, (uint32_t)v, &repo, &lock) !=
	    CF_EXIT_OK)
		goto out;
retire:
	rc = cf_ks_tenant_retire_key(t, (uint32_t)v);
	if (rc < 0) {
		ret = tl_fail(rc, argv[1]);
		goto out;
	}
	if (ctx->verbose >= 0)
		printf("%s: key version %lu retired and shredded\n", argv[1],
		    v);
	ret = CF_EXIT_OK;
out:
	/* Held from the check to the shred: no backup wrote meanwhile. */
	(void)!cf_bk_lock_release(lock);
	cf_bk_repo_free(repo);
	cf_ks_tenant_free(t);
	return ret;
}

void
tl_rotate_key_notify(struct tl_ctx *ctx, struct cf_ks_tenant *t)
{
	char store[4096], err[512];
	uint32_t v = 0;
	int rc;

	tl_store_path(tl_home(ctx, 0), t, store, sizeof(store));
	rc = cf_fs_keys_reload(store, &v, err, sizeof(err));
	if (rc == -ENOTCONN || ctx->verbose < 0 || ctx->json)
		return;
	if (rc == 0)
		printf("%s: the mounted store writes new files under key "
		    "version %u now\n", cf_ks_tenant_name(t), v);
	else
		fprintf(stderr, "coffer: %s: the mounted store could not load "
		    "the new version (%s); it writes new files under the old "
		    "one until it is remounted\n", cf_ks_tenant_name(t),
		    err[0] != '\0' ? err : strerror(-rc));
}
