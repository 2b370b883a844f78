#!/usr/bin/env bash
# testbed.sh - Commissaire's simulated fleet: N Linux "hosts" on this machine that a host
# manager reaches over real SSH, for tests, benchmarks and demos.  See testbed/README.md.
#
# Each host is a real OpenSSH sshd (key auth as root) running as PID 1 of its own PID, mount,
# UTS and network namespace, with its own address, host key, hostname, boot id, MemTotal,
# /etc/os-release and OS flavour (fedora, rhel, centos, fedora-atomic, rhel-atomic, debian).
# Shims stand in for reboot/shutdown/systemctl/dnf/yum/rpm/rpm-ostree/apt-get/dpkg: a reboot
# really takes the host off the network for the reboot delay and boots it again with a new boot
# id; upgrades and `rpm-ostree deploy` stage versions that the next boot applies; every shim call
# is logged with the boot id it ran in.
#
#   testbed.sh up N [--flavours LIST] [--memory-mib LIST] [--delay S] [--ttl S] [--owner PID]
#                   [--keep-keys | --new-keys]  host keys of an earlier up are reused (default)
#   testbed.sh demo N [up options]        up, then print the quickstart (commctl, then curl)
#   testbed.sh env                        shell assignments for the quickstart: TESTBED_STATE,
#                                         TESTBED_PREFIX, TESTBED_NET (exported), TB_HOSTS,
#                                         TB_KEY, TB_GATEWAY; use: eval "$(testbed.sh env)"
#   testbed.sh down [--purge]             remove everything up created; the subnet stays an
#                                         `unreachable` route so nothing leaves the machine
#                                         (--purge: the route and the state dir too)
#   testbed.sh list | status | known-hosts
#   testbed.sh reboot|stop|start|rekey HOST   fault injection (HOST = name or address)
#   testbed.sh quirk HOST QUIRK           how HOST misbehaves from now on: ignore-reboot (reboot
#                                         commands succeed, nothing happens), no-return (the next
#                                         reboot takes it down for good, until `start`),
#                                         keep-version (boots drop a staged OSTree version, as a
#                                         rolled-back deployment), none
#   testbed.sh wait HOST [SECONDS]        wait until HOST answers with an SSH banner
#   testbed.sh publish VERSION            version that dnf/yum/apt-get/rpm-ostree upgrade to
#   testbed.sh ssh HOST [COMMAND...]
#
# Environment: TESTBED_STATE (state dir, default /tmp/commissaire-testbed/default),
# TESTBED_PREFIX (netns/interface/host name prefix, default tb), TESTBED_NET (second octet of
# the hosts' 10.NET.0.0/16, default 210).  Instances with different values run side by side.
# TESTBED_OWNER: default for --owner.
#
# Needs root, bash >= 5, iproute2, util-linux (unshare, nsenter, flock), openssh-server and
# openssh-client.  Network rule: traffic only goes to addresses inside the network namespaces
# this script creates (no default route in them, ip_forward untouched, no IPv6 addresses, each
# host's resolver is 127.0.0.1).  Every resource is recorded in STATE/created; `down` removes
# them and stops processes by their recorded PID only.

set -euo pipefail

STATE=${TESTBED_STATE:-/tmp/commissaire-testbed/default}
PFX=${TESTBED_PREFIX:-tb}
NET=${TESTBED_NET:-210}
SELF=$(readlink -f "${BASH_SOURCE[0]}")
MAXN=2000
FLAVOURS="fedora rhel centos fedora-atomic rhel-atomic debian"

die() { echo "testbed: $*" >&2; exit 1; }
now_us() { echo "${EPOCHREALTIME/./}"; }
secs_since() { printf '%.2f' "$(($(now_us) - $1))e-6"; }

# set by load_conf (STATE/conf) and, inside a host, by hosts/NAME/env
DELAY="" OWNER="" OWNER_START="" ADDR="" FLAVOUR=""

load_conf() {
    [[ -f $STATE/conf ]] || die "not up (no $STATE/conf)"
    # shellcheck disable=SC1091
    source "$STATE/conf"
}

resolve() { # name or address -> name
    local n a
    while read -r n a; do
        if [[ $1 == "$n" || $1 == "$a" ]]; then echo "$n"; return 0; fi
    done < "$STATE/hosts.tsv"
    die "unknown host: $1"
}
addr_of_name() { local n a; while read -r n a; do [[ $n == "$1" ]] && { echo "$a"; return 0; }; done < "$STATE/hosts.tsv"; return 1; }

alive() { # pid -> running and not a zombie
    local st
    [[ -n $1 && -r /proc/$1/stat ]] || return 1
    read -r st 2> /dev/null < "/proc/$1/stat" || return 1
    st=${st##*) }
    [[ ${st:0:1} != Z ]]
}
start_time() { # pid -> kernel start time (field 22 of /proc/PID/stat), to detect PID reuse
    local st f
    read -r st 2> /dev/null < "/proc/$1/stat" || return 1
    read -r -a f <<< "${st##*) }"
    echo "${f[19]}"
}
cmdline_has() { # pid word... -> the process's command line contains every word
    local c w
    c=$(tr '\0' ' ' 2> /dev/null < "/proc/$1/cmdline") || return 1
    for w in "${@:2}"; do [[ " $c " == *" $w "* ]] || return 1; done
}

# ----------------------------------------------------------------------------- the shim
# One multi-call script, seen inside every host as /usr/lib/testbed/shim and reached through
# symlinks named after the tool it plays.  It only sees the host's own state directory (bound at
# /run/testbed/host), the request queue of the supervisor and the published version.
write_shim() {
    cat > "$1" <<'SHIM'
#!/bin/bash
# Commissaire testbed shim: the fake system tools of one simulated host (see testbed.sh).
H=/run/testbed/host
[[ -f $H/name ]] || { echo "testbed shim: not inside a testbed host" >&2; exit 1; }
prog=${0##*/}
read -r NAME < "$H/name"
read -r FLAVOUR < "$H/flavour"
read -r BOOT_ID < /proc/sys/kernel/random/boot_id
# commands.log: <unix time> <boot id> <program> <arguments>
printf '%s %s %s\n' "$EPOCHREALTIME" "$BOOT_ID" "$prog${*:+ $*}" >> "$H/commands.log"

request() { # ask the supervisor (outside the host) to reboot or stop us
    local t=/run/testbed/requests/.tmp.$NAME.$$
    echo "$1" > "$t" && mv -f "$t" "/run/testbed/requests/$NAME.shim$$"
}
go_down() { # like the real thing, the host goes down under the command (and the SSH session)
    # A host told to ignore reboots accepts the command and carries on in the same boot, like a
    # reboot blocked by an inhibitor: the caller only finds out from the unchanged boot id.
    [[ $1 == reboot && $(quirk) == ignore-reboot ]] && exit 0
    request "$1"
    sleep 10; exit 0
}
version() { local v; read -r v < "$H/version"; echo "$v"; }
quirk() { local q=""; [[ -f $H/quirk ]] && read -r q < "$H/quirk"; echo "$q"; }
staged() { local v=""; read -r v < "$H/staged_version" || true; echo "$v"; }
published() { local v; read -r v < /run/testbed/published; echo "$v"; }
installed() { grep -qxF -- "$1" "$H/packages"; }
add_pkg() { installed "$1" || echo "$1" >> "$H/packages"; }
del_pkg() { grep -vxF -- "$1" "$H/packages" > "$H/packages.new"; mv -f "$H/packages.new" "$H/packages"; }
unit() { local u=${1%.service}; echo "${u##*/}"; }
svc_state() { if [[ -f $H/services/$1.active ]]; then echo active; else echo inactive; fi; }
unsupported() { echo "$prog (testbed shim): unsupported: $*" >&2; exit 1; }
words() { # drop options: the remaining words of a command line, one per line
    local a skip=0
    for a in "$@"; do
        if ((skip)); then skip=0; continue; fi
        case $a in -o|-c|-t|-e|--setopt|--enablerepo|--disablerepo) skip=1 ;; -*) ;; *) echo "$a" ;; esac
    done
}

