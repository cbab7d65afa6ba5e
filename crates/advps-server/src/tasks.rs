//! The parameters each kind of task stores with it, in one place: what the
//! request that queued it decided (the OS, its image, the login name), read
//! back by whoever runs the task — the sandbox's simulation or the worker on
//! a live node. Stored as JSON in the task's row, so a field added later
//! must be optional (tasks queued before it lack it).

use advps_store::InstalledOs;

/// Parameters stored with a sandbox rebuild.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct RebuildParams {
    pub os: String,
}

/// Parameters stored with a provisioning task.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ProvisionParams {
    pub os: String,
    pub os_name: String,
    /// The engine image (live).
    pub image: Option<String>,
}

/// Parameters stored with a live rebuild.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct LiveRebuildParams {
    pub os: String,
    pub os_name: String,
    pub image: String,
    /// The login name the new OS comes with; absent in tasks queued before
    /// it was recorded, which take the default for the OS.
    #[serde(default)]
    pub username: Option<String>,
}

impl LiveRebuildParams {
    /// The OS the rebuild installs, as the service records it.
    pub fn installed(&self) -> InstalledOs {
        InstalledOs {
            slug: self.os.clone(),
            name: self.os_name.clone(),
            username: self.username.clone().unwrap_or_else(|| {
                advps_domain::os::default_username(&self.os, &self.os_name).to_string()
            }),
        }
    }
}
