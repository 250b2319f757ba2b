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
            (Stopped, Op::UpdateNetwork) => false,
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
            (Running | Stopped, Event::Stopped) => Some(Stopped),
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

    #[test]
    fn a_running_session_allows_everything() {
        for op in [Op::Read, Op::UseGuest, Op::ReadFiles, Op::UpdateNetwork, Op::Stop, Op::Delete] {
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
        let msg = Stopped.check("ses-x", Op::UseGuest).unwrap_err();
        assert!(msg.message().contains("/mnt/session/outputs"), "{msg}");
    }

    #[test]
    fn a_starting_session_is_unavailable_and_a_deleted_one_is_gone() {
        for state in [Creating, Warm] {
            assert_eq!(code(state, Op::UseGuest), Some(Code::Unavailable));
            assert_eq!(code(state, Op::Delete), None);
        }
        for op in [Op::Read, Op::UseGuest, Op::ReadFiles, Op::UpdateNetwork, Op::Stop, Op::Delete] {
            assert_eq!(code(Deleted, op), Some(Code::NotFound), "{op:?}");
        }
    }

    #[test]
    fn transitions() {
        assert_eq!(Warm.next(Event::Started), Some(Running));
        assert_eq!(Creating.next(Event::Started), Some(Running));
        assert_eq!(Running.next(Event::Stopped), Some(Stopped));
        assert_eq!(Stopped.next(Event::Stopped), Some(Stopped));
        assert_eq!(Running.next(Event::Started), None);
        assert_eq!(Stopped.next(Event::Started), None, "a stopped session never runs again");
        for s in [Creating, Warm, Running, Stopped] {
            assert_eq!(s.next(Event::Deleted), Some(Deleted));
        }
        assert_eq!(Deleted.next(Event::Deleted), None);
        let mut s = Deleted;
        assert_eq!(s.advance(Event::Started).unwrap_err().code(), Code::Internal);
        assert_eq!(s, Deleted);
    }
}
