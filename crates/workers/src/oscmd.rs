//! Per-OS command sets, as data, in one place.
//!
//! A host's set is chosen from its facts: the `/etc/os-release` id and whether it boots from
//! OSTree. Traditional Fedora uses dnf, RHEL/CentOS use yum, Debian/Ubuntu use apt (our
//! extension), and the OSTree ("atomic") variants ship the node packages in their image and
//! update with rpm-ostree.

/// Commands and paths for one kind of host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OsCommands {
    /// The family name used in messages (`fedora`, `rhel`, `centos`, `debian`, plus `-atomic`).
    pub name: String,
    /// Whether the host is OSTree-based.
    pub ostree: bool,
    /// Refreshes package metadata before installing (apt needs it).
    pub refresh: Option<&'static str>,
    /// Installs packages; `None` on OSTree hosts, whose image carries them.
    pub install: Option<&'static str>,
    /// The flannel package(s).
    pub flannel_packages: &'static [&'static str],
    /// The container runtime package(s).
    pub docker_packages: &'static [&'static str],
    /// The Kubernetes node package(s).
    pub kube_packages: &'static [&'static str],
    /// Where service environment files live (`/etc/sysconfig` or `/etc/default`).
    pub config_dir: &'static str,
    /// Whether SELinux options apply to docker.
    pub selinux: bool,
    /// Reboots the host.
    pub restart: &'static str,
    /// Upgrades every package (or the OSTree deployment).
    pub upgrade: &'static str,
}

/// Service names enabled by bootstrap.
pub const FLANNEL_SERVICE: &str = "flanneld";
/// The container runtime service.
pub const DOCKER_SERVICE: &str = "docker";
/// The Kubernetes node services.
pub const KUBE_SERVICES: &[&str] = &["kubelet", "kube-proxy"];

impl OsCommands {
    /// The command set for a host with `/etc/os-release` id `os_id`.
    pub fn for_host(os_id: &str, ostree: bool) -> Result<OsCommands, String> {
        // A record that only says `atomic` (the seeds' enum, no distribution id): an OSTree
        // host, whose command set does not depend on the distribution.
        let (os_id, ostree) = if os_id == model::OS_ATOMIC {
            ("fedora", true)
        } else {
            (os_id, ostree)
        };
        let family = match os_id {
            "fedora" => "fedora",
            "rhel" | "redhat" => "rhel",
            "centos" => "centos",
            "debian" | "ubuntu" => "debian",
            other => {
                return Err(format!(
                    "no command set for operating system {other:?} (supported: fedora, rhel, centos, their OSTree variants, debian, ubuntu)"
                ));
            }
        };
        if ostree {
            if family == "debian" {
                return Err("OSTree-based Debian hosts are not supported".to_string());
            }
            return Ok(OsCommands {
                name: format!("{family}-atomic"),
                ostree: true,
                refresh: None,
                install: None,
                flannel_packages: &[],
                docker_packages: &[],
                kube_packages: &[],
                config_dir: "/etc/sysconfig",
                selinux: true,
                restart: "systemctl reboot",
                upgrade: "rpm-ostree upgrade",
            });
        }
        Ok(match family {
            "fedora" => OsCommands {
                name: "fedora".into(),
                ostree: false,
                refresh: None,
                install: Some("dnf install -y"),
                flannel_packages: &["flannel"],
                docker_packages: &["docker"],
                kube_packages: &["kubernetes-node"],
                config_dir: "/etc/sysconfig",
                selinux: true,
                restart: "systemctl reboot",
                upgrade: "dnf update -y",
            },
            "rhel" | "centos" => OsCommands {
                name: family.into(),
                ostree: false,
                refresh: None,
                install: Some("yum install -y"),
                flannel_packages: &["flannel"],
                docker_packages: &["docker"],
                kube_packages: &["kubernetes-node"],
                config_dir: "/etc/sysconfig",
                selinux: true,
                restart: "systemctl reboot",
                upgrade: "yum update -y",
            },
            _ => OsCommands {
                name: "debian".into(),
                ostree: false,
                refresh: Some("apt-get update"),
                install: Some("DEBIAN_FRONTEND=noninteractive apt-get install -y"),
                flannel_packages: &["flannel"],
                docker_packages: &["docker.io"],
                kube_packages: &["kubelet", "kube-proxy"],
                config_dir: "/etc/default",
                selinux: false,
                restart: "systemctl reboot",
                upgrade: "DEBIAN_FRONTEND=noninteractive apt-get upgrade -y",
            },
        })
    }

    /// Deploys an OSTree version; only OSTree hosts can.
    pub fn deploy(&self, version: &str) -> Result<String, String> {
        if !self.ostree {
            return Err(format!(
                "deploy needs an OSTree host; this is a traditional {} host (use upgrade)",
                self.name
            ));
        }
        if version.is_empty()
            || !version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err(format!("{version:?} is not a valid OSTree version"));
        }
        Ok(format!("rpm-ostree deploy {version}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets() {
        assert_eq!(
            OsCommands::for_host("fedora", false).unwrap().upgrade,
            "dnf update -y"
        );
        assert_eq!(
            OsCommands::for_host("redhat", false).unwrap().upgrade,
            "yum update -y"
        );
        let atomic = OsCommands::for_host("centos", true).unwrap();
        assert_eq!(atomic.upgrade, "rpm-ostree upgrade");
        assert!(atomic.install.is_none());
        assert_eq!(atomic.deploy("7.2.1").unwrap(), "rpm-ostree deploy 7.2.1");
        let only_atomic = OsCommands::for_host("atomic", false).unwrap();
        assert!(only_atomic.ostree);
        assert_eq!(only_atomic.upgrade, "rpm-ostree upgrade");
        assert!(atomic.deploy("1; rm -rf /").is_err());
        assert!(
            OsCommands::for_host("fedora", false)
                .unwrap()
                .deploy("1")
                .is_err()
        );
        assert!(OsCommands::for_host("arch", false).is_err());
        assert_eq!(
            OsCommands::for_host("debian", false).unwrap().config_dir,
            "/etc/default"
        );
    }
}
