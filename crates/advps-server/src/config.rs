//! Server settings: built-in defaults, then an optional TOML file, then
//! `ADVPS_*` environment variables, then command-line flags (applied by the
//! caller), each layer overriding the one before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address the API listens on.
    pub listen: String,
    /// Directory that holds the database and the secret key file.
    pub data_dir: PathBuf,
    /// Requests per window for test keys.
    pub rate_limit_test: u32,
    /// Requests per window for live keys.
    pub rate_limit_live: u32,
    /// Length of the rate-limit window, in seconds.
    pub rate_limit_window_secs: u64,
    /// How long a sandbox rebuild takes, in seconds.
    pub sandbox_task_seconds: f64,
    /// Rebuilds per sandbox service per calendar month.
    pub sandbox_rebuild_limit: u32,
    /// Default upper bound of `LOW_STOCK` for products that set none.
    pub low_stock_threshold: i64,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// File holding the key that encrypts stored passwords; defaults to
    /// `secret.key` in the data directory.
    pub secret_key_file: Option<PathBuf>,
    /// Rebuilds per live service per calendar month.
    pub live_rebuild_limit: u32,
    /// Lease of a claimed task, in seconds; a task whose worker died is
    /// taken over this long after its last heartbeat.
    pub task_lease_secs: u64,
    /// Deadline of one call to a hypervisor, in seconds.
    pub engine_timeout_secs: u64,
    /// How long sandbox provisioning takes, in seconds.
    pub sandbox_provision_seconds: f64,
    /// How often expiry is checked, in seconds.
    pub expiry_check_secs: u64,
    /// How long an expired service stays suspended before it is terminated.
    pub expiry_grace_secs: u64,
    /// Let webhooks reach loopback and private addresses (off: such
    /// destinations are refused, so the API cannot be aimed inside).
    pub webhook_allow_private: bool,
    /// First retry delay of a failed webhook delivery, in milliseconds;
    /// each next one is four times longer.
    pub webhook_retry_base_ms: u64,
    /// Attempts before a delivery is given up.
    pub webhook_max_attempts: u32,
    /// Deadline of one delivery, in seconds.
    pub webhook_timeout_secs: u64,
    /// `postgres://...` to share one PostgreSQL database between instances;
    /// none: SQLite in the data directory.
    pub database_url: Option<String>,
    /// Connections this instance opens to PostgreSQL at most.
    pub db_max_connections: u32,
    /// PostgreSQL statement timeout, in milliseconds.
    pub db_statement_timeout_ms: u64,
    /// The key that encrypts stored secrets, base64 of 32 bytes; every
    /// instance sharing a database needs the same one (or the same file).
    pub secret_key: Option<String>,
    /// Where Prometheus metrics are served (its own address, so it need
    /// not be exposed with the API); none: not served.
    pub metrics_listen: Option<String>,
    /// `text` or `json` logs on standard error.
    pub log_format: String,
    /// Whether `advps serve` also runs the background work (tasks, expiry,
    /// webhook deliveries); off when separate `advps worker` processes do.
    pub run_worker: bool,
    /// Seconds a client has to send a request's whole header block (also
    /// each next request's on a kept-alive connection), so that a client
    /// sending a byte at a time cannot hold a connection.
    pub header_read_timeout_secs: u64,
    /// Seconds a client has, from its headers, to send the whole body.
    pub body_read_timeout_secs: u64,
    /// Seconds a kept-alive connection may sit with no request before it
    /// is closed.
    pub idle_timeout_secs: u64,
    /// Connections served at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// Seconds a shutdown waits for in-flight requests before it closes
    /// what is left.
    pub shutdown_grace_secs: u64,
    /// The usage sampler and how long its history is kept (`[usage]`).
    pub usage: UsageConfig,
    /// Scheduled backups by the worker (`backup_dir`, `backup_every`,
    /// `backup_keep`, `backup_passphrase_file`).
    pub backup: crate::backup::BackupSchedule,
    /// Seconds a console URL can be opened after it was handed out
    /// (`ADVPS_CONSOLE_TTL_SECS`); an open console is not cut by it.
    pub console_ttl_secs: u64,
    /// Consoles open at once in this process, over every service
    /// (`console_max_sessions`, `ADVPS_CONSOLE_MAX_SESSIONS`); one more is
    /// answered 503 with `Retry-After`.
    pub console_max_sessions: usize,
    /// The customer panel at `/panel` (`[panel]`).
    pub panel: PanelConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".to_string(),
            data_dir: PathBuf::from("./advps-data"),
            rate_limit_test: 1000,
            rate_limit_live: 100,
            rate_limit_window_secs: 900,
            sandbox_task_seconds: 20.0,
            sandbox_rebuild_limit: 5,
            low_stock_threshold: advps_domain::product::DEFAULT_LOW_STOCK_THRESHOLD,
            max_body_bytes: 64 * 1024,
            secret_key_file: None,
            live_rebuild_limit: 5,
            task_lease_secs: 30,
            engine_timeout_secs: 30,
            sandbox_provision_seconds: 10.0,
            expiry_check_secs: 30,
            expiry_grace_secs: 86_400,
            webhook_allow_private: false,
            webhook_retry_base_ms: 5_000,
            webhook_max_attempts: 8,
            webhook_timeout_secs: 10,
            database_url: None,
            db_max_connections: 16,
            db_statement_timeout_ms: 30_000,
            secret_key: None,
            metrics_listen: None,
            log_format: "text".to_string(),
            run_worker: true,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
            idle_timeout_secs: 60,
            max_connections: 1024,
            shutdown_grace_secs: 30,
            usage: UsageConfig::default(),
            backup: crate::backup::BackupSchedule::default(),
            console_ttl_secs: 60,
            console_max_sessions: 64,
            panel: PanelConfig::default(),
        }
    }
}

