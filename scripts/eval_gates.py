"""Gates that fit how a photo arrives, measured through the running service.

In a fresh gallery of its own (deleted afterwards), with the service's default policy:

1. `stored` enrolment of the first photo of every LFW identity with at least two photos and of
   every deepface identity: how many are refused, and why (target: <= 5%).
2. Identify with each enrolled identity's second photo, sent as `stored`: rank-1 (target >= 0.99).
3. Identify with the photo of every LFW identity that has only one (never enrolled), as `stored`:
   how many are answered `unknown` (target >= 0.95).
4. `live` enrolment of the PAD samples: the print and replay attacks refused, the live one accepted.

    ufme-ray up && python scripts/eval_gates.py --out bench-results/gates.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from ufme_ray.client import UfmeApiError, UfmeClient, find_api_key

REPO = Path(__file__).resolve().parents[1]


def photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})


def main_face(answer: dict) -> dict | None:
    """The answer for the largest face (press photos often show people behind the subject)."""
    faces = answer["faces"]
    return max(faces, key=lambda f: (f["face"]["box"][2] - f["face"]["box"][0]) * (f["face"]["box"][3] - f["face"]["box"][1]), default=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    lfw = [d for d in sorted((args.faces / "lfw").iterdir()) if d.is_dir()]
    known = [(f"lfw-{d.name}", photos(d)) for d in lfw if len(photos(d)) >= 2]
    known += [(f"deepface-{d.name}", photos(d)) for d in sorted((args.faces / "deepface").glob("id*"))]
    unknown = [(f"lfw-{d.name}", photos(d)[0]) for d in lfw if len(photos(d)) == 1]
    gallery = f"eval-gates-{int(time.time())}"
    load = os.getloadavg()
    admin = UfmeClient(args.url, find_api_key())
    admin.create_gallery(gallery, "scripts/eval_gates.py")
    client = UfmeClient(args.url, find_api_key(), gallery=gallery)
    report: dict = {"gallery": gallery, "loadavg_before": load}
    try:
        refused, enrolled = Counter(), []
        for name, shots in tqdm(known, desc="stored enrolment", unit="identity"):
            subject = name.lower().replace("_", "-")[:100]
            try:
                client.enrol(subject, shots[0], capture="stored")
                enrolled.append((subject, shots))
            except UfmeApiError as exc:
                refused[exc.code] += 1
        report["stored_enrolment"] = {
            "identities": len(known), "refused": sum(refused.values()), "refused_share": round(sum(refused.values()) / len(known), 4),
            "refused_by_reason": dict(refused),
        }
        rank1 = misses = 0
        for subject, shots in tqdm([e for e in enrolled if len(e[1]) >= 2], desc="identify known", unit="probe"):
            answer = client.identify(shots[1], top_k=1, capture="stored")
            face = main_face(answer)
            hit = face is not None and face["candidates"] and face["candidates"][0]["subject_id"] == subject
            rank1 += bool(hit)
            misses += not hit
        report["identify_known"] = {"probes": rank1 + misses, "rank1": round(rank1 / max(1, rank1 + misses), 4)}
        decisions = Counter()
        for _, shot in tqdm(unknown, desc="identify unknown", unit="probe"):
            answer = client.identify(shot, capture="stored")
            face = main_face(answer)
            decisions[face["decision"]["status"] if face else "no_face"] += 1
        report["identify_unknown"] = {
            "probes": len(unknown), "decisions": dict(decisions),
            "unknown_share": round(decisions["unknown"] / max(1, len(unknown)), 4),
        }
        pad = {}
        for kind in ("live", "print", "replay"):
            for shot in photos(args.faces / "pad" / kind):
                try:
                    client.enrol(f"pad-{kind}", shot, capture="live")
                    pad[f"{kind}/{shot.name}"] = "accepted"
                except UfmeApiError as exc:
                    pad[f"{kind}/{shot.name}"] = f"refused: {exc.code}"
        report["live_pad"] = pad
    finally:
        admin.delete_gallery(gallery)
    report["loadavg_after"] = os.getloadavg()
    enrolment, known_id, unknown_id = report["stored_enrolment"], report["identify_known"], report["identify_unknown"]
    print(f"load average before {load[0]:.2f}, after {report['loadavg_after'][0]:.2f}")
    print(f"{'measure':<46}{'value':>10}{'target':>10}")
    print(f"{'stored enrolment refused (of ' + str(enrolment['identities']) + ')':<46}{enrolment['refused_share']:>10.3f}{'<= 0.05':>10}")
    print(f"  by reason: {enrolment['refused_by_reason']}")
    print(f"{'identify known, stored, rank-1 (' + str(known_id['probes']) + ' probes)':<46}{known_id['rank1']:>10.3f}{'>= 0.99':>10}")
    print(f"{'identify unknown, stored, unknown (' + str(unknown_id['probes']) + ')':<46}{unknown_id['unknown_share']:>10.3f}{'>= 0.95':>10}")
    print(f"  decisions: {unknown_id['decisions']}")
    for sample, outcome in report["live_pad"].items():
        print(f"  live enrolment of {sample}: {outcome}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
