#!/usr/bin/python3
"""rotate_key.py - root key rotation on a real mount (docs/kms.md, Root key
rotation): `tenant rotate-key` while a writer runs, new files under the
new version (header bytes in the backing store), `tenant reencrypt`
killed with SIGKILL part-way and rerun, every file (long names,
symlinks, xattrs, hard links, holes) reading back, no backing file left
on an old version, backups and restores of snapshots taken before the
rotation, the key versions each snapshot records ([BK-SNAP-2]),
`tenant retire-key` refused while anything needs a version (naming the
snapshots that record it) and shredding it otherwise, and the audit
records.  TAP output; needs root
and /dev/fuse."""
import fcntl
import json
import os
import struct
import subprocess
import threading
import time

import cftest

cftest.need_fuse()
tap = cftest.Tap()
ok = tap.ok
h = cftest.Home("cf_rk.", "rotate key test passphrase")
TDIR = os.path.join(h.home, "tenants", "acme")
STORE = os.path.join(TDIR, "store")
DATA = os.path.join(STORE, "data")
MAGIC = b"\x89CFFS\r\n\x1a"
LONG = "L" * 200


def versions():
    """Key version -> number of regular backing files under it."""
    out = {}
    for root, _, files in os.walk(DATA):
        for name in files:
            if name.startswith("cf.") and not (
                    name.startswith("cf.L.") and not name.endswith(".n")):
                continue
            path = os.path.join(root, name)
            if os.path.islink(path):
                continue
            with open(path, "rb") as f:
                hdr = f.read(32)
            if len(hdr) == 32 and hdr[:8] == MAGIC:
                v = struct.unpack_from("<I", hdr, 12)[0]
                out[v] = out.get(v, 0) + 1
    return out


def tree(top):
    """Path -> ("f", sha256, xattrs) / ("l", target) / ("d",)."""
    out = {}
    for rel, p in cftest.entries(top):
        if os.path.islink(p):
            out[rel] = ("l", os.readlink(p))
        elif os.path.isdir(p):
            out[rel] = ("d",)
        else:
            out[rel] = ("f", cftest.sha256_file(p), cftest.xattrs(p))
    return out


def show():
    r = h.coffer("--json", "tenant", "show", "acme")
    return json.loads(r.stdout) if r.returncode == 0 else {}


def events(name):
    out = h.coffer("audit", "show", "--tenant", "acme").stdout
    return [json.loads(l) for l in out.splitlines()
            if l.strip() and json.loads(l).get("event") == name]


REPO = os.path.join(h.home, "repos", "acme")


def snap_ids():
    r = h.coffer("--json", "snapshots", "acme")
    return [x["id"] for x in json.loads(r.stdout)] if r.returncode == 0 \
        else []


def snap_version(sid):
    """The key_version in the header of snapshot sid's object."""
    d = os.path.join(REPO, "snapshots")
    for name in os.listdir(d):
        if name.startswith(sid):
            with open(os.path.join(d, name), "rb") as f:
                return struct.unpack_from("<I", f.read(32), 12)[0]
    return None


def s_retired():
    return show().get("retired_versions")


def snap_kv():
    """Snapshot id -> its recorded key_versions (coffer snapshots --json)."""
    r = h.coffer("--json", "snapshots", "acme")
    return {x["id"]: x.get("key_versions") for x in json.loads(r.stdout)} \
        if r.returncode == 0 else {}


def populate(mp):
    os.makedirs(os.path.join(mp, "dir", "sub"))
    with open(os.path.join(mp, "small"), "w") as f:
        f.write("hello\n")
    with open(os.path.join(mp, "dir", "big"), "wb") as f:
        f.write(os.urandom(300000))
    with open(os.path.join(mp, "large"), "wb") as f:
        f.write(os.urandom(24 << 20))
    with open(os.path.join(mp, "dir", "sub", LONG), "wb") as f:
        f.write(os.urandom(5000))
    with open(os.path.join(mp, "sparse"), "wb") as f:
        f.seek(3 * 4096 + 17)
        f.write(b"end")
    with open(os.path.join(mp, "empty"), "wb"):
        pass
    os.symlink("small", os.path.join(mp, "link"))
    os.symlink("t/" * 1500, os.path.join(mp, "longlink"))
    os.setxattr(os.path.join(mp, "small"), "user.colour", b"blue")
    os.link(os.path.join(mp, "dir", "big"), os.path.join(mp, "hard"))


