//! paddock: the operator CLI. Human output by default, `--json` for scripts.

mod connect;
mod env;
mod idle;
mod mcp;
mod network;
mod node;
mod observe;
mod snapshot;
mod tls;
mod tokens;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use crate::connect::Conn;
use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use paddock_proto::v1::exec_event::Event;
use paddock_proto::v1::sessions_client::SessionsClient;
use paddock_proto::v1::{
    CreateSessionRequest, DeleteSessionRequest, ExecRequest, GetNetworkRequest, GetSessionRequest,
    IdleAction, Limits, ListSessionsRequest, PauseSessionRequest, ResumeSessionRequest, Session,
    SessionResource, SessionState, StopSessionRequest, UpdateNetworkRequest,
};
use paddock_units::{format_bytes, parse_bytes, parse_duration};

#[derive(Parser)]
#[command(name = "paddock", version, about = "Operate Paddock sandboxes")]
struct Cli {
    /// The daemon: unix:/path, HOST:PORT, http://HOST:PORT or https://HOST:PORT.
    #[arg(long, global = true, env = "PADDOCK_ADDR", default_value = connect::DEFAULT_ADDR)]
    addr: String,
    /// An API token (`paddock token create`); root on the unix socket needs none.
    #[arg(long, global = true, env = "PADDOCK_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// TLS to a TCP address (paddockd --tls-cert): the CA (PEM) that signed
    /// the daemon's certificate. Implied by an https:// address.
    #[arg(long, global = true, env = "PADDOCK_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
    /// A client certificate (PEM) for paddockd --tls-client-ca, with --tls-key:
    /// it stands for the token its CN names.
    #[arg(long, global = true, env = "PADDOCK_TLS_CERT")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, global = true, env = "PADDOCK_TLS_KEY")]
    tls_key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create, list, inspect and remove sessions.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Run a command in a session; exits with its exit code (128+N for signal N).
    Exec(ExecArgs),
    /// Declare, build, list, export and import environments.
    #[command(subcommand)]
    Env(env::EnvCommand),
    /// Make, list and remove API tokens (admins only).
    #[command(subcommand)]
    Token(tokens::TokenCommand),
    /// Serve a session's tools (bash, read, write, edit, glob, grep, exec,
    /// run_code) as an MCP server on stdin/stdout. Without --session, a new
    /// session is made from the create flags and deleted on exit.
    Mcp(mcp::McpArgs),
    /// A live table of running sessions by CPU and memory.
    Top(observe::TopArgs),
    /// Follow session and environment events (WatchEvents) as they happen.
    Events(observe::EventsArgs),
    /// A fleet router's nodes: list, drain, undrain (`paddockd router`).
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Remove layers and base-image versions nothing uses (admins only).
    Gc(snapshot::GcArgs),
}

