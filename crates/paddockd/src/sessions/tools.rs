//! Routing tool calls to a session's guest: validation, the daemon's defaults,
//! and what a caller sees when the sandbox goes away under a call.

use std::time::Duration;

use paddock_proto::v1::{ExecEvent, ExecRequest, ExecResponse, RunToolRequest, ToolResult};

use super::{SessionManager, SessionState, EXEC_DEADLINE_SLACK};
use crate::config::MAX_EXEC_OUTPUT;
use crate::core::caller::Caller;
use crate::core::error::{from_guest, Error, Stream};
use crate::guest::Guest;

impl SessionManager {
    /// Runs `call` against the session's guest; a failure caused by the
    /// sandbox going away is reported as such (see `guest_failure`).
    pub(crate) async fn call_guest<T, F, Fut>(
        &self,
        caller: &Caller,
        session_id: &str,
        call: F,
    ) -> Result<T, Error>
    where
        F: FnOnce(Guest) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let (guest, _busy) = self.guest_of(caller, session_id).await?;
        self.call_with(session_id, guest, call).await
    }

    /// `call_guest` for a call whose answer is a stream: the session stays
    /// busy (not idle) until the stream is dropped.
    pub(crate) async fn call_guest_stream<T, F, Fut>(
        &self,
        caller: &Caller,
        session_id: &str,
        call: F,
    ) -> Result<Stream<T>, Error>
    where
        T: Send + 'static,
        F: FnOnce(Guest) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>>,
    {
        let (guest, busy) = self.guest_of(caller, session_id).await?;
        let events = self.call_with(session_id, guest, call).await?;
        Ok(super::hold(from_guest(events), busy))
    }

    /// `call_guest` with the guest already looked up.
    pub(crate) async fn call_with<T, F, Fut>(
        &self,
        session_id: &str,
        guest: Guest,
        call: F,
    ) -> Result<T, Error>
    where
        F: FnOnce(Guest) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match call(guest).await {
            Ok(r) => Ok(r.into_inner()),
            Err(status) => Err(self.guest_failure(session_id, status).await),
        }
    }

    /// One call of the agent toolset, run by the session's guest.
    pub async fn run_tool(&self, caller: &Caller, req: RunToolRequest) -> Result<ToolResult, Error> {
        if req.name.is_empty() {
            return Err(Error::invalid_argument("name: must be set (bash, read, write, edit, glob or grep)"));
        }
        let id = req.session_id.clone();
        self.call_guest(caller, &id, |mut guest| async move { guest.run_tool(req).await }).await
    }

    pub async fn exec(&self, caller: &Caller, req: ExecRequest) -> Result<ExecResponse, Error> {
        let request = self.prepare_exec(req)?;
        let id = request.get_ref().session_id.clone();
        self.call_guest(caller, &id, |mut guest| async move { guest.exec(request).await }).await
    }

    /// Exec with output streamed as it comes; the guest's stream is passed through.
    pub async fn exec_stream(&self, caller: &Caller, req: ExecRequest) -> Result<Stream<ExecEvent>, Error> {
        let request = self.prepare_exec(req)?;
        let id = request.get_ref().session_id.clone();
        self.call_guest_stream(caller, &id, |mut guest| async move { guest.exec_stream(request).await }).await
    }

    /// Validates an Exec request and fills in the daemon's defaults; the
    /// guest's deadline is the command's timeout plus some slack.
    fn prepare_exec(&self, mut req: ExecRequest) -> Result<tonic::Request<ExecRequest>, Error> {
        let has_argv = !req.argv.is_empty();
        let has_shell = !req.shell.is_empty();
        if has_argv == has_shell {
            return Err(Error::invalid_argument(
                "argv, shell: set exactly one (argv: the program and its arguments; shell: a command line for /bin/sh -c)",
            ));
        }
        if has_argv && req.argv[0].is_empty() {
            return Err(Error::invalid_argument("argv[0]: the program name is empty"));
        }
        if !req.cwd.is_empty() && !req.cwd.starts_with('/') {
            return Err(Error::invalid_argument(format!("cwd: {:?} must be an absolute path", req.cwd)));
        }
        crate::envvars::check_names(req.env.keys()).map_err(Error::invalid_argument)?;
        let timeout = match req.timeout_ms {
            Some(0) => {
                return Err(Error::invalid_argument("timeout_ms: must be positive, or unset for the default"))
            }
            Some(ms) => Duration::from_millis(ms),
            None => self.cfg.exec_timeout,
        };
        req.timeout_ms = Some(timeout.as_millis() as u64);
        match req.output_limit_bytes {
            Some(n) if n > MAX_EXEC_OUTPUT => {
                return Err(Error::invalid_argument(format!(
                    "output_limit_bytes: {n} is larger than the maximum {MAX_EXEC_OUTPUT}"
                )))
            }
            Some(_) => {}
            None => req.output_limit_bytes = Some(self.cfg.exec_output_limit as u64),
        }

        let mut request = tonic::Request::new(req);
        request.set_timeout(timeout + EXEC_DEADLINE_SLACK);
        Ok(request)
    }

    /// Turns a failed guest call into what the caller should see: the guest's own
    /// answer, or, when the sandbox went away under the call, that.
    async fn guest_failure(&self, id: &str, status: tonic::Status) -> Error {
        // The guest itself never answers Unavailable; a transport failure does.
        let transport = status.code() == tonic::Code::Unavailable
            || (status.code() == tonic::Code::Unknown && std::error::Error::source(&status).is_some());
        if !transport {
            return Error::from(status);
        }
        // The caller was already checked for this session.
        match self.lookup(&Caller::daemon(), id).await {
            Err(not_found) => not_found,
            Ok(session) => {
                let mut s = session.lock().await;
                self.refresh_state(&mut s);
                if s.record.state == SessionState::Deleted {
                    Error::not_found(format!("session {id:?} was deleted during the call"))
                } else if s.record.state == SessionState::Paused {
                    Error::unavailable(format!("session {id} was paused during the call"))
                } else if s.record.state == SessionState::Stopped {
                    Error::failed_precondition(format!("session {id} stopped during the call"))
                } else {
                    Error::unavailable(format!(
                        "session {id}: the sandbox's guest is unreachable: {}",
                        status.message()
                    ))
                }
            }
        }
    }
}