/// The TOML file: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    rate_limit_test: Option<u32>,
    rate_limit_live: Option<u32>,
    rate_limit_window_secs: Option<u64>,
    sandbox_task_seconds: Option<f64>,
    sandbox_rebuild_limit: Option<u32>,
    low_stock_threshold: Option<i64>,
    max_body_bytes: Option<usize>,
    secret_key_file: Option<PathBuf>,
    live_rebuild_limit: Option<u32>,
    task_lease_secs: Option<u64>,
    engine_timeout_secs: Option<u64>,
    sandbox_provision_seconds: Option<f64>,
    expiry_check_secs: Option<u64>,
    expiry_grace_secs: Option<u64>,
    webhook_allow_private: Option<bool>,
    webhook_retry_base_ms: Option<u64>,
    webhook_max_attempts: Option<u32>,
    webhook_timeout_secs: Option<u64>,
    database_url: Option<String>,
    db_max_connections: Option<u32>,
    db_statement_timeout_ms: Option<u64>,
    secret_key: Option<String>,
    metrics_listen: Option<String>,
    log_format: Option<String>,
    header_read_timeout_secs: Option<u64>,
    body_read_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    shutdown_grace_secs: Option<u64>,
    console_max_sessions: Option<usize>,
    usage: Option<UsageConfig>,
    panel: Option<PanelConfig>,
    // Scheduled backups (see `Config::apply_backup`).
    backup_dir: Option<PathBuf>,
    backup_every: Option<String>,
    backup_keep: Option<u32>,
    backup_passphrase_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for {name}: '{value}' ({expected})")]
    Env {
        name: String,
        value: String,
        expected: &'static str,
    },
    #[error("invalid setting {name}: {message}")]
    Invalid { name: &'static str, message: String },
}

/// A period like `6h`, `1d` or `30m` (at least a second).
fn parse_every(name: &str, value: &str) -> Result<std::time::Duration, ConfigError> {
    match humantime::parse_duration(value.trim()) {
        Ok(d) if d >= std::time::Duration::from_secs(1) => Ok(d),
        _ => Err(ConfigError::Env {
            name: name.to_string(),
            value: value.to_string(),
            expected: "a period like 30m, 6h or 1d, at least 1s",
        }),
    }
}

