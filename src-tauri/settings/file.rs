//! `settings.toml`: read with the line of every problem in it, edited with toml_edit so the
//! user's comments and order survive, written atomically (0600) under a lock. A file that does
//! not parse is never written: the user's text is worth more than our edit.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use toml_edit::{Document, DocumentMut, Item, Value};

use super::keys::{self, Key, SECRETS};
use super::SettingsError;
use crate::store::{write_atomic, FileLock};

/// The first lines of a settings file `cma settings set` creates.
const HEADER: &str = "# Codex App Account Router settings. Environment variables (CODEX_PROXY_*) win over\n# this file. `cma settings` lists every key; your comments here are kept.\n";

/// One valid setting found in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileValue {
    pub key: &'static Key,
    /// Canonical form (see `Kind::normalize`).
    pub value: String,
    pub line: usize,
}

/// Something wrong in the file. It is a warning: the program carries on with the defaults and
/// the environment in place of what could not be used, and leaves the file as it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum FileProblem {
    Unreadable {
        path: PathBuf,
        reason: String,
    },
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },
    UnknownKey {
        path: PathBuf,
        line: usize,
        key: String,
    },
    Secret {
        path: PathBuf,
        line: usize,
        key: String,
        variable: &'static str,
    },
    Invalid {
        path: PathBuf,
        line: usize,
        key: &'static str,
        value: String,
        allowed: String,
        default: &'static str,
    },
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileProblem::Unreadable { path, reason } => write!(
                f,
                "cannot read {}: {reason}; running on the defaults and the environment",
                path.display()
            ),
            FileProblem::Syntax {
                path,
                line,
                column,
                reason,
            } => write!(
                f,
                "{} does not parse at line {line}, column {column} ({reason}); running on the defaults and the environment, and the file is left as it is until you fix that line",
                path.display()
            ),
            FileProblem::UnknownKey { path, line, key } => write!(
                f,
                "{} line {line}: unknown setting `{key}` is ignored; the settings are: {}",
                path.display(),
                keys::names()
            ),
            FileProblem::Secret {
                path,
                line,
                key,
                variable,
            } => write!(
                f,
                "{} line {line}: `{key}` is a secret and is not read from the settings file; set {variable} in the environment instead",
                path.display()
            ),
            FileProblem::Invalid {
                path,
                line,
                key,
                value,
                allowed,
                default,
            } => write!(
                f,
                "{} line {line}: {key} = {value} is refused (allowed: {allowed}); using the default, {default}",
                path.display()
            ),
        }
    }
}

impl FileProblem {
    /// True when nothing in the file could be used, and so nothing may be written to it.
    pub fn is_broken_file(&self) -> bool {
        matches!(
            self,
            FileProblem::Unreadable { .. } | FileProblem::Syntax { .. }
        )
    }
}

/// What a settings file holds: its valid values and its problems.
#[derive(Clone, Debug, Default)]
pub struct FileReading {
    pub path: PathBuf,
    pub exists: bool,
    pub values: Vec<FileValue>,
    pub problems: Vec<FileProblem>,
}

impl FileReading {
    /// Reads `path`; a missing file is an empty one.
    pub fn read(path: &Path) -> FileReading {
        match std::fs::read_to_string(path) {
            Ok(text) => FileReading::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileReading {
                path: path.to_path_buf(),
                ..FileReading::default()
            },
            Err(e) => FileReading {
                path: path.to_path_buf(),
                exists: true,
                problems: vec![FileProblem::Unreadable {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                }],
                ..FileReading::default()
            },
        }
    }

    /// Parses the text of `path`, checking each key and value.
    pub fn parse(path: &Path, text: &str) -> FileReading {
        let mut reading = FileReading {
            path: path.to_path_buf(),
            exists: true,
            ..FileReading::default()
        };
        let doc = match Document::parse(text) {
            Ok(doc) => doc,
            Err(e) => {
                let (line, column) = position(text, e.span().map_or(0, |s| s.start));
                reading.problems.push(FileProblem::Syntax {
                    path: path.to_path_buf(),
                    line,
                    column,
                    reason: e.message().trim().replace('\n', " "),
                });
                return reading;
            }
        };
        for (name, item) in doc.as_table().iter() {
            let line = doc
                .as_table()
                .key(name)
                .and_then(|k| k.span())
                .map_or(0, |s| position(text, s.start).0);
            let path = path.to_path_buf();
            if let Some((key, variable)) = SECRETS.iter().find(|(s, _)| *s == name) {
                let key = key.to_string();
                reading.problems.push(FileProblem::Secret {
                    path,
                    line,
                    key,
                    variable,
                });
                continue;
            }
            let Some(key) = keys::KEYS.iter().find(|k| k.name == name) else {
                let key = name.to_string();
                reading
                    .problems
                    .push(FileProblem::UnknownKey { path, line, key });
                continue;
            };
            let raw = item.as_value().map(text_of);
            match raw.as_deref().and_then(|r| key.kind.normalize(r)) {
                Some(value) => reading.values.push(FileValue { key, value, line }),
                None => reading.problems.push(FileProblem::Invalid {
                    path,
                    line,
                    key: key.name,
                    value: item.to_string().trim().to_string(),
                    allowed: key.kind.allowed(),
                    default: key.default,
                }),
            }
        }
        reading
    }

