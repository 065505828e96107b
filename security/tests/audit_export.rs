//! Export formats (exact output, escaping), the `--since` filter, and
//! proofs that an exported copy is a prefix of today's log.

mod audit_support;

use std::fs;

use audit_support::{copy_log, read_lines, write_lines, write_log, T0};
use converge_security::audit::{
    export, parse_time, prove_prefix, render, tree_head, verify, verify_prefix, Action,
    AuditConfig, AuditLog, Digest, Entry, Event, ExportError, ExportFormat, ExportOptions, Outcome,
    ProofError,
};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn denied() -> Entry {
    Event::new(Action::PublishDenied, Outcome::Denied)
        .at(1_714_039_200_123)
        .actor("cell-a.press-01")
        .zone("cell-a")
        .source("10.0.0.7:51000")
        .resource("plant1/cell-b/cmd")
        .reason("no conduit")
        .rule("NoConduit")
        .into_record(7, 0)
        .chain(Digest::ZERO)
}

/// Every character the formats must escape, and a line break an attacker
/// would use to forge a second event.
fn hostile() -> Entry {
    Event::new(Action::AdminCommand, Outcome::Success)
        .at(1_714_039_200_000)
        .actor("ev\"il\\]a=b|c\nx")
        .source("not-an-address")
        .resource("a|b\\c=d")
        .reason("line1\r\nline2")
        .into_record(8, 0)
        .chain(Digest::ZERO)
}

#[test]
fn the_hash_of_a_fixed_record_is_pinned() {
    // docs/FORMAT.md §9 gives this record as its example; the values were
    // checked with Python's hashlib over the canonical bytes.
    let e = denied();
    assert_eq!(
        e.hash.to_hex(),
        "4b744579bf6c2a383f2b674c485e319b634708940a5bc728d10e96d79a6914cf"
    );
    assert_eq!(
        e.record.leaf_hash().to_hex(),
        "03d735899dd9b7081dd5c5fe0f80e6533299eeddcdcf36c405f60ef337f3e3f2"
    );
}

#[test]
fn jsonl_is_the_stored_line_with_a_readable_time() {
    let e = denied();
    let out = render(&e, ExportFormat::Jsonl, "ignored");
    assert_eq!(
        out,
        format!(
            r#"{{"time":"2024-04-25T10:00:00.123Z","seq":7,"time_ms":1714039200123,"actor":"cell-a.press-01","zone":"cell-a","source":"10.0.0.7:51000","action":"publish_denied","resource":"plant1/cell-b/cmd","outcome":"denied","reason":"no conduit","rule":"NoConduit","prev":"{}","hash":"{}"}}"#,
            "0".repeat(64),
            e.hash
        )
    );
    let stored = out.replace(r#""time":"2024-04-25T10:00:00.123Z","#, "");
    assert_eq!(Entry::decode(stored.as_bytes()), Ok(e));
}

#[test]
fn syslog_is_rfc5424_with_structured_data() {
    let e = denied();
    assert_eq!(
        render(&e, ExportFormat::Syslog, "plc-gw"),
        format!(
            r#"<84>1 2024-04-25T10:00:00.123Z plc-gw converge - AUDIT [converge@32473 seq="7" actor="cell-a.press-01" zone="cell-a" source="10.0.0.7:51000" action="publish_denied" resource="plant1/cell-b/cmd" outcome="denied" reason="no conduit" rule="NoConduit" hash="{}"] cell-a.press-01 publish_denied denied: no conduit"#,
            e.hash
        )
    );
}

#[test]
fn syslog_escapes_param_values_and_keeps_one_line() {
    let e = hostile();
    let out = render(&e, ExportFormat::Syslog, "my host\n");
    assert_eq!(
        out,
        format!(
            r#"<86>1 2024-04-25T10:00:00.000Z myhost converge - AUDIT [converge@32473 seq="8" actor="ev\"il\\\]a=b|c\x0ax" source="not-an-address" action="admin_command" resource="a|b\\c=d" outcome="success" reason="line1\x0d\x0aline2" hash="{}"] ev"il\]a=b|c x admin_command success: line1  line2"#,
            e.hash
        )
    );
    assert!(!out.contains('\n') && !out.contains('\r'));
    assert!(render(&e, ExportFormat::Syslog, "").contains(" - converge - AUDIT "));
}

#[test]
fn cef_maps_fields_to_extensions() {
    let e = denied();
    assert_eq!(
        render(&e, ExportFormat::Cef, ""),
        format!(
            "CEF:0|Converge|converge|{VERSION}|publish_denied|Publish denied: denied|5|rt=1714039200123 externalId=7 suser=cell-a.press-01 src=10.0.0.7 spt=51000 act=publish_denied outcome=denied reason=no conduit cs1Label=zone cs1=cell-a cs2Label=resource cs2=plant1/cell-b/cmd cs3Label=rule cs3=NoConduit cs4Label=hash cs4={}",
            e.hash
        )
    );
}

#[test]
fn cef_escapes_extension_values_and_keeps_one_line() {
    let e = hostile();
    let out = render(&e, ExportFormat::Cef, "");
    assert_eq!(
        out,
        format!(
            r#"CEF:0|Converge|converge|{VERSION}|admin_command|Admin command: success|3|rt=1714039200000 externalId=8 suser=ev"il\\]a\=b|c\nx cs5Label=source cs5=not-an-address act=admin_command outcome=success reason=line1\r\nline2 cs2Label=resource cs2=a|b\\c\=d cs4Label=hash cs4={}"#,
            e.hash
        )
    );
    assert!(!out.contains('\n') && !out.contains('\r'));
}

#[test]
fn export_filters_by_time_and_writes_each_format() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 10, 1000);
    let since = parse_time("2024-04-25T10:00:05Z").unwrap();
    assert_eq!(since, T0 + 5000);
    assert_eq!(parse_time("2024-04-25T12:00:05+02:00").unwrap(), since);
    assert_eq!(parse_time("1714039205000").unwrap(), since);
    assert!(matches!(
        parse_time("yesterday"),
        Err(ExportError::BadTime(_))
    ));

    for format in ["jsonl", "syslog", "cef"] {
        let mut opts = ExportOptions::new(format.parse().unwrap());
        opts.since = Some(since);
        let mut out = Vec::new();
        assert_eq!(export(dir.path(), &opts, &mut out).unwrap(), 5, "{format}");
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 5, "{format}");
        assert!(
            text.lines().next().unwrap().contains("press-06"),
            "{format}"
        );
        assert!(text.ends_with('\n'));
    }
    // A window: records 6 and 7 (until is exclusive).
    let mut opts = ExportOptions::new(ExportFormat::Jsonl);
    opts.since = Some(since);
    opts.until = Some(parse_time("2024-04-25T10:00:07Z").unwrap());
    let mut out = Vec::new();
    assert_eq!(export(dir.path(), &opts, &mut out).unwrap(), 2);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("press-06") && text.contains("press-07"),
        "{text}"
    );
    assert!(!text.contains("press-08"), "{text}");
    assert!(matches!(
        "xml".parse::<ExportFormat>(),
        Err(ExportError::UnknownFormat(_))
    ));

    // Everything, as jsonl: the stored lines, each with a readable time.
    let mut out = Vec::new();
    let n = export(
        dir.path(),
        &ExportOptions::new(ExportFormat::Jsonl),
        &mut out,
    )
    .unwrap();
    assert_eq!(n, 10);
    let stored = read_lines(dir.path());
    for (exported, stored) in String::from_utf8(out).unwrap().lines().zip(&stored) {
        // `{"time":"2024-04-25T10:00:00.000Z",` is 35 bytes.
        assert_eq!(&exported[35..], &stored[1..]);
    }
}

