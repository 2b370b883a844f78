#!/usr/bin/env bash
# Benchmark: a rolling restart of a simulated fleet against the ideal measured on the same
# fleet.  Not a test.  See bench/README.md.
#
# Starts a testbed of HOSTS (50) real sshd hosts (testbed/testbed.sh, reboot delay
# REBOOT_DELAY, 2 s), then:
#   1. reference: reboots hosts the plain way (OpenSSH runs `systemctl reboot`, the hosts'
#      reboot command) and times each one from issuing the command until sshd accepts a
#      connection again AND answers with a new boot id: the per-reboot outage, which contains
#      the reboot delay.  REF_PARALLEL (5) hosts at once, REF_ROUNDS (2) rounds; the median is
#      the outage of the ideal.  Also REF_BATCH_ROUNDS (2) rounds of BATCH hosts at once, whose
#      slowest host gives a batch-level reference (the testbed serialises reboots a little).
#   2. the release commissaire-server (--insecure-no-auth, loopback, temporary data dir, a
#      large --watcher-interval), network + cluster, PUT every host, wait until all are
#      `disassociated`, then PUT /api/v0/cluster/c/restart {"batch_size": BATCH} and time it
#      until the record's status is `finished` (polled every 0.1 s).
# and prints wall, ideal = ceil(HOSTS/BATCH) x median outage, the ratio against the 1.10
# target, and per-batch timings from the record (with, per host, when the reboot command ran
# and when the host booted, from the testbed's commands.log and boot_id files).
# Exits non-zero if the restart did not finish with every host restarted exactly once (the
# ratio is reported, not enforced).
#
# Needs root (network namespaces).  Network: only loopback and the testbed's own 10.NET.x.y
# addresses.  Every loop is bounded; the trap stops the server (by PID) and removes the
# testbed (down --purge); the testbed also dies with this script (--owner).
#
# Environment: HOSTS (50), BATCH (10), REBOOT_DELAY (2), REF_PARALLEL (5), REF_ROUNDS (2),
# REF_BATCH_ROUNDS (2; 0 skips), REGISTER_TIMEOUT (600 s), RESTART_TIMEOUT (900 s),
# LOGGING (server log filter, info), TESTBED_STATE (/tmp/commissaire-bench-rolling),
# TESTBED_PREFIX (br), TESTBED_NET (251), CARGO_TARGET_DIR (/var/tmp/commissaire-bench-target),
# SERVER_BIN (use this commissaire-server binary instead of building one), KEEP_LOGS (0; 1
# keeps the work dir with the server log and the record).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

[ "$(id -u)" -eq 0 ] || { echo "bench/rolling.sh: needs root (the testbed uses network namespaces)" >&2; exit 1; }

HOSTS=${HOSTS:-50}
BATCH=${BATCH:-10}
REBOOT_DELAY=${REBOOT_DELAY:-2}
REF_PARALLEL=${REF_PARALLEL:-5}
REF_ROUNDS=${REF_ROUNDS:-2}
REF_BATCH_ROUNDS=${REF_BATCH_ROUNDS:-2}
REGISTER_TIMEOUT=${REGISTER_TIMEOUT:-600}
RESTART_TIMEOUT=${RESTART_TIMEOUT:-900}
LOGGING=${LOGGING:-info}
KEEP_LOGS=${KEEP_LOGS:-0}
TARGET_RATIO=1.10
export TESTBED_STATE=${TESTBED_STATE:-/tmp/commissaire-bench-rolling}
export TESTBED_PREFIX=${TESTBED_PREFIX:-br}
export TESTBED_NET=${TESTBED_NET:-251}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/commissaire-bench-target}
testbed=$repo/testbed/testbed.sh

