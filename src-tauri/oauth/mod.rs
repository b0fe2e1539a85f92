//! OAuth with OpenAI's issuer, as Codex does it: the browser login (PKCE), the device-code
//! login, token refresh, and the claims inside ChatGPT's JWTs.

mod browser;
pub mod claims;
mod device;
mod exchange;
mod pkce;
pub mod refresh;

use std::time::Duration;

pub use browser::{begin_browser_login, BrowserLogin, BrowserLoginOptions, CALLBACK_PORTS};
pub use claims::TokenClaims;
pub use device::{complete_device_login, request_device_code, DeviceCode};
pub use exchange::LoginTokens;
pub use pkce::random_token;
pub use refresh::{refresh, RefreshError, RefreshedTokens, CLIENT_ID};

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("ports {0:?} are all in use, and the sign-in server only accepts these; close what holds them (`codex login` uses them too) and try again")]
    PortsBusy(Vec<u16>),
    #[error("the sign-in was refused: {0}")]
    Denied(String),
    #[error("the sign-in server sent no authorization code")]
    MissingCode,
    #[error("{0}")]
    Exchange(String),
    #[error("the login was cancelled")]
    Cancelled,
    #[error("no login completed within {} s", .0.as_secs())]
    TimedOut(Duration),
    #[error("the login could not start: {0}")]
    Io(String),
    #[error("the sign-in did not say which account this is (no account id in the token)")]
    NoIdentity,
}
