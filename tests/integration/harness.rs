//! Starts a router against the fakes in a temp dir, and speaks to it like Codex does.

use std::collections::HashMap;
use std::path::Path;

use router::app::{self, RunningRouter};
use router::settings::Settings;
use serde_json::{json, Value};

use crate::support::{AccountSpec, FakeOpenAi, IssuedTokens};

/// An account as a test describes it.
pub struct TestAccount {
    pub email: &'static str,
    pub id: &'static str,
    pub expired: bool,
}

pub const fn account(email: &'static str, id: &'static str) -> TestAccount {
    TestAccount {
        email,
        id,
        expired: false,
    }
}

pub const fn expired_account(email: &'static str, id: &'static str) -> TestAccount {
    TestAccount {
        email,
        id,
        expired: true,
    }
}

pub struct Harness {
    pub fake: FakeOpenAi,
    pub dir: tempfile::TempDir,
    pub router: Option<RunningRouter>,
    pub base: String,
    pub http: reqwest::Client,
    pub vars: HashMap<String, String>,
}

impl Harness {
    pub async fn start(accounts: &[TestAccount]) -> Harness {
        Harness::start_with(accounts, &[]).await
    }

    /// A router with these accounts (registered in the fake and written to the accounts
    /// file) and these extra environment variables.
    pub async fn start_with(accounts: &[TestAccount], extra: &[(&str, &str)]) -> Harness {
        let fake = FakeOpenAi::start().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let records: Vec<Value> = accounts.iter().map(|a| register(&fake, a)).collect();
        write_accounts(&dir.path().join("openai-accounts.json"), &records);
        let mut vars = fake_vars(&fake, dir.path());
        for (k, v) in extra {
            vars.insert(k.to_string(), v.to_string());
        }
        let mut harness = Harness {
            fake,
            dir,
            router: None,
            base: String::new(),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("client"),
            vars,
        };
        harness.restart().await;
        harness
    }

    pub fn settings(&self) -> Settings {
        let vars = self.vars.clone();
        Settings::from_vars(&move |name| vars.get(name).cloned()).expect("valid test settings")
    }

    /// Stops the router (if running) and starts a new one on the same files.
    pub async fn restart(&mut self) {
        if let Some(router) = self.router.take() {
            router.stop().await;
        }
        let router = app::start_router(self.settings())
            .await
            .expect("router starts");
        self.base = format!("http://{}", router.addr);
        self.router = Some(router);
    }

    pub fn accounts_path(&self) -> std::path::PathBuf {
        self.dir.path().join("openai-accounts.json")
    }

    pub fn accounts_file(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.accounts_path()).expect("accounts file"))
            .expect("json")
    }

    /// `POST /v1/responses` as Codex sends it, for one session.
    pub async fn respond(&self, session: &str) -> reqwest::Response {
        self.post(
            "/v1/responses",
            &codex_body(session, "gpt-5.5"),
            &[("session-id", session)],
        )
        .await
    }

    pub async fn post(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("accept", "text/event-stream");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request
            .body(body.to_string())
            .send()
            .await
            .expect("router answers")
    }

    pub async fn status(&self) -> Value {
        self.http
            .get(format!("{}/status", self.base))
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("status json")
    }

    /// What the fake backend saw, without the router's usage polls.
    pub fn model_requests(&self) -> Vec<crate::support::SeenRequest> {
        self.fake
            .requests()
            .into_iter()
            .filter(|r| !r.path.ends_with("/wham/usage"))
            .collect()
    }

    /// The account state shown by `/status` for an account id.
    pub async fn account_status(&self, account_id: &str) -> Value {
        let status = self.status().await;
        status["accounts"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|x| x["key"].as_str().is_some_and(|k| k.starts_with(account_id)))
            })
            .cloned()
            .unwrap_or_else(|| panic!("{account_id} missing from {status}"))
    }
}

/// The environment that points a router at the fakes and a temp dir.
pub fn fake_vars(fake: &FakeOpenAi, dir: &Path) -> HashMap<String, String> {
    let pairs = [
        ("CODEX_PROXY_PORT", "0".to_string()),
        ("CODEX_PROXY_TOKEN_STORE", "file".to_string()),
        (
            "CODEX_PROXY_ACCOUNTS_FILE",
            dir.join("openai-accounts.json").display().to_string(),
        ),
        (
            "CODEX_PROXY_BINDINGS_FILE",
            dir.join("session-bindings.json").display().to_string(),
        ),
        ("CODEX_HOME", dir.join("codex-home").display().to_string()),
        // Never the settings file of whoever runs the tests.
        (
            "CODEX_PROXY_SETTINGS_FILE",
            dir.join("settings.toml").display().to_string(),
        ),
        ("CODEX_PROXY_UPSTREAM_URL", fake.upstream_url.clone()),
        ("CODEX_PROXY_UPSTREAM_MODELS_URL", fake.models_url.clone()),
        ("CODEX_PROXY_USAGE_URL", fake.usage_url.clone()),
        ("CODEX_PROXY_OAUTH_ISSUER", fake.issuer_url.clone()),
        ("CODEX_PROXY_ALLOW_CUSTOM_UPSTREAM", "1".to_string()),
        ("CODEX_PROXY_FIRST_BYTE_TIMEOUT_MS", "2000".to_string()),
        ("CODEX_PROXY_STREAM_IDLE_TIMEOUT_MS", "2000".to_string()),
    ];
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Registers an account in the fake and returns its accounts-file record (multi-auth v1).
pub fn register(fake: &FakeOpenAi, a: &TestAccount) -> Value {
    let mut spec = AccountSpec::new(a.email, a.id, &format!("user-{}", a.id));
    if a.expired {
        spec = spec.expired();
    }
    let tokens = fake.add_account(spec);
    record(a, &tokens)
}

pub fn record(a: &TestAccount, tokens: &IssuedTokens) -> Value {
    json!({
        "email": a.email,
        "userId": format!("user-{}", a.id),
        "accountId": a.id,
        "planType": "plus",
        "addedAt": 1_700_000_000_000i64,
        "parts": {"refreshToken": tokens.refresh_token},
        "access": tokens.access_token,
        "expires": tokens.expires_at_ms,
        "rateLimitResets": {},
        "enabled": true
    })
}

pub fn write_accounts(path: &Path, records: &[Value]) {
    let file = json!({"version": 1, "accounts": records, "activeAccountIndex": 0});
    std::fs::write(path, serde_json::to_vec_pretty(&file).expect("json")).expect("write accounts");
}

/// A request body shaped like Codex 0.169's (codex-capture §4.1), small.
pub fn codex_body(session: &str, model: &str) -> Value {
    json!({
        "model": model,
        "stream": true,
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "say hi"}]}],
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": true,
        "reasoning": {"effort": "medium"},
        "store": false,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": session,
        "client_metadata": {"x-codex-installation-id": "test"}
    })
}

/// Reads a whole SSE answer and returns the JSON `type` of each event.
pub async fn event_types(response: reqwest::Response) -> Vec<String> {
    let text = response.text().await.expect("body");
    text.split("\n\n")
        .filter_map(|event| {
            let data = event.lines().find_map(|l| l.strip_prefix("data: "))?;
            let v: Value = serde_json::from_str(data).ok()?;
            Some(v["type"].as_str()?.to_string())
        })
        .collect()
}

/// Which account the fake says served a response.
pub fn served_by(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-fake-account-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<router>")
        .to_string()
}
