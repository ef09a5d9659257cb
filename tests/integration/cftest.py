"""cftest.py - what the Python integration tests share: TAP output, a
throwaway coffer home with a fast file KMS, and real `coffer mount`s."""
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

COFFER = os.environ["COFFER"]
FAST_KMS = "[kms.local]\ntype = file\nargon2_ops = 1\nargon2_mem_kib = 8\n"


class Tap:
    """Numbered ok / not ok lines; done() prints the plan and exits."""

    def __init__(self):
        self.n = 0
        self.failed = 0

    def ok(self, cond, desc, detail=""):
        self.n += 1
        if cond:
            print(f"ok {self.n} - {desc}")
        else:
            self.failed += 1
            print(f"not ok {self.n} - {desc}")
            for line in str(detail).splitlines()[:30]:
                print(f"# {line}")
        sys.stdout.flush()

    def skip(self, desc, why):
        self.n += 1
        print(f"ok {self.n} - {desc} # SKIP {why}")

    def done(self):
        print(f"1..{self.n}")
        sys.exit(1 if self.failed else 0)


def farm_left(snapdir, secs=10.0):
    """The farms still under snapdir once the daemon has had up to secs
    to remove them: it answers RELEASE first (ctl.md [CTL-2])."""
    deadline = time.monotonic() + secs
    while True:
        left = os.listdir(snapdir) if os.path.isdir(snapdir) else []
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def need_fuse():
    """Skips without root and /dev/fuse; in CI (CI=true) that fails."""
    if not os.path.exists("/dev/fuse") or os.geteuid() != 0:
        print("1..0 # SKIP needs root and /dev/fuse")
        sys.exit(0 if os.environ.get("CI") != "true" else 1)


class Home:
    """A temporary home (fast file KMS, passphrase in a 0600 file) and a
    mount point; cleanup() unmounts, kills leftovers and removes it."""

    def __init__(self, prefix, passphrase):
        self.t = tempfile.mkdtemp(prefix=prefix)
        self.home = os.path.join(self.t, "home")
        os.makedirs(self.home)
        self.conf = os.path.join(self.home, "coffer.conf")
        with open(self.conf, "w") as f:
            f.write(FAST_KMS)
        pw = os.path.join(self.t, "pass")
        with open(pw, "w") as f:
            f.write(passphrase + "\n")
        os.chmod(pw, 0o600)
        self.env = dict(os.environ, COFFER_HOME=self.home,
                        COFFER_PASSPHRASE_FILE=pw)
        self.env.pop("COFFER_NOW", None)
        self.mp = os.path.join(self.t, "mnt")
        os.makedirs(self.mp)
        self.procs = []

    def coffer(self, *args, env=None, stdin=None, text=True, timeout=300):
        return subprocess.run([COFFER, *args], capture_output=True,
                              text=text, env=env or self.env,
                              timeout=timeout, input=stdin)

    def mount(self, tenant, *opts):
        p = subprocess.Popen([COFFER, "mount", tenant, self.mp, "-f",
                              *opts],
                             env=self.env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        self.procs.append(p)
        end = time.time() + 15
        while time.time() < end:
            if os.path.ismount(self.mp):
                return p
            if p.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("mount failed: " + p.stderr.read().decode())

    def umount(self, p):
        if self.coffer("umount", self.mp).returncode != 0:
            subprocess.run(["fusermount3", "-u", "-z", self.mp])
        p.wait(timeout=60)  # a guard against a hang, not a speed check

    def cleanup(self):
        if os.path.ismount(self.mp):
            subprocess.run(["fusermount3", "-u", "-z", self.mp])
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        shutil.rmtree(self.t, ignore_errors=True)


def on_pty(env, args, cols=60, stdin=None):
    """Runs coffer with standard error on a pseudo-terminal cols wide
    (standard output a pipe); returns (exit code, stdout bytes, what the
    terminal got as text, seconds)."""
    import fcntl
    import struct
    import termios
    m, sl = os.openpty()
    fcntl.ioctl(sl, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))
    t = time.monotonic()
    p = subprocess.Popen([COFFER] + list(args), env=env,
                         stdin=stdin if stdin is not None else
                         subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=sl)
    os.close(sl)
    term = b""
    while True:
        try:
            d = os.read(m, 65536)
        except OSError:     # EIO: the child closed the terminal
            break
        if not d:
            break
        term += d
    out = p.stdout.read()
    p.wait(timeout=300)
    os.close(m)
    return p.returncode, out, term.decode(errors="replace"), \
        time.monotonic() - t


def progress_lines(term):
    """The progress lines drawn on a terminal: each redraw of backup's and
    restore's line is "\\r LINE ESC[K" (an empty one clears it)."""
    import re
    return re.findall(r"\r([^\r\n\x1b]+)\x1b\[K", term)


def js(r):
    """The JSON a command printed on stdout, or {} if it printed none."""
    try:
        return json.loads(r.stdout)
    except ValueError:
        return {}


def entries(top, ordered=False):
    """(path relative to top, path) of everything below top, each
    directory's names sorted when ordered."""
    for root, dirs, files in os.walk(top):
        names = dirs + files
        for name in sorted(names) if ordered else names:
            p = os.path.join(root, name)
            yield os.path.relpath(p, top), p


def sha256_file(p):
    """Hex SHA-256 of a file's bytes."""
    with open(p, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def xattrs(p):
    """A file's extended attributes, name -> value."""
    return {x: os.getxattr(p, x) for x in os.listxattr(p)}


def content_tree(top):
    """Path -> sha256 of a file, or "d" for a directory: contents only."""
    return {rel: "d" if os.path.isdir(p) else sha256_file(p)
            for rel, p in entries(top)}


def tree_state(root, all_xattrs=False, hash_data=False):
    """path -> (type, mode, uid, gid, mtime_ns, size (0 for directories),
    content (its sha256 with hash_data) or symlink target, xattrs (user.*
    unless all_xattrs), rdev, link key); the link key groups hard links
    by inode."""
    out, inodes = {}, {}
    for dirpath, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            data = None
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    data = f.read()
                if hash_data:
                    data = hashlib.sha256(data).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                data = os.readlink(p)
            xa = {}
            if not stat.S_ISLNK(st.st_mode):
                xa = {k: os.getxattr(p, k, follow_symlinks=False)
                      for k in os.listxattr(p, follow_symlinks=False)
                      if all_xattrs or k.startswith("user.")}
            link = None
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                link = inodes.setdefault(st.st_ino, rel)
            mt = st.st_mtime_ns if not stat.S_ISLNK(st.st_mode) else 0
            size = st.st_size if not stat.S_ISDIR(st.st_mode) else 0
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                        st.st_uid, st.st_gid, mt, size, data, xa,
                        st.st_rdev, link)
    return out


def tree_diff(a, b):
    """The entries of two tree_state results that differ, one per line."""
    def short(v):
        return tuple(x if not isinstance(x, bytes) or len(x) < 64
                     else f"<{len(x)} bytes>" for x in v)
    lines = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            va, vb = a.get(k), b.get(k)
            if va and vb:
                va, vb = short(va), short(vb)
            lines.append(f"{k}: {va} != {vb}")
    return "\n".join(lines)
