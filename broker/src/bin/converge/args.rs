//! Arguments shared by the subcommands that work on a server's data.

use std::path::PathBuf;

use anyhow::Context;
use converge_broker::config::Config;

/// Which server's data: its configuration file and/or data dir.
#[derive(clap::Args)]
pub struct ServerArgs {
    /// The server's TOML configuration (for data_dir, [audit], [security] policy_file, sync and
    /// [historian]).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Overrides `data_dir` (default ./converge-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl ServerArgs {
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => {
                Config::load(path).with_context(|| format!("configuration {}", path.display()))?
            }
            None => Config::default(),
        };
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        Ok(config)
    }
}
