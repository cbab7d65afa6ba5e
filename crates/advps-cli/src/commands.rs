//! What each subcommand does. Every command opens the same storage as the
//! server (running migrations if needed), so it works whether or not a
//! server is running on the data directory.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tokio::net::TcpListener;

use advps_domain::{api_key, ids, time, Mode, StockStatus};
use advps_server::Config;
use advps_store::{NewProduct, Removal, Store, StoreError};

use crate::cli::{AccountsCommand, Cli, Command, KeysCommand, ProductsCommand, WebhooksCommand};
use crate::live_admin;

/// The account made on the first start so that a newcomer can call the API at once.
const DEMO_ACCOUNT: &str = "demo";

pub async fn run(cli: Cli) -> Result<()> {
    let config_file = cli.global.config.clone();
    let config = Config::load(config_file.as_deref(), &flags(&cli))?;
    match cli.command {
        Command::Serve { .. } => serve(config).await,
        Command::Worker => worker(config).await,
        Command::Migrate { dry_run: true } => crate::operate::migrate_dry_run(&config).await,
        Command::Migrate { dry_run: false } => {
            let store = open(&config).await?;
            advps_server::server_seed(store.as_ref()).await?;
            println!("Database in {} is up to date", config.data_dir.display());
            Ok(())
        }
        Command::Backup { to, passphrase } => {
            crate::operate::backup(&open(&config).await?, &config, &to, &passphrase).await
        }
        Command::Restore {
            from,
            force,
            passphrase,
        } => crate::operate::restore(&config, &from, force, &passphrase).await,
        Command::Doctor => crate::operate::doctor(&config, config_file.as_deref()).await,
        Command::Accounts(cmd) => accounts(&open(&config).await?, cmd).await,
        Command::Keys(cmd) => keys(&open(&config).await?, cmd).await,
        Command::Products(cmd) => products(&open(&config).await?, &config, cmd).await,
        Command::Nodes(cmd) => live_admin::nodes(&open(&config).await?, &config, cmd).await,
        Command::Os(cmd) => live_admin::os(&open(&config).await?, cmd).await,
        Command::Ippools(cmd) => live_admin::ippools(&open(&config).await?, cmd).await,
        Command::Services(cmd) => live_admin::services(&open(&config).await?, &config, cmd).await,
        Command::Webhooks(cmd) => webhooks(&open(&config).await?, &config, cmd).await,
        Command::Audit {
            account,
            service,
            limit,
        } => audit(&open(&config).await?, account, service, limit).await,
    }
}

/// The settings given as flags, the configuration's last layer.
fn flags(cli: &Cli) -> Vec<(&'static str, String)> {
    let text = |p: &std::path::PathBuf| p.to_string_lossy().into_owned();
    let mut flags = vec![];
    flags.extend(cli.global.data_dir.as_ref().map(|d| ("data_dir", text(d))));
    flags.extend(cli.global.database_url.clone().map(|u| ("database_url", u)));
    if let Command::Serve {
        listen,
        no_worker,
        metrics_listen,
    } = &cli.command
    {
        flags.extend(listen.clone().map(|l| ("listen", l)));
        flags.extend(metrics_listen.clone().map(|m| ("metrics_listen", m)));
        if *no_worker {
            flags.push(("run_worker", "false".to_string()));
        }
    }
    flags
}

