//! What the soak watches of the router's process, from /proc: resident memory, open file
//! descriptors, threads.

/// One reading of the router's process.
#[derive(Clone, Copy, Default)]
pub struct Reading {
    pub rss_mb: f64,
    pub fds: usize,
    pub threads: usize,
}

fn status_field(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `None` once the process is gone.
pub fn read(pid: u32) -> Option<Reading> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some(Reading {
        rss_mb: status_field(&status, "VmRSS:")? as f64 / 1024.0,
        fds,
        threads: status_field(&status, "Threads:").unwrap_or(0) as usize,
    })
}
