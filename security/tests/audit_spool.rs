//! One writer per audit directory (the writer lock) and the spool through
//! which other processes' events reach the log: direct appends when no
//! writer runs, spooling while one does, ingestion at open, on `flush`, on
//! the periodic tick and at shutdown, bounded per tick, and unusable spool
//! files moved aside and noted, never a panic.

mod audit_support;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use audit_support::{event, read_lines};
use converge_security::audit::{
    spool_event, verify, Action, AuditConfig, AuditError, AuditLog, AuditSink, Entry, Event,
    Outcome, PublicKey, MAX_SPOOL_FILE_BYTES, MAX_SPOOL_PER_TICK, PUBLIC_KEY_FILE, REJECTED_DIR,
    SPOOL_DIR,
};

/// Upper bound of any wait for the writer thread.
const WAIT: Duration = Duration::from_secs(15);

fn entries(dir: &Path) -> Vec<Entry> {
    read_lines(dir)
        .iter()
        .map(|l| Entry::decode(l.as_bytes()).unwrap())
        .collect()
}

fn actions(dir: &Path) -> Vec<Action> {
    entries(dir).iter().map(|e| e.record.action).collect()
}

fn spool_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir.join(SPOOL_DIR)) {
        Ok(rd) => rd
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| e.file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

fn public_key(dir: &Path) -> PublicKey {
    PublicKey::from_file(&dir.join(PUBLIC_KEY_FILE)).unwrap()
}

fn no_tick(dir: &Path) -> AuditConfig {
    let mut cfg = AuditConfig::new(dir);
    cfg.spool_interval = Duration::MAX;
    cfg
}

fn admin_event(what: &str) -> Event {
    Event::new(Action::AdminCommand, Outcome::Success)
        .actor("alice (uid 1000)")
        .resource(format!("converge {what}"))
}

#[test]
fn a_second_writer_is_refused_while_the_first_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let first = AuditLog::open(AuditConfig::new(dir.path())).unwrap();
    let mut cfg = AuditConfig::new(dir.path());
    cfg.lock_wait = Duration::ZERO;
    match AuditLog::open(cfg.clone()) {
        Err(e @ AuditError::Locked { .. }) => {
            let AuditError::Locked { holder, .. } = &e else {
                unreachable!()
            };
            assert_eq!(*holder, Some(std::process::id()));
            assert!(
                e.to_string().contains("being written by another process"),
                "{e}"
            );
        }
        other => panic!("a second writer must be refused: {other:?}"),
    }
    first.record(event(1));
    first.shutdown().unwrap();
    // Released at shutdown: the next writer continues the same chain.
    let second = AuditLog::open(cfg).unwrap();
    second.record(event(2));
    second.shutdown().unwrap();
    let report = verify(dir.path(), &public_key(dir.path())).unwrap();
    assert_eq!(report.records, 2);
}

#[test]
fn a_waiting_writer_gets_the_lock_once_the_holder_stops() {
    let dir = tempfile::tempdir().unwrap();
    let first = AuditLog::open(AuditConfig::new(dir.path())).unwrap();
    let path = dir.path().to_path_buf();
    let waiter = std::thread::spawn(move || {
        let mut cfg = AuditConfig::new(&path);
        cfg.lock_wait = WAIT;
        AuditLog::open(cfg).map(|log| log.shutdown())
    });
    first.shutdown().unwrap();
    waiter.join().unwrap().unwrap().unwrap();
}

#[test]
fn the_sink_appends_directly_and_signs_when_no_writer_runs() {
    let dir = tempfile::tempdir().unwrap();
    let sink = AuditSink::open(AuditConfig::new(dir.path())).unwrap();
    assert!(!sink.is_spooling());
    sink.record(admin_event("ca init")).unwrap();
    sink.record(admin_event("cert issue")).unwrap();
    sink.close().unwrap();
    assert!(spool_files(dir.path()).is_empty());
    let report = verify(dir.path(), &public_key(dir.path())).unwrap();
    assert_eq!(report.records, 2);
    assert_eq!(report.unsigned_tail, 0, "closing signs a checkpoint");
    assert_eq!(
        entries(dir.path())[1].record.resource.as_deref(),
        Some("converge cert issue")
    );
    // The lock went with it.
    AuditLog::open(AuditConfig::new(dir.path()))
        .unwrap()
        .shutdown()
        .unwrap();
}

#[test]
fn the_sink_spools_while_a_writer_runs_and_flush_ingests() {
    let dir = tempfile::tempdir().unwrap();
    let server = AuditLog::open(no_tick(dir.path())).unwrap();
    server.record(event(1));
    let sink = AuditSink::open(AuditConfig::new(dir.path())).unwrap();
    assert!(sink.is_spooling());
    sink.record(admin_event("cert revoke 5a1f --reason keyCompromise"))
        .unwrap();
    sink.close().unwrap();
    let files = spool_files(dir.path());
    assert_eq!(files.len(), 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join(SPOOL_DIR).join(&files[0]);
        let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = fs::metadata(dir.path().join(SPOOL_DIR))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
    }
    // Nothing of the sink's reached the log file: only the writer appends.
    server.flush().unwrap();
    assert!(spool_files(dir.path()).is_empty());
    assert_eq!(
        actions(dir.path()),
        [Action::PublishDenied, Action::AdminCommand]
    );
    let e = &entries(dir.path())[1].record;
    assert_eq!(e.actor, "alice (uid 1000)");
    assert_eq!(
        e.resource.as_deref(),
        Some("converge cert revoke 5a1f --reason keyCompromise")
    );
    assert_eq!(server.stats().spool_ingested, 1);
    server.shutdown().unwrap();
    verify(dir.path(), &public_key(dir.path())).unwrap();
}

