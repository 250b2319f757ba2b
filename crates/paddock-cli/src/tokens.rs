//! `paddock token`: API tokens for callers other than root on the unix socket.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use paddock_proto::v1::tokens_client::TokensClient;
use paddock_proto::v1::{CreateTokenRequest, DeleteTokenRequest, ListTokensRequest};

use crate::connect::{self, Daemon};
use crate::status;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token and print it (shown this once; only its hash is kept).
    Create {
        name: String,
        /// The tenant it acts for: it sees and makes only that tenant's
        /// sessions and environments. Without: an admin token.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List tokens (names and tenants, never the secrets).
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove tokens; calls with them fail from then on.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

pub async fn run(daemon: &Daemon, cmd: TokenCommand) -> Result<ExitCode> {
    let mut tokens = TokensClient::new(connect::channel(daemon).await?);
    match cmd {
        TokenCommand::Create { name, tenant, json } => {
            let req = CreateTokenRequest { name, tenant: tenant.unwrap_or_default() };
            let r = tokens.create_token(req).await.map_err(status)?.into_inner();
            if json {
                let info = r.info.unwrap_or_default();
                let v = serde_json::json!({"name": info.name, "tenant": info.tenant, "token": r.token});
                println!("{v}");
            } else {
                println!("{}", r.token);
            }
        }
        TokenCommand::Ls { json } => {
            let list = tokens.list_tokens(ListTokensRequest {}).await.map_err(status)?.into_inner().tokens;
            if json {
                let v: Vec<_> = list
                    .iter()
                    .map(|t| serde_json::json!({"name": t.name, "tenant": t.tenant, "created_at_ms": t.created_at_ms}))
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                println!("{:<24} {:<24}", "NAME", "TENANT");
                for t in list {
                    let tenant = if t.tenant.is_empty() { "(admin)".to_string() } else { t.tenant };
                    println!("{:<24} {:<24}", t.name, tenant);
                }
            }
        }
        TokenCommand::Rm { names } => {
            for name in names {
                tokens.delete_token(DeleteTokenRequest { name }).await.map_err(status)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
