/*
 * cmd_tenant.c - coffer tenant create|list|show|rotate-kek|rotate-key|shred
 * (reencrypt and retire-key are in cmd_rekey.c).
 *
 * Thin: parses arguments, calls the keystore, prints.  Output is one line
 * per fact for people, or one JSON document with --json.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tl_int.h"

static int tenant_create(struct tl_ctx *ctx, int argc, char **argv);
static int tenant_list(struct tl_ctx *ctx, int argc, char **argv);
static int tenant_show(struct tl_ctx *ctx, int argc, char **argv);
static int tenant_rotate_kek(struct tl_ctx *ctx, int argc, char **argv);
static int tenant_shred(struct tl_ctx *ctx, int argc, char **argv);
static int tenant_rotate_key(struct tl_ctx *ctx, int argc, char **argv);
#ifdef CF_HAVE_BACKUP
/* In cmd_backup.c: the writer credential (docs/write-only.md). */
int tl_backup_writer_key(struct tl_ctx *ctx, int argc, char **argv);
#endif

const struct tl_cmd tl_cmd_tenant = {
	"tenant", cmd_tenant,
	"  coffer tenant create NAME [--cipher aes-256-gcm|xchacha20-poly1305]\n"
	"                       [--kms PROVIDER] [--repo URL]\n"
	"  coffer tenant list\n"
	"  coffer tenant show NAME\n"
	"  coffer tenant rotate-kek (NAME | --all) [--to PROVIDER]\n"
	"  coffer tenant rotate-key NAME\n"
	"  coffer tenant reencrypt NAME [--metadata |\n"
	"                          --repository [--objects] [--repo URL]]\n"
	"  coffer tenant retire-key NAME VERSION\n"
	"  coffer tenant writer-key NAME --out FILE [--repo URL]\n"
	"  coffer tenant shred NAME --yes\n"
	"    shred destroys every key of the tenant: its data and backups\n"
	"    can no longer be decrypted\n",
	"create, list, show, rotate or crypto-shred tenants",
};

int
cmd_tenant(struct tl_ctx *ctx, int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(struct tl_ctx *, int, char **);
	} sub[] = {
		{ "create", tenant_create },
		{ "list", tenant_list },
		{ "show", tenant_show },
		{ "rotate-kek", tenant_rotate_kek },
		{ "rotate-key", tenant_rotate_key },
#ifdef CF_HAVE_FS
		{ "reencrypt", tl_tenant_reencrypt },
		{ "retire-key", tl_tenant_retire_key },
#endif
		{ "shred", tenant_shred },
#ifdef CF_HAVE_BACKUP
		{ "writer-key", tl_backup_writer_key },
#endif
	};
	size_t i;

	if (argc < 2)
		return tl_usage(&tl_cmd_tenant, "tenant: missing subcommand");
	for (i = 0; i < sizeof(sub) / sizeof(sub[0]); i++)
		if (strcmp(argv[1], sub[i].name) == 0)
			return sub[i].fn(ctx, argc - 1, argv + 1);
	return tl_usage(&tl_cmd_tenant, "tenant: unknown subcommand '%s'",
	    argv[1]);
}

static json_t *
tenant_json(struct cf_ks_tenant *t)
{
	char created[32], kek[160];
	const char *repo = cf_ks_tenant_repo(t), *state;
	uint32_t v[64];
	size_t n, i;
	json_t *j, *vs;

	cf_ks_time_format(cf_ks_tenant_created(t), created, sizeof(created));
	state = cf_ks_tenant_shredded(t) ? "shredded" :
	    cf_ks_tenant_get(t, "state");
	j = json_pack("{s:s, s:s, s:s, s:s, s:s?, s:s, s:I, s:s?}",
	    "name", cf_ks_tenant_name(t), "id", cf_ks_tenant_id_hex(t),
	    "cipher", cf_ks_cipher_name(cf_ks_tenant_cipher(t)),
	    "kms", cf_ks_tenant_kms(t), "repo", repo, "created", created,
	    "key_version", (json_int_t)cf_ks_tenant_key_version(t),
	    "state", state);
	if (j == NULL)
		return NULL;
	vs = json_array();
	n = cf_ks_tenant_versions(t, v, 64);
	for (i = 0; i < n && i < 64; i++)
		json_array_append_new(vs, json_integer(v[i]));
	json_object_set_new(j, "key_versions", vs);
	vs = json_array();
	for (i = 1; i < cf_ks_tenant_key_version(t) && i < 100000; i++)
		if (cf_ks_tenant_retired(t, (uint32_t)i))
			json_array_append_new(vs, json_integer((json_int_t)i));
	json_object_set_new(j, "retired_versions", vs);
	if (!cf_ks_tenant_shredded(t) &&
	    cf_ks_tenant_describe_kek(t, 0, kek, sizeof(kek)) == 0)
		json_object_set_new(j, "kek", json_string(kek));
	return j;
}

