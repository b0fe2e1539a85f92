//! Human output: tables, durations and percentages. No colour, so `NO_COLOR` always holds.

pub use crate::accounts::usage::countdown;
use crate::proxy::AccountStatus;

fn window(usage: Option<&serde_json::Value>, name: &str, now_ms: i64) -> (String, String) {
    let Some(w) = usage.and_then(|u| u.get(name)).filter(|w| !w.is_null()) else {
        return ("-".to_string(), "-".to_string());
    };
    let used = w
        .get("usedPercent")
        .and_then(|v| v.as_f64())
        .map(|p| format!("{p:.0}%"))
        .unwrap_or_else(|| "-".to_string());
    let reset = w
        .get("resetsAt")
        .and_then(|v| v.as_i64())
        .map(|at| countdown(at * 1000 - now_ms))
        .unwrap_or_else(|| "-".to_string());
    (used, reset)
}

/// One line per account: who, plan, state, 5-hour and weekly usage with their resets.
pub fn accounts_table(accounts: &[AccountStatus], now_ms: i64) -> String {
    let mut rows = vec![[
        "#".to_string(),
        "account".to_string(),
        "plan".to_string(),
        "state".to_string(),
        "5h used".to_string(),
        "5h resets".to_string(),
        "week used".to_string(),
        "week resets".to_string(),
    ]];
    for a in accounts {
        let name = a
            .label
            .clone()
            .or_else(|| a.email.clone())
            .unwrap_or_else(|| a.key.clone());
        let mut state = match (a.state.as_str(), a.until) {
            ("limited", Some(until)) => format!("limited {}", countdown(until - now_ms)),
            ("cooling-down", Some(until)) => format!("resting {}", countdown(until - now_ms)),
            (s, _) => s.to_string(),
        };
        if a.preferred {
            state.push_str(" *");
        }
        let (p_used, p_reset) = window(a.usage.as_ref(), "primary", now_ms);
        let (s_used, s_reset) = window(a.usage.as_ref(), "secondary", now_ms);
        rows.push([
            a.index.to_string(),
            name,
            a.plan.clone().unwrap_or_else(|| "-".to_string()),
            state,
            p_used,
            p_reset,
            s_used,
            s_reset,
        ]);
    }
    align(&rows)
}

/// Rows of cells as left-aligned columns two spaces apart, one line each.
pub fn align<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One line per account that needs the user, saying why in plain words and what to do.
pub fn attention_lines(accounts: &[AccountStatus]) -> Vec<String> {
    accounts
        .iter()
        .filter_map(|a| {
            let why = a.attention.as_deref()?;
            let name = a.label.as_deref().or(a.email.as_deref()).unwrap_or(&a.key);
            Some(match a.state.as_str() {
                "needs-attention" => format!(
                    "{name}: {why}; Codex uses the other accounts (`cma login` to it once that is resolved)"
                ),
                _ => format!("{name}: {why} (`cma login`)"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_that_needs_attention_gets_a_line_saying_why() {
        let mut a: AccountStatus = serde_json::from_value(serde_json::json!({
            "index": 0, "key": "k", "label": null, "email": "a@x", "plan": "plus",
            "enabled": true, "state": "needs-attention", "until": null,
            "needsLoginReason": "account_deactivated",
            "attention": "ChatGPT says this account is deactivated",
            "limits": {}, "usage": null, "lastUsed": null, "preferred": false
        }))
        .expect("an account status");
        let table = accounts_table(std::slice::from_ref(&a), 0);
        assert!(
            table.lines().nth(1).unwrap().contains("needs-attention"),
            "{table}"
        );
        assert_eq!(
            attention_lines(std::slice::from_ref(&a)),
            ["a@x: ChatGPT says this account is deactivated; Codex uses the other accounts (`cma login` to it once that is resolved)"]
        );
        a.attention = None;
        a.state = "ok".into();
        assert!(attention_lines(&[a]).is_empty());
    }

    #[test]
    fn countdowns_read_naturally() {
        assert_eq!(countdown(45_000), "45s");
        assert_eq!(countdown(3_720_000), "1h 02m");
        assert_eq!(countdown(3 * 86_400_000 + 4 * 3_600_000), "3d 4h");
        assert_eq!(countdown(-5), "0s");
    }
}
