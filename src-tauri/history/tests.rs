use super::*;

const NOW: i64 = 1_796_423_405_000; // 2026-12-04T22:30:05Z

/// The key the helpers below give an account named `account`.
fn key(account: &str) -> String {
    format!("id-{account}/u")
}

fn usage(at: i64, account: &str, window: &'static str, used: f64) -> Entry {
    usage_as(at, &key(account), account, window, used)
}

fn usage_as(at: i64, key: &str, account: &str, window: &'static str, used: f64) -> Entry {
    Entry::Usage(UsageReading {
        at,
        account: account.to_string(),
        key: key.to_string(),
        window,
        used_percent: used,
        window_minutes: Some(300),
        resets_at: Some(at / 1000 + 3600),
    })
}

fn request(at: i64, account: &str, status: u16) -> Entry {
    Entry::Request(RequestOutcome {
        at,
        account: Some(account.to_string()),
        key: Some(key(account)),
        model: "gpt-5.5".to_string(),
        status,
        first_byte_ms: 12.5,
    })
}

fn tokens(at: i64, account: &str, input: i64, output: i64, cached: i64) -> Entry {
    tokens_as(at, &key(account), account, input, output, cached)
}

fn tokens_as(at: i64, key: &str, account: &str, input: i64, output: i64, cached: i64) -> Entry {
    Entry::Tokens(Tokens {
        at,
        account: account.to_string(),
        key: key.to_string(),
        input,
        output,
        cached,
    })
}

#[test]
fn a_new_history_is_private_and_keeps_what_was_recorded_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let (mut history, opened) = History::open(&path, NOW).unwrap();
    assert_eq!(opened, Opened::Created);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only the user reads the history");
    }
    let yesterday = NOW - DAY_MS;
    history
        .record(&[
            usage(yesterday, "a@example.com", "primary", 40.0),
            usage(yesterday + 1000, "a@example.com", "primary", 55.0),
            usage(yesterday, "a@example.com", "secondary", 20.0),
            request(yesterday, "a@example.com", 200),
            tokens(yesterday + 9, "a@example.com", 1000, 50, 800),
            request(yesterday + 5, "a@example.com", 429),
            request(NOW, "b@example.com", 200),
            tokens(NOW, "b@example.com", 10, 5, 0),
        ])
        .unwrap();
    drop(history);

    let (history, opened) = History::open(&path, NOW).unwrap();
    assert_eq!(opened, Opened::Existing);
    let days = history.days(NOW - 7 * DAY_MS, None).unwrap();
    assert_eq!(days.len(), 2, "{days:?}");
    let a = &days[0];
    assert_eq!(
        (a.day.as_str(), a.account.as_str()),
        ("2026-12-03", "a@example.com")
    );
    assert_eq!((a.requests, a.failed), (2, 1));
    assert_eq!(
        (a.input_tokens, a.output_tokens, a.cached_tokens),
        (1000, 50, 800)
    );
    assert_eq!((a.peak_primary, a.peak_secondary), (Some(55.0), Some(20.0)));
    assert_eq!(days[1].day, "2026-12-04");
    assert_eq!(days[1].peak_primary, None, "no reading of B that day");
    let only_b = history
        .days(NOW - 7 * DAY_MS, Some("b@example.com"))
        .unwrap();
    assert_eq!(only_b.len(), 1);
    let points = history.points(NOW - 7 * DAY_MS).unwrap();
    assert_eq!(points.len(), 3);
    assert_eq!(
        (points[2].window.as_str(), points[2].used_percent),
        ("primary", 55.0),
        "oldest first"
    );
    assert_eq!(
        (points[1].window.as_str(), points[1].used_percent),
        ("secondary", 20.0)
    );
    let recent = history.recent_requests(2).unwrap();
    assert_eq!(
        recent[0].account.as_deref(),
        Some("b@example.com"),
        "newest first"
    );
    assert_eq!(recent[1].status, 429);
}

#[test]
fn rows_older_than_ninety_days_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let (mut history, _) = History::open(&dir.path().join(FILE_NAME), NOW).unwrap();
    let old = NOW - (KEEP_DAYS + 1) * DAY_MS;
    history
        .record(&[
            usage(old, "a", "primary", 1.0),
            request(old, "a", 200),
            tokens(old, "a", 1, 1, 1),
            request(NOW - (KEEP_DAYS - 1) * DAY_MS, "a", 200),
        ])
        .unwrap();
    assert_eq!(history.prune(NOW).unwrap(), 3);
    assert_eq!(history.recent_requests(10).unwrap().len(), 1);
}

