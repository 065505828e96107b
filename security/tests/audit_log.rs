//! The audit writer on real files: durability and counts, checkpoints,
//! reopening, crash recovery, and a full queue (no sleeps: `flush` and a
//! writer pause hook synchronize).

mod audit_support;

use std::fs::{self, OpenOptions};
use std::io::Write;

use audit_support::{event, read_lines, write_log};
use converge_security::audit::{
    cli_verify, verify, Action, AuditConfig, AuditError, AuditLog, Entry, Event, Outcome,
    PublicKey, SigningKey, KEY_FILE, LOG_FILE, PUBLIC_KEY_FILE,
};

fn entries(dir: &std::path::Path) -> Vec<Entry> {
    read_lines(dir)
        .iter()
        .map(|l| Entry::decode(l.as_bytes()).unwrap())
        .collect()
}

#[test]
fn written_records_verify_with_counts() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = AuditConfig::new(dir.path());
    cfg.checkpoint_every_records = 20;
    let log = AuditLog::open(cfg).unwrap();
    for i in 1..=50 {
        log.record(event(i));
    }
    log.flush().unwrap();
    let stats = log.stats();
    assert_eq!(stats.written, 50);
    assert_eq!(stats.queued, 0);
    assert_eq!(stats.dropped, 0);
    // At 20 and 40 by count, at 50 by the flush.
    assert_eq!(stats.checkpoints, 3);
    assert!(!stats.failed);

    let report = verify(dir.path(), &log.public_key()).unwrap();
    assert_eq!(report.records, 50);
    assert_eq!(report.checkpoints, 3);
    assert_eq!(report.last_checkpoint.unwrap().count, 50);
    assert_eq!(report.unsigned_tail, 0);

    let text = cli_verify(dir.path(), None).unwrap();
    assert!(text.contains(": OK\n"), "{text}");
    assert!(text.contains("records:     50 (seq 1..50)"), "{text}");
    assert!(
        text.contains("checkpoints: 3 signed, the last covering 50 records"),
        "{text}"
    );
    assert!(text.contains("read from the log's own directory"), "{text}");

    let e = entries(dir.path());
    assert_eq!(e.len(), 50);
    for (i, entry) in e.iter().enumerate() {
        let mut expected = event(i as u64 + 1).into_record(i as u64 + 1, 0);
        expected.time_ms = audit_support::T0 + i as i64 * 1000;
        assert_eq!(entry.record, expected);
    }
    log.shutdown().unwrap();
    // Nothing more to checkpoint at shutdown.
    assert_eq!(log.stats().checkpoints, 3);
}

#[test]
fn files_and_directory_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("data").join("audit");
    write_log(&audit, 3, 1000);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&audit), 0o700);
        assert_eq!(mode(&audit.join(KEY_FILE)), 0o600);
        assert_eq!(mode(&audit.join(LOG_FILE)), 0o600);
    }
    let key = PublicKey::from_file(&audit.join(PUBLIC_KEY_FILE)).unwrap();
    assert_eq!(verify(&audit, &key).unwrap().records, 3);
}

#[test]
fn reopening_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let key = write_log(dir.path(), 5, 1000);
    let log = AuditLog::open(AuditConfig::new(dir.path())).unwrap();
    assert_eq!(log.public_key(), key);
    assert_eq!(log.recovery().records, 5);
    assert_eq!(log.recovery().checkpoints, 1);
    for i in 6..=9 {
        log.record(event(i));
    }
    log.shutdown().unwrap();
    let report = verify(dir.path(), &key).unwrap();
    assert_eq!((report.records, report.checkpoints), (9, 2));
    let seqs: Vec<u64> = entries(dir.path()).iter().map(|e| e.record.seq).collect();
    assert_eq!(seqs, (1..=9).collect::<Vec<_>>());
}

#[test]
fn a_torn_last_line_is_removed_counted_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let key = write_log(dir.path(), 5, 1000);
    let torn = br#"{"seq":6,"time_ms":1714039205000,"actor":"cell-a.pr"#;
    OpenOptions::new()
        .append(true)
        .open(dir.path().join(LOG_FILE))
        .unwrap()
        .write_all(torn)
        .unwrap();
    // As it is, verify says where the damage is.
    let err = verify(dir.path(), &key).unwrap_err();
    assert_eq!(err.line(), Some(6), "{err}");
    assert!(err.to_string().contains("incomplete"), "{err}");

    let log = AuditLog::open(AuditConfig::new(dir.path())).unwrap();
    let r = log.recovery();
    assert_eq!(r.torn_log_bytes, torn.len() as u64);
    assert_eq!(r.records, 5);
    assert!(!r.completed_last_line);
    log.record(event(6));
    log.flush().unwrap();
    let report = verify(dir.path(), &key).unwrap();
    assert_eq!(report.records, 7);
    let e = entries(dir.path());
    // The repair is itself on the record, before the next event.
    assert_eq!(e[5].record.action, Action::AuditRecovered);
    assert!(e[5]
        .record
        .reason
        .as_deref()
        .unwrap()
        .contains(&format!("removed {} bytes", torn.len())));
    assert_eq!(e[6].record.actor, "cell-a.press-06");
}

