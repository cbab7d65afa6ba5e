//! Operator commands for live mode: nodes and their inventory, OS images,
//! IP pools, and live services bound to accounts.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use advps_domain::net::{pool_addresses, Cidr};
use advps_domain::{ids, time, Mode, OsType, PowerState, ServiceType};
use advps_drivers::libvirt::virsh::{LibvirtCredentials, LibvirtSsh, LibvirtTls, Virsh};
use advps_drivers::lxd::client::{ServerTrust, TlsCredentials};
use advps_drivers::proxmox::client::{PveCredentials, PveTrust};
use advps_drivers::proxmox::ssh::{PveSsh, DEFAULT_SSH_USER};
use advps_drivers::{AddressConfig, Driver, InstanceKind, PowerStatus};
use advps_server::secrets::Cipher;
use advps_server::Config;
use advps_store::{
    NewIpPool, NewLiveService, NewNode, NewOsImage, Removal, Store, StoreError, SyncedInstance,
};

use crate::cli::{DriverArg, IpPoolsCommand, NodesCommand, OsCommand, ServicesCommand, SshArgs};

fn validate_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        bail!("invalid {kind} '{name}': use 1 to 64 letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

/// A login name as Linux and Windows both accept it.
fn validate_username(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        bail!(
            "invalid username '{name}': use 1 to 32 letters, digits, '-', '_' or '.', not starting with '-'"
        );
    }
    Ok(())
}

async fn driver_of(store: &dyn Store, config: &Config, node: &str) -> Result<Arc<dyn Driver>> {
    let record = store
        .find_node(node)
        .await?
        .ok_or_else(|| anyhow!("no node named '{node}' (see `advps nodes list`)"))?;
    let cipher = load_cipher(config)?;
    advps_server::drivers::connect(
        &record,
        Duration::from_secs(config.engine_timeout_secs),
        &cipher,
    )
    .await
    .with_context(|| format!("cannot connect to node '{node}' at {}", record.endpoint))
}

/// The data directory's secret key, which also seals node credentials.
fn load_cipher(config: &Config) -> Result<Cipher> {
    Cipher::for_config(config).context("cannot load the secret key")
}

/// The credentials for an `https://` node from the operator's PEM files, or
/// none for a local socket; refuses combinations that cannot work, and an
/// https endpoint without a way to verify the server.
fn node_credentials(
    endpoint: &str,
    client_cert: Option<&Path>,
    client_key: Option<&Path>,
    server_cert: Option<&Path>,
    ca: Option<&Path>,
) -> Result<Option<TlsCredentials>> {
    let read = |what: &str, path: &Path| {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the {what} {}", path.display()))
    };
    if !endpoint.starts_with("https://") {
        if client_cert.is_some() || client_key.is_some() || server_cert.is_some() || ca.is_some() {
            bail!(
                "--client-cert, --client-key, --server-cert and --ca apply to https:// \
                 endpoints only"
            );
        }
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (client_cert, client_key) else {
        bail!("an https:// endpoint needs --client-cert FILE and --client-key FILE");
    };
    let server = match (server_cert, ca) {
        (Some(pinned), None) => ServerTrust::PinnedCert(read("server certificate", pinned)?),
        (None, Some(ca)) => ServerTrust::Ca(read("CA certificate", ca)?),
        (None, None) => bail!(
            "an https:// endpoint needs --server-cert FILE (accept exactly that certificate, \
             e.g. the node's /var/lib/lxd/server.crt) or --ca FILE (verify against a CA)"
        ),
        (Some(_), Some(_)) => bail!("give either --server-cert or --ca, not both"),
    };
    let credentials = TlsCredentials {
        client_cert: read("client certificate", cert)?,
        client_key: read("client key", key)?,
        server,
    };
    credentials
        .validate()
        .map_err(|e| anyhow!("unusable TLS credentials: {e}"))?;
    Ok(Some(credentials))
}

impl SshArgs {
    fn given(&self) -> bool {
        !self.hosts.is_empty()
            || self.user.is_some()
            || self.key.is_some()
            || self.known_hosts.is_some()
    }

    /// The SSH access to keep, checked, or none when no option was given.
    /// Never quotes the key.
    fn settings(self) -> Result<Option<PveSsh>> {
        if !self.given() {
            return Ok(None);
        }
        let missing: Vec<&str> = [
            (self.hosts.is_empty(), "--ssh-host"),
            (self.key.is_none(), "--ssh-key"),
            (self.known_hosts.is_none(), "--ssh-known-hosts"),
        ]
        .into_iter()
        .filter_map(|(absent, name)| absent.then_some(name))
        .collect();
        let (false, Some(key), Some(known_hosts)) =
            (self.hosts.is_empty(), self.key, self.known_hosts)
        else {
            bail!(
                "SSH access for `pct exec` needs --ssh-host, --ssh-key and --ssh-known-hosts \
                 together (missing: {})",
                missing.join(", ")
            );
        };
        let settings = PveSsh {
            user: self.user.unwrap_or_else(|| DEFAULT_SSH_USER.to_string()),
            hosts: self.hosts,
            private_key: std::fs::read_to_string(&key)
                .with_context(|| format!("cannot read the SSH key {}", key.display()))?,
            known_hosts: std::fs::read_to_string(&known_hosts).with_context(|| {
                format!("cannot read the known_hosts file {}", known_hosts.display())
            })?,
        };
        settings
            .validate()
            .map_err(|e| anyhow!("unusable SSH access: {e}"))?;
        // The server runs the OpenSSH client; better to learn now that it is
        // not there than at a customer's first password change.
        match std::process::Command::new("ssh")
            .arg("-V")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
        {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "the OpenSSH client `ssh` is not installed here; install openssh-client so that \
                 advps can run `pct exec` on the nodes"
            ),
            _ => {}
        }
        Ok(Some(settings))
    }
}

