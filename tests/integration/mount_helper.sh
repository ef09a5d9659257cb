# mount_helper.sh - mount.coffer driven by the real mount(8) and umount(8):
# `mount -t fuse.coffer`, `mount -t coffer` and an fstab line read with
# `mount --fstab FILE DIR`, on real kernel FUSE mounts.
#
# mount(8) runs helpers only from /sbin, /sbin/fs.d and /sbin/fs; no flag
# or environment variable points it elsewhere.  So that the built helper is
# used without installing anything, the script re-runs itself in a private
# mount namespace (unshare -m) and lays a read-only overlay over the
# directory behind /sbin whose top layer holds mount.fuse.coffer and
# mount.coffer symlinks to the build.  Outside the namespace nothing
# changes; the overlay and every mount made here go away with it.
#
# The passphrase reaches coffer the way it would at boot: from the
# passphrase_file of the home's [kms.local], with COFFER_HOME and
# COFFER_PASSPHRASE_FILE unset.  COFFER_BIN makes the helper run the
# coffer under test.  Needs root and /dev/fuse: skipped without them,
# except with CI=true, where that is a failure.
set -u

skip_or_fail() {
	if [ "${CI:-}" = true ]; then
		echo "not ok 1 - $1 (required when CI=true)"
		echo "1..1"
		exit 1
	fi
	echo "1..0 # SKIP $1"
	exit 0
}

: "${COFFER:?COFFER must name the coffer binary}"
: "${MOUNT_COFFER:?MOUNT_COFFER must name the built mount.coffer}"
[ "$(id -u)" = 0 ] || skip_or_fail "needs root"
[ -c /dev/fuse ] || skip_or_fail "needs /dev/fuse"
if [ -z "${CF_MH_NAMESPACE:-}" ]; then
	unshare -m --propagation private true 2>/dev/null ||
		skip_or_fail "unshare -m (a private mount namespace) failed"
	CF_MH_NAMESPACE=1 exec unshare -m --propagation private -- \
		bash "$0" "$@"
fi

# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

MP="$T/mnt"
H="$COFFER_HOME"
STORE="$H/tenants/acme/store"
MARK="plaintext-marker-5e1f"
mkdir -p "$MP" "$T/sbin"

cleanup() {
	if grep -q " $MP " /proc/self/mountinfo; then
		umount -l "$MP" 2>/dev/null
	fi
	rm -rf "$T"
}
trap cleanup EXIT

# mrun CMD...: runs any command, capturing stdout/stderr; sets RC.
mrun() {
	"$@" >"$OUT" 2>"$ERR"
	RC=$?
}

# mexpect RC DESCRIPTION CMD...: CMD must exit with RC.
mexpect() {
	local want=$1 desc=$2
	shift 2
	mrun "$@"
	[ "$RC" = "$want" ]
	local ok=$?
	[ $ok = 0 ] || echo "# exit $RC, want $want: $*" >>"$ERR"
	_result $ok "$desc"
}

# fs_field DIR K: K-th field after the "-" of DIR's mountinfo line
# (1 = type, 2 = source); the optional fields before it vary in number.
fs_field() {
	awk -v mp="$1" -v k="$2" '$5 == mp {
		for (i = 7; i <= NF; i++)
			if ($i == "-") { print $(i + k); exit }
	}' /proc/self/mountinfo
}
fstype_of() { fs_field "$1" 1; }
# has_opt DIR OPT: OPT is among DIR's per-mount options (field 6).
has_opt() {
	awk -v mp="$1" '$5 == mp { print $6; exit }' /proc/self/mountinfo |
		tr , '\n' | grep -qx -- "$2"
}
not_mounted() { [ -z "$(fstype_of "$MP")" ]; }

# daemon_pids: coffer processes that serve $MP (their argv names it).
daemon_pids() {
	local p args
	for p in /proc/[0-9]*; do
		args=$({ tr '\0' '\n' <"$p/cmdline"; } 2>/dev/null) || continue
		[ "$(head -n 1 <<<"$args")" = "$COFFER" ] || continue
		grep -qxF -- "$MP" <<<"$args" && echo "${p#/proc/}"
	done
}
# gone PIDS...: true once none of PIDS is alive (waits up to 10 s).
gone() {
	local _ p alive
	for _ in $(seq 100); do
		alive=
		for p in "$@"; do
			[ -d "/proc/$p" ] && alive=1
		done
		[ -z "$alive" ] && return 0
		sleep 0.1
	done
	return 1
}

# --- setup: a tenant, and the built helper where mount(8) looks --------------
expect 0 "create tenant acme" tenant create acme
echo "passphrase_file = $COFFER_PASSPHRASE_FILE" >>"$H/coffer.conf"
unset COFFER_HOME COFFER_PASSPHRASE_FILE
export COFFER_BIN="$COFFER"
SBIN=$(readlink -f /sbin)
ln -s "$MOUNT_COFFER" "$T/sbin/mount.fuse.coffer"
ln -s "$MOUNT_COFFER" "$T/sbin/mount.coffer"
if ! mount -t overlay cf-test-sbin -o "lowerdir=$T/sbin:$SBIN" "$SBIN"; then
	skip_or_fail "cannot overlay $SBIN in the private namespace"
