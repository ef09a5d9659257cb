#!/usr/bin/env python3
"""writeonly_cli.py - write-only backup agents through the CLI
(docs/write-only.md): `coffer tenant writer-key` exports a credential
(0600, never printed); `coffer backup --writer-key` runs on a host with
no coffer home at all, or an empty one, and adds snapshots; with only the
credential no object of the repository opens (every object is tried with
every secret it holds, as an AES-256-GCM key and as the parent of object
keys, in Python's `cryptography`, independently of coffer); the full keys
restore byte-identical files and `verify --read-data` passes; a second
agent run adds almost nothing; a tampered, exposed or foreign credential
is refused with a clear message; the credential never appears in output,
the audit log or argv.  TAP output."""
import hashlib
import json
import os
import stat
import subprocess

import cftest

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TAP = cftest.Tap()
ok = TAP.ok
H = cftest.Home("cf_wo.", "write-only test passphrase")
T, HOME = H.t, H.home
coffer = H.coffer
URL = "file://" + os.path.join(T, "repo-acme")
URL_B = "file://" + os.path.join(T, "repo-globex")
KEY = os.path.join(T, "acme.wkey")
KEY_B = os.path.join(T, "globex.wkey")
# The agent's host: no coffer home, no passphrase, no KMS.
AGENT = {k: v for k, v in os.environ.items()
         if not k.startswith("COFFER_") or k == "COFFER"}
AGENT["COFFER_HOME"] = os.path.join(T, "no-such-home")
OUTPUTS = []


def run(*args, env=None, stdin=None):
    r = subprocess.run([cftest.COFFER, *args], capture_output=True,
                       env=env or H.env, input=stdin, timeout=300)
    OUTPUTS.append(r.stdout + r.stderr)
    return r


def sha(b):
    return hashlib.sha256(b).hexdigest()


def tree_state(root):
    return cftest.tree_state(root, hash_data=True)


def repo_objects(url):
    root = url[len("file://"):]
    for d, _, files in os.walk(root):
        for f in files:
            if f.startswith(".tmp-"):
                continue
            p = os.path.join(d, f)
            kind = os.path.relpath(p, root).split(os.sep)[0]
            with open(p, "rb") as fh:
                yield kind, p, fh.read()


def repo_size(url):
    return sum(len(b) for _, _, b in repo_objects(url))


def derive_id(key, label, ident):
    return hashlib.blake2b(bytes([len(label)]) + label + ident,
                           digest_size=32, key=key).digest()


def aead_opens(key, kind, obj):
    """1 if key opens the object's first AEAD (body or pack trailer)."""
    g = AESGCM(key)
    tries = []
    if kind == "data":
        tl = int.from_bytes(obj[-4:], "little")
        if 28 <= tl <= len(obj) - 4:
            at = len(obj) - 4 - tl
            tries.append((obj[at:at + 12], obj[at + 12:len(obj) - 4]))
    else:
        for pre in (32, 112):
            if len(obj) >= pre + 28:
                tries.append((obj[pre:pre + 12], obj[pre + 12:]))
    for nonce, ct in tries:
        try:
            g.decrypt(nonce, ct, obj[:32])
            return 1
        except Exception:
            pass
    return 0


