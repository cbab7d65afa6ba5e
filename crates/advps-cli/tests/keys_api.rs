//! `/api/v1/keys`: customers list, create and revoke their own API keys.
//! A created key is shown once and works at once; a revoked key is refused
//! from the next request on; the last key of an account and mode cannot be
//! revoked, not even by two revocations racing; another account's keys, and
//! the other mode's, are out of sight; creating costs quota; revoking is in
//! the audit log.

mod common;

use common::*;
use reqwest::Method;

const NOT_FOUND: &str = "API key not found";
const LAST: &str = "Cannot revoke the last API key of this account and mode";

async fn delete(server: &TestServer, key: &str, id: &str) -> Resp {
    server
        .request(
            Method::DELETE,
            &format!("/api/v1/keys/{id}"),
            Some(key),
            None,
            None,
        )
        .await
}

async fn list(server: &TestServer, key: &str) -> Vec<Value> {
    let resp = server.get("/api/v1/keys", key).await;
    let data = assert_api_success(&resp, "API keys retrieved successfully", "test");
    data["keys"].as_array().expect("keys is a list").clone()
}

#[tokio::test]
async fn keys_are_listed_created_once_and_revoked() {
    let server = TestServer::start();
    let first = server.test_key.clone();

    let keys = list(&server, &first).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["current"], true);
    assert_eq!(
        keys[0]["display"],
        format!("sk_test_\u{2026}{}", &first[first.len() - 4..])
    );
    assert!(
        keys[0].get("key").is_none(),
        "a listed key shows its secret"
    );
    assert!(is_timestamp(keys[0]["createdAt"].as_str().unwrap()));

    let created = server.post("/api/v1/keys", &first).await;
    let data = assert_api_success(
        &created,
        "API key created; it is shown only this once",
        "test",
    );
    let second = data["key"].as_str().expect("the new key").to_string();
    assert!(is_api_key(&second, "test"), "{second}");
    assert_eq!(data["current"], false);
    let second_id = data["id"].as_str().unwrap().to_string();

    // It works at once, and it sees both keys, itself as the current one.
    let keys = list(&server, &second).await;
    assert_eq!(keys.len(), 2);
    let mine: Vec<_> = keys.iter().filter(|k| k["current"] == true).collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["id"], second_id.as_str());
    assert!(keys.iter().all(|k| k.get("key").is_none()));

    // The first key revokes itself; from then on only the second works.
    let first_id = keys.iter().find(|k| k["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let revoked = delete(&server, &first, &first_id).await;
    let data = assert_api_success(&revoked, "API key revoked", "test");
    assert_eq!(data["id"], first_id.as_str());
    let refused = server.get("/api/v1/me", &first).await;
    assert_error(&refused, 401, UNAUTHORIZED);
    assert_eq!(list(&server, &second).await.len(), 1);

    // The last one stays; a revoked or unknown id is not found.
    assert_error(&delete(&server, &second, &second_id).await, 409, LAST);
    assert_error(&delete(&server, &second, &first_id).await, 404, NOT_FOUND);
    assert_error(
        &delete(&server, &second, "key_nothing").await,
        404,
        NOT_FOUND,
    );
    assert_eq!(server.get("/api/v1/me", &second).await.status, 200);

    // Revoking is a mutating call: it is in the audit log.
    let audit = server.get("/api/v1/audit", &second).await;
    let entries = assert_api_success(&audit, "Audit entries retrieved successfully", "test")
        ["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        entries
            .iter()
            .any(|e| e["method"] == "DELETE"
                && e["path"] == format!("/api/v1/keys/{first_id}").as_str()),
        "no audit entry for the revocation: {entries:?}"
    );
}

#[tokio::test]
async fn other_accounts_and_the_other_mode_are_out_of_reach() {
    let server = TestServer::start();
    let demo = server.test_key.clone();
    server.create_account("other");
    let other = server.create_key("other", "test");
    server.create_key("other", "test");
    let other_id = server.key_id_of("other", &other);
    let live = server.create_key("demo", "live");
    let live_id = server.key_id_of("demo", &live);

    // Demo's test key sees its own test key only, and cannot touch the
    // other account's keys or its own live key.
    let keys = list(&server, &demo).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_error(&delete(&server, &demo, &other_id).await, 404, NOT_FOUND);
    assert_error(&delete(&server, &demo, &live_id).await, 404, NOT_FOUND);
    assert_eq!(server.get("/api/v1/me", &other).await.status, 200);
    assert_eq!(server.get("/api/v1/me", &live).await.status, 200);

    // The live key sees the live key.
    let resp = server.get("/api/v1/keys", &live).await;
    let data = assert_api_success(&resp, "API keys retrieved successfully", "live");
    let ids: Vec<_> = data["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec![live_id]);
}

#[tokio::test]
async fn two_revocations_at_once_leave_one_key() {
    let server = TestServer::start();
    let a = server.test_key.clone();
    let b = server.post("/api/v1/keys", &a).await.data()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let keys = list(&server, &a).await;
    let id_of = |current: bool| {
        keys.iter().find(|k| k["current"] == current).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (a_id, b_id) = (id_of(true), id_of(false));
    // Both keys revoked at the same moment, by the first: one must be
    // refused (409 the last key; or 401 when the first key was already gone
    // by the time the second request was authenticated).
    let (ra, rb) = tokio::join!(delete(&server, &a, &b_id), delete(&server, &a, &a_id));
    let mut statuses = [ra.status, rb.status];
    statuses.sort();
    assert!(
        statuses == [200, 409] || statuses == [200, 401],
        "{statuses:?}: {} / {}",
        ra.text,
        rb.text
    );
    let a_ok = server.get("/api/v1/me", &a).await.status == 200;
    let b_ok = server.get("/api/v1/me", &b).await.status == 200;
    assert!(
        a_ok ^ b_ok,
        "exactly one key must be left: a {a_ok}, b {b_ok}"
    );
}

#[tokio::test]
async fn creating_a_key_costs_quota() {
    let server = TestServer::start_with_env(&[("ADVPS_RATE_LIMIT_TEST", "5")]);
    let key = server.test_key.clone();
    let mut created = 0;
    let mut limited = false;
    for _ in 0..6 {
        let resp = server.post("/api/v1/keys", &key).await;
        match resp.status {
            200 => created += 1,
            429 => {
                limited = true;
                break;
            }
            other => panic!("unexpected {other}: {}", resp.text),
        }
    }
    assert!(
        limited,
        "six creations under a limit of five were all admitted"
    );
    assert_eq!(created, 5);
}