#[test]
fn export_refuses_a_damaged_line() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 4, 1000);
    let mut lines = read_lines(dir.path());
    lines[2].push('x');
    write_lines(dir.path(), &lines);
    let err = export(
        dir.path(),
        &ExportOptions::new(ExportFormat::Cef),
        &mut Vec::new(),
    );
    assert!(
        matches!(err, Err(ExportError::Damaged { line: 3, .. })),
        "{err:?}"
    );
}

#[test]
fn an_exported_copy_is_proven_a_prefix_of_todays_log() {
    let live = tempfile::tempdir().unwrap();
    let key = write_log(live.path(), 30, 1000);

    // Last week's export: a copy of the files, with a checkpoint at 30.
    let copy = tempfile::tempdir().unwrap();
    copy_log(live.path(), copy.path());
    let exported = verify(copy.path(), &key).unwrap();
    let copy_head = tree_head(copy.path(), None).unwrap();
    assert_eq!(copy_head, (30, exported.last_checkpoint.unwrap().root));

    // The log grew since.
    let log = AuditLog::open(AuditConfig::new(live.path())).unwrap();
    for i in 31..=55 {
        log.record(audit_support::event(i));
    }
    log.shutdown().unwrap();
    let today = verify(live.path(), &key).unwrap();
    assert_eq!(today.records, 55);

    let proof = prove_prefix(live.path(), 30).unwrap();
    assert_eq!((proof.old_size, proof.new_size), (30, 55));
    assert_eq!(proof.old_root, copy_head.1);
    // The new root is the one today's signed checkpoint vouches for.
    assert_eq!(proof.new_root, today.last_checkpoint.unwrap().root);
    proof.verify().unwrap();
    verify_prefix(&copy_head.1, 30, &today.root, 55, &proof.path).unwrap();
    assert!(proof
        .to_json()
        .starts_with(r#"{"old_size":30,"old_root":""#));

    // A copy that differs (say, a record later rewritten in the live log,
    // chain and all) does not match.
    let mut lines = read_lines(copy.path());
    let mut prev = Digest::ZERO;
    for line in &mut lines {
        let mut r = Entry::decode(line.as_bytes()).unwrap().record;
        if r.seq == 12 {
            r.actor = "forged".into();
        }
        let e = r.chain(prev);
        prev = e.hash;
        *line = e.encode();
    }
    write_lines(copy.path(), &lines);
    let (_, forged_root) = tree_head(copy.path(), None).unwrap();
    assert_eq!(
        verify_prefix(&forged_root, 30, &today.root, 55, &proof.path),
        Err(ProofError::OldRootMismatch)
    );
    assert!(matches!(
        prove_prefix(live.path(), 56),
        Err(ExportError::TooFew {
            records: 55,
            requested: 56
        })
    ));
    let (n, root10) = tree_head(live.path(), Some(10)).unwrap();
    assert_eq!(n, 10);
    let p = prove_prefix(live.path(), 10).unwrap();
    assert_eq!(p.old_root, root10);
    fs::remove_dir_all(copy.path()).unwrap();
}
