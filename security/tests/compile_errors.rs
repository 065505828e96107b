//! Every class of policy error is reported with its message and line:column.
//!
//! Each case appends a few lines to `BASE` (18 lines), so the first appended
//! line is line 19 of the file.

use converge_security::policy::{PolicyError, MAX_POLICY_BYTES};
use converge_security::{check_file, compile};

const BASE: &str = r#"version = 1

[[ca]]
id = "ca"
subject = "CN=CA"

[[zone]]
id = "cell-a"
security_level = 2
trusted_cas = ["ca"]
namespace = ["plant1/cell-a/#"]

[[zone]]
id = "scada"
security_level = 3
trusted_cas = ["ca"]
namespace = ["plant1/scada/#"]

"#;

fn diagnostics(extra: &str) -> Vec<String> {
    match compile(&format!("{BASE}{extra}"), "policy.toml") {
        Ok(_) => Vec::new(),
        Err(diags) => diags.iter().map(ToString::to_string).collect(),
    }
}

/// (appended text, expected diagnostics in order)
const CASES: &[(&str, &[&str])] = &[
    (
        "[[conduit]]
id = \"scada-to-dmz\"
from = \"scada\"
to = \"dmzz\"
topics = [\"plant1/scada/kpi/#\"]
",
        &["policy.toml:22:6: conduit \"scada-to-dmz\" names unknown zone \"dmzz\""],
    ),
    (
        "[[zone]]
id = \"cell-b\"
security_level = 2
namespace = [\"plant1/cell-b/#\", \"plant1/+/shared\"]
",
        &[
            "policy.toml:22:33: zone \"cell-b\" namespace \"plant1/+/shared\" overlaps zone \"cell-a\" namespace \"plant1/cell-a/#\"",
            "policy.toml:22:33: zone \"cell-b\" namespace \"plant1/+/shared\" overlaps zone \"scada\" namespace \"plant1/scada/#\"",
        ],
    ),
    (
        "[[zone]]
id = \"dmz\"
security_level = 2
namespaces = [\"plant1/dmz/#\"]
",
        &["policy.toml:22:1: unknown field `namespaces`, expected one of `id`, `description`, `security_level`, `trusted_cas`, `namespace`"],
    ),
    (
        "[[zone]]
id = \"dmz\"
security_level = \"high\"
namespace = [\"plant1/dmz/#\"]
",
        &["policy.toml:21:18: invalid type: string \"high\", expected i64"],
    ),
    (
        "[[zone]]
id = \"dmz\"
security_level = 5
namespace = [\"plant1/dmz/#\"]
",
        &["policy.toml:21:18: zone \"dmz\": security_level must be between 1 and 4, not 5"],
    ),
    (
        "[[zone]]
id = \"dmz\"
security_level = 1
",
        &["policy.toml:19:1: missing field `namespace`"],
    ),
    (
        "[[profile]]
id = \"dev\"
device = \"cn\"
zone = \"ou\"
publish = [\"plant1/${zone}/${devise}/#\"]
",
        &["policy.toml:23:28: profile \"dev\" publish: unknown placeholder \"${devise}\"; known are ${device}, ${zone}, ${cn}, ${client_id}"],
    ),
    (
        "[[profile]]
id = \"dev\"
device = \"cn\"
zone = \"ou\"
publish = [\"plant1/${zone}/${device\"]
",
        &["policy.toml:23:28: profile \"dev\" publish: \"${\" without a closing \"}\""],
    ),
    (
        "[[profile]]
id = \"dev\"
device = \"cn\"
zone = \"ou\"
subscribe = [\"plant1/${zone}/${device}+/cmd\"]
",
        &["policy.toml:23:14: profile \"dev\" subscribe: invalid topic filter \"plant1/${zone}/${device}+/cmd\": a wildcard ('+' or '#') must occupy a whole level"],
    ),
    (
        "[[conduit]]
id = \"a-to-s\"
from = \"cell-a\"
to = \"scada\"
topics = [\"plant1/cell-a/+/telemetry/#\", \"plant1/cell-b/#\"]
",
        &["policy.toml:23:42: conduit \"a-to-s\" topics: filter \"plant1/cell-b/#\" can never match: zone \"cell-a\" can only publish in the namespaces of zones \"cell-a\", \"scada\""],
    ),
    (
        "[[profile]]
id = \"dev\"
device = \"cn\"
zone = { fixed = \"cell-a\" }
publish = [\"plant1/scada/x\"]
subscribe = [\"plant1/cell-b/#\"]
",
        &[
            "policy.toml:23:12: profile \"dev\" publish: filter \"plant1/scada/x\" can never match: it lies outside every namespace that zones \"cell-a\" may publish to",
            "policy.toml:24:14: profile \"dev\" subscribe: filter \"plant1/cell-b/#\" can never match: no topic it matches is published in or carried into zones \"cell-a\"",
        ],
    ),
    (
        "[[conduit]]
id = \"a-to-a\"
from = \"cell-a\"
to = \"cell-a\"
topics = [\"plant1/cell-a/#/x\"]
",
        &[
            "policy.toml:22:6: conduit \"a-to-a\" leads from zone \"cell-a\" to itself",
            "policy.toml:23:11: conduit \"a-to-a\" topics: invalid topic filter \"plant1/cell-a/#/x\": '#' must be the last level of a filter",
        ],
    ),
    (
        "[[profile]]
id = \"dev\"
device = \"san_uri\"
zone = \"ou\"
",
        &["policy.toml:21:10: profile \"dev\" takes the device from san_uri but has no `san_uri` pattern"],
    ),
    (
        "[[profile]]
id = \"dev\"
device = \"san_uri\"
zone = \"san_uri\"
san_uri = \"urn:dev:{zone}\"
identity = \"${zone}\"
",
        &[
            "policy.toml:23:11: profile \"dev\": `san_uri` pattern \"urn:dev:{zone}\" has no {device}",
            "policy.toml:24:12: profile \"dev\": identity \"${zone}\" must contain ${device}, or devices would share one identity",
        ],
    ),
    (
        "[[profile]]
id = \"dev\"
device = \"cn\"
zone = \"ou\"
san_dns = \"{device}.example\"
",
        &["policy.toml:23:11: profile \"dev\": `san_dns` is set but neither device nor zone is taken from san_dns"],
    ),
    (
        "[[profile]]
id = \"dev\"
issuers = [\"other-ca\"]
device = \"fingerprint\"
zone = \"ou\"
policy_oid = \"1.x\"
fingerprints = [\"abcd\"]
",
        &[
            "policy.toml:21:12: profile \"dev\" names unknown CA \"other-ca\"",
            "policy.toml:24:14: profile \"dev\": \"1.x\" is not a dotted object identifier like \"1.3.6.1.4.1.55555.1\"",
            "policy.toml:25:17: profile \"dev\": \"abcd\" is not a SHA-256 fingerprint (64 hex digits, colons allowed)",
        ],
    ),
    (
        "[[profile]]
id = \"dev\"
device = \"cn\"
zone = \"ou\"
max_payload = 100000
bytes_per_second = 1000
byte_burst = 5000
",
        &["policy.toml:25:14: profile \"dev\": byte_burst 5000 is smaller than max_payload 100000, so a largest message could never pass"],
    ),
    (
        "[[profile]]
id = \"dev\"
device = \"cn\"
zone = \"ou\"
max_qos = 3
max_subscriptions = -1
",
        &[
            "policy.toml:23:11: profile \"dev\": max_qos must be between 0 and 2, not 3",
            "policy.toml:24:21: profile \"dev\": max_subscriptions must be between 0 and 65535, not -1",
        ],
    ),
    (
        "[[zone]]
id = \"cell-a\"
security_level = 1
namespace = [\"plant1/${zone}/#\"]
",
        &[
            "policy.toml:20:6: duplicate zone id \"cell-a\"",
            "policy.toml:22:22: zone \"cell-a\" namespace: placeholder \"${zone}\" is not allowed here",
        ],
    ),
    (
        "[[zone]]
id = \"cell b\"
security_level = 1
trusted_cas = [\"ca2\"]
namespace = []
",
        &[
            "policy.toml:20:6: zone id \"cell b\" is not valid: use 1 to 64 of A-Z a-z 0-9 . _ -",
            "policy.toml:22:16: zone \"cell b\" names unknown CA \"ca2\"",
            "policy.toml:23:13: zone \"cell b\": namespace must not be empty",
        ],
    ),
    (
        "[[profile]]
id = \"dev\"
device = \"cn\"
zone = \"pin\"
",
        &["policy.toml:22:8: unknown variant `pin`, expected one of `cn`, `ou`, `o`, `san_uri`, `san_dns`, `fixed`, `policy_oid`"],
    ),
    (
        "[[profile]]
id = \"dev\"
device = \"cn\"
zone = \"ou\"
zones = [\"dmz\"]
",
        &["policy.toml:23:10: profile \"dev\" names unknown zone \"dmz\""],
    ),
    (
        "[[ca]]
id = \"other\"
subject = \"CN=Other\"

[[profile]]
id = \"dev\"
issuers = [\"other\"]
device = \"cn\"
zone = \"ou\"
",
        &["policy.toml:24:6: profile \"dev\" can place devices in no zone: zones \"cell-a\", \"scada\" trust none of its issuers"],
    ),
    (
        "[[ca]]
id = \"ca2\"

[[ca]]
id = \"ca3\"
subject = \"Plant CA\"
key_id = \"xyz\"
",
        &[
            "policy.toml:20:6: ca \"ca2\" needs `subject` or `key_id` to recognise certificates it issued",
            "policy.toml:24:11: ca \"ca3\": subject \"Plant CA\" is not a distinguished name like \"CN=Plant CA, O=ACME\"",
            "policy.toml:25:10: ca \"ca3\" key_id: \"xyz\" is not hex",
        ],
    ),
    (
        "key = \"unterminated
",
        &["policy.toml:19:20: invalid basic string, expected `\"`"],
    ),
];

#[test]
fn each_error_has_message_and_location() {
    for (extra, want) in CASES {
        assert_eq!(&diagnostics(extra), want, "for:\n{extra}");
    }
}

#[test]
fn base_policy_compiles() {
    assert_eq!(diagnostics(""), Vec::<String>::new());
}

#[test]
fn unsupported_version() {
    let src = BASE.replacen("version = 1", "version = 2", 1);
    let diags = compile(&src, "p.toml").err().unwrap_or_default();
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].error, PolicyError::UnsupportedVersion(2));
    assert_eq!(diags[0].location(), (1, 11));
    assert_eq!(
        diags[0].message(),
        "unsupported policy version 2; this build reads version 1"
    );
}

#[test]
fn all_errors_are_reported_at_once() {
    let extra = "[[conduit]]
id = \"c1\"
from = \"nowhere\"
to = \"scada\"
topics = [\"plant1/scada/x\"]

[[conduit]]
id = \"c1\"
from = \"scada\"
to = \"elsewhere\"
topics = [\"plant1/scada/x\"]
";
    assert_eq!(
        diagnostics(extra),
        [
            "policy.toml:21:8: conduit \"c1\" names unknown zone \"nowhere\"",
            "policy.toml:26:6: duplicate conduit id \"c1\"",
            "policy.toml:28:6: conduit \"c1\" names unknown zone \"elsewhere\"",
        ]
    );
}

#[test]
fn columns_count_characters_and_escapes_fall_back_to_the_string() {
    // "é" is two bytes but one column.
    let extra = "[[profile]]
id = \"dev\"
description = \"Pressé\" ; device = \"cn\"
";
    // Not TOML (two keys on a line): the error is at the `;`, column 24 in
    // characters (25 in bytes).
    assert_eq!(
        diagnostics(extra),
        ["policy.toml:21:24: unexpected key or value, expected newline, `#`"]
    );
    // With an escape in the string the placeholder offset cannot be mapped
    // to a column, so the error points at the string itself.
    let extra = "[[profile]]
id = \"dev\"
device = \"cn\"
zone = \"ou\"
publish = [\"plant1/\\u0041/${nope}\"]
";
    assert_eq!(
        diagnostics(extra),
        ["policy.toml:23:12: profile \"dev\" publish: unknown placeholder \"${nope}\"; known are ${device}, ${zone}, ${cn}, ${client_id}"]
    );
}

#[test]
fn oversized_policy_is_refused_before_parsing() {
    let src = "#".repeat(MAX_POLICY_BYTES + 1);
    let diags = compile(&src, "big.toml").err().unwrap_or_default();
    assert_eq!(
        diags.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [format!(
            "big.toml:1:1: policy file is {} bytes; the limit is {MAX_POLICY_BYTES}",
            MAX_POLICY_BYTES + 1
        )]
    );
}

#[test]
fn missing_file_is_an_io_diagnostic_without_location() {
    let diags = check_file(std::path::Path::new("/nonexistent/policy.toml"))
        .err()
        .unwrap_or_default();
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].location(), (0, 0));
    assert!(diags[0]
        .to_string()
        .starts_with("/nonexistent/policy.toml: cannot read policy file: "));
}

#[test]
fn truncated_and_mangled_policies_never_panic() {
    let src = include_str!("../examples/plant.toml");
    let mut cut = 0;
    while cut < src.len() {
        if src.is_char_boundary(cut) {
            let _ = compile(&src[..cut], "p.toml");
        }
        cut += 29;
    }
    // Replace single bytes with characters that matter to TOML, filters and
    // templates.
    for (i, b) in src.bytes().enumerate().step_by(23) {
        for with in ["#", "+", "$", "{", "}", "\"", "\n", "=", "/", "[", "]"] {
            if !b.is_ascii() || !src.is_char_boundary(i + 1) {
                continue;
            }
            let mangled = format!("{}{with}{}", &src[..i], &src[i + 1..]);
            let _ = compile(&mangled, "p.toml");
        }
    }
}
