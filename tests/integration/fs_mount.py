#!/usr/bin/python3
"""fs_mount.py - coffer mount on a real FUSE mount: POSIX behaviour a
service relies on, checked against an in-memory model; no plaintext in the
backing store; tampering gives EIO and an audit record; another tenant's
store is refused.  TAP output.  Needs root and /dev/fuse."""
import ctypes
import errno
import fcntl
import hashlib
import json
import mmap
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

COFFER = os.environ["COFFER"]
n = 0
failed = 0


def ok(cond, desc, detail=""):
    global n, failed
    n += 1
    if cond:
        print(f"ok {n} - {desc}")
    else:
        failed += 1
        print(f"not ok {n} - {desc}")
        if detail:
            for line in str(detail).splitlines()[:20]:
                print(f"# {line}")
    sys.stdout.flush()


def skip(desc, why):
    global n
    n += 1
    print(f"ok {n} - {desc} # SKIP {why}")
    sys.stdout.flush()


def coffer(*args, check=False):
    r = subprocess.run([COFFER, *args], capture_output=True, text=True,
                       env=ENV, timeout=120)
    if check and r.returncode != 0:
        raise RuntimeError(f"coffer {args}: {r.returncode} {r.stderr}")
    return r


def wait_mounted(mp, proc, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        if os.path.ismount(mp):
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def mount(tenant, mp, env=None):
    """A foreground daemon whose stderr goes to a log file of its own,
    shown if the harness fails (why a mount went away mid-test)."""
    log = os.path.join(T, f"daemon-{len(daemon_logs)}.log")
    daemon_logs.append(log)
    with open(log, "w") as lf:
        proc = subprocess.Popen([COFFER, "mount", tenant, mp, "-f"],
                                env=env or ENV, stdout=subprocess.DEVNULL,
                                stderr=lf)
    if not wait_mounted(mp, proc):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with open(log) as lf:
            raise RuntimeError(f"mount {tenant} failed: {lf.read()}")
    return proc


def daemon_report():
    """The daemons' stderr and the mount/unmount audit records."""
    out = []
    for log in daemon_logs:
        try:
            with open(log) as lf:
                text = lf.read().strip()
        except OSError:
            continue
        if text:
            out.append(f"{os.path.basename(log)}: {text[-2000:]}")
    r = coffer("audit", "show", "--tenant", "acme")
    out += [l for l in r.stdout.splitlines() if '"fs.' in l][-20:]
    return "\n".join(out)


def umount(mp, proc):
    r = coffer("umount", mp)
    if r.returncode != 0:
        subprocess.run(["fusermount3", "-u", "-z", mp])
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return r.returncode


if not os.path.exists("/dev/fuse"):
    print("1..0 # SKIP /dev/fuse is missing")
    sys.exit(0 if os.environ.get("CI") != "true" else 1)

T = tempfile.mkdtemp(prefix="cf_fs.")
HOME = os.path.join(T, "home")
os.makedirs(HOME)
with open(os.path.join(HOME, "coffer.conf"), "w") as f:
    f.write("[kms.local]\ntype = file\nargon2_ops = 1\nargon2_mem_kib = 8\n")
PASS = os.path.join(T, "pass")
with open(PASS, "w") as f:
    f.write("fs test passphrase\n")
os.chmod(PASS, 0o600)
ENV = dict(os.environ, COFFER_HOME=HOME, COFFER_PASSPHRASE_FILE=PASS)
MP = os.path.join(T, "mnt")
os.makedirs(MP)
procs = []
daemon_logs = []


def cleanup():
    for mp in (MP, MP + "2"):
        if os.path.ismount(mp):
            subprocess.run(["fusermount3", "-u", "-z", mp])
    for p in procs:
        if p.poll() is None:
            p.kill()
    tiny = store_of("tiny")
    if os.path.ismount(tiny):
        subprocess.run(["umount", "-l", tiny])
    shutil.rmtree(T, ignore_errors=True)


def store_of(tenant):
    return os.path.join(HOME, "tenants", tenant, "store")


def has_in_data(path, needle):
    """Whether NEEDLE is in the file's data extents (holes read as
    zeros and cannot hold it), read in 1 MiB pieces that overlap by
    len(needle) - 1 bytes: the 5 GiB sparse file is read in
    milliseconds, not as 5 GiB of zeros."""
    fd = os.open(path, os.O_RDONLY)
    try:
        end = os.fstat(fd).st_size
        off = 0
        while off < end:
            try:
                off = os.lseek(fd, off, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            stop = os.lseek(fd, off, os.SEEK_HOLE)
            while off < stop:
                n = min(1 << 20, stop - off)
                start = max(0, off - (len(needle) - 1))
                if needle in os.pread(fd, n + off - start, start):
                    return True
                off += n
        return False
    finally:
        os.close(fd)


def backing_files(tenant):
    out = []
    for root, dirs, files in os.walk(store_of(tenant)):
        for name in files + dirs:
            out.append(os.path.join(root, name))
    return out


def main():
    coffer("tenant", "create", "acme", check=True)
    coffer("tenant", "create", "beta", "--cipher", "xchacha20-poly1305",
           check=True)
    for tenant in ("acme", "beta"):
        run_posix(tenant)
    run_scale()
    run_misc()
    run_tamper()
    run_nonces()
    run_holes()
    run_crash()
    run_full_disk()
    run_isolation()


def run_posix(tenant):
    p = mount(tenant, MP)
    procs.append(p)
    ok(os.path.ismount(MP), f"{tenant}: mounted")
    try:
        posix_checks(tenant)
    finally:
        rc = umount(MP, p)
    ok(rc == 0 and not os.path.ismount(MP), f"{tenant}: unmounted cleanly")
    # Data persists across a remount.
    p = mount(tenant, MP)
    procs.append(p)
    try:
        with open(os.path.join(MP, "sizes", "f4097"), "rb") as f:
            data = f.read()
        ok(hashlib.sha256(data).hexdigest() == SIZES[4097],
           f"{tenant}: content survives remount")
        ok(os.stat(os.path.join(MP, "dir0151")).st_mode & 0o7777 == 0o151,
           f"{tenant}: unusual directory mode survives remount")
    finally:
        umount(MP, p)
    # No plaintext anywhere in the backing store.  First, the scan finds
    # the marker where it is: after a hole, across a 1 MiB piece.
    ctl = os.path.join(T, f"scan-control-{tenant}")
    with open(ctl, "wb") as f:
        f.seek(64 << 20)
        f.write(b"x" * ((1 << 20) - 4) + b"PLAINMARK")
    ok(has_in_data(ctl, b"PLAINMARK") and
       not has_in_data(ctl, b"PLAINMARX"),
       f"{tenant}: the backing scan finds a marker behind a hole (control)")
    os.unlink(ctl)
    leaks = []
    for path in backing_files(tenant):
        if b"PLAINMARK" in os.fsencode(path):
            leaks.append(path)
        st = os.lstat(path)
        if not stat.S_ISLNK(st.st_mode):
            for a in os.listxattr(path, follow_symlinks=False):
                if "PLAINMARK" in a or b"PLAINMARK" in os.getxattr(
                        path, a, follow_symlinks=False):
                    leaks.append(path + " xattr " + a)
        if stat.S_ISREG(st.st_mode) and has_in_data(path, b"PLAINMARK"):
            leaks.append(path)
        elif stat.S_ISLNK(st.st_mode):
            if "PLAINMARK" in os.readlink(path):
                leaks.append(path)
    ok(not leaks, f"{tenant}: no marker in backing names, contents, "
       "links, xattrs",
       leaks)
    st = os.stat(store_of(tenant))
    ok(st.st_mode & 0o777 == 0o700, f"{tenant}: backing store is 0700")


SIZES = {}


def posix_checks(tenant):
    m = MP
    rnd = random.Random(42)
    # Sizes around block boundaries.
    os.mkdir(os.path.join(m, "sizes"))
    good = True
    for size in (0, 1, 4095, 4096, 4097, 3 * 4096 + 5, (1 << 20) + 3):
        data = rnd.randbytes(size)
        SIZES[size] = hashlib.sha256(data).hexdigest()
        path = os.path.join(m, "sizes", f"f{size}")
        with open(path, "wb") as f:
            f.write(data)
        with open(path, "rb") as f:
            back = f.read()
        if back != data or os.stat(path).st_size != size:
            good = False
    ok(good, f"{tenant}: files of 0, 1, 4095, 4096, 4097 B ... 1 MiB")
    # Random writes and truncates against a model.
    path = os.path.join(m, "PLAINMARK-model")
    model = bytearray()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    good = True
    for i in range(300):
        if rnd.random() < 0.15:
            size = rnd.randrange(0, 50000)
            os.ftruncate(fd, size)
            if size < len(model):
                del model[size:]
            else:
                model.extend(b"\0" * (size - len(model)))
        else:
            off = rnd.randrange(0, 60000)
            data = b"PLAINMARK" + rnd.randbytes(rnd.randrange(0, 9000))
            os.pwrite(fd, data, off)
            if off > len(model):
                model.extend(b"\0" * (off - len(model)))
            model[off:off + len(data)] = data
        if i % 25 == 0 or i == 299:
            back = os.pread(fd, len(model) + 100, 0)
            if back != bytes(model):
                good = False
                break
    os.close(fd)
    ok(good, f"{tenant}: 300 random writes/truncates match the model")
    ok(os.stat(path).st_size == len(model), f"{tenant}: size matches model")
    # O_APPEND.
    path = os.path.join(m, "log")
    for i in range(50):
        with open(path, "a") as f:
            f.write(f"line {i} PLAINMARK\n")
    with open(path) as f:
        lines = f.read().splitlines()
    ok(lines == [f"line {i} PLAINMARK" for i in range(50)],
       f"{tenant}: O_APPEND")
    # Sparse file beyond 4 GiB.
    path = os.path.join(m, "sparse")
    with open(path, "wb") as f:
        f.seek((5 << 30) + 17)
        f.write(b"end")
    st = os.stat(path)
    with open(path, "rb") as f:
        f.seek(3 << 30)
        zeros = f.read(8192)
        f.seek((5 << 30) + 17)
        tail = f.read()
    ok(st.st_size == (5 << 30) + 20 and zeros == b"\0" * 8192 and
       tail == b"end", f"{tenant}: sparse file > 4 GiB, holes read as zeros")
    # Names: rename, over an existing target, directories, hard links.
    a, b = os.path.join(m, "a"), os.path.join(m, "b")
    with open(a, "w") as f:
        f.write("A")
    with open(b, "w") as f:
        f.write("B")
    os.rename(a, b)
    with open(b) as f:
        ok(f.read() == "A" and not os.path.exists(a),
           f"{tenant}: rename over an existing file")
    os.makedirs(os.path.join(m, "d1", "d2"))
    with open(os.path.join(m, "d1", "d2", "x"), "w") as f:
        f.write("deep")
    os.rename(os.path.join(m, "d1"), os.path.join(m, "sizes", "moved"))
    with open(os.path.join(m, "sizes", "moved", "d2", "x")) as f:
        ok(f.read() == "deep", f"{tenant}: rename a directory tree")
    os.link(b, os.path.join(m, "sizes", "hard"))
    ok(os.stat(b).st_nlink == 2 and
       open(os.path.join(m, "sizes", "hard")).read() == "A",
       f"{tenant}: hard link")
    try:
        os.rmdir(os.path.join(m, "sizes"))
        ok(False, f"{tenant}: rmdir of a non-empty directory fails")
    except OSError as e:
        ok(e.errno == errno.ENOTEMPTY,
           f"{tenant}: rmdir of a non-empty directory fails")
    os.mkdir(os.path.join(m, "empty"))
    os.rmdir(os.path.join(m, "empty"))
    ok(not os.path.exists(os.path.join(m, "empty")), f"{tenant}: rmdir")
    # Symlinks, including a long target.
    os.symlink("../PLAINMARK/target", os.path.join(m, "ln"))
    ok(os.readlink(os.path.join(m, "ln")) == "../PLAINMARK/target" and
       os.lstat(os.path.join(m, "ln")).st_size == 19,
       f"{tenant}: symlink target and size")
    long = "PLAINMARK/" + "x" * 2990
    os.symlink(long, os.path.join(m, "longln"))
    ok(os.readlink(os.path.join(m, "longln")) == long,
       f"{tenant}: 3000-byte symlink target")
    # Modes, owners, times.
    os.mkdir(os.path.join(m, "dir0151"), 0o151)
    ok(os.stat(os.path.join(m, "dir0151")).st_mode & 0o7777 == 0o151,
       f"{tenant}: mkdir 0151 reports exactly 0151")
    os.chmod(b, 0o640)
    os.chown(b, 1234, 5678)
    os.utime(b, ns=(1_000_000_000_123, 2_000_000_000_456))
    st = os.stat(b)
    ok(st.st_mode & 0o777 == 0o640 and st.st_uid == 1234 and
       st.st_gid == 5678 and st.st_mtime_ns == 2_000_000_000_456,
       f"{tenant}: chmod, chown, utimens seen immediately")
    os.mkfifo(os.path.join(m, "fifo"))
    ok(stat.S_ISFIFO(os.stat(os.path.join(m, "fifo")).st_mode),
       f"{tenant}: mkfifo")
    # A descriptor keeps working after its name is unlinked.
    path = os.path.join(m, "doomed")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.write(fd, b"before")
    os.unlink(path)
    os.pwrite(fd, b"after-unlink", 6)
    os.fsync(fd)
    os.fdatasync(fd)
    os.fchmod(fd, 0o644)
    os.ftruncate(fd, 11)
    ok(os.pread(fd, 100, 0) == b"beforeafter" and
       os.fstat(fd).st_mode & 0o777 == 0o644,
       f"{tenant}: fsync/fchmod/ftruncate on an unlinked file")
    os.close(fd)
    # Many entries.
    d = os.path.join(m, "many")
    os.mkdir(d)
    for i in range(3000):
        open(os.path.join(d, f"entry-{i:05d}"), "w").close()
    names = sorted(os.listdir(d))
    ok(names == [f"entry-{i:05d}" for i in range(3000)],
       f"{tenant}: 3000 entries listed exactly")
    # Concurrent writers on one file, distinct regions.
    path = os.path.join(m, "shared")
    with open(path, "wb") as f:
        f.truncate(8 * 100000)
    def writer(k):
        fd2 = os.open(path, os.O_RDWR)
        for j in range(0, 100000, 1000):
            os.pwrite(fd2, bytes([65 + k]) * 1000, k * 100000 + j)
        os.close(fd2)
    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    with open(path, "rb") as f:
        data = f.read()
    ok(data == b"".join(bytes([65 + k]) * 100000 for k in range(8)),
       f"{tenant}: 8 concurrent writers")
    # Shared writable mmap.
    path = os.path.join(m, "mapped")
    with open(path, "wb") as f:
        f.write(b"\0" * 10000)
    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 10000)
        mm[5000:5009] = b"PLAINMARK"
        mm.flush()
        mm.close()
    with open(path, "rb") as f:
        f.seek(5000)
        ok(f.read(9) == b"PLAINMARK", f"{tenant}: shared writable mmap")
    # Extended attributes: user namespace, encrypted names and values.
    path = os.path.join(m, "attrs")
    open(path, "w").close()
    os.setxattr(path, "user.PLAINMARK-name", b"PLAINMARK value\0bin")
    os.setxattr(path, "user.second", b"")
    ok(os.getxattr(path, "user.PLAINMARK-name") == b"PLAINMARK value\0bin"
       and os.getxattr(path, "user.second") == b"" and
       sorted(os.listxattr(path)) == ["user.PLAINMARK-name", "user.second"],
       f"{tenant}: set/get/list xattrs")
    os.removexattr(path, "user.second")
    try:
        os.getxattr(path, "user.second")
        gone = False
    except OSError as e:
        gone = e.errno == errno.ENODATA
    ok(gone and os.listxattr(path) == ["user.PLAINMARK-name"],
       f"{tenant}: removexattr")
    try:
        os.setxattr(path, "trusted.x", b"1")
        refused = False
    except OSError as e:
        refused = e.errno in (errno.EOPNOTSUPP, errno.EPERM)
    ok(refused, f"{tenant}: non-user xattr namespaces refused")
    sv = os.statvfs(m)
    ok(sv.f_blocks > 0, f"{tenant}: statfs")
    more_checks(tenant)


LIBC = ctypes.CDLL(None, use_errno=True)
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE = 1, 2, 16
LIBC.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64,
                           ctypes.c_int64]


