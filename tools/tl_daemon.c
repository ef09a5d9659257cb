/*
 * tl_daemon.c - the state of coffer daemon (docs/format/daemon-state.md):
 * per tenant and job (backup, retention, verify, drill) the last success,
 * the current run of failures and the next try.  The daemon writes it
 * (cmd_daemon.c); coffer status reads it to judge a tenant and to write
 * the coffer_daemon_* metrics.
 *
 * It is kept apart from cmd_daemon.c so that the fuzz target
 * (tests/fuzz/fuzz_daemon_state.c) can link the parser alone.  It does
 * not decide anything about the schedule.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tl_int.h"

const char *const tl_daemon_job_names[TL_DJOBS] = {
	"backup", "retention", "verify", "drill",
};

void
tl_daemon_state_free(struct tl_daemon_state *st)
{
	size_t i;

	if (st == NULL)
		return;
	for (i = 0; i < st->n; i++)
		free(st->t[i].name);
	free(st->t);
	free(st);
}

struct tl_daemon_tenant *
tl_daemon_state_find(const struct tl_daemon_state *st, const char *name)
{
	size_t i;

	for (i = 0; st != NULL && i < st->n; i++)
		if (strcmp(st->t[i].name, name) == 0)
			return &st->t[i];
	return NULL;
}

struct tl_daemon_tenant *
tl_daemon_state_add(struct tl_daemon_state *st, const char *name)
{
	struct tl_daemon_tenant *nt, *t;

	t = tl_daemon_state_find(st, name);
	if (t != NULL)
		return t;
	if (st->n == st->cap) {
		size_t nc = st->cap ? st->cap * 2 : 16;

		nt = realloc(st->t, nc * sizeof(*nt));
		if (nt == NULL)
			return NULL;
		st->t = nt;
		st->cap = nc;
	}
	t = &st->t[st->n];
	memset(t, 0, sizeof(*t));
	t->name = strdup(name);
	if (t->name == NULL)
		return NULL;
	st->n++;
	return t;
}

/* A member that must be a non-negative integer (absent: 0). */
static int
get_num(json_t *o, const char *key, long long max, long long *out)
{
	json_t *v = json_object_get(o, key);

	*out = 0;
	if (v == NULL)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    json_integer_value(v) > max)
		return -EPROTO;
	*out = json_integer_value(v);
	return 0;
}

static int
parse_job(json_t *o, struct tl_daemon_job *j)
{
	long long v[9];
	static const char *const keys[9] = { "last_ok", "last_try",
		"failed_since", "next_try", "failures", "last_exit", "hold",
		"started_ns", "ended_ns" };
	static const long long max[9] = { TL_DAEMON_TIME_MAX,
		TL_DAEMON_TIME_MAX, TL_DAEMON_TIME_MAX, TL_DAEMON_TIME_MAX,
		1000000000, 255, 1, LLONG_MAX, LLONG_MAX };
	size_t i;

	if (!json_is_object(o))
		return -EPROTO;
	for (i = 0; i < 9; i++)
		if (get_num(o, keys[i], max[i], &v[i]) < 0)
			return -EPROTO;
	j->last_ok = v[0];
	j->last_try = v[1];
	j->failed_since = v[2];
	j->next_try = v[3];
	j->failures = (int)v[4];
	j->last_exit = (int)v[5];
	j->hold = (int)v[6];
	j->started_ns = v[7];
	j->ended_ns = v[8];
	return 0;
}

int
tl_daemon_state_parse(const char *buf, size_t len,
    struct tl_daemon_state **out)
{
	struct tl_daemon_state *st = NULL;
	struct tl_daemon_tenant *t;
	json_t *root = NULL, *ts, *to, *jo, *f;
	const char *name;
	json_error_t e;
	long long upd;
	size_t k;
	int rc = -EPROTO;

	*out = NULL;
	if (len > TL_DAEMON_STATE_MAX)
		return -EPROTO;
	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &e);
	if (root == NULL || !json_is_object(root))
		goto out;
	f = json_object_get(root, "format");
	if (!json_is_integer(f) || json_integer_value(f) != 1)
		goto out;
	if (get_num(root, "updated", TL_DAEMON_TIME_MAX, &upd) < 0)
		goto out;
	ts = json_object_get(root, "tenants");
	if (!json_is_object(ts))
		goto out;
	st = calloc(1, sizeof(*st));
	if (st == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	st->updated = upd;
	json_object_foreach(ts, name, to) {
		if (name[0] == '\0' || strlen(name) > CF_KS_NAME_MAX ||
		    !json_is_object(to))
			goto out;
		t = tl_daemon_state_add(st, name);
		if (t == NULL) {
			rc = -ENOMEM;
			goto out;
		}
		for (k = 0; k < TL_DJOBS; k++) {
			jo = json_object_get(to, tl_daemon_job_names[k]);
			if (jo != NULL && parse_job(jo, &t->job[k]) < 0)
				goto out;
		}
	}
	*out = st;
	st = NULL;
	rc = 0;
out:
	tl_daemon_state_free(st);
	json_decref(root);
	return rc;
}

