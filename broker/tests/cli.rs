//! The `converge` binary as a user runs it: configuration errors, the development PKI, and the
//! README's quick start with Debian's mosquitto clients.

mod common;

use std::process::Stdio;

use common::WAIT;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn converge() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_converge"));
    c.env("NO_COLOR", "1").kill_on_drop(true);
    c
}

#[tokio::test]
async fn bad_configuration_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (toml, needle) in [
        ("[limits]\nmax_packet_sise = 10\n", "max_packet_sise"),
        ("[limits]\nmax_connections = 0\n", "limits.max_connections"),
        ("[persistence]\nsync = \"maybe\"\n", "maybe"),
        (
            "[listeners.tcp]\nenabled = true\nbind = \"0.0.0.0:1883\"\n",
            "listeners.tcp.bind",
        ),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, toml).unwrap();
        let out = tokio::time::timeout(
            WAIT,
            converge().args(["serve", "--config"]).arg(&path).output(),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(!out.status.success(), "{toml} must be refused");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(needle),
            "{toml}: error names {needle}: {stderr}"
        );
    }
}

#[tokio::test]
async fn policy_check_accepts_the_plant_example_and_locates_errors() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../security/examples/plant.toml"
    );
    let out = converge()
        .args(["policy", "check", example])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (5 zones"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    let text =
        std::fs::read_to_string(example)
            .unwrap()
            .replacen("to = \"dmz\"", "to = \"dmzz\"", 1);
    std::fs::write(&bad, text).unwrap();
    let out = converge()
        .args(["policy", "check"])
        .arg(&bad)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:") && stderr.contains("dmzz"),
        "{stderr}"
    );
}

