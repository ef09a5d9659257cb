#!/usr/bin/python3
"""fs_rollback.py - an older copy of a file put back into the store
(docs/format/fs.md, File generations) reads as EIO with an "fs.rollback"
audit record, on a real mount and after a remount; forged, stripped or
borrowed generations are refused; -o accept_rollback takes the store as it
is (an old copy put back on purpose); removing a file drops it from the
generation log; a damaged log stops the mount with a clear message.  TAP
output; needs root and /dev/fuse."""
import errno
import json
import os
import struct
import sys

import cftest

cftest.need_fuse()
tap = cftest.Tap()
ok = tap.ok
h = cftest.Home("cf_rb.", "rollback test passphrase")
XATTR = "user.cf.gen"
STORE = os.path.join(h.home, "tenants", "acme", "store", "data")
LOG = os.path.join(h.home, "tenants", "acme", "fsgen")


def backing(size):
    """The backing file of the one plaintext file of size bytes."""
    cb = 4096 + 28      # AES-256-GCM: nonce 12 + tag 16
    full, rest = divmod(size, 4096)
    want = 32 + full * cb + (rest + 28 if rest else 0)
    found = []
    for root, _, files in os.walk(STORE):
        for name in files:
            path = os.path.join(root, name)
            if os.path.getsize(path) == want:
                found.append(path)
    assert len(found) == 1, (size, found)
    return found[0]


def snap(path):
    """An old copy: the bytes and the generation xattr."""
    with open(path, "rb") as f:
        return f.read(), os.getxattr(path, XATTR)


def put(path, data, gen):
    """Puts a copy back in place (same inode, as cp or a restore would)."""
    with open(path, "wb") as f:
        f.write(data)
    if gen is None:
        try:
            os.removexattr(path, XATTR)
        except OSError:
            pass
    else:
        os.setxattr(path, XATTR, gen)


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        return e.errno


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def gen_of(value):
    return struct.unpack_from("<Q", value, 8)[0]


def audit_events():
    out = h.coffer("audit", "show", "--tenant", "acme").stdout
    return [json.loads(l) for l in out.splitlines() if l.strip()]


def log_entries():
    return (os.path.getsize(LOG) - 16) // 32


