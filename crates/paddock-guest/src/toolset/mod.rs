//! The agent toolset (`agent_toolset_20260401`): bash, read, write, edit, glob
//! and grep, with the semantics, limits and texts of the reference
//! implementation in the `anthropic` Python package
//! (`anthropic/lib/tools/agent_toolset.py`). The reference confines paths to a
//! workdir; here the boundary is the sandbox, so paths are absolute in the
//! sandbox or relative to the session's working directory.

pub mod bash;
mod files;
mod paths;
mod search;

use std::path::PathBuf;

use paddock_proto::v1::content_block::Block;
use paddock_proto::v1::{ContentBlock, ToolResult};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;
use tonic::Status;

use crate::reaper::Reaper;

/// A tool's result blocks, or the text of a tool error (shown with is_error).
pub type Outcome = Result<Vec<Block>, String>;

fn text(s: String) -> Vec<Block> {
    vec![Block::Text(s)]
}

pub struct Toolset {
    reaper: Reaper,
    workdir: PathBuf,
    env: Vec<(String, String)>,
    /// One shell per session; calls to it are serialized, as they must be.
    bash: Mutex<bash::BashTool>,
}

impl Toolset {
    pub fn new(reaper: Reaper, workdir: PathBuf, env: Vec<(String, String)>) -> Self {
        Self { reaper, workdir, env, bash: Mutex::new(bash::BashTool::default()) }
    }

    pub async fn run(&self, name: &str, input_json: &str) -> Result<ToolResult, Status> {
        let outcome = match name {
            "bash" => {
                let input = parse(input_json)?;
                self.bash.lock().await.call(&self.reaper, &self.workdir, &self.env, input).await
            }
            "read" => {
                let (workdir, input) = (self.workdir.clone(), parse(input_json)?);
                blocking(move || files::read(&workdir, input)).await
            }
            "write" => {
                let (workdir, input) = (self.workdir.clone(), parse(input_json)?);
                blocking(move || files::write(&workdir, input)).await
            }
            "edit" => {
                let (workdir, input) = (self.workdir.clone(), parse(input_json)?);
                blocking(move || files::edit(&workdir, input)).await
            }
            "glob" => {
                let (workdir, input) = (self.workdir.clone(), parse(input_json)?);
                blocking(move || search::glob(&workdir, input)).await
            }
            "grep" => search::grep(&self.reaper, &self.workdir, &self.env, parse(input_json)?).await,
            other => {
                return Err(Status::invalid_argument(format!(
                    "name: unknown tool {other:?}; the tools are bash, read, write, edit, glob and grep"
                )))
            }
        };
        Ok(match outcome {
            Ok(blocks) => ToolResult {
                content: blocks.into_iter().map(|b| ContentBlock { block: Some(b) }).collect(),
                is_error: false,
            },
            Err(message) => ToolResult {
                content: vec![ContentBlock { block: Some(Block::Text(message)) }],
                is_error: true,
            },
        })
    }
}

fn parse<T: DeserializeOwned>(input_json: &str) -> Result<T, Status> {
    let json = if input_json.trim().is_empty() { "{}" } else { input_json };
    serde_json::from_str(json).map_err(|e| Status::invalid_argument(format!("input_json: {e}")))
}

/// File tools block on the file system; they run off the async workers.
async fn blocking(f: impl FnOnce() -> Outcome + Send + 'static) -> Outcome {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(format!("tool failed: {e}")))
}
