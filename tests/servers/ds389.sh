#!/usr/bin/env bash
# Throwaway 389 Directory Server instance for integration tests.
#
#   ds389.sh up DIR PORT [TLS_PORT]   create + start an instance living in DIR
#   ds389.sh down DIR                 stop it by its pid (TERM, then KILL)
#
# `up` prints key=value lines on stdout: ldap_url, ldaps_url (with TLS_PORT),
# base_dn, admin_dn, admin_password, ca_file (with TLS_PORT), pid.
# Progress and errors go to stderr.
#
# Needs root (dscreate wants root or the dirsrv user; the server itself runs
# as dirsrv), the Debian packages 389-ds-base, ldap-utils and openssl, and no
# systemd: dscreate is pointed through PREFIX (the mechanism behind
# `dscreate ds-root`) at a private defaults.inf with with_systemd = 0, so it
# runs ns-slapd directly, and all paths of the instance (config, NSS db,
# schema, db, logs, run, lock, ldif, bak, tmp, ldapi socket) live in DIR.
# The only thing outside DIR is the POSIX semaphore
# /dev/shm/sem.slapd-t<PORT>.stats, which ns-slapd removes on a clean stop
# and `down` removes otherwise. DIR itself is left in place (logs) and is
# chowned to dirsrv.
#
# TLS: instead of dscreate's self_sign_cert (whose server cert only has
# DNS:localhost and costs a second), we make a CA and a server certificate
# with SAN DNS:localhost + IP:127.0.0.1 with openssl, put them in the
# instance's NSS db before dscreate runs, and switch nsslapd-security on.
set -euo pipefail

readonly BASE_DN='dc=example,dc=org'
readonly ADMIN_DN='cn=Directory Manager'
readonly ADMIN_PASSWORD='Admin-Passw0rd'
readonly DS_USER=dirsrv      # the server drops privileges to this user
# mdb stops in ~0.3 s, bdb needs ~1.5 s (waits for its checkpoint threads).
readonly DB_LIB=${DS389_DB_LIB:-mdb}   # mdb or bdb (the 389-ds 2.3 default)
# Plugins to switch on before the server starts (off by default in 389-ds;
# switching them on later needs a restart): "referint", "memberof".
readonly ENABLE_PLUGINS=${DS389_ENABLE_PLUGINS:-}
readonly START_TIMEOUT=60    # seconds for the LDAP port to answer
readonly STOP_TIMEOUT=20     # seconds between TERM and KILL

log() { printf 'ds389: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

usage() {
    cat >&2 <<'EOF'
usage: ds389.sh up DIR PORT [TLS_PORT]
       ds389.sh down DIR
EOF
    exit 2
}

# True if something accepts TCP connections on 127.0.0.1:$1.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# True if pid $1 exists and is not a zombie. ns-slapd daemonizes, so after it
# exits it stays a zombie until pid 1 reaps it (never, in some containers).
pid_alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != [ZX] ]]
}

check_port() {
    if ! [[ $1 =~ ^[0-9]+$ ]] || (($1 <= 1024 || $1 > 65535)); then
        die "bad port: $1"
    fi
    if port_in_use "$1"; then
        die "port $1 is already in use on 127.0.0.1"
    fi
}

show_logs() {
    local f
    for f in "$1/dscreate.log" "$1/ns-slapd.out" "$1/log/errors"; do
        if [[ -s $f ]]; then
            log "--- tail of $f ---"
            grep -v 'SSL info:' "$f" | tail -n 25 >&2
        fi
    done
}

# Runs /usr/sbin/dscreate ARGS... in-process, as a child subreaper, with one
# lib389 patch. dscreate starts ns-slapd, which daemonizes (its parent exits),
# and stops it again at the end:
#  - lib389 polls for the stopped pid every 1 s (ns-slapd needs ~0.3 s): the
#    patched DirSrv.stop sends TERM itself and polls every 50 ms first.
#  - lib389 waits until the pid is gone; an orphaned daemon stays a zombie
#    until pid 1 reaps it, never in containers whose pid 1 does not reap
#    (lib389 would then wait its full 120 s timeout). As subreaper we are the
#    daemon's parent, and lib389's pid_exists() reaps it (waitpid).
# Daemons still alive when dscreate returns (it failed) are terminated.
DSCREATE_PY='
import ctypes, os, runpy, signal, sys, time, traceback