case $prog in
reboot)
    [[ ${1:-} == --help ]] && { echo "reboot (testbed shim)"; exit 0; }
    go_down reboot ;;
poweroff|halt)
    go_down stop ;;
shutdown)
    for a in "$@"; do
        case $a in -c) exit 0 ;; -r|--reboot) go_down reboot ;; esac
    done
    go_down stop ;;
systemctl)
    while [[ ${1:-} == -* && $1 != --version ]]; do shift; done    # --no-block, -q, ...
    sub=${1:-}; shift || true
    case $sub in
    --version) echo "systemd 219 (testbed shim)"; exit 0 ;;
    reboot) go_down reboot ;;
    poweroff|halt) go_down stop ;;
    daemon-reload|daemon-reexec|reset-failed) exit 0 ;;
    is-system-running) echo running; exit 0 ;;
    start|restart|reload|try-restart|reload-or-restart)
        for u in "$@"; do [[ $u == -* ]] || : > "$H/services/$(unit "$u").active"; done; exit 0 ;;
    stop)
        for u in "$@"; do [[ $u == -* ]] || rm -f "$H/services/$(unit "$u").active"; done; exit 0 ;;
    enable|disable)
        now=0
        for u in "$@"; do [[ $u == --now ]] && now=1; done
        for u in "$@"; do
            [[ $u == -* ]] && continue
            u=$(unit "$u")
            if [[ $sub == enable ]]; then
                : > "$H/services/$u.enabled"; ((now)) && : > "$H/services/$u.active"
            else
                rm -f "$H/services/$u.enabled"; ((now)) && rm -f "$H/services/$u.active"
            fi
        done; exit 0 ;;
    is-active)
        rc=0; for u in "$@"; do s=$(svc_state "$(unit "$u")"); echo "$s"; [[ $s == active ]] || rc=3; done; exit $rc ;;
    is-enabled)
        rc=0
        for u in "$@"; do
            if [[ -f $H/services/$(unit "$u").enabled ]]; then echo enabled; else echo disabled; rc=1; fi
        done; exit $rc ;;
    status)
        u=$(unit "${1:-}"); s=$(svc_state "$u")
        echo "* $u.service - $u (testbed shim)"; echo "   Active: $s"
        [[ $s == active ]] && exit 0; exit 3 ;;
    *) unsupported "$sub" ;;
    esac ;;
rpm-ostree)
    sub=${1:-status}; shift || true
    opts=" $* "
    case $sub in
    --version) echo "rpm-ostree: Version: '2017.6' (testbed shim)"; exit 0 ;;
    status)
        b=$(version); s=$(staged)
        if [[ $opts == *" --json "* ]]; then
            printf '{"deployments":['
            [[ -n $s ]] && printf '{"version":"%s","booted":false,"staged":true},' "$s"
            printf '{"version":"%s","booted":true,"staged":false}],"transaction":null}\n' "$b"
            exit 0
        fi
        echo "State: idle"; echo "Deployments:"
        if [[ -n $s ]]; then
            echo "  testbed:$FLAVOUR/x86_64/stable"; echo "                   Version: $s (staged)"
        fi
        echo "● testbed:$FLAVOUR/x86_64/stable"; echo "                   Version: $b"; exit 0 ;;
    upgrade)
        a=$(published)
        if [[ $a == "$(version)" || $a == "$(staged)" ]]; then
            [[ $opts == *" --check "* || $opts == *" --preview "* ]] && { echo "No updates available."; exit 77; }
            echo "No upgrade available."; exit 0
        fi
        if [[ $opts == *" --check "* || $opts == *" --preview "* ]]; then
            echo "AvailableUpdate:"; echo "        Version: $a"; exit 0
        fi
        echo "$a" > "$H/staged_version"
        echo "Staging deployment... done"
        if [[ $opts == *" --reboot "* || $opts == *" -r "* ]]; then go_down reboot; fi
        echo "Run \"systemctl reboot\" to start a reboot"; exit 0 ;;
    deploy)
        v=$(words "$@" | head -n1)
        [[ -n $v ]] || { echo "error: deploy needs a version" >&2; exit 1; }
        echo "$v" > "$H/staged_version"
        echo "Staging deployment... done"
        if [[ $opts == *" --reboot "* || $opts == *" -r "* ]]; then go_down reboot; fi
        echo "Run \"systemctl reboot\" to start a reboot"; exit 0 ;;
    cleanup)
        : > "$H/staged_version"; exit 0 ;;
    *) unsupported "$sub" ;;
    esac ;;
yum|dnf)
    mapfile -t args < <(words "$@")
    case ${args[0]:-} in
    update|upgrade)
        a=$(published)
        if [[ $a == "$(version)" ]]; then echo "No packages marked for update"; exit 0; fi
        echo "Upgraded: testos-$a"; echo "$a" > "$H/version"; echo "Complete!"; exit 0 ;;
    check-update)
        [[ $(published) == "$(version)" ]] && exit 0
        echo "testos.x86_64    $(published)    updates"; exit 100 ;;
    install)
        for p in "${args[@]:1}"; do add_pkg "$p"; done; echo "Complete!"; exit 0 ;;
    remove|erase)
        for p in "${args[@]:1}"; do del_pkg "$p"; done; echo "Complete!"; exit 0 ;;
    clean|makecache) exit 0 ;;
    *) [[ ${1:-} == --version ]] && { echo "4.0 (testbed shim)"; exit 0; }; unsupported "${args[0]:-}" ;;
    esac ;;
rpm)
    case ${1:-} in
    --version) echo "RPM version 4.14.0 (testbed shim)"; exit 0 ;;
    -qa) cat "$H/packages"; echo "testos-$(version)"; exit 0 ;;
    -q)
        shift; rc=0
        for p in "$@"; do
            if [[ $p == testos ]]; then echo "testos-$(version)"
            elif installed "$p"; then echo "$p-1.0-1.x86_64"
            else echo "package $p is not installed"; rc=1; fi
        done; exit $rc ;;
    *) unsupported "${1:-}" ;;
    esac ;;
apt-get|apt)
    [[ ${1:-} == --version ]] && { echo "apt 2.6.1 (amd64) (testbed shim)"; exit 0; }
    mapfile -t args < <(words "$@")
    case ${args[0]:-} in
    update) echo "Hit:1 testbed://$FLAVOUR bookworm InRelease"; echo "Reading package lists... Done"; exit 0 ;;
    install)
        for p in "${args[@]:1}"; do p=${p%%=*}; add_pkg "$p"; echo "Setting up $p (1.0-1) ..."; done; exit 0 ;;
    remove|purge)
        for p in "${args[@]:1}"; do del_pkg "$p"; echo "Removing $p (1.0-1) ..."; done; exit 0 ;;
    upgrade|dist-upgrade|full-upgrade)
        a=$(published)
        if [[ $a == "$(version)" ]]; then echo "0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded."; exit 0; fi
        echo "$a" > "$H/version"; echo "Setting up testos ($a) ..."; exit 0 ;;
    clean|autoclean|autoremove) exit 0 ;;
    *) unsupported "${args[0]:-}" ;;
    esac ;;
