//! Checks requests against the official Proxmox VE API schema.
//!
//! The schema (`pve-api-schema.json`, the pve-docs API viewer data as JSON)
//! is test data outside the repository, under its own licence (AGPL-3.0,
//! from pve-docs): it is read at run time from the shared directory next to
//! the workspace, or from `PVE_API_SCHEMA`, and never copied or embedded.
//! Without it the fake still answers, but requests are not checked against
//! the schema, and a notice says so; with `ADVPS_REQUIRE_PVE_SCHEMA=1` (as
//! `.ci/test` sets it) a missing schema fails the tests instead.
//!
//! For every request: the path must match a path template, the method must
//! be one the path has, every parameter must be declared (indexed ones like
//! `net0` against `net[n]`), required ones present, and each value must fit
//! its type, range, length, enum, and for property strings (`net0`,
//! `rootfs`, `ipconfig0`) every key must exist in the format.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;

pub struct Schema {
    /// Path template segments (`{name}` for a variable) and the methods.
    paths: Vec<(Vec<String>, Value)>,
}

pub fn schema_path() -> PathBuf {
    match std::env::var_os("PVE_API_SCHEMA") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/proxmox/pve-api-schema.json"),
    }
}

/// Fails instead of skipping the schema checks when the schema is missing.
pub const REQUIRE_PVE_SCHEMA: &str = "ADVPS_REQUIRE_PVE_SCHEMA";

/// The schema, loaded once per test binary; `None` (after a notice) when
/// the file is not there and the checks are not required.
pub fn schema() -> Option<&'static Schema> {
    static SCHEMA: OnceLock<Option<Schema>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let path = schema_path();
            match std::fs::read_to_string(&path) {
                Ok(text) => Some(parse(&text)),
                Err(e) => {
                    super::require::missing(
                        REQUIRE_PVE_SCHEMA,
                        "the Proxmox VE API schema checks of the fake Proxmox cluster",
                        &format!("{}: {e}", path.display()),
                        "set PVE_API_SCHEMA to the pve-docs API schema as JSON \
                         (pve-api-schema.json)",
                    );
                    None
                }
            }
        })
        .as_ref()
}

fn parse(text: &str) -> Schema {
    {
        let roots: Value = serde_json::from_str(text).expect("the schema is JSON");
        let mut paths = Vec::new();
        fn walk(node: &Value, out: &mut Vec<(Vec<String>, Value)>) {
            if let (Some(path), Some(info)) =
                (node.get("path").and_then(Value::as_str), node.get("info"))
            {
                let segments = path
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                out.push((segments, info.clone()));
            }
            for child in node
                .get("children")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                walk(child, out);
            }
        }
        for root in roots.as_array().expect("a list of roots") {
            walk(root, &mut paths);
        }
        assert!(paths.len() > 300, "the schema looks truncated");
        Schema { paths }
    }
}

fn is_var(segment: &str) -> bool {
    segment.starts_with('{') && segment.ends_with('}')
}

impl Schema {
    /// Checks one request; `segments` are the decoded path segments after
    /// `/api2/json`, `params` the query and body parameters.
    pub fn check(
        &self,
        method: &str,
        segments: &[String],
        params: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        let shown = format!("{method} /{}", segments.join("/"));
        // The template with the most literal segments wins (`status/current`
        // over a variable).
        let (template, info) = self
            .paths
            .iter()
            .filter(|(t, _)| {
                t.len() == segments.len()
                    && t.iter().zip(segments).all(|(t, s)| is_var(t) || t == s)
            })
            .max_by_key(|(t, _)| t.iter().filter(|s| !is_var(s)).count())
            .ok_or_else(|| format!("{shown}: no such path in the API"))?;
        let method_info = info
            .get(method)
            .ok_or_else(|| format!("{shown}: method not allowed on this path"))?;
        let declared = method_info
            .pointer("/parameters/properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut all: BTreeMap<String, String> = params.clone();
        for (t, s) in template.iter().zip(segments) {
            if is_var(t) {
                all.insert(t[1..t.len() - 1].to_string(), s.clone());
            }
        }
        for (name, value) in &all {
            let schema = declared
                .get(name)
                .or_else(|| {
                    // `net0` is declared as `net[n]`.
                    let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
                    (base.len() < name.len())
                        .then(|| declared.get(&format!("{base}[n]")))
                        .flatten()
                })
                .ok_or_else(|| format!("{shown}: unknown parameter '{name}'"))?;
            check_value(schema, value).map_err(|e| format!("{shown}: parameter '{name}': {e}"))?;
        }
        for (name, schema) in &declared {
            let optional = schema.get("optional").and_then(Value::as_i64) == Some(1);
            if !optional && !name.contains("[n]") && !all.contains_key(name) {
                return Err(format!("{shown}: required parameter '{name}' missing"));
            }
        }
        Ok(())
    }
}

fn check_value(schema: &Value, value: &str) -> Result<(), String> {
    let ty = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("string");
    match ty {
        "integer" => {
            let n: i64 = value
                .parse()
                .map_err(|_| format!("'{value}' is not an integer"))?;
            if let Some(min) = schema.get("minimum").and_then(Value::as_i64) {
                if n < min {
                    return Err(format!("{n} is below the minimum {min}"));
                }
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_i64) {
                if n > max {
                    return Err(format!("{n} is above the maximum {max}"));
                }
            }
        }
        "number" => {
            value
                .parse::<f64>()
                .map_err(|_| format!("'{value}' is not a number"))?;
        }
        "boolean"
            if !matches!(
                value,
                "0" | "1" | "true" | "false" | "yes" | "no" | "on" | "off"
            ) =>
        {
            return Err(format!("'{value}' is not a boolean"));
        }
        _ => {}
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        if !values.iter().any(|v| v.as_str() == Some(value)) {
            return Err(format!("'{value}' is not one of {values:?}"));
        }
    }
    let length = value.chars().count() as i64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_i64) {
        if length < min {
            return Err(format!("shorter than {min} characters"));
        }
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_i64) {
        if length > max {
            return Err(format!("longer than {max} characters"));
        }
    }
    if let Some(format) = schema.get("format").and_then(Value::as_object) {
        check_property_string(format, value)?;
    }
    Ok(())
}

/// A property string's keys must exist in its format; a bare item is the
/// format's default key (or, for QEMU network cards, a model name, which
/// the format declares as a key aliasing `macaddr`).
fn check_property_string(
    format: &serde_json::Map<String, Value>,
    value: &str,
) -> Result<(), String> {
    let default_key = format
        .iter()
        .find(|(_, v)| v.get("default_key").and_then(Value::as_i64) == Some(1))
        .map(|(k, _)| k.clone());
    for (i, item) in value.split(',').enumerate() {
        match item.split_once('=') {
            Some((key, v)) => {
                let schema = format
                    .get(key)
                    .ok_or_else(|| format!("unknown key '{key}' in '{value}'"))?;
                if schema.get("alias").is_none() {
                    check_value(schema, v).map_err(|e| format!("key '{key}': {e}"))?;
                }
            }
            None => {
                let known = format.contains_key(item) || (i == 0 && default_key.is_some());
                if !known {
                    return Err(format!("bare item '{item}' in '{value}'"));
                }
            }
        }
    }
    Ok(())
}
