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
    child.start_kill().unwrap();
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