#[derive(Subcommand)]
enum SessionCommand {
    /// Start a new session and print its id.
    Create(CreateArgs),
    /// List sessions.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show one session.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop sessions: end their sandboxes but keep them, and their
    /// /mnt/session/outputs, until they are deleted.
    Stop {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Show a session's network policy and denials, or change its policy
    /// (with any network flag) while it runs.
    Network {
        id: String,
        #[command(flatten)]
        policy: network::NetworkArgs,
        #[arg(long)]
        json: bool,
    },
    /// Delete sessions: kill their processes and remove everything they had.
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Make an environment from a running session's files (processes are
    /// not part of it; a file being written meanwhile may be caught mid-write).
    Snapshot(snapshot::SnapshotArgs),
    /// Start new sessions from a snapshot of a running session, with its
    /// limits, labels, network policy and TTL; prints their ids. All or none.
    Fork(snapshot::ForkArgs),
    /// Pause sessions: freeze every process (memory kept, no CPU) until resumed.
    Pause {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Resume paused sessions: their processes continue where they stopped.
    Resume {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Args)]
struct CreateArgs {
    #[command(flatten)]
    spec: SessionSpec,
    /// Print the session as JSON.
    #[arg(long)]
    json: bool,
}

/// What a new session is made with (`session create`, and `mcp` without
/// `--session`).
#[derive(Args)]
pub(crate) struct SessionSpec {
    /// Memory limit, e.g. 512M, 2G.
    #[arg(long, value_parser = parse_bytes)]
    memory: Option<i64>,
    /// CPU limit in cores, e.g. 0.5.
    #[arg(long)]
    cpus: Option<f64>,
    /// Process and thread limit.
    #[arg(long)]
    pids: Option<i64>,
    /// Disk space for the session's writable layer and outputs, e.g. 2G.
    #[arg(long, value_parser = parse_bytes)]
    disk: Option<i64>,
    /// Remove the session after this long, e.g. 30m, 1h.
    #[arg(long, value_parser = parse_duration)]
    ttl: Option<Duration>,
    /// A label KEY=VALUE; repeatable.
    #[arg(long = "label", value_parser = parse_key_value)]
    labels: Vec<(String, String)>,
    /// Start from this environment (name or id) instead of the base image.
    #[arg(long)]
    env: Option<String>,
    /// If the environment is not built yet, build it (or wait for its build)
    /// instead of failing.
    #[arg(long)]
    wait_for_build: bool,
    /// A local file to place read-only in the session: FILE (at
    /// /mnt/session/uploads/<its name>) or FILE=PATH (PATH relative to
    /// /mnt/session/uploads); repeatable.
    #[arg(long = "upload", value_parser = parse_upload)]
    uploads: Vec<(String, String)>,
    #[command(flatten)]
    network: network::NetworkArgs,
    /// Stop the session after this long without a tool call, e.g. 5m (0:
    /// never; unset: the daemon's --idle-timeout).
    #[arg(long, value_parser = parse_duration)]
    idle_timeout: Option<Duration>,
    /// What the idle timeout does: stop (the default) or pause.
    #[arg(long, value_parser = ["stop", "pause"])]
    idle_action: Option<String>,
    /// A tool call on the session while it is paused resumes it first
    /// (instead of failing).
    #[arg(long)]
    auto_resume: bool,
}

fn parse_upload(s: &str) -> Result<(String, String), String> {
    let (local, remote) = match s.split_once('=') {
        Some((l, r)) => (l.to_string(), r.to_string()),
        None => {
            let name = std::path::Path::new(s).file_name().ok_or(format!("{s:?} names no file"))?;
            (s.to_string(), name.to_string_lossy().into_owned())
        }
    };
    if local.is_empty() || remote.is_empty() {
        return Err(format!("{s:?} is not FILE or FILE=PATH"));
    }
    Ok((local, remote))
}

#[derive(Args)]
struct ExecArgs {
    /// The session id.
    id: String,
    /// Kill the command after this long, e.g. 30s.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Working directory inside the sandbox.
    #[arg(long)]
    cwd: Option<String>,
    /// An environment variable KEY=VALUE; repeatable.
    #[arg(long = "env", short = 'e', value_parser = parse_key_value)]
    env: Vec<(String, String)>,
    /// Send this process's stdin to the command.
    #[arg(long, short = 'i')]
    stdin: bool,
    /// The command and its arguments.
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("paddock: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let tls = tls::TlsOptions { ca: cli.tls_ca, cert: cli.tls_cert, key: cli.tls_key };
    let daemon = connect::Daemon { addr: cli.addr, token: cli.token, tls };
    let cmd = match cli.command {
        Command::Env(cmd) => return env::run(&daemon, cmd).await,
        Command::Token(cmd) => return tokens::run(&daemon, cmd).await,
        Command::Mcp(args) => return mcp::run(&daemon, args).await,
        Command::Top(args) => return observe::top(&daemon, args).await,
        Command::Events(args) => return observe::events(&daemon, args).await,
        Command::Node(cmd) => return node::run(&daemon, cmd).await,
        Command::Gc(args) => return snapshot::gc(&daemon, args).await,
        Command::Session(SessionCommand::Snapshot(args)) => return snapshot::snapshot(&daemon, args).await,
        Command::Session(SessionCommand::Fork(args)) => return snapshot::fork(&daemon, args).await,
        other => other,
    };
    let mut client = connect::sessions(&daemon).await?;
    match cmd {
        Command::Env(_)
        | Command::Token(_)
        | Command::Mcp(_)
        | Command::Top(_)
        | Command::Events(_)
        | Command::Node(_)
        | Command::Gc(_)
        | Command::Session(SessionCommand::Snapshot(_) | SessionCommand::Fork(_)) => {
            unreachable!("handled above")
        }
        Command::Session(SessionCommand::Create(args)) => create(&mut client, args).await,
        Command::Session(SessionCommand::Ls { json }) => {
            let sessions =
                client.list_sessions(ListSessionsRequest {}).await.map_err(status)?.into_inner().sessions;
            if json {
                let list: Vec<_> = sessions.iter().map(session_json).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<22} {:<9} {:>8} {:>5} {:>6}  EXPIRES", "ID", "STATE", "MEMORY", "CPUS", "PIDS");
                for s in &sessions {
                    let l = s.limits.clone().unwrap_or_default();
                    println!(
                        "{:<22} {:<9} {:>8} {:>5} {:>6}  {}",
                        s.id,
                        state_name(s.state),
                        format_bytes(l.memory_bytes.unwrap_or(0)),
                        l.cpus.unwrap_or(0.0),
                        l.pids.unwrap_or(0),
                        expires(s.expires_at_ms)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Session(SessionCommand::Show { id, json }) => {
            let s = client
                .get_session(GetSessionRequest { session_id: id.clone() })
                .await
                .map_err(status)?
                .into_inner();
            let net =
                client.get_network(GetNetworkRequest { session_id: id }).await.map_err(status)?.into_inner();
            if json {
                let mut v = session_json(&s);
                v["network_status"] = network::status_json(&net);
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let l = s.limits.clone().unwrap_or_default();
                println!("id:       {}", s.id);
                println!("state:    {}", state_name(s.state));
                println!("memory:   {}", format_bytes(l.memory_bytes.unwrap_or(0)));
                println!("cpus:     {}", l.cpus.unwrap_or(0.0));
                println!("pids:     {}", l.pids.unwrap_or(0));
                match l.disk_bytes.unwrap_or(0) {
                    0 => println!("disk:     unlimited (the daemon runs with --disk-limit off)"),
                    d => println!("disk:     {}", format_bytes(d)),
                }
                println!("expires:  {}", expires(s.expires_at_ms));
                if let Some(idle) = idle::line(&s) {
                    println!("idle:     {idle}");
                }
                if let Some(r) = idle::stop_reason(&s) {
                    println!("stopped:  {r}");
                }
                println!("init pid: {}", s.init_pid);
                println!("tenant:   {}", s.tenant);
                if !s.environment_name.is_empty() {
                    println!("env:      {} ({})", s.environment_name, s.environment_id);
                }
                for (k, v) in &s.labels {
                    println!("label:    {k}={v}");
                }
                for r in &s.resources {
                    println!("resource: {r}");
                }
                if let Some(u) = &s.usage {
                    observe::print_usage(u);
                }
                network::print_status(&net, 10);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Session(SessionCommand::Network { id, policy, json }) => {
            let net = match policy.policy() {
                Some(p) => client
                    .update_network(UpdateNetworkRequest { session_id: id, network: Some(p) })
                    .await
                    .map_err(status)?
                    .into_inner(),
                None => client
                    .get_network(GetNetworkRequest { session_id: id })
                    .await
                    .map_err(status)?
                    .into_inner(),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&network::status_json(&net))?);
            } else {
                network::print_status(&net, 100);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Session(SessionCommand::Stop { ids }) => {
            for_each_session(ids, |id| {
                let mut c = client.clone();
                async move { c.stop_session(StopSessionRequest { session_id: id }).await.map(|_| ()) }
            })
            .await
        }
        Command::Session(SessionCommand::Rm { ids }) => {
            for_each_session(ids, |id| {
                let mut c = client.clone();
                async move { c.delete_session(DeleteSessionRequest { session_id: id }).await.map(|_| ()) }
            })
            .await
        }
        Command::Session(SessionCommand::Pause { ids }) => {
            for_each_session(ids, |id| {
                let mut c = client.clone();
                async move { c.pause_session(PauseSessionRequest { session_id: id }).await.map(|_| ()) }
            })
            .await
        }
        Command::Session(SessionCommand::Resume { ids }) => {
            for_each_session(ids, |id| {
                let mut c = client.clone();
                async move { c.resume_session(ResumeSessionRequest { session_id: id }).await.map(|_| ()) }
            })
            .await
        }
        Command::Exec(args) => exec(&mut client, args).await,
    }
}

/// Runs `op` on each id, printing the ids it succeeded for; fails if any failed.
async fn for_each_session<F, Fut>(ids: Vec<String>, op: F) -> Result<ExitCode>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let mut failed = false;
    for id in ids {
        match op(id.clone()).await {
            Ok(()) => println!("{id}"),
            Err(e) => {
                eprintln!("paddock: {id}: {}", e.message());
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

async fn create(client: &mut SessionsClient<Conn>, args: CreateArgs) -> Result<ExitCode> {
    let request = create_request(args.spec)?;
    let s = client.create_session(request).await.map_err(status)?.into_inner();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&session_json(&s))?);
    } else {
        println!("{}", s.id);
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn create_request(args: SessionSpec) -> Result<CreateSessionRequest> {
    let mut resources = Vec::with_capacity(args.uploads.len());
    for (local, path) in args.uploads {
        let content = std::fs::read(&local).with_context(|| format!("--upload {local}"))?;
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&local)?.permissions());
        resources.push(SessionResource { path, content, mode: mode & 0o555 });
    }
    Ok(CreateSessionRequest {
        limits: Some(Limits {
            memory_bytes: args.memory,
            cpus: args.cpus,
            pids: args.pids,
            disk_bytes: args.disk,
        }),
        ttl_seconds: args.ttl.map(|t| t.as_secs().max(1) as i64),
        labels: args.labels.into_iter().collect(),
        environment: args.env.unwrap_or_default(),
        wait_for_build: args.wait_for_build,
        resources,
        network: args.network.policy(),
        idle_timeout_seconds: args.idle_timeout.map(idle::seconds),
        idle_action: idle::action(args.idle_action.as_deref()) as i32,
        auto_resume: args.auto_resume,
        ..Default::default()
    })
}

async fn exec(client: &mut SessionsClient<Conn>, args: ExecArgs) -> Result<ExitCode> {
    let mut stdin = Vec::new();
    if args.stdin {
        std::io::stdin().read_to_end(&mut stdin).context("reading stdin")?;
    }
    let request = ExecRequest {
        session_id: args.id,
        argv: args.command,
        shell: String::new(),
        cwd: args.cwd.unwrap_or_default(),
        env: args.env.into_iter().collect::<HashMap<_, _>>(),
        stdin,
        timeout_ms: args.timeout.map(|t| t.as_millis().max(1) as u64),
        output_limit_bytes: None,
    };
    // Streamed: output shows up as the command writes it.
    let mut events = client.exec_stream(request).await.map_err(status)?.into_inner();
    let mut last = None;
    while let Some(ev) = events.message().await.map_err(status)? {
        match ev.event {
            Some(Event::Stdout(b)) => {
                let mut out = std::io::stdout().lock();
                out.write_all(&b)?;
                out.flush()?;
            }
            Some(Event::Stderr(b)) => std::io::stderr().write_all(&b)?,
            Some(Event::Exit(r)) => last = Some(r),
            None => {}
        }
    }
    let r = last.context("the daemon ended the stream without the command's exit status")?;
    if r.stdout_truncated || r.stderr_truncated {
        eprintln!("paddock: output truncated at the daemon's output limit");
    }
    if r.timed_out {
        eprintln!("paddock: command timed out and was killed");
    }
    let code = match (r.exit_code, r.signal) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 255,
    };
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

pub(crate) fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", s.message(), s.code())
}

fn state_name(state: i32) -> &'static str {
    match SessionState::try_from(state).unwrap_or(SessionState::Unspecified) {
        SessionState::Creating => "creating",
        SessionState::Running => "running",
        SessionState::Stopped => "stopped",
        SessionState::Paused => "paused",
        SessionState::Unspecified => "unknown",
    }
}

fn expires(ms: i64) -> String {
    if ms == 0 {
        return "never".into();
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    format!("in {}s", ((ms - now) / 1000).max(0))
}

pub(crate) fn session_json(s: &Session) -> serde_json::Value {
    let l = s.limits.clone().unwrap_or_default();
    serde_json::json!({
        "id": s.id,
        "state": state_name(s.state),
        "limits": {"memory_bytes": l.memory_bytes, "cpus": l.cpus, "pids": l.pids, "disk_bytes": l.disk_bytes},
        "created_at_ms": s.created_at_ms,
        "expires_at_ms": if s.expires_at_ms == 0 { None } else { Some(s.expires_at_ms) },
        "init_pid": s.init_pid,
        "labels": s.labels,
        "tenant": s.tenant,
        "environment": if s.environment_name.is_empty() { None } else { Some(&s.environment_name) },
        "resources": s.resources,
        "network": s.network.as_ref().map(network::policy_json),
        "network_denied_total": s.network_denied_total,
        "usage": s.usage.as_ref().map(observe::usage_json),
        // Through a fleet's router: the node that holds it, and whether that node is down.
        "node": if s.node.is_empty() { None } else { Some(&s.node) },
        "lost": s.lost,
        "auto_resume": s.auto_resume,
        "idle_timeout_seconds": s.idle_timeout_seconds,
        "idle_action": if s.idle_action == IdleAction::Pause as i32 { "pause" } else { "stop" },
        "stop_reason": idle::stop_reason(s),
        "paused_at_ms": if s.paused_at_ms == 0 { None } else { Some(s.paused_at_ms) },
        "last_activity_ms": if s.last_activity_ms == 0 { None } else { Some(s.last_activity_ms) },
    })
}
