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
#define FS_STORE_CTL "cf.ctl"		/* the daemon's control socket */

/*
 * Snapshots of a mounted store (fs_snap.c).  freeze(arg, 1) must block
 * every mutating operation until freeze(arg, 0).  fs_snap_cow is called
 * by every operation about to change the inode (dev, ino), open as obj
 * (O_PATH), while that operation holds the freeze's read side.
 */
struct fs_snap;
CF_MUST_CHECK int fs_snap_new(struct fs_snap **out, const char *backing,
    int (*freeze)(void *arg, int on), void *arg);
CF_MUST_CHECK int fs_snap_start(struct fs_snap *s);
void fs_snap_free(struct fs_snap *s);
int fs_snap_active(const struct fs_snap *s);
int fs_snap_cow(struct fs_snap *s, dev_t dev, ino_t ino, int obj);

#endif /* FS_INT_H */
