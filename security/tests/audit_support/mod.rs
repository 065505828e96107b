//! Shared by the audit_* tests: writing a log with known contents and
//! editing its files.

#![allow(dead_code)]

use std::fs;
use std::path::Path;

use converge_security::audit::{
    Action, AuditConfig, AuditLog, Event, Outcome, PublicKey, CHECKPOINT_FILE, LOG_FILE,
};

/// 2024-04-25T10:00:00.000Z
pub const T0: i64 = 1_714_039_200_000;

/// The `i`-th test event (1-based), one second apart from T0.
pub fn event(i: u64) -> Event {
    let (action, outcome) = match i % 4 {
        0 => (Action::Connect, Outcome::Success),
        1 => (Action::PublishDenied, Outcome::Denied),
        2 => (Action::HandshakeRejected, Outcome::Failure),
        _ => (Action::Disconnect, Outcome::Success),
    };
    Event::new(action, outcome)
        .at(T0 + (i as i64 - 1) * 1000)
        .actor(format!("cell-a.press-{i:02}"))
        .zone("cell-a")
        .source(format!("10.0.0.{}:5{i:04}", i % 250))
        .resource(format!("plant1/cell-a/press-{i:02}/state"))
        .reason("test")
        .rule("NoConduit")
}

/// Writes records 1..=n with a checkpoint every `every` records, shuts
/// the writer down and returns the public key.
pub fn write_log(dir: &Path, n: u64, every: u64) -> PublicKey {
    let mut cfg = AuditConfig::new(dir);
    cfg.checkpoint_every_records = every;
    let log = AuditLog::open(cfg).unwrap();
    for i in 1..=n {
        log.record(event(i));
    }
    log.shutdown().unwrap();
    log.public_key()
}

pub fn read_lines(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join(LOG_FILE))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn write_lines(dir: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(dir.join(LOG_FILE), text).unwrap();
}

pub fn read_checkpoints(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join(CHECKPOINT_FILE))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn write_checkpoints(dir: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(dir.join(CHECKPOINT_FILE), text).unwrap();
}

/// Copies the log and checkpoint files of `from` into `to`.
pub fn copy_log(from: &Path, to: &Path) {
    for f in [LOG_FILE, CHECKPOINT_FILE] {
        fs::copy(from.join(f), to.join(f)).unwrap();
    }
}