def children():
    me, kids = str(os.getpid()), []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/stat" % p) as f:
                if f.read().rsplit(")", 1)[1].split()[1] == me:
                    kids.append(int(p))
        except (OSError, IndexError):
            pass
    return kids

ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
import lib389

lib389_stop = lib389.DirSrv.stop

def stop(self, timeout=120):
    pid = None if self.with_systemd() else lib389.pid_from_file(self.pid_file())
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        end = time.monotonic() + timeout
        while lib389.pid_exists(pid) and time.monotonic() < end:
            time.sleep(0.05)
    return lib389_stop(self, timeout)

lib389.DirSrv.stop = stop
sys.argv = ["dscreate"] + sys.argv[1:]
rc = 0
try:
    runpy.run_path("/usr/sbin/dscreate", run_name="__main__")
except SystemExit as e:
    rc = e.code if isinstance(e.code, int) else (e.code is not None)
except BaseException:
    traceback.print_exc()
    rc = 1
for kid in children():
    os.kill(kid, signal.SIGTERM)
    os.waitpid(kid, 0)
sys.exit(rc)
'
readonly DSCREATE_PY

# Private defaults.inf for lib389: the system one with all instance paths
# moved into DIR and systemd/selinux off.
write_defaults_inf() {
    local dir=$1 name=$2 out=$3
    awk -v d="$dir" -v n="$name" -v u="$DS_USER" '
        BEGIN {
            o["with_systemd"] = "0"
            o["with_selinux"] = ""
            o["user"] = u
            o["group"] = u
            o["tmp_dir"] = d "/tmp"
            o["sysconf_dir"] = d "/etc"
            o["initconfig_dir"] = d "/etc/default"
            o["tmpfiles_d"] = d "/etc/tmpfiles.d"
            o["config_dir"] = d "/etc/dirsrv/slapd-" n
            o["schema_dir"] = d "/etc/dirsrv/slapd-" n "/schema"
            o["cert_dir"] = d "/etc/dirsrv/slapd-" n
            o["local_state_dir"] = d "/var"
            o["run_dir"] = d "/run"
            o["ldapi"] = d "/run/ldapi"
            o["pid_file"] = d "/ns-slapd.pid"
            o["inst_dir"] = d "/inst"
            o["lock_dir"] = d "/lock/slapd-" n
            o["log_dir"] = d "/log"
            o["access_log"] = d "/log/access"
            o["audit_log"] = d "/log/audit"
            o["error_log"] = d "/log/errors"
            o["security_log"] = d "/log/security"
            o["db_dir"] = d "/var/db"
            o["db_home_dir"] = d "/var/db"
            o["backup_dir"] = d "/var/bak"
            o["ldif_dir"] = d "/var/ldif"
        }
        /^[a-z_]+ *=/ {
            k = $0
            sub(/ *=.*/, "", k)
            if (k in o) { print k " = " o[k]; seen[k] = 1; next }
        }
        { print }
        END { for (k in o) if (!(k in seen)) print k " = " o[k] }
    ' /usr/share/dirsrv/inf/defaults.inf >"$out"
}

