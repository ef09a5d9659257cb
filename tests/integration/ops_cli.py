#!/usr/bin/python3
"""ops_cli.py - coffer drill and coffer status (docs/operations.md) on a
tenant written through a real `coffer mount`: a drill that passes and
projects the restore time, one over a tiny RTO (exit 1), one after a pack
was corrupted (exit 3); status OK, then WARN two days later (COFFER_NOW,
test_clock builds only), FAIL after the damaged drill; the Prometheus
textfile metrics; another home's mount of a tenant of the same name is not
this home's; backups on simulated days are stamped with COFFER_NOW.  TAP output.  Needs root and /dev/fuse."""
import calendar
import glob
import json
import os
import stat
import time

import cftest

COFFER = cftest.COFFER
TEST_CLOCK = os.environ.get("CF_TEST_CLOCK") == "true"
cftest.need_fuse()
TAP = cftest.Tap()
ok, skip = TAP.ok, TAP.skip
H = cftest.Home("cf_ops.", "ops test passphrase")
T, HOME, ENV, MP, CONF = H.t, H.home, H.env, H.mp, H.conf
BASE_CONF = cftest.FAST_KMS
coffer, mount, umount, cleanup = H.coffer, H.mount, H.umount, H.cleanup


def status_json(*args, env=None):
    r = coffer("--json", "status", *args, env=env)
    try:
        rows = {x["tenant"]: x for x in json.loads(r.stdout)}
    except (ValueError, KeyError, TypeError):
        rows = {}
    return r, rows


