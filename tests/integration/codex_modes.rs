//! The real Codex CLI through the router in the other ways Codex can be set up (protocol §5,
//! codex-capture §8.2): a provider named "OpenAI" with the user's own ChatGPT login (zstd
//! bodies, remote compaction v2), the built-in provider with `openai_base_url` (WebSocket
//! first), and a custom provider with `supports_websockets = true`; each with a move between
//! accounts in the middle of a resumed session.

use std::path::Path;

use serde_json::{json, Value};

use crate::codex_cli::{
    cma_router_with, codex_bin, codex_root, codex_with, responses, CmaRouter, CodexRun,
};
use crate::support::{AccountSpec, Behaviour, FakeOpenAi, SeenRequest};

/// Codex's quiet settings (codex-capture §9), no retries of its own, and `provider`.
fn config(root: &Path, top: &str, provider: &str) {
    let text = format!(
        "model = \"gpt-5.5\"\ncheck_for_update_on_startup = false\n{top}\n\
         [analytics]\nenabled = false\n[features]\nplugins = false\n{provider}\n"
    );
    std::fs::write(root.join("codex-home/config.toml"), text).expect("codex config");
}

/// A `[model_providers.router]` table with no retries of Codex's own: any failover must
/// happen inside the router.
fn provider(name: &str, base_url: &str, websockets: bool) -> String {
    format!(
        "[model_providers.router]\nname = \"{name}\"\nbase_url = \"{base_url}\"\n\
         wire_api = \"responses\"\nsupports_websockets = {websockets}\n\
         stream_max_retries = 0\nrequest_max_retries = 0"
    )
}