def renameat2(src, dst, flags):
    r = LIBC.renameat2(-100, os.fsencode(src), -100, os.fsencode(dst), flags)
    return 0 if r == 0 else ctypes.get_errno()


def fallocate(fd, mode, off, length):
    r = LIBC.fallocate(fd, mode, off, length)
    return 0 if r == 0 else ctypes.get_errno()


def backing_names(tenant, prefix):
    return [p for p in backing_files(tenant)
            if os.path.basename(p).startswith(prefix)]


def more_checks(tenant):
    m = MP
    # Names of 176..255 bytes exceed NAME_MAX once encrypted.
    d = os.path.join(m, "long")
    os.mkdir(d)
    names = ["PLAINMARK" + c * (n - 9) for c, n in
             (("a", 176), ("b", 255), ("c", 200))]
    for nm in names:
        with open(os.path.join(d, nm), "wb") as f:
            f.write(nm.encode())
    ldir = "PLAINMARK-dir-" + "d" * 230
    os.mkdir(os.path.join(d, ldir))
    with open(os.path.join(d, ldir, "inner"), "w") as f:
        f.write("x")
    os.symlink("target-of-long", os.path.join(d, "s" * 250))
    os.link(os.path.join(d, names[0]), os.path.join(d, "h" * 240))
    expected = sorted(names + [ldir, "s" * 250, "h" * 240])
    ok(sorted(os.listdir(d)) == expected and
       all(open(os.path.join(d, nm), "rb").read() == nm.encode()
           for nm in names) and
       os.readlink(os.path.join(d, "s" * 250)) == "target-of-long" and
       os.stat(os.path.join(d, "h" * 240)).st_nlink == 2 and
       open(os.path.join(d, ldir, "inner")).read() == "x",
       f"{tenant}: long names (176-255 B): files, directory, symlink, "
       "hard link", sorted(os.listdir(d)))
    os.rename(os.path.join(d, names[1]), os.path.join(d, "r" * 230))
    os.rename(os.path.join(d, "r" * 230), os.path.join(d, "short"))
    os.rename(os.path.join(d, "short"), os.path.join(d, "q" * 255))
    os.rename(os.path.join(d, names[2]), os.path.join(d, names[0]))
    expected = sorted([names[0], ldir, "s" * 250, "h" * 240, "q" * 255])
    ok(sorted(os.listdir(d)) == expected and
       open(os.path.join(d, "q" * 255), "rb").read() == names[1].encode()
       and open(os.path.join(d, names[0]), "rb").read() ==
       names[2].encode(),
       f"{tenant}: rename between long and short names, over a long name",
       sorted(os.listdir(d)))
    try:
        open(os.path.join(d, "n" * 256), "w").close()
        ok(False, f"{tenant}: a 256-byte name is refused with ENAMETOOLONG")
    except OSError as e:
        ok(e.errno == errno.ENAMETOOLONG,
           f"{tenant}: a 256-byte name is refused with ENAMETOOLONG")
    ok(os.statvfs(m).f_namemax == 255, f"{tenant}: statfs namemax 255")
    shutil.rmtree(d)
    ok(not os.path.exists(d) and not backing_names(tenant, "cf.L."),
       f"{tenant}: removing long names leaves no sidecar behind",
       backing_names(tenant, "cf.L."))

    # Symlink targets up to PATH_MAX-1 bytes.
    links = os.path.join(store_of(tenant), "links")
    tgt = "PLAINMARK/" + "t" * (4095 - 10)
    ln1, ln2 = os.path.join(m, "longlink"), os.path.join(m, "longlink2")
    os.symlink(tgt, ln1)
    ok(os.readlink(ln1) == tgt and os.lstat(ln1).st_size == 4095 and
       len(os.listdir(links)) == 1,
       f"{tenant}: a 4095-byte symlink target reads back, lstat size 4095")
    os.link(ln1, ln2, follow_symlinks=False)
    os.unlink(ln1)
    ok(os.readlink(ln2) == tgt and len(os.listdir(links)) == 1,
       f"{tenant}: a hard link keeps a long target alive")
    os.unlink(ln2)
    ok(len(os.listdir(links)) == 0,
       f"{tenant}: unlinking the last link removes the stored target")
    try:
        os.symlink("x" * 4096, ln1)
        ok(False, f"{tenant}: a 4096-byte target is refused")
    except OSError as e:
        ok(e.errno == errno.ENAMETOOLONG,
           f"{tenant}: a 4096-byte target is refused")

    # renameat2 flags.
    a, b, c = (os.path.join(m, x) for x in ("xa", "xb", "xc"))
    for path, data in ((a, b"A"), (b, b"B")):
        with open(path, "wb") as f:
            f.write(data)
    r1 = renameat2(a, b, RENAME_NOREPLACE)
    r2 = renameat2(a, b, RENAME_EXCHANGE)
    ok(r1 == errno.EEXIST and r2 == 0 and open(a, "rb").read() == b"B" and
       open(b, "rb").read() == b"A",
       f"{tenant}: RENAME_NOREPLACE refuses, RENAME_EXCHANGE swaps",
       (r1, r2))
    r3 = renameat2(a, c, RENAME_NOREPLACE)
    ok(r3 == 0 and open(c, "rb").read() == b"B" and not os.path.exists(a),
       f"{tenant}: RENAME_NOREPLACE to a free name")

    # fallocate: allocate, punch a hole, zero a range, keep size.
    path = os.path.join(m, "falloc")
    model = bytearray()
    with open(path, "wb+") as f:
        fd = f.fileno()
        r = [fallocate(fd, 0, 0, 3 * 4096 + 100)]
        model += bytes(3 * 4096 + 100)
        os.pwrite(fd, b"Z" * 20000, 0)
        model[0:20000] = b"Z" * 20000
        r.append(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                           1000, 12000))
        model[1000:13000] = bytes(12000)
        r.append(fallocate(fd, FALLOC_FL_ZERO_RANGE, 19000, 5000))
        model[19000:24000] = bytes(5000)
        r.append(fallocate(fd, FALLOC_FL_KEEP_SIZE, 30000, 4096))
        r.append(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                           16000, 100000))
        model[16000:] = bytes(len(model) - 16000)
        size = os.fstat(fd).st_size
    back = open(path, "rb").read()
    ok(r == [0] * 5 and size == len(model) and back == bytes(model),
       f"{tenant}: fallocate allocate, punch hole, zero range, keep size",
       (r, size, len(model)))

    # copy_file_range and locks (the kernel's own, across processes).
    src = os.path.join(m, "sizes", "f4097")
    dst = os.path.join(m, "copied")
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        n = os.copy_file_range(fi.fileno(), fo.fileno(), 1 << 20)
    ok(n == 4097 and hashlib.sha256(open(dst, "rb").read()).hexdigest() ==
       SIZES[4097], f"{tenant}: copy_file_range")
    with open(dst, "rb+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        other = subprocess.run([sys.executable, "-c", f"""
import fcntl, sys
f = open({dst!r}, "rb+")
try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    sys.exit(0)
except BlockingIOError:
    pass
try:
    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)
