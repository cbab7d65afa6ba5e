//! Test support shared by the Proxmox VE driver tests: the official API
//! schema checker and the fake PVE cluster built on it.
#![allow(dead_code)]

pub mod fake_pve;
pub mod pve_schema;
