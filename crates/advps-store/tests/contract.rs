//! The storage contract: what every [`Store`] implementation must do,
//! written once against the trait and run on each backend: SQLite (a fresh
//! file per test) and PostgreSQL (a fresh database per test, created on the
//! server `ADVPS_TEST_DATABASE_URL` names and dropped afterwards).
//!
//! Each check is an `async fn(Backend)`; `contract_tests!` at the bottom
//! makes `sqlite::<check>` and `postgres::<check>` tests of it. A check that
//! needs several server processes opens several handles on its database
//! with [`Backend::open`]: separate pools, as separate processes would have.
//!
//! Without `ADVPS_TEST_DATABASE_URL` the PostgreSQL tests pass without
//! running and a notice says that they were skipped and how to run them;
//! with `ADVPS_REQUIRE_POSTGRES=1` (as `.ci/test` sets it) they fail instead.

use std::collections::HashSet;
use std::future::Future;
use std::io::Write;
use std::str::FromStr;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use advps_domain::{Mode, PowerState, ServiceType, TaskKind, TaskStatus, VmType};
use advps_store::*;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// The database a check runs against.
enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(Box<PgConnectOptions>),
}

impl Backend {
    /// A new handle on the check's database, as another server process
    /// would open it.
    async fn open(&self) -> Arc<dyn Store> {
        match self {
            Backend::Sqlite(dir) => Arc::new(SqlStore::open_sqlite(dir.path()).await.unwrap()),
            Backend::Postgres(options) => {
                let settings = PgPoolSettings {
                    max_connections: 8,
                    min_connections: 0,
                    ..PgPoolSettings::default()
                };
                Arc::new(
                    SqlStore::connect_postgres_with((**options).clone(), &settings)
                        .await
                        .unwrap(),
                )
            }
        }
    }
}

async fn run_sqlite<F, Fut>(check: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    check(Backend::Sqlite(tempfile::tempdir().unwrap())).await;
}

/// The server to test PostgreSQL on, or `None` when told to skip it.
fn postgres_server() -> Option<PgConnectOptions> {
    match std::env::var("ADVPS_TEST_DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(
            PgConnectOptions::from_str(url.trim())
                .expect("ADVPS_TEST_DATABASE_URL is not a valid postgres:// URL"),
        ),
        _ if std::env::var("ADVPS_REQUIRE_POSTGRES").as_deref() == Ok("1") => panic!(
            "ADVPS_REQUIRE_POSTGRES=1 but ADVPS_TEST_DATABASE_URL is not set, so the storage \
             contract cannot run on PostgreSQL. Start a server (as root: .ci/pg-up, which prints \
             the URL) and set ADVPS_TEST_DATABASE_URL=postgres://postgres:advps@127.0.0.1:5432/postgres."
        ),
        _ => {
            static NOTICE: Once = Once::new();
            NOTICE.call_once(|| {
                // Straight to the process's stderr: the test harness hides
                // what tests print, and this must be seen.
                let _ = writeln!(
                    std::io::stderr(),
                    "\nNOTICE: the PostgreSQL half of the storage contract was SKIPPED (its tests \
                     pass without running): ADVPS_TEST_DATABASE_URL is not set. To run it, start \
                     PostgreSQL (as root: .ci/pg-up) and set \
                     ADVPS_TEST_DATABASE_URL=postgres://postgres:advps@127.0.0.1:5432/postgres.\n"
                );
            });
            None
        }
    }
}

/// Runs a check on a database of its own, dropped afterwards whether the
/// check passed or not (the check runs as a task, so its panic is caught,
/// the database dropped, and the panic passed on).
async fn run_postgres<F, Fut>(check: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(server) = postgres_server() else {
        return;
    };
    let name = format!("advps_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = server.connect().await.unwrap_or_else(|e| {
        panic!("cannot connect to ADVPS_TEST_DATABASE_URL (is PostgreSQL up? .ci/pg-up): {e}")
    });
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let outcome = tokio::spawn(check(Backend::Postgres(Box::new(
        server.clone().database(&name),
    ))))
    .await;
    // FORCE: pools the check left open are disconnected, not waited for.
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    let _ = admin.close().await;
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("the check did not finish: {e}"),
        }
    }
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

