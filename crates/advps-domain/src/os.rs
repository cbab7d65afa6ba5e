//! OS images: the two families a slug can be installed on.

use std::fmt;
use std::str::FromStr;

use crate::ServiceType;

/// Which guests an OS image is for: containers (`lxc`) or virtual machines (`vps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OsType {
    Lxc,
    Vps,
}

impl OsType {
    pub fn as_str(self) -> &'static str {
        match self {
            OsType::Lxc => "lxc",
            OsType::Vps => "vps",
        }
    }

    /// The family a service of this type installs.
    pub fn for_service(service_type: ServiceType) -> OsType {
        if service_type.is_container() {
            OsType::Lxc
        } else {
            OsType::Vps
        }
    }
}

impl fmt::Display for OsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OsType {
    type Err = String;

    /// `linux` is accepted for containers, as the stock API names them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "lxc" | "linux" => Ok(OsType::Lxc),
            "vps" => Ok(OsType::Vps),
            _ => Err(format!("unknown OS type '{s}': expected lxc or vps")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_types_map_to_os_families() {
        assert_eq!(OsType::for_service(ServiceType::Linux), OsType::Lxc);
        assert_eq!(OsType::for_service(ServiceType::Vps), OsType::Vps);
        assert_eq!(
            OsType::for_service(ServiceType::ProvisionalVps),
            OsType::Vps
        );
        assert_eq!("linux".parse::<OsType>(), Ok(OsType::Lxc));
        assert!("windows".parse::<OsType>().is_err());
    }
}
