#!/usr/bin/env bash
# Build a Debian package of scim-bridge with plain dpkg-deb (no cargo-deb, no debhelper).
#
#   scripts/package.sh                 # -> target/debian/scim-bridge_<version>-1_<arch>.deb
#
# Environment (all optional):
#   SCIM_BRIDGE_BIN      the binary to package (default target/release/scim-bridge; built with
#                        `cargo build --release --locked` when it is missing)
#   DEB_REVISION         Debian revision appended to Cargo.toml's version (default 1)
#   DEB_MAINTAINER       Maintainer field (default "scim-bridge maintainers <scim-bridge@localhost>")
#   OUT_DIR              where the .deb goes (default target/debian)
#
# Layout of the package:
#   /usr/bin/scim-bridge
#   /lib/systemd/system/scim-bridge.service          (from systemd/scim-bridge.service)
#   /etc/scim-bridge/config.toml                     (conffile, from config.toml.example with an absolute
#                                                     staging.path; root:scim-bridge 0640 after postinst)
#   /usr/share/doc/scim-bridge/{README.md,copyright}
# The maintainer scripts create the system user `scim-bridge`, never enable or start the service on a first
# install (the config needs editing first), restart it on upgrade if it was running, and on purge remove the
# user and /var/lib/scim-bridge (the staging database!).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PKG=scim-bridge
BIN=${SCIM_BRIDGE_BIN:-$ROOT/target/release/scim-bridge}
UNIT=$ROOT/systemd/scim-bridge.service
CONFIG_EXAMPLE=$ROOT/config.toml.example
OUT_DIR=${OUT_DIR:-$ROOT/target/debian}
DEB_REVISION=${DEB_REVISION:-1}
DEB_MAINTAINER=${DEB_MAINTAINER:-scim-bridge maintainers <scim-bridge@localhost>}

die() { echo "package.sh: $*" >&2; exit 1; }

for tool in dpkg-deb dpkg md5sum; do
    command -v "$tool" >/dev/null || die "$tool not found (Debian/Ubuntu build host needed)"
done
for f in Cargo.toml "$UNIT" "$CONFIG_EXAMPLE" README.md; do
    [ -f "$f" ] || die "missing $f"
done

