//! The drivers of the registered nodes, connected on first use and kept.
//!
//! A node's endpoint says how to reach it:
//! - `unix:///var/lib/lxd/unix.socket` (or a plain socket path) for a local
//!   LXD/Incus;
//! - `https://host:port` for a remote one, with a client certificate. Its
//!   credentials ([`TlsCredentials`]: certificate, private key, and how the
//!   server is verified) are kept as JSON in the node's `credentials_enc`,
//!   encrypted with the same key as the stored passwords, so the database
//!   never holds the private key in the clear.
//!
//! A Proxmox VE node (`proxmox`) is `https://HOST:8006`, any node of the
//! cluster (pveproxy forwards to the others, so one record serves the whole
//! cluster). Its credentials ([`PveCredentials`]: the API token, the
//! server's pinned fingerprint or CA, and optionally the SSH key and host
//! keys for `pct exec` on the nodes) are sealed the same way.
//!
//! A libvirt node (`libvirt`) is a libvirt connection URI: `qemu:///system`
//! on the same host, `qemu+ssh://USER@HOST/system` or
//! `qemu+tls://HOST/system` for remote ones, reached through `virsh`. A
//! remote one may have sealed credentials ([`LibvirtCredentials`]: an SSH
//! key with the host's known_hosts lines, or TLS client files), written
//! for each virsh call only; without them virsh uses the service user's
//! own SSH or TLS settings.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use advps_drivers::libvirt::virsh::{LibvirtCredentials, Virsh};
use advps_drivers::libvirt::LibvirtDriver;
use advps_drivers::lxd::client::{LxdClient, TlsCredentials};
use advps_drivers::lxd::LxdDriver;
use advps_drivers::proxmox::client::{PveClient, PveCredentials};
use advps_drivers::proxmox::ssh::PctExec;
use advps_drivers::proxmox::ProxmoxDriver;
use advps_drivers::{Driver, DriverError};
use advps_store::{NodeRecord, Store};
use tokio::sync::Mutex;

use crate::secrets::Cipher;

pub struct DriverRegistry {
    store: Arc<dyn Store>,
    request_timeout: Duration,
    cipher: Cipher,
    connected: Mutex<HashMap<String, Arc<dyn Driver>>>,
}

/// Where a unix endpoint's socket is, if the endpoint is one.
pub fn unix_socket_of(endpoint: &str) -> Option<PathBuf> {
    if let Some(rest) = endpoint.strip_prefix("unix://") {
        Some(PathBuf::from(rest))
    } else if let Some(rest) = endpoint.strip_prefix("unix:") {
        Some(PathBuf::from(rest))
    } else if endpoint.starts_with('/') {
        Some(PathBuf::from(endpoint))
    } else {
        None
    }
}

/// Encrypts a node's TLS credentials for `NodeRecord.credentials_enc`.
pub fn seal_credentials(cipher: &Cipher, credentials: &TlsCredentials) -> String {
    cipher.encrypt(&credentials.to_json())
}

/// Decrypts and parses a node's stored TLS credentials.
pub fn open_credentials(cipher: &Cipher, stored: &str) -> Result<TlsCredentials, DriverError> {
    let json = cipher.decrypt(stored).map_err(|e| {
        DriverError::Unreachable(format!("the node's credentials cannot be read: {e}"))
    })?;
    TlsCredentials::from_json(&json).map_err(DriverError::Unreachable)
}

/// Encrypts a Proxmox node's token and trust settings.
pub fn seal_pve_credentials(cipher: &Cipher, credentials: &PveCredentials) -> String {
    cipher.encrypt(&credentials.to_json())
}

/// Decrypts and parses a Proxmox node's stored credentials.
pub fn open_pve_credentials(cipher: &Cipher, stored: &str) -> Result<PveCredentials, DriverError> {
    let json = cipher.decrypt(stored).map_err(|e| {
        DriverError::Unreachable(format!("the node's credentials cannot be read: {e}"))
    })?;
    PveCredentials::from_json(&json).map_err(DriverError::Unreachable)
}

/// Encrypts a libvirt node's SSH or TLS credentials.
pub fn seal_libvirt_credentials(cipher: &Cipher, credentials: &LibvirtCredentials) -> String {
    cipher.encrypt(&credentials.to_json())
}

