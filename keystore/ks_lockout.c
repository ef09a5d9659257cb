/*
 * ks_lockout.c - three strikes, thirty minutes (seed 003).
 *
 * A subject ("kms.local", "tenant.acme") that fails to unlock
 * CF_KS_LOCKOUT_FAILURES times in a row is refused for
 * CF_KS_LOCKOUT_SECONDS, even with the right secret.  The state lives in
 * HOME/locks/SUBJECT.json so it survives restarts and is shared by every
 * coffer process; updates are serialised with flock on the lock
 * directory.  Anyone who can write the home can delete the state: the
 * lockout slows guessing through coffer, it is no defence against root.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ks_int.h"

static int
subject_path(const char *subject, char *buf, size_t len)
{
	size_t i;

	/* Subjects are "kms." or "tenant." plus a valid name: safe names. */
	for (i = 0; subject[i] != '\0'; i++) {
		char c = subject[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '.' || c == '_' || c == '-'))
			cf_misuse("lockout subject has unsafe characters");
	}
	if (i == 0 || subject[0] == '.' ||
	    snprintf(buf, len, "locks/%s.json", subject) >= (int)len)
		cf_misuse("lockout subject");
	return 0;
}

/* Takes an exclusive lock on HOME/locks; returns the fd to close. */
static int
lock_dir(struct cf_ks_home *home)
{
	int fd;

	if (mkdirat(home->dirfd, "locks", 0700) != 0 && errno != EEXIST)
		return -errno;
	fd = ks_openat(home->dirfd, "locks", O_RDONLY | O_DIRECTORY, 0);
	if (fd < 0)
		return fd;
	while (flock(fd, LOCK_EX) != 0) {
		if (errno != EINTR) {
			int rc = -errno;

			close(fd);
			return rc;
		}
	}
	return fd;
}

/* Reads the state; a missing file is zero failures, no lock. */
static int
read_state(struct cf_ks_home *home, const char *path, unsigned *failures,
    time_t *until)
{
	json_t *j = NULL, *f, *u;
	int rc;

	*failures = 0;
	*until = 0;
	rc = ks_json_load(home->dirfd, path, 4096, &j);
	if (rc == -ENOENT)
		return 0;
	if (rc == -EPROTO || rc == -EFBIG)
		goto damaged;
	if (rc < 0)
		return rc;
	f = json_object_get(j, "failures");
	u = json_object_get(j, "locked_until");
	if (!json_is_integer(f) || !json_is_integer(u) ||
	    json_integer_value(f) < 0 || json_integer_value(u) < 0) {
		json_decref(j);
		rc = -EPROTO;
		goto damaged;
	}
	*failures = (unsigned)json_integer_value(f);
	*until = (time_t)json_integer_value(u);
	json_decref(j);
	return 0;
damaged:
	/*
	 * Reading it as a fresh lock would renew the lock at every read,
	 * forever: refuse with an error that says how to get out instead.
	 * Unlocks stay refused until the operator acts.
	 */
	return ks_err(rc, "lockout state %s/%s is damaged (%s); unlocking "
	    "is refused until an operator checks for guessing and removes "
	    "the file: rm %s/%s", home->path, path, rc == -EFBIG ?
	    "over 4096 bytes" : "not the expected JSON", home->path, path);
}

int
cf_ks_lockout_state(struct cf_ks_home *home, const char *subject,
    unsigned *failures, time_t *until)
{
	char path[PATH_MAX];
	int rc;

	subject_path(subject, path, sizeof(path));
	rc = read_state(home, path, failures, until);
	if (rc < 0)
		return rc;
	if (*until != 0 && *until <= cf_ks_now()) {
		/* The lock ran out: a fresh set of attempts. */
		*failures = 0;
		*until = 0;
	}
	return 0;
}

