#!/usr/bin/python3
"""backup_tar.py - coffer backup --tar FILE|- (docs/backup.md, Tar
input): archives made by GNU tar (pax with xattrs and sparse files, GNU
format with long names and old-style sparse headers) and by Python's
tarfile (pax xattrs, ustar) become snapshots that `coffer restore
--target` gives back byte for byte and metadata for metadata (mode,
owner, mtime and atime in ns, user.* xattrs, symlinks, hard links, fifos,
devices, holes); standard input and gzip/xz/bzip2/zstd; dedup of the
same archive; restore --to-tar writes holes as sparse entries (a 10 GiB
sparse file is a small tar GNU tar extracts exactly); --json; the audit record; hostile entries (absolute
paths, "..", a symlink to climb through, duplicates, hard links to
missing or later names, a file over a directory, a 5000-byte symlink
target, a 41-bit owner id) are handled safely; a
truncated or damaged archive saves no snapshot.  TAP output.  Needs root
(owners, devices); no FUSE."""
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile

import cftest

if os.geteuid() != 0:
    print("1..0 # SKIP needs root (owners and devices)")
    sys.exit(0 if os.environ.get("CI") != "true" else 1)

TAP = cftest.Tap()
ok = TAP.ok
H = cftest.Home("cf_tar.", "tar test passphrase")
T, HOME, ENV = H.t, H.home, H.env
coffer = H.coffer


def tree_state(root):
    return cftest.tree_state(root, all_xattrs=True)


def snapshots():
    r = coffer("--json", "snapshots", "acme")
    return json.loads(r.stdout) if r.returncode == 0 else None


def restore(sid, name):
    out = os.path.join(T, name)
    r = coffer("restore", "acme", sid, "--target", out)
    return r, out


def repo_size():
    total = 0
    for d, _, files in os.walk(os.path.join(HOME, "repos", "acme")):
        for f in files:
            total += os.path.getsize(os.path.join(d, f))
    return total


def pax_ns(v):
    """A pax time ("123.456") as integer ns, exactly."""
    s, _, frac = v.partition(".")
    return int(s) * 10**9 + int((frac + "000000000")[:9])


def data_regions(path):
    """[(start, end)] of a file's data as SEEK_DATA/SEEK_HOLE give it."""
    out = []
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        off = 0
        while off < size:
            try:
                d = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break
            h = os.lseek(fd, d, os.SEEK_HOLE)
            out.append((d, h))
            off = h
    return out


def same_sparse(a, b):
    """Byte-for-byte equal without reading the holes: both files' data
    regions are read from both (outside them both are zeros)."""
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for s, e in data_regions(a) + data_regions(b):
            fa.seek(s)
            fb.seek(s)
            if fa.read(e - s) != fb.read(e - s):
                return False
    return True


def on_pty(args, cols=60, stdin=None):
    return cftest.on_pty(ENV, args, cols=cols, stdin=stdin)


progress_lines = cftest.progress_lines


def add(tf, name, data=b"", **kw):
    ti = tarfile.TarInfo(name)
    for k, v in kw.items():
        setattr(ti, k, v)
    if ti.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    else:
        tf.addfile(ti)


