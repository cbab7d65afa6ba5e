//! The administrative subcommands of the `advps` binary: accounts (create, list, duplicates),
//! keys (create, list without ever showing a full key, revoke), products (create, list,
//! set-stock), and argument errors (non-zero exit with a message on stderr).

mod common;

use common::*;
use std::process::{Command, Output};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_fails(out: &Output, what: &str) {
    assert!(
        !out.status.success(),
        "{what} should fail; stdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
    assert!(
        !stderr(out).trim().is_empty(),
        "{what} should explain itself on stderr"
    );
}

#[tokio::test]
async fn first_start_announces_the_demo_account_and_key() {
    let server = TestServer::start();
    let announce = "Created account \"demo\" with a test key (shown only this once):";
    let pos = server
        .startup_lines
        .iter()
        .position(|l| l == announce)
        .unwrap_or_else(|| panic!("no announcement in {:?}", server.startup_lines));
    assert_eq!(server.startup_lines[pos + 1], server.test_key);
    assert!(is_api_key(&server.test_key, "test"));
    let listening = server.startup_lines.last().unwrap();
    assert!(listening.contains(&format!("Listening on {}", server.base_url)));
    assert!(server.base_url.starts_with("http://127.0.0.1:"));
    let port: u16 = server.base_url["http://127.0.0.1:".len()..]
        .parse()
        .expect("numeric port");
    assert_ne!(port, 0, "the actual bound port is printed");
}

#[tokio::test]
async fn accounts_create_and_list() {
    let server = TestServer::start();
    let out = server.cli_ok(&["accounts", "create", "acme"]);
    assert!(out.contains("Created account acme"), "{out}");
    server.create_account("globex");
    let list = server.cli_ok(&["accounts", "list"]);
    for name in ["demo", "acme", "globex"] {
        let lines = list
            .lines()
            .filter(|l| l.split_whitespace().any(|w| w == name))
            .count();
        assert_eq!(lines, 1, "account {name} once in the list:\n{list}");
    }
}

#[tokio::test]
async fn duplicate_account_fails() {
    let server = TestServer::start();
    server.create_account("acme");
    let out = server.cli(&["accounts", "create", "acme"]);
    assert_fails(&out, "creating acme twice");
    let out = server.cli(&["accounts", "create", "demo"]);
    assert_fails(&out, "creating demo again");
}

#[tokio::test]
async fn keys_create_prints_the_key_alone_on_the_last_line() {
    let server = TestServer::start();
    server.create_account("acme");
    for mode in ["test", "live"] {
        let out = server.cli_ok(&["keys", "create", "--account", "acme", "--mode", mode]);
        let last = out.lines().last().expect("some output");
        assert_eq!(last, last.trim(), "nothing around the key");
        assert!(
            is_api_key(last, mode),
            "last line {last:?} is not a {mode} key"
        );
    }
    let a = server.create_key("acme", "test");
    let b = server.create_key("acme", "test");
    assert_ne!(a, b, "keys are random");
    // The new keys work against the running server.
    let resp = server.status(&a, "vps_service_1").await;
    assert_api_success(&resp, "Service status retrieved successfully", "test");
}

#[tokio::test]
async fn keys_create_for_unknown_account_or_bad_mode_fails() {
    let server = TestServer::start();
    let out = server.cli(&["keys", "create", "--account", "nobody", "--mode", "test"]);
    assert_fails(&out, "keys create for an unknown account");
    let out = server.cli(&["keys", "create", "--account", "demo", "--mode", "prod"]);
    assert_fails(&out, "keys create with mode prod");
}

#[tokio::test]
async fn keys_list_masks_keys() {
    let server = TestServer::start();
    let live = server.create_key("demo", "live");
    let list = server.cli_ok(&["keys", "list", "--account", "demo"]);
    let header = list
        .lines()
        .find(|l| l.contains("ID"))
        .unwrap_or_else(|| panic!("no header line:\n{list}"));
    let columns: Vec<&str> = header.split_whitespace().collect();
    assert!(
        columns.starts_with(&["ID", "MODE", "KEY", "CREATED", "LAST_USED"]),
        "header {header:?}"
    );
    for key in [&server.test_key, &live] {
        assert!(!list.contains(key.as_str()), "full key leaked:\n{list}");
        let masked = format!("{}\u{2026}{}", &key[..8], &key[key.len() - 4..]);
        assert!(list.contains(&masked), "{masked} missing:\n{list}");
    }
    let rows: Vec<&str> = list
        .lines()
        .filter(|l| l.trim_start().starts_with("key_"))
        .collect();
    assert_eq!(rows.len(), 2, "one row per key:\n{list}");
    assert!(rows
        .iter()
        .any(|r| r.split_whitespace().nth(1) == Some("live")));
    assert!(rows
        .iter()
        .any(|r| r.split_whitespace().nth(1) == Some("test")));
    // Another account's keys are not listed.
    server.create_account("acme");
    let acme_key = server.create_key("acme", "test");
    let list = server.cli_ok(&["keys", "list", "--account", "demo"]);
    let acme_masked = format!(
        "{}\u{2026}{}",
        &acme_key[..8],
        &acme_key[acme_key.len() - 4..]
    );
    assert!(
        !list.contains(&acme_masked),
        "acme's key in demo's list:\n{list}"
    );
    let rows = list
        .lines()
        .filter(|l| l.trim_start().starts_with("key_"))
        .count();
    assert_eq!(rows, 2, "demo still has two keys:\n{list}");
}

#[tokio::test]
async fn keys_revoke_unknown_id_fails() {
    let server = TestServer::start();
    let out = server.cli(&["keys", "revoke", "key_doesnotexist"]);
    assert_fails(&out, "revoking an unknown key id");
    // Revoking a real id works once.
    let id = server.key_id_of("demo", &server.test_key);
    server.cli_ok(&["keys", "revoke", &id]);
}

#[tokio::test]
async fn bad_arguments_fail_with_a_message() {
    let server = TestServer::start();
    let cases: [&[&str]; 4] = [
        &["frobnicate"],
        &["accounts"],
        &["keys", "create", "--account"],
        &["products", "set-stock", "prod_x", "many"],
    ];
    for args in cases {
        let out = server.cli(args);
        assert_fails(&out, &format!("advps {args:?}"));
    }
    let out = Command::new(BIN)
        .args(["serve", "--listen", "not-an-address"])
        .arg("--data-dir")
        .arg(server.data_dir())
        .output()
        .expect("run advps");
    assert_fails(&out, "serve with a bad listen address");
}

#[tokio::test]
async fn products_create_list_and_set_stock() {
    let server = TestServer::start();
    server.cli_ok(&[
        "products",
        "create",
        "--id",
        "prod_live_a",
        "--name",
        "Live VPS 2GB",
        "--pack-name",
        "2GB Live Pack",
        "--type",
        "vps",
        "--stock",
        "7",
    ]);
    server.cli_ok(&[
        "products",
        "create",
        "--id",
        "prod_live_b",
        "--name",
        "Live LXC 1GB",
        "--pack-name",
        "1GB Live Pack",
        "--type",
        "lxc",
    ]);
    let list = server.cli_ok(&["products", "list"]);
    assert!(list.contains("prod_live_a"), "{list}");
    assert!(list.contains("prod_live_b"), "{list}");
    server.cli_ok(&["products", "set-stock", "prod_live_b", "3"]);
    server.cli_ok(&["products", "set-stock", "prod_live_a", "--auto"]);
    let out = server.cli(&[
        "products",
        "create",
        "--id",
        "prod_live_c",
        "--name",
        "Bad",
        "--pack-name",
        "Bad Pack",
        "--type",
        "kvm",
    ]);
    assert_fails(&out, "products create with type kvm");
}