async fn accounts_are_unique_and_come_with_their_sandbox_fleet(db: Backend) {
    let store = db.open().await;
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

async fn keys_are_found_by_digest_and_revoked_once(db: Backend) {
    let store = db.open().await;
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

async fn an_accounts_last_key_in_a_mode_is_never_revoked(db: Backend) {
    let store = db.open().await;
    let demo = store.create_account("demo", 1).await.unwrap();
    let other = store.create_account("other", 1).await.unwrap();
    let key = |id: &str, account_id: i64, mode: Mode, n: u8| NewApiKey {
        id: id.into(),
        account_id,
        mode,
        key_hash: format!("{n:02x}").repeat(32),
        last4: "ABCD".into(),
        created_at: i64::from(n),
    };
    let test_ids: Vec<String> = (1..=8).map(|n| format!("key_t{n}")).collect();
    for (n, id) in test_ids.iter().enumerate() {
        store
            .insert_api_key(&key(id, demo.id, Mode::Test, 10 + n as u8))
            .await
            .unwrap();
    }
    for k in [
        key("key_l1", demo.id, Mode::Live, 4),
        key("key_o1", other.id, Mode::Test, 5),
    ] {
        store.insert_api_key(&k).await.unwrap();
    }
    // Another account's key, and the other mode's, are not found.
    assert_eq!(
        store
            .revoke_own_api_key(demo.id, Mode::Test, "key_o1", 10)
            .await
            .unwrap(),
        KeyRevocation::NotFound
    );
    assert_eq!(
        store
            .revoke_own_api_key(demo.id, Mode::Test, "key_l1", 10)
            .await
            .unwrap(),
        KeyRevocation::NotFound
    );
    // The live key is the last of its mode.
    assert_eq!(
        store
            .revoke_own_api_key(demo.id, Mode::Live, "key_l1", 10)
            .await
            .unwrap(),
        KeyRevocation::LastKey
    );
    // Eight test keys revoked all at once: seven go, one stays.
    let start = Arc::new(tokio::sync::Barrier::new(test_ids.len()));
    let mut handles = Vec::new();
    for id in test_ids.clone() {
        let store = Arc::clone(&store);
        let start = Arc::clone(&start);
        let account = demo.id;
        handles.push(tokio::spawn(async move {
            start.wait().await;
            store
                .revoke_own_api_key(account, Mode::Test, &id, 20)
                .await
                .unwrap()
        }));
    }
    let mut outcomes = Vec::new();
    for h in handles {
        outcomes.push(h.await.unwrap());
    }
    let revoked = outcomes
        .iter()
        .filter(|o| **o == KeyRevocation::Revoked)
        .count();
    assert_eq!(revoked, test_ids.len() - 1, "{outcomes:?}");
    assert!(outcomes.contains(&KeyRevocation::LastKey), "{outcomes:?}");
    let left = store
        .list_api_keys(demo.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.mode == Mode::Test && k.revoked_at.is_none())
        .count();
    assert_eq!(left, 1);
}

async fn concurrent_power_transitions_have_one_winner(db: Backend) {
    let store = db.open().await;
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

async fn tasks_hold_the_service_respect_the_monthly_limit_and_finish_once(db: Backend) {
    let store = db.open().await;
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
        os: Some(InstalledOs {
            slug: "debian-12".into(),
            name: "Debian 12".into(),
            username: "root".into(),
        }),
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
    assert_eq!(svc_after.username.as_deref(), Some("root"));

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

async fn concurrent_task_starts_have_one_winner(db: Backend) {
    let store = db.open().await;
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

async fn addresses_and_passwords_follow_the_service_state(db: Backend) {
    let store = db.open().await;
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

async fn product_stock_is_sorted_paged_and_derived_from_free_inventory(db: Backend) {
    let store = db.open().await;
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

async fn data_survives_reopening(db: Backend) {
    {
        let store = db.open().await;
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
        drop(store);
    }
    let store = db.open().await;
    let demo = store.find_account("demo").await.unwrap().unwrap();
    let svc = store
        .find_service(test_scope(&demo), "vps_service_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(svc.power_state, PowerState::Stopped);
}

/// How long a change made by one process may go unseen by another.
const CROSS_PROCESS_BOUND: Duration = Duration::from_secs(1);

/// Reads with `read` until it returns what `wanted` accepts, for at most
/// [`CROSS_PROCESS_BOUND`]; the last value read otherwise.
async fn eventually<T, F, Fut>(mut read: F, wanted: impl Fn(&T) -> bool) -> Result<T, T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let deadline = Instant::now() + CROSS_PROCESS_BOUND;
    loop {
        let value = read().await;
        if wanted(&value) {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(value);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_revoked_key_fails_at_once_here_and_within_a_second_elsewhere(db: Backend) {
    let server = db.open().await;
    let cli = db.open().await;
    let demo = server.create_account("demo", 1).await.unwrap();
    for (id, hash) in [("key_x", "ef"), ("key_y", "ab")] {
        server
            .insert_api_key(&NewApiKey {
                id: id.into(),
                account_id: demo.id,
                mode: Mode::Test,
                key_hash: hash.repeat(32),
                last4: "ABCD".into(),
                created_at: 1,
            })
            .await
            .unwrap();
    }
    let find = |store: Arc<dyn Store>, hash: &'static str| async move {
        store.find_api_key(&hash.repeat(32)).await.unwrap().unwrap()
    };
    // Both sides have read (and may remember) both keys.
    for _ in 0..3 {
        for store in [&server, &cli] {
            assert_eq!(find(Arc::clone(store), "ef").await.revoked_at, None);
            assert_eq!(find(Arc::clone(store), "ab").await.revoked_at, None);
        }
    }
    // Revoked by the process that serves: refused on its very next read.
    assert!(server.revoke_api_key("key_y", 40).await.unwrap());
    assert_eq!(
        find(Arc::clone(&server), "ab").await.revoked_at,
        Some(40),
        "the revoking process sees its revocation at once"
    );
    // Revoked by another process (the command line): seen within the bound.
    assert!(cli.revoke_api_key("key_x", 50).await.unwrap());
    let seen = eventually(
        || find(Arc::clone(&server), "ef"),
        |k| k.revoked_at.is_some(),
    )
    .await;
    assert_eq!(
        seen.map(|k| k.revoked_at).map_err(|k| k.revoked_at),
        Ok(Some(50)),
        "another process's revocation is seen within {CROSS_PROCESS_BOUND:?}"
    );
}

async fn a_service_changed_by_another_process_is_read_fresh(db: Backend) {
    let server = db.open().await;
    let cli = db.open().await;
    let demo = server.create_account("demo", 1).await.unwrap();
    let scope = test_scope(&demo);
    let read = |store: Arc<dyn Store>| async move {
        let svc = store
            .find_service(scope, "vps_service_2")
            .await
            .unwrap()
            .unwrap();
        (svc.power_state, svc.expires_at)
    };
    let svc = server
        .find_service(scope, "vps_service_2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(svc.power_state, PowerState::Stopped);
    // Changes alternate between the two handles, each read over and over
    // (so remembered) before: the writer reads its change at once, the
    // other handle within the bound.
    let (mut power, mut expiry) = (PowerState::Stopped, svc.expires_at);
    for round in 0..12_i64 {
        for _ in 0..3 {
            assert_eq!(
                read(Arc::clone(&server)).await,
                (power, expiry),
                "round {round}"
            );
            assert_eq!(
                read(Arc::clone(&cli)).await,
                (power, expiry),
                "round {round}"
            );
        }
        let (writer, other) = if round % 2 == 0 {
            (&cli, &server)
        } else {
            (&server, &cli)
        };
        if round % 3 == 0 {
            let next = if power == PowerState::Stopped {
                PowerState::Running
            } else {
                PowerState::Stopped
            };
            assert!(writer
                .transition_power(svc.pk, power, next, Some(round))
                .await
                .unwrap());
            power = next;
        } else {
            writer
                .set_service_expiry(svc.pk, 1_000 + round)
                .await
                .unwrap();
            expiry = Some(1_000 + round);
        }
        assert_eq!(
            read(Arc::clone(writer)).await,
            (power, expiry),
            "round {round}: the writer reads its own change at once"
        );
        let wanted = (power, expiry);
        assert_eq!(
            eventually(|| read(Arc::clone(other)), |v| *v == wanted).await,
            Ok(wanted),
            "round {round}: the other process reads the change within {CROSS_PROCESS_BOUND:?}"
        );
    }
}

async fn shared_rate_windows_admit_exactly_the_limit(db: Backend) {
    let store = db.open().await;
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

    // A burst counted at once numbers its requests as if they came one by
    // one: 4 then 3 in one window, 2 in the next.
    let burst = store.rate_count("key_c", 4, 5_000, 900_000).await.unwrap();
    assert_eq!((burst.count, burst.opened_at), (4, 5_000));
    let burst = store.rate_count("key_c", 3, 6_000, 900_000).await.unwrap();
    assert_eq!((burst.count, burst.opened_at), (7, 5_000));
    let burst = store
        .rate_count("key_c", 2, 905_000, 900_000)
        .await
        .unwrap();
    assert_eq!((burst.count, burst.opened_at), (2, 905_000));
    // Concurrent bursts from many callers lose nothing.
    let mut handles = Vec::new();
    for n in 1..=8u32 {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            store.rate_count("key_d", n, 1_000, 900_000).await.unwrap()
        }));
    }
    let mut last = Vec::new();
    for h in handles {
        last.push(h.await.unwrap().count);
    }
    last.sort_unstable();
    assert_eq!(*last.last().unwrap(), 36, "{last:?}");
}

// --- several server processes on one database --------------------------------
//
// Each check below opens several handles (pools) on one database and races
// them, as several advps instances would race. What must hold is counted
// exactly: a task, a machine, an address, a unit of money or a delivery is
// handed out once.

/// Handles on the check's database, one per simulated server process.
async fn instances(db: &Backend, n: usize) -> Vec<Arc<dyn Store>> {
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        handles.push(db.open().await);
    }
    handles
}

/// Live services bound to fresh (free) instances on `node`.
async fn live_services(
    store: &dyn Store,
    account: &Account,
    node: &str,
    count: usize,
) -> Vec<ServiceRecord> {
    let mut services = Vec::new();
    for n in 0..count {
        let instance_id = store
            .add_instance(&NewInstance {
                node: node.into(),
                engine_id: format!("ct-live-{n}"),
                product_id: None,
                now: 1,
            })
            .await
            .unwrap();
        services.push(
            store
                .bind_live_service(&NewLiveService {
                    account_id: account.id,
                    service_id: format!("LIVE{n:02}"),
                    service_type: ServiceType::Linux,
                    instance_id,
                    power_state: PowerState::Running,
                    expires_at: None,
                    now: 1,
                })
                .await
                .unwrap(),
        );
    }
    services
}

fn one_unit_order(
    scope: Scope,
    product_id: &str,
    service_type: ServiceType,
    amount: i64,
) -> NewOrder {
    NewOrder {
        scope,
        prefix: if service_type.is_container() {
            "LXC"
        } else {
            "VPS"
        },
        day: "010126".into(),
        product_id: product_id.into(),
        service_type,
        ram_mb: 1024,
        os_slug: "debian-12".into(),
        os_name: "Debian 12".into(),
        username: "root".into(),
        quantity: 1,
        validity_days: 30,
        amount_minor: amount,
        currency: "USD".into(),
        remark: None,
        customer_name: None,
        customer_email: None,
        task_params: "{}".into(),
        due_at: (scope.mode == Mode::Test).then_some(5_000),
        sandbox_credentials: Vec::new(),
        now: 1_000,
    }
}

/// Claims tasks until none is left, as one worker would.
async fn drain_tasks(store: Arc<dyn Store>, owner: String, now: i64) -> Vec<TaskRecord> {
    let mut claimed = Vec::new();
    while let Some(task) = store.claim_task(&owner, now, 60_000).await.unwrap() {
        assert_eq!(task.lease_owner.as_deref(), Some(owner.as_str()));
        assert_eq!(task.lease_until, Some(now + 60_000));
        assert_eq!(task.status, TaskStatus::InProgress);
        claimed.push(task);
    }
    claimed
}

async fn workers_claim_each_task_once_and_take_over_lapsed_leases(db: Backend) {
    let store = db.open().await;
    let demo = store.create_account("demo", 1).await.unwrap();
    let live = Scope {
        account_id: demo.id,
        mode: Mode::Live,
    };
    for (n, svc) in live_services(&*store, &demo, "node1", 12)
        .await
        .iter()
        .enumerate()
    {
        let mut task = rebuild_task(live, svc.pk, &format!("lt{n:02}"), 10 + n as i64);
        task.due_at = None;
        assert!(matches!(
            store.start_service_task(&task, None).await.unwrap(),
            StartTask::Started(_)
        ));
    }
    // Sandbox tasks are simulated, never a worker's.
    let sandbox = store
        .find_service(test_scope(&demo), "vps_service_1")
        .await
        .unwrap()
        .unwrap();
    let sandbox_task = rebuild_task(test_scope(&demo), sandbox.pk, "st", 5);
    assert!(matches!(
        store.start_service_task(&sandbox_task, None).await.unwrap(),
        StartTask::Started(_)
    ));

    let handles = instances(&db, 4).await;
    let mut workers = Vec::new();
    for (w, handle) in handles.iter().enumerate() {
        workers.push(tokio::spawn(drain_tasks(
            Arc::clone(handle),
            format!("worker-{w}"),
            1_000,
        )));
    }
    let mut claimed = Vec::new();
    for w in workers {
        claimed.extend(w.await.unwrap());
    }
    let ids: HashSet<_> = claimed.iter().map(|t| t.id.clone()).collect();
    assert_eq!(claimed.len(), 12, "each task claimed exactly once");
    assert_eq!(ids.len(), 12);
    assert!(!ids.contains("st"));
    assert!(claimed.iter().all(|t| t.attempts == 1));

    // A lease holds until it lapses...
    assert!(store
        .claim_task("late", 60_999, 60_000)
        .await
        .unwrap()
        .is_none());
    // ...then every task of the workers that died is taken over, once.
    let mut rescuers = Vec::new();
    for (w, handle) in handles.iter().enumerate() {
        rescuers.push(tokio::spawn(drain_tasks(
            Arc::clone(handle),
            format!("rescuer-{w}"),
            61_000,
        )));
    }
    let mut retaken = Vec::new();
    for r in rescuers {
        retaken.extend(r.await.unwrap());
    }
    let again: HashSet<_> = retaken.iter().map(|t| t.id.clone()).collect();
    assert_eq!((retaken.len(), again), (12, ids));
    assert!(retaken.iter().all(|t| t.attempts == 2));

    // The first owner of a task lost it: its steps and finish are refused.
    let first = claimed.iter().find(|t| t.id == "lt00").unwrap();
    let old_owner = first.lease_owner.clone().unwrap();
    let new_owner = retaken
        .iter()
        .find(|t| t.id == "lt00")
        .unwrap()
        .lease_owner
        .clone()
        .unwrap();
    assert!(!store
        .record_step("lt00", &old_owner, 1, "{}", 50, 61_001)
        .await
        .unwrap());
    assert!(!store
        .renew_lease("lt00", &old_owner, 200_000)
        .await
        .unwrap());
    assert!(store
        .record_step("lt00", &new_owner, 1, r#"{"k":1}"#, 50, 61_001)
        .await
        .unwrap());
    assert!(store
        .renew_lease("lt00", &new_owner, 200_000)
        .await
        .unwrap());
    let finish = TaskFinish {
        status: TaskStatus::Completed,
        error: None,
        now: 61_002,
        power_state: PowerState::Running,
        started_at: Some(61_002),
        os: None,
        owner: Some(old_owner),
    };
    assert!(!store.finish_task("lt00", &finish).await.unwrap());
    let finish = TaskFinish {
        owner: Some(new_owner),
        ..finish
    };
    assert!(store.finish_task("lt00", &finish).await.unwrap());
    let done = store.find_task(live, "lt00").await.unwrap().unwrap();
    assert_eq!(
        (
            done.status,
            done.step,
            done.scratch.as_str(),
            done.lease_owner
        ),
        (TaskStatus::Completed, 1, r#"{"k":1}"#, None)
    );
}

async fn concurrent_allocations_never_share_an_address(db: Backend) {
    let store = db.open().await;
    let demo = store.create_account("demo", 1).await.unwrap();
    let services = live_services(&*store, &demo, "node1", 8).await;
    let pool = |name: &str, net: &str, node: Option<&str>, hosts: std::ops::RangeInclusive<u8>| {
        NewIpPool {
            name: name.into(),
            cidr: format!("{net}.0/29"),
            prefix: 29,
            gateway: format!("{net}.1"),
            node: node.map(Into::into),
            addresses: hosts.map(|h| format!("{net}.{h}")).collect(),
            now: 1,
        }
    };
    store
        .create_ip_pool(&pool("node1-pool", "10.1.0", Some("node1"), 2..=4))
        .await
        .unwrap();
    store
        .create_ip_pool(&pool("shared-pool", "10.2.0", None, 2..=3))
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_ip_pool(&pool("overlap", "10.2.0", None, 3..=3))
            .await,
        Err(StoreError::Conflict(_))
    ));

    // Every service asks twice, through two different instances, at once.
    let handles = instances(&db, 4).await;
    let mut calls = Vec::new();
    for (n, svc) in services.iter().enumerate() {
        for round in 0..2 {
            let handle = Arc::clone(&handles[(n + round) % handles.len()]);
            let pk = svc.pk;
            calls.push(tokio::spawn(async move {
                (pk, handle.allocate_address(pk, "node1", 100).await.unwrap())
            }));
        }
    }
    let mut got: std::collections::HashMap<i64, Vec<Option<AddressLease>>> = Default::default();
    for call in calls {
        let (pk, lease) = call.await.unwrap();
        got.entry(pk).or_default().push(lease);
    }
    for leases in got.values() {
        assert_eq!(leases[0], leases[1], "one service, one address");
    }
    let held: Vec<&AddressLease> = got.values().filter_map(|l| l[0].as_ref()).collect();
    let addresses: HashSet<&str> = held.iter().map(|l| l.address.as_str()).collect();
    assert_eq!(held.len(), 5, "five addresses for eight services");
    assert_eq!(addresses.len(), 5, "never one address twice");
    for pool in store.list_ip_pools().await.unwrap() {
        assert_eq!(pool.free, 0, "{} exhausted", pool.name);
    }
    for (pk, leases) in &got {
        assert_eq!(&store.service_address(*pk).await.unwrap(), &leases[0]);
    }

    // An address given back goes to the next service that asks.
    let (&winner, leases) = got.iter().find(|(_, l)| l[0].is_some()).unwrap();
    let (&loser, _) = got.iter().find(|(_, l)| l[0].is_none()).unwrap();
    assert_eq!(store.release_addresses(winner).await.unwrap(), 1);
    assert_eq!(store.service_address(winner).await.unwrap(), None);
    let moved = store.allocate_address(loser, "node1", 200).await.unwrap();
    assert_eq!(moved, leases[0]);
}

async fn concurrent_orders_never_sell_one_machine_twice(db: Backend) {
    let store = db.open().await;
    let demo = store.create_account("demo", 1).await.unwrap();
    let live = Scope {
        account_id: demo.id,
        mode: Mode::Live,
    };
    store
        .create_product(&product(Mode::Live, "lxc_s", VmType::Lxc, None))
        .await
        .unwrap();
    let seen: Vec<SyncedInstance> = (0..3)
        .map(|n| SyncedInstance {
            engine_id: format!("ct{n}"),
            kind: "container".into(),
            memory_mb: Some(1024),
            engine_state: "Stopped".into(),
        })
        .collect();
    let summary = store.sync_instances("node1", &seen, 5).await.unwrap();
    assert_eq!((summary.added, summary.updated, summary.missing), (3, 0, 0));
    for instance in store.list_instances(Some("node1")).await.unwrap() {
        assert!(store
            .set_instance_product(instance.id, Some("lxc_s"))
            .await
            .unwrap());
    }
    let credit = 1_000_000;
    assert_eq!(
        store
            .credit_wallet(demo.id, Mode::Live, credit, "USD", "top-up", 6)
            .await
            .unwrap(),
        credit
    );
    let stock = |store: Arc<dyn Store>| async move {
        store
            .find_product(Mode::Live, "lxc_s", None)
            .await
            .unwrap()
            .unwrap()
            .stock
    };
    assert_eq!(stock(Arc::clone(&store)).await, 3);

    let handles = instances(&db, 4).await;
    let mut orders = Vec::new();
    for n in 0..8 {
        let handle = Arc::clone(&handles[n % handles.len()]);
        let order = one_unit_order(live, "lxc_s", ServiceType::Linux, 1_500);
        orders.push(tokio::spawn(async move {
            handle.place_order(&order).await.unwrap()
        }));
    }
    let (mut placed, mut out_of_stock) = (Vec::new(), 0);
    for order in orders {
        match order.await.unwrap() {
            PlaceOrder::Placed { order, services } => placed.push((order, services)),
            PlaceOrder::OutOfStock { .. } => out_of_stock += 1,
            PlaceOrder::InsufficientFunds { balance } => panic!("funds: {balance}"),
        }
    }
    assert_eq!((placed.len(), out_of_stock), (3, 5));
    let machines: HashSet<i64> = placed
        .iter()
        .map(|(_, services)| services[0].instance_id.unwrap())
        .collect();
    let numbers: HashSet<&str> = placed.iter().map(|(o, _)| o.id.as_str()).collect();
    assert_eq!((machines.len(), numbers.len()), (3, 3));
    assert!(numbers.iter().all(|id| id.starts_with("LXC010126-")));
    assert_eq!(stock(Arc::clone(&store)).await, 0);
    assert!(store
        .list_instances(Some("node1"))
        .await
        .unwrap()
        .iter()
        .all(|i| i.state == "assigned"));
    assert_eq!(
        store.wallet_balance(demo.id, Mode::Live).await.unwrap(),
        credit - 3 * 1_500
    );

    // A failed order gives its machine back (and the money).
    let (failed, services) = &placed[0];
    let instance = services[0].instance_id.unwrap();
    assert!(store
        .fail_order(&failed.id, "engine down", &[(instance, "free")], 2_000)
        .await
        .unwrap());
    assert!(!store
        .fail_order(&failed.id, "again", &[], 2_001)
        .await
        .unwrap());
    assert_eq!(stock(Arc::clone(&store)).await, 1);
    assert_eq!(
        store.wallet_balance(demo.id, Mode::Live).await.unwrap(),
        credit - 2 * 1_500
    );
    // The node stops reporting a machine: it leaves the stock.
    let summary = store
        .sync_instances("node1", &seen[1..], 3_000)
        .await
        .unwrap();
    assert_eq!((summary.added, summary.updated, summary.missing), (0, 2, 1));
}

async fn concurrent_purchases_never_overdraw_the_wallet(db: Backend) {
    let store = db.open().await;
    let demo = store.create_account("demo", 1).await.unwrap();
    let scope = test_scope(&demo);
    store
        .ensure_products(&[product(Mode::Test, "vps_s", VmType::Vps, Some(100))])
        .await
        .unwrap();
    let start = store.wallet_balance(demo.id, Mode::Test).await.unwrap();
    assert_eq!(start, advps_domain::sandbox::STARTING_CREDIT);
    let price = start / 3 - 1;

    let handles = instances(&db, 4).await;
    let mut orders = Vec::new();
    for n in 0..10 {
        let handle = Arc::clone(&handles[n % handles.len()]);
        let order = one_unit_order(scope, "vps_s", ServiceType::Vps, price);
        orders.push(tokio::spawn(async move {
            handle.place_order(&order).await.unwrap()
        }));
    }
    let (mut placed, mut refused) = (Vec::new(), 0);
    for order in orders {
        match order.await.unwrap() {
            PlaceOrder::Placed { order, services } => placed.push((order, services)),
            PlaceOrder::InsufficientFunds { balance } => {
                assert!(balance >= 0 && balance < price);
                refused += 1;
            }
            PlaceOrder::OutOfStock { available } => panic!("stock: {available}"),
        }
    }
    assert_eq!((placed.len(), refused), (3, 7));
    let balance = store.wallet_balance(demo.id, Mode::Test).await.unwrap();
    assert_eq!(balance, start - 3 * price);
    assert!(balance >= 0);
    let ledger = store.ledger(demo.id, Mode::Test).await.unwrap();
    assert_eq!(ledger.iter().map(|e| e.amount_minor).sum::<i64>(), balance);
    assert_eq!(ledger.iter().filter(|e| e.kind == "purchase").count(), 3);
    // Each purchase got its own sandbox service.
    let ids: HashSet<String> = placed
        .iter()
        .map(|(_, s)| s[0].service_id.clone())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(placed
        .iter()
        .all(|(_, s)| s[0].username.as_deref() == Some("root")));
    assert_eq!(
        store
            .find_product(Mode::Test, "vps_s", Some(demo.id))
            .await
            .unwrap()
            .unwrap()
            .stock,
        97
    );

    // Renewals draw on the same balance, under the same rule.
    let svc = &placed[0].1[0];
    let renew = |amount| RenewItem {
        service_pk: svc.pk,
        validity_days: 30,
        amount_minor: amount,
    };
    assert!(matches!(
        store
            .renew_services(scope, &[renew(balance + 1)], "USD", "r1", 3_000)
            .await
            .unwrap(),
        Renewal::InsufficientFunds { balance: b } if b == balance
    ));
    match store
        .renew_services(scope, &[renew(balance)], "USD", "r2", 3_000)
        .await
        .unwrap()
    {
        Renewal::Renewed(services) => assert_eq!(
            services[0].expires_at,
            Some(svc.expires_at.unwrap() + 30 * DAY_MS)
        ),
        other => panic!("expected a renewal, got {other:?}"),
    }
    assert_eq!(store.wallet_balance(demo.id, Mode::Test).await.unwrap(), 0);
}

async fn concurrent_idempotent_begins_start_once(db: Backend) {
    const TTL: i64 = 86_400_000;
    const STALE: i64 = 60_000;
    let store = db.open().await;
    let handles = instances(&db, 4).await;
    let race = |now: i64, idem_key: &'static str| {
        let calls: Vec<_> = (0..12)
            .map(|n| {
                let handle = Arc::clone(&handles[n % handles.len()]);
                tokio::spawn(async move {
                    handle
                        .begin_idempotent("key_a", idem_key, "fp", now, TTL, STALE)
                        .await
                        .unwrap()
                })
            })
            .collect();
        async move {
            let mut outcomes = Vec::new();
            for call in calls {
                outcomes.push(call.await.unwrap());
            }
            outcomes
        }
    };
    let count = |outcomes: &[IdempotencyBegin], wanted: IdempotencyBegin| {
        outcomes.iter().filter(|o| **o == wanted).count()
    };

    let first = race(1_000, "idem-1").await;
    assert_eq!(count(&first, IdempotencyBegin::Started), 1);
    assert_eq!(count(&first, IdempotencyBegin::InFlight), 11);
    store
        .finish_idempotent(
            "key_a",
            "idem-1",
            201,
            r#"{"ok":true}"#,
            Some("application/json"),
        )
        .await
        .unwrap();
    let replay = IdempotencyBegin::Replay {
        status: 201,
        body: r#"{"ok":true}"#.into(),
        content_type: Some("application/json".into()),
    };
    let repeats = race(2_000, "idem-1").await;
    assert_eq!(count(&repeats, replay), 12);
    assert_eq!(
        store
            .begin_idempotent("key_a", "idem-1", "other", 2_000, TTL, STALE)
            .await
            .unwrap(),
        IdempotencyBegin::Mismatch
    );
    // Another API key's record of the same name is its own.
    assert_eq!(
        store
            .begin_idempotent("key_b", "idem-1", "other", 2_000, TTL, STALE)
            .await
            .unwrap(),
        IdempotencyBegin::Started
    );

    // An in-flight record whose server died is taken over by one retry.
    assert_eq!(
        store
            .begin_idempotent("key_a", "idem-2", "fp", 1_000, TTL, STALE)
            .await
            .unwrap(),
        IdempotencyBegin::Started
    );
    let early = race(1_000 + STALE - 1, "idem-2").await;
    assert_eq!(count(&early, IdempotencyBegin::InFlight), 12);
    let late = race(1_000 + STALE, "idem-2").await;
    assert_eq!(count(&late, IdempotencyBegin::Started), 1);
    assert_eq!(count(&late, IdempotencyBegin::InFlight), 11);
    // Abandoned, the key is free for the next attempt.
    store.abandon_idempotent("key_a", "idem-2").await.unwrap();
    assert_eq!(
        store
            .begin_idempotent("key_a", "idem-2", "fp", 70_000, TTL, STALE)
            .await
            .unwrap(),
        IdempotencyBegin::Started
    );
    // Expired, a record is forgotten: even another request may use the key.
    assert_eq!(
        store
            .begin_idempotent("key_a", "idem-1", "other", 1_000 + TTL, TTL, STALE)
            .await
            .unwrap(),
        IdempotencyBegin::Started
    );
}

async fn outbox_events_fan_out_and_deliveries_are_claimed_once(db: Backend) {
    let store = db.open().await;
    let demo = store.create_account("demo", 1).await.unwrap();
    let scope = test_scope(&demo);
    let hook = |id: &str, events: Vec<String>| NewWebhookEndpoint {
        id: id.into(),
        scope,
        url: "https://hooks.example.test/advps".into(),
        description: None,
        events,
        secret_enc: "v1:secret".into(),
        now: 1,
    };
    store
        .create_webhook(&hook("we_all", Vec::new()))
        .await
        .unwrap();
    store
        .create_webhook(&hook("we_tasks", vec!["task.completed".into()]))
        .await
        .unwrap();
    let svc = store
        .find_service(scope, "vps_service_2")
        .await
        .unwrap()
        .unwrap();
    // Twenty changes, each with its event written in the same transaction.
    for _ in 0..10 {
        assert!(store
            .transition_power(svc.pk, PowerState::Stopped, PowerState::Running, Some(1))
            .await
            .unwrap());
        assert!(store
            .transition_power(svc.pk, PowerState::Running, PowerState::Stopped, None)
            .await
            .unwrap());
    }
    // A change that does not happen writes no event.
    assert!(!store
        .transition_power(svc.pk, PowerState::Running, PowerState::Stopped, None)
        .await
        .unwrap());

    let now = advps_domain::time::now_millis();
    let handles = instances(&db, 4).await;
    let mut sweeps = Vec::new();
    for handle in &handles {
        let handle = Arc::clone(handle);
        sweeps.push(tokio::spawn(async move {
            let mut made = 0;
            loop {
                let n = handle.fan_out_events(now, 3).await.unwrap();
                if n == 0 {
                    return made;
                }
                made += n;
            }
        }));
    }
    let mut made = 0;
    for sweep in sweeps {
        made += sweep.await.unwrap();
    }
    made += store.fan_out_events(now, 100).await.unwrap();
    assert_eq!(made, 20, "each event fanned out once");
    assert_eq!(store.fan_out_events(now, 100).await.unwrap(), 0);
    let (deliveries, total) = store.list_deliveries("we_all", 0, 100).await.unwrap();
    assert_eq!(total, 20);
    let events: HashSet<&str> = deliveries.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(events.len(), 20);
    assert!(deliveries
        .iter()
        .all(|d| d.event_type == "service.power_state_changed" && d.status == "pending"));
    assert_eq!(
        store.list_deliveries("we_tasks", 0, 100).await.unwrap().1,
        0
    );

    let claim_all = |at: i64| {
        let calls: Vec<_> = handles
            .iter()
            .map(|handle| {
                let handle = Arc::clone(handle);
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    loop {
                        let batch = handle.claim_deliveries(at, 60_000, 4).await.unwrap();
                        if batch.is_empty() {
                            return ids;
                        }
                        ids.extend(batch.into_iter().map(|d| d.id));
                    }
                })
            })
            .collect();
        async move {
            let mut ids = Vec::new();
            for call in calls {
                ids.extend(call.await.unwrap());
            }
            ids
        }
    };
    let claimed = claim_all(now).await;
    let distinct: HashSet<&String> = claimed.iter().collect();
    assert_eq!(
        (claimed.len(), distinct.len()),
        (20, 20),
        "each claimed once"
    );
    // Held while being sent...
    assert!(store
        .claim_deliveries(now + 59_999, 60_000, 100)
        .await
        .unwrap()
        .is_empty());
    // ...and due again if its sender died; one that was delivered is done.
    store
        .record_delivery(
            &claimed[0],
            &DeliveryAttempt {
                delivered: true,
                status_code: Some(200),
                error: None,
                now: now + 1,
                retry_at: None,
            },
        )
        .await
        .unwrap();
    let reclaimed = claim_all(now + 60_000).await;
    assert_eq!(reclaimed.len(), 19);
    assert!(!reclaimed.contains(&claimed[0]));
}

/// The rest of the trait, once each: what operators and the background
/// sweeps read and write reads back the same on every backend.
async fn operator_records_round_trip(db: Backend) {
    let store = db.open().await;
    let demo = store.create_account("demo", 1).await.unwrap();
    let acme = store.create_account("acme", 2).await.unwrap();
    let names: Vec<String> = store
        .list_accounts()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["demo", "acme"]);

    // Nodes and OS images.
    let node = |name: &str| NewNode {
        name: name.into(),
        driver: "lxd".into(),
        endpoint: format!("https://{name}:8443"),
        credentials_enc: Some("v1:creds".into()),
        now: 3,
    };
    store.create_node(&node("node-b")).await.unwrap();
    let a = store.create_node(&node("node-a")).await.unwrap();
    assert!(matches!(
        store.create_node(&node("node-a")).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.find_node("node-a").await.unwrap(), Some(a));
    let nodes: Vec<String> = store
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(nodes, ["node-a", "node-b"]);
    let image = |slug: &str, node: Option<&str>| NewOsImage {
        slug: slug.into(),
        name: format!("OS {slug}"),
        os_type: advps_domain::OsType::Lxc,
        image: format!("images:{slug}"),
        node: node.map(Into::into),
        username: None,
        now: 4,
    };
    store.add_os_image(&image("debian-12", None)).await.unwrap();
    store
        .add_os_image(&image("debian-12", Some("node-a")))
        .await
        .unwrap();
    store.add_os_image(&image("alpine-3", None)).await.unwrap();
    assert!(matches!(
        store.add_os_image(&image("alpine-3", None)).await,
        Err(StoreError::Conflict(_))
    ));
    let slugs: Vec<(String, Option<String>)> = store
        .list_os_images()
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.slug, i.node))
        .collect();
    assert_eq!(
        slugs,
        [
            ("alpine-3".to_string(), None),
            ("debian-12".to_string(), None),
            ("debian-12".to_string(), Some("node-a".to_string()))
        ]
    );
    assert_eq!(store.os_images_by_slug("debian-12").await.unwrap().len(), 2);
    // The login name: NULL reads back as the OS's default, a set one as set.
    store
        .add_os_image(&NewOsImage {
            username: Some("admin".into()),
            ..image("custom-linux", None)
        })
        .await
        .unwrap();
    store
        .add_os_image(&NewOsImage {
            name: "Windows Server 2022".into(),
            os_type: advps_domain::OsType::Vps,
            ..image("windows-2022", None)
        })
        .await
        .unwrap();
    for (slug, stored, login) in [
        ("custom-linux", Some("admin"), "admin"),
        ("windows-2022", None, "Administrator"),
        ("alpine-3", None, "root"),
    ] {
        let images = store.os_images_by_slug(slug).await.unwrap();
        assert_eq!(images.len(), 1, "{slug}");
        assert_eq!(images[0].username.as_deref(), stored, "{slug}");
        assert_eq!(images[0].login_name(), login, "{slug}");
    }

    // Product sizes and the default OS.
    store
        .create_product(&product(Mode::Live, "lxc_m", VmType::Lxc, None))
        .await
        .unwrap();
    let size = |ram_mb, price_minor| ProductSize {
        ram_mb,
        price_minor,
        currency: "USD".into(),
    };
    store
        .set_product_size(Mode::Live, "lxc_m", &size(2048, 900))
        .await
        .unwrap();
    store
        .set_product_size(Mode::Live, "lxc_m", &size(1024, 500))
        .await
        .unwrap();
    store
        .set_product_size(Mode::Live, "lxc_m", &size(2048, 800))
        .await
        .unwrap();
    assert_eq!(
        store.product_sizes(Mode::Live, "lxc_m").await.unwrap(),
        [size(1024, 500), size(2048, 800)]
    );
    assert!(store
        .set_product_default_os(Mode::Live, "lxc_m", Some("debian-12"))
        .await
        .unwrap());
    assert!(!store
        .set_product_default_os(Mode::Live, "nope", None)
        .await
        .unwrap());
    let found = store
        .find_product(Mode::Live, "lxc_m", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.default_os.as_deref(), Some("debian-12"));

    // A live service: listing, the operation lock, MAC resets, expiry.
    let svc = live_services(&*store, &acme, "node-a", 1).await.remove(0);
    assert!(matches!(
        store
            .bind_live_service(&NewLiveService {
                account_id: demo.id,
                service_id: "OTHER1".into(),
                service_type: ServiceType::Linux,
                instance_id: svc.instance_id.unwrap(),
                power_state: PowerState::Stopped,
                expires_at: None,
                now: 5,
            })
            .await,
        Err(StoreError::Conflict(_))
    ));
    let live = store.list_services(Some(Mode::Live)).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(
        (
            live[0].account_name.as_str(),
            live[0].service.node.as_deref()
        ),
        ("acme", Some("node-a"))
    );
    let all = store.list_services(None).await.unwrap();
    assert_eq!(all.len(), 9);
    assert_eq!(all[0].account_name, "acme");
    assert_eq!(
        store.lock_service(svc.pk, "op1", 100, 1_000).await.unwrap(),
        LockOutcome::Locked
    );
    assert_eq!(
        store.lock_service(svc.pk, "op2", 200, 1_000).await.unwrap(),
        LockOutcome::Busy
    );
    store
        .unlock_service(svc.pk, "op1", Some((PowerState::Stopped, None)))
        .await
        .unwrap();
    let acme_live = Scope {
        account_id: acme.id,
        mode: Mode::Live,
    };
    let after = store
        .find_service(acme_live, &svc.service_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.power_state, PowerState::Stopped);
    assert_eq!(
        store.lock_service(svc.pk, "op3", 300, 1_000).await.unwrap(),
        LockOutcome::Locked
    );
    store.unlock_service(svc.pk, "op3", None).await.unwrap();

    assert_eq!(
        store.claim_mac_reset(svc.pk, 10_000, 5_000).await.unwrap(),
        Ok(())
    );
    assert_eq!(
        store.claim_mac_reset(svc.pk, 12_000, 5_000).await.unwrap(),
        Err(15_000)
    );
    store.restore_mac_reset(svc.pk, None).await.unwrap();
    assert_eq!(
        store.claim_mac_reset(svc.pk, 12_000, 5_000).await.unwrap(),
        Ok(())
    );
    store
        .set_service_mac(svc.pk, "02:00:00:00:00:01")
        .await
        .unwrap();
    store.set_service_expiry(svc.pk, 50_000).await.unwrap();
    let due: Vec<i64> = store
        .services_to_suspend(50_000, 10)
        .await
        .unwrap()
        .iter()
        .map(|s| s.pk)
        .collect();
    assert_eq!(due, [svc.pk]);
    assert!(store.suspend_service(svc.pk).await.unwrap());
    assert!(!store.suspend_service(svc.pk).await.unwrap());
    assert_eq!(
        store.services_to_terminate(50_000, 10).await.unwrap().len(),
        1
    );
    assert!(store
        .services_to_terminate(49_999, 10)
        .await
        .unwrap()
        .is_empty());
    let suspended = store
        .find_service(acme_live, &svc.service_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (suspended.power_state, suspended.mac.as_deref()),
        (PowerState::Suspended, Some("02:00:00:00:00:01"))
    );
    store
        .set_instance_state(svc.instance_id.unwrap(), "out_of_service")
        .await
        .unwrap();
    assert!(store.remove_service(svc.pk, "free").await.unwrap());
    assert!(!store.remove_service(svc.pk, "free").await.unwrap());
    let instance = store
        .list_instances(Some("node-a"))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(instance.state, "free");

    // A sandbox order settles once its services are provisioned.
    store
        .ensure_products(&[product(Mode::Test, "vps_s", VmType::Vps, Some(5))])
        .await
        .unwrap();
    let scope = test_scope(&demo);
    let PlaceOrder::Placed { order, services } = store
        .place_order(&one_unit_order(scope, "vps_s", ServiceType::Vps, 100))
        .await
        .unwrap()
    else {
        panic!("expected an order");
    };
    assert_eq!(order.status, "PENDING");
    assert_eq!(services[0].power_state, PowerState::Provisioning);
    assert_eq!(
        store.find_order(scope, &order.id).await.unwrap(),
        Some((*order).clone())
    );
    assert!(store
        .find_order(test_scope(&acme), &order.id)
        .await
        .unwrap()
        .is_none());
    assert!(!store.settle_order(&order.id, 6_000).await.unwrap());
    let task = store.active_task(services[0].pk).await.unwrap().unwrap();
    assert_eq!(task.kind, TaskKind::Provision);
    let finish = TaskFinish {
        status: TaskStatus::Completed,
        error: None,
        now: 6_000,
        power_state: PowerState::Running,
        started_at: Some(6_000),
        os: None,
        owner: None,
    };
    assert!(store.finish_task(&task.id, &finish).await.unwrap());
    assert!(store.settle_order(&order.id, 6_001).await.unwrap());
    assert!(!store.settle_order(&order.id, 6_002).await.unwrap());
    assert_eq!(
        store.order_services(&order.id).await.unwrap()[0].power_state,
        PowerState::Running
    );

    // Webhook endpoints and their deliveries.
    let endpoint = store
        .create_webhook(&NewWebhookEndpoint {
            id: "we_1".into(),
            scope,
            url: "https://hooks.example.test/a".into(),
            description: Some("ops".into()),
            events: vec!["order.completed".into()],
            secret_enc: "v1:one".into(),
            now: 7,
        })
        .await
        .unwrap();
    assert_eq!(endpoint.events, ["order.completed"]);
    assert_eq!(
        store.list_webhooks(scope).await.unwrap(),
        std::slice::from_ref(&endpoint)
    );
    assert_eq!(store.all_webhooks(None).await.unwrap().len(), 1);
    assert!(store.all_webhooks(Some(acme.id)).await.unwrap().is_empty());
    assert!(store
        .rotate_webhook_secret("we_1", "v1:two", 9_000)
        .await
        .unwrap());
    let rotated = store.find_webhook("we_1").await.unwrap().unwrap();
    assert_eq!(
        (
            rotated.secret_enc.as_str(),
            rotated.previous_secret_enc.as_deref(),
            rotated.previous_until
        ),
        ("v1:two", Some("v1:one"), Some(9_000))
    );
    assert_eq!(store.fan_out_events(8_000, 100).await.unwrap(), 1);
    let (deliveries, _) = store.list_deliveries("we_1", 0, 10).await.unwrap();
    assert_eq!(deliveries[0].event_type, "order.completed");
    store
        .record_delivery(
            &deliveries[0].id,
            &DeliveryAttempt {
                delivered: false,
                status_code: None,
                error: Some("refused".into()),
                now: 8_001,
                retry_at: None,
            },
        )
        .await
        .unwrap();
    let (failed, _) = store.list_deliveries("we_1", 0, 10).await.unwrap();
    assert_eq!(
        (failed[0].status.as_str(), failed[0].attempts),
        ("failed", 1)
    );
    assert!(store
        .redeliver("we_1", &deliveries[0].id, 8_002)
        .await
        .unwrap());
    assert_eq!(
        store
            .claim_deliveries(8_002, 1_000, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(store.delete_webhook("we_1").await.unwrap());
    assert!(!store.delete_webhook("we_1").await.unwrap());
    assert_eq!(store.list_deliveries("we_1", 0, 10).await.unwrap().1, 0);

    // The audit log, newest first, filtered.
    for (n, service_id) in [Some("vps_service_1"), None, Some("vps_service_1")]
        .into_iter()
        .enumerate()
    {
        store
            .record_audit(&NewAuditEntry {
                at: 10_000 + n as i64,
                account_id: Some(demo.id),
                key_id: Some("key_a".into()),
                mode: Some(Mode::Test),
                method: "POST".into(),
                path: "/api/v1/x".into(),
                service_id: service_id.map(Into::into),
                status: 200,
                request_id: format!("req-{n}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let (entries, total) = store
        .list_audit(&AuditFilter {
            account_id: Some(demo.id),
            service_id: Some("vps_service_1".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(total, 2);
    assert_eq!(
        entries
            .iter()
            .map(|e| (e.request_id.as_str(), e.account_name.as_deref()))
            .collect::<Vec<_>>(),
        [("req-2", Some("demo")), ("req-0", Some("demo"))]
    );
    let (window, total) = store
        .list_audit(&AuditFilter {
            from: Some(10_001),
            to: Some(10_001),
            mode: Some(Mode::Test),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((window.len(), total), (1, 1));
}

async fn set_node_credentials_replaces_only_that_node(db: Backend) {
    let store = db.open().await;
    let node = |name: &str| NewNode {
        name: name.into(),
        driver: "proxmox".into(),
        endpoint: format!("https://{name}:8006"),
        credentials_enc: Some(format!("v1:{name}")),
        now: 3,
    };
    let a = store.create_node(&node("node-a")).await.unwrap();
    let b = store.create_node(&node("node-b")).await.unwrap();

    assert!(store
        .set_node_credentials("node-a", Some("v1:resealed"))
        .await
        .unwrap());
    let found = store.find_node("node-a").await.unwrap().unwrap();
    assert_eq!(found.credentials_enc.as_deref(), Some("v1:resealed"));
    // Everything else about the node, and every other node, stays.
    assert_eq!(
        (found.id, &found.endpoint, found.created_at),
        (a.id, &a.endpoint, a.created_at)
    );
    assert_eq!(store.find_node("node-b").await.unwrap(), Some(b));

    assert!(store.set_node_credentials("node-a", None).await.unwrap());
    let cleared = store.find_node("node-a").await.unwrap().unwrap();
    assert_eq!(cleared.credentials_enc, None);

    assert!(!store
        .set_node_credentials("node-z", Some("v1:nobody"))
        .await
        .unwrap());
    assert!(store.find_node("node-z").await.unwrap().is_none());
}

async fn every_driver_can_own_a_node_and_no_other(db: Backend) {
    let store = db.open().await;
    for (name, driver, endpoint) in [
        ("n-lxd", "lxd", "unix:///var/lib/lxd/unix.socket"),
        ("n-pve", "proxmox", "https://pve:8006"),
        ("n-kvm", "libvirt", "qemu:///system"),
    ] {
        let made = store
            .create_node(&NewNode {
                name: name.into(),
                driver: driver.into(),
                endpoint: endpoint.into(),
                credentials_enc: None,
                now: 5,
            })
            .await
            .unwrap();
        let found = store.find_node(name).await.unwrap().unwrap();
        assert_eq!(found, made);
        assert_eq!(found.driver, driver);
    }
    assert!(store
        .create_node(&NewNode {
            name: "n-xen".into(),
            driver: "xen".into(),
            endpoint: "xen:///".into(),
            credentials_enc: None,
            now: 5,
        })
        .await
        .is_err());
}

async fn usage_history_rolls_up_prunes_and_rounds_are_taken_once(db: Backend) {
    let store = db.open().await;
    let demo = store.create_account("demo", 1).await.unwrap();
    let vps = store
        .find_service(test_scope(&demo), "vps_service_1")
        .await
        .unwrap()
        .unwrap();
    let other = store
        .find_service(test_scope(&demo), "vps_service_2")
        .await
        .unwrap()
        .unwrap();
    // Raw for 10 s, 1-second averages for 60 s, 5-second ones for 300 s.
    let schedule = UsageSchedule {
        raw_keep_ms: 10_000,
        rollups: [
            UsageTier {
                bucket_ms: 1_000,
                keep_ms: 60_000,
            },
            UsageTier {
                bucket_ms: 5_000,
                keep_ms: 300_000,
            },
        ],
    };
    // A sample every 250 ms for 20 s; CPU cycles 0, 1, 2, 3 percent; disk
    // is a figure this engine cannot give; the first rates are unknown.
    let samples: Vec<(i64, UsagePoint)> = (0..80)
        .map(|i: i64| {
            (
                vps.pk,
                UsagePoint {
                    at: 100_000 + i * 250,
                    cpu_milli: Some((i % 4) * 1_000),
                    memory_used: Some(1_000 + i),
                    disk_used: None,
                    net_in: (i > 0).then_some(10 * i),
                    net_out: (i > 0).then_some(20 * i),
                },
            )
        })
        .collect();
    store.record_usage(&samples, &schedule).await.unwrap();
    store
        .record_usage(
            &[(
                other.pk,
                UsagePoint {
                    at: 100_000,
                    cpu_milli: Some(50_000),
                    ..UsagePoint::default()
                },
            )],
            &schedule,
        )
        .await
        .unwrap();

    let raw = store
        .usage_series(vps.pk, 0, 100_000, 101_000, 250)
        .await
        .unwrap();
    assert_eq!(raw.len(), 4);
    assert_eq!(raw[1].at, 100_250);
    assert_eq!(raw[1].cpu_milli, Some(1_000));
    assert_eq!(raw[0].net_in, None, "an unknown rate stays unknown");
    assert_eq!(raw[1].net_out, Some(20));
    assert_eq!(raw[0].disk_used, None);

    // Each 1-second bucket averages its four samples.
    let seconds = store
        .usage_series(vps.pk, 1, 100_000, 120_000, 1_000)
        .await
        .unwrap();
    assert_eq!(seconds.len(), 20);
    assert!(seconds.iter().all(|p| p.cpu_milli == Some(1_500)));
    assert_eq!(seconds[1].memory_used, Some(1_005)); // (1004+..+1007)/4, rounded down
    assert_eq!(
        seconds[0].net_in,
        Some(20),
        "(10+20+30)/3: the unknown one is not counted"
    );
    // Coarser steps over a tier average its buckets.
    let fives = store
        .usage_series(vps.pk, 2, 100_000, 120_000, 10_000)
        .await
        .unwrap();
    assert_eq!(fives.len(), 2);
    assert_eq!(fives[0].at, 100_000);
    assert_eq!(fives[0].cpu_milli, Some(1_500));
    // Another service's samples are its own.
    let theirs = store
        .usage_series(other.pk, 0, 0, 200_000, 1_000)
        .await
        .unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].cpu_milli, Some(50_000));

    assert_eq!(store.usage_rows(vps.pk).await.unwrap(), [80, 20, 4]);
    // At 120 s raw samples before 110 s go, the rollups stay; at 200 s the
    // 1-second tier goes too; by 500 s nothing is left.
    store.prune_usage(120_000, &schedule).await.unwrap();
    assert_eq!(store.usage_rows(vps.pk).await.unwrap(), [40, 20, 4]);
    store.prune_usage(200_000, &schedule).await.unwrap();
    assert_eq!(store.usage_rows(vps.pk).await.unwrap(), [0, 0, 4]);
    store.prune_usage(500_000, &schedule).await.unwrap();
    assert_eq!(store.usage_rows(vps.pk).await.unwrap(), [0, 0, 0]);

    // Counters: the first reading has nothing before it, the next gets it back.
    let first = UsageCounters {
        at: 1_000,
        cpu_ns: Some(5),
        rx_bytes: Some(10),
        tx_bytes: None,
    };
    let second = UsageCounters {
        at: 2_000,
        cpu_ns: Some(7),
        rx_bytes: Some(30),
        tx_bytes: Some(1),
    };
    assert_eq!(
        store
            .swap_usage_counters(&[(vps.pk, first), (other.pk, first)], 1_000)
            .await
            .unwrap(),
        vec![None, None]
    );
    // Within the gap the stored reading stays, to measure against.
    let soon = UsageCounters {
        at: 1_500,
        ..second
    };
    assert_eq!(
        store
            .swap_usage_counters(&[(vps.pk, soon)], 1_000)
            .await
            .unwrap(),
        vec![Some(first)]
    );
    assert_eq!(
        store
            .swap_usage_counters(&[(vps.pk, second)], 1_000)
            .await
            .unwrap(),
        vec![Some(first)]
    );
    // Counters that went back (a restart) replace the old boot's at once.
    let rebooted = UsageCounters {
        at: 2_100,
        cpu_ns: Some(1),
        rx_bytes: Some(1),
        tx_bytes: Some(1),
    };
    assert_eq!(
        store
            .swap_usage_counters(&[(vps.pk, rebooted)], 1_000)
            .await
            .unwrap(),
        vec![Some(second)]
    );
    assert_eq!(
        store
            .swap_usage_counters(&[(vps.pk, second)], 1_000)
            .await
            .unwrap(),
        vec![Some(rebooted)]
    );
    // Reading them back writes nothing.
    assert_eq!(store.usage_counters(vps.pk).await.unwrap(), Some(rebooted));
    assert_eq!(store.usage_counters(vps.pk).await.unwrap(), Some(rebooted));
    assert_eq!(store.usage_counters(i64::MAX).await.unwrap(), None);

    // Several instances racing for a node's round: one wins per interval.
    let handles = instances(&db, 4).await;
    let mut racers = Vec::new();
    for (i, handle) in handles.iter().enumerate() {
        let handle = Arc::clone(handle);
        racers.push(tokio::spawn(async move {
            handle
                .claim_usage_round("node-a", &format!("w{i}"), 10_000, 60_000)
                .await
                .unwrap()
        }));
    }
    let mut wins = 0;
    for r in racers {
        wins += usize::from(r.await.unwrap());
    }
    assert_eq!(wins, 1);
    assert!(!store
        .claim_usage_round("node-a", "late", 69_999, 60_000)
        .await
        .unwrap());
    assert!(store
        .claim_usage_round("node-b", "late", 69_999, 60_000)
        .await
        .unwrap());
    assert!(store
        .claim_usage_round("node-a", "late", 70_000, 60_000)
        .await
        .unwrap());
}

async fn services_are_listed_per_account_filtered_and_paged(db: Backend) {
    let store = db.open().await;
    let demo = store.create_account("demo", 1).await.unwrap();
    let acme = store.create_account("acme", 2).await.unwrap();
    let (all, total) = store
        .page_services(test_scope(&demo), None, None, 0, 100)
        .await
        .unwrap();
    assert_eq!(total, 4);
    let ids: Vec<&str> = all.iter().map(|s| s.service_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "lxc_service_1",
            "pvps_service_1",
            "vps_service_1",
            "vps_service_2"
        ]
    );
    assert!(all.iter().all(|s| s.account_id == demo.id));
    let (page, total) = store
        .page_services(test_scope(&demo), None, None, 2, 1)
        .await
        .unwrap();
    assert_eq!((page[0].service_id.as_str(), total), ("vps_service_1", 4));
    let (vps, total) = store
        .page_services(test_scope(&demo), Some(ServiceType::Vps), None, 0, 10)
        .await
        .unwrap();
    assert_eq!((vps.len(), total), (2, 2));
    let (stopped, _) = store
        .page_services(
            test_scope(&demo),
            Some(ServiceType::Vps),
            Some(PowerState::Stopped),
            0,
            10,
        )
        .await
        .unwrap();
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0].service_id, "vps_service_2");
    let (past, total) = store
        .page_services(test_scope(&acme), None, None, u64::MAX / 2, 10)
        .await
        .unwrap();
    assert_eq!((past.len(), total), (0, 4));
    let live = Scope {
        account_id: demo.id,
        mode: Mode::Live,
    };
    assert_eq!(
        store
            .page_services(live, None, None, 0, 10)
            .await
            .unwrap()
            .1,
        0
    );
}

async fn wallet_ledgers_and_orders_are_paged_newest_first_per_account(db: Backend) {
    let store = db.open().await;
    let demo = store.create_account("demo", 1).await.unwrap();
    let acme = store.create_account("acme", 2).await.unwrap();
    store
        .ensure_products(&[product(Mode::Test, "vps_s", VmType::Vps, Some(100))])
        .await
        .unwrap();
    let mut placed = Vec::new();
    for (scope, now) in [
        (test_scope(&demo), 1_000),
        (test_scope(&acme), 1_500),
        (test_scope(&demo), 2_000),
        (test_scope(&demo), 3_000),
    ] {
        let mut order = one_unit_order(scope, "vps_s", ServiceType::Vps, 250);
        order.now = now;
        match store.place_order(&order).await.unwrap() {
            PlaceOrder::Placed { order, .. } => placed.push(order.id),
            other => panic!("not placed: {other:?}"),
        }
    }

    // Orders: newest first, the account's own, in pages.
    let (orders, total) = store.page_orders(test_scope(&demo), 0, 2).await.unwrap();
    assert_eq!(total, 3);
    let ids: Vec<&str> = orders.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(ids, [placed[3].as_str(), placed[2].as_str()]);
    let (rest, _) = store.page_orders(test_scope(&demo), 2, 2).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].id, placed[0]);
    let (theirs, total) = store.page_orders(test_scope(&acme), 0, 10).await.unwrap();
    assert_eq!((theirs.len(), total), (1, 1));
    assert_eq!(theirs[0].id, placed[1]);
    let (past, total) = store
        .page_orders(test_scope(&demo), u64::MAX / 2, 10)
        .await
        .unwrap();
    assert_eq!((past.len(), total), (0, 3));
    let live = Scope {
        account_id: demo.id,
        mode: Mode::Live,
    };
    assert_eq!(store.page_orders(live, 0, 10).await.unwrap().1, 0);

    // The ledger: the starting credit, then one purchase per order, newest
    // first, summing to the balance.
    store
        .credit_wallet(demo.id, Mode::Test, 100, "USD", "top-up", 4_000)
        .await
        .unwrap();
    let (entries, total) = store.page_ledger(test_scope(&demo), 0, 10).await.unwrap();
    assert_eq!(total, 5);
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["credit", "purchase", "purchase", "purchase", "credit"]
    );
    assert_eq!(entries[1].amount_minor, -250);
    assert_eq!(entries[1].reference.as_deref(), Some(placed[3].as_str()));
    assert_eq!(entries[0].note.as_deref(), Some("top-up"));
    assert_eq!(
        entries.iter().map(|e| e.amount_minor).sum::<i64>(),
        store.wallet_balance(demo.id, Mode::Test).await.unwrap()
    );
    let (page, _) = store.page_ledger(test_scope(&demo), 4, 10).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, entries[4].id);
    let (theirs, total) = store.page_ledger(test_scope(&acme), 0, 10).await.unwrap();
    assert_eq!((theirs.len(), total), (2, 2));
    assert_eq!(store.page_ledger(live, 0, 10).await.unwrap().1, 0);
}

/// Makes `sqlite::<check>` and `postgres::<check>` of each check.
async fn console_tickets_are_taken_once_and_expire(db: Backend) {
    let store = db.open().await;
    let other = db.open().await;
    let demo = store.create_account("demo", 1_000).await.unwrap();
    let vps = store
        .find_service(test_scope(&demo), "vps_service_1")
        .await
        .unwrap()
        .unwrap();
    let ticket = |digest: &str, created_at: i64| ConsoleTicket {
        digest: digest.to_string(),
        account_id: demo.id,
        mode: Mode::Test,
        key_id: "key_c1".into(),
        service_pk: vps.pk,
        service_id: vps.service_id.clone(),
        created_at,
        expires_at: created_at + 60_000,
    };
    store
        .insert_console_ticket(&ticket("d1", 1_000))
        .await
        .unwrap();
    // Two processes take one ticket at once: exactly one gets it.
    let (a, b) = tokio::join!(
        store.take_console_ticket("d1", 2_000),
        other.take_console_ticket("d1", 2_000)
    );
    let taken: Vec<_> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0].service_pk, vps.pk);
    assert_eq!(taken[0].mode, Mode::Test);
    assert_eq!(taken[0].key_id, "key_c1");
    assert!(store
        .take_console_ticket("d1", 2_000)
        .await
        .unwrap()
        .is_none());
    // An expired ticket opens nothing, and is gone afterwards.
    store
        .insert_console_ticket(&ticket("d2", 1_000))
        .await
        .unwrap();
    assert!(store
        .take_console_ticket("d2", 61_000)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .take_console_ticket("d2", 2_000)
        .await
        .unwrap()
        .is_none());
    // Issuing a ticket drops those that expired before it.
    store
        .insert_console_ticket(&ticket("d3", 1_000))
        .await
        .unwrap();
    store
        .insert_console_ticket(&ticket("d4", 100_000))
        .await
        .unwrap();
    assert!(store
        .take_console_ticket("d3", 2_000)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .take_console_ticket("d4", 100_001)
        .await
        .unwrap()
        .is_some());
}

/// Panel sessions hold across instances, end with their key's revocation
/// and after the idle time, and are dropped once idle.
async fn panel_sessions_end_with_their_key_and_when_idle(db: Backend) {
    let store = db.open().await;
    let other = db.open().await;
    let demo = store.create_account("demo", 1).await.unwrap();
    store
        .insert_api_key(&NewApiKey {
            id: "key_p".into(),
            account_id: demo.id,
            mode: Mode::Test,
            key_hash: "ef".repeat(32),
            last4: "PQRS".into(),
            created_at: 10,
        })
        .await
        .unwrap();
    let session = |digest: &str, created_at: i64| NewPanelSession {
        digest: digest.into(),
        key_id: "key_p".into(),
        account_id: demo.id,
        mode: Mode::Test,
        csrf_token: format!("csrf-{digest}"),
        created_at,
    };
    store
        .insert_panel_session(&session("s1", 1_000), 0)
        .await
        .unwrap();
    // Another instance finds it, with the key's digest to make the caller from.
    let found = other
        .find_panel_session("s1", 0)
        .await
        .unwrap()
        .expect("session seen by another instance");
    assert_eq!(
        (
            found.key_id.as_str(),
            found.key_hash.as_str(),
            found.account_id,
            found.mode,
            found.csrf_token.as_str(),
            found.last_seen_at
        ),
        (
            "key_p",
            "ef".repeat(32).as_str(),
            demo.id,
            Mode::Test,
            "csrf-s1",
            1_000
        )
    );
    assert!(store.find_panel_session("nope", 0).await.unwrap().is_none());
    // Idle: not found once last seen before the limit; a use moves it on,
    // never back.
    assert!(store
        .find_panel_session("s1", 1_001)
        .await
        .unwrap()
        .is_none());
    other.touch_panel_session("s1", 5_000).await.unwrap();
    store.touch_panel_session("s1", 4_000).await.unwrap();
    let seen = store
        .find_panel_session("s1", 5_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.last_seen_at, 5_000);
    // A new session drops those idle since before its limit.
    store
        .insert_panel_session(&session("s2", 9_000), 6_000)
        .await
        .unwrap();
    assert!(store.find_panel_session("s1", 0).await.unwrap().is_none());
    // Signing out ends it, once.
    store
        .insert_panel_session(&session("s3", 9_000), 0)
        .await
        .unwrap();
    assert!(other.delete_panel_session("s3").await.unwrap());
    assert!(!store.delete_panel_session("s3").await.unwrap());
    assert!(store.find_panel_session("s3", 0).await.unwrap().is_none());
    // Revoking the key ends its sessions everywhere at once.
    assert!(store.find_panel_session("s2", 0).await.unwrap().is_some());
    assert!(other.revoke_api_key("key_p", 10_000).await.unwrap());
    assert!(store.find_panel_session("s2", 0).await.unwrap().is_none());
}

macro_rules! contract_tests {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    crate::run_sqlite(super::$check).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    crate::run_postgres(super::$check).await;
                }
            )*
        }
    };
}