try:
    r = coffer("tenant", "create", "acme")
    assert r.returncode == 0, r.stderr

    p = mount("acme")
    os.makedirs(os.path.join(MP, "docs/deep"))
    with open(os.path.join(MP, "docs/big.bin"), "wb") as f:
        f.write(os.urandom(5 << 20))
    with open(os.path.join(MP, "small.txt"), "wb") as f:
        f.write(b"hello coffer\n")
    open(os.path.join(MP, "empty"), "wb").close()
    with open(os.path.join(MP, "docs/deep/text"), "wb") as f:
        f.write(b"compressible " * 50000)
    with open(os.path.join(MP, "sparse"), "wb") as f:
        f.write(b"head")
        f.seek(3 << 20)
        f.write(b"tail")
    os.symlink("docs/big.bin", os.path.join(MP, "link"))

    r, rows = status_json("acme")
    ok(r.returncode == 1 and rows.get("acme", {}).get("mounted") is True,
       "status before any backup: mounted, not OK (exit 1)",
       r.stdout + r.stderr)
    ok("no backup recorded" in rows.get("acme", {}).get("why", ""),
       "status says no backup is recorded", r.stdout)
    umount(p)

    r = coffer("--json", "backup", "acme")
    ok(r.returncode == 0, "backup", r.stderr)
    snap = json.loads(r.stdout).get("snapshot", "") if r.returncode == 0 \
        else ""
    r = coffer("verify", "acme")
    ok(r.returncode == 0, "verify", r.stdout + r.stderr)

    # ---- a drill that passes ----
    scratch = os.path.join(T, "scratch")
    r = coffer("--json", "drill", "acme", "--scratch", scratch)
    ok(r.returncode == 0, "drill passes (exit 0)", r.stdout + r.stderr)
    d = json.loads(r.stdout) if r.returncode == 0 else {}
    ok(d.get("result") == "ok" and d.get("snapshot") == snap,
       "drill restored the latest snapshot, result ok", r.stdout)
    ok(d.get("mismatched") == 0 and d.get("damaged") == 0 and
       d.get("blobs_checked", 0) >= 3,
       "every restored chunk re-hashed and matched", r.stdout)
    ok(d.get("bytes", 0) >= (5 << 20) and d.get("files") == 6 and
       d.get("dirs") == 2, "drill counted bytes, files and dirs", r.stdout)
    ok(d.get("bytes_per_s", 0) > 0 and d.get("files_per_s", 0) > 0 and
       0 < d.get("projected_rto_s", 0) <= d.get("rto_s", 0) and
       d.get("rto_s") == 8 * 3600,
       "drill reports throughput and a projection within the 8 h RTO",
       r.stdout)
    ok(os.path.isdir(scratch) and os.listdir(scratch) == [],
       "the scratch restore is removed afterwards",
       str(os.listdir(scratch)) if os.path.isdir(scratch) else "")
    r = coffer("drill", "acme", "--scratch", scratch, "--keep")
    kept = glob.glob(os.path.join(scratch, "drill-acme-*/restore"))
    ok(r.returncode == 0 and "within the RTO" in r.stdout and len(kept) == 1
       and os.path.isfile(os.path.join(kept[0], "docs/big.bin")),
       "--keep keeps the restored tree; human output names the RTO",
       r.stdout + r.stderr)
    r = coffer("audit", "show", "--tenant", "acme")
    ok("backup.drill" in r.stdout, "the drill is audited",
       r.stdout[-2000:] + r.stderr)

    # ---- status OK, metrics ----
    metrics = os.path.join(T, "metrics", "coffer.prom")
    os.makedirs(os.path.dirname(metrics))
    r, rows = status_json("--metrics", metrics)
    a = rows.get("acme", {})
    ok(r.returncode == 0 and a.get("health") == "OK",
       "status: OK after backup, verify and drill (exit 0)",
       r.stdout + r.stderr)
    ok(a.get("last_backup_snapshot") == snap and
       a.get("last_backup_bytes", 0) >= (5 << 20) and
       0 <= a.get("last_backup_age_s", -1) < 600 and
       a.get("last_verify_result") == "ok" and
       a.get("last_drill_result") == "ok" and
       a.get("projected_rto_s") is not None and a.get("mounted") is False,
       "status shows backup, verify, drill and projected RTO", r.stdout)
    # Another home on the machine mounts its own "acme": this home's
    # acme is still not mounted (status asks the store's daemon, not
    # the mount table's coffer:acme).
    H2 = cftest.Home("cf_ops2.", "other home passphrase")
    try:
        with open(H2.conf, "w") as f:
            f.write(BASE_CONF)
        assert H2.coffer("tenant", "create", "acme").returncode == 0
        p2 = H2.mount("acme")
        r2, rows2 = status_json()
        r3 = H2.coffer("--json", "status")
        ok(rows2.get("acme", {}).get("mounted") is False and
           '"mounted": true' in r3.stdout,
           "another home's mounted acme is not this home's",
           r2.stdout + r3.stdout)
        H2.umount(p2)
    finally:
        H2.cleanup()
    prom = open(metrics).read() if os.path.exists(metrics) else ""
    ok('coffer_tenant_ok{tenant="acme"} 1' in prom and
       'coffer_last_verify_success{tenant="acme"} 1' in prom and
       'coffer_last_backup_bytes{tenant="acme"} ' in prom and
       'coffer_projected_rto_seconds{tenant="acme"} ' in prom and
       "# TYPE coffer_last_backup_timestamp_seconds gauge" in prom,
       "metrics file has the tenant's gauges", prom)
    ts = [ln.split()[-1] for ln in prom.splitlines()
          if ln.startswith("coffer_last_backup_timestamp_seconds{")]
    ok(len(ts) == 1 and abs(int(ts[0]) - time.time()) < 600,
       "metrics: last backup timestamp is unix time", prom)
    ok(glob.glob(metrics + ".tmp*") == [],
       "metrics written atomically (no temporary left)")
    r = coffer("status")
    ok(r.returncode == 0 and "acme" in r.stdout and "OK" in r.stdout,
       "human status table", r.stdout + r.stderr)

    # ---- two days later: backup and verify are stale ----
    if TEST_CLOCK:
        later = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                              time.gmtime(time.time() + 2 * 86400))
        r, rows = status_json(env=dict(ENV, COFFER_NOW=later))
        a = rows.get("acme", {})
        ok(r.returncode == 1 and a.get("health") == "WARN" and
           "last backup older than 26 h" in a.get("why", ""),
           "status two days later: WARN, backup too old (exit 1)",
           r.stdout + r.stderr)
    else:
        skip("status two days later", "COFFER_NOW needs -Dtest_clock=true")

    # ---- an RTO the projection cannot meet ----
    with open(CONF, "w") as f:
        f.write(BASE_CONF + "[operations]\nrto_hours = 0.0000001\n")
    r = coffer("--json", "drill", "acme", "--scratch", scratch)
    d = json.loads(r.stdout) if r.stdout.startswith("{") else {}
    ok(r.returncode == 1 and d.get("result") == "over-rto",
       "drill over the RTO: exit 1, result over-rto", r.stdout + r.stderr)
    r, rows = status_json("acme")
    ok(r.returncode == 1 and rows.get("acme", {}).get("health") == "WARN",
       "status WARN after a drill over the RTO", r.stdout)
    with open(CONF, "w") as f:
        f.write(BASE_CONF)

    # ---- a corrupted pack ----
    packs = sorted(glob.glob(os.path.join(HOME, "repos/acme/data/*/*")),
                   key=os.path.getsize)
    ok(len(packs) >= 1, "the repository has packs", str(packs))
    big = packs[-1]
    size = os.path.getsize(big)
    with open(big, "r+b") as f:
        f.seek(size // 2)
        b = f.read(1)
        f.seek(size // 2)
        f.write(bytes([b[0] ^ 0x40]))
    r = coffer("--json", "drill", "acme", "--scratch", scratch)
    d = json.loads(r.stdout) if r.stdout.startswith("{") else {}
    ok(r.returncode == 3 and d.get("result") == "damaged",
       "drill after a pack was corrupted: exit 3, damaged",
       r.stdout + r.stderr)
    ok(d.get("mismatched", 0) + d.get("damaged", 0) >= 1,
       "the damaged file is counted", r.stdout)
    r, rows = status_json("acme")
    a = rows.get("acme", {})
    ok(r.returncode == 1 and a.get("health") == "FAIL" and
       a.get("last_drill_result") == "damaged",
       "status FAIL after the damaged drill", r.stdout)

    # ---- a drill of a store deeper than PATH_MAX (docs/backup.md) ----
    # 256 levels of 255-byte names written through the mount: the drill
    # re-hashes the file at the bottom, and sizes the live store through
    # directory descriptors (nftw, like os.walk, stopped at PATH_MAX and
    # counted a third of the backing files).
    r = coffer("tenant", "create", "deep")
    assert r.returncode == 0, r.stderr
    p = mount("deep")
    fd = os.open(MP, os.O_RDONLY | os.O_DIRECTORY)
    for name in [f"{i:03d}" + "d" * 252 for i in range(256)]:
        os.mkdir(name, dir_fd=fd)
        nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    f = os.open("f" * 255, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(f, b"at the bottom\n" * 1000)
    os.close(f)
    os.close(fd)
    umount(p)

    def backing_files(fd):
        n = 0
        for e in os.listdir(fd):
            st = os.stat(e, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):
                n += 1
            elif stat.S_ISDIR(st.st_mode):
                sub = os.open(e, os.O_RDONLY | os.O_DIRECTORY |
                              os.O_NOFOLLOW, dir_fd=fd)
                try:
                    n += backing_files(sub)
                finally:
                    os.close(sub)
        return n
    fd = os.open(os.path.join(HOME, "tenants", "deep", "store"),
                 os.O_RDONLY | os.O_DIRECTORY)
    nback = backing_files(fd)
    os.close(fd)
    r = coffer("backup", "deep")
    ok(r.returncode == 0, "backup of a store 256 levels deep", r.stderr)
    r = coffer("--json", "drill", "deep", "--scratch",
               os.path.join(T, "deep-drill"))
    d = cftest.js(r)
    ok(r.returncode == 0 and d.get("result") == "ok" and
       d.get("dirs") == 256 and d.get("files") == 1 and
       d.get("bytes") == 14000 and d.get("blobs_checked") == 1,
       "drill of it: the file 65 KiB deep restored and re-hashed",
       r.stdout + r.stderr[-400:])
    ok(d.get("target_files") == nback and nback > 256,
       f"the live store's size counts all {nback} backing files",
       f"{d.get('target_files')} of {nback}")
    ok(os.listdir(os.path.join(T, "deep-drill")) == [],
       "its scratch tree is removed")

    r = coffer("drill", "nosuch")
    ok(r.returncode == 1, "drill of an unknown tenant fails (exit 1)",
       r.stderr)
    r = coffer("drill")
    ok(r.returncode == 2, "drill without NAME is a usage error")

    # ---- backups are stamped with the schedules' clock (COFFER_NOW) ----
    if TEST_CLOCK:
        r = coffer("tenant", "create", "clocked")
        assert r.returncode == 0, r.stderr
        days = ["2031-05-01T02:00:00Z", "2031-05-02T02:00:00Z",
                "2031-05-03T02:00:00Z"]
        made = []
        for d in days:
            r = coffer("--json", "backup", "clocked", "--stdin", "--name",
                       "db.sql", stdin="dump of " + d,
                       env=dict(ENV, COFFER_NOW=d))
            made.append(json.loads(r.stdout).get("snapshot")
                        if r.returncode == 0 else None)
        r = coffer("--json", "snapshots", "clocked")
        snaps = json.loads(r.stdout) if r.returncode == 0 else []
        want_ns = [calendar.timegm(time.strptime(d, "%Y-%m-%dT%H:%M:%SZ"))
                   * 10**9 for d in days]
        ok([x["time"] for x in snaps] == days and
           [x["time_ns"] for x in snaps] == want_ns and
           [x["id"] for x in snaps] == made,
           "three backups on three simulated days are stamped with "
           "COFFER_NOW, to the nanosecond, in that order", r.stdout)
        r, rows = status_json("clocked", env=dict(
            ENV, COFFER_NOW="2031-05-03T03:00:00Z"))
        ok(rows.get("clocked", {}).get("last_backup_age_s") == 3600,
           "status an hour after the last simulated backup: age 3600 s",
           r.stdout + r.stderr)
        r = coffer("--json", "backup", "clocked", "--stdin", "--name",
                   "db.sql", stdin="real clock")
        r2 = coffer("--json", "snapshots", "clocked")
        # Oldest first: the real clock's snapshot precedes 2031.
        real = json.loads(r2.stdout)[0] if r2.returncode == 0 else {}
        ok(r.returncode == 0 and
           real.get("id") == json.loads(r.stdout).get("snapshot") and
           abs(real.get("time_ns", 0) / 1e9 - time.time()) < 600,
           "without COFFER_NOW the system clock stamps it", r2.stdout)
    else:
        skip("backups stamped with COFFER_NOW",
             "COFFER_NOW needs -Dtest_clock=true")
finally:
    cleanup()

TAP.done()
