//! The command line: every command, its arguments and its help.
//!
//! Argument shapes follow the original commctl so that existing scripts keep working
//! (`cluster create [-n NETWORK] [-c CONTAINER_MANAGER] NAME`, `host create ADDRESS KEYFILE
//! [-c CLUSTER]`, `network create NAME [-t TYPE] [-o JSON]`, ...). On `create` commands `-o`
//! means options, as it did; on read commands (get, list, status) `-o` is `--output`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::output::Format;

/// Help text shared by every command: the exit codes.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  error: the server refused the request, could not be reached, or the credentials were wrong
  2  usage error: the command line is wrong
  3  not found: the named host, cluster, network, container manager or operation does not exist";

const TOP_HELP: &str = "\
Configuration:
  commctl reads ~/.commissaire.json, or the file named by $COMMCTL_CONFIG, or -c FILE:
    {\"endpoint\": [\"https://c1:8000\", \"https://c2:8000\"], \"username\": \"admin\", \"password\": \"...\",
     \"kubeconfig\": \"~/.kube/config\", \"ca_path\": \"ca.pem\",
     \"client_cert\": \"client.pem\", \"client_key\": \"client-key.pem\"}
  \"connect_timeout\": 10 and \"timeout\": 60 (seconds) bound connecting and each request.
  Endpoints are tried in order when a connection fails. Flags (before or after the command)
  win over the file. Without an endpoint, http://127.0.0.1:8000 is used.

Examples:
  commctl network create overlay -t flannel_server -o address=10.0.0.1:8080
  commctl cluster create -n overlay prod
  commctl host create 192.0.2.10 ./host-key -c prod
  commctl host list
  commctl cluster get prod -o json
  commctl --endpoint https://commissaire:8000 --username admin --password-stdin host list < pw.txt
  commctl host list --endpoint http://127.0.0.1:8000 --connect-timeout 3

Exit codes:
  0  success
  1  error: the server refused the request, could not be reached, or the credentials were wrong
  2  usage error: the command line is wrong
  3  not found: the named host, cluster, network, container manager or operation does not exist";

macro_rules! help {
    ($($line:literal),+ $(,)?) => {
        concat!("Examples:\n", $("  ", $line, "\n",)+ "\n", "Exit codes:
  0  success
  1  error: the server refused the request, could not be reached, or the credentials were wrong
  2  usage error: the command line is wrong
  3  not found: the named host, cluster, network, container manager or operation does not exist")
    };
}

/// The Commissaire operator CLI: manage hosts, clusters, networks and container managers
/// through a Commissaire server, and run rolling restarts, upgrades and deploys.
///
/// The connection flags (`--config`, `--endpoint`, `--username`, `--password-stdin`,
/// `--kubeconfig`, `--token`, `--ca-path`, `--client-cert`, `--client-key`, `--connect-timeout`,
/// `--timeout`) are global: they may stand before or after the command. `-c` alone means
/// `--config` only before the command, because several commands use `-c` for something else.
#[derive(Parser, Debug)]
#[command(name = "commctl", version, after_help = TOP_HELP)]
pub struct Cli {
    /// Configuration file [default: $COMMCTL_CONFIG, else ~/.commissaire.json].
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Same as --config (before the command only: commands use -c for other things).
    #[arg(short = 'c', value_name = "FILE", conflicts_with = "config")]
    pub config_short: Option<PathBuf>,
    /// Server URL (repeat for fallbacks tried in order); replaces the file's endpoint.
    #[arg(long, value_name = "URL", global = true)]
    pub endpoint: Vec<String>,
    /// User for HTTP basic authentication; replaces the file's username.
    #[arg(long, value_name = "USER", global = true)]
    pub username: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long, global = true)]
    pub password_stdin: bool,
    /// Kubeconfig whose current context's token is sent as a bearer token.
    #[arg(long, value_name = "FILE", global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// API token sent as `Authorization: Bearer` (`@FILE` reads it from a file; a token on
    /// the command line is visible to other local users, prefer the file or the config's
    /// `token`); replaces the file's credentials.
    #[arg(
        long,
        value_name = "TOKEN|@FILE",
        global = true,
        env = "COMMCTL_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// PEM bundle of the CA that signed the server's certificate.
    #[arg(long, value_name = "FILE", global = true)]
    pub ca_path: Option<PathBuf>,
    /// Client certificate (PEM) for servers that require one.
    #[arg(long, value_name = "FILE", global = true)]
    pub client_cert: Option<PathBuf>,
    /// Key of the client certificate (PEM).
    #[arg(long, value_name = "FILE", global = true)]
    pub client_key: Option<PathBuf>,
    /// Seconds to wait for a connection to an endpoint before trying the next one
    /// [default: the file's connect_timeout, else 10].
    #[arg(long, value_name = "SECONDS", global = true, value_parser = parse_seconds)]
    pub connect_timeout: Option<f64>,
    /// Seconds to wait for the answer to one request once connected
    /// [default: the file's timeout, else 60].
    #[arg(long, value_name = "SECONDS", global = true, value_parser = parse_seconds)]
    pub timeout: Option<f64>,
    /// Output format for every command [default: table].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub output: Option<Format>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// A timeout in seconds: a positive, finite number.
pub fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "{s:?}: give a number of seconds greater than 0 and at most 86400, e.g. 10 or 2.5"
        )),
    }
}

