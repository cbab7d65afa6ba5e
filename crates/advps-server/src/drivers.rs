//! The drivers of the registered nodes, connected on first use and kept.
//!
//! A node's endpoint says how to reach it: `unix:///var/lib/lxd/unix.socket`
//! (or a plain socket path) for a local LXD/Incus.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use advps_drivers::lxd::client::LxdClient;
use advps_drivers::lxd::LxdDriver;
use advps_drivers::{Driver, DriverError};
use advps_store::{NodeRecord, Store};
use tokio::sync::Mutex;

pub struct DriverRegistry {
    store: Arc<dyn Store>,
    request_timeout: Duration,
    connected: Mutex<HashMap<String, Arc<dyn Driver>>>,
}

/// Where a unix endpoint's socket is, if the endpoint is one.
pub fn unix_socket_of(endpoint: &str) -> Option<PathBuf> {
    if let Some(rest) = endpoint.strip_prefix("unix://") {
        Some(PathBuf::from(rest))
    } else if let Some(rest) = endpoint.strip_prefix("unix:") {
        Some(PathBuf::from(rest))
    } else if endpoint.starts_with('/') {
        Some(PathBuf::from(endpoint))
    } else {
        None
    }
}

/// Connects a driver for `node` (used by the server and the command line).
pub async fn connect(
    node: &NodeRecord,
    request_timeout: Duration,
) -> Result<Arc<dyn Driver>, DriverError> {
    match node.driver.as_str() {
        "lxd" => {
            let socket = unix_socket_of(&node.endpoint).ok_or_else(|| {
                DriverError::Unsupported(format!(
                    "endpoint '{}': this build reaches LXD through its unix socket (unix:///path)",
                    node.endpoint
                ))
            })?;
            let client = LxdClient::new(socket).with_request_timeout(request_timeout);
            Ok(Arc::new(LxdDriver::connect(client).await?))
        }
        other => Err(DriverError::Unsupported(format!("driver '{other}'"))),
    }
}

impl DriverRegistry {
    pub fn new(store: Arc<dyn Store>, request_timeout: Duration) -> DriverRegistry {
        DriverRegistry {
            store,
            request_timeout,
            connected: Mutex::new(HashMap::new()),
        }
    }

    /// The driver of a node, connecting it the first time.
    pub async fn for_node(&self, name: &str) -> Result<Arc<dyn Driver>, DriverError> {
        if let Some(driver) = self.connected.lock().await.get(name) {
            return Ok(Arc::clone(driver));
        }
        let node = self
            .store
            .find_node(name)
            .await
            .map_err(|e| DriverError::Unreachable(e.to_string()))?
            .ok_or_else(|| DriverError::Unreachable(format!("node '{name}' is not registered")))?;
        let driver = connect(&node, self.request_timeout).await?;
        self.connected
            .lock()
            .await
            .insert(name.to_string(), Arc::clone(&driver));
        Ok(driver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_endpoints() {
        assert_eq!(
            unix_socket_of("unix:///var/lib/lxd/unix.socket"),
            Some(PathBuf::from("/var/lib/lxd/unix.socket"))
        );
        assert_eq!(
            unix_socket_of("unix:/run/incus.sock"),
            Some(PathBuf::from("/run/incus.sock"))
        );
        assert_eq!(
            unix_socket_of("/var/lib/lxd/unix.socket"),
            Some(PathBuf::from("/var/lib/lxd/unix.socket"))
        );
        assert_eq!(unix_socket_of("https://10.0.0.1:8443"), None);
    }
}
