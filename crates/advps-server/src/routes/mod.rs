//! The API's routes, one module per resource.
//!
//! Each handler's `data` is a typed struct deriving both `Serialize` and
//! `ToSchema`, and each handler carries its `#[utoipa::path]`, so the
//! OpenAPI document ([`crate::openapi`]) is generated from what the handlers
//! really send. The closed word sets of the API are enums here for the same
//! reason.

pub mod audit;
pub mod console;
pub mod docs;
pub mod health;
pub mod keys;
pub mod me;
pub mod os;
pub mod products;
pub mod purchase;
pub mod services;
pub mod tasks;
pub mod usage;
pub mod wallet;
pub mod webhooks;

use std::collections::HashMap;

use serde::Serialize;
use utoipa::ToSchema;

use advps_domain::{OsType, PageRequest, ServiceType, StockStatus, TaskKind, TaskStatus, VmType};

use crate::ApiError;

/// The `page` and `limit` of a list's query, with the reference's 400 for
/// a value that is not a positive integer.
pub fn page_of(query: &HashMap<String, String>) -> Result<PageRequest, ApiError> {
    PageRequest::parse(
        query.get("page").map(String::as_str),
        query.get("limit").map(String::as_str),
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// `serviceType`: `VPS` (a virtual machine), `LINUX` (an LXC container) or `PROVISIONAL_VPS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceTypeWord {
    Vps,
    Linux,
    ProvisionalVps,
}

impl From<ServiceType> for ServiceTypeWord {
    fn from(t: ServiceType) -> Self {
        match t {
            ServiceType::Vps => ServiceTypeWord::Vps,
            ServiceType::Linux => ServiceTypeWord::Linux,
            ServiceType::ProvisionalVps => ServiceTypeWord::ProvisionalVps,
        }
    }
}

/// `vmType` of a product: `VPS` for virtual machines, `LXC` for containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum VmTypeWord {
    Vps,
    Lxc,
}

impl From<VmType> for VmTypeWord {
    fn from(t: VmType) -> Self {
        match t {
            VmType::Vps => VmTypeWord::Vps,
            VmType::Lxc => VmTypeWord::Lxc,
        }
    }
}

/// `stockStatus`: `OUT_OF_STOCK` at 0, `LOW_STOCK` up to the threshold, `IN_STOCK` above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StockStatusWord {
    InStock,
    LowStock,
    OutOfStock,
}

impl From<StockStatus> for StockStatusWord {
    fn from(s: StockStatus) -> Self {
        match s {
            StockStatus::InStock => StockStatusWord::InStock,
            StockStatus::LowStock => StockStatusWord::LowStock,
            StockStatus::OutOfStock => StockStatusWord::OutOfStock,
        }
    }
}

/// A task's `status`: `PENDING` → `IN_PROGRESS` → `COMPLETED` or `FAILED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatusWord {
    Pending,
    InProgress,
    Completed,
    Failed,
}

impl From<TaskStatus> for TaskStatusWord {
    fn from(s: TaskStatus) -> Self {
        match s {
            TaskStatus::Pending => TaskStatusWord::Pending,
            TaskStatus::InProgress => TaskStatusWord::InProgress,
            TaskStatus::Completed => TaskStatusWord::Completed,
            TaskStatus::Failed => TaskStatusWord::Failed,
        }
    }
}

/// What a task does: `REBUILD` (a rebuild request) or `PROVISION` (a purchase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum TaskKindWord {
    Rebuild,
    Provision,
}

impl From<TaskKind> for TaskKindWord {
    fn from(k: TaskKind) -> Self {
        match k {
            TaskKind::Rebuild => TaskKindWord::Rebuild,
            TaskKind::Provision => TaskKindWord::Provision,
        }
    }
}

/// The family of an OS image: `vps` (virtual machines) or `lxc` (containers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OsTypeWord {
    Vps,
    Lxc,
}

impl From<OsType> for OsTypeWord {
    fn from(t: OsType) -> Self {
        match t {
            OsType::Vps => OsTypeWord::Vps,
            OsType::Lxc => OsTypeWord::Lxc,
        }
    }
}

/// `{ id, name }` of an OS.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OsRef {
    #[schema(example = "ubuntu-22.04")]
    pub id: String,
    #[schema(example = "Ubuntu 22.04")]
    pub name: String,
}
