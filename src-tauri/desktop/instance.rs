//! One tray app per user. The first launch listens on a loopback port that it names, with a
//! random token, in `app-instance.json` beside the accounts file (0600); a later launch hands
//! its arguments over there (open the dashboard, or close it) and leaves.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;

use crate::paths::Paths;
use crate::store::{write_atomic, FileLock};

const FILE: &str = "app-instance.json";

pub enum Claim {
    /// This is the first instance: later launches' arguments arrive here.
    First(mpsc::Receiver<Vec<String>>),
    /// Another instance runs and has the arguments now.
    HandedOver,
}

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("{path} could not be used ({source})")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no loopback port for other launches to find this one ({0})")]
    Listen(std::io::Error),
    #[error("no random token for other launches to prove themselves ({0})")]
    Random(getrandom::Error),
}

#[derive(Serialize, Deserialize)]
struct Advert {
    port: u16,
    token: String,
}

#[derive(Serialize, Deserialize)]
struct Handover {
    token: String,
    args: Vec<String>,
}

/// Hands `args` to a running instance, or becomes the one that runs.
pub fn claim(paths: &Paths, args: &[String]) -> Result<Claim, InstanceError> {
    let dir = paths
        .accounts_file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let file = dir.join(FILE);
    let lock_path = dir.join(".app-instance.lock");
    // Two launches at once: one claims, the other then finds it.
    let _lock = FileLock::acquire(&lock_path).map_err(|source| InstanceError::File {
        path: lock_path.clone(),
        source,
    })?;
    let advert = std::fs::read(&file)
        .ok()
        .and_then(|b| serde_json::from_slice::<Advert>(&b).ok());
    if let Some(advert) = advert {
        if hand_over(&advert, args).is_ok() {
            return Ok(Claim::HandedOver);
        }
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(InstanceError::Listen)?;
    let port = listener.local_addr().map_err(InstanceError::Listen)?.port();
    let token = crate::oauth::random_token(16).map_err(InstanceError::Random)?;
    let advert = serde_json::to_vec(&Advert {
        port,
        token: token.clone(),
    })
    .unwrap_or_default();
    write_atomic(&file, &advert).map_err(|source| InstanceError::File {
        path: file.clone(),
        source,
    })?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if let Some(args) = receive(stream, &token) {
                if tx.send(args).is_err() {
                    break;
                }
            }
        }
    });
    Ok(Claim::First(rx))
}

fn hand_over(advert: &Advert, args: &[String]) -> std::io::Result<()> {
    let addr = (Ipv4Addr::LOCALHOST, advert.port).into();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let handover = Handover {
        token: advert.token.clone(),
        args: args.to_vec(),
    };
    let line = serde_json::to_string(&handover).map_err(std::io::Error::other)?;
    writeln!(stream, "{line}")?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    // Anything else on that port (the file is stale, the port reused) is not us.
    match answer.trim() {
        "ok" => Ok(()),
        _ => Err(std::io::Error::other("not the tray app")),
    }
}

/// One later launch's arguments, if it knows the token.
fn receive(stream: TcpStream, token: &str) -> Option<Vec<String>> {
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut line = String::new();
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    reader.read_line(&mut line).ok()?;
    let handover: Handover = serde_json::from_str(&line).ok()?;
    if !bool::from(handover.token.as_bytes().ct_eq(token.as_bytes())) {
        return None;
    }
    let mut stream = stream;
    writeln!(stream, "ok").ok()?;
    Some(handover.args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(dir: &Path) -> Paths {
        Paths {
            accounts_file: dir.join("openai-accounts.json"),
            bindings_file: dir.join("session-bindings.json"),
            codex_home: dir.join("codex"),
        }
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn a_second_launch_hands_its_arguments_to_the_first_and_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let Ok(Claim::First(requests)) = claim(&paths(dir.path()), &[]) else {
            panic!("the first launch runs");
        };
        let second = claim(&paths(dir.path()), &args(&["--close-dashboard"]));
        assert!(matches!(second, Ok(Claim::HandedOver)), "the second leaves");
        let got = requests.recv_timeout(Duration::from_secs(5));
        assert_eq!(got.ok(), Some(args(&["--close-dashboard"])));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "the token's file is private");
        }
    }

    #[test]
    fn a_stale_file_or_a_stranger_on_its_port_does_not_stop_a_launch() {
        let dir = tempfile::tempdir().unwrap();
        // A port that something else holds and answers on, named in a left-over file.
        let stranger = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = stranger.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut s in stranger.incoming().flatten() {
                let _ = writeln!(s, "HTTP/1.1 400 Bad Request\r\n");
            }
        });
        let stale = format!(r#"{{"port":{port},"token":"old"}}"#);
        std::fs::write(dir.path().join(FILE), stale).unwrap();
        let first = claim(&paths(dir.path()), &[]);
        assert!(matches!(first, Ok(Claim::First(_))), "this launch runs");
        let advert: Advert =
            serde_json::from_slice(&std::fs::read(dir.path().join(FILE)).unwrap()).unwrap();
        assert_ne!(advert.port, port, "the file names the new instance");
    }

    #[test]
    fn a_wrong_token_is_not_obeyed() {
        let dir = tempfile::tempdir().unwrap();
        let Ok(Claim::First(requests)) = claim(&paths(dir.path()), &[]) else {
            panic!("the first launch runs");
        };
        let advert: Advert =
            serde_json::from_slice(&std::fs::read(dir.path().join(FILE)).unwrap()).unwrap();
        let forged = Advert {
            port: advert.port,
            token: "0".repeat(32),
        };
        assert!(hand_over(&forged, &args(&["--close-dashboard"])).is_err());
        assert!(requests.recv_timeout(Duration::from_millis(300)).is_err());
    }
}
