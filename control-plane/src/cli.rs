//! `kiln-control-plane keys …`: manage API keys from the shell, against the same database
//! the server uses (`DATABASE_URL`, or the SQLite file under `--data-dir`/`KILN_DATA_DIR`).
//!
//! ```text
//! kiln-control-plane keys create --name NAME --scopes jobs:create,jobs:read
//!                                [--account-id ID | --account-name NAME]
//!                                [--rate-write N] [--rate-read N]
//! kiln-control-plane keys list [--account-id ID]
//! kiln-control-plane keys revoke KEY_ID
//! ```
//! Output is JSON; `create` prints the key once (only its hash is stored).

use anyhow::{bail, Context};
use serde_json::json;

use crate::config::Config;
use crate::db::keys::{generate_key, RateLimits};
use crate::db::Db;

const USAGE: &str = "usage: kiln-control-plane keys create --name NAME --scopes S1,S2 [--account-id ID | --account-name NAME] [--rate-write N] [--rate-read N]
       kiln-control-plane keys list [--account-id ID]
       kiln-control-plane keys revoke KEY_ID
(global: --data-dir DIR, or DATABASE_URL)";

/// Run `keys <args>`; returns what to print.
pub async fn keys(args: &[String]) -> anyhow::Result<String> {
    let mut flags = std::collections::HashMap::new();
    let mut positional = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.strip_prefix("--") {
            Some(name) => {
                let v = it
                    .next()
                    .with_context(|| format!("--{name} needs a value\n{USAGE}"))?;
                flags.insert(name.to_string(), v.clone());
            }
            None => positional.push(a.clone()),
        }
    }
    let env = |k: &str| std::env::var(k).ok();
    let mut config_args = Vec::new();
    if let Some(d) = flags.remove("data-dir") {
        config_args = vec!["--data-dir".to_string(), d];
    }
    let config = Config::from_env_and_args(env, &config_args)?;
    let url = config.database_url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            config.data_dir.join("kiln.db").display()
        )
    });
    std::fs::create_dir_all(&config.data_dir).ok();
    let db = Db::connect(&url)
        .await
        .with_context(|| format!("opening {url}"))?;
    let num = |name: &str| -> anyhow::Result<Option<i64>> {
        flags
            .get(name)
            .map(|v| v.parse::<i64>().with_context(|| format!("--{name} {v:?}")))
            .transpose()
    };
    let out = match positional.first().map(String::as_str) {
        Some("create") => {
            let name = flags.get("name").context("--name is required")?;
            let scopes: Vec<String> = flags
                .get("scopes")
                .context("--scopes is required")?
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            crate::api::native::admin::validate_scopes(&scopes).map_err(anyhow::Error::msg)?;
            let account = match flags.get("account-id") {
                Some(id) => db
                    .get_account(id)
                    .await?
                    .with_context(|| format!("no account {id:?}"))?,
                None => {
                    db.create_account(flags.get("account-name").unwrap_or(name), None, None)
                        .await?
                }
            };
            let limits = RateLimits {
                submit: num("rate-write")?,
                read: num("rate-read")?,
            };
            let key = generate_key();
            let id = db
                .insert_key(&account.id, name, &key, &scopes, &limits)
                .await?;
            json!({"id": id, "key": key, "account_id": account.id, "scopes": scopes})
        }
        Some("list") => {
            json!({"keys": db.list_keys(flags.get("account-id").map(String::as_str)).await?})
        }
        Some("revoke") => {
            let id = positional.get(1).context("revoke needs a key id")?;
            if !db.revoke_key(id).await? {
                bail!("no key {id:?}");
            }
            json!({"id": id, "revoked": true})
        }
        _ => bail!("{USAGE}"),
    };
    Ok(serde_json::to_string_pretty(&out)?)
}
