#!/usr/bin/env bash
# Checks the systemd unit and the Debian package on this machine (as CI does, as root):
#   - `systemd-analyze verify` prints nothing for the unit (it exits 0 on warnings, so output is the test);
#   - `systemd-analyze security --offline=yes` rates its exposure 4.0 or lower (printed);
#   - scripts/package.sh builds a .deb, `dpkg -i` installs it, `scim-bridge check-config` runs as the
#     service user against the installed config, and `dpkg -P` removes every trace (user, state, config).
# systemd is not PID 1 here: the notify protocol itself is tested by tests/service.rs.
#
#   scripts/package-test.sh [binary]     (default: target/debug/scim-bridge)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=$(realpath "${1:-target/debug/scim-bridge}")
fail() { echo "package-test: FAILED: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "must run as root (it installs and purges the package)"
[ -x "$BIN" ] || fail "no binary at $BIN (cargo build first)"
if dpkg -s scim-bridge >/dev/null 2>&1; then
    fail "a scim-bridge package is already installed on this machine; this test would replace and purge it"
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# The unit, with its Exec paths pointing at the binary under test (verify checks that they exist).
sed "s|/usr/bin/scim-bridge|$BIN|g" systemd/scim-bridge.service > "$WORK/scim-bridge.service"
out=$(systemd-analyze verify "$WORK/scim-bridge.service" 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify printed warnings:
$out"
echo "package-test: systemd-analyze verify: clean"
exposure=$(systemd-analyze security --offline=yes "$WORK/scim-bridge.service" 2>/dev/null |
    sed -n 's/^→ Overall exposure level for .*: \([0-9.]*\) .*/\1/p')
[ -n "$exposure" ] || fail "systemd-analyze security printed no overall exposure"
echo "package-test: systemd-analyze security --offline=yes: exposure $exposure"
awk -v e="$exposure" 'BEGIN { exit !(e <= 4.0) }' || fail "exposure $exposure is above 4.0"

DEB=$(SCIM_BRIDGE_BIN="$BIN" OUT_DIR="$WORK" scripts/package.sh)
echo "package-test: built $(basename "$DEB")"
cleanup() { dpkg -P scim-bridge >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT
dpkg -i "$DEB" >"$WORK/install.log" 2>&1 || { cat "$WORK/install.log"; fail "dpkg -i"; }
getent passwd scim-bridge >/dev/null || fail "the package did not create the user scim-bridge"
[ "$(stat -c '%a %U:%G' /etc/scim-bridge/config.toml)" = "640 root:scim-bridge" ] ||
    fail "config.toml is $(stat -c '%a %U:%G' /etc/scim-bridge/config.toml), expected 640 root:scim-bridge"
grep -qx /etc/scim-bridge/config.toml <(dpkg-query --control-show scim-bridge conffiles) ||
    fail "config.toml is not a conffile"
runuser -u scim-bridge -- /usr/bin/scim-bridge check-config --config /etc/scim-bridge/config.toml ||
    fail "check-config as the service user"
if runuser -u nobody -- cat /etc/scim-bridge/config.toml >/dev/null 2>&1; then
    fail "the config is readable by other users"
fi
echo "package-test: installed; check-config passes as scim-bridge; config not readable by others"
dpkg -P scim-bridge >"$WORK/purge.log" 2>&1 || { cat "$WORK/purge.log"; fail "dpkg -P"; }
for left in /usr/bin/scim-bridge /lib/systemd/system/scim-bridge.service /etc/scim-bridge /var/lib/scim-bridge; do
    [ ! -e "$left" ] || fail "$left is still there after purge"
done
if getent passwd scim-bridge >/dev/null; then fail "the user scim-bridge is still there after purge"; fi
echo "package-test: purged cleanly"
