//! Tampering with a stored audit log: every edit, deletion, reordering,
//! truncation and single bit flip makes `verify` fail and name the record.

mod audit_support;

use std::fs;
use std::path::Path;

use audit_support::{
    copy_log, read_checkpoints, read_lines, write_checkpoints, write_lines, write_log,
};
use converge_security::audit::{
    verify, verify_streams, Entry, PublicKey, SigningKey, VerifyError, CHECKPOINT_FILE, LOG_FILE,
};
use proptest::prelude::*;

/// 20 records, checkpoints at 5, 10, 15 and 20.
fn fixture() -> (tempfile::TempDir, PublicKey) {
    let dir = tempfile::tempdir().unwrap();
    let key = write_log(dir.path(), 20, 5);
    let r = verify(dir.path(), &key).unwrap();
    assert_eq!((r.records, r.checkpoints), (20, 4));
    (dir, key)
}

fn verify_err(dir: &Path, key: &PublicKey) -> VerifyError {
    match verify(dir, key) {
        Ok(r) => panic!("tampering not detected: {r:?}"),
        Err(e) => e,
    }
}

#[test]
fn an_edited_field_names_the_record() {
    let (dir, key) = fixture();
    let mut lines = read_lines(dir.path());
    lines[6] = lines[6].replace("press-07", "press-70");
    write_lines(dir.path(), &lines);
    let err = verify_err(dir.path(), &key);
    assert!(
        matches!(
            err,
            VerifyError::Modified {
                seq: 7,
                line: 7,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "record 7 (line 7) was modified: its hash does not match its contents"
    );
}

#[test]
fn an_edit_with_a_recomputed_hash_breaks_the_chain() {
    let (dir, key) = fixture();
    let mut lines = read_lines(dir.path());
    let old = Entry::decode(lines[6].as_bytes()).unwrap();
    let mut record = old.record.clone();
    record.actor = "someone-else".into();
    lines[6] = record.chain(old.prev).encode();
    write_lines(dir.path(), &lines);
    let err = verify_err(dir.path(), &key);
    assert!(
        matches!(err, VerifyError::ChainBroken { seq: 8, line: 8 }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("does not chain to record 7"),
        "{err}"
    );
}

#[test]
fn a_rewritten_chain_is_caught_by_the_checkpoint() {
    let (dir, key) = fixture();
    let mut lines = read_lines(dir.path());
    // Edit record 7 and recompute every hash after it: the chain is
    // consistent again, only the signed tree heads disagree.
    let mut prev = Entry::decode(lines[5].as_bytes()).unwrap().hash;
    for (i, line) in lines.iter_mut().enumerate().skip(6) {
        let mut record = Entry::decode(line.as_bytes())
            .unwrap_or_else(|e| panic!("{i}: {e}"))
            .record;
        if record.seq == 7 {
            record.reason = Some("nothing to see".into());
        }
        let e = record.chain(prev);
        prev = e.hash;
        *line = e.encode();
    }
    write_lines(dir.path(), &lines);
    let err = verify_err(dir.path(), &key);
    assert!(
        matches!(
            err,
            VerifyError::CheckpointMismatch {
                index: 2,
                count: 10
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_deleted_record_is_named() {
    let (dir, key) = fixture();
    let mut lines = read_lines(dir.path());
    lines.remove(6);
    write_lines(dir.path(), &lines);
    let err = verify_err(dir.path(), &key);
    assert!(
        matches!(
            err,
            VerifyError::Deleted {
                expected_seq: 7,
                found_seq: 8,
                line: 7
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "record 7 was deleted: line 7 holds record 8"
    );

    lines.remove(6);
    write_lines(dir.path(), &lines);
    assert_eq!(
        verify_err(dir.path(), &key).to_string(),
        "records 7..8 were deleted: line 7 holds record 9"
    );
}

#[test]
fn the_first_record_deleted() {
    let (dir, key) = fixture();
    let mut lines = read_lines(dir.path());
    lines.remove(0);
    write_lines(dir.path(), &lines);
    let err = verify_err(dir.path(), &key);
    assert!(
        matches!(
            err,
            VerifyError::Deleted {
                expected_seq: 1,
                line: 1,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn swapped_records_are_reported_as_reordered() {
    let (dir, key) = fixture();
    let mut lines = read_lines(dir.path());
    lines.swap(6, 7);
    write_lines(dir.path(), &lines);
    let err = verify_err(dir.path(), &key);
    assert!(
        matches!(
            err,
            VerifyError::Reordered {
                line: 7,
                found_seq: 8,
                expected_seq: 7
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "records were reordered: line 7 holds record 8 where record 7 belongs"
    );
}

#[test]
fn a_record_moved_later_or_duplicated() {
    let (dir, key) = fixture();
    let mut lines = read_lines(dir.path());
    let moved = lines.remove(2);
    lines.push(moved);
    write_lines(dir.path(), &lines);
    assert!(matches!(
        verify_err(dir.path(), &key),
        VerifyError::Reordered {
            line: 3,
            found_seq: 4,
            expected_seq: 3
        }
    ));

    let (dir, key) = fixture();
    let mut lines = read_lines(dir.path());
    let copy = lines[4].clone();
    lines.insert(5, copy);
    write_lines(dir.path(), &lines);
    assert!(matches!(
        verify_err(dir.path(), &key),
        VerifyError::Reordered {
            line: 6,
            found_seq: 5,
            expected_seq: 6
        }
    ));
}

#[test]
fn dropped_last_records_are_truncation() {
    let (dir, key) = fixture();
    let mut lines = read_lines(dir.path());
    lines.truncate(17);
    write_lines(dir.path(), &lines);
    let err = verify_err(dir.path(), &key);
    assert!(
        matches!(
            err,
            VerifyError::Truncated {
                records: 17,
                checkpoint_count: 20
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the log was truncated: it holds 17 records but a signed checkpoint covers 20"
    );
}

#[test]
fn a_cut_inside_a_line_names_that_record() {
    let (dir, key) = fixture();
    let path = dir.path().join(LOG_FILE);
    let bytes = fs::read(&path).unwrap();
    let lines = read_lines(dir.path());
    let start_of_18: usize = lines[..17].iter().map(|l| l.len() + 1).sum();
    fs::write(&path, &bytes[..start_of_18 + 40]).unwrap();
    let err = verify_err(dir.path(), &key);
    assert!(
        matches!(err, VerifyError::Incomplete { seq: 18, line: 18 }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "record 18 (line 18) is incomplete: the file was cut inside it"
    );
}

#[test]
fn tampered_checkpoints_are_detected() {
    let (dir, key) = fixture();
    let good = read_checkpoints(dir.path());

    // A changed count, signature left alone.
    let mut cps = good.clone();
    cps[1] = cps[1].replace("\"count\":10", "\"count\":9");
    write_checkpoints(dir.path(), &cps);
    assert!(matches!(
        verify_err(dir.path(), &key),
        VerifyError::CheckpointSignature { index: 2, count: 9 }
    ));

    // A flipped signature digit.
    let mut cps = good.clone();
    let at = cps[2].len() - 3;
    let flipped = if &cps[2][at..at + 1] == "0" { "1" } else { "0" };
    cps[2].replace_range(at..at + 1, flipped);
    write_checkpoints(dir.path(), &cps);
    let err = verify_err(dir.path(), &key);
    assert!(
        matches!(
            err,
            VerifyError::CheckpointSignature {
                index: 3,
                count: 15
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("bad signature"), "{err}");

    // Re-signed by another key.
    let (other, _) = SigningKey::generate().unwrap();
    write_checkpoints(dir.path(), &good);
    assert!(matches!(
        verify_err(dir.path(), &other.public_key()),
        VerifyError::CheckpointSignature { index: 1, .. }
    ));

    // Not canonical any more.
    let mut cps = good.clone();
    cps[0] = cps[0].replace("{\"count\"", "{ \"count\"");
    write_checkpoints(dir.path(), &cps);
    assert!(matches!(
        verify_err(dir.path(), &key),
        VerifyError::CheckpointMalformed { index: 1, .. }
    ));
}

/// Which line of `bytes` holds byte `at` (its newline included), 1-based.
fn line_of(bytes: &[u8], at: usize) -> u64 {
    bytes[..at].iter().filter(|b| **b == b'\n').count() as u64 + 1
}

fn assert_flip_named(log: &[u8], checkpoints: &[u8], key: &PublicKey, at: usize, bit: u8) {
    let mut bad = log.to_vec();
    bad[at] ^= 1 << bit;
    match verify_streams(bad.as_slice(), checkpoints, key) {
        Ok(r) => panic!("flip of bit {bit} of byte {at} not detected: {r:?}"),
        Err(e) => assert_eq!(
            e.line(),
            Some(line_of(log, at)),
            "flip of bit {bit} of byte {at}: {e}"
        ),
    }
}

#[test]
fn every_single_bit_flip_of_a_small_log_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = write_log(dir.path(), 3, 2);
    let log = fs::read(dir.path().join(LOG_FILE)).unwrap();
    let cps = fs::read(dir.path().join(CHECKPOINT_FILE)).unwrap();
    verify_streams(log.as_slice(), cps.as_slice(), &key).unwrap();
    for at in 0..log.len() {
        for bit in 0..8 {
            assert_flip_named(&log, &cps, &key, at, bit);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any single bit of audit.jsonl, on disk, through `verify(dir)`.
    #[test]
    fn any_bit_flip_in_the_file_names_its_record(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let (dir, key) = FIXTURE.with(|f| (f.0.path().to_owned(), f.1));
        let log = fs::read(dir.join(LOG_FILE)).unwrap();
        let at = pos.index(log.len());
        let mut bad = log.clone();
        bad[at] ^= 1 << bit;
        let copy = tempfile::tempdir().unwrap();
        copy_log(&dir, copy.path());
        fs::write(copy.path().join(LOG_FILE), &bad).unwrap();
        let err = verify(copy.path(), &key);
        prop_assert!(err.is_err(), "flip of bit {} of byte {} not detected", bit, at);
        let err = err.unwrap_err();
        prop_assert_eq!(err.line(), Some(line_of(&log, at)), "{}", err);
    }
}

thread_local! {
    static FIXTURE: (tempfile::TempDir, PublicKey) = fixture();
}

#[test]
fn an_upper_case_hash_digit_is_a_modification() {
    // A hash whose hex digits change case is a different text: a single
    // bit (0x20) away, and rejected.
    let (dir, key) = fixture();
    let mut lines = read_lines(dir.path());
    let e = Entry::decode(lines[3].as_bytes()).unwrap();
    let hex = e.hash.to_hex();
    let pos = hex.find(|c: char| c.is_ascii_alphabetic()).unwrap();
    let mut upper = hex.clone();
    upper.replace_range(pos..pos + 1, &hex[pos..pos + 1].to_uppercase());
    lines[3] = lines[3].replace(&hex, &upper);
    write_lines(dir.path(), &lines);
    assert!(matches!(
        verify_err(dir.path(), &key),
        VerifyError::Modified {
            seq: 4,
            line: 4,
            ..
        }
    ));
}
