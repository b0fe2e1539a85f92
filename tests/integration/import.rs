//! `cma sync-accounts`: the multi-auth version-1 file, version-3 pools and Codex's `auth.json`,
//! from `--from` or the usual places, deduplicated, idempotent, never replacing newer tokens,
//! and all-or-nothing on bad input.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::keychain::{has, run};
use crate::support::jwt::{make_jwt, Subject};

/// A temp HOME, CODEX_HOME and router accounts file, in file token mode.
struct Env {
    dir: tempfile::TempDir,
    vars: HashMap<String, String>,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let at = |p: &str| dir.path().join(p).display().to_string();
        let vars = HashMap::from([
            ("HOME".to_string(), at("home")),
            ("CODEX_HOME".to_string(), at("codex-home")),
            (
                "CODEX_PROXY_ACCOUNTS_FILE".to_string(),
                at("router/openai-accounts.json"),
            ),
            (
                "CODEX_PROXY_BINDINGS_FILE".to_string(),
                at("router/session-bindings.json"),
            ),
            ("CODEX_PROXY_TOKEN_STORE".to_string(), "file".to_string()),
        ]);
        Env { dir, vars }
    }

    /// Writes `value` at `relative` (under the temp dir) and returns its path.
    fn put(&self, relative: &str, value: &Value) -> PathBuf {
        let path = self.dir.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
        path
    }

    fn sync(&self, from: Option<&Path>) -> (bool, String, String) {
        let from = from.map(|p| p.display().to_string());
        let mut args = vec!["sync-accounts"];
        args.extend(from.iter().flat_map(|p| ["--from", p.as_str()]));
        run(&self.vars, &args)
    }

    fn accounts_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.vars["CODEX_PROXY_ACCOUNTS_FILE"]).unwrap_or_default()
    }

    fn accounts(&self) -> Vec<Value> {
        let file: Value = serde_json::from_slice(&self.accounts_bytes()).expect("accounts file");
        file["accounts"].as_array().unwrap().clone()
    }

    fn ids(&self) -> Vec<Value> {
        self.accounts()
            .iter()
            .map(|a| a["accountId"].clone())
            .collect()
    }

    /// The imported account with this account id.
    fn account(&self, id: &str) -> Value {
        let found = self.accounts().into_iter().find(|a| a["accountId"] == id);
        found.unwrap_or_else(|| panic!("{id} was not imported"))
    }

    fn edit_account(&self, id: &str, change: impl FnOnce(&mut Value)) {
        let path = &self.vars["CODEX_PROXY_ACCOUNTS_FILE"];
        let mut file: Value = serde_json::from_slice(&self.accounts_bytes()).unwrap();
        let accounts = file["accounts"].as_array_mut().unwrap();
        change(accounts.iter_mut().find(|a| a["accountId"] == id).unwrap());
        std::fs::write(path, file.to_string()).unwrap();
    }
}

/// Access and id tokens for `email` in workspace `account` (user `user-<account>`).
fn jwts(email: &str, account: &str, plan: &str) -> (String, String) {
    let user_id = &format!("user-{account}");
    let (account_id, iss) = (account, "https://auth.openai.com");
    let subject = Subject {
        email,
        account_id,
        user_id,
        plan,
    };
    let now = std::time::UNIX_EPOCH.elapsed().unwrap().as_secs() as i64;
    let access = subject.access_claims(iss, now, now + 3600, account);
    let id = subject.id_claims(iss, now, now + 3600, account);
    (make_jwt(&access), make_jwt(&id))
}

/// A multi-auth v1 account holding only its tokens: everything else comes from the JWT.
fn v1_bare(email: &str, account: &str, refresh: &str) -> Value {
    let (access, _) = jwts(email, account, "team");
    json!({"parts": {"refreshToken": refresh}, "access": access, "addedAt": 1, "rateLimitResets": {}})
}

fn v1(accounts: &[Value]) -> Value {
    json!({"version": 1, "accounts": accounts, "activeAccountIndex": 0})
}

fn v3(accounts: &[Value]) -> Value {
    json!({"version": 3, "accounts": accounts, "activeIndex": 0})
}

fn v3_account(email: &str, account: &str, refresh: &str) -> Value {
    let (access, _) = jwts(email, account, "pro");
    json!({"refreshToken": refresh, "accessToken": access, "addedAt": 1, "lastUsed": 1})
}

fn codex_auth(email: &str, account: &str, refresh: &str) -> Value {
    let (access, id) = jwts(email, account, "plus");
    json!({
        "auth_mode": "chatgpt", "OPENAI_API_KEY": null, "last_refresh": "2026-04-25T12:00:00Z",
        "tokens": {"id_token": id, "access_token": access, "refresh_token": refresh, "account_id": account}
    })
}

#[track_caller]
fn assert_identity(record: &Value, email: &str, account: &str, plan: &str) {
    let user = format!("user-{account}");
    let got = ["email", "accountId", "userId", "planType"].map(|k| &record[k]);
    assert_eq!(got, [email, account, user.as_str(), plan], "{record}");
}