/// Runs a shell command line printed by the server, with extra arguments, bounded in time.
async fn run_printed(line: &str, extra: &str, cwd: &std::path::Path) -> String {
    let out = tokio::time::timeout(
        WAIT,
        Command::new("sh")
            .arg("-c")
            .arg(format!("{line} {extra}"))
            .current_dir(cwd)
            .output(),
    )
    .await
    .expect("mosquitto client finishes")
    .expect("sh runs");
    assert!(
        out.status.success(),
        "`{line} {extra}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn first_start_creates_the_dev_pki_and_the_printed_commands_work() {
    if which("mosquitto_pub").is_none() {
        panic!("mosquitto-clients is required (scripts/test.sh installs it)");
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("converge.toml");
    std::fs::write(
        &config,
        "[listeners.tls]\nbind = \"127.0.0.1:0\"\n[listeners.quic]\nbind = \"127.0.0.1:0\"\n[historian.api]\nbind = \"127.0.0.1:0\"\n[metrics]\nbind = \"127.0.0.1:0\"\n[mqtt]\nsys_interval_secs = 0\n",
    )
    .unwrap();
    let mut child = converge()
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (sub, publ) = tokio::time::timeout(WAIT, async {
        let (mut sub, mut publ) = (None, None);
        while let Some(line) = lines.next_line().await.unwrap() {
            let l = line.trim();
            if l.starts_with("mosquitto_sub") {
                sub = Some(l.to_string());
            }
            if l.starts_with("mosquitto_pub") {
                publ = Some(l.to_string());
            }
            if let (Some(s), Some(p)) = (&sub, &publ) {
                return (s.clone(), p.clone());
            }
        }
        panic!("server stopped before printing the quick start");
    })
    .await
    .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in [
            "ca.key",
            "server.key",
            "devices/demo-device.key",
            "devices/demo-monitor.key",
        ] {
            let path = dir.path().join("converge-data/pki").join(key);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{key}");
        }
    }
    for version in ["mqttv5", "mqttv311"] {
        let p = publ
            .replace("mqttv5", version)
            .replace("-m 21.5", &format!("-m {version}"));
        let s = sub.replace("mqttv5", version);
        // Retained, so the subscriber that starts afterwards gets it without a race.
        run_printed(&p, "-r", dir.path()).await;
        let got = run_printed(&s, "-C 1 -W 10", dir.path()).await;
        assert_eq!(got.trim(), format!("plant/line1/temp {version}"));
    }

    // The README's commands, as a reader copies them (only the port differs).
    let port = publ
        .split_whitespace()
        .skip_while(|w| *w != "-p")
        .nth(1)
        .unwrap()
        .to_owned();
    let readme = readme_command("mosquitto_pub").replace("-p 8883", &format!("-p {port}"));
    run_printed(&readme, "-r", dir.path()).await;
    let readme = readme_command("mosquitto_sub").replace("-p 8883", &format!("-p {port}"));
    let got = run_printed(&readme, "-C 1 -W 10", dir.path()).await;
    assert_eq!(got.trim(), "plant/line1/temp 21.5");

    // The development PKI is the CA that `converge cert` administers: the demo devices are
    // listed, the CRL exists, and a certificate issued now connects at once.
    let data = dir.path().join("converge-data");
    assert!(data.join("pki/crl.pem").exists());
    let list = ok_in(&data, &["cert", "list"]).await;
    assert!(
        list.contains("CN=demo-device, OU=demo, O=Converge")
            && list.contains("CN=demo-monitor, OU=demo, O=Converge"),
        "{list}"
    );
    let issued = ok_in(
        &data,
        &["cert", "issue", "--device", "press-01", "--zone", "demo"],
    )
    .await;
    let serial = issued
        .lines()
        .find_map(|l| l.strip_prefix("issued certificate "))
        .unwrap_or_else(|| panic!("serial in {issued}"))
        .trim()
        .to_owned();
    let press = publ
        .replace("-i demo-device", "-i press-01")
        .replace("devices/demo-device.", "devices/press-01.")
        .replace("-m 21.5", "-m from-press-01");
    assert!(press.contains("press-01.pem"), "{press}");
    run_printed(&press, "-r", dir.path()).await;
    let got = run_printed(&sub, "-C 1 -W 10", dir.path()).await;
    assert_eq!(got.trim(), "plant/line1/temp from-press-01");

    // Revocation reaches the running server without a restart: press-01's open connection
    // (a subscriber that would otherwise wait for 3 messages) is closed, and it cannot
    // connect again.
    let press_sub = sub
        .replace("-i demo-monitor", "-i press-01")
        .replace("devices/demo-monitor.", "devices/press-01.");
    let mut listening = Command::new("sh")
        .arg("-c")
        .arg(format!("{press_sub} -C 3 -W 60"))
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut got = BufReader::new(listening.stdout.take().unwrap()).lines();
    // The retained message arrives: the subscription is live.
    let first = tokio::time::timeout(WAIT, got.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.as_deref(), Some("plant/line1/temp from-press-01"));
    ok_in(
        &data,
        &["cert", "revoke", &serial, "--reason", "keyCompromise"],
    )
    .await;
    let ended = tokio::time::timeout(WAIT, got.next_line())
        .await
        .expect("the revoked client's connection is closed");
    assert_eq!(
        ended.unwrap(),
        None,
        "no further message for a revoked client"
    );
    let _ = listening.start_kill();
    let refused = tokio::time::timeout(
        WAIT,
        Command::new("sh")
            .arg("-c")
            .arg(format!("{press} -r"))
            .current_dir(dir.path())
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        !refused.status.success(),
        "a revoked certificate connects no more"
    );
    child.start_kill().unwrap();
}

/// A mosquitto command line from README.md's quick start, continuation lines joined.
fn readme_command(program: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let mut lines = readme.lines().skip_while(|l| !l.starts_with(program));
    let mut command = String::new();
    for line in lines.by_ref() {
        match line.trim().strip_suffix('\\') {
            Some(part) => {
                command.push_str(part.trim());
                command.push(' ');
            }
            None => {
                command.push_str(line.trim());
                break;
            }
        }
    }
    assert!(
        command.starts_with(program),
        "README has a {program} command"
    );
    command
}

fn which(cmd: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(cmd))
        .find(|p| p.exists())
}