/// `-o/--output` on read commands.
#[derive(Args, Debug, Clone, Default)]
pub struct ReadOutput {
    /// Output format: table, json (the API's JSON) or yaml.
    #[arg(short = 'o', long = "output", value_enum, value_name = "FORMAT")]
    pub output: Option<Format>,
}

/// `--output` on commands that change something (`-o` is taken by options there).
#[derive(Args, Debug, Clone, Default)]
pub struct WriteOutput {
    /// Output format: table, json (the API's JSON) or yaml.
    #[arg(long = "output", value_enum, value_name = "FORMAT")]
    pub output: Option<Format>,
}

/// Top-level commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Clusters, and rolling restart/upgrade/deploy of their hosts.
    #[command(subcommand, after_help = help!(
        "commctl cluster create -n overlay prod",
        "commctl cluster list",
        "commctl cluster restart start prod --batch-size 25% --watch",
    ))]
    Cluster(ClusterCmd),
    /// Container managers (Kubernetes/OpenShift API endpoints clusters register hosts with).
    #[command(name = "container_manager", visible_alias = "container-manager", subcommand,
        after_help = help!(
            "commctl container_manager create -t kubernetes -o server_url=https://k8s:6443 -o token=@token.txt k8s",
            "commctl container_manager list",
        ))]
    ContainerManager(ContainerManagerCmd),
    /// Hosts: add, remove, inspect, join clusters, log in.
    #[command(subcommand, after_help = help!(
        "commctl host create 192.0.2.10 ./host-key -c prod",
        "commctl host list",
        "commctl host ssh 192.0.2.10",
    ))]
    Host(HostCmd),
    /// Networks (flannel configuration for clusters).
    #[command(subcommand, after_help = help!(
        "commctl network create overlay -t flannel_server -o address=10.0.0.1:8080",
        "commctl network list",
    ))]
    Network(NetworkCmd),
    /// Registration tokens: what new hosts present to register themselves (admin only).
    #[command(name = "registration-token", visible_alias = "registration_token", subcommand,
        after_help = help!(
            "commctl registration-token create -c prod --expires-in 3600 --single-use",
            "commctl registration-token list",
            "commctl registration-token revoke 9f86d081884c7d65",
        ))]
    RegistrationToken(RegistrationTokenCmd),
    /// Print the bcrypt hash of a password, for the server's users file.
    #[command(after_help = help!(
        "commctl passhash -p secret",
        "echo secret | commctl passhash -f -",
        "printf '{\"admin\": {\"hash\": \"%s\"}}' \"$(commctl passhash -p secret)\" > users.json",
    ))]
    Passhash {
        /// The password (prompted for when neither -p nor -f is given).
        #[arg(short = 'p', long)]
        password: Option<String>,
        /// Read the password from a file (`-` for standard input).
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
        /// bcrypt cost (4-31).
        #[arg(short = 'r', long, default_value_t = 12)]
        rounds: u32,
    },
    /// Write cloud-init user-data that registers a new host with Commissaire at first boot.
    #[command(name = "user-data", after_help = help!(
        "commctl user-data -e https://commissaire:8000 -c prod -u admin -p -o user-data.txt",
        "commctl user-data --password --username admin --cluster prod --endpoint https://commissaire:8000/ prod.userdata",
        "commctl --token @admin-token user-data -e https://commissaire:8000 --single-use -o user-data.txt",
    ))]
    UserData(UserDataArgs),
    /// Print a shell completion script.
    #[command(after_help = help!(
        "commctl completions bash > /etc/bash_completion.d/commctl",
        "commctl completions zsh > \"${fpath[1]}/_commctl\"",
        "commctl completions fish > ~/.config/fish/completions/commctl.fish",
    ))]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `user-data` arguments.