#[test]
fn spooled_events_are_ingested_at_open_and_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    // Left by a CLI command while no writer ran (e.g. the server was starting).
    let at = 1_714_039_200_000;
    spool_event(dir.path(), &admin_event("policy reload").at(at)).unwrap();
    let server = AuditLog::open(no_tick(dir.path())).unwrap();
    assert_eq!(server.stats().spool_ingested, 1);
    assert!(spool_files(dir.path()).is_empty());
    spool_event(dir.path(), &admin_event("audit export")).unwrap();
    server.shutdown().unwrap();
    let e = entries(dir.path());
    assert_eq!(e.len(), 2);
    // The event keeps the time it happened at, not the time it was ingested.
    assert_eq!(e[0].record.time_ms, at);
    assert_eq!(
        e[1].record.resource.as_deref(),
        Some("converge audit export")
    );
    let report = verify(dir.path(), &public_key(dir.path())).unwrap();
    assert_eq!(report.unsigned_tail, 0);
}

#[test]
fn the_periodic_tick_ingests_without_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = AuditConfig::new(dir.path());
    cfg.spool_interval = Duration::from_millis(20);
    let server = AuditLog::open(cfg).unwrap();
    spool_event(dir.path(), &admin_event("cert issue")).unwrap();
    // Waits for the event itself (the writer's counter), bounded.
    let deadline = Instant::now() + WAIT;
    while server.stats().spool_ingested == 0 {
        assert!(
            Instant::now() < deadline,
            "the writer never ingested the spool"
        );
        std::thread::yield_now();
    }
    assert_eq!(actions(dir.path()), [Action::AdminCommand]);
    server.shutdown().unwrap();
}

#[test]
fn ingestion_is_bounded_per_tick() {
    let dir = tempfile::tempdir().unwrap();
    let n = MAX_SPOOL_PER_TICK + 5;
    for i in 0..n {
        spool_event(dir.path(), &admin_event(&format!("cert issue {i}"))).unwrap();
    }
    let server = AuditLog::open(no_tick(dir.path())).unwrap();
    assert_eq!(server.stats().spool_ingested, MAX_SPOOL_PER_TICK as u64);
    assert_eq!(spool_files(dir.path()).len(), 5);
    server.flush().unwrap();
    assert_eq!(server.stats().spool_ingested, n as u64);
    assert!(spool_files(dir.path()).is_empty());
    server.shutdown().unwrap();
    let e = entries(dir.path());
    assert_eq!(e.len(), n);
    // Oldest first: names sort by time, then by the writer's counter within a millisecond
    // only roughly, so compare as sets.
    let mut got: Vec<String> = e
        .iter()
        .map(|e| e.record.resource.clone().unwrap())
        .collect();
    got.sort();
    let mut want: Vec<String> = (0..n).map(|i| format!("converge cert issue {i}")).collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn unusable_spool_files_are_moved_aside_counted_and_noted() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join(SPOOL_DIR);
    fs::create_dir_all(&spool).unwrap();
    let big = vec![b' '; MAX_SPOOL_FILE_BYTES as usize + 1];
    fs::write(spool.join("0000000000000001-1-0.event"), big).unwrap();
    fs::write(
        spool.join("0000000000000001-1-1.event"),
        b"\xff\x00not json",
    )
    .unwrap();
    fs::write(
        spool.join("0000000000000001-1-2.event"),
        br#"{"v":1,"time_ms":1,"actor":"x","zone":null,"source":null,"action":"format_disk","resource":null,"outcome":"success","reason":null,"rule":null}"#,
    )
    .unwrap();
    // Temporary files of a spool write in progress are not touched.
    fs::write(spool.join("0000000000000001-1-3.event.tmp"), b"{").unwrap();
    spool_event(dir.path(), &admin_event("cert list")).unwrap();

    let server = AuditLog::open(no_tick(dir.path())).unwrap();
    assert_eq!(server.stats().spool_rejected, 3);
    assert_eq!(server.stats().spool_ingested, 1);
    server.shutdown().unwrap();
    let mut rejected: Vec<String> = fs::read_dir(spool.join(REJECTED_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    rejected.sort();
    assert_eq!(
        rejected,
        [
            "0000000000000001-1-0.event",
            "0000000000000001-1-1.event",
            "0000000000000001-1-2.event"
        ]
    );
    assert_eq!(spool_files(dir.path()), ["0000000000000001-1-3.event.tmp"]);
    let e = entries(dir.path());
    let notes: Vec<&str> = e
        .iter()
        .filter(|e| e.record.action == Action::EventsDropped)
        .map(|e| e.record.resource.as_deref().unwrap())
        .collect();
    assert_eq!(
        notes,
        [
            "spool/0000000000000001-1-0.event",
            "spool/0000000000000001-1-1.event",
            "spool/0000000000000001-1-2.event"
        ]
    );
    assert!(e
        .iter()
        .any(|e| e.record.resource.as_deref() == Some("converge cert list")));
    verify(dir.path(), &public_key(dir.path())).unwrap();
}
