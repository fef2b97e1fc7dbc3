//! Runs one corpus folder against fresh processes: objects in, status checked phase by
//! phase, traffic replayed, extra checks made. Every failure is one specific line.
//!
//! Order, as the Go test runs it: status entries of the steady state (or `initial`), then the
//! TLS/TCP/UDP cases of that phase; then for each `update-N.yaml`/`delete-N.yaml` named by a
//! phase, its `before:` entries and cases, the change, its `after:` entries and cases; then
//! the HTTP cases in order (with their mirror checks), then the gRPC cases; then the weighted
//! distribution and the other multi-request checks. A few folders change objects at points
//! their data does not encode as phases; `special` lists them, taken from their
//! `other_checks`.

use super::cases::{Cases, Helper, HttpCase, StatusEntry, TlsExpect};
use super::objects::{
    endpoint, object_key, parse_stream, str_at, Store, CLASS_NAME, CONTROLLER_NAME,
};
use super::status::{check, StatusView};
use super::{extra, probe, tcp_echo, tls, traffic, udp_echo, websocket};
use crate::{Driver, Echo, Gateway, GatewayOptions};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long status may take to converge (Go allows 60–300 s on a cluster; here every
/// process is local and a snapshot applies in milliseconds).
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);
/// Per HTTP case: 3 consecutive passes within this (Go: 30 s).
const CASE_TIMEOUT: Duration = Duration::from_secs(10);
/// The config directory's one file.
const CONFIG_FILE: &str = "conformance.yaml";

/// The corpus: base manifests and the run-time TLS objects, shared by every folder.
pub struct Corpus {
    pub dir: PathBuf,
    base: Vec<Value>,
    runtime: Vec<Value>,
}

impl Corpus {
    pub fn load(dir: &Path) -> Result<Self, String> {
        let base = read(&dir.join("base/manifests.yaml"))?;
        Ok(Self {
            dir: dir.to_owned(),
            base: parse_stream(&base, "base/manifests.yaml")?,
            runtime: super::certs::runtime().to_vec(),
        })
    }

    /// Test folder names, sorted.
    pub fn folders(&self) -> Result<Vec<String>, String> {
        let tests = self.dir.join("tests");
        let mut names: Vec<String> = std::fs::read_dir(&tests)
            .map_err(|e| format!("{}: {e}", tests.display()))?
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    }

    pub fn cases(&self, folder: &str) -> Result<Cases, String> {
        let text = read(&self.dir.join("tests").join(folder).join("cases.json"))?;
        serde_json::from_str(&text).map_err(|e| format!("cases.json does not parse: {e}"))
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The class under test, created by whoever runs the suite.
fn suite_class() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": { "name": CLASS_NAME },
        "spec": { "controllerName": CONTROLLER_NAME },
    })
}

/// Running processes for one folder.
struct Instance {
    store: Store,
    gw: Gateway,
    _echo: Option<Echo>,
    _logs: tempfile::TempDir,
}

impl Instance {
    fn start(corpus: &Corpus, docs: Vec<Value>, uses_base: bool) -> Result<Self, String> {
        let mut store = Store::default();
        store.apply(suite_class())?;
        if uses_base {
            for d in &corpus.base {
                store.apply(d.clone())?;
            }
        }
        for d in &corpus.runtime {
            store.apply(d.clone())?;
        }
        for d in docs {
            store.apply(d)?;
        }
        let logs = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let mut specs = Vec::new();
        for pod in store.plan_pods() {
            specs.extend(pod.serve_specs(logs.path())?);
        }
        let echo = (!specs.is_empty()).then(|| Echo::start_specs(logs.path(), &specs));
        let gw = Gateway::start_with(
            GatewayOptions::new(Driver::Epoll),
            &[(CONFIG_FILE, store.render())],
        );
        Ok(Self {
            store,
            gw,
            _echo: echo,
            _logs: logs,
        })
    }

    fn write(&self) {
        self.gw.write_config(CONFIG_FILE, &self.store.render());
    }

