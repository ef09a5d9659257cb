#!/usr/bin/python3
"""backup_lend.py - a backup of a mounted tenant borrows the tenant's root
keys from the mount's daemon (docs/format/ctl.md [CTL-8], docs/kms.md
"Keys lent to a backup"), on a real mount: the keys are the tenant's
(a repository made with them while the backup held a wrong passphrase
restores with the real unlock, also after a rotation), every loan is
audited with the backup's pid, the reply is the spec's layout, and a loan
is refused under -o nolend and while the tenant is locked out, where the
backup unlocks itself as if unmounted.  TAP output.  Needs root and
/dev/fuse."""
import json
import os
import socket
import subprocess
import time

import cftest

COFFER = cftest.COFFER
cftest.need_fuse()
TAP = cftest.Tap()
ok = TAP.ok
H = cftest.Home("cf_lend.", "lend test passphrase")
T, HOME, ENV, MP = H.t, H.home, H.env, H.mp
coffer, mount, umount = H.coffer, H.mount, H.umount
CTL = os.path.join(HOME, "tenants", "acme", "store", "cf.ctl")
SNAPDIR = os.path.join(HOME, "tenants", "acme", "store", "snap")


def backup(*args, env=None):
    """coffer --json backup acme ARGS: (returncode, json, stderr, pid)."""
    p = subprocess.Popen([COFFER, "--json", "backup", "acme", *args],
                         env=env or ENV, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=300)
    try:
        j = json.loads(out)
    except ValueError:
        j = {}
    return p.returncode, j, err, p.pid


def audit_events():
    r = coffer("audit", "show")
    return [json.loads(x) for x in r.stdout.splitlines()
            if x.startswith("{")]


