"""Kubernetes side of UFME-Ray: render the KubeRay manifests, drive the cluster with the
`kubernetes` client (apply, status, wait-ready, compaction). `ufme-ray k8s …` is the command line."""