# --- version and architecture ---------------------------------------------------------------------------
# The `version` key of the [package] table (not of a dependency table).
CARGO_VERSION=$(awk '
    /^\[/ { in_pkg = ($0 ~ /^\[package\][[:space:]]*$/) }
    in_pkg && /^[[:space:]]*version[[:space:]]*=/ {
        sub(/^[^=]*=[[:space:]]*"/, ""); sub(/".*$/, ""); print; exit
    }' Cargo.toml)
[ -n "$CARGO_VERSION" ] || die "no version in the [package] table of Cargo.toml"
# SemVer pre-releases (1.2.0-rc.1) must sort before the release in Debian: 1.2.0~rc.1.
VERSION="${CARGO_VERSION/-/\~}-$DEB_REVISION"
ARCH=$(dpkg --print-architecture)
LICENSE=$(awk '/^\[/ { p = ($0 ~ /^\[package\]/) } p && /^license[[:space:]]*=/ { sub(/^[^"]*"/, ""); sub(/".*$/, ""); print; exit }' Cargo.toml)

# --- the binary -------------------------------------------------------------------------------------------
if [ ! -x "$BIN" ]; then
    [ -z "${SCIM_BRIDGE_BIN:-}" ] || die "SCIM_BRIDGE_BIN=$BIN is not an executable"
    echo "package.sh: $BIN missing, building it" >&2
    cargo build --release --locked
fi
[ -x "$BIN" ] || die "no executable at $BIN"

# --- Depends: the packages that provide the binary's shared libraries (a small dpkg-shlibdeps) -----------
depends_of_binary() {
    local bin=$1 needed lib path pkg glibc
    if ! command -v readelf >/dev/null || ! readelf -h "$bin" >/dev/null 2>&1; then
        echo "libc6"; return    # not an ELF file (test stand-in) or no binutils: the safe minimum
    fi
    needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    for lib in $needed; do
        path=$(ldconfig -p | awk -v l="$lib" '$1 == l { print $NF; exit }')
        [ -n "$path" ] || die "cannot resolve shared library $lib of $bin"
        pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -n1 | cut -d: -f1) ||
            pkg=$(dpkg -S "$path" 2>/dev/null | head -n1 | cut -d: -f1)
        [ -n "$pkg" ] || die "no package owns $path ($lib)"
        if [ "$pkg" = libc6 ]; then
            # The newest GLIBC_x.y symbol version the binary uses is the lowest libc6 it runs on.
            glibc=$(readelf -V "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)
            echo "libc6${glibc:+ (>= $glibc)}"
        else
            echo "$pkg"
        fi
    done | sort -u | paste -sd, - | sed 's/,/, /g'
}
DEPENDS="$(depends_of_binary "$BIN"), adduser"

# --- staging tree ---------------------------------------------------------------------------------------
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/scim-bridge-deb.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
umask 022

install -D -m 0755 "$BIN" "$STAGE/usr/bin/scim-bridge"
install -D -m 0644 "$UNIT" "$STAGE/lib/systemd/system/scim-bridge.service"
install -d -m 0750 "$STAGE/etc/scim-bridge"
# The example's relative staging.path would resolve against the current directory, so `scim-bridge token`
# run from a shell would open a different database than the service. Pin it to the StateDirectory.
sed 's|^path = "scim-bridge-data/staging.db"|path = "/var/lib/scim-bridge/staging.db"|' \
    "$CONFIG_EXAMPLE" > "$STAGE/etc/scim-bridge/config.toml"
grep -q '^path = "/var/lib/scim-bridge/staging.db"' "$STAGE/etc/scim-bridge/config.toml" ||
    die "config.toml.example no longer has the line path = \"scim-bridge-data/staging.db\"; update package.sh"
# 0640 already in the archive, so an upgraded conffile is never world-readable; postinst sets the group.
chmod 0640 "$STAGE/etc/scim-bridge/config.toml"

DOC=$STAGE/usr/share/doc/$PKG
install -D -m 0644 README.md "$DOC/README.md"
{
    echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
    echo "Upstream-Name: scim-bridge"
    echo
    echo "Files: *"
    echo "License: ${LICENSE:-see the project repository}"
    for f in LICENSE LICENSE-MIT LICENSE-APACHE COPYING; do
        if [ -f "$f" ]; then echo; echo "Files: $f"; sed 's/^$/./; s/^/ /' "$f"; fi
    done
} > "$DOC/copyright"
chmod 0644 "$DOC/copyright"

# --- DEBIAN/ --------------------------------------------------------------------------------------------
install -d -m 0755 "$STAGE/DEBIAN"
echo /etc/scim-bridge/config.toml > "$STAGE/DEBIAN/conffiles"

INSTALLED_SIZE=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
cat > "$STAGE/DEBIAN/control" <<EOF
Package: $PKG
Version: $VERSION
Architecture: $ARCH
Maintainer: $DEB_MAINTAINER
Installed-Size: $INSTALLED_SIZE
Depends: $DEPENDS
Section: net
Priority: optional
Description: SCIM 2.0 provisioning bridge for legacy SQL databases and LDAP
 scim-bridge lets Microsoft Entra ID and Okta provision users and groups into
 software without a SCIM endpoint: every change is committed to a SQLite
 staging database before the IdP gets its answer, then replayed into a SQL
 database (PostgreSQL, MySQL/MariaDB, SQLite) or an LDAP directory.
EOF

cat > "$STAGE/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
UNIT=scim-bridge.service

case "$1" in
configure)
    if ! getent group scim-bridge >/dev/null; then
        addgroup --system --quiet scim-bridge
    fi
    if ! getent passwd scim-bridge >/dev/null; then
        adduser --system --quiet --ingroup scim-bridge --home /var/lib/scim-bridge --no-create-home \
            --shell /usr/sbin/nologin scim-bridge
    fi
    # systemd's StateDirectory= creates it as well; this one serves `runuser -u scim-bridge -- scim-bridge
    # token ...` before the first start and machines without systemd.
    if [ ! -d /var/lib/scim-bridge ]; then
        install -d -o scim-bridge -g scim-bridge -m 0700 /var/lib/scim-bridge
    fi
    # The config may hold database URLs: readable by the service's group only. An admin's
    # dpkg-statoverride wins.
    if ! dpkg-statoverride --list /etc/scim-bridge >/dev/null; then
        chown root:scim-bridge /etc/scim-bridge
        chmod 0750 /etc/scim-bridge
    fi
    if [ -f /etc/scim-bridge/config.toml ] && ! dpkg-statoverride --list /etc/scim-bridge/config.toml >/dev/null; then
        chown root:scim-bridge /etc/scim-bridge/config.toml
        chmod 0640 /etc/scim-bridge/config.toml
    fi
    ;;
esac

if [ "$1" = configure ] || [ "$1" = abort-upgrade ] || [ "$1" = abort-deconfigure ] || [ "$1" = abort-remove ]; then
    # Record the unit's [Install] symlinks (without enabling it) so that purge removes them later.
    deb-systemd-helper unmask "$UNIT" >/dev/null || true
    deb-systemd-helper update-state "$UNIT" >/dev/null || true
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
        # Upgrade: restart a running service on the new binary. First install: leave it stopped.
        if [ -n "$2" ] && systemctl --quiet is-active "$UNIT"; then
            deb-systemd-invoke restart "$UNIT" >/dev/null || true
        fi
    fi
fi

if [ "$1" = configure ] && [ -z "$2" ]; then
    cat <<'MSG'
scim-bridge installed. Next steps:
  1. edit /etc/scim-bridge/config.toml, then: scim-bridge check-config --config /etc/scim-bridge/config.toml
  2. create a tenant token AS THE SERVICE USER (a root-owned staging DB would lock the service out):
       runuser -u scim-bridge -- scim-bridge token <tenant> --config /etc/scim-bridge/config.toml
  3. systemctl enable --now scim-bridge
MSG
fi
exit 0
EOF

cat > "$STAGE/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
# Stop on removal only; on upgrade the postinst restarts the running service on the new binary.
if [ "$1" = remove ] || [ "$1" = deconfigure ]; then
    if [ -d /run/systemd/system ]; then
        deb-systemd-invoke stop scim-bridge.service >/dev/null || true
    fi
fi
exit 0
EOF

cat > "$STAGE/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
UNIT=scim-bridge.service

if [ "$1" = remove ] && [ -x /usr/bin/deb-systemd-helper ]; then
    deb-systemd-helper mask "$UNIT" >/dev/null || true
fi

if [ "$1" = purge ]; then
    if [ -x /usr/bin/deb-systemd-helper ]; then
        deb-systemd-helper purge "$UNIT" >/dev/null || true
        deb-systemd-helper unmask "$UNIT" >/dev/null || true
    fi
    # The staging database: acknowledged changes not yet replayed are lost with it. Purge means purge.
    rm -rf /var/lib/scim-bridge
    # Debian usually keeps system users (files elsewhere may still carry the uid); we remove it on purge.
    # userdel refuses while a process of the user runs (e.g. the daemon started by hand, or prerm's stop
    # vetoed by a policy-rc.d): warn and keep going, purge must not fail half-way.
    if getent passwd scim-bridge >/dev/null; then
        if command -v deluser >/dev/null; then deluser --system --quiet scim-bridge || true
        else userdel scim-bridge || true; fi
        if getent passwd scim-bridge >/dev/null; then
            echo "scim-bridge: could not remove the user scim-bridge (still running?); remove it by hand" >&2
        fi
    fi
    if getent group scim-bridge >/dev/null && ! getent passwd scim-bridge >/dev/null; then
        if command -v delgroup >/dev/null; then delgroup --system --quiet scim-bridge || true
        else groupdel scim-bridge || true; fi
    fi
    # dpkg deletes the conffile; drop the directory unless the admin left files there (URL/password files).
    rmdir /etc/scim-bridge 2>/dev/null || true
fi

if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
exit 0
EOF
chmod 0755 "$STAGE/DEBIAN/postinst" "$STAGE/DEBIAN/prerm" "$STAGE/DEBIAN/postrm"

(cd "$STAGE" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) \
    > "$STAGE/DEBIAN/md5sums"
chmod 0644 "$STAGE/DEBIAN/md5sums" "$STAGE/DEBIAN/control" "$STAGE/DEBIAN/conffiles"

mkdir -p "$OUT_DIR"
DEB=$OUT_DIR/${PKG}_${VERSION}_${ARCH}.deb
dpkg-deb --build --root-owner-group "$STAGE" "$DEB" >/dev/null
echo "$DEB"
