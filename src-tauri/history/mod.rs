//! The usage history: every usage reading the router gets and every request's outcome, kept in
//! a SQLite file beside the accounts file (`history.sqlite`, 0600) for `KEEP_DAYS` days, for
//! the charts, the alerts and `cma history`. It never holds a token: the tables have no column
//! a token could go in. Writes happen on a thread of their own (`recorder`), never on the
//! request path.

mod days;
mod recorder;
mod time;

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags};

pub use days::Day;
pub use recorder::Recorder;

/// The file's name, in the accounts file's folder.
pub const FILE_NAME: &str = "history.sqlite";
/// The history of the accounts file in `paths`: beside it.
pub fn file(paths: &crate::paths::Paths) -> PathBuf {
    paths.accounts_file.with_file_name(FILE_NAME)
}

/// Rows older than this are deleted (at start and once a day).
pub const KEEP_DAYS: i64 = 90;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;
/// `PRAGMA user_version` of the tables below; a file with a higher one is from a newer release.
/// Version 1 had no `account_key`: its rows are told apart by the account's name alone.
const SCHEMA_VERSION: i64 = 2;

/// Every row names its account twice: `account_key` (the pool's key, the same however the
/// account is labelled, and different for two workspaces of one email) to tell accounts apart,
/// and `account` (its name as shown then) to show.
const SCHEMA: &str = "
CREATE TABLE usage (
    at INTEGER NOT NULL,
    account TEXT NOT NULL,
    window TEXT NOT NULL,
    used_percent REAL NOT NULL,
    window_minutes INTEGER,
    resets_at INTEGER,
    account_key TEXT
);
CREATE INDEX usage_at ON usage (at);
CREATE TABLE requests (
    at INTEGER NOT NULL,
    account TEXT,
    model TEXT NOT NULL,
    status INTEGER NOT NULL,
    first_byte_ms REAL NOT NULL,
    account_key TEXT
);
CREATE INDEX requests_at ON requests (at);
CREATE TABLE tokens (
    at INTEGER NOT NULL,
    account TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    account_key TEXT
);
CREATE INDEX tokens_at ON tokens (at);
";

/// From version 1: the key column, empty in the rows already there.
const MIGRATE_FROM_1: &str = "
ALTER TABLE usage ADD COLUMN account_key TEXT;
ALTER TABLE requests ADD COLUMN account_key TEXT;
ALTER TABLE tokens ADD COLUMN account_key TEXT;
";

/// Version 1's tables as version 2 reads them, for a read-only connection.
const READ_FIRST_RELEASE: &str = "
CREATE TEMP VIEW usage AS SELECT *, NULL AS account_key FROM main.usage;
CREATE TEMP VIEW requests AS SELECT *, NULL AS account_key FROM main.requests;
CREATE TEMP VIEW tokens AS SELECT *, NULL AS account_key FROM main.tokens;
";

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot open the usage history {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot create the usage history {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot move the unreadable usage history {path} aside: {source}")]
    MoveAside {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the usage history: {0}")]
    Write(rusqlite::Error),
    #[error("cannot read the usage history: {0}")]
    Read(rusqlite::Error),
}

/// What opening the file found.
#[derive(Debug, PartialEq)]
pub enum Opened {
    /// A new, empty history (none was there).
    Created,
    /// The history that was there.
    Existing,
    /// The file there could not be used (corrupt, or written by a newer release): it was moved
    /// to `to`, untouched, and a new history started.
    MovedAside { reason: String, to: PathBuf },
}

/// One usage window as read at `at` (epoch ms).
#[derive(Clone, Debug, PartialEq)]
pub struct UsageReading {
    pub at: i64,
    pub account: String,
    /// The pool's key of the account.
    pub key: String,
    /// `primary` (5 hours) or `secondary` (weekly).
    pub window: &'static str,
    pub used_percent: f64,
    pub window_minutes: Option<i64>,
    /// Epoch seconds.
    pub resets_at: Option<i64>,
}

/// One request as its first byte went to Codex (or its error did).
#[derive(Clone, Debug, PartialEq)]
pub struct RequestOutcome {
    pub at: i64,
    /// The account's display name; `None` when no account served.
    pub account: Option<String>,
    /// The pool's key of that account.
    pub key: Option<String>,
    pub model: String,
    pub status: u16,
    pub first_byte_ms: f64,
}

/// The token counts of one `response.completed`, as the stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tokens {
    pub at: i64,
    pub account: String,
    /// The pool's key of the account.
    pub key: String,
    pub input: i64,
    pub output: i64,
    pub cached: i64,
}

/// One thing to record.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    Usage(UsageReading),
    Request(RequestOutcome),
    Tokens(Tokens),
}