except OSError:
    sys.exit(3)
sys.exit(2)
"""], timeout=30)
        fcntl.lockf(f, fcntl.LOCK_EX, 10, 0)
        other2 = subprocess.run([sys.executable, "-c", f"""
import fcntl, sys
f = open({dst!r}, "rb+")
try:
    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)
    sys.exit(0)
except OSError:
    sys.exit(3)
"""], timeout=30)
    ok(other.returncode == 2 and other2.returncode == 3,
       f"{tenant}: flock and POSIX locks exclude another process",
       (other.returncode, other2.returncode))


def run_scale():
    """More inodes than descriptors: with the daemon's inode descriptor
    cache forced down to 8 entries every operation must reopen inodes
    from their handles; and one directory of 100k entries, more than the
    machine's hard RLIMIT_NOFILE (20000 here) allows as open files."""
    p = mount("acme", MP, dict(ENV, COFFER_FS_FD_CAP="8"))
    procs.append(p)
    try:
        base = os.path.join(MP, "scale")
        os.mkdir(base)
        want = {}
        for i in range(40):
            d = os.path.join(base, f"d{i}")
            os.mkdir(d)
            for j in range(25):
                data = f"{i}/{j}".encode() * (j + 1)
                with open(os.path.join(d, f"f{j}"), "wb") as f:
                    f.write(data)
                want[f"d{i}/f{j}"] = data
        for i in range(0, 40, 3):
            os.rename(os.path.join(base, f"d{i}"), os.path.join(base,
                      f"r{i}"))
            for j in range(25):
                want[f"r{i}/f{j}"] = want.pop(f"d{i}/f{j}")
        xk = sorted(want)[::7]
        for k in xk:
            os.setxattr(os.path.join(base, k), "user.k", k.encode())
            os.chmod(os.path.join(base, k), 0o640)
        bad = [k for k, v in want.items()
               if open(os.path.join(base, k), "rb").read() != v]
        xbad = [k for k in xk
                if os.getxattr(os.path.join(base, k), "user.k") !=
                k.encode() or
                os.stat(os.path.join(base, k)).st_mode & 0o777 != 0o640]
        ok(not bad and not xbad and len(os.listdir(base)) == 40,
           "1000 files through an 8-entry inode descriptor cache",
           (bad[:5], xbad[:5]))
    finally:
        umount(MP, p)
    p = mount("acme", MP)
    procs.append(p)
    try:
        big = os.path.join(MP, "big")
        os.mkdir(big)
        t0 = time.time()
        for i in range(100000):
            os.mknod(os.path.join(big, f"entry-{i:06d}"))
        made = time.time() - t0
        names = os.listdir(big)
        sts = [os.stat(os.path.join(big, n)).st_size for n in names[::997]]
        ok(len(names) == 100000 and set(sts) == {0},
           f"a directory of 100000 entries ({made:.0f} s to create)")
        errs = []
        shutil.rmtree(big, onerror=lambda fn, path, exc: errs.append(
            (fn.__name__, path, repr(exc[1]), os.path.lexists(path))))
        ok(not errs and not os.path.exists(big), "and it can be removed",
           errs[:5])
    finally:
        umount(MP, p)