async fn open(config: &Config) -> Result<Arc<dyn Store>> {
    advps_server::open_store(config)
        .await
        .with_context(|| match &config.database_url {
            Some(_) => "cannot open the configured database".to_string(),
            None => format!(
                "cannot open the data directory {}",
                config.data_dir.display()
            ),
        })
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ADVPS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log_format == "json" {
        // One JSON object per line, with the request's span (and so its
        // request id) on every line logged while serving it.
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

async fn serve(config: Config) -> Result<()> {
    init_logging(&config);
    let addr = config.listen_addr()?;
    let shutdown = shutdown_signal()?;
    let state = advps_server::build_state(config.clone())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if state.store.count_accounts().await? == 0 {
        let account = state
            .store
            .create_account(DEMO_ACCOUNT, time::now_millis())
            .await?;
        let key = create_key(state.store.as_ref(), account.id, Mode::Test).await?;
        println!("Created account \"{DEMO_ACCOUNT}\" with a test key (shown only this once):");
        println!("{}", key.plaintext);
    }
    if let Some(metrics_addr) = config.metrics_listen.clone() {
        let metrics = TcpListener::bind(&metrics_addr)
            .await
            .with_context(|| format!("cannot listen on {metrics_addr} for metrics"))?;
        println!("Metrics on http://{}/metrics", metrics.local_addr()?);
        let state = state.clone();
        tokio::spawn(async move {
            // It ends with the process: nothing there needs draining.
            let serving = advps_server::serve_metrics(metrics, state, std::future::pending());
            if let Err(e) = serving.await {
                tracing::error!(error = %e, "metrics server stopped");
            }
        });
    }
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    println!("Listening on http://{local}");
    tracing::info!(address = %local, data_dir = %config.data_dir.display(), "advps serving");
    advps_server::serve(listener, state, shutdown).await?;
    tracing::info!("advps stopped");
    Ok(())
}

async fn worker(config: Config) -> Result<()> {
    init_logging(&config);
    let shutdown = shutdown_signal()?;
    let state = advps_server::build_state(config)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("Worker running");
    tracing::info!("advps worker running");
    advps_server::run_background(state, shutdown).await;
    tracing::info!("advps worker stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled, so a signal that arrives
/// right after start-up is still a graceful shutdown.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down");
    })
}

async fn create_key(
    store: &dyn Store,
    account_id: i64,
    mode: Mode,
) -> Result<api_key::GeneratedKey> {
    let (_, key) = advps_server::ops::issue_api_key(store, account_id, mode).await?;
    Ok(key)
}

async fn find_account(store: &dyn Store, name: &str) -> Result<advps_store::Account> {
    match store.find_account(name).await? {
        Some(account) => Ok(account),
        None => bail!("no account named '{name}' (see `advps accounts list`)"),
    }
}

fn validate_account_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        bail!("invalid account name '{name}': use 1 to 64 letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

fn when(ms: Option<i64>) -> String {
    ms.map(time::format_millis)
        .unwrap_or_else(|| "never".into())
}

async fn accounts(store: &Arc<dyn Store>, cmd: AccountsCommand) -> Result<()> {
    match cmd {
        AccountsCommand::Create { name } => {
            validate_account_name(&name)?;
            match store.create_account(&name, time::now_millis()).await {
                Ok(_) => println!("Created account {name}"),
                Err(StoreError::Conflict(_)) => bail!("account '{name}' already exists"),
                Err(e) => return Err(e.into()),
            }
        }
        AccountsCommand::Credit {
            name,
            amount,
            mode,
            currency,
        } => {
            let account = find_account(store.as_ref(), &name).await?;
            let minor = advps_domain::money::parse_amount(&amount)?;
            if minor == 0 {
                bail!("the amount must be more than 0");
            }
            let mode: Mode = mode.into();
            let balance = store
                .credit_wallet(
                    account.id,
                    mode,
                    minor,
                    &currency,
                    "operator credit",
                    time::now_millis(),
                )
                .await?;
            println!(
                "Credited {} {currency} to {}'s {mode} wallet; balance {} {currency}",
                advps_domain::money::format_amount(minor),
                account.name,
                advps_domain::money::format_amount(balance)
            );
        }
        AccountsCommand::Wallet { name, mode } => {
            let account = find_account(store.as_ref(), &name).await?;
            let mode: Mode = mode.into();
            let balance = store.wallet_balance(account.id, mode).await?;
            println!(
                "{} {mode} wallet: {}",
                account.name,
                advps_domain::money::format_amount(balance)
            );
            println!(
                "{:<25} {:<9} {:>12} {:<4} {:<18} NOTE",
                "TIME", "KIND", "AMOUNT", "CUR", "REFERENCE"
            );
            for e in store.ledger(account.id, mode).await? {
                println!(
                    "{:<25} {:<9} {:>12} {:<4} {:<18} {}",
                    time::format_millis(e.created_at),
                    e.kind,
                    advps_domain::money::format_amount(e.amount_minor),
                    e.currency,
                    e.reference.as_deref().unwrap_or("-"),
                    e.note.as_deref().unwrap_or("")
                );
            }
        }
        AccountsCommand::List => {
            println!("{:<24} {:<26}", "NAME", "CREATED");
            for account in store.list_accounts().await? {
                println!(
                    "{:<24} {:<26}",
                    account.name,
                    time::format_millis(account.created_at)
                );
            }
        }
    }
    Ok(())
}

async fn keys(store: &Arc<dyn Store>, cmd: KeysCommand) -> Result<()> {
    match cmd {
        KeysCommand::Create { account, mode } => {
            let account = find_account(store.as_ref(), &account).await?;
            let mode: Mode = mode.into();
            let key = create_key(store.as_ref(), account.id, mode).await?;
            println!(
                "Created a {mode} key for account {} (shown only this once):",
                account.name
            );
            println!("{}", key.plaintext);
        }
        KeysCommand::List { account } => {
            let account = find_account(store.as_ref(), &account).await?;
            println!(
                "{:<22} {:<5} {:<16} {:<25} {:<25} STATUS",
                "ID", "MODE", "KEY", "CREATED", "LAST_USED"
            );
            for key in store.list_api_keys(account.id).await? {
                println!(
                    "{:<22} {:<5} {:<16} {:<25} {:<25} {}",
                    key.id,
                    key.mode.as_str(),
                    api_key::display(key.mode, &key.last4),
                    time::format_millis(key.created_at),
                    when(key.last_used_at),
                    if key.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    },
                );
            }
        }
        KeysCommand::Revoke { key_id } => {
            if !store.revoke_api_key(&key_id, time::now_millis()).await? {
                bail!("no active key with id '{key_id}' (see `advps keys list --account NAME`)");
            }
            println!("Revoked key {key_id}");
        }
    }
    Ok(())
}

async fn products(store: &Arc<dyn Store>, config: &Config, cmd: ProductsCommand) -> Result<()> {
    match cmd {
        ProductsCommand::Create {
            id,
            name,
            pack_name,
            vm_type,
            stock,
            low_stock_threshold,
            default_os,
        } => {
            let id = id.unwrap_or_else(|| format!("prod_{}", &ids::key_id()[4..10]));
            if id.is_empty()
                || id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                bail!("invalid product id '{id}': use 1 to 64 letters, digits, '_' or '-'");
            }
            let product = NewProduct {
                mode: Mode::Live,
                id: id.clone(),
                name,
                pack_name,
                vm_type: vm_type.into(),
                manual_stock: stock.map(i64::from),
                low_stock_threshold: low_stock_threshold.map(i64::from),
                default_os,
                now: time::now_millis(),
            };
            match store.create_product(&product).await {
                Ok(()) => println!("Created live product {id}"),
                Err(StoreError::Conflict(_)) => bail!("product '{id}' already exists"),
                Err(e) => return Err(e.into()),
            }
        }
        ProductsCommand::List => {
            let (products, _) = store
                .list_products(Mode::Live, None, 0, u32::MAX, None)
                .await?;
            println!(
                "{:<20} {:<28} {:<20} {:<4} {:>6} {:<7} STATUS",
                "ID", "NAME", "PACK", "TYPE", "STOCK", "SOURCE"
            );
            for p in products {
                let threshold = p.low_stock_threshold.unwrap_or(config.low_stock_threshold);
                println!(
                    "{:<20} {:<28} {:<20} {:<4} {:>6} {:<7} {}",
                    p.id,
                    p.name,
                    p.pack_name,
                    p.vm_type.as_str(),
                    p.stock,
                    if p.manual { "manual" } else { "derived" },
                    StockStatus::classify(p.stock, threshold).as_str()
                );
            }
            let hidden = store.hidden_products(Mode::Live).await?;
            if !hidden.is_empty() {
                println!("Hidden (not listed or sold): {}", hidden.join(", "));
            }
        }
        ProductsCommand::AddSize {
            id,
            ram,
            price,
            currency,
        } => {
            if store.find_product(Mode::Live, &id, None).await?.is_none() {
                bail!("no live product with id '{id}' (see `advps products list`)");
            }
            let ram_mb = advps_domain::money::parse_ram(&ram)
                .ok_or_else(|| anyhow::anyhow!("'{ram}' is not a RAM size like \"4 GB\""))?;
            let price_minor = advps_domain::money::parse_amount(&price)?;
            let size = advps_store::ProductSize {
                ram_mb,
                price_minor,
                currency: currency.clone(),
            };
            store.set_product_size(Mode::Live, &id, &size).await?;
            println!(
                "Product {id} sells {} at {} {currency} per 30 days",
                advps_domain::money::format_ram(ram_mb),
                advps_domain::money::format_amount(price_minor)
            );
        }
        ProductsCommand::SetDefaultOs { id, slug } => {
            if store.os_images_by_slug(&slug).await?.is_empty() {
                bail!("no OS '{slug}' (see `advps os list`)");
            }
            if !store
                .set_product_default_os(Mode::Live, &id, Some(&slug))
                .await?
            {
                bail!("no live product with id '{id}' (see `advps products list`)");
            }
            println!("Product {id} installs {slug} when a purchase names no OS");
        }
        ProductsCommand::SetStock { id, stock, auto } => {
            let value = if auto { None } else { stock.map(i64::from) };
            if !store.set_manual_stock(Mode::Live, &id, value).await? {
                bail!("no live product with id '{id}' (see `advps products list`)");
            }
            match value {
                Some(n) => println!("Stock of {id} set to {n}"),
                None => println!("Stock of {id} is derived from inventory"),
            }
        }
        ProductsCommand::Hide { id } => {
            if !store.set_product_visible(Mode::Live, &id, false).await? {
                bail!("no live product with id '{id}' (see `advps products list`)");
            }
            println!("Product {id} is hidden: no longer listed or sold; its services go on");
        }
        ProductsCommand::Show { id } => {
            if !store.set_product_visible(Mode::Live, &id, true).await? {
                bail!("no live product with id '{id}' (see `advps products list`)");
            }
            println!("Product {id} is listed and sold again");
        }
        ProductsCommand::Remove { id } => match store.remove_product(Mode::Live, &id).await? {
            Removal::Removed => println!("Removed product {id}"),
            Removal::NotFound => {
                bail!("no live product with id '{id}' (see `advps products list`)")
            }
            Removal::InUse(users) => bail!(
                "product {id} is still used by {users}; remove those first, or hide the \
                 product with `advps products hide {id}`"
            ),
        },
    }
    Ok(())
}

