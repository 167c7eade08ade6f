//! `nuvol bundle keygen | build | sign | verify | inspect`: make and check
//! signed service bundles on any Linux workstation.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use nuvol_bundle::build::{build_for, set_signature, sign_file};
use nuvol_bundle::format::hex;
use nuvol_bundle::keys::{PublicKey, SecretKey, SignatureBlock, MAX_KEY_FILE_BYTES};
use nuvol_bundle::verify::{read_head, verify_file, KeyLookup};
use nuvol_bundle::{ImageType, Keyring, Manifest};

#[derive(Args)]
pub struct BundleArgs {
    #[command(subcommand)]
    cmd: BundleCmd,
}

#[derive(Subcommand)]
enum BundleCmd {
    /// Make a signing key pair: PREFIX.pub and PREFIX.sec (signify format, unencrypted).
    Keygen {
        /// Path prefix of the two files.
        #[arg(short, long)]
        out: PathBuf,
        /// Comment written into the key files.
        #[arg(short, long, default_value = "nuvol bundle key")]
        comment: String,
        /// Overwrite existing files.
        #[arg(short, long)]
        force: bool,
    },
    /// Build a bundle from a manifest and a root filesystem directory.
    Build {
        #[arg(short, long)]
        manifest: PathBuf,
        #[arg(short, long)]
        rootfs: PathBuf,
        #[arg(short, long)]
        out: PathBuf,
        #[arg(short = 't', long, value_enum, default_value = "squashfs")]
        image_type: FsArg,
        /// The CPU architecture the rootfs's programs are built for
        /// (x86_64, aarch64, arm), written into the signed manifest: a box
        /// of another architecture refuses the bundle. Default: the
        /// manifest's own `arch`, if any.
        #[arg(long)]
        arch: Option<String>,
        /// Sign with this secret key (signify `-n` or minisign `-W` format).
        #[arg(short, long)]
        key: Option<PathBuf>,
    },
    /// Sign a bundle with a secret key, or attach a signature made elsewhere
    /// (signify -S / minisign -S over the file `inspect --export-message` writes).
    Sign {
        bundle: PathBuf,
        #[arg(
            short,
            long,
            conflicts_with = "signature",
            required_unless_present = "signature"
        )]
        key: Option<PathBuf>,
        /// Detached signify (.sig) or minisign (.minisig) file to attach.
        #[arg(short, long)]
        signature: Option<PathBuf>,
        /// Also write a detached signify signature of the signed part here.
        #[arg(long, requires = "key")]
        detached: Option<PathBuf>,
        /// Also write a minisign signature (prehashed, with trusted comment) here.
        #[arg(long, requires = "key")]
        minisig: Option<PathBuf>,
    },
    /// Verify a bundle: signature against trusted keys, then image digest, then manifest.
    Verify {
        bundle: PathBuf,
        /// Trusted public key file (signify/minisign format); repeatable.
        #[arg(short, long)]
        pubkey: Vec<PathBuf>,
        /// A box's keyring.json (honours its revocation list).
        #[arg(long)]
        keyring: Option<PathBuf>,
    },
    /// Show a bundle's header, signature and manifest (without trusting it).
    Inspect {
        bundle: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Write the signed part (header + manifest) to this file, for
        /// signing or verifying with signify/minisign.
        #[arg(long)]
        export_message: Option<PathBuf>,
        /// Write the embedded signature as a signify .sig file.
        #[arg(long)]
        export_signature: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum FsArg {
    Squashfs,
    Erofs,
}

pub(crate) fn read_key_text(path: &Path) -> anyhow::Result<String> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("{}", path.display()))?
        .len();
    if len > MAX_KEY_FILE_BYTES as u64 {
        bail!(
            "{}: {len} bytes is too large for a key file",
            path.display()
        );
    }
    std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))
}

pub(crate) fn load_secret(path: &Path) -> anyhow::Result<SecretKey> {
    SecretKey::from_text(&read_key_text(path)?).with_context(|| format!("{}", path.display()))
}

