//! The data directory holds customers' names and e-mail addresses, webhook
//! URLs that often carry tokens, sealed credentials and the audit trail:
//! the directory is private to the service user (0700) and every file in it
//! is 0600, on the first start and on every start after, even when someone
//! loosened them in between.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

/// Every entry of `dir` (recursively) whose mode is not `0600` for files
/// or `0700` for directories, with its mode.
fn loose_modes(dir: &Path) -> Vec<String> {
    let mut loose = Vec::new();
    let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
    if mode != 0o700 {
        loose.push(format!("{}: {mode:o}", dir.display()));
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            loose.extend(loose_modes(&path));
        } else {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            if mode != 0o600 {
                loose.push(format!("{}: {mode:o}", path.display()));
            }
        }
    }
    loose
}

#[tokio::test]
async fn the_data_directory_and_its_files_are_private() {
    let mut server = TestServer::start();
    // Writes of every kind: a key, a webhook, an audited call.
    server.create_key("demo", "test");
    let resp = server
        .action(&server.test_key, "vps_service_1", "stop")
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let dir = server.data_dir().to_path_buf();
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    if std::env::var("ADVPS_TEST_API_DATABASE_URL").map_or(true, |u| u.is_empty()) {
        assert!(names.iter().any(|n| n == "advps.db"), "{names:?}");
    }
    assert_eq!(loose_modes(&dir), Vec::<String>::new());

    // Loosened by hand: tightened again on the next start.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for name in &names {
        let path = dir.join(name);
        if path.is_file() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    assert!(!loose_modes(&dir).is_empty());
    server.restart();
    let resp = server.status(&server.test_key, "vps_service_1").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(loose_modes(&dir), Vec::<String>::new());
}
