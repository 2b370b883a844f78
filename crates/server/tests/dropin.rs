//! A drop-in for the original's operators: the configuration files its documentation prints
//! start this server (and the scaled-out services) unchanged but for addresses and paths;
//! its enums, bootstrap template variables and status answers are the ones its scripts read.
//!
//! Real components throughout: etcd (also with TLS and client certificates), Redis, and
//! testbed hosts (sshd in network namespaces) for the bootstrap tests.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use testsupport::redis::RedisServer;
use testsupport::testbed::{Testbed, TestbedOptions};
use testsupport::{EtcdServer, free_port};

/// The password of the seeds' example user `a` (its hash is printed in the walkthrough).
const SEED_USER: (&str, &str) = ("a", "a");
/// The walkthrough's bcrypt hash of that password, verbatim.
const SEED_HASH: &str = "$2a$12$GlBCEIwz85QZUCkWYj11he6HaRHufzIvwQjlKeu7Rwmqi/mWOpRXK";

/// A process started by a test, killed by its PID when dropped.
struct Proc {
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .env_remove("RUST_LOG")
            .env_remove("ETCD_MACHINES")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn");
        Proc {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(Some(_))))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `commissaire-server -c FILE` with `config` as the file (data directory on the command
/// line, so the file stays as printed).
fn server_with(dir: &Path, name: &str, config: &str, extra: &[&str]) -> Proc {
    let file = dir.join(format!("{name}.conf"));
    std::fs::write(&file, config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_commissaire-server"));
    cmd.arg("-c")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.join(format!("{name}-data")))
        .args(extra);
    Proc::spawn(cmd, dir.join(format!("{name}.log")))
}

/// Waits (bounded) until `GET {base}/api/v0/status` answers 200; panics with the log if the
/// process exits or does not answer in time.
async fn wait_status(p: &mut Proc, client: &reqwest::Client, base: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(!p.exited(), "the server exited:\n{}", p.log());
        if let Ok(Ok(r)) = tokio::time::timeout(
            Duration::from_secs(3),
            client.get(format!("{base}/api/v0/status")).send(),
        )
        .await
            && r.status() == 200
        {
            return r.json().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no status within 60 s:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files
/// in `dir`: (ca, server cert, server key, client cert, client key, server bundle).
struct Pki {
    ca: PathBuf,
    server: PathBuf,
    server_key: PathBuf,
    client: PathBuf,
    client_key: PathBuf,
    /// Server certificate and key in one file, as `tls-pemfile` takes them.
    bundle: PathBuf,
    ca_pem: String,
}

fn pki(dir: &Path) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "drop-in test CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(params, ca_key);
    let leaf = |cn: &str, sans: &[&str], eku: Vec<ExtendedKeyUsagePurpose>| {
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = eku;
        (p.signed_by(&key, &issuer).unwrap(), key)
    };
    let (server, server_key) = leaf(
        "localhost",
        &["127.0.0.1", "localhost"],
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    );
    let (client, client_key) = leaf(
        "commissaire",
        &[],
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    );
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    Pki {
        ca: write("ca.pem", ca.pem()),
        server: write("server.crt", server.pem()),
        server_key: write("server.key", server_key.serialize_pem()),
        client: write("etcd_clientside.crt", client.pem()),
        client_key: write("etcd_clientside.key", client_key.serialize_pem()),
        bundle: write(
            "server.pem",
            format!("{}{}", server.pem(), server_key.serialize_pem()),
        ),
        ca_pem: ca.pem(),
    }
}

/// An etcd serving clients over TLS only, requiring client certificates signed by the CA.
fn tls_etcd(dir: &Path, pki: &Pki) -> (Proc, String) {
    let data = dir.join("etcd-tls");
    for _ in 0..3 {
        let (client, peer) = (free_port(), free_port());
        let url = format!("https://127.0.0.1:{client}");
        let mut cmd = Command::new("/usr/bin/etcd");
        cmd.arg("--name")
            .arg("tls")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen-client-urls")
            .arg(&url)
            .arg("--advertise-client-urls")
            .arg(&url)
            .arg("--listen-peer-urls")
            .arg(format!("http://127.0.0.1:{peer}"))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://127.0.0.1:{peer}"))
            .arg("--initial-cluster")
            .arg(format!("tls=http://127.0.0.1:{peer}"))
            .arg("--cert-file")
            .arg(&pki.server)
            .arg("--key-file")
            .arg(&pki.server_key)
            .arg("--trusted-ca-file")
            .arg(&pki.ca)
            .arg("--client-cert-auth");
        let mut p = Proc::spawn(cmd, dir.join("etcd-tls.log"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && !p.exited() {
            if std::net::TcpStream::connect(("127.0.0.1", client)).is_ok() {
                return (p, url);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = std::fs::remove_dir_all(&data);
    }
    panic!("the TLS etcd did not start");
}

fn warnings_naming<'a>(log: &'a str, key: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains("WARN") && l.contains(key))
        .collect()
}

/// Every configuration example in the original's documentation, copied with only addresses and
/// paths replaced, starts the server (and, for the scaled-out shape, the storage service) and
/// serves with the example's own credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_configuration_example_of_the_seeds_starts_and_serves() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = pki(d);
    let users = d.join("users.json");
    std::fs::write(&users, json!({"a": {"hash": SEED_HASH}}).to_string()).unwrap();
    let redis = RedisServer::start();
    let etcd = EtcdServer::start();
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let http = reqwest::Client::new();
    let p = |path: &Path| path.display().to_string();

    // "REST Configuration" (and the same file again in the walkthroughs): TLS, a bus, the
    // users file, self-auths for the original's secrets endpoint.
    let port = free_port();
    let rest = format!(
        r#"{{
  "listen-interface": "127.0.0.1",
  "listen-port": {port},
  "tls-pemfile": "{}",
  "bus-uri": "{}",
  "authentication-plugins": [{{
    "name": "commissaire_http.authentication.httpbasicauth",
    "filepath": "{}"
  }}],
 "self-auths": ["/api/v0/secrets"]
}}"#,
        p(&pki.bundle),
        redis.url(),
        p(&users)
    );
    let mut s = server_with(d, "rest", &rest, &[]);
    let base = format!("https://localhost:{port}");
    let st = wait_status(&mut s, &https, &base).await;
    assert_eq!(st["status"], "ok", "{st}");
    let r = https
        .put(format!("{base}/api/v0/network/n1"))
        .basic_auth(SEED_USER.0, Some(SEED_USER.1))
        .json(&json!({"type": "flanneld_service", "options": {"address": "127.0.0.1:8080"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap()["type"], "flanneld_service");
    // The self-auth path skips authentication (it names no route here: 404, not 401).
    let r = https
        .get(format!("{base}/api/v0/secrets"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let log = s.log();
    assert_eq!(warnings_naming(&log, "\"self-auths\"").len(), 1, "{log}");
    assert_eq!(warnings_naming(&log, "bus-uri").len(), 1, "{log}");
    drop(s);

    // The walkthrough's file: etcd with `"models": []`, inline users under the
    // `commissaire.authentication.` spelling, a bus; the scaled-out shape, so the server runs
    // no workers and the storage service (its example StorageService configuration) publishes
    // the change feed to the bus.
    let port = free_port();
    let walkthrough = format!(
        r#"{{
  "listen-interface": "127.0.0.1",
  "listen-port": {port},
  "bus-uri": "{}",
  "storage-handlers": [
    {{
      "name": "commissaire.storage.etcd",
      "server_url": "{}",
      "models": []
    }}
  ],
  "authentication-plugins": [{{
    "name": "commissaire.authentication.httpbasicauth",
    "users": {{
      "a": {{
        "hash": "{SEED_HASH}"
      }}
    }}
  }}]
}}"#,
        redis.url(),
        etcd.url()
    );
    let mut s = server_with(d, "walkthrough", &walkthrough, &[]);
    let base = format!("http://127.0.0.1:{port}");
    let st = wait_status(&mut s, &http, &base).await;
    assert_eq!(st["bus"]["type"], "redis", "{st}");
    let storage_conf = d.join("storage.conf");
    std::fs::write(
        &storage_conf,
        format!(
            r#"{{
    "custodia_api_id": "storage_service",
    "custodia_api_key": "$API_KEY",
    "storage_handlers": [
      {{
        "name": "etcd",
        "server_url": "{}",
        "models": ["*"]
      }}
    ],
    "debug": false
}}"#,
            etcd.url()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_commissaire-service"));
    cmd.arg("storage")
        .arg("-c")
        .arg(&storage_conf)
        .arg("--bus-uri")
        .arg(redis.url());
    let mut storage = Proc::spawn(cmd, d.join("storage.log"));
    let r = http
        .put(format!("{base}/api/v0/network/n2"))
        .basic_auth(SEED_USER.0, Some(SEED_USER.1))
        .json(&json!({"type": "flannel_server", "options": {"address": "127.0.0.1:8080"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            !storage.exited(),
            "the storage service exited:\n{}",
            storage.log()
        );
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg("commissaire:events")
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap();
        let published = entries.iter().any(|(_, fields)| {
            fields.iter().any(|(_, v)| {
                serde_json::from_str::<Value>(v)
                    .is_ok_and(|b| b["kind"] == "Network" && b["name"] == "n2")
            })
        });
        if published {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the change never reached the bus:\n{}",
            storage.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let slog = storage.log();
    assert_eq!(warnings_naming(&slog, "custodia_").len(), 1, "{slog}");
    drop(storage);
    drop(s);

    // The TLS etcd walkthrough: client certificate and key for etcd, TLS for the API.
    let (_etcd_tls, tls_url) = tls_etcd(d, &pki);
    let port = free_port();
    let tls = format!(
        r#"{{
  "listen-interface": "127.0.0.1",
  "listen-port": {port},
  "tls-pemfile": "{}",
  "bus-uri": "{}",
  "storage-handlers": [
    {{
      "name": "commissaire.storage.etcd",
      "server_url": "{tls_url}",
      "certificate_path": "{}",
      "certificate_key_path": "{}",
      "models": []
    }}
  ],
  "authentication-plugins": [{{
    "name": "commissaire.authentication.httpbasicauth",
    "filepath": "{}"
  }}]
}}"#,
        p(&pki.bundle),
        redis.url(),
        p(&pki.client),
        p(&pki.client_key),
        p(&users)
    );
    // Without certificate_ca_path the etcd's CA comes from the system bundle; here
    // SSL_CERT_FILE names the test's CA, so the file stays as printed.
    let file = d.join("tls-etcd.conf");
    std::fs::write(&file, &tls).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_commissaire-server"));
    cmd.arg("-c")
        .arg(&file)
        .arg("--data-dir")
        .arg(d.join("tls-etcd-data"))
        .env("SSL_CERT_FILE", &pki.ca);
    let mut s = Proc::spawn(cmd, d.join("tls-etcd.log"));
    let base = format!("https://localhost:{port}");
    let st = wait_status(&mut s, &https, &base).await;
    assert_eq!(st["store"]["backend"], "etcd", "{st}");
    let r = https
        .put(format!("{base}/api/v0/cluster/c1"))
        .basic_auth(SEED_USER.0, Some(SEED_USER.1))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", s.log());
    drop(s);

    // The command-line example (`--no-config` as printed: argparse's prefix of
    // --no-config-file), with its `--listen-interface 8000` slot given an address.
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_commissaire-server"));
    cmd.args([
        "--no-config",
        "--bus-uri",
        &redis.url(),
        "--bus-exchange",
        "commissaire",
    ])
    .arg("--tls-pemfile")
    .arg(&pki.bundle)
    .args(["--listen-interface", "localhost", "-p", &port.to_string()])
    .arg("--authentication-plugin")
    .arg(format!(
        "commissaire_http.authentication.httpbasicauth:filepath={}",
        users.display()
    ))
    .args(["--self-auth", "/api/v0/secrets"])
    .arg("--data-dir")
    .arg(d.join("cli-data"));
    let mut s = Proc::spawn(cmd, d.join("cli.log"));
    let base = format!("https://localhost:{port}");
    wait_status(&mut s, &https, &base).await;
    let r = https
        .get(format!("{base}/api/v0/networks"))
        .basic_auth(SEED_USER.0, Some(SEED_USER.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(s);

    // What we do not have is refused, naming it: CPD-61's CloudForms source for hosts.
    let port = free_port();
    let cloudforms = format!(
        r#"{{"listen-port": {port}, "storage-handlers": [
      {{"name": "commissaire.storage.etcd", "server_url": "{}", "models": ["*"]}},
      {{"name": "commissaire.storage.cloudforms", "server_url": "https://127.0.0.1:1/api/",
        "models": ["Host"], "username": "commissaire_service_account",
        "password": "abetteronethanthis", "version": "2.0.0"}}],
      "authentication-plugins": [{{"name": "httpbasicauth", "filepath": "{}"}}]}}"#,
        etcd.url(),
        p(&users)
    );
    let mut s = server_with(d, "cloudforms", &cloudforms, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !s.exited() {
        assert!(
            Instant::now() < deadline,
            "started with a CloudForms handler"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = s.log();
    assert!(
        log.contains("\"commissaire.storage.cloudforms\" is not available"),
        "{log}"
    );
    assert!(
        !log.contains("abetteronethanthis"),
        "the password is not echoed: {log}"
    );

    // The same example where the seeds print it: a StorageService configuration.
    let conf = d.join("storage-cloudforms.conf");
    std::fs::write(
        &conf,
        format!(
            r#"{{
  "storage_handlers": [{{
      "name": "commissaire.storage.etcd",
      "server_url": "{}",
      "models": ["*"]
  }}, {{
      "name": "commissaire.storage.cloudforms",
      "server_url": "https://127.0.0.1:1/api/",
      "models": ["Host"],
      "username": "commissaire_service_account",
      "password": "abetteronethanthis",
      "version": "2.0.0"
  }}]
}}"#,
            etcd.url()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_commissaire-service"));
    cmd.arg("storage").arg("-c").arg(&conf);
    let mut svc = Proc::spawn(cmd, d.join("storage-cloudforms.log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !svc.exited() {
        assert!(
            Instant::now() < deadline,
            "the service started with a CloudForms handler"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = svc.log();
    assert!(
        log.contains("\"commissaire.storage.cloudforms\" is not available"),
        "{log}"
    );
    assert!(!log.contains("abetteronethanthis"), "{log}");
}

/// Polls `GET /host/{address}` until its status is `want` (bounded); panics with the log.
async fn wait_host_status(server: &Server, address: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = Value::Null;
    while Instant::now() < deadline {
        let r = server.get(&format!("/host/{address}")).await;
        if r.status == 200 {
            last = r.json.clone();
            if last["status"] == want {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "host {address} did not become {want}; last seen: {last}\n{}",
        server.log_tail(80)
    );
}

/// The original's docker template, and a flanneld template written against its variable
/// names, with a line that prints the other variables an operator's template may use.
const ORIGINAL_DOCKER: &str = "OPTIONS='--registry-mirror=http://{{ commissaire_docker_registry_host }}:{{ commissaire_docker_registry_port }} --selinux-enabled --log-driver=journald'\nDOCKER_CERT_PATH=/etc/docker\n";
const ORIGINAL_FLANNELD: &str = r#"# {{ commissaire_bootstrap_ip }} | {{ commissaire_install_docker }} | {{ commissaire_install_flannel }} | {{ commissaire_docker_service }} | {{ commissaire_flannel_service }} | {{ commissaire_restart_command }} | {{ commissaire_upgrade_command }} | {{ commissaire_enable_pkg_repos }} | {{ commissaire_flanneld_config }} | {{ commissaire_docker_config }}
{% if commissaire_etcd_server_url %}
# Old style options
FLANNEL_ETCD="{{ commissaire_etcd_server_url }}"
FLANNEL_ETCD_KEY="{{ commissaire_flannel_key }}"
{% endif %}{% if commissaire_flanneld_server %}FLANNEL_OPTIONS="--remote={{ commissaire_flanneld_server }}"
{% endif %}"#;

/// The seeds' enums and an operator's templates from the original, on real hosts: an OSTree
/// host reads `"os": "atomic"` (its distribution in `distribution`), a `flanneld_service`
/// network bootstraps its hosts, templates written with the original's variable names render
/// on them; and `/status` shows each worker's last round and job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_hosts_flanneld_service_and_the_originals_templates() {
    let tb = Testbed::up(TestbedOptions {
        hosts: 2,
        flavours: vec!["fedora-atomic".into(), "rhel".into()],
        ..TestbedOptions::default()
    });
    let env = Env::new(Backend::Sqlite);
    let templates = env.dir().join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    std::fs::write(templates.join("docker"), ORIGINAL_DOCKER).unwrap();
    std::fs::write(templates.join("flanneld"), ORIGINAL_FLANNELD).unwrap();
    let mut opts = env.options("data");
    opts.extra_args = vec!["--templates-dir".into(), templates.display().to_string()];
    let server = Server::start(opts).await;
    let gw = tb.gateway();
    let net = expect_status(
        &server
            .put(
                "/network/fs",
                json!({"type": "flanneld_service", "options": {"address": format!("{gw}:8080")}}),
            )
            .await,
        201,
    );
    assert_eq!(
        net["type"], "flanneld_service",
        "stored and shown as given: {net}"
    );
    assert_eq!(
        expect_status(&server.get("/network/fs").await, 200)["type"],
        "flanneld_service"
    );
    expect_status(
        &server.put("/cluster/c", json!({"network": "fs"})).await,
        201,
    );
    let addrs = tb.addresses();
    for a in &addrs {
        let r = server
            .put(
                &format!("/host/{a}"),
                json!({"ssh_priv_key": tb.client_key_base64(), "cluster": "c"}),
            )
            .await;
        expect_status(&r, 201);
    }
    for a in &addrs {
        let h = wait_host_status(&server, a, "disassociated").await;
        let flavour = tb.flavour_of(a);
        let (os, distribution, ostree, install_docker) = match flavour.as_str() {
            "fedora-atomic" => ("atomic", "fedora", true, "true"),
            "rhel" => ("rhel", "rhel", false, "yum install -y docker"),
            other => panic!("unexpected flavour {other}"),
        };
        assert_eq!(h["os"], os, "{flavour}: {h}");
        assert_eq!(h["distribution"], distribution, "{flavour}: {h}");
        assert_eq!(h["ostree"], ostree, "{flavour}: {h}");
        assert!(!h["os_version"].as_str().unwrap().is_empty(), "{h}");

        let docker = tb
            .host_file(a, "/etc/sysconfig/docker")
            .expect("docker config");
        assert_eq!(
            docker,
            "OPTIONS='--registry-mirror=http://127.0.0.1:8080 --selinux-enabled --log-driver=journald'\nDOCKER_CERT_PATH=/etc/docker\n"
        );
        let flanneld = tb
            .host_file(a, "/etc/sysconfig/flanneld")
            .expect("flanneld config");
        let repos = if flavour == "rhel" {
            "subscription-manager repos --enable=rhel-7-server-extras-rpms --enable=rhel-7-server-optional-rpms"
        } else {
            "true"
        };
        let install_flannel = if ostree {
            "true"
        } else {
            "yum install -y flannel"
        };
        let upgrade = if ostree {
            "rpm-ostree upgrade"
        } else {
            "yum update -y"
        };
        assert_eq!(
            flanneld,
            format!(
                "# {a} | {install_docker} | {install_flannel} | docker | flanneld | systemctl reboot | {upgrade} | {repos} | /etc/sysconfig/flanneld | /etc/sysconfig/docker\nFLANNEL_OPTIONS=\"--remote={gw}:8080\"\n"
            ),
            "{flavour}"
        );
        // Bootstrap enabled what the plan says, on the host itself.
        let log = tb.commands_log(a).join("\n");
        assert!(log.contains("systemctl enable flanneld docker"), "{log}");
    }

    // Every worker kind reports whether it runs and what it last did.
    let st = expect_status(&server.get("/status").await, 200);
    assert_eq!(st["status"], "ok", "{st}");
    assert_eq!(st["stuck_workers"], json!([]), "{st}");
    for kind in ["investigator", "watcher", "clusterexec", "containermgr"] {
        let w = &st["workers"][kind];
        assert_eq!(w["status"], "running", "{kind}: {st}");
        assert_eq!(w["running"], true, "{kind}: {st}");
        assert!(w["last_round_at"].is_string(), "{kind}: {st}");
    }
    let inv = &st["workers"]["investigator"];
    assert!(inv["last_job_at"].is_string(), "{st}");
    assert!(addrs.iter().any(|a| inv["last_job"] == a.as_str()), "{st}");
    assert_eq!(st["details"], true, "{st}");
    // Without credentials: whether each worker runs and when it last did something, not
    // what it worked on (host addresses, error texts).
    let anon = server
        .client()
        .get(server.url("/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 200);
    let anon: serde_json::Value = anon.json().await.unwrap();
    assert_eq!(anon["details"], false, "{anon}");
    let inv = &anon["workers"]["investigator"];
    assert_eq!(inv["running"], true, "{anon}");
    assert!(inv["last_job_at"].is_string(), "{anon}");
    assert!(inv["last_job"].is_null(), "{anon}");
    for a in &addrs {
        assert!(!anon.to_string().contains(a.as_str()), "{a} in {anon}");
    }
}