impl Config {
    /// Defaults, then the file (if given), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_from(file, |name| std::env::var(name).ok())
    }

    /// As [`Config::load`], reading variables through `env` (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let parsed: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            config.apply_backup_file(&parsed)?;
            config.apply_file(parsed);
        }
        config.apply_env(&env)?;
        config.apply_backup_env(&env)?;
        config.validate()?;
        Ok(config)
    }

    fn apply_file(&mut self, f: FileConfig) {
        macro_rules! take {
            ($($field:ident),*) => { $( if let Some(v) = f.$field { self.$field = v; } )* };
        }
        take!(
            listen,
            data_dir,
            rate_limit_test,
            rate_limit_live,
            rate_limit_window_secs,
            sandbox_task_seconds,
            sandbox_rebuild_limit,
            low_stock_threshold,
            max_body_bytes,
            live_rebuild_limit,
            task_lease_secs,
            engine_timeout_secs,
            sandbox_provision_seconds,
            expiry_check_secs,
            expiry_grace_secs,
            webhook_allow_private,
            webhook_retry_base_ms,
            webhook_max_attempts,
            webhook_timeout_secs,
            db_max_connections,
            db_statement_timeout_ms,
            log_format,
            header_read_timeout_secs,
            body_read_timeout_secs,
            idle_timeout_secs,
            max_connections,
            shutdown_grace_secs,
            console_max_sessions
        );
        for (value, target) in [
            (f.database_url, &mut self.database_url),
            (f.secret_key, &mut self.secret_key),
            (f.metrics_listen, &mut self.metrics_listen),
        ] {
            if value.is_some() {
                *target = value;
            }
        }
        if f.secret_key_file.is_some() {
            self.secret_key_file = f.secret_key_file;
        }
        if let Some(usage) = f.usage {
            self.usage = usage;
        }
        if let Some(panel) = f.panel {
            self.panel = panel;
        }
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parsed<T: std::str::FromStr>(
            name: &str,
            raw: Option<String>,
            expected: &'static str,
        ) -> Result<Option<T>, ConfigError> {
            match raw {
                None => Ok(None),
                Some(value) => value
                    .trim()
                    .parse::<T>()
                    .map(Some)
                    .map_err(|_| ConfigError::Env {
                        name: name.to_string(),
                        value,
                        expected,
                    }),
            }
        }
        if let Some(v) = env("ADVPS_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = env("ADVPS_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env("ADVPS_SECRET_KEY_FILE") {
            self.secret_key_file = Some(PathBuf::from(v));
        }
        let count = "a whole number";
        if let Some(v) = parsed("ADVPS_RATE_LIMIT_TEST", env("ADVPS_RATE_LIMIT_TEST"), count)? {
            self.rate_limit_test = v;
        }
        if let Some(v) = parsed("ADVPS_RATE_LIMIT_LIVE", env("ADVPS_RATE_LIMIT_LIVE"), count)? {
            self.rate_limit_live = v;
        }
        if let Some(v) = parsed(
            "ADVPS_RATE_LIMIT_WINDOW_SECS",
            env("ADVPS_RATE_LIMIT_WINDOW_SECS"),
            count,
        )? {
            self.rate_limit_window_secs = v;
        }
        if let Some(v) = parsed(
            "ADVPS_SANDBOX_TASK_SECONDS",
            env("ADVPS_SANDBOX_TASK_SECONDS"),
            "a number of seconds",
        )? {
            self.sandbox_task_seconds = v;
        }
        if let Some(v) = parsed(
            "ADVPS_SANDBOX_REBUILD_LIMIT",
            env("ADVPS_SANDBOX_REBUILD_LIMIT"),
            count,
        )? {
            self.sandbox_rebuild_limit = v;
        }
        if let Some(v) = parsed(
            "ADVPS_LOW_STOCK_THRESHOLD",
            env("ADVPS_LOW_STOCK_THRESHOLD"),
            count,
        )? {
            self.low_stock_threshold = v;
        }
        if let Some(v) = parsed("ADVPS_MAX_BODY_BYTES", env("ADVPS_MAX_BODY_BYTES"), count)? {
            self.max_body_bytes = v;
        }
        if let Some(v) = parsed(
            "ADVPS_LIVE_REBUILD_LIMIT",
            env("ADVPS_LIVE_REBUILD_LIMIT"),
            count,
        )? {
            self.live_rebuild_limit = v;
        }
        if let Some(v) = parsed("ADVPS_TASK_LEASE_SECS", env("ADVPS_TASK_LEASE_SECS"), count)? {
            self.task_lease_secs = v;
        }
        if let Some(v) = parsed(
            "ADVPS_ENGINE_TIMEOUT_SECS",
            env("ADVPS_ENGINE_TIMEOUT_SECS"),
            count,
        )? {
            self.engine_timeout_secs = v;
        }
        if let Some(v) = parsed(
            "ADVPS_SANDBOX_PROVISION_SECONDS",
            env("ADVPS_SANDBOX_PROVISION_SECONDS"),
            "a number of seconds",
        )? {
            self.sandbox_provision_seconds = v;
        }
        if let Some(v) = parsed(
            "ADVPS_EXPIRY_CHECK_SECS",
            env("ADVPS_EXPIRY_CHECK_SECS"),
            count,
        )? {
            self.expiry_check_secs = v;
        }
        if let Some(v) = parsed(
            "ADVPS_EXPIRY_GRACE_SECS",
            env("ADVPS_EXPIRY_GRACE_SECS"),
            count,
        )? {
            self.expiry_grace_secs = v;
        }
        if let Some(v) = parsed(
            "ADVPS_WEBHOOK_ALLOW_PRIVATE",
            env("ADVPS_WEBHOOK_ALLOW_PRIVATE"),
            "true or false",
        )? {
            self.webhook_allow_private = v;
        }
        if let Some(v) = parsed(
            "ADVPS_WEBHOOK_RETRY_BASE_MS",
            env("ADVPS_WEBHOOK_RETRY_BASE_MS"),
            count,
        )? {
            self.webhook_retry_base_ms = v;
        }
        if let Some(v) = parsed(
            "ADVPS_WEBHOOK_MAX_ATTEMPTS",
            env("ADVPS_WEBHOOK_MAX_ATTEMPTS"),
            count,
        )? {
            self.webhook_max_attempts = v;
        }
        if let Some(v) = parsed(
            "ADVPS_WEBHOOK_TIMEOUT_SECS",
            env("ADVPS_WEBHOOK_TIMEOUT_SECS"),
            count,
        )? {
            self.webhook_timeout_secs = v;
        }
        if let Some(v) = env("ADVPS_DATABASE_URL").filter(|v| !v.trim().is_empty()) {
            self.database_url = Some(v);
        }
        if let Some(v) = parsed(
            "ADVPS_DB_MAX_CONNECTIONS",
            env("ADVPS_DB_MAX_CONNECTIONS"),
            count,
        )? {
            self.db_max_connections = v;
        }
        if let Some(v) = parsed(
            "ADVPS_DB_STATEMENT_TIMEOUT_MS",
            env("ADVPS_DB_STATEMENT_TIMEOUT_MS"),
            count,
        )? {
            self.db_statement_timeout_ms = v;
        }
        if let Some(v) = env("ADVPS_SECRET_KEY").filter(|v| !v.trim().is_empty()) {
            self.secret_key = Some(v);
        }
        if let Some(v) = env("ADVPS_METRICS_LISTEN").filter(|v| !v.trim().is_empty()) {
            self.metrics_listen = Some(v);
        }
        if let Some(v) = parsed(
            "ADVPS_CONSOLE_TTL_SECS",
            env("ADVPS_CONSOLE_TTL_SECS"),
            count,
        )? {
            self.console_ttl_secs = v;
        }
        if let Some(v) = env("ADVPS_LOG_FORMAT") {
            self.log_format = v;
        }
        for (name, target) in [
            (
                "ADVPS_HEADER_READ_TIMEOUT_SECS",
                &mut self.header_read_timeout_secs,
            ),
            (
                "ADVPS_BODY_READ_TIMEOUT_SECS",
                &mut self.body_read_timeout_secs,
            ),
            ("ADVPS_IDLE_TIMEOUT_SECS", &mut self.idle_timeout_secs),
            ("ADVPS_SHUTDOWN_GRACE_SECS", &mut self.shutdown_grace_secs),
        ] {
            if let Some(v) = parsed(name, env(name), count)? {
                *target = v;
            }
        }
        if let Some(v) = parsed("ADVPS_MAX_CONNECTIONS", env("ADVPS_MAX_CONNECTIONS"), count)? {
            self.max_connections = v;
        }
        if let Some(v) = parsed(
            "ADVPS_CONSOLE_MAX_SESSIONS",
            env("ADVPS_CONSOLE_MAX_SESSIONS"),
            count,
        )? {
            self.console_max_sessions = v;
        }
        self.usage.apply_env(&env)?;
        if let Some(v) = parsed(
            "ADVPS_PANEL_SESSION_IDLE_SECS",
            env("ADVPS_PANEL_SESSION_IDLE_SECS"),
            count,
        )? {
            self.panel.session_idle_secs = v;
        }
        Ok(())
    }

    /// The scheduled-backup keys of the file.
    fn apply_backup_file(&mut self, f: &FileConfig) -> Result<(), ConfigError> {
        let b = &mut self.backup;
        if f.backup_dir.is_some() {
            b.dir = f.backup_dir.clone();
        }
        if let Some(every) = &f.backup_every {
            b.every = parse_every("backup_every", every)?;
        }
        if let Some(keep) = f.backup_keep {
            b.keep = keep;
        }
        if f.backup_passphrase_file.is_some() {
            b.passphrase_file = f.backup_passphrase_file.clone();
        }
        Ok(())
    }

    /// `ADVPS_BACKUP_DIR`, `_EVERY`, `_KEEP`, `_PASSPHRASE_FILE`.
    fn apply_backup_env(
        &mut self,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let b = &mut self.backup;
        if let Some(v) = env("ADVPS_BACKUP_DIR").filter(|v| !v.trim().is_empty()) {
            b.dir = Some(PathBuf::from(v));
        }
        if let Some(v) = env("ADVPS_BACKUP_EVERY") {
            b.every = parse_every("ADVPS_BACKUP_EVERY", &v)?;
        }
        if let Some(v) = env("ADVPS_BACKUP_KEEP") {
            b.keep = v.trim().parse().map_err(|_| ConfigError::Env {
                name: "ADVPS_BACKUP_KEEP".into(),
                value: v.clone(),
                expected: "a count",
            })?;
        }
        if let Some(v) = env("ADVPS_BACKUP_PASSPHRASE_FILE").filter(|v| !v.trim().is_empty()) {
            b.passphrase_file = Some(PathBuf::from(v));
        }
        if b.keep == 0 {
            return Err(ConfigError::Invalid {
                name: "backup_keep",
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.sandbox_task_seconds.is_finite() && self.sandbox_task_seconds >= 0.0) {
            return Err(ConfigError::Invalid {
                name: "sandbox_task_seconds",
                message: "must be zero or more".into(),
            });
        }
        if self.console_max_sessions == 0 {
            return Err(ConfigError::Invalid {
                name: "console_max_sessions",
                message: "must be at least 1".into(),
            });
        }
        if self.rate_limit_window_secs == 0 {
            return Err(ConfigError::Invalid {
                name: "rate_limit_window_secs",
                message: "must be at least 1".into(),
            });
        }
        if !(self.sandbox_provision_seconds.is_finite() && self.sandbox_provision_seconds >= 0.0) {
            return Err(ConfigError::Invalid {
                name: "sandbox_provision_seconds",
                message: "must be zero or more".into(),
            });
        }
        if self.panel.session_idle_secs == 0 {
            return Err(ConfigError::Invalid {
                name: "panel.session_idle_secs",
                message: "must be at least 1".into(),
            });
        }
        if self.expiry_check_secs == 0 {
            return Err(ConfigError::Invalid {
                name: "expiry_check_secs",
                message: "must be at least 1".into(),
            });
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid {
                name: "log_format",
                message: "must be text or json".into(),
            });
        }
        if self.db_max_connections == 0 {
            return Err(ConfigError::Invalid {
                name: "db_max_connections",
                message: "must be at least 1".into(),
            });
        }
        if self.task_lease_secs < 3 {
            return Err(ConfigError::Invalid {
                name: "task_lease_secs",
                message: "must be at least 3".into(),
            });
        }
        if self.engine_timeout_secs == 0 {
            return Err(ConfigError::Invalid {
                name: "engine_timeout_secs",
                message: "must be at least 1".into(),
            });
        }
        for (name, value) in [
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("body_read_timeout_secs", self.body_read_timeout_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("max_connections", self.max_connections as u64),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    name,
                    message: "must be at least 1".into(),
                });
            }
        }
        if self.low_stock_threshold < 0 {
            return Err(ConfigError::Invalid {
                name: "low_stock_threshold",
                message: "must be zero or more".into(),
            });
        }
        self.usage.validate()
    }

    /// The listen address, parsed.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| ConfigError::Invalid {
            name: "listen",
            message: format!("'{}' is not an address like 127.0.0.1:8080", self.listen),
        })
    }

    pub fn secret_key_path(&self) -> PathBuf {
        self.secret_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("secret.key"))
    }

    pub fn sandbox_provision_millis(&self) -> i64 {
        (self.sandbox_provision_seconds * 1000.0).round() as i64
    }

    pub fn sandbox_task_millis(&self) -> i64 {
        (self.sandbox_task_seconds * 1000.0).round() as i64
    }
}