/// Decrypts and parses a libvirt node's stored credentials.
pub fn open_libvirt_credentials(
    cipher: &Cipher,
    stored: &str,
) -> Result<LibvirtCredentials, DriverError> {
    let json = cipher.decrypt(stored).map_err(|e| {
        DriverError::Unreachable(format!("the node's credentials cannot be read: {e}"))
    })?;
    LibvirtCredentials::from_json(&json).map_err(DriverError::Unreachable)
}

/// How advps reaches a Proxmox VE cluster: its API, and its nodes over SSH
/// when the operator registered a key for that.
pub struct PveAccess {
    pub client: PveClient,
    pub pct_exec: Option<PctExec>,
}

/// Opens a Proxmox VE node's stored credentials once, for both its API
/// client and its SSH access.
pub fn pve_access_for(node: &NodeRecord, cipher: &Cipher) -> Result<PveAccess, DriverError> {
    let stored = node.credentials_enc.as_deref().ok_or_else(|| {
        DriverError::Unreachable(format!(
            "node '{}' at {} has no API token stored (register it with --token and \
             --fingerprint or --ca)",
            node.name, node.endpoint
        ))
    })?;
    let credentials = open_pve_credentials(cipher, stored)?;
    let client = PveClient::new(&node.endpoint, &credentials)?;
    let pct_exec = credentials
        .ssh
        .as_ref()
        .map(PctExec::new)
        .transpose()
        .map_err(|e| {
            DriverError::Unreachable(format!("node '{}': stored SSH access: {e}", node.name))
        })?;
    Ok(PveAccess { client, pct_exec })
}

/// The API client for a Proxmox VE node: its endpoint and stored token.
pub fn pve_client_for(node: &NodeRecord, cipher: &Cipher) -> Result<PveClient, DriverError> {
    pve_access_for(node, cipher).map(|access| access.client)
}

/// The API client for an LXD node, by its endpoint's scheme.
pub fn lxd_client_for(node: &NodeRecord, cipher: &Cipher) -> Result<LxdClient, DriverError> {
    if let Some(socket) = unix_socket_of(&node.endpoint) {
        return Ok(LxdClient::new(socket));
    }
    if node.endpoint.starts_with("https://") {
        let stored = node.credentials_enc.as_deref().ok_or_else(|| {
            DriverError::Unreachable(format!(
                "node '{}' at {} has no client certificate stored (register it with \
                 --client-cert and --client-key)",
                node.name, node.endpoint
            ))
        })?;
        let credentials = open_credentials(cipher, stored)?;
        return LxdClient::https(&node.endpoint, &credentials);
    }
    Err(DriverError::Unsupported(format!(
        "endpoint '{}': LXD is reached through its unix socket (unix:///path) or its HTTPS \
         API (https://host:port)",
        node.endpoint
    )))
}

/// The libvirt connection of a node, refusing endpoints that are not a
/// QEMU connection URI (an option in disguise, another hypervisor), with
/// the node's sealed credentials when it has some.
pub fn libvirt_virsh_for(node: &NodeRecord, cipher: &Cipher) -> Result<Virsh, DriverError> {
    let endpoint = node.endpoint.as_str();
    let scheme_ok = [
        "qemu://",
        "qemu:///",
        "qemu+ssh://",
        "qemu+tls://",
        "qemu+unix://",
        "qemu+tcp://",
    ]
    .iter()
    .any(|p| endpoint.starts_with(p));
    if !scheme_ok
        || endpoint
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(DriverError::Unsupported(format!(
            "endpoint '{endpoint}': a libvirt node is a QEMU connection URI, e.g. qemu:///system, \
             qemu+ssh://USER@HOST/system or qemu+tls://HOST/system"
        )));
    }
    let virsh = Virsh::new(endpoint);
    match node.credentials_enc.as_deref() {
        None => Ok(virsh),
        Some(stored) => {
            let credentials = open_libvirt_credentials(cipher, stored)?;
            virsh.with_credentials(&credentials).map_err(|e| {
                DriverError::Unreachable(format!("node '{}': stored credentials: {e}", node.name))
            })
        }
    }
}