# CA (EC P-256) + server certificate (RSA 2048: ns-slapd's attribute
# encryption can only wrap its keys with an RSA server key; SAN DNS:localhost,
# IP:127.0.0.1) in a new NSS db in $1 (the instance cert dir), with the pin
# files lib389/ns-slapd expect. The CA certificate is written to $2.
make_tls() {
    local certdir=$1 ca_file=$2 work
    work=$(mktemp -d "$certdir/../tls.XXXXXX")
    local nsspw
    nsspw=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    (
        umask 077
        printf '%s' "$nsspw" >"$certdir/pwdfile.txt"
        printf 'Internal (Software) Token:%s' "$nsspw" >"$certdir/pin.txt"
    )
    cat >"$work/server.ext" <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
EOF
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 -sha256 \
        -subj '/O=scim-bridge tests/CN=ds389 test CA' \
        -addext 'basicConstraints=critical,CA:TRUE' \
        -addext 'keyUsage=critical,keyCertSign,cRLSign' \
        -keyout "$work/ca.key" -out "$ca_file" 2>/dev/null
    openssl req -new -newkey rsa:2048 -nodes -sha256 \
        -subj '/O=scim-bridge tests/CN=localhost' \
        -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
    openssl x509 -req -sha256 -days 365 -in "$work/server.csr" \
        -CA "$ca_file" -CAkey "$work/ca.key" -set_serial "0x$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" \
        -extfile "$work/server.ext" -out "$work/server.crt" 2>/dev/null
    openssl pkcs12 -export -name Server-Cert -passout pass: \
        -inkey "$work/server.key" -in "$work/server.crt" -out "$work/server.p12"
    certutil -N -d "sql:$certdir" -f "$certdir/pwdfile.txt"
    certutil -A -d "sql:$certdir" -f "$certdir/pwdfile.txt" \
        -n Self-Signed-CA -t CT,, -a -i "$ca_file"
    pk12util -i "$work/server.p12" -d "sql:$certdir" -k "$certdir/pwdfile.txt" -W '' >/dev/null
    rm -rf "$work"
    chmod 0644 "$ca_file"
}

# dse_edit FILE EDITS: EDITS holds lines "dn<TAB>attribute<TAB>value"; each
# attribute is replaced (or added) in the entry with that dn. The server must
# be stopped.
dse_edit() {
    local file=$1 edits=$2
    awk -F'\t' '
        NR == FNR {
            k = tolower($1)
            add[k] = add[k] $2 ": " $3 "\n"
            drop[k, tolower($2)] = 1
            next
        }
        /^dn: / { dn = tolower(substr($0, 5)) }
        /^$/ {
            if (dn in add) { printf "%s", add[dn]; delete add[dn] }
            dn = ""; skip = 0; print; next
        }
        skip && /^ / { next }
        { skip = 0 }
        dn != "" {
            a = tolower($0)
            sub(/:.*/, "", a)
            if ((dn, a) in drop) { skip = 1; next }
        }
        { print }
        END {
            if (dn in add) { printf "%s", add[dn]; delete add[dn] }
            for (k in add) { print "dse_edit: no entry " k > "/dev/stderr"; bad = 1 }
            exit bad
        }
    ' "$edits" "$file" >"$file.new" || return 1
    chown --reference="$file" "$file.new"
    chmod --reference="$file" "$file.new"
    mv "$file.new" "$file"
}

