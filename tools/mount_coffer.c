/*
 * mount_coffer.c - mount.coffer (also installed as mount.fuse.coffer), the
 * helper mount(8) runs for file systems of type fuse.coffer or coffer, so
 * that /etc/fstab lines and `mount -t fuse.coffer TENANT DIR` work.
 *
 * mount(8) calls it as  mount.coffer TENANT DIR [-sfnv] [-o OPTS] [-t TYPE].
 * It sorts the options into three kinds: home=DIR becomes coffer's --home;
 * options meant for mount(8) or systemd (defaults, noauto, nofail, _netdev,
 * x-*, ...) are dropped; a short list of VFS and FUSE options that coffer's
 * daemon accepts is passed on.  Anything else is a usage error (exit 2),
 * reported here rather than as a vague failure from the daemon.  It then
 * execs `coffer [--home DIR] mount [-o OPTS] -- TENANT DIR`, which unlocks
 * the tenant, mounts, daemonizes once the mount is up and exits; coffer's
 * exit code (0, 1, 2, 3 or 4) is therefore the helper's.
 *
 * It deliberately handles no secret: the passphrase comes, as for every
 * coffer command, from the home's passphrase_file or COFFER_PASSPHRASE_FILE,
 * never from the command line.  It does not support mount namespaces (-N)
 * or remounting, and it never runs a program found through PATH: coffer is
 * CF_COFFER_BIN, fixed at build time, unless COFFER_BIN names another
 * (secure_getenv: ignored if this program were ever set-id).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cf_keystore.h"	/* CF_EXIT_* only; nothing is linked */

#ifndef CF_COFFER_BIN
#define CF_COFFER_BIN "/usr/local/bin/coffer"
#endif

static const char usage_text[] =
"usage: mount.coffer TENANT MOUNTPOINT [-sfnv] [-o OPTIONS] [-t fuse.coffer]\n"
"\n"
"Mounts coffer tenant TENANT's encrypted store on MOUNTPOINT; mount(8) runs\n"
"it for type fuse.coffer (as mount.fuse.coffer) or coffer.  An fstab line:\n"
"\n"
"  acme  /srv/tenants/acme  fuse.coffer  defaults,home=/var/lib/coffer  0 0\n"
"\n"
"Options (-o, comma-separated):\n"
"  home=DIR      coffer's home (absolute); else $COFFER_HOME, else\n"
"                /var/lib/coffer when run by root\n"
"  ro rw suid nosuid dev nodev exec noexec sync async dirsync atime\n"
"  noatime allow_other default_permissions\n"
"                passed to the mount\n"
"  defaults auto noauto user[=NAME] nouser users nousers owner noowner\n"
"  group nogroup nofail _netdev comment=... x-... X-...\n"
"                meant for mount(8) or systemd; ignored\n"
"Flags:\n"
"  -s  sloppy: warn about and ignore unknown options instead of failing\n"
"  -f  fake: check the arguments, do not mount\n"
"  -n  accepted and ignored (there is no mtab to write)\n"
"  -v  print the coffer command that is run\n"
"  -t  fuse.coffer or coffer\n"
"\n"
"The file KMS passphrase comes from the home's passphrase_file or from\n"
"COFFER_PASSPHRASE_FILE, never from the command line.  COFFER_BIN names\n"
"the coffer program (default " CF_COFFER_BIN ").\n"
"Exit status: coffer's (0 ok, 1 failure, 2 usage, 3 integrity, 4 denied).\n";

/* Options for mount(8) and systemd, by exact name or by prefix. */
static const char *const dropped[] = { "defaults", "auto", "noauto", "user",
	"nouser", "users", "nousers", "owner", "noowner", "group", "nogroup",
	"nofail", "_netdev" };
static const char *const dropped_prefix[] = { "user=", "comment=", "x-",
	"X-", "helper=", "uhelper=" };
/*
 * What libfuse 3's mount code and the kernel accept for coffer's daemon.
 * Some VFS options (relatime, lazytime, nosymfollow, ...) are missing on
 * purpose: libfuse 3.14 refuses them, so they would fail later and less
 * clearly.
 */
static const char *const passed[] = { "rw", "ro", "suid", "nosuid", "dev",
	"nodev", "exec", "noexec", "sync", "async", "dirsync", "atime",
	"noatime", "allow_other", "default_permissions" };

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static int
in_list(const char *opt, const char *const *list, size_t n, int prefix)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (prefix ? strncmp(opt, list[i], strlen(list[i])) == 0 :
		    strcmp(opt, list[i]) == 0)
			return 1;
	}
	return 0;
}

static int usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static int
usage_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "mount.coffer: ");
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nusage: mount.coffer TENANT MOUNTPOINT [-sfnv] "
	    "[-o OPTIONS] [-t fuse.coffer]  (mount.coffer -h for more)\n");
	return CF_EXIT_USAGE;
}