for v in HOSTS BATCH REF_PARALLEL REF_ROUNDS REF_BATCH_ROUNDS REGISTER_TIMEOUT RESTART_TIMEOUT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "bench/rolling.sh: $v must be a whole number" >&2; exit 1; }
done
((HOSTS >= 1 && BATCH >= 1 && REF_PARALLEL >= 1 && REF_ROUNDS >= 1)) || { echo "bench/rolling.sh: HOSTS, BATCH, REF_PARALLEL, REF_ROUNDS must be >= 1" >&2; exit 1; }
[[ $REBOOT_DELAY =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "bench/rolling.sh: REBOOT_DELAY: seconds" >&2; exit 1; }

log() { printf '== %s\n' "$*" >&2; }
# alive PID: running and not a zombie (kill -0 succeeds on zombies)
alive() {
  local st
  read -r st 2>/dev/null <"/proc/$1/stat" || return 1
  st=${st##*) }
  [ "${st:0:1}" != Z ]
}

for t in ssh sshd curl python3 timeout xargs; do
  command -v "$t" >/dev/null || { echo "bench/rolling.sh: $t is missing" >&2; exit 1; }
done

if [ -n "${SERVER_BIN:-}" ]; then
  server_bin=$SERVER_BIN
  log "using $server_bin (SERVER_BIN: no build)"
else
  log "building (release, nice 10): commissaire-server in $CARGO_TARGET_DIR"
  nice -n 10 cargo build --release -q -p commissaire-server
  server_bin=$CARGO_TARGET_DIR/release/commissaire-server
fi
[ -x "$server_bin" ] || { echo "bench/rolling.sh: $server_bin is not an executable" >&2; exit 1; }

# ------------------------------------------------------------------------------- cleanup
work=$(mktemp -d /tmp/commissaire-bench-rolling.XXXXXX)
server_pid=""
stop_server() {
  if [ -n "$server_pid" ] && alive "$server_pid"; then
    kill "$server_pid"
    for _ in $(seq 1 50); do alive "$server_pid" || break; sleep 0.1; done
    alive "$server_pid" && kill -KILL "$server_pid"
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
}
cleanup() {
  set +e
  stop_server
  "$testbed" down --purge >/dev/null 2>&1 || echo "bench/rolling.sh: testbed down failed; run: TESTBED_STATE=$TESTBED_STATE $testbed down --purge" >&2
  if [ "$KEEP_LOGS" = 1 ]; then echo "work dir kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------------------- helper
# One Python helper for the parts that need sub-second timing or JSON: the reference reboots,
# the registration, the timed restart and the report.
cat >"$work/rolling.py" <<'PY'
import json, math, os, socket, statistics, subprocess, sys, threading, time
import urllib.request, urllib.error
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

STATE = os.environ["TESTBED_STATE"]
KEY, KNOWN = f"{STATE}/id_ed25519", f"{STATE}/known_hosts"
SSH = ["ssh", "-F", "/dev/null", "-i", KEY, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
       "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={KNOWN}",
       "-o", "ConnectTimeout=2", "-o", "ControlMaster=no", "-o", "LogLevel=ERROR", "-l", "root"]

def hosts():  # [(name, address)] in testbed order
    return [tuple(l.split("\t")) for l in open(f"{STATE}/hosts.tsv").read().split("\n") if l]

def name_of():
    return {a: n for n, a in hosts()}

def boot_count(name):
    return int(open(f"{STATE}/hosts/{name}/boot_count").read().strip() or 0)

def boot_mtime(name):  # the supervisor writes boot_id when it boots the host
    return os.stat(f"{STATE}/hosts/{name}/boot_id").st_mtime

def reboot_logged(name, boot_id):
    """Time the host's reboot shim ran in boot `boot_id` (commands.log), or None."""
    t = None
    try:
        for line in open(f"{STATE}/hosts/{name}/commands.log"):
            f = line.split()
            if len(f) >= 3 and f[1] == boot_id and (f[2:4] == ["systemctl", "reboot"] or f[2] == "reboot"):
                t = float(f[0])
    except OSError:
        pass
    return t

def ssh_boot_id(addr, timeout=5):
    try:
        r = subprocess.run(SSH + [addr, "cat /proc/sys/kernel/random/boot_id"],
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None

def banner(addr):
    """A fresh TCP connection to port 22 that gets an SSH banner.  The connect is bounded by
    0.1 s so that a SYN lost while the host is off the network costs 0.1 s, not a TCP
    retransmission timeout (1 s, then 3 s...)."""
    try:
        s = socket.create_connection((addr, 22), timeout=0.1)
    except OSError:
        return False
    try:
        s.settimeout(2)
        return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False
    finally:
        s.close()

def ts(s):  # API timestamp (UTC, microseconds) -> unix time
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp() if s else None

# ---------------------------------------------------------------- reference reboots
def reboot_one(name, addr, start, out):
    before = ssh_boot_id(addr)
    try:
        start.wait(30)  # every thread has its boot id: issue the reboots together
    except threading.BrokenBarrierError:
        pass
    if not before:
        out[name] = {"error": "no boot id before"}; return
    t0 = time.time()
    try:
        # returns when the host goes down under the command (session closed by the remote host)
        subprocess.run(SSH + [addr, "systemctl reboot"], capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        pass
    t_ret = time.time()
    deadline = t0 + 60
    while time.time() < deadline:
        if banner(addr):
            t_banner = time.time()
            b = ssh_boot_id(addr)
            if b and b != before:
                t_up = time.time()
                out[name] = {"address": addr, "t0": t0, "ssh_returned": t_ret - t0, "outage": t_up - t0,
                             "cmd": reboot_logged(name, before), "boot": boot_mtime(name),
                             "t_banner": t_banner, "t_up": t_up}
                return
        time.sleep(0.02)
    out[name] = {"error": "not back with a new boot id within 60 s"}

def cmd_ref(parallel, rounds, batch, batch_rounds, out_file):
    hs = hosts()
    nxt = [0]
    def pick(k):
        sel = [hs[(nxt[0] + i) % len(hs)] for i in range(k)]
        nxt[0] += k
        return sel
    res = {"single": [], "batch": []}
    ok = True
    for kind, k, rs in (("single", parallel, rounds), ("batch", batch, batch_rounds)):
        for r in range(rs):
            sel = pick(min(k, len(hs)))
            out, start = {}, threading.Barrier(len(sel))
            th = [threading.Thread(target=reboot_one, args=(n, a, start, out)) for n, a in sel]
            for t in th: t.start()
            for t in th: t.join(120)
            rows = [out.get(n, {"error": "no result"}) for n, _ in sel]
            bad = [(n, r_.get("error")) for (n, _), r_ in zip(sel, rows) if "error" in r_]
            if bad:
                print(f"reference {kind} round {r + 1}: failed: {bad}", file=sys.stderr); ok = False
                continue
            t0 = min(x["t0"] for x in rows)
            span = max(x["t_up"] for x in rows) - t0
            res[kind].append({"hosts": rows, "span": span})
            outs = sorted(x["outage"] for x in rows)
            print(f"  reference, {len(rows)} hosts at once (round {r + 1}): outage per host "
                  f"min {outs[0]:.2f} / median {statistics.median(outs):.2f} / max {outs[-1]:.2f} s; "
                  f"all back {span:.2f} s after the first command", file=sys.stderr)
            time.sleep(1)
    json.dump(res, open(out_file, "w"))
    return 0 if ok else 1

# ---------------------------------------------------------------- API
BASE = None
def api(method, path, body=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")

def cmd_register(timeout):
    gw = f"10.{os.environ['TESTBED_NET']}.0.1"
    for path, body in (("/api/v0/network/fs", {"type": "flannel_server", "options": {"address": f"{gw}:8080"}}),
                       ("/api/v0/cluster/c", {"network": "fs"})):
        code, b = api("PUT", path, body)
        if code != 201:
            print(f"PUT {path}: {code} {b}", file=sys.stderr); return 1
    import base64
    key = base64.b64encode(open(KEY, "rb").read()).decode()
    t0 = time.time()
    def put(a):
        return api("PUT", f"/api/v0/host/{a}", {"ssh_priv_key": key, "cluster": "c"})[0]
    with ThreadPoolExecutor(8) as ex:
        codes = list(ex.map(put, [a for _, a in hosts()]))
    if codes.count(201) != len(codes):
        print(f"host PUTs: {codes.count(201)} of {len(codes)} answered 201: {sorted(set(codes))}", file=sys.stderr); return 1
    t_put = time.time()
    deadline = t0 + timeout
    summary = ""
    while time.time() < deadline:
        code, hl = api("GET", "/api/v0/hosts")
        if code == 200:
            c = {}
            for h in hl: c[h.get("status")] = c.get(h.get("status"), 0) + 1
            summary = " ".join(f"{k}={v}" for k, v in sorted(c.items()))
            if c.get("disassociated") == len(codes):
                print(f"  {len(codes)} hosts PUT in {t_put - t0:.2f} s, all disassociated after {time.time() - t0:.2f} s", file=sys.stderr)
                return 0
            if c.get("failed"):
                bad = [(h["address"], h.get("status_reason", "")[:200]) for h in hl if h.get("status") == "failed"]
                print(f"  hosts failed: {bad[:5]}", file=sys.stderr); return 1
        time.sleep(0.25)
    print(f"  not all disassociated within {timeout} s: {summary}", file=sys.stderr)
    return 1

def proc_cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

def cmd_restart(batch, timeout, pid, out_file):
    counts0 = {a: boot_count(n) for n, a in hosts()}
    cpu0 = proc_cpu(pid)
    t0 = time.time()
    code, op = api("PUT", "/api/v0/cluster/c/restart", {"batch_size": batch})
    t_put = time.time()
    if code != 201:
        print(f"PUT restart: {code} {op}", file=sys.stderr); return 1
    last, polls, t1 = op, 0, None
    deadline = t0 + timeout
    while time.time() < deadline:
        time.sleep(0.1)
        code, o = api("GET", "/api/v0/cluster/c/restart", timeout=10)
        polls += 1
        if code == 200:
            last = o
            if last["status"] not in ("in_process", "paused"):
                t1 = time.time(); break
    cpu1 = proc_cpu(pid)
    counts1 = {a: boot_count(n) for n, a in hosts()}
    json.dump({"t0": t0, "t_put": t_put, "t1": t1, "polls": polls, "record": last,
               "counts0": counts0, "counts1": counts1, "server_cpu": cpu1 - cpu0,
               "timed_out": t1 is None}, open(out_file, "w"))
    return 0

# ---------------------------------------------------------------- report
def fmt_range(v):
    v = [x for x in v if x is not None]
    if not v: return "-"
    return f"{min(v):5.2f}-{max(v):5.2f}"

def cmd_report(n, batch, delay, target, ref_file, run_file):
    ref, run = json.load(open(ref_file)), json.load(open(run_file))
    op, names = run["record"], name_of()
    ok = True
    singles = [h for rnd in ref["single"] for h in rnd["hosts"]]
    outages = sorted(h["outage"] for h in singles)
    med = statistics.median(outages)
    nb = math.ceil(n / batch)
    ideal = nb * med
    print()
    print(f"rolling restart: {n} testbed hosts, batch_size {batch}, reboot delay {delay} s "
          f"({nb} batches); {os.cpu_count()} cores shared by the server and every host")
    print()
    print(f"reference (same fleet, before the server started): OpenSSH runs `systemctl reboot`; outage = from")
    print(f"  issuing it until sshd accepts a connection again and answers with a new boot id.  It already")
    print(f"  contains the {delay} s reboot delay (not added again).")
    print(f"  {len(singles)} reboots, {len(ref['single'])} rounds of {len(ref['single'][0]['hosts'])} hosts at once: "
          f"min {outages[0]:.2f} / median {med:.2f} / max {outages[-1]:.2f} s")
    def phases(hs, start_key):
        cmd = [h["cmd"] - h[start_key] for h in hs if h.get("cmd")]
        down = [h["boot"] - h["cmd"] for h in hs if h.get("cmd")]
        up = [h["t_up"] - h["boot"] for h in hs]
        return cmd, down, up
    ref_c, ref_d, ref_u = (statistics.median(x) for x in phases(singles, "t0"))
    print(f"  of which: command -> reboot shim ran {ref_c:.2f} s, shim -> booted "
          f"{ref_d:.2f} s, booted -> answering with the new boot id {ref_u:.2f} s (medians)")
    host_only = sorted(h["t_banner"] - h["cmd"] for h in singles if h.get("cmd"))
    ideal_h = nb * statistics.median(host_only) if host_only else None
    if host_only:
        print(f"  host-only outage (reboot shim ran -> sshd serves its banner again; no SSH client costs): "
              f"median {statistics.median(host_only):.2f} s")
    ideal_b = None
    if ref.get("batch"):
        spans = sorted(r["span"] for r in ref["batch"])
        ideal_b = nb * statistics.median(spans)
        print(f"  {len(spans)} rounds of {len(ref['batch'][0]['hosts'])} hosts at once (a whole batch): all back after "
              + ", ".join(f"{s:.2f}" for s in spans) + " s")
    print(f"ideal = ceil({n}/{batch}) x median outage = {nb} x {med:.2f} s = {ideal:.2f} s")
    if ideal_h:
        print(f"host-only ideal = {nb} x median host-only outage = {ideal_h:.2f} s (a lower bound: no controller "
              f"can issue a reboot or see a host back in zero time)")
    if ideal_b:
        print(f"batch-level ideal = {nb} x median time for a whole batch to be back = {ideal_b:.2f} s"
              f" (the testbed's supervisor takes reboots one after the other)")
    print()

    # ---- checks
    status = op.get("status")
    restarted = set(op.get("restarted") or [])
    allh = set(names)
    if run["timed_out"]:
        print(f"FAILED: the restart did not end within the timeout (status {status})"); ok = False
    if status != "finished":
        print(f"FAILED: status {status!r} reason {op.get('reason')!r} failed {op.get('failed')}"); ok = False
    if restarted != allh:
        print(f"FAILED: restarted lists {len(restarted)} of {len(allh)} hosts; missing {sorted(allh - restarted)[:10]}"); ok = False
    wrong = {a: run["counts1"][a] - run["counts0"][a] for a in allh if run["counts1"][a] - run["counts0"][a] != 1}
    if wrong:
        print(f"FAILED: boot count did not go up by exactly 1 on {len(wrong)} hosts: {dict(list(wrong.items())[:10])}"); ok = False
    else:
        print(f"checks: status finished, {len(restarted)}/{len(allh)} in restarted, every boot count +1 exactly")

    t0, t1 = run["t0"], run["t1"]
    if t1 is None:
        return 1
    wall = t1 - t0
    st, fi = ts(op.get("started_at")), ts(op.get("finished_at"))
    print(f"wall: {wall:.2f} s (PUT restart -> GET sees `finished`, polled every 0.1 s, {run['polls']} polls); "
          f"record started_at -> finished_at {fi - st:.2f} s; server CPU {run['server_cpu']:.2f} s")
    ratio = wall / ideal
    print(f"ideal: {ideal:.2f} s   ratio wall/ideal: {ratio:.2f}x   target <= {target:.2f}x: "
          f"{'MET' if ratio <= target and ok else 'NOT MET'}")
    if ideal_h or ideal_b:
        print("(" + "; ".join(x for x in (
            f"against the host-only ideal {ideal_h:.2f} s: {wall / ideal_h:.2f}x" if ideal_h else "",
            f"against the batch-level ideal {ideal_b:.2f} s: {wall / ideal_b:.2f}x" if ideal_b else "") if x) + ")")

    # ---- per batch, from the record's per-host started_at / finished_at
    hp = op.get("hosts", {})
    batches = {}
    for a, p in hp.items():
        batches.setdefault(p.get("started_at", ""), []).append(a)
    order = sorted((ts(k), v) for k, v in batches.items() if k)
    rows, prev_end = [], st
    print()
    print("per batch (seconds; host ranges are min-max over the batch, relative to the batch's start):")
    print(f"{'batch':>5} {'hosts':>5} {'start':>7} {'gap':>6} {'reboot cmd ran':>15} {'booted':>13} {'done':>13} {'span':>6}")
    pre, down, post, spans, gaps, per_host = [], [], [], [], [], []
    for i, (bs, addrs) in enumerate(order):
        cmd, boot, done = [], [], []
        for a in addrs:
            p, nm = hp[a], names.get(a)
            c = reboot_logged(nm, p.get("boot_id_before", "")) if nm else None
            b = boot_mtime(nm) if nm else None
            f = ts(p.get("finished_at"))
            per_host.append({"batch": i + 1, "address": a, "name": nm, "batch_start": bs, "reboot_cmd": c,
                             "booted": b, "done": f, "state": p.get("state")})
            cmd.append(c - bs if c else None); boot.append(b - bs if b else None); done.append(f - bs if f else None)
            if c: pre.append(c - bs)
            if c and b: down.append(b - c)
            if b and f: post.append(f - b)
        span = max(x for x in done if x is not None)
        gap = bs - prev_end
        gaps.append(gap); spans.append(span)
        print(f"{i + 1:>5} {len(addrs):>5} {bs - st:>7.2f} {gap:>6.2f} {fmt_range(cmd):>15} {fmt_range(boot):>13} {fmt_range(done):>13} {span:>6.2f}")
        prev_end = bs + span
    tail = fi - prev_end
    json.dump(per_host, open(os.path.join(os.path.dirname(run_file), "per-host.json"), "w"), indent=1)
    print(f"start = since the record's started_at; gap = since the previous batch's last host was done "
          f"(first row: since started_at); last host done -> finished_at {tail:.2f} s; "
          f"PUT -> started_at {st - t0:.2f} s; finished_at -> seen by the poll {t1 - fi:.2f} s")
    print()
    print("where the time goes (medians per host; reference in brackets):")
    print(f"  batch start -> reboot shim ran   {statistics.median(pre):.2f} s   [{ref_c:.2f} s: one ssh running the command]")
    print(f"  reboot shim -> host booted       {statistics.median(down):.2f} s   [{ref_d:.2f} s]")
    print(f"  host booted -> host done         {statistics.median(post):.2f} s   [{ref_u:.2f} s: booted -> new boot id read]")
    print(f"  per batch: span mean {statistics.mean(spans):.2f} s (max {max(spans):.2f}), gap between batches mean "
          f"{statistics.mean(gaps[1:]) if len(gaps) > 1 else 0:.2f} s; sum of spans {sum(spans):.2f} + gaps {sum(gaps):.2f} "
          f"+ tail {tail:.2f} = {sum(spans) + sum(gaps) + tail:.2f} s")
    return 0 if ok else 1

if __name__ == "__main__":
    cmd, a = sys.argv[1], sys.argv[2:]
    if len(a) and a[0].startswith("http"):
        BASE, a = a[0], a[1:]
    if cmd == "ref": sys.exit(cmd_ref(int(a[0]), int(a[1]), int(a[2]), int(a[3]), a[4]))
    if cmd == "register": sys.exit(cmd_register(float(a[0])))
    if cmd == "restart": sys.exit(cmd_restart(int(a[0]), float(a[1]), int(a[2]), a[3]))
    if cmd == "report": sys.exit(cmd_report(int(a[0]), int(a[1]), a[2], float(a[3]), a[4], a[5]))
    sys.exit(f"unknown command {cmd}")
PY
py() { python3 "$work/rolling.py" "$@"; }

# ------------------------------------------------------------------------------- the fleet
log "starting the testbed: $HOSTS hosts, reboot delay $REBOOT_DELAY s (state $TESTBED_STATE, prefix $TESTBED_PREFIX, 10.$TESTBED_NET.0.0/16)"
"$testbed" down --purge >/dev/null 2>&1 || true # a leftover of an interrupted run
"$testbed" up "$HOSTS" --delay "$REBOOT_DELAY" --owner $$ --ttl 3600 >&2
hosts_file=$TESTBED_STATE/hosts.txt
[ "$(grep -c . "$hosts_file")" -eq "$HOSTS" ] || { echo "bench/rolling.sh: expected $HOSTS hosts in $hosts_file" >&2; exit 1; }

ssh_opts=(-F /dev/null -i "$TESTBED_STATE/id_ed25519" -o IdentitiesOnly=yes -o BatchMode=yes
  -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$TESTBED_STATE/known_hosts"
  -o ConnectTimeout=30 -o ControlMaster=no -o LogLevel=ERROR -l root)
log "warm-up: ssh true on every host"
timeout 300 xargs -P 10 -I{} ssh "${ssh_opts[@]}" {} true <"$hosts_file" ||
  { echo "bench/rolling.sh: some hosts do not answer ssh (warm-up)" >&2; exit 1; }

log "reference: plain reboots, $REF_PARALLEL hosts at once x $REF_ROUNDS rounds, then $BATCH at once x $REF_BATCH_ROUNDS"
py ref "$REF_PARALLEL" "$REF_ROUNDS" "$BATCH" "$REF_BATCH_ROUNDS" "$work/ref.json"

# ------------------------------------------------------------------------------- the server
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$server_bin" --no-config-file --data-dir "$work/data" -i 127.0.0.1 -p "$port" --insecure-no-auth \
  --watcher-interval 86400 --logging "$LOGGING" >"$work/server.log" 2>&1 &
server_pid=$!
base=http://127.0.0.1:$port
for _ in $(seq 1 100); do curl -sf "$base/api/v0/status" >/dev/null && break; sleep 0.1; done
curl -sf "$base/api/v0/status" >/dev/null || { echo "server did not start:" >&2; tail -20 "$work/server.log" >&2; exit 1; }

log "registering $HOSTS hosts in cluster c (network fs: flannel_server), waiting until all are disassociated"
py register "$base" "$REGISTER_TIMEOUT" || { tail -30 "$work/server.log" >&2; exit 1; }
sleep 2 # let the registration's tail (store writes, events) settle

log "PUT /api/v0/cluster/c/restart {\"batch_size\": $BATCH}; polling every 0.1 s until it ends (at most $RESTART_TIMEOUT s)"
py restart "$base" "$BATCH" "$RESTART_TIMEOUT" "$server_pid" "$work/run.json"
rc=0
py report "$HOSTS" "$BATCH" "$REBOOT_DELAY" "$TARGET_RATIO" "$work/ref.json" "$work/run.json" || rc=$?
if [ "$rc" != 0 ]; then
  echo "--- server log (tail)" >&2
  tail -40 "$work/server.log" >&2
fi
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
exit "$rc"