async fn webhooks(store: &Arc<dyn Store>, config: &Config, cmd: WebhooksCommand) -> Result<()> {
    match cmd {
        WebhooksCommand::Add {
            account,
            mode,
            url,
            events,
        } => {
            let account = find_account(store.as_ref(), &account).await?;
            for e in &events {
                if !advps_server::webhooks::EVENT_TYPES.contains(&e.as_str()) {
                    bail!(
                        "unknown event type '{e}'; known: {}",
                        advps_server::webhooks::EVENT_TYPES.join(", ")
                    );
                }
            }
            advps_server::webhooks::check_url(&url, config.webhook_allow_private)
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            let cipher = advps_server::secrets::Cipher::for_config(config)?;
            let secret = advps_server::webhooks::new_secret();
            let endpoint = store
                .create_webhook(&advps_store::NewWebhookEndpoint {
                    id: format!("we_{}", &ids::key_id()[4..]),
                    scope: advps_store::Scope {
                        account_id: account.id,
                        mode: mode.into(),
                    },
                    url,
                    description: None,
                    events,
                    secret_enc: cipher.encrypt(&secret),
                    now: time::now_millis(),
                })
                .await?;
            println!(
                "Added webhook endpoint {} for {} (signing secret shown only this once):",
                endpoint.id, account.name
            );
            println!("{secret}");
        }
        WebhooksCommand::List { account } => {
            let account_id = match account {
                Some(name) => Some(find_account(store.as_ref(), &name).await?.id),
                None => None,
            };
            println!(
                "{:<22} {:<8} {:<5} {:<50} EVENTS",
                "ID", "ACCOUNT", "MODE", "URL"
            );
            let accounts = store.list_accounts().await?;
            for e in store.all_webhooks(account_id).await? {
                let owner = accounts
                    .iter()
                    .find(|a| a.id == e.account_id)
                    .map(|a| a.name.as_str())
                    .unwrap_or("?");
                let events = if e.events.is_empty() {
                    "all".to_string()
                } else {
                    e.events.join(",")
                };
                println!(
                    "{:<22} {:<8} {:<5} {:<50} {}",
                    e.id,
                    owner,
                    e.mode.as_str(),
                    e.url,
                    events
                );
            }
        }
        WebhooksCommand::Remove { id } => {
            if !store.delete_webhook(&id).await? {
                bail!("no webhook endpoint '{id}' (see `advps webhooks list`)");
            }
            println!("Removed webhook endpoint {id}");
        }
        WebhooksCommand::Deliveries { id, limit } => {
            if store.find_webhook(&id).await?.is_none() {
                bail!("no webhook endpoint '{id}' (see `advps webhooks list`)");
            }
            let (deliveries, total) = store.list_deliveries(&id, 0, limit).await?;
            println!("{total} deliveries, newest first");
            println!(
                "{:<38} {:<28} {:<10} {:>8} {:<6} ERROR",
                "ID", "EVENT", "STATUS", "ATTEMPTS", "CODE"
            );
            for d in deliveries {
                println!(
                    "{:<38} {:<28} {:<10} {:>8} {:<6} {}",
                    d.id,
                    d.event_type,
                    d.status,
                    d.attempts,
                    d.last_status_code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".into()),
                    d.last_error.as_deref().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

async fn audit(
    store: &Arc<dyn Store>,
    account: Option<String>,
    service: Option<String>,
    limit: u32,
) -> Result<()> {
    let account_id = match account {
        Some(name) => Some(find_account(store.as_ref(), &name).await?.id),
        None => None,
    };
    let (entries, total) = store
        .list_audit(&advps_store::AuditFilter {
            account_id,
            mode: None,
            service_id: service,
            from: None,
            to: None,
            offset: 0,
            limit: limit.clamp(1, 10_000),
        })
        .await?;
    println!("{total} entries, newest first");
    println!(
        "{:<25} {:<10} {:<5} {:<6} {:<45} {:<6} {:<16} {:<30} SOURCE",
        "TIME", "ACCOUNT", "MODE", "METHOD", "PATH", "STATUS", "SERVICE", "REQUEST"
    );
    for e in entries {
        println!(
            "{:<25} {:<10} {:<5} {:<6} {:<45} {:<6} {:<16} {:<30} {}",
            time::format_millis(e.at),
            e.account_name.as_deref().unwrap_or("-"),
            e.mode.as_deref().unwrap_or("-"),
            e.method,
            e.path,
            e.status,
            e.service_id.as_deref().unwrap_or("-"),
            e.request_id,
            e.source.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