async fn run_ok(args: &[&str]) -> String {
    let out = tokio::time::timeout(WAIT, converge().args(args).output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "converge {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn run_err(args: &[&str]) -> String {
    let out = tokio::time::timeout(WAIT, converge().args(args).output())
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success(), "converge {args:?} must fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn historian_import_writes_every_numeric_column_and_stats_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let csv = dir.path().join("export.csv");
    let mut text = String::from("Timestamp;Flow;Comment;Level\n");
    for i in 0..5000u64 {
        let level = if i % 2 == 0 {
            format!("{}", i as f64 / 4.0)
        } else {
            String::new()
        };
        text.push_str(&format!(
            "{};{}.5;ok;{level}\n",
            1_700_000_000_000 + i * 1000,
            i
        ));
    }
    std::fs::write(&csv, text).unwrap();
    let d = data.to_str().unwrap();
    let out = run_ok(&[
        "historian",
        "import",
        csv.to_str().unwrap(),
        "--time-column",
        "Timestamp",
        "--time-format",
        "epoch_ms",
        "--delimiter",
        ";",
        "--tag-prefix",
        "site/",
        "--data-dir",
        d,
    ])
    .await;
    assert!(
        out.contains("5000 rows, 7500 points written to 2 tags"),
        "{out}"
    );
    assert!(out.contains("skipped (not numeric): Comment"), "{out}");
    assert!(
        out.contains("time range: 2023-11-14T22:13:20Z .. 2023-11-14T23:36:39Z"),
        "{out}"
    );

    let stats = run_ok(&["historian", "stats", "--data-dir", d]).await;
    let row = |tag: &str| -> Vec<String> {
        stats
            .lines()
            .find(|l| l.starts_with(tag))
            .unwrap_or_else(|| panic!("{tag} in {stats}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(row("site/Flow")[1], "5000");
    assert_eq!(row("site/Level")[1], "2500");
    assert_eq!(row("TOTAL")[3], "7500");
    // 5000 points of a regular series are sealed into compressed blocks: far below 16 B/point.
    let flow_bpp: f64 = row("site/Flow")[3].parse().unwrap();
    assert!(flow_bpp < 8.0, "{stats}");
    let only = run_ok(&["historian", "stats", "--tag", "site/L*", "--data-dir", d]).await;
    assert!(only.contains("TOTAL (1 tags)"), "{only}");
}

#[tokio::test]
async fn historian_import_names_the_line_and_column_of_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let csv = dir.path().join("bad.csv");
    std::fs::write(
        &csv,
        "Time,x\n2024-01-01T00:00:00Z,1\n2024-01-01T00:00:01Z,one\n",
    )
    .unwrap();
    let args = |format: &'static str| {
        vec![
            "historian".to_owned(),
            "import".into(),
            csv.to_str().unwrap().into(),
            "--time-column".into(),
            "Time".into(),
            "--time-format".into(),
            format.into(),
            "--data-dir".into(),
            d.to_str().unwrap().into(),
        ]
    };
    let a = args("rfc3339");
    let err = run_err(&a.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(
        err.contains("line 3, column 2 (\"x\"): \"one\" is not a number"),
        "{err}"
    );
    assert!(err.contains("0 points before it were written"), "{err}");
    let a = args("[year");
    let err = run_err(&a.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(err.contains("time format \"[year\""), "{err}");
}

#[tokio::test]
async fn historian_import_refuses_a_running_server_and_stats_still_reads() {
    let env = common::Env::new();
    let running = env.start().await;
    let d = env.path("data");
    let csv = env.path("x.csv");
    std::fs::write(&csv, "Time,x\n2024-01-01T00:00:00Z,1\n").unwrap();
    let err = run_err(&[
        "historian",
        "import",
        csv.to_str().unwrap(),
        "--time-column",
        "Time",
        "--data-dir",
        d.to_str().unwrap(),
    ])
    .await;
    assert!(
        err.contains("the database is in use; stop the server"),
        "{err}"
    );
    let stats = run_ok(&["historian", "stats", "--data-dir", d.to_str().unwrap()]).await;
    assert!(stats.contains("TOTAL (0 tags)"), "{stats}");
    running.shutdown().await.unwrap();
}

/// `converge ARGS` with `--data-dir DIR` appended.
async fn run_in(data: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--data-dir", data.to_str().unwrap()]);
    tokio::time::timeout(WAIT, converge().args(&all).output())
        .await
        .unwrap()
        .unwrap()
}

async fn ok_in(data: &std::path::Path, args: &[&str]) -> String {
    let out = run_in(data, args).await;
    assert!(
        out.status.success(),
        "converge {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn err_in(data: &std::path::Path, args: &[&str]) -> String {
    let out = run_in(data, args).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "converge {args:?} must fail");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// The audit log's records as JSON values.
fn audit_records(data: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(data.join("audit/audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn cert_issue_and_revoke_without_a_server_are_audited_and_verify_names_an_edited_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = ok_in(
        &data,
        &[
            "ca",
            "init",
            "--name",
            "Plant1 Device CA",
            "--org",
            "ACME Plant1",
        ],
    )
    .await;
    assert!(out.contains("CN=Plant1 Device CA, O=ACME Plant1"), "{out}");
    let pki = data.join("pki");
    assert_eq!(mode(&pki), 0o700);
    assert_eq!(mode(&pki.join("ca.key")), 0o600);
    assert!(pki.join("crl.pem").exists());
    let err = err_in(&data, &["ca", "init"]).await;
    assert!(err.contains("a CA already exists"), "{err}");

    let out = ok_in(
        &data,
        &["cert", "issue", "--device", "press-01", "--zone", "cell-a"],
    )
    .await;
    let serial = out
        .lines()
        .find_map(|l| l.strip_prefix("issued certificate "))
        .unwrap_or_else(|| panic!("serial in {out}"))
        .trim()
        .to_owned();
    assert_eq!(mode(&pki.join("devices/press-01.key")), 0o600);
    let list = ok_in(&data, &["cert", "list"]).await;
    let row = list.lines().find(|l| l.starts_with(&serial)).unwrap();
    assert!(
        row.contains("CN=press-01, OU=cell-a, O=ACME Plant1") && row.ends_with("valid"),
        "{list}"
    );

    let err = err_in(&data, &["cert", "revoke", &serial, "--reason", "bored"]).await;
    assert!(err.contains("unknown revocation reason \"bored\""), "{err}");
    let err = err_in(
        &data,
        &["cert", "revoke", "xyz", "--reason", "keyCompromise"],
    )
    .await;
    assert!(err.contains("not a hex serial"), "{err}");
    let err = err_in(
        &data,
        &["cert", "revoke", "0abc", "--reason", "keyCompromise"],
    )
    .await;
    assert!(err.contains("no certificate with serial 0abc"), "{err}");
    let upper = serial.to_uppercase();
    let out = ok_in(
        &data,
        &["cert", "revoke", &upper, "--reason", "key-compromise"],
    )
    .await;
    assert!(out.contains("CRL number 2"), "{out}");
    let list = ok_in(&data, &["cert", "list"]).await;
    assert!(list.contains("revoked (keyCompromise)"), "{list}");
    let crl_pem = std::fs::read(pki.join("crl.pem")).unwrap();
    let (_, p) = x509_parser::pem::parse_x509_pem(&crl_pem).unwrap();
    let (_, crl) = x509_parser::parse_x509_crl(&p.contents).unwrap();
    let revoked: Vec<String> = crl
        .iter_revoked_certificates()
        .map(|r| r.raw_serial().iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    assert_eq!(revoked, std::slice::from_ref(&serial));

    // Every admin command left a record, failures included, and the log is intact.
    let records = audit_records(&data);
    let actions: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("admin_command", "success"), // ca init
            ("admin_command", "failure"), // ca init again
            ("cert_issued", "success"),
            ("admin_command", "success"),
            ("admin_command", "failure"), // unknown reason
            ("admin_command", "failure"), // bad serial
            ("admin_command", "failure"), // unknown serial
            ("cert_revoked", "success"),
            ("admin_command", "success"),
        ]
    );
    let issued = &records[2];
    assert_eq!(issued["resource"], serial.as_str());
    assert_eq!(issued["zone"], "cell-a");
    assert!(issued["actor"].as_str().unwrap().contains("(uid "));
    assert_eq!(records[7]["resource"], serial.as_str());
    assert!(records[8]["resource"]
        .as_str()
        .unwrap()
        .starts_with(&format!(
            "converge cert revoke {upper} --reason key-compromise"
        )));
    let verified = ok_in(&data, &["audit", "verify"]).await;
    assert!(verified.contains(": OK"), "{verified}");
    assert!(verified.contains("records:     9 (seq 1..9)"), "{verified}");

    let cef = ok_in(
        &data,
        &["audit", "export", "--since", "0", "--format", "cef"],
    )
    .await;
    assert_eq!(cef.lines().count(), 9, "{cef}");
    assert!(
        cef.lines().nth(2).unwrap().contains("|cert_issued|"),
        "{cef}"
    );
    let err = err_in(&data, &["audit", "export", "--since", "yesterday"]).await;
    assert!(err.contains("not a time"), "{err}");

    // A copy handed to an auditor is proven a prefix of the log after it grew.
    let copy = dir.path().join("audit-copy");
    copy_files(&data.join("audit"), &copy);
    let old = audit_records(&data).len();
    // A refused admin command is recorded too.
    err_in(&data, &["cert", "revoke", "1234", "--reason", "superseded"]).await;
    let new = audit_records(&data).len();
    assert!(new > old, "the log grew: {old} -> {new}");
    let proved = ok_in(&data, &["audit", "prove", copy.to_str().unwrap()]).await;
    assert!(
        proved.contains(&format!("({old} records, root ")),
        "{proved}"
    );
    assert!(proved.contains("is a prefix of"), "{proved}");
    assert!(
        proved.contains(&format!("({new} records, root ")),
        "{proved}"
    );
    let json = ok_in(&data, &["audit", "prove", copy.to_str().unwrap(), "--json"]).await;
    let proof: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(proof["old_size"].as_u64(), u64::try_from(old).ok());
    assert_eq!(proof["new_size"].as_u64(), u64::try_from(new).ok());
    // A copy edited after the fact proves nothing.
    let copied_log = copy.join("audit.jsonl");
    let text = std::fs::read_to_string(&copied_log).unwrap();
    std::fs::write(&copied_log, text.replacen("cell-a", "cell-c", 1)).unwrap();
    let err = err_in(&data, &["audit", "prove", copy.to_str().unwrap()]).await;
    assert!(err.contains("is NOT intact"), "{err}");

    // One edited line: verify fails, exit code non-zero, and names the record.
    let log = data.join("audit/audit.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    let edited = text.replacen("\"zone\":\"cell-a\"", "\"zone\":\"cell-b\"", 1);
    assert_ne!(text, edited);
    std::fs::write(&log, edited).unwrap();
    let err = err_in(&data, &["audit", "verify"]).await;
    assert!(err.contains("is NOT intact"), "{err}");
    assert!(
        err.contains("record 3 (line 3) was modified"),
        "names the record: {err}"
    );
}

#[tokio::test]
async fn certificate_commands_explain_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let err = err_in(&data, &["cert", "list"]).await;
    assert!(
        err.contains("no CA in") && err.contains("converge ca init"),
        "{err}"
    );
    let err = err_in(&data, &["cert", "issue", "--device", "d", "--zone", "z"]).await;
    assert!(err.contains("no CA in"), "{err}");
    let err = err_in(&data, &["ca", "crl"]).await;
    assert!(err.contains("no CA in"), "{err}");

    ok_in(&data, &["ca", "init", "--urn-namespace", "plant1"]).await;
    let err = err_in(
        &data,
        &["cert", "issue", "--device", "../etc", "--zone", "a"],
    )
    .await;
    assert!(err.contains("invalid device \"../etc\""), "{err}");
    let err = err_in(
        &data,
        &[
            "cert", "issue", "--device", "d", "--zone", "a", "--days", "0",
        ],
    )
    .await;
    assert!(err.contains("out of range"), "{err}");
    let csr = dir.path().join("req.csr");
    std::fs::write(
        &csr,
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    )
    .unwrap();
    let err = err_in(
        &data,
        &[
            "cert",
            "issue",
            "--device",
            "d",
            "--zone",
            "a",
            "--csr",
            csr.to_str().unwrap(),
        ],
    )
    .await;
    assert!(err.contains("unusable CSR"), "{err}");
    let missing = dir.path().join("nope.csr");
    let err = err_in(
        &data,
        &[
            "cert",
            "issue",
            "--device",
            "d",
            "--zone",
            "a",
            "--csr",
            missing.to_str().unwrap(),
        ],
    )
    .await;
    assert!(err.contains("nope.csr"), "names the file: {err}");

    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../security/examples/plant.toml"
    );
    let cert = data.join("pki/devices/x.pem");
    let err = err_in(
        &data,
        &[
            "cert",
            "inspect",
            cert.to_str().unwrap(),
            "--policy",
            example,
        ],
    )
    .await;
    assert!(err.contains("x.pem"), "names the file: {err}");
    let out = ok_in(
        &data,
        &["cert", "issue", "--device", "x", "--zone", "cell-a"],
    )
    .await;
    assert!(out.contains("issued certificate"), "{out}");
    let err = err_in(&data, &["cert", "inspect", cert.to_str().unwrap()]).await;
    assert!(err.contains("no policy to inspect against"), "{err}");
    // Under the plant example this CA is no issuer it trusts: the report says so.
    let report = ok_in(
        &data,
        &[
            "cert",
            "inspect",
            cert.to_str().unwrap(),
            "--policy",
            example,
        ],
    )
    .await;
    assert!(report.contains("subject       CN=x, OU=cell-a"), "{report}");
    assert!(report.contains("CA index      valid"), "{report}");
    assert!(report.contains("refused"), "{report}");
    let bad_policy = dir.path().join("bad.toml");
    std::fs::write(&bad_policy, "[[zone]]\nid = 1\n").unwrap();
    let err = err_in(
        &data,
        &[
            "cert",
            "inspect",
            cert.to_str().unwrap(),
            "--policy",
            bad_policy.to_str().unwrap(),
        ],
    )
    .await;
    assert!(err.contains("bad.toml"), "{err}");

    let err = err_in(
        &data,
        &["cert", "issue", "--device", "x", "--zone", "cell-a"],
    )
    .await;
    assert!(
        err.contains("x.pem already exists: pass --overwrite"),
        "{err}"
    );
    ok_in(
        &data,
        &[
            "cert",
            "issue",
            "--device",
            "x",
            "--zone",
            "cell-a",
            "--overwrite",
        ],
    )
    .await;
    let list = ok_in(&data, &["cert", "list"]).await;
    assert_eq!(list.matches("CN=x, OU=cell-a").count(), 2, "{list}");

    let key = dir.path().join("backup.key");
    ok_in(&data, &["ca", "export-key", key.to_str().unwrap()]).await;
    assert_eq!(mode(&key), 0o600);
    let err = err_in(&data, &["ca", "export-key", key.to_str().unwrap()]).await;
    assert!(err.contains("already exists"), "{err}");
    let out = ok_in(&data, &["ca", "crl"]).await;
    assert!(out.contains("CRL number 2"), "{out}");

    let err = err_in(&dir.path().join("elsewhere"), &["audit", "verify"]).await;
    assert!(err.contains("audit.pub"), "names the file: {err}");
    let verified = ok_in(&data, &["audit", "verify"]).await;
    assert!(verified.contains(": OK"), "{verified}");
}

#[tokio::test]
async fn admin_commands_reach_a_running_servers_log_through_the_spool() {
    let env = common::Env::new();
    let running = env.start().await;
    let data = env.path("data");
    ok_in(&data, &["ca", "init"]).await;
    ok_in(
        &data,
        &["cert", "issue", "--device", "press-01", "--zone", "cell-a"],
    )
    .await;
    // The server owns the log: the CLI left its records in the spool, which the server's writer
    // ingests (on its tick, or at the latest on this flush).
    let audit = running.broker.audit.clone().unwrap();
    audit.flush().unwrap();
    assert_eq!(audit.stats().spool_ingested, 3);
    let actions: Vec<String> = audit_records(&data)
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        actions,
        [
            "server_started",
            "admin_command",
            "cert_issued",
            "admin_command"
        ]
    );
    running.shutdown().await.unwrap();
    let verified = ok_in(&data, &["audit", "verify"]).await;
    assert!(verified.contains("records:     5"), "{verified}");
}

/// Copies the files (not subdirectories) of `from` into a new directory `to`.
fn copy_files(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}
