//! Link-time settings for the `berth` binary.

use std::process::Command;

fn main() {
    // Pack the binary's relative relocations (DT_RELR). The dynamic loader reads the whole
    // relocation table at every start: packed, it shrinks from about 1.2 MB to a few KB, and so
    // does the resident memory it costs; the binary stays position-independent. Only where the
    // linker knows the option (binutils 2.38+; it emits DT_RELR only against glibc 2.36+).
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" && std::env::var_os("BERTH_NO_RELR").is_none() && linker_packs_relocs() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-env-changed=BERTH_NO_RELR");
    // Lay out the code a registry runs (start, pushes, pulls, listings) in one place, in the
    // order `host/link-order.txt` lists it. The kernel maps a binary's code in 64 KiB windows
    // around each page first touched; scattered over 27 MB of text, the 1.3 MB that serving
    // runs made 7 MiB resident at start. The GETs' busiest functions come first: packed into
    // the fewest pages and cache lines, manifest GETs ran 3-8% faster than in first-run order.
    // Names not in the binary any more are skipped, so a stale list only costs locality;
    // `host/link-order.sh` writes it afresh. Only with LLD (Rust's default linker on x86_64
    // Linux), the linker that knows the option.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let order = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("link-order.txt");
    if os == "linux"
        && env == "gnu"
        && arch == "x86_64"
        && std::env::var_os("BERTH_NO_LINK_ORDER").is_none()
        && order.exists()
    {
        println!("cargo:rustc-link-arg-bin=berth=-Wl,--symbol-ordering-file={}", order.display());
        println!("cargo:rustc-link-arg-bin=berth=-Wl,--no-warn-symbol-ordering");
    }
    println!("cargo:rerun-if-changed=link-order.txt");
    println!("cargo:rerun-if-env-changed=BERTH_NO_LINK_ORDER");
}

fn linker_packs_relocs() -> bool {
    Command::new("ld")
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("pack-relative-relocs"))
}
