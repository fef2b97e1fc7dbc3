#!/usr/bin/env bash
# Offline validation of the Kubernetes manifests (no cluster needed):
#   1. render deploy/base and every deploy/overlays/* with `kubectl kustomize`;
#   2. validate every object against the Kubernetes OpenAPI schemas, strict
#      (unknown fields are errors), with kubernetes-validate; the GatewayClass
#      (a CRD kind) against the Gateway API v1 GatewayClass structure;
#   3. check Shardgate's invariants (deploy/check-manifests.py): least-privilege
#      RBAC, no token in the dataplane, hostNetwork + ClusterFirstWithHostNet,
#      Guaranteed QoS in whole cores with --workers = CPU limit, security
#      context, probes on the admin ports, PodDisruptionBudget, ...
#
# Usage: deploy/validate.sh [--keep | --out DIR]
#   --keep     keep the rendered YAML (in a temp dir, printed at the end);
#              also SHARDGATE_VALIDATE_KEEP=1
#   --out DIR  write the rendered YAML to DIR (kept)
# Installs what it needs when missing (as root): kubectl (Debian package
# `kubectl`, where an apt source offers it) and kubernetes-validate (PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."

# Kubernetes versions whose schemas the objects must satisfy: the oldest we
# support and the newest kubernetes-validate ships that we have tried.
K8S_VERSIONS=(1.33.0 1.37.0)

keep="${SHARDGATE_VALIDATE_KEEP:-}"
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) keep=1 ;;
    --out) out="${2:?--out needs a directory}"; shift ;;
    --out=*) out="${1#--out=}" ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "validate.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done

fail() { echo "validate.sh: $*" >&2; exit 1; }
start=$EPOCHREALTIME

# --- tools -----------------------------------------------------------------
if ! command -v kubectl >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "validate.sh: installing kubectl (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl >/dev/null \
      || fail "no apt source offers the kubectl package; install kubectl >= 1.27 (its built-in kustomize) by hand"
  else
    fail "kubectl is required (>= 1.27, for its built-in kustomize); please install it"
  fi
fi
if ! python3 -c 'import kubernetes_validate, jsonschema, yaml' 2>/dev/null; then
  echo "validate.sh: installing kubernetes-validate (pip)"
  python3 -m pip install --quiet --disable-pip-version-check 'kubernetes-validate>=1.33' \
    || fail "could not install kubernetes-validate from PyPI"
fi

# --- render ----------------------------------------------------------------
if [ -n "$out" ]; then
  mkdir -p "$out"
  dir="$out"
else
  dir="$(mktemp -d "${TMPDIR:-/tmp}/shardgate-manifests.XXXXXX")"
  [ -n "$keep" ] || trap 'rm -rf "$dir"' EXIT
fi

# Which checks apply: `dev` relaxes placement, QoS and the PDB; every other
# render (the base and any new overlay) gets the production checks.
profile_of() { case "$1" in overlays/dev) echo dev ;; *) echo ingress ;; esac; }

renders=()
echo "rendering with $(kubectl version --client 2>/dev/null | tr '\n' ' ')"
for src in deploy/base deploy/overlays/*/; do
  src="${src%/}"
  rel="${src#deploy/}"
  [ -f "$src/kustomization.yaml" ] || fail "$src has no kustomization.yaml"
  file="$dir/${rel//\//-}.yaml"
  if ! kubectl kustomize "$src" >"$file" 2>"$file.err"; then
    cat "$file.err" >&2
    fail "kubectl kustomize $src failed"
  fi
  # Warnings (deprecated fields and the like) are shown, not fatal.
  if [ -s "$file.err" ]; then sed "s|^|  $src: |" "$file.err" >&2; fi
  rm -f "$file.err"
  renders+=("$(profile_of "$rel"):$file")
done

# --- validate --------------------------------------------------------------
version_args=()
for v in "${K8S_VERSIONS[@]}"; do version_args+=(--k8s-version "$v"); done
status=0
python3 deploy/check-manifests.py "${version_args[@]}" "${renders[@]}" || status=$?

elapsed=$(awk "BEGIN { printf \"%.1f\", $EPOCHREALTIME - $start }")
if [ -n "$out" ] || [ -n "$keep" ]; then echo "rendered manifests kept in $dir"; fi
if [ "$status" -ne 0 ]; then
  fail "the manifests have problems (listed above) [${elapsed}s]"
fi
echo "validate.sh: ${#renders[@]} renders valid [${elapsed}s]"
