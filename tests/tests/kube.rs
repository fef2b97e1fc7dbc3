//! Kubernetes mode end to end: the real controlplane (`--kube --kubeconfig`)
//! against the in-process API stand-in ([`shardgate_tests::kubeapi`]), the
//! real dataplane and echo backends on loopback.

use serde_json::Value;
use shardgate_tests::client::one_shot;
use shardgate_tests::config;
use shardgate_tests::kubeapi::{KubeApi, Recorded};
use shardgate_tests::{bin, eventually, free_port, http_get, unique_ip, Echo, Proc};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);
const LEASE_NS: &str = "shardgate-system";

/// The stand-in API, an echo backend and the objects of one Gateway with one
/// HTTPRoute.
struct Cluster {
    api: KubeApi,
    kubeconfig: PathBuf,
    echo: Echo,
    ip: Ipv4Addr,
    port: u16,
    dir: tempfile::TempDir,
}

/// One ingress node: a controlplane, and optionally a dataplane, on a
/// segment of their own.
struct Node {
    cp: Proc,
    cp_admin: SocketAddr,
    /// Kept for its lifetime: the node's dataplane and its admin address.
    _dp: Option<(Proc, SocketAddr)>,
    shm: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.shm);
        let _ = std::fs::remove_file(shardgate_core::shm::lock_path(&self.shm));
    }
}

fn objects(c: &Cluster, extra_rules: &str) -> String {
    let pod = c.echo.pod("web-1");
    config::stream(&[
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n".to_owned(),
        format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {LEASE_NS}\n"),
        config::gateway_class(),
        config::gateway("apps", "gw", c.ip, &[("http", c.port, None)]),
        config::service("apps", "web", &[pod]),
        config::http_route(
            "apps",
            "web",
            "gw",
            &["web.example"],
            &format!("  - backendRefs:\n    - name: web\n      port: 80\n{extra_rules}"),
        ),
    ])
}

impl Cluster {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let api = KubeApi::start();
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig);
        let ip = unique_ip();
        let echo = Echo::start(dir.path(), ip, &[("web-1", "apps")]);
        let port = free_port(ip);
        let c = Self {
            api,
            kubeconfig,
            echo,
            ip,
            port,
            dir,
        };
        c.api.apply_yaml(&objects(&c, ""));
        c
    }

    fn gateway(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.port))
    }

    fn node(&self, identity: &str, with_dataplane: bool) -> Node {
        let shm = PathBuf::from(format!(
            "/dev/shm/shardgate-kube-test-{}-{identity}-{}",
            std::process::id(),
            self.port
        ));
        let admin_ip = unique_ip();
        let cp_admin = SocketAddr::from((admin_ip, free_port(admin_ip)));
        let mut cp = Command::new(bin("shardgate-controlplane"));
        cp.arg("--kube")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--shm")
            .arg(&shm)
            .args(["--admin", &cp_admin.to_string()])
            .args(["--identity", identity, "--lease-namespace", LEASE_NS])
            .args(["--lease-duration-secs", "2", "--renew-deadline-secs", "1"])
            .args(["--lease-retry-ms", "200", "--api-probe-ms", "300"])
            .args(["--bind-address", "127.0.0.1", "--log-level", "info"]);
        let log = self.dir.path().join(format!("controlplane-{identity}.log"));
        let cp = Proc::spawn("shardgate-controlplane", cp, log);
        let dp = with_dataplane.then(|| {
            let admin = SocketAddr::from((admin_ip, free_port(admin_ip)));
            let mut dp = Command::new(bin("shardgate-dataplane"));
            dp.arg("--shm")
                .arg(&shm)
                .args(["--workers", "2", "--admin", &admin.to_string()]);
            let log = self.dir.path().join(format!("dataplane-{identity}.log"));
            (Proc::spawn("shardgate-dataplane", dp, log), admin)
        });
        Node {
            cp,
            cp_admin,
            _dp: dp,
            shm,
        }
    }

    fn route_status(&self) -> Value {
        self.route_status_of("web")
    }

    fn route_status_of(&self, name: &str) -> Value {
        self.api
            .get("HTTPRoute", Some("apps"), name)
            .map(|r| r["status"].clone())
            .unwrap_or(Value::Null)
    }

    /// Waits until route `name` has a parent with Accepted=True.
    fn wait_accepted(&self, name: &str, what: &str) {
        eventually(what, WAIT, || {
            let s = self.route_status_of(name);
            if accepted(&s) {
                Ok(())
            } else {
                Err(s.to_string())
            }
        });
    }

    fn lease_holder(&self) -> Option<String> {
        self.api
            .get("Lease", Some(LEASE_NS), "shardgate-controlplane")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
    }
}

