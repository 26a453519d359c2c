//! Caller-given URLs and S3 locations: the outbound policy never lets a URL through to a
//! private address literal, with credentials in it, or over plain http (the policy here
//! allow-lists nothing); S3 locations parse from JSON and yield keys the store accepts or
//! refuses without panicking.
#![no_main]

use std::net::IpAddr;

use kiln_control_plane::netguard::{is_public, UrlPolicy};
use kiln_control_plane::sources::{destination_folder, destination_key, S3Location};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first line is an allow-list for a second policy; the rest is the URL.
    let (list, raw) = text.split_once('\n').unwrap_or(("", text));
    let strict = UrlPolicy::default();
    if let Ok(url) = strict.check(raw) {
        assert_eq!(url.scheme(), "https", "{raw:?}");
        assert!(
            url.username().is_empty() && url.password().is_none(),
            "{raw:?}"
        );
        match url.host() {
            Some(url::Host::Ipv4(v4)) => assert!(is_public(IpAddr::V4(v4)), "{raw:?} → {url}"),
            Some(url::Host::Ipv6(v6)) => assert!(is_public(IpAddr::V6(v6)), "{raw:?} → {url}"),
            Some(url::Host::Domain(_)) => {}
            None => panic!("{raw:?} passed without a host"),
        }
    }
    if let Ok(policy) = UrlPolicy::parse(list) {
        let _ = policy.check(raw);
    }
    if let Ok(loc) = serde_json::from_str::<S3Location>(text) {
        for key in [
            destination_key(&loc, "0190f3b2-job", "mp4"),
            destination_folder(&loc, "0190f3b2-job"),
        ] {
            let _ = kiln_protocol::storage::validate_key(&key);
        }
    }
});
