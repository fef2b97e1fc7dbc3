//! The controlplane and launcher binaries' command-line contract: `--help`
//! works, and unusable configuration exits non-zero with a one-line reason.
//! (Being integration tests, these also make `cargo test --workspace` build
//! the binaries the end-to-end tests start.)

use std::process::Command;

fn run(bin: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin).args(args).output().expect("run binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_describes_the_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_shardgate-controlplane"))
        .arg("--help")
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for flag in [
        "--config-dir",
        "--shm",
        "--status-file",
        "--bind-address",
        "--log-format",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn a_missing_config_dir_is_a_one_line_error() {
    let (ok, err) = run(
        env!("CARGO_BIN_EXE_shardgate-controlplane"),
        &[
            "--config-dir",
            "/nonexistent/dir",
            "--shm",
            "/tmp/unused-segment",
        ],
    );
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/dir"), "{err}");
}

#[test]
fn the_launcher_refuses_a_missing_config_dir() {
    let (ok, err) = run(
        env!("CARGO_BIN_EXE_shardgate"),
        &["run", "--config-dir", "/nonexistent/dir"],
    );
    assert!(!ok);
    assert!(err.contains("is not a directory"), "{err}");
}

#[test]
fn status_without_a_file_says_where_it_looked() {
    let (ok, err) = run(
        env!("CARGO_BIN_EXE_shardgate"),
        &["status", "--status-file", "/nonexistent/status.yaml"],
    );
    assert!(!ok);
    assert!(err.contains("/nonexistent/status.yaml"), "{err}");
}