fi
check "mount(8) will find /sbin/mount.fuse.coffer" \
	test -x /sbin/mount.fuse.coffer

# --- the helper alone ---------------------------------------------------------
mexpect 0 "mount.coffer -h shows the usage" "$MOUNT_COFFER" -h
check "...with an fstab line" out_has "fuse.coffer  defaults,home="
mexpect 0 "-f (fake) with mount(8)'s and systemd's options" \
	"$MOUNT_COFFER" acme "$MP" -fv -t fuse.coffer \
	-o "defaults,home=$H,_netdev,nofail,noauto,user=bob,x-systemd.automount,comment=c,rw,noatime"
check "...runs coffer with --home, the mount options and -- before TENANT" \
	err_has "would run $COFFER --home $H mount -o rw,noatime -- acme $MP"
check "...and mounts nothing" not_mounted
mexpect 0 "-s (sloppy) skips an unsupported option" \
	"$MOUNT_COFFER" acme "$MP" -sfv -o relatime,noatime
check "...with a warning naming it" \
	err_has "ignoring unsupported option 'relatime'"
check "...and passes the rest" err_has "mount -o noatime -- acme"
mexpect 2 "a relative home= is a usage error" "$MOUNT_COFFER" acme "$MP" \
	-o home=var/lib/coffer
mexpect 2 "TENANT and MOUNTPOINT missing is a usage error" "$MOUNT_COFFER" \
	-o "home=$H"

# --- mount -t fuse.coffer -----------------------------------------------------
mexpect 0 "mount -t fuse.coffer -o home=...,noatime acme MP" \
	mount -t fuse.coffer -o "home=$H,noatime" acme "$MP"
check "it is mounted when mount(8) returns: fuse.coffer in mountinfo" \
	test "$(fstype_of "$MP")" = fuse.coffer
check "...source coffer:acme" test "$(fs_field "$MP" 2)" = coffer:acme
check "...with noatime passed through" has_opt "$MP" noatime
mapfile -t pids < <(daemon_pids)
check "one coffer daemon serves it" test "${#pids[@]}" = 1
check "...and no passphrase in its argv" \
	bash -c "! grep -aq 'integration passphrase' /proc/${pids[0]:-0}/cmdline"
check "...or in mount's output" \
	bash -c "! grep -q 'integration passphrase' '$OUT' '$ERR'"
check "write a file through the mount" \
	bash -c "echo 'hello $MARK' > '$MP/$MARK.txt'"
check "...and read it back" \
	test "$(cat "$MP/$MARK.txt" 2>/dev/null)" = "hello $MARK"
check "the backing store holds ciphertext only" \
	bash -c "test -d '$STORE' && ! grep -rqa '$MARK' '$STORE' &&
		! find '$STORE' | grep -q '$MARK'"
mexpect 0 "plain umount MP" umount "$MP"
check "...unmounts it" not_mounted
check "...and the daemon exits" gone "${pids[@]}"

# --- an fstab line ------------------------------------------------------------
printf 'acme %s fuse.coffer defaults,home=%s,_netdev,nofail,noexec,x-cf=1,comment=t 0 0\n' \
	"$MP" "$H" >"$T/fstab"
mexpect 0 "mount --fstab FILE MP (fstab line with home=, _netdev, x-*)" \
	mount --fstab "$T/fstab" "$MP"
check "fuse.coffer in mountinfo" test "$(fstype_of "$MP")" = fuse.coffer
check "...with noexec from the fstab line" has_opt "$MP" noexec
check "the file written before reads back" \
	test "$(cat "$MP/$MARK.txt" 2>/dev/null)" = "hello $MARK"
mapfile -t pids < <(daemon_pids)
mexpect 0 "umount MP" umount "$MP"
check "...unmounts it" not_mounted
check "...and the daemon exits" gone "${pids[@]}"

# --- mount -t coffer (runs mount.coffer) read-only ----------------------------
mexpect 0 "mount -t coffer -o ro,home=... acme MP" \
	mount -t coffer -o "ro,home=$H" acme "$MP"
check "fuse.coffer in mountinfo" test "$(fstype_of "$MP")" = fuse.coffer
check "...read-only: a write fails" bash -c "! echo x 2>/dev/null > '$MP/new'"
check "...reads work" test "$(cat "$MP/$MARK.txt" 2>/dev/null)" = "hello $MARK"
mapfile -t pids < <(daemon_pids)
mexpect 0 "umount MP" umount "$MP"
check "...and the daemon exits" gone "${pids[@]}"

# --- refusals -------------------------------------------------------------------
mrun mount -t fuse.coffer -o "home=$H" nosuch "$MP"
_result "$([ "$RC" != 0 ]; echo $?)" "an unknown tenant fails (exit $RC)"
check "...naming the tenant" err_has "no tenant 'nosuch'"
check "...and mounts nothing" not_mounted
mexpect 2 "an unsupported option is exit 2 through mount(8)" \
	mount -t fuse.coffer -o "home=$H,frobnicate" acme "$MP"
check "...naming the option" err_has "unsupported option 'frobnicate'"
check "...and mounts nothing" not_mounted
mexpect 2 "-o remount is refused with exit 2" \
	"$MOUNT_COFFER" acme "$MP" -o "remount,home=$H"
check "no coffer daemon is left" test -z "$(daemon_pids)"
done_testing
