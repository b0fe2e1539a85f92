//! The state both fake servers share: accounts, their token families (one per sign-in),
//! queued behaviours, usage numbers and every request seen. Locked briefly, never across an
//! await.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::behaviour::FaultPlan;
use super::fake_backend::{Behaviour, SeenRequest};
use super::fake_issuer::LoginState;
use super::jwt::{make_jwt, Subject};
use super::quota::Usage;
use super::websocket::SocketLog;

/// An account to register with [`super::FakeOpenAi::add_account`].
#[derive(Clone, Debug)]
pub struct AccountSpec {
    pub email: String,
    pub account_id: String,
    pub user_id: String,
    pub plan: String,
    /// Lifetime of every access token the issuer mints for this account.
    pub access_ttl: Duration,
    /// The first access token is issued already expired (refreshed ones get `access_ttl`).
    pub first_access_expired: bool,
}

impl AccountSpec {
    /// A "plus" account whose access tokens live one hour.
    pub fn new(email: &str, account_id: &str, user_id: &str) -> Self {
        Self {
            email: email.to_owned(),
            account_id: account_id.to_owned(),
            user_id: user_id.to_owned(),
            plan: "plus".to_owned(),
            access_ttl: Duration::from_secs(3600),
            first_access_expired: false,
        }
    }

    /// The first access token carries an `exp` one minute in the past.
    pub fn expired(mut self) -> Self {
        self.first_access_expired = true;
        self
    }
}

/// Tokens as the issuer hands them out; `expires_at_ms` is the access JWT's `exp` in ms.
#[derive(Clone, Debug)]
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: String,
    pub id_token: String,
    pub expires_at_ms: i64,
}

pub(super) fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since_epoch.as_millis()).expect("milliseconds since 1970 fit in i64")
}

pub(super) fn now_s() -> i64 {
    now_ms() / 1000
}

/// One sign-in: a refresh-token chain and the access token it last produced.
struct Family {
    tokens: IssuedTokens,
    access_revoked: bool,
    /// Set once the chain is unusable; later refreshes fail with this code.
    dead: Option<String>,
}

pub(super) struct Account {
    pub spec: AccountSpec,
    families: Vec<Family>,
    pub refresh_attempts: usize,
    pub fail_next_refresh: Option<(String, u16)>,
    /// Fields left out of this account's refresh answers; without `refresh_token` the issuer
    /// does not rotate, as an issuer may (protocol §1.7: each field is optional).
    pub refresh_omits: Vec<String>,
    pub queue: VecDeque<Behaviour>,
    pub default_behaviour: Behaviour,
    pub usage: Usage,
}

#[derive(Clone, Copy)]
struct TokenRef {
    account: usize,
    family: usize,
}

/// Why the backend accepts or refuses a bearer.
pub(super) enum AccessCheck {
    Valid(usize),
    /// Expired by `exp`, revoked, or superseded by a refresh: all answered with 401.
    Rejected,
    Unknown,
}

/// What the token endpoint answers to a refresh.
pub(super) enum RefreshOutcome {
    Issued(IssuedTokens, Duration),
    Failed { status: u16, body: Value },
}

fn refresh_error(code: &str) -> Value {
    let message = match code {
        "refresh_token_reused" => "Your refresh token has already been used to generate a new access token. Please try signing in again.",
        "refresh_token_expired" => "Your refresh token has expired. Please try signing in again.",
        "refresh_token_invalidated" => "Your refresh token has been invalidated. Please try signing in again.",
        _ => "The fake issuer was told to fail this refresh.",
    };
    json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}})
}

pub(super) struct Registry {
    pub issuer_url: String,
    pub accounts: Vec<Account>,
    by_access: HashMap<String, TokenRef>,
    by_refresh: HashMap<String, TokenRef>,
    rng: u64,
    serial: u64,
    pub refresh_delay: Duration,
    /// Waited after a refresh rotated the tokens and before the answer goes out: a client
    /// that gives up meanwhile has burned its old refresh token without learning the new one.
    pub refresh_answer_delay: Duration,
    requests: Vec<SeenRequest>,
    pub issuer_requests: Vec<SeenRequest>,
    /// Off for long benchmarks, where keeping every body would only grow memory.
    pub recording: bool,
    pub login: LoginState,
    pub websockets: SocketLog,
    pub fault_plan: FaultPlan,
    /// Holds back the second piece of a download (`/files/{id}/content`) until a test
    /// releases it, so that a test can see the first piece arrive on its own.
    pub download_gate: std::sync::Arc<tokio::sync::Notify>,
}

