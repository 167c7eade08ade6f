//! `nuvol ctl`: drive a box's API from a shell.
//!
//! Credentials: `--token`, else `NUVOL_TOKEN`, else the first line of
//! `--token-file` (default `$HOME/.config/nuvol/token`). HTTPS boxes are
//! trusted by their certificate's SHA-256 fingerprint (`--fingerprint` or
//! `NUVOL_FINGERPRINT`; the box prints it on the console).
//!
//! Exit codes: 0 ok, 1 the box answered with an error, 2 usage, 3 cannot
//! connect or not authorised.
//!
//! One file per verb group: [`bundles`], [`keys`], [`community`] (members
//! and services), [`system`] (status, local services, logs, reboot, reset,
//! update),
//! [`settings`]; [`client`] talks to the box, [`output`] prints tables.

mod bundles;
mod client;
mod community;
mod keys;
mod output;
mod settings;
mod system;

use std::path::PathBuf;

use clap::{Args, Subcommand};

use client::Client;

#[derive(Args, Debug)]
pub struct CtlArgs {
    /// The box: http://HOST[:PORT] or https://HOST[:PORT] (else NUVOL_HOST,
    /// else http://127.0.0.1).
    #[arg(long)]
    host: Option<String>,
    /// API token or key (else NUVOL_TOKEN, else --token-file).
    #[arg(long)]
    token: Option<String>,
    /// File holding the token (first line).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// SHA-256 fingerprint of the box's HTTPS certificate (else
    /// NUVOL_FINGERPRINT).
    #[arg(long)]
    fingerprint: Option<String>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: CtlCmd,
}

#[derive(Subcommand, Debug)]
enum CtlCmd {
    /// Health of the box: version, uptime, memory, disks.
    Status,
    /// Members of the community (role, zone, state, RTT).
    Members {
        /// Grouped by zone, super nodes first and marked, with overlay
        /// addresses.
        #[arg(long)]
        by_zone: bool,
    },
    /// Services announced in the community, nearest first.
    Services {
        /// Only this service type.
        #[arg(long = "type")]
        kind: Option<String>,
        /// Only services near this box.
        #[arg(long)]
        near: bool,
        /// Only this zone.
        #[arg(long)]
        zone: Option<String>,
    },
    /// Services running on this box.
    LocalServices,
    /// Signed bundles: list, install, remove.
    #[command(subcommand)]
    Bundles(bundles::BundlesCmd),
    /// Publisher keys the box trusts for bundles: list, add, remove, revoke.
    #[command(subcommand)]
    Keys(keys::KeysCmd),
    /// Logs of a service on this box.
    Logs {
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
        /// Lines of history first.
        #[arg(long, default_value_t = 100)]
        lines: u32,
        name: String,
    },
    /// Reboot the box.
    Reboot,
    /// Factory reset: erase the box's keys, bundles, tokens, node identity,
    /// TLS key and service data. The box reboots, wipes its data partition
    /// and provisions itself from nuvol.toml as on its first boot (a new
    /// admin token on its console). Asks first unless --yes.
    Reset {
        /// Reset without asking.
        #[arg(short, long)]
        yes: bool,
    },
    /// The box's OS slots and update state; with FILE, upload a signed
    /// `.nvu` update: written to the inactive slot, tried once at the next
    /// reboot, made the default once it runs healthy. `--offers` lists the
    /// updates other boxes offer, `--from NODE` fetches and applies one,
    /// `--url URL` downloads one from an http:// URL.
    Update {
        /// The update artefact (`nuvol-x86_64-VERSION.nvu`).
        #[arg(conflicts_with_all = ["from", "offers", "url"])]
        file: Option<std::path::PathBuf>,
        /// Fetch the update NODE offers (checked here like an upload).
        #[arg(long, value_name = "NODE", conflicts_with_all = ["offers", "url"])]
        from: Option<String>,
        /// The box downloads the artefact at this http:// URL (its signed
        /// head is checked before the rest is fetched).
        #[arg(long, value_name = "URL", conflicts_with = "offers")]
        url: Option<String>,
        /// List the updates the community's boxes offer.
        #[arg(long)]
        offers: bool,
        /// Accept a version not newer than the running one.
        #[arg(long)]
        allow_downgrade: bool,
    },
    /// Hash a password (read from stdin) for `[admin] password_hash`.
    HashPassword,
    /// The box's settings (value and source); `settings set KEY=VALUE…`
    /// changes them.
    Settings {
        #[command(subcommand)]
        cmd: Option<settings::SettingsCmd>,
    },
}

/// Exit codes.
const BOX_ERROR: i32 = 1;
const CANNOT: i32 = 3;

struct Fail(i32, String);

pub fn run(args: CtlArgs) -> anyhow::Result<()> {
    if let CtlCmd::HashPassword = args.cmd {
        let mut pw = String::new();
        std::io::stdin().read_line(&mut pw)?;
        let pw = pw.trim_end_matches(['\r', '\n']);
        if pw.is_empty() {
            eprintln!("nuvol ctl: give the password on stdin");
            std::process::exit(2);
        }
        match nuvol_api::auth::argon2_hash(pw) {
            Ok(h) => println!("{h}"),
            Err(e) => anyhow::bail!("hashing: {e}"),
        }
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match rt.block_on(main(args)) {
        Ok(()) => Ok(()),
        Err(Fail(code, msg)) => {
            eprintln!("nuvol ctl: {msg}");
            std::process::exit(code)
        }
    }
}

async fn main(args: CtlArgs) -> Result<(), Fail> {
    let c = Client::new(&args)?;
    let json = args.json;
    match args.cmd {
        CtlCmd::Status => system::status(&c, json).await,
        CtlCmd::Members { by_zone } => community::members(&c, json, by_zone).await,
        CtlCmd::Services { kind, near, zone } => {
            community::services(&c, json, kind, near, zone).await
        }
        CtlCmd::LocalServices => system::local_services(&c, json).await,
        CtlCmd::Bundles(cmd) => bundles::run(&c, json, cmd).await,
        CtlCmd::Keys(cmd) => keys::run(&c, json, cmd).await,
        CtlCmd::Logs {
            follow,
            lines,
            name,
        } => system::logs(&c, follow, lines, name).await,
        CtlCmd::Reboot => system::reboot(&c, json).await,
        CtlCmd::Reset { yes } => system::reset(&c, json, yes).await,
        CtlCmd::Update {
            file,
            from,
            url,
            offers,
            allow_downgrade,
        } => {
            if offers {
                system::update_offers(&c, json).await
            } else if let Some(node) = from {
                let req = serde_json::json!({ "node": node });
                system::update_fetch(&c, json, req, allow_downgrade).await
            } else if let Some(url) = url {
                let req = serde_json::json!({ "url": url });
                system::update_fetch(&c, json, req, allow_downgrade).await
            } else {
                system::update(&c, json, file.as_deref(), allow_downgrade).await
            }
        }
        CtlCmd::HashPassword => Ok(()),
        CtlCmd::Settings { cmd } => settings::run(&c, json, cmd).await,
    }
}