int
ks_lockout_check(struct cf_ks_home *home, const char *subject)
{
	char when[32];
	unsigned failures;
	time_t until, now = cf_ks_now();
	int rc;

	rc = cf_ks_lockout_state(home, subject, &failures, &until);
	if (rc < 0)
		return rc;
	if (until == 0)
		return 0;
	cf_ks_time_format(until, when, sizeof(when));
	{
		struct cf_ks_audit_field f[] = { { "subject", subject, 0 } };

		/* Best effort: the refusal stands even if auditing fails. */
		(void)!cf_ks_audit_append(home, "lockout.refused", f, 1);
	}
	return ks_err(-EACCES, "%s is locked after %d failed unlocks until %s "
	    "(%lld minutes left); a correct secret is refused until then",
	    subject, CF_KS_LOCKOUT_FAILURES, when,
	    (long long)((until - now + 59) / 60));
}

int
ks_lockout_attempt(struct cf_ks_home *home, const char *subject)
{
	char path[PATH_MAX];
	unsigned failures;
	time_t until, now = cf_ks_now();
	json_t *j = NULL;
	int fd, rc;

	/*
	 * Counted before the slow check (Argon2id, the KMS) and under the
	 * lock: parallel attempts, or one killed half-way, all count.  A
	 * success takes it back with ks_lockout_reset().
	 */
	subject_path(subject, path, sizeof(path));
	fd = lock_dir(home);
	if (fd < 0)
		return ks_err(fd, "cannot lock %s", path);
	rc = read_state(home, path, &failures, &until);
	if (rc < 0)
		goto out;
	if (until != 0 && until > now) {
		close(fd);
		fd = -1;
		rc = ks_lockout_check(home, subject);
		goto out;
	}
	if (until != 0) {
		failures = 0;
		until = 0;
	}
	failures++;
	if (failures >= CF_KS_LOCKOUT_FAILURES)
		until = now + CF_KS_LOCKOUT_SECONDS;
	j = json_pack("{s:I, s:I, s:I}", "failures", (json_int_t)failures,
	    "locked_until", (json_int_t)until, "last_attempt", (json_int_t)now);
	if (j == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	rc = ks_json_save(home->dirfd, path, j, 0600);
	if (rc < 0 && rc != -ENOMEM)
		/*
		 * Fails closed: an attempt that cannot be counted is not
		 * made.  Say so, or a full home reads as "unknown error".
		 */
		rc = ks_err(rc, "cannot count this unlock attempt in "
		    "%s/%s: %s (every attempt is recorded before a "
		    "passphrase or key is tried%s)", home->path, path,
		    strerror(-rc), rc == -ENOSPC || rc == -EDQUOT ?
		    ": make room there" : "");
out:
	json_decref(j);
	if (fd >= 0)
		close(fd);
	return rc;
}

int
ks_lockout_fail(struct cf_ks_home *home, const char *subject)
{
	char when[32];
	unsigned failures;
	time_t until;
	int rc;

	/* The attempt was counted by ks_lockout_attempt: report it. */
	rc = cf_ks_lockout_state(home, subject, &failures, &until);
	if (rc < 0)
		return rc;
	{
		struct cf_ks_audit_field f[] = {
			{ "subject", subject, 0 },
			{ "failures", NULL, (long long)failures },
		};

		/* A damaged audit log must not turn a refusal into exit 3. */
		(void)!cf_ks_audit_append(home, until != 0 ? "lockout.locked" :
		    "unlock.failed", f, 2);
	}
	if (until != 0) {
		cf_ks_time_format(until, when, sizeof(when));
		return ks_err(-EACCES, "wrong passphrase or key for %s: %u "
		    "failures in a row, locked until %s", subject, failures,
		    when);
	}
	return ks_err(-EACCES, "wrong passphrase or key for %s (%u of %d "
	    "attempts before a %d-minute lock)", subject, failures,
	    CF_KS_LOCKOUT_FAILURES, CF_KS_LOCKOUT_SECONDS / 60);
}

int
ks_lockout_reset(struct cf_ks_home *home, const char *subject)
{
	char path[PATH_MAX];
	int rc = 0;

	subject_path(subject, path, sizeof(path));
	if (faccessat(home->dirfd, path, F_OK, AT_SYMLINK_NOFOLLOW) != 0)
		return 0;	/* the common case: nothing to reset */
	if (unlinkat(home->dirfd, path, 0) != 0 && errno != ENOENT)
		rc = -errno;
	return rc;
}