#[test]
fn a_multi_auth_v1_file_is_imported_filling_what_it_lacks_from_the_jwt() {
    let env = Env::new();
    let (access, _) = jwts("a@example.com", "acct-a", "plus");
    let full = json!({
        "email": "a@example.com", "userId": "user-acct-a", "accountId": "acct-a",
        "planType": "plus", "addedAt": 5, "parts": {"refreshToken": "rt-a"}, "access": access,
        "expires": 1_900_000_000_000i64, "rateLimitResets": {}, "enabled": false
    });
    let file = env.put(
        "in/openai-accounts.json",
        &v1(&[full, v1_bare("d@example.com", "acct-d", "rt-d")]),
    );
    let (ok, stdout, stderr) = env.sync(Some(&file));
    assert!(ok, "{stderr}");
    has(&stdout, &format!("read {}", file.display()));
    has(&stdout, "added a@example.com");
    has(&stdout, "added d@example.com");
    let a = env.account("acct-a");
    assert_identity(&a, "a@example.com", "acct-a", "plus");
    assert_eq!(
        [&a["parts"]["refreshToken"], &a["access"]],
        ["rt-a", &access]
    );
    assert_eq!(a["enabled"], false);
    assert_eq!(a["expires"], 1_900_000_000_000i64);
    let d = env.account("acct-d");
    assert_identity(&d, "d@example.com", "acct-d", "team");
    assert_eq!(d["parts"]["refreshToken"], "rt-d");
    assert!(
        d["expires"].as_i64().unwrap() > 1_700_000_000_000,
        "expiry from the JWT: {d}"
    );
}

#[test]
fn a_version_3_pool_is_imported() {
    let env = Env::new();
    let mut b = v3_account("b@example.com", "acct-b", "rt-b");
    b["accountLabel"] = json!("work");
    b["accountId"] = json!("acct-b");
    let pool = v3(&[b, v3_account("c@example.com", "acct-c", "rt-c")]);
    let file = env.put("in/openai-codex-accounts.json", &pool);
    let (ok, stdout, stderr) = env.sync(Some(&file));
    assert!(ok, "{stderr}");
    has(&stdout, "added work");
    has(&stdout, "added c@example.com");
    let b = env.account("acct-b");
    assert_identity(&b, "b@example.com", "acct-b", "pro");
    assert_eq!([&b["label"], &b["parts"]["refreshToken"]], ["work", "rt-b"]);
    assert_eq!(b["access"], pool["accounts"][0]["accessToken"]);
    assert_identity(&env.account("acct-c"), "c@example.com", "acct-c", "pro");
}

#[test]
fn codex_auth_json_is_imported_with_a_warning_about_the_shared_refresh_token() {
    let env = Env::new();
    let file = env.put(
        "in/auth.json",
        &codex_auth("e@example.com", "acct-e", "rt-e"),
    );
    let (ok, stdout, stderr) = env.sync(Some(&file));
    assert!(ok, "{stderr}");
    has(&stdout, "added e@example.com");
    has(&stderr, "warning: ");
    has(&stderr, "same rotating refresh token");
    has(&stderr, "cma login");
    let e = env.account("acct-e");
    assert_identity(&e, "e@example.com", "acct-e", "plus");
    assert_eq!(e["parts"]["refreshToken"], "rt-e");
}

#[test]
fn reimporting_changes_nothing_and_never_replaces_newer_tokens_but_renews_a_dead_login() {
    let env = Env::new();
    let a = v1_bare("a@example.com", "acct-a", "rt-a-old");
    let file = env.put(
        "in/v1.json",
        &v1(&[a, v1_bare("b@example.com", "acct-b", "rt-b")]),
    );
    assert!(env.sync(Some(&file)).0);
    // The router has since rotated a@'s tokens: the file's older copy must not come back.
    env.edit_account("acct-a", |a| {
        a["parts"]["refreshToken"] = json!("rt-a-newer");
        a["access"] = json!("at-a-newer");
    });
    let before = env.accounts_bytes();
    for _ in 0..2 {
        let (ok, stdout, stderr) = env.sync(Some(&file));
        assert!(ok, "{stderr}");
        has(&stdout, "kept a@example.com (already here)");
        has(&stdout, "kept b@example.com (already here)");
        assert!(!stdout.contains("added"), "{stdout}");
        assert_eq!(env.accounts_bytes(), before, "a re-import changed the file");
    }
    env.edit_account("acct-a", |a| {
        a["needsLogin"] = json!({"code": "refresh_token_reused", "since": 1});
    });
    let (ok, stdout, stderr) = env.sync(Some(&file));
    assert!(ok, "{stderr}");
    has(&stdout, "renewed a@example.com");
    let a = env.account("acct-a");
    assert_eq!(a["parts"]["refreshToken"], "rt-a-old");
    assert!(a.get("needsLogin").is_none(), "{a}");
    assert_eq!(env.accounts().len(), 2);
}

