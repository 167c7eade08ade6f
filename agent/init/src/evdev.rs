//! The ACPI power button (QEMU `system_powerdown`) shows up as an input
//! device sending KEY_POWER; there is no acpid, PID 1 reads it directly.

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;

const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;
/// `struct input_event`: the time as two `unsigned long`s (16 bytes on 64-bit,
/// 8 on 32-bit ARM, even with a 64-bit time_t), then type (2), code (2),
/// value (4).
const TIME_SIZE: usize = 2 * std::mem::size_of::<libc::c_ulong>();
const EVENT_SIZE: usize = TIME_SIZE + 8;

pub struct Buttons {
    devs: Vec<File>,
}

impl Buttons {
    /// Open every /dev/input/event* device (non-blocking). Missing dir: none.
    pub fn open() -> Buttons {
        let mut devs = Vec::new();
        if let Ok(rd) = fs::read_dir("/dev/input") {
            let mut paths: Vec<_> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("event"))
                })
                .collect();
            paths.sort();
            for p in paths {
                if let Ok(f) = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                    .open(&p)
                {
                    devs.push(f);
                }
            }
        }
        Buttons { devs }
    }

    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.devs.iter().map(|f| f.as_fd()).collect()
    }

    /// Drain pending events; true if the power key was pressed.
    pub fn power_pressed(&mut self) -> bool {
        let mut pressed = false;
        let mut buf = [0u8; EVENT_SIZE * 16];
        for dev in &mut self.devs {
            while let Ok(n) = dev.read(&mut buf) {
                if n == 0 {
                    break;
                }
                pressed |= buf[..n].chunks_exact(EVENT_SIZE).any(is_power_press);
            }
        }
        pressed
    }
}

fn is_power_press(ev: &[u8]) -> bool {
    let e = &ev[TIME_SIZE..];
    let ty = u16::from_ne_bytes([e[0], e[1]]);
    let code = u16::from_ne_bytes([e[2], e[3]]);
    let value = i32::from_ne_bytes([e[4], e[5], e[6], e[7]]);
    ty == EV_KEY && code == KEY_POWER && value == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ty: u16, code: u16, value: i32) -> [u8; EVENT_SIZE] {
        let mut b = [0u8; EVENT_SIZE];
        b[TIME_SIZE..TIME_SIZE + 2].copy_from_slice(&ty.to_ne_bytes());
        b[TIME_SIZE + 2..TIME_SIZE + 4].copy_from_slice(&code.to_ne_bytes());
        b[TIME_SIZE + 4..].copy_from_slice(&value.to_ne_bytes());
        b
    }

    #[test]
    fn only_power_key_down_counts() {
        assert!(is_power_press(&ev(EV_KEY, KEY_POWER, 1)));
        assert!(!is_power_press(&ev(EV_KEY, KEY_POWER, 0)), "release");
        assert!(!is_power_press(&ev(EV_KEY, 30, 1)), "another key");
        assert!(!is_power_press(&ev(0, KEY_POWER, 1)), "EV_SYN");
    }
}