cmd_up() {
    local dir=$1 port=$2 tls_port=${3:-}
    [[ $(id -u) == 0 ]] || die "must run as root"
    [[ -d $dir ]] || die "$dir is not a directory"
    dir=$(cd "$dir" && pwd -P)
    [[ -z $(ls -A "$dir") ]] || die "$dir is not empty"
    # unix socket paths are limited to 107 bytes
    ((${#dir} <= 90)) || die "DIR path too long for the ldapi socket: $dir"
    check_port "$port"
    if [[ -n $tls_port ]]; then
        [[ $tls_port != "$port" ]] || die "PORT and TLS_PORT must differ"
        check_port "$tls_port"
    fi

    local plugin plugin_dns=()
    for plugin in $ENABLE_PLUGINS; do
        case $plugin in
        referint) plugin_dns+=('cn=referential integrity postoperation,cn=plugins,cn=config') ;;
        memberof) plugin_dns+=('cn=MemberOf Plugin,cn=plugins,cn=config') ;;
        *) die "unknown plugin in DS389_ENABLE_PLUGINS: $plugin" ;;
        esac
    done

    local t0 name conf url ca_file='' pid=''
    t0=$(date +%s.%N)
    name=t$port # used in the /dev/shm semaphore name: unique per port
    conf=$dir/etc/dirsrv/slapd-$name
    url=ldap://127.0.0.1:$port

    # PREFIX tree read by lib389 (lib389/paths.py): our defaults.inf, and the
    # stock templates dscreate copies from <sysconf_dir>/dirsrv/{schema,config}.
    mkdir -p "$dir/share/dirsrv/inf" "$dir/etc/dirsrv" "$dir/tmp" "$dir/inst" "$conf"
    ln -s /etc/dirsrv/schema "$dir/etc/dirsrv/schema"
    ln -s /etc/dirsrv/config "$dir/etc/dirsrv/config"
    write_defaults_inf "$dir" "$name" "$dir/share/dirsrv/inf/defaults.inf"
    printf '%s\n' "$name" >"$dir/instance.name"

    if [[ -n $tls_port ]]; then
        ca_file=$dir/ca.pem
        make_tls "$conf" "$ca_file"
    fi

    cat >"$dir/instance.inf" <<EOF
[general]
config_version = 2
full_machine_name = localhost
strict_host_checking = False
selinux = False
systemd = False
start = False

[slapd]
instance_name = $name
user = $DS_USER
group = $DS_USER
root_dn = $ADMIN_DN
root_password = $ADMIN_PASSWORD
port = $port
secure_port = ${tls_port:-636}
self_sign_cert = False
db_lib = $DB_LIB
prefix = /usr
sysconf_dir = $dir/etc
initconfig_dir = $dir/etc/default
config_dir = $conf
schema_dir = $conf/schema
cert_dir = $conf
local_state_dir = $dir/var
run_dir = $dir/run
ldapi = $dir/run/ldapi
lock_dir = $dir/lock/slapd-$name
log_dir = $dir/log
inst_dir = $dir/inst
db_dir = $dir/var/db
db_home_dir = $dir/var/db
backup_dir = $dir/var/bak
ldif_dir = $dir/var/ldif
tmp_dir = $dir/tmp

[backend-userroot]
suffix = $BASE_DN
create_suffix_entry = True
sample_entries = no
EOF
    chown -R "$DS_USER:$DS_USER" "$dir"
    chmod 0750 "$dir"

    # dscreate starts ns-slapd (directly, no systemd), configures it online,
    # and stops it again (start = False). See DSCREATE_PY.
    if ! PREFIX=$dir NSSLAPD_DB_LIB=$DB_LIB /usr/bin/python3 -c "$DSCREATE_PY" \
        from-file "$dir/instance.inf" >"$dir/dscreate.log" 2>&1; then
        show_logs "$dir"
        die "dscreate failed (instance $name in $dir)"
    fi
    log "dscreate done after $(elapsed "$t0")s"

    # Offline tuning: loopback only, TLS on, small caches instead of
    # autosizing to 25% of RAM, no fsync per transaction, optional plugins.
    local edits=$dir/dse.edits
    local be='cn=userroot,cn=ldbm database,cn=plugins,cn=config'
    local dbc="cn=$DB_LIB,cn=config,cn=ldbm database,cn=plugins,cn=config"
    {
        printf '%s\t%s\t%s\n' cn=config nsslapd-listenhost 127.0.0.1
        if [[ -n $tls_port ]]; then
            printf '%s\t%s\t%s\n' cn=config nsslapd-securelistenhost 127.0.0.1
            printf '%s\t%s\t%s\n' cn=config nsslapd-security on
        fi
        printf '%s\t%s\t%s\n' "$be" nsslapd-cachememsize 33554432
        printf '%s\t%s\t%s\n' "$be" nsslapd-dncachememsize 8388608
        printf '%s\t%s\t%s\n' "$dbc" nsslapd-db-durable-transaction off
        if [[ $DB_LIB == bdb ]]; then
            printf '%s\t%s\t%s\n' "$dbc" nsslapd-cache-autosize 0
            printf '%s\t%s\t%s\n' "$dbc" nsslapd-dbcachesize 16777216
        fi
        for plugin in "${plugin_dns[@]}"; do
            printf '%s\t%s\t%s\n' "$plugin" nsslapd-pluginEnabled on
        done
    } >"$edits"
    dse_edit "$conf/dse.ldif" "$edits" || die "editing $conf/dse.ldif failed"

    # Start the server ourselves so that we know its pid. ns-slapd forks; the
    # daemon writes its pid to the -i file.
    rm -f "$dir/ns-slapd.pid"
    if ! /usr/sbin/ns-slapd -D "$conf" -i "$dir/ns-slapd.pid" >"$dir/ns-slapd.out" 2>&1; then
        show_logs "$dir"
        die "ns-slapd failed to start"
    fi
    local deadline=$((SECONDS + START_TIMEOUT))
    while :; do
        if [[ -z $pid && -s $dir/ns-slapd.pid ]]; then
            pid=$(<"$dir/ns-slapd.pid")
        fi
        if [[ -n $pid ]] && ldapsearch -x -H "$url" -s base -b '' -LLL dn >/dev/null 2>&1; then
            break
        fi
        if [[ -n $pid ]] && ! pid_alive "$pid"; then
            show_logs "$dir"
            cmd_down "$dir"
            die "ns-slapd (pid $pid) exited during startup"
        fi
        if ((SECONDS >= deadline)); then
            show_logs "$dir"
            cmd_down "$dir"
            die "ns-slapd did not answer on $url within ${START_TIMEOUT}s"
        fi
        sleep 0.05
    done

    if ! ldapadd -x -H "$url" -D "$ADMIN_DN" -w "$ADMIN_PASSWORD" >"$dir/ldapadd.out" 2>&1 <<EOF; then
dn: ou=people,$BASE_DN
objectClass: top
objectClass: organizationalUnit
ou: people

dn: ou=groups,$BASE_DN
objectClass: top
objectClass: organizationalUnit
ou: groups

dn: ou=disabled,$BASE_DN
objectClass: top
objectClass: organizationalUnit
ou: disabled
EOF
        cat "$dir/ldapadd.out" >&2
        cmd_down "$dir"
        die "adding the base OUs failed"
    fi
    log "ns-slapd pid $pid ready after $(elapsed "$t0")s"

    printf 'ldap_url=%s\n' "$url"
    if [[ -n $tls_port ]]; then
        printf 'ldaps_url=ldaps://127.0.0.1:%s\n' "$tls_port"
    fi
    printf 'base_dn=%s\n' "$BASE_DN"
    printf 'admin_dn=%s\n' "$ADMIN_DN"
    printf 'admin_password=%s\n' "$ADMIN_PASSWORD"
    if [[ -n $ca_file ]]; then
        printf 'ca_file=%s\n' "$ca_file"
    fi
    printf 'pid=%s\n' "$pid"
}