#[derive(Args, Debug)]
pub struct UserDataArgs {
    /// Commissaire server URL the host calls, e.g. https://commissaire.example.com:8000
    /// [default: the first endpoint of commctl's own configuration].
    #[arg(short = 'e', long)]
    pub endpoint: Option<String>,
    /// Cluster the host joins.
    #[arg(short = 'c', long)]
    pub cluster: Option<String>,
    /// User that creates the registration token (HTTP basic; else the configured
    /// credentials or --token are used).
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Ask for that user's password (used to create the token; never written to the
    /// user-data).
    #[arg(short = 'p', long)]
    pub password: bool,
    /// Lifetime of the registration token in seconds [default: the server's, 24 h].
    #[arg(long, value_name = "SECONDS")]
    pub expires_in: Option<u64>,
    /// The token registers one host only.
    #[arg(long)]
    pub single_use: bool,
    /// User the server logs in as over SSH.
    #[arg(short = 'r', long, default_value = "root")]
    pub remote_user: String,
    /// Private key path on the host (created if missing).
    #[arg(short = 's', long)]
    pub ssh_key_path: Option<String>,
    /// authorized_keys path on the host.
    #[arg(short = 'a', long)]
    pub authorized_keys_path: Option<String>,
    /// File whose content replaces the default cloud-config part.
    #[arg(short = 'C', long)]
    pub cloud_init: Option<PathBuf>,
    /// Write to this file instead of standard output.
    #[arg(short = 'o', long)]
    pub outfile: Option<PathBuf>,
    /// The output file given as the last argument, as the original's walkthroughs write it
    /// (`commctl user-data ... CLUSTER.userdata`); the same as -o.
    #[arg(value_name = "OUTFILE", conflicts_with = "outfile")]
    pub output: Option<PathBuf>,
}

impl UserDataArgs {
    /// Where the user-data goes: `-o FILE` or the positional file; `None` for standard output.
    pub fn out_path(&self) -> Option<&std::path::Path> {
        self.outfile.as_deref().or(self.output.as_deref())
    }
}

/// `registration-token ...`
#[derive(Subcommand, Debug)]
pub enum RegistrationTokenCmd {
    /// Create a token; it is printed once (the server keeps only its digest).
    #[command(after_help = help!(
        "commctl registration-token create",
        "commctl registration-token create -c prod --expires-in 3600 --single-use -d 'rack 12'",
    ))]
    Create {
        /// The only cluster hosts registering with it may join.
        #[arg(short = 'c', long)]
        cluster: Option<String>,
        /// Lifetime in seconds [default: 86400].
        #[arg(long, value_name = "SECONDS")]
        expires_in: Option<u64>,
        /// The first host registered with it uses it up.
        #[arg(long)]
        single_use: bool,
        /// Free text (what the hosts are for).
        #[arg(short = 'd', long)]
        description: Option<String>,
        /// Output.
        #[command(flatten)]
        out: WriteOutput,
    },
    /// List the tokens still valid (never their secrets).
    #[command(after_help = help!(
        "commctl registration-token list",
        "commctl registration-token list -o json",
    ))]
    List {
        /// Output.
        #[command(flatten)]
        out: ReadOutput,
    },
    /// Revoke tokens by id, at once.
    #[command(after_help = help!(
        "commctl registration-token revoke 9f86d081884c7d65",
    ))]
    Revoke {
        /// Token ids (from `list`).
        #[arg(required = true)]
        ids: Vec<String>,
        /// Output.
        #[command(flatten)]
        out: WriteOutput,
    },
}

/// `cluster ...`
#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Create a cluster (or update the network/container manager of an existing one).
    #[command(after_help = help!(
        "commctl cluster create prod",
        "commctl cluster create -n overlay -c k8s prod",
    ))]
    Create {
        /// Cluster type, as in the original (accepted and ignored by the server).
        #[arg(short = 't', long = "type", value_parser = ["kubernetes", "host_only"])]
        kind: Option<String>,
        /// Network of the cluster [server default: default].
        #[arg(short = 'n', long)]
        network: Option<String>,
        /// Container manager the cluster's hosts register with.
        #[arg(short = 'c', long)]
        container_manager: Option<String>,
        /// Cluster name.
        name: String,
        /// Output format (commands that change something).
        #[command(flatten)]
        out: WriteOutput,
    },
    /// Delete clusters (their hosts stay).
    #[command(after_help = help!("commctl cluster delete prod staging"))]
    Delete {
        /// Cluster names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Output format (commands that change something).
        #[command(flatten)]
        out: WriteOutput,
    },
    /// Show a cluster: status, network, container manager and member counts.
    #[command(after_help = help!("commctl cluster get prod", "commctl cluster get prod -o json"))]
    Get {
        /// Cluster name.
        name: String,
        /// Output format (read commands).
        #[command(flatten)]
        out: ReadOutput,
    },
    /// List clusters.
    #[command(after_help = help!("commctl cluster list", "commctl cluster list -o json"))]
    List {
        /// Output format (read commands).
        #[command(flatten)]
        out: ReadOutput,
    },
    /// Rolling restart (reboot) of a cluster's hosts.
    #[command(subcommand, after_help = help!(
        "commctl cluster restart start prod --batch-size 2 --max-failures 1",
        "commctl cluster restart status prod --watch",
    ))]
    Restart(RestartCmd),
    /// Rolling package upgrade of a cluster's hosts.
    #[command(subcommand, after_help = help!(
        "commctl cluster upgrade start prod --reboot",
        "commctl cluster upgrade status prod --watch",
    ))]
    Upgrade(UpgradeCmd),
    /// Rolling deploy of an OSTree version on a cluster's hosts.
    #[command(subcommand, after_help = help!(
        "commctl cluster deploy start prod 7.2.6",
        "commctl cluster deploy status prod -o yaml",
    ))]
    Deploy(DeployCmd),
}

