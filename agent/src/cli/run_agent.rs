//! `rhizome agent`: run the agent in the foreground.

use crate::app::{Agent, shutdown_signal};
use crate::config::AgentConfig;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `rhizome agent`.
#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// Directory of HCL configuration files (*.hcl, merged in name order).
    #[arg(long, value_name = "DIR", required_unless_present = "dev")]
    pub config_dir: Option<PathBuf>,
    /// Development mode: a one-node mesh on 127.0.0.1 with data in a temporary directory,
    /// an in-memory CA, unsigned intentions accepted and default intention policy "allow".
    #[arg(long, conflicts_with = "config_dir")]
    pub dev: bool,
    /// Node name in --dev mode (default: "dev").
    #[arg(long, value_name = "NAME", requires = "dev")]
    pub node: Option<String>,
    /// Check the configuration, print the effective settings as JSON, and exit.
    #[arg(long, requires = "config_dir")]
    pub validate: bool,
}

pub fn run(args: AgentArgs, log_level: Option<&str>, log_json: bool) -> anyhow::Result<ExitCode> {
    let mut _dev_dir = None;
    let config = if args.dev {
        let dir = tempfile::Builder::new().prefix("rhizome-dev-").tempdir()?;
        let node = args.node.clone().unwrap_or_else(|| "dev".to_string());
        let config = AgentConfig::dev(&node, dir.path().to_path_buf());
        _dev_dir = Some(dir);
        config
    } else {
        let dir = args
            .config_dir
            .clone()
            .ok_or_else(|| anyhow::anyhow!("--config-dir is required"))?;
        match AgentConfig::load_dir(&dir) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: invalid configuration: {e}");
                return Ok(ExitCode::from(1));
            }
        }
    };
    if args.validate {
        outln!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(ExitCode::SUCCESS);
    }
    crate::logging::init(log_level.or(config.log_level.as_deref()), log_json)?;
    if config.dev {
        tracing::warn!(
            data_dir = %config.data_dir.display(),
            "dev mode: data is temporary, default intention policy is allow; do not use in production"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let agent = Agent::start(config).await?;
        agent.run_until(shutdown_signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}