elapsed() {
    awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'
}

cmd_down() {
    local dir=$1 pid name
    if [[ -s $dir/ns-slapd.pid ]]; then
        pid=$(<"$dir/ns-slapd.pid")
        [[ $pid =~ ^[0-9]+$ ]] || die "bad pid file $dir/ns-slapd.pid"
        if pid_alive "$pid" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) != ns-slapd ]]; then
            log "pid $pid is not ns-slapd (stale pid file), not signalling it"
        elif pid_alive "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
            local deadline=$((SECONDS + STOP_TIMEOUT))
            while pid_alive "$pid" && ((SECONDS < deadline)); do
                sleep 0.05
            done
            if pid_alive "$pid"; then
                log "ns-slapd $pid still alive after ${STOP_TIMEOUT}s, sending KILL"
                kill -KILL "$pid" 2>/dev/null || true
                while pid_alive "$pid"; do sleep 0.05; done
            fi
        fi
        rm -f "$dir/ns-slapd.pid"
    else
        log "no pid file in $dir, nothing to stop"
    fi
    # The only file the instance puts outside DIR (left behind after a KILL).
    if [[ -s $dir/instance.name ]]; then
        name=$(<"$dir/instance.name")
        rm -f "/dev/shm/sem.slapd-$name.stats"
    fi
}

main() {
    (($# >= 1)) || usage
    case $1 in
    up)
        (($# == 3 || $# == 4)) || usage
        cmd_up "$2" "$3" "${4:-}"
        ;;
    down)
        (($# == 2)) || usage
        cmd_down "$2"
        ;;
    *) usage ;;
    esac
}

main "$@"
