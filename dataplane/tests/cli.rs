//! The dataplane binary's command-line contract. (Being an integration test,
//! this also makes `cargo test --workspace` build the binary the end-to-end
//! tests start.)

use std::process::Command;

#[test]
fn help_describes_the_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_shardgate-dataplane"))
        .arg("--help")
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for flag in ["--shm", "--workers", "--io-driver", "--admin"] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn bad_flags_exit_non_zero_with_a_reason() {
    let out = Command::new(env!("CARGO_BIN_EXE_shardgate-dataplane"))
        .args(["--shm", "/tmp/x", "--workers", "0"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--workers"), "{err}");
}

#[test]
fn an_unusable_admin_address_is_reported() {
    // Port 1 on loopback needs privileges we may have (CI runs as root), so
    // take a port that is certainly busy instead: one we hold open.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_shardgate-dataplane"))
        .args(["--shm", "/tmp/x", "--workers", "1", "--admin", &addr])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin"), "{err}");
}
