//! Records the commit the binary is built from, for `advps --version` and
//! `advps doctor`: `ADVPS_BUILD_COMMIT` when the build sets it (a package
//! built from a source tarball), else what git says, else `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=ADVPS_BUILD_COMMIT");
    // A new commit (or checkout) appends to HEAD's log: build again then.
    if let Some(log) = git(&[
        "rev-parse",
        "--path-format=absolute",
        "--git-path",
        "logs/HEAD",
    ]) {
        println!("cargo:rerun-if-changed={log}");
    }
    let commit = std::env::var("ADVPS_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let id = git(&["rev-parse", "--short=12", "HEAD"])?;
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            Some(if dirty { format!("{id}-modified") } else { id })
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=ADVPS_COMMIT={commit}");
}