#[test]
fn without_from_every_usual_place_is_read_and_an_account_found_twice_is_added_once() {
    let env = Env::new();
    let (ok, stdout, _) = env.sync(None);
    assert!(ok);
    has(&stdout, "no account files found");
    let a = v1_bare("a@example.com", "acct-a", "rt-a");
    let b = v1_bare("b@example.com", "acct-b", "rt-b");
    let places = [
        env.put("home/.config/opencode/openai-accounts.json", &v1(&[a, b])),
        env.put(
            "home/.codex/multi-auth/openai-codex-accounts.json",
            &v3(&[v3_account("b@example.com", "acct-b", "rt-b2")]),
        ),
        env.put(
            "home/.config/opencode/openai-codex-accounts.json",
            &v3(&[v3_account("c@example.com", "acct-c", "rt-c")]),
        ),
        env.put(
            "home/.opencode/oc-codex-multi-auth-accounts.json",
            &v3(&[v3_account("d@example.com", "acct-d", "rt-d")]),
        ),
        env.put(
            "codex-home/auth.json",
            &codex_auth("a@example.com", "acct-a", "rt-a2"),
        ),
    ];
    let (ok, stdout, stderr) = env.sync(None);
    assert!(ok, "{stderr}");
    for place in &places {
        has(&stdout, &format!("read {}", place.display()));
    }
    has(&stderr, "auth.json is Codex's own login");
    assert_eq!(env.ids(), ["acct-a", "acct-b", "acct-c", "acct-d"]);
    assert_eq!(env.account("acct-b")["parts"]["refreshToken"], "rt-b");
}

#[test]
fn bad_files_are_refused_naming_the_file_and_the_field_and_nothing_is_imported() {
    let env = Env::new();
    let seed = env.put(
        "in/seed.json",
        &v1(&[v1_bare("z@example.com", "acct-z", "rt-z")]),
    );
    assert!(env.sync(Some(&seed)).0);
    let before = env.accounts_bytes();
    let good = v1_bare("a@example.com", "acct-a", "rt-a");
    let mut no_refresh = v1_bare("b@example.com", "acct-b", "rt-b");
    no_refresh["parts"] = json!({});
    let refused = |path: PathBuf, field: &str| {
        let (ok, _, stderr) = env.sync(Some(&path));
        assert!(!ok, "{} was accepted", path.display());
        has(&stderr, &format!("error: {}: ", path.display()));
        has(&stderr, field);
        assert_eq!(
            env.accounts_bytes(),
            before,
            "{} imported something",
            path.display()
        );
    };
    let broken = env.dir.path().join("in/broken.json");
    std::fs::write(&broken, "{\n  \"version\": 1,\n  \"accounts\": [,]\n}").unwrap();
    refused(broken, "is not valid JSON (line 3");
    let foreign = env.put("in/foreign.json", &json!({"providers": []}));
    refused(foreign, "is not a format cma knows");
    let v1_file = env.put("in/v1.json", &v1(&[good.clone(), no_refresh]));
    refused(v1_file, "accounts[1]: `parts.refreshToken` is missing");
    let v3_file = env.put("in/v3.json", &v3(&[json!({"accessToken": "x"})]));
    refused(v3_file, "accounts[0]: `refreshToken` is missing");
    let v2_file = env.put("in/v2.json", &json!({"version": 2, "accounts": [good]}));
    refused(v2_file, "cma reads versions 1 and 3");
    let api_key = json!({"OPENAI_API_KEY": "sk-x", "tokens": null});
    refused(env.put("in/auth.json", &api_key), "`tokens`");
    // In the usual places too: one bad file stops the good ones.
    let a = v1_bare("a@example.com", "acct-a", "rt-a");
    env.put("home/.config/opencode/openai-accounts.json", &v1(&[a]));
    env.put(
        "codex-home/auth.json",
        &json!({"tokens": {"access_token": "x"}}),
    );
    let (ok, _, stderr) = env.sync(None);
    assert!(!ok);
    has(&stderr, "auth.json: `tokens.refresh_token` is missing");
    assert_eq!(env.accounts_bytes(), before);
}

#[test]
fn the_same_email_in_two_workspaces_imports_as_two_accounts() {
    // One (account id, user id) pair is one account: a@ in a personal and a team workspace
    // is two, as `cma login` adds them.
    let env = Env::new();
    let personal = v1_bare("a@example.com", "acct-personal", "rt-personal");
    let team = v1_bare("a@example.com", "acct-team", "rt-team");
    let file = env.put("in/v1.json", &v1(&[personal, team]));
    let (ok, stdout, stderr) = env.sync(Some(&file));
    assert!(ok, "{stderr}");
    assert_eq!(
        env.ids(),
        ["acct-personal", "acct-team"],
        "the team workspace was dropped without a word (src-tauri/app/import.rs: \
         `seen_twice` compares display names, not account keys); cma printed:\n{stdout}"
    );
}
