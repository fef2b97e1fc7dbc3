#!/usr/bin/env python3
"""Offline checks of Shardgate's rendered Kubernetes manifests.

Usage: check-manifests.py [--k8s-version V]... PROFILE:RENDERED.yaml...

PROFILE is `ingress` (base and production overlays: dedicated nodes,
Guaranteed QoS, PodDisruptionBudget) or `dev` (one-node dev clusters: those
three relaxed). Every document is validated against the Kubernetes OpenAPI
schemas of each --k8s-version (kubernetes-validate, strict: unknown fields
are errors); the GatewayClass, a CRD kind those schemas lack, against the
Gateway API v1 GatewayClass structure below. Then Shardgate's own invariants
(RBAC, token isolation, security context, QoS, probes, ...) are checked.
Prints one line per problem and exits 1 if there was any.
"""

import argparse
import re
import sys

import jsonschema
import kubernetes_validate
import yaml

NAMESPACE = "shardgate-system"
CONTROLLER_NAME = "shardgate.dev/gateway-controller"
SA_NAME = "shardgate-controlplane"
SHM_DIR = "/var/run/shardgate"
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
UID = 65532
INGRESS_LABEL = ("shardgate.dev/ingress", "true")
DRAIN_DEFAULT_SECS = 10  # shardgate-dataplane --drain-timeout-secs default
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "GatewayClass"}

# The controlplane's API access (see deploy/base/rbac.yaml): exactly these
# (apiGroup, resource, verb) triples, cluster-wide and in its namespace.
GW = "gateway.networking.k8s.io"
ROUTES = ["httproutes", "grpcroutes", "tlsroutes", "tcproutes", "udproutes"]
READ = ("get", "list", "watch")
EXPECTED_CLUSTER = (
    {(GW, r, v) for r in ["gatewayclasses", "gateways", *ROUTES, "referencegrants"] for v in READ}
    | {(GW, r + "/status", "patch") for r in ["gatewayclasses", "gateways", *ROUTES]}
    | {("", r, v) for r in ["namespaces", "services", "secrets"] for v in READ}
    | {("discovery.k8s.io", "endpointslices", v) for v in READ}
)
EXPECTED_NAMESPACED = {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")}

# Gateway API v1 GatewayClass (standard channel), written from the spec:
# the fields of metadata are left to the API server, the spec is strict.
GATEWAYCLASS_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
        "kind": {"const": "GatewayClass"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["controllerName"],
            "additionalProperties": False,
            "properties": {
                "controllerName": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 253,
                    "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
                    r"\/[A-Za-z0-9\/\-._~%!$&'()*+,;=:]+$",
                },
                "description": {"type": "string", "maxLength": 64},
                "parametersRef": {
                    "type": "object",
                    "required": ["group", "kind", "name"],
                    "additionalProperties": False,
                    "properties": {
                        "group": {"type": "string", "maxLength": 253},
                        "kind": {"type": "string", "minLength": 1, "maxLength": 63},
                        "name": {"type": "string", "minLength": 1, "maxLength": 253},
                        "namespace": {"type": "string", "minLength": 1, "maxLength": 63},
                    },
                },
            },
        },
        "status": {"type": "object"},
    },
}


class Report:
    def __init__(self):
        self.errors = []
        self.where = ""

    def error(self, msg):
        self.errors.append(f"{self.where}: {msg}")

    def check(self, cond, msg):
        if not cond:
            self.error(msg)
        return cond


def name_of(doc):
    meta = doc.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{doc.get('kind')}/{(ns + '/') if ns else ''}{meta.get('name')}"


def quantity_cores(q):
    """CPU quantity → cores as a float ("2" → 2.0, "500m" → 0.5), None if unparsable."""
    s = str(q)
    try:
        return int(s[:-1]) / 1000 if s.endswith("m") else float(s)
    except ValueError:
        return None


def quantity_bytes(q):
    s = str(q)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    for suffix, mult in units.items():
        if s.endswith(suffix):
            try:
                return int(float(s[: -len(suffix)]) * mult)
            except ValueError:
                return None
    try:
        return int(float(s))
    except ValueError:
        return None