/// The user's own ChatGPT login in `$CODEX_HOME/auth.json` (protocol §7): an account of the
/// fake that the router does not know, so any request carrying it would show.
fn chatgpt_login(fake: &FakeOpenAi, root: &Path) {
    let own = fake.add_account(AccountSpec::new(
        "me@example.com",
        "acct-me",
        "user-acct-me",
    ));
    let auth = json!({
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": null,
        "tokens": {
            "id_token": own.id_token,
            "access_token": own.access_token,
            "refresh_token": own.refresh_token,
            "account_id": "acct-me",
        },
        "last_refresh": "2026-11-26T00:00:00Z",
    });
    let path = root.join("codex-home/auth.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&auth).unwrap()).expect("auth.json");
}

fn encrypted(request: &SeenRequest) -> Vec<String> {
    let items = request.body["input"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let blob = |i: &Value| i["encrypted_content"].as_str().map(str::to_string);
    items.iter().filter_map(blob).collect()
}

/// Every model request reached the fake as one of the router's accounts, never with the
/// user's own login, and none carried another account's encrypted content.
fn assert_clean(calls: &[SeenRequest]) {
    for call in calls {
        let account = call.account_id.as_deref().unwrap_or("<none>");
        assert!(
            ["acct-a", "acct-b"].contains(&account),
            "sent as {account}: {call:?}"
        );
        for blob in encrypted(call) {
            let owner = blob.split(':').nth(1).unwrap_or("");
            assert!(
                owner == account || !blob.contains(':'),
                "{blob} sent to {account}"
            );
        }
    }
}

/// Every turn went over WebSocket, the session's first account's and the one it moved to.
fn assert_over_websocket(fake: &FakeOpenAi, calls: &[SeenRequest]) {
    let posts = calls.iter().filter(|c| !c.websocket).count();
    assert_eq!(posts, 0, "no turn fell back to HTTP");
    let mut accounts: Vec<String> = fake.ws_frames().into_iter().map(|f| f.account_id).collect();
    accounts.dedup();
    assert_eq!(
        accounts,
        ["acct-a", "acct-b"],
        "frames to A, then to B after the move"
    );
}

/// A router with A and B on the fake, and a Codex home set up by `setup`.
async fn start(
    setup: impl FnOnce(&FakeOpenAi, &Path, u16),
) -> Option<(FakeOpenAi, CmaRouter, tempfile::TempDir, std::path::PathBuf)> {
    start_with(&[], setup).await
}

/// `start` with more router variables.
async fn start_with(
    extra: &[(&str, &str)],
    setup: impl FnOnce(&FakeOpenAi, &Path, u16),
) -> Option<(FakeOpenAi, CmaRouter, tempfile::TempDir, std::path::PathBuf)> {
    let bin = codex_bin()?;
    let fake = FakeOpenAi::start().await;
    let root = codex_root(&fake);
    let router = cma_router_with(&fake, root.path(), extra);
    setup(&fake, root.path(), router.port);
    Some((fake, router, root, bin))
}

/// A first run on A, then A runs out and the resumed session continues on B.
async fn first_then_moved(
    fake: &FakeOpenAi,
    router: &CmaRouter,
    root: &Path,
    bin: &Path,
    env: &[(&str, String)],
) -> (CodexRun, CodexRun) {
    let first = codex_with(bin, root, false, "say hi", env).await;
    first.assert_answered(router);
    fake.push_behaviour(
        "acct-a",
        Behaviour::UsageLimit {
            resets_in_seconds: 3600,
        },
    );
    let second = codex_with(bin, root, true, "second turn", env).await;
    second.assert_answered(router);
    assert_eq!(second.thread_id(), first.thread_id(), "the same session");
    (first, second)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_named_openai_with_a_chatgpt_login_sends_zstd_compacts_remotely_and_moves() {
    let Some((fake, router, root, bin)) = start(|fake, root, port| {
        chatgpt_login(fake, root);
        let top = format!(
            "model_provider = \"router\"\nmodel_auto_compact_token_limit = 1\n\
             chatgpt_base_url = \"http://127.0.0.1:{port}/backend-api/\""
        );
        let base_url = format!("http://127.0.0.1:{port}/backend-api/codex");
        config(root, &top, &provider("OpenAI", &base_url, false));
    })
    .await
    else {
        return;
    };
    let root = root.path();
    let refresh = format!("{}/oauth/token", fake.issuer_url);
    let env = [("CODEX_REFRESH_TOKEN_URL_OVERRIDE", refresh)];
    let (_, second) = first_then_moved(&fake, &router, root, &bin, &env).await;
    let calls = responses(&fake);
    assert_clean(&calls);
    let zstd = calls
        .iter()
        .filter(|c| c.content_encoding.as_deref() == Some("zstd"));
    assert!(
        zstd.count() > 0,
        "Codex compressed its bodies: {:?}",
        calls
            .iter()
            .map(|c| &c.content_encoding)
            .collect::<Vec<_>>()
    );
    let trigger = |c: &&SeenRequest| {
        let input = c.body["input"].as_array();
        input
            .and_then(|i| i.last())
            .is_some_and(|i| i["type"] == "compaction_trigger")
    };
    assert!(
        calls.iter().any(|c| trigger(&c)),
        "remote compaction v2 went through the router"
    );
    let on_b: Vec<&SeenRequest> = calls
        .iter()
        .filter(|c| c.account_id.as_deref() == Some("acct-b"))
        .collect();
    assert!(
        !on_b.is_empty(),
        "B took the session over\n{}",
        second.printed
    );
    let status = router.status().await;
    let moves = status["moves"].as_array().cloned().unwrap_or_default();
    assert!(!moves.is_empty(), "the move is in /status: {status}");
    // `chatgpt_base_url` on the router: whatever Codex asks there (0.169's `exec` asks
    // `/backend-api/ps/mcp` and `/wham/settings/user`, not `/wham/usage`) never reaches the
    // backend with the user's own login.
    let own = fake
        .requests()
        .into_iter()
        .filter(|r| r.account_id.as_deref() == Some("acct-me"));
    assert_eq!(own.count(), 0, "the user's own login reached the backend");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_builtin_provider_with_openai_base_url_works_and_moves() {
    let Some((fake, router, root, bin)) = start(|fake, root, port| {
        chatgpt_login(fake, root);
        let top = format!("openai_base_url = \"http://127.0.0.1:{port}/v1\"");
        config(root, &top, "");
    })
    .await
    else {
        return;
    };
    let root = root.path();
    let refresh = format!("{}/oauth/token", fake.issuer_url);
    let env = [("CODEX_REFRESH_TOKEN_URL_OVERRIDE", refresh)];
    first_then_moved(&fake, &router, root, &bin, &env).await;
    let calls = responses(&fake);
    assert_clean(&calls);
    assert_over_websocket(&fake, &calls);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_custom_provider_with_websockets_on_works_and_moves() {
    let Some((fake, router, root, bin)) = start(|_, root, port| {
        let base_url = format!("http://127.0.0.1:{port}/v1");
        let router = provider("Codex App Account Router", &base_url, true);
        config(root, "model_provider = \"router\"", &router);
    })
    .await
    else {
        return;
    };
    let root = root.path();
    first_then_moved(&fake, &router, root, &bin, &[]).await;
    let calls = responses(&fake);
    assert_clean(&calls);
    assert_over_websocket(&fake, &calls);
}

/// A router (with `extra` variables) for A and B, and Codex on it over WebSocket (a custom
/// provider), whose first turn was answered.
async fn on_websocket(
    extra: &[(&str, &str)],
    setup: impl FnOnce(&FakeOpenAi),
) -> Option<(FakeOpenAi, CmaRouter, tempfile::TempDir, std::path::PathBuf)> {
    let (fake, router, root, bin) = start_with(extra, |fake, root, port| {
        setup(fake);
        let base_url = format!("http://127.0.0.1:{port}/v1");
        let router = provider("Codex App Account Router", &base_url, true);
        config(root, "model_provider = \"router\"", &router);
    })
    .await?;
    let first = codex_with(&bin, root.path(), false, "say hi", &[]).await;
    first.assert_answered(&router);
    Some((fake, router, root, bin))
}

/// A prompt that makes Codex's request about 142 KB (one argument holds at most 128 KiB).
fn large_prompt() -> String {
    "y".repeat(125_000)
}

fn said(run: &CodexRun, what: &str) -> bool {
    run.printed.contains(what)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_over_the_routers_limit_is_refused_on_the_socket_and_codex_stays_on_websocket() {
    let limit = [("CODEX_PROXY_MAX_BODY_BYTES", "120000")];
    let Some((fake, router, root, bin)) = on_websocket(&limit, |fake| {
        fake.set_ws_max_message(None);
    })
    .await
    else {
        return;
    };
    let root = root.path();
    let big = codex_with(&bin, root, true, &large_prompt(), &[]).await;
    let context = format!("{}\ncma:\n{}", big.printed, router.log());
    // Refused once, with the router's reason, and not retried: Codex neither reconnects nor
    // falls back to HTTP (where the same body would get 413).
    assert!(
        said(&big, "websocket_message_too_large") || said(&big, "120000 bytes"),
        "{context}"
    );
    assert!(
        !said(&big, "Falling back"),
        "Codex stayed on WebSocket: {context}"
    );
    assert!(!said(&big, "Reconnecting"), "no retry: {context}");
    // The failed message stays in that session's history, so (as the error says) a new
    // session goes on, over WebSocket.
    let next = codex_with(&bin, root, false, "a smaller one", &[]).await;
    next.assert_answered(&router);
    let calls = responses(&fake);
    assert!(
        calls.iter().all(|c| c.websocket),
        "no request over HTTP: {calls:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstreams_message_limit_reaches_codex_which_sends_a_larger_request_over_http() {
    // The upstream takes 100 000-byte messages; the router's own limit is higher.
    let Some((fake, router, root, bin)) = on_websocket(&[], |fake| {
        fake.set_ws_max_message(Some(100_000));
    })
    .await
    else {
        return;
    };
    let frames_before = fake.ws_frames().len();
    let big = codex_with(&bin, root.path(), true, &large_prompt(), &[]).await;
    // Codex read the upstream's limit in the router's upgrade answer and did what it does
    // without the router: the larger request went over HTTP, at once, and was served.
    big.assert_answered(&router);
    assert!(said(&big, "Falling back"), "{}", big.printed);
    // Not after retries on a socket the upstream closed (what happened when the router
    // answered the handshake without the upstream's headers).
    assert!(!said(&big, "Reconnecting"), "{}", big.printed);
    let large_frames = fake.ws_frames()[frames_before..]
        .iter()
        .filter(|f| f.body.to_string().len() > 100_000)
        .count();
    assert_eq!(
        large_frames, 0,
        "nothing over the upstream's limit went on a socket"
    );
    let posts = responses(&fake).iter().filter(|c| !c.websocket).count();
    assert_eq!(posts, 1, "the large request, over HTTP");
}