    /// The file's valid value for `key`, if it has one.
    pub fn value(&self, key: &Key) -> Option<&FileValue> {
        self.values.iter().find(|v| v.key.name == key.name)
    }

    /// The problem that makes the whole file unusable, if there is one.
    pub fn broken(&self) -> Option<&FileProblem> {
        self.problems.iter().find(|p| p.is_broken_file())
    }
}

/// A TOML value as text `Kind::normalize` can check; arrays and tables come out as their TOML
/// text, which no kind accepts.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.value().clone(),
        Value::Integer(i) => i.value().to_string(),
        Value::Boolean(b) => b.value().to_string(),
        other => other.to_string(),
    }
}

/// Line and column (both from 1) of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
    (line, column)
}

/// Checks `value` for the key `name` and writes it to the settings file at `path`; returns the
/// key and the value as written. Nothing is written when the value or the file is wrong.
pub fn write_setting(
    path: &Path,
    name: &str,
    value: &str,
) -> Result<(&'static Key, String), SettingsError> {
    let key = keys::known_key(name)?;
    let canonical = key
        .kind
        .normalize(value)
        .ok_or_else(|| SettingsError::OutOfRange {
            key: key.name,
            value: value.to_string(),
            allowed: key.kind.allowed(),
        })?;
    write(path, key, Some(&canonical))?;
    Ok((key, canonical))
}

/// Takes the key `name` out of the settings file at `path`, so its default applies again.
pub fn remove_setting(path: &Path, name: &str) -> Result<&'static Key, SettingsError> {
    let key = keys::known_key(name)?;
    write(path, key, None)?;
    Ok(key)
}

/// Sets `key` to `canonical` (or removes it with `None`), keeping every other line, comment
/// and the comment after the old value. Refuses a file that does not parse, naming its line.
pub fn write(path: &Path, key: &Key, canonical: Option<&str>) -> Result<(), SettingsError> {
    let failed = |reason: String| SettingsError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let lock = PathBuf::from(format!("{}.lock", path.display()));
    let _lock = FileLock::acquire(&lock).map_err(|e| failed(e.to_string()))?;
    let text = match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => HEADER.to_string(),
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HEADER.to_string(),
        Err(e) => return Err(failed(e.to_string())),
    };
    let mut doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        let (line, column) = position(&text, e.span().map_or(0, |s| s.start));
        SettingsError::BrokenFile {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().trim().replace('\n', " "),
        }
    })?;
    match canonical {
        Some(canonical) => {
            // toml_edit keeps the comments of a file without keys after its last key; they
            // belong above the first one.
            let comments_only = doc.as_table().is_empty();
            let mut new = key.kind.toml_value(canonical);
            if let Some(old) = doc.get(key.name).and_then(Item::as_value) {
                *new.decor_mut() = old.decor().clone();
            }
            doc[key.name] = Item::Value(new);
            if comments_only {
                let comments = doc.trailing().as_str().unwrap_or_default().to_string();
                doc.set_trailing("");
                if let Some(mut k) = doc.as_table_mut().key_mut(key.name) {
                    k.leaf_decor_mut().set_prefix(comments);
                }
            }
        }
        None => remove_keeping_comments(&mut doc, key.name),
    }
    write_atomic(path, doc.to_string().as_bytes()).map_err(|e| failed(e.to_string()))
}

