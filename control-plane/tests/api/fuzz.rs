//! Schemathesis (a property-based API fuzzer from PyPI, nobody's here) against the embedded
//! default's published OpenAPI document: every operation, in its examples, coverage, fuzzing
//! and stateful (links) phases, seeded and bounded for CI. Checks: no 5xx, every status, content
//! type, header and body as documented, no answer slower than 20 s. The longer run is the same
//! command with more examples and time (README, "Reliability").
//!
//! The two event streams are left out: an account stream is meant never to end, and a fuzzer
//! waits for a body's end.

use kiln_control_plane::{start, Config};

use crate::prelude::*;
use crate::ONE_AT_A_TIME;

/// `deploy/setup-debian.sh --test` installs it here (or `KILN_SCHEMATHESIS`).
fn schemathesis() -> std::path::PathBuf {
    std::env::var_os("KILN_SCHEMATHESIS")
        .map(Into::into)
        .unwrap_or_else(|| {
            Path::new(&std::env::var("HOME").unwrap()).join(".cache/kiln/tools/schemathesis/bin/st")
        })
}

/// The arguments of one run against `base` (the bounded run here; README's longer run sets
/// `--max-examples` and `--max-time` higher).
pub fn run_args(base: &str, key: &str, seed: u64, examples: u32, max_time: u32) -> Vec<String> {
    [
        "run",
        &format!("{base}/api/v1/openapi.json"),
        "--header",
        &format!("Authorization: Bearer {key}"),
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--exclude-path-regex",
        "events$",
        "--seed",
        &seed.to_string(),
        "--max-examples",
        &examples.to_string(),
        "--max-time",
        &max_time.to_string(),
        "--request-timeout",
        "30",
        "--max-response-time",
        "20",
        // One worker: schemathesis 4.32's parallel generation can trip over itself (a
        // hypothesis-internal error, seen here), and a seeded run should be one sequence.
        "--workers",
        "1",
        "--no-color",
        "--suppress-health-check",
        "all",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schemathesis_finds_no_failure_in_the_published_schema() {
    let _one = ONE_AT_A_TIME.lock().await;
    let st = schemathesis();
    assert!(
        st.exists(),
        "{} is missing; deploy/setup-debian.sh --test installs schemathesis",
        st.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let running = start(Config {
        // Conformance, not the limits (which the suite tests): a fuzzer would spend its run on 429s.
        rate_write_per_min: 1_000_000,
        rate_read_per_min: 1_000_000,
        ..base_config(&dir.path().join("cp"))
    })
    .await
    .unwrap();
    let base = format!("http://{}", running.addr);
    let out = tokio::time::timeout(
        Duration::from_secs(420),
        tokio::process::Command::new(&st)
            .args(run_args(&base, ADMIN, 20261207, 15, 180))
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("schemathesis finished within 7 minutes")
    .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.contains("SUMMARY"))
        .collect();
    eprintln!("{}", summary.join("\n"));
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It ran: operations were tested and cases generated (a run that reached nothing passes
    // vacuously otherwise).
    // "Test cases:" is followed by "  2161 generated, …".
    let generated = stdout
        .lines()
        .find_map(|l| {
            let (n, rest) = l.trim().split_once(' ')?;
            rest.starts_with("generated")
                .then(|| n.parse::<u64>().ok())?
        })
        .unwrap_or(0);
    assert!(
        generated > 500,
        "schemathesis generated {generated} cases:\n{stdout}"
    );
    // The service still serves after it.
    let r = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    running.shutdown().await;
}
