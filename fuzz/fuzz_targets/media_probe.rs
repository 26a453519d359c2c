//! The media probe on arbitrary bytes (what a node and the control plane run on every video
//! source): FFmpeg's demuxers through rsmpeg, then Kiln's own reading of what they found
//! (display matrix, sample aspect, bit depth, audio). A file FFmpeg opens gives sizes within
//! its own bounds; one it cannot gives an error.
#![no_main]

use std::io::Write;

use kiln_gpu_node::media;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The probe reads a path, as the pipeline does: a file in memory-backed /dev/shm.
    let path = std::path::PathBuf::from(format!("/dev/shm/kiln-fuzz-probe-{}", std::process::id()));
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(data))
        .expect("write the input");
    if let Ok(info) = media::probe(&path) {
        assert!(info.width > 0 && info.height > 0);
        assert!(info.display_width > 0);
        assert!([0, 90, 180, 270].contains(&info.rotation), "{info:?}");
        assert!(
            info.duration_s >= 0.0 && info.duration_s.is_finite(),
            "{info:?}"
        );
        assert!(info.streams >= 1);
        let (w, h) = info.display_size();
        assert!(w > 0 && h > 0);
        let _ = kiln_protocol::limits::SourceLimits::default().check(&info.shape());
    }
});
