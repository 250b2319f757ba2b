//! `paddock env`: environments (declare from flags or a TOML/YAML file, build
//! with live progress, list, show, remove, export and import OCI layouts).

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::connect::Conn;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use paddock_proto::v1::build_event::Event;
use paddock_proto::v1::environments_client::EnvironmentsClient;
use paddock_proto::v1::{
    BuildEnvironmentRequest, BuildState, CreateEnvironmentRequest, DeleteEnvironmentRequest, Environment,
    ExportEnvironmentRequest, GetEnvironmentRequest, ImportEnvironmentRequest, Layer,
    ListEnvironmentsRequest, Packages, UpdateEnvironmentRequest,
};
use paddock_units::format_bytes;
use serde::Deserialize;

use crate::network::{policy_json, print_policy, NetworkArgs, NetworkFile};
use crate::{connect, parse_key_value, status};

#[derive(Subcommand)]
pub enum EnvCommand {
    /// Declare an environment (it is built by `paddock env build`).
    Create(CreateArgs),
    /// Build an environment's image; cached layers are reused.
    Build {
        name: String,
        /// Plain line output even on a terminal.
        #[arg(long)]
        plain: bool,
    },
    /// List environments.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show one environment: packages, state, layers.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete environments (refused while sessions use them).
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Write a built environment as an OCI image layout into DIR, a directory
    /// inside the daemon's exchange directory (default /var/lib/paddock/exchange;
    /// relative, or absolute under it). Through a router: on one node that has
    /// it built, named on stderr.
    Export { name: String, dir: PathBuf },
    /// Make environment NAME from the OCI image layout in DIR, inside the
    /// daemon's exchange directory. Through a router: on every node whose
    /// exchange directory holds DIR.
    Import {
        name: String,
        dir: PathBuf,
        /// The image's name in the layout's index, if it holds several.
        #[arg(long = "ref")]
        reference: Option<String>,
    },
    /// Change an environment: how many warm sandboxes it keeps, its
    /// description, whether every tenant may use it.
    Update {
        name: String,
        /// Warm sandboxes to keep started for its sessions (0: none).
        #[arg(long)]
        warm: Option<u32>,
        #[arg(long)]
        description: Option<String>,
        /// Share it with every tenant (true) or stop (false); admins only.
        #[arg(long)]
        shared: Option<bool>,
    },
}

#[derive(Args)]
pub struct CreateArgs {
    /// The environment's name (or `name` in the file).
    name: Option<String>,
    /// A TOML or YAML file with name, description, packages.{apt,cargo,gem,go,npm,pip} and env.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    #[arg(long)]
    description: Option<String>,
    /// apt package: `name` or `name=version`; repeatable.
    #[arg(long = "apt")]
    apt: Vec<String>,
    /// cargo crate: `name` or `name@1.2.3`; repeatable.
    #[arg(long = "cargo")]
    cargo: Vec<String>,
    /// gem: `name` or `name:1.2.3`; repeatable.
    #[arg(long = "gem")]
    gem: Vec<String>,
    /// Go package: `module/path@version`; repeatable.
    #[arg(long = "go")]
    go: Vec<String>,
    /// npm package: `name` or `name@1.2.3`; repeatable.
    #[arg(long = "npm")]
    npm: Vec<String>,
    /// pip requirement: `name` or `name==1.2.3`; repeatable.
    #[arg(long = "pip")]
    pip: Vec<String>,
    /// A variable baked into the image, KEY=VALUE; repeatable.
    #[arg(long = "env", value_parser = parse_key_value)]
    env: Vec<(String, String)>,
    /// Egress rules of the environment's sessions (a session's own override them).
    #[command(flatten)]
    network: NetworkArgs,
    /// Let setuid programs such as sudo work in its sessions (no_new_privs
    /// off); needs the daemon's user namespaces.
    #[arg(long)]
    allow_privilege_escalation: bool,
    /// Warm sandboxes to keep started for its sessions once it is built, so
    /// they start as fast as base sessions (or `warm_sandboxes` in the file).
    #[arg(long)]
    warm: Option<u32>,
    /// Let every tenant's sessions use it (its own tenant alone changes it);
    /// admins only.
    #[arg(long)]
    shared: bool,
    #[arg(long)]
    json: bool,
}

