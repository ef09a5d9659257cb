/*
 * ks_home.c - coffer's home directory and where passphrases come from.
 *
 * The home holds coffer.conf, kms/, tenants/, locks/ and audit/ (layout
 * in docs/format/home.md).  It is created with mode 0700 and every path
 * under it is opened relative to one directory fd, never rebuilt as an
 * absolute string.  Passphrases are read into locked memory from a
 * configured file, COFFER_PASSPHRASE_FILE, or the caller's prompt: never
 * from argv or an environment variable holding the secret itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "ks_int.h"

#define PASS_MAX 1024

static const char *const home_dirs[] = { "tenants", "kms", "locks", "audit" };

int
cf_ks_home_open(struct cf_ks_home **out, const char *path, int flags)
{
	struct cf_ks_home *home = NULL;
	struct passwd *pw;
	char conf[PATH_MAX];
	struct stat st;
	size_t i;
	int rc = -ENOMEM;

	*out = NULL;
	if (path == NULL || path[0] == '\0')
		return ks_err(-EINVAL, "no home directory given");
	if ((flags & CF_KS_HOME_CREATE) != 0) {
		rc = ks_mkdirs(AT_FDCWD, path, 0700);
		if (rc < 0)
			return ks_err(rc, "cannot create home %s: %s", path,
			    strerror(-rc));
	}
	home = calloc(1, sizeof(*home));
	if (home == NULL)
		goto out;
	home->dirfd = -1;
	home->path = strdup(path);
	if (home->path == NULL)
		goto out;
	home->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (home->dirfd < 0) {
		rc = -errno;
		ks_err(rc, "cannot open home %s: %s", path, strerror(-rc));
		goto out;
	}
	if (fstat(home->dirfd, &st) != 0) {
		rc = -errno;
		goto out;
	}
	if ((flags & CF_KS_HOME_CREATE) != 0 && (st.st_mode & 077) != 0 &&
	    fchmod(home->dirfd, 0700) != 0) {
		rc = -errno;
		ks_err(rc, "cannot restrict home %s to mode 0700", path);
		goto out;
	}
	if ((flags & CF_KS_HOME_CREATE) != 0) {
		for (i = 0; i < sizeof(home_dirs) / sizeof(home_dirs[0]); i++) {
			if (mkdirat(home->dirfd, home_dirs[i], 0700) != 0 &&
			    errno != EEXIST) {
				rc = -errno;
				ks_err(rc, "cannot create %s/%s: %s", path,
				    home_dirs[i], strerror(-rc));
				goto out;
			}
		}
	}
	if (snprintf(conf, sizeof(conf), "%s/coffer.conf", path) >=
	    (int)sizeof(conf)) {
		rc = -ENAMETOOLONG;
		goto out;
	}
	/* Through the home's descriptor, as everything else in it: a home
	 * path renamed or replaced meanwhile is not read from elsewhere. */
	rc = ks_config_load_at(&home->cfg, home->dirfd, "coffer.conf", conf);
	if (rc < 0)
		goto out;
	pw = getpwuid(getuid());
	snprintf(home->actor, sizeof(home->actor), "%s(%u)",
	    pw != NULL ? pw->pw_name : "uid", (unsigned)getuid());
	*out = home;
	home = NULL;
	rc = 0;
out:
	cf_ks_home_free(home);
	return rc;
}

void
cf_ks_home_free(struct cf_ks_home *home)
{
	if (home == NULL)
		return;
	ks_kms_close_all(home);
	ks_audit_close(home);
	cf_ks_config_free(home->cfg);
	if (home->dirfd >= 0)
		close(home->dirfd);
	free(home->path);
	free(home);
}

const char *
cf_ks_home_path(const struct cf_ks_home *home)
{
	return home->path;
}

const struct cf_ks_config *
cf_ks_home_config(const struct cf_ks_home *home)
{
	return home->cfg;
}

void
cf_ks_home_set_passphrase_cb(struct cf_ks_home *home, cf_ks_passphrase_cb cb,
    void *arg)
{
	home->pass_cb = cb;
	home->pass_arg = arg;
}

void
cf_ks_home_set_actor(struct cf_ks_home *home, const char *actor)
{
	snprintf(home->actor, sizeof(home->actor), "%s", actor);
}

