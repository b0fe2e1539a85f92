//! Account use cases on the store: list, find by what the user typed, remove, log out.

use crate::store::{AccountRecord, Store, StoreError};

use super::AppError;

/// How a user names an account on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountSelector(pub String);

impl AccountSelector {
    /// An index, an email, an account id, a user id or a full key.
    fn matches(&self, index: usize, record: &AccountRecord) -> bool {
        let s = self.0.trim();
        s.parse::<usize>().is_ok_and(|i| i == index)
            || record
                .email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(s))
            || record.account_id.as_deref() == Some(s)
            || record.user_id.as_deref() == Some(s)
            || record.key() == s
            || record.label.as_deref() == Some(s)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("no account matches {0:?}; `cma accounts` lists them")]
    NoMatch(String),
    #[error("{selector:?} matches {count} accounts ({names}); use the index or the full key from `cma accounts`")]
    Ambiguous {
        selector: String,
        count: usize,
        names: String,
    },
}

pub fn list_accounts(store: &Store) -> Result<Vec<AccountRecord>, StoreError> {
    Ok(store.load_accounts()?.accounts)
}

/// Indexes of the accounts a selector names.
pub fn find_accounts(accounts: &[AccountRecord], selector: &AccountSelector) -> Vec<usize> {
    accounts
        .iter()
        .enumerate()
        .filter(|(i, r)| selector.matches(*i, r))
        .map(|(i, _)| i)
        .collect()
}

/// The one account a selector names; none or several is an error that lists them.
fn select_one(
    accounts: &[AccountRecord],
    selector: &AccountSelector,
) -> Result<usize, SelectError> {
    let found = find_accounts(accounts, selector);
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(SelectError::NoMatch(selector.0.clone())),
        many => Err(SelectError::Ambiguous {
            selector: selector.0.clone(),
            count: many.len(),
            names: many
                .iter()
                .map(|i| accounts[*i].display_name())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Removes exactly one account, returning it. Ambiguous selectors remove nothing.
pub fn remove_account(
    store: &Store,
    selector: &AccountSelector,
) -> Result<AccountRecord, AppError> {
    let removed = store.update_accounts(|file| {
        let index = select_one(&file.accounts, selector)?;
        let record = file.accounts.remove(index);
        if file.preferred_account.as_deref() == Some(record.key().as_str()) {
            file.preferred_account = None;
        }
        Ok(record)
    })?;
    let removed = removed.map_err(|e: SelectError| AppError::Message(e.to_string()))?;
    // The file no longer points at the entry, so deleting it second can lose nothing.
    store.delete_tokens(&removed)?;
    Ok(removed)
}

/// A change to one account's settings.
#[derive(Clone, Debug)]
pub enum AccountChange {
    Enable,
    Disable,
    Label(Option<String>),
    /// Make it the account new sessions start on (sticky strategy).
    UseForNewSessions,
}

/// Applies a change to exactly one account; returns its name.
pub fn change_account(
    store: &Store,
    selector: &AccountSelector,
    change: AccountChange,
) -> Result<String, AppError> {
    let result = store.update_accounts(|file| {
        let index = &select_one(&file.accounts, selector)?;
        let key = file.accounts[*index].key();
        let record = &mut file.accounts[*index];
        match change {
            AccountChange::Enable => record.enabled = true,
            AccountChange::Disable => record.enabled = false,
            AccountChange::Label(label) => record.label = label.filter(|l| !l.trim().is_empty()),
            AccountChange::UseForNewSessions => {
                record.enabled = true;
                file.preferred_account = Some(key);
            }
        }
        Ok(file.accounts[*index].display_name())
    })?;
    result.map_err(|e: SelectError| AppError::Message(e.to_string()))
}

/// Forgets every account and its tokens on this machine. Tokens are not revoked upstream:
/// that would also sign out every other tool using the same login.
pub fn logout_all(store: &Store) -> Result<Vec<AccountRecord>, AppError> {
    let removed = store.update_accounts(|file| {
        file.preferred_account = None;
        std::mem::take(&mut file.accounts)
    })?;
    for record in &removed {
        store.delete_tokens(record)?;
    }
    Ok(removed)
}
