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
}

fn linker_packs_relocs() -> bool {
    Command::new("ld")
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("pack-relative-relocs"))
}
