# cli_tenant.sh - tenant create/list/show/rotate-kek/shred through the CLI,
# with the exit codes and output the contract promises.
. "$(dirname "$0")/lib.sh"

expect 0 "create acme with defaults" tenant create acme
check "create names the tenant" out_has "created tenant acme"
expect 0 "create globex with xchacha and a repository" \
	tenant create globex --cipher xchacha20-poly1305 --repo file:///srv/bk/globex
expect 1 "a second acme is refused" tenant create acme
check "...saying it exists" err_has "already exists"
expect 2 "path-traversal name is a usage error" tenant create ../evil
check "...and nothing was created outside tenants/" test ! -e "$COFFER_HOME/evil"
expect 2 "unknown cipher is a usage error" tenant create x --cipher rot13
expect 2 "a bad repository URL is a usage error" tenant create x --repo http://x
expect 1 "an unconfigured KMS is named in the error" tenant create x --kms hsm
check "...with the section to add" err_has "kms.hsm"
expect 2 "tenant without subcommand" tenant
expect 2 "unknown command" frobnicate

expect 0 "list" tenant list
check "list shows both, sorted" bash -c "awk '{print \$1}' '$OUT' | tr '\n' ' ' | grep -qx 'acme globex '"
expect 0 "show --json" --json tenant show globex
check "json has the cipher" out_has '"cipher": "xchacha20-poly1305"'
check "json has the repository" out_has '"repo": "file:///srv/bk/globex"'
check "json has key version 1" out_has '"key_version": 1'
check "json is valid" python3 -c "import json,sys; json.load(open('$OUT'))"
expect 1 "show of an unknown tenant fails" tenant show nobody
check "...naming it" err_has "nobody"

kek_of() { "$COFFER" --json tenant show "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["kek"])'; }
k1=$(kek_of acme)
expect 0 "rotate-kek acme" tenant rotate-kek acme
k2=$(kek_of acme)
check "acme is on a new KEK" test "$k1" != "$k2"
check "globex still on the old KEK" test "$(kek_of globex)" = "$k1"
expect 0 "rotate-kek --all" tenant rotate-kek --all
check "every tenant on one KEK after --all" test "$(kek_of acme)" = "$(kek_of globex)"
expect 2 "rotate-kek without a name" tenant rotate-kek

# Wrong passphrase now that KEKs exist: denied, exit 4, no secret echoed.
printf 'not the passphrase\n' > "$COFFER_PASSPHRASE_FILE"
expect 4 "rotate with a wrong passphrase is denied" tenant rotate-kek acme
check "the wrong passphrase is not echoed" bash -c "! grep -q 'not the passphrase' '$ERR'"
printf 'integration passphrase\n' > "$COFFER_PASSPHRASE_FILE"
chmod 644 "$COFFER_PASSPHRASE_FILE"
expect 4 "a world-readable passphrase file is refused" tenant rotate-kek acme
check "...saying why" err_has "chmod 600"
chmod 600 "$COFFER_PASSPHRASE_FILE"

expect 2 "shred needs --yes" tenant shred globex
expect 0 "shred globex" tenant shred globex --yes
check "no wrapped key of globex remains" bash -c "! ls '$COFFER_HOME'/tenants/globex/keys/*.wk"
expect 0 "show a shredded tenant" --json tenant show globex
check "...state is shredded" out_has '"state": "shredded"'
expect 4 "rotating a shredded tenant is denied" tenant rotate-kek globex
expect 0 "acme is untouched by globex's shred" tenant rotate-kek acme

check "home is 0700" test "$(stat -c %a "$COFFER_HOME")" = 700
check "every key file is 0600" bash -c "! find '$COFFER_HOME' -name '*.wk' -o -name '*.key' | xargs stat -c %a | grep -v 600"
check "no passphrase bytes anywhere in the home" bash -c "! grep -rq 'integration passphrase' '$COFFER_HOME'"
done_testing
