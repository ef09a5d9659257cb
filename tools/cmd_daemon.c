/*
 * cmd_daemon.c - coffer daemon [--once] [--max-jobs N]: the daily
 * schedule of every tenant (docs/operations.md, Scheduling).
 *
 * Each tenant that has a store (and is neither shredded nor purged) gets
 * a daily slot: [daemon] window_start plus a stable jitter inside
 * window_hours (a hash of its name).  Once the slot has passed and the
 * last successful backup is older than it, the tenant's chain runs: a
 * backup, retention apply, a verify that also reads the packs due for
 * read-data coverage (verify --read-data-due), and on its drill day (a
 * stable offset in every drill_days) a restore drill.  A tenant down for
 * days gets one backup when the daemon comes back, not one per missed day.
 * At most max_jobs chains run at once; the steps of one tenant run one
 * after the other.
 *
 * Every step is a child process of this same binary (/proc/self/exe), in
 * its own session, with the tenant's name and options in argv and nothing
 * secret: it unwraps its tenant's keys itself, and its crash is one failed
 * job.  A failure (exit 1, or a signal) is retried after retry_minutes,
 * doubling up to retry_max_minutes; exit 2, 3 or 4 needs a person: the
 * job is held until the next daily slot (or SIGHUP).  Failures are logged
 * on stderr, kept in the state file (tl_daemon.c, written atomically
 * after every job) and shown by coffer status and its metrics, which the
 * daemon refreshes by running `coffer status` after its jobs.
 *
 * -v logs every step's start and success too.
 *
 * --once: one pass at the current time (COFFER_NOW in test builds), waits
 * for its jobs, exits 0 if all succeeded, else 1.  Otherwise it loops
 * every tick_seconds; SIGTERM or SIGINT stop scheduling and wait for the
 * running jobs (a second one passes SIGTERM on to them); SIGHUP reloads
 * coffer.conf and releases held jobs.  One daemon per home (a lock file).
 *
 * A step running longer than job_timeout_hours (12) is stopped and
 * counts as failed.  It does not mount stores (coffer-mount@.service
 * does) and knows nothing of keys or repositories.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "cf_backup.h"
#include "tl_int.h"

const struct tl_cmd tl_cmd_daemon = {
	"daemon", cmd_daemon,
	"  coffer daemon [--once] [--max-jobs N]\n"
	"    the daily schedule of every tenant: backup, retention apply,\n"
	"    verify with read-data coverage, weekly drills; retries with\n"
	"    backoff; settings in coffer.conf [daemon] (docs/operations.md)\n"
	"    --once: one pass now, wait for its jobs, exit 0 if all went well\n",
	"run the daily backup schedule of every tenant",
};

enum { J_BACKUP, J_RETENTION, J_VERIFY, J_DRILL };

#define MAX_JOBS_LIMIT 64

struct dconf {
	long window_start;	/* seconds after 00:00 UTC */
	long window_len;	/* seconds, >= 1 */
	int max_jobs;
	long tick;		/* seconds */
	long retry, retry_max;	/* seconds */
	unsigned read_days;	/* 0: structural verify only */
	unsigned drill_days;	/* 0: no drills */
	long timeout;		/* seconds a step may run; 0: no limit */
	char scratch[PATH_MAX];	/* drill --scratch, "" for its default */
	char state[PATH_MAX];
};

/* A tenant whose chain is running (or waiting for a free slot). */
struct chain {
	char name[CF_KS_NAME_MAX + 1];
	unsigned todo;		/* bit per job still to run */
	int step;		/* job running, -1 none */
	pid_t pid;
	long long started;	/* daemon clock at the step's start */
	long long mono;		/* CLOCK_MONOTONIC s at the step's start */
	int killed;		/* 1 SIGTERM sent, 2 SIGKILL sent */
	int failed;		/* some step failed */
	int active;		/* started: counts against max_jobs */
	int purge;		/* purge due: retention apply only */
	long long slot;		/* the slot it runs for (ordering) */
};