/// How a rolling operation runs (sent in the start request).
#[derive(Args, Debug, Clone, Default)]
pub struct RunOptions {
    /// Hosts handled at once: a count or a percentage of the cluster ("25%") [server default: 1].
    #[arg(long, value_name = "N|N%", value_parser = parse_amount_min1)]
    pub batch_size: Option<serde_json::Value>,
    /// Failed hosts tolerated before the run stops: a count or "10%" [server default: 0].
    #[arg(long, value_name = "N|N%", value_parser = parse_amount_min0)]
    pub max_failures: Option<serde_json::Value>,
    /// Seconds to wait between batches [server default: 0].
    #[arg(long, value_name = "SECONDS")]
    pub pause_seconds: Option<f64>,
    /// Do not cordon and drain hosts through the container manager.
    #[arg(long, conflicts_with = "drain")]
    pub no_drain: bool,
    /// Cordon and drain hosts through the container manager [server default: when the
    /// cluster has one].
    #[arg(long)]
    pub drain: bool,
    /// Per-host limit for the whole step, reboot included [server default: 600].
    #[arg(long, value_name = "SECONDS")]
    pub timeout_seconds: Option<u64>,
    /// Then follow the run with a progress bar until it ends.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// With --watch, progress follows the server's change feed; when the feed is unavailable,
    /// the status is requested every SECONDS instead.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    pub interval: f64,
}

/// `... status NAME`
#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// Cluster name.
    pub name: String,
    /// Follow the run with a progress bar until it is no longer in_process or paused; exit 1
    /// if it ended failed or cancelled.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// With --watch, progress follows the server's change feed; when the feed is unavailable,
    /// the status is requested every SECONDS instead.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    pub interval: f64,
    /// Output format (read commands).
    #[command(flatten)]
    pub out: ReadOutput,
}

/// `... cancel|pause|resume NAME`
#[derive(Args, Debug, Clone)]
pub struct ControlArgs {
    /// Cluster name.
    pub name: String,
    /// Output format (commands that change something).
    #[command(flatten)]
    pub out: WriteOutput,
}

/// `cluster restart ...`
#[derive(Subcommand, Debug)]
pub enum RestartCmd {
    /// Start a rolling restart.
    #[command(after_help = help!(
        "commctl cluster restart start prod",
        "commctl cluster restart start prod --batch-size 25% --max-failures 1 --pause-seconds 30 --watch",
    ))]
    Start {
        /// Cluster name.
        name: String,
        /// How the operation runs.
        #[command(flatten)]
        opts: RunOptions,
        /// Output format (commands that change something).
        #[command(flatten)]
        out: WriteOutput,
    },
    /// Show the restart's progress.
    #[command(after_help = help!("commctl cluster restart status prod", "commctl cluster restart status prod --watch"))]
    Status(StatusArgs),
    /// Cancel the restart (hosts in flight finish their step, no new host starts).
    #[command(after_help = help!("commctl cluster restart cancel prod"))]
    Cancel(ControlArgs),
    /// Pause the restart (no new host starts until resumed).
    #[command(after_help = help!("commctl cluster restart pause prod"))]
    Pause(ControlArgs),
    /// Resume a paused restart.
    #[command(after_help = help!("commctl cluster restart resume prod"))]
    Resume(ControlArgs),
}

