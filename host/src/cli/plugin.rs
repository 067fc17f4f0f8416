//! `mtcd plugin …`: the plugin author's commands. They need no cluster.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::Exit;

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Run a transform plugin on objects from a YAML file, offline, and print the diff.
    Test(PluginTestArgs),
    /// Create a new plugin crate from the template.
    New(PluginNewArgs),
}

#[derive(Debug, Args)]
pub struct PluginTestArgs {
    /// The plugin component (`.wasm`, built for wasm32-wasip2).
    pub plugin: PathBuf,
    /// Objects to feed it: a multi-document YAML file.
    pub objects: PathBuf,
    /// Plugin configuration entries, `key=value` (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PluginNewArgs {
    /// Crate name of the new plugin.
    pub name: String,
    /// Folder to create it in.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

/// Runs one `mtcd plugin` subcommand.
pub fn run(command: PluginCommand) -> anyhow::Result<Exit> {
    match command {
        PluginCommand::Test(a) => {
            use std::io::IsTerminal;
            let config = crate::plugins::config_from_pairs(&a.config)?;
            let out = crate::plugins::test_plugin(&a.plugin, &a.objects, config, std::io::stdout().is_terminal())?;
            print!("{out}");
            Ok(Exit::Success)
        }
        PluginCommand::New(a) => {
            let path = crate::plugins::scaffold(&a.name, &a.dir)?;
            println!(
                "Created {}. Build it with: cargo build --release --target wasm32-wasip2 --manifest-path {}/Cargo.toml",
                path.display(),
                path.display()
            );
            Ok(Exit::Success)
        }
    }
}
