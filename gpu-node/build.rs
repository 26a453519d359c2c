//! rsmpeg's own build links libavcodec through FFMPEG_DLL_PATH; the rest of FFmpeg is linked
//! dynamically here through pkg-config (static pkg-config linking drags in every private
//! dependency of libavdevice and fails on Debian).
//!
//! libvmaf (quality metrics) is linked statically from the build deploy/setup-debian.sh makes:
//! `$KILN_LIBVMAF_DIR`, else `~/.cache/kiln/tools/libvmaf-2.3.1`.
use std::path::PathBuf;

fn main() {
    for lib in [
        "libavformat",
        "libavfilter",
        "libswscale",
        "libswresample",
        "libavutil",
        "libavcodec",
    ] {
        pkg_config::Config::new()
            .statik(false)
            .probe(lib)
            .unwrap_or_else(|e| panic!("pkg-config could not find {lib}: {e} (install FFmpeg's -dev packages; see README)"));
    }

    println!("cargo:rerun-if-env-changed=KILN_LIBVMAF_DIR");
    let vmaf = std::env::var_os("KILN_LIBVMAF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/kiln/tools/libvmaf-2.3.1")
        });
    let lib = vmaf.join("lib");
    if !lib.join("libvmaf.a").is_file() {
        panic!(
            "libvmaf not found in {} — run deploy/setup-debian.sh (it builds libvmaf 2.3.1 there) \
             or point KILN_LIBVMAF_DIR at a libvmaf 2.3 install prefix",
            lib.display()
        );
    }
    println!("cargo:rerun-if-changed={}", lib.join("libvmaf.a").display());
    // Where the reference `vmaf` CLI of the same build lives (quality::vmaf::reference_cli).
    println!("cargo:rustc-env=KILN_LIBVMAF_PREFIX={}", vmaf.display());
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=static=vmaf");
    // libvmaf's SVM model code is C++.
    println!("cargo:rustc-link-lib=dylib=stdc++");
    println!("cargo:rustc-link-lib=dylib=m");
}
