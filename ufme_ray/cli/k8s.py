"""`ufme-ray k8s sync | render | apply | status | wait-ready | compact`. Parsing and printing only;
the work is in ufme_ray.k8s (render, client, compaction) and ufme_ray.jobs.submit."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ufme_ray.cli.common import EXIT_FAILED, EXIT_OK
from ufme_ray.cli.compact import EPILOG as COMPACT_EPILOG
from ufme_ray.cli.compact import add_slot_options, slot_of, write_log
from ufme_ray.k8s.errors import NotReadyError, RenderError
from ufme_ray.k8s.render import ENVIRONMENTS, NAMESPACE, RAYSERVICE_NAME


def _connect(args: argparse.Namespace):
    from ufme_ray.k8s.client import K8sClient

    return K8sClient.connect(
        kubeconfig=args.kubeconfig,
        context=args.context,
        in_cluster=args.in_cluster,
        namespace=args.namespace,
        rayservice=args.rayservice,
    )


def _layout(args: argparse.Namespace):
    from ufme_ray.k8s.render import Layout

    return Layout.find(args.serve_config, args.kuberay_dir)


def cmd_sync(args: argparse.Namespace) -> int:
    from ufme_ray.k8s import render

    changed = render.sync(_layout(args), check=args.check)
    for path in changed:
        print(f"{'out of date' if args.check else 'wrote'}: {path}")
    if args.check and changed:
        print("run `ufme-ray k8s sync` and commit the result", file=sys.stderr)
        return EXIT_FAILED
    if not changed:
        print("serveConfigV2 of base, staging and production match serve_config.yaml")
    return EXIT_OK


def cmd_render(args: argparse.Namespace) -> int:
    from ufme_ray.k8s import render

    layout = _layout(args)
    if args.serve_config_only:  # what `serve deploy` sends to a non-KubeRay Ray cluster
        if args.image:
            raise RenderError("--image does not apply to --serve-config-only (a Serve config names no image)")
        text = render.serve_config_text(layout, args.env)
    else:
        text = render.to_yaml(render.render(args.env, layout=layout, image=args.image))
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_apply(args: argparse.Namespace) -> int:
    from ufme_ray.k8s import render

    manifests = render.render(args.env, layout=_layout(args), image=args.image)
    client = _connect(args)
    suffix = " (dry run)" if args.dry_run else ""

    def report(applied) -> None:
        where = f"{applied.namespace}/" if applied.namespace else ""
        note = f"  [{applied.note}]" if applied.note else ""
        print(f"applied{suffix}: {applied.kind} {where}{applied.name} (generation {applied.generation}){note}", flush=True)

    client.apply(manifests, force=args.force_conflicts, dry_run=args.dry_run, check_crds=not args.skip_crd_check, on_applied=report)
    print("KubeRay applies a serveConfigV2-only change in place; a rayClusterConfig change starts a new RayCluster "
          "and moves traffic when it is ready. Follow with `ufme-ray k8s wait-ready`.")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    status = _connect(args).status(check_gallery=not args.no_gallery)
    print(json.dumps(status.to_dict(), indent=2) if args.json else status.summary())
    return EXIT_OK if status.ready else EXIT_FAILED


def cmd_wait_ready(args: argparse.Namespace) -> int:
    client = _connect(args)

    def progress(status) -> None:
        app = status.app_status or "unknown"
        print(
            f"waiting: Ready={status.condition('Ready')} app={app} shard pods {status.shard_pods_ready}/"
            f"{status.expected_shards if status.expected_shards is not None else '?'}",
            flush=True,
        )

    status = client.wait_ready(timeout_s=args.timeout_s, poll_s=args.poll_s, check_gallery=not args.no_gallery, on_poll=progress)
    print(status.summary())
    return EXIT_OK


def cmd_compact(args: argparse.Namespace) -> int:
    """`ufme-ray compact` against the RayService's head, with the running Serve app's settings."""
    from ufme_ray.jobs import submit
    from ufme_ray.k8s import compaction

    token = os.environ.get("RAY_AUTH_TOKEN", "").strip() or None
    serve_config_v2 = None
    if not args.skip_status_check:
        client = _connect(args)
        status = client.status(check_gallery=False, check_shards=False)  # one GET: the CronJob's Role allows no more
        if not status.condition("Ready"):
            raise NotReadyError(f"not compacting: the RayService is not Ready\n{status.summary()}")
        if status.condition("UpgradeInProgress") or status.pending_cluster:
            raise NotReadyError("not compacting: an upgrade to a new RayCluster is under way")
        serve_config_v2 = (client.get_rayservice().get("spec") or {}).get("serveConfigV2")
        if token is None:
            token = client.token()
    settings = compaction.job_settings(serve_config_v2, num_shards=args.shards)
    address = args.address or f"http://{args.rayservice}-head-svc.{args.namespace}.svc:8265"
    try:
        job = submit.run_compaction(address, token, settings, slot=slot_of(args), wait=args.wait, write=write_log)
    except submit.CompactionAlreadyRanError as exc:
        # A retried CronJob pod whose first try saw the hour's job through: that run is done, not failed.
        if not (args.scheduled and exc.job.status == "SUCCEEDED"):
            raise
        print(f"compaction job {exc.job.submission_id} of this slot already SUCCEEDED: the scheduled run is done")
        return EXIT_OK
    verb = "submitted" if job.created else "found"
    print(f"{verb} compaction job {job.submission_id} ({settings.gallery.num_shards} shards, "
          f"{settings.resolved_storage_uri.split('?', 1)[0]}) on {address}: {job.status}")
    return EXIT_FAILED if args.wait and job.status != "SUCCEEDED" else EXIT_OK


def _connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cluster")
    group.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default: KUBECONFIG or ~/.kube/config)")
    group.add_argument("--context", help="kubeconfig context (default: the current one)")
    group.add_argument("--in-cluster", action="store_true", help="use the pod's service account instead of a kubeconfig")
    group.add_argument("--namespace", default=NAMESPACE)
    group.add_argument("--rayservice", default=RAYSERVICE_NAME, help="name of the RayService")


def _layout_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--serve-config", type=Path, help="Serve config (default: ./serve_config.yaml)")
    parser.add_argument("--kuberay-dir", type=Path, help="kustomize tree (default: ./kuberay)")


def add_parsers(commands: argparse._SubParsersAction) -> None:
    k8s = commands.add_parser("k8s", help="KubeRay deployment: sync, render, apply, status, wait-ready, compact")
    sub = k8s.add_subparsers(dest="k8s_command", required=True)

    sync = sub.add_parser("sync", help="write serveConfigV2 of the base and overlays from serve_config.yaml")
    sync.add_argument("--check", action="store_true", help="write nothing; exit 1 if a generated file is out of date")
    _layout_options(sync)
    sync.set_defaults(handler=cmd_sync)

    render_parser = sub.add_parser("render", help="print the manifests of an environment (kubectl kustomize)")
    render_parser.add_argument("--env", required=True, choices=ENVIRONMENTS)
    render_parser.add_argument("--image", help="container image for every UFME-Ray container (e.g. registry/ufme-ray:sha)")
    render_parser.add_argument("--output", "-o", help="write to this file instead of stdout")
    render_parser.add_argument(
        "--serve-config-only", action="store_true",
        help="print only the environment's Serve config (serve_config.yaml + its overrides), for `serve deploy`",
    )
    _layout_options(render_parser)
    render_parser.set_defaults(handler=cmd_render)

    apply = sub.add_parser("apply", help="server-side apply of the RayService and everything else of an environment")
    apply.add_argument("--env", required=True, choices=ENVIRONMENTS)
    apply.add_argument("--image", help="container image for every UFME-Ray container")
    apply.add_argument("--dry-run", action="store_true", help="server-side dry run: validate, persist nothing")
    apply.add_argument("--force-conflicts", action="store_true", help="take over fields another field manager owns")
    apply.add_argument("--skip-crd-check", action="store_true", help="do not check that the custom kinds are served first")
    _layout_options(apply)
    _connection_options(apply)
    apply.set_defaults(handler=cmd_apply)

    status = sub.add_parser("status", help="RayService conditions, active cluster, Serve app, shard readiness (exit 1 if not ready)")
    status.add_argument("--json", action="store_true")
    status.add_argument("--no-gallery", action="store_true", help="skip GET /ready through the API server's service proxy")
    _connection_options(status)
    status.set_defaults(handler=cmd_status)

    wait = sub.add_parser("wait-ready", help="wait until the RayService, the Serve app and every shard are ready")
    wait.add_argument("--timeout-s", type=float, default=1800.0)
    wait.add_argument("--poll-s", type=float, default=10.0)
    wait.add_argument("--no-gallery", action="store_true", help="skip GET /ready through the API server's service proxy")
    _connection_options(wait)
    wait.set_defaults(handler=cmd_wait_ready)

    compact = sub.add_parser(
        "compact",
        help="submit the compaction Ray job (`ufme-ray compact`'s) with the running Serve app's settings; follow it",
        epilog=COMPACT_EPILOG,
    )
    compact.add_argument("--address", help="Ray dashboard URL (default: http://<rayservice>-head-svc.<namespace>.svc:8265)")
    compact.add_argument("--wait", dest="wait", action="store_true", default=True, help="follow the job's log to its end (default)")
    compact.add_argument("--no-wait", dest="wait", action="store_false", help="return once submitted")
    add_slot_options(compact)
    compact.add_argument(
        "--scheduled", action="store_true",
        help="the CronJob's run: a slot whose job already SUCCEEDED exits 0 (a retried pod), not 3",
    )
    compact.add_argument("--shards", type=int, help="number of gallery shards (default: the RayService's serveConfigV2)")
    compact.add_argument(
        "--skip-status-check", action="store_true",
        help="do not read the RayService (settings from the environment only; needs RAY_AUTH_TOKEN)",
    )
    _connection_options(compact)
    compact.set_defaults(handler=cmd_compact)
