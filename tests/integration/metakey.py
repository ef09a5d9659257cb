#!/usr/bin/python3
"""metakey.py - retiring root key version 1 (docs/kms.md, Retiring
version 1): `tenant reencrypt NAME --metadata` moves a store's names
(short and long, with sidecars), symlink targets (short and long, with
links/), xattrs and generation values to the newest version and
rewrites the marker last; killed with SIGKILL at several points and
rerun; a mount, a backup and a content re-encryption refused while its
journal is pending; a damaged journal refused with nothing changed;
every name, target, xattr, hard link and content reading back through
a real mount and the offline reader; backups before and after restoring;
`retire-key 1` refused with the command to run, then (the repository
gone) allowed, and the store still mounting.  TAP; needs root and
/dev/fuse."""
import json
import os
import struct
import subprocess
import time

import cftest

cftest.need_fuse()
tap = cftest.Tap()
ok = tap.ok
h = cftest.Home("cf_mk.", "metakey test passphrase")
TDIR = os.path.join(h.home, "tenants", "acme")
STORE = os.path.join(TDIR, "store")
DATA = os.path.join(STORE, "data")
JOURNAL = os.path.join(STORE, "cf.metakey")
MARKER = os.path.join(STORE, "cf.store")
REPO = os.path.join(h.home, "repos", "acme")
LONG = "L" * 200
LONGDIR = "D" * 230
XLONG = "user." + "x" * 150


def tree(top):
    """Path -> ("f", sha256, xattrs, link group) / ("l", target) /
    ("d", xattrs) / ("p",); hard links share a group (first path)."""
    out, seen = {}, {}
    for rel, p in cftest.entries(top, ordered=True):
        st = os.lstat(p)
        grp = seen.setdefault((st.st_ino, st.st_mode & 0o170000), rel)
        if os.path.islink(p):
            out[rel] = ("l", os.readlink(p), grp, st.st_nlink)
        elif os.path.isdir(p):
            out[rel] = ("d", cftest.xattrs(p))
        elif not os.path.isfile(p):
            out[rel] = ("p",)
        else:
            out[rel] = ("f", cftest.sha256_file(p), cftest.xattrs(p), grp)
    return out


def norm(t):
    """t without the link groups of symlinks (see links/ below)."""
    return {k: v[:2] if v[0] == "l" else v for k, v in t.items()}


def diff(a, b):
    return [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)][:8]


def backing():
    """Every backing path of the store with its bytes or target."""
    out = {}
    for rel, p in cftest.entries(STORE):
        if os.path.islink(p):
            out[rel] = "->" + os.readlink(p)
        elif os.path.isfile(p):
            out[rel] = cftest.sha256_file(p)
            try:
                out[rel] += repr(sorted(cftest.xattrs(p).items()))
            except OSError:
                pass
        else:
            out[rel] = "dir"
    return out


def populate(mp):
    os.makedirs(os.path.join(mp, "dir", "sub"))
    os.makedirs(os.path.join(mp, LONGDIR, "inner"))
    with open(os.path.join(mp, "small"), "w") as f:
        f.write("hello\n")
    with open(os.path.join(mp, "dir", "big"), "wb") as f:
        f.write(os.urandom(300000))
    with open(os.path.join(mp, "dir", "sub", LONG), "wb") as f:
        f.write(os.urandom(5000))
    with open(os.path.join(mp, LONGDIR, "inner", LONG + "2"), "wb") as f:
        f.write(b"in a long directory\n")
    for i in range(40):
        with open(os.path.join(mp, "dir", "n%02d" % i), "w") as f:
            f.write("file %d\n" % i)
    with open(os.path.join(mp, "empty"), "wb"):
        pass
    os.symlink("small", os.path.join(mp, "link"))
    os.symlink("t/" * 2000, os.path.join(mp, "longlink"))
    os.symlink("x/" * 1900, os.path.join(mp, "dir", "S" * 190))
    os.setxattr(os.path.join(mp, "small"), "user.colour", b"blue")
    os.setxattr(os.path.join(mp, "small"), XLONG, os.urandom(3000))
    os.setxattr(os.path.join(mp, "dir"), "user.kind", b"a directory")
    os.setxattr(mp, "user.top", b"root xattr")
    os.link(os.path.join(mp, "dir", "big"), os.path.join(mp, "hard"))
    os.link(os.path.join(mp, "dir", "big"),
            os.path.join(mp, LONGDIR, "H" * 220))
    # a hard link of a symlink (FUSE link(2) takes one)
    os.link(os.path.join(mp, "longlink"), os.path.join(mp, "longlink2"),
            follow_symlinks=False)
    os.mkfifo(os.path.join(mp, "fifo"))


