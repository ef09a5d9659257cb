/*
 * cmd_status.c - coffer status [NAME] [--json] [--metrics FILE]: one line
 * (or one JSON object) per tenant with its state, whether it is mounted,
 * its last backup (time, age, size), last verify, last drill and
 * projected restore time, and a health verdict (docs/operations.md,
 * Reading coffer status).
 *
 * It is fast on purpose: it unwraps no key and reads no repository, only
 * the fields that backup, verify and drill cache in tenant.json
 * (tl_ops_record_backup, cmd_verify.c, cmd_drill.c) and
 * /proc/self/mountinfo.  A backup made by a coffer older than that cache
 * shows as "no backup recorded" until the next one.
 *
 * Health: FAIL if the last verify or drill found damage; WARN if the last
 * backup is older than [operations] backup_max_age_hours (26), the last
 * verify older than verify_max_age_days (8) or not ok, the last drill
 * missing, older than drill_max_age_days (8), failed or over the RTO;
 * else OK.  A crypto-shredded tenant is "shredded" and not judged.
 * Exit 0 if every tenant shown is OK, 1 otherwise (2 usage).
 *
 * --metrics FILE (or [operations] metrics_file) also writes Prometheus
 * text-format metrics for every tenant shown, atomically (a temporary
 * file in the same directory, fsync, rename), for node_exporter's
 * textfile collector.
 *
 * The state file of coffer daemon (tl_daemon.c), if there is one, adds
 * the daemon's failing jobs: WARN while a job is retried with backoff,
 * FAIL once it waits for a person (exit 2, 3 or 4), and the
 * coffer_daemon_* metrics.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tl_int.h"

const struct tl_cmd tl_cmd_status = {
	"status", cmd_status,
	"  coffer status [NAME] [--json] [--metrics FILE]\n"
	"    last backup, verify and drill, projected RTO and health per\n"
	"    tenant; exit 1 if any tenant is not OK\n",
	"last backup, last verify, projected RTO per tenant",
};

struct st_row {
	const char *name;
	const char *state;
	int shredded, mounted;
	time_t backup, verify, drill;		/* 0: never */
	long long backup_bytes, backup_files;
	const char *backup_snapshot;
	const char *verify_result, *drill_result;
	long long projected;			/* -1: unknown */
	int health;				/* 0 OK, 1 WARN, 2 FAIL */
	char why[1536];
};

static const char *const health_names[] = { "OK", "WARN", "FAIL" };

void
tl_ops_record_backup(struct cf_ks_home *home, const char *name,
    const char *snapshot, int64_t time_ns, uint64_t bytes, uint64_t files)
{
	struct cf_ks_tenant *t = NULL;
	char when[64], b[32], f[32];

	/* Opened afresh: the backup's own handle may be hours old. */
	if (cf_ks_tenant_open(home, name, &t) < 0)
		goto fail;
	cf_ks_time_format((time_t)(time_ns / 1000000000), when, sizeof(when));
	snprintf(b, sizeof(b), "%llu", (unsigned long long)bytes);
	snprintf(f, sizeof(f), "%llu", (unsigned long long)files);
	{
		/* One save, so status never reads half of a backup's. */
		const char *kv[] = { "last_backup", when,
			"last_backup_snapshot", snapshot,
			"last_backup_bytes", b, "last_backup_files", f };

		if (cf_ks_tenant_set_many(t, kv, 4) < 0)
			goto fail;
	}
	cf_ks_tenant_free(t);
	return;
fail:
	fprintf(stderr, "coffer: could not record the backup in tenant %s: "
	    "%s\n", name, cf_ks_last_error());
	cf_ks_tenant_free(t);
}

/* [operations] rto_hours in seconds (default 8 h); -1 if malformed. */
double
tl_ops_rto_s(struct cf_ks_home *home)
{
	const char *v = cf_ks_config_get(cf_ks_home_config(home),
	    "operations", "rto_hours");
	char *end;
	double h;

	if (v == NULL || v[0] == '\0')
		return 8 * 3600.0;
	errno = 0;
	h = strtod(v, &end);
	if (errno != 0 || end == v || *end != '\0' || !(h > 0) || h > 1e6)
		return -1;
	return h * 3600.0;
}

static time_t
field_time(const struct cf_ks_tenant *t, const char *key)
{
	const char *v = cf_ks_tenant_get(t, key);
	time_t when;

	if (v == NULL || cf_ks_time_parse(v, &when) < 0)
		return 0;
	return when;
}

