//! Audit records for admin commands (`ca init`, `cert issue`, `cert revoke`, `policy reload`,
//! `audit export`, ...).
//!
//! The audit sink is opened before the command acts, so a command whose action could not be
//! audited (a damaged log, an unwritable directory) is refused rather than run unrecorded. While
//! a server runs it owns the log, and the records go to the spool it ingests
//! (`converge_security::audit::AuditSink`); otherwise they are appended directly.

use anyhow::Context;
use converge_broker::config::Config;
use converge_security::audit::{Action, AuditConfig, AuditSink, Event, Outcome};

/// Runs `act` as an audited admin command: an `admin_command` record with the command line
/// and its outcome, preceded by the events `act` adds (e.g. `cert_issued`). `act` returns the
/// summary that becomes the record's reason. With `[audit] enabled = false` nothing is
/// recorded.
pub fn run<T>(
    config: &Config,
    act: impl FnOnce(&mut Vec<Event>) -> anyhow::Result<(T, String)>,
) -> anyhow::Result<T> {
    let sink = if config.audit.enabled {
        let dir = config.audit_dir();
        let mut ac = AuditConfig::new(&dir);
        ac.checkpoint_every_records = config.audit.checkpoint_every_records;
        Some(AuditSink::open(ac).with_context(|| {
            format!(
                "cannot write the audit log in {}, so the command was not run",
                dir.display()
            )
        })?)
    } else {
        None
    };
    let mut events = Vec::new();
    let result = act(&mut events);
    let Some(sink) = sink else {
        return result.map(|(value, _)| value);
    };
    let actor = actor();
    let command = command_line();
    let summary = match &result {
        Ok((_, summary)) => {
            Event::new(Action::AdminCommand, Outcome::Success).reason(summary.as_str())
        }
        Err(e) => Event::new(Action::AdminCommand, Outcome::Failure).reason(format!("{e:#}")),
    };
    events.push(summary.resource(command));
    let written = events
        .into_iter()
        .try_for_each(|e| sink.record(e.actor(actor.as_str())))
        .and_then(|()| sink.close());
    match (result, written) {
        (Ok((value, _)), Ok(())) => Ok(value),
        (Ok(_), Err(e)) => Err(anyhow::Error::new(e)
            .context("the command was carried out, but its audit record could not be written")),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(audit)) => {
            eprintln!("warning: the failure was not audited either: {audit}");
            Err(e)
        }
    }
}

/// The user running the command, as the audit actor: `NAME (uid N)`. The name comes from the
/// environment (`USER`), the uid from the kernel, so the uid is what to trust.
pub fn actor() -> String {
    // SAFETY: getuid(2) has no preconditions and cannot fail.
    #[cfg(unix)]
    let uid = unsafe { libc::getuid() }.to_string();
    #[cfg(not(unix))]
    let uid = String::from("?");
    let name = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| String::from("?"));
    format!("{name} (uid {uid})")
}

/// `converge cert revoke 5a1f --reason keyCompromise`, arguments with spaces or quotes quoted.
fn command_line() -> String {
    let mut out = String::from("converge");
    for arg in std::env::args_os().skip(1) {
        let arg = arg.to_string_lossy();
        out.push(' ');
        if arg.is_empty()
            || arg
                .chars()
                .any(|c| c.is_whitespace() || "'\"\\$`".contains(c))
        {
            out.push('\'');
            out.push_str(&arg.replace('\'', "'\\''"));
            out.push('\'');
        } else {
            out.push_str(&arg);
        }
    }
    out
}
