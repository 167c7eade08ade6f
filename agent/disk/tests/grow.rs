//! Real disks: GPT images made by sfdisk, grown by us, checked by sfdisk; an
//! ext4 on a loop device grown online through the kernel; the box's own
//! disk told apart from a second one by PARTUUID.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

use nuvol_disk::{
    device_bytes, find_partition, find_partitions, gpt, grow_ext4, select, Binding, BindingSource,
    Partition,
};

const MIB: u64 = 1024 * 1024;

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
fn tempdir(tag: &str) -> TempDir {
    let p = std::env::temp_dir().join(format!("nuvol-disk-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&p);
    fs::create_dir_all(&p).unwrap();
    TempDir(p)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn make_image(path: &Path, mib: u64) {
    make_image_with_uuids(path, mib, None);
}

/// `uuids`: the PARTUUIDs of boot and data (else sfdisk picks random ones).
fn make_image_with_uuids(path: &Path, mib: u64, uuids: Option<(&str, &str)>) {
    let f = File::create(path).unwrap();
    f.set_len(mib * MIB).unwrap();
    drop(f);
    let (b, d) = match uuids {
        Some((b, d)) => (format!(", uuid={b}"), format!(", uuid={d}")),
        None => (String::new(), String::new()),
    };
    let layout = format!("label: gpt\nfirst-lba: 2048\nstart=2048, size=16384, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=nuvol-boot{b}\nstart=18432, size=20480, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=nuvol-data{d}\n");
    let mut child = Command::new("sfdisk")
        .arg("--quiet")
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(layout.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

fn part_end(img: &Path, n: usize) -> u64 {
    let json: serde_json::Value =
        serde_json::from_str(&run(Command::new("sfdisk").arg("--json").arg(img))).unwrap();
    let p = &json["partitiontable"]["partitions"][n - 1];
    p["start"].as_u64().unwrap() + p["size"].as_u64().unwrap() - 1
}

/// Attach an image to a loop device and make the kernel see its partitions.
/// (`losetup --partscan` is not honoured in every sandbox; `partx -a` is.)
fn attach(img: &Path) -> Loop {
    let dev = run(Command::new("losetup").args(["--find", "--show"]).arg(img))
        .trim()
        .to_string();
    let lo = Loop(dev.clone());
    run(Command::new("partx").arg("-a").arg(&dev));
    for _ in 0..50 {
        if Path::new(&format!("{dev}p2")).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    lo
}

#[test]
fn grows_last_partition_to_end_of_disk_and_sfdisk_agrees() {
    let d = tempdir("gpt");
    let img = d.0.join("disk.img");
    make_image(&img, 32);
    assert_eq!(part_end(&img, 2), 18432 + 20480 - 1);
    // "dd to a bigger stick"
    OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let g = gpt::grow_partition(&f, device_bytes(&f).unwrap(), 512, 2)
        .unwrap()
        .expect("grew");
    let total = 64 * MIB / 512;
    assert_eq!(g.new_end_lba, total - 34);
    assert_eq!(part_end(&img, 2), total - 34);
    // sfdisk --verify must find both headers and the layout sane.
    let verify = Command::new("sfdisk")
        .arg("--verify")
        .arg(&img)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&verify.stdout).to_string()
        + &String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && !text.contains("corrupt") && !text.contains("not at the end"),
        "{text}"
    );
    // Second run: nothing to do.
    assert_eq!(
        gpt::grow_partition(&f, device_bytes(&f).unwrap(), 512, 2).unwrap(),
        None
    );
    // Partition 1 is followed by partition 2: never grown.
    assert_eq!(
        gpt::grow_partition(&f, device_bytes(&f).unwrap(), 512, 1).unwrap(),
        None
    );
}

#[test]
fn corrupt_gpt_is_refused_without_writing() {
    let d = tempdir("bad");
    let img = d.0.join("disk.img");
    make_image(&img, 32);
    let mut bytes = fs::read(&img).unwrap();
    bytes[512 + 40] ^= 0x01; // flip a bit in the primary header
    fs::write(&img, &bytes).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();
    let before = fs::read(&img).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let err = gpt::grow_partition(&f, 64 * MIB, 512, 2).unwrap_err();
    assert!(err.to_string().contains("header CRC"), "{err}");
    assert_eq!(fs::read(&img).unwrap(), before, "nothing written");
    // Not a GPT at all.
    let z = d.0.join("zero.img");
    File::create(&z).unwrap().set_len(MIB).unwrap();
    let f = OpenOptions::new().read(true).write(true).open(&z).unwrap();
    assert!(gpt::grow_partition(&f, MIB, 512, 1)
        .unwrap_err()
        .to_string()
        .contains("signature"));
}

struct Loop(String);
impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("partx").arg("-d").arg(&self.0).status();
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}
struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn finds_partitions_by_name_and_grows_mounted_ext4_online() {
    let d = tempdir("ext4");
    let img = d.0.join("disk.img");
    make_image(&img, 32);
    // mkfs the data partition through a loop device of the whole image.
    let lo = attach(&img);
    let p2 = format!("{}p2", lo.0);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "nuvol-data"])
        .arg(&p2));
    drop(lo);
    // Bigger stick.
    OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(96 * MIB)
        .unwrap();
    let lo = attach(&img);
    let dev = lo.0.clone();
    let name = Path::new(&dev)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let mut part: Option<Partition> = None;
    for _ in 0..50 {
        part = find_partition(
            Path::new("/sys/class/block"),
            Path::new("/dev"),
            "nuvol-data",
        )
        .filter(|p| p.disk == Path::new("/dev").join(&name));
        if part.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let part = part.expect("nuvol-data found through sysfs");
    assert_eq!(part.number, 2);
    assert_eq!(part.dev, PathBuf::from(format!("{dev}p2")));
    assert_eq!(part.sectors, 20480);

    let grown = nuvol_disk::grow_data_partition(&part)
        .unwrap()
        .expect("grew");
    let sz: u64 = fs::read_to_string(format!("/sys/class/block/{name}p2/size"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        sz,
        grown.new_end_lba - grown.start_lba + 1,
        "kernel sees the new size"
    );

    let mnt = d.0.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    run(Command::new("mount").arg(&part.dev).arg(&mnt));
    let _m = Mount(mnt.clone());
    if !has_cap_sys_resource() {
        // Online resize needs CAP_SYS_RESOURCE; some CI sandboxes withhold it.
        // PID 1 on the box has it, and the QEMU boot test checks that data
        // fills the disk. Here we can still check the refusal is reported.
        let err = grow_ext4(&mnt, &part.dev).unwrap_err();
        assert!(err.to_string().contains("EXT4_IOC_RESIZE_FS"), "{err}");
        return;
    }
    let blocks = grow_ext4(&mnt, &part.dev).unwrap().expect("ext4 grew");
    let df = nix_statvfs(&mnt);
    assert!(
        df > 80 * MIB,
        "filesystem is {df} bytes after growing to {blocks} blocks"
    );
    assert_eq!(
        grow_ext4(&mnt, &part.dev).unwrap(),
        None,
        "second run is a no-op"
    );
}

fn has_cap_sys_resource() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    u64::from_str_radix(eff, 16).unwrap() & (1 << 24) != 0
}

fn nix_statvfs(p: &Path) -> u64 {
    let out = run(Command::new("df").args(["--output=size", "-B1"]).arg(p));
    out.lines().nth(1).unwrap().trim().parse().unwrap()
}

/// Two disks with nuvol partitions, as the kernel shows them: the PARTUUIDs
/// read from each GPT are the ones sfdisk wrote, and the box keeps the disk
/// the binding names, whichever enumerates first.
#[test]
fn partuuids_from_the_gpt_pick_the_own_disk() {
    let d = tempdir("bind");
    let own = (
        "0a3e9c6e-5b1d-4e2a-8c3f-1d2e3f4a5b6c",
        "0a3e9c6e-5b1d-4e2a-8c3f-000000000002",
    );
    let other = (
        "11111111-2222-4333-8444-555555555555",
        "11111111-2222-4333-8444-000000000002",
    );
    let (img_own, img_other) = (d.0.join("own.img"), d.0.join("other.img"));
    make_image_with_uuids(&img_own, 32, Some(own));
    make_image_with_uuids(&img_other, 32, Some(other));
    let lo_other = attach(&img_other);
    let lo_own = attach(&img_own);
    let ours = |ps: Vec<Partition>| -> Vec<Partition> {
        ps.into_iter()
            .filter(|p| p.disk == Path::new(&lo_own.0) || p.disk == Path::new(&lo_other.0))
            .collect()
    };
    let sys = Path::new("/sys/class/block");
    let mut boots = Vec::new();
    let mut datas = Vec::new();
    for _ in 0..50 {
        boots = ours(find_partitions(sys, Path::new("/dev"), "nuvol-boot"));
        datas = ours(find_partitions(sys, Path::new("/dev"), "nuvol-data"));
        if boots.len() == 2 && datas.len() == 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!((boots.len(), datas.len()), (2, 2), "{boots:?} {datas:?}");
    let uuid_of = |dev: &str| {
        boots
            .iter()
            .chain(&datas)
            .find(|p| p.dev == Path::new(dev))
            .and_then(|p| p.partuuid.clone())
    };
    assert_eq!(uuid_of(&format!("{}p1", lo_own.0)).as_deref(), Some(own.0));
    assert_eq!(uuid_of(&format!("{}p2", lo_own.0)).as_deref(), Some(own.1));
    assert_eq!(
        uuid_of(&format!("{}p1", lo_other.0)).as_deref(),
        Some(other.0)
    );
    let binding = Binding {
        partuuid: own.0.into(),
        source: BindingSource::CommandLine,
    };
    let sel = select(&boots, &datas, Some(&binding));
    assert_eq!(sel.boot.unwrap().disk, Path::new(&lo_own.0));
    assert_eq!(
        sel.data.unwrap().dev,
        PathBuf::from(format!("{}p2", lo_own.0))
    );
    let text = sel.notes.join("\n");
    assert!(
        text.contains(&format!("refusing nuvol-boot {}p1", lo_other.0)),
        "{text}"
    );
}
