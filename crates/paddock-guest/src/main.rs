//! paddock-guest: PID 1 of every Paddock sandbox.
//!
//! It is started by the runtime with its listening socket at the fd named by
//! `PADDOCK_LISTEN_FD`, reaps every process in the sandbox, and serves the
//! daemon's tool requests (the `paddock.guest.v1.Guest` gRPC service) on that
//! socket. All tool work runs here, inside the sandbox and under its limits.

mod code;
mod defaults;
mod exec;
mod files;
mod processes;
mod reaper;
mod spawn;
mod toolset;
mod watch;

use std::os::fd::FromRawFd;
use std::time::Duration;

use paddock_proto::guest::guest_server::{Guest, GuestServer};
use paddock_proto::guest::{PingRequest, PingResponse};
use paddock_proto::v1::run_code_event;
use paddock_proto::v1::{
    AttachProcessRequest, CodeContext, ContextRequest, CreateContextRequest, DeleteContextResponse,
    DownloadChunk, DownloadRequest, ExecEvent, ExecRequest, ExecResponse, FileInfo, ListContextsRequest,
    ListContextsResponse, ListDirRequest, ListDirResponse, ListProcessesRequest, ListProcessesResponse,
    MakeDirRequest, MoveRequest, ProcessEvent, ProcessInfo, RemoveRequest, RemoveResponse, ResizePtyRequest,
    ResizePtyResponse, RunCodeEvent, RunCodeRequest, RunCodeResponse, RunToolRequest, SignalProcessRequest,
    SignalProcessResponse, StartProcessRequest, StatRequest, ToolResult, UploadRequest, WatchEvent,
    WatchRequest, WriteStdinRequest, WriteStdinResponse,
};
use paddock_proto::MAX_MESSAGE;
use std::sync::Arc;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status};

use crate::reaper::Reaper;
use crate::spawn::SpawnError;

const LISTEN_FD_ENV: &str = "PADDOCK_LISTEN_FD";
/// Limits used when the daemon sends none (it always does).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
const DEFAULT_OUTPUT_LIMIT: usize = 1 << 20;

struct GuestService {
    reaper: Reaper,
    code: Arc<code::Contexts>,
    files: files::FileService,
    tools: toolset::Toolset,
    processes: Arc<processes::ProcessTable>,
    /// The environment tool processes start with: the sandbox's, minus ours.
    base_env: Vec<(String, String)>,
}