/// Connects a driver for `node` (used by the server and the command line).
/// `cipher` opens the node's stored credentials, if it has any.
pub async fn connect(
    node: &NodeRecord,
    request_timeout: Duration,
    cipher: &Cipher,
) -> Result<Arc<dyn Driver>, DriverError> {
    match node.driver.as_str() {
        "lxd" => {
            let client = lxd_client_for(node, cipher)?.with_request_timeout(request_timeout);
            Ok(Arc::new(LxdDriver::connect(client).await?))
        }
        "proxmox" => {
            let access = pve_access_for(node, cipher)?;
            let client = access.client.with_request_timeout(request_timeout);
            let mut driver = ProxmoxDriver::connect(client).await?;
            if let Some(pct_exec) = access.pct_exec {
                driver = driver.with_pct_exec(pct_exec);
            }
            Ok(Arc::new(driver))
        }
        "libvirt" => {
            let virsh = libvirt_virsh_for(node, cipher)?
                .with_timeout(request_timeout.max(Duration::from_secs(10)));
            Ok(Arc::new(LibvirtDriver::connect(virsh).await?))
        }
        other => Err(DriverError::Unsupported(format!("driver '{other}'"))),
    }
}

impl DriverRegistry {
    pub fn new(store: Arc<dyn Store>, request_timeout: Duration, cipher: Cipher) -> DriverRegistry {
        DriverRegistry {
            store,
            request_timeout,
            cipher,
            connected: Mutex::new(HashMap::new()),
        }
    }

    /// The driver of a node, connecting it the first time.
    pub async fn for_node(&self, name: &str) -> Result<Arc<dyn Driver>, DriverError> {
        if let Some(driver) = self.connected.lock().await.get(name) {
            return Ok(Arc::clone(driver));
        }
        let node = self
            .store
            .find_node(name)
            .await
            .map_err(|e| DriverError::Unreachable(e.to_string()))?
            .ok_or_else(|| DriverError::Unreachable(format!("node '{name}' is not registered")))?;
        let driver = connect(&node, self.request_timeout, &self.cipher).await?;
        self.connected
            .lock()
            .await
            .insert(name.to_string(), Arc::clone(&driver));
        Ok(driver)
    }
}

