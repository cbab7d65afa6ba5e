//! Reading and editing libvirt domain XML, and writing NoCloud seeds.
//!
//! The rebuild swaps a domain's root disk and seed disk in place, so the
//! domain keeps its name, UUID, MAC and everything else an operator set.
//! libvirt writes its XML in one stable layout (`<disk ...>` blocks, single
//! quoted attributes), so the few edits a rebuild makes are done on the text
//! of the disk blocks it finds, leaving every other byte as libvirt wrote it.

use std::net::Ipv4Addr;

use crate::AddressConfig;

/// A `<disk>` element of a domain, by its byte range in the XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskBlock {
    pub start: usize,
    pub end: usize,
    pub source: Option<String>,
    pub target: Option<String>,
    pub readonly: bool,
    pub device: Option<String>,
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    for quote in ['\'', '"'] {
        let key = format!("{name}={quote}");
        if let Some(at) = tag.find(&key) {
            let rest = &tag[at + key.len()..];
            if let Some(end) = rest.find(quote) {
                return Some(xml_unescape(&rest[..end]));
            }
        }
    }
    None
}

fn first_tag<'a>(block: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name} ");
    let at = block.find(&open)?;
    let end = block[at..].find('>')?;
    Some(&block[at..at + end + 1])
}

pub fn xml_escape(raw: &str) -> String {
    raw.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

fn xml_unescape(raw: &str) -> String {
    raw.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&apos;", "'")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// The `<disk>` blocks of a domain's XML.
pub fn disks(xml: &str) -> Vec<DiskBlock> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(rel) = xml[from..].find("<disk ") {
        let start = from + rel;
        let Some(close) = xml[start..].find("</disk>") else {
            break;
        };
        let end = start + close + "</disk>".len();
        let block = &xml[start..end];
        let head = &block[..block.find('>').unwrap_or(block.len())];
        found.push(DiskBlock {
            start,
            end,
            source: first_tag(block, "source")
                .and_then(|t| attribute(t, "file").or_else(|| attribute(t, "volume"))),
            target: first_tag(block, "target").and_then(|t| attribute(t, "dev")),
            readonly: block.contains("<readonly/>"),
            device: attribute(head, "device"),
        });
        from = end;
    }
    found
}

/// The root disk: the first writable disk (not a cdrom or floppy).
pub fn root_disk(xml: &str) -> Option<DiskBlock> {
    disks(xml)
        .into_iter()
        .find(|d| !d.readonly && d.device.as_deref().unwrap_or("disk") == "disk")
}

/// The seed disk: a read-only disk whose file is a NoCloud seed.
pub fn seed_disk(xml: &str) -> Option<DiskBlock> {
    disks(xml).into_iter().find(|d| {
        d.readonly
            && d.source
                .as_deref()
                .is_some_and(|s| s.contains("seed") || s.ends_with(".iso"))
    })
}

/// The MAC address of the domain's first network interface.
pub fn first_mac(xml: &str) -> Option<String> {
    let at = xml.find("<interface ")?;
    let block = &xml[at..];
    let block = &block[..block.find("</interface>")?];
    first_tag(block, "mac").and_then(|t| attribute(t, "address"))
}

/// Replaces the first interface's MAC address.
pub fn with_mac(xml: &str, mac: &str) -> Option<String> {
    let at = xml.find("<interface ")?;
    let end = at + xml[at..].find("</interface>")?;
    let block = &xml[at..end];
    let replaced = match first_tag(block, "mac") {
        Some(tag) => block.replacen(tag, &format!("<mac address='{}'/>", xml_escape(mac)), 1),
        None => {
            let head_end = block.find('>')? + 1;
            format!(
                "{}\n      <mac address='{}'/>{}",
                &block[..head_end],
                xml_escape(mac),
                &block[head_end..]
            )
        }
    };
    Some(format!("{}{}{}", &xml[..at], replaced, &xml[end..]))
}

/// The domain's XML with `disk`'s file replaced by `file`.
pub fn with_disk_source(xml: &str, disk: &DiskBlock, file: &str) -> String {
    let block = &xml[disk.start..disk.end];
    let new_block = match first_tag(block, "source") {
        Some(tag) => block.replacen(tag, &format!("<source file='{}'/>", xml_escape(file)), 1),
        None => block.to_string(),
    };
    // A disk that named a pool volume becomes a plain file disk.
    let new_block = new_block
        .replacen("<disk type='volume'", "<disk type='file'", 1)
        .replacen("<disk type=\"volume\"", "<disk type='file'", 1);
    format!("{}{}{}", &xml[..disk.start], new_block, &xml[disk.end..])
}

/// The domain's XML with a read-only seed disk added on `target`.
pub fn with_seed_disk(xml: &str, file: &str, target: &str) -> Option<String> {
    let at = xml.find("</devices>")?;
    let disk = format!(
        "  <disk type='file' device='disk'>\n      <driver name='qemu' type='raw'/>\n      \
         <source file='{}'/>\n      <target dev='{}' bus='virtio'/>\n      <readonly/>\n    \
         </disk>\n  ",
        xml_escape(file),
        xml_escape(target)
    );
    Some(format!("{}{}{}", &xml[..at], disk, &xml[at..]))
}

/// A virtio disk name no disk of the domain uses yet (`vdb`, `vdc`, ...).
pub fn free_target(xml: &str) -> String {
    let used: Vec<String> = disks(xml).into_iter().filter_map(|d| d.target).collect();
    ('b'..='z')
        .map(|c| format!("vd{c}"))
        .find(|t| !used.contains(t))
        .unwrap_or_else(|| "vdz".into())
}

/// What a NoCloud seed says about the guest.
#[derive(Debug, Clone)]
pub struct Seed<'a> {
    pub instance_id: &'a str,
    pub hostname: &'a str,
    pub mac: Option<&'a str>,
    pub address: Option<AddressConfig>,
    pub ssh_keys: &'a [String],
}