struct daemon {
	struct tl_ctx *ctx;
	struct cf_ks_home *home;
	struct dconf c;
	struct tl_daemon_state *st;
	struct chain *ch;	/* queued and running chains */
	size_t nch, capch;
	int running;
	pid_t status_pid;
	int any_failed;
	int max_jobs_opt;	/* --max-jobs, 0 if not given */
};

static volatile sig_atomic_t got_signal;

static void
on_signal(int sig)
{
	got_signal = sig;
}

/* ---- configuration ------------------------------------------------------- */

static int
conf_long(struct cf_ks_home *home, const char *key, long def, long lo,
    long hi, long *out)
{
	const char *v = cf_ks_config_get(cf_ks_home_config(home), "daemon",
	    key);
	char *end;
	long n;

	*out = def;
	if (v == NULL || v[0] == '\0')
		return 0;
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || n < lo || n > hi) {
		fprintf(stderr, "coffer: coffer.conf [daemon] %s: want a "
		    "whole number %ld..%ld, not '%s'\n", key, lo, hi, v);
		return -EINVAL;
	}
	*out = n;
	return 0;
}

static int
conf_load(struct cf_ks_home *home, struct dconf *c)
{
	const struct cf_ks_config *cfg = cf_ks_home_config(home);
	const char *v;
	long n, hours;
	int rc = 0, h, m;
	char tail;

	memset(c, 0, sizeof(*c));
	c->window_start = 3600;
	v = cf_ks_config_get(cfg, "daemon", "window_start");
	if (v != NULL && v[0] != '\0') {
		if (strlen(v) != 5 || sscanf(v, "%2d:%2d%c", &h, &m,
		    &tail) != 2 || v[2] != ':' || h < 0 || h > 23 || m < 0 ||
		    m > 59) {
			fprintf(stderr, "coffer: coffer.conf [daemon] "
			    "window_start: want HH:MM (UTC), not '%s'\n", v);
			rc = -EINVAL;
		} else {
			c->window_start = h * 3600L + m * 60L;
		}
	}
	rc |= conf_long(home, "window_hours", 4, 0, 24, &hours);
	c->window_len = hours > 0 ? hours * 3600 : 1;
	rc |= conf_long(home, "max_jobs", 2, 1, MAX_JOBS_LIMIT, &n);
	c->max_jobs = (int)n;
	rc |= conf_long(home, "tick_seconds", 60, 1, 3600, &c->tick);
	rc |= conf_long(home, "retry_minutes", 15, 1, 1440, &n);
	c->retry = n * 60;
	rc |= conf_long(home, "retry_max_minutes", 240, 1, 10080, &n);
	c->retry_max = n * 60;
	rc |= conf_long(home, "read_data_days", 30, 0, 36500, &n);
	c->read_days = (unsigned)n;
	rc |= conf_long(home, "drill_days", 7, 0, 365, &n);
	c->drill_days = (unsigned)n;
	rc |= conf_long(home, "job_timeout_hours", 12, 0, 720, &n);
	c->timeout = n * 3600;
#ifdef CF_TEST_CLOCK
	/* Test builds only (docs/operations.md): the limit in seconds, so a
	 * test need not wait an hour for it. */
	v = getenv("COFFER_TEST_JOB_TIMEOUT_SECONDS");
	if (v != NULL && v[0] != '\0')
		c->timeout = strtol(v, NULL, 10);
#endif
	v = cf_ks_config_get(cfg, "daemon", "drill_scratch");
	if (v != NULL)
		snprintf(c->scratch, sizeof(c->scratch), "%s", v);
	tl_daemon_state_path(home, c->state, sizeof(c->state));
	return rc ? -EINVAL : 0;
}

/* ---- the schedule -------------------------------------------------------- */

/* A stable 64-bit value of the tenant's name (jitter, drill day). */
static uint64_t
name_hash(const char *name, unsigned char which)
{
	unsigned char out[8];
	uint64_t v = 0;
	size_t i;

	(void)crypto_generichash(out, sizeof(out),
	    (const unsigned char *)name, strlen(name), &which, 1);
	for (i = 0; i < 8; i++)
		v = v << 8 | out[i];
	return v;
}

