#!/usr/bin/env bash
# Offline check of the manifests: every kustomization renders (`kubectl kustomize`) and its
# output validates against the Kubernetes schemas bundled in `kubernetes-validate` (strict:
# unknown fields fail). Kinds without a bundled schema (KEDA's ScaledObject) only warn.
# Renders with kubectl 1.20 (Debian's kubernetes-client, kustomize v2) and current kubectl.
# Usage: deploy/check.sh [KUBERNETES_VALIDATE]  (default: kubernetes-validate on $PATH)
set -euo pipefail
cd "$(dirname "$0")"
validate=${1:-kubernetes-validate}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for kustomization in volume base overlays/keda overlays/job overlays/encrypted init; do
  rendered="$out/${kustomization//\//-}.yaml"
  kubectl kustomize "$kustomization" >"$rendered"
  "$validate" --strict --quiet "$rendered"
  echo "deploy/$kustomization: $(grep -c '^kind:' "$rendered") resources rendered and valid"
done
