/*
 * coffer.c - entry point of the coffer tool: global options, the home
 * directory, and dispatch to git-style subcommands (DESIGN.md's CLI
 * contract).  Exit codes: 0 ok, 1 failure, 2 usage, 3 integrity, 4 denied.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tl_int.h"

static const struct tl_cmd *const commands[] = {
	&tl_cmd_tenant,
	&tl_cmd_audit,
#ifdef CF_HAVE_FS
	&tl_cmd_mount,
	&tl_cmd_umount,
#endif
#ifdef CF_HAVE_BACKUP
	&tl_cmd_backup,
	&tl_cmd_snapshots,
	&tl_cmd_restore,
	&tl_cmd_drill,
	&tl_cmd_daemon,
#endif
	&tl_cmd_verify,
	&tl_cmd_status,
	&tl_cmd_retention,
	&tl_cmd_lifecycle,
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void
usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: coffer [--home DIR] [--json] [-q|-v] COMMAND ...\n"
	    "       coffer help [COMMAND]\n"
	    "       coffer --help | --version\n"
	    "\ncommands:\n");
	for (i = 0; i < NCOMMANDS; i++)
		fprintf(f, "  %-8s %s\n", commands[i]->name,
		    commands[i]->summary);
	fprintf(f, "\n'coffer help COMMAND' shows a command's usage.\n"
	    "The home is --home, else $COFFER_HOME, else /var/lib/coffer for "
	    "root.\n");
}

static const char *
default_home(void)
{
	static char buf[4096];
	const char *e = getenv("COFFER_HOME");

	if (e != NULL && e[0] != '\0')
		return e;
	if (geteuid() == 0)
		return "/var/lib/coffer";
	e = getenv("HOME");
	if (e == NULL || e[0] == '\0')
		return NULL;
	snprintf(buf, sizeof(buf), "%s/.local/share/coffer", e);
	return buf;
}

static const struct tl_cmd *
find_command(const char *name)
{
	size_t i;

	for (i = 0; i < NCOMMANDS; i++)
		if (strcmp(commands[i]->name, name) == 0)
			return commands[i];
	return NULL;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "home", required_argument, NULL, 'H' },
		{ "json", no_argument, NULL, 'j' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct tl_ctx ctx;
	const struct tl_cmd *cmd;
	int c, rc;

	memset(&ctx, 0, sizeof(ctx));
	if (cf_ks_init() < 0 || cf_ks_harden_process() < 0) {
		fprintf(stderr, "coffer: %s\n", cf_ks_last_error());
		return CF_EXIT_FAIL;
	}
	while ((c = getopt_long(argc, argv, "+qvh", opts, NULL)) != -1) {
		switch (c) {
		case 'H':
			ctx.home_path = optarg;
			break;
		case 'j':
			ctx.json = 1;
			break;
		case 'q':
			ctx.verbose = -1;
			break;
		case 'v':
			ctx.verbose = 1;
			break;
		case 'h':
			usage(stdout);
			return CF_EXIT_OK;
		case 'V':
			printf("coffer 0.1.0\n");
			return CF_EXIT_OK;
		default:
			usage(stderr);
			return CF_EXIT_USAGE;
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1) {
		usage(stderr);
		return CF_EXIT_USAGE;
	}
	if (strcmp(argv[0], "help") == 0) {
		if (argc < 2) {
			usage(stdout);
			return CF_EXIT_OK;
		}
		cmd = find_command(argv[1]);
		if (cmd == NULL) {
			fprintf(stderr, "coffer: unknown command '%s'\n",
			    argv[1]);
			return CF_EXIT_USAGE;
		}
		printf("usage:\n%s", cmd->usage);
		return CF_EXIT_OK;
	}
	cmd = find_command(argv[0]);
	if (cmd == NULL) {
		fprintf(stderr, "coffer: unknown command '%s'\n", argv[0]);
		usage(stderr);
		return CF_EXIT_USAGE;
	}
	if (ctx.home_path == NULL)
		ctx.home_path = default_home();
	if (ctx.home_path == NULL) {
		fprintf(stderr, "coffer: no home: set --home or COFFER_HOME\n");
		return CF_EXIT_USAGE;
	}
	optind = 0;	/* GNU getopt: reinitialise for the subcommand */
	rc = cmd->run(&ctx, argc, argv);
	cf_ks_home_free(ctx.home);
	return rc;
}
