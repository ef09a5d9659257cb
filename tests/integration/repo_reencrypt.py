#!/usr/bin/python3
"""repo_reencrypt.py - `coffer tenant reencrypt NAME --repository
--objects` moves a backup repository's packs, index objects and
snapshots to the newest root key version (docs/format/repository.md
[BK-REENC-1], docs/kms.md "Root key rotation"), so that retire-key can
retire an older version at once, without waiting for retention.

A tenant is backed up under version 1, rotated to 2 and backed up again
with its data unchanged (the second snapshot reuses the packs of version
1: dedup) plus one new file; contents and metadata are re-encrypted.
The object re-encryption is killed at each step (COFFER_TEST_KILL_AT 15
to 18) and at random points: after each kill verify --read-data passes,
every snapshot restores and a rerun finishes with no duplicate snapshot.
Then no pack, index object or snapshot is under version 1, retire-key 1
succeeds at once, every snapshot restores byte for byte, verify
--read-data passes, and a later backup of the same data stores no data
blob (dedup against the rewritten packs).  TAP; needs root and
/dev/fuse."""
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import time

import cftest

cftest.need_fuse()
tap = cftest.Tap()
ok = tap.ok
h = cftest.Home("cf_re.", "repo reencrypt test passphrase")
TDIR = os.path.join(h.home, "tenants", "acme")
REPO = os.path.join(h.home, "repos", "acme")
BAK = REPO + ".bak"
MIB = 1 << 20


tree = cftest.content_tree


def versions():
    """Object kind ("data", "index", "snapshots") -> header versions."""
    out = {"data": [], "index": [], "snapshots": []}
    for kind in out:
        for root, _, files in os.walk(os.path.join(REPO, kind)):
            for name in files:
                if name.startswith(".tmp-"):
                    continue
                with open(os.path.join(root, name), "rb") as f:
                    hdr = f.read(32)
                # keying 2 (index key X) objects need no root key; bit 7
                # of byte 11 is the SHA-256 naming ([BK-LAY-3])
                if hdr[8] == 2 and hdr[11] & 0x7f == 2:
                    continue
                out[kind].append(struct.unpack_from("<I", hdr, 12)[0])
    return out


def snaps():
    r = h.coffer("--json", "snapshots", "acme")
    if r.returncode != 0:
        return None
    return sorted(json.loads(r.stdout), key=lambda x: x["time_ns"])


def fill(files):
    p = h.mount("acme")
    for name, data in files.items():
        with open(os.path.join(h.mp, name), "wb") as f:
            f.write(data)
    t = tree(h.mp)
    h.umount(p)
    return t


def restores_all(want, tag):
    """Every snapshot restores to what it held; want is by time order
    (a killed re-seal leaves two copies of one snapshot, equal times)."""
    ss = snaps() or []
    times = sorted(set(x["time_ns"] for x in ss))
    if len(times) != len(want):
        return False
    for i, s in enumerate(ss):
        out = os.path.join(h.t, "r-%s-%d" % (tag, i))
        r = h.coffer("restore", "acme", s["id"], "--target", out)
        good = r.returncode == 0 and \
            tree(out) == want[times.index(s["time_ns"])]
        shutil.rmtree(out, ignore_errors=True)
        if not good:
            return False
    return True


def reset():
    shutil.rmtree(REPO)
    shutil.copytree(BAK, REPO)


REENC = ("tenant", "reencrypt", "acme", "--repository", "--objects")

