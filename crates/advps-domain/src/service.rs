//! Service types and power states, with the exact words the API uses for them.

use std::fmt;
use std::str::FromStr;

/// What kind of machine a service is (`serviceType` in responses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceType {
    /// A virtual machine.
    Vps,
    /// An LXC container.
    Linux,
    /// A virtual machine sold on provisional terms.
    ProvisionalVps,
}

impl ServiceType {
    /// The enum word of `serviceType`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::Vps => "VPS",
            ServiceType::Linux => "LINUX",
            ServiceType::ProvisionalVps => "PROVISIONAL_VPS",
        }
    }

    /// The name used in human messages, e.g. "Linux service started successfully".
    pub fn label(self) -> &'static str {
        match self {
            ServiceType::Vps => "VPS",
            ServiceType::Linux => "Linux",
            ServiceType::ProvisionalVps => "Provisional VPS",
        }
    }

    /// The reference refuses get-ip for standard Linux containers: their address
    /// is given when they are provisioned.
    pub fn supports_ip_configuration(self) -> bool {
        !matches!(self, ServiceType::Linux)
    }

    /// Whether the service is a container (OS images of type `lxc`) rather
    /// than a virtual machine (OS images of type `vps`).
    pub fn is_container(self) -> bool {
        matches!(self, ServiceType::Linux)
    }
}

impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServiceType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "VPS" => Ok(ServiceType::Vps),
            "LINUX" => Ok(ServiceType::Linux),
            "PROVISIONAL_VPS" => Ok(ServiceType::ProvisionalVps),
            _ => Err(format!(
                "unknown service type '{s}': expected VPS, LINUX or PROVISIONAL_VPS"
            )),
        }
    }
}

/// The power state of a service as the API reports it in `runningStatus`.
///
/// `Running` and `Stopped` are the resting states that start, stop and reboot
/// move between; the others are held while a task works on the service, and no
/// other mutating call may run meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerState {
    Running,
    Stopped,
    Rebuilding,
    Provisioning,
    Suspended,
}

impl PowerState {
    pub const ALL: [PowerState; 5] = [
        PowerState::Running,
        PowerState::Stopped,
        PowerState::Rebuilding,
        PowerState::Provisioning,
        PowerState::Suspended,
    ];

    /// The enum word of `runningStatus`.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::Running => "RUNNING",
            PowerState::Stopped => "STOPPED",
            PowerState::Rebuilding => "REBUILDING",
            PowerState::Provisioning => "PROVISIONING",
            PowerState::Suspended => "SUSPENDED",
        }
    }

    /// The lower-case word of `vmStatus.status`. A rebuild reports
    /// `installing`, the word ADVPS client programs read as "busy" (they
    /// would read `rebuilding` as "unknown"); `runningStatus` stays
    /// `REBUILDING`.
    pub fn lower(self) -> &'static str {
        match self {
            PowerState::Running => "running",
            PowerState::Stopped => "stopped",
            PowerState::Rebuilding => "installing",
            PowerState::Provisioning => "provisioning",
            PowerState::Suspended => "suspended",
        }
    }

    /// True while a task owns the service.
    pub fn is_busy(self) -> bool {
        matches!(self, PowerState::Rebuilding | PowerState::Provisioning)
    }
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PowerState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PowerState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown power state '{s}'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for state in PowerState::ALL {
            assert_eq!(state.as_str().parse::<PowerState>().unwrap(), state);
            // vmStatus is the lower-case word, but for a rebuild, which
            // client programs must read as busy.
            let lower = match state {
                PowerState::Rebuilding => "installing".to_string(),
                other => other.as_str().to_lowercase(),
            };
            assert_eq!(state.lower(), lower);
        }
        for ty in [
            ServiceType::Vps,
            ServiceType::Linux,
            ServiceType::ProvisionalVps,
        ] {
            assert_eq!(ty.as_str().parse::<ServiceType>().unwrap(), ty);
        }
    }

    #[test]
    fn only_linux_refuses_ip_configuration() {
        assert!(ServiceType::Vps.supports_ip_configuration());
        assert!(ServiceType::ProvisionalVps.supports_ip_configuration());
        assert!(!ServiceType::Linux.supports_ip_configuration());
    }
}
