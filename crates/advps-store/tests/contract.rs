//! The storage contract: what every [`Store`] implementation must do, written
//! once against the trait and run here on SQLite (a fresh file per test).
//! Each check takes `&dyn Store`, so another backend runs the same suite by
//! adding its own opener.

use std::sync::Arc;

use advps_domain::{Mode, PowerState, TaskKind, TaskStatus, VmType};
use advps_store::*;

async fn sqlite() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    (dir, Arc::new(store))
}

fn test_scope(account: &Account) -> Scope {
    Scope {
        account_id: account.id,
        mode: Mode::Test,
    }
}

fn rebuild_task(scope: Scope, service_pk: i64, id: &str, now: i64) -> NewTask {
    NewTask {
        id: id.to_string(),
        scope,
        service_pk,
        kind: TaskKind::Rebuild,
        params: r#"{"os":"debian-12"}"#.to_string(),
        busy_state: PowerState::Rebuilding,
        now,
        due_at: Some(now + 1_000),
    }
}

fn product(mode: Mode, id: &str, vm_type: VmType, stock: Option<i64>) -> NewProduct {
    NewProduct {
        mode,
        id: id.to_string(),
        name: format!("Product {id}"),
        pack_name: format!("Pack {id}"),
        vm_type,
        manual_stock: stock,
        low_stock_threshold: None,
        default_os: None,
        now: 1,
    }
}

#[tokio::test]
async fn accounts_are_unique_and_come_with_their_sandbox_fleet() {
    let (_dir, store) = sqlite().await;
    let demo = store.create_account("demo", 1_000).await.unwrap();
    assert!(matches!(
        store.create_account("demo", 2_000).await,
        Err(StoreError::Conflict(_))
    ));
    let acme = store.create_account("acme", 3_000).await.unwrap();
    assert_eq!(store.count_accounts().await.unwrap(), 2);
    assert_eq!(
        store.find_account("acme").await.unwrap(),
        Some(acme.clone())
    );
    assert_eq!(store.find_account("nobody").await.unwrap(), None);

    let vps = store
        .find_service(test_scope(&demo), "vps_service_1")
        .await
        .unwrap()
        .expect("seeded");
    assert_eq!(vps.power_state, PowerState::Running);
    assert_eq!(vps.vmid, "vm1000");
    assert_eq!(vps.ip.as_deref(), Some("192.168.1.100"));
    let stopped = store
        .find_service(test_scope(&demo), "vps_service_2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stopped.power_state, PowerState::Stopped);
    // Same public id, another account: a different service.
    let theirs = store
        .find_service(test_scope(&acme), "vps_service_1")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(theirs.pk, vps.pk);
    // The sandbox fleet is not visible on the live side.
    let live = Scope {
        account_id: demo.id,
        mode: Mode::Live,
    };
    assert!(store
        .find_service(live, "vps_service_1")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn keys_are_found_by_digest_and_revoked_once() {
    let (_dir, store) = sqlite().await;
    let demo = store.create_account("demo", 1).await.unwrap();
    store
        .insert_api_key(&NewApiKey {
            id: "key_a".into(),
            account_id: demo.id,
            mode: Mode::Live,
            key_hash: "ab".repeat(32),
            last4: "WXYZ".into(),
            created_at: 10,
        })
        .await
        .unwrap();
    let found = store.find_api_key(&"ab".repeat(32)).await.unwrap().unwrap();
    assert_eq!(
        (found.id.as_str(), found.mode, found.account_name.as_str()),
        ("key_a", Mode::Live, "demo")
    );
    assert!(store
        .find_api_key(&"cd".repeat(32))
        .await
        .unwrap()
        .is_none());
    store.touch_api_key("key_a", 99).await.unwrap();
    assert!(store.revoke_api_key("key_a", 100).await.unwrap());
    assert!(!store.revoke_api_key("key_a", 101).await.unwrap());
    assert!(!store.revoke_api_key("key_missing", 101).await.unwrap());
    let listed = store.list_api_keys(demo.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].revoked_at, Some(100));
    assert_eq!(listed[0].last_used_at, Some(99));
}

#[tokio::test]
async fn concurrent_power_transitions_have_one_winner() {
    let (_dir, store) = sqlite().await;
    let demo = store.create_account("demo", 1).await.unwrap();
    let svc = store
        .find_service(test_scope(&demo), "vps_service_2")
        .await
        .unwrap()
        .unwrap();
    let mut handles = Vec::new();
    for i in 0..16 {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            store
                .transition_power(svc.pk, PowerState::Stopped, PowerState::Running, Some(i))
                .await
                .unwrap()
        }));
    }
    let mut winners = 0;
    for h in handles {
        winners += usize::from(h.await.unwrap());
    }
    assert_eq!(winners, 1);
}

