//! The file provider: every `*.yaml` / `*.yml` file of a directory, each a
//! stream of YAML documents holding the same kinds a cluster would.
//!
//! A file that does not parse is reported with its path and line, and its
//! last good objects stay in force, so one bad edit never takes down the rest
//! of the configuration. Documents of kinds we do not handle (Deployments in
//! the conformance manifests, say) are skipped.

use crate::store::{Object, Store};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line, where known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path.display(), line, self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

struct LoadedFile {
    text: String,
    objects: Vec<Object>,
    error: Option<ConfigError>,
}

/// The directory and the last good parse of each of its files.
pub struct ConfigDir {
    dir: PathBuf,
    files: BTreeMap<PathBuf, LoadedFile>,
}

/// What a rescan found.
#[derive(Debug, Default)]
pub struct Rescan {
    /// Whether any file's objects changed.
    pub changed: bool,
    /// Files that failed to parse in this rescan (their last good objects stay).
    pub errors: Vec<ConfigError>,
}

impl ConfigDir {
    /// A provider for `dir`; nothing is read until [`ConfigDir::rescan`].
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            files: BTreeMap::new(),
        }
    }

    /// The directory watched.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-reads the directory. Unchanged files are not re-parsed.
    pub fn rescan(&mut self) -> Result<Rescan, ConfigError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| ConfigError {
            path: self.dir.clone(),
            line: None,
            message: format!("cannot read directory: {e}"),
        })?;
        let mut seen = Vec::new();
        let mut out = Rescan::default();
        for entry in entries.flatten() {
            let path = entry.path();
            let is_yaml = matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            );
            // Editors leave hidden swap and backup files; never read them.
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if !is_yaml || hidden || !path.is_file() {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue; // vanished or unreadable mid-scan; the next scan sees it
            };
            seen.push(path.clone());
            if self.files.get(&path).is_some_and(|f| f.text == text) {
                if let Some(e) = self.files[&path].error.clone() {
                    out.errors.push(e);
                }
                continue;
            }
            match parse_documents(&path, &text) {
                Ok(objects) => {
                    self.files.insert(
                        path,
                        LoadedFile {
                            text,
                            objects,
                            error: None,
                        },
                    );
                    out.changed = true;
                }
                Err(error) => {
                    out.errors.push(error.clone());
                    // Keep the last good objects; remember the bad text so
                    // the same error is not re-parsed on every scan.
                    let objects = self
                        .files
                        .remove(&path)
                        .map(|f| f.objects)
                        .unwrap_or_default();
                    self.files.insert(
                        path,
                        LoadedFile {
                            text,
                            objects,
                            error: Some(error),
                        },
                    );
                }
            }
        }
        let before = self.files.len();
        self.files.retain(|p, _| seen.contains(p));
        out.changed |= self.files.len() != before;
        Ok(out)
    }

    /// A store holding the last good objects of every file.
    pub fn store(&self) -> Store {
        let mut store = Store::default();
        for file in self.files.values() {
            for o in &file.objects {
                store.insert(o.clone());
            }
        }
        store
    }
}

/// Splits a YAML stream into documents with their first line (1-based).
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = vec![(1, String::new())];
    for (i, line) in text.lines().enumerate() {
        let is_separator =
            line.starts_with("---") && line[3..].chars().next().is_none_or(|c| c.is_whitespace());
        if is_separator {
            docs.push((i + 1, String::new()));
            let rest = line[3..].trim();
            if !rest.is_empty() && !rest.starts_with('#') {
                docs.last_mut().expect("just pushed").1.push_str(rest);
            }
            docs.last_mut().expect("just pushed").1.push('\n');
            continue;
        }
        let doc = &mut docs.last_mut().expect("never empty").1;
        doc.push_str(line);
        doc.push('\n');
    }
    docs
}

