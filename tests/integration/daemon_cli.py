#!/usr/bin/python3
"""daemon_cli.py - coffer daemon (docs/operations.md, Scheduling) over
simulated days: `coffer daemon --once` with COFFER_NOW set per run
(test_clock builds only; skips otherwise) on tenants written through real
`coffer mount`s.  Day 1 every tenant gets a backup, a second pass the same
day does nothing, day 5 after a gap gives exactly one catch-up snapshot
each; with max_jobs = 1 the jobs' recorded wall-clock intervals never
overlap; a tenant whose repository is broken fails, is retried only after
its backoff (15, then 30 min), shows in coffer status and the metrics, and
recovers once fixed; a wedged job is stopped at the time limit; an exit 3 is held for a person until the next
daily slot; retention keeps keep_last; a purge that is due is run;
over 30 days the
read-data coverage reads every pack of a repository (checked against the
pack files) without reading all of them daily; the looping daemon stops
on SIGTERM after its jobs and exits 0.  TAP output.  Needs root and
/dev/fuse."""
import calendar
import glob
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import time

import cftest

COFFER = cftest.COFFER
if os.environ.get("CF_TEST_CLOCK") != "true":
    print("1..0 # SKIP COFFER_NOW needs a -Dtest_clock=true build")
    raise SystemExit(0)
cftest.need_fuse()
TAP = cftest.Tap()
ok = TAP.ok
H = cftest.Home("cf_daemon.", "daemon test passphrase")
H2 = cftest.Home("cf_daemon2.", "daemon test passphrase 2")
METRICS = os.path.join(H.t, "coffer.prom")
CONF = cftest.FAST_KMS + f"""
[daemon]
window_start = 00:00
window_hours = 2
max_jobs = 1
retry_minutes = 15
retry_max_minutes = 60

[retention]
keep_last = 3

[operations]
metrics_file = {METRICS}
"""


def at(day, hm="12:00"):
    return f"2031-03-{day:02d}T{hm}:00Z"


PASSES = []  # COFFER_NOW of every pass on H, for the drill rotation


def daemon(h, when, *args):
    if h is H:
        PASSES.append(when)
    return h.coffer("daemon", "--once", *args,
                    env=dict(h.env, COFFER_NOW=when))


def state(h):
    with open(os.path.join(h.home, "daemon.json")) as f:
        return json.load(f)["tenants"]


def nsnaps(h, name):
    r = h.coffer("--json", "snapshots", name)
    try:
        return len(json.loads(r.stdout))
    except ValueError:
        return -1


def status(h, when):
    r = h.coffer("--json", "status", env=dict(h.env, COFFER_NOW=when))
    try:
        return r, {x["tenant"]: x for x in json.loads(r.stdout)}
    except (ValueError, KeyError, TypeError):
        return r, {}


def make_tenant(h, name, size):
    r = h.coffer("tenant", "create", name)
    assert r.returncode == 0, r.stderr
    p = h.mount(name)
    with open(os.path.join(h.mp, "data.bin"), "wb") as f:
        f.write(os.urandom(size))
    os.makedirs(os.path.join(h.mp, "docs"))
    with open(os.path.join(h.mp, "docs/readme"), "w") as f:
        f.write(f"tenant {name}\n")
    h.umount(p)