#[test]
fn a_corrupt_history_is_moved_aside_untouched_and_a_new_one_started() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let garbage = b"this is not a SQLite database, whatever its name says".repeat(100);
    std::fs::write(&path, &garbage).unwrap();
    let (mut history, opened) = History::open(&path, NOW).unwrap();
    let Opened::MovedAside { reason, to } = opened else {
        panic!("{opened:?}")
    };
    assert!(reason.contains("not a readable database"), "{reason}");
    assert_eq!(
        to.file_name().unwrap().to_str().unwrap(),
        "history.sqlite.corrupt-20261204-223005"
    );
    assert_eq!(
        std::fs::read(&to).unwrap(),
        garbage,
        "nothing in it is lost"
    );
    history.record(&[request(NOW, "a", 200)]).unwrap();
    assert_eq!(history.recent_requests(5).unwrap().len(), 1);
}

#[test]
fn a_history_from_a_newer_release_is_moved_aside_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let newer = Connection::open(&path).unwrap();
    newer
        .execute_batch("CREATE TABLE future (x); PRAGMA user_version = 7;")
        .unwrap();
    drop(newer);
    let (_, opened) = History::open(&path, NOW).unwrap();
    let Opened::MovedAside { reason, to } = opened else {
        panic!("{opened:?}")
    };
    assert!(reason.contains("newer release"), "{reason}");
    assert!(to.to_str().unwrap().ends_with(".newer-20261204-223005"));
    let kept = Connection::open(&to).unwrap();
    let version: i64 = kept
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 7);
}

#[test]
fn a_full_disk_stops_recording_never_the_sender() {
    let dir = tempfile::tempdir().unwrap();
    let (history, _) = History::open(&dir.path().join(FILE_NAME), NOW).unwrap();
    // SQLite's own page cap stands for the disk: past it, writes fail with SQLITE_FULL
    // ("database or disk is full"), as on a full disk.
    let pages: i64 = history
        .connection
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    history
        .connection
        .execute_batch(&format!("PRAGMA max_page_count = {pages}"))
        .unwrap();
    let recorder = Recorder::start(history, || NOW).unwrap();
    let started = std::time::Instant::now();
    for i in 0..20_000 {
        recorder.record(tokens(NOW + i, "a@example.com", i, i, i));
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "recording never waits"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !recorder.stopped() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(recorder.stopped(), "the full disk is noticed");
    let (_, dropped) = recorder.counts();
    assert!(
        dropped > 0,
        "what could not be written is counted, not queued forever"
    );
}

#[test]
fn the_recorder_writes_what_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let (history, _) = History::open(&path, NOW).unwrap();
    let recorder = Recorder::start(history, || NOW).unwrap();
    for i in 0..100 {
        recorder.record(request(NOW + i, "a@example.com", 200));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while recorder.counts().0 < 100 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(recorder.counts(), (100, 0));
    let read = History::open_read_only(&path).unwrap().unwrap();
    assert_eq!(read.recent_requests(1000).unwrap().len(), 100);
}

#[test]
fn an_account_is_one_account_by_its_key_whatever_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let (mut history, _) = History::open(&dir.path().join(FILE_NAME), NOW).unwrap();
    let yesterday = NOW - DAY_MS;
    history
        .record(&[
            // Labelled "work" today: yesterday's rows under its email are the same account.
            usage_as(yesterday, "acct-1/u", "a@example.com", "primary", 30.0),
            tokens_as(yesterday, "acct-1/u", "a@example.com", 100, 10, 0),
            tokens_as(NOW - 1000, "acct-1/u", "work", 7, 3, 0),
            // A team workspace of the same email: another account.
            tokens_as(NOW, "acct-2/u", "a@example.com", 50, 5, 0),
        ])
        .unwrap();
    let days = history.days(NOW - 7 * DAY_MS, None).unwrap();
    let seen: Vec<(&str, &str, i64)> = days
        .iter()
        .map(|d| (d.day.as_str(), d.account.as_str(), d.input_tokens))
        .collect();
    assert_eq!(
        seen,
        [
            ("2026-12-03", "work", 100),
            ("2026-12-04", "a@example.com", 50),
            ("2026-12-04", "work", 7),
        ],
        "one series per key, under its latest name"
    );
    assert_eq!(days[0].key.as_deref(), Some("acct-1/u"));
    // Asked for by any of its names or its key: the whole account, and only it.
    for wanted in ["work", "acct-1/u"] {
        let only = history.days(NOW - 7 * DAY_MS, Some(wanted)).unwrap();
        assert_eq!(only.len(), 2, "{wanted}: {only:?}");
        assert!(only.iter().all(|d| d.key.as_deref() == Some("acct-1/u")));
    }
    let by_email = history
        .days(NOW - 7 * DAY_MS, Some("a@example.com"))
        .unwrap();
    assert_eq!(
        by_email.len(),
        3,
        "both accounts were called that: {by_email:?}"
    );
}