/// Parses every document of a file into typed objects.
pub fn parse_documents(path: &Path, text: &str) -> Result<Vec<Object>, ConfigError> {
    let mut objects = Vec::new();
    for (first_line, doc) in split_documents(text) {
        let err = |line: Option<usize>, message: String| ConfigError {
            path: path.to_owned(),
            line,
            message,
        };
        // Lines inside a document count from its first line; the separator
        // line itself is line `first_line - 1`.
        let at = |e: &serde_yaml_ng::Error| e.location().map(|l| first_line + l.line() - 1);
        let msg = |e: &serde_yaml_ng::Error| relocate(&e.to_string(), first_line);
        let value: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&doc).map_err(|e| err(at(&e), msg(&e)))?;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        if kind.is_empty() {
            return Err(err(Some(first_line), "document has no kind".to_owned()));
        }
        let typed = |doc: &str| -> Result<Option<Object>, ConfigError> {
            fn de<T: DeserializeOwned>(
                doc: &str,
                wrap: fn(T) -> Object,
            ) -> Result<Option<Object>, serde_yaml_ng::Error> {
                serde_yaml_ng::from_str(doc).map(|o| Some(wrap(o)))
            }
            let parsed = match kind {
                "GatewayClass" => de(doc, Object::GatewayClass),
                "Gateway" => de(doc, Object::Gateway),
                "HTTPRoute" => de(doc, Object::HttpRoute),
                "GRPCRoute" => de(doc, Object::GrpcRoute),
                "TLSRoute" => de(doc, Object::TlsRoute),
                "TCPRoute" => de(doc, Object::TcpRoute),
                "UDPRoute" => de(doc, Object::UdpRoute),
                "ReferenceGrant" => de(doc, Object::ReferenceGrant),
                "Namespace" => de(doc, Object::Namespace),
                "Service" => de(doc, Object::Service),
                "EndpointSlice" => de(doc, Object::EndpointSlice),
                "Secret" => de(doc, Object::Secret),
                _ => Ok(None),
            };
            parsed.map_err(|e| err(at(&e).or(Some(first_line)), format!("{kind}: {}", msg(&e))))
        };
        if let Some(object) = typed(&doc)? {
            check_name(&object).map_err(|m| err(Some(first_line), format!("{kind}: {m}")))?;
            objects.push(object);
        }
    }
    Ok(objects)
}

/// Rewrites the parser's document-relative `at line N` into file lines.
fn relocate(message: &str, first_line: usize) -> String {
    static LINE: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"line (\d+)").expect("static pattern"));
    LINE.replace_all(message, |c: &regex::Captures<'_>| {
        let n: usize = c[1].parse().unwrap_or(1);
        format!("line {}", n + first_line - 1)
    })
    .into_owned()
}

fn check_name(object: &Object) -> Result<(), &'static str> {
    let meta = object.meta();
    match meta.name.as_deref() {
        Some(n) if !n.is_empty() => Ok(()),
        _ => Err("metadata.name is required"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multi_document_files_and_skips_unknown_kinds() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n---\n# comment only\n";
        let objects = parse_documents(Path::new("x.yaml"), text).unwrap();
        assert_eq!(objects.len(), 1);
    }

    #[test]
    fn reports_the_line_of_a_syntax_error() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\nkind: Service\nmetadata:\n  name: [unclosed\n";
        let e = parse_documents(Path::new("bad.yaml"), text).unwrap_err();
        assert_eq!(e.path, Path::new("bad.yaml"));
        let line = e.line.expect("a line");
        assert!((8..=9).contains(&line), "line {line}: {e}");
    }

    #[test]
    fn reports_the_line_of_a_type_error() {
        let text = "kind: Gateway\nmetadata:\n  name: g\nspec:\n  gatewayClassName: c\n  listeners:\n  - name: l\n    port: notanumber\n    protocol: HTTP\n";
        let e = parse_documents(Path::new("g.yaml"), text).unwrap_err();
        assert_eq!(e.line, Some(8), "{e}");
    }

    #[test]
    fn a_broken_file_keeps_its_last_good_objects() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ns.yaml");
        std::fs::write(&file, "kind: Namespace\nmetadata:\n  name: a\n").unwrap();
        let mut cd = ConfigDir::new(dir.path());
        assert!(cd.rescan().unwrap().changed);
        std::fs::write(&file, "kind: Namespace\nmetadata: [\n").unwrap();
        let r = cd.rescan().unwrap();
        assert!(!r.changed);
        assert_eq!(r.errors.len(), 1);
        assert!(cd.store().namespaces.contains_key("a"));
        std::fs::remove_file(&file).unwrap();
        assert!(cd.rescan().unwrap().changed);
        assert!(cd.store().namespaces.is_empty());
    }
}