def run_misc():
    """Daemon life cycle and heavier concurrency."""
    # Daemonized (no -f): coffer mount returns once mounted; coffer umount
    # ends the daemon.
    r = coffer("mount", "acme", MP)
    pids = subprocess.run(["pgrep", "-f", f"coffer mount acme {MP}"],
                          capture_output=True, text=True).stdout.split()
    ok(r.returncode == 0 and os.path.ismount(MP) and len(pids) == 1,
       "mount without -f daemonizes and returns mounted", r.stderr)
    # The daemon locks its pages (the AES key schedules of open files are
    # in OpenSSL's heap; docs/crypto.md): root here, so CAP_IPC_LOCK.
    # Locked as touched (MCL_ONFAULT), so after a file is written and read
    # nearly all its resident memory is locked; without mlockall only
    # libsodium's few guarded key pages are (tens of KiB).
    def vm(key):
        try:
            with open(f"/proc/{pids[0]}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1])
        except (OSError, IndexError, ValueError):
            pass
        return -1
    with open(os.path.join(MP, "locked-probe"), "wb") as f:
        f.write(os.urandom(3 << 20))
    with open(os.path.join(MP, "locked-probe"), "rb") as f:
        f.read()
    os.unlink(os.path.join(MP, "locked-probe"))
    lck, rss = vm("VmLck"), vm("VmRSS")
    # ASan and TSan make mlock and mlockall do nothing (their interceptors
    # return 0): there, the lock cannot be seen.
    # Told by the binary's libraries and by the daemon's mappings.
    libs = subprocess.run(["ldd", COFFER], capture_output=True,
                          text=True).stdout
    try:
        with open(f"/proc/{pids[0]}/maps", errors="replace") as f:
            libs += f.read()
    except OSError:
        pass
    sanitized = any(x in libs for x in ("libasan", "libtsan"))
    if sanitized:
        skip("the daemon's memory is locked (mlockall, on fault)",
             "mlockall is a no-op under ASan and TSan")
    else:
        ok(lck > 1024 and 2 * lck >= rss,
           "the daemon's memory is locked (mlockall, on fault)",
           f"VmLck {lck} kB of VmRSS {rss} kB")
    try:
        # Many readers and writers on one file: writers put whole 4 KiB
        # records of one byte value.  A reader racing a write may see a
        # record half old, half new (Linux buffered reads are not atomic
        # against writes, on ext4 too), but never a byte no writer wrote;
        # once the writers stop, every record is one writer's whole.
        path = os.path.join(MP, "rw-shared")
        nrec = 256
        with open(path, "wb") as f:
            f.write(b"\0" * 4096 * nrec)
        stop = threading.Event()
        torn = []

        def w(k):
            fd = os.open(path, os.O_RDWR)
            rnd = random.Random(k)
            while not stop.is_set():
                i = rnd.randrange(nrec)
                os.pwrite(fd, bytes([k + 1]) * 4096, i * 4096)
            os.close(fd)

        def rd(k):
            fd = os.open(path, os.O_RDONLY)
            rnd = random.Random(100 + k)
            while not stop.is_set():
                i = rnd.randrange(nrec)
                rec = os.pread(fd, 4096, i * 4096)
                if len(rec) != 4096 or not set(rec) <= {0, 1, 2, 3, 4}:
                    torn.append(i)
            os.close(fd)

        ts = [threading.Thread(target=w, args=(k,)) for k in range(4)]
        ts += [threading.Thread(target=rd, args=(k,)) for k in range(4)]
        [t.start() for t in ts]
        time.sleep(3)
        stop.set()
        [t.join() for t in ts]
        with open(path, "rb") as f:
            data = f.read()
        mixed = [i for i in range(nrec) if
                 data[i * 4096:(i + 1) * 4096].count(data[i * 4096:i * 4096
                                                          + 1]) != 4096]
        ok(not torn and not mixed and len(data) == 4096 * nrec,
           "4 writers and 4 readers on one file: no foreign byte, every "
           "record whole at the end", (torn[:10], mixed[:10]))
        # O_SYNC writes through a descriptor whose name is gone.
        path = os.path.join(MP, "sync-doomed")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_SYNC, 0o600)
        os.unlink(path)
        os.write(fd, b"synced after unlink")
        ok(os.pread(fd, 100, 0) == b"synced after unlink",
           "O_SYNC writes to an unlinked file")
        os.close(fd)
    finally:
        r = coffer("umount", MP)
    for _ in range(100):
        alive = [p for p in pids if os.path.exists(f"/proc/{p}")]
        if not alive:
            break
        time.sleep(0.1)
    ok(r.returncode == 0 and not os.path.ismount(MP) and not alive,
       "coffer umount unmounts and the daemon exits")
    # SIGTERM unmounts cleanly.
    p = mount("acme", MP)
    procs.append(p)
    p.send_signal(signal.SIGTERM)
    try:
        rc = p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        rc = None
    ok(rc == 0 and not os.path.ismount(MP),
       "SIGTERM unmounts cleanly (exit 0)", rc)
    log = coffer("audit", "show", "--tenant", "acme").stdout
    ok(log.count('"fs.unmount"') >= 2, "the unmounts are audited")