/// One usage reading as the charts draw it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    pub at: i64,
    pub account: String,
    /// The pool's key; `None` in rows written before keys were kept.
    pub key: Option<String>,
    pub window: String,
    pub used_percent: f64,
    /// Epoch seconds.
    pub resets_at: Option<i64>,
}

/// An open history file.
pub struct History {
    connection: Connection,
    path: PathBuf,
}

impl History {
    /// Opens the history at `path`, creating it (0600) when missing. A file SQLite cannot read
    /// or from a newer release is moved aside with a timestamp and a new one started, so the
    /// router never stops over its history.
    pub fn open(path: &Path, now_ms: i64) -> Result<(History, Opened), HistoryError> {
        if !path.exists() {
            return Ok((History::create(path)?, Opened::Created));
        }
        let reason = match History::check(path) {
            Ok(history) => return Ok((history, Opened::Existing)),
            Err(reason) => reason,
        };
        let to = aside_path(path, &reason, now_ms);
        std::fs::rename(path, &to).map_err(|source| HistoryError::MoveAside {
            path: path.to_path_buf(),
            source,
        })?;
        // A journal left beside it belongs to it.
        let journal = with_suffix(path, "-journal");
        if journal.exists() {
            let _ = std::fs::rename(&journal, with_suffix(&to, "-journal"));
        }
        let history = History::create(path)?;
        Ok((history, Opened::MovedAside { reason, to }))
    }

    /// Opens only to read (`cma history`): `None` when there is no history yet.
    pub fn open_read_only(path: &Path) -> Result<Option<History>, HistoryError> {
        if !path.exists() {
            return Ok(None);
        }
        let connection = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|source| HistoryError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let _ = connection.busy_timeout(BUSY_WAIT);
        // A first-release file the router has not brought up to date yet (`cma history` run
        // before the new router started): read through views that give every row an empty
        // key. Temporary views shadow the tables and write nothing to the file.
        let version: i64 = connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(HistoryError::Read)?;
        if version == 1 {
            connection
                .execute_batch(READ_FIRST_RELEASE)
                .map_err(HistoryError::Read)?;
        }
        Ok(Some(History {
            connection,
            path: path.to_path_buf(),
        }))
    }

