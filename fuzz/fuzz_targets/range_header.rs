//! `Range` headers against objects of every size: a range served is never empty and never
//! reaches past the object; a header Kiln does not serve means the whole object.
#![no_main]

use kiln_control_plane::api::native::download::parse_range;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u64, &[u8])| {
    let (size, header) = input;
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    if let Ok(Some(r)) = parse_range(Some(header), size) {
        assert!(r.start < r.end, "{header:?} of {size}: {r:?}");
        assert!(r.end <= size, "{header:?} of {size}: {r:?}");
    }
    assert_eq!(parse_range(None, size), Ok(None));
});
