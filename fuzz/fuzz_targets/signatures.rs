//! What arrives claiming to be signed or sealed: a signed link's signature (download and
//! stream), a sealed secret. Nothing panics; a forged signature never verifies; a value opens
//! only as what was sealed.
#![no_main]

use kiln_control_plane::sealing::Sealer;
use kiln_control_plane::signing::{
    download_signature, stream_signature, verify_download_signature, verify_stream_signature,
};
use libfuzzer_sys::fuzz_target;

const KEY: &str = "whsec_fuzz_signing_key_0123456789abcdef";

fuzz_target!(|input: (&str, i64, &str, &str)| {
    let (job, expires, signature, sealed) = input;
    let real = download_signature(KEY, job, expires);
    assert_eq!(
        verify_download_signature(KEY, job, expires, signature),
        signature.eq_ignore_ascii_case(&real),
        "{job:?} {expires} {signature:?}"
    );
    assert!(verify_download_signature(KEY, job, expires, &real));
    let real = stream_signature(KEY, job, expires);
    assert_eq!(
        verify_stream_signature(KEY, job, expires, signature),
        signature.eq_ignore_ascii_case(&real),
        "{job:?} {expires} {signature:?}"
    );
    let sealer = Sealer::new(&"ab".repeat(32)).unwrap();
    if let Ok(plain) = sealer.open(sealed, job) {
        // Only a real seal opens: forging one means breaking ChaCha20-Poly1305.
        panic!("{sealed:?} opened as {plain:?} without being sealed");
    }
    let round = sealer.seal(signature, job);
    assert_eq!(sealer.open(&round, job).unwrap(), signature);
});