fn write_new(path: &Path, text: &str, mode: u32, force: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).mode(mode);
    if force {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    let mut f = o
        .open(path)
        .with_context(|| format!("{} (use --force to overwrite)", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

pub fn run(args: BundleArgs) -> anyhow::Result<()> {
    match args.cmd {
        BundleCmd::Keygen {
            out,
            comment,
            force,
        } => {
            let sk = SecretKey::generate()?;
            let pubp = PathBuf::from(format!("{}.pub", out.display()));
            let secp = PathBuf::from(format!("{}.sec", out.display()));
            write_new(
                &secp,
                &sk.to_text(&format!("{comment} secret key")),
                0o600,
                force,
            )?;
            write_new(
                &pubp,
                &sk.public().to_text(&format!("{comment} public key")),
                0o644,
                force,
            )?;
            println!("key id {}", sk.key_id);
            println!("public key {}", pubp.display());
            println!("secret key {} (keep it off the network)", secp.display());
        }
        BundleCmd::Build {
            manifest,
            rootfs,
            out,
            image_type,
            key,
            arch,
        } => {
            let key = key.as_deref().map(load_secret).transpose()?;
            let fs = match image_type {
                FsArg::Squashfs => ImageType::Squashfs,
                FsArg::Erofs => ImageType::Erofs,
            };
            let head = build_for(&manifest, arch.as_deref(), &rootfs, fs, &out, key.as_ref())?;
            println!(
                "built {} ({} image, {} bytes, sha256 {}){}",
                out.display(),
                fs.fs_name(),
                head.header.image_len,
                hex(&head.header.image_digest),
                match &key {
                    Some(k) => format!(", signed by {}", k.key_id),
                    None => ", unsigned".into(),
                }
            );
        }
        BundleCmd::Sign {
            bundle,
            key,
            signature,
            detached,
            minisig,
        } => {
            if let Some(sigp) = signature {
                let sig = SignatureBlock::from_text(&read_key_text(&sigp)?)
                    .with_context(|| format!("{}", sigp.display()))?;
                set_signature(&bundle, &sig)?;
                println!(
                    "attached signature by key {} to {}",
                    sig.key_id,
                    bundle.display()
                );
            } else if let Some(kp) = key {
                let sk = load_secret(&kp)?;
                let sig = sign_file(&bundle, &sk)?;
                let (_, head) = read_head(&bundle)?;
                if let Some(d) = detached {
                    write_new(
                        &d,
                        &sig.to_text("signature from nuvol secret key"),
                        0o644,
                        true,
                    )?;
                }
                if let Some(m) = minisig {
                    let tc = format!("nuvol bundle sha256:{}", hex(&head.header.image_digest));
                    write_new(
                        &m,
                        &sk.minisign_signature(&head.signed_message(), &tc),
                        0o644,
                        true,
                    )?;
                }
                println!("signed {} with key {}", bundle.display(), sk.key_id);
            }
        }
        BundleCmd::Verify {
            bundle,
            pubkey,
            keyring,
        } => {
            let keys: Box<dyn KeyLookup> = match keyring {
                Some(k) => Box::new(Keyring::at(&k)),
                None => {
                    if pubkey.is_empty() {
                        bail!("give --pubkey FILE or --keyring keyring.json");
                    }
                    let mut v = Vec::new();
                    for p in &pubkey {
                        v.push(
                            PublicKey::from_text(&read_key_text(p)?)
                                .with_context(|| format!("{}", p.display()))?,
                        );
                    }
                    Box::new(v)
                }
            };
            let v = verify_file(&bundle, keys.as_ref(), None)
                .with_context(|| format!("{}: REJECTED", bundle.display()))?;
            println!(
                "{}: OK {} {} for {} signed by {} sha256 {}",
                bundle.display(),
                v.manifest.name,
                v.manifest.version,
                v.manifest.arch.as_deref().unwrap_or("any architecture"),
                v.key_id,
                v.digest_hex()
            );
        }
        BundleCmd::Inspect {
            bundle,
            json,
            export_message,
            export_signature,
        } => {
            let (_, head) = read_head(&bundle)?;
            let sig = head.signature();
            if let Some(p) = export_message {
                std::fs::write(&p, head.signed_message())
                    .with_context(|| format!("{}", p.display()))?;
            }
            if let Some(p) = export_signature {
                let s = sig.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
                write_new(&p, &s.to_text("signature from nuvol bundle"), 0o644, true)?;
            }
            let manifest = Manifest::parse(&head.manifest_bytes);
            let h = &head.header;
            if json {
                let v = serde_json::json!({
                    "verified": false,
                    "image_type": h.image_type,
                    "image_offset": h.image_offset(),
                    "image_len": h.image_len,
                    "image_sha256": hex(&h.image_digest),
                    "signature": match &sig {
                        Ok(s) => serde_json::json!({
                            "algorithm": String::from_utf8_lossy(&s.algorithm),
                            "key_id": s.key_id.to_string(),
                        }),
                        Err(e) => serde_json::json!({ "error": e.to_string() }),
                    },
                    "manifest": match &manifest {
                        Ok(m) => serde_json::to_value(m)?,
                        Err(e) => serde_json::json!({ "error": e.to_string() }),
                    },
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("UNVERIFIED (use `nuvol bundle verify` to check the signature)");
                println!(
                    "image       {} at offset {}, {} bytes",
                    h.image_type.fs_name(),
                    h.image_offset(),
                    h.image_len
                );
                println!("sha256      {}", hex(&h.image_digest));
                match &sig {
                    Ok(s) => println!(
                        "signature   {} by key {}",
                        String::from_utf8_lossy(&s.algorithm),
                        s.key_id
                    ),
                    Err(e) => println!("signature   none ({e})"),
                }
                match &manifest {
                    Ok(m) => {
                        println!("name        {}", m.name);
                        println!("version     {}", m.version);
                        println!("publisher   {}", m.publisher);
                        println!("arch        {}", m.arch.as_deref().unwrap_or("any"));
                        println!("command     {:?}", m.run.command);
                        for p in &m.ports {
                            println!("port        {} {}/{:?}", p.name, p.port, p.protocol);
                        }
                        for v in &m.volumes {
                            println!("volume      {} at {}", v.name, v.path);
                        }
                        for a in &m.announce {
                            println!(
                                "announce    {} port {} txt {:?}",
                                a.service_type, a.port, a.txt
                            );
                        }
                    }
                    Err(e) => println!("manifest    invalid: {e}"),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        args: BundleArgs,
    }

    fn nuvol_bundle(args: &[&str]) -> anyhow::Result<()> {
        let mut v = vec!["bundle"];
        v.extend_from_slice(args);
        run(T::try_parse_from(v)?.args)
    }

    /// keygen -> build -> verify -> inspect/export -> signify signs -> attach -> verify.
    #[test]
    fn cli_round_trip() {
        struct Dir(PathBuf);
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let t = Dir(std::env::temp_dir().join(format!("nuvol-cli-bundle-{}", std::process::id())));
        std::fs::create_dir_all(&t.0).unwrap();
        let d = t.0.as_path();
        let s = |p: &str| d.join(p).to_str().unwrap().to_string();
        std::fs::create_dir_all(d.join("root/bin")).unwrap();
        std::fs::write(d.join("root/bin/x"), "x").unwrap();
        std::fs::write(
            d.join("m.toml"),
            "name = \"w\"\nversion = \"1\"\npublisher = \"t\"\n[run]\ncommand = [\"/bin/x\"]\n",
        )
        .unwrap();
        nuvol_bundle(&["keygen", "-o", &s("k")]).unwrap();
        assert!(
            nuvol_bundle(&["keygen", "-o", &s("k")]).is_err(),
            "must not overwrite"
        );
        nuvol_bundle(&[
            "build",
            "-m",
            &s("m.toml"),
            "-r",
            &s("root"),
            "-o",
            &s("w.nvb"),
        ])
        .unwrap();
        assert!(nuvol_bundle(&["verify", &s("w.nvb"), "-p", &s("k.pub")]).is_err());
        nuvol_bundle(&["sign", &s("w.nvb"), "-k", &s("k.sec")]).unwrap();
        nuvol_bundle(&["verify", &s("w.nvb"), "-p", &s("k.pub")]).unwrap();
        nuvol_bundle(&[
            "inspect",
            &s("w.nvb"),
            "--json",
            "--export-message",
            &s("msg"),
        ])
        .unwrap();
        // Re-sign with signify itself and attach.
        let st = std::process::Command::new("signify-openbsd")
            .args([
                "-S",
                "-s",
                &s("k.sec"),
                "-m",
                &s("msg"),
                "-x",
                &s("msg.sig"),
            ])
            .status()
            .unwrap();
        assert!(st.success());
        nuvol_bundle(&["sign", &s("w.nvb"), "-s", &s("msg.sig")]).unwrap();
        nuvol_bundle(&["verify", &s("w.nvb"), "-p", &s("k.pub")]).unwrap();
        // A key it was not signed with.
        nuvol_bundle(&["keygen", "-o", &s("other")]).unwrap();
        let e = nuvol_bundle(&["verify", &s("w.nvb"), "-p", &s("other.pub")]).unwrap_err();
        assert!(format!("{e:#}").contains("not in the keyring"), "{e:#}");
    }
}
