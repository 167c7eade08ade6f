//! `nuvol`: one static binary with verbs, like busybox.

mod agent;
mod announce;
mod api_setup;
mod bundles;
mod cluster;
mod cmd_bundle;
mod cmd_rescue;
mod cmd_update;
mod ctl;
mod discovery;
mod fetch;
mod heartbeat;
mod logging;
mod mdns_share;
mod net;
mod overlay;
mod peers;
mod services;
mod settings;
mod smbios;
mod update;
mod update_policy;
mod update_stick;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "nuvol", version, about = "nuvol: a community cloud in a box")]
struct Cli {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Run as PID 1 of a nuvol box (mounts, agent supervision, poweroff).
    Init,
    /// Run the agent: network, services, discovery, panel and API.
    Agent(agent::AgentArgs),
    /// Make, sign, verify and inspect signed service bundles.
    Bundle(cmd_bundle::BundleArgs),
    /// Build, sign and verify signed OS update artefacts (.nvu).
    Update(cmd_update::UpdateArgs),
    /// Drive a box's API: status, members, services, bundles, keys, logs, reboot, factory reset.
    Ctl(ctl::CtlArgs),
    /// On the box (rescue shell): slot, boot count, agent, factory reset, the offline commands; `rescue slot` chooses the A/B slot that boots.
    Rescue(cmd_rescue::RescueArgs),
    /// Print the version.
    Version,
}

fn main() -> anyhow::Result<()> {
    // The kernel starts PID 1 as /init with no arguments: that is `nuvol init`.
    if std::process::id() == 1 {
        run_init();
    }
    match Cli::parse().verb {
        Verb::Init => run_init(),
        Verb::Agent(args) => agent::run(args),
        Verb::Bundle(args) => cmd_bundle::run(args),
        Verb::Update(args) => cmd_update::run(args),
        Verb::Ctl(args) => ctl::run(args),
        Verb::Rescue(args) => cmd_rescue::run(args),
        Verb::Version => {
            println!("nuvol {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}

fn run_init() -> ! {
    if std::process::id() != 1 {
        eprintln!(
            "nuvol init: must run as PID 1 (it mounts filesystems and powers the machine off)"
        );
        std::process::exit(2);
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| "/init".into());
    nuvol_init::run(&exe)
}
