#!/usr/bin/python3
"""fs_snapshot.py - point-in-time snapshots of a mounted store (fs/fs_snap.c)
through the daemon's control socket, on a real FUSE mount: the farm a
snapshot leaves is read with the store reader (fs_reader_dump with
FS_READER_STORE) and must show the tree exactly as it was at the freeze,
whatever the tenant changes afterwards; a file rewritten continuously
during the snapshot is captured in one consistent state; releasing (or
dropping the connection) removes the farm.  TAP output.  Needs root and
/dev/fuse."""
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

COFFER = os.environ["COFFER"]
DUMP = os.environ["FS_READER_DUMP"]
n = 0
failed = 0


def ok(cond, desc, detail=""):
    global n, failed
    n += 1
    print(f"{'ok' if cond else 'not ok'} {n} - {desc}")
    if not cond:
        failed += 1
        for line in str(detail).splitlines()[:20]:
            print(f"# {line}")
    sys.stdout.flush()


if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
    print("1..0 # SKIP needs root and /dev/fuse")
    sys.exit(1 if os.environ.get("CI") == "true" else 0)

T = tempfile.mkdtemp(prefix="cf_snap.")
HOME = os.path.join(T, "home")
os.makedirs(HOME)
with open(os.path.join(HOME, "coffer.conf"), "w") as f:
    f.write("[kms.local]\ntype = file\nargon2_ops = 1\nargon2_mem_kib = 8\n")
PASS = os.path.join(T, "pass")
with open(PASS, "w") as f:
    f.write("snapshot test passphrase\n")
os.chmod(PASS, 0o600)
HOLD = os.path.join(T, "hold")  # the daemon's test hook (fs_snap.c)
os.makedirs(HOLD)
ENV = dict(os.environ, COFFER_HOME=HOME, COFFER_PASSPHRASE_FILE=PASS,
           COFFER_TEST_SNAP_HOLD=HOLD)
MP = os.path.join(T, "mnt")
os.makedirs(MP)
STORE = os.path.join(HOME, "tenants", "acme", "store")
CTL = os.path.join(STORE, "cf.ctl")
proc = None


def coffer(*args):
    return subprocess.run([COFFER, *args], capture_output=True, text=True,
                          env=ENV, timeout=120)


def dump(store=None):
    env = dict(ENV)
    if store:
        env["FS_READER_STORE"] = store
    r = subprocess.run([DUMP, HOME, "acme"], capture_output=True, text=True,
                       env=env, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"fs_reader_dump: {r.stderr}")
    rows = {}
    for line in r.stdout.splitlines():
        f = line.split("\t")
        if f[0] != "E":
            rows[tuple(f)] = None
            continue
        # Compared: path type mode uid gid size mtime content xattrs
        # data; not ino or nlink (the farm's own links add to nlink and
        # its directories are copies).
        # A directory's size is its backing directory's, which depends
        # on the order its entries were made in: not compared.
        rows[f[1]] = (f[2], f[3], f[4], f[5], f[6] if f[2] != "4" else "-",
                      f[9], f[10], f[11], f[12] if len(f) > 12 else "")
    return rows


def snapshot():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(CTL)
    s.sendall(b"SNAPSHOT\n")
    line = s.recv(8192).decode()
    parts = line.split()
    if parts[0] != "OK":
        raise RuntimeError(f"snapshot: {line!r}")
    return s, parts[1], int(parts[2])


def release(s):
    s.sendall(b"RELEASE\n")
    r = s.recv(64).decode().strip()
    s.close()
    return r


