/*
 * cmd_mount.c - coffer mount NAME MOUNTPOINT [-f] [-o OPTIONS] and
 * coffer umount MOUNTPOINT.
 *
 * mount unlocks the tenant's root key through its KMS (lockout and audit
 * apply), derives the store's keys, drops the root key, checks the
 * backing store belongs to this tenant and serves it until unmounted.
 * One process per tenant: it never holds another tenant's keys.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cf_backup.h"
#include "cf_fs.h"
#include "tl_int.h"

const struct tl_cmd tl_cmd_mount = {
	"mount", cmd_mount,
	"  coffer mount NAME MOUNTPOINT [-f] [-o OPTIONS]\n",
	"mount a tenant's encrypted store (FUSE)",
};

const struct tl_cmd tl_cmd_umount = {
	"umount", cmd_umount,
	"  coffer umount MOUNTPOINT\n",
	"unmount a tenant's store",
};

/*
 * Takes coffer's own options out of a -o list (the rest goes to FUSE):
 * accept_rollback, nolend.  out gets the remaining list, or "" if none is
 * left.
 */
static int
split_opts(const char *in, char *out, size_t cap, int *accept_rollback,
    int *nolend)
{
	char buf[1024], *tok, *save = NULL;
	size_t used = 0;
	int n;

	*accept_rollback = 0;
	*nolend = 0;
	out[0] = '\0';
	if (in == NULL)
		return 0;
	if ((size_t)snprintf(buf, sizeof(buf), "%s", in) >= sizeof(buf))
		return -E2BIG;
	for (tok = strtok_r(buf, ",", &save); tok != NULL;
	    tok = strtok_r(NULL, ",", &save)) {
		if (strcmp(tok, "accept_rollback") == 0) {
			*accept_rollback = 1;
			continue;
		}
		if (strcmp(tok, "nolend") == 0) {
			*nolend = 1;
			continue;
		}
		n = snprintf(out + used, cap - used, "%s%s", used ? "," : "",
		    tok);
		if (n < 0 || (size_t)n >= cap - used)
			return -E2BIG;
		used += (size_t)n;
	}
	return 0;
}

static void
audit_mount(struct cf_ks_home *home, const char *event, const char *tenant,
    const char *mp)
{
	struct cf_ks_audit_field f[] = {
		{ "tenant", tenant, 0 },
		{ "mountpoint", mp, 0 },
		{ "pid", NULL, (long long)getpid() },
	};

	(void)!cf_ks_audit_append(home, event, f, 3);
}

int
tl_fs_keys(struct cf_ks_home *home, struct cf_ks_tenant *t,
    struct cf_fs_keys **out)
{
	struct cf_fs_keys *keys = NULL;
	struct cf_secbuf *root = NULL;
	uint32_t v[CF_FS_KEYS_MAX + 1], m = 0;
	char store[PATH_MAX];
	size_t n, i;
	int rc;

	*out = NULL;
	/*
	 * Names, symlink targets, xattrs, the marker and generation tags
	 * are under the store's metadata version, which its marker names
	 * (1 for a marker of version 1; the newest for a store not made
	 * yet); every live version keys the contents of its files, and
	 * the newest keys new files (docs/crypto.md).  A marker of
	 * neither form is refused by the marker check, as before.
	 */
	tl_store_path(home, t, store, sizeof(store));
	rc = cf_fs_store_meta_version(store, &m);
	if (rc < 0 && rc != -EPROTO)
		return rc;
	if (rc == -EPROTO)
		m = 1;
	else if (m == 0)
		m = cf_ks_tenant_key_version(t);
	rc = cf_ks_tenant_unlock(t, m, &root);
	if (rc < 0)
		return rc;
	rc = cf_fs_keys_new(&keys, root, cf_ks_tenant_cipher(t), m);
	cf_secbuf_free(root);	/* only the derived keys stay in memory */
	root = NULL;
	if (rc < 0)
		return rc;
	n = cf_ks_tenant_versions(t, v, CF_FS_KEYS_MAX + 1);
	if (n > CF_FS_KEYS_MAX) {
		rc = -E2BIG;
		goto out;
	}
	for (i = 0; i < n; i++) {
		if (v[i] == m)
			continue;
		rc = cf_ks_tenant_unlock(t, v[i], &root);
		if (rc < 0)
			goto out;
		rc = cf_fs_keys_add(keys, root, v[i]);
		cf_secbuf_free(root);
		root = NULL;
		if (rc < 0)
			goto out;
	}
	if (cf_fs_keys_version(keys) != cf_ks_tenant_key_version(t)) {
		rc = -ENOKEY;	/* the newest version is missing */
		goto out;
	}
	*out = keys;
	keys = NULL;
out:
	cf_fs_keys_free(keys);
	return rc;
}

