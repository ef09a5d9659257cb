/*
 * ks_kms.c - the registry of KMS providers.
 *
 * A provider is named by a [kms.NAME] section of coffer.conf whose "type"
 * selects an ops table; "local" needs no section and is the file provider.
 * Opened providers are cached in the home for the life of the process so
 * a KEK is unlocked at most once.  Adding a provider means adding its ops
 * table to the list below; callers never change.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ks_int.h"

static const struct ks_kms_ops *const providers[] = {
	&ks_kms_file_ops,
#ifdef CF_HAVE_PKCS11
	&ks_kms_pkcs11_ops,
#endif
	&ks_kms_kmip_ops,
};

/* Types that are planned but not built yet, for a precise message. */
static const char *const planned[] = { "pkcs11", "aws-kms",
	"vault-transit" };

const char *
ks_kms_conf(const struct ks_kms *kms, const char *key)
{
	return cf_ks_config_get(kms->home->cfg, kms->section, key);
}

int
ks_kms_get(struct cf_ks_home *home, const char *name, struct ks_kms **out)
{
	const struct ks_kms_ops *ops = NULL;
	struct ks_kms *kms;
	char section[CF_KS_NAME_MAX + 8];
	const char *type;
	size_t i;
	int rc;

	*out = NULL;
	if (!cf_ks_name_valid(name))
		return ks_err(-EINVAL, "invalid KMS name");
	for (i = 0; i < home->nkms; i++) {
		if (strcmp(home->kms[i]->name, name) == 0) {
			*out = home->kms[i];
			return 0;
		}
	}
	snprintf(section, sizeof(section), "kms.%s", name);
	type = cf_ks_config_get(home->cfg, section, "type");
	if (type == NULL) {
		if (strcmp(name, "local") != 0)
			return ks_err(-ENOENT, "no KMS provider '%s': add a "
			    "[kms.%s] section to coffer.conf", name, name);
		type = "file";
	}
	for (i = 0; i < sizeof(providers) / sizeof(providers[0]); i++)
		if (strcmp(providers[i]->type, type) == 0)
			ops = providers[i];
	if (ops == NULL) {
		for (i = 0; i < sizeof(planned) / sizeof(planned[0]); i++)
			if (strcmp(planned[i], type) == 0)
				return ks_err(-ENOTSUP, "KMS '%s': type '%s' "
				    "is not built into this coffer yet", name,
				    type);
		return ks_err(-EINVAL, "KMS '%s': unknown type '%.32s'", name,
		    type);
	}
	if (home->nkms == KS_HOME_MAX_KMS)
		return ks_err(-EMFILE, "too many KMS providers in use");
	kms = calloc(1, sizeof(*kms));
	if (kms == NULL)
		return -ENOMEM;
	kms->ops = ops;
	kms->home = home;
	snprintf(kms->name, sizeof(kms->name), "%s", name);
	snprintf(kms->section, sizeof(kms->section), "%s", section);
	rc = ops->open(kms);
	if (rc < 0) {
		free(kms);
		return rc;
	}
	home->kms[home->nkms++] = kms;
	*out = kms;
	return 0;
}

void
ks_kms_close_all(struct cf_ks_home *home)
{
	size_t i;

	for (i = 0; i < home->nkms; i++) {
		home->kms[i]->ops->close(home->kms[i]);
		free(home->kms[i]);
		home->kms[i] = NULL;
	}
	home->nkms = 0;
}
