//! Who holds a busy port: our own router (seen through `/health`) or another program
//! (found through /proc on Linux), so the error can say what to do.

use std::net::SocketAddr;
use std::time::Duration;

/// What is listening on an address we could not bind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortHolder {
    /// Another Codex App Account Router.
    OurRouter,
    /// Another program, by name and pid when the OS tells.
    Program(Option<String>),
}

pub async fn identify(addr: SocketAddr) -> PortHolder {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(1))
        .build();
    if let Ok(client) = client {
        let health = client.get(format!("http://{addr}/health")).send().await;
        if let Ok(response) = health {
            if let Ok(body) = response.json::<serde_json::Value>().await {
                if body.get("service").and_then(|s| s.as_str()) == Some(crate::proxy::SERVICE_NAME)
                {
                    return PortHolder::OurRouter;
                }
            }
        }
    }
    PortHolder::Program(listening_program(addr.port()))
}

/// Finds the process listening on `port` through /proc; `None` when the process belongs to
/// another user.
#[cfg(target_os = "linux")]
fn listening_program(port: u16) -> Option<String> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|text| text.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit(':').next()?;
            let listening = fields.get(3) == Some(&"0A");
            (listening && u16::from_str_radix(local_port, 16).ok()? == port)
                .then(|| fields.get(9).map(|s| s.to_string()))
                .flatten()
        })?;
    let target = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == target));
        if holds {
            let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            return Some(format!("{} (pid {pid})", name.trim()));
        }
    }
    None
}

/// Without /proc the program is not looked up: the error names none.
#[cfg(not(target_os = "linux"))]
fn listening_program(_port: u16) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_the_program_holding_a_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        match identify(addr).await {
            PortHolder::Program(Some(name)) => {
                assert!(name.contains(&std::process::id().to_string()), "{name}")
            }
            PortHolder::Program(None) if !cfg!(target_os = "linux") => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}
