#!/usr/bin/python3
"""retire_key_prune.py - `tenant retire-key` when a prune has moved a
snapshot's blobs into a pack of a version its record does not list
(docs/format/repository.md, [BK-SNAP-2], [BK-SNAP-3]).

A snapshot written under version 1 reuses a blob of another snapshot's
pack; after a rotation to 2, retention drops the other snapshot and the
prune repacks the blob into a version 2 pack; after a rotation to 3, no
snapshot records version 2, yet the first snapshot needs it: retire-key
must refuse (the index check), and the snapshot must still restore.
No mount needed (stdin and tar input).  TAP output."""
import io
import json
import os
import struct
import tarfile

import cftest

tap = cftest.Tap()
ok = tap.ok
h = cftest.Home("cf_rkp.", "retire key prune test passphrase")
TDIR = os.path.join(h.home, "tenants", "acme")
REPO = os.path.join(h.home, "repos", "acme")
MAGIC = b"\x89CFBK\r\n\x1a"


def make_tar(path, files):
    with tarfile.open(path, "w") as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o600
            t.addfile(ti, io.BytesIO(data))


def snaps():
    """Snapshot id -> its recorded key_versions."""
    r = h.coffer("--json", "snapshots", "acme")
    return {x["id"]: x.get("key_versions") for x in json.loads(r.stdout)} \
        if r.returncode == 0 else {}


def pack_versions():
    """Key version -> number of packs under it (their headers)."""
    out = {}
    for root, _, files in os.walk(os.path.join(REPO, "data")):
        for name in files:
            if name.startswith("."):
                continue
            with open(os.path.join(root, name), "rb") as f:
                hdr = f.read(32)
            if hdr[:8] == MAGIC:
                v = struct.unpack_from("<I", hdr, 12)[0]
                out[v] = out.get(v, 0) + 1
    return out


try:
    r = h.coffer("tenant", "create", "acme", "--cipher",
                 "xchacha20-poly1305")
    ok(r.returncode == 0, "tenant create", r.stderr)
    y = os.urandom(2000)
    tar = os.path.join(h.t, "in.tar")
    # B: 24 files only B has, then y last: the writer's two workers
    # each fill a pack, so whichever takes y already holds blobs that
    # die with B (y first could land in a pack of its own when the other
    # worker took every later blob, as seen under load)
    files = {}
    for i in range(24):
        files["w%02d" % i] = os.urandom(20000)
    files["z-y"] = y
    make_tar(tar, files)
    r = h.coffer("backup", "acme", "--tar", tar)
    ok(r.returncode == 0, "backup B (tar: y and 24 more files)", r.stderr)
    b = set(snaps())
    # A: y again, from stdin: its blob is B's
    r = h.coffer("backup", "acme", "--stdin", "--name", "a.bin", stdin=y,
                 text=False)
    a = [i for i in snaps() if i not in b]
    ok(r.returncode == 0 and len(a) == 1 and snaps()[a[0]] == [1],
       "backup A reuses B's blob and records [1]", r.stderr)
    # C: the same tar path, new content, so retention drops B
    make_tar(tar, {"z": os.urandom(2000)})
    r = h.coffer("backup", "acme", "--tar", tar)
    ok(r.returncode == 0, "backup C (same path as B)", r.stderr)
    ok(list(pack_versions()) == [1], "every pack is under version 1",
       pack_versions())

    r = h.coffer("tenant", "rotate-key", "acme")
    ok(r.returncode == 0, "rotate-key to 2", r.stderr)
    with open(h.conf, "a") as f:
        f.write("[retention]\nkeep_last = 1\nrepack_pct = 100\n")
    r = h.coffer("retention", "apply", "acme")
    kv = snaps()
    ok(r.returncode == 0 and len(kv) == 2 and a[0] in kv and
       not (b & set(kv)), "retention apply drops B, keeps A and C",
       r.stdout + r.stderr)
    pv = pack_versions()
    ok(pv.get(2, 0) == 1, "prune repacked A's blob into a version 2 pack",
       pv)
    ok(all(2 not in v for v in kv.values()),
       "no snapshot records version 2 (written before it existed)", kv)

    r = h.coffer("tenant", "rotate-key", "acme")
    ok(r.returncode == 0, "rotate-key to 3", r.stderr)
    r = h.coffer("tenant", "retire-key", "acme", "2")
    ok(r.returncode == 1 and "which no snapshot records" in r.stderr,
       "retire-key 2 refused: an indexed pack is under version 2",
       r.stderr)
    ok(os.path.exists(os.path.join(TDIR, "keys", "v2.wk")),
       "v2.wk kept")
    r = h.coffer("restore", "acme", a[0], "--to-tar", "-", text=False)
    ok(r.returncode == 0 and y in r.stdout,
       "snapshot A still restores (it needs version 2)", r.stderr)
    r = h.coffer("verify", "acme", "--read-data")
    ok(r.returncode == 0, "verify --read-data", r.stdout + r.stderr)
finally:
    h.cleanup()
tap.done()