contract_tests!(
    accounts_are_unique_and_come_with_their_sandbox_fleet,
    keys_are_found_by_digest_and_revoked_once,
    an_accounts_last_key_in_a_mode_is_never_revoked,
    concurrent_power_transitions_have_one_winner,
    tasks_hold_the_service_respect_the_monthly_limit_and_finish_once,
    concurrent_task_starts_have_one_winner,
    addresses_and_passwords_follow_the_service_state,
    product_stock_is_sorted_paged_and_derived_from_free_inventory,
    data_survives_reopening,
    a_revoked_key_fails_at_once_here_and_within_a_second_elsewhere,
    a_service_changed_by_another_process_is_read_fresh,
    shared_rate_windows_admit_exactly_the_limit,
    workers_claim_each_task_once_and_take_over_lapsed_leases,
    concurrent_allocations_never_share_an_address,
    concurrent_orders_never_sell_one_machine_twice,
    concurrent_purchases_never_overdraw_the_wallet,
    concurrent_idempotent_begins_start_once,
    outbox_events_fan_out_and_deliveries_are_claimed_once,
    operator_records_round_trip,
    set_node_credentials_replaces_only_that_node,
    every_driver_can_own_a_node_and_no_other,
    usage_history_rolls_up_prunes_and_rounds_are_taken_once,
    services_are_listed_per_account_filtered_and_paged,
    console_tickets_are_taken_once_and_expire,
    panel_sessions_end_with_their_key_and_when_idle,
    wallet_ledgers_and_orders_are_paged_newest_first_per_account,
);
