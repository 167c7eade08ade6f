//! `nuvol`: one static binary with verbs, like busybox.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "nuvol", version, about = "nuvol: a community cloud in a box")]
struct Cli {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Print the version.
    Version,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().verb {
        Verb::Version => println!("nuvol {}", env!("CARGO_PKG_VERSION")),
    }
    Ok(())
}