/*
 * Sorts one -o list into *home and the passed-on list out, of *outlen
 * bytes so far, which has room for every byte of every list plus a NUL.
 * Returns 0 or an exit code.  *home points into list, which the caller
 * keeps.
 */
static int
sort_options(char *list, int sloppy, const char **home, char *out,
    size_t *outlen)
{
	char *opt;
	size_t len;

	for (opt = strsep(&list, ","); opt != NULL; opt = strsep(&list, ",")) {
		if (opt[0] == '\0')
			continue;
		if (strncmp(opt, "home=", 5) == 0) {
			if (*home != NULL)
				return usage_error("home= given twice");
			if (opt[5] != '/')
				return usage_error("home=%s: give an absolute "
				    "path", opt + 5);
			*home = opt + 5;
		} else if (in_list(opt, passed, NELEM(passed), 0)) {
			len = strlen(opt);
			if (*outlen > 0)
				out[(*outlen)++] = ',';
			memcpy(out + *outlen, opt, len + 1);
			*outlen += len;
		} else if (in_list(opt, dropped, NELEM(dropped), 0) ||
		    in_list(opt, dropped_prefix, NELEM(dropped_prefix), 1)) {
			continue;
		} else if (strcmp(opt, "remount") == 0) {
			return usage_error("%s is not supported: umount, then "
			    "mount again", opt);
		} else if (sloppy) {
			fprintf(stderr, "mount.coffer: ignoring unsupported "
			    "option '%s'\n", opt);
		} else {
			return usage_error("unsupported option '%s'", opt);
		}
	}
	return 0;
}

int
main(int argc, char **argv)
{
	const char *av[12], *bin, *home = NULL, *tenant, *mp;
	char *lists[16], *out = NULL;
	size_t i, n = 0, nlists = 0, total = 1, outlen = 0;
	int c, fake = 0, sloppy = 0, verbose = 0, ret = CF_EXIT_USAGE;

	if (argc >= 2 && (strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "--help") == 0)) {
		fputs(usage_text, stdout);
		return CF_EXIT_OK;
	}
	if (argc < 3)
		return usage_error("give TENANT and MOUNTPOINT");
	tenant = argv[1];
	mp = argv[2];
	if (tenant[0] == '\0' || tenant[0] == '-' || mp[0] == '\0')
		return usage_error("TENANT and MOUNTPOINT come first, then "
		    "the options");
	/* mount(8) puts TENANT and DIR first; parse what follows. */
	argc -= 2;
	argv += 2;
	opterr = 0;
	while ((c = getopt(argc, argv, "+:sfnvN:o:t:")) != -1) {
		switch (c) {
		case 's':
			sloppy = 1;
			break;
		case 'f':
			fake = 1;
			break;
		case 'n':
			break;
		case 'v':
			verbose = 1;
			break;
		case 'N':
			return usage_error("-N %s: mount namespaces are not "
			    "supported", optarg);
		case 'o':
			if (nlists == NELEM(lists))
				return usage_error("too many -o");
			lists[nlists++] = optarg;
			total += strlen(optarg) + 1;
			break;
		case 't':
			if (strcmp(optarg, "fuse.coffer") != 0 &&
			    strcmp(optarg, "coffer") != 0)
				return usage_error("type %s is not coffer's "
				    "(fuse.coffer)", optarg);
			break;
		case ':':
			return usage_error("-%c needs a value", optopt);
		default:
			return usage_error("unknown flag -%c", optopt);
		}
	}
	if (optind != argc)
		return usage_error("unexpected argument '%s'", argv[optind]);

	out = calloc(1, total);
	if (out == NULL) {
		perror("mount.coffer");
		return CF_EXIT_FAIL;
	}
	for (i = 0; i < nlists; i++) {
		ret = sort_options(lists[i], sloppy, &home, out, &outlen);
		if (ret != 0)
			goto out;
	}

	bin = secure_getenv("COFFER_BIN");
	if (bin == NULL || bin[0] == '\0')
		bin = CF_COFFER_BIN;
	av[n++] = bin;
	if (home != NULL) {
		av[n++] = "--home";
		av[n++] = home;
	}
	av[n++] = "mount";
	if (outlen > 0) {
		av[n++] = "-o";
		av[n++] = out;
	}
	av[n++] = "--";		/* TENANT and DIR are never options */
	av[n++] = tenant;
	av[n++] = mp;
	av[n] = NULL;
	if (verbose) {
		fprintf(stderr, "mount.coffer: %s", fake ? "would run" :
		    "running");
		for (i = 0; av[i] != NULL; i++)
			fprintf(stderr, " %s", av[i]);
		fputc('\n', stderr);
	}
	if (fake) {
		ret = CF_EXIT_OK;
		goto out;
	}
	execv(bin, (char *const *)av);
	fprintf(stderr, "mount.coffer: cannot run %s: %s\n", bin,
	    strerror(errno));
	ret = CF_EXIT_FAIL;
out:
	free(out);
	return ret;
}