#[test]
fn two_accounts_with_one_name_are_told_apart_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let (mut history, _) = History::open(&dir.path().join(FILE_NAME), NOW).unwrap();
    history
        .record(&[
            tokens_as(NOW - 5, "personal/u", "a@example.com", 1, 0, 0),
            tokens_as(NOW, "team/u", "a@example.com", 2, 0, 0),
        ])
        .unwrap();
    let names: Vec<String> = history
        .days(NOW - DAY_MS, None)
        .unwrap()
        .into_iter()
        .map(|d| d.account)
        .collect();
    assert_eq!(
        names,
        ["a@example.com (personal/u)", "a@example.com (team/u)"]
    );
}

#[test]
fn a_history_from_the_first_release_is_brought_up_to_date_not_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    {
        // The tables as release 1 made them, with one day of rows.
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE usage (at INTEGER NOT NULL, account TEXT NOT NULL,
                window TEXT NOT NULL, used_percent REAL NOT NULL, window_minutes INTEGER,
                resets_at INTEGER);
             CREATE TABLE requests (at INTEGER NOT NULL, account TEXT, model TEXT NOT NULL,
                status INTEGER NOT NULL, first_byte_ms REAL NOT NULL);
             CREATE TABLE tokens (at INTEGER NOT NULL, account TEXT NOT NULL,
                input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
                cached_tokens INTEGER NOT NULL);
             PRAGMA user_version = 1;",
        )
        .unwrap();
        old.execute(
            "INSERT INTO tokens VALUES (?1, 'a@example.com', 40, 4, 0)",
            [NOW - DAY_MS],
        )
        .unwrap();
    }
    // Read (`cma history`) before the new router brought it up to date: read as it is.
    let read = History::open_read_only(&path).unwrap().expect("a history");
    let days = read.days(NOW - 7 * DAY_MS, None).unwrap();
    assert_eq!(
        (days.len(), days[0].input_tokens, days[0].key.as_deref()),
        (1, 40, None)
    );
    drop(read);
    let (mut history, opened) = History::open(&path, NOW).unwrap();
    assert_eq!(opened, Opened::Existing, "kept, not moved aside");
    history
        .record(&[tokens_as(NOW, "acct-1/u", "a@example.com", 2, 1, 0)])
        .unwrap();
    let days = history.days(NOW - 7 * DAY_MS, None).unwrap();
    let seen: Vec<(i64, Option<&str>)> = days
        .iter()
        .map(|d| (d.input_tokens, d.key.as_deref()))
        .collect();
    assert_eq!(seen, [(40, None), (2, Some("acct-1/u"))], "{days:?}");
    // At start the router gives the old rows the key of the account bearing their name.
    let accounts = [("acct-1/u".to_string(), "a@example.com".to_string())];
    assert_eq!(history.adopt_names(&accounts).unwrap(), 1);
    let days = history.days(NOW - 7 * DAY_MS, None).unwrap();
    let seen: Vec<(&str, i64)> = days
        .iter()
        .map(|d| (d.account.as_str(), d.input_tokens))
        .collect();
    assert_eq!(
        seen,
        [("a@example.com", 40), ("a@example.com", 2)],
        "{days:?}"
    );
    assert!(days.iter().all(|d| d.key.as_deref() == Some("acct-1/u")));
    // A name two accounts bear is left alone.
    let two = [
        ("p/u".to_string(), "b@example.com".to_string()),
        ("t/u".to_string(), "b@example.com".to_string()),
    ];
    let unkeyed = "INSERT INTO tokens (at, account, input_tokens, output_tokens, cached_tokens) \
                   VALUES (?1, 'b@example.com', 1, 0, 0)";
    history.connection.execute(unkeyed, [NOW]).unwrap();
    assert_eq!(history.adopt_names(&two).unwrap(), 0);
    let one = [two[0].clone()];
    assert_eq!(
        history.adopt_names(&one).unwrap(),
        1,
        "adopted once it is one's"
    );
    let version: i64 = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing moved aside"
    );
}