#[tonic::async_trait]
impl Guest for GuestService {
    async fn ping(&self, _: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        Ok(Response::new(PingResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id() as i32,
        }))
    }

    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let req = request.into_inner();
        let limits = exec_limits(&req);
        exec::run(&self.reaper, &self.base_env, req, limits).await.map(Response::new).map_err(spawn_status)
    }

    type ExecStreamStream = ReceiverStream<Result<ExecEvent, Status>>;

    async fn exec_stream(
        &self,
        request: Request<ExecRequest>,
    ) -> Result<Response<Self::ExecStreamStream>, Status> {
        let req = request.into_inner();
        let limits = exec_limits(&req);
        let events = exec::start(&self.reaper, &self.base_env, req, limits).await.map_err(spawn_status)?;
        Ok(Response::new(ReceiverStream::new(events)))
    }

    async fn run_tool(&self, request: Request<RunToolRequest>) -> Result<Response<ToolResult>, Status> {
        let req = request.into_inner();
        self.tools.run(&req.name, &req.input_json).await.map(Response::new)
    }

    async fn start_process(
        &self,
        request: Request<StartProcessRequest>,
    ) -> Result<Response<ProcessInfo>, Status> {
        self.processes.start(request.into_inner()).await.map(Response::new)
    }

    type AttachProcessStream = ReceiverStream<Result<ProcessEvent, Status>>;

    async fn attach_process(
        &self,
        request: Request<AttachProcessRequest>,
    ) -> Result<Response<Self::AttachProcessStream>, Status> {
        self.processes.attach(request.into_inner()).map(|rx| Response::new(ReceiverStream::new(rx)))
    }

    type RunProcessStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<ProcessEvent, Status>> + Send>>;

    async fn run_process(
        &self,
        request: Request<StartProcessRequest>,
    ) -> Result<Response<Self::RunProcessStream>, Status> {
        use paddock_proto::v1::process_event::Event;
        use tokio_stream::StreamExt;
        let info = self.processes.start(request.into_inner()).await?;
        let attach = AttachProcessRequest { pid: info.pid, ..Default::default() };
        let events = ReceiverStream::new(self.processes.attach(attach)?);
        let started = ProcessEvent { event: Some(Event::Started(info)) };
        Ok(Response::new(Box::pin(tokio_stream::once(Ok(started)).chain(events))))
    }

    async fn write_stdin(
        &self,
        request: Request<WriteStdinRequest>,
    ) -> Result<Response<WriteStdinResponse>, Status> {
        let r = request.into_inner();
        self.processes.write_stdin(r.pid, &r.tag, &r.data, r.close).await?;
        Ok(Response::new(WriteStdinResponse {}))
    }

    async fn resize_pty(
        &self,
        request: Request<ResizePtyRequest>,
    ) -> Result<Response<ResizePtyResponse>, Status> {
        let r = request.into_inner();
        let size = r.size.ok_or_else(|| Status::invalid_argument("size: must be set"))?;
        self.processes.resize(r.pid, &r.tag, size)?;
        Ok(Response::new(ResizePtyResponse {}))
    }

    async fn signal_process(
        &self,
        request: Request<SignalProcessRequest>,
    ) -> Result<Response<SignalProcessResponse>, Status> {
        let r = request.into_inner();
        self.processes.signal(r.pid, &r.tag, r.signal, r.group)?;
        Ok(Response::new(SignalProcessResponse {}))
    }

    async fn stat(&self, request: Request<StatRequest>) -> Result<Response<FileInfo>, Status> {
        self.files.stat(&request.into_inner().path).await.map(Response::new)
    }

    async fn list_dir(&self, request: Request<ListDirRequest>) -> Result<Response<ListDirResponse>, Status> {
        let r = request.into_inner();
        self.files.list(&r.path, r.depth).await.map(Response::new)
    }

    async fn make_dir(&self, request: Request<MakeDirRequest>) -> Result<Response<FileInfo>, Status> {
        let r = request.into_inner();
        self.files.make_dir(&r.path, &r.owner).await.map(Response::new)
    }

    async fn r#move(&self, request: Request<MoveRequest>) -> Result<Response<FileInfo>, Status> {
        let r = request.into_inner();
        self.files.rename(&r.from, &r.to, r.overwrite).await.map(Response::new)
    }

    async fn remove(&self, request: Request<RemoveRequest>) -> Result<Response<RemoveResponse>, Status> {
        let r = request.into_inner();
        self.files.remove(&r.path, r.recursive).await?;
        Ok(Response::new(RemoveResponse {}))
    }

    async fn upload(
        &self,
        request: Request<tonic::Streaming<UploadRequest>>,
    ) -> Result<Response<FileInfo>, Status> {
        self.files.upload(request.into_inner()).await.map(Response::new)
    }

    type DownloadStream = ReceiverStream<Result<DownloadChunk, Status>>;

    async fn download(
        &self,
        request: Request<DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let rx = self.files.download(&request.into_inner().path).await?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type WatchStream = ReceiverStream<Result<WatchEvent, Status>>;

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let r = request.into_inner();
        let dir = self.files.path("path", &r.path)?;
        Ok(Response::new(ReceiverStream::new(watch::watch(dir, r.recursive)?)))
    }

    async fn run_code(&self, request: Request<RunCodeRequest>) -> Result<Response<RunCodeResponse>, Status> {
        let r = request.into_inner();
        let timeout = r.timeout_ms.map(Duration::from_millis);
        let id = self.code.resolve(&r.language, &r.context_id)?;
        let mut output = code::Collected::default();
        let mut answer = self.code.run(&id, &r.code, timeout, &mut output).await?;
        (answer.stdout, answer.stderr) = (output.stdout, output.stderr);
        Ok(Response::new(answer))
    }

    type RunCodeStreamStream = UnboundedReceiverStream<Result<RunCodeEvent, Status>>;

    async fn run_code_stream(
        &self,
        request: Request<RunCodeRequest>,
    ) -> Result<Response<Self::RunCodeStreamStream>, Status> {
        let r = request.into_inner();
        let timeout = r.timeout_ms.map(Duration::from_millis);
        let id = self.code.resolve(&r.language, &r.context_id)?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let contexts = self.code.clone();
        // A task of its own: a client that goes away must not cut the run
        // short, or the kernel's next answer would be this run's rest.
        // Unbounded: a kernel sends at most 1 MiB of each stream per run.
        tokio::spawn(async move {
            let mut output = code::Streamed(tx.clone());
            let last = contexts
                .run(&id, &r.code, timeout, &mut output)
                .await
                .map(|done| RunCodeEvent { event: Some(run_code_event::Event::Done(done)) });
            let _ = tx.send(last);
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }

    async fn create_context(
        &self,
        request: Request<CreateContextRequest>,
    ) -> Result<Response<CodeContext>, Status> {
        self.code.create(&request.into_inner().language, None).map(Response::new)
    }

    async fn list_contexts(
        &self,
        _: Request<ListContextsRequest>,
    ) -> Result<Response<ListContextsResponse>, Status> {
        Ok(Response::new(ListContextsResponse { contexts: self.code.list() }))
    }

    async fn restart_context(
        &self,
        request: Request<ContextRequest>,
    ) -> Result<Response<CodeContext>, Status> {
        self.code.restart(&request.into_inner().context_id).await.map(Response::new)
    }

    async fn delete_context(
        &self,
        request: Request<ContextRequest>,
    ) -> Result<Response<DeleteContextResponse>, Status> {
        self.code.delete(&request.into_inner().context_id).await?;
        Ok(Response::new(DeleteContextResponse {}))
    }

    async fn list_processes(
        &self,
        _: Request<ListProcessesRequest>,
    ) -> Result<Response<ListProcessesResponse>, Status> {
        Ok(Response::new(ListProcessesResponse { processes: self.processes.list() }))
    }
}

fn exec_limits(req: &ExecRequest) -> exec::ExecLimits {
    exec::ExecLimits {
        timeout: req.timeout_ms.map(Duration::from_millis).unwrap_or(DEFAULT_TIMEOUT),
        output_limit: req.output_limit_bytes.map(|b| b as usize).unwrap_or(DEFAULT_OUTPUT_LIMIT),
    }
}

/// The status a failed spawn is reported with. NOT_FOUND is kept for "no such
/// session": a missing program or directory is a bad argument of this call.
pub(crate) fn spawn_status(e: SpawnError) -> Status {
    match e {
        SpawnError::Invalid(msg) => Status::invalid_argument(msg),
        SpawnError::Rejected { what, err } | SpawnError::Os { what, err }
            if matches!(err.raw_os_error(), Some(libc::EAGAIN) | Some(libc::ENOMEM)) =>
        {
            Status::resource_exhausted(format!(
                "{what}: {err} (the session's pids or memory limit is reached)"
            ))
        }
        SpawnError::Rejected { what, err } => Status::invalid_argument(format!("{what}: {err}")),
        SpawnError::Os { what, err } => Status::internal(format!("{what}: {err}")),
    }
}

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `N` random bytes from the kernel.
pub(crate) fn urandom<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b
}

