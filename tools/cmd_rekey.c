/*
 * cmd_rekey.c - coffer tenant reencrypt|retire-key: the store's side of a
 * root key rotation (docs/kms.md, Root key rotation).
 *
 * reencrypt rewrites every file of the store still under an older root
 * key version with the newest (fs_rekey.c): itself on an unmounted store,
 * through the daemon's control socket on a mounted one; retire-key checks
 * that nothing still needs a version (the store's files and metadata, the
 * backup repository) before the keystore shreds it.
 *
 * Not here: rotate-key itself (cmd_tenant.c, keystore only).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
	int rc, mounted = 0, ret = CF_EXIT_FAIL;

	if (argc != 2)
		return tl_usage(&tl_cmd_tenant, "tenant reencrypt: give one "
		    "NAME");
	home = tl_home(ctx, 0);
	rc = cf_ks_tenant_open(home, argv[1], &t);
	if (rc < 0)
		return tl_fail(rc, NULL);
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
	rc = tl_fs_keys(t, &keys);
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

int
tl_tenant_retire_key(struct tl_ctx *ctx, int argc, char **argv)
{
	struct cf_ks_home *home;
	struct cf_ks_tenant *t = NULL;
	char store[4096], url[4200], *end;
	unsigned long v;
	uint32_t rv = 0;
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
	if (v >= cf_ks_tenant_key_version(t))
		goto retire;	/* the keystore refuses it and says why */
	if (v == TL_FS_META_VERSION) {
		fprintf(stderr, "coffer: %s: key version %lu keys the names, "
		    "symlink targets and xattrs of the store, which "
		    "re-encryption does not rewrite: it cannot be retired\n",
		    argv[1], v);
		goto out;
	}
	tl_store_path(home, t, store, sizeof(store));
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
	rc = cf_bk_repo_key_version(url, &rv);
	if (rc < 0 && rc != -ENOENT) {
		fprintf(stderr, "coffer: %s: cannot check which key version "
		    "the repository %s needs: %s\n", argv[1], url,
		    strerror(-rc));
		goto out;
	}
	if (rc == 0 && rv == v) {
		fprintf(stderr, "coffer: %s: the backup repository %s was "
		    "created under key version %lu: its id and chunking keys "
		    "derive from it, so every snapshot needs it\n", argv[1],
		    url, v);
		goto out;
	}
	if (rc == 0) {
		uint64_t c[4];

		rc = cf_bk_repo_count_version(url, (uint32_t)v, c);
		if (rc < 0) {
			fprintf(stderr, "coffer: %s: cannot read the "
			    "repository %s: %s\n", argv[1], url,
			    strerror(-rc));
			goto out;
		}
		if (c[0] + c[1] + c[2] + c[3] > 0) {
			fprintf(stderr, "coffer: %s: objects of the backup "
			    "repository %s are under key version %lu (%llu "
			    "snapshots, %llu packs, %llu indexes, %llu locks): "
			    "the snapshots that need them must go first "
			    "(coffer retention apply, which prunes)\n",
			    argv[1], url, v, (unsigned long long)c[2],
			    (unsigned long long)c[0], (unsigned long long)c[1],
			    (unsigned long long)c[3]);
			goto out;
		}
	}
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
