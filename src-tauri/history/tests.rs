use super::*;

const NOW: i64 = 1_796_423_405_000; // 2026-12-04T22:30:05Z

fn usage(at: i64, account: &str, window: &'static str, used: f64) -> Entry {
    Entry::Usage(UsageReading {
        at,
        account: account.to_string(),
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
        model: "gpt-5.5".to_string(),
        status,
        first_byte_ms: 12.5,
    })
}

fn tokens(at: i64, account: &str, input: i64, output: i64, cached: i64) -> Entry {
    Entry::Tokens(Tokens {
        at,
        account: account.to_string(),
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
