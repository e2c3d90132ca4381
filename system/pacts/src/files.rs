//! The committed pact files, and the check that keeps them the source of truth.
//!
//! A consumer test never writes into `system/pacts/pacts/` by itself: Pact writes the file it
//! built into a scratch directory ([`ConsumerPact`]), and [`ConsumerPact::check`] compares it with
//! the committed file. Equal (ignoring what only records the Pact library's version and the
//! interactions' computed keys, which are hashes that may change with the toolchain): the test
//! passes. Different: the test fails and lists the interactions that changed, unless
//! `UPDATE_PACTS=1` is set, in which case the committed file is replaced and the change shows up
//! in review like any other. Provider tests only ever read the committed files, so what is
//! verified is what was reviewed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use pact_consumer::builders::PactBuilder;
use serde_json::Value;

use crate::TrackingNotDisabled;

/// Set to `1` (or `true`) to let consumer tests rewrite the committed pact files.
pub const UPDATE_PACTS: &str = "UPDATE_PACTS";

/// How many differing JSON paths a drift report lists per interaction.
const MAX_PATHS_SHOWN: usize = 8;

/// `system/pacts/pacts`.
pub fn committed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pacts")
}

/// Pact's own file name for a pair: `<consumer>-<provider>.json`.
pub fn file_name(consumer: &str, provider: &str) -> String {
    format!("{consumer}-{provider}.json")
}

/// The committed contract between `consumer` and `provider`.
pub fn committed(consumer: &str, provider: &str) -> PathBuf {
    committed_dir().join(file_name(consumer, provider))
}

