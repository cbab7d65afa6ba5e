//! The sandbox that `sk_test_` keys reach: the fleet every account starts
//! with, the product catalogue and the OS images, all simulated.
//!
//! The ids and values follow the public reference's examples, so that each
//! example `curl` works as written against a fresh server.

use crate::{ServiceType, VmType};

/// A service of the starting fleet.
#[derive(Debug, Clone, Copy)]
pub struct SandboxService {
    pub id: &'static str,
    pub service_type: ServiceType,
    pub vmid: &'static str,
    pub running: bool,
    /// The address it has from the start, if any.
    pub ip: Option<&'static str>,
    /// The address get-ip gives it when it has none yet.
    pub reserved_ip: &'static str,
    pub os: &'static str,
}

/// How long ago (at account creation) the running machines "booted", so that
/// the status example's one-day uptime holds on a fresh account.
pub const INITIAL_UPTIME_SECS: i64 = 86_400;

/// How long sandbox services run before they expire.
pub const VALIDITY_DAYS: i64 = 365;

pub const FLEET: [SandboxService; 4] = [
    SandboxService {
        id: "vps_service_1",
        service_type: ServiceType::Vps,
        vmid: "vm1000",
        running: true,
        ip: Some("192.168.1.100"),
        reserved_ip: "192.168.1.100",
        os: "ubuntu-22.04",
    },
    SandboxService {
        id: "vps_service_2",
        service_type: ServiceType::Vps,
        vmid: "vm1001",
        running: false,
        ip: Some("192.168.1.101"),
        reserved_ip: "192.168.1.101",
        os: "debian-12",
    },
    SandboxService {
        id: "lxc_service_1",
        service_type: ServiceType::Linux,
        vmid: "ct2000",
        running: true,
        ip: Some("192.168.1.150"),
        reserved_ip: "192.168.1.150",
        os: "debian-12",
    },
    SandboxService {
        id: "pvps_service_1",
        service_type: ServiceType::ProvisionalVps,
        vmid: "vm3000",
        running: true,
        ip: None,
        reserved_ip: "192.168.1.200",
        os: "ubuntu-22.04",
    },
];

/// A product of the sandbox catalogue, with its fixed stock.
#[derive(Debug, Clone, Copy)]
pub struct SandboxProduct {
    pub id: &'static str,
    pub name: &'static str,
    pub pack_name: &'static str,
    pub vm_type: VmType,
    pub stock: i64,
    /// The one RAM size it is sold in.
    pub ram_mb: i64,
    /// Price per 30 days, in minor units of [`CURRENCY`].
    pub price_minor: i64,
}

/// The sandbox wallet's currency.
pub const CURRENCY: &str = "USD";
/// What every account's sandbox wallet starts with (minor units), so the
/// purchase flow can be tried at once.
pub const STARTING_CREDIT: i64 = 100_000;
/// The OS a sandbox purchase installs when it names none.
pub const DEFAULT_OS: &str = "ubuntu-22.04";

const fn product(
    id: &'static str,
    name: &'static str,
    pack_name: &'static str,
    vm_type: VmType,
    stock: i64,
    ram_gb: i64,
) -> SandboxProduct {
    // Containers cost 1.50 per GB a month, virtual machines 2.50.
    let per_gb = match vm_type {
        VmType::Lxc => 150,
        VmType::Vps => 250,
    };
    SandboxProduct {
        id,
        name,
        pack_name,
        vm_type,
        stock,
        ram_mb: ram_gb * 1024,
        price_minor: per_gb * ram_gb,
    }
}

