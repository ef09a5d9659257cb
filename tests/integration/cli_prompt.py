#!/usr/bin/env python3
"""cli_prompt.py - the passphrase prompt on a real pseudo-terminal.

Regression test (bug_prompt_echo_not_restored): Ctrl-C (SIGINT) or
SIGTERM at the passphrase prompt left the terminal with echo off, and
the result of tcsetattr was not checked.  The prompt must turn echo off
while it reads and put it back however it ends.  TAP output.
"""
import os
import pty
import select
import shutil
import signal
import sys
import tempfile
import termios
import time

COFFER = os.environ["COFFER"]
n = 0
failed = 0


def ok(cond, desc):
    global n, failed
    n += 1
    if not cond:
        failed += 1
    print(("ok" if cond else "not ok") + " %d - %s" % (n, desc), flush=True)


def read_until(fd, needle, timeout=20.0):
    buf = b""
    end = time.monotonic() + timeout
    while needle not in buf and time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


def echo_on(fd):
    return bool(termios.tcgetattr(fd)[3] & termios.ECHO)


def prompt_then(sig, tmp):
    home = os.path.join(tmp, "home-%d" % sig)
    os.mkdir(home, 0o700)
    with open(os.path.join(home, "coffer.conf"), "w") as f:
        f.write("[kms.local]\ntype = file\nargon2_ops = 1\n"
                "argon2_mem_kib = 8\n")
    env = {k: v for k, v in os.environ.items()
           if k != "COFFER_PASSPHRASE_FILE"}
    env["COFFER_HOME"] = home
    pid, master = pty.fork()
    if pid == 0:
        os.execve(COFFER, [COFFER, "tenant", "create", "acme"], env)
    seen = read_until(master, b"passphrase for KMS")
    ok(b"passphrase for KMS" in seen, "signal %d: the prompt appears" % sig)
    ok(not echo_on(master), "signal %d: echo is off at the prompt" % sig)
    os.kill(pid, sig)
    _, status = os.waitpid(pid, 0)
    ok(os.WIFSIGNALED(status) and os.WTERMSIG(status) == sig,
       "signal %d: coffer dies of it as before" % sig)
    ok(echo_on(master), "signal %d: echo is back on afterwards" % sig)
    os.close(master)


def main():
    print("1..8", flush=True)
    tmp = tempfile.mkdtemp(prefix="cf_prompt.")
    try:
        prompt_then(signal.SIGINT, tmp)
        prompt_then(signal.SIGTERM, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
