//! No secret in the logs, none in the clear at rest: every log line this test binary's
//! control planes and embedded nodes write (Kiln's own crates at `trace`) is captured, and every
//! secret a suite run used — each API key it presented or was given, each webhook and
//! endpoint secret, each S3 secret key, each signature of a signed URL — is looked for in those
//! logs, in the fleet node's log, and in the embedded default's database files.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Mutex, Once};

use serde_json::Value;

/// Everything logged in this process since [`capture_logs`].
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Send this process's logs to the capture (once; the first test to start does it). Kiln's
/// crates log at `trace`, so what an operator could switch on is checked too.
pub fn capture_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        tracing_subscriber::fmt()
            .with_env_filter(
                "info,kiln_control_plane=trace,kiln_gpu_node=trace,kiln_protocol=trace,sqlx=debug",
            )
            .with_ansi(false)
            .with_writer(|| Capture)
            .init();
    });
}

/// What was logged so far.
pub fn logged() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

/// What a run used: secrets proper (keys, webhook and S3 secrets), and the signatures of signed
/// URLs (derived from the server's signing key, and expiring).
#[derive(Debug, Default, Clone)]
pub struct Used {
    pub secrets: BTreeSet<String>,
    pub signatures: BTreeSet<String>,
}

impl Used {
    /// Both kinds.
    pub fn all(&self) -> BTreeSet<String> {
        self.secrets.union(&self.signatures).cloned().collect()
    }
}

/// Secrets found in a request's or a response's JSON: the string values of fields named as
/// secrets (`key` — an API key, not an object key with a path —, `*secret*`, `token`,
/// `signature`…) and the signatures of signed URLs.
pub fn collect(v: &Value, out: &mut Used) {
    walk(v, "", out)
}

fn walk(v: &Value, field: &str, out: &mut Used) {
    match v {
        Value::Object(m) => m.iter().for_each(|(k, x)| walk(x, k, out)),
        Value::Array(a) => a.iter().for_each(|x| walk(x, field, out)),
        Value::String(s) => {
            let f = field.to_ascii_lowercase();
            let named = f.contains("secret")
                || ["api_key", "apikey", "token", "signature"].contains(&f.as_str())
                || f == "key" && !s.contains('/');
            if named {
                add(s, &mut out.secrets);
            }
            signatures_in(s, &mut out.signatures);
        }
        _ => {}
    }
}

/// The signature of a signed URL: `…signature=<hex>` or `/stream/<id>/<expires>/<hex>/…`.
pub fn signatures_in(s: &str, out: &mut BTreeSet<String>) {
    if let Some((_, rest)) = s.split_once("signature=") {
        add(rest.split(['&', '"', ' ']).next().unwrap_or(""), out);
    }
    if let Some((_, rest)) = s.split_once("/stream/") {
        if let Some(sig) = rest.split('/').nth(2) {
            add(sig, out);
        }
    }
}

/// Add `s` to `out` if it can be a secret: values too short (a fuzzed `"b"`, a test's `"x"`)
/// would match by chance, and none has a space.
pub fn add(s: &str, out: &mut BTreeSet<String>) {
    if s.len() >= 16 && !s.contains(' ') {
        out.insert(s.to_string());
    }
}

/// Panic naming each secret found in `text` (`what` says where).
pub fn assert_absent(secrets: &BTreeSet<String>, text: &str, what: &str) {
    let found: Vec<&String> = secrets
        .iter()
        .filter(|s| text.contains(s.as_str()))
        .collect();
    assert!(
        found.is_empty(),
        "{} of {} secrets appear in {what}: {found:?}",
        found.len(),
        secrets.len()
    );
}

/// The secrets the suite used, checked against this process's logs and `logs` (another
/// process's), and — secrets proper; a signed URL's signature is only as secret as the signing
/// key, which is sealed — against `at_rest` (database files or a dump). `min` guards the check
/// itself: a run that collected fewer secrets than it surely used means the collection broke.
pub fn assert_no_secret_leaked(
    used: &Used,
    logs: &[std::path::PathBuf],
    at_rest: &[std::path::PathBuf],
    min: usize,
) {
    let all = used.all();
    assert!(
        used.secrets.len() >= min && !used.signatures.is_empty(),
        "only {} secrets and {} signatures collected: {used:?}",
        used.secrets.len(),
        used.signatures.len()
    );
    eprintln!(
        "secrets: {} secrets and {} signatures looked for",
        used.secrets.len(),
        used.signatures.len()
    );
    let captured = logged();
    assert!(
        captured.len() > 10_000 && captured.contains("kiln_control_plane"),
        "the log capture saw the run ({} bytes)",
        captured.len()
    );
    assert_absent(&all, &captured, "the control plane's logs");
    let read = |f: &std::path::PathBuf| {
        String::from_utf8_lossy(&std::fs::read(f).unwrap_or_default()).into_owned()
    };
    for f in logs {
        assert_absent(&all, &read(f), &f.display().to_string());
    }
    for f in at_rest {
        assert_absent(&used.secrets, &read(f), &f.display().to_string());
    }
}

#[test]
fn secrets_are_collected_from_fields_and_signed_urls() {
    let mut out = Used::default();
    collect(
        &serde_json::json!({
            "key": "kiln_0123456789abcdef0123",
            "outputS3": {"key": "encoded/long/object/key.mp4"},
            "webhook_secret": "whsec_00112233445566778899",
            "secretAccessKey": "wJalrXUtnFEMI/K7MDENG",
            "accessKeyId": "AKIAIOSFODNN7EXAMPLE",
            "output_key": "jobs/abc/output.mp4",
            "jobs": [{"download_url": "/api/v1/download/j1?expires=1&signature=aaaabbbbccccddddeeee"}],
            "hls_url": "/api/v1/stream/j1/1800000000/ffffeeeeddddccccbbbb/master.m3u8",
            "secret": "short",
        }),
        &mut out,
    );
    let set = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|s| s.to_string()).collect() };
    assert_eq!(
        out.secrets,
        set(&[
            "kiln_0123456789abcdef0123",
            "whsec_00112233445566778899",
            "wJalrXUtnFEMI/K7MDENG",
        ])
    );
    assert_eq!(
        out.signatures,
        set(&["aaaabbbbccccddddeeee", "ffffeeeeddddccccbbbb"])
    );
    let want = out.all();
    let caught =
        std::panic::catch_unwind(|| assert_absent(&want, "x wJalrXUtnFEMI/K7MDENG y", "a log"));
    assert!(caught.is_err(), "a secret in the text is found");
    let _ = writeln!(Capture, "captured");
    assert!(logged().contains("captured"));
}