/// `cluster upgrade ...`
#[derive(Subcommand, Debug)]
pub enum UpgradeCmd {
    /// Start a rolling upgrade.
    #[command(after_help = help!(
        "commctl cluster upgrade start prod",
        "commctl cluster upgrade start prod --reboot --batch-size 2 --watch",
    ))]
    Start {
        /// Cluster name.
        name: String,
        /// A version, as the original's documentation writes it (`upgrade start prod 7.2.2`):
        /// accepted with a note, since an upgrade moves every host to its newest packages;
        /// `cluster deploy start NAME VERSION` moves OSTree hosts to a given version.
        #[arg(value_name = "VERSION")]
        version: Option<String>,
        /// Reboot each host after its package transaction (OSTree hosts always reboot).
        #[arg(long)]
        reboot: bool,
        /// How the operation runs.
        #[command(flatten)]
        opts: RunOptions,
        /// Output format (commands that change something).
        #[command(flatten)]
        out: WriteOutput,
    },
    /// Show the upgrade's progress.
    #[command(after_help = help!("commctl cluster upgrade status prod", "commctl cluster upgrade status prod -o json"))]
    Status(StatusArgs),
    /// Cancel the upgrade.
    #[command(after_help = help!("commctl cluster upgrade cancel prod"))]
    Cancel(ControlArgs),
    /// Pause the upgrade.
    #[command(after_help = help!("commctl cluster upgrade pause prod"))]
    Pause(ControlArgs),
    /// Resume a paused upgrade.
    #[command(after_help = help!("commctl cluster upgrade resume prod"))]
    Resume(ControlArgs),
}

/// `cluster deploy ...`
#[derive(Subcommand, Debug)]
pub enum DeployCmd {
    /// Start a rolling deploy of an OSTree version.
    #[command(after_help = help!(
        "commctl cluster deploy start prod 7.2.6",
        "commctl cluster deploy start prod 7.2.6 --batch-size 10% --watch",
    ))]
    Start {
        /// Cluster name.
        name: String,
        /// The OSTree version to deploy.
        version: String,
        /// How the operation runs.
        #[command(flatten)]
        opts: RunOptions,
        /// Output format (commands that change something).
        #[command(flatten)]
        out: WriteOutput,
    },
    /// Show the deploy's progress.
    #[command(after_help = help!("commctl cluster deploy status prod", "commctl cluster deploy status prod --watch"))]
    Status(StatusArgs),
    /// Cancel the deploy.
    #[command(after_help = help!("commctl cluster deploy cancel prod"))]
    Cancel(ControlArgs),
    /// Pause the deploy.
    #[command(after_help = help!("commctl cluster deploy pause prod"))]
    Pause(ControlArgs),
    /// Resume a paused deploy.
    #[command(after_help = help!("commctl cluster deploy resume prod"))]
    Resume(ControlArgs),
}

/// `container_manager ...`
#[derive(Subcommand, Debug)]
pub enum ContainerManagerCmd {
    /// Create a container manager.
    #[command(after_help = help!(
        "commctl container_manager create -t kubernetes -o server_url=https://k8s:6443 -o token=@token.txt k8s",
        "commctl container_manager create -t openshift -o '{\"server_url\": \"https://os:8443\", \"ca_path\": \"/etc/ca.pem\"}' os",
        "commctl container_manager create -t trivial test",
    ))]
    Create {
        /// Type: openshift, kubernetes or trivial.
        #[arg(short = 't', long = "type", default_value = "openshift")]
        kind: String,
        /// Option as KEY=VALUE (KEY=@FILE reads the value from a file; true/false are
        /// booleans) or a JSON object; repeatable, later ones win.
        #[arg(short = 'o', long = "options", value_name = "KEY=VALUE|JSON")]
        options: Vec<String>,
        /// Container manager name.
        name: String,
        /// Output format (commands that change something).
        #[command(flatten)]
        out: WriteOutput,
    },
    /// Delete container managers.
    #[command(after_help = help!("commctl container_manager delete k8s"))]
    Delete {
        /// Names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Output format (commands that change something).
        #[command(flatten)]
        out: WriteOutput,
    },
    /// Show a container manager (secret options are shown as <redacted>).
    #[command(after_help = help!("commctl container_manager get k8s"))]
    Get {
        /// Name.
        name: String,
        /// Output format (read commands).
        #[command(flatten)]
        out: ReadOutput,
    },
    /// List container managers.
    #[command(after_help = help!("commctl container_manager list", "commctl container_manager list -o yaml"))]
    List {
        /// Output format (read commands).
        #[command(flatten)]
        out: ReadOutput,
    },
}

/// `network ...`
#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Create a network.
    #[command(after_help = help!(
        "commctl network create overlay -t flannel_server -o address=10.0.0.1:8080",
        "commctl network create overlay -t flannel_server -o '{\"address\": \"10.0.0.1:8080\"}'",
        "commctl network create etcdnet",
    ))]
    Create {
        /// Network name.
        name: String,
        /// Type.
        #[arg(short = 't', long = "type", default_value = "flannel_etcd",
              value_parser = ["flannel_etcd", "flannel_server", "flanneld_service"])]
        kind: String,
        /// Option as KEY=VALUE (KEY=@FILE reads the value from a file) or a JSON object;
        /// repeatable, later ones win. flannel_server needs address=HOST:PORT.
        #[arg(short = 'o', long = "options", value_name = "KEY=VALUE|JSON")]
        options: Vec<String>,
        /// Output format (commands that change something).
        #[command(flatten)]
        out: WriteOutput,
    },
    /// Delete networks.
    #[command(after_help = help!("commctl network delete overlay"))]
    Delete {
        /// Names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Output format (commands that change something).
        #[command(flatten)]
        out: WriteOutput,
    },
    /// Show a network.
    #[command(after_help = help!("commctl network get default"))]
    Get {
        /// Name.
        name: String,
        /// Output format (read commands).
        #[command(flatten)]
        out: ReadOutput,
    },
    /// List networks.
    #[command(after_help = help!("commctl network list"))]
    List {
        /// Output format (read commands).
        #[command(flatten)]
        out: ReadOutput,
    },
}