try:
    r = h.coffer("tenant", "create", "acme", "--cipher",
                 "xchacha20-poly1305")
    ok(r.returncode == 0, "tenant create", r.stderr)
    r = h.coffer("tenant", "rotate-key")
    ok(r.returncode == 2, "rotate-key without NAME is a usage error")
    r = h.coffer("tenant", "retire-key", "acme", "two")
    ok(r.returncode == 2, "retire-key with a bad VERSION is a usage error")
    r = h.coffer("tenant", "retire-key", "acme", "7")
    ok(r.returncode == 1 and "no key version 7" in r.stderr,
       "retire-key of an unknown version", r.stderr)
    r = h.coffer("tenant", "rotate-key", "nosuch")
    ok(r.returncode == 1, "rotate-key of an unknown tenant", r.stderr)
    p = h.mount("acme")
    populate(h.mp)
    before = tree(h.mp)
    h.umount(p)
    ok(versions() == {1: 6}, "six files under key version 1",
       versions())
    r = h.coffer("backup", "acme")
    ok(r.returncode == 0, "backup before the rotation", r.stderr)
    snap1 = h.coffer("--json", "snapshots", "acme").stdout
    ok(json.loads(snap1)[0].get("key_versions") == [1],
       "the snapshot records the key versions it needs: [1]", snap1)

    # rotate-key and re-encryption while a writer appends and rewrites
    # through the mount
    p = h.mount("acme")
    stop = threading.Event()
    werr = []
    wpath = os.path.join(h.mp, "writer.log")

    def writer():
        n = 0
        try:
            while not stop.is_set():
                with open(wpath, "a") as f:
                    f.write("line %d\n" % n)
                if n % 50 == 0:
                    with open(os.path.join(h.mp, "rewrite"), "w") as f:
                        f.write("round %d\n" % n)
                n += 1
        except OSError as e:
            werr.append(e)
        werr.append(n)

    th = threading.Thread(target=writer)
    th.start()
    time.sleep(0.3)
    r = h.coffer("tenant", "rotate-key", "acme")
    ok(r.returncode == 0 and "version 2" in r.stdout and
       "writes new files under key version 2 now" in r.stdout,
       "rotate-key while a writer runs: the daemon switches at once",
       r.stdout + r.stderr)
    with open(os.path.join(h.mp, "new"), "wb") as f:
        f.write(b"after the rotation\n")
    v = versions()
    ok(v.get(2, 0) >= 1 and v.get(1, 0) >= 5,
       "a file created after the rotation is version 2 at once", v)
    time.sleep(0.2)
    r = h.coffer("tenant", "reencrypt", "acme")
    ok(r.returncode == 0 and " 0 files still" in r.stdout.replace(";", ""),
       "reencrypt of the mounted store while the writer runs",
       r.stdout + r.stderr)
    time.sleep(0.2)
    stop.set()
    th.join()
    ok(len(werr) == 1 and werr[0] > 0, "the writer saw no error", werr)
    nlines = werr[-1]
    with open(wpath) as f:
        lines = f.read().splitlines()
    ok(lines == ["line %d" % i for i in range(nlines)],
       "the writer's file reads back whole", len(lines))
    ok(tree(h.mp).items() >= before.items(),
       "every file reads back after the online re-encryption")
    v = versions()
    ok(list(v) == [2], "no backing file left on version 1", v)
    s = show()
    ok(s.get("key_version") == 2 and s.get("key_versions") == [1, 2] and
       s.get("retired_versions") == [], "tenant show: versions 1 2", s)
    ev = events("tenant.rotate_key")
    ok(len(ev) == 1 and ev[0].get("key_version") == 2 and
       ev[0].get("previous") == 1, "audited tenant.rotate_key", ev)
    ev = events("tenant.reencrypt")
    ok(len(ev) == 1 and ev[0].get("mounted") == "yes" and
       ev[0].get("old") == 0 and ev[0].get("result") == "complete",
       "audited tenant.reencrypt (mounted)", ev)
    # a backup now is written under version 2 (its snapshot object)
    only = os.urandom(70000)
    ids = snap_ids()
    r = h.coffer("backup", "acme", "--stdin", "--name", "only-v2.bin",
                 stdin=only, text=False)
    sid2 = [i for i in snap_ids() if i not in ids]
    ok(r.returncode == 0 and len(sid2) == 1 and
       snap_version(sid2[0]) == 2, "a backup after the rotation is "
       "written under version 2", r.stderr)
    # its blobs are new (version 2 packs); the repository was created
    # under 1 (id and chunker keys): [BK-SNAP-2]
    kv = snap_kv()
    ok(kv.get(sid2[0]) == [1, 2],
       "the version 2 snapshot records key versions [1, 2]", kv)
    h.umount(p)
    r = h.coffer("tenant", "retire-key", "acme", "2")
    ok(r.returncode == 1 and "newest" in r.stderr,
       "retire-key refuses the newest version", r.stderr)

    # offline: rotate to 3, reencrypt killed after two files, rerun
    r = h.coffer("tenant", "rotate-key", "acme")
    ok(r.returncode == 0 and "now" not in r.stdout, "rotate-key to 3, "
       "unmounted", r.stdout + r.stderr)
    nfiles = sum(versions().values())
    env = dict(h.env, COFFER_TEST_REKEY_KILL_AT="2")
    r = h.coffer("tenant", "reencrypt", "acme", env=env)
    ok(r.returncode == -9, "reencrypt killed part-way (SIGKILL)",
       r.returncode)
    ok(os.path.islink(os.path.join(STORE, "cf.rekey")),
       "the journal names the file being copied")
    v = versions()
    ok(v.get(3, 0) >= 1 and v.get(2, 0) >= 1, "part done", v)
    r = h.coffer("tenant", "retire-key", "acme", "2")
    ok(r.returncode == 1 and "files of the store still use" in r.stderr,
       "retire-key refuses a version files still use", r.stderr)
    r = h.coffer("tenant", "reencrypt", "acme")
    ok(r.returncode == 0 and " 0 files still" in r.stdout.replace(";", ""),
       "the rerun finishes", r.stdout + r.stderr)
    ok(versions() == {3: nfiles}, "every file on version 3", versions())
    ok(not os.path.lexists(os.path.join(STORE, "cf.rekey")) and
       not os.path.exists(os.path.join(STORE, "cf.rekey.new")),
       "journal and copy removed")
    r = h.coffer("tenant", "reencrypt", "acme")
    ok(r.returncode == 0 and "0 files re-encrypted" in r.stdout,
       "a third run has nothing to do", r.stdout)

    # a planted journal never copies over a file outside the store
    outside = os.path.join(h.t, "outside")
    os.makedirs(outside)
    src = [os.path.join(r_, f_) for r_, _, fs_ in os.walk(DATA)
           for f_ in fs_ if not f_.startswith("cf.") and
           not os.path.islink(os.path.join(r_, f_))][0]
    with open(src, "rb") as f:
        victim = f.read()
    with open(os.path.join(outside, "victim"), "wb") as f:
        f.write(victim)
    os.symlink(outside, os.path.join(DATA, "evil"))
    with open(os.path.join(STORE, "cf.rekey.new"), "wb") as f:
        f.write(victim[:32] + b"\0" * 100)
    os.symlink("data/evil/victim", os.path.join(STORE, "cf.rekey"))
    r = h.coffer("tenant", "reencrypt", "acme")
    with open(os.path.join(outside, "victim"), "rb") as f:
        ok(r.returncode == 0 and f.read() == victim and
           not os.path.lexists(os.path.join(STORE, "cf.rekey")),
           "a journal through a symlink is dropped, the target untouched",
           r.stdout + r.stderr)
    os.unlink(os.path.join(DATA, "evil"))

    # online: the daemon killed mid-way; the next mount finishes the file
    env = dict(h.env, COFFER_TEST_REKEY_KILL_AT="2")
    p = subprocess.Popen([cftest.COFFER, "mount", "acme", h.mp, "-f"],
                         env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    h.procs.append(p)
    end = time.time() + 15
    while time.time() < end and not os.path.ismount(h.mp):
        time.sleep(0.05)
    r = h.coffer("tenant", "rotate-key", "acme")
    ok(r.returncode == 0 and "version 4 now" in r.stdout,
       "rotate-key to 4, mounted", r.stdout + r.stderr)
    r = h.coffer("tenant", "reencrypt", "acme")
    ok(r.returncode == 1 and "went away" in r.stderr,
       "the daemon killed during an online re-encryption", r.stderr)
    p.wait(timeout=15)
    subprocess.run(["fusermount3", "-u", "-z", h.mp])
    ok(os.path.islink(os.path.join(STORE, "cf.rekey")),
       "the daemon left its journal")
    p = h.mount("acme")
    ok(not os.path.lexists(os.path.join(STORE, "cf.rekey")),
       "the next mount finished the interrupted file")
    # a backup started meanwhile waits for the control socket, then runs
    re = subprocess.Popen([cftest.COFFER, "tenant", "reencrypt", "acme"],
                          env=h.env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    time.sleep(0.1)
    rb = h.coffer("backup", "acme")
    out, err = re.communicate(timeout=300)
    ok(re.returncode == 0 and " 0 files still" in out.replace(";", ""),
       "online rerun finishes", out + err)
    ok(rb.returncode == 0, "a backup started during it succeeds",
       rb.stdout + rb.stderr)
    ok(versions() == {4: nfiles}, "every file on version 4", versions())
    h.umount(p)

    # an offline run and a mount exclude each other (store/cf.rekey.lock)
    with open(os.path.join(STORE, "cf.rekey.lock"), "a") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            h.mount("acme")
            ok(False, "a mount during an offline re-encryption is refused")
        except RuntimeError as e:
            ok("being re-encrypted" in str(e),
               "a mount during an offline re-encryption is refused", e)
        bk = subprocess.Popen([cftest.COFFER, "backup", "acme"],
                              env=h.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        ok(bk.poll() is None, "an offline backup waits for the run to end")
        fcntl.flock(lk, fcntl.LOCK_UN)
        bk.communicate(timeout=120)
        ok(bk.returncode == 0, "...and then runs")
    p = h.mount("acme")
    with open(os.path.join(STORE, "cf.rekey.lock"), "a") as lk:
        try:
            fcntl.flock(lk, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = False
        except OSError:
            held = True
    ok(held, "a mounted daemon holds the store lock")
    h.umount(p)

    p = h.mount("acme")
    after = tree(h.mp)
    ok(after.items() >= before.items(),
       "every file, name, symlink, xattr reads back after re-encryption",
       [k for k in before if after.get(k) != before[k]])
    st = os.stat(os.path.join(h.mp, "hard"))
    ok(st.st_nlink == 2 and st.st_ino == os.stat(
        os.path.join(h.mp, "dir", "big")).st_ino, "hard link kept")
    with open(os.path.join(h.mp, "small"), "a") as f:
        f.write("more\n")
    with open(os.path.join(h.mp, "small")) as f:
        ok(f.read() == "hello\nmore\n", "a re-encrypted file is writable")
    now = tree(h.mp)
    h.umount(p)

    # backups: every version opens; the snapshots from before restore
    ids = snap_ids()
    r = h.coffer("backup", "acme")
    sid4 = [i for i in snap_ids() if i not in ids]
    ok(r.returncode == 0 and len(sid4) == 1 and
       snap_version(sid4[0]) == 4, "backup after the rotations: version 4",
       r.stderr)
    r = h.coffer("restore", "acme", sid2[0], "--to-tar", "-", text=False)
    ok(r.returncode == 0 and only in r.stdout,
       "the version 2 snapshot restores", r.stderr)
    sid = json.loads(snap1)[0]["id"]
    out = os.path.join(h.t, "restored")
    r = h.coffer("restore", "acme", sid, "--target", out)
    ok(r.returncode == 0 and tree(out) == before,
       "the snapshot from before the rotations restores", r.stderr)
    r = h.coffer("verify", "acme", "--read-data")
    ok(r.returncode == 0, "verify --read-data after the rotation",
       r.stderr)

    # retire: 2 and 3 are needed by nothing any more
    r = h.coffer("tenant", "retire-key", "acme", "1")
    ok(r.returncode == 1 and "names" in r.stderr,
       "retire-key refuses the store's metadata version", r.stderr)
    r = h.coffer("tenant", "retire-key", "acme", "2")
    kv = snap_kv()
    need2 = sorted(i for i in kv if kv[i] is not None and 2 in kv[i])
    ok(need2 == sid2, "only the version 2 snapshot needs version 2", kv)
    ok(r.returncode == 1 and "needed by snapshots" in r.stderr and
       sid2[0][:8] in r.stderr and "retention must remove" in r.stderr and
       all(i[:8] not in r.stderr for i in kv if i not in sid2),
       "retire-key refuses a version a snapshot needs, naming it",
       r.stderr)
    ok(os.path.exists(os.path.join(TDIR, "keys", "v2.wk")),
       "v2.wk kept after the refusal")
    ok(not os.listdir(os.path.join(REPO, "locks")),
       "retire-key released its repository lock")
    # a backup holding the repository lock (reading stdin): refused,
    # it could be writing under the version; killed, its lock is stale
    bk = subprocess.Popen([cftest.COFFER, "backup", "acme", "--stdin",
                           "--name", "held.bin"], env=h.env,
                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while time.time() < deadline and not os.listdir(
            os.path.join(REPO, "locks")):
        time.sleep(0.05)
    r = h.coffer("tenant", "retire-key", "acme", "3")
    ok(r.returncode == 1 and "is locked" in r.stderr and
       os.path.exists(os.path.join(TDIR, "keys", "v3.wk")),
       "retire-key refused while a backup holds the repository lock",
       r.stderr)
    bk.kill()
    bk.wait()
    # killed after tenant.json records the retirement, before the shred,
    # with the repository lock held: a rerun finishes it
    r = h.coffer("tenant", "retire-key", "acme", "3",
                 env=dict(h.env, COFFER_TEST_KILL_AT="12"))
    ok(r.returncode == -9 and s_retired() == [3],
       "retire-key 3 killed after its commit point", r.stderr)
    r = h.coffer("tenant", "retire-key", "acme", "3")
    ok(r.returncode == 0 and
       not os.path.exists(os.path.join(TDIR, "keys", "v3.wk")),
       "retire-key 3 (nothing under it), finished by the rerun", r.stderr)
    # a newer backup of the same stdin path (under 4), then retention
    # keeps the newest of each path; prune drops version 2's objects
    ids = snap_ids()
    r = h.coffer("backup", "acme", "--stdin", "--name", "only-v2.bin",
                 stdin=os.urandom(1000), text=False)
    sid5 = [i for i in snap_ids() if i not in ids]
    with open(h.conf, "a") as f:
        f.write("[retention]\nkeep_last = 1\n")
    r = h.coffer("retention", "apply", "acme")
    ok(r.returncode == 0 and sorted(snap_ids()) == sorted(sid4 + sid5),
       "retention apply keeps the newest snapshot of each path",
       r.stdout + r.stderr)
    r = h.coffer("tenant", "retire-key", "acme", "2")
    ok(r.returncode == 0, "retire-key 2 once no snapshot needs it",
       r.stderr)
    ok(not os.path.exists(os.path.join(TDIR, "keys", "v2.wk")) and
       not os.path.exists(os.path.join(TDIR, "keys", "v3.wk")) and
       os.path.exists(os.path.join(TDIR, "keys", "v1.wk")),
       "v2.wk and v3.wk shredded, v1.wk kept")
    s = show()
    ok(s.get("key_versions") == [1, 4] and
       s.get("retired_versions") == [2, 3], "tenant show: 2 3 retired", s)
    ev = events("tenant.retire_key")
    ok(sorted(e.get("key_version") for e in ev) == [2, 3],
       "audited tenant.retire_key", ev)
    r = h.coffer("tenant", "retire-key", "acme", "2")
    ok(r.returncode != 0 and "already retired" in r.stderr,
       "retiring twice is refused", r.stderr)
    p = h.mount("acme")
    ok(tree(h.mp) == now, "the store reads back after the retirement")
    h.umount(p)
    r = h.coffer("restore", "acme", sid4[0], "--target",
                 os.path.join(h.t, "r2"))
    ok(r.returncode == 0 and tree(os.path.join(h.t, "r2")) == now,
       "restore after the retirement", r.stderr)
    r = h.coffer("verify", "acme", "--read-data")
    ok(r.returncode == 0, "verify --read-data after the retirement",
       r.stdout + r.stderr)
finally:
    h.cleanup()
tap.done()