def expand_args(container):
    """The container's command+args with $(VAR) replaced the way the kubelet
    does for env entries with a literal value; fieldRef values stay $(VAR).
    Returns (args, undefined variable names)."""
    env = container.get("env") or []
    literal = {e["name"]: str(e["value"]) for e in env if "value" in e}
    defined = {e["name"] for e in env}
    undefined = set()

    def sub(m):
        var = m.group(1)
        if var not in defined:
            undefined.add(var)
            return m.group(0)
        return literal.get(var, m.group(0))

    words = [*(container.get("command") or []), *(container.get("args") or [])]
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, str(w)) for w in words], undefined


def flag(args, name):
    """Value of --name=V or --name V in args (last one wins), else None."""
    value = None
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(name + "="):
            value = a.split("=", 1)[1]
    return value


def has_flag(args, name):
    return any(a == name or a.startswith(name + "=") for a in args)


def effective(pod_sc, c_sc, key):
    v = (c_sc or {}).get(key)
    return v if v is not None else (pod_sc or {}).get(key)


def rbac_triples(rep, rules, what):
    out = set()
    for rule in rules or []:
        for field in ("apiGroups", "resources", "verbs"):
            if "*" in (rule.get(field) or []):
                rep.error(f"{what}: wildcard in {field}: {rule}")
        rep.check(not rule.get("nonResourceURLs"), f"{what}: unexpected nonResourceURLs: {rule}")
        for g in rule.get("apiGroups") or []:
            for r in rule.get("resources") or []:
                for v in rule.get("verbs") or []:
                    out.add((g, r, v))
    return out


def describe(triples):
    return ", ".join(f"{g or 'core'}/{r}:{v}" for g, r, v in sorted(triples))


def check_schemas(rep, docs, versions):
    for doc in docs:
        rep.where = f"{rep.render}: {name_of(doc)}"
        if doc.get("kind") == "GatewayClass":
            for e in jsonschema.Draft7Validator(GATEWAYCLASS_SCHEMA).iter_errors(doc):
                path = ".".join(str(p) for p in e.absolute_path) or "(root)"
                rep.error(f"GatewayClass schema: {path}: {e.message}")
            continue
        for v in versions:
            try:
                kubernetes_validate.validate(doc, v, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path) or "(root)"
                rep.error(f"Kubernetes {v} schema (strict): {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError:
                rep.error(f"no Kubernetes {v} schema for {doc.get('apiVersion')} {doc.get('kind')} (typo, or a CRD kind this check does not know)")


def check_objects(rep, docs, profile):
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc.get("kind"), []).append(doc)
        rep.where = f"{rep.render}: {name_of(doc)}"
        meta = doc.get("metadata") or {}
        if doc.get("kind") in CLUSTER_SCOPED:
            rep.check("namespace" not in meta, "cluster-scoped object has a namespace")
        else:
            rep.check(meta.get("namespace") == NAMESPACE, f"namespace is {meta.get('namespace')!r}, want {NAMESPACE}")

    def one(kind, name=None):
        found = [d for d in by_kind.get(kind, []) if name is None or d["metadata"]["name"] == name]
        rep.where = f"{rep.render}"
        rep.check(len(found) == 1, f"want exactly one {kind}{' ' + name if name else ''}, found {len(found)}")
        return found[0] if found else None

    # Namespace: hostNetwork needs the privileged Pod Security level.
    ns = one("Namespace", NAMESPACE)
    if ns:
        rep.where = f"{rep.render}: {name_of(ns)}"
        level = (ns["metadata"].get("labels") or {}).get("pod-security.kubernetes.io/enforce")
        rep.check(level == "privileged", f"pod-security.kubernetes.io/enforce is {level!r}; hostNetwork pods need 'privileged'")

    # GatewayClass.
    gc = one("GatewayClass", "shardgate")
    if gc:
        rep.where = f"{rep.render}: {name_of(gc)}"
        got = (gc.get("spec") or {}).get("controllerName")
        rep.check(got == CONTROLLER_NAME, f"spec.controllerName is {got!r}, want {CONTROLLER_NAME}")

    # ServiceAccount and RBAC: exactly the documented permissions.
    sa = one("ServiceAccount", SA_NAME)
    if sa:
        rep.where = f"{rep.render}: {name_of(sa)}"
        rep.check(sa.get("automountServiceAccountToken") is False, "automountServiceAccountToken should be false")
    check_rbac(rep, by_kind)

    # The workload.
    workloads = by_kind.get("DaemonSet", []) + by_kind.get("Deployment", [])
    rep.where = rep.render
    if not rep.check(len(workloads) == 1, f"want exactly one DaemonSet (or Deployment), found {len(workloads)}"):
        return
    check_workload(rep, workloads[0], profile)

    # PodDisruptionBudget.
    pdbs = by_kind.get("PodDisruptionBudget", [])
    rep.where = rep.render
    if profile == "ingress":
        if rep.check(len(pdbs) == 1, f"want one PodDisruptionBudget, found {len(pdbs)}"):
            check_pdb(rep, pdbs[0], workloads[0])
    for pdb in pdbs if profile != "ingress" else []:
        check_pdb(rep, pdb, workloads[0])


