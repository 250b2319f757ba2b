//! Pause, resume and idle timeouts as the CLI shows and asks for them.

use std::time::Duration;

use paddock_proto::v1::{IdleAction, Session, StopReason};

/// `--idle-timeout` in whole seconds: a part second is a second (0 stays 0: off).
pub(crate) fn seconds(t: Duration) -> i64 {
    t.as_secs_f64().ceil() as i64
}

/// `--idle-action` (clap allows only stop and pause); unset: the daemon's (stop).
pub(crate) fn action(given: Option<&str>) -> IdleAction {
    match given {
        Some("pause") => IdleAction::Pause,
        Some(_) => IdleAction::Stop,
        None => IdleAction::Unspecified,
    }
}

/// Why the session stopped (`idle`, `ttl`, ...), once it has.
pub(crate) fn stop_reason(s: &Session) -> Option<String> {
    match StopReason::try_from(s.stop_reason).unwrap_or(StopReason::Unspecified) {
        StopReason::Unspecified => None,
        r => Some(r.as_str_name().trim_start_matches("STOP_REASON_").to_lowercase()),
    }
}

/// The idle timeout, its action, and auto-resume, for `session show`.
pub(crate) fn line(s: &Session) -> Option<String> {
    let action = if s.idle_action == IdleAction::Pause as i32 { "pause" } else { "stop" };
    let mut line = match s.idle_timeout_seconds {
        0 => String::new(),
        t => format!("{action} after {t}s without a tool call"),
    };
    if s.auto_resume {
        line += if line.is_empty() { "auto-resume" } else { "; auto-resume" };
    }
    (!line.is_empty()).then_some(line)
}