/// A driver error in words fit for a client.
pub fn describe(error: &DriverError) -> String {
    match error {
        DriverError::NotFound => "the machine was not found on its node".into(),
        DriverError::Timeout(_) => "the hypervisor did not answer in time".into(),
        DriverError::Unreachable(_) => "the hypervisor is not reachable".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_endpoints() {
        assert_eq!(
            unix_socket_of("unix:///var/lib/lxd/unix.socket"),
            Some(PathBuf::from("/var/lib/lxd/unix.socket"))
        );
        assert_eq!(
            unix_socket_of("unix:/run/incus.sock"),
            Some(PathBuf::from("/run/incus.sock"))
        );
        assert_eq!(
            unix_socket_of("/var/lib/lxd/unix.socket"),
            Some(PathBuf::from("/var/lib/lxd/unix.socket"))
        );
        assert_eq!(unix_socket_of("https://10.0.0.1:8443"), None);
    }

    fn node(endpoint: &str, credentials_enc: Option<String>) -> NodeRecord {
        NodeRecord {
            id: 1,
            name: "remote".into(),
            driver: "lxd".into(),
            endpoint: endpoint.into(),
            credentials_enc,
            created_at: 0,
        }
    }

    fn sample_credentials() -> TlsCredentials {
        TlsCredentials {
            client_cert: "-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----\n"
                .into(),
            client_key: "-----BEGIN PRIVATE KEY-----\nMIGHsecretkey\n-----END PRIVATE KEY-----\n"
                .into(),
            server: advps_drivers::lxd::client::ServerTrust::PinnedCert(
                "-----BEGIN CERTIFICATE-----\nMIIBserver\n-----END CERTIFICATE-----\n".into(),
            ),
        }
    }

    #[test]
    fn libvirt_endpoints_are_qemu_connection_uris() {
        let cipher = Cipher::from_key(&[3u8; 32]);
        let mut kvm = node("qemu:///system", None);
        kvm.driver = "libvirt".into();
        assert_eq!(
            libvirt_virsh_for(&kvm, &cipher).unwrap().uri(),
            "qemu:///system"
        );
        for good in ["qemu+ssh://advps@kvm2/system", "qemu+tls://kvm3/system"] {
            kvm.endpoint = good.into();
            assert!(libvirt_virsh_for(&kvm, &cipher).is_ok(), "{good}");
        }
        for bad in [
            "https://kvm:8006",
            "-c",
            "xen:///",
            "qemu:///system --readonly",
            "",
        ] {
            kvm.endpoint = bad.into();
            match libvirt_virsh_for(&kvm, &cipher) {
                Err(DriverError::Unsupported(m)) => assert!(m.contains("qemu:///system"), "{m}"),
                other => panic!("{bad:?} accepted: {other:?}"),
            }
        }
    }

    #[test]
    fn libvirt_ssh_access_is_sealed() {
        use advps_drivers::libvirt::virsh::LibvirtSsh;
        let cipher = Cipher::from_key(&[3u8; 32]);
        let credentials = LibvirtCredentials {
            ssh: Some(LibvirtSsh {
                private_key: "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXkSECRETKEY\n\
                              -----END OPENSSH PRIVATE KEY-----\n"
                    .into(),
                known_hosts: "[10.0.0.2]:2222 ssh-ed25519 AAAAC3Nza\n".into(),
            }),
            tls: None,
        };
        let stored = seal_libvirt_credentials(&cipher, &credentials);
        assert!(!stored.contains("SECRETKEY"), "{stored}");
        assert!(!stored.contains("PRIVATE KEY"), "{stored}");
        assert_eq!(
            open_libvirt_credentials(&cipher, &stored).unwrap(),
            credentials
        );

        let mut kvm = node("qemu+ssh://root@10.0.0.2:2222/system", Some(stored));
        kvm.driver = "libvirt".into();
        let virsh = libvirt_virsh_for(&kvm, &cipher).unwrap();
        assert!(virsh.has_credentials());
        assert_eq!(virsh.uri(), "qemu+ssh://root@10.0.0.2:2222/system");
        // Another data directory's key cannot open them.
        let other = Cipher::from_key(&[4u8; 32]);
        match libvirt_virsh_for(&kvm, &other) {
            Err(DriverError::Unreachable(m)) => assert!(m.contains("credentials"), "{m}"),
            other => panic!("expected Unreachable, got {other:?}"),
        }
        // Stored for another host than the endpoint names: refused, not used.
        kvm.endpoint = "qemu+ssh://root@10.0.0.3/system".into();
        match libvirt_virsh_for(&kvm, &cipher) {
            Err(DriverError::Unreachable(m)) => {
                assert!(m.contains("10.0.0.3"), "{m}");
                assert!(!m.contains("SECRETKEY"), "{m}");
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }

    #[test]
    fn credentials_are_stored_encrypted_and_read_back() {
        let cipher = Cipher::from_key(&[3u8; 32]);
        let credentials = sample_credentials();
        let stored = seal_credentials(&cipher, &credentials);
        assert!(!stored.contains("PRIVATE KEY"), "{stored}");
        assert!(!stored.contains("MIGHsecretkey"), "{stored}");
        assert_eq!(open_credentials(&cipher, &stored).unwrap(), credentials);
        // Another key cannot open them, and says so.
        let other = Cipher::from_key(&[4u8; 32]);
        match open_credentials(&other, &stored) {
            Err(DriverError::Unreachable(message)) => {
                assert!(message.contains("credentials"), "{message}")
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
        // Valid encryption of something that is not the credentials document.
        let junk = cipher.encrypt("{\"client_cert\":1}");
        assert!(matches!(
            open_credentials(&cipher, &junk),
            Err(DriverError::Unreachable(_))
        ));
    }

    #[test]
    fn proxmox_tokens_are_stored_encrypted() {
        let cipher = Cipher::from_key(&[3u8; 32]);
        let credentials = PveCredentials {
            token: "advps@pve!advps=9d1c-secret".into(),
            server: advps_drivers::proxmox::client::PveTrust::Fingerprint("AB:".repeat(31) + "CD"),
            ssh: None,
        };
        let stored = seal_pve_credentials(&cipher, &credentials);
        assert!(!stored.contains("9d1c-secret"), "{stored}");
        assert_eq!(open_pve_credentials(&cipher, &stored).unwrap(), credentials);
        let mut pve = node("https://127.0.0.1:8006", None);
        pve.driver = "proxmox".into();
        match pve_client_for(&pve, &cipher) {
            Err(DriverError::Unreachable(message)) => {
                assert!(message.contains("token"), "{message}")
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
        pve.credentials_enc = Some(stored);
        let client = pve_client_for(&pve, &cipher).unwrap();
        assert_eq!(client.endpoint(), "https://127.0.0.1:8006");
    }

    #[test]
    fn proxmox_ssh_access_is_sealed_with_the_token() {
        let cipher = Cipher::from_key(&[3u8; 32]);
        let credentials = PveCredentials {
            token: "advps@pve!advps=9d1c-secret".into(),
            server: advps_drivers::proxmox::client::PveTrust::Fingerprint("AB:".repeat(31) + "CD"),
            ssh: Some(advps_drivers::proxmox::ssh::PveSsh {
                user: "root".into(),
                hosts: vec!["10.0.0.1".into(), "pve2=10.0.0.2:2222".into()],
                private_key: "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXkSECRETKEY\n\
                              -----END OPENSSH PRIVATE KEY-----\n"
                    .into(),
                known_hosts: "10.0.0.1 ssh-ed25519 AAAAC3Nza\n\
                              [10.0.0.2]:2222 ssh-ed25519 AAAAC3Nzb\n"
                    .into(),
            }),
        };
        let stored = seal_pve_credentials(&cipher, &credentials);
        assert!(!stored.contains("b3BlbnNzaC1rZXkSECRETKEY"), "{stored}");
        assert!(!stored.contains("PRIVATE KEY"), "{stored}");
        assert_eq!(open_pve_credentials(&cipher, &stored).unwrap(), credentials);

        let mut pve = node("https://127.0.0.1:8006", Some(stored));
        pve.driver = "proxmox".into();
        let access = pve_access_for(&pve, &cipher).unwrap();
        assert_eq!(access.client.endpoint(), "https://127.0.0.1:8006");
        let pct_exec = access.pct_exec.expect("SSH access");
        assert_eq!(
            pct_exec.hosts().for_node("pve2").map(|t| t.to_string()),
            Some("10.0.0.2:2222".to_string())
        );

        // Credentials sealed before SSH access existed open without it.
        let without = PveCredentials {
            ssh: None,
            ..credentials
        };
        pve.credentials_enc = Some(seal_pve_credentials(&cipher, &without));
        assert!(pve_access_for(&pve, &cipher).unwrap().pct_exec.is_none());
        let old_form = cipher.encrypt(&format!(
            "{{\"token\":\"advps@pve!advps=9d1c-secret\",\"server\":{{\"fingerprint\":\"{}\"}}}}",
            "AB:".repeat(31) + "CD"
        ));
        assert_eq!(open_pve_credentials(&cipher, &old_form).unwrap(), without);
    }

    #[test]
    fn endpoints_choose_the_transport() {
        let cipher = Cipher::from_key(&[3u8; 32]);
        let local =
            lxd_client_for(&node("unix:///var/lib/lxd/unix.socket", None), &cipher).unwrap();
        assert_eq!(local.endpoint(), "unix:///var/lib/lxd/unix.socket");

        // HTTPS needs stored credentials.
        match lxd_client_for(&node("https://127.0.0.1:8443", None), &cipher) {
            Err(DriverError::Unreachable(message)) => {
                assert!(message.contains("client certificate"), "{message}")
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
        // Plain HTTP and unknown schemes are refused: there is no insecure way in.
        for endpoint in ["http://127.0.0.1:8443", "10.0.0.1:8443", "ftp://x"] {
            assert!(
                matches!(
                    lxd_client_for(&node(endpoint, None), &cipher),
                    Err(DriverError::Unsupported(_))
                ),
                "{endpoint}"
            );
        }
        // Credentials that do not parse as PEM are reported when the client is built.
        let stored = seal_credentials(&cipher, &sample_credentials());
        match lxd_client_for(&node("https://127.0.0.1:8443", Some(stored)), &cipher) {
            Err(DriverError::Unreachable(message)) => {
                assert!(message.contains("client"), "{message}");
                assert!(!message.contains("MIGHsecretkey"), "{message}");
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }
}
