//! `cma sync-accounts`: accounts from other tools' files (the multi-auth version-1 file,
//! version-3 pools, Codex's own `auth.json`). Everything is read and checked before anything
//! is saved, and an account already here keeps its own tokens: an older copy of a rotating
//! refresh token from another file could only burn it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::accounts::now_ms;
use crate::oauth::claims;
use crate::store::{AccountRecord, Store, StoredSecret, TokenSet};

use super::AppError;

/// The file formats `sync-accounts` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportSource {
    MultiAuthV1,
    PoolV3,
    CodexAuth,
}

#[derive(Debug, Default)]
pub struct ImportReport {
    pub files: Vec<PathBuf>,
    pub added: Vec<String>,
    /// Accounts that needed a new login and got one from the file.
    pub renewed: Vec<String>,
    /// Accounts already here, left as they were.
    pub unchanged: Vec<String>,
    pub warnings: Vec<String>,
}

/// Reads one account entry of a known format.
type ReadAccount = fn(&Value) -> Result<Imported, String>;

struct Imported {
    record: AccountRecord,
    tokens: TokenSet,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}; nothing was imported")]
pub struct ImportError {
    path: PathBuf,
    message: String,
}

/// Where other tools keep their accounts, relative to the home folder and `CODEX_HOME`.
fn default_sources(home: &Path, codex_home: &Path) -> Vec<PathBuf> {
    vec![
        home.join(".config/opencode/openai-accounts.json"),
        home.join(".codex/multi-auth/openai-codex-accounts.json"),
        home.join(".config/opencode/openai-codex-accounts.json"),
        home.join(".opencode/oc-codex-multi-auth-accounts.json"),
        codex_home.join("auth.json"),
    ]
}

/// Imports from `from`, or from every usual place that exists. Blocking (keychain).
pub fn import_accounts(
    store: &Store,
    from: Option<&Path>,
    home: &Path,
    codex_home: &Path,
) -> Result<ImportReport, AppError> {
    let sources: Vec<PathBuf> = match from {
        Some(path) => vec![path.to_path_buf()],
        None => default_sources(home, codex_home)
            .into_iter()
            .filter(|p| p.exists() && p.as_path() != store.accounts_path())
            .collect(),
    };
    let mut report = ImportReport::default();
    let mut found = Vec::new();
    for path in &sources {
        let (source, accounts) = read_source(path).map_err(|e| AppError::Message(e.to_string()))?;
        if source == ImportSource::CodexAuth {
            report.warnings.push(format!(
                "{} is Codex's own login: Codex and the router now hold the same rotating refresh token, and whichever refreshes first burns it for the other. Run `codex login` once more so that Codex gets a sign-in of its own (do not run `codex logout`: it revokes the token the router now uses), or add the account with `cma login` instead of importing it.",
                path.display()
            ));
        }
        report.files.push(path.clone());
        found.extend(accounts);
    }
    let existing = store.load_accounts()?;
    let mut seen = std::collections::HashSet::new();
    for imported in found {
        let key = imported.record.key();
        let name = imported.record.display_name();
        let current = existing.accounts.iter().find(|r| r.key() == key);
        // The same account in two files: the first copy wins.
        match current {
            _ if !seen.insert(key.clone()) => {}
            Some(r) if r.needs_login.is_none() => report.unchanged.push(name),
            _ => {
                let expires = imported.record.expires;
                let renewing = current.is_some();
                store.save_tokens(
                    &key,
                    &imported.tokens,
                    expires,
                    Some(imported.record),
                    |r| {
                        r.needs_login = None;
                    },
                )?;
                if renewing {
                    report.renewed.push(name);
                } else {
                    report.added.push(name);
                }
            }
        }
    }
    Ok(report)
}

