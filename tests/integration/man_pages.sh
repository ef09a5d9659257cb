#!/usr/bin/env bash
# man_pages.sh - the man pages in docs/man/ match the program.  TAP output.
#
# For coffer itself and for every command `coffer help` lists (parsed from
# its output, so a new command without a page fails here), plus
# mount.coffer(8) and coffer.conf(5):
#   - the page's scdoc source exists and is listed in docs/man/meson.build;
#   - scdoc builds it with nothing on stderr;
#   - man -l renders it (groff warnings on) with nothing on stderr, and
#     it has the sections EXIT STATUS (commands), EXAMPLES and SEE ALSO;
#   - every usage line of `coffer help CMD` is in the page's SYNOPSIS
#     (whitespace normalised).  A usage line starts with "coffer "; the
#     next line continues it if it starts with "[", "(" or "|", or if the
#     usage line so far has an unclosed "[" or "("; any other line is a
#     note;
#   - every long option in `coffer help CMD` is a term of its OPTIONS;
#   - every option of every getopt table in tools/*.c (long names and
#     short option strings) is a term of the OPTIONS of the page of the
#     command whose function holds the table (the function's tl_cmd_NAME;
#     coffer.c's are coffer(1)'s, mount_coffer.c's mount.coffer(8)'s);
#   - every environment variable the code reads (getenv and helpers
#     with "env" in their name) is named in some page;
#   - every coffer.conf key the code looks up (the lower-case string
#     literals in the arguments of cf_ks_config_get and of the helpers
#     around it: any function with "conf" in its name, count_key, period)
#     is a term of coffer.conf(5), or a section named there as [name].
# Needs scdoc, man (man-db), groff and col; tools/deps.sh installs them,
# so a missing one is a failure, not a skip.
set -u
COFFER=${COFFER:?COFFER must name the coffer binary}
SRC=${CF_SRCDIR:?CF_SRCDIR must name the source tree}
MAN_SRC=$SRC/docs/man

T=$(mktemp -d "${TMPDIR:-/tmp}/cf_man.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
n=0
fail=0
WHY=$T/why

# ok STATUS DESCRIPTION: one TAP line; on failure prints $WHY.
ok() {
	n=$((n + 1))
	if [ "$1" -eq 0 ]; then
		echo "ok $n - $2"
	else
		fail=1
		echo "not ok $n - $2"
		sed 's/^/# /' "$WHY" 2>/dev/null | head -30
	fi
	: >"$WHY"
}

for p in scdoc man groff col; do
	if ! command -v "$p" >/dev/null 2>&1; then
		echo "Bail out! $p is not installed (tools/deps.sh installs" \
		    "scdoc, man-db and groff-base)"
		exit 1
	fi
done

# Squeezes every run of white space into one space, trims both ends.
norm() {
	tr -s ' \t\n' '   ' | sed 's/^ //; s/ $//'
}

# section TEXTFILE NAME: the lines of section NAME of a rendered page
# (sections start with a line at column 0).
section() {
	awk -v s="$2" '/^[^ \t]/ { f = ($0 == s); next } f' "$1"
}

# terms: the term lines of stdin, i.e. lines directly followed by a more
# indented line (a definition's body).
terms() {
	awk '{ line[NR] = $0; match($0, /^ */)
	    ind[NR] = ($0 ~ /^[ \t]*$/) ? -1 : RLENGTH }
	    END { for (i = 1; i < NR; i++)
		if (ind[i] >= 0 && ind[i + 1] > ind[i]) print line[i] }'
}

# has_word WORD FILE: WORD occurs in FILE, not as part of a longer option
# or key name.
has_word() {
	local w
	w=$(printf '%s' "$1" | sed 's/[.[\*^$]/\\&/g')
	grep -qE -- "(^|[^A-Za-z0-9_-])$w(\$|[^A-Za-z0-9_-])" "$2"
}

