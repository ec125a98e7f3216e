//! Command line: `inferd serve` and `inferd check-config`. Every option can
//! also be set through the `INFERD_*` environment variable named in its help.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::DeviceSpec;
pub use crate::telemetry::LogFormat;

/// inferd: a self-hosted, OpenAI-compatible model server.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "inferd", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Load the models of models.toml and serve the OpenAI API.
    Serve(ServeArgs),
    /// Serve the OpenAI API by routing each model to its [[model.backend]] list: ready
    /// `inferd serve` replicas first, holding or falling back to AWS Bedrock when none is.
    Gateway(ServeArgs),
    /// Validate a models.toml and print the resolved catalog (no download).
    CheckConfig {
        /// The model catalog.
        #[arg(long, env = "INFERD_MODELS", default_value = "models.toml")]
        models: PathBuf,
    },
}

/// Options of `inferd serve` and `inferd gateway`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The model catalog.
    #[arg(long, env = "INFERD_MODELS", default_value = "models.toml")]
    pub models: PathBuf,
    /// Address to listen on (IPv4, IPv6 or a host name).
    #[arg(long, env = "INFERD_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; 0 picks a free one (logged at start-up).
    #[arg(long, env = "INFERD_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Largest accepted request body, in bytes (larger: 413).
    #[arg(long, env = "INFERD_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Log line format.
    #[arg(long, env = "INFERD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// On SIGTERM, how long in-flight requests may take to finish.
    #[arg(long, env = "INFERD_DRAIN_TIMEOUT_SECS", default_value_t = 30)]
    pub drain_timeout_secs: u64,
    /// `inferd serve`: run every model on this device ("auto", "cpu", "cuda" or "cuda:N"),
    /// overriding each model's `device` key in models.toml.
    #[arg(long, env = "INFERD_DEVICE", value_parser = parse_device)]
    pub device: Option<DeviceSpec>,
}

fn parse_device(s: &str) -> Result<DeviceSpec, String> {
    s.parse()
}

impl ServeArgs {
    /// `host:port` for binding, with brackets around an IPv6 host
    /// (`[::]:8080`).
    pub fn bind_addr(&self) -> String {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        if host.contains(':') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// [`Self::drain_timeout_secs`] as a duration.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use std::path::Path;

    fn serve(args: &[&str]) -> ServeArgs {
        let argv = ["inferd", "serve"].iter().chain(args).copied();
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(s) => s,
            other => panic!("expected serve, got {other:?}"),
        }
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_parse() {
        let s = serve(&[
            "--models",
            "/etc/inferd/models.toml",
            "--host",
            "::",
            "--port",
            "0",
            "--max-body-bytes",
            "1024",
            "--log-format",
            "json",
            "--drain-timeout-secs",
            "5",
            "--device",
            "cuda:1",
        ]);
        assert_eq!(s.models, PathBuf::from("/etc/inferd/models.toml"));
        assert_eq!(s.bind_addr(), "[::]:0");
        assert_eq!(s.max_body_bytes, 1024);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.drain_timeout(), Duration::from_secs(5));
        assert_eq!(s.device, Some(DeviceSpec::Cuda(Some(1))));
        let err = Cli::try_parse_from(["inferd", "serve", "--device", "gpu"]).unwrap_err();
        assert!(err.to_string().contains("\"cuda:N\""), "{err}");
        assert!(Cli::try_parse_from(["inferd", "serve", "--log-format", "xml"]).is_err());
        assert!(Cli::try_parse_from(["inferd", "serve", "--port", "70000"]).is_err());
    }

    #[test]
    fn check_config_parses() {
        let cli = Cli::try_parse_from(["inferd", "check-config", "--models", "x.toml"]).unwrap();
        assert!(
            matches!(cli.command, Command::CheckConfig { models } if models == Path::new("x.toml"))
        );
    }

    #[test]
    fn help_names_env_vars() {
        let help = Cli::command()
            .find_subcommand_mut("serve")
            .unwrap()
            .render_long_help()
            .to_string();
        for var in [
            "INFERD_MODELS",
            "INFERD_PORT",
            "INFERD_LOG_FORMAT",
            "INFERD_DRAIN_TIMEOUT_SECS",
            "INFERD_DEVICE",
        ] {
            assert!(help.contains(var), "{var} missing from:\n{help}");
        }
    }
}
