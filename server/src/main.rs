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
        Command::CheckConfig { models } => {
            let catalog = inferd::config::load_catalog(&models)?;
            for m in &catalog.models {
                println!(
                    "{}: {:?} (dequantize = {}) {:?}",
                    m.id, m.source, m.dequantize, m.limits
                );
            }
            println!("{}: ok ({} models)", models.display(), catalog.models.len());
            Ok(())
        }
    }
}
