//! Server settings: built-in defaults, then an optional TOML file, then
//! `ADVPS_*` environment variables, then command-line flags, each layer
//! overriding the one before.
//!
//! The settings are listed once, as the fields of [`Config`]: a file key is
//! a field's name, its variable that name in capitals after `ADVPS_` (the
//! `[usage]` and `[panel]` sections' keys after `ADVPS_USAGE_` and
//! `ADVPS_PANEL_`), and the layers are merged by figment. Variables and
//! flags arrive as text and are parsed into each field's type, so an
//! address or a URL is never taken for something else. Credentials are
//! [`SecretString`]s: a `{:?}` of the configuration, or a log line made
//! from it, shows `[REDACTED]` in their place.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::error::{Actual, Kind};
use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use secrecy::SecretString;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
    /// none: SQLite in the data directory. Secret: the URL may carry the
    /// database's password.
    pub database_url: Option<SecretString>,
    /// Connections this instance opens to PostgreSQL at most.
    pub db_max_connections: u32,
    /// PostgreSQL statement timeout, in milliseconds.
    pub db_statement_timeout_ms: u64,
    /// How long a query waits for a PostgreSQL connection, in milliseconds,
    /// before it fails (503); short, so that while the database is down
    /// requests are answered at once rather than held.
    pub db_acquire_timeout_ms: u64,
    /// The key that encrypts stored secrets, base64 of 32 bytes; every
    /// instance sharing a database needs the same one (or the same file).
    pub secret_key: Option<SecretString>,
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
    /// Where the worker writes scheduled backups; none: it writes none.
    pub backup_dir: Option<PathBuf>,
    /// How often it writes one (`6h`, `1d`, ...; at least a second).
    #[serde(deserialize_with = "period")]
    pub backup_every: Duration,
    /// How many of the newest scheduled backups are kept.
    pub backup_keep: u32,
    /// A file holding the passphrase that seals scheduled backups.
    pub backup_passphrase_file: Option<PathBuf>,
    /// Seconds a console URL can be opened after it was handed out; an open
    /// console is not cut by it.
    pub console_ttl_secs: u64,
    /// Consoles open at once in this process, over every service; one more
    /// is answered 503 with `Retry-After`.
    pub console_max_sessions: usize,
    /// The customer panel at `/panel` (`[panel]`).
    pub panel: PanelConfig,
}

impl Default for Config {
    fn default() -> Self {
        let backup = crate::backup::BackupSchedule::default();
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
            db_acquire_timeout_ms: 3_000,
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
            backup_dir: backup.dir,
            backup_every: backup.every,
            backup_keep: backup.keep,
            backup_passphrase_file: backup.passphrase_file,
            console_ttl_secs: 60,
            console_max_sessions: 64,
            panel: PanelConfig::default(),
        }
    }
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
        expected: String,
    },
    #[error("invalid setting {name}: {message}")]
    Invalid { name: &'static str, message: String },
}

/// What a period setting takes, in its error messages.
const PERIOD: &str = "a period like 30m, 6h or 1d, at least 1s";

/// A period like `6h`, `1d` or `30m` (at least a second).
fn period<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d >= Duration::from_secs(1) => Ok(d),
        _ => Err(de::Error::invalid_value(
            de::Unexpected::Str(&text),
            &PERIOD,
        )),
    }
}

/// The sections of the file, each its own struct: their keys' variables
/// are named `ADVPS_<SECTION>_<KEY>`.
fn sections() -> [(&'static str, &'static [&'static str]); 2] {
    [
        ("usage", field_names::<UsageConfig>()),
        ("panel", field_names::<PanelConfig>()),
    ]
}

/// The field names a derived `Deserialize` struct asks for, so that the
/// variables read are the struct's own fields and no second list of them
/// is kept.
fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Names<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Names<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("names read"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut names: &'static [&'static str] = &[];
    let _ = T::deserialize(Names(&mut names));
    names
}

/// Every setting's variable with the setting's key path in the merged
/// configuration (`ADVPS_USAGE_SAMPLE_SECONDS` -> `usage.sample_seconds`).
pub fn env_names() -> Vec<(String, Vec<String>)> {
    let sections = sections();
    let mut names = Vec::new();
    for field in field_names::<Config>() {
        match sections.iter().find(|(name, _)| name == field) {
            Some((section, keys)) => names.extend(keys.iter().map(|key| {
                (
                    format!("ADVPS_{}_{}", section, key).to_uppercase(),
                    vec![section.to_string(), key.to_string()],
                )
            })),
            None => names.push((
                format!("ADVPS_{field}").to_uppercase(),
                vec![field.to_string()],
            )),
        }
    }
    names
}

/// One layer given as text: the environment or the flags. Each entry is
/// the name the operator wrote (for error messages), the setting's key
/// path and the value as written; figment parses it into the field's type.
struct TextLayer {
    name: &'static str,
    entries: Vec<(String, Vec<String>, String)>,
}

impl TextLayer {
    /// The entry behind an error at `path`.
    fn entry(&self, path: &[String]) -> Option<&(String, Vec<String>, String)> {
        self.entries.iter().find(|(_, key, _)| key == path)
    }
}

impl Provider for TextLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut root = Dict::new();
        for (_, path, value) in &self.entries {
            let (last, sections) = path.split_last().expect("a key path is never empty");
            let mut dict = &mut root;
            for section in sections {
                let entry = dict
                    .entry(section.clone())
                    .or_insert_with(|| Value::from(Dict::new()));
                dict = match entry {
                    Value::Dict(_, inner) => inner,
                    _ => unreachable!("sections are only ever dictionaries here"),
                };
            }
            dict.insert(last.clone(), Value::from(value.clone()));
        }
        Ok(Profile::Default.collect(root))
    }
}