static long long
field_num(const struct cf_ks_tenant *t, const char *key)
{
	const char *v = cf_ks_tenant_get(t, key);
	char *end;
	long long n;

	if (v == NULL || v[0] == '\0')
		return -1;
	errno = 0;
	n = strtoll(v, &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	return n;
}

/* [operations] KEY as a positive number, else def. */
static double
conf_num(struct cf_ks_home *home, const char *key, double def)
{
	const char *v = cf_ks_config_get(cf_ks_home_config(home),
	    "operations", key);
	char *end;
	double d;

	if (v == NULL || v[0] == '\0')
		return def;
	errno = 0;
	d = strtod(v, &end);
	if (errno != 0 || end == v || *end != '\0' || !(d > 0)) {
		fprintf(stderr, "coffer: coffer.conf: [operations] %s: not a "
		    "positive number; using %g\n", key, def);
		return def;
	}
	return d;
}

static int
is_mounted(struct cf_ks_home *home, const struct cf_ks_tenant *t,
    const char *name)
{
	char line[8192], want[CF_KS_NAME_MAX + 16];
	FILE *f;
	int found = tl_store_served(home, t);

	if (found >= 0)
		return found;	/* exact: this home's store is served */
	found = 0;
	f = fopen("/proc/self/mountinfo", "re");
	if (f == NULL)
		return 0;
	snprintf(want, sizeof(want), " coffer:%s ", name);
	while (!found && fgets(line, sizeof(line), f) != NULL) {
		char *sep = strstr(line, " - ");

		found = sep != NULL && strstr(sep, want) != NULL;
	}
	fclose(f);
	return found;
}

static void
judge(struct st_row *r, int level, const char *a, const char *b)
{
	size_t len = strlen(r->why);

	if (level > r->health)
		r->health = level;
	snprintf(r->why + len, sizeof(r->why) - len, "%s%s%s",
	    len ? "; " : "", a, b != NULL ? b : "");
}

static void
fill(struct st_row *r, struct cf_ks_home *home, const struct cf_ks_tenant *t,
    time_t now,
    double max_backup, double max_verify, double max_drill, double rto)
{
	char buf[64];

	memset(r, 0, sizeof(*r));
	r->name = cf_ks_tenant_name(t);
	r->shredded = cf_ks_tenant_shredded(t);
	r->state = cf_ks_tenant_get(t, "state");
	if (r->state == NULL)
		r->state = "active";
	if (r->shredded)
		r->state = "shredded";
	r->mounted = is_mounted(home, t, r->name);
	r->backup = field_time(t, "last_backup");
	r->backup_bytes = field_num(t, "last_backup_bytes");
	r->backup_files = field_num(t, "last_backup_files");
	r->backup_snapshot = cf_ks_tenant_get(t, "last_backup_snapshot");
	r->verify = field_time(t, "last_verify");
	r->verify_result = cf_ks_tenant_get(t, "last_verify_result");
	r->drill = field_time(t, "last_drill");
	r->drill_result = cf_ks_tenant_get(t, "last_drill_result");
	r->projected = field_num(t, "projected_rto_s");
	if (r->shredded)
		return;
	if (r->backup == 0)
		judge(r, 1, "no backup recorded", NULL);
	else if ((double)(now - r->backup) > max_backup)
		judge(r, 1, "last backup older than ", (snprintf(buf,
		    sizeof(buf), "%.0f h", max_backup / 3600), buf));
	if (r->verify_result != NULL &&
	    (strcmp(r->verify_result, "damaged") == 0 ||
	    strcmp(r->verify_result, "wrong-key") == 0))
		judge(r, 2, "last verify: ", r->verify_result);
	else if (r->verify == 0)
		judge(r, 1, "never verified", NULL);
	else if (r->verify_result == NULL ||
	    strcmp(r->verify_result, "ok") != 0)
		judge(r, 1, "last verify: ", r->verify_result ?
		    r->verify_result : "unknown");
	else if ((double)(now - r->verify) > max_verify)
		judge(r, 1, "last verify older than ", (snprintf(buf,
		    sizeof(buf), "%.0f days", max_verify / 86400), buf));
	if (r->drill_result != NULL && strcmp(r->drill_result, "damaged") == 0)
		judge(r, 2, "last drill found damage", NULL);
	else if (r->drill == 0)
		judge(r, 1, "no restore drill yet", NULL);
	else if (r->drill_result == NULL ||
	    strcmp(r->drill_result, "ok") != 0)
		judge(r, 1, "last drill: ", r->drill_result ?
		    r->drill_result : "unknown");
	else if ((double)(now - r->drill) > max_drill)
		judge(r, 1, "last drill older than ", (snprintf(buf,
		    sizeof(buf), "%.0f days", max_drill / 86400), buf));
	if (r->projected >= 0 && (double)r->projected > rto &&
	    (r->drill_result == NULL ||
	    strcmp(r->drill_result, "over-rto") != 0))
		judge(r, 1, "projected restore over the RTO", NULL);
}

static void
iso_or_null(time_t t, char *buf, size_t cap)
{
	if (t == 0)
		snprintf(buf, cap, "-");
	else
		cf_ks_time_format(t, buf, cap);
}

static json_t *
row_json(const struct st_row *r, time_t now)
{
	char b[64], v[64], d[64];
	json_t *j;

	iso_or_null(r->backup, b, sizeof(b));
	iso_or_null(r->verify, v, sizeof(v));
	iso_or_null(r->drill, d, sizeof(d));
	j = json_pack("{s:s, s:s, s:b, s:s, s:s}", "tenant", r->name,
	    "state", r->state, "mounted", r->mounted,
	    "health", health_names[r->health], "why", r->why);
	if (j == NULL)
		return NULL;
	json_object_set_new(j, "last_backup", r->backup ? json_string(b) :
	    json_null());
	json_object_set_new(j, "last_backup_age_s", r->backup ?
	    json_integer((json_int_t)(now - r->backup)) : json_null());
	json_object_set_new(j, "last_backup_bytes", r->backup_bytes >= 0 ?
	    json_integer(r->backup_bytes) : json_null());
	json_object_set_new(j, "last_backup_files", r->backup_files >= 0 ?
	    json_integer(r->backup_files) : json_null());
	json_object_set_new(j, "last_backup_snapshot", r->backup_snapshot ?
	    json_string(r->backup_snapshot) : json_null());
	json_object_set_new(j, "last_verify", r->verify ? json_string(v) :
	    json_null());
	json_object_set_new(j, "last_verify_result", r->verify_result ?
	    json_string(r->verify_result) : json_null());
	json_object_set_new(j, "last_drill", r->drill ? json_string(d) :
	    json_null());
	json_object_set_new(j, "last_drill_result", r->drill_result ?
	    json_string(r->drill_result) : json_null());
	json_object_set_new(j, "projected_rto_s", r->projected >= 0 ?
	    json_integer(r->projected) : json_null());
	return j;
}

static void
age_str(time_t now, time_t t, char *buf, size_t cap)
{
	long long s = (long long)(now - t);

	if (t == 0)
		snprintf(buf, cap, "never");
	else if (s < 0)
		snprintf(buf, cap, "future");
	else if (s < 3600)
		snprintf(buf, cap, "%lldm", s / 60);
	else if (s < 172800)
		snprintf(buf, cap, "%lldh", s / 3600);
	else
		snprintf(buf, cap, "%lldd", s / 86400);
}

static void
print_row(const struct st_row *r, time_t now)
{
	char ba[32], va[32], da[32], size[32], rto[32];

	age_str(now, r->backup, ba, sizeof(ba));
	age_str(now, r->verify, va, sizeof(va));
	age_str(now, r->drill, da, sizeof(da));
	if (r->backup_bytes >= 0)
		snprintf(size, sizeof(size), "%.1fM",
		    (double)r->backup_bytes / (1 << 20));
	else
		snprintf(size, sizeof(size), "-");
	if (r->projected >= 0)
		snprintf(rto, sizeof(rto), "%llds", r->projected);
	else
		snprintf(rto, sizeof(rto), "-");
	printf("%-16s %-10s %-3s %-6s %8s  %-6s %-9s  %-6s %-9s %8s  %-4s %s\n",
	    r->name, r->state, r->mounted ? "yes" : "no", ba, size, va,
	    r->verify_result ? r->verify_result : "-", da,
	    r->drill_result ? r->drill_result : "-", rto,
	    health_names[r->health], r->why);
}

/* Writes the metrics of rows to path atomically; 0 or -errno. */
static int
write_metrics(const char *path, const struct st_row *rows, size_t n,
    double rto, const struct tl_daemon_state *dst)
{
	const char **names = NULL;
	char tmp[PATH_MAX];
	FILE *f = NULL;
	size_t i;
	int fd = -1, rc = -EIO;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path,
	    (long)getpid()) >= sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
	    0644);
	if (fd < 0)
		return -errno;
	f = fdopen(fd, "w");
	if (f == NULL) {
		rc = -errno;
		close(fd);
		goto out;
	}
