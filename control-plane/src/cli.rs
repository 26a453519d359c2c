//! The command line: `kiln-control-plane [serve]` runs the server; `kiln-control-plane keys …`
//! manages API keys from the shell against the same database the server uses (`DATABASE_URL`,
//! or the SQLite file under `--data-dir`/`KILN_DATA_DIR`).
//!
//! ```text
//! kiln-control-plane keys create --name NAME --scopes jobs:create,jobs:read
//!                                [--account-id ID | --account-name NAME]
//!                                [--rate-write N] [--rate-read N] [--key EXISTING_KEY]
//! kiln-control-plane keys list [--account-id ID]
//! kiln-control-plane keys revoke KEY_ID
//! ```
//! Output is JSON; `create` prints the key once (only its hash is stored).

use anyhow::{bail, Context};
use serde_json::json;

use crate::config::Config;
use crate::db::keys::{generate_key, RateLimits};
use crate::db::Db;

/// `kiln-control-plane`: Kiln's API server and its admin commands.
#[derive(Debug, clap::Parser)]
#[command(name = "kiln-control-plane", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do (default: serve).
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the API server (the embedded default, or a fleet's control plane).
    Serve,
    /// Manage API keys in the server's database.
    #[command(subcommand)]
    Keys(Keys),
}

/// `keys …`.
#[derive(Debug, clap::Subcommand)]
pub enum Keys {
    /// Create a key (printed once) for an existing account or a new one.
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated: jobs:create, jobs:read, jobs:cancel, usage:read,
        /// credentials:manage, webhooks:manage, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        #[arg(long, conflicts_with = "account_name")]
        account_id: Option<String>,
        /// The new account's name (default: the key's name).
        #[arg(long)]
        account_name: Option<String>,
        /// Writes per minute for this key.
        #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
        rate_write: Option<i64>,
        /// Reads per minute for this key.
        #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
        rate_read: Option<i64>,
        /// Import an existing key string (a client moving from another service keeps its
        /// key) instead of generating one.
        #[arg(long, hide_env_values = true)]
        key: Option<String>,
    },
    /// List keys (never the keys themselves).
    List {
        #[arg(long)]
        account_id: Option<String>,
    },
    /// Revoke a key; it is refused from then on.
    Revoke { key_id: String },
}

/// Run a `keys` command against `config`'s database; returns what to print.
pub async fn keys(config: &Config, cmd: Keys) -> anyhow::Result<String> {
    let url = config.database_url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            config.data_dir.join("kiln.db").display()
        )
    });
    std::fs::create_dir_all(&config.data_dir).ok();
    let db = Db::connect_with(&url, config.secrets_key.as_deref())
        .await
        .with_context(|| format!("opening {url}"))?;
    let out = match cmd {
        Keys::Create {
            name,
            scopes,
            account_id,
            account_name,
            rate_write,
            rate_read,
            key,
        } => {
            let scopes: Vec<String> = scopes
                .into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            crate::api::native::admin::validate_scopes(&scopes).map_err(anyhow::Error::msg)?;
            let key = match key {
                Some(k) => {
                    crate::db::keys::validate_imported_key(&k).map_err(anyhow::Error::msg)?;
                    k
                }
                None => generate_key(),
            };
            let account = match account_id {
                Some(id) => db
                    .get_account(&id)
                    .await?
                    .with_context(|| format!("no account {id:?}"))?,
                None => {
                    db.create_account(account_name.as_deref().unwrap_or(&name), None, None)
                        .await?
                }
            };
            let limits = RateLimits {
                submit: rate_write,
                read: rate_read,
            };
            let id = db
                .insert_key(&account.id, &name, &key, &scopes, &limits)
                .await?;
            json!({"id": id, "key": key, "account_id": account.id, "scopes": scopes})
        }
        Keys::List { account_id } => {
            json!({"keys": db.list_keys(account_id.as_deref()).await?})
        }
        Keys::Revoke { key_id } => {
            match db.revoke_key(&key_id).await? {
                crate::db::keys::Revoked::Done => {}
                crate::db::keys::Revoked::NoSuchKey => bail!("no key {key_id:?}"),
                crate::db::keys::Revoked::LastAdmin => {
                    bail!("{key_id:?} is the last admin key: create another admin key first")
                }
            }
            json!({"id": key_id, "revoked": true})
        }
    };
    Ok(serde_json::to_string_pretty(&out)?)
}