const ENVIRONMENT: &str = "environment variable";
const FLAGS: &str = "command-line flag";

impl Config {
    /// Defaults, then the file (if given), then the process's environment,
    /// then `flags` (setting name and value, e.g. `("listen", ...)`).
    pub fn load(file: Option<&Path>, flags: &[(&str, String)]) -> Result<Config, ConfigError> {
        Self::load_layers(file, |name| std::env::var(name).ok(), flags)
    }

    /// Defaults, the file and the environment read through `env` (for
    /// tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Self::load_layers(file, env, &[])
    }

    /// Every layer, the environment read through `env`. An empty variable
    /// counts as unset, as an empty flag value does.
    pub fn load_layers(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: &[(&str, String)],
    ) -> Result<Config, ConfigError> {
        let text = file
            .map(|path| {
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            })
            .transpose()?;
        let environment = TextLayer {
            name: ENVIRONMENT,
            entries: env_names()
                .into_iter()
                .filter_map(|(name, path)| {
                    let value = env(&name)?.trim().to_string();
                    (!value.is_empty()).then_some((name, path, value))
                })
                .collect(),
        };
        let flags = TextLayer {
            name: FLAGS,
            entries: flags
                .iter()
                .filter(|(_, value)| !value.trim().is_empty())
                .map(|(key, value)| {
                    (
                        format!("--{}", key.replace('_', "-")),
                        key.split('.').map(str::to_string).collect(),
                        value.trim().to_string(),
                    )
                })
                .collect(),
        };
        let mut figment = Figment::new();
        if let Some(text) = &text {
            figment = figment.merge(Toml::string(text));
        }
        let config: Config = figment
            .merge(&environment)
            .merge(&flags)
            .extract_lossy()
            .map_err(|e| layer_error(e, file, [&environment, &flags]))?;
        config.validate()?;
        Ok(config)
    }
}

/// A figment error as the layer it came from would name it: the variable
/// or flag with the value as written, or the file with its key.
fn layer_error(error: figment::Error, file: Option<&Path>, layers: [&TextLayer; 2]) -> ConfigError {
    let source = error.metadata.as_ref().map(|m| m.name.to_string());
    let key = error.path.join(".");
    let (value, expected) = match &error.kind {
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            (Some(actual_text(actual)), expected_text(expected))
        }
        Kind::InvalidLength(_, expected) => (None, expected_text(expected)),
        _ => (None, String::new()),
    };
    if let Some(layer) = layers.iter().find(|l| Some(l.name) == source.as_deref()) {
        if let Some((name, _, raw)) = layer.entry(&error.path) {
            return ConfigError::Env {
                name: name.clone(),
                value: raw.clone(),
                expected,
            };
        }
    }
    let message = match (&error.kind, value) {
        // The path ends with the unknown key itself.
        (Kind::UnknownField(field, _), _) if key.is_empty() => {
            format!("unknown setting '{field}'")
        }
        (Kind::UnknownField(..), _) => format!("unknown setting '{key}'"),
        (_, Some(value)) => format!("invalid value for {key}: '{value}' ({expected})"),
        (Kind::InvalidLength(..), None) => format!("invalid value for {key} ({expected})"),
        (kind, None) if key.is_empty() => kind.to_string(),
        (kind, None) => format!("{key}: {kind}"),
    };
    ConfigError::Parse {
        path: file.map(Path::to_path_buf).unwrap_or_default(),
        message,
    }
}

/// A rejected value as the operator wrote it.
fn actual_text(actual: &Actual) -> String {
    match actual {
        Actual::Str(s) | Actual::Other(s) => s.clone(),
        Actual::Bool(b) => b.to_string(),
        Actual::Signed(n) => n.to_string(),
        Actual::Unsigned(n) => n.to_string(),
        Actual::Float(n) => n.to_string(),
        Actual::Char(c) => c.to_string(),
        other => other.to_string(),
    }
}