    /// The existing file, or why it cannot be used.
    fn check(path: &Path) -> Result<History, String> {
        let connection =
            Connection::open(path).map_err(|e| format!("it cannot be opened ({e})"))?;
        let ok: String = connection
            .query_row("PRAGMA quick_check", [], |row| row.get(0))
            .map_err(|e| format!("it is not a readable database ({e})"))?;
        if ok != "ok" {
            return Err(format!("it is damaged ({ok})"));
        }
        let version: i64 = connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(|e| format!("its version cannot be read ({e})"))?;
        if version > SCHEMA_VERSION {
            return Err(format!(
                "a newer release wrote it (version {version}; this one reads {SCHEMA_VERSION})"
            ));
        }
        if version == 1 {
            connection
                .execute_batch(&format!(
                    "BEGIN; {MIGRATE_FROM_1} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                ))
                .map_err(|e| format!("it could not be brought up to date ({e})"))?;
        } else if version < SCHEMA_VERSION {
            return Err(format!(
                "it has no tables of this release (version {version})"
            ));
        }
        tune(&connection);
        Ok(History {
            connection,
            path: path.to_path_buf(),
        })
    }

    fn create(path: &Path) -> Result<History, HistoryError> {
        // The file is made 0600 before SQLite writes anything into it.
        create_private(path).map_err(|source| HistoryError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        let open_error = |source| HistoryError::Open {
            path: path.to_path_buf(),
            source,
        };
        let connection = Connection::open(path).map_err(open_error)?;
        connection
            .execute_batch(&format!(
                "BEGIN; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(open_error)?;
        tune(&connection);
        Ok(History {
            connection,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `entries` in one transaction.
    pub fn record(&mut self, entries: &[Entry]) -> Result<(), HistoryError> {
        let tx = self.connection.transaction().map_err(HistoryError::Write)?;
        {
            let mut usage = tx
                .prepare_cached(
                    "INSERT INTO usage (at, account, window, used_percent, window_minutes, \
                     resets_at, account_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(HistoryError::Write)?;
            let mut requests = tx
                .prepare_cached(
                    "INSERT INTO requests (at, account, model, status, first_byte_ms, \
                     account_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(HistoryError::Write)?;
            let mut tokens = tx
                .prepare_cached(
                    "INSERT INTO tokens (at, account, input_tokens, output_tokens, \
                     cached_tokens, account_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(HistoryError::Write)?;
            for entry in entries {
                match entry {
                    Entry::Usage(u) => usage.execute(params![
                        u.at,
                        u.account,
                        u.window,
                        u.used_percent,
                        u.window_minutes,
                        u.resets_at,
                        u.key
                    ]),
                    Entry::Request(r) => requests.execute(params![
                        r.at,
                        r.account,
                        r.model,
                        r.status,
                        r.first_byte_ms,
                        r.key
                    ]),
                    Entry::Tokens(t) => {
                        tokens.execute(params![t.at, t.account, t.input, t.output, t.cached, t.key])
                    }
                }
                .map_err(HistoryError::Write)?;
            }
        }
        tx.commit().map_err(HistoryError::Write)
    }

    /// Gives rows written before keys were kept the key of the account that bears their name
    /// now, when only one of `accounts` (`(key, display name)`) does; returns how many rows.
    pub fn adopt_names(&mut self, accounts: &[(String, String)]) -> Result<usize, HistoryError> {
        let tx = self.connection.transaction().map_err(HistoryError::Write)?;
        let mut adopted = 0;
        for (key, name) in accounts {
            if accounts.iter().filter(|(_, n)| n == name).count() > 1 {
                continue;
            }
            for table in ["usage", "requests", "tokens"] {
                adopted += tx
                    .execute(
                        &format!(
                            "UPDATE {table} SET account_key = ?1 \
                             WHERE account_key IS NULL AND account = ?2"
                        ),
                        params![key, name],
                    )
                    .map_err(HistoryError::Write)?;
            }
        }
        tx.commit().map_err(HistoryError::Write)?;
        Ok(adopted)
    }

    /// Deletes what is older than `KEEP_DAYS`; returns how many rows went.
    pub fn prune(&mut self, now_ms: i64) -> Result<usize, HistoryError> {
        let before = now_ms - KEEP_DAYS * DAY_MS;
        let mut gone = 0;
        for table in ["usage", "requests", "tokens"] {
            gone += self
                .connection
                .execute(&format!("DELETE FROM {table} WHERE at < ?1"), [before])
                .map_err(HistoryError::Write)?;
        }
        Ok(gone)
    }

    /// The last `limit` requests, newest first.
    pub fn recent_requests(&self, limit: usize) -> Result<Vec<RequestOutcome>, HistoryError> {
        let mut query = self
            .connection
            .prepare(
                "SELECT at, account, model, status, first_byte_ms, account_key FROM requests \
                 ORDER BY at DESC, rowid DESC LIMIT ?1",
            )
            .map_err(HistoryError::Read)?;
        let rows = query
            .query_map([limit as i64], |row| {
                Ok(RequestOutcome {
                    at: row.get(0)?,
                    account: row.get(1)?,
                    model: row.get(2)?,
                    status: row.get(3)?,
                    first_byte_ms: row.get(4)?,
                    key: row.get(5)?,
                })
            })
            .map_err(HistoryError::Read)?;
        rows.collect::<Result<_, _>>().map_err(HistoryError::Read)
    }

    /// Every usage reading since `since_ms`, oldest first.
    pub fn points(&self, since_ms: i64) -> Result<Vec<Point>, HistoryError> {
        let mut query = self
            .connection
            .prepare(
                "SELECT at, account, window, used_percent, resets_at, account_key FROM usage \
                 WHERE at >= ?1 ORDER BY at, rowid",
            )
            .map_err(HistoryError::Read)?;
        let rows = query
            .query_map([since_ms], |row| {
                Ok(Point {
                    at: row.get(0)?,
                    account: row.get(1)?,
                    window: row.get(2)?,
                    used_percent: row.get(3)?,
                    resets_at: row.get(4)?,
                    key: row.get(5)?,
                })
            })
            .map_err(HistoryError::Read)?;
        rows.collect::<Result<_, _>>().map_err(HistoryError::Read)
    }
}

/// The writer's connection: one sync per transaction fewer than SQLite's default (a crash may
/// lose the last second of history, never the file), and a page cache of 256 KiB instead of
/// 2 MB, since it only appends and prunes (the default grew the router's memory with the
/// file). A reader (`cma history`, the charts) or a second router waits out a write in
/// progress instead of failing with "database is locked".
fn tune(connection: &Connection) {
    let _ = connection.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA cache_size = -256");
    let _ = connection.busy_timeout(BUSY_WAIT);
}

/// How long a statement waits for another connection's write to finish.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Where an unusable file goes: `history.sqlite.corrupt-20261204-223000` (or `.newer-`).
fn aside_path(path: &Path, reason: &str, now_ms: i64) -> PathBuf {
    let kind = if reason.starts_with("a newer release") {
        "newer"
    } else {
        "corrupt"
    };
    let stamp = time::stamp(now_ms);
    let mut to = with_suffix(path, &format!(".{kind}-{stamp}"));
    let mut n = 1;
    while to.exists() {
        n += 1;
        to = with_suffix(path, &format!(".{kind}-{stamp}-{n}"));
    }
    to
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

fn create_private(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop)
}

#[cfg(test)]
mod tests;
