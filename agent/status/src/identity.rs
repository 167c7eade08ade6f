//! The node's persistent identity on the data partition: a random node id
//! made on first boot and a boot counter. Both survive reboots, which is also
//! how the boot tests see that data persists.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// 32 hex digits, random, made once.
    pub node_id: String,
    /// Boots of this data partition: 1 on the first boot. An agent restart
    /// within one boot does not count.
    pub boot_count: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Identity {
    /// Read (or create) the node id and count this boot. `run_dir` is a
    /// directory emptied at every boot (`/run/nuvol`): a marker there tells
    /// an agent restart from a new boot.
    pub fn load_or_create(state_dir: &Path, run_dir: &Path) -> Result<Identity, IdentityError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| IdentityError::Io { path, source }
        };
        fs::create_dir_all(state_dir).map_err(io(state_dir))?;
        let id_path = state_dir.join("node-id");
        let node_id = match fs::read_to_string(&id_path) {
            Ok(s) if s.trim().len() == 32 && s.trim().bytes().all(|b| b.is_ascii_hexdigit()) => {
                s.trim().to_string()
            }
            _ => {
                let mut raw = [0u8; 16];
                fs::File::open("/dev/urandom")
                    .and_then(|mut f| f.read_exact(&mut raw))
                    .map_err(io(Path::new("/dev/urandom")))?;
                let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                nuvol_durable::write_atomic(
                    &id_path,
                    format!("{id}\n").as_bytes(),
                    nuvol_durable::Mode::Public,
                )
                .map_err(io(&id_path))?;
                id
            }
        };
        let count_path = state_dir.join("boot-count");
        let stored = fs::read_to_string(&count_path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let marker = run_dir.join(format!("boot-counted-{node_id}"));
        let boot_count = if marker.exists() && stored > 0 {
            stored
        } else {
            let n = stored.saturating_add(1);
            nuvol_durable::write_atomic(
                &count_path,
                format!("{n}\n").as_bytes(),
                nuvol_durable::Mode::Public,
            )
            .map_err(io(&count_path))?;
            fs::create_dir_all(run_dir).map_err(io(run_dir))?;
            fs::write(&marker, b"").map_err(io(&marker))?;
            n
        };
        Ok(Identity {
            node_id,
            boot_count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_persists_and_boots_are_counted() {
        let dir = std::env::temp_dir().join(format!("nuvol-identity-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (run1, run2) = (dir.join("run1"), dir.join("run2"));
        let a = Identity::load_or_create(&dir, &run1).unwrap();
        let restart = Identity::load_or_create(&dir, &run1).unwrap();
        let reboot = Identity::load_or_create(&dir, &run2).unwrap();
        assert_eq!(a.node_id, reboot.node_id);
        assert_eq!(
            (a.boot_count, restart.boot_count, reboot.boot_count),
            (1, 1, 2)
        );
        // A damaged id file is replaced, not trusted.
        fs::write(dir.join("node-id"), "garbage").unwrap();
        let c = Identity::load_or_create(&dir, &run2).unwrap();
        assert_ne!(c.node_id, a.node_id);
        assert_eq!(c.node_id.len(), 32);
        assert!(!dir.join(".node-id.tmp").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