/// The descriptions of the interactions in the pact file at `path`, in file order.
pub fn descriptions(path: &Path) -> Result<Vec<String>, PactFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| PactFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let pact = parse(&text, path)?;
    Ok(pact
        .get("interactions")
        .and_then(Value::as_array)
        .map(|all| {
            all.iter()
                .filter_map(|i| i.get("description").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default())
}

fn update_requested() -> bool {
    std::env::var(UPDATE_PACTS).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Why a consumer test's pact could not be checked against the committed one.
#[derive(Debug, thiserror::Error)]
pub enum PactFileError {
    #[error(transparent)]
    Tracking(#[from] TrackingNotDisabled),
    #[error("cannot create a scratch directory for the pact: {0}")]
    Scratch(#[source] std::io::Error),
    #[error(
        "the consumer test wrote no pact file at {path}: Pact writes it only when every \
         interaction was exercised and matched ({source})"
    )]
    NotWritten {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a pact file: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error(
        "{path} does not exist: the contract {consumer} needs from {provider} was never \
         committed. Run `{UPDATE_PACTS}=1 cargo test -p contract-pacts` and commit the file"
    )]
    Missing {
        consumer: String,
        provider: String,
        path: PathBuf,
    },
    #[error(
        "the contract {consumer} needs from {provider} changed, but {path} was not updated:\n\
         {changes}\n\
         If the change is intended, run `{UPDATE_PACTS}=1 cargo test -p contract-pacts`, review \
         the file's diff and commit it: the provider tests then verify {provider} against the \
         new contract"
    )]
    Drift {
        consumer: String,
        provider: String,
        path: PathBuf,
        changes: String,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What [`ConsumerPact::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// The pact the test wrote is the committed one.
    Unchanged,
    /// It differed and `UPDATE_PACTS=1` replaced the committed file.
    Rewritten,
}

/// A V4 pact under construction by a consumer test, written into a scratch directory.
pub struct ConsumerPact {
    consumer: String,
    provider: String,
    builder: PactBuilder,
    scratch: tempfile::TempDir,
}

impl ConsumerPact {
    pub fn new(consumer: &str, provider: &str) -> Result<Self, PactFileError> {
        crate::ensure_do_not_track()?;
        let scratch = tempfile::tempdir().map_err(PactFileError::Scratch)?;
        let mut builder = PactBuilder::new_v4(consumer, provider);
        builder.with_output_dir(scratch.path());
        Ok(Self {
            consumer: consumer.to_string(),
            provider: provider.to_string(),
            builder,
            scratch,
        })
    }

    /// Where interactions are added, and the mock server or message iterator is started from.
    pub fn builder(&mut self) -> &mut PactBuilder {
        &mut self.builder
    }

    /// Compares what Pact wrote with the committed file, or replaces it under `UPDATE_PACTS=1`.
    /// Call it once the mock server or the message iterator is dropped: that is when Pact writes.
    pub fn check(self) -> Result<Checked, PactFileError> {
        let written = self
            .scratch
            .path()
            .join(file_name(&self.consumer, &self.provider));
        let text =
            std::fs::read_to_string(&written).map_err(|source| PactFileError::NotWritten {
                path: written.clone(),
                source,
            })?;
        check_against(
            &self.consumer,
            &self.provider,
            &text,
            &committed(&self.consumer, &self.provider),
            update_requested(),
        )
    }
}

/// Compares a freshly written pact (`written`) with the file at `path`; with `update`, replaces
/// the file when they differ (or when it is missing).
pub fn check_against(
    consumer: &str,
    provider: &str,
    written: &str,
    path: &Path,
    update: bool,
) -> Result<Checked, PactFileError> {
    let new = parse(written, path)?;
    let changes = match std::fs::read_to_string(path) {
        Ok(old) => {
            let changes = changes(&parse(&old, path)?, &new);
            if changes.is_empty() {
                return Ok(Checked::Unchanged);
            }
            changes
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && update => String::new(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PactFileError::Missing {
                consumer: consumer.to_string(),
                provider: provider.to_string(),
                path: path.to_path_buf(),
            });
        }
        Err(source) => {
            return Err(PactFileError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if !update {
        return Err(PactFileError::Drift {
            consumer: consumer.to_string(),
            provider: provider.to_string(),
            path: path.to_path_buf(),
            changes,
        });
    }
    replace(path, written)?;
    eprintln!(
        "contract-pacts: {UPDATE_PACTS} rewrote {}; review its diff and commit it",
        path.display()
    );
    Ok(Checked::Rewritten)
}

/// Writes beside the file and renames, so a provider test reading it concurrently never sees half
/// a file.
fn replace(path: &Path, contents: &str) -> Result<(), PactFileError> {
    let write_error = |source| PactFileError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(write_error)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, contents).map_err(write_error)?;
    std::fs::rename(&tmp, path).map_err(write_error)?;
    Ok(())
}

fn parse(text: &str, path: &Path) -> Result<Value, PactFileError> {
    let unreadable = |reason: String| PactFileError::Unreadable {
        path: path.to_path_buf(),
        reason,
    };
    let mut value: Value = serde_json::from_str(text).map_err(|e| unreadable(e.to_string()))?;
    if !value.get("interactions").is_some_and(Value::is_array) {
        return Err(unreadable("it has no `interactions` array".into()));
    }
    normalize(&mut value);
    Ok(value)
}

/// Drops what does not belong to the contract: the Pact library's versions in the metadata, and
/// the interactions' keys (hashes computed with the toolchain's default hasher).
fn normalize(pact: &mut Value) {
    if let Some(metadata) = pact.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("pactRust");
    }
    if let Some(interactions) = pact.get_mut("interactions").and_then(Value::as_array_mut) {
        for interaction in interactions {
            if let Some(i) = interaction.as_object_mut() {
                i.remove("key");
            }
        }
    }
}

/// The interactions by description (each description is unique within a pact).
fn by_description(pact: &Value) -> BTreeMap<String, &Value> {
    pact.get("interactions")
        .and_then(Value::as_array)
        .map(|all| {
            all.iter()
                .map(|i| {
                    let description = i
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or("<no description>");
                    (description.to_string(), i)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A readable list of what differs between two normalized pacts; empty when they are equal.
fn changes(old: &Value, new: &Value) -> String {
    let mut out = String::new();
    for key in ["consumer", "provider", "metadata"] {
        if old.get(key) != new.get(key) {
            let _ = writeln!(
                out,
                "  ~ {key}: {} -> {}",
                old.get(key).unwrap_or(&Value::Null),
                new.get(key).unwrap_or(&Value::Null)
            );
        }
    }
    let (old_i, new_i) = (by_description(old), by_description(new));
    for (description, interaction) in &new_i {
        match old_i.get(description) {
            None => {
                let _ = writeln!(out, "  + interaction {description:?} is new");
            }
            Some(before) if before != interaction => {
                let _ = writeln!(out, "  ~ interaction {description:?} changed:");
                let mut paths = Vec::new();
                diff_paths("$", before, interaction, &mut paths);
                for (path, was, is) in paths.iter().take(MAX_PATHS_SHOWN) {
                    let _ = writeln!(out, "      {path}: {was} -> {is}");
                }
                if paths.len() > MAX_PATHS_SHOWN {
                    let _ = writeln!(out, "      ... and {} more", paths.len() - MAX_PATHS_SHOWN);
                }
            }
            Some(_) => {}
        }
    }
    for description in old_i.keys().filter(|d| !new_i.contains_key(*d)) {
        let _ = writeln!(out, "  - interaction {description:?} is gone");
    }
    out
}

/// Every path where `a` and `b` differ, with both values (`<absent>` where one has nothing).
fn diff_paths(path: &str, a: &Value, b: &Value, out: &mut Vec<(String, String, String)>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let child = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => diff_paths(&child, va, vb, out),
                    (Some(va), None) => out.push((child, va.to_string(), "<absent>".into())),
                    (None, Some(vb)) => out.push((child, "<absent>".into(), vb.to_string())),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                diff_paths(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        _ if a != b => out.push((path.to_string(), a.to_string(), b.to_string())),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pact(status: u16, pact_rust: &str) -> String {
        serde_json::json!({
            "consumer": {"name": "gateway"},
            "provider": {"name": "order-service"},
            "interactions": [{
                "description": "a request for an order",
                "key": pact_rust,
                "type": "Synchronous/HTTP",
                "request": {"method": "GET", "path": "/orders/1"},
                "response": {"status": status}
            }],
            "metadata": {"pactRust": {"consumer": pact_rust}, "pactSpecification": {"version": "4.0"}}
        })
        .to_string()
    }

    #[test]
    fn a_pact_that_only_differs_in_library_versions_and_keys_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway-order-service.json");
        std::fs::write(&path, pact(200, "1.0.0")).unwrap();

        let checked = check_against(
            "gateway",
            "order-service",
            &pact(200, "9.9.9"),
            &path,
            false,
        );

        assert_eq!(checked.unwrap(), Checked::Unchanged);
        assert!(std::fs::read_to_string(&path).unwrap().contains("1.0.0"));
    }

    #[test]
    fn a_changed_interaction_fails_naming_it_and_saying_how_to_update() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway-order-service.json");
        std::fs::write(&path, pact(200, "1")).unwrap();

        let err = check_against("gateway", "order-service", &pact(404, "1"), &path, false)
            .unwrap_err()
            .to_string();

        assert!(
            err.contains("the contract gateway needs from order-service changed"),
            "{err}"
        );
        assert!(err.contains("\"a request for an order\" changed"), "{err}");
        assert!(err.contains("$.response.status: 200 -> 404"), "{err}");
        assert!(
            err.contains("UPDATE_PACTS=1 cargo test -p contract-pacts"),
            "{err}"
        );
        assert!(std::fs::read_to_string(&path).unwrap().contains("200"));
    }

    #[test]
    fn update_pacts_rewrites_a_changed_or_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway-order-service.json");
        let checked = check_against("gateway", "order-service", &pact(404, "1"), &path, true);
        assert_eq!(checked.unwrap(), Checked::Rewritten);
        std::fs::write(&path, pact(200, "1")).unwrap();

        let checked = check_against("gateway", "order-service", &pact(404, "1"), &path, true);

        assert_eq!(checked.unwrap(), Checked::Rewritten);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), pact(404, "1"));
    }

    #[test]
    fn a_missing_committed_file_says_it_was_never_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.json");
        let err = check_against("a", "b", &pact(200, "1"), &path, false).unwrap_err();
        assert!(matches!(err, PactFileError::Missing { .. }), "{err}");
    }

    #[test]
    fn added_and_removed_interactions_are_listed() {
        let old: Value = serde_json::from_str(&pact(200, "1")).unwrap();
        let mut new = old.clone();
        new["interactions"][0]["description"] = "a request for the orders".into();
        let listed = changes(&old, &new);
        assert!(
            listed.contains("+ interaction \"a request for the orders\" is new"),
            "{listed}"
        );
        assert!(
            listed.contains("- interaction \"a request for an order\" is gone"),
            "{listed}"
        );
    }
}
