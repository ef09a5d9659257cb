#!/usr/bin/python3
"""repo_rekey.py - retiring the root key version a backup repository was
created with: `coffer tenant reencrypt NAME --repository` re-keys the
config under the newest version, carrying the chunk key C
(docs/format/repository.md [BK-CFG-2], docs/kms.md "Root key rotation").

A tenant is backed up under version 1, rotated to 2, its store changed
and backed up again; contents and metadata are re-encrypted.  retire-key
1 is refused naming the command; the re-key is killed before and after
the replacement (each leaves a valid config); then retire-key 1 is
refused naming the snapshot that still needs 1 until retention removes
it, and allowed after.  Then the store mounts and reads, the old
snapshot restores, a new backup of the same data stores no new pack
(dedup against packs written before the re-key), and it restores.
TAP; needs root and /dev/fuse."""
import json
import os
import shutil
import signal
import struct
import subprocess
import time

import cftest

cftest.need_fuse()
tap = cftest.Tap()
ok = tap.ok
h = cftest.Home("cf_rr.", "repo rekey test passphrase")
TDIR = os.path.join(h.home, "tenants", "acme")
REPO = os.path.join(h.home, "repos", "acme")
CONFIG = os.path.join(REPO, "config")


tree = cftest.content_tree


def config_version():
    with open(CONFIG, "rb") as f:
        hdr = f.read(32)
    return struct.unpack_from("<I", hdr, 12)[0]


def snaps():
    r = h.coffer("--json", "snapshots", "acme")
    return json.loads(r.stdout) if r.returncode == 0 else None


def fill(files):
    p = h.mount("acme")
    for name in os.listdir(h.mp):
        os.unlink(os.path.join(h.mp, name))
    for name, data in files.items():
        with open(os.path.join(h.mp, name), "wb") as f:
            f.write(data)
    t = tree(h.mp)
    h.umount(p)
    return t


