//! PVE's "property strings" (`virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1`),
//! the form of `net0`, `ipconfig0`, `rootfs` and most device options.
//!
//! Parsed tolerantly and written back in the same order with unknown keys
//! kept: PVE adds keys between versions, and a `net0` sent back without one
//! would silently drop it (or, for `hwaddr`, give the guest a new MAC).

/// An ordered list of `key[=value]` items.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PropString {
    items: Vec<(String, Option<String>)>,
}

impl PropString {
    pub fn parse(text: &str) -> PropString {
        let items = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (k.trim().to_string(), Some(v.trim().to_string())),
                None => (item.to_string(), None),
            })
            .collect();
        PropString { items }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.items
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Sets `key=value`, in place if the key is there, else at the end.
    pub fn set(&mut self, key: &str, value: &str) {
        match self.items.iter_mut().find(|(k, _)| k == key) {
            Some(item) => item.1 = Some(value.to_string()),
            None => self.items.push((key.to_string(), Some(value.to_string()))),
        }
    }

    pub fn remove(&mut self, key: &str) {
        self.items.retain(|(k, _)| k != key);
    }

    /// The first item, which for some formats is the positional default
    /// key (`virtio=MAC`, or a bare `local-lvm:vm-100-disk-0`).
    pub fn first(&self) -> Option<(&str, Option<&str>)> {
        self.items.first().map(|(k, v)| (k.as_str(), v.as_deref()))
    }

    pub fn set_first_value(&mut self, value: &str) {
        if let Some(first) = self.items.first_mut() {
            first.1 = Some(value.to_string());
        }
    }
}

impl std::fmt::Display for PropString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text: Vec<String> = self
            .items
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            })
            .collect();
        f.write_str(&text.join(","))
    }
}

/// QEMU network card models: in `net0` the model is the key of the first
/// item and the MAC its value.
pub const QEMU_NIC_MODELS: &[&str] = &[
    "virtio",
    "e1000",
    "e1000e",
    "rtl8139",
    "vmxnet3",
    "e1000-82540em",
    "e1000-82544gc",
    "e1000-82545em",
    "i82551",
    "i82557b",
    "i82559er",
    "ne2k_isa",
    "ne2k_pci",
    "pcnet",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_order_and_unknown_keys() {
        let text = "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1,newkey=x";
        let mut p = PropString::parse(text);
        assert_eq!(p.to_string(), text);
        assert_eq!(p.first(), Some(("virtio", Some("BC:24:11:00:00:01"))));
        p.set_first_value("BC:24:11:00:00:02");
        p.set("tag", "10");
        p.remove("firewall");
        assert_eq!(
            p.to_string(),
            "virtio=BC:24:11:00:00:02,bridge=vmbr0,newkey=x,tag=10"
        );
        let disk = PropString::parse("local-lvm:vm-100-disk-0,size=8G");
        assert_eq!(disk.first(), Some(("local-lvm:vm-100-disk-0", None)));
        assert_eq!(disk.get("size"), Some("8G"));
    }
}
