//! The tuning harness's spec files (TOML): parsed, expanded into encodes and a baseline
//! chosen, or refused with a message; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../bench/src/tune/spec.rs"]
#[allow(dead_code)]
mod spec;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = spec::Spec::parse(text, std::path::Path::new("/clips")) else {
        return;
    };
    // A spec's size multiplies out (clips × encoders × presets × resolutions × points); the
    // fuzzer's inputs are small, so this stays small too.
    if let Ok(encodes) = spec.expand() {
        let _ = spec.baseline(&encodes);
    }
});