try:
    r = h.coffer("tenant", "create", "acme", "--cipher",
                 "xchacha20-poly1305")
    ok(r.returncode == 0, "tenant create", r.stderr)
    t1 = fill({"a%d" % i: os.urandom(300000) for i in range(4)})
    r = h.coffer("backup", "acme")
    ok(r.returncode == 0, "backup 1 under version 1", r.stderr)
    s1 = snaps()[0]["id"]
    r = h.coffer("tenant", "rotate-key", "acme")
    ok(r.returncode == 0, "rotate-key to 2", r.stderr)
    b_files = {"b%d" % i: os.urandom(300000) for i in range(4)}
    t2 = fill(b_files)
    r = h.coffer("backup", "acme")
    ok(r.returncode == 0, "backup 2 under version 2 (all new data)",
       r.stderr)
    s2 = [x["id"] for x in snaps() if x["id"] != s1][0]
    r = h.coffer("tenant", "reencrypt", "acme")
    ok(r.returncode == 0, "reencrypt (contents)", r.stdout + r.stderr)
    r = h.coffer("tenant", "reencrypt", "acme", "--metadata")
    ok(r.returncode == 0, "reencrypt --metadata", r.stdout + r.stderr)

    r = h.coffer("tenant", "retire-key", "acme", "1")
    ok(r.returncode == 1 and
       "'coffer tenant reencrypt acme --repository'" in r.stderr,
       "retire-key 1 refused before the re-key, naming the command",
       r.stderr)
    ok(os.path.exists(os.path.join(TDIR, "keys", "v1.wk")), "v1.wk kept")
    r = h.coffer("tenant", "reencrypt", "acme", "--metadata",
                 "--repository")
    ok(r.returncode == 2, "--metadata with --repository: usage error",
       r.stderr)

    # kill -9 at spread points of a run: the old config or the new
    # one, and the repository reads; each try starts from a copy
    shutil.copytree(REPO, REPO + ".bak")
    t0 = time.time()
    r = h.coffer("tenant", "reencrypt", "acme", "--repository")
    dur = time.time() - t0
    ok(r.returncode == 0 and config_version() == 2, "a timed run "
       "(%.0f ms)" % (dur * 1000), r.stderr)
    seen, fine = set(), True
    for i in range(10):
        shutil.rmtree(REPO)
        shutil.copytree(REPO + ".bak", REPO)
        p = subprocess.Popen([cftest.COFFER, "tenant", "reencrypt", "acme",
                              "--repository"], env=h.env,
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(dur * i / 9)
        p.send_signal(signal.SIGKILL)
        p.wait()
        v = config_version()
        seen.add(v)
        if v not in (1, 2) or len(snaps() or []) != 2:
            fine = False
    shutil.rmtree(REPO)
    shutil.copytree(REPO + ".bak", REPO)
    shutil.rmtree(REPO + ".bak")
    ok(fine, "kill -9 at 10 points of a run: a valid config (versions "
       "seen: %s) and the repository reads each time" % sorted(seen))

    # killed before the replacement: the old config, valid
    env = dict(h.env, COFFER_TEST_KILL_AT="13")
    r = h.coffer("tenant", "reencrypt", "acme", "--repository", env=env)
    ok(r.returncode == -9, "killed before the config is replaced",
       r.stderr)
    ok(config_version() == 1 and len(snaps() or []) == 2,
       "the old config is in place and the repository reads")
    # killed right after it: the new config, valid
    env = dict(h.env, COFFER_TEST_KILL_AT="14")
    r = h.coffer("tenant", "reencrypt", "acme", "--repository", env=env)
    ok(r.returncode == -9, "killed after the config is replaced", r.stderr)
    ok(config_version() == 2 and len(snaps() or []) == 2,
       "the new config is in place and the repository reads")
    ok(not [x for x in os.listdir(REPO) if x.startswith(".tmp-")],
       "no temporary left beside the config")
    r = h.coffer("--json", "tenant", "reencrypt", "acme", "--repository")
    j = json.loads(r.stdout) if r.returncode == 0 else {}
    ok(j.get("changed") is False and j.get("key_version") == 2,
       "a rerun: already under version 2", r.stdout + r.stderr)
    r = h.coffer("audit", "show", "--tenant", "acme")
    ok(r.returncode == 0 and "tenant.reencrypt_repository" in r.stdout,
       "audited as tenant.reencrypt_repository", r.stdout[-2000:])
    out = os.path.join(h.t, "r1")
    r = h.coffer("restore", "acme", s1, "--target", out)
    ok(r.returncode == 0 and tree(out) == t1,
       "snapshot 1 (version 1 packs) restores after the re-key", r.stderr)

    # snapshot 1 still needs 1; snapshot 2's record names 1 only as
    # the config's version of its time, so it is not named
    r = h.coffer("tenant", "retire-key", "acme", "1")
    ok(r.returncode == 1 and s1[:8] in r.stderr and
       s2[:8] not in r.stderr and "retention apply" in r.stderr,
       "retire-key 1 refused naming snapshot 1 only", r.stderr)
    with open(h.conf, "a") as f:
        f.write("[retention]\nkeep_last = 1\n")
    r = h.coffer("retention", "apply", "acme")
    ok(r.returncode == 0 and [x["id"] for x in snaps()] == [s2],
       "retention removes snapshot 1", r.stdout + r.stderr)
    r = h.coffer("tenant", "retire-key", "acme", "1")
    ok(r.returncode == 0 and
       not os.path.exists(os.path.join(TDIR, "keys", "v1.wk")),
       "retire-key 1 once the repository's config is re-keyed",
       r.stdout + r.stderr)
    r = h.coffer("--json", "tenant", "show", "acme")
    ok(r.returncode == 0 and 1 in json.loads(r.stdout).get(
        "retired_versions", []), "tenant show lists 1 as retired",
       r.stdout)

    p = h.mount("acme")
    ok(tree(h.mp) == t2, "the store mounts and reads after retiring 1")
    h.umount(p)
    out = os.path.join(h.t, "r2")
    r = h.coffer("restore", "acme", s2, "--target", out)
    ok(r.returncode == 0 and tree(out) == t2,
       "snapshot 2 restores without version 1", r.stderr)
    r = h.coffer("--json", "backup", "acme")
    j = json.loads(r.stdout) if r.returncode == 0 else {}
    ok(r.returncode == 0, "backup 3 without version 1", r.stderr)
    ok(j.get("new_bytes", 1 << 30) < 300000,
       "backup 3 of the same files stores no data blob", r.stdout)
    s3 = j.get("snapshot", "latest")
    # the same bytes through stdin are chunked and hashed with I anew:
    # found in a pack written before the re-key (C carried)
    r = h.coffer("--json", "backup", "acme", "--stdin", "--name", "x",
                 stdin=b_files["b0"], text=False)
    j = json.loads(r.stdout) if r.returncode == 0 else {}
    ok(r.returncode == 0 and j.get("new_blobs") == 1 and
       j.get("new_bytes", 1 << 30) < 300000,
       "dedup: a stdin backup of a file's bytes stores only its tree",
       r.stdout + r.stderr)
    out = os.path.join(h.t, "r3")
    r = h.coffer("restore", "acme", s3, "--target", out)
    ok(r.returncode == 0 and tree(out) == t2, "backup 3 restores",
       r.stderr)
    r = h.coffer("verify", "acme", "--read-data")
    ok(r.returncode == 0, "verify --read-data", r.stdout + r.stderr)
finally:
    h.cleanup()
tap.done()
