//! Test support shared by the Proxmox VE driver tests: the official API
//! schema checker, the fake PVE cluster built on it, a real sshd with a
//! fake `pct` for the container passwords set over SSH, and the skips of
//! suites whose engine is missing.
#![allow(dead_code)]

pub mod fake_pve;
pub mod pve_schema;
pub mod require;
pub mod sshd;