def find_backing(tenant, size):
    """The backing file of the plaintext file sizes/f<size>."""
    for path in backing_files(tenant):
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode) and st.st_size == size:
            return path
    return None


def expect_eio(path):
    try:
        with open(path, "rb") as f:
            f.read()
        return False
    except OSError as e:
        return e.errno == errno.EIO


def run_tamper():
    overhead = 28  # AES-256-GCM: 12-byte nonce + 16-byte tag
    cb = 4096 + overhead
    size3 = 32 + 3 * cb + 5 + overhead   # sizes/f12293
    size1 = 32 + cb + 1 + overhead       # sizes/f4097
    f3 = find_backing("acme", size3)
    f1 = find_backing("acme", size1)
    ok(f3 is not None and f1 is not None, "found backing files to tamper")
    orig3 = open(f3, "rb").read()
    orig1 = open(f1, "rb").read()
    p = mount("acme", MP)
    procs.append(p)
    target3 = os.path.join(MP, "sizes", "f12293")
    target1 = os.path.join(MP, "sizes", "f4097")
    try:
        def put(path, data):
            with open(path, "wb") as f:
                f.write(data)
        bad = bytearray(orig3)
        bad[32 + cb + 100] ^= 1
        put(f3, bad)
        ok(expect_eio(target3), "flipped byte gives EIO")
        bad = bytearray(orig3)
        bad[32:32 + cb], bad[32 + cb:32 + 2 * cb] = \
            orig3[32 + cb:32 + 2 * cb], orig3[32:32 + cb]
        put(f3, bad)
        ok(expect_eio(target3), "swapped blocks give EIO")
        put(f3, orig3[:-10])
        ok(expect_eio(target3), "truncated file gives EIO")
        # Cut at a block boundary: every block left is authentic, but
        # the new last one was not sealed as the last (format v2).
        put(f3, orig3[:32 + 2 * cb])
        eio = expect_eio(target3)
        ok(eio and os.stat(target3).st_size == 2 * 4096,
           "a file cut at a block boundary gives EIO",
           (eio, os.stat(target3).st_size, f3))
        # Its last block zeroed (it would read as a hole otherwise).
        bad = bytearray(orig3)
        bad[32 + 3 * cb:] = bytes(len(bad) - 32 - 3 * cb)
        put(f3, bad)
        # The kernel keeps attributes for a day (the daemon is the only
        # writer of its store, docs/mount.md); a change made behind its
        # back shows once the cached inode is dropped.
        with open("/proc/sys/vm/drop_caches", "w") as dc:
            dc.write("3\n")
        sz = os.stat(target3).st_size
        ok(sz == 12293 and expect_eio(target3),
           "a zeroed last block gives EIO", sz)
        # An inner block zeroed: the file never had a hole, which its
        # generation says, so it is damage, not zeros.
        bad = bytearray(orig3)
        bad[32 + cb:32 + 2 * cb] = bytes(cb)
        put(f3, bad)
        with open("/proc/sys/vm/drop_caches", "w") as dc:
            dc.write("3\n")
        ok(expect_eio(target3),
           "a zeroed inner block of a file without holes gives EIO")
        put(f3, orig3[:32] + orig1[32:])
        ok(expect_eio(target3), "another file's blocks give EIO")
        put(f3, orig1[:32] + orig3[32:])
        ok(expect_eio(target3), "another file's header gives EIO")
        put(f3, orig3)
        with open(target3, "rb") as f:
            ok(hashlib.sha256(f.read()).hexdigest() == SIZES[12293],
               "restored file reads again")
        # A large request is opened on two threads (fs_par.c): a damaged
        # block in the second MiB still fails that request, and only it.
        big = os.urandom(2 << 20)
        with open(os.path.join(MP, "sizes", "two-mib"), "wb") as f:
            f.write(big)
        fb = find_backing("acme", 32 + 512 * cb)
        bad = bytearray(open(fb, "rb").read())
        bad[32 + 300 * cb + 7] ^= 0x40
        put(fb, bad)
        with open("/proc/sys/vm/drop_caches", "w") as dc:
            dc.write("3\n")
        fd = os.open(os.path.join(MP, "sizes", "two-mib"), os.O_RDONLY)
        got, end = b"", "EOF"
        try:
            while True:
                chunk = os.read(fd, 1 << 20)  # short before the bad page
                if not chunk:
                    break
                got += chunk
        except OSError as e:
            end = errno.errorcode.get(e.errno, e.errno)
        finally:
            os.close(fd)
        log = coffer("audit", "show", "--tenant", "acme").stdout
        ok(end == "EIO" and (1 << 20) <= len(got) <= 300 * 4096 and
           got == big[:len(got)] and '"block":300' in log.replace(" ", ""),
           "a damaged block inside a 1 MiB request: EIO there, the block "
           "audited, what came before it intact", (end, len(got)))
        # Large reads open the ciphertext through a mapping of the
        # backing file (fs_ops.c, FS_MAP_MIN): a file cut behind the
        # daemon's back while they run must give EIO or the right
        # bytes, never kill the daemon (SIGBUS on the lost pages).
        good = bytearray(bad)
        good[32 + 300 * cb + 7] ^= 0x40
        good = bytes(good)
        put(fb, good)
        # A read that starts past a cut: the file is open and its first
        # block read (the daemon knows its size), then the backing file
        # is cut behind the daemon's back.  The kernel still believes
        # the old size (attributes are cached for a day), so it asks for
        # the second MiB: that is damage (EIO, audited), not the end of
        # the file.
        before = coffer("audit", "show", "--tenant", "acme").stdout
        n_before = before.count('"fs.integrity"')
        fd = os.open(os.path.join(MP, "sizes", "two-mib"), os.O_RDONLY)
        try:
            first = os.pread(fd, 4096, 0)
            with open(fb, "r+b") as f:
                f.truncate(32 + 20 * cb)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            with open("/proc/sys/vm/drop_caches", "w") as dc:
                dc.write("1\n")
            try:
                past = os.pread(fd, 1 << 20, 1 << 20)
                past_end = ("data", len(past))
            except OSError as e:
                past_end = (errno.errorcode.get(e.errno, e.errno), 0)
        finally:
            os.close(fd)
            put(fb, good)
        after_log = coffer("audit", "show", "--tenant", "acme").stdout
        ok(first == big[:4096] and past_end[0] == "EIO" and
           after_log.count('"fs.integrity"') > n_before,
           "a read starting past a cut behind the daemon's back: EIO and "
           "an fs.integrity record, not the end of the file",
           (past_end, n_before, after_log.count('"fs.integrity"')))
        with open("/proc/sys/vm/drop_caches", "w") as dc:
            dc.write("3\n")
        stop = threading.Event()

        def cutter():
            while not stop.is_set():
                with open(fb, "r+b") as f:
                    f.truncate(32 + 20 * cb)
                time.sleep(0.003)
                put(fb, good)
                time.sleep(0.01)

        t = threading.Thread(target=cutter)
        t.start()
        outcomes = {"data": 0, "eio": 0, "short": 0, "wrong": 0}
        try:
            for _ in range(25):
                with open("/proc/sys/vm/drop_caches", "w") as dc:
                    dc.write("3\n")
                try:
                    with open(os.path.join(MP, "sizes", "two-mib"),
                              "rb") as f:
                        data = f.read()
                    # A read that began past the cut ends early only
                    # when this open met the file already cut (the
                    # daemon learnt the short size); past a cut made
                    # under an open file it is EIO (checked above).
                    outcomes["data" if data == big else
                             "short" if big.startswith(data) else
                             "wrong"] += 1
                except OSError as e:
                    outcomes["eio" if e.errno == errno.EIO
                             else "wrong"] += 1
        finally:
            stop.set()
            t.join()
        put(fb, good)
        with open("/proc/sys/vm/drop_caches", "w") as dc:
            dc.write("3\n")
        with open(os.path.join(MP, "sizes", "two-mib"), "rb") as f:
            after = f.read()
        ok(outcomes["wrong"] == 0 and p.poll() is None and after == big,
           "a backing file cut under large reads: EIO or the right bytes "
           "(never other bytes), and the daemon lives on",
           (outcomes, p.poll()))
    finally:
        umount(MP, p)
    log = coffer("audit", "show", "--tenant", "acme").stdout
    recs = [json.loads(l) for l in log.splitlines() if l.strip()]
    integ = [r for r in recs if r["event"] == "fs.integrity"]
    ok(len(integ) >= 5 and all(len(r["file_id"]) == 32 for r in integ),
       "integrity failures audited with tenant and file id")
    ok(all("f12293" not in l for l in log.splitlines()),
       "audit records name no file in clear")
    ok(any(r["event"] == "fs.mount" for r in recs) and
       any(r["event"] == "fs.unmount" for r in recs),
       "mount and unmount audited")
    ok(coffer("audit", "verify").returncode == 0, "audit log verifies")