pub const CATALOGUE: [SandboxProduct; 12] = [
    product(
        "prod_abc123",
        "Linux VPS 4GB",
        "4GB Linux Pack",
        VmType::Lxc,
        25,
        4,
    ),
    product(
        "prod_def456",
        "Linux VPS 2GB",
        "2GB Linux Pack",
        VmType::Lxc,
        4,
        2,
    ),
    product(
        "prod_ghi789",
        "Linux VPS 1GB",
        "1GB Linux Pack",
        VmType::Lxc,
        0,
        1,
    ),
    product(
        "prod_jkl012",
        "Linux VPS 8GB",
        "8GB Linux Pack",
        VmType::Lxc,
        12,
        8,
    ),
    product(
        "prod_mno345",
        "Linux VPS 16GB",
        "16GB Linux Pack",
        VmType::Lxc,
        5,
        16,
    ),
    product(
        "prod_pqr678",
        "Linux VPS 32GB",
        "32GB Linux Pack",
        VmType::Lxc,
        1,
        32,
    ),
    product("prod_stu901", "VPS 1GB", "1GB VPS Pack", VmType::Vps, 40, 1),
    product("prod_vwx234", "VPS 2GB", "2GB VPS Pack", VmType::Vps, 18, 2),
    product("prod_yza567", "VPS 4GB", "4GB VPS Pack", VmType::Vps, 6, 4),
    product("prod_bcd890", "VPS 8GB", "8GB VPS Pack", VmType::Vps, 3, 8),
    product(
        "prod_efg123",
        "VPS 16GB",
        "16GB VPS Pack",
        VmType::Vps,
        0,
        16,
    ),
    product(
        "prod_hij456",
        "Windows VPS 8GB",
        "8GB Windows Pack",
        VmType::Vps,
        9,
        8,
    ),
];

/// An OS image the sandbox can install.
#[derive(Debug, Clone, Copy)]
pub struct SandboxOs {
    pub slug: &'static str,
    pub name: &'static str,
    /// Templates exist for virtual machines.
    pub vps: bool,
    /// Templates exist for containers.
    pub lxc: bool,
}

impl SandboxOs {
    /// The login name services installed with this OS get.
    pub fn username(&self) -> &'static str {
        crate::os::default_username(self.slug, self.name)
    }

    pub fn available_for(&self, service_type: ServiceType) -> bool {
        if service_type.is_container() {
            self.lxc
        } else {
            self.vps
        }
    }
}

const fn os(slug: &'static str, name: &'static str, vps: bool, lxc: bool) -> SandboxOs {
    SandboxOs {
        slug,
        name,
        vps,
        lxc,
    }
}

/// The OS slug that makes a sandbox rebuild fail at its end, so that client
/// authors can exercise their failure paths.
pub const FAILING_OS: &str = "sandbox-fail";

pub const OS_IMAGES: [SandboxOs; 10] = [
    os("ubuntu-22.04", "Ubuntu 22.04", true, true),
    os("ubuntu-24.04", "Ubuntu 24.04", true, true),
    os("debian-11", "Debian 11", true, true),
    os("debian-12", "Debian 12", true, true),
    os("centos-7", "CentOS 7", true, true),
    os("almalinux-9", "AlmaLinux 9", true, true),
    os("rocky-9", "Rocky Linux 9", true, true),
    os("windows-2019", "Windows Server 2019", true, false),
    os("windows-2022", "Windows Server 2022", true, false),
    os(FAILING_OS, "Sandbox failure simulation", true, true),
];

/// Looks an OS slug up in the sandbox catalogue.
pub fn os_image(slug: &str) -> Option<&'static SandboxOs> {
    OS_IMAGES.iter().find(|os| os.slug == slug)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_os_and_catalogue_are_consistent() {
        for service in FLEET {
            let os = os_image(service.os).expect("fleet OS is in the catalogue");
            assert!(os.available_for(service.service_type));
        }
        let mut ids: Vec<_> = CATALOGUE.iter().map(|p| p.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), CATALOGUE.len());
        assert!(!os_image("windows-2022")
            .unwrap()
            .available_for(ServiceType::Linux));
        for os in OS_IMAGES {
            let windows = os.slug.starts_with("windows-");
            assert_eq!(os.username() == "Administrator", windows, "{}", os.slug);
        }
    }
}