/// Where `pct exec` runs, for showing: `[NODE=]USER@HOST[:PORT]` per host.
fn describe_ssh(ssh: &PveSsh) -> String {
    ssh.hosts
        .iter()
        .map(|entry| match entry.split_once('=') {
            Some((node, host)) => format!("{node}={}@{host}", ssh.user),
            None => format!("{}@{entry}", ssh.user),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a libvirt node's sealed credentials are, without a word of them.
fn describe_libvirt(credentials: &LibvirtCredentials) -> String {
    match (&credentials.ssh, &credentials.tls) {
        (Some(ssh), _) => {
            let keys = ssh
                .known_hosts
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                .count();
            format!("sealed key, {keys} host key(s)")
        }
        (None, Some(_)) => "TLS (sealed client certificate)".into(),
        (None, None) => "-".into(),
    }
}

/// The sealed credentials of a libvirt node from the operator's files:
/// `--ssh-key` with `--ssh-known-hosts` for `qemu+ssh://` (the host and
/// user are the URI's), `--client-cert`, `--client-key` and `--ca` for
/// `qemu+tls://`, or none (virsh then uses the service user's own
/// settings). Checked against the URI; never quotes a key.
fn libvirt_credentials(
    endpoint: &str,
    foreign: bool,
    client_cert: Option<&Path>,
    client_key: Option<&Path>,
    ca: Option<&Path>,
    ssh: &SshArgs,
) -> Result<Option<LibvirtCredentials>> {
    if foreign {
        bail!("--token, --fingerprint and --server-cert do not apply to libvirt nodes");
    }
    if !ssh.hosts.is_empty() || ssh.user.is_some() {
        bail!(
            "a libvirt node's SSH host, port and user are those of its endpoint \
             (qemu+ssh://USER@HOST[:PORT]/system); --ssh-host and --ssh-user apply to Proxmox \
             VE nodes only"
        );
    }
    let read = |what: &str, path: &Path| {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the {what} {}", path.display()))
    };
    let mut credentials = LibvirtCredentials::default();
    match (&ssh.key, &ssh.known_hosts) {
        (None, None) => {}
        (Some(key), Some(known_hosts)) => {
            credentials.ssh = Some(LibvirtSsh {
                private_key: read("SSH key", key)?,
                known_hosts: read("known_hosts file", known_hosts)?,
            });
        }
        _ => bail!(
            "--ssh-key and --ssh-known-hosts go together: the host key is checked against the \
             given known_hosts only"
        ),
    }
    match (client_cert, client_key, ca) {
        (None, None, None) => {}
        (Some(cert), Some(key), Some(ca)) => {
            credentials.tls = Some(LibvirtTls {
                ca_cert: read("CA certificate", ca)?,
                client_cert: read("client certificate", cert)?,
                client_key: read("client key", key)?,
            });
        }
        _ => bail!(
            "a qemu+tls:// node's sealed TLS files are --client-cert, --client-key and --ca \
             (the CA that signed libvirtd's certificate), all three"
        ),
    }
    if credentials.is_empty() {
        return Ok(None);
    }
    Virsh::new(endpoint)
        .with_credentials(&credentials)
        .map_err(|e| anyhow!("unusable libvirt credentials: {e}"))?;
    Ok(Some(credentials))
}

/// `nodes set-ssh` for a libvirt node: replaces its sealed key and
/// known_hosts (checked against its endpoint), or removes them so that virsh
/// uses the service user's own SSH settings again.
async fn set_libvirt_ssh(
    store: &dyn Store,
    config: &Config,
    node: &advps_store::NodeRecord,
    remove: bool,
    ssh: &SshArgs,
) -> Result<()> {
    let name = &node.name;
    let cipher = load_cipher(config)?;
    if let Some(stored) = node.credentials_enc.as_deref() {
        let current = advps_server::drivers::open_libvirt_credentials(&cipher, stored)
            .with_context(|| format!("cannot open the stored credentials of node '{name}'"))?;
        if current.tls.is_some() {
            bail!(
                "node '{name}' is reached over TLS with sealed client files; it has no SSH access"
            );
        }
    }
    let credentials = if remove {
        None
    } else {
        Some(
            libvirt_credentials(&node.endpoint, false, None, None, None, ssh)?
                .ok_or_else(|| anyhow!("give --ssh-key and --ssh-known-hosts, or --remove"))?,
        )
    };
    let sealed = credentials
        .as_ref()
        .map(|c| advps_server::drivers::seal_libvirt_credentials(&cipher, c));
    if !store.set_node_credentials(name, sealed.as_deref()).await? {
        bail!("node '{name}' was removed meanwhile");
    }
    match credentials.as_ref() {
        Some(c) => println!("Node {name}: remote access: {}", describe_libvirt(c)),
        None => println!(
            "Node {name}: sealed SSH access removed (the service user's own SSH settings apply)"
        ),
    }
    println!("Running servers use the change once they are restarted.");
    Ok(())
}

/// The credentials of a Proxmox VE node: the API token, how to verify the
/// server (a pinned fingerprint or a CA) and the optional SSH access,
/// checked before they are kept.
fn pve_credentials(
    endpoint: &str,
    token: Option<String>,
    fingerprint: Option<String>,
    ca: Option<&Path>,
    lxd_only: bool,
    ssh: SshArgs,
) -> Result<PveCredentials> {
    if lxd_only {
        bail!("--client-cert, --client-key and --server-cert apply to LXD nodes only");
    }
    if !endpoint.starts_with("https://") {
        bail!("a Proxmox VE node is reached at https://HOST:8006");
    }
    let Some(token) = token else {
        bail!("a Proxmox VE node needs --token USER@REALM!TOKENID=SECRET (or ADVPS_PVE_TOKEN)");
    };
    let server = match (fingerprint, ca) {
        (Some(fp), None) => PveTrust::Fingerprint(fp),
        (None, Some(ca)) => PveTrust::Ca(
            std::fs::read_to_string(ca)
                .with_context(|| format!("cannot read the CA certificate {}", ca.display()))?,
        ),
        (None, None) => bail!(
            "a Proxmox VE node needs --fingerprint SHA256 (the node certificate's fingerprint, \
             AB:CD:...) or --ca FILE (e.g. the cluster's /etc/pve/pve-root-ca.pem)"
        ),
        (Some(_), Some(_)) => bail!("give either --fingerprint or --ca, not both"),
    };
    let credentials = PveCredentials {
        token,
        server,
        ssh: ssh.settings()?,
    };
    credentials
        .validate()
        .map_err(|e| anyhow!("unusable Proxmox VE credentials: {e}"))?;
    Ok(credentials)
}

pub async fn nodes(store: &Arc<dyn Store>, config: &Config, cmd: NodesCommand) -> Result<()> {
    match cmd {
        NodesCommand::Add {
            name,
            driver,
            endpoint,
            token,
            fingerprint,
            client_cert,
            client_key,
            server_cert,
            ca,
            ssh,
        } => {
            validate_name("node name", &name)?;
            let mut ssh_shown = None;
            let cipher = load_cipher(config)?;
            // Only the sealed form is kept: the database never sees the key
            // or the token.
            let (driver, credentials_enc) = match driver {
                DriverArg::Lxd => {
                    if token.is_some() || fingerprint.is_some() {
                        bail!("--token and --fingerprint apply to Proxmox VE nodes only");
                    }
                    if ssh.given() {
                        bail!(
                            "--ssh-host, --ssh-user, --ssh-key and --ssh-known-hosts apply to \
                             Proxmox VE nodes only (and the key and known_hosts to qemu+ssh:// \
                             libvirt nodes); LXD sets container passwords through its own API"
                        );
                    }
                    let credentials = node_credentials(
                        &endpoint,
                        client_cert.as_deref(),
                        client_key.as_deref(),
                        server_cert.as_deref(),
                        ca.as_deref(),
                    )?;
                    let sealed = credentials
                        .as_ref()
                        .map(|c| advps_server::drivers::seal_credentials(&cipher, c));
                    ("lxd", sealed)
                }
                DriverArg::Libvirt => {
                    let credentials = libvirt_credentials(
                        &endpoint,
                        token.is_some() || fingerprint.is_some() || server_cert.is_some(),
                        client_cert.as_deref(),
                        client_key.as_deref(),
                        ca.as_deref(),
                        &ssh,
                    )?;
                    ssh_shown = credentials.as_ref().map(describe_libvirt);
                    let sealed = credentials
                        .as_ref()
                        .map(|c| advps_server::drivers::seal_libvirt_credentials(&cipher, c));
                    ("libvirt", sealed)
                }
                DriverArg::Proxmox => {
                    let credentials = pve_credentials(
                        &endpoint,
                        token,
                        fingerprint,
                        ca.as_deref(),
                        client_cert.is_some() || client_key.is_some() || server_cert.is_some(),
                        *ssh,
                    )?;
                    ssh_shown = credentials.ssh.as_ref().map(describe_ssh);
                    let sealed = advps_server::drivers::seal_pve_credentials(&cipher, &credentials);
                    ("proxmox", Some(sealed))
                }
            };
            let record = NewNode {
                name: name.clone(),
                driver: driver.to_string(),
                endpoint: endpoint.clone(),
                credentials_enc: credentials_enc.clone(),
                now: time::now_millis(),
            };
            // Refuse a node that cannot be reached: a typo found now, not at the first customer call.
            let probe = advps_store::NodeRecord {
                id: 0,
                name: name.clone(),
                driver: driver.to_string(),
                endpoint: endpoint.clone(),
                credentials_enc,
                created_at: 0,
            };
            let connected = advps_server::drivers::connect(
                &probe,
                Duration::from_secs(config.engine_timeout_secs),
                &cipher,
            )
            .await
            .with_context(|| format!("cannot reach {driver} at {endpoint}"))?;
            let caps = connected.capabilities().await?;
            match store.create_node(&record).await {
                Ok(_) => {
                    println!(
                        "Added node {name} ({driver} at {endpoint}; containers: {}, virtual machines: {})",
                        yes_no(caps.containers),
                        yes_no(caps.virtual_machines)
                    );
                    match (driver, ssh_shown) {
                        ("libvirt", Some(access)) => println!("Remote access: {access}"),
                        (_, Some(ssh)) => {
                            println!("Container passwords: `pct exec` over SSH at {ssh}")
                        }
                        (_, None) => {}
                    }
                }
                Err(StoreError::Conflict(_)) => bail!("node '{name}' already exists"),
                Err(e) => return Err(e.into()),
            }
        }
        NodesCommand::SetSsh { name, remove, ssh } => {
            let node = store
                .find_node(&name)
                .await?
                .ok_or_else(|| anyhow!("no node named '{name}' (see `advps nodes list`)"))?;
            if node.driver == "libvirt" {
                return set_libvirt_ssh(store.as_ref(), config, &node, remove, &ssh).await;
            }
            if node.driver != "proxmox" {
                bail!(
                    "node '{name}' uses the {} driver; SSH access for `pct exec` applies to \
                     Proxmox VE nodes only",
                    node.driver
                );
            }
            let ssh = if remove {
                None
            } else {
                Some(ssh.settings()?.ok_or_else(|| {
                    anyhow!(
                        "give --ssh-host, --ssh-key and --ssh-known-hosts (and --ssh-user unless \
                         it is {DEFAULT_SSH_USER}), or --remove"
                    )
                })?)
            };
            let cipher = load_cipher(config)?;
            let stored = node.credentials_enc.as_deref().ok_or_else(|| {
                anyhow!("node '{name}' has no stored credentials (no API token) to change")
            })?;
            // Only the ssh part changes: the token and the server trust are
            // carried over from what is stored, never asked for again.
            let mut credentials = advps_server::drivers::open_pve_credentials(&cipher, stored)
                .with_context(|| format!("cannot open the stored credentials of node '{name}'"))?;
            credentials.ssh = ssh;
            credentials
                .validate()
                .map_err(|e| anyhow!("unusable Proxmox VE credentials: {e}"))?;
            let sealed = advps_server::drivers::seal_pve_credentials(&cipher, &credentials);
            if !store.set_node_credentials(&name, Some(&sealed)).await? {
                bail!("node '{name}' was removed meanwhile");
            }
            match credentials.ssh.as_ref().map(describe_ssh) {
                Some(ssh) => {
                    println!("Node {name}: container passwords: `pct exec` over SSH at {ssh}")
                }
                None => println!("Node {name}: SSH access removed"),
            }
            // A server connects each node once and keeps it.
            println!("Running servers use the change once they are restarted.");
        }
        NodesCommand::List => {
            println!(
                "{:<20} {:<8} {:<45} {:<24} SSH",
                "NAME", "DRIVER", "ENDPOINT", "CREATED"
            );
            let nodes = store.list_nodes().await?;
            // Only needed to say whether a Proxmox or libvirt node has SSH
            // access (never what the key is).
            let cipher = nodes
                .iter()
                .any(|n| n.driver == "proxmox" || n.driver == "libvirt")
                .then(|| load_cipher(config).ok())
                .flatten();
            for node in nodes {
                let ssh = match (node.driver.as_str(), &node.credentials_enc, &cipher) {
                    ("proxmox", Some(sealed), Some(cipher)) => {
                        match advps_server::drivers::open_pve_credentials(cipher, sealed) {
                            Ok(credentials) => credentials
                                .ssh
                                .as_ref()
                                .map(describe_ssh)
                                .unwrap_or_else(|| "-".into()),
                            Err(_) => "?".into(),
                        }
                    }
                    ("libvirt", Some(sealed), Some(cipher)) => {
                        match advps_server::drivers::open_libvirt_credentials(cipher, sealed) {
                            Ok(credentials) => describe_libvirt(&credentials),
                            Err(_) => "?".into(),
                        }
                    }
                    ("proxmox" | "libvirt", Some(_), None) => "?".into(),
                    _ => "-".into(),
                };
                println!(
                    "{:<20} {:<8} {:<45} {:<24} {}",
                    node.name,
                    node.driver,
                    node.endpoint,
                    time::format_millis(node.created_at),
                    ssh
                );
            }
        }
        NodesCommand::Sync { name } => {
            let driver = driver_of(store.as_ref(), config, &name).await?;
            let instances = driver.list_instances().await?;
            let seen: Vec<SyncedInstance> = instances
                .iter()
                .map(|i| SyncedInstance {
                    engine_id: i.name.clone(),
                    kind: i.kind.as_str().to_string(),
                    memory_mb: i.memory_mb.map(|m| m as i64),
                    engine_state: i.power.lower().to_string(),
                })
                .collect();
            let summary = store
                .sync_instances(&name, &seen, time::now_millis())
                .await?;
            println!(
                "Synced node {name}: {} instances ({} new, {} updated, {} missing)",
                instances.len(),
                summary.added,
                summary.updated,
                summary.missing
            );
            let images = driver.list_images().await?;
            if !images.is_empty() {
                println!("Images on the node (map them with `advps os add`):");
                for image in images {
                    println!(
                        "  {:<30} {:<9} {}",
                        image.alias,
                        image.kind.as_str(),
                        image.description
                    );
                }
            }
        }
        NodesCommand::Instances { node } => {
            println!(
                "{:<16} {:<28} {:<9} {:<9} {:>8} {:<14} PRODUCT",
                "NODE", "INSTANCE", "KIND", "STATE", "MEM_MB", "INVENTORY"
            );
            for i in store.list_instances(node.as_deref()).await? {
                println!(
                    "{:<16} {:<28} {:<9} {:<9} {:>8} {:<14} {}",
                    i.node,
                    i.engine_id,
                    i.kind,
                    i.engine_state.as_deref().unwrap_or("-"),
                    i.memory_mb
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| "-".into()),
                    if i.healthy {
                        i.state.clone()
                    } else {
                        format!("{} (gone)", i.state)
                    },
                    i.product_id.as_deref().unwrap_or("-")
                );
            }
        }
        NodesCommand::SetProduct {
            node,
            instance,
            product,
        } => {
            let found = store
                .find_instance(&node, &instance)
                .await?
                .ok_or_else(|| {
                    anyhow!(
                        "no instance '{instance}' on node '{node}' (run `advps nodes sync {node}`)"
                    )
                })?;
            if let Some(product) = &product {
                if store
                    .find_product(Mode::Live, product, None)
                    .await?
                    .is_none()
                {
                    bail!("no live product '{product}' (see `advps products list`)");
                }
            }
            store
                .set_instance_product(found.id, product.as_deref())
                .await?;
            match product {
                Some(p) => println!("Instance {instance} on {node} counts as stock of {p}"),
                None => println!("Instance {instance} on {node} counts as stock of no product"),
            }
        }
    }
    Ok(())
}

fn yes_no(v: bool) -> &'static str {
    if v {
        "yes"
    } else {
        "no"
    }
}

pub async fn os(store: &Arc<dyn Store>, cmd: OsCommand) -> Result<()> {
    match cmd {
        OsCommand::Add {
            slug,
            name,
            os_type,
            image,
            node,
            username,
        } => {
            validate_name("OS slug", &slug)?;
            if let Some(username) = &username {
                validate_username(username)?;
            }
            if let Some(node) = &node {
                if store.find_node(node).await?.is_none() {
                    bail!("no node named '{node}' (see `advps nodes list`)");
                }
            }
            let os_type: OsType = os_type.into();
            let record = NewOsImage {
                slug: slug.clone(),
                name: name.clone(),
                os_type,
                image: image.clone(),
                node: node.clone(),
                username: username.clone(),
                now: time::now_millis(),
            };
            let login = username
                .unwrap_or_else(|| advps_domain::os::default_username(&slug, &name).to_string());
            match store.add_os_image(&record).await {
                Ok(()) => println!(
                    "Added OS {slug} ({name}, {os_type}) -> image {image} on {}, login {login}",
                    node.as_deref().unwrap_or("every node")
                ),
                Err(StoreError::Conflict(_)) => {
                    bail!("OS '{slug}' ({os_type}) is already mapped on that node")
                }
                Err(e) => return Err(e.into()),
            }
        }
        OsCommand::List => {
            println!(
                "{:<18} {:<24} {:<4} {:<24} {:<14} NODE",
                "SLUG", "NAME", "TYPE", "IMAGE", "LOGIN"
            );
            for os in store.list_os_images().await? {
                println!(
                    "{:<18} {:<24} {:<4} {:<24} {:<14} {}",
                    os.slug,
                    os.name,
                    os.os_type.as_str(),
                    os.image,
                    os.login_name(),
                    os.node.as_deref().unwrap_or("(every node)")
                );
            }
        }
        OsCommand::Remove { slug } => match store.remove_os(&slug).await? {
            Removal::Removed => println!("Removed OS {slug}"),
            Removal::NotFound => bail!("no OS '{slug}' (see `advps os list`)"),
            Removal::InUse(users) => bail!(
                "OS {slug} is still used by {users}; rebuild or remove those services and \
                 give those products another default OS first"
            ),
        },
    }
    Ok(())
}

pub async fn ippools(store: &Arc<dyn Store>, cmd: IpPoolsCommand) -> Result<()> {
    match cmd {
        IpPoolsCommand::Add {
            name,
            cidr,
            gateway,
            range,
            node,
        } => {
            validate_name("pool name", &name)?;
            let parsed = Cidr::parse(&cidr)?;
            let gateway: Ipv4Addr = gateway
                .parse()
                .map_err(|_| anyhow!("'{gateway}' is not an IPv4 address"))?;
            let addresses = pool_addresses(&parsed, gateway, range.as_deref())?;
            if let Some(node) = &node {
                if store.find_node(node).await?.is_none() {
                    bail!("no node named '{node}' (see `advps nodes list`)");
                }
            }
            let pool = NewIpPool {
                name: name.clone(),
                cidr: parsed.to_string(),
                prefix: parsed.prefix,
                gateway: gateway.to_string(),
                node,
                addresses: addresses.iter().map(ToString::to_string).collect(),
                now: time::now_millis(),
            };
            match store.create_ip_pool(&pool).await {
                Ok(p) => println!(
                    "Added IP pool {} ({}, gateway {}, {} addresses)",
                    p.name, p.cidr, p.gateway, p.total
                ),
                Err(StoreError::Conflict(what)) => {
                    bail!("cannot add pool '{name}': {what} already exists")
                }
                Err(e) => return Err(e.into()),
            }
        }
        IpPoolsCommand::List => {
            println!(
                "{:<16} {:<18} {:<16} {:>6} {:>6} NODE",
                "NAME", "CIDR", "GATEWAY", "TOTAL", "FREE"
            );
            for p in store.list_ip_pools().await? {
                println!(
                    "{:<16} {:<18} {:<16} {:>6} {:>6} {}",
                    p.name,
                    p.cidr,
                    p.gateway,
                    p.total,
                    p.free,
                    p.node.as_deref().unwrap_or("(every node)")
                );
            }
        }
        IpPoolsCommand::Remove { name } => match store.remove_ip_pool(&name).await? {
            Removal::Removed => println!("Removed IP pool {name}"),
            Removal::NotFound => bail!("no IP pool named '{name}' (see `advps ippools list`)"),
            Removal::InUse(users) => bail!(
                "IP pool {name} still has {users}; remove the services that hold them first \
                 (`advps services list`)"
            ),
        },
    }
    Ok(())
}

pub async fn services(store: &Arc<dyn Store>, config: &Config, cmd: ServicesCommand) -> Result<()> {
    match cmd {
        ServicesCommand::Create {
            account,
            node,
            instance,
            service_type,
            os,
            validity,
        } => {
            let account = store.find_account(&account).await?.ok_or_else(|| {
                anyhow!("no account named '{account}' (see `advps accounts list`)")
            })?;
            let service_type: ServiceType = service_type.into();
            let found = store
                .find_instance(&node, &instance)
                .await?
                .ok_or_else(|| {
                    anyhow!(
                        "no instance '{instance}' on node '{node}' (run `advps nodes sync {node}`)"
                    )
                })?;
            let wants_vm = !service_type.is_container();
            let is_vm = found.kind == InstanceKind::VirtualMachine.as_str();
            if wants_vm != is_vm {
                bail!(
                    "instance '{instance}' is a {}, which cannot be a {} service",
                    found.kind,
                    service_type.as_str()
                );
            }
            let driver = driver_of(store.as_ref(), config, &node).await?;
            let live = driver.status(&instance).await?;
            let power = if live.power == PowerStatus::Running {
                PowerState::Running
            } else {
                PowerState::Stopped
            };
            let now = time::now_millis();
            let mut service = None;
            for _ in 0..5 {
                let candidate = NewLiveService {
                    account_id: account.id,
                    service_id: ids::live_service_id(),
                    service_type,
                    instance_id: found.id,
                    power_state: power,
                    expires_at: Some(now + i64::from(validity) * 86_400_000),
                    now,
                };
                match store.bind_live_service(&candidate).await {
                    Ok(s) => {
                        service = Some(s);
                        break;
                    }
                    Err(StoreError::Conflict(what)) if what.starts_with("service") => continue,
                    Err(StoreError::Conflict(what)) => bail!("cannot bind '{instance}': {what}"),
                    Err(e) => return Err(e.into()),
                }
            }
            let service = service.ok_or_else(|| anyhow!("could not pick a free service id"))?;
            if let Some(slug) = os {
                let images = store.os_images_by_slug(&slug).await?;
                let name = images
                    .first()
                    .map(|i| i.name.clone())
                    .unwrap_or_else(|| slug.clone());
                store.set_service_os(service.pk, &slug, &name).await?;
            }
            println!(
                "Bound {instance} on {node} to account {} as {} service {}",
                account.name,
                service_type.as_str(),
                service.service_id
            );
            // A container gets its address when it is bound; VMs get theirs through get-ip.
            if service_type == ServiceType::Linux {
                match store
                    .allocate_address(service.pk, &node, time::now_millis())
                    .await?
                {
                    None => eprintln!(
                        "warning: no free address in the IP pools of node {node}; none was given"
                    ),
                    Some(lease) => {
                        let config = AddressConfig {
                            address: lease.address.parse()?,
                            prefix: lease.prefix,
                            gateway: lease.gateway.parse().ok(),
                        };
                        if power == PowerState::Running {
                            driver
                                .configure_address(&instance, &config)
                                .await
                                .with_context(|| {
                                    format!(
                                        "address {} was allocated but could not be configured",
                                        lease.address
                                    )
                                })?;
                            println!(
                                "Address {}/{} configured (pool {})",
                                lease.address, lease.prefix, lease.pool
                            );
                        } else {
                            println!(
                                "Address {}/{} allocated (pool {}); it is configured when the service starts",
                                lease.address, lease.prefix, lease.pool
                            );
                        }
                    }
                }
            }
            println!("{}", service.service_id);
        }
        ServicesCommand::List { all } => {
            println!(
                "{:<16} {:<5} {:<16} {:<16} {:<12} {:<24} {:<16} EXPIRES",
                "ACCOUNT", "MODE", "SERVICE", "TYPE", "STATE", "NODE/INSTANCE", "IP"
            );
            let mode = if all { None } else { Some(Mode::Live) };
            for listing in store.list_services(mode).await? {
                let s = &listing.service;
                println!(
                    "{:<16} {:<5} {:<16} {:<16} {:<12} {:<24} {:<16} {}",
                    listing.account_name,
                    s.mode.as_str(),
                    s.service_id,
                    s.service_type.as_str(),
                    s.power_state.as_str(),
                    format!("{}/{}", s.node.as_deref().unwrap_or("sandbox"), s.vmid),
                    s.ip.as_deref().unwrap_or("-"),
                    s.expires_at
                        .map(time::format_millis)
                        .unwrap_or_else(|| "-".into())
                );
            }
        }
        ServicesCommand::SetExpiry {
            account,
            mode,
            service_id,
            at,
            in_seconds,
        } => {
            let account = store
                .find_account(&account)
                .await?
                .ok_or_else(|| anyhow!("no account named '{account}'"))?;
            let mode: Mode = mode.into();
            let scope = advps_store::Scope {
                account_id: account.id,
                mode,
            };
            let service = store
                .find_service(scope, &service_id)
                .await?
                .ok_or_else(|| {
                    anyhow!(
                        "account {} has no {mode} service '{service_id}'",
                        account.name
                    )
                })?;
            let expires_at = match (at, in_seconds) {
                (Some(at), _) => chrono::DateTime::parse_from_rfc3339(&at)
                    .map_err(|_| {
                        anyhow!("'{at}' is not an RFC 3339 time like 2026-12-31T00:00:00Z")
                    })?
                    .timestamp_millis(),
                (None, Some(secs)) => time::now_millis() + secs.saturating_mul(1000),
                (None, None) => bail!("give --at TIME or --in SECONDS"),
            };
            store.set_service_expiry(service.pk, expires_at).await?;
            println!(
                "Service {service_id} expires at {}",
                time::format_millis(expires_at)
            );
        }
        ServicesCommand::Remove {
            account,
            service_id,
        } => {
            let account = store
                .find_account(&account)
                .await?
                .ok_or_else(|| anyhow!("no account named '{account}'"))?;
            let scope = advps_store::Scope {
                account_id: account.id,
                mode: Mode::Live,
            };
            let service = store
                .find_service(scope, &service_id)
                .await?
                .ok_or_else(|| {
                    anyhow!(
                        "account {} has no live service '{service_id}'",
                        account.name
                    )
                })?;
            if service.power_state.is_busy() {
                bail!("service {service_id} is busy with a task; try again when it has finished");
            }
            store.remove_service(service.pk, "free").await?;
            println!("Removed service {service_id}; its instance is back in inventory");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXkSECRETKEY\n\
                       -----END OPENSSH PRIVATE KEY-----\n";

    fn pem(label: &str, body: &str) -> String {
        format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
    }

    #[test]
    fn libvirt_nodes_take_a_key_with_host_keys_or_tls_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let key = file("id", KEY);
        let known = file("known_hosts", "[10.0.0.2]:2222 ssh-ed25519 AAAAC3Nza\n");
        let ca = file("ca.pem", &pem("CERTIFICATE", "MIIca"));
        let cert = file("cert.pem", &pem("CERTIFICATE", "MIIcert"));
        let client_key = file("key.pem", &pem("PRIVATE KEY", "MIIsecret"));
        let ssh = |key: Option<&Path>, known: Option<&Path>| SshArgs {
            hosts: Vec::new(),
            user: None,
            key: key.map(Path::to_path_buf),
            known_hosts: known.map(Path::to_path_buf),
        };
        let endpoint = "qemu+ssh://root@10.0.0.2:2222/system";
        let none = ssh(None, None);

        // Nothing given: the service user's own settings, nothing sealed.
        assert!(
            libvirt_credentials(endpoint, false, None, None, None, &none)
                .unwrap()
                .is_none()
        );
        let sealed = libvirt_credentials(
            endpoint,
            false,
            None,
            None,
            None,
            &ssh(Some(&key), Some(&known)),
        )
        .unwrap()
        .expect("credentials");
        assert_eq!(sealed.ssh.as_ref().unwrap().private_key, KEY);
        assert_eq!(describe_libvirt(&sealed), "sealed key, 1 host key(s)");

        let refused = |result: Result<Option<LibvirtCredentials>>, needle: &str| {
            let message = format!("{:#}", result.unwrap_err());
            assert!(message.contains(needle), "{needle:?} not in {message}");
            assert!(!message.contains("SECRETKEY"), "{message}");
        };
        refused(
            libvirt_credentials(endpoint, false, None, None, None, &ssh(Some(&key), None)),
            "go together",
        );
        let mut with_host = ssh(Some(&key), Some(&known));
        with_host.hosts = vec!["10.0.0.2".into()];
        refused(
            libvirt_credentials(endpoint, false, None, None, None, &with_host),
            "qemu+ssh://USER@HOST",
        );
        refused(
            libvirt_credentials(endpoint, true, None, None, None, &none),
            "do not apply",
        );
        // The key is for the endpoint's host, and for SSH endpoints only.
        refused(
            libvirt_credentials(
                "qemu+ssh://root@10.0.0.3/system",
                false,
                None,
                None,
                None,
                &ssh(Some(&key), Some(&known)),
            ),
            "10.0.0.3",
        );
        refused(
            libvirt_credentials(
                "qemu:///system",
                false,
                None,
                None,
                None,
                &ssh(Some(&key), Some(&known)),
            ),
            "qemu+ssh://",
        );

        // TLS: all three files, for qemu+tls:// only.
        let tls = libvirt_credentials(
            "qemu+tls://kvm3/system",
            false,
            Some(&cert),
            Some(&client_key),
            Some(&ca),
            &none,
        )
        .unwrap()
        .expect("credentials");
        assert!(tls.tls.as_ref().unwrap().client_key.contains("MIIsecret"));
        assert_eq!(describe_libvirt(&tls), "TLS (sealed client certificate)");
        refused(
            libvirt_credentials(
                "qemu+tls://kvm3/system",
                false,
                Some(&cert),
                Some(&client_key),
                None,
                &none,
            ),
            "all three",
        );
        refused(
            libvirt_credentials(
                endpoint,
                false,
                Some(&cert),
                Some(&client_key),
                Some(&ca),
                &none,
            ),
            "qemu+tls://",
        );
    }
}