/// `host ...`
#[derive(Subcommand, Debug)]
pub enum HostCmd {
    /// Add a host: the server logs in with the private key, gathers facts and bootstraps it.
    #[command(after_help = help!(
        "commctl host create 192.0.2.10 ./host-key",
        "commctl host create 192.0.2.10 ~/.ssh/id_ed25519 -c prod -r admin",
        "cat host-key | commctl host create 192.0.2.10 -",
    ))]
    Create {
        /// Address of the host (IPv4, IPv6 or DNS name).
        address: String,
        /// SSH private key file (`-` for standard input), unencrypted.
        ssh_priv_key_file: PathBuf,
        /// Cluster the host joins.
        #[arg(short = 'c', long)]
        cluster: Option<String>,
        /// User the server logs in as [server default: root].
        #[arg(short = 'r', long)]
        remote_user: Option<String>,
        /// Output format (commands that change something).
        #[command(flatten)]
        out: WriteOutput,
    },
    /// Delete hosts (they also leave their cluster).
    #[command(after_help = help!("commctl host delete 192.0.2.10 192.0.2.11"))]
    Delete {
        /// Addresses.
        #[arg(required = true)]
        addresses: Vec<String>,
        /// Output format (commands that change something).
        #[command(flatten)]
        out: WriteOutput,
    },
    /// Show a host.
    #[command(after_help = help!("commctl host get 192.0.2.10", "commctl host get 192.0.2.10 -o json"))]
    Get {
        /// Address.
        address: String,
        /// Output format (read commands).
        #[command(flatten)]
        out: ReadOutput,
    },
    /// List hosts, or the members of a cluster.
    #[command(after_help = help!("commctl host list", "commctl host list prod", "commctl host list -o json"))]
    List {
        /// Only the members of this cluster (with -o json|yaml: the API's member address list).
        cluster: Option<String>,
        /// Output format (read commands).
        #[command(flatten)]
        out: ReadOutput,
    },
    /// Show a host's status (and its node's, when its cluster has a container manager).
    #[command(after_help = help!("commctl host status 192.0.2.10"))]
    Status {
        /// Address.
        address: String,
        /// Output format (read commands).
        #[command(flatten)]
        out: ReadOutput,
    },
    /// Add a host to a cluster (it must be active or disassociated).
    #[command(after_help = help!("commctl host join 192.0.2.10 prod"))]
    Join {
        /// Address.
        address: String,
        /// Cluster.
        cluster: String,
        /// Output format (commands that change something).
        #[command(flatten)]
        out: WriteOutput,
    },
    /// Remove a host from a cluster.
    #[command(after_help = help!("commctl host unjoin 192.0.2.10 prod"))]
    Unjoin {
        /// Address.
        address: String,
        /// Cluster.
        cluster: String,
        /// Output format (commands that change something).
        #[command(flatten)]
        out: WriteOutput,
    },
    /// Log in to a host over SSH with its stored key, checking its recorded host key.
    ///
    /// The key is written to a temporary file readable only by you (mode 0600) and the host
    /// key the server recorded to a temporary known_hosts file; both are removed when ssh
    /// exits. Arguments after the address go to ssh before the host name; everything after
    /// `--` is the remote command, passed to ssh after the host name. The exit code is ssh's.
    #[command(after_help = help!(
        "commctl host ssh 192.0.2.10",
        "commctl host ssh 192.0.2.10 -p 2222 -v",
        "commctl host ssh 192.0.2.10 -- uptime",
    ))]
    Ssh {
        /// Address.
        address: String,
        /// Connect even when the server has not recorded the host's SSH key yet (accepting
        /// whatever key the host presents).
        #[arg(long)]
        insecure_accept_host_key: bool,
        /// Options for ssh itself (before the host name), e.g. -p 2222 -v.
        #[arg(allow_hyphen_values = true, value_name = "SSH_ARGS")]
        ssh_args: Vec<String>,
        /// The remote command, after `--`.
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Show the SSH host key the server recorded for a host.
    #[command(after_help = help!("commctl host hostkey 192.0.2.10"))]
    Hostkey {
        /// Address.
        address: String,
        /// Output format (read commands).
        #[command(flatten)]
        out: ReadOutput,
    },
    /// Trust a host's SSH host key again (after the host was reinstalled): the given key, or
    /// without KEY whatever key the host presents at the next contact.
    #[command(name = "trust-hostkey", after_help = help!(
        "commctl host trust-hostkey 192.0.2.10",
        "commctl host trust-hostkey 192.0.2.10 \"$(ssh-keyscan -t ed25519 192.0.2.10 | cut -d' ' -f2-)\"",
    ))]
    TrustHostkey {
        /// Address.
        address: String,
        /// OpenSSH public key line, e.g. "ssh-ed25519 AAAA...".
        key: Option<String>,
        /// Output format (commands that change something).
        #[command(flatten)]
        out: WriteOutput,
    },
}