static void
print_tenant(struct cf_ks_tenant *t)
{
	json_t *j = tenant_json(t), *v;
	const char *key;

	if (j == NULL)
		return;
	json_object_foreach(j, key, v) {
		if (json_is_string(v))
			printf("%-16s %s\n", key, json_string_value(v));
		else if (json_is_integer(v))
			printf("%-16s %lld\n", key,
			    (long long)json_integer_value(v));
		else if (json_is_array(v)) {
			size_t i;
			json_t *e;

			printf("%-16s", key);
			json_array_foreach(v, i, e)
				printf(" %lld", (long long)json_integer_value(e));
			printf("%s\n", json_array_size(v) == 0 ? " none" : "");
		}
	}
	json_decref(j);
}

static int
tenant_create(struct tl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "cipher", required_argument, NULL, 'c' },
		{ "kms", required_argument, NULL, 'k' },
		{ "repo", required_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 },
	};
	enum cf_ks_cipher cipher = CF_KS_CIPHER_NONE;
	const char *kms = NULL, *repo = NULL;
	struct cf_ks_tenant *t = NULL;
	int c, rc;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			if (cf_ks_cipher_parse(optarg, &cipher) < 0)
				return tl_usage(&tl_cmd_tenant, "%s",
				    cf_ks_last_error());
			break;
		case 'k':
			kms = optarg;
			break;
		case 'r':
			repo = optarg;
			break;
		default:
			return tl_usage(&tl_cmd_tenant, "tenant create: bad "
			    "option");
		}
	}
	if (optind != argc - 1)
		return tl_usage(&tl_cmd_tenant, "tenant create: give exactly "
		    "one NAME");
	if (!cf_ks_name_valid(argv[optind]))
		return tl_usage(&tl_cmd_tenant, "invalid tenant name '%.64s': "
		    "use 1-63 of a-z 0-9 . _ - starting with a letter or digit",
		    argv[optind]);
	if (repo != NULL && strncmp(repo, "file:///", 8) != 0 &&
	    strncmp(repo, "s3://", 5) != 0)
		return tl_usage(&tl_cmd_tenant, "--repo must be file:///PATH "
		    "or s3://BUCKET/PREFIX");
	rc = cf_ks_tenant_create(tl_home(ctx, 1), argv[optind], cipher, kms,
	    repo, &t);
	if (rc < 0)
		return tl_fail(rc, "tenant create");
	if (ctx->json)
		tl_print_json(tenant_json(t));
	else if (ctx->verbose >= 0)
		printf("created tenant %s (id %s, %s, KMS %s)\n",
		    cf_ks_tenant_name(t), cf_ks_tenant_id_hex(t),
		    cf_ks_cipher_name(cf_ks_tenant_cipher(t)),
		    cf_ks_tenant_kms(t));
	cf_ks_tenant_free(t);
	return CF_EXIT_OK;
}

static int
tenant_list(struct tl_ctx *ctx, int argc, char **argv)
{
	struct cf_ks_home *home;
	char **names = NULL;
	size_t n = 0, i;
	json_t *arr = NULL;
	int rc, ret = CF_EXIT_OK;

	(void)argv;
	if (argc != 1)
		return tl_usage(&tl_cmd_tenant, "tenant list takes no "
		    "arguments");
	home = tl_home(ctx, 0);
	rc = cf_ks_tenant_list(home, &names, &n);
	if (rc < 0)
		return tl_fail(rc, "tenant list");
	if (ctx->json)
		arr = json_array();
	for (i = 0; i < n; i++) {
		struct cf_ks_tenant *t;

		rc = cf_ks_tenant_open(home, names[i], &t);
		if (rc < 0) {
			ret = tl_fail(rc, names[i]);
			continue;
		}
		if (ctx->json) {
			json_array_append_new(arr, json_pack("{s:s, s:s, s:s, "
			    "s:s, s:b}", "name", cf_ks_tenant_name(t), "id",
			    cf_ks_tenant_id_hex(t), "cipher",
			    cf_ks_cipher_name(cf_ks_tenant_cipher(t)), "kms",
			    cf_ks_tenant_kms(t), "shredded",
			    cf_ks_tenant_shredded(t)));
		} else {
			printf("%-24s %s  %-18s %s%s\n", cf_ks_tenant_name(t),
			    cf_ks_tenant_id_hex(t),
			    cf_ks_cipher_name(cf_ks_tenant_cipher(t)),
			    cf_ks_tenant_kms(t), cf_ks_tenant_shredded(t) ?
			    "  (shredded)" : "");
		}
		cf_ks_tenant_free(t);
	}
	if (ctx->json)
		tl_print_json(arr);
	cf_ks_tenant_list_free(names, n);
	return ret;
}

