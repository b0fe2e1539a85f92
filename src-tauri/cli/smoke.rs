//! `cma smoke`: one minimal request through the router (the running one, or one started
//! here on a free port), reporting which account served, the time to first byte and the
//! usage learned.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;

use crate::app::{self, AppError};
use crate::proxy::{AccountStatus, FORCE_HEADER};
use crate::settings::Settings;

pub async fn run(
    settings: &Settings,
    all_accounts: bool,
    model: &str,
    json: bool,
) -> Result<bool, AppError> {
    let (base, local) = match super::live_status(settings).await {
        Some(status) => (status.base_url.trim_end_matches("/v1").to_string(), None),
        None => {
            let mut here = settings.clone();
            here.port = 0;
            let router = app::start_router(here).await?;
            (format!("http://{}", router.addr), Some(router))
        }
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let accounts = status(&client, &base, settings).await.unwrap_or_default();
    let targets: Vec<Option<&AccountStatus>> = if all_accounts {
        accounts.iter().map(Some).collect()
    } else {
        vec![None]
    };
    let mut results = Vec::new();
    for target in targets {
        if let Some(a) = target.filter(|a| a.state != "ok") {
            results.push(json!({"account": name(a), "ok": false, "skipped": a.state}));
            continue;
        }
        results.push(
            probe(
                &client,
                &base,
                settings,
                model,
                target.map(|a| a.key.as_str()),
            )
            .await,
        );
    }
    let after = status(&client, &base, settings).await.unwrap_or_default();
    for r in results.iter_mut() {
        let usage = after
            .iter()
            .find(|a| Some(name(a)) == r["account"].as_str().map(str::to_string))
            .and_then(|a| a.usage.clone());
        r["usage"] = usage.unwrap_or_default();
    }
    if let Some(router) = local {
        router.stop().await;
    }
    let healthy = results
        .iter()
        .all(|r| r["ok"] == true || r.get("skipped").is_some())
        && !results.is_empty();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"ok": healthy, "results": results}))
                .unwrap_or_default()
        );
    } else {
        for r in &results {
            print_line(r);
        }
    }
    Ok(healthy)
}

async fn status(
    client: &reqwest::Client,
    base: &str,
    settings: &Settings,
) -> Option<Vec<AccountStatus>> {
    let mut request = client.get(format!("{base}/status"));
    if let Some(token) = &settings.client_token {
        request = request.bearer_auth(token.expose());
    }
    let value: serde_json::Value = request.send().await.ok()?.json().await.ok()?;
    serde_json::from_value(value.get("accounts")?.clone()).ok()
}

fn name(a: &AccountStatus) -> String {
    a.label
        .clone()
        .or_else(|| a.email.clone())
        .unwrap_or_else(|| a.key.clone())
}

async fn probe(
    client: &reqwest::Client,
    base: &str,
    settings: &Settings,
    model: &str,
    account: Option<&str>,
) -> serde_json::Value {
    let body = json!({
        "model": model,
        "stream": true,
        "store": false,
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "This is a connectivity check. Reply with the single word ok."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "ok?"}]}
        ],
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": false,
        "include": [],
        "prompt_cache_key": format!("cma-smoke-{}", crate::accounts::now_ms()),
    });
    let mut request = client
        .post(format!("{base}/v1/responses"))
        .header("accept", "text/event-stream")
        .timeout(Duration::from_secs(120))
        .json(&body);
    if let Some(key) = account {
        request = request.header(FORCE_HEADER, key);
    }
    if let Some(token) = &settings.client_token {
        request = request.bearer_auth(token.expose());
    }
    let started = Instant::now();
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            return json!({"account": account, "ok": false, "error": format!("the router did not answer: {e}")})
        }
    };
    let status = response.status();
    let served = response
        .headers()
        .get(FORCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut first_byte = None;
    let mut text = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { break };
        first_byte.get_or_insert_with(|| started.elapsed());
        text.extend_from_slice(&chunk);
    }
    let text = String::from_utf8_lossy(&text);
    let completed = status.is_success() && text.contains("response.completed");
    let error = (!completed).then(|| {
        let detail: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        detail["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP {}", status.as_u16()))
    });
    json!({
        "account": served.or(account.map(str::to_string)),
        "ok": completed,
        "status": status.as_u16(),
        "firstByteMs": first_byte.map(|d| (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0),
        "error": error,
    })
}

fn print_line(r: &serde_json::Value) {
    let account = r["account"].as_str().unwrap_or("-");
    if let Some(state) = r["skipped"].as_str() {
        println!("skip  {account}  ({state})");
        return;
    }
    if r["ok"] != true {
        println!(
            "FAIL  {account}  {}",
            r["error"].as_str().unwrap_or("no complete answer")
        );
        return;
    }
    let ms = r["firstByteMs"].as_f64().unwrap_or(0.0);
    let used = |w: &str| {
        r["usage"][w]["usedPercent"]
            .as_f64()
            .map(|p| format!("{p:.0}%"))
            .unwrap_or_else(|| "-".to_string())
    };
    println!(
        "ok    {account}  first byte {ms:.0} ms  usage 5h {} week {}",
        used("primary"),
        used("secondary")
    );
}