impl Node {
    fn status(&self) -> Value {
        http_get(self.cp_admin, "/status")
            .ok()
            .and_then(|(_, b)| serde_json::from_str(&b).ok())
            .unwrap_or(Value::Null)
    }

    fn status_writes(&self) -> u64 {
        let (_, text) = http_get(self.cp_admin, "/metrics").unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("shardgate_controlplane_status_writes_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    fn wait_serving(&mut self, c: &Cluster, path: &str, want: u16) {
        let cp_log = self.cp.log();
        eventually(&format!("{path} answers {want}"), WAIT, || {
            if !self.cp.running() {
                panic!("controlplane exited:\n{cp_log}");
            }
            match one_shot(c.gateway(), "web.example", path) {
                Ok(r) if r.status == want => Ok(()),
                Ok(r) => Err(format!("status {}", r.status)),
                Err(e) => Err(e.to_string()),
            }
        });
    }
}

/// A background client sending requests until stopped; counts failures.
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Traffic {
    fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (s, o, f) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        let thread = std::thread::spawn(move || {
            let mut errors = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match one_shot(addr, "web.example", "/") {
                    Ok(r) if r.status == 200 => {
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        f.fetch_add(1, Ordering::Relaxed);
                        if errors.len() < 5 {
                            errors.push(format!("{:?}", other.map(|r| r.status)));
                        }
                    }
                }
            }
            errors
        });
        Self {
            stop,
            ok,
            failed,
            thread: Some(thread),
        }
    }

    /// Stops and returns (ok, failed, first errors).
    fn finish(mut self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let errors = self
            .thread
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

/// Removes `lastTransitionTime` everywhere: the only field that legitimately
/// differs between two runs of the same translation.
fn without_times(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| k.as_str() != "lastTransitionTime")
                .map(|(k, v)| (k.clone(), without_times(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_times).collect()),
        other => other.clone(),
    }
}

fn accepted(status: &Value) -> bool {
    status["parents"].as_array().is_some_and(|ps| {
        ps.iter().any(|p| {
            p["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Accepted" && c["status"] == "True")
            })
        })
    })
}

/// The status standalone mode computes for the same objects.
fn standalone_status(c: &Cluster, yaml: &str) -> Vec<Value> {
    let dir = c.dir.path().join("standalone");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("objects.yaml"), yaml).expect("write");
    let status_file = c.dir.path().join("standalone-status.yaml");
    let shm = c.dir.path().join("standalone-segment");
    let mut cmd = Command::new(bin("shardgate-controlplane"));
    cmd.arg("--config-dir")
        .arg(&dir)
        .arg("--shm")
        .arg(&shm)
        .arg("--status-file")
        .arg(&status_file)
        .args(["--bind-address", "127.0.0.1"]);
    let mut p = Proc::spawn("standalone", cmd, c.dir.path().join("standalone.log"));
    let text = eventually("standalone status file", WAIT, || {
        std::fs::read_to_string(&status_file).map_err(|e| e.to_string())
    });
    p.signal("KILL");
    p.wait_exit(Duration::from_secs(5));
    text.split("\n---")
        .filter_map(|d| serde_yaml_ng::from_str::<Value>(d.trim_start_matches("---")).ok())
        .filter(|d| d.is_object())
        .collect()
}

