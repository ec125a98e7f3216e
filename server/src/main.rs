//! The `inferd` binary: parse the CLI, start telemetry, hand over to the library.

use clap::Parser;
use inferd::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            inferd::telemetry::init(args.log_format);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("inferd-http")
                .build()?;
            rt.block_on(inferd::serve::serve(args))
        }
        Command::Gateway(args) => {
            inferd::telemetry::init(args.log_format);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("inferd-gateway")
                .build()?;
            rt.block_on(inferd::gateway::gateway(args))
        }
        Command::CheckConfig { models } => {
            let catalog = inferd::config::load_catalog(&models)?;
            print!("{catalog}");
            println!("{}: ok ({} models)", models.display(), catalog.models.len());
            Ok(())
        }
    }
}