/// A host name fit for `local-hostname` from a domain name.
pub fn hostname_for(domain: &str) -> String {
    let cleaned: String = domain
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = cleaned.trim_matches('-');
    let short: String = trimmed.chars().take(63).collect();
    if short.is_empty() {
        "vps".into()
    } else {
        short
    }
}

/// The three files of a NoCloud seed: meta-data, user-data, network-config.
/// The root password is never in it: it is set through the guest agent once
/// the guest is ready, so no copy of it rests in a volume on the node.
pub fn seed_files(seed: &Seed<'_>) -> [(&'static str, String); 3] {
    let meta = format!(
        "instance-id: {}\nlocal-hostname: {}\n",
        seed.instance_id, seed.hostname
    );
    let mut user = String::from("#cloud-config\nssh_pwauth: false\n");
    if !seed.ssh_keys.is_empty() {
        user.push_str("ssh_authorized_keys:\n");
        for key in seed.ssh_keys {
            user.push_str(&format!("  - {}\n", key.replace(['\n', '\r'], "")));
        }
    }
    let mut network = String::from("version: 1\nconfig:\n  - type: physical\n    name: eth0\n");
    if let Some(mac) = seed.mac {
        network.push_str(&format!("    mac_address: \"{mac}\"\n"));
    }
    match seed.address {
        Some(a) => {
            network.push_str(&format!(
                "    subnets:\n      - type: static\n        address: {}/{}\n",
                a.address, a.prefix
            ));
            if let Some(gw) = a.gateway.filter(|g| *g != Ipv4Addr::UNSPECIFIED) {
                network.push_str(&format!("        gateway: {gw}\n"));
            }
        }
        None => network.push_str("    subnets: []\n"),
    }
    [
        ("meta-data", meta),
        ("user-data", user),
        ("network-config", network),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = "<domain type='qemu'>\n  <name>vm1</name>\n  <uuid>u</uuid>\n  <devices>\n    \
        <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2'/>\n      \
        <source file='/p/vm1-disk0.qcow2'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>\n    \
        <disk type='file' device='disk'>\n      <driver name='qemu' type='raw'/>\n      \
        <source file='/p/vm1-seed0.iso'/>\n      <target dev='vdb' bus='virtio'/>\n      <readonly/>\n    \
        </disk>\n    <interface type='bridge'>\n      <mac address='52:54:00:64:c8:d2'/>\n      \
        <source bridge='advpsbr0'/>\n    </interface>\n  </devices>\n</domain>\n";

    #[test]
    fn finds_the_root_and_seed_disks_and_the_mac() {
        let root = root_disk(XML).unwrap();
        assert_eq!(root.source.as_deref(), Some("/p/vm1-disk0.qcow2"));
        assert_eq!(root.target.as_deref(), Some("vda"));
        let seed = seed_disk(XML).unwrap();
        assert_eq!(seed.source.as_deref(), Some("/p/vm1-seed0.iso"));
        assert_eq!(first_mac(XML).as_deref(), Some("52:54:00:64:c8:d2"));
        assert_eq!(free_target(XML), "vdc");
    }

    #[test]
    fn swaps_a_disk_and_keeps_the_rest() {
        let root = root_disk(XML).unwrap();
        let xml = with_disk_source(XML, &root, "/p/vm1-r2.qcow2");
        assert_eq!(
            root_disk(&xml).unwrap().source.as_deref(),
            Some("/p/vm1-r2.qcow2")
        );
        assert!(xml.contains("<uuid>u</uuid>"));
        assert!(xml.contains("52:54:00:64:c8:d2"));
        assert_eq!(
            seed_disk(&xml).unwrap().source.as_deref(),
            Some("/p/vm1-seed0.iso")
        );
        let no_seed = XML.replace("<readonly/>", "");
        let added = with_seed_disk(&no_seed, "/p/s.iso", "vdc").unwrap();
        assert_eq!(seed_disk(&added).unwrap().target.as_deref(), Some("vdc"));
        let mac = with_mac(XML, "52:54:00:00:00:01").unwrap();
        assert_eq!(first_mac(&mac).as_deref(), Some("52:54:00:00:00:01"));
    }

    #[test]
    fn seeds_carry_the_address_and_no_password() {
        let keys = vec!["ssh-ed25519 AAAA test".to_string()];
        let files = seed_files(&Seed {
            instance_id: "vm1-7",
            hostname: "vm1",
            mac: Some("52:54:00:64:c8:d2"),
            address: Some(AddressConfig {
                address: "198.51.100.210".parse().unwrap(),
                prefix: 24,
                gateway: Some("198.51.100.1".parse().unwrap()),
            }),
            ssh_keys: &keys,
        });
        assert!(files[0].1.contains("instance-id: vm1-7"));
        assert!(files[1].1.contains("  - ssh-ed25519 AAAA test"));
        assert!(!files[1].1.contains("password"));
        assert!(files[2].1.contains("address: 198.51.100.210/24"));
        assert!(files[2].1.contains("gateway: 198.51.100.1"));
        assert_eq!(hostname_for("Advps_VM.1"), "advps-vm-1");
    }
}
