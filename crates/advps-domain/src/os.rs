//! OS images: the two families a slug can be installed on.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::ServiceType;

/// How a request names an OS: by its slug (`ubuntu-22.04`), or by the id
/// the OS list gives it, as a number (`3`) or a numeric string (`"3"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OsChoice {
    Slug(String),
    Id(i64),
}

impl<'de> Deserialize<'de> for OsChoice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Choice;
        impl Visitor<'_> for Choice {
            type Value = OsChoice;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an OS slug or id")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<OsChoice, E> {
                let s = s.trim();
                if s.is_empty() {
                    return Err(E::custom("empty OS"));
                }
                Ok(match s.parse::<i64>() {
                    Ok(id) => OsChoice::Id(id),
                    Err(_) => OsChoice::Slug(s.to_string()),
                })
            }

            fn visit_i64<E: de::Error>(self, id: i64) -> Result<OsChoice, E> {
                Ok(OsChoice::Id(id))
            }

            fn visit_u64<E: de::Error>(self, id: u64) -> Result<OsChoice, E> {
                i64::try_from(id)
                    .map(OsChoice::Id)
                    .map_err(|_| E::custom("OS id out of range"))
            }
        }
        deserializer.deserialize_any(Choice)
    }
}

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

/// The login name of Windows images.
pub const WINDOWS_USERNAME: &str = "Administrator";
/// The login name of every other image.
pub const UNIX_USERNAME: &str = "root";

/// The login name an OS comes with when its operator set none: `Administrator`
/// for Windows (a slug or a name that says so), `root` otherwise.
pub fn default_username(slug: &str, name: &str) -> &'static str {
    let windows = |s: &str| {
        let s = s.trim().to_ascii_lowercase();
        s.starts_with("win") || s.contains("windows")
    };
    if windows(slug) || windows(name) {
        WINDOWS_USERNAME
    } else {
        UNIX_USERNAME
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_os_is_named_by_slug_or_by_id() {
        let choice = |v: serde_json::Value| OsChoice::deserialize(v).ok();
        use serde_json::json;
        assert_eq!(
            choice(json!(" debian-12 ")),
            Some(OsChoice::Slug("debian-12".into()))
        );
        assert_eq!(choice(json!(3)), Some(OsChoice::Id(3)));
        assert_eq!(choice(json!("3")), Some(OsChoice::Id(3)));
        for bad in [
            json!(""),
            json!("  "),
            json!(1.5),
            json!(null),
            json!([]),
            json!(true),
        ] {
            assert_eq!(choice(bad.clone()), None, "{bad}");
        }
    }

    #[test]
    fn windows_logs_in_as_administrator() {
        assert_eq!(default_username("windows-2022", ""), "Administrator");
        assert_eq!(default_username("win2019", "Server"), "Administrator");
        assert_eq!(
            default_username("custom", "Microsoft Windows Server 2022"),
            "Administrator"
        );
        assert_eq!(default_username("debian-12", "Debian 12"), "root");
        assert_eq!(default_username("ubuntu-22.04", "Ubuntu 22.04"), "root");
        assert_eq!(default_username("", ""), "root");
    }

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