#[test]
fn a_complete_record_missing_only_its_newline_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let key = write_log(dir.path(), 5, 1000);
    let path = dir.path().join(LOG_FILE);
    let mut bytes = fs::read(&path).unwrap();
    assert_eq!(bytes.pop(), Some(b'\n'));
    fs::write(&path, &bytes).unwrap();

    let log = AuditLog::open(AuditConfig::new(dir.path())).unwrap();
    assert!(log.recovery().completed_last_line);
    assert_eq!(log.recovery().torn_log_bytes, 0);
    assert_eq!(log.recovery().records, 5);
    log.record(event(6));
    log.shutdown().unwrap();
    assert_eq!(verify(dir.path(), &key).unwrap().records, 6);
}

#[test]
fn a_damaged_log_is_not_appended_to() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 5, 1000);
    let mut lines = read_lines(dir.path());
    lines[2] = lines[2].replace("press-03", "press-99");
    audit_support::write_lines(dir.path(), &lines);
    match AuditLog::open(AuditConfig::new(dir.path())) {
        Err(AuditError::Damaged { line, .. }) => assert_eq!(line, 3),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_replaced_signing_key_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 5, 1000);
    let (_, der) = SigningKey::generate().unwrap();
    fs::write(dir.path().join(KEY_FILE), der).unwrap();
    // With the old public key still there: mismatch.
    assert!(matches!(
        AuditLog::open(AuditConfig::new(dir.path())),
        Err(AuditError::Key(_))
    ));
    // Without it: the checkpoints are not signed by the new key.
    fs::remove_file(dir.path().join(PUBLIC_KEY_FILE)).unwrap();
    assert!(matches!(
        AuditLog::open(AuditConfig::new(dir.path())),
        Err(AuditError::ForeignCheckpoint { .. })
    ));
}

#[test]
fn a_full_queue_drops_counts_and_keeps_critical_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = AuditConfig::new(dir.path());
    cfg.queue_capacity = 4;
    cfg.overflow_capacity = 2;
    let log = AuditLog::open(cfg).unwrap();
    log.pause_writer_for_test();
    // None of these may block, although the writer is held: if `record`
    // blocked, this test would hang here.
    for i in 1..=100 {
        log.record(event(i));
    }
    let s = log.stats();
    // The writer is parked with nothing taken: the queue holds 4.
    assert_eq!(s.dropped, 96, "{s:?}");
    assert_eq!(s.written, 0);
    for i in 0..3 {
        log.record_critical(
            Event::new(Action::Connect, Outcome::Success)
                .actor(format!("critical-{i}"))
                .source("10.9.9.9:1883"),
        );
    }
    let s = log.stats();
    assert_eq!(s.critical_overflowed, 2, "{s:?}");
    assert_eq!(s.critical_dropped, 1, "{s:?}");

    log.resume_writer_for_test();
    log.flush().unwrap();
    let s = log.stats();
    let kept = 100 - s.dropped;
    // Kept events, the two overflowed critical ones, and one note.
    assert_eq!(s.written, kept + 2 + 1, "{s:?}");
    assert_eq!(s.queued, 0);

    let e = entries(dir.path());
    let critical: Vec<&str> = e
        .iter()
        .filter(|e| e.record.actor.starts_with("critical-"))
        .map(|e| e.record.actor.as_str())
        .collect();
    assert_eq!(critical, ["critical-0", "critical-1"]);
    let note = e.last().unwrap();
    assert_eq!(note.record.action, Action::EventsDropped);
    assert_eq!(note.record.outcome, Outcome::Failure);
    let lost = s.dropped + s.critical_dropped;
    assert_eq!(
        note.record.resource.as_deref(),
        Some(lost.to_string().as_str())
    );
    assert!(note
        .record
        .reason
        .as_deref()
        .unwrap()
        .contains("1 of them critical"));
    assert_eq!(
        verify(dir.path(), &log.public_key()).unwrap().records,
        s.written
    );
}

#[test]
fn after_shutdown_records_count_as_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(AuditConfig::new(dir.path())).unwrap();
    log.record(event(1));
    log.shutdown().unwrap();
    log.shutdown().unwrap();
    log.record(event(2));
    log.record_critical(event(3));
    let s = log.stats();
    assert_eq!((s.written, s.dropped, s.critical_dropped), (1, 1, 1));
    assert!(matches!(log.flush(), Err(AuditError::Closed)));
}

#[test]
fn dropping_the_last_handle_makes_records_durable() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(AuditConfig::new(dir.path())).unwrap();
    let key = log.public_key();
    let clone = log.clone();
    std::thread::spawn(move || clone.record(event(1)))
        .join()
        .unwrap();
    log.record(event(2));
    drop(log);
    let report = verify(dir.path(), &key).unwrap();
    assert_eq!((report.records, report.checkpoints), (2, 1));
}

#[test]
fn a_checkpoint_is_written_on_time_without_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = AuditConfig::new(dir.path());
    cfg.checkpoint_interval = std::time::Duration::ZERO;
    let log = AuditLog::open(cfg).unwrap();
    for i in 1..=3 {
        log.record(event(i));
    }
    // No sleep: the writer's timer is already due, so it checkpoints as soon
    // as it has written; poll the counter, with a generous bound.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while log.stats().checkpoints == 0 {
        assert!(std::time::Instant::now() < deadline, "{:?}", log.stats());
        std::thread::yield_now();
    }
    assert!(verify(dir.path(), &log.public_key()).unwrap().checkpoints >= 1);
}
