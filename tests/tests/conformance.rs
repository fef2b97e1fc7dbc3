//! Gateway API conformance replay (`harness = false`): runs every scenario of
//! `../shared/conformance` whose features Shardgate claims in `conformance.yaml`, one at a
//! time against fresh processes, and prints `PASS name`, `FAIL name: reason` or
//! `SKIP name: reason` per folder, then `N passed, M failed, K skipped`.
//!
//! - Corpus: `$SHARDGATE_CONFORMANCE_DIR`, else `../shared/conformance` beside the workspace.
//!   Missing: a SKIP line (exit 0), or exit 1 when `$CI` is set.
//! - Filter: the first non-flag argument or `$SHARDGATE_CONFORMANCE_FILTER`, a substring of
//!   folder names.
//! - `SHARDGATE_CONFORMANCE_ALL=1` also runs the tests listed under `not_yet_passing` and
//!   says which of them pass now.
//!
//! Exit status 1 when a claimed test fails.

use serde::Deserialize;
use shardgate_tests::conformance::runner::{run_folder, suite_setup, Corpus};
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// `conformance.yaml` at the repository root.
#[derive(Deserialize)]
struct Claims {
    claimed: Vec<String>,
    #[serde(default)]
    not_yet_passing: BTreeMap<String, String>,
}

/// Tests that check the behaviour of an implementation *without* a feature, and so run only
/// when it is not claimed (FEATURES.md: "its absence enables ...", "claiming it turns ...
/// into a no-op"), with that feature.
const ONLY_UNCLAIMED: &[(&str, &str)] = &[
    (
        "tlsroute-listener-terminate-not-supported",
        "TLSRouteModeTerminate",
    ),
    (
        "tlsroute-listener-mixed-termination-not-supported",
        "TLSRouteModeMixed",
    ),
];

/// The pseudo-test checking what the Go suite needs before any test (see `runner`).
const SUITE_SETUP: &str = "suite-setup";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_owned()
}

/// The filter: first argument that is not a flag (cargo's harness flags with a separate
/// value, such as `--test-threads 2`, skip their value too).
fn filter() -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if matches!(
            a.as_str(),
            "--test-threads" | "--skip" | "--format" | "--color" | "-Z" | "--logfile"
        ) {
            args.next();
        } else if !a.starts_with('-') {
            return Some(a);
        }
    }
    std::env::var("SHARDGATE_CONFORMANCE_FILTER")
        .ok()
        .filter(|f| !f.is_empty())
}

/// Runs `f`, turning a panic (the harness panics when processes do not start) into `Err`.
fn guarded(f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic".into());
            Err(format!(
                "harness: {}",
                msg.lines().next().unwrap_or_default()
            ))
        }
    }
}

/// The claimed features listed in the README between the
/// `claimed-features:start` / `:end` markers, first column of each table row,
/// must be exactly `claimed`.
fn readme_table_matches(readme: &Path, claimed: &[String]) -> Result<(), String> {
    let text = std::fs::read_to_string(readme).map_err(|e| format!("{}: {e}", readme.display()))?;
    let start = text
        .find("<!-- claimed-features:start -->")
        .ok_or("README has no claimed-features:start marker")?;
    let end = text
        .find("<!-- claimed-features:end -->")
        .ok_or("README has no claimed-features:end marker")?;
    let mut listed: Vec<String> = text[start..end]
        .lines()
        .filter_map(|l| l.strip_prefix('|'))
        .filter_map(|l| l.split('|').next())
        .map(|c| c.trim().trim_matches('`').to_owned())
        .filter(|c| !c.is_empty() && c != "feature" && !c.starts_with('-'))
        .collect();
    let mut want = claimed.to_vec();
    listed.sort();
    want.sort();
    if listed == want {
        Ok(())
    } else {
        Err(format!(
            "README lists {listed:?}, conformance.yaml claims {want:?}"
        ))
    }
}