static long long
day_floor(long long t)
{
	return t >= 0 ? t / 86400 : (t - 86399) / 86400;
}

/* The tenant's slot on day d (days since 1970). */
static long long
slot_of(const struct dconf *c, const char *name, long long d)
{
	return d * 86400 + c->window_start +
	    (long long)(name_hash(name, 1) % (uint64_t)c->window_len);
}

/* The latest slot at or before now. */
static long long
slot_last(const struct dconf *c, const char *name, long long now)
{
	long long d = day_floor(now), s = slot_of(c, name, d);

	while (s > now)
		s = slot_of(c, name, --d);
	return s;
}

/* The first slot after now. */
static long long
slot_next(const struct dconf *c, const char *name, long long now)
{
	long long d = day_floor(now) - 1, s = slot_of(c, name, d);

	while (s <= now)
		s = slot_of(c, name, ++d);
	return s;
}

/* The latest drill slot at or before now (0: drills off). */
static long long
drill_last(const struct dconf *c, const char *name, long long now)
{
	long long d, s;
	uint64_t off;

	if (c->drill_days == 0)
		return 0;
	off = name_hash(name, 2) % c->drill_days;
	d = day_floor(now);
	for (;; d--) {
		if ((uint64_t)(d % (long long)c->drill_days) != off)
			continue;
		s = slot_of(c, name, d);
		if (s <= now)
			return s;
	}
}

static int
may_try(const struct tl_daemon_job *j, long long now)
{
	return j->failures == 0 || now >= j->next_try;
}

/* ---- children ------------------------------------------------------------ */

