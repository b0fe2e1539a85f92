//! The TOML edits themselves, with toml_edit so that comments, order and formatting of
//! everything else survive.

use toml_edit::{value, Decor, DocumentMut, Item, Table};

use super::ProviderSettings;

/// The provider id and display name the router's block uses (the seed's).
pub const PROVIDER_ID: &str = "multi-auth-proxy";
pub const PROVIDER_NAME: &str = "Codex App Account Router";

fn parse(text: &str) -> Result<DocumentMut, String> {
    text.parse::<DocumentMut>()
        .map_err(|e| e.to_string().trim().replace('\n', " "))
}

/// The block as it should read, for display.
pub fn desired_block(settings: &ProviderSettings) -> String {
    apply_block("", settings).unwrap_or_default()
}

/// Points `model_provider` at the router's provider and writes its block; sets only what
/// differs, so a second run changes nothing.
pub fn apply_block(text: &str, settings: &ProviderSettings) -> Result<String, String> {
    let mut doc = parse(text)?;
    set_str(doc.as_table_mut(), "model_provider", PROVIDER_ID);
    let providers = doc
        .entry("model_providers")
        .or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        })
        .as_table_mut()
        .ok_or("`model_providers` is not a table")?;
    let block = providers
        .entry(PROVIDER_ID)
        .or_insert_with(|| Item::Table(Table::new()))
        .as_table_mut()
        .ok_or("`model_providers.multi-auth-proxy` is not a table")?;
    set_str(block, "name", PROVIDER_NAME);
    set_str(block, "base_url", &settings.base_url);
    set_str(block, "wire_api", "responses");
    if block.get("supports_websockets").and_then(Item::as_bool) != Some(false) {
        replace_keeping_comment(block, "supports_websockets", value(false));
    }
    if settings.with_token {
        set_str(block, "env_key", "CODEX_PROXY_TOKEN");
    } else {
        block.remove("env_key");
    }
    // Codex would hand the user's own ChatGPT login to us with it; we never want that.
    block.remove("requires_openai_auth");
    Ok(doc.to_string())
}

fn set_str(table: &mut Table, key: &str, wanted: &str) {
    if table.get(key).and_then(Item::as_str) != Some(wanted) {
        replace_keeping_comment(table, key, value(wanted));
    }
}

/// Sets `key`, keeping the comment and spacing around the old value (`x = "a" # why`).
fn replace_keeping_comment(table: &mut Table, key: &str, new: Item) {
    let decor = table
        .get(key)
        .and_then(Item::as_value)
        .map(|v| v.decor().clone());
    table[key] = new;
    if let (Some(decor), Some(v)) = (decor, table.get_mut(key).and_then(Item::as_value_mut)) {
        *v.decor_mut() = decor;
    }
}

/// Takes out what `apply_block` changed, leaving the user's later edits: the provider table
/// and `model_provider` go back to what the original (`backup`) had, or go away if it had none.
pub fn remove_block(text: &str, backup: &str) -> Result<String, String> {
    let mut doc = parse(text)?;
    let original = parse(backup).unwrap_or_default();
    let original_block = original
        .get("model_providers")
        .and_then(Item::as_table)
        .and_then(|t| t.get(PROVIDER_ID))
        .cloned();
    // Comments the user wrote above the header of a block that goes, and where it stood.
    let mut removed_block = None;
    if let Some(providers) = doc.get_mut("model_providers").and_then(Item::as_table_mut) {
        match original_block {
            Some(mut block) => {
                if let (Some(kept), Some(now)) = (
                    block.as_table_mut(),
                    providers.get(PROVIDER_ID).and_then(Item::as_table),
                ) {
                    keep_users_keys(kept, now);
                    keep_users_comments(kept.decor_mut(), now.decor());
                }
                providers.insert(PROVIDER_ID, block);
            }
            // The block is cma's own: lines put in it go with it (a provider without the
            // `name` cma wrote would stop Codex from reading the file).
            None => {
                if let Some(block) = providers.remove(PROVIDER_ID) {
                    removed_block = block
                        .as_table()
                        .map(|b| (comments_in(b.decor()), b.position()));
                }
            }
        }
        if providers.is_empty() && providers.is_implicit() {
            doc.remove("model_providers");
        }
    }
    if let Some((comments, position)) = removed_block {
        keep_comments(&mut doc, &comments, None, position);
    }
    if doc.get("model_provider").and_then(Item::as_str) == Some(PROVIDER_ID) {
        match original.get("model_provider").and_then(Item::as_str) {
            Some(p) => set_str(doc.as_table_mut(), "model_provider", p),
            None => remove_root_key(&mut doc, "model_provider"),
        }
    }
    Ok(doc.to_string())
}

/// Removes a root key cma wrote; comments the user put above it stay where it stood.
fn remove_root_key(doc: &mut DocumentMut, key: &str) {
    let next = doc
        .iter()
        .filter(|(_, item)| item.is_value())
        .map(|(k, _)| k)
        .skip_while(|k| *k != key)
        .nth(1)
        .map(str::to_string);
    let comments = doc
        .key(key)
        .map(|k| comments_in(k.leaf_decor()))
        .unwrap_or_default();
    doc.remove(key);
    keep_comments(doc, &comments, next.as_deref(), None);
}

/// The comment lines of a decor's prefix: what the user wrote above a line cma takes out.
fn comments_in(decor: &Decor) -> String {
    let prefix = decor.prefix().and_then(|p| p.as_str()).unwrap_or("");
    prefix
        .lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| line.trim_start().starts_with('#'))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Adds to the original header's comments those the user wrote above it since.