/// The customer panel.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PanelConfig {
    /// Seconds a panel session may go unused before it ends (default 30
    /// minutes); every request through the session starts it over.
    pub session_idle_secs: u64,
}

impl Default for PanelConfig {
    fn default() -> Self {
        PanelConfig {
            session_idle_secs: 1800,
        }
    }
}

/// The usage sampler: how often every live service is measured, and how
/// long each level of its history is kept (raw samples, then two rollups
/// of averages, each coarser and kept longer). All in seconds, fractions
/// allowed, so that a test can run a month's schedule in seconds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    /// Seconds between two samples of each service (default 60).
    pub sample_seconds: f64,
    /// How long raw samples are kept (default a day).
    pub raw_keep_seconds: f64,
    /// The buckets of the two rollups (default 5 minutes and an hour).
    pub rollup_seconds: [f64; 2],
    /// How long each rollup is kept (default 7 and 30 days).
    pub rollup_keep_seconds: [f64; 2],
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            sample_seconds: 60.0,
            raw_keep_seconds: 86_400.0,
            rollup_seconds: [300.0, 3_600.0],
            rollup_keep_seconds: [7.0 * 86_400.0, 30.0 * 86_400.0],
        }
    }
}

impl UsageConfig {
    /// `ADVPS_USAGE_SAMPLE_SECONDS`, `ADVPS_USAGE_RAW_KEEP_SECONDS`, and the
    /// pairs `ADVPS_USAGE_ROLLUP_SECONDS` / `ADVPS_USAGE_ROLLUP_KEEP_SECONDS`
    /// (two numbers, comma-separated).
    fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let bad = |name: &str, value: String, expected: &'static str| ConfigError::Env {
            name: name.to_string(),
            value,
            expected,
        };
        for (name, target) in [
            ("ADVPS_USAGE_SAMPLE_SECONDS", &mut self.sample_seconds),
            ("ADVPS_USAGE_RAW_KEEP_SECONDS", &mut self.raw_keep_seconds),
        ] {
            if let Some(v) = env(name) {
                *target = v
                    .trim()
                    .parse()
                    .map_err(|_| bad(name, v.clone(), "a number of seconds"))?;
            }
        }
        for (name, target) in [
            ("ADVPS_USAGE_ROLLUP_SECONDS", &mut self.rollup_seconds),
            (
                "ADVPS_USAGE_ROLLUP_KEEP_SECONDS",
                &mut self.rollup_keep_seconds,
            ),
        ] {
            if let Some(v) = env(name) {
                let numbers: Vec<f64> = v
                    .split(',')
                    .map(|n| n.trim().parse::<f64>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| bad(name, v.clone(), "two numbers of seconds, e.g. 300,3600"))?;
                *target = numbers
                    .try_into()
                    .map_err(|_| bad(name, v.clone(), "two numbers of seconds, e.g. 300,3600"))?;
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: &str| ConfigError::Invalid {
            name: "usage",
            message: message.to_string(),
        };
        let all = [
            self.sample_seconds,
            self.raw_keep_seconds,
            self.rollup_seconds[0],
            self.rollup_seconds[1],
            self.rollup_keep_seconds[0],
            self.rollup_keep_seconds[1],
        ];
        if all.iter().any(|v| !v.is_finite() || *v < 0.05) {
            return Err(invalid("every figure must be at least 0.05 seconds"));
        }
        if !(self.rollup_seconds[0] < self.rollup_seconds[1]
            && self.raw_keep_seconds <= self.rollup_keep_seconds[0]
            && self.rollup_keep_seconds[0] <= self.rollup_keep_seconds[1])
        {
            return Err(invalid(
                "rollups must be coarser and kept longer than what they roll up",
            ));
        }
        Ok(())
    }

    pub fn sample_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.sample_seconds)
    }

    /// The history's levels, in milliseconds, as the store keeps them.
    pub fn schedule(&self) -> advps_store::UsageSchedule {
        let ms = |s: f64| (s * 1000.0).round() as i64;
        advps_store::UsageSchedule {
            raw_keep_ms: ms(self.raw_keep_seconds),
            rollups: [
                advps_store::UsageTier {
                    bucket_ms: ms(self.rollup_seconds[0]),
                    keep_ms: ms(self.rollup_keep_seconds[0]),
                },
                advps_store::UsageTier {
                    bucket_ms: ms(self.rollup_seconds[1]),
                    keep_ms: ms(self.rollup_keep_seconds[1]),
                },
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("advps.toml");
        std::fs::write(
            &file,
            "listen = \"0.0.0.0:9000\"\nrate_limit_test = 50\nsandbox_task_seconds = 3.5\n",
        )
        .unwrap();
        let config =
            Config::load_from(Some(&file), env_of(&[("ADVPS_RATE_LIMIT_TEST", "7")])).unwrap();
        assert_eq!(config.listen, "0.0.0.0:9000");
        assert_eq!(config.rate_limit_test, 7);
        assert_eq!(config.rate_limit_live, 100);
        assert_eq!(config.sandbox_task_millis(), 3500);
    }

    #[test]
    fn usage_schedule_comes_from_the_file_and_the_environment() {
        assert_eq!(Config::default().usage.sample_interval().as_secs(), 60);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("advps.toml");
        std::fs::write(&file, "[usage]\nsample_seconds = 10\n").unwrap();
        let config = Config::load_from(
            Some(&file),
            env_of(&[("ADVPS_USAGE_ROLLUP_SECONDS", "2, 4")]),
        )
        .unwrap();
        assert_eq!(config.usage.sample_seconds, 10.0);
        assert_eq!(config.usage.schedule().rollups[1].bucket_ms, 4000);
        for bad in [
            ("ADVPS_USAGE_SAMPLE_SECONDS", "0"),
            ("ADVPS_USAGE_ROLLUP_SECONDS", "3600,300"),
            ("ADVPS_USAGE_ROLLUP_KEEP_SECONDS", "1"),
        ] {
            assert!(Config::load_from(None, env_of(&[bad])).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_values_are_named() {
        let err =
            Config::load_from(None, env_of(&[("ADVPS_RATE_LIMIT_LIVE", "lots")])).unwrap_err();
        assert!(err.to_string().contains("ADVPS_RATE_LIMIT_LIVE"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("advps.toml");
        std::fs::write(&file, "no_such_setting = 1\n").unwrap();
        assert!(Config::load_from(Some(&file), env_of(&[])).is_err());
        let err =
            Config::load_from(None, env_of(&[("ADVPS_SANDBOX_TASK_SECONDS", "-1")])).unwrap_err();
        assert!(err.to_string().contains("sandbox_task_seconds"), "{err}");
    }
}