static int
tenant_show(struct tl_ctx *ctx, int argc, char **argv)
{
	struct cf_ks_tenant *t;
	int rc;

	if (argc != 2)
		return tl_usage(&tl_cmd_tenant, "tenant show: give one NAME");
	rc = cf_ks_tenant_open(tl_home(ctx, 0), argv[1], &t);
	if (rc < 0)
		return tl_fail(rc, NULL);
	if (ctx->json)
		tl_print_json(tenant_json(t));
	else
		print_tenant(t);
	cf_ks_tenant_free(t);
	return CF_EXIT_OK;
}

static int
rotate_one(struct tl_ctx *ctx, const char *name, const char *to)
{
	struct cf_ks_tenant *t;
	char kek[160];
	int rc;

	rc = cf_ks_tenant_open(tl_home(ctx, 0), name, &t);
	if (rc < 0)
		return tl_fail(rc, NULL);
	rc = cf_ks_tenant_rotate_kek(t, to);
	if (rc < 0) {
		cf_ks_tenant_free(t);
		return tl_fail(rc, name);
	}
	if (ctx->verbose >= 0 && !ctx->json &&
	    cf_ks_tenant_describe_kek(t, 0, kek, sizeof(kek)) == 0)
		printf("%s: root keys rewrapped under %s\n", name, kek);
	cf_ks_tenant_free(t);
	return CF_EXIT_OK;
}

static int
tenant_rotate_kek(struct tl_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "all", no_argument, NULL, 'a' },
		{ "to", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	const char *to = NULL;
	char **names = NULL;
	size_t n = 0, i;
	int c, all = 0, rc, ret = CF_EXIT_OK;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'a')
			all = 1;
		else if (c == 't')
			to = optarg;
		else
			return tl_usage(&tl_cmd_tenant, "tenant rotate-kek: "
			    "bad option");
	}
	if (!(all && optind == argc) && !(!all && optind == argc - 1))
		return tl_usage(&tl_cmd_tenant, "tenant rotate-kek: give one "
		    "NAME or --all");
	if (!all)
		return rotate_one(ctx, argv[optind], to);
	rc = cf_ks_tenant_list(tl_home(ctx, 0), &names, &n);
	if (rc < 0)
		return tl_fail(rc, "tenant list");
	for (i = 0; i < n; i++) {
		rc = rotate_one(ctx, names[i], to);
		if (rc != CF_EXIT_OK)
			ret = rc;
	}
	cf_ks_tenant_list_free(names, n);
	return ret;
}

static int
tenant_shred(struct tl_ctx *ctx, int argc, char **argv)
{
	struct cf_ks_tenant *t;
	int rc;

	if (argc != 3 || strcmp(argv[2], "--yes") != 0)
		return tl_usage(&tl_cmd_tenant, "tenant shred destroys every "
		    "key of the tenant and cannot be undone: confirm with "
		    "'coffer tenant shred NAME --yes'");
	rc = cf_ks_tenant_open(tl_home(ctx, 0), argv[1], &t);
	if (rc < 0)
		return tl_fail(rc, NULL);
	rc = cf_ks_tenant_shred(t);
	if (rc < 0) {
		cf_ks_tenant_free(t);
		return tl_fail(rc, argv[1]);
	}
	if (ctx->verbose >= 0)
		printf("%s: keys destroyed; its data and backups can no longer "
		    "be decrypted\n", argv[1]);
	cf_ks_tenant_free(t);
	return CF_EXIT_OK;
}

static int
tenant_rotate_key(struct tl_ctx *ctx, int argc, char **argv)
{
	struct cf_ks_tenant *t;
	uint32_t v = 0;
	int rc;

	if (argc != 2)
		return tl_usage(&tl_cmd_tenant, "tenant rotate-key: give one "
		    "NAME");
	rc = cf_ks_tenant_open(tl_home(ctx, 0), argv[1], &t);
	if (rc < 0)
		return tl_fail(rc, NULL);
	rc = cf_ks_tenant_rotate_key(t, &v);
	if (rc < 0) {
		cf_ks_tenant_free(t);
		return tl_fail(rc, argv[1]);
	}
	if (ctx->json)
		tl_print_json(json_pack("{s:s, s:I}", "tenant", argv[1],
		    "key_version", (json_int_t)v));
	else if (ctx->verbose >= 0)
		printf("%s: new root key version %u; 'coffer tenant reencrypt "
		    "%s' rewrites the files under older ones\n", argv[1], v,
		    argv[1]);
#ifdef CF_HAVE_FS
	tl_rotate_key_notify(ctx, t);
#endif
	cf_ks_tenant_free(t);
	return CF_EXIT_OK;
}