/// Splits `host ssh` arguments into ssh's options and the remote command. clap gives the
/// words after a `--` that directly follows the address to `command`; once an ssh option
/// has started the hyphen-accepting list, a later `--` lands in `ssh_args` instead, so the
/// first `--` there is the split point too.
pub fn split_ssh_args(
    mut ssh_args: Vec<String>,
    command: Vec<String>,
) -> (Vec<String>, Vec<String>) {
    match ssh_args.iter().position(|a| a == "--") {
        Some(i) => {
            let mut remote: Vec<String> = ssh_args.drain(i..).skip(1).collect();
            remote.extend(command);
            (ssh_args, remote)
        }
        None => (ssh_args, command),
    }
}

fn parse_amount(s: &str, min: u64) -> Result<serde_json::Value, String> {
    let bad = || format!("{s:?}: give a whole number (at least {min}) or a percentage like 25%");
    if let Some(p) = s.strip_suffix('%') {
        let p: u64 = p.trim().parse().map_err(|_| bad())?;
        if p > 100 || (min > 0 && p == 0) {
            return Err(bad());
        }
        Ok(serde_json::Value::String(format!("{p}%")))
    } else {
        let n: u64 = s.trim().parse().map_err(|_| bad())?;
        if n < min {
            return Err(bad());
        }
        Ok(serde_json::Value::from(n))
    }
}

fn parse_amount_min1(s: &str) -> Result<serde_json::Value, String> {
    parse_amount(s, 1)
}