fn main() -> ExitCode {
    let root = workspace_root();
    let dir = std::env::var_os("SHARDGATE_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/conformance"));
    if !dir.join("tests").is_dir() {
        if std::env::var_os("CI").is_some() {
            eprintln!(
                "conformance corpus not found at {} (set SHARDGATE_CONFORMANCE_DIR)",
                dir.display()
            );
            return ExitCode::FAILURE;
        }
        println!("SKIP conformance: corpus not found at {}", dir.display());
        println!("0 passed, 0 failed, 1 skipped");
        return ExitCode::SUCCESS;
    }
    let claims_path = root.join("conformance.yaml");
    let claims: Claims = match std::fs::read_to_string(&claims_path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_yaml_ng::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", claims_path.display());
            return ExitCode::FAILURE;
        }
    };
    // The README's feature table is written from conformance.yaml; keep them one list.
    if let Err(e) = readme_table_matches(&root.join("README.md"), &claims.claimed) {
        println!("FAIL readme-feature-table: {e}");
        println!("0 passed, 1 failed, 0 skipped");
        return ExitCode::FAILURE;
    }
    let all = std::env::var("SHARDGATE_CONFORMANCE_ALL").is_ok_and(|v| v == "1");
    let filter = filter();
    let corpus = match Corpus::load(&dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("conformance corpus: {e}");
            return ExitCode::FAILURE;
        }
    };
    let folders = match corpus.folders() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("conformance corpus: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The harness prints child logs itself when a panic unwinds; the default hook's
    // "thread main panicked" lines would only repeat the reason we print.
    std::panic::set_hook(Box::new(|_| {}));

    let started = Instant::now();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let mut stale = Vec::new();
    let names = std::iter::once(SUITE_SETUP.to_owned()).chain(folders.iter().cloned());
    for name in names {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let cases = if name == SUITE_SETUP {
            None
        } else {
            match corpus.cases(&name) {
                Ok(c) => Some(c),
                Err(e) => {
                    println!("FAIL {name}: {e}");
                    failed += 1;
                    continue;
                }
            }
        };
        if let Some(c) = &cases {
            if let Some(f) = c.features.iter().find(|f| !claims.claimed.contains(f)) {
                println!("SKIP {name}: feature not claimed ({f})");
                skipped += 1;
                continue;
            }
            let excluded = ONLY_UNCLAIMED
                .iter()
                .find(|(t, f)| *t == name && claims.claimed.iter().any(|c| c == f));
            if let Some((_, f)) = excluded {
                println!("SKIP {name}: applies only without {f}, which is claimed");
                skipped += 1;
                continue;
            }
        }
        let listed = claims.not_yet_passing.get(&name);
        if let (Some(why), false) = (listed, all) {
            println!("SKIP {name}: not yet passing ({why})");
            skipped += 1;
            continue;
        }
        let attempt = || {
            guarded(|| match &cases {
                None => suite_setup(&corpus),
                Some(c) => run_folder(&corpus, &name, c),
            })
        };
        // One retry with fresh processes absorbs a scheduling hiccup on a
        // loaded 2-core machine; the first failure is still reported, and a
        // second one fails the run.
        let result = attempt().or_else(|first| {
            println!("RETRY {name}: {}", first.replace('\n', " "));
            attempt()
        });
        match result {
            Ok(()) if listed.is_some() => {
                println!("PASS {name} (listed in not_yet_passing: remove it)");
                stale.push(name);
                passed += 1;
            }
            Ok(()) => {
                println!("PASS {name}");
                passed += 1;
            }
            Err(e) => {
                println!("FAIL {name}: {}", e.replace('\n', " "));
                failed += 1;
            }
        }
    }
    for name in claims.not_yet_passing.keys() {
        if name != SUITE_SETUP && !folders.contains(name) {
            eprintln!("note: not_yet_passing names {name}, which is not in the corpus");
        }
    }
    if !stale.is_empty() {
        eprintln!(
            "now passing, remove from not_yet_passing: {}",
            stale.join(", ")
        );
    }
    eprintln!(
        "conformance replay took {:.0}s",
        started.elapsed().as_secs_f64()
    );
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