dpkg|dpkg-query)
    sub=${1:-}; shift || true
    case $sub in
    --version) echo "Debian 'dpkg' package management program version 1.21.22 (testbed shim)"; exit 0 ;;
    --print-architecture) echo amd64; exit 0 ;;
    -s|--status)
        rc=0
        for p in "$@"; do
            if [[ $p == testos ]]; then printf 'Package: testos\nStatus: install ok installed\nVersion: %s\n\n' "$(version)"
            elif installed "$p"; then printf 'Package: %s\nStatus: install ok installed\nVersion: 1.0-1\n\n' "$p"
            else echo "dpkg-query: package '$p' is not installed and no information is available" >&2; rc=1; fi
        done; exit $rc ;;
    -l|--list)
        echo "||/ Name  Version  Architecture  Description"
        printf 'ii  testos  %s  amd64  testbed OS\n' "$(version)"
        while read -r p; do printf 'ii  %s  1.0-1  amd64  %s\n' "$p" "$p"; done < "$H/packages"; exit 0 ;;
    *) unsupported "$sub" ;;
    esac ;;
testbed-info)
    echo "name=$NAME"; echo "flavour=$FLAVOUR"; echo "version=$(version)"; echo "staged_version=$(staged)"
    echo "boot_id=$BOOT_ID"; echo "boot_count=$(< "$H/boot_count")"; exit 0 ;;
*) echo "testbed shim: unknown program $prog" >&2; exit 1 ;;
esac
SHIM
    chmod 755 "$1"
}

# ----------------------------------------------------------------------------- layers
# Read-only overlay layers shared by all hosts: `common/usr` (the shim, its links, and
# /usr/lib/systemd/systemd -> sshd so that PID 1 is called systemd) and, per flavour, `F/usr`
# (package tools; whiteouts hide the machine's own apt/dpkg where the flavour has none) and `F/etc`
# (os-release and release files).  A host mounts /usr = F/usr:common/usr:/usr and
# /etc = F/etc:/etc with its own upper dir hosts/NAME/etc.
tools_of() { # flavour -> package tools it has
    case $1 in
    fedora) echo "dnf yum rpm" ;;
    rhel|centos) echo "yum rpm" ;;
    fedora-atomic|rhel-atomic) echo "rpm-ostree rpm" ;;
    debian) echo "apt-get apt dpkg dpkg-query" ;;
    esac
}
write_layers() {
    local L=$STATE/layers f t
    rm -rf "$L"
    mkdir -p "$L/common/usr/lib/testbed" "$L/common/usr/lib/systemd" "$L/common/usr/bin" "$L/common/usr/sbin"
    write_shim "$L/common/usr/lib/testbed/shim"
    ln -s "$SSHD" "$L/common/usr/lib/systemd/systemd"
    for t in reboot shutdown poweroff halt; do ln -s ../lib/testbed/shim "$L/common/usr/sbin/$t"; done
    for t in systemctl testbed-info; do ln -s ../lib/testbed/shim "$L/common/usr/bin/$t"; done
    for f in $FLAVOURS; do
        mkdir -p "$L/$f/usr/bin" "$L/$f/usr/lib" "$L/$f/etc"
        for t in dnf yum rpm rpm-ostree apt-get apt dpkg dpkg-query apt-cache apt-mark aptitude; do
            if [[ " $(tools_of "$f") " == *" $t "* ]]; then
                ln -s ../lib/testbed/shim "$L/$f/usr/bin/$t"
            else
                mknod "$L/$f/usr/bin/$t" c 0 0            # overlayfs whiteout: no such tool here
            fi
        done
        write_os_release "$f" > "$L/$f/usr/lib/os-release"
        cp "$L/$f/usr/lib/os-release" "$L/$f/etc/os-release"
        local rel=""
        case $f in
        fedora*) rel="Fedora release 26 (Twenty Six)"; echo "$rel" > "$L/$f/etc/fedora-release" ;;
        rhel) rel="Red Hat Enterprise Linux Server release 7.4 (Maipo)" ;;
        rhel-atomic) rel="Red Hat Enterprise Linux Atomic Host release 7.4" ;;
        centos) rel="CentOS Linux release 7.4.1708 (Core)"; echo "$rel" > "$L/$f/etc/centos-release" ;;
        esac
        if [[ -n $rel ]]; then
            echo "$rel" > "$L/$f/etc/redhat-release"; echo "$rel" > "$L/$f/etc/system-release"
            mknod "$L/$f/etc/debian_version" c 0 0            # hide the machine's Debian marker
        fi
    done
}
write_os_release() {
    case $1 in
    fedora) printf '%s\n' 'NAME=Fedora' 'VERSION="26 (Server Edition)"' 'ID=fedora' 'VERSION_ID=26' \
        'PRETTY_NAME="Fedora 26 (Server Edition)"' 'VARIANT_ID=server' ;;
    fedora-atomic) printf '%s\n' 'NAME=Fedora' 'VERSION="26 (Atomic Host)"' 'ID=fedora' 'VERSION_ID=26' \
        'PRETTY_NAME="Fedora 26 (Atomic Host)"' 'VARIANT_ID=atomic.host' ;;
    rhel) printf '%s\n' 'NAME="Red Hat Enterprise Linux Server"' 'VERSION="7.4 (Maipo)"' 'ID="rhel"' \
        'ID_LIKE="fedora"' 'VERSION_ID="7.4"' 'PRETTY_NAME="Red Hat Enterprise Linux Server 7.4 (Maipo)"' ;;
    rhel-atomic) printf '%s\n' 'NAME="Red Hat Enterprise Linux Atomic Host"' 'VERSION="7.4"' 'ID="rhel"' \
        'ID_LIKE="fedora"' 'VARIANT_ID=atomic.host' 'VERSION_ID="7.4"' \
        'PRETTY_NAME="Red Hat Enterprise Linux Atomic Host 7.4"' ;;
    centos) printf '%s\n' 'NAME="CentOS Linux"' 'VERSION="7 (Core)"' 'ID="centos"' 'ID_LIKE="rhel fedora"' \
        'VERSION_ID="7"' 'PRETTY_NAME="CentOS Linux 7 (Core)"' ;;
    debian) printf '%s\n' 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"' 'NAME="Debian GNU/Linux"' \
        'VERSION_ID="12"' 'VERSION="12 (bookworm)"' 'VERSION_CODENAME=bookworm' 'ID=debian' ;;
    esac
}