def run_nonces():
    """Every block of a large write gets its own nonce (they are drawn
    many at a time on two threads)."""
    for tenant, nonce in (("acme", 12), ("beta", 24)):
        p = mount(tenant, MP)
        procs.append(p)
        try:
            with open(os.path.join(MP, "nonces"), "wb") as f:
                f.write(bytes(2 << 20))         # two 1 MiB requests
                f.write(b"\0" * (4096 * 3 + 7))  # and a small one
        finally:
            umount(MP, p)
        cb = 4096 + nonce + 16
        nblk = 512 + 4
        path = find_backing(tenant, 32 + (nblk - 1) * cb + 7 + nonce + 16)
        ok(path is not None, f"{tenant}: found the 2 MiB file's backing file")
        data = open(path, "rb").read() if path else b""
        ns = [data[32 + i * cb:32 + i * cb + nonce] for i in range(nblk)]
        ok(len(set(ns)) == nblk and bytes(nonce) not in ns,
           f"{tenant}: {nblk} blocks of zeros have {nblk} distinct nonces",
           len(set(ns)))
        cs = [data[32 + i * cb + nonce:32 + (i + 1) * cb]
              for i in range(nblk - 1)]
        ok(len(set(cs)) == nblk - 1,
           f"{tenant}: and distinct ciphertexts", len(set(cs)))