def check_rbac(rep, by_kind):
    crs = by_kind.get("ClusterRole", [])
    roles = by_kind.get("Role", [])
    granted_cluster, granted_ns = set(), set()
    for cr in crs:
        rep.where = f"{rep.render}: {name_of(cr)}"
        granted_cluster |= rbac_triples(rep, cr.get("rules"), "rules")
        rep.check("aggregationRule" not in cr, "aggregationRule would grant whatever other roles carry")
    for role in roles:
        rep.where = f"{rep.render}: {name_of(role)}"
        granted_ns |= rbac_triples(rep, role.get("rules"), "rules")
        for rule in role.get("rules") or []:
            names = rule.get("resourceNames")
            if names:
                rep.check(
                    "create" not in rule.get("verbs", []),
                    "resourceNames cannot restrict create; put create in a rule of its own",
                )
    rep.where = rep.render
    for kind, granted, expected in (
        ("ClusterRole", granted_cluster, EXPECTED_CLUSTER),
        ("Role", granted_ns, EXPECTED_NAMESPACED),
    ):
        extra, missing = granted - expected, expected - granted
        rep.check(not extra, f"{kind} grants more than the controlplane needs: {describe(extra)}")
        rep.check(not missing, f"{kind} lacks what the controlplane needs: {describe(missing)}")

    # Bindings: each binds an existing role to the controlplane's ServiceAccount only.
    for kind, role_kind, pool in (
        ("ClusterRoleBinding", "ClusterRole", crs),
        ("RoleBinding", "Role", roles),
    ):
        for b in by_kind.get(kind, []):
            rep.where = f"{rep.render}: {name_of(b)}"
            ref = b.get("roleRef") or {}
            rep.check(
                ref.get("kind") == role_kind and any(r["metadata"]["name"] == ref.get("name") for r in pool),
                f"roleRef {ref.get('kind')}/{ref.get('name')} is not a {role_kind} of this render",
            )
            for s in b.get("subjects") or []:
                rep.check(
                    (s.get("kind"), s.get("name"), s.get("namespace")) == ("ServiceAccount", SA_NAME, NAMESPACE),
                    f"subject {s} is not ServiceAccount {NAMESPACE}/{SA_NAME}",
                )
        rep.where = rep.render
        bound = {b["roleRef"]["name"] for b in by_kind.get(kind, [])}
        for r in pool:
            rep.check(r["metadata"]["name"] in bound, f"{role_kind} {r['metadata']['name']} is not bound")