try:
    r = coffer("tenant", "create", "acme")
    assert r.returncode == 0, r.stderr

    # ---- a source tree with every type the tree format holds ----
    src = os.path.join(T, "src")
    os.makedirs(os.path.join(src, "dir/sub"))
    longdir = os.path.join(src, "dir", "L" * 200, "M" * 120)
    os.makedirs(longdir)
    with open(os.path.join(longdir, "N" * 150 + ".txt"), "wb") as f:
        f.write(b"a long path\n")
    big = os.urandom(3 << 20)
    with open(os.path.join(src, "big.bin"), "wb") as f:
        f.write(big)
    with open(os.path.join(src, "dir/file.txt"), "wb") as f:
        f.write(b"hello tar\n" * 1000)
    open(os.path.join(src, "empty"), "wb").close()
    sp = os.path.join(src, "sparse")
    with open(sp, "wb") as f:
        f.write(b"head")
        f.seek(6 << 20)
        f.write(b"tail")
        f.truncate(8 << 20)
    with open(os.path.join(src, "dir/sub/tailhole"), "wb") as f:
        f.write(os.urandom(5000))
        f.truncate(3 << 20)
    os.symlink("dir/file.txt", os.path.join(src, "link"))
    os.symlink("/nonexistent/target", os.path.join(src, "dir/dangling"))
    os.link(os.path.join(src, "big.bin"), os.path.join(src, "dir/hard"))
    os.mkfifo(os.path.join(src, "fifo"), 0o640)
    os.mknod(os.path.join(src, "dir/null"), 0o620 | stat.S_IFCHR,
             os.makedev(1, 3))
    os.setxattr(os.path.join(src, "dir/file.txt"), "user.color", b"blue")
    os.setxattr(os.path.join(src, "dir/file.txt"), "user.empty", b"")
    os.setxattr(os.path.join(src, "dir"), "user.dir", b"x" * 300)
    os.chmod(os.path.join(src, "big.bin"), 0o4751)
    os.chmod(os.path.join(src, "dir/sub"), 0o1777)
    os.chmod(os.path.join(src, "empty"), 0o000)
    os.chown(os.path.join(src, "dir/file.txt"), 1234, 5678)
    os.chown(os.path.join(src, "dir"), 4321, 8765)
    os.utime(os.path.join(src, "empty"), ns=(1, 1_000_000_123))
    os.utime(os.path.join(src, "dir/sub"), ns=(2, 978_307_200_987_654_321))
    for d in ("dir", os.path.dirname(longdir), longdir):
        os.utime(os.path.join(src, d), ns=(5, 1_600_000_000_123_456_789))
    before = tree_state(src)

    # ---- GNU tar, pax format: xattrs, sparse, ns times ----
    ptar = os.path.join(T, "pax.tar")
    r = subprocess.run(["tar", "--format=posix", "--xattrs",
                        "--xattrs-include=user.*", "-S", "-cf", ptar,
                        "-C", src, "."], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ok(os.path.getsize(ptar) < 4 << 20,
       "GNU tar stored the sparse files sparse", os.path.getsize(ptar))
    r = coffer("--json", "backup", "acme", "--tar", ptar, "--tag", "pax")
    s1 = cftest.js(r)
    nfiles = sum(1 for v in before.values() if v[0] != stat.S_IFDIR)
    ndirs = sum(1 for v in before.values() if v[0] == stat.S_IFDIR)
    ok(r.returncode == 0 and s1.get("consistency") == "stream" and
       s1.get("left_out") == 0,
       "backup --tar of a GNU pax archive (consistency stream)",
       r.stdout + r.stderr)
    ok(s1.get("files") == nfiles and s1.get("dirs") == ndirs and
       s1.get("bytes") == sum(v[5] for v in before.values()
                              if v[0] == stat.S_IFREG),
       f"--json counts {nfiles} files, {ndirs} dirs and the bytes",
       r.stdout)
    ok(s1.get("new_bytes", 1 << 30) < 4 << 20,
       "holes are not stored as data", s1.get("new_bytes"))
    r, out = restore(s1.get("snapshot", "x"), "out-pax")
    with tarfile.open(ptar) as tf:
        want = {os.path.normpath(m.name): pax_ns(m.pax_headers["atime"])
                for m in tf.getmembers()
                if "atime" in m.pax_headers and not m.issym() and
                m.name not in (".", "./")}
    got = {k: os.lstat(os.path.join(out, k)).st_atime_ns for k in want}
    # atime first: reading the tree (tree_state) may update it.
    ok(want and got == want, f"atime in ns as the pax headers give it "
       f"({len(want)} entries)",
       "\n".join(f"{k}: {got[k]} != {want[k]}" for k in want
                 if got[k] != want[k])[:2000])

    after = tree_state(out)
    ok(r.returncode == 0 and before == after,
       "restore gives the tree back: content, mode, owner, mtime ns, "
       "xattrs, symlinks, hard links, fifo, device, long names",
       r.stderr + cftest.tree_diff(before, after))
    st = os.stat(os.path.join(out, "sparse"))
    st2 = os.stat(os.path.join(out, "dir/sub/tailhole"))
    ok(st.st_size == 8 << 20 and st.st_blocks * 512 < 1 << 20 and
       st2.st_size == 3 << 20 and st2.st_blocks * 512 < 1 << 20,
       "sparse files restored with real holes (inner and trailing)",
       f"{st.st_blocks} {st2.st_blocks}")
    ok(os.stat(os.path.join(out, "big.bin")).st_ino ==
       os.stat(os.path.join(out, "dir/hard")).st_ino,
       "the hard link pair is one inode again")
    # ---- the same archive again: dedup ----
    size1 = repo_size()
    r = coffer("--json", "backup", "acme", "--tar", ptar)
    s2 = cftest.js(r)
    grew = repo_size() - size1
    ok(r.returncode == 0 and s2.get("new_bytes", 1 << 30) < 64 << 10 and
       grew < 64 << 10,
       f"the same archive again adds little ({s2.get('new_bytes')} new "
       f"bytes, repository +{grew})", r.stderr)

    # ---- GNU format: long names, old-style sparse headers ----
    gtar = os.path.join(T, "gnu.tar")
    r = subprocess.run(["tar", "--format=gnu", "-S", "-cf", gtar, "-C",
                        src, "."], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = coffer("--json", "backup", "acme", "--tar", gtar)
    r2, out = restore(cftest.js(r).get("snapshot", "x"), "out-gnu")
    after = tree_state(out)
    # The GNU format keeps neither xattrs nor sub-second times.
    def gnu(st):
        return {k: v[:4] + (v[4] // 10**9 * 10**9,) + v[5:7] + ({},) +
                v[8:] for k, v in st.items()}
    nox = gnu(before)
    ok(r.returncode == 0 and r2.returncode == 0 and nox == gnu(after) and
       os.stat(os.path.join(out, "sparse")).st_blocks * 512 < 1 << 20,
       "a GNU-format archive (long names, GNU sparse) round trips",
       r.stderr + r2.stderr + cftest.tree_diff(nox, after))

    # ---- standard input, compressed ----
    for comp in ("gzip", "xz", "bzip2", "zstd"):
        if shutil.which(comp) is None:
            TAP.skip(f"--tar - with {comp}", f"no {comp}")
            continue
        with open(ptar, "rb") as f:
            z = subprocess.run([comp, "-c"], stdin=f, capture_output=True)
        r = subprocess.run([cftest.COFFER, "--json", "backup", "acme",
                            "--tar", "-"], input=z.stdout,
                           capture_output=True, env=ENV, timeout=120)
        r2, out = restore(cftest.js(r).get("snapshot", "x"), "out-" + comp)
        after = tree_state(out)
        ok(r.returncode == 0 and before == after and
           cftest.js(r).get("new_bytes", 1 << 30) < 64 << 10,
           f"--tar - reads a {comp} stream from stdin, dedups, round trips",
           r.stderr.decode() + r2.stderr + cftest.tree_diff(before, after))

    # ---- Python tarfile: pax xattrs (one outside user.*), ustar ----
    pyt = os.path.join(T, "py.tar")
    with tarfile.open(pyt, "w", format=tarfile.PAX_FORMAT) as tf:
        add(tf, "py/data.bin", b"\x00\x01binary" * 100, mode=0o640,
            uid=77, gid=88, mtime=1_700_000_000.5,
            pax_headers={"SCHILY.xattr.user.note": "caf\u00e9",
                         "SCHILY.xattr.security.evil": "x",
                         "SCHILY.xattr.trusted.evil": "y"})
        add(tf, "py/caf\u00e9-\u65e5\u672c.txt", b"utf-8 name\n")
        add(tf, "py/" + "x" * 250, b"a 250-byte name\n")
    r = coffer("--json", "backup", "acme", "--tar", pyt)
    r2, out = restore(cftest.js(r).get("snapshot", "x"), "out-py")
    p = os.path.join(out, "py/data.bin")
    st = os.lstat(p) if os.path.exists(p) else None
    ok(r.returncode == 0 and r2.returncode == 0 and st is not None and
       open(p, "rb").read() == b"\x00\x01binary" * 100 and
       stat.S_IMODE(st.st_mode) == 0o640 and st.st_uid == 77 and
       st.st_gid == 88 and st.st_mtime_ns == 1_700_000_000_500_000_000,
       "a Python pax archive round trips (content, mode, owner, mtime)",
       r.stderr + r2.stderr)
    ok(st is not None and os.getxattr(p, "user.note") ==
       "caf\u00e9".encode() and
       not [k for k in os.listxattr(p) if not k.startswith("user.")] and
       "not kept" in r.stderr,
       "user.* xattrs from pax headers kept; security.* and trusted.* "
       "dropped and said so", f"{os.listxattr(p) if st else ''} "
       f"{r.stderr}")
    ok(os.path.isfile(os.path.join(out, "py/caf\u00e9-\u65e5\u672c.txt"))
       and os.path.isfile(os.path.join(out, "py/" + "x" * 250)),
       "UTF-8 and 250-byte names kept", os.listdir(os.path.join(out, "py"))
       if os.path.isdir(os.path.join(out, "py")) else r2.stderr)
    ust = os.path.join(T, "ustar.tar")
    with tarfile.open(ust, "w", format=tarfile.USTAR_FORMAT) as tf:
        add(tf, "u/" + "p" * 90 + "/" + "q" * 90, b"ustar prefix\n",
            mode=0o600, mtime=1_500_000_000)
        add(tf, "u/dev", type=tarfile.BLKTYPE, devmajor=7, devminor=9,
            mode=0o600)
    r = coffer("--json", "backup", "acme", "--tar", ust)
    r2, out = restore(cftest.js(r).get("snapshot", "x"), "out-ustar")
    f = os.path.join(out, "u/" + "p" * 90 + "/" + "q" * 90)
    dv = os.path.join(out, "u/dev")
    ok(r.returncode == 0 and os.path.isfile(f) and
       open(f, "rb").read() == b"ustar prefix\n" and
       os.stat(f).st_mtime_ns == 1_500_000_000 * 10**9 and
       stat.S_ISBLK(os.lstat(dv).st_mode) and
       os.lstat(dv).st_rdev == os.makedev(7, 9),
       "a ustar archive (prefix field, block device) round trips",
       r.stderr + r2.stderr)

    # ---- many hard links: restore needs no descriptor per group ----
    hl = os.path.join(T, "hardlinks")
    os.makedirs(os.path.join(hl, "a"))
    os.makedirs(os.path.join(hl, "b"))
    for i in range(300):
        f = os.path.join(hl, "a", f"f{i}")
        with open(f, "w") as fh:
            fh.write(str(i))
        os.link(f, os.path.join(hl, "b", f"l{i}"))
    htar = os.path.join(T, "hardlinks.tar")
    subprocess.run(["tar", "-C", hl, "-cf", htar, "."], check=True)
    r = coffer("--json", "backup", "acme", "--tar", htar)
    hout = os.path.join(T, "out-hardlinks")

    def low_nofile():
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    r2 = subprocess.run([cftest.COFFER, "restore", "acme",
                         cftest.js(r).get("snapshot", "x"), "--target",
                         hout], capture_output=True, text=True, env=ENV,
                        timeout=120, preexec_fn=low_nofile)
    linked = [i for i in range(300)
              if os.path.exists(os.path.join(hout, "a", f"f{i}")) and
              os.path.exists(os.path.join(hout, "b", f"l{i}")) and
              os.path.samefile(os.path.join(hout, "a", f"f{i}"),
                               os.path.join(hout, "b", f"l{i}"))]
    ok(r.returncode == 0 and r2.returncode == 0 and len(linked) == 300,
       "300 hard-link groups restore as links with 64 descriptors allowed",
       r2.stderr[-500:] + f" linked {len(linked)}")

    # ---- hostile entries ----
    victim = os.path.join(T, "victim")
    os.makedirs(victim)
    host = os.path.join(T, "hostile.tar")
    with tarfile.open(host, "w", format=tarfile.PAX_FORMAT) as tf:
        add(tf, "/abs/file", b"was absolute\n")
        add(tf, "../escape", b"x")
        add(tf, "a/../../escape2", b"x")
        add(tf, "evil", type=tarfile.SYMTYPE, linkname=victim)
        add(tf, "evil/pwned", b"through the symlink\n")
        add(tf, "dup", b"one\n")
        add(tf, "dup", b"two\n")
        add(tf, "ghostlink", type=tarfile.LNKTYPE, linkname="ghost")
        add(tf, "early", type=tarfile.LNKTYPE, linkname="later")
        add(tf, "later", b"later\n")
        add(tf, "d/x", b"in d\n")
        add(tf, "d", b"a file over a directory\n")
        add(tf, "ok\x1b[31m", b"control bytes in a name\n")
        add(tf, "dotdir/./f", b"dot\n")
        add(tf, "h1", b"linked\n")
        add(tf, "sub/h2", type=tarfile.LNKTYPE, linkname="./h1")
        add(tf, "h1", b"replaced\n")
        add(tf, "longlink", type=tarfile.SYMTYPE, linkname="t" * 5000)
        add(tf, "bigid", b"x", uid=1 << 40)
    nsnap = len(snapshots())
    r = coffer("--json", "backup", "acme", "--tar", host)
    j = cftest.js(r)
    ok(r.returncode == 1 and j.get("left_out") == 8 and
       "left out" in r.stderr,
       "hostile entries are left out and counted; the backup exits 1",
       r.stdout + r.stderr)
    named = ["../escape", "a/../../escape2", "evil/pwned", "ghostlink",
             "early", "d", "longlink", "bigid"]
    ok(all(f"tar entry {n}: " in r.stderr for n in named),
       "each is named on stderr", r.stderr)
    ok("\\033[31m" in r.stderr or "ok\x1b" not in r.stderr,
       "control bytes in names are escaped on stderr", r.stderr)
    r2, out = restore(j.get("snapshot", "x"), "out-hostile")
    got = sorted(os.path.relpath(os.path.join(d, f), out)
                 for d, ds, fs in os.walk(out) for f in fs + ds)
    ok(r2.returncode == 0 and os.listdir(victim) == [] and
       not os.path.exists(os.path.join(T, "escape")) and
       not os.path.exists(os.path.join(T, "escape2")) and
       not os.path.exists("/abs/file"),
       "restore writes nothing outside the target", got)
    ok(open(os.path.join(out, "abs/file"), "rb").read() ==
       b"was absolute\n", "an absolute name is restored under the target "
       "(leading '/' removed)", got)
    ok(os.path.islink(os.path.join(out, "evil")) and
       os.readlink(os.path.join(out, "evil")) == victim,
       "the symlink itself is kept", got)
    ok(open(os.path.join(out, "dup"), "rb").read() == b"two\n",
       "a duplicate name: the later entry wins, as tar -x does")
    ok(open(os.path.join(out, "later"), "rb").read() == b"later\n" and
       not os.path.exists(os.path.join(out, "early")) and
       not os.path.exists(os.path.join(out, "ghostlink")),
       "hard links to missing or later names are left out", got)
    ok(os.path.isdir(os.path.join(out, "d")) and
       open(os.path.join(out, "d/x"), "rb").read() == b"in d\n",
       "a file over a directory with entries is left out", got)
    ok(open(os.path.join(out, "h1"), "rb").read() == b"replaced\n" and
       open(os.path.join(out, "sub/h2"), "rb").read() == b"linked\n" and
       os.stat(os.path.join(out, "h1")).st_ino !=
       os.stat(os.path.join(out, "sub/h2")).st_ino and
       open(os.path.join(out, "dotdir/f"), "rb").read() == b"dot\n",
       "a hard link keeps the old inode when its first name is replaced",
       got)
    ok(len(snapshots()) == nsnap + 1, "the rest was saved as a snapshot")

    # ---- truncated and damaged archives save nothing ----
    raw = open(ptar, "rb").read()
    with tarfile.open(ptar) as tf:
        mem = tf.getmembers()
    hdr = [m.offset for m in mem]
    big_m = [m for m in mem if m.isreg() and not m.issparse() and
             m.size > 1 << 20][0]
    cuts = {
        "cut inside a file's data": raw[:big_m.offset_data + 100000],
        "cut at an entry boundary (no end-of-archive block)":
            raw[:hdr[len(hdr) // 2]],
        "cut inside a header": raw[:hdr[len(hdr) // 2] + 200],
        "a header's checksum broken":
            raw[:hdr[2] + 20] + bytes([raw[hdr[2] + 20] ^ 0x55]) +
            raw[hdr[2] + 21:],
        "not a tar": os.urandom(50000),
        "empty input": b"",
    }
    z = subprocess.run(["gzip", "-c"], input=raw, capture_output=True).stdout
    cuts["a gzip stream cut short"] = z[:len(z) // 2]
    before_n = len(snapshots())
    before_size = repo_size()
    for what, data in cuts.items():
        r = subprocess.run([cftest.COFFER, "backup", "acme", "--tar", "-"],
                           input=data, capture_output=True, env=ENV,
                           timeout=120)
        ok(r.returncode == 1 and len(snapshots()) == before_n and
           r.stderr.strip(),
           f"{what}: exit 1, a message, no snapshot",
           f"{r.returncode} {r.stderr.decode(errors='replace')}")
    ok(repo_size() - before_size < 8 << 20,
       "failed runs leave at most unreferenced packs behind")
    r = coffer("verify", "acme")
    ok(r.returncode == 0, "verify passes after the failed runs",
       r.stdout + r.stderr)

    # ---- mutated archives: exit 0 or 1, never a crash ----
    # Bytes of the headers of three archives changed at random (a fixed
    # seed), some cut short: each run either saves a snapshot or fails
    # cleanly (in the ASan build a memory error or a leak is another
    # exit status), and every snapshot saved restores.
    import random
    rnd = random.Random(4)
    seeds = [open(host, "rb").read(), open(gtar, "rb").read()[:1 << 16],
             open(pyt, "rb").read()]
    mrepo = "file://" + os.path.join(T, "repo-mut")
    codes, bad = {}, []
    os.makedirs(os.path.join(T, "mut"))
    for i in range(60):
        b = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randint(1, 8)):
            b[rnd.randrange(min(len(b), 8192))] = rnd.randrange(256)
        if rnd.random() < 0.7:
            # Checksums made right again: the damage reaches the entry
            # handling, not only libarchive's header check.
            for k in range(0, len(b) - 511, 512):
                if b[k + 257:k + 262] == b"ustar":
                    b[k + 148:k + 156] = b" " * 8
                    b[k + 148:k + 156] = b"%06o\0 " % sum(b[k:k + 512])
        if rnd.random() < 0.2:
            b = b[:rnd.randrange(len(b))]
        r = subprocess.run([cftest.COFFER, "--json", "backup", "acme",
                            "--repo", mrepo, "--tar", "-"], input=bytes(b),
                           capture_output=True, env=ENV, timeout=120)
        codes[r.returncode] = codes.get(r.returncode, 0) + 1
        if r.returncode not in (0, 1):
            bad.append(f"{i}: {r.returncode} "
                       f"{r.stderr.decode(errors='replace')[-500:]}")
            continue
        sid = cftest.js(r).get("snapshot") if r.stdout.startswith(b"{") else None
        if sid:
            r2 = coffer("restore", "acme", sid, "--repo", mrepo,
                        "--target", os.path.join(T, "mut", str(i)))
            if r2.returncode != 0:
                bad.append(f"{i}: restore {r2.returncode} {r2.stderr}")
    ok(not bad and codes.get(0, 0) > 0 and codes.get(1, 0) > 0,
       f"60 mutated archives: exit 0 or 1 only ({codes}), every snapshot "
       "saved restores", "\n".join(bad))
    r = coffer("verify", "acme", "--repo", mrepo, "--read-data")
    ok(r.returncode == 0, "verify --read-data passes on their repository",
       r.stdout + r.stderr)

    # ---- usage ----
    r = coffer("backup", "acme", "--tar", ptar, "--stdin", "--name", "x")
    ok(r.returncode == 2, "--tar with --stdin is a usage error", r.stderr)
    r = coffer("backup", "acme", "--tar", os.path.join(T, "missing.tar"))
    ok(r.returncode == 1 and "missing.tar" in r.stderr,
       "a missing archive: exit 1, named", r.stderr)

    # ---- restore --to-tar writes sparse entries ----
    sd = os.path.join(T, "sparse-src")
    os.makedirs(sd)
    huge = os.path.join(sd, "huge")
    with open(huge, "wb") as f:
        f.truncate(10 << 30)
        f.seek(5 << 30)
        f.write(b"MIDDLE" * 1000)
        f.seek((10 << 30) - 3)
        f.write(b"END")
    with open(os.path.join(sd, "lead"), "wb") as f:
        f.seek(3 << 20)
        f.write(os.urandom(100000))
    with open(os.path.join(sd, "holes-only"), "wb") as f:
        f.truncate(7 << 20)
    with open(os.path.join(sd, "dense"), "wb") as f:
        f.write(os.urandom(700000))
    r = coffer("--json", "backup", "acme", "--dir", sd)
    sid = cftest.js(r).get("snapshot", "x")
    ok(r.returncode == 0 and cftest.js(r).get("bytes") == (10 << 30) +
       (3 << 20) + 100000 + (7 << 20) + 700000,
       "a 10 GiB sparse file backed up (--dir)", r.stdout + r.stderr)
    spt = os.path.join(T, "sparse.tar")
    r = coffer("restore", "acme", sid, "--to-tar", spt)
    ok(r.returncode == 0 and os.path.getsize(spt) < 1 << 20,
       f"restore --to-tar writes it as a sparse entry: the tar is "
       f"{os.path.getsize(spt) if os.path.exists(spt) else -1} bytes",
       r.stderr)
    t = subprocess.run(["tar", "-tvf", spt], capture_output=True, text=True)
    ok(t.returncode == 0 and "10737418240" in t.stdout,
       "GNU tar lists the 10 GiB file", t.stdout + t.stderr)
    sx = os.path.join(T, "sparse-x")
    os.makedirs(sx)
    t = subprocess.run(["tar", "-xf", spt, "-C", sx], capture_output=True,
                       text=True)
    bad = [n for n in os.listdir(sd) if not os.path.exists(
        os.path.join(sx, n)) or not same_sparse(os.path.join(sd, n),
                                               os.path.join(sx, n))]
    ok(t.returncode == 0 and not bad,
       "GNU tar extracts every file byte for byte (holes included)",
       t.stderr + str(bad))
    blocks = {n: os.stat(os.path.join(sx, n)).st_blocks * 512
              for n in os.listdir(sx)}
    ok(blocks.get("huge", 1 << 40) < 1 << 20 and
       blocks.get("holes-only", 1 << 40) < 64 << 10 and
       blocks.get("lead", 1 << 40) < 1 << 20,
       "and extracts them sparse (holes stay holes)", blocks)
    r = subprocess.run([cftest.COFFER, "restore", "acme", sid, "--to-tar",
                        "-"], capture_output=True, env=ENV, timeout=120)
    t = subprocess.run(["tar", "-tvf", "-"], input=r.stdout,
                       capture_output=True)
    ok(r.returncode == 0 and len(r.stdout) < 1 << 20 and t.returncode == 0
       and b"huge" in t.stdout, "to standard output too", r.stderr)

    # ---- a write-only agent reads a tar too ----
    wurl = "file://" + os.path.join(T, "repo-wo")
    wkey = os.path.join(T, "acme.wkey")
    r = coffer("tenant", "writer-key", "acme", "--out", wkey, "--repo", wurl)
    assert r.returncode == 0, r.stderr
    agent = {k: v for k, v in ENV.items() if not k.startswith("COFFER_")}
    agent["COFFER_HOME"] = os.path.join(T, "no-home")
    with open(ptar, "rb") as f:
        r = subprocess.run([cftest.COFFER, "--json", "backup", "acme",
                            "--writer-key", wkey, "--repo", wurl, "--tar",
                            "-"], stdin=f, capture_output=True, env=agent,
                           timeout=120)
    j = cftest.js(r)
    ok(r.returncode == 0 and j.get("write_only") is True and
       j.get("files") == nfiles and j.get("dirs") == ndirs,
       "a write-only agent backs up a tar from stdin", r.stderr)
    out = os.path.join(T, "out-wo")
    r2 = coffer("restore", "acme", j.get("snapshot", "x"), "--repo", wurl,
                "--target", out)
    after = tree_state(out)
    ok(r2.returncode == 0 and before == after,
       "the full keys restore the agent's tar snapshot exactly",
       r2.stderr + cftest.tree_diff(before, after))

    # ---- snapshots, audit ----
    snaps = snapshots()
    ok(snaps and snaps[0]["tags"] == ["pax"] and
       snaps[0]["consistency"] == "stream" and
       snaps[0]["id"] == s1.get("snapshot"),
       "snapshots lists the tar snapshot", snaps[:1])
    log = ""
    for dirpath, _, files in os.walk(HOME):
        for f in files:
            if f.startswith("audit"):
                log += open(os.path.join(dirpath, f), errors="replace").read()
    ok(log.count("backup.create") >= 5 and s1.get("snapshot", "?") in log
       and "file.txt" not in log and "big.bin" not in log,
       "backup.create audited with the snapshot id, no file names")

    # ---- a tree deeper than PATH_MAX (docs/backup.md, Deep trees) ----
    # The deepest tree backup and restore follow: 256 levels of 255-byte
    # names and a 255-byte name at the bottom, a 64 KiB path (PATH_MAX is
    # 4096; restore had an 8 KiB buffer).  Built and compared relative to
    # directory descriptors (no absolute path this long can be opened).
    levels = 256
    dnames = [f"{i:03d}" + "d" * 252 for i in range(levels)]
    leaf, slink = "f" * 255, "s" * 255
    deep = os.path.join(T, "deep-src")
    os.mkdir(deep)
    fds = [os.open(deep, os.O_RDONLY | os.O_DIRECTORY)]
    for dn in dnames:
        os.mkdir(dn, dir_fd=fds[-1])
        fds.append(os.open(dn, os.O_RDONLY | os.O_DIRECTORY,
                           dir_fd=fds[-1]))
    deep_data = b"at the bottom\n" * 1000
    with open(os.open(leaf, os.O_WRONLY | os.O_CREAT, 0o640,
                      dir_fd=fds[-1]), "wb") as f:
        f.write(deep_data)
    os.symlink(leaf, slink, dir_fd=fds[-1])
    # The group's first name in restore's walk is the deep one, so the
    # link restore makes opens a name longer than PATH_MAX.
    os.link(leaf, "zz-link", src_dir_fd=fds[-1], dst_dir_fd=fds[0])
    for fd in fds:
        os.close(fd)
    deep_path = "/".join(dnames + [leaf])
    assert len(deep_path) > 65000

    def deep_state(root):
        """{names tuple: (type, mode, size, data, target, first name of
        its inode)} of a tree, walked through directory descriptors."""
        out, inodes = {}, {}

        def walk(dfd, pre):
            for e in sorted(os.listdir(dfd)):
                st = os.stat(e, dir_fd=dfd, follow_symlinks=False)
                key = pre + (e,)
                first = inodes.setdefault(st.st_ino, key)
                data = tgt = None
                if stat.S_ISREG(st.st_mode):
                    fd = os.open(e, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dfd)
                    with open(fd, "rb") as f:
                        data = f.read()
                elif stat.S_ISLNK(st.st_mode):
                    tgt = os.readlink(e, dir_fd=dfd)
                out[key] = (stat.S_IFMT(st.st_mode), st.st_mode & 0o7777,
                            st.st_size, data, tgt,
                            first if not stat.S_ISDIR(st.st_mode) else None)
                if stat.S_ISDIR(st.st_mode):
                    fd = os.open(e, os.O_RDONLY | os.O_DIRECTORY |
                                 os.O_NOFOLLOW, dir_fd=dfd)
                    try:
                        walk(fd, key)
                    finally:
                        os.close(fd)
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            walk(fd, ())
        finally:
            os.close(fd)
        return out

    want = deep_state(deep)
    r = coffer("--json", "backup", "acme", "--dir", deep)
    dsid = cftest.js(r).get("snapshot", "x")
    ok(r.returncode == 0 and cftest.js(r).get("dirs") == levels and
       cftest.js(r).get("files") == 3,
       f"backup --dir of a tree {len(deep_path)} bytes deep", r.stderr)
    out = os.path.join(T, "deep-out")
    r = coffer("restore", "acme", dsid, "--target", out)
    got = deep_state(out) if os.path.isdir(out) else {}
    ok(r.returncode == 0 and got == want,
       "restore --target gives back a tree deeper than PATH_MAX exactly",
       r.stderr[-600:] + f" {len(got)} of {len(want)} entries")
    lk = got.get(("zz-link",), (None,) * 6)[5]
    ok(lk == tuple(dnames + [leaf]),
       "its hard link across 64 KiB of path is a link again", lk)
    # A drill of it (docs/operations.md, Drills): restore's code, then
    # every restored chunk re-hashed, compared and the scratch tree removed
    # through directory descriptors (the drill had an 8 KiB path buffer
    # and removed its scratch tree with nftw, which stops at PATH_MAX).
    dscr = os.path.join(T, "deep-drill")
    r = coffer("--json", "drill", "acme", "--scratch", dscr)
    d = cftest.js(r)
    ok(r.returncode == 0 and d.get("result") == "ok" and
       d.get("snapshot", "?").startswith(dsid) and
       d.get("dirs") == levels and d.get("files") == 3 and
       d.get("bytes") == 2 * len(deep_data) and
       d.get("blobs_checked") == 2 and d.get("mismatched") == 0 and
       d.get("damaged") == 0,
       "drill of the 256-level tree: both deep files re-hashed, ok",
       r.stdout + r.stderr[-600:])
    left = os.listdir(dscr) if os.path.isdir(dscr) else None
    ok(left == [], "...and its 64 KiB deep scratch tree is removed", left)
    dtar = os.path.join(T, "deep.tar")
    r = coffer("restore", "acme", dsid, "--to-tar", dtar)
    members = {}
    if r.returncode == 0:
        with tarfile.open(dtar) as tf:
            for m in tf.getmembers():
                members[m.name] = (m, tf.extractfile(m).read()
                                   if m.isreg() else None)
    m, data = members.get(deep_path, (None, None))
    hm = members.get("zz-link", (None, None))[0]
    ok(r.returncode == 0 and m is not None and data == deep_data and
       hm is not None and hm.islnk() and hm.linkname == deep_path,
       "restore --to-tar writes the deep names whole (pax path and "
       "linkpath records)", r.stderr[-600:])
    r = coffer("--json", "backup", "acme", "--tar", dtar)
    r2 = coffer("restore", "acme", cftest.js(r).get("snapshot", "x"),
                "--target", os.path.join(T, "deep-out2"))
    got = deep_state(os.path.join(T, "deep-out2")) if r2.returncode == 0 \
        else {}
    ok(r.returncode == 0 and r2.returncode == 0 and got == want,
       "that tar backed up again (--tar) restores the same tree",
       r.stderr[-300:] + r2.stderr[-300:])
    r = coffer("restore", "acme", dsid, "--path", deep_path, "--target",
               os.path.join(T, "deep-out3"))
    got = deep_state(os.path.join(T, "deep-out3")) if r.returncode == 0 \
        else {}
    ok(r.returncode == 0 and got.get(tuple(dnames + [leaf]), (0,) * 4)[3]
       == deep_data and len(got) == levels + 1,
       "restore --path of the deep file restores it alone",
       r.stderr[-300:])
    r = coffer("restore", "acme", dsid, "--path", deep_path + "/x",
               "--target", os.path.join(T, "deep-out4"))
    ok(r.returncode == 2 and "deeper than a snapshot" in r.stderr,
       "a --path deeper than any snapshot is a usage error", r.stderr)
    dt2 = os.path.join(T, "deeper.tar")
    with tarfile.open(dt2, "w", format=tarfile.PAX_FORMAT) as tf:
        add(tf, "/".join(dnames) + "/d", type=tarfile.DIRTYPE)
        add(tf, "/".join(dnames) + "/ok", b"fine\n")
    r = coffer("--json", "backup", "acme", "--tar", dt2)
    ok(r.returncode == 1 and cftest.js(r).get("left_out") == 1 and
       cftest.js(r).get("files") == 1 and "nested deeper than 256" in
       r.stderr, "--tar: a directory below 256 levels is left out, a file "
       "at 257 components is kept", r.stderr[-300:])

    # ---- the progress line on a terminal (docs/backup.md, Progress) ----
    # Long enough (96 MiB of new data) for redraws after the first one.
    ps = os.path.join(T, "prog-src")
    os.makedirs(os.path.join(ps, "secret-dir"))
    with open(os.path.join(ps, "secret-name-big.bin"), "wb") as f:
        f.write(os.urandom(96 << 20))
    for i in range(300):
        with open(os.path.join(ps, "secret-dir", f"secret-name-{i}"),
                  "w") as f:
            f.write(f"file {i}\n" * 50)
    pfiles = 301
    secrets = ("secret", "big.bin", "tar test passphrase")
    rc, out, term, secs = on_pty(["backup", "acme", "--dir", ps], cols=40)
    lines = progress_lines(term)
    ok(rc == 0 and len(lines) >= 2 and all(
        re.fullmatch(r"[0-9/]+ files, [0-9./]+ MiB(, .*)?", ln) or
        re.fullmatch(r"[0-9./]+ MiB, .*", ln) for ln in lines),
       f"backup --dir on a terminal draws a progress line "
       f"({len(lines)} redraws in {secs:.2f} s)", term[-400:])
    ok(lines and len(lines) <= 2 + 5 * secs,
       "at most 5 redraws a second", f"{len(lines)} in {secs:.2f} s")
    ok(lines and all(len(ln) < 40 for ln in lines),
       "every line fits a 40-column terminal (the last column free)",
       max(lines, key=len, default=""))
    ok(any(re.search(r"[0-9.]+/96\.[0-9] MiB, [0-9]+ %, .+ left", ln)
           for ln in lines),
       "with the scanner's totals: share done and time left", lines[-3:])
    ok(term.endswith("\r\x1b[K") and b"snapshot " in out and
       "\n" not in term,
       "the line is cleared at the end; the summary goes to stdout",
       repr(term[-80:]))
    ok(not any(w in term for w in secrets),
       "no file names or secrets in it", term[-400:])
    rc, out, term, secs = on_pty(["backup", "acme", "--dir", ps], cols=200)
    lines = progress_lines(term)
    ok(rc == 0 and lines and all(re.fullmatch(
        r"[0-9/]+ files, [0-9./]+ MiB(, [0-9]+ %)?, [0-9.]+ MiB/s(, .+ "
        r"left)?", ln) for ln in lines),
       "on a wide terminal: files, MiB, rate on one line", lines[-2:])

    # A message during the walk starts on a line of its own.
    pd = os.path.join(T, "prog-deep")
    os.makedirs(pd)
    for i in range(200):
        with open(os.path.join(pd, f"f{i}"), "wb") as f:
            f.write(os.urandom(64 << 10))
    os.makedirs(os.path.join(pd, *(["n"] * 260)))
    rc, out, term, secs = on_pty(["backup", "acme", "--dir", pd], cols=200)
    at = [i for i in range(len(term)) if term.startswith("coffer: ", i)]
    ok(rc == 1 and "nested too deep" in term and at and all(
        i == 0 or term[:i].endswith(("\n", "\r\x1b[K")) for i in at),
       "a message during the walk is on its own line, not after the "
       "progress line", repr(term[:300]))

    ptar2 = os.path.join(T, "prog.tar")
    subprocess.run(["tar", "-C", ps, "-cf", ptar2, "."], check=True)
    with open(os.path.join(T, "big2"), "wb") as f:
        f.write(os.urandom(64 << 20))
    subprocess.run(["tar", "-C", T, "-rf", ptar2, "big2"], check=True)
    rc, out, term, secs = on_pty(["backup", "acme", "--tar", ptar2],
                                 cols=200)
    lines = progress_lines(term)
    ok(rc == 0 and lines and all(re.search(r", [0-9]+ %", ln)
                                 for ln in lines),
       "backup --tar FILE: the share of the archive read", lines[-2:])

    # The tar's own messages too: a leading '/' removed, an archive cut
    # short (both came right after the line, on the same terminal line).
    def own_lines(term):
        at = [i for i in range(len(term)) if term.startswith("coffer: ", i)]
        return at and all(i == 0 or term[:i].endswith(("\n", "\r\x1b[K"))
                          for i in at)
    pabs = os.path.join(T, "prog-abs.tar")
    with tarfile.open(pabs, "w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(20):
            add(tf, f"rel-{i}", os.urandom(1 << 16))
        add(tf, "/abs-file", b"absolute\n")
    rc, out, term, secs = on_pty(["backup", "acme", "--tar", pabs],
                                 cols=200)
    ok(rc == 0 and "removing leading '/'" in term and own_lines(term),
       "--tar: \"removing leading '/'\" on a line of its own",
       repr(term[:300]))
    with open(ptar2, "rb") as f:
        with tarfile.open(fileobj=f) as tf:
            mid = tf.getmembers()[len(tf.getmembers()) // 2].offset
        f.seek(0)
        cut = f.read(mid)
    pcut = os.path.join(T, "prog-cut.tar")
    with open(pcut, "wb") as f:
        f.write(cut)
    rc, out, term, secs = on_pty(["backup", "acme", "--tar", pcut],
                                 cols=200)
    ok(rc == 1 and "no end-of-archive block" in term and own_lines(term),
       "--tar: a truncated archive's message on a line of its own",
       repr(term[:300]))
    with open(ptar2, "rb") as f:
        rc, out, term, secs = on_pty(["backup", "acme", "--tar", "-"],
                                     cols=200, stdin=f)
    lines2 = progress_lines(term)
    ok(rc == 0 and lines2 and all(" %" in ln for ln in lines2),
       "--tar - from a regular file: its size is the total too", lines2[-1:])
    cat = subprocess.Popen(["cat", ptar2], stdout=subprocess.PIPE)
    rc, out, term, secs = on_pty(["backup", "acme", "--tar", "-"],
                                 cols=200, stdin=cat.stdout)
    cat.wait()
    lines = progress_lines(term)
    ok(rc == 0 and lines and not any("%" in ln or "left" in ln
                                     for ln in lines),
       "--tar - from a pipe: no total, no percentage", lines[-1:])
    with open(os.path.join(T, "big2"), "rb") as f:
        rc, out, term, secs = on_pty(["backup", "acme", "--stdin", "--name",
                                      "x.bin"], cols=200, stdin=f)
    lines = progress_lines(term)
    ok(rc == 0 and lines and all(re.fullmatch(
        r"[0-9]+ files, [0-9.]+ MiB, [0-9.]+ MiB/s", ln) for ln in lines),
       "--stdin: bytes and rate, no total", lines[-1:])

    r = coffer("--json", "backup", "acme", "--dir", ps)
    ok(r.returncode == 0 and "\r" not in r.stderr and "MiB/s" not in
       r.stderr, "no progress when standard error is not a terminal",
       repr(r.stderr[-200:]))
    rc, out, term, secs = on_pty(["--json", "backup", "acme", "--dir", ps])
    ok(rc == 0 and "MiB/s" not in term and "\r" not in term and
       json.loads(out).get("files") == pfiles,
       "none with --json on a terminal either", repr(term[-200:]))
    rc, out, term, secs = on_pty(["-q", "backup", "acme", "--dir", ps])
    ok(rc == 0 and "MiB/s" not in term, "none with -q", repr(term[-200:]))
    rc, out, term, secs = on_pty(["restore", "acme", "--target",
                                  os.path.join(T, "prog-out")], cols=200)
    lines = progress_lines(term)
    ok(rc == 0 and lines and all(re.match(
        r"[0-9]+/%d files, [0-9.]+/96\.[0-9] MiB" % pfiles, ln)
        for ln in lines) and term.endswith("\r\x1b[K") and
       not any(w in term for w in secrets),
       "restore's line (the same helper): totals of the snapshot",
       lines[-2:])
finally:
    H.cleanup()

TAP.done()