    /// Polls the status file until every entry holds, for at most [`STATUS_TIMEOUT`]; then
    /// names every entry that still fails (the first three in full).
    fn await_status(&self, entries: &[StatusEntry]) -> Result<(), String> {
        if entries.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + STATUS_TIMEOUT;
        loop {
            let errors = match StatusView::read(&self.gw.status_file) {
                Err(e) => vec![e],
                Ok(view) => entries
                    .iter()
                    .filter_map(|e| {
                        let exact = entries
                            .iter()
                            .filter(|o| {
                                o.helper() == Ok(Helper::ListenersExact)
                                    && o.kind == e.kind
                                    && o.key() == e.key()
                            })
                            .count();
                        check(e, &view, &self.store, exact).err()
                    })
                    .collect(),
            };
            if errors.is_empty() {
                return Ok(());
            }
            if let Some(e) = errors.iter().find(|e| e.starts_with("runner cannot check")) {
                return Err(e.clone());
            }
            if Instant::now() >= deadline {
                let mut distinct: Vec<String> = Vec::new();
                for e in errors {
                    if !distinct.contains(&e) {
                        distinct.push(e);
                    }
                }
                let more = distinct.len().saturating_sub(3);
                distinct.truncate(3);
                let tail = if more > 0 {
                    format!(" (+{more} more)")
                } else {
                    String::new()
                };
                return Err(format!("status: {}{tail}", distinct.join(" | ")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Applies `update-N.yaml` (or removes the object of `delete-N.yaml`) and rewrites the
    /// config; an update must move the object's generation, as the API server's would.
    fn change(&mut self, folder: &Path, file: &str) -> Result<(), String> {
        let docs = parse_stream(&read(&folder.join(file))?, file)?;
        self.store.tick();
        for doc in docs {
            if file.starts_with("delete-") {
                if !self.store.delete(&doc) {
                    return Err(format!("{file}: {} does not exist", object_key(&doc)));
                }
            } else {
                let key = object_key(&doc);
                let before = self.store.apply(doc)?;
                if before.is_some_and(|g| g == self.store.generation_by_key(&key)) {
                    return Err(format!("{file}: changes nothing in {key}'s spec"));
                }
            }
        }
        self.write();
        Ok(())
    }

    /// The Gateway's address and a listener port a TLS, TCP or UDP case names.
    fn l4_addr(&self, gateway: &str, port: Option<u16>) -> Result<SocketAddr, String> {
        let port = port.ok_or_else(|| format!("a case for {gateway} names no listener_port"))?;
        self.addr(gateway, Some(port), "")
    }

    fn addr(&self, gateway: &str, port: Option<u16>, scheme: &str) -> Result<SocketAddr, String> {
        let ip = self
            .store
            .gateway_ip(gateway)
            .ok_or_else(|| format!("no Gateway {gateway} in the manifests"))?;
        let default = if scheme == "https" { 443 } else { 80 };
        Ok(SocketAddr::from((ip, port.unwrap_or(default))))
    }
}

/// What a folder needs beyond its data, from its `other_checks`.
enum Special {
    /// HTTPRouteReferenceGrant deletes this object after the first case.
    DeleteAfterFirstCase(&'static str, &'static str),
    /// HTTPRouteServiceTypes fills `update-1.yaml` with pod addresses after the status checks.
    EndpointSliceTemplate,
    /// HTTPRouteObservedGenerationBump: its status entries hold after `update-1.yaml`.
    UpdateBeforeStatus,
    /// HTTPRouteBackendRequestHeaderModification with weights: the 100-request loop.
    BackendHeaderLoop,
    /// HTTPRouteBackendProtocolWebSocket: the WebSocket round trip through this Gateway's
    /// first listener (port 80).
    WebSocketEcho(&'static str),
}

fn special(folder: &str) -> Option<Special> {
    Some(match folder {
        "httproute-reference-grant" => Special::DeleteAfterFirstCase(
            "ReferenceGrant",
            "gateway-conformance-web-backend/reference-grant",
        ),
        "httproute-service-types" => Special::EndpointSliceTemplate,
        "httproute-observed-generation-bump" => Special::UpdateBeforeStatus,
        "httproute-request-header-modifier-backend-weights" => Special::BackendHeaderLoop,
        "httproute-backend-protocol-websocket" => {
            Special::WebSocketEcho("gateway-conformance-infra/same-namespace")
        }
        _ => return None,
    })
}

/// Status entries for the Go helpers some `other_checks` name but `status` does not
/// encode (only sentences that start with the call; "Implicit: ..." notes do not count).
fn helper_entries(cases: &Cases) -> Vec<StatusEntry> {
    let re = regex::Regex::new(
        r"^(NamespacesMustBeReady|GatewayMustHaveZeroRoutes|HTTPRouteMustHaveNoAcceptedParents|GatewayAndHTTPRoutesMustBeAccepted)\((?:gateway )?([^;),\s]+)",
    )
    .expect("valid regex");
    let mut out = Vec::new();
    for oc in &cases.other_checks {
        let Some(m) = re.captures(oc) else { continue };
        let (kind, assertion) = match &m[1] {
            "NamespacesMustBeReady" => ("Namespace", "namespaces_ready"),
            "GatewayMustHaveZeroRoutes" => ("Gateway", "zero_routes"),
            "HTTPRouteMustHaveNoAcceptedParents" => ("HTTPRoute", "no_accepted_parents"),
            _ => ("Gateway", "address_assigned"),
        };
        out.push(StatusEntry::synthetic(kind, &m[2], assertion, Vec::new()));
    }
    out
}

/// `update-N.yaml`/`delete-N.yaml` in the order phases name them.
fn phase_files(entries: &[StatusEntry]) -> Vec<String> {
    let mut files: Vec<String> = Vec::new();
    for e in entries {
        if let Some(f) = e
            .phase
            .as_deref()
            .and_then(|p| p.split_once(':'))
            .map(|(_, f)| f)
        {
            if !files.iter().any(|x| x == f) {
                files.push(f.to_owned());
            }
        }
    }
    files
}

fn in_phase(entries: &[StatusEntry], phase: Option<&str>) -> Vec<StatusEntry> {
    entries
        .iter()
        .filter(|e| phase_is(phase, e.phase.as_deref()))
        .cloned()
        .collect()
}

/// Whether an entry's `phase` (`got`) is `want`; `None` stands for the steady state, which
/// entries without a phase and `initial` ones belong to.
fn phase_is(want: Option<&str>, got: Option<&str>) -> bool {
    match (want, got) {
        (None, None | Some("initial")) => true,
        (Some(want), Some(got)) => want == got,
        _ => false,
    }
}

/// The TLS, TCP and UDP cases of one phase, in that order. Each passes on its first good
/// attempt within [`CASE_TIMEOUT`] (Go: 30 s); after the first failure (or when `quick`,
/// something having failed already) each case gets one try: the configuration has long
/// converged by then.
fn run_l4_cases(
    inst: &Instance,
    cases: &Cases,
    phase: Option<&str>,
    quick: bool,
) -> Result<(), String> {
    let mut errors: Vec<String> = Vec::new();
    let budget = |errors: &Vec<String>| {
        if quick || !errors.is_empty() {
            Duration::ZERO
        } else {
            CASE_TIMEOUT
        }
    };
    for (i, case) in cases.tls_cases.iter().enumerate() {
        if !phase_is(phase, case.phase.as_deref()) {
            continue;
        }
        let result = inst
            .l4_addr(&case.gateway, case.listener_port)
            .and_then(|addr| match case.expect {
                TlsExpect::ConnectionRejected => probe::poll(budget(&errors), |t| {
                    tls::expect_rejection(addr, &case.sni, t)
                })
                .map_err(|e| format!("want the connection rejected, last: {e}")),
                TlsExpect::TcpEchoOverTls => {
                    tcp_echo::run_tls_echo_case(case, addr, budget(&errors))
                }
                TlsExpect::Unknown => Err("runner cannot check: this tls expectation".into()),
            });
        if let Err(e) = result {
            errors.push(format!("tls case {i}: {e}"));
        }
    }
    for (i, case) in cases.tcp_cases.iter().enumerate() {
        if !phase_is(phase, case.phase.as_deref()) {
            continue;
        }
        let result = inst
            .l4_addr(&case.gateway, case.listener_port)
            .and_then(|addr| tcp_echo::run_tcp_case(case, addr, budget(&errors)));
        if let Err(e) = result {
            errors.push(format!("tcp case {i}: {e}"));
        }
    }
    for (i, case) in cases.udp_cases.iter().enumerate() {
        if !phase_is(phase, case.phase.as_deref()) {
            continue;
        }
        let result = inst
            .l4_addr(&case.gateway, case.listener_port)
            .and_then(|addr| udp_echo::run_udp_case(case, addr, budget(&errors)));
        if let Err(e) = result {
            errors.push(format!("udp case {i}: {e}"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// The pseudo-test `suite-setup`: what the Go suite requires before any test, with the
/// base manifests alone — our GatewayClass Accepted and the three namespaces ready.
pub fn suite_setup(corpus: &Corpus) -> Result<(), String> {
    let inst = Instance::start(corpus, Vec::new(), true)?;
    let accepted = super::cases::Cond {
        kind: "Accepted".into(),
        status: Some("True".into()),
        reason: None,
    };
    let mut entries = vec![StatusEntry::synthetic(
        "GatewayClass",
        CLASS_NAME,
        "gateway_conditions",
        vec![accepted],
    )];
    for ns in [
        "gateway-conformance-infra",
        "gateway-conformance-app-backend",
        "gateway-conformance-web-backend",
    ] {
        entries.push(StatusEntry::synthetic(
            "Namespace",
            ns,
            "namespaces_ready",
            Vec::new(),
        ));
    }
    inst.await_status(&entries)
}

/// Runs one folder; `Err` is the one-line reason.
pub fn run_folder(corpus: &Corpus, folder: &str, cases: &Cases) -> Result<(), String> {
    let special = special(folder);
    let dir = corpus.dir.join("tests").join(folder);
    let docs = parse_stream(&read(&dir.join("manifests.yaml"))?, "manifests.yaml")?;
    let mut inst = Instance::start(corpus, docs, cases.uses_base)?;

    let mut entries = cases.status.clone();
    entries.extend(helper_entries(cases));
    // Go stops at the first failure; the runner goes on (traffic with one short try per
    // case) so that the line tells everything that is missing, status and traffic alike.
    let mut failures: Vec<String> = Vec::new();
    let note = |failures: &mut Vec<String>, r: Result<(), String>| {
        if let Err(e) = r {
            failures.push(e);
        }
    };

    if let Some(Special::UpdateBeforeStatus) = &special {
        // Go reads the route's generation, checks its conditions are current, patches it,
        // and then expects the entries (and fresh conditions) at the new generation.
        let mut latest = entries
            .iter()
            .find(|e| e.kind == "HTTPRoute")
            .cloned()
            .ok_or("no route entry to bump")?;
        latest.assertion = Some("latest_observed_generation".into());
        // Step (1) of its sequence, which starts mid-sentence and so is not picked up by
        // `helper_entries`.
        let ns = latest.namespace.clone().unwrap_or_default();
        let ready = StatusEntry::synthetic("Namespace", &ns, "namespaces_ready", Vec::new());
        note(
            &mut failures,
            inst.await_status(&[ready, latest.clone()])
                .map_err(|e| format!("before update-1.yaml: {e}")),
        );
        inst.change(&dir, "update-1.yaml")?;
        entries.push(latest);
    }
    // TLS/TCP/UDP cases run in their phase, after its status entries (HTTP cases carry no
    // phases in this corpus).
    note(&mut failures, inst.await_status(&in_phase(&entries, None)));
    let quick = !failures.is_empty();
    note(&mut failures, run_l4_cases(&inst, cases, None, quick));
    for file in phase_files(&entries) {
        let before = format!("before:{file}");
        note(
            &mut failures,
            inst.await_status(&in_phase(&entries, Some(&before)))
                .map_err(|e| format!("before {file}: {e}")),
        );
        let quick = !failures.is_empty();
        note(
            &mut failures,
            run_l4_cases(&inst, cases, Some(&before), quick)
                .map_err(|e| format!("before {file}: {e}")),
        );
        inst.change(&dir, &file)?;
        let after = format!("after:{file}");
        note(
            &mut failures,
            inst.await_status(&in_phase(&entries, Some(&after)))
                .map_err(|e| format!("after {file}: {e}")),
        );
        let quick = !failures.is_empty();
        note(
            &mut failures,
            run_l4_cases(&inst, cases, Some(&after), quick)
                .map_err(|e| format!("after {file}: {e}")),
        );
    }
    if let Some(Special::EndpointSliceTemplate) = &special {
        fill_endpoint_template(&mut inst, &dir)?;
    }

    let status_failed = !failures.is_empty();
    let mut note = |r: Result<(), String>| {
        if let Err(e) = r {
            failures.push(e);
        }
    };
    note(run_http_cases(&mut inst, cases, &special, status_failed));
    note(super::grpc::run_cases(
        &cases.grpc_cases,
        |gateway, port| inst.addr(gateway, port, "http"),
        if status_failed {
            Duration::ZERO
        } else {
            CASE_TIMEOUT
        },
    ));
    if let Some(w) = cases
        .weighted_distribution
        .iter()
        .find(|w| w.protocol.is_some())
    {
        note(
            inst.l4_addr(&w.gateway, w.listener_port)
                .and_then(|addr| extra::weighted_l4(w, addr)),
        );
    } else if let Some(w) = &cases.weighted_distribution {
        let scheme = w.request["scheme"].as_str().unwrap_or("http");
        let path = w.request["path"].as_str().unwrap_or("/");
        let case = cases
            .http_cases
            .iter()
            .find(|c| c.gateway == w.gateway && c.request.path == path);
        note(
            inst.addr(&w.gateway, w.listener_port, scheme)
                .and_then(|addr| extra::weighted(w, case, addr)),
        );
    }
    if let Some(Special::BackendHeaderLoop) = &special {
        let case = cases.http_cases.first().ok_or("no http case to loop on")?;
        note(
            inst.addr(&case.gateway, case.listener_port, &case.request.scheme)
                .and_then(|addr| extra::backend_header_loop(case, addr)),
        );
    }
    if let Some(Special::WebSocketEcho(gateway)) = &special {
        // Go's origin: `ws://gateway/<test name>`.
        let origin = format!("ws://gateway/{}", cases.short_name);
        let budget = if status_failed {
            Duration::ZERO
        } else {
            CASE_TIMEOUT
        };
        note(
            inst.addr(gateway, Some(80), "http")
                .and_then(|addr| websocket::converge(addr, &origin, budget)),
        );
    }
    for case in cases
        .http_cases
        .iter()
        .filter(|c| c.mirrored_to.iter().any(|m| m.percent.is_some()))
    {
        note(
            inst.addr(&case.gateway, case.listener_port, &case.request.scheme)
                .and_then(|addr| extra::percentage_mirror(case, inst.store.pods(), addr)),
        );
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// The HTTP cases in order. After the first failure (or when `quick`, the status having
/// failed already) each case gets one short try: the configuration has long converged.
fn run_http_cases(
    inst: &mut Instance,
    cases: &Cases,
    special: &Option<Special>,
    quick: bool,
) -> Result<(), String> {
    let mut first_error: Option<String> = None;
    let mut also = Vec::new();
    for (i, case) in cases.http_cases.iter().enumerate() {
        if i == 1 {
            if let Some(Special::DeleteAfterFirstCase(kind, key)) = special {
                let (ns, name) = key.split_once('/').unwrap_or_default();
                let doc = json!({"kind": kind, "metadata": {"namespace": ns, "name": name}});
                if !inst.store.delete(&doc) {
                    return Err(format!("cannot delete {kind} {key}: not in the manifests"));
                }
                inst.write();
            }
        }
        let budget = if quick || first_error.is_some() {
            Duration::ZERO
        } else {
            CASE_TIMEOUT
        };
        match run_case(inst, case, budget) {
            Ok(()) => {}
            Err(e) if first_error.is_none() => first_error = Some(format!("case {i}: {e}")),
            Err(_) => also.push(i.to_string()),
        }
    }
    match first_error {
        None => Ok(()),
        Some(e) if also.is_empty() => Err(e),
        Some(e) => Err(format!("{e} (cases {} fail too)", also.join(", "))),
    }
}

fn run_case(inst: &Instance, case: &HttpCase, budget: Duration) -> Result<(), String> {
    let addr = inst.addr(&case.gateway, case.listener_port, &case.request.scheme)?;
    // Mirror checks look for one request id; retries of other cases get a fresh id each
    // (the retry simulator counts attempts per id).
    let mirrored = case.mirrored_to.iter().any(|m| m.percent.is_none());
    let fixed = mirrored.then(|| uuid::Uuid::new_v4().to_string());
    let uuid = traffic::converge(case, addr, budget, fixed.as_deref())?;
    if mirrored {
        let target = case.request.path.replace("{uuid}", &uuid);
        extra::expect_mirrored(inst.store.pods(), &case.mirrored_to, &target)?;
    }
    Ok(())
}

/// HTTPRouteServiceTypes' patch: each IPv4 EndpointSlice of `update-1.yaml` gets the
/// infra-backend-v1 pods as endpoints; the IPv6 ones stay as they are (no pod has IPv6).
fn fill_endpoint_template(inst: &mut Instance, dir: &Path) -> Result<(), String> {
    let docs = parse_stream(&read(&dir.join("update-1.yaml"))?, "update-1.yaml")?;
    let endpoints: Vec<Value> = inst
        .store
        .pods()
        .iter()
        .filter(|p| p.deployment == "infra-backend-v1")
        .map(endpoint)
        .collect();
    for mut doc in docs {
        if str_at(&doc, &["addressType"]) != "IPv4" {
            continue;
        }
        doc["endpoints"] = Value::Array(endpoints.clone());
        inst.store.apply(doc)?;
    }
    inst.write();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cases(json: &str) -> Cases {
        serde_json::from_str(json).expect("test cases parse")
    }

    #[test]
    fn helper_calls_that_open_an_other_check_become_status_entries() {
        let c = cases(
            r#"{"short_name": "x", "other_checks": [
                "GatewayMustHaveZeroRoutes(gateway-conformance-infra/same-namespace): Gateway status...",
                "HTTPRouteMustHaveNoAcceptedParents(ns/route): route status.parents must be empty",
                "GatewayAndHTTPRoutesMustBeAccepted(gateway ns/gw; routes: ns/r): the Gateway must...",
                "Implicit: any test that calls NamespacesMustBeReady(gateway-conformance-infra) needs..."
            ]}"#,
        );
        let got: Vec<(String, String, Option<String>)> = helper_entries(&c)
            .into_iter()
            .map(|e| (e.kind.clone(), e.key(), e.assertion))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "Gateway".into(),
                    "gateway-conformance-infra/same-namespace".into(),
                    Some("zero_routes".into())
                ),
                (
                    "HTTPRoute".into(),
                    "ns/route".into(),
                    Some("no_accepted_parents".into())
                ),
                (
                    "Gateway".into(),
                    "ns/gw".into(),
                    Some("address_assigned".into())
                ),
            ]
        );
    }

    #[test]
    fn phases_run_in_the_order_they_are_named() {
        let c = cases(
            r#"{"short_name": "x", "status": [
                {"kind": "Namespace", "name": "a", "assertion": "namespaces_ready", "phase": "initial"},
                {"kind": "Namespace", "name": "a", "assertion": "namespaces_ready", "phase": "after:update-1.yaml"},
                {"kind": "Namespace", "name": "a", "assertion": "namespaces_ready", "phase": "before:update-2.yaml"},
                {"kind": "Namespace", "name": "a", "assertion": "namespaces_ready"}
            ]}"#,
        );
        assert_eq!(phase_files(&c.status), ["update-1.yaml", "update-2.yaml"]);
        assert_eq!(in_phase(&c.status, None).len(), 2);
        assert_eq!(in_phase(&c.status, Some("before:update-2.yaml")).len(), 1);
    }
}
