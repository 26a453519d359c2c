//! Pre-signed download links: an HMAC-SHA256 of the job id and expiry with the server's
//! signing key, so a link works without an API key until it expires.

use hmac::{Hmac, Mac};
use sha2::Sha256;

fn mac(key: &str, job_id: &str, expires: i64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(format!("{job_id}.{expires}").as_bytes());
    mac
}

/// HMAC-SHA256 of `<job id>.<expires>` (unix seconds) with `key`, hex.
pub fn download_signature(key: &str, job_id: &str, expires: i64) -> String {
    hex::encode(mac(key, job_id, expires).finalize().into_bytes())
}

/// Whether `signature` (hex) is the signature of `job_id` and `expires`, compared in constant
/// time by the `hmac` crate.
pub fn verify_download_signature(key: &str, job_id: &str, expires: i64, signature: &str) -> bool {
    match hex::decode(signature) {
        Ok(bytes) => mac(key, job_id, expires).verify_slice(&bytes).is_ok(),
        Err(_) => false,
    }
}

/// The path of a download link that needs no key, valid until `expires_ms`.
pub fn signed_download_path(key: &str, job_id: &str, expires_ms: i64) -> String {
    let expires = expires_ms / 1000;
    format!(
        "/api/v1/download/{job_id}?expires={expires}&signature={}",
        download_signature(key, job_id, expires)
    )
}

fn stream_mac(key: &str, job_id: &str, expires: i64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(format!("stream.{job_id}.{expires}").as_bytes());
    mac
}

/// HMAC-SHA256 of `stream.<job id>.<expires>`: a streaming link's signature (apart from the
/// download link's, so one cannot stand in for the other).
pub fn stream_signature(key: &str, job_id: &str, expires: i64) -> String {
    hex::encode(stream_mac(key, job_id, expires).finalize().into_bytes())
}

/// Whether `signature` is the streaming signature of `job_id` and `expires`.
pub fn verify_stream_signature(key: &str, job_id: &str, expires: i64, signature: &str) -> bool {
    match hex::decode(signature) {
        Ok(bytes) => stream_mac(key, job_id, expires)
            .verify_slice(&bytes)
            .is_ok(),
        Err(_) => false,
    }
}

/// The path of a ladder's `file` (`master.m3u8`, `manifest.mpd`) that needs no key, valid
/// until `expires_ms`; the files it names resolve under the same signed folder.
pub fn signed_stream_path(key: &str, job_id: &str, expires_ms: i64, file: &str) -> String {
    let expires = expires_ms / 1000;
    format!(
        "/api/v1/stream/{job_id}/{expires}/{}/{file}",
        stream_signature(key, job_id, expires)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_job_and_expiry() {
        let sig = download_signature("k", "job-1", 1_800_000_000);
        assert_eq!(sig.len(), 64);
        assert!(verify_download_signature("k", "job-1", 1_800_000_000, &sig));
        assert!(verify_download_signature(
            "k",
            "job-1",
            1_800_000_000,
            &sig.to_uppercase()
        ));
        assert!(!verify_download_signature(
            "k",
            "job-2",
            1_800_000_000,
            &sig
        ));
        assert!(!verify_download_signature(
            "k",
            "job-1",
            1_800_000_001,
            &sig
        ));
        assert!(!verify_download_signature(
            "other",
            "job-1",
            1_800_000_000,
            &sig
        ));
        let stream = stream_signature("k", "job-1", 1_800_000_000);
        assert!(verify_stream_signature(
            "k",
            "job-1",
            1_800_000_000,
            &stream
        ));
        assert!(!verify_stream_signature("k", "job-1", 1_800_000_000, &sig));
        assert!(!verify_download_signature(
            "k",
            "job-1",
            1_800_000_000,
            &stream
        ));
        assert!(
            signed_stream_path("k", "job-1", 1_800_000_000_000, "master.m3u8")
                .ends_with(&format!("/{stream}/master.m3u8"))
        );
        for bad in ["", "zz", &sig[..62], &format!("{sig}00")] {
            assert!(
                !verify_download_signature("k", "job-1", 1_800_000_000, bad),
                "{bad}"
            );
        }
    }
}