try:
    with open(H.conf, "w") as f:
        f.write(CONF)
    for n in ("a", "b", "c"):
        make_tenant(H, n, 200000)
    # A tenant never mounted has no store: nothing to back up, skipped.
    assert H.coffer("tenant", "create", "empty").returncode == 0

    # ---- day 1: every tenant gets a backup ----
    t0 = time.time()
    r = daemon(H, at(1))
    ok(r.returncode == 0, "day 1: daemon --once exits 0", r.stderr)
    ok([nsnaps(H, n) for n in "abc"] == [1, 1, 1],
       "day 1: one snapshot per tenant",
       str([nsnaps(H, n) for n in "abc"]))
    st = state(H)
    ok("empty" not in st and nsnaps(H, "empty") <= 0,
       "a tenant without a store is not scheduled", json.dumps(st)[:500])
    day1 = 1930132800  # 2031-03-01T12:00:00Z
    ok(all(st[n]["backup"]["last_ok"] == day1 and
           st[n]["retention"]["last_ok"] == day1 and
           st[n]["verify"]["last_ok"] == day1 for n in "abc"),
       "state: backup, retention and verify succeeded at the daemon's "
       "clock", json.dumps(st)[:800])
    spans = sorted((j["started_ns"], j["ended_ns"], f"{n}.{k}")
                   for n in "abc" for k, j in st[n].items())
    overlap = [(x[2], y[2]) for x, y in zip(spans, spans[1:])
               if y[0] < x[1]]
    ok(len(spans) >= 9 and not overlap and
       all(t0 * 1e9 <= s <= e for s, e, _ in spans),
       f"max_jobs = 1: {len(spans)} job runs, none overlapping",
       str(overlap) + str(spans))
    r, rows = status(H, at(1))
    ok(all("daemon:" not in rows.get(n, {}).get("why", "x")
           for n in "abc"), "status: no daemon failure", r.stdout)

    # ---- the same day again: nothing is due ----
    r = daemon(H, at(1, "12:30"))
    ok(r.returncode == 0 and [nsnaps(H, n) for n in "abc"] == [1, 1, 1],
       "day 1, second pass: no new snapshot", r.stderr)

    # ---- day 5 after a gap: one catch-up snapshot each ----
    r = daemon(H, at(5))
    ok(r.returncode == 0 and [nsnaps(H, n) for n in "abc"] == [2, 2, 2],
       "day 5: exactly one catch-up snapshot per tenant (not four)",
       r.stderr + str([nsnaps(H, n) for n in "abc"]))

    # ---- day 6: tenant c's repository is broken ----
    repo_c = os.path.join(H.home, "repos", "c")
    os.rename(repo_c, repo_c + ".away")
    with open(repo_c, "w") as f:
        f.write("not a repository\n")
    r = daemon(H, at(6))
    ok(r.returncode == 1, "day 6: a failed job makes --once exit 1",
       r.stderr)
    ok("c: backup failed (exit 1), 1 time since 2031-03-06T12:00:00Z; "
       "next try 2031-03-06T12:15:00Z" in r.stderr,
       "the failure is logged with its next try", r.stderr)
    ok(nsnaps(H, "a") == 3 and nsnaps(H, "b") == 3,
       "the other tenants are backed up regardless")
    c = state(H)["c"]["backup"]
    ok(c["failures"] == 1 and c["hold"] == 0 and
       c["next_try"] == day1 + 5 * 86400 + 900,
       "state: 1 failure, retry in 15 min", json.dumps(c))
    r, rows = status(H, at(6, "12:01"))
    why = rows.get("c", {}).get("why", "")
    ok(r.returncode == 1 and rows.get("c", {}).get("health") != "OK" and
       "daemon: backup failed 1 time since 2031-03-06T12:00:00Z, next try "
       "2031-03-06T12:15:00Z" in why, "status: c not OK, WHY names the "
       "daemon failure", why)
    prom = open(METRICS).read() if os.path.exists(METRICS) else ""
    ok('coffer_daemon_job_failures{tenant="c",job="backup"} 1' in prom and
       'coffer_daemon_job_failures{tenant="a",job="backup"} 0' in prom and
       'coffer_daemon_job_next_try_timestamp_seconds{tenant="c",'
       f'job="backup"}} {day1 + 5 * 86400 + 900}' in prom,
       "metrics: the daemon wrote the failure into the metrics file", prom)

    r = daemon(H, at(6, "12:10"))
    c = state(H)["c"]["backup"]
    ok(r.returncode == 0 and c["failures"] == 1 and
       c["last_try"] == day1 + 5 * 86400,
       "12:10: inside the backoff, not retried", json.dumps(c) + r.stderr)
    r = daemon(H, at(6, "12:16"))
    c = state(H)["c"]["backup"]
    ok(r.returncode == 1 and c["failures"] == 2 and
       c["next_try"] == day1 + 5 * 86400 + 16 * 60 + 1800,
       "12:16: retried, fails again, next try doubles to 30 min",
       json.dumps(c))
    r = daemon(H, at(6, "12:40"))
    ok(state(H)["c"]["backup"]["failures"] == 2,
       "12:40: inside the 30 min backoff, not retried")

    os.unlink(repo_c)
    os.rename(repo_c + ".away", repo_c)
    r = daemon(H, at(6, "12:47"))
    c = state(H)["c"]["backup"]
    ok(r.returncode == 0 and c["failures"] == 0 and nsnaps(H, "c") == 3,
       "12:47: fixed, retried, recovered", r.stderr + json.dumps(c))
    ok("c: backup recovered after 2 failures" in r.stderr,
       "the recovery is logged", r.stderr)
    r, rows = status(H, at(6, "12:48"))
    prom = open(METRICS).read() if os.path.exists(METRICS) else ""
    ok("daemon:" not in rows.get("c", {}).get("why", "x") and
       'coffer_daemon_job_failures{tenant="c",job="backup"} 0' in prom,
       "status and metrics show c recovered",
       rows.get("c", {}).get("why", "") + prom)

    # ---- day 7: the fourth backup of a; retention keeps 3 ----
    PASSES.append(at(7))
    r = H.coffer("-v", "daemon", "--once",
                 env=dict(H.env, COFFER_NOW=at(7)))
    ok(all(f"{n}: backup started" in r.stderr and f"{n}: backup ok (" in
           r.stderr for n in "abc"), "-v logs every step", r.stderr)
    snaps = json.loads(H.coffer("--json", "snapshots", "a").stdout or "[]")
    ok(r.returncode == 0 and len(snaps) == 3,
       "day 7: 4 backups of a, retention (keep_last = 3) left 3",
       r.stderr + str(len(snaps)))

    # ---- day 8: b's store carries c's marker: exit 3, needs a person ----
    mark_b = os.path.join(H.home, "tenants/b/store/cf.store")
    mark_c = os.path.join(H.home, "tenants/c/store/cf.store")
    good = open(mark_b, "rb").read()
    with open(mark_b, "wb") as f:
        f.write(open(mark_c, "rb").read())
    r = daemon(H, at(8))
    b = state(H)["b"]["backup"]
    ok(r.returncode == 1 and b["last_exit"] == 3 and b["hold"] == 1 and
       "b: backup failed (exit 3: needs a person)" in r.stderr,
       "day 8: exit 3 is held for a person, not retried in 15 min",
       r.stderr + json.dumps(b))
    r, rows = status(H, at(8, "12:01"))
    prom = open(METRICS).read() if os.path.exists(METRICS) else ""
    ok(rows.get("b", {}).get("health") == "FAIL" and
       "daemon: backup failed (exit 3: needs a person)" in
       rows.get("b", {}).get("why", "") and
       'coffer_daemon_job_needs_person{tenant="b",job="backup"} 1' in prom,
       "status FAIL and the needs_person metric for b",
       rows.get("b", {}).get("why", "") + prom[-1500:])
    r = daemon(H, at(8, "14:00"))
    ok(state(H)["b"]["backup"]["failures"] == 1,
       "two hours later: still held (no blind retry)")
    with open(mark_b, "wb") as f:
        f.write(good)
    r = daemon(H, at(9))
    b = state(H)["b"]["backup"]
    ok(r.returncode == 0 and b["failures"] == 0 and b["hold"] == 0,
       "day 9: tried at its next slot, fixed meanwhile: recovered",
       r.stderr + json.dumps(b))

    # ---- the loop refreshes the metrics after jobs and every 5 min ----
    with open(H.conf, "a") as f:
        f.write("[daemon]\ntick_seconds = 1\n")
    p = subprocess.Popen([COFFER, "-v", "daemon"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         env=dict(H.env, COFFER_NOW=at(9, "13:00")))
    time.sleep(3)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    PASSES.append(at(9, "13:00"))
    n = err.count("refreshing the metrics")
    ok(p.returncode == 0 and 1 <= n <= 2 and "started" not in
       err.replace("coffer daemon: started", ""),
       f"idle loop for 3 s: nothing started, metrics refreshed {n} times "
       "(not in a loop)", err[-1500:])

    # ---- drills: weekly on a stable day per tenant, caught up once ----
    # The daemon's rule (docs/operations.md), modelled here: tenant a's
    # slot is 00:00 + BLAKE2b-64(name, key 0x01) mod 2 h; its drill day
    # the day whose number mod 7 is BLAKE2b-64(name, key 0x02) mod 7; a
    # drill runs at the first pass after the latest drill slot.
    def h64(name, k):
        return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8,
                                              key=bytes([k])).digest(),
                              "big")

    def drill_last(name, t):
        d = t // 86400
        while True:
            slot = d * 86400 + h64(name, 1) % 7200
            if d % 7 == h64(name, 2) % 7 and slot <= t:
                return slot
            d -= 1

    want, last = 0, 0
    for w in PASSES:
        t = calendar.timegm(time.strptime(w, "%Y-%m-%dT%H:%M:%SZ"))
        if last < drill_last("a", t):
            want, last = want + 1, t
    aud = H.coffer("audit", "show", "--tenant", "a").stdout.splitlines()
    got = sum('"backup.drill"' in x for x in aud)
    ok(2 <= want <= 3 and got == want and
       state(H)["a"]["drill"]["last_ok"] == last,
       f"tenant a: {got} drills in 9 days at its weekly slot, as the "
       "rotation says", f"want {want} got {got} passes {PASSES}")

    # ---- read-data coverage over 30 days (another home) ----
    with open(H2.conf, "w") as f:
        f.write(cftest.FAST_KMS + "[daemon]\nwindow_start = 00:00\n"
                "window_hours = 1\ndrill_days = 0\n")
    make_tenant(H2, "d", 100000)
    reads = []
    for day in range(1, 31):
        if day <= 10:
            # New data most days: a new pack each.
            H2.coffer("backup", "d", "--stdin", "--name", f"f{day}",
                      stdin=os.urandom(50000 + day), text=False,
                      env=dict(H2.env, COFFER_NOW=at(day, "06:00")))
        r = daemon(H2, at(day))
        if r.returncode != 0:
            break
    ok(r.returncode == 0, "30 daily passes succeed", r.stderr)
    packs = {os.path.basename(p) for p in
             glob.glob(os.path.join(H2.home, "repos/d/data/*/*"))}
    cov = {}
    with open(os.path.join(H2.home, "tenants/d/verify-coverage")) as f:
        lines = f.read().splitlines()
    for ln in lines[1:]:
        pid, first, last = ln.split()
        cov[pid] = (int(first), int(last))
    ok(lines[0] == "coffer-verify-coverage 1" and set(cov) == packs and
       len(packs) >= 10, f"coverage lists exactly the {len(packs)} pack "
       "files of the repository", str(sorted(packs)) + str(cov))
    day30 = day1 + 29 * 86400
    ok(all(0 < last and day30 - last < 30 * 86400 and last >= first
           for first, last in cov.values()),
       "every pack was read whole within the last 30 days", str(cov))
    aud = H2.coffer("audit", "show", "--tenant", "d").stdout.splitlines()
    reads = [json.loads(x).get("packs_read", -1) for x in aud
             if '"backup.verify"' in x]
    ok(len(reads) == 30 and all(n >= 1 for n in reads) and
       max(reads) < len(packs) and sum(reads) >= len(packs),
       "each daily verify read some packs, never all of them", str(reads))

    # ---- the loop: SIGTERM waits for the running jobs, exit 0 ----
    with open(H2.conf, "a") as f:
        f.write("tick_seconds = 1\n")
    p = subprocess.Popen([COFFER, "daemon"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         env=dict(H2.env, COFFER_NOW=at(31)))
    end = time.time() + 30
    while time.time() < end:
        try:
            if state(H2)["d"]["backup"]["last_try"] == day1 + 30 * 86400:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    p.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    try:
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    ok(p.returncode == 0 and "stopped" in err and
       "configuration reloaded" in err,
       "looping daemon: SIGHUP reloads, SIGTERM stops with exit 0", err)
    d = state(H2)["d"]
    ok(d["backup"]["last_ok"] == day1 + 30 * 86400 and
       all(j["last_ok"] == j["last_try"] for j in d.values()),
       "every job it had started finished and was recorded",
       json.dumps(d))
    # ---- one daemon per home; bad settings and state are refused ----
    import fcntl
    with open(os.path.join(H2.home, "daemon.json.lock"), "a") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        r = daemon(H2, at(31))
    ok(r.returncode == 1 and "another coffer daemon" in r.stderr,
       "a second daemon on the same home exits 1", r.stderr)
    with open(H2.conf, "a") as f:
        f.write("max_jobs = 0\n")
    r = daemon(H2, at(31))
    ok(r.returncode == 2 and "[daemon] max_jobs" in r.stderr,
       "a bad [daemon] setting is a usage error (exit 2)", r.stderr)
    with open(H2.conf, "w") as f:
        f.write(cftest.FAST_KMS)
    sf = os.path.join(H2.home, "daemon.json")
    saved = open(sf).read()
    with open(sf, "w") as f:
        f.write(saved[:len(saved) // 2])
    r = daemon(H2, at(31))
    ok(r.returncode == 3 and "malformed" in r.stderr and
       open(sf).read() == saved[:len(saved) // 2],
       "a malformed state file: the daemon refuses (exit 3) and keeps it",
       r.stderr)
    r, rows = status(H2, at(31))
    ok("d" in rows and "daemon state" in r.stderr,
       "status still reports, and warns about the state file", r.stderr)
    with open(sf, "w") as f:
        f.write(saved)
    cp = os.path.join(H2.home, "tenants/d/verify-coverage")
    with open(cp, "w") as f:
        f.write("coffer-verify-coverage 1\nnot a line\n")
    r = H2.coffer("verify", "d", "--read-data-due", "30",
                  env=dict(H2.env, COFFER_NOW=at(31)))
    ok(r.returncode == 0 and os.path.exists(cp + ".bad") and
       "malformed" in r.stderr and
       open(cp).read().startswith("coffer-verify-coverage 1\n") and
       "read-data coverage (30 days)" in r.stdout,
       "a malformed coverage file is moved aside; coverage starts afresh",
       r.stdout + r.stderr)
    r = H2.coffer("verify", "d", "--read-data-due", "30", "--repo",
                  "file:///nonexistent")
    ok(r.returncode == 2, "--read-data-due with --repo is a usage error")
    # ---- a tenant whose purge date passed: the daemon runs the purge ----
    with open(H2.conf, "a") as f:
        f.write("[lifecycle]\ncancelled_purge_days = 2\n")
    make_tenant(H2, "e", 1000)
    r = daemon(H2, at(1).replace("03-01", "04-01"))
    ok(r.returncode == 0 and nsnaps(H2, "e") == 1, "e backed up",
       r.stderr)
    r = H2.coffer("lifecycle", "set", "e", "cancelled", "--at",
                  "2031-04-01T13:00:00Z")
    r = daemon(H2, "2031-04-04T12:00:00Z")
    e = state(H2)["e"]
    ok(r.returncode == 0 and glob.glob(os.path.join(H2.home,
       "receipts/e-*.json")) and
       e["retention"]["last_ok"] == 1932811200 + 3 * 86400 and
       e["backup"]["last_try"] == 1932811200,
       "purge due: the daemon ran retention apply (the purge, with its "
       "receipt) and no backup", r.stdout + r.stderr + json.dumps(e))
    r = daemon(H2, "2031-04-05T12:00:00Z")
    ok(r.returncode == 0 and state(H2)["e"] == e,
       "a purged tenant is not scheduled any more", r.stderr)
    # ---- a wedged job is stopped at the time limit ----
    # w's store has a control socket that accepts and never answers (a
    # hung mount daemon): its backup waits for ever.  Test builds take
    # the limit in seconds from COFFER_TEST_JOB_TIMEOUT_SECONDS.
    make_tenant(H2, "w", 1000)
    ctl = os.path.join(H2.home, "tenants/w/store/cf.ctl")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(ctl)
    srv.listen(4)
    t0 = time.time()
    r = H2.coffer("daemon", "--once", env=dict(
        H2.env, COFFER_NOW="2031-04-06T12:00:00Z",
        COFFER_TEST_JOB_TIMEOUT_SECONDS="2"))
    took = time.time() - t0
    srv.close()
    os.unlink(ctl)
    w = state(H2)["w"]["backup"]
    ok(r.returncode == 1 and took < 60 and
       "w: backup running for more than 2 s: stopping it" in r.stderr and
       w["failures"] == 1 and w["last_exit"] == 128 + signal.SIGTERM and
       w["next_try"] == 1932811200 + 5 * 86400 + 900,
       f"a wedged backup is stopped at the limit ({took:.1f} s), counts as "
       "a failure and is retried after the backoff",
       r.stderr + json.dumps(w))
    r = daemon(H2, "2031-04-06T12:16:00Z")
    w = state(H2)["w"]["backup"]
    ok(r.returncode == 0 and w["failures"] == 0 and nsnaps(H2, "w") == 1,
       "once the mount answers again, the retry succeeds",
       r.stderr + json.dumps(w))
    r = H2.coffer("daemon", "extra")
    ok(r.returncode == 2, "daemon with an argument is a usage error")
    r = H2.coffer("help", "daemon")
    ok(r.returncode == 0 and "--max-jobs" in r.stdout, "coffer help daemon")
    # No secret in any daemon.json or log: the passphrase is in a file.
    ok(not re.search("daemon test passphrase",
                     open(os.path.join(H.home, "daemon.json")).read()),
       "the state file holds no secret")
finally:
    H.cleanup()
    H2.cleanup()

TAP.done()
