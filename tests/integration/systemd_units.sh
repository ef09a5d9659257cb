#!/usr/bin/env bash
# systemd_units.sh - the shipped units (tools/systemd/) pass
# `systemd-analyze verify`, as instances for a tenant "acme", with the
# coffer under test in ExecStart (the installed path does not exist in a
# build tree).  Skips where systemd-analyze is missing.  TAP output.
set -u
UNITS_BUILD=${UNITS_BUILD:?}
UNITS_SRC=${UNITS_SRC:?}
COFFER=${COFFER:?}

if ! command -v systemd-analyze >/dev/null 2>&1; then
	echo "1..0 # SKIP systemd-analyze is not installed"
	exit 0
fi
T=$(mktemp -d /tmp/cf_units.XXXXXX) || exit 1
trap 'rm -rf "$T"' EXIT
n=0
fail=0
ok() {
	n=$((n + 1))
	if [ "$1" -eq 0 ]; then
		echo "ok $n - $2"
	else
		fail=1
		echo "not ok $n - $2"
		sed 's/^/# /' "$T/out" | head -30
	fi
}

for f in "$UNITS_BUILD"/coffer-*.service "$UNITS_BUILD"/coffer.service \
    "$UNITS_SRC"/coffer-*.timer; do
	sed "s|^\(Exec[A-Za-z]*=\)[^ ]*/coffer |\1$COFFER |" "$f" \
	    > "$T/$(basename "$f")"
done
grep -q "@BINDIR@\|@DOCDIR@" "$T"/* >"$T/out" 2>&1
ok $((! $?)) "every @VARIABLE@ was substituted"
for u in mount backup verify drill; do
	ln -s "coffer-$u@.service" "$T/coffer-$u@acme.service"
	[ -e "$T/coffer-$u@.timer" ] &&
	    ln -s "coffer-$u@.timer" "$T/coffer-$u@acme.timer"
done
for u in "$T"/coffer-*@acme.* "$T"/coffer-status.service \
    "$T"/coffer-status.timer "$T"/coffer.service; do
	(cd "$T" && SYSTEMD_UNIT_PATH="$T:" systemd-analyze verify \
	    --man=no "$u") >"$T/out" 2>&1
	rc=$?
	# Warnings about the host (not our units) are not findings.
	grep -v "^$" "$T/out" | grep -v "Failed to connect\|bus\|proc/sys" \
	    >"$T/out2"
	mv "$T/out2" "$T/out"
	[ "$rc" -eq 0 ] && [ ! -s "$T/out" ]
	ok $? "systemd-analyze verify $(basename "$u")"
done
grep -q "RandomizedDelaySec" "$T/coffer-backup@.timer" &&
    grep -q "Persistent=true" "$T/coffer-backup@.timer"
ok $? "the daily timer has jitter and catch-up" </dev/null
echo "1..$n"
exit $fail