try:
    A = os.urandom(3 << 20)
    B = os.urandom(2 << 20) + b"coffer write-only agent\n" * 100000
    B2 = B[:1 << 20] + b"changed" + B[1 << 20:]

    r = run("tenant", "create", "acme")
    ok(r.returncode == 0, "tenant acme created", r.stderr)
    r = run("tenant", "create", "globex")
    ok(r.returncode == 0, "tenant globex created", r.stderr)
    r = run("backup", "acme", "--stdin", "--name", "full.bin", "--repo", URL,
            "--json", stdin=A)
    ok(r.returncode == 0, "a full-key backup first", r.stderr)
    s0 = cftest.js(r).get("snapshot", "")

    # ---- export ----
    r = run("tenant", "writer-key", "acme", "--out", KEY, "--repo", URL)
    ok(r.returncode == 0, "tenant writer-key exports the credential",
       r.stderr)
    st = os.stat(KEY)
    ok(st.st_mode & 0o777 == 0o600 and st.st_size == 240,
       "the credential file is mode 0600 and 240 bytes", oct(st.st_mode))
    with open(KEY, "rb") as f:
        CRED = f.read()
    r = run("tenant", "writer-key", "acme", "--out", KEY, "--repo", URL)
    ok(r.returncode != 0 and b"not overwritten" in r.stderr,
       "an existing file is not overwritten", r.stderr)
    r = run("tenant", "writer-key", "acme", "--out", "-", "--repo", URL)
    ok(r.returncode == 2, "the credential is never written to stdout",
       r.stderr)
    r = run("tenant", "writer-key", "globex", "--out", KEY_B, "--repo",
            URL_B)
    ok(r.returncode == 0, "globex's credential (creates its repository)",
       r.stderr)

    # ---- the agent: no home at all ----
    r = run("backup", "acme", "--writer-key", KEY, "--repo", URL, "--stdin",
            "--name", "db.sql", "--json", env=AGENT, stdin=B)
    ok(r.returncode == 0, "a write-only backup on a host with no home",
       r.stderr)
    ok(not os.path.exists(AGENT["COFFER_HOME"]),
       "the agent created no home")
    s1 = cftest.js(r).get("snapshot", "")
    size1 = repo_size(URL)
    empty = os.path.join(T, "empty-home")
    os.makedirs(empty)
    env2 = dict(AGENT, COFFER_HOME=empty)
    r = run("backup", "acme", "--writer-key", KEY, "--repo", URL, "--stdin",
            "--name", "db.sql", "--json", env=env2, stdin=B)
    j = cftest.js(r)
    ok(r.returncode == 0 and j.get("new_blobs") == 1 and
       j.get("new_bytes", 1 << 20) < 1024,
       "a second run on an empty home stores only its new tree blob",
       r.stdout + r.stderr)
    size2 = repo_size(URL)
    ok(0 < size2 - size1 < 2048,
       f"dedup: the second 4.4 MiB run added {size2 - size1} bytes "
       "(its tree blob, an index and the snapshot)")
    s2 = cftest.js(r).get("snapshot", "")
    r = run("backup", "acme", "--writer-key", KEY, "--repo", URL, "--stdin",
            "--name", "db.sql", "--json", env=env2, stdin=B2)
    size3 = repo_size(URL)
    ok(r.returncode == 0 and 0 < size3 - size2 < len(B2) // 2,
       f"a 7-byte insertion stores only the chunks around it "
       f"({size3 - size2} of {len(B2)} bytes)", r.stderr)
    s3 = cftest.js(r).get("snapshot", "")
    ok(os.listdir(empty) == [], "the agent wrote nothing into the home")

    # ---- a plain directory on the agent's host (--dir) ----
    DUMPS = os.path.join(T, "dumps")
    OUTSIDE = os.path.join(T, "outside")
    os.makedirs(os.path.join(DUMPS, "pg/wal"))
    os.makedirs(OUTSIDE)
    SECRET = os.urandom(300000)
    with open(os.path.join(OUTSIDE, "secret"), "wb") as f:
        f.write(SECRET)
    DUMP = os.urandom(1 << 20) + b"INSERT INTO t VALUES (1);\n" * 40000
    with open(os.path.join(DUMPS, "pg/db.sql"), "wb") as f:
        f.write(DUMP)
    with open(os.path.join(DUMPS, "pg/wal/seg"), "wb") as f:
        f.write(b"wal")
        f.seek(4 << 20)
        f.write(b"end")
    os.link(os.path.join(DUMPS, "pg/db.sql"), os.path.join(DUMPS, "latest"))
    os.symlink(OUTSIDE, os.path.join(DUMPS, "out-dir"))
    os.symlink(os.path.join(OUTSIDE, "secret"), os.path.join(DUMPS, "out-f"))
    os.mkfifo(os.path.join(DUMPS, "pipe"), 0o600)
    os.setxattr(os.path.join(DUMPS, "pg/db.sql"), "user.lsn", b"0/16B6C50")
    if os.geteuid() == 0:
        os.chown(os.path.join(DUMPS, "pg"), 999, 998)
        os.chown(os.path.join(DUMPS, "pg/db.sql"), 999, 998)
    os.chmod(os.path.join(DUMPS, "pg/wal"), 0o700)
    os.chmod(os.path.join(DUMPS, "pg/db.sql"), 0o640)
    os.utime(os.path.join(DUMPS, "pg/db.sql"), ns=(3, 1_700_000_000_123_456_789))
    os.utime(os.path.join(DUMPS, "pg/wal"), ns=(4, 1_600_000_000_987_654_321))
    os.utime(os.path.join(DUMPS, "pg"), ns=(5, 1_500_000_000_000_000_001))
    DSTATE = tree_state(DUMPS)
    r = run("backup", "acme", "--writer-key", KEY, "--repo", URL, "--dir",
            DUMPS, "--json", env=AGENT)
    j = cftest.js(r)
    ok(r.returncode == 0 and j.get("write_only") is True and
       j.get("consistency") == "none" and j.get("files") == 6 and
       j.get("dirs") == 2,
       "an agent backs up a plain directory (--dir): 6 files, 2 dirs",
       r.stdout + r.stderr)
    sd1 = j.get("snapshot", "")
    size4 = repo_size(URL)
    r = run("backup", "acme", "--writer-key", KEY, "--repo", URL, "--dir",
            DUMPS, "--json", env=AGENT)
    j = cftest.js(r)
    sd2 = j.get("snapshot", "")
    ok(r.returncode == 0 and j.get("new_blobs") == 0 and
       0 < repo_size(URL) - size4 < 2048,
       f"the same directory again stores no blob (repository "
       f"+{repo_size(URL) - size4} bytes: an index and the snapshot)",
       r.stdout + r.stderr)
    r = run("backup", "acme", "--writer-key", KEY, "--repo", URL, "--dir",
            os.path.join(T, "no-such-dir"), env=AGENT)
    ok(r.returncode == 1 and b"no-such-dir" in r.stderr,
       "a missing directory: exit 1, named", r.stderr)

    # ---- with only the credential, nothing opens ----
    secrets = [CRED[o:o + 32] for o in (80, 112, 144, 176)]
    opened, tried, kinds, idx_open = [], 0, {}, 0
    for kind, path, obj in repo_objects(URL):
        kinds[kind] = kinds.get(kind, 0) + 1
        keys = []
        for s in secrets:
            keys += [s, derive_id(s, b"bk-object", obj[16:32])]
        n = sum(aead_opens(k, kind, obj) for k in keys)
        tried += 1
        if kind == "index":
            idx_open += n > 0   # by design: blob ids, sizes, pack names
            continue
        if n:
            opened.append(path)
    ok(idx_open == kinds.get("index"),
       "the checker works: it opens every index object with X",
       f"{idx_open} of {kinds.get('index')}")
    ok(tried >= 8 and not opened and kinds.get("snapshots") == 6
       and kinds.get("data", 0) >= 3,
       f"no pack, snapshot, lock or config opens with the credential's "
       f"secrets ({tried} objects: {kinds})", "\n".join(opened))
    leak = [p for _, p, b in repo_objects(URL)
            if B[4096:4160] in b or A[4096:4160] in b]
    ok(not leak, "no plaintext in the repository's bytes", leak)
    r = run("restore", "acme", "latest", "--repo", URL, "--to-tar",
            os.path.join(T, "x.tar"), env=AGENT)
    ok(r.returncode != 0 and not os.path.exists(os.path.join(T, "x.tar")),
       "the agent's host cannot restore", r.stderr)

    # ---- the full keys restore and verify everything ----
    tgt = os.path.join(T, "restored")
    os.makedirs(tgt)
    for sid, name, want in ((s0, "full.bin", A), (s1, "db.sql", B),
                            (s3, "db.sql", B2)):
        d = os.path.join(tgt, sid[:8])
        r = run("restore", "acme", sid, "--repo", URL, "--target", d)
        got = b""
        if r.returncode == 0:
            with open(os.path.join(d, name), "rb") as f:
                got = f.read()
        ok(r.returncode == 0 and sha(got) == sha(want),
           f"full keys restore {name} of snapshot {sid[:8]} identically",
           r.stderr)
    d = os.path.join(tgt, "dumps")
    r = run("restore", "acme", sd1, "--repo", URL, "--target", d)
    got = tree_state(d)
    ok(r.returncode == 0 and got == DSTATE,
       "full keys restore the agent's directory exactly (content, holes, "
       "mode, owner, mtime ns, user xattrs, hard link, symlinks, fifo)",
       r.stderr.decode() + str({k: (DSTATE.get(k), got.get(k))
                       for k in set(DSTATE) | set(got)
                       if DSTATE.get(k) != got.get(k)}))
    ok(os.path.islink(os.path.join(d, "out-dir")) and
       os.readlink(os.path.join(d, "out-dir")) == OUTSIDE and
       os.path.islink(os.path.join(d, "out-f")) and
       not [k for k, v in got.items() if v[6] == sha(SECRET)],
       "symlinks out of the directory are kept as symlinks, never "
       "followed (nothing of the outside is in the snapshot)", sorted(got))
    st = os.stat(os.path.join(d, "pg/wal/seg"))
    ok(st.st_blocks * 512 < 1 << 20, "holes restored as holes",
       st.st_blocks)
    r = run("snapshots", "acme", "--repo", URL, "--json")
    ids = [e.get("id") for e in (cftest.js(r) or [])]
    ok(r.returncode == 0 and len(ids) == 6 and s1 in ids and s2 in ids and
       s3 in ids and sd1 in ids, "snapshots lists the agent's snapshots",
       r.stderr + r.stdout)
    r = run("verify", "acme", "--read-data", "--repo", URL)
    ok(r.returncode == 0, "verify --read-data passes", r.stdout + r.stderr)
    r = run("backup", "acme", "--stdin", "--name", "db.sql", "--repo", URL,
            "--json", stdin=B)
    j = cftest.js(r)
    ok(r.returncode == 0 and j.get("new_blobs") == 1 and
       j.get("new_bytes", 1 << 20) < 1024,
       "a full-key backup dedups against the agent's blobs (only its tree "
       "is new)", r.stdout)

    # ---- refusals ----
    r = run("backup", "acme", "--writer-key", KEY_B, "--repo", URL,
            "--stdin", "--name", "x", env=AGENT, stdin=b"x")
    ok(r.returncode == 4 and b"another repository or tenant" in r.stderr,
       "another tenant's credential is refused", r.stderr)
    bad = os.path.join(T, "bad.wkey")
    with open(bad, "wb") as f:
        f.write(CRED[:130] + bytes([CRED[130] ^ 1]) + CRED[131:])
    os.chmod(bad, 0o600)
    before = repo_size(URL)
    r = run("backup", "acme", "--writer-key", bad, "--repo", URL, "--stdin",
            "--name", "x", env=AGENT, stdin=b"x")
    ok(r.returncode == 3 and b"damaged" in r.stderr and
       repo_size(URL) == before,
       "a damaged credential is refused and nothing written", r.stderr)
    os.chmod(KEY, 0o644)
    r = run("backup", "acme", "--writer-key", KEY, "--repo", URL, "--stdin",
            "--name", "x", env=AGENT, stdin=b"x")
    ok(r.returncode == 4 and b"chmod 600" in r.stderr,
       "a credential others may read is refused", r.stderr)
    os.chmod(KEY, 0o600)
    r = run("backup", "acme", "--writer-key", KEY, "--repo", URL, env=AGENT)
    ok(r.returncode == 2, "--writer-key needs a source", r.stderr)
    r = run("backup", "acme", "--writer-key", KEY, "--repo", URL, "--dir",
            DUMPS, "--stdin", "--name", "x", env=AGENT)
    ok(r.returncode == 2, "two sources at once are a usage error", r.stderr)

    # A changed sealed key: a clear error, never other data.
    sp = os.path.join(URL[len("file://"):], "snapshots", s2)
    with open(sp, "rb") as f:
        obj = bytearray(f.read())
    ok(obj[8] == 2 and obj[11] == 0x81,
       "the agent's snapshot is a version 2 object with a sealed key, "
       "named by SHA-256", obj[:12].hex())
    ok(hashlib.sha256(obj).hexdigest() == s2,
       "its name is the SHA-256 of its bytes (sha256sum checks it)", s2)
    obj[50] ^= 1
    with open(sp, "wb") as f:
        f.write(obj)
    d = os.path.join(T, "tampered")
    r = run("restore", "acme", s2, "--repo", URL, "--target", d)
    ok(r.returncode == 3 and not os.path.exists(os.path.join(d, "db.sql")),
       "a snapshot whose sealed key was changed restores nothing (exit 3)",
       r.stderr)
    r = run("verify", "acme", "--repo", URL)
    ok(r.returncode == 3 and s2.encode() in r.stdout + r.stderr,
       "verify names the snapshot whose sealed key was changed",
       r.stdout + r.stderr)

    # ---- never in output, logs or argv ----
    marks = [CRED.hex().encode(), CRED[112:144], CRED[176:208],
             CRED[112:144].hex().encode()]
    out_leak = [o[:200] for o in OUTPUTS if any(m in o for m in marks)]
    ok(not out_leak, f"no output of {len(OUTPUTS)} runs holds the credential",
       out_leak)
    home_leak = []
    for d, _, files in os.walk(HOME):
        for f in files:
            with open(os.path.join(d, f), "rb") as fh:
                b = fh.read()
            if any(m in b for m in marks):
                home_leak.append(os.path.join(d, f))
    ok(not home_leak, "the home (audit log included) never holds it",
       home_leak)
    r = run("audit", "show", "--tenant", "acme")
    ok(b"backup.writer_key" in r.stdout, "the export is audited", r.stdout)
finally:
    H.cleanup()
TAP.done()