impl Registry {
    pub fn new(issuer_url: String, seed: u64) -> Self {
        Self {
            issuer_url,
            accounts: Vec::new(),
            by_access: HashMap::new(),
            by_refresh: HashMap::new(),
            rng: seed | 1,
            serial: 0,
            refresh_delay: Duration::ZERO,
            refresh_answer_delay: Duration::ZERO,
            requests: Vec::new(),
            issuer_requests: Vec::new(),
            recording: true,
            login: LoginState::default(),
            websockets: SocketLog::default(),
            fault_plan: FaultPlan::default(),
            download_gate: Default::default(),
        }
    }

    pub fn record(&mut self, seen: SeenRequest) {
        if self.recording {
            self.requests.push(seen);
        }
    }

    pub fn requests(&self) -> &[SeenRequest] {
        &self.requests
    }

    pub fn clear_requests(&mut self) {
        self.requests.clear();
        self.issuer_requests.clear();
        self.websockets.frames.clear();
    }

    /// The next number of the fake's serial, the one `unique` also counts with.
    pub fn serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    /// A unique opaque string: a serial for readability, xorshift bits so two fakes differ.
    pub fn unique(&mut self, prefix: &str) -> String {
        self.serial += 1;
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        format!("{prefix}_{}_{:016x}", self.serial, self.rng)
    }

    pub fn add_account(&mut self, spec: AccountSpec) -> IssuedTokens {
        assert!(
            self.find(&spec.account_id).is_none(),
            "account {} is already registered",
            spec.account_id
        );
        let now = now_s();
        let first_expired = spec.first_access_expired;
        self.accounts.push(Account {
            spec,
            families: Vec::new(),
            refresh_attempts: 0,
            fail_next_refresh: None,
            refresh_omits: Vec::new(),
            queue: VecDeque::new(),
            default_behaviour: Behaviour::ok(),
            usage: Usage {
                primary_percent: 0.0,
                secondary_percent: 0.0,
                primary_reset_at: now + 2 * 3600,
                secondary_reset_at: now + 3 * 24 * 3600,
            },
        });
        self.sign_in(self.accounts.len() - 1, first_expired)
    }

    pub fn find(&self, account_id: &str) -> Option<usize> {
        self.accounts
            .iter()
            .position(|a| a.spec.account_id == account_id)
    }

    /// Index of a registered account; test code asking about an unknown one is a bug.
    pub fn index(&self, account_id: &str) -> usize {
        self.find(account_id)
            .unwrap_or_else(|| panic!("account {account_id} is not registered with the fake"))
    }

    pub fn account(&mut self, account_id: &str) -> &mut Account {
        let index = self.index(account_id);
        &mut self.accounts[index]
    }

    /// Starts a new token family for the account, as a fresh login does.
    pub fn sign_in(&mut self, account: usize, access_expired: bool) -> IssuedTokens {
        let family = self.accounts[account].families.len();
        let tokens = self.mint(account, access_expired);
        self.by_refresh
            .insert(tokens.refresh_token.clone(), TokenRef { account, family });
        self.by_access
            .insert(tokens.access_token.clone(), TokenRef { account, family });
        self.accounts[account].families.push(Family {
            tokens: tokens.clone(),
            access_revoked: false,
            dead: None,
        });
        tokens
    }

    fn mint(&mut self, account: usize, access_expired: bool) -> IssuedTokens {
        let (now, ttl) = (now_ms(), self.accounts[account].spec.access_ttl);
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        // JWT `exp` has whole seconds; `expires_at_ms` matches it so both views agree.
        let exp_s = if access_expired {
            now / 1000 - 60
        } else {
            (now + ttl_ms) / 1000
        };
        let (access_jti, id_jti) = (self.unique("at"), self.unique("id"));
        let refresh_token = self.unique("rt");
        let spec = &self.accounts[account].spec;
        let subject = Subject {
            email: &spec.email,
            account_id: &spec.account_id,
            user_id: &spec.user_id,
            plan: &spec.plan,
        };
        let iat = now / 1000;
        IssuedTokens {
            access_token: make_jwt(&subject.access_claims(
                &self.issuer_url,
                iat,
                exp_s,
                &access_jti,
            )),
            refresh_token,
            id_token: make_jwt(&subject.id_claims(&self.issuer_url, iat, iat + 3600, &id_jti)),
            expires_at_ms: exp_s * 1000,
        }
    }

