//! OS updates from a USB stick (docs/boot.md, "Update"): a human at the
//! box plugs in a stick with `update/*.nvu` on it, before power-on or
//! while the box runs. Every few seconds the agent lists the volumes of
//! disks that are not a nuvol disk (sysfs, `nuvol_disk::other_volumes`);
//! each new one is mounted read-only (FAT, or ext4 without replaying its
//! journal; never executed, no devices, no set-uid) on a private mount
//! point, its `update/` handled exactly as the boot partition's (each
//! file once, signature and version checked as an upload), and unmounted.
//! A volume is looked at once per plug-in: unplugged and plugged again it
//! is looked at again, and files already handled are still skipped.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::update::{running_services, Updater, BOOT_DIR, BOOT_DIR_DELAY};

/// Where a stick's volume is mounted while it is read.
const MOUNT_POINT: &str = "/run/nuvol/stick";
/// How often the disks are listed (a sysfs walk; a disk's GPT is read
/// once per plug-in).
const POLL: Duration = Duration::from_secs(5);

/// Watch for sticks for the agent's whole life.
pub async fn stick_watch(u: Arc<Updater>, svc: Option<crate::services::ServicesHandle>) {
    if u.available().is_none() {
        return;
    }
    // As for the boot partition: the services that run are recorded with
    // the update, so let them start first.
    tokio::time::sleep(BOOT_DIR_DELAY).await;
    let mut seen: Vec<String> = Vec::new();
    // Each disk's GPT is read once per plug-in, not at every look.
    let mut gpts_kept = nuvol_disk::GptSeen::default();
    loop {
        // On trial: no update is taken before the running one is judged.
        while u.on_trial() {
            tokio::time::sleep(POLL).await;
        }
        let mut gpts = std::mem::take(&mut gpts_kept);
        let look = tokio::task::spawn_blocking(move || {
            let v = nuvol_disk::other_volumes_seen(
                Path::new("/sys/class/block"),
                Path::new("/dev"),
                &mut gpts,
            );
            (v, gpts)
        })
        .await;
        let Ok((vols, kept)) = look else {
            tokio::time::sleep(POLL).await;
            continue;
        };
        gpts_kept = kept;
        // Unplugged: forget it, so the next plug-in is looked at.
        seen.retain(|s| vols.iter().any(|v| &v.seen_as == s));
        for v in vols {
            if seen.contains(&v.seen_as) {
                continue;
            }
            let services = running_services(svc.as_ref());
            let u2 = u.clone();
            let v2 = v.clone();
            let Ok(res) = tokio::task::spawn_blocking(move || look_at(&u2, &v2, services)).await
            else {
                continue;
            };
            match res {
                Ok(out) => {
                    if !out.busy {
                        seen.push(v.seen_as.clone());
                    }
                    if let Some(ver) = out.applied {
                        eprintln!(
                            "nuvol: update {ver} from the USB stick ({}): rebooting to try it",
                            v.name
                        );
                        if let Err(e) = nuvol_api::ask_init_to_reboot() {
                            eprintln!("nuvol: update {ver}: {e}; it is tried at the next boot");
                        }
                        return;
                    }
                }
                Err(e) => {
                    seen.push(v.seen_as.clone());
                    tracing::info!("{}: {e}", v.name);
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Mount `v` read-only, handle its `update/`, unmount it.
fn look_at(
    u: &Updater,
    v: &nuvol_disk::Volume,
    services: Vec<String>,
) -> Result<crate::update::DirOutcome, String> {
    let mnt = Path::new(MOUNT_POINT);
    std::fs::create_dir_all(mnt).map_err(|e| format!("{MOUNT_POINT}: {e}"))?;
    let fstype = mount_ro(&v.dev, mnt)?;
    let dir = mnt.join(BOOT_DIR);
    let out = if dir.is_dir() {
        eprintln!(
            "nuvol: USB stick {} ({fstype}): looking at {BOOT_DIR}/",
            v.name
        );
        u.apply_dir(&dir, Some(&v.name), services)
    } else {
        tracing::info!("{} ({fstype}): no {BOOT_DIR}/ folder", v.name);
        Default::default()
    };
    if let Err(e) = umount(mnt) {
        tracing::error!("unmounting {}: {e}", v.name);
    }
    Ok(out)
}

/// Mount `dev` on `mnt` read-only as FAT or ext4; the type that worked.
fn mount_ro(dev: &Path, mnt: &Path) -> Result<&'static str, String> {
    let src = cstr(dev.as_os_str().as_bytes())?;
    let dst = cstr(mnt.as_os_str().as_bytes())?;
    let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let mut last = String::new();
    // ext4's `noload`: a read-only mount does not replay the journal
    // either (which would write to the stick).
    for (fstype, data) in [("vfat", "utf8"), ("ext4", "noload")] {
        let t = cstr(fstype.as_bytes())?;
        let d = cstr(data.as_bytes())?;
        // SAFETY: every pointer is a NUL-terminated string that outlives
        // the call.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                t.as_ptr(),
                flags,
                d.as_ptr().cast(),
            )
        };
        if rc == 0 {
            return Ok(fstype);
        }
        last = format!("{fstype}: {}", std::io::Error::last_os_error());
    }
    Err(format!("no FAT or ext4 file system ({last})"))
}

fn umount(mnt: &Path) -> std::io::Result<()> {
    let p = cstr(mnt.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: `p` is a NUL-terminated string that outlives the call.
    if unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn cstr(b: &[u8]) -> Result<CString, String> {
    CString::new(b).map_err(|_| "a path with a NUL byte".to_string())
}