fn keep_users_comments(original: &mut Decor, now: &Decor) {
    let mut prefix = original
        .prefix()
        .and_then(|p| p.as_str())
        .unwrap_or("")
        .to_string();
    for line in comments_in(now).lines() {
        if !prefix.lines().any(|l| l.trim_end_matches('\r') == line) {
            prefix.push_str(line);
            prefix.push('\n');
        }
    }
    original.set_prefix(prefix);
}

/// Puts `comments` back where a removed line stood: above the root key `next` when one
/// followed it, else above the first table header after position `after`, else at the end.
fn keep_comments(doc: &mut DocumentMut, comments: &str, next: Option<&str>, after: Option<isize>) {
    if comments.is_empty() {
        return;
    }
    let prepend = |decor: &mut Decor| {
        let old = decor.prefix().and_then(|p| p.as_str()).unwrap_or("");
        let prefix = format!("{comments}{old}");
        decor.set_prefix(prefix);
    };
    if let Some(mut key) = next.and_then(|next| doc.key_mut(next)) {
        prepend(key.leaf_decor_mut());
        return;
    }
    let mut first = None;
    first_table_after(doc.as_table(), after, &mut Vec::new(), &mut first);
    match first.and_then(|(_, path)| table_at(doc.as_table_mut(), &path)) {
        Some(table) => prepend(table.decor_mut()),
        None => {
            let trailing = doc.trailing().as_str().unwrap_or("").to_string();
            doc.set_trailing(format!("{comments}{trailing}"));
        }
    }
}

/// The header rendered first after position `after` (all of them when `None`): its
/// position and the keys leading to it.
fn first_table_after(
    table: &Table,
    after: Option<isize>,
    path: &mut Vec<String>,
    first: &mut Option<(isize, Vec<String>)>,
) {
    for (key, item) in table.iter() {
        let Some(child) = item.as_table() else {
            continue;
        };
        path.push(key.to_string());
        if let Some(at) = child.position().filter(|_| !child.is_implicit()) {
            let later = after.is_none_or(|after| at > after);
            if later && first.as_ref().is_none_or(|(best, _)| at < *best) {
                *first = Some((at, path.clone()));
            }
        }
        first_table_after(child, after, path, first);
        path.pop();
    }
}

fn table_at<'a>(table: &'a mut Table, path: &[String]) -> Option<&'a mut Table> {
    match path.split_first() {
        None => Some(table),
        Some((key, rest)) => table_at(table.get_mut(key)?.as_table_mut()?, rest),
    }
}

/// The keys `apply_block` sets or removes in its block; revert gives these their original
/// values and leaves every other key as the user has it now.
const OWN_KEYS: [&str; 6] = [
    "name",
    "base_url",
    "wire_api",
    "supports_websockets",
    "env_key",
    "requires_openai_auth",
];

/// Carries the user's keys of the block as it is `now` into the original `block`: a key they
/// added or changed since comes over, one they deleted goes; the rest keeps its original
/// bytes and place.
fn keep_users_keys(block: &mut Table, now: &Table) {
    let deleted: Vec<String> = block
        .iter()
        .map(|(key, _)| key.to_string())
        .filter(|key| !OWN_KEYS.contains(&key.as_str()) && !now.contains_key(key))
        .collect();
    for key in deleted {
        block.remove(&key);
    }
    for (key, item) in now.iter() {
        let changed = block.get(key).map(Item::to_string) != Some(item.to_string());
        if !OWN_KEYS.contains(&key) && changed {
            block.insert(key, item.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(with_token: bool) -> ProviderSettings {
        ProviderSettings {
            base_url: "http://127.0.0.1:8787/v1".into(),
            with_token,
        }
    }

    const USER: &str = r#"# my Codex settings
model = "gpt-5.5" # the default
model_provider = "openai"

[profiles.fast]
model = "gpt-5.4-mini"

# a local model
[model_providers.ollama-local]
name = "Ollama"
base_url = "http://localhost:11434/v1"
"#;

    #[test]
    fn keeps_comments_and_other_tables_and_is_idempotent() {
        let once = apply_block(USER, &settings(false)).unwrap();
        for kept in [
            "# my Codex settings",
            "# the default",
            "[profiles.fast]",
            "# a local model",
            "[model_providers.ollama-local]",
        ] {
            assert!(once.contains(kept), "{kept} lost:\n{once}");
        }
        assert!(
            once.contains("model_provider = \"multi-auth-proxy\""),
            "{once}"
        );
        assert!(once.contains("[model_providers.multi-auth-proxy]"));
        assert!(once.contains("supports_websockets = false"));
        assert!(!once.contains("env_key"));
        assert_eq!(apply_block(&once, &settings(false)).unwrap(), once);
        let with_token = apply_block(&once, &settings(true)).unwrap();
        assert!(with_token.contains("env_key = \"CODEX_PROXY_TOKEN\""));
    }

    #[test]
    fn removing_takes_out_only_our_lines() {
        let applied = apply_block(USER, &settings(true)).unwrap();
        let edited = applied.replace("model = \"gpt-5.5\"", "model = \"gpt-6\"");
        let removed = remove_block(&edited, USER).unwrap();
        assert!(
            removed.contains("model = \"gpt-6\""),
            "the user's later edit stays"
        );
        assert!(removed.contains("model_provider = \"openai\""));
        assert!(!removed.contains("multi-auth-proxy"));
        assert!(removed.contains("[model_providers.ollama-local]"));
    }

    #[test]
    fn invalid_toml_is_reported_with_its_line() {
        let err = apply_block("model = \"x\"\n[broken\n", &settings(false)).unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }
}
