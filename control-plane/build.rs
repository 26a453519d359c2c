//! sqlx's `migrate!` embeds ../migrations at compile time: a new migration file must rebuild.
//!
//! Builds the web console (`console/`, Vite) into this build's output folder and lists its
//! files for `api/console.rs` to embed, so the binary serves the console with no Node.js at
//! run time. Needs npm at build time (deploy/setup-debian.sh installs it); without npm, or with
//! `KILN_CONSOLE=skip`, the binary is built without the console and `/console` says why. A
//! console that fails to build fails the build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let console = manifest.join("../console");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    println!("cargo:rerun-if-changed=../migrations");
    for p in [
        "src",
        "index.html",
        "package.json",
        "package-lock.json",
        "vite.config.js",
    ] {
        println!("cargo:rerun-if-changed={}", console.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=KILN_CONSOLE");
    let dist = out.join("console");
    let listing = match build(&console, &dist) {
        Ok(()) => assets(&dist),
        Err(why) => {
            println!("cargo:warning=the console is not built into this binary: {why}");
            format!("pub static ASSETS: &[(&str, &[u8])] = &[];\npub static MISSING: Option<&str> = Some({why:?});\n")
        }
    };
    std::fs::write(out.join("console_assets.rs"), listing).expect("writing the asset list");
}

fn build(console: &Path, dist: &Path) -> Result<(), String> {
    if std::env::var("KILN_CONSOLE").as_deref() == Ok("skip") {
        return Err("KILN_CONSOLE=skip was set when it was built".into());
    }
    if Command::new("npm").arg("--version").output().is_err() {
        return Err(
            "npm was not found when it was built (deploy/setup-debian.sh installs it)".into(),
        );
    }
    let installed = console.join("node_modules/.package-lock.json");
    let stale = match (
        std::fs::metadata(&installed).and_then(|m| m.modified()),
        std::fs::metadata(console.join("package-lock.json")).and_then(|m| m.modified()),
    ) {
        (Ok(have), Ok(want)) => have < want,
        _ => true,
    };
    if stale {
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(console));
    }
    run(Command::new("node")
        .args([
            "node_modules/vite/bin/vite.js",
            "build",
            "--logLevel",
            "warn",
        ])
        .env("KILN_CONSOLE_OUT", dist)
        .current_dir(console));
    Ok(())
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "building the console failed: {cmd:?}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `ASSETS`: every built file by its path under `/console/`, included as bytes.
fn assets(dist: &Path) -> String {
    let mut files = Vec::new();
    walk(dist, &mut files);
    files.sort();
    let mut s = String::from("pub static ASSETS: &[(&str, &[u8])] = &[\n");
    for f in &files {
        let rel = f
            .strip_prefix(dist)
            .expect("under dist")
            .to_string_lossy()
            .replace('\\', "/");
        s.push_str(&format!(
            "    ({rel:?}, include_bytes!({:?})),\n",
            f.display().to_string()
        ));
    }
    s.push_str("];\npub static MISSING: Option<&str> = None;\n");
    s
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("the built console").flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, files);
        } else {
            files.push(p);
        }
    }
}
