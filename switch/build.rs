//! Build script: compile switchd's XDP program (bpf/xdp_fastpath.c) with
//! `clang -O2 -g -target bpf` into OUT_DIR, where
//! `port/afxdp/fastpath.rs` embeds it with `include_bytes!`.
//!
//! Only with the `afxdp` feature. A missing or failing clang fails the
//! build with the reason: an AF_XDP switch without its XDP program would
//! not work, so there is no silent fallback.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=bpf/xdp_fastpath.c");
    println!("cargo:rerun-if-env-changed=BPF_CLANG");
    if std::env::var_os("CARGO_FEATURE_AFXDP").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let obj = out.join("xdp_fastpath.o");
    let clang = std::env::var("BPF_CLANG").unwrap_or_else(|_| "clang".into());
    // The multiarch include dir holds <asm/types.h> for <linux/bpf.h>.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        other => other,
    };
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .args(["-c", "bpf/xdp_fastpath.c", "-o"])
        .arg(&obj)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "compiling switch/bpf/xdp_fastpath.c with `{clang} -target bpf` failed ({s}); \
             it needs libbpf's headers (libbpf-dev) and the kernel's (linux-libc-dev): \
             run scripts/setup.sh"
        ),
        Err(e) => panic!(
            "`{clang}` is needed to compile switchd's XDP program (switch/bpf/xdp_fastpath.c) \
             but could not be run: {e}; install clang (scripts/setup.sh) or set BPF_CLANG"
        ),
    }
}