/// What a field takes, in words rather than Rust's type names.
fn expected_text(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" | "i8" | "i16" | "i32" | "i64" | "isize" => {
            "a whole number".into()
        }
        "f32" | "f64" => "a number".into(),
        "a boolean" => "true or false".into(),
        other => other.to_string(),
    }
}

impl Config {
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
        for (name, value) in [
            ("backup_keep", u64::from(self.backup_keep)),
            ("db_acquire_timeout_ms", self.db_acquire_timeout_ms),
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

    /// The worker's backup schedule.
    pub fn backup(&self) -> crate::backup::BackupSchedule {
        crate::backup::BackupSchedule {
            dir: self.backup_dir.clone(),
            every: self.backup_every,
            keep: self.backup_keep,
            passphrase_file: self.backup_passphrase_file.clone(),
        }
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
    #[serde(deserialize_with = "seconds_pair")]
    pub rollup_seconds: [f64; 2],
    /// How long each rollup is kept (default 7 and 30 days).
    #[serde(deserialize_with = "seconds_pair")]
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

/// Two numbers of seconds: an array in the file, `a,b` in a variable.
fn seconds_pair<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[f64; 2], D::Error> {
    struct Pair;
    impl<'de> Visitor<'de> for Pair {
        type Value = [f64; 2];
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("two numbers of seconds, e.g. 300,3600")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<[f64; 2], E> {
            let numbers: Option<Vec<f64>> =
                text.split(',').map(|n| n.trim().parse().ok()).collect();
            numbers
                .and_then(|n| n.try_into().ok())
                .ok_or_else(|| E::invalid_value(de::Unexpected::Str(text), &self))
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<[f64; 2], A::Error> {
            let mut pair = [0.0; 2];
            for (i, slot) in pair.iter_mut().enumerate() {
                *slot = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(i, &self))?;
            }
            if seq.next_element::<f64>()?.is_some() {
                return Err(de::Error::invalid_length(3, &self));
            }
            Ok(pair)
        }
    }
    deserializer.deserialize_any(Pair)
}

impl UsageConfig {
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
    use secrecy::ExposeSecret;
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

    fn write_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("advps.toml");
        std::fs::write(&file, text).unwrap();
        (dir, file)
    }

    /// The variables the README's configuration table names.
    fn readme_variables() -> Vec<String> {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"));
        let table = readme
            .split("| TOML key | environment | default |")
            .nth(1)
            .expect("the README has the configuration table");
        let mut names = Vec::new();
        for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
            let column = row.split(" | ").nth(1).expect("a row has three columns");
            let words = column.split('`').skip(1).step_by(2);
            names.extend(
                words
                    .filter(|w| w.starts_with("ADVPS_"))
                    .map(str::to_string),
            );
        }
        names
    }

    #[test]
    fn every_variable_in_the_readme_is_honoured() {
        let documented = readme_variables();
        let known: Vec<String> = env_names().into_iter().map(|(name, _)| name).collect();
        for name in &known {
            assert!(
                documented.contains(name),
                "{name} is missing from the README"
            );
        }
        let default = format!("{:?}", Config::default());
        for name in &documented {
            assert!(known.contains(name), "{name} is not a setting");
            // Some value of the setting's type must load and change the
            // configuration (secrets change it from None to Some).
            let honoured = ["3", "7", "false", "true", "json", "2h", "604800,2592001"]
                .iter()
                .filter_map(|value| Config::load_from(None, env_of(&[(name, value)])).ok())
                .any(|config| format!("{config:?}") != default);
            assert!(honoured, "{name} changed nothing");
        }
    }

    #[test]
    fn flags_override_the_environment_which_overrides_the_file() {
        let (_dir, file) = write_file(
            "listen = \"0.0.0.0:1\"\nrate_limit_test = 1\nrate_limit_live = 2\n\
             log_format = \"json\"\n[panel]\nsession_idle_secs = 5\n",
        );
        let env = env_of(&[
            ("ADVPS_LISTEN", "127.0.0.1:0"),
            ("ADVPS_RATE_LIMIT_TEST", "3"),
            ("ADVPS_PANEL_SESSION_IDLE_SECS", "6"),
            ("ADVPS_RUN_WORKER", "true"),
        ]);
        let flags = [
            ("listen", "127.0.0.2:9".to_string()),
            ("run_worker", "false".to_string()),
        ];
        let config = Config::load_layers(Some(&file), env, &flags).unwrap();
        assert_eq!(config.listen, "127.0.0.2:9");
        assert!(!config.run_worker);
        assert_eq!(config.rate_limit_test, 3);
        assert_eq!(config.rate_limit_live, 2);
        assert_eq!(config.log_format, "json");
        assert_eq!(config.panel.session_idle_secs, 6);
        assert_eq!(config.rate_limit_window_secs, 900);
    }

    #[test]
    fn variables_are_text_until_their_setting_parses_them() {
        let config = Config::load_from(
            None,
            env_of(&[
                ("ADVPS_LISTEN", "127.0.0.1:0"),
                ("ADVPS_METRICS_LISTEN", " 9090 "),
                ("ADVPS_SECRET_KEY", "12345"),
                ("ADVPS_DATABASE_URL", "postgres://u:p@h/db?sslmode=disable"),
                ("ADVPS_BACKUP_EVERY", "6h"),
                ("ADVPS_DB_ACQUIRE_TIMEOUT_MS", "250"),
                // An empty variable counts as unset; others are no setting.
                ("ADVPS_BACKUP_DIR", ""),
                ("ADVPS_LOG", "debug"),
            ]),
        )
        .unwrap();
        assert_eq!(config.listen_addr().unwrap().port(), 0);
        assert_eq!(config.metrics_listen.as_deref(), Some("9090"));
        assert_eq!(config.secret_key.as_ref().unwrap().expose_secret(), "12345");
        assert_eq!(
            config.database_url.as_ref().unwrap().expose_secret(),
            "postgres://u:p@h/db?sslmode=disable"
        );
        assert_eq!(config.backup().every, Duration::from_secs(6 * 3600));
        assert_eq!(config.db_acquire_timeout_ms, 250);
        assert_eq!(config.backup_dir, None);
    }

    #[test]
    fn an_unknown_file_key_is_refused_by_name() {
        for (text, key) in [
            ("no_such_setting = 1\n", "no_such_setting"),
            ("[usage]\nsample_secs = 1\n", "usage.sample_secs"),
        ] {
            let (_dir, file) = write_file(text);
            let err = Config::load_from(Some(&file), env_of(&[])).unwrap_err();
            let message = err.to_string();
            assert!(message.starts_with("invalid config file"), "{message}");
            assert!(message.contains(&format!("'{key}'")), "{message}");
        }
    }

    #[test]
    fn a_bad_value_names_its_source_the_value_and_what_was_expected() {
        let cases = [
            (
                ("ADVPS_RATE_LIMIT_LIVE", "lots"),
                "invalid value for ADVPS_RATE_LIMIT_LIVE: 'lots' (a whole number)",
            ),
            (
                ("ADVPS_WEBHOOK_ALLOW_PRIVATE", "maybe"),
                "invalid value for ADVPS_WEBHOOK_ALLOW_PRIVATE: 'maybe' (true or false)",
            ),
            (
                ("ADVPS_BACKUP_EVERY", "0s"),
                "invalid value for ADVPS_BACKUP_EVERY: '0s' (a period like 30m, 6h or 1d, at least 1s)",
            ),
            (
                ("ADVPS_USAGE_ROLLUP_SECONDS", "300"),
                "invalid value for ADVPS_USAGE_ROLLUP_SECONDS: '300' (two numbers of seconds, e.g. 300,3600)",
            ),
        ];
        for (pair, expected) in cases {
            let err = Config::load_from(None, env_of(&[pair])).unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
        let (_dir, file) = write_file("rate_limit_live = \"lots\"\nbackup_keep = 1\n");
        let err = Config::load_from(Some(&file), env_of(&[])).unwrap_err();
        assert!(
            err.to_string()
                .ends_with(": invalid value for rate_limit_live: 'lots' (a whole number)"),
            "{err}"
        );
        let flags = [("data_dir", "/d".to_string()), ("run_worker", "x".into())];
        let err = Config::load_layers(None, env_of(&[]), &flags).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value for --run-worker: 'x' (true or false)"
        );
        let err = Config::load_from(None, env_of(&[("ADVPS_BACKUP_KEEP", "0")])).unwrap_err();
        assert!(err.to_string().contains("backup_keep"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let (_dir, file) = write_file(
            "secret_key = \"a2V5LWZyb20tdGhlLWZpbGUtMzItYnl0ZXMtbG9uZyE=\"\n\
             database_url = \"postgres://advps:hunter2@db.internal/advps\"\n",
        );
        let config = Config::load_from(Some(&file), env_of(&[])).unwrap();
        let printed = format!("{config:?} {config:#?}");
        for secret in ["a2V5LWZyb20tdGhlLWZpbGUtMzItYnl0ZXMtbG9uZyE=", "hunter2"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("REDACTED"), "{printed}");
        let url = config.database_url.as_ref().unwrap().expose_secret();
        assert!(url.contains("hunter2"));
    }
}