def check_workload(rep, wl, profile):
    rep.where = f"{rep.render}: {name_of(wl)}"
    spec = wl.get("spec") or {}
    tmpl = spec.get("template") or {}
    pod = tmpl.get("spec") or {}
    pod_sc = pod.get("securityContext") or {}
    containers = {c["name"]: c for c in pod.get("containers") or []}
    volumes = {v["name"]: v for v in pod.get("volumes") or []}

    # Selector matches the pod template.
    sel = (spec.get("selector") or {}).get("matchLabels") or {}
    labels = (tmpl.get("metadata") or {}).get("labels") or {}
    rep.check(sel and all(labels.get(k) == v for k, v in sel.items()), "selector does not match the pod template's labels")

    # Host networking.
    rep.check(pod.get("hostNetwork") is True, "hostNetwork must be true")
    rep.check(pod.get("dnsPolicy") == "ClusterFirstWithHostNet", "dnsPolicy must be ClusterFirstWithHostNet (cluster DNS with hostNetwork)")
    if wl["kind"] == "DaemonSet":
        us = spec.get("updateStrategy") or {}
        ru = us.get("rollingUpdate") or {}
        rep.check(us.get("type") == "RollingUpdate", "updateStrategy.type must be RollingUpdate")
        rep.check(ru.get("maxUnavailable") == 1, f"updateStrategy maxUnavailable is {ru.get('maxUnavailable')!r}, want 1")
        rep.check(ru.get("maxSurge") in (None, 0), "maxSurge must be 0: a surge pod would collide on the node's ports")
    else:
        rep.check(spec.get("replicas", 1) == 1, "a Deployment on hostNetwork should have 1 replica per node")

    # Placement on dedicated ingress nodes.
    if profile == "ingress":
        key, value = INGRESS_LABEL
        rep.check((pod.get("nodeSelector") or {}).get(key) == value, f"nodeSelector {key}: \"{value}\" missing")
        rep.check(
            any(
                t.get("key") == key
                and t.get("effect") == "NoSchedule"
                and (t.get("operator") == "Exists" or (t.get("operator", "Equal") == "Equal" and t.get("value") == value))
                for t in pod.get("tolerations") or []
            ),
            f"no toleration for taint {key}={value}:NoSchedule",
        )

    # Pod-level security.
    rep.check(pod.get("automountServiceAccountToken") is False, "pod automountServiceAccountToken must be false (only the controlplane gets a token)")
    rep.check(pod.get("serviceAccountName") == SA_NAME, f"serviceAccountName must be {SA_NAME}")
    rep.check(pod_sc.get("fsGroup") is not None, "pod securityContext.fsGroup missing")
    for hostns in ("hostPID", "hostIPC"):
        rep.check(not pod.get(hostns), f"{hostns} must not be set")

    # Containers.
    if not rep.check(set(containers) == {"controlplane", "dataplane"}, f"containers are {sorted(containers)}, want controlplane and dataplane"):
        return
    images = {c.get("image") for c in containers.values()}
    rep.check(len(images) == 1, f"containers use different images: {sorted(map(str, images))}")
    for img in images:
        tag = str(img).rsplit("/", 1)[-1]
        rep.check(":" in tag or "@" in tag, f"image {img!r} has no tag (set it with kustomize images:)")
        rep.check(not tag.endswith(":latest"), f"image {img!r} uses :latest")

    uids = set()
    token_mounts = {}
    for cname, c in containers.items():
        rep.where = f"{rep.render}: {name_of(wl)}: container {cname}"
        sc = c.get("securityContext") or {}
        rep.check(effective(pod_sc, sc, "runAsNonRoot") is True, "runAsNonRoot must be true")
        uid, gid = effective(pod_sc, sc, "runAsUser"), effective(pod_sc, sc, "runAsGroup")
        rep.check(uid == UID and gid == UID, f"runs as {uid}:{gid}, want {UID}:{UID}")
        uids.add(uid)
        rep.check(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
        rep.check(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem must be true")
        rep.check(not sc.get("privileged"), "must not be privileged")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        rep.check(seccomp in ("RuntimeDefault", "Localhost"), f"seccompProfile is {seccomp!r}, want RuntimeDefault")
        caps = sc.get("capabilities") or {}
        rep.check([str(x).upper() for x in caps.get("drop") or []] == ["ALL"], "capabilities must drop ALL")
        want_add = ["NET_BIND_SERVICE"] if cname == "dataplane" else []
        rep.check([str(x).upper() for x in caps.get("add") or []] == want_add, f"capabilities.add is {caps.get('add')}, want {want_add}")

        args, undefined = expand_args(c)
        rep.check(not undefined, f"args reference undefined env vars: {sorted(undefined)}")
        rep.check(flag(args, "--log-format") == "json", "--log-format=json missing")
        shm = flag(args, "--shm")
        rep.check(shm is not None and shm.startswith(SHM_DIR + "/"), f"--shm is {shm!r}, want a file under {SHM_DIR}")

        # Mounts: the segment in both; the token only in the controlplane.
        mounts = c.get("volumeMounts") or []
        seg = [m for m in mounts if m.get("mountPath") == SHM_DIR]
        if rep.check(len(seg) == 1, f"no volume mounted at {SHM_DIR}"):
            vol = volumes.get(seg[0]["name"]) or {}
            ed = vol.get("emptyDir")
            rep.check(ed is not None and ed.get("medium") == "Memory", f"{SHM_DIR} must be an emptyDir with medium: Memory")
            rep.check(ed is not None and ed.get("sizeLimit") is not None, f"the {SHM_DIR} emptyDir needs a sizeLimit")
            if cname == "dataplane":
                rep.check(seg[0].get("readOnly") is True, f"the dataplane only reads {SHM_DIR}: mount it readOnly")
        creds = []
        for m in mounts:
            vol = volumes.get(m["name"]) or {}
            sources = (vol.get("projected") or {}).get("sources") or []
            if (
                m.get("mountPath", "").rstrip("/").startswith("/var/run/secrets")
                or "secret" in vol
                or any("serviceAccountToken" in s or "secret" in s for s in sources)
            ):
                creds.append(m)
        token_mounts[cname] = creds
        for m in creds:
            rep.check(m.get("readOnly") is True, f"credential mount {m['mountPath']} must be readOnly")

        # Probes on the admin endpoint's port.
        admin = flag(args, "--admin")
        admin_port = int(admin.rsplit(":", 1)[1]) if admin and admin.rsplit(":", 1)[-1].isdigit() else None
        rep.check(admin is not None and admin.rsplit(":", 1)[0] not in ("127.0.0.1", "localhost", "[::1]"),
                  f"--admin is {admin!r}: the kubelet probes the pod IP (the node's, with hostNetwork), not loopback")
        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
        want_ready = "/readyz" if cname == "controlplane" else "/ready"
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", want_ready)):
            get = (c.get(probe) or {}).get("httpGet")
            if not rep.check(get is not None, f"{probe} must be an httpGet"):
                continue
            rep.check(get.get("path") == path, f"{probe} path is {get.get('path')!r}, want {path}")
            port = get.get("port")
            port = ports.get(port) if isinstance(port, str) else port
            rep.check(port == admin_port, f"{probe} port {get.get('port')!r} is not the --admin port {admin_port}")
            rep.check(get.get("host") is None, f"{probe} must not set host")

        # Resources: Guaranteed QoS with whole cores for exclusive cores.
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if profile == "ingress":
            for r in ("cpu", "memory"):
                rep.check(r in lim, f"no {r} limit (Guaranteed QoS needs requests == limits)")
                rep.check(r not in req or str(req[r]) == str(lim.get(r)),
                          f"{r} request {req.get(r)} != limit {lim.get(r)} (Guaranteed QoS needs them equal)")
            cores = quantity_cores(lim.get("cpu"))
            rep.check(cores is not None and cores >= 1 and cores == int(cores),
                      f"CPU limit {lim.get('cpu')!r} is not a whole number of cores (no exclusive cores with the static CPU manager)")
        else:
            rep.check("memory" in lim, "no memory limit")
        if "memory" in lim and cname == "controlplane":
            seg_limit = ((volumes.get("segment") or {}).get("emptyDir") or {}).get("sizeLimit")
            if seg_limit:
                rep.check(quantity_bytes(lim["memory"]) > quantity_bytes(seg_limit),
                          f"memory limit {lim['memory']} must exceed the segment's sizeLimit {seg_limit} (tmpfs pages are charged to the writer)")

        if cname == "dataplane":
            workers = flag(args, "--workers")
            cores = quantity_cores(lim.get("cpu"))
            if rep.check(workers is not None and workers.isdigit(), f"--workers is {workers!r}, want a number equal to the CPU limit"):
                rep.check(cores is not None and int(workers) == cores, f"--workers={workers} but the CPU limit is {lim.get('cpu')!r}: one worker per core")
            drain = flag(args, "--drain-timeout-secs")
            drain = int(drain) if drain and drain.isdigit() else DRAIN_DEFAULT_SECS
            grace = pod.get("terminationGracePeriodSeconds", 30)
            rep.where = f"{rep.render}: {name_of(wl)}"
            rep.check(grace >= drain + 5, f"terminationGracePeriodSeconds {grace} leaves no margin over the dataplane's {drain} s drain")
        else:
            for f in ("--kube", "--lease-namespace", "--lease-name", "--identity", "--bind-address"):
                rep.check(has_flag(args, f), f"{f} missing")
            env = {e["name"] for e in c.get("env") or []}
            for var in ("POD_NAMESPACE", "POD_NAME", "NODE_NAME"):
                rep.check(var in env, f"env {var} (downward API) missing")

    rep.where = f"{rep.render}: {name_of(wl)}"
    rep.check(len(uids) == 1, f"containers run as different UIDs {sorted(map(str, uids))}: the 0600 segment needs one")
    cp_tokens = [m["mountPath"].rstrip("/") for m in token_mounts.get("controlplane", [])]
    rep.check(cp_tokens == [TOKEN_DIR], f"the controlplane must mount exactly its service-account token at {TOKEN_DIR}, has {cp_tokens}")
    rep.check(not token_mounts.get("dataplane"), f"the dataplane must mount no token or secret, has {[m['mountPath'] for m in token_mounts.get('dataplane', [])]}")
    for init in pod.get("initContainers") or []:
        rep.error(f"init container {init.get('name')}: not expected (Guaranteed QoS and token isolation cover two containers)")


def check_pdb(rep, pdb, wl):
    rep.where = f"{rep.render}: {name_of(pdb)}"
    spec = pdb.get("spec") or {}
    sel = (spec.get("selector") or {}).get("matchLabels") or {}
    labels = ((wl.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
    rep.check(sel and all(labels.get(k) == v for k, v in sel.items()), "selector does not select the Shardgate pods")
    if wl["kind"] == "DaemonSet":
        rep.check(
            "maxUnavailable" not in spec and isinstance(spec.get("minAvailable"), int),
            "for DaemonSet pods only an integer minAvailable works (no scale subresource: "
            "maxUnavailable or a percentage makes the budget fail and block every eviction)",
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k8s-version", action="append", default=[], help="Kubernetes version to validate against (repeatable)")
    ap.add_argument("renders", nargs="+", metavar="PROFILE:FILE")
    opts = ap.parse_args()
    versions = opts.k8s_version or ["1.33.0"]
    rep = Report()
    total = 0
    for item in opts.renders:
        profile, _, path = item.partition(":")
        if profile not in ("ingress", "dev"):
            sys.exit(f"check-manifests: unknown profile {profile!r} in {item!r}")
        rep.render = path
        rep.where = path
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        before = len(rep.errors)
        check_schemas(rep, docs, versions)
        check_objects(rep, docs, profile)
        n = len(rep.errors) - before
        total += len(docs)
        kinds = ", ".join(sorted({d.get("kind") for d in docs}))
        print(f"  {path}: {len(docs)} objects ({kinds}), profile {profile}: {'ok' if n == 0 else f'{n} problem(s)'}", flush=True)
    for e in rep.errors:
        print(f"ERROR {e}", file=sys.stderr, flush=True)
    print(f"checked {total} objects in {len(opts.renders)} renders against Kubernetes {', '.join(versions)} schemas: "
          f"{len(rep.errors)} problem(s)")
    return 1 if rep.errors else 0


if __name__ == "__main__":
    sys.exit(main())
