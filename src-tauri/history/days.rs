//! Each account's days as `cma history` and the charts sum them: requests, failures, tokens
//! and the day's highest usage, one account per key under its latest name.

use rusqlite::params;

use super::{time, History, HistoryError, DAY_MS};

/// One account's day (UTC).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Day {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// The account's latest name in the history.
    pub account: String,
    /// The pool's key; `None` for an account known by rows written before keys were kept.
    pub key: Option<String>,
    pub requests: i64,
    pub failed: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_tokens: i64,
    /// The highest 5-hour and weekly usage read that day, in percent.
    pub peak_primary: Option<f64>,
    pub peak_secondary: Option<f64>,
}

impl History {
    /// Each account's days (UTC) since `since_ms`, oldest first, under the account's latest
    /// name; only the account whose key or any name is `account`, when given. Accounts are
    /// told apart by key, so a renamed one stays one account and two workspaces of one email
    /// stay two (rows from before keys were kept go by name).
    pub fn days(&self, since_ms: i64, account: Option<&str>) -> Result<Vec<Day>, HistoryError> {
        const SERIES: &str = "COALESCE(account_key, account)";
        let mut query = self
            .connection
            .prepare(&format!(
                "WITH r AS (
                    SELECT at / 86400000 AS d, {SERIES} AS s, MAX(account_key) AS k,
                        COUNT(*) AS n, SUM(status >= 400) AS failed
                    FROM requests WHERE at >= ?1 AND account IS NOT NULL GROUP BY d, s),
                t AS (
                    SELECT at / 86400000 AS d, {SERIES} AS s, MAX(account_key) AS k,
                        SUM(input_tokens) AS i, SUM(output_tokens) AS o, SUM(cached_tokens) AS c
                    FROM tokens WHERE at >= ?1 GROUP BY d, s),
                u AS (
                    SELECT at / 86400000 AS d, {SERIES} AS s, MAX(account_key) AS k,
                        MAX(CASE WHEN window = 'primary' THEN used_percent END) AS p,
                        MAX(CASE WHEN window = 'secondary' THEN used_percent END) AS w
                    FROM usage WHERE at >= ?1 GROUP BY d, s),
                days AS (SELECT d, s FROM r UNION SELECT d, s FROM u UNION SELECT d, s FROM t)
                SELECT days.d, days.s, COALESCE(r.k, t.k, u.k), COALESCE(r.n, 0),
                    COALESCE(r.failed, 0), COALESCE(t.i, 0), COALESCE(t.o, 0), COALESCE(t.c, 0),
                    u.p, u.w
                FROM days LEFT JOIN r ON r.d = days.d AND r.s = days.s
                    LEFT JOIN t ON t.d = days.d AND t.s = days.s
                    LEFT JOIN u ON u.d = days.d AND u.s = days.s
                ORDER BY days.d, days.s"
            ))
            .map_err(HistoryError::Read)?;
        let rows = query
            .query_map(params![since_ms], |row| {
                let day: i64 = row.get(0)?;
                Ok(Day {
                    day: time::date(day * DAY_MS),
                    account: row.get(1)?,
                    key: row.get(2)?,
                    requests: row.get(3)?,
                    failed: row.get(4)?,
                    input_tokens: row.get(5)?,
                    output_tokens: row.get(6)?,
                    cached_tokens: row.get(7)?,
                    peak_primary: row.get(8)?,
                    peak_secondary: row.get(9)?,
                })
            })
            .map_err(HistoryError::Read)?;
        let mut days: Vec<Day> = rows.collect::<Result<_, _>>().map_err(HistoryError::Read)?;
        // Each account's names, the one used last coming last.
        let mut query = self
            .connection
            .prepare(&format!(
                "SELECT s, account FROM (
                    SELECT {SERIES} AS s, account, at FROM usage WHERE at >= ?1
                    UNION ALL SELECT {SERIES}, account, at FROM tokens WHERE at >= ?1
                    UNION ALL SELECT {SERIES}, account, at FROM requests
                        WHERE at >= ?1 AND account IS NOT NULL)
                GROUP BY s, account ORDER BY MAX(at)"
            ))
            .map_err(HistoryError::Read)?;
        let names = query
            .query_map(params![since_ms], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(HistoryError::Read)?
            .collect::<Result<Vec<(String, String)>, _>>()
            .map_err(HistoryError::Read)?;
        let mut latest: std::collections::HashMap<&str, &str> = Default::default();
        for (series, name) in &names {
            latest.insert(series, name);
        }
        if let Some(wanted) = account {
            let named = |series: &str| {
                series == wanted || names.iter().any(|(s, n)| s == series && n == wanted)
            };
            days.retain(|d| named(&d.account));
        }
        // Two accounts under one name (two workspaces of one email) are told apart by key.
        let shared = |name: &str| latest.values().filter(|n| **n == name).count() > 1;
        for d in &mut days {
            if let Some(name) = latest.get(d.account.as_str()) {
                d.account = match &d.key {
                    Some(key) if shared(name) => format!("{name} ({key})"),
                    _ => name.to_string(),
                };
            }
        }
        days.sort_by(|a, b| (&a.day, &a.account).cmp(&(&b.day, &b.account)));
        Ok(days)
    }
}