/* Reads a passphrase file into locked memory (checks in ks_read_secret). */
static int
read_pass_file(const char *path, struct cf_secbuf *sb, size_t *len)
{
	unsigned char *p = cf_secbuf_data(sb);
	size_t got;
	int rc;

	rc = ks_read_secret(AT_FDCWD, path, "passphrase file", sb,
	    PASS_MAX - 1, &got);
	if (rc < 0)
		return rc;
	/* One trailing newline (echo > file) is not part of the passphrase. */
	if (got > 0 && p[got - 1] == '\n')
		got--;
	if (got > 0 && p[got - 1] == '\r')
		got--;
	*len = got;
	return 0;
}

int
ks_home_passphrase(struct cf_ks_home *home, const char *kms_name,
    const char *pass_file, int confirm, struct cf_secbuf **out, size_t *len)
{
	struct cf_secbuf *sb = NULL;
	const char *env;
	size_t got = 0;
	int rc;

	*out = NULL;
	*len = 0;
	rc = cf_secbuf_new(&sb, PASS_MAX);
	if (rc < 0)
		return rc;
	env = getenv("COFFER_PASSPHRASE_FILE");
	/*
	 * A relative passphrase_file would be relative to the directory the
	 * command happened to start in, not to coffer.conf.  [KS-PASS-1]
	 */
	if (pass_file != NULL && pass_file[0] != '\0' && pass_file[0] != '/')
		rc = ks_err(-EINVAL, "passphrase_file of [kms.%s] must be an "
		    "absolute path, not '%s'", kms_name, pass_file);
	else if (pass_file != NULL && pass_file[0] != '\0')
		rc = read_pass_file(pass_file, sb, &got);
	else if (env != NULL && env[0] != '\0')
		rc = read_pass_file(env, sb, &got);
	else if (home->pass_cb != NULL)
		rc = home->pass_cb(home->pass_arg, kms_name, confirm,
		    (char *)cf_secbuf_data(sb), PASS_MAX - 1, &got);
	else
		rc = ks_err(-EACCES, "no passphrase for KMS '%s': set "
		    "COFFER_PASSPHRASE_FILE or passphrase_file in "
		    "[kms.%s], or run on a terminal", kms_name, kms_name);
	if (rc < 0)
		goto out;
	if (got == 0) {
		rc = ks_err(-EINVAL, "empty passphrase for KMS '%s'",
		    kms_name);
		goto out;
	}
	*out = sb;
	*len = got;
	sb = NULL;
out:
	cf_secbuf_free(sb);
	return rc;
}

int
cf_ks_harden_process(void)
{
	struct rlimit rl = { 0, 0 };

	if (setrlimit(RLIMIT_CORE, &rl) != 0)
		return ks_err(-errno, "setrlimit(RLIMIT_CORE): %s",
		    strerror(errno));
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		return ks_err(-errno, "prctl(PR_SET_DUMPABLE): %s",
		    strerror(errno));
	return 0;
}

/* 1 if this process may lock all its pages without running into a limit. */
static int
may_lock_all(void)
{
	struct rlimit rl;
	unsigned long long eff = 0;
	char line[128];
	FILE *f;

	if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur == RLIM_INFINITY)
		return 1;
	if ((f = fopen("/proc/self/status", "re")) == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "CapEff: %llx", &eff) == 1)
			break;
	fclose(f);
	return (eff >> 14) & 1;		/* CAP_IPC_LOCK */
}

int
cf_ks_lock_memory(void)
{
	/* MCL_FUTURE holds for the process, not for a fork's child. */
	static _Atomic pid_t locked;

	if (locked == getpid())
		return 1;
	if (!may_lock_all())
		return 0;
	if (mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0)
		return -errno;	/* not ks_err: callers may ignore it */
	locked = getpid();
	return 1;
}

int
cf_ks_name_valid(const char *name)
{
	size_t i, len = strlen(name);

	if (len == 0 || len > CF_KS_NAME_MAX)
		return 0;
	for (i = 0; i < len; i++) {
		char c = name[i];

		if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
			continue;
		if (i > 0 && (c == '.' || c == '_' || c == '-'))
			continue;
		return 0;
	}
	return 1;
}