def main():
    r = h.coffer("tenant", "create", "acme")
    ok(r.returncode == 0, "tenant created", r.stderr)
    p = h.mount("acme")
    f = os.path.join(h.mp, "ledger.db")
    g = os.path.join(h.mp, "other.db")
    v1, v2 = b"1" * 10000, b"2" * 10000
    write(f, v1)
    write(g, b"g" * 7000)
    bf = backing(10000)
    old, oldgen = snap(bf)
    ok(gen_of(oldgen) == 1, "a new file starts at generation 1",
       gen_of(oldgen))
    write(f, v2)
    cur, curgen = snap(bf)
    ok(gen_of(curgen) == 2, "rewriting it raises its generation",
       gen_of(curgen))
    ok(read(f) == v2, "the new content reads back")

    put(bf, old, oldgen)
    ok(read(f) == errno.EIO, "the older copy of the file gives EIO")
    rb = [e for e in audit_events() if e["event"] == "fs.rollback"]
    ok(len(rb) >= 1 and len(rb[-1].get("file_id", "")) == 32,
       "the rollback is audited with the file id", rb)
    put(bf, old, None)
    ok(read(f) == errno.EIO, "the older copy without its xattr gives EIO")
    forged = bytearray(oldgen)
    forged[8:16] = struct.pack("<Q", 5)
    put(bf, old, bytes(forged))
    ok(read(f) == errno.EIO, "a forged generation gives EIO")
    _, ggen = snap(backing(7000))
    put(bf, old, ggen)
    ok(read(f) == errno.EIO, "another file's generation gives EIO")
    put(bf, cur, curgen)
    ok(read(f) == v2, "the current copy put back reads again")
    # A handle held open keeps the daemon's context for the file: the
    # next open must still check the generation of what is on disk.
    keep = open(f, "rb")
    keep.read(1)            # the daemon now has the file's context
    put(bf, old, oldgen)
    ok(read(f) == errno.EIO,
       "an older copy is caught at open while another handle is open")
    keep.close()
    put(bf, cur, curgen)
    ok(read(f) == v2, "and the current copy reads again")
    h.umount(p)

    # The log lives in the home: a remount still knows generation 2.
    put(bf, old, oldgen)
    p = h.mount("acme")
    ok(read(f) == errno.EIO, "after a remount the older copy still gives EIO")
    h.umount(p)

    # A backup of the unmounted store checks generations too: the older
    # copy is left out as damaged, the rest is backed up.
    r = h.coffer("backup", "acme")
    ok(r.returncode != 0 and "ledger.db" in r.stderr and
       "damaged" in r.stderr and "other.db" not in r.stderr,
       "an offline backup leaves the older copy out as damaged",
       (r.returncode, r.stderr))
    out = os.path.join(h.t, "restored")
    r = h.coffer("restore", "acme", "latest", "--target", out)
    ok(r.returncode == 0 and
       not os.path.exists(os.path.join(out, "ledger.db")) and
       read(os.path.join(out, "other.db")) == b"g" * 7000,
       "and its snapshot holds the other files", (r.returncode, r.stderr))
    put(bf, cur, curgen)
    r = h.coffer("backup", "acme")
    out2 = os.path.join(h.t, "restored2")
    r2 = h.coffer("restore", "acme", "latest", "--target", out2)
    ok(r.returncode == 0 and r2.returncode == 0 and
       read(os.path.join(out2, "ledger.db")) == v2,
       "with the current copy back, an offline backup holds it",
       (r.returncode, r.stderr, r2.stderr))
    # That snapshot's copy put back later, with its mtime, after a newer
    # write: an incremental backup must not reuse it as unchanged (its
    # ctime moved, so it is read, and refused at open).
    st2 = os.stat(bf)
    p = h.mount("acme")
    v3 = b"3" * 10000
    write(f, v3)
    h.umount(p)
    put(bf, cur, curgen)
    os.utime(bf, ns=(st2.st_atime_ns, st2.st_mtime_ns))
    r = h.coffer("--json", "backup", "acme")
    ok(r.returncode != 0 and "ledger.db" in r.stderr and
       "damaged" in r.stderr,
       "an incremental offline backup does not reuse an older copy put "
       "back with its old times", (r.returncode, r.stderr, r.stdout))
    put(bf, old, oldgen)

    # An operator who restored an old store on purpose.
    p = h.mount("acme", "-o", "accept_rollback")
    ok(read(f) == v1, "-o accept_rollback reads the older copy")
    ok(read(g) == b"g" * 7000, "and the other files as they are")
    h.umount(p)
    ev = [e["event"] for e in audit_events()]
    ok("fs.generations_reset" in ev, "accepting rollbacks is audited")
    p = h.mount("acme")
    ok(read(f) == v1, "once accepted, the older copy is the current one")
    write(f, v2)
    ok(read(f) == v2, "and it can be written again")

    # Removing a file drops it from the log (compacted at mount, so
    # count after a remount: ledger.db and other.db).
    h.umount(p)
    p = h.mount("acme")
    before = log_entries()
    ok(before == 2, "the log holds one entry per file", before)
    for i in range(5):
        write(os.path.join(h.mp, f"tmp{i}"), b"t" * (100 + i))
    for i in range(5):
        os.unlink(os.path.join(h.mp, f"tmp{i}"))
    write(os.path.join(h.mp, "keep"), b"k")
    os.rename(os.path.join(h.mp, "keep"), g)    # replaces other.db
    h.umount(p)
    p = h.mount("acme")
    h.umount(p)
    # Left: ledger.db and keep (now other.db); the old other.db is gone.
    ok(log_entries() == before, "removed and replaced files leave the log",
       (before, log_entries()))

    # A damaged log: no mount, a clear message; accept_rollback rebuilds.
    with open(LOG, "r+b") as lf:
        lf.seek(16 + 8)
        b = lf.read(1)
        lf.seek(16 + 8)
        lf.write(bytes([b[0] ^ 0xff]))
    with open(LOG, "ab") as lf:
        lf.write(b"\0" * 32 * 2)     # the damage is not the last record
    try:
        p = h.mount("acme")
        h.umount(p)
        ok(False, "a damaged generation log stops the mount")
    except RuntimeError as e:
        ok("generation log" in str(e) and "accept_rollback" in str(e),
           "a damaged generation log stops the mount, saying what to do",
           e)
    p = h.mount("acme", "-o", "accept_rollback")
    ok(read(f) == v2, "-o accept_rollback mounts with a new log")
    h.umount(p)
    p = h.mount("acme")
    ok(read(f) == v2, "and the next plain mount works")
    h.umount(p)
    ok(h.coffer("audit", "verify").returncode == 0, "the audit log verifies")


try:
    main()
finally:
    h.cleanup()
tap.done()