#define HDR(m, h) fprintf(f, "# HELP " m " " h "\n# TYPE " m " gauge\n")
	HDR("coffer_last_backup_timestamp_seconds",
	    "Start of the last backup (unix time; 0: none recorded).");
	for (i = 0; i < n; i++)
		fprintf(f, "coffer_last_backup_timestamp_seconds{tenant=\"%s\"}"
		    " %lld\n", rows[i].name, (long long)rows[i].backup);
	HDR("coffer_last_backup_bytes",
	    "Plaintext bytes in the last backup's snapshot.");
	for (i = 0; i < n; i++)
		if (rows[i].backup_bytes >= 0)
			fprintf(f, "coffer_last_backup_bytes{tenant=\"%s\"} "
			    "%lld\n", rows[i].name, rows[i].backup_bytes);
	HDR("coffer_last_verify_timestamp_seconds",
	    "Time of the last verify (unix time; 0: never).");
	for (i = 0; i < n; i++)
		fprintf(f, "coffer_last_verify_timestamp_seconds{tenant="
		    "\"%s\"} %lld\n", rows[i].name, (long long)rows[i].verify);
	HDR("coffer_last_verify_success",
	    "1 if the last verify found the repository intact.");
	for (i = 0; i < n; i++)
		fprintf(f, "coffer_last_verify_success{tenant=\"%s\"} %d\n",
		    rows[i].name, rows[i].verify_result != NULL &&
		    strcmp(rows[i].verify_result, "ok") == 0);
	HDR("coffer_last_drill_timestamp_seconds",
	    "Time of the last restore drill (unix time; 0: never).");
	for (i = 0; i < n; i++)
		fprintf(f, "coffer_last_drill_timestamp_seconds{tenant=\"%s\"}"
		    " %lld\n", rows[i].name, (long long)rows[i].drill);
	HDR("coffer_last_drill_success",
	    "1 if the last drill restored the snapshot exactly.");
	for (i = 0; i < n; i++)
		fprintf(f, "coffer_last_drill_success{tenant=\"%s\"} %d\n",
		    rows[i].name, rows[i].drill_result != NULL &&
		    (strcmp(rows[i].drill_result, "ok") == 0 ||
		    strcmp(rows[i].drill_result, "over-rto") == 0));
	HDR("coffer_projected_rto_seconds",
	    "Projected full-restore time from the last drill.");
	for (i = 0; i < n; i++)
		if (rows[i].projected >= 0)
			fprintf(f, "coffer_projected_rto_seconds{tenant=\"%s\"}"
			    " %lld\n", rows[i].name, rows[i].projected);
	HDR("coffer_rto_seconds", "The configured recovery time objective.");
	fprintf(f, "coffer_rto_seconds %.0f\n", rto);
	HDR("coffer_tenant_ok",
	    "1 if coffer status judges the tenant OK, else 0.");
	for (i = 0; i < n; i++)
		if (!rows[i].shredded)
			fprintf(f, "coffer_tenant_ok{tenant=\"%s\"} %d\n",
			    rows[i].name, rows[i].health == 0);