# usage_lines: the usage lines of `coffer help ...` output on stdin, one
# per line, whitespace normalised.
usage_lines() {
	awk 'function flush() { if (cur != "") print cur; cur = "" }
	    function open_brackets(s,  a, b) {
		a = gsub(/[[(]/, "&", s); b = gsub(/[])]/, "&", s)
		return a - b }
	    { t = $0; sub(/^usage:/, "", t); sub(/^[ \t]+/, "", t) }
	    t ~ /^coffer( |$)/ { flush(); cur = t; next }
	    cur != "" && (t ~ /^[[(|]/ || open_brackets(cur) > 0) {
		cur = cur " " t; next }
	    { flush() }
	    END { flush() }' | while IFS= read -r l; do
		printf '%s\n' "$l" | norm
		echo
	done
}

# build PAGE: scdoc, then man -l; leaves $T/PAGE and $T/PAGE.txt.
build() {
	local page=$1 src=$MAN_SRC/$1.scd
	if [ ! -f "$src" ]; then
		echo "no $src" >"$WHY"
		ok 1 "$page: has a page"
		return 1
	fi
	grep -qF "'$page.scd'" "$MAN_SRC/meson.build"
	local rc=$?
	[ "$rc" -eq 0 ] ||
	    echo "'$page.scd' is not in docs/man/meson.build" >"$WHY"
	ok "$rc" "$page: page exists and meson installs it"
	scdoc <"$src" >"$T/$page" 2>"$T/scdoc.err"
	rc=$?
	cat "$T/scdoc.err" >"$WHY"
	[ "$rc" -eq 0 ] && [ ! -s "$T/scdoc.err" ]
	ok $? "$page: scdoc builds it without warnings"
	MANWIDTH=1000 LC_ALL=C MAN_DISABLE_SECCOMP=1 MAN_KEEP_FORMATTING= \
	    man --warnings=w -l "$T/$page" 2>"$T/man.err" |
	    col -bx >"$T/$page.txt"
	cat "$T/man.err" >"$WHY"
	[ ! -s "$T/man.err" ] && grep -q '^NAME$' "$T/$page.txt" &&
	    grep -q '^SYNOPSIS$' "$T/$page.txt"
	ok $? "$page: man -l renders it without warnings"
	: >"$WHY"
	for sec in "EXIT STATUS" EXAMPLES "SEE ALSO"; do
		case "$page:$sec" in
		*.5:EXIT\ STATUS) continue ;;
		esac
		grep -qx "$sec" "$T/$page.txt" || echo "no $sec section" >>"$WHY"
	done
	[ ! -s "$WHY" ]
	ok $? "$page: has EXIT STATUS (commands), EXAMPLES and SEE ALSO"
	section "$T/$page.txt" SYNOPSIS | norm >"$T/$page.synopsis"
	section "$T/$page.txt" OPTIONS | terms >"$T/$page.options"
	return 0
}

# check_usage PAGE HELPFILE OPTSFROM: usage lines of HELPFILE in the
# SYNOPSIS, long options of OPTSFROM in OPTIONS.
check_usage() {
	local page=$1 help=$2 optsfrom=$3 syn line o bad=0 nlines=0
	syn=$(cat "$T/$page.synopsis")
	while IFS= read -r line; do
		[ -n "$line" ] || continue
		nlines=$((nlines + 1))
		case "$syn" in
		*"$line"*) ;;
		*) bad=1
		   echo "not in SYNOPSIS: $line" >>"$WHY" ;;
		esac
	done < <(usage_lines <"$help")
	if [ "$nlines" -eq 0 ]; then
		bad=1
		echo "no usage line found in the help text" >>"$WHY"
	fi
	[ "$bad" -eq 1 ] && echo "SYNOPSIS: $syn" >>"$WHY"
	ok $bad "$page: SYNOPSIS has every usage line of the help ($nlines)"
	bad=0
	for o in $(grep -oE -- '--[a-z][a-z0-9-]*' "$optsfrom" | sort -u); do
		if ! has_word "$o" "$T/$page.options"; then
			bad=1
			echo "$o is not a term of OPTIONS" >>"$WHY"
		fi
	done
	ok $bad "$page: OPTIONS documents every long option of the help"
}

# ---- coffer itself and every command it lists ----------------------------