char *
tl_daemon_state_dump(const struct tl_daemon_state *st)
{
	json_t *root, *ts, *to;
	const struct tl_daemon_job *j;
	char *text = NULL;
	size_t i, k;

	root = json_pack("{s:i, s:I}", "format", 1, "updated",
	    (json_int_t)st->updated);
	ts = json_object();
	if (root == NULL || ts == NULL)
		goto out;
	json_object_set_new(root, "tenants", ts);
	for (i = 0; i < st->n; i++) {
		to = json_object();
		if (to == NULL ||
		    json_object_set_new(ts, st->t[i].name, to) != 0)
			goto out;
		for (k = 0; k < TL_DJOBS; k++) {
			j = &st->t[i].job[k];
			if (j->last_try == 0 && j->last_ok == 0)
				continue;
			json_object_set_new(to, tl_daemon_job_names[k],
			    json_pack("{s:I, s:I, s:I, s:I, s:i, s:i, s:i, "
			    "s:I, s:I}",
			    "last_ok", (json_int_t)j->last_ok,
			    "last_try", (json_int_t)j->last_try,
			    "failed_since", (json_int_t)j->failed_since,
			    "next_try", (json_int_t)j->next_try,
			    "failures", j->failures,
			    "last_exit", j->last_exit,
			    "hold", j->hold,
			    "started_ns", (json_int_t)j->started_ns,
			    "ended_ns", (json_int_t)j->ended_ns));
		}
	}
	text = json_dumps(root, JSON_INDENT(1) | JSON_SORT_KEYS);
out:
	json_decref(root);
	return text;
}

void
tl_daemon_state_path(struct cf_ks_home *home, char *buf, size_t cap)
{
	const char *p = cf_ks_config_get(cf_ks_home_config(home), "daemon",
	    "state_file");

	if (p != NULL && p[0] != '\0')
		snprintf(buf, cap, "%s", p);
	else
		snprintf(buf, cap, "%s/daemon.json", cf_ks_home_path(home));
}

int
tl_daemon_state_load(const char *path, struct tl_daemon_state **out)
{
	unsigned char *buf = NULL;
	size_t got = 0;
	int fd, rc;

	*out = NULL;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	rc = cf_ks_read_fd(fd, TL_DAEMON_STATE_MAX, &buf, &got);
	if (rc == -EINVAL || rc == -EFBIG)
		rc = -EPROTO;	/* not a regular file, or too large */
	if (rc == 0)
		rc = tl_daemon_state_parse((const char *)buf, got, out);
	free(buf);
	close(fd);
	return rc;
}

int
tl_daemon_state_save(const char *path, const struct tl_daemon_state *st)
{
	char *text = tl_daemon_state_dump(st);
	int rc;

	if (text == NULL)
		return -ENOMEM;
	rc = cf_ks_write_atomic(path, text, strlen(text), 0600);
	free(text);
	return rc;
}

int
tl_daemon_judge(const struct tl_daemon_state *st, const char *name,
    char *why, size_t cap)
{
	const struct tl_daemon_tenant *t = tl_daemon_state_find(st, name);
	const struct tl_daemon_job *j;
	char since[32], next[32];
	size_t k, len;
	int level = 0;

	if (cap > 0)
		why[0] = '\0';
	for (k = 0; t != NULL && k < TL_DJOBS; k++) {
		j = &t->job[k];
		if (j->failures == 0)
			continue;
		cf_ks_time_format((time_t)j->failed_since, since,
		    sizeof(since));
		cf_ks_time_format((time_t)j->next_try, next, sizeof(next));
		len = strlen(why);
		if (j->hold) {
			snprintf(why + len, cap - len, "%sdaemon: %s failed "
			    "(exit %d: needs a person) since %s, next try "
			    "%s", len ? "; " : "", tl_daemon_job_names[k],
			    j->last_exit, since, next);
			level = 2;
		} else {
			snprintf(why + len, cap - len, "%sdaemon: %s failed "
			    "%d time%s since %s, next try %s",
			    len ? "; " : "", tl_daemon_job_names[k],
			    j->failures, j->failures == 1 ? "" : "s", since,
			    next);
			if (level < 1)
				level = 1;
		}
	}
	return level;
}

void
tl_daemon_metrics(FILE *f, const struct tl_daemon_state *st,
    const char *const *names, size_t n)
{
	const struct tl_daemon_tenant *t;
	const struct tl_daemon_job *j;
	size_t i, k, m;

	static const char *const help[4][2] = {
		{ "coffer_daemon_job_failures",
		  "Consecutive failures of the daemon's job (0: last run ok)." },
		{ "coffer_daemon_job_needs_person",
		  "1 if the job failed with exit 2, 3 or 4 and waits for a "
		  "person." },
		{ "coffer_daemon_job_last_success_timestamp_seconds",
		  "Start of the job's last successful run (unix time)." },
		{ "coffer_daemon_job_next_try_timestamp_seconds",
		  "When a failed job is tried again (unix time; 0: not "
		  "failing)." },
	};

	if (st == NULL)
		return;
	fprintf(f, "# HELP coffer_daemon_state_timestamp_seconds When coffer "
	    "daemon last saved its state (unix time).\n# TYPE "
	    "coffer_daemon_state_timestamp_seconds gauge\n"
	    "coffer_daemon_state_timestamp_seconds %lld\n",
	    (long long)st->updated);
	for (m = 0; m < 4; m++) {
		fprintf(f, "# HELP %s %s\n# TYPE %s gauge\n", help[m][0],
		    help[m][1], help[m][0]);
		for (i = 0; i < n; i++) {
			t = tl_daemon_state_find(st, names[i]);
			for (k = 0; t != NULL && k < TL_DJOBS; k++) {
				long long v;

				j = &t->job[k];
				if (j->last_try == 0 && j->last_ok == 0)
					continue;
				v = m == 0 ? j->failures : m == 1 ?
				    (j->failures > 0 && j->hold) : m == 2 ?
				    j->last_ok : j->failures ? j->next_try : 0;
				fprintf(f, "%s{tenant=\"%s\",job=\"%s\"} %lld\n",
				    help[m][0], names[i],
				    tl_daemon_job_names[k], v);
			}
		}
	}
}
