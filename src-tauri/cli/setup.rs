//! `cma setup`: from install to a working Codex in one command, each step skippable and
//! safe to run again.

use std::time::Duration;

use crate::app::AppError;
use crate::settings::Settings;

pub struct SetupSteps {
    pub login: bool,
    pub device: bool,
    pub no_browser: bool,
    pub configure: bool,
    pub startup: bool,
    pub activate: bool,
}

pub async fn run(settings: &Settings, steps: SetupSteps) -> Result<(), AppError> {
    let has_accounts = !settings.store().load_accounts()?.accounts.is_empty();
    if steps.login && !has_accounts {
        println!("== sign in to a first ChatGPT account");
        super::login::run(
            settings,
            steps.device,
            steps.no_browser,
            Duration::from_secs(600),
        )
        .await?;
    } else if steps.login {
        println!("== accounts: already set up (add more with `cma login`)");
    }
    if steps.configure {
        println!("== point Codex at the router");
        super::operator::configure(settings, false, false, true)?;
    }
    if steps.startup {
        println!("== start the router at login");
        super::operator::install_startup(steps.activate)?;
    }
    println!("== status");
    super::status(settings, false).await
}