void
tl_store_path(struct cf_ks_home *home, const struct cf_ks_tenant *t,
    char *buf, size_t cap)
{
	if (cf_ks_tenant_get(t, "store") != NULL)
		snprintf(buf, cap, "%s", cf_ks_tenant_get(t, "store"));
	else
		snprintf(buf, cap, "%s/%s/store", cf_ks_home_path(home),
		    cf_ks_tenant_dir(t));
}

int
cmd_mount(struct tl_ctx *ctx, int argc, char **argv)
{
	struct cf_fs_mount_opts mo;
	struct cf_ks_tenant *t = NULL;
	struct cf_secbuf *root = NULL;
	struct cf_fs_keys *keys = NULL;
	struct cf_ks_home *home;
	char store[PATH_MAX], mp[PATH_MAX], gen_log[PATH_MAX], fopts[1024];
	struct cf_bk_lifecycle_eval le;
	const char *fuse_opts = NULL;
	int c, fg = 0, accept_rollback, nolend, rc, lockfd = -1;
	int ret = CF_EXIT_FAIL;

	while ((c = getopt(argc, argv, "fo:")) != -1) {
		if (c == 'f')
			fg = 1;
		else if (c == 'o')
			fuse_opts = optarg;
		else
			return tl_usage(&tl_cmd_mount, "mount: bad option");
	}
	if (optind != argc - 2)
		return tl_usage(&tl_cmd_mount, "mount: give NAME and "
		    "MOUNTPOINT");
	if (split_opts(fuse_opts, fopts, sizeof(fopts), &accept_rollback,
	    &nolend) < 0)
		return tl_usage(&tl_cmd_mount, "mount: -o list too long");
	if (realpath(argv[optind + 1], mp) == NULL) {
		fprintf(stderr, "coffer: mountpoint %s: %s\n",
		    argv[optind + 1], strerror(errno));
		return CF_EXIT_FAIL;
	}
	home = tl_home(ctx, 0);
	rc = cf_ks_tenant_open(home, argv[optind], &t);
	if (rc < 0)
		return tl_fail(rc, NULL);
	/* The effective lifecycle state by date (docs/retention.md). */
	rc = tl_lifecycle_eval(home, t, cf_ks_now(), &le);
	if (rc < 0)
		goto out;
	if (le.mount_refused) {
		fprintf(stderr, "coffer: tenant %s is %s: its store may not be "
		    "mounted\n", argv[optind], le.effective);
		ret = CF_EXIT_DENIED;
		goto out;
	}
	rc = tl_fs_keys(home, t, &keys);
	if (rc < 0) {
		ret = tl_fail(rc, argv[optind]);
		goto out;
	}
	tl_store_path(home, t, store, sizeof(store));
	rc = cf_fs_store_init(keys, store);
	if (rc == -EBADMSG) {
		uint32_t m = 0;

		/* A re-keying of the metadata may have ended since the
		 * marker was read: once more with the version it names. */
		if (cf_fs_store_meta_version(store, &m) == 0 && m != 0 &&
		    m != cf_fs_keys_meta_version(keys)) {
			cf_fs_keys_free(keys);
			keys = NULL;
			rc = tl_fs_keys(home, t, &keys);
			if (rc < 0) {
				ret = tl_fail(rc, argv[optind]);
				goto out;
			}
			rc = cf_fs_store_init(keys, store);
		}
	}
	if (rc == -EBADMSG) {
		fprintf(stderr, "coffer: the store at %s does not belong to "
		    "tenant %s (another tenant's store, or its marker was "
		    "altered); refusing to mount\n", store, argv[optind]);
		ret = CF_EXIT_INTEGRITY;
		goto out;
	}
	if (rc == -EINPROGRESS) {
		fprintf(stderr, "coffer: the metadata of %s's store is being "
		    "re-keyed (journal %s/%s): run 'coffer tenant reencrypt "
		    "%s --metadata' to finish it, then mount\n", argv[optind],
		    store, CF_FS_METAKEY_JOURNAL, argv[optind]);
		goto out;
	}
	if (rc < 0) {
		fprintf(stderr, "coffer: store %s: %s\n", store,
		    strerror(-rc));
		goto out;
	}
	/* Shared with other mounts, never with an offline re-encryption;
	 * held by the daemon (across its fork) until it exits. */
	lockfd = cf_fs_store_lock_shared(store, 0);
	if (lockfd == -EBUSY) {
		fprintf(stderr, "coffer: the store of %s is being re-encrypted "
		    "('coffer tenant reencrypt'); mount it when that ends\n",
		    argv[optind]);
		goto out;
	}
	if (lockfd < 0) {
		fprintf(stderr, "coffer: store %s: %s\n", store,
		    strerror(-lockfd));
		goto out;
	}
	/* A re-encryption a crash interrupted: finish its file first. */
	rc = cf_fs_rekey_recover(store);
	if (rc == -EINPROGRESS) {
		fprintf(stderr, "coffer: the metadata of %s's store is being "
		    "re-keyed (journal %s/%s): run 'coffer tenant reencrypt "
		    "%s --metadata' to finish it, then mount\n", argv[optind],
		    store, CF_FS_METAKEY_JOURNAL, argv[optind]);
		goto out;
	}
	if (rc < 0) {
		fprintf(stderr, "coffer: store %s: cannot finish an "
		    "interrupted re-encryption (journal cf.rekey): %s\n",
		    store, strerror(-rc));
		goto out;
	}
	memset(&mo, 0, sizeof(mo));
	mo.backing = store;
	mo.mountpoint = mp;
	mo.foreground = fg;
	mo.fuse_opts = fopts[0] != '\0' ? fopts : NULL;
	/* Outside the store: a copy of the store cannot roll it back. */
	snprintf(gen_log, sizeof(gen_log), "%s/%s/fsgen", cf_ks_home_path(home),
	    cf_ks_tenant_dir(t));
	mo.gen_log = gen_log;
	mo.accept_rollback = accept_rollback;
	mo.nolend = nolend;
	mo.home = home;
	mo.tenant = cf_ks_tenant_name(t);
	audit_mount(home, "fs.mount", mo.tenant, mp);
	tl_tenant_touch(t);	/* last use, for the free tier's idle purge */
	rc = cf_fs_mount(keys, &mo);
	audit_mount(home, "fs.unmount", mo.tenant, mp);
	tl_tenant_touch(t);
	if (rc < 0) {
		fprintf(stderr, "coffer: mount %s on %s failed: %s\n",
		    argv[optind], mp, strerror(-rc));
		goto out;
	}
	ret = CF_EXIT_OK;
out:
	if (lockfd >= 0)
		close(lockfd);
	cf_fs_keys_free(keys);
	cf_secbuf_free(root);
	cf_ks_tenant_free(t);
	return ret;
}

int
cmd_umount(struct tl_ctx *ctx, int argc, char **argv)
{
	pid_t pid;
	int status;

	(void)ctx;
	if (argc != 2)
		return tl_usage(&tl_cmd_umount, "umount: give MOUNTPOINT");
	if (umount2(argv[1], 0) == 0)
		return CF_EXIT_OK;
	if (errno != EPERM) {
		fprintf(stderr, "coffer: umount %s: %s\n", argv[1],
		    strerror(errno));
		return CF_EXIT_FAIL;
	}
	/* Not root: the setuid helper may unmount our own mounts. */
	pid = fork();
	if (pid == 0) {
		execlp("fusermount3", "fusermount3", "-u", "--", argv[1],
		    (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0)
		return CF_EXIT_FAIL;
	return CF_EXIT_OK;
}