"$COFFER" help >"$T/help" 2>"$WHY"
ok $? "coffer help runs"
mapfile -t cmds < <(awk '/^commands:/ { f = 1; next } f && NF == 0 { exit }
    f { print $1 }' "$T/help")
[ "${#cmds[@]}" -ge 12 ] || echo "only ${#cmds[@]} commands parsed" >"$WHY"
ok $? "coffer help lists the commands (${#cmds[@]}: ${cmds[*]})"

if build coffer.1; then
	# The global usage lines only (the command list is not usage).
	usage_lines <"$T/help" >"$T/help.usage"
	check_usage coffer.1 "$T/help" "$T/help.usage"
	bad=0
	for c in "${cmds[@]}"; do
		if ! section "$T/coffer.1.txt" COMMANDS | terms |
		    grep -qE "^ *$c( |\$)"; then
			bad=1
			echo "$c is not listed in COMMANDS" >>"$WHY"
		fi
	done
	ok $bad "coffer.1: COMMANDS lists every command"
fi

for c in "${cmds[@]}"; do
	page=coffer-$c.1
	build "$page" || continue
	"$COFFER" help "$c" >"$T/help.$c" 2>"$WHY"
	ok $? "coffer help $c runs"
	check_usage "$page" "$T/help.$c" "$T/help.$c"
done

build mount.coffer.8
build coffer.conf.5

# ---- getopt tables against OPTIONS ---------------------------------------

# "PAGE OPTION" for each option of each table; "? FILE OPTION" when the
# function holding the table names no command.
awk 'FNR == 1 { file = FILENAME; sub(/.*\//, "", file); nopts = 0
	split("", cmds); intable = 0 }
    intable && /^[ \t]*\};/ { intable = 0; next }
    intable { if (match($0, /\{ *"[A-Za-z0-9-]+"/)) {
	o = substr($0, RSTART, RLENGTH); sub(/^\{ *"/, "", o); sub(/"$/, "", o)
	opts[++nopts] = "--" o }
	next }
    /struct option [A-Za-z_]+\[\] = \{/ { intable = 1; next }
    /^};/ { split("", cmds); next }
    /getopt(_long)? *\([^"]*"[^"]*"/ {
	s = $0; sub(/^.*getopt(_long)? *\([^"]*"/, "", s); sub(/".*$/, "", s)
	for (i = 1; i <= length(s); i++) {
		ch = substr(s, i, 1)
		if (ch ~ /[A-Za-z0-9]/) opts[++nopts] = "-" ch
	} }
    { s = $0
	while (match(s, /tl_cmd_[a-z_]+/)) {
		cmds[substr(s, RSTART + 7, RLENGTH - 7)] = 1
		s = substr(s, RSTART + RLENGTH)
	} }
    /^}$/ { if (nopts > 0) {
		page = ""
		if (file == "coffer.c") page = "coffer.1"
		if (file == "mount_coffer.c") page = "mount.coffer.8"
		for (i = 1; i <= nopts; i++) {
			if (page != "") { print page, opts[i]; continue }
			k = 0
			for (c in cmds) { print "coffer-" c ".1", opts[i]; k++ }
			if (k == 0) print "?", file, opts[i]
		}
	}
	nopts = 0; split("", cmds) }' "$SRC"/tools/*.c | sort -u >"$T/getopt"
[ -s "$T/getopt" ]
ok $? "getopt tables found in tools/*.c ($(wc -l <"$T/getopt") options)"
bad=0
while read -r page opt rest; do
	if [ "$page" = "?" ]; then
		bad=1
		echo "$opt: a table of $rest names no tl_cmd_*" >>"$WHY"
	elif [ ! -f "$T/$page.options" ]; then
		bad=1
		echo "$page: no page for option $opt" >>"$WHY"
	elif ! has_word "$opt" "$T/$page.options"; then
		bad=1
		echo "$page: $opt is accepted but not a term of OPTIONS" >>"$WHY"
	fi
done <"$T/getopt"
ok $bad "every option the getopt tables accept is documented in OPTIONS"

# ---- coffer.conf keys against coffer.conf(5) ------------------------------

for f in "$SRC"/keystore/*.c "$SRC"/backup/*.c "$SRC"/tools/*.c; do
	tr '\n' ' ' <"$f" |
	    grep -oE '([A-Za-z0-9_]*conf[A-Za-z0-9_]*|count_key|period) *\([^;{]*' |
	    grep -oE '"[a-z][a-z0-9_]*"' | tr -d '"'
done | sort -u >"$T/keys"
[ -s "$T/keys" ]
ok $? "config lookups found ($(wc -l <"$T/keys") names)"
bad=0
if [ -f "$T/coffer.conf.5.txt" ]; then
	terms <"$T/coffer.conf.5.txt" >"$T/conf.terms"
	while read -r k; do
		if ! has_word "$k" "$T/conf.terms" &&
		    ! grep -qE "\[$k(\]|\.)" "$T/coffer.conf.5.txt"; then
			bad=1
			echo "coffer.conf key '$k' is read but not documented" \
			    >>"$WHY"
		fi
	done <"$T/keys"
else
	bad=1
fi
ok $bad "coffer.conf(5) documents every key the code reads"

# ---- environment variables against the pages ------------------------------

# Every variable the code reads (string literals in the arguments of
# getenv and of helpers with "env" in their name) is named in some page.
for f in "$SRC"/keystore/*.c "$SRC"/fs/*.c "$SRC"/backup/*.c "$SRC"/tools/*.c; do
	[ -f "$f" ] || continue
	tr '\n' ' ' <"$f" |
	    grep -oE '[A-Za-z0-9_]*env[A-Za-z0-9_]* *\([^;{]*' |
	    grep -oE '"[A-Z][A-Z0-9_]+"' | tr -d '"'
done | sort -u >"$T/env"
[ -s "$T/env" ]
ok $? "environment lookups found ($(wc -l <"$T/env") names)"
cat "$T"/*.txt >"$T/all.txt" 2>/dev/null
bad=0
while read -r v; do
	if ! has_word "$v" "$T/all.txt"; then
		bad=1
		echo "environment variable $v is read but in no page" >>"$WHY"
	fi
done <"$T/env"
ok $bad "every environment variable the code reads is documented"

# mount.coffer's own usage line, when the helper was built.
if [ -n "${MOUNT_COFFER:-}" ] && [ -x "$MOUNT_COFFER" ] &&
    [ -f "$T/mount.coffer.8.synopsis" ]; then
	"$MOUNT_COFFER" -h | sed -n 's/^usage: //p' | norm >"$T/mh.usage"
	grep -qF -- "$(cat "$T/mh.usage")" "$T/mount.coffer.8.synopsis"
	rc=$?
	[ "$rc" -eq 0 ] ||
	    echo "not in SYNOPSIS: $(cat "$T/mh.usage")" >"$WHY"
	ok "$rc" "mount.coffer.8: SYNOPSIS has mount.coffer -h's usage line"
fi

echo "1..$n"
exit "$fail"