fn parse_amount_min0(s: &str) -> Result<serde_json::Value, String> {
    parse_amount(s, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use serde_json::json;

    #[test]
    fn command_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn amounts() {
        assert_eq!(parse_amount_min1("3"), Ok(json!(3)));
        assert_eq!(parse_amount_min1("25%"), Ok(json!("25%")));
        assert!(parse_amount_min1("0").is_err());
        assert!(parse_amount_min1("0%").is_err());
        assert_eq!(parse_amount_min0("0"), Ok(json!(0)));
        assert!(parse_amount_min0("101%").is_err());
        assert!(parse_amount_min0("x").is_err());
    }

    #[test]
    fn original_shapes_parse() {
        let c = Cli::try_parse_from([
            "commctl",
            "cluster",
            "create",
            "-t",
            "kubernetes",
            "-n",
            "net",
            "-c",
            "cm",
            "prod",
        ])
        .unwrap();
        match c.command {
            Command::Cluster(ClusterCmd::Create {
                kind,
                network,
                container_manager,
                name,
                ..
            }) => {
                assert_eq!(kind.as_deref(), Some("kubernetes"));
                assert_eq!(network.as_deref(), Some("net"));
                assert_eq!(container_manager.as_deref(), Some("cm"));
                assert_eq!(name, "prod");
            }
            other => panic!("{other:?}"),
        }
        let c = Cli::try_parse_from([
            "commctl",
            "container_manager",
            "create",
            "-o",
            "a=b",
            "-o",
            "{\"c\": 1}",
            "-t",
            "trivial",
            "cm",
        ])
        .unwrap();
        assert!(matches!(
            c.command,
            Command::ContainerManager(ContainerManagerCmd::Create { ref options, .. }) if options.len() == 2
        ));
        // -o is --output on read commands.
        let c = Cli::try_parse_from(["commctl", "host", "list", "-o", "json"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Host(HostCmd::List {
                out: ReadOutput {
                    output: Some(Format::Json)
                },
                ..
            })
        ));
        let c = Cli::try_parse_from(["commctl", "--output", "yaml", "network", "list"]).unwrap();
        assert_eq!(c.output, Some(Format::Yaml));
    }

    fn ssh_parts(args: &[&str]) -> (String, bool, Vec<String>, Vec<String>) {
        let c = Cli::try_parse_from(args).unwrap();
        match c.command {
            Command::Host(HostCmd::Ssh {
                address,
                insecure_accept_host_key,
                ssh_args,
                command,
            }) => {
                let (ssh_args, command) = split_ssh_args(ssh_args, command);
                (address, insecure_accept_host_key, ssh_args, command)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ssh_args_pass_through() {
        let (address, insecure, ssh_args, command) = ssh_parts(&[
            "commctl",
            "host",
            "ssh",
            "10.0.0.1",
            "--insecure-accept-host-key",
            "-p",
            "2222",
            "-v",
            "--",
            "uptime",
            "-a",
        ]);
        assert_eq!(address, "10.0.0.1");
        assert!(insecure);
        assert_eq!(ssh_args, ["-p", "2222", "-v"]);
        assert_eq!(command, ["uptime", "-a"]);

        // `--` right after the address: everything after it is the command (clap used to eat
        // the `--` and hand `uptime` to ssh as an option).
        let (_, insecure, ssh_args, command) =
            ssh_parts(&["commctl", "host", "ssh", "10.0.0.1", "--", "uptime"]);
        assert!(!insecure);
        assert!(ssh_args.is_empty(), "{ssh_args:?}");
        assert_eq!(command, ["uptime"]);

        // A second `--` belongs to the remote command.
        let (_, _, ssh_args, command) =
            ssh_parts(&["commctl", "host", "ssh", "h", "--", "ls", "--", "-x"]);
        assert!(ssh_args.is_empty());
        assert_eq!(command, ["ls", "--", "-x"]);

        let (_, _, ssh_args, command) = ssh_parts(&["commctl", "host", "ssh", "h"]);
        assert!(ssh_args.is_empty() && command.is_empty());
    }

    #[test]
    fn global_flags_anywhere() {
        let before = Cli::try_parse_from([
            "commctl",
            "--endpoint",
            "http://a:1",
            "--username",
            "u",
            "--connect-timeout",
            "3",
            "host",
            "list",
        ])
        .unwrap();
        let after = Cli::try_parse_from([
            "commctl",
            "host",
            "list",
            "--endpoint",
            "http://a:1",
            "--username",
            "u",
            "--connect-timeout",
            "3",
        ])
        .unwrap();
        for c in [&before, &after] {
            assert_eq!(c.endpoint, ["http://a:1"]);
            assert_eq!(c.username.as_deref(), Some("u"));
            assert_eq!(c.connect_timeout, Some(3.0));
        }
        let c = Cli::try_parse_from([
            "commctl",
            "cluster",
            "create",
            "-c",
            "cm",
            "prod",
            "--config",
            "/tmp/x.json",
            "--password-stdin",
        ])
        .unwrap();
        assert_eq!(
            c.config.as_deref(),
            Some(std::path::Path::new("/tmp/x.json"))
        );
        assert!(c.password_stdin);
        let c = Cli::try_parse_from(["commctl", "-c", "/tmp/y.json", "host", "list"]).unwrap();
        assert_eq!(
            c.config_short.as_deref(),
            Some(std::path::Path::new("/tmp/y.json"))
        );
        // user-data keeps its own -e/--endpoint and -u/--username.
        let c = Cli::try_parse_from([
            "commctl",
            "user-data",
            "--endpoint",
            "https://c:8000",
            "-u",
            "admin",
        ])
        .unwrap();
        assert!(
            matches!(c.command, Command::UserData(ref a) if a.endpoint.as_deref() == Some("https://c:8000"))
        );
        assert!(Cli::try_parse_from(["commctl", "host", "list", "--timeout", "0"]).is_err());
        assert!(Cli::try_parse_from(["commctl", "host", "list", "--timeout", "x"]).is_err());
    }

    #[test]
    fn operation_options_parse() {
        let c = Cli::try_parse_from([
            "commctl",
            "cluster",
            "upgrade",
            "start",
            "prod",
            "--reboot",
            "--batch-size",
            "50%",
            "--max-failures",
            "2",
            "--pause-seconds",
            "1.5",
            "--no-drain",
            "--timeout-seconds",
            "900",
        ])
        .unwrap();
        match c.command {
            Command::Cluster(ClusterCmd::Upgrade(UpgradeCmd::Start {
                name, reboot, opts, ..
            })) => {
                assert_eq!(name, "prod");
                assert!(reboot && opts.no_drain && !opts.drain);
                assert_eq!(opts.batch_size, Some(json!("50%")));
                assert_eq!(opts.max_failures, Some(json!(2)));
                assert_eq!(opts.pause_seconds, Some(1.5));
                assert_eq!(opts.timeout_seconds, Some(900));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from([
                "commctl",
                "cluster",
                "restart",
                "start",
                "c",
                "--drain",
                "--no-drain"
            ])
            .is_err()
        );
    }
}
