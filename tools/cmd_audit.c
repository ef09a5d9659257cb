/*
 * cmd_audit.c - coffer audit verify | show [--tenant NAME].
 *
 * verify exits 0 when the chain and its anchor are intact and 3 (integrity)
 * with the first damaged record named when they are not.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "tl_int.h"

const struct tl_cmd tl_cmd_audit = {
	"audit", cmd_audit,
	"  coffer audit verify\n"
	"  coffer audit show [--tenant NAME]\n",
	"verify or show the tamper-evident audit log",
};

static int
print_line(void *arg, const char *line)
{
	(void)arg;
	puts(line);
	return 0;
}

static int
audit_show(struct tl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "tenant", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	const char *tenant = NULL;
	int c, rc;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c != 't')
			return tl_usage(&tl_cmd_audit, "audit show: bad "
			    "option");
		tenant = optarg;
	}
	if (optind != argc)
		return tl_usage(&tl_cmd_audit, "audit show: unexpected "
		    "argument '%s'", argv[optind]);
	rc = cf_ks_audit_foreach(tl_home(ctx, 0), tenant, print_line, NULL);
	if (rc < 0)
		return tl_fail(rc, "audit show");
	return CF_EXIT_OK;
}

static int
audit_verify(struct tl_ctx *ctx, int argc, char **argv)
{
	struct cf_ks_audit_report rep;
	int rc;

	(void)argv;
	if (argc != 1)
		return tl_usage(&tl_cmd_audit, "audit verify takes no "
		    "arguments");
	memset(&rep, 0, sizeof(rep));
	rc = cf_ks_audit_verify(tl_home(ctx, 0), &rep);
	if (ctx->json) {
		json_t *j = json_pack("{s:b, s:I}", "ok", rc == 0, "records",
		    (json_int_t)rep.records);

		if (j != NULL && rep.problem[0] != '\0') {
			json_object_set_new(j, "bad_record",
			    json_integer((json_int_t)rep.bad_seq));
			json_object_set_new(j, "problem",
			    json_string(rep.problem));
		}
		if (j != NULL)
			tl_print_json(j);
	}
	if (rc == -EBADMSG) {
		if (!ctx->json)
			fprintf(stderr, "coffer: audit log damaged: %s\n",
			    rep.problem);
		return CF_EXIT_INTEGRITY;
	}
	if (rc < 0)
		return tl_fail(rc, "audit verify");
	if (!ctx->json && ctx->verbose >= 0)
		printf("audit log intact: %llu records\n",
		    (unsigned long long)rep.records);
	return CF_EXIT_OK;
}

int
cmd_audit(struct tl_ctx *ctx, int argc, char **argv)
{
	if (argc < 2)
		return tl_usage(&tl_cmd_audit, "audit: missing subcommand");
	if (strcmp(argv[1], "verify") == 0)
		return audit_verify(ctx, argc - 1, argv + 1);
	if (strcmp(argv[1], "show") == 0)
		return audit_show(ctx, argc - 1, argv + 1);
	return tl_usage(&tl_cmd_audit, "audit: unknown subcommand '%s'",
	    argv[1]);
}