try:
    r = h.coffer("tenant", "create", "acme", "--cipher",
                 "xchacha20-poly1305")
    ok(r.returncode == 0, "tenant create", r.stderr)
    a_files = {"a%d" % i: os.urandom(4 * MIB) for i in range(6)}
    t1 = fill(a_files)
    r = h.coffer("backup", "acme")
    ok(r.returncode == 0, "backup 1 under version 1 (24 MiB)", r.stderr)
    r = h.coffer("tenant", "rotate-key", "acme")
    ok(r.returncode == 0, "rotate-key to 2", r.stderr)
    r = h.coffer("--json", "backup", "acme")
    j = json.loads(r.stdout) if r.returncode == 0 else {}
    ok(r.returncode == 0 and j.get("new_bytes", 1 << 30) < 100000,
       "backup 2 of unchanged data under 2 reuses version 1's packs",
       r.stdout + r.stderr)
    t2 = fill({"b0": os.urandom(300000)})
    r = h.coffer("backup", "acme")
    ok(r.returncode == 0, "backup 3 under 2, one new file", r.stderr)
    want = [t1, t1, t2]
    s1 = snaps()[0]["id"]
    s23 = [x["id"] for x in snaps()[1:]]
    r = h.coffer("tenant", "reencrypt", "acme")
    ok(r.returncode == 0, "reencrypt (contents)", r.stdout + r.stderr)
    r = h.coffer("tenant", "reencrypt", "acme", "--metadata")
    ok(r.returncode == 0, "reencrypt --metadata", r.stdout + r.stderr)
    r = h.coffer("tenant", "reencrypt", "acme", "--repository")
    ok(r.returncode == 0, "reencrypt --repository (config)", r.stderr)
    r = h.coffer("tenant", "retire-key", "acme", "1")
    ok(r.returncode == 1, "retire-key 1 refused: objects under 1",
       r.stderr)
    r = h.coffer("tenant", "reencrypt", "acme", "--objects")
    ok(r.returncode == 2, "--objects without --repository: usage error",
       r.stderr)
    v = versions()
    ok(1 in v["data"] and 1 in v["snapshots"],
       "before: packs and a snapshot under 1 (%s)" % v)

    shutil.copytree(REPO, BAK)
    # each step's kill point
    for step in (15, 16, 17, 18):
        reset()
        env = dict(h.env, COFFER_TEST_KILL_AT=str(step))
        r = h.coffer(*REENC, env=env)
        ok(r.returncode == -9, "killed at step %d" % step, r.stderr)
        r = h.coffer("verify", "acme", "--read-data")
        ok(r.returncode == 0, "step %d: verify --read-data" % step,
           r.stdout + r.stderr)
        ok(restores_all(want, "k%d" % step),
           "step %d: every snapshot restores" % step)
        r = h.coffer(*REENC)
        v = versions()
        ok(r.returncode == 0 and len(snaps() or []) == 3 and
           1 not in v["data"] + v["index"] + v["snapshots"],
           "step %d: a rerun finishes, 3 snapshots, nothing under 1 (%s)"
           % (step, v), r.stdout + r.stderr)

    # a timed run, then kill -9 at random points of runs
    reset()
    t0 = time.time()
    r = h.coffer("--json", *REENC)
    dur = time.time() - t0
    j = json.loads(r.stdout) if r.returncode == 0 else {}
    ok(r.returncode == 0 and j.get("packs_old", 0) >= 2 and
       j.get("snapshots_resealed") == 1 and j.get("key_version") == 2 and
       [x["old"] for x in j.get("resealed", [])] == [s1] and
       j["resealed"][0]["new"] == snaps()[0]["id"],
       "a timed run: %s packs (%.1f MiB) rewritten, %s snapshots "
       "re-sealed in %.2f s" % (j.get("packs_old"),
                                j.get("bytes_old", 0) / MIB,
                                j.get("snapshots_resealed"), dur),
       r.stdout + r.stderr)
    rnd = random.Random(7)
    fine, why = True, ""
    for i in range(6):
        reset()
        p = subprocess.Popen([cftest.COFFER] + list(REENC), env=h.env,
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(rnd.uniform(0, dur))
        p.send_signal(signal.SIGKILL)
        p.wait()
        r = h.coffer("verify", "acme", "--read-data")
        if r.returncode != 0:
            fine, why = False, "kill %d: verify: %s" % (i, r.stderr)
            break
        if not restores_all(want, "rk%d" % i):
            fine, why = False, "kill %d: restore" % i
            break
        r = h.coffer(*REENC)
        v = versions()
        if r.returncode != 0 or len(snaps() or []) != 3 or \
                1 in v["data"] + v["index"] + v["snapshots"]:
            fine, why = False, "kill %d: rerun: %s %s" % (i, r.stderr, v)
            break
    ok(fine, "kill -9 at 6 random points: verify, restore, rerun", why)
    shutil.rmtree(BAK)

    r = h.coffer("--json", *REENC)
    j = json.loads(r.stdout) if r.returncode == 0 else {}
    ok(r.returncode == 0 and j.get("packs_old") == 0 and
       j.get("snapshots_resealed") == 0, "a rerun has nothing to do",
       r.stdout + r.stderr)
    r = h.coffer("audit", "show", "--tenant", "acme")
    ok(r.returncode == 0 and "snapshots_resealed" in r.stdout,
       "audited as tenant.reencrypt_repository with counts",
       r.stdout[-2000:])
    ok("tenant.reencrypt_snapshot" in r.stdout and s1 in r.stdout and
       snaps()[0]["id"] in r.stdout,
       "each re-sealed snapshot audited with its old and new id",
       r.stdout[-2000:])
    # snapshot 1 was re-sealed (a new id, its record [2]); 2 and 3,
    # already under 2, keep their ids and records ([1,2]: 1 was the
    # config's version and their packs' then, discounted by retire-key)
    ss = snaps() or []
    ok(len(ss) == 3 and ss[0]["id"] != s1 and
       ss[0].get("key_versions") == [2] and [x["id"] for x in ss[1:]] ==
       s23, "snapshot 1 re-sealed with key_versions [2], a new id; 2 and "
       "3 keep their ids", json.dumps(ss))

    r = h.coffer("tenant", "retire-key", "acme", "1")
    ok(r.returncode == 0 and
       not os.path.exists(os.path.join(TDIR, "keys", "v1.wk")),
       "retire-key 1 succeeds at once (no retention)",
       r.stdout + r.stderr)
    ok(restores_all(want, "end"),
       "every snapshot restores byte for byte without version 1")
    r = h.coffer("verify", "acme", "--read-data")
    ok(r.returncode == 0, "verify --read-data", r.stdout + r.stderr)
    r = h.coffer("--json", "backup", "acme")
    j = json.loads(r.stdout) if r.returncode == 0 else {}
    ok(r.returncode == 0 and j.get("new_bytes", 1 << 30) < 100000,
       "a backup of the unchanged store stores no data blob (%s new "
       "blobs, %s bytes)" % (j.get("new_blobs"), j.get("new_bytes")),
       r.stdout + r.stderr)
    r = h.coffer("--json", "backup", "acme", "--stdin", "--name", "x",
                 stdin=a_files["a0"], text=False)
    j = json.loads(r.stdout) if r.returncode == 0 else {}
    ok(r.returncode == 0 and j.get("new_blobs") == 1 and
       j.get("new_bytes", 1 << 30) < 100000,
       "dedup: a stdin backup of a file's bytes stores only its tree",
       r.stdout + r.stderr)
finally:
    h.cleanup()
tap.done()
