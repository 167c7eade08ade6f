//! `nuvol rescue`: what the rescue shell offers (docs/boot.md, "Rescue
//! shell"). Without a command: the box's state (slot, boot count, agent,
//! factory reset, then the A/B slots and the last update). `slot`
//! commands choose what boots, offline, with the same crash-safe writes
//! the agent's updates use.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::update::Updater;

#[derive(Args, Debug)]
pub struct RescueArgs {
    #[command(subcommand)]
    cmd: Option<RescueCmd>,
    /// The provisioning file (its directory is the boot partition).
    #[arg(long, default_value = "/boot/nuvol.toml")]
    config: PathBuf,
    /// The agent's state directory.
    #[arg(long, default_value = "/data/nuvol")]
    state_dir: PathBuf,
}

#[derive(Subcommand, Debug)]
enum RescueCmd {
    /// Choose the A/B slot that boots.
    Slot {
        #[command(subcommand)]
        cmd: SlotCmd,
    },
}

#[derive(Subcommand, Debug)]
enum SlotCmd {
    /// Boot SLOT from now on, with no try armed: marks an update on
    /// trial there good, or gives up an update in the other slot (the
    /// update policy does not take that version again).
    Default { slot: String },
    /// Boot SLOT once, at the next boot only; the one after boots the
    /// default again.
    Try { slot: String },
    /// Remove an armed one-shot try.
    Disarm,
}

fn slot(s: &str) -> anyhow::Result<char> {
    nuvol_update::slots::parse_slot(&s.to_ascii_uppercase())
        .ok_or_else(|| anyhow::anyhow!("{s:?}: a slot is A or B"))
}

pub fn run(args: RescueArgs) -> anyhow::Result<()> {
    let loaded = nuvol_config::load_or_default(&args.config);
    let u = Updater::new(&loaded.config, &args.config, &args.state_dir, true);
    let Some(cmd) = args.cmd else {
        print!("{}", nuvol_init::rescue_status());
        println!("\n{}", slots_line(&u.status()));
        return Ok(());
    };
    if !u.can_update() {
        anyhow::bail!(
            "this box was not booted from a nuvol slot (no nuvol.slot= on the kernel command line, or no slots under {})",
            args.config.parent().unwrap_or(std::path::Path::new("/boot")).display()
        );
    }
    let RescueCmd::Slot { cmd } = cmd;
    let done = match cmd {
        SlotCmd::Default { slot: s } => u.rescue_default(slot(&s)?),
        SlotCmd::Try { slot: s } => u.rescue_try(Some(slot(&s)?)),
        SlotCmd::Disarm => u.rescue_try(None),
    }
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{done}");
    println!("{}", slots_line(&u.status()));
    Ok(())
}

/// The slots in a few lines, from the updater's status.
fn slots_line(v: &serde_json::Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("unknown").to_string();
    let mut out = format!(
        "A/B slots: running {}, default {}, armed try {}\n",
        s("running_slot"),
        s("default_slot"),
        v["armed_try"].as_str().unwrap_or("none")
    );
    for name in ["A", "B"] {
        out += &format!(
            "  slot {name}: {}\n",
            v["slots"][name]["version"]
                .as_str()
                .unwrap_or("version unknown")
        );
    }
    out += &nuvol_api::update::state_line(v).unwrap_or_else(|| "no update recorded".into());
    out
}