def marker_version():
    with open(MARKER, "rb") as f:
        b = f.read()
    return 1 if len(b) == 56 else struct.unpack_from("<I", b)[0] \
        if len(b) == 60 else None


def events(name):
    out = h.coffer("audit", "show", "--tenant", "acme").stdout
    return [json.loads(l) for l in out.splitlines()
            if l.strip() and json.loads(l).get("event") == name]


def meta(*extra, env=None):
    return h.coffer("tenant", "reencrypt", "acme", "--metadata", *extra,
                    env=env)


def kill_env(at):
    return dict(h.env, COFFER_TEST_METAKEY_KILL_AT=str(at))


try:
    r = h.coffer("tenant", "create", "acme", "--cipher", "aes-256-gcm")
    ok(r.returncode == 0, "tenant create", r.stderr)
    p = h.mount("acme")
    populate(h.mp)
    before = tree(h.mp)
    h.umount(p)
    ok(marker_version() == 1, "a new store's marker is version 1's")
    r = h.coffer("backup", "acme")
    ok(r.returncode == 0, "backup before the rotation", r.stderr)
    snap1 = json.loads(h.coffer("--json", "snapshots", "acme").stdout)[0]
    r = meta()
    ok(r.returncode == 0 and "0 renamed" in r.stdout and
       not os.path.exists(JOURNAL),
       "reencrypt --metadata with one version has nothing to do",
       r.stdout + r.stderr)
    r = h.coffer("tenant", "reencrypt", "acme", "--bogus")
    ok(r.returncode == 2, "reencrypt with a bad option is a usage error")

    r = h.coffer("tenant", "rotate-key", "acme")
    ok(r.returncode == 0, "rotate-key to 2", r.stderr)
    r = h.coffer("tenant", "reencrypt", "acme")
    ok(r.returncode == 0, "reencrypt (contents) to 2", r.stdout + r.stderr)
    r = h.coffer("tenant", "retire-key", "acme", "1")
    ok(r.returncode == 1 and
       "coffer tenant reencrypt acme --metadata" in r.stderr,
       "retire-key 1 refused, naming the command to run", r.stderr)

    # mounted: refused (the run is offline only)
    p = h.mount("acme")
    r = meta()
    ok(r.returncode == 1 and "unmount it first" in r.stderr,
       "reencrypt --metadata of a mounted store is refused", r.stderr)
    h.umount(p)

    # killed at several points, each rerun going on
    b0 = backing()
    r = meta(env=kill_env(3))
    ok(r.returncode == -9 and os.path.exists(JOURNAL) and
       marker_version() == 1, "killed after 3 changes: journal, marker 1",
       r.returncode)
    try:
        p = h.mount("acme")
        h.umount(p)
        ok(False, "a mount with a pending journal is refused")
    except RuntimeError as e:
        ok("being re-keyed" in str(e) and "--metadata" in str(e),
           "a mount with a pending journal is refused, naming the command",
           e)
    r = h.coffer("backup", "acme")
    ok(r.returncode != 0 and "--metadata" in r.stderr,
       "a backup with a pending journal is refused", r.stderr)
    r = h.coffer("tenant", "reencrypt", "acme")
    ok(r.returncode == 1 and "--metadata" in r.stderr,
       "a content re-encryption with a pending journal is refused",
       r.stderr)
    r = h.coffer("tenant", "retire-key", "acme", "1")
    ok(r.returncode == 1 and "pending" in r.stderr,
       "retire-key with a pending journal is refused", r.stderr)

    # a damaged journal: a clear error, nothing changed
    with open(JOURNAL, "rb") as f:
        good = f.read()
    ok(len(good) == 32 and good[:8] == b"\x89CFMK\r\n\x1a" and
       struct.unpack_from("<II", good, 16) == (1, 2),
       "the journal: magic, from 1, to 2")
    mid = backing()
    for bad in (good[:31], good + b"\0", bytes([good[0] ^ 1]) + good[1:],
                good[:20] + b"\x07" + good[21:], b""):
        with open(JOURNAL, "wb") as f:
            f.write(bad)
        r = meta()
        if not (r.returncode == 1 and "damaged" in r.stderr and
                "nothing was changed" in r.stderr):
            break
    ok(r.returncode == 1 and "damaged" in r.stderr and
       "nothing was changed" in r.stderr,
       "a damaged journal is refused with a clear message", r.stderr)
    with open(JOURNAL, "wb") as f:
        f.write(good)
    now = backing()
    now.pop("cf.metakey", None)
    mid.pop("cf.metakey", None)
    ok(now == mid, "the store is unchanged by the refused runs")
    ok(mid != b0, "the killed run had changed some entries")

    r = meta(env=kill_env(10))
    ok(r.returncode == -9, "killed again after 10 changes", r.returncode)
    r = meta(env=kill_env(25))
    ok(r.returncode == -9, "killed again after 25 changes", r.returncode)
    r = meta(env=kill_env("marker"))
    ok(r.returncode == -9 and os.path.exists(JOURNAL) and
       marker_version() == 2,
       "killed after the marker was rewritten: journal still there",
       r.returncode)
    r = meta()
    ok(r.returncode == 0 and not os.path.exists(JOURNAL) and
       marker_version() == 2, "the rerun finishes: journal gone, marker 2",
       r.stdout + r.stderr)
    with open(MARKER, "rb") as f:
        ok(len(f.read()) == 60 and os.stat(MARKER).st_mode & 0o777 == 0o400,
           "the marker: 60 bytes, mode 0400")
    leftovers = [os.path.join(r_, f_) for r_, _, fs_ in os.walk(STORE)
                 for f_ in fs_ if f_.startswith("cf.mk") or
                 f_.startswith("cf.metakey")]
    ok(leftovers == [], "no temporary file left", leftovers)
    nlinks = len(os.listdir(os.path.join(STORE, "links")))
    # 2 or 3: a run killed between the two names of the hard-linked
    # symlink longlink makes them two symlinks (docs/format/fs.md)
    ok(nlinks in (2, 3), "links/: one file per long target (old ones "
       "swept)", os.listdir(os.path.join(STORE, "links")))
    r = meta()
    ok(r.returncode == 0 and "0 renamed" in r.stdout and
       " 0 symlink" in r.stdout, "a third run has nothing to do",
       r.stdout)
    ev = events("tenant.reencrypt_metadata")
    ok(len(ev) >= 3 and ev[-1].get("result") == "complete" and
       ev[-1].get("key_version") == 2,
       "audited tenant.reencrypt_metadata", ev[-1:] if ev else ev)

    # every name, target, xattr, hard link and content reads back
    p = h.mount("acme")
    after = norm(tree(h.mp))
    ok(after == norm(before), "every name, target, xattr, hard link and content "
       "reads back through the mount",
       [k for k in set(before) | set(after)
        if after.get(k) != norm(before).get(k)][:10])
    with open(os.path.join(h.mp, "new-after"), "w") as f:
        f.write("written after the re-keying\n")
    os.setxattr(os.path.join(h.mp, "new-after"), "user.v", b"2")
    os.symlink("y/" * 1900, os.path.join(h.mp, "newlong"))
    os.rename(os.path.join(h.mp, "dir", "n00"),
              os.path.join(h.mp, LONGDIR, "moved"))
    now_tree = tree(h.mp)
    h.umount(p)
    r = subprocess.run([os.environ["FS_READER_DUMP"], h.home, "acme"],
                       capture_output=True, text=True, env=h.env)
    ok(r.returncode == 0 and LONG.encode().hex() in r.stdout and
       b"moved".hex() in r.stdout,
       "the offline reader reads the re-keyed store",
       r.stderr + r.stdout[:2000])

    # backups: the old snapshot restores, a new one too
    r = h.coffer("backup", "acme")
    ok(r.returncode == 0, "backup after the re-keying (offline reader)",
       r.stderr)
    out = os.path.join(h.t, "r1")
    r = h.coffer("restore", "acme", snap1["id"], "--target", out)
    ok(r.returncode == 0 and norm(tree(out)) == norm(before),
       "the snapshot from before restores",
       r.stderr + str(diff(norm(tree(out)), norm(before))))
    out = os.path.join(h.t, "r2")
    r = h.coffer("restore", "acme", "latest", "--target", out)
    ok(r.returncode == 0 and norm(tree(out)) == norm(now_tree),
       "the snapshot after the re-keying restores",
       r.stderr + str(diff(norm(tree(out)), norm(now_tree))))

    # retire 1: the repository (created under 1) still needs it
    r = h.coffer("tenant", "retire-key", "acme", "1")
    ok(r.returncode == 1 and "config of the backup repository" in r.stderr
       and "'coffer tenant reencrypt acme --repository'" in r.stderr,
       "retire-key 1 refused while the repository's config is under 1, "
       "naming the command",
       r.stderr)
    os.rename(REPO, REPO + ".old")
    r = h.coffer("tenant", "retire-key", "acme", "1")
    ok(r.returncode == 0 and
       not os.path.exists(os.path.join(TDIR, "keys", "v1.wk")),
       "retire-key 1 once contents, metadata and repository are off it",
       r.stdout + r.stderr)
    p = h.mount("acme")
    ok(tree(h.mp) == now_tree, "the store mounts and reads after retiring 1")
    with open(os.path.join(h.mp, "small"), "a") as f:
        f.write("more\n")
    now_tree = tree(h.mp)
    h.umount(p)
    r = h.coffer("backup", "acme")
    ok(r.returncode == 0, "a backup (new repository) after retiring 1",
       r.stderr)
    out = os.path.join(h.t, "r3")
    r = h.coffer("restore", "acme", "latest", "--target", out)
    ok(r.returncode == 0 and norm(tree(out)) == norm(now_tree),
       "and its restore", r.stderr + str(diff(norm(tree(out)),
                                              norm(now_tree))))
    p = h.mount("acme")
    os.symlink("z/" * 1900, os.path.join(h.mp, "hl1"))
    os.link(os.path.join(h.mp, "hl1"), os.path.join(h.mp, "hl2"),
            follow_symlinks=False)
    now_tree = tree(h.mp)
    h.umount(p)
    r = h.coffer("tenant", "rotate-key", "acme")
    ok(r.returncode == 0, "rotate-key to 3 after retiring 1", r.stderr)
    t0 = time.time()
    r = meta()
    ok(r.returncode == 0 and marker_version() == 3,
       "metadata from 2 to 3 (version 1 retired)", r.stdout + r.stderr)
    print("# re-keyed %s in %.2f s" % (r.stdout.strip(), time.time() - t0))
    p = h.mount("acme")
    t3 = tree(h.mp)
    ok(t3 == now_tree, "the store reads under version 3",
       [k for k in set(t3) | set(now_tree) if t3.get(k) != now_tree.get(k)])
    ok(t3["hl2"][2] == "hl1" and t3["hl2"][3] == 2,
       "a hard link between symlinks is kept by an uninterrupted run")
    h.umount(p)

    # [FS-MKEY-6] no room for two copies of an xattr: killed between the
    # old one's removal and the new one's set, the stash brings it back
    r = h.coffer("tenant", "create", "beta")
    ok(r.returncode == 0, "tenant create beta", r.stderr)
    p = h.mount("beta")
    big = os.urandom(3000)
    os.mkdir(os.path.join(h.mp, "bigx"))
    os.setxattr(os.path.join(h.mp, "bigx"), "user.big", big)
    h.umount(p)
    r = h.coffer("tenant", "rotate-key", "beta")
    ok(r.returncode == 0, "rotate-key beta", r.stderr)
    bdata = os.path.join(h.home, "tenants", "beta", "store", "data")
    r = h.coffer("tenant", "reencrypt", "beta", "--metadata",
                 env=kill_env(2))
    sub = [n for n in os.listdir(bdata) if not n.startswith("cf.")]
    stored = [x for x in os.listxattr(os.path.join(bdata, sub[0]))
              if x.startswith("user.cf.")] if len(sub) == 1 else None
    ok(r.returncode == -9 and os.path.exists(os.path.join(bdata,
                                                          "cf.mk.x")) and
       stored == [], "killed with the old xattr removed and kept in the "
       "stash cf.mk.x", (r.returncode, os.listdir(bdata), stored))
    r = h.coffer("tenant", "reencrypt", "beta", "--metadata")
    ok(r.returncode == 0 and "1 xattrs" in r.stdout and
       not os.path.exists(os.path.join(bdata, "cf.mk.x")),
       "the rerun puts it back from the stash and re-keys it",
       r.stdout + r.stderr)
    p = h.mount("beta")
    ok(os.getxattr(os.path.join(h.mp, "bigx"), "user.big") == big,
       "the xattr reads back")
    h.umount(p)

    # damage no key opens (a planted file, a planted directory with a
    # symlink for its IV) is counted and left; the rest is re-keyed
    junk = os.path.join(bdata, "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQQ")
    with open(junk, "w") as f:
        f.write("x")
    bsub = os.path.join(bdata, [n for n in os.listdir(bdata)
                                if not n.startswith("cf.") and
                                os.path.isdir(os.path.join(bdata, n))][0])
    os.makedirs(os.path.join(bsub, "inner"))
    os.symlink("/etc/passwd", os.path.join(bsub, "inner", "cf.diriv"))
    r = h.coffer("tenant", "rotate-key", "beta")
    r = h.coffer("tenant", "reencrypt", "beta", "--metadata")
    ok(r.returncode == 0 and "open under no live key version" in r.stderr
       and os.path.exists(junk), "damage is counted and left",
       r.stdout + r.stderr)
    p = h.mount("beta")
    ok(os.getxattr(os.path.join(h.mp, "bigx"), "user.big") == big,
       "the rest reads under version 3")
    h.umount(p)
finally:
    h.cleanup()
tap.done()
