//! Link settings of the optimized `weft` binary.
//!
//! Idle memory is mostly the binary's machine code, mapped by the kernel 64 KiB around every
//! page that runs. Left to the linker, the few thousand functions that start-up and a request
//! run are spread over all 32 MiB of it, and half of its pages end up resident. lld puts the
//! functions named in `link/hot-functions.txt` first, side by side, in its order: those of a
//! running flow, then those only start-up and the stop run, whose pages `weft run` gives back
//! once it has started (`src/cmd/memory.rs`). A name the build does not have is skipped.
//!
//! The list is written by `weft-bench layout` from a release build linked with
//! `WEFT_LINK_MAP=PATH`, which also writes the linker's map of every function's address there.
//! It has to be a release build: symbol names carry a hash of the profile's settings, and
//! ThinLTO's local names (`….llvm.N`) differ between profiles even with the same settings.

use std::env;
use std::path::Path;

const ORDER: &str = "link/hot-functions.txt";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // `release` for every profile that inherits it; a test build is linked as it comes.
    if env::var("PROFILE").as_deref() != Ok("release") {
        return;
    }
    println!("cargo:rerun-if-changed={ORDER}");
    println!("cargo:rerun-if-env-changed=WEFT_LINK_MAP");
    if !default_lld() {
        return;
    }
    let order = Path::new(&env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join(ORDER);
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    if let Some(map) = env::var_os("WEFT_LINK_MAP") {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,-Map={}",
            map.to_string_lossy()
        );
    }
}

/// Whether the link is rustc's own lld, the default on x86_64 Linux since Rust 1.90: the only
/// linker known here to read the ordering file. Another linker chosen in the config or the flags
/// links the binary as it comes.
fn default_lld() -> bool {
    let cfg = |key: &str| env::var(format!("CARGO_CFG_TARGET_{key}")).unwrap_or_default();
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    cfg("ARCH") == "x86_64"
        && cfg("OS") == "linux"
        && cfg("ENV") == "gnu"
        && env::var_os("RUSTC_LINKER").is_none()
        && !["linker", "fuse-ld", "link-self-contained"]
            .iter()
            .any(|f| flags.contains(f))
}