#[tokio::test]
async fn tasks_hold_the_service_respect_the_monthly_limit_and_finish_once() {
    let (_dir, store) = sqlite().await;
    let demo = store.create_account("demo", 1).await.unwrap();
    let scope = test_scope(&demo);
    let svc = store
        .find_service(scope, "vps_service_1")
        .await
        .unwrap()
        .unwrap();
    let limit = Some(MonthlyLimit { max: 2, since: 0 });

    let first = match store
        .start_service_task(&rebuild_task(scope, svc.pk, "t1", 10), limit)
        .await
        .unwrap()
    {
        StartTask::Started(t) => t,
        other => panic!("expected a start, got {other:?}"),
    };
    assert_eq!(first.status, TaskStatus::Pending);
    assert_eq!(first.prev_state, Some(PowerState::Running));
    assert_eq!(first.service_id, "vps_service_1");
    let held = store
        .find_service(scope, "vps_service_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.power_state, PowerState::Rebuilding);
    // Busy while the first runs; the holder is named.
    match store
        .start_service_task(&rebuild_task(scope, svc.pk, "t2", 11), limit)
        .await
        .unwrap()
    {
        StartTask::Busy(Some(id)) => assert_eq!(id, "t1"),
        other => panic!("expected busy, got {other:?}"),
    }
    assert!(!store
        .transition_power(svc.pk, PowerState::Running, PowerState::Stopped, None)
        .await
        .unwrap());
    assert_eq!(store.active_task(svc.pk).await.unwrap().unwrap().id, "t1");
    assert_eq!(store.due_sandbox_tasks(1_010, 10).await.unwrap().len(), 1);
    assert_eq!(store.due_sandbox_tasks(1_009, 10).await.unwrap().len(), 0);

    let finish = TaskFinish {
        status: TaskStatus::Completed,
        error: None,
        now: 2_000,
        power_state: PowerState::Running,
        started_at: Some(2_000),
        os: Some(("debian-12".into(), "Debian 12".into())),
        owner: None,
    };
    assert!(store.finish_task("t1", &finish).await.unwrap());
    assert!(
        !store.finish_task("t1", &finish).await.unwrap(),
        "finishes once"
    );
    let done = store.find_task(scope, "t1").await.unwrap().unwrap();
    assert_eq!(
        (done.status, done.progress, done.finished_at),
        (TaskStatus::Completed, 100, Some(2_000))
    );
    let svc_after = store
        .find_service(scope, "vps_service_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(svc_after.power_state, PowerState::Running);
    assert_eq!(svc_after.os_slug.as_deref(), Some("debian-12"));

    // A failed task does not count against the limit; completed ones do.
    let second = rebuild_task(scope, svc.pk, "t3", 3_000);
    assert!(matches!(
        store.start_service_task(&second, limit).await.unwrap(),
        StartTask::Started(_)
    ));
    let failed = TaskFinish {
        status: TaskStatus::Failed,
        error: Some("boom".into()),
        os: None,
        ..finish.clone()
    };
    assert!(store.finish_task("t3", &failed).await.unwrap());
    assert!(matches!(
        store
            .start_service_task(&rebuild_task(scope, svc.pk, "t4", 4_000), limit)
            .await
            .unwrap(),
        StartTask::Started(_)
    ));
    assert!(store.finish_task("t4", &finish).await.unwrap());
    assert!(matches!(
        store
            .start_service_task(&rebuild_task(scope, svc.pk, "t5", 5_000), limit)
            .await
            .unwrap(),
        StartTask::LimitReached
    ));
    // Tasks are visible only in their own scope.
    let other = store.create_account("acme", 1).await.unwrap();
    assert!(store
        .find_task(test_scope(&other), "t1")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn concurrent_task_starts_have_one_winner() {
    let (_dir, store) = sqlite().await;
    let demo = store.create_account("demo", 1).await.unwrap();
    let scope = test_scope(&demo);
    let svc = store
        .find_service(scope, "vps_service_1")
        .await
        .unwrap()
        .unwrap();
    let mut handles = Vec::new();
    for i in 0..8 {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let task = rebuild_task(scope, svc.pk, &format!("c{i}"), 10);
            store.start_service_task(&task, None).await.unwrap()
        }));
    }
    let mut started = 0;
    for h in handles {
        if let StartTask::Started(_) = h.await.unwrap() {
            started += 1;
        }
    }
    assert_eq!(started, 1);
}

#[tokio::test]
async fn addresses_and_passwords_follow_the_service_state() {
    let (_dir, store) = sqlite().await;
    let demo = store.create_account("demo", 1).await.unwrap();
    let scope = test_scope(&demo);
    let pvps = store
        .find_service(scope, "pvps_service_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pvps.ip, None);
    assert_eq!(
        store
            .assign_ip(pvps.pk, "10.0.0.5")
            .await
            .unwrap()
            .as_deref(),
        Some("10.0.0.5")
    );
    // An address, once given, stays.
    assert_eq!(
        store
            .assign_ip(pvps.pk, "10.0.0.6")
            .await
            .unwrap()
            .as_deref(),
        Some("10.0.0.5")
    );
    assert!(store.set_password(pvps.pk, "v1:secret").await.unwrap());
    let stopped = store
        .find_service(scope, "vps_service_2")
        .await
        .unwrap()
        .unwrap();
    assert!(!store.set_password(stopped.pk, "v1:secret").await.unwrap());
}

#[tokio::test]
async fn product_stock_is_sorted_paged_and_derived_from_free_inventory() {
    let (_dir, store) = sqlite().await;
    store
        .ensure_products(&[
            product(Mode::Test, "p_b", VmType::Lxc, Some(5)),
            product(Mode::Test, "p_a", VmType::Vps, Some(5)),
            product(Mode::Test, "p_c", VmType::Vps, Some(9)),
        ])
        .await
        .unwrap();
    // ensure_products leaves existing rows alone.
    store
        .ensure_products(&[product(Mode::Test, "p_c", VmType::Vps, Some(0))])
        .await
        .unwrap();
    let (rows, total) = store
        .list_products(Mode::Test, None, 0, 10, None)
        .await
        .unwrap();
    assert_eq!(total, 3);
    let ids: Vec<_> = rows.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["p_c", "p_a", "p_b"], "stock desc, then id");
    let (page2, _) = store
        .list_products(Mode::Test, None, 2, 2, None)
        .await
        .unwrap();
    assert_eq!(page2.len(), 1);
    assert_eq!(page2[0].id, "p_b");
    let (past, total) = store
        .list_products(Mode::Test, None, u64::MAX / 2, 10, None)
        .await
        .unwrap();
    assert!(past.is_empty());
    assert_eq!(total, 3);
    let (lxc, lxc_total) = store
        .list_products(Mode::Test, Some(VmType::Lxc), 0, 10, None)
        .await
        .unwrap();
    assert_eq!((lxc.len(), lxc_total), (1, 1));

    // Live: derived from free, healthy inventory of the product.
    store
        .create_product(&product(Mode::Live, "live_1", VmType::Lxc, None))
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_product(&product(Mode::Live, "live_1", VmType::Lxc, None))
            .await,
        Err(StoreError::Conflict(_))
    ));
    for n in 0..3 {
        store
            .add_instance(&NewInstance {
                node: "node1".into(),
                engine_id: format!("ct{n}"),
                product_id: Some("live_1".into()),
                now: 1,
            })
            .await
            .unwrap();
    }
    let live = store
        .find_product(Mode::Live, "live_1", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((live.stock, live.manual), (3, false));
    assert!(store
        .find_product(Mode::Test, "live_1", None)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .set_manual_stock(Mode::Live, "live_1", Some(40))
        .await
        .unwrap());
    let manual = store
        .find_product(Mode::Live, "live_1", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((manual.stock, manual.manual), (40, true));
    assert!(store
        .set_manual_stock(Mode::Live, "live_1", None)
        .await
        .unwrap());
    assert_eq!(
        store
            .find_product(Mode::Live, "live_1", None)
            .await
            .unwrap()
            .unwrap()
            .stock,
        3
    );
    assert!(!store
        .set_manual_stock(Mode::Live, "nope", Some(1))
        .await
        .unwrap());
}

#[tokio::test]
async fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let demo = store.create_account("demo", 1).await.unwrap();
        let svc = store
            .find_service(test_scope(&demo), "vps_service_1")
            .await
            .unwrap()
            .unwrap();
        assert!(store
            .transition_power(svc.pk, PowerState::Running, PowerState::Stopped, None)
            .await
            .unwrap());
        store.close().await;
    }
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let demo = store.find_account("demo").await.unwrap().unwrap();
    let svc = store
        .find_service(test_scope(&demo), "vps_service_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(svc.power_state, PowerState::Stopped);
}

