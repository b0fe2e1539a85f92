//! `cma doctor`: prints each finding and its fix; non-zero exit when something is broken.

use crate::app::{self, AppError, Verdict};
use crate::settings::Settings;

/// Returns whether everything essential is fine.
pub async fn run(settings: &Settings, json: bool) -> Result<bool, AppError> {
    let env = |k: &str| std::env::var(k).ok();
    let findings = app::diagnose(settings, &env, &super::operator::home()).await;
    let healthy = findings.iter().all(|f| f.verdict != Verdict::Fail);
    if json {
        let value = serde_json::json!({"healthy": healthy, "findings": findings});
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(healthy);
    }
    for f in &findings {
        let mark = match f.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        println!("{mark}  {:<13} {}", f.check, f.detail);
        if !f.fix.is_empty() && f.verdict != Verdict::Ok {
            println!("      {:<13} fix: {}", "", f.fix);
        }
    }
    Ok(healthy)
}
