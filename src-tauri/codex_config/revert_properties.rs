//! Properties of configure and revert on a user's own config.toml: whatever the user writes
//! between applies, revert keeps every line of theirs; with no edits it gives back the
//! original byte for byte.

use proptest::prelude::*;

use super::*;

fn config() -> ProptestConfig {
    crate::properties::seeded(64)
}

fn settings() -> impl Strategy<Value = ProviderSettings> {
    (1024u16.., any::<bool>()).prop_map(|(port, with_token)| ProviderSettings {
        base_url: format!("http://127.0.0.1:{port}/v1"),
        with_token,
    })
}

/// A config.toml a user may have: keys, comments and blank lines at the top, their own
/// tables, maybe their own provider, maybe an old block of the router's; LF or CRLF, with
/// or without a final newline. `None` when there is no file.
fn original() -> impl Strategy<Value = Option<String>> {
    let root_line = prop_oneof![
        Just("model = \"gpt-5.5\"".to_string()),
        Just("approval_policy = \"never\" # why not".to_string()),
        Just("model_provider = \"openai\"".to_string()),
        "# [a-z ]{0,12}",
        Just(String::new()),
    ];
    let table = (0usize..3, any::<bool>()).prop_map(|(kind, with_key)| match kind {
        0 => vec!["[model_providers.ollama]", "name = \"Ollama\""],
        1 => vec![
            "# an old one",
            "[model_providers.multi-auth-proxy]",
            "name = \"old\"",
            "stream_max_retries = 3",
        ],
        _ if with_key => vec!["[profiles.fast]", "model = \"gpt-5.4-mini\""],
        _ => vec!["[profiles.fast]"],
    });
    let file = (
        prop::collection::vec(root_line, 0..5),
        prop::collection::vec(table, 0..3),
        prop_oneof![Just("\n"), Just("\r\n")],
        any::<bool>(),
    )
        .prop_map(|(root, tables, end, final_newline)| {
            let mut lines: Vec<String> = Vec::new();
            let mut seen_root = std::collections::BTreeSet::new();
            for line in root {
                let key = line.split(' ').next().unwrap_or("").to_string();
                if line.starts_with('#') || line.is_empty() || seen_root.insert(key) {
                    lines.push(line);
                }
            }
            let mut seen_tables = std::collections::BTreeSet::new();
            for table in tables {
                let header = table.iter().find(|l| l.starts_with('[')).copied();
                if seen_tables.insert(header) {
                    lines.extend(table.iter().map(|l| l.to_string()));
                }
            }
            let mut text = lines.join(end);
            if final_newline && !text.is_empty() {
                text.push_str(end);
            }
            text
        });
    prop::option::of(file)
}

/// What a user does to the file between two applies.
#[derive(Clone, Debug)]
enum Edit {
    KeyAtTop,
    CommentAtTop,
    NewTable,
    KeyInTheirTable(prop::sample::Index),
    CommentBeforeTheirTable(prop::sample::Index),
    CommentBeforeTheRoutersBlock,
    ChangeTheirLine(prop::sample::Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        Just(Edit::KeyAtTop),
        Just(Edit::CommentAtTop),
        Just(Edit::NewTable),
        any::<prop::sample::Index>().prop_map(Edit::KeyInTheirTable),
        any::<prop::sample::Index>().prop_map(Edit::CommentBeforeTheirTable),
        Just(Edit::CommentBeforeTheRoutersBlock),
        any::<prop::sample::Index>().prop_map(Edit::ChangeTheirLine),
    ]
}

fn is_their_table(line: &str) -> bool {
    line.starts_with('[') && !line.contains(PROVIDER_ID)
}

/// Makes `edit` in `text`; `theirs` is every line the user has written so far, and gains
/// (or changes) the line the edit writes. Each written line is unique by its `tag`.
fn make_edit(text: &str, edit: &Edit, tag: &str, theirs: &mut Vec<String>) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let key = format!("user_{tag} = 1");
    let comment = format!("# user note {tag}");
    let tables: Vec<usize> = (0..lines.len())
        .filter(|&i| is_their_table(lines[i].trim_end_matches('\r')))
        .collect();
    let new_table = |lines: &mut Vec<String>, theirs: &mut Vec<String>| {
        let header = format!("[profiles.user_{tag}]");
        lines.extend([String::new(), header.clone(), key.clone()]);
        theirs.extend([header, key.clone()]);
    };
    match edit {
        Edit::KeyAtTop => {
            lines.insert(0, key.clone());
            theirs.push(key);
        }
        Edit::CommentAtTop => {
            lines.insert(0, comment.clone());
            theirs.push(comment);
        }
        Edit::NewTable => new_table(&mut lines, theirs),
        Edit::KeyInTheirTable(_) | Edit::CommentBeforeTheirTable(_) if tables.is_empty() => {
            new_table(&mut lines, theirs)
        }
        Edit::KeyInTheirTable(which) => {
            lines.insert(tables[which.index(tables.len())] + 1, key.clone());
            theirs.push(key);
        }
        Edit::CommentBeforeTheirTable(which) => {
            lines.insert(tables[which.index(tables.len())], comment.clone());
            theirs.push(comment);
        }
        Edit::CommentBeforeTheRoutersBlock => {
            let header = format!("[model_providers.{PROVIDER_ID}]");
            let at = lines
                .iter()
                .position(|l| l.trim_end_matches('\r') == header);
            lines.insert(at.unwrap_or(0), comment.clone());
            theirs.push(comment);
        }
        Edit::ChangeTheirLine(which) => {
            // A `user_..` key they wrote earlier gets a new value.
            let keys: Vec<usize> = (0..theirs.len())
                .filter(|&i| theirs[i].starts_with("user_") && theirs[i].contains(" = "))
                .collect();
            if keys.is_empty() {
                lines.insert(0, key.clone());
                theirs.push(key);
            } else {
                let old = theirs[keys[which.index(keys.len())]].clone();
                let new = format!(
                    "{} = \"changed {tag}\"",
                    old.split(" = ").next().unwrap_or("")
                );
                if let Some(line) = lines.iter_mut().find(|l| l.trim_end_matches('\r') == old) {
                    *line = new.clone();
                }
                theirs.retain(|l| *l != old);
                theirs.push(new);
            }
        }
    }
    lines.join("\n") + "\n"
}