def ctl(*requests):
    """Sends requests on one connection; the raw replies, in order."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(CTL)
    out = []
    try:
        for req in requests:
            s.sendall(req)
            buf = b""
            while not buf.endswith(b"\n"):
                b = s.recv(1)
                if not b:
                    break
                buf += b
            if req == b"ROOTKEYS\n" and buf.startswith(b"OK "):
                need = int(buf[3:-1]) * 36
                while need > 0:
                    b = s.recv(need)
                    if not b:
                        break
                    buf += b
                    need -= len(b)
            out.append(buf)
    finally:
        s.close()
    return out


def restored_equal(tag, snap, src):
    """Restores acme's snapshot snap (own unlock, right passphrase) and
    compares it with the tree state src."""
    tgt = os.path.join(T, "restore-" + tag)
    r = coffer("restore", "acme", snap, "--target", tgt)
    if r.returncode != 0:
        return False, r.stderr
    got = cftest.tree_state(tgt, hash_data=True)
    return got == src, cftest.tree_diff(src, got)


bad = os.path.join(T, "wrong-pass")
with open(bad, "w") as f:
    f.write("not the passphrase\n")
os.chmod(bad, 0o600)
BAD = dict(ENV, COFFER_PASSPHRASE_FILE=bad)

try:
    r = coffer("tenant", "create", "acme")
    assert r.returncode == 0, r.stderr
    p = mount("acme")
    os.makedirs(os.path.join(MP, "d/e"))
    for i in range(40):
        with open(os.path.join(MP, "d/e" if i % 2 else "d", f"f{i}"),
                  "wb") as f:
            f.write(os.urandom(100 * i))
    os.symlink("d/f2", os.path.join(MP, "ln"))
    src = cftest.tree_state(MP, hash_data=True)

    # ---- the first backup creates the repository with lent keys ----
    before = len(audit_events())
    rc, j, err, pid = backup(env=BAD)
    first = j.get("snapshot", "none")
    ok(rc == 0 and j.get("keys") == "lent" and
       j.get("consistency") == "freeze",
       "a mounted tenant's backup borrows the daemon's keys: it needs no "
       "passphrase (a wrong one is not read) and is point-in-time",
       f"{rc} {j} {err}")
    ev = audit_events()[before:]
    lend = [e for e in ev if e.get("event") == "fs.lend_keys"]
    unwr = [e for e in ev if e.get("event") == "key.unwrap"]
    ok(len(lend) == 1 and lend[0].get("pid") == pid and
       lend[0].get("uid") == 0 and lend[0].get("versions") == 1 and
       lend[0].get("tenant") == "acme" and len(unwr) == 1,
       "the loan is audited: fs.lend_keys with the backup's pid and uid, "
       "after the daemon's key.unwrap", json.dumps(ev))
    ok(not any(e.get("event") in ("unlock.failed", "lockout.locked")
               for e in ev),
       "the wrong passphrase was never tried", json.dumps(ev))

    # ---- a stream does not ask the daemon (it would wait on it) ----
    p2 = subprocess.run([COFFER, "--json", "backup", "acme", "--stdin",
                         "--name", "dump.sql"], input=b"SELECT 1;\n" * 1000,
                        env=ENV, capture_output=True, timeout=300)
    j2 = json.loads(p2.stdout) if p2.stdout.startswith(b"{") else {}
    ok(p2.returncode == 0 and j2.get("keys") == "kms" and
       j2.get("consistency") == "stream",
       "--stdin backup of a mounted tenant unlocks through the KMS itself",
       f"{p2.returncode} {p2.stderr}")

    # ---- the reply on the wire ([CTL-8]) ----
    rep = ctl(b"ROOTKEYS\n", b"SNAPSHOT\n", b"RELEASE\n")
    ok(len(rep) == 3 and rep[0][:5] == b"OK 1\n" and len(rep[0]) == 41 and
       rep[0][5:9] == b"\x01\x00\x00\x00" and rep[1].startswith(b"OK /")
       and rep[2] == b"OK\n",
       "ROOTKEYS: 'OK 1\\n' and one 36-byte record for version 1; a "
       "SNAPSHOT follows on the same connection",
       repr([x[:9] for x in rep]))

    # ---- unmounted: the keys lent were the tenant's ----
    umount(p)
    same, diff = restored_equal("lent", first, src)
    ok(same, "the repository made with lent keys restores with the "
       "tenant's own unlock, byte for byte", diff)
    rc, j, err, _ = backup(env=BAD)
    ok(rc == 4 and j == {},
       "unmounted, nothing is lent: the wrong passphrase fails (exit 4)",
       f"{rc} {err}")

    # ---- -o nolend ----
    p = mount("acme", "-o", "nolend")
    rep = ctl(b"ROOTKEYS\n", b"SNAPSHOT\n", b"RELEASE\n")
    ok(len(rep) == 3 and rep[0].startswith(b"ERR ") and b"nolend" in rep[0]
       and rep[1].startswith(b"OK /") and rep[2] == b"OK\n",
       "-o nolend: ROOTKEYS gets ERR (naming the option) and the "
       "connection still serves a snapshot", repr(rep))
    before = len(audit_events())
    rc, j, err, _ = backup(env=BAD)
    left = cftest.farm_left(SNAPDIR)
    ok(rc == 4 and not left,
       "-o nolend: the backup unlocks itself; a wrong passphrase fails "
       "(exit 4) and leaves no farm", f"{rc} {err} {left}")
    rc, j, err, _ = backup()
    ok(rc == 0 and j.get("keys") == "kms" and
       j.get("consistency") == "freeze",
       "-o nolend: with the right passphrase the backup is point-in-time, "
       "keys from the KMS", f"{rc} {j} {err}")
    ok(not any(e.get("event") == "fs.lend_keys"
               for e in audit_events()[before:]),
       "-o nolend: no loan recorded")
    umount(p)

    # ---- a locked-out tenant lends nothing ----
    p = mount("acme")
    lock = os.path.join(HOME, "locks", "tenant.acme.json")
    with open(lock, "w") as f:
        json.dump({"failures": 3, "locked_until": int(time.time()) + 3600,
                   "last_failure": int(time.time())}, f)
    rep = ctl(b"ROOTKEYS\n")
    rc, j, err, _ = backup()
    ok(rep[0].startswith(b"ERR ") and rc == 4 and "locked" in err,
       "a locked-out tenant: the daemon refuses the loan and the backup's "
       "own unlock is refused too (exit 4)", f"{rep} {rc} {err}")
    os.unlink(lock)

    # ---- after a rotation, both live versions are lent ----
    r = coffer("tenant", "rotate-key", "acme")
    ok(r.returncode == 0, "rotate-key on the mounted tenant", r.stderr)
    with open(os.path.join(MP, "after-rotation"), "wb") as f:
        f.write(os.urandom(5000))
    src = cftest.tree_state(MP, hash_data=True)
    rep = ctl(b"ROOTKEYS\n")
    ok(rep[0][:5] == b"OK 2\n" and len(rep[0]) == 5 + 72 and
       {rep[0][5:9], rep[0][41:45]} ==
       {b"\x01\x00\x00\x00", b"\x02\x00\x00\x00"} and
       rep[0][9:41] != rep[0][45:77],
       "after a rotation ROOTKEYS lends versions 1 and 2, two keys",
       repr(rep[0][:9]))
    rc, j, err, _ = backup(env=BAD)
    ok(rc == 0 and j.get("keys") == "lent",
       "after a rotation the backup borrows both versions", f"{rc} {err}")
    umount(p)
    same, diff = restored_equal("rotated", j.get("snapshot", "none"), src)
    ok(same, "the snapshot made with lent keys after a rotation restores "
       "with the own unlock", diff)
    r = coffer("audit", "verify")
    ok(r.returncode == 0, "the audit log verifies", r.stderr)
finally:
    H.cleanup()
TAP.done()