static void
logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
logmsg(const char *fmt, ...)
{
	va_list ap;

	fputs("coffer daemon: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/*
 * Starts /proc/self/exe with argv[] (home and -q put in front): its own
 * session (no terminal to prompt on, and a ^C of the daemon's terminal
 * does not reach it), stdout to /dev/null, stderr shared.
 */
static pid_t
spawn(struct daemon *dm, const char *const *args)
{
	const char *argv[16];
	sigset_t none;
	size_t n = 0, i;
	pid_t pid;
	int fd;

	argv[n++] = "coffer";
	argv[n++] = "--home";
	argv[n++] = dm->ctx->home_path;
	argv[n++] = "-q";
	for (i = 0; args[i] != NULL && n < 15; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	fflush(stderr);
	pid = fork();
	if (pid != 0)
		return pid;
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	(void)setsid();
	fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd >= 0) {
		(void)dup2(fd, 0);
		(void)dup2(fd, 1);
	}
	execv("/proc/self/exe", (char *const *)(uintptr_t)argv);
	fprintf(stderr, "coffer daemon: exec /proc/self/exe: %s\n",
	    strerror(errno));
	_exit(127);
}

static pid_t
start_job(struct daemon *dm, const char *name, int job)
{
	char days[16];
	const char *a[8] = { NULL };
	size_t n = 0;

	snprintf(days, sizeof(days), "%u", dm->c.read_days);
	switch (job) {
	case J_BACKUP:
		a[n++] = "backup";
		a[n++] = name;
		a[n++] = "--tag";
		a[n++] = "daily";
		break;
	case J_RETENTION:
		a[n++] = "retention";
		a[n++] = "apply";
		a[n++] = name;
		break;
	case J_VERIFY:
		a[n++] = "verify";
		a[n++] = name;
		if (dm->c.read_days > 0) {
			a[n++] = "--read-data-due";
			a[n++] = days;
		}
		break;
	default:
		a[n++] = "drill";
		a[n++] = name;
		if (dm->c.scratch[0] != '\0') {
			a[n++] = "--scratch";
			a[n++] = dm->c.scratch;
		}
		break;
	}
	return spawn(dm, a);
}

/* Seconds of CLOCK_MONOTONIC: the tick survives wall-clock jumps. */
static long long
mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec;
}

static long long
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void
save_state(struct daemon *dm)
{
	int rc;

	dm->st->updated = (long long)cf_ks_now();
	rc = tl_daemon_state_save(dm->c.state, dm->st);
	if (rc < 0)
		logmsg("saving %s: %s", dm->c.state, strerror(-rc));
}

/* Starts the next step of ch, or returns 0 if it has none left. */
static int
chain_next(struct daemon *dm, struct chain *ch)
{
	struct tl_daemon_tenant *t = tl_daemon_state_add(dm->st, ch->name);
	long long now = (long long)cf_ks_now();
	int k;

	if (t == NULL)
		return 0;
	for (;;) {
		for (k = 0; k < TL_DJOBS; k++)
			if (ch->todo & (1U << k))
				break;
		if (k == TL_DJOBS)
			return 0;
		ch->todo &= ~(1U << k);
		/* Retention follows a new snapshot only (or purges). */
		if (k == J_RETENTION && !ch->purge &&
		    (t->job[J_BACKUP].last_ok == 0 ||
		    t->job[J_RETENTION].last_ok >= t->job[J_BACKUP].last_ok))
			continue;
		/* Drills need a snapshot. */
		if (k == J_DRILL && t->job[J_BACKUP].last_ok == 0)
			continue;
		break;
	}
	ch->step = k;
	ch->started = now;
	ch->mono = mono_s();
	ch->killed = 0;
	t->job[k].last_try = now;
	t->job[k].started_ns = now_ns();
	if (dm->ctx->verbose > 0)
		logmsg("%s: %s started", ch->name, tl_daemon_job_names[k]);
	ch->pid = start_job(dm, ch->name, k);
	if (ch->pid < 0) {
		logmsg("%s: %s: fork: %s", ch->name, tl_daemon_job_names[k],
		    strerror(errno));
		ch->pid = 0;
		ch->step = -1;
		return 0;
	}
	return 1;
}

static void
job_done(struct daemon *dm, struct chain *ch, int status)
{
	struct tl_daemon_tenant *t = tl_daemon_state_add(dm->st, ch->name);
	struct tl_daemon_job *j;
	long long now = (long long)cf_ks_now(), delay;
	char since[32], next[32];
	int code, k = ch->step, i;

	if (WIFEXITED(status))
		code = WEXITSTATUS(status);
	else
		code = 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	ch->step = -1;
	ch->pid = 0;
	if (t == NULL)
		return;
	j = &t->job[k];
	j->ended_ns = now_ns();
	j->last_exit = code;
	if (code == 0) {
		if (dm->ctx->verbose > 0)
			logmsg("%s: %s ok (%.1f s)", ch->name,
			    tl_daemon_job_names[k],
			    (double)(j->ended_ns - j->started_ns) / 1e9);
		if (j->failures > 0)
			logmsg("%s: %s recovered after %d failure%s", ch->name,
			    tl_daemon_job_names[k], j->failures,
			    j->failures == 1 ? "" : "s");
		j->last_ok = ch->started;
		j->failures = 0;
		j->failed_since = 0;
		j->next_try = 0;
		j->hold = 0;
		save_state(dm);
		return;
	}
	ch->failed = 1;
	dm->any_failed = 1;
	if (j->failures == 0)
		j->failed_since = ch->started;
	if (j->failures < 1000000000)
		j->failures++;
	/*
	 * Usage (2), integrity (3) and denied (4) do not get better by
	 * retrying: hold until the next daily slot.  A drill is weekly
	 * and long: also only once a day.
	 */
	j->hold = code == CF_EXIT_USAGE || code == CF_EXIT_INTEGRITY ||
	    code == CF_EXIT_DENIED;
	if (j->hold || k == J_DRILL) {
		j->next_try = slot_next(&dm->c, ch->name, now);
	} else {
		delay = dm->c.retry;
		for (i = 1; i < j->failures && delay < dm->c.retry_max; i++)
			delay *= 2;
		if (delay > dm->c.retry_max)
			delay = dm->c.retry_max;
		j->next_try = now + delay;
	}
	cf_ks_time_format((time_t)j->failed_since, since, sizeof(since));
	cf_ks_time_format((time_t)j->next_try, next, sizeof(next));
	logmsg("%s: %s failed (exit %d%s), %d time%s since %s; next try %s",
	    ch->name, tl_daemon_job_names[k], code, j->hold ?
	    ": needs a person" : "", j->failures, j->failures == 1 ? "" : "s",
	    since, next);
	save_state(dm);
}

/* ---- a scheduling pass --------------------------------------------------- */

static int
tenant_has_store(struct cf_ks_home *home, const struct cf_ks_tenant *t)
{
	const char *s = cf_ks_tenant_get(t, "store");
	char path[PATH_MAX];
	struct stat sb;

	/* The marker a first mount writes (docs/format/fs.md). */
	if (s != NULL && s[0] != '\0')
		snprintf(path, sizeof(path), "%s/cf.store", s);
	else
		snprintf(path, sizeof(path), "%s/%s/store/cf.store",
		    cf_ks_home_path(home), cf_ks_tenant_dir(t));
	return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static struct chain *
chain_find(struct daemon *dm, const char *name)
{
	size_t i;

	for (i = 0; i < dm->nch; i++)
		if (strcmp(dm->ch[i].name, name) == 0)
			return &dm->ch[i];
	return NULL;
}

static int
chain_cmp(const void *a, const void *b)
{
	const struct chain *x = a, *y = b;

	if (x->slot != y->slot)
		return x->slot < y->slot ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* Queues the chains due at now. */
static void
pass(struct daemon *dm)
{
	struct cf_bk_lifecycle_eval le;
	struct cf_ks_tenant *t;
	struct tl_daemon_tenant *dt;
	struct chain *ch;
	char **names = NULL;
	size_t n = 0, i, before = dm->nch;
	long long now = (long long)cf_ks_now(), slot, dslot;
	unsigned todo;
	int rc, purge;

	rc = cf_ks_tenant_list(dm->home, &names, &n);
	if (rc < 0) {
		logmsg("listing tenants: %s", cf_ks_last_error());
		dm->any_failed = 1;
		return;
	}
	for (i = 0; i < n; i++) {
		if (chain_find(dm, names[i]) != NULL)
			continue;	/* running or queued */
		rc = cf_ks_tenant_open(dm->home, names[i], &t);
		if (rc < 0) {
			logmsg("%s: %s", names[i], cf_ks_last_error());
			continue;
		}
		purge = 0;
		if (cf_ks_tenant_shredded(t)) {
			cf_ks_tenant_free(t);
			continue;
		}
		if (tl_lifecycle_eval(dm->home, t, (time_t)now, &le) < 0) {
			logmsg("%s: lifecycle: %s (coffer.conf [lifecycle]?); "
			    "treated as active", names[i], cf_ks_last_error());
		} else if (strcmp(le.effective, "purged") == 0) {
			cf_ks_tenant_free(t);
			continue;
		} else {
			purge = le.purge_due;
		}
		if (!purge && !tenant_has_store(dm->home, t)) {
			cf_ks_tenant_free(t);
			continue;	/* nothing to back up yet */
		}
		cf_ks_tenant_free(t);
		dt = tl_daemon_state_add(dm->st, names[i]);
		if (dt == NULL)
			continue;
		slot = slot_last(&dm->c, names[i], now);
		todo = 0;
		if (purge) {
			/* retention apply runs the purge that is due. */
			if (dt->job[J_RETENTION].last_ok < slot &&
			    may_try(&dt->job[J_RETENTION], now))
				todo |= 1U << J_RETENTION;
		} else {
			if (dt->job[J_BACKUP].last_ok < slot &&
			    may_try(&dt->job[J_BACKUP], now))
				todo |= 1U << J_BACKUP | 1U << J_RETENTION;
			if (dt->job[J_RETENTION].last_ok <
			    dt->job[J_BACKUP].last_ok &&
			    may_try(&dt->job[J_RETENTION], now))
				todo |= 1U << J_RETENTION;
			if (dt->job[J_VERIFY].last_ok < slot &&
			    may_try(&dt->job[J_VERIFY], now) &&
			    (dt->job[J_BACKUP].last_ok > 0 ||
			    (todo & (1U << J_BACKUP))))
				todo |= 1U << J_VERIFY;
			dslot = drill_last(&dm->c, names[i], now);
			if (dslot > 0 && dt->job[J_DRILL].last_ok < dslot &&
			    may_try(&dt->job[J_DRILL], now) &&
			    (dt->job[J_BACKUP].last_ok > 0 ||
			    (todo & (1U << J_BACKUP))))
				todo |= 1U << J_DRILL;
		}
		if (todo == 0)
			continue;
		if (dm->nch == dm->capch) {
			size_t nc = dm->capch ? dm->capch * 2 : 16;
			struct chain *nv = realloc(dm->ch, nc * sizeof(*nv));

			if (nv == NULL)
				break;
			dm->ch = nv;
			dm->capch = nc;
		}
		ch = &dm->ch[dm->nch++];
		memset(ch, 0, sizeof(*ch));
		snprintf(ch->name, sizeof(ch->name), "%s", names[i]);
		ch->todo = todo;
		ch->purge = purge;
		ch->step = -1;
		ch->slot = slot;
	}
	/* The longest waiting first: catch-up order is slot order. */
	if (dm->nch - before > 1)
		qsort(dm->ch + before, dm->nch - before, sizeof(*dm->ch),
		    chain_cmp);
	cf_ks_tenant_list_free(names, n);
}

/* Starts queued chains while slots are free; drops finished ones. */
static void
run_queue(struct daemon *dm, int stopping)
{
	size_t i = 0;
	int max = dm->max_jobs_opt > 0 ? dm->max_jobs_opt : dm->c.max_jobs;

	while (i < dm->nch) {
		struct chain *ch = &dm->ch[i];

		if (ch->active && ch->pid == 0) {
			/* Between steps: go on, or finish. */
			if (!stopping && chain_next(dm, ch)) {
				i++;
				continue;
			}
			dm->running--;
			memmove(ch, ch + 1, (dm->nch - i - 1) * sizeof(*ch));
			dm->nch--;
			continue;
		}
		if (!ch->active) {
			if (stopping) {
				memmove(ch, ch + 1, (dm->nch - i - 1) *
				    sizeof(*ch));
				dm->nch--;
				continue;
			}
			if (dm->running < max) {
				if (chain_next(dm, ch)) {
					ch->active = 1;
					dm->running++;
				} else {
					memmove(ch, ch + 1, (dm->nch - i - 1) *
					    sizeof(*ch));
					dm->nch--;
					continue;
				}
			}
		}
		i++;
	}
}

/* Collects finished children; returns how many of them were jobs. */
static int
reap(struct daemon *dm)
{
	size_t i;
	pid_t pid;
	int status, jobs = 0;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		if (pid == dm->status_pid) {
			dm->status_pid = 0;
			continue;
		}
		for (i = 0; i < dm->nch; i++) {
			if (dm->ch[i].pid == pid) {
				job_done(dm, &dm->ch[i], status);
				jobs++;
				break;
			}
		}
	}
	return jobs;
}

/*
 * coffer status refreshes the metrics file, if [operations] metrics_file
 * names one (its exit 1 is a finding, not an error).
 */
static void
refresh_status(struct daemon *dm, int wait)
{
	static const char *const a[] = { "status", NULL };
	const char *m = cf_ks_config_get(cf_ks_home_config(dm->home),
	    "operations", "metrics_file");
	int status;

	if (dm->status_pid > 0 || m == NULL || m[0] == '\0')
		return;
	dm->status_pid = spawn(dm, a);
	if (dm->status_pid < 0) {
		dm->status_pid = 0;
		return;
	}
	if (dm->ctx->verbose > 0)
		logmsg("refreshing the metrics (coffer status)");
	if (wait) {
		(void)waitpid(dm->status_pid, &status, 0);
		dm->status_pid = 0;
	}
}

/*
 * A step running longer than job_timeout_hours is stopped (SIGTERM to its
 * session, SIGKILL a minute later, or after the limit again if that is
 * shorter) and counts as failed (exit 128 + N).
 */
static void
check_timeouts(struct daemon *dm)
{
	long long now = mono_s();
	long grace = dm->c.timeout < 60 ? dm->c.timeout : 60;
	size_t i;

	for (i = 0; dm->c.timeout > 0 && i < dm->nch; i++) {
		struct chain *ch = &dm->ch[i];

		if (ch->pid <= 0 || now - ch->mono < dm->c.timeout)
			continue;
		if (ch->killed == 0) {
			logmsg("%s: %s running for more than %ld %s: stopping "
			    "it", ch->name, tl_daemon_job_names[ch->step],
			    dm->c.timeout % 3600 == 0 ? dm->c.timeout / 3600 :
			    dm->c.timeout, dm->c.timeout % 3600 == 0 ? "h" :
			    "s");
			(void)kill(-ch->pid, SIGTERM);
			ch->killed = 1;
		} else if (ch->killed == 1 &&
		    now - ch->mono >= dm->c.timeout + grace) {
			(void)kill(-ch->pid, SIGKILL);
			ch->killed = 2;
		}
	}
}

static void
kill_children(struct daemon *dm)
{
	size_t i;

	for (i = 0; i < dm->nch; i++)
		if (dm->ch[i].pid > 0)
			(void)kill(-dm->ch[i].pid, SIGTERM);
}

static int
reload(struct daemon *dm)
{
	struct cf_ks_home *nh = NULL;
	struct dconf c;
	size_t i, k;
	int rc;

	rc = cf_ks_home_open(&nh, dm->ctx->home_path, 0);
	if (rc < 0) {
		logmsg("reload: %s; keeping the old configuration",
		    cf_ks_last_error());
		return rc;
	}
	rc = conf_load(nh, &c);
	if (rc < 0) {
		logmsg("reload: bad [daemon] settings; keeping the old "
		    "configuration");
		cf_ks_home_free(nh);
		return rc;
	}
	cf_ks_home_free(dm->ctx->home);
	dm->ctx->home = dm->home = nh;
	dm->c = c;
	/* An operator who reloads has looked: held jobs may try again. */
	for (i = 0; i < dm->st->n; i++)
		for (k = 0; k < TL_DJOBS; k++)
			if (dm->st->t[i].job[k].hold)
				dm->st->t[i].job[k].next_try = 0;
	logmsg("configuration reloaded");
	return 0;
}

int
cmd_daemon(struct tl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "once", no_argument, NULL, 'o' },
		{ "max-jobs", required_argument, NULL, 'm' },
		{ NULL, 0, NULL, 0 },
	};
	struct daemon dm;
	struct sigaction sa;
	struct timespec tmo;
	sigset_t set;
	siginfo_t info;
	char lockpath[PATH_MAX + 8], *end;
	long long next_pass = 0, now, last_status = 0;
	int c, once = 0, rc, lockfd = -1, stopping = 0, ret = CF_EXIT_FAIL;
	int sig, changed = 0;
	long v;

	memset(&dm, 0, sizeof(dm));
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'o':
			once = 1;
			break;
		case 'm':
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno != 0 || end == optarg || *end != '\0' ||
			    v < 1 || v > MAX_JOBS_LIMIT)
				return tl_usage(&tl_cmd_daemon, "daemon: "
				    "--max-jobs takes 1..%d", MAX_JOBS_LIMIT);
			dm.max_jobs_opt = (int)v;
			break;
		default:
			return tl_usage(&tl_cmd_daemon, "daemon: bad option");
		}
	}
	if (optind != argc)
		return tl_usage(&tl_cmd_daemon, "daemon: no arguments");
	dm.ctx = ctx;
	dm.home = tl_home(ctx, 0);
	if (conf_load(dm.home, &dm.c) < 0)
		return CF_EXIT_USAGE;

	/* One daemon per home: a second would run every job twice. */
	snprintf(lockpath, sizeof(lockpath), "%s.lock", dm.c.state);
	lockfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW,
	    0600);
	if (lockfd < 0) {
		fprintf(stderr, "coffer: %s: %s\n", lockpath, strerror(errno));
		return CF_EXIT_FAIL;
	}
	if (flock(lockfd, LOCK_EX | LOCK_NB) < 0) {
		fprintf(stderr, "coffer: another coffer daemon runs on this "
		    "home (%s is locked)\n", lockpath);
		close(lockfd);
		return CF_EXIT_FAIL;
	}
	rc = tl_daemon_state_load(dm.c.state, &dm.st);
	if (rc == -ENOENT) {
		dm.st = calloc(1, sizeof(*dm.st));
		if (dm.st == NULL)
			goto out;
	} else if (rc < 0) {
		/*
		 * Refuse rather than forget every failure and backoff; a
		 * damaged file (exit 3) needs a person, not a restart loop.
		 */
		fprintf(stderr, "coffer: daemon state %s: %s; move it aside "
		    "to start afresh\n", dm.c.state, rc == -EPROTO ?
		    "malformed" : strerror(-rc));
		if (rc == -EPROTO)
			ret = CF_EXIT_INTEGRITY;
		goto out;
	}

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGCHLD, &sa, NULL);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, NULL);

	if (!once)
		logmsg("started: window %02ld:%02ld UTC + %ld h, max %d jobs, "
		    "tick %ld s", dm.c.window_start / 3600,
		    dm.c.window_start / 60 % 60, dm.c.window_len / 3600,
		    dm.max_jobs_opt ? dm.max_jobs_opt : dm.c.max_jobs,
		    dm.c.tick);
	if (once) {
		pass(&dm);
		run_queue(&dm, 0);
		while (dm.nch > 0) {
			tmo.tv_sec = 1;
			tmo.tv_nsec = 0;
			sig = sigtimedwait(&set, &info, &tmo);
			if (sig == SIGTERM || sig == SIGINT) {
				if (stopping)
					kill_children(&dm);
				stopping = 1;
			}
			reap(&dm);
			check_timeouts(&dm);
			run_queue(&dm, stopping);
		}
		save_state(&dm);
		refresh_status(&dm, 1);
		ret = dm.any_failed || stopping ? CF_EXIT_FAIL : CF_EXIT_OK;
		goto out;
	}
	for (;;) {
		now = mono_s();
		if (!stopping && now >= next_pass) {
			pass(&dm);
			next_pass = now + dm.c.tick;
		}
		check_timeouts(&dm);
		run_queue(&dm, stopping);
		/* After jobs, and every 5 minutes so the file stays fresh. */
		if ((changed || now - last_status >= 300) &&
		    dm.status_pid == 0) {
			refresh_status(&dm, 0);
			changed = 0;
			last_status = now;
		}
		if (stopping && dm.nch == 0)
			break;
		/* Wake at least every minute for the time limits. */
		tmo.tv_sec = dm.c.tick < 60 ? dm.c.tick : 60;
		tmo.tv_nsec = 0;
		sig = sigtimedwait(&set, &info, &tmo);
		switch (sig) {
		case SIGTERM:
		case SIGINT:
			if (stopping) {
				logmsg("stopping the running jobs");
				kill_children(&dm);
			} else {
				logmsg("stopping: waiting for %d running "
				    "job%s", dm.running, dm.running == 1 ?
				    "" : "s");
			}
			stopping = 1;
			break;
		case SIGHUP:
			(void)reload(&dm);
			next_pass = 0;
			break;
		case SIGCHLD:
			/* Not for the status child itself: that would loop. */
			if (reap(&dm) > 0)
				changed = 1;
			break;
		default:
			break;	/* the tick */
		}
	}
	save_state(&dm);
	refresh_status(&dm, 1);
	logmsg("stopped");
	ret = CF_EXIT_OK;
out:
	free(dm.ch);
	tl_daemon_state_free(dm.st);
	if (lockfd >= 0)
		close(lockfd);
	return ret;
}