#undef HDR
	if (dst != NULL) {
		names = calloc(n + 1, sizeof(*names));
		if (names == NULL) {
			rc = -ENOMEM;
			goto out;
		}
		for (i = 0; i < n; i++)
			names[i] = rows[i].name;
		tl_daemon_metrics(f, dst, names, n);
		free(names);
		names = NULL;
	}
	if (fflush(f) != 0 || fsync(fileno(f)) < 0) {
		rc = -errno;
		goto out;
	}
	if (fclose(f) != 0) {
		f = NULL;
		rc = -errno;
		goto out;
	}
	f = NULL;
	if (rename(tmp, path) < 0) {
		rc = -errno;
		goto out;
	}
	return 0;
out:
	if (f != NULL)
		fclose(f);
	(void)unlink(tmp);
	return rc < 0 ? rc : -EIO;
}

int
cmd_status(struct tl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "metrics", required_argument, NULL, 'm' },
		{ NULL, 0, NULL, 0 },
	};
	struct cf_ks_home *home;
	struct cf_ks_tenant **ts = NULL;
	struct st_row *rows = NULL;
	struct tl_daemon_state *dst = NULL;
	char **names = NULL, dpath[PATH_MAX], dwhy[sizeof(rows->why)];
	const char *metrics = NULL, *one = NULL;
	size_t n = 0, i, bad = 0;
	double max_backup, max_verify, max_drill, rto;
	time_t now;
	json_t *arr;
	int c, rc, ret = CF_EXIT_FAIL, level;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			ctx->json = 1;
			break;
		case 'm':
			metrics = optarg;
			break;
		default:
			return tl_usage(&tl_cmd_status, "status: bad option");
		}
	}
	if (optind == argc - 1)
		one = argv[optind];
	else if (optind != argc)
		return tl_usage(&tl_cmd_status, "status: at most one NAME");
	home = tl_home(ctx, 0);
	if (metrics == NULL)
		metrics = cf_ks_config_get(cf_ks_home_config(home),
		    "operations", "metrics_file");
	max_backup = conf_num(home, "backup_max_age_hours", 26) * 3600;
	max_verify = conf_num(home, "verify_max_age_days", 8) * 86400;
	max_drill = conf_num(home, "drill_max_age_days", 8) * 86400;
	rto = tl_ops_rto_s(home);
	if (rto < 0) {
		fprintf(stderr, "coffer: coffer.conf: [operations] rto_hours "
		    "must be a positive number of hours\n");
		return CF_EXIT_USAGE;
	}
	now = cf_ks_now();
	tl_daemon_state_path(home, dpath, sizeof(dpath));
	rc = tl_daemon_state_load(dpath, &dst);
	if (rc < 0 && rc != -ENOENT)
		fprintf(stderr, "coffer: daemon state %s: %s\n", dpath,
		    rc == -EPROTO ? "malformed" : strerror(-rc));
	if (one != NULL) {
		names = calloc(1, sizeof(*names));
		if (names == NULL)
			return CF_EXIT_FAIL;
		names[0] = strdup(one);
		n = 1;
		if (names[0] == NULL)
			goto out;
	} else {
		rc = cf_ks_tenant_list(home, &names, &n);
		if (rc < 0) {
			ret = tl_fail(rc, "listing tenants");
			names = NULL;
			n = 0;
			goto out;
		}
	}
	ts = calloc(n + 1, sizeof(*ts));
	rows = calloc(n + 1, sizeof(*rows));
	if (ts == NULL || rows == NULL)
		goto out;
	for (i = 0; i < n; i++) {
		rc = cf_ks_tenant_open(home, names[i], &ts[i]);
		if (rc < 0) {
			ret = tl_fail(rc, names[i]);
			if (one != NULL)
				goto out;
			memset(&rows[i], 0, sizeof(rows[i]));
			rows[i].name = names[i];
			rows[i].state = "unreadable";
			rows[i].health = 2;
			rows[i].projected = -1;
			rows[i].backup_bytes = rows[i].backup_files = -1;
			snprintf(rows[i].why, sizeof(rows[i].why),
			    "tenant.json unreadable");
			continue;
		}
		fill(&rows[i], home, ts[i], now, max_backup, max_verify,
		    max_drill, rto);
		if (rows[i].shredded)
			continue;
		level = tl_daemon_judge(dst, rows[i].name, dwhy, sizeof(dwhy));
		if (level > 0)
			judge(&rows[i], level, dwhy, NULL);
	}
	for (i = 0; i < n; i++)
		if (rows[i].health != 0)
			bad++;
	if (ctx->json) {
		arr = json_array();
		for (i = 0; arr != NULL && i < n; i++)
			json_array_append_new(arr, row_json(&rows[i], now));
		if (arr != NULL)
			tl_print_json(arr);
	} else {
		printf("%-16s %-10s %-3s %-6s %8s  %-6s %-9s  %-6s %-9s %8s  "
		    "%-4s %s\n", "TENANT", "STATE", "MNT", "BACKUP", "SIZE",
		    "VERIFY", "RESULT", "DRILL", "RESULT", "RTO", "HEALTH",
		    "WHY");
		for (i = 0; i < n; i++)
			print_row(&rows[i], now);
	}
	if (metrics != NULL && metrics[0] != '\0') {
		rc = write_metrics(metrics, rows, n, rto, dst);
		if (rc < 0) {
			fprintf(stderr, "coffer: metrics %s: %s\n", metrics,
			    strerror(-rc));
			ret = CF_EXIT_FAIL;
			goto out;
		}
	}
	ret = bad > 0 ? CF_EXIT_FAIL : CF_EXIT_OK;
out:
	for (i = 0; ts != NULL && i < n; i++)
		cf_ks_tenant_free(ts[i]);
	free(ts);
	free(rows);
	tl_daemon_state_free(dst);
	cf_ks_tenant_list_free(names, n);
	return ret;
}
