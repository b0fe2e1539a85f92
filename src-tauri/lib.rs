//! Codex App Account Router: a local OpenAI-compatible proxy that sends each Codex request
//! upstream with one of the user's own ChatGPT accounts, failing over when one is limited.
//! `cli` and `desktop` are thin front ends over `app`.

#![forbid(unsafe_code)]

pub mod accounts;
pub mod app;
pub mod cli;
pub mod codex_config;
#[cfg(feature = "desktop")]
pub mod desktop;
pub mod history;
pub mod oauth;
pub mod paths;
#[cfg(test)]
mod properties;
pub mod proxy;
pub mod routing;
pub mod sensitive;
pub mod settings;
pub mod startup;
pub mod store;
