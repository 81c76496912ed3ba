//! Link-time settings for the `berth` binary.

fn main() {
    // Pack the binary's relative relocations (DT_RELR, glibc 2.36+, binutils 2.38+). The dynamic
    // loader reads the whole relocation table at every start: packed, it shrinks from about
    // 1.2 MB to a few KB, and so does the resident memory it costs. The binary stays PIE.
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" && std::env::var_os("BERTH_NO_RELR").is_none() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-env-changed=BERTH_NO_RELR");
}