def run_holes():
    """Holes made by a sparse write, truncate-up or a punched range read
    as zeros, before and after a remount; a file that never had one
    refuses an all-zero block (run_tamper)."""
    def sparse_files():
        blk = 4096
        want = {}
        with open(os.path.join(MP, "h-write"), "wb") as f:
            f.write(b"a" * 100)
            f.seek(3 * blk)
            f.write(b"b" * 100)         # blocks 1 and 2 are holes
        want["h-write"] = b"a" * 100 + bytes(3 * blk - 100) + b"b" * 100
        with open(os.path.join(MP, "h-trunc"), "wb") as f:
            f.write(b"c" * 10)
            f.truncate(5 * blk + 1)     # blocks 1..4 are holes
        want["h-trunc"] = b"c" * 10 + bytes(5 * blk + 1 - 10)
        data = os.urandom(4 * blk + 5)
        with open(os.path.join(MP, "h-punch"), "wb") as f:
            f.write(data)
        fd = os.open(os.path.join(MP, "h-punch"), os.O_RDWR)
        try:
            fallocate(fd, 0x02 | 0x01, blk, 2 * blk)  # PUNCH_HOLE|KEEP_SIZE
        finally:
            os.close(fd)
        want["h-punch"] = data[:blk] + bytes(2 * blk) + data[3 * blk:]
        return want

    def check(want, when):
        for name, content in want.items():
            try:
                with open(os.path.join(MP, name), "rb") as f:
                    got = f.read()
            except OSError as e:
                got = e
            ok(got == content, f"{name}: holes read as zeros {when}",
               got if isinstance(got, OSError) else len(got))

    p = mount("acme", MP)
    procs.append(p)
    try:
        want = sparse_files()
        with open("/proc/sys/vm/drop_caches", "w") as dc:
            dc.write("3\n")
        check(want, "while mounted")
    finally:
        umount(MP, p)
    p = mount("acme", MP)
    procs.append(p)
    try:
        check(want, "after a remount")
    finally:
        umount(MP, p)