#[test]
fn objects_from_the_api_serve_traffic_and_status_matches_standalone_mode() {
    let c = Cluster::start();
    // The experimental UDPRoute CRD is often missing: that must not block.
    c.api.set_installed("UDPRoute", false);
    let mut node = c.node("node-a", true);
    node.wait_serving(&c, "/", 200);
    let r = one_shot(c.gateway(), "web.example", "/").expect("response");
    assert_eq!(r.pod(), "web-1");

    // Status written back by the leader equals what standalone mode computes.
    c.wait_accepted("web", "route status Accepted");
    let expected = standalone_status(&c, &objects(&c, ""));
    assert!(
        expected.len() >= 3,
        "class, gateway and route: {expected:?}"
    );
    for doc in &expected {
        let kind = doc["kind"].as_str().expect("kind");
        let ns = doc["metadata"]["namespace"].as_str();
        let name = doc["metadata"]["name"].as_str().expect("name");
        eventually(&format!("{kind} {name} status as standalone"), WAIT, || {
            let got = c.api.get(kind, ns, name).map(|o| o["status"].clone());
            let got = without_times(&got.unwrap_or(Value::Null));
            let want = without_times(&doc["status"]);
            // Route status holds only parents; the class and Gateway hold
            // everything we compute.
            let matches = match want.as_object() {
                Some(fields) => fields.iter().all(|(k, v)| got[k] == *v),
                None => false,
            };
            if matches {
                Ok(())
            } else {
                Err(format!("got {got}\nwant {want}"))
            }
        });
    }

    // A change through the API becomes a route.
    c.api.apply_yaml(&objects(
        &c,
        "  - matches:\n    - path:\n        type: PathPrefix\n        value: /gone\n    filters:\n    - type: RequestRedirect\n      requestRedirect:\n        statusCode: 301\n        hostname: elsewhere.example\n",
    ));
    node.wait_serving(&c, "/gone", 301);
    // Deleting the route removes it.
    c.api.delete("HTTPRoute", Some("apps"), "web");
    node.wait_serving(&c, "/", 404);

    // No status write when nothing changed: once the Gateway's status shows
    // the deletion, a watch restart and an unrelated object make the
    // controlplane translate again, and it writes nothing.
    eventually("Gateway status counts no route", WAIT, || {
        let g = c
            .api
            .get("Gateway", Some("apps"), "gw")
            .unwrap_or(Value::Null);
        match g["status"]["listeners"][0]["attachedRoutes"].as_u64() {
            Some(0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let writes = node.status_writes();
    c.api.drop_watches();
    c.api
        .apply_yaml("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: unrelated\n");
    eventually("the new Namespace is translated", WAIT, || {
        let (_, m) = http_get(node.cp_admin, "/metrics")?;
        if m.contains("shardgate_controlplane_objects{kind=\"Namespace\"} 3") {
            Ok(())
        } else {
            Err("Namespace count not 3 yet".to_owned())
        }
    });
    assert_eq!(
        node.status_writes(),
        writes,
        "nothing changed, nothing written"
    );
    drop(node);
}

#[test]
fn gone_dropped_watches_and_api_outages_recover_without_a_serving_gap() {
    let c = Cluster::start();
    let mut node = c.node("node-a", true);
    node.wait_serving(&c, "/", 200);
    let traffic = Traffic::start(c.gateway());

    // 410 Gone: every watch must re-list.
    let lists_before = count(&c.api.requests(), "list");
    c.api.expire_watches();
    eventually("re-list after 410", WAIT, || {
        let lists = count(&c.api.requests(), "list");
        if lists >= lists_before + 11 {
            Ok(())
        } else {
            Err(format!("{lists} lists, {lists_before} before"))
        }
    });
    c.api.apply_yaml(&objects(
        &c,
        "  - matches:\n    - path:\n        type: PathPrefix\n        value: /after-gone\n    filters:\n    - type: RequestRedirect\n      requestRedirect:\n        statusCode: 302\n",
    ));
    node.wait_serving(&c, "/after-gone", 302);

    // A dropped watch resumes from its resourceVersion.
    c.api.drop_watches();
    c.api.apply_yaml(&objects(
        &c,
        "  - matches:\n    - path:\n        type: PathPrefix\n        value: /after-drop\n    filters:\n    - type: RequestRedirect\n      requestRedirect:\n        statusCode: 307\n",
    ));
    node.wait_serving(&c, "/after-drop", 307);

    // An overloaded API (503 to everything: kube-rs retries those itself)
    // and then an unreachable one (connections refused, open watches cut):
    // the last snapshot keeps serving, and the controlplane says the API is
    // unreachable.
    c.api.set_available(false);
    eventually(
        "controlplane reports the API unreachable (503)",
        WAIT,
        || {
            let s = node.status();
            if s["api_reachable"] == false {
                Ok(())
            } else {
                Err(s.to_string())
            }
        },
    );
    c.api.set_available(true);
    c.api.set_reachable(false);
    eventually(
        "controlplane reports the API unreachable (refused)",
        WAIT,
        || {
            let s = node.status();
            let refused = s["last_api_error"]
                .as_str()
                .is_some_and(|e| !e.contains("timed out"));
            if s["api_reachable"] == false && s["api_unreachable_since"].is_u64() && refused {
                Ok(())
            } else {
                Err(s.to_string())
            }
        },
    );
    let (_, metrics) = http_get(node.cp_admin, "/metrics").expect("metrics");
    assert!(
        metrics.contains("shardgate_controlplane_api_reachable 0"),
        "{metrics}"
    );
    node.wait_serving(&c, "/after-drop", 307);
    c.api.set_reachable(true);
    c.api.apply_yaml(&objects(
        &c,
        "  - matches:\n    - path:\n        type: PathPrefix\n        value: /after-outage\n    filters:\n    - type: RequestRedirect\n      requestRedirect:\n        statusCode: 308\n",
    ));
    // The watchers back off up to 30 s between retries; allow for it.
    eventually(
        "change after the outage applies",
        Duration::from_secs(45),
        || match one_shot(c.gateway(), "web.example", "/after-outage") {
            Ok(r) if r.status == 308 => Ok(()),
            other => Err(format!("{:?}", other.map(|r| r.status))),
        },
    );
    eventually("controlplane reports the API reachable", WAIT, || {
        let s = node.status();
        if s["api_reachable"] == true {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    let (ok, failed, errors) = traffic.finish();
    assert!(ok > 0, "the client ran");
    assert_eq!(failed, 0, "no request failed ({ok} ok): {errors:?}");
}

fn count(requests: &[Recorded], verb: &str) -> usize {
    requests.iter().filter(|r| r.verb == verb).count()
}

#[test]
fn only_the_lease_holder_writes_status_and_a_successor_takes_over() {
    let c = Cluster::start();
    let mut a = c.node("node-a", true);
    a.wait_serving(&c, "/", 200);
    eventually("node-a holds the Lease", WAIT, || match c.lease_holder() {
        Some(h) if h == "node-a" => Ok(()),
        other => Err(format!("{other:?}")),
    });
    let b = c.node("node-b", false);
    eventually("node-b published its own snapshot", WAIT, || {
        let s = b.status();
        if s["published"] == true {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    c.wait_accepted("web", "route status written");
    assert_eq!(a.status()["leader"], true);
    assert_eq!(b.status()["leader"], false);
    assert!(a.status_writes() > 0, "the leader wrote status");
    assert_eq!(b.status_writes(), 0, "the follower never writes status");

    // The leader stops renewing (frozen, not stopped: it cannot release).
    a.cp.signal("STOP");
    eventually("node-b takes the Lease over", WAIT, || {
        match c.lease_holder() {
            Some(h) if h == "node-b" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    eventually("node-b leads", WAIT, || {
        if b.status()["leader"] == true {
            Ok(())
        } else {
            Err(b.status().to_string())
        }
    });
    // A change that needs new status: a second route, written by node-b.
    c.api.apply_yaml(&config::http_route(
        "apps",
        "second",
        "gw",
        &["second.example"],
        "  - backendRefs:\n    - name: web\n      port: 80\n",
    ));
    c.wait_accepted("second", "the successor writes status");
    assert!(b.status_writes() > 0);
    // The old leader wakes up: its renewal is long past its deadline, so it
    // writes nothing, and it does not get the Lease back.
    a.cp.signal("CONT");
    eventually("the old leader answers again", WAIT, || {
        http_get(a.cp_admin, "/healthz").map(|_| ())
    });
    let a_writes = a.status_writes();
    c.api.apply_yaml(&config::http_route(
        "apps",
        "third",
        "gw",
        &["third.example"],
        "  - backendRefs:\n    - name: web\n      port: 80\n",
    ));
    c.wait_accepted("third", "third route status written by node-b");
    // node-a also serves the third route from its own snapshot...
    a.wait_serving_host(&c, "third.example");
    // ...without writing status.
    assert_eq!(a.status_writes(), a_writes, "the old leader wrote status");
    assert_eq!(c.lease_holder().as_deref(), Some("node-b"));
    assert_eq!(a.status()["leader"], false);
}

impl Node {
    fn wait_serving_host(&mut self, c: &Cluster, host: &str) {
        eventually(&format!("{host} served"), WAIT, || {
            match one_shot(c.gateway(), host, "/") {
                Ok(r) if r.status == 200 => Ok(()),
                other => Err(format!("{:?}", other.map(|r| r.status))),
            }
        });
    }
}

/// One RBAC rule.
struct Rule {
    groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    names: Vec<String>,
    namespace: Option<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn rbac_rules(path: &Path) -> Vec<Rule> {
    let text = std::fs::read_to_string(path).expect("rbac.yaml");
    let mut rules = Vec::new();
    for doc in text.split("\n---") {
        let Ok(v) = serde_yaml_ng::from_str::<Value>(doc) else {
            continue;
        };
        let namespace = match v["kind"].as_str() {
            Some("ClusterRole") => None,
            Some("Role") => v["metadata"]["namespace"].as_str().map(str::to_owned),
            _ => continue,
        };
        for r in v["rules"].as_array().into_iter().flatten() {
            rules.push(Rule {
                groups: strings(&r["apiGroups"]),
                resources: strings(&r["resources"]),
                verbs: strings(&r["verbs"]),
                names: strings(&r["resourceNames"]),
                namespace: namespace.clone(),
            });
        }
    }
    rules
}

fn allowed(rules: &[Rule], r: &Recorded) -> bool {
    let resource = match &r.subresource {
        Some(sub) => format!("{}/{sub}", r.resource),
        None => r.resource.clone(),
    };
    rules.iter().any(|rule| {
        rule.groups.contains(&r.group)
            && rule.resources.contains(&resource)
            && rule.verbs.contains(&r.verb)
            && (rule.names.is_empty() || r.name.as_ref().is_some_and(|n| rule.names.contains(n)))
            && rule
                .namespace
                .as_ref()
                .is_none_or(|ns| r.namespace.as_ref() == Some(ns))
    })
}

#[test]
fn the_cluster_role_covers_every_request_the_controlplane_makes() {
    let c = Cluster::start();
    // An HTTPS listener, so Secrets are read too.
    let ca = shardgate_tests::pki::Ca::new("kube-test-ca");
    let leaf = ca.leaf(&["web.example"]);
    let tls_port = free_port(c.ip);
    c.api.apply_yaml(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: web-cert\n  namespace: apps\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}\n  tls.key: |\n{}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw-tls\n  namespace: apps\nspec:\n  gatewayClassName: shardgate\n  addresses:\n  - type: IPAddress\n    value: {}\n  listeners:\n  - name: https\n    protocol: HTTPS\n    port: {tls_port}\n    tls:\n      certificateRefs:\n      - name: web-cert\n",
        indent(&leaf.cert),
        indent(&leaf.key),
        c.ip
    ));
    let mut node = c.node("node-a", true);
    node.wait_serving(&c, "/", 200);
    eventually("the TLS Gateway is programmed", WAIT, || {
        let g = c
            .api
            .get("Gateway", Some("apps"), "gw-tls")
            .unwrap_or(Value::Null);
        let programmed = g["status"]["listeners"][0]["conditions"]
            .as_array()
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Programmed" && c["status"] == "True")
            });
        if programmed {
            Ok(())
        } else {
            Err(g["status"].to_string())
        }
    });
    // Conflicts and re-reads happen too: another controller writes a route
    // parent of its own, and ours must survive next to it.
    let theirs = serde_json::json!({
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "apps", "name": "other-gw"},
        "controllerName": "example.com/other",
        "conditions": [],
    });
    c.wait_accepted("web", "route status written");
    let mut status = c.route_status();
    status["parents"]
        .as_array_mut()
        .expect("parents")
        .push(theirs.clone());
    c.api.set_status("HTTPRoute", Some("apps"), "web", status);
    c.api.apply_yaml(&objects(
        &c,
        "  - matches:\n    - path:\n        type: Exact\n        value: /x\n",
    ));
    eventually("both controllers' parents kept", WAIT, || {
        let s = c.route_status();
        let parents = s["parents"].as_array().cloned().unwrap_or_default();
        let ours = parents
            .iter()
            .any(|p| p["controllerName"] == "shardgate.dev/gateway-controller");
        if ours && parents.contains(&theirs) {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });

    // The Lease is renewed (an update) at least once.
    eventually("a Lease renewal", WAIT, || {
        let renewed = c
            .api
            .requests()
            .iter()
            .any(|r| r.resource == "leases" && r.verb == "update");
        if renewed {
            Ok(())
        } else {
            Err("no update of the Lease yet".to_owned())
        }
    });

    let rbac = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/base/rbac.yaml");
    let rules = rbac_rules(&rbac);
    assert!(!rules.is_empty(), "rules in {}", rbac.display());
    let requests = c.api.requests();
    let resource_requests: Vec<&Recorded> =
        requests.iter().filter(|r| !r.resource.is_empty()).collect();
    assert!(
        resource_requests
            .iter()
            .any(|r| r.subresource.as_deref() == Some("status")),
        "status was written"
    );
    let secret_watches: Vec<&&Recorded> = resource_requests
        .iter()
        .filter(|r| r.resource == "secrets")
        .collect();
    assert!(!secret_watches.is_empty(), "Secrets were read");
    assert!(
        secret_watches
            .iter()
            .all(|r| r.namespace.as_deref() == Some("apps")),
        "Secrets are read only in the namespace listeners refer to"
    );
    let denied: Vec<String> = resource_requests
        .iter()
        .filter(|r| !allowed(&rules, r))
        .map(|r| {
            format!(
                "{} {}/{} {:?} ns={:?} name={:?}",
                r.verb, r.group, r.resource, r.subresource, r.namespace, r.name
            )
        })
        .collect();
    assert!(
        denied.is_empty(),
        "requests the RBAC does not allow: {denied:#?}"
    );
    drop(node);
}

fn indent(pem: &str) -> String {
    pem.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