fn read_source(path: &Path) -> Result<(ImportSource, Vec<Imported>), ImportError> {
    let fail = |message: String| ImportError {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot be read ({e})")))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        fail(format!(
            "is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    if value.get("tokens").is_some() {
        return Ok((
            ImportSource::CodexAuth,
            vec![codex_auth(&value).map_err(fail)?],
        ));
    }
    let accounts = value
        .get("accounts")
        .and_then(Value::as_array)
        .ok_or_else(|| fail("is not a format cma knows (multi-auth version 1, a version-3 pool, or Codex's auth.json): no `accounts` list and no `tokens`".to_string()))?;
    let (source, read): (ImportSource, ReadAccount) =
        match value.get("version").and_then(Value::as_u64) {
            Some(1) => (ImportSource::MultiAuthV1, multi_auth_v1),
            Some(3) => (ImportSource::PoolV3, pool_v3),
            Some(other) => {
                return Err(fail(format!(
                    "has version {other}; cma reads versions 1 and 3"
                )))
            }
            None => {
                return Err(fail(
                    "has no `version`; cma reads versions 1 and 3".to_string(),
                ))
            }
        };
    let imported = accounts
        .iter()
        .enumerate()
        .map(|(i, a)| read(a).map_err(|m| fail(format!("accounts[{i}]: {m}"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((source, imported))
}

fn text(v: &Value, field: &str) -> Option<String> {
    v.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Fills ids, email and plan from the tokens when the file lacks them.
fn complete(
    mut record: AccountRecord,
    tokens: TokenSet,
    id_token: Option<&str>,
) -> Result<Imported, String> {
    let from = |jwt: Option<&str>| jwt.and_then(claims::decode).unwrap_or_default();
    let id = from(id_token);
    let access = from(tokens.access.as_ref().map(|t| t.0.as_str()));
    record.account_id = record.account_id.or(id.account_id).or(access.account_id);
    record.user_id = record.user_id.or(id.user_id).or(access.user_id);
    record.email = record.email.or(id.email).or(access.email);
    record.plan_type = record.plan_type.or(access.plan).or(id.plan);
    record.expires = record.expires.or(access.expires_at.map(|s| s * 1000));
    if record.account_id.is_none() {
        return Err("`accountId` is missing and the tokens name no account".to_string());
    }
    if tokens.refresh.is_none() {
        return Err("the refresh token is missing".to_string());
    }
    if record.added_at == 0 {
        record.added_at = now_ms();
    }
    Ok(Imported { record, tokens })
}

fn multi_auth_v1(a: &Value) -> Result<Imported, String> {
    let refresh = a.get("parts").and_then(|p| text(p, "refreshToken"));
    if refresh.is_none() {
        return Err("`parts.refreshToken` is missing".to_string());
    }
    let record = AccountRecord {
        email: text(a, "email"),
        user_id: text(a, "userId"),
        account_id: text(a, "accountId"),
        plan_type: text(a, "planType"),
        added_at: a.get("addedAt").and_then(Value::as_i64).unwrap_or(0),
        expires: a.get("expires").and_then(Value::as_i64),
        enabled: a.get("enabled").and_then(Value::as_bool).unwrap_or(true),
        ..Default::default()
    };
    let tokens = TokenSet {
        access: text(a, "access").map(StoredSecret),
        refresh: refresh.map(StoredSecret),
        id_token: None,
    };
    complete(record, tokens, None)
}

fn pool_v3(a: &Value) -> Result<Imported, String> {
    let refresh = text(a, "refreshToken").ok_or("`refreshToken` is missing")?;
    let record = AccountRecord {
        email: text(a, "email"),
        account_id: text(a, "accountId"),
        plan_type: text(a, "plan"),
        label: text(a, "accountLabel"),
        added_at: a.get("addedAt").and_then(Value::as_i64).unwrap_or(0),
        expires: a.get("expiresAt").and_then(Value::as_i64),
        enabled: a.get("enabled").and_then(Value::as_bool).unwrap_or(true),
        ..Default::default()
    };
    let tokens = TokenSet {
        access: text(a, "accessToken").map(StoredSecret),
        refresh: Some(StoredSecret(refresh)),
        id_token: None,
    };
    complete(record, tokens, None)
}

fn codex_auth(value: &Value) -> Result<Imported, String> {
    let t = value
        .get("tokens")
        .filter(|t| t.is_object())
        .ok_or("`tokens` is not an object")?;
    let refresh = text(t, "refresh_token")
        .ok_or("`tokens.refresh_token` is missing (an API-key login cannot be imported)")?;
    let id_token = text(t, "id_token");
    let record = AccountRecord {
        account_id: text(t, "account_id"),
        enabled: true,
        ..Default::default()
    };
    let tokens = TokenSet {
        access: text(t, "access_token").map(StoredSecret),
        refresh: Some(StoredSecret(refresh)),
        id_token: id_token.clone().map(StoredSecret),
    };
    complete(record, tokens, id_token.as_deref())
}