/// The file form of `paddock env create -f`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EnvFile {
    name: Option<String>,
    description: Option<String>,
    #[serde(default)]
    packages: PackagesFile,
    #[serde(default)]
    env: BTreeMap<String, String>,
    network: Option<NetworkFile>,
    #[serde(default)]
    allow_privilege_escalation: bool,
    #[serde(default)]
    warm_sandboxes: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PackagesFile {
    #[serde(default)]
    apt: Vec<String>,
    #[serde(default)]
    cargo: Vec<String>,
    #[serde(default)]
    gem: Vec<String>,
    #[serde(default)]
    go: Vec<String>,
    #[serde(default)]
    npm: Vec<String>,
    #[serde(default)]
    pip: Vec<String>,
}

fn read_file(path: &Path) -> Result<EnvFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "toml" => toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display())),
        "yaml" | "yml" => {
            serde_yaml::from_str(&text).with_context(|| format!("{} is not valid YAML", path.display()))
        }
        _ => toml::from_str(&text)
            .or_else(|_| serde_yaml::from_str(&text))
            .with_context(|| format!("{} is neither TOML nor YAML", path.display())),
    }
}

pub async fn run(daemon: &connect::Daemon, cmd: EnvCommand) -> Result<ExitCode> {
    let mut envs = EnvironmentsClient::new(connect::channel(daemon).await?);
    match cmd {
        EnvCommand::Create(args) => create(&mut envs, args).await,
        EnvCommand::Build { name, plain } => {
            build(&mut envs, &name, plain || !std::io::stderr().is_terminal()).await
        }
        EnvCommand::Ls { json } => {
            let list = envs.list_environments(ListEnvironmentsRequest {}).await.map_err(status)?.into_inner();
            if json {
                let all: Vec<_> = list.environments.iter().map(env_json).collect();
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                println!("{:<24} {:<22} {:<10} {:>6}  PACKAGES", "NAME", "ID", "STATE", "LAYERS");
                for e in &list.environments {
                    let count = e.packages.as_ref().map(|p| all_packages(p).len()).unwrap_or(0);
                    println!(
                        "{:<24} {:<22} {:<10} {:>6}  {count}",
                        e.name,
                        e.id,
                        state_name(e.state),
                        e.layers.len()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        EnvCommand::Show { name, json } => {
            let e = envs
                .get_environment(GetEnvironmentRequest { environment: name })
                .await
                .map_err(status)?
                .into_inner();
            if json {
                println!("{}", serde_json::to_string_pretty(&env_json(&e))?);
            } else {
                show(&e);
            }
            Ok(ExitCode::SUCCESS)
        }
        EnvCommand::Rm { names } => {
            let mut failed = false;
            for name in names {
                if let Err(s) =
                    envs.delete_environment(DeleteEnvironmentRequest { environment: name.clone() }).await
                {
                    eprintln!("paddock: {name}: {}", s.message());
                    failed = true;
                }
            }
            Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        EnvCommand::Export { name, dir } => {
            let directory = exchange_path(&dir)?;
            let r = envs
                .export_environment(ExportEnvironmentRequest { environment: name, directory })
                .await
                .map_err(status)?
                .into_inner();
            println!("{}", r.manifest_digest);
            // Through a router the layout is on one node's host.
            if !r.node.is_empty() {
                eprintln!("written on node {} (in its exchange directory)", r.node);
            }
            Ok(ExitCode::SUCCESS)
        }
        EnvCommand::Import { name, dir, reference } => {
            let directory = exchange_path(&dir)?;
            let req = ImportEnvironmentRequest {
                name,
                directory,
                reference: reference.unwrap_or_default(),
                ..Default::default()
            };
            let e = envs.import_environment(req).await.map_err(status)?.into_inner();
            println!("{}", e.id);
            Ok(ExitCode::SUCCESS)
        }
        EnvCommand::Update { name, warm, description, shared } => {
            let req = UpdateEnvironmentRequest {
                environment: name,
                warm_sandboxes: warm,
                description,
                shared,
                ..Default::default()
            };
            let e = envs.update_environment(req).await.map_err(status)?.into_inner();
            println!("{}", e.id);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The daemon resolves it inside its exchange directory.
fn exchange_path(dir: &Path) -> Result<String> {
    Ok(dir.to_string_lossy().into_owned())
}

async fn create(envs: &mut EnvironmentsClient<Conn>, args: CreateArgs) -> Result<ExitCode> {
    let file = match &args.file {
        Some(p) => read_file(p)?,
        None => EnvFile::default(),
    };
    let name = match (args.name, file.name) {
        (Some(n), _) | (None, Some(n)) => n,
        (None, None) => bail!("give the environment a name (argument, or `name` in the file)"),
    };
    let join = |a: Vec<String>, b: Vec<String>| a.into_iter().chain(b).collect::<Vec<_>>();
    let p = file.packages;
    let packages = Packages {
        apt: join(p.apt, args.apt),
        cargo: join(p.cargo, args.cargo),
        gem: join(p.gem, args.gem),
        go: join(p.go, args.go),
        npm: join(p.npm, args.npm),
        pip: join(p.pip, args.pip),
    };
    let mut env: HashMap<String, String> = file.env.into_iter().collect();
    env.extend(args.env);
    // Network flags replace the file's network table as a whole.
    let network = match (args.network.policy(), file.network) {
        (Some(p), _) => Some(p),
        (None, Some(f)) => f.args()?.policy(),
        (None, None) => None,
    };
    let req = CreateEnvironmentRequest {
        name,
        description: args.description.or(file.description).unwrap_or_default(),
        packages: Some(packages),
        env,
        network,
        allow_privilege_escalation: args.allow_privilege_escalation || file.allow_privilege_escalation,
        warm_sandboxes: args.warm.unwrap_or(file.warm_sandboxes),
        shared: args.shared,
        ..Default::default()
    };
    let e = envs.create_environment(req).await.map_err(status)?.into_inner();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&env_json(&e))?);
    } else {
        println!("{}", e.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// Streams a build: a progress bar per step on a terminal, plain lines otherwise.
async fn build(envs: &mut EnvironmentsClient<Conn>, name: &str, plain: bool) -> Result<ExitCode> {
    let mut stream = envs
        .build_environment(BuildEnvironmentRequest { environment: name.into() })
        .await
        .map_err(status)?
        .into_inner();
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg} {elapsed:>4}").unwrap();
    let mut bars: HashMap<u32, ProgressBar> = HashMap::new();
    while let Some(e) = stream.message().await.map_err(status)? {
        let prefix = format!("[{}/{}] {:<5}", e.step, e.steps, e.manager);
        let bar = |bars: &mut HashMap<u32, ProgressBar>| {
            bars.entry(e.step)
                .or_insert_with(|| {
                    let b = multi.add(
                        ProgressBar::new_spinner().with_style(style.clone()).with_prefix(prefix.clone()),
                    );
                    b.enable_steady_tick(Duration::from_millis(120));
                    b
                })
                .clone()
        };
        match e.event {
            Some(Event::StepStarted(s)) => {
                let tc = if s.kind.is_empty() { String::new() } else { format!("{} ", s.kind) };
                let what = format!("{tc}{} ({})", s.packages.join(" "), short(&s.digest));
                if plain {
                    println!("{prefix} start: {what}");
                } else {
                    bar(&mut bars).set_message(what);
                }
            }
            Some(Event::Log(line)) => {
                if plain {
                    println!("{prefix} | {line}");
                } else {
                    bar(&mut bars).set_message(line);
                }
            }
            Some(Event::CacheHit(l)) => {
                finish(plain, &prefix, bar(&mut bars), format!("cached {}", layer_text(&l)))
            }
            Some(Event::Built(l)) => {
                finish(plain, &prefix, bar(&mut bars), format!("built {}", layer_text(&l)))
            }
            Some(Event::Failed(f)) => {
                if let Some(b) = bars.get(&e.step) {
                    b.abandon_with_message("failed");
                }
                eprintln!("{}\n--- last output of {} ---\n{}", f.message, f.manager, f.output_tail);
                return Ok(ExitCode::from(1));
            }
            Some(Event::Done(d)) => {
                let pulled = match d.pulled {
                    0 => String::new(),
                    n => format!(", {n} pulled from the layer registry"),
                };
                println!(
                    "built {name} in {:.2}s: {} layer(s) cached, {} built{pulled}",
                    d.duration_ms as f64 / 1000.0,
                    d.cache_hits,
                    d.built
                );
                return Ok(ExitCode::SUCCESS);
            }
            None => {}
        }
    }
    bail!("the daemon ended the build stream without a result")
}

fn finish(plain: bool, prefix: &str, bar: ProgressBar, message: String) {
    if plain {
        println!("{prefix} {message}");
    } else {
        bar.finish_with_message(message);
    }
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

fn layer_text(l: &Layer) -> String {
    format!("{} {}", short(&l.digest), format_bytes(l.size_bytes as i64))
}

fn state_name(s: i32) -> &'static str {
    match BuildState::try_from(s).unwrap_or(BuildState::Unspecified) {
        BuildState::NotBuilt => "not-built",
        BuildState::Building => "building",
        BuildState::Ready => "ready",
        BuildState::Failed => "failed",
        BuildState::Unspecified => "unknown",
    }
}

fn all_packages(p: &Packages) -> Vec<String> {
    [("apt", &p.apt), ("cargo", &p.cargo), ("gem", &p.gem), ("go", &p.go), ("npm", &p.npm), ("pip", &p.pip)]
        .iter()
        .flat_map(|(m, l)| l.iter().map(move |s| format!("{m}:{s}")))
        .collect()
}

fn show(e: &Environment) {
    println!("name:     {}", e.name);
    println!("id:       {}", e.id);
    println!("state:    {}", state_name(e.state));
    if !e.description.is_empty() {
        println!("about:    {}", e.description);
    }
    for p in e.packages.as_ref().map(all_packages).unwrap_or_default() {
        println!("package:  {p}");
    }
    for (k, v) in &e.env {
        println!("env:      {k}={v}");
    }
    for l in &e.layers {
        let kind = if l.kind.is_empty() { String::new() } else { format!(" {}", l.kind) };
        println!("layer:    {:<6} {}{kind}", l.manager, layer_text(l));
    }
    if let Some(p) = &e.network {
        print_policy(p);
    }
    if e.allow_privilege_escalation {
        println!("setuid:   allowed (allow_privilege_escalation)");
    }
    if e.warm_sandboxes > 0 {
        println!("warm:     {} sandboxes", e.warm_sandboxes);
    }
    if e.shared {
        println!("shared:   usable by every tenant");
    }
    let mut image_env: Vec<_> = e.image_env.iter().collect();
    image_env.sort();
    for (k, v) in image_env {
        println!("image:    env {k}={v}");
    }
    if !e.working_dir.is_empty() {
        println!("image:    workdir {}", e.working_dir);
    }
    if !e.user.is_empty() {
        println!("image:    user {}", e.user);
    }
    if !e.imported_base.is_empty() {
        println!("imported: {}", e.imported_base);
    }
    if !e.snapshot_of.is_empty() {
        println!("snapshot: of session {}", e.snapshot_of);
    }
    if !e.build_error.is_empty() {
        println!("error:    {}", e.build_error.replace('\n', "\n          "));
    }
}

pub(crate) fn env_json(e: &Environment) -> serde_json::Value {
    let p = e.packages.clone().unwrap_or_default();
    serde_json::json!({
        "id": e.id,
        "name": e.name,
        "description": e.description,
        "state": state_name(e.state),
        "packages": {"apt": p.apt, "cargo": p.cargo, "gem": p.gem, "go": p.go, "npm": p.npm, "pip": p.pip},
        "env": e.env,
        "layers": e.layers.iter().map(|l| serde_json::json!({"digest": l.digest, "manager": l.manager, "kind": l.kind, "size_bytes": l.size_bytes})).collect::<Vec<_>>(),
        "build_error": if e.build_error.is_empty() { None } else { Some(&e.build_error) },
        "imported_base": if e.imported_base.is_empty() { None } else { Some(&e.imported_base) },
        "network": e.network.as_ref().map(policy_json),
        "allow_privilege_escalation": e.allow_privilege_escalation,
        "snapshot_of": if e.snapshot_of.is_empty() { None } else { Some(&e.snapshot_of) },
        "warm_sandboxes": e.warm_sandboxes,
        "shared": e.shared,
        "image_env": e.image_env,
        "working_dir": e.working_dir,
        "user": e.user,
    })
}
