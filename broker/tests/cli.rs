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