# ----------------------------------------------------------------------------- up
cmd_up() {
    local n="" delay=2 ttl=14400 owner=${TESTBED_OWNER:-} wait_s="" flist="" mlist="2048,4096,6144,8192" keep_keys=1
    flist=${FLAVOURS// /,}
    while (($#)); do
        case $1 in
        --flavours|--os) flist=$2; shift 2 ;;
        --memory-mib) mlist=$2; shift 2 ;;
        --delay) delay=$2; shift 2 ;;
        --ttl) ttl=$2; shift 2 ;;
        --owner) owner=$2; shift 2 ;;
        --wait) wait_s=$2; shift 2 ;;
        --keep-keys) keep_keys=1; shift ;;
        --new-keys) keep_keys=0; shift ;;
        -*) die "unknown option $1" ;;
        *) n=$1; shift ;;
        esac
    done
    if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 1 || n > MAXN)); then die "up N: N must be 1..$MAXN"; fi
    [[ $delay =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--delay: seconds"
    [[ $ttl =~ ^[0-9]+$ ]] || die "--ttl: seconds"
    [[ -z $owner || $owner =~ ^[0-9]+$ ]] || die "--owner: a PID"
    [[ -z $owner ]] || alive "$owner" || die "--owner $owner: no such process"
    [[ -z $wait_s ]] && wait_s=$((60 + n / 4))
    local -a flav mem
    IFS=, read -r -a flav <<< "$flist"
    IFS=, read -r -a mem <<< "$mlist"
    local f m
    ((${#flav[@]})) || die "--flavours: empty"
    for f in "${flav[@]}"; do [[ " $FLAVOURS " == *" $f "* ]] || die "unknown flavour $f (one of: $FLAVOURS)"; done
    ((${#mem[@]})) || die "--memory-mib: empty"
    for m in "${mem[@]}"; do [[ $m =~ ^[1-9][0-9]*$ ]] || die "--memory-mib: MiB values, e.g. 2048,4096"; done
    check_env
    [[ $(id -u) == 0 ]] || die "must run as root (network, PID and mount namespaces)"
    SSHD=$(PATH=$PATH:/usr/sbin:/sbin command -v sshd) || die "sshd not found (apt-get install openssh-server)"
    local c
    for c in ip unshare nsenter ssh-keygen ssh-keyscan awk xargs setsid mknod; do
        command -v "$c" > /dev/null || die "$c not found"
    done
    if [[ -f $STATE/created ]]; then
        echo "testbed: $STATE is up, running down first" >&2
        cmd_down
    fi
    # our own unreachable route from an earlier `down` makes way for the bridge
    drop_unreachable_route
    # refuse to touch anything another instance (or anyone else) owns
    ip link show "${PFX}br0" > /dev/null 2>&1 && die "${PFX}br0 exists (another instance? set TESTBED_PREFIX/TESTBED_NET/TESTBED_STATE)"
    compgen -G "/run/netns/${PFX}[0-9][0-9][0-9][0-9]" > /dev/null && die "netns ${PFX}NNNN exist (another instance? set TESTBED_PREFIX)"
    [[ -z $(ip -4 -o addr show to "10.$NET.0.0/16") && -z $(ip -4 route show root "10.$NET.0.0/16") ]] ||
        die "10.$NET.0.0/16 is already in use on this machine (set TESTBED_NET)"

    local t0 t1 t2
    t0=$(now_us)
    mkdir -p "$STATE"
    mountpoint -q "$STATE/hosts" && umount -l "$STATE/hosts"
    rm -rf "${STATE:?}/hosts" "$STATE/requests" "$STATE/acks"
    mkdir -p "$STATE/hosts" "$STATE/requests" "$STATE/acks"
    : > "$STATE/created"
    # per-host files live on a tmpfs: fast to create and to drop
    mount -t tmpfs -o "size=$((64 + n))m,mode=755" "testbed-$PFX" "$STATE/hosts"
    echo "mount $STATE/hosts" >> "$STATE/created"
    echo 2.0 > "$STATE/published"
    [[ -f $STATE/id_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C commissaire-testbed-client -f "$STATE/id_ed25519"
    write_layers
    local owner_start=""
    [[ -n $owner ]] && owner_start=$(start_time "$owner")
    cat > "$STATE/conf" <<EOF
N=$n
DELAY=$delay
TTL=$ttl
PFX=$PFX
NET=$NET
OWNER=$owner
OWNER_START=$owner_start
EOF

    # MemTotal variants, built from the machine's own /proc/meminfo
    local -A meminfo=()
    for m in "${mem[@]}"; do
        [[ -n ${meminfo[$m]:-} ]] || meminfo[$m]=$(awk -v kb=$((m * 1024)) '
            /^MemTotal:/ {printf "MemTotal:       %8d kB\n", kb; next}
            /^MemFree:/ {printf "MemFree:        %8d kB\n", kb * 0.8; next}
            /^MemAvailable:/ {printf "MemAvailable:   %8d kB\n", kb * 0.9; next} {print}' /proc/meminfo)
    done

    ip link add "${PFX}br0" type bridge
    echo "bridge ${PFX}br0" >> "$STATE/created"
    ip link set "${PFX}br0" addrgenmode none
    ip addr add "10.$NET.0.1/16" dev "${PFX}br0"
    ip link set "${PFX}br0" up

    local i name addr H uuid pub sshd_tmpl batch=$STATE/ip-batch
    local -a dirs=() tmps=()
    : > "$STATE/hosts.tsv"
    for ((i = 1; i <= n; i++)); do
        printf -v name '%s%04d' "$PFX" "$i"; H=$STATE/hosts/$name
        dirs+=("$H/root" "$H/services" "$H/etc" "$H/var" "$H/.work/etc" "$H/.work/var")
        tmps+=("$H/tmp")
    done
    printf '%s\0' "${dirs[@]}" "${tmps[@]}" | xargs -0 mkdir -p
    printf '%s\0' "${tmps[@]}" | xargs -0 chmod 1777
    pub=$(< "$STATE/id_ed25519.pub")
    sshd_tmpl=$(write_sshd_config @ADDR@)
    : > "$batch"
    for ((i = 1; i <= n; i++)); do
        printf -v name '%s%04d' "$PFX" "$i"; H=$STATE/hosts/$name
        addr=10.$NET.$(((i - 1) / 250 + 1)).$(((i - 1) % 250 + 1))
        f=${flav[(i - 1) % ${#flav[@]}]}
        m=${mem[(i - 1) % ${#mem[@]}]}
        printf '%s\t%s\n' "$name" "$addr" >> "$STATE/hosts.tsv"
        echo "$name" > "$H/name"
        echo "$f" > "$H/flavour"
        echo "$m" > "$H/memory_mib"
        printf 'ADDR=%s\nIDX=%d\nFLAVOUR=%s\n' "$addr" "$i" "$f" > "$H/env"
        echo 1.0 > "$H/version"
        : > "$H/staged_version"; : > "$H/boot_id"; : > "$H/packages"; : > "$H/commands.log"
        echo 0 > "$H/boot_count"
        echo down > "$H/status"
        printf '%s\n' "${meminfo[$m]}" > "$H/meminfo"
        echo "$pub" > "$H/authorized_keys"
        echo "$name" > "$H/etc/hostname"
        printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n%s\t%s\n' "$addr" "$name" > "$H/etc/hosts"
        echo "nameserver 127.0.0.1" > "$H/etc/resolv.conf"    # no DNS query leaves a host
        read -r uuid < /proc/sys/kernel/random/uuid
        echo "${uuid//-/}" > "$H/etc/machine-id"
        echo "${sshd_tmpl//@ADDR@/$addr}" > "$H/sshd_config"
        printf 'netns add %s\nlink add %sv%d type veth peer name eth0 netns %s\nlink set %sv%d addrgenmode none\nlink set %sv%d master %sbr0 up\n' \
            "$name" "$PFX" "$i" "$name" "$PFX" "$i" "$PFX" "$i" "$PFX" >> "$batch"
        printf 'netns %s\nlink %sv%d\n' "$name" "$PFX" "$i" >> "$STATE/created"
    done
    ip -batch "$batch"
    # one ed25519 host key per host, on all cores; a host that had one at an earlier `up` of
    # this state dir gets it back (unless --new-keys), as a real machine keeps its key across
    # reboots and power cycles: a manager holding the old key must not see a changed host.
    mkdir -p "$STATE/hostkeys"
    ((keep_keys)) || rm -f "$STATE"/hostkeys/*
    while read -r name _; do
        if [[ -f $STATE/hostkeys/$name && -f $STATE/hostkeys/$name.pub ]]; then
            cp "$STATE/hostkeys/$name" "$STATE/hosts/$name/ssh_host_ed25519_key"
            cp "$STATE/hostkeys/$name.pub" "$STATE/hosts/$name/ssh_host_ed25519_key.pub"
            chmod 600 "$STATE/hosts/$name/ssh_host_ed25519_key"
        else
            echo "$name"
        fi
    done < "$STATE/hosts.tsv" | xargs -r -P "$(nproc)" -I{} \
        ssh-keygen -q -t ed25519 -N '' -C {} -f "$STATE/hosts/{}/ssh_host_ed25519_key"
    while read -r name _; do
        [[ -f $STATE/hostkeys/$name ]] && continue
        cp "$STATE/hosts/$name/ssh_host_ed25519_key" "$STATE/hostkeys/$name"
        cp "$STATE/hosts/$name/ssh_host_ed25519_key.pub" "$STATE/hostkeys/$name.pub"
    done < "$STATE/hosts.tsv"
    local kt key _c
    while read -r name addr; do
        read -r kt key _c < "$STATE/hosts/$name/ssh_host_ed25519_key.pub"
        printf '%s %s %s\n' "$addr" "$kt" "$key"
    done < "$STATE/hosts.tsv" > "$STATE/known_hosts"
    rm -f "$STATE/known_hosts.new"
    cut -f2 "$STATE/hosts.tsv" > "$STATE/hosts.txt"
    cat > "$STATE/ssh_config" <<EOF
Host *
    User root
    IdentityFile $STATE/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $STATE/known_hosts
    StrictHostKeyChecking yes
    ConnectTimeout 5
    LogLevel ERROR
EOF
    t1=$(now_us)
    # the supervisor boots the hosts and serves reboot/stop/start/rekey requests
    setsid bash "$SELF" _supervise "$STATE" < /dev/null >> "$STATE/supervisor.log" 2>&1 &
    echo $! > "$STATE/supervisor.pid"
    echo "proc $! supervisor" >> "$STATE/created"
    local ok
    # shellcheck disable=SC2046
    ok=$(wait_banners "$wait_s" $(cut -f2 "$STATE/hosts.tsv"))
    t2=$(now_us)
    printf 'testbed: %d/%d hosts up in %ss (create %ss, boot %ss), state %s, prefix %s, net 10.%s.0.0/16\n' \
        "$ok" "$n" "$(secs_since "$t0")" "$(printf '%.2f' "$((t1 - t0))e-6")" "$(printf '%.2f' "$((t2 - t1))e-6")" \
        "$STATE" "$PFX" "$NET" >&2
    ((ok == n)) || die "$((n - ok)) hosts did not answer within ${wait_s}s (see $STATE/hosts/*/console.log, sshd.log, $STATE/supervisor.log)"
}

check_env() {
    [[ $STATE == /* && $STATE != *[[:space:]]* ]] || die "TESTBED_STATE must be an absolute path without spaces"
    [[ $PFX =~ ^[a-z][a-z0-9]{0,7}$ ]] || die "TESTBED_PREFIX: 1-8 of [a-z0-9], starting with a letter"
    if ! [[ $NET =~ ^[0-9]+$ ]] || ((NET < 1 || NET > 254)); then die "TESTBED_NET: 1..254"; fi
}

write_sshd_config() {
    cat <<EOF
ListenAddress $1:22
HostKey /run/testbed/host/ssh_host_ed25519_key
PidFile none
AuthorizedKeysFile /run/testbed/host/authorized_keys .ssh/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AcceptEnv LANG LC_*
MaxStartups 100:30:300
MaxSessions 50
Subsystem sftp internal-sftp
LogLevel INFO
EOF
}

# wait_banners SECONDS ADDR... : print how many of ADDR answered port 22 with an SSH banner
# before SECONDS passed.  A host is only probed once its sshd.log says it is listening, so a
# probe never waits for ARP on a host that is not there yet.
wait_banners() {
    local deadline=$(($(now_us) + $1 * 1000000)) a name log total
    shift
    local -a pending=("$@") next logs listening
    local -A pid_of=() log_of=() addr_of_log=()
    total=$#
    while read -r name a; do log_of[$a]=$STATE/hosts/$name/sshd.log; done < "$STATE/hosts.tsv"
    while ((${#pending[@]})) && (($(now_us) < deadline)); do
        logs=(); addr_of_log=(); pid_of=()
        for a in "${pending[@]}"; do logs+=("${log_of[$a]}"); addr_of_log[${log_of[$a]}]=$a; done
        mapfile -t listening < <(grep -ls -- 'Server listening' "${logs[@]}")
        for log in "${listening[@]}"; do
            a=${addr_of_log[$log]}
            probe_banner "$a" &
            pid_of[$a]=$!
        done
        next=()
        for a in "${pending[@]}"; do
            if [[ -n ${pid_of[$a]:-} ]] && wait "${pid_of[$a]}"; then continue; fi
            next+=("$a")
        done
        pending=("${next[@]}")
        ((${#pending[@]})) && sleep 0.1
    done
    echo $((total - ${#pending[@]}))
}
probe_banner() {
    local line
    exec 3<> "/dev/tcp/$1/22" || exit 1
    read -r -t 3 line <&3 || exit 1
    [[ $line == SSH-* ]]
} 2> /dev/null

# ----------------------------------------------------------------------------- supervisor
# Runs outside the hosts and is the parent of every one of them.  A host is
# `nsenter --net=NETNS unshare --pid --fork --kill-child=SIGKILL ... _hostinit`; killing the
# unshare and the host's PID 1 with SIGKILL takes the whole PID namespace down (sshd, sessions,
# commands).  Requests arrive as files STATE/requests/NAME.TOKEN holding an action; those from
# the command line (TOKEN cli*) are acknowledged with STATE/acks/NAME.TOKEN once done.
declare -A HPID=() HIDX=() UPAT=() VDOWN=()
sv_log() { printf '%(%F %T)T %s\n' -1 "$*"; }
host_quirk() { local q=""; [[ -f $STATE/hosts/$1/quirk ]] && read -r q < "$STATE/hosts/$1/quirk"; echo "$q"; }
init_pid() { # host -> root-namespace PID of the host's PID 1 (child of its unshare)
    local pid=${HPID[$1]:-} c=""
    [[ -n $pid ]] || return 1
    read -r c _ 2> /dev/null < "/proc/$pid/task/$pid/children" || return 1
    [[ -n $c ]] && echo "$c"
}
sv_boot() {
    local name=$1 H=$STATE/hosts/$1 v uuid c f
    local -a act
    if [[ -s $H/staged_version ]]; then
        read -r v < "$H/staged_version"
        # keep-version: the new deployment "fails" and the host boots the old one again
        [[ $(host_quirk "$name") == keep-version ]] || echo "$v" > "$H/version"
        : > "$H/staged_version"
    fi
    read -r uuid < /proc/sys/kernel/random/uuid; echo "$uuid" > "$H/boot_id"
    read -r c < "$H/boot_count"; echo $((c + 1)) > "$H/boot_count"
    act=("$H"/services/*.active)                           # after a boot only enabled units run
    [[ -e ${act[0]} ]] && rm -f "${act[@]}"
    for f in "$H"/services/*.enabled; do [[ -e $f ]] && : > "${f%.enabled}.active"; done
    if [[ -n ${VDOWN[$name]:-} ]]; then ip link set "${PFX}v${HIDX[$name]}" up; VDOWN[$name]=""; fi
    printf -- '--- %(%F %T)T boot %s\n' -1 "$uuid" >> "$H/console.log"
    nsenter --net="/run/netns/$name" -- unshare --mount --uts --pid --fork --kill-child=SIGKILL \
        --mount-proc --propagation private bash "$SELF" _hostinit "$STATE" "$name" \
        < /dev/null >> "$H/console.log" 2>&1 &
    HPID[$name]=$!
    echo $! > "$H/pid"
    echo up > "$H/status"
}
sv_kill() { # host [abrupt]: kill every process of the host, then take its link down.
    # A reboot or poweroff closes the host's TCP connections first (clients see "closed by
    # remote host"); `abrupt` (stop from outside: a pulled plug) takes the link down first, so
    # open connections just go silent.
    local name=$1 pid=${HPID[$1]:-} init="" i
    if [[ ${2:-} == abrupt ]]; then
        ip link set "${PFX}v${HIDX[$name]}" down 2> /dev/null || true
    fi
    if [[ -n $pid ]]; then
        init=$(init_pid "$name") || init=""
        kill -KILL "$pid" ${init:+"$init"} 2> /dev/null || true
        wait "$pid" 2> /dev/null || true
        for ((i = 0; i < 200; i++)); do alive "$init" || break; read -r -t 0.01 -u 9 _ || true; done
        [[ ${2:-} == abrupt ]] || read -r -t 0.1 -u 9 _ || true     # let the FINs leave
    fi
    HPID[$name]=""
    ip link set "${PFX}v${HIDX[$name]}" down 2> /dev/null || true
    VDOWN[$name]=1
}
sv_rekey() { # host: sshd re-execs on SIGHUP (same PID 1) and loads the new host key
    local init
    init=$(init_pid "$1") || return 0
    kill -HUP "$init" 2>/dev/null || true
}
sv_shutdown_all() { # every host at once (the network is removed right after)
    local name pid init i
    local -a pids=() inits=()
    for name in "${!HPID[@]}"; do
        pid=${HPID[$name]}
        if [[ -n $pid ]]; then
            pids+=("$pid")
            init=""; read -r init _ 2> /dev/null < "/proc/$pid/task/$pid/children"
            [[ -n $init ]] && inits+=("$init")
        fi
        HPID[$name]=""
        echo stopped > "$STATE/hosts/$name/status"
    done
    ((${#pids[@]})) || return 0
    kill -KILL "${pids[@]}" "${inits[@]}" 2> /dev/null
    for pid in "${pids[@]}"; do wait "$pid" 2> /dev/null; done
    for init in "${inits[@]}"; do
        for ((i = 0; i < 200; i++)); do alive "$init" || break; read -r -t 0.01 -u 9 _; done
    done
}
cmd_supervise() {
    set +e
    load_conf
    local name addr i=0 req f token action t next_check deadline owner_gone
    while read -r name addr; do i=$((i + 1)); HIDX[$name]=$i; done < "$STATE/hosts.tsv"
    local delay_us
    delay_us=$(awk -v d="$DELAY" 'BEGIN { printf "%d", d * 1000000 }')
    mkfifo "$STATE/tick" 2> /dev/null
    exec 9<> "$STATE/tick"                  # `read -t` on it sleeps without a fork
    sv_log "booting ${#HIDX[@]} hosts"
    while read -r name addr; do sv_boot "$name"; done < "$STATE/hosts.tsv"
    sv_log "all hosts started"
    deadline=$(($(now_us) + TTL * 1000000))
    next_check=0
    local pass_t
    while true; do
        # Requests found in one pass were made at about the same time: a reboot's delay runs
        # from then, not from when this loop got round to that host (real hosts reboot in
        # parallel; taking ten hosts down one after the other must not stagger their returns).
        pass_t=$(now_us)
        for req in "$STATE"/requests/*; do
            [[ -f $req ]] || continue
            f=${req##*/}; name=${f%%.*}; token=${f#*.}
            action=""; read -r action < "$req"; rm -f "$req"
            sv_log "$name $action"
            if [[ $name == _all ]]; then
                sv_shutdown_all
                : > "$STATE/acks/$f"
                sv_log "all hosts stopped, exiting"
                exit 0
            fi
            if [[ -z ${HIDX[$name]:-} ]]; then sv_log "request for unknown host $name"; continue; fi
            case $action in
            reboot)
                if [[ -n ${HPID[$name]} && $(host_quirk "$name") == no-return ]]; then
                    echo stopped > "$STATE/hosts/$name/status"; sv_kill "$name"
                    unset "UPAT[$name]"
                elif [[ -n ${HPID[$name]} ]]; then
                    echo rebooting > "$STATE/hosts/$name/status"; sv_kill "$name"
                    UPAT[$name]=$((pass_t + delay_us))
                fi ;;
            stop) # from the shims (poweroff, halt, shutdown) or `testbed.sh stop` (abrupt)
                echo stopped > "$STATE/hosts/$name/status"
                if [[ $token == cli* ]]; then sv_kill "$name" abrupt; else sv_kill "$name"; fi
                unset "UPAT[$name]" ;;
            start) [[ -z ${HPID[$name]} ]] && { unset "UPAT[$name]"; sv_boot "$name"; } ;;
            rekey) sv_rekey "$name" ;;
            *) sv_log "unknown action '$action'" ;;
            esac
            [[ $token == cli* ]] && : > "$STATE/acks/$f"
        done
        if ((${#UPAT[@]})); then
            t=$(now_us)
            for name in "${!UPAT[@]}"; do
                if ((t >= UPAT[$name])); then unset "UPAT[$name]"; sv_boot "$name"; sv_log "$name booted"; fi
            done
        fi
        t=$(now_us)
        if ((t >= next_check)); then
            next_check=$((t + 1000000))
            owner_gone=0
            if [[ -n $OWNER ]] && { ! alive "$OWNER" || [[ $(start_time "$OWNER") != "$OWNER_START" ]]; }; then owner_gone=1; fi
            if ((t >= deadline || owner_gone)); then
                if ((owner_gone)); then sv_log "owner $OWNER is gone"; else sv_log "ttl reached"; fi
                sv_log "stopping every host and removing the network"
                sv_shutdown_all
                teardown
                exit 0
            fi
        fi
        read -r -t 0.1 -u 9 _
    done
}

# ----------------------------------------------------------------------------- host init
# PID 1 of the host's PID namespace, inside its own mount, UTS and network namespaces.  Sets up
# the host's view of the machine, then becomes its sshd.
cmd_hostinit() {
    local name=$1 H
    load_conf
    H=$STATE/hosts/$name
    # shellcheck disable=SC1091
    source "$H/env"
    echo "$name" > /proc/sys/kernel/hostname
    ip -batch - <<EOF
link set lo up
link set eth0 addrgenmode none
addr replace $ADDR/16 dev eth0
link set eth0 up
EOF
    umount -l /run/netns 2> /dev/null || true      # drop our copies of every netns mount
    umount -l /sys && mount -t sysfs sysfs /sys      # /sys/class/net: this netns only
    mount -t tmpfs -o size=16m,mode=755 tmpfs /run
    mkdir -p /run/sshd /run/systemd/system /run/testbed/host /run/testbed/requests
    : > /run/testbed/published
    mount --bind "$H" /run/testbed/host
    mount --bind "$STATE/requests" /run/testbed/requests
    mount --bind "$STATE/published" /run/testbed/published
    case $FLAVOUR in *-atomic) : > /run/ostree-booted ;; esac
    # copy-on-write /etc and /var: what the host writes lands in hosts/NAME/etc and var
    mount -t overlay overlay -o "lowerdir=$STATE/layers/$FLAVOUR/etc:/etc,upperdir=$H/etc,workdir=$H/.work/etc" /etc
    mount -t overlay overlay -o "lowerdir=/var,upperdir=$H/var,workdir=$H/.work/var" /var
    mount -t overlay overlay -o "lowerdir=$STATE/layers/$FLAVOUR/usr:$STATE/layers/common/usr:/usr" /usr
    mount -t tmpfs -o size=1m,mode=755 tmpfs /usr/local     # not the machine's tools (docker, git...)
    mkdir -p /usr/local/bin /usr/local/sbin /usr/local/lib /usr/local/share
    mount --bind "$H/meminfo" /proc/meminfo
    mount --bind "$H/boot_id" /proc/sys/kernel/random/boot_id
    mount --bind "$H/root" /root
    # forget the testbeds' state tmpfs mounts (this one's included: what the host needs is bound
    # above; binds have a root other than "/"), so that another instance's `down` really frees
    # its memory, then take a private /tmp
    awk '{ for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i + 1) == "tmpfs" && $(i + 2) ~ /^testbed-/ && $4 == "/") print $5; break } }' \
        /proc/self/mountinfo | while read -r m; do umount -l "$m" 2> /dev/null || true; done
    mount --bind /run/testbed/host/tmp /tmp
    [[ -f /run/testbed/host/sshd.log ]] && mv -f /run/testbed/host/sshd.log /run/testbed/host/sshd.log.prev
    exec -a /usr/lib/systemd/systemd /usr/lib/systemd/systemd -D -f /run/testbed/host/sshd_config \
        -E /run/testbed/host/sshd.log
}

# ----------------------------------------------------------------------------- down
# Removes the network objects and mounts listed in STATE/created (veths, then netns, then the
# bridge).  Used by `down` and by the supervisor when its TTL runs out or its owner dies.
# While a state dir exists after `down`, its subnet is an `unreachable` route: a server still
# holding the hosts' addresses gets "no route to host" at once instead of sending their traffic
# out through the default gateway. STATE/unreachable-route records that the route is ours.
add_unreachable_route() {
    ip route replace unreachable "10.$NET.0.0/16" 2> /dev/null || return 0
    echo "10.$NET.0.0/16" > "$STATE/unreachable-route"
}
drop_unreachable_route() {
    [[ -f $STATE/unreachable-route ]] || return 0
    local net
    read -r net < "$STATE/unreachable-route"
    if [[ -n $(ip -4 route show root "$net" type unreachable 2> /dev/null) ]]; then
        ip route del unreachable "$net" 2> /dev/null || true
    fi
    rm -f "$STATE/unreachable-route"
}
teardown() {
    [[ -f $STATE/created ]] || return 0
    local kind obj
    {
        while read -r kind obj _; do [[ $kind == link ]] && echo "link del $obj"; done < "$STATE/created"
        while read -r kind obj _; do [[ $kind == netns ]] && echo "netns del $obj"; done < "$STATE/created"
        while read -r kind obj _; do [[ $kind == bridge ]] && echo "link del $obj"; done < "$STATE/created"
    } > "$STATE/ip-batch-down"
    [[ -s $STATE/ip-batch-down ]] && { ip -force -batch "$STATE/ip-batch-down" > /dev/null 2>&1 || true; }
    while read -r kind obj _; do
        [[ $kind == mount ]] && { umount -l "$obj" 2> /dev/null || true; }
    done < "$STATE/created"
    add_unreachable_route
    rm -f "$STATE/created" "$STATE/conf"
}
cmd_down() {
    local purge=0
    [[ ${1:-} == --purge ]] && purge=1
    check_env
    if [[ ! -f $STATE/created ]]; then
        if ((purge)); then
            drop_unreachable_route
            rm -rf "$STATE"
        fi
        return 0
    fi
    [[ -f $STATE/conf ]] && { load_conf; }
    local t0 spid="" i f pid
    t0=$(now_us)
    [[ -f $STATE/supervisor.pid ]] && read -r spid < "$STATE/supervisor.pid"
    if [[ -n $spid ]] && alive "$spid" && cmdline_has "$spid" _supervise "$STATE"; then
        echo shutdown > "$STATE/requests/.tmp._all" && mv -f "$STATE/requests/.tmp._all" "$STATE/requests/_all.cli$$"
        for ((i = 0; i < 150; i++)); do alive "$spid" || break; sleep 0.1; done
        if alive "$spid"; then kill -KILL "$spid" 2> /dev/null || true; fi
    fi
    # hosts left over (supervisor killed hard): kill by recorded PID, after checking what it is
    for f in "$STATE"/hosts/*/pid; do
        [[ -f $f ]] || continue
        read -r pid < "$f"
        if alive "$pid" && cmdline_has "$pid" _hostinit "$STATE"; then
            local init=""
            read -r init _ 2> /dev/null < "/proc/$pid/task/$pid/children" || true
            kill -KILL "$pid" ${init:+"$init"} 2> /dev/null || true
        fi
    done
    teardown
    if ((purge)); then
        drop_unreachable_route
        rm -rf "$STATE"
    else
        rm -rf "${STATE:?}"/{hosts,requests,acks,layers,tick,hosts.tsv,hosts.txt,known_hosts,known_hosts.new,ssh_config} \
            "$STATE"/{ip-batch,ip-batch-down,supervisor.pid,published}
    fi
    echo "testbed: down in $(secs_since "$t0")s ($STATE)" >&2
}

# ----------------------------------------------------------------------------- faults, misc
supervisor_alive() {
    local spid=""
    [[ -f $STATE/supervisor.pid ]] && read -r spid < "$STATE/supervisor.pid"
    alive "$spid" && cmdline_has "$spid" _supervise "$STATE"
}
request() { # action name: hand a request to the supervisor and wait until it has been carried out
    local token=cli$$x${EPOCHREALTIME/./} i
    supervisor_alive || die "supervisor not running (ttl reached or owner gone?); run up again"
    echo "$1" > "$STATE/requests/.tmp.$2.$token"
    mv -f "$STATE/requests/.tmp.$2.$token" "$STATE/requests/$2.$token"
    for ((i = 0; i < 300; i++)); do
        if [[ -f $STATE/acks/$2.$token ]]; then rm -f "$STATE/acks/$2.$token"; return 0; fi
        sleep 0.05
    done
    die "the supervisor did not carry out '$1 $2' within 15s"
}
cmd_wait() { # host [seconds]
    local name addr ok
    name=$(resolve "$1"); addr=$(addr_of_name "$name")
    ok=$(wait_banners "${2:-30}" "$addr")
    ((ok == 1)) || die "$name ($addr) did not answer within ${2:-30}s"
}
cmd_fault() { # action host
    load_conf
    local name addr
    name=$(resolve "$2")
    case $1 in
    reboot|stop) request "$1" "$name" ;;
    start) request start "$name"; cmd_wait "$name" 30 ;;
    rekey) rekey "$name" ;;
    esac
}
rekey() { # new host key; known_hosts stays as it was, known_hosts.new has the new key
    local name=$1 H=$STATE/hosts/$1 addr kt key _c a k i
    addr=$(addr_of_name "$name")
    rm -f "$H/new_key" "$H/new_key.pub"
    ssh-keygen -q -t ed25519 -N '' -C "$name" -f "$H/new_key"
    mv -f "$H/new_key.pub" "$H/ssh_host_ed25519_key.pub"
    mv -f "$H/new_key" "$H/ssh_host_ed25519_key"
    read -r kt key _c < "$H/ssh_host_ed25519_key.pub"
    [[ -f $STATE/known_hosts.new ]] || cp "$STATE/known_hosts" "$STATE/known_hosts.new"
    while read -r a k; do
        if [[ $a == "$addr" ]]; then echo "$a $kt $key"; else echo "$a $k"; fi
    done < "$STATE/known_hosts.new" > "$STATE/known_hosts.new.tmp"
    mv -f "$STATE/known_hosts.new.tmp" "$STATE/known_hosts.new"
    request rekey "$name"
    [[ $(< "$H/status") == up ]] || return 0
    for ((i = 0; i < 100; i++)); do         # until sshd serves the new key
        [[ $(ssh-keyscan -T 2 -t ed25519 "$addr" 2> /dev/null) == *" $key"* ]] && return 0
        sleep 0.1
    done
    die "$name does not serve its new host key"
}
cmd_quirk() { # host quirk: read by the host's shims and by the supervisor at its next reboot or boot
    load_conf
    local name
    name=$(resolve "$1")
    case $2 in
    none) rm -f "$STATE/hosts/$name/quirk" ;;
    ignore-reboot|no-return|keep-version) echo "$2" > "$STATE/hosts/$name/quirk" ;;
    *) die "unknown quirk '$2' (one of: none ignore-reboot no-return keep-version)" ;;
    esac
}
cmd_status() {
    load_conf
    local name addr H pid st
    printf '%-10s %-14s %-14s %-9s %5s %-8s %-8s %s\n' NAME ADDRESS FLAVOUR STATUS BOOTS VERSION STAGED MEM_MIB
    while read -r name addr; do
        H=$STATE/hosts/$name
        st=$(< "$H/status")
        if [[ $st == up ]]; then read -r pid < "$H/pid"; alive "$pid" || st=dead; fi
        printf '%-10s %-14s %-14s %-9s %5s %-8s %-8s %s\n' "$name" "$addr" "$(< "$H/flavour")" "$st" \
            "$(< "$H/boot_count")" "$(< "$H/version")" "$(< "$H/staged_version")" "$(< "$H/memory_mib")"
    done < "$STATE/hosts.tsv"
    supervisor_alive || echo "(supervisor not running)"
}
cmd_env() {
    load_conf
    local hosts
    hosts=$(tr '\n' ' ' < "$STATE/hosts.txt")
    printf 'export TESTBED_STATE=%q TESTBED_PREFIX=%q TESTBED_NET=%q\n' "$STATE" "$PFX" "$NET"
    printf 'TB_HOSTS=%q\nTB_KEY=%q\nTB_GATEWAY=%q\n' "${hosts% }" "$STATE/id_ed25519" "10.$NET.0.1"
}
cmd_demo() {
    cmd_up "$@"
    local first hosts
    first=$(head -n1 "$STATE/hosts.txt")
    hosts=$(tr '\n' ' ' < "$STATE/hosts.txt")
    hosts=${hosts% }
    # The README's quickstart with this testbed's values filled in (keep the two in step).
    cat <<EOF

Commissaire testbed: $(wc -l < "$STATE/hosts.txt") hosts are up.
  state dir      $STATE
  addresses      $STATE/hosts.txt   (name<TAB>address: $STATE/hosts.tsv)
  client key     $STATE/id_ed25519   (accepted by every host as root)
  host keys      $STATE/known_hosts
  log in         ssh -F $STATE/ssh_config root@$first    or    $SELF ssh $first uptime

Quickstart, with a server on 127.0.0.1:8000 (cargo run --release --bin commissaire-server),
commctl installed (cargo install --locked --path crates/commctl) and PW set to the admin
password the server printed at its first start:

  install -m 600 /dev/null ~/.commissaire.json
  printf '{"endpoint": "http://127.0.0.1:8000", "username": "admin", "password": "%s"}\n' "\$PW" > ~/.commissaire.json
  commctl network create overlay -t flannel_server -o address=10.$NET.0.1:8080
  commctl cluster create -n overlay prod
  for a in $hosts; do commctl host create \$a $STATE/id_ed25519 -c prod; done
  for i in \$(seq 60); do commctl cluster get prod -o json | grep -q '"status": "ok"' && break; sleep 2; done
  commctl cluster get prod
  commctl host list prod
  commctl host ssh $first -- uptime
  commctl cluster restart start prod --watch

The same through the API with curl:

  API=http://127.0.0.1:8000/api/v0
  curl -s -u admin:\$PW -X PUT \$API/network/overlay -d '{"type": "flannel_server", "options": {"address": "10.$NET.0.1:8080"}}'
  curl -s -u admin:\$PW -X PUT \$API/cluster/prod -d '{"network": "overlay"}'
  for a in $hosts; do curl -s -u admin:\$PW -X PUT \$API/host/\$a -d "{\"ssh_priv_key\": \"\$(base64 -w0 $STATE/id_ed25519)\", \"cluster\": \"prod\"}"; done
  curl -s -u admin:\$PW \$API/cluster/prod
  curl -s -u admin:\$PW -X PUT \$API/cluster/prod/restart -d '{"batch_size": "50%"}'
  curl -s -u admin:\$PW \$API/cluster/prod/restart

Then: $SELF status | reboot|stop|start|rekey HOST | publish VERSION | down
What each host did: $STATE/hosts/NAME/commands.log, files it wrote under $STATE/hosts/NAME/etc
EOF
}

case ${1:-} in
up) shift; cmd_up "$@" ;;
demo) shift; cmd_demo "$@" ;;
env) cmd_env ;;
down) shift; cmd_down "$@" ;;
list) load_conf; cat "$STATE/hosts.txt" ;;
status) cmd_status ;;
known-hosts) load_conf; cat "$STATE/known_hosts" ;;
reboot|stop|start|rekey) [[ -n ${2:-} ]] || die "$1 HOST"; cmd_fault "$1" "$2" ;;
quirk) [[ -n ${2:-} && -n ${3:-} ]] || die "quirk HOST none|ignore-reboot|no-return|keep-version"; cmd_quirk "$2" "$3" ;;
wait) [[ -n ${2:-} ]] || die "wait HOST [SECONDS]"; load_conf; cmd_wait "$2" "${3:-30}" ;;
publish) [[ -n ${2:-} ]] || die "publish VERSION"; load_conf; printf '%s\n' "$2" > "$STATE/published" ;;
ssh)
    shift; load_conf; h=$(resolve "${1:?HOST}"); shift
    exec ssh -F "$STATE/ssh_config" "root@$(addr_of_name "$h")" "$@" ;;
_supervise) STATE=$2; cmd_supervise ;;
_hostinit) STATE=$2; cmd_hostinit "$3" ;;
*) sed -n '2,36p' "$SELF" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
