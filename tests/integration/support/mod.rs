//! Fakes of the two OpenAI services the router talks to, the OAuth issuer and the ChatGPT Codex
//! backend, as real HTTP servers on 127.0.0.1 sharing one account registry.
#![allow(
    dead_code,
    unused_imports,
    reason = "shared by the test binary and the benches; each uses a different part"
)]

pub mod fake_backend;
pub mod fake_issuer;
pub mod jwt;

mod accounts;
mod admission;
mod answer;
mod behaviour;
mod connection;
mod content_encoding;
mod org_binding;
mod quota;
mod seen_request;
mod sse;
mod websocket;
mod ws_client;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use accounts::{AccountSpec, IssuedTokens};
pub use behaviour::{clock_ns, Deactivation, FaultPlan};
pub use content_encoding::zstd;
pub use fake_backend::{Behaviour, SeenFrame, SeenRequest, OK_TEXT};
pub use fake_issuer::pkce_challenge;
pub use jwt::{decode_payload, make_jwt};
pub use org_binding::{
    compaction_encrypted_content, encrypted_content_owner, reasoning_encrypted_content,
};
pub use sse::sse_events;
pub use ws_client::{response_create, WsClient, WsRefusal, WS_FRAME_TIMEOUT};

use accounts::Registry;
use connection::{Connection, KillableListener};

type Shared = Arc<Mutex<Registry>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Registry> {
    // A test that panicked while holding the lock must not turn every later call into a panic.
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The fake issuer and backend. Both servers stop when this is dropped.
pub struct FakeOpenAi {
    /// `http://127.0.0.1:Q`; the token endpoint is `{issuer_url}/oauth/token`.
    pub issuer_url: String,
    /// `http://127.0.0.1:P/backend-api/codex`: `POST /responses`, `/responses/compact`,
    /// `GET /models`, and `GET /responses` as a WebSocket (`ws_url`).
    pub upstream_url: String,
    /// `http://127.0.0.1:P/backend-api/wham/usage`.
    pub usage_url: String,
    /// `{upstream_url}/models`.
    pub models_url: String,
    /// `ws://127.0.0.1:P/backend-api/codex/responses`, the Responses WebSocket.
    pub ws_url: String,
    shared: Shared,
    servers: Vec<JoinHandle<()>>,
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
        // Upgraded sockets run on tasks of their own, which aborting the servers leaves alone.
        self.drop_websockets();
    }
}

impl FakeOpenAi {
    /// Binds both servers on 127.0.0.1 port 0 and serves them on the current tokio runtime.
    pub async fn start() -> FakeOpenAi {
        let issuer_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake issuer");
        let backend_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake backend");
        let issuer_addr = issuer_listener.local_addr().expect("fake issuer address");
        let backend_addr = backend_listener.local_addr().expect("fake backend address");
        let issuer_url = format!("http://{issuer_addr}");
        let backend_url = format!("http://{backend_addr}");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let seed = u64::from(nanos) << 16 ^ u64::from(backend_addr.port());
        let shared: Shared = Arc::new(Mutex::new(Registry::new(issuer_url.clone(), seed)));

        let issuer_app = fake_issuer::router(shared.clone());
        let backend_app = fake_backend::router(shared.clone())
            .into_make_service_with_connect_info::<Connection>();
        let backend_listener = KillableListener::new(backend_listener);
        let servers = vec![
            tokio::spawn(async move {
                let _ = axum::serve(issuer_listener, issuer_app).await;
            }),
            tokio::spawn(async move {
                let _ = axum::serve(backend_listener, backend_app).await;
            }),
        ];
        let upstream_url = format!("{backend_url}/backend-api/codex");
        FakeOpenAi {
            issuer_url,
            models_url: format!("{upstream_url}/models"),
            ws_url: format!("ws://{backend_addr}/backend-api/codex/responses"),
            usage_url: format!("{backend_url}/backend-api/wham/usage"),
            upstream_url,
            shared,
            servers,
        }
    }

    /// Registers an account and issues its first tokens (a first sign-in).
    pub fn add_account(&self, spec: AccountSpec) -> IssuedTokens {
        lock(&self.shared).add_account(spec)
    }

    /// Queues a behaviour for the account's next `/responses` or `/responses/compact` call or
    /// WebSocket `response.create` frame, prewarms included (FIFO); when the queue is empty
    /// the default behaviour answers. A request refused before (bad bearer, undecodable body,
    /// another account's `encrypted_content`) leaves the queue alone.
    pub fn push_behaviour(&self, account_id: &str, b: Behaviour) {
        lock(&self.shared).account(account_id).queue.push_back(b);
    }

    /// What answers once the queue is empty; initially `Behaviour::ok()`.
    /// The next call of each of `account_ids` answers `status` with `message`: a moment's
    /// outage across those accounts.
    pub fn fail_each_once(&self, account_ids: &[&str], status: u16, message: &str) {
        for id in account_ids {
            let body = serde_json::json!({"error": {"message": message}});
            self.push_behaviour(id, Behaviour::Status { status, body });
        }
    }

    pub fn set_default_behaviour(&self, account_id: &str, b: Behaviour) {
        lock(&self.shared).account(account_id).default_behaviour = b;
    }

    /// Planned faults for a share of all calls (see [`FaultPlan`]); replaces any earlier plan.
    pub fn set_fault_plan(&self, plan: FaultPlan) {
        lock(&self.shared).fault_plan = plan;
    }

