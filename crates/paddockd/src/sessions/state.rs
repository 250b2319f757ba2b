//! The session state machine, in one place: which operations each state
//! allows (and what a caller is told when it does not), and which transitions
//! exist. Every operation on a session checks here after taking the session's
//! lock; every state change goes through [`SessionState::next`].

use crate::core::error::{Error, Result};
use crate::store::SessionState;

/// What a caller (or the daemon itself) wants to do with a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Get, list, network status: reading what is recorded.
    Read,
    /// Anything that runs in the sandbox: exec, tools, processes, files, code.
    UseGuest,
    /// Stat, ListDir, Download: from the guest while running, from the kept
    /// outputs once stopped.
    ReadFiles,
    UpdateNetwork,
    /// Changing the TTL (E2B's set_timeout): a record change, no guest.
    SetTtl,
    Pause,
    Resume,
    Stop,
    Delete,
}

/// What happens to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A cold start finished, or a warm sandbox was handed to a caller.
    Started,
    /// StopSession, or the init was found dead.
    Stopped,
    /// PauseSession (or an idle timeout): every process frozen.
    Paused,
    /// ResumeSession (or a tool call on an auto_resume session).
    Resumed,
    Deleted,
}

impl SessionState {
    /// Whether `op` is allowed now; the error names the session and why not.
    pub fn check(self, id: &str, op: Op) -> Result<()> {
        use SessionState::*;
        let allowed = match (self, op) {
            (Deleted, _) => return Err(Error::not_found(format!("session {id:?} does not exist"))),
            (_, Op::Read) | (_, Op::Delete) => true,
            (Running, _) => true,
            (Stopped, Op::ReadFiles | Op::Stop) => true,
            (Stopped, Op::UseGuest) => {
                return Err(Error::failed_precondition(format!(
                    "session {id} has stopped; only Files.Stat, ListDir and Download of /mnt/session/outputs remain until it is deleted"
                )))
            }
            (Stopped, Op::UpdateNetwork | Op::SetTtl | Op::Pause | Op::Resume) => false,
            // Host-side changes and the life cycle go on; nothing reaches the
            // frozen guest. (An auto_resume session is resumed before this
            // check, see SessionManager::guest_of.)
            (Paused, Op::UpdateNetwork | Op::SetTtl | Op::Pause | Op::Resume | Op::Stop) => true,
            (Paused, Op::UseGuest | Op::ReadFiles) => {
                return Err(Error::failed_precondition(format!(
                    "session {id} is paused; resume it first (ResumeSession, `paddock session resume {id}`), or create sessions with auto_resume"
                )))
            }
            (Creating | Warm, _) => {
                return Err(Error::unavailable(format!("session {id} is still starting")));
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(Error::failed_precondition(format!("session {id} is not running")))
        }
    }

    /// The state after `event`, or `None` if the event cannot happen in this
    /// state (a bug in the caller: the transition is refused).
    pub fn next(self, event: Event) -> Option<SessionState> {
        use SessionState::*;
        match (self, event) {
            (Creating | Warm, Event::Started) => Some(Running),
            (Running | Stopped | Paused, Event::Stopped) => Some(Stopped),
            (Running | Paused, Event::Paused) => Some(Paused),
            (Paused | Running, Event::Resumed) => Some(Running),
            (Deleted, _) => None,
            (_, Event::Deleted) => Some(Deleted),
            _ => None,
        }
    }

    /// Applies `event` in place; refuses an impossible transition.
    pub fn advance(&mut self, event: Event) -> Result<()> {
        match self.next(event) {
            Some(s) => {
                *self = s;
                Ok(())
            }
            None => Err(Error::internal(format!("a session in state {self:?} cannot become {event:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::error::Code;
    use SessionState::*;

    fn code(state: SessionState, op: Op) -> Option<Code> {
        state.check("ses-x", op).err().map(|e| e.code())
    }

    const OPS: [Op; 9] = [
        Op::Read,
        Op::UseGuest,
        Op::ReadFiles,
        Op::UpdateNetwork,
        Op::SetTtl,
        Op::Pause,
        Op::Resume,
        Op::Stop,
        Op::Delete,
    ];

    #[test]
    fn a_running_session_allows_everything() {
        for op in OPS {
            assert_eq!(code(Running, op), None, "{op:?}");
        }
    }

    #[test]
    fn a_stopped_session_keeps_its_outputs_only() {
        assert_eq!(code(Stopped, Op::ReadFiles), None);
        assert_eq!(code(Stopped, Op::Read), None);
        assert_eq!(code(Stopped, Op::Stop), None, "stopping twice is not an error");
        assert_eq!(code(Stopped, Op::Delete), None);
        assert_eq!(code(Stopped, Op::UseGuest), Some(Code::FailedPrecondition));
        assert_eq!(code(Stopped, Op::UpdateNetwork), Some(Code::FailedPrecondition));
        assert_eq!(code(Stopped, Op::Pause), Some(Code::FailedPrecondition));
        assert_eq!(code(Stopped, Op::Resume), Some(Code::FailedPrecondition));
        let msg = Stopped.check("ses-x", Op::UseGuest).unwrap_err();
        assert!(msg.message().contains("/mnt/session/outputs"), "{msg}");
    }

    #[test]
    fn a_starting_session_is_unavailable_and_a_deleted_one_is_gone() {
        for state in [Creating, Warm] {
            assert_eq!(code(state, Op::UseGuest), Some(Code::Unavailable));
            assert_eq!(code(state, Op::Delete), None);
        }
        for op in OPS {
            assert_eq!(code(Deleted, op), Some(Code::NotFound), "{op:?}");
        }
    }

    #[test]
    fn a_paused_session_refuses_guest_calls_naming_its_state() {
        for op in [Op::UseGuest, Op::ReadFiles] {
            assert_eq!(code(Paused, op), Some(Code::FailedPrecondition), "{op:?}");
            let e = Paused.check("ses-x", op).unwrap_err();
            assert!(e.message().contains("ses-x is paused; resume it first"), "{e}");
        }
        for op in [Op::Read, Op::UpdateNetwork, Op::SetTtl, Op::Pause, Op::Resume, Op::Stop, Op::Delete] {
            assert_eq!(code(Paused, op), None, "{op:?}");
        }
    }

    #[test]
    fn pause_and_resume_transitions() {
        assert_eq!(Running.next(Event::Paused), Some(Paused));
        assert_eq!(Paused.next(Event::Paused), Some(Paused));
        assert_eq!(Paused.next(Event::Resumed), Some(Running));
        assert_eq!(Paused.next(Event::Stopped), Some(Stopped), "stop and idle stop of a paused session");
        assert_eq!(Paused.next(Event::Deleted), Some(Deleted));
        assert_eq!(Stopped.next(Event::Paused), None);
        assert_eq!(Stopped.next(Event::Resumed), None);
        assert_eq!(Warm.next(Event::Paused), None);
        assert_eq!(Creating.next(Event::Resumed), None);
    }

    #[test]
    fn transitions() {
        assert_eq!(Warm.next(Event::Started), Some(Running));
        assert_eq!(Creating.next(Event::Started), Some(Running));
        assert_eq!(Running.next(Event::Stopped), Some(Stopped));
        assert_eq!(Stopped.next(Event::Stopped), Some(Stopped));
        assert_eq!(Running.next(Event::Started), None);
        assert_eq!(Stopped.next(Event::Started), None, "a stopped session never runs again");
        for s in [Creating, Warm, Running, Stopped, Paused] {
            assert_eq!(s.next(Event::Deleted), Some(Deleted));
        }
        assert_eq!(Deleted.next(Event::Deleted), None);
        let mut s = Deleted;
        assert_eq!(s.advance(Event::Started).unwrap_err().code(), Code::Internal);
        assert_eq!(s, Deleted);
    }
}
