//! `kmip2pkcs11 --config FILE [--check]`: the KMIP-to-PKCS#11 relay.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// KMIP 1.0-1.2 (TTLV over TLS) to PKCS#11 relay.
#[derive(Parser)]
#[command(name = "kmip2pkcs11", version)]
struct Cli {
    /// The TOML configuration file.
    #[arg(long)]
    config: PathBuf,
    /// Validate the configuration (files, PIN source, TLS material) and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match kmip_relay::Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kmip2pkcs11: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log_level.clone());
    // cryptoki logs an ERROR for every vendor or newer mechanism type it has no name
    // for while converting C_GetMechanismList (SoftHSMv2 has several): not an error of
    // the relay, and it hides real ones, so that target is silenced.
    let filter = format!("{filter},cryptoki::mechanism=off");
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: log files and harness captures stay plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if cli.check {
        return match check(&config) {
            Ok(()) => {
                println!("{}: configuration OK", cli.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kmip2pkcs11: {}: {e}", cli.config.display());
                ExitCode::from(2)
            }
        };
    }
    match kmip_relay::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("kmip2pkcs11: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Everything that can be checked without opening the token.
fn check(config: &kmip_relay::Config) -> Result<(), String> {
    if !config.pkcs11.lib_path.exists() {
        return Err(format!(
            "PKCS#11 module {} does not exist",
            config.pkcs11.lib_path.display()
        ));
    }
    if let Some(pin) = &config.pkcs11.user_pin {
        pin.resolve().map_err(|e| e.to_string())?;
    }
    kmip_relay::tls::server_config(&config.tls).map(|_| ())
}
