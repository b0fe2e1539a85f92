//! Keychain entries of real size, against the real Secret Service of the test run: with the
//! 2 KB JWTs auth.openai.com issues, every entry we write fits the smallest of the three
//! keychains (Windows Credential Manager: 2,560 bytes, 1,280 UTF-16 characters), the tokens
//! still read back whole, and an entry in the old three-token shape is read and then shrunk.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::json;

use router::paths::Paths;
use router::store::{AccountRecord, Keychain, Store, StoredSecret, TokenMode, TokenSet};

use crate::keychain::service;

/// Windows' limit for a password, the smallest of the three keychains.
const WINDOWS_MAX_UTF16: usize = 1_280;

/// A JWT of exactly `len` characters, shaped like auth.openai.com's: header, claims padded
/// to size, and an RS256-sized signature.
fn jwt_of_size(len: usize, tag: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "typ": "JWT"}).to_string());
    let signature = "s".repeat(342);
    let mut claims = json!({"jti": tag, "pad": ""}).to_string();
    let mut payload = URL_SAFE_NO_PAD.encode(&claims);
    while header.len() + payload.len() + signature.len() + 2 < len {
        claims = claims.replacen("\"pad\":\"", "\"pad\":\"x", 1);
        payload = URL_SAFE_NO_PAD.encode(&claims);
    }
    let jwt = format!("{header}.{payload}.{signature}");
    jwt[..len.min(jwt.len())].to_string()
}

/// A token set as a login leaves it: two 2 KB JWTs and an opaque refresh token.
fn tokens_of_real_size(tag: &str) -> TokenSet {
    TokenSet {
        access: Some(StoredSecret(jwt_of_size(2_048, &format!("at-{tag}")))),
        refresh: Some(StoredSecret(format!("rt_{tag}_{}", "r".repeat(120)))),
        id_token: Some(StoredSecret(jwt_of_size(2_048, &format!("id-{tag}")))),
    }
}

struct Pool {
    _dir: tempfile::TempDir,
    store: Store,
    service: String,
    record: AccountRecord,
}

impl Pool {
    fn new() -> Pool {
        let dir = tempfile::tempdir().unwrap();
        let service = service(dir.path());
        let store = Store::with_tokens(
            &Paths::under(dir.path()),
            TokenMode::Keychain,
            Keychain::new(&service),
        );
        let record = AccountRecord {
            email: Some("a@example.com".into()),
            account_id: Some("acct-a".into()),
            user_id: Some("user-acct-a".into()),
            enabled: true,
            ..Default::default()
        };
        Pool {
            _dir: dir,
            store,
            service,
            record,
        }
    }

    fn raw_entry(&self) -> keyring::Entry {
        keyring::Entry::new(&self.service, &self.record.key()).unwrap()
    }

    /// The entry's size in UTF-16 units, as Windows counts it.
    fn entry_size(&self) -> usize {
        let secret = self.raw_entry().get_password().expect("an entry");
        secret.encode_utf16().count()
    }

    fn saved_record(&self) -> AccountRecord {
        let file = self.store.load_accounts().unwrap();
        file.accounts
            .into_iter()
            .find(|r| r.key() == self.record.key())
            .expect("the account is in the file")
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = self.raw_entry().delete_credential();
    }
}

#[test]
fn a_login_with_tokens_of_real_size_fits_the_smallest_keychain() {
    let pool = Pool::new();
    let tokens = tokens_of_real_size("one");
    let key = pool.record.key();
    pool.store
        .save_tokens(&key, &tokens, None, Some(pool.record.clone()), |_| {})
        .expect("the login is saved");
    let size = pool.entry_size();
    eprintln!("keychain entry after a login with 2 KB JWTs: {size} UTF-16 units");
    assert!(
        size <= WINDOWS_MAX_UTF16,
        "the entry has {size} UTF-16 units; Windows takes at most {WINDOWS_MAX_UTF16}"
    );
    let read = pool.store.read_tokens(&pool.saved_record()).unwrap();
    assert_eq!(read, tokens, "every token reads back whole");
    let file = std::fs::read_to_string(pool.store.accounts_path()).unwrap();
    assert!(!file.contains("rt_one"), "no token is in the accounts file");
}

#[test]
fn a_refresh_shrinks_an_entry_of_the_old_shape_and_keeps_every_token() {
    let pool = Pool::new();
    let old = tokens_of_real_size("old");
    // A login by an earlier version: the three tokens in the entry itself.
    pool.store
        .update_accounts(|f| {
            let mut record = pool.record.clone();
            record.token_store = Some("keychain".into());
            f.accounts.push(record);
        })
        .unwrap();
    pool.raw_entry()
        .set_password(&serde_json::to_string(&old).unwrap())
        .unwrap();
    assert_eq!(pool.store.read_tokens(&pool.saved_record()).unwrap(), old);

    // A refresh answer that leaves out the id_token: the stored one is kept.
    let new = tokens_of_real_size("new");
    let answer = TokenSet {
        id_token: None,
        ..new.clone()
    };
    let _refreshing = pool.store.refresh_lock(&pool.record.key()).unwrap();
    pool.store
        .save_refreshed_tokens(&pool.record.key(), &answer, None, |_| {})
        .unwrap();
    let size = pool.entry_size();
    eprintln!("keychain entry after a refresh: {size} UTF-16 units");
    assert!(size <= WINDOWS_MAX_UTF16, "{size} UTF-16 units");
    let read = pool.store.read_tokens(&pool.saved_record()).unwrap();
    assert_eq!(read.access, new.access);
    assert_eq!(read.refresh, new.refresh);
    assert_eq!(
        read.id_token, old.id_token,
        "the id_token the answer left out"
    );
}

#[test]
fn the_check_before_a_sign_in_passes_on_a_keychain_that_takes_the_largest_entry() {
    let pool = Pool::new();
    pool.store
        .check_before_login()
        .expect("the Secret Service takes an entry of the largest size");
    assert!(
        pool.raw_entry().get_password().is_err(),
        "the check touched no account's entry"
    );
}
