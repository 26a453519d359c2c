//! rsmpeg's own build links libavcodec through FFMPEG_DLL_PATH; the rest of FFmpeg is linked
//! dynamically here through pkg-config (static pkg-config linking drags in every private
//! dependency of libavdevice and fails on Debian).
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
}