#[tokio::test]
async fn a_key_revoked_by_another_process_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = SqliteStore::open(dir.path()).await.unwrap();
    let cli = SqliteStore::open(dir.path()).await.unwrap();
    let demo = server.create_account("demo", 1).await.unwrap();
    server
        .insert_api_key(&NewApiKey {
            id: "key_x".into(),
            account_id: demo.id,
            mode: Mode::Test,
            key_hash: "ef".repeat(32),
            last4: "ABCD".into(),
            created_at: 1,
        })
        .await
        .unwrap();
    // The serving side has read (and may remember) the key.
    for _ in 0..3 {
        let k = server
            .find_api_key(&"ef".repeat(32))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(k.revoked_at, None);
    }
    assert!(cli.revoke_api_key("key_x", 50).await.unwrap());
    let k = server
        .find_api_key(&"ef".repeat(32))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        k.revoked_at,
        Some(50),
        "the revocation is seen on the next read"
    );
}

#[tokio::test]
async fn shared_rate_windows_admit_exactly_the_limit() {
    let (_dir, store) = sqlite().await;
    let mut handles = Vec::new();
    for _ in 0..30 {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            store.rate_hit("key_a", 10, 1_000, 900_000).await.unwrap()
        }));
    }
    let mut counted = 0;
    for h in handles {
        counted += usize::from(h.await.unwrap().counted);
    }
    assert_eq!(counted, 10);
    let peek = store
        .rate_peek("key_a", 2_000, 900_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((peek.count, peek.opened_at), (30, 1_000));
    // A new window opens once the old one closed.
    let next = store.rate_hit("key_a", 10, 901_000, 900_000).await.unwrap();
    assert!(next.counted);
    assert_eq!((next.count, next.opened_at), (1, 901_000));
    store.rate_release("key_a", 901_500, 900_000).await.unwrap();
    assert_eq!(
        store
            .rate_peek("key_a", 901_500, 900_000)
            .await
            .unwrap()
            .unwrap()
            .count,
        0
    );
    assert!(store
        .rate_peek("key_b", 1, 900_000)
        .await
        .unwrap()
        .is_none());
}
