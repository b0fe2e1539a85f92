//! `cma history`: each account's days from the usage history (requests, tokens, the highest
//! 5-hour and weekly usage), as a table with a sparkline where the terminal shows one, or JSON.

use std::io::IsTerminal;

use crate::accounts::now_ms;
use crate::app::AppError;
use crate::history::{Day, History, KEEP_DAYS};
use crate::settings::Settings;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

pub async fn run(
    settings: &Settings,
    account: Option<String>,
    days: u32,
    json: bool,
) -> Result<(), AppError> {
    let path = crate::history::file(&settings.paths);
    let days = i64::from(days).clamp(1, KEEP_DAYS);
    // From the start of the first day asked for (UTC), today included.
    let since = (now_ms().div_euclid(DAY_MS) - (days - 1)) * DAY_MS;
    let shown = path.clone();
    let read = tokio::task::spawn_blocking(move || {
        let Some(history) = History::open_read_only(&path)? else {
            return Ok(None);
        };
        history.days(since, account.as_deref()).map(Some)
    })
    .await
    .map_err(|e| AppError::Internal(e.to_string()))?
    .map_err(|e: crate::history::HistoryError| AppError::Message(e.to_string()))?;
    let rows = read.unwrap_or_default();
    if json {
        let out = serde_json::json!({ "days": rows });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    if rows.is_empty() {
        println!(
            "no usage recorded in the last {days} days ({}); the router records as it serves",
            shown.display()
        );
        return Ok(());
    }
    println!("{}", table(&rows));
    if sparklines_shown() {
        println!();
        for line in sparklines(&rows) {
            println!("{line}");
        }
    }
    Ok(())
}

fn table(rows: &[Day]) -> String {
    let percent = |p: Option<f64>| p.map_or("-".to_string(), |p| format!("{p:.0}%"));
    let mut lines = vec![[
        "day",
        "account",
        "requests",
        "failed",
        "input",
        "output",
        "cached",
        "5h peak",
        "week peak",
    ]
    .map(str::to_string)];
    for d in rows {
        lines.push([
            d.day.clone(),
            d.account.clone(),
            d.requests.to_string(),
            d.failed.to_string(),
            d.input_tokens.to_string(),
            d.output_tokens.to_string(),
            d.cached_tokens.to_string(),
            percent(d.peak_primary),
            percent(d.peak_secondary),
        ]);
    }
    super::output::align(&lines)
}

/// A sparkline needs a terminal that shows block characters: stdout a terminal and a UTF-8
/// locale.
fn sparklines_shown() -> bool {
    let utf8 = ["LC_ALL", "LC_CTYPE", "LANG"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .is_some_and(|l| l.to_ascii_uppercase().contains("UTF-8"));
    utf8 && std::io::stdout().is_terminal()
}

/// One line per account: its daily 5-hour peak, oldest day first, a blank for a day with
/// no reading.
fn sparklines(rows: &[Day]) -> Vec<String> {
    let mut days: Vec<&str> = rows.iter().map(|d| d.day.as_str()).collect();
    days.dedup();
    let mut accounts: Vec<&str> = rows.iter().map(|d| d.account.as_str()).collect();
    accounts.sort_unstable();
    accounts.dedup();
    let width = accounts
        .iter()
        .map(|a| a.chars().count())
        .max()
        .unwrap_or(0);
    accounts
        .iter()
        .map(|account| {
            let line: String = days
                .iter()
                .map(|day| {
                    rows.iter()
                        .find(|d| d.day == *day && d.account == *account)
                        .and_then(|d| d.peak_primary)
                        .map_or(' ', bar)
                })
                .collect();
            format!("{account:<width$}  5h peak per day  {line}")
        })
        .collect()
}

fn bar(percent: f64) -> char {
    let step = (percent.clamp(0.0, 100.0) / 100.0 * (BARS.len() - 1) as f64).round() as usize;
    BARS[step]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(day: &str, account: &str, peak: Option<f64>) -> Day {
        Day {
            day: day.to_string(),
            account: account.to_string(),
            key: None,
            requests: 3,
            failed: 1,
            input_tokens: 1234,
            output_tokens: 5,
            cached_tokens: 0,
            peak_primary: peak,
            peak_secondary: None,
        }
    }

    #[test]
    fn the_table_lines_up_and_the_sparkline_has_a_bar_per_day() {
        let rows = [
            day("2026-12-03", "a@example.com", Some(0.0)),
            day("2026-12-03", "b@example.com", Some(100.0)),
            day("2026-12-04", "a@example.com", Some(50.0)),
        ];
        let table = table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("day         account"), "{table}");
        assert!(
            lines[1].contains("a@example.com  3         1       1234"),
            "{table}"
        );
        assert!(lines[1].ends_with("0%       -"), "{table}");
        assert_eq!(
            sparklines(&rows),
            vec![
                "a@example.com  5h peak per day  ▁▅".to_string(),
                "b@example.com  5h peak per day  █ ".to_string(),
            ]
        );
    }
}