def farm_gone(secs=10.0):
    """True once store/snap is gone: the daemon removes the farm right
    after its answer to RELEASE (ctl.md [CTL-2])."""
    deadline = time.monotonic() + secs
    while os.path.exists(os.path.join(STORE, "snap")):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def main():
    global proc
    r = coffer("tenant", "create", "acme")
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    proc = subprocess.Popen([COFFER, "mount", "acme", MP, "-f"], env=ENV,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    for _ in range(200):
        if os.path.ismount(MP):
            break
        time.sleep(0.05)
    # The socket listens before the mount appears: a backup started the
    # moment the mount is visible never finds it missing.
    ok(os.path.ismount(MP) and os.path.exists(CTL) and
       os.stat(CTL).st_mode & 0o777 == 0o600,
       "mounted; control socket in the store from the start, mode 0600")
    mp2 = MP + "2"
    os.makedirs(mp2, exist_ok=True)
    r = subprocess.run([COFFER, "mount", "acme", mp2, "-f"], env=ENV,
                       capture_output=True, text=True, timeout=30)
    ok(r.returncode != 0 and "already served" in r.stderr and
       not os.path.ismount(mp2) and os.path.exists(CTL) and
       os.path.ismount(MP),
       "a second daemon on the same store is refused; the first goes on",
       r.stderr)

    # A tree with every kind of object.
    m = MP
    os.makedirs(os.path.join(m, "d", "sub"))
    write(os.path.join(m, "a"), b"A" * 10000)
    write(os.path.join(m, "b"), b"B" * 5000)
    write(os.path.join(m, "d", "sub", "deep"), b"deep")
    write(os.path.join(m, "L" * 220), b"long name")
    os.link(os.path.join(m, "a"), os.path.join(m, "d", "a-link"))
    os.symlink("a", os.path.join(m, "ln"))
    os.symlink("T" * 4000, os.path.join(m, "longln"))
    os.mkfifo(os.path.join(m, "fifo"))
    os.setxattr(os.path.join(m, "b"), "user.k", b"v1")
    with open(os.path.join(m, "sparse"), "wb") as f:
        f.truncate(1 << 20)
        f.seek(512 << 10)
        f.write(b"S" * 4096)
    before = dump()

    s, farm, pause = snapshot()
    ok(os.path.isdir(os.path.join(farm, "data")) and
       farm.startswith(STORE + "/snap/"),
       f"snapshot taken: a farm under store/snap ({pause / 1e6:.1f} ms "
       "writer pause)")
    at = dump(farm)
    ok(at == before, "the farm reads exactly as the tree did",
       set(at.items()) ^ set(before.items()))

    # Every kind of change, through the mount.
    with open(os.path.join(m, "a"), "r+b") as f:
        f.seek(100)
        f.write(b"changed")
    with open(os.path.join(m, "b"), "ab") as f:
        f.write(b"more")
    os.truncate(os.path.join(m, "d", "sub", "deep"), 1)
    os.chmod(os.path.join(m, "L" * 220), 0o600)
    os.utime(os.path.join(m, "ln"), (1, 1), follow_symlinks=False)
    os.setxattr(os.path.join(m, "b"), "user.k", b"v2")
    os.setxattr(os.path.join(m, "d"), "user.dir", b"x")
    os.rename(os.path.join(m, "d", "sub"), os.path.join(m, "moved"))
    os.unlink(os.path.join(m, "longln"))
    write(os.path.join(m, "new"), b"new file")
    with open(os.path.join(m, "sparse"), "r+b") as f:
        f.seek(100 << 10)
        f.write(b"X" * 8192)
    live = dump()
    after = dump(farm)
    ok(live != before and after == before,
       "after writes, truncate, chmod, utimens, xattrs, rename, unlink, "
       "create and a hard-linked file's change the farm still holds the "
       "old tree", set(after.items()) ^ set(before.items()))
    ok(open(os.path.join(m, "a"), "rb").read(120)[100:107] == b"changed" and
       open(os.path.join(m, "d", "a-link"), "rb").read(107)[100:] ==
       b"changed", "the tenant sees its changes, through both hard links")
    r = release(s)
    ok(r == "OK" and farm_gone(),
       "RELEASE answers OK and removes the farm", r)

    # Large files keep a block delta ([CTL-7]): the farm's name is a
    # private empty file with the metadata, the live file is linked at
    # cow/INO and each change first saves the 64 KiB units it replaces
    # in cow/INO.d.  Every kind of change, then a writer racing three
    # readers of the farm.
    big = os.path.join(m, "big")
    blob = bytes((i * 7 + i // 4096) & 0xff for i in range(6 << 20))
    write(big, blob)
    os.link(big, os.path.join(m, "big-link"))
    os.setxattr(big, "user.big", b"x")
    sp = os.path.join(m, "bigsparse")
    with open(sp, "wb") as f:
        f.truncate(3 << 20)
        f.seek(1 << 20)
        f.write(b"S" * 70000)
    cut = os.path.join(m, "bigcut")
    write(cut, blob[:2 << 20])
    trunc = os.path.join(m, "bigtrunc")
    write(trunc, blob[:(2 << 20) + 5])
    before = dump()
    s, farm, _ = snapshot()
    bst = os.stat(os.path.join(farm, "data"))
    with open(big, "r+b") as f:
        f.seek(3 << 20)
        f.write(b"middle")
        f.seek(0)
        f.write(b"first block")
    with open(big, "ab") as f:
        f.write(b"appended")
    os.chmod(big, 0o600)
    os.setxattr(big, "user.big", b"changed")
    with open(sp, "r+b") as f:
        f.seek(2 << 20)
        f.write(b"into the hole")
    fd = os.open(sp, os.O_RDWR)
    os.posix_fallocate(fd, 0, 1)  # allocation only: no change
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
        libc.fallocate(fd, 3, ctypes.c_long(1 << 20), ctypes.c_long(65536))
    finally:
        os.close(fd)
    os.truncate(cut, 100000)
    os.truncate(cut, 3 << 20)
    with open(trunc, "wb") as f:  # O_TRUNC
        f.write(b"short now")
    cow = os.path.join(farm, "cow")
    names = sorted(os.listdir(cow))
    deltas = [x for x in names if x.endswith(".d")]
    ino = os.stat(os.path.join(farm, "data") and
                  os.path.join(cow, deltas[0][:-2])).st_ino if deltas else 0
    hdr = b""
    if deltas:
        with open(os.path.join(cow, deltas[0]), "rb") as f:
            hdr = f.read(16)
    ok(len(deltas) == 4 and all(x[:-2] in names for x in deltas) and
       hdr == b"CFCOWD1\0" + (65536).to_bytes(4, "little") + bytes(4) and
       ino != 0,
       "each large file changed got a delta: cow/INO (its live file) and "
       "cow/INO.d, whose header is the magic, the unit size (64 KiB) and "
       "zeros", names)
    # The big file's delta saved only the units its writes replaced.
    live_ino = os.stat(big).st_ino
    bd = [x for x in deltas
          if os.stat(os.path.join(cow, x[:-2])).st_ino == live_ino]
    mp_ = b""
    used = 1 << 40
    if bd:
        path_d = os.path.join(cow, bd[0])
        used = os.stat(path_d).st_blocks * 512
        with open(path_d, "rb") as f:
            f.seek(16)
            mp_ = f.read(((6 << 20) + 4096 + 32 * 1600) // 65536 + 1)
    saved = [i for i, b in enumerate(mp_) if b]
    # docs/format/ctl.md [CTL-7], the example: units 0, 48 and 96.
    ok(bd and saved == [0, 48, 96] and used < (1 << 20),
       "a large file's first writes save only the units they replace "
       f"(map {saved}, {used} bytes stored for a 6 MiB file)", mp_[:100])
    at = dump(farm)
    ok(at == before and os.stat(os.path.join(farm, "data")).st_mtime ==
       bst.st_mtime,
       "after writes at the start, middle and end, chmod, xattrs, a write "
       "into a hole, a punched hole, a cut and regrow and an O_TRUNC of "
       "large files, the farm reads as before (both hard links too)",
       set(at.items()) ^ set(before.items()))
    # A writer rewriting random ranges while the farm is read: units are
    # saved while a reader reads them.
    stop = threading.Event()
    import random
    rnd = random.Random(7)

    def scribble():
        fd = os.open(big, os.O_RDWR)
        while not stop.is_set():
            off = rnd.randrange(0, 6 << 20)
            os.pwrite(fd, os.urandom(rnd.randrange(1, 200000)), off)
        os.close(fd)

    w = threading.Thread(target=scribble)
    w.start()
    same = []
    try:
        for _ in range(3):
            same.append(dump(farm) == before)
    finally:
        stop.set()
        w.join()
    ok(same == [True, True, True],
       "a writer rewriting random ranges of a large file while the farm "
       "is read three times: each read is the tree at the freeze", same)
    ok(release(s) == "OK" and farm_gone(),
       "that snapshot releases and its deltas go with the farm")

    # A file rewritten without pause while snapshots are taken: each
    # snapshot holds one whole version of it (one write() per version;
    # a snapshot orders whole operations, as a local disk would).
    path = os.path.join(m, "counter")
    size = 128 << 10
    versions = {}
    stop = threading.Event()

    def rewrite():
        i = 0
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        while not stop.is_set():
            data = (b"%08d" % i) * (size // 8)
            versions[hashlib.sha256(data).hexdigest()] = i
            os.pwrite(fd, data, 0)
            i += 1
        os.close(fd)

    w = threading.Thread(target=rewrite)
    w.start()
    time.sleep(0.3)
    pauses, bad, seen = [], [], set()
    for _ in range(8):
        s, farm, pause = snapshot()
        pauses.append(pause)
        d = dump(farm)
        h = d.get("/counter".encode().hex(), (None,) * 9)[6]
        if h not in versions:
            bad.append(h)
        else:
            seen.add(versions[h])
        release(s)
        time.sleep(0.05)
    stop.set()
    w.join()
    ok(not bad and len(seen) >= 1,
       f"a file rewritten during 8 snapshots is always one whole version "
       f"({len(seen)} distinct)", bad)

    # The live pass links the store while the tenant goes on writing;
    # the frozen pass redoes only what changed meanwhile.  The daemon is
    # held between the two passes (test builds) while every kind of
    # change is made: none waits for the snapshot, and the farm holds
    # the tree as it is at the freeze, after all of them.
    h = os.path.join(m, "h")
    os.makedirs(os.path.join(h, "sub", "deep"))
    os.makedirs(os.path.join(h, "gone", "inner"))
    for name, data in (("f1", b"one" * 1000), ("f2", b"two"),
                       ("keep", b"keep"), ("keep2", b"old keep2"),
                       ("sub/g", b"g" * 5000), ("gone/x", b"x"),
                       ("gone/inner/y", b"y")):
        write(os.path.join(h, name), data)
    os.setxattr(h, "user.old", b"o")
    os.mkdir(os.path.join(h, "E"), 0o700)
    with open(os.path.join(HOLD, "arm"), "w"):
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(CTL)
    s.sendall(b"SNAPSHOT\n")
    held = os.path.join(HOLD, "held")
    for _ in range(1000):
        if os.path.exists(held):
            break
        time.sleep(0.01)
    ok(os.path.exists(held), "the daemon stops between the two passes "
       "(test hook)")
    with open(os.path.join(h, "f1"), "r+b") as f:
        f.seek(10)
        f.write(b"CHANGED IN PLACE")
    os.unlink(os.path.join(h, "f2"))
    write(os.path.join(h, "f3"), b"created during the live pass")
    write(os.path.join(h, "sub", "deep", "new"), b"new deep")
    os.rename(os.path.join(h, "sub"), os.path.join(h, "sub2"))
    os.mkdir(os.path.join(h, "newdir"))
    write(os.path.join(h, "newdir", "z"), b"z")
    shutil.rmtree(os.path.join(h, "gone"))
    # An empty directory made again at its name: ext4 often hands out
    # the removed one's inode number, which must not pass for the old.
    os.rmdir(os.path.join(h, "E"))
    os.mkdir(os.path.join(h, "E"), 0o755)
    os.chmod(h, 0o751)
    os.setxattr(h, "user.dir2", b"d2")
    os.removexattr(h, "user.old")
    os.utime(os.path.join(h, "keep"), (5, 5))
    write(os.path.join(h, "tmp"), b"new keep2")
    os.rename(os.path.join(h, "tmp"), os.path.join(h, "keep2"))
    os.symlink("Q" * 3000, os.path.join(h, "longln2"))
    write(os.path.join(h, "N" * 220), b"long name, live pass")
    os.link(os.path.join(h, "f3"), os.path.join(h, "newdir", "f3-link"))
    write(os.path.join(m, "top-new"), b"in data/ itself")
    still = os.path.exists(held)
    expect = dump()
    os.unlink(held)
    line = s.recv(8192).decode().split()
    ok(still and line[0] == "OK",
       "writes, unlink, create, rename of a directory, rmdir, a directory "
       "made again, chmod and xattrs of a directory, utimens, rename over "
       "a name, long symlink and long name, hard link: none waited for "
       "the snapshot", line)
    farm = line[1]
    at = dump(farm)
    ok(at == expect, "the farm holds the tree at the freeze, every change "
       "of the live pass included", set(at.items()) ^ set(expect.items()))
    # After the thaw, copy-on-write covers what the frozen pass linked.
    with open(os.path.join(h, "f3"), "ab") as f:
        f.write(b" and after")
    with open(os.path.join(h, "sub2", "g"), "r+b") as f:
        f.write(b"G")
    with open(os.path.join(h, "keep2"), "ab") as f:
        f.write(b"!")
    os.chmod(os.path.join(h, "sub2"), 0o700)
    os.setxattr(os.path.join(h, "newdir", "z"), "user.k", b"later")
    os.truncate(os.path.join(h, "f1"), 3)
    at = dump(farm)
    ok(at == expect and dump() != expect,
       "changes after the thaw to objects of the live pass (new, moved, "
       "renamed over, changed in place) leave the farm as it was",
       set(at.items()) ^ set(expect.items()))
    ok(release(s) == "OK", "that snapshot releases cleanly")

    # Random changes while the live pass runs (a tree of 5000 files makes
    # it last): the ops thread stops once the daemon holds between the
    # passes, and the farm must equal the tree as it is then.  Seeded
    # rounds, so a failure can be replayed.
    rt = os.path.join(m, "r")
    for d in range(10):
        os.makedirs(os.path.join(rt, f"d{d}", "s"))
        for i in range(50):
            write(os.path.join(rt, f"d{d}", f"f{i}"), b"%d" % i)
    bulk = os.path.join(m, "bulk")
    os.mkdir(bulk)
    for i in range(4500):
        write(os.path.join(bulk, f"b{i}"), b"b")

    def random_ops(rnd, stop, done):
        n = 0
        while not stop.is_set():
            if n % 8 == 0:	# the tree again, now and then
                dirs, files = [rt], []
                for root, ds, fs in os.walk(rt):
                    dirs += [os.path.join(root, x) for x in ds]
                    files += [os.path.join(root, x) for x in fs
                              if not os.path.islink(os.path.join(root, x))]
            d = rnd.choice(dirs)
            k = rnd.randrange(12)
            try:
                if k == 0:
                    write(os.path.join(d, f"n{n}"), b"new %d" % n)
                elif k == 1 and files:
                    with open(rnd.choice(files), "r+b") as f:
                        f.write(b"changed %d" % n)
                elif k == 2 and files:
                    os.unlink(rnd.choice(files))
                elif k == 3:
                    os.mkdir(os.path.join(d, f"m{n}"),
                             rnd.choice((0o700, 0o755, 0o751)))
                elif k == 4 and d != rt:
                    shutil.rmtree(d)
                elif k == 5 and files:
                    os.rename(rnd.choice(files), os.path.join(
                        rnd.choice(dirs), rnd.choice((f"mv{n}", "f1"))))
                elif k == 6 and d != rt:
                    to = rnd.choice(dirs)
                    if not (to + "/").startswith(d + "/"):
                        os.rename(d, os.path.join(to, f"dm{n}"))
                elif k == 7 and files:
                    os.link(rnd.choice(files), os.path.join(d, f"hl{n}"))
                elif k == 8:
                    os.chmod(d, rnd.choice((0o700, 0o755)))
                elif k == 9:
                    os.setxattr(d, "user.x", b"%d" % n)
                elif k == 10:
                    os.symlink(rnd.choice(("t", "L" * 2000)),
                               os.path.join(d, f"sl{n}"))
                elif k == 11:
                    write(os.path.join(d, "N" * 200 + str(n)), b"long")
            except (FileNotFoundError, FileExistsError, IsADirectoryError,
                    NotADirectoryError, OSError):
                pass
            n += 1
        done.append(n)

    import random
    bad_rounds, nops = [], []
    for seed in range(4):
        stop, done = threading.Event(), []
        th = threading.Thread(target=random_ops,
                              args=(random.Random(seed), stop, done))
        th.start()
        time.sleep(0.05)
        with open(os.path.join(HOLD, "arm"), "w"):
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(CTL)
        s.sendall(b"SNAPSHOT\n")
        for _ in range(3000):
            if os.path.exists(held):
                break
            time.sleep(0.01)
        stop.set()
        th.join()
        nops.append(done[0] if done else 0)
        expect = dump()
        os.unlink(held)
        line = s.recv(8192).decode().split()
        at = dump(line[1]) if line and line[0] == "OK" else {}
        if at != expect:
            bad_rounds.append((seed, line[:1], sorted(
                set(at.items()) ^ set(expect.items()))[:6]))
        release(s)
    print(f"# changes per round (before and during the live pass): {nops}")
    ok(not bad_rounds, "4 seeded rounds of random changes (create, write, "
       "unlink, mkdir, rm -r, renames of files and directories across "
       "levels, hard links, chmod, xattrs, symlinks, long names) during "
       "the live pass: the farm equals the tree at the freeze",
       bad_rounds)

    # Writer pause on a tree of 3000 files.
    big = os.path.join(m, "many")
    os.mkdir(big)
    for i in range(3000):
        write(os.path.join(big, f"f{i}"), b"x")
    pauses = []
    for _ in range(5):
        s, farm, pause = snapshot()
        pauses.append(pause / 1e6)
        release(s)
    print(f"# writer pause, 3000 files: median {statistics.median(pauses):.1f}"
          f" ms, max {max(pauses):.1f} ms")
    ok(len(pauses) == 5, "five snapshots of a 3000-file tree")

    # A client that goes away without RELEASE: the farm goes too.
    s, farm, pause = snapshot()
    s2 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.close()
    for _ in range(100):
        if not os.path.exists(os.path.join(STORE, "snap")):
            break
        time.sleep(0.05)
    ok(not os.path.exists(os.path.join(STORE, "snap")),
       "a client that disconnects releases its snapshot")
    s2.close()
    write(os.path.join(m, "after"), b"still writable")
    ok(open(os.path.join(m, "after"), "rb").read() == b"still writable",
       "the mount keeps working after snapshots")
    r = coffer("umount", MP)
    proc.wait(timeout=20)
    ok(r.returncode == 0 and not os.path.exists(CTL),
       "unmount removes the control socket")


try:
    main()
except Exception as e:  # report, never hide, a harness failure
    ok(False, f"harness: {e!r}")
finally:
    for mp in (MP, MP + "2"):
        if os.path.ismount(mp):
            subprocess.run(["fusermount3", "-u", "-z", mp])
    if proc is not None and proc.poll() is None:
        proc.kill()
    shutil.rmtree(T, ignore_errors=True)
print(f"1..{n}")
sys.exit(1 if failed else 0)
