//! Test support shared by the Proxmox VE driver tests: the official API
//! schema checker, the fake PVE cluster built on it, and a real sshd with a
//! fake `pct` for the container passwords set over SSH.
#![allow(dead_code)]

pub mod fake_pve;
pub mod pve_schema;
pub mod sshd;
