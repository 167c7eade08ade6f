//! `make qemu`'s box (`qemu/box.sh`, what the Makefile runs): a sparse copy
//! of the release image grown to a USB stick's size, booted; the next steps
//! printed with this box's token once it is ready; a second run keeps the
//! box's state (same node id, same token); `--reset` starts over; the
//! release image itself is never written.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nuvol_e2e::{free_port, image, repo, Scratch};

struct Run {
    child: Child,
    out: Arc<Mutex<String>>,
}

impl Drop for Run {
    fn drop(&mut self) {
        // box.sh runs QEMU as its child; end the whole group.
        let _ = Command::new("pkill")
            .args(["-P", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, extra: &[&str]) -> Run {
    let mut cmd = Command::new(repo().join("qemu/box.sh"));
    cmd.args(["--dir"])
        .arg(dir)
        .args([
            "--disk",
            "1G",
            "--nuvol",
            "out/nuvol",
            "--bundles",
            "out/bundles",
        ])
        .args(["--port", &free_port().to_string()])
        .args(["--https-port", &free_port().to_string()])
        .args(extra)
        .arg(image())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("qemu/box.sh");
    let out = Arc::new(Mutex::new(String::new()));
    for mut pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let out = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    Run { child, out }
}

impl Run {
    fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.out.lock().unwrap().replace('\r', "");
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} from qemu/box.sh within {timeout:?}:\n{}",
                nuvol_e2e::tail(&text)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

fn field(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{}", nuvol_e2e::tail(text)))
}

fn node_id(text: &str) -> String {
    let l = text
        .lines()
        .rev()
        .find(|l| l.contains("identity node_id="))
        .expect("identity line on the console");
    l.split("node_id=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn make_qemu_boots_a_copy_that_keeps_its_state_and_says_what_next() {
    let scratch = Scratch::new("make-qemu");
    let dir = scratch.0.join("qemu");
    let release = std::fs::read(image()).unwrap();

    let first = start(&dir, &[]);
    let text = first.wait_for("nuvol box is ready", Duration::from_secs(240));
    let token = field(&text, "admin token");
    assert_eq!(token.len(), 64, "{token}");
    assert!(text.contains("ctl keys add out/bundles/dev.pub"), "{text}");
    assert!(
        text.contains("ctl bundles install --yes out/bundles/web.nvb"),
        "{text}"
    );
    assert!(text.contains("NUVOL_FINGERPRINT="), "{text}");
    let first_id = node_id(&text);
    let disk = std::fs::metadata(dir.join("disk.img")).unwrap();
    assert_eq!(disk.len(), 1 << 30, "grown to --disk");
    assert!(
        disk.blocks() * 512 < 256 << 20,
        "sparse: {} bytes allocated",
        disk.blocks() * 512
    );
    drop(first);

    let second = start(&dir, &[]);
    let text = second.wait_for("nuvol box is ready", Duration::from_secs(240));
    assert_eq!(
        field(&text, "admin token"),
        token,
        "the same box: same token"
    );
    assert_eq!(node_id(&text), first_id, "the same box: same node id");
    drop(second);

    let third = start(&dir, &["--reset"]);
    let text = third.wait_for("nuvol box is ready", Duration::from_secs(240));
    assert_ne!(node_id(&text), first_id, "--reset starts a new box");
    drop(third);

    assert!(
        std::fs::read(image()).unwrap() == release,
        "the release image was written to"
    );
}
