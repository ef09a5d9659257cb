/*
 * fs_int.h - private declarations of the encrypted store.
 */
#ifndef FS_INT_H
#define FS_INT_H

#include "cf_fs.h"

struct cf_fs_keys {
	enum cf_ks_cipher cipher;	/* for new files */
	uint32_t key_version;		/* for new files */
	struct cf_secbuf *content;	/* per-file keys derive from this */
	struct cf_secbuf *name_mac;	/* SIV tag key for names */
	struct cf_secbuf *name_enc;	/* stream key for names */
	struct cf_ks_aead *meta;	/* symlink targets, store marker */
};

#define FS_STORE_MARKER "cf.store"	/* proves which tenant owns a store */
#define FS_STORE_DATA "data"		/* the tenant's root directory */

#endif /* FS_INT_H */
