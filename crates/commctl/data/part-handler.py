#part-handler
# Commissaire cloud-init part handler.
#
# cloud-init runs this at first boot for the text/x-commissaire-host part of the user-data
# written by `commctl user-data`. It makes sure the host can be reached over SSH with a key
# (creating the key and the remote user when needed), then registers the host with the
# Commissaire server: PUT <endpoint>/api/v0/host with the private key, authenticated by the
# registration token in the part (a bearer token that can do nothing but register hosts).
# The server takes the host's address from the connection unless the part names one.
import base64
import json
import os
import pwd
import subprocess
import time
import urllib.error
import urllib.request

handler_version = 3

CONTENT_TYPE = "text/x-commissaire-host"


def list_types():
    return [CONTENT_TYPE]


def handle_part(data, ctype, filename, payload, frequency=None):
    if ctype != CONTENT_TYPE:
        return
    register(json.loads(payload))


def _log(msg):
    print("commissaire: " + msg, flush=True)


def _ensure_user(user):
    if user == "root":
        return
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.check_call(["useradd", "-m", user])
    path = "/etc/sudoers.d/" + user
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write("%s    ALL=NOPASSWD: ALL\n" % user)
        os.chmod(path, 0o440)


def _ensure_key(cfg):
    user = cfg.get("remote_user", "root")
    home = pwd.getpwnam(user).pw_dir
    key_path = cfg.get("ssh_key_path") or os.path.join(home, ".ssh", "id_commissaire")
    auth_path = cfg.get("authorized_keys_path") or os.path.join(home, ".ssh", "authorized_keys")
    for d in {os.path.dirname(key_path), os.path.dirname(auth_path)}:
        os.makedirs(d, mode=0o700, exist_ok=True)
    if not os.path.exists(key_path):
        subprocess.check_call(["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f", key_path])
    with open(key_path + ".pub") as f:
        public = f.read().strip()
    existing = ""
    if os.path.exists(auth_path):
        with open(auth_path) as f:
            existing = f.read()
    if public not in existing:
        with open(auth_path, "a") as f:
            if existing and not existing.endswith("\n"):
                f.write("\n")
            f.write(public + "\n")
    os.chmod(auth_path, 0o600)
    info = pwd.getpwnam(user)
    for p in (key_path, key_path + ".pub", auth_path, os.path.dirname(auth_path)):
        os.chown(p, info.pw_uid, info.pw_gid)
    if os.path.exists("/sbin/restorecon"):
        subprocess.call(["/sbin/restorecon", "-R", os.path.dirname(auth_path)])
    with open(key_path, "rb") as f:
        return base64.b64encode(f.read()).decode("ascii")


def register(cfg):
    endpoint = cfg["endpoint"].rstrip("/")
    user = cfg.get("remote_user", "root")
    _ensure_user(user)
    body = {"remote_user": user, "ssh_priv_key": _ensure_key(cfg)}
    for key in ("cluster", "address"):
        if cfg.get(key):
            body[key] = cfg[key]
    req = urllib.request.Request(
        endpoint + "/api/v0/host",
        data=json.dumps(body).encode("utf-8"),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    # A registration token (commctl user-data creates one): it can only register hosts.
    if cfg.get("registration_token"):
        req.add_header("Authorization", "Bearer " + cfg["registration_token"])
    # The server may still be starting, or the network coming up: retry, but not forever.
    for attempt in range(10):
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                _log("registered with %s (HTTP %d)" % (endpoint, resp.status))
                return
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")
            if e.code < 500:
                _log("registration refused (HTTP %d): %s" % (e.code, detail))
                raise
            _log("server error (HTTP %d), retrying: %s" % (e.code, detail))
        except OSError as e:
            _log("cannot reach %s, retrying: %s" % (endpoint, e))
        time.sleep(min(30, 2 ** attempt))
    raise RuntimeError("could not register with " + endpoint)