def run_crash():
    """kill -9 the daemon during heavy writes: what fsync acknowledged
    reads back intact; every other file is old or new content or EIO."""
    p = mount("acme", MP)
    procs.append(p)
    d = os.path.join(MP, "crash")
    os.mkdir(d)
    durable = {}
    for i in range(20):
        data = os.urandom(50000 + i * 999)
        path = os.path.join(d, f"durable{i}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        durable[path] = data
    writer = subprocess.Popen([sys.executable, "-c", """
import os, sys
d = sys.argv[1]
i = 0
while True:
    pat = bytes([65 + i % 26]) * 8192
    try:
        with open(os.path.join(d, f"busy{i % 8}"), "wb") as f:
            for _ in range(64):
                f.write(pat)
    except OSError:
        break
    i += 1
""", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    daemon = subprocess.run(["pgrep", "-f", f"coffer mount acme {MP}"],
                            capture_output=True, text=True).stdout.split()
    for pid in daemon:
        os.kill(int(pid), signal.SIGKILL)
    writer.wait(timeout=30)
    subprocess.run(["fusermount3", "-u", "-z", MP])
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
    ok(len(daemon) >= 1, "daemon killed with SIGKILL during writes")
    p = mount("acme", MP)
    procs.append(p)
    try:
        good = all(open(path, "rb").read() == data
                   for path, data in durable.items())
        ok(good, "every fsync'd file reads back intact after the crash")
        garbage = []
        for i in range(8):
            path = os.path.join(d, f"busy{i}")
            if not os.path.exists(path):
                continue
            try:
                data = open(path, "rb").read()
            except OSError as e:
                if e.errno != errno.EIO:
                    garbage.append((path, e))
                continue
            # Whole 8 KiB runs of one letter, nothing else.
            for off in range(0, len(data), 8192):
                chunk = data[off:off + 8192]
                if chunk != chunk[:1] * len(chunk) or not chunk[:1].isalpha():
                    garbage.append((path, off))
                    break
        ok(not garbage, "files written during the crash hold old or new "
           "content or give EIO, never garbage", garbage)
    finally:
        umount(MP, p)


def run_full_disk():
    """A full disk under the store: a write that fails with ENOSPC
    leaves the file as it was (every write that succeeded reads back,
    no more, no EIO, no integrity alarm), and deleting a file makes
    room again, as on a local file system."""
    coffer("tenant", "create", "tiny", check=True)
    umount(MP, mount("tiny", MP))  # the first mount makes the store
    store = store_of("tiny")
    aside = os.path.join(T, "tiny-store")
    shutil.copytree(store, aside, symlinks=True)
    shutil.rmtree(store)
    os.mkdir(store, 0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700",
                    "tmpfs", store], check=True)
    subprocess.run(["cp", "-a", aside + "/.", store], check=True)
    pat = bytes(random.Random(7).randbytes(100000))
    path = os.path.join(MP, "log")

    def check(when):
        try:
            got = open(path, "rb").read()
        except OSError as e:
            got = e
        want = (pat * (acked // len(pat) + 1))[:acked]
        ok(got == want and os.stat(path).st_size == acked,
           f"after ENOSPC the file holds exactly what was written ({when})",
           (acked, got if isinstance(got, OSError) else len(got)))

    p = mount("tiny", MP)
    procs.append(p)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        acked, err = 0, None
        for _ in range(100):  # 4 MiB hold fewer than 42 writes
            try:
                acked += os.write(fd, pat)
            except OSError as e:
                err = e.errno
                break
        ok(err == errno.ENOSPC and acked > 0,
           "appending until the disk is full fails with ENOSPC",
           (err, acked))
        # A write past the end (a hole, then data) cannot fit either.
        try:
            os.pwrite(fd, pat * 4, acked + (1 << 20))
            err = None
        except OSError as e:
            err = e.errno
        os.close(fd)
        ok(err == errno.ENOSPC, "a write past the end fails with ENOSPC",
           err)
        check("mounted")
        # The last bytes of room, a hundred at a time.
        filled = 0
        with open(os.path.join(MP, "fill"), "wb", buffering=0) as f:
            for _ in range(100000):
                try:
                    filled += f.write(b"f" * 100)
                except OSError as e:
                    err = e.errno
                    break
        got = open(os.path.join(MP, "fill"), "rb").read()
        ok(err == errno.ENOSPC and got == b"f" * filled,
           "the disk is full to the last page; those writes read back",
           (err, filled, len(got)))
        # Growing by truncate needs a new last block: it cannot fit.
        try:
            os.truncate(path, acked + 3000000)
            err = None
        except OSError as e:
            err = e.errno
        ok(err == errno.ENOSPC, "truncate up fails with ENOSPC", err)
        check("after truncate")
        # A directory needs its IV file: no half-made directory is left.
        try:
            os.mkdir(os.path.join(MP, "dir"))
            err = None
        except OSError as e:
            err = e.errno
        ok(err == errno.ENOSPC and "dir" not in os.listdir(MP),
           "mkdir fails with ENOSPC and leaves no directory",
           (err, os.listdir(MP)))
        umount(MP, p)
        p = mount("tiny", MP)
        procs.append(p)
        check("remounted")
        log = coffer("audit", "show", "--tenant", "tiny").stdout
        ok(log.count('"fs.integrity"') == 0,
           "a full disk raises no integrity alarm")
        os.unlink(path)
        with open(os.path.join(MP, "after"), "wb") as f:
            f.write(pat * 10)
        ok(open(os.path.join(MP, "after"), "rb").read() == pat * 10,
           "deleting a file makes room for 1 MB again")
    finally:
        umount(MP, p)
        subprocess.run(["umount", store])


def run_isolation():
    # beta's store replaced by acme's: beta's keys must refuse it.
    shutil.rmtree(store_of("beta"))
    subprocess.run(["cp", "-a", store_of("acme"), store_of("beta")],
                   check=True)
    r = coffer("mount", "beta", MP)
    ok(r.returncode == 3 and "does not belong" in r.stderr and
       not os.path.ismount(MP), "another tenant's store is refused", r.stderr)
    # A store whose marker was deleted is not adopted by any tenant.
    os.unlink(os.path.join(store_of("acme"), "cf.store"))
    r = coffer("mount", "acme", MP)
    ok(r.returncode == 3 and not os.path.ismount(MP),
       "a store whose marker was deleted is refused", r.stderr)
    # A shredded tenant cannot mount.
    coffer("tenant", "shred", "beta", "--yes", check=True)
    r = coffer("mount", "beta", MP)
    ok(r.returncode == 4 and not os.path.ismount(MP),
       "a shredded tenant cannot mount", r.stderr)


try:
    main()
except Exception as e:  # report, never hide, a harness failure
    import traceback
    ok(False, f"harness: {e!r}", traceback.format_exc() + "\n" +
       daemon_report())
finally:
    cleanup()
print(f"1..{n}")
sys.exit(1 if failed else 0)