    /// Calls the fault plan counted and faults it served.
    pub fn fault_counts(&self) -> (u64, u64) {
        lock(&self.shared).fault_plan.counts()
    }

    /// Every request the backend saw (responses, compact, models, usage, unknown paths), in
    /// order, including the refused ones.
    pub fn requests(&self) -> Vec<SeenRequest> {
        lock(&self.shared).requests().to_vec()
    }

    /// Every data frame clients sent on the backend's WebSockets, in order (handshakes are in
    /// `requests()`, with `websocket: true`).
    pub fn ws_frames(&self) -> Vec<SeenFrame> {
        lock(&self.shared).websockets.frames.clone()
    }

    /// The message limit the backend's upgrade answers advertise and enforce; `None` leaves
    /// the header out (as before Codex 0.171).
    pub fn set_ws_max_message(&self, max: Option<usize>) {
        lock(&self.shared).websockets.max_message = Some(max);
    }

    /// Lets the download in progress (`/files/{id}/content`) send its second piece.
    pub fn release_download(&self) {
        lock(&self.shared).download_gate.notify_one();
    }

    /// While on, every WebSocket upgrade is answered 426, which sends Codex back to HTTP.
    pub fn refuse_websockets(&self, on: bool) {
        lock(&self.shared).websockets.refuse = on;
    }

    /// WebSockets of the backend that are still open.
    pub fn open_websockets(&self) -> usize {
        lock(&self.shared).websockets.open.len()
    }

    /// Drops the TCP connection of every open WebSocket, as a server going away would.
    pub fn drop_websockets(&self) {
        let open = std::mem::take(&mut lock(&self.shared).websockets.open);
        for (_, connection) in open {
            connection.kill();
        }
    }

    /// Forgets the requests (and WebSocket frames) seen so far by both servers.
    pub fn clear_requests(&self) {
        lock(&self.shared).clear_requests();
    }

    /// Whether requests are kept for `requests()`; turn off for long benchmarks.
    pub fn set_recording(&self, on: bool) {
        lock(&self.shared).recording = on;
    }

    /// Every request the issuer saw; `body` holds the JSON or form parameters as an object.
    pub fn issuer_requests(&self) -> Vec<SeenRequest> {
        lock(&self.shared).issuer_requests.clone()
    }

    /// Refresh attempts with one of this account's refresh tokens, successful or not.
    pub fn refresh_count(&self, account_id: &str) -> usize {
        lock(&self.shared).account(account_id).refresh_attempts
    }

    /// The account's next refresh answers `status` with `{"error":{"code": code,...}}`.
    /// `refresh_token_expired` and `refresh_token_invalidated` also kill the token family, as
    /// the real issuer would; any other code leaves the refresh token usable. `None` clears.
    pub fn fail_next_refresh(&self, account_id: &str, code: Option<&str>, status: u16) {
        lock(&self.shared).account(account_id).fail_next_refresh =
            code.map(|code| (code.to_owned(), status));
    }

    /// Delays every refresh answer, to make concurrent refreshes overlap.
    pub fn set_refresh_delay(&self, d: Duration) {
        lock(&self.shared).refresh_delay = d;
    }

    /// Rotates first, then waits `d` before answering a refresh: the window in which a
    /// client that hangs up has lost its refresh token.
    pub fn set_refresh_answer_delay(&self, d: Duration) {
        lock(&self.shared).refresh_answer_delay = d;
    }

    /// Leaves these fields (`refresh_token`, `id_token`, `access_token`) out of the account's
    /// refresh answers; without `refresh_token` the old one stays valid.
    pub fn omit_from_refresh_answers(&self, account_id: &str, fields: &[&str]) {
        lock(&self.shared).account(account_id).refresh_omits =
            fields.iter().map(|f| (*f).to_owned()).collect();
    }

    /// Revokes the account's current access tokens server-side; its refresh token still works.
    pub fn expire_access_token(&self, account_id: &str) {
        lock(&self.shared).expire_access_token(account_id);
    }

    /// Usage reported in `x-codex-*` headers, `codex.rate_limits` events and `/wham/usage`.
    pub fn set_usage(
        &self,
        account_id: &str,
        primary_used_percent: f64,
        secondary_used_percent: f64,
    ) {
        let mut registry = lock(&self.shared);
        let usage = &mut registry.account(account_id).usage;
        usage.primary_percent = primary_used_percent;
        usage.secondary_percent = secondary_used_percent;
    }

    /// When the account's 5-hour window resets, in epoch seconds, as every answer says.
    pub fn primary_reset_at(&self, account_id: &str) -> i64 {
        lock(&self.shared)
            .account(account_id)
            .usage
            .primary_reset_at
    }

    /// The latest tokens of the account's latest sign-in, after any rotation.
    pub fn current_tokens(&self, account_id: &str) -> IssuedTokens {
        lock(&self.shared).current_tokens(account_id)
    }

    /// The next browser or device login signs in as this account, whatever `login_hint` says.
    pub fn set_next_login(&self, account_id: &str) {
        let mut registry = lock(&self.shared);
        registry.index(account_id);
        registry.login.next_login = Some(account_id.to_owned());
    }

    /// The next `/oauth/authorize` redirects with `error=access_denied` and this description.
    pub fn fail_next_login(&self, description: &str) {
        lock(&self.shared).login.next_login_error = Some(description.to_owned());
    }
}
