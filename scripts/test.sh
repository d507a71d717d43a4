#!/usr/bin/env bash
# The whole test suite, on a fresh machine as in CI: makes sure the services the tests talk to are up
# (PostgreSQL on 127.0.0.1:5432, MariaDB on 127.0.0.1:3306), installs OpenLDAP's slapd, Samba and 389-DS
# when missing,
# then runs every test, and checks the systemd unit and the Debian package (as root, as CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."

need() { echo "scripts/test.sh: $*" >&2; }

# PostgreSQL: started if installed but stopped (the machine image runs it; a reboot may not).
if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
    if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
        need "PostgreSQL is not listening on 127.0.0.1:5432; starting it"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    else
        need "PostgreSQL is not installed: the SQL target tests need it on 127.0.0.1:5432 (trust auth)"
        exit 1
    fi
fi
# MariaDB: the same.
if ! (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null; then
    if [ -x /usr/sbin/mariadbd ]; then
        need "MariaDB is not listening on 127.0.0.1:3306; starting it"
        start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
        for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null && break; sleep 0.2; done
    else
        need "MariaDB is not installed: the SQL target tests need it on 127.0.0.1:3306 (root, empty password)"
        exit 1
    fi
fi

# OpenLDAP's slapd and tools for the LDAP target tests (each test starts its own slapd in a temporary
# directory on a free loopback port); openssl makes their TLS certificates.
if ! [ -x /usr/sbin/slapd ] || ! [ -x /usr/sbin/slapadd ] || ! command -v openssl >/dev/null; then
    need "installing slapd, ldap-utils and openssl from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slapd ldap-utils openssl >/dev/null
fi

# A Samba Active Directory domain controller (tests/ad_target.rs) and a 389 Directory Server
# (tests/ds389_target.rs), each made by its script in tests/servers/ in a temporary directory.
if ! command -v samba >/dev/null || ! command -v samba-tool >/dev/null || ! command -v dscreate >/dev/null ||
    ! [ -x /usr/sbin/ns-slapd ] || ! command -v ss >/dev/null; then
    need "installing samba (an AD domain controller) and 389-ds-base from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq samba samba-dsdb-modules samba-vfs-modules samba-ad-provision 389-ds-base iproute2 \
        >/dev/null
fi

# Headless Chromium loads the status page in tests/explain.rs.
if ! command -v chromium >/dev/null; then
    need "installing chromium (headless, for the status page test) from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi

# systemd-analyze checks the unit; dpkg-deb, readelf and adduser build and install the package.
if ! command -v systemd-analyze >/dev/null || ! command -v readelf >/dev/null || ! command -v adduser >/dev/null; then
    need "installing systemd (for systemd-analyze), binutils and adduser from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq systemd binutils adduser >/dev/null
fi

cargo test --locked --all-targets "$@"
# The unit and the Debian package, with the binary the tests just built.
scripts/package-test.sh target/debug/scim-bridge
