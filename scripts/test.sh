#!/usr/bin/env bash
# The whole test suite, on a fresh machine as in CI: makes sure the services the tests talk to are up
# (PostgreSQL on 127.0.0.1:5432, MariaDB on 127.0.0.1:3306), then runs every test.
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

cargo test --locked --all-targets "$@"