/// A Codex home on tmpfs where there is one: every apply fsyncs three files.
fn codex_home() -> Result<tempfile::TempDir, TestCaseError> {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .map_err(|e| TestCaseError::fail(e.to_string()))
}

fn read(config: &CodexConfig) -> Option<String> {
    std::fs::read_to_string(config.path()).ok()
}

proptest! {
    #![proptest_config(config())]

    /// Apply, then rounds of user edits each followed by another apply, then revert: every
    /// line the user wrote (in the original or since) is still there, and none of cma's.
    #[test]
    fn revert_keeps_every_line_the_user_wrote_between_applies(
        original in original(),
        first in settings(),
        rounds in prop::collection::vec(
            (prop::collection::vec(edit(), 1..4), settings()),
            1..3,
        ),
    ) {
        let home = codex_home()?;
        let config = CodexConfig::new(home.path());
        if let Some(text) = &original {
            std::fs::write(config.path(), text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        let mut theirs: Vec<String> = original
            .as_deref()
            .unwrap_or("")
            .lines()
            .map(|l| l.trim_end_matches('\r').to_string())
            .filter(|l| !l.is_empty())
            .collect();
        config.apply(&first).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (round, (edits, settings)) in rounds.iter().enumerate() {
            let mut text = read(&config).unwrap_or_default();
            for (n, edit) in edits.iter().enumerate() {
                text = make_edit(&text, edit, &format!("{round}_{n}"), &mut theirs);
            }
            std::fs::write(config.path(), &text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            config.apply(settings).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        config.revert().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let after = read(&config).unwrap_or_default();
        let lines: Vec<&str> = after.lines().map(|l| l.trim_end_matches('\r')).collect();
        for line in &theirs {
            prop_assert!(lines.contains(&line.as_str()), "{:?} lost:\n{}", line, after);
        }
        prop_assert!(!after.contains(PROVIDER_NAME), "{}", after);
        prop_assert!(!after.contains(&format!("model_provider = \"{PROVIDER_ID}\"")), "{}", after);
    }

    /// Applies with any settings and no edit between them: revert gives back the original
    /// bytes, or no file when there was none.
    #[test]
    fn revert_without_edits_gives_back_the_original_bytes(
        original in original(),
        applies in prop::collection::vec(settings(), 1..4),
    ) {
        let home = codex_home()?;
        let config = CodexConfig::new(home.path());
        if let Some(text) = &original {
            std::fs::write(config.path(), text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        for settings in &applies {
            config.apply(settings).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        config.revert().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(read(&config), original);
    }
}

/// Applies `first`, lets the user make `edit`, applies again and reverts.
fn revert_after_edit(original: Option<&str>, edit: Edit) -> (String, Vec<String>) {
    let home = codex_home().unwrap();
    let config = CodexConfig::new(home.path());
    if let Some(text) = original {
        std::fs::write(config.path(), text).unwrap();
    }
    let settings = ProviderSettings {
        base_url: "http://127.0.0.1:1024/v1".into(),
        with_token: false,
    };
    config.apply(&settings).unwrap();
    let mut theirs = Vec::new();
    let edited = make_edit(&read(&config).unwrap(), &edit, "0_0", &mut theirs);
    std::fs::write(config.path(), edited).unwrap();
    config.apply(&settings).unwrap();
    config.revert().unwrap();
    (read(&config).unwrap_or_default(), theirs)
}

/// Found by the property above: a comment written at the top of a file cma created sat above
/// cma's `model_provider` line and went with it.
#[test]
fn a_comment_above_the_routers_model_provider_line_survives_revert() {
    let (after, theirs) = revert_after_edit(None, Edit::CommentAtTop);
    assert_eq!(after, format!("{}\n", theirs[0]));
}

/// Found by the property above: a comment written above the router's block, where the
/// original file had one, went when the original block was put back.
#[test]
fn a_comment_above_the_routers_block_survives_revert() {
    let original = "# an old one\n[model_providers.multi-auth-proxy]\nname = \"old\"\n";
    let (after, theirs) = revert_after_edit(Some(original), Edit::CommentBeforeTheRoutersBlock);
    assert_eq!(
        after,
        format!(
            "# an old one\n{}\n[model_providers.multi-auth-proxy]\nname = \"old\"\n",
            theirs[0]
        )
    );
}