/// Removes `name` but not the comment lines above it: they may be the file's own header, and
/// the user wrote them. They go to the next key, or to the end of the file.
fn remove_keeping_comments(doc: &mut DocumentMut, name: &str) {
    let prefix = |doc: &DocumentMut, key: &str| -> String {
        let decor = doc.as_table().key(key).map(|k| k.leaf_decor().clone());
        let raw = decor
            .as_ref()
            .and_then(|d| d.prefix())
            .and_then(|p| p.as_str());
        raw.unwrap_or_default().to_string()
    };
    let comments = prefix(doc, name);
    let names: Vec<String> = doc.as_table().iter().map(|(k, _)| k.to_string()).collect();
    let next = names
        .iter()
        .skip_while(|k| k.as_str() != name)
        .nth(1)
        .filter(|k| doc.get(k).is_some_and(Item::is_value));
    doc.remove(name);
    if comments.trim().is_empty() {
        return;
    }
    match next {
        Some(next) => {
            let joined = comments + &prefix(doc, next);
            if let Some(mut k) = doc.as_table_mut().key_mut(next) {
                k.leaf_decor_mut().set_prefix(joined);
            }
        }
        None => {
            let trailing = doc.trailing().as_str().unwrap_or_default().to_string();
            doc.set_trailing(comments + &trailing);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        let reading = FileReading::parse(Path::new("/c/settings.toml"), text);
        reading.problems.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn a_file_that_does_not_parse_names_its_line_and_yields_nothing() {
        let reading = FileReading::parse(
            Path::new("/c/settings.toml"),
            "port = 8788\n\nstrategy = \"hybrid\n",
        );
        assert!(reading.values.is_empty());
        let problem = reading.broken().expect("broken").to_string();
        assert!(problem.contains("/c/settings.toml"), "{problem}");
        assert!(problem.contains("line 3"), "{problem}");
    }

    #[test]
    fn unknown_secret_and_out_of_range_keys_are_named_with_their_line() {
        let found = problems("# mine\nprot = 1\ntoken = \"x\"\nport = 0\nstrategy = \"fast\"\n");
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found[0].contains("line 2") && found[0].contains("`prot`"));
        assert!(
            found[0].contains("port, "),
            "names the known keys: {}",
            found[0]
        );
        assert!(found[1].contains("CODEX_PROXY_TOKEN"), "{}", found[1]);
        assert!(found[2].contains("line 4") && found[2].contains("1 to 65535"));
        assert!(
            found[3].contains("sticky, round-robin or hybrid"),
            "{}",
            found[3]
        );
    }

    #[test]
    fn values_are_read_in_canonical_form() {
        let reading = FileReading::parse(
            Path::new("s.toml"),
            "port = 8788\nwebsockets = 0\nstrategy = \"round_robin\"\nfirst_byte_timeout_ms = \"5000\"\n",
        );
        let got: Vec<(&str, &str)> = reading
            .values
            .iter()
            .map(|v| (v.key.name, v.value.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("port", "8788"),
                ("websockets", "false"),
                ("strategy", "round-robin"),
                ("first_byte_timeout_ms", "5000")
            ]
        );
        assert!(reading.problems.is_empty());
    }

    #[test]
    fn writing_keeps_comments_order_and_the_comment_after_a_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.toml");
        let original =
            "# my router\nstrategy = \"hybrid\" # best for me\n\n# the port\nport = 8788\n";
        std::fs::write(&path, original).unwrap();
        let port = keys::find("port").unwrap();
        let strategy = keys::find("strategy").unwrap();
        write(&path, strategy, Some("sticky")).unwrap();
        write(&path, port, Some("9000")).unwrap();
        let after = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            after,
            "# my router\nstrategy = \"sticky\" # best for me\n\n# the port\nport = 9000\n"
        );
        write(&path, port, None).unwrap();
        let after = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            after,
            "# my router\nstrategy = \"sticky\" # best for me\n\n# the port\n"
        );
        write(&path, strategy, None).unwrap();
        let after = std::fs::read_to_string(&path).unwrap();
        assert_eq!(after, "# my router\n\n# the port\n");
    }

    #[test]
    fn setting_refuses_unknown_keys_secrets_and_values_out_of_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.toml");
        let err = write_setting(&path, "port", "0").unwrap_err();
        assert!(err.to_string().contains("1 to 65535"), "{err}");
        let err = write_setting(&path, "strategy", "fast").unwrap_err();
        assert!(
            err.to_string().contains("sticky, round-robin or hybrid"),
            "{err}"
        );
        let err = write_setting(&path, "prot", "1").unwrap_err();
        assert!(err.to_string().contains("host, port"), "{err}");
        let err = write_setting(&path, "token", "secret").unwrap_err();
        assert!(err.to_string().contains("CODEX_PROXY_TOKEN"), "{err}");
        assert!(!path.exists(), "nothing was written");
        let (key, value) = write_setting(&path, "CODEX_PROXY_STRATEGY", "Round_Robin").unwrap();
        assert_eq!((key.name, value.as_str()), ("strategy", "round-robin"));
    }

    #[test]
    fn a_broken_file_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.toml");
        let broken = "port = 8788\nstrategy = \n";
        std::fs::write(&path, broken).unwrap();
        let err = write(&path, keys::find("port").unwrap(), Some("9000")).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), broken);
    }

    #[test]
    fn a_new_file_starts_with_a_header_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new").join("settings.toml");
        write(&path, keys::find("websockets").unwrap(), Some("false")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# Codex App Account Router settings."),
            "{text}"
        );
        assert!(text.ends_with("websockets = false\n"), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
