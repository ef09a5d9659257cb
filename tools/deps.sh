# shellcheck shell=bash
#
# tools/deps.sh - the one list of Debian packages coffer needs to build and
# test, and the function that installs whichever of them are missing.
#
# Sourced (not run) by tools/quickstart and tests/run.  It installs with
# apt-get only, runs `apt-get update` only when something is missing, and
# never prompts (CI has no stdin).  It does not start services or touch
# anything outside the package manager.
#
# Set COFFER_NO_INSTALL=1 to skip the check (a developer machine that is
# set up by other means); a missing package then shows up as a build error.

# Build: compilers, meson, the libraries found with pkg-config.
# Test: clang's libFuzzer and sanitizer runtimes (libclang-rt-14-dev is
# not pulled in by clang on Debian 12), fuse3 for fusermount3, python3 for
# reading meson's test logs.  Docs: scdoc builds the man pages in
# docs/man/; man-db and groff-base render them in the man_pages test.
# faketime runs a backup with its clock two hours off against real RGW.
CF_DEB_PACKAGES=(
	meson
	ninja-build
	pkg-config
	python3
	gcc
	clang
	libclang-rt-14-dev
	libsodium-dev
	libjansson-dev
	libinih-dev
	libfuse3-dev
	fuse3
	libzstd-dev
	libcurl4-openssl-dev
	libarchive-dev
	libexpat1-dev
	libssl-dev
	python3-pykmip
	python3-cryptography
	softhsm2
	opensc
	libp11-kit-dev
	scdoc
	man-db
	groff-base
	faketime
)

# Prints the packages of "$@" that are not installed, one per line.
cf_deps_missing()
{
	local p status
	for p in "$@"; do
		status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)
		if [ "$status" != "installed" ]; then
			printf '%s\n' "$p"
		fi
	done
}

# Installs the missing packages of CF_DEB_PACKAGES plus any given as
# arguments.  Returns 0 when everything is present afterwards.
# shellcheck disable=SC2120 # extra packages are optional
cf_deps_install()
{
	local -a want missing sudo
	local apt_opts

	want=("${CF_DEB_PACKAGES[@]}" "$@")
	if [ "${COFFER_NO_INSTALL:-0}" = "1" ]; then
		echo "deps: COFFER_NO_INSTALL=1, not checking packages"
		return 0
	fi
	if ! command -v dpkg-query >/dev/null 2>&1; then
		echo "deps: dpkg-query not found: this script expects Debian 12" >&2
		return 1
	fi
	mapfile -t missing < <(cf_deps_missing "${want[@]}")
	if [ "${#missing[@]}" -eq 0 ]; then
		echo "deps: all ${#want[@]} Debian packages present"
		return 0
	fi
	echo "deps: installing ${missing[*]}"
	sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		if ! command -v sudo >/dev/null 2>&1; then
			echo "deps: not root and no sudo; install: ${missing[*]}" >&2
			return 1
		fi
		sudo=(sudo -n)
	fi
	# Wait for a concurrent apt/dpkg run instead of failing on its lock.
	apt_opts=(-q -y -o DPkg::Lock::Timeout=600 --no-install-recommends)
	if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
	    apt-get -q -o DPkg::Lock::Timeout=600 update </dev/null; then
		echo "deps: apt-get update failed" >&2
		return 1
	fi
	if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
	    apt-get "${apt_opts[@]}" install "${missing[@]}" </dev/null; then
		echo "deps: apt-get install failed" >&2
		return 1
	fi
	mapfile -t missing < <(cf_deps_missing "${want[@]}")
	if [ "${#missing[@]}" -ne 0 ]; then
		echo "deps: still missing after install: ${missing[*]}" >&2
		return 1
	fi
	echo "deps: installed"
	return 0
}

# The python3 to use for small helpers: Debian's, not a pyenv shim.
cf_python()
{
	if [ -x /usr/bin/python3 ]; then
		echo /usr/bin/python3
	else
		command -v python3
	fi
}

# s3rver (npm), the quick second S3 target of tests/integration/s3_s3rver.sh,
# installed from tests/s3rver/package-lock.json into tests/s3rver/node_modules
# (ignored by git) with the machine's Node.js and npm; Debian's nodejs and
# npm packages when there are none.  Prints the path of s3rver.js.
cf_deps_s3rver()
{
	local root dir js
	root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || return 1
	dir=$root/tests/s3rver
	js=$dir/node_modules/s3rver/bin/s3rver.js
	if [ ! -f "$js" ]; then
		if ! command -v node >/dev/null 2>&1 ||
		    ! command -v npm >/dev/null 2>&1; then
			cf_deps_install nodejs npm >&2 || return 1
		fi
		(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) >&2 ||
			{ echo "deps: npm ci in $dir failed" >&2; return 1; }
	fi
	[ -f "$js" ] || return 1
	printf '%s\n' "$js"
}
