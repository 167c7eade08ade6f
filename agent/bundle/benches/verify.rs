//! Verify throughput on a 256 MiB bundle against `sha256sum` of the same
//! file (same run, page cache warm for both), ed25519 verifies per second,
//! and install time of the Syncthing bundle if `NUVOL_BENCH_SYNCTHING`
//! names one (e.g. out/bundles/syncthing.nvb from `make bundles`).

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use nuvol_bundle::build::assemble;
use nuvol_bundle::verify::verify_file;
use nuvol_bundle::{ImageType, SecretKey, Store, StoreOptions};

const SIZE: u64 = 256 << 20;
const MANIFEST: &str =
    "name = \"big\"\nversion = \"1\"\npublisher = \"bench\"\n[run]\ncommand = [\"/bin/x\"]\n";

fn make_big(dir: &Path, key: &SecretKey) -> std::path::PathBuf {
    let img = dir.join("big.img");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&img).unwrap());
    // Cheap pseudo-random content (xorshift), 256 MiB.
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..(SIZE >> 20) {
        for c in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&buf).unwrap();
    }
    f.flush().unwrap();
    drop(f);
    let out = dir.join("big.nvb");
    assemble(
        MANIFEST.as_bytes(),
        &img,
        ImageType::Squashfs,
        &out,
        Some(key),
    )
    .unwrap();
    std::fs::remove_file(img).unwrap();
    out
}

fn best_of<F: FnMut()>(n: usize, mut f: F) -> Duration {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let pk = key.public();
    let big = make_big(dir.path(), &key);

    // Head-to-head ratio, measured in this run.
    let ours = best_of(5, || {
        verify_file(&big, &pk, None).unwrap();
    });
    let theirs = best_of(5, || {
        let o = Command::new("sha256sum").arg(&big).output().unwrap();
        assert!(o.status.success());
    });
    let mb = |d: Duration| (SIZE as f64 / (1 << 20) as f64) / d.as_secs_f64();
    println!(
        "verify 256 MiB bundle: {:.0} MiB/s; sha256sum: {:.0} MiB/s; ratio {:.2} (target >= 0.90)",
        mb(ours),
        mb(theirs),
        theirs.as_secs_f64() / ours.as_secs_f64()
    );

    let mut g = c.benchmark_group("verify");
    g.sample_size(10).throughput(Throughput::Bytes(SIZE));
    g.bench_function("verify_file_256MiB", |b| {
        b.iter(|| verify_file(&big, &pk, None).unwrap())
    });
    g.bench_function("sha256sum_256MiB", |b| {
        b.iter(|| Command::new("sha256sum").arg(&big).output().unwrap())
    });
    g.finish();

    let msg = vec![7u8; 600];
    let sig = key.sign(&msg);
    let mut g = c.benchmark_group("ed25519");
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify_signature", |b| {
        b.iter(|| pk.verify(&sig, &msg).unwrap())
    });
    g.finish();

    if let Ok(p) = std::env::var("NUVOL_BENCH_SYNCTHING") {
        let p = std::path::PathBuf::from(p);
        let pubp = p.with_file_name("dev.pub");
        let text = std::fs::read_to_string(&pubp).expect("dev.pub next to the bundle");
        let root = unsafe { libc::geteuid() } == 0;
        let mut g = c.benchmark_group("install");
        g.sample_size(10);
        g.bench_function("install_syncthing", |b| {
            b.iter_with_setup(
                || {
                    let d = tempfile::tempdir().unwrap();
                    let s = Store::open_with(
                        d.path(),
                        StoreOptions {
                            scan_image: root,
                            ..Default::default()
                        },
                    )
                    .unwrap();
                    s.keyring().add_text(&text, "dev").unwrap();
                    (d, s)
                },
                |(d, s)| {
                    s.install(&p).unwrap();
                    drop(s);
                    d
                },
            )
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
