//! The `idem` command: server, client commands, tools.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = idem::cli::Cli::parse();
    match idem::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("idem: error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