    /// The account a bearer was issued to, valid or not.
    pub fn owner_of_access(&self, token: &str) -> Option<usize> {
        self.by_access.get(token).map(|r| r.account)
    }

    pub fn check_access(&self, token: &str) -> AccessCheck {
        let Some(&TokenRef { account, family }) = self.by_access.get(token) else {
            return AccessCheck::Unknown;
        };
        let family = &self.accounts[account].families[family];
        let valid = family.tokens.access_token == token
            && !family.access_revoked
            && family.dead.is_none()
            && now_ms() < family.tokens.expires_at_ms;
        if valid {
            AccessCheck::Valid(account)
        } else {
            AccessCheck::Rejected
        }
    }

    /// The account a refresh token belongs to, for counting attempts.
    pub fn owner_of_refresh(&self, token: &str) -> Option<usize> {
        self.by_refresh.get(token).map(|r| r.account)
    }

    /// Handles `grant_type=refresh_token`: rotate on the current token, revoke the family on
    /// reuse (as OpenAI does), fail as told by `fail_next_refresh`.
    pub fn refresh(&mut self, token: &str) -> RefreshOutcome {
        let Some(&TokenRef { account, family }) = self.by_refresh.get(token) else {
            return RefreshOutcome::Failed {
                status: 401,
                body: refresh_error("refresh_token_invalidated"),
            };
        };
        self.accounts[account].refresh_attempts += 1;
        if let Some((code, status)) = self.accounts[account].fail_next_refresh.take() {
            let chain = &mut self.accounts[account].families[family];
            if code == "refresh_token_expired" || code == "refresh_token_invalidated" {
                chain.dead = Some(code.clone());
            }
            return RefreshOutcome::Failed {
                status,
                body: refresh_error(&code),
            };
        }
        let chain = &mut self.accounts[account].families[family];
        if let Some(code) = chain.dead.clone() {
            return RefreshOutcome::Failed {
                status: 401,
                body: refresh_error(&code),
            };
        }
        if chain.tokens.refresh_token != token {
            chain.dead = Some("refresh_token_invalidated".to_owned());
            return RefreshOutcome::Failed {
                status: 401,
                body: refresh_error("refresh_token_reused"),
            };
        }
        let mut tokens = self.mint(account, false);
        let here = TokenRef { account, family };
        if self.accounts[account]
            .refresh_omits
            .iter()
            .any(|f| f == "refresh_token")
        {
            tokens.refresh_token = token.to_owned();
        }
        self.by_refresh.insert(tokens.refresh_token.clone(), here);
        self.by_access.insert(tokens.access_token.clone(), here);
        let chain = &mut self.accounts[account].families[family];
        chain.tokens = tokens.clone();
        chain.access_revoked = false;
        RefreshOutcome::Issued(tokens, self.accounts[account].spec.access_ttl)
    }

    /// `/oauth/revoke`: a revoked refresh or access token kills its whole family.
    pub fn revoke(&mut self, token: &str) {
        let found = self
            .by_refresh
            .get(token)
            .or_else(|| self.by_access.get(token))
            .copied();
        if let Some(TokenRef { account, family }) = found {
            self.accounts[account].families[family].dead =
                Some("refresh_token_invalidated".to_owned());
        }
    }

    pub fn expire_access_token(&mut self, account_id: &str) {
        for family in &mut self.account(account_id).families {
            family.access_revoked = true;
        }
    }

    pub fn current_tokens(&mut self, account_id: &str) -> IssuedTokens {
        let account = self.account(account_id);
        let family = account
            .families
            .last()
            .expect("every registered account has signed in once");
        family.tokens.clone()
    }

    /// The behaviour for the next `/responses` or `/responses/compact` call of an account.
    pub fn next_behaviour(&mut self, account: usize) -> Behaviour {
        let account = &mut self.accounts[account];
        account
            .queue
            .pop_front()
            .or_else(|| self.fault_plan.next())
            .unwrap_or_else(|| account.default_behaviour.clone())
    }
}
