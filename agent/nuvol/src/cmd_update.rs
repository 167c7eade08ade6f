//! `nuvol update`: make, sign and check OS update artefacts (`.nvu`) off
//! the box, in the style of `nuvol bundle`. The box checks the same things
//! again before it writes a slot (docs/boot.md, "Update").

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use nuvol_bundle::keys::PublicKey;
use nuvol_update::artefact::{self, Policy, Version};

#[derive(Args)]
pub struct UpdateArgs {
    #[command(subcommand)]
    cmd: UpdateCmd,
}

#[derive(Subcommand)]
enum UpdateCmd {
    /// Build and sign an update artefact from a kernel and an initramfs.
    Build {
        /// The kernel (slot file bzImage).
        #[arg(long)]
        kernel: PathBuf,
        /// The initramfs (slot file initrd.img).
        #[arg(long)]
        initrd: PathBuf,
        /// The OS version it carries.
        #[arg(long)]
        version: String,
        /// The oldest running version it may upgrade.
        #[arg(long, default_value = "0")]
        min_version: String,
        /// The architecture it runs on.
        #[arg(long, default_value = nuvol_update::ARCH)]
        arch: String,
        /// The OS publisher's secret key (signify/minisign/nuvol format).
        #[arg(short, long)]
        key: PathBuf,
        /// Where to write it, e.g. nuvol-x86_64-0.2.0.nvu.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Verify an artefact: signature against the given keys, then
    /// manifest, sizes and hashes; prints the manifest.
    Verify {
        artefact: PathBuf,
        /// Trusted OS publisher public key file; repeatable.
        #[arg(short, long, required = true)]
        pubkey: Vec<PathBuf>,
        /// The architecture of the box it is meant for.
        #[arg(long, default_value = nuvol_update::ARCH)]
        arch: String,
        /// The version the box runs (the artefact must be newer).
        #[arg(long, default_value = "0")]
        running: String,
    },
}

fn read_part(p: &Path) -> anyhow::Result<Vec<u8>> {
    let len = std::fs::metadata(p)
        .with_context(|| format!("{}", p.display()))?
        .len();
    if len > artefact::MAX_PART {
        bail!(
            "{}: {len} bytes; a part is at most {}",
            p.display(),
            artefact::MAX_PART
        );
    }
    std::fs::read(p).with_context(|| format!("{}", p.display()))
}

pub fn run(args: UpdateArgs) -> anyhow::Result<()> {
    match args.cmd {
        UpdateCmd::Build {
            kernel,
            initrd,
            version,
            min_version,
            arch,
            key,
            output,
        } => {
            let key = crate::cmd_bundle::load_secret(&key)?;
            let bytes = artefact::build(
                &read_part(&kernel)?,
                &read_part(&initrd)?,
                &version,
                &min_version,
                &arch,
                Some(&key),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            nuvol_durable::write_atomic(&output, &bytes, nuvol_durable::Mode::Public)
                .with_context(|| format!("{}", output.display()))?;
            println!(
                "{}: update {version} for {arch}, {} bytes, signed by key {}",
                output.display(),
                bytes.len(),
                key.key_id
            );
            Ok(())
        }
        UpdateCmd::Verify {
            artefact: path,
            pubkey,
            arch,
            running,
        } => {
            let mut keys = Vec::new();
            for p in &pubkey {
                keys.push(
                    PublicKey::from_text(&crate::cmd_bundle::read_key_text(p)?)
                        .with_context(|| format!("{}", p.display()))?,
                );
            }
            let policy = Policy {
                arch,
                running: Version::parse(&running).map_err(|e| anyhow::anyhow!("--running: {e}"))?,
                allow_downgrade: false,
            };
            match artefact::verify_file(&path, &keys, &policy) {
                Ok(v) => {
                    print!("{}", v.manifest.to_text());
                    println!("signed by key {}: OK", v.key_id);
                    Ok(())
                }
                Err(e) => bail!("{}: {} ({})", path.display(), e, e.code()),
            }
        }
    }
}