fn main() {
    if let Err(e) = run() {
        eprintln!("paddock-guest: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    // Read and drop our own variables while still single-threaded.
    let fd: i32 = std::env::var(LISTEN_FD_ENV)
        .map_err(|_| {
            anyhow::anyhow!("{LISTEN_FD_ENV} is not set; paddock-guest runs only inside a Paddock sandbox")
        })?
        .parse()?;
    std::env::remove_var(LISTEN_FD_ENV);
    defaults::init();
    let base_env: Vec<(String, String)> = std::env::vars().collect();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
        std_listener.set_nonblocking(true)?;
        // Not inherited by tool processes.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        let listener = tokio::net::UnixListener::from_std(std_listener)?;
        let reaper = Reaper::start()?;
        // Relative tool paths and the bash tool start here.
        // (the image's WorkingDir when it has one: defaults.rs).
        let workdir = std::path::PathBuf::from(defaults::workdir());
        let _ = std::fs::create_dir_all(&workdir);
        let tools = toolset::Toolset::new(reaper.clone(), workdir.clone(), base_env.clone());
        let processes =
            processes::ProcessTable::new(reaper.clone(), base_env.clone(), workdir.to_string_lossy().into());
        let files = files::FileService::new(workdir.clone());
        let code = Arc::new(code::Contexts::new(reaper.clone(), base_env.clone(), workdir));
        let service = GuestService { reaper, code, files, tools, processes, base_env };
        tonic::transport::Server::builder()
            .max_frame_size(paddock_proto::MAX_FRAME)
            .add_service(
                GuestServer::new(service)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE),
            )
            .serve_with_incoming(UnixListenerStream::new(listener))
            .await?;
        Ok(())
    })
}
